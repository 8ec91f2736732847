//! Why loading a plugin or one run of it failed.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use wasmtime::Trap;

use super::converter::wit;
use super::limits::RunLimits;

/// Why a component could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the plugin is not a valid component: {0}")]
    Compile(String),
    #[error("the plugin does not implement the {world} world: {reason}")]
    WrongWorld { world: &'static str, reason: String },
    /// The cause is the error's `source` (shown once by `{:#}`, not twice).
    #[error("cannot write the compiled plugin to {}", path.display())]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up the plugin runtime: {0}")]
    Runtime(String),
    /// The component was built against a `tapedeck:plugin` version this host does not
    /// provide.
    #[error(
        "the plugin uses {found}, but this host provides tapedeck:plugin@{} (rebuild it against the WIT the host ships: `wit/`)",
        crate::WIT_VERSION
    )]
    UnsupportedVersion { found: String },
}

/// Why one run of a plugin failed. Each limit has its own case, so callers can tell a
/// tenant which limit their job hit.
///
/// Serializable: the subprocess runner sends it to its parent as JSON.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum RunError {
    #[error("memory limit of {} exceeded", mib(*limit))]
    MemoryLimit { limit: u64 },
    #[error("CPU time limit of {} exceeded", seconds(*limit))]
    CpuLimit { limit: Duration },
    /// The run blocked (not computing) for longer than its wall-clock allowance.
    #[error("wall-clock limit of {} exceeded", seconds(*limit))]
    WallClockLimit { limit: Duration },
    #[error("output limit of {} exceeded", mib(*limit))]
    OutputLimit { limit: u64 },
    #[error("table limit of {limit} elements exceeded")]
    TableLimit { limit: u64 },
    #[error("plugin overflowed its call stack")]
    StackOverflow,
    #[error("plugin crashed: {message}")]
    Trap { message: String },
    /// The plugin ran to completion and reported that the input cannot be converted.
    #[error("{0}")]
    Convert(ConvertError),
    /// The component could not be instantiated (e.g. it needs more instances, tables or
    /// memories than the limits allow).
    #[error("plugin could not start: {message}")]
    Instantiate { message: String },
    /// Host-side I/O around the run failed (input, output, the runner process).
    #[error("{message}")]
    Io { message: String },
    /// The caller cancelled the run (a deleted job, a shutdown); its runner was killed.
    #[error("the run was cancelled")]
    Cancelled,
}

/// Names the limit or fault behind an error from instantiating or calling a guest (any
/// world: the notifier uses it too).
pub(crate) fn classify_failure(
    error: wasmtime::Error,
    instantiating: bool,
    limits: &RunLimits,
) -> RunError {
    tracing::debug!("plugin run failed: {error:?}");
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => RunError::CpuLimit {
            limit: limits.cpu_time,
        },
        Some(Trap::StackOverflow) => RunError::StackOverflow,
        Some(trap) => RunError::Trap {
            message: trap.to_string(),
        },
        None if instantiating => RunError::Instantiate {
            message: format!("{error:#}"),
        },
        None => RunError::Trap {
            message: format!("{error:#}"),
        },
    }
}

impl LoadError {
    /// The component does not fit `world` (an import it lacks, an export missing).
    pub(crate) fn wrong_world(world: &'static str, error: wasmtime::Error) -> Self {
        LoadError::WrongWorld {
            world,
            reason: format!("{error:#}"),
        }
    }
}

/// How much of the end of a crashed guest's stderr its error carries.
const STDERR_IN_ERROR: usize = 1500;

impl RunError {
    /// A crash (a trap, or a start function that failed) with the end of what the guest
    /// wrote to stderr: a Rust panic's message, a Python traceback, a JavaScript
    /// exception. So the author reads why in `plugin check`, a publish refusal or a
    /// job's error, not only in the server's log. Lines are joined with ` | `.
    pub(crate) fn with_stderr(self, stderr: &str) -> Self {
        let lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            return self;
        }
        let joined = lines.join(" | ");
        let mut start = joined.len().saturating_sub(STDERR_IN_ERROR);
        while !joined.is_char_boundary(start) {
            start += 1;
        }
        let cut = if start > 0 { "..." } else { "" };
        let said = format!("; it wrote to stderr: {cut}{}", &joined[start..]);
        match self {
            RunError::Trap { message } => RunError::Trap {
                message: message + &said,
            },
            RunError::Instantiate { message } => RunError::Instantiate {
                message: message + &said,
            },
            other => other,
        }
    }

    pub(crate) fn io(context: &str, error: impl std::fmt::Display) -> Self {
        RunError::Io {
            message: format!("{context}: {error}"),
        }
    }
}

