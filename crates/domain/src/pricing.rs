//! Pricing a cart: which lines a coupon applies to, what each coupon takes off and how the
//! discount spreads over the lines, which coupons may go together, and what points pay. Pure:
//! the use case reads the member's coupons and the tenant's settings and feeds them here.
//!
//! Every amount is an integer in minor units. The rules, each tested below:
//! - A coupon's **scope** names products, categories and brands it applies to, and ones it
//!   excludes; exclusion wins, and no inclusion list means every line.
//! - Coupons apply **group by group** in their stacking order, each computed on what the
//!   previous ones left of each line (and of the shipping).
//! - A percentage **rounds down** (to the minor unit, per discount: of the lines together for
//!   `Across`, of each line for `Each`), and a discount never exceeds what it applies to.
//! - A discount **spreads** over its lines in proportion to what each has left, with the
//!   largest-remainder method: the shares are integers, never negative, never above a line's
//!   amount left, and sum exactly to the discount.
//! - **Points** pay at most the configured share of what is payable after coupons, in whole
//!   minor units, and the points taken are the fewest that buy that amount.

use std::collections::BTreeSet;

/// Basis points of a whole (100%).
pub const WHOLE_BP: i64 = 10_000;

/// One line of a cart: `quantity` units of a product at `unit_price` each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub product_id: String,
    pub category_ids: Vec<String>,
    pub brand_id: String,
    pub unit_price: i64,
    pub quantity: i64,
}

impl Line {
    pub fn amount(&self) -> i64 {
        self.unit_price.saturating_mul(self.quantity)
    }
}

/// Which lines a coupon applies to. Empty inclusions: every line not excluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub products: BTreeSet<String>,
    pub categories: BTreeSet<String>,
    pub brands: BTreeSet<String>,
    pub excluded_products: BTreeSet<String>,
    pub excluded_categories: BTreeSet<String>,
    pub excluded_brands: BTreeSet<String>,
}

impl Scope {
    /// No inclusion list and no exclusion: the whole order.
    pub fn is_whole_order(&self) -> bool {
        *self == Self::default()
    }

    pub fn covers(&self, line: &Line) -> bool {
        let excluded = self.excluded_products.contains(&line.product_id)
            || self.excluded_brands.contains(&line.brand_id)
            || line
                .category_ids
                .iter()
                .any(|c| self.excluded_categories.contains(c));
        if excluded {
            return false;
        }
        if self.products.is_empty() && self.categories.is_empty() && self.brands.is_empty() {
            return true;
        }
        self.products.contains(&line.product_id)
            || self.brands.contains(&line.brand_id)
            || line
                .category_ids
                .iter()
                .any(|c| self.categories.contains(c))
    }
}

/// How a discount applies to its lines: once to their total, or to each unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Allocation {
    #[default]
    Across,
    Each,
}

/// What a coupon takes off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Benefit {
    /// `amount` off the applicable lines together (`Across`), or off each unit (`Each`).
    AmountOff { amount: i64, allocation: Allocation },
    /// A percentage off, capped at `max_discount_amount` (for `Each`: per unit).
    PercentOff {
        basis_points: i64,
        max_discount_amount: Option<i64>,
        allocation: Allocation,
    },
    /// The shipping amount, capped.
    FreeShipping { max_discount_amount: Option<i64> },
    /// For every `buy_quantity` units of the scope's lines, `get_quantity` units of
    /// `get_scope`'s lines at `basis_points` off (10,000: free), the cheapest first, at most
    /// `max_applications` times. A unit counts once: as bought or as got.
    BuyGet {
        buy_quantity: i64,
        get_quantity: i64,
        get_scope: Scope,
        basis_points: i64,
        max_applications: Option<i64>,
    },
}

/// How a coupon goes with others on one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stacking {
    /// Alone on the order.
    Exclusive,
    /// With coupons of other groups: at most one per group, groups applied in ascending
    /// `order` (ties by name). An empty name is no group: it stacks with every coupon but an
    /// exclusive one.
    Group { name: String, order: i32 },
}

impl Default for Stacking {
    fn default() -> Self {
        Self::Group {
            name: String::new(),
            order: 0,
        }
    }
}

/// A coupon's terms as pricing needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// What the lines it applies to must come to (what is left of them when it applies).
    pub min_spend_amount: i64,
    pub scope: Scope,
    pub benefit: Benefit,
    pub stacking: Stacking,
}

