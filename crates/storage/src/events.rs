//! The outbox. A change records its events in its unit of work
//! ([`crate::unit::UnitOfWork::record`]): written with the change or not at all, grouped per
//! tenant into a batch without a position. The sequencer ([`EventStore::number_committed`])
//! numbers committed batches afterwards, one unit at a time under the lock of
//! `event_positions`' one row, so positions grow in the order readers can see them; readers
//! read numbered batches only. An event's position is its batch's x [`SEQ_SPAN`] + its seq.
//! See migration `m20261207_000011_events`.

use std::collections::BTreeMap;

use marketing_domain::{MarketingError, TenantId, UnixMicros};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, JoinType,
    QueryFilter, QueryOrder, QuerySelect, RelationDef, sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    db::{RowReader, ValuesUpdate, db_error},
    entity::{event, event_batch as batch},
};

/// Events one batch holds at most: an event's position is its batch's x this + its seq.
pub const SEQ_SPAN: i64 = 1 << 16;

/// An event as a change records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub tenant_id: TenantId,
    /// E.g. `coupon.claimed`.
    pub event_type: &'static str,
    /// What changed: `coupon_template`, `user_coupon`, `points_account`, `points_rule`.
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub member_id: Option<String>,
    pub occurred_at: UnixMicros,
    pub request_id: Option<String>,
    pub actor: Option<String>,
    /// The contract's encoding of what happened.
    pub payload: Vec<u8>,
}

/// The rows of `events`, in the order recorded: one batch per tenant (and per
/// [`SEQ_SPAN`] - 1 events), each event numbered in its batch from 1.
pub(crate) fn rows_of(events: Vec<NewEvent>) -> (Vec<batch::Model>, Vec<event::Model>) {
    let mut by_tenant: BTreeMap<TenantId, Vec<NewEvent>> = BTreeMap::new();
    for event in events {
        by_tenant
            .entry(event.tenant_id.clone())
            .or_default()
            .push(event);
    }
    let mut batches = Vec::new();
    let mut rows = Vec::new();
    for (tenant, events) in by_tenant {
        let tenant = tenant.as_str();
        let mut batch_id = Uuid::nil();
        for (index, event) in events.into_iter().enumerate() {
            let seq = (index as i64 % (SEQ_SPAN - 1)) as i32 + 1;
            if seq == 1 {
                batch_id = Uuid::now_v7();
                batches.push(batch::Model {
                    id: batch_id,
                    tenant_id: tenant.to_owned(),
                    position: None,
                });
            }
            rows.push(event::Model {
                batch_id,
                seq,
                id: Uuid::now_v7(),
                tenant_id: tenant.to_owned(),
                event_type: event.event_type.to_owned(),
                aggregate_type: event.aggregate_type.to_owned(),
                aggregate_id: event.aggregate_id,
                member_id: event.member_id,
                occurred_at: event.occurred_at.0,
                request_id: event.request_id,
                actor: event.actor,
                payload: event.payload,
            });
        }
    }
    (batches, rows)
}

/// An event as readers read it: numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub position: i64,
    pub id: Uuid,
    pub tenant_id: String,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub member_id: Option<String>,
    pub occurred_at: UnixMicros,
    pub request_id: Option<String>,
    pub actor: Option<String>,
    pub payload: Vec<u8>,
}

/// Which of a tenant's events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only these types (all when empty).
    pub types: Vec<String>,
    /// Only one aggregate's: (type, id).
    pub aggregate: Option<(String, String)>,
}

/// Where events are read.
#[allow(async_fn_in_trait)]
pub trait EventReads {
    /// Up to `limit` numbered events of `tenant` after position `after`, in position order.
    async fn list(
        &self,
        tenant: &TenantId,
        after: i64,
        filter: &EventFilter,
        limit: u64,
    ) -> Result<Vec<StoredEvent>, MarketingError>;

    /// Up to `limit` numbered events of every tenant after position `after`, in position
    /// order (the relay's read).
    async fn list_all(&self, after: i64, limit: u64) -> Result<Vec<StoredEvent>, MarketingError>;

    /// Whether any committed batch waits for its position (a cheap look before a unit).
    async fn any_unnumbered(&self) -> Result<bool, MarketingError>;

    /// The last batch position the sequencer gave out.
    async fn last_numbered(&self) -> Result<i64, MarketingError>;

