use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "points_rules")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    pub event_type: String,
    pub description: String,
    pub points: i64,
    pub daily_cap: Option<i64>,
    pub expiry_days: Option<i32>,
    pub enabled: bool,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The API client that made the latest change; NULL without auth and for the server's own.
    pub actor: Option<String>,
    pub per_amount_currency: Option<String>,
    pub per_amount: Option<i64>,
    pub multiplier_bp: Option<i32>,
    pub rounding: Option<i16>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
