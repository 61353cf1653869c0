//! PointsAccountService: the ledger stays exact under concurrency on several replicas, and
//! every rule of lots, holds, refunds, expiry, caps, rules, the leaderboard and replays.

use std::{collections::HashMap, time::Duration};

use marketing_domain::{MemberId, TenantId, points::verify_replay};
use marketing_proto::v1::{self as pb, PointsTransactionType as Type};
use marketing_storage::{entity::points_account, points as store};
use marketing_tests::{Backend, TestApp, assert_error, assert_invalid};
use sea_orm::EntityTrait;
use tonic::Code;

use crate::fixtures::{claim, claim_request, create_template, now_seconds, template, unique};

/// Every account of the database equals the replay of its ledger, and no balance is negative.
pub(crate) async fn audit(app: &TestApp) -> usize {
    let db = app.state.shared().db.conn();
    let accounts = points_account::Entity::find()
        .all(db)
        .await
        .expect("accounts");
    for row in &accounts {
        let tenant = TenantId::parse("t", &row.tenant_id).expect("tenant");
        let member = MemberId::parse("m", &row.member_id).expect("member");
        let account = store::find_account(db, &tenant, &member)
            .await
            .expect("q")
            .expect("account");
        let entries = store::all_entries(db, account.id).await.expect("entries");
        let lots = store::all_lots(db, account.id).await.expect("lots");
        if let Err(problem) = verify_replay(&account, &entries, &lots) {
            panic!("{}/{}: {problem}", row.tenant_id, row.member_id);
        }
    }
    accounts.len()
}

pub(crate) fn earn(member: &str, amount: i64) -> pb::EarnPointsRequest {
    pb::EarnPointsRequest {
        tenant_id: "acme".into(),
        member_id: member.into(),
        request_id: unique("earn"),
        source: Some(pb::earn_points_request::Source::Amount(amount)),
        ..Default::default()
    }
}

pub(crate) fn deduct(member: &str, amount: i64) -> pb::DeductPointsRequest {
    pb::DeductPointsRequest {
        tenant_id: "acme".into(),
        member_id: member.into(),
        request_id: unique("deduct"),
        amount,
        ..Default::default()
    }
}

pub(crate) fn freeze(member: &str, amount: i64, order: &str) -> pb::FreezePointsRequest {
    pb::FreezePointsRequest {
        tenant_id: "acme".into(),
        member_id: member.into(),
        request_id: unique("freeze"),
        amount,
        order_id: order.into(),
        hold_ttl: None,
    }
}

pub(crate) fn confirm(
    member: &str,
    order: &str,
    amount: Option<i64>,
) -> pb::ConfirmFrozenPointsRequest {
    pb::ConfirmFrozenPointsRequest {
        tenant_id: "acme".into(),
        member_id: member.into(),
        request_id: unique("confirm"),
        hold_ref: Some(pb::confirm_frozen_points_request::HoldRef::OrderId(
            order.into(),
        )),
        amount,
    }
}

fn release(member: &str, order: &str) -> pb::ReleaseFrozenPointsRequest {
    pb::ReleaseFrozenPointsRequest {
        tenant_id: "acme".into(),
        member_id: member.into(),
        request_id: unique("release"),
        hold_ref: Some(pb::release_frozen_points_request::HoldRef::OrderId(
            order.into(),
        )),
    }
}

fn refund(member: &str, transaction: &str, amount: Option<i64>) -> pb::RefundPointsRequest {
    pb::RefundPointsRequest {
        tenant_id: "acme".into(),
        member_id: member.into(),
        request_id: unique("refund"),
        target: Some(pb::refund_points_request::Target::TransactionId(
            transaction.into(),
        )),
        amount,
        description: String::new(),
    }
}

async fn account(app: &TestApp, member: &str) -> pb::PointsAccount {
    app.points()
        .get_points_account(pb::GetPointsAccountRequest {
            tenant_id: "acme".into(),
            member_id: member.into(),
        })
        .await
        .expect("account")
        .into_inner()
        .points_account
        .expect("account")
}

/// A tiny deterministic generator: the storm is the same every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

const CALLERS: u64 = 50;
const OPS_PER_CALLER: u64 = 20;
const MEMBERS: u64 = 20;

/// 1,000 mixed operations by 50 concurrent callers over 20 members, spread over `replicas`:
/// half of them acme's, half globex's, in pairs that send the same operations with the same
/// member ids, request ids and orders (each in its own tenant) at the same time.
async fn mixed_storm(replicas: &[&TestApp]) {
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let mut client = replicas[caller as usize % replicas.len()].points();
        let tenant = ["acme", "globex"][caller as usize % 2];
        let pair = caller / 2;
        callers.spawn(async move {
            let mut rng = Lcg(pair + 1);
            let mut open_holds: Vec<(String, String)> = Vec::new();
            let mut spent: Vec<(String, String)> = Vec::new();
            let mut refusals: HashMap<String, usize> = HashMap::new();
            let mut acked: Vec<pb::PointsTransaction> = Vec::new();
            for op in 0..OPS_PER_CALLER {
                let member = format!("member-{}", rng.next(MEMBERS));
                let roll = rng.next(100);
                // The pair's request id: the same in both tenants.
                let request_id = format!("storm-{pair}-{op}");
                macro_rules! ours {
                    ($request:expr) => {{
                        let mut request = $request;
                        request.tenant_id = tenant.into();
                        request.request_id = request_id.clone();
                        request
                    }};
                }
                let result: Result<(), tonic::Status> = if roll < 30 {
                    client
                        .earn_points(ours!(earn(&member, 1 + rng.next(100) as i64)))
                        .await
                        .map(|r| acked.extend(r.into_inner().transaction))
                } else if roll < 50 {
                    client
                        .deduct_points(ours!(deduct(&member, 1 + rng.next(50) as i64)))
                        .await
                        .map(|r| {
                            if let Some(t) = r.into_inner().transaction {
                                spent.push((member.clone(), t.id.clone()));
                                acked.push(t);
                            }
                        })
                } else if roll < 65 {
                    let order = format!("order-{pair}-{op}");
                    client
                        .freeze_points(ours!(freeze(&member, 1 + rng.next(50) as i64, &order)))
                        .await
                        .map(|r| {
                            acked.extend(r.into_inner().transaction);
                            open_holds.push((member.clone(), order));
                        })
                } else if roll < 75 && !open_holds.is_empty() {
                    let (member, order) = open_holds.remove(0);
                    let part = (rng.next(2) == 0).then_some(1);
                    client
                        .confirm_frozen_points(ours!(confirm(&member, &order, part)))
                        .await
                        .map(|r| {
                            if let Some(t) = r.into_inner().transaction {
                                if t.r#type == Type::Confirm as i32 {
                                    spent.push((member, t.id.clone()));
                                }
                                acked.push(t);
                            }
                        })
                } else if roll < 85 && !open_holds.is_empty() {
                    let (member, order) = open_holds.remove(0);
                    client
                        .release_frozen_points(ours!(release(&member, &order)))
                        .await
                        .map(|r| acked.extend(r.into_inner().transaction))
                } else if !spent.is_empty() {
                    let (member, tx) = spent[rng.next(spent.len() as u64) as usize].clone();
                    let part = (rng.next(2) == 0).then_some(1 + rng.next(5) as i64);
                    client
                        .refund_points(ours!(refund(&member, &tx, part)))
                        .await
                        .map(|r| acked.extend(r.into_inner().transaction))
                } else {
                    client
                        .earn_points(ours!(earn(&member, 10)))
                        .await
                        .map(|r| acked.extend(r.into_inner().transaction))
                };
                if let Err(status) = result {
                    let reason = tonic_types::StatusExt::get_details_error_info(&status)
                        .map(|info| info.reason)
                        .unwrap_or_else(|| format!("{status:?}"));
                    *refusals.entry(reason).or_default() += 1;
                }
            }
            (refusals, acked)
        });
    }
    let mut refusals: HashMap<String, usize> = HashMap::new();
    let mut acked = Vec::new();
    while let Some(done) = callers.join_next().await {
        let (caller_refusals, caller_acked) = done.expect("caller");
        for (reason, n) in caller_refusals {
            *refusals.entry(reason).or_default() += n;
        }
        acked.extend(caller_acked);
    }
    eprintln!("points storm refusals: {refusals:?}");
    for reason in refusals.keys() {
        assert!(
            [
                "INSUFFICIENT_POINTS",
                "ACCOUNT_NOT_FOUND",
                "REFUND_EXCEEDS_SPENT"
            ]
            .contains(&reason.as_str()),
            "unexpected failure {reason} (no CONCURRENT_MODIFICATION, no internal errors)"
        );
    }
    let audited = audit(replicas[0]).await;
    assert!(audited > 0);
    // Every kind of operation really happened.
    let entries = marketing_storage::entity::points_transaction::Entity::find()
        .all(replicas[0].state.shared().db.conn())
        .await
        .expect("entries");
    let mut kinds: HashMap<i16, usize> = HashMap::new();
    for entry in &entries {
        *kinds.entry(entry.tx_type).or_default() += 1;
    }
    eprintln!("points storm ledger entries by type code: {kinds:?}");
    for code in 1..=6 {
        assert!(
            kinds.get(&code).is_some_and(|n| *n > 0),
            "no entries of type {code}"
        );
    }
    reconcile(replicas[0], &acked).await;
}

