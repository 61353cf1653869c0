//! The edge shared by the handlers. Every request is parsed the same way: a command type
//! implements `TryFrom<Edge<'_, Request>>`, checks every field into a [`Violations`], and ends
//! in [`finish`], which gives the command or one INVALID_ARGUMENT listing every violation.
//! Answers are sent as messages by [`reply`].

use marketing_domain::{
    FieldViolation, MarketingError, RequestId, TenantId, UnixMicros,
    error::{Refusal, Violations},
};
use marketing_storage::idempotency::IdempotencyKey;
use std::time::Duration;

use prost::Message;
use tokio::time::Instant;
use tonic::Status;

use super::deadline::answer_by;
use crate::{
    Config,
    app::{
        Answer, Shared,
        auth::{Caller, CertificateBesideKey},
    },
    error::ServerError,
    transport::AnswerBudget,
    wire::{self, ToWire, idempotency_key, status::to_status},
};

/// A request as it reaches its handler, with what parsing it needs besides its fields.
pub struct Edge<'a, R> {
    pub request: &'a R,
    /// When the call must be answered: the client's `grpc-timeout`, capped by the server's.
    pub deadline: Instant,
    pub now: UnixMicros,
    pub config: &'a Config,
    /// Who is calling (`None` when the server runs without auth).
    pub caller: Option<&'a Caller>,
    /// The certificate presented beside the caller's key, if any.
    pub certificate: Option<&'a CertificateBesideKey>,
}

/// The limit of calls the server sets none of its own for: the deadline layer answers them at
/// the client's deadline.
pub const NO_SERVER_LIMIT: Duration = Duration::from_secs(3600);

impl<'a, R: Tenanted> Edge<'a, R> {
    /// `request` as it reached a service whose calls the server answers within `limit`;
    /// PERMISSION_DENIED when its caller may not act for the tenant it names, and
    /// RESOURCE_EXHAUSTED when its answer would not fit in the unsent-bytes budget (before any
    /// other work: the room is reserved before the answer is built).
    pub fn new(
        request: &'a tonic::Request<R>,
        limit: Duration,
        shared: &'a Shared,
    ) -> Result<Self, Status> {
        let message = request.get_ref();
        let tenant = message.tenant_id();
        let caller = request.extensions().get::<Caller>();
        if let Some(caller) = caller
            && !caller.tenants.allows(tenant)
            // A malformed tenant id is the request's mistake, reported as one.
            && TenantId::parse("tenant_id", tenant).is_ok()
        {
            marketing_infra::warn_every!(client = %caller.name, tenant, "call refused: tenant not allowed");
            return Err(to_status(ServerError::TenantNotAllowed {
                tenant: tenant.to_owned(),
            }));
        }
        let bound = message.answer_bound();
        if bound > 0
            && let Some(budget) = request.extensions().get::<AnswerBudget>()
            && !budget.reserve(bound)
        {
            return Err(to_status(ServerError::ResponseBufferFull));
        }
        Ok(Edge {
            request: message,
            deadline: answer_by(request.metadata(), limit),
            now: shared.clock.now(),
            config: &shared.config,
            caller,
            certificate: request.extensions().get::<CertificateBesideKey>(),
        })
    }
}

impl<R> Edge<'_, R> {
    /// The name of the API client calling: the actor recorded on what it changes (`None`
    /// when calls are open). A certificate presented beside the key is named too:
    /// `<client> (certificate <name>)`.
    pub fn actor(&self) -> Option<String> {
        self.caller.map(|caller| match self.certificate {
            Some(certificate) => format!("{} (certificate {})", caller.name, certificate.0),
            None => caller.name.clone(),
        })
    }
}

/// A request that names the tenant it acts for.
pub trait Tenanted {
    fn tenant_id(&self) -> &str;

    /// At most how many bytes the answer to this request encodes to, where the request
    /// itself chooses a size past what is always sent (a distribution's members); 0 for
    /// answers bounded by the server's own limits (a page, one row).
    fn answer_bound(&self) -> usize;
}

/// Implements [`Tenanted`] for request messages with a `tenant_id` field; `[answer = f]`
/// after a type names its [`Tenanted::answer_bound`].
macro_rules! tenanted {
    ($($request:ty $([answer = $bound:path])?),* $(,)?) => {
        $(
            impl $crate::grpc::parse::Tenanted for $request {
                fn tenant_id(&self) -> &str {
                    &self.tenant_id
                }

                fn answer_bound(&self) -> usize {
                    0 $(+ $bound(self))?
                }
            }
        )*
    };
}
pub(crate) use tenanted;

/// The command `build` makes of the checked fields, only when no check recorded a violation
/// (then every field it takes with `?` is there).
pub fn finish<T>(violations: Violations, build: impl FnOnce() -> Option<T>) -> Result<T, Status> {
    let value = violations
        .finish(build)
        .map_err(|v| to_status(Refusal::from(v)))?;
    value.ok_or_else(|| to_status(MarketingError::internal("parsed request lost a field")))
}

/// A request that changes something: the ids every one carries. The request without its
/// request id is what its idempotency fingerprint covers.
pub trait Mutation: Tenanted + Message + Clone {
    /// The operation a request id is recorded under.
    const OPERATION: &'static str;

    fn request_id(&self) -> &str;
    fn clear_request_id(&mut self);
}

