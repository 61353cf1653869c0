//! Points use cases. Every change of an account goes through [`AppState::change_points`]:
//! read the account and its lots, let the domain [`Ledger`] plan the change, write it with
//! `WHERE version = read_version`, and on a lost race roll back and retry with jittered
//! backoff until the deadline. Business refusals are recorded under the request id, so a retry
//! replays the first refusal too.

use std::{collections::HashSet, sync::Mutex, time::Duration};

use marketing_domain::{
    MarketingError, MemberId, TenantId, UnixMicros,
    points::{Entry, EntryMeta, Hold, HoldStatus, Ledger, Lot, TxType},
    points_rule::{PointsRule, RuleField, RuleTerms},
    time::MICROS_PER_DAY,
};
use marketing_infra::{backoff, cache::Versioned, leaderboard::Standing};
use marketing_proto::v1 as pb;
use marketing_storage::{
    idempotency::{self, Claim, IdempotencyKey, Outcome},
    points::{self, HoldRef, RuleRef},
};
use prost::Message;
use tokio::time::Instant;
use uuid::Uuid;

use super::{AppState, Begun, decode_outcome};
use crate::{
    error::status_of,
    grpc::convert::{account_to_proto, entry_to_proto, hold_to_proto, rule_to_proto},
};

const RETRY_BASE: Duration = Duration::from_millis(1);
const RETRY_CAP: Duration = Duration::from_millis(50);
/// Members a rebuilt leaderboard holds: enough that any top-100 stays exact.
const LEADERBOARD_DEPTH: u64 = 1000;

pub enum EarnSource {
    Amount {
        amount: i64,
        expires_at: Option<UnixMicros>,
    },
    Event(String),
}

pub enum HoldSelector {
    Id(Uuid),
    Order(String),
}

pub enum RefundTarget {
    Transaction(Uuid),
    Biz { biz_type: String, biz_id: String },
}

/// What to do to an account.
pub enum PointsOp {
    Earn(EarnSource),
    Deduct(i64),
    Freeze {
        amount: i64,
        order_id: String,
        ttl: Duration,
    },
    Confirm {
        hold: HoldSelector,
        amount: Option<i64>,
    },
    Release(HoldSelector),
    Refund {
        target: RefundTarget,
        amount: Option<i64>,
    },
    /// Sweeper: a HELD hold whose time passed goes back to available.
    ExpireHold(Uuid),
    /// Sweeper: expire the account's due lots.
    ExpireLots,
}

pub struct PointsCommand {
    /// `None` for the sweepers' own changes.
    pub key: Option<IdempotencyKey>,
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    pub op: PointsOp,
    pub meta: EntryMeta,
    pub deadline: Instant,
}

/// The shape every points mutation answers with (FreezePoints' response is the superset).
pub type PointsResponse = pb::FreezePointsResponse;

/// A planned change: the ledger to write, what to answer, and what else to write.
struct Planned {
    ledger: Ledger,
    hold: Option<Hold>,
    entry: Option<Uuid>,
    /// A rule-priced earn under a daily cap: (event type, day, points).
    daily: Option<(String, i32, i64)>,
}

/// Tenants whose Redis leaderboard missed updates (Redis was down): rebuilt on next read.
#[derive(Debug, Default)]
pub struct StaleBoards(Mutex<HashSet<String>>);

