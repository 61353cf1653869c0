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
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
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
    breaker: Arc<Breaker>,
}

/// Failures within [`BREAKER_WINDOW`] that open the breaker.
const BREAKER_THRESHOLD: usize = 3;
const BREAKER_WINDOW: Duration = Duration::from_secs(1);
/// How long the breaker stays open after it trips; doubled after each failed probe, up to
/// [`BREAKER_MAX_OPEN`].
const BREAKER_FIRST_OPEN: Duration = Duration::from_millis(250);
const BREAKER_MAX_OPEN: Duration = Duration::from_secs(5);

/// The circuit breaker in front of every command of a replica (locks, caches, stamps, rate
/// limits, leaderboards, event streams): after [`BREAKER_THRESHOLD`] timeouts or connection
/// failures within [`BREAKER_WINDOW`], commands fail at once ([`InfraError::CircuitOpen`]) and
/// callers take their fallbacks, instead of each waiting for its own timeout (500 ms) while
/// Redis is slow or gone. After a short time a probe (a `PING` on a new connection, in the
/// background: no call waits for it) tries again: its success closes the breaker, its failure
/// keeps it open twice as long (up to [`BREAKER_MAX_OPEN`]). An error *reply* (Redis
/// answered) is no failure.
#[derive(Debug, Default)]
pub struct Breaker {
    open: AtomicBool,
    /// Whether failures were seen recently (so a success must clear them).
    suspect: AtomicBool,
    state: Mutex<BreakerState>,
    stats: BreakerStats,
}

#[derive(Debug, Default)]
struct BreakerState {
    /// When the recent failures happened (at most [`BREAKER_THRESHOLD`]).
    recent: Vec<Instant>,
    /// While open: when it opened, when the next probe may go, and for how long it then stays
    /// open if that probe fails too.
    opened_at: Option<Instant>,
    probe_at: Option<Instant>,
    open_for: Duration,
}

/// What the breaker did, for the replica's metrics.
#[derive(Debug, Default)]
pub struct BreakerStats {
    /// Commands that timed out or could not reach Redis.
    pub failures: AtomicU64,
    /// Times the breaker opened.
    pub trips: AtomicU64,
    /// Commands not sent because it was open.
    pub short_circuited: AtomicU64,
    /// Times it closed again after a probe succeeded.
    pub recoveries: AtomicU64,
    /// Connections taken anew after the shared one failed.
    pub reconnects: AtomicU64,
}

/// What the breaker says of a command about to be sent.
enum Verdict {
    Send,
    Refuse,
    /// Refuse it, and probe Redis in the background: the open time passed.
    RefuseAndProbe,
}

impl Breaker {
    /// Whether a command may be sent now: while closed, yes; while open, no, and once per open
    /// time a probe is due.
    fn verdict(&self) -> Verdict {
        if !self.open.load(Relaxed) {
            return Verdict::Send;
        }
        let now = Instant::now();
        let mut state = lock_state(&self.state);
        let Some(at) = state.probe_at else {
            // Closed meanwhile.
            return Verdict::Send;
        };
        self.stats.short_circuited.fetch_add(1, Relaxed);
        if now < at {
            return Verdict::Refuse;
        }
        // The next probe after another open time, even if this one never reports.
        state.probe_at = Some(now + state.open_for);
        Verdict::RefuseAndProbe
    }

    fn record_failure(&self) {
        self.stats.failures.fetch_add(1, Relaxed);
        if self.open.load(Relaxed) {
            // A command sent before the trip: the breaker is open already, and only its
            // probes say how long it stays so.
            return;
        }
        let now = Instant::now();
        let mut state = lock_state(&self.state);
        if state.opened_at.is_some() {
            return;
        }
        state
            .recent
            .retain(|at| now.duration_since(*at) < BREAKER_WINDOW);
        state.recent.push(now);
        self.suspect.store(true, Relaxed);
        if state.recent.len() >= BREAKER_THRESHOLD {
            state.recent.clear();
            state.opened_at = Some(now);
            state.open_for = BREAKER_FIRST_OPEN;
            state.probe_at = Some(now + BREAKER_FIRST_OPEN);
            self.open.store(true, Relaxed);
            self.stats.trips.fetch_add(1, Relaxed);
            tracing::warn!(
                failures = BREAKER_THRESHOLD,
                window_ms = BREAKER_WINDOW.as_millis() as u64,
                "redis circuit open: it timed out or failed repeatedly; using fallbacks until a probe succeeds"
            );
        }
    }

    /// A probe failed: the breaker stays open twice as long as before (up to the most).
    fn probe_failed(&self) {
        self.stats.failures.fetch_add(1, Relaxed);
        let mut state = lock_state(&self.state);
        if state.opened_at.is_none() {
            return;
        }
        state.open_for = (state.open_for * 2).min(BREAKER_MAX_OPEN);
        state.probe_at = Some(Instant::now() + state.open_for);
    }

