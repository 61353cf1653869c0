//! Events: every change writes its events with it (templates, claims and distributions,
//! coupon transitions, sweeps, points on both stores, rules), a refusal or a replay writes
//! none, readers see one tenant's events in position order, an aggregate's events are its
//! audit trail, and positions follow the order in which changes became visible.

use std::time::Duration;

use marketing_proto::v1 as pb;
use marketing_storage::{
    events::{EventReads, NewEvent},
    unit::UnitOfWork,
};
use marketing_tests::{Backend, TestApp, spawn_app};

use crate::{
    coupons::{give_back, lock, revoke, use_for},
    fixtures::{claim, claim_request, create_template, template, unique},
    points::{confirm, deduct, earn, freeze},
};

marketing_tests::backend_suite! {
    every_change_records_its_events_in_order,
    refusals_and_replays_record_nothing,
    a_tenant_reads_only_its_own_events_and_an_aggregates_trail,
    a_bad_event_query_is_refused_with_every_violation,
    api_clients_created_and_revoked_are_events_of_their_tenants,
}

async fn api_clients_created_and_revoked_are_events_of_their_tenants(app: &TestApp) {
    use marketing_domain::{UnixMicros, auth::Role};
    use marketing_server::app::clients::{create_client, revoke_client};
    let db = &app.state.shared().db;
    let name = unique("till");
    create_client(
        db,
        &name,
        Role::Checkout,
        Some(vec!["acme".into(), "initech".into()]),
        UnixMicros::now(),
    )
    .await
    .expect("create");
    create_client(db, &unique("ops"), Role::Admin, None, UnixMicros::now())
        .await
        .expect("a client of every tenant");
    assert!(
        revoke_client(db, &name, UnixMicros::now())
            .await
            .expect("revoke")
    );
    assert!(
        !revoke_client(db, &name, UnixMicros::now())
            .await
            .expect("twice")
    );
    for tenant in ["acme", "initech"] {
        let read = events(app, tenant, 0, &[]).await;
        assert_eq!(
            types(&read),
            ["api_client.created", "api_client.revoked"],
            "{tenant}"
        );
        for event in &read {
            assert_eq!(
                (event.aggregate_type.as_str(), event.aggregate_id.as_str()),
                ("api_client", name.as_str())
            );
            let Some(pb::event::Payload::ApiClient(client)) = &event.payload else {
                panic!("an API client's payload: {event:?}");
            };
            assert_eq!(client.role, "checkout");
            assert_eq!(client.tenant_ids, ["acme", "initech"]);
            assert_eq!(
                client.revoke_time.is_some(),
                event.r#type == "api_client.revoked"
            );
        }
    }
    assert!(
        events(app, "globex", 0, &[]).await.is_empty(),
        "a tenant the client may not act for"
    );
}

