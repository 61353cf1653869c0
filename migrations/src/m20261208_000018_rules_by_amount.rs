//! Points rules that earn by the amount spent: points per amount of a currency, with a
//! multiplier and a rounding rule. NULL: a rule of fixed points per event.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PointsRules {
    Table,
    PerAmountCurrency,
    PerAmount,
    MultiplierBp,
    Rounding,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        for mut column in [
            string_len_null(PointsRules::PerAmountCurrency, 3),
            big_integer_null(PointsRules::PerAmount),
            integer_null(PointsRules::MultiplierBp),
            small_integer_null(PointsRules::Rounding),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(PointsRules::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            PointsRules::PerAmountCurrency,
            PointsRules::PerAmount,
            PointsRules::MultiplierBp,
            PointsRules::Rounding,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(PointsRules::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
