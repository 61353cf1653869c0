//! PostgreSQL's short path for a batch of points commands: all of its reads in one statement
//! and all of its writes in another, without an explicit transaction.
//!
//! On this machine a round trip to PostgreSQL under load costs ~0.2 ms, and the transactional
//! path (`points` + `idempotency`) makes eleven per batch: ping, BEGIN, three reads, two
//! updates, three inserts, COMMIT. Here a batch makes two. It stays exact because of how
//! the writes are checked, not because of a transaction around the reads:
//! - The read runs in autocommit: records, accounts and their lots from one snapshot.
//! - The write is one statement, hence atomic: every account is updated only where its
//!   version is still the one read, and the statement ends in `points_batch_written`
//!   (migration `m20261202_000004`), which fails it, nothing written, when one was not. Every
//!   lot, hold and daily count of an account changes only together with the account's version,
//!   so an account still at the version read also has the lots, holds and counts read with it.
//! - Business references and request ids are unique in the schema: a concurrent writer that
//!   took one makes the statement fail with a unique violation.
//!
//! A failed write is `ConcurrentModification`; the caller serves the batch again on the
//! transactional path, which re-plans lost accounts one by one.
//!
//! Arrays (`unnest`) instead of `VALUES` lists keep each statement's text the same for every
//! batch size, so each connection prepares it once and PostgreSQL plans it once.

use std::collections::{HashMap, HashSet};

use marketing_domain::{
    MarketingError, MemberId, TenantId, UnixMicros,
    points::{Account, Ledger, Lot},
};
use sea_orm::sqlx::{self, PgPool, Row, postgres::PgRow};
use uuid::Uuid;

use crate::{
    db::db_error,
    entity::{points_account as acct, points_lot as lot},
    idempotency::{IdempotencyKey, Outcome, Record},
    points::{self, BizRef},
};

fn sqlx_error(err: sqlx::Error) -> MarketingError {
    db_error(sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(
        err.into(),
    )))
}

/// What a batch reads before it plans: the committed records of its request ids, its
/// members' accounts that exist, each with its live lots, and which of its business
/// references are taken.
pub struct BatchReads {
    /// By (tenant, request id).
    pub records: HashMap<(String, String), Record>,
    pub ledgers: Vec<(Account, Vec<Lot>)>,
    pub taken: HashSet<BizRef>,
}

/// What a batch reads by: its requests (tenant, request id), its members, and the business
/// references its earns and deductions would take.
#[derive(Default)]
pub struct BatchKeys<'a> {
    pub requests: Vec<(&'a TenantId, &'a str)>,
    pub members: Vec<(&'a TenantId, &'a MemberId)>,
    pub biz: Vec<&'a BizRef>,
}

/// The batch's one read. Records (`kind = 0`), accounts joined with their live lots (`kind =
/// 1`) and entries holding a business reference (`kind = 2`) share the columns `tenant_id` and
/// `key` (request id, member id or business id); each kind leaves the others' columns NULL.
/// The tenants and keys are bound as arrays, so any number of them is one index scan of each
/// table; a tenant paired with another tenant's key is dropped by [`read_batch`]. References
/// are looked up one by one from their own rows (`unnest`): four `= ANY` columns made the
/// generic plan guess thousands of index probes and scan the table instead. Their conditions
/// `biz_id IS NOT NULL AND tx_type IN (1, 2)` are the unique index's own, written out so that
/// the plan can use it.
const READ: &str = "\
SELECT 0 AS kind, tenant_id, request_id AS key, operation, fingerprint, status_code, response,
  NULL::uuid, NULL::int8, NULL::int8, NULL::int8, NULL::int8, NULL::int8, NULL::int8,
  NULL::int8, NULL::int8, NULL::int8, NULL::int8,
  NULL::uuid, NULL::uuid, NULL::int8, NULL::int8, NULL::int8, NULL::int8, NULL::int8
FROM idempotency_records
WHERE tenant_id = ANY($1) AND request_id = ANY($2) AND status_code <> -1
UNION ALL
SELECT 1, a.tenant_id, a.member_id, NULL, NULL, NULL, NULL,
  a.id, a.available, a.frozen, a.total_earned, a.total_spent, a.total_expired,
  a.total_refunded, a.version, a.earned_updated_at, a.created_at, a.updated_at,
  l.id, l.earn_transaction_id, l.amount, l.remaining, l.frozen, l.expires_at, l.created_at
