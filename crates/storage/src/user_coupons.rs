//! Coupons held by members. Queries are scoped by tenant; a state change is a
//! compare-and-set on the row's version; sweeps are conditional batch updates that any number
//! of replicas may run at once.

use std::collections::HashMap;

use marketing_domain::{
    CouponId, MarketingError, MemberId, TemplateId, TenantId, UnixMicros,
    coupon_template::Currency,
    error::Refusal,
    user_coupon::{CouponStatus, UserCoupon},
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend,
    EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select, Statement,
    sea_query::Expr,
};

use crate::{
    db::{RowReader, constant, db_error},
    entity::user_coupon as uc,
};

/// Where members' coupons are read: the pool (each read its own snapshot) or a unit of work
/// ([`crate::unit::UnitOfWork::coupons`]).
#[allow(async_fn_in_trait)]
pub trait CouponReads {
    async fn find(
        &self,
        tenant: &TenantId,
        id: CouponId,
    ) -> Result<Option<UserCoupon>, MarketingError>;

    /// The coupon, if it exists in `tenant` and (when given) belongs to `member`; else
    /// `CouponNotFound`.
    async fn get(
        &self,
        tenant: &TenantId,
        id: CouponId,
        member: Option<&MemberId>,
    ) -> Result<UserCoupon, MarketingError>;

    /// A member's coupons, newest first, before `before`, whose status at `now` is one of
    /// `statuses` (any when empty).
    async fn list_for_member(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        statuses: &[CouponStatus],
        before: Option<CouponId>,
        limit: u64,
        now: UnixMicros,
    ) -> Result<Vec<UserCoupon>, MarketingError>;

    /// The highest claim slot each of `members` holds of `template` (members holding none are
    /// absent).
    async fn held_slots(
        &self,
        template: TemplateId,
        members: &[&MemberId],
    ) -> Result<HashMap<MemberId, i32>, MarketingError>;

    /// Those of `ids` that exist in `tenant` and belong to `member` (any order).
    async fn find_many(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        ids: &[CouponId],
    ) -> Result<Vec<UserCoupon>, MarketingError>;

    /// The member's coupons locked (a lock that has not lapsed at `now`) or used for
    /// `order_id`.
    async fn on_order(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        order_id: &str,
        now: UnixMicros,
    ) -> Result<Vec<UserCoupon>, MarketingError>;
}

/// The writes of coupons: inside a unit of work only.
#[allow(async_fn_in_trait)]
pub trait CouponStore: CouponReads {
    async fn insert_many(&self, coupons: &[UserCoupon]) -> Result<(), MarketingError>;

    /// Serialises the locks and uses of one order's coupons until the unit ends, so the
    /// stacking rules checked against the order's other coupons hold under concurrency.
    async fn lock_order(&self, tenant: &TenantId, order_id: &str) -> Result<(), MarketingError>;

    /// Writes `coupon`'s state if the stored row still has `read_version`; the row's version
    /// rises by one. `false` when a concurrent change won.
    async fn compare_and_set(
        &self,
        coupon: &UserCoupon,
        read_version: i64,
    ) -> Result<bool, MarketingError>;

    /// Returns up to `limit` LOCKED coupons whose lock lapsed before `now` to AVAILABLE, in
    /// one conditional update: safe beside requests and other replicas' sweeps.
    async fn release_lapsed_locks(
        &self,
        now: UnixMicros,
        limit: u64,
    ) -> Result<Swept, MarketingError>;

    /// Marks up to `limit` unused coupons past their validity EXPIRED, the same way.
    async fn expire_lapsed(&self, now: UnixMicros, limit: u64) -> Result<Swept, MarketingError>;
}

/// The coupons as one connection sees them (SeaORM, on PostgreSQL and SQLite alike).
pub struct Coupons<'c, C>(pub(crate) &'c C);

