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
        (
            vec![("MARKETING_RATE_LIMITS", "claim=5/day")],
            "MARKETING_RATE_LIMITS",
        ),
        (
            vec![("MARKETING_TLS_CERT", "cert.pem")],
            "MARKETING_TLS_KEY",
        ),
        (
            vec![("MARKETING_TLS_CLIENT_CA", "ca.pem")],
            "MARKETING_TLS_CLIENT_CA",
        ),
    ] {
        let err = load(&vars).expect_err("invalid config");
        assert!(err.to_string().starts_with(name), "{err}");
    }
    let missing = load(&[("MARKETING_CONFIG", "/nonexistent/marketing.toml")]);
    assert!(matches!(missing, Err(ConfigError::Read { .. })));
}

#[test]
fn every_setting_is_read_from_its_variable_and_unknown_file_keys_are_refused() {
    let dir = std::env::temp_dir().join(format!("marketing-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("marketing.toml");
    std::fs::write(&file, "claim_timeout_ms = 2500\nclaim_batch_maximum = 3\n").expect("write");
    let err =
        load(&[("MARKETING_CONFIG", file.to_str().expect("utf-8"))]).expect_err("unknown key");
    assert!(err.to_string().starts_with("claim_batch_maximum"), "{err}");
    std::fs::write(&file, "claim_timeout_ms = 2500\n").expect("write");
    let config = load(&[
        ("MARKETING_CONFIG", file.to_str().expect("utf-8")),
        ("MARKETING_POINTS_BATCH_MAX", "64"),
        ("MARKETING_KEEPALIVE_TIMEOUT_MS", "2000"),
        ("MARKETING_REDIS_KEY_PREFIX", "123"),
        ("MARKETING_DATA_DIR", ""),
        ("MARKETING_RATE_LIMITS", "claim=5/s:10, client=100/m"),
    ])
    .expect("valid");
    assert_eq!(
        config.rate_limits.to_string(),
        "claim=5/s:10,client=100/m:100"
    );
    assert_eq!(config.claim_timeout, Duration::from_millis(2500));
    assert_eq!(config.points_batch_max, 64);
    assert_eq!(config.transport.keepalive_timeout, Duration::from_secs(2));
    assert_eq!(config.redis_key_prefix, "123", "text stays text");
    assert_eq!(
        config.data_dir,
        PathBuf::from("data"),
        "empty counts as unset"
    );
    // Debug shows every setting, by its name in the file.
    let shown = format!("{:?}", Config::default());
    for key in Config::keys() {
        assert!(shown.contains(&key), "{key} is shown");
    }
}

#[test]
fn urls_are_redacted() {
    assert_eq!(
        redact("postgres://u:pw@host:5432/db"),
        "postgres://***@host:5432/db"
    );
    assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
}

#[test]
fn the_metrics_endpoint_is_on_loopback_by_default_and_empty_turns_it_off() {
    let default = load(&[]).expect("defaults");
    assert_eq!(
        default.metrics_addr.map(|addr| addr.to_string()).as_deref(),
        Some("127.0.0.1:9464")
    );
    let moved = load(&[("MARKETING_METRICS_ADDR", "0.0.0.0:9500")]).expect("an address");
    assert_eq!(
        moved.metrics_addr.map(|addr| addr.to_string()).as_deref(),
        Some("0.0.0.0:9500")
    );
    let off = load(&[("MARKETING_METRICS_ADDR", "")]).expect("empty");
    assert_eq!(off.metrics_addr, None);
    match load(&[("MARKETING_METRICS_ADDR", "metrics")]) {
        Err(ConfigError::Invalid { name, .. }) => assert_eq!(name, "MARKETING_METRICS_ADDR"),
        other => panic!("not refused: {other:?}"),
    }
}
