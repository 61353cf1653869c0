//! The coupon lifecycle: every transition and its refusals, replays, the checkout dry run,
//! lock timeouts and expiry (before and after the sweepers), listing, and isolation.

use std::time::Duration;

use marketing_proto::v1::{self as pb, UserCouponState as State};
use marketing_storage::entity::user_coupon;
use marketing_tests::{TestApp, assert_error, assert_invalid};
use sea_orm::EntityTrait;
use tonic::Code;

use crate::fixtures::{at, claim, create_template, now_seconds, template, unique};

marketing_tests::backend_suite! {
    // The sweeper stays off: the tests move the clock and sweep when they mean to.
    with marketing_tests::Options {
        sweep_interval: Some(std::time::Duration::from_secs(3600)),
        ..marketing_tests::Options::default()
    };
    a_coupon_goes_through_its_whole_life,
    wrong_transitions_are_refused,
    transitions_are_idempotent,
    validation_explains_every_problem,
    lapsed_locks_free_the_coupon,
    coupons_expire_before_and_after_the_sweep,
    members_list_their_coupons_newest_first,
    coupons_of_others_are_not_found,
    a_return_after_validity_expires_the_coupon,
    racing_orders_use_a_coupon_once,
}

/// A fixed 5.00 EUR coupon for orders from 20.00 EUR.
fn five_off() -> pb::CouponTemplate {
    pb::CouponTemplate {
        discount: Some(pb::coupon_template::Discount::FixedAmount(
            pb::FixedAmountDiscount {
                amount: 500,
                ..Default::default()
            },
        )),
        ..template()
    }
}

async fn claimed_coupon(
    app: &TestApp,
    member: &str,
    template: pb::CouponTemplate,
) -> (pb::CouponTemplate, pb::UserCoupon) {
    let created = create_template(app, "acme", template).await;
    let coupon = claim(app, "acme", member, &created.id)
        .await
        .expect("claim");
    (created, coupon)
}

pub(crate) fn lock(coupon: &pb::UserCoupon, order: &str) -> pb::LockCouponRequest {
    pb::LockCouponRequest {
        tenant_id: "acme".into(),
        member_id: coupon.member_id.clone(),
        coupon_id: coupon.id.clone(),
        order_id: order.into(),
        request_id: unique("lock"),
        lock_ttl: None,
    }
}

pub(crate) fn use_for(coupon: &pb::UserCoupon, order: &str, amount: i64) -> pb::UseCouponRequest {
    pb::UseCouponRequest {
        tenant_id: "acme".into(),
        member_id: coupon.member_id.clone(),
        coupon_id: coupon.id.clone(),
        order_id: order.into(),
        request_id: unique("use"),
        amount,
        currency: "EUR".into(),
        ..Default::default()
    }
}

fn release(coupon: &pb::UserCoupon, order: &str) -> pb::ReleaseCouponRequest {
    pb::ReleaseCouponRequest {
        tenant_id: "acme".into(),
        member_id: coupon.member_id.clone(),
        coupon_id: coupon.id.clone(),
        order_id: order.into(),
        request_id: unique("release"),
    }
}

pub(crate) fn give_back(coupon: &pb::UserCoupon, order: &str) -> pb::ReturnCouponRequest {
    pb::ReturnCouponRequest {
        tenant_id: "acme".into(),
        member_id: coupon.member_id.clone(),
        coupon_id: coupon.id.clone(),
        order_id: order.into(),
        request_id: unique("return"),
    }
}

pub(crate) fn revoke(coupon: &pb::UserCoupon) -> pb::RevokeCouponRequest {
    pb::RevokeCouponRequest {
        tenant_id: "acme".into(),
        coupon_id: coupon.id.clone(),
        request_id: unique("revoke"),
        member_id: String::new(),
        reason: "fraud review".into(),
    }
}

