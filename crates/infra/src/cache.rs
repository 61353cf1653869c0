//! A byte cache whose entries carry the version of the record they copy. A write never
//! replaces an entry with an older version, so a reader that loaded a record just before an
//! update cannot put the old copy back after the update refreshed the cache.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use async_trait::async_trait;
use deadpool_redis::redis::{AsyncCommands, Script};
use moka::{Expiry, sync::Cache as MokaCache};

use crate::{InfraError, redis::RedisPool};

/// A cached copy of version `version` of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub version: i64,
    pub value: Vec<u8>,
}

#[async_trait]
pub trait Cache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, InfraError>;

    /// Stores `entry` for `ttl` unless the cache holds a newer version of `key`.
    async fn put(&self, key: &str, entry: Versioned, ttl: Duration) -> Result<(), InfraError>;

    async fn evict(&self, key: &str) -> Result<(), InfraError>;

    /// Drops the copies of `target` everywhere: this replica's, the shared level's, and
    /// (announced) the other replicas'. Answers what this replica and the shared level held.
    async fn drop_copies(&self, target: Copies<'_>) -> Result<Dropped, InfraError>;

    /// Which implementation this is, for logs.
    fn kind(&self) -> &'static str;

    /// Hits, misses and evictions so far.
    fn stats(&self) -> CacheStatsSnapshot;

    /// Copies this replica holds in memory (approximate: expired ones go lazily).
    fn entries(&self) -> u64;
}

/// What [`Cache::drop_copies`] drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies<'a> {
    /// One key.
    Key(&'a str),
    /// Every key that is this text followed by text without `:` (`tpl:acme:` holds the
    /// templates of tenant `acme`, not those of tenant `acme:eu`).
    Family(&'a str),
}

impl Copies<'_> {
    fn covers(self, key: &str) -> bool {
        match self {
            Copies::Key(target) => key == target,
            Copies::Family(prefix) => key
                .strip_prefix(prefix)
                .is_some_and(|rest| !rest.contains(':')),
        }
    }
}

/// What [`Cache::drop_copies`] found and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Copies in this replica's memory.
    pub local: u64,
    /// Entries of the shared level (Redis).
    pub shared: u64,
}

/// Counters of a cache, ready to be exported.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub local_hits: AtomicU64,
    pub remote_hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    /// Evictions announced by other replicas and applied here.
    pub remote_evictions: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStatsSnapshot {
    pub local_hits: u64,
    pub remote_hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub remote_evictions: u64,
}

impl CacheStats {
    pub fn snapshot(&self) -> CacheStatsSnapshot {
        CacheStatsSnapshot {
            local_hits: self.local_hits.load(Relaxed),
            remote_hits: self.remote_hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            remote_evictions: self.remote_evictions.load(Relaxed),
        }
    }
}

fn ttl_millis(ttl: Duration) -> Result<u64, InfraError> {
    match u64::try_from(ttl.as_millis()) {
        Ok(millis) if millis > 0 => Ok(millis),
        _ => Err(InfraError::Invalid(
            "cache ttl must be at least a millisecond",
        )),
    }
}

/// Redis stores `version (8 bytes, big-endian, offset so order is numeric) ++ value`.
fn encode(entry: &Versioned) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + entry.value.len());
    bytes.extend_from_slice(&order_preserving(entry.version));
    bytes.extend_from_slice(&entry.value);
    bytes
}

fn decode(bytes: &[u8]) -> Option<Versioned> {
    let (version, value) = bytes.split_first_chunk::<8>()?;
    Some(Versioned {
        version: (u64::from_be_bytes(*version) ^ (1 << 63)) as i64,
        value: value.to_vec(),
    })
}

/// Big-endian with the sign bit flipped: byte-wise order equals numeric order.
fn order_preserving(version: i64) -> [u8; 8] {
    ((version as u64) ^ (1 << 63)).to_be_bytes()
}

/// KEYS[1]; ARGV[1] encoded entry, ARGV[2] ttl ms. Keeps a stored entry whose 8-byte version
/// prefix is greater (byte order = numeric order).
const PUT_LUA: &str = r"
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, 8) > string.sub(ARGV[1], 1, 8) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

#[derive(Debug, Clone)]
pub struct RedisCache {
    pool: RedisPool,
    put_script: Arc<Script>,
    stats: Arc<CacheStats>,
}

impl RedisCache {
    pub fn new(pool: RedisPool) -> Self {
        Self {
            pool,
            put_script: Arc::new(Script::new(PUT_LUA)),
            stats: Arc::default(),
        }
    }

