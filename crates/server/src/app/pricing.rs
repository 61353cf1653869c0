//! Checkout's reads: a cart priced with some of a member's coupons and points, and the
//! member's coupons that fit a cart with the best combination of them. The arithmetic is the
//! domain's `pricing`; this reads the coupons, the tenant's settings and the member's points
//! and feeds it.

use std::{collections::HashMap, sync::Arc};

use marketing_domain::{
    CouponId, MarketingError, MemberId, TemplateId, TenantId, UnixMicros,
    coupon_template::{Currency, pricing_terms},
    error::Refusal,
    pricing::{self, Applied, Line, PointsRate, Terms},
    tenant_settings::TenantSettings,
    user_coupon::UserCoupon,
};
use marketing_storage::user_coupons::CouponReads;

use super::coupons::{CouponService, HeldCoupons};

/// Most lines a cart may have.
pub const MAX_CART_LINES: usize = 100;
/// Most coupons one price may name (and an order may hold: the cap settings allow is 10).
pub const MAX_PRICED_COUPONS: usize = 20;
/// `ListApplicableCoupons` searches the best combination among this many coupons.
pub const MAX_COMBINED_COUPONS: usize = 50;

/// A cart as checkout sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart {
    pub currency: Currency,
    /// Line ids beside the lines, in the cart's order.
    pub line_ids: Vec<String>,
    pub lines: Vec<Line>,
    pub shipping: i64,
}

impl Cart {
    pub fn subtotal(&self) -> i64 {
        self.lines.iter().map(Line::amount).sum()
    }
}

/// Why a coupon does not apply to a cart: a reason of the error table and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: &'static str,
    pub message: String,
}

impl Rejected {
    fn of(refusal: &Refusal) -> Self {
        Self {
            reason: refusal.reason().as_str(),
            message: refusal.to_string(),
        }
    }
}

pub struct PriceOrder {
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    pub cart: Cart,
    pub coupon_ids: Vec<CouponId>,
    pub points_offered: i64,
    pub order_id: Option<String>,
}

/// A priced cart: per coupon (in the order asked), what it took or why not.
pub struct PricedOrder {
    pub cart: Cart,
    pub coupons: Vec<(CouponId, Result<Applied, Rejected>)>,
    pub priced: pricing::Priced,
}

/// A coupon that fits a cart, with what it takes off alone.
pub struct ApplicableCoupons {
    /// Best first: each coupon (its index in `held`) and what it takes off alone.
    coupons: Vec<(usize, i64)>,
    /// The member's coupons they are read from, in place.
    held: Arc<HeldCoupons>,
    /// The best combination, in the order its coupons apply.
    pub best: Vec<CouponId>,
    pub best_discount: i64,
    /// Whether the search ended within its budget (`pricing::MAX_STACKS_PRICED`).
    pub best_exact: bool,
    pub at: UnixMicros,
}

impl ApplicableCoupons {
    /// The usable coupons, best first, each with what it takes off alone.
    pub fn coupons(&self) -> impl Iterator<Item = (&UserCoupon, i64)> {
        self.coupons
            .iter()
            .map(|&(index, discount)| (&self.held.coupons()[index], discount))
    }

    /// The same, each coupon as the contract encodes it (made once per held copy).
    pub fn encoded(&self) -> impl Iterator<Item = (bytes::Bytes, i64)> {
        self.coupons
            .iter()
            .map(|&(index, discount)| (self.held.encoded(index, self.at), discount))
    }
}

/// How the tenant's points program prices points in `currency` (`None`: points do not pay
/// in it).
pub fn points_rate(settings: &TenantSettings, currency: &Currency) -> Option<PointsRate> {
    let terms = &settings.terms;
    terms.points_values.get(currency).map(|value| PointsRate {
        points: value.points,
        amount: value.amount,
        max_share_bp: i64::from(terms.max_points_share_bp),
        min_points: terms.min_points_redemption,
    })
}

/// The tenant's cap of coupons per order.
pub fn coupon_limit(settings: &TenantSettings) -> Option<usize> {
    settings
        .terms
        .max_coupons_per_order
        .map(|limit| usize::try_from(limit).unwrap_or(0))
}

/// The pricing terms of a coupon.
pub fn terms_of(coupon: &UserCoupon) -> Terms {
    pricing_terms(&coupon.discount, coupon.min_spend_amount, &coupon.cart)
}

impl CouponService {
    /// Those of `ids` the member holds, read in place: this replica's copy of the member's
    /// coupons when it holds all of them (see `HeldCoupons`), else the copy's newest coupons
    /// with the rest of `ids` from the database.
    async fn find_held(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        ids: &[CouponId],
    ) -> Result<Arc<HeldCoupons>, MarketingError> {
        let mut found = Vec::with_capacity(ids.len());
        if let Some(held) = self.held_copy(tenant, member).await? {
            if held.is_complete() {
                return Ok(held);
            }
            found.extend(
                held.coupons()
                    .iter()
                    .filter(|coupon| ids.contains(&coupon.id))
                    .cloned(),
            );
        }
        let missing: Vec<CouponId> = ids
            .iter()
            .filter(|id| found.iter().all(|coupon: &UserCoupon| coupon.id != **id))
            .copied()
            .collect();
        if !missing.is_empty() {
            found.extend(
                self.shared
                    .db
                    .coupons()
                    .find_many(tenant, member, &missing)
                    .await?,
            );
        }
        Ok(Arc::new(HeldCoupons::found(found)))
    }

