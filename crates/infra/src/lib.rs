//! Infrastructure behind small traits: a distributed lock with fencing tokens, a
//! version-guarded byte cache, freshness stamps (and the cache they validate), rate limits and
//! the points leaderboard. Production uses Redis (shared by every replica); the embedded mode uses
//! in-process implementations. None is ever the source of truth: losing one costs speed, never
//! correctness.
#![forbid(unsafe_code)]

pub mod cache;
pub mod event_streams;
pub mod leaderboard;
pub mod lock;
pub mod rate;
pub mod redis;
pub mod stamps;
pub mod throttle;

use std::time::Duration;

/// Why a lock or cache call failed. Callers degrade (skip the cache, rely on the database)
/// rather than fail the request.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis: {0}")]
    Redis(#[from] deadpool_redis::redis::RedisError),
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("redis pool configuration: {0}")]
    Config(String),
    /// Redis timed out or failed again and again just now: calls are not sent until the
    /// breaker lets a probe through (see [`redis::Breaker`]).
    #[error("redis circuit open: it timed out or failed repeatedly, not sent")]
    CircuitOpen,
}

/// Jittered exponential backoff: attempt 0 waits ~`base`, doubling up to `cap`, each wait
/// drawn uniformly from [half, full] so waiters spread out instead of retrying in lockstep.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let full = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    let half = full / 2;
    let jitter = rand::random_range(0..=full.saturating_sub(half).as_micros() as u64);
    half + Duration::from_micros(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let base = Duration::from_millis(2);
        let cap = Duration::from_millis(50);
        for attempt in 0..20 {
            let wait = backoff(attempt, base, cap);
            let full = base.saturating_mul(1 << attempt.min(16)).min(cap);
            assert!(
                wait >= full / 2 && wait <= full,
                "attempt {attempt}: {wait:?}"
            );
        }
    }
}