/// Why a coupon does not apply to a cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Another coupon of the order excludes it (an exclusive coupon, or one of its group).
    NotStackable,
    /// The order holds as many coupons as the tenant allows.
    OrderCouponLimit,
    /// No line of the cart is in its scope (or, for buy X get Y, too few units).
    NotApplicable,
    /// The lines it applies to come to less than its minimum spend.
    MinSpendNotMet,
}

/// What one coupon takes off, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub discount: i64,
    /// Per line, in the cart's order: what of the discount that line carries.
    pub lines: Vec<i64>,
    /// What of the discount is taken off the shipping.
    pub shipping: i64,
}

/// The tenant's points program, as pricing needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointsRate {
    /// `points` points buy `amount` minor units.
    pub points: i64,
    pub amount: i64,
    /// The largest share of what is payable (after coupons) points may pay, in basis points.
    pub max_share_bp: i64,
    /// The fewest points one redemption may use.
    pub min_points: i64,
}

/// What points pay of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PointsPaid {
    /// Points taken (at most those offered).
    pub points: i64,
    /// Minor units they pay.
    pub amount: i64,
}

/// A priced cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub subtotal: i64,
    pub shipping: i64,
    /// Per coupon, in the order given: what it took off, or why it did not apply.
    pub coupons: Vec<Result<Applied, Rejection>>,
    /// Coupons' discounts together (lines and shipping).
    pub discount: i64,
    pub points: PointsPaid,
    /// subtotal + shipping - discount - points.
    pub payable: i64,
}

/// Which of `coupons` (in the order given) may go together on one order, at most `limit`
/// of them: an exclusive coupon only alone, at most one per group. A coupon that would break
/// the rules with those accepted before it is rejected.
pub fn choose_stack(coupons: &[&Terms], limit: Option<usize>) -> Vec<Result<(), Rejection>> {
    let mut accepted: Vec<&Terms> = Vec::new();
    coupons
        .iter()
        .map(|terms| {
            let clashes = accepted.iter().any(|other| clash(terms, other));
            if clashes {
                Err(Rejection::NotStackable)
            } else if limit.is_some_and(|limit| accepted.len() >= limit) {
                Err(Rejection::OrderCouponLimit)
            } else {
                accepted.push(terms);
                Ok(())
            }
        })
        .collect()
}

/// Whether two coupons may not be on one order together.
pub fn clash(a: &Terms, b: &Terms) -> bool {
    match (&a.stacking, &b.stacking) {
        (Stacking::Exclusive, _) | (_, Stacking::Exclusive) => true,
        (Stacking::Group { name: x, .. }, Stacking::Group { name: y, .. }) => {
            !x.is_empty() && x == y
        }
    }
}

/// Prices `lines` and `shipping` with `coupons` (in the order given; those the stacking
/// rules reject are reported and not applied) and up to `points_offered` points.
pub fn price(
    lines: &[Line],
    shipping: i64,
    coupons: &[&Terms],
    coupon_limit: Option<usize>,
    points_offered: i64,
    rate: Option<PointsRate>,
) -> Priced {
    let subtotal = lines
        .iter()
        .map(Line::amount)
        .fold(0_i64, i64::saturating_add);
    let stack = choose_stack(coupons, coupon_limit);
    // Groups apply in their order; within one order value, as given.
    let mut order: Vec<usize> = (0..coupons.len()).filter(|&i| stack[i].is_ok()).collect();
    order.sort_by(|&a, &b| rank(coupons[a]).cmp(&rank(coupons[b])));
    let mut left: Vec<i64> = lines.iter().map(Line::amount).collect();
    let mut shipping_left = shipping;
    let mut coupons_out: Vec<Result<Applied, Rejection>> = stack
        .iter()
        .map(|decision| match decision {
            Ok(()) => Err(Rejection::NotApplicable),
            Err(rejection) => Err(*rejection),
        })
        .collect();
    for i in order {
        let applied = apply(coupons[i], lines, &left, shipping_left);
        if let Ok(applied) = &applied {
            for (line_left, share) in left.iter_mut().zip(&applied.lines) {
                *line_left -= share;
            }
            shipping_left -= applied.shipping;
        }
        coupons_out[i] = applied;
    }
    let discount = coupons_out
        .iter()
        .flatten()
        .map(|applied| applied.discount)
        .sum::<i64>();
    let due = subtotal.saturating_add(shipping) - discount;
    let points = rate.map_or(PointsPaid::default(), |rate| {
        points_paid(points_offered, due, rate)
    });
    Priced {
        subtotal,
        shipping,
        coupons: coupons_out,
        discount,
        points,
        payable: due - points.amount,
    }
}

