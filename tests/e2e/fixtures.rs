//! Valid requests to start from; tests change one thing at a time.

use marketing_proto::v1::{self as pb, coupon_template};
use prost_types::Timestamp;

pub const DAY: i64 = 86_400;

pub fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

/// Exactly `millis` from now (not rounded to seconds, so "in one second" is a full second).
pub fn after_millis(millis: i64) -> Option<Timestamp> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let target = now.as_millis() as i64 + millis;
    Some(Timestamp {
        seconds: target.div_euclid(1000),
        nanos: (target.rem_euclid(1000) * 1_000_000) as i32,
    })
}

pub fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// A percent-off template distributed for a year around now, valid 30 days after claim.
pub fn template() -> pb::CouponTemplate {
    let now = now_seconds();
    pb::CouponTemplate {
        name: "Spring 10%".into(),
        description: "10% off, at most 5.00".into(),
        discount: Some(coupon_template::Discount::PercentOff(
            pb::PercentOffDiscount {
                basis_points: 1000,
                max_discount_amount: Some(500),
                ..Default::default()
            },
        )),
        currency: "EUR".into(),
        min_spend_amount: 2000,
        total_stock: 100,
        per_member_limit: 2,
        distribution_start_time: at(now - 180 * DAY),
        distribution_end_time: at(now + 180 * DAY),
        validity: Some(coupon_template::Validity::Relative(pb::RelativeValidity {
            valid_days: 30,
        })),
        enabled: true,
        ..Default::default()
    }
}

pub fn create_request(
    tenant: &str,
    template: pb::CouponTemplate,
) -> pb::CreateCouponTemplateRequest {
    pb::CreateCouponTemplateRequest {
        tenant_id: tenant.into(),
        request_id: unique("create"),
        coupon_template: Some(template),
    }
}

pub async fn create_template(
    app: &marketing_tests::TestApp,
    tenant: &str,
    template: pb::CouponTemplate,
) -> pb::CouponTemplate {
    app.templates()
        .create_coupon_template(create_request(tenant, template))
        .await
        .expect("create template")
        .into_inner()
        .coupon_template
        .expect("template")
}

pub fn claim_request(tenant: &str, member: &str, template_id: &str) -> pb::ClaimCouponRequest {
    pb::ClaimCouponRequest {
        tenant_id: tenant.into(),
        member_id: member.into(),
        template_id: template_id.into(),
        request_id: unique("claim"),
    }
}

pub async fn claim(
    app: &marketing_tests::TestApp,
    tenant: &str,
    member: &str,
    template_id: &str,
) -> Result<pb::UserCoupon, tonic::Status> {
    app.user_coupons()
        .claim_coupon(claim_request(tenant, member, template_id))
        .await
        .map(|r| r.into_inner().user_coupon.expect("coupon"))
}

/// A new API client's key: `role`, acting for `tenants` (all tenants when `None`).
pub async fn api_client(
    app: &marketing_tests::TestApp,
    name: &str,
    role: marketing_domain::auth::Role,
    tenants: Option<&[&str]>,
) -> String {
    let tenants = tenants.map(|t| t.iter().map(|s| s.to_string()).collect());
    marketing_server::app::clients::create_client(
        &app.state.shared().db,
        name,
        role,
        tenants,
        marketing_domain::UnixMicros::now(),
    )
    .await
    .expect("create the client")
    .key
}

/// Every event of `tenant`, as `ListEvents` pages them (on `channel`).
pub async fn listed_events(channel: &tonic::transport::Channel, tenant: &str) -> Vec<pb::Event> {
    let mut events =
        marketing_proto::v1::event_service_client::EventServiceClient::new(channel.clone());
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = events
            .list_events(pb::ListEventsRequest {
                tenant_id: tenant.into(),
                after_position: after,
                page_size: 1000,
                ..Default::default()
            })
            .await
            .expect("list events")
            .into_inner();
        if page.events.is_empty() {
            return all;
        }
        after = page.last_position;
        all.extend(page.events);
    }
}
