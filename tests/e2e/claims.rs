//! Claims under concurrency, on several replicas, with Redis failing and with locks lapsing:
//! never more than the stock, never more per member than the limit, and the database's rows
//! always agree with its counters. And batch distribution.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::Ordering::Relaxed,
};

use marketing_proto::v1 as pb;
use marketing_storage::entity::{coupon_template, user_coupon};
use marketing_tests::{
    Backend, Options, TestApp, TestRedis, assert_error, assert_invalid, spawn_app_with,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tonic::Code;

use crate::fixtures::{claim, claim_request, create_template, template, unique};

const STOCK: i64 = 100;
const LIMIT: i32 = 2;
const CLAIMS: usize = 500;
const MEMBERS: usize = 200;

/// 500 concurrent claims by 200 members (each 2 or 3 times, and every 25th claim sent twice
/// with the same request id) spread over `replicas`, against stock 100 and a limit of 2.
/// `midway` runs once half the claims are answered.
async fn claim_storm(replicas: &[&TestApp], midway: impl FnOnce()) {
    let first = replicas[0];
    let created = create_template(
        first,
        "acme",
        pb::CouponTemplate {
            total_stock: STOCK,
            per_member_limit: LIMIT,
            ..template()
        },
    )
    .await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CLAIMS {
        let mut client = replicas[i % replicas.len()].user_coupons();
        let request = claim_request("acme", &format!("member-{}", i % MEMBERS), &created.id);
        let retry = (i % 25 == 0).then(|| {
            (
                replicas[(i + 1) % replicas.len()].user_coupons(),
                request.clone(),
            )
        });
        calls.spawn(async move {
            let mut answers = vec![(
                request.request_id.clone(),
                client.claim_coupon(request).await,
            )];
            if let Some((mut other, request)) = retry {
                answers.push((
                    request.request_id.clone(),
                    other.claim_coupon(request).await,
                ));
            }
            answers
        });
    }
    let mut answers = Vec::new();
    let mut midway = Some(midway);
    while let Some(joined) = calls.join_next().await {
        answers.extend(joined.expect("claim task"));
        if answers.len() >= CLAIMS / 2
            && let Some(midway) = midway.take()
        {
            midway();
        }
    }

    let mut granted: HashMap<String, pb::UserCoupon> = HashMap::new();
    // Per request id, the coupon each answer granted (None: refused).
    let mut by_request: HashMap<String, Vec<Option<String>>> = HashMap::new();
    for (request_id, answer) in answers {
        let outcomes = by_request.entry(request_id).or_default();
        match answer {
            Ok(response) => {
                let coupon = response.into_inner().user_coupon.expect("coupon");
                outcomes.push(Some(coupon.id.clone()));
                granted.insert(coupon.id.clone(), coupon);
            }
            Err(status) => {
                outcomes.push(None);
                assert_eq!(
                    status.code(),
                    Code::ResourceExhausted,
                    "only business refusals: {status:?}"
                );
                let reason = tonic_types::StatusExt::get_details_error_info(&status)
                    .expect("reason")
                    .reason;
                assert!(
                    reason == "OUT_OF_STOCK" || reason == "MEMBER_LIMIT_REACHED",
                    "{reason}"
                );
            }
        }
    }
    // A retry of a granted claim is that same grant, never another coupon nor a refusal. (A
    // refusal is not recorded, so a refused claim's retry is decided again: it may be
    // refused for the other reason.)
    let mut retried = 0;
    for (request_id, outcomes) in &by_request {
        if outcomes.len() > 1 {
            retried += 1;
            if outcomes.iter().any(Option::is_some) {
                assert!(
                    outcomes.iter().all(|o| o == &outcomes[0]),
                    "{request_id}: a granted claim's retry answered {outcomes:?}"
                );
            }
        }
    }
    assert_eq!(
        retried,
        CLAIMS / 25,
        "every retried request id was answered twice"
    );
    assert_eq!(granted.len() as i64, STOCK, "exactly the stock is claimed");
    let mut per_member: HashMap<&str, usize> = HashMap::new();
    for coupon in granted.values() {
        *per_member.entry(coupon.member_id.as_str()).or_default() += 1;
    }
    assert!(
        per_member.values().all(|n| *n <= LIMIT as usize),
        "nobody over the limit"
    );

    // The rows agree with the counters.
    let db = first.state.shared().db.conn();
    let id = uuid::Uuid::parse_str(&created.id).expect("uuid");
    let row = coupon_template::Entity::find_by_id(id)
        .one(db)
        .await
        .expect("query")
        .expect("template row");
    let coupons = user_coupon::Entity::find()
        .filter(user_coupon::Column::TemplateId.eq(id))
        .all(db)
        .await
        .expect("query");
    assert_eq!(row.claimed_count, STOCK);
    assert_eq!(row.remaining_stock, 0);
    assert_eq!(row.total_stock, STOCK, "the stock itself never moved");
    assert_eq!(coupons.len() as i64, row.claimed_count);
    let ids: HashSet<uuid::Uuid> = coupons.iter().map(|c| c.id).collect();
    let answered: HashSet<uuid::Uuid> = granted
        .keys()
        .map(|id| uuid::Uuid::parse_str(id).expect("uuid"))
        .collect();
    assert_eq!(
        ids, answered,
        "every stored coupon was answered, and only those"
    );
    let mut rows_per_member: HashMap<&str, Vec<i32>> = HashMap::new();
    for coupon in &coupons {
        rows_per_member
            .entry(coupon.member_id.as_str())
            .or_default()
            .push(coupon.claim_slot);
    }
    for slots in rows_per_member.values_mut() {
        slots.sort_unstable();
        assert!(
            slots.len() <= LIMIT as usize
                && slots.iter().enumerate().all(|(i, s)| *s == i as i32 + 1)
        );
    }
    // Reads show the same counters (the cache was refreshed by the claims).
    let shown = first
        .templates()
        .get_coupon_template(pb::GetCouponTemplateRequest {
            tenant_id: "acme".into(),
            template_id: created.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .coupon_template
        .expect("template");
    assert_eq!((shown.remaining_stock, shown.claimed_count), (0, STOCK));

    // The claims were served in shared batches (one lock and one transaction for many).
    let load = |f: fn(&marketing_server::app::Metrics) -> &std::sync::atomic::AtomicU64| {
        replicas
            .iter()
            .map(|r| f(&r.state.shared().metrics).load(Relaxed))
            .sum::<u64>()
    };
    let (batches, batched) = (load(|m| &m.claim_batches), load(|m| &m.claims_batched));
    eprintln!(
        "claim storm: {batched} claims in {batches} batches, {} retries, {} without the lock",
        load(|m| &m.claim_retries),
        load(|m| &m.lock_unavailable)
    );
    assert!(batches < batched, "claims share batches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_oversell() {
    let app = marketing_tests::spawn_app(Backend::PostgresRedis).await;
    let replica = app.spawn_replica().await;
    claim_storm(&[&app, &replica], || {}).await;
    replica.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_oversell_when_redis_dies_midway() {
    let mut redis = TestRedis::start();
    let app = redis.spawn_app().await;
    let replica = app.spawn_replica().await;
    claim_storm(&[&app, &replica], || redis.stop()).await;
    let degraded = app.state.shared().metrics.lock_unavailable.load(Relaxed)
        + replica
            .state
            .shared()
            .metrics
            .lock_unavailable
            .load(Relaxed);
    assert!(
        degraded > 0,
        "claims after the outage ran on the database alone, and were counted"
    );
    replica.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_oversell_when_locks_lapse_mid_batch() {
    let options = Options {
        claim_lock_ttl: Some(std::time::Duration::from_millis(1)),
        ..Options::default()
    };
    let app = spawn_app_with(Backend::PostgresRedis, options).await;
    let replica = app.spawn_replica().await;
    claim_storm(&[&app, &replica], || {}).await;
    let metric = |f: fn(&marketing_server::app::Metrics) -> &std::sync::atomic::AtomicU64| {
        f(&app.state.shared().metrics).load(Relaxed)
            + f(&replica.state.shared().metrics).load(Relaxed)
    };
    let (lapses, retries) = (
        metric(|m| &m.claim_lock_lapses),
        metric(|m| &m.claim_retries),
    );
    eprintln!("lapsing locks: {lapses} lapses, {retries} fenced-out retries");
    assert!(lapses > 0, "locks of 1 ms lapsed mid-batch");
    replica.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_never_oversells() {
    let app = marketing_tests::spawn_app(Backend::Embedded).await;
    claim_storm(&[&app], || {}).await;
    app.stop().await;
}

marketing_tests::backend_suite! {
    claims_are_refused_for_business_reasons,
    claims_are_idempotent,
    distribution_is_all_or_nothing_by_default,
    distribution_can_be_partial,
    distribution_reaches_ten_thousand_members,
    bad_claims_and_distributions_are_rejected,
    a_lapsed_lock_holder_cannot_take_stock,
    claims_race_distributions_stock_and_toggles_exactly,
}

async fn claims_are_refused_for_business_reasons(app: &TestApp) {
    let now = crate::fixtures::now_seconds();
    let disabled = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            enabled: false,
            ..template()
        },
    )
    .await;
    let err = claim(app, "acme", "m1", &disabled.id)
        .await
        .expect_err("disabled");
    assert_error(&err, Code::FailedPrecondition, "TEMPLATE_DISABLED");

    let later = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            distribution_start_time: crate::fixtures::at(now + 3600),
            distribution_end_time: crate::fixtures::at(now + 7200),
            ..template()
        },
    )
    .await;
    let err = claim(app, "acme", "m1", &later.id)
        .await
        .expect_err("not yet");
    assert_error(
        &err,
        Code::FailedPrecondition,
        "OUTSIDE_DISTRIBUTION_WINDOW",
    );

    let unknown = uuid::Uuid::now_v7().to_string();
    let err = claim(app, "acme", "m1", &unknown)
        .await
        .expect_err("unknown");
    assert_error(&err, Code::NotFound, "TEMPLATE_NOT_FOUND");

    let scarce = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            total_stock: 1,
            per_member_limit: 1,
            ..template()
        },
    )
    .await;
    let err = claim(app, "globex", "m1", &scarce.id)
        .await
        .expect_err("other tenant");
    assert_error(&err, Code::NotFound, "TEMPLATE_NOT_FOUND");
    let coupon = claim(app, "acme", "m1", &scarce.id).await.expect("first");
    assert_eq!(coupon.state, pb::UserCouponState::Available as i32);
    assert_eq!(
        coupon.discount,
        Some(pb::user_coupon::Discount::PercentOff(
            pb::PercentOffDiscount {
                basis_points: 1000,
                max_discount_amount: Some(500),
                ..Default::default()
            }
        ))
    );
    let err = claim(app, "acme", "m1", &scarce.id)
        .await
        .expect_err("limit");
    assert_error(&err, Code::ResourceExhausted, "MEMBER_LIMIT_REACHED");
    let err = claim(app, "acme", "m2", &scarce.id)
        .await
        .expect_err("stock");
    assert_error(&err, Code::ResourceExhausted, "OUT_OF_STOCK");

    // Later template edits do not change coupons already held.
    let mut edit = scarce.clone();
    edit.version = 1;
    edit.discount = Some(pb::coupon_template::Discount::FixedAmount(
        pb::FixedAmountDiscount {
            amount: 1,
            ..Default::default()
        },
    ));
    app.templates()
        .update_coupon_template(pb::UpdateCouponTemplateRequest {
            tenant_id: "acme".into(),
            request_id: unique("edit"),
            coupon_template: Some(edit),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["discount".into()],
            }),
        })
        .await
        .expect("edit");
    let held = app
        .user_coupons()
        .get_user_coupon(pb::GetUserCouponRequest {
            tenant_id: "acme".into(),
            coupon_id: coupon.id.clone(),
            member_id: "m1".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .user_coupon
        .expect("coupon");
    assert_eq!(held.discount, coupon.discount);
}

async fn claims_are_idempotent(app: &TestApp) {
    let created = create_template(app, "acme", template()).await;
    let request = claim_request("acme", "m1", &created.id);
    let mut client = app.user_coupons();
    let first = client
        .claim_coupon(request.clone())
        .await
        .expect("claim")
        .into_inner();
    let again = client
        .claim_coupon(request.clone())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(first, again);
    let mut other_member = request.clone();
    other_member.member_id = "m2".into();
    let err = client.claim_coupon(other_member).await.expect_err("reused");
    assert_error(&err, Code::InvalidArgument, "REQUEST_ID_REUSED");
    let other_template = create_template(app, "acme", template()).await;
    let mut moved = request;
    moved.template_id = other_template.id;
    let err = client.claim_coupon(moved).await.expect_err("reused");
    assert_error(&err, Code::InvalidArgument, "REQUEST_ID_REUSED");
    let shown = app
        .templates()
        .get_coupon_template(pb::GetCouponTemplateRequest {
            tenant_id: "acme".into(),
            template_id: created.id,
        })
        .await
        .expect("get")
        .into_inner()
        .coupon_template
        .expect("template");
    assert_eq!(shown.claimed_count, 1, "a replay takes no stock");
}

fn distribute(
    template_id: &str,
    members: Vec<String>,
    allow_partial: bool,
) -> pb::DistributeCouponsRequest {
    pb::DistributeCouponsRequest {
        tenant_id: "acme".into(),
        template_id: template_id.into(),
        request_id: unique("distribute"),
        member_ids: members,
        allow_partial,
    }
}

async fn claimed(app: &TestApp, template_id: &str) -> i64 {
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
        .claimed_count
}

async fn distribution_is_all_or_nothing_by_default(app: &TestApp) {
    let created = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            total_stock: 2,
            ..template()
        },
    )
    .await;
    let members = vec!["a".to_string(), "b".into(), "c".into()];
    let err = app
        .user_coupons()
        .distribute_coupons(distribute(&created.id, members.clone(), false))
        .await
        .expect_err("not enough stock");
    assert_error(&err, Code::ResourceExhausted, "OUT_OF_STOCK");
    let info = tonic_types::StatusExt::get_details_error_info(&err).expect("info");
    assert_eq!(
        info.metadata.get("member_id").map(String::as_str),
        Some("c")
    );
    assert_eq!(claimed(app, &created.id).await, 0, "nothing was issued");

    let request = distribute(&created.id, members[..2].to_vec(), false);
    let mut client = app.user_coupons();
    let done = client
        .distribute_coupons(request.clone())
        .await
        .expect("fits")
        .into_inner();
    assert_eq!((done.issued_count, done.failed_count), (2, 0));
    let replay = client
        .distribute_coupons(request)
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(done, replay);
    assert_eq!(claimed(app, &created.id).await, 2);
}

