//! The scenarios. Each sets up its own data in a fresh tenant, then runs the load; some also
//! verify what the service did (a sell-out must claim exactly the stock).

use std::{sync::Arc, time::Duration};

use marketing_proto::v1::{
    self as pb, coupon_template_service_client::CouponTemplateServiceClient,
    points_account_service_client::PointsAccountServiceClient,
    tenant_settings_service_client::TenantSettingsServiceClient,
    user_coupon_service_client::UserCouponServiceClient,
};
use serde_json::{Value, json};
use tonic::Code;

use crate::runner::Conn;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::runner::{LoadOptions, Run, run};

pub const NAMES: [&str; 13] = [
    "health",
    "get-template",
    "claim-hot",
    "claim-code",
    "price-order",
    "applicable-coupons",
    "generate-codes",
    "claim-sellout",
    "deduct-spread",
    "deduct-hot",
    "earn-expiring",
    "list-coupons",
    "mixed",
];

const SELLOUT_STOCK: i64 = 10_000;
/// Unique codes claim-code generates: more than a run claims (claim-hot's rate for its
/// length), so that every claim finds an unclaimed code.
const CLAIM_CODES: i32 = 200_000;
/// Codes generate-codes makes in one call (the most one call may ask for).
const GENERATED_CODES: i32 = 1_000_000;
const SPREAD_ACCOUNTS: u64 = 10_000;
const LIST_MEMBERS: u64 = 100;
const COUPONS_PER_MEMBER: i32 = 50;
/// price-order: members each holding one coupon of each of the checkout templates, and the
/// lines of a cart.
const PRICE_MEMBERS: u64 = 100;
const CART_LINES: usize = 20;
/// applicable-coupons: members each holding this many copies of each checkout template
/// (fifty coupons: the most ListApplicableCoupons combines).
const APPLICABLE_COPIES: i32 = 5;

/// Ten checkout templates, each `copies` per member: product coupons on categories (one
/// group), order coupons (another group, after), free shipping, a buy-two-get-one, and an
/// exclusive one.
fn checkout_templates(copies: i32) -> Vec<pb::CouponTemplate> {
    use pb::coupon_template::Discount;
    let stacking = |group: &str, order: i32| {
        Some(pb::Stacking {
            policy: pb::StackingPolicy::Stackable.into(),
            group: group.into(),
            group_order: order,
        })
    };
    let category = |c: usize| {
        Some(pb::ProductScope {
            category_ids: vec![format!("c{c}")],
            ..Default::default()
        })
    };
    let mut templates = Vec::new();
    for c in 0..4 {
        templates.push(pb::CouponTemplate {
            discount: Some(Discount::PercentOff(pb::PercentOffDiscount {
                basis_points: 1000 + 500 * c as i32,
                ..Default::default()
            })),
            scope: category(c),
            stacking: stacking("product", 0),
            ..template(1_000_000, copies)
        });
    }
    for amount in [500, 1_000, 1_500] {
        templates.push(pb::CouponTemplate {
            discount: Some(Discount::FixedAmount(pb::FixedAmountDiscount {
                amount,
                ..Default::default()
            })),
            min_spend_amount: amount * 10,
            stacking: stacking("order", 10),
            ..template(1_000_000, copies)
        });
    }
    templates.push(pb::CouponTemplate {
        discount: Some(Discount::FreeShipping(pb::FreeShippingDiscount {
            max_discount_amount: None,
        })),
        stacking: stacking("shipping", 20),
        ..template(1_000_000, copies)
    });
    templates.push(pb::CouponTemplate {
        discount: Some(Discount::BuyGet(pb::BuyGetDiscount {
            buy_quantity: 2,
            get_quantity: 1,
            basis_points: 10_000,
            ..Default::default()
        })),
        scope: category(1),
        stacking: stacking("product", 0),
        ..template(1_000_000, copies)
    });
    templates.push(pb::CouponTemplate {
        discount: Some(Discount::PercentOff(pb::PercentOffDiscount {
            basis_points: 2500,
            max_discount_amount: Some(5_000),
            ..Default::default()
        })),
        stacking: Some(pb::Stacking {
            policy: pb::StackingPolicy::Exclusive.into(),
            ..Default::default()
        }),
        ..template(1_000_000, copies)
    });
    templates
}

