//! The lifecycle of a held coupon: reads (showing the effective state), the checkout dry run,
//! and the transitions, each a compare-and-set on the row's version in one transaction with
//! its idempotency record.

use std::{sync::Arc, time::Duration};

use marketing_domain::{
    CouponId, MarketingError, MemberId, TemplateId, TenantId, UnixMicros,
    coupon_template::Currency,
    error::Refusal,
    pricing::{self, Rejection, Terms},
    user_coupon::{
        CouponCheck, CouponStatus, CouponView, Transition, UsabilityProblem, UserCoupon,
    },
};
use marketing_infra::{lock::DistributedLock, stamps::StampedCache};
use marketing_storage::{
    Database,
    idempotency::IdempotencyKey,
    templates::TemplateStore,
    unit::UnitOfWork,
    user_coupons::{CouponReads, CouponStore},
};

use super::{
    Answer, Shared, TemplateService,
    batcher::Batcher,
    claims::ClaimCoupon,
    pricing::{Cart, coupon_limit, terms_of},
};
use crate::wire::events::{CouponChanged, coupon_event};

/// How often a transition re-reads and retries when a concurrent change won the race.
const CAS_ATTEMPTS: usize = 5;

/// What the coupon sweeper does: lapsed locks back to AVAILABLE, then unused coupons past
/// their validity to EXPIRED.
enum Sweep {
    Locks,
    Validity,
}

/// A page of a member's coupons as answered at `at`, newest first, and the last coupon of it
/// when another page may follow.
pub struct CouponPage {
    pub coupons: Vec<UserCoupon>,
    pub at: UnixMicros,
    pub next: Option<CouponId>,
}

pub struct ListCoupons {
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    pub statuses: Vec<CouponStatus>,
    pub before: Option<CouponId>,
    pub page_size: u64,
}

/// The newest coupons of a member, as this replica keeps them to serve list pages: at most
/// [`HeldCoupons::MAX`], newest first. Each copy is served only while its freshness stamp
/// holds (every committed change to a member's coupons removes it: claims, distributions,
/// transitions, sweeps), so a page from it is exactly what the database would answer.
pub struct HeldCoupons {
    coupons: Vec<UserCoupon>,
    /// Each coupon's terms as pricing reads them: made once per copy, when it is first priced
    /// (not once per price, and not for copies only listed).
    terms: std::sync::OnceLock<Vec<Terms>>,
    /// Each coupon as the contract encodes it, made when first sent (`encoded`), for as long as
    /// its state is the stored one.
    encoded: Box<[std::sync::OnceLock<bytes::Bytes>]>,
    /// Whether these are all the member's coupons.
    complete: bool,
}

impl HeldCoupons {
    pub const MAX: usize = 200;

    async fn load(
        db: &Database,
        tenant: &TenantId,
        member: &MemberId,
        now: UnixMicros,
    ) -> Result<Self, MarketingError> {
        let mut coupons = db
            .coupons()
            .list_for_member(tenant, member, &[], None, Self::MAX as u64 + 1, now)
            .await?;
        let complete = coupons.len() <= Self::MAX;
        coupons.truncate(Self::MAX);
        Ok(Self::of(coupons, complete))
    }

    /// Coupons found by id: not a copy of the member's list, so never cached.
    pub(super) fn found(coupons: Vec<UserCoupon>) -> Self {
        Self::of(coupons, false)
    }

    fn of(coupons: Vec<UserCoupon>, complete: bool) -> Self {
        Self {
            encoded: coupons.iter().map(|_| std::sync::OnceLock::new()).collect(),
            coupons,
            terms: std::sync::OnceLock::new(),
            complete,
        }
    }

    /// The weight of a copy in the cache's capacity: its coupons.
    pub fn weight(&self) -> u32 {
        self.coupons.len() as u32
    }

    /// The member's newest coupons, newest first.
    pub fn coupons(&self) -> &[UserCoupon] {
        &self.coupons
    }

