//! Rate limiting by GCRA (the generic cell rate algorithm): each key has a theoretical
//! arrival time (TAT) that moves one `period` ahead per admitted call; a call is admitted
//! while the TAT is at most `tolerance` ahead of now, else told how long to wait.
//!
//! [`RedisRateLimiter`] keeps the TATs in Redis, checked and moved by one script per call
//! with Redis's own clock, so every replica shares one count per key (each key expires when
//! its TAT passes). [`LocalRateLimiter`] keeps them in this process, with a hard cap on keys:
//! the embedded mode's limiter, and the fallback while Redis cannot be reached.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use deadpool_redis::redis::Script;

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
    /// Gives back `given_back` admitted calls of `key` (its TAT moves one period back for each,
    /// never before now: calls admitted before their outcome was known that turned out not to
    /// count), then counts `wanted` calls under `limit`, in order: as many as the limit admits
    /// now are admitted, the rest refused (and not counted).
    async fn check(
        &self,
        key: &str,
        limit: Gcra,
        given_back: u32,
        wanted: u32,
    ) -> Result<Counted, InfraError>;

    /// Which implementation this is, for logs.
    fn kind(&self) -> &'static str;
}

/// KEYS[1] the key's TAT; ARGV[1] period µs, ARGV[2] tolerance µs, ARGV[3] calls wanted,
/// ARGV[4] calls given back. Moves the TAT one period back per call given back (not before
/// now), then admits the calls that fit (the k-th needs TAT + (k - 1) periods - tolerance <=
/// now), moving the TAT one period per admitted call; returns {admitted, µs until the next
/// call fits (0 when all were admitted)}. The TAT expires when it is in the past, where a
/// missing key means the same.
const GCRA_LUA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local given_back = tonumber(ARGV[4])
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
local tat = math.max(stored - given_back * period, now)
local fit = math.floor((now + tolerance - tat) / period) + 1
local admitted = math.max(0, math.min(wanted, fit))
tat = tat + admitted * period
if tat > now then
  if admitted > 0 or given_back > 0 then
    redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
  end
