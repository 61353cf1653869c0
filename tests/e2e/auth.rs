//! Callers: every call of the marketing services needs an active client's key; its role
//! decides the methods, its tenants the tenants; refusals come before any work and write
//! nothing; health and reflection stay open; a revoked key is refused by every replica within
//! seconds; a server on a public address with no client refuses to start.

use std::time::{Duration, Instant};

use marketing_domain::{UnixMicros, auth::Role};
use marketing_proto::v1 as pb;
use marketing_server::{Server, app::clients, config::AuthMode};
use marketing_tests::{TestApp, assert_error, with_key};
use tonic::Code;

use crate::fixtures::{api_client as client, claim_request, create_request, template, unique};

fn earn(tenant: &str, member: &str) -> pb::EarnPointsRequest {
    pb::EarnPointsRequest {
        tenant_id: tenant.into(),
        member_id: member.into(),
        request_id: unique("earn"),
        source: Some(pb::earn_points_request::Source::Amount(10)),
        ..Default::default()
    }
}

fn get_account(tenant: &str, member: &str) -> pb::GetPointsAccountRequest {
    pb::GetPointsAccountRequest {
        tenant_id: tenant.into(),
        member_id: member.into(),
    }
}

async fn calls_need_an_active_clients_key(app: &TestApp) {
    let admin = client(app, "admin", Role::Admin, None).await;
    let mut points = app.points();
    let refused = points
        .earn_points(earn("acme", "m1"))
        .await
        .expect_err("no key");
    assert_error(&refused, Code::Unauthenticated, "UNAUTHENTICATED");
    let made_up = format!("mk_{}_{}", "a".repeat(12), "b".repeat(43));
    let wrong_secret = format!("{}{}", &admin[..admin.len() - 43], "c".repeat(43));
    for key in ["", "not-a-key", made_up.as_str(), wrong_secret.as_str()] {
        let refused = points
            .earn_points(with_key(earn("acme", "m1"), key))
            .await
            .expect_err("a bad key");
        assert_error(&refused, Code::Unauthenticated, "UNAUTHENTICATED");
    }
    // Nothing was written by the refused calls.
    let missing = points
        .get_points_account(with_key(get_account("acme", "m1"), &admin))
        .await
        .expect_err("no account");
    assert_eq!(missing.code(), Code::NotFound);
    points
        .earn_points(with_key(earn("acme", "m1"), &admin))
        .await
        .expect("the admin's key");
    // Health stays open for load balancers.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no key");
}

async fn roles_allow_their_methods_only(app: &TestApp) {
    let admin = client(app, "ops", Role::Admin, None).await;
    let checkout = client(app, "checkout-eu", Role::Checkout, Some(&["acme"])).await;
    let reader = client(app, "reports", Role::Reader, Some(&["acme"])).await;
    let mut templates = app.templates();
    let mut coupons = app.user_coupons();
    let mut points = app.points();

    for key in [&checkout, &reader] {
        let refused = templates
            .create_coupon_template(with_key(create_request("acme", template()), key))
            .await
            .expect_err("only admins create templates");
        assert_error(&refused, Code::PermissionDenied, "METHOD_NOT_ALLOWED");
    }
    let created = templates
        .create_coupon_template(with_key(create_request("acme", template()), &admin))
        .await
        .expect("admin")
        .into_inner()
        .coupon_template
        .expect("template");
    let distribute = pb::DistributeCouponsRequest {
        tenant_id: "acme".into(),
        template_id: created.id.clone(),
        request_id: unique("distribute"),
        member_ids: vec!["m1".into()],
        allow_partial: false,
    };
    let refused = coupons
        .distribute_coupons(with_key(distribute, &checkout))
        .await
        .expect_err("checkout does not distribute");
    assert_error(&refused, Code::PermissionDenied, "METHOD_NOT_ALLOWED");

    let refused = coupons
        .claim_coupon(with_key(claim_request("acme", "m1", &created.id), &reader))
        .await
        .expect_err("readers do not claim");
    assert_error(&refused, Code::PermissionDenied, "METHOD_NOT_ALLOWED");
    let claimed = coupons
        .claim_coupon(with_key(
            claim_request("acme", "m1", &created.id),
            &checkout,
        ))
        .await
        .expect("checkout claims")
        .into_inner()
        .user_coupon
        .expect("coupon");
    let revoke = pb::RevokeCouponRequest {
        tenant_id: "acme".into(),
        request_id: unique("revoke"),
        coupon_id: claimed.id.clone(),
        reason: "fraud".into(),
        ..Default::default()
    };
    let refused = coupons
        .revoke_coupon(with_key(revoke, &checkout))
        .await
        .expect_err("checkout does not revoke");
    assert_error(&refused, Code::PermissionDenied, "METHOD_NOT_ALLOWED");

    let refused = points
        .earn_points(with_key(earn("acme", "m1"), &reader))
        .await
        .expect_err("readers do not earn");
    assert_error(&refused, Code::PermissionDenied, "METHOD_NOT_ALLOWED");
    points
        .earn_points(with_key(earn("acme", "m1"), &checkout))
        .await
        .expect("checkout earns");
    let rule = pb::CreatePointsRuleRequest {
        tenant_id: "acme".into(),
        request_id: unique("rule"),
        points_rule: Some(pb::PointsRule {
            event_type: "signup".into(),
            points: 10,
            enabled: true,
            ..Default::default()
        }),
    };
    let refused = points
        .create_points_rule(with_key(rule, &checkout))
        .await
        .expect_err("checkout does not make rules");
    assert_error(&refused, Code::PermissionDenied, "METHOD_NOT_ALLOWED");

    for key in [&admin, &checkout, &reader] {
        points
            .get_points_account(with_key(get_account("acme", "m1"), key))
            .await
            .expect("every role reads");
        let board = pb::GetPointsLeaderboardRequest {
            tenant_id: "acme".into(),
            top_n: 3,
        };
        points
            .get_points_leaderboard(with_key(board, key))
            .await
            .expect("every role reads the leaderboard");
        let get = pb::GetCouponTemplateRequest {
            tenant_id: "acme".into(),
            template_id: created.id.clone(),
        };
        templates
            .get_coupon_template(with_key(get, key))
            .await
            .expect("every role reads templates");
    }
}

