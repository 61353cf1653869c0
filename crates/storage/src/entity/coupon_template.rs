use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "coupon_templates")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub description: String,
    pub discount_type: i16,
    pub discount_amount: Option<i64>,
    pub discount_basis_points: Option<i32>,
    pub max_discount_amount: Option<i64>,
    pub currency: String,
    pub min_spend_amount: i64,
    pub total_stock: i64,
    pub remaining_stock: i64,
    pub claimed_count: i64,
    pub used_count: i64,
    pub per_member_limit: i32,
    pub distribution_start_at: i64,
    pub distribution_end_at: i64,
    pub validity_kind: i16,
    pub valid_from_at: Option<i64>,
    pub valid_until_at: Option<i64>,
    pub valid_days: Option<i32>,
    pub enabled: bool,
    pub archived_at: Option<i64>,
    /// The etag: raised by changes of the terms, enabled flag, stock or archiving.
    pub version: i64,
    /// Raised by every write of the row, claims included: orders cached copies.
    pub revision: i64,
    /// Raised by every stock claim under a lock; a lock holder whose token is older cannot write.
    pub fence_token: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The API client that made the latest change; NULL without auth and for the server's own.
    pub actor: Option<String>,
    /// The code inventory: unique codes generated, unique codes claimed, shared codes.
    pub unique_code_count: i64,
    pub unique_codes_claimed: i64,
    pub shared_code_count: i64,
    pub cart_terms: Option<String>,
    pub budget_amount: Option<i64>,
    pub budget_used: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