impl Rejection {
    /// The refusal of the error table it is (under a cap of `limit` coupons an order).
    pub fn into_refusal(self, limit: Option<usize>) -> crate::error::Refusal {
        use crate::error::Refusal;
        match self {
            Self::NotStackable => Refusal::CouponNotStackable { other: None },
            Self::OrderCouponLimit => Refusal::OrderCouponLimit {
                limit: limit.map_or(0, |limit| u32::try_from(limit).unwrap_or(u32::MAX)),
            },
            Self::NotApplicable => Refusal::CouponNotApplicable,
            Self::MinSpendNotMet => Refusal::MinSpendNotMet,
        }
    }
}

/// Where a coupon applies among an order's coupons: groups in ascending order (ties by name),
/// an exclusive coupon first.
pub fn rank(terms: &Terms) -> (i32, &str) {
    match &terms.stacking {
        Stacking::Exclusive => (i32::MIN, ""),
        Stacking::Group { name, order } => (*order, name.as_str()),
    }
}

/// What `terms` takes off, given what is left of each line and of the shipping.
pub fn apply(
    terms: &Terms,
    lines: &[Line],
    left: &[i64],
    shipping_left: i64,
) -> Result<Applied, Rejection> {
    let covered: Vec<bool> = lines.iter().map(|line| terms.scope.covers(line)).collect();
    let base: i64 = left
        .iter()
        .zip(&covered)
        .filter(|(_, covered)| **covered)
        .map(|(left, _)| *left)
        .sum();
    let none = || vec![0; lines.len()];
    if let Benefit::FreeShipping {
        max_discount_amount,
    } = &terms.benefit
    {
        if base < terms.min_spend_amount {
            return Err(Rejection::MinSpendNotMet);
        }
        let discount = capped(shipping_left, *max_discount_amount);
        return Ok(Applied {
            discount,
            lines: none(),
            shipping: discount,
        });
    }
    if !covered.iter().any(|c| *c) {
        return Err(Rejection::NotApplicable);
    }
    if base < terms.min_spend_amount {
        return Err(Rejection::MinSpendNotMet);
    }
    let shares = match &terms.benefit {
        Benefit::AmountOff {
            amount,
            allocation: Allocation::Across,
        } => spread((*amount).min(base), &masked(left, &covered)),
        Benefit::AmountOff {
            amount,
            allocation: Allocation::Each,
        } => per_line(lines, left, &covered, |line, left| {
            amount.saturating_mul(line.quantity).min(left)
        }),
        Benefit::PercentOff {
            basis_points,
            max_discount_amount,
            allocation: Allocation::Across,
        } => spread(
            capped(percent(base, *basis_points), *max_discount_amount),
            &masked(left, &covered),
        ),
        Benefit::PercentOff {
            basis_points,
            max_discount_amount,
            allocation: Allocation::Each,
        } => per_line(lines, left, &covered, |line, left| {
            let cap = max_discount_amount.map(|cap| cap.saturating_mul(line.quantity));
            capped(percent(left, *basis_points), cap)
        }),
        Benefit::BuyGet {
            buy_quantity,
            get_quantity,
            get_scope,
            basis_points,
            max_applications,
        } => buy_get(
            lines,
            left,
            &covered,
            get_scope,
            (*buy_quantity, *get_quantity),
            *basis_points,
            *max_applications,
        ),
        Benefit::FreeShipping { .. } => none(),
    };
    let discount: i64 = shares.iter().sum();
    if discount == 0 && matches!(terms.benefit, Benefit::BuyGet { .. }) {
        return Err(Rejection::NotApplicable);
    }
    Ok(Applied {
        discount,
        lines: shares,
        shipping: 0,
    })
}

fn capped(amount: i64, cap: Option<i64>) -> i64 {
    cap.map_or(amount, |cap| amount.min(cap)).max(0)
}

/// `basis_points` of `amount`, rounded down.
pub fn percent(amount: i64, basis_points: i64) -> i64 {
    let exact = i128::from(amount.max(0)) * i128::from(basis_points.clamp(0, WHOLE_BP))
        / i128::from(WHOLE_BP);
    i64::try_from(exact).unwrap_or(i64::MAX)
}

