//! Who made each points ledger entry: the API client's name (NULL for entries written before
//! API clients existed, without auth, or by the sweeper). A nullable column added without a
//! default: instant on both backends, and older replicas ignore it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PointsTransactions {
    Table,
    Actor,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(PointsTransactions::Table)
                    .add_column(string_len_null(PointsTransactions::Actor, 64))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(PointsTransactions::Table)
                    .drop_column(PointsTransactions::Actor)
                    .to_owned(),
            )
            .await
    }
}
