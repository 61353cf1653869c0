//! Cart terms (scope, allocation, buy X get Y, stacking) on templates and, copied at claim,
//! on coupons; a template's campaign budget and what its coupons used of it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CouponTemplates {
    Table,
    CartTerms,
    BudgetAmount,
    BudgetUsed,
}

#[derive(DeriveIden)]
enum UserCoupons {
    Table,
    CartTerms,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time. NULL cart terms: the whole
        // order (every template and coupon before this migration).
        for column in [
            text_null(CouponTemplates::CartTerms),
            big_integer_null(CouponTemplates::BudgetAmount),
            big_integer(CouponTemplates::BudgetUsed)
                .default(0)
                .to_owned(),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(CouponTemplates::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(UserCoupons::Table)
                    .add_column(text_null(UserCoupons::CartTerms))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(UserCoupons::Table)
                    .drop_column(UserCoupons::CartTerms)
                    .to_owned(),
            )
            .await?;
        for column in [
            CouponTemplates::CartTerms,
            CouponTemplates::BudgetAmount,
            CouponTemplates::BudgetUsed,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(CouponTemplates::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
