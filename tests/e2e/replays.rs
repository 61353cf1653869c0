//! Every mutation that moves money or stock, driven through one script:
//!
//! - **Replays**: each step is sent as several concurrent copies (the same `request_id`)
//!   spread over the replicas, then replayed one at a time on each; every answer is
//!   byte-identical to the first, and the replays change nothing in the database.
//! - **Tenant isolation**: the same script, with the same member ids, request ids, order ids
//!   and business references, in a second tenant; the first tenant's rows are unchanged and
//!   the second tenant gets answers of its own, not the first one's replays.

use marketing_proto::v1::{
    self as pb, coupon_template_service_client::CouponTemplateServiceClient,
    points_account_service_client::PointsAccountServiceClient,
    user_coupon_service_client::UserCouponServiceClient,
};
use marketing_storage::entity::{
    coupon_template, idempotency_record, points_account, points_allocation, points_daily_earning,
    points_hold, points_lot, points_rule, points_transaction, user_coupon,
};
use marketing_tests::{Backend, Options, TestApp};
use prost::Message;
use sea_orm::EntityTrait;
use tonic::{Code, transport::Channel};

use crate::fixtures::template;

/// An answer as the client saw it: the encoded response, or the status's code, message and
/// encoded details.
type Answer = Result<Vec<u8>, (Code, String, Vec<u8>)>;

fn answer<T: Message>(result: Result<tonic::Response<T>, tonic::Status>) -> Answer {
    result
        .map(|r| r.into_inner().encode_to_vec())
        .map_err(|s| (s.code(), s.message().to_owned(), s.details().to_vec()))
}

/// One mutation of the script.
#[derive(Clone)]
enum Op {
    CreateTemplate(pb::CreateCouponTemplateRequest),
    AddStock(pb::AddCouponStockRequest),
    SetEnabled(pb::SetCouponTemplateEnabledRequest),
    UpdateTemplate(pb::UpdateCouponTemplateRequest),
    DeleteTemplate(pb::DeleteCouponTemplateRequest),
    Claim(pb::ClaimCouponRequest),
    Distribute(pb::DistributeCouponsRequest),
    Lock(pb::LockCouponRequest),
    ReleaseCoupon(pb::ReleaseCouponRequest),
    Use(pb::UseCouponRequest),
    Return(pb::ReturnCouponRequest),
    Revoke(pb::RevokeCouponRequest),
    Earn(pb::EarnPointsRequest),
    Deduct(pb::DeductPointsRequest),
    Freeze(pb::FreezePointsRequest),
    Confirm(pb::ConfirmFrozenPointsRequest),
    ReleasePoints(pb::ReleaseFrozenPointsRequest),
    Refund(pb::RefundPointsRequest),
    CreateRule(pb::CreatePointsRuleRequest),
    UpdateRule(pb::UpdatePointsRuleRequest),
}

async fn send(channel: Channel, op: Op) -> Answer {
    let mut templates = CouponTemplateServiceClient::new(channel.clone());
    let mut coupons = UserCouponServiceClient::new(channel.clone());
    let mut points = PointsAccountServiceClient::new(channel);
    match op {
        Op::CreateTemplate(r) => answer(templates.create_coupon_template(r).await),
        Op::AddStock(r) => answer(templates.add_coupon_stock(r).await),
        Op::SetEnabled(r) => answer(templates.set_coupon_template_enabled(r).await),
        Op::UpdateTemplate(r) => answer(templates.update_coupon_template(r).await),
        Op::DeleteTemplate(r) => answer(templates.delete_coupon_template(r).await),
        Op::Claim(r) => answer(coupons.claim_coupon(r).await),
        Op::Distribute(r) => answer(coupons.distribute_coupons(r).await),
        Op::Lock(r) => answer(coupons.lock_coupon(r).await),
        Op::ReleaseCoupon(r) => answer(coupons.release_coupon(r).await),
        Op::Use(r) => answer(coupons.use_coupon(r).await),
        Op::Return(r) => answer(coupons.return_coupon(r).await),
        Op::Revoke(r) => answer(coupons.revoke_coupon(r).await),
        Op::Earn(r) => answer(points.earn_points(r).await),
        Op::Deduct(r) => answer(points.deduct_points(r).await),
        Op::Freeze(r) => answer(points.freeze_points(r).await),
        Op::Confirm(r) => answer(points.confirm_frozen_points(r).await),
        Op::ReleasePoints(r) => answer(points.release_frozen_points(r).await),
        Op::Refund(r) => answer(points.refund_points(r).await),
        Op::CreateRule(r) => answer(points.create_points_rule(r).await),
        Op::UpdateRule(r) => answer(points.update_points_rule(r).await),
    }
}

