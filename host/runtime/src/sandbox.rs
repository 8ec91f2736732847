//! The WASI context a guest gets: as close to nothing as Rust's `std` for wasm32-wasip2
//! lets us give (it imports `wasi:cli`, `wasi:clocks`, `wasi:filesystem`, ... even when a
//! plugin never uses them, so they must be linked).
//!
//! What a guest can see:
//! - no files: no preopened directories, so every path lookup fails;
//! - no environment variables, no arguments, a closed stdin, a stdout that discards;
//! - no network: TCP, UDP and name lookup are disabled and every socket address is
//!   denied;
//! - clocks frozen at a fixed instant (2000-01-01 UTC, monotonic 0), so a plugin's output
//!   cannot depend on when it ran and it cannot time the host;
//! - random bytes (`std`'s hash maps need them);
//! - stderr, captured up to [`STDERR_CAPTURE`] bytes and handed to the host log after the
//!   run.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

/// How much of a guest's stderr is kept per run; the rest is dropped.
pub(crate) const STDERR_CAPTURE: usize = 16 * 1024;

/// 2000-01-01T00:00:00Z, the wall-clock time every guest sees.
const FROZEN_WALL_CLOCK: Duration = Duration::from_secs(946_684_800);

/// Builds the WASI context of one run; the guest's stderr goes to `stderr`.
pub(crate) fn wasi_context(stderr: StderrCapture) -> WasiCtx {
    WasiCtxBuilder::new()
        .stderr(stderr)
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

/// A clock that never moves.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        FROZEN_WALL_CLOCK
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// A guest's stderr: keeps the first [`STDERR_CAPTURE`] bytes, accepts and drops the rest
/// (a full buffer must not make `eprintln!` fail, which would abort the guest).
#[derive(Clone, Default)]
pub(crate) struct StderrCapture(Arc<Mutex<Vec<u8>>>);

impl StderrCapture {
    /// What the guest wrote, lossily decoded.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    /// What the guest wrote since the last `take`, lossily decoded; empties the buffer.
    pub fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.lock());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.lock();
        let room = STDERR_CAPTURE.saturating_sub(buffer.len());
        buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means a panic elsewhere mid-append; the bytes are still fine.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl IsTerminal for StderrCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrCapture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for StderrCapture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrCapture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrCapture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The one load path of every world: links the (empty) WASI sandbox and the world's host
/// imports (`add`), then type-checks `component` against `world`, naming it if the
/// component does not fit.
pub(crate) fn instantiate_pre<T: wasmtime_wasi::WasiView + 'static>(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
    world: &'static str,
    add: impl FnOnce(&mut wasmtime::component::Linker<T>) -> wasmtime::Result<()>,
) -> Result<wasmtime::component::InstancePre<T>, super::error::LoadError> {
    use super::error::LoadError;
    check_wit_version(engine, component)?;
    let mut linker = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .map_err(|e| LoadError::Runtime(format!("{e:#}")))?;
    add(&mut linker).map_err(|e| LoadError::Runtime(format!("{e:#}")))?;
    linker
        .instantiate_pre(component)
        .map_err(|e| LoadError::wrong_world(world, e))
}

/// Refuses a component whose `tapedeck:plugin` imports or exports carry another version
/// than [`crate::WIT_VERSION`], with that reason (rather than a linker error).
fn check_wit_version(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Result<(), super::error::LoadError> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(n, _)| n)
        .chain(ty.exports(engine).map(|(n, _)| n));
    for name in names {
        let Some(rest) = name.strip_prefix("tapedeck:plugin/") else {
            continue;
        };
        let version = rest.split_once('@').map(|(_, v)| v);
        if version != Some(crate::WIT_VERSION) {
            return Err(super::error::LoadError::UnsupportedVersion {
                found: match version {
                    Some(v) => format!("tapedeck:plugin@{v}"),
                    None => "an unversioned tapedeck:plugin".into(),
                },
            });
        }
    }
    Ok(())
}

/// What every run's store starts from, whatever the world: the (empty) WASI context
/// with its stderr captured, a resource table capped at `max_resources`, and the limiter
/// of `limits`. Each world's state holds these next to its own fields.
pub(crate) struct StoreParts {
    pub wasi: wasmtime_wasi::WasiCtx,
    pub table: wasmtime::component::ResourceTable,
    pub limiter: super::limits::RunLimiter,
    pub stderr: StderrCapture,
}

impl StoreParts {
    pub fn new(limits: &super::limits::RunLimits, max_resources: usize) -> Self {
        let stderr = StderrCapture::default();
        let mut table = wasmtime::component::ResourceTable::new();
        table.set_max_capacity(max_resources);
        Self {
            wasi: wasi_context(stderr.clone()),
            table,
            limiter: super::limits::RunLimiter::new(limits.clone()),
            stderr,
        }
    }
}

/// The store of one run: the limiter installed, and an epoch deadline of `cpu` when the
/// run is bounded in process (`None`: the subprocess's `RLIMIT_CPU` bounds it).
pub(crate) fn limited_store<T: 'static>(
    engine: &wasmtime::Engine,
    state: T,
    limiter: fn(&mut T) -> &mut super::limits::RunLimiter,
    cpu: Option<std::time::Duration>,
) -> wasmtime::Store<T> {
    let mut store = wasmtime::Store::new(engine, state);
    store.limiter(move |state| limiter(state));
    if let Some(cpu) = cpu {
        store.set_epoch_deadline(super::engine::epoch_ticks(cpu));
        store.epoch_deadline_trap();
    }
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_capture_keeps_a_bounded_prefix() {
        let capture = StderrCapture::default();
        let mut stream = capture.p2_stream();
        stream
            .write(Bytes::from(vec![b'a'; STDERR_CAPTURE - 1]))
            .unwrap();
        stream.write(Bytes::from_static(b"bc")).unwrap();
        let contents = capture.contents();
        assert_eq!(contents.len(), STDERR_CAPTURE);
        assert!(contents.ends_with("ab"));
    }
}
