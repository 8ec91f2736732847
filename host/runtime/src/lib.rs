//! Plugins: compiles guest components once, then runs each call in a fresh, limited
//! sandbox, either in a child process (the default for the converter) or in this one.
//!
//! # Layout
//! - `engine.rs`: the wasmtime `Engine` per isolation mode, the epoch ticker, the on-disk
//!   compile cache (`<cache_dir>/<key>.cwasm`).
//! - `limits.rs`: [`RunLimits`] and the store limiter enforcing memory and tables.
//! - `converter.rs`: the converter world's bindings, its host imports (source, sink,
//!   progress, logging), and one run in a fresh `Store`.
//! - `notifier.rs`: the notifier world's bindings, its host imports (mail, webhook,
//!   logging: they only queue, checked against a `SendPolicy`), one in-process run.
//! - `auth.rs`: the auth world's bindings, its host imports (user store, clock, token
//!   settings), one in-process call per register/login/verify.
//! - `sandbox.rs`: the (empty) WASI context guests get, and the one load path
//!   (`instantiate_pre`) of every world.
//! - `guest_log.rs`: the one `logging` policy (budget, line length) and sink.
//! - `subprocess.rs`: running a conversion in a `tapedeck plugin-run` child process,
//!   watched for its wall-clock limit and for cancelling ([`RunCancel`]).
//! - `error.rs`: [`LoadError`], [`RunError`], [`ConvertError`].
//! - `media.rs`: an upload's audio length from its container (sizes CPU limits).
//! - `adapters/`: the components as the model's seams (`Converter`, `Composer`).
//!
//! Only this crate and the `tapedeck` binary link wasmtime; the components themselves are
//! embedded by the binary (`tapedeck/src/components.rs`) and handed in as bytes.
//!
//! # Isolation
//! Stopping a guest that computes forever needs either checks in the generated code
//! (epochs cost the converter ~35%, fuel ~30%; see shared/notes/wasm-build-facts.md) or
//! an outside stop. [`Isolation::Subprocess`] runs each conversion in a child process
//! under `RLIMIT_CPU`, with code that carries no checks: right for long, heavy runs.
//! [`Isolation::InProcess`] compiles with epoch interruption and runs on a thread of this
//! process: right for short, hot calls where a process spawn would dominate. Both report
//! the same [`RunError`] for the same misbehaviour.

pub mod adapters;

/// The `tapedeck:plugin` WIT version every stage of this host accepts (frozen: see the
/// compatibility policy in `wit/README.md`).
pub const WIT_VERSION: &str = "0.1.0";
mod auth;
mod bindings;
mod converter;
mod engine;
mod error;
mod guest_log;
mod limits;
pub mod media;
mod notifier;
mod sandbox;
mod subprocess;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

pub use auth::{
    AuthContext, AuthOutcome, AuthPlugin, MAX_TOKEN_BYTES, MemoryDirectory, NoDirectory,
    UserDirectory, VERIFY_CPU_TIME, auth_limits, wit as auth_wit,
};
pub use converter::MAX_READ;
pub use converter::wit::{Mode, Options as ConvertOptions, Summary, Trim};
pub use engine::{CacheOutcome, prune as prune_compile_cache};
pub use error::{ConvertError, LoadError, RunError};
pub use limits::{LimitPolicy, RunLimits};
pub use notifier::{
    MAX_BODY_BYTES, MAX_MESSAGES_PER_RUN, NotifierOutput, NotifierPlugin, NotifyRunError,
    notifier_limits, wit as notifier_wit,
};
pub use subprocess::{die_with_parent, run_runner_child};
pub use tapedeck_model::convert::RunCancel;
pub use tapedeck_model::notify::{
    Outgoing, OutgoingMail, OutgoingWebhook, SendPolicy, clean_subject,
};

use bindings::converter::ConverterPre;
use converter::{CpuGuard, RunEvent, RunState};
use engine::CompileCache;

/// Where a plugin's code runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// In a child process per run, stopped by `RLIMIT_CPU`; no interruption checks in the
    /// generated code.
    #[default]
    Subprocess,
    /// On a thread of this process, stopped by an epoch deadline.
    InProcess,
}

impl FromStr for Isolation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "subprocess" => Ok(Self::Subprocess),
            "in-process" => Ok(Self::InProcess),
            other => Err(format!(
                "unknown isolation `{other}` (subprocess or in-process)"
            )),
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Subprocess => "subprocess",
            Self::InProcess => "in-process",
        })
    }
}

