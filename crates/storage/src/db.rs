//! Connecting, migrating, write transactions, and the one place database errors are classified.

use std::time::Duration;

use marketing_domain::{MarketingError, UnixMicros};
use marketing_migration::{Migrator, MigratorTrait};
use sea_orm::{
    ActiveModelTrait, ConnectOptions, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, DbErr, EntityTrait, QueryTrait, RuntimeErr, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait, Value,
    sqlx::{
        self,
        sqlite::{SqliteJournalMode, SqliteSynchronous},
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A connection pool to the database, PostgreSQL or SQLite.
#[derive(Debug, Clone)]
pub struct Database {
    conn: DatabaseConnection,
    backend: Backend,
    /// The same pool as `conn`, for the statements SeaORM cannot express (array parameters,
    /// see `points::batch`).
    postgres: Option<sqlx::PgPool>,
    max_connections: u32,
}

impl Database {
    /// Connects to `url` (`postgres://...` or `sqlite://path?mode=rwc`) with a pool of at most
    /// `max_connections`; statements that take `slow_statements` or longer are logged (a
    /// warning with the statement's first words and its duration; zero: none).
    pub async fn connect(
        url: &str,
        max_connections: u32,
        slow_statements: Duration,
    ) -> Result<Self, DbErr> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            // sqlx pings every connection it hands out by default: one more round trip per
            // transaction (~0.2 ms under load, a tenth of a points batch). A connection used
            // within the last second is alive; only older ones are checked.
            .test_before_acquire_if_idle_for(Duration::from_secs(1))
            // Only slow statements are logged, by sqlx (target `sqlx::query`).
            .sqlx_logging(!slow_statements.is_zero())
            .sqlx_logging_level(log::LevelFilter::Off)
            .sqlx_slow_statements_logging_settings(log::LevelFilter::Warn, slow_statements)
            // Generic plans for our prepared statements (their partial-index conditions are
            // written as constants, see `constant`): key lookups planned on the column's
            // average, not on the statistics of the one value bound. With custom plans, a
            // tenant or template newer than the last ANALYZE looks empty, and PostgreSQL scans
            // all of its rows by the prefix (filtering the batch's keys) instead of looking the
            // keys up: measured, a batch's idempotency lookup took 2.6 ms instead of 0.1 ms, and
            // it grows with the tenant. A fixed plan per statement also skips re-planning.
            .map_sqlx_postgres_opts(|pg| pg.options([("plan_cache_mode", "force_generic_plan")]))
            // WAL lets readers proceed while one writer commits; FULL keeps every commit
            // durable; the busy timeout makes writers queue instead of failing.
            .map_sqlx_sqlite_opts(|sqlite| {
                sqlite
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        let conn = sea_orm::Database::connect(options).await?;
        let backend = match conn.get_database_backend() {
            DbBackend::Postgres => Backend::Postgres,
            DbBackend::Sqlite => Backend::Sqlite,
            other => {
                return Err(DbErr::Custom(format!(
                    "unsupported database backend {other:?}: use postgres:// or sqlite://"
                )));
            }
        };
        let postgres =
            (backend == Backend::Postgres).then(|| conn.get_postgres_connection_pool().clone());
        Ok(Self {
            conn,
            backend,
            postgres,
            max_connections,
        })
    }

    /// The pool's connections now: (open, of which idle, the most it opens).
    pub fn pool_connections(&self) -> (u32, usize, u32) {
        let max = self.max_connections;
        match self.backend {
            Backend::Postgres => {
                let pool = self.conn.get_postgres_connection_pool();
                (pool.size(), pool.num_idle(), max)
            }
            Backend::Sqlite => {
                let pool = self.conn.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle(), max)
            }
        }
    }

    /// Whether this is PostgreSQL with autovacuum off (nothing then keeps the planner's
    /// statistics current as the tables grow: plans go bad, see the README).
    pub async fn autovacuum_off(&self) -> Result<bool, MarketingError> {
        if self.backend != Backend::Postgres {
            return Ok(false);
        }
        let row = self
            .conn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SHOW autovacuum",
            ))
            .await
            .map_err(db_error)?;
        let setting: Option<String> = match row {
            Some(row) => Some(row.try_get_by_index(0).map_err(db_error)?),
            None => None,
        };
        Ok(setting.as_deref() == Some("off"))
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        Migrator::up(&self.conn, None).await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for reads.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// The templates, read through the pool.
    pub fn templates(&self) -> crate::templates::Templates<'_, DatabaseConnection> {
        crate::templates::Templates(&self.conn)
    }

    /// Members' coupons, read through the pool.
    pub fn coupons(&self) -> crate::user_coupons::Coupons<'_, DatabaseConnection> {
        crate::user_coupons::Coupons(&self.conn)
    }

    /// Points accounts, ledgers and rules, read through the pool.
    pub fn points(&self) -> crate::points::accounts::Points<'_, DatabaseConnection> {
        crate::points::accounts::Points(&self.conn)
    }

    /// The events, read through the pool.
    pub fn events(&self) -> crate::events::Events<'_, DatabaseConnection> {
        crate::events::Events(&self.conn)
    }

    /// Redemption codes, read through the pool.
    pub fn codes(&self) -> crate::codes::Codes<'_, DatabaseConnection> {
        crate::codes::Codes(&self.conn)
    }

    /// Tenants' settings, read through the pool.
    pub fn settings(&self) -> crate::settings::Settings<'_, DatabaseConnection> {
        crate::settings::Settings(&self.conn)
    }

    /// API clients, read through the pool.
    pub fn clients(&self) -> crate::clients::Clients<'_, DatabaseConnection> {
        crate::clients::Clients(&self.conn)
    }

    /// The same pool through sqlx, on PostgreSQL.
    pub fn postgres(&self) -> Option<&sqlx::PgPool> {
        self.postgres.as_ref()
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout instead of one failing
    /// when it upgrades a read lock.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, MarketingError> {
        let options = TransactionOptions {
            sqlite_transaction_mode: (self.backend == Backend::Sqlite)
                .then_some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        self.conn
            .begin_with_options(options)
            .await
            .map_err(db_error)
    }

    pub async fn close(self) -> Result<(), DbErr> {
        self.conn.close().await
    }
}