impl<C: ConnectionTrait> CouponReads for Coupons<'_, C> {
    async fn find(
        &self,
        tenant: &TenantId,
        id: CouponId,
    ) -> Result<Option<UserCoupon>, MarketingError> {
        find(self.0, tenant, id).await
    }

    async fn get(
        &self,
        tenant: &TenantId,
        id: CouponId,
        member: Option<&MemberId>,
    ) -> Result<UserCoupon, MarketingError> {
        get(self.0, tenant, id, member).await
    }

    async fn list_for_member(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        statuses: &[CouponStatus],
        before: Option<CouponId>,
        limit: u64,
        now: UnixMicros,
    ) -> Result<Vec<UserCoupon>, MarketingError> {
        list_for_member(self.0, tenant, member, statuses, before, limit, now).await
    }

    async fn held_slots(
        &self,
        template: TemplateId,
        members: &[&MemberId],
    ) -> Result<HashMap<MemberId, i32>, MarketingError> {
        held_slots(self.0, template, members).await
    }

    async fn find_many(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        ids: &[CouponId],
    ) -> Result<Vec<UserCoupon>, MarketingError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let query = uc::Entity::find()
            .filter(uc::Column::TenantId.eq(tenant.as_str()))
            .filter(uc::Column::MemberId.eq(member.as_str()))
            .filter(uc::Column::Id.is_in(ids.iter().map(|id| id.0)));
        fetch(self.0, query).await
    }

    async fn on_order(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        order_id: &str,
        now: UnixMicros,
    ) -> Result<Vec<UserCoupon>, MarketingError> {
        let query = uc::Entity::find()
            .filter(uc::Column::TenantId.eq(tenant.as_str()))
            .filter(uc::Column::MemberId.eq(member.as_str()))
            .filter(uc::Column::OrderId.eq(order_id))
            .filter(
                Condition::any()
                    .add(effective_status_is(CouponStatus::Locked, now))
                    .add(effective_status_is(CouponStatus::Used, now)),
            );
        fetch(self.0, query).await
    }
}

impl CouponStore for Coupons<'_, DatabaseTransaction> {
    async fn insert_many(&self, coupons: &[UserCoupon]) -> Result<(), MarketingError> {
        insert_many(self.0, coupons).await
    }

    async fn lock_order(&self, tenant: &TenantId, order_id: &str) -> Result<(), MarketingError> {
        if self.0.get_database_backend() != sea_orm::DbBackend::Postgres {
            // A SQLite write transaction already excludes every other writer.
            return Ok(());
        }
        // A transaction-scoped advisory lock on the order's key: another lock or use for the
        // same order waits here until this transaction ends, then sees its coupons. Keys that
        // collide only make two orders queue.
        let key = order_lock_key(tenant.as_str(), order_id);
        self.0
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [key.into()],
            ))
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn compare_and_set(
        &self,
        coupon: &UserCoupon,
        read_version: i64,
    ) -> Result<bool, MarketingError> {
        compare_and_set(self.0, coupon, read_version).await
    }

    async fn release_lapsed_locks(
        &self,
        now: UnixMicros,
        limit: u64,
    ) -> Result<Swept, MarketingError> {
        release_lapsed_locks(self.0, now, limit).await
    }

    async fn expire_lapsed(&self, now: UnixMicros, limit: u64) -> Result<Swept, MarketingError> {
        expire_lapsed(self.0, now, limit).await
    }
}

/// Members per `IN (...)` list.
const IN_CHUNK: usize = 1000;

async fn insert_many(
    conn: &impl ConnectionTrait,
    coupons: &[UserCoupon],
) -> Result<(), MarketingError> {
    crate::db::insert_rows(conn, coupons.iter().map(to_row).collect()).await
}

/// The highest claim slot each of `members` holds of `template` (members holding none are
/// absent).
async fn held_slots(
    conn: &impl ConnectionTrait,
    template: TemplateId,
    members: &[&MemberId],
) -> Result<HashMap<MemberId, i32>, MarketingError> {
    let mut held = HashMap::new();
    let mut unique: Vec<&str> = members.iter().map(|m| m.as_str()).collect();
    unique.sort_unstable();
    unique.dedup();
    for chunk in unique.chunks(IN_CHUNK) {
        let rows: Vec<(String, Option<i32>)> = uc::Entity::find()
            .select_only()
            .column(uc::Column::MemberId)
            .column_as(uc::Column::ClaimSlot.max(), "max_slot")
            .filter(uc::Column::TemplateId.eq(template.0))
            .filter(uc::Column::MemberId.is_in(chunk.iter().copied()))
            .group_by(uc::Column::MemberId)
            .into_tuple()
            .all(conn)
            .await
            .map_err(db_error)?;
        for (member, slot) in rows {
            if let (Ok(member), Some(slot)) = (MemberId::parse("member_id", &member), slot) {
                held.insert(member, slot);
            }
        }
    }
    Ok(held)
}