/// How a [`PluginRuntime`] is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are kept (`<sha256>.cwasm`); private to this user.
    pub cache_dir: PathBuf,
    pub isolation: Isolation,
    /// The executable started as `<runner_exe> plugin-run ...` in subprocess mode: this
    /// very binary in production ([`running_executable`]), `env!("CARGO_BIN_EXE_tapedeck")`
    /// in tests.
    pub runner_exe: PathBuf,
    /// Cranelift's per-function cache (`<cache_dir>/functions`): a component compiled
    /// again after a small change reuses the machine code of every function that did
    /// not change. For an author's own builds (`plugin check`, `convert`); the service
    /// leaves it off, so no tenant's compile depends on another's code.
    pub incremental: bool,
}

impl RuntimeConfig {
    /// Subprocess isolation, with the running executable as the runner.
    pub fn new(cache_dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        Ok(Self {
            cache_dir: cache_dir.into(),
            isolation: Isolation::default(),
            runner_exe: running_executable()?,
            incremental: false,
        })
    }
}

/// The running executable, held open since the first call: `/proc/self/fd/N` of that
/// handle, a path that always names this process's own binary.
///
/// Why not `current_exe()`: it reads the link `/proc/self/exe`, i.e. a path. A package
/// upgrade replaces the file at that path while the service runs; the path then names
/// the new binary (whose runner may not read the old one's compiled artifacts or
/// protocol) or, once unlinked, nothing at all (`… (deleted)`: no plugin could run). The
/// open handle keeps the old inode, and exec'ing `/proc/self/fd/N` in the forked child
/// (which inherits the descriptor until the exec succeeds) starts exactly this binary.
/// Call it at start-up, before anything could replace the file. A binary this process
/// may execute but not read (mode 0711) cannot be held open: then its path, as before.
pub fn running_executable() -> std::io::Result<PathBuf> {
    static EXE: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    let file = match EXE.get() {
        Some(file) => file,
        None => match File::open("/proc/self/exe") {
            Ok(opened) => EXE.get_or_init(|| opened),
            Err(e) => {
                tracing::warn!(error = %e, "cannot hold this executable open; plugin runners \
                    are started by its path, which an upgrade may replace");
                return std::env::current_exe();
            }
        },
    };
    Ok(PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(file)
    )))
}

/// One engine configuration, its compile cache, and the plugins loaded with it.
pub struct PluginRuntime {
    config: RuntimeConfig,
    cache: CompileCache,
    /// Cranelift's per-function cache, with [`RuntimeConfig::incremental`].
    functions: Option<Arc<engine::FunctionCache>>,
}

impl PluginRuntime {
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let functions = config.incremental.then(|| {
            Arc::new(engine::FunctionCache::new(
                config.cache_dir.join("functions"),
            ))
        });
        let engine = engine::engine_for(config.isolation, functions.clone())
            .map_err(|e| LoadError::Runtime(format!("{e:#}")))?;
        if config.isolation == Isolation::InProcess {
            engine::spawn_epoch_ticker(&engine).map_err(|e| LoadError::Runtime(e.to_string()))?;
        }
        let cache = CompileCache::new(engine, config.cache_dir.clone());
        Ok(Self {
            config,
            cache,
            functions,
        })
    }

    pub fn isolation(&self) -> Isolation {
        self.config.isolation
    }

    /// With [`RuntimeConfig::incremental`]: the functions compiled so far that came from
    /// Cranelift's per-function cache, and all functions compiled.
    pub fn functions_reused(&self) -> Option<(u64, u64)> {
        self.functions.as_ref().map(|f| f.reused())
    }

    /// Whether loading the component with this digest (sha256 of its bytes, hex) would
    /// find its compiled artifact in the cache directory.
    pub fn is_compiled(&self, digest: &str) -> bool {
        self.cache.artifact_of(digest).exists()
    }

    /// Compiles (or loads from the cache) and type-checks a converter component.
    pub fn load_converter(&self, bytes: &[u8]) -> Result<Arc<ConverterPlugin>, LoadError> {
        let compiled = self.cache.load(bytes)?;
        let pre = converter::prepare(&self.cache.engine, &compiled.component)?;
        Ok(Arc::new(ConverterPlugin {
            digest: compiled.digest,
            artifact: compiled.artifact,
            cache_outcome: compiled.outcome,
            pre,
            isolation: self.config.isolation,
            runner_exe: self.config.runner_exe.clone(),
        }))
    }
}

/// A converter component, compiled and type-checked, ready for any number of runs.
pub struct ConverterPlugin {
    /// sha256 of the component bytes, hex.
    digest: String,
    /// The compiled artifact, loaded by runner children.
    artifact: PathBuf,
    cache_outcome: CacheOutcome,
    /// Instantiates the component in a fresh store (in-process runs).
    pre: ConverterPre<RunState>,
    isolation: Isolation,
    runner_exe: PathBuf,
}

