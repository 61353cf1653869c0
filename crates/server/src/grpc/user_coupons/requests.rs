//! Parsing of `UserCouponService`'s requests: each request becomes a command or query, or one
//! INVALID_ARGUMENT listing every violation.

use std::{collections::HashSet, time::Duration};

use marketing_domain::{
    CouponId, FieldViolation, MemberId, TemplateId, TenantId,
    coupon_code::CodeText,
    coupon_template::{Currency, MAX_AMOUNT},
    error::Violations,
    page::page_size,
    text::{TextKind, check_display_text},
    user_coupon::{
        CouponStatus, MAX_DISTRIBUTION, MAX_LOCK_TTL, MAX_ORDER_ID_LEN, MAX_REVOKE_REASON_CHARS,
    },
};
use marketing_proto::v1::{self as pb};
use tonic::Status;

use crate::grpc::parse::{
    Edge, Mutation, capped, enum_filter, finish, mutation_key, mutations, reference, tenanted,
};
use crate::{
    app::{
        ClaimCoupon, ClaimCouponByCode, CouponChange, DistributeCoupons, ListCoupons,
        TransitionCoupon, UseCart,
    },
    wire::convert::{coupon_status_from_proto, decode_page_token},
};

pub(crate) fn order_amount(field: &str, amount: i64) -> Result<i64, FieldViolation> {
    if (0..=MAX_AMOUNT).contains(&amount) {
        Ok(amount)
    } else {
        Err(FieldViolation::new(
            field,
            format!("must be between 0 and {MAX_AMOUNT}"),
        ))
    }
}

/// An optional `order_id`: empty is none.
pub(super) fn optional_order(
    order_id: &str,
    violations: &mut Violations,
) -> Option<Option<String>> {
    if order_id.is_empty() {
        Some(None)
    } else {
        violations
            .check(reference("order_id", order_id, MAX_ORDER_ID_LEN))
            .map(Some)
    }
}

pub(super) fn lock_ttl(
    field: &str,
    ttl: Option<&prost_types::Duration>,
    default: Duration,
) -> Result<Duration, FieldViolation> {
    let Some(ttl) = ttl.filter(|d| d.seconds != 0 || d.nanos != 0) else {
        return Ok(default);
    };
    let invalid = || FieldViolation::new(field, "must be between 1 second and 24 hours");
    let ttl = Duration::try_from(*ttl).map_err(|_| invalid())?;
    if ttl < Duration::from_secs(1) || ttl > MAX_LOCK_TTL {
        return Err(invalid());
    }
    Ok(ttl)
}

tenanted!(
    pb::PriceOrderRequest,
    pb::ListApplicableCouponsRequest,
    pb::GetUserCouponRequest,
    pb::ListMemberCouponsRequest,
    pb::ValidateCouponRequest
);

mutations! {
    pb::ClaimCouponRequest => "ClaimCoupon",
    pb::ClaimCouponByCodeRequest => "ClaimCouponByCode",
    pb::DistributeCouponsRequest [answer = distribution_bound] => "DistributeCoupons",
    pb::LockCouponRequest => "LockCoupon",
    pb::UseCouponRequest => "UseCoupon",
    pb::ReleaseCouponRequest => "ReleaseCoupon",
    pb::ReturnCouponRequest => "ReturnCoupon",
    pb::RevokeCouponRequest => "RevokeCoupon",
}

/// Bytes of one distribution result besides its member id (twice) and the request's tenant and
/// template ids: the coupon's id, its client's name, times, amounts, tags and lengths, or the
/// failure's reason. The test below checks it against the largest result.
pub(super) const DISTRIBUTION_RESULT_BYTES: usize = 320;

/// At most how many bytes a distribution's answer (or its replay) encodes to: a result per
/// member, each naming the member twice (the result and its coupon).
pub(super) fn distribution_bound(request: &pb::DistributeCouponsRequest) -> usize {
    let ids = request.tenant_id.len() + request.template_id.len() + DISTRIBUTION_RESULT_BYTES;
    request
        .member_ids
        .iter()
        .take(MAX_DISTRIBUTION)
        .map(|member| 2 * member.len() + ids)
        .sum::<usize>()
        + 16
}

