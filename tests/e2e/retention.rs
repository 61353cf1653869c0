//! Records that only serve retries are kept for `MARKETING_RETENTION_SECS`, then deleted in
//! small batches: idempotency records (a retry after the window is a new request) and points
//! holds that finished. Held holds and everything else stay.

use std::time::Duration;

use marketing_proto::v1 as pb;
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
        .sweep_points(500, std::time::Duration::from_secs(5))
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
    events_past_their_retention_are_deleted_and_reading_past_them_is_refused,
}

async fn list_events(
    app: &TestApp,
    tenant: &str,
    after: i64,
) -> Result<Vec<pb::Event>, tonic::Status> {
    app.events()
        .list_events(pb::ListEventsRequest {
            tenant_id: tenant.into(),
            after_position: after,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .map(|answer| answer.into_inner().events)
}

async fn events_past_their_retention_are_deleted_and_reading_past_them_is_refused(app: &TestApp) {
    let days = app.config.events_retention_days;
    let template = create_template(app, "acme", template()).await;
    for member in ["m1", "m2"] {
        app.user_coupons()
            .claim_coupon(claim_request("acme", member, &template.id))
            .await
            .expect("claim");
    }
    create_template(app, "globex", crate::fixtures::template()).await;
    let old = list_events(app, "acme", 0).await.expect("list");
    assert_eq!(old.len(), 3, "created, claimed twice");

    // Within the window nothing goes.
    app.advance_clock(Duration::from_secs(days * 86_400 - 60));
    assert_eq!(app.state.retention.sweep_events(1).await.expect("sweep"), 0);
    app.advance_clock(Duration::from_secs(120));
    app.user_coupons()
        .claim_coupon(claim_request("acme", "m3", &template.id))
        .await
        .expect("a claim inside the window");
    let kept = list_events(app, "acme", 0).await.expect("list");
    assert_eq!(kept.len(), 4);
    let newest = kept[3].position;

    // Past it, one change's batch per unit: the four old changes go (both tenants'), in
    // position order, and the new one stays.
    assert_eq!(app.state.retention.sweep_events(1).await.expect("sweep"), 4);
    let left = list_events(app, "acme", 0)
        .await
        .expect("from the oldest kept");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].position, newest);
    assert!(
        list_events(app, "globex", 0)
            .await
            .expect("list")
            .is_empty()
    );

    // A reader after a deleted position would miss events: refused, never skipped.
    for after in [old[0].position, old[1].position] {
        let status = list_events(app, "acme", after).await.expect_err("expired");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let details = tonic_types::StatusExt::get_error_details(&status);
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "EVENTS_EXPIRED");
        let through: i64 = info.metadata["expired_through"]
            .parse()
            .expect("a position");
        assert_eq!(through, old[2].position, "acme's last event deleted");
        // Reading on from where it says misses nothing that is kept.
        let resumed = list_events(app, "acme", through).await.expect("resumed");
        assert_eq!(resumed, left);
    }
    // A reader that read every deleted event of its tenant is served, though other tenants'
    // later events were deleted too.
    let globex = app
        .events()
        .list_events(pb::ListEventsRequest {
            tenant_id: "globex".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(globex.events.is_empty());
    assert_eq!(
        list_events(app, "acme", old[2].position)
            .await
            .expect("kept"),
        left,
        "a reader that read every deleted acme event"
    );
}