/// Deletes up to `limit` rows of `table` matching `condition` (SQL over the parameter `$1`,
/// bound to `at`), in one statement that finds them first: by `ctid` on PostgreSQL, `rowid` on
/// SQLite. Each call is its own short transaction, so a large backlog is deleted in small
/// steps, never under one long lock. How many were deleted.
pub(crate) async fn delete_batch(
    conn: &impl ConnectionTrait,
    table: &'static str,
    condition: &'static str,
    at: UnixMicros,
    limit: u64,
) -> Result<u64, MarketingError> {
    let statement =
        delete_batch_statement(conn.get_database_backend(), table, condition, at, limit);
    Ok(conn
        .execute_raw(statement)
        .await
        .map_err(db_error)?
        .rows_affected())
}

/// [`delete_batch`]'s statement.
pub(crate) fn delete_batch_statement(
    backend: DbBackend,
    table: &str,
    condition: &str,
    at: UnixMicros,
    limit: u64,
) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => format!(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY(\
             SELECT ctid FROM {table} WHERE {condition} LIMIT $2))"
        ),
        _ => format!(
            "DELETE FROM {table} WHERE rowid IN (\
             SELECT rowid FROM {table} WHERE {} LIMIT ?)",
            condition.replace("$1", "?")
        ),
    };
    Statement::from_sql_and_values(backend, sql, [at.0.into(), limit.into()])
}

/// A constant written into the statement's text instead of bound as a parameter. The
/// conditions that select a partial index (`status = 1`, `expires_at <= now`) must be constants:
/// a generic plan (see [`Database::connect`]) cannot use a partial index whose predicate
/// depends on a parameter's value, and falls back to scanning the table.
pub(crate) fn constant(value: impl Into<Value>) -> sea_orm::sea_query::Expr {
    sea_orm::sea_query::Expr::Constant(value.into())
}

/// Reads a row's columns in order, through sqlx directly. SeaORM 2.0 formats an error message
/// for every NULL it reads into an `Option` (`TryGetError::Null(format!(..))`) and looks every
/// column up by name; on a page of coupons, each with nine NULL columns, that was a tenth of
/// the server's CPU. Use it for the hot reads, with the columns selected in the order read.
pub(crate) struct RowReader<'a> {
    row: &'a sea_orm::QueryResult,
    next: usize,
}