    fn key(&self, key: &str) -> String {
        self.pool.key(&format!("cache:{key}"))
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, InfraError> {
        let mut conn = self.pool.connection().await?;
        let bytes: Option<Vec<u8>> = conn.get(self.key(key)).await?;
        let entry = bytes.as_deref().and_then(decode);
        let counter = if entry.is_some() {
            &self.stats.remote_hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Relaxed);
        Ok(entry)
    }

    async fn put(&self, key: &str, entry: Versioned, ttl: Duration) -> Result<(), InfraError> {
        let ttl_ms = ttl_millis(ttl)?;
        let mut conn = self.pool.connection().await?;
        let _: i64 = self
            .put_script
            .key(self.key(key))
            .arg(encode(&entry))
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn evict(&self, key: &str) -> Result<(), InfraError> {
        let mut conn = self.pool.connection().await?;
        let _: i64 = conn.del(self.key(key)).await?;
        self.stats.evictions.fetch_add(1, Relaxed);
        Ok(())
    }

    async fn drop_copies(&self, target: Copies<'_>) -> Result<Dropped, InfraError> {
        let shared = match target {
            Copies::Key(key) => {
                let mut conn = self.pool.connection().await?;
                conn.del(self.key(key)).await?
            }
            Copies::Family(prefix) => {
                let pattern = format!("cache:{}*", crate::redis::glob_escaped(prefix));
                self.pool
                    .unlink_where(&pattern, |key| {
                        key.strip_prefix("cache:")
                            .is_some_and(|key| target.covers(key))
                    })
                    .await?
            }
        };
        self.stats.evictions.fetch_add(shared, Relaxed);
        Ok(Dropped { local: 0, shared })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn stats(&self) -> CacheStatsSnapshot {
        self.stats.snapshot()
    }

    fn entries(&self) -> u64 {
        0
    }
}

#[derive(Clone)]
struct LocalEntry {
    entry: Versioned,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, LocalEntry> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &LocalEntry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &LocalEntry,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The bounded in-process cache: the only level in embedded mode, the first in production.
pub struct LocalCache {
    entries: MokaCache<String, LocalEntry>,
    stats: Arc<CacheStats>,
}

impl std::fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl LocalCache {
    /// A cache of at most `max_entries` entries.
    pub fn new(max_entries: u64) -> Self {
        Self {
            entries: MokaCache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryTtl)
                .build(),
            stats: Arc::default(),
        }
    }

    /// Drops every entry (after missed invalidations).
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Drops this replica's copies of `target`; answers how many it held.
    fn drop_local(&self, target: Copies<'_>) -> u64 {
        let dropped = match target {
            Copies::Key(key) => u64::from(self.entries.remove(key).is_some()),
            Copies::Family(_) => {
                // Bounded by the cache's capacity; an operator's call, not a request path.
                let keys: Vec<Arc<String>> = self
                    .entries
                    .iter()
                    .filter(|(key, _)| target.covers(key))
                    .map(|(key, _)| key)
                    .collect();
                for key in &keys {
                    self.entries.invalidate(key.as_str());
                }
                keys.len() as u64
            }
        };
        self.stats.evictions.fetch_add(dropped, Relaxed);
        dropped
    }
}

#[async_trait]
impl Cache for LocalCache {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, InfraError> {
        let entry = self.entries.get(key).map(|local| local.entry);
        let counter = if entry.is_some() {
            &self.stats.local_hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Relaxed);
        Ok(entry)
    }

    async fn put(&self, key: &str, entry: Versioned, ttl: Duration) -> Result<(), InfraError> {
        ttl_millis(ttl)?;
        // `and_compute_with` runs atomically per key: the version check and the write cannot
        // interleave with another put.
        self.entries
            .entry(key.to_owned())
            .and_compute_with(|current| match current {
                Some(current) if current.value().entry.version > entry.version => {
                    moka::ops::compute::Op::Nop
                }
                _ => moka::ops::compute::Op::Put(LocalEntry { entry, ttl }),
            });
        Ok(())
    }

    async fn evict(&self, key: &str) -> Result<(), InfraError> {
        self.entries.invalidate(key);
        self.stats.evictions.fetch_add(1, Relaxed);
        Ok(())
    }

    async fn drop_copies(&self, target: Copies<'_>) -> Result<Dropped, InfraError> {
        Ok(Dropped {
            local: self.drop_local(target),
            shared: 0,
        })
    }

    fn kind(&self) -> &'static str {
        "in-process"
    }

    fn stats(&self) -> CacheStatsSnapshot {
        self.stats.snapshot()
    }

    fn entries(&self) -> u64 {
        // Moka counts lazily: settle what is pending first (an operator's call).
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

/// Production's two levels: this replica's [`LocalCache`] in front of the shared
/// [`RedisCache`]. Every write or eviction is published on a Redis channel; the other replicas
/// drop their local copy of that key when they hear it, so a change reaches every replica
/// within the channel's latency (milliseconds), not the TTL. While this replica's subscription
/// is down it cannot hear changes, so it serves its local copies for at most
/// [`STALE_WHILE_UNHEARD`] more, then bypasses its local level until it has resubscribed
/// (and cleared it).
pub struct TieredCache {
    local: Arc<LocalCache>,
    remote: RedisCache,
    pool: RedisPool,
    /// This replica's id: its own announcements are not applied twice.
    origin: String,
    hearing: Arc<Hearing>,
    stats: Arc<CacheStats>,
}

/// Since when this replica may have missed other replicas' announcements: its subscription
/// lost, or Redis unreachable (the breaker open: writers cannot announce either).
#[derive(Debug)]
struct Hearing {
    anchor: std::time::Instant,
    /// Microseconds after `anchor` + 1 when the subscription was lost; 0 while subscribed.
    lost: AtomicU64,
    /// The breaker's recoveries this cache has seen: after each, what was missed while Redis
    /// was unreachable is dropped.
    recoveries: AtomicU64,
}

impl Hearing {
    fn new() -> Self {
        let hearing = Self {
            anchor: std::time::Instant::now(),
            lost: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
        };
        // Not subscribed yet.
        hearing.lose();
        hearing
    }

    fn lose(&self) {
        let at = self.anchor.elapsed().as_micros() as u64 + 1;
        let _ = self.lost.compare_exchange(0, at, Relaxed, Relaxed);
    }

    fn heard(&self) {
        self.lost.store(0, Relaxed);
    }

    /// How long ago the subscription was lost, if it is.
    fn lost_for(&self) -> Option<Duration> {
        match self.lost.load(Relaxed) {
            0 => None,
            at => Some(
                self.anchor
                    .elapsed()
                    .saturating_sub(Duration::from_micros(at - 1)),
            ),
        }
    }
}

/// How long a replica that may have missed announcements (its channel lost, or Redis
/// unreachable) still serves its local copies: the staleness it allows, instead of sending
/// every read to the database at once.
pub const STALE_WHILE_UNHEARD: Duration = Duration::from_secs(5);

impl std::fmt::Debug for TieredCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredCache")
            .field("origin", &self.origin)
            .field("unheard_for", &self.hearing.lost_for())
            .finish_non_exhaustive()
    }
}

impl TieredCache {
    /// Builds the cache and starts listening for other replicas' changes (a task that
    /// resubscribes after Redis outages). `local_ttl` bounds the local copies.
    pub fn start(pool: RedisPool, local_capacity: u64) -> Self {
        let cache = Self {
            local: Arc::new(LocalCache::new(local_capacity)),
            remote: RedisCache::new(pool.clone()),
            origin: uuid::Uuid::new_v4().simple().to_string(),
            pool,
            hearing: Arc::new(Hearing::new()),
            stats: Arc::default(),
        };
        tokio::spawn(listen(
            cache.pool.clone(),
            cache.channel(),
            cache.origin.clone(),
            cache.local.clone(),
            cache.hearing.clone(),
            cache.stats.clone(),
        ));
        cache
    }

    fn channel(&self) -> String {
        self.pool.key("cache-evictions")
    }

    /// Tells the other replicas to drop their copy of `key`.
    async fn announce(&self, key: &str) -> Result<(), InfraError> {
        let mut conn = self.pool.connection().await?;
        let _: i64 = conn
            .publish(self.channel(), format!("{}|{key}", self.origin))
            .await?;
        Ok(())
    }

    /// Whether local copies may be served: while this replica hears every announcement, and
    /// for [`STALE_WHILE_UNHEARD`] after it may have begun to miss some.
    fn local_trusted(&self) -> bool {
        let breaker = self.pool.breaker();
        let recoveries = breaker.stats().recoveries.load(Relaxed);
        if self.hearing.recoveries.load(Relaxed) != recoveries {
            // Redis was unreachable: announcements may have been lost meanwhile.
            self.hearing.recoveries.store(recoveries, Relaxed);
            self.local.clear();
        }
        let unheard_for = match (self.hearing.lost_for(), breaker.open_since()) {
            (None, None) => return true,
            (lost, open) => lost
                .max(open.map(|since| since.elapsed()))
                .unwrap_or_default(),
        };
        unheard_for <= STALE_WHILE_UNHEARD
    }
}

/// Applies other replicas' announcements to `local`, resubscribing after failures.
async fn listen(
    pool: RedisPool,
    channel: String,
    origin: String,
    local: Arc<LocalCache>,
    hearing: Arc<Hearing>,
    stats: Arc<CacheStats>,
) {
    use futures::StreamExt as _;
    let mut attempt = 0;
    loop {
        let session = async {
            let mut pubsub = pool.client()?.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            // Changes made while unsubscribed were not heard: start clean.
            local.clear();
            hearing.heard();
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                if let Some((sender, key)) = payload.split_once('|')
                    && sender != origin
                {
                    // `*prefix` announces a family (keys never begin with `*`).
                    let dropped = match key.strip_prefix('*') {
                        Some(prefix) => local.drop_local(Copies::Family(prefix)),
                        None => {
                            local.entries.invalidate(key);
                            1
                        }
                    };
                    stats.remote_evictions.fetch_add(dropped, Relaxed);
                }
            }
            Ok::<(), InfraError>(())
        };
        let result = session.await;
        hearing.lose();
        if let Err(err) = result {
            tracing::warn!(error = %err, "cache eviction channel lost; the local cache is bypassed soon, until resubscribed");
        }
        tokio::time::sleep(crate::backoff(
            attempt,
            Duration::from_millis(100),
            Duration::from_secs(5),
        ))
        .await;
        attempt = (attempt + 1).min(10);
    }
}

#[async_trait]
impl Cache for TieredCache {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, InfraError> {
        if self.local_trusted()
            && let Some(local) = self.local.entries.get(key)
        {
            self.stats.local_hits.fetch_add(1, Relaxed);
            return Ok(Some(local.entry));
        }
        let entry = self.remote.get(key).await?;
        match &entry {
            Some(found) => {
                self.stats.remote_hits.fetch_add(1, Relaxed);
                if self.local_trusted() {
                    // The local copy lives at most as long as a remote one would.
                    self.local.put(key, found.clone(), LOCAL_TTL).await?;
                }
            }
            None => {
                self.stats.misses.fetch_add(1, Relaxed);
            }
        }
        Ok(entry)
    }

