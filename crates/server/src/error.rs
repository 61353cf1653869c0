//! The one mapping of domain errors to gRPC statuses: a code, an `ErrorInfo` with the reason
//! on every error, and `BadRequest` field violations for invalid arguments. Internal causes
//! are logged with their chain; clients get an opaque message.

use std::collections::HashMap;

use marketing_domain::{FieldViolation, MarketingError};
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
pub fn status_of(err: &MarketingError) -> Status {
    if let MarketingError::Replayed { code, status } = err {
        // The stored first outcome, as it was sent.
        let message = <tonic_types::pb::Status as prost::Message>::decode(status.as_slice())
            .map(|decoded| decoded.message)
            .unwrap_or_default();
        return Status::with_details(Code::from(*code), message, status.clone().into());
    }
    let reason = err.reason().as_str();
    let mut metadata = HashMap::new();
    let code = match err {
        MarketingError::InvalidArgument(_) | MarketingError::RequestIdReused => {
            Code::InvalidArgument
        }
        MarketingError::TemplateNotFound | MarketingError::CouponNotFound => Code::NotFound,
        MarketingError::TemplateArchived
        | MarketingError::TemplateDisabled
        | MarketingError::OutsideDistributionWindow
        | MarketingError::InvalidCouponState { .. }
        | MarketingError::OrderMismatch
        | MarketingError::CouponExpired
        | MarketingError::CouponNotYetValid
        | MarketingError::CurrencyMismatch
        | MarketingError::MinSpendNotMet => Code::FailedPrecondition,
        MarketingError::OutOfStock | MarketingError::MemberLimitReached => Code::ResourceExhausted,
        MarketingError::DistributionRefused { member_id, refusal } => {
            metadata.insert("member_id".to_owned(), member_id.clone());
            match **refusal {
                MarketingError::OutOfStock | MarketingError::MemberLimitReached => {
                    Code::ResourceExhausted
                }
                _ => Code::FailedPrecondition,
            }
        }
        MarketingError::ConcurrentModification(_) => {
            marketing_infra::warn_every!(error = %chain(&err), "concurrent modification outlasted the retries");
            Code::Aborted
        }
        MarketingError::DeadlineExceeded => Code::DeadlineExceeded,
        MarketingError::AccountNotFound
        | MarketingError::HoldNotFound
        | MarketingError::TransactionNotFound
        | MarketingError::RuleNotFound => Code::NotFound,
        MarketingError::InsufficientPoints { available } => {
            metadata.insert("available".to_owned(), available.to_string());
            Code::FailedPrecondition
        }
        MarketingError::RefundExceedsSpent { refundable } => {
            metadata.insert("refundable".to_owned(), refundable.to_string());
            Code::FailedPrecondition
        }
        MarketingError::ConfirmExceedsHold { held } => {
            metadata.insert("held".to_owned(), held.to_string());
            Code::FailedPrecondition
        }
        MarketingError::PointsLimitExceeded { total, limit } => {
            metadata.insert("total".to_owned(), (*total).to_owned());
            metadata.insert("limit".to_owned(), limit.to_string());
            Code::FailedPrecondition
        }
        MarketingError::InvalidHoldState { .. }
        | MarketingError::OrderAlreadyHeld
        | MarketingError::NotRefundable
        | MarketingError::RuleDisabled
        | MarketingError::DailyCapReached => Code::FailedPrecondition,
        MarketingError::DuplicateBizReference | MarketingError::RuleExists => Code::AlreadyExists,
        MarketingError::Replayed { .. } => Code::Internal,
        MarketingError::StockBelowClaimed { remaining } => {
            metadata.insert("remaining_stock".to_owned(), remaining.to_string());
            Code::FailedPrecondition
        }
        MarketingError::VersionMismatch { current, .. } => {
            metadata.insert("current_version".to_owned(), current.to_string());
            Code::Aborted
        }
        MarketingError::Unavailable(_) => {
            marketing_infra::warn_every!(error = %chain(&err), "dependency unavailable");
            Code::Unavailable
        }
        MarketingError::Internal(_) => {
            tracing::error!(error = %chain(&err), "internal error");
            Code::Internal
        }
    };
    let listed = match err {
        MarketingError::InvalidArgument(violations) => listed_violations(violations),
        _ => Vec::new(),
    };
    if let MarketingError::InvalidArgument(violations) = err
        && violations.len() > listed.len()
    {
        metadata.insert(
            "omitted_violations".to_owned(),
            (violations.len() - listed.len()).to_string(),
        );
    }
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    for (field, description) in listed {
        details.add_bad_request_violation(field, description);
    }
    Status::with_error_details(code, err.to_string(), details)
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

/// "error: cause: cause's cause".
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

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
