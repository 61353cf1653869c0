//! The Redis side of the event relay: one stream per tenant (`{prefix}events:{tenant}`), each
//! entry `type`, `tenant_id`, `position` and `event` (the `marketing.v1.Event`'s bytes), with
//! the id `{position}-0`, so an entry added twice is refused by Redis itself. Beside the
//! streams, the relay's cursor (the last position relayed) and its lease (which replica
//! relays).
//!
//! A page is added by one transaction (`MULTI`/`EXEC`) under a `WATCH` of the cursor, which
//! the relay first reads and compares with where it read the outbox from: a relay working
//! from a stale cursor (another took over meanwhile, or Redis restarted empty) adds nothing
//! and reads the cursor again, and a cursor moved between the check and the `EXEC` aborts the
//! transaction. A transaction runs all its commands: when Redis refuses an entry (for another
//! reason than its id being there already), the cursor is put back and the page is added
//! again by the next pass. The relay has a connection of its own for this (a `WATCH` holds
//! for the connection, and the replica's shared connection multiplexes every other command),
//! used by one publication at a time. A transaction, not a Lua script: Redis spent about a
//! third more per entry running the same `XADD`s through Lua. The cursor lives in Redis with
//! the streams, so a Redis that lost its data lost both, and the relay re-fills every stream
//! from the outbox (from its oldest kept event).

use std::{sync::Arc, time::Duration};

use deadpool_redis::redis::{
    AsyncConnectionConfig, Script, Value, aio::MultiplexedConnection, cmd, pipe,
};
use tokio::sync::Mutex;
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
    /// The relay's own connection (opened on first use, dropped after any failure).
    own: Arc<Mutex<Option<MultiplexedConnection>>>,
}

impl EventStreams {
    pub fn new(pool: RedisPool, maxlen: u64, idle_ttl: Duration) -> Self {
        Self {
            pool,
            maxlen,
            idle_ttl,
            holder: Uuid::new_v4().to_string(),
            lease: Arc::new(Script::new(LEASE_LUA)),
            own: Arc::default(),
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
    /// moves the cursor from `after` to `through`, in one transaction; nothing when the cursor
    /// is not at `after`. One publication at a time per replica (they share the connection
    /// the `WATCH` is on).
    pub async fn publish(
        &self,
        after: i64,
        through: i64,
        entries: &[StreamEntry],
    ) -> Result<Published, InfraError> {
        let mut own = self.own.lock().await;
        let conn = match own.as_mut() {
            Some(conn) => conn,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                let conn = self
                    .pool
                    .client()?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                own.insert(conn)
            }
        };
        let published = self.publish_on(conn, after, through, entries).await;
        if published.is_err() {
            // A failure may leave the `WATCH` standing: the next publication connects again.
            *own = None;
        }
        published
    }

    async fn publish_on(
        &self,
        conn: &mut MultiplexedConnection,
        after: i64,
        through: i64,
        entries: &[StreamEntry],
    ) -> Result<Published, InfraError> {
        let cursor_key = self.pool.key("events:relay-cursor");
        let ((), cursor): ((), Option<i64>) = pipe()
            .cmd("WATCH")
            .arg(&cursor_key)
            .cmd("GET")
            .arg(&cursor_key)
            .query_async(conn)
            .await?;
        if cursor.unwrap_or(0) != after {
            let () = cmd("UNWATCH").query_async(conn).await?;
            return Ok(Published::CursorMoved);
        }
        let idle_ms = u64::try_from(self.idle_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut transaction = pipe();
        transaction.atomic().ignore_errors();
        let mut key = String::new();
        for (index, entry) in entries.iter().enumerate() {
            if index == 0 || entries[index - 1].tenant_id != entry.tenant_id {
                key = self.stream_key(&entry.tenant_id);
            }
            transaction
                .cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg(format!("{}-0", entry.position))
                .arg("type")
                .arg(&entry.event_type)
                .arg("tenant_id")
                .arg(&entry.tenant_id)
                .arg("position")
                .arg(entry.position)
                .arg("event")
                .arg(entry.event.as_slice());
            // Each stream's expiry once, after its last entry of a run.
            if entries
                .get(index + 1)
                .is_none_or(|next| next.tenant_id != entry.tenant_id)
            {
                transaction.cmd("PEXPIRE").arg(&key).arg(idle_ms).ignore();
            }
        }
        transaction
            .cmd("SET")
            .arg(&cursor_key)
            .arg(through)
            .ignore();
        match transaction.query_async::<Value>(conn).await? {
            // The cursor moved after it was read: the transaction did nothing.
            Value::Nil => Ok(Published::CursorMoved),
            Value::Array(replies) => {
                let mut added = 0;
                let mut refused = None;
                for reply in replies {
                    match reply {
                        // An id at or below the stream's last: there already.
                        Value::ServerError(err)
                            if err
                                .details()
                                .is_some_and(|d| d.contains("equal or smaller")) => {}
                        Value::ServerError(err) => {
                            refused.get_or_insert(err);
                        }
                        _ => added += 1,
                    }
                }
                if let Some(err) = refused {
                    // A transaction runs every command: the cursor moved past an entry Redis
                    // refused. Put it back, so the next pass adds the entry, never skips it.
                    self.move_cursor(conn, &cursor_key, through, after).await?;
                    return Err(InfraError::Redis(err.into()));
                }
                Ok(Published::Added(added))
            }
            _ => Err(InfraError::Invalid(
                "an EXEC reply that is neither nil nor an array",
            )),
        }
    }
}

impl EventStreams {
    /// Sets the cursor at `from` to `to` (nothing when another relay moved it meanwhile).
    async fn move_cursor(
        &self,
        conn: &mut MultiplexedConnection,
        cursor_key: &str,
        from: i64,
        to: i64,
    ) -> Result<(), InfraError> {
        let ((), cursor): ((), Option<i64>) = pipe()
            .cmd("WATCH")
            .arg(cursor_key)
            .cmd("GET")
            .arg(cursor_key)
            .query_async(conn)
            .await?;
        if cursor != Some(from) {
            let () = cmd("UNWATCH").query_async(conn).await?;
            return Ok(());
        }
        let _: Value = pipe()
            .atomic()
            .cmd("SET")
            .arg(cursor_key)
            .arg(to)
            .ignore()
            .query_async(conn)
            .await?;
        Ok(())
    }
}

/// The relay's connection: how long it may take to connect, and to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
