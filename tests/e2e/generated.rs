//! Generated requests (proptest), valid and malformed, for every RPC, sent to the real server
//! on each backend: no answer is INTERNAL or UNKNOWN, every error carries an `ErrorInfo` (and
//! an INVALID_ARGUMENT its field violations), and afterwards every invariant holds: coupon
//! counters equal their rows and never pass the stock, no member holds more than the limit,
//! every account equals its ledger and its lots.
//!
//! The calls run against a shared, growing state (templates, coupons, accounts, holds and rules
//! made at the start and by earlier calls), with ids drawn from it as well as made up.

use std::collections::HashMap;

use marketing_domain::{UnixMicros, auth::Role};
use marketing_domain::{
    points::TxType,
    user_coupon::{CouponStatus, MAX_DISTRIBUTION},
};
use marketing_proto::v1::{
    self as pb, coupon_template, coupon_template_service_client::CouponTemplateServiceClient,
    event_service_client::EventServiceClient,
    points_account_service_client::PointsAccountServiceClient,
    user_coupon_service_client::UserCouponServiceClient,
};
use marketing_server::{app::clients, config::AuthMode};
use marketing_storage::entity::{coupon_template as template_row, user_coupon};
use marketing_tests::{Backend, Options, TestApp, assert_invalid, spawn_app_with};
use proptest::{
    prelude::*,
    sample::select,
    test_runner::{Config as RunnerConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner},
};
use prost_types::Timestamp;
use sea_orm::EntityTrait;
use tonic::{
    Code, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_types::StatusExt;

use crate::{
    fixtures::{claim_request, create_request, now_seconds, template, unique},
    mixed::assert_no_row_crosses_tenants,
    points::{audit, deduct, earn},
};

marketing_tests::backend_suite! {
    generated_requests_never_fail_internally_and_keep_every_invariant,
}

/// Generated calls per backend.
const CASES: u32 = 800;
/// RPCs of the four services.
const RPCS: usize = 40;

/// Ids of what exists, to draw from.
#[derive(Debug, Clone)]
struct Pools {
    templates: Vec<String>,
    coupons: Vec<String>,
    transactions: Vec<String>,
    rules: Vec<String>,
}

/// One generated call: which RPC, and the values its request is built from.
#[derive(Debug, Clone)]
struct Draw {
    rpc: usize,
    ids: Ids,
    values: Values,
}

#[derive(Debug, Clone)]
struct Ids {
    tenant: String,
    member: String,
    template: String,
    coupon: String,
    transaction: String,
    rule: String,
    order: String,
    request: String,
    event: String,
    members: Vec<String>,
}

#[derive(Debug, Clone)]
struct Values {
    amount: i64,
    small: i32,
    optional: Option<i64>,
    text: String,
    line: String,
    currency: String,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    ttl: Option<prost_types::Duration>,
    flag: bool,
    /// Start from a valid template and change one field (`small % 10`), rather than from
    /// the generated values alone (almost never valid).
    mostly_valid: bool,
    states: Vec<i32>,
    paths: Vec<String>,
    page_token: String,
}

fn garbage_id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9-]{1,40}",
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        Just("\0".to_owned()),
    ]
}

fn from_pool(pool: Vec<String>) -> BoxedStrategy<String> {
    if pool.is_empty() {
        garbage_id().boxed()
    } else {
        prop_oneof![4 => select(pool), 1 => garbage_id()].boxed()
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec!["acme", "beta"]).prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => Just("bad tenant".to_owned()),
        1 => Just("t".repeat(200)),
        1 => "[a-zA-Z0-9_.:-]{1,12}",
    ]
}

fn member() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(vec!["m1", "m2", "m3"]).prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => Just("bad\0member".to_owned()),
        1 => Just("m".repeat(129)),
        1 => "[a-z]{1,10}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9 ]{0,30}",
        2 => "\\PC{0,60}",
        1 => "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}]{1,4}",
        1 => Just("d".repeat(2001)),
        1 => Just("\u{1D11E}".repeat(2000)),
    ]
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 1..1_000i64,
        1 => Just(0i64),
        1 => Just(-1i64),
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => Just(1i64 << 50),
        1 => Just((1i64 << 50) + 1),
        1 => any::<i64>(),
    ]
}

fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    let now = now_seconds();
    prop_oneof![
        2 => Just(None),
        4 => (now - 10_000_000..now + 10_000_000, 0..1_000_000_000i32)
            .prop_map(|(seconds, nanos)| Some(Timestamp { seconds, nanos })),
        1 => (any::<i64>(), any::<i32>())
            .prop_map(|(seconds, nanos)| Some(Timestamp { seconds, nanos })),
    ]
}

/// `n` distinct member ids: a distribution's member list at (or past) its cap.
fn distinct_members(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("cap-{i}")).collect()
}

/// `n` entries of a repeated enum filter, the enum's values in turn (repeating past them).
fn enum_values(n: usize) -> Vec<i32> {
    (0..n).map(|i| (i % 8) as i32 + 1).collect()
}

