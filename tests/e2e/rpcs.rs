//! Every RPC of `marketing.v1` as one line of a table: its path, whether it writes, and a
//! valid request for a tenant's [`Seed`]. Suites that must cover every RPC (the permission
//! matrix, the mixed-tenant harness) walk this table, and a test fails when the served
//! descriptor set has an RPC the table lacks: a new RPC joins them by adding its line.
//!
//! Calls go out as raw bytes ([`call`]), so a suite needs no per-RPC client code.

use marketing_proto::{raw::Raw, v1 as pb};
use prost::Message;
use prost_types::{Duration, FieldMask};
use tonic::{Status, transport::Channel};

use crate::fixtures::template;

/// What exists in a tenant for its requests to act on.
#[derive(Debug, Clone)]
pub struct Seed {
    pub tenant: String,
    /// Names the ids of the requests made for this seed: seeds of one run share member ids,
    /// request ids, orders and business references, whatever their tenant.
    pub run: String,
    pub template_id: String,
    pub template_version: i64,
    /// A coupon of `member` (claimed).
    pub coupon_id: String,
    pub member: String,
    /// A deduction of `member`'s points (who has points left to deduct and freeze), to refund.
    pub deduction_id: String,
    /// The order of a hold on `member`'s points.
    pub hold_order: String,
    pub rule_id: String,
    pub rule_version: i64,
    /// A shared code of the template (the same text in every seed of a run, whatever its
    /// tenant).
    pub code: String,
}

impl Seed {
    /// The `n`-th id of kind `what` of this seed's run (request ids, members, orders).
    pub fn id(&self, what: &str, n: usize) -> String {
        format!("{}-{what}-{n}", self.run)
    }
}

/// One RPC: its path, whether a successful call changes stored state, and its `n`-th valid
/// request for a tenant's seed (ids from the seed's run and `n`: the same `n` of two seeds of
/// one run names the same request id, member, order and reference).
pub struct Rpc {
    pub path: &'static str,
    pub writes: bool,
    pub request: fn(&Seed, usize) -> Vec<u8>,
}

const fn rpc(path: &'static str, writes: bool, request: fn(&Seed, usize) -> Vec<u8>) -> Rpc {
    Rpc {
        path,
        writes,
        request,
    }
}