impl StaleBoards {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl AppState {
    pub async fn change_points(
        &self,
        cmd: PointsCommand,
    ) -> Result<PointsResponse, MarketingError> {
        let mut attempt = 0;
        loop {
            if let Some(done) = self.points_attempt(&cmd).await? {
                return Ok(done);
            }
            let wait = backoff(attempt, RETRY_BASE, RETRY_CAP);
            if Instant::now() + wait >= cmd.deadline {
                return Err(MarketingError::ConcurrentModification(
                    format!("account changed under {} attempts", attempt + 1).into(),
                ));
            }
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt; `Ok(None)` when a concurrent change won the race.
    async fn points_attempt(
        &self,
        cmd: &PointsCommand,
    ) -> Result<Option<PointsResponse>, MarketingError> {
        let txn = self.db.begin_write().await?;
        if let Some(key) = &cmd.key
            && let Claim::Replay(outcome) = idempotency::claim(&txn, key).await?
        {
            drop(txn);
            return decode_outcome(outcome).map(Some);
        }
        let planned = match self.plan_points(&txn, cmd).await {
            Ok(planned) => planned,
            Err(MarketingError::ConcurrentModification(_)) => return Ok(None),
            Err(err) => {
                drop(txn);
                if err.is_business_refusal()
                    && let Some(key) = &cmd.key
                {
                    self.record_refusal(key, &err).await;
                }
                return Err(err);
            }
        };
        match points::write_ledger(&txn, &cmd.tenant_id, &planned.ledger).await {
            Ok(true) => {}
            // A concurrent change won (version), or a concurrent earn of the same business
            // reference (unique index): retry, and the plan will see it.
            Ok(false) | Err(MarketingError::ConcurrentModification(_)) => return Ok(None),
            Err(err) => return Err(err),
        }
        if let Some((event, day, points)) = &planned.daily {
            points::add_earned_today(&txn, &cmd.tenant_id, &cmd.member_id, event, *day, *points)
                .await?;
        }
        let response = response_of(&planned);
        match &cmd.key {
            Some(key) => self.commit_idempotent(txn, key, &response).await?,
            None => txn.commit().await.map_err(marketing_storage::db_error)?,
        }
        if planned
            .ledger
            .entries
            .iter()
            .any(|e| e.tx_type == TxType::Earn)
        {
            let account = &planned.ledger.account;
            self.record_standing(
                &cmd.tenant_id,
                Standing {
                    member_id: account.member_id.to_string(),
                    total_earned: account.total_earned,
                    reached_at: account.earned_updated_at.0,
                },
            )
            .await;
        }
        Ok(Some(response))
    }

    async fn plan_points(
        &self,
        txn: &marketing_storage::DatabaseTransaction,
        cmd: &PointsCommand,
    ) -> Result<Planned, MarketingError> {
        let tenant = &cmd.tenant_id;
        let account = match cmd.op {
            PointsOp::Earn(_) => {
                points::get_or_create_account(txn, tenant, &cmd.member_id, UnixMicros::now())
                    .await?
            }
            _ => points::find_account(txn, tenant, &cmd.member_id)
                .await?
                .ok_or(MarketingError::AccountNotFound)?,
        };
        let lots = points::live_lots(txn, account.id).await?;
        // Read after the account: a change that committed before this read is older.
        let now = UnixMicros::now();
        let mut ledger = Ledger::new(account, lots, now);
        // Every change first catches up with time: due lots expire.
        ledger.expire_due();
        let mut meta = cmd.meta.clone();
        meta.request_id = cmd.key.as_ref().map(|k| k.request_id.to_string());
        let mut planned = Planned {
            ledger,
            hold: None,
            entry: None,
            daily: None,
        };
        let ledger = &mut planned.ledger;
        match &cmd.op {
            PointsOp::Earn(source) => {
                self.refuse_duplicate_biz(txn, tenant, TxType::Earn, &meta)
                    .await?;
                let (amount, expires_at) = match source {
                    EarnSource::Amount { amount, expires_at } => (*amount, *expires_at),
                    EarnSource::Event(event) => {
                        let rule = self.rule_for_event(tenant, event).await?;
                        if !rule.terms.enabled {
                            return Err(MarketingError::RuleDisabled);
                        }
                        let mut award = rule.terms.points;
                        if let Some(cap) = rule.terms.daily_cap {
                            let day = i32::try_from(now.0.div_euclid(MICROS_PER_DAY))
                                .map_err(MarketingError::internal)?;
                            let earned =
                                points::earned_today(txn, tenant, &cmd.member_id, event, day)
                                    .await?;
                            award = award.min(cap - earned);
                            if award <= 0 {
                                return Err(MarketingError::DailyCapReached);
                            }
                            planned.daily = Some((event.clone(), day, award));
                        }
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
            PointsOp::Deduct(amount) => {
                self.refuse_duplicate_biz(txn, tenant, TxType::Deduct, &meta)
                    .await?;
                planned.entry = Some(ledger.deduct(*amount, meta)?);
            }
            PointsOp::Freeze {
                amount,
                order_id,
                ttl,
            } => {
                let held =
                    points::find_hold(txn, ledger.account.id, HoldRef::Order(order_id)).await?;
                if held.is_some_and(|h| h.status == HoldStatus::Held) {
                    return Err(MarketingError::OrderAlreadyHeld);
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
                let (hold, held) = self.load_hold(txn, ledger, hold).await?;
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
                    .release_hold(txn, ledger, selector, HoldStatus::Released, meta)
                    .await?;
                (planned.entry, planned.hold) = (entry, Some(hold));
            }
            PointsOp::ExpireHold(id) => {
                let selector = HoldSelector::Id(*id);
                let (entry, hold) = self
                    .release_hold(txn, ledger, &selector, HoldStatus::Expired, meta)
                    .await?;
                (planned.entry, planned.hold) = (entry, Some(hold));
            }
            PointsOp::Refund { target, amount } => {
                let entry = match target {
                    RefundTarget::Transaction(id) => {
                        points::find_entry(txn, ledger.account.id, *id).await?
                    }
                    RefundTarget::Biz { biz_type, biz_id } => {
                        points::find_by_biz(
                            txn,
                            tenant,
                            &[TxType::Deduct, TxType::Confirm],
                            biz_type,
                            biz_id,
                        )
                        .await?
                    }
                }
                .ok_or(MarketingError::TransactionNotFound)?;
                if !matches!(entry.tx_type, TxType::Deduct | TxType::Confirm) {
                    return Err(MarketingError::NotRefundable);
                }
                let taken = points::refundable_allocations(txn, entry.id).await?;
                let lot_ids: Vec<Uuid> = taken.iter().map(|(id, _)| *id).collect();
                ledger.add_lots(points::lots_by_id(txn, ledger.account.id, &lot_ids).await?);
                let refundable: i64 = taken.iter().map(|(_, a)| a).sum();
                let amount = amount.unwrap_or(refundable);
                if amount <= 0 {
                    return Err(MarketingError::RefundExceedsSpent { refundable });
                }
                planned.entry = Some(ledger.refund(entry.id, &taken, amount, meta)?);
            }
            PointsOp::ExpireLots => planned.entry = ledger.entries.last().map(|e| e.id),
        }
        Ok(planned)
    }

    /// Ends a HELD hold without spending: its points go back (and expire if their lots did).
    async fn release_hold(
        &self,
        txn: &marketing_storage::DatabaseTransaction,
        ledger: &mut Ledger,
        selector: &HoldSelector,
        status: HoldStatus,
        meta: EntryMeta,
    ) -> Result<(Option<Uuid>, Hold), MarketingError> {
        let (hold, held) = self.load_hold(txn, ledger, selector).await?;
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

    async fn load_hold(
        &self,
        txn: &marketing_storage::DatabaseTransaction,
        ledger: &mut Ledger,
        selector: &HoldSelector,
    ) -> Result<(Hold, Vec<(Uuid, i64)>), MarketingError> {
        let by = match selector {
            HoldSelector::Id(id) => HoldRef::Id(*id),
            HoldSelector::Order(order) => HoldRef::Order(order),
        };
        let hold = points::find_hold(txn, ledger.account.id, by)
            .await?
            .ok_or(MarketingError::HoldNotFound)?;
        let held = points::hold_allocations(txn, hold.id).await?;
        let lot_ids: Vec<Uuid> = held.iter().map(|(id, _)| *id).collect();
        ledger.add_lots(points::lots_by_id(txn, ledger.account.id, &lot_ids).await?);
        Ok((hold, held))
    }

    /// An order earns (or deducts) at most once per tenant, whatever the request id.
    async fn refuse_duplicate_biz(
        &self,
        txn: &marketing_storage::DatabaseTransaction,
        tenant: &TenantId,
        tx_type: TxType,
        meta: &EntryMeta,
    ) -> Result<(), MarketingError> {
        if let (Some(biz_type), Some(biz_id)) = (&meta.biz_type, &meta.biz_id)
            && points::find_by_biz(txn, tenant, &[tx_type], biz_type, biz_id)
                .await?
                .is_some()
        {
            return Err(MarketingError::DuplicateBizReference);
        }
        Ok(())
    }

    /// Stores a refusal as the request's first outcome (best effort: a concurrent identical
    /// request may have stored it already).
    async fn record_refusal(&self, key: &IdempotencyKey, err: &MarketingError) {
        let status = status_of(err);
        let outcome = Outcome {
            status_code: status.code() as i32,
            response: status.details().to_vec(),
        };
        if let Err(store) =
            idempotency::insert_completed(self.db.conn(), vec![(key, outcome)]).await
        {
            tracing::debug!(error = %store, "refusal not recorded; a concurrent retry recorded it");
        }
    }

    /// The account as it stands now (due lots shown as expired even before the sweeper runs).
    pub async fn points_account(
        &self,
        tenant: &TenantId,
        member: &MemberId,
    ) -> Result<pb::PointsAccount, MarketingError> {
        let account = points::find_account(self.db.conn(), tenant, member)
            .await?
            .ok_or(MarketingError::AccountNotFound)?;
        let lots = points::live_lots(self.db.conn(), account.id).await?;
        let mut view = Ledger::new(account, lots, UnixMicros::now());
        view.expire_due();
        Ok(account_to_proto(&view.account, &view.lots(), view.now()))
    }

    pub async fn list_points_transactions(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        types: &[TxType],
        range: (Option<UnixMicros>, Option<UnixMicros>),
        after: Option<Uuid>,
        page_size: u64,
    ) -> Result<(Vec<pb::PointsTransaction>, Option<Uuid>), MarketingError> {
        let mut page = points::list_entries(
            self.db.conn(),
            tenant,
            member,
            types,
            range,
            after,
            page_size + 1,
        )
        .await?;
        let has_more = page.len() as u64 > page_size;
        page.truncate(page_size as usize);
        let next = has_more.then(|| page.last().map(|e| e.id)).flatten();
        Ok((
            page.iter()
                .map(|e| entry_to_proto(tenant, member, e))
                .collect(),
            next,
        ))
    }

    // ----- rules -----

    fn rule_cache_key(tenant: &TenantId, event: &str) -> String {
        format!("rule:{tenant}:{event}")
    }

    /// The tenant's rule for an event, read through the cache.
    async fn rule_for_event(
        &self,
        tenant: &TenantId,
        event: &str,
    ) -> Result<PointsRule, MarketingError> {
        let key = Self::rule_cache_key(tenant, event);
        match self.cache.get(&key).await {
            Ok(Some(entry)) => match pb::PointsRule::decode(entry.value.as_slice()) {
                Ok(cached) => {
                    if let Some(rule) = rule_from_proto(tenant, cached) {
                        return Ok(rule);
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, cache_key = %key, "undecodable cache entry")
                }
            },
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "rule cache unavailable; reading the database")
            }
        }
        let rule = points::find_rule(self.db.conn(), tenant, RuleRef::Event(event))
            .await?
            .ok_or(MarketingError::RuleNotFound)?;
        self.cache_rule(&rule).await;
        Ok(rule)
    }

    /// Writes a rule through to the cache (newest version wins); evicts it if that fails.
    async fn cache_rule(&self, rule: &PointsRule) {
        let key = Self::rule_cache_key(&rule.tenant_id, &rule.event_type);
        let entry = Versioned {
            version: rule.version,
            value: rule_to_proto(rule).encode_to_vec(),
        };
        if let Err(err) = self
            .cache
            .put(&key, entry, self.config.rule_cache_ttl)
            .await
        {
            tracing::warn!(error = %err, cache_key = %key, "caching rule failed");
            if let Err(err) = self.cache.evict(&key).await {
                tracing::warn!(error = %err, cache_key = %key, "evicting rule failed");
            }
        }
    }

    pub async fn create_rule(
        &self,
        key: IdempotencyKey,
        event_type: String,
        terms: RuleTerms,
    ) -> Result<pb::PointsRule, MarketingError> {
        let txn = match self.begin_idempotent::<pb::PointsRule>(&key).await? {
            Begun::Replay(rule) => return Ok(rule),
            Begun::Fresh(txn) => txn,
        };
        let now = UnixMicros::now();
        let rule = PointsRule {
            id: Uuid::now_v7(),
            tenant_id: key.tenant_id.clone(),
            event_type,
            terms,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        points::insert_rule(&txn, &rule).await?;
        let response = rule_to_proto(&rule);
        self.commit_idempotent(txn, &key, &response).await?;
        self.cache_rule(&rule).await;
        Ok(response)
    }

    pub async fn update_rule(
        &self,
        key: IdempotencyKey,
        id: Uuid,
        expected_version: i64,
        incoming: RuleTerms,
        fields: &[RuleField],
    ) -> Result<pb::PointsRule, MarketingError> {
        let txn = match self.begin_idempotent::<pb::PointsRule>(&key).await? {
            Begun::Replay(rule) => return Ok(rule),
            Begun::Fresh(txn) => txn,
        };
        let tenant = &key.tenant_id;
        let current = points::find_rule(&txn, tenant, RuleRef::Id(id))
            .await?
            .ok_or(MarketingError::RuleNotFound)?;
        if current.version != expected_version {
            return Err(MarketingError::VersionMismatch {
                expected: expected_version,
                current: current.version,
            });
        }
        let mut terms = current.terms.clone();
        terms.overwrite(incoming, fields);
        let terms = terms.check().map_err(|v| {
            MarketingError::InvalidArgument(v.into_iter().map(|v| v.under("points_rule")).collect())
        })?;
        let updated = points::update_rule(
            &txn,
            tenant,
            id,
            expected_version,
            &terms,
            UnixMicros::now(),
        )
        .await?
        .ok_or(MarketingError::VersionMismatch {
            expected: expected_version,
            current: expected_version + 1,
        })?;
        let response = rule_to_proto(&updated);
        self.commit_idempotent(txn, &key, &response).await?;
        self.cache_rule(&updated).await;
        Ok(response)
    }

    pub async fn list_rules(
        &self,
        tenant: &TenantId,
        enabled: Option<bool>,
        after: Option<Uuid>,
        page_size: u64,
    ) -> Result<(Vec<pb::PointsRule>, Option<Uuid>), MarketingError> {
        let mut page =
            points::list_rules(self.db.conn(), tenant, enabled, after, page_size + 1).await?;
        let has_more = page.len() as u64 > page_size;
        page.truncate(page_size as usize);
        let next = has_more.then(|| page.last().map(|r| r.id)).flatten();
        Ok((page.iter().map(rule_to_proto).collect(), next))
    }

    // ----- leaderboard -----

    async fn record_standing(&self, tenant: &TenantId, standing: Standing) {
        if let Err(err) = self.leaderboard.record(tenant.as_str(), &standing).await {
            tracing::warn!(error = %err, "leaderboard update failed; it is rebuilt on the next read");
            self.stale_boards.set().insert(tenant.to_string());
        }
    }

    /// The top `n` members: from the leaderboard, rebuilt from the database when missing or
    /// stale; from the database index when the leaderboard backend is down.
    pub async fn leaderboard(
        &self,
        tenant: &TenantId,
        n: usize,
    ) -> Result<Vec<(String, i64)>, MarketingError> {
        let stale = self.stale_boards.set().contains(tenant.as_str());
        if stale && self.leaderboard.invalidate(tenant.as_str()).await.is_ok() {
            self.stale_boards.set().remove(tenant.as_str());
        }
        match self.leaderboard.top(tenant.as_str(), n).await {
            Ok(Some(top)) => return Ok(top),
            Ok(None) => {
                let standings: Vec<Standing> =
                    points::top_earners(self.db.conn(), tenant, LEADERBOARD_DEPTH)
                        .await?
                        .into_iter()
                        .map(|(member_id, total_earned, reached_at)| Standing {
                            member_id,
                            total_earned,
                            reached_at,
                        })
                        .collect();
                if let Err(err) = self.leaderboard.rebuild(tenant.as_str(), &standings).await {
                    tracing::warn!(error = %err, "leaderboard rebuild failed");
                }
                return Ok(standings
                    .into_iter()
                    .take(n)
                    .map(|s| (s.member_id, s.total_earned))
                    .collect());
            }
            Err(err) => {
                tracing::warn!(error = %err, "leaderboard unavailable; reading the database index");
                self.stale_boards.set().insert(tenant.to_string());
            }
        }
        Ok(points::top_earners(self.db.conn(), tenant, n as u64)
            .await?
            .into_iter()
            .map(|(member, total, _)| (member, total))
            .collect())
    }

    // ----- sweeper -----

    /// Releases lapsed holds and expires due lots, account by account, through the same
    /// optimistic path as requests: safe with every replica sweeping at once.
    pub async fn sweep_points(&self, batch: u64) -> Result<(usize, usize), MarketingError> {
        let now = UnixMicros::now();
        let holds = points::due_holds(self.db.conn(), now, batch).await?;
        let accounts = points::accounts_with_due_lots(self.db.conn(), now, batch).await?;
        let (mut released, mut expired) = (0, 0);
        let work = holds
            .into_iter()
            .map(|(tenant, member, hold)| (tenant, member, PointsOp::ExpireHold(hold)))
            .chain(
                accounts
                    .into_iter()
                    .map(|(tenant, member)| (tenant, member, PointsOp::ExpireLots)),
            );
        for (tenant, member, op) in work {
            let (Ok(tenant_id), Ok(member_id)) = (
                TenantId::parse("tenant_id", &tenant),
                MemberId::parse("member_id", &member),
            ) else {
                continue;
            };
            let is_hold = matches!(op, PointsOp::ExpireHold(_));
            let cmd = PointsCommand {
                key: None,
                tenant_id,
                member_id,
                op,
                meta: EntryMeta {
                    description: "swept".into(),
                    ..EntryMeta::default()
                },
                deadline: Instant::now() + self.config.points_timeout,
            };
            match self.change_points(cmd).await {
                Ok(_) if is_hold => released += 1,
                Ok(_) => expired += 1,
                // Confirmed or released meanwhile: nothing left to sweep.
                Err(MarketingError::InvalidHoldState { .. }) => {}
                Err(err) => {
                    tracing::warn!(error = %err, %tenant, %member, "points sweep of an account failed")
                }
            }
        }
        Ok((released, expired))
    }
}

fn response_of(planned: &Planned) -> PointsResponse {
    let ledger = &planned.ledger;
    let account = &ledger.account;
    let entry: Option<&Entry> = planned
        .entry
        .and_then(|id| ledger.entries.iter().find(|e| e.id == id));
    let lots: Vec<Lot> = ledger.lots();
    PointsResponse {
        points_account: Some(account_to_proto(account, &lots, ledger.now())),
        hold: planned
            .hold
            .as_ref()
            .map(|h| hold_to_proto(&account.tenant_id, &account.member_id, h)),
        transaction: entry.map(|e| entry_to_proto(&account.tenant_id, &account.member_id, e)),
    }
}

fn rule_from_proto(tenant: &TenantId, rule: pb::PointsRule) -> Option<PointsRule> {
    let to_micros = |ts: Option<prost_types::Timestamp>| {
        ts.and_then(|t| UnixMicros::from_parts(t.seconds, t.nanos))
    };
    Some(PointsRule {
        id: Uuid::parse_str(&rule.id).ok()?,
        tenant_id: tenant.clone(),
        event_type: rule.event_type,
        terms: RuleTerms {
            description: rule.description,
            points: rule.points,
            daily_cap: rule.daily_cap,
            expiry_days: rule.expiry_days,
            enabled: rule.enabled,
        },
        version: rule.version,
        created_at: to_micros(rule.create_time)?,
        updated_at: to_micros(rule.update_time)?,
    })
}
