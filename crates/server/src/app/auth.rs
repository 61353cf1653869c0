//! Who is calling: a call's `authorization: Bearer <key>` checked against the API clients,
//! and the client's role against the method, before any other work. What a replica read of a
//! key is kept briefly ([`KNOWN_FOR`]), so a revoked client is refused by every replica within
//! seconds, and a known key costs no database work and no hashing: it is looked up whole.
//!
//! Under mTLS (`MARKETING_TLS_CLIENT_CA`) a call with no key is the client its certificate
//! names: TLS has verified the certificate against the CA; the one name in the configured
//! field (`MARKETING_TLS_CLIENT_NAME`: SAN DNS names by default, or subject common names) is
//! the client's name. A certificate with no name or several names there is refused, and so is
//! a name of no client: a name is never resolved by trying the next one. What was found is
//! kept by the certificate's bytes, so a known certificate is not parsed again while it is
//! kept. A call with a key and a certificate is the key's client; its log lines and the actor
//! recorded on its changes name both ([`CertificateBesideKey`]).

use std::{sync::Arc, time::Duration};

use marketing_domain::{
    MarketingError,
    auth::{ApiClient, check_client_name, digests_match, split_key},
};
use marketing_storage::{Database, clients::ClientReads};
use moka::sync::Cache;
use tokio::sync::Semaphore;

use super::clients::key_digest;
use crate::config::{AuthMode, ClientNameField};
use crate::error::ServerError;

/// How long a replica trusts what it read of a key: a revocation reaches it within this.
pub const KNOWN_FOR: Duration = Duration::from_secs(2);
/// A known key or certificate is read again in the background once its verdict is this old,
/// while the calls it makes are still judged by the verdict kept: a known client never waits
/// for a lookup (nor queues behind a flood of made-up keys) while it keeps calling.
const REFRESH_AFTER: Duration = Duration::from_secs(1);
/// Background refreshes that may use the database at once (apart from the lookups of unknown
/// keys, so that a flood of those never delays them).
const REFRESHES: usize = 4;
/// Keys of clients kept at most, and apart from them, keys of no client (so a flood of made-up
/// keys stays bounded and cannot push real keys out).
const KNOWN_KEYS: u64 = 10_000;
const UNKNOWN_KEYS: u64 = 10_000;
/// Client certificates kept at most (each signed by the client CA, so no stranger adds one).
const CERTIFICATES: u64 = 10_000;

/// The services whose calls need no client: health (for load balancers) and reflection.
/// Every other path needs one, so a service added later is closed until it is opened here.
const OPEN: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Whether `path` is a call of an open service (health, reflection).
pub fn is_open(path: &str) -> bool {
    OPEN.iter().any(|open| path.starts_with(open))
}

/// Whether `path` is a stream its caller may hold open for as long as it likes: those of the
/// open services (`Health/Watch`, reflection), which anyone may open, and `StreamEvents`.
/// They are counted against their own limits (`MARKETING_MAX_OPEN_SERVICE_CALLS` per replica,
/// a few per connection). A health check is one quick answer and is not.
pub fn is_long_stream(path: &str) -> bool {
    path == "/grpc.health.v1.Health/Watch"
        || path.starts_with("/grpc.reflection.")
        || path == "/marketing.v1.EventService/StreamEvents"
}

/// The caller of a call, as the handlers see it (absent when auth is disabled).
pub type Caller = Arc<ApiClient>;

/// The name of the client certificate a call presented beside its key (the key is what
/// counts): in the request's extensions, for the call's log lines and the actor recorded on
/// what it changes, which name both.
#[derive(Clone, Debug)]
pub struct CertificateBesideKey(pub Arc<str>);

/// Bytes of a certificate's name kept for logs and actors (a DNS name's most).
const MAX_CERTIFICATE_LABEL: usize = 253;

/// What a credential was found to be, and when this replica read it.
#[derive(Clone)]
struct Kept {
    verdict: Verdict,
    read_at: std::time::Instant,
}

impl Kept {
    fn now(verdict: Verdict) -> Self {
        Self {
            verdict,
            read_at: std::time::Instant::now(),
        }
    }

    fn stale(&self) -> bool {
        self.read_at.elapsed() >= REFRESH_AFTER
    }
}

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

