//! Configuration, layered: built-in defaults, then an optional TOML file (`MARKETING_CONFIG`),
//! then environment variables. Validated once at start-up; secrets (URLs with passwords) are
//! never logged.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

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
    Invalid { name: &'static str, problem: String },
}

fn invalid(name: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        problem: problem.into(),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
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
    pub template_cache_ttl: Duration,
    /// Bound of the in-process cache, in entries.
    pub local_cache_capacity: u64,
    /// Bound of the in-process copies of members' coupon lists, in coupons; 0 turns them off.
    pub coupon_list_cache_capacity: u64,
    /// After health turns NOT_SERVING on shutdown, how long to keep accepting calls so load
    /// balancers notice before the listener closes.
    pub shutdown_drain_delay: Duration,
    pub log_format: LogFormat,
    /// How long one claim batch may hold a template's lock before it lapses by itself.
    pub claim_lock_ttl: Duration,
    /// How long a claim may wait (for the lock, and retrying) unless the client's own
    /// deadline is shorter.
    pub claim_timeout: Duration,
    /// Most claims one locked batch serves.
    pub claim_batch_max: usize,
    /// Most points commands one batch serves.
    pub points_batch_max: usize,
    /// How long `LockCoupon` holds a coupon when the request names no TTL.
    pub coupon_lock_ttl: Duration,
    /// How often the sweepers release lapsed coupon locks and expire coupons.
    pub sweep_interval: Duration,
    /// How long a points hold lives when `FreezePoints` names no TTL.
    pub points_hold_ttl: Duration,
    /// Lifetime of cached points rules.
    pub rule_cache_ttl: Duration,
    /// How long a points write may retry after losing optimistic-version races.
    pub points_timeout: Duration,
    /// How the transport defends itself against hostile or broken clients.
    pub transport: TransportConfig,
}

/// Bounds on what a client's connection may hold of this replica (docs/transport.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Connections this replica serves at once; past it, new ones are closed and logged.
    pub max_connections: usize,
    /// HTTP/2 streams (calls) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Time a new connection has to send the HTTP/2 preface and its settings.
    pub handshake_timeout: Duration,
    /// A connection with no call open for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 pings on every connection this often; one unanswered within
    /// `keepalive_timeout` closes it.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Bytes of request headers a call may send.
    pub max_header_list_bytes: u32,
    /// Bytes of responses that clients have not yet read that one connection, and the whole
    /// replica, may hold; a larger response past them is refused with RESPONSE_BUFFER_FULL.
    pub unsent_bytes_per_connection: usize,
    pub unsent_bytes: usize,
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
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("grpc_addr", &self.grpc_addr)
            .field("database", &self.database_url.as_deref().map(redact))
            .field("data_dir", &self.data_dir)
            .field("db_max_connections", &self.db_max_connections)
            .field("redis", &self.redis_url.as_deref().map(redact))
            .field("redis_pool_size", &self.redis_pool_size)
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("template_cache_ttl", &self.template_cache_ttl)
            .field("local_cache_capacity", &self.local_cache_capacity)
            .field(
                "coupon_list_cache_capacity",
                &self.coupon_list_cache_capacity,
            )
            .field("shutdown_drain_delay", &self.shutdown_drain_delay)
            .field("log_format", &self.log_format)
            .field("claim_lock_ttl", &self.claim_lock_ttl)
            .field("claim_timeout", &self.claim_timeout)
            .field("claim_batch_max", &self.claim_batch_max)
            .field("points_batch_max", &self.points_batch_max)
            .field("coupon_lock_ttl", &self.coupon_lock_ttl)
            .field("sweep_interval", &self.sweep_interval)
            .field("points_hold_ttl", &self.points_hold_ttl)
            .field("rule_cache_ttl", &self.rule_cache_ttl)
            .field("points_timeout", &self.points_timeout)
            .field("transport", &self.transport)
            .finish()
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

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: None,
            data_dir: PathBuf::from("data"),
            db_max_connections: 16,
            redis_url: None,
            redis_pool_size: 32,
            redis_key_prefix: "marketing:".to_owned(),
            template_cache_ttl: Duration::from_secs(600),
            local_cache_capacity: 100_000,
            coupon_list_cache_capacity: 50_000,
            shutdown_drain_delay: Duration::ZERO,
            log_format: LogFormat::Plain,
            claim_lock_ttl: Duration::from_millis(3000),
            claim_timeout: Duration::from_secs(10),
            claim_batch_max: 512,
            points_batch_max: 512,
            coupon_lock_ttl: Duration::from_secs(900),
            sweep_interval: Duration::from_secs(5),
            points_hold_ttl: Duration::from_secs(900),
            rule_cache_ttl: Duration::from_secs(1800),
            points_timeout: Duration::from_secs(10),
            transport: TransportConfig::default(),
        }
    }
}