    /// The largest position of `tenant`'s events that retention deleted (0: none).
    async fn expired_through(&self, tenant: &TenantId) -> Result<i64, MarketingError>;
}

/// The sequencer's write: inside a unit of work only.
#[allow(async_fn_in_trait)]
pub trait EventStore: EventReads {
    /// Numbers up to `limit` committed batches that have no position yet, after the last
    /// position given, in id order; how many. Units doing this wait for each other on
    /// `event_positions`' row, so two replicas never give out one position twice.
    async fn number_committed(&self, limit: u64) -> Result<u64, MarketingError>;

    /// Deletes the oldest numbered batches, up to `limit`, in position order, as long as
    /// their events were recorded before `before`; raises each tenant's `expired_through` to
    /// its last event deleted. How many events were deleted.
    async fn delete_expired(&self, before: UnixMicros, limit: u64) -> Result<u64, MarketingError>;
}

/// The events as one connection sees them (SeaORM, on PostgreSQL and SQLite alike).
pub struct Events<'c, C>(pub(crate) &'c C);

fn batch_of_event() -> RelationDef {
    event::Entity::belongs_to(batch::Entity)
        .from(event::Column::BatchId)
        .to(batch::Column::Id)
        .into()
}

impl<C: ConnectionTrait> EventReads for Events<'_, C> {
    async fn list(
        &self,
        tenant: &TenantId,
        after: i64,
        filter: &EventFilter,
        limit: u64,
    ) -> Result<Vec<StoredEvent>, MarketingError> {
        numbered(self.0, Some(tenant), after, filter, limit).await
    }

    async fn list_all(&self, after: i64, limit: u64) -> Result<Vec<StoredEvent>, MarketingError> {
        numbered(self.0, None, after, &EventFilter::default(), limit).await
    }

    async fn any_unnumbered(&self) -> Result<bool, MarketingError> {
        let first: Option<Uuid> = batch::Entity::find()
            .select_only()
            .column(batch::Column::Id)
            .filter(batch::Column::Position.is_null())
            .order_by_asc(batch::Column::Id)
            .into_tuple()
            .one(self.0)
            .await
            .map_err(db_error)?;
        Ok(first.is_some())
    }

    async fn last_numbered(&self) -> Result<i64, MarketingError> {
        use crate::entity::event_position as last;
        let last: Option<i64> = last::Entity::find_by_id(1)
            .select_only()
            .column(last::Column::Last)
            .into_tuple()
            .one(self.0)
            .await
            .map_err(db_error)?;
        last.ok_or_else(|| MarketingError::internal("event_positions has no row"))
    }

    async fn expired_through(&self, tenant: &TenantId) -> Result<i64, MarketingError> {
        use crate::entity::event_expiry as expiry;
        let mark: Option<i64> = expiry::Entity::find_by_id(tenant.as_str())
            .select_only()
            .column(expiry::Column::ExpiredThrough)
            .into_tuple()
            .one(self.0)
            .await
            .map_err(db_error)?;
        Ok(mark.unwrap_or(0))
    }
}

/// Up to `limit` numbered events after `after` (of `tenant`, or of every tenant), in
/// position order.
async fn numbered(
    conn: &impl ConnectionTrait,
    tenant: Option<&TenantId>,
    after: i64,
    filter: &EventFilter,
    limit: u64,
) -> Result<Vec<StoredEvent>, MarketingError> {
    let (after_batch, after_seq) = (after.div_euclid(SEQ_SPAN), after.rem_euclid(SEQ_SPAN));
    // The columns in the order `numbered_of` reads them.
    let mut query = event::Entity::find()
        .select_only()
        .column_as(batch::Column::Position, "batch_position")
        .columns([
            event::Column::Seq,
            event::Column::Id,
            event::Column::TenantId,
            event::Column::EventType,
            event::Column::AggregateType,
            event::Column::AggregateId,
            event::Column::MemberId,
            event::Column::OccurredAt,
            event::Column::RequestId,
            event::Column::Actor,
            event::Column::Payload,
        ])
        .join(JoinType::InnerJoin, batch_of_event())
        // The range the position index is walked from (the condition below alone, an OR,
        // is only a filter: every read would walk the index from its first batch).
        .filter(batch::Column::Position.gte(after_batch))
        .filter(
            Condition::any()
                .add(batch::Column::Position.gt(after_batch))
                .add(
                    Condition::all()
                        .add(batch::Column::Position.eq(after_batch))
                        .add(event::Column::Seq.gt(after_seq as i32)),
                ),
        );
    if let Some(tenant) = tenant {
        query = query.filter(batch::Column::TenantId.eq(tenant.as_str()));
    }
    if !filter.types.is_empty() {
        query = query.filter(event::Column::EventType.is_in(filter.types.iter().cloned()));
    }
    if let Some((kind, id)) = &filter.aggregate {
        query = query
            .filter(event::Column::TenantId.eq(tenant.map_or("", TenantId::as_str)))
            .filter(event::Column::AggregateType.eq(kind.as_str()))
            .filter(event::Column::AggregateId.eq(id.as_str()));
    }
    let query = query
        .order_by_asc(batch::Column::Position)
        .order_by_asc(event::Column::Seq)
        .limit(limit);
    let statement = sea_orm::QueryTrait::build(&query, conn.get_database_backend());
    conn.query_all_raw(statement)
        .await
        .map_err(db_error)?
        .iter()
        .map(|row| numbered_of(row).map_err(db_error))
        .collect()
}