elseif stored > 0 then
  redis.call('DEL', KEYS[1])
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
    async fn check(
        &self,
        key: &str,
        limit: Gcra,
        given_back: u32,
        wanted: u32,
    ) -> Result<Counted, InfraError> {
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
            .arg(given_back)
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

/// Keys one in-process limit keeps at most. A key back at a fresh state (its TAT passed) is
/// forgotten when room is needed; past this many live keys, a new key is counted under its
/// scope's overflow key instead (a live key is never forgotten: that would reset an abuser's
/// count, and a new key is never admitted unlimited).
pub const LOCAL_KEYS: usize = 100_000;
/// Overflow keys one limit keeps at most beyond [`LOCAL_KEYS`] (scopes are callers' tenants);
/// past them, new keys share one overflow key per limit.
pub const OVERFLOW_KEYS: usize = 1_000;
/// How often at most a full limit scans its keys to forget fresh ones (a scan visits every
/// key).
const FORGET_EVERY: Duration = Duration::from_secs(1);

/// One limit's keys: each key's theoretical arrival time.
#[derive(Default)]
struct Keys {
    tats: HashMap<String, Instant>,
    forgotten_at: Option<Instant>,
}

impl Keys {
    /// The key to count `key` under: itself while there is room (forgetting fresh keys when
    /// the limit is full, at most once per [`FORGET_EVERY`]), else its scope's overflow key,
    /// else the limit's one overflow key.
    fn room_for<'k>(&mut self, key: &'k str, overflow: &'k str, now: Instant) -> &'k str {
        if self.tats.contains_key(key) {
            return key;
        }
        if self.tats.len() >= LOCAL_KEYS
            && self
                .forgotten_at
                .is_none_or(|at| now.duration_since(at) >= FORGET_EVERY)
        {
            self.forgotten_at = Some(now);
            self.tats.retain(|_, tat| *tat > now);
        }
        if self.tats.len() < LOCAL_KEYS {
            return key;
        }
        crate::warn_every!(
            overflow,
            "rate limiter full of live keys: a new key is counted under its overflow key"
        );
        if self.tats.contains_key(overflow) || self.tats.len() < LOCAL_KEYS + OVERFLOW_KEYS {
            overflow
        } else {
            OVERFLOW
        }
    }

    /// GCRA: admits while the key's TAT is at most `tolerance` ahead of now, moving it one
    /// period per admitted call.
    fn check(&mut self, key: &str, limit: Gcra, now: Instant) -> Verdict {
        let tolerance = limit.period * (limit.burst.get() - 1);
        let tat = self.tats.get(key).copied().unwrap_or(now).max(now);
        let allowed_from = tat.checked_sub(tolerance).unwrap_or(now);
        if allowed_from <= now {
            self.tats.insert(key.to_owned(), tat + limit.period);
            Verdict::Admitted
        } else {
            Verdict::Limited {
                retry_after: allowed_from - now,
            }
        }
    }
}

/// The key every new key of a full limit shares once its overflow keys are full too.
const OVERFLOW: &str = "*";

/// The in-process limiter: the embedded mode's, and the fallback while Redis cannot be
/// reached. Bounded: at most [`LOCAL_KEYS`] + [`OVERFLOW_KEYS`] + 1 keys per limit.
#[derive(Default)]
pub struct LocalRateLimiter {
    limits: Mutex<HashMap<Gcra, Keys>>,
}

impl LocalRateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one call of `key` under `limit`; when the limit is full of live keys, a new key
    /// is counted under `overflow` (one per tenant and action). No I/O.
    pub fn check_now(&self, key: &str, overflow: &str, limit: Gcra) -> Verdict {
        let now = Instant::now();
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = limits.entry(limit).or_default();
        let counted = keys.room_for(key, overflow, now);
        keys.check(counted, limit, now)
    }

    /// Gives back one admitted call of `key` (as it was counted): its TAT moves one period
    /// back, never before now.
    pub fn give_back_now(&self, key: &str, limit: Gcra) {
        let now = Instant::now();
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = limits
            .get_mut(&limit)
            .and_then(|keys| keys.tats.get_mut(key))
        {
            *tat = tat.checked_sub(limit.period).unwrap_or(now).max(now);
        }
    }

    /// Keys `limit` keeps.
    pub fn len(&self, limit: Gcra) -> usize {
        self.limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&limit)
            .map_or(0, |keys| keys.tats.len())
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(
        &self,
        key: &str,
        limit: Gcra,
        given_back: u32,
        wanted: u32,
    ) -> Result<Counted, InfraError> {
        for _ in 0..given_back {
            self.give_back_now(key, limit);
        }
        let mut counted = Counted {
            admitted: 0,
            retry_after: Duration::ZERO,
        };
        for _ in 0..wanted {
            match self.check_now(key, OVERFLOW, limit) {
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
            assert_eq!(limiter.check_now("a", "o", every_100ms), Verdict::Admitted);
        }
        match limiter.check_now("a", "o", every_100ms) {
            Verdict::Limited { retry_after } => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(100));
            }
            Verdict::Admitted => panic!("the fourth call at once passed a burst of 3"),
        }
        // Several calls at once: those that fit, then the wait.
        let counted = limiter
            .check("c", every_100ms, 0, 5)
            .await
            .expect("in process");
        assert_eq!(counted.admitted, 3);
        assert_eq!(counted.verdict(2), Verdict::Admitted);
        assert!(
            matches!(counted.verdict(3), Verdict::Limited { retry_after } if retry_after > Duration::ZERO)
        );
        // Another key, and the same key under another limit, count apart.
        assert_eq!(limiter.check_now("b", "o", every_100ms), Verdict::Admitted);
        assert_eq!(
            limiter.check_now("a", "o", limit(100, 1)),
            Verdict::Admitted
        );
    }

    #[test]
    fn a_full_limit_keeps_its_live_keys_and_counts_new_ones_under_overflow() {
        let limiter = LocalRateLimiter::new();
        // One call per hour, no burst: every key stays live for the test.
        let hourly = limit(3_600_000, 1);
        for i in 0..LOCAL_KEYS {
            assert_eq!(
                limiter.check_now(&format!("earn:acme/m{i}"), "earn:acme/*", hourly),
                Verdict::Admitted
            );
        }
        assert_eq!(limiter.len(hourly), LOCAL_KEYS);
        // A live key is still counted as itself: its limit holds.
        assert!(matches!(
            limiter.check_now("earn:acme/m0", "earn:acme/*", hourly),
            Verdict::Limited { .. }
        ));
        // New keys share the tenant's overflow key: the first is admitted, the next not.
        assert_eq!(
            limiter.check_now("earn:acme/new-1", "earn:acme/*", hourly),
            Verdict::Admitted
        );
        assert!(matches!(
            limiter.check_now("earn:acme/new-2", "earn:acme/*", hourly),
            Verdict::Limited { .. }
        ));
        // Another tenant's new keys have their own overflow key.
        assert_eq!(
            limiter.check_now("earn:globex/new-1", "earn:globex/*", hourly),
            Verdict::Admitted
        );
        // Overflow keys are bounded too: past them, one shared key.
        for i in 0..OVERFLOW_KEYS * 2 {
            let _ = limiter.check_now(&format!("earn:t{i}/m"), &format!("earn:t{i}/*"), hourly);
        }
        assert_eq!(limiter.len(hourly), LOCAL_KEYS + OVERFLOW_KEYS + 1);
        assert!(matches!(
            limiter.check_now("earn:late/m", "earn:late/*", hourly),
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn a_call_given_back_is_admitted_again() {
        let limiter = LocalRateLimiter::new();
        let hourly = limit(3_600_000, 2);
        assert_eq!(limiter.check_now("a", "o", hourly), Verdict::Admitted);
        assert_eq!(limiter.check_now("a", "o", hourly), Verdict::Admitted);
        assert!(matches!(
            limiter.check_now("a", "o", hourly),
            Verdict::Limited { .. }
        ));
        limiter.give_back_now("a", hourly);
        assert_eq!(limiter.check_now("a", "o", hourly), Verdict::Admitted);
        // Giving back more than was taken never admits more than the burst.
        for _ in 0..5 {
            limiter.give_back_now("a", hourly);
        }
        assert_eq!(limiter.check_now("a", "o", hourly), Verdict::Admitted);
        assert_eq!(limiter.check_now("a", "o", hourly), Verdict::Admitted);
        assert!(matches!(
            limiter.check_now("a", "o", hourly),
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn fresh_keys_are_forgotten_to_make_room() {
        let limiter = LocalRateLimiter::new();
        // A period of zero: every key is fresh again at once.
        let fast = limit(0, 1);
        for i in 0..LOCAL_KEYS {
            let _ = limiter.check_now(&format!("k{i}"), "o", fast);
        }
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(limiter.check_now("new", "o", fast), Verdict::Admitted);
        assert!(limiter.len(fast) < 10, "fresh keys were kept");
    }
}
