//! The mixed-tenant harness: for every RPC of the API (one line each in `rpcs::RPCS`), two
//! tenants act at the same time on the same ids (member ids, request ids, orders, business
//! references), one of them also naming the other's template, coupon, hold, transaction and
//! rule ids. The tenant under attack must get exactly what a third tenant gets running the
//! same calls alone: the same answers, in order, and the same stored state; and no row of one
//! tenant may point at another's. On one server (both backends) and across two replicas
//! sharing PostgreSQL and Redis. A new RPC joins by adding its line to `rpcs::RPCS`. All the
//! while, a consumer of each tenant's event stream must receive exactly its own tenant's
//! events, once each, in position order.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use marketing_proto::v1::{self as pb, event_service_client::EventServiceClient};
use marketing_storage::entity::{
    coupon_code, coupon_template, event_batch, event_body, idempotency_record, points_account,
    points_hold, points_lot, points_rule, points_transaction, user_coupon,
};
use marketing_tests::{Backend, TestApp, spawn_app};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::{
    fixtures::unique,
    rpcs::{RPCS, Rpc, Seed, call, seed},
};

/// Calls of each RPC each tenant makes, one after another (so that answers are comparable
/// call for call), while the other tenant makes its own.
const CALLS: usize = 5;
/// Callers of globex naming acme's ids at once (each with the same request ids).
const HOSTILE: usize = 3;

/// The rows of `tenant` in `E`'s table (`column` is its tenant).
async fn of_tenant<E: EntityTrait>(
    conn: &DatabaseConnection,
    column: E::Column,
    tenant: &str,
) -> Vec<E::Model> {
    E::find()
        .filter(column.eq(tenant))
        .all(conn)
        .await
        .expect("a tenant's rows")
}

/// A tenant's stored state without its generated ids and times: what must be equal between
/// the tenant attacked and the tenant alone.
pub(crate) async fn state_of(
    conn: &DatabaseConnection,
    tenant: &str,
) -> BTreeMap<&'static str, Vec<String>> {
    let mut state = BTreeMap::new();
    let mut put = |table: &'static str, mut rows: Vec<String>| {
        rows.sort_unstable();
        state.insert(table, rows);
    };
    let templates =
        of_tenant::<coupon_template::Entity>(conn, coupon_template::Column::TenantId, tenant).await;
    put(
        "templates",
        templates
            .iter()
            .map(|t| {
                format!(
                    "{} stock {}/{} claimed {} used {} enabled {} archived {} v{} \
                     codes {}/{}/{}",
                    t.name,
                    t.remaining_stock,
                    t.total_stock,
                    t.claimed_count,
                    t.used_count,
                    t.enabled,
                    t.archived_at.is_some(),
                    t.version,
                    t.unique_code_count,
                    t.unique_codes_claimed,
                    t.shared_code_count
                )
            })
            .collect(),
    );
    let coupons =
        of_tenant::<user_coupon::Entity>(conn, user_coupon::Column::TenantId, tenant).await;
    put(
        "coupons",
        coupons
            .iter()
            .map(|c| {
                format!(
                    "{} slot {} status {} v{}",
                    c.member_id, c.claim_slot, c.status, c.version
                )
            })
            .collect(),
    );
    // Unique codes are random: their kind and claimant, not their text.
    let codes = of_tenant::<coupon_code::Entity>(conn, coupon_code::Column::TenantId, tenant).await;
    put(
        "codes",
        codes
            .iter()
            .map(|c| match c.kind {
                1 => format!("shared {}", c.code),
                _ => format!("unique claimed by {:?}", c.member_id),
            })
            .collect(),
    );
    let accounts =
        of_tenant::<points_account::Entity>(conn, points_account::Column::TenantId, tenant).await;
    put(
        "accounts",
        accounts
            .iter()
            .map(|a| {
                format!(
                    "{} available {} frozen {} earned {} spent {} expired {} refunded {} v{}",
                    a.member_id,
                    a.available,
                    a.frozen,
                    a.total_earned,
                    a.total_spent,
                    a.total_expired,
                    a.total_refunded,
                    a.version
                )
            })
            .collect(),
    );
    let entries =
        of_tenant::<points_transaction::Entity>(conn, points_transaction::Column::TenantId, tenant)
            .await;
    put(
        "entries",
        entries
            .iter()
            .map(|e| {
                format!(
                    "{} type {} amount {} frozen {} after {}/{} request {:?} biz {:?}/{:?}",
                    e.member_id,
                    e.tx_type,
                    e.amount,
                    e.frozen_amount,
                    e.available_after,
                    e.frozen_after,
                    e.request_id,
                    e.biz_type,
                    e.biz_id
                )
            })
            .collect(),
    );
    let holds = of_tenant::<points_hold::Entity>(conn, points_hold::Column::TenantId, tenant).await;
    put(
        "holds",
        holds
            .iter()
            .map(|h| {
                format!(
                    "{} order {} status {} amount {} confirmed {}",
                    h.member_id, h.order_id, h.status, h.amount, h.confirmed_amount
                )
            })
            .collect(),
    );
    let lots = of_tenant::<points_lot::Entity>(conn, points_lot::Column::TenantId, tenant).await;
    put(
        "lots",
        lots.iter()
            .map(|l| {
                format!(
                    "amount {} remaining {} frozen {}",
                    l.amount, l.remaining, l.frozen
                )
            })
            .collect(),
    );
    let rules = of_tenant::<points_rule::Entity>(conn, points_rule::Column::TenantId, tenant).await;
    put(
        "rules",
        rules
            .iter()
            .map(|r| {
                format!(
                    "{} points {} enabled {} v{}",
                    r.event_type, r.points, r.enabled, r.version
                )
            })
            .collect(),
    );
    let records =
        of_tenant::<idempotency_record::Entity>(conn, idempotency_record::Column::TenantId, tenant)
            .await;
    put(
        "records",
        records
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} status {}",
                    r.request_id, r.client, r.operation, r.status_code
                )
            })
            .collect(),
    );
    // The events of the calls (the sweeper's own, which depend on when it runs, apart).
    let mut events = Vec::new();
    for batch in of_tenant::<event_batch::Entity>(conn, event_batch::Column::TenantId, tenant).await
    {
        let body = event_body::Entity::find_by_id(batch.id)
            .one(conn)
            .await
            .expect("a batch's body")
            .expect("every batch has a body");
        events.extend(
            marketing_migration::event_format::unpack(&body.events).expect("a body decodes"),
        );
    }
    put(
        "events",
        events
            .iter()
            .filter(|e| e.request_id.is_some())
            .map(|e| {
                format!(
                    "{} {} member {:?} request {:?}",
                    e.event_type, e.aggregate_type, e.member_id, e.request_id
                )
            })
            .collect(),
    );
    state
}

