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
    let reason = err.reason().as_str();
    let mut metadata = HashMap::new();
    let code = match &err {
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
    if let MarketingError::InvalidArgument(violations) = &err {
        for violation in violations {
            details.add_bad_request_violation(&violation.field, &violation.description);
        }
    }
    Status::with_error_details(code, err.to_string(), details)
}

/// `UNIMPLEMENTED`, for RPCs whose issue is still open.
pub fn not_implemented(rpc: &str) -> Status {
    let details = ErrorDetails::with_error_info("NOT_IMPLEMENTED", ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(
        Code::Unimplemented,
        format!("{rpc} is not implemented yet"),
        details,
    )
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