async fn distribution_can_be_partial(app: &TestApp) {
    let created = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            total_stock: 3,
            per_member_limit: 1,
            ..template()
        },
    )
    .await;
    claim(app, "acme", "b", &created.id)
        .await
        .expect("b already holds one");
    let members = vec!["a".to_string(), "b".into(), "c".into(), "d".into()];
    let done = app
        .user_coupons()
        .distribute_coupons(distribute(&created.id, members, true))
        .await
        .expect("partial")
        .into_inner();
    let outcome: Vec<(&str, bool, &str)> = done
        .results
        .iter()
        .map(|r| {
            (
                r.member_id.as_str(),
                r.user_coupon.is_some(),
                r.failure_reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            ("a", true, ""),
            ("b", false, "MEMBER_LIMIT_REACHED"),
            ("c", true, ""),
            ("d", false, "OUT_OF_STOCK")
        ]
    );
    assert_eq!((done.issued_count, done.failed_count), (2, 2));
    assert_eq!(claimed(app, &created.id).await, 3);
}

async fn distribution_reaches_ten_thousand_members(app: &TestApp) {
    let created = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            total_stock: 10_000,
            per_member_limit: 1,
            ..template()
        },
    )
    .await;
    let members: Vec<String> = (0..10_000).map(|i| format!("gift-{i}")).collect();
    let done = app
        .user_coupons()
        .distribute_coupons(distribute(&created.id, members, false))
        .await
        .expect("ten thousand")
        .into_inner();
    assert_eq!((done.issued_count, done.failed_count), (10_000, 0));
    assert_eq!(claimed(app, &created.id).await, 10_000);
    let err = claim(app, "acme", "late", &created.id)
        .await
        .expect_err("sold out");
    assert_error(&err, Code::ResourceExhausted, "OUT_OF_STOCK");
}

