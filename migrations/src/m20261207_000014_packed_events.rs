//! A batch's events become one row, `event_bodies` (the batch's events packed into one
//! message, `crate::event_format`), instead of a row per event: a change pays one row and one
//! index entry for all its events, not a row and two index entries for each (on the hot claim
//! path events had made each batch's transaction a fifth longer).
//!
//! What readers filter on moves to the batch: `event_batches.type_mask` (a bit per event type
//! it holds, by the type's index in `EVENT_TYPES`; all bits for batches converted here),
//! `first_at` (its first event's time, for retention) and `event_count`; `event_bodies.aggregates`
//! lists the aggregates it touched (`type/id`, space-separated), which an audit trail finds
//! through a GIN index on PostgreSQL and through `event_aggregates` (a row per aggregate,
//! written on SQLite only) on SQLite. Existing events are converted, batch by batch.

use sea_orm::{ConnectionTrait, DbBackend, prelude::Uuid};
use sea_orm_migration::{prelude::*, schema::*};

use crate::event_format::{PackedEvent, aggregate_key, pack, unpack};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventBatches {
    Table,
    Id,
    FirstAt,
    TypeMask,
    EventCount,
}

#[derive(DeriveIden)]
enum EventBodies {
    Table,
    BatchId,
    Events,
    Aggregates,
}

#[derive(DeriveIden)]
enum EventAggregates {
    Table,
    Aggregate,
    BatchId,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    BatchId,
    Seq,
    Id,
    TenantId,
    EventType,
    AggregateType,
    AggregateId,
    MemberId,
    OccurredAt,
    RequestId,
    Actor,
    Payload,
}

