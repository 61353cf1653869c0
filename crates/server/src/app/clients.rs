//! API clients, as operators manage them: created with a fresh key (shown once, stored only
//! as its digest), listed, revoked. These need only the database, not a running server.

use std::{collections::BTreeSet, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use marketing_domain::{
    MarketingError, TenantId, UnixMicros,
    auth::{ApiClient, KEY_ID_LEN, Role, Tenants, check_client_name},
};
use marketing_storage::{
    Database,
    clients::{ClientReads, ClientStore},
    unit::UnitOfWork,
};
use rand::{Rng, RngCore, distr::Alphanumeric};
use sha2::{Digest, Sha256};

use super::{auth::Authenticator, limits::Limits};
use crate::wire::events::client_events;

/// Who calls: the authenticator every call of the marketing services passes first, and how
/// often each member and client may call.
#[derive(Clone)]
pub struct ClientService {
    pub(crate) db: Database,
    pub auth: Arc<Authenticator>,
    pub limits: Arc<Limits>,
}

impl ClientService {
    /// How many clients are not revoked.
    pub async fn count_active(&self) -> Result<u64, MarketingError> {
        self.db.clients().count_active().await
    }
}

/// A client just created, with the key it is known by (shown once, never stored).
pub struct NewClient {
    pub client: ApiClient,
    pub key: String,
}

/// A fresh key: `mk_<key id>_<256 random bits>`, and its key id.
pub fn new_key() -> (String, String) {
    let mut rng = rand::rng();
    let key_id: String = (&mut rng)
        .sample_iter(&Alphanumeric)
        .take(KEY_ID_LEN)
        .map(char::from)
        .collect();
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let key = format!("mk_{key_id}_{}", URL_SAFE_NO_PAD.encode(secret));
    (key_id, key)
}

/// What is stored of a key.
pub fn key_digest(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Creates a client; refused when the name is invalid or taken (revoked clients keep theirs).
pub async fn create_client(
    db: &Database,
    name: &str,
    role: Role,
    tenants: Option<Vec<String>>,
    now: UnixMicros,
) -> Result<NewClient, MarketingError> {
    create_client_with_key(db, name, role, tenants, now, None).await
}

/// [`create_client`], with `key` (an operator's, in the key's shape) instead of a fresh one.
pub async fn create_client_with_key(
    db: &Database,
    name: &str,
    role: Role,
    tenants: Option<Vec<String>>,
    now: UnixMicros,
    key: Option<String>,
) -> Result<NewClient, MarketingError> {
    check_client_name(name).map_err(|problem| MarketingError::invalid("name", problem))?;
    let tenants = match tenants {
        None => Tenants::All,
        Some(ids) if ids.is_empty() => {
            return Err(MarketingError::invalid(
                "tenant",
                "name at least one tenant, or every tenant",
            ));
        }
        Some(ids) => Tenants::Only(
            ids.iter()
                .map(|id| TenantId::parse("tenant", id))
                .collect::<Result<BTreeSet<_>, _>>()?,
        ),
    };
    let client = ApiClient {
        name: name.to_owned(),
        role,
        tenants,
        created_at: now,
        revoked_at: None,
    };
    let (key_id, key) = match key {
        None => new_key(),
        Some(key) => {
            let Some((key_id, _)) = marketing_domain::auth::split_key(&key) else {
                return Err(MarketingError::invalid(
                    "key",
                    "is not a key: mk_<12 letters or digits>_<43 base64url characters>",
                ));
            };
            (key_id.to_owned(), key)
        }
    };
    let mut unit = UnitOfWork::begin(db).await?;
    if !unit
        .clients()
        .insert(&client, &key_id, &key_digest(&key))
        .await?
    {
        // The unit is dropped: nothing was written.
        return Err(MarketingError::invalid(
            "name",
            format!("a client named {name} exists (revoked clients keep their names)"),
        ));
    }
    for event in client_events(&client, None, now) {
        unit.record(event);
    }
    unit.commit().await?;
    Ok(NewClient { client, key })
}

pub async fn list_clients(db: &Database) -> Result<Vec<ApiClient>, MarketingError> {
    db.clients().list().await
}

/// Revokes the client; `Ok(false)` when no client of that name is active.
pub async fn revoke_client(
    db: &Database,
    name: &str,
    now: UnixMicros,
) -> Result<bool, MarketingError> {
    let mut unit = UnitOfWork::begin(db).await?;
    let client = unit.clients().find_by_name(name).await?;
    let revoked = unit.clients().revoke(name, now).await?;
    if revoked && let Some(client) = client {
        for event in client_events(&client, Some(now), now) {
            unit.record(event);
        }
    }
    unit.commit().await?;
    Ok(revoked)
}

#[cfg(test)]
mod tests {
    use marketing_domain::auth::split_key;

    use super::*;

    #[test]
    fn new_keys_have_the_shape_keys_are_checked_in() {
        let (id, key) = new_key();
        assert_eq!(split_key(&key), Some((id.as_str(), key.as_str())));
        let (_, other) = new_key();
        assert_ne!(key, other);
        assert_eq!(key_digest(&key).len(), 32);
        assert_ne!(key_digest(&key), key_digest(&other));
    }
}
