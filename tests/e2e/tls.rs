//! TLS and mTLS: the server serves TLS with the configured certificate; under mTLS it requires
//! a client certificate signed by the configured CA, and a certificate that names a client
//! (DNS name or common name) calls as that client with no key. Certificates are made at run
//! time (rcgen).

use std::{sync::Arc, time::Instant};

use marketing_domain::{UnixMicros, auth::Role};
use marketing_proto::v1::{self as pb, points_account_service_client::PointsAccountServiceClient};
use marketing_server::app::clients;
use marketing_tests::{PemPair, TestApp, TestCerts, assert_error, with_key};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig},
};

use crate::{fixtures::unique, server::run_grpcurl};

fn earn(member: &str) -> pb::EarnPointsRequest {
    pb::EarnPointsRequest {
        tenant_id: "acme".into(),
        member_id: member.into(),
        request_id: unique("earn"),
        source: Some(pb::earn_points_request::Source::Amount(10)),
        ..Default::default()
    }
}

fn get(member: &str) -> pb::GetPointsAccountRequest {
    pb::GetPointsAccountRequest {
        tenant_id: "acme".into(),
        member_id: member.into(),
    }
}

/// A call over a channel that may not even connect: the error either way.
async fn refused(channel: Result<Channel, tonic::transport::Error>) -> String {
    match channel {
        Err(err) => format!("{err:?}"),
        Ok(channel) => {
            let status = PointsAccountServiceClient::new(channel)
                .get_points_account(get("m1"))
                .await
                .expect_err("the call must fail");
            // The client's own transport failing (a plain-text client reading TLS bytes says
            // INTERNAL), never an answer of the server: no ErrorInfo, and a transport error
            // as its source.
            assert!(
                matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
                ),
                "{status:?}"
            );
            assert!(
                tonic_types::StatusExt::get_details_error_info(&status).is_none()
                    && std::error::Error::source(&status).is_some(),
                "the server answered: {status:?}"
            );
            status.message().to_owned()
        }
    }
}

fn certs(app: &TestApp) -> &Arc<TestCerts> {
    app.tls.as_ref().expect("a TLS test server")
}

/// Calls are served over TLS; plain text and a client that trusts another CA get nothing.
async fn calls_are_served_over_tls_only(app: &TestApp) {
    let missing = app
        .points()
        .get_points_account(get("m1"))
        .await
        .expect_err("no account yet");
    assert_eq!(
        missing.code(),
        Code::NotFound,
        "served over TLS: {missing:?}"
    );
    app.points()
        .earn_points(earn("m1"))
        .await
        .expect("earn over TLS");

    let plain = Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .connect()
        .await;
    refused(plain).await;
    let (other_ca, _) = TestCerts::authority("another CA");
    let distrusting = Channel::from_shared(format!("https://{}", app.addr))
        .expect("uri")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(other_ca))
                .domain_name("localhost"),
        )
        .expect("tls config")
        .connect()
        .await;
    refused(distrusting).await;
    // Still up and serving its TLS clients: the refusals were the clients', not a crash.
    app.points()
        .get_points_account(get("m1"))
        .await
        .expect("the account earned over TLS");
}

async fn client(app: &TestApp, name: &str, role: Role) -> String {
    clients::create_client(
        &app.state.shared().db,
        name,
        role,
        Some(vec!["acme".to_owned()]),
        UnixMicros::now(),
    )
    .await
    .expect("create the client")
    .key
}

async fn points_as(app: &TestApp, identity: PemPair) -> PointsAccountServiceClient<Channel> {
    let channel = certs(app)
        .channel(app.addr, Some(identity))
        .await
        .expect("connect with a client certificate");
    PointsAccountServiceClient::new(channel)
}