impl Verdict {
    fn of(client: ApiClient) -> Self {
        match client.revoked_at {
            Some(_) => Verdict::Revoked(client.name.into()),
            None => Verdict::Active(Arc::new(client)),
        }
    }
}

/// A credential as the refreshes in flight are known by: a key, or a certificate's bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
enum CredentialId {
    Key(String),
    Certificate(Box<[u8]>),
}

impl CredentialId {
    fn of(credential: &Credential) -> Self {
        match credential {
            Credential::Key(key) => Self::Key(key.clone()),
            Credential::Certificate { der, .. } => Self::Certificate(der.clone()),
        }
    }
}

/// What the cheap, synchronous check could tell.
pub enum Checked {
    /// Let the call through, as this caller (`None`: an open path, or auth is off).
    Admitted(Option<Caller>),
    Refused(ServerError),
    /// Not known to this replica yet: [`Authenticator::look_up`] it.
    Unknown(Credential),
}

/// What a call presented to say who it is.
pub enum Credential {
    /// An API key (`authorization: Bearer`).
    Key(String),
    /// A client certificate that TLS verified (DER), and the client name it gives.
    Certificate { der: Box<[u8]>, name: String },
}

/// Why a certificate names no client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unnamed {
    /// Not a certificate x509 can read.
    Unreadable,
    /// No name in the configured field.
    NoName,
    /// More than one name there: which client it is would depend on the client table.
    SeveralNames(usize),
    /// A name that cannot be a client's.
    NotAClientName,
}

/// The client name a DER certificate gives in `field`: its one DNS name (of its subject
/// alternative names) or its one subject common name. A name repeated is one name.
pub fn certificate_name(der: &[u8], field: ClientNameField) -> Result<String, Unnamed> {
    use x509_parser::{extensions::GeneralName, prelude::FromDer};
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(der) else {
        return Err(Unnamed::Unreadable);
    };
    let mut names: Vec<String> = match field {
        ClientNameField::Dns => match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(_) => return Err(Unnamed::Unreadable),
        },
        ClientNameField::Cn => {
            let mut names = Vec::new();
            for cn in cert.subject().iter_common_name() {
                names.push(cn.as_str().map_err(|_| Unnamed::Unreadable)?.to_owned());
            }
            names
        }
    };
    names.sort_unstable();
    names.dedup();
    match names.len() {
        0 => Err(Unnamed::NoName),
        1 => {
            let name = names.remove(0);
            check_client_name(&name)
                .map(|()| name)
                .map_err(|_| Unnamed::NotAClientName)
        }
        several => Err(Unnamed::SeveralNames(several)),
    }
}

#[derive(Clone)]
pub struct Authenticator {
    db: Database,
    mode: AuthMode,
    /// The certificate field that names a client.
    name_field: ClientNameField,
    /// Clients' keys, active or revoked, by the whole key: a known key is never hashed again
    /// while it is kept.
    known: Cache<String, Kept>,
    /// Keys of no client.
    unknown: Cache<String, ()>,
    /// Client certificates, by their bytes (DER), and the client they named.
    certificates: Cache<Box<[u8]>, Kept>,
    /// Credentials being read again in the background (at most one refresh each).
    refreshing: Arc<std::sync::Mutex<std::collections::HashSet<CredentialId>>>,
    refreshes: Arc<Semaphore>,
    /// Lookups of keys this replica does not know that may use the database at once: a flood
    /// of made-up keys waits here instead of taking every connection of the pool from the
    /// calls of known clients.
    lookups: Arc<Semaphore>,
    /// Calls that may wait for (or make) a lookup at once. Each holds one of the replica's
    /// turns (`MARKETING_MAX_CALLS`) while it waits, so past this a call with an unknown key
    /// is refused OVERLOADED at once: made-up keys cannot take every turn from known clients.
    queue: Arc<Semaphore>,
}

