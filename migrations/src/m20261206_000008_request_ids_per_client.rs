//! A request id belongs to the API client that first used it: idempotency records gain the
//! client's name (`client`, empty for calls without auth) in their primary key, which becomes
//! (tenant_id, request_id, client). Records written before have no client: they are marked
//! `*`, which matches any client, until the retention window deletes them.
//!
//! PostgreSQL adds the column with a constant default (no table rewrite) and rebuilds only the
//! primary key's index; the default stays, so a replica of the previous version still rolling
//! out writes records that match any client. SQLite cannot change a primary key: the table is
//! rebuilt.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: [&str; 2] = [
    "ALTER TABLE idempotency_records ADD COLUMN client varchar(64) NOT NULL DEFAULT '*'",
    "ALTER TABLE idempotency_records DROP CONSTRAINT idempotency_records_pkey, \
     ADD CONSTRAINT idempotency_records_pkey PRIMARY KEY (tenant_id, request_id, client)",
];

const POSTGRES_DOWN: [&str; 3] = [
    "DELETE FROM idempotency_records WHERE client <> '*'",
    "ALTER TABLE idempotency_records DROP CONSTRAINT idempotency_records_pkey, \
     ADD CONSTRAINT idempotency_records_pkey PRIMARY KEY (tenant_id, request_id)",
    "ALTER TABLE idempotency_records DROP COLUMN client",
];

const SQLITE_REBUILD: &str = r#"
BEGIN IMMEDIATE;
CREATE TABLE idempotency_records_rebuilt (
  tenant_id varchar(64) NOT NULL,
  request_id varchar(128) NOT NULL,
  client varchar(64) NOT NULL DEFAULT '*',
  operation varchar(64) NOT NULL,
  fingerprint blob NOT NULL,
  status_code integer NOT NULL,
  response blob NOT NULL,
  created_at integer NOT NULL,
  PRIMARY KEY (tenant_id, request_id, client)
);
INSERT INTO idempotency_records_rebuilt
  (tenant_id, request_id, client, operation, fingerprint, status_code, response, created_at)
  SELECT tenant_id, request_id, '*', operation, fingerprint, status_code, response, created_at
  FROM idempotency_records;
DROP TABLE idempotency_records;
ALTER TABLE idempotency_records_rebuilt RENAME TO idempotency_records;
CREATE INDEX idx_idempotency_records_created ON idempotency_records (created_at);
COMMIT;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            return crate::execute_all(manager, &POSTGRES_UP).await;
        }
        // One call, so that one connection of the pool runs it all, in one transaction:
        // another connection could still see the old table when the rename runs, and a crash
        // half-way must leave the old table.
        crate::execute_all(manager, &[SQLITE_REBUILD]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Postgres => crate::execute_all(manager, &POSTGRES_DOWN).await,
            // Left as it is: the extra key column only widens the key.
            _ => Ok(()),
        }
    }
}
