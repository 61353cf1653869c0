//! API clients: created with the digest of their key, listed, revoked, and found by the key
//! id of a presented key.

use std::collections::BTreeSet;

use marketing_domain::{
    MarketingError, TenantId, UnixMicros,
    auth::{ApiClient, Role, Tenants},
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    db::{DbFailure, classify, db_error},
    entity::api_client as client,
    points::corrupt,
};

/// Where API clients are read: the pool or a unit of work.
#[allow(async_fn_in_trait)]
pub trait ClientReads {
    /// Every client, oldest first.
    async fn list(&self) -> Result<Vec<ApiClient>, MarketingError>;

    /// The client whose key has `key_id`, revoked or not.
    async fn find_by_key_id(&self, key_id: &str) -> Result<Option<StoredClient>, MarketingError>;

    /// The client named `name`, revoked or not (mTLS certificates name clients).
    async fn find_by_name(&self, name: &str) -> Result<Option<ApiClient>, MarketingError>;

    /// How many clients are not revoked.
    async fn count_active(&self) -> Result<u64, MarketingError>;
}

/// The writes of API clients: inside a unit of work only.
#[allow(async_fn_in_trait)]
pub trait ClientStore: ClientReads {
    /// Adds a client; `Ok(false)` when the name or key id is taken (revoked clients keep
    /// theirs). After `false` the unit must be dropped, not committed.
    async fn insert(
        &self,
        client: &ApiClient,
        key_id: &str,
        key_digest: &[u8],
    ) -> Result<bool, MarketingError>;

    /// Revokes the client named `name`; `Ok(false)` when there is none that is not revoked.
    async fn revoke(&self, name: &str, now: UnixMicros) -> Result<bool, MarketingError>;
}

/// The clients as one connection sees them (SeaORM, on PostgreSQL and SQLite alike).
pub struct Clients<'c, C>(pub(crate) &'c C);

impl<C: ConnectionTrait> ClientReads for Clients<'_, C> {
    async fn list(&self) -> Result<Vec<ApiClient>, MarketingError> {
        list(self.0).await
    }

    async fn find_by_key_id(&self, key_id: &str) -> Result<Option<StoredClient>, MarketingError> {
        find_by_key_id(self.0, key_id).await
    }

    async fn find_by_name(&self, name: &str) -> Result<Option<ApiClient>, MarketingError> {
        find_by_name(self.0, name).await
    }

    async fn count_active(&self) -> Result<u64, MarketingError> {
        count_active(self.0).await
    }
}

impl ClientStore for Clients<'_, DatabaseTransaction> {
    async fn insert(
        &self,
        client: &ApiClient,
        key_id: &str,
        key_digest: &[u8],
    ) -> Result<bool, MarketingError> {
        insert(self.0, client, key_id, key_digest).await
    }

    async fn revoke(&self, name: &str, now: UnixMicros) -> Result<bool, MarketingError> {
        revoke(self.0, name, now).await
    }
}

/// A client as stored: who it is, and the digest its key must match.
pub struct StoredClient {
    pub client: ApiClient,
    pub key_digest: Vec<u8>,
}

/// Adds a client; `Ok(false)` when the name is taken (revoked clients keep theirs).
async fn insert(
    conn: &impl ConnectionTrait,
    client: &ApiClient,
    key_id: &str,
    key_digest: &[u8],
) -> Result<bool, MarketingError> {
    let tenants = match &client.tenants {
        Tenants::All => None,
        Tenants::Only(tenants) => Some(
            tenants
                .iter()
                .map(TenantId::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    let row = client::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(client.name.clone()),
        role: Set(client.role.code()),
        tenants: Set(tenants),
        key_id: Set(key_id.to_owned()),
        key_digest: Set(key_digest.to_vec()),
        created_at: Set(client.created_at.0),
        revoked_at: Set(client.revoked_at.map(|t| t.0)),
    };
    match client::Entity::insert(row)
        .exec_without_returning(conn)
        .await
    {
        Ok(_) => Ok(true),
        Err(err) if matches!(classify(&err), DbFailure::UniqueViolation) => Ok(false),
        Err(err) => Err(db_error(err)),
    }
}

/// Every client, oldest first.
async fn list(conn: &impl ConnectionTrait) -> Result<Vec<ApiClient>, MarketingError> {
    client::Entity::find()
        .order_by_asc(client::Column::CreatedAt)
        .order_by_asc(client::Column::Name)
        .all(conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|row| to_domain(row).map(|stored| stored.client))
        .collect()
}

/// Revokes the client named `name`; `Ok(false)` when there is none that is not revoked.
async fn revoke(
    conn: &impl ConnectionTrait,
    name: &str,
    now: UnixMicros,
) -> Result<bool, MarketingError> {
    let done = client::Entity::update_many()
        .col_expr(client::Column::RevokedAt, Expr::value(now.0))
        .filter(client::Column::Name.eq(name))
        .filter(client::Column::RevokedAt.is_null())
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(done.rows_affected == 1)
}

/// The client whose key has `key_id`, revoked or not.
async fn find_by_key_id(
    conn: &impl ConnectionTrait,
    key_id: &str,
) -> Result<Option<StoredClient>, MarketingError> {
    client::Entity::find()
        .filter(client::Column::KeyId.eq(key_id))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(to_domain)
        .transpose()
}

/// The client named `name`, revoked or not (mTLS certificates name clients).
async fn find_by_name(
    conn: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<ApiClient>, MarketingError> {
    client::Entity::find()
        .filter(client::Column::Name.eq(name))
        .one(conn)
        .await
        .map_err(db_error)?
        .map(|row| to_domain(row).map(|stored| stored.client))
        .transpose()
}

/// How many clients are not revoked.
async fn count_active(conn: &impl ConnectionTrait) -> Result<u64, MarketingError> {
    client::Entity::find()
        .filter(client::Column::RevokedAt.is_null())
        .count(conn)
        .await
        .map_err(db_error)
}

fn to_domain(row: client::Model) -> Result<StoredClient, MarketingError> {
    let role = Role::from_code(row.role).ok_or_else(|| corrupt("client role", row.role))?;
    let tenants = match &row.tenants {
        None => Tenants::All,
        Some(list) => Tenants::Only(
            list.split(',')
                .map(|id| {
                    TenantId::parse("tenants", id).map_err(|_| corrupt("client tenants", &row.name))
                })
                .collect::<Result<BTreeSet<_>, _>>()?,
        ),
    };
    Ok(StoredClient {
        client: ApiClient {
            name: row.name,
            role,
            tenants,
            created_at: UnixMicros(row.created_at),
            revoked_at: row.revoked_at.map(UnixMicros),
        },
        key_digest: row.key_digest,
    })
}
