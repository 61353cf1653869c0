//! `UserCouponService`: parse, call one use case, map.

mod cart;
pub(crate) use cart::MAX_LINE_CATEGORIES;
pub(crate) use requests::order_amount;
mod requests;

use marketing_proto::v1::{self as pb, user_coupon_service_server::UserCouponService};
use std::sync::Arc;

use marketing_domain::{MarketingError, error::Refusal, limits::LimitedAction};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::parse::{Edge, Tenanted, distinct, reply};
use crate::{
    app::limits::Limits,
    app::{
        ClaimCoupon, ClaimCouponByCode, CouponService, DistributeCoupons, ListCoupons,
        TransitionCoupon,
    },
    wire::{
        ToWire,
        convert::{coupon_to_proto, encode_page_token},
        status::to_status,
    },
};

use requests::*;

pub struct UserCoupons {
    coupons: CouponService,
    limits: Arc<Limits>,
}

impl UserCoupons {
    pub fn new(coupons: CouponService, limits: Arc<Limits>) -> Self {
        Self { coupons, limits }
    }

    /// The request with what parsing it needs: claims and distributions answer by the
    /// client's `grpc-timeout`, capped by the server's claim timeout.
    fn edge<'a, R: Tenanted>(&'a self, request: &'a Request<R>) -> Result<Edge<'a, R>, Status> {
        Edge::new(
            request,
            self.coupons.shared.config.claim_timeout,
            &self.coupons.shared,
        )
    }

    /// Parses a transition request and answers with the coupon as the transition left it.
    async fn transitioned<R: Tenanted + Sync>(
        &self,
        request: &Request<R>,
    ) -> Result<pb::UserCoupon, Status>
    where
        for<'a> TransitionCoupon: TryFrom<Edge<'a, R>, Error = Status>,
    {
        let command = TransitionCoupon::try_from(self.edge(request)?)?;
        reply(self.coupons.transition_coupon(command).await)
    }
}

