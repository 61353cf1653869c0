//! Indexes reshaped after the benchmark (issue 5):
//! - the coupon expiry sweeper looks for AVAILABLE *and* LOCKED coupons past their validity,
//!   so its partial index covers both states (it covered AVAILABLE only, and the sweep scanned
//!   the whole table);
//! - columns that are NULL on almost every row (a deduction's related transaction, an
//!   allocation's hold) are indexed only where set: each deduction writes two index entries
//!   fewer, and every lookup by them names a value, which implies `IS NOT NULL`.
//!
//! The statements are valid on PostgreSQL and SQLite alike.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "DROP INDEX idx_user_coupons_expiring",
    "CREATE INDEX idx_user_coupons_expiring ON user_coupons (valid_until_at) \
     WHERE status IN (1, 2)",
    "DROP INDEX idx_points_transactions_related",
    "CREATE INDEX idx_points_transactions_related ON points_transactions \
     (related_transaction_id) WHERE related_transaction_id IS NOT NULL",
    "DROP INDEX idx_points_allocations_hold",
    "CREATE INDEX idx_points_allocations_hold ON points_allocations (hold_id) \
     WHERE hold_id IS NOT NULL",
];

const DOWN: &[&str] = &[
    "DROP INDEX idx_user_coupons_expiring",
    "CREATE INDEX idx_user_coupons_expiring ON user_coupons (valid_until_at) WHERE status = 1",
    "DROP INDEX idx_points_transactions_related",
    "CREATE INDEX idx_points_transactions_related ON points_transactions \
     (related_transaction_id)",
    "DROP INDEX idx_points_allocations_hold",
    "CREATE INDEX idx_points_allocations_hold ON points_allocations (hold_id)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// In one transaction on SQLite too, so one connection drops and re-creates each index:
    /// a second pooled connection may still have the dropped index in its cached schema and
    /// refuse the CREATE ("already exists").
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, DOWN).await
    }
}
