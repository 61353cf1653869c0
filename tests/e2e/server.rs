//! The server as operators see it: health, reflection through the real grpcurl binary, the
//! RPCs still to come, and graceful shutdown.

use std::{path::PathBuf, process::Command, time::Duration};

use marketing_tests::{Backend, Options, TestApp, spawn_app_with};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::fixtures::template;

marketing_tests::backend_suite! {
    health_reports_every_service_serving,
}

async fn health(app: &TestApp, service: &str) -> Result<i32, tonic::Status> {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
}

async fn health_reports_every_service_serving(app: &TestApp) {
    for service in [
        "",
        "marketing.v1.CouponTemplateService",
        "marketing.v1.UserCouponService",
        "marketing.v1.PointsAccountService",
    ] {
        assert_eq!(
            health(app, service).await.expect("check"),
            ServingStatus::Serving as i32,
            "{service}"
        );
    }
    let err = health(app, "no.such.Service").await.expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_turns_health_off_then_drains_and_exits() {
    let mut app = spawn_app_with(
        Backend::Embedded,
        Options {
            // Long enough for a busy machine to see the drain; the loop below stops early.
            shutdown_drain_delay: Duration::from_secs(3),
            ..Options::default()
        },
    )
    .await;
    app.begin_shutdown();
    let mut not_serving = false;
    for _ in 0..200 {
        if health(&app, "")
            .await
            .expect("still answering while draining")
            == ServingStatus::NotServing as i32
        {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        not_serving,
        "health turns NOT_SERVING before the server stops"
    );
    // Calls made while draining still complete.
    app.templates()
        .create_coupon_template(crate::fixtures::create_request("acme", template()))
        .await
        .expect("served during the drain delay");
    tokio::time::timeout(Duration::from_secs(10), app.join())
        .await
        .expect("stops after draining")
        .expect("stops cleanly");
}

/// The grpcurl binary: `$GRPCURL`, `.tools/bin/grpcurl` (installed by scripts/test.sh), or PATH.
pub(crate) fn grpcurl() -> PathBuf {
    if let Some(path) = std::env::var_os("GRPCURL") {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/grpcurl");
    if local.exists() {
        return local;
    }
    PathBuf::from("grpcurl")
}

pub(crate) fn run_grpcurl(args: &[&str]) -> String {
    let output = Command::new(grpcurl())
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run grpcurl ({err}): run scripts/test.sh, which installs it")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_through_reflection() {
    let app = marketing_tests::spawn_app(Backend::Embedded).await;
    let addr = app.addr.to_string();
    let services = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || run_grpcurl(&["-plaintext", &addr, "list"])
    })
    .await
    .expect("grpcurl");
    for service in [
        "marketing.v1.CouponTemplateService",
        "marketing.v1.UserCouponService",
        "marketing.v1.PointsAccountService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|line| line == service),
            "{service} missing from {services}"
        );
    }
    let described = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            run_grpcurl(&[
                "-plaintext",
                &addr,
                "describe",
                "marketing.v1.CouponTemplate",
            ])
        }
    })
    .await
    .expect("grpcurl");
    assert!(described.contains("per_member_limit"), "{described}");

    let request = r#"{"tenant_id":"acme","request_id":"grpcurl-1","coupon_template":{"name":"From grpcurl","fixed_amount":{"amount":"500"},"currency":"EUR","total_stock":"10","per_member_limit":1,"distribution_start_time":"2026-01-01T00:00:00Z","distribution_end_time":"2030-01-01T00:00:00Z","fixed_window":{"valid_from":"2026-01-01T00:00:00Z","valid_until":"2030-06-01T00:00:00Z"},"enabled":true}}"#;
    let created = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            run_grpcurl(&[
                "-plaintext",
                "-d",
                request,
                &addr,
                "marketing.v1.CouponTemplateService/CreateCouponTemplate",
            ])
        }
    })
    .await
    .expect("grpcurl");
    assert!(created.contains("\"name\": \"From grpcurl\""), "{created}");
    assert!(created.contains("DISCOUNT_TYPE_FIXED_AMOUNT"), "{created}");

    // Error details decode through reflection too.
    let output = tokio::task::spawn_blocking(move || {
        Command::new(grpcurl())
            .args([
                "-plaintext",
                "-format-error",
                "-d",
                r#"{"tenant_id":"acme"}"#,
                &addr,
            ])
            .arg("marketing.v1.CouponTemplateService/GetCouponTemplate")
            .output()
            .expect("run grpcurl")
    })
    .await
    .expect("grpcurl");
    // grpcurl prints a formatted error on stderr.
    let shown = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(shown.contains("\"reason\":\"INVALID_ARGUMENT\""), "{shown}");
    assert!(shown.contains("\"field\":\"template_id\""), "{shown}");
    app.stop().await;
}

/// `marketing-bench --call`: any RPC by name, found through reflection, its JSON data
/// rendered per call with ghz's template actions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_calls_any_rpc_by_name_through_reflection() {
    let app = marketing_tests::spawn_app(Backend::Embedded).await;
    let addr = app.addr.to_string();
    let data = r#"{"tenant_id":"acme","member_id":"bench-{{.WorkerID}}","request_id":"bench-{{.RequestNumber}}-{{newUUID}}","amount":"10","description":"{{randomString 12}}"}"#;
    let output = tokio::task::spawn_blocking(move || {
        Command::new(marketing_tests::bench_binary())
            .args([
                "--call",
                "marketing.v1.PointsAccountService/EarnPoints",
                "-d",
                data,
                "-m",
                r#"{"x-request-note":"call {{.RequestNumber}}"}"#,
                "--addr",
                &addr,
                "-c",
                "4",
                "-n",
                "40",
                "-O",
                "json",
            ])
            .output()
            .expect("run marketing-bench")
    })
    .await
    .expect("bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("ghz's JSON");
    assert_eq!(report["statusCodeDistribution"]["OK"], 40, "{report}");
    assert_eq!(
        report["options"]["call"],
        "marketing.v1.PointsAccountService/EarnPoints"
    );
    // Forty earns of 10 over the four workers' members, each call its own request id.
    let mut total = 0;
    for worker in 0..4 {
        let account = app
            .points()
            .get_points_account(marketing_proto::v1::GetPointsAccountRequest {
                tenant_id: "acme".into(),
                member_id: format!("bench-{worker}"),
            })
            .await
            .expect("an account per worker")
            .into_inner()
            .points_account
            .expect("account");
        total += account.available;
    }
    assert_eq!(total, 400);

    // A method the server does not serve, or data that is not its request, stops before
    // any call.
    let addr = app.addr.to_string();
    let refused = tokio::task::spawn_blocking(move || {
        Command::new(marketing_tests::bench_binary())
            .args([
                "--call",
                "marketing.v1.PointsAccountService/EarnPoints",
                "-d",
                r#"{"no_such_field":1}"#,
                "--addr",
                &addr,
            ])
            .output()
            .expect("run marketing-bench")
    })
    .await
    .expect("bench");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("EarnPointsRequest"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    app.stop().await;
}
