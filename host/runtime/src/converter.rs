//! The converter world: its bindings, the host side of its imports (`io` source and
//! sink, `progress`, `logging`, next to each other below), and one run of a converter in a
//! fresh `Store`.
//!
//! Every size a guest controls is checked before the host allocates for it: `read-at`
//! lengths and write sizes against [`MAX_READ`], the output against the run's limit, log
//! lines against [`MAX_LOG_LINE`].
//!
//! Contact points: `mod.rs` (in-process runs) and `subprocess.rs` (the runner child) both
//! call [`run_converter`]; neither touches a `Store` themselves.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::error::{LoadError, RunError, classify_failure};
use super::guest_log::{GuestLog, LogPolicy};
use super::limits::{RunLimiter, RunLimits};
use super::sandbox::{self, StderrCapture, StoreParts};

use crate::bindings::converter::*;

/// The WIT types of the converter world, under short names.
pub(crate) mod wit {
    pub use super::exports::tapedeck::plugin::conversion::{
        ConvertError, Mode, Options, Summary, Trim,
    };
    pub use super::tapedeck::plugin::io::IoError;
    pub use super::tapedeck::plugin::logging::Level;
}

use tapedeck::plugin::{io, logging, progress};

/// The most bytes one `read-at` may return and one `write`/`write-at` may carry.
pub const MAX_READ: u32 = 1 << 20;
/// Longer guest log lines are cut to this many bytes.
/// Converter guests may log a burst of 100 lines, then 10 a second, 4 KiB each.
const CONVERTER_LOG: LogPolicy = LogPolicy {
    burst: 100.0,
    per_second: 10.0,
    max_line: 4 * 1024,
};
/// Log lines a guest may send in a burst, and then per second.
/// Host-side resources (WASI streams, our source and sink) a guest may hold at once.
const MAX_RESOURCES: usize = 1024;

/// What a run tells its observer while it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum RunEvent {
    /// Fraction done, in 0.0..=1.0; sent only when it changed by at least 0.1%.
    Progress(f32),
    /// A guest log line (already truncated and rate-limited) or its captured stderr.
    Log { level: wit::Level, message: String },
    /// What the run used, sent once when it ends (whatever the outcome).
    Usage { peak_memory_bytes: u64 },
}

/// How the CPU time of a run is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CpuGuard {
    /// By an epoch deadline: the engine has epoch interruption and a ticker.
    Epoch,
    /// From outside the process (`RLIMIT_CPU` of the runner child).
    External,
}

/// Type-checks a component against the converter world and prepares fast instantiation.
pub(crate) fn prepare(
    engine: &Engine,
    component: &Component,
) -> Result<ConverterPre<RunState>, LoadError> {
    let pre = sandbox::instantiate_pre(engine, component, "converter", |linker| {
        Converter::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
    })?;
    ConverterPre::new(pre).map_err(|e| LoadError::wrong_world("converter", e))
}

