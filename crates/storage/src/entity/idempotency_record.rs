use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_id: String,
    /// The request id's owner: the API client's name, empty without auth, `*` (any client)
    /// for records written before request ids were per client.
    #[sea_orm(primary_key, auto_increment = false)]
    pub client: String,
    pub operation: String,
    /// SHA-256 of the request without its request id.
    pub fingerprint: Vec<u8>,
    /// gRPC status code of the first outcome (0 = OK); -1 while its transaction is open.
    pub status_code: i32,
    /// The encoded first response (or error details).
    pub response: Vec<u8>,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