/// Whose coupon a transition names.
pub(super) enum Holder<'a> {
    /// Checkout's calls: the member is required, and another member's coupon is not found.
    Required(&'a str),
    /// Operators' calls: empty means any member.
    Optional(&'a str),
}

/// A transition of one coupon: its key, the coupon, its holder, and the change `build` makes
/// of the fields checked into `violations`.
pub(super) fn transition<M: Mutation>(
    edge: &Edge<'_, M>,
    coupon_id: &str,
    holder: Holder<'_>,
    mut violations: Violations,
    build: impl FnOnce() -> Option<CouponChange>,
) -> Result<TransitionCoupon, Status> {
    let key = mutation_key(&mut violations, edge);
    let coupon_id = violations.check(CouponId::parse("coupon_id", coupon_id));
    let member_id = match holder {
        Holder::Required(member) => violations
            .check(MemberId::parse("member_id", member))
            .map(Some),
        Holder::Optional(member) => optional_member(&mut violations, member),
    };
    finish(violations, || {
        Some(TransitionCoupon {
            key: key?,
            coupon_id: coupon_id?,
            member_id: member_id?,
            change: build()?,
            actor: edge.actor(),
        })
    })
}

/// An optional member id: empty means none.
pub(super) fn optional_member(
    violations: &mut Violations,
    value: &str,
) -> Option<Option<MemberId>> {
    if value.is_empty() {
        Some(None)
    } else {
        violations
            .check(MemberId::parse("member_id", value))
            .map(Some)
    }
}

/// What a page token is bound to: the query, with its filter's distinct values.
pub(super) fn list_query_text(request: &pb::ListMemberCouponsRequest, states: &[i32]) -> String {
    format!(
        "coupons;tenant={};member={};states={states:?}",
        request.tenant_id, request.member_id
    )
}

impl TryFrom<Edge<'_, pb::ClaimCouponRequest>> for ClaimCoupon {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ClaimCouponRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let key = mutation_key(&mut violations, &edge);
        let member = violations.check(MemberId::parse("member_id", &r.member_id));
        let template = violations.check(TemplateId::parse("template_id", &r.template_id));
        finish(violations, || {
            Some(ClaimCoupon {
                key: key?,
                template_id: template?,
                member_id: member?,
                deadline: edge.deadline,
                actor: edge.actor(),
                code: None,
            })
        })
    }
}

impl TryFrom<Edge<'_, pb::ClaimCouponByCodeRequest>> for ClaimCouponByCode {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ClaimCouponByCodeRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let key = mutation_key(&mut violations, &edge);
        let member = violations.check(MemberId::parse("member_id", &r.member_id));
        let code = violations.check(CodeText::parse("code", &r.code));
        finish(violations, || {
            Some(ClaimCouponByCode {
                key: key?,
                member_id: member?,
                code: code?,
                deadline: edge.deadline,
                actor: edge.actor(),
            })
        })
    }
}

impl TryFrom<Edge<'_, pb::DistributeCouponsRequest>> for DistributeCoupons {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::DistributeCouponsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        // Past the cap the request is refused before it is copied and hashed for its key.
        let Some(named) = capped(
            &mut violations,
            "member_ids",
            &r.member_ids,
            MAX_DISTRIBUTION,
        ) else {
            return finish(violations, || None);
        };
        let key = mutation_key(&mut violations, &edge);
        let template = violations.check(TemplateId::parse("template_id", &r.template_id));
        let mut members = Vec::with_capacity(named.len());
        if named.is_empty() {
            violations.push(
                "member_ids",
                format!("must name 1 to {MAX_DISTRIBUTION} members"),
            );
        } else {
            let mut seen = HashSet::with_capacity(named.len());
            for (index, member) in named.iter().enumerate() {
                let field = format!("member_ids[{index}]");
                match MemberId::parse(&field, member) {
                    Ok(member) if seen.insert(member.clone()) => members.push(member),
                    Ok(member) => violations.push(field, format!("{member} is named twice")),
                    Err(violation) => violations.extend(vec![violation]),
                }
            }
        }
        finish(violations, || {
            Some(DistributeCoupons {
                key: key?,
                template_id: template?,
                members,
                allow_partial: r.allow_partial,
                deadline: edge.deadline,
                actor: edge.actor(),
            })
        })
    }
}

/// GetUserCoupon's query.
pub(super) struct GetCoupon {
    pub(super) tenant: TenantId,
    pub(super) id: CouponId,
    pub(super) member: Option<MemberId>,
}