impl<'a> RowReader<'a> {
    pub(crate) fn new(row: &'a sea_orm::QueryResult) -> Self {
        Self { row, next: 0 }
    }

    /// The next column's value; `name` is the column expected there (checked in debug builds).
    pub(crate) fn next<T>(&mut self, name: &str) -> Result<T, DbErr>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>
            + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>,
    {
        use sea_orm::sqlx::Row;
        let index = self.next;
        self.next += 1;
        let decoded = if let Some(row) = self.row.try_as_pg_row() {
            debug_assert_eq!(row.columns().get(index).map(sqlx::Column::name), Some(name));
            row.try_get(index)
        } else if let Some(row) = self.row.try_as_sqlite_row() {
            debug_assert_eq!(row.columns().get(index).map(sqlx::Column::name), Some(name));
            row.try_get(index)
        } else {
            return Err(DbErr::Custom("a row of an unsupported backend".into()));
        };
        decoded.map_err(|err| DbErr::Type(format!("column {index} ({name}): {err}")))
    }
}

/// What a database error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// A UNIQUE or PRIMARY KEY constraint refused the write.
    UniqueViolation,
    /// A CHECK constraint refused the write: an invariant the application should have kept.
    CheckViolation,
    /// A serialization failure, deadlock or busy database: the transaction may be retried.
    Retryable,
    /// The database cannot be reached or the pool is exhausted.
    Unavailable,
    Other,
}

/// Classifies a database error by SQLSTATE (PostgreSQL) or extended result code (SQLite).
pub fn classify(err: &DbErr) -> DbFailure {
    let sqlx_err = match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return DbFailure::Unavailable,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return DbFailure::Other,
    };
    let Some(db_err) = sqlx_err.as_database_error() else {
        return match &**sqlx_err {
            sea_orm::sqlx::Error::Io(_)
            | sea_orm::sqlx::Error::PoolTimedOut
            | sea_orm::sqlx::Error::PoolClosed => DbFailure::Unavailable,
            _ => DbFailure::Other,
        };
    };
    match db_err.code().as_deref() {
        // PostgreSQL SQLSTATEs; SQLite extended codes 2067 (UNIQUE) and 1555 (PRIMARY KEY).
        Some("23505" | "2067" | "1555") => DbFailure::UniqueViolation,
        // PostgreSQL 23514; SQLite 275 (SQLITE_CONSTRAINT_CHECK).
        Some("23514" | "275") => DbFailure::CheckViolation,
        // PostgreSQL serialization failure and deadlock; SQLite BUSY (5, 517) and LOCKED (6).
        Some("40001" | "40P01" | "5" | "517" | "6") => DbFailure::Retryable,
        // PostgreSQL: cannot connect now, too many connections, admin shutdown.
        Some("57P03" | "53300" | "57P01") => DbFailure::Unavailable,
        _ => DbFailure::Other,
    }
}

/// Turns a database error into a domain error: unavailability and lost races are retryable,
/// anything else is internal (the cause is kept for the log).
pub fn db_error(err: DbErr) -> MarketingError {
    match classify(&err) {
        DbFailure::Unavailable => MarketingError::Unavailable(err.into()),
        // A concurrent writer won a race: the use case may retry its transaction.
        DbFailure::Retryable | DbFailure::UniqueViolation => {
            MarketingError::ConcurrentModification(err.into())
        }
        DbFailure::CheckViolation | DbFailure::Other => MarketingError::Internal(err.into()),
    }
}

/// Inserts `row` unless a row with the same `conflict` columns exists (`ON CONFLICT DO
/// NOTHING`, on both backends); `true` when it was inserted. On PostgreSQL a concurrent
/// transaction inserting the same key makes this wait for its outcome first.
pub async fn insert_if_absent<A, C>(
    conn: &impl ConnectionTrait,
    row: A,
    conflict: impl IntoIterator<Item = C> + Clone,
) -> Result<bool, MarketingError>
where
    A: ActiveModelTrait,
    C: sea_orm::sea_query::IntoIden,
{
    Ok(insert_all_if_absent(conn, vec![row], conflict).await? == 1)
}

