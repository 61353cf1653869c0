use sea_orm::entity::prelude::*;

/// On SQLite only: an aggregate a batch's events are about (PostgreSQL indexes
/// `event_bodies.aggregates` instead).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_aggregates")]
pub struct Model {
    /// `type/id`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub aggregate: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub batch_id: Uuid,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