FROM points_accounts a LEFT JOIN points_lots l ON l.account_id = a.id AND l.live
WHERE a.tenant_id = ANY($3) AND a.member_id = ANY($4)
UNION ALL
SELECT 2, t.tenant_id, t.biz_id, t.biz_type, NULL, t.tx_type::int4, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM unnest($5::text[], $6::int2[], $7::text[], $8::text[])
  AS k(tenant_id, tx_type, biz_type, biz_id)
JOIN points_transactions t ON t.tenant_id = k.tenant_id AND t.tx_type = k.tx_type
  AND t.biz_type = k.biz_type AND t.biz_id = k.biz_id
WHERE t.biz_id IS NOT NULL AND t.tx_type IN (1, 2)";

/// Reads, in one statement, the records, ledgers and taken business references of `keys`:
/// accounts and lots from one snapshot.
pub async fn read_batch(pool: &PgPool, keys: &BatchKeys<'_>) -> Result<BatchReads, MarketingError> {
    let BatchKeys {
        requests,
        members,
        biz,
    } = keys;
    let wanted_records: HashSet<(&str, &str)> =
        requests.iter().map(|(t, r)| (t.as_str(), *r)).collect();
    let wanted_members: HashSet<(&str, &str)> = members
        .iter()
        .map(|(t, m)| (t.as_str(), m.as_str()))
        .collect();
    let wanted_biz: HashSet<&BizRef> = biz.iter().copied().collect();
    let rows = sqlx::query(READ)
        .bind(distinct(requests.iter().map(|(t, _)| t.as_str())))
        .bind(distinct(requests.iter().map(|(_, r)| *r)))
        .bind(distinct(members.iter().map(|(t, _)| t.as_str())))
        .bind(distinct(members.iter().map(|(_, m)| m.as_str())))
        .bind(biz.iter().map(|r| r.tenant.as_str()).collect::<Vec<_>>())
        .bind(biz.iter().map(|r| r.tx_type).collect::<Vec<_>>())
        .bind(biz.iter().map(|r| r.biz_type.as_str()).collect::<Vec<_>>())
        .bind(biz.iter().map(|r| r.biz_id.as_str()).collect::<Vec<_>>())
        .fetch_all(pool)
        .await
        .map_err(sqlx_error)?;
    let mut reads = BatchReads {
        records: HashMap::new(),
        ledgers: Vec::new(),
        taken: HashSet::new(),
    };
    let mut position: HashMap<Uuid, usize> = HashMap::new();
    for row in &rows {
        let kind: i32 = row.try_get(0).map_err(sqlx_error)?;
        let tenant: String = row.try_get(1).map_err(sqlx_error)?;
        let key: String = row.try_get(2).map_err(sqlx_error)?;
        if kind == 0 {
            if wanted_records.contains(&(tenant.as_str(), key.as_str())) {
                let record = Record {
                    operation: row.try_get(3).map_err(sqlx_error)?,
                    fingerprint: row.try_get(4).map_err(sqlx_error)?,
                    outcome: Outcome {
                        status_code: row.try_get(5).map_err(sqlx_error)?,
                        response: row.try_get(6).map_err(sqlx_error)?,
                    },
                };
                reads.records.insert((tenant, key), record);
            }
            continue;
        }
        if kind == 2 {
            let tx_type: i32 = row.try_get(5).map_err(sqlx_error)?;
            let taken = BizRef {
                tx_type: i16::try_from(tx_type)
                    .map_err(|_| points::corrupt("entry type", tx_type))?,
                tenant,
                biz_type: row.try_get(3).map_err(sqlx_error)?,
                biz_id: key,
            };
            if wanted_biz.contains(&taken) {
                reads.taken.insert(taken);
            }
            continue;
        }
        if !wanted_members.contains(&(tenant.as_str(), key.as_str())) {
            continue;
        }
        let id: Uuid = row.try_get(7).map_err(sqlx_error)?;
        let at = match position.get(&id) {
            Some(&at) => at,
            None => {
                position.insert(id, reads.ledgers.len());
                reads
                    .ledgers
                    .push((account_of(row, id, tenant, key)?, Vec::new()));
                reads.ledgers.len() - 1
            }
        };
        let (account, lots) = &mut reads.ledgers[at];
        if let Some(lot) = lot_of(row, account)? {
            lots.push(lot);
        }
    }
    Ok(reads)
}

fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    values.filter(|value| seen.insert(*value)).collect()
}

/// The account of a kind-1 row, decoded as the transactional path decodes its rows.
fn account_of(
    row: &PgRow,
    id: Uuid,
    tenant: String,
    member: String,
) -> Result<Account, MarketingError> {
    let number =
        |index: usize| -> Result<i64, MarketingError> { row.try_get(index).map_err(sqlx_error) };
    points::account_to_domain(acct::Model {
        id,
        tenant_id: tenant,
        member_id: member,
        available: number(8)?,
        frozen: number(9)?,
        total_earned: number(10)?,
        total_spent: number(11)?,
        total_expired: number(12)?,
        total_refunded: number(13)?,
        version: number(14)?,
        earned_updated_at: number(15)?,
        created_at: number(16)?,
        updated_at: number(17)?,
    })
}

/// The lot of an account's row, `None` for an account without live lots.
fn lot_of(row: &PgRow, account: &Account) -> Result<Option<Lot>, MarketingError> {
    let Some(id) = row.try_get::<Option<Uuid>, _>(18).map_err(sqlx_error)? else {
        return Ok(None);
    };
    let number =
        |index: usize| -> Result<i64, MarketingError> { row.try_get(index).map_err(sqlx_error) };
    Ok(Some(points::lot_to_domain(lot::Model {
        id,
        tenant_id: account.tenant_id.to_string(),
        account_id: account.id,
        earn_transaction_id: row.try_get(19).map_err(sqlx_error)?,
        amount: number(20)?,
        remaining: number(21)?,
        frozen: number(22)?,
        expires_at: row.try_get(23).map_err(sqlx_error)?,
        created_at: number(24)?,
    })))
}

/// Everything a batch writes, column by column, for [`BatchWrite::execute`].
#[derive(Default)]
pub struct BatchWrite {
    accounts: AccountColumns,
    changed_lots: ChangedLotColumns,
    new_lots: LotColumns,
    entries: EntryColumns,
    allocations: AllocationColumns,
    holds: HoldColumns,
    daily: HashMap<(String, String, String, i32), i64>,
    records: RecordColumns,
}

#[derive(Default)]
struct AccountColumns {
    id: Vec<Uuid>,
    read_version: Vec<i64>,
    available: Vec<i64>,
    frozen: Vec<i64>,
    total_earned: Vec<i64>,
    total_spent: Vec<i64>,
    total_expired: Vec<i64>,
    total_refunded: Vec<i64>,
    earned_updated_at: Vec<i64>,
    updated_at: Vec<i64>,
}

#[derive(Default)]
struct ChangedLotColumns {
    id: Vec<Uuid>,
    remaining: Vec<i64>,
    frozen: Vec<i64>,
}

#[derive(Default)]
struct DailyColumns {
    tenant_id: Vec<String>,
    member_id: Vec<String>,
    event_type: Vec<String>,
    day: Vec<i32>,
    earned: Vec<i64>,
}

#[derive(Default)]
struct LotColumns {
    id: Vec<Uuid>,
    tenant_id: Vec<String>,
    account_id: Vec<Uuid>,
    earn_transaction_id: Vec<Uuid>,
    amount: Vec<i64>,
    remaining: Vec<i64>,
    frozen: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    created_at: Vec<i64>,
}

#[derive(Default)]
struct EntryColumns {
    id: Vec<Uuid>,
    tenant_id: Vec<String>,
    account_id: Vec<Uuid>,
    member_id: Vec<String>,
    tx_type: Vec<i16>,
    amount: Vec<i64>,
    frozen_amount: Vec<i64>,
    available_after: Vec<i64>,
    frozen_after: Vec<i64>,
    biz_type: Vec<Option<String>>,
    biz_id: Vec<Option<String>>,
    request_id: Vec<Option<String>>,
    hold_id: Vec<Option<Uuid>>,
    related_transaction_id: Vec<Option<Uuid>>,
    description: Vec<String>,
    expires_at: Vec<Option<i64>>,
    account_version: Vec<i64>,
    position: Vec<i32>,
    created_at: Vec<i64>,
}

#[derive(Default)]
struct AllocationColumns {
    id: Vec<Uuid>,
    tenant_id: Vec<String>,
    lot_id: Vec<Uuid>,
    transaction_id: Vec<Option<Uuid>>,
    hold_id: Vec<Option<Uuid>>,
    amount: Vec<i64>,
}

