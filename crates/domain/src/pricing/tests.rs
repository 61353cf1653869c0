use proptest::prelude::*;

use super::*;

fn line(product: &str, category: &str, brand: &str, unit_price: i64, quantity: i64) -> Line {
    Line {
        product_id: product.into(),
        category_ids: vec![category.into()],
        brand_id: brand.into(),
        unit_price,
        quantity,
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn group(name: &str, order: i32) -> Stacking {
    Stacking::Group {
        name: name.into(),
        order,
    }
}

fn terms(benefit: Benefit) -> Terms {
    Terms {
        min_spend_amount: 0,
        scope: Scope::default(),
        benefit,
        stacking: group("order", 2),
    }
}

fn amount_off(amount: i64) -> Benefit {
    Benefit::AmountOff {
        amount,
        allocation: Allocation::Across,
    }
}

/// shoes 2 x 30.00, socks 3 x 5.00, a hat 1 x 20.00.
fn cart() -> Vec<Line> {
    vec![
        line("shoe", "footwear", "acme", 3_000, 2),
        line("sock", "footwear", "knit", 500, 3),
        line("hat", "headwear", "acme", 2_000, 1),
    ]
}

#[test]
fn a_scope_includes_by_product_category_or_brand_and_exclusion_wins() {
    let lines = cart();
    let whole = Scope::default();
    assert!(whole.is_whole_order());
    assert!(lines.iter().all(|l| whole.covers(l)));
    let footwear = Scope {
        categories: set(&["footwear"]),
        excluded_brands: set(&["knit"]),
        ..Scope::default()
    };
    let covered: Vec<bool> = lines.iter().map(|l| footwear.covers(l)).collect();
    assert_eq!(covered, [true, false, false]);
    let acme_but_hats = Scope {
        brands: set(&["acme"]),
        excluded_products: set(&["hat"]),
        ..Scope::default()
    };
    let covered: Vec<bool> = lines.iter().map(|l| acme_but_hats.covers(l)).collect();
    assert_eq!(covered, [true, false, false]);
    let all_but_socks = Scope {
        excluded_products: set(&["sock"]),
        ..Scope::default()
    };
    let covered: Vec<bool> = lines.iter().map(|l| all_but_socks.covers(l)).collect();
    assert_eq!(covered, [true, false, true]);
}

#[test]
fn spreading_gives_the_largest_remainders_the_units_left() {
    assert_eq!(spread(10, &[10, 10, 10]), [4, 3, 3]);
    assert_eq!(spread(7, &[6_000, 1_500, 2_000]), [4, 1, 2]);
    assert_eq!(spread(0, &[5, 5]), [0, 0]);
    // Never more than the weights.
    assert_eq!(spread(100, &[3, 0, 4]), [3, 0, 4]);
    assert_eq!(spread(5, &[0, 0]), [0, 0]);
}

#[test]
fn min_spend_counts_only_the_lines_a_coupon_applies_to() {
    let lines = cart();
    let mut footwear = terms(amount_off(1_000));
    footwear.scope.categories = set(&["footwear"]);
    footwear.min_spend_amount = 7_500; // footwear is 60.00 + 15.00
    let priced = price(&lines, 0, &[&footwear], None, 0, None);
    let applied = priced.coupons[0].clone().expect("applies");
    assert_eq!(applied.discount, 1_000);
    assert_eq!(applied.lines.iter().sum::<i64>(), 1_000);
    assert_eq!(applied.lines[2], 0, "the hat is not footwear");
    footwear.min_spend_amount = 7_501;
    let priced = price(&lines, 0, &[&footwear], None, 0, None);
    assert_eq!(priced.coupons[0], Err(Rejection::MinSpendNotMet));
    assert_eq!(priced.payable, priced.subtotal);
}

#[test]
fn percentages_round_down_and_respect_their_cap() {
    let lines = vec![line("a", "c", "b", 999, 1), line("b", "c", "b", 1, 1)];
    let ten = terms(Benefit::PercentOff {
        basis_points: 1_000,
        max_discount_amount: None,
        allocation: Allocation::Across,
    });
    // 10% of 10.00 = 1.00, spread 99.9 / 0.1 -> 100 / 0.
    let applied = price(&lines, 0, &[&ten], None, 0, None).coupons[0]
        .clone()
        .expect("applies");
    assert_eq!(
        (applied.discount, applied.lines.clone()),
        (100, vec![100, 0])
    );
    let each = terms(Benefit::PercentOff {
        basis_points: 1_000,
        max_discount_amount: None,
        allocation: Allocation::Each,
    });
    // Each line rounded down on its own: 99 + 0.
    let applied = price(&lines, 0, &[&each], None, 0, None).coupons[0]
        .clone()
        .expect("applies");
    assert_eq!((applied.discount, applied.lines), (99, vec![99, 0]));
    let capped = terms(Benefit::PercentOff {
        basis_points: 5_000,
        max_discount_amount: Some(300),
        allocation: Allocation::Across,
    });
    assert_eq!(
        price(&lines, 0, &[&capped], None, 0, None).coupons[0]
            .as_ref()
            .map(|a| a.discount),
        Ok(300)
    );
}

#[test]
fn an_amount_each_is_per_unit_and_never_more_than_a_line() {
    let lines = cart();
    let each = terms(Benefit::AmountOff {
        amount: 600,
        allocation: Allocation::Each,
    });
    let applied = price(&lines, 0, &[&each], None, 0, None).coupons[0]
        .clone()
        .expect("applies");
    // shoes 2 x 6.00, socks 3 x 5.00 (at most their price), hat 6.00.
    assert_eq!(applied.lines, [1_200, 1_500, 600]);
    assert_eq!(applied.discount, 3_300);
}

#[test]
fn free_shipping_takes_the_shipping_up_to_its_cap() {
    let lines = cart();
    let free = terms(Benefit::FreeShipping {
        max_discount_amount: Some(400),
    });
    let priced = price(&lines, 690, &[&free], None, 0, None);
    let applied = priced.coupons[0].clone().expect("applies");
    assert_eq!((applied.discount, applied.shipping), (400, 400));
    assert!(applied.lines.iter().all(|s| *s == 0));
    assert_eq!(priced.payable, priced.subtotal + 690 - 400);
}

fn buy_get(buy: i64, get: i64, max: Option<i64>, scope: Scope, get_scope: Scope) -> Terms {
    Terms {
        scope,
        ..terms(Benefit::BuyGet {
            buy_quantity: buy,
            get_quantity: get,
            get_scope,
            basis_points: WHOLE_BP,
            max_applications: max,
        })
    }
}

#[test]
fn buy_two_get_one_gives_the_cheapest_units_and_counts_each_unit_once() {
    let socks = Scope {
        products: set(&["sock"]),
        ..Scope::default()
    };
    // 3 socks: two paid, one free.
    let lines = vec![line("sock", "footwear", "knit", 500, 3)];
    let b2g1 = buy_get(2, 1, None, socks.clone(), socks.clone());
    let applied = price(&lines, 0, &[&b2g1], None, 0, None).coupons[0]
        .clone()
        .expect("applies");
    assert_eq!(applied.discount, 500);
    // 2 socks: not enough for one free.
    let two = vec![line("sock", "footwear", "knit", 500, 2)];
    assert_eq!(
        price(&two, 0, &[&b2g1], None, 0, None).coupons[0],
        Err(Rejection::NotApplicable)
    );
    // 7 socks: two free; at most one with a maximum of one.
    let seven = vec![line("sock", "footwear", "knit", 500, 7)];
    let applied = price(&seven, 0, &[&b2g1], None, 0, None).coupons[0]
        .clone()
        .expect("applies");
    assert_eq!(applied.discount, 1_000);
    let once = buy_get(2, 1, Some(1), socks.clone(), socks);
    let applied = price(&seven, 0, &[&once], None, 0, None).coupons[0]
        .clone()
        .expect("applies");
    assert_eq!(applied.discount, 500);
}

#[test]
fn buy_shoes_get_the_cheapest_footwear_free() {
    let lines = cart();
    let shoes = Scope {
        products: set(&["shoe"]),
        ..Scope::default()
    };
    let footwear = Scope {
        categories: set(&["footwear"]),
        ..Scope::default()
    };
    // Two shoes bought: one sock (the cheapest footwear) free per shoe.
    let offer = buy_get(1, 1, None, shoes, footwear);
    let applied = price(&lines, 0, &[&offer], None, 0, None).coupons[0]
        .clone()
        .expect("applies");
    assert_eq!(applied.lines, [0, 1_000, 0]);
}

#[test]
fn an_exclusive_coupon_goes_alone_and_a_group_takes_one() {
    let exclusive = Terms {
        stacking: Stacking::Exclusive,
        ..terms(amount_off(100))
    };
    let order_a = terms(amount_off(200));
    let order_b = terms(amount_off(300));
    let product = Terms {
        stacking: group("product", 1),
        ..terms(amount_off(400))
    };
    assert_eq!(
        choose_stack(&[&exclusive, &order_a], None),
        [Ok(()), Err(Rejection::NotStackable)]
    );
    assert_eq!(
        choose_stack(&[&order_a, &exclusive], None),
        [Ok(()), Err(Rejection::NotStackable)]
    );
    assert_eq!(
        choose_stack(&[&order_a, &order_b, &product], None),
        [Ok(()), Err(Rejection::NotStackable), Ok(())]
    );
    assert_eq!(
        choose_stack(&[&order_a, &product], Some(1)),
        [Ok(()), Err(Rejection::OrderCouponLimit)]
    );
}

#[test]
fn groups_apply_in_order_each_on_what_the_previous_left() {
    let lines = vec![line("a", "c", "b", 10_000, 1)];
    // Given order coupon first, but product coupons (order 1) apply before order ones (2).
    let order_pct = terms(Benefit::PercentOff {
        basis_points: 1_000,
        max_discount_amount: None,
        allocation: Allocation::Across,
    });
    let product_off = Terms {
        stacking: group("product", 1),
        ..terms(amount_off(2_000))
    };
    let priced = price(&lines, 0, &[&order_pct, &product_off], None, 0, None);
    // 100.00 - 20.00 = 80.00, then 10% of that.
    assert_eq!(priced.coupons[1].as_ref().map(|a| a.discount), Ok(2_000));
    assert_eq!(priced.coupons[0].as_ref().map(|a| a.discount), Ok(800));
    assert_eq!(priced.discount, 2_800);
    assert_eq!(priced.payable, 7_200);
}

#[test]
fn points_pay_at_most_their_share_with_the_fewest_points() {
    // 100 points = 1.00 (100 minor units); at most half; at least 50 points.
    let rate = PointsRate {
        points: 100,
        amount: 100,
        max_share_bp: 5_000,
        min_points: 50,
    };
    assert_eq!(
        points_paid(10_000, 4_000, rate),
        PointsPaid {
            points: 2_000,
            amount: 2_000
        }
    );
    assert_eq!(points_paid(49, 4_000, rate), PointsPaid::default());
    // 3 points per minor unit: 10 points buy 3 units; 9 points are enough for them.
    let thirds = PointsRate {
        points: 10,
        amount: 3,
        max_share_bp: WHOLE_BP,
        min_points: 1,
    };
    assert_eq!(
        points_paid(10, 1_000, thirds),
        PointsPaid {
            points: 10,
            amount: 3
        }
    );
    assert_eq!(
        points_paid(9, 1_000, thirds),
        PointsPaid {
            points: 7,
            amount: 2
        }
    );
}

fn any_line() -> impl Strategy<Value = Line> {
    (
        prop::sample::select(vec!["p1", "p2", "p3"]),
        prop::sample::select(vec!["c1", "c2"]),
        prop::sample::select(vec!["b1", "b2"]),
        0..100_000_i64,
        1..20_i64,
    )
        .prop_map(|(p, c, b, price, quantity)| line(p, c, b, price, quantity))
}

fn any_scope() -> impl Strategy<Value = Scope> {
    let ids = |pool: Vec<&'static str>| {
        prop::collection::btree_set(prop::sample::select(pool), 0..2)
            .prop_map(|s| s.into_iter().map(str::to_owned).collect::<BTreeSet<_>>())
    };
    (
        ids(vec!["p1", "p2", "p3"]),
        ids(vec!["c1", "c2"]),
        ids(vec!["b1", "b2"]),
        ids(vec!["p1", "p2", "p3"]),
    )
        .prop_map(|(products, categories, brands, excluded_products)| Scope {
            products,
            categories,
            brands,
            excluded_products,
            ..Scope::default()
        })
}

fn any_terms() -> impl Strategy<Value = Terms> {
    let allocation = prop_oneof![Just(Allocation::Across), Just(Allocation::Each)];
    let benefit = prop_oneof![
        (0..50_000_i64, allocation.clone())
            .prop_map(|(amount, allocation)| Benefit::AmountOff { amount, allocation }),
        (0..=WHOLE_BP, prop::option::of(0..20_000_i64), allocation).prop_map(
            |(basis_points, max_discount_amount, allocation)| Benefit::PercentOff {
                basis_points,
                max_discount_amount,
                allocation
            }
        ),
        prop::option::of(0..2_000_i64).prop_map(|max_discount_amount| Benefit::FreeShipping {
            max_discount_amount
        }),
        (
            1..4_i64,
            1..3_i64,
            any_scope(),
            0..=WHOLE_BP,
            prop::option::of(1..4_i64)
        )
            .prop_map(
                |(buy_quantity, get_quantity, get_scope, basis_points, max_applications)| {
                    Benefit::BuyGet {
                        buy_quantity,
                        get_quantity,
                        get_scope,
                        basis_points,
                        max_applications,
                    }
                }
            ),
    ];
    let stacking = prop_oneof![
        1 => Just(Stacking::Exclusive),
        4 => (prop::sample::select(vec!["product", "order", "shipping", ""]), 0..3_i32)
            .prop_map(|(name, order)| group(name, order)),
    ];
    (0..50_000_i64, any_scope(), benefit, stacking).prop_map(
        |(min_spend_amount, scope, benefit, stacking)| Terms {
            min_spend_amount,
            scope,
            benefit,
            stacking,
        },
    )
}

proptest! {
    #[test]
    fn allocations_sum_to_their_discount_and_no_line_goes_below_zero(
        lines in prop::collection::vec(any_line(), 1..8),
        shipping in 0..3_000_i64,
        coupons in prop::collection::vec(any_terms(), 0..5),
        points in 0..1_000_000_i64,
        share in 0..=WHOLE_BP,
    ) {
        let refs: Vec<&Terms> = coupons.iter().collect();
        let rate = PointsRate { points: 100, amount: 100, max_share_bp: share, min_points: 1 };
        let priced = price(&lines, shipping, &refs, Some(3), points, Some(rate));
        let mut carried = vec![0_i64; lines.len()];
        let mut shipping_taken = 0;
        let mut accepted = Vec::new();
        for (terms, outcome) in coupons.iter().zip(&priced.coupons) {
            if let Ok(applied) = outcome {
                prop_assert_eq!(applied.lines.iter().sum::<i64>() + applied.shipping, applied.discount);
                prop_assert!(applied.lines.iter().all(|s| *s >= 0));
                for (total, share) in carried.iter_mut().zip(&applied.lines) {
                    *total += share;
                }
                shipping_taken += applied.shipping;
                accepted.push(terms);
            }
        }
        for (line, total) in lines.iter().zip(&carried) {
            prop_assert!(*total <= line.amount(), "a line went below zero");
        }
        prop_assert!(shipping_taken <= shipping);
        // The coupons that applied are allowed together.
        for (i, a) in accepted.iter().enumerate() {
            for b in &accepted[i + 1..] {
                prop_assert!(!clash(a, b));
            }
        }
        prop_assert!(accepted.len() <= 3);
        // Points pay at most their share of what coupons left, and never more than offered.
        let due = priced.subtotal + shipping - priced.discount;
        prop_assert!(priced.points.amount <= percent(due, share));
        prop_assert!(priced.points.points <= points);
        prop_assert!(priced.payable >= 0);
        prop_assert_eq!(priced.payable, due - priced.points.amount);
    }

    #[test]
    fn spreading_is_exact_and_bounded(
        total in 0..1_000_000_i64,
        weights in prop::collection::vec(0..100_000_i64, 1..20),
    ) {
        let shares = spread(total, &weights);
        let sum: i64 = weights.iter().sum();
        prop_assert_eq!(shares.iter().sum::<i64>(), total.min(sum));
        for (share, weight) in shares.iter().zip(&weights) {
            prop_assert!(*share >= 0 && share <= weight);
        }
    }

    #[test]
    fn the_best_stack_is_allowed_and_none_allowed_is_better(
        lines in prop::collection::vec(any_line(), 1..6),
        shipping in 0..3_000_i64,
        coupons in prop::collection::vec(any_terms(), 0..7),
        limit in prop::option::of(1..4_usize),
    ) {
        let refs: Vec<&Terms> = coupons.iter().collect();
        best_stack_holds(&lines, shipping, &refs, limit)?;
    }

    /// Members hold several coupons of one template: copies with the same terms, which the
    /// search prices once per group.
    #[test]
    fn the_best_stack_holds_with_copies_of_a_template(
        lines in prop::collection::vec(any_line(), 1..6),
        shipping in 0..3_000_i64,
        templates in prop::collection::vec(any_terms(), 1..4),
        copies in prop::collection::vec(0..4_usize, 8),
        limit in prop::option::of(1..4_usize),
    ) {
        // Up to eight coupons, each a copy of one of the templates, in mixed order.
        let coupons: Vec<Terms> = copies
            .iter()
            .map(|&c| templates[c % templates.len()].clone())
            .collect();
        let refs: Vec<&Terms> = coupons.iter().collect();
        best_stack_holds(&lines, shipping, &refs, limit)?;
    }
}

/// What `best_stack` returns is allowed, applies in full and gives what it says, and no
/// allowed combination gives more (every subset, by brute force).
fn best_stack_holds(
    lines: &[Line],
    shipping: i64,
    refs: &[&Terms],
    limit: Option<usize>,
) -> Result<(), TestCaseError> {
    let BestStack {
        chosen,
        discount,
        exact,
    } = best_stack(lines, shipping, refs, limit);
    prop_assert!(exact, "a handful of coupons is searched to the end");
    let picked: Vec<&Terms> = chosen.iter().map(|&i| refs[i]).collect();
    prop_assert!(choose_stack(&picked, limit).iter().all(Result::is_ok));
    let priced = price(lines, shipping, &picked, limit, 0, None);
    prop_assert!(priced.coupons.iter().all(Result::is_ok));
    prop_assert_eq!(priced.discount, discount);
    for mask in 0_u32..(1 << refs.len()) {
        let subset: Vec<&Terms> = (0..refs.len())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| refs[i])
            .collect();
        if choose_stack(&subset, limit).iter().all(Result::is_ok) {
            let other = price(lines, shipping, &subset, limit, 0, None);
            prop_assert!(
                other.discount <= discount,
                "{:?} gives {} > {}",
                mask,
                other.discount,
                discount
            );
        }
    }
    Ok(())
}

#[test]
fn fifty_shrinking_percentages_are_searched_within_the_budget() {
    // Each 10% applies on what the others left: alone each gives far more than it adds, so
    // the bound cuts little and the search is held by its budget, not by the coupons.
    let coupons: Vec<Terms> = (0..50)
        .map(|i| Terms {
            stacking: group("", 0),
            ..terms(Benefit::PercentOff {
                basis_points: 1_000 + i,
                max_discount_amount: None,
                allocation: Allocation::Across,
            })
        })
        .collect();
    let refs: Vec<&Terms> = coupons.iter().collect();
    let best = best_stack(&cart(), 0, &refs, None);
    assert!(!best.exact, "fifty coupons of this kind pass the budget");
    // Every coupon stacks: the best found takes them all.
    assert_eq!(best.chosen.len(), 50);
    let picked: Vec<&Terms> = best.chosen.iter().map(|&i| refs[i]).collect();
    assert_eq!(
        price(&cart(), 0, &picked, None, 0, None).discount,
        best.discount
    );
}