/// The file layer: every key optional, names as in the environment without `MARKETING_`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLayer {
    grpc_addr: Option<String>,
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    db_max_connections: Option<u32>,
    redis_url: Option<String>,
    redis_pool_size: Option<usize>,
    redis_key_prefix: Option<String>,
    template_cache_ttl_secs: Option<u64>,
    local_cache_capacity: Option<u64>,
    coupon_list_cache_capacity: Option<u64>,
    shutdown_drain_delay_ms: Option<u64>,
    log_format: Option<LogFormat>,
    claim_lock_ttl_ms: Option<u64>,
    claim_timeout_ms: Option<u64>,
    claim_batch_max: Option<usize>,
    points_batch_max: Option<usize>,
    coupon_lock_ttl_secs: Option<u64>,
    sweep_interval_ms: Option<u64>,
    points_hold_ttl_secs: Option<u64>,
    rule_cache_ttl_secs: Option<u64>,
    points_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_concurrent_streams: Option<u32>,
    handshake_timeout_ms: Option<u64>,
    connection_idle_timeout_ms: Option<u64>,
    keepalive_interval_ms: Option<u64>,
    keepalive_timeout_ms: Option<u64>,
    max_header_list_bytes: Option<u32>,
    unsent_bytes_per_connection: Option<usize>,
    unsent_bytes: Option<usize>,
}

