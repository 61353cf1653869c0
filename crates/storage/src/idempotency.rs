//! Idempotency records (AIP-155): the first outcome of every mutation, by (tenant, request id,
//! client). A request id belongs to the API client that first used it: the same id from another
//! client of the tenant is another request (so no client can block or read another's). Calls
//! without auth share one anonymous space; records written before request ids were per client
//! ([`ANY_CLIENT`]) match every client until they are deleted.
//!
//! A mutation claims its request id as the first write of its transaction. A concurrent
//! duplicate blocks on that row until the first commits, then sees the record and replays it;
//! if the first rolls back, the duplicate proceeds as the first. So the record and the change it
//! describes commit together, or not at all.

use std::collections::HashMap;

use marketing_domain::{MarketingError, RequestId, TenantId, UnixMicros, error::Refusal};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction,
    EntityTrait, IntoActiveModel, QueryFilter,
};

use crate::{db::db_error, entity::idempotency_record as record};

/// Marks a record whose transaction has not committed; never visible to other transactions.
const PENDING: i32 = -1;

/// The client of records written before request ids were per client: any client.
pub const ANY_CLIENT: &str = "*";

/// Who asks, for which operation, with which parameters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub tenant_id: TenantId,
    pub request_id: RequestId,
    /// Whose request id it is: the API client's name, empty without auth.
    pub client: String,
    pub operation: &'static str,
    /// A digest of the request's parameters (without the request id).
    pub fingerprint: Vec<u8>,
}

/// Where a request's record is found: (tenant, client, request id).
pub type RecordKey = (String, String, String);

impl IdempotencyKey {
    pub fn record_key(&self) -> RecordKey {
        (
            self.tenant_id.to_string(),
            self.client.clone(),
            self.request_id.to_string(),
        )
    }
}

/// The first outcome of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status_code: i32,
    pub response: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This transaction owns the request id: do the work, then [`complete`].
    Fresh,
    /// The request was done before: return this outcome.
    Replay(Outcome),
}

/// Claims the request id inside `txn` (its record written at `now`). A record of another
/// operation or other parameters is `RequestIdReused`.
pub async fn claim(
    txn: &impl ConnectionTrait,
    key: &IdempotencyKey,
    now: UnixMicros,
) -> Result<Claim, MarketingError> {
    let row = record::ActiveModel {
        tenant_id: Set(key.tenant_id.as_str().to_owned()),
        request_id: Set(key.request_id.as_str().to_owned()),
        client: Set(key.client.clone()),
        operation: Set(key.operation.to_owned()),
        fingerprint: Set(key.fingerprint.clone()),
        status_code: Set(PENDING),
        response: Set(Vec::new()),
        created_at: Set(now.0),
    };
    let inserted = crate::db::insert_if_absent(
        txn,
        row,
        [
            record::Column::TenantId,
            record::Column::RequestId,
            record::Column::Client,
        ],
    )
    .await?;
    // Fresh in this client's space; still answered by a record that matches any client.
    let client = if inserted { ANY_CLIENT } else { &key.client };
    let existing = record::Entity::find()
        .filter(record::Column::TenantId.eq(key.tenant_id.as_str()))
        .filter(record::Column::RequestId.eq(key.request_id.as_str()))
        .filter(record::Column::Client.eq(client))
        .one(txn)
        .await
        .map_err(db_error)?;
    let existing = match existing {
        Some(existing) => existing,
        None if inserted => return Ok(Claim::Fresh),
        None => {
            return Err(MarketingError::internal(
                "idempotency record vanished after a conflicting insert",
            ));
        }
    };
    if existing.operation != key.operation || existing.fingerprint != key.fingerprint {
        return Err(MarketingError::Refused(Refusal::RequestIdReused));
    }
    if existing.status_code == PENDING {
        return Err(MarketingError::internal(
            "idempotency record committed while pending",
        ));
    }
    Ok(Claim::Replay(Outcome {
        status_code: existing.status_code,
        response: existing.response,
    }))
}

