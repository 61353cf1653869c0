//! Load shedding: with every turn taken, a call waits its short while and is refused
//! UNAVAILABLE / OVERLOADED, health still answers, and service is normal once the load ends.
//! And a request message over the size limit is refused with the service's own error.

use std::time::{Duration, Instant};

use marketing_proto::v1 as pb;
use marketing_tests::{TestApp, assert_error};
use sea_orm::{ConnectionTrait, TransactionTrait};
use tonic::Code;

use crate::points::{deduct, earn};

fn missing_template() -> pb::GetCouponTemplateRequest {
    pb::GetCouponTemplateRequest {
        tenant_id: "acme".into(),
        template_id: uuid::Uuid::now_v7().to_string(),
    }
}

async fn a_full_replica_sheds_calls_quickly_and_recovers(app: &TestApp) {
    let mut points = app.points();
    points.earn_points(earn("busy", 100)).await.expect("earn");
    // Another connection holds the account's row: deductions of it wait, each holding a turn.
    let other = sea_orm::Database::connect(app.config.database_url.clone().expect("url"))
        .await
        .expect("another connection");
    let writer = other.begin().await.expect("begin");
    writer
        .execute_unprepared("UPDATE points_accounts SET version = version WHERE member_id = 'busy'")
        .await
        .expect("hold the row");
    let blocked: Vec<_> = (0..2)
        .map(|_| {
            let mut points = app.points();
            tokio::spawn(async move { points.deduct_points(deduct("busy", 1)).await })
        })
        .collect();

    let mut templates = app.templates();
    let shed = Instant::now();
    let refused = loop {
        let started = Instant::now();
        match templates.get_coupon_template(missing_template()).await {
            Err(status) if status.code() == Code::Unavailable => break (status, started.elapsed()),
            Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
            Ok(found) => panic!("{found:?}"),
        }
        assert!(shed.elapsed() < Duration::from_secs(10), "never shed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_error(&refused.0, Code::Unavailable, "OVERLOADED");
    assert!(
        refused.1 < Duration::from_secs(2),
        "shed after {:?}",
        refused.1
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health is never shed");

    writer.rollback().await.expect("let go");
    let _ = other.close().await;
    for call in blocked {
        call.await
            .expect("joined")
            .expect("served once the row is free");
    }
    let after = templates
        .get_coupon_template(missing_template())
        .await
        .expect_err("no such template");
    assert_eq!(after.code(), Code::NotFound, "served normally again");
    let shown = points
        .get_points_account(pb::GetPointsAccountRequest {
            tenant_id: "acme".into(),
            member_id: "busy".into(),
        })
        .await
        .expect("account")
        .into_inner()
        .points_account
        .expect("account");
    assert_eq!(shown.available, 98);
}

async fn a_request_over_the_size_limit_is_refused_before_it_is_read(app: &TestApp) {
    let mut templates = app.templates();
    let mut big = crate::fixtures::template();
    big.description = "x".repeat(100 * 1024);
    let refused = templates
        .create_coupon_template(crate::fixtures::create_request("acme", big))
        .await
        .expect_err("too large");
    assert_error(&refused, Code::ResourceExhausted, "REQUEST_TOO_LARGE");
    let details = tonic_types::StatusExt::get_error_details(&refused);
    assert_eq!(
        details.error_info().expect("ErrorInfo").metadata["limit_bytes"],
        (64 * 1024).to_string()
    );
    // Nothing was created; a request under the limit is served as ever.
    let listed = templates
        .list_coupon_templates(pb::ListCouponTemplatesRequest {
            tenant_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.coupon_templates.is_empty());
    crate::fixtures::create_template(app, "acme", crate::fixtures::template()).await;
}

/// 2,000 calls at once over ten connections, all admitted and all waiting (the database's
/// write lock is held by another connection): the server process's memory stays bounded,
/// and every call is served once the lock is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_waiting_calls_keep_the_process_small() {
    use marketing_proto::v1::points_account_service_client::PointsAccountServiceClient;

    const CALLS: usize = 2_000;
    let server = marketing_tests::ServerProcess::start(&[("MARKETING_MAX_CALLS", "2048")]);
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(server.channel().await);
    }
    let before = server.peak_rss_mib();
    let other = sea_orm::Database::connect(server.embedded_database_url())
        .await
        .expect("the server's database");
    let writer = other.begin().await.expect("begin");
    writer
        .execute_unprepared("UPDATE points_accounts SET version = version WHERE 0")
        .await
        .expect("take the write lock");
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let mut points = PointsAccountServiceClient::new(channels[i % 10].clone());
            tokio::spawn(async move {
                points
                    .earn_points(earn(&format!("crowd-{}", i % 100), 1))
                    .await
            })
        })
        .collect();
    // Once every call has arrived and waits, the server is idle: read the peak then, not
    // after a fixed sleep a loaded machine may outlast.
    server.settled(Duration::from_secs(60)).await;
    let held = server.peak_rss_mib();
    writer.rollback().await.expect("let go");
    let _ = other.close().await;
    let mut served = 0;
    for call in calls {
        match call.await.expect("joined") {
            Ok(_) => served += 1,
            Err(status) => panic!("{status:?}"),
        }
    }
    assert_eq!(served, CALLS);
    println!("peak RSS: {before} MiB before, {held} MiB with {CALLS} calls waiting");
    assert!(held < 256, "{held} MiB with {CALLS} calls waiting");
}

marketing_tests::backend_suite! {
    with marketing_tests::Options {
        max_calls: Some((2, std::time::Duration::from_millis(50))),
        max_request_bytes: Some(64 * 1024),
        ..marketing_tests::Options::default()
    };
    a_full_replica_sheds_calls_quickly_and_recovers,
    a_request_over_the_size_limit_is_refused_before_it_is_read,
}