fn ids(pools: &Pools) -> impl Strategy<Value = Ids> + use<> {
    (
        (name(), member(), from_pool(pools.templates.clone())),
        (
            from_pool(pools.coupons.clone()),
            from_pool(pools.transactions.clone()),
            from_pool(pools.rules.clone()),
        ),
        (
            prop_oneof![
                4 => select(vec!["o1", "o2", "o3"]).prop_map(str::to_owned),
                1 => Just(String::new()),
                1 => "\\PC{0,10}",
            ],
            prop_oneof![
                6 => "[a-z0-9]{12}",
                2 => select(vec!["dup-1", "dup-2"]).prop_map(str::to_owned),
                1 => Just(String::new()),
                1 => Just("r".repeat(129)),
                1 => Just("bad id".to_owned()),
            ],
            prop_oneof![
                3 => Just("signup".to_owned()),
                1 => "[a-z_]{0,10}",
                1 => Just("\0".to_owned()),
            ],
            // Repeated fields at their cap and one past it, now and then.
            prop_oneof![
                8 => prop::collection::vec(member(), 0..6),
                1 => Just(distinct_members(MAX_DISTRIBUTION)),
                1 => Just(distinct_members(MAX_DISTRIBUTION + 1)),
            ],
        ),
    )
        .prop_map(
            |(
                (tenant, member, template),
                (coupon, transaction, rule),
                (order, request, event, members),
            )| Ids {
                tenant,
                member,
                template,
                coupon,
                transaction,
                rule,
                order,
                request,
                event,
                members,
            },
        )
}

fn values() -> impl Strategy<Value = Values> {
    (
        (
            amount(),
            prop_oneof![4 => 0..20i32, 1 => any::<i32>()],
            prop::option::of(amount()),
            text(),
            prop_oneof![3 => "[a-zA-Z0-9 ]{1,20}", 1 => text()],
        ),
        (
            prop_oneof![
                4 => Just("EUR".to_owned()),
                1 => Just(String::new()),
                1 => "[A-Za-z]{1,5}",
            ],
            timestamp(),
            timestamp(),
            prop::option::of(
                (any::<i64>(), any::<i32>())
                    .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
            ),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            prop_oneof![
                12 => prop::collection::vec(-1..7i32, 0..3),
                1 => Just(enum_values(CouponStatus::ALL.len())),
                1 => Just(enum_values(CouponStatus::ALL.len() + 1)),
                1 => Just(enum_values(TxType::ALL.len())),
                1 => Just(enum_values(TxType::ALL.len() + 1)),
            ],
            prop_oneof![
                12 => prop::collection::vec(
                    prop_oneof![
                        select(vec![
                            "name",
                            "description",
                            "total_stock",
                            "enabled",
                            "points",
                            "daily_cap",
                            "per_member_limit",
                        ])
                        .prop_map(str::to_owned),
                        "[a-z_.]{0,12}",
                    ],
                    0..3,
                ),
                // A mask at the request size's mercy: 10,000 paths.
                1 => Just(vec!["name".to_owned(); 10_000]),
            ],
            prop_oneof![Just(String::new()), "\\PC{0,20}"],
        ),
    )
        .prop_map(
            |(
                (amount, small, optional, text, line),
                (currency, start, end, ttl),
                (flag, mostly_valid, states, paths, page_token),
            )| Values {
                amount,
                small,
                optional,
                text,
                line,
                currency,
                start,
                end,
                ttl,
                flag,
                mostly_valid,
                states,
                paths,
                page_token,
            },
        )
}

/// Values that pass validation (the calls may still be refused for business reasons).
fn valid_values() -> impl Strategy<Value = Values> {
    (
        (
            1..200i64,
            1..10i32,
            prop::option::of(1..50i64),
            "[a-zA-Z0-9 ]{0,20}",
            "[a-zA-Z0-9]{1,20}",
        ),
        (any::<bool>(), prop::collection::vec(1..5i32, 0..2)),
        select(vec![
            "name",
            "description",
            "total_stock",
            "enabled",
            "points",
        ]),
    )
        .prop_map(
            |((amount, small, optional, text, line), (flag, states), path)| Values {
                amount,
                small,
                optional,
                text,
                line,
                currency: "EUR".to_owned(),
                start: None,
                end: None,
                ttl: None,
                flag,
                mostly_valid: true,
                states,
                paths: vec![path.to_owned()],
                page_token: String::new(),
            },
        )
}

/// Ids of what exists, in well-formed requests.
fn valid_ids(pools: &Pools) -> impl Strategy<Value = Ids> + use<> {
    let pick = |pool: &Vec<String>| select(pool.clone());
    (
        (
            select(vec!["acme", "beta"]),
            select(vec!["m1", "m2", "m3"]),
            pick(&pools.templates),
        ),
        (
            pick(&pools.coupons),
            pick(&pools.transactions),
            pick(&pools.rules),
        ),
        (
            select(vec!["o1", "o2", "o3", "o4"]),
            "[a-z0-9]{12}",
            prop::collection::vec(select(vec!["m1", "m2", "m3", "m4"]), 1..4),
        ),
    )
        .prop_map(
            |(
                (tenant, member, template),
                (coupon, transaction, rule),
                (order, request, members),
            )| {
                let mut members: Vec<String> = members.into_iter().map(str::to_owned).collect();
                members.dedup();
                Ids {
                    tenant: tenant.to_owned(),
                    member: member.to_owned(),
                    template,
                    coupon,
                    transaction,
                    rule,
                    order: order.to_owned(),
                    request,
                    event: "signup".to_owned(),
                    members,
                }
            },
        )
}

