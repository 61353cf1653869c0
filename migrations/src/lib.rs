//! Database migrations of the marketing service. The same list runs on PostgreSQL and SQLite:
//! tables are built with sea-query so each backend gets its own column types; the few
//! statements written as SQL (partial indexes) use syntax both backends share.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_initial_schema;
mod m20261122_000002_partial_indexes;
mod m20261202_000003_lean_ledger_writes;
mod m20261202_000004_points_batch_check;
mod m20261203_000005_api_clients;
mod m20261203_000006_entry_actor;
mod m20261206_000007_change_actors;
mod m20261206_000008_request_ids_per_client;
mod m20261206_000009_retention_indexes;
mod m20261207_000010_actor_names_certificate;
mod m20261207_000011_events;
mod m20261207_000012_event_retention;
mod m20261207_000013_event_reminders;
mod m20261207_000014_packed_events;
mod m20261208_000015_coupon_codes;
mod m20261208_000016_tenant_settings;
mod m20261208_000017_cart_terms;
mod m20261208_000018_rules_by_amount;

pub mod event_format;

pub struct Migrator;

/// Runs SQL statements in order, on the migration's connection (its transaction, if any).
pub(crate) async fn execute_all(
    manager: &SchemaManager<'_>,
    statements: &[&str],
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial_schema::Migration),
            Box::new(m20261122_000002_partial_indexes::Migration),
            Box::new(m20261202_000003_lean_ledger_writes::Migration),
            Box::new(m20261202_000004_points_batch_check::Migration),
            Box::new(m20261203_000005_api_clients::Migration),
            Box::new(m20261203_000006_entry_actor::Migration),
            Box::new(m20261206_000007_change_actors::Migration),
            Box::new(m20261206_000008_request_ids_per_client::Migration),
            Box::new(m20261206_000009_retention_indexes::Migration),
            Box::new(m20261207_000010_actor_names_certificate::Migration),
            Box::new(m20261207_000011_events::Migration),
            Box::new(m20261207_000012_event_retention::Migration),
            Box::new(m20261207_000013_event_reminders::Migration),
            Box::new(m20261207_000014_packed_events::Migration),
            Box::new(m20261208_000015_coupon_codes::Migration),
            Box::new(m20261208_000016_tenant_settings::Migration),
            Box::new(m20261208_000017_cart_terms::Migration),
            Box::new(m20261208_000018_rules_by_amount::Migration),
        ]
    }
}