/// [`insert_if_absent`] for many rows, one statement per [`INSERT_CHUNK`] rows; returns how
/// many were inserted. Concurrent callers should give their rows in one order (sorted by the
/// conflict key), so that they wait for each other's keys in that order and never deadlock.
pub async fn insert_all_if_absent<A, C>(
    conn: &impl ConnectionTrait,
    rows: Vec<A>,
    conflict: impl IntoIterator<Item = C> + Clone,
) -> Result<u64, MarketingError>
where
    A: ActiveModelTrait,
    C: sea_orm::sea_query::IntoIden,
{
    let backend = conn.get_database_backend();
    let mut inserted = 0;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows.by_ref().take(INSERT_CHUNK).collect();
        let statement = <A::Entity as EntityTrait>::insert_many(chunk)
            .on_conflict(
                sea_orm::sea_query::OnConflict::columns(conflict.clone())
                    .do_nothing()
                    .to_owned(),
            )
            .build(backend);
        inserted += conn
            .execute_raw(statement)
            .await
            .map_err(db_error)?
            .rows_affected();
    }
    Ok(inserted)
}

/// Rows one multi-row INSERT carries: at 25 columns, below PostgreSQL's (65,535) and SQLite's
/// (32,766) bind-parameter limits.
const INSERT_CHUNK: usize = 1000;

/// Inserts `rows` with one multi-row INSERT per 1,000 rows. The statement is built and
/// executed directly: measured on the claim path, SeaORM 2.0's
/// `insert_many(..).exec_without_returning()` spent ~40 ms of client time on 56 rows that
/// this executes in under 1 ms.
pub async fn insert_rows<A>(conn: &impl ConnectionTrait, rows: Vec<A>) -> Result<(), MarketingError>
where
    A: ActiveModelTrait,
{
    let backend = conn.get_database_backend();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows.by_ref().take(INSERT_CHUNK).collect();
        let statement = match values_insert(backend, &chunk) {
            Some(statement) => statement,
            None => <A::Entity as EntityTrait>::insert_many(chunk).build(backend),
        };
        conn.execute_raw(statement).await.map_err(db_error)?;
    }
    Ok(())
}

/// `INSERT INTO t (columns) VALUES (..), ..` written directly, each value bound as the row
/// holds it: sea-query's `insert_many` wraps every value in an expression, clones it on the
/// way and renders it back, several percent of the server's CPU in deduct-spread, all of it
/// inside the points batch. The same statement text and binding. `None` (use `insert_many`)
/// when there are no rows or they do not all set the same columns.
fn values_insert<A: ActiveModelTrait>(backend: DbBackend, rows: &[A]) -> Option<Statement> {
    let mut values = Vec::new();
    let sql = values_insert_sql(backend, rows, &mut values)?;
    Some(Statement::from_sql_and_values(backend, sql, values))
}

/// One table's rows, for [`Fused`].
trait RowSet: Send {
    /// The insert's text, its values appended to `values`; `None` when the rows do not all
    /// set the same columns.
    fn sql(&self, backend: DbBackend, values: &mut Vec<Value>) -> Option<String>;

    /// The statements [`insert_rows`] would run.
    fn statements(self: Box<Self>, backend: DbBackend) -> Vec<Statement>;
}

impl<A: ActiveModelTrait + Send> RowSet for Vec<A> {
    fn sql(&self, backend: DbBackend, values: &mut Vec<Value>) -> Option<String> {
        values_insert_sql(backend, self, values)
    }

    fn statements(self: Box<Self>, backend: DbBackend) -> Vec<Statement> {
        let mut rows = self.into_iter().peekable();
        let mut statements = Vec::new();
        while rows.peek().is_some() {
            let chunk: Vec<A> = rows.by_ref().take(INSERT_CHUNK).collect();
            statements.push(match values_insert(backend, &chunk) {
                Some(statement) => statement,
                None => <A::Entity as EntityTrait>::insert_many(chunk).build(backend),
            });
        }
        statements
    }
}

/// Rows of several tables inserted together: on PostgreSQL in one statement (`WITH f0 AS
/// (INSERT ..), .. INSERT ..`: one round trip however many tables) when their values fit one
/// statement and each table's rows have one shape; otherwise as [`insert_rows`] inserts each.
#[derive(Default)]
pub(crate) struct Fused {
    sets: Vec<Box<dyn RowSet>>,
}