fn a_template(v: &Values) -> pb::CouponTemplate {
    let generated = pb::CouponTemplate {
        name: v.line.clone(),
        description: v.text.clone(),
        discount: Some(if v.flag {
            coupon_template::Discount::PercentOff(pb::PercentOffDiscount {
                basis_points: v.small,
                max_discount_amount: v.optional,
                ..Default::default()
            })
        } else {
            coupon_template::Discount::FixedAmount(pb::FixedAmountDiscount {
                amount: v.amount,
                ..Default::default()
            })
        }),
        currency: v.currency.clone(),
        min_spend_amount: v.optional.unwrap_or(0),
        total_stock: v.amount,
        per_member_limit: v.small,
        distribution_start_time: v.start,
        distribution_end_time: v.end,
        validity: Some(if v.flag {
            coupon_template::Validity::Relative(pb::RelativeValidity {
                valid_days: v.small,
            })
        } else {
            coupon_template::Validity::FixedWindow(pb::FixedValidityWindow {
                valid_from: v.start,
                valid_until: v.end,
            })
        }),
        enabled: v.flag,
        ..Default::default()
    };
    if !v.mostly_valid {
        return generated;
    }
    let mut valid = template();
    match v.small.rem_euclid(10) {
        0 => valid.name = generated.name,
        1 => valid.description = generated.description,
        2 => valid.discount = generated.discount,
        3 => valid.currency = generated.currency,
        4 => valid.min_spend_amount = generated.min_spend_amount,
        5 => valid.total_stock = generated.total_stock,
        6 => valid.per_member_limit = generated.per_member_limit,
        7 => valid.distribution_end_time = generated.distribution_end_time,
        8 => valid.validity = generated.validity,
        _ => {}
    }
    valid
}

fn mask(v: &Values) -> Option<prost_types::FieldMask> {
    (!v.paths.is_empty()).then(|| prost_types::FieldMask {
        paths: v.paths.clone(),
    })
}

/// A channel whose calls carry an API client's key (or none).
type Keyed = InterceptedService<Channel, WithKey>;

#[derive(Clone)]
struct WithKey(Option<MetadataValue<Ascii>>);

impl Interceptor for WithKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(key) = &self.0 {
            request.metadata_mut().insert("authorization", key.clone());
        }
        Ok(request)
    }
}

/// `channel`, its calls carrying `key`.
fn keyed(channel: &Channel, key: Option<&str>) -> Keyed {
    let key = key.map(|key| format!("Bearer {key}").parse().expect("ascii"));
    InterceptedService::new(channel.clone(), WithKey(key))
}