/// Under mTLS a certificate's one DNS name (by default) is the client it calls as; a name of
/// no client, or of a revoked one, is UNAUTHENTICATED, and so is a certificate with several
/// names or none in that field (never resolved by trying the next name); a key still wins; a
/// connection without a certificate, or with one of another CA, is refused; revoking a
/// certificate's client refuses it within seconds.
async fn a_client_certificate_names_its_client(app: &TestApp) {
    let certs = certs(app).clone();
    client(app, "till-9", Role::Checkout).await;
    client(app, "reports", Role::Reader).await;
    let admin = client(app, "ops", Role::Admin).await;
    client(app, "gone", Role::Checkout).await;
    clients::revoke_client(&app.state.shared().db, "gone", UnixMicros::now())
        .await
        .expect("revoke");

    let mut till = points_as(app, certs.client(&["till-9"], None)).await;
    let earned = till
        .earn_points(earn("m-cert"))
        .await
        .expect("the certificate's DNS name is a checkout client")
        .into_inner()
        .transaction
        .expect("entry");
    assert_eq!(earned.actor, "till-9");

    // The role still decides; the common name plays no part under `dns`.
    let mut reports = points_as(app, certs.client(&["reports"], Some("ops"))).await;
    reports
        .get_points_account(get("m-cert"))
        .await
        .expect("a reader reads");
    let refused_role = reports
        .earn_points(earn("m-cert"))
        .await
        .expect_err("a reader does not earn");
    assert_error(&refused_role, Code::PermissionDenied, "METHOD_NOT_ALLOWED");

    // A key is what counts when there is one; the certificate is named beside it.
    let by_key = reports
        .earn_points(with_key(earn("m-cert"), &admin))
        .await
        .expect("the admin's key over the reader's certificate")
        .into_inner()
        .transaction
        .expect("entry");
    assert_eq!(by_key.actor, "ops (certificate reports)");

    // Several names: refused, whichever of them are clients (on main, `[no-such-client, ops]`
    // called as the admin, and `[latecomer, reports]` became an admin once a client
    // `latecomer` was created).
    let mut several = points_as(app, certs.client(&["no-such-client", "ops"], None)).await;
    let refused_several = several
        .get_points_account(get("m-cert"))
        .await
        .expect_err("two names");
    assert_error(&refused_several, Code::Unauthenticated, "UNAUTHENTICATED");
    let mut latecomer = points_as(app, certs.client(&["latecomer", "reports"], None)).await;
    client(app, "latecomer", Role::Admin).await;
    for _ in 0..3 {
        let refused = latecomer
            .earn_points(earn("m-cert"))
            .await
            .expect_err("two names, one of them an admin now");
        assert_error(&refused, Code::Unauthenticated, "UNAUTHENTICATED");
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    }

    for identity in [
        certs.client(&["gone"], None),
        certs.client(&["nobody"], Some("reports")),
        // No DNS name: the common name is not tried under `dns`.
        certs.client(&[], Some("till-9")),
    ] {
        let refused_name = points_as(app, identity)
            .await
            .earn_points(earn("m-cert"))
            .await
            .expect_err("names no active client");
        assert_error(&refused_name, Code::Unauthenticated, "UNAUTHENTICATED");
    }
    // The harness's own certificate names no client either.
    let harness = app
        .points()
        .get_points_account(get("m-cert"))
        .await
        .expect_err("no client named harness");
    assert_error(&harness, Code::Unauthenticated, "UNAUTHENTICATED");

    refused(certs.channel(app.addr, None).await).await;
    let (_, other_issuer) = TestCerts::authority("another CA");
    let foreign = TestCerts::sign_with(&other_issuer, &["till-9"], None);
    refused(certs.channel(app.addr, Some(foreign)).await).await;

    let account = till
        .get_points_account(get("m-cert"))
        .await
        .expect("account")
        .into_inner()
        .points_account
        .expect("account");
    assert_eq!(account.available, 20, "only the admitted earns wrote");

    // What a certificate was found to be is kept briefly, like a key: revoking its client
    // refuses it within seconds, on the connection already open too.
    clients::revoke_client(&app.state.shared().db, "till-9", UnixMicros::now())
        .await
        .expect("revoke");
    crate::auth::refused_within_five_seconds(Instant::now(), || {
        let mut till = till.clone();
        async move { till.get_points_account(get("m-cert")).await }
    })
    .await;
}

mod over_tls {
    use super::*;

    marketing_tests::backend_suite! {
        with marketing_tests::Options {
            tls: Some(marketing_tests::TestCerts::new(false)),
            ..marketing_tests::Options::default()
        };
        calls_are_served_over_tls_only,
    }
}

