use sea_orm::entity::prelude::*;

/// One `GenerateCouponCodes` call: what it asked for and how far it got. `leased_until` says
/// until when a replica works on it; past it, another finishes it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "code_generations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    pub template_id: Uuid,
    pub count: i32,
    pub prefix: String,
    pub length: i16,
    pub generated: i32,
    pub leased_until: i64,
    pub finished_at: Option<i64>,
    pub created_at: i64,
    pub actor: Option<String>,
    /// The request that asked for it (its events name it).
    pub request_id: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