/// Runs `convert` once in a fresh store, writing the MP3 to `output` from offset 0.
pub(crate) fn run_converter(
    pre: &ConverterPre<RunState>,
    input: File,
    output: File,
    options: &wit::Options,
    limits: &RunLimits,
    cpu: CpuGuard,
    events: mpsc::Sender<RunEvent>,
) -> Result<wit::Summary, RunError> {
    let size = input
        .metadata()
        .map_err(|e| RunError::io("cannot read the input", e))?
        .len();
    let parts = StoreParts::new(limits, MAX_RESOURCES);
    let stderr = parts.stderr;
    let state = RunState {
        wasi: parts.wasi,
        table: parts.table,
        limiter: parts.limiter,
        events: events.clone(),
        log: GuestLog::new(CONVERTER_LOG),
        last_progress: None,
    };
    let deadline = (cpu == CpuGuard::Epoch).then_some(limits.cpu_time);
    let mut store = sandbox::limited_store(pre.engine(), state, |s| &mut s.limiter, deadline);

    let instance = pre.instantiate(&mut store);
    let result = instance.and_then(|converter| {
        let table = &mut store.data_mut().table;
        let source = table.push(InputSource { file: input, size })?;
        let sink = table.push(OutputSink::new(output, limits.max_output_bytes))?;
        let sink_rep = sink.rep();
        let call = converter
            .tapedeck_plugin_conversion()
            .call_convert(&mut store, source, sink, *options);
        Ok((call, sink_rep))
    });
    forward_diagnostics(store.data(), &stderr, &events);

    let state = store.data_mut();
    let _ = events.send(RunEvent::Usage {
        peak_memory_bytes: state.limiter.memory_bytes(),
    });
    let limits = state.limiter.limits().clone();
    if state.limiter.memory_denied {
        return Err(RunError::MemoryLimit {
            limit: limits.max_memory_bytes,
        });
    }
    if state.limiter.table_denied {
        return Err(RunError::TableLimit {
            limit: limits.max_table_elements,
        });
    }
    let (call, sink_rep) =
        result.map_err(|e| classify_failure(e, true, &limits).with_stderr(&stderr.contents()))?;
    // The guest only borrowed the sink: its entry, with the final counts, is still ours.
    let sink = state
        .table
        .delete(Resource::<OutputSink>::new_own(sink_rep))
        .map_err(|e| RunError::io("the output sink went missing", e))?;
    if sink.refused {
        return Err(RunError::OutputLimit {
            limit: limits.max_output_bytes,
        });
    }
    match call {
        Ok(Ok(mut summary)) => {
            // The host counted the bytes; a guest's own figure is not trusted.
            summary.output_bytes = sink.len;
            Ok(summary)
        }
        Ok(Err(error)) => Err(RunError::Convert(error.into())),
        Err(error) => Err(classify_failure(error, false, &limits).with_stderr(&stderr.contents())),
    }
}

/// Sends what the guest said outside `logging`: its stderr and how many lines the rate
/// limit dropped.
fn forward_diagnostics(state: &RunState, stderr: &StderrCapture, events: &mpsc::Sender<RunEvent>) {
    let dropped = state.log.dropped;
    if dropped > 0 {
        let _ = events.send(RunEvent::Log {
            level: wit::Level::Warn,
            message: format!("{dropped} log lines dropped (rate limit)"),
        });
    }
    let captured = stderr.contents();
    if !captured.is_empty() {
        let _ = events.send(RunEvent::Log {
            level: wit::Level::Info,
            message: format!("stderr: {}", captured.trim_end()),
        });
    }
}

