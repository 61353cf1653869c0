//! Checkout: templates with cart terms (scope, allocation, free shipping, buy X get Y,
//! stacking, budget), a cart priced exactly (the README's worked example), the member's
//! applicable coupons with the best combination, uses priced by their cart, stacking enforced
//! by the database on locks and uses, and a campaign budget spent exactly under concurrency.
//! Two tenants act on the same ids throughout.

use futures::future::join_all;
use marketing_proto::v1::{self as pb, coupon_template};
use marketing_tests::{TestApp, assert_error, assert_invalid};
use prost_types::FieldMask;
use tonic::Code;

use crate::{
    fixtures::{claim, create_template, template, unique},
    points::earn,
};

marketing_tests::backend_suite! {
    cart_terms_round_trip_and_bad_ones_are_refused_with_every_field,
    a_cart_is_priced_exactly_with_coupons_shipping_and_points,
    applicable_coupons_come_best_first_with_the_best_allowed_combination,
    a_use_with_a_cart_records_the_priced_discount_and_one_without_is_refused,
    stacking_rules_hold_on_locks_and_uses_under_concurrency,
    a_budget_is_spent_exactly_under_concurrent_uses_and_given_back_on_return,
}

fn scope(categories: &[&str]) -> pb::ProductScope {
    pb::ProductScope {
        category_ids: categories.iter().map(|c| (*c).to_owned()).collect(),
        ..Default::default()
    }
}

fn group(name: &str, order: i32) -> pb::Stacking {
    pb::Stacking {
        policy: pb::StackingPolicy::Stackable.into(),
        group: name.into(),
        group_order: order,
    }
}

fn exclusive() -> pb::Stacking {
    pb::Stacking {
        policy: pb::StackingPolicy::Exclusive.into(),
        ..Default::default()
    }
}

/// 20% off footwear (a product coupon, applied first).
fn product_coupon() -> pb::CouponTemplate {
    pb::CouponTemplate {
        name: "20% off footwear".into(),
        discount: Some(coupon_template::Discount::PercentOff(
            pb::PercentOffDiscount {
                basis_points: 2000,
                ..Default::default()
            },
        )),
        min_spend_amount: 0,
        scope: Some(scope(&["footwear"])),
        stacking: Some(group("product", 0)),
        ..template()
    }
}

/// 5.00 off orders of 50.00 (an order coupon, applied on what product coupons left).
fn order_coupon() -> pb::CouponTemplate {
    pb::CouponTemplate {
        name: "5.00 off".into(),
        discount: Some(coupon_template::Discount::FixedAmount(
            pb::FixedAmountDiscount {
                amount: 500,
                ..Default::default()
            },
        )),
        min_spend_amount: 5000,
        stacking: Some(group("order", 10)),
        ..template()
    }
}

fn free_shipping() -> pb::CouponTemplate {
    pb::CouponTemplate {
        name: "Free shipping".into(),
        discount: Some(coupon_template::Discount::FreeShipping(
            pb::FreeShippingDiscount {
                max_discount_amount: None,
            },
        )),
        min_spend_amount: 0,
        stacking: Some(group("shipping", 20)),
        ..template()
    }
}

fn line(
    id: &str,
    product: &str,
    category: &str,
    brand: &str,
    price: i64,
    qty: i64,
) -> pb::CartLine {
    pb::CartLine {
        line_id: id.into(),
        product_id: product.into(),
        category_ids: vec![category.into()],
        brand_id: brand.into(),
        unit_price: price,
        quantity: qty,
    }
}

/// Shoes 2 x 30.00, socks 3 x 5.00, a hat 20.00: 95.00.
fn cart() -> Vec<pb::CartLine> {
    vec![
        line("shoes", "shoe-1", "footwear", "acme", 3_000, 2),
        line("socks", "sock-1", "footwear", "knit", 500, 3),
        line("hat", "hat-1", "headwear", "acme", 2_000, 1),
    ]
}

fn price(tenant: &str, member: &str, coupons: &[&str], points: i64) -> pb::PriceOrderRequest {
    pb::PriceOrderRequest {
        tenant_id: tenant.into(),
        member_id: member.into(),
        currency: "EUR".into(),
        lines: cart(),
        shipping_amount: 490,
        coupon_ids: coupons.iter().map(|c| (*c).to_owned()).collect(),
        points_to_redeem: points,
        order_id: String::new(),
    }
}

