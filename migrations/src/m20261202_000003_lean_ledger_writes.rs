//! Fewer index writes per points change (issue 5, deduct-spread):
//! - Lots are found by a `live` flag the database derives from `remaining`, instead of by
//!   `remaining > 0`. On PostgreSQL a column an index names (in its key or its predicate) makes
//!   every update that changes it write a new entry in every index of the table. `remaining`
//!   changes on every deduction, `live` only when a lot runs empty: the lot's other updates
//!   become heap-only (HOT), three index entries fewer each.
//! - Accounts and lots leave a fifth of each page free on PostgreSQL (`fillfactor` 80), so an
//!   update finds room for its new row version on the same page, which HOT requires.
//! - Idempotency records are ordered by time on disk: on PostgreSQL their time index becomes a
//!   BRIN index, a few pages for the whole table that an insert rarely touches, instead of a
//!   B-tree entry per record. It serves a time-bounded clean-up; nothing reads it on a request.
//!
//! SQLite has no HOT, fillfactor or BRIN: it gets the same `live` column (virtual there) and
//! indexes, so one query text serves both backends.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `live` and the indexes keyed on it; the backend-specific part is the column's storage.
fn up_statements(backend: DbBackend) -> Vec<&'static str> {
    let mut statements = match backend {
        DbBackend::Postgres => vec![
            "ALTER TABLE points_lots ADD COLUMN live boolean \
             GENERATED ALWAYS AS (remaining > 0) STORED",
        ],
        _ => vec![
            "ALTER TABLE points_lots ADD COLUMN live integer \
             GENERATED ALWAYS AS (remaining > 0) VIRTUAL",
        ],
    };
    statements.extend([
        "DROP INDEX idx_points_lots_expiring",
        "CREATE INDEX idx_points_lots_expiring ON points_lots (expires_at) \
         WHERE live AND expires_at IS NOT NULL",
        "DROP INDEX idx_points_lots_live",
        "CREATE INDEX idx_points_lots_live ON points_lots (account_id, expires_at) WHERE live",
    ]);
    if backend == DbBackend::Postgres {
        statements.extend([
            "ALTER TABLE points_accounts SET (fillfactor = 80)",
            "ALTER TABLE points_lots SET (fillfactor = 80)",
            "DROP INDEX idx_idempotency_records_created",
            "CREATE INDEX idx_idempotency_records_created ON idempotency_records \
             USING brin (created_at)",
        ]);
    }
    statements
}

fn down_statements(backend: DbBackend) -> Vec<&'static str> {
    let mut statements = vec![
        "DROP INDEX idx_points_lots_expiring",
        "CREATE INDEX idx_points_lots_expiring ON points_lots (expires_at) \
         WHERE remaining > 0 AND expires_at IS NOT NULL",
        "DROP INDEX idx_points_lots_live",
        "CREATE INDEX idx_points_lots_live ON points_lots (account_id, expires_at) \
         WHERE remaining > 0",
        "ALTER TABLE points_lots DROP COLUMN live",
    ];
    if backend == DbBackend::Postgres {
        statements.extend([
            "ALTER TABLE points_accounts RESET (fillfactor)",
            "ALTER TABLE points_lots RESET (fillfactor)",
            "DROP INDEX idx_idempotency_records_created",
            "CREATE INDEX idx_idempotency_records_created ON idempotency_records (created_at)",
        ]);
    }
    statements
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// In one transaction on SQLite too, as the previous migration explains.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, &up_statements(manager.get_database_backend())).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, &down_statements(manager.get_database_backend())).await
    }
}
