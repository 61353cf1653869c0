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

use super::rows::{self, LedgerWrite};
use crate::{
    db::{DbFailure, classify, db_error},
    entity::{
        idempotency_record as record, points_account as acct, points_allocation as alloc,
        points_daily_earning as daily, points_hold as hold, points_lot as lot,
        points_transaction as tx,
    },
    idempotency::{self, IdempotencyKey, Outcome, Record, RecordKey},
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
    /// By the requests' [`RecordKey`]s: a client's own record, else one that matches any
    /// client.
    pub records: HashMap<RecordKey, Record>,
    pub ledgers: Vec<(Account, Vec<Lot>)>,
    pub taken: HashSet<BizRef>,
}

/// What a batch reads by: its requests (tenant, client, request id), its members, and the
/// business references its earns and deductions would take.
#[derive(Default)]
pub struct BatchKeys<'a> {
    pub requests: Vec<(&'a TenantId, &'a str, &'a str)>,
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
const READ: &str = include_str!("read.sql");

/// Reads, in one statement, the records, ledgers and taken business references of `keys`:
/// accounts and lots from one snapshot.
pub async fn read_batch(pool: &PgPool, keys: &BatchKeys<'_>) -> Result<BatchReads, MarketingError> {
    let BatchKeys {
        requests,
        members,
        biz,
    } = keys;
    // The clients that asked for each (tenant, request id).
    let mut wanted_records: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for (tenant, client, request_id) in requests {
        wanted_records
            .entry((tenant.as_str(), *request_id))
            .or_default()
            .push(*client);
    }
    let wanted_members: HashSet<(&str, &str)> = members
        .iter()
        .map(|(t, m)| (t.as_str(), m.as_str()))
        .collect();
    let wanted_biz: HashSet<&BizRef> = biz.iter().copied().collect();
    let rows = sqlx::query(READ)
        .bind(distinct(requests.iter().map(|(t, _, _)| t.as_str())))
        .bind(distinct(requests.iter().map(|(_, _, r)| *r)))
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
        let kind: i32 = row.try_get("kind").map_err(sqlx_error)?;
        let tenant: String = row.try_get("tenant_id").map_err(sqlx_error)?;
        let key: String = row.try_get("key").map_err(sqlx_error)?;
        if kind == 0 {
            // Every client's record of the request ids is read (the primary key's prefix, as
            // before request ids were per client); a tenant or client paired with another's
            // request id is dropped here.
            if let Some(clients) = wanted_records.get(&(tenant.as_str(), key.as_str())) {
                let client: String = row.try_get("client").map_err(sqlx_error)?;
                let record = Record {
                    operation: row.try_get("operation").map_err(sqlx_error)?,
                    fingerprint: row.try_get("fingerprint").map_err(sqlx_error)?,
                    outcome: Outcome {
                        status_code: row.try_get("status_code").map_err(sqlx_error)?,
                        response: row.try_get("response").map_err(sqlx_error)?,
                    },
                };
                if client == idempotency::ANY_CLIENT {
                    for asking in clients {
                        reads
                            .records
                            .entry((tenant.clone(), (*asking).to_owned(), key.clone()))
                            .or_insert_with(|| record.clone());
                    }
                } else if clients.contains(&client.as_str()) {
                    reads.records.insert((tenant, client, key), record);
                }
            }
            continue;
        }
        if kind == 2 {
            // A reference's entry type and business type, in the records' columns.
            let tx_type: i32 = row.try_get("status_code").map_err(sqlx_error)?;
            let taken = BizRef {
                tx_type: i16::try_from(tx_type)
                    .map_err(|_| points::corrupt("entry type", tx_type))?,
                tenant,
                biz_type: row.try_get("operation").map_err(sqlx_error)?,
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
        let id: Uuid = row.try_get("account_id").map_err(sqlx_error)?;
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
        |name: &str| -> Result<i64, MarketingError> { row.try_get(name).map_err(sqlx_error) };
    points::account_to_domain(acct::Model {
        id,
        tenant_id: tenant,
        member_id: member,
        available: number("available")?,
        frozen: number("frozen")?,
        total_earned: number("total_earned")?,
        total_spent: number("total_spent")?,
        total_expired: number("total_expired")?,
        total_refunded: number("total_refunded")?,
        version: number("version")?,
        earned_updated_at: number("earned_updated_at")?,
        created_at: number("created_at")?,
        updated_at: number("updated_at")?,
    })
}

/// The lot of an account's row, `None` for an account without live lots.
fn lot_of(row: &PgRow, account: &Account) -> Result<Option<Lot>, MarketingError> {
    let Some(id) = row
        .try_get::<Option<Uuid>, _>("lot_id")
        .map_err(sqlx_error)?
    else {
        return Ok(None);
    };
    let number =
        |name: &str| -> Result<i64, MarketingError> { row.try_get(name).map_err(sqlx_error) };
    Ok(Some(points::lot_to_domain(lot::Model {
        id,
        tenant_id: account.tenant_id.to_string(),
        account_id: account.id,
        earn_transaction_id: row.try_get("lot_earn_transaction_id").map_err(sqlx_error)?,
        amount: number("lot_amount")?,
        remaining: number("lot_remaining")?,
        frozen: number("lot_frozen")?,
        expires_at: row.try_get("lot_expires_at").map_err(sqlx_error)?,
        created_at: number("lot_created_at")?,
    })))
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// A table's rows as one array per column, for `unnest`. `push` takes a row apart with an
/// exhaustive pattern, so a column added to the row type does not compile until it is
/// listed here; `bind` binds the arrays in the order listed, which is the order in which
/// `write.sql` names them: the tests below fail when its column lists, placeholders or casts
/// disagree with these lists, or these lists with the entities (and the statement's test in
/// `tests/e2e/points.rs` reads every column back).
macro_rules! columns {
    ($name:ident: $row:path { $($field:ident: $ty:ty),* $(,)? }) => {
        #[derive(Default)]
        struct $name {
            $($field: Vec<$ty>,)*
        }

        impl $name {
            fn push(&mut self, row: $row) {
                let $row { $($field),* } = row;
                $(self.$field.push($field);)*
            }

            fn bind<'q>(self, query: PgQuery<'q>) -> PgQuery<'q> {
                query$(.bind(self.$field))*
            }
        }

        #[cfg(test)]
        impl $name {
            /// The columns in bind order, with their Rust types: what `write.sql` must follow.
            const COLUMNS: &'static [(&'static str, &'static str)] =
                &[$((stringify!($field), stringify!($ty))),*];
        }
    };
}

columns!(AccountColumns: rows::AccountUpdate {
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
});

columns!(ChangedLotColumns: rows::LotUpdate {
    id: Uuid,
    remaining: i64,
    frozen: i64,
});

columns!(LotColumns: lot::Model {
    id: Uuid,
    tenant_id: String,
    account_id: Uuid,
    earn_transaction_id: Uuid,
    amount: i64,
    remaining: i64,
    frozen: i64,
    expires_at: Option<i64>,
    created_at: i64,
});

columns!(EntryColumns: tx::Model {
    id: Uuid,
    tenant_id: String,
    account_id: Uuid,
    member_id: String,
    tx_type: i16,
    amount: i64,
    frozen_amount: i64,
    available_after: i64,
    frozen_after: i64,
    biz_type: Option<String>,
    biz_id: Option<String>,
    request_id: Option<String>,
    hold_id: Option<Uuid>,
    related_transaction_id: Option<Uuid>,
    description: String,
    expires_at: Option<i64>,
    account_version: i64,
    position: i32,
    created_at: i64,
    actor: Option<String>,
});

columns!(AllocationColumns: alloc::Model {
    id: Uuid,
    tenant_id: String,
    lot_id: Uuid,
    transaction_id: Option<Uuid>,
    hold_id: Option<Uuid>,
    amount: i64,
});

columns!(HoldColumns: hold::Model {
    id: Uuid,
    tenant_id: String,
    account_id: Uuid,
    member_id: String,
    order_id: String,
    status: i16,
    amount: i64,
    confirmed_amount: i64,
    expires_at: i64,
    created_at: i64,
    updated_at: i64,
});

columns!(DailyColumns: daily::Model {
    tenant_id: String,
    member_id: String,
    event_type: String,
    day: i32,
    earned: i64,
});

columns!(RecordColumns: record::Model {
    tenant_id: String,
    request_id: String,
    operation: String,
    fingerprint: Vec<u8>,
    status_code: i32,
    response: Vec<u8>,
    created_at: i64,
    client: String,
});

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

/// The batch's one write (`write.sql`). Each `v_*` is a table's rows as parallel arrays;
/// `points_batch_written` fails the statement unless every account still had its version and
/// every changed lot was found. The `= ANY` conditions give the generic plan an index
/// condition on the updated tables whatever their size (without them a plan made on a small
/// table scans it).
const WRITE: &str = include_str!("write.sql");

impl BatchWrite {
    /// Adds a planned ledger: its account (checked against the version read), its changed
    /// and new lots, entries, allocations and holds.
    pub fn add_ledger(&mut self, ledger: &Ledger) {
        let rows = LedgerWrite::of(ledger);
        self.accounts.push(rows.account);
        for lot in rows.changed_lots {
            self.changed_lots.push(lot);
        }
        for lot in rows.new_lots {
            self.new_lots.push(lot);
        }
        for entry in rows.entries {
            self.entries.push(entry);
        }
        for allocation in rows.allocations {
            self.allocations.push(allocation);
        }
        for hold in rows.holds {
            self.holds.push(hold);
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
        self.records
            .push(idempotency::record_row(key, outcome, now));
    }

    /// Writes everything in one statement, or nothing: `ConcurrentModification` when an
    /// account was changed since it was read, or a request id or business reference was
    /// taken meanwhile.
    pub async fn execute(self, pool: &PgPool) -> Result<(), MarketingError> {
        let mut daily = DailyColumns::default();
        for ((tenant_id, member_id, event_type, day), earned) in self.daily {
            daily.push(daily::Model {
                tenant_id,
                member_id,
                event_type,
                day,
                earned,
            });
        }
        let query = sqlx::query(WRITE);
        let query = self.accounts.bind(query);
        let query = self.changed_lots.bind(query);
        let query = self.new_lots.bind(query);
        let query = self.entries.bind(query);
        let query = self.allocations.bind(query);
        let query = self.holds.bind(query);
        let query = daily.bind(query);
        let query = self.records.bind(query);
        let Err(err) = query.execute(pool).await else {
            return Ok(());
        };
        let err = sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(err.into()));
        // Planning reads what the one read did not hold after it, so a plan on a replaced
        // version could break a constraint before the version check fails it: that is a lost
        // race too, served again by the transaction (which meets a real violation again and
        // reports it there).
        if classify(&err) == DbFailure::CheckViolation {
            tracing::warn!(error = %err, "points batch write broke a constraint; serving it again in a transaction");
            return Err(MarketingError::ConcurrentModification(err.into()));
        }
        Err(db_error(err))
    }
}

#[cfg(test)]
mod tests {
    //! The columns of the one write are declared in three places: the entities (and row
    //! types), the `columns!` lists that bind them, and `write.sql`'s column lists and `$N`
    //! placeholders. These tests fail when they disagree.

    use sea_orm::{EntityTrait, IdenStatic, Iterable};

    use super::*;

    /// `write.sql`'s placeholders in the order they first appear, with their casts.
    fn placeholders() -> Vec<(usize, String)> {
        let mut found: Vec<(usize, String)> = Vec::new();
        let mut rest = WRITE;
        while let Some(at) = rest.find('$') {
            rest = &rest[at + 1..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let number: usize = digits.parse().expect("a placeholder's number");
            let cast = rest[digits.len()..]
                .strip_prefix("::")
                .expect("every placeholder is cast");
            let cast: String = cast.chars().take_while(|c| *c != '[').collect();
            if !found.iter().any(|(n, _)| *n == number) {
                found.push((number, cast));
            }
        }
        found
    }

    /// The column list of `write.sql`'s INSERT into `table`.
    fn inserted(table: &str) -> Vec<String> {
        let start = WRITE
            .find(&format!("INSERT INTO {table} ("))
            .unwrap_or_else(|| panic!("write.sql inserts into {table}"));
        let list = &WRITE[start..];
        let list = &list[list.find('(').expect("(") + 1..list.find(')').expect(")")];
        list.split(',').map(|c| c.trim().to_owned()).collect()
    }

    fn pg_type(rust: &str) -> &'static str {
        let rust = rust
            .strip_prefix("Option<")
            .and_then(|inner| inner.strip_suffix('>'))
            .unwrap_or(rust);
        match rust.replace(' ', "").as_str() {
            "Uuid" => "uuid",
            "i64" => "int8",
            "i32" => "int4",
            "i16" => "int2",
            "String" => "text",
            "Vec<u8>" => "bytea",
            other => panic!("no PostgreSQL array type for {other}"),
        }
    }

    /// A `columns!` list: each column's name and Rust type.
    type Declared = &'static [(&'static str, &'static str)];

    fn names(columns: &[(&str, &str)]) -> Vec<String> {
        columns.iter().map(|(name, _)| (*name).to_owned()).collect()
    }

    fn entity_columns<E: EntityTrait>() -> Vec<String> {
        let mut columns: Vec<String> = E::Column::iter().map(|c| c.as_str().to_owned()).collect();
        columns.sort();
        columns
    }

    #[test]
    fn write_sql_binds_every_column_in_the_declared_order_and_type() {
        // The order `execute` binds them in.
        let groups: [Declared; 8] = [
            AccountColumns::COLUMNS,
            ChangedLotColumns::COLUMNS,
            LotColumns::COLUMNS,
            EntryColumns::COLUMNS,
            AllocationColumns::COLUMNS,
            HoldColumns::COLUMNS,
            DailyColumns::COLUMNS,
            RecordColumns::COLUMNS,
        ];
        let declared: Vec<&(&str, &str)> = groups.iter().flat_map(|g| g.iter()).collect();
        let found = placeholders();
        assert_eq!(
            found.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            (1..=declared.len()).collect::<Vec<_>>(),
            "write.sql numbers one placeholder per declared column, in bind order"
        );
        for ((number, cast), (name, rust)) in found.iter().zip(declared) {
            assert_eq!(cast, pg_type(rust), "${number} ({name}: {rust})");
        }
    }

    #[test]
    fn write_sql_inserts_the_declared_columns_of_every_entity() {
        let tables: [(&str, Declared, Vec<String>); 6] = [
            (
                "points_lots",
                LotColumns::COLUMNS,
                entity_columns::<lot::Entity>(),
            ),
            (
                "points_transactions",
                EntryColumns::COLUMNS,
                entity_columns::<tx::Entity>(),
            ),
            (
                "points_allocations",
                AllocationColumns::COLUMNS,
                entity_columns::<alloc::Entity>(),
            ),
            (
                "points_holds",
                HoldColumns::COLUMNS,
                entity_columns::<hold::Entity>(),
            ),
            (
                "points_daily_earnings",
                DailyColumns::COLUMNS,
                entity_columns::<daily::Entity>(),
            ),
            (
                "idempotency_records",
                RecordColumns::COLUMNS,
                entity_columns::<record::Entity>(),
            ),
        ];
        for (table, columns, entity) in tables {
            assert_eq!(
                inserted(table),
                names(columns),
                "{table}: write.sql against columns!"
            );
            let mut declared = names(columns);
            declared.sort();
            assert_eq!(declared, entity, "{table}: columns! against the entity");
        }
        // The updates name their arrays' columns too (the id as `key`).
        for (alias, columns) in [
            ("v(key, read_version,", AccountColumns::COLUMNS),
            ("v(key, remaining, frozen)", ChangedLotColumns::COLUMNS),
        ] {
            let start = WRITE.find(alias).expect("the update's alias list");
            let list = &WRITE[start + 2..];
            let list: Vec<String> = list[..list.find(')').expect(")")]
                .split(',')
                .map(|c| c.trim().to_owned())
                .collect();
            let mut expected = names(columns);
            expected[0] = "key".to_owned();
            assert_eq!(list, expected, "{alias}");
        }
    }
}