async fn priced(app: &TestApp, request: pb::PriceOrderRequest) -> pb::PriceOrderResponse {
    app.user_coupons()
        .price_order(request)
        .await
        .expect("price order")
        .into_inner()
}

/// 100 points pay 1.00 EUR; points pay at most half an order.
async fn points_program(app: &TestApp, tenant: &str, max_coupons: i32) {
    app.settings()
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            tenant_id: tenant.into(),
            request_id: unique("settings"),
            tenant_settings: Some(pb::TenantSettings {
                points_values: vec![pb::PointsValue {
                    currency: "EUR".into(),
                    points: 100,
                    amount: 100,
                }],
                max_points_share_bp: 5000,
                max_coupons_per_order: max_coupons,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec![
                    "points_values".into(),
                    "max_points_share_bp".into(),
                    "max_coupons_per_order".into(),
                ],
            }),
        })
        .await
        .expect("settings");
}

async fn cart_terms_round_trip_and_bad_ones_are_refused_with_every_field(app: &TestApp) {
    let buy_get = pb::CouponTemplate {
        discount: Some(coupon_template::Discount::BuyGet(pb::BuyGetDiscount {
            buy_quantity: 2,
            get_quantity: 1,
            get_scope: Some(pb::ProductScope {
                product_ids: vec!["sock-1".into()],
                ..Default::default()
            }),
            basis_points: 10_000,
            max_applications: Some(3),
        })),
        scope: Some(pb::ProductScope {
            category_ids: vec!["footwear".into()],
            excluded_brand_ids: vec!["knit".into()],
            ..Default::default()
        }),
        stacking: Some(group("product", -5)),
        budget_amount: Some(10_000),
        ..template()
    };
    for tenant in ["acme", "beta"] {
        let created = create_template(app, tenant, buy_get.clone()).await;
        assert_eq!(created.discount, buy_get.discount);
        assert_eq!(created.scope, buy_get.scope);
        assert_eq!(created.stacking, buy_get.stacking);
        assert_eq!(created.discount_type, pb::DiscountType::BuyGet as i32);
        assert_eq!(created.budget_amount, Some(10_000));
        assert_eq!(created.budget_remaining_amount, 10_000);
        // The coupon keeps the terms it was claimed with, whatever the template becomes.
        let coupon = claim(app, tenant, "m1", &created.id).await.expect("claim");
        assert_eq!(coupon.scope, buy_get.scope);
        assert_eq!(coupon.stacking, buy_get.stacking);
        let mut changed = created.clone();
        changed.scope = None;
        changed.stacking = Some(exclusive());
        let updated = app
            .templates()
            .update_coupon_template(pb::UpdateCouponTemplateRequest {
                tenant_id: tenant.into(),
                request_id: unique("update"),
                coupon_template: Some(changed),
                update_mask: Some(FieldMask {
                    paths: vec!["scope".into(), "stacking".into()],
                }),
            })
            .await
            .expect("update")
            .into_inner()
            .coupon_template
            .expect("template");
        assert_eq!(updated.scope, None);
        assert_eq!(updated.stacking, Some(exclusive()));
        let kept = app
            .user_coupons()
            .get_user_coupon(pb::GetUserCouponRequest {
                tenant_id: tenant.into(),
                coupon_id: coupon.id.clone(),
                member_id: "m1".into(),
            })
            .await
            .expect("get")
            .into_inner()
            .user_coupon
            .expect("coupon");
        assert_eq!(kept.scope, buy_get.scope);
        let Some(pb::user_coupon::Discount::BuyGet(kept_buy_get)) = kept.discount else {
            panic!("the coupon kept its buy X get Y: {kept:?}");
        };
        let Some(coupon_template::Discount::BuyGet(asked)) = &buy_get.discount else {
            unreachable!()
        };
        assert_eq!(&kept_buy_get, asked);
    }
    let bad = pb::CouponTemplate {
        discount: Some(coupon_template::Discount::FreeShipping(
            pb::FreeShippingDiscount {
                max_discount_amount: Some(0),
            },
        )),
        scope: Some(pb::ProductScope {
            product_ids: (0..150).map(|n| format!("p{n}")).collect(),
            category_ids: (0..51).map(|n| format!("c{n}")).collect(),
            brand_ids: vec!["has space".into()],
            ..Default::default()
        }),
        stacking: Some(pb::Stacking {
            policy: pb::StackingPolicy::Exclusive.into(),
            group: "product".into(),
            group_order: 0,
        }),
        budget_amount: Some(0),
        ..template()
    };
    let status = app
        .templates()
        .create_coupon_template(crate::fixtures::create_request("acme", bad))
        .await
        .expect_err("bad terms");
    assert_invalid(
        &status,
        &[
            "coupon_template.stacking.group",
            "coupon_template.free_shipping.max_discount_amount",
            "coupon_template.scope.brand_ids",
            "coupon_template.scope",
            "coupon_template.budget_amount",
        ],
    );
}