fn masked(left: &[i64], covered: &[bool]) -> Vec<i64> {
    left.iter()
        .zip(covered)
        .map(|(left, covered)| if *covered { *left } else { 0 })
        .collect()
}

fn per_line(
    lines: &[Line],
    left: &[i64],
    covered: &[bool],
    share: impl Fn(&Line, i64) -> i64,
) -> Vec<i64> {
    lines
        .iter()
        .zip(left)
        .zip(covered)
        .map(|((line, left), covered)| {
            if *covered {
                share(line, *left).clamp(0, *left)
            } else {
                0
            }
        })
        .collect()
}

/// `total` (at most the weights' sum) spread over `weights` in proportion, by the largest
/// remainder method: integer shares, each at most its weight, summing to `total`.
pub fn spread(total: i64, weights: &[i64]) -> Vec<i64> {
    let sum: i128 = weights.iter().map(|w| i128::from((*w).max(0))).sum();
    let total = i128::from(total.max(0)).min(sum);
    if sum == 0 || total == 0 {
        return vec![0; weights.len()];
    }
    let mut shares = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    let mut given: i128 = 0;
    for (index, weight) in weights.iter().enumerate() {
        let exact = total * i128::from((*weight).max(0));
        shares.push(exact / sum);
        remainders.push((exact % sum, index));
        given += exact / sum;
    }
    // The units left go to the largest remainders (ties: the earlier line).
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, index) in remainders.into_iter().take((total - given) as usize) {
        shares[index] += 1;
    }
    shares
        .into_iter()
        .map(|share| i64::try_from(share).unwrap_or(i64::MAX))
        .collect()
}

/// Buy X get Y over what is left of the lines: the cheapest target units are got, the other
/// units pay for them; each unit counts once.
fn buy_get(
    lines: &[Line],
    left: &[i64],
    buys: &[bool],
    get_scope: &Scope,
    (buy, get): (i64, i64),
    basis_points: i64,
    max_applications: Option<i64>,
) -> Vec<i64> {
    let mut shares = vec![0; lines.len()];
    if buy <= 0 || get <= 0 {
        return shares;
    }
    // Units by line: (unit value left, units, line), targets cheapest first.
    let unit = |i: usize| {
        if lines[i].quantity > 0 {
            left[i] / lines[i].quantity
        } else {
            0
        }
    };
    let mut targets: Vec<(i64, i64, usize)> = (0..lines.len())
        .filter(|&i| get_scope.covers(&lines[i]) && lines[i].quantity > 0)
        .map(|i| (unit(i), lines[i].quantity, i))
        .collect();
    targets.sort();
    let buying: i64 = (0..lines.len())
        .filter(|&i| buys[i])
        .map(|i| lines[i].quantity.max(0))
        .sum();
    // Units both bought and got can serve once: as many applications as leave `buy` units
    // besides the `get` ones taken.
    let both = |taken: &[(usize, i64)]| -> i64 {
        taken
            .iter()
            .filter(|(i, _)| buys[*i])
            .map(|(_, units)| *units)
            .sum()
    };
    let mut taken: Vec<(usize, i64)> = Vec::new();
    let mut applications = 0;
    let mut cursor = 0;
    let mut used_in_target = 0;
    let limit = max_applications.unwrap_or(i64::MAX);
    while applications < limit {
        // The next `get` cheapest target units.
        let mut wanted = get;
        let mut picked: Vec<(usize, i64)> = Vec::new();
        let (mut c, mut used) = (cursor, used_in_target);
        while wanted > 0 && c < targets.len() {
            let (_, units, line) = targets[c];
            let free = units - used;
            let take = free.min(wanted);
            picked.push((line, take));
            wanted -= take;
            used += take;
            if used == units {
                c += 1;
                used = 0;
            }
        }
        if wanted > 0 {
            break;
        }
        let mut all = taken.clone();
        all.extend(picked.iter().copied());
        let paying = buying - both(&all);
        if paying < buy * (applications + 1) {
            break;
        }
        taken = all;
        cursor = c;
        used_in_target = used;
        applications += 1;
    }
    for (line, units) in taken {
        let value = unit(line).saturating_mul(units);
        shares[line] += percent(value, basis_points);
    }
    for (share, left) in shares.iter_mut().zip(left) {
        *share = (*share).min(*left);
    }
    shares
}