/// Every RPC of the API, one line each.
pub const RPCS: [Rpc; 44] = [
    rpc(
        "/marketing.v1.CouponTemplateService/CreateCouponTemplate",
        true,
        |s, n| {
            pb::CreateCouponTemplateRequest {
                tenant_id: s.tenant.clone(),
                request_id: s.id("create", n),
                coupon_template: Some(template()),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.CouponTemplateService/GetCouponTemplate",
        false,
        |s, _| {
            pb::GetCouponTemplateRequest {
                tenant_id: s.tenant.clone(),
                template_id: s.template_id.clone(),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.CouponTemplateService/ListCouponTemplates",
        false,
        |s, _| {
            pb::ListCouponTemplatesRequest {
                tenant_id: s.tenant.clone(),
                ..Default::default()
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.CouponTemplateService/UpdateCouponTemplate",
        true,
        |s, n| {
            pb::UpdateCouponTemplateRequest {
                tenant_id: s.tenant.clone(),
                request_id: s.id("update", n),
                coupon_template: Some(pb::CouponTemplate {
                    id: s.template_id.clone(),
                    version: s.template_version,
                    name: s.id("renamed", n),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["name".into()],
                }),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.CouponTemplateService/SetCouponTemplateEnabled",
        true,
        |s, n| {
            pb::SetCouponTemplateEnabledRequest {
                tenant_id: s.tenant.clone(),
                template_id: s.template_id.clone(),
                request_id: s.id("disable", n),
                enabled: false,
                version: None,
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.CouponTemplateService/AddCouponStock",
        true,
        |s, n| {
            pb::AddCouponStockRequest {
                tenant_id: s.tenant.clone(),
                template_id: s.template_id.clone(),
                request_id: s.id("stock", n),
                amount: 5,
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.CouponTemplateService/DeleteCouponTemplate",
        true,
        |s, n| {
            pb::DeleteCouponTemplateRequest {
                tenant_id: s.tenant.clone(),
                template_id: s.template_id.clone(),
                request_id: s.id("delete", n),
                version: None,
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.CouponTemplateService/CreateSharedCouponCode",
        true,
        |s, n| {
            pb::CreateSharedCouponCodeRequest {
                tenant_id: s.tenant.clone(),
                request_id: s.id("shared-code", n),
                template_id: s.template_id.clone(),
                code: format!("{}N{n}", s.code),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.CouponTemplateService/GenerateCouponCodes",
        true,
        |s, n| {
            pb::GenerateCouponCodesRequest {
                tenant_id: s.tenant.clone(),
                request_id: s.id("generate", n),
                template_id: s.template_id.clone(),
                count: 3,
                prefix: "GEN".into(),
                length: 8,
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.CouponTemplateService/ListCouponCodes",
        false,
        |s, _| {
            pb::ListCouponCodesRequest {
                tenant_id: s.tenant.clone(),
                template_id: s.template_id.clone(),
                ..Default::default()
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.UserCouponService/ClaimCouponByCode",
        true,
        |s, n| {
            pb::ClaimCouponByCodeRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.id("member", n),
                code: s.code.to_lowercase(),
                request_id: s.id("claim-code", n),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.TenantSettingsService/GetTenantSettings",
        false,
        |s, _| {
            pb::GetTenantSettingsRequest {
                tenant_id: s.tenant.clone(),
            }
            .encode_to_vec()
        },
    ),
    // The settings' etag is 0 until the first update: the first call updates them, the
    // next ones are VERSION_MISMATCH (in every tenant alike).
    rpc(
        "/marketing.v1.TenantSettingsService/UpdateTenantSettings",
        true,
        |s, n| {
            pb::UpdateTenantSettingsRequest {
                tenant_id: s.tenant.clone(),
                request_id: s.id("settings", n),
                tenant_settings: Some(pb::TenantSettings {
                    points_values: vec![pb::PointsValue {
                        currency: "EUR".into(),
                        points: 100,
                        amount: 100,
                    }],
                    max_coupons_per_order: 3,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["points_values".into(), "max_coupons_per_order".into()],
                }),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.UserCouponService/ClaimCoupon",
        true,
        |s, n| {
            pb::ClaimCouponRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.id("member", n),
                template_id: s.template_id.clone(),
                request_id: s.id("claim", n),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.UserCouponService/DistributeCoupons",
        true,
        |s, n| {
            pb::DistributeCouponsRequest {
                tenant_id: s.tenant.clone(),
                template_id: s.template_id.clone(),
                request_id: s.id("distribute", n),
                member_ids: vec![s.id("member", n)],
                allow_partial: false,
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.UserCouponService/GetUserCoupon",
        false,
        |s, _| {
            pb::GetUserCouponRequest {
                tenant_id: s.tenant.clone(),
                coupon_id: s.coupon_id.clone(),
                member_id: s.member.clone(),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.UserCouponService/ListMemberCoupons",
        false,
        |s, _| {
            pb::ListMemberCouponsRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                ..Default::default()
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.UserCouponService/PriceOrder",
        false,
        |s, n| {
            pb::PriceOrderRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                currency: "EUR".into(),
                lines: vec![pb::CartLine {
                    line_id: "l1".into(),
                    product_id: "p1".into(),
                    unit_price: 5000,
                    quantity: 1,
                    ..Default::default()
                }],
                shipping_amount: 500,
                coupon_ids: vec![s.coupon_id.clone()],
                points_to_redeem: 100,
                order_id: s.id("order", n),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.UserCouponService/ListApplicableCoupons",
        false,
        |s, _| {
            pb::ListApplicableCouponsRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                currency: "EUR".into(),
                lines: vec![pb::CartLine {
                    line_id: "l1".into(),
                    product_id: "p1".into(),
                    unit_price: 5000,
                    quantity: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.UserCouponService/ValidateCoupon",
        false,
        |s, n| {
            pb::ValidateCouponRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                coupon_id: s.coupon_id.clone(),
                amount: 5000,
                currency: "EUR".into(),
                order_id: s.id("order", n),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.UserCouponService/LockCoupon",
        true,
        |s, n| {
            pb::LockCouponRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                coupon_id: s.coupon_id.clone(),
                order_id: s.id("order", n),
                request_id: s.id("lock", n),
                lock_ttl: Some(Duration {
                    seconds: 600,
                    nanos: 0,
                }),
            }
            .encode_to_vec()
        },
    ),
    rpc("/marketing.v1.UserCouponService/UseCoupon", true, |s, n| {
        pb::UseCouponRequest {
            tenant_id: s.tenant.clone(),
            member_id: s.member.clone(),
            coupon_id: s.coupon_id.clone(),
            order_id: s.id("order", n),
            request_id: s.id("use", n),
            amount: 5000,
            currency: "EUR".into(),
            ..Default::default()
        }
        .encode_to_vec()
    }),
    rpc(
        "/marketing.v1.UserCouponService/ReleaseCoupon",
        false,
        |s, n| {
            pb::ReleaseCouponRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                coupon_id: s.coupon_id.clone(),
                order_id: s.id("order", n),
                request_id: s.id("release", n),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.UserCouponService/ReturnCoupon",
        false,
        |s, n| {
            pb::ReturnCouponRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                coupon_id: s.coupon_id.clone(),
                order_id: s.id("order", n),
                request_id: s.id("return", n),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.UserCouponService/RevokeCoupon",
        true,
        |s, n| {
            pb::RevokeCouponRequest {
                tenant_id: s.tenant.clone(),
                coupon_id: s.coupon_id.clone(),
                request_id: s.id("revoke", n),
                member_id: s.member.clone(),
                reason: "fraud".into(),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.PointsAccountService/GetPointsAccount",
        false,
        |s, _| {
            pb::GetPointsAccountRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.PointsAccountService/AdjustPoints",
        true,
        |s, n| {
            // Up and down by turns: the account never goes below what the seed earned.
            pb::AdjustPointsRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                request_id: s.id("adjust", n),
                amount: if n % 2 == 0 { 5 } else { -5 },
                reason: "goodwill".into(),
                expire_time: None,
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.PointsAccountService/EarnPoints",
        true,
        |s, n| {
            // Amounts, and every other call the seed's rule's event (rate-limited per
            // tenant, member and event where limits are set).
            let source = if n % 2 == 0 {
                pb::earn_points_request::Source::Amount(10)
            } else {
                pb::earn_points_request::Source::EventType(format!("{}-signup", s.run))
            };
            pb::EarnPointsRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                request_id: s.id("earn", n),
                source: Some(source),
                ..Default::default()
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.PointsAccountService/DeductPoints",
        true,
        |s, n| {
            pb::DeductPointsRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                request_id: s.id("deduct", n),
                amount: 1,
                biz_type: "order".into(),
                biz_id: s.id("order", n),
                description: String::new(),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.PointsAccountService/FreezePoints",
        true,
        |s, n| {
            pb::FreezePointsRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                request_id: s.id("freeze", n),
                amount: 1,
                order_id: s.id("order", n),
                hold_ttl: None,
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.PointsAccountService/ConfirmFrozenPoints",
        true,
        |s, n| {
            pb::ConfirmFrozenPointsRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                request_id: s.id("confirm", n),
                hold_ref: Some(pb::confirm_frozen_points_request::HoldRef::OrderId(
                    s.hold_order.clone(),
                )),
                amount: Some(1),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.PointsAccountService/ReleaseFrozenPoints",
        true,
        |s, n| {
            pb::ReleaseFrozenPointsRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                request_id: s.id("unfreeze", n),
                hold_ref: Some(pb::release_frozen_points_request::HoldRef::OrderId(
                    s.hold_order.clone(),
                )),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.PointsAccountService/RefundPoints",
        true,
        |s, n| {
            pb::RefundPointsRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                request_id: s.id("refund", n),
                target: Some(pb::refund_points_request::Target::TransactionId(
                    s.deduction_id.clone(),
                )),
                amount: Some(1),
                description: String::new(),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.PointsAccountService/ListPointsTransactions",
        false,
        |s, _| {
            pb::ListPointsTransactionsRequest {
                tenant_id: s.tenant.clone(),
                member_id: s.member.clone(),
                ..Default::default()
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.PointsAccountService/GetPointsLeaderboard",
        false,
        |s, _| {
            pb::GetPointsLeaderboardRequest {
                tenant_id: s.tenant.clone(),
                top_n: 10,
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.PointsAccountService/CreatePointsRule",
        true,
        |s, n| {
            pb::CreatePointsRuleRequest {
                tenant_id: s.tenant.clone(),
                request_id: s.id("rule", n),
                points_rule: Some(pb::PointsRule {
                    event_type: s.id("event", n),
                    points: 10,
                    enabled: true,
                    ..Default::default()
                }),
            }
            .encode_to_vec()
        },
    ),
    rpc(
        "/marketing.v1.PointsAccountService/UpdatePointsRule",
        true,
        |s, n| {
            pb::UpdatePointsRuleRequest {
                tenant_id: s.tenant.clone(),
                request_id: s.id("rule-update", n),
                points_rule: Some(pb::PointsRule {
                    id: s.rule_id.clone(),
                    version: s.rule_version,
                    points: 11,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["points".into()],
                }),
            }
            .encode_to_vec()
        },
    ),
    rpc("/marketing.v1.AdminService/GetCacheStats", false, |_, _| {
        pb::GetCacheStatsRequest {}.encode_to_vec()
    }),
    rpc(
        "/marketing.v1.AdminService/ListActiveLocks",
        false,
        |_, _| {
            pb::ListActiveLocksRequest {
                page_size: 10,
                ..Default::default()
            }
            .encode_to_vec()
        },
    ),
    rpc("/marketing.v1.AdminService/EvictCache", false, |s, _| {
        pb::EvictCacheRequest {
            tenant_id: s.tenant.clone(),
            target: Some(pb::evict_cache_request::Target::TemplateId(
                s.template_id.clone(),
            )),
        }
        .encode_to_vec()
    }),
    rpc(
        "/marketing.v1.AdminService/GetSweeperStatus",
        false,
        |_, _| pb::GetSweeperStatusRequest {}.encode_to_vec(),
    ),
    rpc("/marketing.v1.EventService/ListEvents", false, |s, _| {
        pb::ListEventsRequest {
            tenant_id: s.tenant.clone(),
            page_size: 10,
            ..Default::default()
        }
        .encode_to_vec()
    }),
    rpc("/marketing.v1.EventService/StreamEvents", false, |s, _| {
        pb::StreamEventsRequest {
            tenant_id: s.tenant.clone(),
            ..Default::default()
        }
        .encode_to_vec()
    }),
    rpc(
        "/marketing.v1.PointsAccountService/ListPointsRules",
        false,
        |s, _| {
            pb::ListPointsRulesRequest {
                tenant_id: s.tenant.clone(),
                ..Default::default()
            }
            .encode_to_vec()
        },
    ),
];

/// A template, a claimed coupon, an earn, a hold and a rule in `tenant`, made through the API
/// with `key` (a client that may manage and order for `tenant`; none without auth), with the
/// ids of `run`.
pub async fn seed(channel: &Channel, key: Option<&str>, tenant: &str, run: &str) -> Seed {
    let mut template = template();
    template.total_stock = 1_000;
    template.per_member_limit = 10;
    let member = format!("{run}-member");
    let mut seed = Seed {
        tenant: tenant.to_owned(),
        run: run.to_owned(),
        template_id: String::new(),
        template_version: 0,
        coupon_id: String::new(),
        member: member.clone(),
        deduction_id: String::new(),
        hold_order: format!("{run}-hold"),
        rule_id: String::new(),
        rule_version: 0,
        code: run
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_uppercase()
            + "SHARED",
    };
    let created: pb::CreateCouponTemplateResponse = call_as(
        channel,
        key,
        "/marketing.v1.CouponTemplateService/CreateCouponTemplate",
        pb::CreateCouponTemplateRequest {
            tenant_id: tenant.into(),
            request_id: format!("{run}-seed-template"),
            coupon_template: Some(template),
        },
    )
    .await;
    let created = created.coupon_template.expect("template");
    (seed.template_id, seed.template_version) = (created.id, created.version);
    let _: pb::CreateSharedCouponCodeResponse = call_as(
        channel,
        key,
        "/marketing.v1.CouponTemplateService/CreateSharedCouponCode",
        pb::CreateSharedCouponCodeRequest {
            tenant_id: tenant.into(),
            request_id: format!("{run}-seed-code"),
            template_id: seed.template_id.clone(),
            code: seed.code.clone(),
        },
    )
    .await;
    let claimed: pb::ClaimCouponResponse = call_as(
        channel,
        key,
        "/marketing.v1.UserCouponService/ClaimCoupon",
        pb::ClaimCouponRequest {
            tenant_id: tenant.into(),
            member_id: member.clone(),
            template_id: seed.template_id.clone(),
            request_id: format!("{run}-seed-claim"),
        },
    )
    .await;
    seed.coupon_id = claimed.user_coupon.expect("coupon").id;
    let _: pb::EarnPointsResponse = call_as(
        channel,
        key,
        "/marketing.v1.PointsAccountService/EarnPoints",
        pb::EarnPointsRequest {
            tenant_id: tenant.into(),
            member_id: member.clone(),
            request_id: format!("{run}-seed-earn"),
            source: Some(pb::earn_points_request::Source::Amount(1_000)),
            ..Default::default()
        },
    )
    .await;
    let deducted: pb::DeductPointsResponse = call_as(
        channel,
        key,
        "/marketing.v1.PointsAccountService/DeductPoints",
        pb::DeductPointsRequest {
            tenant_id: tenant.into(),
            member_id: member.clone(),
            request_id: format!("{run}-seed-deduct"),
            amount: 50,
            biz_type: "order".into(),
            biz_id: format!("{run}-seed-order"),
            description: String::new(),
        },
    )
    .await;
    seed.deduction_id = deducted.transaction.expect("transaction").id;
    let _: pb::FreezePointsResponse = call_as(
        channel,
        key,
        "/marketing.v1.PointsAccountService/FreezePoints",
        pb::FreezePointsRequest {
            tenant_id: tenant.into(),
            member_id: member,
            request_id: format!("{run}-seed-freeze"),
            amount: 100,
            order_id: seed.hold_order.clone(),
            hold_ttl: None,
        },
    )
    .await;
    let rule: pb::CreatePointsRuleResponse = call_as(
        channel,
        key,
        "/marketing.v1.PointsAccountService/CreatePointsRule",
        pb::CreatePointsRuleRequest {
            tenant_id: tenant.into(),
            request_id: format!("{run}-seed-rule"),
            points_rule: Some(pb::PointsRule {
                event_type: format!("{run}-signup"),
                points: 10,
                enabled: true,
                ..Default::default()
            }),
        },
    )
    .await;
    let rule = rule.points_rule.expect("rule");
    (seed.rule_id, seed.rule_version) = (rule.id, rule.version);
    seed
}

/// A call that must succeed, decoded.
async fn call_as<Q: Message, A: Message + Default>(
    channel: &Channel,
    key: Option<&str>,
    path: &'static str,
    request: Q,
) -> A {
    let answer = call(channel, path, request.encode_to_vec(), key)
        .await
        .unwrap_or_else(|status| panic!("{path}: {status:?}"));
    A::decode(answer.as_slice()).expect("an answer of its type")
}

/// The server-streaming RPCs: [`call`] answers with their first message.
const STREAMING: [&str; 1] = ["/marketing.v1.EventService/StreamEvents"];

/// Calls the RPC at `path` with an encoded request (and a client's key); the encoded answer
/// (of a stream, its first message; the stream is closed then).
pub async fn call(
    channel: &Channel,
    path: &'static str,
    request: Vec<u8>,
    key: Option<&str>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|err| Status::unavailable(err.to_string()))?;
    let mut request = tonic::Request::new(request);
    if let Some(key) = key {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("ascii"),
        );
    }
    let path_and_query = http::uri::PathAndQuery::from_static(path);
    if STREAMING.contains(&path) {
        let mut stream = grpc
            .server_streaming(request, path_and_query, Raw)
            .await?
            .into_inner();
        return stream
            .message()
            .await?
            .ok_or_else(|| Status::internal("the stream ended without a message"));
    }
    grpc.unary(request, path_and_query, Raw)
        .await
        .map(tonic::Response::into_inner)
}