impl Fused {
    /// Adds `rows` of one table.
    pub(crate) fn add<A: ActiveModelTrait + Send + 'static>(&mut self, rows: Vec<A>) {
        if !rows.is_empty() {
            self.sets.push(Box::new(rows));
        }
    }

    pub(crate) async fn execute(self, conn: &impl ConnectionTrait) -> Result<(), MarketingError> {
        let backend = conn.get_database_backend();
        if self.sets.is_empty() {
            return Ok(());
        }
        if backend == DbBackend::Postgres {
            let mut values = Vec::new();
            let parts: Option<Vec<String>> = self
                .sets
                .iter()
                .map(|set| set.sql(backend, &mut values))
                .collect();
            if let Some(parts) = parts
                && values.len() <= MAX_PARAMETERS
                && let Some((last, first)) = parts.split_last()
            {
                let mut sql = String::new();
                for (index, part) in first.iter().enumerate() {
                    sql.push_str(if index == 0 { "WITH " } else { ", " });
                    sql.push_str(&format!("f{index} AS ({part})"));
                }
                if !first.is_empty() {
                    sql.push(' ');
                }
                sql.push_str(last);
                let statement = Statement::from_sql_and_values(backend, sql, values);
                conn.execute_raw(statement).await.map_err(db_error)?;
                return Ok(());
            }
        }
        for set in self.sets {
            for statement in set.statements(backend) {
                conn.execute_raw(statement).await.map_err(db_error)?;
            }
        }
        Ok(())
    }
}

/// The text of [`values_insert`], its values appended to `values` (placeholders numbered on
/// from those already there).
fn values_insert_sql<A: ActiveModelTrait>(
    backend: DbBackend,
    rows: &[A],
    values: &mut Vec<Value>,
) -> Option<String> {
    use std::fmt::Write;

    use sea_orm::{EntityName, IdenStatic, Iterable};
    let all: Vec<<A::Entity as EntityTrait>::Column> =
        <<A::Entity as EntityTrait>::Column as Iterable>::iter().collect();
    let first = rows.first()?;
    let set: Vec<bool> = all.iter().map(|c| !first.is_not_set(*c)).collect();
    let same_columns = rows.iter().all(|row| {
        all.iter()
            .zip(&set)
            .all(|(c, set)| row.is_not_set(*c) != *set)
    });
    if !same_columns || !set.contains(&true) {
        return None;
    }
    let columns: Vec<_> = all
        .into_iter()
        .zip(set)
        .filter_map(|(c, set)| set.then_some(c))
        .collect();
    let table = <A::Entity as Default>::default();
    let mut sql = format!("INSERT INTO \"{}\" (", table.table_name());
    for (index, column) in columns.iter().enumerate() {
        if index > 0 {
            sql.push_str(", ");
        }
        let _ = write!(sql, "\"{}\"", column.as_str());
    }
    sql.push_str(") VALUES ");
    values.reserve(rows.len() * columns.len());
    for (index, row) in rows.iter().enumerate() {
        sql.push_str(if index == 0 { "(" } else { ", (" });
        for (position, column) in columns.iter().enumerate() {
            if position > 0 {
                sql.push_str(", ");
            }
            values.push(row.get(*column).into_value()?);
            push_placeholder(&mut sql, backend, values.len());
        }
        sql.push(')');
    }
    Some(sql)
}

/// The placeholder of the `number`th bound value (from 1): `$n` on PostgreSQL, `?` on SQLite.
fn push_placeholder(sql: &mut String, backend: DbBackend, number: usize) {
    use std::fmt::Write;
    match backend {
        DbBackend::Postgres => {
            let _ = write!(sql, "${number}");
        }
        _ => sql.push('?'),
    }
}

/// Bind parameters one statement carries: below SQLite's limit (32,766) and PostgreSQL's
/// (65,535).
const MAX_PARAMETERS: usize = 30_000;

/// How an update's values name a column: the key `id` as `key`, so that `RETURNING id` and
/// the table's own `id` stay unambiguous.
pub(crate) fn key_alias(name: &str) -> &str {
    if name == "id" { "key" } else { name }
}

