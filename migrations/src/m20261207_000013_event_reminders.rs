//! Reminders (`coupon.expiring`, `points.expiring`) are emitted once per coupon or lot: a
//! reminder's row is inserted with its event, in one transaction, and a second insert of the
//! same (kind, aggregate) does nothing, so replicas sweeping at once emit it once. `due_at`
//! (when the coupon or lot expires) lets the retention sweep delete rows that can never be
//! due again.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventReminders {
    Table,
    Kind,
    AggregateId,
    DueAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use EventReminders as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .col(string_len(R::Kind, 16))
                    .col(uuid(R::AggregateId))
                    .col(big_integer(R::DueAt))
                    .primary_key(Index::create().col(R::Kind).col(R::AggregateId))
                    .to_owned(),
            )
            .await?;
        crate::execute_all(
            manager,
            &["CREATE INDEX idx_event_reminders_due ON event_reminders (due_at)"],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EventReminders::Table).to_owned())
            .await
    }
}
