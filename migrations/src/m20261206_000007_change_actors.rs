//! Who made the latest change of each template, rule and user coupon: the API client's name
//! (NULL for changes made before API clients existed, without auth, or by the server itself:
//! a lapsed lock released, a coupon expired). Nullable columns added without a default:
//! instant on both backends, and older replicas ignore them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CouponTemplates {
    Table,
}

#[derive(DeriveIden)]
enum UserCoupons {
    Table,
}

#[derive(DeriveIden)]
enum PointsRules {
    Table,
}

#[derive(DeriveIden)]
enum Column {
    Actor,
}

fn tables() -> [DynIden; 3] {
    [
        CouponTemplates::Table.into_iden(),
        UserCoupons::Table.into_iden(),
        PointsRules::Table.into_iden(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in tables() {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(string_len_null(Column::Actor, 64))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in tables() {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .drop_column(Column::Actor)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
