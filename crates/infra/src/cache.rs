//! A byte cache whose entries carry the version of the record they copy. A write never
//! replaces an entry with an older version, so a reader that loaded a record just before an
//! update cannot put the old copy back after the update refreshed the cache.

use std::{sync::Arc, time::Duration};

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

    /// Which implementation this is, for logs.
    fn kind(&self) -> &'static str;
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
}

impl RedisCache {
    pub fn new(pool: RedisPool) -> Self {
        Self {
            pool,
            put_script: Arc::new(Script::new(PUT_LUA)),
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
        Ok(bytes.as_deref().and_then(decode))
    }

    async fn put(&self, key: &str, entry: Versioned, ttl: Duration) -> Result<(), InfraError> {
        let ttl_ms = ttl_millis(ttl)?;
        let mut conn = self.pool.connection().await?;
        let _: i64 = self
            .put_script
            .key(self.key(key))
            .arg(encode(&entry))
            .arg(ttl_ms)
            .invoke_async(&mut *conn)
            .await?;
        Ok(())
    }

    async fn evict(&self, key: &str) -> Result<(), InfraError> {
        let mut conn = self.pool.connection().await?;
        let _: i64 = conn.del(self.key(key)).await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redis"
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

/// The bounded in-process cache of the embedded mode.
pub struct LocalCache {
    entries: MokaCache<String, LocalEntry>,
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
        }
    }
}

#[async_trait]
impl Cache for LocalCache {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, InfraError> {
        Ok(self.entries.get(key).map(|local| local.entry))
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
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "in-process"
    }
}

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
