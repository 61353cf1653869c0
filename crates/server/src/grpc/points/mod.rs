//! `PointsAccountService`: parse, call one use case, map.

mod requests;

use marketing_proto::v1::{self as pb, points_account_service_server::PointsAccountService};
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::parse::{Edge, Tenanted, distinct, reply};
use crate::{
    app::limits::Limits,
    app::{PointsCommand, PointsService},
    wire::{
        ToWire,
        convert::{encode_page_token, entry_to_proto},
        status::to_status,
    },
};

use requests::*;

pub struct Points {
    points: PointsService,
    limits: Arc<Limits>,
}

impl Points {
    pub fn new(points: PointsService, limits: Arc<Limits>) -> Self {
        Self { points, limits }
    }

    /// The request with what parsing it needs: points writes answer by the client's
    /// `grpc-timeout`, capped by the server's points timeout.
    fn edge<'a, R: Tenanted>(&'a self, request: &'a Request<R>) -> Result<Edge<'a, R>, Status> {
        Edge::new(
            request,
            self.points.shared.config.points_timeout,
            &self.points.shared,
        )
    }

    /// Parses a change of an account and answers with what it did (FreezePoints' response
    /// is the superset of every change's).
    async fn changed<R: Tenanted + Sync>(
        &self,
        request: &Request<R>,
    ) -> Result<pb::FreezePointsResponse, Status>
    where
        for<'a> PointsCommand: TryFrom<Edge<'a, R>, Error = Status>,
    {
        let command = PointsCommand::try_from(self.edge(request)?)?;
        if let Some((action, who)) = command.limited() {
            self.limits.admit(action, &who).await.map_err(to_status)?;
        }
        reply(self.points.change_points(command).await)
    }
}

