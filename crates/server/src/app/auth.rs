//! Who is calling: a call's `authorization: Bearer <key>` checked against the API clients,
//! and the client's role against the method, before any other work. What a replica read of a
//! key is kept briefly ([`KNOWN_FOR`]), so a revoked client is refused by every replica within
//! seconds, and a known key costs no database work and no hashing: it is looked up whole.

use std::{sync::Arc, time::Duration};

use marketing_domain::{
    MarketingError,
    auth::{ApiClient, digests_match, split_key},
};
use marketing_storage::{Database, clients};
use moka::sync::Cache;

use super::clients::key_digest;
use crate::config::AuthMode;

/// How long a replica trusts what it read of a key: a revocation reaches it within this.
pub const KNOWN_FOR: Duration = Duration::from_secs(2);
/// Keys kept at most (refused ones too, so a flood of made-up keys stays bounded).
const KNOWN_KEYS: u64 = 10_000;

/// The services whose calls need a client; health and reflection stay open.
const GUARDED: &str = "/marketing.v1.";

/// The caller of a call, as the handlers see it (absent when auth is disabled).
pub type Caller = Arc<ApiClient>;

/// What a key was found to be when this replica last read it.
#[derive(Clone)]
enum Verdict {
    /// An active client's, and the digest matched.
    Active(Caller),
    /// A revoked client's (named in the log, never the key).
    Revoked(Arc<str>),
    /// No client's, or the wrong secret.
    Unknown,
}

/// What the cheap, synchronous check could tell.
pub enum Checked {
    /// Let the call through, as this caller (`None`: an open path, or auth is off).
    Admitted(Option<Caller>),
    Refused(MarketingError),
    /// Not known to this replica yet: [`Authenticator::look_up`] it.
    Unknown(String),
}

#[derive(Clone)]
pub struct Authenticator {
    db: Database,
    mode: AuthMode,
    /// By the whole key: a known key is never hashed again while it is kept.
    known: Cache<String, Verdict>,
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

    /// Checks a call of `path` (`/package.Service/Method`) with the `authorization` header
    /// `header` against what this replica knows; no I/O.
    pub fn check(&self, path: &str, header: Option<&[u8]>) -> Checked {
        if self.mode == AuthMode::Disabled || !path.starts_with(GUARDED) {
            return Checked::Admitted(None);
        }
        let Some(key) = header
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|key| split_key(key).is_some())
        else {
            marketing_infra::warn_every!(path, "call refused: no key, or not a key");
            return Checked::Refused(MarketingError::Unauthenticated);
        };
        match self.known.get(key) {
            Some(verdict) => Self::judge(verdict, path),
            None => Checked::Unknown(key.to_owned()),
        }
    }

    /// Reads a key this replica does not know from the database, keeps what it found, and
    /// judges the call by it.
    pub async fn look_up(&self, key: String, path: &str) -> Checked {
        let Some((key_id, _)) = split_key(&key) else {
            return Checked::Refused(MarketingError::Unauthenticated);
        };
        let verdict = match clients::find_by_key_id(self.db.conn(), key_id).await {
            Ok(Some(stored)) if digests_match(&stored.key_digest, &key_digest(&key)) => {
                match stored.client.revoked_at {
                    Some(_) => Verdict::Revoked(stored.client.name.into()),
                    None => Verdict::Active(Arc::new(stored.client)),
                }
            }
            Ok(_) => Verdict::Unknown,
            Err(err) => return Checked::Refused(err),
        };
        self.known.insert(key, verdict.clone());
        Self::judge(verdict, path)
    }

    fn judge(verdict: Verdict, path: &str) -> Checked {
        let method = path.rsplit('/').next().unwrap_or_default();
        let client = match verdict {
            Verdict::Active(client) => client,
            Verdict::Revoked(name) => {
                marketing_infra::warn_every!(client = %name, method, "call refused: revoked client");
                return Checked::Refused(MarketingError::Unauthenticated);
            }
            Verdict::Unknown => {
                marketing_infra::warn_every!(method, "call refused: unknown key");
                return Checked::Refused(MarketingError::Unauthenticated);
            }
        };
        if !client.role.allows(method) {
            marketing_infra::warn_every!(client = %client.name, role = %client.role, method, "call refused: method outside the role");
            return Checked::Refused(MarketingError::MethodNotAllowed {
                role: client.role.to_string(),
                method: method.to_owned(),
            });
        }
        Checked::Admitted(Some(client))
    }
}
