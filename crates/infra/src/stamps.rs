//! Freshness stamps, and the cache they validate.
//!
//! A stamp is a random number kept per key where every replica sees it (Redis; in-process in
//! the embedded mode). A reader takes the key's stamp *before* it reads the data from the
//! database; a writer removes the stamp *after* its change committed. So data read under stamp
//! `s` holds every change whose removal came before `s` was set, and any later change removes
//! `s`: while the key's stamp is still `s`, the copy is current. [`StampedCache`] keeps such
//! copies in process and checks the stamp on every read (one Redis round trip instead of a
//! database query), so unlike a TTL cache it never serves a change late, on any replica.
//!
//! Stamps are random, never counted up, so a stamp lost with a Redis restart cannot come back
//! and validate an old copy. When Redis is unreachable a reader reads through to the database.
//! The one gap: a writer that commits but cannot remove the stamp (Redis refusing it while
//! still answering readers, or the writer dying between the two). One background task per
//! cache retries failed removals, and local copies live at most [`LOCAL_TTL`].

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use async_trait::async_trait;
use moka::sync::Cache as MokaCache;

use crate::{
    InfraError, backoff,
    cache::{CacheStats, CacheStatsSnapshot},
    redis::RedisPool,
};

/// How long a local copy may be served: bounds the one gap described above.
pub const LOCAL_TTL: Duration = Duration::from_secs(60);
/// How long an unused stamp stays in Redis.
const STAMP_TTL_SECS: u64 = 3600;
/// Most removals kept for retrying; past it the rest wait out [`LOCAL_TTL`] instead.
const MAX_PENDING: usize = 100_000;

#[async_trait]
pub trait Stamps: Send + Sync + 'static {
    /// The stamp of `key`, which becomes `fresh` if `key` had none.
    async fn take(&self, key: &str, fresh: u64) -> Result<u64, InfraError>;

    /// Removes the stamps of `keys`: copies read under them are no longer current.
    async fn remove(&self, keys: &[String]) -> Result<(), InfraError>;

    /// Removes the stamps of every key beginning with `prefix` (Redis scans its keyspace for
    /// them: an operator's call, not a request path); answers how many went.
    async fn remove_prefixed(&self, prefix: &str) -> Result<u64, InfraError>;
}

/// Stamps in Redis, shared by every replica.
#[derive(Debug, Clone)]
pub struct RedisStamps {
    pool: RedisPool,
}

impl RedisStamps {
    pub fn new(pool: RedisPool) -> Self {
        Self { pool }
    }

    fn key(&self, key: &str) -> String {
        self.pool.key(&format!("stamp:{key}"))
    }
}

#[async_trait]
impl Stamps for RedisStamps {
    async fn take(&self, key: &str, fresh: u64) -> Result<u64, InfraError> {
        let mut conn = self.pool.connection().await?;
        // Redis 7: NX with GET answers the stamp already there, or nil when ours was set.
        let held: Option<u64> = deadpool_redis::redis::cmd("SET")
            .arg(self.key(key))
            .arg(fresh)
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(STAMP_TTL_SECS)
            .query_async(&mut conn)
            .await?;
        Ok(held.unwrap_or(fresh))
    }

    async fn remove(&self, keys: &[String]) -> Result<(), InfraError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.connection().await?;
        let mut del = deadpool_redis::redis::cmd("DEL");
        for key in keys {
            del.arg(self.key(key));
        }
        let _: i64 = del.query_async(&mut conn).await?;
        Ok(())
    }

    async fn remove_prefixed(&self, prefix: &str) -> Result<u64, InfraError> {
        let pattern = format!("stamp:{}*", crate::redis::glob_escaped(prefix));
        self.pool.unlink_where(&pattern, |_| true).await
    }
}

/// Stamps of the embedded mode (one process). Bounded: a stamp evicted early only costs a
/// database read.
pub struct LocalStamps {
    stamps: MokaCache<String, u64>,
}

impl LocalStamps {
    pub fn new(capacity: u64) -> Self {
        Self {
            stamps: MokaCache::new(capacity),
        }
    }
}

#[async_trait]
impl Stamps for LocalStamps {
    async fn take(&self, key: &str, fresh: u64) -> Result<u64, InfraError> {
        Ok(self.stamps.entry_by_ref(key).or_insert(fresh).into_value())
    }

    async fn remove(&self, keys: &[String]) -> Result<(), InfraError> {
        for key in keys {
            self.stamps.invalidate(key);
        }
        Ok(())
    }

    async fn remove_prefixed(&self, prefix: &str) -> Result<u64, InfraError> {
        Ok(invalidate_prefixed(&self.stamps, prefix))
    }
}

