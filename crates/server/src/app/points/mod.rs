//! Points use cases. Every change of an account goes through [`PointsService::change_points`],
//! which serves it in this replica's next batch: read the accounts and their lots, let the
//! domain [`Ledger`] plan the changes, write them with `WHERE version = read_version`, and on
//! a lost race plan again on fresh data, retrying with jittered backoff until the deadline.
//! One planner ([`PointsService::serve_points_on`]) serves a batch through either storage
//! implementation of `LedgerStore`: on PostgreSQL first `PgBatch` (two statements), then, if
//! an account moved, `TxnBatch` (a transaction, SQLite's only way). Business refusals are
//! recorded under the request id, so a retry replays the first refusal too. Rules and their
//! cache (`rules.rs`), the leaderboard (`leaderboard.rs`), the sweeper (`sweep.rs`) and the
//! planning of one account's commands (`plan.rs`) live beside this module.

mod leaderboard;
mod plan;
mod rules;
mod sweep;

pub use leaderboard::StaleBoards;
use leaderboard::standing_of;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use marketing_domain::{
    MarketingError, MemberId, TenantId, UnixMicros,
    error::Refusal,
    limits::LimitedAction,
    points::{Account, AccountView, Entry, EntryMeta, Hold, Ledger, Lot, PointsOutcome, TxType},
    points_rule::{PointsRule, RuleField, RuleTerms},
};
use marketing_infra::{
    cache::Versioned,
    leaderboard::{Leaderboard, Standing},
};
use marketing_storage::{
    idempotency::{self, IdempotencyKey, Outcome},
    points::{
        BizRef, RuleRef,
        accounts::{PointsReads, PointsStore},
        batch::BatchKeys,
        store::{LedgerStore, PgBatch, PlannedLedger, TxnBatch},
    },
};
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    Answer, Recorded, Shared,
    batcher::{Backoff, Batched, Batcher, Group, retry_lost_races},
    drainer,
    isolate::Isolation,
};
use crate::wire::{self, events::points_event};

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
    /// An event priced by its rule; `order` (amount, currency) for a rule by amount.
    Event {
        event: String,
        order: Option<(i64, marketing_domain::coupon_template::Currency)>,
    },
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
    /// An operator's correction, up (a new lot expiring at `expires_at`) or down.
    Adjust {
        amount: i64,
        expires_at: Option<UnixMicros>,
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

impl PointsCommand {
    /// The rate limit the command counts against, and who it counts: an earn by an event,
    /// per member and event; nothing else is limited.
    pub fn limited(&self) -> Option<(LimitedAction, String)> {
        match &self.op {
            PointsOp::Earn(EarnSource::Event { event, .. }) => Some((
                LimitedAction::Earn,
                format!("{}/{}/{event}", self.tenant_id, self.member_id),
            )),
            _ => None,
        }
    }
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

/// Points accounts: every change through this replica's batch, reads, rules, the
/// leaderboard, the sweep of due holds and lots.
#[derive(Clone)]
pub struct PointsService {
    pub(crate) shared: Shared,
    pub leaderboard: Arc<dyn Leaderboard>,
    pub(super) points_batcher: Arc<Batcher<(), PointsCommand, Answer<PointsOutcome>>>,
    pub(super) stale_boards: Arc<StaleBoards>,
}

impl PointsService {
    /// Applies one command: it waits in this replica's points queue and is served in the
    /// next batch (one transaction, one write per account, one commit for all).
    pub async fn change_points(&self, cmd: PointsCommand) -> PointsResult {
        let serve = drainer(self, |app, groups| async move {
            app.serve_points_batch(groups).await
        });
        self.points_batcher.submit((), cmd, serve).await
    }

    async fn serve_points_batch(&self, unique: Vec<Group<PointsCommand, Answer<PointsOutcome>>>) {
        let cmds: Vec<&PointsCommand> = unique.iter().map(|group| &group.cmd).collect();
        // One command's failure is that command's alone: a failed batch is served again in
        // halves.
        let results = Isolation::serve(
            cmds.len(),
            |range| self.serve_points_commands(&cmds[range]),
            || self.shared.metrics.record_points_split(),
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
            match (attempt, PgBatch::new(&self.shared.db)) {
                (0, Some(short)) => match self.serve_points_on(short, cmds).await {
                    Err(MarketingError::ConcurrentModification(cause)) => {
                        // Another writer won somewhere in the batch: the transaction re-plans
                        // only the accounts that changed.
                        tracing::debug!(error = %cause, "points batch served again in a transaction");
                        self.shared.metrics.record_points_fallback();
                        self.serve_points_on(TxnBatch::begin(&self.shared.db).await?, cmds)
                            .await
                    }
                    served => served,
                },
                _ => {
                    self.serve_points_on(TxnBatch::begin(&self.shared.db).await?, cmds)
                        .await
                }
            }
        })
        .await;
        self.shared
            .metrics
            .points_batch
            .observe(cmds.len(), started.elapsed());
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
            store.open(&opened, self.shared.clock.now()).await?;
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
            let now = self.shared.clock.now();
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
                        let refused = indexes
                            .iter()
                            .map(|_| Err(MarketingError::Refused(Refusal::AccountNotFound)));
                        answer(&mut results, indexes, refused.collect());
                    }
                    continue;
                };
                let group: Vec<&PointsCommand> = indexes.iter().map(|&i| cmds[i]).collect();
                let ledger = Ledger::new(account, lots, now);
                let plan = self
                    .plan_group(&store.reads(), &group, ledger, &batch)
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
                    let account = &plan.ledger.account;
                    for entry in &plan.ledger.entries {
                        store.record(points_event(&account.tenant_id, &account.member_id, entry));
                    }
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
        let recorded_at = self.shared.clock.now();
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

    /// The account as it stands now (due lots shown as expired even before the sweeper runs).
    pub async fn points_account(
        &self,
        tenant: &TenantId,
        member: &MemberId,
    ) -> Result<AccountView, MarketingError> {
        let account = self
            .shared
            .db
            .points()
            .find_account(tenant, member)
            .await?
            .ok_or(MarketingError::Refused(Refusal::AccountNotFound))?;
        let lots = self.shared.db.points().live_lots(account.id).await?;
        let mut view = Ledger::new(account, lots, self.shared.clock.now());
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
        let mut page = self
            .shared
            .db
            .points()
            .list_entries(tenant, member, types, range, after, page_size + 1)
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
    indexes.iter().any(|&i| match cmds[i].op {
        PointsOp::Earn(_) => true,
        PointsOp::Adjust { amount, .. } => amount > 0,
        _ => false,
    })
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
