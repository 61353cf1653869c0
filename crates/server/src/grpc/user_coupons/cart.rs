//! Checkout's carts on the wire: parsing a cart (PriceOrder, ListApplicableCoupons, UseCoupon)
//! and answering a priced one.

use std::collections::HashSet;

use marketing_domain::{
    CouponId, FieldViolation, MemberId, TenantId,
    coupon_template::{Currency, MAX_AMOUNT},
    error::Violations,
    pricing::Line,
};
use marketing_proto::v1 as pb;
use tonic::Status;

use super::requests::{optional_order, order_amount};
use crate::{
    app::{ApplicableCoupons, Cart, MAX_CART_LINES, MAX_PRICED_COUPONS, PriceOrder, PricedOrder},
    grpc::parse::{Edge, capped, finish, reference},
};

/// The longest id of a line, product, category or brand.
const MAX_CART_ID_LEN: usize = 64;
/// Most categories of one line.
pub(crate) const MAX_LINE_CATEGORIES: usize = 20;
/// The dearest unit and the most units of one line: a line stays below 10^13, a cart of
/// 100 lines within MAX_AMOUNT (no sum can overflow).
const MAX_UNIT_PRICE: i64 = 1_000_000_000;
const MAX_QUANTITY: i64 = 10_000;
const _: () = assert!(MAX_UNIT_PRICE * MAX_QUANTITY * (MAX_CART_LINES as i64) <= MAX_AMOUNT);

/// A cart's lines and shipping, every problem recorded in `violations`.
pub(super) fn parse_cart(
    currency: &str,
    lines: &[pb::CartLine],
    shipping: i64,
    violations: &mut Violations,
) -> Option<Cart> {
    let currency = violations.check(Currency::parse("currency", currency));
    let lines = capped(violations, "lines", lines, MAX_CART_LINES)?;
    if lines.is_empty() {
        violations.push("lines", "must hold at least one line");
        return None;
    }
    let shipping = violations.check(order_amount("shipping_amount", shipping));
    let mut seen = HashSet::new();
    let mut line_ids = Vec::with_capacity(lines.len());
    let mut parsed = Vec::with_capacity(lines.len());
    let before = violations.len();
    for (i, line) in lines.iter().enumerate() {
        // Field names are formatted only for a violation: a valid cart allocates none.
        let id = |violations: &mut Violations, name: &str, value: &str| {
            if let Err(violation) = reference(name, value, MAX_CART_ID_LEN) {
                violations.push(format!("lines[{i}].{name}"), violation.description);
                false
            } else {
                true
            }
        };
        if id(violations, "line_id", &line.line_id) && !seen.insert(line.line_id.as_str()) {
            violations.push(format!("lines[{i}].line_id"), "is not unique in the cart");
        }
        id(violations, "product_id", &line.product_id);
        if !line.brand_id.is_empty() {
            id(violations, "brand_id", &line.brand_id);
        }
        if line.category_ids.len() > MAX_LINE_CATEGORIES {
            violations.push(
                format!("lines[{i}].category_ids"),
                format!("must hold at most {MAX_LINE_CATEGORIES} entries"),
            );
        } else {
            for category in &line.category_ids {
                if !id(violations, "category_ids", category) {
                    break;
                }
            }
        }
        if !(0..=MAX_UNIT_PRICE).contains(&line.unit_price) {
            violations.push(
                format!("lines[{i}].unit_price"),
                format!("must be between 0 and {MAX_UNIT_PRICE}"),
            );
        }
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            violations.push(
                format!("lines[{i}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            );
        }
        line_ids.push(line.line_id.clone());
        parsed.push(Line {
            product_id: line.product_id.clone(),
            category_ids: line.category_ids.clone(),
            brand_id: line.brand_id.clone(),
            unit_price: line.unit_price,
            quantity: line.quantity,
        });
    }
    (violations.len() == before).then_some(())?;
    Some(Cart {
        currency: currency?,
        line_ids,
        lines: parsed,
        shipping: shipping?,
    })
}

/// Coupon ids of a request: distinct, at most `max`.
pub(super) fn coupon_ids(
    field: &str,
    ids: &[String],
    max: usize,
    violations: &mut Violations,
) -> Option<Vec<CouponId>> {
    let ids = capped(violations, field, ids, max)?;
    let mut parsed = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        // The field's name is formatted only for a violation.
        let id = violations.check(CouponId::parse(field, id).map_err(|v| FieldViolation {
            field: format!("{field}[{i}]"),
            ..v
        }))?;
        if parsed.contains(&id) {
            violations.push(format!("{field}[{i}]"), "is named twice");
            return None;
        }
        parsed.push(id);
    }
    Some(parsed)
}

