//! Claims and distributions: where stock is taken.
//!
//! Claims of one tenant's template queue up in this replica (the queue, the lock and its
//! fence are keyed by tenant and template, so a batch never holds two tenants' claims); one
//! drainer at a time takes the waiting claims as a batch, takes the template's lock (Redis or
//! in-process) once, and serves the whole batch in one transaction: one conditional stock
//! update (checked against the lock's fence), one multi-row insert of coupons and one of
//! idempotency records. Claims arriving meanwhile wait for the next batch, so the lock is
//! taken once per batch, not once per claim.
//!
//! The database decides: the template row is locked for the transaction, stock is taken with
//! `remaining_stock >= n`, and `(template, member, slot)` is unique. With Redis unreachable the
//! batch runs without the lock (counted in `Metrics::lock_unavailable`): slower under contention,
//! never wrong.

use std::{collections::HashSet, time::Duration};

use marketing_domain::{
    MarketingError, MemberId, TemplateId, TenantId,
    coupon_code::{CodeKind, CodeText},
    coupon_template::CouponTemplate,
    error::Refusal,
    limits::LimitedAction,
    user_coupon::{ClaimRefusal, CouponView, Distribution, UserCoupon, plan_claims},
};
use marketing_infra::lock::LockGuard;
use marketing_storage::{
    codes::{ClaimedCode, CodeReads, CodeStore, FoundCode},
    idempotency::{IdempotencyKey, Outcome, RequestStore},
    templates::TemplateStore,
    unit::UnitOfWork,
    user_coupons::{CouponReads, CouponStore},
};
use tokio::time::Instant;

use super::{
    Answer, CouponService, Recorded,
    batcher::{Backoff, Batched, Group, retry_lost_races},
    drainer,
    isolate::Isolation,
};
use crate::wire::{
    self,
    events::{CouponChanged, coupon_event},
};

const RETRY: Backoff = Backoff {
    base: Duration::from_millis(2),
    cap: Duration::from_millis(100),
};

pub struct ClaimCoupon {
    pub key: IdempotencyKey,
    pub template_id: TemplateId,
    pub member_id: MemberId,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// The API client making it.
    pub actor: Option<String>,
    /// The code it claims with (`ClaimCouponByCode`), found in the template's tenant.
    pub code: Option<ClaimCode>,
}

/// A code a claim names, as found before the claim joined its template's batch.
pub struct ClaimCode {
    pub text: CodeText,
    pub kind: CodeKind,
    /// The lookup saw it open: the batch's first attempt does not read it again (its
    /// conditional update decides, and a retry reads it).
    pub seen_open: bool,
}

/// A code to look up in a tenant: a claim by code's first step, batched per tenant (one query
/// for the codes of the claims that came meanwhile).
pub(crate) struct CodeLookup {
    tenant: TenantId,
    text: CodeText,
    deadline: Instant,
}

