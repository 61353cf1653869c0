//! Tenants' settings: read (a tenant without a row has the defaults) and updated under their
//! version, the etag.

use marketing_domain::{
    MarketingError, TenantId, UnixMicros,
    error::Refusal,
    tenant_settings::{SettingsTerms, TenantSettings, parse_points_values, points_values_text},
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    sea_query::Expr,
};

use crate::{
    db::{db_error, insert_if_absent},
    entity::tenant_settings as row,
};

/// Where settings are read: the pool or a unit of work.
#[allow(async_fn_in_trait)]
pub trait SettingsReads {
    /// The tenant's settings, the defaults when it never set any.
    async fn get(&self, tenant: &TenantId) -> Result<TenantSettings, MarketingError>;
}

/// The writes of settings: inside a unit of work only.
#[allow(async_fn_in_trait)]
pub trait SettingsStore: SettingsReads {
    /// Writes `terms` as the tenant's settings when their version is `expected` (0: never
    /// set), raising it; `VersionMismatch` otherwise. The settings as written.
    async fn update(
        &self,
        tenant: &TenantId,
        expected: i64,
        terms: &SettingsTerms,
        now: UnixMicros,
        actor: Option<&str>,
    ) -> Result<TenantSettings, MarketingError>;
}

/// The settings as one connection sees them.
pub struct Settings<'c, C>(pub(crate) &'c C);

impl<C: ConnectionTrait> SettingsReads for Settings<'_, C> {
    async fn get(&self, tenant: &TenantId) -> Result<TenantSettings, MarketingError> {
        match row::Entity::find_by_id(tenant.as_str())
            .one(self.0)
            .await
            .map_err(db_error)?
        {
            Some(stored) => to_domain(tenant, stored),
            None => Ok(TenantSettings::defaults(tenant.clone())),
        }
    }
}

impl SettingsStore for Settings<'_, DatabaseTransaction> {
    async fn update(
        &self,
        tenant: &TenantId,
        expected: i64,
        terms: &SettingsTerms,
        now: UnixMicros,
        actor: Option<&str>,
    ) -> Result<TenantSettings, MarketingError> {
        let values = points_values_text(&terms.points_values);
        let written = if expected == 0 {
            let first = row::ActiveModel {
                tenant_id: Set(tenant.as_str().to_owned()),
                points_values: Set(values),
                max_points_share_bp: Set(terms.max_points_share_bp),
                min_points_redemption: Set(terms.min_points_redemption),
                max_coupons_per_order: Set(terms.max_coupons_per_order),
                version: Set(1),
                updated_at: Set(now.0),
                actor: Set(actor.map(str::to_owned)),
            };
            insert_if_absent(self.0, first, [row::Column::TenantId]).await?
        } else {
            row::Entity::update_many()
                .col_expr(row::Column::PointsValues, Expr::value(values))
                .col_expr(
                    row::Column::MaxPointsShareBp,
                    Expr::value(terms.max_points_share_bp),
                )
                .col_expr(
                    row::Column::MinPointsRedemption,
                    Expr::value(terms.min_points_redemption),
                )
                .col_expr(
                    row::Column::MaxCouponsPerOrder,
                    Expr::value(terms.max_coupons_per_order),
                )
                .col_expr(row::Column::Version, Expr::value(expected + 1))
                .col_expr(row::Column::UpdatedAt, Expr::value(now.0))
                .col_expr(row::Column::Actor, Expr::value(actor.map(str::to_owned)))
                .filter(row::Column::TenantId.eq(tenant.as_str()))
                .filter(row::Column::Version.eq(expected))
                .exec(self.0)
                .await
                .map_err(db_error)?
                .rows_affected
                == 1
        };
        let current = self.get(tenant).await?;
        if !written {
            return Err(MarketingError::Refused(Refusal::VersionMismatch {
                expected,
                current: current.version,
            }));
        }
        Ok(current)
    }
}

fn to_domain(tenant: &TenantId, stored: row::Model) -> Result<TenantSettings, MarketingError> {
    let points_values = parse_points_values(&stored.points_values).ok_or_else(|| {
        MarketingError::internal(format!("the settings of tenant {tenant} are corrupt"))
    })?;
    Ok(TenantSettings {
        tenant_id: tenant.clone(),
        terms: SettingsTerms {
            points_values,
            max_points_share_bp: stored.max_points_share_bp,
            min_points_redemption: stored.min_points_redemption,
            max_coupons_per_order: stored.max_coupons_per_order,
        },
        version: stored.version,
        updated_at: Some(UnixMicros(stored.updated_at)),
        actor: stored.actor,
    })
}