/// `tenant`'s events after `after` of `types` (all when empty).
async fn events(app: &TestApp, tenant: &str, after: i64, types: &[&str]) -> Vec<pb::Event> {
    app.events()
        .list_events(pb::ListEventsRequest {
            tenant_id: tenant.into(),
            after_position: after,
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list events")
        .into_inner()
        .events
}

fn types(events: &[pb::Event]) -> Vec<&str> {
    events.iter().map(|e| e.r#type.as_str()).collect()
}

async fn every_change_records_its_events_in_order(app: &TestApp) {
    let created = create_template(app, "acme", template()).await;
    let mut templates = app.templates();
    for enabled in [false, true] {
        templates
            .set_coupon_template_enabled(pb::SetCouponTemplateEnabledRequest {
                tenant_id: "acme".into(),
                template_id: created.id.clone(),
                request_id: unique("enabled"),
                enabled,
                version: None,
            })
            .await
            .expect("disable, then enable");
    }
    templates
        .add_coupon_stock(pb::AddCouponStockRequest {
            tenant_id: "acme".into(),
            template_id: created.id.clone(),
            request_id: unique("stock"),
            amount: 5,
        })
        .await
        .expect("stock");
    let coupon = claim(app, "acme", "m1", &created.id).await.expect("claim");
    app.user_coupons()
        .distribute_coupons(pb::DistributeCouponsRequest {
            tenant_id: "acme".into(),
            template_id: created.id.clone(),
            request_id: unique("distribute"),
            member_ids: vec!["m2".into(), "m3".into()],
            allow_partial: false,
        })
        .await
        .expect("distribute");
    let mut coupons = app.user_coupons();
    coupons
        .lock_coupon(lock(&coupon, "o-1"))
        .await
        .expect("lock");
    coupons
        .use_coupon(use_for(&coupon, "o-1", 5000))
        .await
        .expect("use");
    coupons
        .return_coupon(give_back(&coupon, "o-1"))
        .await
        .expect("return");
    coupons
        .revoke_coupon(revoke(&coupon))
        .await
        .expect("revoke");
    let mut points = app.points();
    points.earn_points(earn("m1", 100)).await.expect("earn");
    points
        .freeze_points(freeze("m1", 10, "o-2"))
        .await
        .expect("freeze");
    points
        .confirm_frozen_points(confirm("m1", "o-2", None))
        .await
        .expect("confirm");
    points.deduct_points(deduct("m1", 5)).await.expect("deduct");
    templates
        .delete_coupon_template(pb::DeleteCouponTemplateRequest {
            tenant_id: "acme".into(),
            template_id: created.id.clone(),
            request_id: unique("delete"),
            version: None,
        })
        .await
        .expect("archive");

    let all = events(app, "acme", 0, &[]).await;
    assert_eq!(
        types(&all),
        [
            "coupon_template.created",
            "coupon_template.disabled",
            "coupon_template.enabled",
            "coupon_template.stock_added",
            "coupon.claimed",
            "coupon.claimed",
            "coupon.claimed",
            "coupon.locked",
            "coupon.used",
            "coupon.returned",
            "coupon.revoked",
            "points.earned",
            "points.frozen",
            "points.confirmed",
            "points.deducted",
            "coupon_template.archived",
        ]
    );
    assert!(
        all.windows(2).all(|w| w[0].position < w[1].position),
        "positions grow"
    );
    assert!(
        all.iter()
            .all(|e| !e.request_id.is_empty() && e.tenant_id == "acme")
    );
    let Some(pb::event::Payload::CouponTemplate(stock)) = &all[3].payload else {
        panic!("a template's payload: {:?}", all[3]);
    };
    assert_eq!(stock.stock_added, 5);
    assert_eq!(
        stock.coupon_template.as_ref().map(|t| t.total_stock),
        Some(105)
    );
    let channels: Vec<i32> = all[4..7]
        .iter()
        .map(|e| match &e.payload {
            Some(pb::event::Payload::UserCoupon(c)) => c.channel,
            other => panic!("a coupon's payload: {other:?}"),
        })
        .collect();
    assert_eq!(
        channels,
        [
            pb::ClaimChannel::Claim as i32,
            pb::ClaimChannel::Distribution as i32,
            pb::ClaimChannel::Distribution as i32
        ]
    );
    let Some(pb::event::Payload::Points(earned)) = &all[11].payload else {
        panic!("a points payload: {:?}", all[11]);
    };
    let entry = earned.transaction.as_ref().expect("the entry");
    assert_eq!((entry.amount, entry.available_after), (100, 100));
    assert_eq!(
        (all[11].aggregate_type.as_str(), all[11].member_id.as_str()),
        ("points_account", "m1")
    );

    // Reading on from a position: what came after it, nothing before.
    let rest = events(app, "acme", all[10].position, &[]).await;
    assert_eq!(rest, all[11..]);
    let claimed = events(app, "acme", 0, &["coupon.claimed"]).await;
    assert_eq!(claimed, all[4..7]);

    // The sweeper's changes are events too: a lapsed lock, and expiry.
    let other = create_template(app, "acme", template()).await;
    let held = claim(app, "acme", "m4", &other.id).await.expect("claim");
    coupons.lock_coupon(lock(&held, "o-3")).await.expect("lock");
    app.advance_clock(Duration::from_secs(3600));
    app.state.coupons.sweep_coupons(500).await.expect("sweep");
    app.advance_clock(Duration::from_secs(31 * 86_400));
    app.state.coupons.sweep_coupons(500).await.expect("sweep");
    let swept = events(app, "acme", 0, &["coupon.unlocked", "coupon.expired"]).await;
    let held_events: Vec<&str> = swept
        .iter()
        .filter(|e| e.aggregate_id == held.id)
        .map(|e| e.r#type.as_str())
        .collect();
    assert_eq!(held_events, ["coupon.unlocked", "coupon.expired"]);
    assert!(
        swept
            .iter()
            .all(|e| e.request_id.is_empty() && e.actor.is_empty())
    );
}

async fn refusals_and_replays_record_nothing(app: &TestApp) {
    let mut one = template();
    one.total_stock = 1;
    let created = create_template(app, "acme", one).await;
    let first = claim_request("acme", "m1", &created.id);
    app.user_coupons()
        .claim_coupon(first.clone())
        .await
        .expect("claim");
    let before = events(app, "acme", 0, &[]).await;
    // A replay, a claim past the stock, a deduction past the balance, a stale version.
    app.user_coupons()
        .claim_coupon(first)
        .await
        .expect("replay");
    assert!(claim(app, "acme", "m2", &created.id).await.is_err());
    assert!(
        app.points()
            .deduct_points(deduct("m1", 1_000))
            .await
            .is_err()
    );
    assert!(
        app.templates()
            .delete_coupon_template(pb::DeleteCouponTemplateRequest {
                tenant_id: "acme".into(),
                template_id: created.id.clone(),
                request_id: unique("delete"),
                version: Some(99),
            })
            .await
            .is_err()
    );
    assert_eq!(events(app, "acme", 0, &[]).await, before);
}

async fn a_tenant_reads_only_its_own_events_and_an_aggregates_trail(app: &TestApp) {
    let acme = create_template(app, "acme", template()).await;
    let globex = create_template(app, "globex", template()).await;
    let coupon = claim(app, "acme", "m1", &acme.id).await.expect("claim");
    claim(app, "globex", "m1", &globex.id).await.expect("claim");
    app.user_coupons()
        .lock_coupon(lock(&coupon, "o-1"))
        .await
        .expect("lock");
    let theirs = events(app, "globex", 0, &[]).await;
    assert_eq!(
        types(&theirs),
        ["coupon_template.created", "coupon.claimed"]
    );
    assert!(theirs.iter().all(|e| e.tenant_id == "globex"));

    let trail = app
        .events()
        .list_events(pb::ListEventsRequest {
            tenant_id: "acme".into(),
            aggregate_type: "user_coupon".into(),
            aggregate_id: coupon.id.clone(),
            ..Default::default()
        })
        .await
        .expect("trail")
        .into_inner();
    assert_eq!(types(&trail.events), ["coupon.claimed", "coupon.locked"]);
    assert_eq!(trail.last_position, trail.events[1].position);
    // Another tenant naming the coupon reads nothing of it.
    let foreign = app
        .events()
        .list_events(pb::ListEventsRequest {
            tenant_id: "globex".into(),
            aggregate_type: "user_coupon".into(),
            aggregate_id: coupon.id.clone(),
            after_position: 7,
            ..Default::default()
        })
        .await
        .expect("trail")
        .into_inner();
    assert!(foreign.events.is_empty());
    assert_eq!(
        foreign.last_position, 7,
        "nothing read: ask after the same position"
    );
}

async fn a_bad_event_query_is_refused_with_every_violation(app: &TestApp) {
    let status = app
        .events()
        .list_events(pb::ListEventsRequest {
            tenant_id: "bad tenant".into(),
            after_position: -1,
            types: vec!["coupon.claimed".into(), "no.such".into()],
            aggregate_type: "template".into(),
            aggregate_id: "x".into(),
            page_size: 1001,
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_error_details(&status);
    let fields: Vec<&str> = details
        .bad_request()
        .expect("violations")
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "tenant_id",
            "page_size",
            "after_position",
            "types[1]",
            "aggregate_type"
        ]
    );
}

/// The outbox's gap: a change that commits after a later one must not be skipped by a reader
/// that already read past the later one's position. PostgreSQL only: SQLite runs one writer
/// at a time, so no change can commit while an earlier one stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_late_is_read_after_what_was_read_before() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let db = &app.state.shared().db;
    let event = |name: &str| NewEvent {
        tenant_id: marketing_domain::TenantId::parse("tenant_id", "acme").expect("tenant"),
        event_type: "coupon.locked",
        aggregate_type: "user_coupon",
        aggregate_id: name.into(),
        member_id: None,
        occurred_at: marketing_domain::UnixMicros::now(),
        request_id: None,
        actor: None,
        payload: Vec::new(),
    };
    let mut slow = UnitOfWork::begin(db).await.expect("begin");
    slow.record(event("slow"));
    // The slow change's event is written (uncommitted) before the fast one begins.
    let mut fast = UnitOfWork::begin(db).await.expect("begin");
    fast.record(event("fast"));
    fast.commit().await.expect("commit");
    let read = events(&app, "acme", 0, &[]).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].aggregate_id, "fast");
    let passed = read[0].position;

    slow.commit().await.expect("commit");
    let after = events(&app, "acme", passed, &[]).await;
    assert_eq!(after.len(), 1, "the late event comes after what was read");
    assert_eq!(after[0].aggregate_id, "slow");
    assert!(after[0].position > passed);
    assert!(!db.events().any_unnumbered().await.expect("read"));
    app.stop().await;
}