/// Every row of `tenant` (every tenant's when `None`), in a canonical text form.
async fn rows(app: &TestApp, tenant: Option<&str>) -> Vec<String> {
    let db = app.state.shared().db.conn();
    let mut rows = Vec::new();
    macro_rules! dump {
        ($($entity:ident),*) => {$(
            for row in $entity::Entity::find().all(db).await.expect("rows") {
                if tenant.is_none_or(|t| row.tenant_id == t) {
                    rows.push(format!("{row:?}"));
                }
            }
        )*};
    }
    dump!(
        coupon_template,
        user_coupon,
        idempotency_record,
        points_account,
        points_transaction,
        points_lot,
        points_hold,
        points_allocation,
        points_daily_earning,
        points_rule
    );
    rows.sort();
    rows
}

/// How each step is sent.
#[derive(Clone, Copy)]
enum Mode {
    /// Concurrent copies over every replica, then one-at-a-time replays: all answers the
    /// same, and the replays change nothing.
    Replayed,
    /// Once.
    Once,
}

/// Runs `op`, and returns its (first) answer.
async fn step(replicas: &[&TestApp], mode: Mode, name: &str, op: Op) -> Answer {
    const COPIES: usize = 6;
    if let Mode::Once = mode {
        return send(replicas[0].channel.clone(), op).await;
    }
    let mut copies = tokio::task::JoinSet::new();
    for i in 0..COPIES {
        let (channel, op) = (replicas[i % replicas.len()].channel.clone(), op.clone());
        copies.spawn(send(channel, op));
    }
    let mut answers = Vec::new();
    while let Some(answer) = copies.join_next().await {
        answers.push(answer.expect("task"));
    }
    let first = answers[0].clone();
    for other in &answers {
        assert_eq!(other, &first, "{name}: concurrent copies answer alike");
    }
    let before = rows(replicas[0], None).await;
    for app in replicas {
        let again = send(app.channel.clone(), op.clone()).await;
        assert_eq!(again, first, "{name}: a replay answers as the first");
    }
    assert_eq!(
        rows(replicas[0], None).await,
        before,
        "{name}: replays change nothing"
    );
    first
}

fn ok<T: Message + Default>(name: &str, answer: &Answer) -> T {
    let bytes = answer
        .as_ref()
        .unwrap_or_else(|err| panic!("{name} failed: {err:?}"));
    T::decode(bytes.as_slice()).expect("decodes")
}