/// The README's worked example.
async fn a_cart_is_priced_exactly_with_coupons_shipping_and_points(app: &TestApp) {
    for tenant in ["acme", "beta"] {
        points_program(app, tenant, 0).await;
    }
    let mut ids = Vec::new();
    for maker in [product_coupon, order_coupon, free_shipping] {
        let made = create_template(app, "acme", maker()).await;
        ids.push(claim(app, "acme", "m1", &made.id).await.expect("claim").id);
    }
    app.points()
        .earn_points(earn("m1", 10_000))
        .await
        .expect("earn");
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let answer = priced(app, price("acme", "m1", &refs, 10_000)).await;
    assert_eq!(answer.subtotal_amount, 9_500);
    assert_eq!(answer.shipping_amount, 490);
    // 20% of footwear (75.00) = 15.00; 5.00 of what is left (80.00); shipping 4.90.
    assert_eq!(answer.discount_amount, 1_500 + 500 + 490);
    // Points pay half of the 75.00 left: 37.50, with 3,750 points.
    assert_eq!(answer.points_amount, 3_750);
    assert_eq!(answer.points_used, 3_750);
    assert_eq!(answer.payable_amount, 3_750);
    assert!(answer.rejected_coupons.is_empty(), "{answer:?}");
    let allocation = |coupon: &pb::AppliedCoupon| -> Vec<(String, i64)> {
        coupon
            .lines
            .iter()
            .map(|l| (l.line_id.clone(), l.discount_amount))
            .collect()
    };
    assert_eq!(
        allocation(&answer.coupons[0]),
        [("shoes".to_owned(), 1_200), ("socks".to_owned(), 300)]
    );
    assert_eq!(
        allocation(&answer.coupons[1]),
        [
            ("shoes".to_owned(), 300),
            ("socks".to_owned(), 75),
            ("hat".to_owned(), 125)
        ]
    );
    assert_eq!(answer.coupons[2].shipping_discount_amount, 490);
    let payable: Vec<i64> = answer.lines.iter().map(|l| l.payable_amount).collect();
    assert_eq!(payable, [4_500, 1_125, 1_875]);

    // The other tenant, on the same ids: none of them exists there; its own program prices
    // the points (half of 99.90).
    let elsewhere = priced(app, price("beta", "m1", &refs, 10_000)).await;
    assert_eq!(elsewhere.discount_amount, 0);
    assert_eq!(elsewhere.points_amount, 4_995);
    assert!(
        elsewhere
            .rejected_coupons
            .iter()
            .all(|r| r.reason == "COUPON_NOT_FOUND")
    );
    assert_eq!(elsewhere.rejected_coupons.len(), 3);

    // Another member's coupon is not found; two order coupons: the second does not stack.
    let second_order = create_template(app, "acme", order_coupon()).await;
    let second = claim(app, "acme", "m1", &second_order.id)
        .await
        .expect("claim")
        .id;
    let answer = priced(app, price("acme", "m2", &[&ids[0]], 0)).await;
    assert_eq!(answer.rejected_coupons[0].reason, "COUPON_NOT_FOUND");
    let answer = priced(app, price("acme", "m1", &[&ids[1], &second], 0)).await;
    assert_eq!(answer.coupons.len(), 1);
    assert_eq!(answer.rejected_coupons[0].coupon_id, second);
    assert_eq!(answer.rejected_coupons[0].reason, "COUPON_NOT_STACKABLE");

    let status = app
        .user_coupons()
        .price_order(pb::PriceOrderRequest {
            lines: vec![line("a", "", "", "", -1, 0), line("a", "p", "c", "b", 1, 1)],
            shipping_amount: -1,
            ..price("acme", "m1", &["nope"], -5)
        })
        .await
        .expect_err("bad cart");
    assert_invalid(
        &status,
        &[
            "lines[0].product_id",
            "lines[0].category_ids",
            "lines[0].unit_price",
            "lines[0].quantity",
            "lines[1].line_id",
            "shipping_amount",
            "coupon_ids[0]",
            "points_to_redeem",
        ],
    );
}