/// No row of one tenant points at another tenant's: coupons and codes at their template, a
/// claimed code at its coupon, ledger entries, lots and holds at their account (and the
/// member it names).
pub(crate) async fn assert_no_row_crosses_tenants(conn: &DatabaseConnection) {
    let templates: BTreeMap<Uuid, String> = coupon_template::Entity::find()
        .all(conn)
        .await
        .expect("templates")
        .into_iter()
        .map(|t| (t.id, t.tenant_id))
        .collect();
    for coupon in user_coupon::Entity::find()
        .all(conn)
        .await
        .expect("coupons")
    {
        assert_eq!(
            templates.get(&coupon.template_id),
            Some(&coupon.tenant_id),
            "coupon {} of {} is of another tenant's template",
            coupon.id,
            coupon.tenant_id
        );
    }
    let coupons: BTreeMap<Uuid, (String, String)> = user_coupon::Entity::find()
        .all(conn)
        .await
        .expect("coupons")
        .into_iter()
        .map(|c| (c.id, (c.tenant_id, c.member_id)))
        .collect();
    for code in coupon_code::Entity::find().all(conn).await.expect("codes") {
        assert_eq!(
            templates.get(&code.template_id),
            Some(&code.tenant_id),
            "code {} of {} is of another tenant's template",
            code.code,
            code.tenant_id
        );
        if let (Some(coupon), Some(member)) = (code.user_coupon_id, &code.member_id) {
            assert_eq!(
                coupons.get(&coupon),
                Some(&(code.tenant_id.clone(), member.clone())),
                "code {} of {} was claimed with another tenant's or member's coupon",
                code.code,
                code.tenant_id
            );
        }
    }
    let accounts: BTreeMap<Uuid, (String, String)> = points_account::Entity::find()
        .all(conn)
        .await
        .expect("accounts")
        .into_iter()
        .map(|a| (a.id, (a.tenant_id, a.member_id)))
        .collect();
    for entry in points_transaction::Entity::find()
        .all(conn)
        .await
        .expect("entries")
    {
        assert_eq!(
            accounts.get(&entry.account_id),
            Some(&(entry.tenant_id.clone(), entry.member_id.clone())),
            "entry {} is of another tenant's or member's account",
            entry.id
        );
    }
    for lot in points_lot::Entity::find().all(conn).await.expect("lots") {
        assert_eq!(
            accounts.get(&lot.account_id).map(|(tenant, _)| tenant),
            Some(&lot.tenant_id),
            "lot {} is of another tenant's account",
            lot.id
        );
    }
    for hold in points_hold::Entity::find().all(conn).await.expect("holds") {
        assert_eq!(
            accounts.get(&hold.account_id),
            Some(&(hold.tenant_id.clone(), hold.member_id.clone())),
            "hold {} is of another tenant's or member's account",
            hold.id
        );
    }
}

/// `CALLS` requests of `rpc` for `seed`, one after another on `channel`: each answer's code.
async fn run(channel: Channel, rpc: &'static Rpc, seed: Seed) -> Vec<Code> {
    let mut codes = Vec::with_capacity(CALLS);
    for n in 0..CALLS {
        let answer = call(&channel, rpc.path, (rpc.request)(&seed, n), None).await;
        codes.push(answer.map_or_else(|status| status.code(), |_| Code::Ok));
    }
    codes
}