    /// Each coupon's pricing terms (`terms()[i]` of `coupons()[i]`).
    pub fn terms(&self) -> &[Terms] {
        self.terms
            .get_or_init(|| self.coupons.iter().map(super::pricing::terms_of).collect())
    }

    /// `coupons()[index]` as the contract encodes it at `now`: made once per copy while its
    /// state at `now` is the stored one (an available coupon stays so until it expires, when
    /// it is encoded anew each time).
    pub fn encoded(&self, index: usize, now: UnixMicros) -> bytes::Bytes {
        use prost::Message as _;
        let coupon = &self.coupons[index];
        let encode = || {
            bytes::Bytes::from(crate::wire::convert::coupon_to_proto(coupon, now).encode_to_vec())
        };
        if coupon.effective_status(now) != coupon.status {
            return encode();
        }
        self.encoded[index].get_or_init(encode).clone()
    }

    /// Whether these are all the member's coupons.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// A member's coupons in `statuses` as loaded from the database (newest first, at most
    /// [`Self::MAX`]): not a copy of all their coupons, so never cached.
    async fn load_in(
        db: &Database,
        tenant: &TenantId,
        member: &MemberId,
        statuses: &[CouponStatus],
        now: UnixMicros,
    ) -> Result<Self, MarketingError> {
        let coupons = db
            .coupons()
            .list_for_member(tenant, member, statuses, None, Self::MAX as u64, now)
            .await?;
        Ok(Self::of(coupons, false))
    }
}

pub(super) fn held_key(tenant: &str, member: &str) -> String {
    // Ids never contain '/'.
    format!("coupons:{tenant}/{member}")
}

/// What every [`held_key`] of `tenant` begins with.
pub(super) fn held_prefix(tenant: &str) -> String {
    format!("coupons:{tenant}/")
}

/// What a transition does, with what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CouponChange {
    Lock {
        order_id: String,
        ttl: Duration,
    },
    Use {
        order_id: String,
        amount: i64,
        currency: Currency,
        /// The cart, when checkout sends it: the discount is the one its price gives.
        cart: Option<Box<UseCart>>,
    },
    Release {
        order_id: String,
    },
    Return {
        order_id: String,
    },
    Revoke {
        reason: String,
    },
}

impl CouponChange {
    /// The event this change records.
    fn event(&self) -> CouponChanged {
        match self {
            Self::Lock { .. } => CouponChanged::Locked,
            Self::Use { .. } => CouponChanged::Used,
            Self::Release { .. } => CouponChanged::Released,
            Self::Return { .. } => CouponChanged::Returned,
            Self::Revoke { .. } => CouponChanged::Revoked,
        }
    }

    fn transition(&self) -> (Transition, Option<&str>) {
        match self {
            Self::Lock { order_id, .. } => (Transition::Lock, Some(order_id)),
            Self::Use { order_id, .. } => (Transition::Use, Some(order_id)),
            Self::Release { order_id } => (Transition::Release, Some(order_id)),
            Self::Return { order_id } => (Transition::Return, Some(order_id)),
            Self::Revoke { .. } => (Transition::Revoke, None),
        }
    }

    /// The order whose stacking rules this change must keep (a lock or a use).
    fn stacking_order(&self) -> Option<&str> {
        match self {
            Self::Lock { order_id, .. } | Self::Use { order_id, .. } => Some(order_id),
            _ => None,
        }
    }