/// [`PRICE_MEMBERS`] members holding `copies` coupons of each checkout template, a points
/// balance, and the tenant's points program: each member's coupon ids, as checkout would have
/// them from ListMemberCoupons.
async fn checkout_members(
    setup: &Setup,
    channel: &Conn,
    copies: i32,
) -> anyhow::Result<Vec<Vec<String>>> {
    let members: Vec<String> = (0..PRICE_MEMBERS).map(|m| format!("buyer-{m}")).collect();
    for template in checkout_templates(copies) {
        let id = CouponTemplateServiceClient::new(channel.clone())
            .create_coupon_template(pb::CreateCouponTemplateRequest {
                tenant_id: setup.tenant.clone(),
                request_id: setup.request_id("template"),
                coupon_template: Some(template),
            })
            .await?
            .into_inner()
            .coupon_template
            .map(|t| t.id)
            .unwrap_or_default();
        for _ in 0..copies {
            UserCouponServiceClient::new(channel.clone())
                .distribute_coupons(pb::DistributeCouponsRequest {
                    tenant_id: setup.tenant.clone(),
                    template_id: id.clone(),
                    request_id: setup.request_id("gift"),
                    member_ids: members.clone(),
                    allow_partial: false,
                })
                .await?;
        }
    }
    setup.fund("buyer-", PRICE_MEMBERS, 100_000).await?;
    TenantSettingsServiceClient::new(channel.clone())
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            tenant_id: setup.tenant.clone(),
            request_id: setup.request_id("settings"),
            tenant_settings: Some(pb::TenantSettings {
                points_values: vec![pb::PointsValue {
                    currency: "EUR".into(),
                    points: 100,
                    amount: 100,
                }],
                max_points_share_bp: 5_000,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["points_values".into(), "max_points_share_bp".into()],
            }),
        })
        .await?;
    // Each member's coupon ids, as checkout would have them from ListMemberCoupons.
    let mut held = Vec::new();
    for member in &members {
        let page = UserCouponServiceClient::new(channel.clone())
            .list_member_coupons(pb::ListMemberCouponsRequest {
                tenant_id: setup.tenant.clone(),
                member_id: member.clone(),
                page_size: 100,
                ..Default::default()
            })
            .await?
            .into_inner();
        held.push(
            page.user_coupons
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>(),
        );
    }
    Ok(held)
}