/// Sends the drawn call; `Ok` with nothing to check beyond the status.
async fn call(channel: &Keyed, draw: Draw) -> Result<(), Status> {
    let (i, v) = (draw.ids, draw.values);
    let mut templates = CouponTemplateServiceClient::new(channel.clone());
    let mut coupons = UserCouponServiceClient::new(channel.clone());
    let mut points = PointsAccountServiceClient::new(channel.clone());
    let mut events = EventServiceClient::new(channel.clone());
    let mut settings =
        marketing_proto::v1::tenant_settings_service_client::TenantSettingsServiceClient::new(
            channel.clone(),
        );
    let hold_ref_confirm = || {
        Some(if v.flag {
            pb::confirm_frozen_points_request::HoldRef::OrderId(i.order.clone())
        } else {
            pb::confirm_frozen_points_request::HoldRef::HoldId(i.transaction.clone())
        })
    };
    let hold_ref_release = || {
        Some(if v.flag {
            pb::release_frozen_points_request::HoldRef::OrderId(i.order.clone())
        } else {
            pb::release_frozen_points_request::HoldRef::HoldId(i.transaction.clone())
        })
    };
    match draw.rpc {
        0 => templates
            .create_coupon_template(pb::CreateCouponTemplateRequest {
                tenant_id: i.tenant,
                request_id: i.request,
                coupon_template: Some(a_template(&v)),
            })
            .await
            .map(drop),
        1 => templates
            .get_coupon_template(pb::GetCouponTemplateRequest {
                tenant_id: i.tenant,
                template_id: i.template,
            })
            .await
            .map(drop),
        2 => templates
            .list_coupon_templates(pb::ListCouponTemplatesRequest {
                tenant_id: i.tenant,
                page_size: v.small,
                page_token: v.page_token,
                enabled: v.flag.then_some(v.mostly_valid),
                discount_type: v.small.rem_euclid(4),
                claimable_at: v.start,
                ..Default::default()
            })
            .await
            .map(drop),
        3 => templates
            .update_coupon_template(pb::UpdateCouponTemplateRequest {
                tenant_id: i.tenant,
                request_id: i.request,
                coupon_template: Some(pb::CouponTemplate {
                    id: i.template,
                    version: v.optional.unwrap_or(1),
                    ..a_template(&v)
                }),
                update_mask: mask(&v),
            })
            .await
            .map(drop),
        4 => templates
            .set_coupon_template_enabled(pb::SetCouponTemplateEnabledRequest {
                tenant_id: i.tenant,
                template_id: i.template,
                request_id: i.request,
                enabled: v.flag,
                version: v.optional,
            })
            .await
            .map(drop),
        5 => templates
            .add_coupon_stock(pb::AddCouponStockRequest {
                tenant_id: i.tenant,
                template_id: i.template,
                request_id: i.request,
                amount: if v.mostly_valid {
                    i64::from(v.small)
                } else {
                    v.amount
                },
            })
            .await
            .map(drop),
        6 => templates
            .delete_coupon_template(pb::DeleteCouponTemplateRequest {
                tenant_id: i.tenant,
                template_id: i.template,
                request_id: i.request,
                version: v.optional,
            })
            .await
            .map(drop),
        7 => coupons
            .claim_coupon(pb::ClaimCouponRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                template_id: i.template,
                request_id: i.request,
            })
            .await
            .map(drop),
        8 => coupons
            .distribute_coupons(pb::DistributeCouponsRequest {
                tenant_id: i.tenant,
                template_id: i.template,
                request_id: i.request,
                member_ids: i.members,
                allow_partial: v.flag,
            })
            .await
            .map(drop),
        9 => coupons
            .get_user_coupon(pb::GetUserCouponRequest {
                tenant_id: i.tenant,
                coupon_id: i.coupon,
                member_id: i.member,
            })
            .await
            .map(drop),
        10 => coupons
            .list_member_coupons(pb::ListMemberCouponsRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                states: v.states,
                page_size: v.small,
                page_token: v.page_token,
            })
            .await
            .map(drop),
        11 => coupons
            .validate_coupon(pb::ValidateCouponRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                coupon_id: i.coupon,
                amount: v.amount,
                currency: v.currency,
                order_id: i.order,
            })
            .await
            .map(drop),
        12 => coupons
            .lock_coupon(pb::LockCouponRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                coupon_id: i.coupon,
                order_id: i.order,
                request_id: i.request,
                lock_ttl: v.ttl,
            })
            .await
            .map(drop),
        13 => coupons
            .use_coupon(pb::UseCouponRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                coupon_id: i.coupon,
                order_id: i.order,
                request_id: i.request,
                amount: v.amount,
                currency: v.currency.clone(),
                lines: if v.flag { cart_lines(&v) } else { Vec::new() },
                ..Default::default()
            })
            .await
            .map(drop),
        14 => coupons
            .release_coupon(pb::ReleaseCouponRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                coupon_id: i.coupon,
                order_id: i.order,
                request_id: i.request,
            })
            .await
            .map(drop),
        15 => coupons
            .return_coupon(pb::ReturnCouponRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                coupon_id: i.coupon,
                order_id: i.order,
                request_id: i.request,
            })
            .await
            .map(drop),
        16 => coupons
            .revoke_coupon(pb::RevokeCouponRequest {
                tenant_id: i.tenant,
                coupon_id: i.coupon,
                request_id: i.request,
                member_id: i.member,
                reason: v.text,
            })
            .await
            .map(drop),
        17 => points
            .get_points_account(pb::GetPointsAccountRequest {
                tenant_id: i.tenant,
                member_id: i.member,
            })
            .await
            .map(drop),
        18 => points
            .earn_points(pb::EarnPointsRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                request_id: i.request,
                source: Some(if v.flag {
                    pb::earn_points_request::Source::Amount(v.amount)
                } else {
                    pb::earn_points_request::Source::EventType(i.event)
                }),
                biz_type: if v.mostly_valid {
                    "order".into()
                } else {
                    v.line
                },
                biz_id: i.order,
                expire_time: v.end,
                description: v.text,
                order_amount: if v.mostly_valid { 0 } else { v.amount },
                currency: if v.mostly_valid {
                    String::new()
                } else {
                    v.currency
                },
            })
            .await
            .map(drop),
        19 => points
            .deduct_points(pb::DeductPointsRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                request_id: i.request,
                amount: v.amount,
                biz_type: if v.mostly_valid {
                    "order".into()
                } else {
                    v.line
                },
                biz_id: i.order,
                description: v.text,
            })
            .await
            .map(drop),
        20 => points
            .freeze_points(pb::FreezePointsRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                request_id: i.request,
                amount: v.amount,
                order_id: i.order,
                hold_ttl: v.ttl,
            })
            .await
            .map(drop),
        21 => points
            .confirm_frozen_points(pb::ConfirmFrozenPointsRequest {
                tenant_id: i.tenant.clone(),
                member_id: i.member.clone(),
                request_id: i.request.clone(),
                hold_ref: hold_ref_confirm(),
                amount: v.optional,
            })
            .await
            .map(drop),
        22 => points
            .release_frozen_points(pb::ReleaseFrozenPointsRequest {
                tenant_id: i.tenant.clone(),
                member_id: i.member.clone(),
                request_id: i.request.clone(),
                hold_ref: hold_ref_release(),
            })
            .await
            .map(drop),
        23 => points
            .refund_points(pb::RefundPointsRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                request_id: i.request,
                target: Some(if v.flag {
                    pb::refund_points_request::Target::TransactionId(i.transaction)
                } else {
                    pb::refund_points_request::Target::Biz(pb::BizReference {
                        biz_type: "order".into(),
                        biz_id: i.order,
                    })
                }),
                amount: v.optional,
                description: v.text,
            })
            .await
            .map(drop),
        24 => points
            .list_points_transactions(pb::ListPointsTransactionsRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                types: v.states,
                start_time: v.start,
                end_time: v.end,
                page_size: v.small,
                page_token: v.page_token,
            })
            .await
            .map(drop),
        25 => points
            .get_points_leaderboard(pb::GetPointsLeaderboardRequest {
                tenant_id: i.tenant,
                top_n: v.small,
            })
            .await
            .map(drop),
        26 => points
            .create_points_rule(pb::CreatePointsRuleRequest {
                tenant_id: i.tenant,
                request_id: i.request,
                points_rule: Some(pb::PointsRule {
                    event_type: i.event,
                    description: v.text,
                    points: v.amount,
                    daily_cap: v.optional,
                    expiry_days: v.flag.then_some(v.small),
                    enabled: v.mostly_valid,
                    ..Default::default()
                }),
            })
            .await
            .map(drop),
        27 => points
            .update_points_rule(pb::UpdatePointsRuleRequest {
                tenant_id: i.tenant,
                request_id: i.request,
                update_mask: mask(&v),
                points_rule: Some(pb::PointsRule {
                    id: i.rule,
                    description: v.text,
                    points: v.amount,
                    daily_cap: v.optional,
                    expiry_days: v.flag.then_some(v.small),
                    enabled: v.mostly_valid,
                    version: i64::from(v.small),
                    ..Default::default()
                }),
            })
            .await
            .map(drop),
        28 => events
            .list_events(pb::ListEventsRequest {
                tenant_id: i.tenant,
                after_position: v.amount,
                types: v.paths,
                aggregate_type: if v.flag { "user_coupon".into() } else { v.line },
                aggregate_id: i.coupon,
                page_size: v.small,
            })
            .await
            .map(drop),
        // A stream: its first message (the backlog's first event, a refusal, or the end).
        29 => {
            let mut stream = events
                .stream_events(pb::StreamEventsRequest {
                    tenant_id: i.tenant,
                    after_position: v.amount,
                    types: v.paths,
                })
                .await?
                .into_inner();
            tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
                .await
                .map_err(|_| Status::deadline_exceeded("no message within 30 s"))?
                .map(drop)
        }
        30 => templates
            .create_shared_coupon_code(pb::CreateSharedCouponCodeRequest {
                tenant_id: i.tenant,
                request_id: i.request,
                template_id: i.template,
                code: if v.mostly_valid {
                    format!("CODE{}", v.small.rem_euclid(1_000))
                } else {
                    v.line
                },
            })
            .await
            .map(drop),
        31 => templates
            .generate_coupon_codes(pb::GenerateCouponCodesRequest {
                tenant_id: i.tenant,
                request_id: i.request,
                template_id: i.template,
                // Small counts (a million takes seconds), and some out of range.
                count: if v.mostly_valid {
                    1 + v.small.rem_euclid(9)
                } else {
                    v.small.clamp(-3, 30)
                },
                prefix: if v.mostly_valid || v.flag {
                    "VIP".into()
                } else {
                    v.line
                },
                length: if v.mostly_valid {
                    8 + v.small.rem_euclid(5)
                } else {
                    v.small.rem_euclid(40) - 2
                },
            })
            .await
            .map(drop),
        32 => templates
            .list_coupon_codes(pb::ListCouponCodesRequest {
                tenant_id: i.tenant,
                template_id: i.template,
                page_size: v.small,
                page_token: v.page_token,
                state: v.small.rem_euclid(4),
            })
            .await
            .map(drop),
        33 => coupons
            .claim_coupon_by_code(pb::ClaimCouponByCodeRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                code: if v.flag { "welcome-10".into() } else { v.line },
                request_id: i.request,
            })
            .await
            .map(drop),
        34 => settings
            .get_tenant_settings(pb::GetTenantSettingsRequest {
                tenant_id: i.tenant,
            })
            .await
            .map(drop),
        35 => settings
            .update_tenant_settings(pb::UpdateTenantSettingsRequest {
                tenant_id: i.tenant,
                request_id: i.request,
                tenant_settings: Some(pb::TenantSettings {
                    points_values: vec![pb::PointsValue {
                        currency: v.currency.clone(),
                        points: v.amount,
                        amount: i64::from(v.small),
                    }],
                    max_points_share_bp: v.small,
                    min_points_redemption: v.optional.unwrap_or(0),
                    max_coupons_per_order: v.small.rem_euclid(13) - 1,
                    version: if v.mostly_valid {
                        0
                    } else {
                        v.optional.unwrap_or(0).rem_euclid(3)
                    },
                    ..Default::default()
                }),
                update_mask: if v.mostly_valid {
                    Some(prost_types::FieldMask {
                        paths: vec!["max_coupons_per_order".into()],
                    })
                } else {
                    mask(&v)
                },
            })
            .await
            .map(drop),
        36 => coupons
            .price_order(pb::PriceOrderRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                currency: v.currency.clone(),
                lines: cart_lines(&v),
                shipping_amount: v.optional.unwrap_or(0),
                coupon_ids: vec![i.coupon.clone(), i.coupon],
                points_to_redeem: v.amount,
                order_id: i.order,
            })
            .await
            .map(drop),
        37 => coupons
            .list_applicable_coupons(pb::ListApplicableCouponsRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                currency: v.currency.clone(),
                lines: cart_lines(&v),
                shipping_amount: v.optional.unwrap_or(0),
                order_id: i.order,
            })
            .await
            .map(drop),
        38 => points
            .adjust_points(pb::AdjustPointsRequest {
                tenant_id: i.tenant,
                member_id: i.member,
                request_id: i.request,
                amount: if v.flag {
                    v.amount
                } else {
                    v.amount.wrapping_neg()
                },
                reason: v.text,
                expire_time: v.end,
            })
            .await
            .map(drop),
        _ => points
            .list_points_rules(pb::ListPointsRulesRequest {
                tenant_id: i.tenant,
                page_size: v.small,
                page_token: v.page_token,
                enabled: v.flag.then_some(v.mostly_valid),
            })
            .await
            .map(drop),
    }
}

