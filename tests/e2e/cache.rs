//! The two-level template cache across replicas: a change made on one replica is served by the
//! others within a second, although they had it cached.

use std::time::{Duration, Instant};

use marketing_proto::v1 as pb;
use marketing_tests::Backend;

use crate::fixtures::{create_template, template, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_reaches_the_others_within_a_second() {
    let app = marketing_tests::spawn_app(Backend::PostgresRedis).await;
    let replica = app.spawn_replica().await;
    let created = create_template(&app, "acme", template()).await;
    let get = pb::GetCouponTemplateRequest {
        tenant_id: "acme".into(),
        template_id: created.id.clone(),
    };
    let mut reader = replica.templates();
    // Warm the replica's own (in-process) level.
    for _ in 0..3 {
        reader.get_coupon_template(get.clone()).await.expect("get");
    }
    assert!(
        replica.state.cache.stats().local_hits > 0,
        "the replica serves from its own level"
    );

    let mut change = created.clone();
    change.name = "Renamed on the other replica".into();
    app.templates()
        .update_coupon_template(pb::UpdateCouponTemplateRequest {
            tenant_id: "acme".into(),
            request_id: unique("rename"),
            coupon_template: Some(change),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .expect("update");
    let changed = Instant::now();
    let mut seen = None;
    while changed.elapsed() < Duration::from_secs(1) {
        let shown = reader
            .get_coupon_template(get.clone())
            .await
            .expect("get")
            .into_inner();
        let shown = shown.coupon_template.expect("template");
        if shown.version == 2 {
            seen = Some(shown);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.expect("the replica serves the new version within a second");
    assert_eq!(seen.name, "Renamed on the other replica");
    assert!(
        replica.state.cache.stats().remote_evictions > 0,
        "the replica heard the eviction"
    );
    replica.stop().await;
    app.stop().await;
}