#[tonic::async_trait]
impl PointsAccountService for Points {
    #[instrument(name = "PointsAccountService.GetPointsAccount", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn get_points_account(
        &self,
        request: Request<pb::GetPointsAccountRequest>,
    ) -> Result<Response<pb::GetPointsAccountResponse>, Status> {
        let q = AccountQuery::try_from(self.edge(&request)?)?;
        let account = self
            .points
            .points_account(&q.tenant, &q.member)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetPointsAccountResponse {
            points_account: Some(account.to_wire()),
        }))
    }

    #[instrument(name = "PointsAccountService.EarnPoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn earn_points(
        &self,
        request: Request<pb::EarnPointsRequest>,
    ) -> Result<Response<pb::EarnPointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(pb::EarnPointsResponse {
            points_account: done.points_account,
            transaction: done.transaction,
        }))
    }

    #[instrument(name = "PointsAccountService.AdjustPoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn adjust_points(
        &self,
        request: Request<pb::AdjustPointsRequest>,
    ) -> Result<Response<pb::AdjustPointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(pb::AdjustPointsResponse {
            points_account: done.points_account,
            transaction: done.transaction,
        }))
    }

    #[instrument(name = "PointsAccountService.DeductPoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn deduct_points(
        &self,
        request: Request<pb::DeductPointsRequest>,
    ) -> Result<Response<pb::DeductPointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(pb::DeductPointsResponse {
            points_account: done.points_account,
            transaction: done.transaction,
        }))
    }

    #[instrument(name = "PointsAccountService.FreezePoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn freeze_points(
        &self,
        request: Request<pb::FreezePointsRequest>,
    ) -> Result<Response<pb::FreezePointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(done))
    }

    #[instrument(name = "PointsAccountService.ConfirmFrozenPoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn confirm_frozen_points(
        &self,
        request: Request<pb::ConfirmFrozenPointsRequest>,
    ) -> Result<Response<pb::ConfirmFrozenPointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(pb::ConfirmFrozenPointsResponse {
            points_account: done.points_account,
            hold: done.hold,
            transaction: done.transaction,
        }))
    }

    #[instrument(name = "PointsAccountService.ReleaseFrozenPoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn release_frozen_points(
        &self,
        request: Request<pb::ReleaseFrozenPointsRequest>,
    ) -> Result<Response<pb::ReleaseFrozenPointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(pb::ReleaseFrozenPointsResponse {
            points_account: done.points_account,
            hold: done.hold,
            transaction: done.transaction,
        }))
    }

    #[instrument(name = "PointsAccountService.RefundPoints", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn refund_points(
        &self,
        request: Request<pb::RefundPointsRequest>,
    ) -> Result<Response<pb::RefundPointsResponse>, Status> {
        let done = self.changed(&request).await?;
        Ok(Response::new(pb::RefundPointsResponse {
            points_account: done.points_account,
            transaction: done.transaction,
        }))
    }

    #[instrument(name = "PointsAccountService.ListPointsTransactions", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn list_points_transactions(
        &self,
        request: Request<pb::ListPointsTransactionsRequest>,
    ) -> Result<Response<pb::ListPointsTransactionsResponse>, Status> {
        let q = EntriesQuery::try_from(self.edge(&request)?)?;
        let (transactions, last) = self
            .points
            .list_points_transactions(&q.tenant, &q.member, &q.types, q.range, q.after, q.size)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListPointsTransactionsResponse {
            transactions: transactions
                .iter()
                .map(|entry| entry_to_proto(&q.tenant, &q.member, entry))
                .collect(),
            next_page_token: last
                .map(|id| {
                    encode_page_token(
                        id,
                        &list_query_text(request.get_ref(), &distinct(&request.get_ref().types)),
                    )
                })
                .unwrap_or_default(),
        }))
    }

    #[instrument(name = "PointsAccountService.GetPointsLeaderboard", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn get_points_leaderboard(
        &self,
        request: Request<pb::GetPointsLeaderboardRequest>,
    ) -> Result<Response<pb::GetPointsLeaderboardResponse>, Status> {
        let q = TopQuery::try_from(self.edge(&request)?)?;
        let top = self
            .points
            .leaderboard(&q.tenant, q.top_n)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetPointsLeaderboardResponse {
            entries: top
                .into_iter()
                .enumerate()
                .map(
                    |(i, (member_id, total_earned))| pb::PointsLeaderboardEntry {
                        rank: i as i32 + 1,
                        member_id,
                        total_earned,
                    },
                )
                .collect(),
        }))
    }

    #[instrument(name = "PointsAccountService.CreatePointsRule", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn create_points_rule(
        &self,
        request: Request<pb::CreatePointsRuleRequest>,
    ) -> Result<Response<pb::CreatePointsRuleResponse>, Status> {
        let c = CreateRule::try_from(self.edge(&request)?)?;
        let rule = reply(
            self.points
                .create_rule(c.key, c.event, c.terms, c.actor)
                .await,
        )?;
        Ok(Response::new(pb::CreatePointsRuleResponse {
            points_rule: Some(rule),
        }))
    }

    #[instrument(name = "PointsAccountService.UpdatePointsRule", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn update_points_rule(
        &self,
        request: Request<pb::UpdatePointsRuleRequest>,
    ) -> Result<Response<pb::UpdatePointsRuleResponse>, Status> {
        let c = UpdateRule::try_from(self.edge(&request)?)?;
        let updated = reply(
            self.points
                .update_rule(
                    c.key,
                    c.id,
                    c.version,
                    c.terms,
                    &c.fields,
                    c.actor.as_deref(),
                )
                .await,
        )?;
        Ok(Response::new(pb::UpdatePointsRuleResponse {
            points_rule: Some(updated),
        }))
    }

    #[instrument(name = "PointsAccountService.ListPointsRules", skip_all,
        fields(tenant_id = %request.get_ref().tenant_id))]
    async fn list_points_rules(
        &self,
        request: Request<pb::ListPointsRulesRequest>,
    ) -> Result<Response<pb::ListPointsRulesResponse>, Status> {
        let r = request.get_ref();
        let q = RulesQuery::try_from(self.edge(&request)?)?;
        let (points_rules, last) = self
            .points
            .list_rules(&q.tenant, r.enabled, q.after, q.size)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListPointsRulesResponse {
            points_rules: points_rules.iter().map(ToWire::to_wire).collect(),
            next_page_token: last
                .map(|id| encode_page_token(id, &rules_query_text(r)))
                .unwrap_or_default(),
        }))
    }
}
