//! The schema itself keeps the invariants, whatever the application does.

use marketing_tests::{Backend, TestApp};
use sea_orm::{ConnectionTrait, Statement};

use crate::{
    fixtures::{create_request, template},
    points::{deduct, earn},
};

marketing_tests::backend_suite! {
    constraints_refuse_broken_stock_counters,
    a_lots_liveness_follows_its_remaining_points,
}

async fn constraints_refuse_broken_stock_counters(app: &TestApp) {
    let created = app
        .templates()
        .create_coupon_template(create_request("acme", template()))
        .await
        .expect("create")
        .into_inner()
        .coupon_template
        .expect("template");
    let db = app.state.shared().db.conn();
    // Ids are bound as text (PostgreSQL uuid; SQLite stores the 16 bytes, so compare via the
    // row itself): update every row of this fresh database.
    // The constraint each statement runs into: PostgreSQL's generated name, and SQLite's
    // account of the (unnamed) CHECK.
    for (broken, postgres, sqlite) in [
        (
            "UPDATE coupon_templates SET remaining_stock = -1, total_stock = total_stock - remaining_stock - 1",
            "coupon_templates_remaining_stock_check",
            "remaining_stock",
        ),
        // total_stock = remaining_stock + claimed_count
        (
            "UPDATE coupon_templates SET claimed_count = claimed_count + 1",
            "coupon_templates_check",
            "remaining_stock",
        ),
        // used_count BETWEEN 0 AND claimed_count
        (
            "UPDATE coupon_templates SET used_count = claimed_count + 1",
            "coupon_templates_check1",
            "used_count",
        ),
        (
            "UPDATE coupon_templates SET per_member_limit = 0",
            "coupon_templates_per_member_limit_check",
            "per_member_limit",
        ),
    ] {
        let err = db
            .execute_unprepared(broken)
            .await
            .expect_err(&format!("the schema accepted: {broken}"));
        let expected = match app.backend {
            Backend::PostgresRedis => postgres,
            Backend::Embedded => sqlite,
        };
        assert_eq!(
            violated_check(&err.to_string()),
            Some(expected),
            "{broken}: {err}"
        );
    }
    let current = app
        .templates()
        .get_coupon_template(marketing_proto::v1::GetCouponTemplateRequest {
            tenant_id: "acme".into(),
            template_id: created.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .coupon_template
        .expect("template");
    assert_eq!(current, created);
}

/// Lots are looked up by `live`, which the database derives from `remaining`: it follows every
/// change, and nobody can write it.
async fn a_lots_liveness_follows_its_remaining_points(app: &TestApp) {
    let mut points = app.points();
    points.earn_points(earn("m1", 10)).await.expect("earn");
    points
        .deduct_points(deduct("m1", 10))
        .await
        .expect("deduct");
    points.earn_points(earn("m1", 5)).await.expect("earn");
    let db = app.state.shared().db.conn();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT remaining, CASE WHEN live THEN 1 ELSE 0 END AS live FROM points_lots \
             ORDER BY remaining",
        ))
        .await
        .expect("lots");
    let lots: Vec<(i64, i32)> = rows
        .iter()
        .map(|row| {
            (
                row.try_get_by_index(0).expect("remaining"),
                row.try_get_by_index(1).expect("live"),
            )
        })
        .collect();
    assert_eq!(lots, [(0, 0), (5, 1)]);
    for forged in [
        "UPDATE points_lots SET live = NOT live",
        "UPDATE points_lots SET live = (remaining = 0)",
    ] {
        let err = db
            .execute_unprepared(forged)
            .await
            .expect_err(&format!("the schema accepted: {forged}"))
            .to_string();
        let refused = match app.backend {
            Backend::PostgresRedis => "column \"live\" can only be updated to DEFAULT",
            Backend::Embedded => "cannot UPDATE generated column \"live\"",
        };
        assert!(err.contains(refused), "{forged}: {err}");
    }
}

/// The CHECK constraint a database error names: PostgreSQL's `violates check constraint "x"`,
/// SQLite's `CHECK constraint failed: x`.
fn violated_check(message: &str) -> Option<&str> {
    if let Some((_, rest)) = message.split_once("violates check constraint \"") {
        return rest.split('"').next();
    }
    message
        .split_once("CHECK constraint failed: ")
        .map(|(_, rest)| rest.trim())
}
