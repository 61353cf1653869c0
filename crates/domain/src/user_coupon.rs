//! Coupons held by members: how a batch of claims is decided, the effective state of a coupon
//! at a given time, and which transitions of the lifecycle are allowed.

use std::collections::HashMap;

use crate::{
    MemberId, UnixMicros,
    coupon_template::{CartTerms, CouponTemplate, Currency, Discount},
    error::{MarketingError, Refusal},
    ids::TemplateId,
};

/// A coupon as answered at `at`: its state is its effective state then.
#[derive(Debug, Clone, PartialEq)]
pub struct CouponView {
    pub coupon: UserCoupon,
    pub at: UnixMicros,
}

/// The checkout dry run's answer: the coupon, the discount it would give, or why it cannot
/// be used (it is usable when there is no problem).
#[derive(Debug, Clone, PartialEq)]
pub struct CouponCheck {
    pub coupon: CouponView,
    pub discount_amount: i64,
    pub problems: Vec<UsabilityProblem>,
}

/// What a distribution did, member by member (in the order of the request), at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    pub results: Vec<(MemberId, Result<UserCoupon, ClaimRefusal>)>,
    pub at: UnixMicros,
}

/// Most coupons one `DistributeCoupons` call may issue.
pub const MAX_DISTRIBUTION: usize = 10_000;

/// The longest order id a coupon may be locked or used for, in bytes.
pub const MAX_ORDER_ID_LEN: usize = 128;
/// The longest reason of a revocation, in characters.
pub const MAX_REVOKE_REASON_CHARS: usize = 500;
/// The longest a lock may be asked to last before it lapses.
pub const MAX_LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Stored status of a coupon (database codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CouponStatus {
    Available,
    Locked,
    Used,
    Expired,
    Revoked,
}

impl CouponStatus {
    pub const ALL: [Self; 5] = [
        Self::Available,
        Self::Locked,
        Self::Used,
        Self::Expired,
        Self::Revoked,
    ];

    pub fn code(self) -> i16 {
        match self {
            Self::Available => 1,
            Self::Locked => 2,
            Self::Used => 3,
            Self::Expired => 4,
            Self::Revoked => 5,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            1 => Self::Available,
            2 => Self::Locked,
            3 => Self::Used,
            4 => Self::Expired,
            5 => Self::Revoked,
            _ => return None,
        })
    }
}

pub use crate::ids::CouponId;

/// A coupon as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UserCoupon {
    pub id: CouponId,
    pub tenant_id: crate::TenantId,
    pub template_id: TemplateId,
    pub member_id: MemberId,
    /// The n-th coupon of this template for this member.
    pub claim_slot: i32,
    pub status: CouponStatus,
    pub discount: Discount,
    pub currency: Currency,
    pub min_spend_amount: i64,
    /// Its template's cart terms when it was claimed (scope, allocation, stacking).
    pub cart: CartTerms,
    pub valid_from: UnixMicros,
    pub valid_until: UnixMicros,
    pub claimed_at: UnixMicros,
    pub order_id: Option<String>,
    pub lock_expires_at: Option<UnixMicros>,
    pub order_amount: Option<i64>,
    pub discount_applied: Option<i64>,
    pub used_at: Option<UnixMicros>,
    pub revoke_reason: Option<String>,
    pub revoked_at: Option<UnixMicros>,
    pub version: i64,
    pub updated_at: UnixMicros,
    /// The API client that made the latest transition (`None` when calls are open, and for
    /// the server's own: a lapsed lock released, expiry).
    pub actor: Option<String>,
}