impl Config {
    /// Loads from the process environment (and the file it names).
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_sources(|name| std::env::var(name).ok())
    }

    /// Loads from `env` (a lookup of environment variables) and the file it names.
    pub fn from_sources(env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file = match env("MARKETING_CONFIG") {
            Some(path) => {
                let path = PathBuf::from(path);
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse { path, source })?
            }
            None => FileLayer::default(),
        };
        let mut config = Self::default();
        config.apply_file(file)?;
        config.apply_env(&env)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_file(&mut self, file: FileLayer) -> Result<(), ConfigError> {
        if let Some(addr) = file.grpc_addr {
            self.grpc_addr = parse_addr("grpc_addr", &addr)?;
        }
        if file.database_url.is_some() {
            self.database_url = file.database_url;
        }
        if let Some(dir) = file.data_dir {
            self.data_dir = dir;
        }
        if let Some(n) = file.db_max_connections {
            self.db_max_connections = n;
        }
        if file.redis_url.is_some() {
            self.redis_url = file.redis_url;
        }
        if let Some(n) = file.redis_pool_size {
            self.redis_pool_size = n;
        }
        if let Some(prefix) = file.redis_key_prefix {
            self.redis_key_prefix = prefix;
        }
        if let Some(secs) = file.template_cache_ttl_secs {
            self.template_cache_ttl = Duration::from_secs(secs);
        }
        if let Some(n) = file.local_cache_capacity {
            self.local_cache_capacity = n;
        }
        if let Some(n) = file.coupon_list_cache_capacity {
            self.coupon_list_cache_capacity = n;
        }
        if let Some(ms) = file.shutdown_drain_delay_ms {
            self.shutdown_drain_delay = Duration::from_millis(ms);
        }
        if let Some(format) = file.log_format {
            self.log_format = format;
        }
        if let Some(ms) = file.claim_lock_ttl_ms {
            self.claim_lock_ttl = Duration::from_millis(ms);
        }
        if let Some(ms) = file.claim_timeout_ms {
            self.claim_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = file.claim_batch_max {
            self.claim_batch_max = n;
        }
        if let Some(n) = file.points_batch_max {
            self.points_batch_max = n;
        }
        if let Some(secs) = file.coupon_lock_ttl_secs {
            self.coupon_lock_ttl = Duration::from_secs(secs);
        }
        if let Some(ms) = file.sweep_interval_ms {
            self.sweep_interval = Duration::from_millis(ms);
        }
        if let Some(secs) = file.points_hold_ttl_secs {
            self.points_hold_ttl = Duration::from_secs(secs);
        }
        if let Some(secs) = file.rule_cache_ttl_secs {
            self.rule_cache_ttl = Duration::from_secs(secs);
        }
        if let Some(ms) = file.points_timeout_ms {
            self.points_timeout = Duration::from_millis(ms);
        }
        let transport = &mut self.transport;
        let ms = |value: Option<u64>, into: &mut Duration| {
            if let Some(ms) = value {
                *into = Duration::from_millis(ms);
            }
        };
        ms(file.handshake_timeout_ms, &mut transport.handshake_timeout);
        ms(file.connection_idle_timeout_ms, &mut transport.idle_timeout);
        ms(
            file.keepalive_interval_ms,
            &mut transport.keepalive_interval,
        );
        ms(file.keepalive_timeout_ms, &mut transport.keepalive_timeout);
        transport.max_connections = file.max_connections.unwrap_or(transport.max_connections);
        transport.max_concurrent_streams = file
            .max_concurrent_streams
            .unwrap_or(transport.max_concurrent_streams);
        transport.max_header_list_bytes = file
            .max_header_list_bytes
            .unwrap_or(transport.max_header_list_bytes);
        transport.unsent_bytes_per_connection = file
            .unsent_bytes_per_connection
            .unwrap_or(transport.unsent_bytes_per_connection);
        transport.unsent_bytes = file.unsent_bytes.unwrap_or(transport.unsent_bytes);
        Ok(())
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        // The unprefixed names are the conventional ones; the prefixed ones win.
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| env(name).filter(|v| !v.is_empty()))
        };
        if let Some(addr) = var(&["MARKETING_GRPC_ADDR"]) {
            self.grpc_addr = parse_addr("MARKETING_GRPC_ADDR", &addr)?;
        }
        if let Some(url) = var(&["MARKETING_DATABASE_URL", "DATABASE_URL"]) {
            self.database_url = Some(url);
        }
        if let Some(dir) = var(&["MARKETING_DATA_DIR"]) {
            self.data_dir = PathBuf::from(dir);
        }
        if let Some(n) = var(&["MARKETING_DB_MAX_CONNECTIONS"]) {
            self.db_max_connections = parse_number("MARKETING_DB_MAX_CONNECTIONS", &n)?;
        }
        if let Some(url) = var(&["MARKETING_REDIS_URL", "REDIS_URL"]) {
            self.redis_url = Some(url);
        }
        if let Some(n) = var(&["MARKETING_REDIS_POOL_SIZE"]) {
            self.redis_pool_size = parse_number("MARKETING_REDIS_POOL_SIZE", &n)?;
        }
        if let Some(prefix) = var(&["MARKETING_REDIS_KEY_PREFIX"]) {
            self.redis_key_prefix = prefix;
        }
        if let Some(secs) = var(&["MARKETING_TEMPLATE_CACHE_TTL_SECS"]) {
            self.template_cache_ttl =
                Duration::from_secs(parse_number("MARKETING_TEMPLATE_CACHE_TTL_SECS", &secs)?);
        }
        if let Some(n) = var(&["MARKETING_LOCAL_CACHE_CAPACITY"]) {
            self.local_cache_capacity = parse_number("MARKETING_LOCAL_CACHE_CAPACITY", &n)?;
        }
        if let Some(n) = var(&["MARKETING_COUPON_LIST_CACHE_CAPACITY"]) {
            self.coupon_list_cache_capacity =
                parse_number("MARKETING_COUPON_LIST_CACHE_CAPACITY", &n)?;
        }
        if let Some(ms) = var(&["MARKETING_SHUTDOWN_DRAIN_DELAY_MS"]) {
            self.shutdown_drain_delay =
                Duration::from_millis(parse_number("MARKETING_SHUTDOWN_DRAIN_DELAY_MS", &ms)?);
        }
        let millis = |name: &'static str| -> Result<Option<Duration>, ConfigError> {
            var(&[name])
                .map(|v| parse_number(name, &v).map(Duration::from_millis))
                .transpose()
        };
        if let Some(ttl) = millis("MARKETING_CLAIM_LOCK_TTL_MS")? {
            self.claim_lock_ttl = ttl;
        }
        if let Some(timeout) = millis("MARKETING_CLAIM_TIMEOUT_MS")? {
            self.claim_timeout = timeout;
        }
        if let Some(n) = var(&["MARKETING_CLAIM_BATCH_MAX"]) {
            self.claim_batch_max = parse_number("MARKETING_CLAIM_BATCH_MAX", &n)?;
        }
        if let Some(n) = var(&["MARKETING_POINTS_BATCH_MAX"]) {
            self.points_batch_max = parse_number("MARKETING_POINTS_BATCH_MAX", &n)?;
        }
        if let Some(secs) = var(&["MARKETING_COUPON_LOCK_TTL_SECS"]) {
            self.coupon_lock_ttl =
                Duration::from_secs(parse_number("MARKETING_COUPON_LOCK_TTL_SECS", &secs)?);
        }
        if let Some(interval) = millis("MARKETING_SWEEP_INTERVAL_MS")? {
            self.sweep_interval = interval;
        }
        let seconds = |name: &'static str| -> Result<Option<Duration>, ConfigError> {
            var(&[name])
                .map(|v| parse_number(name, &v).map(Duration::from_secs))
                .transpose()
        };
        if let Some(ttl) = seconds("MARKETING_POINTS_HOLD_TTL_SECS")? {
            self.points_hold_ttl = ttl;
        }
        if let Some(ttl) = seconds("MARKETING_RULE_CACHE_TTL_SECS")? {
            self.rule_cache_ttl = ttl;
        }
        if let Some(timeout) = millis("MARKETING_POINTS_TIMEOUT_MS")? {
            self.points_timeout = timeout;
        }
        let transport = &mut self.transport;
        for (name, into) in [
            (
                "MARKETING_HANDSHAKE_TIMEOUT_MS",
                &mut transport.handshake_timeout,
            ),
            (
                "MARKETING_CONNECTION_IDLE_TIMEOUT_MS",
                &mut transport.idle_timeout,
            ),
            (
                "MARKETING_KEEPALIVE_INTERVAL_MS",
                &mut transport.keepalive_interval,
            ),
            (
                "MARKETING_KEEPALIVE_TIMEOUT_MS",
                &mut transport.keepalive_timeout,
            ),
        ] {
            if let Some(value) = millis(name)? {
                *into = value;
            }
        }
        for (name, into) in [
            ("MARKETING_MAX_CONNECTIONS", &mut transport.max_connections),
            (
                "MARKETING_UNSENT_BYTES_PER_CONNECTION",
                &mut transport.unsent_bytes_per_connection,
            ),
            ("MARKETING_UNSENT_BYTES", &mut transport.unsent_bytes),
        ] {
            if let Some(n) = var(&[name]) {
                *into = parse_number(name, &n)?;
            }
        }
        for (name, into) in [
            (
                "MARKETING_MAX_CONCURRENT_STREAMS",
                &mut transport.max_concurrent_streams,
            ),
            (
                "MARKETING_MAX_HEADER_LIST_BYTES",
                &mut transport.max_header_list_bytes,
            ),
        ] {
            if let Some(n) = var(&[name]) {
                *into = parse_number(name, &n)?;
            }
        }
        if let Some(format) = var(&["MARKETING_LOG_FORMAT"]) {
            self.log_format = match format.as_str() {
                "plain" => LogFormat::Plain,
                "json" => LogFormat::Json,
                other => {
                    return Err(invalid(
                        "MARKETING_LOG_FORMAT",
                        format!("{other:?} is not plain or json"),
                    ));
                }
            };
        }
        Ok(())
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
        if self.db_max_connections == 0 {
            return Err(invalid(
                "MARKETING_DB_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        if self.redis_pool_size == 0 {
            return Err(invalid("MARKETING_REDIS_POOL_SIZE", "must be at least 1"));
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
            ("MARKETING_RULE_CACHE_TTL_SECS", self.rule_cache_ttl),
            ("MARKETING_POINTS_TIMEOUT_MS", self.points_timeout),
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
        if self.local_cache_capacity == 0 {
            return Err(invalid(
                "MARKETING_LOCAL_CACHE_CAPACITY",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The database to use: the configured URL, or the embedded SQLite file.
    pub fn effective_database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("marketing.sqlite").display()
            )
        })
    }
}

fn parse_addr(name: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            name,
            format!("{value:?} is not a socket address like 127.0.0.1:50051"),
        )
    })
}

