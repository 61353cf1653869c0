//! Conformance suite of the points store (`LedgerStore`): the same test bodies run against
//! every implementation, PostgreSQL's two statements (`PgBatch`), a transaction on PostgreSQL
//! and a transaction on SQLite (`TxnBatch`), as quickwit runs its metastore suite against each
//! metastore. What every implementation must do: open accounts per tenant and read back only
//! the tenant's; write a planned ledger and its request's record durably at commit; and write
//! nothing of a ledger planned on an account that moved since (left out by `write`, or the
//! whole commit refused as a lost race).

use std::{collections::HashMap, future::Future};

use marketing_domain::{
    MarketingError, MemberId, RequestId, TenantId, UnixMicros,
    points::{EntryMeta, Ledger},
};
use marketing_storage::{
    idempotency::{IdempotencyKey, Outcome},
    points::{
        batch::{BatchKeys, BatchReads},
        store::{LedgerStore, PgBatch, PlannedLedger, TxnBatch},
    },
};
use marketing_tests::{Backend, spawn_app};

fn tenant(id: &str) -> TenantId {
    TenantId::parse("tenant_id", id).expect("tenant")
}

fn member(id: &str) -> MemberId {
    MemberId::parse("member_id", id).expect("member")
}

/// Reads `members`' ledgers (and `requests`' records) through a new store, which it drops.
async fn read<S: LedgerStore, F: Future<Output = S>>(
    store: &impl Fn() -> F,
    members: &[(&TenantId, &MemberId)],
    requests: &[(&TenantId, &str, &str)],
) -> BatchReads {
    let store = store().await;
    let keys = BatchKeys {
        requests: requests.to_vec(),
        members: members.to_vec(),
        biz: Vec::new(),
    };
    store.read(&keys).await.expect("read")
}

/// Opens accounts for `members` and makes them durable.
async fn open<S: LedgerStore, F: Future<Output = S>>(
    store: &impl Fn() -> F,
    members: &[(&TenantId, &MemberId)],
) {
    let store = store().await;
    store.open(members, UnixMicros::now()).await.expect("open");
    store
        .commit(Vec::new(), UnixMicros::now())
        .await
        .expect("commit");
}

/// Writes `ledger` (no daily counts) through `store`; the accounts it wrote.
async fn write<S: LedgerStore>(
    store: &mut S,
    ledger: &Ledger,
) -> std::collections::HashSet<uuid::Uuid> {
    let daily = HashMap::new();
    store
        .write(&[PlannedLedger {
            ledger,
            daily: &daily,
        }])
        .await
        .expect("write")
}

/// Reads one member's ledger through `store`, without closing it.
async fn read_one<S: LedgerStore>(store: &S, tenant: &TenantId, member: &MemberId) -> BatchReads {
    let keys = BatchKeys {
        requests: Vec::new(),
        members: vec![(tenant, member)],
        biz: Vec::new(),
    };
    store.read(&keys).await.expect("read")
}

/// One account's ledger as read, with `amount` earned on it.
fn earned(reads: &BatchReads, amount: i64) -> Ledger {
    let (account, lots) = reads.ledgers.first().cloned().expect("the account");
    let mut ledger = Ledger::new(account, lots, UnixMicros::now());
    ledger
        .earn(amount, None, EntryMeta::default())
        .expect("earn");
    ledger
}

async fn opened_accounts_are_read_per_tenant<S: LedgerStore, F: Future<Output = S>>(
    store: impl Fn() -> F,
) {
    let (acme, globex, shared, nobody) = (
        tenant("acme"),
        tenant("globex"),
        member("m1"),
        member("nobody"),
    );
    open(&store, &[(&acme, &shared), (&globex, &shared)]).await;
    let both = read(&store, &[(&acme, &shared), (&globex, &shared)], &[]).await;
    assert_eq!(both.ledgers.len(), 2, "one account per tenant");
    let acme_only = read(&store, &[(&acme, &shared), (&acme, &nobody)], &[]).await;
    assert_eq!(
        acme_only.ledgers.len(),
        1,
        "no account of another tenant's member"
    );
    let (account, lots) = &acme_only.ledgers[0];
    assert_eq!((&account.tenant_id, &account.member_id), (&acme, &shared));
    assert_eq!((account.available, lots.len()), (0, 0));
}