#[derive(Default)]
struct HoldColumns {
    /// Where each hold is in the columns: a hold changed twice in one batch is written once,
    /// as last changed (one statement cannot upsert a row twice).
    at: HashMap<Uuid, usize>,
    id: Vec<Uuid>,
    tenant_id: Vec<String>,
    account_id: Vec<Uuid>,
    member_id: Vec<String>,
    order_id: Vec<String>,
    status: Vec<i16>,
    amount: Vec<i64>,
    confirmed_amount: Vec<i64>,
    expires_at: Vec<i64>,
    created_at: Vec<i64>,
    updated_at: Vec<i64>,
}

#[derive(Default)]
struct RecordColumns {
    tenant_id: Vec<String>,
    request_id: Vec<String>,
    operation: Vec<String>,
    fingerprint: Vec<Vec<u8>>,
    status_code: Vec<i32>,
    response: Vec<Vec<u8>>,
    created_at: Vec<i64>,
}

/// The batch's one write. Each `v_*` is a table's rows as parallel arrays; `points_batch_written`
/// fails the statement unless every account still had its version and every changed lot was
/// found. The `= ANY` conditions give the generic plan an index condition on the updated
/// tables whatever their size (without them a plan made on a small table scans it).
const WRITE: &str = "\
WITH v_acc AS (
  SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[],
    $7::int8[], $8::int8[], $9::int8[], $10::int8[])
    AS v(key, read_version, available, frozen, total_earned, total_spent, total_expired,
      total_refunded, earned_updated_at, updated_at)
), acc AS (
  UPDATE points_accounts a SET available = v.available, frozen = v.frozen,
    total_earned = v.total_earned, total_spent = v.total_spent,
    total_expired = v.total_expired, total_refunded = v.total_refunded,
    earned_updated_at = v.earned_updated_at, version = v.read_version + 1,
    updated_at = v.updated_at
  FROM v_acc v
  WHERE a.id = ANY($1::uuid[]) AND a.id = v.key AND a.version = v.read_version
  RETURNING a.id
), lot_upd AS (
  UPDATE points_lots l SET remaining = v.remaining, frozen = v.frozen
  FROM unnest($11::uuid[], $12::int8[], $13::int8[]) AS v(key, remaining, frozen)
  WHERE l.id = ANY($11::uuid[]) AND l.id = v.key
  RETURNING l.id
), lot_ins AS (
  INSERT INTO points_lots (id, tenant_id, account_id, earn_transaction_id, amount, remaining,
    frozen, expires_at, created_at)
  SELECT * FROM unnest($14::uuid[], $15::text[], $16::uuid[], $17::uuid[], $18::int8[],
    $19::int8[], $20::int8[], $21::int8[], $22::int8[])
), ent AS (
  INSERT INTO points_transactions (id, tenant_id, account_id, member_id, tx_type, amount,
    frozen_amount, available_after, frozen_after, biz_type, biz_id, request_id, hold_id,
    related_transaction_id, description, expires_at, account_version, position, created_at)
  SELECT * FROM unnest($23::uuid[], $24::text[], $25::uuid[], $26::text[], $27::int2[],
    $28::int8[], $29::int8[], $30::int8[], $31::int8[], $32::text[], $33::text[], $34::text[],
    $35::uuid[], $36::uuid[], $37::text[], $38::int8[], $39::int8[], $40::int4[], $41::int8[])
), alloc AS (
  INSERT INTO points_allocations (id, tenant_id, lot_id, transaction_id, hold_id, amount)
  SELECT * FROM unnest($42::uuid[], $43::text[], $44::uuid[], $45::uuid[], $46::uuid[],
    $47::int8[])
), hold AS (
  INSERT INTO points_holds (id, tenant_id, account_id, member_id, order_id, status, amount,
    confirmed_amount, expires_at, created_at, updated_at)
  SELECT * FROM unnest($48::uuid[], $49::text[], $50::uuid[], $51::text[], $52::text[],
    $53::int2[], $54::int8[], $55::int8[], $56::int8[], $57::int8[], $58::int8[])
  ON CONFLICT (id) DO UPDATE SET status = excluded.status,
    confirmed_amount = excluded.confirmed_amount, updated_at = excluded.updated_at
), daily AS (
  INSERT INTO points_daily_earnings (tenant_id, member_id, event_type, day, earned)
  SELECT * FROM unnest($59::text[], $60::text[], $61::text[], $62::int4[], $63::int8[])
  ON CONFLICT (tenant_id, member_id, event_type, day)
    DO UPDATE SET earned = points_daily_earnings.earned + excluded.earned
), rec AS (
  INSERT INTO idempotency_records (tenant_id, request_id, operation, fingerprint, status_code,
    response, created_at)
  SELECT * FROM unnest($64::text[], $65::text[], $66::text[], $67::bytea[], $68::int4[],
    $69::bytea[], $70::int8[])
)
SELECT points_batch_written((SELECT count(*) FROM acc), cardinality($1::uuid[]),
  (SELECT count(*) FROM lot_upd), cardinality($11::uuid[]))";

