//! Points storage: accounts, lots, the ledger, allocations, holds, rules and daily caps.
//! A change of an account is written by [`write_ledgers`]: the account row only if its version
//! is still the one read (optimistic concurrency), then everything else the change made. All
//! rows of an account change only through that version check, so they stay consistent.

use std::collections::{BTreeMap, HashMap, HashSet};

use marketing_domain::{
    MarketingError, MemberId, TenantId, UnixMicros,
    coupon_template::Currency,
    error::Refusal,
    points::{Account, Entry, Hold, HoldStatus, Ledger, Lot, TxType},
    points_rule::{PerAmount, PointsRule, Rounding, RuleTerms},
};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, ExprTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select, Statement, Value,
    sea_query::{Expr, OnConflict},
};
use uuid::Uuid;

pub mod accounts;
pub mod batch;
pub mod rows;
pub mod store;

use rows::{LedgerWrite, LotUpdate};

use crate::{
    db::{constant, db_error},
    entity::{
        points_account as acct, points_allocation as alloc, points_daily_earning as daily,
        points_hold as hold, points_lot as lot, points_rule as rule, points_transaction as tx,
    },
};

/// A lot that still holds points: `remaining > 0`, as the `live` column the database derives
/// from it. The lot indexes are keyed on `live` so that updates of `remaining` leave them alone
/// (see migration `m20261202_000003`); this condition is what selects them.
fn live_lot() -> Expr {
    Expr::cust("live")
}

pub(crate) fn corrupt(what: &str, id: impl std::fmt::Display) -> MarketingError {
    MarketingError::internal(format!("{what} {id} is corrupt"))
}

pub async fn find_account(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    member: &MemberId,
) -> Result<Option<Account>, MarketingError> {
    acct::Entity::find()
        .filter(acct::Column::TenantId.eq(tenant.as_str()))
        .filter(acct::Column::MemberId.eq(member.as_str()))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(account_to_domain)
        .transpose()
}

/// The accounts of `members` that exist, in one query.
pub async fn find_accounts(
    conn: &impl ConnectionTrait,
    members: &[(&TenantId, &MemberId)],
) -> Result<Vec<Account>, MarketingError> {
    let mut by_tenant: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (tenant, member) in members {
        by_tenant
            .entry(tenant.as_str())
            .or_default()
            .push(member.as_str());
    }
    let mut accounts = Vec::with_capacity(members.len());
    // Bounded IN lists; a batch is far smaller than one chunk.
    for (tenant, members) in by_tenant {
        for chunk in members.chunks(1000) {
            let rows = acct::Entity::find()
                .filter(acct::Column::TenantId.eq(tenant))
                .filter(acct::Column::MemberId.is_in(chunk.iter().copied()))
                .all(conn)
                .await
                .map_err(db_error)?;
            for row in rows {
                accounts.push(account_to_domain(row)?);
            }
        }
    }
    Ok(accounts)
}

