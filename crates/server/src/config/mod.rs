//! Configuration, layered: built-in defaults, then an optional TOML file (`MARKETING_CONFIG`),
//! then environment variables, by the `config` crate. Each setting is declared once, as a
//! field of [`Config`]: its name in the file is the field's serde name, and in the environment
//! that name upper-cased behind `MARKETING_` (plus the conventional `DATABASE_URL` and
//! `REDIS_URL`). Validated once at start-up; an invalid value is named by its variable;
//! secrets (URLs with passwords) are never logged.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use marketing_domain::limits::RateLimits;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{name}: {problem}")]
    Invalid { name: String, problem: String },
}

fn invalid(name: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.into(),
        problem: problem.into(),
    }
}

/// Which field of a client certificate names its API client (`MARKETING_TLS_CLIENT_NAME`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientNameField {
    /// The DNS names of its subject alternative names.
    #[default]
    Dns,
    /// Its subject's common names.
    Cn,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

/// Whether calls need an API client (`MARKETING_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every call of the marketing services needs a client's key (health and reflection stay
    /// open).
    Required,
    /// Open to anyone who can reach the port: for a loopback address only, by default.
    Disabled,
}

mod fields;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Where `GET /metrics` (Prometheus text) listens, without auth; empty turns it off.
    #[serde(with = "fields::optional_addr")]
    pub metrics_addr: Option<SocketAddr>,
    /// `postgres://...` or `sqlite://...`; when unset, a SQLite file in `data_dir`.
    pub database_url: Option<String>,
    /// Directory of the embedded SQLite database.
    pub data_dir: PathBuf,
    pub db_max_connections: u32,
    /// When unset, the in-process lock and cache are used (single replica only).
    pub redis_url: Option<String>,
    pub redis_pool_size: usize,
    /// Namespaces every Redis key of this deployment.
    pub redis_key_prefix: String,
    /// How this replica names itself (in the admin service's answers and the locks it
    /// holds); unset: the host's name and a random suffix.
    pub replica_id: Option<String>,
    #[serde(rename = "template_cache_ttl_secs", with = "fields::secs")]
    pub template_cache_ttl: Duration,
    /// Bound of the in-process cache, in entries.
    pub local_cache_capacity: u64,
    /// Bound of the in-process copies of members' coupon lists, in coupons; 0 turns them off.
    pub coupon_list_cache_capacity: u64,
    /// After health turns NOT_SERVING on shutdown, how long to keep accepting calls so load
    /// balancers notice before the listener closes.
    #[serde(rename = "shutdown_drain_delay_ms", with = "fields::millis")]
    pub shutdown_drain_delay: Duration,
    pub log_format: LogFormat,
    /// Unset: `required` unless the server listens on a loopback address.
    pub auth: Option<AuthMode>,
    /// How long one claim batch may hold a template's lock before it lapses by itself.
    #[serde(rename = "claim_lock_ttl_ms", with = "fields::millis")]
    pub claim_lock_ttl: Duration,
    /// How long a claim may wait (for the lock, and retrying) unless the client's own
    /// deadline is shorter.
    #[serde(rename = "claim_timeout_ms", with = "fields::millis")]
    pub claim_timeout: Duration,
    /// Most claims one locked batch serves.
    pub claim_batch_max: usize,
    /// Most points commands one batch serves.
    pub points_batch_max: usize,
    /// How long `LockCoupon` holds a coupon when the request names no TTL.
    #[serde(rename = "coupon_lock_ttl_secs", with = "fields::secs")]
    pub coupon_lock_ttl: Duration,
    /// How often the sweepers release lapsed coupon locks and expire coupons.
    #[serde(rename = "sweep_interval_ms", with = "fields::millis")]
    pub sweep_interval: Duration,
    /// How long a points hold lives when `FreezePoints` names no TTL.
    #[serde(rename = "points_hold_ttl_secs", with = "fields::secs")]
    pub points_hold_ttl: Duration,
    /// How long records that only serve retries are kept: idempotency records (a retry after
    /// this is a new request) and points holds that finished. Deleted by the sweeper in small
    /// batches afterwards.
    #[serde(rename = "retention_secs", with = "fields::secs")]
    pub retention: Duration,
    /// Lifetime of cached points rules.
    #[serde(rename = "rule_cache_ttl_secs", with = "fields::secs")]
    pub rule_cache_ttl: Duration,
    /// Days events are kept; then deleted, oldest first, in small batches. A reader asking
    /// after a deleted position is refused EVENTS_EXPIRED.
    #[serde(deserialize_with = "fields::lenient::number")]
    pub events_retention_days: u64,
    /// Entries kept in each tenant's Redis stream of events (approximately: `XADD MAXLEN ~`).
    #[serde(deserialize_with = "fields::lenient::number")]
    pub events_stream_maxlen: u64,
    /// `StreamEvents` calls one API client may hold open on one replica.
    #[serde(deserialize_with = "fields::lenient::number")]
    pub event_streams_per_client: usize,
    /// Events one `StreamEvents` call may have waiting for its consumer; a consumer that
    /// leaves it full for `event_stream_stall_ms` is closed STREAM_BACKLOG_FULL.
    #[serde(deserialize_with = "fields::lenient::number")]
    pub event_stream_buffer: usize,
    #[serde(rename = "event_stream_stall_ms", with = "fields::millis")]
    pub event_stream_stall: Duration,
    /// How often a `StreamEvents` call with nothing to send says it is alive.
    #[serde(rename = "event_stream_heartbeat_ms", with = "fields::millis")]
    pub event_stream_heartbeat: Duration,
    /// Days before a coupon's `valid_until` that `coupon.expiring` is emitted (0: never).
    #[serde(deserialize_with = "fields::lenient::number")]
    pub reminder_coupon_days: u64,
    /// Days before a points lot expires that `points.expiring` is emitted (0: never).
    #[serde(deserialize_with = "fields::lenient::number")]
    pub reminder_points_days: u64,
    /// How long a points write may retry after losing optimistic-version races, unless the
    /// client's own deadline is shorter.
    #[serde(rename = "points_timeout_ms", with = "fields::millis")]
    pub points_timeout: Duration,
    /// Calls of the marketing services this replica works on at once; past it a call waits
    /// `call_queue_timeout` for a turn, then is refused UNAVAILABLE / OVERLOADED.
    pub max_calls: usize,
    #[serde(rename = "call_queue_timeout_ms", with = "fields::millis")]
    pub call_queue_timeout: Duration,
    /// The longest any call may take to answer, whatever the client's deadline (a stream's
    /// first answer: `StreamEvents` then lives as long as its consumer reads).
    #[serde(rename = "call_timeout_ms", with = "fields::millis")]
    pub call_timeout: Duration,
    /// Database statements that take this long or longer are logged (0: none).
    #[serde(rename = "slow_statement_ms", with = "fields::millis")]
    pub slow_statement: Duration,
    /// Largest request message a call may send; a larger one is refused from its length
    /// prefix, before it is read.
    pub max_request_bytes: usize,
    /// Rate limits per member and action and per client, e.g. `claim=5/s:10,client=1000/s`
    /// (`ACTION=COUNT/UNIT[:BURST]`; actions `claim`, `earn` (by rule), `client`). Empty: none.
    #[serde(with = "fields::text")]
    pub rate_limits: RateLimits,
    /// PEM certificate chain and private key: serve TLS (both, or neither).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: require client certificates signed by one (mTLS); a certificate
    /// whose one name in `tls_client_name` is a client's name calls as that client.
    pub tls_client_ca: Option<PathBuf>,
    /// The certificate field that names the client: `dns` (SAN DNS names) or `cn` (subject
    /// common names). A certificate with more than one name there, or a name of no client, is
    /// refused.
    pub tls_client_name: ClientNameField,
    /// How the transport defends itself against hostile or broken clients.
    #[serde(flatten)]
    pub transport: TransportConfig,
}

