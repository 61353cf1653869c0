//! The Redis side of the event relay: one stream per tenant (`{prefix}events:{tenant}`), each
//! entry `type`, `tenant_id`, `position` and `event` (the `marketing.v1.Event`'s bytes), with
//! the id `{position}-0`, so an entry added twice is refused by Redis itself. Beside the
//! streams, the relay's cursor (the last position relayed) and its lease (which replica
//! relays).
//!
//! A page is added by one script that first checks the cursor is where the relay read it:
//! a relay working from a stale cursor (another took over meanwhile, or Redis restarted
//! empty) adds nothing and reads the cursor again. The cursor lives in Redis with the
//! streams, so a Redis that lost its data lost both, and the relay re-fills every stream
//! from the outbox (from its oldest kept event).

use std::{sync::Arc, time::Duration};

use deadpool_redis::redis::{Script, cmd};
use uuid::Uuid;

use crate::{InfraError, redis::RedisPool};

/// One event to publish.
pub struct StreamEntry {
    pub tenant_id: String,
    pub position: i64,
    pub event_type: String,
    /// The encoded `marketing.v1.Event`.
    pub event: Vec<u8>,
}

/// Who holds the relay's lease after [`EventStreams::hold_lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This replica just took it (read the cursor again).
    Taken,
    /// This replica holds it still.
    Kept,
    /// Another replica relays.
    Elsewhere,
}

/// What a page's publication did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Entries added (the rest were there already), and the cursor moved to the page's end.
    Added(u64),
    /// The cursor was not where the relay read it: nothing was added.
    CursorMoved,
}

/// KEYS[1] lease; ARGV[1] holder, ARGV[2] ttl ms. 2: taken, 1: kept, 0: held by another.
const LEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 2
end
return 0
";

/// KEYS[1] cursor, KEYS[2..] each entry's stream; ARGV[1] expected cursor, ARGV[2] maxlen,
/// ARGV[3] the page's last position, ARGV[4] how long a stream lives after its last entry
/// (ms), then per entry: id, type, tenant, position, event. -1 when the cursor moved; else
/// how many entries were added (those already there are refused by Redis for their id and
/// skipped). Each stream's expiry is set once, after its page's last entry.
const PUBLISH_LUA: &str = r"
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then
  return -1
end
local added = 0
for i = 2, #KEYS do
  local at = 5 + (i - 2) * 5
  local result = redis.pcall('XADD', KEYS[i], 'MAXLEN', '~', ARGV[2], ARGV[at],
    'type', ARGV[at + 1], 'tenant_id', ARGV[at + 2], 'position', ARGV[at + 3],
    'event', ARGV[at + 4])
  if type(result) == 'table' and result.err then
    if not string.find(result.err, 'equal or smaller') then
      return redis.error_reply(result.err)
    end
  else
    added = added + 1
  end
  if KEYS[i + 1] ~= KEYS[i] then
    redis.call('PEXPIRE', KEYS[i], ARGV[4])
  end
end
redis.call('SET', KEYS[1], ARGV[3])
return added
";

/// The relay's streams, cursor and lease in Redis.
#[derive(Clone)]
pub struct EventStreams {
    pool: RedisPool,
    maxlen: u64,
    /// A tenant's stream is deleted this long after its last entry (the outbox keeps events
    /// as long; so a tenant gone quiet leaves nothing in Redis).
    idle_ttl: Duration,
    /// This replica, as the lease names it.
    holder: String,
    lease: Arc<Script>,
    publish: Arc<Script>,
}

impl EventStreams {
    pub fn new(pool: RedisPool, maxlen: u64, idle_ttl: Duration) -> Self {
        Self {
            pool,
            maxlen,
            idle_ttl,
            holder: Uuid::new_v4().to_string(),
            lease: Arc::new(Script::new(LEASE_LUA)),
            publish: Arc::new(Script::new(PUBLISH_LUA)),
        }
    }

    /// The stream of `tenant`'s events.
    pub fn stream_key(&self, tenant: &str) -> String {
        self.pool.key(&format!("events:{tenant}"))
    }

    /// Takes the relay's lease for `ttl`, or keeps it when this replica holds it.
    pub async fn hold_lease(&self, ttl: Duration) -> Result<Lease, InfraError> {
        let mut conn = self.pool.connection().await?;
        let held: i64 = self
            .lease
            .key(self.pool.key("events:relay-lease"))
            .arg(&self.holder)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut conn)
            .await?;
        Ok(match held {
            2 => Lease::Taken,
            1 => Lease::Kept,
            _ => Lease::Elsewhere,
        })
    }

    /// The last position relayed (0: none, or Redis lost it).
    pub async fn cursor(&self) -> Result<i64, InfraError> {
        let mut conn = self.pool.connection().await?;
        let cursor: Option<i64> = cmd("GET")
            .arg(self.pool.key("events:relay-cursor"))
            .query_async(&mut conn)
            .await?;
        Ok(cursor.unwrap_or(0))
    }

    /// Adds `entries` (in position order, all after `after`) to their tenants' streams and
    /// moves the cursor from `after` to `through`, in one script; nothing when the cursor is
    /// not at `after`.
    pub async fn publish(
        &self,
        after: i64,
        through: i64,
        entries: &[StreamEntry],
    ) -> Result<Published, InfraError> {
        let mut invocation = self.publish.prepare_invoke();
        invocation
            .key(self.pool.key("events:relay-cursor"))
            .arg(after)
            .arg(self.maxlen)
            .arg(through)
            .arg(u64::try_from(self.idle_ttl.as_millis()).unwrap_or(u64::MAX));
        for entry in entries {
            invocation
                .key(self.stream_key(&entry.tenant_id))
                .arg(format!("{}-0", entry.position))
                .arg(&entry.event_type)
                .arg(&entry.tenant_id)
                .arg(entry.position)
                .arg(entry.event.as_slice());
        }
        let mut conn = self.pool.connection().await?;
        let added: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(match u64::try_from(added) {
            Ok(added) => Published::Added(added),
            Err(_) => Published::CursorMoved,
        })
    }
}
