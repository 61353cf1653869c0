//! Mutual exclusion with expiry and fencing tokens.
//!
//! A lock is taken with a random token and a TTL (Redis: `SET key token NX PX ttl`), released
//! only by its holder (compare-and-delete), and each acquisition returns a fencing token that
//! rises with every acquisition of the key, so the database can refuse a write from a holder
//! whose lock expired and was taken by someone else. Acquisition waits with jittered backoff
//! up to a deadline instead of failing "busy".
//!
//! Nothing a lock leaves behind outlives it for long: Redis's fence key expires two lock TTLs
//! after its last acquisition (fences come from Redis's clock, so a forgotten fence costs
//! nothing), and the in-process lock keeps one fence for all keys and forgets released or
//! lapsed locks. A caller that names made-up keys leaves no lasting state.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use deadpool_redis::redis::Script;
use tokio::{sync::Notify, time::Instant};
use uuid::Uuid;

use crate::{InfraError, backoff, redis::RedisPool};

const RETRY_BASE: Duration = Duration::from_millis(1);
const RETRY_CAP: Duration = Duration::from_millis(25);

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGuard {
    pub key: String,
    /// Random; only the holder of this token can release the lock.
    pub token: String,
    /// Rises with every acquisition of `key` (a microsecond clock reading or the last fence
    /// + 1); writes carry it so a stale holder is refused.
    pub fence: i64,
    /// When the lock lapses by itself unless released.
    pub expires_at: Instant,
}

#[async_trait]
pub trait DistributedLock: Send + Sync + 'static {
    /// Takes the lock on `key` for `ttl`, retrying until `deadline`. `Ok(None)` when the
    /// deadline passed first.
    async fn acquire(
        &self,
        key: &str,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<Option<LockGuard>, InfraError>;

    /// Releases the lock if `guard` still holds it; `Ok(false)` when it had already lapsed.
    async fn release(&self, guard: &LockGuard) -> Result<bool, InfraError>;

    /// The locks held now, a page at a time: `cursor` 0 begins, and the answer's cursor is 0
    /// after the last page. `count` is a hint (Redis scans a slice of its keyspace per page).
    async fn active(&self, cursor: u64, count: usize) -> Result<ActivePage, InfraError>;

    /// Which implementation this is, for logs.
    fn kind(&self) -> &'static str;
}

/// A lock held now, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveLock {
    pub key: String,
    /// The holder's replica (`unknown` for a holder whose token names none).
    pub holder: String,
    /// The fence of this acquisition (`None` if its fence key is gone).
    pub fence: Option<i64>,
    pub time_left: Duration,
}

/// A page of [`DistributedLock::active`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivePage {
    pub locks: Vec<ActiveLock>,
    /// Where the next page begins; 0 after the last.
    pub next: u64,
}

/// A token names its holder's replica: `<replica>/<random>`.
fn token_of(holder: &str) -> String {
    format!("{holder}/{}", Uuid::new_v4().simple())
}

fn holder_of(token: &str) -> String {
    token
        .split_once('/')
        .map_or("unknown", |(holder, _)| holder)
        .to_owned()
}

fn check_ttl(ttl: Duration) -> Result<u64, InfraError> {
    match u64::try_from(ttl.as_millis()) {
        Ok(millis) if millis > 0 => Ok(millis),
        _ => Err(InfraError::Invalid(
            "lock ttl must be at least a millisecond",
        )),
    }
}

