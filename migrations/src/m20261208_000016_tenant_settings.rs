//! A tenant's settings (its points program and per-order coupon cap): one row per tenant that
//! ever updated them (a tenant without a row has the defaults), its `version` the etag.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TenantSettings {
    Table,
    TenantId,
    PointsValues,
    MaxPointsShareBp,
    MinPointsRedemption,
    MaxCouponsPerOrder,
    Version,
    UpdatedAt,
    Actor,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use TenantSettings as S;
        manager
            .create_table(
                Table::create()
                    .table(S::Table)
                    .col(string_len(S::TenantId, 64).primary_key())
                    // `EUR=100:100;USD=1:1`: at most 20 currencies.
                    .col(string_len(S::PointsValues, 1024))
                    .col(integer(S::MaxPointsShareBp))
                    .col(big_integer(S::MinPointsRedemption))
                    .col(integer_null(S::MaxCouponsPerOrder))
                    .col(big_integer(S::Version))
                    .col(big_integer(S::UpdatedAt))
                    .col(string_len_null(S::Actor, 340))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TenantSettings::Table).to_owned())
            .await
    }
}