/// The converter's own verdict on an input: the WIT `convert-error`, with messages for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ConvertError {
    #[error("input has no audio track")]
    NoAudioTrack,
    #[error("unsupported audio codec: {0}")]
    UnsupportedCodec(String),
    #[error("input is DRM-protected ({0})")]
    DrmProtected(String),
    #[error("input is corrupt: {0}")]
    CorruptInput(String),
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("output would exceed the limit of {} bytes", .0)]
    OutputTooLarge(u64),
    #[error("plugin I/O failed: {0}")]
    Io(String),
}

impl From<wit::ConvertError> for ConvertError {
    fn from(error: wit::ConvertError) -> Self {
        use wit::ConvertError as W;
        match error {
            W::NoAudioTrack => Self::NoAudioTrack,
            W::UnsupportedCodec(codec) => Self::UnsupportedCodec(codec),
            W::DrmProtected(scheme) => Self::DrmProtected(scheme),
            W::CorruptInput(why) => Self::CorruptInput(why),
            W::InvalidOptions(why) => Self::InvalidOptions(why),
            W::OutputTooLarge(limit) => Self::OutputTooLarge(limit),
            W::Io(why) => Self::Io(why),
        }
    }
}

fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_carries_the_end_of_the_guests_stderr() {
        let trap = || RunError::Trap {
            message: "wasm trap: unreachable".into(),
        };
        let said =
            "\nTraceback (most recent call last):\n  File \"app.py\", line 3\n\nValueError: boom\n";
        assert_eq!(
            trap().with_stderr(said).to_string(),
            "plugin crashed: wasm trap: unreachable; it wrote to stderr: Traceback (most \
             recent call last): | File \"app.py\", line 3 | ValueError: boom"
        );
        assert_eq!(
            trap().with_stderr(" \n"),
            trap(),
            "nothing said, nothing added"
        );
        let limit = RunError::CpuLimit {
            limit: Duration::from_secs(1),
        };
        assert_eq!(
            limit.clone().with_stderr("busy"),
            limit,
            "a limit is the host's word"
        );
        let long = format!("{}é the end", "x".repeat(5000));
        let RunError::Trap { message } = trap().with_stderr(&long) else {
            unreachable!()
        };
        assert!(message.ends_with("é the end") && message.contains("stderr: ...x"));
        assert!(message.len() < 1600, "{}", message.len());
    }

    #[test]
    fn limit_messages_are_readable() {
        let memory = RunError::MemoryLimit { limit: 64 << 20 };
        assert_eq!(memory.to_string(), "memory limit of 64 MiB exceeded");
        let cpu = RunError::CpuLimit {
            limit: Duration::from_millis(1500),
        };
        assert_eq!(cpu.to_string(), "CPU time limit of 1.5 s exceeded");
        let output = RunError::OutputLimit { limit: 1000 };
        assert_eq!(output.to_string(), "output limit of 1000 bytes exceeded");
        let convert = RunError::Convert(ConvertError::NoAudioTrack);
        assert_eq!(convert.to_string(), "input has no audio track");
    }

    #[test]
    fn wrong_world_names_the_world() {
        let error = LoadError::wrong_world("auth", wasmtime::Error::msg("no export `login`"));
        assert_eq!(
            error.to_string(),
            "the plugin does not implement the auth world: no export `login`"
        );
    }

    #[test]
    fn run_errors_survive_the_runner_protocol() {
        let error = RunError::CpuLimit {
            limit: Duration::from_secs(2),
        };
        let json = serde_json::to_string(&error).unwrap();
        assert_eq!(serde_json::from_str::<RunError>(&json).unwrap(), error);
    }
}
