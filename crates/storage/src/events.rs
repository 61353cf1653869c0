//! The outbox. A change records its events in its unit of work
//! ([`crate::unit::UnitOfWork::record`]): written with the change or not at all, grouped per
//! tenant into a batch without a position, its events packed into one body row
//! (`marketing_migration::event_format`). The sequencer ([`EventStore::number_committed`])
//! numbers committed batches afterwards, one unit at a time under the lock of
//! `event_positions`' one row, so positions grow in the order readers can see them; readers
//! read numbered batches only. An event's position is its batch's x [`SEQ_SPAN`] + its seq.
//! See migrations `m20261207_000011_events` and `m20261207_000014_packed_events`.

use std::collections::BTreeMap;

use marketing_domain::{MarketingError, TenantId, UnixMicros, events::EVENT_TYPES};
use marketing_migration::event_format::{PackedEvent, aggregate_key, pack, unpack};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, JoinType,
    QueryFilter, QueryOrder, QuerySelect, RelationDef,
    sea_query::{Expr, ExprTrait},
};
use uuid::Uuid;

use crate::{
    db::{RowReader, ValuesUpdate, db_error},
    entity::{event_aggregate as aggregate, event_batch as batch, event_body as body},
};

/// An event's position is its batch's x this + its seq.
pub const SEQ_SPAN: i64 = 1 << 16;

/// Events one batch holds at most (a change with more writes several batches): what a reader
/// decodes to reach one event stays small.
pub const BATCH_EVENTS: usize = 1_000;

/// Batches a read fetches at a time.
const READ_BATCHES: u64 = 16;

/// The bit of `type_mask` of event type `name`: its index in [`EVENT_TYPES`], or bit 62 for a
/// name not there (readers filtering on it read those batches too, and filter as they
/// decode).
fn type_bit(name: &str) -> i64 {
    let index = EVENT_TYPES
        .iter()
        .position(|known| *known == name)
        .unwrap_or(62);
    1_i64 << index.min(62)
}

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

/// The rows a unit's events are written as.
#[derive(Debug, Default)]
pub(crate) struct EventRows {
    pub batches: Vec<batch::Model>,
    pub bodies: Vec<body::Model>,
}

impl EventRows {
    /// The rows of SQLite's `event_aggregates`, one per aggregate of each body (PostgreSQL
    /// indexes the bodies' `aggregates` instead).
    pub(crate) fn aggregate_rows(&self) -> Vec<aggregate::Model> {
        self.bodies
            .iter()
            .flat_map(|body| {
                body.aggregates
                    .split(' ')
                    .filter(|key| !key.is_empty())
                    .map(|key| aggregate::Model {
                        aggregate: key.to_owned(),
                        batch_id: body.batch_id,
                    })
            })
            .collect()
    }
}

/// The rows of a unit's events, in the order recorded: one batch per tenant (and per
/// [`BATCH_EVENTS`] events), each event numbered in its batch from 1.
pub(crate) fn rows_of(events: Vec<NewEvent>) -> EventRows {
    // The diagnostic build that measures what events cost writes none.
    #[cfg(feature = "diagnostic-no-events")]
    let events: Vec<NewEvent> = {
        drop(events);
        Vec::new()
    };
    let mut by_tenant: BTreeMap<TenantId, Vec<NewEvent>> = BTreeMap::new();
    for event in events {
        by_tenant
            .entry(event.tenant_id.clone())
            .or_default()
            .push(event);
    }
    let mut rows = EventRows::default();
    for (tenant, events) in by_tenant {
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let chunk: Vec<NewEvent> = events.by_ref().take(BATCH_EVENTS).collect();
            let id = Uuid::now_v7();
            let mut keys: Vec<String> = chunk
                .iter()
                .map(|event| aggregate_key(event.aggregate_type, &event.aggregate_id))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            rows.batches.push(batch::Model {
                id,
                tenant_id: tenant.as_str().to_owned(),
                position: None,
                first_at: chunk.first().map_or(0, |event| event.occurred_at.0),
                type_mask: chunk
                    .iter()
                    .fold(0, |mask, event| mask | type_bit(event.event_type)),
                event_count: chunk.len() as i32,
            });
            rows.bodies.push(body::Model {
                batch_id: id,
                events: pack(chunk.into_iter().map(packed).collect()),
                aggregates: keys.join(" "),
            });
        }
    }
    rows
}