    /// The coupon after this change at `now` (checked by the caller first; a use with a cart
    /// priced as `priced`).
    fn apply(
        &self,
        coupon: &UserCoupon,
        now: UnixMicros,
        priced: Option<CartPrice>,
    ) -> Result<UserCoupon, MarketingError> {
        let mut next = coupon.clone();
        next.updated_at = now;
        match self {
            Self::Lock { order_id, ttl } => {
                let ttl = i64::try_from(ttl.as_micros()).map_err(MarketingError::internal)?;
                next.status = CouponStatus::Locked;
                next.order_id = Some(order_id.clone());
                next.lock_expires_at = Some(UnixMicros(now.0.saturating_add(ttl)));
            }
            Self::Use {
                order_id,
                amount,
                currency,
                ..
            } => {
                // The state was checked by the transition; the rest of usability here (with a
                // cart, the price said whether it applies).
                let problems = match priced {
                    Some(_) => coupon.cart_problems(now, currency, Some(order_id)),
                    None => coupon.usability_problems(now, *amount, currency, Some(order_id)),
                };
                if let Some(problem) = problems
                    .into_iter()
                    .find(|p| !matches!(p, UsabilityProblem::State(_)))
                {
                    return Err(problem.into_error().into());
                }
                let (order_amount, discount) = match priced {
                    Some(priced) => (priced.order_amount, priced.discount),
                    None => (*amount, coupon.discount.discount_for(*amount)),
                };
                next.status = CouponStatus::Used;
                next.order_id = Some(order_id.clone());
                next.lock_expires_at = None;
                next.order_amount = Some(order_amount);
                next.discount_applied = Some(discount);
                next.used_at = Some(now);
            }
            Self::Release { .. } => {
                next.status = CouponStatus::Available;
                next.order_id = None;
                next.lock_expires_at = None;
            }
            Self::Return { .. } => {
                next.status = if now >= coupon.valid_until {
                    CouponStatus::Expired
                } else {
                    CouponStatus::Available
                };
                next.order_id = None;
                next.order_amount = None;
                next.discount_applied = None;
                next.used_at = None;
            }
            Self::Revoke { reason } => {
                next.status = CouponStatus::Revoked;
                next.order_id = None;
                next.lock_expires_at = None;
                next.revoke_reason = Some(reason.clone());
                next.revoked_at = Some(now);
            }
        }
        Ok(next)
    }

    /// How the template's `used_count` moves.
    fn used_delta(&self) -> i64 {
        match self {
            Self::Use { .. } => 1,
            Self::Return { .. } => -1,
            _ => 0,
        }
    }
}

/// The cart a coupon is used for, and the order's other coupons (for the stacking order of
/// the price: a coupon of a later group is computed on what the earlier ones left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseCart {
    pub cart: Cart,
    pub others: Vec<CouponId>,
}

/// What a use with a cart gives: the discount, and the order amount (subtotal + shipping).
#[derive(Debug, Clone, Copy)]
struct CartPrice {
    discount: i64,
    order_amount: i64,
}

pub struct TransitionCoupon {
    pub key: IdempotencyKey,
    pub coupon_id: CouponId,
    /// When set, a coupon of another member is not found.
    pub member_id: Option<MemberId>,
    pub change: CouponChange,
    /// The API client making it.
    pub actor: Option<String>,
}

/// Members' coupons: claimed in batches per template under its lock, distributed, read
/// (from copies of members' lists when kept), used and returned, swept.
#[derive(Clone)]
pub struct CouponService {
    pub(crate) shared: Shared,
    /// Claims take stock from templates and refresh their cached copies.
    pub(super) templates: TemplateService,
    pub(super) lock: Arc<dyn DistributedLock>,
    /// Copies of members' coupon lists, validated by freshness stamps; `None` when turned off.
    pub coupon_lists: Option<Arc<StampedCache<HeldCoupons>>>,
    /// Claims queue per (tenant, template): a batch holds one tenant's claims of one template.
    pub(super) claim_batcher: Arc<Batcher<(TenantId, TemplateId), ClaimCoupon, Answer<CouponView>>>,
    /// Claims by code look their codes up per tenant, in batches.
    pub(super) code_lookups: Arc<
        Batcher<TenantId, super::claims::CodeLookup, Option<marketing_storage::codes::FoundCode>>,
    >,
}

impl CouponService {
    pub async fn get_coupon(
        &self,
        tenant: &TenantId,
        id: CouponId,
        member: Option<&MemberId>,
    ) -> Result<CouponView, MarketingError> {
        let coupon = self.shared.db.coupons().get(tenant, id, member).await?;
        Ok(CouponView {
            coupon,
            at: self.shared.clock.now(),
        })
    }