impl TryFrom<Edge<'_, pb::GetUserCouponRequest>> for GetCoupon {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::GetUserCouponRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let id = violations.check(CouponId::parse("coupon_id", &r.coupon_id));
        let member = optional_member(&mut violations, &r.member_id);
        finish(violations, || {
            Some(GetCoupon {
                tenant: tenant?,
                id: id?,
                member: member?,
            })
        })
    }
}

impl TryFrom<Edge<'_, pb::ListMemberCouponsRequest>> for ListCoupons {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ListMemberCouponsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let member = violations.check(MemberId::parse("member_id", &r.member_id));
        let page_size = violations.check(page_size("page_size", r.page_size));
        let (statuses, states) = enum_filter(
            &mut violations,
            "states",
            &r.states,
            CouponStatus::ALL.len(),
            coupon_status_from_proto,
        );
        let before = violations.check(decode_page_token(
            "page_token",
            &r.page_token,
            &list_query_text(r, &states),
        ));
        finish(violations, || {
            Some(ListCoupons {
                tenant_id: tenant?,
                member_id: member?,
                statuses,
                before: before?.map(CouponId),
                page_size: page_size?,
            })
        })
    }
}

/// ValidateCoupon's query: the coupon, and the order it would be used for.
pub(super) struct ValidateCoupon {
    pub(super) tenant: TenantId,
    pub(super) member: MemberId,
    pub(super) id: CouponId,
    pub(super) amount: i64,
    pub(super) currency: Currency,
    pub(super) order_id: Option<String>,
}

impl TryFrom<Edge<'_, pb::ValidateCouponRequest>> for ValidateCoupon {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ValidateCouponRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let member = violations.check(MemberId::parse("member_id", &r.member_id));
        let id = violations.check(CouponId::parse("coupon_id", &r.coupon_id));
        let amount = violations.check(order_amount("amount", r.amount));
        let currency = violations.check(Currency::parse("currency", &r.currency));
        let order_id = optional_order(&r.order_id, &mut violations);
        finish(violations, || {
            Some(ValidateCoupon {
                tenant: tenant?,
                member: member?,
                id: id?,
                amount: amount?,
                currency: currency?,
                order_id: order_id?,
            })
        })
    }
}

impl TryFrom<Edge<'_, pb::LockCouponRequest>> for TransitionCoupon {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::LockCouponRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let order_id = violations.check(reference("order_id", &r.order_id, MAX_ORDER_ID_LEN));
        let ttl = violations.check(lock_ttl(
            "lock_ttl",
            r.lock_ttl.as_ref(),
            edge.config.coupon_lock_ttl,
        ));
        transition(
            &edge,
            &r.coupon_id,
            Holder::Required(&r.member_id),
            violations,
            || {
                Some(CouponChange::Lock {
                    order_id: order_id?,
                    ttl: ttl?,
                })
            },
        )
    }
}

impl TryFrom<Edge<'_, pb::UseCouponRequest>> for TransitionCoupon {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::UseCouponRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let order_id = violations.check(reference("order_id", &r.order_id, MAX_ORDER_ID_LEN));
        let amount = violations.check(order_amount("amount", r.amount));
        let currency = violations.check(Currency::parse("currency", &r.currency));
        // With lines, the cart prices the use; without, the amount does.
        let cart = if r.lines.is_empty() {
            if r.shipping_amount != 0 || !r.other_coupon_ids.is_empty() {
                violations.push(
                    "lines",
                    "are required with shipping_amount or other_coupon_ids",
                );
            }
            Some(None)
        } else {
            let cart =
                super::cart::parse_cart(&r.currency, &r.lines, r.shipping_amount, &mut violations);
            let others = super::cart::coupon_ids(
                "other_coupon_ids",
                &r.other_coupon_ids,
                crate::app::MAX_PRICED_COUPONS - 1,
                &mut violations,
            );
            cart.zip(others)
                .map(|(cart, others)| Some(Box::new(UseCart { cart, others })))
        };
        transition(
            &edge,
            &r.coupon_id,
            Holder::Required(&r.member_id),
            violations,
            || {
                Some(CouponChange::Use {
                    order_id: order_id?,
                    amount: amount?,
                    currency: currency?,
                    cart: cart?,
                })
            },
        )
    }
}