mod over_mtls {
    use super::*;

    marketing_tests::backend_suite! {
        with marketing_tests::Options {
            tls: Some(marketing_tests::TestCerts::new(true)),
            auth: Some(marketing_server::config::AuthMode::Required),
            ..marketing_tests::Options::default()
        };
        a_client_certificate_names_its_client,
        grpcurl_calls_over_mtls_with_a_client_certificate,
    }
}

mod over_mtls_named_by_common_name {
    use super::*;

    marketing_tests::backend_suite! {
        with marketing_tests::Options {
            tls: Some(marketing_tests::TestCerts::new(true)),
            auth: Some(marketing_server::config::AuthMode::Required),
            tls_client_name: Some(marketing_server::config::ClientNameField::Cn),
            ..marketing_tests::Options::default()
        };
        a_common_name_names_its_client,
    }
}

/// `MARKETING_TLS_CLIENT_NAME=cn`: the subject's common name is the client; DNS names play no
/// part.
async fn a_common_name_names_its_client(app: &TestApp) {
    let certs = certs(app).clone();
    client(app, "till-9", Role::Checkout).await;
    client(app, "ops", Role::Admin).await;
    let mut till = points_as(app, certs.client(&["ops"], Some("till-9"))).await;
    let earned = till
        .earn_points(earn("m-cn"))
        .await
        .expect("the common name is a checkout client")
        .into_inner()
        .transaction
        .expect("entry");
    assert_eq!(earned.actor, "till-9");
    let refused = till
        .create_points_rule(pb::CreatePointsRuleRequest {
            tenant_id: "acme".into(),
            request_id: "rule-cn".into(),
            points_rule: Some(pb::PointsRule {
                event_type: "signup".into(),
                points: 1,
                enabled: true,
                ..Default::default()
            }),
        })
        .await
        .expect_err("the DNS name (an admin's) does not count");
    assert_error(&refused, Code::PermissionDenied, "METHOD_NOT_ALLOWED");
    for identity in [
        certs.client(&["till-9"], Some("nobody")),
        // No common name of ours (none, or rcgen's default, which has spaces).
        certs.client(&["till-9"], None),
    ] {
        let refused = points_as(app, identity)
            .await
            .earn_points(earn("m-cn"))
            .await
            .expect_err("the common name is no client's");
        assert_error(&refused, Code::Unauthenticated, "UNAUTHENTICATED");
    }
}