impl TryFrom<Edge<'_, pb::PriceOrderRequest>> for PriceOrder {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::PriceOrderRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let member = violations.check(MemberId::parse("member_id", &r.member_id));
        let cart = parse_cart(&r.currency, &r.lines, r.shipping_amount, &mut violations);
        let ids = coupon_ids(
            "coupon_ids",
            &r.coupon_ids,
            MAX_PRICED_COUPONS,
            &mut violations,
        );
        let points = violations.check(order_amount("points_to_redeem", r.points_to_redeem));
        let order_id = optional_order(&r.order_id, &mut violations);
        finish(violations, || {
            Some(PriceOrder {
                tenant_id: tenant?,
                member_id: member?,
                cart: cart?,
                coupon_ids: ids?,
                points_offered: points?,
                order_id: order_id?,
            })
        })
    }
}

/// ListApplicableCoupons' query.
pub(super) struct ApplicableQuery {
    pub(super) tenant: TenantId,
    pub(super) member: MemberId,
    pub(super) cart: Cart,
    pub(super) order_id: Option<String>,
}

impl TryFrom<Edge<'_, pb::ListApplicableCouponsRequest>> for ApplicableQuery {
    type Error = Status;

    fn try_from(edge: Edge<'_, pb::ListApplicableCouponsRequest>) -> Result<Self, Status> {
        let r = edge.request;
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let member = violations.check(MemberId::parse("member_id", &r.member_id));
        let cart = parse_cart(&r.currency, &r.lines, r.shipping_amount, &mut violations);
        let order_id = optional_order(&r.order_id, &mut violations);
        finish(violations, || {
            Some(ApplicableQuery {
                tenant: tenant?,
                member: member?,
                cart: cart?,
                order_id: order_id?,
            })
        })
    }
}

pub(super) fn priced_to_proto(order: &PricedOrder) -> pb::PriceOrderResponse {
    let priced = &order.priced;
    let mut line_discounts = vec![0_i64; order.cart.lines.len()];
    let mut coupons = Vec::new();
    let mut rejected = Vec::new();
    for (id, outcome) in &order.coupons {
        match outcome {
            Ok(applied) => {
                for (total, share) in line_discounts.iter_mut().zip(&applied.lines) {
                    *total += share;
                }
                coupons.push(pb::AppliedCoupon {
                    coupon_id: id.to_string(),
                    discount_amount: applied.discount,
                    lines: order
                        .cart
                        .line_ids
                        .iter()
                        .zip(&applied.lines)
                        .filter(|(_, share)| **share > 0)
                        .map(|(line_id, share)| pb::LineAllocation {
                            line_id: line_id.clone(),
                            discount_amount: *share,
                        })
                        .collect(),
                    shipping_discount_amount: applied.shipping,
                });
            }
            Err(rejection) => rejected.push(pb::RejectedCoupon {
                coupon_id: id.to_string(),
                reason: rejection.reason.to_owned(),
                message: rejection.message.clone(),
            }),
        }
    }
    pb::PriceOrderResponse {
        subtotal_amount: priced.subtotal,
        discount_amount: priced.discount,
        shipping_amount: priced.shipping,
        points_amount: priced.points.amount,
        payable_amount: priced.payable,
        coupons,
        rejected_coupons: rejected,
        lines: order
            .cart
            .line_ids
            .iter()
            .zip(&order.cart.lines)
            .zip(&line_discounts)
            .map(|((line_id, line), discount)| pb::PricedLine {
                line_id: line_id.clone(),
                amount: line.amount(),
                discount_amount: *discount,
                payable_amount: line.amount() - discount,
            })
            .collect(),
        points_used: priced.points.points,
    }
}

pub(super) fn applicable_to_proto(answer: &ApplicableCoupons) -> pb::ListApplicableCouponsResponse {
    pb::ListApplicableCouponsResponse {
        // Sent as encoded once per held copy, not encoded anew for every call.
        coupons: answer
            .encoded()
            .map(|(coupon, discount)| pb::ApplicableCoupon {
                user_coupon: None,
                discount_amount: discount,
                encoded_user_coupon: Some(coupon),
            })
            .collect(),
        best_combination: answer.best.iter().map(ToString::to_string).collect(),
        best_discount_amount: answer.best_discount,
        best_combination_exact: answer.best_exact,
    }
}