/// Implements [`Mutation`] (and [`Tenanted`]) for request messages with `tenant_id` and
/// `request_id` fields (`[answer = f]` as for [`tenanted!`]).
macro_rules! mutations {
    ($($request:ty $([answer = $bound:path])? => $operation:literal),* $(,)?) => {
        $crate::grpc::parse::tenanted!($($request $([answer = $bound])?),*);
        $(
            impl $crate::grpc::parse::Mutation for $request {
                const OPERATION: &'static str = $operation;

                fn request_id(&self) -> &str {
                    &self.request_id
                }

                fn clear_request_id(&mut self) {
                    self.request_id.clear();
                }
            }
        )*
    };
}
pub(crate) use mutations;

/// The idempotency key of a mutation (its tenant, request id, the client whose request id it
/// is, operation and fingerprint).
pub fn mutation_key<M: Mutation>(
    violations: &mut Violations,
    edge: &Edge<'_, M>,
) -> Option<IdempotencyKey> {
    let request = edge.request;
    let tenant = violations.check(TenantId::parse("tenant_id", request.tenant_id()));
    let request_id = violations.check(RequestId::parse("request_id", request.request_id()));
    let mut without_id = request.clone();
    without_id.clear_request_id();
    Some(idempotency_key(
        &tenant?,
        request_id?,
        edge.caller.map_or("", |caller| caller.name.as_str()),
        M::OPERATION,
        &without_id,
    ))
}

/// The most entries each repeated field of a request may hold, by its full protobuf name.
/// Every repeated field of every request (nested messages included) has an entry: a test walks
/// the served descriptor set. A request past a cap is refused with one violation before
/// anything is done with its entries.
pub const REPEATED_FIELD_CAPS: &[(&str, usize)] = &[
    (
        "marketing.v1.DistributeCouponsRequest.member_ids",
        marketing_domain::user_coupon::MAX_DISTRIBUTION,
    ),
    (
        "marketing.v1.ListMemberCouponsRequest.states",
        marketing_domain::user_coupon::CouponStatus::ALL.len(),
    ),
    (
        "marketing.v1.ListPointsTransactionsRequest.types",
        marketing_domain::points::TxType::ALL.len(),
    ),
    (
        "marketing.v1.ListEventsRequest.types",
        marketing_domain::events::EVENT_TYPES.len(),
    ),
    (
        "marketing.v1.StreamEventsRequest.types",
        marketing_domain::events::EVENT_TYPES.len(),
    ),
    (
        "marketing.v1.TenantSettings.points_values",
        marketing_domain::tenant_settings::MAX_POINTS_VALUES,
    ),
    ("marketing.v1.PriceOrderRequest.lines", MAX_CART_LINES),
    (
        "marketing.v1.PriceOrderRequest.coupon_ids",
        MAX_PRICED_COUPONS,
    ),
    (
        "marketing.v1.ListApplicableCouponsRequest.lines",
        MAX_CART_LINES,
    ),
    ("marketing.v1.UseCouponRequest.lines", MAX_CART_LINES),
    (
        "marketing.v1.UseCouponRequest.other_coupon_ids",
        MAX_PRICED_COUPONS - 1,
    ),
    (
        "marketing.v1.CartLine.category_ids",
        crate::grpc::user_coupons::MAX_LINE_CATEGORIES,
    ),
    ("marketing.v1.ProductScope.product_ids", MAX_SCOPE_IDS),
    ("marketing.v1.ProductScope.category_ids", MAX_SCOPE_IDS),
    ("marketing.v1.ProductScope.brand_ids", MAX_SCOPE_IDS),
    (
        "marketing.v1.ProductScope.excluded_product_ids",
        MAX_SCOPE_IDS,
    ),
    (
        "marketing.v1.ProductScope.excluded_category_ids",
        MAX_SCOPE_IDS,
    ),
    (
        "marketing.v1.ProductScope.excluded_brand_ids",
        MAX_SCOPE_IDS,
    ),
];

use crate::app::{MAX_CART_LINES, MAX_PRICED_COUPONS};
use marketing_domain::coupon_template::MAX_SCOPE_IDS;

/// `values`, when they are at most `max`; past it one violation for the whole field and
/// `None`: nothing is parsed, copied or formatted per entry of an oversized field.
pub fn capped<'a, T>(
    violations: &mut Violations,
    field: &str,
    values: &'a [T],
    max: usize,
) -> Option<&'a [T]> {
    if values.len() > max {
        violations.push(field, format!("must hold at most {max} entries"));
        None
    } else {
        Some(values)
    }
}

/// A repeated enum filter: at most `max` entries (as many as the enum has values), each one
/// parsed by `parse`; duplicates are dropped, first occurrence kept. Gives the filter and the
/// distinct raw values in their order (what a page token is bound to).
pub fn enum_filter<T>(
    violations: &mut Violations,
    field: &str,
    values: &[i32],
    max: usize,
    parse: impl Fn(&str, i32) -> Result<T, FieldViolation>,
) -> (Vec<T>, Vec<i32>) {
    let values = capped(violations, field, values, max).unwrap_or_default();
    let raw = distinct(values);
    let mut parsed = Vec::with_capacity(raw.len());
    for value in &raw {
        // A violation names the value's first place in the request.
        let index = values.iter().position(|v| v == value).unwrap_or_default();
        if let Some(entry) = violations.check(parse(&format!("{field}[{index}]"), *value)) {
            parsed.push(entry);
        }
    }
    (parsed, raw)
}

/// The distinct values of a repeated field, in order of first appearance. Quadratic: only for
/// fields already within their cap (checked by [`capped`]).
pub fn distinct(values: &[i32]) -> Vec<i32> {
    let mut seen = Vec::with_capacity(values.len());
    for value in values {
        if !seen.contains(value) {
            seen.push(*value);
        }
    }
    seen
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
