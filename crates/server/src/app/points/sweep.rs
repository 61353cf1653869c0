//! The points sweeper: lapsed holds released and due lots expired, through the same batches
//! as requests.

use super::*;

impl PointsService {
    /// Releases lapsed holds and expires due lots, account by account, through the same
    /// optimistic path as requests: safe with every replica sweeping at once.
    pub async fn sweep_points(&self, batch: u64) -> Result<(usize, usize), MarketingError> {
        let now = self.shared.clock.now();
        let holds = self.shared.db.points().due_holds(now, batch).await?;
        let accounts = self
            .shared
            .db
            .points()
            .accounts_with_due_lots(now, batch)
            .await?;
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
                deadline: Instant::now() + self.shared.config.points_timeout,
            };
            match self.change_points(cmd).await {
                Ok(_) if is_hold => released += 1,
                Ok(_) => expired += 1,
                // Confirmed or released meanwhile: nothing left to sweep.
                Err(MarketingError::Refused(Refusal::InvalidHoldState { .. })) => {}
                Err(err) => {
                    marketing_infra::warn_every!(error = %err, %tenant, %member, "points sweep of an account failed")
                }
            }
        }
        Ok((released, expired))
    }
}
