//! The outbox. A change records its events in its unit of work ([`crate::unit::UnitOfWork::
//! record`]), written with the change or not at all, without a position. The sequencer
//! ([`EventStore::number_committed`]) numbers committed events afterwards, one unit at a time
//! under the lock of `event_positions`' one row, so positions grow in the order readers can
//! see them; readers read numbered events only. See migration `m20261207_000011_events`.

use marketing_domain::{MarketingError, TenantId, UnixMicros};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    db::{ValuesUpdate, db_error},
    entity::event,
};

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

impl NewEvent {
    pub(crate) fn into_row(self) -> event::Model {
        event::Model {
            id: Uuid::now_v7(),
            tenant_id: self.tenant_id.as_str().to_owned(),
            position: None,
            event_type: self.event_type.to_owned(),
            aggregate_type: self.aggregate_type.to_owned(),
            aggregate_id: self.aggregate_id,
            member_id: self.member_id,
            occurred_at: self.occurred_at.0,
            request_id: self.request_id,
            actor: self.actor,
            payload: self.payload,
        }
    }
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

    /// Whether any committed event waits for its position (a cheap look before a unit).
    async fn any_unnumbered(&self) -> Result<bool, MarketingError>;
}

/// The sequencer's write: inside a unit of work only.
#[allow(async_fn_in_trait)]
pub trait EventStore: EventReads {
    /// Numbers up to `limit` committed events that have no position yet, after the last
    /// position given, in id order; how many. Units doing this wait for each other on
    /// `event_positions`' row, so two replicas never give out one position twice.
    async fn number_committed(&self, limit: u64) -> Result<u64, MarketingError>;
}

/// The events as one connection sees them (SeaORM, on PostgreSQL and SQLite alike).
pub struct Events<'c, C>(pub(crate) &'c C);

impl<C: ConnectionTrait> EventReads for Events<'_, C> {
    async fn list(
        &self,
        tenant: &TenantId,
        after: i64,
        filter: &EventFilter,
        limit: u64,
    ) -> Result<Vec<StoredEvent>, MarketingError> {
        let mut query = event::Entity::find()
            .filter(event::Column::TenantId.eq(tenant.as_str()))
            .filter(event::Column::Position.gt(after));
        if !filter.types.is_empty() {
            query = query.filter(event::Column::EventType.is_in(filter.types.iter().cloned()));
        }
        if let Some((kind, id)) = &filter.aggregate {
            query = query
                .filter(event::Column::AggregateType.eq(kind.as_str()))
                .filter(event::Column::AggregateId.eq(id.as_str()));
        }
        let rows = query
            .order_by_asc(event::Column::Position)
            .limit(limit)
            .all(self.0)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().filter_map(stored).collect())
    }

    async fn any_unnumbered(&self) -> Result<bool, MarketingError> {
        let first: Option<Uuid> = event::Entity::find()
            .select_only()
            .column(event::Column::Id)
            .filter(event::Column::Position.is_null())
            .order_by_asc(event::Column::Id)
            .into_tuple()
            .one(self.0)
            .await
            .map_err(db_error)?;
        Ok(first.is_some())
    }
}

/// The update that numbers events: `v` holds (id, position).
const NUMBER: ValuesUpdate<'static> = ValuesUpdate {
    table: "events",
    columns: &[("id", "Uuid"), ("position", "i64")],
    set: "position = v.position",
    condition: "events.id = v.key AND events.position IS NULL",
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
        // Read after the lock: every event committed before the last numbering is numbered.
        let ids: Vec<Uuid> = event::Entity::find()
            .select_only()
            .column(event::Column::Id)
            .filter(event::Column::Position.is_null())
            .order_by_asc(event::Column::Id)
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
                "events were numbered under the sequencer".into(),
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

fn stored(row: event::Model) -> Option<StoredEvent> {
    Some(StoredEvent {
        position: row.position?,
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
}