/// Drops the entries of `cache` whose keys begin with `prefix`; answers how many.
fn invalidate_prefixed<V>(cache: &MokaCache<String, V>, prefix: &str) -> u64
where
    V: Clone + Send + Sync + 'static,
{
    let keys: Vec<Arc<String>> = cache
        .iter()
        .filter(|(key, _)| key.starts_with(prefix))
        .map(|(key, _)| key)
        .collect();
    for key in &keys {
        cache.invalidate(key.as_str());
    }
    keys.len() as u64
}

/// In-process copies of values read from the database, each served only while the stamp it
/// was read under is still the key's stamp. Bounded by total weight.
pub struct StampedCache<V> {
    entries: MokaCache<String, (u64, Arc<V>)>,
    stamps: Arc<dyn Stamps>,
    stats: Arc<CacheStats>,
    /// Stamps taken (one per read), and those that failed (the read went to the database).
    checks: AtomicU64,
    check_failures: AtomicU64,
    /// Removals that failed, with when they were due; one task retries them all.
    pending: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct Pending {
    keys: HashMap<String, tokio::time::Instant>,
    retrying: bool,
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // Every critical section is a few map operations.
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<V: Send + Sync + 'static> StampedCache<V> {
    /// A cache of at most `capacity` weight units, `weigh` giving each value's weight.
    pub fn new(stamps: Arc<dyn Stamps>, capacity: u64, weigh: fn(&V) -> u32) -> Self {
        Self {
            entries: MokaCache::builder()
                .max_capacity(capacity)
                .weigher(move |_key: &String, (_, value): &(u64, Arc<V>)| {
                    weigh(value).saturating_add(1)
                })
                .time_to_live(LOCAL_TTL)
                .build(),
            stamps,
            stats: Arc::default(),
            checks: AtomicU64::new(0),
            check_failures: AtomicU64::new(0),
            pending: Arc::default(),
        }
    }

    /// The current value of `key`: this replica's copy when its stamp still holds, else what
    /// `load` reads from the database (kept for the next reader).
    pub async fn get_or_load<E, F, Fut>(&self, key: &str, load: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.checks.fetch_add(1, Relaxed);
        let stamp = match self.stamps.take(key, rand::random()).await {
            Ok(stamp) => stamp,
            Err(err) => {
                self.check_failures.fetch_add(1, Relaxed);
                // Without a stamp no copy can be trusted, nor kept.
                self.stats.misses.fetch_add(1, Relaxed);
                tracing::debug!(error = %err, "freshness stamp unavailable; reading through");
                return load().await.map(Arc::new);
            }
        };
        if let Some((held, value)) = self.entries.get(key)
            && held == stamp
        {
            self.stats.local_hits.fetch_add(1, Relaxed);
            return Ok(value);
        }
        self.stats.misses.fetch_add(1, Relaxed);
        let value = Arc::new(load().await?);
        self.entries.insert(key.to_owned(), (stamp, value.clone()));
        Ok(value)
    }

    /// Marks the values of `keys` changed, on every replica: call after the change committed
    /// and before answering it. Stamps that cannot be removed now are retried by one
    /// background task for up to [`LOCAL_TTL`], after which no replica serves the old copy
    /// anyway.
    pub async fn invalidate(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        for key in &keys {
            self.entries.invalidate(key);
        }
        self.stats.evictions.fetch_add(keys.len() as u64, Relaxed);
        let Err(err) = self.stamps.remove(&keys).await else {
            return;
        };
        let start_retrying = {
            let mut pending = lock(&self.pending);
            let now = tokio::time::Instant::now();
            for key in keys {
                if pending.keys.len() < MAX_PENDING {
                    pending.keys.insert(key, now);
                }
            }
            !std::mem::replace(&mut pending.retrying, true)
        };
        if start_retrying {
            tracing::warn!(error = %err, "cannot remove freshness stamps; retrying in the background");
            tokio::spawn(retry_removals(self.stamps.clone(), self.pending.clone()));
        }
    }

    /// Drops the copies of every key beginning with `prefix` on every replica (their stamps
    /// go); answers the copies this replica held and the stamps removed. Unlike
    /// [`Self::invalidate`], a failure is the caller's to report (an operator asked).
    pub async fn invalidate_prefixed(&self, prefix: &str) -> Result<(u64, u64), InfraError> {
        let local = invalidate_prefixed(&self.entries, prefix);
        self.stats.evictions.fetch_add(local, Relaxed);
        let stamps = self.stamps.remove_prefixed(prefix).await?;
        Ok((local, stamps))
    }

    /// Freshness checks made (a stamp taken per read), and those that failed.
    pub fn stamp_checks(&self) -> (u64, u64) {
        (self.checks.load(Relaxed), self.check_failures.load(Relaxed))
    }

    /// Whether this replica holds a copy of `key` (current or not).
    pub fn holds(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Hits, misses (reads that went to the database) and invalidated keys so far.
    pub fn stats(&self) -> CacheStatsSnapshot {
        self.stats.snapshot()
    }

    /// Copies this replica holds (approximate: expired ones go lazily).
    pub fn entries(&self) -> u64 {
        // Moka counts lazily: settle what is pending first (an operator's call).
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

/// Retries the pending removals until none is left (those older than [`LOCAL_TTL`] need none).
async fn retry_removals(stamps: Arc<dyn Stamps>, pending: Arc<Mutex<Pending>>) {
    let mut attempt = 0;
    loop {
        tokio::time::sleep(backoff(
            attempt,
            Duration::from_millis(50),
            Duration::from_secs(2),
        ))
        .await;
        attempt = (attempt + 1).min(10);
        let due: Vec<(String, tokio::time::Instant)> = {
            let mut pending = lock(&pending);
            let now = tokio::time::Instant::now();
            pending
                .keys
                .retain(|_, due| now.duration_since(*due) < LOCAL_TTL);
            if pending.keys.is_empty() {
                pending.retrying = false;
                return;
            }
            pending
                .keys
                .iter()
                .map(|(k, due)| (k.clone(), *due))
                .collect()
        };
        for chunk in due.chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|(key, _)| key.clone()).collect();
            if stamps.remove(&keys).await.is_err() {
                break;
            }
            attempt = 0;
            let mut pending = lock(&pending);
            for (key, due) in chunk {
                // A removal that failed again meanwhile stays due.
                if pending.keys.get(key) == Some(due) {
                    pending.keys.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> StampedCache<Vec<u32>> {
        StampedCache::new(Arc::new(LocalStamps::new(100)), 1000, |v| v.len() as u32)
    }

    async fn read(cache: &StampedCache<Vec<u32>>, value: u32) -> Vec<u32> {
        let loaded: Result<_, ()> = cache.get_or_load("k", || async { Ok(vec![value]) }).await;
        loaded.unwrap().as_ref().clone()
    }

    #[tokio::test]
    async fn a_copy_is_served_until_invalidated() {
        let cache = cache();
        assert_eq!(read(&cache, 1).await, vec![1]);
        // Still current: the loader's newer answer is not asked for.
        assert_eq!(read(&cache, 2).await, vec![1]);
        cache.invalidate(vec!["k".into()]).await;
        assert_eq!(read(&cache, 3).await, vec![3]);
        let stats = cache.stats();
        assert_eq!((stats.local_hits, stats.misses), (1, 2));
    }

    /// Local stamps whose removals fail while `down` is set.
    struct Flaky {
        stamps: LocalStamps,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Stamps for Flaky {
        async fn take(&self, key: &str, fresh: u64) -> Result<u64, InfraError> {
            self.stamps.take(key, fresh).await
        }

        async fn remove(&self, keys: &[String]) -> Result<(), InfraError> {
            if self.down.load(Relaxed) {
                return Err(InfraError::Invalid("down"));
            }
            self.stamps.remove(keys).await
        }

        async fn remove_prefixed(&self, prefix: &str) -> Result<u64, InfraError> {
            self.stamps.remove_prefixed(prefix).await
        }
    }

    #[tokio::test]
    async fn failed_removals_are_retried_until_they_succeed() {
        let stamps = Arc::new(Flaky {
            stamps: LocalStamps::new(100),
            down: true.into(),
        });
        let cache: StampedCache<Vec<u32>> =
            StampedCache::new(stamps.clone(), 1000, |v| v.len() as u32);
        let first = stamps.take("k", 1).await.unwrap();
        cache.invalidate(vec!["k".into(), "j".into()]).await;
        assert_eq!(stamps.take("k", 2).await.unwrap(), first, "still there");
        stamps.down.store(false, Relaxed);
        for _ in 0..100 {
            if stamps.take("k", 3).await.unwrap() != first {
                // Removed by the retry, which then stops.
                for _ in 0..100 {
                    if !lock(&cache.pending).retrying {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!("the retry never stopped");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the stamp was never removed");
    }

    #[tokio::test]
    async fn a_read_overtaken_by_a_write_is_not_served_again() {
        let cache = cache();
        // The reader takes the stamp and reads the old value; a write commits and invalidates
        // before the reader stores its copy.
        let loaded: Result<_, ()> = cache
            .get_or_load("k", || async {
                cache.invalidate(vec!["k".into()]).await;
                Ok(vec![1])
            })
            .await;
        assert_eq!(*loaded.unwrap(), vec![1]);
        assert_eq!(read(&cache, 2).await, vec![2]);
        assert_eq!(read(&cache, 3).await, vec![2]);
    }
}
