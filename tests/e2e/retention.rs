//! Records that only serve retries are kept for `MARKETING_RETENTION_SECS`, then deleted in
//! small batches: idempotency records (a retry after the window is a new request) and points
//! holds that finished. Held holds and everything else stay.

use std::time::Duration;

use marketing_storage::entity::{idempotency_record as record, points_hold as hold};
use marketing_tests::TestApp;
use sea_orm::{EntityTrait, PaginatorTrait};

use crate::{
    fixtures::{claim_request, create_template, template},
    points::{confirm, earn, freeze},
};

async fn count<E>(app: &TestApp) -> u64
where
    E: EntityTrait,
    E::Model: Sync,
{
    E::find()
        .count(app.state.shared().db.conn())
        .await
        .expect("count")
}

async fn records_past_their_retention_are_deleted(app: &TestApp) {
    let retention = app.config.retention;
    let mut points = app.points();
    let first = earn("kept-m", 100);
    let answered = points
        .earn_points(first.clone())
        .await
        .expect("earn")
        .into_inner();
    points
        .freeze_points(freeze("kept-m", 10, "o-done"))
        .await
        .expect("freeze");
    points
        .confirm_frozen_points(confirm("kept-m", "o-done", None))
        .await
        .expect("confirm");
    points
        .freeze_points(freeze("kept-m", 10, "o-held"))
        .await
        .expect("a hold that stays held");
    let template = create_template(app, "acme", template()).await;
    app.user_coupons()
        .claim_coupon(claim_request("acme", "kept-m", &template.id))
        .await
        .expect("claim");
    let records = count::<record::Entity>(app).await;
    assert_eq!(records, 6, "earn, 2 freezes, confirm, create, claim");

    // Within the window nothing goes; a retry replays.
    app.advance_clock(retention - Duration::from_secs(60));
    assert_eq!(
        app.state.retention.sweep_records(2).await.expect("sweep"),
        (0, 0)
    );
    let replay = points
        .earn_points(first.clone())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replay.transaction, answered.transaction);

    // Past it, in batches of 2: every record, and the one finished hold, not the held one.
    app.advance_clock(Duration::from_secs(120));
    let (deleted_records, deleted_holds) =
        app.state.retention.sweep_records(2).await.expect("sweep");
    assert_eq!((deleted_records, deleted_holds), (records, 1));
    assert_eq!(count::<record::Entity>(app).await, 0);
    let holds = hold::Entity::find()
        .all(app.state.shared().db.conn())
        .await
        .expect("holds");
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].order_id, "o-held");

    // The held hold is past its time too: released by the points sweep (run here, so the
    // balance does not depend on when the background sweeper's tick comes).
    app.state
        .points
        .sweep_points(500)
        .await
        .expect("points sweep");
    // The same request id now is a new request: a second earn.
    let again = points
        .earn_points(first)
        .await
        .expect("a new request")
        .into_inner();
    assert_ne!(again.transaction, answered.transaction);
    assert_eq!(again.points_account.expect("account").available, 190);
    // And it is kept like any new one.
    assert_eq!(
        app.state.retention.sweep_records(2).await.expect("sweep"),
        (0, 0)
    );
    assert_eq!(count::<record::Entity>(app).await, 1);
}

marketing_tests::backend_suite! {
    // The sweeper stays off: the test moves the clock and sweeps when it means to.
    with marketing_tests::Options {
        sweep_interval: Some(std::time::Duration::from_secs(3600)),
        ..marketing_tests::Options::default()
    };
    records_past_their_retention_are_deleted,
}
