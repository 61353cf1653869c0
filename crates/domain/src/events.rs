//! The names of events (`marketing.v1.Event.type`) and what a reader may ask for.

/// Every event type the service records. Append only: the outbox marks each batch with the
/// indexes of its types here (`event_batches.type_mask`).
pub const EVENT_TYPES: [&str; 30] = [
    "coupon_template.created",
    "coupon_template.updated",
    "coupon_template.enabled",
    "coupon_template.disabled",
    "coupon_template.stock_added",
    "coupon_template.archived",
    "coupon.claimed",
    "coupon.locked",
    "coupon.used",
    "coupon.released",
    "coupon.returned",
    "coupon.revoked",
    "coupon.expired",
    "coupon.unlocked",
    "coupon.expiring",
    "points.earned",
    "points.deducted",
    "points.frozen",
    "points.confirmed",
    "points.released",
    "points.refunded",
    "points.expired",
    "points.adjusted",
    "points.expiring",
    "points_rule.created",
    "points_rule.updated",
    "api_client.created",
    "api_client.revoked",
    "coupon_template.codes_added",
    "tenant_settings.updated",
];

/// What an event is about.
pub const AGGREGATE_TYPES: [&str; 6] = [
    "coupon_template",
    "user_coupon",
    "points_account",
    "points_rule",
    "api_client",
    "tenant_settings",
];

/// Events a page holds when the reader does not say.
pub const DEFAULT_EVENT_PAGE: u64 = 100;
/// Events a page holds at most.
pub const MAX_EVENT_PAGE: u64 = 1_000;

/// A reader's page size: 0 for the default, else 1 to [`MAX_EVENT_PAGE`].
pub fn event_page_size(field: &str, requested: i32) -> Result<u64, crate::error::FieldViolation> {
    match requested {
        0 => Ok(DEFAULT_EVENT_PAGE),
        1.. if requested as u64 <= MAX_EVENT_PAGE => Ok(requested as u64),
        _ => Err(crate::error::FieldViolation::new(
            field,
            format!("must be between 0 and {MAX_EVENT_PAGE}"),
        )),
    }
}