impl ConverterPlugin {
    /// The component's content address: sha256 of its bytes, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether loading found the compiled artifact on disk.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache_outcome
    }

    /// The compiled artifact in the cache directory.
    pub fn artifact(&self) -> &Path {
        &self.artifact
    }

    /// Converts `input` into `output` (an empty file, written from offset 0) within
    /// `limits`, calling `progress` with the fraction done (0.0..=1.0) as the run goes.
    ///
    /// Blocks until the run ends; async callers should use a blocking thread.
    pub fn convert(
        &self,
        input: &File,
        output: &File,
        options: &ConvertOptions,
        limits: &RunLimits,
        progress: &mut dyn FnMut(f32),
    ) -> Result<Summary, RunError> {
        self.convert_measured(input, output, options, limits, progress)
            .map(|(summary, _)| summary)
    }

    /// [`convert`](Self::convert), also telling what the run used.
    pub fn convert_measured(
        &self,
        input: &File,
        output: &File,
        options: &ConvertOptions,
        limits: &RunLimits,
        progress: &mut dyn FnMut(f32),
    ) -> Result<(Summary, RunUsage), RunError> {
        let (result, usage) = self.convert_accounted(input, output, options, limits, progress);
        result.map(|summary| (summary, usage))
    }

    /// [`convert`](Self::convert), also telling what the run used, whether it succeeded
    /// or not (a run stopped by a limit used its CPU time too).
    pub fn convert_accounted(
        &self,
        input: &File,
        output: &File,
        options: &ConvertOptions,
        limits: &RunLimits,
        progress: &mut dyn FnMut(f32),
    ) -> (Result<Summary, RunError>, RunUsage) {
        self.convert_cancellable(input, output, options, limits, progress, &RunCancel::new())
    }

    /// [`convert_accounted`](Self::convert_accounted), stopped early when `cancel` is set:
    /// the runner child is killed within a tick of its watchdog and the result is
    /// [`RunError::Cancelled`]. In-process runs are not cancellable: they end at their
    /// epoch deadline.
    pub fn convert_cancellable(
        &self,
        input: &File,
        output: &File,
        options: &ConvertOptions,
        limits: &RunLimits,
        progress: &mut dyn FnMut(f32),
        cancel: &RunCancel,
    ) -> (Result<Summary, RunError>, RunUsage) {
        let mut usage = RunUsage::default();
        let mut cpu = None;
        let mut on_event = |event| match event {
            RunEvent::Progress(fraction) => progress(fraction),
            RunEvent::Log { level, message } => guest_log::emit(&self.digest, level, &message),
            RunEvent::Usage { peak_memory_bytes } => usage.peak_memory_bytes = peak_memory_bytes,
        };
        let result = match self.isolation {
            Isolation::Subprocess => subprocess::run_in_child(
                &self.runner_exe,
                &self.artifact,
                input,
                output,
                options,
                limits,
                &mut on_event,
                &mut cpu,
                cancel,
            ),
            Isolation::InProcess => (|| {
                let input = input
                    .try_clone()
                    .map_err(|e| RunError::io("cannot use the input", e))?;
                let output = output
                    .try_clone()
                    .map_err(|e| RunError::io("cannot use the output", e))?;
                let spent = std::sync::Mutex::new(None);
                let result = converter::observe(
                    |events| {
                        let start = thread_cpu_time();
                        let result = converter::run_converter(
                            &self.pre,
                            input,
                            output,
                            options,
                            limits,
                            CpuGuard::Epoch,
                            events,
                        );
                        *spent.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(thread_cpu_time().saturating_sub(start));
                        result
                    },
                    on_event,
                );
                cpu = spent.into_inner().unwrap_or_else(|p| p.into_inner());
                result
            })(),
        };
        usage.cpu_time = cpu;
        (result, usage)
    }
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> std::time::Duration {
    // SAFETY: an all-zero timespec is valid; clock_gettime only writes into it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What one run used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunUsage {
    /// Peak linear memory of the guest, all memories together, in bytes.
    pub peak_memory_bytes: u64,
    /// CPU time of the run (the runner process's, or the in-process thread's); `None`
    /// when it could not be measured.
    pub cpu_time: Option<std::time::Duration>,
}

impl Default for ConvertOptions {
    /// 192 kbit/s CBR at the source's rate, channels kept, no trimming.
    fn default() -> Self {
        Self {
            mode: Mode::Cbr(192),
            sample_rate: None,
            mono: false,
            trim: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_round_trips_through_its_name() {
        for isolation in [Isolation::Subprocess, Isolation::InProcess] {
            assert_eq!(isolation.to_string().parse::<Isolation>(), Ok(isolation));
        }
        assert!("docker".parse::<Isolation>().is_err());
    }
}
