//! What a planned ledger writes, as rows of its tables, made from the domain in one place
//! (and entries read back into the domain). Both write paths write these: the transaction
//! through SeaORM (`write_ledgers`) and PostgreSQL's one statement (`batch::BatchWrite`),
//! which binds every column of each entity in its declared order and generates its column
//! lists from the same declarations. A column added to a table is added to its entity's
//! `Model` and set here; nothing else names it.

use std::collections::HashMap;

use marketing_domain::{
    MarketingError, UnixMicros,
    points::{Entry, EntryMeta, Ledger, Lot, TxType},
};
use sea_orm::Value;
use uuid::Uuid;

use super::corrupt;
use crate::{
    db::ValuesUpdate,
    entity::{
        points_allocation as alloc, points_hold as hold, points_lot as lot,
        points_transaction as tx,
    },
};

/// Declares a row type of a version-checked update (its fields are the update's columns)
/// with its columns and values in one order, so its fields are named once: by the struct.
/// `id` is the update's key.
macro_rules! update_row {
    ($(#[$meta:meta])* pub struct $name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $(pub $field: $ty,)*
        }

        impl $name {
            /// The columns (name, Rust type) in the order of [`Self::values`].
            pub(crate) const COLUMNS: &'static [(&'static str, &'static str)] =
                &[$((stringify!($field), stringify!($ty))),*];

            /// The row's values in the order of [`Self::COLUMNS`].
            pub(crate) fn values(&self) -> Vec<Value> {
                vec![$(self.$field.clone().into()),*]
            }
        }
    };
}

update_row! {
    /// An account's new balances, written only where its version is still `read_version`
    /// (and raised by one there).
    pub struct AccountUpdate {
        id: Uuid,
        read_version: i64,
        available: i64,
        frozen: i64,
        total_earned: i64,
        total_spent: i64,
        total_expired: i64,
        total_refunded: i64,
        earned_updated_at: i64,
        updated_at: i64,
    }
}

update_row! {
    /// A lot a ledger spent from, froze or expired.
    pub struct LotUpdate {
        id: Uuid,
        remaining: i64,
        frozen: i64,
    }
}

/// The version-checked update of accounts, on the transactional path (the one statement
/// writes the same assignments in `write.sql`).
pub(crate) const ACCOUNTS: ValuesUpdate<'static> = ValuesUpdate {
    table: "points_accounts",
    columns: AccountUpdate::COLUMNS,
    set: "available = v.available, frozen = v.frozen, total_earned = v.total_earned, \
          total_spent = v.total_spent, total_expired = v.total_expired, \
          total_refunded = v.total_refunded, earned_updated_at = v.earned_updated_at, \
          version = v.read_version + 1, updated_at = v.updated_at",
    condition: "points_accounts.id = v.key AND points_accounts.version = v.read_version",
    returning: "id",
};

/// The update of changed lots.
pub(crate) const LOTS: ValuesUpdate<'static> = ValuesUpdate {
    table: "points_lots",
    columns: LotUpdate::COLUMNS,
    set: "remaining = v.remaining, frozen = v.frozen",
    condition: "points_lots.id = v.key",
    returning: "id",
};

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

/// An entry as stored, read back: the other direction of [`LedgerWrite`]'s entries.
pub(crate) fn entry_to_domain(row: tx::Model) -> Result<Entry, MarketingError> {
    Ok(Entry {
        id: row.id,
        tx_type: TxType::from_code(row.tx_type)
            .ok_or_else(|| corrupt("points transaction", row.id))?,
        amount: row.amount,
        frozen_amount: row.frozen_amount,
        available_after: row.available_after,
        frozen_after: row.frozen_after,
        meta: EntryMeta {
            biz_type: row.biz_type,
            biz_id: row.biz_id,
            request_id: row.request_id,
            description: row.description,
            actor: row.actor,
        },
        hold_id: row.hold_id,
        related_transaction_id: row.related_transaction_id,
        expires_at: row.expires_at.map(UnixMicros),
        account_version: row.account_version,
        position: row.position,
        created_at: UnixMicros(row.created_at),
    })
}
