//! The one mapping of domain errors to gRPC statuses: a code, an `ErrorInfo` with the reason
//! on every error, and `BadRequest` field violations for invalid arguments. Internal causes
//! are logged with their chain; clients get an opaque message.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use marketing_domain::{
    FieldViolation, MarketingError,
    error::{Reason, Refusal, Told},
};
use prost::Message;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::ServerError;

/// `ErrorInfo.domain` of every error we send.
pub const ERROR_DOMAIN: &str = "marketing.v1";

/// Field violations a `BadRequest` lists at most; the rest are counted in `ErrorInfo.metadata`
/// (`omitted_violations`), so the trailers stay far below the 16 KiB clients accept.
pub const MAX_LISTED_VIOLATIONS: usize = 100;
/// Bytes of field paths and descriptions a `BadRequest` lists at most (base64 in the
/// trailers: about 8 KiB).
const MAX_VIOLATION_BYTES: usize = 6 * 1024;
/// Bytes of one listed violation's field path and description each.
const MAX_VIOLATION_TEXT: usize = 200;

/// The metadata key of a rate-limited call's wait, in whole milliseconds (rounded up).
pub const RETRY_AFTER_MS: &str = "retry_after_ms";

pub fn to_status(err: impl Into<ServerError>) -> Status {
    status_of(&err.into())
}

/// An error a client can be told of: a use case's, or the server edge's.
pub trait Tell {
    /// Everything the client is told: reason, message, the numbers it names, violations.
    fn told(&self) -> Told;

    /// The use case's error inside, to log infrastructure failures with their causes.
    fn app(&self) -> Option<&MarketingError>;
}

impl Tell for MarketingError {
    fn told(&self) -> Told {
        match self {
            Self::Replayed(told) => (**told).clone(),
            _ => Told {
                reason: self.reason(),
                message: self.to_string(),
                metadata: keyed(match self {
                    Self::Refused(refusal) => refusal_metadata(refusal),
                    _ => Vec::new(),
                }),
                violations: match self {
                    Self::Refused(Refusal::InvalidArgument(violations)) => violations.clone(),
                    _ => Vec::new(),
                },
            },
        }
    }

    fn app(&self) -> Option<&MarketingError> {
        Some(self)
    }
}

impl Tell for ServerError {
    fn told(&self) -> Told {
        let metadata = match self {
            Self::App(err) => return err.told(),
            Self::RequestTooLarge { limit } => vec![("limit_bytes", limit.to_string())],
            Self::MalformedRequest { problem } => vec![("problem", problem.clone())],
            Self::RateLimited {
                action,
                retry_after,
            } => vec![
                ("action", action.as_str().to_owned()),
                (
                    RETRY_AFTER_MS,
                    retry_after.as_micros().div_ceil(1000).to_string(),
                ),
            ],
            _ => Vec::new(),
        };
        Told {
            reason: self.reason(),
            message: self.to_string(),
            metadata: keyed(metadata),
            violations: Vec::new(),
        }
    }

    fn app(&self) -> Option<&MarketingError> {
        match self {
            Self::App(err) => Some(err),
            _ => None,
        }
    }
}

/// The numbers a refusal names, by their metadata keys.
fn refusal_metadata(refusal: &Refusal) -> Vec<(&'static str, String)> {
    match refusal {
        Refusal::DistributionRefused { member_id, .. } => vec![("member_id", member_id.clone())],
        Refusal::InsufficientPoints { available } => vec![("available", available.to_string())],
        Refusal::RefundExceedsSpent { refundable } => {
            vec![("refundable", refundable.to_string())]
        }
        Refusal::ConfirmExceedsHold { held } => vec![("held", held.to_string())],
        Refusal::PointsLimitExceeded { total, limit } => {
            vec![("total", (*total).to_owned()), ("limit", limit.to_string())]
        }
        Refusal::StockBelowClaimed { remaining } => {
            vec![("remaining_stock", remaining.to_string())]
        }
        Refusal::VersionMismatch { current, .. } => {
            vec![("current_version", current.to_string())]
        }
        Refusal::EventsExpired { expired_through } => {
            vec![("expired_through", expired_through.to_string())]
        }
        Refusal::TooManyStreams { limit } => vec![("limit", limit.to_string())],
        Refusal::TooManyCodes {
            kind,
            limit,
            current,
        } => vec![
            ("kind", (*kind).to_owned()),
            ("limit", limit.to_string()),
            ("current", current.to_string()),
        ],
        _ => Vec::new(),
    }
}

fn keyed(pairs: Vec<(&str, String)>) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