/// A cart of the generated values: mostly one or two sane lines, else the values as they are
/// (empty ids, negative prices, a hundred and one lines).
fn cart_lines(v: &Values) -> Vec<pb::CartLine> {
    let line = |n: usize, price: i64, quantity: i64| pb::CartLine {
        line_id: format!("l{n}"),
        product_id: if v.flag {
            v.line.clone()
        } else {
            format!("p{n}")
        },
        category_ids: vec![v.text.clone()],
        brand_id: "b".into(),
        unit_price: price,
        quantity,
    };
    if v.mostly_valid {
        vec![line(1, 2_000, 2), line(2, v.amount.rem_euclid(10_000), 1)]
    } else if v.small == 101 {
        (0..101).map(|n| line(n, 1, 1)).collect()
    } else {
        vec![line(1, v.amount, i64::from(v.small))]
    }
}

/// What exists before the calls: templates, coupons, points, holds and a rule, in both
/// tenants.
async fn seed(channel: &Keyed) -> Pools {
    let mut pools = Pools {
        templates: Vec::new(),
        coupons: Vec::new(),
        transactions: Vec::new(),
        rules: Vec::new(),
    };
    let mut coupons = UserCouponServiceClient::new(channel.clone());
    let mut points = PointsAccountServiceClient::new(channel.clone());
    for tenant in ["acme", "beta"] {
        let created = CouponTemplateServiceClient::new(channel.clone())
            .create_coupon_template(create_request(
                tenant,
                pb::CouponTemplate {
                    total_stock: 20,
                    per_member_limit: 3,
                    min_spend_amount: 0,
                    ..template()
                },
            ))
            .await
            .expect("template")
            .into_inner()
            .coupon_template
            .expect("template");
        for member in ["m1", "m2"] {
            let coupon = coupons
                .claim_coupon(claim_request(tenant, member, &created.id))
                .await
                .expect("claim")
                .into_inner()
                .user_coupon
                .expect("coupon");
            pools.coupons.push(coupon.id);
            let mut funded = earn(member, 1_000);
            funded.tenant_id = tenant.into();
            points.earn_points(funded).await.expect("earn");
            let mut spent = deduct(member, 50);
            spent.tenant_id = tenant.into();
            spent.biz_type = "order".into();
            // Business references are the tenant's: one order per member.
            spent.biz_id = if member == "m1" { "o1" } else { "o3" }.into();
            let spent = points.deduct_points(spent).await.expect("deduct");
            pools
                .transactions
                .push(spent.into_inner().transaction.expect("entry").id);
            let held = points
                .freeze_points(pb::FreezePointsRequest {
                    tenant_id: tenant.into(),
                    member_id: member.into(),
                    request_id: unique("freeze"),
                    amount: 100,
                    order_id: "o2".into(),
                    hold_ttl: None,
                })
                .await
                .expect("freeze")
                .into_inner();
            pools.transactions.push(held.hold.expect("hold").id);
        }
        CouponTemplateServiceClient::new(channel.clone())
            .create_shared_coupon_code(pb::CreateSharedCouponCodeRequest {
                tenant_id: tenant.into(),
                request_id: unique("code"),
                template_id: created.id.clone(),
                code: "WELCOME10".into(),
            })
            .await
            .expect("shared code");
        pools.templates.push(created.id);
        let rule = points
            .create_points_rule(pb::CreatePointsRuleRequest {
                tenant_id: tenant.into(),
                request_id: unique("rule"),
                points_rule: Some(pb::PointsRule {
                    event_type: "signup".into(),
                    points: 10,
                    daily_cap: Some(30),
                    enabled: true,
                    ..Default::default()
                }),
            })
            .await
            .expect("rule")
            .into_inner()
            .points_rule
            .expect("rule");
        pools.rules.push(rule.id);
    }
    pools
}

