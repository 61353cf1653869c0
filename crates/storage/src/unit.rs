//! The unit of work: what one mutation changes and the record of the request it answers,
//! committed together or not at all (and, from the events issue on, its events). One
//! implementation so far, a write transaction (SQLite's `BEGIN IMMEDIATE`); the points
//! batch's own stores (`points::store`) commit the same way through `LedgerStore::commit`.
//! Dropping a unit without committing it rolls everything back.

use marketing_domain::{MarketingError, UnixMicros};
use sea_orm::DatabaseTransaction;

use crate::{
    Database,
    db::db_error,
    idempotency::{self, Claim, IdempotencyKey, Outcome},
};

pub struct UnitOfWork {
    txn: DatabaseTransaction,
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

    /// Where the change's statements run.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Makes the change durable.
    pub async fn commit(self) -> Result<(), MarketingError> {
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
