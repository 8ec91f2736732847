//! What one run of a plugin may spend, and the store limiter that enforces the memory and
//! table parts of it.
//!
//! Where each limit is enforced:
//! - memory, table elements, instance/table/memory counts: [`RunLimiter`], installed on
//!   every `Store`; it remembers a denied growth so the run's error can name the limit
//!   instead of the trap the guest hits afterwards (Rust guests abort on allocation
//!   failure).
//! - output bytes: the sink (`converter.rs`).
//! - CPU time: `RLIMIT_CPU` of the runner process (`subprocess.rs`) or an epoch deadline
//!   (`converter.rs`, in-process mode).
//! - wall time ([`RunLimits::wall_clock`], capped by `max_wall_time`): the runner's
//!   watchdog (`subprocess.rs`), which also ends a cancelled run.
//! - the audio length a run is sized for: believed only if the file's size can carry it
//!   (`adapters/converter.rs`, `MIN_BYTES_PER_AUDIO_SECOND`).

pub use tapedeck_model::run_limits::{LimitPolicy, RunLimits};
use wasmtime::ResourceLimiter;

/// A `ResourceLimiter` over all memories and tables of one store, which records whether
/// it refused anything.
#[derive(Debug)]
pub(crate) struct RunLimiter {
    limits: RunLimits,
    memory_bytes: u64,
    table_elements: u64,
    /// Set when a memory growth was refused.
    pub memory_denied: bool,
    /// Set when a table growth was refused.
    pub table_denied: bool,
}

impl RunLimiter {
    pub fn new(limits: RunLimits) -> Self {
        Self {
            limits,
            memory_bytes: 0,
            table_elements: 0,
            memory_denied: false,
            table_denied: false,
        }
    }

    /// Linear memory of the store so far; memories never shrink, so this is the peak.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    pub fn limits(&self) -> &RunLimits {
        &self.limits
    }
}

/// Adds `desired - current` to `used` if the total stays within `limit`.
fn grow(used: &mut u64, current: usize, desired: usize, limit: u64) -> bool {
    let total = used.saturating_add(desired.saturating_sub(current) as u64);
    if total > limit {
        return false;
    }
    *used = total;
    true
}

impl ResourceLimiter for RunLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Memories only grow, and wasmtime calls this for a memory's initial size too, so
        // the running sum is the store's total linear memory.
        let allowed = grow(
            &mut self.memory_bytes,
            current,
            desired,
            self.limits.max_memory_bytes,
        );
        self.memory_denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = grow(
            &mut self.table_elements,
            current,
            desired,
            self.limits.max_table_elements,
        );
        self.table_denied |= !allowed;
        Ok(allowed)
    }

    fn instances(&self) -> usize {
        self.limits.max_instances
    }

    fn tables(&self) -> usize {
        self.limits.max_tables
    }

    fn memories(&self) -> usize {
        self.limits.max_memories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limit_counts_all_memories_and_records_denial() {
        let mut limiter = RunLimiter::new(RunLimits {
            max_memory_bytes: 100,
            ..RunLimits::default()
        });
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        assert!(!limiter.memory_denied);
        assert!(!limiter.memory_growing(60, 61, None).unwrap());
        assert!(limiter.memory_denied);
        assert!(!limiter.table_denied);
    }

    #[test]
    fn table_limit_records_denial() {
        let mut limiter = RunLimiter::new(RunLimits {
            max_table_elements: 10,
            ..RunLimits::default()
        });
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert!(!limiter.table_growing(10, 11, None).unwrap());
        assert!(limiter.table_denied);
    }
}
