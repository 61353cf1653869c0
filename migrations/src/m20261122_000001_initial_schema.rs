//! The whole schema of the API contract: coupon templates, user coupons, points accounts with
//! their ledger, lots, holds and rules, and idempotency records.
//!
//! Conventions (see docs/storage.md): ids are UUID v7; times are BIGINT microseconds since the
//! Unix epoch (`*_at` columns), identical on both backends; amounts are BIGINT minor units or
//! points; enums are SMALLINT codes owned by the domain crate. Invariants that a bug elsewhere
//! must not be able to break are CHECK and UNIQUE constraints here.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CouponTemplates {
    Table,
    Id,
    TenantId,
    Name,
    Description,
    DiscountType,
    DiscountAmount,
    DiscountBasisPoints,
    MaxDiscountAmount,
    Currency,
    MinSpendAmount,
    TotalStock,
    RemainingStock,
    ClaimedCount,
    UsedCount,
    PerMemberLimit,
    DistributionStartAt,
    DistributionEndAt,
    ValidityKind,
    ValidFromAt,
    ValidUntilAt,
    ValidDays,
    Enabled,
    ArchivedAt,
    Version,
    Revision,
    FenceToken,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum UserCoupons {
    Table,
    Id,
    TenantId,
    TemplateId,
    MemberId,
    ClaimSlot,
    Status,
    DiscountType,
    DiscountAmount,
    DiscountBasisPoints,
    MaxDiscountAmount,
    Currency,
    MinSpendAmount,
    ValidFromAt,
    ValidUntilAt,
    ClaimedAt,
    OrderId,
    LockExpiresAt,
    OrderAmount,
    DiscountApplied,
    UsedAt,
    RevokeReason,
    RevokedAt,
    Version,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PointsAccounts {
    Table,
    Id,
    TenantId,
    MemberId,
    Available,
    Frozen,
    TotalEarned,
    TotalSpent,
    TotalExpired,
    TotalRefunded,
    Version,
    EarnedUpdatedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PointsLots {
    Table,
    Id,
    TenantId,
    AccountId,
    EarnTransactionId,
    Amount,
    Remaining,
    Frozen,
    ExpiresAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PointsTransactions {
    Table,
    Id,
    TenantId,
    AccountId,
    MemberId,
    TxType,
    Amount,
    FrozenAmount,
    AvailableAfter,
    FrozenAfter,
    BizType,
    BizId,
    RequestId,
    HoldId,
    RelatedTransactionId,
    Description,
    ExpiresAt,
    AccountVersion,
    Position,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PointsAllocations {
    Table,
    Id,
    TenantId,
    LotId,
    TransactionId,
    HoldId,
    Amount,
}

#[derive(DeriveIden)]
enum PointsHolds {
    Table,
    Id,
    TenantId,
    AccountId,
    MemberId,
    OrderId,
    Status,
    Amount,
    ConfirmedAmount,
    ExpiresAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PointsRules {
    Table,
    Id,
    TenantId,
    EventType,
    Description,
    Points,
    DailyCap,
    ExpiryDays,
    Enabled,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PointsDailyEarnings {
    Table,
    TenantId,
    MemberId,
    EventType,
    Day,
    Earned,
}

#[derive(DeriveIden)]
enum IdempotencyRecords {
    Table,
    TenantId,
    RequestId,
    Operation,
    Fingerprint,
    StatusCode,
    Response,
    CreatedAt,
}

const TENANT_LEN: u32 = 64;
const MEMBER_LEN: u32 = 64;
const REFERENCE_LEN: u32 = 128;

/// Partial indexes: the same statement is valid on PostgreSQL and SQLite.
const PARTIAL_INDEXES: &[&str] = &[
    // Sweeper: AVAILABLE (1) coupons whose validity ends.
    "CREATE INDEX idx_user_coupons_expiring ON user_coupons (valid_until_at) WHERE status = 1",
    // Sweeper: LOCKED (2) coupons whose lock lapses.
    "CREATE INDEX idx_user_coupons_lock_expiring ON user_coupons (lock_expires_at) WHERE status = 2",
    // Sweeper: live lots that expire.
    "CREATE INDEX idx_points_lots_expiring ON points_lots (expires_at) \
     WHERE remaining > 0 AND expires_at IS NOT NULL",
    // Deduction planning: an account's live lots.
    "CREATE INDEX idx_points_lots_live ON points_lots (account_id, expires_at) WHERE remaining > 0",
    // Sweeper: HELD (1) holds that expire.
    "CREATE INDEX idx_points_holds_expiring ON points_holds (expires_at) WHERE status = 1",
    // An order earns (1) or deducts (2) at most once per tenant, whatever the request id.
    "CREATE UNIQUE INDEX uq_points_transactions_biz ON points_transactions \
     (tenant_id, tx_type, biz_type, biz_id) WHERE biz_id IS NOT NULL AND tx_type IN (1, 2)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_coupon_tables(manager).await?;
        create_points_tables(manager).await?;
        create_idempotency_table(manager).await?;
        crate::execute_all(manager, PARTIAL_INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyRecords::Table.into_iden(),
            PointsDailyEarnings::Table.into_iden(),
            PointsRules::Table.into_iden(),
            PointsAllocations::Table.into_iden(),
            PointsHolds::Table.into_iden(),
            PointsTransactions::Table.into_iden(),
            PointsLots::Table.into_iden(),
            PointsAccounts::Table.into_iden(),
            UserCoupons::Table.into_iden(),
            CouponTemplates::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

async fn create_coupon_tables(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    use CouponTemplates as T;
    manager
        .create_table(
            Table::create()
                .table(T::Table)
                .col(pk_uuid(T::Id))
                .col(string_len(T::TenantId, TENANT_LEN))
                .col(string_len(T::Name, 128))
                .col(text(T::Description))
                .col(small_integer(T::DiscountType))
                .col(big_integer_null(T::DiscountAmount))
                .col(integer_null(T::DiscountBasisPoints))
                .col(big_integer_null(T::MaxDiscountAmount))
                .col(string_len(T::Currency, 3))
                .col(big_integer(T::MinSpendAmount))
                .col(big_integer(T::TotalStock))
                .col(big_integer(T::RemainingStock))
                .col(big_integer(T::ClaimedCount))
                .col(big_integer(T::UsedCount))
                .col(integer(T::PerMemberLimit))
                .col(big_integer(T::DistributionStartAt))
                .col(big_integer(T::DistributionEndAt))
                .col(small_integer(T::ValidityKind))
                .col(big_integer_null(T::ValidFromAt))
                .col(big_integer_null(T::ValidUntilAt))
                .col(integer_null(T::ValidDays))
                .col(boolean(T::Enabled))
                .col(big_integer_null(T::ArchivedAt))
                .col(big_integer(T::Version))
                .col(big_integer(T::Revision).default(1))
                .col(big_integer(T::FenceToken).default(0))
                .col(big_integer(T::CreatedAt))
                .col(big_integer(T::UpdatedAt))
                // Stock can never be oversold, whatever the application does.
                .check(Expr::col(T::RemainingStock).gte(0))
                .check(Expr::col(T::ClaimedCount).gte(0))
                .check(
                    Expr::col(T::RemainingStock)
                        .add(Expr::col(T::ClaimedCount))
                        .eq(Expr::col(T::TotalStock)),
                )
                .check(Expr::col(T::UsedCount).between(0, Expr::col(T::ClaimedCount)))
                .check(Expr::col(T::PerMemberLimit).gte(1))
                .check(Expr::col(T::MinSpendAmount).gte(0))
                .check(Expr::col(T::DistributionStartAt).lt(Expr::col(T::DistributionEndAt)))
                .to_owned(),
        )
        .await?;
    for (name, cols) in [
        ("idx_coupon_templates_tenant", vec![T::TenantId, T::Id]),
        (
            "idx_coupon_templates_tenant_enabled",
            vec![T::TenantId, T::Enabled, T::Id],
        ),
        (
            "idx_coupon_templates_tenant_type",
            vec![T::TenantId, T::DiscountType, T::Id],
        ),
        (
            "idx_coupon_templates_tenant_window",
            vec![T::TenantId, T::DistributionStartAt, T::DistributionEndAt],
        ),
    ] {
        create_index(manager, name, T::Table, cols, false).await?;
    }

    use UserCoupons as U;
    manager
        .create_table(
            Table::create()
                .table(U::Table)
                .col(pk_uuid(U::Id))
                .col(string_len(U::TenantId, TENANT_LEN))
                .col(uuid(U::TemplateId))
                .col(string_len(U::MemberId, MEMBER_LEN))
                .col(integer(U::ClaimSlot))
                .col(small_integer(U::Status))
                .col(small_integer(U::DiscountType))
                .col(big_integer_null(U::DiscountAmount))
                .col(integer_null(U::DiscountBasisPoints))
                .col(big_integer_null(U::MaxDiscountAmount))
                .col(string_len(U::Currency, 3))
                .col(big_integer(U::MinSpendAmount))
                .col(big_integer(U::ValidFromAt))
                .col(big_integer(U::ValidUntilAt))
                .col(big_integer(U::ClaimedAt))
                .col(string_len_null(U::OrderId, REFERENCE_LEN))
                .col(big_integer_null(U::LockExpiresAt))
                .col(big_integer_null(U::OrderAmount))
                .col(big_integer_null(U::DiscountApplied))
                .col(big_integer_null(U::UsedAt))
                .col(text_null(U::RevokeReason))
                .col(big_integer_null(U::RevokedAt))
                .col(big_integer(U::Version))
                .col(big_integer(U::UpdatedAt))
                .check(Expr::col(U::ClaimSlot).gte(1))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_user_coupons_template")
                        .from(U::Table, U::TemplateId)
                        .to(T::Table, T::Id),
                )
                .to_owned(),
        )
        .await?;
    // The per-member limit as a constraint: the n-th coupon of a member takes slot n, and a
    // slot can be taken once. A claim may only take a slot <= per_member_limit.
    create_index(
        manager,
        "uq_user_coupons_member_slot",
        U::Table,
        vec![U::TemplateId, U::MemberId, U::ClaimSlot],
        true,
    )
    .await?;
    for (name, cols) in [
        (
            "idx_user_coupons_member_status",
            vec![U::TenantId, U::MemberId, U::Status, U::Id],
        ),
        (
            "idx_user_coupons_member",
            vec![U::TenantId, U::MemberId, U::Id],
        ),
        (
            "idx_user_coupons_template_status",
            vec![U::TemplateId, U::Status],
        ),
    ] {
        create_index(manager, name, U::Table, cols, false).await?;
    }
    Ok(())
}

async fn create_points_tables(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    use PointsAccounts as A;
    manager
        .create_table(
            Table::create()
                .table(A::Table)
                .col(pk_uuid(A::Id))
                .col(string_len(A::TenantId, TENANT_LEN))
                .col(string_len(A::MemberId, MEMBER_LEN))
                .col(big_integer(A::Available))
                .col(big_integer(A::Frozen))
                .col(big_integer(A::TotalEarned))
                .col(big_integer(A::TotalSpent))
                .col(big_integer(A::TotalExpired))
                .col(big_integer(A::TotalRefunded))
                .col(big_integer(A::Version))
                .col(big_integer(A::EarnedUpdatedAt))
                .col(big_integer(A::CreatedAt))
                .col(big_integer(A::UpdatedAt))
                .check(Expr::col(A::Available).gte(0))
                .check(Expr::col(A::Frozen).gte(0))
                .check(Expr::col(A::TotalEarned).gte(0))
                .check(Expr::col(A::TotalSpent).gte(0))
                .check(Expr::col(A::TotalExpired).gte(0))
                .check(Expr::col(A::TotalRefunded).gte(0))
                .to_owned(),
        )
        .await?;
    create_index(
        manager,
        "uq_points_accounts_member",
        A::Table,
        vec![A::TenantId, A::MemberId],
        true,
    )
    .await?;
    manager
        .create_index(
            Index::create()
                .name("idx_points_accounts_leaderboard")
                .table(A::Table)
                .col(A::TenantId)
                .col((A::TotalEarned, IndexOrder::Desc))
                .col(A::EarnedUpdatedAt)
                .to_owned(),
        )
        .await?;

    use PointsLots as L;
    manager
        .create_table(
            Table::create()
                .table(L::Table)
                .col(pk_uuid(L::Id))
                .col(string_len(L::TenantId, TENANT_LEN))
                .col(uuid(L::AccountId))
                .col(uuid(L::EarnTransactionId))
                .col(big_integer(L::Amount))
                .col(big_integer(L::Remaining))
                .col(big_integer(L::Frozen))
                .col(big_integer_null(L::ExpiresAt))
                .col(big_integer(L::CreatedAt))
                .check(Expr::col(L::Amount).gt(0))
                .check(Expr::col(L::Remaining).between(0, Expr::col(L::Amount)))
                .check(Expr::col(L::Frozen).between(0, Expr::col(L::Remaining)))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_points_lots_account")
                        .from(L::Table, L::AccountId)
                        .to(A::Table, A::Id),
                )
                .to_owned(),
        )
        .await?;

    use PointsTransactions as X;
    manager
        .create_table(
            Table::create()
                .table(X::Table)
                .col(pk_uuid(X::Id))
                .col(string_len(X::TenantId, TENANT_LEN))
                .col(uuid(X::AccountId))
                .col(string_len(X::MemberId, MEMBER_LEN))
                .col(small_integer(X::TxType))
                .col(big_integer(X::Amount))
                .col(big_integer(X::FrozenAmount).default(0))
                .col(big_integer(X::AvailableAfter))
                .col(big_integer(X::FrozenAfter))
                .col(string_len_null(X::BizType, 64))
                .col(string_len_null(X::BizId, REFERENCE_LEN))
                .col(string_len_null(X::RequestId, REFERENCE_LEN))
                .col(uuid_null(X::HoldId))
                .col(uuid_null(X::RelatedTransactionId))
                .col(text(X::Description))
                .col(big_integer_null(X::ExpiresAt))
                .col(big_integer(X::AccountVersion))
                .col(integer(X::Position))
                .col(big_integer(X::CreatedAt))
                .check(Expr::col(X::AvailableAfter).gte(0))
                .check(Expr::col(X::FrozenAfter).gte(0))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_points_transactions_account")
                        .from(X::Table, X::AccountId)
                        .to(A::Table, A::Id),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("idx_points_transactions_member_time")
                .table(X::Table)
                .col(X::TenantId)
                .col(X::MemberId)
                .col((X::CreatedAt, IndexOrder::Desc))
                .col((X::Id, IndexOrder::Desc))
                .to_owned(),
        )
        .await?;
    // The ledger's order: the account version each write produced, then the position in the
    // write. Unique, so two writes can never both claim the same place in an account's history.
    create_index(
        manager,
        "uq_points_transactions_sequence",
        X::Table,
        vec![X::AccountId, X::AccountVersion, X::Position],
        true,
    )
    .await?;
    create_index(
        manager,
        "idx_points_transactions_related",
        X::Table,
        vec![X::RelatedTransactionId],
        false,
    )
    .await?;

    use PointsHolds as H;
    manager
        .create_table(
            Table::create()
                .table(H::Table)
                .col(pk_uuid(H::Id))
                .col(string_len(H::TenantId, TENANT_LEN))
                .col(uuid(H::AccountId))
                .col(string_len(H::MemberId, MEMBER_LEN))
                .col(string_len(H::OrderId, REFERENCE_LEN))
                .col(small_integer(H::Status))
                .col(big_integer(H::Amount))
                .col(big_integer(H::ConfirmedAmount))
                .col(big_integer(H::ExpiresAt))
                .col(big_integer(H::CreatedAt))
                .col(big_integer(H::UpdatedAt))
                .check(Expr::col(H::Amount).gt(0))
                .check(Expr::col(H::ConfirmedAmount).between(0, Expr::col(H::Amount)))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_points_holds_account")
                        .from(H::Table, H::AccountId)
                        .to(A::Table, A::Id),
                )
                .to_owned(),
        )
        .await?;
    create_index(
        manager,
        "idx_points_holds_order",
        H::Table,
        vec![H::TenantId, H::OrderId],
        false,
    )
    .await?;

    use PointsAllocations as P;
    manager
        .create_table(
            Table::create()
                .table(P::Table)
                .col(pk_uuid(P::Id))
                .col(string_len(P::TenantId, TENANT_LEN))
                .col(uuid(P::LotId))
                .col(uuid_null(P::TransactionId))
                .col(uuid_null(P::HoldId))
                .col(big_integer(P::Amount))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_points_allocations_lot")
                        .from(P::Table, P::LotId)
                        .to(L::Table, L::Id),
                )
                .to_owned(),
        )
        .await?;
    create_index(
        manager,
        "idx_points_allocations_transaction",
        P::Table,
        vec![P::TransactionId],
        false,
    )
    .await?;
    create_index(
        manager,
        "idx_points_allocations_hold",
        P::Table,
        vec![P::HoldId],
        false,
    )
    .await?;

    use PointsRules as R;
    manager
        .create_table(
            Table::create()
                .table(R::Table)
                .col(pk_uuid(R::Id))
                .col(string_len(R::TenantId, TENANT_LEN))
                .col(string_len(R::EventType, 64))
                .col(text(R::Description))
                .col(big_integer(R::Points))
                .col(big_integer_null(R::DailyCap))
                .col(integer_null(R::ExpiryDays))
                .col(boolean(R::Enabled))
                .col(big_integer(R::Version))
                .col(big_integer(R::CreatedAt))
                .col(big_integer(R::UpdatedAt))
                .check(Expr::col(R::Points).gt(0))
                .to_owned(),
        )
        .await?;
    create_index(
        manager,
        "uq_points_rules_event",
        R::Table,
        vec![R::TenantId, R::EventType],
        true,
    )
    .await?;
    create_index(
        manager,
        "idx_points_rules_tenant",
        R::Table,
        vec![R::TenantId, R::Id],
        false,
    )
    .await?;

    use PointsDailyEarnings as D;
    manager
        .create_table(
            Table::create()
                .table(D::Table)
                .col(string_len(D::TenantId, TENANT_LEN))
                .col(string_len(D::MemberId, MEMBER_LEN))
                .col(string_len(D::EventType, 64))
                .col(integer(D::Day))
                .col(big_integer(D::Earned))
                .primary_key(
                    Index::create()
                        .col(D::TenantId)
                        .col(D::MemberId)
                        .col(D::EventType)
                        .col(D::Day),
                )
                .check(Expr::col(D::Earned).gte(0))
                .to_owned(),
        )
        .await
}

async fn create_idempotency_table(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    use IdempotencyRecords as I;
    manager
        .create_table(
            Table::create()
                .table(I::Table)
                .col(string_len(I::TenantId, TENANT_LEN))
                .col(string_len(I::RequestId, REFERENCE_LEN))
                .col(string_len(I::Operation, 64))
                .col(blob(I::Fingerprint))
                .col(integer(I::StatusCode))
                .col(blob(I::Response))
                .col(big_integer(I::CreatedAt))
                // A request id is used once per tenant, across all operations.
                .primary_key(Index::create().col(I::TenantId).col(I::RequestId))
                .to_owned(),
        )
        .await?;
    create_index(
        manager,
        "idx_idempotency_records_created",
        I::Table,
        vec![I::CreatedAt],
        false,
    )
    .await
}

async fn create_index<T, C>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: Vec<C>,
    unique: bool,
) -> Result<(), DbErr>
where
    T: IntoIden + 'static,
    C: IntoIden + 'static,
{
    let mut index = Index::create();
    index.name(name).table(table);
    for col in cols {
        index.col(col);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
}