impl UserCoupon {
    /// The coupon a grant issues: the template's terms, AVAILABLE, valid for the window a
    /// claim at `now` gets, issued for `actor`.
    pub fn issue(
        template: &CouponTemplate,
        member: &MemberId,
        slot: i32,
        now: UnixMicros,
        actor: Option<String>,
    ) -> Result<UserCoupon, MarketingError> {
        let (valid_from, valid_until) = template
            .terms
            .validity
            .window_for_claim(now)
            .ok_or_else(|| MarketingError::internal("coupon validity overflows"))?;
        Ok(UserCoupon {
            id: CouponId::new(),
            tenant_id: template.tenant_id.clone(),
            template_id: template.id,
            member_id: member.clone(),
            claim_slot: slot,
            status: CouponStatus::Available,
            discount: template.terms.discount,
            currency: template.terms.currency.clone(),
            min_spend_amount: template.terms.min_spend_amount,
            cart: template.terms.cart.clone(),
            valid_from,
            valid_until,
            claimed_at: now,
            order_id: None,
            lock_expires_at: None,
            order_amount: None,
            discount_applied: None,
            used_at: None,
            revoke_reason: None,
            revoked_at: None,
            version: 1,
            updated_at: now,
            actor,
        })
    }

    /// The state a reader sees at `now`: a lapsed lock is AVAILABLE again, and an unused coupon
    /// past its validity is EXPIRED, whether or not the sweepers have stored that yet.
    pub fn effective_status(&self, now: UnixMicros) -> CouponStatus {
        match self.status {
            CouponStatus::Available | CouponStatus::Locked if now >= self.valid_until => {
                CouponStatus::Expired
            }
            CouponStatus::Locked if self.lock_expires_at.is_none_or(|until| now >= until) => {
                CouponStatus::Available
            }
            status => status,
        }
    }

    /// Why this coupon cannot be used by an order of `amount` `currency` at `now` (for
    /// `order_id`, which may hold its lock). Empty when usable.
    pub fn usability_problems(
        &self,
        now: UnixMicros,
        amount: i64,
        currency: &Currency,
        order_id: Option<&str>,
    ) -> Vec<UsabilityProblem> {
        let mut problems = self.cart_problems(now, currency, order_id);
        if self.cart.needs_cart(&self.discount) {
            problems.push(UsabilityProblem::CartRequired);
        } else if amount < self.min_spend_amount {
            problems.push(UsabilityProblem::MinSpendNotMet);
        }
        problems
    }

    /// Why this coupon cannot be used at all by an order in `currency` at `now` (for
    /// `order_id`, which may hold its lock), whatever the cart: its state, validity and
    /// currency. Whether it applies to a cart is pricing's to say.
    pub fn cart_problems(
        &self,
        now: UnixMicros,
        currency: &Currency,
        order_id: Option<&str>,
    ) -> Vec<UsabilityProblem> {
        let mut problems = Vec::new();
        match self.effective_status(now) {
            CouponStatus::Available => {}
            CouponStatus::Locked if order_id.is_some() && self.order_id.as_deref() == order_id => {}
            CouponStatus::Expired => problems.push(UsabilityProblem::Expired),
            status => problems.push(UsabilityProblem::State(status)),
        }
        if now < self.valid_from {
            problems.push(UsabilityProblem::NotYetValid);
        }
        if &self.currency != currency {
            problems.push(UsabilityProblem::CurrencyMismatch);
        }
        problems
    }
}

/// Why a coupon is not usable for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsabilityProblem {
    /// Locked by another order, used or revoked.
    State(CouponStatus),
    Expired,
    NotYetValid,
    CurrencyMismatch,
    MinSpendNotMet,
    /// Its terms need the cart (scope, units, shipping) and only an amount was given.
    CartRequired,
}

