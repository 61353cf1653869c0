//! `UserCouponService`: parse, call one use case, map.

use std::{collections::HashSet, time::Duration};

use marketing_domain::{
    CouponId, FieldViolation, MemberId, RequestId, TemplateId, TenantId,
    coupon_template::{Currency, MAX_AMOUNT},
    error::Violations,
    page::page_size,
    text::{TextKind, check_display_text},
    user_coupon::MAX_DISTRIBUTION,
};
use marketing_proto::v1::{self as pb, user_coupon_service_server::UserCouponService};
use prost::Message;
use tokio::time::Instant;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::instrument;

use super::{
    deadline::answer_by,
    parse::{cleared, finish, reference, reply},
};
use crate::{
    app::{AppState, ClaimCoupon, CouponChange, DistributeCoupons, ListCoupons, TransitionCoupon},
    wire::{
        ToWire,
        convert::{
            coupon_status_from_proto, coupon_to_proto, decode_page_token, encode_page_token,
        },
        idempotency_key,
        status::to_status,
    },
};

const MAX_REFERENCE_LEN: usize = 128;
const MAX_REVOKE_REASON_CHARS: usize = 500;
const MAX_LOCK_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct UserCoupons {
    app: AppState,
}

impl UserCoupons {
    pub fn new(app: AppState) -> Self {
        Self { app }
    }

    /// A transition that needs only an order id besides the common fields.
    async fn order_transition<M: Message>(
        &self,
        request: TransitionRequest<'_, M>,
        order_id: &str,
        change: impl FnOnce(String) -> CouponChange,
    ) -> Result<pb::UserCoupon, Status> {
        let mut violations = Violations::new();
        let order_id = violations.check(reference("order_id", order_id, MAX_REFERENCE_LEN));
        let command = request.parse(&mut violations, order_id.map(change))?;
        reply(self.app.transition_coupon(command).await)
    }

    /// When the call must be answered: the client's `grpc-timeout`, capped by the server's
    /// claim timeout.
    fn deadline(&self, metadata: &MetadataMap) -> Instant {
        answer_by(metadata, self.app.config.claim_timeout)
    }
}

fn order_amount(field: &str, amount: i64) -> Result<i64, FieldViolation> {
    if (0..=MAX_AMOUNT).contains(&amount) {
        Ok(amount)
    } else {
        Err(FieldViolation::new(
            field,
            format!("must be between 0 and {MAX_AMOUNT}"),
        ))
    }
}

fn lock_ttl(
    field: &str,
    ttl: Option<&prost_types::Duration>,
    default: Duration,
) -> Result<Duration, FieldViolation> {
    let Some(ttl) = ttl.filter(|d| d.seconds != 0 || d.nanos != 0) else {
        return Ok(default);
    };
    let invalid = || FieldViolation::new(field, "must be between 1 second and 24 hours");
    let ttl = Duration::try_from(*ttl).map_err(|_| invalid())?;
    if ttl < Duration::from_secs(1) || ttl > MAX_LOCK_TTL {
        return Err(invalid());
    }
    Ok(ttl)
}

/// The header of a transition request `$r` whose member is `$member` (`Some` when required).
macro_rules! transition {
    ($r:expr, $operation:literal, $member:expr) => {
        TransitionRequest {
            operation: $operation,
            without_request_id: cleared($r, |m| m.request_id.clear()),
            tenant_id: &$r.tenant_id,
            request_id: &$r.request_id,
            coupon_id: &$r.coupon_id,
            member_id: $member,
        }
    };
}

/// The fields every coupon transition carries.
struct TransitionRequest<'a, M> {
    operation: &'static str,
    without_request_id: M,
    tenant_id: &'a str,
    request_id: &'a str,
    coupon_id: &'a str,
    /// `None`: optional and absent is fine (operators); `Some`: required.
    member_id: Option<&'a str>,
}