async fn get(app: &TestApp, coupon: &pb::UserCoupon) -> pb::UserCoupon {
    app.user_coupons()
        .get_user_coupon(pb::GetUserCouponRequest {
            tenant_id: "acme".into(),
            coupon_id: coupon.id.clone(),
            member_id: coupon.member_id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .user_coupon
        .expect("coupon")
}

async fn used_count(app: &TestApp, template_id: &str) -> i64 {
    app.templates()
        .get_coupon_template(pb::GetCouponTemplateRequest {
            tenant_id: "acme".into(),
            template_id: template_id.into(),
        })
        .await
        .expect("get")
        .into_inner()
        .coupon_template
        .expect("template")
        .used_count
}

fn state(coupon: &pb::UserCoupon) -> State {
    State::try_from(coupon.state).expect("known state")
}

async fn a_coupon_goes_through_its_whole_life(app: &TestApp) {
    let (created, coupon) = claimed_coupon(app, "m1", five_off()).await;
    assert_eq!(state(&coupon), State::Available);
    let mut client = app.user_coupons();

    let locked = client
        .lock_coupon(lock(&coupon, "order-1"))
        .await
        .expect("lock")
        .into_inner()
        .user_coupon
        .expect("c");
    assert_eq!(
        (state(&locked), locked.order_id.as_str()),
        (State::Locked, "order-1")
    );
    assert!(locked.lock_expire_time.is_some());

    let released = client
        .release_coupon(release(&coupon, "order-1"))
        .await
        .expect("release")
        .into_inner();
    assert_eq!(state(&released.user_coupon.expect("c")), State::Available);

    client
        .lock_coupon(lock(&coupon, "order-2"))
        .await
        .expect("lock again");
    let used = client
        .use_coupon(use_for(&coupon, "order-2", 3000))
        .await
        .expect("use")
        .into_inner()
        .user_coupon
        .expect("c");
    assert_eq!(state(&used), State::Used);
    assert_eq!((used.order_amount, used.discount_amount), (3000, 500));
    assert_eq!(used_count(app, &created.id).await, 1);

    let returned = client
        .return_coupon(give_back(&coupon, "order-2"))
        .await
        .expect("return")
        .into_inner();
    assert_eq!(state(&returned.user_coupon.expect("c")), State::Available);
    assert_eq!(used_count(app, &created.id).await, 0);

    // Used directly, without a lock; capped at the order amount.
    let no_minimum = pb::CouponTemplate {
        min_spend_amount: 0,
        ..five_off()
    };
    let (_, cheap) = claimed_coupon(app, "m2", no_minimum).await;
    let used = client
        .use_coupon(use_for(&cheap, "order-3", 300))
        .await
        .expect("use")
        .into_inner()
        .user_coupon
        .expect("c");
    assert_eq!(
        (used.order_amount, used.discount_amount),
        (300, 300),
        "5.00 off a 3.00 order is 3.00"
    );
    // 10% off, at most 5.00: below the cap, and at it.
    for (order, amount, discount) in [("order-4", 3000, 300), ("order-5", 10_000, 500)] {
        let (_, percent) = claimed_coupon(app, "m2", template()).await;
        let used = client
            .use_coupon(use_for(&percent, order, amount))
            .await
            .expect("use")
            .into_inner()
            .user_coupon
            .expect("c");
        assert_eq!(used.discount_amount, discount, "10% of {amount}");
    }

    let revoked = client
        .revoke_coupon(revoke(&coupon))
        .await
        .expect("revoke")
        .into_inner()
        .user_coupon
        .expect("c");
    assert_eq!(
        (state(&revoked), revoked.revoke_reason.as_str()),
        (State::Revoked, "fraud review")
    );
    assert_eq!(state(&get(app, &coupon).await), State::Revoked);
}

async fn wrong_transitions_are_refused(app: &TestApp) {
    let (_, coupon) = claimed_coupon(app, "m1", five_off()).await;
    let mut client = app.user_coupons();
    let err = client
        .release_coupon(release(&coupon, "order-1"))
        .await
        .expect_err("not locked");
    assert_error(&err, Code::FailedPrecondition, "INVALID_COUPON_STATE");
    let err = client
        .return_coupon(give_back(&coupon, "order-1"))
        .await
        .expect_err("not used");
    assert_error(&err, Code::FailedPrecondition, "INVALID_COUPON_STATE");

    client
        .lock_coupon(lock(&coupon, "order-1"))
        .await
        .expect("lock");
    let err = client
        .lock_coupon(lock(&coupon, "order-2"))
        .await
        .expect_err("locked by another order");
    assert_error(&err, Code::FailedPrecondition, "INVALID_COUPON_STATE");
    let err = client
        .use_coupon(use_for(&coupon, "order-2", 5000))
        .await
        .expect_err("another order");
    assert_error(&err, Code::FailedPrecondition, "INVALID_COUPON_STATE");
    let err = client
        .release_coupon(release(&coupon, "order-2"))
        .await
        .expect_err("another order");
    assert_error(&err, Code::FailedPrecondition, "ORDER_MISMATCH");

    let err = client
        .use_coupon(use_for(&coupon, "order-1", 1999))
        .await
        .expect_err("below minimum");
    assert_error(&err, Code::FailedPrecondition, "MIN_SPEND_NOT_MET");
    let mut dollars = use_for(&coupon, "order-1", 5000);
    dollars.currency = "USD".into();
    let err = client.use_coupon(dollars).await.expect_err("currency");
    assert_error(&err, Code::FailedPrecondition, "CURRENCY_MISMATCH");

    client
        .use_coupon(use_for(&coupon, "order-1", 5000))
        .await
        .expect("use");
    let err = client
        .revoke_coupon(revoke(&coupon))
        .await
        .expect_err("used");
    assert_error(&err, Code::FailedPrecondition, "INVALID_COUPON_STATE");
    let err = client
        .return_coupon(give_back(&coupon, "order-9"))
        .await
        .expect_err("other order");
    assert_error(&err, Code::FailedPrecondition, "ORDER_MISMATCH");
    let err = client
        .use_coupon(use_for(&coupon, "order-1", 5000))
        .await
        .expect_err("used twice");
    assert_error(&err, Code::FailedPrecondition, "INVALID_COUPON_STATE");

    let err = client
        .use_coupon(pb::UseCouponRequest {
            amount: -1,
            currency: "eur".into(),
            order_id: String::new(),
            ..use_for(&coupon, "x", 0)
        })
        .await
        .expect_err("bad input");
    assert_invalid(&err, &["amount", "currency", "order_id"]);
    let err = client
        .lock_coupon(pb::LockCouponRequest {
            lock_ttl: Some(prost_types::Duration {
                seconds: 0,
                nanos: 5,
            }),
            coupon_id: String::new(),
            ..lock(&coupon, "o")
        })
        .await
        .expect_err("bad input");
    assert_invalid(&err, &["lock_ttl", "coupon_id"]);
}

async fn transitions_are_idempotent(app: &TestApp) {
    let (created, coupon) = claimed_coupon(app, "m1", five_off()).await;
    let mut client = app.user_coupons();
    let request = use_for(&coupon, "order-1", 4000);
    let first = client
        .use_coupon(request.clone())
        .await
        .expect("use")
        .into_inner();
    let again = client
        .use_coupon(request.clone())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(
        used_count(app, &created.id).await,
        1,
        "a replay changes nothing"
    );
    let mut changed = request;
    changed.amount = 4500;
    let err = client.use_coupon(changed).await.expect_err("reused");
    assert_error(&err, Code::InvalidArgument, "REQUEST_ID_REUSED");

    let back = give_back(&coupon, "order-1");
    let returned = client
        .return_coupon(back.clone())
        .await
        .expect("return")
        .into_inner();
    let again = client
        .return_coupon(back)
        .await
        .expect("return replay")
        .into_inner();
    assert_eq!(returned, again, "a replayed return answers as the first");
    assert_eq!(used_count(app, &created.id).await, 0);
}

async fn validation_explains_every_problem(app: &TestApp) {
    let (_, coupon) = claimed_coupon(app, "m1", five_off()).await;
    let mut client = app.user_coupons();
    let validate = |amount: i64, currency: &str, order: &str| pb::ValidateCouponRequest {
        tenant_id: "acme".into(),
        member_id: "m1".into(),
        coupon_id: coupon.id.clone(),
        amount,
        currency: currency.into(),
        order_id: order.into(),
    };
    let fine = client
        .validate_coupon(validate(2500, "EUR", ""))
        .await
        .expect("validate")
        .into_inner();
    assert!(fine.usable);
    assert_eq!(fine.discount_amount, 500);
    assert!(fine.failures.is_empty());

    let bad = client
        .validate_coupon(validate(100, "USD", ""))
        .await
        .expect("validate")
        .into_inner();
    assert!(!bad.usable);
    assert_eq!(bad.discount_amount, 0);
    let reasons: Vec<&str> = bad.failures.iter().map(|f| f.reason.as_str()).collect();
    assert_eq!(reasons, ["CURRENCY_MISMATCH", "MIN_SPEND_NOT_MET"]);

    client
        .lock_coupon(lock(&coupon, "order-1"))
        .await
        .expect("lock");
    let for_lock_holder = client
        .validate_coupon(validate(2500, "EUR", "order-1"))
        .await
        .expect("ok")
        .into_inner();
    assert!(for_lock_holder.usable);
    let for_others = client
        .validate_coupon(validate(2500, "EUR", "order-2"))
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(for_others.failures[0].reason, "INVALID_COUPON_STATE");
    assert_eq!(
        state(&get(app, &coupon).await),
        State::Locked,
        "validation writes nothing"
    );
}

async fn lapsed_locks_free_the_coupon(app: &TestApp) {
    let (_, coupon) = claimed_coupon(app, "m1", five_off()).await;
    let mut client = app.user_coupons();
    client
        .lock_coupon(pb::LockCouponRequest {
            lock_ttl: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            ..lock(&coupon, "order-1")
        })
        .await
        .expect("lock");
    app.advance_clock(Duration::from_secs(61));
    // Shown AVAILABLE at once, while still stored LOCKED; stored AVAILABLE by the sweep.
    let shown = get(app, &coupon).await;
    assert_eq!(
        (state(&shown), shown.order_id.as_str()),
        (State::Available, "")
    );
    assert_eq!(
        stored_status(app, &coupon).await,
        2,
        "stored LOCKED until the sweep"
    );
    let (unlocked, _) = app.state.coupons.sweep_coupons(100).await.expect("sweep");
    assert_eq!(unlocked, 1);
    assert_eq!(
        stored_status(app, &coupon).await,
        1,
        "the sweep released the lock"
    );
    client
        .lock_coupon(lock(&coupon, "order-2"))
        .await
        .expect("another order can lock it");
}

async fn coupons_expire_before_and_after_the_sweep(app: &TestApp) {
    let now = now_seconds();
    let (_, coupon) = claimed_coupon(
        app,
        "m1",
        pb::CouponTemplate {
            validity: Some(pb::coupon_template::Validity::FixedWindow(
                pb::FixedValidityWindow {
                    valid_from: at(now - 60),
                    valid_until: at(now + 60),
                },
            )),
            ..five_off()
        },
    )
    .await;
    // Until the sweep stores it, readers already see EXPIRED.
    app.advance_clock(Duration::from_secs(61));
    assert_eq!(state(&get(app, &coupon).await), State::Expired);
    assert_eq!(
        stored_status(app, &coupon).await,
        1,
        "stored AVAILABLE until the sweep"
    );
    let mut client = app.user_coupons();
    let err = client
        .use_coupon(use_for(&coupon, "order-1", 5000))
        .await
        .expect_err("expired");
    assert_error(&err, Code::FailedPrecondition, "COUPON_EXPIRED");
    let listed = client
        .list_member_coupons(pb::ListMemberCouponsRequest {
            tenant_id: "acme".into(),
            member_id: "m1".into(),
            states: vec![State::Expired as i32],
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.user_coupons.len(), 1);
    let (_, expired) = app.state.coupons.sweep_coupons(100).await.expect("sweep");
    assert_eq!(expired, 1);
    assert_eq!(
        stored_status(app, &coupon).await,
        4,
        "the sweep stored EXPIRED"
    );
}

/// The coupon's status as stored (1 available, 2 locked, 3 used, 4 expired, 5 revoked).
async fn stored_status(app: &TestApp, coupon: &pb::UserCoupon) -> i16 {
    let id = uuid::Uuid::parse_str(&coupon.id).expect("uuid");
    user_coupon::Entity::find_by_id(id)
        .one(app.state.shared().db.conn())
        .await
        .expect("query")
        .expect("row")
        .status
}

async fn members_list_their_coupons_newest_first(app: &TestApp) {
    let created = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            per_member_limit: 5,
            ..five_off()
        },
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            claim(app, "acme", "m1", &created.id)
                .await
                .expect("claim")
                .id,
        );
    }
    claim(app, "acme", "m2", &created.id)
        .await
        .expect("someone else's");
    let mut client = app.user_coupons();
    let used = pb::UserCoupon {
        id: ids[1].clone(),
        member_id: "m1".into(),
        ..Default::default()
    };
    client
        .use_coupon(use_for(&used, "order-1", 5000))
        .await
        .expect("use");

    let mut request = pb::ListMemberCouponsRequest {
        tenant_id: "acme".into(),
        member_id: "m1".into(),
        page_size: 2,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = client
            .list_member_coupons(request.clone())
            .await
            .expect("page")
            .into_inner();
        assert!(page.user_coupons.len() <= 2);
        seen.extend(page.user_coupons.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");

    let available = client
        .list_member_coupons(pb::ListMemberCouponsRequest {
            states: vec![State::Available as i32],
            page_size: 10,
            page_token: String::new(),
            ..request.clone()
        })
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(available.user_coupons.len(), 4);
    let used_only = client
        .list_member_coupons(pb::ListMemberCouponsRequest {
            states: vec![State::Used as i32],
            page_size: 10,
            page_token: String::new(),
            ..request.clone()
        })
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(
        used_only
            .user_coupons
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        [ids[3].as_str()]
    );
    let err = client
        .list_member_coupons(pb::ListMemberCouponsRequest {
            states: vec![0, 42],
            page_size: 10,
            page_token: String::new(),
            ..request
        })
        .await
        .expect_err("bad states");
    assert_invalid(&err, &["states[0]", "states[1]"]);
}

async fn coupons_of_others_are_not_found(app: &TestApp) {
    let (_, coupon) = claimed_coupon(app, "m1", five_off()).await;
    let mut client = app.user_coupons();
    let err = client
        .get_user_coupon(pb::GetUserCouponRequest {
            tenant_id: "globex".into(),
            coupon_id: coupon.id.clone(),
            member_id: String::new(),
        })
        .await
        .expect_err("other tenant");
    assert_error(&err, Code::NotFound, "COUPON_NOT_FOUND");
    let mut theirs = lock(&coupon, "order-1");
    theirs.member_id = "m2".into();
    let err = client.lock_coupon(theirs).await.expect_err("other member");
    assert_error(&err, Code::NotFound, "COUPON_NOT_FOUND");
    let mut foreign = revoke(&coupon);
    foreign.tenant_id = "globex".into();
    let err = client
        .revoke_coupon(foreign)
        .await
        .expect_err("other tenant");
    assert_error(&err, Code::NotFound, "COUPON_NOT_FOUND");
    assert_eq!(state(&get(app, &coupon).await), State::Available);
}

async fn a_return_after_validity_expires_the_coupon(app: &TestApp) {
    let now = now_seconds();
    let (created, coupon) = claimed_coupon(
        app,
        "m1",
        pb::CouponTemplate {
            validity: Some(pb::coupon_template::Validity::FixedWindow(
                pb::FixedValidityWindow {
                    valid_from: at(now - 60),
                    valid_until: at(now + 60),
                },
            )),
            ..five_off()
        },
    )
    .await;
    let mut client = app.user_coupons();
    client
        .use_coupon(use_for(&coupon, "order-1", 5000))
        .await
        .expect("use while valid");
    app.advance_clock(Duration::from_secs(61));
    let returned = client
        .return_coupon(give_back(&coupon, "order-1"))
        .await
        .expect("return")
        .into_inner()
        .user_coupon
        .expect("coupon");
    assert_eq!(state(&returned), State::Expired);
    assert_eq!(used_count(app, &created.id).await, 0);
}

async fn racing_orders_use_a_coupon_once(app: &TestApp) {
    let (created, coupon) = claimed_coupon(app, "m1", five_off()).await;
    let mut calls = tokio::task::JoinSet::new();
    for order in 0..10 {
        let mut client = app.user_coupons();
        let request = use_for(&coupon, &format!("order-{order}"), 5000);
        calls.spawn(async move { client.use_coupon(request).await });
    }
    let mut used = 0;
    while let Some(result) = calls.join_next().await {
        match result.expect("task") {
            Ok(_) => used += 1,
            Err(err) => assert_error(&err, Code::FailedPrecondition, "INVALID_COUPON_STATE"),
        }
    }
    assert_eq!(used, 1, "exactly one order uses the coupon");
    assert_eq!(used_count(app, &created.id).await, 1);
}
