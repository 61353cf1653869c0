//! A change made with a key over mutual TLS records both credentials as its actor:
//! `<key's client> (certificate <certificate's name>)`, up to 64 + 253 + 15 bytes. The actor
//! columns grow from 64 to 340 characters. On PostgreSQL a longer `varchar` is a catalog
//! change, not a rewrite; SQLite does not enforce lengths, so it has nothing to do.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLES: [&str; 4] = [
    "points_transactions",
    "coupon_templates",
    "user_coupons",
    "points_rules",
];

async fn actor_length(manager: &SchemaManager<'_>, length: u32) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let statements: Vec<String> = TABLES
        .iter()
        .map(|table| format!("ALTER TABLE {table} ALTER COLUMN actor TYPE varchar({length})"))
        .collect();
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    crate::execute_all(manager, &statements).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        actor_length(manager, 340).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        actor_length(manager, 64).await
    }
}
