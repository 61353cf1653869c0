//! API clients: who may call the service, in which role, for which tenants. A client's key is
//! stored only as its SHA-256 digest, found by its key id; `tenants` lists tenant ids
//! separated by commas (ids have none), NULL for every tenant. Revoked clients stay
//! (`revoked_at`), so names are never reused by accident and audits can name them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiClients {
    Table,
    Id,
    Name,
    Role,
    Tenants,
    KeyId,
    KeyDigest,
    CreatedAt,
    RevokedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ApiClients as C;
        manager
            .create_table(
                Table::create()
                    .table(C::Table)
                    .col(uuid(C::Id).primary_key())
                    .col(string_len(C::Name, 64).unique_key())
                    .col(small_integer(C::Role))
                    .col(text_null(C::Tenants))
                    .col(string_len(C::KeyId, 16).unique_key())
                    .col(blob(C::KeyDigest))
                    .col(big_integer(C::CreatedAt))
                    .col(big_integer_null(C::RevokedAt))
                    .check(Expr::col(C::Role).between(1, 3))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiClients::Table).to_owned())
            .await
    }
}
