//! The unit of work: what one mutation changes and the record of the request it answers,
//! committed together or not at all (and, from the events issue on, its events). A write
//! transaction (SQLite's `BEGIN IMMEDIATE`); every store's writes are reached through it
//! ([`UnitOfWork::templates`], [`UnitOfWork::coupons`], ...), never through the pool. The
//! points batch has a second strategy behind the same idea (`points::store::LedgerStore`:
//! PostgreSQL's one statement, or this transaction), committed by `LedgerStore::commit`.
//! Dropping a unit without committing it rolls everything back.

use marketing_domain::{MarketingError, UnixMicros};
use sea_orm::{ActiveModelTrait, DatabaseTransaction, IntoActiveModel};

use crate::{
    Database,
    clients::Clients,
    db::{Fused, db_error},
    events::{Events, NewEvent, rows_of},
    idempotency::{self, Claim, IdempotencyKey, Outcome, Requests},
    points::accounts::Points,
    templates::Templates,
    user_coupons::Coupons,
};

pub struct UnitOfWork {
    txn: DatabaseTransaction,
    /// What the change recorded, written at commit.
    events: Vec<NewEvent>,
    /// Records of requests a batch answered ([`UnitOfWork::answer_all`]), written at commit.
    answers: Vec<crate::entity::idempotency_record::Model>,
}

/// A unit that owns its request id, or that request's first outcome.
pub enum Begun {
    Fresh(UnitOfWork),
    Replay(Outcome),
}

impl UnitOfWork {
    /// A unit for a change that answers no request of its own (a claim batch records its
    /// requests itself).
    pub async fn begin(db: &Database) -> Result<Self, MarketingError> {
        Ok(Self {
            txn: db.begin_write().await?,
            events: Vec::new(),
            answers: Vec::new(),
        })
    }

    /// A unit that claims `key`'s request id first; a request id answered before gives its
    /// first outcome instead, and nothing is written.
    pub async fn begin_idempotent(
        db: &Database,
        key: &IdempotencyKey,
        now: UnixMicros,
    ) -> Result<Begun, MarketingError> {
        let unit = Self::begin(db).await?;
        match idempotency::claim(&unit.txn, key, now).await? {
            Claim::Fresh => Ok(Begun::Fresh(unit)),
            // Dropping the unit rolls its claim back.
            Claim::Replay(outcome) => Ok(Begun::Replay(outcome)),
        }
    }

    pub(crate) fn txn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// The templates, read and written in this unit.
    pub fn templates(&self) -> Templates<'_, DatabaseTransaction> {
        Templates(&self.txn)
    }

    /// Members' coupons, read and written in this unit.
    pub fn coupons(&self) -> Coupons<'_, DatabaseTransaction> {
        Coupons(&self.txn)
    }

    /// Points accounts and rules, read and written in this unit (a batch of points commands
    /// has its own store, `points::store::LedgerStore`).
    pub fn points(&self) -> Points<'_, DatabaseTransaction> {
        Points(&self.txn)
    }

    /// Redemption codes and their generations, read and written in this unit.
    pub fn codes(&self) -> crate::codes::Codes<'_, DatabaseTransaction> {
        crate::codes::Codes(&self.txn)
    }

    /// Tenants' settings, read and written in this unit.
    pub fn settings(&self) -> crate::settings::Settings<'_, DatabaseTransaction> {
        crate::settings::Settings(&self.txn)
    }

    /// API clients, read and written in this unit.
    pub fn clients(&self) -> Clients<'_, DatabaseTransaction> {
        Clients(&self.txn)
    }

    /// Records of requests this unit answers in a batch, and the retention sweep's deletes.
    pub fn requests(&self) -> Requests<'_> {
        Requests(&self.txn)
    }

    /// Records an event of the change: written with it at commit, or not at all.
    pub fn record(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// The reminders before coupons and points expire (the reminder sweep's).
    pub fn reminders(&self) -> crate::reminders::Reminders<'_> {
        crate::reminders::Reminders(&self.txn)
    }

    /// The events of the whole service (the sequencer numbers them in a unit).
    pub fn events(&self) -> Events<'_, DatabaseTransaction> {
        Events(&self.txn)
    }

    /// Records the answers of requests a batch served (each request's record inserted at
    /// commit, with the events: on PostgreSQL one statement). A request id recorded meanwhile
    /// by a concurrent unit fails the commit (`ConcurrentModification`): retry, and the record
    /// will be found.
    pub fn answer_all(&mut self, answers: Vec<(&IdempotencyKey, Outcome)>, now: UnixMicros) {
        self.answers.extend(
            answers
                .into_iter()
                .map(|(key, outcome)| idempotency::record_row(key, outcome, now)),
        );
    }

    /// Makes the change durable, with its events and answers: written in one statement on
    /// PostgreSQL (a round trip less on paths that hold a lock until the commit).
    pub async fn commit(self) -> Result<(), MarketingError> {
        let rows = rows_of(self.events);
        let aggregates = match sea_orm::ConnectionTrait::get_database_backend(&self.txn) {
            sea_orm::DbBackend::Postgres => Vec::new(),
            _ => rows.aggregate_rows(),
        };
        let mut fused = Fused::default();
        fused.add(
            rows.batches
                .into_iter()
                .map(|b| b.into_active_model().reset_all())
                .collect::<Vec<_>>(),
        );
        fused.add(
            rows.bodies
                .into_iter()
                .map(|b| b.into_active_model().reset_all())
                .collect::<Vec<_>>(),
        );
        fused.add(
            aggregates
                .into_iter()
                .map(|a| a.into_active_model().reset_all())
                .collect::<Vec<_>>(),
        );
        fused.add(
            self.answers
                .into_iter()
                .map(|r| r.into_active_model().reset_all())
                .collect::<Vec<_>>(),
        );
        fused.execute(&self.txn).await?;
        self.txn.commit().await.map_err(db_error)
    }

    /// Records `outcome` as the answer to `key`'s request and makes it durable with the
    /// change.
    pub async fn commit_answered(
        self,
        key: &IdempotencyKey,
        outcome: Outcome,
    ) -> Result<(), MarketingError> {
        idempotency::complete(&self.txn, key, outcome).await?;
        self.commit().await
    }
}
