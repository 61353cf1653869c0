//! Rate limiting by GCRA (the generic cell rate algorithm): each key has a theoretical
//! arrival time (TAT) that moves one `period` ahead per admitted call; a call is admitted
//! while the TAT is at most `tolerance` ahead of now, else told how long to wait.
//!
//! [`RedisRateLimiter`] keeps the TATs in Redis, checked and moved by one script per call
//! with Redis's own clock, so every replica shares one count per key. [`LocalRateLimiter`]
//! (governor) keeps them in this process: the embedded mode's limiter, and the fallback while
//! Redis cannot be reached.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use deadpool_redis::redis::Script;
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};

use crate::{InfraError, redis::RedisPool};

/// A limit as the algorithm needs it: the time one call costs, and how many may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gcra {
    pub period: Duration,
    pub burst: NonZeroU32,
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    /// Refused; the same key is admitted again after this long.
    Limited {
        retry_after: Duration,
    },
}

/// What a check of several calls of one key decided: the first `admitted` are admitted, the
/// rest refused, and the key admits again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub admitted: u32,
    pub retry_after: Duration,
}

impl Counted {
    /// The verdict of the `index`-th call of the check.
    pub fn verdict(&self, index: usize) -> Verdict {
        if index < self.admitted as usize {
            Verdict::Admitted
        } else {
            Verdict::Limited {
                retry_after: self.retry_after,
            }
        }
    }
}

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts `wanted` calls of `key` under `limit`, in order: as many as the limit admits
    /// now are admitted, the rest refused (and not counted).
    async fn check(&self, key: &str, limit: Gcra, wanted: u32) -> Result<Counted, InfraError>;

    /// Which implementation this is, for logs.
    fn kind(&self) -> &'static str;
}

/// KEYS[1] the key's TAT; ARGV[1] period µs, ARGV[2] tolerance µs, ARGV[3] calls wanted.
/// Admits the calls that fit (the k-th needs TAT + (k - 1) periods - tolerance <= now),
/// moving the TAT one period per admitted call; returns {admitted, µs until the next call
/// fits (0 when all were admitted)}. The TAT expires when it is in the past, where a missing
/// key means the same.
const GCRA_LUA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local fit = math.floor((now + tolerance - tat) / period) + 1
local admitted = math.max(0, math.min(wanted, fit))
if admitted > 0 then
  tat = tat + admitted * period
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
end
local wait = 0
if admitted < wanted then
  wait = math.max(tat - tolerance - now, 1)
end
return {admitted, wait}
";

/// The limiter every replica shares.
#[derive(Clone)]
pub struct RedisRateLimiter {
    pool: RedisPool,
    script: Arc<Script>,
}

impl RedisRateLimiter {
    pub fn new(pool: RedisPool) -> Self {
        Self {
            pool,
            script: Arc::new(Script::new(GCRA_LUA)),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, limit: Gcra, wanted: u32) -> Result<Counted, InfraError> {
        let mut conn = self.pool.connection().await?;
        // Redis keeps time in whole microseconds: a period between two is rounded up (the
        // limit admits a little less, never more), and the tolerance follows from it.
        let period = limit.period.as_nanos().div_ceil(1000).max(1);
        let period = u64::try_from(period).unwrap_or(u64::MAX);
        let tolerance = period.saturating_mul(u64::from(limit.burst.get() - 1));
        let (admitted, wait): (u32, u64) = self
            .script
            .key(self.pool.key(&format!("rate:{key}")))
            .arg(period)
            .arg(tolerance)
            .arg(wanted)
            .invoke_async(&mut conn)
            .await?;
        Ok(Counted {
            admitted,
            retry_after: Duration::from_micros(wait),
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// Keys one in-process limit keeps before it forgets those back at a fresh state.
const LOCAL_KEYS: usize = 100_000;
/// How often at most a limit scans its keys to forget them (a scan visits every key).
const FORGET_EVERY: Duration = Duration::from_secs(1);

/// The in-process limiter: one governor keyed limiter per distinct limit.
#[derive(Default)]
pub struct LocalRateLimiter {
    limiters: RwLock<HashMap<Gcra, Arc<DefaultKeyedRateLimiter<String>>>>,
    /// When keys were last forgotten, so that more than [`LOCAL_KEYS`] live keys cost one
    /// scan a second, not one a call.
    forgotten: std::sync::Mutex<Option<std::time::Instant>>,
}

impl LocalRateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    fn limiter(&self, limit: Gcra) -> Arc<DefaultKeyedRateLimiter<String>> {
        let known = self
            .limiters
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&limit)
            .cloned();
        if let Some(limiter) = known {
            return limiter;
        }
        let mut limiters = self
            .limiters
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limiters
            .entry(limit)
            .or_insert_with(|| {
                let quota = Quota::with_period(limit.period.max(Duration::from_nanos(1)))
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(limit.burst);
                Arc::new(DefaultKeyedRateLimiter::keyed(quota))
            })
            .clone()
    }

    /// Whether a scan to forget keys is due (and, if so, takes it).
    fn may_forget(&self) -> bool {
        let mut last = self
            .forgotten
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < FORGET_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Counts one call of `key` under `limit`; no I/O.
    pub fn check_now(&self, key: &str, limit: Gcra) -> Verdict {
        let limiter = self.limiter(limit);
        let verdict = match limiter.check_key(&key.to_owned()) {
            Ok(()) => Verdict::Admitted,
            Err(not_until) => Verdict::Limited {
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            },
        };
        // A flood of distinct keys is forgotten as soon as their state is back at fresh, so
        // memory follows the keys seen within one burst's time, not all keys ever seen.
        if limiter.len() > LOCAL_KEYS && self.may_forget() {
            limiter.retain_recent();
        }
        verdict
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(&self, key: &str, limit: Gcra, wanted: u32) -> Result<Counted, InfraError> {
        let mut counted = Counted {
            admitted: 0,
            retry_after: Duration::ZERO,
        };
        for _ in 0..wanted {
            match self.check_now(key, limit) {
                Verdict::Admitted => counted.admitted += 1,
                Verdict::Limited { retry_after } => {
                    counted.retry_after = retry_after;
                    break;
                }
            }
        }
        Ok(counted)
    }

    fn kind(&self) -> &'static str {
        "in-process"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(period_ms: u64, burst: u32) -> Gcra {
        Gcra {
            period: Duration::from_millis(period_ms),
            burst: NonZeroU32::new(burst).expect("burst above 0"),
        }
    }

    #[tokio::test]
    async fn a_burst_is_admitted_then_one_per_period() {
        let limiter = LocalRateLimiter::new();
        let every_100ms = limit(100, 3);
        for _ in 0..3 {
            assert_eq!(limiter.check_now("a", every_100ms), Verdict::Admitted);
        }
        match limiter.check_now("a", every_100ms) {
            Verdict::Limited { retry_after } => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(100));
            }
            Verdict::Admitted => panic!("the fourth call at once passed a burst of 3"),
        }
        // Several calls at once: those that fit, then the wait.
        let counted = limiter
            .check("c", every_100ms, 5)
            .await
            .expect("in process");
        assert_eq!(counted.admitted, 3);
        assert_eq!(counted.verdict(2), Verdict::Admitted);
        assert!(
            matches!(counted.verdict(3), Verdict::Limited { retry_after } if retry_after > Duration::ZERO)
        );
        // Another key, and the same key under another limit, count apart.
        assert_eq!(limiter.check_now("b", every_100ms), Verdict::Admitted);
        assert_eq!(limiter.check_now("a", limit(100, 1)), Verdict::Admitted);
    }
}
