//! Redemption codes. `coupon_codes` holds every code of a tenant, shared or unique, keyed by
//! (tenant, code) so the same text in two tenants is two codes and a code is unique in its
//! tenant; a unique code is claimed by setting its member, coupon and time, conditionally on
//! it being unclaimed. `code_generations` holds each `GenerateCouponCodes` call's progress, so
//! a generation that a replica left half done is finished by another, and a retry waits for
//! it. The template row keeps its code inventory (`unique_code_count`,
//! `unique_codes_claimed`, `shared_code_count`), written in the transactions that add or claim
//! codes.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CouponCodes {
    Table,
    TenantId,
    Code,
    TemplateId,
    Kind,
    MemberId,
    UserCouponId,
    ClaimedAt,
    CreatedAt,
    Actor,
}

#[derive(DeriveIden)]
enum CodeGenerations {
    Table,
    Id,
    TenantId,
    TemplateId,
    Count,
    Prefix,
    Length,
    Generated,
    LeasedUntil,
    FinishedAt,
    CreatedAt,
    Actor,
    RequestId,
}

#[derive(DeriveIden)]
enum CouponTemplates {
    Table,
    UniqueCodeCount,
    UniqueCodesClaimed,
    SharedCodeCount,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use CodeGenerations as G;
        use CouponCodes as C;
        manager
            .create_table(
                Table::create()
                    .table(C::Table)
                    .col(string_len(C::TenantId, 64))
                    .col(string_len(C::Code, 64))
                    .col(uuid(C::TemplateId))
                    .col(small_integer(C::Kind))
                    .col(string_len_null(C::MemberId, 64))
                    .col(uuid_null(C::UserCouponId))
                    .col(big_integer_null(C::ClaimedAt))
                    .col(big_integer(C::CreatedAt))
                    .col(string_len_null(C::Actor, 340))
                    .primary_key(Index::create().col(C::TenantId).col(C::Code))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(G::Table)
                    .col(uuid(G::Id).primary_key())
                    .col(string_len(G::TenantId, 64))
                    .col(uuid(G::TemplateId))
                    .col(integer(G::Count))
                    .col(string_len(G::Prefix, 16))
                    .col(small_integer(G::Length))
                    .col(integer(G::Generated))
                    .col(big_integer(G::LeasedUntil))
                    .col(big_integer_null(G::FinishedAt))
                    .col(big_integer(G::CreatedAt))
                    .col(string_len_null(G::Actor, 340))
                    .col(string_len(G::RequestId, 128))
                    .to_owned(),
            )
            .await?;
        for column in [
            CouponTemplates::UniqueCodeCount,
            CouponTemplates::UniqueCodesClaimed,
            CouponTemplates::SharedCodeCount,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(CouponTemplates::Table)
                        .add_column(big_integer(column).default(0))
                        .to_owned(),
                )
                .await?;
        }
        if manager.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::Postgres {
            // Room on each page for a claimed code's new version: a claim updates no indexed
            // column, so its update stays on the page (HOT) and writes no index entry.
            crate::execute_all(manager, &["ALTER TABLE coupon_codes SET (fillfactor = 85)"])
                .await?;
        }
        crate::execute_all(
            manager,
            &[
                // A template's codes in code order (ListCouponCodes).
                "CREATE INDEX idx_coupon_codes_template ON coupon_codes \
                 (tenant_id, template_id, code)",
                // Generations not finished, for the replicas that finish abandoned ones.
                "CREATE INDEX idx_code_generations_open ON code_generations (leased_until) \
                 WHERE finished_at IS NULL",
                "CREATE INDEX idx_code_generations_created ON code_generations (created_at)",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            CouponTemplates::UniqueCodeCount,
            CouponTemplates::UniqueCodesClaimed,
            CouponTemplates::SharedCodeCount,
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
        manager
            .drop_table(Table::drop().table(CodeGenerations::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(CouponCodes::Table).to_owned())
            .await
    }
}
