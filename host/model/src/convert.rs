//! The converter seam: the worker hands one [`ConvertJob`] to a [`Converter`] (the
//! converter component, through `tapedeck-runtime`) and gets a summary or a failure that
//! says whether retrying can help.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::job::JobOptions;
use crate::run_limits::LimitPolicy;

/// One conversion, as the worker asks for it: everything a run needs, so no run picks
/// its options or limits anywhere else.
#[derive(Debug, Clone, Copy)]
pub struct ConvertJob<'a> {
    pub job_id: &'a str,
    pub tenant: &'a str,
    /// The upload, a local file.
    pub input: &'a Path,
    /// Where the MP3 goes (created by the converter).
    pub output: &'a Path,
    pub options: &'a JobOptions,
    /// How this run's limits are sized to its input: the service's settings tightened by
    /// the tenant's limits.
    pub limits: &'a LimitPolicy,
    /// Where the converter adds the CPU time the run used, in milliseconds, whether it
    /// succeeded or not (the tenant's CPU budget counts both).
    pub cpu_ms: &'a std::sync::atomic::AtomicU64,
    /// Stops the run from outside (the job was deleted, the process shuts down): the
    /// converter ends it within a fraction of a second and returns whatever failure.
    pub cancel: &'a RunCancel,
    /// A tighter time limit for this run, by the input's audio length: a canary's, from
    /// what the stable component took on similar inputs. Passing it ends the run with
    /// [`ConvertFailure::TimedOut`].
    pub deadline: Option<&'a crate::canary::Deadline>,
}

/// A flag that asks a running conversion to stop; cheap to clone, all clones share it.
/// The converter polls it (the subprocess watchdog kills its runner child once it is
/// set); the caller, who set it, knows the run's result means nothing.
#[derive(Debug, Clone, Default)]
pub struct RunCancel(Arc<AtomicBool>);

impl RunCancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a successful conversion reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertSummary {
    /// Decoded length of the MP3.
    pub duration_ms: u64,
    /// The bitrate produced, kbit/s.
    pub bitrate_kbps: u16,
    /// The input's audio length as its container declares it, if it does.
    pub input_ms: Option<u64>,
    /// The MP3's length counted by the host from its frames (`None`: not an MP3).
    pub decoded_ms: Option<u64>,
}

impl ConvertSummary {
    /// Whether the output is a faithful conversion: an MP3 (the host could count its
    /// frames) whose length agrees with the input's declared one, within 1 s or 5 %.
    pub fn output_valid(&self) -> bool {
        match (self.input_ms, self.decoded_ms) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(i), Some(d)) => (i as f64 - d as f64).abs() <= (i as f64 * 0.05).max(1000.0),
        }
    }
}

/// Why a conversion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertFailure {
    /// The input can never convert (no audio track, unsupported codec, DRM, corrupt):
    /// the job fails at once with this reason.
    #[error("{0}")]
    Permanent(String),
    /// The converter's own verdict on the input (no audio, unsupported codec, corrupt,
    /// invalid options): final like `Permanent`, and not the component's fault — a
    /// canary's analysis does not count it as a plugin failure.
    #[error("{0}")]
    Refused(String),
    /// May succeed on another attempt (limits, traps, host I/O).
    #[error("{0}")]
    Retryable(String),
    /// Passed its [`ConvertJob::deadline`]: the component is much slower than the one it
    /// is compared with, or stuck.
    #[error("{0}")]
    TimedOut(String),
}

/// Progress callback: fraction done, 0..=1.
pub type ProgressFn<'a> = &'a (dyn Fn(f32) + Send + Sync);

/// Converts one input file to an MP3 file. Blocking; called on a blocking thread.
pub trait Converter: Send + Sync + 'static {
    fn convert(
        &self,
        job: &ConvertJob<'_>,
        progress: ProgressFn<'_>,
    ) -> Result<ConvertSummary, ConvertFailure>;
}
