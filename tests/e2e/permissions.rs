//! Permissions are declared per RPC (`auth::RPC_PERMISSIONS`) and fail closed: every RPC the
//! server serves has an entry (and a line in the suites' RPC table), and every role calling
//! every RPC for its own tenant and for another is admitted or refused as declared, with
//! nothing written by a refusal.

use std::collections::{BTreeMap, BTreeSet};

use marketing_domain::{
    TenantId,
    auth::{RPC_PERMISSIONS, Role, Scope, Tenants, rpc_permission},
};
use marketing_storage::entity;
use marketing_tests::{TestApp, assert_error};
use prost::Message;
use prost_types::{FileDescriptorSet, field_descriptor_proto::Type};
use sea_orm::{DatabaseConnection, EntityTrait};
use tonic::Code;

use crate::{
    fixtures::api_client,
    rpcs::{RPCS, call, seed},
};

/// Every RPC of our package the server serves, by path, with its input message's full name.
fn served_rpcs() -> BTreeMap<String, String> {
    let set = FileDescriptorSet::decode(marketing_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    set.file
        .iter()
        .filter(|file| file.package() == "marketing.v1")
        .flat_map(|file| &file.service)
        .flat_map(|service| {
            service.method.iter().map(move |method| {
                (
                    format!("/marketing.v1.{}/{}", service.name(), method.name()),
                    method.input_type().to_owned(),
                )
            })
        })
        .collect()
}

#[test]
fn every_served_rpc_declares_its_permission_and_joins_the_suites() {
    let served = served_rpcs();
    let declared: BTreeSet<String> = RPC_PERMISSIONS
        .iter()
        .map(|rpc| rpc.path.to_owned())
        .collect();
    let tabled: BTreeSet<String> = RPCS.iter().map(|rpc| rpc.path.to_owned()).collect();
    let served_paths: BTreeSet<String> = served.keys().cloned().collect();
    assert_eq!(
        served_paths.difference(&declared).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "served RPCs without a permission in auth::RPC_PERMISSIONS"
    );
    assert_eq!(
        declared.difference(&served_paths).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "permissions of RPCs that are not served"
    );
    assert_eq!(
        served_paths
            .symmetric_difference(&tabled)
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "tests/e2e/rpcs.rs RPCS must have one line per served RPC"
    );

    // A tenant-scoped RPC's request names its tenant, where the handlers check it.
    let set = FileDescriptorSet::decode(marketing_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let messages: BTreeMap<String, _> = set
        .file
        .iter()
        .filter(|file| file.package() == "marketing.v1")
        .flat_map(|file| &file.message_type)
        .map(|message| (format!(".marketing.v1.{}", message.name()), message))
        .collect();
    for rpc in RPC_PERMISSIONS {
        match rpc.scope {
            Scope::Tenant => {
                let input = &messages[&served[rpc.path]];
                assert!(
                    input
                        .field
                        .iter()
                        .any(|field| field.name() == "tenant_id" && field.r#type() == Type::String),
                    "{} is tenant-scoped but its request has no tenant_id",
                    rpc.path
                );
            }
            // Only clients of every tenant call these (checked below).
            Scope::AllTenants => {}
        }
    }
}

/// Every row of every table, as text, sorted: what a refused call must leave as it was.
async fn stored_rows(conn: &DatabaseConnection) -> Vec<String> {
    async fn rows<E: EntityTrait>(conn: &DatabaseConnection, out: &mut Vec<String>)
    where
        E::Model: std::fmt::Debug,
    {
        let found = E::find().all(conn).await.expect("read a table");
        out.extend(found.iter().map(|row| format!("{row:?}")));
    }
    let mut out = Vec::new();
    rows::<entity::coupon_template::Entity>(conn, &mut out).await;
    rows::<entity::user_coupon::Entity>(conn, &mut out).await;
    rows::<entity::idempotency_record::Entity>(conn, &mut out).await;
    rows::<entity::points_account::Entity>(conn, &mut out).await;
    rows::<entity::points_allocation::Entity>(conn, &mut out).await;
    rows::<entity::points_daily_earning::Entity>(conn, &mut out).await;
    rows::<entity::points_hold::Entity>(conn, &mut out).await;
    rows::<entity::points_lot::Entity>(conn, &mut out).await;
    rows::<entity::points_rule::Entity>(conn, &mut out).await;
    rows::<entity::points_transaction::Entity>(conn, &mut out).await;
    rows::<entity::api_client::Entity>(conn, &mut out).await;
    out.sort_unstable();
    out
}

/// Every role, for every RPC, for its own tenant (acme) and for another (globex): admitted
/// where its permission says so, refused PERMISSION_DENIED otherwise, and a refusal writes
/// nothing (checked against the whole database, with requests that do write when an admin
/// sends them). The admin service is for admins of every tenant: an admin of acme is refused
/// it too.
async fn every_role_calls_every_rpc_as_declared(app: &TestApp) {
    let seeder = api_client(app, "seeder", Role::Admin, None).await;
    let keys: Vec<(Role, String)> = vec![
        (
            Role::Admin,
            api_client(app, "acme-admin", Role::Admin, Some(&["acme"])).await,
        ),
        (
            Role::Checkout,
            api_client(app, "acme-checkout", Role::Checkout, Some(&["acme"])).await,
        ),
        (
            Role::Reader,
            api_client(app, "acme-reader", Role::Reader, Some(&["acme"])).await,
        ),
    ];
    let acme_only = Tenants::Only([TenantId::parse("tenant", "acme").expect("tenant")].into());
    let conn = app.state.shared().db.conn();
    // Each request of the test its own ids.
    let mut n = 0..;
    let mut next = || n.next().expect("endless");
    for rpc in &RPCS {
        // Fresh state for each RPC, so a delete or a revocation before it leaves it something
        // to act on.
        let run = crate::fixtures::unique("run");
        let own = seed(&app.channel, Some(&seeder), "acme", &run).await;
        let foreign = seed(&app.channel, Some(&seeder), "globex", &run).await;
        let before = stored_rows(conn).await;
        let mut admitted = Vec::new();
        for (role, key) in &keys {
            let refused = call(
                &app.channel,
                rpc.path,
                (rpc.request)(&foreign, next()),
                Some(key),
            )
            .await
            .expect_err("no client of acme acts for globex");
            assert_eq!(
                refused.code(),
                Code::PermissionDenied,
                "{role} {} for globex: {refused:?}",
                rpc.path
            );
            if role.allows_for(&acme_only, rpc.path) {
                admitted.push(key);
                continue;
            }
            let refused = call(
                &app.channel,
                rpc.path,
                (rpc.request)(&own, next()),
                Some(key),
            )
            .await
            .expect_err("outside the role");
            assert_error(&refused, Code::PermissionDenied, "METHOD_NOT_ALLOWED");
        }
        assert_eq!(
            stored_rows(conn).await,
            before,
            "refused calls of {} wrote",
            rpc.path
        );
        if rpc.writes {
            // The refused requests were ones that write: the same request, admitted, does.
            let before = stored_rows(conn).await;
            call(
                &app.channel,
                rpc.path,
                (rpc.request)(&own, next()),
                Some(&seeder),
            )
            .await
            .unwrap_or_else(|status| panic!("{} as admin: {status:?}", rpc.path));
            assert_ne!(
                stored_rows(conn).await,
                before,
                "{} wrote nothing",
                rpc.path
            );
        }
        if rpc_permission(rpc.path).is_some_and(|declared| declared.scope == Scope::AllTenants) {
            assert!(
                admitted.is_empty(),
                "{}: for admins of all tenants",
                rpc.path
            );
            admitted.push(&seeder);
        }
        for key in admitted {
            let answer = call(
                &app.channel,
                rpc.path,
                (rpc.request)(&own, next()),
                Some(key),
            )
            .await;
            if let Err(status) = &answer {
                assert!(
                    !matches!(
                        status.code(),
                        Code::PermissionDenied | Code::Unauthenticated
                    ),
                    "{} refused to an admitted role: {status:?}",
                    rpc.path
                );
            }
        }
    }
}

/// A method no entry names, even one named like a read, on our package or another: closed to
/// every role but admin (which gets UNIMPLEMENTED from the router), and to calls without a key.
async fn an_undeclared_method_is_closed(app: &TestApp) {
    let reader = api_client(app, "reader", Role::Reader, None).await;
    let checkout = api_client(app, "checkout", Role::Checkout, None).await;
    let admin = api_client(app, "admin", Role::Admin, None).await;
    for path in [
        "/marketing.v1.CouponTemplateService/ListApiClients",
        "/marketing.v1.AdminService/ListApiClients",
        "/marketing.admin.v1.AdminService/ListApiClients",
    ] {
        let request = marketing_proto::v1::GetCouponTemplateRequest {
            tenant_id: "acme".into(),
            template_id: "x".into(),
        }
        .encode_to_vec();
        let refused = call(&app.channel, path, request.clone(), None)
            .await
            .expect_err("no key");
        assert_eq!(refused.code(), Code::Unauthenticated, "{path}: {refused:?}");
        for key in [&reader, &checkout] {
            let refused = call(&app.channel, path, request.clone(), Some(key))
                .await
                .expect_err("undeclared");
            assert_error(&refused, Code::PermissionDenied, "METHOD_NOT_ALLOWED");
        }
        let unknown = call(&app.channel, path, request, Some(&admin))
            .await
            .expect_err("not served");
        assert_eq!(unknown.code(), Code::Unimplemented, "{path}: {unknown:?}");
    }
}

marketing_tests::backend_suite! {
    with crate::isolation::auth_required();
    every_role_calls_every_rpc_as_declared,
    an_undeclared_method_is_closed,
}