/// A member's transition that takes an order id alone.
pub(super) fn order_change<M: Mutation>(
    edge: &Edge<'_, M>,
    coupon_id: &str,
    member_id: &str,
    order_id: &str,
    change: fn(String) -> CouponChange,
) -> Result<TransitionCoupon, Status> {
    let mut violations = Violations::new();
    let order_id = violations.check(reference("order_id", order_id, MAX_ORDER_ID_LEN));
    transition(
        edge,
        coupon_id,
        Holder::Required(member_id),
        violations,
        || Some(change(order_id?)),
    )
}

impl TryFrom<Edge<'_, pb::ReleaseCouponRequest>> for TransitionCoupon {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ReleaseCouponRequest>) -> Result<Self, Status> {
        let r = edge.request;
        order_change(&edge, &r.coupon_id, &r.member_id, &r.order_id, |order_id| {
            CouponChange::Release { order_id }
        })
    }
}

impl TryFrom<Edge<'_, pb::ReturnCouponRequest>> for TransitionCoupon {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ReturnCouponRequest>) -> Result<Self, Status> {
        let r = edge.request;
        order_change(&edge, &r.coupon_id, &r.member_id, &r.order_id, |order_id| {
            CouponChange::Return { order_id }
        })
    }
}

impl TryFrom<Edge<'_, pb::RevokeCouponRequest>> for TransitionCoupon {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::RevokeCouponRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let reason = violations.check(check_display_text(
            "reason",
            &r.reason,
            TextKind::Lines,
            MAX_REVOKE_REASON_CHARS,
        ));
        transition(
            &edge,
            &r.coupon_id,
            Holder::Optional(&r.member_id),
            violations,
            || {
                reason?;
                Some(CouponChange::Revoke {
                    reason: r.reason.clone(),
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn a_distribution_answer_fits_its_bound() {
        let member = "m".repeat(MemberId::MAX_LEN);
        let tenant = "t".repeat(TenantId::MAX_LEN);
        let template = TemplateId::new().to_string();
        let max = |seconds| {
            Some(prost_types::Timestamp {
                seconds,
                nanos: 999_999_999,
            })
        };
        // Every field of an issued coupon at its largest.
        let coupon = pb::UserCoupon {
            id: CouponId::new().to_string(),
            tenant_id: tenant.clone(),
            member_id: member.clone(),
            template_id: template.clone(),
            state: pb::UserCouponState::Available as i32,
            discount: Some(pb::user_coupon::Discount::PercentOff(
                pb::PercentOffDiscount {
                    basis_points: 10_000,
                    max_discount_amount: Some(-1),
                    allocation: 0,
                },
            )),
            currency: "XXX".into(),
            min_spend_amount: -1,
            valid_from: max(-1),
            valid_until: max(-1),
            claim_time: max(-1),
            version: -1,
            update_time: max(-1),
            discount_type: pb::DiscountType::PercentOff as i32,
            actor: "a".repeat(64),
            ..Default::default()
        };
        let issued = pb::DistributionResult {
            member_id: member.clone(),
            user_coupon: Some(coupon),
            failure_reason: String::new(),
        };
        let failed = pb::DistributionResult {
            member_id: member.clone(),
            user_coupon: None,
            failure_reason: "OUTSIDE_DISTRIBUTION_WINDOW".into(),
        };
        for results in [vec![issued.clone()], vec![failed], vec![issued; 1000]] {
            let request = pb::DistributeCouponsRequest {
                tenant_id: tenant.clone(),
                template_id: template.clone(),
                member_ids: vec![member.clone(); results.len()],
                ..Default::default()
            };
            let answer = pb::DistributeCouponsResponse {
                issued_count: i32::MAX,
                failed_count: i32::MAX,
                results,
            };
            assert!(
                answer.encoded_len() <= distribution_bound(&request),
                "{} bytes over a bound of {}",
                answer.encoded_len(),
                distribution_bound(&request)
            );
        }
    }

    #[test]
    fn lock_ttls_are_bounded() {
        let default = Duration::from_secs(900);
        assert_eq!(lock_ttl("t", None, default), Ok(default));
        let ttl = |seconds| prost_types::Duration { seconds, nanos: 0 };
        assert_eq!(lock_ttl("t", Some(&ttl(0)), default), Ok(default));
        assert_eq!(
            lock_ttl("t", Some(&ttl(60)), default),
            Ok(Duration::from_secs(60))
        );
        assert!(lock_ttl("t", Some(&ttl(-1)), default).is_err());
        assert!(lock_ttl("t", Some(&ttl(90_000)), default).is_err());
    }
}
