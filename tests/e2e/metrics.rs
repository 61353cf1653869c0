//! `GET /metrics`: the gRPC server's metrics under the names operators chart
//! (`grpc_server_started_total`, `grpc_server_handled_total`, `grpc_server_handling_seconds`)
//! and the replica's own counters, moving as calls are made.

use std::net::SocketAddr;

use marketing_proto::v1 as pb;
use marketing_tests::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fixtures::{claim, create_template, template};

marketing_tests::backend_suite!(calls_move_the_metrics_and_unknown_methods_stay_one_series);

/// The endpoint's answer: status line, then the body.
async fn scrape(addr: SocketAddr) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("headers, then a body");
    (head.to_owned(), body.to_owned())
}

/// The value of the sample `series` (name and labels, as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split(' ').next()?.parse().ok())
}

fn method(service: &str, method: &str) -> String {
    format!("grpc_service=\"marketing.v1.{service}\",grpc_method=\"{method}\"")
}

async fn calls_move_the_metrics_and_unknown_methods_stay_one_series(app: &TestApp) {
    let addr = app.metrics_addr.expect("the test server serves /metrics");
    let (head, before) = scrape(addr).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text")
    );

    let created = create_template(app, "acme", template()).await;
    for _ in 0..2 {
        let missing = app
            .templates()
            .get_coupon_template(pb::GetCouponTemplateRequest {
                tenant_id: "acme".into(),
                template_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .expect_err("no such template");
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }
    claim(app, "acme", "m1", &created.id)
        .await
        .expect("claimed");
    app.user_coupons()
        .list_member_coupons(pb::ListMemberCouponsRequest {
            tenant_id: "acme".into(),
            member_id: "m1".into(),
            ..Default::default()
        })
        .await
        .expect("listed");
    // Made-up methods, each a path of its own: one `unknown` series, however many.
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    for i in 0..3 {
        grpc.ready().await.expect("ready");
        let path = format!("/marketing.v1.UserCouponService/Made{i}Up")
            .parse()
            .expect("a path");
        let refused = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("no such method");
        assert_eq!(refused.code(), tonic::Code::Unimplemented);
    }

    let (_, after) = scrape(addr).await;
    let create = method("CouponTemplateService", "CreateCouponTemplate");
    let get = method("CouponTemplateService", "GetCouponTemplate");
    let claim = method("UserCouponService", "ClaimCoupon");
    assert_eq!(
        sample(&after, &format!("grpc_server_started_total{{{create}}}")),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            &format!("grpc_server_handled_total{{{create},grpc_code=\"OK\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            &format!("grpc_server_handled_total{{{get},grpc_code=\"NotFound\"}}")
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &after,
            &format!("grpc_server_handling_seconds_count{{{get}}}")
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &after,
            &format!("grpc_server_handled_total{{{claim},grpc_code=\"OK\"}}")
        ),
        Some(1.0)
    );
    let unknown = "grpc_service=\"unknown\",grpc_method=\"unknown\"";
    assert_eq!(
        sample(
            &after,
            &format!("grpc_server_handled_total{{{unknown},grpc_code=\"Unimplemented\"}}")
        ),
        Some(3.0)
    );
    assert!(
        !after.contains("Made0Up"),
        "a made-up method got a series of its own"
    );
    // The replica's own counters: the claim's batch, and the caches by name.
    let batches = |text: &str| sample(text, "marketing_claim_batches_total").unwrap_or(0.0);
    assert!(batches(&after) >= batches(&before) + 1.0, "{after}");
    assert!(after.contains("marketing_cache_misses_total{cache=\"templates_and_rules\"}"));
    // The template read is held in the cache now.
    assert!(
        sample(
            &after,
            "marketing_cache_entries{cache=\"templates_and_rules\"}"
        )
        .is_some_and(|entries| entries >= 1.0),
        "{after}"
    );
    // The claim's batch in the histograms: its size, duration and wait for the lock.
    for series in [
        "marketing_claim_batch_size_count",
        "marketing_claim_batch_seconds_count",
        "marketing_claim_lock_wait_seconds_count",
    ] {
        assert!(
            sample(&after, series).is_some_and(|n| n >= 1.0),
            "{series}: {after}"
        );
    }
    // What the replica holds open: its pool (8 at most in tests), the test's connection.
    assert_eq!(
        sample(&after, "marketing_db_pool_max_connections"),
        Some(8.0)
    );
    let pool = sample(&after, "marketing_db_pool_connections").expect("the pool's gauge");
    assert!((1.0..=8.0).contains(&pool), "{pool}");
    assert!(sample(&after, "marketing_open_connections").is_some_and(|open| open >= 1.0));
    // The list's freshness check; the outbox and the breaker, as last measured.
    let checks = |text: &str| sample(text, "marketing_stamp_checks_total").unwrap_or(0.0);
    assert!(checks(&after) > checks(&before), "{after}");
    for gauge in [
        "marketing_outbox_unnumbered_events",
        "marketing_outbox_unrelayed_events",
        "marketing_outbox_relay_lag_seconds",
    ] {
        assert!(
            sample(&after, gauge).is_some_and(|value| value >= 0.0),
            "{gauge}: {after}"
        );
    }
    assert_eq!(sample(&after, "marketing_redis_circuit_open"), Some(0.0));
    // No lock lapsed here: no write was fenced off (tests/e2e/claims.rs fences one).
    assert_eq!(
        sample(&after, "marketing_fencing_refusals_total"),
        Some(0.0)
    );
    assert!(after.trim_end().ends_with("# EOF"));
}

/// Statements slower than `MARKETING_SLOW_STATEMENT_MS` are logged with their first words and
/// duration, and a PostgreSQL without autovacuum is warned about at start (this machine's
/// runs with it off; where it is on, no warning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_statements_are_logged_and_autovacuum_off_is_warned_about() {
    let (url, name) = marketing_tests::create_test_database().await;
    // 1 ms: migrating a fresh database has statements slower than that.
    let server = marketing_tests::ServerProcess::start(&[
        ("MARKETING_DATABASE_URL", url.as_str()),
        ("MARKETING_SLOW_STATEMENT_MS", "1"),
    ]);
    let slow = server.log_lines("slow statement");
    assert!(!slow.is_empty(), "no statement logged as slow");
    assert!(
        slow.iter()
            .all(|line| line.contains("elapsed_secs") && line.contains("summary")),
        "{slow:?}"
    );
    let db = sea_orm::Database::connect(url.as_str())
        .await
        .expect("connect");
    let setting: String = sea_orm::ConnectionTrait::query_one_raw(
        &db,
        sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, "SHOW autovacuum"),
    )
    .await
    .expect("SHOW autovacuum")
    .expect("a row")
    .try_get_by_index(0)
    .expect("a setting");
    assert_eq!(
        server.logged("autovacuum off"),
        setting == "off",
        "autovacuum is {setting}"
    );
    drop(db);
    drop(server);
    marketing_tests::drop_test_database(&name).await;
}