/// Many rows of one table updated by one statement, each with its own values:
/// `WITH v(columns) AS (VALUES (..), ..) UPDATE table SET set FROM v WHERE condition
/// RETURNING returning`. The statement is the same on PostgreSQL and SQLite (3.35 or later).
pub(crate) struct ValuesUpdate<'a> {
    pub table: &'a str,
    /// The columns of `v` (name, Rust type), the key first as `id`: `v` names it `key`, so
    /// `RETURNING id` is unambiguous.
    pub columns: &'a [(&'a str, &'a str)],
    /// The assignments, reading `v`: `remaining = v.remaining, ..`.
    pub set: &'a str,
    /// How a row meets its values (and any check it must pass): `t.id = v.key AND ..`.
    pub condition: &'a str,
    /// The UUID column of the table each updated row answers with (`id`; a name `v` does not
    /// have).
    pub returning: &'a str,
}

impl ValuesUpdate<'_> {
    /// Updates with `rows` (each as many values as `columns`, in that order), one statement
    /// per 30,000 parameters. Returns the ids of the rows the condition let through.
    pub(crate) async fn execute(
        &self,
        conn: &impl ConnectionTrait,
        rows: Vec<Vec<Value>>,
    ) -> Result<Vec<uuid::Uuid>, MarketingError> {
        let backend = conn.get_database_backend();
        let width = self.columns.len();
        let chunk = (MAX_PARAMETERS / width).max(1);
        let mut updated = Vec::with_capacity(rows.len());
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let mut values = Vec::new();
            let names: Vec<&str> = self
                .columns
                .iter()
                .map(|(name, _)| key_alias(name))
                .collect();
            let mut sql = format!("WITH v({}) AS (VALUES ", names.join(", "));
            for (index, row) in rows.by_ref().take(chunk).enumerate() {
                debug_assert_eq!(row.len(), width, "a row of {}", self.table);
                sql.push_str(if index == 0 { "(" } else { ", (" });
                for (column, value) in row.into_iter().enumerate() {
                    values.push(value);
                    if column > 0 {
                        sql.push_str(", ");
                    }
                    push_placeholder(&mut sql, backend, values.len());
                }
                sql.push(')');
            }
            sql.push_str(&format!(
                ") UPDATE {} SET {} FROM v WHERE {} RETURNING {}",
                self.table, self.set, self.condition, self.returning
            ));
            let statement = Statement::from_sql_and_values(backend, sql, values);
            for row in conn.query_all_raw(statement).await.map_err(db_error)? {
                updated.push(row.try_get_by_index(0).map_err(db_error)?);
            }
        }
        Ok(updated)
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ActiveValue::NotSet, ActiveValue::Set, DbBackend};

    use super::values_insert;
    use crate::entity::idempotency_record as record;

    fn row(request: &str) -> record::ActiveModel {
        record::ActiveModel {
            tenant_id: Set("acme".into()),
            request_id: Set(request.into()),
            client: Set(String::new()),
            operation: Set("deduct".into()),
            fingerprint: Set(vec![1, 2]),
            status_code: Set(0),
            response: Set(vec![3]),
            created_at: Set(7),
        }
    }

    #[test]
    fn rows_become_one_values_list_with_every_value_bound() {
        let statement = values_insert(DbBackend::Postgres, &[row("a"), row("b")]).expect("built");
        assert_eq!(
            statement.sql,
            "INSERT INTO \"idempotency_records\" (\"tenant_id\", \"request_id\", \"client\", \
             \"operation\", \"fingerprint\", \"status_code\", \"response\", \"created_at\") \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8), ($9, $10, $11, $12, $13, $14, $15, $16)"
        );
        let values = statement.values.expect("values").0;
        assert_eq!(values.len(), 16);
        assert_eq!(values[9], sea_orm::Value::from("b"));
        let sqlite = values_insert(DbBackend::Sqlite, &[row("a")]).expect("built");
        assert!(
            sqlite.sql.ends_with("VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
            "{}",
            sqlite.sql
        );
    }

    #[test]
    fn rows_setting_different_columns_are_left_to_insert_many() {
        let partial = record::ActiveModel {
            response: NotSet,
            ..row("b")
        };
        assert!(values_insert(DbBackend::Postgres, &[row("a"), partial.clone()]).is_none());
        assert!(values_insert(DbBackend::Postgres, &[partial, row("a")]).is_none());
        assert!(values_insert::<record::ActiveModel>(DbBackend::Postgres, &[]).is_none());
    }
}
