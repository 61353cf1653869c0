//! Reminders: `coupon.expiring` once per available coupon whose validity ends within
//! `MARKETING_REMINDER_COUPON_DAYS`, `points.expiring` once per lot of points expiring within
//! `MARKETING_REMINDER_POINTS_DAYS`, however often and on however many replicas the sweep
//! runs; nothing for a coupon used meanwhile, or for points spent.

use std::time::Duration;

use marketing_proto::v1 as pb;
use marketing_tests::{Backend, TestApp, spawn_app_with};

use crate::fixtures::{claim_request, create_template, listed_events, template, unique};

const DAY: Duration = Duration::from_secs(86_400);

marketing_tests::backend_suite! {
    // The sweeper stays off: the test moves the clock and sweeps when it means to.
    with marketing_tests::Options {
        sweep_interval: Some(std::time::Duration::from_secs(3600)),
        ..marketing_tests::Options::default()
    };
    reminders_come_once_before_coupons_and_points_expire,
}

fn earn_expiring(tenant: &str, member: &str, amount: i64, in_days: i64) -> pb::EarnPointsRequest {
    let now = crate::fixtures::now_seconds();
    pb::EarnPointsRequest {
        tenant_id: tenant.into(),
        member_id: member.into(),
        request_id: unique("earn"),
        source: Some(pb::earn_points_request::Source::Amount(amount)),
        expire_time: crate::fixtures::at(now + in_days * 86_400),
        ..Default::default()
    }
}

