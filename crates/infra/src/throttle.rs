//! Warnings that would repeat for every request during an outage (Redis down, a database
//! failing over) are logged once per interval per call site, with the number of occurrences
//! left out since the last line: `suppressed=N`. Use [`warn_every!`](crate::warn_every)
//! where a warning can fire per request; keep plain `tracing::warn!` for one-off events.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

/// How often one kind of warning is logged at most.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// One call site's state: when it may log next, and what it left out meanwhile.
#[derive(Debug)]
pub struct Throttle {
    /// Milliseconds since the process's first throttled warning; 0 before any.
    next_at: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

impl Throttle {
    pub const fn new() -> Self {
        Self {
            next_at: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when this occurrence is to be logged, with the number of occurrences
    /// left out since the last logged one; `None` when it is to be left out.
    pub fn admit(&self, interval: Duration) -> Option<u64> {
        static START: OnceLock<Instant> = OnceLock::new();
        let start = START.get_or_init(Instant::now);
        // +1: the first occurrence is always at or after `next_at`'s initial 0.
        let now = u64::try_from(start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        self.admit_at(now, u64::try_from(interval.as_millis()).unwrap_or(u64::MAX))
    }

    fn admit_at(&self, now_ms: u64, interval_ms: u64) -> Option<u64> {
        let next = self.next_at.load(Relaxed);
        if now_ms >= next
            && self
                .next_at
                .compare_exchange(next, now_ms.saturating_add(interval_ms), Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// `tracing::warn!` at most once per [`WARN_INTERVAL`](crate::throttle::WARN_INTERVAL) for this
/// call site, with a `suppressed` field counting the occurrences left out before it.
#[macro_export]
macro_rules! warn_every {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::throttle::Throttle = $crate::throttle::Throttle::new();
        if let Some(suppressed) = THROTTLE.admit($crate::throttle::WARN_INTERVAL) {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_once_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new();
        assert_eq!(throttle.admit_at(1, 10_000), Some(0), "the first is logged");
        for now in 2..192 {
            assert_eq!(throttle.admit_at(now, 10_000), None);
        }
        assert_eq!(throttle.admit_at(9_999, 10_000), None);
        assert_eq!(
            throttle.admit_at(10_001, 10_000),
            Some(191),
            "the next interval's first line counts what was left out"
        );
        assert_eq!(throttle.admit_at(10_002, 10_000), None);
        assert_eq!(throttle.admit_at(30_000, 10_000), Some(1));
    }

    #[test]
    fn a_storm_of_ten_seconds_logs_a_line_or_two() {
        // 190 warnings a second for 10 s, as a Redis outage produced before.
        let throttle = Throttle::new();
        let logged = (0..1_900u64)
            .filter(|i| throttle.admit_at(1 + i * 1000 / 190, 10_000).is_some())
            .count();
        assert!(logged <= 2, "{logged} lines");
    }
}
