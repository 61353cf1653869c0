use sea_orm::entity::prelude::*;

/// A redemption code of a template: shared (`kind` 1) or unique (2); a unique code once
/// claimed names its member, coupon and time.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "coupon_codes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    /// Canonical form: upper case, without spaces and dashes.
    #[sea_orm(primary_key, auto_increment = false)]
    pub code: String,
    pub template_id: Uuid,
    pub kind: i16,
    pub member_id: Option<String>,
    pub user_coupon_id: Option<Uuid>,
    pub claimed_at: Option<i64>,
    pub created_at: i64,
    pub actor: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