async fn clients_act_for_their_tenants_only(app: &TestApp) {
    let checkout = client(app, "checkout-acme", Role::Checkout, Some(&["acme"])).await;
    let admin = client(app, "admin-all", Role::Admin, None).await;
    let mut points = app.points();
    let refused = points
        .earn_points(with_key(earn("beta", "m1"), &checkout))
        .await
        .expect_err("another tenant");
    assert_error(&refused, Code::PermissionDenied, "TENANT_NOT_ALLOWED");
    let refused = points
        .get_points_account(with_key(get_account("beta", "m1"), &checkout))
        .await
        .expect_err("another tenant's reads too");
    assert_error(&refused, Code::PermissionDenied, "TENANT_NOT_ALLOWED");
    // The refusal wrote nothing: the account does not exist for anyone.
    let missing = points
        .get_points_account(with_key(get_account("beta", "m1"), &admin))
        .await
        .expect_err("nothing was earned");
    assert_eq!(missing.code(), Code::NotFound);
    points
        .earn_points(with_key(earn("beta", "m1"), &admin))
        .await
        .expect("an admin for every tenant");
    // A bad tenant id is still a bad argument, whoever asks.
    let bad = points
        .earn_points(with_key(earn("", "m1"), &checkout))
        .await
        .expect_err("empty tenant");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

async fn a_revoked_key_is_refused_by_every_replica_within_seconds(app: &TestApp) {
    let key = client(app, "soon-gone", Role::Checkout, None).await;
    let replica = app.spawn_replica().await;
    let mut here = app.points();
    let mut there = replica.points();
    here.earn_points(with_key(earn("acme", "m1"), &key))
        .await
        .expect("known here");
    there
        .earn_points(with_key(earn("acme", "m1"), &key))
        .await
        .expect("known there");
    assert!(
        clients::revoke_client(&app.state.shared().db, "soon-gone", UnixMicros::now())
            .await
            .expect("revoke")
    );
    let revoked = Instant::now();
    for points in [here, there] {
        refused_within_five_seconds(revoked, || {
            let mut points = points.clone();
            let request = with_key(earn("acme", "m1"), &key);
            async move { points.earn_points(request).await }
        })
        .await;
    }
    replica.stop().await;
}

/// Makes `call` until it is refused UNAUTHENTICATED, every 100 ms; fails if it is still
/// served 5 s after `revoked`.
pub(crate) async fn refused_within_five_seconds<T, F>(revoked: Instant, mut call: impl FnMut() -> F)
where
    F: std::future::Future<Output = Result<T, tonic::Status>>,
{
    loop {
        match call().await {
            Err(status) => {
                assert_error(&status, Code::Unauthenticated, "UNAUTHENTICATED");
                return;
            }
            Ok(_) => {
                assert!(
                    revoked.elapsed() < Duration::from_secs(5),
                    "a revoked client still served after 5 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// On an address that is not loopback, with MARKETING_AUTH unset and no client, the server
/// refuses to start and says how to create the first client.
async fn a_public_address_with_no_client_refuses_to_start(app: &TestApp) {
    let public = marketing_server::Config {
        grpc_addr: "0.0.0.0:0".parse().expect("addr"),
        auth: None,
        ..app.config.clone()
    };
    let refused = match Server::build(public.clone()).await {
        Err(err) => err.to_string(),
        Ok(_) => panic!("started open on a public address"),
    };
    assert!(refused.contains("clients create"), "{refused}");
    let disabled = marketing_server::Config {
        auth: Some(AuthMode::Disabled),
        ..public.clone()
    };
    Server::build(disabled).await.expect("explicitly open");
    client(app, "first", Role::Admin, None).await;
    Server::build(public).await.expect("with a client");
}

async fn ledger_entries_name_the_client_that_made_them(app: &TestApp) {
    let checkout = client(app, "till-7", Role::Checkout, Some(&["acme"])).await;
    let reader = client(app, "audit", Role::Reader, Some(&["acme"])).await;
    let mut points = app.points();
    points
        .earn_points(with_key(earn("acme", "m-actor"), &checkout))
        .await
        .expect("earn");
    let listed = points
        .list_points_transactions(with_key(
            pb::ListPointsTransactionsRequest {
                tenant_id: "acme".into(),
                member_id: "m-actor".into(),
                ..Default::default()
            },
            &reader,
        ))
        .await
        .expect("list")
        .into_inner()
        .transactions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].actor, "till-7");
}

/// Templates, rules and user coupons name the client that made their latest change; the
/// server's own changes (a lapsed lock released) name none.
async fn every_change_names_the_client_that_made_it(app: &TestApp) {
    let ops = client(app, "ops", Role::Admin, None).await;
    let ops2 = client(app, "ops-2", Role::Admin, None).await;
    let till = client(app, "till-7", Role::Checkout, Some(&["acme"])).await;
    let till2 = client(app, "till-8", Role::Checkout, Some(&["acme"])).await;
    let mut templates = app.templates();
    let created = templates
        .create_coupon_template(with_key(create_request("acme", template()), &ops))
        .await
        .expect("create")
        .into_inner()
        .coupon_template
        .expect("template");
    assert_eq!(created.actor, "ops");
    let disabled = templates
        .set_coupon_template_enabled(with_key(
            pb::SetCouponTemplateEnabledRequest {
                tenant_id: "acme".into(),
                template_id: created.id.clone(),
                request_id: unique("enable"),
                enabled: false,
                version: None,
            },
            &ops2,
        ))
        .await
        .expect("disable")
        .into_inner()
        .coupon_template
        .expect("template");
    assert_eq!(disabled.actor, "ops-2");
    let enabled = templates
        .set_coupon_template_enabled(with_key(
            pb::SetCouponTemplateEnabledRequest {
                tenant_id: "acme".into(),
                template_id: created.id.clone(),
                request_id: unique("enable"),
                enabled: true,
                version: None,
            },
            &ops,
        ))
        .await
        .expect("enable")
        .into_inner()
        .coupon_template
        .expect("template");
    assert_eq!(enabled.actor, "ops");

    let mut coupons = app.user_coupons();
    let claimed = coupons
        .claim_coupon(with_key(claim_request("acme", "m1", &created.id), &till))
        .await
        .expect("claim")
        .into_inner()
        .user_coupon
        .expect("coupon");
    assert_eq!(claimed.actor, "till-7");
    // A claim changes stock, not the template's terms: its actor stays the operator's.
    let read = templates
        .get_coupon_template(with_key(
            pb::GetCouponTemplateRequest {
                tenant_id: "acme".into(),
                template_id: created.id.clone(),
            },
            &till,
        ))
        .await
        .expect("get")
        .into_inner()
        .coupon_template
        .expect("template");
    assert_eq!((read.actor.as_str(), read.claimed_count), ("ops", 1));
    let locked = coupons
        .lock_coupon(with_key(
            pb::LockCouponRequest {
                tenant_id: "acme".into(),
                member_id: "m1".into(),
                coupon_id: claimed.id.clone(),
                order_id: "order-1".into(),
                request_id: unique("lock"),
                lock_ttl: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
            },
            &till2,
        ))
        .await
        .expect("lock")
        .into_inner()
        .user_coupon
        .expect("coupon");
    assert_eq!(locked.actor, "till-8");
    let distributed = coupons
        .distribute_coupons(with_key(
            pb::DistributeCouponsRequest {
                tenant_id: "acme".into(),
                template_id: created.id.clone(),
                request_id: unique("distribute"),
                member_ids: vec!["m2".into()],
                allow_partial: false,
            },
            &ops,
        ))
        .await
        .expect("distribute")
        .into_inner();
    let listed = coupons
        .list_member_coupons(with_key(
            pb::ListMemberCouponsRequest {
                tenant_id: "acme".into(),
                member_id: "m2".into(),
                ..Default::default()
            },
            &till,
        ))
        .await
        .expect("list")
        .into_inner()
        .user_coupons;
    assert_eq!(listed.len(), 1, "{distributed:?}");
    assert_eq!(listed[0].actor, "ops");

    // The lock lapses; the sweeper's release is the server's own change.
    app.advance_clock(Duration::from_secs(120));
    app.state.coupons.sweep_coupons(100).await.expect("sweep");
    let swept = coupons
        .get_user_coupon(with_key(
            pb::GetUserCouponRequest {
                tenant_id: "acme".into(),
                coupon_id: claimed.id.clone(),
                member_id: "m1".into(),
            },
            &till,
        ))
        .await
        .expect("get")
        .into_inner()
        .user_coupon
        .expect("coupon");
    assert_eq!(
        (swept.state, swept.actor.as_str()),
        (pb::UserCouponState::Available as i32, "")
    );

    let mut points = app.points();
    let rule = points
        .create_points_rule(with_key(
            pb::CreatePointsRuleRequest {
                tenant_id: "acme".into(),
                request_id: unique("rule"),
                points_rule: Some(pb::PointsRule {
                    event_type: "signup".into(),
                    points: 5,
                    enabled: true,
                    ..Default::default()
                }),
            },
            &ops,
        ))
        .await
        .expect("create rule")
        .into_inner()
        .points_rule
        .expect("rule");
    assert_eq!(rule.actor, "ops");
    let updated = points
        .update_points_rule(with_key(
            pb::UpdatePointsRuleRequest {
                tenant_id: "acme".into(),
                request_id: unique("rule"),
                points_rule: Some(pb::PointsRule {
                    points: 7,
                    ..rule.clone()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["points".into()],
                }),
            },
            &ops2,
        ))
        .await
        .expect("update rule")
        .into_inner()
        .points_rule
        .expect("rule");
    assert_eq!((updated.points, updated.actor.as_str()), (7, "ops-2"));
    let rules = points
        .list_points_rules(with_key(
            pb::ListPointsRulesRequest {
                tenant_id: "acme".into(),
                ..Default::default()
            },
            &till,
        ))
        .await
        .expect("list rules")
        .into_inner()
        .points_rules;
    assert_eq!(rules[0].actor, "ops-2");
}

/// `n` reads at once, each with a key of no client (well-formed, so each is looked up), spread
/// over `channels`.
fn made_up_key_calls(
    channels: Vec<tonic::transport::Channel>,
    n: usize,
) -> impl std::future::Future<
    Output = Vec<Result<tonic::Response<pb::GetPointsAccountResponse>, tonic::Status>>,
> {
    futures::future::join_all((0..n).map(move |i| {
        let mut points = pb::points_account_service_client::PointsAccountServiceClient::new(
            channels[i % channels.len()].clone(),
        );
        let made_up = format!("mk_{i:012}_{}", "x".repeat(43));
        async move {
            points
                .get_points_account(with_key(get_account("acme", "m1"), &made_up))
                .await
        }
    }))
}

/// 500 calls with made-up keys at once, each a database lookup, beside a known client's
/// earns: no made-up key is served (UNAUTHENTICATED, or its connection closed after 16
/// failures) and every earn is served.
async fn a_flood_of_made_up_keys_leaves_known_clients_served(app: &TestApp) {
    let key = client(app, "steady", Role::Checkout, None).await;
    // Over connections of their own, each well below the server's 200 streams.
    let channels = app.connections(5).await;
    let flood = made_up_key_calls(channels, 500);
    let steady = futures::future::join_all((0..20).map(|_| {
        let mut points = app.points();
        let request = with_key(earn("acme", "m-steady"), &key);
        async move { points.earn_points(request).await }
    }));
    let (flood, steady) = tokio::join!(flood, steady);
    // Each is UNAUTHENTICATED, until its connection has failed 16 times and is closed: the
    // calls still on it fail with it.
    let mut unauthenticated = 0;
    for refused in flood {
        let refused = refused.expect_err("a made-up key");
        if refused.code() == Code::Unauthenticated {
            assert_error(&refused, Code::Unauthenticated, "UNAUTHENTICATED");
            unauthenticated += 1;
        }
    }
    // Answers in flight when a connection is closed are lost with it; each connection had
    // some of its refusals answered first.
    assert!(
        unauthenticated >= 5,
        "{unauthenticated} refused as UNAUTHENTICATED"
    );
    for served in steady {
        served.expect("the known client is served");
    }
    let account = app
        .points()
        .get_points_account(with_key(get_account("acme", "m-steady"), &key))
        .await
        .expect("account")
        .into_inner()
        .points_account
        .expect("account");
    assert_eq!(account.available, 200);
}

/// Made-up keys cannot take a replica's turns from its known clients: with key lookups
/// stalled (the clients table locked), calls with made-up keys wait for a lookup in at most
/// half of the replica's turns and the others are refused OVERLOADED at once, while a known
/// client's earns are served; once the table is free, those that waited are UNAUTHENTICATED.
/// PostgreSQL only: SQLite's readers cannot be stalled by a lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_key_lookups_leave_known_clients_their_turns() {
    use sea_orm::{ConnectionTrait, TransactionTrait};

    const TURNS: usize = 32;
    let app = marketing_tests::spawn_app_with(
        marketing_tests::Backend::PostgresRedis,
        marketing_tests::Options {
            auth: Some(AuthMode::Required),
            max_calls: Some((TURNS, Duration::from_millis(200))),
            ..marketing_tests::Options::default()
        },
    )
    .await;
    let key = client(&app, "steady", Role::Checkout, None).await;
    let mut points = app.points();
    points
        .earn_points(with_key(earn("acme", "m-steady"), &key))
        .await
        .expect("the key is known from now on (for 2 s)");
    let other = sea_orm::Database::connect(app.config.database_url.clone().expect("url"))
        .await
        .expect("another connection");
    let locker = other.begin().await.expect("begin");
    locker
        .execute_unprepared("LOCK TABLE api_clients IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("stall every key lookup");
    let channels = app.connections(2).await;
    let flood = tokio::spawn(made_up_key_calls(channels, 100));
    // The flood has come in, and what may wait waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        points
            .earn_points(with_key(earn("acme", "m-steady"), &key))
            .await
            .expect("a known client is served while made-up keys wait");
    }
    locker.rollback().await.expect("free the table");
    let _ = other.close().await;
    let mut waited = 0;
    for refused in flood.await.expect("joined") {
        let refused = refused.expect_err("a made-up key");
        match refused.code() {
            Code::Unauthenticated => {
                assert_error(&refused, Code::Unauthenticated, "UNAUTHENTICATED");
                waited += 1;
            }
            // A connection that failed 16 times is closed, with the calls still on it.
            _ if tonic_types::StatusExt::get_details_error_info(&refused).is_none() => {}
            _ => assert_error(&refused, Code::Unavailable, "OVERLOADED"),
        }
    }
    assert!(
        (1..=TURNS / 2).contains(&waited),
        "{waited} calls with made-up keys waited for a lookup"
    );
    app.stop().await;
}

marketing_tests::backend_suite! {
    with marketing_tests::Options {
        auth: Some(marketing_server::config::AuthMode::Required),
        ..marketing_tests::Options::default()
    };
    calls_need_an_active_clients_key,
    roles_allow_their_methods_only,
    clients_act_for_their_tenants_only,
    a_revoked_key_is_refused_by_every_replica_within_seconds,
    a_public_address_with_no_client_refuses_to_start,
    ledger_entries_name_the_client_that_made_them,
    a_flood_of_made_up_keys_leaves_known_clients_served,
    every_change_names_the_client_that_made_it,
}