/// What up to `offered` points pay of `due`: at most the program's share of it, in whole
/// minor units, with the fewest points that buy that; nothing below the smallest redemption.
pub fn points_paid(offered: i64, due: i64, rate: PointsRate) -> PointsPaid {
    if offered <= 0 || offered < rate.min_points || rate.points <= 0 || rate.amount <= 0 {
        return PointsPaid::default();
    }
    let worth = i128::from(offered) * i128::from(rate.amount) / i128::from(rate.points);
    let share = i128::from(percent(due.max(0), rate.max_share_bp));
    let amount = worth.min(share);
    // The fewest points that buy `amount`: ceil(amount * points / amount_per).
    let points =
        (amount * i128::from(rate.points) + i128::from(rate.amount) - 1) / i128::from(rate.amount);
    if points < i128::from(rate.min_points) || amount == 0 {
        return PointsPaid::default();
    }
    PointsPaid {
        points: i64::try_from(points).unwrap_or(i64::MAX),
        amount: i64::try_from(amount).unwrap_or(i64::MAX),
    }
}

/// Most combinations [`best_stack`] prices before it answers with the best it found: the
/// search is exponential in the worst case (many stackable coupons whose discounts shrink
/// each other, e.g. fifty percentages), and one member's coupons must not hold a core.
pub const MAX_STACKS_PRICED: u32 = 4_000;

/// What [`best_stack`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestStack {
    /// Indexes of the coupons chosen, ascending.
    pub chosen: Vec<usize>,
    /// Their discount together.
    pub discount: i64,
    /// Whether the search ended within [`MAX_STACKS_PRICED`] (else: the best of those).
    pub exact: bool,
}

/// The best combination of `coupons` the stacking rules allow on one order of `lines` and
/// `shipping` (at most `limit` coupons). Exact (within [`MAX_STACKS_PRICED`]): a branch and
/// bound over the choices (each group: one of its coupons or none; each coupon without a
/// group: in or out; an exclusive coupon: alone), bounded by what each coupon can add to
/// any combination (what it gives alone; buy X get Y: its share of its target lines) and by
/// what the order comes to; copies of one template in a group are searched once. Ties: fewer
/// coupons, then the lower indexes.
pub fn best_stack(
    lines: &[Line],
    shipping: i64,
    coupons: &[&Terms],
    limit: Option<usize>,
) -> BestStack {
    let full: Vec<i64> = lines.iter().map(Line::amount).collect();
    let alone: Vec<i64> = coupons
        .iter()
        .map(|terms| apply(terms, lines, &full, shipping).map_or(0, |applied| applied.discount))
        .collect();
    best_stack_of(lines, shipping, coupons, &alone, limit)
}