async fn bad_claims_and_distributions_are_rejected(app: &TestApp) {
    let mut client = app.user_coupons();
    let err = client
        .claim_coupon(pb::ClaimCouponRequest::default())
        .await
        .expect_err("empty");
    assert_invalid(
        &err,
        &["tenant_id", "member_id", "template_id", "request_id"],
    );
    let err = client
        .claim_coupon(pb::ClaimCouponRequest {
            template_id: "nope".into(),
            ..claim_request("acme", "bad member!", "x")
        })
        .await
        .expect_err("malformed");
    assert_invalid(&err, &["member_id", "template_id"]);

    let created = create_template(app, "acme", template()).await;
    let too_many: Vec<String> = (0..10_001).map(|i| format!("m{i}")).collect();
    let err = client
        .distribute_coupons(distribute(&created.id, too_many, true))
        .await
        .expect_err("too many");
    assert_invalid(&err, &["member_ids"]);
    let err = client
        .distribute_coupons(distribute(&created.id, vec![], true))
        .await
        .expect_err("none");
    assert_invalid(&err, &["member_ids"]);
    let err = client
        .distribute_coupons(distribute(
            &created.id,
            vec!["a".into(), "a".into(), "".into()],
            true,
        ))
        .await
        .expect_err("duplicates");
    assert_invalid(&err, &["member_ids[1]", "member_ids[2]"]);
    assert_eq!(claimed(app, &created.id).await, 0);
}

