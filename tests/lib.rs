//! The end-to-end test harness: `spawn_app` starts the real server, in process, on port 0,
//! with its own database (a fresh SQLite file, or a fresh PostgreSQL database) and its own
//! Redis key prefix, exactly as the binary starts it.
//!
//! Environment: `MARKETING_TEST_DATABASE_URL` (an admin URL of a PostgreSQL server, default
//! `postgres://postgres:postgres@127.0.0.1:5432/postgres`), `MARKETING_TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379`), `TEST_LOG=1` to see the server's logs.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, Once},
    time::Duration,
};

use marketing_domain::time::Clock;
use marketing_proto::v1::{
    coupon_template_service_client::CouponTemplateServiceClient,
    event_service_client::EventServiceClient,
    points_account_service_client::PointsAccountServiceClient,
    user_coupon_service_client::UserCouponServiceClient,
};
use marketing_server::{
    Config, Server, app::AppState, config::TransportConfig, transport::Transport,
};
use sea_orm::ConnectionTrait;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

/// Where a test server keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file with the in-process lock and cache: the default `cargo run` mode.
    Embedded,
    /// PostgreSQL and Redis: the production mode.
    PostgresRedis,
}

pub fn postgres_admin_url() -> String {
    std::env::var("MARKETING_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("MARKETING_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                .with_test_writer()
                .try_init();
        }
    });
}

/// The state a test owns and removes when it stops.
enum Storage {
    Directory(PathBuf),
    PostgresDatabase(String),
    /// A replica: the first server owns the storage.
    Shared,
}

/// Options of a test server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub shutdown_drain_delay: Duration,
    /// Overrides the claim lock's TTL.
    pub claim_lock_ttl: Option<Duration>,
    /// Overrides how often the sweepers run.
    pub sweep_interval: Option<Duration>,
    /// Overrides the Redis server (PostgresRedis backend), e.g. a [`TestRedis`].
    pub redis_url: Option<String>,
    /// Overrides the transport's limits.
    pub transport: Option<TransportConfig>,
    /// Sets `MARKETING_AUTH` (the tests listen on loopback, where it is off by default).
    pub auth: Option<marketing_server::config::AuthMode>,
    /// Overrides `MARKETING_MAX_CALLS` and `MARKETING_CALL_QUEUE_TIMEOUT_MS`.
    pub max_calls: Option<(usize, Duration)>,
    /// Overrides `MARKETING_MAX_REQUEST_BYTES`.
    pub max_request_bytes: Option<usize>,
    /// Sets `MARKETING_RATE_LIMITS`.
    pub rate_limits: Option<&'static str>,
    /// Serves TLS with these certificates (and requires client certificates when
    /// `TestCerts::mtls`).
    pub tls: Option<Arc<TestCerts>>,
    /// Sets `MARKETING_TLS_CLIENT_NAME` (the default: `dns`).
    pub tls_client_name: Option<marketing_server::config::ClientNameField>,
    /// Changes any other setting last.
    pub configure: Option<fn(&mut Config)>,
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where it serves `GET /metrics`.
    pub metrics_addr: Option<SocketAddr>,
    pub backend: Backend,
    pub channel: Channel,
    /// The server's own state: for checks of what the database holds.
    pub state: AppState,
    pub config: Config,
    /// The transport's counters: connections refused, idle ones closed, ...
    pub transport: Arc<Transport>,
    /// The certificates it serves TLS with, if it does.
    pub tls: Option<Arc<TestCerts>>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<anyhow::Result<()>>,
    storage: Storage,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Options::default()).await
}

