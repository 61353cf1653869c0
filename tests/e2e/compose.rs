//! The production compose's first run, without a Docker engine: the same sequence its file
//! runs, with the real binary. A one-shot `clients bootstrap` creates the first admin (its key
//! printed once, or taken from a secret file) and does nothing on later runs; the server then
//! starts on a non-loopback address with auth required, refuses calls without a key and serves
//! the admin's.

use std::{path::PathBuf, process::Command};

use marketing_proto::v1::coupon_template_service_client::CouponTemplateServiceClient;
use marketing_tests::{
    ServerProcess, assert_error, create_test_database, drop_test_database, redis_url,
    server_binary, with_key,
};
use tonic::Code;

use crate::fixtures::{create_request, template};

fn compose_file() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_path_buf();
    std::fs::read_to_string(root.join("docker-compose.yml")).expect("docker-compose.yml")
}

/// `marketing-server clients <args>` as the compose's one-shot step runs it; its stdout.
fn clients(database_url: &str, args: &[&str]) -> String {
    let output = Command::new(server_binary())
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url())
        .env("MARKETING_AUTH", "required")
        .arg("clients")
        .args(args)
        .output()
        .expect("run the binary");
    assert!(
        output.status.success(),
        "clients {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// The server as the compose starts it: its environment, on a non-loopback address.
fn serve(database_url: &str) -> ServerProcess {
    ServerProcess::start(&[
        ("DATABASE_URL", database_url),
        ("REDIS_URL", &redis_url()),
        ("MARKETING_AUTH", "required"),
        ("MARKETING_GRPC_ADDR", "0.0.0.0:0"),
    ])
}

async fn assert_closed_but_open_to(server: &ServerProcess, key: &str) {
    let mut templates = CouponTemplateServiceClient::new(server.channel().await);
    let refused = templates
        .create_coupon_template(create_request("acme", template()))
        .await
        .expect_err("no key");
    assert_error(&refused, Code::Unauthenticated, "UNAUTHENTICATED");
    templates
        .create_coupon_template(with_key(create_request("acme", template()), key))
        .await
        .expect("the first admin's key");
}

#[test]
fn the_compose_file_runs_the_bootstrap_first_and_has_no_password_in_it() {
    let compose = compose_file();
    for expected in [
        r#"command: ["clients", "bootstrap", "--name", "admin"]"#,
        "condition: service_completed_successfully",
        "MARKETING_AUTH: required",
        "${POSTGRES_PASSWORD:?",
        "--requirepass",
        "${REDIS_PASSWORD:?",
        "MARKETING_GRPC_ADDR: 0.0.0.0:50051",
        // Prometheus scrapes every replica's /metrics inside the network; Grafana shows it.
        "MARKETING_METRICS_ADDR: 0.0.0.0:9464",
        "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml",
        "./deploy/grafana/dashboards:/var/lib/grafana/dashboards",
        "${GRAFANA_ADMIN_PASSWORD:?",
    ] {
        assert!(
            compose.contains(expected),
            "docker-compose.yml lacks {expected}"
        );
    }
    assert!(
        !compose.contains("POSTGRES_PASSWORD: marketing"),
        "a password written in the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_run_creates_one_admin_and_serves_closed() {
    let (url, name) = create_test_database().await;
    let first = clients(&url, &["bootstrap", "--name", "admin"]);
    let key = first.lines().last().expect("the key").trim().to_owned();
    assert!(key.starts_with("mk_"), "{first}");
    // Every later `up` runs it again: nothing happens.
    let again = clients(&url, &["bootstrap", "--name", "admin"]);
    assert!(again.contains("nothing to do"), "{again}");
    assert!(!again.contains("mk_"), "a key printed again: {again}");

    let server = serve(&url);
    assert_closed_but_open_to(&server, &key).await;
    drop(server);
    drop_test_database(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_admin_can_take_the_operators_key_from_a_secret_file() {
    let (url, name) = create_test_database().await;
    let key = clients(&url, &["new-key"]).trim().to_owned();
    let dir = std::env::temp_dir().join(format!("marketing-secret-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("admin_key");
    std::fs::write(&file, format!("{key}\n")).expect("the secret");
    let out = clients(
        &url,
        &[
            "bootstrap",
            "--name",
            "admin",
            "--key-file",
            file.to_str().expect("path"),
        ],
    );
    assert!(!out.contains(&key), "the secret was printed: {out}");
    let server = serve(&url);
    assert_closed_but_open_to(&server, &key).await;
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
    drop_test_database(&name).await;
}