async fn a_lapsed_lock_holder_cannot_take_stock(app: &TestApp) {
    use marketing_domain::{MarketingError, TemplateId, TenantId};
    use marketing_storage::{templates::TemplateStore, unit::UnitOfWork};

    let created = create_template(app, "acme", template()).await;
    let tenant = TenantId::parse("tenant_id", "acme").expect("tenant");
    let id = TemplateId(uuid::Uuid::parse_str(&created.id).expect("uuid"));
    let db = &app.state.shared().db;
    let tenant = &tenant;
    let take_stock = |count, fence| async move {
        let unit = UnitOfWork::begin(db).await.expect("unit");
        let taken = unit
            .templates()
            .take_stock(tenant, id, count, 0, fence)
            .await;
        unit.commit().await.expect("commit");
        taken
    };
    // The newer holder (fence 20) writes; the older one (fence 10), whose lock lapsed, cannot.
    let written = take_stock(1, Some(20)).await.expect("newer holder");
    assert_eq!(written.claimed_count, 1);
    let stale = take_stock(1, Some(10)).await;
    let fenced = |result: &Result<_, MarketingError>| match result {
        Err(MarketingError::ConcurrentModification(cause)) => cause
            .downcast_ref::<marketing_domain::error::Fenced>()
            .copied(),
        _ => None,
    };
    assert_eq!(
        fenced(&stale),
        Some(marketing_domain::error::Fenced {
            fence: 10,
            current: 20
        }),
        "{stale:?}"
    );
    // Without a lock (Redis down) the database's own conditions still hold: never below zero.
    let too_much = take_stock(1000, None).await;
    assert!(
        matches!(too_much, Err(MarketingError::ConcurrentModification(_))),
        "{too_much:?}"
    );
    assert_eq!(fenced(&too_much), None, "the stock, not a fence");
    let too_much_fenced = take_stock(1000, Some(20)).await;
    assert_eq!(
        fenced(&too_much_fenced),
        None,
        "the stock, under the current fence"
    );
    let row = coupon_template::Entity::find_by_id(id.0)
        .one(db.conn())
        .await
        .expect("query")
        .expect("row");
    assert_eq!((row.claimed_count, row.fence_token), (1, 20));
}

