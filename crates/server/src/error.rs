//! The server's errors: what a use case reports ([`MarketingError`], the domain's refusals and
//! the infrastructure's failures), and what only the server's edge decides: who may call,
//! how often, and what the transport accepts. `wire::status` maps each to its gRPC code,
//! reason and metadata; callers see one table.

use marketing_domain::{
    MarketingError,
    error::{Reason, Refusal},
    limits::LimitedAction,
};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    App(#[from] MarketingError),
    /// No key, or a key that is unknown, revoked or not a key.
    #[error("a valid API key is required: authorization: Bearer <key>")]
    Unauthenticated,
    /// A known client whose role does not include the method.
    #[error("the client's role {role} may not call {method}")]
    MethodNotAllowed { role: String, method: String },
    /// A known client that may not act for the tenant.
    #[error("the client may not act for tenant {tenant}")]
    TenantNotAllowed { tenant: String },
    /// Past a rate limit (`MARKETING_RATE_LIMITS`): nothing was done; retry after
    /// `retry_after`.
    #[error("rate limit of {action} reached, retry in {} ms", .retry_after.as_millis())]
    RateLimited {
        action: LimitedAction,
        retry_after: std::time::Duration,
    },
    /// A request message over the server's limit (`MARKETING_MAX_REQUEST_BYTES`).
    #[error("the request message is larger than the server accepts ({limit} bytes)")]
    RequestTooLarge { limit: usize },
    /// The request's gRPC framing is broken: a flag or length that lies, bytes after the one
    /// message, a compressed message without an encoding. The client's mistake.
    #[error("malformed request: {problem}")]
    MalformedRequest { problem: String },
    /// The replica works on as many calls as it may; retry (elsewhere, or a little later).
    #[error("the server is overloaded, retry")]
    Overloaded,
    /// The answer would not fit in what the connection's (or the replica's) clients may hold
    /// unread (`MARKETING_UNSENT_BYTES_PER_CONNECTION`, `MARKETING_UNSENT_BYTES`); nothing was
    /// done. Read the answers already sent, or retry later.
    #[error("too many unread responses on this connection or replica; read them, or retry later")]
    ResponseBufferFull,
}

impl ServerError {
    pub fn reason(&self) -> Reason {
        match self {
            Self::App(err) => err.reason(),
            Self::Unauthenticated => Reason::Unauthenticated,
            Self::MethodNotAllowed { .. } => Reason::MethodNotAllowed,
            Self::TenantNotAllowed { .. } => Reason::TenantNotAllowed,
            Self::RateLimited { .. } => Reason::RateLimited,
            Self::RequestTooLarge { .. } => Reason::RequestTooLarge,
            Self::MalformedRequest { .. } => Reason::MalformedRequest,
            Self::Overloaded => Reason::Overloaded,
            Self::ResponseBufferFull => Reason::ResponseBufferFull,
        }
    }
}

impl From<Refusal> for ServerError {
    fn from(refusal: Refusal) -> Self {
        Self::App(refusal.into())
    }
}
