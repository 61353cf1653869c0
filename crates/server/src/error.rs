//! The one mapping of domain errors to gRPC statuses: a code, an `ErrorInfo` with the reason
//! on every error, and `BadRequest` field violations for invalid arguments. Internal causes
//! are logged with their chain; clients get an opaque message.

use std::collections::HashMap;

use marketing_domain::MarketingError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error we send.
pub const ERROR_DOMAIN: &str = "marketing.v1";

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
            tracing::warn!(error = %chain(&err), "concurrent modification outlasted the retries");
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
            tracing::warn!(error = %chain(&err), "dependency unavailable");
            Code::Unavailable
        }
        MarketingError::Internal(_) => {
            tracing::error!(error = %chain(&err), "internal error");
            Code::Internal
        }
    };
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    if let MarketingError::InvalidArgument(violations) = err {
        for violation in violations {
            details.add_bad_request_violation(&violation.field, &violation.description);
        }
    }
    Status::with_error_details(code, err.to_string(), details)
}

/// "error: cause: cause's cause".
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