    /// This replica's current copy of the member's newest coupons (`None` when copies are
    /// turned off).
    pub(super) async fn held_copy(
        &self,
        tenant: &TenantId,
        member: &MemberId,
    ) -> Result<Option<Arc<HeldCoupons>>, MarketingError> {
        let Some(lists) = &self.coupon_lists else {
            return Ok(None);
        };
        lists
            .get_or_load(&held_key(tenant.as_str(), member.as_str()), || {
                HeldCoupons::load(&self.shared.db, tenant, member, self.shared.clock.now())
            })
            .await
            .map(Some)
    }

    /// One page, newest first. Served
    /// from this replica's copy of the member's newest coupons while that copy is current (see
    /// [`HeldCoupons`]), else from the database.
    pub async fn list_coupons(&self, query: ListCoupons) -> Result<CouponPage, MarketingError> {
        let now = self.shared.clock.now();
        // One more than asked tells whether there is a next page.
        let wanted = query.page_size as usize + 1;
        let page_of = |page: &[&UserCoupon]| {
            let next = (page.len() == wanted).then(|| page[wanted - 2].id);
            let page = &page[..page.len().min(wanted - 1)];
            CouponPage {
                coupons: page.iter().map(|&c| c.clone()).collect(),
                at: now,
                next,
            }
        };
        if let Some(held) = self.held_copy(&query.tenant_id, &query.member_id).await? {
            let page: Vec<&UserCoupon> = held
                .coupons
                .iter()
                .filter(|c| query.before.is_none_or(|before| c.id < before))
                .filter(|c| {
                    query.statuses.is_empty() || query.statuses.contains(&c.effective_status(now))
                })
                .take(wanted)
                .collect();
            // Past the end of an incomplete copy, the rest is in the database only.
            if page.len() == wanted || held.complete {
                return Ok(page_of(&page));
            }
        }
        let page = self
            .shared
            .db
            .coupons()
            .list_for_member(
                &query.tenant_id,
                &query.member_id,
                &query.statuses,
                query.before,
                wanted as u64,
                now,
            )
            .await?;
        Ok(page_of(&page.iter().collect::<Vec<_>>()))
    }

    /// The member's coupons that may be usable (available or locked), to read in place: this
    /// replica's copy of their coupons when it holds all of them, else the newest
    /// [`HeldCoupons::MAX`] of those from the database.
    pub(super) async fn open_coupons(
        &self,
        tenant: &TenantId,
        member: &MemberId,
    ) -> Result<Arc<HeldCoupons>, MarketingError> {
        if let Some(held) = self.held_copy(tenant, member).await?
            && held.complete
        {
            return Ok(held);
        }
        let open = [CouponStatus::Available, CouponStatus::Locked];
        let loaded = HeldCoupons::load_in(
            &self.shared.db,
            tenant,
            member,
            &open,
            self.shared.clock.now(),
        );
        Ok(Arc::new(loaded.await?))
    }

