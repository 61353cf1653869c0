//! A request id belongs to the client that first used it. Another client of the same tenant
//! sending the same id makes a new request in its own space: it can neither block the first
//! client's request (a squat) nor read its answer (a replay). Records written before request
//! ids were per client (`client = '*'`) match every client until they are deleted.

use marketing_domain::auth::Role;
use marketing_proto::v1 as pb;
use marketing_storage::entity::idempotency_record as record;
use marketing_tests::{TestApp, assert_error, with_key};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use tonic::Code;

use crate::{
    fixtures::{api_client, claim_request, create_request, template, unique},
    points::{deduct, earn},
};

async fn balance(app: &TestApp, key: &str, member: &str) -> i64 {
    app.points()
        .get_points_account(with_key(
            pb::GetPointsAccountRequest {
                tenant_id: "acme".into(),
                member_id: member.into(),
            },
            key,
        ))
        .await
        .expect("account")
        .into_inner()
        .points_account
        .expect("account")
        .available
}

/// Client B uses request id R first (deduct 1); client A's real request R (deduct 5) is then
/// A's own, not REQUEST_ID_REUSED. On today's main before the change, A was refused for ever.
async fn another_clients_request_id_does_not_block_mine(app: &TestApp) {
    let a = api_client(app, "checkout-a", Role::Checkout, Some(&["acme"])).await;
    let b = api_client(app, "checkout-b", Role::Checkout, Some(&["acme"])).await;
    let member = unique("member");
    let mut points = app.points();
    points
        .earn_points(with_key(earn(&member, 100), &a))
        .await
        .expect("fund");
    let id = unique("squatted");
    let squat = pb::DeductPointsRequest {
        request_id: id.clone(),
        ..deduct(&member, 1)
    };
    points
        .deduct_points(with_key(squat, &b))
        .await
        .expect("B's request");
    let mine = pb::DeductPointsRequest {
        request_id: id.clone(),
        ..deduct(&member, 5)
    };
    let answer = points
        .deduct_points(with_key(mine.clone(), &a))
        .await
        .expect("A's request is A's own")
        .into_inner();
    assert_eq!(answer.points_account.expect("account").available, 94);
    // A's retry replays A's answer; A reusing its id for something else is still refused.
    let again = points
        .deduct_points(with_key(mine, &a))
        .await
        .expect("A's retry")
        .into_inner();
    assert_eq!(again.points_account.expect("account").available, 94);
    let reused = points
        .deduct_points(with_key(
            pb::DeductPointsRequest {
                request_id: id,
                ..deduct(&member, 7)
            },
            &a,
        ))
        .await
        .expect_err("A's id, other parameters");
    assert_error(&reused, Code::InvalidArgument, "REQUEST_ID_REUSED");
    assert_eq!(balance(app, &a, &member).await, 94);

    // The same for claims (batched per template) and template creation (one transaction
    // each): both clients' requests are served, each once.
    let admin_a = api_client(app, "admin-a", Role::Admin, Some(&["acme"])).await;
    let admin_b = api_client(app, "admin-b", Role::Admin, Some(&["acme"])).await;
    let mut templates = app.templates();
    let id = unique("create");
    let mut created = Vec::new();
    for key in [&admin_b, &admin_a] {
        let request = pb::CreateCouponTemplateRequest {
            request_id: id.clone(),
            ..create_request("acme", template())
        };
        created.push(
            templates
                .create_coupon_template(with_key(request, key))
                .await
                .expect("each client's creation")
                .into_inner()
                .coupon_template
                .expect("template")
                .id,
        );
    }
    assert_ne!(created[0], created[1], "two requests, two templates");
    let id = unique("claim");
    let mut coupons = Vec::new();
    for key in [&b, &a] {
        let request = pb::ClaimCouponRequest {
            request_id: id.clone(),
            ..claim_request("acme", &member, &created[0])
        };
        coupons.push(
            app.user_coupons()
                .claim_coupon(with_key(request, key))
                .await
                .expect("each client's claim")
                .into_inner()
                .user_coupon
                .expect("coupon")
                .id,
        );
    }
    assert_ne!(coupons[0], coupons[1], "two requests, two coupons");
}

