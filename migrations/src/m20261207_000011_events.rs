//! The outbox. A change writes its events in its own transaction, grouped per tenant into an
//! `event_batches` row without a position (events are immutable rows: `(batch_id, seq)`). A
//! sequencer numbers committed batches afterwards, one transaction at a time under the lock
//! of the single row of `event_positions`, so batch positions grow in the order in which
//! readers can see them: a reader that passed a position never meets a later-committed event
//! below it (the gap that sequence values taken *inside* the writing transactions leave). An
//! event's position is its batch's position x 65,536 + its `seq`. Numbering a batch, not each
//! event, keeps the sequencer's writes to one small row per change.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventBatches {
    Table,
    Id,
    TenantId,
    Position,
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

#[derive(DeriveIden)]
enum EventPositions {
    Table,
    Id,
    Last,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Events as E;
        manager
            .create_table(
                Table::create()
                    .table(EventBatches::Table)
                    .col(uuid(EventBatches::Id).primary_key())
                    .col(string_len(EventBatches::TenantId, 64))
                    .col(big_integer_null(EventBatches::Position))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .col(uuid(E::BatchId))
                    .col(integer(E::Seq))
                    .col(uuid(E::Id))
                    .col(string_len(E::TenantId, 64))
                    .col(string_len(E::EventType, 64))
                    .col(string_len(E::AggregateType, 32))
                    .col(string_len(E::AggregateId, 64))
                    .col(string_len_null(E::MemberId, 64))
                    .col(big_integer(E::OccurredAt))
                    .col(string_len_null(E::RequestId, 128))
                    .col(string_len_null(E::Actor, 340))
                    .col(blob(E::Payload))
                    .primary_key(Index::create().col(E::BatchId).col(E::Seq))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(EventPositions::Table)
                    .col(integer(EventPositions::Id).primary_key())
                    .col(big_integer(EventPositions::Last))
                    .to_owned(),
            )
            .await?;
        crate::execute_all(
            manager,
            &[
                "INSERT INTO event_positions (id, last) VALUES (1, 0)",
                // The service's one order, and each tenant's reads along it.
                "CREATE UNIQUE INDEX uq_event_batches_position ON event_batches (position) \
                 WHERE position IS NOT NULL",
                "CREATE INDEX idx_event_batches_tenant ON event_batches (tenant_id, position) \
                 WHERE position IS NOT NULL",
                // What the sequencer numbers next: committed batches without a position.
                "CREATE INDEX idx_event_batches_unnumbered ON event_batches (id) \
                 WHERE position IS NULL",
                // An aggregate's audit trail.
                "CREATE INDEX idx_events_aggregate ON events \
                 (tenant_id, aggregate_type, aggregate_id)",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["event_positions", "events", "event_batches"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
