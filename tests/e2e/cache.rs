//! Caches across replicas: a template changed on one replica is served by the others within a
//! second, although they had it cached; a member's coupon list changed on one is shown by the
//! others at once.

use std::time::{Duration, Instant};

use marketing_proto::v1::{self as pb, UserCouponState as State};
use marketing_storage::entity::user_coupon;
use marketing_tests::{Backend, Options, TestApp, TestRedis};

use crate::fixtures::{claim, create_template, template, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_reaches_the_others_within_a_second() {
    let app = marketing_tests::spawn_app(Backend::PostgresRedis).await;
    let replica = app.spawn_replica().await;
    let created = create_template(&app, "acme", template()).await;
    let get = pb::GetCouponTemplateRequest {
        tenant_id: "acme".into(),
        template_id: created.id.clone(),
    };
    let mut reader = replica.templates();
    // Warm the replica's own (in-process) level.
    for _ in 0..3 {
        reader.get_coupon_template(get.clone()).await.expect("get");
    }
    assert!(
        replica.state.shared().cache.stats().local_hits > 0,
        "the replica serves from its own level"
    );

    let mut change = created.clone();
    change.name = "Renamed on the other replica".into();
    app.templates()
        .update_coupon_template(pb::UpdateCouponTemplateRequest {
            tenant_id: "acme".into(),
            request_id: unique("rename"),
            coupon_template: Some(change),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .expect("update");
    let changed = Instant::now();
    let mut seen = None;
    while changed.elapsed() < Duration::from_secs(1) {
        let shown = reader
            .get_coupon_template(get.clone())
            .await
            .expect("get")
            .into_inner();
        let shown = shown.coupon_template.expect("template");
        if shown.version == 2 {
            seen = Some(shown);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.expect("the replica serves the new version within a second");
    assert_eq!(seen.name, "Renamed on the other replica");
    assert!(
        replica.state.shared().cache.stats().remote_evictions > 0,
        "the replica heard the eviction"
    );
    replica.stop().await;
    app.stop().await;
}

/// Members' coupon lists are served from each replica's own copy, yet every committed change
/// shows at once on every replica: claims, distributions, transitions and sweeps.
async fn lists_show_every_change_at_once(writer: &TestApp, reader: &TestApp) {
    let created = create_template(
        writer,
        "acme",
        pb::CouponTemplate {
            per_member_limit: 10,
            ..template()
        },
    )
    .await;
    let member = unique("holder");
    let agree = |step: &'static str| {
        let member = member.clone();
        async move {
            let shown = listed(reader, &member).await;
            let stored = stored(reader, &member).await;
            assert_eq!(
                shown, stored,
                "after {step}: the list is what the database holds"
            );
            shown
        }
    };
    assert!(agree("nothing").await.is_empty());
    let mut coupons = Vec::new();
    for _ in 0..2 {
        coupons.push(
            claim(writer, "acme", &member, &created.id)
                .await
                .expect("claim"),
        );
        agree("a claim").await;
    }
    let hits = reader
        .state
        .coupons
        .coupon_lists
        .as_ref()
        .expect("on")
        .stats()
        .local_hits;
    agree("nothing new").await;
    assert!(
        reader
            .state
            .coupons
            .coupon_lists
            .as_ref()
            .expect("on")
            .stats()
            .local_hits
            > hits,
        "an unchanged list is served from the replica's copy"
    );
    let distributed = writer
        .user_coupons()
        .distribute_coupons(pb::DistributeCouponsRequest {
            tenant_id: "acme".into(),
            template_id: created.id.clone(),
            request_id: unique("gift"),
            member_ids: vec![member.clone()],
            allow_partial: false,
        })
        .await
        .expect("distribute")
        .into_inner();
    coupons.push(distributed.results[0].user_coupon.clone().expect("issued"));
    agree("a distribution").await;

    let mut client = writer.user_coupons();
    client
        .lock_coupon(pb::LockCouponRequest {
            tenant_id: "acme".into(),
            member_id: member.clone(),
            coupon_id: coupons[0].id.clone(),
            order_id: "order-1".into(),
            request_id: unique("lock"),
            lock_ttl: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
        })
        .await
        .expect("lock");
    agree("a lock").await;
    client
        .use_coupon(pb::UseCouponRequest {
            tenant_id: "acme".into(),
            member_id: member.clone(),
            coupon_id: coupons[1].id.clone(),
            order_id: "order-2".into(),
            request_id: unique("use"),
            amount: 5000,
            currency: "EUR".into(),
            ..Default::default()
        })
        .await
        .expect("use");
    agree("a use").await;
    client
        .revoke_coupon(pb::RevokeCouponRequest {
            tenant_id: "acme".into(),
            member_id: String::new(),
            coupon_id: coupons[2].id.clone(),
            request_id: unique("revoke"),
            reason: "fraud review".into(),
        })
        .await
        .expect("revoke");
    let shown = agree("a revocation").await;
    assert_eq!(
        shown.iter().map(|(_, state, _)| *state).collect::<Vec<_>>(),
        [State::Revoked, State::Used, State::Locked].map(|s| s as i32)
    );

    // The lock lapses: shown AVAILABLE at once, stored so by the sweep (a new version).
    writer.advance_clock(Duration::from_secs(61));
    assert_eq!(agree("the lock lapsed").await[2].1, State::Available as i32);
    let (unlocked, _) = writer
        .state
        .coupons
        .sweep_coupons(100)
        .await
        .expect("sweep");
    assert_eq!(unlocked, 1, "the one lapsed lock");
    let shown = agree("a sweep").await;
    assert_eq!(shown[2].2, 3, "claimed, locked, swept");
}

/// (id, state, version) of a member's coupons as `ListMemberCoupons` shows them, newest first.
pub(crate) async fn listed(app: &TestApp, member: &str) -> Vec<(String, i32, i64)> {
    app.user_coupons()
        .list_member_coupons(pb::ListMemberCouponsRequest {
            tenant_id: "acme".into(),
            member_id: member.into(),
            page_size: 50,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .user_coupons
        .into_iter()
        .map(|c| (c.id, c.state, c.version))
        .collect()
}

/// The same, read from the database (the state shown at this instant).
pub(crate) async fn stored(app: &TestApp, member: &str) -> Vec<(String, i32, i64)> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    // The server's time, as the test moved it.
    let now = app.state.shared().clock.now().0;
    user_coupon::Entity::find()
        .filter(user_coupon::Column::TenantId.eq("acme"))
        .filter(user_coupon::Column::MemberId.eq(member))
        .order_by_desc(user_coupon::Column::Id)
        .all(app.state.shared().db.conn())
        .await
        .expect("query")
        .into_iter()
        .map(|row| {
            // Stored codes are the proto's; a lapsed lock shows AVAILABLE.
            let state = match row.status {
                2 if row.lock_expires_at.is_some_and(|until| until <= now) => 1,
                status => i32::from(status),
            };
            (row.id.to_string(), state, row.version)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_show_every_change_on_every_replica_at_once() {
    let options = Options {
        // Only the test sweeps.
        sweep_interval: Some(Duration::from_secs(3600)),
        ..Options::default()
    };
    let app = marketing_tests::spawn_app_with(Backend::PostgresRedis, options).await;
    let replica = app.spawn_replica().await;
    lists_show_every_change_at_once(&app, &replica).await;
    replica.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_show_every_change_at_once_embedded() {
    let options = Options {
        sweep_interval: Some(Duration::from_secs(3600)),
        ..Options::default()
    };
    let app = marketing_tests::spawn_app_with(Backend::Embedded, options).await;
    lists_show_every_change_at_once(&app, &app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_read_through_when_redis_is_down() {
    let mut redis = TestRedis::start();
    let app = redis.spawn_app().await;
    let created = create_template(&app, "acme", template()).await;
    let member = unique("holder");
    claim(&app, "acme", &member, &created.id)
        .await
        .expect("claim");
    assert_eq!(listed(&app, &member).await.len(), 1);
    assert_eq!(listed(&app, &member).await.len(), 1);
    redis.stop();
    let second = create_template(&app, "acme", template()).await;
    claim(&app, "acme", &member, &second.id)
        .await
        .expect("claim without Redis");
    assert_eq!(
        listed(&app, &member).await,
        stored(&app, &member).await,
        "without stamps the list is read from the database"
    );
    app.stop().await;
}

/// The replica's one shared Redis connection breaks when Redis restarts; the next commands
/// take a new one, and lists are served from the replica's copies again (an empty Redis has no
/// stamps, so the first read after the restart reads the database and files a new copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_use_their_copies_again_after_redis_restarts() {
    let mut redis = TestRedis::start();
    let app = redis.spawn_app().await;
    let lists = app.state.coupons.coupon_lists.clone().expect("list copies");
    let created = create_template(&app, "acme", template()).await;
    let member = unique("holder");
    claim(&app, "acme", &member, &created.id)
        .await
        .expect("claim");
    listed(&app, &member).await;
    listed(&app, &member).await;
    assert_eq!(
        lists.stats().local_hits,
        1,
        "the second list came from the copy"
    );
    redis.restart();
    let mut served_from_copy = false;
    for _ in 0..50 {
        let before = lists.stats().local_hits;
        assert_eq!(listed(&app, &member).await, stored(&app, &member).await);
        if lists.stats().local_hits > before {
            served_from_copy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        served_from_copy,
        "no list came from a copy after the restart"
    );
    claim(
        &app,
        "acme",
        &member,
        &create_template(&app, "acme", template()).await.id,
    )
    .await
    .expect("claim after the restart");
    assert_eq!(listed(&app, &member).await, stored(&app, &member).await);
    app.stop().await;
}

/// Claims, uses and revocations on one replica race lists on the other; once the writes are
/// answered, the other replica's very next list is what the database holds, for every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_stay_exact_while_writes_race_reads() {
    let options = Options {
        sweep_interval: Some(Duration::from_secs(3600)),
        ..Options::default()
    };
    let app = marketing_tests::spawn_app_with(Backend::PostgresRedis, options).await;
    let replica = app.spawn_replica().await;
    let created = create_template(
        &app,
        "acme",
        pb::CouponTemplate {
            per_member_limit: 20,
            ..template()
        },
    )
    .await;
    let members: Vec<String> = (0..4).map(|_| unique("racer")).collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for member in &members {
        let (member, done, client) = (member.clone(), done.clone(), replica.user_coupons());
        readers.spawn(async move {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .clone()
                    .list_member_coupons(pb::ListMemberCouponsRequest {
                        tenant_id: "acme".into(),
                        member_id: member.clone(),
                        page_size: 50,
                        ..Default::default()
                    })
                    .await
                    .expect("list");
                reads += 1;
            }
            reads
        });
    }
    let mut writers = tokio::task::JoinSet::new();
    for member in &members {
        let (member, id, writer) = (member.clone(), created.id.clone(), app.user_coupons());
        writers.spawn(async move {
            for round in 0..10 {
                let coupon = writer
                    .clone()
                    .claim_coupon(crate::fixtures::claim_request("acme", &member, &id))
                    .await
                    .expect("claim")
                    .into_inner()
                    .user_coupon
                    .expect("coupon");
                if round % 2 == 0 {
                    writer
                        .clone()
                        .revoke_coupon(pb::RevokeCouponRequest {
                            tenant_id: "acme".into(),
                            member_id: String::new(),
                            coupon_id: coupon.id,
                            request_id: unique("revoke"),
                            reason: "race".into(),
                        })
                        .await
                        .expect("revoke");
                }
            }
        });
    }
    while let Some(result) = writers.join_next().await {
        result.expect("writer");
    }
    for member in &members {
        assert_eq!(
            listed(&replica, member).await,
            stored(&replica, member).await
        );
        assert_eq!(listed(&replica, member).await.len(), 10);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut reads = 0;
    while let Some(result) = readers.join_next().await {
        reads += result.expect("reader");
    }
    assert!(reads > 0);
    replica.stop().await;
    app.stop().await;
}

/// A member holding more coupons than a list copy keeps: pages past the copy come from the
/// database, and the whole list still reads newest first, each coupon once.
async fn long_lists_page_past_the_copy(app: &TestApp) {
    let created = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            per_member_limit: 300,
            total_stock: 1000,
            ..template()
        },
    )
    .await;
    let member = unique("collector");
    let mut claims = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (member, id, client) = (member.clone(), created.id.clone(), app.user_coupons());
        claims.spawn(async move {
            for _ in 0..27 {
                client
                    .clone()
                    .claim_coupon(crate::fixtures::claim_request("acme", &member, &id))
                    .await
                    .expect("claim");
            }
        });
    }
    while let Some(result) = claims.join_next().await {
        result.expect("claims");
    }
    let stored = stored(app, &member).await;
    assert_eq!(stored.len(), 216);
    for page_size in [50, 7] {
        let mut request = pb::ListMemberCouponsRequest {
            tenant_id: "acme".into(),
            member_id: member.clone(),
            page_size,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = app
                .user_coupons()
                .list_member_coupons(request.clone())
                .await
                .expect("page")
                .into_inner();
            seen.extend(
                page.user_coupons
                    .into_iter()
                    .map(|c| (c.id, c.state, c.version)),
            );
            if page.next_page_token.is_empty() {
                break;
            }
            request.page_token = page.next_page_token;
        }
        assert_eq!(seen, stored, "pages of {page_size}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lists_page_past_the_copy_postgres_redis() {
    let app = marketing_tests::spawn_app(Backend::PostgresRedis).await;
    long_lists_page_past_the_copy(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lists_page_past_the_copy_embedded() {
    let app = marketing_tests::spawn_app(Backend::Embedded).await;
    long_lists_page_past_the_copy(&app).await;
    app.stop().await;
}