impl Authenticator {
    /// `lookups`: how many unknown keys may be looked up at once; `queue`: how many calls may
    /// wait for that.
    pub fn new(
        db: Database,
        mode: AuthMode,
        name_field: ClientNameField,
        lookups: usize,
        queue: usize,
    ) -> Self {
        Self {
            db,
            mode,
            name_field,
            known: Cache::builder()
                .max_capacity(KNOWN_KEYS)
                .time_to_live(KNOWN_FOR)
                .build(),
            unknown: Cache::builder()
                .max_capacity(UNKNOWN_KEYS)
                .time_to_live(KNOWN_FOR)
                .build(),
            certificates: Cache::builder()
                .max_capacity(CERTIFICATES)
                .time_to_live(KNOWN_FOR)
                .build(),
            refreshing: Arc::default(),
            refreshes: Arc::new(Semaphore::new(REFRESHES)),
            lookups: Arc::new(Semaphore::new(lookups.max(1))),
            queue: Arc::new(Semaphore::new(queue.max(1))),
        }
    }

    /// What this replica read of `key` within [`KNOWN_FOR`], if it did; a client's key read
    /// over [`REFRESH_AFTER`] ago is read again in the background meanwhile.
    fn kept_key(&self, key: &str) -> Option<Verdict> {
        if let Some(kept) = self.known.get(key) {
            if kept.stale() {
                self.refresh(Credential::Key(key.to_owned()));
            }
            return Some(kept.verdict);
        }
        self.unknown.contains_key(key).then_some(Verdict::Unknown)
    }

    /// The same for a certificate (DER).
    fn kept_certificate(
        &self,
        der: &[u8],
        name: impl FnOnce() -> Option<String>,
    ) -> Option<Verdict> {
        let kept = self.certificates.get(der)?;
        if kept.stale()
            && let Some(name) = name()
        {
            self.refresh(Credential::Certificate {
                der: der.into(),
                name,
            });
        }
        Some(kept.verdict)
    }

    fn kept(&self, credential: &Credential) -> Option<Verdict> {
        match credential {
            Credential::Key(key) => self.kept_key(key),
            Credential::Certificate { der, name } => {
                self.kept_certificate(der, || Some(name.clone()))
            }
        }
    }

    fn keep(&self, credential: Credential, verdict: Verdict) {
        match (credential, verdict) {
            (Credential::Key(key), Verdict::Unknown) => self.unknown.insert(key, ()),
            (Credential::Key(key), verdict) => self.known.insert(key, Kept::now(verdict)),
            (Credential::Certificate { der, .. }, verdict) => {
                self.certificates.insert(der, Kept::now(verdict));
            }
        }
    }