/// A cart of [`CART_LINES`] lines over five categories and four brands.
fn cart_lines() -> Vec<pb::CartLine> {
    (0..CART_LINES)
        .map(|i| pb::CartLine {
            line_id: format!("l{i}"),
            product_id: format!("p{i}"),
            category_ids: vec![format!("c{}", i % 5)],
            brand_id: format!("b{}", i % 4),
            unit_price: 500 + 250 * i as i64,
            quantity: 1 + (i % 3) as i64,
        })
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn template(stock: i64, per_member_limit: i32) -> pb::CouponTemplate {
    pb::CouponTemplate {
        name: "bench".into(),
        discount: Some(pb::coupon_template::Discount::FixedAmount(
            pb::FixedAmountDiscount {
                amount: 100,
                ..Default::default()
            },
        )),
        currency: "EUR".into(),
        total_stock: stock,
        per_member_limit,
        distribution_start_time: Some(prost_types::Timestamp {
            seconds: now() - 3600,
            nanos: 0,
        }),
        distribution_end_time: Some(prost_types::Timestamp {
            seconds: now() + 86_400,
            nanos: 0,
        }),
        validity: Some(pb::coupon_template::Validity::Relative(
            pb::RelativeValidity { valid_days: 30 },
        )),
        enabled: true,
        ..Default::default()
    }
}

struct Setup {
    tenant: String,
    channel: Conn,
}

impl Setup {
    fn request_id(&self, what: &str) -> String {
        format!("{what}-{}", uuid::Uuid::now_v7().simple())
    }

    async fn template(&self, stock: i64, per_member_limit: i32) -> anyhow::Result<String> {
        let created = CouponTemplateServiceClient::new(self.channel.clone())
            .create_coupon_template(pb::CreateCouponTemplateRequest {
                tenant_id: self.tenant.clone(),
                request_id: self.request_id("template"),
                coupon_template: Some(template(stock, per_member_limit)),
            })
            .await?
            .into_inner();
        Ok(created.coupon_template.map(|t| t.id).unwrap_or_default())
    }

    /// Template `id` as the service shows it.
    async fn shown(&self, id: String) -> anyhow::Result<pb::CouponTemplate> {
        Ok(CouponTemplateServiceClient::new(self.channel.clone())
            .get_coupon_template(pb::GetCouponTemplateRequest {
                tenant_id: self.tenant.clone(),
                template_id: id,
            })
            .await?
            .into_inner()
            .coupon_template
            .unwrap_or_default())
    }

    /// Generates `count` unique codes of template `id`; how long it took. A call cut by the
    /// server's call timeout is retried with its request id, as a client would: the retry
    /// waits for the same generation.
    async fn generate(&self, id: &str, count: i32) -> anyhow::Result<Duration> {
        let request = pb::GenerateCouponCodesRequest {
            tenant_id: self.tenant.clone(),
            request_id: self.request_id("codes"),
            template_id: id.to_owned(),
            count,
            prefix: "B".into(),
            length: 10,
        };
        let started = std::time::Instant::now();
        loop {
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(SETUP_TIMEOUT);
            match CouponTemplateServiceClient::new(self.channel.clone())
                .generate_coupon_codes(call)
                .await
            {
                Ok(_) => return Ok(started.elapsed()),
                // Cut by a deadline (the server's DEADLINE_EXCEEDED, or CANCELLED when its
                // timer fired first), or unavailable for a moment: retried with the same
                // request id, as a client would.
                Err(status)
                    if matches!(
                        status.code(),
                        Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable
                    ) && started.elapsed() < SETUP_TIMEOUT => {}
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// Generates `count` unique codes of template `id` and reads them back.
    async fn codes(&self, id: &str, count: i32) -> anyhow::Result<Vec<String>> {
        self.generate(id, count).await?;
        let mut templates = CouponTemplateServiceClient::new(self.channel.clone());
        let mut codes = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut page_token = String::new();
        loop {
            let page = templates
                .list_coupon_codes(pb::ListCouponCodesRequest {
                    tenant_id: self.tenant.clone(),
                    template_id: id.to_owned(),
                    page_size: 1_000,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            codes.extend(page.coupon_codes.into_iter().map(|code| code.code));
            if page.next_page_token.is_empty() {
                return Ok(codes);
            }
            page_token = page.next_page_token;
        }
    }

    /// Funds `members` accounts with `points` each, 64 at a time.
    async fn fund(&self, prefix: &str, members: u64, points: i64) -> anyhow::Result<()> {
        let load = LoadOptions {
            concurrency: 64,
            connections: 1,
            total: Some(members),
            duration: None,
            rps: None,
            expire_at: None,
        };
        let tenant = self.tenant.clone();
        let prefix = prefix.to_owned();
        let funded = run(
            &load,
            std::slice::from_ref(&self.channel),
            move |channel, i| {
                let request = pb::EarnPointsRequest {
                    tenant_id: tenant.clone(),
                    member_id: format!("{prefix}{i}"),
                    request_id: format!("fund-{prefix}{i}"),
                    source: Some(pb::earn_points_request::Source::Amount(points)),
                    ..Default::default()
                };
                async move {
                    PointsAccountServiceClient::new(channel)
                        .earn_points(request)
                        .await
                        .map(|_| ())
                }
            },
        )
        .await;
        let failed = funded.samples.iter().filter(|s| s.code != Code::Ok).count();
        anyhow::ensure!(failed == 0, "{failed} accounts could not be funded");
        Ok(())
    }
}

/// Runs `name` and returns the run and what the scenario measured or verified.
pub async fn run_scenario(
    name: &str,
    tenant: &str,
    channels: &[Conn],
    load: &LoadOptions,
) -> anyhow::Result<(Run, Value)> {
    let setup = Setup {
        tenant: tenant.to_owned(),
        channel: channels[0].clone(),
    };
    let tenant = Arc::new(tenant.to_owned());
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    match name {
        "health" => {
            let result = run(load, channels, |channel, _| async move {
                HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                    .map(|_| ())
            })
            .await;
            Ok((result, json!({})))
        }
        "get-template" => {
            let id = Arc::new(setup.template(1_000, 1).await?);
            let result = run(load, channels, move |channel, _| {
                let request = pb::GetCouponTemplateRequest {
                    tenant_id: tenant.to_string(),
                    template_id: id.to_string(),
                };
                async move {
                    CouponTemplateServiceClient::new(channel)
                        .get_coupon_template(request)
                        .await
                        .map(|_| ())
                }
            })
            .await;
            Ok((result, json!({})))
        }
        "claim-hot" | "claim-sellout" => {
            let sellout = name == "claim-sellout";
            let stock = if sellout {
                SELLOUT_STOCK
            } else {
                1_000_000_000
            };
            let id = setup.template(stock, 1).await?;
            let template_id = Arc::new(id.clone());
            let mut load = load.clone();
            if sellout {
                // Five claimants for every coupon, each member once.
                load.total = Some(5 * SELLOUT_STOCK as u64);
                load.duration = None;
            }
            let result = run(&load, channels, claims(tenant, template_id, run_id)).await;
            let shown = setup.shown(id).await?;
            let granted = result.samples.iter().filter(|s| s.code == Code::Ok).count() as i64;
            let refused_otherwise = result
                .samples
                .iter()
                .filter(|s| !matches!(s.code, Code::Ok | Code::ResourceExhausted))
                .count();
            let sold_out_at = result
                .samples
                .iter()
                .filter(|s| s.code == Code::Ok)
                .map(|s| s.at)
                .max()
                .unwrap_or_default();
            let exact = shown.claimed_count == granted
                && shown.remaining_stock + shown.claimed_count == shown.total_stock
                && (!sellout || granted == SELLOUT_STOCK);
            Ok((
                result,
                json!({
                    "granted": granted,
                    "claimed_count": shown.claimed_count,
                    "remaining_stock": shown.remaining_stock,
                    "total_stock": shown.total_stock,
                    "refused_for_other_reasons": refused_otherwise,
                    "sold_out_after_seconds": sold_out_at.as_secs_f64(),
                    "verified": exact && refused_otherwise == 0,
                }),
            ))
        }
        "claim-code" => {
            let id = setup.template(1_000_000_000, 1).await?;
            let codes = Arc::new(setup.codes(&id, CLAIM_CODES).await?);
            let run_id = Arc::new(run_id);
            let result = run(load, channels, move |channel, i| {
                // Codes typed as people do: lower case.
                let code = codes[(i % codes.len() as u64) as usize].to_lowercase();
                let request = pb::ClaimCouponByCodeRequest {
                    tenant_id: tenant.to_string(),
                    member_id: format!("m{i}"),
                    code,
                    request_id: format!("code-{run_id}-{i}"),
                };
                async move {
                    UserCouponServiceClient::new(channel)
                        .claim_coupon_by_code(request)
                        .await
                        .map(|_| ())
                }
            })
            .await;
            let shown = setup.shown(id).await?;
            let granted = result.samples.iter().filter(|s| s.code == Code::Ok).count() as i64;
            let codes_claimed = shown.unique_code_count - shown.available_unique_code_count;
            Ok((
                result,
                json!({
                    "codes": CLAIM_CODES,
                    "granted": granted,
                    "claimed_count": shown.claimed_count,
                    "codes_claimed": codes_claimed,
                    "verified": shown.claimed_count == granted && codes_claimed == granted,
                }),
            ))
        }
        // A million codes generated for one template while members claim another's: how
        // long the generation takes, and the claims' rate and latency meanwhile.
        "generate-codes" => {
            let claimed = setup.template(1_000_000_000, 1).await?;
            let coded = setup.template(1_000, 1).await?;
            let generating = {
                let setup = Setup {
                    tenant: setup.tenant.clone(),
                    channel: setup.channel.clone(),
                };
                tokio::spawn(async move { setup.generate(&coded, GENERATED_CODES).await })
            };
            let result = run(load, channels, claims(tenant, Arc::new(claimed), run_id)).await;
            let claims_ended_early = generating.is_finished();
            let took = generating.await??;
            Ok((
                result,
                json!({
                    "codes": GENERATED_CODES,
                    "generation_seconds": took.as_secs_f64(),
                    "claims_overlapped_generation": !claims_ended_early,
                }),
            ))
        }
        "deduct-spread" | "deduct-hot" => {
            let hot = name == "deduct-hot";
            let accounts = if hot { 1 } else { SPREAD_ACCOUNTS };
            setup.fund("acct-", accounts, 1_000_000_000).await?;
            let run_id = Arc::new(run_id);
            let result = run(load, channels, move |channel, i| {
                let request = pb::DeductPointsRequest {
                    tenant_id: tenant.to_string(),
                    member_id: format!("acct-{}", i % accounts),
                    request_id: format!("deduct-{run_id}-{i}"),
                    amount: 1,
                    ..Default::default()
                };
                async move {
                    PointsAccountServiceClient::new(channel)
                        .deduct_points(request)
                        .await
                        .map(|_| ())
                }
            })
            .await;
            let aborted = result
                .samples
                .iter()
                .filter(|s| s.code == Code::Aborted)
                .count();
            Ok((
                result,
                json!({ "accounts": accounts, "concurrent_modification": aborted }),
            ))
        }
        "earn-expiring" => {
            // Each call a new member's first points, all expiring at one time: the data of a
            // mass expiry (scripts/mass-expiry.sh times its sweep).
            let expire_at = load.expire_at.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |now| now.as_secs() as i64)
                    + 120
            });
            let run_id = Arc::new(run_id);
            let result = run(load, channels, move |channel, i| {
                let request = pb::EarnPointsRequest {
                    tenant_id: tenant.to_string(),
                    member_id: format!("expiring-{run_id}-{i}"),
                    request_id: format!("earn-{run_id}-{i}"),
                    source: Some(pb::earn_points_request::Source::Amount(100)),
                    expire_time: Some(prost_types::Timestamp {
                        seconds: expire_at,
                        nanos: 0,
                    }),
                    ..Default::default()
                };
                async move {
                    PointsAccountServiceClient::new(channel)
                        .earn_points(request)
                        .await
                        .map(|_| ())
                }
            })
            .await;
            Ok((result, json!({ "expire_at": expire_at })))
        }
        "price-order" => {
            let held = Arc::new(checkout_members(&setup, &channels[0], 1).await?);
            let lines = Arc::new(cart_lines());
            let result = run(load, channels, move |channel, i| {
                let m = (i % PRICE_MEMBERS) as usize;
                let request = pb::PriceOrderRequest {
                    tenant_id: tenant.to_string(),
                    member_id: format!("buyer-{m}"),
                    currency: "EUR".into(),
                    lines: lines.to_vec(),
                    shipping_amount: 490,
                    coupon_ids: held[m].clone(),
                    points_to_redeem: 2_000,
                    order_id: String::new(),
                };
                async move {
                    let priced = UserCouponServiceClient::new(channel)
                        .price_order(request)
                        .await?;
                    let priced = priced.get_ref();
                    // Ten coupons asked: each applied or rejected, and something taken off.
                    if priced.coupons.len() + priced.rejected_coupons.len() == 10
                        && priced.discount_amount > 0
                    {
                        Ok(())
                    } else {
                        Err(tonic::Status::data_loss("an unpriced cart"))
                    }
                }
            })
            .await;
            Ok((
                result,
                json!({ "members": PRICE_MEMBERS, "coupons_each": 10, "lines": CART_LINES }),
            ))
        }
        // Checkout's "which of my coupons fit this cart": fifty coupons of ten templates per
        // member, a cart of twenty lines; each answer checked for a best combination.
        "applicable-coupons" => {
            let held = checkout_members(&setup, &channels[0], APPLICABLE_COPIES).await?;
            let held = held.iter().map(Vec::len).min().unwrap_or(0);
            let lines = Arc::new(cart_lines());
            let result = run(load, channels, move |channel, i| {
                let request = pb::ListApplicableCouponsRequest {
                    tenant_id: tenant.to_string(),
                    member_id: format!("buyer-{}", i % PRICE_MEMBERS),
                    currency: "EUR".into(),
                    lines: lines.to_vec(),
                    shipping_amount: 490,
                    order_id: String::new(),
                };
                async move {
                    let listed = UserCouponServiceClient::new(channel)
                        .list_applicable_coupons(request)
                        .await?;
                    let listed = listed.get_ref();
                    if !listed.coupons.is_empty()
                        && !listed.best_combination.is_empty()
                        && listed.best_discount_amount > 0
                    {
                        Ok(())
                    } else {
                        Err(tonic::Status::data_loss("no combination for the cart"))
                    }
                }
            })
            .await;
            Ok((
                result,
                json!({ "members": PRICE_MEMBERS, "coupons_each": held, "lines": CART_LINES }),
            ))
        }
        "list-coupons" => {
            let id = setup
                .template(
                    LIST_MEMBERS as i64 * i64::from(COUPONS_PER_MEMBER),
                    COUPONS_PER_MEMBER,
                )
                .await?;
            let members: Vec<String> = (0..LIST_MEMBERS).map(|m| format!("holder-{m}")).collect();
            for _ in 0..COUPONS_PER_MEMBER {
                UserCouponServiceClient::new(channels[0].clone())
                    .distribute_coupons(pb::DistributeCouponsRequest {
                        tenant_id: setup.tenant.clone(),
                        template_id: id.clone(),
                        request_id: setup.request_id("gift"),
                        member_ids: members.clone(),
                        allow_partial: false,
                    })
                    .await?;
            }
            let result = run(load, channels, move |channel, i| {
                let request = pb::ListMemberCouponsRequest {
                    tenant_id: tenant.to_string(),
                    member_id: format!("holder-{}", i % LIST_MEMBERS),
                    page_size: 20,
                    ..Default::default()
                };
                async move {
                    let page = UserCouponServiceClient::new(channel)
                        .list_member_coupons(request)
                        .await?;
                    if page.get_ref().user_coupons.len() == 20 {
                        Ok(())
                    } else {
                        Err(tonic::Status::data_loss("a page of 20 was expected"))
                    }
                }
            })
            .await;
            Ok((
                result,
                json!({ "members": LIST_MEMBERS, "coupons_each": COUPONS_PER_MEMBER }),
            ))
        }
        "mixed" => {
            let id = Arc::new(setup.template(1_000_000_000, 1).await?);
            setup.fund("shopper-", 1_000, 1_000_000).await?;
            let run_id = Arc::new(run_id);
            // A consumer of the tenant's events all the while (on the first connection).
            let consumer = crate::consumer::Consumer::start(channels[0].clone(), &tenant).await?;
            let result = run(load, channels, move |channel, i| {
                let tenant = tenant.to_string();
                let id = id.to_string();
                let member = format!("shopper-{}", i % 1_000);
                let request_id = format!("mixed-{run_id}-{i}");
                async move { checkout_step(channel, i, tenant, id, member, request_id).await }
            })
            .await;
            let stream = consumer.finish(Duration::from_secs(30)).await?;
            Ok((
                result,
                json!({
                    "mix": "40% get template, 10% claim, 10% validate-like list, 20% earn and 10% deduct for an order, 10% account",
                    "event_stream": stream,
                }),
            ))
        }
        other => anyhow::bail!("unknown scenario {other:?}; one of {NAMES:?}"),
    }
}

/// The load of claims of one template, each by a member of its own (`m{i}`).
fn claims(
    tenant: Arc<String>,
    template_id: Arc<String>,
    run_id: String,
) -> impl Fn(Conn, u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    let run_id = Arc::new(run_id);
    move |channel, i| {
        let request = pb::ClaimCouponRequest {
            tenant_id: tenant.to_string(),
            member_id: format!("m{i}"),
            template_id: template_id.to_string(),
            request_id: format!("claim-{run_id}-{i}"),
        };
        Box::pin(async move {
            UserCouponServiceClient::new(channel)
                .claim_coupon(request)
                .await
                .map(|_| ())
        })
    }
}

/// One step of a checkout-like mix.
async fn checkout_step(
    channel: Conn,
    i: u64,
    tenant: String,
    template_id: String,
    member: String,
    request_id: String,
) -> Result<(), tonic::Status> {
    match i % 10 {
        0..=3 => CouponTemplateServiceClient::new(channel)
            .get_coupon_template(pb::GetCouponTemplateRequest {
                tenant_id: tenant,
                template_id,
            })
            .await
            .map(|_| ()),
        4 => UserCouponServiceClient::new(channel)
            .claim_coupon(pb::ClaimCouponRequest {
                tenant_id: tenant,
                member_id: format!("claimer-{i}"),
                template_id,
                request_id,
            })
            .await
            .map(|_| ()),
        5 => UserCouponServiceClient::new(channel)
            .list_member_coupons(pb::ListMemberCouponsRequest {
                tenant_id: tenant,
                member_id: member,
                page_size: 20,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        // Checkouts earn and pay with points for an order, which each may do only once.
        6 | 7 => PointsAccountServiceClient::new(channel)
            .earn_points(pb::EarnPointsRequest {
                tenant_id: tenant,
                member_id: member,
                source: Some(pb::earn_points_request::Source::Amount(10)),
                biz_type: "order".into(),
                biz_id: request_id.clone(),
                request_id,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        8 => PointsAccountServiceClient::new(channel)
            .deduct_points(pb::DeductPointsRequest {
                tenant_id: tenant,
                member_id: member,
                amount: 1,
                biz_type: "order".into(),
                biz_id: request_id.clone(),
                request_id,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        _ => PointsAccountServiceClient::new(channel)
            .get_points_account(pb::GetPointsAccountRequest {
                tenant_id: tenant,
                member_id: member,
            })
            .await
            .map(|_| ()),
    }
}

/// How long `setup` may take before the bench gives up (10,000 funded accounts included).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(300);