/// The harness over every RPC, on `replicas` servers sharing one database: acme's calls on
/// the first, globex's on the last (the same server when there is one).
async fn tenants_at_once_get_what_they_get_alone(replicas: &[&TestApp]) {
    let app = replicas[0];
    let conn = app.state.shared().db.conn();
    let first = replicas[0].channel.clone();
    let last = replicas[replicas.len() - 1].channel.clone();
    // A consumer of each tenant's event stream through all of it, each on its own replica.
    let consumers = [
        Consumer::start(first.clone(), "acme"),
        Consumer::start(last.clone(), "globex"),
    ];
    for rpc in &RPCS {
        let run_id = unique("mixed");
        // Each tenant's own seed, with the same member ids, orders and references.
        let solo = seed(&first, None, "solo", &run_id).await;
        let acme = seed(&first, None, "acme", &run_id).await;
        let globex = seed(&last, None, "globex", &run_id).await;
        let alone = run(first.clone(), rpc, solo).await;

        // globex at once: its own calls, and calls naming acme's ids (template, coupon,
        // hold, transaction, rule) under its own tenant, with the same request ids.
        let hostile = Seed {
            tenant: "globex".into(),
            ..acme.clone()
        };
        let attacked = tokio::spawn(run(first.clone(), rpc, acme));
        let mut others = vec![tokio::spawn(run(last.clone(), rpc, globex))];
        for _ in 0..HOSTILE {
            others.push(tokio::spawn(run(last.clone(), rpc, hostile.clone())));
        }
        let attacked = attacked.await.expect("acme's calls");
        for other in others {
            other.await.expect("globex's calls");
        }

        assert_eq!(
            attacked, alone,
            "{}: acme's answers differ from a tenant's alone",
            rpc.path
        );
        assert_eq!(
            state_of(conn, "acme").await,
            state_of(conn, "solo").await,
            "{}: acme's state differs from a tenant's alone",
            rpc.path
        );
    }
    assert_no_row_crosses_tenants(conn).await;
    for consumer in consumers {
        consumer.received_exactly_the_listed(&first).await;
    }
}

/// A consumer of one tenant's `StreamEvents` from its first event on.
struct Consumer {
    tenant: &'static str,
    received: Arc<Mutex<Vec<pb::Event>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    fn start(channel: Channel, tenant: &'static str) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let into = received.clone();
        let task = tokio::spawn(async move {
            let mut stream = EventServiceClient::new(channel)
                .stream_events(pb::StreamEventsRequest {
                    tenant_id: tenant.into(),
                    ..Default::default()
                })
                .await
                .expect("the stream opens")
                .into_inner();
            while let Some(message) = stream.message().await.expect("the stream goes on") {
                if let Some(pb::stream_events_response::Kind::Event(event)) = message.kind {
                    into.lock().expect("events").push(event);
                }
            }
        });
        Self {
            tenant,
            received,
            task,
        }
    }

    /// The consumer received every event of its tenant once, in position order, and no
    /// other tenant's, however the two tenants' calls interleaved.
    async fn received_exactly_the_listed(self, channel: &Channel) {
        let listed = crate::fixtures::listed_events(channel, self.tenant).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.received.lock().expect("events").len() < listed.len()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.task.abort();
        let received = self.received.lock().expect("events").clone();
        assert!(!listed.is_empty());
        assert!(received.iter().all(|e| e.tenant_id == self.tenant));
        assert_eq!(
            received, listed,
            "{}'s stream: every event of its own, once, in order",
            self.tenant
        );
    }
}

async fn every_rpc_with_two_tenants_at_once(app: &TestApp) {
    tenants_at_once_get_what_they_get_alone(&[app]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_with_two_tenants_at_once_across_two_replicas() {
    let first = spawn_app(Backend::PostgresRedis).await;
    let second = first.spawn_replica().await;
    tenants_at_once_get_what_they_get_alone(&[&first, &second]).await;
    second.stop().await;
    first.stop().await;
}

marketing_tests::backend_suite! {
    every_rpc_with_two_tenants_at_once,
}

/// Per-member limits of one call a minute: a tenant's claims (each of a new member) and its
/// earns by the rule's event (the second of a member is refused) come out the same alone and
/// at once only if no limit key is shared across tenants (the solo tenant, run first, uses
/// the same member ids, and globex's callers do at the same time).
async fn every_rpc_with_two_tenants_at_once_under_rate_limits(app: &TestApp) {
    tenants_at_once_get_what_they_get_alone(&[app]).await;
}

mod under_rate_limits {
    use super::*;

    marketing_tests::backend_suite! {
        with marketing_tests::Options {
            rate_limits: Some("claim=1/m:1, earn=1/m:1"),
            ..marketing_tests::Options::default()
        };
        every_rpc_with_two_tenants_at_once_under_rate_limits,
    }
}