    async fn put(&self, key: &str, entry: Versioned, ttl: Duration) -> Result<(), InfraError> {
        self.remote.put(key, entry.clone(), ttl).await?;
        self.local.put(key, entry, ttl.min(LOCAL_TTL)).await?;
        self.announce(key).await
    }

    async fn evict(&self, key: &str) -> Result<(), InfraError> {
        self.local.entries.invalidate(key);
        self.stats.evictions.fetch_add(1, Relaxed);
        self.remote.evict(key).await?;
        self.announce(key).await
    }

    async fn drop_copies(&self, target: Copies<'_>) -> Result<Dropped, InfraError> {
        let local = self.local.drop_local(target);
        self.stats.evictions.fetch_add(local, Relaxed);
        let shared = self.remote.drop_copies(target).await?.shared;
        match target {
            Copies::Key(key) => self.announce(key).await?,
            Copies::Family(prefix) => self.announce(&format!("*{prefix}")).await?,
        }
        Ok(Dropped { local, shared })
    }

    fn kind(&self) -> &'static str {
        "in-process + redis"
    }

    fn stats(&self) -> CacheStatsSnapshot {
        self.stats.snapshot()
    }

    fn entries(&self) -> u64 {
        self.local.entries()
    }
}

/// How long a local copy may live: the announcements keep it fresh; this bounds the damage of
/// an announcement lost in flight.
const LOCAL_TTL: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_numeric_order_in_byte_order() {
        let versions = [i64::MIN, -1, 0, 1, 255, 256, i64::MAX];
        for pair in versions.windows(2) {
            assert!(
                order_preserving(pair[0]) < order_preserving(pair[1]),
                "{pair:?}"
            );
        }
        let entry = Versioned {
            version: 42,
            value: b"payload".to_vec(),
        };
        assert_eq!(decode(&encode(&entry)), Some(entry));
        assert_eq!(decode(b"short"), None);
    }
}