/// Client B sends client A's exact request (same id, same parameters): a new request of B's,
/// never A's recorded answer (A's transaction, A's balance then).
async fn another_client_never_gets_my_answer(app: &TestApp) {
    let a = api_client(app, "checkout-a", Role::Checkout, Some(&["acme"])).await;
    let b = api_client(app, "checkout-b", Role::Checkout, Some(&["acme"])).await;
    let member = unique("member");
    let mut points = app.points();
    let request = earn(&member, 500);
    let first = points
        .earn_points(with_key(request.clone(), &a))
        .await
        .expect("A's earn")
        .into_inner();
    let copied = points
        .earn_points(with_key(request.clone(), &b))
        .await
        .expect("B's earn")
        .into_inner();
    let (first_tx, copied_tx) = (
        first.transaction.expect("entry"),
        copied.transaction.expect("entry"),
    );
    assert_ne!(first_tx.id, copied_tx.id, "B got A's recorded answer");
    assert_eq!(copied_tx.actor, "checkout-b");
    assert_eq!(copied.points_account.expect("account").available, 1000);
    // Each client's retry is its own replay.
    for (key, expected) in [(&a, &first_tx.id), (&b, &copied_tx.id)] {
        let replay = points
            .earn_points(with_key(request.clone(), key))
            .await
            .expect("retry")
            .into_inner();
        assert_eq!(&replay.transaction.expect("entry").id, expected);
    }
    assert_eq!(balance(app, &a, &member).await, 1000);
}

/// A record written before request ids were per client matches every client: the same
/// request replays it, other parameters are REQUEST_ID_REUSED, for any client of the tenant.
async fn a_record_from_before_matches_every_client(app: &TestApp) {
    let a = api_client(app, "checkout-a", Role::Checkout, Some(&["acme"])).await;
    let b = api_client(app, "checkout-b", Role::Checkout, Some(&["acme"])).await;
    let member = unique("member");
    let mut points = app.points();
    let request = earn(&member, 300);
    let first = points
        .earn_points(with_key(request.clone(), &a))
        .await
        .expect("earn")
        .into_inner();
    let marked = record::Entity::update_many()
        .col_expr(record::Column::Client, Expr::value("*"))
        .filter(record::Column::RequestId.eq(request.request_id.as_str()))
        .exec(app.state.shared().db.conn())
        .await
        .expect("mark the record as written before");
    assert_eq!(marked.rows_affected, 1);
    for key in [&a, &b] {
        let replay = points
            .earn_points(with_key(request.clone(), key))
            .await
            .expect("replayed")
            .into_inner();
        assert_eq!(
            replay.transaction.expect("entry").id,
            first.transaction.clone().expect("entry").id
        );
        let reused = points
            .earn_points(with_key(
                pb::EarnPointsRequest {
                    request_id: request.request_id.clone(),
                    ..earn(&member, 1)
                },
                key,
            ))
            .await
            .expect_err("other parameters");
        assert_error(&reused, Code::InvalidArgument, "REQUEST_ID_REUSED");
        // The one-transaction path too.
        let template = app
            .templates()
            .create_coupon_template(with_key(
                pb::CreateCouponTemplateRequest {
                    request_id: request.request_id.clone(),
                    ..create_request("acme", template())
                },
                &api_client(app, &unique("admin"), Role::Admin, Some(&["acme"])).await,
            ))
            .await
            .expect_err("the id is taken by the earlier earn");
        assert_error(&template, Code::InvalidArgument, "REQUEST_ID_REUSED");
    }
    assert_eq!(balance(app, &a, &member).await, 300);
}

marketing_tests::backend_suite! {
    with crate::isolation::auth_required();
    another_clients_request_id_does_not_block_mine,
    another_client_never_gets_my_answer,
    a_record_from_before_matches_every_client,
}
