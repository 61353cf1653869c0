//! The schema itself keeps the invariants, whatever the application does.

use marketing_tests::TestApp;
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
    let db = app.state.db.conn();
    // Ids are bound as text (PostgreSQL uuid; SQLite stores the 16 bytes, so compare via the
    // row itself): update every row of this fresh database.
    for broken in [
        "UPDATE coupon_templates SET remaining_stock = -1, total_stock = total_stock - remaining_stock - 1",
        "UPDATE coupon_templates SET claimed_count = claimed_count + 1",
        "UPDATE coupon_templates SET used_count = claimed_count + 1",
        "UPDATE coupon_templates SET per_member_limit = 0",
    ] {
        let result = db.execute_unprepared(broken).await;
        assert!(result.is_err(), "the schema accepted: {broken}");
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
    let db = app.state.db.conn();
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
        assert!(
            db.execute_unprepared(forged).await.is_err(),
            "the schema accepted: {forged}"
        );
    }
}