pub async fn spawn_app_with(backend: Backend, options: Options) -> TestApp {
    init_logs();
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let (database_url, redis, storage) = match backend {
        Backend::Embedded => {
            let dir = std::env::temp_dir().join(format!("marketing-test-{unique}"));
            std::fs::create_dir_all(&dir).expect("create the test's data directory");
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.join("marketing.sqlite").display()
            );
            (url, None, Storage::Directory(dir))
        }
        Backend::PostgresRedis => {
            let name = format!("mk_test_{unique}");
            admin_execute(&format!("CREATE DATABASE \"{name}\"")).await;
            let url = database_url_for(&name);
            let redis = options.redis_url.clone().unwrap_or_else(redis_url);
            (url, Some(redis), Storage::PostgresDatabase(name))
        }
    };
    let defaults = Config::default();
    let mut config = Config {
        database_url: Some(database_url),
        redis_url: redis,
        redis_key_prefix: format!("test:{unique}:"),
        db_max_connections: 8,
        redis_pool_size: 8,
        shutdown_drain_delay: options.shutdown_drain_delay,
        claim_lock_ttl: options.claim_lock_ttl.unwrap_or(defaults.claim_lock_ttl),
        sweep_interval: options.sweep_interval.unwrap_or(defaults.sweep_interval),
        transport: options.transport.unwrap_or(defaults.transport.clone()),
        auth: options.auth,
        max_calls: options.max_calls.map_or(defaults.max_calls, |(max, _)| max),
        call_queue_timeout: options
            .max_calls
            .map_or(defaults.call_queue_timeout, |(_, wait)| wait),
        max_request_bytes: options
            .max_request_bytes
            .unwrap_or(defaults.max_request_bytes),
        rate_limits: options
            .rate_limits
            .map(|limits| limits.parse().expect("valid rate limits"))
            .unwrap_or_default(),
        tls_cert: options.tls.as_ref().map(|tls| tls.path("server.pem")),
        tls_key: options.tls.as_ref().map(|tls| tls.path("server.key")),
        tls_client_ca: options
            .tls
            .as_ref()
            .filter(|tls| tls.mtls)
            .map(|tls| tls.path("ca.pem")),
        tls_client_name: options.tls_client_name.unwrap_or_default(),
        // A stream with nothing to send says so soon: tests need not wait 15 s for it.
        event_stream_heartbeat: Duration::from_millis(500),
        // Every test server serves /metrics, each on a port of its own.
        metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..defaults
    };
    if let Some(configure) = options.configure {
        configure(&mut config);
    }
    start(backend, config, storage, Clock::system(), options.tls).await
}

async fn start(
    backend: Backend,
    config: Config,
    storage: Storage,
    clock: Clock,
    tls: Option<Arc<TestCerts>>,
) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("local address");
    let server = Server::build_with_clock(config.clone(), clock)
        .await
        .expect("the server starts on a fresh database");
    let state = server.app().clone();
    let transport = server.transport().clone();
    let metrics_addr = server.metrics_addr();
    let (shutdown, shutdown_rx) = oneshot::channel();
    let server = tokio::spawn(server.serve(listener, async move {
        let _ = shutdown_rx.await;
    }));
    let channel = connect(addr, tls.as_deref()).await;
    TestApp {
        addr,
        metrics_addr,
        backend,
        channel,
        state,
        config,
        transport,
        tls,
        shutdown: Some(shutdown),
        server,
        storage,
    }
}

/// A new connection to the test server at `addr` (over TLS when it serves TLS; under mTLS
/// with a certificate that names no client).
async fn connect(addr: SocketAddr, tls: Option<&TestCerts>) -> Channel {
    match tls {
        Some(certs) => certs
            .channel(addr, certs.mtls.then(|| certs.client(&["harness"], None)))
            .await
            .expect("connect to the test server over TLS"),
        None => Channel::from_shared(format!("http://{addr}"))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect to the test server"),
    }
}

/// `admin_url` with its database replaced by `name`.
fn database_url_for(name: &str) -> String {
    let admin = postgres_admin_url();
    let base = admin.split('?').next().unwrap_or(&admin);
    let (server, _db) = base
        .rsplit_once('/')
        .expect("the admin URL names a database");
    format!("{server}/{name}")
}

/// A fresh PostgreSQL database for a server this test starts itself (a [`ServerProcess`]):
/// its URL and name, for [`drop_test_database`].
pub async fn create_test_database() -> (String, String) {
    let name = format!("mk_test_{}", uuid::Uuid::now_v7().simple());
    admin_execute(&format!("CREATE DATABASE \"{name}\"")).await;
    (database_url_for(&name), name)
}

pub async fn drop_test_database(name: &str) {
    admin_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
}

/// How many Redis keys start with `prefix`.
/// The keys under `prefix` in the Redis at `url`; an error when it cannot be asked.
async fn keys_under(url: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    let client = deadpool_redis::redis::Client::open(url)?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await??;
    let mut all = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = deadpool_redis::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        all.extend(keys);
        if next == 0 {
            return Ok(all);
        }
        cursor = next;
    }
}

/// Deletes the keys under `prefix` (best effort: the Redis of a test may be gone).
async fn drop_redis_keys(url: &str, prefix: &str) {
    let Ok(keys) = keys_under(url, prefix).await else {
        return;
    };
    let Ok(client) = deadpool_redis::redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    for chunk in keys.chunks(1000) {
        let _: Result<i64, _> = deadpool_redis::redis::cmd("DEL")
            .arg(chunk)
            .query_async(&mut conn)
            .await;
    }
}

