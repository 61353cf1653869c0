//! The check that ends PostgreSQL's one-statement points batch write
//! (`marketing_storage::points_batch`): the statement updates every account of the batch
//! only where it still has the version read, and this function, called last in the same
//! statement, fails the whole statement when one did not. An error aborts the statement's
//! implicit transaction, so nothing of the batch is written; SQLSTATE 40001 tells the caller
//! that another writer won (retry), 'data_corrupted' that a changed lot was missing (a bug).
//!
//! SQLite writes a batch inside a transaction and reads the counts itself: nothing to add.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r#"
CREATE FUNCTION points_batch_written(
    accounts_written bigint, accounts_expected bigint,
    lots_written bigint, lots_expected bigint
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF accounts_written <> accounts_expected THEN
        RAISE EXCEPTION 'points batch: % of % accounts still had the version read',
            accounts_written, accounts_expected
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF lots_written <> lots_expected THEN
        RAISE EXCEPTION 'points batch: % of % changed lots found', lots_written, lots_expected
            USING ERRCODE = 'data_corrupted';
    END IF;
    RETURN true;
END
$$"#;

const DROP: &str = "DROP FUNCTION points_batch_written(bigint, bigint, bigint, bigint)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Postgres => crate::execute_all(manager, &[CREATE]).await,
            _ => Ok(()),
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Postgres => crate::execute_all(manager, &[DROP]).await,
            _ => Ok(()),
        }
    }
}