/// The acknowledged transactions are exactly the ledger's entries (the sweeper's aside), with
/// the amounts the clients were shown; every account's `frozen` is the sum of its open holds;
/// no deduction or confirmed hold was refunded past what it took.
async fn reconcile(app: &TestApp, acked: &[pb::PointsTransaction]) {
    use marketing_domain::points::{HoldStatus, TxType};
    use marketing_storage::entity::{points_hold, points_transaction};
    let db = app.state.shared().db.conn();
    let entries = points_transaction::Entity::find()
        .all(db)
        .await
        .expect("entries");
    let shown: HashMap<String, &pb::PointsTransaction> =
        acked.iter().map(|t| (t.id.clone(), t)).collect();
    assert_eq!(
        shown.len(),
        acked.len(),
        "every acknowledgement is its own entry"
    );
    let acked_requests: std::collections::HashSet<(&str, &str)> = acked
        .iter()
        .map(|t| (t.tenant_id.as_str(), t.request_id.as_str()))
        .collect();
    let mut matched = 0;
    for entry in &entries {
        match shown.get(&entry.id.to_string()) {
            Some(t) => {
                assert_eq!(
                    (
                        t.amount,
                        t.frozen_amount,
                        t.member_id.as_str(),
                        t.tenant_id.as_str()
                    ),
                    (
                        entry.amount,
                        entry.frozen_amount,
                        entry.member_id.as_str(),
                        entry.tenant_id.as_str()
                    ),
                    "entry {} as acknowledged",
                    entry.id
                );
                matched += 1;
            }
            None => {
                let release = entry.tx_type == TxType::Release.code() && entry.hold_id.is_some();
                // A partial confirm releases the rest of its hold in the same request.
                let rest_of_a_confirm = release
                    && entry.request_id.as_ref().is_some_and(|id| {
                        acked_requests.contains(&(entry.tenant_id.as_str(), id.as_str()))
                    });
                let swept = entry.tx_type == TxType::Expire.code()
                    || (release && entry.request_id.is_none());
                assert!(
                    rest_of_a_confirm || swept,
                    "entry {} (type {}) was never acknowledged to a client",
                    entry.id,
                    entry.tx_type
                );
            }
        }
    }
    assert_eq!(
        matched,
        acked.len(),
        "every acknowledged transaction is in the ledger"
    );

    let holds = points_hold::Entity::find().all(db).await.expect("holds");
    let mut open: HashMap<uuid::Uuid, i64> = HashMap::new();
    for hold in &holds {
        if hold.status == HoldStatus::Held.code() {
            *open.entry(hold.account_id).or_default() += hold.amount;
        }
    }
    // Each (tenant, member)'s balance is the sum of what its own client was told (with the
    // rest of a partial confirm, released by the same request), and every entry is of its
    // account's tenant and member.
    let mut told: HashMap<uuid::Uuid, i64> = HashMap::new();
    for entry in &entries {
        let acknowledged = entry
            .request_id
            .as_ref()
            .is_some_and(|id| acked_requests.contains(&(entry.tenant_id.as_str(), id.as_str())));
        if acknowledged || entry.tx_type == TxType::Expire.code() || entry.request_id.is_none() {
            *told.entry(entry.account_id).or_default() += entry.amount;
        }
    }
    let accounts = points_account::Entity::find()
        .all(db)
        .await
        .expect("accounts");
    for entry in &entries {
        let account = accounts
            .iter()
            .find(|a| a.id == entry.account_id)
            .expect("the entry's account");
        assert_eq!(
            (entry.tenant_id.as_str(), entry.member_id.as_str()),
            (account.tenant_id.as_str(), account.member_id.as_str()),
            "entry {} is of another tenant's or member's account",
            entry.id
        );
    }
    for account in &accounts {
        assert_eq!(
            account.frozen,
            open.get(&account.id).copied().unwrap_or(0),
            "{}: frozen is its open holds",
            account.member_id
        );
        assert_eq!(
            account.available,
            told.get(&account.id).copied().unwrap_or(0),
            "{}/{}: the balance is what its client was told",
            account.tenant_id,
            account.member_id
        );
    }

    let by_id: HashMap<uuid::Uuid, &points_transaction::Model> =
        entries.iter().map(|e| (e.id, e)).collect();
    let mut refunded: HashMap<uuid::Uuid, i64> = HashMap::new();
    for entry in entries
        .iter()
        .filter(|e| e.tx_type == TxType::Refund.code())
    {
        let target = entry
            .related_transaction_id
            .expect("a refund names its target");
        *refunded.entry(target).or_default() += entry.amount;
    }
    for (target, amount) in refunded {
        let taken = by_id.get(&target).expect("the refunded entry exists");
        let spent = -(taken.amount + taken.frozen_amount);
        assert!(
            amount <= spent,
            "{target}: refunded {amount} of {spent} taken"
        );
    }
}

/// 50 concurrent deductions of 10 on one account funded with exactly 500.
async fn deduction_race(replicas: &[&TestApp]) {
    replicas[0]
        .points()
        .earn_points(earn("hot", 500))
        .await
        .expect("fund");
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..50 {
        let mut client = replicas[i % replicas.len()].points();
        calls.spawn(async move { client.deduct_points(deduct("hot", 10)).await });
    }
    while let Some(done) = calls.join_next().await {
        done.expect("task").expect("every deduction succeeds");
    }
    let hot = account(replicas[0], "hot").await;
    assert_eq!((hot.available, hot.total_spent), (0, 500));
    audit(replicas[0]).await;
}

/// 30 members without accounts each earn 4 times at once, over every replica: batches open
/// the accounts together, and each member ends with one account holding all four earns.
async fn first_earns_race(replicas: &[&TestApp]) {
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..120 {
        let mut client = replicas[i % replicas.len()].points();
        let member = format!("newcomer-{}", i % 30);
        calls.spawn(async move { client.earn_points(earn(&member, 7)).await });
    }
    while let Some(done) = calls.join_next().await {
        done.expect("task").expect("every first earn succeeds");
    }
    let accounts = points_account::Entity::find()
        .all(replicas[0].state.shared().db.conn())
        .await
        .expect("accounts");
    for m in 0..30 {
        let member = format!("newcomer-{m}");
        let rows = accounts.iter().filter(|a| a.member_id == member).count();
        assert_eq!(rows, 1, "{member} has one account");
        let shown = account(replicas[0], &member).await;
        assert_eq!((shown.available, shown.total_earned), (28, 28), "{member}");
    }
    audit(replicas[0]).await;
}