async fn find(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: CouponId,
) -> Result<Option<UserCoupon>, MarketingError> {
    let query = uc::Entity::find_by_id(id.0).filter(uc::Column::TenantId.eq(tenant.as_str()));
    Ok(fetch(conn, query).await?.pop())
}

/// The coupon, if it exists in `tenant` and (when given) belongs to `member`.
async fn get(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: CouponId,
    member: Option<&MemberId>,
) -> Result<UserCoupon, MarketingError> {
    find(conn, tenant, id)
        .await?
        .filter(|coupon| member.is_none_or(|m| &coupon.member_id == m))
        .ok_or(MarketingError::Refused(Refusal::CouponNotFound))
}

/// Rows whose *effective* status (see `UserCoupon::effective_status`) is `status` at `now`.
fn effective_status_is(status: CouponStatus, now: UnixMicros) -> Condition {
    let code = |s: CouponStatus| s.code();
    let valid = uc::Column::ValidUntilAt.gt(now.0);
    match status {
        CouponStatus::Available => Condition::any()
            .add(
                Condition::all()
                    .add(uc::Column::Status.eq(code(CouponStatus::Available)))
                    .add(valid.clone()),
            )
            .add(
                Condition::all()
                    .add(uc::Column::Status.eq(code(CouponStatus::Locked)))
                    .add(uc::Column::LockExpiresAt.lte(now.0))
                    .add(valid),
            ),
        CouponStatus::Locked => Condition::all()
            .add(uc::Column::Status.eq(code(CouponStatus::Locked)))
            .add(uc::Column::LockExpiresAt.gt(now.0))
            .add(valid),
        CouponStatus::Expired => Condition::any()
            .add(uc::Column::Status.eq(code(CouponStatus::Expired)))
            .add(
                Condition::all()
                    .add(
                        uc::Column::Status
                            .is_in([code(CouponStatus::Available), code(CouponStatus::Locked)]),
                    )
                    .add(uc::Column::ValidUntilAt.lte(now.0)),
            ),
        CouponStatus::Used | CouponStatus::Revoked => {
            Condition::all().add(uc::Column::Status.eq(code(status)))
        }
    }
}

/// A member's coupons, newest first, before `before`, in any of `statuses` (all when empty).
async fn list_for_member(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    member: &MemberId,
    statuses: &[CouponStatus],
    before: Option<CouponId>,
    limit: u64,
    now: UnixMicros,
) -> Result<Vec<UserCoupon>, MarketingError> {
    let mut query = uc::Entity::find()
        .filter(uc::Column::TenantId.eq(tenant.as_str()))
        .filter(uc::Column::MemberId.eq(member.as_str()));
    if let Some(before) = before {
        query = query.filter(uc::Column::Id.lt(before.0));
    }
    if !statuses.is_empty() {
        let any = statuses.iter().fold(Condition::any(), |any, status| {
            any.add(effective_status_is(*status, now))
        });
        query = query.filter(any);
    }
    fetch(conn, query.order_by_desc(uc::Column::Id).limit(limit)).await
}

/// Runs a query for whole coupon rows and decodes them with [`RowReader`] (by position, in
/// the column order of `uc::Model`, which `find()` selects).
async fn fetch(
    conn: &impl ConnectionTrait,
    query: sea_orm::Select<uc::Entity>,
) -> Result<Vec<UserCoupon>, MarketingError> {
    let statement = sea_orm::QueryTrait::build(&query, conn.get_database_backend());
    conn.query_all_raw(statement)
        .await
        .map_err(db_error)?
        .iter()
        .map(|row| model_of(row).map_err(db_error).and_then(to_domain))
        .collect()
}

