//! Faults under load: claims, earns, deductions, holds and refunds of two tenants (the same
//! member ids) run on two replicas while Redis stops and comes back, every PostgreSQL
//! connection is terminated and one replica (a process of its own) is killed. Some calls are
//! cut off mid-flight (asserted); every request that got no definitive answer is retried with
//! its `request_id` until it does, and the database must hold exactly what the clients were
//! told: every granted claim and every acknowledged points change is committed, nothing else
//! is, each balance is its funding plus what its client was told it earned and got back, minus
//! what it was told it spent and froze, and every invariant holds (stock counters, per-member
//! limits, every account against its ledger).

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use marketing_proto::v1::{
    self as pb, points_account_service_client::PointsAccountServiceClient,
    user_coupon_service_client::UserCouponServiceClient,
};
use marketing_storage::entity::{coupon_template, points_account, points_transaction, user_coupon};
use marketing_tests::{ServerProcess, TestRedis};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tonic::{Code, transport::Channel};

use crate::{
    fixtures::{claim_request, create_template, template, unique},
    points::{audit, deduct, earn},
};

const STOCK: i64 = 150;
const LIMIT: i32 = 2;
const CLAIMERS: usize = 100;
const SPENDERS: usize = 20;
const CALLERS: usize = 16;
const FUNDING: i64 = 10_000;
/// Two tenants with the same member ids, request ids apart.
const TENANTS: [&str; 2] = ["acme", "globex"];

#[derive(Clone)]
enum Call {
    Claim(pb::ClaimCouponRequest),
    Deduct(pb::DeductPointsRequest),
    Earn(pb::EarnPointsRequest),
    Freeze(pb::FreezePointsRequest),
    /// A refund of a deduction this caller was told was made, of its whole amount.
    Refund(pb::RefundPointsRequest, i64),
}

impl Call {
    /// The (tenant, member) whose points it changes, and by how much when it is made.
    fn points_change(&self) -> Option<((String, String), i64)> {
        let (tenant, member, change) = match self {
            Call::Claim(_) => return None,
            Call::Deduct(r) => (&r.tenant_id, &r.member_id, -r.amount),
            Call::Earn(r) => match r.source {
                Some(pb::earn_points_request::Source::Amount(amount)) => {
                    (&r.tenant_id, &r.member_id, amount)
                }
                _ => return None,
            },
            Call::Freeze(r) => (&r.tenant_id, &r.member_id, -r.amount),
            Call::Refund(r, amount) => (&r.tenant_id, &r.member_id, *amount),
        };
        Some(((tenant.clone(), member.clone()), change))
    }
}

/// What a call was definitively answered: the coupon or transaction it made, or a business
/// refusal. `None` while it has no definitive answer (the replica died, the database or the
/// connection failed, the deadline passed): then it is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Made(String),
    Refused(String),
}