/// Batches converted per round.
const CHUNK: u64 = 500;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        // One column per statement: SQLite alters one at a time.
        for column in [
            big_integer(EventBatches::FirstAt).default(0).to_owned(),
            big_integer(EventBatches::TypeMask).default(-1).to_owned(),
            integer(EventBatches::EventCount).default(0).to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(EventBatches::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(EventBodies::Table)
                    .col(uuid(EventBodies::BatchId).primary_key())
                    .col(blob(EventBodies::Events))
                    .col(text(EventBodies::Aggregates))
                    .to_owned(),
            )
            .await?;
        if backend == DbBackend::Postgres {
            crate::execute_all(
                manager,
                &[
                    // Bodies are written once, never updated: the pending list takes a body's
                    // keys in one write, merged into the index in bulk.
                    "CREATE INDEX idx_event_bodies_aggregates ON event_bodies \
                     USING gin (string_to_array(aggregates, ' '))",
                    // A claim batch's body (32 events, ~8.6 kB) compresses ~7x: kept in its
                    // row (no TOAST table writes) and compressed only when the row would not
                    // fit a page, with lz4 where the server has it (pglz on every body over
                    // 2 kB cost claim-hot ~3%).
                    "ALTER TABLE event_bodies SET (toast_tuple_target = 8160)",
                    "ALTER TABLE event_bodies ALTER COLUMN events SET STORAGE MAIN",
                    "DO $$ BEGIN \
                       ALTER TABLE event_bodies ALTER COLUMN events SET COMPRESSION lz4; \
                     EXCEPTION WHEN feature_not_supported THEN NULL; END $$",
                ],
            )
            .await?;
        } else {
            manager
                .create_table(
                    Table::create()
                        .table(EventAggregates::Table)
                        .col(string_len(EventAggregates::Aggregate, 100))
                        .col(uuid(EventAggregates::BatchId))
                        .primary_key(
                            Index::create()
                                .col(EventAggregates::Aggregate)
                                .col(EventAggregates::BatchId),
                        )
                        .to_owned(),
                )
                .await?;
        }
        convert(manager, backend).await?;
        manager
            .drop_table(Table::drop().table(Events::Table).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .col(uuid(Events::BatchId))
                    .col(integer(Events::Seq))
                    .col(uuid(Events::Id))
                    .col(string_len(Events::TenantId, 64))
                    .col(string_len(Events::EventType, 64))
                    .col(string_len(Events::AggregateType, 32))
                    .col(string_len(Events::AggregateId, 64))
                    .col(string_len_null(Events::MemberId, 64))
                    .col(big_integer(Events::OccurredAt))
                    .col(string_len_null(Events::RequestId, 128))
                    .col(string_len_null(Events::Actor, 340))
                    .col(blob(Events::Payload))
                    .primary_key(Index::create().col(Events::BatchId).col(Events::Seq))
                    .to_owned(),
            )
            .await?;
        crate::execute_all(
            manager,
            &["CREATE INDEX idx_events_aggregate ON events \
               (tenant_id, aggregate_type, aggregate_id)"],
        )
        .await?;
        unconvert(manager, backend).await?;
        if backend != DbBackend::Postgres {
            manager
                .drop_table(Table::drop().table(EventAggregates::Table).to_owned())
                .await?;
        }
        manager
            .drop_table(Table::drop().table(EventBodies::Table).to_owned())
            .await?;
        for column in [
            EventBatches::FirstAt,
            EventBatches::TypeMask,
            EventBatches::EventCount,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(EventBatches::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// The ids of the next `CHUNK` batches after `after`.
async fn next_batches(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    after: Uuid,
) -> Result<Vec<Uuid>, DbErr> {
    let select = Query::select()
        .column(EventBatches::Id)
        .from(EventBatches::Table)
        .and_where(Expr::col(EventBatches::Id).gt(after))
        .order_by(EventBatches::Id, Order::Asc)
        .limit(CHUNK)
        .to_owned();
    db.query_all_raw(backend.build(&select))
        .await?
        .iter()
        .map(|row| row.try_get::<Uuid>("", "id"))
        .collect()
}

/// Packs the rows of `events` into bodies, `CHUNK` batches at a time.
async fn convert(manager: &SchemaManager<'_>, backend: DbBackend) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let mut after = Uuid::nil();
    loop {
        let ids = next_batches(db, backend, after).await?;
        let Some(last) = ids.last() else {
            return Ok(());
        };
        after = *last;
        use Events as E;
        let select = Query::select()
            .columns([
                E::BatchId,
                E::Id,
                E::EventType,
                E::AggregateType,
                E::AggregateId,
                E::MemberId,
                E::OccurredAt,
                E::RequestId,
                E::Actor,
                E::Payload,
            ])
            .from(E::Table)
            .and_where(Expr::col(E::BatchId).is_in(ids))
            .order_by(E::BatchId, Order::Asc)
            .order_by(E::Seq, Order::Asc)
            .to_owned();
        let rows = db.query_all_raw(backend.build(&select)).await?;
        let mut batches: Vec<(Uuid, Vec<PackedEvent>)> = Vec::new();
        for row in &rows {
            let batch: Uuid = row.try_get("", "batch_id")?;
            let id: Uuid = row.try_get("", "id")?;
            let event = PackedEvent {
                id: id.as_bytes().to_vec(),
                event_type: row.try_get("", "event_type")?,
                aggregate_type: row.try_get("", "aggregate_type")?,
                aggregate_id: row.try_get("", "aggregate_id")?,
                member_id: row.try_get("", "member_id")?,
                occurred_at: row.try_get("", "occurred_at")?,
                request_id: row.try_get("", "request_id")?,
                actor: row.try_get("", "actor")?,
                payload: row.try_get("", "payload")?,
            };
            match batches.last_mut() {
                Some((id, events)) if *id == batch => events.push(event),
                _ => batches.push((batch, vec![event])),
            }
        }
        for (batch, events) in batches {
            let first_at = events.first().map_or(0, |event| event.occurred_at);
            let count = events.len() as i64;
            let mut aggregates: Vec<String> = events
                .iter()
                .map(|event| aggregate_key(&event.aggregate_type, &event.aggregate_id))
                .collect();
            aggregates.sort();
            aggregates.dedup();
            let insert = Query::insert()
                .into_table(EventBodies::Table)
                .columns([
                    EventBodies::BatchId,
                    EventBodies::Events,
                    EventBodies::Aggregates,
                ])
                .values_panic([
                    batch.into(),
                    pack(events).into(),
                    aggregates.join(" ").into(),
                ])
                .to_owned();
            db.execute_raw(backend.build(&insert)).await?;
            if backend != DbBackend::Postgres {
                for aggregate in aggregates {
                    let insert = Query::insert()
                        .into_table(EventAggregates::Table)
                        .columns([EventAggregates::Aggregate, EventAggregates::BatchId])
                        .values_panic([aggregate.into(), batch.into()])
                        .to_owned();
                    db.execute_raw(backend.build(&insert)).await?;
                }
            }
            let update = Query::update()
                .table(EventBatches::Table)
                .value(EventBatches::FirstAt, first_at)
                .value(EventBatches::EventCount, count)
                .and_where(Expr::col(EventBatches::Id).eq(batch))
                .to_owned();
            db.execute_raw(backend.build(&update)).await?;
        }
    }
}

/// Unpacks every body into rows of `events` (the way down).
async fn unconvert(manager: &SchemaManager<'_>, backend: DbBackend) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let mut after = Uuid::nil();
    loop {
        let ids = next_batches(db, backend, after).await?;
        let Some(last) = ids.last() else {
            return Ok(());
        };
        after = *last;
        let select = Query::select()
            .expr_as(Expr::col(("b", EventBatches::Id)), "id")
            .expr_as(Expr::col(("b", "tenant_id")), "tenant_id")
            .expr_as(Expr::col(("d", EventBodies::Events)), "events")
            .from_as(EventBatches::Table, "b")
            .join_as(
                JoinType::InnerJoin,
                EventBodies::Table,
                "d",
                Expr::col(("d", EventBodies::BatchId)).equals(("b", EventBatches::Id)),
            )
            .and_where(Expr::col(("b", EventBatches::Id)).is_in(ids))
            .to_owned();
        let rows = db.query_all_raw(backend.build(&select)).await?;
        for row in &rows {
            let batch: Uuid = row.try_get("", "id")?;
            let tenant: String = row.try_get("", "tenant_id")?;
            let body: Vec<u8> = row.try_get("", "events")?;
            let events = unpack(&body).map_err(|err| DbErr::Custom(err.to_string()))?;
            for (index, event) in events.into_iter().enumerate() {
                use Events as E;
                let id =
                    Uuid::from_slice(&event.id).map_err(|err| DbErr::Custom(err.to_string()))?;
                let insert = Query::insert()
                    .into_table(E::Table)
                    .columns([
                        E::BatchId,
                        E::Seq,
                        E::Id,
                        E::TenantId,
                        E::EventType,
                        E::AggregateType,
                        E::AggregateId,
                        E::MemberId,
                        E::OccurredAt,
                        E::RequestId,
                        E::Actor,
                        E::Payload,
                    ])
                    .values_panic([
                        batch.into(),
                        (index as i32 + 1).into(),
                        id.into(),
                        tenant.clone().into(),
                        event.event_type.into(),
                        event.aggregate_type.into(),
                        event.aggregate_id.into(),
                        event.member_id.into(),
                        event.occurred_at.into(),
                        event.request_id.into(),
                        event.actor.into(),
                        event.payload.into(),
                    ])
                    .to_owned();
                db.execute_raw(backend.build(&insert)).await?;
            }
        }
    }
}