fn model_of(row: &sea_orm::QueryResult) -> Result<uc::Model, sea_orm::DbErr> {
    let mut r = RowReader::new(row);
    Ok(uc::Model {
        id: r.next("id")?,
        tenant_id: r.next("tenant_id")?,
        template_id: r.next("template_id")?,
        member_id: r.next("member_id")?,
        claim_slot: r.next("claim_slot")?,
        status: r.next("status")?,
        discount_type: r.next("discount_type")?,
        discount_amount: r.next("discount_amount")?,
        discount_basis_points: r.next("discount_basis_points")?,
        max_discount_amount: r.next("max_discount_amount")?,
        currency: r.next("currency")?,
        min_spend_amount: r.next("min_spend_amount")?,
        valid_from_at: r.next("valid_from_at")?,
        valid_until_at: r.next("valid_until_at")?,
        claimed_at: r.next("claimed_at")?,
        order_id: r.next("order_id")?,
        lock_expires_at: r.next("lock_expires_at")?,
        order_amount: r.next("order_amount")?,
        discount_applied: r.next("discount_applied")?,
        used_at: r.next("used_at")?,
        revoke_reason: r.next("revoke_reason")?,
        revoked_at: r.next("revoked_at")?,
        version: r.next("version")?,
        updated_at: r.next("updated_at")?,
        actor: r.next("actor")?,
        cart_terms: r.next("cart_terms")?,
    })
}

/// Writes `coupon`'s state if the stored row still has `read_version` (compare-and-set);
/// the row's version rises by one. `false` when a concurrent change won.
async fn compare_and_set(
    conn: &impl ConnectionTrait,
    coupon: &UserCoupon,
    read_version: i64,
) -> Result<bool, MarketingError> {
    let result = uc::Entity::update_many()
        .col_expr(uc::Column::Status, Expr::value(coupon.status.code()))
        .col_expr(uc::Column::OrderId, Expr::value(coupon.order_id.clone()))
        .col_expr(
            uc::Column::LockExpiresAt,
            Expr::value(coupon.lock_expires_at.map(|t| t.0)),
        )
        .col_expr(uc::Column::OrderAmount, Expr::value(coupon.order_amount))
        .col_expr(
            uc::Column::DiscountApplied,
            Expr::value(coupon.discount_applied),
        )
        .col_expr(uc::Column::UsedAt, Expr::value(coupon.used_at.map(|t| t.0)))
        .col_expr(
            uc::Column::RevokeReason,
            Expr::value(coupon.revoke_reason.clone()),
        )
        .col_expr(
            uc::Column::RevokedAt,
            Expr::value(coupon.revoked_at.map(|t| t.0)),
        )
        .col_expr(uc::Column::Version, Expr::value(read_version + 1))
        .col_expr(uc::Column::UpdatedAt, Expr::value(coupon.updated_at.0))
        .col_expr(uc::Column::Actor, Expr::value(coupon.actor.clone()))
        .filter(uc::Column::Id.eq(coupon.id.0))
        .filter(uc::Column::TenantId.eq(coupon.tenant_id.as_str()))
        .filter(uc::Column::Version.eq(read_version))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected == 1)
}

/// Returns up to `limit` LOCKED coupons whose lock lapsed before `now` to AVAILABLE, and
/// tells which changed.
async fn release_lapsed_locks(
    conn: &impl ConnectionTrait,
    now: UnixMicros,
    limit: u64,
) -> Result<Swept, MarketingError> {
    let update = uc::Entity::update_many()
        .col_expr(
            uc::Column::Status,
            Expr::value(CouponStatus::Available.code()),
        )
        .col_expr(uc::Column::OrderId, Expr::value(Option::<String>::None))
        .col_expr(uc::Column::LockExpiresAt, Expr::value(Option::<i64>::None));
    sweep(conn, lapsed_locks(now), update, now, limit).await
}