/// A row of [`numbered`]'s query, read by position ([`RowReader`]: the relay and the streams
/// read every event once, and SeaORM's reading by name formats a message for every NULL).
fn numbered_of(row: &sea_orm::QueryResult) -> Result<StoredEvent, sea_orm::DbErr> {
    let mut r = RowReader::new(row);
    let batch_position: i64 = r.next("batch_position")?;
    let seq: i32 = r.next("seq")?;
    Ok(StoredEvent {
        position: batch_position * SEQ_SPAN + i64::from(seq),
        id: r.next("id")?,
        tenant_id: r.next("tenant_id")?,
        event_type: r.next("event_type")?,
        aggregate_type: r.next("aggregate_type")?,
        aggregate_id: r.next("aggregate_id")?,
        member_id: r.next("member_id")?,
        occurred_at: UnixMicros(r.next("occurred_at")?),
        request_id: r.next("request_id")?,
        actor: r.next("actor")?,
        payload: r.next("payload")?,
    })
}

/// The update that numbers batches: `v` holds (id, position).
const NUMBER: ValuesUpdate<'static> = ValuesUpdate {
    table: "event_batches",
    columns: &[("id", "Uuid"), ("position", "i64")],
    set: "position = v.position",
    condition: "event_batches.id = v.key AND event_batches.position IS NULL",
};