fn check_answer(draw: &Draw, answer: Result<(), Status>) -> Result<(), TestCaseError> {
    let Err(status) = answer else {
        return Ok(());
    };
    prop_assert!(
        !matches!(status.code(), Code::Internal | Code::Unknown),
        "{draw:?} was answered {status:?}"
    );
    let info = status.get_details_error_info();
    prop_assert!(info.is_some(), "{draw:?}: no ErrorInfo in {status:?}");
    let info = info.expect("checked");
    prop_assert_eq!(&info.domain, "marketing.v1");
    if status.code() == Code::InvalidArgument && info.reason == "INVALID_ARGUMENT" {
        let violations = status
            .get_details_bad_request()
            .map(|bad| bad.field_violations.len())
            .unwrap_or(0);
        prop_assert!(violations > 0, "{draw:?}: no field named in {status:?}");
    }
    Ok(())
}

/// Coupon counters equal their rows (claimed and used); nobody holds more than the limit.
async fn check_coupons(app: &TestApp) {
    let db = app.state.shared().db.conn();
    let templates = template_row::Entity::find()
        .all(db)
        .await
        .expect("templates");
    let coupons = user_coupon::Entity::find().all(db).await.expect("coupons");
    for t in &templates {
        let mine: Vec<_> = coupons.iter().filter(|c| c.template_id == t.id).collect();
        // The stock sums (claimed + remaining = total, none below 0) are the schema's CHECKs;
        // the counters matching the rows are not.
        assert_eq!(t.claimed_count, mine.len() as i64, "{}: claimed", t.id);
        let used = mine
            .iter()
            .filter(|c| c.status == CouponStatus::Used.code())
            .count();
        assert_eq!(t.used_count, used as i64, "{}: used", t.id);
        let mut per_member: HashMap<&str, i32> = HashMap::new();
        for coupon in &mine {
            *per_member.entry(coupon.member_id.as_str()).or_default() += 1;
        }
        assert!(
            per_member.values().all(|n| *n <= t.per_member_limit),
            "{}: over the limit {per_member:?}",
            t.id
        );
    }
}

