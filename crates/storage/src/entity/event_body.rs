use sea_orm::entity::prelude::*;

/// A batch's events, packed (`marketing_migration::event_format`): written once with the
/// change, never updated (numbering updates only the narrow `event_batches` row).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_bodies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub batch_id: Uuid,
    /// A `PackedEvents` message: the batch's events in seq order.
    pub events: Vec<u8>,
    /// The aggregates the events are about (`type/id`, space-separated): an audit trail finds
    /// its batches through them.
    pub aggregates: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