/// Claims, distributions, stock changes and disable/enable racing on one template: afterwards
/// the stored coupons are exactly the claims granted plus the coupons distributions issued,
/// the total stock is the initial stock plus the acknowledged changes, and the counters say
/// the same. (Each answer is counted: a change that wrote but answered an error, or answered
/// but did not write, breaks the sums.)
async fn claims_race_distributions_stock_and_toggles_exactly(app: &TestApp) {
    use std::sync::{Arc, atomic::AtomicI64};
    const INITIAL: i64 = 60;
    let created = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            total_stock: INITIAL,
            per_member_limit: 1,
            ..template()
        },
    )
    .await;
    let id = created.id.clone();
    let granted = Arc::new(AtomicI64::new(0));
    let stock_changes = Arc::new(AtomicI64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..4 {
        let (app_channel, id, granted) = (app.channel.clone(), id.clone(), granted.clone());
        tasks.spawn(async move {
            let mut coupons =
                pb::user_coupon_service_client::UserCouponServiceClient::new(app_channel);
            for i in 0..25 {
                let member = format!("claimer-{caller}-{i}");
                match coupons
                    .claim_coupon(claim_request("acme", &member, &id))
                    .await
                {
                    Ok(_) => {
                        granted.fetch_add(1, Relaxed);
                    }
                    Err(status) => assert!(
                        matches!(
                            status.code(),
                            Code::ResourceExhausted | Code::FailedPrecondition
                        ),
                        "{status:?}"
                    ),
                }
            }
        });
    }
    for round in 0..5 {
        let (app_channel, id, granted) = (app.channel.clone(), id.clone(), granted.clone());
        tasks.spawn(async move {
            let mut coupons =
                pb::user_coupon_service_client::UserCouponServiceClient::new(app_channel);
            let request = pb::DistributeCouponsRequest {
                tenant_id: "acme".into(),
                template_id: id,
                request_id: crate::fixtures::unique("race-distribute"),
                member_ids: (0..8).map(|i| format!("given-{round}-{i}")).collect(),
                allow_partial: true,
            };
            if let Ok(answer) = coupons.distribute_coupons(request).await {
                granted.fetch_add(i64::from(answer.into_inner().issued_count), Relaxed);
            }
        });
    }
    {
        let (app_channel, id, changes) = (app.channel.clone(), id.clone(), stock_changes.clone());
        tasks.spawn(async move {
            let mut templates =
                pb::coupon_template_service_client::CouponTemplateServiceClient::new(app_channel);
            for i in 0..20 {
                let amount = if i % 3 == 2 { -4 } else { 5 };
                let request = pb::AddCouponStockRequest {
                    tenant_id: "acme".into(),
                    template_id: id.clone(),
                    request_id: crate::fixtures::unique("race-stock"),
                    amount,
                };
                if templates.add_coupon_stock(request).await.is_ok() {
                    changes.fetch_add(amount, Relaxed);
                }
                let toggle = pb::SetCouponTemplateEnabledRequest {
                    tenant_id: "acme".into(),
                    template_id: id.clone(),
                    request_id: crate::fixtures::unique("race-toggle"),
                    enabled: i % 2 == 1,
                    version: None,
                };
                templates
                    .set_coupon_template_enabled(toggle)
                    .await
                    .expect("toggling is always allowed");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("racer");
    }
    let uuid = uuid::Uuid::parse_str(&id).expect("uuid");
    let stored = user_coupon::Entity::find()
        .filter(user_coupon::Column::TemplateId.eq(uuid))
        .all(app.state.shared().db.conn())
        .await
        .expect("coupons")
        .len() as i64;
    let row = coupon_template::Entity::find_by_id(uuid)
        .one(app.state.shared().db.conn())
        .await
        .expect("template")
        .expect("exists");
    let granted = granted.load(Relaxed);
    assert!(granted > 0, "nothing was granted");
    assert_eq!(
        stored, granted,
        "stored coupons = claims granted + coupons issued"
    );
    assert_eq!(row.claimed_count, granted);
    // remaining = total - claimed is the schema's CHECK; the total is not.
    assert_eq!(row.total_stock, INITIAL + stock_changes.load(Relaxed));
}
