//! The one interface a batch of points commands is served through: read what the batch
//! needs, write the ledgers it planned where nothing they were planned on has moved, then
//! record the outcomes and make it all durable at once. Two implementations:
//!
//! - [`PgBatch`]: PostgreSQL's two statements (`batch.rs`): the read in autocommit, and every
//!   write in one statement that writes nothing if any account moved (then `commit` is
//!   `ConcurrentModification`, and the caller serves the batch again through a transaction).
//! - [`TxnBatch`]: one SeaORM transaction (SQLite's only way, PostgreSQL's fallback): a
//!   ledger whose account moved is left out by `write`, and its caller plans it again.
//!
//! Both write the rows `rows::LedgerWrite` makes of a ledger.

use std::collections::{HashMap, HashSet};

use marketing_domain::{
    MarketingError, MemberId, TenantId, UnixMicros,
    points::{Entry, Hold, Ledger, Lot, TxType},
};
use sea_orm::{DatabaseConnection, DatabaseTransaction, sqlx::PgPool};
use uuid::Uuid;

use super::{
    HoldRef, LedgerRows,
    batch::{BatchKeys, BatchReads, BatchWrite},
};
use crate::{
    Database,
    events::NewEvent,
    idempotency::{self, IdempotencyKey, Outcome},
    points,
    unit::UnitOfWork,
};

/// The reads planning makes beside the batch's one read, through the store's own connection
/// (autocommit for [`PgBatch`], the transaction for [`TxnBatch`]); the connection itself is not
/// handed out.
pub struct Reads<'a>(Snapshot<'a>);

enum Snapshot<'a> {
    Autocommit(&'a DatabaseConnection),
    Transaction(&'a DatabaseTransaction),
}

/// `$read` (a `points::` query taking the connection first) on the snapshot's connection.
macro_rules! on_snapshot {
    ($reads:expr, $read:ident($($arg:expr),* $(,)?)) => {
        match $reads.0 {
            Snapshot::Autocommit(conn) => points::$read(conn, $($arg),*).await,
            Snapshot::Transaction(txn) => points::$read(txn, $($arg),*).await,
        }
    };
}

impl Reads<'_> {
    /// Points a member earned today by `event_type` (under its rule's daily cap).
    pub async fn earned_today(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        event_type: &str,
        day: i32,
    ) -> Result<i64, MarketingError> {
        on_snapshot!(self, earned_today(tenant, member, event_type, day))
    }

    pub async fn find_hold(
        &self,
        account: Uuid,
        by: HoldRef<'_>,
    ) -> Result<Option<Hold>, MarketingError> {
        on_snapshot!(self, find_hold(account, by))
    }

    /// The lots a hold took points from, and how many from each.
    pub async fn hold_allocations(&self, hold: Uuid) -> Result<Vec<(Uuid, i64)>, MarketingError> {
        on_snapshot!(self, hold_allocations(hold))
    }

    pub async fn find_entry(
        &self,
        account: Uuid,
        id: Uuid,
    ) -> Result<Option<Entry>, MarketingError> {
        on_snapshot!(self, find_entry(account, id))
    }

    /// The entry of one of `types` with the business reference (of `account`, if named).
    pub async fn find_by_biz(
        &self,
        tenant: &TenantId,
        account: Option<Uuid>,
        types: &[TxType],
        biz_type: &str,
        biz_id: &str,
    ) -> Result<Option<Entry>, MarketingError> {
        on_snapshot!(self, find_by_biz(tenant, account, types, biz_type, biz_id))
    }

    /// What of a deduction (or confirmation) may still be refunded, lot by lot.
    pub async fn refundable_allocations(
        &self,
        entry: Uuid,
    ) -> Result<Vec<(Uuid, i64)>, MarketingError> {
        on_snapshot!(self, refundable_allocations(entry))
    }

    pub async fn lots_by_id(
        &self,
        account: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<Lot>, MarketingError> {
        on_snapshot!(self, lots_by_id(account, ids))
    }
}

/// A ledger planned for writing, and the points it awards per (event type, UTC day) under
/// daily caps.
pub struct PlannedLedger<'a> {
    pub ledger: &'a Ledger,
    pub daily: &'a HashMap<(String, i32), i64>,
}

/// Where a batch of points commands reads and writes.
// Used generically inside the workspace only: no caller needs the futures to name `Send`.
#[allow(async_fn_in_trait)]
pub trait LedgerStore {
    /// Where planning reads what the batch read does not hold (a hold, an entry to refund,
    /// a daily count): the same snapshot rules as the batch's writes.
    fn reads(&self) -> Reads<'_>;