/// The status of `err`, without consuming it (to record a refusal and still return it).
/// Infrastructure errors are logged here, once per answer, with their causes.
pub fn status_of(err: &(impl Tell + std::error::Error)) -> Status {
    match err.app() {
        Some(MarketingError::ConcurrentModification(_)) => {
            marketing_infra::warn_every!(error = %chain(err), "concurrent modification outlasted the retries");
        }
        Some(MarketingError::Unavailable(_)) => {
            marketing_infra::warn_every!(error = %chain(err), "dependency unavailable");
        }
        Some(MarketingError::Internal(_)) => {
            tracing::error!(error = %chain(err), "internal error")
        }
        _ => {}
    }
    let told = err.told();
    let mut metadata: HashMap<String, String> = told.metadata.into_iter().collect();
    let listed = listed_violations(&told.violations);
    // (A replayed refusal has its count of omitted violations in its metadata already.)
    if told.violations.len() > listed.len() {
        metadata.insert(
            "omitted_violations".to_owned(),
            (told.violations.len() - listed.len()).to_string(),
        );
    }
    // A wait the refusal names is also said the standard way, for clients' retry policies.
    let retry_after = metadata
        .get(RETRY_AFTER_MS)
        .and_then(|millis| millis.parse().ok())
        .map(Duration::from_millis);
    let mut details = ErrorDetails::with_error_info(told.reason.as_str(), ERROR_DOMAIN, metadata);
    if retry_after.is_some() {
        details.set_retry_info(retry_after);
    }
    for (field, description) in listed {
        details.add_bad_request_violation(field, description);
    }
    Status::with_error_details(code_of(told.reason), told.message, details)
}

/// The one gRPC code of each reason.
pub fn code_of(reason: Reason) -> Code {
    match reason {
        Reason::InvalidArgument | Reason::RequestIdReused | Reason::MalformedRequest => {
            Code::InvalidArgument
        }
        Reason::TemplateNotFound
        | Reason::CouponNotFound
        | Reason::AccountNotFound
        | Reason::HoldNotFound
        | Reason::TransactionNotFound
        | Reason::RuleNotFound
        | Reason::CodeNotFound => Code::NotFound,
        Reason::TemplateArchived
        | Reason::TemplateDisabled
        | Reason::OutsideDistributionWindow
        | Reason::StockBelowClaimed
        | Reason::InvalidCouponState
        | Reason::OrderMismatch
        | Reason::CouponExpired
        | Reason::CouponNotYetValid
        | Reason::CurrencyMismatch
        | Reason::MinSpendNotMet
        | Reason::InsufficientPoints
        | Reason::InvalidHoldState
        | Reason::OrderAlreadyHeld
        | Reason::NotRefundable
        | Reason::RefundExceedsSpent
        | Reason::ConfirmExceedsHold
        | Reason::PointsLimitExceeded
        | Reason::RuleDisabled
        | Reason::DailyCapReached
        | Reason::EventsExpired
        | Reason::CodeAlreadyClaimed
        | Reason::TooManyCodes
        | Reason::CouponNotStackable
        | Reason::OrderCouponLimit
        | Reason::CartRequired
        | Reason::CouponNotApplicable => Code::FailedPrecondition,
        Reason::OutOfStock
        | Reason::MemberLimitReached
        | Reason::RequestTooLarge
        | Reason::RateLimited
        | Reason::ResponseBufferFull
        | Reason::TooManyStreams
        | Reason::StreamBacklogFull
        | Reason::BudgetExhausted => Code::ResourceExhausted,
        Reason::DuplicateBizReference | Reason::RuleExists | Reason::CodeExists => {
            Code::AlreadyExists
        }
        Reason::VersionMismatch | Reason::ConcurrentModification => Code::Aborted,
        Reason::DeadlineExceeded => Code::DeadlineExceeded,
        Reason::Unavailable | Reason::Overloaded => Code::Unavailable,
        Reason::Internal => Code::Internal,
        Reason::Unauthenticated => Code::Unauthenticated,
        Reason::MethodNotAllowed | Reason::TenantNotAllowed => Code::PermissionDenied,
    }
}

/// The refusal a stored `google.rpc.Status` (as [`status_of`] encoded it) tells, to answer
/// it again; `None` when the bytes are not such a status.
pub fn refusal_from_status(details: &[u8]) -> Option<Told> {
    let status = tonic_types::pb::Status::decode(details).ok()?;
    let status = Status::with_details(Code::Unknown, status.message, details.to_vec().into());
    let details = status.get_error_details();
    let info = details.error_info()?;
    // `omitted_violations` stays in the metadata: what was left out then is counted again.
    let violations = details
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default();
    Some(Told {
        reason: Reason::parse(&info.reason)?,
        message: status.message().to_owned(),
        metadata: info.metadata.clone().into_iter().collect(),
        violations,
    })
}