impl<M: Message> TransitionRequest<'_, M> {
    fn parse(
        self,
        violations: &mut Violations,
        change: Option<CouponChange>,
    ) -> Result<TransitionCoupon, Status> {
        let tenant = violations.check(TenantId::parse("tenant_id", self.tenant_id));
        let request_id = violations.check(RequestId::parse("request_id", self.request_id));
        let coupon_id = violations.check(CouponId::parse("coupon_id", self.coupon_id));
        let member_id = self
            .member_id
            .map(|member| violations.check(MemberId::parse("member_id", member)));
        let violations = std::mem::take(violations);
        let command = (|| {
            let tenant = tenant?;
            Some(TransitionCoupon {
                key: idempotency_key(
                    &tenant,
                    request_id?,
                    self.operation,
                    &self.without_request_id,
                ),
                coupon_id: coupon_id?,
                member_id: match member_id {
                    Some(member) => Some(member?),
                    None => None,
                },
                change: change?,
            })
        })();
        finish(violations, command)
    }
}

/// An optional member id: empty means none.
fn optional_member(violations: &mut Violations, value: &str) -> Option<Option<MemberId>> {
    if value.is_empty() {
        Some(None)
    } else {
        violations
            .check(MemberId::parse("member_id", value))
            .map(Some)
    }
}

