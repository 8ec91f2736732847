//! The wait between attempts at something that keeps failing: reconnecting to Redis,
//! subscribing again after a subscription ended, recording an outcome during an outage.
//! Doubling from a short first wait to a cap, so a loop neither spins while Redis is
//! down nor sleeps long once it is back.

use std::time::Duration;

/// Exponential backoff without jitter (each process waits on its own failures; nothing
/// here is synchronised across processes).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// A subscription that lasted this long was healthy: the next wait starts over.
    healthy: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits from `min`, doubling to `max`; an attempt that lasted `healthy` resets it.
    pub const fn new(min: Duration, max: Duration, healthy: Duration) -> Self {
        Self {
            min,
            max,
            healthy,
            next: min,
        }
    }

    /// What every loop on Redis uses: 100 ms doubling to 5 s, reset after 10 s of health.
    pub const fn redis() -> Self {
        Self::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            Duration::from_secs(10),
        )
    }

    /// The wait after a failed attempt; the one after the next failure is twice as long.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// The attempt worked: the next failure waits the shortest time again.
    pub fn succeeded(&mut self) {
        self.next = self.min;
    }

    /// The wait after something that had worked for `lasted` ended (a subscription's
    /// stream closed): short again if it had been healthy, else as [`Backoff::failed`].
    pub fn ended_after(&mut self, lasted: Duration) -> Duration {
        if lasted >= self.healthy {
            self.succeeded();
        }
        self.failed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_starts_over_after_health() {
        let mut b = Backoff::redis();
        let waits: Vec<u64> = (0..8).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // A subscription that ended at once keeps backing off...
        assert_eq!(b.ended_after(Duration::from_millis(5)).as_millis(), 5000);
        // ...one that had lasted starts over.
        assert_eq!(b.ended_after(Duration::from_secs(30)).as_millis(), 100);
        assert_eq!(b.failed().as_millis(), 200);
        b.succeeded();
        assert_eq!(b.failed().as_millis(), 100);
    }
}