/// Runs `run` on a scoped thread and hands its events to `on_event` on this one, so a
/// borrowed, non-`Send` observer (a progress bar, a pipe) can follow a run whose `Store`
/// must be `'static`. Returns when the run has finished and every event is delivered.
pub(crate) fn observe<R: Send>(
    run: impl FnOnce(mpsc::Sender<RunEvent>) -> R + Send,
    mut on_event: impl FnMut(RunEvent),
) -> R {
    let (events, received) = mpsc::channel();
    std::thread::scope(|scope| {
        let runner = scope.spawn(move || run(events));
        // Ends when the run drops its last sender, i.e. when its store is gone.
        for event in received {
            on_event(event);
        }
        runner
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Everything one run's `Store` holds.
pub(crate) struct RunState {
    /// The (empty) WASI world std-based guests expect; see `sandbox.rs`.
    wasi: WasiCtx,
    /// Host resources handed to the guest: the source, the sink, WASI streams.
    table: ResourceTable,
    /// Memory and table limits, with a record of any refusal.
    limiter: RunLimiter,
    /// Where progress and log lines go.
    events: mpsc::Sender<RunEvent>,
    /// Rate limit of guest log lines.
    log: GuestLog,
    /// Last progress sent, in thousandths.
    last_progress: Option<u16>,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The input of a run: a file read with positioned reads, so the guest decides the order.
pub struct InputSource {
    file: File,
    /// Length of the input when the run started.
    size: u64,
}

/// The output of a run: appended to, with overwrites of bytes already written.
pub struct OutputSink {
    file: File,
    /// Bytes written so far: the output's length.
    len: u64,
    /// The run's output limit in bytes.
    limit: u64,
    /// Set when a write was refused for the limit; every later write traps.
    refused: bool,
}

impl OutputSink {
    fn new(file: File, limit: u64) -> Self {
        Self {
            file,
            len: 0,
            limit,
            refused: false,
        }
    }
}

fn invalid(why: &str) -> wasmtime::Result<Result<(), wit::IoError>> {
    Ok(Err(wit::IoError::InvalidRequest(why.to_string())))
}

fn too_long(len: usize) -> bool {
    len > MAX_READ as usize
}

impl io::Host for RunState {
    fn max_read(&mut self) -> wasmtime::Result<u32> {
        Ok(MAX_READ)
    }
}

impl io::HostSource for RunState {
    fn size(&mut self, source: Resource<InputSource>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&source)?.size)
    }

    fn read_at(
        &mut self,
        source: Resource<InputSource>,
        offset: u64,
        len: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::IoError>> {
        if len > MAX_READ {
            return Ok(Err(wit::IoError::InvalidRequest(format!(
                "read-at of {len} bytes; max-read is {MAX_READ}"
            ))));
        }
        let source = self.table.get(&source)?;
        let available = source.size.saturating_sub(offset);
        let mut buffer = vec![0; available.min(u64::from(len)) as usize];
        Ok(source
            .file
            .read_exact_at(&mut buffer, offset)
            .map(|()| buffer)
            .map_err(|e| wit::IoError::Failed(format!("reading the input: {e}"))))
    }

    fn drop(&mut self, source: Resource<InputSource>) -> wasmtime::Result<()> {
        self.table.delete(source)?;
        Ok(())
    }
}

impl io::HostSink for RunState {
    fn write(
        &mut self,
        sink: Resource<OutputSink>,
        bytes: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wit::IoError>> {
        let sink = self.table.get_mut(&sink)?;
        if sink.refused {
            wasmtime::bail!(
                "write after the output limit of {} bytes was exceeded",
                sink.limit
            );
        }
        if too_long(bytes.len()) {
            return invalid("write of more than max-read bytes");
        }
        let end = sink.len + bytes.len() as u64;
        if end > sink.limit {
            sink.refused = true;
            return Ok(Err(wit::IoError::LimitExceeded(sink.limit)));
        }
        if let Err(e) = sink.file.write_all_at(&bytes, sink.len) {
            return Ok(Err(wit::IoError::Failed(format!(
                "writing the output: {e}"
            ))));
        }
        sink.len = end;
        Ok(Ok(()))
    }

    fn write_at(
        &mut self,
        sink: Resource<OutputSink>,
        offset: u64,
        bytes: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wit::IoError>> {
        let sink = self.table.get_mut(&sink)?;
        if sink.refused {
            wasmtime::bail!(
                "write after the output limit of {} bytes was exceeded",
                sink.limit
            );
        }
        if too_long(bytes.len()) {
            return invalid("write-at of more than max-read bytes");
        }
        if offset
            .checked_add(bytes.len() as u64)
            .is_none_or(|end| end > sink.len)
        {
            return invalid("write-at past the end of the output");
        }
        Ok(sink
            .file
            .write_all_at(&bytes, offset)
            .map_err(|e| wit::IoError::Failed(format!("writing the output: {e}"))))
    }

    fn drop(&mut self, sink: Resource<OutputSink>) -> wasmtime::Result<()> {
        self.table.delete(sink)?;
        Ok(())
    }
}

impl progress::Host for RunState {
    fn report(&mut self, fraction: f32) -> wasmtime::Result<()> {
        if fraction.is_nan() {
            return Ok(());
        }
        let permille = (fraction.clamp(0.0, 1.0) * 1000.0).round() as u16;
        if self.last_progress != Some(permille) {
            self.last_progress = Some(permille);
            let _ = self
                .events
                .send(RunEvent::Progress(f32::from(permille) / 1000.0));
        }
        Ok(())
    }
}

impl logging::Host for RunState {
    fn log(&mut self, level: wit::Level, message: String) -> wasmtime::Result<()> {
        if let Some(message) = self.log.admit(message) {
            let _ = self.events.send(RunEvent::Log { level, message });
        }
        Ok(())
    }
}