    /// The records of the batch's requests, its members' accounts with their live lots, and
    /// which of its business references are taken.
    async fn read(&self, keys: &BatchKeys<'_>) -> Result<BatchReads, MarketingError>;

    /// Creates empty accounts for `members` (read them back with [`Self::read`]).
    async fn open(
        &self,
        members: &[(&TenantId, &MemberId)],
        now: UnixMicros,
    ) -> Result<(), MarketingError>;

    /// Writes the ledgers whose account still has the version they were planned on, with
    /// their daily counts; returns those accounts' ids. A ledger left out wrote nothing.
    async fn write(
        &mut self,
        planned: &[PlannedLedger<'_>],
    ) -> Result<HashSet<Uuid>, MarketingError>;

    /// Records an event of the batch's changes: written at commit with everything else.
    fn record(&mut self, event: NewEvent);

    /// Records the requests' outcomes and makes the batch durable, all of it or nothing.
    async fn commit(
        self,
        outcomes: Vec<(&IdempotencyKey, Outcome)>,
        now: UnixMicros,
    ) -> Result<(), MarketingError>;
}

/// PostgreSQL's two statements: see `batch.rs`. One connection: the pool, in autocommit
/// (its statements through sqlx, planning's reads and new accounts through SeaORM).
pub struct PgBatch {
    db: Database,
    write: BatchWrite,
}

impl PgBatch {
    /// `None` on SQLite.
    pub fn new(db: &Database) -> Option<Self> {
        db.postgres()?;
        Some(Self {
            db: db.clone(),
            write: BatchWrite::default(),
        })
    }

    fn pool(&self) -> Result<&PgPool, MarketingError> {
        self.db
            .postgres()
            .ok_or_else(|| MarketingError::internal("a PgBatch on SQLite"))
    }
}

impl LedgerStore for PgBatch {
    fn reads(&self) -> Reads<'_> {
        Reads(Snapshot::Autocommit(self.db.conn()))
    }

    async fn read(&self, keys: &BatchKeys<'_>) -> Result<BatchReads, MarketingError> {
        super::batch::read_batch(self.pool()?, keys).await
    }

    async fn open(
        &self,
        members: &[(&TenantId, &MemberId)],
        now: UnixMicros,
    ) -> Result<(), MarketingError> {
        // Empty accounts, created at once whatever becomes of the batch: harmless.
        points::create_accounts(self.db.conn(), members, now).await
    }

    /// Takes every ledger: whether one moved is known when the statement runs, at commit.
    async fn write(
        &mut self,
        planned: &[PlannedLedger<'_>],
    ) -> Result<HashSet<Uuid>, MarketingError> {
        for p in planned {
            self.write.add_ledger(p.ledger);
            let account = &p.ledger.account;
            for ((event, day), points) in p.daily {
                self.write
                    .add_daily(&account.tenant_id, &account.member_id, event, *day, *points);
            }
        }
        Ok(planned.iter().map(|p| p.ledger.account.id).collect())
    }

    fn record(&mut self, event: NewEvent) {
        self.write.add_event(event);
    }

    async fn commit(
        mut self,
        outcomes: Vec<(&IdempotencyKey, Outcome)>,
        now: UnixMicros,
    ) -> Result<(), MarketingError> {
        for (key, outcome) in outcomes {
            self.write.add_record(key, outcome, now);
        }
        let pool = self.pool()?.clone();
        self.write.execute(&pool).await
    }
}

/// A unit of work's transaction.
pub struct TxnBatch {
    unit: UnitOfWork,
    rows: LedgerRows,
}

impl TxnBatch {
    pub async fn begin(db: &Database) -> Result<Self, MarketingError> {
        Ok(Self {
            unit: UnitOfWork::begin(db).await?,
            rows: LedgerRows::default(),
        })
    }
}

impl LedgerStore for TxnBatch {
    fn reads(&self) -> Reads<'_> {
        Reads(Snapshot::Transaction(self.unit.txn()))
    }

    async fn read(&self, keys: &BatchKeys<'_>) -> Result<BatchReads, MarketingError> {
        let records =
            idempotency::find_many(self.unit.txn(), keys.requests.iter().copied()).await?;
        let taken = if keys.biz.is_empty() {
            HashSet::new()
        } else {
            let refs: Vec<points::BizRef> = keys.biz.iter().map(|r| (*r).clone()).collect();
            points::taken_biz_refs(self.unit.txn(), &refs).await?
        };
        let accounts = points::find_accounts(self.unit.txn(), &keys.members).await?;
        let ids: Vec<Uuid> = accounts.iter().map(|a| a.id).collect();
        let mut lots = points::live_lots_of(self.unit.txn(), &ids).await?;
        let ledgers = accounts
            .into_iter()
            .map(|account| {
                let lots = lots.remove(&account.id).unwrap_or_default();
                (account, lots)
            })
            .collect();
        Ok(BatchReads {
            records,
            ledgers,
            taken,
        })
    }

    async fn open(
        &self,
        members: &[(&TenantId, &MemberId)],
        now: UnixMicros,
    ) -> Result<(), MarketingError> {
        points::create_accounts(self.unit.txn(), members, now).await
    }

    async fn write(
        &mut self,
        planned: &[PlannedLedger<'_>],
    ) -> Result<HashSet<Uuid>, MarketingError> {
        let ledgers: Vec<&Ledger> = planned.iter().map(|p| p.ledger).collect();
        let written = points::write_ledgers(self.unit.txn(), &ledgers, &mut self.rows).await?;
        for p in planned {
            let account = &p.ledger.account;
            if !written.contains(&account.id) {
                continue;
            }
            for ((event, day), points) in p.daily {
                points::add_earned_today(
                    self.unit.txn(),
                    &account.tenant_id,
                    &account.member_id,
                    event,
                    *day,
                    *points,
                )
                .await?;
            }
        }
        Ok(written)
    }

    fn record(&mut self, event: NewEvent) {
        self.unit.record(event);
    }

    async fn commit(
        mut self,
        outcomes: Vec<(&IdempotencyKey, Outcome)>,
        now: UnixMicros,
    ) -> Result<(), MarketingError> {
        points::insert_ledger_rows(self.unit.txn(), self.rows).await?;
        self.unit.answer_all(outcomes, now);
        self.unit.commit().await
    }
}