impl BatchWrite {
    /// Adds a planned ledger: its account (checked against the version read), its changed
    /// and new lots, entries, allocations and holds.
    pub fn add_ledger(&mut self, ledger: &Ledger) {
        let a = &ledger.account;
        let tenant = a.tenant_id.as_str();
        let accounts = &mut self.accounts;
        accounts.id.push(a.id);
        accounts.read_version.push(ledger.read_version);
        accounts.available.push(a.available);
        accounts.frozen.push(a.frozen);
        accounts.total_earned.push(a.total_earned);
        accounts.total_spent.push(a.total_spent);
        accounts.total_expired.push(a.total_expired);
        accounts.total_refunded.push(a.total_refunded);
        accounts.earned_updated_at.push(a.earned_updated_at.0);
        accounts.updated_at.push(ledger.now().0);
        for lot in ledger.changed_lots() {
            self.changed_lots.id.push(lot.id);
            self.changed_lots.remaining.push(lot.remaining);
            self.changed_lots.frozen.push(lot.frozen);
        }
        let lots = &mut self.new_lots;
        for l in &ledger.new_lots {
            lots.id.push(l.id);
            lots.tenant_id.push(tenant.to_owned());
            lots.account_id.push(a.id);
            lots.earn_transaction_id.push(l.earn_transaction_id);
            lots.amount.push(l.amount);
            lots.remaining.push(l.remaining);
            lots.frozen.push(l.frozen);
            lots.expires_at.push(l.expires_at.map(|t| t.0));
            lots.created_at.push(l.created_at.0);
        }
        let entries = &mut self.entries;
        for e in &ledger.entries {
            entries.id.push(e.id);
            entries.tenant_id.push(tenant.to_owned());
            entries.account_id.push(a.id);
            entries.member_id.push(a.member_id.as_str().to_owned());
            entries.tx_type.push(e.tx_type.code());
            entries.amount.push(e.amount);
            entries.frozen_amount.push(e.frozen_amount);
            entries.available_after.push(e.available_after);
            entries.frozen_after.push(e.frozen_after);
            entries.biz_type.push(e.meta.biz_type.clone());
            entries.biz_id.push(e.meta.biz_id.clone());
            entries.request_id.push(e.meta.request_id.clone());
            entries.hold_id.push(e.hold_id);
            entries
                .related_transaction_id
                .push(e.related_transaction_id);
            entries.description.push(e.meta.description.clone());
            entries.expires_at.push(e.expires_at.map(|t| t.0));
            entries.account_version.push(e.account_version);
            entries.position.push(e.position);
            entries.created_at.push(e.created_at.0);
        }
        let allocations = &mut self.allocations;
        for al in &ledger.allocations {
            allocations.id.push(Uuid::now_v7());
            allocations.tenant_id.push(tenant.to_owned());
            allocations.lot_id.push(al.lot_id);
            allocations.transaction_id.push(al.transaction_id);
            allocations.hold_id.push(al.hold_id);
            allocations.amount.push(al.amount);
        }
        let holds = &mut self.holds;
        for h in &ledger.holds {
            if let Some(&at) = holds.at.get(&h.id) {
                holds.status[at] = h.status.code();
                holds.confirmed_amount[at] = h.confirmed_amount;
                holds.updated_at[at] = h.updated_at.0;
                continue;
            }
            holds.at.insert(h.id, holds.id.len());
            holds.id.push(h.id);
            holds.tenant_id.push(tenant.to_owned());
            holds.account_id.push(a.id);
            holds.member_id.push(a.member_id.as_str().to_owned());
            holds.order_id.push(h.order_id.clone());
            holds.status.push(h.status.code());
            holds.amount.push(h.amount);
            holds.confirmed_amount.push(h.confirmed_amount);
            holds.expires_at.push(h.expires_at.0);
            holds.created_at.push(h.created_at.0);
            holds.updated_at.push(h.updated_at.0);
        }
    }