    /// Tells every replica that these members' coupons changed (after the change committed,
    /// before it is answered), so no copy of their lists read before it is served again.
    pub(super) async fn coupons_changed<'a>(
        &self,
        holders: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        if let Some(lists) = &self.coupon_lists {
            let keys = holders
                .into_iter()
                .map(|(tenant, member)| held_key(tenant, member))
                .collect();
            lists.invalidate(keys).await;
        }
    }

    /// The checkout dry run: writes nothing.
    pub async fn validate_coupon(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        id: CouponId,
        amount: i64,
        currency: &Currency,
        order_id: Option<&str>,
    ) -> Result<CouponCheck, MarketingError> {
        let coupon = self
            .shared
            .db
            .coupons()
            .get(tenant, id, Some(member))
            .await?;
        let now = self.shared.clock.now();
        let problems = coupon.usability_problems(now, amount, currency, order_id);
        Ok(CouponCheck {
            discount_amount: if problems.is_empty() {
                coupon.discount.discount_for(amount)
            } else {
                0
            },
            problems,
            coupon: CouponView { coupon, at: now },
        })
    }

    pub async fn transition_coupon(
        &self,
        cmd: TransitionCoupon,
    ) -> Result<Answer<CouponView>, MarketingError> {
        let tenant = &cmd.key.tenant_id;
        // The tenant's coupon cap, read before the unit takes its connection (a second one
        // taken while holding the first could wait for a pool all such units hold).
        let settings = match cmd.change.stacking_order() {
            Some(_) => Some(self.shared.tenant_settings(tenant).await?),
            None => None,
        };
        let mut unit = begin_or_replay!(self.shared, &cmd.key);
        let (transition, order_id) = cmd.change.transition();
        // A lock or use waits for the order's other locks and uses (the database serialises
        // them), then checks the stacking rules against the coupons the order holds.
        let stacking = match (cmd.change.stacking_order(), settings) {
            (Some(order), Some(settings)) => {
                unit.coupons().lock_order(tenant, order).await?;
                Some((order, settings))
            }
            _ => None,
        };
        for _ in 0..CAS_ATTEMPTS {
            let coupon = unit
                .coupons()
                .get(tenant, cmd.coupon_id, cmd.member_id.as_ref())
                .await?;
            let now = self.shared.clock.now();
            transition.check(&coupon, now, order_id)?;
            let mut priced = None;
            if let Some((order, settings)) = &stacking {
                let held: Vec<UserCoupon> = unit
                    .coupons()
                    .on_order(tenant, &coupon.member_id, order, now)
                    .await?
                    .into_iter()
                    .filter(|other| other.id != coupon.id)
                    .collect();
                check_stacking(&coupon, &held, coupon_limit(settings))?;
                if let CouponChange::Use {
                    cart: Some(cart), ..
                } = &cmd.change
                {
                    priced = Some(price_use(&unit, &coupon, cart, held, order, now).await?);
                }
            }
            let mut next = cmd.change.apply(&coupon, now, priced)?;
            next.actor.clone_from(&cmd.actor);
            if unit
                .coupons()
                .compare_and_set(&next, coupon.version)
                .await?
            {
                next.version = coupon.version + 1;
                let request = Some(&cmd.key.request_id);
                // Another order taking over a lapsed lock: the lock's end is an event too.
                if coupon.status == CouponStatus::Locked
                    && coupon.effective_status(now) == CouponStatus::Available
                    && matches!(
                        cmd.change,
                        CouponChange::Lock { .. } | CouponChange::Use { .. }
                    )
                {
                    let mut unlocked = coupon.clone();
                    unlocked.status = CouponStatus::Available;
                    unlocked.order_id = None;
                    unlocked.lock_expires_at = None;
                    unlocked.actor = None;
                    unit.record(coupon_event(CouponChanged::Unlocked, &unlocked, None, now));
                }
                unit.record(coupon_event(cmd.change.event(), &next, request, now));
                let delta = cmd.change.used_delta();
                let template = if delta != 0 {
                    // A use spends its discount of the campaign budget; a return gives back
                    // what its use spent.
                    let discount = if delta > 0 {
                        next.discount_applied
                    } else {
                        coupon.discount_applied
                    };
                    Some(
                        unit.templates()
                            .add_used(
                                tenant,
                                coupon.template_id,
                                delta,
                                discount.unwrap_or_default(),
                            )
                            .await?,
                    )
                } else {
                    None
                };
                let member = next.member_id.clone();
                let response = CouponView {
                    coupon: next,
                    at: now,
                };
                self.shared
                    .commit_idempotent(unit, &cmd.key, &response)
                    .await?;
                let cache_template = async {
                    if let Some(template) = template {
                        self.templates.cache_template(&template).await;
                    }
                };
                tokio::join!(
                    cache_template,
                    self.coupons_changed([(tenant.as_str(), member.as_str())])
                );
                tracing::info!(coupon_id = %response.coupon.id, ?transition, "coupon changed");
                return Ok(Answer::Fresh(response));
            }
        }
        Err(MarketingError::ConcurrentModification(
            "the coupon kept changing under the transition".into(),
        ))
    }

    /// One sweep: lapsed locks back to AVAILABLE, unused coupons past validity to EXPIRED, in
    /// batches of `batch`. Safe to run on every replica at once.
    pub async fn sweep_coupons(&self, batch: u64) -> Result<(u64, u64), MarketingError> {
        let now = self.shared.clock.now();
        let mut unlocked = 0;
        let mut expired = 0;
        for (sweep, count) in [
            (Sweep::Locks, &mut unlocked),
            (Sweep::Validity, &mut expired),
        ] {
            loop {
                // Each batch its own unit: one short conditional update, never a long lock.
                let mut unit = UnitOfWork::begin(&self.shared.db).await?;
                let (swept, change) = match sweep {
                    Sweep::Locks => (
                        unit.coupons().release_lapsed_locks(now, batch).await?,
                        CouponChanged::Unlocked,
                    ),
                    Sweep::Validity => (
                        unit.coupons().expire_lapsed(now, batch).await?,
                        CouponChanged::Expired,
                    ),
                };
                for coupon in &swept.coupons {
                    unit.record(coupon_event(change, coupon, None, now));
                }
                unit.commit().await?;
                *count += swept.changed;
                self.coupons_changed(swept.holders.iter().map(|(t, m)| (t.as_str(), m.as_str())))
                    .await;
                if swept.changed < batch {
                    break;
                }
            }
        }
        use std::sync::atomic::Ordering::Relaxed;
        self.shared
            .metrics
            .coupons_unlocked
            .fetch_add(unlocked, Relaxed);
        self.shared
            .metrics
            .coupons_expired
            .fetch_add(expired, Relaxed);
        Ok((unlocked, expired))
    }
}

