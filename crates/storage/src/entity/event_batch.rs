use sea_orm::entity::prelude::*;

/// The events one change recorded for one tenant (their body in `event_bodies`), numbered
/// together after they commit.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_batches")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    /// Set by the sequencer after the change committed; `None` until then.
    pub position: Option<i64>,
    /// When its first event was recorded (microseconds): retention deletes by it.
    pub first_at: i64,
    /// A bit per type of its events (the type's index in `EVENT_TYPES`).
    pub type_mask: i64,
    /// How many events it holds (its last event's seq).
    pub event_count: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