/// The live lots of each of `accounts`, in one query.
pub async fn live_lots_of(
    conn: &impl ConnectionTrait,
    accounts: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Lot>>, MarketingError> {
    let mut lots: HashMap<Uuid, Vec<Lot>> = HashMap::new();
    for chunk in accounts.chunks(1000) {
        let rows = lot::Entity::find()
            .filter(lot::Column::AccountId.is_in(chunk.iter().copied()))
            .filter(live_lot())
            .all(conn)
            .await
            .map_err(db_error)?;
        for row in rows {
            lots.entry(row.account_id)
                .or_default()
                .push(lot_to_domain(row));
        }
    }
    Ok(lots)
}

/// The member's account, created empty if it does not exist yet. Concurrent creators agree:
/// the second insert does nothing and both read the same row.
pub async fn get_or_create_account(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    member: &MemberId,
    now: UnixMicros,
) -> Result<Account, MarketingError> {
    if let Some(account) = find_account(conn, tenant, member).await? {
        return Ok(account);
    }
    create_accounts(conn, &[(tenant, member)], now).await?;
    find_account(conn, tenant, member)
        .await?
        .ok_or_else(|| MarketingError::internal("points account vanished after its creation"))
}

/// Creates, in one statement, the accounts of `members` that do not exist yet; concurrent
/// creators agree as in [`get_or_create_account`]. Give `members` sorted, so that concurrent
/// batches wait for each other's new rows in one order.
pub async fn create_accounts(
    conn: &impl ConnectionTrait,
    members: &[(&TenantId, &MemberId)],
    now: UnixMicros,
) -> Result<(), MarketingError> {
    let rows = members
        .iter()
        .map(|(tenant, member)| new_account(tenant, member, now))
        .collect();
    crate::db::insert_all_if_absent(conn, rows, [acct::Column::TenantId, acct::Column::MemberId])
        .await?;
    Ok(())
}

fn new_account(tenant: &TenantId, member: &MemberId, now: UnixMicros) -> acct::ActiveModel {
    acct::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant.as_str().to_owned()),
        member_id: Set(member.as_str().to_owned()),
        available: Set(0),
        frozen: Set(0),
        total_earned: Set(0),
        total_spent: Set(0),
        total_expired: Set(0),
        total_refunded: Set(0),
        version: Set(1),
        earned_updated_at: Set(now.0),
        created_at: Set(now.0),
        updated_at: Set(now.0),
    }
}

/// The account's lots that still hold points.
pub async fn live_lots(
    conn: &impl ConnectionTrait,
    account: Uuid,
) -> Result<Vec<Lot>, MarketingError> {
    Ok(lot::Entity::find()
        .filter(lot::Column::AccountId.eq(account))
        .filter(live_lot())
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(lot_to_domain)
        .collect())
}