impl Batched for CodeLookup {
    fn key(&self) -> Option<&IdempotencyKey> {
        None
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// A claim with a code: the code is looked up in the tenant first (which template it claims).
pub struct ClaimCouponByCode {
    pub key: IdempotencyKey,
    pub member_id: MemberId,
    pub code: CodeText,
    pub deadline: Instant,
    pub actor: Option<String>,
}

impl ClaimCoupon {
    /// The rate limit a claim counts against, and who it counts (the member).
    pub fn limited(&self) -> (LimitedAction, String) {
        let member = format!("{}/{}", self.key.tenant_id, self.member_id);
        (LimitedAction::Claim, member)
    }
}

impl Batched for ClaimCoupon {
    fn key(&self) -> Option<&IdempotencyKey> {
        Some(&self.key)
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }
}

pub struct DistributeCoupons {
    pub key: IdempotencyKey,
    pub template_id: TemplateId,
    /// Distinct members, in the order of the request.
    pub members: Vec<MemberId>,
    pub allow_partial: bool,
    pub deadline: Instant,
    pub actor: Option<String>,
}

type ClaimResult = Result<Answer<CouponView>, MarketingError>;

/// What a batch issued: a decision per member, and the template as written (when any stock
/// was taken), to refresh the cache after commit.
struct Issued {
    results: Vec<Result<UserCoupon, ClaimRefusal>>,
    template: Option<CouponTemplate>,
}

impl CouponService {
    /// A claim by code's first step (its handler runs it beside the member's rate-limit
    /// turn): the code's template and kind, looked up in the claim's
    /// tenant with the other lookups of the moment (`None`: the tenant has no such code).
    pub async fn find_code(
        &self,
        cmd: &ClaimCouponByCode,
    ) -> Result<Option<FoundCode>, MarketingError> {
        let serve = drainer(self, |app, groups| async move {
            app.serve_code_lookups(groups).await
        });
        let lookup = CodeLookup {
            tenant: cmd.key.tenant_id.clone(),
            text: cmd.code.clone(),
            deadline: cmd.deadline,
        };
        let tenant = cmd.key.tenant_id.clone();
        self.code_lookups.submit(tenant, lookup, serve).await
    }

    /// A claim by code's second step, with what [`Self::find_code`] found: a unique code
    /// once, a shared one within its template's stock and limits. The claim joins its
    /// template's batch, which decides (its conditional update claims a unique code once).
    pub async fn claim_found_code(
        &self,
        cmd: ClaimCouponByCode,
        found: Result<Option<FoundCode>, MarketingError>,
    ) -> ClaimResult {
        let Some(found) = found? else {
            return Err(MarketingError::Refused(Refusal::CodeNotFound));
        };
        // A code seen claimed still joins the batch: the claim may be a retry of the one that
        // claimed it, which replays.
        self.claim_coupon(ClaimCoupon {
            key: cmd.key,
            template_id: found.template,
            member_id: cmd.member_id,
            deadline: cmd.deadline,
            actor: cmd.actor,
            code: Some(ClaimCode {
                text: cmd.code,
                kind: found.kind,
                seen_open: found.open,
            }),
        })
        .await
    }

    /// One query for a batch of one tenant's code lookups.
    async fn serve_code_lookups(&self, groups: Vec<Group<CodeLookup, Option<FoundCode>>>) {
        let Some(first) = groups.first() else { return };
        let tenant = first.cmd.tenant.clone();
        let texts: Vec<&CodeText> = groups.iter().map(|group| &group.cmd.text).collect();
        match self.shared.db.codes().find_many(&tenant, &texts).await {
            Ok(found) => {
                let found: std::collections::HashMap<CodeText, FoundCode> =
                    found.into_iter().collect();
                for group in groups {
                    let answer = found.get(&group.cmd.text).copied();
                    group.answer(Ok(answer));
                }
            }
            Err(err) => {
                for group in groups {
                    group.answer(Err(err.copy()));
                }
            }
        }
    }

    /// Claims one coupon: waits in the template's queue and is served in the next batch.
    pub async fn claim_coupon(&self, claim: ClaimCoupon) -> ClaimResult {
        let serve = drainer(self, |app, groups| async move {
            app.serve_claim_batch(groups).await
        });
        let queue = (claim.key.tenant_id.clone(), claim.template_id);
        self.claim_batcher.submit(queue, claim, serve).await
    }

    async fn serve_claim_batch(&self, unique: Vec<Group<ClaimCoupon, Answer<CouponView>>>) {
        let claims: Vec<&ClaimCoupon> = unique.iter().map(|group| &group.cmd).collect();
        // One member's failure is that claim's alone: a failed batch is served again in halves.
        let outcomes = Isolation::serve(
            claims.len(),
            |range| self.serve_claims(&claims[range]),
            || self.shared.metrics.record_claim_split(),
        )
        .await;
        // The claimants' lists are marked changed before they are answered; meanwhile the
        // template's next batch may start.
        let app = self.clone();
        tokio::spawn(async move { app.answer_claims(unique, outcomes).await });
    }

    /// One batch of distinct claims of one template: under the template's lock, in one
    /// transaction, retried while it loses a race, until the latest deadline among its claims:
    /// a caller with a short deadline never cuts its neighbours' retries short (it stops
    /// waiting on its own; its claim, if served, replays under its request id).
    async fn serve_claims(
        &self,
        claims: &[&ClaimCoupon],
    ) -> Result<Vec<ClaimResult>, MarketingError> {
        let (Some(deadline), Some(first)) = (
            claims.iter().map(|claim| claim.deadline).max(),
            claims.first(),
        ) else {
            return Ok(Vec::new());
        };
        let started = std::time::Instant::now();
        let template = first.template_id;
        let tenant = &first.key.tenant_id;
        let (outcomes, attempts) = retry_lost_races(deadline, RETRY, |attempt| async move {
            let waited = std::time::Instant::now();
            let lock = self.template_lock(tenant, template, deadline).await?;
            self.shared
                .metrics
                .claim_lock_wait
                .observe(waited.elapsed());
            let fence = lock.as_ref().map(|l| l.fence);
            let result = self
                .claim_batch_transaction(tenant, template, claims, fence, attempt > 0)
                .await;
            self.shared.metrics.record_fencing(&result);
            self.release_template_lock(lock).await;
            result
        })
        .await;
        let outcomes = self.out_of_retries(outcomes, attempts);
        self.shared.metrics.record_claim_batch(claims.len());
        self.shared
            .metrics
            .claim_batch
            .observe(claims.len(), started.elapsed());
        tracing::debug!(template_id = %template, claims = claims.len(), attempts,
            elapsed_us = started.elapsed().as_micros() as u64, "claim batch served");
        outcomes
    }

    /// Tells every replica the claimants' coupons changed, then answers each claim.
    async fn answer_claims(
        &self,
        unique: Vec<Group<ClaimCoupon, Answer<CouponView>>>,
        outcomes: Vec<ClaimResult>,
    ) {
        let holders = unique
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(group, _)| {
                (
                    group.cmd.key.tenant_id.as_str(),
                    group.cmd.member_id.as_str(),
                )
            });
        self.coupons_changed(holders).await;
        for (group, outcome) in unique.into_iter().zip(outcomes) {
            group.answer(outcome);
        }
    }

    /// One transaction for a batch of distinct claims: replays, then decisions, then writes.
    async fn claim_batch_transaction(
        &self,
        tenant: &TenantId,
        template: TemplateId,
        claims: &[&ClaimCoupon],
        fence: Option<i64>,
        retried: bool,
    ) -> Result<Vec<ClaimResult>, MarketingError> {
        let mut unit = UnitOfWork::begin(&self.shared.db).await?;
        let requests = claims.iter().map(|c| {
            (
                &c.key.tenant_id,
                c.key.client.as_str(),
                c.key.request_id.as_str(),
            )
        });
        let mut records = unit.requests().find_many(requests).await?;
        let mut outcomes: Vec<Option<ClaimResult>> = Vec::with_capacity(claims.len());
        let mut fresh = Vec::new();
        for (index, claim) in claims.iter().enumerate() {
            // The batch serves one tenant's template; a claim that names another (a wrong
            // queue key) must never be served as that tenant's.
            if claim.key.tenant_id != *tenant || claim.template_id != template {
                outcomes.push(Some(Err(MarketingError::Refused(
                    Refusal::TemplateNotFound,
                ))));
                continue;
            }
            match records.remove(&claim.key.record_key()) {
                Some(record) => outcomes.push(Some(replayed(record.replay_for(&claim.key)))),
                None => {
                    outcomes.push(None);
                    fresh.push(index);
                }
            }
        }
        // Unique codes: each claimable once, so a code claimed before, or by an earlier claim
        // of this batch, is refused. Codes the lookups saw open are not read again on the
        // first attempt (the conditional update that claims the codes decides, and a batch
        // that lost a code meanwhile is retried, reading them all); the others are read here,
        // without a lock.
        let unique = |i: &usize| {
            claims[*i]
                .code
                .as_ref()
                .filter(|code| code.kind == CodeKind::Unique)
        };
        let unread: Vec<&CodeText> = fresh
            .iter()
            .filter_map(unique)
            .filter(|code| retried || !code.seen_open)
            .map(|code| &code.text)
            .collect();
        let mut open: HashSet<&CodeText> = if unread.is_empty() {
            HashSet::new()
        } else {
            let read: HashSet<CodeText> = unit
                .codes()
                .open_unique(tenant, template, &unread)
                .await?
                .into_iter()
                .collect();
            unread
                .into_iter()
                .filter(|code| read.contains(*code))
                .collect()
        };
        let mut taken: HashSet<&CodeText> = HashSet::new();
        fresh.retain(|i| match unique(i) {
            Some(code) => {
                let is_open = if retried || !code.seen_open {
                    open.remove(&code.text)
                } else {
                    true
                };
                if is_open && taken.insert(&code.text) {
                    true
                } else {
                    outcomes[*i] = Some(Err(MarketingError::Refused(Refusal::CodeAlreadyClaimed)));
                    false
                }
            }
            None => true,
        });
        let mut written = None;
        if !fresh.is_empty() {
            let members: Vec<Claimant> = fresh
                .iter()
                .map(|&i| Claimant {
                    member: &claims[i].member_id,
                    actor: claims[i].actor.as_deref(),
                    unique_code: claims[i]
                        .code
                        .as_ref()
                        .is_some_and(|code| code.kind == CodeKind::Unique),
                })
                .collect();
            match self
                .issue_coupons(&unit, tenant, template, &members, fence, false)
                .await
            {
                Err(MarketingError::Refused(Refusal::TemplateNotFound)) => {
                    for &i in &fresh {
                        outcomes[i] = Some(Err(MarketingError::Refused(Refusal::TemplateNotFound)));
                    }
                }
                Err(err) => return Err(err),
                Ok(issued) => {
                    written = issued.template;
                    let now = self.shared.clock.now();
                    let mut records = Vec::new();
                    let mut codes = Vec::new();
                    for (&i, result) in fresh.iter().zip(issued.results) {
                        outcomes[i] = Some(match result {
                            Ok(coupon) => {
                                let request = Some(&claims[i].key.request_id);
                                let how = match &claims[i].code {
                                    Some(code) => {
                                        if code.kind == CodeKind::Unique {
                                            codes.push(ClaimedCode {
                                                code: &code.text,
                                                member_id: &claims[i].member_id,
                                                coupon_id: coupon.id,
                                            });
                                        }
                                        CouponChanged::ClaimedByCode(code.kind)
                                    }
                                    None => CouponChanged::Claimed,
                                };
                                unit.record(coupon_event(how, &coupon, request, now));
                                let response = CouponView { coupon, at: now };
                                records.push((&claims[i].key, wire::answered(&response)));
                                Ok(Answer::Fresh(response))
                            }
                            Err(refusal) => Err(refusal.into_error().into()),
                        });
                    }
                    unit.codes().mark_claimed(tenant, &codes, now).await?;
                    unit.answer_all(records, now);
                }
            }
        }
        unit.commit().await?;
        if let Some(template) = written {
            self.templates.cache_template(&template).await;
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| Err(MarketingError::internal("claim left undecided")))
            })
            .collect())
    }

    /// Decides `claimants`' claims against the locked template row and writes the grants:
    /// one stock update (counting the unique codes claimed) and one multi-row insert. With
    /// `all_or_nothing`, any refusal writes nothing and is returned as the error.
    async fn issue_coupons(
        &self,
        unit: &UnitOfWork,
        tenant: &TenantId,
        template: TemplateId,
        claimants: &[Claimant<'_>],
        fence: Option<i64>,
        all_or_nothing: bool,
    ) -> Result<Issued, MarketingError> {
        let members: Vec<&MemberId> = claimants.iter().map(|claimant| claimant.member).collect();
        let members = members.as_slice();
        let template = unit.templates().get_for_update(tenant, template).await?;
        if template.tenant_id != *tenant {
            // The query is scoped by tenant; this holds even if a future change forgets it.
            return Err(MarketingError::Refused(Refusal::TemplateNotFound));
        }
        let held = unit.coupons().held_slots(template.id, members).await?;
        let now = self.shared.clock.now();
        let plan = plan_claims(&template, now, &held, members);
        if all_or_nothing
            && let Some((member, refusal)) = members
                .iter()
                .zip(&plan)
                .find_map(|(member, decision)| decision.err().map(|refusal| (member, refusal)))
        {
            return Err(MarketingError::Refused(Refusal::DistributionRefused {
                member_id: member.to_string(),
                refusal: Box::new(refusal.into_error()),
            }));
        }
        let mut issued = Vec::with_capacity(plan.len());
        let mut codes = 0;
        for (claimant, decision) in claimants.iter().zip(plan) {
            issued.push(match decision {
                Ok(grant) => {
                    codes += i64::from(claimant.unique_code);
                    Ok(UserCoupon::issue(
                        &template,
                        claimant.member,
                        grant.slot,
                        now,
                        claimant.actor.map(str::to_owned),
                    )?)
                }
                Err(refusal) => Err(refusal),
            });
        }
        let coupons: Vec<UserCoupon> = issued
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let mut written = None;
        if !coupons.is_empty() {
            written = Some(
                unit.templates()
                    .take_stock(tenant, template.id, coupons.len() as i64, codes, fence)
                    .await?,
            );
            unit.coupons().insert_many(&coupons).await?;
        }
        Ok(Issued {
            results: issued,
            template: written,
        })
    }

    /// Issues one coupon to each member, under the same lock and rules as claims, in one
    /// transaction: all or nothing, or (with `allow_partial`) what stock and limits allow.
    pub async fn distribute_coupons(
        &self,
        cmd: DistributeCoupons,
    ) -> Result<Answer<Distribution>, MarketingError> {
        let cmd = &cmd;
        let (done, attempts) = retry_lost_races(cmd.deadline, RETRY, |_| async move {
            let lock = self
                .template_lock(&cmd.key.tenant_id, cmd.template_id, cmd.deadline)
                .await?;
            let result = self
                .distribution_transaction(cmd, lock.as_ref().map(|l| l.fence))
                .await;
            self.shared.metrics.record_fencing(&result);
            self.release_template_lock(lock).await;
            result
        })
        .await;
        let done = self.out_of_retries(done, attempts);
        let tenant = cmd.key.tenant_id.as_str();
        match &done {
            Ok(Answer::Fresh(distribution)) => {
                let holders = distribution
                    .results
                    .iter()
                    .filter(|(_, result)| result.is_ok())
                    .map(|(member, _)| (tenant, member.as_str()));
                self.coupons_changed(holders).await;
            }
            // Who got a coupon the first time is in the record; marking every member changed
            // again costs a little and covers a first call that stopped before it did.
            Ok(Answer::Recorded(_)) => {
                self.coupons_changed(cmd.members.iter().map(|m| (tenant, m.as_str())))
                    .await
            }
            Err(_) => {}
        }
        done
    }

    async fn distribution_transaction(
        &self,
        cmd: &DistributeCoupons,
        fence: Option<i64>,
    ) -> Result<Answer<Distribution>, MarketingError> {
        let mut unit = begin_or_replay!(self.shared, &cmd.key);
        let members: Vec<Claimant> = cmd
            .members
            .iter()
            .map(|member| Claimant {
                member,
                actor: cmd.actor.as_deref(),
                unique_code: false,
            })
            .collect();
        let issued = self
            .issue_coupons(
                &unit,
                &cmd.key.tenant_id,
                cmd.template_id,
                &members,
                fence,
                !cmd.allow_partial,
            )
            .await?;
        let now = self.shared.clock.now();
        for coupon in issued.results.iter().flatten() {
            let request = Some(&cmd.key.request_id);
            unit.record(coupon_event(
                CouponChanged::Distributed,
                coupon,
                request,
                now,
            ));
        }
        let distribution = Distribution {
            results: cmd.members.iter().cloned().zip(issued.results).collect(),
            at: now,
        };
        self.shared
            .commit_idempotent(unit, &cmd.key, &distribution)
            .await?;
        if let Some(template) = issued.template {
            self.templates.cache_template(&template).await;
        }
        let issued = distribution
            .results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .count();
        tracing::info!(
            template_id = %cmd.template_id,
            issued,
            failed = distribution.results.len() - issued,
            "coupons distributed"
        );
        Ok(Answer::Fresh(distribution))
    }

    /// The tenant's template's lock, waiting until `deadline`. `Ok(None)` when the lock
    /// backend is unreachable: the caller proceeds on the database alone (and this is counted).
    /// The key names the tenant, in a Redis Cluster hash tag: two tenants naming one template
    /// id never share a lock or a fence.
    async fn template_lock(
        &self,
        tenant: &TenantId,
        template: TemplateId,
        deadline: Instant,
    ) -> Result<Option<LockGuard>, MarketingError> {
        let key = format!("{{{tenant}:{template}}}");
        match self
            .lock
            .acquire(&key, self.shared.config.claim_lock_ttl, deadline)
            .await
        {
            Ok(Some(guard)) => Ok(Some(guard)),
            Ok(None) => Err(MarketingError::DeadlineExceeded),
            Err(err) => {
                self.shared.metrics.record_lock_unavailable();
                marketing_infra::warn_every!(template_id = %template, error = %err, lock = self.lock.kind(),
                    "template lock unavailable; claiming on the database alone");
                Ok(None)
            }
        }
    }

    /// Counts a batch's retries; a claim or distribution that still lost its race at the
    /// deadline is DEADLINE_EXCEEDED (retry it with the same request id).
    fn out_of_retries<T>(
        &self,
        result: Result<T, MarketingError>,
        attempts: u32,
    ) -> Result<T, MarketingError> {
        self.shared.metrics.claim_retries.fetch_add(
            u64::from(attempts.saturating_sub(1)),
            std::sync::atomic::Ordering::Relaxed,
        );
        match result {
            Err(MarketingError::ConcurrentModification(_)) => Err(MarketingError::DeadlineExceeded),
            other => other,
        }
    }

    async fn release_template_lock(&self, lock: Option<LockGuard>) {
        let Some(guard) = lock else { return };
        match self.lock.release(&guard).await {
            Ok(true) => {}
            // The lock lapsed while the batch ran; its fence kept the write safe.
            Ok(false) => self.shared.metrics.record_claim_lock_lapse(),
            // The TTL frees it anyway.
            Err(err) => {
                marketing_infra::warn_every!(key = %guard.key, error = %err, "releasing a template lock failed");
            }
        }
    }
}

/// Who a coupon is issued to, the API client asking for it, and whether it is claimed with
/// a unique code.
struct Claimant<'a> {
    member: &'a MemberId,
    actor: Option<&'a str>,
    unique_code: bool,
}

/// A claim's recorded outcome, answered again.
fn replayed(outcome: Result<Outcome, MarketingError>) -> ClaimResult {
    let bytes = wire::replay(outcome?)?;
    Ok(Answer::Recorded(Recorded::new(bytes)))
}
