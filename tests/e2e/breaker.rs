//! Dependencies that slow down. Redis paused (SIGSTOP: connections stay open, commands wait)
//! trips the breaker after a few timeouts: then calls take their fallbacks without sending
//! anything to Redis, caches serve their local copies for a bounded time, and all of it comes
//! back when Redis does. A call waits for a database connection at most its own deadline.

use std::time::{Duration, Instant};

use marketing_proto::v1 as pb;
use marketing_tests::{Backend, TestApp, TestRedis};
use tonic::Code;

use crate::{
    cache::{listed, stored},
    fixtures::{claim, create_template, template, unique},
    points::earn,
};

/// The breaker's counts now: (timed out or failed, not sent, trips, recoveries).
fn breaker(app: &TestApp) -> (u64, u64, u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = app
        .state
        .shared()
        .redis
        .as_ref()
        .expect("redis")
        .breaker()
        .stats();
    (
        stats.failures.load(Relaxed),
        stats.short_circuited.load(Relaxed),
        stats.trips.load(Relaxed),
        stats.recoveries.load(Relaxed),
    )
}

async fn get_template(app: &TestApp, id: &str) {
    app.templates()
        .get_coupon_template(pb::GetCouponTemplateRequest {
            tenant_id: "acme".into(),
            template_id: id.into(),
        })
        .await
        .expect("get");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_trips_the_breaker_and_calls_go_on_without_it() {
    let redis = TestRedis::start();
    let app = redis.spawn_app().await;
    let created = create_template(
        &app,
        "acme",
        pb::CouponTemplate {
            total_stock: 1_000,
            ..template()
        },
    )
    .await;
    let member = unique("member");
    claim(&app, "acme", &member, &created.id)
        .await
        .expect("claim");
    get_template(&app, &created.id).await;
    listed(&app, &member).await;
    assert_eq!(breaker(&app).2, 0, "closed while Redis answers");

    redis.pause();
    let local_hits = app.state.shared().cache.stats().local_hits;
    // What the calls took, shown (machines here are too noisy for timed assertions).
    let mut rounds = Vec::new();
    for _ in 0..20 {
        let round = Instant::now();
        get_template(&app, &created.id).await;
        claim(&app, "acme", &unique("claimer"), &created.id)
            .await
            .expect("a claim on the database alone");
        assert_eq!(
            listed(&app, &member).await,
            stored(&app, &member).await,
            "lists are read from the database while stamps cannot be checked"
        );
        app.points()
            .earn_points(earn(&member, 100))
            .await
            .expect("earn without the leaderboard");
        rounds.push(round.elapsed());
    }
    let (failures, not_sent, trips, _) = breaker(&app);
    eprintln!(
        "paused Redis: rounds of four calls took {:?} (first) then at most {:?}; \
         {failures} Redis uses timed out or failed, {not_sent} were not sent, {trips} trip(s)",
        rounds[0],
        rounds[1..].iter().max().expect("rounds")
    );
    assert!(trips >= 1, "the breaker opened");
    assert!(
        not_sent > 3 * failures,
        "most uses of Redis did not wait for it: {failures} timed out or failed, {not_sent} were not sent"
    );
    assert!(
        app.state.shared().cache.stats().local_hits > local_hits,
        "the template's local copy was served meanwhile"
    );

    redis.resume();
    // Calls go on; one of them finds a probe due, which closes the breaker in the background.
    let started = Instant::now();
    while breaker(&app).3 == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the breaker closes once Redis answers"
        );
        get_template(&app, &created.id).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lists = app.state.coupons.coupon_lists.clone().expect("list copies");
    let hits = lists.stats().local_hits;
    listed(&app, &member).await;
    assert_eq!(listed(&app, &member).await, stored(&app, &member).await);
    assert!(
        lists.stats().local_hits > hits,
        "lists are served from checked copies again"
    );
    app.stop().await;
}

/// Every database connection held elsewhere: a call that needs one is answered
/// DEADLINE_EXCEEDED at its own deadline, not the pool's longer acquire timeout (UNAVAILABLE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waits_for_a_database_connection_at_most_its_deadline() {
    use sea_orm::TransactionTrait;
    let app = marketing_tests::spawn_app(Backend::PostgresRedis).await;
    let conn = app.state.shared().db.conn();
    let mut held = Vec::new();
    for _ in 0..app.config.db_max_connections {
        held.push(conn.begin().await.expect("a connection"));
    }
    let mut request = tonic::Request::new(pb::GetPointsAccountRequest {
        tenant_id: "acme".into(),
        member_id: unique("member"),
    });
    request.set_timeout(Duration::from_millis(500));
    let refused = app
        .points()
        .get_points_account(request)
        .await
        .expect_err("no connection within the deadline");
    assert_eq!(refused.code(), Code::DeadlineExceeded, "{refused:?}");
    drop(held);
    let answered = app
        .points()
        .get_points_account(pb::GetPointsAccountRequest {
            tenant_id: "acme".into(),
            member_id: unique("member"),
        })
        .await
        .expect_err("a member without an account");
    assert_eq!(
        answered.code(),
        Code::NotFound,
        "the database answers once connections are free: {answered:?}"
    );
    app.stop().await;
}