pub async fn lots_by_id(
    conn: &impl ConnectionTrait,
    account: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Lot>, MarketingError> {
    Ok(lot::Entity::find()
        .filter(lot::Column::AccountId.eq(account))
        .filter(lot::Column::Id.is_in(ids.iter().copied()))
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(lot_to_domain)
        .collect())
}

/// The rows a batch of ledgers adds, inserted together by [`insert_ledger_rows`]: one
/// multi-row INSERT per table for the whole batch instead of three per account.
#[derive(Default)]
pub struct LedgerRows {
    lots: Vec<lot::ActiveModel>,
    entries: Vec<tx::ActiveModel>,
    allocations: Vec<alloc::ActiveModel>,
}

/// Inserts what `write_ledgers` collected (lots first: allocations refer to them).
pub async fn insert_ledger_rows(
    conn: &impl ConnectionTrait,
    rows: LedgerRows,
) -> Result<(), MarketingError> {
    crate::db::insert_rows(conn, rows.lots).await?;
    crate::db::insert_rows(conn, rows.entries).await?;
    crate::db::insert_rows(conn, rows.allocations).await
}

/// A row to insert with every column set.
fn insert<M: IntoActiveModel<A>, A: ActiveModelTrait>(model: M) -> A {
    model.into_active_model().reset_all()
}

/// Writes ledgers' accounts, lots and holds, and adds their new rows to `rows` (insert them
/// with [`insert_ledger_rows`] before commit): one version-checked UPDATE for all accounts,
/// one UPDATE for all their changed lots. Returns the ids of the accounts written. A ledger
/// whose account no longer has the version read is left out, nothing of it written or added:
/// a concurrent change won, and its caller plans again on fresh data.
pub async fn write_ledgers(
    conn: &impl ConnectionTrait,
    ledgers: &[&Ledger],
    rows: &mut LedgerRows,
) -> Result<HashSet<Uuid>, MarketingError> {
    let planned: Vec<LedgerWrite> = ledgers.iter().map(|l| LedgerWrite::of(l)).collect();
    let accounts = planned.iter().map(|w| w.account.values()).collect();
    let written: HashSet<Uuid> = rows::ACCOUNTS
        .execute(conn, accounts)
        .await?
        .into_iter()
        .collect();
    let planned: Vec<LedgerWrite> = planned
        .into_iter()
        .filter(|w| written.contains(&w.account.id))
        .collect();
    let lots: Vec<Vec<Value>> = planned
        .iter()
        .flat_map(|w| &w.changed_lots)
        .map(LotUpdate::values)
        .collect();
    if !lots.is_empty() {
        let expected = lots.len();
        let updated = rows::LOTS.execute(conn, lots).await?.len();
        if updated != expected {
            return Err(MarketingError::internal(format!(
                "{updated} of {expected} changed lots found"
            )));
        }
    }
    for w in planned {
        for h in w.holds {
            upsert_hold(conn, h).await?;
        }
        rows.lots.extend(w.new_lots.into_iter().map(insert));
        rows.entries.extend(w.entries.into_iter().map(insert));
        rows.allocations
            .extend(w.allocations.into_iter().map(insert));
    }
    Ok(written)
}

async fn upsert_hold(conn: &impl ConnectionTrait, row: hold::Model) -> Result<(), MarketingError> {
    hold::Entity::insert(insert::<_, hold::ActiveModel>(row))
        .on_conflict(
            OnConflict::column(hold::Column::Id)
                .update_columns([
                    hold::Column::Status,
                    hold::Column::ConfirmedAmount,
                    hold::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// A hold of the member's account, by id or by its order (the one still HELD, else the
/// latest).
pub async fn find_hold(
    conn: &impl ConnectionTrait,
    account: Uuid,
    by: HoldRef<'_>,
) -> Result<Option<Hold>, MarketingError> {
    let mut query = hold::Entity::find().filter(hold::Column::AccountId.eq(account));
    query = match by {
        HoldRef::Id(id) => query.filter(hold::Column::Id.eq(id)),
        HoldRef::Order(order) => query
            .filter(hold::Column::OrderId.eq(order))
            .order_by_asc(Expr::col(hold::Column::Status).ne(HoldStatus::Held.code()))
            .order_by_desc(hold::Column::Id),
    };
    query
        .one(conn)
        .await
        .map_err(db_error)?
        .map(hold_to_domain)
        .transpose()
}

#[derive(Debug, Clone, Copy)]
pub enum HoldRef<'a> {
    Id(Uuid),
    Order(&'a str),
}

/// Lots and points a hold froze.
pub async fn hold_allocations(
    conn: &impl ConnectionTrait,
    hold_id: Uuid,
) -> Result<Vec<(Uuid, i64)>, MarketingError> {
    let rows = alloc::Entity::find()
        .filter(alloc::Column::HoldId.eq(hold_id))
        .all(conn)
        .await
        .map_err(db_error)?;
    Ok(rows.into_iter().map(|r| (r.lot_id, r.amount)).collect())
}

pub async fn find_entry(
    conn: &impl ConnectionTrait,
    account: Uuid,
    id: Uuid,
) -> Result<Option<Entry>, MarketingError> {
    tx::Entity::find_by_id(id)
        .filter(tx::Column::AccountId.eq(account))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(rows::entry_to_domain)
        .transpose()
}

/// A business reference an earn or a deduction takes: unique per tenant and entry type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BizRef {
    pub tenant: String,
    /// The entry type's code (`TxType::code`): EARN or DEDUCT.
    pub tx_type: i16,
    pub biz_type: String,
    pub biz_id: String,
}

/// Which of `refs` an entry holds already, in one query per 200.
pub async fn taken_biz_refs(
    conn: &impl ConnectionTrait,
    refs: &[BizRef],
) -> Result<HashSet<BizRef>, MarketingError> {
    let mut taken = HashSet::new();
    for chunk in refs.chunks(200) {
        let mut any = Condition::any();
        for r in chunk {
            any = any.add(
                Condition::all()
                    .add(tx::Column::TenantId.eq(r.tenant.as_str()))
                    // A constant: each branch then selects the unique partial index.
                    .add(Expr::col(tx::Column::TxType).eq(constant(r.tx_type)))
                    .add(tx::Column::BizType.eq(r.biz_type.as_str()))
                    .add(tx::Column::BizId.eq(r.biz_id.as_str())),
            );
        }
        let rows: Vec<(String, i16, Option<String>, Option<String>)> = tx::Entity::find()
            .select_only()
            .column(tx::Column::TenantId)
            .column(tx::Column::TxType)
            .column(tx::Column::BizType)
            .column(tx::Column::BizId)
            .filter(any)
            .into_tuple()
            .all(conn)
            .await
            .map_err(db_error)?;
        for (tenant, tx_type, biz_type, biz_id) in rows {
            if let (Some(biz_type), Some(biz_id)) = (biz_type, biz_id) {
                taken.insert(BizRef {
                    tenant,
                    tx_type,
                    biz_type,
                    biz_id,
                });
            }
        }
    }
    Ok(taken)
}

/// The EARN or DEDUCT (or CONFIRM) of a business reference in the tenant, or only in
/// `account` when given.
pub async fn find_by_biz(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    account: Option<Uuid>,
    types: &[TxType],
    biz_type: &str,
    biz_id: &str,
) -> Result<Option<Entry>, MarketingError> {
    let mut query = tx::Entity::find().filter(tx::Column::TenantId.eq(tenant.as_str()));
    if let Some(account) = account {
        query = query.filter(tx::Column::AccountId.eq(account));
    }
    query
        // Constants: with earns or deductions alone, the unique partial index serves.
        .filter(Expr::col(tx::Column::TxType).is_in(types.iter().map(|t| constant(t.code()))))
        .filter(tx::Column::BizType.eq(biz_type))
        .filter(tx::Column::BizId.eq(biz_id))
        .order_by_asc(tx::Column::Id)
        .one(conn)
        .await
        .map_err(db_error)?
        .map(rows::entry_to_domain)
        .transpose()
}

/// Per lot, the points `target` took that no refund has given back yet.
pub async fn refundable_allocations(
    conn: &impl ConnectionTrait,
    target: Uuid,
) -> Result<Vec<(Uuid, i64)>, MarketingError> {
    let refunds: Vec<Uuid> = tx::Entity::find()
        .select_only()
        .column(tx::Column::Id)
        .filter(tx::Column::RelatedTransactionId.eq(target))
        .filter(tx::Column::TxType.eq(TxType::Refund.code()))
        .into_tuple()
        .all(conn)
        .await
        .map_err(db_error)?;
    let rows = alloc::Entity::find()
        .filter(
            Condition::any()
                .add(alloc::Column::TransactionId.eq(target))
                .add(alloc::Column::TransactionId.is_in(refunds)),
        )
        .all(conn)
        .await
        .map_err(db_error)?;
    let mut per_lot: HashMap<Uuid, i64> = HashMap::new();
    for row in rows {
        *per_lot.entry(row.lot_id).or_default() += row.amount;
    }
    Ok(per_lot.into_iter().filter(|(_, left)| *left > 0).collect())
}

/// Points a member earned today from `event_type`.
pub async fn earned_today(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    member: &MemberId,
    event_type: &str,
    day: i32,
) -> Result<i64, MarketingError> {
    Ok(daily::Entity::find_by_id((
        tenant.as_str().to_owned(),
        member.as_str().to_owned(),
        event_type.to_owned(),
        day,
    ))
    .one(conn)
    .await
    .map_err(db_error)?
    .map_or(0, |row| row.earned))
}

pub async fn add_earned_today(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    member: &MemberId,
    event_type: &str,
    day: i32,
    points: i64,
) -> Result<(), MarketingError> {
    let row = daily::ActiveModel {
        tenant_id: Set(tenant.as_str().to_owned()),
        member_id: Set(member.as_str().to_owned()),
        event_type: Set(event_type.to_owned()),
        day: Set(day),
        earned: Set(points),
    };
    daily::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                daily::Column::TenantId,
                daily::Column::MemberId,
                daily::Column::EventType,
                daily::Column::Day,
            ])
            .value(
                daily::Column::Earned,
                Expr::col((daily::Entity, daily::Column::Earned)).add(points),
            )
            .to_owned(),
        )
        .exec_without_returning(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// A page of a member's ledger, newest first (ledger order), after the entry `after`.
pub async fn list_entries(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    member: &MemberId,
    types: &[TxType],
    range: (Option<UnixMicros>, Option<UnixMicros>),
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Entry>, MarketingError> {
    let Some(account) = find_account(conn, tenant, member).await? else {
        return Ok(Vec::new());
    };
    let after = match after {
        None => None,
        Some(after) => {
            // The cursor's entry, of this account only.
            let Some(last) = tx::Entity::find_by_id(after)
                .filter(tx::Column::AccountId.eq(account.id))
                .one(conn)
                .await
                .map_err(db_error)?
            else {
                return Ok(Vec::new());
            };
            Some((last.account_version, last.position))
        }
    };
    entries_page(account.id, types, range, after, limit)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(rows::entry_to_domain)
        .collect()
}

/// A page of an account's ledger, newest first, after the entry at (`account_version`,
/// `position`): a walk of the ledger's sequence index (`uq_points_transactions_sequence`) from
/// the cursor, whatever the ledger's length.
fn entries_page(
    account: Uuid,
    types: &[TxType],
    range: (Option<UnixMicros>, Option<UnixMicros>),
    after: Option<(i64, i32)>,
    limit: u64,
) -> Select<tx::Entity> {
    let mut query = tx::Entity::find().filter(tx::Column::AccountId.eq(account));
    if !types.is_empty() {
        query = query.filter(tx::Column::TxType.is_in(types.iter().map(|t| t.code())));
    }
    if let Some(start) = range.0 {
        query = query.filter(tx::Column::CreatedAt.gte(start.0));
    }
    if let Some(end) = range.1 {
        query = query.filter(tx::Column::CreatedAt.lt(end.0));
    }
    if let Some((version, position)) = after {
        query = query.filter(
            Condition::any()
                .add(tx::Column::AccountVersion.lt(version))
                .add(
                    Condition::all()
                        .add(tx::Column::AccountVersion.eq(version))
                        .add(tx::Column::Position.lt(position)),
                ),
        );
    }
    query
        .order_by_desc(tx::Column::AccountVersion)
        .order_by_desc(tx::Column::Position)
        .limit(limit)
}

/// Every entry of an account, oldest first (for audits and tests).
pub async fn all_entries(
    conn: &impl ConnectionTrait,
    account: Uuid,
) -> Result<Vec<Entry>, MarketingError> {
    tx::Entity::find()
        .filter(tx::Column::AccountId.eq(account))
        // The ledger's own order (times of two replicas' entries need not agree with it).
        .order_by_asc(tx::Column::AccountVersion)
        .order_by_asc(tx::Column::Position)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(rows::entry_to_domain)
        .collect()
}

/// All lots of an account, spent ones included (for audits and tests).
pub async fn all_lots(
    conn: &impl ConnectionTrait,
    account: Uuid,
) -> Result<Vec<Lot>, MarketingError> {
    Ok(lot::Entity::find()
        .filter(lot::Column::AccountId.eq(account))
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(lot_to_domain)
        .collect())
}

/// Top `n` members of a tenant by total earned, ties by who reached it first: (member, total,
/// reached at). Served by the leaderboard index.
pub async fn top_earners(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    n: u64,
) -> Result<Vec<(String, i64, i64)>, MarketingError> {
    acct::Entity::find()
        .select_only()
        .column(acct::Column::MemberId)
        .column(acct::Column::TotalEarned)
        .column(acct::Column::EarnedUpdatedAt)
        .filter(acct::Column::TenantId.eq(tenant.as_str()))
        .filter(acct::Column::TotalEarned.gt(0))
        .order_by_desc(acct::Column::TotalEarned)
        .order_by_asc(acct::Column::EarnedUpdatedAt)
        .order_by_asc(acct::Column::MemberId)
        .limit(n)
        .into_tuple()
        .all(conn)
        .await
        .map_err(db_error)
}

/// Accounts with lots whose time has passed but still hold free points: (tenant, member),
/// each once, of the first `limit` such lots.
pub async fn accounts_with_due_lots(
    conn: &impl ConnectionTrait,
    now: UnixMicros,
    limit: u64,
) -> Result<DueAccounts, MarketingError> {
    let mut accounts: Vec<Uuid> = due_lots(now, limit)
        .into_tuple()
        .all(conn)
        .await
        .map_err(db_error)?;
    let lots = accounts.len();
    let mut seen = HashSet::new();
    accounts.retain(|account| seen.insert(*account));
    Ok(DueAccounts {
        accounts: members_of(conn, accounts).await?,
        lots,
    })
}

/// The accounts of the first lots due, and how many lots were read for them: fewer than were
/// asked for means none is left due (an account may hold several, so its accounts alone do not
/// tell).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueAccounts {
    /// (tenant, member) of each account, once.
    pub accounts: Vec<(String, String)>,
    pub lots: usize,
}

/// The accounts of the first `limit` lots due at `now`, soonest first: a walk of the partial
/// index `idx_points_lots_expiring` that stops at the first lot not due. (A `DISTINCT` would
/// read every due lot of the whole index before the limit; duplicates are dropped after.)
fn due_lots(now: UnixMicros, limit: u64) -> Select<lot::Entity> {
    lot::Entity::find()
        .select_only()
        .column(lot::Column::AccountId)
        .filter(live_lot())
        // The time as a constant: planned for this instant, the partial index is chosen.
        .filter(Expr::col(lot::Column::ExpiresAt).lte(constant(now.0)))
        .filter(Expr::col(lot::Column::Remaining).gt(Expr::col(lot::Column::Frozen)))
        .order_by_asc(lot::Column::ExpiresAt)
        .limit(limit)
}

/// HELD holds whose time has passed: (tenant, member, hold id).
pub async fn due_holds(
    conn: &impl ConnectionTrait,
    now: UnixMicros,
    limit: u64,
) -> Result<Vec<(String, String, Uuid)>, MarketingError> {
    due_holds_select(now, limit)
        .into_tuple()
        .all(conn)
        .await
        .map_err(db_error)
}

/// Due holds, soonest first: a walk of the partial index `idx_points_holds_expiring` (held
/// holds only) that stops at the first one not due, never a scan of the holds' history.
fn due_holds_select(now: UnixMicros, limit: u64) -> Select<hold::Entity> {
    hold::Entity::find()
        .select_only()
        .column(hold::Column::TenantId)
        .column(hold::Column::MemberId)
        .column(hold::Column::Id)
        .filter(Expr::col(hold::Column::Status).eq(constant(HoldStatus::Held.code())))
        .filter(Expr::col(hold::Column::ExpiresAt).lte(constant(now.0)))
        .order_by_asc(hold::Column::ExpiresAt)
        .limit(limit)
}

/// The reads of the points sweepers at `now` and a page of `account`'s ledger, by name, as
/// `backend` runs them: for tests of their plans.
pub fn sweeper_reads(
    backend: DbBackend,
    now: UnixMicros,
    limit: u64,
    account: Uuid,
) -> Vec<(&'static str, Statement)> {
    vec![
        ("points lots due", due_lots(now, limit).build(backend)),
        (
            "points holds due",
            due_holds_select(now, limit).build(backend),
        ),
        // Its plan does not depend on the instant: finished before `now`.
        (
            "points holds past retention",
            crate::db::delete_batch_statement(backend, "points_holds", FINISHED_HOLDS, now, limit),
        ),
        (
            "ledger page",
            entries_page(account, &[], (None, None), None, limit).build(backend),
        ),
    ]
}

async fn members_of(
    conn: &impl ConnectionTrait,
    accounts: Vec<Uuid>,
) -> Result<Vec<(String, String)>, MarketingError> {
    if accounts.is_empty() {
        return Ok(Vec::new());
    }
    acct::Entity::find()
        .select_only()
        .column(acct::Column::TenantId)
        .column(acct::Column::MemberId)
        .filter(acct::Column::Id.is_in(accounts))
        .into_tuple()
        .all(conn)
        .await
        .map_err(db_error)
}

pub async fn insert_rule(
    conn: &impl ConnectionTrait,
    r: &PointsRule,
) -> Result<(), MarketingError> {
    let per_amount = PerAmountColumns::of(&r.terms);
    let row = rule::ActiveModel {
        id: Set(r.id),
        tenant_id: Set(r.tenant_id.as_str().to_owned()),
        event_type: Set(r.event_type.clone()),
        description: Set(r.terms.description.clone()),
        points: Set(r.terms.points),
        daily_cap: Set(r.terms.daily_cap),
        expiry_days: Set(r.terms.expiry_days),
        enabled: Set(r.terms.enabled),
        version: Set(r.version),
        created_at: Set(r.created_at.0),
        updated_at: Set(r.updated_at.0),
        actor: Set(r.actor.clone()),
        per_amount_currency: Set(per_amount.currency),
        per_amount: Set(per_amount.amount),
        multiplier_bp: Set(per_amount.multiplier_bp),
        rounding: Set(per_amount.rounding),
    };
    let inserted =
        crate::db::insert_if_absent(conn, row, [rule::Column::TenantId, rule::Column::EventType])
            .await?;
    if inserted {
        Ok(())
    } else {
        Err(MarketingError::Refused(Refusal::RuleExists))
    }
}

pub async fn find_rule(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    by: RuleRef<'_>,
) -> Result<Option<PointsRule>, MarketingError> {
    let query = rule::Entity::find().filter(rule::Column::TenantId.eq(tenant.as_str()));
    let query = match by {
        RuleRef::Id(id) => query.filter(rule::Column::Id.eq(id)),
        RuleRef::Event(event) => query.filter(rule::Column::EventType.eq(event)),
    };
    query
        .one(conn)
        .await
        .map_err(db_error)?
        .map(rule_to_domain)
        .transpose()
}

#[derive(Debug, Clone, Copy)]
pub enum RuleRef<'a> {
    Id(Uuid),
    Event(&'a str),
}

/// Replaces a rule's terms if its version is `expected_version`, as changed by `actor`;
/// returns it as written.
pub async fn update_rule(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: Uuid,
    expected_version: i64,
    terms: &RuleTerms,
    now: UnixMicros,
    actor: Option<&str>,
) -> Result<Option<PointsRule>, MarketingError> {
    let per_amount = PerAmountColumns::of(terms);
    rule::Entity::update_many()
        .col_expr(
            rule::Column::Description,
            Expr::value(terms.description.clone()),
        )
        .col_expr(
            rule::Column::PerAmountCurrency,
            Expr::value(per_amount.currency),
        )
        .col_expr(rule::Column::PerAmount, Expr::value(per_amount.amount))
        .col_expr(
            rule::Column::MultiplierBp,
            Expr::value(per_amount.multiplier_bp),
        )
        .col_expr(rule::Column::Rounding, Expr::value(per_amount.rounding))
        .col_expr(rule::Column::Points, Expr::value(terms.points))
        .col_expr(rule::Column::DailyCap, Expr::value(terms.daily_cap))
        .col_expr(rule::Column::ExpiryDays, Expr::value(terms.expiry_days))
        .col_expr(rule::Column::Enabled, Expr::value(terms.enabled))
        .col_expr(rule::Column::Version, Expr::value(expected_version + 1))
        .col_expr(rule::Column::UpdatedAt, Expr::value(now.0))
        .col_expr(rule::Column::Actor, Expr::value(actor))
        .filter(rule::Column::Id.eq(id))
        .filter(rule::Column::TenantId.eq(tenant.as_str()))
        .filter(rule::Column::Version.eq(expected_version))
        .exec_with_returning(conn)
        .await
        .map_err(db_error)?
        .pop()
        .map(rule_to_domain)
        .transpose()
}

pub async fn list_rules(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    enabled: Option<bool>,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<PointsRule>, MarketingError> {
    let mut query = rule::Entity::find().filter(rule::Column::TenantId.eq(tenant.as_str()));
    if let Some(enabled) = enabled {
        query = query.filter(rule::Column::Enabled.eq(enabled));
    }
    if let Some(after) = after {
        query = query.filter(rule::Column::Id.gt(after));
    }
    query
        .order_by_asc(rule::Column::Id)
        .limit(limit)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(rule_to_domain)
        .collect()
}

pub(crate) fn account_to_domain(row: acct::Model) -> Result<Account, MarketingError> {
    Ok(Account {
        id: row.id,
        tenant_id: TenantId::parse("tenant_id", &row.tenant_id)
            .map_err(|_| corrupt("account", row.id))?,
        member_id: MemberId::parse("member_id", &row.member_id)
            .map_err(|_| corrupt("account", row.id))?,
        available: row.available,
        frozen: row.frozen,
        total_earned: row.total_earned,
        total_spent: row.total_spent,
        total_expired: row.total_expired,
        total_refunded: row.total_refunded,
        version: row.version,
        earned_updated_at: UnixMicros(row.earned_updated_at),
        created_at: UnixMicros(row.created_at),
        updated_at: UnixMicros(row.updated_at),
    })
}

pub(crate) fn lot_to_domain(row: lot::Model) -> Lot {
    Lot {
        id: row.id,
        earn_transaction_id: row.earn_transaction_id,
        amount: row.amount,
        remaining: row.remaining,
        frozen: row.frozen,
        expires_at: row.expires_at.map(UnixMicros),
        created_at: UnixMicros(row.created_at),
    }
}

fn hold_to_domain(row: hold::Model) -> Result<Hold, MarketingError> {
    Ok(Hold {
        id: row.id,
        account_id: row.account_id,
        status: HoldStatus::from_code(row.status).ok_or_else(|| corrupt("hold", row.id))?,
        order_id: row.order_id,
        amount: row.amount,
        confirmed_amount: row.confirmed_amount,
        expires_at: UnixMicros(row.expires_at),
        created_at: UnixMicros(row.created_at),
        updated_at: UnixMicros(row.updated_at),
    })
}

/// A rule by amount's columns (all NULL for a rule of fixed points).
struct PerAmountColumns {
    currency: Option<String>,
    amount: Option<i64>,
    multiplier_bp: Option<i32>,
    rounding: Option<i16>,
}

impl PerAmountColumns {
    fn of(terms: &RuleTerms) -> Self {
        let per = terms.per_amount.as_ref();
        Self {
            currency: per.map(|p| p.currency.as_str().to_owned()),
            amount: per.map(|p| p.amount),
            multiplier_bp: per.map(|p| p.multiplier_bp),
            rounding: per.map(|p| p.rounding.code()),
        }
    }
}

fn rule_to_domain(row: rule::Model) -> Result<PointsRule, MarketingError> {
    let per_amount = match (
        &row.per_amount_currency,
        row.per_amount,
        row.multiplier_bp,
        row.rounding,
    ) {
        (None, None, None, None) => None,
        (Some(currency), Some(amount), Some(multiplier_bp), Some(rounding)) => Some(PerAmount {
            currency: Currency::parse("currency", currency).map_err(|_| corrupt("rule", row.id))?,
            amount,
            multiplier_bp,
            rounding: Rounding::from_code(rounding).ok_or_else(|| corrupt("rule", row.id))?,
        }),
        _ => return Err(corrupt("rule", row.id)),
    };
    Ok(PointsRule {
        id: row.id,
        tenant_id: TenantId::parse("tenant_id", &row.tenant_id)
            .map_err(|_| corrupt("rule", row.id))?,
        event_type: row.event_type,
        terms: RuleTerms {
            description: row.description,
            points: row.points,
            daily_cap: row.daily_cap,
            expiry_days: row.expiry_days,
            enabled: row.enabled,
            per_amount,
        },
        version: row.version,
        created_at: UnixMicros(row.created_at),
        updated_at: UnixMicros(row.updated_at),
        actor: row.actor,
    })
}

/// What the finished-holds retention deletes: holds confirmed, released or expired before
/// `$1` (the partial index `idx_points_holds_finished` holds exactly these).
pub const FINISHED_HOLDS: &str = "status <> 1 AND updated_at < $1";

/// Deletes up to `limit` holds that finished (confirmed, released or expired) before
/// `before`: they only answered retries of their confirm or release, which the idempotency
/// records' retention ends too. Held holds are never deleted. How many were deleted.
pub async fn delete_finished_holds(
    conn: &impl ConnectionTrait,
    before: UnixMicros,
    limit: u64,
) -> Result<u64, MarketingError> {
    crate::db::delete_batch(conn, "points_holds", FINISHED_HOLDS, before, limit).await
}