/// The violations a `BadRequest` lists, each cut to [`MAX_VIOLATION_TEXT`]: the first ones,
/// up to [`MAX_LISTED_VIOLATIONS`] and [`MAX_VIOLATION_BYTES`].
fn listed_violations(violations: &[FieldViolation]) -> Vec<(&str, &str)> {
    let mut budget = MAX_VIOLATION_BYTES;
    violations
        .iter()
        .take(MAX_LISTED_VIOLATIONS)
        .map(|v| {
            (
                truncated(&v.field, MAX_VIOLATION_TEXT),
                truncated(&v.description, MAX_VIOLATION_TEXT),
            )
        })
        .take_while(|(field, description)| {
            let size = field.len() + description.len();
            let fits = size <= budget;
            budget = budget.saturating_sub(size);
            fits
        })
        .collect()
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub use marketing_domain::error::chain;

#[cfg(test)]
mod tests {
    use super::*;

    fn details_size(status: &Status) -> usize {
        status.details().len() + status.message().len()
    }

    #[test]
    fn bad_request_lists_the_first_violations_and_counts_the_rest() {
        let violations: Vec<FieldViolation> = (0..10_000)
            .map(|i| FieldViolation::new(format!("member_ids[{i}]"), "may contain only letters"))
            .collect();
        let status = to_status(MarketingError::Refused(Refusal::InvalidArgument(
            violations,
        )));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            details_size(&status) < 12 * 1024,
            "{} bytes",
            details_size(&status)
        );
        let details = status.get_error_details();
        let listed = &details
            .bad_request()
            .expect("a BadRequest")
            .field_violations;
        assert_eq!(listed.len(), MAX_LISTED_VIOLATIONS);
        assert_eq!(listed[0].field, "member_ids[0]");
        let info = details.error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.metadata["omitted_violations"], "9900");
        assert!(
            status.message().ends_with("and 9995 more"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn long_violation_texts_are_cut_and_bounded_in_total() {
        let long = "\u{e9}".repeat(5_000);
        let violations: Vec<FieldViolation> = (0..100)
            .map(|_| FieldViolation::new(long.clone(), long.clone()))
            .collect();
        let status = to_status(MarketingError::Refused(Refusal::InvalidArgument(
            violations,
        )));
        let details = status.get_error_details();
        let listed = &details
            .bad_request()
            .expect("a BadRequest")
            .field_violations;
        assert!(!listed.is_empty() && listed.len() < 100);
        assert!(listed.iter().all(|v| v.field.len() <= MAX_VIOLATION_TEXT));
        let omitted: usize =
            details.error_info().expect("an ErrorInfo").metadata["omitted_violations"]
                .parse()
                .expect("a count");
        assert_eq!(omitted + listed.len(), 100);
        assert!(
            status.details().len() < 12 * 1024,
            "{} bytes",
            status.details().len()
        );
    }

    #[test]
    fn a_refusal_names_its_reason_message_and_numbers() {
        let err = MarketingError::from(Refusal::PointsLimitExceeded {
            total: "available",
            limit: 9,
        });
        let told = err.told();
        assert_eq!(told.reason, Reason::PointsLimitExceeded);
        assert_eq!(
            told.message,
            "the account's available would exceed 9 points"
        );
        assert_eq!(told.metadata["total"], "available");
        assert_eq!(told.metadata["limit"], "9");
        let replayed = MarketingError::Replayed(Box::new(told.clone()));
        assert_eq!(replayed.reason(), Reason::PointsLimitExceeded);
        assert_eq!(replayed.to_string(), told.message);
        assert_eq!(replayed.told(), told);
    }

    #[test]
    fn a_server_error_names_its_numbers_and_the_wait_the_standard_way() {
        let limited = ServerError::RateLimited {
            action: marketing_domain::limits::LimitedAction::Claim,
            retry_after: Duration::from_micros(1_500),
        };
        let status = status_of(&limited);
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        let info = details.error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "RATE_LIMITED");
        assert_eq!(info.metadata[RETRY_AFTER_MS], "2", "rounded up");
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_millis(2))
        );
        let too_large = to_status(ServerError::RequestTooLarge { limit: 10 });
        assert_eq!(too_large.code(), Code::ResourceExhausted);
        assert_eq!(
            too_large
                .get_error_details()
                .error_info()
                .expect("info")
                .metadata["limit_bytes"],
            "10"
        );
    }

    #[test]
    fn a_few_violations_are_all_listed() {
        let status = to_status(MarketingError::Refused(Refusal::InvalidArgument(vec![
            FieldViolation::new("a", "bad"),
            FieldViolation::new("b", "worse"),
        ])));
        let details = status.get_error_details();
        assert_eq!(
            details
                .bad_request()
                .expect("a BadRequest")
                .field_violations
                .len(),
            2
        );
        assert!(
            !details
                .error_info()
                .expect("an ErrorInfo")
                .metadata
                .contains_key("omitted_violations")
        );
    }
}