/// How many keys are under `prefix` in the test Redis.
pub async fn redis_keys(prefix: &str) -> usize {
    keys_under(&redis_url(), prefix)
        .await
        .expect("the keys of the test Redis")
        .len()
}

async fn admin_execute(sql: &str) {
    let admin = sea_orm::Database::connect(postgres_admin_url())
        .await
        .expect("connect to PostgreSQL as admin (is it running? see scripts/test.sh)");
    admin
        .execute_unprepared(sql)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
    let _ = admin.close().await;
}

impl TestApp {
    /// Moves the server's clock (and its replicas') `by` into the future: expiry, TTLs and
    /// days are tested by moving time, never by sleeping through it.
    pub fn advance_clock(&self, by: Duration) {
        self.state.shared().clock.advance(by);
    }

    /// Terminates every PostgreSQL connection to this test's database (the servers' pools
    /// included), as a failover or a restarted database would.
    pub async fn terminate_database_connections(&self) {
        let Storage::PostgresDatabase(name) = &self.storage else {
            panic!("only the first server of a PostgreSQL test owns its database");
        };
        admin_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await;
    }

    /// Another server on the same database and Redis (same key prefix): a second replica.
    pub async fn spawn_replica(&self) -> TestApp {
        start(
            self.backend,
            self.config.clone(),
            Storage::Shared,
            self.state.shared().clock.clone(),
            self.tls.clone(),
        )
        .await
    }

    /// `count` connections of their own to this server: for floods of calls that would pass
    /// the server's streams per connection on one.
    pub async fn connections(&self, count: usize) -> Vec<Channel> {
        let mut channels = Vec::with_capacity(count);
        for _ in 0..count {
            channels.push(connect(self.addr, self.tls.as_deref()).await);
        }
        channels
    }

    pub fn templates(&self) -> CouponTemplateServiceClient<Channel> {
        CouponTemplateServiceClient::new(self.channel.clone())
    }

    pub fn user_coupons(&self) -> UserCouponServiceClient<Channel> {
        UserCouponServiceClient::new(self.channel.clone())
    }

    pub fn points(&self) -> PointsAccountServiceClient<Channel> {
        PointsAccountServiceClient::new(self.channel.clone())
    }

    pub fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.channel.clone())
    }

    pub fn settings(
        &self,
    ) -> marketing_proto::v1::tenant_settings_service_client::TenantSettingsServiceClient<Channel>
    {
        marketing_proto::v1::tenant_settings_service_client::TenantSettingsServiceClient::new(
            self.channel.clone(),
        )
    }

    /// Signals shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Stops the server (gracefully) and removes the test's database.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        let result = tokio::time::timeout(Duration::from_secs(30), &mut self.server).await;
        match result {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => panic!("the server failed: {err:#}"),
            Ok(Err(join)) => panic!("the server task failed: {join}"),
            Err(_) => panic!("the server did not stop within 30 s"),
        }
        match &self.storage {
            Storage::Directory(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Storage::PostgresDatabase(name) => {
                admin_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
                // Its Redis keys too (streams of events have no expiry of their own here).
                if let Some(url) = &self.config.redis_url {
                    drop_redis_keys(url, &self.config.redis_key_prefix).await;
                }
            }
            Storage::Shared => {}
        }
    }

    /// Waits for the server task to end by itself (after `begin_shutdown`).
    pub async fn join(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await?
    }
}

/// Certificates made at run time for a TLS test, in a directory of their own: a CA
/// (`ca.pem`), the server's for `localhost` and 127.0.0.1 (`server.pem`, `server.key`), and
/// clients' signed by the CA on demand.
pub struct TestCerts {
    dir: PathBuf,
    pub ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// Whether the server requires client certificates signed by the CA.
    pub mtls: bool,
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct PemPair {
    pub cert: String,
    pub key: String,
}

impl TestCerts {
    pub fn new(mtls: bool) -> Arc<Self> {
        let dir = std::env::temp_dir().join(format!(
            "marketing-test-certs-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create the certificates' directory");
        let (ca_pem, issuer) = Self::authority("marketing test CA");
        let certs = Self {
            dir,
            ca_pem,
            issuer,
            mtls,
        };
        let server = certs.sign(&["localhost", "127.0.0.1"], None);
        certs.write("ca.pem", &certs.ca_pem);
        certs.write("server.pem", &server.cert);
        certs.write("server.key", &server.key);
        Arc::new(certs)
    }

    /// A self-signed CA: its certificate (PEM) and what signs with it.
    pub fn authority(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        (cert.pem(), rcgen::Issuer::new(params, key))
    }

    fn sign(&self, names: &[&str], common_name: Option<&str>) -> PemPair {
        Self::sign_with(&self.issuer, names, common_name)
    }

    /// A certificate for `names` (DNS names or IP addresses) and `common_name`, signed by
    /// `issuer`.
    pub fn sign_with(
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        names: &[&str],
        common_name: Option<&str>,
    ) -> PemPair {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("valid names");
        if let Some(common_name) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, common_name);
        }
        params.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, issuer).expect("signed");
        PemPair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A client certificate signed by this CA, naming `names` (DNS) and `common_name`.
    pub fn client(&self, names: &[&str], common_name: Option<&str>) -> PemPair {
        self.sign(names, common_name)
    }

