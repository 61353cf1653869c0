//! The retention sweeper deletes holds that finished (confirmed, released or expired) before
//! the retention window: a partial index of exactly those, by when they finished, so that the
//! sweep walks what is due and never the held ones or the whole history. (Idempotency records
//! are found by `idx_idempotency_records_created`.)

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(
            manager,
            &[
                "CREATE INDEX idx_points_holds_finished ON points_holds (updated_at) \
               WHERE status <> 1",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, &["DROP INDEX idx_points_holds_finished"]).await
    }
}