#[tonic::async_trait]
impl UserCouponService for UserCoupons {
    #[instrument(name = "UserCouponService.ClaimCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id,
        template_id = %request.get_ref().template_id))]
    async fn claim_coupon(
        &self,
        request: Request<pb::ClaimCouponRequest>,
    ) -> Result<Response<pb::ClaimCouponResponse>, Status> {
        let claim = ClaimCoupon::try_from(self.edge(&request)?)?;
        let (action, member) = claim.limited();
        self.limits
            .admit(action, &member)
            .await
            .map_err(to_status)?;
        let coupon = reply(self.coupons.claim_coupon(claim).await)?;
        Ok(Response::new(pb::ClaimCouponResponse {
            user_coupon: Some(coupon),
        }))
    }

    #[instrument(name = "UserCouponService.ClaimCouponByCode", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn claim_coupon_by_code(
        &self,
        request: Request<pb::ClaimCouponByCodeRequest>,
    ) -> Result<Response<pb::ClaimCouponByCodeResponse>, Status> {
        let claim = ClaimCouponByCode::try_from(self.edge(&request)?)?;
        let member = format!("{}/{}", claim.key.tenant_id, claim.member_id);
        // Every attempt takes a turn of the member's claims and one of its failed attempts
        // before the code is looked up (so concurrent guesses cannot pass the limit together;
        // the two turns, two keys, and the lookup, a read, run at once); an attempt that did not
        // fail to find an open code gives its turn back.
        let (claim_turn, attempt_turn, found) = tokio::join!(
            self.limits.admit(LimitedAction::Claim, &member),
            self.limits.admit(LimitedAction::CodeAttempt, &member),
            self.coupons.find_code(&claim)
        );
        if let Err(refused) = claim_turn {
            if attempt_turn.is_ok() {
                self.limits.give_back(LimitedAction::CodeAttempt, &member);
            }
            return Err(to_status(refused));
        }
        attempt_turn.map_err(to_status)?;
        let claimed = self.coupons.claim_found_code(claim, found).await;
        let guessed = matches!(
            &claimed,
            Err(MarketingError::Refused(
                Refusal::CodeNotFound | Refusal::CodeAlreadyClaimed
            ))
        );
        if !guessed {
            self.limits.give_back(LimitedAction::CodeAttempt, &member);
        }
        let coupon = reply(claimed)?;
        Ok(Response::new(pb::ClaimCouponByCodeResponse {
            user_coupon: Some(coupon),
        }))
    }

    #[instrument(name = "UserCouponService.DistributeCoupons", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, template_id = %request.get_ref().template_id,
        members = request.get_ref().member_ids.len()))]
    async fn distribute_coupons(
        &self,
        request: Request<pb::DistributeCouponsRequest>,
    ) -> Result<Response<pb::DistributeCouponsResponse>, Status> {
        let command = DistributeCoupons::try_from(self.edge(&request)?)?;
        let response = reply(self.coupons.distribute_coupons(command).await)?;
        Ok(Response::new(response))
    }

    #[instrument(name = "UserCouponService.GetUserCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn get_user_coupon(
        &self,
        request: Request<pb::GetUserCouponRequest>,
    ) -> Result<Response<pb::GetUserCouponResponse>, Status> {
        let query = GetCoupon::try_from(self.edge(&request)?)?;
        let coupon = self
            .coupons
            .get_coupon(&query.tenant, query.id, query.member.as_ref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetUserCouponResponse {
            user_coupon: Some(coupon.to_wire()),
        }))
    }

    #[instrument(name = "UserCouponService.ListMemberCoupons", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id))]
    async fn list_member_coupons(
        &self,
        request: Request<pb::ListMemberCouponsRequest>,
    ) -> Result<Response<pb::ListMemberCouponsResponse>, Status> {
        let query = ListCoupons::try_from(self.edge(&request)?)?;
        let page = self.coupons.list_coupons(query).await.map_err(to_status)?;
        Ok(Response::new(pb::ListMemberCouponsResponse {
            user_coupons: page
                .coupons
                .iter()
                .map(|coupon| coupon_to_proto(coupon, page.at))
                .collect(),
            next_page_token: page
                .next
                .map(|id| {
                    encode_page_token(
                        id.0,
                        &list_query_text(request.get_ref(), &distinct(&request.get_ref().states)),
                    )
                })
                .unwrap_or_default(),
        }))
    }

    #[instrument(name = "UserCouponService.ValidateCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn validate_coupon(
        &self,
        request: Request<pb::ValidateCouponRequest>,
    ) -> Result<Response<pb::ValidateCouponResponse>, Status> {
        let q = ValidateCoupon::try_from(self.edge(&request)?)?;
        let check = self
            .coupons
            .validate_coupon(
                &q.tenant,
                &q.member,
                q.id,
                q.amount,
                &q.currency,
                q.order_id.as_deref(),
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(check.to_wire()))
    }

    #[instrument(name = "UserCouponService.LockCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn lock_coupon(
        &self,
        request: Request<pb::LockCouponRequest>,
    ) -> Result<Response<pb::LockCouponResponse>, Status> {
        Ok(Response::new(pb::LockCouponResponse {
            user_coupon: Some(self.transitioned(&request).await?),
        }))
    }

    #[instrument(name = "UserCouponService.UseCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn use_coupon(
        &self,
        request: Request<pb::UseCouponRequest>,
    ) -> Result<Response<pb::UseCouponResponse>, Status> {
        Ok(Response::new(pb::UseCouponResponse {
            user_coupon: Some(self.transitioned(&request).await?),
        }))
    }

    #[instrument(name = "UserCouponService.ReleaseCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn release_coupon(
        &self,
        request: Request<pb::ReleaseCouponRequest>,
    ) -> Result<Response<pb::ReleaseCouponResponse>, Status> {
        Ok(Response::new(pb::ReleaseCouponResponse {
            user_coupon: Some(self.transitioned(&request).await?),
        }))
    }

    #[instrument(name = "UserCouponService.ReturnCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn return_coupon(
        &self,
        request: Request<pb::ReturnCouponRequest>,
    ) -> Result<Response<pb::ReturnCouponResponse>, Status> {
        Ok(Response::new(pb::ReturnCouponResponse {
            user_coupon: Some(self.transitioned(&request).await?),
        }))
    }

    #[instrument(name = "UserCouponService.RevokeCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn revoke_coupon(
        &self,
        request: Request<pb::RevokeCouponRequest>,
    ) -> Result<Response<pb::RevokeCouponResponse>, Status> {
        Ok(Response::new(pb::RevokeCouponResponse {
            user_coupon: Some(self.transitioned(&request).await?),
        }))
    }

    #[instrument(name = "UserCouponService.PriceOrder", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id,
        lines = request.get_ref().lines.len()))]
    async fn price_order(
        &self,
        request: Request<pb::PriceOrderRequest>,
    ) -> Result<Response<pb::PriceOrderResponse>, Status> {
        let query = crate::app::PriceOrder::try_from(self.edge(&request)?)?;
        let priced = self.coupons.price_order(query).await.map_err(to_status)?;
        Ok(Response::new(cart::priced_to_proto(&priced)))
    }

    #[instrument(name = "UserCouponService.ListApplicableCoupons", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, member_id = %request.get_ref().member_id,
        lines = request.get_ref().lines.len()))]
    async fn list_applicable_coupons(
        &self,
        request: Request<pb::ListApplicableCouponsRequest>,
    ) -> Result<Response<pb::ListApplicableCouponsResponse>, Status> {
        let q = cart::ApplicableQuery::try_from(self.edge(&request)?)?;
        let answer = self
            .coupons
            .list_applicable_coupons(&q.tenant, &q.member, &q.cart, q.order_id.as_deref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(cart::applicable_to_proto(&answer)))
    }
}
