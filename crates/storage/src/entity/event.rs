use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    /// Set by the sequencer after the event's change committed; `None` until then.
    pub position: Option<i64>,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub member_id: Option<String>,
    pub occurred_at: i64,
    pub request_id: Option<String>,
    pub actor: Option<String>,
    /// The event's payload as the contract encodes it (`marketing.v1.Event`'s `payload`).
    pub payload: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
