use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "user_coupons")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    pub template_id: Uuid,
    pub member_id: String,
    /// The n-th coupon of this template for this member; unique per (template, member).
    pub claim_slot: i32,
    pub status: i16,
    pub discount_type: i16,
    pub discount_amount: Option<i64>,
    pub discount_basis_points: Option<i32>,
    pub max_discount_amount: Option<i64>,
    pub currency: String,
    pub min_spend_amount: i64,
    pub valid_from_at: i64,
    pub valid_until_at: i64,
    pub claimed_at: i64,
    pub order_id: Option<String>,
    pub lock_expires_at: Option<i64>,
    pub order_amount: Option<i64>,
    pub discount_applied: Option<i64>,
    pub used_at: Option<i64>,
    pub revoke_reason: Option<String>,
    pub revoked_at: Option<i64>,
    pub version: i64,
    pub updated_at: i64,
    /// The API client that made the latest change; NULL without auth and for the server's own.
    pub actor: Option<String>,
    pub cart_terms: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