/// The sweeper's rounds show on /metrics as they run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweepers_rounds_are_counted() {
    let app = marketing_tests::spawn_app_with(
        marketing_tests::Backend::PostgresRedis,
        marketing_tests::Options {
            sweep_interval: Some(std::time::Duration::from_millis(50)),
            ..marketing_tests::Options::default()
        },
    )
    .await;
    let addr = app.metrics_addr.expect("/metrics");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, text) = scrape(addr).await;
        let rounds = sample(&text, "marketing_sweeps_total").expect("the sweeps counter");
        if rounds >= 3.0 {
            assert_eq!(sample(&text, "marketing_sweep_failures_total"), Some(0.0));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{rounds} rounds in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.stop().await;
}

/// The Grafana dashboard in `deploy/` charts only metrics the server exposes, and Prometheus
/// scrapes the port the compose serves them on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_charts_only_metrics_the_server_exposes() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .join("deploy");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/dashboards/marketing.json"))
            .expect("the dashboard"),
    )
    .expect("JSON");
    let scrape_config =
        std::fs::read_to_string(root.join("prometheus.yml")).expect("the scrape config");
    assert!(scrape_config.contains("port: 9464"), "{scrape_config}");

    let app = marketing_tests::spawn_app(marketing_tests::Backend::PostgresRedis).await;
    let created = create_template(&app, "acme", template()).await;
    claim(&app, "acme", "m1", &created.id)
        .await
        .expect("claimed");
    let (_, text) = scrape(app.metrics_addr.expect("/metrics")).await;
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut charted = 0;
    for target in panels
        .iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
    {
        let expr = target["expr"].as_str().expect("an expression");
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("grpc_server_") || word.starts_with("marketing_"))
        {
            charted += 1;
            assert!(
                text.lines().any(|line| line.starts_with(name)),
                "the dashboard charts {name}, which /metrics does not show"
            );
        }
    }
    assert!(charted >= 20, "{charted} metrics charted");
    app.stop().await;
}

/// Refusals before any service count: a call without a key under required auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refusals_are_counted() {
    let app = marketing_tests::spawn_app_with(
        marketing_tests::Backend::Embedded,
        marketing_tests::Options {
            auth: Some(marketing_server::config::AuthMode::Required),
            ..marketing_tests::Options::default()
        },
    )
    .await;
    let addr = app.metrics_addr.expect("/metrics");
    for _ in 0..2 {
        let refused = app
            .templates()
            .create_coupon_template(crate::fixtures::create_request("acme", template()))
            .await
            .expect_err("no key");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }
    let (_, text) = scrape(addr).await;
    assert_eq!(
        sample(&text, "marketing_auth_refusals_total"),
        Some(2.0),
        "{text}"
    );
    let create = method("CouponTemplateService", "CreateCouponTemplate");
    assert_eq!(
        sample(
            &text,
            &format!("grpc_server_handled_total{{{create},grpc_code=\"Unauthenticated\"}}")
        ),
        Some(2.0)
    );
    assert_eq!(sample(&text, "marketing_overload_sheds_total"), Some(0.0));
    assert_eq!(sample(&text, "marketing_calls_in_progress"), Some(0.0));
    app.stop().await;
}