impl UsabilityProblem {
    pub fn reason(self) -> &'static str {
        match self {
            Self::State(_) => "INVALID_COUPON_STATE",
            Self::Expired => "COUPON_EXPIRED",
            Self::NotYetValid => "COUPON_NOT_YET_VALID",
            Self::CurrencyMismatch => "CURRENCY_MISMATCH",
            Self::MinSpendNotMet => "MIN_SPEND_NOT_MET",
            Self::CartRequired => "CART_REQUIRED",
        }
    }

    pub fn message(self) -> String {
        match self {
            Self::State(status) => format!("the coupon is {status:?}"),
            Self::Expired => "the coupon's validity has passed".to_owned(),
            Self::NotYetValid => "the coupon is not valid yet".to_owned(),
            Self::CurrencyMismatch => "the order's currency is not the coupon's".to_owned(),
            Self::MinSpendNotMet => {
                "the order amount is below the coupon's minimum spend".to_owned()
            }
            Self::CartRequired => {
                "the coupon applies to products, units or shipping: send the cart".to_owned()
            }
        }
    }

    /// The error a mutation (use) reports for this problem.
    pub fn into_error(self) -> Refusal {
        match self {
            Self::State(status) => Refusal::InvalidCouponState {
                status: format!("{status:?}").to_uppercase(),
            },
            Self::Expired => Refusal::CouponExpired,
            Self::NotYetValid => Refusal::CouponNotYetValid,
            Self::CurrencyMismatch => Refusal::CurrencyMismatch,
            Self::MinSpendNotMet => Refusal::MinSpendNotMet,
            Self::CartRequired => Refusal::CartRequired,
        }
    }
}

/// Why a claim was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefusal {
    TemplateDisabled,
    OutsideDistributionWindow,
    OutOfStock,
    MemberLimitReached,
}

impl ClaimRefusal {
    pub fn into_error(self) -> Refusal {
        match self {
            Self::TemplateDisabled => Refusal::TemplateDisabled,
            Self::OutsideDistributionWindow => Refusal::OutsideDistributionWindow,
            Self::OutOfStock => Refusal::OutOfStock,
            Self::MemberLimitReached => Refusal::MemberLimitReached,
        }
    }
}

/// A claim granted by [`plan_claims`]: the member takes slot `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub slot: i32,
}

/// Decides a batch of claims, in order, against the template's state: stock first come first
/// served, and each member up to `per_member_limit` coupons in all. `held` maps a member to
/// the highest slot they already hold. Never grants more than `remaining_stock`.
pub fn plan_claims(
    template: &CouponTemplate,
    at: UnixMicros,
    held: &HashMap<MemberId, i32>,
    members: &[&MemberId],
) -> Vec<Result<Grant, ClaimRefusal>> {
    let closed = if template.archived_at.is_some() || !template.terms.enabled {
        Some(ClaimRefusal::TemplateDisabled)
    } else if !template.is_open_at(at) {
        Some(ClaimRefusal::OutsideDistributionWindow)
    } else {
        None
    };
    let mut stock = template.remaining_stock;
    let mut next_slots: HashMap<&MemberId, i32> = HashMap::new();
    members
        .iter()
        .map(|member| {
            if let Some(refusal) = closed {
                return Err(refusal);
            }
            let slot = next_slots
                .entry(member)
                .or_insert_with(|| held.get(*member).copied().unwrap_or(0) + 1);
            if *slot > template.terms.per_member_limit {
                return Err(ClaimRefusal::MemberLimitReached);
            }
            if stock <= 0 {
                return Err(ClaimRefusal::OutOfStock);
            }
            stock -= 1;
            let grant = Grant { slot: *slot };
            *slot += 1;
            Ok(grant)
        })
        .collect()
}

/// The lifecycle transitions, each a compare-and-set on the stored status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// AVAILABLE -> LOCKED for an order.
    Lock,
    /// AVAILABLE, or LOCKED by the same order -> USED.
    Use,
    /// LOCKED by the order -> AVAILABLE.
    Release,
    /// USED by the order -> AVAILABLE, or EXPIRED when its validity has passed.
    Return,
    /// AVAILABLE or LOCKED -> REVOKED.
    Revoke,
}

