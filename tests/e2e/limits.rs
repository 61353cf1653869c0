//! Rate limits: a member's claims and earns by rule, and a client's calls, counted per key
//! (shared by every replica through Redis, in process on the embedded backend); a limited
//! call is RESOURCE_EXHAUSTED / RATE_LIMITED with a RetryInfo, writes nothing, and leaves
//! other members and clients alone.

use std::{
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use futures::future::join_all;
use marketing_domain::{UnixMicros, auth::Role};
use marketing_proto::v1 as pb;
use marketing_server::app::clients;
use marketing_tests::{
    Backend, Options, TestApp, TestRedis, assert_error, spawn_app_with, with_key,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::fixtures::{claim_request, create_template, template};

/// The limit these tests run with: 10 a second, 10 at once.
const LIMITS: &str = "claim=10/s:10,earn=10/s:10,client=10/s:10";
const RATE: f64 = 10.0;
const BURST: usize = 10;

/// Asserts `status` is a rate limit whose RetryInfo asks for a wait of at most one period.
#[track_caller]
fn assert_limited(status: &Status) {
    assert_error(status, Code::ResourceExhausted, "RATE_LIMITED");
    let wait = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo in {status:?}"));
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(100),
        "retry after {wait:?}"
    );
}

/// Most calls a GCRA of [`RATE`] and [`BURST`] admits within `elapsed`.
fn most_admitted(elapsed: Duration) -> usize {
    BURST + (RATE * elapsed.as_secs_f64()).ceil() as usize
}

/// How many of `outcomes`, which came within `elapsed`, were admitted; asserts every other
/// is a rate limit and the count lies between the burst and what the limit admits in that
/// time.
#[track_caller]
fn admitted_within<T>(outcomes: &[Result<T, Status>], elapsed: Duration, what: &str) -> usize {
    let admitted = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    for refused in outcomes.iter().filter_map(|outcome| outcome.as_ref().err()) {
        assert_limited(refused);
    }
    assert!(
        (BURST..=most_admitted(elapsed)).contains(&admitted),
        "{admitted} of {} {what} admitted in {elapsed:?}",
        outcomes.len()
    );
    admitted
}

/// A template whose stock and per-member limit leave the rate limit as the only bound.
async fn roomy_template(app: &TestApp) -> pb::CouponTemplate {
    create_template(
        app,
        "acme",
        pb::CouponTemplate {
            total_stock: 1000,
            per_member_limit: 1000,
            ..template()
        },
    )
    .await
}

/// 200 claims by one member at once, over both replicas where there are two (PostgreSQL and
/// Redis: one count in Redis), admit at most the burst plus the rate over the time they took;
/// another member claiming meanwhile is not limited; a limited claim writes nothing.
async fn a_members_claims_are_limited_across_replicas(app: &TestApp) {
    let replica = match app.backend {
        Backend::PostgresRedis => Some(app.spawn_replica().await),
        Backend::Embedded => None,
    };
    let created = roomy_template(app).await;
    let servers: Vec<&TestApp> = std::iter::once(app).chain(replica.as_ref()).collect();
    // Four connections of their own per server, so no connection nears the server's 200
    // streams (a stream opened as another just ended can be refused by the server's count).
    let mut channels = Vec::new();
    for server in &servers {
        channels.extend(server.connections(4).await);
    }
    let started = Instant::now();
    let attempts = (0..200).map(|i| {
        let mut coupons =
            marketing_proto::v1::user_coupon_service_client::UserCouponServiceClient::new(
                channels[i % channels.len()].clone(),
            );
        let request = claim_request("acme", "greedy", &created.id);
        async move { coupons.claim_coupon(request).await }
    });
    let others = (0..5).map(|_| {
        let mut coupons = app.user_coupons();
        let request = claim_request("acme", "patient", &created.id);
        async move { coupons.claim_coupon(request).await }
    });
    let (greedy, patient) = tokio::join!(join_all(attempts), join_all(others));
    let elapsed = started.elapsed();
    let admitted = admitted_within(&greedy, elapsed, "claims");
    eprintln!(
        "{admitted} of 200 claims admitted in {elapsed:?} over {} replica(s)",
        servers.len()
    );
    for outcome in patient {
        outcome.expect("another member is not limited");
    }
    let held = app
        .user_coupons()
        .list_member_coupons(pb::ListMemberCouponsRequest {
            tenant_id: "acme".into(),
            member_id: "greedy".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .user_coupons;
    assert_eq!(
        held.len(),
        admitted,
        "a coupon for every admitted claim only"
    );
    // After a period the member may claim again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.user_coupons()
        .claim_coupon(claim_request("acme", "greedy", &created.id))
        .await
        .expect("admitted again after the wait");
    if let Some(replica) = replica {
        replica.stop().await;
    }
}

fn earn_by_rule(member: &str, event: &str) -> pb::EarnPointsRequest {
    pb::EarnPointsRequest {
        tenant_id: "acme".into(),
        member_id: member.into(),
        request_id: crate::fixtures::unique("earn"),
        source: Some(pb::earn_points_request::Source::EventType(event.into())),
        ..Default::default()
    }
}

/// Earns by rule are limited per member and event; earns of an explicit amount are not.
async fn earns_by_rule_are_limited_per_member_and_event(app: &TestApp) {
    let mut points = app.points();
    for event in ["signup", "review"] {
        points
            .create_points_rule(pb::CreatePointsRuleRequest {
                tenant_id: "acme".into(),
                request_id: crate::fixtures::unique("rule"),
                points_rule: Some(pb::PointsRule {
                    event_type: event.into(),
                    points: 5,
                    enabled: true,
                    ..Default::default()
                }),
            })
            .await
            .expect("create rule");
    }
    let started = Instant::now();
    let outcomes = join_all((0..40).map(|_| {
        let mut points = app.points();
        async move { points.earn_points(earn_by_rule("m1", "signup")).await }
    }))
    .await;
    let admitted = admitted_within(&outcomes, started.elapsed(), "earns");
    // Another event of the same member, and an explicit amount, are counted apart (or not at
    // all).
    points
        .earn_points(earn_by_rule("m1", "review"))
        .await
        .expect("another event");
    for _ in 0..(BURST + 5) {
        points
            .earn_points(pb::EarnPointsRequest {
                source: Some(pb::earn_points_request::Source::Amount(1)),
                ..earn_by_rule("m1", "")
            })
            .await
            .expect("explicit amounts are not limited");
    }
    let account = points
        .get_points_account(pb::GetPointsAccountRequest {
            tenant_id: "acme".into(),
            member_id: "m1".into(),
        })
        .await
        .expect("account")
        .into_inner()
        .points_account
        .expect("account");
    let expected = 5 * (admitted as i64 + 1) + (BURST as i64 + 5);
    assert_eq!(account.available, expected, "refused earns wrote nothing");
}

/// A client's calls are limited as a whole, whatever they call; another client is not.
async fn a_clients_calls_are_limited(app: &TestApp) {
    let mut keys = Vec::new();
    for name in ["busy-reader", "quiet-reader"] {
        let key = clients::create_client(
            &app.state.shared().db,
            name,
            Role::Reader,
            None,
            UnixMicros::now(),
        )
        .await
        .expect("client")
        .key;
        keys.push(key);
    }
    let started = Instant::now();
    let outcomes = join_all((0..60).map(|i| {
        let mut points = app.points();
        let request = with_key(
            pb::GetPointsAccountRequest {
                tenant_id: "acme".into(),
                member_id: format!("m{i}"),
            },
            &keys[0],
        );
        async move { points.get_points_account(request).await }
    }))
    .await;
    let elapsed = started.elapsed();
    let mut admitted = 0;
    for outcome in &outcomes {
        match outcome {
            // Admitted calls find no account: the limit came first.
            Err(status) if status.code() == Code::NotFound => admitted += 1,
            Err(status) => assert_limited(status),
            Ok(_) => panic!("no account exists"),
        }
    }
    assert!(
        (BURST..=most_admitted(elapsed)).contains(&admitted),
        "{admitted} of 60 calls admitted in {elapsed:?}"
    );
    let other = app
        .points()
        .get_points_account(with_key(
            pb::GetPointsAccountRequest {
                tenant_id: "acme".into(),
                member_id: "m1".into(),
            },
            &keys[1],
        ))
        .await
        .expect_err("no account");
    assert_eq!(
        other.code(),
        Code::NotFound,
        "another client is not limited"
    );
}

/// With Redis down, each replica keeps limiting on its own (and counts that it did): claims
/// past the burst are still RATE_LIMITED, never admitted for want of Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_in_each_replica_while_redis_is_down() {
    let mut redis = TestRedis::start();
    let app = spawn_app_with(
        Backend::PostgresRedis,
        Options {
            redis_url: Some(redis.url.clone()),
            rate_limits: Some(LIMITS),
            ..Options::default()
        },
    )
    .await;
    let created = roomy_template(&app).await;
    redis.stop();
    let started = Instant::now();
    let outcomes = join_all((0..40).map(|_| {
        let mut coupons = app.user_coupons();
        let request = claim_request("acme", "greedy", &created.id);
        async move { coupons.claim_coupon(request).await }
    }))
    .await;
    admitted_within(&outcomes, started.elapsed(), "claims with Redis down");
    assert!(
        app.state.shared().metrics.local_rate_limits.load(Relaxed) >= 40,
        "every check was counted locally"
    );
    app.stop().await;
}

marketing_tests::backend_suite! {
    with marketing_tests::Options {
        rate_limits: Some(crate::limits::LIMITS),
        ..marketing_tests::Options::default()
    };
    a_members_claims_are_limited_across_replicas,
    earns_by_rule_are_limited_per_member_and_event,
}

mod clients_limited {
    use super::*;

    marketing_tests::backend_suite! {
        with marketing_tests::Options {
            rate_limits: Some(crate::limits::LIMITS),
            auth: Some(marketing_server::config::AuthMode::Required),
            ..marketing_tests::Options::default()
        };
        a_clients_calls_are_limited,
    }
}
