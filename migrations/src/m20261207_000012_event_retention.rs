//! Events are kept for `MARKETING_EVENTS_RETENTION_DAYS`, then deleted oldest position first.
//! `event_expiry` holds, per tenant, the largest position of its events deleted so far: a
//! reader of that tenant asking for events after a position below it would miss some, and is
//! refused (`EVENTS_EXPIRED`) instead of being given what is left. One row per tenant that
//! ever had events deleted.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventExpiry {
    Table,
    TenantId,
    ExpiredThrough,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EventExpiry::Table)
                    .col(string_len(EventExpiry::TenantId, 64).primary_key())
                    .col(big_integer(EventExpiry::ExpiredThrough))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EventExpiry::Table).to_owned())
            .await
    }
}
