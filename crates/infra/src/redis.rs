//! The Redis connection of this replica, shared by the Redis lock, cache, stamps and
//! leaderboard: one multiplexed connection taken from a deadpool-redis pool.
//!
//! Every command goes over the one connection, concurrently: the redis crate's multiplexed
//! connection writes whatever commands are waiting in one go, and Redis answers them in
//! order. A pooled connection per command cost more: deadpool pings (`UNWATCH` + `PING`)
//! every connection it hands out, one more round trip for each command, and each command was
//! its own write (in list-coupons, a freshness check per read, that was a third of the
//! server's CPU). None of our commands needs a connection of its own (no `WATCH`, no blocking
//! command; a `MULTI` pipeline is written as one piece). Pub/sub has its own connection
//! ([`RedisPool::client`]).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use deadpool_redis::{
    Manager, Pool, PoolConfig, Runtime, Timeouts,
    redis::{
        Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value,
        aio::{ConnectionLike, MultiplexedConnection},
        io::tcp::TcpSettings,
    },
};

use crate::InfraError;

/// A Redis pool plus the key prefix that namespaces this deployment (or test).
#[derive(Clone)]
pub struct RedisPool {
    pool: Pool,
    prefix: String,
    info: ConnectionInfo,
    shared: Arc<Mutex<Shared>>,
}

/// The connection every command uses, until it fails: then the next command takes a new
/// one from the pool. `generation` tells a failed command whether the connection it used is
/// still the current one (so a late failure does not drop its replacement).
#[derive(Default)]
struct Shared {
    current: Option<MultiplexedConnection>,
    generation: u64,
}

/// A handle on the shared connection; cheap, and used like any Redis connection.
pub struct RedisConnection {
    conn: MultiplexedConnection,
    generation: u64,
    shared: Arc<Mutex<Shared>>,
}

