//! Reminders before things expire: coupons still available, and points lots still holding
//! points, whose expiry falls within a window. A reminder is emitted once per coupon or lot:
//! its row in `event_reminders` is inserted in the unit that records its event, and an insert
//! of a row that exists does nothing (`ON CONFLICT DO NOTHING`), so of replicas sweeping the
//! same coupon at once, only the one whose row went in records the event.

use marketing_domain::{
    MarketingError, UnixMicros,
    user_coupon::{CouponStatus, UserCoupon},
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, JoinType, QueryFilter,
    QueryOrder, QuerySelect, RelationDef,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};
use uuid::Uuid;

use crate::{
    db::{constant, db_error},
    entity::{
        event_reminder as reminder, points_account as account, points_lot as lot, user_coupon as uc,
    },
};

/// What a reminder is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReminderKind {
    Coupon,
    Lot,
}

impl ReminderKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Coupon => "coupon",
            Self::Lot => "lot",
        }
    }
}

/// A points lot that will expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringLot {
    pub id: Uuid,
    pub tenant_id: String,
    pub member_id: String,
    /// Points it still holds.
    pub points: i64,
    pub expires_at: UnixMicros,
}

/// The reminder sweep's reads and writes, inside a unit of work.
#[allow(async_fn_in_trait)]
pub trait ReminderStore {
    /// Up to `limit` available coupons expiring after `now` and by `until` that were not
    /// reminded of, soonest first.
    async fn coupons_expiring(
        &self,
        now: UnixMicros,
        until: UnixMicros,
        limit: u64,
    ) -> Result<Vec<UserCoupon>, MarketingError>;

    /// Up to `limit` lots holding points that expire after `now` and by `until` and were not
    /// reminded of, soonest first.
    async fn lots_expiring(
        &self,
        now: UnixMicros,
        until: UnixMicros,
        limit: u64,
    ) -> Result<Vec<ExpiringLot>, MarketingError>;

    /// Records reminders of `kind` for (aggregate, due at); the aggregates whose reminder is
    /// new (the others were reminded of already, maybe by another replica just now).
    async fn remember(
        &self,
        kind: ReminderKind,
        due: Vec<(Uuid, UnixMicros)>,
    ) -> Result<Vec<Uuid>, MarketingError>;

    /// Deletes up to `limit` reminders of things that expired before `before` (never due
    /// again); how many.
    async fn forget_before(&self, before: UnixMicros, limit: u64) -> Result<u64, MarketingError>;
}

/// Reminders as a unit's transaction sees them.
pub struct Reminders<'c>(pub(crate) &'c DatabaseTransaction);

/// No reminder of `kind` exists for the row whose id is `id`.
fn not_reminded(
    kind: ReminderKind,
    id: (impl sea_orm::Iden + 'static, impl sea_orm::Iden + 'static),
) -> sea_orm::sea_query::SimpleExpr {
    Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from(reminder::Entity)
            .and_where(Expr::col((reminder::Entity, reminder::Column::Kind)).eq(kind.as_str()))
            .and_where(Expr::col((reminder::Entity, reminder::Column::AggregateId)).equals(id))
            .to_owned(),
    )
    .not()
}

fn account_of_lot() -> RelationDef {
    lot::Entity::belongs_to(account::Entity)
        .from(lot::Column::AccountId)
        .to(account::Column::Id)
        .into()
}

impl ReminderStore for Reminders<'_> {
    async fn coupons_expiring(
        &self,
        now: UnixMicros,
        until: UnixMicros,
        limit: u64,
    ) -> Result<Vec<UserCoupon>, MarketingError> {
        // A walk of the partial index `idx_user_coupons_expiring` (constants, as the sweepers').
        let rows = uc::Entity::find()
            .filter(Expr::col(uc::Column::Status).eq(constant(CouponStatus::Available.code())))
            .filter(Expr::col(uc::Column::ValidUntilAt).gt(constant(now.0)))
            .filter(Expr::col(uc::Column::ValidUntilAt).lte(constant(until.0)))
            .filter(not_reminded(
                ReminderKind::Coupon,
                (uc::Entity, uc::Column::Id),
            ))
            .order_by_asc(uc::Column::ValidUntilAt)
            .limit(limit)
            .all(self.0)
            .await
            .map_err(db_error)?;
        rows.into_iter()
            .map(crate::user_coupons::to_domain)
            .collect()
    }

    async fn lots_expiring(
        &self,
        now: UnixMicros,
        until: UnixMicros,
        limit: u64,
    ) -> Result<Vec<ExpiringLot>, MarketingError> {
        let rows: Vec<(Uuid, String, String, i64, Option<i64>)> = lot::Entity::find()
            .select_only()
            .column(lot::Column::Id)
            .column(lot::Column::TenantId)
            .column(account::Column::MemberId)
            .column(lot::Column::Remaining)
            .column(lot::Column::ExpiresAt)
            .join(JoinType::InnerJoin, account_of_lot())
            // A walk of the partial index `idx_points_lots_expiring`.
            .filter(Expr::cust("points_lots.live"))
            .filter(lot::Column::ExpiresAt.is_not_null())
            .filter(Expr::col((lot::Entity, lot::Column::ExpiresAt)).gt(constant(now.0)))
            .filter(Expr::col((lot::Entity, lot::Column::ExpiresAt)).lte(constant(until.0)))
            .filter(not_reminded(
                ReminderKind::Lot,
                (lot::Entity, lot::Column::Id),
            ))
            .order_by_asc(lot::Column::ExpiresAt)
            .limit(limit)
            .into_tuple()
            .all(self.0)
            .await
            .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, tenant_id, member_id, points, expires_at)| ExpiringLot {
                    id,
                    tenant_id,
                    member_id,
                    points,
                    expires_at: UnixMicros(expires_at.unwrap_or_default()),
                },
            )
            .collect())
    }

    async fn remember(
        &self,
        kind: ReminderKind,
        due: Vec<(Uuid, UnixMicros)>,
    ) -> Result<Vec<Uuid>, MarketingError> {
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut insert = Query::insert();
        insert
            .into_table(reminder::Entity)
            .columns([
                reminder::Column::Kind,
                reminder::Column::AggregateId,
                reminder::Column::DueAt,
            ])
            .on_conflict(
                OnConflict::columns([reminder::Column::Kind, reminder::Column::AggregateId])
                    .do_nothing()
                    .to_owned(),
            )
            .returning_col(reminder::Column::AggregateId);
        for (id, at) in due {
            insert.values_panic([kind.as_str().into(), id.into(), at.0.into()]);
        }
        let backend = self.0.get_database_backend();
        let rows = self
            .0
            .query_all_raw(backend.build(&insert))
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| row.try_get::<Uuid>("", "aggregate_id").map_err(db_error))
            .collect()
    }

    async fn forget_before(&self, before: UnixMicros, limit: u64) -> Result<u64, MarketingError> {
        crate::db::delete_batch(self.0, "event_reminders", "due_at < $1", before, limit).await
    }
}
