//! The relay to Redis Streams (PostgreSQL + Redis only: embedded mode has none): every event,
//! in position order, in its tenant's stream, with the id `{position}-0` and the fields
//! `type`, `tenant_id`, `position` and `event`; relays racing add nothing twice and skip
//! nothing; Redis down or restarted empty loses nothing (the outbox re-fills the streams).

use std::time::Duration;

use marketing_proto::v1 as pb;
use marketing_tests::{Backend, TestApp, TestRedis, spawn_app};
use prost::Message;

use crate::fixtures::{claim_request, create_template, listed_events, template};

/// A stream's entries: (id, fields and values).
type Entries = Vec<(String, Vec<Vec<u8>>)>;

async fn xrange(redis_url: &str, key: &str) -> Entries {
    let client = deadpool_redis::redis::Client::open(redis_url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    deadpool_redis::redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE")
}

/// The entries `tenant`'s stream should hold: its events as the outbox lists them (the
/// `event` field decoded: its bytes need not be the canonical encoding, only parse as it).
fn expected(events: &[pb::Event]) -> Entries {
    events
        .iter()
        .map(|event| {
            let fields = [
                ("type", event.r#type.as_bytes().to_vec()),
                ("tenant_id", event.tenant_id.as_bytes().to_vec()),
                ("position", event.position.to_string().into_bytes()),
                ("event", event.encode_to_vec()),
            ]
            .into_iter()
            .flat_map(|(name, value)| [name.as_bytes().to_vec(), value])
            .collect();
            (format!("{}-0", event.position), fields)
        })
        .collect()
}

/// An entry with its `event` bytes re-encoded canonically (after checking they parse).
fn canonical((id, mut fields): (String, Vec<Vec<u8>>)) -> (String, Vec<Vec<u8>>) {
    if let Some(at) = fields.iter().position(|f| f == b"event")
        && let Some(bytes) = fields.get_mut(at + 1)
    {
        *bytes = pb::Event::decode(bytes.as_slice())
            .expect("an entry's event parses")
            .encode_to_vec();
    }
    (id, fields)
}

/// Waits until each of `tenants`' streams holds exactly its events, in order.
async fn streams_match_the_outbox(app: &TestApp, tenants: &[&str]) {
    let redis = app.config.redis_url.clone().expect("redis");
    for tenant in tenants {
        let want = expected(&listed_events(&app.channel, tenant).await);
        assert!(!want.is_empty());
        let key = app.state.events.stream_key(tenant).expect("a relay");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got: Entries = xrange(&redis, &key)
                .await
                .into_iter()
                .map(canonical)
                .collect();
            if got == want {
                break;
            }
            assert!(
                got.len() <= want.len() && got[..] == want[..got.len()],
                "{tenant}'s stream holds entries out of order, twice, or not the outbox's"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "{tenant}'s stream holds {} of {} events",
                got.len(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Claims of `members` members in `tenant`, one after another.
async fn claims(app: &TestApp, tenant: &str, template_id: &str, members: std::ops::Range<u32>) {
    let mut coupons = app.user_coupons();
    for n in members {
        coupons
            .claim_coupon(claim_request(tenant, &format!("m{n}"), template_id))
            .await
            .expect("claim");
    }
}

async fn stocked(app: &TestApp, tenant: &str) -> String {
    let mut big = template();
    big.total_stock = 1_000;
    create_template(app, tenant, big).await.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_relay_every_event_once_in_order_to_each_tenants_stream() {
    let first = spawn_app(Backend::PostgresRedis).await;
    let second = first.spawn_replica().await;
    let acme = stocked(&first, "acme").await;
    let globex = stocked(&second, "globex").await;
    // Both replicas' relays run all the while; and passes that ignore the lease race them,
    // as a relay whose lease lapsed mid-pass would.
    let racing: Vec<_> = (0..3)
        .map(|_| {
            let events = first.state.events.clone();
            tokio::spawn(async move {
                loop {
                    events.publish_pending().await.expect("a racing pass");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::join!(
        claims(&first, "acme", &acme, 0..30),
        claims(&second, "globex", &globex, 0..30),
        claims(&second, "acme", &acme, 30..60),
    );
    streams_match_the_outbox(&first, &["acme", "globex"]).await;
    for pass in racing {
        pass.abort();
    }
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_or_restarted_empty_loses_no_event() {
    let mut redis = TestRedis::start();
    let app = redis.spawn_app().await;
    let template_id = stocked(&app, "acme").await;
    claims(&app, "acme", &template_id, 0..10).await;
    streams_match_the_outbox(&app, &["acme"]).await;

    // Redis down: changes go on (on the database alone); their events wait in the outbox.
    redis.stop();
    claims(&app, "acme", &template_id, 10..20).await;
    // Back, empty (no persistence): the relay re-fills the stream from the outbox.
    redis.restart();
    claims(&app, "acme", &template_id, 20..25).await;
    streams_match_the_outbox(&app, &["acme"]).await;

    // Restarted empty mid-relay, while changes keep coming.
    let load = claims(&app, "acme", &template_id, 25..60);
    let restart = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        redis.restart();
    };
    tokio::join!(load, restart);
    streams_match_the_outbox(&app, &["acme"]).await;
    app.stop().await;
}

async fn redis_command(redis_url: &str, args: &[&str]) {
    let client = deadpool_redis::redis::Client::open(redis_url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let mut command = deadpool_redis::redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    let _: deadpool_redis::redis::Value = command.query_async(&mut conn).await.expect("command");
}

/// An entry Redis refuses for another reason than being there already (here its key holds
/// no stream) is added again by a later pass: the page's transaction does not move the cursor
/// past it, whatever else it added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_redis_refuses_is_added_later_never_skipped() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let redis = app.config.redis_url.clone().expect("redis");
    let globex_key = app.state.events.stream_key("globex").expect("a relay");
    redis_command(&redis, &["SET", &globex_key, "not a stream"]).await;
    let acme = stocked(&app, "acme").await;
    let globex = stocked(&app, "globex").await;
    claims(&app, "acme", &acme, 0..3).await;
    claims(&app, "globex", &globex, 0..3).await;
    claims(&app, "acme", &acme, 3..6).await;
    app.state.events.number_events().await.expect("numbered");
    assert!(
        app.state.events.publish_pending().await.is_err(),
        "a refused entry is the pass's error"
    );

    redis_command(&redis, &["DEL", &globex_key]).await;
    streams_match_the_outbox(&app, &["acme", "globex"]).await;
    app.stop().await;
}