/// 40 earns and 40 deductions for 10 orders at once, from 4 members over every replica, with
/// the same orders in another tenant: each order earns once and deducts once per tenant,
/// whichever batch or replica its requests reach; the others are refused as duplicates.
async fn orders_race(replicas: &[&TestApp]) {
    for member in 0..4 {
        replicas[0]
            .points()
            .earn_points(earn(&format!("buyer-{member}"), 1_000))
            .await
            .expect("fund");
    }
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..80 {
        let mut client = replicas[i % replicas.len()].points();
        let member = format!("buyer-{}", i % 4);
        let order = format!("race-order-{}", i % 10);
        calls.spawn(async move {
            let (kind, result) = if (i / 10) % 2 == 0 {
                let mut request = earn(&member, 10);
                (request.biz_type, request.biz_id) = ("order".into(), order.clone());
                ("earn", client.earn_points(request).await.map(|_| ()))
            } else {
                let mut request = deduct(&member, 1);
                (request.biz_type, request.biz_id) = ("order".into(), order.clone());
                ("deduct", client.deduct_points(request).await.map(|_| ()))
            };
            (kind, order, result)
        });
    }
    let mut granted: HashMap<(&str, String), usize> = HashMap::new();
    while let Some(done) = calls.join_next().await {
        let (kind, order, result) = done.expect("task");
        match result {
            Ok(()) => *granted.entry((kind, order)).or_default() += 1,
            Err(err) => assert_error(&err, Code::AlreadyExists, "DUPLICATE_BIZ_REFERENCE"),
        }
    }
    assert_eq!(
        granted.len(),
        20,
        "every order earned and deducted: {granted:?}"
    );
    assert!(granted.values().all(|n| *n == 1), "{granted:?}");
    // The same order in another tenant is another reference.
    let mut elsewhere = earn("buyer-0", 10);
    elsewhere.tenant_id = "other-shop".into();
    (elsewhere.biz_type, elsewhere.biz_id) = ("order".into(), "race-order-0".into());
    replicas[0]
        .points()
        .earn_points(elsewhere)
        .await
        .expect("another tenant's order");
    audit(replicas[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_keep_every_ledger_exact() {
    let app = marketing_tests::spawn_app(Backend::PostgresRedis).await;
    let replica = app.spawn_replica().await;
    mixed_storm(&[&app, &replica]).await;
    deduction_race(&[&app, &replica]).await;
    first_earns_race(&[&app, &replica]).await;
    orders_race(&[&app, &replica]).await;
    refund_race(&[&app, &replica], "refund-race").await;
    hold_race(&[&app, &replica], "hold-race").await;
    replica.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_keeps_every_ledger_exact() {
    let app = marketing_tests::spawn_app(Backend::Embedded).await;
    mixed_storm(&[&app]).await;
    deduction_race(&[&app]).await;
    first_earns_race(&[&app]).await;
    orders_race(&[&app]).await;
    app.stop().await;
}

/// PostgreSQL's one-statement batch write (`points_batch`) checks every account it read: a
/// ledger planned on a version another write has replaced writes nothing at all, neither the
/// account, its lot, its entry and allocation nor the request's record; planned again on what
/// the database holds now, it writes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_write_planned_on_a_replaced_version_writes_nothing() {
    use marketing_domain::{RequestId, UnixMicros, points::EntryMeta, points::Ledger};
    use marketing_storage::{
        idempotency::{IdempotencyKey, Outcome},
        points::batch::{self as points_batch, BatchWrite},
    };

    let app = marketing_tests::spawn_app(Backend::PostgresRedis).await;
    let pool = app
        .state
        .shared()
        .db
        .postgres()
        .expect("PostgreSQL")
        .clone();
    let (tenant, member) = (
        TenantId::parse("t", "acme").expect("tenant"),
        MemberId::parse("m", "stale").expect("member"),
    );
    let mut points = app.points();
    points.earn_points(earn("stale", 100)).await.expect("earn");
    let plan = |reads: points_batch::BatchReads, amount: i64| {
        let (account, lots) = reads.ledgers.into_iter().next().expect("the account");
        let mut ledger = Ledger::new(account, lots, UnixMicros::now());
        ledger
            .deduct(amount, EntryMeta::default())
            .expect("planned");
        ledger
    };
    let write = |ledger: &Ledger, request: &str| {
        let mut write = BatchWrite::default();
        write.add_ledger(ledger);
        let key = IdempotencyKey {
            tenant_id: tenant.clone(),
            request_id: RequestId::parse("r", request).expect("request id"),
            client: String::new(),
            operation: "DeductPoints",
            fingerprint: vec![1],
        };
        let outcome = Outcome {
            status_code: 0,
            response: Vec::new(),
        };
        write.add_record(&key, outcome, UnixMicros::now());
        write
    };
    let keys = points_batch::BatchKeys {
        members: vec![(&tenant, &member)],
        ..Default::default()
    };
    let read = || points_batch::read_batch(&pool, &keys);
    let stale = plan(read().await.expect("read"), 30);
    points
        .deduct_points(deduct("stale", 5))
        .await
        .expect("meanwhile");

    let refused = write(&stale, "stale-write").execute(&pool).await;
    assert!(
        matches!(
            refused,
            Err(marketing_domain::MarketingError::ConcurrentModification(_))
        ),
        "{refused:?}"
    );
    let shown = account(&app, "stale").await;
    assert_eq!((shown.available, shown.total_spent), (95, 5));
    let db = app.state.shared().db.conn();
    let account_id = store::find_account(db, &tenant, &member)
        .await
        .expect("q")
        .expect("account")
        .id;
    assert_eq!(
        store::all_entries(db, account_id)
            .await
            .expect("entries")
            .len(),
        2
    );
    let fresh = read_batch_records(&pool, &tenant, "stale-write").await;
    assert!(fresh.is_empty(), "the refused write left its record");

    let current = plan(read().await.expect("read"), 30);
    write(&current, "fresh-write")
        .execute(&pool)
        .await
        .expect("written");
    let shown = account(&app, "stale").await;
    assert_eq!((shown.available, shown.total_spent), (65, 35));
    assert_eq!(
        read_batch_records(&pool, &tenant, "fresh-write")
            .await
            .len(),
        1
    );
    audit(&app).await;
    app.stop().await;
}

/// The one-statement write of a refund planned on a stale account, with a lot read after a
/// concurrent refund gave points back to it (the short path's planning reads come after its
/// one read), is a lost race, served again: not a CHECK violation answered INTERNAL. Here the
/// stale plan would put 13 points back into a 10-point lot; the account's version check must
/// stop it before the lot's CHECK does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_planned_on_a_stale_account_loses_the_race_cleanly() {
    use marketing_domain::{UnixMicros, points::EntryMeta, points::Ledger};
    use marketing_storage::points::batch::{self as points_batch, BatchWrite};

    let app = marketing_tests::spawn_app(Backend::PostgresRedis).await;
    let pool = app
        .state
        .shared()
        .db
        .postgres()
        .expect("PostgreSQL")
        .clone();
    let (tenant, member) = (
        TenantId::parse("t", "acme").expect("tenant"),
        MemberId::parse("m", "refunded").expect("member"),
    );
    let mut points = app.points();
    points
        .earn_points(earn("refunded", 10))
        .await
        .expect("earn");
    let deducted = points
        .deduct_points(deduct("refunded", 10))
        .await
        .expect("deduct")
        .into_inner()
        .transaction
        .expect("entry");
    let target = uuid::Uuid::parse_str(&deducted.id).expect("uuid");
    let keys = points_batch::BatchKeys {
        members: vec![(&tenant, &member)],
        ..Default::default()
    };
    let reads = points_batch::read_batch(&pool, &keys).await.expect("read");
    let (stale, live) = reads.ledgers.into_iter().next().expect("the account");
    assert!(live.is_empty(), "the only lot is spent");
    // What the short path's planning reads before the race: all 10 points refundable.
    let db = app.state.shared().db.conn();
    let taken = store::refundable_allocations(db, target)
        .await
        .expect("allocations");
    assert_eq!(taken.iter().map(|(_, left)| left).sum::<i64>(), 10);
    points
        .refund_points(refund("refunded", &deducted.id, Some(3)))
        .await
        .expect("a refund meanwhile");
    // ... and after it: the lot, with the 3 points the other refund gave back.
    let lot_ids: Vec<uuid::Uuid> = taken.iter().map(|(id, _)| *id).collect();
    let lots = store::lots_by_id(db, stale.id, &lot_ids)
        .await
        .expect("lots");
    let mut ledger = Ledger::new(stale, Vec::new(), UnixMicros::now());
    ledger.add_lots(lots);
    ledger
        .refund(target, &taken, Some(10), EntryMeta::default())
        .expect("planned on the mixed reads");
    let mut write = BatchWrite::default();
    write.add_ledger(&ledger);
    let lost = write.execute(&pool).await;
    assert!(
        matches!(
            lost,
            Err(marketing_domain::MarketingError::ConcurrentModification(_))
        ),
        "{lost:?}"
    );
    let shown = account(&app, "refunded").await;
    assert_eq!((shown.available, shown.total_refunded), (3, 3));
    audit(&app).await;
    app.stop().await;
}

/// The transactional store (`TxnBatch`) leaves out a ledger whose account another write
/// changed after the batch read it: nothing of it is written, and the batch plans it again.
/// (On SQLite the write transaction excludes other writers, so this is PostgreSQL's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_leaves_out_a_ledger_whose_account_moved() {
    use marketing_domain::{UnixMicros, points::EntryMeta, points::Ledger};
    use marketing_storage::points::{
        batch::BatchKeys,
        store::{LedgerStore, PlannedLedger, TxnBatch},
    };

    let app = marketing_tests::spawn_app(Backend::PostgresRedis).await;
    let (tenant, member) = (
        TenantId::parse("t", "acme").expect("tenant"),
        MemberId::parse("m", "moved").expect("member"),
    );
    let mut points = app.points();
    points.earn_points(earn("moved", 100)).await.expect("earn");
    let keys = BatchKeys {
        members: vec![(&tenant, &member)],
        ..Default::default()
    };
    let mut store = TxnBatch::begin(&app.state.shared().db)
        .await
        .expect("begin");
    let reads = store.read(&keys).await.expect("read");
    let (read, lots) = reads.ledgers.into_iter().next().expect("the account");
    let mut ledger = Ledger::new(read, lots, UnixMicros::now());
    ledger.deduct(30, EntryMeta::default()).expect("planned");
    points
        .deduct_points(deduct("moved", 5))
        .await
        .expect("meanwhile");
    let daily = HashMap::new();
    let written = store
        .write(&[PlannedLedger {
            ledger: &ledger,
            daily: &daily,
        }])
        .await
        .expect("write");
    assert!(written.is_empty(), "a moved account was written");
    store
        .commit(Vec::new(), UnixMicros::now())
        .await
        .expect("commit");
    let shown = account(&app, "moved").await;
    assert_eq!((shown.available, shown.total_spent), (95, 5));
    audit(&app).await;
    app.stop().await;
}

async fn read_batch_records(
    pool: &sea_orm::sqlx::PgPool,
    tenant: &TenantId,
    request: &str,
) -> Vec<marketing_storage::idempotency::RecordKey> {
    let keys = marketing_storage::points::batch::BatchKeys {
        requests: vec![(tenant, "", request)],
        ..Default::default()
    };
    marketing_storage::points::batch::read_batch(pool, &keys)
        .await
        .expect("read")
        .records
        .into_keys()
        .collect()
}

marketing_tests::backend_suite! {
    // The sweeper stays off: the tests move the clock and sweep when they mean to.
    with marketing_tests::Options {
        sweep_interval: Some(std::time::Duration::from_secs(3600)),
        ..marketing_tests::Options::default()
    };
    deductions_take_the_earliest_expiring_lots_first,
    holds_confirm_in_part_and_release,
    refunds_return_points_to_their_lots,
    the_sweeper_expires_lots_and_holds,
    rules_price_events_with_daily_caps,
    rule_changes_reach_earning_at_once,
    the_leaderboard_ranks_and_rebuilds,
    replays_return_the_first_outcome,
    tenants_are_isolated,
    bad_points_requests_are_rejected,
    the_ledger_lists_newest_first,
    any_text_and_bytes_come_back_as_written,
    concurrent_partial_refunds_answer_as_one_after_another,
    a_tenants_bad_commands_fail_alone,
    balances_and_totals_near_their_maximum_refuse_cleanly,
    a_blocked_points_write_answers_at_the_clients_deadline,
    a_planned_ledger_is_written_column_for_column,
    adjustments_add_a_lot_or_take_the_soonest_expiring_with_a_reason,
    rules_by_amount_earn_per_amount_spent_within_their_cap,
    a_mass_expiry_is_swept_in_batches_and_the_ledger_still_sums,
    accounts_with_many_due_lots_are_swept_to_the_last,
}

/// A campaign's points all due at once: one sweep works through every account, many at a
/// time in the points batches, batch after batch until none is due (or its time is up), and
/// the ledger still sums to the balances.
async fn a_mass_expiry_is_swept_in_batches_and_the_ledger_still_sums(app: &TestApp) {
    use futures::StreamExt as _;
    const MEMBERS: usize = 1_200;
    let expiry = crate::fixtures::after_millis(60_000);
    let earned: Vec<_> = futures::stream::iter(0..MEMBERS)
        .map(|n| {
            let mut client = app.points();
            async move {
                client
                    .earn_points(pb::EarnPointsRequest {
                        expire_time: expiry,
                        ..earn(&format!("mass-{n}"), 100)
                    })
                    .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(earned.iter().all(Result::is_ok), "every earn");
    app.advance_clock(Duration::from_secs(61));
    let started = std::time::Instant::now();
    let swept = app
        .state
        .points
        .sweep_points(100, Duration::from_secs(600))
        .await
        .expect("sweep");
    eprintln!(
        "mass expiry: {} accounts swept in {:?}",
        swept.accounts_expired,
        started.elapsed()
    );
    assert_eq!(swept.accounts_expired, MEMBERS, "{swept:?}");
    assert!(swept.caught_up);
    let again = app
        .state
        .points
        .sweep_points(100, Duration::from_secs(600))
        .await
        .expect("sweep");
    assert_eq!(again.accounts_expired, 0, "nothing left due");
    audit(app).await;
}

/// Accounts holding several due lots each: a pass that reads a batch of lots finds fewer
/// accounts than that, and must not take it for the end of what is due.
async fn accounts_with_many_due_lots_are_swept_to_the_last(app: &TestApp) {
    const MEMBERS: usize = 12;
    const LOTS: usize = 3;
    let expiry = crate::fixtures::after_millis(60_000);
    let mut client = app.points();
    for n in 0..MEMBERS {
        for _ in 0..LOTS {
            client
                .earn_points(pb::EarnPointsRequest {
                    expire_time: expiry,
                    ..earn(&format!("lots-{n}"), 10)
                })
                .await
                .expect("earn");
        }
    }
    app.advance_clock(Duration::from_secs(61));
    // Ten lots a pass: at most four accounts, never ten.
    let swept = app
        .state
        .points
        .sweep_points(10, Duration::from_secs(600))
        .await
        .expect("sweep");
    assert_eq!(swept.accounts_expired, MEMBERS, "{swept:?}");
    assert!(swept.caught_up);
    for n in 0..MEMBERS {
        let account = account(app, &format!("lots-{n}")).await;
        assert_eq!(account.available, 0, "lots-{n}: every lot expired");
        assert_eq!(account.total_expired, (10 * LOTS) as i64);
    }
    audit(app).await;
}

async fn rules_by_amount_earn_per_amount_spent_within_their_cap(app: &TestApp) {
    let until_noon = (43_200 - now_seconds().rem_euclid(86_400)).rem_euclid(86_400);
    app.advance_clock(Duration::from_secs(until_noon as u64));
    let mut client = app.points();
    // 1 point per 1.00 EUR, doubled, halves up; at most 100 a day.
    let mut by_amount = rule("order_paid", 1, Some(100));
    if let Some(terms) = by_amount.points_rule.as_mut() {
        terms.per_amount = Some(pb::PointsPerAmount {
            currency: "EUR".into(),
            amount: 100,
            multiplier_bp: 20_000,
            rounding: pb::PointsRounding::HalfUp.into(),
        });
    }
    let created = client
        .create_points_rule(by_amount)
        .await
        .expect("rule")
        .into_inner()
        .points_rule
        .expect("rule");
    assert_eq!(
        created.per_amount.as_ref().map(|p| p.multiplier_bp),
        Some(20_000)
    );
    let spend = |amount: i64, currency: &str| pb::EarnPointsRequest {
        order_amount: amount,
        currency: currency.into(),
        ..earn_event("m1", "order_paid")
    };
    // 12.25 EUR x 2 = 24.5 points: 25.
    let first = client
        .earn_points(spend(1_225, "EUR"))
        .await
        .expect("earn")
        .into_inner();
    assert_eq!(first.transaction.expect("entry").amount, 25);
    // 50.00 EUR would be 100: the cap leaves 75.
    let second = client
        .earn_points(spend(5_000, "EUR"))
        .await
        .expect("earn")
        .into_inner();
    assert_eq!(second.transaction.expect("entry").amount, 75);
    let capped = client
        .earn_points(spend(1_000, "EUR"))
        .await
        .expect_err("cap");
    assert_error(&capped, Code::FailedPrecondition, "DAILY_CAP_REACHED");
    let other = client
        .earn_points(pb::EarnPointsRequest {
            member_id: "m2".into(),
            ..spend(1_000, "USD")
        })
        .await
        .expect_err("currency");
    assert_error(&other, Code::FailedPrecondition, "CURRENCY_MISMATCH");
    let missing = client
        .earn_points(earn_event("m2", "order_paid"))
        .await
        .expect_err("no amount");
    assert_invalid(&missing, &["order_amount"]);
    // A rule of fixed points refuses an amount.
    client
        .create_points_rule(rule("signup", 10, None))
        .await
        .expect("rule");
    let fixed = client
        .earn_points(pb::EarnPointsRequest {
            order_amount: 100,
            currency: "EUR".into(),
            ..earn_event("m2", "signup")
        })
        .await
        .expect_err("fixed rule");
    assert_invalid(&fixed, &["order_amount"]);
    audit(app).await;
}

fn adjust(tenant: &str, member: &str, amount: i64, reason: &str) -> pb::AdjustPointsRequest {
    pb::AdjustPointsRequest {
        tenant_id: tenant.into(),
        member_id: member.into(),
        request_id: unique("adjust"),
        amount,
        reason: reason.into(),
        expire_time: None,
    }
}

async fn adjustments_add_a_lot_or_take_the_soonest_expiring_with_a_reason(app: &TestApp) {
    let mut client = app.points();
    // Up opens the account; the other tenant's member of the same id is another account.
    let up = client
        .adjust_points(pb::AdjustPointsRequest {
            expire_time: crate::fixtures::after_millis(5 * 86_400_000),
            ..adjust("acme", "m1", 100, "goodwill for a late parcel")
        })
        .await
        .expect("adjust up")
        .into_inner();
    let entry = up.transaction.expect("entry");
    assert_eq!(entry.r#type, pb::PointsTransactionType::Adjust as i32);
    assert_eq!(entry.amount, 100);
    assert_eq!(entry.description, "goodwill for a late parcel");
    client
        .earn_points(earn_expiring("m1", 100, 10 * 86_400))
        .await
        .expect("earn");
    client
        .adjust_points(adjust("beta", "m1", 7, "other tenant"))
        .await
        .expect("beta");
    // Down takes the soonest-expiring lot first: the adjusted one (5 days).
    let down = client
        .adjust_points(adjust("acme", "m1", -150, "fraud correction"))
        .await
        .expect("adjust down")
        .into_inner();
    let shown = down.points_account.expect("account");
    assert_eq!(shown.available, 50);
    assert_eq!(shown.next_expiry_amount, 50);
    let expiry = shown.next_expiry_time.expect("expiry").seconds;
    assert!((expiry - (now_seconds() + 10 * 86_400)).abs() < 60);
    assert_eq!((shown.total_earned, shown.total_spent), (200, 150));
    // Never below what is available; a reason is required; zero is no adjustment.
    let short = client
        .adjust_points(adjust("acme", "m1", -51, "too much"))
        .await
        .expect_err("short");
    assert_error(&short, Code::FailedPrecondition, "INSUFFICIENT_POINTS");
    let bad = client
        .adjust_points(pb::AdjustPointsRequest {
            expire_time: crate::fixtures::after_millis(86_400_000),
            ..adjust("acme", "m1", 0, "  ")
        })
        .await
        .expect_err("bad");
    assert_invalid(&bad, &["amount", "reason"]);
    let beta = client
        .get_points_account(pb::GetPointsAccountRequest {
            tenant_id: "beta".into(),
            member_id: "m1".into(),
        })
        .await
        .expect("beta account")
        .into_inner()
        .points_account
        .expect("account");
    assert_eq!(beta.available, 7);
    audit(app).await;
}

fn earn_expiring(member: &str, amount: i64, in_seconds: i64) -> pb::EarnPointsRequest {
    pb::EarnPointsRequest {
        expire_time: crate::fixtures::after_millis(in_seconds * 1000),
        ..earn(member, amount)
    }
}

async fn deductions_take_the_earliest_expiring_lots_first(app: &TestApp) {
    let mut client = app.points();
    client
        .earn_points(earn_expiring("m1", 100, 10 * 86_400))
        .await
        .expect("earn");
    client
        .earn_points(earn_expiring("m1", 100, 5 * 86_400))
        .await
        .expect("earn");
    client.earn_points(earn("m1", 100)).await.expect("earn");
    let done = client
        .deduct_points(deduct("m1", 150))
        .await
        .expect("deduct")
        .into_inner();
    let shown = done.points_account.expect("account");
    assert_eq!(shown.available, 150);
    // The 5-day lot is gone, 50 of the 10-day lot are left: they expire next.
    assert_eq!(shown.next_expiry_amount, 50);
    let expiry = shown.next_expiry_time.expect("expiry").seconds;
    assert!((expiry - (now_seconds() + 10 * 86_400)).abs() < 60);
    let err = client
        .deduct_points(deduct("m1", 151))
        .await
        .expect_err("short");
    assert_error(&err, Code::FailedPrecondition, "INSUFFICIENT_POINTS");
    audit(app).await;
}

async fn holds_confirm_in_part_and_release(app: &TestApp) {
    let mut client = app.points();
    client.earn_points(earn("m1", 500)).await.expect("earn");
    let frozen = client
        .freeze_points(freeze("m1", 200, "order-1"))
        .await
        .expect("freeze")
        .into_inner();
    let shown = frozen.points_account.expect("account");
    assert_eq!((shown.available, shown.frozen), (300, 200));
    let err = client
        .freeze_points(freeze("m1", 10, "order-1"))
        .await
        .expect_err("one hold per order");
    assert_error(&err, Code::FailedPrecondition, "ORDER_ALREADY_HELD");

    let confirmed = client
        .confirm_frozen_points(confirm("m1", "order-1", Some(120)))
        .await
        .expect("confirm")
        .into_inner();
    let hold = confirmed.hold.expect("hold");
    assert_eq!(
        (hold.state, hold.confirmed_amount),
        (pb::PointsHoldState::Confirmed as i32, 120)
    );
    let shown = confirmed.points_account.expect("account");
    assert_eq!(
        (shown.available, shown.frozen, shown.total_spent),
        (380, 0, 120)
    );
    let err = client
        .confirm_frozen_points(confirm("m1", "order-1", None))
        .await
        .expect_err("once");
    assert_error(&err, Code::FailedPrecondition, "INVALID_HOLD_STATE");
    let err = client
        .release_frozen_points(release("m1", "order-1"))
        .await
        .expect_err("once");
    assert_error(&err, Code::FailedPrecondition, "INVALID_HOLD_STATE");

    client
        .freeze_points(freeze("m1", 80, "order-2"))
        .await
        .expect("freeze");
    let released = client
        .release_frozen_points(release("m1", "order-2"))
        .await
        .expect("release")
        .into_inner();
    assert_eq!(
        released.hold.expect("hold").state,
        pb::PointsHoldState::Released as i32
    );
    assert_eq!(released.points_account.expect("account").available, 380);
    let err = client
        .confirm_frozen_points(confirm("m1", "order-9", None))
        .await
        .expect_err("none");
    assert_error(&err, Code::NotFound, "HOLD_NOT_FOUND");
    let err = client
        .confirm_frozen_points(confirm("m1", "order-2", Some(1)))
        .await
        .expect_err("released");
    assert_error(&err, Code::FailedPrecondition, "INVALID_HOLD_STATE");
    audit(app).await;
}

async fn refunds_return_points_to_their_lots(app: &TestApp) {
    let mut client = app.points();
    client
        .earn_points(earn_expiring("m1", 100, 60))
        .await
        .expect("earn");
    client.earn_points(earn("m1", 100)).await.expect("earn");
    let mut spend = deduct("m1", 150);
    spend.biz_type = "order".into();
    spend.biz_id = "order-7".into();
    client.deduct_points(spend).await.expect("deduct");
    app.advance_clock(Duration::from_secs(61));
    // Refund everything by the business reference: the 100 that came from the expired lot
    // expire again at once, the 50 from the other lot are back.
    let refunded = client
        .refund_points(pb::RefundPointsRequest {
            target: Some(pb::refund_points_request::Target::Biz(pb::BizReference {
                biz_type: "order".into(),
                biz_id: "order-7".into(),
            })),
            ..refund("m1", "", None)
        })
        .await
        .expect("refund")
        .into_inner();
    let shown = refunded.points_account.expect("account");
    assert_eq!(
        (shown.available, shown.total_refunded, shown.total_expired),
        (100, 150, 100)
    );
    let tx = refunded.transaction.expect("refund entry");
    assert_eq!((tx.r#type, tx.amount), (Type::Refund as i32, 150));
    let ledger = client
        .list_points_transactions(pb::ListPointsTransactionsRequest {
            tenant_id: "acme".into(),
            member_id: "m1".into(),
            ..Default::default()
        })
        .await
        .expect("ledger")
        .into_inner();
    let newest: Vec<i32> = ledger
        .transactions
        .iter()
        .take(2)
        .map(|t| t.r#type)
        .collect();
    assert_eq!(
        newest,
        [Type::Expire as i32, Type::Refund as i32],
        "the ledger shows both"
    );
    let err = client
        .refund_points(refund("m1", &tx.related_transaction_id, Some(1)))
        .await
        .expect_err("all refunded");
    assert_error(&err, Code::FailedPrecondition, "REFUND_EXCEEDS_SPENT");
    let earn_id = ledger.transactions.last().expect("earn").id.clone();
    let err = client
        .refund_points(refund("m1", &earn_id, None))
        .await
        .expect_err("an earn");
    assert_error(&err, Code::FailedPrecondition, "NOT_REFUNDABLE");
    // Another member cannot refund this member's deduction by its business reference.
    client
        .earn_points(earn("m2", 10))
        .await
        .expect("m2 has an account");
    let err = client
        .refund_points(pb::RefundPointsRequest {
            target: Some(pb::refund_points_request::Target::Biz(pb::BizReference {
                biz_type: "order".into(),
                biz_id: "order-7".into(),
            })),
            ..refund("m2", "", None)
        })
        .await
        .expect_err("not m2's deduction");
    assert_error(&err, Code::NotFound, "TRANSACTION_NOT_FOUND");
    audit(app).await;
}

async fn the_sweeper_expires_lots_and_holds(app: &TestApp) {
    let mut client = app.points();
    client
        .earn_points(earn_expiring("m1", 100, 60))
        .await
        .expect("earn");
    client.earn_points(earn("m2", 100)).await.expect("earn");
    client
        .freeze_points(pb::FreezePointsRequest {
            hold_ttl: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            ..freeze("m2", 60, "order-1")
        })
        .await
        .expect("freeze");
    app.advance_clock(Duration::from_secs(61));
    // Shown expired at once, while the rows still hold them; stored so by the sweep.
    assert_eq!(account(app, "m1").await.available, 0);
    let db = app.state.shared().db.conn();
    let tenant = TenantId::parse("t", "acme").expect("tenant");
    let stored = || async {
        let (m1, m2) = (
            MemberId::parse("m", "m1").expect("m"),
            MemberId::parse("m", "m2").expect("m"),
        );
        let m1 = store::find_account(db, &tenant, &m1)
            .await
            .expect("q")
            .expect("a");
        let m2 = store::find_account(db, &tenant, &m2)
            .await
            .expect("q")
            .expect("a");
        (m1.available, m1.total_expired, m2.available, m2.frozen)
    };
    assert_eq!(
        stored().await,
        (100, 0, 40, 60),
        "stored as they were until the sweep"
    );
    let swept = app
        .state
        .points
        .sweep_points(100, Duration::from_secs(5))
        .await
        .expect("sweep");
    assert_eq!((swept.holds_released, swept.accounts_expired), (1, 1));
    assert!(swept.caught_up);
    assert_eq!(
        stored().await,
        (0, 100, 100, 0),
        "the sweep expired the lot and released the hold"
    );
    let err = client
        .confirm_frozen_points(confirm("m2", "order-1", None))
        .await
        .expect_err("expired hold");
    assert_error(&err, Code::FailedPrecondition, "INVALID_HOLD_STATE");
    audit(app).await;
}

fn rule(event: &str, points: i64, daily_cap: Option<i64>) -> pb::CreatePointsRuleRequest {
    pb::CreatePointsRuleRequest {
        tenant_id: "acme".into(),
        request_id: unique("rule"),
        points_rule: Some(pb::PointsRule {
            event_type: event.into(),
            points,
            daily_cap,
            expiry_days: Some(30),
            enabled: true,
            ..Default::default()
        }),
    }
}

fn earn_event(member: &str, event: &str) -> pb::EarnPointsRequest {
    pb::EarnPointsRequest {
        source: Some(pb::earn_points_request::Source::EventType(event.into())),
        ..earn(member, 0)
    }
}

async fn rules_price_events_with_daily_caps(app: &TestApp) {
    // At noon UTC (the server's clock moved there): the day cannot turn mid-test.
    let until_noon = (43_200 - now_seconds().rem_euclid(86_400)).rem_euclid(86_400);
    app.advance_clock(Duration::from_secs(until_noon as u64));
    let mut client = app.points();
    client
        .create_points_rule(rule("order_paid", 50, Some(120)))
        .await
        .expect("rule");
    let err = client
        .create_points_rule(rule("order_paid", 5, None))
        .await
        .expect_err("duplicate");
    assert_error(&err, Code::AlreadyExists, "POINTS_RULE_EXISTS");
    let mut awarded = Vec::new();
    for _ in 0..3 {
        let done = client
            .earn_points(earn_event("m1", "order_paid"))
            .await
            .expect("earn")
            .into_inner();
        let tx = done.transaction.expect("entry");
        assert!(tx.expire_time.is_some(), "the rule's expiry applies");
        awarded.push(tx.amount);
    }
    assert_eq!(awarded, [50, 50, 20], "capped at 120 a day");
    let err = client
        .earn_points(earn_event("m1", "order_paid"))
        .await
        .expect_err("cap");
    assert_error(&err, Code::FailedPrecondition, "DAILY_CAP_REACHED");
    client
        .earn_points(earn_event("m2", "order_paid"))
        .await
        .expect("another member has their own cap");
    let err = client
        .earn_points(earn_event("m1", "no_such_event"))
        .await
        .expect_err("no rule");
    assert_error(&err, Code::NotFound, "POINTS_RULE_NOT_FOUND");
    // The next day the cap starts again.
    app.advance_clock(Duration::from_secs(86_400));
    let next_day = client
        .earn_points(earn_event("m1", "order_paid"))
        .await
        .expect("a new day")
        .into_inner();
    assert_eq!(next_day.transaction.expect("entry").amount, 50);
    audit(app).await;
}

async fn rule_changes_reach_earning_at_once(app: &TestApp) {
    let mut client = app.points();
    let created = client
        .create_points_rule(rule("signup", 10, None))
        .await
        .expect("rule")
        .into_inner();
    let created = created.points_rule.expect("rule");
    let first = client
        .earn_points(earn_event("m1", "signup"))
        .await
        .expect("earn")
        .into_inner();
    assert_eq!(first.transaction.expect("entry").amount, 10);
    let update =
        |points: i64, enabled: bool, version: i64, paths: &[&str]| pb::UpdatePointsRuleRequest {
            tenant_id: "acme".into(),
            request_id: unique("rule-update"),
            points_rule: Some(pb::PointsRule {
                id: created.id.clone(),
                version,
                points,
                enabled,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
        };
    let updated = client
        .update_points_rule(update(25, true, 1, &["points"]))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.points_rule.expect("rule").version, 2);
    let second = client
        .earn_points(earn_event("m1", "signup"))
        .await
        .expect("earn")
        .into_inner();
    assert_eq!(
        second.transaction.expect("entry").amount,
        25,
        "the cached rule was replaced"
    );
    let err = client
        .update_points_rule(update(30, true, 1, &["points"]))
        .await
        .expect_err("stale");
    assert_error(&err, Code::Aborted, "VERSION_MISMATCH");
    client
        .update_points_rule(update(0, false, 2, &["enabled"]))
        .await
        .expect("disable");
    let err = client
        .earn_points(earn_event("m1", "signup"))
        .await
        .expect_err("disabled");
    assert_error(&err, Code::FailedPrecondition, "POINTS_RULE_DISABLED");
    let listed = client
        .list_points_rules(pb::ListPointsRulesRequest {
            tenant_id: "acme".into(),
            enabled: Some(false),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.points_rules.len(), 1);
}

async fn flush_leaderboards(app: &TestApp) {
    match app.backend {
        Backend::PostgresRedis => {
            let pool = deadpool_redis::Config::from_url(marketing_tests::redis_url())
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                .expect("pool");
            let mut conn = pool.get().await.expect("redis");
            let keys: Vec<String> = deadpool_redis::redis::cmd("KEYS")
                .arg(format!("{}*", app.config.redis_key_prefix))
                .query_async(&mut *conn)
                .await
                .expect("keys");
            for key in keys {
                let _: i64 = deadpool_redis::redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut *conn)
                    .await
                    .expect("del");
            }
        }
        Backend::Embedded => app
            .state
            .points
            .leaderboard
            .invalidate("acme")
            .await
            .expect("invalidate"),
    }
}

async fn leaders(app: &TestApp) -> Vec<(String, i64)> {
    app.points()
        .get_points_leaderboard(pb::GetPointsLeaderboardRequest {
            tenant_id: "acme".into(),
            top_n: 10,
        })
        .await
        .expect("leaderboard")
        .into_inner()
        .entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e.rank, i as i32 + 1);
            (e.member_id, e.total_earned)
        })
        .collect()
}

async fn the_leaderboard_ranks_and_rebuilds(app: &TestApp) {
    let mut client = app.points();
    client.earn_points(earn("a", 100)).await.expect("earn");
    assert_eq!(leaders(app).await, [("a".to_string(), 100)]);
    client.earn_points(earn("b", 300)).await.expect("earn");
    client.earn_points(earn("c", 100)).await.expect("earn");
    let expected = vec![("b".to_string(), 300), ("a".into(), 100), ("c".into(), 100)];
    assert_eq!(
        leaders(app).await,
        expected,
        "ties go to who reached the score first"
    );
    flush_leaderboards(app).await;
    assert_eq!(leaders(app).await, expected, "rebuilt from the database");
    client.earn_points(earn("c", 250)).await.expect("earn");
    client
        .deduct_points(deduct("b", 300))
        .await
        .expect("spending does not lower the rank");
    assert_eq!(
        leaders(app).await,
        [("c".to_string(), 350), ("b".into(), 300), ("a".into(), 100)]
    );
    // Concurrent earns (batched when they arrive together) record their standings.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..6 {
        let mut client = app.points();
        calls.spawn(async move { client.earn_points(earn(&format!("d{i}"), 400 + i)).await });
    }
    while let Some(done) = calls.join_next().await {
        done.expect("task").expect("earn");
    }
    let mut expected: Vec<(String, i64)> =
        (0..6).rev().map(|i| (format!("d{i}"), 400 + i)).collect();
    expected.extend([("c".to_string(), 350), ("b".into(), 300), ("a".into(), 100)]);
    assert_eq!(leaders(app).await, expected);
}

async fn replays_return_the_first_outcome(app: &TestApp) {
    let mut client = app.points();
    let mut first = earn("m1", 100);
    first.biz_type = "order".into();
    first.biz_id = "order-1".into();
    let a = client
        .earn_points(first.clone())
        .await
        .expect("earn")
        .into_inner();
    let b = client
        .earn_points(first.clone())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(a, b);
    assert_eq!(account(app, "m1").await.total_earned, 100);
    let mut changed = first.clone();
    changed.source = Some(pb::earn_points_request::Source::Amount(5));
    let err = client.earn_points(changed).await.expect_err("reused");
    assert_error(&err, Code::InvalidArgument, "REQUEST_ID_REUSED");
    let mut again = first;
    again.request_id = unique("earn");
    let err = client
        .earn_points(again)
        .await
        .expect_err("same order twice");
    assert_error(&err, Code::AlreadyExists, "DUPLICATE_BIZ_REFERENCE");

    // A refusal is the first outcome too: the retry does not deduct even once funds arrived.
    let big = deduct("m1", 1000);
    let err = client.deduct_points(big.clone()).await.expect_err("short");
    assert_error(&err, Code::FailedPrecondition, "INSUFFICIENT_POINTS");
    client.earn_points(earn("m1", 5000)).await.expect("funds");
    let err = client
        .deduct_points(big)
        .await
        .expect_err("replayed refusal");
    assert_error(&err, Code::FailedPrecondition, "INSUFFICIENT_POINTS");
    assert_eq!(account(app, "m1").await.available, 5100);
    audit(app).await;
}

async fn tenants_are_isolated(app: &TestApp) {
    let mut client = app.points();
    let earned = client
        .earn_points(earn("m1", 100))
        .await
        .expect("earn")
        .into_inner();
    let foreign = |r: &mut pb::DeductPointsRequest| r.tenant_id = "globex".into();
    let mut request = deduct("m1", 10);
    foreign(&mut request);
    let err = client
        .deduct_points(request)
        .await
        .expect_err("other tenant");
    assert_error(&err, Code::NotFound, "ACCOUNT_NOT_FOUND");
    let err = client
        .get_points_account(pb::GetPointsAccountRequest {
            tenant_id: "globex".into(),
            member_id: "m1".into(),
        })
        .await
        .expect_err("other tenant");
    assert_error(&err, Code::NotFound, "ACCOUNT_NOT_FOUND");
    let mut theirs = refund("m1", &earned.transaction.expect("tx").id, None);
    theirs.tenant_id = "globex".into();
    let err = client
        .refund_points(theirs)
        .await
        .expect_err("other tenant");
    assert_error(&err, Code::NotFound, "ACCOUNT_NOT_FOUND");
    let board = client
        .get_points_leaderboard(pb::GetPointsLeaderboardRequest {
            tenant_id: "globex".into(),
            top_n: 0,
        })
        .await
        .expect("board")
        .into_inner();
    assert!(board.entries.is_empty());
}

async fn bad_points_requests_are_rejected(app: &TestApp) {
    let mut client = app.points();
    let err = client
        .earn_points(pb::EarnPointsRequest::default())
        .await
        .expect_err("empty");
    assert_invalid(&err, &["tenant_id", "member_id", "request_id", "source"]);
    let mut bad = earn("m1", -5);
    bad.biz_id = "o".into();
    let err = client.earn_points(bad).await.expect_err("negative");
    assert_invalid(&err, &["amount", "biz_type"]);
    let err = client
        .earn_points(earn("m1", 1 << 51))
        .await
        .expect_err("too many");
    assert_invalid(&err, &["amount"]);
    let err = client
        .earn_points(earn_event("m1", "Bad Event"))
        .await
        .expect_err("event");
    assert_invalid(&err, &["event_type"]);
    let err = client
        .deduct_points(deduct("m1", 0))
        .await
        .expect_err("zero");
    assert_invalid(&err, &["amount"]);
    let err = client
        .freeze_points(pb::FreezePointsRequest {
            hold_ttl: Some(prost_types::Duration {
                seconds: 90_000,
                nanos: 0,
            }),
            ..freeze("m1", 10, "")
        })
        .await
        .expect_err("bad hold");
    assert_invalid(&err, &["order_id", "hold_ttl"]);
    let err = client
        .confirm_frozen_points(pb::ConfirmFrozenPointsRequest {
            hold_ref: None,
            ..confirm("m1", "o", Some(-1))
        })
        .await
        .expect_err("bad confirm");
    assert_invalid(&err, &["hold_ref", "amount"]);
    let err = client
        .refund_points(refund("m1", "nope", Some(0)))
        .await
        .expect_err("bad refund");
    assert_invalid(&err, &["transaction_id", "amount"]);
    let err = client
        .get_points_leaderboard(pb::GetPointsLeaderboardRequest {
            tenant_id: "acme".into(),
            top_n: 101,
        })
        .await
        .expect_err("too many");
    assert_invalid(&err, &["top_n"]);
    let err = client
        .create_points_rule(rule("x", 0, Some(0)))
        .await
        .expect_err("bad rule");
    assert_invalid(&err, &["points_rule.points", "points_rule.daily_cap"]);
    assert_eq!(audit(app).await, 0, "nothing was written");
}

async fn the_ledger_lists_newest_first(app: &TestApp) {
    let mut client = app.points();
    for amount in [1, 2, 3, 4, 5] {
        client.earn_points(earn("m1", amount)).await.expect("earn");
    }
    client.deduct_points(deduct("m1", 3)).await.expect("deduct");
    let mut request = pb::ListPointsTransactionsRequest {
        tenant_id: "acme".into(),
        member_id: "m1".into(),
        page_size: 4,
        ..Default::default()
    };
    let mut amounts = Vec::new();
    loop {
        let page = client
            .list_points_transactions(request.clone())
            .await
            .expect("page")
            .into_inner();
        amounts.extend(page.transactions.iter().map(|t| t.amount));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(amounts, [-3, 5, 4, 3, 2, 1]);
    let deducts = client
        .list_points_transactions(pb::ListPointsTransactionsRequest {
            types: vec![Type::Deduct as i32],
            page_size: 10,
            page_token: String::new(),
            ..request.clone()
        })
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(deducts.transactions.len(), 1);
    let future = client
        .list_points_transactions(pb::ListPointsTransactionsRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: now_seconds() + 3600,
                nanos: 0,
            }),
            page_size: 10,
            page_token: String::new(),
            ..request
        })
        .await
        .expect("range")
        .into_inner();
    assert!(future.transactions.is_empty());
}

/// Text and bytes reach the database and come back unchanged, whatever characters they hold:
/// quotes, backslashes, tabs and line breaks and non-ASCII in descriptions, and the stored
/// response a replay decodes.
async fn any_text_and_bytes_come_back_as_written(app: &TestApp) {
    let mut client = app.points();
    let texts = [
        "quote \" and backslash \\ and \\x41 and \\u0041",
        "tab\tnewline\nreturn\r",
        "caf\u{e9} \u{4e2d}\u{6587} \u{1f600}",
        "{\"json\": [null, true, 1]}",
        "",
    ];
    // Other control characters are refused (see the README's text rules).
    for text in ["bell\u{7}", "escape\u{1b}[31m", "nul\0", "del\u{7f}"] {
        let request = pb::EarnPointsRequest {
            description: text.into(),
            ..earn("m1", 7)
        };
        let err = client
            .earn_points(request)
            .await
            .expect_err("control character");
        assert_invalid(&err, &["description"]);
    }
    let mut earned = Vec::new();
    for text in texts {
        let request = pb::EarnPointsRequest {
            description: text.into(),
            ..earn("m1", 7)
        };
        let first = client.earn_points(request.clone()).await.expect("earn");
        // The replay is decoded from the stored response bytes.
        let again = client.earn_points(request).await.expect("replay");
        assert_eq!(first.into_inner(), again.into_inner());
        earned.push(text);
    }
    let listed = client
        .list_points_transactions(pb::ListPointsTransactionsRequest {
            tenant_id: "acme".into(),
            member_id: "m1".into(),
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let descriptions: Vec<&str> = listed
        .transactions
        .iter()
        .rev()
        .map(|t| t.description.as_str())
        .collect();
    assert_eq!(descriptions, earned);
}

/// Ten concurrent refunds of 3 points against one 10-point deduction answer as they would one
/// after another: three are granted, seven refused, and the ledger stays exact.
async fn concurrent_partial_refunds_answer_as_one_after_another(app: &TestApp) {
    refund_race(&[app], "r1").await;
    hold_race(&[app], "h1").await;
}

/// 10 concurrent refunds of 3 points of one 10-point deduction, spread over `replicas`: the
/// answers one at a time would give (3 granted, then REFUND_EXCEEDS_SPENT).
async fn refund_race(replicas: &[&TestApp], member: &str) {
    let app = replicas[0];
    let mut client = app.points();
    client.earn_points(earn(member, 10)).await.expect("earn");
    let deducted = client
        .deduct_points(deduct(member, 10))
        .await
        .expect("deduct")
        .into_inner();
    let target = deducted.transaction.expect("transaction").id;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..10 {
        let mut client = replicas[i % replicas.len()].points();
        let request = refund(member, &target, Some(3));
        calls.spawn(async move { client.refund_points(request).await });
    }
    let (mut granted, mut refused) = (0, 0);
    while let Some(answer) = calls.join_next().await {
        match answer.expect("task") {
            Ok(_) => granted += 1,
            Err(err) => {
                assert_error(&err, Code::FailedPrecondition, "REFUND_EXCEEDS_SPENT");
                refused += 1;
            }
        }
    }
    assert_eq!((granted, refused), (3, 7));
    let shown = account(app, member).await;
    assert_eq!((shown.available, shown.total_refunded), (9, 9));
    audit(app).await;
}

/// 5 confirms (of 20) and 5 releases of one 50-point hold at once, spread over `replicas`:
/// exactly one wins, the other nine are INVALID_HOLD_STATE, and the account shows the winner.
async fn hold_race(replicas: &[&TestApp], member: &str) {
    let app = replicas[0];
    let mut client = app.points();
    client.earn_points(earn(member, 100)).await.expect("earn");
    client
        .freeze_points(freeze(member, 50, "order-race"))
        .await
        .expect("freeze");
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..10 {
        let mut client = replicas[i % replicas.len()].points();
        if i % 2 == 0 {
            let request = confirm(member, "order-race", Some(20));
            calls.spawn(async move {
                (
                    "confirm",
                    client.confirm_frozen_points(request).await.map(|_| ()),
                )
            });
        } else {
            let request = release(member, "order-race");
            calls.spawn(async move {
                (
                    "release",
                    client.release_frozen_points(request).await.map(|_| ()),
                )
            });
        }
    }
    let mut winners = Vec::new();
    while let Some(answer) = calls.join_next().await {
        match answer.expect("task") {
            (kind, Ok(())) => winners.push(kind),
            (_, Err(err)) => {
                assert_error(&err, Code::FailedPrecondition, "INVALID_HOLD_STATE");
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one wins: {winners:?}");
    let shown = account(app, member).await;
    let expected = match winners[0] {
        "confirm" => (80, 0, 20),
        _ => (100, 0, 0),
    };
    assert_eq!(
        (shown.available, shown.frozen, shown.total_spent),
        expected,
        "{winners:?}"
    );
    audit(app).await;
}

/// One tenant's stream of bad commands (over-confirms, earns past the maximum, control
/// characters, claims of a sold-out template, malformed claims) and a greedy member claiming
/// past the limit in the victim's own template run beside the victim's deductions and claims:
/// the victim sees no error and its balance and stock are exact; each bad command gets its
/// own clear refusal.
async fn a_tenants_bad_commands_fail_alone(app: &TestApp) {
    let shared = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            total_stock: 1000,
            per_member_limit: 1,
            ..template()
        },
    )
    .await;
    let sold_out = create_template(
        app,
        "evil",
        pb::CouponTemplate {
            total_stock: 1,
            ..template()
        },
    )
    .await;
    claim(app, "evil", "first", &sold_out.id)
        .await
        .expect("the only coupon");
    let mut client = app.points();
    client
        .earn_points(earn("victim", 1000))
        .await
        .expect("earn");
    let evil = |mut r: pb::EarnPointsRequest| {
        r.tenant_id = "evil".into();
        r
    };
    client
        .earn_points(evil(earn("rich", marketing_domain::points::MAX_POINTS)))
        .await
        .expect("earn the maximum");
    client
        .earn_points(evil(earn("holder", 100)))
        .await
        .expect("earn");
    let mut held = freeze("holder", 50, "order-1");
    held.tenant_id = "evil".into();
    client.freeze_points(held).await.expect("freeze");

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        let mut client = app.points();
        calls.spawn(async move {
            let answer = client.deduct_points(deduct("victim", 1)).await;
            ("deduct", answer.map(|_| ()))
        });
        let mut claims = app.user_coupons();
        let request = claim_request("acme", &format!("claimer-{i}"), &shared.id);
        calls.spawn(async move { ("claim", claims.claim_coupon(request).await.map(|_| ())) });
        let request = match i % 3 {
            0 => claim_request("acme", "greedy", &shared.id),
            1 => claim_request("evil", "late", &sold_out.id),
            _ => claim_request("evil", "bad\0member", &sold_out.id),
        };
        let kind = ["greedy", "sold out", "bad member"][i % 3];
        let mut claims = app.user_coupons();
        calls.spawn(async move { (kind, claims.claim_coupon(request).await.map(|_| ())) });
        let mut client = app.points();
        match i % 3 {
            0 => {
                let mut request = confirm("holder", "order-1", Some(60));
                request.tenant_id = "evil".into();
                calls.spawn(async move {
                    (
                        "over-confirm",
                        client.confirm_frozen_points(request).await.map(|_| ()),
                    )
                });
            }
            1 => {
                let request = evil(earn("rich", 1));
                calls.spawn(async move {
                    (
                        "past the maximum",
                        client.earn_points(request).await.map(|_| ()),
                    )
                });
            }
            _ => {
                let mut request = evil(earn("holder", 1));
                request.description = "nul \0 inside".into();
                calls.spawn(async move {
                    (
                        "control character",
                        client.earn_points(request).await.map(|_| ()),
                    )
                });
            }
        }
    }
    let mut greedy_served = 0;
    while let Some(answer) = calls.join_next().await {
        let (kind, answer) = answer.expect("task");
        match (kind, answer) {
            ("deduct" | "claim", answer) => {
                answer.expect("the other tenant's deduction or claim");
            }
            ("greedy", Ok(())) => greedy_served += 1,
            ("greedy", Err(err)) => {
                assert_error(&err, Code::ResourceExhausted, "MEMBER_LIMIT_REACHED");
            }
            ("sold out", Err(err)) => {
                assert_error(&err, Code::ResourceExhausted, "OUT_OF_STOCK");
            }
            ("bad member", Err(err)) => assert_invalid(&err, &["member_id"]),
            (_, Ok(())) => panic!("a bad command was served: {kind}"),
            ("over-confirm", Err(err)) => {
                assert_error(&err, Code::FailedPrecondition, "CONFIRM_EXCEEDS_HOLD");
            }
            ("past the maximum", Err(err)) => {
                assert_error(&err, Code::FailedPrecondition, "POINTS_LIMIT_EXCEEDED");
            }
            (_, Err(err)) => assert_invalid(&err, &["description"]),
        }
    }
    assert_eq!(greedy_served, 1, "the greedy member's first claim only");
    assert_eq!(account(app, "victim").await.available, 960);
    let shown = app
        .templates()
        .get_coupon_template(pb::GetCouponTemplateRequest {
            tenant_id: "acme".into(),
            template_id: shared.id.clone(),
        })
        .await
        .expect("template")
        .into_inner()
        .coupon_template
        .expect("template");
    assert_eq!(
        (shown.claimed_count, shown.remaining_stock),
        (41, 959),
        "40 claimers and the greedy member's one"
    );
    audit(app).await;
}

/// The balance at its maximum, concurrent earns at the edge, and lifetime totals at theirs:
/// each write past a maximum is POINTS_LIMIT_EXCEEDED naming the total, and writes nothing.
async fn balances_and_totals_near_their_maximum_refuse_cleanly(app: &TestApp) {
    use marketing_domain::points::{MAX_POINTS, MAX_TOTAL};
    use tonic_types::StatusExt;
    let mut client = app.points();
    client
        .earn_points(earn("edge", MAX_POINTS - 5))
        .await
        .expect("earn to five below the maximum");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let mut client = app.points();
        calls.spawn(async move { client.earn_points(earn("edge", 1)).await });
    }
    let mut granted = 0;
    while let Some(answer) = calls.join_next().await {
        match answer.expect("task") {
            Ok(_) => granted += 1,
            Err(err) => {
                assert_error(&err, Code::FailedPrecondition, "POINTS_LIMIT_EXCEEDED");
                let info = err.get_details_error_info().expect("info");
                assert_eq!(info.metadata.get("limit"), Some(&MAX_POINTS.to_string()));
            }
        }
    }
    assert_eq!(granted, 5, "exactly up to the maximum");
    assert_eq!(account(app, "edge").await.available, MAX_POINTS);
    audit(app).await;

    // A lifetime of spending and refunding is not made in a test: the totals are set near
    // their maximum in the row itself (this account's ledger no longer replays to it).
    client
        .earn_points(earn("spender", 100))
        .await
        .expect("earn");
    let deducted = client
        .deduct_points(deduct("spender", 20))
        .await
        .expect("deduct")
        .into_inner()
        .transaction
        .expect("entry")
        .id;
    let db = app.state.shared().db.conn();
    sea_orm::ConnectionTrait::execute_unprepared(
        db,
        &format!(
            "UPDATE points_accounts SET total_spent = {}, total_refunded = {} \
             WHERE member_id = 'spender'",
            MAX_TOTAL - 5,
            MAX_TOTAL - 3
        ),
    )
    .await
    .expect("near the maximum");
    let before = account(app, "spender").await;
    let err = client
        .deduct_points(deduct("spender", 10))
        .await
        .expect_err("past total_spent's maximum");
    assert_error(&err, Code::FailedPrecondition, "POINTS_LIMIT_EXCEEDED");
    let info = err.get_details_error_info().expect("info");
    assert_eq!(info.metadata.get("total"), Some(&"total_spent".to_owned()));
    let err = client
        .refund_points(refund("spender", &deducted, Some(4)))
        .await
        .expect_err("past total_refunded's maximum");
    assert_error(&err, Code::FailedPrecondition, "POINTS_LIMIT_EXCEEDED");
    assert_eq!(account(app, "spender").await, before, "nothing was written");
    client
        .deduct_points(deduct("spender", 5))
        .await
        .expect("up to the maximum");
    let shown = account(app, "spender").await;
    assert_eq!((shown.available, shown.total_spent), (75, MAX_TOTAL));
}

/// Another writer holds the account's row (PostgreSQL) or the database's write lock
/// (SQLite): a deduction with a 500 ms deadline is answered DEADLINE_EXCEEDED by then, not
/// after the server's own 10 s; retried with its request id once the writer is gone, it is
/// served once.
async fn a_blocked_points_write_answers_at_the_clients_deadline(app: &TestApp) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let mut client = app.points();
    client
        .earn_points(earn("blocked", 100))
        .await
        .expect("earn");
    let other = sea_orm::Database::connect(app.config.database_url.clone().expect("url"))
        .await
        .expect("another connection");
    let writer = other.begin().await.expect("begin");
    writer
        .execute_unprepared(
            "UPDATE points_accounts SET version = version WHERE member_id = 'blocked'",
        )
        .await
        .expect("hold the row");
    let request = deduct("blocked", 10);
    let mut call = tonic::Request::new(request.clone());
    // The server answers 50 ms before the client's deadline (a fifth of it at most): with
    // 500 ms that margin is whole, so a loaded machine's timers do not let the client's own
    // timeout fire first.
    call.set_timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let err = client.deduct_points(call).await.expect_err("blocked");
    let waited = started.elapsed();
    assert_error(&err, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    assert!(
        waited < Duration::from_secs(5),
        "answered at the deadline: {waited:?}"
    );
    writer.rollback().await.expect("let go");
    let _ = other.close().await;
    let mut served = None;
    for _ in 0..100 {
        match client.deduct_points(request.clone()).await {
            Ok(done) => {
                served = Some(done.into_inner());
                break;
            }
            Err(err) if err.code() == Code::DeadlineExceeded => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("{err:?}"),
        }
    }
    let served = served.expect("served once the writer is gone");
    assert_eq!(served.points_account.expect("account").available, 90);
    assert_eq!(account(app, "blocked").await.available, 90, "deducted once");
    audit(app).await;
}

/// A ledger planned with every kind of row (a new lot, entries with and without a business
/// reference, allocations, a hold frozen and confirmed in the same plan, a changed lot), as
/// both write paths write it: every column of every row reads back as `LedgerWrite` made it.
/// The transaction (SeaORM) on both backends; PostgreSQL's one statement (`write.sql`) too.
async fn a_planned_ledger_is_written_column_for_column(app: &TestApp) {
    use marketing_domain::{
        UnixMicros,
        points::{EntryMeta, HoldStatus, Ledger},
    };
    use marketing_storage::{
        entity::{points_allocation, points_hold, points_lot, points_transaction},
        points::{LedgerRows, batch::BatchWrite, rows::LedgerWrite},
    };
    use sea_orm::{ColumnTrait, ExprTrait, QueryFilter};

    let db = app.state.shared().db.conn();
    let tenant = TenantId::parse("t", "acme").expect("tenant");
    let mut points = app.points();
    let mut members = vec!["rows-orm"];
    if app.state.shared().db.postgres().is_some() {
        members.push("rows-pg");
    }
    for name in members {
        points
            .earn_points(earn_expiring(name, 100, 86_400))
            .await
            .expect("earn");
        let member = MemberId::parse("m", name).expect("member");
        let account = store::find_account(db, &tenant, &member)
            .await
            .expect("q")
            .expect("account");
        let lots = store::live_lots(db, account.id).await.expect("lots");
        let now = UnixMicros::now();
        let mut ledger = Ledger::new(account, lots, now);
        let meta = |biz: Option<&str>| EntryMeta {
            biz_type: biz.map(|_| "order".to_owned()),
            biz_id: biz.map(|b| format!("{name}-{b}")),
            request_id: Some(format!("{name}-{}", biz.unwrap_or("none"))),
            description: format!("row test {name}"),
            actor: Some(format!("{name}-client")),
        };
        ledger.earn(50, None, meta(Some("e1"))).expect("earn");
        let hold = ledger
            .freeze(
                120,
                "order-rows",
                UnixMicros(now.0 + 60_000_000),
                meta(None),
            )
            .expect("freeze");
        let held: Vec<(uuid::Uuid, i64)> = ledger
            .allocations
            .iter()
            .filter(|a| a.hold_id == Some(hold.id))
            .map(|a| (a.lot_id, a.amount))
            .collect();
        ledger
            .settle_hold(&hold, &held, 70, HoldStatus::Confirmed, meta(None))
            .expect("confirm");
        ledger.deduct(10, meta(Some("d1"))).expect("deduct");
        let expected = LedgerWrite::of(&ledger);
        assert_eq!(expected.holds.len(), 1, "a hold changed twice is one row");
        if name == "rows-pg" {
            let mut write = BatchWrite::default();
            write.add_ledger(&ledger);
            write
                .execute(app.state.shared().db.postgres().expect("PostgreSQL"))
                .await
                .expect("one statement");
        } else {
            let txn = app.state.shared().db.begin_write().await.expect("begin");
            let mut rows = LedgerRows::default();
            let written = store::write_ledgers(&txn, &[&ledger], &mut rows)
                .await
                .expect("write");
            assert!(written.contains(&ledger.account.id));
            store::insert_ledger_rows(&txn, rows).await.expect("insert");
            txn.commit().await.expect("commit");
        }

        let stored = points_account::Entity::find_by_id(ledger.account.id)
            .one(db)
            .await
            .expect("q")
            .expect("account");
        let a = &expected.account;
        assert_eq!(
            (
                stored.available,
                stored.frozen,
                stored.total_earned,
                stored.total_spent,
                stored.total_expired,
                stored.total_refunded,
                stored.version,
                stored.earned_updated_at,
                stored.updated_at,
            ),
            (
                a.available,
                a.frozen,
                a.total_earned,
                a.total_spent,
                a.total_expired,
                a.total_refunded,
                a.read_version + 1,
                a.earned_updated_at,
                a.updated_at,
            ),
            "{name}: account"
        );
        for lot in &expected.new_lots {
            let row = points_lot::Entity::find_by_id(lot.id)
                .one(db)
                .await
                .expect("q");
            assert_eq!(row.as_ref(), Some(lot), "{name}: new lot");
        }
        assert!(!expected.changed_lots.is_empty());
        for lot in &expected.changed_lots {
            let row = points_lot::Entity::find_by_id(lot.id)
                .one(db)
                .await
                .expect("q")
                .expect("lot");
            assert_eq!(
                (row.remaining, row.frozen),
                (lot.remaining, lot.frozen),
                "{name}: lot"
            );
        }
        for entry in &expected.entries {
            let row = points_transaction::Entity::find_by_id(entry.id)
                .one(db)
                .await
                .expect("q");
            assert_eq!(row.as_ref(), Some(entry), "{name}: entry");
        }
        for hold in &expected.holds {
            let row = points_hold::Entity::find_by_id(hold.id)
                .one(db)
                .await
                .expect("q");
            assert_eq!(row.as_ref(), Some(hold), "{name}: hold");
        }
        let entry_ids: Vec<uuid::Uuid> = expected.entries.iter().map(|e| e.id).collect();
        let mut stored: Vec<_> = points_allocation::Entity::find()
            .filter(
                points_allocation::Column::TransactionId
                    .is_in(entry_ids)
                    .or(points_allocation::Column::HoldId.eq(hold.id)),
            )
            .all(db)
            .await
            .expect("allocations")
            .into_iter()
            .map(|a| (a.tenant_id, a.lot_id, a.transaction_id, a.hold_id, a.amount))
            .collect();
        let mut planned: Vec<_> = expected
            .allocations
            .iter()
            .map(|a| {
                (
                    a.tenant_id.clone(),
                    a.lot_id,
                    a.transaction_id,
                    a.hold_id,
                    a.amount,
                )
            })
            .collect();
        stored.sort();
        planned.sort();
        assert_eq!(stored, planned, "{name}: allocations");
    }
    audit(app).await;
}
