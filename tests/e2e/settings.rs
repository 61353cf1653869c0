//! Tenants' settings: every tenant reads the defaults until it updates them; updates name
//! their fields, carry the etag, are idempotent and recorded as events; bad values are refused
//! with every field named; one tenant's settings never touch another's.

use marketing_proto::v1 as pb;
use marketing_tests::{TestApp, assert_error, assert_invalid};
use prost_types::FieldMask;
use tonic::Code;

use crate::fixtures::unique;

marketing_tests::backend_suite! {
    settings_start_at_the_defaults_and_change_under_their_etag,
    bad_settings_are_refused_with_every_field,
}

async fn get(app: &TestApp, tenant: &str) -> pb::TenantSettings {
    app.settings()
        .get_tenant_settings(pb::GetTenantSettingsRequest {
            tenant_id: tenant.into(),
        })
        .await
        .expect("settings")
        .into_inner()
        .tenant_settings
        .expect("settings")
}

fn update(
    tenant: &str,
    request_id: &str,
    settings: pb::TenantSettings,
    paths: &[&str],
) -> pb::UpdateTenantSettingsRequest {
    pb::UpdateTenantSettingsRequest {
        tenant_id: tenant.into(),
        request_id: request_id.into(),
        tenant_settings: Some(settings),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
    }
}

fn eur(points: i64, amount: i64) -> pb::PointsValue {
    pb::PointsValue {
        currency: "EUR".into(),
        points,
        amount,
    }
}

async fn settings_start_at_the_defaults_and_change_under_their_etag(app: &TestApp) {
    let defaults = get(app, "acme").await;
    assert_eq!(defaults.tenant_id, "acme");
    assert_eq!(defaults.version, 0);
    assert_eq!(defaults.max_points_share_bp, 10_000);
    assert!(defaults.points_values.is_empty());
    assert_eq!(defaults.max_coupons_per_order, 0);

    let request = unique("settings");
    let first = update(
        "acme",
        &request,
        pb::TenantSettings {
            points_values: vec![eur(100, 100)],
            max_coupons_per_order: 3,
            // Not named in the mask: ignored.
            max_points_share_bp: 1,
            ..Default::default()
        },
        &["points_values", "max_coupons_per_order"],
    );
    let updated = app
        .settings()
        .update_tenant_settings(first.clone())
        .await
        .expect("first update")
        .into_inner()
        .tenant_settings
        .expect("settings");
    assert_eq!(updated.version, 1);
    assert_eq!(updated.points_values, [eur(100, 100)]);
    assert_eq!(updated.max_coupons_per_order, 3);
    assert_eq!(updated.max_points_share_bp, 10_000);
    assert_eq!(get(app, "acme").await, updated);
    // A retry answers the first update; the same etag under another request id is stale.
    let replayed = app
        .settings()
        .update_tenant_settings(first)
        .await
        .expect("replayed")
        .into_inner()
        .tenant_settings;
    assert_eq!(replayed.as_ref(), Some(&updated));
    let stale = app
        .settings()
        .update_tenant_settings(update(
            "acme",
            &unique("settings"),
            pb::TenantSettings::default(),
            &["max_coupons_per_order"],
        ))
        .await
        .expect_err("version 0 is stale");
    assert_error(&stale, Code::Aborted, "VERSION_MISMATCH");

    let second = app
        .settings()
        .update_tenant_settings(update(
            "acme",
            &unique("settings"),
            pb::TenantSettings {
                version: 1,
                max_points_share_bp: 5_000,
                min_points_redemption: 50,
                ..Default::default()
            },
            &["max_points_share_bp", "min_points_redemption"],
        ))
        .await
        .expect("second update")
        .into_inner()
        .tenant_settings
        .expect("settings");
    assert_eq!(second.version, 2);
    assert_eq!(
        (second.max_points_share_bp, second.min_points_redemption),
        (5_000, 50)
    );
    assert_eq!(second.points_values, [eur(100, 100)], "kept");

    // Another tenant's settings are its own.
    assert_eq!(get(app, "globex").await.version, 0);

    // Each update is an event of the tenant, with the settings it left.
    let events = app
        .events()
        .list_events(pb::ListEventsRequest {
            tenant_id: "acme".into(),
            types: vec!["tenant_settings.updated".into()],
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner()
        .events;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].aggregate_type, "tenant_settings");
    assert_eq!(events[1].aggregate_id, "acme");
    let Some(pb::event::Payload::TenantSettings(payload)) = &events[1].payload else {
        panic!("a settings event: {:?}", events[1]);
    };
    assert_eq!(payload.tenant_settings.as_ref().map(|s| s.version), Some(2));
}

async fn bad_settings_are_refused_with_every_field(app: &TestApp) {
    let status = app
        .settings()
        .update_tenant_settings(update(
            "acme",
            &unique("settings"),
            pb::TenantSettings {
                points_values: vec![
                    eur(0, 1),
                    eur(1, 1),
                    pb::PointsValue {
                        currency: "euro".into(),
                        points: 1,
                        amount: 2_000_000_000,
                    },
                ],
                max_points_share_bp: 10_001,
                min_points_redemption: -1,
                max_coupons_per_order: 11,
                ..Default::default()
            },
            &["*"],
        ))
        .await
        .expect_err("invalid");
    assert_invalid(
        &status,
        &[
            "tenant_settings.points_values[0].points",
            "tenant_settings.points_values[1].currency",
            "tenant_settings.points_values[2].currency",
            "tenant_settings.points_values[2].amount",
            "tenant_settings.max_points_share_bp",
            "tenant_settings.min_points_redemption",
            "tenant_settings.max_coupons_per_order",
        ],
    );
    let status = app
        .settings()
        .update_tenant_settings(update(
            "acme",
            &unique("settings"),
            pb::TenantSettings::default(),
            &["tenant_id"],
        ))
        .await
        .expect_err("not updatable");
    assert_invalid(&status, &["update_mask"]);
    // Nothing was written.
    assert_eq!(get(app, "acme").await.version, 0);
}
