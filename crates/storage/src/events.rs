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
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, FromQueryResult,
    JoinType, QueryFilter, QueryOrder, QuerySelect, RelationDef, sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    db::{ValuesUpdate, db_error},
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

    /// Whether any committed batch waits for its position (a cheap look before a unit).
    async fn any_unnumbered(&self) -> Result<bool, MarketingError>;
}

/// The sequencer's write: inside a unit of work only.
#[allow(async_fn_in_trait)]
pub trait EventStore: EventReads {
    /// Numbers up to `limit` committed batches that have no position yet, after the last
    /// position given, in id order; how many. Units doing this wait for each other on
    /// `event_positions`' row, so two replicas never give out one position twice.
    async fn number_committed(&self, limit: u64) -> Result<u64, MarketingError>;
}

/// The events as one connection sees them (SeaORM, on PostgreSQL and SQLite alike).
pub struct Events<'c, C>(pub(crate) &'c C);

/// An event row with its batch's position.
#[derive(FromQueryResult)]
struct Numbered {
    batch_position: i64,
    seq: i32,
    id: Uuid,
    tenant_id: String,
    event_type: String,
    aggregate_type: String,
    aggregate_id: String,
    member_id: Option<String>,
    occurred_at: i64,
    request_id: Option<String>,
    actor: Option<String>,
    payload: Vec<u8>,
}

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
        let (after_batch, after_seq) = (after.div_euclid(SEQ_SPAN), after.rem_euclid(SEQ_SPAN));
        let mut query = event::Entity::find()
            .join(JoinType::InnerJoin, batch_of_event())
            .column_as(batch::Column::Position, "batch_position")
            .filter(batch::Column::TenantId.eq(tenant.as_str()))
            .filter(
                Condition::any()
                    .add(batch::Column::Position.gt(after_batch))
                    .add(
                        Condition::all()
                            .add(batch::Column::Position.eq(after_batch))
                            .add(event::Column::Seq.gt(after_seq as i32)),
                    ),
            );
        if !filter.types.is_empty() {
            query = query.filter(event::Column::EventType.is_in(filter.types.iter().cloned()));
        }
        if let Some((kind, id)) = &filter.aggregate {
            query = query
                .filter(event::Column::TenantId.eq(tenant.as_str()))
                .filter(event::Column::AggregateType.eq(kind.as_str()))
                .filter(event::Column::AggregateId.eq(id.as_str()));
        }
        let rows = query
            .order_by_asc(batch::Column::Position)
            .order_by_asc(event::Column::Seq)
            .limit(limit)
            .into_model::<Numbered>()
            .all(self.0)
            .await
            .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|row| StoredEvent {
                position: row.batch_position * SEQ_SPAN + i64::from(row.seq),
                id: row.id,
                tenant_id: row.tenant_id,
                event_type: row.event_type,
                aggregate_type: row.aggregate_type,
                aggregate_id: row.aggregate_id,
                member_id: row.member_id,
                occurred_at: UnixMicros(row.occurred_at),
                request_id: row.request_id,
                actor: row.actor,
                payload: row.payload,
            })
            .collect())
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
