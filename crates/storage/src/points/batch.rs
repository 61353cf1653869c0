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

use std::{
    collections::{HashMap, HashSet},
    sync::LazyLock,
};

use marketing_domain::{
    MarketingError, MemberId, TenantId, UnixMicros,
    points::{Account, Ledger, Lot},
};
use sea_orm::{
    ColumnTrait, ColumnType, EntityTrait, IdenStatic, Iterable, ModelTrait, Value,
    sqlx::{self, PgPool, Row, postgres::PgRow},
};
use uuid::Uuid;

use super::rows::{self, LedgerWrite};
use crate::{
    db::{DbFailure, classify, db_error, key_alias},
    entity::{
        event_batch, event_body, idempotency_record as record, points_account as acct,
        points_allocation as alloc, points_daily_earning as daily, points_hold as hold,
        points_lot as lot, points_transaction as tx,
    },
    events::{NewEvent, rows_of},
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

/// One column's values, typed as PostgreSQL binds its array.
enum Array {
    I16(Vec<Option<i16>>),
    I32(Vec<Option<i32>>),
    I64(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Uuid(Vec<Option<Uuid>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Array {
    fn of(cast: &str) -> Self {
        match cast {
            "int2" => Self::I16(Vec::new()),
            "int4" => Self::I32(Vec::new()),
            "int8" => Self::I64(Vec::new()),
            "uuid" => Self::Uuid(Vec::new()),
            "bytea" => Self::Bytes(Vec::new()),
            _ => Self::Text(Vec::new()),
        }
    }

    /// Appends `value`; `false` when it is not of the array's type (a bug the tests catch).
    fn push(&mut self, value: Value) -> bool {
        match (self, value) {
            (Self::I16(a), Value::SmallInt(v)) => a.push(v),
            (Self::I32(a), Value::Int(v)) => a.push(v),
            (Self::I64(a), Value::BigInt(v)) => a.push(v),
            (Self::Text(a), Value::String(v)) => a.push(v),
            (Self::Uuid(a), Value::Uuid(v)) => a.push(v),
            (Self::Bytes(a), Value::Bytes(v)) => a.push(v),
            _ => return false,
        }
        true
    }

    fn bind<'q>(self, query: PgQuery<'q>) -> PgQuery<'q> {
        match self {
            Self::I16(a) => query.bind(a),
            Self::I32(a) => query.bind(a),
            Self::I64(a) => query.bind(a),
            Self::Text(a) => query.bind(a),
            Self::Uuid(a) => query.bind(a),
            Self::Bytes(a) => query.bind(a),
        }
    }
}

/// The PostgreSQL array element type of a column of `column_type`.
fn cast_of(column_type: &ColumnType) -> &'static str {
    match column_type {
        ColumnType::SmallInteger => "int2",
        ColumnType::Integer => "int4",
        ColumnType::BigInteger => "int8",
        ColumnType::Uuid => "uuid",
        ColumnType::Binary(_) | ColumnType::VarBinary(_) | ColumnType::Blob => "bytea",
        _ => "text",
    }
}

/// The PostgreSQL array element type of a field of Rust type `rust` (an update row's).
fn cast_of_rust(rust: &str) -> &'static str {
    match rust {
        "i16" => "int2",
        "i32" => "int4",
        "i64" => "int8",
        "Uuid" => "uuid",
        _ => "text",
    }
}

/// One group of the write's arrays: a table's rows (or an update's), one array per column,
/// in its declaration's order (the entity's columns, or the update row's fields).
struct Arrays {
    /// (name, cast) of each column.
    columns: Vec<(&'static str, &'static str)>,
    arrays: Vec<Array>,
    /// Values pushed into an array of another type (none, unless a declaration is wrong).
    mismatched: usize,
}

impl Arrays {
    fn new(columns: Vec<(&'static str, &'static str)>) -> Self {
        let arrays = columns.iter().map(|(_, cast)| Array::of(cast)).collect();
        Self {
            columns,
            arrays,
            mismatched: 0,
        }
    }

    /// The arrays of entity `E`'s table.
    fn of<E: EntityTrait>() -> Self {
        Self::new(
            E::Column::iter()
                .map(|c| (c.as_str(), cast_of(c.def().get_column_type())))
                .collect(),
        )
    }

    /// The arrays of an update's rows (`rows::update_row!`).
    fn of_update(columns: &'static [(&'static str, &'static str)]) -> Self {
        Self::new(
            columns
                .iter()
                .map(|(name, rust)| (key_alias(name), cast_of_rust(rust)))
                .collect(),
        )
    }

    fn push(&mut self, values: Vec<Value>) {
        for (array, value) in self.arrays.iter_mut().zip(values) {
            if !array.push(value) {
                self.mismatched += 1;
            }
        }
    }

    /// Appends a row of entity `E`, column by column.
    fn push_model<M: ModelTrait>(&mut self, row: M) {
        let values = <M::Entity as EntityTrait>::Column::iter()
            .map(|c| row.get(c))
            .collect();
        self.push(values);
    }

