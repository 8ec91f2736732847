//! Warnings that repeat: a loop that meets the same failure every few milliseconds (Redis
//! down, a subscription gone) logs it once per period with a count of what it left out,
//! instead of a line per attempt: [`warn_throttled!`](crate::warn_throttled) with a
//! [`Throttled`] per loop.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a distinct warning stays quiet after it was logged, by default.
pub const QUIET_FOR: Duration = Duration::from_secs(10);

/// Distinct warnings this many at most are remembered; past it, those quiet longer than
/// their period are forgotten.
const REMEMBERED: usize = 64;

/// Logs each distinct warning at most once per period, then how many repeats it left
/// out. One per loop (or per kind of work); cheap to call on every failure.
#[derive(Debug)]
pub struct Throttled {
    every: Duration,
    /// By warning text: when it was last logged, and the repeats left out since.
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Default for Throttled {
    fn default() -> Self {
        Self::new(QUIET_FOR)
    }
}

impl Throttled {
    /// One line per distinct warning per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            seen: Mutex::default(),
        }
    }

    /// How long a warning stays quiet after it was logged.
    pub fn period(&self) -> Duration {
        self.every
    }

    /// Whether `text` is logged now: `Some(repeats left out since it last was)`, or
    /// `None` to stay quiet. [`warn_throttled!`](crate::warn_throttled) asks this.
    pub fn admit(&self, text: &str) -> Option<u64> {
        self.admit_at(text, Instant::now())
    }

    fn admit_at(&self, text: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().expect("the lock is never poisoned");
        if let Some((at, repeats)) = seen.get_mut(text) {
            if now.duration_since(*at) < self.every {
                *repeats += 1;
                return None;
            }
            let left_out = *repeats;
            *at = now;
            *repeats = 0;
            return Some(left_out);
        }
        if seen.len() >= REMEMBERED {
            let every = self.every;
            seen.retain(|_, (at, _)| now.duration_since(*at) < every);
        }
        seen.insert(text.to_owned(), (now, 0));
        Some(0)
    }
}

/// Logs `what: error` as a warning through `throttle` (a [`Throttled`]) unless the same
/// text was logged within its period; the line that ends a quiet period counts the
/// repeats it left out (`repeats`). A macro, so the line carries the caller's module as
/// its target (what `RUST_LOG` filters on) and the caller's span.
#[macro_export]
macro_rules! warn_throttled {
    ($throttle:expr, $what:expr, $error:expr) => {{
        let throttle: &$crate::logs::Throttled = &$throttle;
        let text = format!("{}: {}", $what, $error);
        match throttle.admit(&text) {
            Some(0) => $crate::logs::tracing::warn!("{text}"),
            Some(repeats) => $crate::logs::tracing::warn!(
                repeats,
                "{text} (and {repeats} more times in the last {} s)",
                throttle.period().as_secs()
            ),
            None => {}
        }
    }};
}

#[doc(hidden)]
pub use tracing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_logged_once_per_period_with_its_count() {
        let t = Throttled::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(t.admit_at("redis: refused", start), Some(0));
        for ms in 1..=500 {
            assert_eq!(
                t.admit_at("redis: refused", start + Duration::from_millis(ms)),
                None
            );
        }
        // Another warning is its own.
        assert_eq!(
            t.admit_at("redis: timed out", start + Duration::from_secs(1)),
            Some(0)
        );
        assert_eq!(
            t.admit_at("redis: refused", start + Duration::from_secs(10)),
            Some(500)
        );
        assert_eq!(
            t.admit_at("redis: refused", start + Duration::from_secs(11)),
            None
        );
    }

    #[test]
    fn quiet_warnings_are_forgotten_when_many_come() {
        let t = Throttled::new(Duration::from_secs(1));
        let start = Instant::now();
        for i in 0..REMEMBERED {
            t.admit_at(&i.to_string(), start);
        }
        let later = start + Duration::from_secs(2);
        assert_eq!(t.admit_at("new", later), Some(0));
        assert_eq!(t.seen.lock().unwrap().len(), 1);
    }
}
