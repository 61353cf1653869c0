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
    EventsExpired,
    TooManyStreams,
    StreamBacklogFull,
    CodeNotFound,
    CodeAlreadyClaimed,
    CodeExists,
    TooManyCodes,
    CouponNotStackable,
    OrderCouponLimit,
    BudgetExhausted,
    CartRequired,
    CouponNotApplicable,
}

impl Reason {
    pub const ALL: [Reason; 56] = [
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
        Self::EventsExpired,
        Self::TooManyStreams,
        Self::StreamBacklogFull,
        Self::CodeNotFound,
        Self::CodeAlreadyClaimed,
        Self::CodeExists,
        Self::TooManyCodes,
        Self::CouponNotStackable,
        Self::OrderCouponLimit,
        Self::BudgetExhausted,
        Self::CartRequired,
        Self::CouponNotApplicable,
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
            Self::EventsExpired => "EVENTS_EXPIRED",
            Self::TooManyStreams => "TOO_MANY_STREAMS",
            Self::StreamBacklogFull => "STREAM_BACKLOG_FULL",
            Self::CodeNotFound => "CODE_NOT_FOUND",
            Self::CodeAlreadyClaimed => "CODE_ALREADY_CLAIMED",
            Self::CodeExists => "CODE_EXISTS",
            Self::TooManyCodes => "TOO_MANY_CODES",
            Self::CouponNotStackable => "COUPON_NOT_STACKABLE",
            Self::OrderCouponLimit => "ORDER_COUPON_LIMIT",
            Self::BudgetExhausted => "BUDGET_EXHAUSTED",
            Self::CartRequired => "CART_REQUIRED",
            Self::CouponNotApplicable => "COUPON_NOT_APPLICABLE",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the domain refuses: a request that breaks a rule of templates, coupons or points.
/// Plain data (cloned for every waiter on the same request); the wire's code, metadata and
/// `ErrorInfo` of each are in the server's `wire::status`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
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
        refusal: Box<Refusal>,
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
    /// Events after the position asked for were deleted by retention: reading on would skip
    /// them.
    #[error(
        "events after this position were deleted by retention; read from position {expired_through} on"
    )]
    EventsExpired { expired_through: i64 },
    /// The client holds as many event streams as it may.
    #[error("this client already holds {limit} event streams")]
    TooManyStreams { limit: usize },
    /// The consumer stopped reading while events waited for it.
    #[error("the stream's consumer stopped reading: resume from the last position it read")]
    StreamBacklogFull,
    /// No such code in the tenant (whether another tenant has one is never told).
    #[error("coupon code not found")]
    CodeNotFound,
    /// A unique code a member claimed already.
    #[error("coupon code was already claimed")]
    CodeAlreadyClaimed,
    #[error("a coupon code with this text exists in the tenant")]
    CodeExists,
    /// The template would hold more codes of a kind than it may.
    #[error("a template may have at most {limit} {kind} codes; it has {current}")]
    TooManyCodes {
        kind: &'static str,
        limit: i64,
        current: i64,
    },
    /// Another coupon of the order (`other`, when known) does not go with this one.
    #[error("the coupon does not stack with {}", match .other {
        Some(id) => format!("the order's coupon {id}"),
        None => "another coupon of the order".to_owned(),
    })]
    CouponNotStackable { other: Option<String> },
    /// The order holds as many coupons as the tenant allows.
    #[error("the order already holds {limit} coupons, the most the tenant allows")]
    OrderCouponLimit { limit: u32 },
    /// The template's campaign budget has less left than this discount.
    #[error("the campaign budget has {remaining} left, less than the discount {discount}")]
    BudgetExhausted { remaining: i64, discount: i64 },
    /// The coupon applies to lines, units or shipping: only a cart prices it.
    #[error("the coupon applies to products, units or shipping: send the cart")]
    CartRequired,
    /// No line of the cart is in the coupon's scope (or too few units for buy X get Y).
    #[error("the coupon applies to no line of this cart")]
    CouponNotApplicable,
}

impl Refusal {
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
            Self::EventsExpired { .. } => Reason::EventsExpired,
            Self::TooManyStreams { .. } => Reason::TooManyStreams,
            Self::StreamBacklogFull => Reason::StreamBacklogFull,
            Self::CodeNotFound => Reason::CodeNotFound,
            Self::CodeAlreadyClaimed => Reason::CodeAlreadyClaimed,
            Self::CodeExists => Reason::CodeExists,
            Self::TooManyCodes { .. } => Reason::TooManyCodes,
            Self::CouponNotStackable { .. } => Reason::CouponNotStackable,
            Self::OrderCouponLimit { .. } => Reason::OrderCouponLimit,
            Self::BudgetExhausted { .. } => Reason::BudgetExhausted,
            Self::CartRequired => Reason::CartRequired,
            Self::CouponNotApplicable => Reason::CouponNotApplicable,
        }
    }

    /// A refusal of the points ledger's rules: recorded as the request's first outcome in the
    /// batch that refused it, so a retry of the same request id replays it.
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

    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

