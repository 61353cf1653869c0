//! The schema itself keeps the invariants, whatever the application does.

use marketing_tests::TestApp;
use sea_orm::ConnectionTrait;

use crate::fixtures::{create_request, template};

marketing_tests::backend_suite! {
    constraints_refuse_broken_stock_counters,
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
