//! The points leaderboard: standings recorded after each batch that earned, read from Redis
//! (rebuilt from the database index when it missed updates).

use super::*;

/// Members a rebuilt leaderboard holds: enough that any top-100 stays exact.
const LEADERBOARD_DEPTH: u64 = 1000;

/// Tenants whose Redis leaderboard missed updates (Redis was down): rebuilt on next read.
/// At most [`STALE_BOARDS`]; past them a missed update heals when the board expires (its keys
/// live an hour), so tenants named by callers cannot grow the set without bound.
#[derive(Debug, Default)]
pub struct StaleBoards(Mutex<HashSet<String>>);

/// Stale tenants a replica remembers at most.
pub const STALE_BOARDS: usize = 10_000;

impl StaleBoards {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mark(&self, tenant: &TenantId) {
        let mut set = self.set();
        if set.len() < STALE_BOARDS {
            set.insert(tenant.to_string());
        }
    }
}

impl PointsService {
    pub(super) async fn record_standings(&self, tenant: &TenantId, standings: &[Standing]) {
        if let Err(err) = self.leaderboard.record(tenant.as_str(), standings).await {
            marketing_infra::warn_every!(error = %err, "leaderboard update failed; it is rebuilt on the next read");
            self.stale_boards.mark(tenant);
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
                let standings: Vec<Standing> = self
                    .shared
                    .db
                    .points()
                    .top_earners(tenant, LEADERBOARD_DEPTH)
                    .await?
                    .into_iter()
                    .map(|(member_id, total_earned, reached_at)| Standing {
                        member_id,
                        total_earned,
                        reached_at,
                    })
                    .collect();
                if let Err(err) = self.leaderboard.rebuild(tenant.as_str(), &standings).await {
                    marketing_infra::warn_every!(error = %err, "leaderboard rebuild failed");
                }
                return Ok(standings
                    .into_iter()
                    .take(n)
                    .map(|s| (s.member_id, s.total_earned))
                    .collect());
            }
            Err(err) => {
                marketing_infra::warn_every!(error = %err, "leaderboard unavailable; reading the database index");
                self.stale_boards.mark(tenant);
            }
        }
        Ok(self
            .shared
            .db
            .points()
            .top_earners(tenant, n as u64)
            .await?
            .into_iter()
            .map(|(member, total, _)| (member, total))
            .collect())
    }
}

/// The account's standing on the leaderboard, when the ledger earned.
pub(super) fn standing_of(ledger: &Ledger) -> Option<Standing> {
    ledger
        .entries
        .iter()
        .any(|e| e.tx_type == TxType::Earn)
        .then(|| Standing {
            member_id: ledger.account.member_id.to_string(),
            total_earned: ledger.account.total_earned,
            reached_at: ledger.account.earned_updated_at.0,
        })
}
