//! How one account's commands are planned on its ledger: each operation applied to the
//! domain [`Ledger`] (holds loaded and released, business references checked for duplicates),
//! a refused command leaving the ledger as it was.

use marketing_domain::{
    MarketingError, TenantId, UnixMicros,
    error::Refusal,
    points::{EntryMeta, Hold, HoldStatus, Ledger, TxType},
};
use marketing_storage::points::{BizRef, HoldRef, store::Reads};
use uuid::Uuid;

use super::PointsService;
use super::{
    Applied, BatchContext, DailyAward, EarnSource, GroupContext, HoldSelector, PlannedGroup,
    PointsCommand, PointsOp, RefundTarget, biz_reference, outcome_of,
};
use crate::app::Answer;

impl PointsService {
    /// Plans one account's commands on its ledger. A refused command leaves the ledger as it
    /// was and takes no business reference.
    pub(super) async fn plan_group(
        &self,
        reads: &Reads<'_>,
        group: &[&PointsCommand],
        mut ledger: Ledger,
        batch: &BatchContext,
    ) -> Result<PlannedGroup, MarketingError> {
        ledger.expire_due();
        let mut context = GroupContext::default();
        let mut results = Vec::with_capacity(group.len());
        for cmd in group {
            match self
                .apply_points_op(reads, &mut ledger, cmd, batch, &context)
                .await
            {
                Ok((applied, award)) => {
                    if let Some((key, points)) = award {
                        *context.daily.entry(key).or_default() += points;
                    }
                    context.biz.extend(biz_reference(cmd));
                    results.push(Ok(Answer::Fresh(outcome_of(&ledger, &applied))));
                }
                // A refusal, or input only the account's state shows to be bad: this
                // command's answer alone.
                Err(err) if err.is_business_refusal() || err.is_invalid_argument() => {
                    results.push(Err(err))
                }
                Err(err) => return Err(err),
            }
        }
        Ok(PlannedGroup {
            results,
            ledger,
            context,
        })
    }

    /// Applies one command to the account's ledger. Refusals are decided before the ledger
    /// changes, so a refused command leaves it as it was. Also returns what an earn by event
    /// adds to its daily cap's count.
    pub(super) async fn apply_points_op(
        &self,
        reads: &Reads<'_>,
        ledger: &mut Ledger,
        cmd: &PointsCommand,
        batch: &BatchContext,
        context: &GroupContext,
    ) -> Result<(Applied, Option<DailyAward>), MarketingError> {
        let tenant = &cmd.tenant_id;
        let now = ledger.now();
        let mut meta = cmd.meta.clone();
        meta.request_id = cmd.key.as_ref().map(|k| k.request_id.to_string());
        let mut planned = Applied::default();
        let mut award_counted = None;
        match &cmd.op {
            PointsOp::Earn(source) => {
                self.refuse_duplicate_biz(reads, tenant, TxType::Earn, &meta, batch, context)
                    .await?;
                let (amount, expires_at) = match source {
                    EarnSource::Amount { amount, expires_at } => (*amount, *expires_at),
                    EarnSource::Event { event, order } => {
                        let rule = self.rule_for_event(tenant, event).await?;
                        let terms = &rule.terms;
                        let points = terms.points_for(
                            order.as_ref().map(|(amount, currency)| (*amount, currency)),
                        )?;
                        let award = match terms.daily_cap {
                            Some(_) if terms.enabled => {
                                let day = now.utc_day().ok_or_else(|| {
                                    MarketingError::internal("a day beyond the calendar")
                                })?;
                                // Stored today, plus what this batch already awarded.
                                let pending = context
                                    .daily
                                    .get(&(event.clone(), day))
                                    .copied()
                                    .unwrap_or(0);
                                let stored = reads
                                    .earned_today(tenant, &cmd.member_id, event, day)
                                    .await?;
                                let award = terms.award(points, stored.saturating_add(pending))?;
                                award_counted = Some(((event.clone(), day), award));
                                award
                            }
                            _ => terms.award(points, 0)?,
                        };
                        let expires = rule
                            .terms
                            .expiry_days
                            .and_then(|days| now.checked_add_days(i64::from(days)));
                        if meta.description.is_empty() {
                            meta.description = format!("earned by {event}");
                        }
                        (award, expires)
                    }
                };
                planned.entry = Some(ledger.earn(amount, expires_at, meta)?);
            }
            PointsOp::Adjust { amount, expires_at } => {
                planned.entry = Some(ledger.adjust(*amount, *expires_at, meta)?);
            }
            PointsOp::Deduct(amount) => {
                self.refuse_duplicate_biz(reads, tenant, TxType::Deduct, &meta, batch, context)
                    .await?;
                planned.entry = Some(ledger.deduct(*amount, meta)?);
            }
            PointsOp::Freeze {
                amount,
                order_id,
                ttl,
            } => {
                let held = reads
                    .find_hold(ledger.account.id, HoldRef::Order(order_id))
                    .await?;
                let held = held.map(|h| ledger.planned_hold(h));
                if held.is_some_and(|h| h.status == HoldStatus::Held)
                    || ledger.holds_order(order_id)
                {
                    return Err(MarketingError::Refused(Refusal::OrderAlreadyHeld));
                }
                let ttl = i64::try_from(ttl.as_micros()).map_err(MarketingError::internal)?;
                let order_meta = EntryMeta {
                    biz_type: Some("order".into()),
                    biz_id: Some(order_id.clone()),
                    ..meta
                };
                let hold = ledger.freeze(
                    *amount,
                    order_id,
                    UnixMicros(now.0.saturating_add(ttl)),
                    order_meta,
                )?;
                planned.entry = ledger.entries.last().map(|e| e.id);
                planned.hold = Some(hold);
            }
            PointsOp::Confirm { hold, amount } => {
                let (hold, held) = self.load_hold(reads, ledger, hold).await?;
                let spend = amount.unwrap_or(hold.amount);
                let order_meta = EntryMeta {
                    biz_type: Some("order".into()),
                    biz_id: Some(hold.order_id.clone()),
                    ..meta
                };
                let (confirm, settled) =
                    ledger.settle_hold(&hold, &held, spend, HoldStatus::Confirmed, order_meta)?;
                planned.entry = confirm.or_else(|| ledger.entries.last().map(|e| e.id));
                planned.hold = Some(settled);
            }
            PointsOp::Release(selector) => {
                let (entry, hold) = self
                    .release_hold(reads, ledger, selector, HoldStatus::Released, meta)
                    .await?;
                (planned.entry, planned.hold) = (entry, Some(hold));
            }
            PointsOp::ExpireHold(id) => {
                let selector = HoldSelector::Id(*id);
                let (entry, hold) = self
                    .release_hold(reads, ledger, &selector, HoldStatus::Expired, meta)
                    .await?;
                (planned.entry, planned.hold) = (entry, Some(hold));
            }
            PointsOp::Refund { target, amount } => {
                let entry = match target {
                    RefundTarget::Transaction(id) => {
                        reads.find_entry(ledger.account.id, *id).await?
                    }
                    RefundTarget::Biz { biz_type, biz_id } => {
                        reads
                            .find_by_biz(
                                tenant,
                                Some(ledger.account.id),
                                &[TxType::Deduct, TxType::Confirm],
                                biz_type,
                                biz_id,
                            )
                            .await?
                    }
                }
                .ok_or(MarketingError::Refused(Refusal::TransactionNotFound))?;
                if !matches!(entry.tx_type, TxType::Deduct | TxType::Confirm) {
                    return Err(MarketingError::Refused(Refusal::NotRefundable));
                }
                let taken = reads.refundable_allocations(entry.id).await?;
                let lot_ids: Vec<Uuid> = taken.iter().map(|(id, _)| *id).collect();
                ledger.add_lots(reads.lots_by_id(ledger.account.id, &lot_ids).await?);
                planned.entry = Some(ledger.refund(entry.id, &taken, *amount, meta)?);
            }
            PointsOp::ExpireLots => planned.entry = ledger.entries.last().map(|e| e.id),
        }
        Ok((planned, award_counted))
    }