/// Records the outcome of a claimed request, in the same transaction as its change.
pub async fn complete(
    txn: &impl ConnectionTrait,
    key: &IdempotencyKey,
    outcome: Outcome,
) -> Result<(), MarketingError> {
    let updated = record::Entity::update_many()
        .col_expr(record::Column::StatusCode, outcome.status_code.into())
        .col_expr(record::Column::Response, outcome.response.into())
        .filter(record::Column::TenantId.eq(key.tenant_id.as_str()))
        .filter(record::Column::RequestId.eq(key.request_id.as_str()))
        .filter(record::Column::Client.eq(key.client.as_str()))
        .filter(record::Column::StatusCode.eq(PENDING))
        .exec(txn)
        .await
        .map_err(db_error)?;
    if updated.rows_affected == 1 {
        Ok(())
    } else {
        Err(MarketingError::internal(
            "completing an idempotency record this transaction did not claim",
        ))
    }
}

/// The records of requests a unit of work reads and writes itself: a batch that answers
/// several requests at once (claims), and the retention sweep. A single request's record is
/// claimed and completed by the unit ([`crate::unit::UnitOfWork::begin_idempotent`]).
#[allow(async_fn_in_trait)]
pub trait RequestStore {
    /// The committed records of `requests` (tenant, client, request id), by their
    /// [`RecordKey`]: the client's own record, else one that matches any client.
    async fn find_many<'k>(
        &self,
        requests: impl IntoIterator<Item = (&'k TenantId, &'k str, &'k str)>,
    ) -> Result<HashMap<RecordKey, Record>, MarketingError>;

    /// Inserts completed records in one statement. A request id recorded meanwhile by a
    /// concurrent unit fails the insert (`ConcurrentModification`): retry, and the record
    /// will be found.
    async fn insert_completed(
        &self,
        records: Vec<(&IdempotencyKey, Outcome)>,
        now: UnixMicros,
    ) -> Result<(), MarketingError>;

    /// Brings the records' `created_at` index up to date before a retention sweep (see
    /// `summarize_created`).
    async fn summarize_created(&self) -> Result<(), MarketingError>;

    /// Deletes up to `limit` records written before `before` in one short statement; how
    /// many were deleted.
    async fn delete_before(&self, before: UnixMicros, limit: u64) -> Result<u64, MarketingError>;
}

/// The records as a unit of work's transaction sees them.
pub struct Requests<'c>(pub(crate) &'c DatabaseTransaction);

impl RequestStore for Requests<'_> {
    async fn find_many<'k>(
        &self,
        requests: impl IntoIterator<Item = (&'k TenantId, &'k str, &'k str)>,
    ) -> Result<HashMap<RecordKey, Record>, MarketingError> {
        find_many(self.0, requests).await
    }

    async fn insert_completed(
        &self,
        records: Vec<(&IdempotencyKey, Outcome)>,
        now: UnixMicros,
    ) -> Result<(), MarketingError> {
        insert_completed(self.0, records, now).await
    }

    async fn summarize_created(&self) -> Result<(), MarketingError> {
        summarize_created(self.0).await
    }

    async fn delete_before(&self, before: UnixMicros, limit: u64) -> Result<u64, MarketingError> {
        delete_before(self.0, before, limit).await
    }
}

/// A stored record: who asked what, and the outcome.
#[derive(Debug, Clone)]
pub struct Record {
    pub operation: String,
    pub fingerprint: Vec<u8>,
    pub outcome: Outcome,
}

impl Record {
    /// The replayable outcome of `key`'s request, or `RequestIdReused` when the record is of
    /// another request.
    pub fn replay_for(self, key: &IdempotencyKey) -> Result<Outcome, MarketingError> {
        if self.operation != key.operation || self.fingerprint != key.fingerprint {
            Err(MarketingError::Refused(Refusal::RequestIdReused))
        } else {
            Ok(self.outcome)
        }
    }
}

