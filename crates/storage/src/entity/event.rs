use sea_orm::entity::prelude::*;

/// One event: immutable; its position is its batch's (see `event_batch`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub batch_id: Uuid,
    /// Its place in the batch, from 1.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i32,
    pub id: Uuid,
    pub tenant_id: String,
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
