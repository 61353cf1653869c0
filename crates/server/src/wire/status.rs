//! The one mapping of domain errors to gRPC statuses: a code, an `ErrorInfo` with the reason
//! on every error, and `BadRequest` field violations for invalid arguments. Internal causes
//! are logged with their chain; clients get an opaque message.

use std::{collections::HashMap, time::Duration};

use marketing_domain::{
    FieldViolation, MarketingError,
    error::{RETRY_AFTER_MS, Reason, Refusal},
};
use prost::Message;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

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

pub fn to_status(err: MarketingError) -> Status {
    status_of(&err)
}

/// The status of `err`, without consuming it (to record a refusal and still return it).
/// Infrastructure errors are logged here, once per answer, with their causes.
pub fn status_of(err: &MarketingError) -> Status {
    match err {
        MarketingError::ConcurrentModification(_) => {
            marketing_infra::warn_every!(error = %chain(err), "concurrent modification outlasted the retries");
        }
        MarketingError::Unavailable(_) => {
            marketing_infra::warn_every!(error = %chain(err), "dependency unavailable");
        }
        MarketingError::Internal(_) => tracing::error!(error = %chain(err), "internal error"),
        _ => {}
    }
    let refusal = err.refusal();
    let mut metadata: HashMap<String, String> = refusal.metadata.into_iter().collect();
    let listed = listed_violations(&refusal.violations);
    // (A replayed refusal has its count of omitted violations in its metadata already.)
    if refusal.violations.len() > listed.len() {
        metadata.insert(
            "omitted_violations".to_owned(),
            (refusal.violations.len() - listed.len()).to_string(),
        );
    }
    // A wait the refusal names is also said the standard way, for clients' retry policies.
    let retry_after = metadata
        .get(RETRY_AFTER_MS)
        .and_then(|millis| millis.parse().ok())
        .map(Duration::from_millis);
    let mut details =
        ErrorDetails::with_error_info(refusal.reason.as_str(), ERROR_DOMAIN, metadata);
    if retry_after.is_some() {
        details.set_retry_info(retry_after);
    }
    for (field, description) in listed {
        details.add_bad_request_violation(field, description);
    }
    Status::with_error_details(code_of(refusal.reason), refusal.message, details)
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
        | Reason::RuleNotFound => Code::NotFound,
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
        | Reason::DailyCapReached => Code::FailedPrecondition,
        Reason::OutOfStock
        | Reason::MemberLimitReached
        | Reason::RequestTooLarge
        | Reason::RateLimited
        | Reason::ResponseBufferFull => Code::ResourceExhausted,
        Reason::DuplicateBizReference | Reason::RuleExists => Code::AlreadyExists,
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
pub fn refusal_from_status(details: &[u8]) -> Option<Refusal> {
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
    Some(Refusal {
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
        let status = to_status(MarketingError::InvalidArgument(violations));
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
        let status = to_status(MarketingError::InvalidArgument(violations));
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
    fn a_few_violations_are_all_listed() {
        let status = to_status(MarketingError::InvalidArgument(vec![
            FieldViolation::new("a", "bad"),
            FieldViolation::new("b", "worse"),
        ]));
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
