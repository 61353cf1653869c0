use sea_orm::entity::prelude::*;

/// A tenant's settings, once it updated them.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenant_settings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    /// `EUR=100:100;USD=1:1` (`marketing_domain::tenant_settings::points_values_text`).
    pub points_values: String,
    pub max_points_share_bp: i32,
    pub min_points_redemption: i64,
    pub max_coupons_per_order: Option<i32>,
    pub version: i64,
    pub updated_at: i64,
    pub actor: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