/// Locked coupons whose lock lapsed before `now`, soonest first: a walk of the partial index
/// `idx_user_coupons_lock_expiring` that stops at the first one not due.
fn lapsed_locks(now: UnixMicros) -> Due {
    Due {
        condition: Condition::all()
            .add(Expr::col(uc::Column::Status).eq(constant(CouponStatus::Locked.code())))
            // The time as a constant too: planned for this instant, the partial index is chosen.
            .add(Expr::col(uc::Column::LockExpiresAt).lte(constant(now.0))),
        order: uc::Column::LockExpiresAt,
    }
}

/// Unused (AVAILABLE or LOCKED) coupons past their validity, soonest first: a walk of the
/// partial index `idx_user_coupons_expiring`. Without the order, a planner that expects many
/// coupons to be due scans the whole table for the few that are.
fn lapsed_validity(now: UnixMicros) -> Due {
    Due {
        condition: Condition::all()
            .add(Expr::col(uc::Column::Status).is_in([
                constant(CouponStatus::Available.code()),
                constant(CouponStatus::Locked.code()),
            ]))
            .add(Expr::col(uc::Column::ValidUntilAt).lte(constant(now.0))),
        order: uc::Column::ValidUntilAt,
    }
}

/// What a sweep changes, and the indexed column it walks in order.
struct Due {
    condition: Condition,
    order: uc::Column,
}

impl Due {
    fn select(&self, limit: u64) -> Select<uc::Entity> {
        uc::Entity::find()
            .select_only()
            .column(uc::Column::Id)
            .column(uc::Column::TenantId)
            .column(uc::Column::MemberId)
            .filter(self.condition.clone())
            .order_by_asc(self.order)
            .limit(limit)
    }
}

/// The reads of the coupon sweepers at `now`, by name, as `backend` runs them: for tests of
/// their plans.
pub fn sweeper_reads(
    backend: DbBackend,
    now: UnixMicros,
    limit: u64,
) -> Vec<(&'static str, Statement)> {
    vec![
        (
            "coupon locks lapsed",
            lapsed_locks(now).select(limit).build(backend),
        ),
        (
            "coupons expired",
            lapsed_validity(now).select(limit).build(backend),
        ),
    ]
}

/// Marks up to `limit` unused (AVAILABLE or LOCKED) coupons past their validity EXPIRED, and
/// tells which changed.
async fn expire_lapsed(
    conn: &impl ConnectionTrait,
    now: UnixMicros,
    limit: u64,
) -> Result<Swept, MarketingError> {
    let update = uc::Entity::update_many()
        .col_expr(
            uc::Column::Status,
            Expr::value(CouponStatus::Expired.code()),
        )
        .col_expr(uc::Column::LockExpiresAt, Expr::value(Option::<i64>::None));
    sweep(conn, lapsed_validity(now), update, now, limit).await
}

/// What one sweep changed.
#[derive(Debug, Default)]
pub struct Swept {
    /// Coupons changed.
    pub changed: u64,
    /// Whose coupons were due (tenant id, member id as stored), each once: a superset of
    /// whose changed.
    pub holders: Vec<(String, String)>,
    /// The coupons changed, as the sweep left them.
    pub coupons: Vec<UserCoupon>,
}

/// Applies `update` to up to `limit` rows matching `due` (found through the partial indexes).
/// The update repeats the `due` condition, so rows changed meanwhile, by a request or another
/// replica's sweeper, are left alone: concurrent sweeps never double-apply.
async fn sweep(
    conn: &impl ConnectionTrait,
    due: Due,
    update: sea_orm::UpdateMany<uc::Entity>,
    now: UnixMicros,
    limit: u64,
) -> Result<Swept, MarketingError> {
    let due_rows = due
        .select(limit)
        .into_tuple::<(uuid::Uuid, String, String)>()
        .all(conn)
        .await
        .map_err(db_error)?;
    if due_rows.is_empty() {
        return Ok(Swept::default());
    }
    let mut ids = Vec::with_capacity(due_rows.len());
    let mut holders = Vec::with_capacity(due_rows.len());
    for (id, tenant, member) in due_rows {
        ids.push(id);
        holders.push((tenant, member));
    }
    holders.sort_unstable();
    holders.dedup();
    let changed = update
        .col_expr(uc::Column::Version, Expr::col(uc::Column::Version).add(1))
        .col_expr(uc::Column::UpdatedAt, Expr::value(now.0))
        // The server's own change: no client made it.
        .col_expr(uc::Column::Actor, Expr::value(Option::<String>::None))
        .filter(uc::Column::Id.is_in(ids))
        .filter(due.condition)
        .exec_with_returning(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(to_domain)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Swept {
        changed: changed.len() as u64,
        holders,
        coupons: changed,
    })
}

