//! What a planned ledger writes, as rows of its tables, made from the domain in one place.
//! Both write paths write these: the transaction through SeaORM (`write_ledgers`) and
//! PostgreSQL's one statement (`batch::BatchWrite`). A column added to a table is added to
//! its entity's `Model` and set here; the one-statement path names every field of each model
//! (an exhaustive pattern in `batch.rs`), so it does not compile until the column is bound.

use std::collections::HashMap;

use marketing_domain::points::{Ledger, Lot};
use sea_orm::Value;
use uuid::Uuid;

use crate::{
    db::ValuesUpdate,
    entity::{
        points_allocation as alloc, points_hold as hold, points_lot as lot,
        points_transaction as tx,
    },
};

/// The version-checked update of accounts ([`AccountUpdate::values`] in its column order).
pub(crate) const ACCOUNTS: ValuesUpdate<'static> = ValuesUpdate {
    table: "points_accounts",
    columns: &[
        "key",
        "read_version",
        "available",
        "frozen",
        "total_earned",
        "total_spent",
        "total_expired",
        "total_refunded",
        "earned_updated_at",
        "updated_at",
    ],
    set: "available = v.available, frozen = v.frozen, total_earned = v.total_earned, \
          total_spent = v.total_spent, total_expired = v.total_expired, \
          total_refunded = v.total_refunded, earned_updated_at = v.earned_updated_at, \
          version = v.read_version + 1, updated_at = v.updated_at",
    condition: "points_accounts.id = v.key AND points_accounts.version = v.read_version",
};

/// The update of changed lots ([`LotUpdate::values`] in its column order).
pub(crate) const LOTS: ValuesUpdate<'static> = ValuesUpdate {
    table: "points_lots",
    columns: &["key", "remaining", "frozen"],
    set: "remaining = v.remaining, frozen = v.frozen",
    condition: "points_lots.id = v.key",
};

/// An account's new balances, written only where its version is still `read_version` (and
/// raised by one there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountUpdate {
    pub id: Uuid,
    pub read_version: i64,
    pub available: i64,
    pub frozen: i64,
    pub total_earned: i64,
    pub total_spent: i64,
    pub total_expired: i64,
    pub total_refunded: i64,
    pub earned_updated_at: i64,
    pub updated_at: i64,
}

/// A lot a ledger spent from, froze or expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotUpdate {
    pub id: Uuid,
    pub remaining: i64,
    pub frozen: i64,
}

/// Everything one planned ledger writes.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerWrite {
    pub account: AccountUpdate,
    pub changed_lots: Vec<LotUpdate>,
    pub new_lots: Vec<lot::Model>,
    pub entries: Vec<tx::Model>,
    pub allocations: Vec<alloc::Model>,
    /// Each hold once, as last changed (a hold frozen and confirmed in one batch is one row:
    /// one statement cannot upsert a row twice).
    pub holds: Vec<hold::Model>,
}

impl LedgerWrite {
    pub fn of(ledger: &Ledger) -> Self {
        let a = &ledger.account;
        let tenant = a.tenant_id.as_str();
        let member = a.member_id.as_str();
        let mut holds: Vec<hold::Model> = Vec::with_capacity(ledger.holds.len());
        let mut hold_at: HashMap<Uuid, usize> = HashMap::new();
        for h in &ledger.holds {
            let row = hold::Model {
                id: h.id,
                tenant_id: tenant.to_owned(),
                account_id: a.id,
                member_id: member.to_owned(),
                order_id: h.order_id.clone(),
                status: h.status.code(),
                amount: h.amount,
                confirmed_amount: h.confirmed_amount,
                expires_at: h.expires_at.0,
                created_at: h.created_at.0,
                updated_at: h.updated_at.0,
            };
            match hold_at.get(&h.id) {
                Some(&at) => holds[at] = row,
                None => {
                    hold_at.insert(h.id, holds.len());
                    holds.push(row);
                }
            }
        }
        Self {
            account: AccountUpdate {
                id: a.id,
                read_version: ledger.read_version,
                available: a.available,
                frozen: a.frozen,
                total_earned: a.total_earned,
                total_spent: a.total_spent,
                total_expired: a.total_expired,
                total_refunded: a.total_refunded,
                earned_updated_at: a.earned_updated_at.0,
                updated_at: ledger.now().0,
            },
            changed_lots: ledger
                .changed_lots()
                .map(|l| LotUpdate {
                    id: l.id,
                    remaining: l.remaining,
                    frozen: l.frozen,
                })
                .collect(),
            new_lots: ledger
                .new_lots()
                .map(|l| new_lot(tenant, a.id, l))
                .collect(),
            entries: ledger
                .entries
                .iter()
                .map(|e| tx::Model {
                    id: e.id,
                    tenant_id: tenant.to_owned(),
                    account_id: a.id,
                    member_id: member.to_owned(),
                    tx_type: e.tx_type.code(),
                    amount: e.amount,
                    frozen_amount: e.frozen_amount,
                    available_after: e.available_after,
                    frozen_after: e.frozen_after,
                    biz_type: e.meta.biz_type.clone(),
                    biz_id: e.meta.biz_id.clone(),
                    request_id: e.meta.request_id.clone(),
                    hold_id: e.hold_id,
                    related_transaction_id: e.related_transaction_id,
                    description: e.meta.description.clone(),
                    expires_at: e.expires_at.map(|t| t.0),
                    account_version: e.account_version,
                    position: e.position,
                    created_at: e.created_at.0,
                    actor: e.meta.actor.clone(),
                })
                .collect(),
            allocations: ledger
                .allocations
                .iter()
                .map(|al| alloc::Model {
                    id: Uuid::now_v7(),
                    tenant_id: tenant.to_owned(),
                    lot_id: al.lot_id,
                    transaction_id: al.transaction_id,
                    hold_id: al.hold_id,
                    amount: al.amount,
                })
                .collect(),
            holds,
        }
    }
}

fn new_lot(tenant: &str, account: Uuid, l: &Lot) -> lot::Model {
    lot::Model {
        id: l.id,
        tenant_id: tenant.to_owned(),
        account_id: account,
        earn_transaction_id: l.earn_transaction_id,
        amount: l.amount,
        remaining: l.remaining,
        frozen: l.frozen,
        expires_at: l.expires_at.map(|t| t.0),
        created_at: l.created_at.0,
    }
}

impl AccountUpdate {
    /// The values of `db::ValuesUpdate`'s columns, in its order.
    pub(crate) fn values(&self) -> Vec<Value> {
        let Self {
            id,
            read_version,
            available,
            frozen,
            total_earned,
            total_spent,
            total_expired,
            total_refunded,
            earned_updated_at,
            updated_at,
        } = self;
        vec![
            (*id).into(),
            (*read_version).into(),
            (*available).into(),
            (*frozen).into(),
            (*total_earned).into(),
            (*total_spent).into(),
            (*total_expired).into(),
            (*total_refunded).into(),
            (*earned_updated_at).into(),
            (*updated_at).into(),
        ]
    }
}

impl LotUpdate {
    pub(crate) fn values(&self) -> Vec<Value> {
        let Self {
            id,
            remaining,
            frozen,
        } = self;
        vec![(*id).into(), (*remaining).into(), (*frozen).into()]
    }
}