/// Member m1's applicable coupons for [`cart`] with 4.90 of shipping.
async fn applicable(app: &TestApp, tenant: &str) -> pb::ListApplicableCouponsResponse {
    app.user_coupons()
        .list_applicable_coupons(pb::ListApplicableCouponsRequest {
            tenant_id: tenant.into(),
            member_id: "m1".into(),
            currency: "EUR".into(),
            lines: cart(),
            shipping_amount: 490,
            order_id: String::new(),
        })
        .await
        .expect("applicable")
        .into_inner()
}

async fn applicable_coupons_come_best_first_with_the_best_allowed_combination(app: &TestApp) {
    let hats = pb::CouponTemplate {
        name: "50% off hats".into(),
        discount: Some(coupon_template::Discount::PercentOff(
            pb::PercentOffDiscount {
                basis_points: 5000,
                ..Default::default()
            },
        )),
        min_spend_amount: 0,
        scope: Some(scope(&["headwear"])),
        stacking: Some(group("product", 0)),
        ..template()
    };
    let big_exclusive = pb::CouponTemplate {
        name: "18.00 off, alone".into(),
        discount: Some(coupon_template::Discount::FixedAmount(
            pb::FixedAmountDiscount {
                amount: 1_800,
                ..Default::default()
            },
        )),
        min_spend_amount: 0,
        stacking: Some(exclusive()),
        ..template()
    };
    let pants = pb::CouponTemplate {
        name: "5.00 off pants".into(),
        scope: Some(pb::ProductScope {
            product_ids: vec!["pants".into()],
            ..Default::default()
        }),
        ..order_coupon()
    };
    let mut held = std::collections::HashMap::new();
    for maker in [
        product_coupon(),
        hats,
        order_coupon(),
        free_shipping(),
        big_exclusive,
        pants,
    ] {
        let made = create_template(app, "acme", maker.clone()).await;
        let coupon = claim(app, "acme", "m1", &made.id).await.expect("claim");
        held.insert(maker.name.clone(), coupon.id);
    }
    let answer = applicable(app, "acme").await;
    let alone: Vec<(String, i64)> = answer
        .coupons
        .iter()
        .map(|c| {
            let coupon = c.user_coupon.as_ref().expect("coupon");
            let name = held
                .iter()
                .find(|(_, id)| **id == coupon.id)
                .map(|(name, _)| name.clone())
                .expect("a held coupon");
            (name, c.discount_amount)
        })
        .collect();
    // The pants coupon applies to no line: not listed.
    assert_eq!(
        alone,
        [
            ("18.00 off, alone".to_owned(), 1_800),
            ("20% off footwear".to_owned(), 1_500),
            ("50% off hats".to_owned(), 1_000),
            ("5.00 off".to_owned(), 500),
            ("Free shipping".to_owned(), 490),
        ]
    );
    // Best: the footwear coupon (one product coupon), the order coupon and free shipping:
    // 15.00 + 5.00 + 4.90 = 24.90, more than 18.00 alone.
    assert_eq!(answer.best_discount_amount, 2_490);
    assert!(answer.best_combination_exact);
    assert_eq!(
        answer.best_combination,
        [
            held["20% off footwear"].clone(),
            held["5.00 off"].clone(),
            held["Free shipping"].clone()
        ]
    );
    // Another tenant's member with the same id holds nothing.
    let none = applicable(app, "beta").await;
    assert!(none.coupons.is_empty() && none.best_combination.is_empty());
}