/// Every repeated field of a request at its cap is accepted, and one past it is refused
/// naming the field (whatever else the generated calls draw).
async fn repeated_fields_at_their_caps(app: &TestApp, pools: &Pools) {
    let distribute = |members: usize| pb::DistributeCouponsRequest {
        tenant_id: "acme".into(),
        template_id: pools.templates[0].clone(),
        request_id: unique("cap"),
        member_ids: distinct_members(members),
        allow_partial: true,
    };
    let at_cap = cap_holds(MAX_DISTRIBUTION, "member_ids", |members| {
        let mut coupons = app.user_coupons();
        async move { coupons.distribute_coupons(distribute(members)).await }
    })
    .await;
    assert_eq!(at_cap.results.len(), MAX_DISTRIBUTION);

    cap_holds(CouponStatus::ALL.len(), "states", |n| {
        let mut coupons = app.user_coupons();
        async move {
            coupons
                .list_member_coupons(pb::ListMemberCouponsRequest {
                    tenant_id: "acme".into(),
                    member_id: "m1".into(),
                    states: enum_values(n),
                    ..Default::default()
                })
                .await
        }
    })
    .await;
    cap_holds(TxType::ALL.len(), "types", |n| {
        let mut points = app.points();
        async move {
            points
                .list_points_transactions(pb::ListPointsTransactionsRequest {
                    tenant_id: "acme".into(),
                    member_id: "m1".into(),
                    types: enum_values(n),
                    ..Default::default()
                })
                .await
        }
    })
    .await;
}

/// `call` with `cap` entries in `field` is accepted (its answer), and with one more refused
/// as INVALID_ARGUMENT naming exactly `field`.
async fn cap_holds<T, F, Fut>(cap: usize, field: &str, call: F) -> T
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    let at_cap = call(cap)
        .await
        .unwrap_or_else(|status| panic!("{field} at its cap of {cap}: {status:?}"))
        .into_inner();
    let past = call(cap + 1)
        .await
        .err()
        .unwrap_or_else(|| panic!("{field} past its cap"));
    assert_invalid(&past, &[field]);
    at_cap
}

/// The generated calls: three in five well-formed, the rest anything.
fn draws(pools: &Pools) -> impl Strategy<Value = Draw> + use<> {
    (
        0..RPCS,
        prop_oneof![3 => valid_ids(pools), 2 => ids(pools)],
        prop_oneof![3 => valid_values(), 2 => values()],
    )
        .prop_map(|(rpc, ids, values)| Draw { rpc, ids, values })
}