/// [`best_stack`], given what each coupon takes off the whole cart alone (`alone[i]` for
/// `coupons[i]`), as a caller that ranked the coupons by it has.
pub fn best_stack_of(
    lines: &[Line],
    shipping: i64,
    coupons: &[&Terms],
    alone: &[i64],
    limit: Option<usize>,
) -> BestStack {
    debug_assert_eq!(coupons.len(), alone.len());
    // What each coupon can add to any combination at most: what it gives alone (a discount
    // never grows when what it applies to shrinks), except buy X get Y, whose cheapest units
    // change when others shrink lines (alone it may find only bought units to give; after
    // another coupon, a cheaper unit it can give): its share of every target line then.
    let most: Vec<i64> = coupons
        .iter()
        .zip(alone)
        .map(|(terms, &alone)| match &terms.benefit {
            Benefit::BuyGet {
                get_scope,
                basis_points,
                ..
            } => {
                let targets = lines
                    .iter()
                    .filter(|line| get_scope.covers(line))
                    .map(Line::amount)
                    .fold(0, i64::saturating_add);
                alone.max(percent(targets, *basis_points))
            }
            _ => alone,
        })
        .collect();
    // The best exclusive coupon alone.
    let mut best: (Vec<usize>, i64) = (Vec::new(), 0);
    for (i, terms) in coupons.iter().enumerate() {
        if terms.stacking == Stacking::Exclusive && alone[i] > best.1 {
            best = (vec![i], alone[i]);
        }
    }
    // Slots: a named group's coupons (one or none), or one ungrouped coupon (in or out);
    // only coupons that can add something are searched.
    let mut groups: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    let mut slots: Vec<Vec<usize>> = Vec::new();
    for (i, terms) in coupons.iter().enumerate() {
        if most[i] == 0 {
            continue;
        }
        match &terms.stacking {
            Stacking::Exclusive => {}
            Stacking::Group { name, .. } if name.is_empty() => slots.push(vec![i]),
            Stacking::Group { name, .. } => groups.entry(name.as_str()).or_default().push(i),
        }
    }
    slots.extend(groups.into_values());
    for slot in &mut slots {
        slot.sort_by(|a, b| most[*b].cmp(&most[*a]).then(a.cmp(b)));
        // At most one coupon of a group applies, so of coupons with the same terms (copies of
        // one template) only the first can be chosen: the others price the same
        // combinations again, and lose the tie on their index.
        let mut kept: Vec<usize> = Vec::with_capacity(slot.len());
        for &i in slot.iter() {
            if !kept.iter().any(|&k| coupons[k] == coupons[i]) {
                kept.push(i);
            }
        }
        *slot = kept;
    }
    // Richest slots first: good combinations early, so the bound cuts sooner.
    slots.sort_by(|a, b| most[b[0]].cmp(&most[a[0]]));
    // What the slots from k on can add at most.
    let mut rest = vec![0_i64; slots.len() + 1];
    for k in (0..slots.len()).rev() {
        rest[k] = rest[k + 1].saturating_add(most[slots[k][0]]);
    }
    let search_state = Search {
        lines,
        shipping,
        coupons,
        most: &most,
        slots: &slots,
        rest: &rest,
        limit: limit.unwrap_or(usize::MAX),
        total: lines
            .iter()
            .map(Line::amount)
            .fold(shipping, i64::saturating_add),
        budget: std::cell::Cell::new(MAX_STACKS_PRICED),
    };
    search(&search_state, 0, 0, &mut Vec::new(), &mut best);
    best.0.sort_unstable();
    BestStack {
        chosen: best.0,
        discount: best.1,
        exact: search_state.budget.get() > 0,
    }
}

struct Search<'a> {
    lines: &'a [Line],
    shipping: i64,
    coupons: &'a [&'a Terms],
    /// What each coupon can add to a combination at most.
    most: &'a [i64],
    slots: &'a [Vec<usize>],
    rest: &'a [i64],
    limit: usize,
    /// What the order comes to: no combination takes more.
    total: i64,
    /// Combinations left to price.
    budget: std::cell::Cell<u32>,
}

impl Search<'_> {
    /// The most the slots from `k` on can add to `current`.
    fn bound(&self, k: usize, current: i64) -> i64 {
        current.saturating_add(self.rest[k]).min(self.total)
    }
}

fn search(
    s: &Search<'_>,
    k: usize,
    current: i64,
    chosen: &mut Vec<usize>,
    best: &mut (Vec<usize>, i64),
) {
    let better = |discount: i64, chosen: &[usize], best: &(Vec<usize>, i64)| {
        discount > best.1
            || (discount == best.1 && !chosen.is_empty() && chosen.len() < best.0.len())
    };
    if better(current, chosen, best) {
        *best = (chosen.to_vec(), current);
    }
    if k == s.slots.len()
        || chosen.len() >= s.limit
        || s.bound(k, current) <= best.1
        || s.budget.get() == 0
    {
        return;
    }
    for &i in &s.slots[k] {
        if s.bound(k + 1, current.saturating_add(s.most[i])) <= best.1 || s.budget.get() == 0 {
            continue;
        }
        s.budget.set(s.budget.get() - 1);
        chosen.push(i);
        // Priced as the answer will be: in the coupons' order (ties of stacking rank apply
        // in that order).
        let mut in_order = chosen.clone();
        in_order.sort_unstable();
        let terms: Vec<&Terms> = in_order.iter().map(|&j| s.coupons[j]).collect();
        let priced = price(s.lines, s.shipping, &terms, None, 0, None);
        // A coupon that no longer applies on what the others left adds nothing: leave it
        // out (the branch without it is searched below).
        if priced.coupons.iter().all(Result::is_ok) {
            search(s, k + 1, priced.discount, chosen, best);
        }
        chosen.pop();
    }
    search(s, k + 1, current, chosen, best);
}

#[cfg(test)]
mod tests;
