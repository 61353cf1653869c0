//! Background work costs what is due, not what is stored: on PostgreSQL, with tables full
//! enough (and statistics saying so) that the plan choice matters, every sweeper's read and a
//! page of a long ledger walk their index in order and stop: no sequential scan of the swept
//! table, no sort of everything that matched. Checked on the statements the server runs, as
//! its connections plan them (generic plans), with `EXPLAIN`.

use marketing_domain::UnixMicros;
use marketing_proto::v1 as pb;
use marketing_storage::{idempotency, points, user_coupons};
use marketing_tests::{Backend, Options, TestApp, spawn_app_with};
use sea_orm::{ConnectionTrait, Statement};
use uuid::Uuid;

use crate::fixtures::{create_template, template};

/// Rows of each swept table: enough that scanning them all costs more than walking an index.
const ROWS: i64 = 200_000;

/// The plan of `statement` as the server's connections make it, one line per row of
/// `EXPLAIN` (node lines start with the node's type: `Index Scan using <index> on <table>`).
async fn plan_of(app: &TestApp, statement: &Statement) -> Vec<String> {
    let explain = Statement {
        sql: format!("EXPLAIN {}", statement.sql),
        ..statement.clone()
    };
    app.state
        .shared()
        .db
        .conn()
        .query_all_raw(explain)
        .await
        .expect("explain")
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("a plan line"))
        .collect()
}

/// Fills the swept tables: `ROWS` coupons, lots and holds, all due (so the statistics expect
/// many rows to match, the case where a planner prefers a scan), and a ledger of `ROWS`
/// entries for one account.
async fn fill(app: &TestApp) -> Uuid {
    let template = create_template(app, "acme", template()).await;
    let account = app
        .points()
        .earn_points(pb::EarnPointsRequest {
            tenant_id: "acme".into(),
            member_id: "long-ledger".into(),
            request_id: "plans-earn".into(),
            source: Some(pb::earn_points_request::Source::Amount(10)),
            ..Default::default()
        })
        .await
        .expect("earn")
        .into_inner()
        .points_account
        .expect("account");
    let account: Uuid = sqlx_uuid(app, &account.member_id).await;
    let past = UnixMicros::now().0 - 86_400_000_000;
    let statements = [
        format!(
            "INSERT INTO user_coupons (id, tenant_id, template_id, member_id, claim_slot, status, \
             discount_type, discount_amount, currency, min_spend_amount, valid_from_at, \
             valid_until_at, claimed_at, version, updated_at) \
             SELECT gen_random_uuid(), 'acme', '{template}', 'm' || g, 1, 1, 1, 100, 'EUR', 0, \
             {past} - 1000, {past} + g, {past} - 1000, 1, {past} \
             FROM generate_series(1, {ROWS}) g",
            template = template.id
        ),
        format!(
            "INSERT INTO points_lots (id, tenant_id, account_id, earn_transaction_id, amount, \
             remaining, frozen, expires_at, created_at) \
             SELECT gen_random_uuid(), 'acme', '{account}', gen_random_uuid(), 10, 10, 0, \
             {past} + g, {past} FROM generate_series(1, {ROWS}) g"
        ),
        format!(
            "INSERT INTO points_holds (id, tenant_id, account_id, member_id, order_id, status, \
             amount, confirmed_amount, expires_at, created_at, updated_at) \
             SELECT gen_random_uuid(), 'acme', '{account}', 'long-ledger', 'o' || g, 1, 1, 0, \
             {past} + g, {past}, {past} FROM generate_series(1, {ROWS}) g"
        ),
        format!(
            "INSERT INTO points_transactions (id, tenant_id, account_id, member_id, tx_type, \
             amount, frozen_amount, available_after, frozen_after, description, account_version, \
             position, created_at) \
             SELECT gen_random_uuid(), 'acme', '{account}', 'long-ledger', 1, 1, 0, g, 0, '', \
             1000 + g, 0, {past} + g FROM generate_series(1, {ROWS}) g"
        ),
        // Records of requests answered in the last hours, none past the retention.
        format!(
            "INSERT INTO idempotency_records (tenant_id, request_id, client, operation, \
             fingerprint, status_code, response, created_at) \
             SELECT 'acme', 'r' || g, '', 'EarnPoints', '\\x00', 0, '\\x00', \
             {now} - 3600000000 + g FROM generate_series(1, {ROWS}) g",
            now = UnixMicros::now().0
        ),
        // What the benchmark does after its warm-up; the product must not depend on it, but
        // the statistics must say the tables are big for the plan choice to matter.
        "ANALYZE user_coupons, points_lots, points_holds, points_transactions, \
         idempotency_records"
            .to_owned(),
    ];
    for sql in statements {
        app.state
            .shared()
            .db
            .conn()
            .execute_unprepared(&sql)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }
    account
}

async fn sqlx_uuid(app: &TestApp, member: &str) -> Uuid {
    let row = app
        .state
        .shared()
        .db
        .conn()
        .query_one_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT id FROM points_accounts WHERE tenant_id = 'acme' AND member_id = $1",
            [member.into()],
        ))
        .await
        .expect("read the account")
        .expect("the account");
    row.try_get_by_index(0).expect("its id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweepers_and_ledger_pages_walk_their_indexes() {
    // The sweepers stay off: the rows are for the planner, not to be swept.
    let app = spawn_app_with(
        Backend::PostgresRedis,
        Options {
            sweep_interval: Some(std::time::Duration::from_secs(3600)),
            ..Options::default()
        },
    )
    .await;
    let account = fill(&app).await;
    let now = UnixMicros::now();
    let backend = sea_orm::DbBackend::Postgres;
    let retained_from = UnixMicros(now.0 - 7 * 86_400_000_000);
    let mut reads = user_coupons::sweeper_reads(backend, now, 500);
    reads.extend(points::sweeper_reads(backend, now, 500, account));
    reads.extend(idempotency::sweeper_reads(backend, retained_from, 500));
    let expected = [
        ("coupon locks lapsed", "idx_user_coupons_lock_expiring"),
        ("coupons expired", "idx_user_coupons_expiring"),
        ("points lots due", "idx_points_lots_expiring"),
        ("points holds due", "idx_points_holds_expiring"),
        ("points holds past retention", "idx_points_holds_finished"),
        ("ledger page", "uq_points_transactions_sequence"),
        (
            "idempotency records past retention",
            "idx_idempotency_records_created",
        ),
    ];
    assert_eq!(
        reads.len(),
        expected.len(),
        "a read without an expected index"
    );
    let mut wrong = Vec::new();
    for ((name, statement), (expected_name, index)) in reads.iter().zip(expected) {
        assert_eq!(*name, expected_name);
        let text = plan_of(&app, statement).await.join("\n");
        // `Index Scan using <index> on`, or `Bitmap Index Scan on <index>` (BRIN).
        let walks = text.contains(&format!(" using {index} on "))
            || text.contains(&format!("Index Scan on {index}"));
        if !walks || text.contains("Seq Scan") || text.contains("Sort") {
            wrong.push(format!("{name} (expected a walk of {index}):\n{text}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    app.stop().await;
}
