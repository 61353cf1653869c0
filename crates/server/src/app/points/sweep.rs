//! The points sweeper: lapsed holds released and due lots expired, through the same batches
//! as requests.

use super::*;

/// Accounts one sweep works on at once: their commands join the points batches together (a
/// batch serves up to `MARKETING_POINTS_BATCH_MAX`), instead of one batch round trip each.
const SWEEP_CONCURRENCY: usize = 128;

/// What a points sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PointsSwept {
    pub holds_released: usize,
    pub accounts_expired: usize,
    /// Whether it stopped with nothing due left (else its time ran out first).
    pub caught_up: bool,
}

impl PointsService {
    /// Releases lapsed holds and expires due lots, account by account, through the same
    /// optimistic path as requests (safe with every replica sweeping at once), `batch`
    /// accounts at a time, many at once, until nothing is due or `budget` has passed: a mass
    /// expiry (a campaign's points all due one night) drains at the batches' pace, not one
    /// account per round trip, and a round still ends for the sweeper's other parts.
    pub async fn sweep_points(
        &self,
        batch: u64,
        budget: Duration,
    ) -> Result<PointsSwept, MarketingError> {
        let started = Instant::now();
        let mut swept = PointsSwept::default();
        loop {
            let (released, expired, found) = self.sweep_points_once(batch).await?;
            swept.holds_released += released;
            swept.accounts_expired += expired;
            if found < batch as usize {
                swept.caught_up = true;
                return Ok(swept);
            }
            if started.elapsed() >= budget {
                return Ok(swept);
            }
        }
    }

    /// One pass over up to `batch` due holds and the accounts of up to `batch` due lots: what
    /// it released, expired, and the most it found of holds or lots (an account's lots all
    /// expire in one command, so accounts alone would tell "caught up" too early).
    async fn sweep_points_once(&self, batch: u64) -> Result<(usize, usize, usize), MarketingError> {
        use futures::StreamExt as _;
        let now = self.shared.clock.now();
        let holds = self.shared.db.points().due_holds(now, batch).await?;
        let due = self
            .shared
            .db
            .points()
            .accounts_with_due_lots(now, batch)
            .await?;
        let found = holds.len().max(due.lots);
        let accounts = due.accounts;
        let work = holds
            .into_iter()
            .map(|(tenant, member, hold)| (tenant, member, PointsOp::ExpireHold(hold)))
            .chain(
                accounts
                    .into_iter()
                    .map(|(tenant, member)| (tenant, member, PointsOp::ExpireLots)),
            )
            .filter_map(|(tenant, member, op)| {
                let (Ok(tenant_id), Ok(member_id)) = (
                    TenantId::parse("tenant_id", &tenant),
                    MemberId::parse("member_id", &member),
                ) else {
                    return None;
                };
                Some(PointsCommand {
                    key: None,
                    tenant_id,
                    member_id,
                    op,
                    meta: EntryMeta {
                        description: "swept".into(),
                        ..EntryMeta::default()
                    },
                    deadline: Instant::now() + self.shared.config.points_timeout,
                })
            });
        let outcomes: Vec<(bool, PointsResult, String, String)> = futures::stream::iter(work)
            .map(|cmd| async move {
                let is_hold = matches!(cmd.op, PointsOp::ExpireHold(_));
                let (tenant, member) = (cmd.tenant_id.to_string(), cmd.member_id.to_string());
                (is_hold, self.change_points(cmd).await, tenant, member)
            })
            .buffer_unordered(SWEEP_CONCURRENCY)
            .collect()
            .await;
        let (mut released, mut expired) = (0, 0);
        for (is_hold, outcome, tenant, member) in outcomes {
            match outcome {
                Ok(_) if is_hold => released += 1,
                Ok(_) => expired += 1,
                // Confirmed or released meanwhile: nothing left to sweep.
                Err(MarketingError::Refused(Refusal::InvalidHoldState { .. })) => {}
                Err(err) => {
                    marketing_infra::warn_every!(error = %err, %tenant, %member, "points sweep of an account failed")
                }
            }
        }
        Ok((released, expired, found))
    }
}