fn use_request(member: &str, coupon: &str, order: &str) -> pb::UseCouponRequest {
    pb::UseCouponRequest {
        tenant_id: "acme".into(),
        member_id: member.into(),
        coupon_id: coupon.into(),
        order_id: order.into(),
        request_id: unique("use"),
        amount: 9_500,
        currency: "EUR".into(),
        ..Default::default()
    }
}

async fn a_use_with_a_cart_records_the_priced_discount_and_one_without_is_refused(app: &TestApp) {
    let product = create_template(app, "acme", product_coupon()).await;
    let order = create_template(app, "acme", order_coupon()).await;
    let product = claim(app, "acme", "m1", &product.id)
        .await
        .expect("claim")
        .id;
    let order_one = claim(app, "acme", "m1", &order.id).await.expect("claim").id;
    // A scoped coupon needs the cart: refused without one, by ValidateCoupon too.
    let status = app
        .user_coupons()
        .use_coupon(use_request("m1", &product, "o1"))
        .await
        .expect_err("no cart");
    assert_error(&status, Code::FailedPrecondition, "CART_REQUIRED");
    let check = app
        .user_coupons()
        .validate_coupon(pb::ValidateCouponRequest {
            tenant_id: "acme".into(),
            member_id: "m1".into(),
            coupon_id: product.clone(),
            amount: 9_500,
            currency: "EUR".into(),
            order_id: String::new(),
        })
        .await
        .expect("validate")
        .into_inner();
    assert!(!check.usable);
    assert_eq!(check.failures[0].reason, "CART_REQUIRED");
    // The order coupon after the product coupon: what PriceOrder says, 5.00 of what is left.
    let expected = priced(app, price("acme", "m1", &[&product, &order_one], 0)).await;
    let used_product = app
        .user_coupons()
        .use_coupon(pb::UseCouponRequest {
            lines: cart(),
            shipping_amount: 490,
            other_coupon_ids: vec![order_one.clone()],
            ..use_request("m1", &product, "o1")
        })
        .await
        .expect("use with cart")
        .into_inner()
        .user_coupon
        .expect("coupon");
    assert_eq!(
        used_product.discount_amount,
        expected.coupons[0].discount_amount
    );
    assert_eq!(used_product.order_amount, 9_500 + 490);
    let used_order = app
        .user_coupons()
        .use_coupon(pb::UseCouponRequest {
            lines: cart(),
            shipping_amount: 490,
            ..use_request("m1", &order_one, "o1")
        })
        .await
        .expect("use with cart")
        .into_inner()
        .user_coupon
        .expect("coupon");
    assert_eq!(
        used_order.discount_amount,
        expected.coupons[1].discount_amount
    );
    // A coupon whose scope no line is in is refused.
    let pants = create_template(
        app,
        "acme",
        pb::CouponTemplate {
            scope: Some(scope(&["pants"])),
            stacking: None,
            ..product_coupon()
        },
    )
    .await;
    let pants = claim(app, "acme", "m1", &pants.id).await.expect("claim").id;
    let status = app
        .user_coupons()
        .use_coupon(pb::UseCouponRequest {
            lines: cart(),
            ..use_request("m1", &pants, "o2")
        })
        .await
        .expect_err("no line in scope");
    assert_error(&status, Code::FailedPrecondition, "COUPON_NOT_APPLICABLE");
}