    pub async fn price_order(&self, cmd: PriceOrder) -> Result<PricedOrder, MarketingError> {
        let (settings, found) = tokio::join!(
            self.shared.tenant_settings(&cmd.tenant_id),
            self.find_held(&cmd.tenant_id, &cmd.member_id, &cmd.coupon_ids),
        );
        let (settings, found) = (settings?, found?);
        let now = self.shared.clock.now();
        let limit = coupon_limit(&settings);
        // Each asked coupon: found and usable at all (state, validity, currency), or not.
        let mut outcomes: Vec<(CouponId, Result<&Terms, Rejected>)> = Vec::new();
        for id in &cmd.coupon_ids {
            let index = found.coupons().iter().position(|c| c.id == *id);
            let outcome = match index {
                None => Err(Rejected::of(&Refusal::CouponNotFound)),
                Some(index) => {
                    match found.coupons()[index]
                        .cart_problems(now, &cmd.cart.currency, cmd.order_id.as_deref())
                        .first()
                    {
                        Some(problem) => Err(Rejected::of(&problem.into_error())),
                        None => Ok(&found.terms()[index]),
                    }
                }
            };
            outcomes.push((*id, outcome));
        }
        let usable: Vec<&Terms> = outcomes
            .iter()
            .filter_map(|(_, outcome)| outcome.as_ref().ok().copied())
            .collect();
        // What the member offers, under the program's rules; the balance is FreezePoints' to
        // check (a price is a quote: reading the account on every one would double its cost).
        let priced = pricing::price(
            &cmd.cart.lines,
            cmd.cart.shipping,
            &usable,
            limit,
            cmd.points_offered,
            points_rate(&settings, &cmd.cart.currency),
        );
        let mut applied = priced.coupons.iter();
        let coupons = outcomes
            .into_iter()
            .map(|(id, outcome)| {
                let outcome = match outcome {
                    Err(rejected) => Err(rejected),
                    Ok(_) => match applied.next() {
                        Some(Ok(applied)) => Ok(applied.clone()),
                        Some(Err(rejection)) => Err(Rejected::of(&rejection.into_refusal(limit))),
                        None => Err(Rejected::of(&Refusal::CouponNotApplicable)),
                    },
                };
                (id, outcome)
            })
            .collect();
        Ok(PricedOrder {
            cart: cmd.cart,
            coupons,
            priced,
        })
    }

    pub async fn list_applicable_coupons(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        cart: &Cart,
        order_id: Option<&str>,
    ) -> Result<ApplicableCoupons, MarketingError> {
        let (settings, held) = tokio::join!(
            self.shared.tenant_settings(tenant),
            self.open_coupons(tenant, member)
        );
        let (settings, held) = (settings?, held?);
        let now = self.shared.clock.now();
        let left: Vec<i64> = cart.lines.iter().map(Line::amount).collect();
        // Each usable coupon (its index in the copy) and what it takes off alone. Copies of
        // one template usually carry the same terms (members hold several): priced once.
        let mut usable: Vec<(usize, i64)> = Vec::new();
        let mut priced: HashMap<TemplateId, Vec<(&Terms, i64)>> = HashMap::new();
        for (index, (coupon, terms)) in held.coupons().iter().zip(held.terms()).enumerate() {
            if !coupon
                .cart_problems(now, &cart.currency, order_id)
                .is_empty()
            {
                continue;
            }
            let same = priced.entry(coupon.template_id).or_default();
            let discount = match same.iter().find(|(seen, _)| *seen == terms) {
                Some(&(_, discount)) => discount,
                None => {
                    let discount = pricing::apply(terms, &cart.lines, &left, cart.shipping)
                        .map_or(0, |applied| applied.discount);
                    same.push((terms, discount));
                    discount
                }
            };
            if discount > 0 {
                usable.push((index, discount));
            }
        }
        let mut order: Vec<usize> = (0..usable.len()).collect();
        order.sort_by(|&a, &b| {
            let (ca, cb) = (&held.coupons()[usable[a].0], &held.coupons()[usable[b].0]);
            usable[b]
                .1
                .cmp(&usable[a].1)
                .then(ca.valid_until.cmp(&cb.valid_until))
                .then(ca.id.cmp(&cb.id))
        });
        let combined = &order[..order.len().min(MAX_COMBINED_COUPONS)];
        let candidates: Vec<&Terms> = combined
            .iter()
            .map(|&k| &held.terms()[usable[k].0])
            .collect();
        let alone: Vec<i64> = combined.iter().map(|&k| usable[k].1).collect();
        let mut found = pricing::best_stack_of(
            &cart.lines,
            cart.shipping,
            &candidates,
            &alone,
            coupon_limit(&settings),
        );
        found.chosen.sort_by_key(|&i| pricing::rank(candidates[i]));
        let best = found
            .chosen
            .iter()
            .map(|&i| held.coupons()[usable[combined[i]].0].id)
            .collect();
        Ok(ApplicableCoupons {
            coupons: order.iter().map(|&k| usable[k]).collect(),
            held,
            best,
            best_discount: found.discount,
            best_exact: found.exact,
            at: now,
        })
    }
}