/// Bounds on what a client's connection may hold of this replica (docs/transport.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransportConfig {
    /// Connections this replica serves at once; past it, new ones are closed and logged.
    #[serde(deserialize_with = "fields::lenient::number")]
    pub max_connections: usize,
    /// HTTP/2 streams (calls) one connection may have open at once.
    #[serde(deserialize_with = "fields::lenient::number")]
    pub max_concurrent_streams: u32,
    /// Time a new connection has to send the HTTP/2 preface and its settings.
    #[serde(rename = "handshake_timeout_ms", with = "fields::millis")]
    pub handshake_timeout: Duration,
    /// A connection with no call open for this long is closed.
    #[serde(rename = "connection_idle_timeout_ms", with = "fields::millis")]
    pub idle_timeout: Duration,
    /// HTTP/2 pings on every connection this often; one unanswered within
    /// `keepalive_timeout` closes it.
    #[serde(rename = "keepalive_interval_ms", with = "fields::millis")]
    pub keepalive_interval: Duration,
    #[serde(rename = "keepalive_timeout_ms", with = "fields::millis")]
    pub keepalive_timeout: Duration,
    /// Bytes of request headers a call may send.
    #[serde(deserialize_with = "fields::lenient::number")]
    pub max_header_list_bytes: u32,
    /// Bytes of responses that clients have not yet read that one connection, and the whole
    /// replica, may hold; a larger response past them is refused with RESPONSE_BUFFER_FULL.
    #[serde(deserialize_with = "fields::lenient::number")]
    pub unsent_bytes_per_connection: usize,
    #[serde(deserialize_with = "fields::lenient::number")]
    pub unsent_bytes: usize,
    /// Long-lived streams (`Health/Watch`, reflection, `StreamEvents`) open at once on this
    /// replica (and at most 4 per connection); past either they are refused OVERLOADED.
    #[serde(deserialize_with = "fields::lenient::number")]
    pub max_open_service_calls: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_concurrent_streams: 200,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_header_list_bytes: 16 * 1024,
            unsent_bytes_per_connection: 8 << 20,
            unsent_bytes: 64 << 20,
            max_open_service_calls: 1_000,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every setting as it is named in the file, the URLs redacted.
        let mut shown = self.clone();
        shown.database_url = shown.database_url.as_deref().map(redact);
        shown.redis_url = shown.redis_url.as_deref().map(redact);
        match serde_json::to_value(&shown) {
            Ok(serde_json::Value::Object(settings)) => {
                let mut out = f.debug_struct("Config");
                for (name, value) in &settings {
                    out.field(name, &format_args!("{value}"));
                }
                out.finish()
            }
            _ => f.write_str("Config { .. }"),
        }
    }
}