async fn a_written_ledger_and_its_record_are_read_back<S: LedgerStore, F: Future<Output = S>>(
    store: impl Fn() -> F,
) {
    let (acme, m1) = (tenant("acme"), member("m1"));
    open(&store, &[(&acme, &m1)]).await;
    let key = IdempotencyKey {
        tenant_id: acme.clone(),
        request_id: RequestId::parse("request_id", "earn-1").expect("request id"),
        client: String::new(),
        operation: "EarnPoints",
        fingerprint: vec![1, 2, 3],
    };
    let mut writer = store().await;
    let ledger = earned(&read_one(&writer, &acme, &m1).await, 10);
    let written = write(&mut writer, &ledger).await;
    assert!(
        written.contains(&ledger.account.id),
        "the account was at its version"
    );
    let outcome = Outcome {
        status_code: 0,
        response: b"the answer".to_vec(),
    };
    writer
        .commit(vec![(&key, outcome.clone())], UnixMicros::now())
        .await
        .expect("commit");

    let reads = read(&store, &[(&acme, &m1)], &[(&acme, "", "earn-1")]).await;
    let (account, lots) = &reads.ledgers[0];
    assert_eq!((account.available, account.total_earned), (10, 10));
    assert_eq!(lots.len(), 1, "the earn's lot");
    assert_eq!(account.version, ledger.account.version + 1);
    let record = reads
        .records
        .get(&key.record_key())
        .expect("the request's record");
    assert_eq!(record.outcome, outcome);
}

async fn a_ledger_planned_on_a_moved_account_writes_nothing<
    S: LedgerStore,
    F: Future<Output = S>,
>(
    store: impl Fn() -> F,
) {
    let (acme, m1) = (tenant("acme"), member("m1"));
    open(&store, &[(&acme, &m1)]).await;
    let stale = read(&store, &[(&acme, &m1)], &[]).await;
    // Another writer earns 10 first.
    let mut first = store().await;
    let winner = earned(&read_one(&first, &acme, &m1).await, 10);
    write(&mut first, &winner).await;
    first
        .commit(Vec::new(), UnixMicros::now())
        .await
        .expect("commit");

    // A plan of 500 on the version read before it.
    let late = earned(&stale, 500);
    let mut second = store().await;
    let written = write(&mut second, &late).await;
    let committed = second.commit(Vec::new(), UnixMicros::now()).await;
    match committed {
        Ok(()) => assert!(
            !written.contains(&late.account.id),
            "a moved account is left out, or the commit refused"
        ),
        Err(MarketingError::ConcurrentModification(_)) => {}
        Err(other) => panic!("{other:?}"),
    }
    let reads = read(&store, &[(&acme, &m1)], &[]).await;
    let (account, _) = &reads.ledgers[0];
    assert_eq!(account.available, 10, "only the winner's earn is stored");
}

/// Runs each test body against every implementation of `LedgerStore`: a module per
/// implementation, each test on a fresh app of its backend, its store made by `$make` from
/// the app's database `$db`.
macro_rules! ledger_store_suite {
    ($($test:ident),* $(,)?) => {
        ledger_store_suite!(@on postgres_statements, Backend::PostgresRedis,
            |db| async move { PgBatch::new(&db).expect("PostgreSQL") }; $($test),*);
        ledger_store_suite!(@on postgres_transaction, Backend::PostgresRedis,
            |db| async move { TxnBatch::begin(&db).await.expect("begin") }; $($test),*);
        ledger_store_suite!(@on sqlite_transaction, Backend::Embedded,
            |db| async move { TxnBatch::begin(&db).await.expect("begin") }; $($test),*);
    };
    (@on $module:ident, $backend:expr, |$db:ident| $make:expr; $($test:ident),*) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let app = spawn_app($backend).await;
                    let shared = app.state.shared().db.clone();
                    super::$test(|| {
                        let $db = shared.clone();
                        $make
                    })
                    .await;
                    app.stop().await;
                }
            )*
        }
    };
}

ledger_store_suite!(
    opened_accounts_are_read_per_tenant,
    a_written_ledger_and_its_record_are_read_back,
    a_ledger_planned_on_a_moved_account_writes_nothing,
);