    fn record_success(&self) {
        if !self.open.load(Relaxed) && !self.suspect.load(Relaxed) {
            return;
        }
        let mut state = lock_state(&self.state);
        state.recent.clear();
        self.suspect.store(false, Relaxed);
        if let Some(opened_at) = state.opened_at.take() {
            state.probe_at = None;
            self.open.store(false, Relaxed);
            self.stats.recoveries.fetch_add(1, Relaxed);
            tracing::info!(
                open_ms = opened_at.elapsed().as_millis() as u64,
                "redis circuit closed: a probe succeeded"
            );
        }
    }

    /// Records how a command went: timeouts and connection failures count against Redis;
    /// anything Redis answered (an error reply too) counts for it.
    fn record<T>(&self, result: &Result<T, RedisError>) {
        if counts_against(result) {
            self.record_failure();
        } else {
            self.record_success();
        }
    }

    /// Since when the breaker is open (`None`: closed).
    pub fn open_since(&self) -> Option<Instant> {
        if !self.open.load(Relaxed) {
            return None;
        }
        lock_state(&self.state).opened_at
    }

    pub fn stats(&self) -> &BreakerStats {
        &self.stats
    }
}

/// Whether a command's outcome says Redis is slow or unreachable (not an error reply).
fn counts_against<T>(result: &Result<T, RedisError>) -> bool {
    matches!(result, Err(err) if err.is_timeout()
        || err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error())
}

fn lock_state(state: &Mutex<BreakerState>) -> std::sync::MutexGuard<'_, BreakerState> {
    // Every critical section is a few assignments.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    breaker: Arc<Breaker>,
}

impl RedisConnection {
    /// Drops the shared connection after a failure that means it is broken (I/O, a timeout,
    /// a closed connection); an error reply of Redis leaves it in place.
    fn check<T>(&self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        self.breaker.record(&result);
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
            breaker: Arc::default(),
        })
    }

    /// The breaker every command of this pool goes through.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The shared connection; the first command after a failure takes a new one from the
    /// pool (bounded by the pool's 500 ms timeouts, so an outage fails fast).
    pub async fn connection(&self) -> Result<RedisConnection, InfraError> {
        match self.breaker.verdict() {
            Verdict::Send => {}
            Verdict::Refuse => return Err(InfraError::CircuitOpen),
            Verdict::RefuseAndProbe => {
                tokio::spawn(self.clone().probe());
                return Err(InfraError::CircuitOpen);
            }
        }
        let handle = |conn: MultiplexedConnection, generation| RedisConnection {
            conn,
            generation,
            shared: self.shared.clone(),
            breaker: self.breaker.clone(),
        };
        {
            let shared = lock(&self.shared);
            if let Some(conn) = &shared.current {
                return Ok(handle(conn.clone(), shared.generation));
            }
        }
        let fresh = match self.pool.get().await {
            Ok(fresh) => deadpool_redis::Connection::take(fresh),
            Err(err) => {
                self.breaker.record_failure();
                return Err(err.into());
            }
        };
        self.breaker.stats.reconnects.fetch_add(1, Relaxed);
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

    /// Whether Redis answers again: a `PING` on a new connection (bounded by the pool's and
    /// the connection's 500 ms timeouts), its outcome told to the breaker.
    async fn probe(self) {
        let outcome = match self.pool.get().await {
            Ok(conn) => {
                let mut conn = deadpool_redis::Connection::take(conn);
                deadpool_redis::redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map(drop)
            }
            Err(_) => {
                self.breaker.probe_failed();
                return;
            }
        };
        if counts_against(&outcome) {
            self.breaker.probe_failed();
        } else {
            self.breaker.record_success();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(breaker: &Breaker) -> &'static str {
        match breaker.verdict() {
            Verdict::Send => "send",
            Verdict::Refuse => "refuse",
            Verdict::RefuseAndProbe => "probe",
        }
    }

    #[test]
    fn the_breaker_opens_after_repeated_failures_and_a_probe_closes_it() {
        let breaker = Breaker::default();
        breaker.record_failure();
        breaker.record_failure();
        assert_eq!(verdict(&breaker), "send", "two failures: still closed");
        breaker.record_failure();
        assert_eq!(verdict(&breaker), "refuse", "the third opens it");
        // Commands sent before the trip failing late do not keep it open longer.
        for _ in 0..10 {
            breaker.record_failure();
        }
        std::thread::sleep(BREAKER_FIRST_OPEN + Duration::from_millis(50));
        assert_eq!(
            verdict(&breaker),
            "probe",
            "a probe after the first open time"
        );
        assert_eq!(verdict(&breaker), "refuse", "one probe at a time");
        breaker.probe_failed();
        // Open twice as long after a failed probe: 500 ms from here.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(verdict(&breaker), "refuse");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(verdict(&breaker), "probe");
        breaker.record_success();
        assert_eq!(verdict(&breaker), "send", "the probe's success closes it");
        let stats = breaker.stats();
        assert_eq!(stats.trips.load(Relaxed), 1);
        assert_eq!(stats.recoveries.load(Relaxed), 1);
        assert!(stats.short_circuited.load(Relaxed) >= 4);
        assert!(breaker.open_since().is_none());
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escaped("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escaped("tenant:eu-1"), "tenant:eu-1");
    }
}
