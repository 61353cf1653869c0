//! The points context's store outside the batch (`store::LedgerStore` serves that): accounts
//! and ledgers read for answers and sweeps, rules read and written, finished holds deleted.

use marketing_domain::{
    MarketingError, MemberId, TenantId, UnixMicros,
    points::{Account, Entry, Lot, TxType},
    points_rule::{PointsRule, RuleTerms},
};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use uuid::Uuid;

use super::RuleRef;

/// Where the points context reads: the pool (each read its own snapshot) or a unit of work.
#[allow(async_fn_in_trait)]
pub trait PointsReads {
    async fn find_account(
        &self,
        tenant: &TenantId,
        member: &MemberId,
    ) -> Result<Option<Account>, MarketingError>;

    /// An account's lots that still hold points, soonest expiring first.
    async fn live_lots(&self, account: Uuid) -> Result<Vec<Lot>, MarketingError>;

    /// A member's entries of `types` (any when empty) in `range` (from inclusive, to
    /// exclusive), newest first, after `after`.
    async fn list_entries(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        types: &[TxType],
        range: (Option<UnixMicros>, Option<UnixMicros>),
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<Entry>, MarketingError>;

    /// The tenant's `n` members who earned the most, ties by who reached it first: (member,
    /// total earned, reached at).
    async fn top_earners(
        &self,
        tenant: &TenantId,
        n: u64,
    ) -> Result<Vec<(String, i64, i64)>, MarketingError>;

    /// The accounts of up to `limit` lots expired by `now`.
    async fn accounts_with_due_lots(
        &self,
        now: UnixMicros,
        limit: u64,
    ) -> Result<super::DueAccounts, MarketingError>;

    /// Up to `limit` (tenant, member, hold) held past their expiry at `now`.
    async fn due_holds(
        &self,
        now: UnixMicros,
        limit: u64,
    ) -> Result<Vec<(String, String, Uuid)>, MarketingError>;

    async fn find_rule(
        &self,
        tenant: &TenantId,
        by: RuleRef<'_>,
    ) -> Result<Option<PointsRule>, MarketingError>;

    /// Up to `limit` rules after `after` in id order (only enabled or disabled ones when
    /// `enabled` says so).
    async fn list_rules(
        &self,
        tenant: &TenantId,
        enabled: Option<bool>,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<PointsRule>, MarketingError>;
}

/// The points context's writes outside the batch: inside a unit of work only.
#[allow(async_fn_in_trait)]
pub trait PointsStore: PointsReads {
    /// Adds a rule; an event type that already has one is `RuleExists`.
    async fn insert_rule(&self, rule: &PointsRule) -> Result<(), MarketingError>;

    /// Replaces the terms of rule `id` if its version is still `expected_version`; `None`
    /// when no such rule has that version.
    async fn update_rule(
        &self,
        tenant: &TenantId,
        id: Uuid,
        expected_version: i64,
        terms: &RuleTerms,
        now: UnixMicros,
        actor: Option<&str>,
    ) -> Result<Option<PointsRule>, MarketingError>;

    /// Deletes up to `limit` holds that finished before `before`, in one statement; how many.
    async fn delete_finished_holds(
        &self,
        before: UnixMicros,
        limit: u64,
    ) -> Result<u64, MarketingError>;
}

/// The points context as one connection sees it (SeaORM, on PostgreSQL and SQLite alike).
pub struct Points<'c, C>(pub(crate) &'c C);

impl<C: ConnectionTrait> PointsReads for Points<'_, C> {
    async fn find_account(
        &self,
        tenant: &TenantId,
        member: &MemberId,
    ) -> Result<Option<Account>, MarketingError> {
        super::find_account(self.0, tenant, member).await
    }

    async fn live_lots(&self, account: Uuid) -> Result<Vec<Lot>, MarketingError> {
        super::live_lots(self.0, account).await
    }

    async fn list_entries(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        types: &[TxType],
        range: (Option<UnixMicros>, Option<UnixMicros>),
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<Entry>, MarketingError> {
        super::list_entries(self.0, tenant, member, types, range, after, limit).await
    }

    async fn top_earners(
        &self,
        tenant: &TenantId,
        n: u64,
    ) -> Result<Vec<(String, i64, i64)>, MarketingError> {
        super::top_earners(self.0, tenant, n).await
    }

    async fn accounts_with_due_lots(
        &self,
        now: UnixMicros,
        limit: u64,
    ) -> Result<super::DueAccounts, MarketingError> {
        super::accounts_with_due_lots(self.0, now, limit).await
    }

    async fn due_holds(
        &self,
        now: UnixMicros,
        limit: u64,
    ) -> Result<Vec<(String, String, Uuid)>, MarketingError> {
        super::due_holds(self.0, now, limit).await
    }

    async fn find_rule(
        &self,
        tenant: &TenantId,
        by: RuleRef<'_>,
    ) -> Result<Option<PointsRule>, MarketingError> {
        super::find_rule(self.0, tenant, by).await
    }

    async fn list_rules(
        &self,
        tenant: &TenantId,
        enabled: Option<bool>,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<PointsRule>, MarketingError> {
        super::list_rules(self.0, tenant, enabled, after, limit).await
    }
}

impl PointsStore for Points<'_, DatabaseTransaction> {
    async fn insert_rule(&self, rule: &PointsRule) -> Result<(), MarketingError> {
        super::insert_rule(self.0, rule).await
    }

    async fn update_rule(
        &self,
        tenant: &TenantId,
        id: Uuid,
        expected_version: i64,
        terms: &RuleTerms,
        now: UnixMicros,
        actor: Option<&str>,
    ) -> Result<Option<PointsRule>, MarketingError> {
        super::update_rule(self.0, tenant, id, expected_version, terms, now, actor).await
    }

    async fn delete_finished_holds(
        &self,
        before: UnixMicros,
        limit: u64,
    ) -> Result<u64, MarketingError> {
        super::delete_finished_holds(self.0, before, limit).await
    }
}