fn packed(event: NewEvent) -> PackedEvent {
    PackedEvent {
        id: Uuid::now_v7().as_bytes().to_vec(),
        event_type: event.event_type.to_owned(),
        aggregate_type: event.aggregate_type.to_owned(),
        aggregate_id: event.aggregate_id,
        member_id: event.member_id,
        occurred_at: event.occurred_at.0,
        request_id: event.request_id,
        actor: event.actor,
        payload: event.payload,
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

    /// Up to `limit` numbered events of every tenant after position `after`, in position
    /// order (the relay's read).
    async fn list_all(&self, after: i64, limit: u64) -> Result<Vec<StoredEvent>, MarketingError>;

    /// Whether any committed batch waits for its position (a cheap look before a unit).
    async fn any_unnumbered(&self) -> Result<bool, MarketingError>;

    /// The last batch position the sequencer gave out.
    async fn last_numbered(&self) -> Result<i64, MarketingError>;

    /// The batches numbered after batch position `after` (up to `limit`, in position order),
    /// as each one's tenant and position: what a replica's streams wake on.
    async fn numbered_since(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<(String, i64)>, MarketingError>;

    /// The largest position of `tenant`'s events that retention deleted (0: none).
    async fn expired_through(&self, tenant: &TenantId) -> Result<i64, MarketingError>;

    /// What waits in the outbox, counting at most `limit` batches of each kind: events not
    /// numbered yet, and (given the relay's cursor, an event position) events numbered after
    /// it, with when the oldest of those was recorded.
    async fn backlog(&self, relayed: Option<i64>, limit: u64) -> Result<Backlog, MarketingError>;
}

/// What [`EventReads::backlog`] counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub unnumbered: u64,
    pub unrelayed: u64,
    /// When the oldest event not relayed yet was recorded (numbered or not).
    pub oldest_unrelayed: Option<UnixMicros>,
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

fn body_of_batch() -> RelationDef {
    batch::Entity::belongs_to(body::Entity)
        .from(batch::Column::Id)
        .to(body::Column::BatchId)
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

    async fn numbered_since(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<(String, i64)>, MarketingError> {
        batch::Entity::find()
            .select_only()
            .columns([batch::Column::TenantId, batch::Column::Position])
            .filter(batch::Column::Position.gt(after))
            .order_by_asc(batch::Column::Position)
            .limit(limit)
            .into_tuple()
            .all(self.0)
            .await
            .map_err(db_error)
    }

    async fn backlog(&self, relayed: Option<i64>, limit: u64) -> Result<Backlog, MarketingError> {
        let waiting: Vec<(i32, i64)> = batch::Entity::find()
            .select_only()
            .columns([batch::Column::EventCount, batch::Column::FirstAt])
            .filter(batch::Column::Position.is_null())
            .order_by_asc(batch::Column::Id)
            .limit(limit)
            .into_tuple()
            .all(self.0)
            .await
            .map_err(db_error)?;
        let mut backlog = Backlog {
            unnumbered: waiting.iter().map(|(count, _)| *count as u64).sum(),
            oldest_unrelayed: waiting.iter().map(|(_, at)| UnixMicros(*at)).min(),
            ..Backlog::default()
        };
        let Some(cursor) = relayed else {
            return Ok(backlog);
        };
        // The cursor's own batch counts with what is left of it.
        let (through_batch, through_seq) =
            (cursor.div_euclid(SEQ_SPAN), cursor.rem_euclid(SEQ_SPAN));
        let numbered: Vec<(i64, i32, i64)> = batch::Entity::find()
            .select_only()
            .columns([
                batch::Column::Position,
                batch::Column::EventCount,
                batch::Column::FirstAt,
            ])
            .filter(batch::Column::Position.gte(through_batch))
            .order_by_asc(batch::Column::Position)
            .limit(limit)
            .into_tuple()
            .all(self.0)
            .await
            .map_err(db_error)?;
        for (position, count, first_at) in numbered {
            let left = if position == through_batch {
                Ord::max(i64::from(count) - through_seq, 0)
            } else {
                i64::from(count)
            };
            if left > 0 {
                backlog.unrelayed += left as u64;
                let at = UnixMicros(first_at);
                backlog.oldest_unrelayed = Some(
                    backlog
                        .oldest_unrelayed
                        .map_or(at, |oldest| Ord::min(oldest, at)),
                );
            }
        }
        Ok(backlog)
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
/// position order: their batches are read [`READ_BATCHES`] at a time (those that hold a type
/// or the aggregate asked for, by their mask and aggregates) and decoded.
async fn numbered(
    conn: &impl ConnectionTrait,
    tenant: Option<&TenantId>,
    after: i64,
    filter: &EventFilter,
    limit: u64,
) -> Result<Vec<StoredEvent>, MarketingError> {
    let mut events = Vec::new();
    let (after_batch, after_seq) = (after.div_euclid(SEQ_SPAN), after.rem_euclid(SEQ_SPAN));
    let mut from_batch = after_batch;
    let wanted = |event: &PackedEvent| {
        (filter.types.is_empty() || filter.types.contains(&event.event_type))
            && filter
                .aggregate
                .as_ref()
                .is_none_or(|(kind, id)| *kind == event.aggregate_type && *id == event.aggregate_id)
    };
    while (events.len() as u64) < limit {
        let mut query = batch::Entity::find()
            .select_only()
            .columns([batch::Column::Position, batch::Column::TenantId])
            .column(body::Column::Events)
            .join(JoinType::InnerJoin, body_of_batch())
            .filter(batch::Column::Position.gte(from_batch));
        if let Some(tenant) = tenant {
            query = query.filter(batch::Column::TenantId.eq(tenant.as_str()));
        }
        if !filter.types.is_empty() {
            let mask = filter.types.iter().fold(0, |mask, t| mask | type_bit(t));
            query = query.filter(
                Expr::col((batch::Entity, batch::Column::TypeMask))
                    .bit_and(mask)
                    .ne(0),
            );
        }
        if let Some((kind, id)) = &filter.aggregate {
            let key = aggregate_key(kind, id);
            query = query.filter(match conn.get_database_backend() {
                DbBackend::Postgres => Expr::cust_with_values(
                    // (No brackets: sea-query would read `[..]` as a quoted name.)
                    "string_to_array(event_bodies.aggregates, ' ') @> string_to_array($1, ' ')",
                    [key],
                ),
                _ => Expr::cust_with_values(
                    "event_batches.id IN (SELECT batch_id FROM event_aggregates \
                     WHERE aggregate = ?)",
                    [key],
                ),
            });
        }
        let query = query
            .order_by_asc(batch::Column::Position)
            .limit(READ_BATCHES);
        let statement = sea_orm::QueryTrait::build(&query, conn.get_database_backend());
        let rows = conn.query_all_raw(statement).await.map_err(db_error)?;
        for row in &rows {
            let mut r = RowReader::new(row);
            let position: i64 = r.next("position").map_err(db_error)?;
            let tenant_id: String = r.next("tenant_id").map_err(db_error)?;
            let body: Vec<u8> = r.next("events").map_err(db_error)?;
            let packed = unpack(&body).map_err(|err| {
                MarketingError::internal(format!("event batch {position} does not decode: {err}"))
            })?;
            for (index, event) in packed.into_iter().enumerate() {
                let seq = index as i64 + 1;
                if (position == after_batch && seq <= after_seq) || !wanted(&event) {
                    continue;
                }
                events.push(stored(position * SEQ_SPAN + seq, &tenant_id, event)?);
                if events.len() as u64 == limit {
                    return Ok(events);
                }
            }
            from_batch = position + 1;
        }
        if (rows.len() as u64) < READ_BATCHES {
            break;
        }
    }
    Ok(events)
}

fn stored(position: i64, tenant: &str, event: PackedEvent) -> Result<StoredEvent, MarketingError> {
    Ok(StoredEvent {
        position,
        id: Uuid::from_slice(&event.id)
            .map_err(|err| MarketingError::internal(format!("event {position}'s id: {err}")))?,
        tenant_id: tenant.to_owned(),
        event_type: event.event_type,
        aggregate_type: event.aggregate_type,
        aggregate_id: event.aggregate_id,
        member_id: event.member_id,
        occurred_at: UnixMicros(event.occurred_at),
        request_id: event.request_id,
        actor: event.actor,
        payload: event.payload,
    })
}

/// The update that numbers batches: `v` holds (id, position).
const NUMBER: ValuesUpdate<'static> = ValuesUpdate {
    table: "event_batches",
    columns: &[("id", "Uuid"), ("position", "i64")],
    set: "position = v.position",
    condition: "event_batches.id = v.key AND event_batches.position IS NULL",
    returning: "id",
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
        let oldest: Vec<(Uuid, String, i64, i64, i32)> = batch::Entity::find()
            .select_only()
            .columns([
                batch::Column::Id,
                batch::Column::TenantId,
                batch::Column::Position,
                batch::Column::FirstAt,
                batch::Column::EventCount,
            ])
            .filter(batch::Column::Position.is_not_null())
            .order_by_asc(batch::Column::Position)
            .limit(limit)
            .into_tuple()
            .all(self.0)
            .await
            .map_err(db_error)?;
        // Only a prefix: readers are refused below each tenant's last position deleted, so
        // nothing after a kept batch may go.
        let expired: Vec<(Uuid, String, i64, i32)> = oldest
            .into_iter()
            .take_while(|(_, _, _, at, _)| *at < before.0)
            .map(|(id, tenant, position, _, count)| (id, tenant, position, count))
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        // Each tenant's last event deleted.
        let mut last_of: BTreeMap<&str, i64> = BTreeMap::new();
        for (_, tenant, position, count) in &expired {
            last_of.insert(tenant.as_str(), position * SEQ_SPAN + i64::from(*count));
        }
        let marks: Vec<expiry::ActiveModel> = last_of
            .iter()
            .map(|(tenant, through)| expiry::ActiveModel {
                tenant_id: sea_orm::Set((*tenant).to_owned()),
                expired_through: sea_orm::Set(*through),
            })
            .collect();
        let deleted = expired
            .iter()
            .map(|(_, _, _, count)| u64::try_from(*count).unwrap_or(0))
            .sum();
        let ids: Vec<Uuid> = expired.iter().map(|(id, ..)| *id).collect();
        if self.0.get_database_backend() != DbBackend::Postgres {
            aggregate::Entity::delete_many()
                .filter(aggregate::Column::BatchId.is_in(ids.iter().copied()))
                .exec(self.0)
                .await
                .map_err(db_error)?;
        }
        body::Entity::delete_many()
            .filter(body::Column::BatchId.is_in(ids.iter().copied()))
            .exec(self.0)
            .await
            .map_err(db_error)?;
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
        let rows = rows_of(vec![
            event("acme", "a1"),
            event("globex", "g1"),
            event("acme", "a2"),
        ]);
        assert_eq!(rows.batches.len(), 2);
        assert!(rows.batches.iter().all(|b| b.position.is_none()));
        let acme = rows
            .batches
            .iter()
            .find(|b| b.tenant_id == "acme")
            .expect("acme");
        assert_eq!(acme.event_count, 2);
        assert_eq!(acme.type_mask, type_bit("coupon.claimed"));
        let body = rows
            .bodies
            .iter()
            .find(|b| b.batch_id == acme.id)
            .expect("its body");
        let numbered: Vec<String> = unpack(&body.events)
            .expect("decodes")
            .into_iter()
            .map(|e| e.aggregate_id)
            .collect();
        assert_eq!(numbered, ["a1", "a2"], "in the order recorded");
        assert_eq!(body.aggregates, "user_coupon/a1 user_coupon/a2");
        assert_eq!(rows.aggregate_rows().len(), 3);
    }

    #[test]
    fn a_large_unit_is_several_batches_and_every_type_has_its_own_bit() {
        let many = (0..2 * BATCH_EVENTS + 1)
            .map(|i| event("acme", &format!("a{i}")))
            .collect();
        let rows = rows_of(many);
        let counts: Vec<i32> = rows.batches.iter().map(|b| b.event_count).collect();
        assert_eq!(counts, [1000, 1000, 1]);
        let bits: std::collections::BTreeSet<i64> =
            EVENT_TYPES.iter().map(|t| type_bit(t)).collect();
        assert_eq!(bits.len(), EVENT_TYPES.len(), "no two types share a bit");
        assert!(
            !bits.contains(&type_bit("no.such")),
            "62 is the others' bit"
        );
    }
}