/// `tenant`'s reminders: (type, member, coupon id or lot id).
async fn reminders(app: &TestApp, tenant: &str) -> Vec<(String, String, String)> {
    listed_events(&app.channel, tenant)
        .await
        .into_iter()
        .filter(|e| e.r#type.ends_with(".expiring"))
        .map(|e| {
            let what = match e.payload {
                Some(pb::event::Payload::UserCoupon(coupon)) => {
                    coupon.user_coupon.expect("the coupon").id
                }
                Some(pb::event::Payload::Points(points)) => {
                    let expiring = points.expiring.expect("what expires");
                    assert!(points.transaction.is_none());
                    format!("{} points of lot {}", expiring.points, expiring.lot_id)
                }
                other => panic!("a reminder's payload: {other:?}"),
            };
            assert!(
                e.request_id.is_empty() && e.actor.is_empty(),
                "the server's own"
            );
            (e.r#type, e.member_id, what)
        })
        .collect()
}

async fn reminders_come_once_before_coupons_and_points_expire(app: &TestApp) {
    let coupon_days = app.config.reminder_coupon_days;
    let points_days = app.config.reminder_points_days;
    assert_eq!((coupon_days, points_days), (3, 7), "the defaults");
    // Coupons valid 30 days (the fixture's template); two members in two tenants each.
    let acme = create_template(app, "acme", template()).await;
    let globex = create_template(app, "globex", template()).await;
    let mut coupons = Vec::new();
    for (tenant, template_id) in [("acme", &acme.id), ("globex", &globex.id)] {
        for member in ["m1", "m2"] {
            let coupon = app
                .user_coupons()
                .claim_coupon(claim_request(tenant, member, template_id))
                .await
                .expect("claim")
                .into_inner()
                .user_coupon
                .expect("coupon");
            coupons.push((tenant, member, coupon.id));
        }
    }
    // Points of m1 expiring in 10 days (two lots) and in 60 days; m2's never.
    let mut points = app.points();
    for (amount, days) in [(100, 10), (50, 10), (70, 60)] {
        points
            .earn_points(earn_expiring("acme", "m1", amount, days))
            .await
            .expect("earn");
    }
    let never = pb::EarnPointsRequest {
        expire_time: None,
        ..earn_expiring("acme", "m2", 10, 0)
    };
    points.earn_points(never).await.expect("earn");
    // acme's m2 uses its coupon: no reminder for it.
    app.user_coupons()
        .use_coupon(pb::UseCouponRequest {
            tenant_id: "acme".into(),
            member_id: "m2".into(),
            coupon_id: coupons[1].2.clone(),
            request_id: unique("use"),
            order_id: "o-1".into(),
            amount: 5_000,
            currency: "EUR".into(),
            ..Default::default()
        })
        .await
        .expect("use");

    // Nothing is due yet.
    assert_eq!(
        app.state.events.remind_expiring(2).await.expect("sweep"),
        (0, 0)
    );
    // Four days before the points expire: both lots of 10 days, not the one of 60.
    app.advance_clock(6 * DAY);
    let (_, lots) = app.state.events.remind_expiring(1).await.expect("sweep");
    assert_eq!(lots, 2, "each lot once, in units of one");
    // Two days before the coupons expire: the three still available, in both tenants.
    app.advance_clock(22 * DAY);
    let (reminded, lots) = app.state.events.remind_expiring(2).await.expect("sweep");
    assert_eq!((reminded, lots), (3, 0));
    // Again and again: nothing more.
    for _ in 0..3 {
        assert_eq!(
            app.state.events.remind_expiring(2).await.expect("sweep"),
            (0, 0)
        );
    }
    let acme_reminders = reminders(app, "acme").await;
    let lot_reminders: Vec<_> = acme_reminders
        .iter()
        .filter(|(kind, ..)| kind == "points.expiring")
        .collect();
    assert_eq!(lot_reminders.len(), 2);
    assert!(lot_reminders.iter().all(|(_, member, _)| member == "m1"));
    let mut amounts: Vec<&str> = lot_reminders
        .iter()
        .map(|(.., what)| what.split(' ').next().expect("points"))
        .collect();
    amounts.sort_unstable();
    assert_eq!(amounts, ["100", "50"]);
    let coupon_reminders: Vec<(String, String, String)> = acme_reminders
        .into_iter()
        .filter(|(kind, ..)| kind == "coupon.expiring")
        .collect();
    assert_eq!(
        coupon_reminders,
        [(
            "coupon.expiring".to_owned(),
            "m1".to_owned(),
            coupons[0].2.clone()
        )]
    );
    assert_eq!(
        reminders(app, "globex").await.len(),
        2,
        "globex's m1 and m2"
    );
}

/// Two replicas sweeping at once, many times: each reminder once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sweeping_at_once_remind_once() {
    // The background sweepers run once at start, then stay off.
    let first = spawn_app_with(
        Backend::PostgresRedis,
        marketing_tests::Options {
            sweep_interval: Some(Duration::from_secs(3600)),
            ..marketing_tests::Options::default()
        },
    )
    .await;
    let second = first.spawn_replica().await;
    let mut short = template();
    short.total_stock = 200;
    short.per_member_limit = 1;
    short.validity = Some(pb::coupon_template::Validity::Relative(
        pb::RelativeValidity { valid_days: 2 },
    ));
    let template = create_template(&first, "acme", short).await;
    for n in 0..60 {
        first
            .user_coupons()
            .claim_coupon(claim_request("acme", &format!("m{n}"), &template.id))
            .await
            .expect("claim");
    }
    let sweeps = (0..4).map(|n| {
        let events = if n % 2 == 0 {
            first.state.events.clone()
        } else {
            second.state.events.clone()
        };
        async move {
            let mut reminded = 0;
            for _ in 0..5 {
                reminded += events.remind_expiring(7).await.expect("sweep").0;
            }
            reminded
        }
    });
    let reminded: u64 = futures::future::join_all(sweeps).await.into_iter().sum();
    // (Each server's background sweep runs once as it starts, maybe while the coupons are
    // claimed, and may have reminded of some.)
    assert!(reminded <= 60 && reminded > 0, "{reminded} reminded");
    let listed = reminders(&first, "acme").await;
    assert_eq!(listed.len(), 60);
    let mut coupons: Vec<&String> = listed.iter().map(|(.., coupon)| coupon).collect();
    coupons.sort_unstable();
    coupons.dedup();
    assert_eq!(coupons.len(), 60, "no coupon twice");
    second.stop().await;
    first.stop().await;
}
