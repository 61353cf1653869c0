//! Points use cases. Every change of an account goes through [`AppState::change_points`],
//! which serves it in this replica's next batch: read the accounts and their lots, let the
//! domain [`Ledger`] plan the changes, write them with `WHERE version = read_version`, and on
//! a lost race plan again on fresh data, retrying with jittered backoff until the deadline.
//! One planner ([`AppState::serve_points_on`]) serves a batch through either storage
//! implementation of `LedgerStore`: on PostgreSQL first `PgBatch` (two statements), then, if
//! an account moved, `TxnBatch` (a transaction, SQLite's only way). Business refusals are
//! recorded under the request id, so a retry replays the first refusal too. Rules and their
//! cache (`rules.rs`), the leaderboard (`leaderboard.rs`) and the sweeper (`sweep.rs`) live
//! beside this module.

mod leaderboard;
mod rules;
mod sweep;

pub use leaderboard::StaleBoards;
use leaderboard::standing_of;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};

use marketing_domain::{
    MarketingError, MemberId, TenantId, UnixMicros,
    limits::LimitedAction,
    points::{
        Account, AccountView, Entry, EntryMeta, Hold, HoldStatus, Ledger, Lot, PointsOutcome,
        TxType,
    },
    points_rule::{PointsRule, RuleField, RuleTerms},
};
use marketing_infra::{cache::Versioned, leaderboard::Standing};
use marketing_storage::{
    ConnectionTrait,
    idempotency::{self, IdempotencyKey, Outcome},
    points::{
        self, BizRef, HoldRef, RuleRef,
        batch::BatchKeys,
        store::{LedgerStore, PgBatch, PlannedLedger, TxnBatch},
    },
};
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    Answer, AppState, Recorded,
    batcher::{Backoff, Batched, Group, retry_lost_races},
    isolate::Isolation,
};
use crate::wire;

const RETRY: Backoff = Backoff {
    base: Duration::from_millis(1),
    cap: Duration::from_millis(50),
};
/// How often one account is re-planned within a batch when another writer won the race.
const CAS_ATTEMPTS: usize = 8;
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