async fn stacking_rules_hold_on_locks_and_uses_under_concurrency(app: &TestApp) {
    // Each tenant: two exclusive coupons of one member, locked at once for the same order id
    // (the same id in both tenants): exactly one per tenant succeeds.
    let alone = pb::CouponTemplate {
        stacking: Some(exclusive()),
        ..template()
    };
    for _ in 0..3 {
        let order = unique("order");
        let mut calls = Vec::new();
        for tenant in ["acme", "beta"] {
            let made = create_template(app, tenant, alone.clone()).await;
            for _ in 0..2 {
                let coupon = claim(app, tenant, "m1", &made.id).await.expect("claim");
                let mut client = app.user_coupons();
                let request = pb::LockCouponRequest {
                    tenant_id: tenant.into(),
                    member_id: "m1".into(),
                    coupon_id: coupon.id,
                    order_id: order.clone(),
                    request_id: unique("lock"),
                    lock_ttl: None,
                };
                calls.push(async move {
                    (request.tenant_id.clone(), client.lock_coupon(request).await)
                });
            }
        }
        let results = join_all(calls).await;
        for tenant in ["acme", "beta"] {
            let of: Vec<_> = results.iter().filter(|(t, _)| t == tenant).collect();
            assert_eq!(of.iter().filter(|(_, r)| r.is_ok()).count(), 1, "{tenant}");
            for (_, result) in &of {
                if let Err(status) = result {
                    assert_error(status, Code::FailedPrecondition, "COUPON_NOT_STACKABLE");
                }
            }
        }
    }
    // One coupon per group: a second product coupon on the order is refused, an order coupon
    // is not; past the tenant's cap of 2, any coupon is refused.
    points_program(app, "acme", 2).await;
    let product = create_template(app, "acme", product_coupon()).await;
    let order = create_template(app, "acme", order_coupon()).await;
    let shipping = create_template(app, "acme", free_shipping()).await;
    let first = claim(app, "acme", "m2", &product.id)
        .await
        .expect("claim")
        .id;
    let second = claim(app, "acme", "m2", &product.id)
        .await
        .expect("claim")
        .id;
    let order_one = claim(app, "acme", "m2", &order.id).await.expect("claim").id;
    let ship = claim(app, "acme", "m2", &shipping.id)
        .await
        .expect("claim")
        .id;
    let lock = |coupon: &str| pb::LockCouponRequest {
        tenant_id: "acme".into(),
        member_id: "m2".into(),
        coupon_id: coupon.into(),
        order_id: "o-stack".into(),
        request_id: unique("lock"),
        lock_ttl: None,
    };
    app.user_coupons()
        .lock_coupon(lock(&first))
        .await
        .expect("first product coupon");
    let status = app
        .user_coupons()
        .lock_coupon(lock(&second))
        .await
        .expect_err("same group");
    assert_error(&status, Code::FailedPrecondition, "COUPON_NOT_STACKABLE");
    app.user_coupons()
        .lock_coupon(lock(&order_one))
        .await
        .expect("another group");
    let status = app
        .user_coupons()
        .use_coupon(pb::UseCouponRequest {
            member_id: "m2".into(),
            order_id: "o-stack".into(),
            lines: cart(),
            ..use_request("m2", &ship, "o-stack")
        })
        .await
        .expect_err("past the cap");
    assert_error(&status, Code::FailedPrecondition, "ORDER_COUPON_LIMIT");
}