fn list_query_text(request: &pb::ListMemberCouponsRequest) -> String {
    format!(
        "coupons;tenant={};member={};states={:?}",
        request.tenant_id, request.member_id, request.states
    )
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
        let deadline = self.deadline(request.metadata());
        let r = request.get_ref();
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let member = violations.check(MemberId::parse("member_id", &r.member_id));
        let template = violations.check(TemplateId::parse("template_id", &r.template_id));
        let request_id = violations.check(RequestId::parse("request_id", &r.request_id));
        let claim = (|| {
            let tenant = tenant?;
            Some(ClaimCoupon {
                key: idempotency_key(
                    &tenant,
                    request_id?,
                    "ClaimCoupon",
                    &cleared(r, |m| m.request_id.clear()),
                ),
                template_id: template?,
                member_id: member?,
                deadline,
            })
        })();
        let claim = finish(violations, claim)?;
        let coupon = reply(self.app.claim_coupon(claim).await)?;
        Ok(Response::new(pb::ClaimCouponResponse {
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
        let deadline = self.deadline(request.metadata());
        let r = request.get_ref();
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let template = violations.check(TemplateId::parse("template_id", &r.template_id));
        let request_id = violations.check(RequestId::parse("request_id", &r.request_id));
        let mut members = Vec::with_capacity(r.member_ids.len().min(MAX_DISTRIBUTION));
        if r.member_ids.is_empty() || r.member_ids.len() > MAX_DISTRIBUTION {
            violations.push(
                "member_ids",
                format!("must name 1 to {MAX_DISTRIBUTION} members"),
            );
        } else {
            let mut seen = HashSet::with_capacity(r.member_ids.len());
            for (index, member) in r.member_ids.iter().enumerate() {
                let field = format!("member_ids[{index}]");
                match MemberId::parse(&field, member) {
                    Ok(member) if seen.insert(member.clone()) => members.push(member),
                    Ok(member) => violations.push(field, format!("{member} is named twice")),
                    Err(violation) => violations.extend(vec![violation]),
                }
            }
        }
        let command = (|| {
            let tenant = tenant?;
            Some(DistributeCoupons {
                key: idempotency_key(
                    &tenant,
                    request_id?,
                    "DistributeCoupons",
                    &cleared(r, |m| m.request_id.clear()),
                ),
                template_id: template?,
                members,
                allow_partial: r.allow_partial,
                deadline,
            })
        })();
        let command = finish(violations, command)?;
        let response = reply(self.app.distribute_coupons(command).await)?;
        Ok(Response::new(response))
    }

    #[instrument(name = "UserCouponService.GetUserCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn get_user_coupon(
        &self,
        request: Request<pb::GetUserCouponRequest>,
    ) -> Result<Response<pb::GetUserCouponResponse>, Status> {
        let r = request.get_ref();
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let id = violations.check(CouponId::parse("coupon_id", &r.coupon_id));
        let member = optional_member(&mut violations, &r.member_id);
        let (tenant, (id, member)) = finish(violations, tenant.zip(id.zip(member)))?;
        let coupon = self
            .app
            .get_coupon(&tenant, id, member.as_ref())
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
        let r = request.get_ref();
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let member = violations.check(MemberId::parse("member_id", &r.member_id));
        let page_size = violations.check(page_size("page_size", r.page_size));
        let before = violations.check(decode_page_token(
            "page_token",
            &r.page_token,
            &list_query_text(r),
        ));
        let mut statuses = Vec::new();
        for (index, state) in r.states.iter().enumerate() {
            if let Some(status) = violations.check(coupon_status_from_proto(
                &format!("states[{index}]"),
                *state,
            )) {
                statuses.push(status);
            }
        }
        let query = (|| {
            Some(ListCoupons {
                tenant_id: tenant?,
                member_id: member?,
                statuses,
                before: before?.map(CouponId),
                page_size: page_size?,
            })
        })();
        let query = finish(violations, query)?;
        let page = self.app.list_coupons(query).await.map_err(to_status)?;
        Ok(Response::new(pb::ListMemberCouponsResponse {
            user_coupons: page
                .coupons
                .iter()
                .map(|coupon| coupon_to_proto(coupon, page.at))
                .collect(),
            next_page_token: page
                .next
                .map(|id| encode_page_token(id.0, &list_query_text(r)))
                .unwrap_or_default(),
        }))
    }

    #[instrument(name = "UserCouponService.ValidateCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn validate_coupon(
        &self,
        request: Request<pb::ValidateCouponRequest>,
    ) -> Result<Response<pb::ValidateCouponResponse>, Status> {
        let r = request.get_ref();
        let mut violations = Violations::new();
        let tenant = violations.check(TenantId::parse("tenant_id", &r.tenant_id));
        let member = violations.check(MemberId::parse("member_id", &r.member_id));
        let id = violations.check(CouponId::parse("coupon_id", &r.coupon_id));
        let amount = violations.check(order_amount("amount", r.amount));
        let currency = violations.check(Currency::parse("currency", &r.currency));
        let order_id = if r.order_id.is_empty() {
            Some(None)
        } else {
            violations
                .check(reference("order_id", &r.order_id, MAX_REFERENCE_LEN))
                .map(Some)
        };
        let parsed = (|| Some((tenant?, member?, id?, amount?, currency?, order_id?)))();
        let (tenant, member, id, amount, currency, order_id) = finish(violations, parsed)?;
        let response = self
            .app
            .validate_coupon(&tenant, &member, id, amount, &currency, order_id.as_deref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(response.to_wire()))
    }

    #[instrument(name = "UserCouponService.LockCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn lock_coupon(
        &self,
        request: Request<pb::LockCouponRequest>,
    ) -> Result<Response<pb::LockCouponResponse>, Status> {
        let r = request.get_ref();
        let mut violations = Violations::new();
        let order_id = violations.check(reference("order_id", &r.order_id, MAX_REFERENCE_LEN));
        let ttl = violations.check(lock_ttl(
            "lock_ttl",
            r.lock_ttl.as_ref(),
            self.app.config.coupon_lock_ttl,
        ));
        let change = (|| {
            Some(CouponChange::Lock {
                order_id: order_id?,
                ttl: ttl?,
            })
        })();
        let command =
            transition!(r, "LockCoupon", Some(&r.member_id)).parse(&mut violations, change)?;
        let coupon = reply(self.app.transition_coupon(command).await)?;
        Ok(Response::new(pb::LockCouponResponse {
            user_coupon: Some(coupon),
        }))
    }

    #[instrument(name = "UserCouponService.UseCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn use_coupon(
        &self,
        request: Request<pb::UseCouponRequest>,
    ) -> Result<Response<pb::UseCouponResponse>, Status> {
        let r = request.get_ref();
        let mut violations = Violations::new();
        let order_id = violations.check(reference("order_id", &r.order_id, MAX_REFERENCE_LEN));
        let amount = violations.check(order_amount("amount", r.amount));
        let currency = violations.check(Currency::parse("currency", &r.currency));
        let change = (|| {
            Some(CouponChange::Use {
                order_id: order_id?,
                amount: amount?,
                currency: currency?,
            })
        })();
        let command =
            transition!(r, "UseCoupon", Some(&r.member_id)).parse(&mut violations, change)?;
        let coupon = reply(self.app.transition_coupon(command).await)?;
        Ok(Response::new(pb::UseCouponResponse {
            user_coupon: Some(coupon),
        }))
    }

    #[instrument(name = "UserCouponService.ReleaseCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn release_coupon(
        &self,
        request: Request<pb::ReleaseCouponRequest>,
    ) -> Result<Response<pb::ReleaseCouponResponse>, Status> {
        let r = request.get_ref();
        let coupon = self
            .order_transition(
                transition!(r, "ReleaseCoupon", Some(&r.member_id)),
                &r.order_id,
                |order_id| CouponChange::Release { order_id },
            )
            .await?;
        Ok(Response::new(pb::ReleaseCouponResponse {
            user_coupon: Some(coupon),
        }))
    }

    #[instrument(name = "UserCouponService.ReturnCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn return_coupon(
        &self,
        request: Request<pb::ReturnCouponRequest>,
    ) -> Result<Response<pb::ReturnCouponResponse>, Status> {
        let r = request.get_ref();
        let coupon = self
            .order_transition(
                transition!(r, "ReturnCoupon", Some(&r.member_id)),
                &r.order_id,
                |order_id| CouponChange::Return { order_id },
            )
            .await?;
        Ok(Response::new(pb::ReturnCouponResponse {
            user_coupon: Some(coupon),
        }))
    }

    #[instrument(name = "UserCouponService.RevokeCoupon", skip_all, fields(
        tenant_id = %request.get_ref().tenant_id, coupon_id = %request.get_ref().coupon_id))]
    async fn revoke_coupon(
        &self,
        request: Request<pb::RevokeCouponRequest>,
    ) -> Result<Response<pb::RevokeCouponResponse>, Status> {
        let r = request.get_ref();
        let mut violations = Violations::new();
        violations.check(check_display_text(
            "reason",
            &r.reason,
            TextKind::Lines,
            MAX_REVOKE_REASON_CHARS,
        ));
        let command = transition!(
            r,
            "RevokeCoupon",
            (!r.member_id.is_empty()).then_some(r.member_id.as_str())
        )
        .parse(
            &mut violations,
            Some(CouponChange::Revoke {
                reason: r.reason.clone(),
            }),
        )?;
        let coupon = reply(self.app.transition_coupon(command).await)?;
        Ok(Response::new(pb::RevokeCouponResponse {
            user_coupon: Some(coupon),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ttls_are_bounded() {
        let default = Duration::from_secs(900);
        assert_eq!(lock_ttl("t", None, default), Ok(default));
        let ttl = |seconds| prost_types::Duration { seconds, nanos: 0 };
        assert_eq!(lock_ttl("t", Some(&ttl(0)), default), Ok(default));
        assert_eq!(
            lock_ttl("t", Some(&ttl(60)), default),
            Ok(Duration::from_secs(60))
        );
        assert!(lock_ttl("t", Some(&ttl(-1)), default).is_err());
        assert!(lock_ttl("t", Some(&ttl(90_000)), default).is_err());
    }
}