impl Batched for PointsCommand {
    fn key(&self) -> Option<&IdempotencyKey> {
        self.key.as_ref()
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// What one command did: the hold and the entry to answer with.
#[derive(Default)]
struct Applied {
    hold: Option<Hold>,
    entry: Option<Uuid>,
}

type PointsResult = Result<Answer<PointsOutcome>, MarketingError>;

/// Points an earn by event adds to its daily cap's count: ((event type, day), points).
type DailyAward = ((String, i32), i64);

/// The business reference a command takes when it succeeds: earns and deductions that name
/// one are unique per tenant.
fn biz_reference(cmd: &PointsCommand) -> Option<BizRef> {
    let tx_type = match cmd.op {
        PointsOp::Earn(_) => TxType::Earn,
        PointsOp::Deduct(_) => TxType::Deduct,
        _ => return None,
    };
    let (Some(biz_type), Some(biz_id)) = (&cmd.meta.biz_type, &cmd.meta.biz_id) else {
        return None;
    };
    Some(BizRef {
        tenant: cmd.tenant_id.to_string(),
        tx_type: tx_type.code(),
        biz_type: biz_type.clone(),
        biz_id: biz_id.clone(),
    })
}

/// The business references a batch's commands would take, to look up at once.
fn biz_references(cmds: &[&PointsCommand]) -> Vec<BizRef> {
    cmds.iter().filter_map(|cmd| biz_reference(cmd)).collect()
}

/// What the accounts already written in this batch claimed, and which references the
/// database held when the batch was read.
#[derive(Default)]
struct BatchContext {
    biz: HashSet<BizRef>,
    /// The batch's references that were taken when it read the database: looked up for all
    /// of them at once instead of one query per command. `None` once that read is stale (an
    /// account is planned again on fresh data): then each is looked up on its own.
    stored: Option<HashSet<BizRef>>,
}

/// One account's commands planned on its ledger, not written yet.
struct PlannedGroup {
    results: Vec<PointsResult>,
    ledger: Ledger,
    context: GroupContext,
}

/// What one account's commands claimed so far in this attempt.
#[derive(Default)]
struct GroupContext {
    /// Points awarded per (event type, day) under daily caps.
    daily: HashMap<(String, i32), i64>,
    biz: HashSet<BizRef>,
}

impl AppState {
    /// Applies one command: it waits in this replica's points queue and is served in the
    /// next batch (one transaction, one write per account, one commit for all).
    pub async fn change_points(&self, cmd: PointsCommand) -> PointsResult {
        if let PointsOp::Earn(EarnSource::Event(event)) = &cmd.op {
            let earner = format!("{}/{}/{event}", cmd.tenant_id, cmd.member_id);
            self.limits.admit(LimitedAction::Earn, &earner).await?;
        }
        let serve = self.drainer(|app, groups| async move { app.serve_points_batch(groups).await });
        self.points_batcher.submit((), cmd, serve).await
    }

    async fn serve_points_batch(&self, unique: Vec<Group<PointsCommand, Answer<PointsOutcome>>>) {
        let cmds: Vec<&PointsCommand> = unique.iter().map(|group| &group.cmd).collect();
        // One command's failure is that command's alone: a failed batch is served again in
        // halves.
        let results = Isolation::serve(
            cmds.len(),
            |range| self.serve_points_commands(&cmds[range]),
            || self.metrics.record_points_split(),
        )
        .await;
        for (group, result) in unique.into_iter().zip(results) {
            group.answer(result);
        }
    }

    /// One batch, retried with backoff while another writer wins the race, until the
    /// latest deadline among its commands (a short one never cuts its neighbours' short):
    /// first in PostgreSQL's two statements, which fail whole when an account moved, then in
    /// a transaction, which plans again only the accounts that moved.
    async fn serve_points_commands(
        &self,
        cmds: &[&PointsCommand],
    ) -> Result<Vec<PointsResult>, MarketingError> {
        let Some(deadline) = cmds.iter().map(|cmd| cmd.deadline).max() else {
            return Ok(Vec::new());
        };
        let started = std::time::Instant::now();
        let (outcome, attempts) = retry_lost_races(deadline, RETRY, |attempt| async move {
            match (attempt, PgBatch::new(&self.db)) {
                (0, Some(short)) => match self.serve_points_on(short, cmds).await {
                    Err(MarketingError::ConcurrentModification(cause)) => {
                        // Another writer won somewhere in the batch: the transaction re-plans
                        // only the accounts that changed.
                        tracing::debug!(error = %cause, "points batch served again in a transaction");
                        self.metrics.record_points_fallback();
                        self.serve_points_on(TxnBatch::begin(&self.db).await?, cmds)
                            .await
                    }
                    served => served,
                },
                _ => {
                    self.serve_points_on(TxnBatch::begin(&self.db).await?, cmds)
                        .await
                }
            }
        })
        .await;
        tracing::debug!(
            commands = cmds.len(),
            attempts,
            elapsed_us = started.elapsed().as_micros() as u64,
            "points batch served"
        );
        outcome
    }

    /// Serves a batch through `store`: replays answered from their records; every account
    /// read at once (the missing ones an earn opens created at once), each account's commands
    /// planned on its ledger, in key order (so concurrent batches lock accounts in the same
    /// order); the ledgers written where their accounts have not moved, the others read and
    /// planned again; then every outcome recorded and the batch made durable in one commit.
    async fn serve_points_on<S: LedgerStore>(
        &self,
        mut store: S,
        cmds: &[&PointsCommand],
    ) -> Result<Vec<PointsResult>, MarketingError> {
        let references = biz_references(cmds);
        // Every member's ledger and reference is read with the records, replayed or not: one
        // round trip on PostgreSQL.
        let keys = BatchKeys {
            requests: cmds
                .iter()
                .filter_map(|cmd| cmd.key.as_ref())
                .map(|key| (&key.tenant_id, key.client.as_str(), key.request_id.as_str()))
                .collect(),
            members: cmds
                .iter()
                .map(|cmd| (&cmd.tenant_id, &cmd.member_id))
                .collect(),
            biz: references.iter().collect(),
        };
        let reads = store.read(&keys).await?;
        let Sorted {
            mut results,
            replayed,
            groups,
        } = sort_commands(cmds, reads.records);
        let mut ledgers = by_member(reads.ledgers);
        let opened = accounts_to_open(cmds, &groups, |key| ledgers.contains_key(key));
        if !opened.is_empty() {
            store.open(&opened, self.clock.now()).await?;
            let keys = BatchKeys {
                members: opened,
                ..Default::default()
            };
            ledgers.extend(by_member(store.read(&keys).await?.ledgers));
        }
        let mut batch = BatchContext {
            biz: HashSet::new(),
            stored: Some(reads.taken),
        };
        let mut earned: BTreeMap<TenantId, Vec<Standing>> = BTreeMap::new();
        let mut pending: Vec<(&[usize], PlannedGroup)> = Vec::new();
        for attempt in 0.. {
            let now = self.clock.now();
            for (key, indexes) in &groups {
                let Some((account, lots)) = ledgers.remove(key) else {
                    // An account no read found: one nobody opened, or (on the first attempt)
                    // one just opened that is not readable yet.
                    if attempt == 0 {
                        if opens_account(cmds, indexes) {
                            return Err(MarketingError::ConcurrentModification(
                                "a new points account is not readable yet".into(),
                            ));
                        }
                        let refused = indexes.iter().map(|_| Err(MarketingError::AccountNotFound));
                        answer(&mut results, indexes, refused.collect());
                    }
                    continue;
                };
                let group: Vec<&PointsCommand> = indexes.iter().map(|&i| cmds[i]).collect();
                let ledger = Ledger::new(account, lots, now);
                let plan = self
                    .plan_group(store.conn(), &group, ledger, &batch)
                    .await?;
                batch.biz.extend(plan.context.biz.iter().cloned());
                if plan.ledger.entries.is_empty() {
                    answer(&mut results, indexes, plan.results);
                } else {
                    pending.push((indexes, plan));
                }
            }
            let planned: Vec<PlannedLedger<'_>> = pending
                .iter()
                .map(|(_, plan)| PlannedLedger {
                    ledger: &plan.ledger,
                    daily: &plan.context.daily,
                })
                .collect();
            let written = store.write(&planned).await?;
            let mut lost: Vec<(&TenantId, &MemberId)> = Vec::new();
            for (indexes, plan) in pending.drain(..) {
                if written.contains(&plan.ledger.account.id) {
                    if let Some(standing) = standing_of(&plan.ledger) {
                        let tenant = &cmds[indexes[0]].tenant_id;
                        earned.entry(tenant.clone()).or_default().push(standing);
                    }
                    answer(&mut results, indexes, plan.results);
                } else {
                    // Another writer changed the account since it was read: planned again
                    // below on fresh data; its references are not taken yet, and what the
                    // batch read of references may be stale too.
                    for reference in &plan.context.biz {
                        batch.biz.remove(reference);
                    }
                    batch.stored = None;
                    let cmd = cmds[indexes[0]];
                    lost.push((&cmd.tenant_id, &cmd.member_id));
                }
            }
            if lost.is_empty() {
                break;
            }
            if attempt + 1 == CAS_ATTEMPTS {
                return Err(MarketingError::ConcurrentModification(
                    "the account kept changing under the batch".into(),
                ));
            }
            let keys = BatchKeys {
                members: lost,
                ..Default::default()
            };
            ledgers = by_member(store.read(&keys).await?.ledgers);
        }
        let recorded_at = self.clock.now();
        store
            .commit(outcomes(cmds, &results, &replayed), recorded_at)
            .await?;
        self.finish_batch(earned, results).await
    }

    /// After the commit: the leaderboards learn the new standings; every command has its result.
    async fn finish_batch(
        &self,
        earned: BTreeMap<TenantId, Vec<Standing>>,
        results: Vec<Option<PointsResult>>,
    ) -> Result<Vec<PointsResult>, MarketingError> {
        for (tenant, standings) in earned {
            self.record_standings(&tenant, &standings).await;
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(MarketingError::internal("points command left undecided")))
            })
            .collect())
    }

    /// Plans one account's commands on its ledger. A refused command leaves the ledger as it
    /// was and takes no business reference.
    async fn plan_group(
        &self,
        conn: &impl ConnectionTrait,
        group: &[&PointsCommand],
        mut ledger: Ledger,
        batch: &BatchContext,
    ) -> Result<PlannedGroup, MarketingError> {
        ledger.expire_due();
        let mut context = GroupContext::default();
        let mut results = Vec::with_capacity(group.len());
        for cmd in group {
            match self
                .apply_points_op(conn, &mut ledger, cmd, batch, &context)
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
    async fn apply_points_op(
        &self,
        conn: &impl ConnectionTrait,
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
                self.refuse_duplicate_biz(conn, tenant, TxType::Earn, &meta, batch, context)
                    .await?;
                let (amount, expires_at) = match source {
                    EarnSource::Amount { amount, expires_at } => (*amount, *expires_at),
                    EarnSource::Event(event) => {
                        let rule = self.rule_for_event(tenant, event).await?;
                        let terms = &rule.terms;
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
                                let stored =
                                    points::earned_today(conn, tenant, &cmd.member_id, event, day)
                                        .await?;
                                let award = terms.award(stored.saturating_add(pending))?;
                                award_counted = Some(((event.clone(), day), award));
                                award
                            }
                            _ => terms.award(0)?,
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
            PointsOp::Deduct(amount) => {
                self.refuse_duplicate_biz(conn, tenant, TxType::Deduct, &meta, batch, context)
                    .await?;
                planned.entry = Some(ledger.deduct(*amount, meta)?);
            }
            PointsOp::Freeze {
                amount,
                order_id,
                ttl,
            } => {
                let held =
                    points::find_hold(conn, ledger.account.id, HoldRef::Order(order_id)).await?;
                let held = held.map(|h| ledger.planned_hold(h));
                if held.is_some_and(|h| h.status == HoldStatus::Held)
                    || ledger.holds_order(order_id)
                {
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
                let (hold, held) = self.load_hold(conn, ledger, hold).await?;
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
                    .release_hold(conn, ledger, selector, HoldStatus::Released, meta)
                    .await?;
                (planned.entry, planned.hold) = (entry, Some(hold));
            }
            PointsOp::ExpireHold(id) => {
                let selector = HoldSelector::Id(*id);
                let (entry, hold) = self
                    .release_hold(conn, ledger, &selector, HoldStatus::Expired, meta)
                    .await?;
                (planned.entry, planned.hold) = (entry, Some(hold));
            }
            PointsOp::Refund { target, amount } => {
                let entry = match target {
                    RefundTarget::Transaction(id) => {
                        points::find_entry(conn, ledger.account.id, *id).await?
                    }
                    RefundTarget::Biz { biz_type, biz_id } => {
                        points::find_by_biz(
                            conn,
                            tenant,
                            Some(ledger.account.id),
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
                let taken = points::refundable_allocations(conn, entry.id).await?;
                let lot_ids: Vec<Uuid> = taken.iter().map(|(id, _)| *id).collect();
                ledger.add_lots(points::lots_by_id(conn, ledger.account.id, &lot_ids).await?);
                planned.entry = Some(ledger.refund(entry.id, &taken, *amount, meta)?);
            }
            PointsOp::ExpireLots => planned.entry = ledger.entries.last().map(|e| e.id),
        }
        Ok((planned, award_counted))
    }

    /// Ends a HELD hold without spending: its points go back (and expire if their lots did).
    async fn release_hold(
        &self,
        conn: &impl ConnectionTrait,
        ledger: &mut Ledger,
        selector: &HoldSelector,
        status: HoldStatus,
        meta: EntryMeta,
    ) -> Result<(Option<Uuid>, Hold), MarketingError> {
        let (hold, held) = self.load_hold(conn, ledger, selector).await?;
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
        conn: &impl ConnectionTrait,
        ledger: &mut Ledger,
        selector: &HoldSelector,
    ) -> Result<(Hold, Vec<(Uuid, i64)>), MarketingError> {
        let by = match selector {
            HoldSelector::Id(id) => HoldRef::Id(*id),
            HoldSelector::Order(order) => HoldRef::Order(order),
        };
        let hold = points::find_hold(conn, ledger.account.id, by)
            .await?
            .ok_or(MarketingError::HoldNotFound)?;
        let held = points::hold_allocations(conn, hold.id).await?;
        let lot_ids: Vec<Uuid> = held.iter().map(|(id, _)| *id).collect();
        ledger.add_lots(points::lots_by_id(conn, ledger.account.id, &lot_ids).await?);
        Ok((hold, held))
    }

    /// An order earns (or deducts) at most once per tenant, whatever the request id: not in
    /// the database, not earlier in this batch.
    async fn refuse_duplicate_biz(
        &self,
        conn: &impl ConnectionTrait,
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
            None => points::find_by_biz(conn, tenant, None, &[tx_type], biz_type, biz_id)
                .await?
                .is_some(),
        };
        if stored || batch.biz.contains(&reference) || context.biz.contains(&reference) {
            return Err(MarketingError::DuplicateBizReference);
        }
        Ok(())
    }

    /// The account as it stands now (due lots shown as expired even before the sweeper runs).
    pub async fn points_account(
        &self,
        tenant: &TenantId,
        member: &MemberId,
    ) -> Result<AccountView, MarketingError> {
        let account = points::find_account(self.db.conn(), tenant, member)
            .await?
            .ok_or(MarketingError::AccountNotFound)?;
        let lots = points::live_lots(self.db.conn(), account.id).await?;
        let mut view = Ledger::new(account, lots, self.clock.now());
        view.expire_due();
        Ok(AccountView {
            next_expiry: view.next_expiry(),
            account: view.account,
        })
    }

    pub async fn list_points_transactions(
        &self,
        tenant: &TenantId,
        member: &MemberId,
        types: &[TxType],
        range: (Option<UnixMicros>, Option<UnixMicros>),
        after: Option<Uuid>,
        page_size: u64,
    ) -> Result<(Vec<Entry>, Option<Uuid>), MarketingError> {
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
        Ok((page, next))
    }
}

/// A batch's commands sorted out: the replayed ones answered from their records, the others
/// grouped by account, in key order.
struct Sorted {
    results: Vec<Option<PointsResult>>,
    replayed: Vec<bool>,
    groups: BTreeMap<(String, String), Vec<usize>>,
}

fn sort_commands(
    cmds: &[&PointsCommand],
    mut records: HashMap<idempotency::RecordKey, idempotency::Record>,
) -> Sorted {
    let mut results: Vec<Option<PointsResult>> = cmds.iter().map(|_| None).collect();
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    let mut replayed = vec![false; cmds.len()];
    for (index, cmd) in cmds.iter().enumerate() {
        if let Some(key) = &cmd.key
            && let Some(record) = records.remove(&key.record_key())
        {
            results[index] = Some(
                record
                    .replay_for(key)
                    .and_then(wire::replay)
                    .map(|bytes| Answer::Recorded(Recorded::new(bytes))),
            );
            replayed[index] = true;
            continue;
        }
        groups
            .entry((cmd.tenant_id.to_string(), cmd.member_id.to_string()))
            .or_default()
            .push(index);
    }
    Sorted {
        results,
        replayed,
        groups,
    }
}

/// Puts a group's results where its commands are.
fn answer(results: &mut [Option<PointsResult>], indexes: &[usize], answers: Vec<PointsResult>) {
    for (&index, result) in indexes.iter().zip(answers) {
        results[index] = Some(result);
    }
}

/// Ledgers as read, by (tenant, member).
fn by_member(ledgers: Vec<(Account, Vec<Lot>)>) -> HashMap<(String, String), (Account, Vec<Lot>)> {
    ledgers
        .into_iter()
        .map(|(account, lots)| {
            let key = (account.tenant_id.to_string(), account.member_id.to_string());
            (key, (account, lots))
        })
        .collect()
}

/// The members, in key order, whose accounts do not `exist` and whose commands open them.
fn accounts_to_open<'a>(
    cmds: &[&'a PointsCommand],
    groups: &BTreeMap<(String, String), Vec<usize>>,
    exists: impl Fn(&(String, String)) -> bool,
) -> Vec<(&'a TenantId, &'a MemberId)> {
    groups
        .iter()
        .filter(|(key, indexes)| !exists(key) && opens_account(cmds, indexes))
        .map(|(_, indexes)| (&cmds[indexes[0]].tenant_id, &cmds[indexes[0]].member_id))
        .collect()
}

/// Whether an account's commands open it when it does not exist (an earn does).
fn opens_account(cmds: &[&PointsCommand], indexes: &[usize]) -> bool {
    indexes
        .iter()
        .any(|&i| matches!(cmds[i].op, PointsOp::Earn(_)))
}

/// The outcomes a batch records for its requests' retries: responses and business refusals
/// (as the encoded `google.rpc.Status` a retry replays verbatim). Replays are recorded
/// already; infrastructure errors are no outcome, a retry tries again.
fn outcomes<'a>(
    cmds: &[&'a PointsCommand],
    results: &[Option<PointsResult>],
    replayed: &[bool],
) -> Vec<(&'a IdempotencyKey, Outcome)> {
    let mut outcomes = Vec::new();
    for ((cmd, result), replayed) in cmds.iter().zip(results).zip(replayed) {
        let (Some(key), Some(result), false) = (&cmd.key, result, replayed) else {
            continue;
        };
        match result {
            Ok(Answer::Fresh(outcome)) => outcomes.push((key, wire::answered(outcome))),
            Ok(Answer::Recorded(_)) => {}
            Err(err) if err.is_business_refusal() => outcomes.push((key, wire::refused(err))),
            Err(_) => {}
        }
    }
    outcomes
}

fn outcome_of(ledger: &Ledger, applied: &Applied) -> PointsOutcome {
    PointsOutcome {
        account: AccountView {
            account: ledger.account.clone(),
            next_expiry: ledger.next_expiry(),
        },
        hold: applied.hold.clone(),
        entry: applied
            .entry
            .and_then(|id| ledger.entries.iter().find(|e| e.id == id))
            .cloned(),
    }
}