async fn a_budget_is_spent_exactly_under_concurrent_uses_and_given_back_on_return(app: &TestApp) {
    // 1.00 off each, a budget of 50.00: 50 uses.
    let budgeted = pb::CouponTemplate {
        discount: Some(coupon_template::Discount::FixedAmount(
            pb::FixedAmountDiscount {
                amount: 100,
                ..Default::default()
            },
        )),
        min_spend_amount: 0,
        total_stock: 200,
        per_member_limit: 1,
        budget_amount: Some(5_000),
        ..template()
    };
    let made = create_template(app, "acme", budgeted.clone()).await;
    // The same template shape in the other tenant, used at the same time: its budget is its own.
    let other = create_template(app, "beta", budgeted).await;
    let members: Vec<String> = (0..200).map(|n| format!("m{n}")).collect();
    let mut coupons = Vec::new();
    for (tenant, template) in [("acme", &made.id), ("beta", &other.id)] {
        let issued = app
            .user_coupons()
            .distribute_coupons(pb::DistributeCouponsRequest {
                tenant_id: tenant.into(),
                template_id: template.clone(),
                request_id: unique("distribute"),
                member_ids: members.clone(),
                allow_partial: false,
            })
            .await
            .expect("distribute")
            .into_inner();
        for result in issued.results {
            let coupon = result.user_coupon.expect("issued");
            coupons.push((tenant, coupon.member_id, coupon.id));
        }
    }
    let calls = coupons.iter().map(|(tenant, member, coupon)| {
        let mut client = app.user_coupons();
        let request = pb::UseCouponRequest {
            tenant_id: (*tenant).into(),
            ..use_request(member, coupon, &format!("order-{member}"))
        };
        async move { (*tenant, client.use_coupon(request).await) }
    });
    let results = join_all(calls).await;
    for tenant in ["acme", "beta"] {
        let ok = results
            .iter()
            .filter(|(t, r)| *t == tenant && r.is_ok())
            .count();
        assert_eq!(ok, 50, "{tenant}: exactly the budget's uses");
        for (_, result) in results.iter().filter(|(t, _)| *t == tenant) {
            if let Err(status) = result {
                assert_error(status, Code::ResourceExhausted, "BUDGET_EXHAUSTED");
            }
        }
    }
    let get = |tenant: &'static str, id: String| {
        let mut client = app.templates();
        async move {
            client
                .get_coupon_template(pb::GetCouponTemplateRequest {
                    tenant_id: tenant.into(),
                    template_id: id,
                })
                .await
                .expect("get")
                .into_inner()
                .coupon_template
                .expect("template")
        }
    };
    let spent = get("acme", made.id.clone()).await;
    assert_eq!(spent.budget_used_amount, 5_000);
    assert_eq!(spent.budget_remaining_amount, 0);
    assert_eq!(spent.used_count, 50);
    // A return gives its discount back; then one more use fits.
    let (_, used) = results
        .iter()
        .find(|(t, r)| *t == "acme" && r.is_ok())
        .expect("a use");
    let used = used
        .as_ref()
        .expect("used")
        .get_ref()
        .user_coupon
        .clone()
        .expect("coupon");
    app.user_coupons()
        .return_coupon(pb::ReturnCouponRequest {
            tenant_id: "acme".into(),
            member_id: used.member_id.clone(),
            coupon_id: used.id.clone(),
            order_id: used.order_id.clone(),
            request_id: unique("return"),
        })
        .await
        .expect("return");
    let back = get("acme", made.id.clone()).await;
    assert_eq!(back.budget_remaining_amount, 100);
    let (_, member, coupon) = coupons
        .iter()
        .find(|(t, _, c)| {
            *t == "acme"
                && results.iter().all(|(_, r)| {
                    r.as_ref().map_or(true, |r| {
                        r.get_ref().user_coupon.as_ref().is_none_or(|u| &u.id != c)
                    })
                })
        })
        .expect("a coupon refused before");
    app.user_coupons()
        .use_coupon(use_request(member, coupon, "order-late"))
        .await
        .expect("the budget given back is spent");
    assert_eq!(get("acme", made.id).await.budget_remaining_amount, 0);
}

/// The README's worked example, run as written (its `sh` block between the markers) against
/// a real server with the real grpcurl and jq: the answer is the one the README explains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_worked_example_prices_as_it_says() {
    let app = marketing_tests::spawn_app(marketing_tests::Backend::Embedded).await;
    let readme = include_str!("../../README.md");
    let block = readme
        .split("<!-- worked-example:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- worked-example:end -->").next())
        .expect("the README's worked example");
    let script = block
        .trim()
        .trim_start_matches("```sh")
        .trim_end_matches("```")
        .replace("S=127.0.0.1:50051", &format!("S={}", app.addr));
    let grpcurl = crate::server::grpcurl();
    let dir = grpcurl
        .parent()
        .map(|d| d.to_path_buf())
        .unwrap_or_default();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("PATH", path)
            .output()
            .expect("run bash")
    })
    .await
    .expect("the example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the example failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON answer");
    let amount = |field: &str| answer[field].as_str().unwrap_or("0").to_owned();
    assert_eq!(
        [
            "subtotalAmount",
            "discountAmount",
            "shippingAmount",
            "pointsAmount",
            "payableAmount",
            "pointsUsed"
        ]
        .map(amount),
        ["9500", "2490", "490", "3750", "3750", "3750"]
    );
    let shares: Vec<Vec<(String, String)>> = answer["coupons"]
        .as_array()
        .expect("coupons")
        .iter()
        .map(|coupon| {
            coupon["lines"]
                .as_array()
                .map(|lines| {
                    lines
                        .iter()
                        .map(|l| {
                            (
                                l["lineId"].as_str().unwrap_or("").to_owned(),
                                l["discountAmount"].as_str().unwrap_or("").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    assert_eq!(
        shares,
        [
            pairs(&[("shoes", "1200"), ("socks", "300")]),
            pairs(&[("shoes", "300"), ("socks", "75"), ("hat", "125")]),
            Vec::new(),
        ]
    );
    assert_eq!(answer["coupons"][2]["shippingDiscountAmount"], "490");
    app.stop().await;
}
