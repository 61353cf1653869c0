//! The error vocabulary. Every error carries a stable machine-readable [`Reason`] (sent to
//! clients as `ErrorInfo.reason`); the server maps each variant to one gRPC code.

use std::{collections::BTreeMap, error::Error as StdError, fmt};

pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// One bad field of a request: `field` is the request path, e.g. `coupon_template.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }

    /// The same violation under a parent message, e.g. `name` -> `coupon_template.name`.
    pub fn under(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Stable reasons, sent as `ErrorInfo.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidArgument,
    RequestIdReused,
    TemplateNotFound,
    TemplateArchived,
    VersionMismatch,
    StockBelowClaimed,
    TemplateDisabled,
    OutsideDistributionWindow,
    OutOfStock,
    MemberLimitReached,
    CouponNotFound,
    InvalidCouponState,
    OrderMismatch,
    CouponExpired,
    CouponNotYetValid,
    CurrencyMismatch,
    MinSpendNotMet,
    AccountNotFound,
    InsufficientPoints,
    HoldNotFound,
    InvalidHoldState,
    OrderAlreadyHeld,
    TransactionNotFound,
    NotRefundable,
    RefundExceedsSpent,
    ConfirmExceedsHold,
    PointsLimitExceeded,
    DuplicateBizReference,
    RuleNotFound,
    RuleDisabled,
    RuleExists,
    DailyCapReached,
    ConcurrentModification,
    DeadlineExceeded,
    Unavailable,
    Internal,
    Unauthenticated,
    MethodNotAllowed,
    TenantNotAllowed,
    Overloaded,
    RequestTooLarge,
    RateLimited,
    MalformedRequest,
    ResponseBufferFull,
}

impl Reason {
    pub const ALL: [Reason; 44] = [
        Self::InvalidArgument,
        Self::RequestIdReused,
        Self::TemplateNotFound,
        Self::TemplateArchived,
        Self::VersionMismatch,
        Self::StockBelowClaimed,
        Self::TemplateDisabled,
        Self::OutsideDistributionWindow,
        Self::OutOfStock,
        Self::MemberLimitReached,
        Self::CouponNotFound,
        Self::InvalidCouponState,
        Self::OrderMismatch,
        Self::CouponExpired,
        Self::CouponNotYetValid,
        Self::CurrencyMismatch,
        Self::MinSpendNotMet,
        Self::AccountNotFound,
        Self::InsufficientPoints,
        Self::HoldNotFound,
        Self::InvalidHoldState,
        Self::OrderAlreadyHeld,
        Self::TransactionNotFound,
        Self::NotRefundable,
        Self::RefundExceedsSpent,
        Self::ConfirmExceedsHold,
        Self::PointsLimitExceeded,
        Self::DuplicateBizReference,
        Self::RuleNotFound,
        Self::RuleDisabled,
        Self::RuleExists,
        Self::DailyCapReached,
        Self::ConcurrentModification,
        Self::DeadlineExceeded,
        Self::Unavailable,
        Self::Internal,
        Self::Unauthenticated,
        Self::MethodNotAllowed,
        Self::TenantNotAllowed,
        Self::Overloaded,
        Self::RequestTooLarge,
        Self::RateLimited,
        Self::MalformedRequest,
        Self::ResponseBufferFull,
    ];

    /// The reason `as_str` spells `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::RequestIdReused => "REQUEST_ID_REUSED",
            Self::TemplateNotFound => "TEMPLATE_NOT_FOUND",
            Self::TemplateArchived => "TEMPLATE_ARCHIVED",
            Self::VersionMismatch => "VERSION_MISMATCH",
            Self::StockBelowClaimed => "STOCK_BELOW_CLAIMED",
            Self::TemplateDisabled => "TEMPLATE_DISABLED",
            Self::OutsideDistributionWindow => "OUTSIDE_DISTRIBUTION_WINDOW",
            Self::OutOfStock => "OUT_OF_STOCK",
            Self::MemberLimitReached => "MEMBER_LIMIT_REACHED",
            Self::CouponNotFound => "COUPON_NOT_FOUND",
            Self::InvalidCouponState => "INVALID_COUPON_STATE",
            Self::OrderMismatch => "ORDER_MISMATCH",
            Self::CouponExpired => "COUPON_EXPIRED",
            Self::CouponNotYetValid => "COUPON_NOT_YET_VALID",
            Self::CurrencyMismatch => "CURRENCY_MISMATCH",
            Self::MinSpendNotMet => "MIN_SPEND_NOT_MET",
            Self::AccountNotFound => "ACCOUNT_NOT_FOUND",
            Self::InsufficientPoints => "INSUFFICIENT_POINTS",
            Self::HoldNotFound => "HOLD_NOT_FOUND",
            Self::InvalidHoldState => "INVALID_HOLD_STATE",
            Self::OrderAlreadyHeld => "ORDER_ALREADY_HELD",
            Self::TransactionNotFound => "TRANSACTION_NOT_FOUND",
            Self::NotRefundable => "NOT_REFUNDABLE",
            Self::RefundExceedsSpent => "REFUND_EXCEEDS_SPENT",
            Self::ConfirmExceedsHold => "CONFIRM_EXCEEDS_HOLD",
            Self::PointsLimitExceeded => "POINTS_LIMIT_EXCEEDED",
            Self::DuplicateBizReference => "DUPLICATE_BIZ_REFERENCE",
            Self::RuleNotFound => "POINTS_RULE_NOT_FOUND",
            Self::RuleDisabled => "POINTS_RULE_DISABLED",
            Self::RuleExists => "POINTS_RULE_EXISTS",
            Self::DailyCapReached => "DAILY_CAP_REACHED",
            Self::ConcurrentModification => "CONCURRENT_MODIFICATION",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::TenantNotAllowed => "TENANT_NOT_ALLOWED",
            Self::Overloaded => "OVERLOADED",
            Self::RequestTooLarge => "REQUEST_TOO_LARGE",
            Self::RateLimited => "RATE_LIMITED",
            Self::MalformedRequest => "MALFORMED_REQUEST",
            Self::ResponseBufferFull => "RESPONSE_BUFFER_FULL",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MarketingError {
    /// The request is malformed; nothing was changed.
    #[error("invalid request: {}", join(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The request id was used before for another operation or other parameters.
    #[error("request_id was already used with other parameters")]
    RequestIdReused,
    #[error("coupon template not found")]
    TemplateNotFound,
    #[error("coupon template is archived")]
    TemplateArchived,
    /// The etag (resource version) the caller sent is not the current one.
    #[error("version {expected} is stale, the current version is {current}")]
    VersionMismatch { expected: i64, current: i64 },
    #[error("stock cannot go below what is claimed: remaining stock is {remaining}")]
    StockBelowClaimed { remaining: i64 },
    #[error("coupon template is disabled")]
    TemplateDisabled,
    #[error("coupon template is outside its distribution window")]
    OutsideDistributionWindow,
    #[error("coupon template is out of stock")]
    OutOfStock,
    #[error("member already holds the most coupons of this template allowed")]
    MemberLimitReached,
    /// A distribution was refused as a whole because of one member.
    #[error("member {member_id} cannot get a coupon: {refusal}")]
    DistributionRefused {
        member_id: String,
        #[source]
        refusal: Box<MarketingError>,
    },
    #[error("coupon not found")]
    CouponNotFound,
    #[error("coupon is {status}")]
    InvalidCouponState { status: String },
    #[error("coupon is held by another order")]
    OrderMismatch,
    #[error("coupon has expired")]
    CouponExpired,
    #[error("coupon is not valid yet")]
    CouponNotYetValid,
    #[error("order currency differs from the coupon's")]
    CurrencyMismatch,
    #[error("order amount is below the coupon's minimum spend")]
    MinSpendNotMet,
    #[error("points account not found")]
    AccountNotFound,
    #[error("not enough points: {available} available")]
    InsufficientPoints { available: i64 },
    #[error("points hold not found")]
    HoldNotFound,
    #[error("points hold is {status}")]
    InvalidHoldState { status: String },
    #[error("the order already holds points")]
    OrderAlreadyHeld,
    #[error("points transaction not found")]
    TransactionNotFound,
    #[error("only deductions and confirmed holds can be refunded")]
    NotRefundable,
    #[error("refund exceeds what is left to refund: {refundable}")]
    RefundExceedsSpent { refundable: i64 },
    #[error("confirm exceeds the hold's {held} points")]
    ConfirmExceedsHold { held: i64 },
    /// A balance or lifetime total of the account would pass its maximum.
    #[error("the account's {total} would exceed {limit} points")]
    PointsLimitExceeded { total: &'static str, limit: i64 },
    #[error("this business reference was already processed")]
    DuplicateBizReference,
    #[error("no points rule for this event type")]
    RuleNotFound,
    #[error("the points rule for this event type is disabled")]
    RuleDisabled,
    #[error("a points rule for this event type exists")]
    RuleExists,
    #[error("the daily cap of this event is reached")]
    DailyCapReached,
    /// A refusal given before (the first outcome of a request, or another waiter's answer),
    /// answered again exactly as it was first given.
    #[error("{}", .0.message)]
    Replayed(Box<Refusal>),
    /// A concurrent writer changed what this request read; retrying may help.
    #[error("concurrent modification, retry")]
    ConcurrentModification(#[source] BoxError),
    /// The request's deadline passed before it could be served.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// A dependency (database, Redis) cannot be reached; retrying may help.
    #[error("service temporarily unavailable")]
    Unavailable(#[source] BoxError),
    /// A bug or an unexpected state; the cause is logged, not sent to clients.
    #[error("internal error")]
    Internal(#[source] BoxError),
    /// No key, or a key that is unknown, revoked or not a key.
    #[error("a valid API key is required: authorization: Bearer <key>")]
    Unauthenticated,
    /// A known client whose role does not include the method.
    #[error("the client's role {role} may not call {method}")]
    MethodNotAllowed { role: String, method: String },
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
    /// A known client that may not act for the tenant.
    #[error("the client may not act for tenant {tenant}")]
    TenantNotAllowed { tenant: String },
    /// Past a rate limit (`MARKETING_RATE_LIMITS`): nothing was done; retry after
    /// `retry_after`.
    #[error("rate limit of {action} reached, retry in {} ms", .retry_after.as_millis())]
    RateLimited {
        action: crate::limits::LimitedAction,
        retry_after: std::time::Duration,
    },
}

/// The metadata key of a rate-limited call's wait, in whole milliseconds (rounded up).
pub const RETRY_AFTER_MS: &str = "retry_after_ms";

fn retry_after_millis(wait: std::time::Duration) -> u128 {
    wait.as_micros().div_ceil(1000)
}

/// A refusal as a client is told it: reason, message, the numbers it names and, for invalid
/// arguments, the violations. Kept so that a retry, or another waiter, is told the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
    pub metadata: BTreeMap<String, String>,
    pub violations: Vec<FieldViolation>,
}

/// "error: cause: cause's cause".
pub fn chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Violations a message names before it only counts the rest: it stays one readable line.
const VIOLATIONS_IN_MESSAGE: usize = 5;
/// Characters of one violation a message shows.
const MESSAGE_VIOLATION_CHARS: usize = 200;

fn join(violations: &[FieldViolation]) -> String {
    let mut text = violations
        .iter()
        .take(VIOLATIONS_IN_MESSAGE)
        .map(|violation| {
            // A caller's field path or value can be long: the message stays short.
            let text = violation.to_string();
            match text.char_indices().nth(MESSAGE_VIOLATION_CHARS) {
                Some((end, _)) => format!("{}...", &text[..end]),
                None => text,
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > VIOLATIONS_IN_MESSAGE {
        text.push_str(&format!(
            "; and {} more",
            violations.len() - VIOLATIONS_IN_MESSAGE
        ));
    }
    text
}

impl MarketingError {
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidArgument(_) => Reason::InvalidArgument,
            Self::RequestIdReused => Reason::RequestIdReused,
            Self::TemplateNotFound => Reason::TemplateNotFound,
            Self::TemplateArchived => Reason::TemplateArchived,
            Self::VersionMismatch { .. } => Reason::VersionMismatch,
            Self::StockBelowClaimed { .. } => Reason::StockBelowClaimed,
            Self::TemplateDisabled => Reason::TemplateDisabled,
            Self::OutsideDistributionWindow => Reason::OutsideDistributionWindow,
            Self::OutOfStock => Reason::OutOfStock,
            Self::MemberLimitReached => Reason::MemberLimitReached,
            Self::DistributionRefused { refusal, .. } => refusal.reason(),
            Self::CouponNotFound => Reason::CouponNotFound,
            Self::InvalidCouponState { .. } => Reason::InvalidCouponState,
            Self::OrderMismatch => Reason::OrderMismatch,
            Self::CouponExpired => Reason::CouponExpired,
            Self::CouponNotYetValid => Reason::CouponNotYetValid,
            Self::CurrencyMismatch => Reason::CurrencyMismatch,
            Self::MinSpendNotMet => Reason::MinSpendNotMet,
            Self::AccountNotFound => Reason::AccountNotFound,
            Self::InsufficientPoints { .. } => Reason::InsufficientPoints,
            Self::HoldNotFound => Reason::HoldNotFound,
            Self::InvalidHoldState { .. } => Reason::InvalidHoldState,
            Self::OrderAlreadyHeld => Reason::OrderAlreadyHeld,
            Self::TransactionNotFound => Reason::TransactionNotFound,
            Self::NotRefundable => Reason::NotRefundable,
            Self::RefundExceedsSpent { .. } => Reason::RefundExceedsSpent,
            Self::ConfirmExceedsHold { .. } => Reason::ConfirmExceedsHold,
            Self::PointsLimitExceeded { .. } => Reason::PointsLimitExceeded,
            Self::DuplicateBizReference => Reason::DuplicateBizReference,
            Self::RuleNotFound => Reason::RuleNotFound,
            Self::RuleDisabled => Reason::RuleDisabled,
            Self::RuleExists => Reason::RuleExists,
            Self::DailyCapReached => Reason::DailyCapReached,
            Self::Replayed(refusal) => refusal.reason,
            Self::ConcurrentModification(_) => Reason::ConcurrentModification,
            Self::DeadlineExceeded => Reason::DeadlineExceeded,
            Self::Unavailable(_) => Reason::Unavailable,
            Self::Internal(_) => Reason::Internal,
            Self::Unauthenticated => Reason::Unauthenticated,
            Self::MethodNotAllowed { .. } => Reason::MethodNotAllowed,
            Self::TenantNotAllowed { .. } => Reason::TenantNotAllowed,
            Self::Overloaded => Reason::Overloaded,
            Self::RequestTooLarge { .. } => Reason::RequestTooLarge,
            Self::RateLimited { .. } => Reason::RateLimited,
            Self::MalformedRequest { .. } => Reason::MalformedRequest,
            Self::ResponseBufferFull => Reason::ResponseBufferFull,
        }
    }

    /// A refusal for a business reason: recorded as the request's first outcome, so a retry
    /// of the same request id replays it.
    pub fn is_business_refusal(&self) -> bool {
        matches!(
            self,
            Self::AccountNotFound
                | Self::InsufficientPoints { .. }
                | Self::HoldNotFound
                | Self::InvalidHoldState { .. }
                | Self::OrderAlreadyHeld
                | Self::TransactionNotFound
                | Self::NotRefundable
                | Self::RefundExceedsSpent { .. }
                | Self::ConfirmExceedsHold { .. }
                | Self::PointsLimitExceeded { .. }
                | Self::DuplicateBizReference
                | Self::RuleNotFound
                | Self::RuleDisabled
                | Self::DailyCapReached
        )
    }

    pub fn is_invalid_argument(&self) -> bool {
        matches!(self, Self::InvalidArgument(_) | Self::RequestIdReused)
    }

    /// An error that says nothing about the commands it was served with (the database or
    /// Redis could not be reached, contention outlasted the retries): serving them again one
    /// by one would not change it.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::ConcurrentModification(_) | Self::DeadlineExceeded
        )
    }

    /// What a client is told besides the reason and the message: the numbers a refusal names.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let pairs: Vec<(&str, String)> = match self {
            Self::Replayed(refusal) => return refusal.metadata.clone(),
            Self::DistributionRefused { member_id, .. } => vec![("member_id", member_id.clone())],
            Self::InsufficientPoints { available } => vec![("available", available.to_string())],
            Self::RefundExceedsSpent { refundable } => {
                vec![("refundable", refundable.to_string())]
            }
            Self::ConfirmExceedsHold { held } => vec![("held", held.to_string())],
            Self::PointsLimitExceeded { total, limit } => {
                vec![("total", (*total).to_owned()), ("limit", limit.to_string())]
            }
            Self::StockBelowClaimed { remaining } => {
                vec![("remaining_stock", remaining.to_string())]
            }
            Self::VersionMismatch { current, .. } => {
                vec![("current_version", current.to_string())]
            }
            Self::RequestTooLarge { limit } => vec![("limit_bytes", limit.to_string())],
            Self::MalformedRequest { problem } => vec![("problem", problem.clone())],
            Self::RateLimited {
                action,
                retry_after,
            } => vec![
                ("action", action.as_str().to_owned()),
                (RETRY_AFTER_MS, retry_after_millis(*retry_after).to_string()),
            ],
            _ => Vec::new(),
        };
        pairs
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect()
    }

    /// Everything a client is told of this error.
    pub fn refusal(&self) -> Refusal {
        match self {
            Self::Replayed(refusal) => (**refusal).clone(),
            _ => Refusal {
                reason: self.reason(),
                message: self.to_string(),
                metadata: self.metadata(),
                violations: match self {
                    Self::InvalidArgument(violations) => violations.clone(),
                    _ => Vec::new(),
                },
            },
        }
    }

    /// A copy of this error for another waiter on the same request: a refusal exactly as
    /// it is answered (the simple ones as themselves), an infrastructure error by its
    /// message (its cause is logged once).
    pub fn copy(&self) -> Self {
        match self {
            Self::Replayed(refusal) => Self::Replayed(refusal.clone()),
            Self::TemplateNotFound => Self::TemplateNotFound,
            Self::TemplateDisabled => Self::TemplateDisabled,
            Self::OutsideDistributionWindow => Self::OutsideDistributionWindow,
            Self::OutOfStock => Self::OutOfStock,
            Self::MemberLimitReached => Self::MemberLimitReached,
            Self::RequestIdReused => Self::RequestIdReused,
            Self::DeadlineExceeded => Self::DeadlineExceeded,
            Self::Unavailable(cause) => Self::Unavailable(cause.to_string().into()),
            Self::ConcurrentModification(cause) => {
                Self::ConcurrentModification(cause.to_string().into())
            }
            Self::Internal(_) => Self::internal(chain(self)),
            // Every other refusal, with whatever it names.
            other => Self::Replayed(Box::new(other.refusal())),
        }
    }

    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::Internal(cause.into())
    }
}