impl From<FieldViolation> for Refusal {
    fn from(violation: FieldViolation) -> Self {
        Self::InvalidArgument(vec![violation])
    }
}

impl From<Vec<FieldViolation>> for Refusal {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Self::InvalidArgument(violations)
    }
}

/// A write refused because a newer holder of its lock wrote since: the lock's fencing token is
/// older than the one stored (the lock lapsed while its holder worked). The cause of a
/// [`MarketingError::ConcurrentModification`]: retried, under the lock again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fenced off: the lock's fence {fence} is older than {current}, written by a newer holder")]
pub struct Fenced {
    pub fence: i64,
    pub current: i64,
}

/// How a use case can fail below the server's edge: the domain refused it, or the
/// infrastructure (a race that outlasted its retries, a deadline, an unreachable or failing
/// dependency) did not let it finish. Authentication, rate limits and transport limits are
/// the server's own (`ServerError` there).
#[derive(Debug, thiserror::Error)]
pub enum MarketingError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A refusal given before (the first outcome of a request), answered again exactly as it
    /// was first told.
    #[error("{}", .0.message)]
    Replayed(Box<Told>),
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
}

/// A refusal as a client was told it: reason, message, the numbers it named and, for invalid
/// arguments, the violations (built by the server's `wire::status`). Kept so that a retry is
/// told the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Told {
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
            Self::Refused(refusal) => refusal.reason(),
            Self::Replayed(told) => told.reason,
            Self::ConcurrentModification(_) => Reason::ConcurrentModification,
            Self::DeadlineExceeded => Reason::DeadlineExceeded,
            Self::Unavailable(_) => Reason::Unavailable,
            Self::Internal(_) => Reason::Internal,
        }
    }

    /// The domain's refusal, if this is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused(refusal) => Some(refusal),
            _ => None,
        }
    }

    /// See [`Refusal::is_business_refusal`].
    pub fn is_business_refusal(&self) -> bool {
        self.refusal().is_some_and(Refusal::is_business_refusal)
    }

    pub fn is_invalid_argument(&self) -> bool {
        self.refusal().is_some_and(Refusal::is_invalid_argument)
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

    /// A copy of this error for another waiter on the same request: a refusal exactly as it
    /// is answered, an infrastructure error by its message (its cause is logged once).
    pub fn copy(&self) -> Self {
        match self {
            Self::Refused(refusal) => Self::Refused(refusal.clone()),
            Self::Replayed(told) => Self::Replayed(told.clone()),
            Self::DeadlineExceeded => Self::DeadlineExceeded,
            Self::Unavailable(cause) => Self::Unavailable(cause.to_string().into()),
            Self::ConcurrentModification(cause) => {
                Self::ConcurrentModification(cause.to_string().into())
            }
            Self::Internal(_) => Self::internal(chain(self)),
        }
    }

    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Refused(Refusal::invalid(field, description))
    }

    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::Internal(cause.into())
    }
}

impl From<FieldViolation> for MarketingError {
    fn from(violation: FieldViolation) -> Self {
        Self::Refused(violation.into())
    }
}

impl From<Vec<FieldViolation>> for MarketingError {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Self::Refused(violations.into())
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

    /// How many were recorded (to tell whether a group of checks added any).
    pub fn len(&self) -> usize {
        self.0.len()
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
    fn infrastructure_errors_are_copied_by_their_message_and_kind() {
        let copy = MarketingError::Unavailable("redis down".into()).copy();
        assert!(
            matches!(&copy, MarketingError::Unavailable(cause) if cause.to_string() == "redis down")
        );
        let copy = MarketingError::internal("boom").copy();
        assert!(
            matches!(&copy, MarketingError::Internal(cause) if cause.to_string() == "internal error: boom")
        );
        let refused = MarketingError::from(Refusal::PointsLimitExceeded {
            total: "available",
            limit: 9,
        });
        assert!(matches!(
            refused.copy(),
            MarketingError::Refused(Refusal::PointsLimitExceeded { limit: 9, .. })
        ));
        assert_eq!(refused.reason(), Reason::PointsLimitExceeded);
    }
}
