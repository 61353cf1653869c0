//! API clients, managed from the binary as operators and scripts do: created (the key alone
//! on the last line, stored only as its digest), listed, revoked; bad input refused.

use std::process::{Command, Output};

use marketing_domain::auth::{Role, Tenants, digests_match, split_key};
use marketing_server::app::clients::key_digest;
use marketing_storage::clients::ClientReads;
use marketing_tests::{TestApp, server_binary};

fn run(app: &TestApp, args: &[&str]) -> Output {
    let url = app
        .state
        .shared()
        .config
        .database_url
        .clone()
        .expect("the test's database");
    Command::new(server_binary())
        .env_clear()
        .env("MARKETING_DATABASE_URL", url)
        .env("MARKETING_DATA_DIR", std::env::temp_dir())
        .args(args)
        .output()
        .expect("run the server binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn operators_create_list_and_revoke_clients(app: &TestApp) {
    let created = run(
        app,
        &[
            "clients",
            "create",
            "--name",
            "checkout-eu",
            "--role",
            "checkout",
            "--tenant",
            "acme",
            "--tenant",
            "beta",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    let text = stdout(&created);
    let key = text.lines().last().expect("the key's line").trim();
    let (key_id, _) = split_key(key).expect("a key's shape");
    let stored = app
        .state
        .shared()
        .db
        .clients()
        .find_by_key_id(key_id)
        .await
        .expect("q")
        .expect("the client");
    assert!(digests_match(&stored.key_digest, &key_digest(key)));
    assert_ne!(
        stored.key_digest,
        key.as_bytes(),
        "the key itself is not stored"
    );
    assert_eq!(stored.client.name, "checkout-eu");
    assert_eq!(stored.client.role, Role::Checkout);
    assert!(matches!(&stored.client.tenants, Tenants::Only(t) if t.len() == 2));
    assert_eq!(stored.client.revoked_at, None);

    let admin = run(
        app,
        &[
            "clients",
            "create",
            "--name",
            "ops",
            "--role",
            "admin",
            "--all-tenants",
        ],
    );
    assert!(admin.status.success(), "{admin:?}");
    assert_ne!(stdout(&admin).lines().last(), Some(key), "keys are fresh");

    let taken = run(
        app,
        &[
            "clients",
            "create",
            "--name",
            "ops",
            "--role",
            "reader",
            "--all-tenants",
        ],
    );
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("exists"));
    for bad in [
        &[
            "clients",
            "create",
            "--name",
            "x",
            "--role",
            "root",
            "--all-tenants",
        ][..],
        &["clients", "create", "--name", "x", "--role", "reader"],
        &[
            "clients",
            "create",
            "--name",
            "bad name",
            "--role",
            "reader",
            "--all-tenants",
        ],
        &[
            "clients", "create", "--name", "x", "--role", "reader", "--tenant", "a b",
        ],
    ] {
        let refused = run(app, bad);
        assert!(!refused.status.success(), "{bad:?} was accepted");
    }

    let listed = stdout(&run(app, &["clients", "list"]));
    let row = |name: &str| {
        listed
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("checkout-eu")[1..3], ["checkout", "active"]);
    assert_eq!(row("checkout-eu").last(), Some(&"acme,beta"));
    assert_eq!(row("ops").last(), Some(&"*"));
    assert!(!listed.contains(key), "list never shows keys");

    let revoked = run(app, &["clients", "revoke", "--name", "checkout-eu"]);
    assert!(revoked.status.success(), "{revoked:?}");
    assert!(
        !run(app, &["clients", "revoke", "--name", "checkout-eu"])
            .status
            .success()
    );
    assert!(
        !run(app, &["clients", "revoke", "--name", "nobody"])
            .status
            .success()
    );
    let listed = stdout(&run(app, &["clients", "list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("checkout-eu") && l.contains("revoked"))
    );
    let stored = app
        .state
        .shared()
        .db
        .clients()
        .find_by_key_id(key_id)
        .await
        .expect("q")
        .expect("the client");
    assert!(stored.client.revoked_at.is_some());
    assert_eq!(
        app.state
            .shared()
            .db
            .clients()
            .count_active()
            .await
            .expect("q"),
        1
    );
}

#[test]
fn every_command_line_has_help() {
    for args in [
        &["--help"][..],
        &["clients", "--help"],
        &["clients", "create", "--help"],
        &["clients", "revoke", "--help"],
    ] {
        let output = Command::new(server_binary())
            .args(args)
            .output()
            .expect("run");
        assert!(output.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("Usage:"));
    }
}

marketing_tests::backend_suite! {
    operators_create_list_and_revoke_clients,
}