/// `scheme://user:password@host/db` -> `scheme://***@host/db`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl Config {
    /// How this replica names itself: [`Config::replica_id`], or the host's name (as far as
    /// the kernel tells it) and a random suffix, so replicas of one host differ.
    pub fn effective_replica_id(&self) -> String {
        if let Some(id) = &self.replica_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| {
                name.trim()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    .take(48)
                    .collect::<String>()
            })
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "replica".to_owned());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}", &suffix[..8])
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            database_url: None,
            data_dir: PathBuf::from("data"),
            db_max_connections: 16,
            redis_url: None,
            redis_pool_size: 32,
            redis_key_prefix: "marketing:".to_owned(),
            replica_id: None,
            template_cache_ttl: Duration::from_secs(600),
            local_cache_capacity: 100_000,
            coupon_list_cache_capacity: 50_000,
            shutdown_drain_delay: Duration::ZERO,
            log_format: LogFormat::Plain,
            auth: None,
            claim_lock_ttl: Duration::from_millis(3000),
            claim_timeout: Duration::from_secs(10),
            claim_batch_max: 512,
            points_batch_max: 512,
            coupon_lock_ttl: Duration::from_secs(900),
            sweep_interval: Duration::from_secs(5),
            points_hold_ttl: Duration::from_secs(900),
            retention: Duration::from_secs(7 * 86_400),
            rule_cache_ttl: Duration::from_secs(1800),
            events_retention_days: 30,
            events_stream_maxlen: 100_000,
            event_streams_per_client: 4,
            event_stream_buffer: 1_000,
            event_stream_stall: Duration::from_secs(30),
            event_stream_heartbeat: Duration::from_secs(15),
            reminder_coupon_days: 3,
            reminder_points_days: 7,
            points_timeout: Duration::from_secs(10),
            max_calls: 2048,
            call_queue_timeout: Duration::from_millis(100),
            call_timeout: Duration::from_secs(30),
            slow_statement: Duration::from_millis(100),
            max_request_bytes: 4 * 1024 * 1024,
            rate_limits: RateLimits::default(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_client_name: ClientNameField::Dns,
            transport: TransportConfig::default(),
        }
    }
}

/// Settings an empty value switches off (elsewhere an empty variable counts as unset).
const EMPTY_IS_OFF: [&str; 1] = ["metrics_addr"];