async fn send(channel: Channel, call: &Call) -> Option<Outcome> {
    let mut points = PointsAccountServiceClient::new(channel.clone());
    let result = match call {
        Call::Claim(request) => UserCouponServiceClient::new(channel)
            .claim_coupon(request.clone())
            .await
            .map(|r| r.into_inner().user_coupon.expect("coupon").id),
        Call::Deduct(request) => points
            .deduct_points(request.clone())
            .await
            .map(|r| r.into_inner().transaction.expect("entry").id),
        Call::Earn(request) => points
            .earn_points(request.clone())
            .await
            .map(|r| r.into_inner().transaction.expect("entry").id),
        Call::Freeze(request) => points
            .freeze_points(request.clone())
            .await
            .map(|r| r.into_inner().transaction.expect("entry").id),
        Call::Refund(request, _) => points
            .refund_points(request.clone())
            .await
            .map(|r| r.into_inner().transaction.expect("entry").id),
    };
    match result {
        Ok(id) => Some(Outcome::Made(id)),
        Err(status) => match status.code() {
            Code::ResourceExhausted | Code::FailedPrecondition => {
                let reason = tonic_types::StatusExt::get_details_error_info(&status)
                    .map(|info| info.reason)
                    .unwrap_or_default();
                Some(Outcome::Refused(reason))
            }
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown => None,
            _ => panic!("a fault is never answered as {status:?}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_load_lose_nothing_and_invent_nothing() {
    let mut redis = TestRedis::start();
    let app = redis.spawn_app().await;
    let config = &app.config;
    let database = config.database_url.clone().expect("PostgreSQL");
    let redis_url = config.redis_url.clone().expect("Redis");
    let mut replica = ServerProcess::start(&[
        ("MARKETING_DATABASE_URL", &database),
        ("MARKETING_REDIS_URL", &redis_url),
        ("MARKETING_REDIS_KEY_PREFIX", &config.redis_key_prefix),
        ("MARKETING_DB_MAX_CONNECTIONS", "8"),
    ]);
    let replica_channel = replica.channel().await;

    let created = create_template(
        &app,
        "acme",
        pb::CouponTemplate {
            total_stock: STOCK,
            per_member_limit: LIMIT,
            ..template()
        },
    )
    .await;
    let mut points = app.points();
    let mut funding = HashSet::new();
    for tenant in TENANTS {
        for member in 0..SPENDERS {
            let funded = points
                .earn_points(pb::EarnPointsRequest {
                    tenant_id: tenant.into(),
                    ..earn(&format!("spender-{member}"), FUNDING)
                })
                .await
                .expect("fund")
                .into_inner();
            funding.insert(funded.transaction.expect("entry").id);
        }
    }

    // The load: each caller cycles through claims and the points changes of both tenants,
    // and replicas, until told to stop; every call is kept with its first answer. A caller
    // told a deduction was made refunds it next.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let channels = [app.channel.clone(), replica_channel.clone()];
        let (stop, template_id) = (stop.clone(), created.id.clone());
        callers.spawn(async move {
            let mut calls: Vec<(Call, Option<Outcome>)> = Vec::new();
            let mut n = caller;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += CALLERS;
                let tenant = TENANTS[n / 5 % 2];
                let member = format!("spender-{}", n % SPENDERS);
                let amount = 1 + (n % 10) as i64;
                let refundable = match calls.last() {
                    Some((Call::Deduct(r), Some(Outcome::Made(id)))) => {
                        Some((r.clone(), id.clone()))
                    }
                    _ => None,
                };
                let call = match (refundable, n % 5) {
                    (Some((deducted, id)), _) => Call::Refund(
                        pb::RefundPointsRequest {
                            tenant_id: deducted.tenant_id.clone(),
                            member_id: deducted.member_id.clone(),
                            request_id: unique("refund"),
                            target: Some(pb::refund_points_request::Target::TransactionId(id)),
                            amount: None,
                            description: String::new(),
                        },
                        deducted.amount,
                    ),
                    (None, 0) => {
                        let member = format!("claimer-{}", n % CLAIMERS);
                        Call::Claim(claim_request("acme", &member, &template_id))
                    }
                    (None, 1 | 2) => Call::Deduct(pb::DeductPointsRequest {
                        tenant_id: tenant.into(),
                        ..deduct(&member, amount)
                    }),
                    (None, 3) => Call::Earn(pb::EarnPointsRequest {
                        tenant_id: tenant.into(),
                        ..earn(&member, amount)
                    }),
                    (None, _) => Call::Freeze(pb::FreezePointsRequest {
                        tenant_id: tenant.into(),
                        member_id: member.clone(),
                        request_id: unique("freeze"),
                        amount,
                        order_id: unique("order"),
                        hold_ttl: None,
                    }),
                };
                let outcome = send(channels[n / 3 % 2].clone(), &call).await;
                calls.push((call, outcome));
            }
            calls
        });
    }

    let step = Duration::from_millis(700);
    tokio::time::sleep(step).await;
    redis.stop();
    tokio::time::sleep(step).await;
    app.terminate_database_connections().await;
    tokio::time::sleep(step).await;
    // Redis comes back empty (no persistence): locks, fences and caches start over.
    redis.restart();
    tokio::time::sleep(step).await;
    replica.kill();
    tokio::time::sleep(step).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut calls = Vec::new();
    while let Some(done) = callers.join_next().await {
        calls.extend(done.expect("caller"));
    }

    // Every call without a definitive answer is retried on the surviving replica until it
    // has one: the retry either finds what the first attempt committed, or makes it now.
    let unanswered = calls.iter().filter(|(_, o)| o.is_none()).count();
    assert!(
        unanswered > 0,
        "no call was cut off mid-flight: the faults missed the load"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    for (call, outcome) in &mut calls {
        while outcome.is_none() {
            assert!(Instant::now() < deadline, "a retry never got an answer");
            *outcome = send(app.channel.clone(), call).await;
            if outcome.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let (claims, changes): (Vec<_>, Vec<_>) = calls
        .iter()
        .partition(|(call, _)| matches!(call, Call::Claim(_)));
    eprintln!(
        "faults: {} calls ({} claims, {} points changes), {unanswered} retried after the faults",
        calls.len(),
        claims.len(),
        changes.len()
    );
    assert!(
        claims.len() > 20 && changes.len() > 20,
        "the load ran throughout"
    );
    for (kind, is) in [
        (
            "claim",
            (|c: &Call| matches!(c, Call::Claim(_))) as fn(&Call) -> bool,
        ),
        ("earn", |c| matches!(c, Call::Earn(_))),
        ("deduction", |c| matches!(c, Call::Deduct(_))),
        ("hold", |c| matches!(c, Call::Freeze(_))),
        ("refund", |c| matches!(c, Call::Refund(..))),
    ] {
        assert!(
            calls
                .iter()
                .any(|(call, outcome)| is(call) && matches!(outcome, Some(Outcome::Made(_)))),
            "no {kind} was made"
        );
    }
    for (_, outcome) in &calls {
        if let Some(Outcome::Refused(reason)) = outcome {
            assert!(
                [
                    "OUT_OF_STOCK",
                    "MEMBER_LIMIT_REACHED",
                    "INSUFFICIENT_POINTS"
                ]
                .contains(&reason.as_str()),
                "{reason}"
            );
        }
    }
    let made = |calls: &[&(Call, Option<Outcome>)]| -> HashSet<String> {
        calls
            .iter()
            .filter_map(|(_, outcome)| match outcome {
                Some(Outcome::Made(id)) => Some(id.clone()),
                _ => None,
            })
            .collect()
    };
    let granted = made(&claims);
    let acknowledged = made(&changes);

    let db = app.state.shared().db.conn();
    let template_id = uuid::Uuid::parse_str(&created.id).expect("uuid");
    let coupons = user_coupon::Entity::find()
        .filter(user_coupon::Column::TemplateId.eq(template_id))
        .all(db)
        .await
        .expect("coupons");
    let stored: HashSet<String> = coupons.iter().map(|c| c.id.to_string()).collect();
    assert_eq!(
        stored, granted,
        "the coupons are exactly the granted claims"
    );
    let row = coupon_template::Entity::find_by_id(template_id)
        .one(db)
        .await
        .expect("query")
        .expect("template");
    // The stock sums are the schema's CHECKs; what it cannot check is that the counters
    // match the rows, and that nothing changed the stock.
    assert_eq!(row.claimed_count, coupons.len() as i64);
    assert_eq!(row.total_stock, STOCK);
    let mut per_member: HashMap<&str, i32> = HashMap::new();
    for coupon in &coupons {
        *per_member.entry(coupon.member_id.as_str()).or_default() += 1;
    }
    assert!(per_member.values().all(|n| *n <= LIMIT), "{per_member:?}");

    // The ledger's entries, but the funding, are exactly the acknowledged changes.
    let entries = points_transaction::Entity::find()
        .all(db)
        .await
        .expect("entries");
    let stored: HashSet<String> = entries
        .iter()
        .map(|e| e.id.to_string())
        .filter(|id| !funding.contains(id))
        .collect();
    assert_eq!(
        stored, acknowledged,
        "the points changes are exactly the acknowledged ones"
    );
    // Each balance: its funding plus what its client was told it earned and got back, minus
    // what it was told it spent and froze (holds stay held: their TTL is 15 minutes).
    let mut expected: HashMap<(String, String), i64> = HashMap::new();
    for tenant in TENANTS {
        for member in 0..SPENDERS {
            expected.insert((tenant.to_owned(), format!("spender-{member}")), FUNDING);
        }
    }
    for (call, outcome) in &calls {
        if let (Some(Outcome::Made(_)), Some((account, change))) = (outcome, call.points_change()) {
            *expected.entry(account).or_default() += change;
        }
    }
    for ((tenant, member), available) in &expected {
        let account = points_account::Entity::find()
            .filter(points_account::Column::TenantId.eq(tenant.as_str()))
            .filter(points_account::Column::MemberId.eq(member.as_str()))
            .one(db)
            .await
            .expect("account")
            .expect("funded");
        assert_eq!(
            account.available, *available,
            "{tenant}/{member}: the balance is what its client was told"
        );
    }
    audit(&app).await;

    // The surviving replica serves on without Redis.
    crate::fixtures::claim(&app, "acme", &unique("late"), &created.id)
        .await
        .map(|_| ())
        .or_else(|err| match err.code() {
            Code::ResourceExhausted => Ok(()),
            _ => Err(err),
        })
        .expect("served after the faults");
    drop(replica);
    app.stop().await;
}
