//! The outbox: every change writes its events in the same transaction (`events`, with no
//! position yet). A sequencer numbers committed events afterwards, one transaction at a time
//! under the lock of the single row of `event_positions`, so positions grow in the order in
//! which readers can see them: a reader that passed position n never meets a later-committed
//! event below n (the gap that sequence values taken *inside* the writing transactions leave).
//! Readers read numbered events only, by `(tenant_id, position)`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    TenantId,
    Position,
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
                    .table(E::Table)
                    .col(uuid(E::Id).primary_key())
                    .col(string_len(E::TenantId, 64))
                    .col(big_integer_null(E::Position))
                    .col(string_len(E::EventType, 64))
                    .col(string_len(E::AggregateType, 32))
                    .col(string_len(E::AggregateId, 64))
                    .col(string_len_null(E::MemberId, 64))
                    .col(big_integer(E::OccurredAt))
                    .col(string_len_null(E::RequestId, 128))
                    .col(string_len_null(E::Actor, 340))
                    .col(blob(E::Payload))
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
                "CREATE UNIQUE INDEX uq_events_position ON events (position) \
                 WHERE position IS NOT NULL",
                "CREATE INDEX idx_events_tenant_position ON events (tenant_id, position) \
                 WHERE position IS NOT NULL",
                // An aggregate's audit trail.
                "CREATE INDEX idx_events_aggregate ON events \
                 (tenant_id, aggregate_type, aggregate_id, position) WHERE position IS NOT NULL",
                // What the sequencer numbers next: the committed events without a position.
                "CREATE INDEX idx_events_unnumbered ON events (id) WHERE position IS NULL",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EventPositions::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Events::Table).to_owned())
            .await
    }
}