/// The committed records of `requests` (tenant, client, request id), by their [`RecordKey`]:
/// the client's own record, else one that matches any client.
pub(crate) async fn find_many<'k>(
    conn: &impl ConnectionTrait,
    requests: impl IntoIterator<Item = (&'k TenantId, &'k str, &'k str)>,
) -> Result<HashMap<RecordKey, Record>, MarketingError> {
    let mut by_client: HashMap<(&TenantId, &str), Vec<&str>> = HashMap::new();
    for (tenant, client, request_id) in requests {
        by_client
            .entry((tenant, client))
            .or_default()
            .push(request_id);
    }
    let mut found = HashMap::new();
    for ((tenant, client), request_ids) in by_client {
        for chunk in request_ids.chunks(1000) {
            let rows = record::Entity::find()
                .filter(record::Column::TenantId.eq(tenant.as_str()))
                .filter(record::Column::RequestId.is_in(chunk.iter().copied()))
                .filter(record::Column::Client.is_in([client, ANY_CLIENT]))
                .filter(record::Column::StatusCode.ne(PENDING))
                .all(conn)
                .await
                .map_err(db_error)?;
            for row in rows {
                let own = row.client == client;
                let key = (row.tenant_id, client.to_owned(), row.request_id);
                let record = Record {
                    operation: row.operation,
                    fingerprint: row.fingerprint,
                    outcome: Outcome {
                        status_code: row.status_code,
                        response: row.response,
                    },
                };
                if own {
                    found.insert(key, record);
                } else {
                    found.entry(key).or_insert(record);
                }
            }
        }
    }
    Ok(found)
}

/// Inserts completed records in one statement. A request id recorded meanwhile by a
/// concurrent transaction fails the insert (`ConcurrentModification`): retry, and the record
/// will be found.
pub(crate) async fn insert_completed(
    conn: &impl ConnectionTrait,
    records: Vec<(&IdempotencyKey, Outcome)>,
    now: UnixMicros,
) -> Result<(), MarketingError> {
    let rows: Vec<record::ActiveModel> = records
        .into_iter()
        .map(|(key, outcome)| {
            record_row(key, outcome, now)
                .into_active_model()
                .reset_all()
        })
        .collect();
    crate::db::insert_rows(conn, rows).await?;
    Ok(())
}

/// The row of a completed request's record.
pub(crate) fn record_row(key: &IdempotencyKey, outcome: Outcome, now: UnixMicros) -> record::Model {
    record::Model {
        tenant_id: key.tenant_id.as_str().to_owned(),
        request_id: key.request_id.as_str().to_owned(),
        client: key.client.clone(),
        operation: key.operation.to_owned(),
        fingerprint: key.fingerprint.clone(),
        status_code: outcome.status_code,
        response: outcome.response,
        created_at: now.0,
    }
}

/// Brings the records' `created_at` index up to date before a retention sweep. On PostgreSQL
/// it is a BRIN index (cheap to insert into), whose ranges past its last summary match every
/// search: summarizing the new ranges first (each new page read once) lets the sweep find the
/// old records without reading every recent page, with or without autovacuum. Nothing on
/// SQLite (a B-tree).
async fn summarize_created(conn: &impl ConnectionTrait) -> Result<(), MarketingError> {
    if conn.get_database_backend() == sea_orm::DbBackend::Postgres {
        conn.execute_unprepared(
            "SELECT brin_summarize_new_values('idx_idempotency_records_created')",
        )
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

/// Deletes up to `limit` records written before `before` (a retry after the retention window
/// is a new request), in one short statement: no lock is held longer than one small batch.
/// How many were deleted.
async fn delete_before(
    conn: &impl ConnectionTrait,
    before: UnixMicros,
    limit: u64,
) -> Result<u64, MarketingError> {
    crate::db::delete_batch(conn, "idempotency_records", RETAINED, before, limit).await
}

/// What the retention sweeper deletes: records written before `$1`.
const RETAINED: &str = "created_at < $1";

/// The retention sweeper's delete at `before`, as `backend` runs it: for tests of its plan.
pub fn sweeper_reads(
    backend: sea_orm::DbBackend,
    before: UnixMicros,
    limit: u64,
) -> Vec<(&'static str, sea_orm::Statement)> {
    vec![(
        "idempotency records past retention",
        crate::db::delete_batch_statement(backend, "idempotency_records", RETAINED, before, limit),
    )]
}