async fn generated_requests_never_fail_internally_and_keep_every_invariant(app: &TestApp) {
    let channel = keyed(&app.channel, None);
    let pools = seed(&channel).await;
    repeated_fields_at_their_caps(app, &pools).await;
    let strategy = draws(&pools);
    let mut runner = TestRunner::new(RunnerConfig {
        cases: CASES,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let handle = tokio::runtime::Handle::current();
    // Per RPC, the answers' codes: the generated calls must reach past validation too.
    let seen: std::sync::Mutex<HashMap<usize, HashMap<Code, usize>>> = Default::default();
    let result = tokio::task::block_in_place(|| {
        runner
            .run(&strategy, |draw| {
                let answer = handle.block_on(call(&channel, draw.clone()));
                let code = answer.as_ref().err().map_or(Code::Ok, Status::code);
                *seen
                    .lock()
                    .expect("stats")
                    .entry(draw.rpc)
                    .or_default()
                    .entry(code)
                    .or_default() += 1;
                check_answer(&draw, answer)
            })
            .map_err(|failure| failure.to_string())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let seen = seen.into_inner().expect("stats");
    let served: Vec<usize> = (0..RPCS)
        .filter(|rpc| {
            seen.get(rpc)
                .is_some_and(|codes| codes.contains_key(&Code::Ok))
        })
        .collect();
    let mut codes: HashMap<Code, usize> = HashMap::new();
    for per_rpc in seen.values() {
        for (code, n) in per_rpc {
            *codes.entry(*code).or_default() += n;
        }
    }
    eprintln!("generated calls: {codes:?}; RPCs answered OK at least once: {served:?}");
    assert!(
        served.len() >= RPCS * 2 / 3,
        "most RPCs were also called validly: {served:?}"
    );
    check_coupons(app).await;
    assert!(audit(app).await >= 4, "every account equals its ledger");
}

/// Generated calls per stream of the concurrent variant.
const STREAM_CASES: u32 = 200;

/// Where a failing stream's seed and minimal call are saved.
fn failure_file(stream: usize) -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    );
    let dir = target.join("generated-failures");
    std::fs::create_dir_all(&dir).expect("the failures' directory");
    dir.join(format!("concurrent-stream-{stream}.txt"))
}

/// The generated calls from four streams at once on two replicas sharing PostgreSQL and
/// Redis, each stream an API client whose key may act for one tenant (two per tenant, one on
/// each replica; a draw naming the other tenant is refused). Seeds are fixed, so a failure
/// replays; it is saved under `target/generated-failures/`. Afterwards every invariant of the
/// one-stream suite holds, and no row of one tenant points at another tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_from_four_streams_on_two_replicas_keep_every_invariant() {
    let first = spawn_app_with(
        Backend::PostgresRedis,
        Options {
            auth: Some(AuthMode::Required),
            ..Options::default()
        },
    )
    .await;
    let second = first.spawn_replica().await;
    let client = |name: String, tenant: Option<&'static str>| {
        let db = first.state.shared().db.clone();
        async move {
            clients::create_client(
                &db,
                &name,
                Role::Admin,
                tenant.map(|tenant| vec![tenant.to_owned()]),
                UnixMicros::now(),
            )
            .await
            .expect("create the client")
            .key
        }
    };
    let operator = client("gen-operator".into(), None).await;
    let pools = seed(&keyed(&first.channel, Some(&operator))).await;

    let mut streams = Vec::new();
    let replicas = [&first, &second, &first, &second];
    for (stream, tenant) in ["acme", "acme", "beta", "beta"].into_iter().enumerate() {
        let key = client(format!("gen-{tenant}-{stream}"), Some(tenant)).await;
        let channel = keyed(&replicas[stream].channel, Some(&key));
        let pools = pools.clone();
        let handle = tokio::runtime::Handle::current();
        streams.push(tokio::task::spawn_blocking(move || {
            let strategy = draws(&pools);
            let seed = [stream as u8 + 1; 32];
            let mut runner = TestRunner::new_with_rng(
                RunnerConfig {
                    cases: STREAM_CASES,
                    failure_persistence: None,
                    ..RunnerConfig::default()
                },
                TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
            );
            let served = std::sync::atomic::AtomicUsize::new(0);
            let result = runner.run(&strategy, |draw| {
                let answer = handle.block_on(call(&channel, draw.clone()));
                if answer.is_ok() {
                    served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                check_answer(&draw, answer)
            });
            if let Err(failure) = result {
                let file = failure_file(stream);
                let saved = format!("stream {stream} ({tenant}), seed {seed:?}\n{failure}\n");
                std::fs::write(&file, &saved).expect("save the failure");
                panic!("{saved}(saved in {})", file.display());
            }
            served.into_inner()
        }));
    }
    for (stream, handle) in streams.into_iter().enumerate() {
        let served = handle.await.expect("the stream ran through");
        assert!(served > 0, "stream {stream}: no call was served");
    }
    check_coupons(&first).await;
    assert!(audit(&first).await >= 4, "every account equals its ledger");
    assert_no_row_crosses_tenants(first.state.shared().db.conn()).await;
    second.stop().await;
    first.stop().await;
}
