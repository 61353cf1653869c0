//! Migrations that move data: `m20261207_000014_packed_events` packs the rows of `events`
//! into one body per batch, and its way down unpacks them, on both backends; and every later
//! migration goes down and up again.

use marketing_migration::{
    Migrator, MigratorTrait,
    event_format::{PackedEvent, unpack},
};
use marketing_tests::{create_test_database, drop_test_database};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend,
    sea_query::{Alias, Expr, ExprTrait, Order, Query},
};
use uuid::Uuid;

/// Migrations before the packed events.
const BEFORE_PACKING: u32 = 13;

async fn old_event(db: &DatabaseConnection, batch: Uuid, seq: i32, aggregate: &str) -> Uuid {
    let id = Uuid::now_v7();
    let insert = Query::insert()
        .into_table(Alias::new("events"))
        .columns(
            [
                "batch_id",
                "seq",
                "id",
                "tenant_id",
                "event_type",
                "aggregate_type",
                "aggregate_id",
                "member_id",
                "occurred_at",
                "request_id",
                "actor",
                "payload",
            ]
            .map(Alias::new),
        )
        .values_panic([
            batch.into(),
            seq.into(),
            id.into(),
            "acme".into(),
            "coupon.claimed".into(),
            "user_coupon".into(),
            aggregate.into(),
            Some("m1").into(),
            (1_000 + i64::from(seq)).into(),
            None::<String>.into(),
            Some("till").into(),
            vec![seq as u8].into(),
        ])
        .to_owned();
    let backend = db.get_database_backend();
    db.execute_raw(backend.build(&insert))
        .await
        .expect("insert");
    id
}

async fn old_batch(db: &DatabaseConnection, position: i64) -> Uuid {
    let id = Uuid::now_v7();
    let insert = Query::insert()
        .into_table(Alias::new("event_batches"))
        .columns(["id", "tenant_id", "position"].map(Alias::new))
        .values_panic([id.into(), "acme".into(), position.into()])
        .to_owned();
    let backend = db.get_database_backend();
    db.execute_raw(backend.build(&insert))
        .await
        .expect("insert");
    id
}

async fn packed_and_unpacked(db: &DatabaseConnection) {
    Migrator::up(db, Some(BEFORE_PACKING))
        .await
        .expect("migrate to before packing");
    let first = old_batch(db, 1).await;
    let second = old_batch(db, 2).await;
    let ids = [
        old_event(db, first, 1, "c1").await,
        old_event(db, first, 2, "c2").await,
        old_event(db, second, 1, "c1").await,
    ];

    Migrator::up(db, Some(1)).await.expect("migrate up");
    let backend = db.get_database_backend();
    let select = Query::select()
        .columns(["batch_id", "events", "aggregates"].map(Alias::new))
        .from(Alias::new("event_bodies"))
        .order_by(Alias::new("batch_id"), Order::Asc)
        .to_owned();
    let bodies = db
        .query_all_raw(backend.build(&select))
        .await
        .expect("bodies");
    let read: Vec<(Uuid, Vec<PackedEvent>, String)> = bodies
        .iter()
        .map(|row| {
            let body: Vec<u8> = row.try_get("", "events").expect("events");
            (
                row.try_get("", "batch_id").expect("batch"),
                unpack(&body).expect("decodes"),
                row.try_get("", "aggregates").expect("aggregates"),
            )
        })
        .collect();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].0, first);
    let first_events: Vec<(&str, &[u8], Option<&str>)> = read[0]
        .1
        .iter()
        .map(|e| (e.aggregate_id.as_str(), e.id.as_slice(), e.actor.as_deref()))
        .collect();
    assert_eq!(
        first_events,
        [
            ("c1", ids[0].as_bytes().as_slice(), Some("till")),
            ("c2", ids[1].as_bytes().as_slice(), Some("till")),
        ],
        "in seq order, ids and fields kept"
    );
    assert_eq!(read[0].1[1].payload, [2]);
    assert_eq!(read[0].2, "user_coupon/c1 user_coupon/c2");
    assert_eq!(read[1].1.len(), 1);
    let select = Query::select()
        .columns(["first_at", "event_count"].map(Alias::new))
        .from(Alias::new("event_batches"))
        .and_where(Expr::col(Alias::new("id")).eq(first))
        .to_owned();
    let row = db
        .query_one_raw(backend.build(&select))
        .await
        .expect("batch")
        .expect("kept");
    assert_eq!(row.try_get::<i64>("", "first_at").expect("first_at"), 1_001);
    assert_eq!(row.try_get::<i32>("", "event_count").expect("count"), 2);

    // And back: every event a row again.
    Migrator::down(db, Some(1)).await.expect("migrate down");
    let select = Query::select()
        .columns(["id", "seq", "aggregate_id"].map(Alias::new))
        .from(Alias::new("events"))
        .order_by(Alias::new("batch_id"), Order::Asc)
        .order_by(Alias::new("seq"), Order::Asc)
        .to_owned();
    let rows = db
        .query_all_raw(backend.build(&select))
        .await
        .expect("rows");
    let back: Vec<(Uuid, i32, String)> = rows
        .iter()
        .map(|row| {
            (
                row.try_get("", "id").expect("id"),
                row.try_get("", "seq").expect("seq"),
                row.try_get("", "aggregate_id").expect("aggregate"),
            )
        })
        .collect();
    assert_eq!(
        back,
        [
            (ids[0], 1, "c1".to_owned()),
            (ids[1], 2, "c2".to_owned()),
            (ids[2], 1, "c1".to_owned()),
        ]
    );
}

/// Every migration after the packing goes down and up again.
async fn later_migrations_go_down_and_up(db: &DatabaseConnection) {
    Migrator::up(db, None).await.expect("migrate up");
    let later = Migrator::get_applied_migrations(db)
        .await
        .expect("applied")
        .len() as u32
        - BEFORE_PACKING
        - 1;
    Migrator::down(db, Some(later)).await.expect("migrate down");
    Migrator::up(db, None).await.expect("migrate up again");
}

#[tokio::test]
async fn packing_events_keeps_every_event_on_sqlite() {
    let db = Database::connect("sqlite::memory:").await.expect("connect");
    assert_eq!(db.get_database_backend(), DbBackend::Sqlite);
    packed_and_unpacked(&db).await;
    later_migrations_go_down_and_up(&db).await;
}

#[tokio::test]
async fn packing_events_keeps_every_event_on_postgres() {
    let (url, name) = create_test_database().await;
    let db = Database::connect(&url).await.expect("connect");
    packed_and_unpacked(&db).await;
    later_migrations_go_down_and_up(&db).await;
    db.close().await.expect("close");
    drop_test_database(&name).await;
}