impl Transition {
    /// Checks the transition from the coupon's effective state at `now`.
    pub fn check(
        self,
        coupon: &UserCoupon,
        now: UnixMicros,
        order_id: Option<&str>,
    ) -> Result<(), Refusal> {
        let status = coupon.effective_status(now);
        let same_order = order_id.is_some() && coupon.order_id.as_deref() == order_id;
        let allowed = match self {
            Self::Lock => status == CouponStatus::Available,
            Self::Use => {
                status == CouponStatus::Available || (status == CouponStatus::Locked && same_order)
            }
            Self::Release => status == CouponStatus::Locked,
            Self::Return => status == CouponStatus::Used,
            Self::Revoke => matches!(status, CouponStatus::Available | CouponStatus::Locked),
        };
        if !allowed {
            if status == CouponStatus::Expired && matches!(self, Self::Lock | Self::Use) {
                return Err(Refusal::CouponExpired);
            }
            return Err(Refusal::InvalidCouponState {
                status: format!("{status:?}").to_uppercase(),
            });
        }
        if matches!(self, Self::Release | Self::Return) && !same_order {
            return Err(Refusal::OrderMismatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        TenantId,
        coupon_template::{TemplateTerms, Validity},
        time::MICROS_PER_DAY,
    };

    fn template(remaining: i64, limit: i32) -> CouponTemplate {
        CouponTemplate {
            id: TemplateId::new(),
            tenant_id: TenantId::parse("t", "acme").unwrap(),
            terms: TemplateTerms {
                name: "t".into(),
                description: String::new(),
                discount: Discount::FixedAmount { amount: 100 },
                currency: Currency::parse("c", "EUR").unwrap(),
                min_spend_amount: 1000,
                per_member_limit: limit,
                distribution_start: UnixMicros(0),
                distribution_end: UnixMicros(10 * MICROS_PER_DAY),
                validity: Validity::Relative { valid_days: 1 },
                enabled: true,
                cart: CartTerms::default(),
                budget_amount: None,
            },
            total_stock: remaining,
            remaining_stock: remaining,
            claimed_count: 0,
            used_count: 0,
            version: 1,
            revision: 1,
            created_at: UnixMicros(0),
            updated_at: UnixMicros(0),
            archived_at: None,
            actor: None,
            codes: Default::default(),
            budget_used: 0,
        }
    }

    fn member(id: &str) -> MemberId {
        MemberId::parse("m", id).unwrap()
    }

    #[test]
    fn an_issued_coupon_carries_the_templates_terms_and_its_claims_window() {
        let template = template(3, 1);
        let now = UnixMicros(5);
        let coupon =
            UserCoupon::issue(&template, &member("a"), 1, now, Some("till-7".into())).unwrap();
        assert_eq!(coupon.actor.as_deref(), Some("till-7"));
        assert_eq!(coupon.status, CouponStatus::Available);
        assert_eq!((coupon.template_id, coupon.claim_slot), (template.id, 1));
        assert_eq!(coupon.discount, template.terms.discount);
        assert_eq!(coupon.min_spend_amount, 1000);
        assert_eq!(
            (coupon.valid_from, coupon.valid_until),
            (now, UnixMicros(5 + MICROS_PER_DAY))
        );
        assert_eq!((coupon.claimed_at, coupon.version), (now, 1));
        let mut forever = template.clone();
        forever.terms.validity = Validity::Relative {
            valid_days: i32::MAX,
        };
        assert!(
            UserCoupon::issue(&forever, &member("a"), 1, UnixMicros(i64::MAX - 1), None).is_err()
        );
    }

    #[test]
    fn claims_take_stock_in_order_and_respect_member_limits() {
        let (a, b, c) = (member("a"), member("b"), member("c"));
        let held = HashMap::from([(b.clone(), 2)]);
        let plan = plan_claims(
            &template(3, 2),
            UnixMicros(1),
            &held,
            &[&a, &a, &a, &b, &c, &c],
        );
        assert_eq!(
            plan,
            vec![
                Ok(Grant { slot: 1 }),
                Ok(Grant { slot: 2 }),
                Err(ClaimRefusal::MemberLimitReached),
                Err(ClaimRefusal::MemberLimitReached),
                Ok(Grant { slot: 1 }),
                Err(ClaimRefusal::OutOfStock),
            ]
        );
    }

    #[test]
    fn closed_templates_refuse_everyone() {
        let a = member("a");
        let mut disabled = template(5, 1);
        disabled.terms.enabled = false;
        assert_eq!(
            plan_claims(&disabled, UnixMicros(1), &HashMap::new(), &[&a]),
            vec![Err(ClaimRefusal::TemplateDisabled)]
        );
        assert_eq!(
            plan_claims(
                &template(5, 1),
                UnixMicros(10 * MICROS_PER_DAY),
                &HashMap::new(),
                &[&a]
            ),
            vec![Err(ClaimRefusal::OutsideDistributionWindow)]
        );
    }

    fn coupon(status: CouponStatus) -> UserCoupon {
        let mut template = template(1, 1);
        template.terms.validity = Validity::FixedWindow {
            valid_from: UnixMicros(10),
            valid_until: UnixMicros(100),
        };
        UserCoupon {
            status,
            order_id: Some("o-1".into()),
            lock_expires_at: Some(UnixMicros(50)),
            ..UserCoupon::issue(&template, &member("a"), 1, UnixMicros(10), None).unwrap()
        }
    }

    #[test]
    fn effective_status_follows_time() {
        let locked = coupon(CouponStatus::Locked);
        assert_eq!(
            locked.effective_status(UnixMicros(20)),
            CouponStatus::Locked
        );
        assert_eq!(
            locked.effective_status(UnixMicros(50)),
            CouponStatus::Available
        );
        assert_eq!(
            locked.effective_status(UnixMicros(100)),
            CouponStatus::Expired
        );
        assert_eq!(
            coupon(CouponStatus::Used).effective_status(UnixMicros(500)),
            CouponStatus::Used
        );
    }

    #[test]
    fn transitions_check_state_and_order() {
        let locked = coupon(CouponStatus::Locked);
        let now = UnixMicros(20);
        assert!(Transition::Use.check(&locked, now, Some("o-1")).is_ok());
        assert!(matches!(
            Transition::Use.check(&locked, now, Some("o-2")),
            Err(Refusal::InvalidCouponState { .. })
        ));
        assert!(matches!(
            Transition::Release.check(&locked, now, Some("o-2")),
            Err(Refusal::OrderMismatch)
        ));
        assert!(Transition::Release.check(&locked, now, Some("o-1")).is_ok());
        assert!(Transition::Revoke.check(&locked, now, None).is_ok());
        assert!(matches!(
            Transition::Lock.check(&coupon(CouponStatus::Available), UnixMicros(100), Some("o")),
            Err(Refusal::CouponExpired)
        ));
        assert!(
            Transition::Return
                .check(&coupon(CouponStatus::Used), now, Some("o-1"))
                .is_ok()
        );
        assert!(
            Transition::Return
                .check(&coupon(CouponStatus::Available), now, Some("o-1"))
                .is_err()
        );
    }

    #[test]
    fn usability_lists_every_problem() {
        let available = coupon(CouponStatus::Available);
        let eur = Currency::parse("c", "EUR").unwrap();
        let usd = Currency::parse("c", "USD").unwrap();
        assert!(
            available
                .usability_problems(UnixMicros(20), 1000, &eur, None)
                .is_empty()
        );
        assert_eq!(
            available.usability_problems(UnixMicros(5), 999, &usd, None),
            vec![
                UsabilityProblem::NotYetValid,
                UsabilityProblem::CurrencyMismatch,
                UsabilityProblem::MinSpendNotMet
            ]
        );
        let locked = coupon(CouponStatus::Locked);
        assert!(
            locked
                .usability_problems(UnixMicros(20), 1000, &eur, Some("o-1"))
                .is_empty()
        );
        assert_eq!(
            locked.usability_problems(UnixMicros(20), 1000, &eur, Some("o-2")),
            vec![UsabilityProblem::State(CouponStatus::Locked)]
        );
    }
}