impl EventStore for Events<'_, DatabaseTransaction> {
    async fn number_committed(&self, limit: u64) -> Result<u64, MarketingError> {
        use crate::entity::event_position as last;
        // The lock every numbering unit waits on (a SQLite write transaction excludes the
        // others already).
        let Some(row) = last::Entity::find_by_id(1)
            .lock_exclusive()
            .one(self.0)
            .await
            .map_err(db_error)?
        else {
            return Err(MarketingError::internal("event_positions has no row"));
        };
        // Read after the lock: every batch committed before the last numbering is numbered.
        let ids: Vec<Uuid> = batch::Entity::find()
            .select_only()
            .column(batch::Column::Id)
            .filter(batch::Column::Position.is_null())
            .order_by_asc(batch::Column::Id)
            .limit(limit)
            .into_tuple()
            .all(self.0)
            .await
            .map_err(db_error)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let count = ids.len() as i64;
        let rows = ids
            .into_iter()
            .zip(row.last + 1..)
            .map(|(id, position)| vec![id.into(), position.into()])
            .collect();
        let numbered = NUMBER.execute(self.0, rows).await?.len() as i64;
        if numbered != count {
            return Err(MarketingError::ConcurrentModification(
                "event batches were numbered under the sequencer".into(),
            ));
        }
        last::Entity::update_many()
            .col_expr(last::Column::Last, Expr::value(row.last + count))
            .filter(last::Column::Id.eq(1))
            .exec(self.0)
            .await
            .map_err(db_error)?;
        Ok(count as u64)
    }

    async fn delete_expired(&self, before: UnixMicros, limit: u64) -> Result<u64, MarketingError> {
        use crate::entity::{event_expiry as expiry, event_position as last};
        use sea_orm::sea_query::OnConflict;
        // One retention unit at a time across replicas (the sequencer waits for it briefly).
        last::Entity::find_by_id(1)
            .lock_exclusive()
            .one(self.0)
            .await
            .map_err(db_error)?;
        // The oldest batches, each with when its first event was recorded.
        let oldest: Vec<(Uuid, String, i64, i64)> = batch::Entity::find()
            .select_only()
            .column(batch::Column::Id)
            .column(batch::Column::TenantId)
            .column(batch::Column::Position)
            .column(event::Column::OccurredAt)
            .join(JoinType::InnerJoin, batch_of_event().rev())
            .filter(event::Column::Seq.eq(1))
            .filter(batch::Column::Position.is_not_null())
            .order_by_asc(batch::Column::Position)
            .limit(limit)
            .into_tuple()
            .all(self.0)
            .await
            .map_err(db_error)?;
        // Only a prefix: readers are refused below each tenant's last position deleted, so
        // nothing after a kept batch may go.
        let expired: Vec<(Uuid, String, i64)> = oldest
            .into_iter()
            .take_while(|(_, _, _, at)| *at < before.0)
            .map(|(id, tenant, position, _)| (id, tenant, position))
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        // Each tenant's last batch deleted, and its last event.
        let mut last_of: BTreeMap<&str, (Uuid, i64)> = BTreeMap::new();
        for (id, tenant, position) in &expired {
            last_of.insert(tenant.as_str(), (*id, *position));
        }
        let last_seqs: Vec<(Uuid, Option<i32>)> = event::Entity::find()
            .select_only()
            .column(event::Column::BatchId)
            .column_as(event::Column::Seq.max(), "seq")
            .filter(event::Column::BatchId.is_in(last_of.values().map(|(id, _)| *id)))
            .group_by(event::Column::BatchId)
            .into_tuple()
            .all(self.0)
            .await
            .map_err(db_error)?;
        let marks: Vec<expiry::ActiveModel> = last_of
            .iter()
            .map(|(tenant, (id, position))| {
                let seq = last_seqs
                    .iter()
                    .find(|(batch, _)| batch == id)
                    .and_then(|(_, seq)| *seq)
                    .unwrap_or(0);
                expiry::ActiveModel {
                    tenant_id: sea_orm::Set((*tenant).to_owned()),
                    expired_through: sea_orm::Set(position * SEQ_SPAN + i64::from(seq)),
                }
            })
            .collect();
        let ids: Vec<Uuid> = expired.iter().map(|(id, _, _)| *id).collect();
        let deleted = event::Entity::delete_many()
            .filter(event::Column::BatchId.is_in(ids.iter().copied()))
            .exec(self.0)
            .await
            .map_err(db_error)?
            .rows_affected;
        batch::Entity::delete_many()
            .filter(batch::Column::Id.is_in(ids))
            .exec(self.0)
            .await
            .map_err(db_error)?;
        // Positions only grow, so a later deletion's mark is always the larger.
        expiry::Entity::insert_many(marks)
            .on_conflict(
                OnConflict::column(expiry::Column::TenantId)
                    .update_column(expiry::Column::ExpiredThrough)
                    .to_owned(),
            )
            .exec(self.0)
            .await
            .map_err(db_error)?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tenant: &str, aggregate: &str) -> NewEvent {
        NewEvent {
            tenant_id: TenantId::parse("tenant_id", tenant).expect("tenant"),
            event_type: "coupon.claimed",
            aggregate_type: "user_coupon",
            aggregate_id: aggregate.into(),
            member_id: None,
            occurred_at: UnixMicros(1),
            request_id: None,
            actor: None,
            payload: vec![1],
        }
    }

    #[test]
    fn a_units_events_are_one_batch_per_tenant_numbered_in_order() {
        let (batches, rows) = rows_of(vec![
            event("acme", "a1"),
            event("globex", "g1"),
            event("acme", "a2"),
        ]);
        assert_eq!(batches.len(), 2);
        assert!(batches.iter().all(|b| b.position.is_none()));
        let acme = batches
            .iter()
            .find(|b| b.tenant_id == "acme")
            .expect("acme");
        let numbered: Vec<(i32, &str)> = rows
            .iter()
            .filter(|r| r.batch_id == acme.id)
            .map(|r| (r.seq, r.aggregate_id.as_str()))
            .collect();
        assert_eq!(numbered, [(1, "a1"), (2, "a2")], "in the order recorded");
        assert!(rows.iter().all(|r| {
            let batch = batches
                .iter()
                .find(|b| b.id == r.batch_id)
                .expect("its batch");
            batch.tenant_id == r.tenant_id
        }));
    }
}
