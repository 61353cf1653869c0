use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "points_accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    pub member_id: String,
    pub available: i64,
    pub frozen: i64,
    pub total_earned: i64,
    pub total_spent: i64,
    pub total_expired: i64,
    pub total_refunded: i64,
    /// Optimistic-concurrency version: every write checks and raises it.
    pub version: i64,
    /// When total_earned last rose: the leaderboard tie-break.
    pub earned_updated_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
