//! Instants as microseconds since the Unix epoch: exact, totally ordered and stored the same
//! way on every database backend.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Where the server reads the time: the system clock, moved by an offset that only tests set
/// (so that expiry, TTLs and days are tested by moving time, not by sleeping through it).
/// Clones share the offset: replicas of one test share one clock.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_micros: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    pub fn now(&self) -> UnixMicros {
        let offset = self.offset_micros.load(Relaxed);
        UnixMicros(UnixMicros::now().0.saturating_add(offset))
    }

    /// Moves this clock (and its clones) `by` into the future.
    pub fn advance(&self, by: Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset_micros.fetch_add(micros, Relaxed);
    }
}

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMicros(pub i64);

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

impl UnixMicros {
    /// The system clock's time; the server reads [`Clock::now`] instead.
    pub fn now() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_micros());
        Self(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    /// The UTC day this instant falls on, in days since 1970-01-01 (daily caps count by it).
    pub fn utc_day(self) -> Option<i32> {
        i32::try_from(self.0.div_euclid(MICROS_PER_DAY)).ok()
    }

    /// From a protobuf-style (seconds, nanos) pair; `None` when it does not fit in i64 micros.
    pub fn from_parts(seconds: i64, nanos: i32) -> Option<Self> {
        if !(0..1_000_000_000).contains(&nanos) {
            return None;
        }
        seconds
            .checked_mul(MICROS_PER_SECOND)?
            .checked_add(i64::from(nanos / 1_000))
            .map(Self)
    }

    /// The (seconds, nanos) pair, nanos in 0..1e9.
    pub fn to_parts(self) -> (i64, i32) {
        let seconds = self.0.div_euclid(MICROS_PER_SECOND);
        let micros = self.0.rem_euclid(MICROS_PER_SECOND);
        // micros < 1e6, so nanos < 1e9 fits in i32.
        (seconds, (micros * 1_000) as i32)
    }

    pub fn checked_add_days(self, days: i64) -> Option<Self> {
        days.checked_mul(MICROS_PER_DAY)
            .and_then(|delta| self.0.checked_add(delta))
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_turn_at_utc_midnight() {
        let midnight = UnixMicros(20_000 * MICROS_PER_DAY);
        assert_eq!(midnight.utc_day(), Some(20_000));
        assert_eq!(UnixMicros(midnight.0 - 1).utc_day(), Some(19_999));
        assert_eq!(UnixMicros(-1).utc_day(), Some(-1), "before 1970");
        assert_eq!(UnixMicros(i64::MAX).utc_day(), Some(106_751_991));
    }

    #[test]
    fn parts_round_trip_including_negative_times() {
        for micros in [
            0,
            1,
            999_999,
            1_000_000,
            -1,
            -1_000_001,
            1_763_788_800_123_456,
        ] {
            let (s, n) = UnixMicros(micros).to_parts();
            assert!((0..1_000_000_000).contains(&n));
            assert_eq!(UnixMicros::from_parts(s, n), Some(UnixMicros(micros)));
        }
    }

    #[test]
    fn out_of_range_parts_are_rejected() {
        assert_eq!(UnixMicros::from_parts(0, -1), None);
        assert_eq!(UnixMicros::from_parts(0, 1_000_000_000), None);
        assert_eq!(UnixMicros::from_parts(i64::MAX, 0), None);
    }

    #[test]
    fn adding_days_checks_overflow() {
        assert_eq!(
            UnixMicros(0).checked_add_days(1),
            Some(UnixMicros(MICROS_PER_DAY))
        );
        assert_eq!(UnixMicros(i64::MAX - 1).checked_add_days(1), None);
    }
}
