//! Tenants acting at the same time on the same ids: a caller of one tenant naming another
//! tenant's template, with the same member ids, while that tenant claims it. Calls share
//! work (batches, locks, fences), so isolation is tested with both tenants at once: each gets
//! exactly what it would alone, and no row of one tenant is written for the other.

use marketing_domain::auth::Role;
use marketing_proto::v1 as pb;
use marketing_storage::entity::{coupon_template, user_coupon};
use marketing_tests::{Backend, Options, TestApp, assert_error, spawn_app_with, with_key};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::fixtures::{api_client, claim_request, create_request, template, unique};

const CALLERS: usize = 8;
const CLAIMS_EACH: usize = 30;

pub(crate) fn auth_required() -> Options {
    Options {
        auth: Some(marketing_server::config::AuthMode::Required),
        ..Options::default()
    }
}

/// Acme's template with stock for every claim, one per member.
async fn acme_template(app: &TestApp, admin: &str) -> String {
    let mut template = template();
    template.total_stock = 100_000;
    template.per_member_limit = 1;
    app.templates()
        .create_coupon_template(with_key(create_request("acme", template), admin))
        .await
        .expect("create acme's template")
        .into_inner()
        .coupon_template
        .expect("template")
        .id
}

/// The keys of acme's admin, acme's checkout client and globex's checkout client.
async fn tenant_keys(app: &TestApp) -> (String, String, String) {
    (
        api_client(app, "acme-admin", Role::Admin, Some(&["acme"])).await,
        api_client(app, "acme-checkout", Role::Checkout, Some(&["acme"])).await,
        api_client(app, "globex-checkout", Role::Checkout, Some(&["globex"])).await,
    )
}

/// `CALLERS` tasks of `CLAIMS_EACH` claims each of `template` for `tenant`, with member ids
/// both tenants use, spread over `channels`; every answer.
fn claim_storm(
    channels: &[Channel],
    key: &str,
    tenant: &'static str,
    template: &str,
) -> tokio::task::JoinSet<Vec<Result<pb::UserCoupon, tonic::Status>>> {
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let mut client = pb::user_coupon_service_client::UserCouponServiceClient::new(
            channels[caller % channels.len()].clone(),
        );
        let (key, template) = (key.to_owned(), template.to_owned());
        tasks.spawn(async move {
            let mut answers = Vec::with_capacity(CLAIMS_EACH);
            for i in 0..CLAIMS_EACH {
                let request = claim_request(tenant, &format!("member-{caller}-{i}"), &template);
                answers.push(
                    client
                        .claim_coupon(with_key(request, &key))
                        .await
                        .map(|r| r.into_inner().user_coupon.expect("coupon")),
                );
            }
            answers
        });
    }
    tasks
}

async fn answers<T: 'static>(
    mut tasks: tokio::task::JoinSet<Vec<Result<T, tonic::Status>>>,
) -> Vec<Result<T, tonic::Status>> {
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined.expect("caller task"));
    }
    all
}

/// Every one of acme's claims was served, every coupon of `template` is acme's, one per
/// claim, and the template's counters say the same.
async fn assert_only_acme_took(
    app: &TestApp,
    template: &str,
    own: &[Result<pb::UserCoupon, tonic::Status>],
) {
    for answer in own {
        let coupon = answer.as_ref().expect("acme's claims are all served");
        assert_eq!(coupon.tenant_id, "acme");
    }
    let granted = own.len();
    assert_eq!(granted, CALLERS * CLAIMS_EACH);
    let id = Uuid::parse_str(template).expect("uuid");
    let coupons = user_coupon::Entity::find()
        .filter(user_coupon::Column::TemplateId.eq(id))
        .all(app.state.shared().db.conn())
        .await
        .expect("coupons");
    assert_eq!(coupons.len(), granted, "one coupon per granted claim");
    assert!(
        coupons.iter().all(|c| c.tenant_id == "acme"),
        "every coupon's tenant is its template's"
    );
    let globex = user_coupon::Entity::find()
        .filter(user_coupon::Column::TenantId.eq("globex"))
        .all(app.state.shared().db.conn())
        .await
        .expect("globex coupons");
    assert!(globex.is_empty(), "nothing written for globex: {globex:?}");
    let row = coupon_template::Entity::find_by_id(id)
        .one(app.state.shared().db.conn())
        .await
        .expect("template")
        .expect("exists");
    assert_eq!(row.claimed_count, granted as i64);
    assert_eq!(row.remaining_stock, row.total_stock - granted as i64);
}

/// The reproduction of the urgent issue: globex's checkout client claims acme's template id,
/// with the same member ids, while acme's own client claims it. On `replicas` servers sharing
/// one database (acme's calls and globex's on both).
async fn another_tenants_claims_take_nothing(replicas: &[&TestApp]) {
    let app = replicas[0];
    let (admin, acme, globex) = tenant_keys(app).await;
    let template = acme_template(app, &admin).await;
    let channels: Vec<Channel> = replicas.iter().map(|r| r.channel.clone()).collect();
    let hostile = claim_storm(&channels, &globex, "globex", &template);
    let own = claim_storm(&channels, &acme, "acme", &template);
    let (hostile, own) = tokio::join!(answers(hostile), answers(own));
    for answer in &hostile {
        let status = answer.as_ref().expect_err("globex has no such template");
        assert_error(status, Code::NotFound, "TEMPLATE_NOT_FOUND");
    }
    assert_only_acme_took(app, &template, &own).await;
}

async fn another_tenants_claims_take_nothing_from_one_server(app: &TestApp) {
    another_tenants_claims_take_nothing(&[app]).await;
}

/// The same, with distributions: globex's client distributes acme's template id to the
/// members acme claims for, while acme claims.
async fn another_tenants_distributions_take_nothing(app: &TestApp) {
    let (admin, acme, _) = tenant_keys(app).await;
    // Distributing is an admin's: globex's admin, acting for globex only.
    let globex = api_client(app, "globex-admin", Role::Admin, Some(&["globex"])).await;
    let template = acme_template(app, &admin).await;
    let channels = vec![app.channel.clone()];
    let own = claim_storm(&channels, &acme, "acme", &template);
    let mut hostile = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let mut client = app.user_coupons();
        let (key, template) = (globex.clone(), template.clone());
        hostile.spawn(async move {
            let mut answers = Vec::new();
            for round in 0..3 {
                let members = (0..CLAIMS_EACH)
                    .map(|i| format!("member-{caller}-{i}"))
                    .collect();
                let request = pb::DistributeCouponsRequest {
                    tenant_id: "globex".into(),
                    template_id: template.clone(),
                    request_id: unique(&format!("distribute-{round}")),
                    member_ids: members,
                    allow_partial: round % 2 == 0,
                };
                answers.push(client.distribute_coupons(with_key(request, &key)).await);
            }
            answers
        });
    }
    let (hostile, own) = tokio::join!(answers(hostile), answers(own));
    for answer in &hostile {
        let status = answer.as_ref().expect_err("globex has no such template");
        assert_error(status, Code::NotFound, "TEMPLATE_NOT_FOUND");
    }
    assert_only_acme_took(app, &template, &own).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_claims_take_nothing_across_two_replicas() {
    let first = spawn_app_with(Backend::PostgresRedis, auth_required()).await;
    let second = first.spawn_replica().await;
    another_tenants_claims_take_nothing(&[&first, &second]).await;
    second.stop().await;
    first.stop().await;
}

marketing_tests::backend_suite! {
    with super::auth_required();
    another_tenants_claims_take_nothing_from_one_server,
    another_tenants_distributions_take_nothing,
}