    /// Adds points awarded today under a daily cap (added to what is stored).
    pub fn add_daily(
        &mut self,
        tenant: &TenantId,
        member: &MemberId,
        event_type: &str,
        day: i32,
        points: i64,
    ) {
        let key = (
            tenant.as_str().to_owned(),
            member.as_str().to_owned(),
            event_type.to_owned(),
            day,
        );
        *self.daily.entry(key).or_default() += points;
    }

    /// Adds the outcome a request's retries replay.
    pub fn add_record(&mut self, key: &IdempotencyKey, outcome: Outcome, now: UnixMicros) {
        let records = &mut self.records;
        records.tenant_id.push(key.tenant_id.as_str().to_owned());
        records.request_id.push(key.request_id.as_str().to_owned());
        records.operation.push(key.operation.to_owned());
        records.fingerprint.push(key.fingerprint.clone());
        records.status_code.push(outcome.status_code);
        records.response.push(outcome.response);
        records.created_at.push(now.0);
    }

    /// Writes everything in one statement, or nothing: `ConcurrentModification` when an
    /// account was changed since it was read, or a request id or business reference was
    /// taken meanwhile.
    pub async fn execute(self, pool: &PgPool) -> Result<(), MarketingError> {
        let Self {
            accounts: a,
            changed_lots: c,
            new_lots: l,
            entries: e,
            allocations: al,
            holds: h,
            daily,
            records: r,
        } = self;
        let mut d = DailyColumns::default();
        for ((tenant, member, event, day), earned) in daily {
            d.tenant_id.push(tenant);
            d.member_id.push(member);
            d.event_type.push(event);
            d.day.push(day);
            d.earned.push(earned);
        }
        sqlx::query(WRITE)
            .bind(a.id)
            .bind(a.read_version)
            .bind(a.available)
            .bind(a.frozen)
            .bind(a.total_earned)
            .bind(a.total_spent)
            .bind(a.total_expired)
            .bind(a.total_refunded)
            .bind(a.earned_updated_at)
            .bind(a.updated_at)
            .bind(c.id)
            .bind(c.remaining)
            .bind(c.frozen)
            .bind(l.id)
            .bind(l.tenant_id)
            .bind(l.account_id)
            .bind(l.earn_transaction_id)
            .bind(l.amount)
            .bind(l.remaining)
            .bind(l.frozen)
            .bind(l.expires_at)
            .bind(l.created_at)
            .bind(e.id)
            .bind(e.tenant_id)
            .bind(e.account_id)
            .bind(e.member_id)
            .bind(e.tx_type)
            .bind(e.amount)
            .bind(e.frozen_amount)
            .bind(e.available_after)
            .bind(e.frozen_after)
            .bind(e.biz_type)
            .bind(e.biz_id)
            .bind(e.request_id)
            .bind(e.hold_id)
            .bind(e.related_transaction_id)
            .bind(e.description)
            .bind(e.expires_at)
            .bind(e.account_version)
            .bind(e.position)
            .bind(e.created_at)
            .bind(al.id)
            .bind(al.tenant_id)
            .bind(al.lot_id)
            .bind(al.transaction_id)
            .bind(al.hold_id)
            .bind(al.amount)
            .bind(h.id)
            .bind(h.tenant_id)
            .bind(h.account_id)
            .bind(h.member_id)
            .bind(h.order_id)
            .bind(h.status)
            .bind(h.amount)
            .bind(h.confirmed_amount)
            .bind(h.expires_at)
            .bind(h.created_at)
            .bind(h.updated_at)
            .bind(d.tenant_id)
            .bind(d.member_id)
            .bind(d.event_type)
            .bind(d.day)
            .bind(d.earned)
            .bind(r.tenant_id)
            .bind(r.request_id)
            .bind(r.operation)
            .bind(r.fingerprint)
            .bind(r.status_code)
            .bind(r.response)
            .bind(r.created_at)
            .execute(pool)
            .await
            .map_err(sqlx_error)?;
        Ok(())
    }
}