    /// Ends a HELD hold without spending: its points go back (and expire if their lots did).
    pub(super) async fn release_hold(
        &self,
        reads: &Reads<'_>,
        ledger: &mut Ledger,
        selector: &HoldSelector,
        status: HoldStatus,
        meta: EntryMeta,
    ) -> Result<(Option<Uuid>, Hold), MarketingError> {
        let (hold, held) = self.load_hold(reads, ledger, selector).await?;
        let order_meta = EntryMeta {
            biz_type: Some("order".into()),
            biz_id: Some(hold.order_id.clone()),
            ..meta
        };
        let (_, settled) = ledger.settle_hold(&hold, &held, 0, status, order_meta)?;
        let entry = ledger
            .entries
            .iter()
            .rev()
            .find(|e| e.tx_type == TxType::Release)
            .map(|e| e.id);
        Ok((entry, settled))
    }

    pub(super) async fn load_hold(
        &self,
        reads: &Reads<'_>,
        ledger: &mut Ledger,
        selector: &HoldSelector,
    ) -> Result<(Hold, Vec<(Uuid, i64)>), MarketingError> {
        let by = match selector {
            HoldSelector::Id(id) => HoldRef::Id(*id),
            HoldSelector::Order(order) => HoldRef::Order(order),
        };
        let hold = reads
            .find_hold(ledger.account.id, by)
            .await?
            .ok_or(MarketingError::Refused(Refusal::HoldNotFound))?;
        let held = reads.hold_allocations(hold.id).await?;
        let lot_ids: Vec<Uuid> = held.iter().map(|(id, _)| *id).collect();
        ledger.add_lots(reads.lots_by_id(ledger.account.id, &lot_ids).await?);
        Ok((hold, held))
    }

    /// An order earns (or deducts) at most once per tenant, whatever the request id: not in
    /// the database, not earlier in this batch.
    pub(super) async fn refuse_duplicate_biz(
        &self,
        reads: &Reads<'_>,
        tenant: &TenantId,
        tx_type: TxType,
        meta: &EntryMeta,
        batch: &BatchContext,
        context: &GroupContext,
    ) -> Result<(), MarketingError> {
        let (Some(biz_type), Some(biz_id)) = (&meta.biz_type, &meta.biz_id) else {
            return Ok(());
        };
        let reference = BizRef {
            tenant: tenant.to_string(),
            tx_type: tx_type.code(),
            biz_type: biz_type.clone(),
            biz_id: biz_id.clone(),
        };
        let stored = match &batch.stored {
            Some(stored) => stored.contains(&reference),
            None => reads
                .find_by_biz(tenant, None, &[tx_type], biz_type, biz_id)
                .await?
                .is_some(),
        };
        if stored || batch.biz.contains(&reference) || context.biz.contains(&reference) {
            return Err(MarketingError::Refused(Refusal::DuplicateBizReference));
        }
        Ok(())
    }
}