    /// Writes `contents` to `file` in the certificates' directory; its path.
    pub fn write(&self, file: &str, contents: &str) -> PathBuf {
        let path = self.path(file);
        std::fs::write(&path, contents).expect("write a certificate file");
        path
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A channel to `addr` that trusts this CA, presenting `identity` if given.
    pub async fn channel(
        &self,
        addr: SocketAddr,
        identity: Option<PemPair>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        if let Some(identity) = identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                identity.cert,
                identity.key,
            ));
        }
        Channel::from_shared(format!("https://{addr}"))
            .expect("valid uri")
            .tls_config(tls)?
            .connect()
            .await
    }
}

impl std::fmt::Debug for TestCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCerts")
            .field("dir", &self.dir)
            .field("mtls", &self.mtls)
            .finish_non_exhaustive()
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `message` as a call carrying an API client's key (`authorization: Bearer <key>`).
pub fn with_key<M>(message: M, key: &str) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii"),
    );
    request
}

/// Asserts the status has `code` and an `ErrorInfo` with `reason`.
#[track_caller]
pub fn assert_error(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "unexpected reason in {status:?}");
    assert_eq!(info.domain, "marketing.v1");
}

/// The fields named by the status's `BadRequest` violations.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Asserts INVALID_ARGUMENT naming exactly `fields`.
#[track_caller]
pub fn assert_invalid(status: &Status, fields: &[&str]) {
    assert_error(status, Code::InvalidArgument, "INVALID_ARGUMENT");
    let mut found = violated_fields(status);
    found.sort();
    let mut expected: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    expected.sort();
    assert_eq!(found, expected, "violations of {status:?}");
}

/// Runs `$test(&TestApp)` on every backend: `embedded::$test` and `postgres_redis::$test`,
/// optionally with `with <Options expression>;` first.
#[macro_export]
macro_rules! backend_suite {
    (with $options:expr; $($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let app = $crate::spawn_app_with($crate::Backend::Embedded, $options).await;
                    super::$test(&app).await;
                    app.stop().await;
                }
            )*
        }
        mod postgres_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let app = $crate::spawn_app_with($crate::Backend::PostgresRedis, $options).await;
                    super::$test(&app).await;
                    app.stop().await;
                }
            )*
        }
    };
    ($($test:ident),* $(,)?) => {
        $crate::backend_suite!(with $crate::Options::default(); $($test),*);
    };
}

/// A Redis server this test owns (and may stop and restart mid-run), on a port of its own.
pub struct TestRedis {
    pub url: String,
    child: std::process::Child,
}

impl TestRedis {
    /// Starts one on a port of its own: below 32768, where the kernel never hands out client
    /// ports, and never one this process has used before, so a restart gets it back.
    pub fn start() -> TestRedis {
        static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
        for attempt in 0..50u32 {
            let port = {
                let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
                let seed = uuid::Uuid::now_v7().as_u128() as u32 ^ attempt.wrapping_mul(7919);
                let port = 20_000 + (seed % 12_000) as u16;
                if taken.contains(&port) {
                    continue;
                }
                taken.push(port);
                port
            };
            // Owned at once: if it never comes up, dropping it kills and reaps the process.
            let mut redis = TestRedis {
                url: format!("redis://127.0.0.1:{port}"),
                child: spawn_redis(port),
            };
            if redis.wait_until_up(port) {
                return redis;
            }
            // The port was someone else's: another one.
            redis.stop();
        }
        panic!("no free port for a test redis-server");
    }

    /// A server on PostgreSQL and this Redis.
    pub async fn spawn_app(&self) -> TestApp {
        let options = Options {
            redis_url: Some(self.url.clone()),
            ..Options::default()
        };
        spawn_app_with(Backend::PostgresRedis, options).await
    }

    /// Kills the server and starts an empty one on the same port, as a Redis restart does.
    pub fn restart(&mut self) {
        self.stop();
        let port = self
            .url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("the port of the url");
        self.child = spawn_redis(port);
        assert!(
            self.wait_until_up(port),
            "redis-server did not come back on port {port}"
        );
    }