    /// Reads `credential` again in the background, unless it is being read already or the
    /// refreshes are all busy (then the verdict kept lapses at [`KNOWN_FOR`], and the next
    /// call looks it up): never later than the revocation window.
    fn refresh(&self, credential: Credential) {
        let id = CredentialId::of(&credential);
        let Ok(permit) = self.refreshes.clone().try_acquire_owned() else {
            return;
        };
        {
            let mut refreshing = self
                .refreshing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !refreshing.insert(id.clone()) {
                return;
            }
        }
        let auth = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let found = match &credential {
                Credential::Key(key) => auth.look_up_key(key).await,
                Credential::Certificate { name, .. } => auth.look_up_name(name).await,
            };
            match found {
                Ok(verdict) => auth.keep(credential, verdict),
                Err(err) => {
                    marketing_infra::warn_every!(error = %err, "refreshing a known client failed; its verdict lapses in 2 s");
                }
            }
            auth.refreshing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
        });
    }

    /// What a certificate presented beside a key is called in logs and actors: its client
    /// name in the configured field, or `unnamed`.
    pub fn certificate_label(&self, der: &[u8]) -> CertificateBesideKey {
        let label = match certificate_name(der, self.name_field) {
            Ok(mut name) => {
                let mut end = name.len().min(MAX_CERTIFICATE_LABEL);
                while !name.is_char_boundary(end) {
                    end -= 1;
                }
                name.truncate(end);
                name
            }
            Err(_) => "unnamed".to_owned(),
        };
        CertificateBesideKey(label.into())
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Checks a call of `path` (`/package.Service/Method`) with the `authorization` header
    /// `header` and, under mTLS, the client certificate TLS verified (DER), against what this
    /// replica knows; no I/O. A key, when there is one, is what counts.
    pub fn check(&self, path: &str, header: Option<&[u8]>, certificate: Option<&[u8]>) -> Checked {
        if self.mode == AuthMode::Disabled || is_open(path) {
            return Checked::Admitted(None);
        }
        match (header, certificate) {
            (Some(header), _) => {
                let Some(key) = std::str::from_utf8(header)
                    .ok()
                    .and_then(|value| value.strip_prefix("Bearer "))
                    .map(str::trim)
                    .filter(|key| split_key(key).is_some())
                else {
                    marketing_infra::warn_every!(path, "call refused: not a key");
                    return Checked::Refused(ServerError::Unauthenticated);
                };
                // The common case, without an allocation.
                if let Some(verdict) = self.kept_key(key) {
                    return Self::judge(verdict, path);
                }
                Checked::Unknown(Credential::Key(key.to_owned()))
            }
            (None, Some(certificate)) => {
                let name = || certificate_name(certificate, self.name_field).ok();
                if let Some(verdict) = self.kept_certificate(certificate, name) {
                    return Self::judge(verdict, path);
                }
                match certificate_name(certificate, self.name_field) {
                    Ok(name) => Checked::Unknown(Credential::Certificate {
                        der: certificate.into(),
                        name,
                    }),
                    Err(unnamed) => {
                        // Kept like any other, so it is not parsed again on every call.
                        self.certificates
                            .insert(certificate.into(), Kept::now(Verdict::Unknown));
                        marketing_infra::warn_every!(
                            path,
                            field = ?self.name_field,
                            problem = ?unnamed,
                            "call refused: the client certificate does not name one client"
                        );
                        Checked::Refused(ServerError::Unauthenticated)
                    }
                }
            }
            (None, None) => {
                marketing_infra::warn_every!(path, "call refused: no key");
                Checked::Refused(ServerError::Unauthenticated)
            }
        }
    }

    /// Reads a credential this replica does not know from the database, keeps what it found,
    /// and judges the call by it.
    pub async fn look_up(&self, credential: Credential, path: &str) -> Checked {
        let Ok(_queued) = self.queue.try_acquire() else {
            marketing_infra::warn_every!(path, "call refused: too many unknown keys to look up");
            return Checked::Refused(ServerError::Overloaded);
        };
        let Ok(_turn) = self.lookups.acquire().await else {
            return Checked::Refused(MarketingError::internal("key lookups closed").into());
        };
        // Another call may have looked the same key up while this one waited.
        if let Some(verdict) = self.kept(&credential) {
            return Self::judge(verdict, path);
        }
        let found = match &credential {
            Credential::Key(key) => self.look_up_key(key).await,
            Credential::Certificate { name, .. } => self.look_up_name(name).await,
        };
        let verdict = match found {
            Ok(verdict) => verdict,
            Err(err) => return Checked::Refused(err.into()),
        };
        self.keep(credential, verdict.clone());
        Self::judge(verdict, path)
    }

    async fn look_up_key(&self, key: &str) -> Result<Verdict, MarketingError> {
        let Some((key_id, _)) = split_key(key) else {
            return Ok(Verdict::Unknown);
        };
        Ok(match self.db.clients().find_by_key_id(key_id).await? {
            Some(stored) if digests_match(&stored.key_digest, &key_digest(key)) => {
                Verdict::of(stored.client)
            }
            _ => Verdict::Unknown,
        })
    }

    /// The client named `name`, if there is one.
    async fn look_up_name(&self, name: &str) -> Result<Verdict, MarketingError> {
        Ok(match self.db.clients().find_by_name(name).await? {
            Some(client) => Verdict::of(client),
            None => Verdict::Unknown,
        })
    }

    fn judge(verdict: Verdict, path: &str) -> Checked {
        let method = path.rsplit('/').next().unwrap_or_default();
        let client = match verdict {
            Verdict::Active(client) => client,
            Verdict::Revoked(name) => {
                marketing_infra::warn_every!(client = %name, method, "call refused: revoked client");
                return Checked::Refused(ServerError::Unauthenticated);
            }
            Verdict::Unknown => {
                marketing_infra::warn_every!(method, "call refused: unknown key");
                return Checked::Refused(ServerError::Unauthenticated);
            }
        };
        if !client.role.allows_for(&client.tenants, path) {
            marketing_infra::warn_every!(client = %client.name, role = %client.role, method, "call refused: method outside the role");
            return Checked::Refused(ServerError::MethodNotAllowed {
                role: client.role.to_string(),
                method: method.to_owned(),
            });
        }
        Checked::Admitted(Some(client))
    }
}
