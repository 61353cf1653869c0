use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "points_daily_earnings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub member_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_type: String,
    /// Days since the Unix epoch (UTC).
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: i32,
    pub earned: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