impl From<FieldViolation> for MarketingError {
    fn from(violation: FieldViolation) -> Self {
        Self::InvalidArgument(vec![violation])
    }
}

impl From<Vec<FieldViolation>> for MarketingError {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Self::InvalidArgument(violations)
    }
}

/// Collects the violations of several independent checks, so a client sees all of them at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the value of a check, or records its violation.
    pub fn check<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        result.map_err(|violation| self.0.push(violation)).ok()
    }

    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn extend(&mut self, violations: Vec<FieldViolation>) {
        self.0.extend(violations);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when no check failed.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<FieldViolation>> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self.0)
        }
    }

    pub fn into_vec(self) -> Vec<FieldViolation> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_name() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::parse("NO_SUCH_REASON"), None);
    }

    #[test]
    fn a_refusal_names_its_reason_message_and_numbers() {
        let refusal = MarketingError::PointsLimitExceeded {
            total: "available",
            limit: 9,
        }
        .refusal();
        assert_eq!(refusal.reason, Reason::PointsLimitExceeded);
        assert_eq!(
            refusal.message,
            "the account's available would exceed 9 points"
        );
        assert_eq!(refusal.metadata["total"], "available");
        assert_eq!(refusal.metadata["limit"], "9");
        let replayed = MarketingError::Replayed(Box::new(refusal.clone()));
        assert_eq!(replayed.reason(), Reason::PointsLimitExceeded);
        assert_eq!(replayed.to_string(), refusal.message);
        assert_eq!(replayed.refusal(), refusal);
    }

    #[test]
    fn infrastructure_errors_are_copied_by_their_message_and_kind() {
        let copy = MarketingError::Unavailable("redis down".into()).copy();
        assert!(
            matches!(&copy, MarketingError::Unavailable(cause) if cause.to_string() == "redis down")
        );
        let copy = MarketingError::internal("boom").copy();
        assert!(
            matches!(&copy, MarketingError::Internal(cause) if cause.to_string() == "internal error: boom")
        );
        assert!(matches!(
            MarketingError::OutOfStock.copy(),
            MarketingError::OutOfStock
        ));
    }
}
