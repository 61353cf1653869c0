//! Who is calling: a call's `authorization: Bearer <key>` checked against the API clients,
//! and the client's role against the method, before any other work. Known keys are kept
//! briefly ([`KNOWN_FOR`]), so a revoked client is refused by every replica within seconds.

use std::{sync::Arc, time::Duration};

use marketing_domain::{
    MarketingError,
    auth::{ApiClient, digests_match, split_key},
};
use marketing_storage::{
    Database,
    clients::{self, StoredClient},
};
use moka::sync::Cache;

use super::clients::key_digest;
use crate::config::AuthMode;

/// How long a replica trusts what it read of a key: a revocation reaches it within this.
pub const KNOWN_FOR: Duration = Duration::from_secs(2);
/// Key ids kept at most (unknown ones too, so a flood of made-up keys stays bounded).
const KNOWN_KEYS: u64 = 10_000;

/// The services whose calls need a client; health and reflection stay open.
const GUARDED: &str = "/marketing.v1.";

/// The caller of a call, as the handlers see it (`None` when auth is disabled).
pub type Caller = Arc<ApiClient>;

/// A client as this replica knows it for a while.
struct Known {
    client: Caller,
    key_digest: Vec<u8>,
}

#[derive(Clone)]
pub struct Authenticator {
    db: Database,
    mode: AuthMode,
    known: Cache<String, Option<Arc<Known>>>,
}

impl Authenticator {
    pub fn new(db: Database, mode: AuthMode) -> Self {
        Self {
            db,
            mode,
            known: Cache::builder()
                .max_capacity(KNOWN_KEYS)
                .time_to_live(KNOWN_FOR)
                .build(),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The client calling `path` (a gRPC path, `/package.Service/Method`) with the
    /// `authorization` header `header`; `Ok(None)` for open paths, or when auth is off.
    pub async fn authenticate(
        &self,
        path: &str,
        header: Option<&[u8]>,
    ) -> Result<Option<Caller>, MarketingError> {
        if self.mode == AuthMode::Disabled || !path.starts_with(GUARDED) {
            return Ok(None);
        }
        let method = path.rsplit('/').next().unwrap_or_default();
        let key = header
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(MarketingError::Unauthenticated)?;
        let (key_id, key) = split_key(key).ok_or(MarketingError::Unauthenticated)?;
        let stored = match self.known.get(key_id) {
            Some(known) => known,
            None => {
                let found = clients::find_by_key_id(self.db.conn(), key_id).await?.map(
                    |StoredClient { client, key_digest }| {
                        Arc::new(Known {
                            client: Arc::new(client),
                            key_digest,
                        })
                    },
                );
                self.known.insert(key_id.to_owned(), found.clone());
                found
            }
        };
        let Some(stored) = stored.filter(|s| digests_match(&s.key_digest, &key_digest(key))) else {
            marketing_infra::warn_every!(method, "call refused: unknown key");
            return Err(MarketingError::Unauthenticated);
        };
        let client = &stored.client;
        if client.revoked_at.is_some() {
            marketing_infra::warn_every!(client = %client.name, method, "call refused: revoked client");
            return Err(MarketingError::Unauthenticated);
        }
        if !client.role.allows(method) {
            marketing_infra::warn_every!(client = %client.name, role = %client.role, method, "call refused: method outside the role");
            return Err(MarketingError::MethodNotAllowed {
                role: client.role.to_string(),
                method: method.to_owned(),
            });
        }
        Ok(Some(client.clone()))
    }
}
