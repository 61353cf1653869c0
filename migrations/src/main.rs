//! `marketing-migration`: sea-orm-migration's CLI (`up`, `down`, `status`, `fresh`, ...) over
//! our migrations. Reads `DATABASE_URL`.

use sea_orm_migration::prelude::*;

#[tokio::main]
async fn main() {
    cli::run_cli(marketing_migration::Migrator).await;
}