/// The environment variable of a setting.
fn variable(key: &str) -> String {
    format!("MARKETING_{}", key.to_uppercase())
}

/// The conventional unprefixed name a setting is also read from (the prefixed one wins).
fn alias(key: &str) -> Option<&'static str> {
    match key {
        "database_url" => Some("DATABASE_URL"),
        "redis_url" => Some("REDIS_URL"),
        _ => None,
    }
}

impl Config {
    /// Loads from the process environment (and the file it names).
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_sources(|name| std::env::var(name).ok())
    }

    /// Every setting's name, as in the file.
    fn keys() -> Vec<String> {
        match serde_json::to_value(Self::default()) {
            Ok(serde_json::Value::Object(settings)) => settings.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Loads from `env` (a lookup of environment variables) and the file it names.
    pub fn from_sources(env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let keys = Self::keys();
        let file = match env("MARKETING_CONFIG") {
            Some(path) => {
                let path = PathBuf::from(path);
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|source| ConfigError::Parse { path, source })?;
                if let Some(unknown) = table.keys().find(|key| !keys.contains(key)) {
                    return Err(invalid(unknown.as_str(), "is not a setting"));
                }
                Some(text)
            }
            None => None,
        };
        // Empty variables count as unset, but where empty switches a setting off.
        let overrides: Vec<(String, String)> = keys
            .iter()
            .filter_map(|key| {
                std::iter::once(variable(key))
                    .chain(alias(key).map(str::to_owned))
                    .find_map(|name| {
                        env(&name).filter(|value| {
                            !value.is_empty() || EMPTY_IS_OFF.contains(&key.as_str())
                        })
                    })
                    .map(|value| (key.clone(), value))
            })
            .collect();
        let config = match Self::layered(file.as_deref(), &overrides) {
            Ok(config) => config,
            Err(problem) => return Err(Self::culprit(file.as_deref(), &overrides, problem)),
        };
        config.validate()?;
        Ok(config)
    }

    /// Defaults, then the file's text, then the environment's values.
    fn layered(file: Option<&str>, overrides: &[(String, String)]) -> Result<Self, String> {
        let defaults = config::Config::try_from(&Self::default()).map_err(|e| e.to_string())?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(text) = file {
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
        }
        for (key, value) in overrides {
            builder = builder
                .set_override(key.as_str(), value.as_str())
                .map_err(|e| e.to_string())?;
        }
        builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| e.to_string())
    }

    /// The error for a configuration that does not load: the setting that alone makes it
    /// fail, named by its variable.
    fn culprit(file: Option<&str>, overrides: &[(String, String)], problem: String) -> ConfigError {
        for (key, value) in overrides {
            if let Err(alone) = Self::layered(None, &[(key.clone(), value.clone())]) {
                return invalid(variable(key), format!("{value:?} is not valid: {alone}"));
            }
        }
        if file.is_some_and(|text| Self::layered(Some(text), &[]).is_err()) {
            return invalid("MARKETING_CONFIG", problem);
        }
        invalid("configuration", problem)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            return Err(invalid(
                "MARKETING_DATABASE_URL",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(invalid(
                "MARKETING_REDIS_URL",
                "must start with redis:// or rediss://",
            ));
        }
        if let Some(id) = &self.replica_id
            && marketing_domain::auth::check_client_name(id).is_err()
        {
            return Err(invalid(
                "MARKETING_REPLICA_ID",
                "must be 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        if self.db_max_connections == 0 {
            return Err(invalid(
                "MARKETING_DB_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        if self.redis_pool_size == 0 {
            return Err(invalid("MARKETING_REDIS_POOL_SIZE", "must be at least 1"));
        }
        if self.max_calls == 0 {
            return Err(invalid("MARKETING_MAX_CALLS", "must be at least 1"));
        }
        if self.max_request_bytes < 1024 {
            return Err(invalid(
                "MARKETING_MAX_REQUEST_BYTES",
                "must be at least 1024",
            ));
        }
        if self.template_cache_ttl.is_zero() {
            return Err(invalid(
                "MARKETING_TEMPLATE_CACHE_TTL_SECS",
                "must be at least 1",
            ));
        }
        for (name, value) in [
            ("MARKETING_CLAIM_LOCK_TTL_MS", self.claim_lock_ttl),
            ("MARKETING_CLAIM_TIMEOUT_MS", self.claim_timeout),
            ("MARKETING_COUPON_LOCK_TTL_SECS", self.coupon_lock_ttl),
            ("MARKETING_SWEEP_INTERVAL_MS", self.sweep_interval),
            ("MARKETING_POINTS_HOLD_TTL_SECS", self.points_hold_ttl),
            ("MARKETING_RETENTION_SECS", self.retention),
            ("MARKETING_RULE_CACHE_TTL_SECS", self.rule_cache_ttl),
            ("MARKETING_POINTS_TIMEOUT_MS", self.points_timeout),
            ("MARKETING_CALL_TIMEOUT_MS", self.call_timeout),
            ("MARKETING_EVENT_STREAM_STALL_MS", self.event_stream_stall),
            (
                "MARKETING_EVENT_STREAM_HEARTBEAT_MS",
                self.event_stream_heartbeat,
            ),
            (
                "MARKETING_HANDSHAKE_TIMEOUT_MS",
                self.transport.handshake_timeout,
            ),
            (
                "MARKETING_CONNECTION_IDLE_TIMEOUT_MS",
                self.transport.idle_timeout,
            ),
            (
                "MARKETING_KEEPALIVE_INTERVAL_MS",
                self.transport.keepalive_interval,
            ),
            (
                "MARKETING_KEEPALIVE_TIMEOUT_MS",
                self.transport.keepalive_timeout,
            ),
        ] {
            if value.as_millis() == 0 {
                return Err(invalid(name, "must be positive"));
            }
        }
        let transport = &self.transport;
        for (name, value) in [
            ("MARKETING_MAX_CONNECTIONS", transport.max_connections),
            (
                "MARKETING_MAX_OPEN_SERVICE_CALLS",
                transport.max_open_service_calls,
            ),
            (
                "MARKETING_MAX_CONCURRENT_STREAMS",
                transport.max_concurrent_streams as usize,
            ),
            (
                "MARKETING_MAX_HEADER_LIST_BYTES",
                transport.max_header_list_bytes as usize,
            ),
            (
                "MARKETING_UNSENT_BYTES_PER_CONNECTION",
                transport.unsent_bytes_per_connection,
            ),
            ("MARKETING_UNSENT_BYTES", transport.unsent_bytes),
            (
                "MARKETING_EVENTS_RETENTION_DAYS",
                usize::try_from(self.events_retention_days).unwrap_or(usize::MAX),
            ),
            (
                "MARKETING_EVENTS_STREAM_MAXLEN",
                usize::try_from(self.events_stream_maxlen).unwrap_or(usize::MAX),
            ),
            (
                "MARKETING_EVENT_STREAMS_PER_CLIENT",
                self.event_streams_per_client,
            ),
            ("MARKETING_EVENT_STREAM_BUFFER", self.event_stream_buffer),
        ] {
            if value == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        if self.claim_batch_max == 0 {
            return Err(invalid("MARKETING_CLAIM_BATCH_MAX", "must be at least 1"));
        }
        if self.points_batch_max == 0 {
            return Err(invalid("MARKETING_POINTS_BATCH_MAX", "must be at least 1"));
        }
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (Some(_), None, _) => {
                return Err(invalid(
                    "MARKETING_TLS_KEY",
                    "must be set with MARKETING_TLS_CERT",
                ));
            }
            (None, Some(_), _) => {
                return Err(invalid(
                    "MARKETING_TLS_CERT",
                    "must be set with MARKETING_TLS_KEY",
                ));
            }
            (None, None, Some(_)) => {
                return Err(invalid(
                    "MARKETING_TLS_CLIENT_CA",
                    "needs TLS: set MARKETING_TLS_CERT and MARKETING_TLS_KEY",
                ));
            }
            _ => {}
        }
        if self.local_cache_capacity == 0 {
            return Err(invalid(
                "MARKETING_LOCAL_CACHE_CAPACITY",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The database to use: the configured URL, or the embedded SQLite file.
    /// The mode calls are served in: as configured, else `disabled` on a loopback address
    /// and `required` on any other.
    pub fn effective_auth(&self) -> AuthMode {
        self.auth.unwrap_or(if self.grpc_addr.ip().is_loopback() {
            AuthMode::Disabled
        } else {
            AuthMode::Required
        })
    }

    pub fn effective_database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("marketing.sqlite").display()
            )
        })
    }
}

#[cfg(test)]
mod tests;