/// Retries `attempt` with jittered backoff until it yields a guard or `deadline` passes.
async fn retry_until<F, Fut>(
    deadline: Instant,
    mut attempt: F,
) -> Result<Option<LockGuard>, InfraError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<LockGuard>, InfraError>>,
{
    let mut tries = 0;
    loop {
        if let Some(guard) = attempt().await? {
            return Ok(Some(guard));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let wait = backoff(tries, RETRY_BASE, RETRY_CAP).min(deadline - now);
        tokio::time::sleep(wait).await;
        tries += 1;
    }
}

/// The Redis lock, shared by every replica.
#[derive(Debug, Clone)]
pub struct RedisLock {
    pool: RedisPool,
    /// This replica's id, named in its tokens.
    holder: String,
    acquire_script: Arc<Script>,
    release_script: Arc<Script>,
}

/// KEYS[1] lock, KEYS[2] last fence; ARGV[1] token, ARGV[2] ttl ms.
/// Returns the new fence on acquisition, 0 when held by someone else. The fence is Redis's
/// clock in microseconds (or the last fence + 1 if that is larger), so fences keep rising
/// even when Redis restarts empty and forgets the last one, or when the fence key expires:
/// it lives two lock TTLs, longer than any lock it fenced, and the next holder's clock reading
/// is past every fence given while it lived.
const ACQUIRE_LUA: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local fence = math.max(now, tonumber(redis.call('GET', KEYS[2]) or '0') + 1)
  redis.call('SET', KEYS[2], string.format('%d', fence), 'PX', tonumber(ARGV[2]) * 2)
  return fence
end
return 0
";

/// KEYS[1] lock; ARGV[1] token. Deletes only the holder's own lock.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

impl RedisLock {
    /// The lock of replica `holder` (named in its tokens, so operators see who holds what).
    pub fn new(pool: RedisPool, holder: &str) -> Self {
        Self {
            pool,
            holder: holder.to_owned(),
            acquire_script: Arc::new(Script::new(ACQUIRE_LUA)),
            release_script: Arc::new(Script::new(RELEASE_LUA)),
        }
    }

    async fn try_acquire(&self, key: &str, ttl_ms: u64) -> Result<Option<LockGuard>, InfraError> {
        let lock_key = self.pool.key(&format!("lock:{key}"));
        let fence_key = self.pool.key(&format!("fence:{key}"));
        let token = token_of(&self.holder);
        let started = Instant::now();
        let mut conn = self.pool.connection().await?;
        let fence: i64 = self
            .acquire_script
            .key(&lock_key)
            .key(&fence_key)
            .arg(&token)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok((fence > 0).then(|| LockGuard {
            key: key.to_owned(),
            token,
            fence,
            // Counted from before the call: the holder never believes it holds longer than Redis does.
            expires_at: started + Duration::from_millis(ttl_ms),
        }))
    }
}

#[async_trait]
impl DistributedLock for RedisLock {
    async fn acquire(
        &self,
        key: &str,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<Option<LockGuard>, InfraError> {
        let ttl_ms = check_ttl(ttl)?;
        retry_until(deadline, || self.try_acquire(key, ttl_ms)).await
    }

    async fn release(&self, guard: &LockGuard) -> Result<bool, InfraError> {
        let mut conn = self.pool.connection().await?;
        let deleted: i64 = self
            .release_script
            .key(self.pool.key(&format!("lock:{}", guard.key)))
            .arg(&guard.token)
            .invoke_async(&mut conn)
            .await?;
        Ok(deleted == 1)
    }

    async fn active(&self, cursor: u64, count: usize) -> Result<ActivePage, InfraError> {
        let (next, keys) = self.pool.scan("lock:*", cursor, count).await?;
        if keys.is_empty() {
            return Ok(ActivePage {
                locks: Vec::new(),
                next,
            });
        }
        let mut pipe = deadpool_redis::redis::pipe();
        for key in &keys {
            let guarded = key.strip_prefix("lock:").unwrap_or(key);
            pipe.cmd("GET")
                .arg(self.pool.key(key))
                .cmd("PTTL")
                .arg(self.pool.key(key))
                .cmd("GET")
                .arg(self.pool.key(&format!("fence:{guarded}")));
        }
        let mut conn = self.pool.connection().await?;
        let answers: Vec<(Option<String>, i64, Option<i64>)> = pipe.query_async(&mut conn).await?;
        let locks = keys
            .iter()
            .zip(answers)
            // Released or lapsed since the scan saw it.
            .filter_map(|(key, (token, ttl_ms, fence))| {
                let token = token?;
                Some(ActiveLock {
                    key: key.strip_prefix("lock:").unwrap_or(key).to_owned(),
                    holder: holder_of(&token),
                    fence,
                    time_left: Duration::from_millis(u64::try_from(ttl_ms).ok()?),
                })
            })
            .collect();
        Ok(ActivePage { locks, next })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[derive(Debug)]
struct Held {
    token: String,
    fence: i64,
    expires_at: Instant,
}

#[derive(Debug, Default)]
struct LocalState {
    held: HashMap<String, Held>,
    /// The last fence given, for any key: fences rise across all keys, so none is kept per key.
    last_fence: i64,
}

/// Past this many held entries, lapsed ones (their holder stopped before releasing) are
/// dropped at the next acquisition.
const LOCAL_PRUNE_AT: usize = 1024;

/// The in-process lock of the embedded (single-node) mode.
#[derive(Debug, Default)]
pub struct LocalLock {
    /// This replica's id, named in its tokens.
    holder: String,
    state: Mutex<LocalState>,
    released: Notify,
}

impl LocalLock {
    /// The lock of replica `holder`.
    pub fn new(holder: &str) -> Self {
        Self {
            holder: holder.to_owned(),
            ..Self::default()
        }
    }

    fn try_acquire(&self, key: &str, ttl: Duration) -> Option<LockGuard> {
        let now = Instant::now();
        // A poisoned mutex only means another thread panicked mid-update of plain maps; the
        // maps stay consistent, so keep going.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state
            .held
            .get(key)
            .is_some_and(|held| held.expires_at > now)
        {
            return None;
        }
        if state.held.len() >= LOCAL_PRUNE_AT {
            state.held.retain(|_, held| held.expires_at > now);
        }
        let token = token_of(&self.holder);
        let expires_at = now + ttl;
        // Same rule as Redis: the clock in microseconds, or the last fence + 1.
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
            });
        let fence = clock.max(state.last_fence + 1);
        state.last_fence = fence;
        state.held.insert(
            key.to_owned(),
            Held {
                token: token.clone(),
                fence,
                expires_at,
            },
        );
        Some(LockGuard {
            key: key.to_owned(),
            token,
            fence,
            expires_at,
        })
    }
}

#[async_trait]
impl DistributedLock for LocalLock {
    async fn acquire(
        &self,
        key: &str,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<Option<LockGuard>, InfraError> {
        check_ttl(ttl)?;
        loop {
            let released = self.released.notified();
            if let Some(guard) = self.try_acquire(key, ttl) {
                return Ok(Some(guard));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Woken by a release, or retry when the holder's TTL may have lapsed.
            let _ = tokio::time::timeout(RETRY_CAP.min(deadline - now), released).await;
        }
    }

    async fn release(&self, guard: &LockGuard) -> Result<bool, InfraError> {
        let released = {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (mine, live) = state.held.get(&guard.key).map_or((false, false), |held| {
                (held.token == guard.token, held.expires_at > Instant::now())
            });
            if mine {
                // Forgotten even when it lapsed: nobody else took it meanwhile.
                state.held.remove(&guard.key);
            }
            mine && live
        };
        if released {
            self.released.notify_waiters();
        }
        Ok(released)
    }

    async fn active(&self, cursor: u64, count: usize) -> Result<ActivePage, InfraError> {
        let now = Instant::now();
        let mut held: Vec<ActiveLock> = {
            let state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state
                .held
                .iter()
                .filter(|(_, held)| held.expires_at > now)
                .map(|(key, held)| ActiveLock {
                    key: key.clone(),
                    holder: holder_of(&held.token),
                    fence: Some(held.fence),
                    time_left: held.expires_at - now,
                })
                .collect()
        };
        // Pages in key order; the cursor is how many keys came before.
        held.sort_by(|a, b| a.key.cmp(&b.key));
        let start = usize::try_from(cursor)
            .unwrap_or(usize::MAX)
            .min(held.len());
        let end = start.saturating_add(count.max(1)).min(held.len());
        let next = if end < held.len() { end as u64 } else { 0 };
        Ok(ActivePage {
            locks: held.drain(start..end).collect(),
            next,
        })
    }

    fn kind(&self) -> &'static str {
        "in-process"
    }
}