/// Every money or stock mutation once, in `tenant`, with request ids, member ids, order ids
/// and business references that do not depend on the tenant. The (first) answers, in order.
async fn script(replicas: &[&TestApp], mode: Mode, tenant: &str) -> Vec<(String, Answer)> {
    let t = || tenant.to_owned();
    let id = |step: &str| format!("replay-{step}");
    let mut answers: Vec<(String, Answer)> = Vec::new();
    // `take!` runs a step and gives its answer; `run!` runs one whose answer is only checked
    // at the end.
    macro_rules! take {
        ($name:literal, $op:expr) => {{
            let answer = step(replicas, mode, $name, $op).await;
            answers.push(($name.to_owned(), answer.clone()));
            answer
        }};
    }
    macro_rules! run {
        ($name:literal, $op:expr) => {{
            let _ = take!($name, $op);
        }};
    }

    let created = take!(
        "create template",
        Op::CreateTemplate(pb::CreateCouponTemplateRequest {
            tenant_id: t(),
            request_id: id("create"),
            coupon_template: Some(pb::CouponTemplate {
                total_stock: 5,
                per_member_limit: 2,
                ..template()
            }),
        })
    );
    let created = ok::<pb::CreateCouponTemplateResponse>("create", &created)
        .coupon_template
        .expect("template");
    let template_id = created.id.clone();
    run!(
        "update template",
        Op::UpdateTemplate(pb::UpdateCouponTemplateRequest {
            tenant_id: t(),
            request_id: id("update"),
            coupon_template: Some(pb::CouponTemplate {
                id: template_id.clone(),
                version: created.version,
                name: "Spring 10%, renamed".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
    );
    run!(
        "add stock",
        Op::AddStock(pb::AddCouponStockRequest {
            tenant_id: t(),
            template_id: template_id.clone(),
            request_id: id("stock"),
            amount: 3,
        })
    );
    run!(
        "disable",
        Op::SetEnabled(pb::SetCouponTemplateEnabledRequest {
            tenant_id: t(),
            template_id: template_id.clone(),
            request_id: id("disable"),
            enabled: false,
            version: None,
        })
    );
    run!(
        "claim while disabled",
        Op::Claim(pb::ClaimCouponRequest {
            tenant_id: t(),
            member_id: "m1".into(),
            template_id: template_id.clone(),
            request_id: id("claim-disabled"),
        })
    );
    run!(
        "enable",
        Op::SetEnabled(pb::SetCouponTemplateEnabledRequest {
            tenant_id: t(),
            template_id: template_id.clone(),
            request_id: id("enable"),
            enabled: true,
            version: None,
        })
    );
    let claimed = take!(
        "claim",
        Op::Claim(pb::ClaimCouponRequest {
            tenant_id: t(),
            member_id: "m1".into(),
            template_id: template_id.clone(),
            request_id: id("claim"),
        })
    );
    let coupon = ok::<pb::ClaimCouponResponse>("claim", &claimed)
        .user_coupon
        .expect("coupon")
        .id;
    let claimed = take!(
        "claim another",
        Op::Claim(pb::ClaimCouponRequest {
            tenant_id: t(),
            member_id: "m2".into(),
            template_id: template_id.clone(),
            request_id: id("claim-2"),
        })
    );
    let other_coupon = ok::<pb::ClaimCouponResponse>("claim another", &claimed)
        .user_coupon
        .expect("coupon")
        .id;
    run!(
        "distribute",
        Op::Distribute(pb::DistributeCouponsRequest {
            tenant_id: t(),
            template_id: template_id.clone(),
            request_id: id("distribute"),
            member_ids: vec!["m3".into(), "m4".into(), "m1".into()],
            allow_partial: true,
        })
    );
    let lock = |request: &str| pb::LockCouponRequest {
        tenant_id: t(),
        member_id: "m1".into(),
        coupon_id: coupon.clone(),
        order_id: "order-1".into(),
        request_id: id(request),
        lock_ttl: None,
    };
    run!("lock", Op::Lock(lock("lock")));
    run!(
        "release coupon",
        Op::ReleaseCoupon(pb::ReleaseCouponRequest {
            tenant_id: t(),
            member_id: "m1".into(),
            coupon_id: coupon.clone(),
            order_id: "order-1".into(),
            request_id: id("release-coupon"),
        })
    );
    run!("lock again", Op::Lock(lock("lock-again")));
    run!(
        "use",
        Op::Use(pb::UseCouponRequest {
            tenant_id: t(),
            member_id: "m1".into(),
            coupon_id: coupon.clone(),
            order_id: "order-1".into(),
            request_id: id("use"),
            amount: 5000,
            currency: "EUR".into(),
            ..Default::default()
        })
    );
    run!(
        "return",
        Op::Return(pb::ReturnCouponRequest {
            tenant_id: t(),
            member_id: "m1".into(),
            coupon_id: coupon.clone(),
            order_id: "order-1".into(),
            request_id: id("return"),
        })
    );
    run!(
        "revoke",
        Op::Revoke(pb::RevokeCouponRequest {
            tenant_id: t(),
            coupon_id: other_coupon.clone(),
            request_id: id("revoke"),
            member_id: "m2".into(),
            reason: "fraud".into(),
        })
    );

    let earn = |request: &str, amount: i64, order: &str| pb::EarnPointsRequest {
        tenant_id: t(),
        member_id: "m1".into(),
        request_id: id(request),
        source: Some(pb::earn_points_request::Source::Amount(amount)),
        biz_type: "order".into(),
        biz_id: order.into(),
        ..Default::default()
    };
    run!("earn", Op::Earn(earn("earn", 100, "order-1")));
    run!(
        "earn for an order already earned",
        Op::Earn(earn("earn-again", 100, "order-1"))
    );
    let deducted = take!(
        "deduct",
        Op::Deduct(pb::DeductPointsRequest {
            tenant_id: t(),
            member_id: "m1".into(),
            request_id: id("deduct"),
            amount: 30,
            biz_type: "order".into(),
            biz_id: "order-2".into(),
            ..Default::default()
        })
    );
    let deduction = ok::<pb::DeductPointsResponse>("deduct", &deducted)
        .transaction
        .expect("entry")
        .id;
    run!(
        "deduct too much",
        Op::Deduct(pb::DeductPointsRequest {
            tenant_id: t(),
            member_id: "m1".into(),
            request_id: id("deduct-too-much"),
            amount: 1_000_000,
            ..Default::default()
        })
    );
    let freeze = |request: &str, order: &str| pb::FreezePointsRequest {
        tenant_id: t(),
        member_id: "m1".into(),
        request_id: id(request),
        amount: 20,
        order_id: order.into(),
        hold_ttl: None,
    };
    run!("freeze", Op::Freeze(freeze("freeze", "order-3")));
    run!(
        "confirm in part",
        Op::Confirm(pb::ConfirmFrozenPointsRequest {
            tenant_id: t(),
            member_id: "m1".into(),
            request_id: id("confirm"),
            hold_ref: Some(pb::confirm_frozen_points_request::HoldRef::OrderId(
                "order-3".into(),
            )),
            amount: Some(5),
        })
    );
    run!("freeze another", Op::Freeze(freeze("freeze-2", "order-4")));
    run!(
        "release points",
        Op::ReleasePoints(pb::ReleaseFrozenPointsRequest {
            tenant_id: t(),
            member_id: "m1".into(),
            request_id: id("release-points"),
            hold_ref: Some(pb::release_frozen_points_request::HoldRef::OrderId(
                "order-4".into(),
            )),
        })
    );
    let refund = |request: &str, amount: i64| pb::RefundPointsRequest {
        tenant_id: t(),
        member_id: "m1".into(),
        request_id: id(request),
        target: Some(pb::refund_points_request::Target::TransactionId(
            deduction.clone(),
        )),
        amount: Some(amount),
        description: String::new(),
    };
    run!("refund in part", Op::Refund(refund("refund", 10)));
    run!("refund too much", Op::Refund(refund("refund-too-much", 50)));
    let rule = take!(
        "create rule",
        Op::CreateRule(pb::CreatePointsRuleRequest {
            tenant_id: t(),
            request_id: id("rule"),
            points_rule: Some(pb::PointsRule {
                event_type: "signup".into(),
                points: 10,
                enabled: true,
                ..Default::default()
            }),
        })
    );
    let rule = ok::<pb::CreatePointsRuleResponse>("create rule", &rule)
        .points_rule
        .expect("rule");
    run!(
        "update rule",
        Op::UpdateRule(pb::UpdatePointsRuleRequest {
            tenant_id: t(),
            request_id: id("rule-update"),
            points_rule: Some(pb::PointsRule {
                id: rule.id.clone(),
                version: rule.version,
                points: 25,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["points".into()],
            }),
        })
    );
    run!(
        "delete template",
        Op::DeleteTemplate(pb::DeleteCouponTemplateRequest {
            tenant_id: t(),
            template_id: template_id.clone(),
            request_id: id("delete"),
            version: None,
        })
    );
    answers
}

/// The script's answers are what one-at-a-time calls give: each refusal is the one named.
fn assert_expected(answers: &[(String, Answer)]) {
    let refusals = [
        ("claim while disabled", Code::FailedPrecondition),
        ("earn for an order already earned", Code::AlreadyExists),
        ("deduct too much", Code::FailedPrecondition),
        ("refund too much", Code::FailedPrecondition),
    ];
    for (name, answer) in answers {
        match refusals.iter().find(|(refused, _)| refused == name) {
            Some((_, code)) => {
                let err = answer.as_ref().expect_err(name);
                assert_eq!(err.0, *code, "{name}: {err:?}");
            }
            None => {
                answer
                    .as_ref()
                    .unwrap_or_else(|err| panic!("{name}: {err:?}"));
            }
        }
    }
}

async fn replays_answer_alike_and_change_nothing(replicas: &[&TestApp]) {
    let answers = script(replicas, Mode::Replayed, "acme").await;
    assert_expected(&answers);
    // Their effect too, not only their answers: the concurrent copies left exactly what one
    // call of each step leaves (in a tenant of its own): balances, stock, coupons, entries.
    let once = script(&replicas[..1], Mode::Once, "solo").await;
    assert_expected(&once);
    let conn = replicas[0].state.shared().db.conn();
    assert_eq!(
        crate::mixed::state_of(conn, "acme").await,
        crate::mixed::state_of(conn, "solo").await,
        "concurrent copies left more (or other) than one call"
    );
}

async fn the_same_ids_in_another_tenant_touch_nothing_of_the_first(app: &TestApp) {
    let first = script(&[app], Mode::Once, "acme").await;
    assert_expected(&first);
    let acme = rows(app, Some("acme")).await;
    let second = script(&[app], Mode::Once, "beta").await;
    assert_expected(&second);
    assert_eq!(
        rows(app, Some("acme")).await,
        acme,
        "beta's calls changed nothing of acme"
    );
    for ((name, a), (_, b)) in first.iter().zip(&second) {
        match (a, b) {
            // Its own rows: other ids, so other bytes.
            (Ok(a), Ok(b)) => assert_ne!(a, b, "{name}: beta got an answer of its own, not acme's"),
            // The same refusal, for its own reasons.
            (Err(a), Err(b)) => assert_eq!(a.0, b.0, "{name}: beta refused as acme was"),
            _ => panic!("{name}: acme got {a:?}, beta {b:?}: alone, each gets the same outcome"),
        }
    }
    assert_eq!(
        rows(app, Some("beta")).await.len(),
        acme.len(),
        "beta has rows of its own, as many as acme's from the same script"
    );
}

/// The sweeper stays away: it would change rows between a step and its replays.
fn quiet() -> Options {
    Options {
        sweep_interval: Some(std::time::Duration::from_secs(3600)),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_across_two_replicas_answer_alike_and_change_nothing() {
    let app = marketing_tests::spawn_app_with(Backend::PostgresRedis, quiet()).await;
    let replica = app.spawn_replica().await;
    replays_answer_alike_and_change_nothing(&[&app, &replica]).await;
    replica.stop().await;
    app.stop().await;
}

async fn replays_on_one_replica_answer_alike_and_change_nothing(app: &TestApp) {
    replays_answer_alike_and_change_nothing(&[app]).await;
}

marketing_tests::backend_suite! {
    with super::quiet();
    replays_on_one_replica_answer_alike_and_change_nothing,
    the_same_ids_in_another_tenant_touch_nothing_of_the_first,
}