    fn bind<'q>(self, query: PgQuery<'q>) -> PgQuery<'q> {
        self.arrays
            .into_iter()
            .fold(query, |query, array| array.bind(query))
    }
}

/// The groups of arrays the write binds, in bind order (each group's columns numbered on from
/// the last), with what `write.sql` calls them.
fn groups() -> [(&'static str, Arrays); 10] {
    [
        ("accounts", Arrays::of_update(rows::AccountUpdate::COLUMNS)),
        ("changed_lots", Arrays::of_update(rows::LotUpdate::COLUMNS)),
        ("lots", Arrays::of::<lot::Entity>()),
        ("entries", Arrays::of::<tx::Entity>()),
        ("allocations", Arrays::of::<alloc::Entity>()),
        ("holds", Arrays::of::<hold::Entity>()),
        ("daily", Arrays::of::<daily::Entity>()),
        ("records", Arrays::of::<record::Entity>()),
        ("event_batches", Arrays::of::<event_batch::Entity>()),
        ("event_bodies", Arrays::of::<event_body::Entity>()),
    ]
}

/// `write.sql` with its markers filled in from the groups' columns: `{arrays:G}`,
/// `{columns:G}` and `{G.column}` (see the file), its comments left out.
fn render_write(template: &str) -> String {
    // Without its comments (which name the markers).
    let mut sql: String = template
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut number = 0;
    for (group, arrays) in groups() {
        let mut placeholders = Vec::new();
        for (column, cast) in &arrays.columns {
            number += 1;
            let placeholder = format!("${number}::{cast}[]");
            sql = sql.replace(&format!("{{{group}.{column}}}"), &placeholder);
            placeholders.push(placeholder);
        }
        let names: Vec<&str> = arrays.columns.iter().map(|(name, _)| *name).collect();
        sql = sql
            .replace(&format!("{{arrays:{group}}}"), &placeholders.join(", "))
            .replace(&format!("{{columns:{group}}}"), &names.join(", "));
    }
    sql
}

/// Everything a batch writes, column by column, for [`BatchWrite::execute`].
pub struct BatchWrite {
    accounts: Arrays,
    changed_lots: Arrays,
    new_lots: Arrays,
    entries: Arrays,
    allocations: Arrays,
    holds: Arrays,
    daily: HashMap<(String, String, String, i32), i64>,
    records: Arrays,
    /// Written as two groups (batches, bodies) by [`BatchWrite::execute`].
    events: Vec<NewEvent>,
}

impl Default for BatchWrite {
    fn default() -> Self {
        let [
            (_, accounts),
            (_, changed_lots),
            (_, new_lots),
            (_, entries),
            (_, allocations),
            (_, holds),
            _,
            (_, records),
            _,
            _,
        ] = groups();
        Self {
            accounts,
            changed_lots,
            new_lots,
            entries,
            allocations,
            holds,
            daily: HashMap::new(),
            records,
            events: Vec::new(),
        }
    }
}

/// The batch's one write (`write.sql`, rendered once). Each `v_*` is a table's rows as
/// parallel arrays; `points_batch_written` fails the statement unless every account still had
/// its version and every changed lot was found. The `= ANY` conditions give the generic plan
/// an index condition on the updated tables whatever their size (without them a plan made on
/// a small table scans it).
static WRITE: LazyLock<String> = LazyLock::new(|| render_write(include_str!("write.sql")));

impl BatchWrite {
    /// Adds a planned ledger: its account (checked against the version read), its changed
    /// and new lots, entries, allocations and holds.
    pub fn add_ledger(&mut self, ledger: &Ledger) {
        let rows = LedgerWrite::of(ledger);
        self.accounts.push(rows.account.values());
        for lot in rows.changed_lots {
            self.changed_lots.push(lot.values());
        }
        for lot in rows.new_lots {
            self.new_lots.push_model(lot);
        }
        for entry in rows.entries {
            self.entries.push_model(entry);
        }
        for allocation in rows.allocations {
            self.allocations.push_model(allocation);
        }
        for hold in rows.holds {
            self.holds.push_model(hold);
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
            .push_model(idempotency::record_row(key, outcome, now));
    }

    /// Adds an event of the batch's changes (numbered after the commit, see `events`).
    pub fn add_event(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// Writes everything in one statement, or nothing: `ConcurrentModification` when an
    /// account was changed since it was read, or a request id or business reference was
    /// taken meanwhile.
    pub async fn execute(self, pool: &PgPool) -> Result<(), MarketingError> {
        let mut daily = Arrays::of::<daily::Entity>();
        for ((tenant_id, member_id, event_type, day), earned) in self.daily {
            daily.push_model(daily::Model {
                tenant_id,
                member_id,
                event_type,
                day,
                earned,
            });
        }
        let rows = rows_of(self.events);
        let mut event_batches = Arrays::of::<event_batch::Entity>();
        for row in rows.batches {
            event_batches.push_model(row);
        }
        let mut event_bodies = Arrays::of::<event_body::Entity>();
        for row in rows.bodies {
            event_bodies.push_model(row);
        }
        let groups = [
            &self.accounts,
            &self.changed_lots,
            &self.new_lots,
            &self.entries,
            &self.allocations,
            &self.holds,
            &daily,
            &self.records,
            &event_batches,
            &event_bodies,
        ];
        let mismatched: usize = groups.iter().map(|g| g.mismatched).sum();
        if mismatched > 0 {
            return Err(MarketingError::internal(format!(
                "{mismatched} values of the points batch are not of their column's type"
            )));
        }
        let query = sqlx::query(WRITE.as_str());
        let query = self.accounts.bind(query);
        let query = self.changed_lots.bind(query);
        let query = self.new_lots.bind(query);
        let query = self.entries.bind(query);
        let query = self.allocations.bind(query);
        let query = self.holds.bind(query);
        let query = daily.bind(query);
        let query = self.records.bind(query);
        let query = event_batches.bind(query);
        let query = event_bodies.bind(query);
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
    //! The write's columns are declared once: by the entities, and by the update rows of
    //! `rows.rs`. `write.sql` names only what it treats apart. These tests fail when the
    //! rendered statement, the declarations and the values pushed disagree.

    use marketing_domain::{
        MemberId, RequestId, TenantId, UnixMicros,
        points::{Account, EntryMeta, Ledger},
    };

    use super::*;

    /// The rendered statement's placeholders in the order they first appear, with casts.
    fn placeholders(sql: &str) -> Vec<(usize, String)> {
        let mut found: Vec<(usize, String)> = Vec::new();
        let mut rest = sql;
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

    #[test]
    fn the_rendered_write_binds_every_declared_column_in_order() {
        let sql = WRITE.as_str();
        assert!(
            !sql.contains('{'),
            "a marker of write.sql names no group's column:\n{sql}"
        );
        let declared: Vec<(&str, &str)> = groups()
            .iter()
            .flat_map(|(_, arrays)| arrays.columns.clone())
            .collect();
        let found = placeholders(sql);
        assert_eq!(
            found.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            (1..=declared.len()).collect::<Vec<_>>(),
            "one placeholder per declared column, in bind order"
        );
        for ((number, cast), (name, declared)) in found.iter().zip(&declared) {
            assert_eq!(cast, declared, "${number} ({name})");
        }
        // Every entity's column is inserted, under its own name.
        let insert = sql
            .find("INSERT INTO points_transactions (")
            .expect("the entries' insert");
        let list = &sql[insert..];
        let list = &list[list.find('(').expect("(") + 1..list.find(')').expect(")")];
        let names: Vec<&str> = list.split(',').map(str::trim).collect();
        let entity: Vec<&str> = tx::Column::iter().map(|c| c.as_str()).collect();
        assert_eq!(names, entity);
    }

    /// Every column of every group gets a value of its array's type from the rows a ledger
    /// writes (a column whose type maps to another array would be counted as mismatched).
    #[test]
    fn every_value_a_ledger_writes_fits_its_column() {
        let tenant = TenantId::parse("tenant_id", "acme").expect("tenant");
        let member = MemberId::parse("member_id", "m1").expect("member");
        let now = UnixMicros::now();
        let account = Account {
            id: uuid::Uuid::now_v7(),
            tenant_id: tenant.clone(),
            member_id: member.clone(),
            available: 0,
            frozen: 0,
            total_earned: 0,
            total_spent: 0,
            total_expired: 0,
            total_refunded: 0,
            version: 1,
            earned_updated_at: now,
            created_at: now,
            updated_at: now,
        };
        let mut ledger = Ledger::new(account, Vec::new(), now);
        let meta = EntryMeta {
            biz_type: Some("order".into()),
            biz_id: Some("o-1".into()),
            request_id: Some("r-1".into()),
            description: "earn".into(),
            actor: Some("till".into()),
        };
        ledger
            .earn(100, Some(UnixMicros(now.0 + 1_000_000)), meta.clone())
            .expect("earn");
        ledger.deduct(10, meta).expect("deduct");
        let mut write = BatchWrite::default();
        write.add_ledger(&ledger);
        write.add_daily(&tenant, &member, "signup", 1, 5);
        let key = IdempotencyKey {
            tenant_id: tenant,
            request_id: RequestId::parse("request_id", "r-1").expect("request id"),
            client: "till".into(),
            operation: "EarnPoints",
            fingerprint: vec![1],
        };
        write.add_record(
            &key,
            Outcome {
                status_code: 0,
                response: vec![2],
            },
            now,
        );
        for (name, arrays) in [
            ("accounts", &write.accounts),
            ("changed_lots", &write.changed_lots),
            ("lots", &write.new_lots),
            ("entries", &write.entries),
            ("allocations", &write.allocations),
            ("holds", &write.holds),
            ("records", &write.records),
        ] {
            assert_eq!(
                arrays.mismatched, 0,
                "{name}: a value not of its column's type"
            );
        }
        assert_eq!(write.entries.arrays.len(), tx::Column::iter().count());
    }
}