fn to_row(coupon: &UserCoupon) -> uc::ActiveModel {
    let columns = crate::cart_terms::to_columns(&coupon.discount, &coupon.cart);
    uc::ActiveModel {
        id: Set(coupon.id.0),
        tenant_id: Set(coupon.tenant_id.as_str().to_owned()),
        template_id: Set(coupon.template_id.0),
        member_id: Set(coupon.member_id.as_str().to_owned()),
        claim_slot: Set(coupon.claim_slot),
        status: Set(coupon.status.code()),
        discount_type: Set(columns.kind),
        discount_amount: Set(columns.amount),
        discount_basis_points: Set(columns.basis_points),
        max_discount_amount: Set(columns.cap),
        cart_terms: Set(columns.cart_terms),
        currency: Set(coupon.currency.as_str().to_owned()),
        min_spend_amount: Set(coupon.min_spend_amount),
        valid_from_at: Set(coupon.valid_from.0),
        valid_until_at: Set(coupon.valid_until.0),
        claimed_at: Set(coupon.claimed_at.0),
        order_id: Set(coupon.order_id.clone()),
        lock_expires_at: Set(coupon.lock_expires_at.map(|t| t.0)),
        order_amount: Set(coupon.order_amount),
        discount_applied: Set(coupon.discount_applied),
        used_at: Set(coupon.used_at.map(|t| t.0)),
        revoke_reason: Set(coupon.revoke_reason.clone()),
        revoked_at: Set(coupon.revoked_at.map(|t| t.0)),
        version: Set(coupon.version),
        updated_at: Set(coupon.updated_at.0),
        actor: Set(coupon.actor.clone()),
    }
}

pub(crate) fn to_domain(row: uc::Model) -> Result<UserCoupon, MarketingError> {
    let corrupt = |what: &str| {
        MarketingError::internal(format!("user coupon {} has a corrupt {what}", row.id))
    };
    let (discount, cart) = crate::cart_terms::from_columns(crate::cart_terms::DiscountColumns {
        kind: row.discount_type,
        amount: row.discount_amount,
        basis_points: row.discount_basis_points,
        cap: row.max_discount_amount,
        cart_terms: row.cart_terms.clone(),
    })
    .ok_or_else(|| corrupt("discount"))?;
    Ok(UserCoupon {
        id: CouponId(row.id),
        tenant_id: TenantId::parse("tenant_id", &row.tenant_id)
            .map_err(|_| corrupt("tenant id"))?,
        template_id: TemplateId(row.template_id),
        member_id: MemberId::parse("member_id", &row.member_id)
            .map_err(|_| corrupt("member id"))?,
        claim_slot: row.claim_slot,
        status: CouponStatus::from_code(row.status).ok_or_else(|| corrupt("status"))?,
        discount,
        currency: Currency::parse("currency", &row.currency).map_err(|_| corrupt("currency"))?,
        min_spend_amount: row.min_spend_amount,
        cart,
        valid_from: UnixMicros(row.valid_from_at),
        valid_until: UnixMicros(row.valid_until_at),
        claimed_at: UnixMicros(row.claimed_at),
        order_id: row.order_id,
        lock_expires_at: row.lock_expires_at.map(UnixMicros),
        order_amount: row.order_amount,
        discount_applied: row.discount_applied,
        used_at: row.used_at.map(UnixMicros),
        revoke_reason: row.revoke_reason,
        revoked_at: row.revoked_at.map(UnixMicros),
        version: row.version,
        updated_at: UnixMicros(row.updated_at),
        actor: row.actor,
    })
}

/// A stable 64-bit key of an order (FNV-1a over tenant and order id).
fn order_lock_key(tenant: &str, order_id: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in tenant.bytes().chain([0]).chain(order_id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}
