//! The one `logging` policy every world's guests get: a token bucket per run (a burst,
//! then a steady rate), lines cut to a maximum length, and the host log as the sink
//! (target `tapedeck::guest`, with the plugin's short digest). The converter's lines
//! travel to the parent process first (subprocess isolation) and are emitted there.

use std::time::Instant;

use super::converter::wit::Level;

/// What one run's guest may log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogPolicy {
    /// Lines allowed at once.
    pub burst: f64,
    /// Lines earned per second after the burst (0: none).
    pub per_second: f64,
    /// Longest line kept, in bytes; longer ones are cut and marked.
    pub max_line: usize,
}

/// A token bucket over [`LogPolicy`], one per run.
#[derive(Debug)]
pub(crate) struct GuestLog {
    policy: LogPolicy,
    tokens: f64,
    refilled: Instant,
    /// Lines refused so far.
    pub dropped: u64,
}

impl GuestLog {
    pub fn new(policy: LogPolicy) -> Self {
        Self {
            tokens: policy.burst,
            policy,
            refilled: Instant::now(),
            dropped: 0,
        }
    }

    /// The line to log, cut to the policy's length, or `None` when over budget.
    pub fn admit(&mut self, mut message: String) -> Option<String> {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.policy.per_second;
        self.tokens = (self.tokens + earned).min(self.policy.burst);
        self.refilled = now;
        if self.tokens < 1.0 {
            self.dropped += 1;
            return None;
        }
        self.tokens -= 1.0;
        if message.len() > self.policy.max_line {
            let mut cut = self.policy.max_line;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [truncated]");
        }
        Some(message)
    }
}

/// A plugin as the host log names it: the first 12 hex digits of its digest.
pub(crate) fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// Writes what a guest wrote to stderr (captured, never its own stream) to the host log.
pub(crate) fn emit_stderr(digest: &str, captured: &str) {
    if !captured.is_empty() {
        let plugin = short(digest);
        tracing::info!(target: "tapedeck::guest", plugin, "stderr: {}", captured.trim_end());
    }
}

/// Writes a guest's log line to the host log.
pub(crate) fn emit(digest: &str, level: Level, message: &str) {
    let plugin = short(digest);
    match level {
        Level::Trace => tracing::trace!(target: "tapedeck::guest", plugin, "{message}"),
        Level::Debug => tracing::debug!(target: "tapedeck::guest", plugin, "{message}"),
        Level::Info => tracing::info!(target: "tapedeck::guest", plugin, "{message}"),
        Level::Warn => tracing::warn!(target: "tapedeck::guest", plugin, "{message}"),
        Level::Error => tracing::error!(target: "tapedeck::guest", plugin, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_drops_and_long_lines_are_cut() {
        let mut log = GuestLog::new(LogPolicy {
            burst: 100.0,
            per_second: 10.0,
            max_line: 8,
        });
        let allowed = (0..1000)
            .filter(|_| log.admit("x".into()).is_some())
            .count();
        assert!((100..=101).contains(&allowed), "{allowed}");
        assert!(log.dropped >= 899);
        let mut fresh = GuestLog::new(LogPolicy {
            burst: 1.0,
            per_second: 0.0,
            max_line: 2,
        });
        assert_eq!(
            fresh.admit("héllo".into()).as_deref(),
            Some("h [truncated]")
        );
        assert_eq!(fresh.admit("again".into()), None, "no refill at rate 0");
    }
}