fn parse_number<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            name,
            format!("{value:?} is not a non-negative whole number"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_sources(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_are_the_embedded_mode() {
        let config = load(&[]).expect("defaults are valid");
        assert_eq!(config, Config::default());
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50051");
        assert!(
            config
                .effective_database_url()
                .starts_with("sqlite://data/marketing.sqlite")
        );
        assert!(config.redis_url.is_none());
    }

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("marketing-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("marketing.toml");
        std::fs::write(
            &file,
            "grpc_addr = \"0.0.0.0:6000\"\nredis_pool_size = 7\nlog_format = \"json\"\n\
             coupon_list_cache_capacity = 500\nmax_connections = 300\nunsent_bytes = 1000\n",
        )
        .expect("write config");
        let config = load(&[
            ("MARKETING_CONFIG", file.to_str().expect("utf-8 path")),
            ("MARKETING_GRPC_ADDR", "127.0.0.1:7000"),
            ("DATABASE_URL", "postgres://u:secret@db/marketing"),
            ("MARKETING_COUPON_LIST_CACHE_CAPACITY", "0"),
            ("MARKETING_MAX_CONNECTIONS", "400"),
            ("MARKETING_HANDSHAKE_TIMEOUT_MS", "1500"),
        ])
        .expect("valid");
        assert_eq!(
            config.coupon_list_cache_capacity, 0,
            "0 turns the copies off"
        );
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:7000");
        assert_eq!(config.redis_pool_size, 7);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.transport.max_connections, 400, "env over file");
        assert_eq!(config.transport.unsent_bytes, 1000, "file over default");
        assert_eq!(
            config.transport.handshake_timeout,
            Duration::from_millis(1500)
        );
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (vars, name) in [
            (vec![("MARKETING_GRPC_ADDR", "nope")], "MARKETING_GRPC_ADDR"),
            (
                vec![("DATABASE_URL", "mysql://x")],
                "MARKETING_DATABASE_URL",
            ),
            (vec![("REDIS_URL", "http://x")], "MARKETING_REDIS_URL"),
            (
                vec![("MARKETING_DB_MAX_CONNECTIONS", "0")],
                "MARKETING_DB_MAX_CONNECTIONS",
            ),
            (
                vec![("MARKETING_LOG_FORMAT", "xml")],
                "MARKETING_LOG_FORMAT",
            ),
            (
                vec![("MARKETING_COUPON_LIST_CACHE_CAPACITY", "many")],
                "MARKETING_COUPON_LIST_CACHE_CAPACITY",
            ),
            (
                vec![("MARKETING_MAX_CONNECTIONS", "0")],
                "MARKETING_MAX_CONNECTIONS",
            ),
            (
                vec![("MARKETING_CONNECTION_IDLE_TIMEOUT_MS", "soon")],
                "MARKETING_CONNECTION_IDLE_TIMEOUT_MS",
            ),
        ] {
            let err = load(&vars).expect_err("invalid config");
            assert!(err.to_string().starts_with(name), "{err}");
        }
        let missing = load(&[("MARKETING_CONFIG", "/nonexistent/marketing.toml")]);
        assert!(matches!(missing, Err(ConfigError::Read { .. })));
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("postgres://u:pw@host:5432/db"),
            "postgres://***@host:5432/db"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