impl RedisConnection {
    /// Drops the shared connection after a failure that means it is broken (I/O, a timeout,
    /// a closed connection); an error reply of Redis leaves it in place.
    fn check<T>(&self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        if let Err(err) = &result
            && (err.is_io_error() || err.is_unrecoverable_error())
        {
            let mut shared = lock(&self.shared);
            if shared.generation == self.generation {
                shared.current = None;
            }
        }
        result
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.req_packed_command(cmd).await;
            self.check(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.check(result)
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // Every critical section is a clone or a swap of the connection handle.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisPool {
    /// Builds the pool; connections are made lazily. Waiting for a connection is bounded so a
    /// Redis outage turns into a fast error the caller can degrade on. Connections set
    /// `TCP_NODELAY` (the redis crate leaves Nagle's algorithm on): without it, two commands
    /// written back to back on one multiplexed connection can wait ~40 ms for a delayed ACK.
    pub fn new(url: &str, max_size: usize, prefix: &str) -> Result<Self, InfraError> {
        let info = url
            .into_connection_info()?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let mut pool_config = PoolConfig::new(max_size);
        pool_config.timeouts = Timeouts {
            wait: Some(Duration::from_millis(500)),
            create: Some(Duration::from_millis(500)),
            recycle: Some(Duration::from_millis(500)),
        };
        let pool = Pool::builder(Manager::new(info.clone())?)
            .config(pool_config)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|err| InfraError::Config(err.to_string()))?;
        Ok(Self {
            pool,
            prefix: prefix.to_owned(),
            info,
            shared: Arc::default(),
        })
    }

    /// The shared connection; the first command after a failure takes a new one from the
    /// pool (bounded by the pool's 500 ms timeouts, so an outage fails fast).
    pub async fn connection(&self) -> Result<RedisConnection, InfraError> {
        let handle = |conn: MultiplexedConnection, generation| RedisConnection {
            conn,
            generation,
            shared: self.shared.clone(),
        };
        {
            let shared = lock(&self.shared);
            if let Some(conn) = &shared.current {
                return Ok(handle(conn.clone(), shared.generation));
            }
        }
        let fresh = deadpool_redis::Connection::take(self.pool.get().await?);
        let mut shared = lock(&self.shared);
        // Another command may have installed one meanwhile: use it, drop ours.
        let conn = match &shared.current {
            Some(current) => current.clone(),
            None => {
                shared.generation += 1;
                shared.current = Some(fresh.clone());
                fresh
            }
        };
        Ok(handle(conn, shared.generation))
    }

    /// A client for connections outside the pool (pub/sub subscriptions).
    pub fn client(&self) -> Result<deadpool_redis::redis::Client, InfraError> {
        Ok(deadpool_redis::redis::Client::open(self.info.clone())?)
    }

    /// The namespaced key.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Deletes the keys older versions wrote with no bound ([`LEGACY_UNBOUNDED_KEYS`]) and
    /// answers how many went; `None` when a replica did so within the last day (a marker says
    /// so), so starts do not scan the keyspace every time. Keys an old replica still writes
    /// during a rolling upgrade go at a start a day later.
    pub async fn remove_legacy_keys(&self) -> Result<Option<u64>, InfraError> {
        let marker = self.key("legacy-keys-removed");
        let mut conn = self.connection().await?;
        let claimed: Option<String> = deadpool_redis::redis::cmd("SET")
            .arg(&marker)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(LEGACY_SWEEP_EVERY_SECS)
            .query_async(&mut conn)
            .await?;
        if claimed.is_none() {
            return Ok(None);
        }
        let removed = self.remove_matching(&mut conn, LEGACY_UNBOUNDED_KEYS).await;
        if removed.is_err() {
            // Let the next start try again.
            let _: Result<i64, _> = deadpool_redis::redis::cmd("DEL")
                .arg(&marker)
                .query_async(&mut conn)
                .await;
        }
        removed.map(Some)
    }

    /// Deletes this prefix's keys that match any of `patterns` (Redis glob, after the prefix,
    /// whose own glob characters are escaped), a few hundred at a time.
    async fn remove_matching(
        &self,
        conn: &mut RedisConnection,
        patterns: &[&str],
    ) -> Result<u64, InfraError> {
        let mut removed = 0;
        for pattern in patterns {
            removed += self.unlink_scanned(conn, pattern, |_| true).await?;
        }
        Ok(removed)
    }

    /// Deletes this prefix's keys that match `pattern` (Redis glob, after the prefix) and
    /// that `select` accepts (given the key without the prefix), scanning the keyspace a few
    /// hundred keys at a time (never blocking Redis); answers how many went.
    pub async fn unlink_where(
        &self,
        pattern: &str,
        select: impl Fn(&str) -> bool,
    ) -> Result<u64, InfraError> {
        let mut conn = self.connection().await?;
        self.unlink_scanned(&mut conn, pattern, select).await
    }

    async fn unlink_scanned(
        &self,
        conn: &mut RedisConnection,
        pattern: &str,
        select: impl Fn(&str) -> bool,
    ) -> Result<u64, InfraError> {
        let mut removed = 0;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys) = self.scan_with(conn, pattern, cursor, 500).await?;
            let chosen: Vec<String> = keys
                .into_iter()
                .filter(|key| select(key))
                .map(|key| self.key(&key))
                .collect();
            if !chosen.is_empty() {
                removed += deadpool_redis::redis::cmd("UNLINK")
                    .arg(&chosen)
                    .query_async::<u64>(conn)
                    .await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// One step of `SCAN` over this prefix's keys matching `pattern` (Redis glob, after the
    /// prefix): the keys found, without the prefix, and the cursor to go on from (0: done).
    /// `count` is Redis's hint of how many keys to look at, not a bound on what matches.
    pub async fn scan(
        &self,
        pattern: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), InfraError> {
        let mut conn = self.connection().await?;
        self.scan_with(&mut conn, pattern, cursor, count).await
    }

    async fn scan_with(
        &self,
        conn: &mut RedisConnection,
        pattern: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), InfraError> {
        let (next, keys): (u64, Vec<String>) = deadpool_redis::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}{pattern}", glob_escaped(&self.prefix)))
            .arg("COUNT")
            .arg(count)
            .query_async(conn)
            .await?;
        let keys = keys
            .into_iter()
            .filter_map(|key| key.strip_prefix(&self.prefix).map(str::to_owned))
            .collect();
        Ok((next, keys))
    }

    /// Round-trips a PING: for start-up checks.
    pub async fn ping(&self) -> Result<(), InfraError> {
        let mut conn = self.connection().await?;
        deadpool_redis::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await?;
        Ok(())
    }
}

/// `text` matched literally in a Redis glob pattern.
pub fn glob_escaped(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escape = matches!(c, '*' | '?' | '[' | ']' | '\\').then_some('\\');
            escape.into_iter().chain([c])
        })
        .collect()
}

/// How often, at most, a start looks for [`LEGACY_UNBOUNDED_KEYS`].
const LEGACY_SWEEP_EVERY_SECS: u64 = 86_400;

/// Keys that versions before the tenant-keyed locks and expiring leaderboards wrote with no
/// TTL: template fences keyed by template alone, and leaderboards without a hash tag. Their
/// successors have other names, so these are never read again.
pub const LEGACY_UNBOUNDED_KEYS: &[&str] = &[
    "fence:tpl:*",
    "lock:tpl:*",
    "lb:[^{]*",
    "lb-names:[^{]*",
    "lb-built:[^{]*",
];