    /// `true` once this process's server answers on `port`; `false` if it exited (the port was
    /// taken) or never came up.
    fn wait_until_up(&mut self, port: u16) -> bool {
        for _ in 0..250 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Ours, not a server that already held the port: ours would have exited.
                std::thread::sleep(Duration::from_millis(20));
                return matches!(self.child.try_wait(), Ok(None));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the server: every later call to it fails.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server's process (SIGSTOP): connections stay open and commands wait, as with
    /// a Redis that is slow rather than down.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} redis-server");
    }
}

fn spawn_redis(port: u16) -> std::process::Child {
    std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start redis-server (scripts/test.sh installs it)")
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The real server binary, built beside this test (scripts/test.sh builds it).
pub fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MARKETING_SERVER_BIN") {
        return PathBuf::from(path);
    }
    built_binary("marketing-server")
}

/// The load generator's binary, built beside this test (scripts/test.sh builds it).
pub fn bench_binary() -> PathBuf {
    built_binary("marketing-bench")
}

fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: run scripts/test.sh, which builds it (cargo build -p {name})",
        binary.display()
    );
    binary
}

/// The real server binary in its own process (its own allocator and memory, and a process
/// that can be killed), killed (and its data removed) when dropped.
pub struct ServerProcess {
    child: Child,
    data_dir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    pub addr: std::net::SocketAddr,
}

impl ServerProcess {
    /// Starts it on a port of its own, with `env` as its only configuration (the embedded
    /// mode in a fresh directory unless `env` names a database).
    pub fn start(env: &[(&str, &str)]) -> ServerProcess {
        let data_dir = std::env::temp_dir().join(format!(
            "marketing-process-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let mut child = Command::new(server_binary())
            .env_clear()
            .env("MARKETING_GRPC_ADDR", "127.0.0.1:0")
            .env("MARKETING_METRICS_ADDR", "127.0.0.1:0")
            .env("MARKETING_DATA_DIR", &data_dir)
            .env("MARKETING_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server binary");
        let stderr = child.stderr.take().expect("piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let logs = logs.clone();
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("serving gRPC")
                        && let Some(addr) = line
                            .split("\"addr\":\"")
                            .nth(1)
                            .and_then(|rest| rest.split('"').next())
                            .and_then(|addr| addr.parse().ok())
                    {
                        let _ = addr_tx.send(addr);
                    }
                    logs.lock().expect("logs").push(line);
                }
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start: {:?}", logs.lock()));
        ServerProcess {
            child,
            data_dir,
            logs,
            addr,
        }
    }

    /// The process's peak resident memory so far (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        self.status_kib("VmHWM:") / 1024
    }

    /// Waits (at most `within`) until the process has done its work: it used under 5% of a
    /// core over a whole second. For a peak read after a burst of work, rather than after a
    /// fixed sleep that a loaded machine may outlast.
    pub async fn settled(&self, within: Duration) {
        let ticks = || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
                .expect("the server's /proc stat");
            // After the command's closing parenthesis: utime and stime are fields 14 and 15.
            let rest = &stat[stat.rfind(')').expect("stat") + 2..];
            let fields: Vec<u64> = rest
                .split_whitespace()
                .map(|field| field.parse().unwrap_or(0))
                .collect();
            fields[11] + fields[12]
        };
        let deadline = std::time::Instant::now() + within;
        let mut before = ticks();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = ticks();
            // Clock ticks are 10 ms: 5 ticks a second is 5% of a core.
            if now - before <= 5 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server is still busy after {within:?}"
            );
            before = now;
        }
    }

    /// The process's resident memory now (`VmRSS`), in MiB.
    pub fn rss_mib(&self) -> u64 {
        self.status_kib("VmRSS:") / 1024
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{field} in the server's /proc status"))
    }

    /// Its embedded database's URL (when `start` named no database).
    pub fn embedded_database_url(&self) -> String {
        format!(
            "sqlite://{}",
            self.data_dir.join("marketing.sqlite").display()
        )
    }

    /// The lines of its log that contain `text`.
    pub fn log_lines(&self, text: &str) -> Vec<String> {
        self.logs
            .lock()
            .expect("logs")
            .iter()
            .filter(|line| line.contains(text))
            .cloned()
            .collect()
    }

    /// Whether a line of its log contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs
            .lock()
            .expect("logs")
            .iter()
            .any(|line| line.contains(text))
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the server process")
    }
}

impl ServerProcess {
    /// Kills it at once (SIGKILL), as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
