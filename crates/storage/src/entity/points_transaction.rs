use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "points_transactions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: String,
    pub account_id: Uuid,
    pub member_id: String,
    pub tx_type: i16,
    /// Change of `available`.
    pub amount: i64,
    /// Change of `frozen`.
    pub frozen_amount: i64,
    pub available_after: i64,
    pub frozen_after: i64,
    pub biz_type: Option<String>,
    pub biz_id: Option<String>,
    pub request_id: Option<String>,
    pub hold_id: Option<Uuid>,
    pub related_transaction_id: Option<Uuid>,
    pub description: String,
    pub expires_at: Option<i64>,
    /// The account version the entry's write produced; with `position`, the ledger's order.
    pub account_version: i64,
    pub position: i32,
    pub created_at: i64,
    /// The API client that made the entry.
    pub actor: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