/// grpcurl as the README shows it: `-cacert` for TLS, plus `-cert`/`-key` under mTLS, where
/// the certificate is the caller.
async fn grpcurl_calls_over_mtls_with_a_client_certificate(app: &TestApp) {
    let certs = certs(app).clone();
    client(app, "till-9", Role::Checkout).await;
    let identity = certs.client(&["till-9"], None);
    let cert = certs.write("till-9.pem", &identity.cert);
    let key = certs.write("till-9.key", &identity.key);
    let ca = certs.path("ca.pem");
    let addr = app.addr.to_string();
    let tls_args: Vec<String> = vec![
        "-cacert".into(),
        ca.display().to_string(),
        "-cert".into(),
        cert.display().to_string(),
        "-key".into(),
        key.display().to_string(),
    ];
    let (services, earned) = tokio::task::spawn_blocking(move || {
        let mut list: Vec<&str> = tls_args.iter().map(String::as_str).collect();
        list.extend([addr.as_str(), "list"]);
        let services = run_grpcurl(&list);
        let mut call: Vec<&str> = tls_args.iter().map(String::as_str).collect();
        let body = format!(
            r#"{{"tenant_id":"acme","member_id":"m-grpcurl","request_id":"{}","amount":"7"}}"#,
            unique("earn")
        );
        call.extend([
            "-d",
            body.as_str(),
            addr.as_str(),
            "marketing.v1.PointsAccountService/EarnPoints",
        ]);
        (services, run_grpcurl(&call))
    })
    .await
    .expect("grpcurl");
    assert!(
        services
            .lines()
            .any(|line| line == "marketing.v1.PointsAccountService"),
        "{services}"
    );
    assert!(earned.contains(r#""actor": "till-9""#), "{earned}");
}

/// The environment of the binary serving mTLS with `certs`.
fn mtls_env(certs: &TestCerts) -> [(&'static str, String); 3] {
    let path = |file: &str| certs.path(file).display().to_string();
    [
        ("MARKETING_TLS_CERT", path("server.pem")),
        ("MARKETING_TLS_KEY", path("server.key")),
        ("MARKETING_TLS_CLIENT_CA", path("ca.pem")),
    ]
}

/// The binary's `healthcheck` against the binary serving mTLS: refused without the CA (with
/// a message saying what to give), refused without a client certificate, SERVING with both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_reaches_a_server_over_mtls() {
    let certs = TestCerts::new(true);
    let identity = certs.client(&["probe"], None);
    let cert = certs.write("probe.pem", &identity.cert);
    let key = certs.write("probe.key", &identity.key);
    let paths = |file: &str| certs.path(file).display().to_string();
    let tls_env = mtls_env(&certs);
    let env: Vec<(&str, &str)> = tls_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = marketing_tests::ServerProcess::start(&env);
    let addr = server.addr.to_string();
    let healthcheck = |args: &[&str]| {
        std::process::Command::new(marketing_tests::server_binary())
            .env_clear()
            .envs(env.iter().copied())
            .env("MARKETING_GRPC_ADDR", &addr)
            .arg("healthcheck")
            .args(args)
            .output()
            .expect("run healthcheck")
    };
    let without_ca = healthcheck(&[]);
    assert!(!without_ca.status.success());
    assert!(
        String::from_utf8_lossy(&without_ca.stderr).contains("--cacert"),
        "{without_ca:?}"
    );
    let ca = paths("ca.pem");
    assert!(
        !healthcheck(&["--cacert", &ca]).status.success(),
        "no client certificate"
    );
    let cert = cert.display().to_string();
    let key = key.display().to_string();
    let serving = healthcheck(&["--cacert", &ca, "--cert", &cert, "--key", &key]);
    assert!(serving.status.success(), "{serving:?}");
    assert_eq!(String::from_utf8_lossy(&serving.stdout).trim(), "SERVING");
}

/// A call with a key and a client certificate is the key's client (the documented rule), and
/// both are named: its log lines carry `client` and `certificate`, and what it changes
/// records `<client> (certificate <name>)` as its actor. The real binary, for its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_beside_a_certificate_is_logged_and_recorded_with_both() {
    let certs = TestCerts::new(true);
    let tls_env = mtls_env(&certs);
    let mut env: Vec<(&str, &str)> = tls_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("MARKETING_AUTH", "required"));
    let server = marketing_tests::ServerProcess::start(&env);
    let created = std::process::Command::new(marketing_tests::server_binary())
        .env_clear()
        .env("DATABASE_URL", server.embedded_database_url())
        .args([
            "clients", "create", "--name", "ops", "--role", "admin", "--tenant", "acme",
        ])
        .output()
        .expect("run clients create");
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8_lossy(&created.stdout)
        .lines()
        .last()
        .expect("the key's line")
        .trim()
        .to_owned();

    let channel = certs
        .channel(server.addr, Some(certs.client(&["till-9"], None)))
        .await
        .expect("connect with a client certificate");
    let mut points = PointsAccountServiceClient::new(channel);
    let entry = points
        .earn_points(with_key(earn("m-both"), &key))
        .await
        .expect("the key's client earns")
        .into_inner()
        .transaction
        .expect("entry");
    assert_eq!(entry.actor, "ops (certificate till-9)");

    // A refusal inside the call is logged with both names.
    let foreign = points
        .earn_points(with_key(
            pb::EarnPointsRequest {
                tenant_id: "globex".into(),
                ..earn("m-both")
            },
            &key,
        ))
        .await
        .expect_err("ops may not act for globex");
    assert_error(&foreign, Code::PermissionDenied, "TENANT_NOT_ALLOWED");
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines = server.log_lines("tenant not allowed");
        if lines.iter().any(|line| {
            line.contains(r#""client":"ops""#) && line.contains(r#""certificate":"till-9""#)
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
