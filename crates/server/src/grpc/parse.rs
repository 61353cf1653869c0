//! The edge shared by the handlers: request parsing (collect every violation, then either the
//! parsed command or one INVALID_ARGUMENT listing them all), and answers sent as messages.

use marketing_domain::{FieldViolation, MarketingError, error::Violations};
use tonic::Status;

use crate::{
    app::Answer,
    wire::{self, ToWire, status::to_status},
};

/// `Ok(value)` only when no check recorded a violation.
pub fn finish<T>(violations: Violations, value: Option<T>) -> Result<T, Status> {
    let value = violations
        .finish(|| value)
        .map_err(|v| to_status(v.into()))?;
    value.ok_or_else(|| to_status(MarketingError::internal("parsed request lost a field")))
}

/// A copy of `request` changed by `clear`: the request without its request id is what an
/// idempotency fingerprint covers.
pub fn cleared<M: Clone>(request: &M, clear: impl FnOnce(&mut M)) -> M {
    let mut copy = request.clone();
    clear(&mut copy);
    copy
}

/// A caller's reference (an order id, a business id): 1..=`max` bytes, no control characters.
pub fn reference(field: &str, value: &str, max: usize) -> Result<String, FieldViolation> {
    if value.is_empty() || value.len() > max {
        Err(FieldViolation::new(
            field,
            format!("must be 1 to {max} bytes"),
        ))
    } else if value.chars().any(char::is_control) {
        Err(FieldViolation::new(
            field,
            "must not contain control characters",
        ))
    } else {
        Ok(value.to_owned())
    }
}

/// The message an answer is sent as: what the use case just did, converted, or an answer
/// recorded before, exactly as it was recorded.
pub fn reply<T: ToWire>(answer: Result<Answer<T>, MarketingError>) -> Result<T::Message, Status> {
    match answer.map_err(to_status)? {
        Answer::Fresh(value) => Ok(value.to_wire()),
        Answer::Recorded(recorded) => wire::from_record::<T>(recorded.bytes()).map_err(to_status),
    }
}