/// Refuses `coupon` on an order that holds `held` (its other coupons locked or used) when
/// it does not stack with one of them or the order is at the tenant's cap.
fn check_stacking(
    coupon: &UserCoupon,
    held: &[UserCoupon],
    limit: Option<usize>,
) -> Result<(), MarketingError> {
    let terms = terms_of(coupon);
    if let Some(other) = held
        .iter()
        .find(|other| pricing::clash(&terms, &terms_of(other)))
    {
        return Err(MarketingError::Refused(Refusal::CouponNotStackable {
            other: Some(other.id.to_string()),
        }));
    }
    if let Some(limit) = limit
        && held.len() >= limit
    {
        return Err(MarketingError::Refused(
            Rejection::OrderCouponLimit.into_refusal(Some(limit)),
        ));
    }
    Ok(())
}

/// The discount `coupon` gives `cart.cart` after the order's other coupons (those it holds,
/// `held`, and those the caller names), as `PriceOrder` computes it.
async fn price_use(
    unit: &UnitOfWork,
    coupon: &UserCoupon,
    cart: &UseCart,
    mut others: Vec<UserCoupon>,
    order: &str,
    now: UnixMicros,
) -> Result<CartPrice, MarketingError> {
    let named: Vec<CouponId> = cart
        .others
        .iter()
        .filter(|id| **id != coupon.id && others.iter().all(|held| held.id != **id))
        .copied()
        .collect();
    others.extend(
        unit.coupons()
            .find_many(&coupon.tenant_id, &coupon.member_id, &named)
            .await?
            .into_iter()
            .filter(|other| {
                other
                    .cart_problems(now, &cart.cart.currency, Some(order))
                    .is_empty()
            }),
    );
    let mut terms: Vec<Terms> = others.iter().map(terms_of).collect();
    terms.push(terms_of(coupon));
    let refs: Vec<&Terms> = terms.iter().collect();
    let priced = pricing::price(&cart.cart.lines, cart.cart.shipping, &refs, None, 0, None);
    match priced.coupons.last() {
        Some(Ok(applied)) => Ok(CartPrice {
            discount: applied.discount,
            order_amount: cart.cart.subtotal().saturating_add(cart.cart.shipping),
        }),
        Some(Err(rejection)) => Err(MarketingError::Refused(rejection.into_refusal(None))),
        None => Err(MarketingError::internal("a priced use lost its coupon")),
    }
}
