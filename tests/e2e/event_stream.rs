//! `StreamEvents`: the backlog, then each new event as it commits, then heartbeats; a consumer
//! that reconnects after its last position gets every event exactly once, in order, under
//! load; one tenant's stream never carries another's events; a client holds a bounded number
//! of streams; a consumer that stops reading is closed and resumes; neither the server's call
//! timeout nor the idle-connection timeout cuts a healthy stream; and a long stream holds
//! only its last frame of the connection's budget for unread bytes.

use std::time::Duration;

use marketing_domain::auth::Role;
use marketing_proto::v1 as pb;
use marketing_tests::{TestApp, assert_error, with_key};
use pb::stream_events_response::Kind;
use tonic::{Code, Status, Streaming};

use crate::fixtures::{api_client, claim_request, create_template, template, unique};

marketing_tests::backend_suite! {
    a_stream_sends_the_backlog_then_each_new_event_then_heartbeats,
    a_consumer_that_reconnects_mid_load_gets_every_event_once_in_order,
}

/// What a test waits at most for a message it expects.
const PATIENCE: Duration = Duration::from_secs(20);

fn request(tenant: &str, after: i64, types: &[&str]) -> pb::StreamEventsRequest {
    pb::StreamEventsRequest {
        tenant_id: tenant.into(),
        after_position: after,
        types: types.iter().map(|t| (*t).to_owned()).collect(),
    }
}

async fn open(app: &TestApp, tenant: &str, after: i64) -> Streaming<pb::StreamEventsResponse> {
    app.events()
        .stream_events(request(tenant, after, &[]))
        .await
        .expect("the stream opens")
        .into_inner()
}

/// The stream's next message (an error when it ends with one).
async fn next(stream: &mut Streaming<pb::StreamEventsResponse>) -> Result<Kind, Status> {
    let message = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a message in time")?
        .expect("the stream goes on");
    Ok(message.kind.expect("an event or a heartbeat"))
}

/// The next `n` events, heartbeats skipped.
async fn events(stream: &mut Streaming<pb::StreamEventsResponse>, n: usize) -> Vec<pb::Event> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        if let Kind::Event(event) = next(stream).await.expect("an event") {
            events.push(event);
        }
    }
    events
}

/// Every event of `tenant` as `ListEvents` pages them.
async fn listed(app: &TestApp, tenant: &str) -> Vec<pb::Event> {
    crate::fixtures::listed_events(&app.channel, tenant).await
}

async fn a_stream_sends_the_backlog_then_each_new_event_then_heartbeats(app: &TestApp) {
    let template = create_template(app, "acme", template()).await;
    app.user_coupons()
        .claim_coupon(claim_request("acme", "m1", &template.id))
        .await
        .expect("claim");
    create_template(app, "globex", crate::fixtures::template()).await;

    let mut stream = open(app, "acme", 0).await;
    let backlog = events(&mut stream, 2).await;
    assert_eq!(backlog, listed(app, "acme").await, "the backlog, as listed");

    // Then each new event as it commits; another tenant's never.
    create_template(app, "globex", crate::fixtures::template()).await;
    app.user_coupons()
        .claim_coupon(claim_request("acme", "m2", &template.id))
        .await
        .expect("claim");
    let live = events(&mut stream, 1).await.remove(0);
    assert_eq!(live.r#type, "coupon.claimed");
    assert_eq!(live.tenant_id, "acme");
    assert_eq!(live.member_id, "m2");
    assert!(live.position > backlog[1].position);

    // Nothing more: a heartbeat that says where the stream stands.
    match next(&mut stream).await.expect("a heartbeat") {
        Kind::Heartbeat(beat) => {
            assert_eq!(beat.last_position, live.position);
            assert!(beat.time.is_some());
        }
        Kind::Event(event) => panic!("an event nobody made: {event:?}"),
    }

    // Only the types asked for.
    let mut claims = app
        .events()
        .stream_events(request("acme", 0, &["coupon.claimed"]))
        .await
        .expect("open")
        .into_inner();
    let claimed = events(&mut claims, 2).await;
    assert!(claimed.iter().all(|e| e.r#type == "coupon.claimed"));
    assert_eq!(
        claimed
            .iter()
            .map(|e| e.member_id.as_str())
            .collect::<Vec<_>>(),
        ["m1", "m2"]
    );

    // A bad request is refused with every violation, before anything is sent.
    let refused = app
        .events()
        .stream_events(request("bad tenant", -1, &["no.such"]))
        .await
        .expect_err("refused");
    marketing_tests::assert_invalid(&refused, &["tenant_id", "after_position", "types[0]"]);
}

async fn a_consumer_that_reconnects_mid_load_gets_every_event_once_in_order(app: &TestApp) {
    let mut big = template();
    big.total_stock = 1_000;
    let acme = create_template(app, "acme", big.clone()).await;
    let globex = create_template(app, "globex", big).await;
    // Two tenants claim at once, on the same member ids.
    let load: Vec<_> = [("acme", acme.id), ("globex", globex.id)]
        .into_iter()
        .flat_map(|(tenant, template_id)| {
            (0..3).map(move |worker| {
                let mut coupons = app.user_coupons();
                let template_id = template_id.clone();
                async move {
                    for n in 0..20 {
                        let member = format!("m{worker}-{n}");
                        coupons
                            .claim_coupon(claim_request(tenant, &member, &template_id))
                            .await
                            .expect("claim");
                    }
                }
            })
        })
        .collect();
    let load = futures::future::join_all(load);

    let consume = async {
        let mut received = Vec::new();
        let mut stream = open(app, "acme", 0).await;
        received.extend(events(&mut stream, 15).await);
        // The consumer goes away mid-load, and comes back after the last position it got.
        drop(stream);
        let mut stream = open(app, "acme", received.last().expect("some").position).await;
        received.extend(events(&mut stream, 1 + 60 - 15).await);
        (received, stream)
    };
    let (_, (received, mut stream)) = tokio::join!(load, consume);
    let all = listed(app, "acme").await;
    assert_eq!(all.len(), 61, "created, and 60 claims");
    assert_eq!(received, all, "every event once, in position order");
    assert!(received.iter().all(|e| e.tenant_id == "acme"));
    // Nothing more than that comes.
    match next(&mut stream).await.expect("a heartbeat") {
        Kind::Heartbeat(_) => {}
        Kind::Event(event) => panic!("an event twice or of another tenant: {event:?}"),
    }
}

mod with_clients {
    use super::*;

    marketing_tests::backend_suite! {
        with marketing_tests::Options {
            auth: Some(marketing_server::config::AuthMode::Required),
            ..marketing_tests::Options::default()
        };
        a_client_holds_a_bounded_number_of_streams,
    }

    async fn a_client_holds_a_bounded_number_of_streams(app: &TestApp) {
        let reader = api_client(app, &unique("reader"), Role::Reader, Some(&["acme"])).await;
        let other = api_client(app, &unique("other"), Role::Checkout, Some(&["acme"])).await;
        let limit = app.config.event_streams_per_client;
        let open_as = |key: String| {
            let mut client = app.events();
            async move {
                client
                    .stream_events(with_key(request("acme", 0, &[]), &key))
                    .await
                    .map(tonic::Response::into_inner)
            }
        };
        let mut held = Vec::new();
        for _ in 0..limit {
            held.push(open_as(reader.clone()).await.expect("within the bound"));
        }
        let refused = open_as(reader.clone()).await.expect_err("past the bound");
        assert_error(&refused, Code::ResourceExhausted, "TOO_MANY_STREAMS");
        // Another client is not held back by it.
        let _others = open_as(other.clone())
            .await
            .expect("another client's stream");
        // A stream closed gives its place back.
        held.pop();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match open_as(reader.clone()).await {
                Ok(stream) => {
                    held.push(stream);
                    break;
                }
                Err(status) if tokio::time::Instant::now() < deadline => {
                    assert_error(&status, Code::ResourceExhausted, "TOO_MANY_STREAMS");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("the closed stream's place never came back: {status:?}"),
            }
        }
        // A tenant the client may not act for is refused.
        let foreign = app
            .events()
            .stream_events(with_key(request("globex", 0, &[]), &other))
            .await
            .expect_err("not its tenant");
        assert_error(&foreign, Code::PermissionDenied, "TENANT_NOT_ALLOWED");
    }
}

/// A distribution of `members` new members of `template_id` in `tenant`: that many events.
async fn distribute(app: &TestApp, tenant: &str, template_id: &str, members: usize) {
    app.user_coupons()
        .distribute_coupons(pb::DistributeCouponsRequest {
            tenant_id: tenant.into(),
            template_id: template_id.into(),
            request_id: unique("distribute"),
            member_ids: (0..members).map(|n| unique(&format!("d{n}"))).collect(),
            allow_partial: false,
        })
        .await
        .expect("distribute");
}

async fn stocked(app: &TestApp, tenant: &str, stock: i64) -> String {
    let mut big = template();
    big.total_stock = stock;
    create_template(app, tenant, big).await.id
}

mod stalled {
    use super::*;

    marketing_tests::backend_suite! {
        with marketing_tests::Options {
            configure: Some(crate::event_stream::stalled::small_buffer),
            ..marketing_tests::Options::default()
        };
        a_consumer_that_stops_reading_is_closed_and_resumes_from_its_last_position,
    }

    fn small_buffer(config: &mut marketing_server::Config) {
        config.event_stream_buffer = 10;
        config.event_stream_stall = Duration::from_millis(300);
    }

    async fn a_consumer_that_stops_reading_is_closed_and_resumes_from_its_last_position(
        app: &TestApp,
    ) {
        let template_id = stocked(app, "acme", 2_000).await;
        distribute(app, "acme", &template_id, 1_500).await;
        // A consumer granting the stream a 64 KiB window (the HTTP/2 default; tonic's is
        // 2 MiB), so that what it leaves unread stops at the server soon.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
            .expect("address")
            .initial_stream_window_size(64 * 1024)
            .connect()
            .await
            .expect("connect");
        let mut stream =
            marketing_proto::v1::event_service_client::EventServiceClient::new(channel)
                .stream_events(request("acme", 0, &[]))
                .await
                .expect("open")
                .into_inner();
        // The consumer reads nothing while its window and buffer fill, and longer than the
        // stall time.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut received = Vec::new();
        let closed = loop {
            match next(&mut stream).await {
                Ok(Kind::Event(event)) => received.push(event),
                Ok(Kind::Heartbeat(beat)) => panic!("a heartbeat with events waiting: {beat:?}"),
                Err(status) => break status,
            }
        };
        assert_error(&closed, Code::ResourceExhausted, "STREAM_BACKLOG_FULL");
        assert!(
            !received.is_empty() && received.len() < 1_501,
            "closed before the backlog was sent: {} events",
            received.len()
        );
        // It resumes after the last event it got, and gets the rest exactly once.
        let after = received.last().expect("some").position;
        let mut stream = open(app, "acme", after).await;
        let rest = events(&mut stream, 1_501 - received.len()).await;
        received.extend(rest);
        assert_eq!(received, listed(app, "acme").await);
    }
}

mod long_lived {
    use super::*;

    marketing_tests::backend_suite! {
        with marketing_tests::Options {
            configure: Some(crate::event_stream::long_lived::short_timeouts),
            ..marketing_tests::Options::default()
        };
        neither_the_call_timeout_nor_the_idle_timeout_cuts_a_healthy_stream,
        a_long_stream_holds_only_its_last_frame_of_the_connections_budget,
    }

    fn short_timeouts(config: &mut marketing_server::Config) {
        config.call_timeout = Duration::from_secs(1);
        config.transport.idle_timeout = Duration::from_millis(500);
        config.transport.unsent_bytes_per_connection = 1 << 20;
    }

    async fn neither_the_call_timeout_nor_the_idle_timeout_cuts_a_healthy_stream(app: &TestApp) {
        let template_id = stocked(app, "acme", 100).await;
        let mut stream = open(app, "acme", 0).await;
        events(&mut stream, 1).await;
        // Three times the call timeout and six times the idle timeout, with heartbeats only.
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut beats = 0;
        while tokio::time::Instant::now() < until {
            match next(&mut stream).await.expect("the stream lives") {
                Kind::Heartbeat(_) => beats += 1,
                Kind::Event(event) => panic!("an event nobody made: {event:?}"),
            }
        }
        assert!(beats >= 3, "heartbeats every 500 ms: {beats}");
        app.user_coupons()
            .claim_coupon(claim_request("acme", "late", &template_id))
            .await
            .expect("claim");
        let late = events(&mut stream, 1).await.remove(0);
        assert_eq!(late.member_id, "late");
    }

    async fn a_long_stream_holds_only_its_last_frame_of_the_connections_budget(app: &TestApp) {
        let template_id = stocked(app, "acme", 10_000).await;
        // (Each answer within the connection's budget.)
        for _ in 0..4 {
            distribute(app, "acme", &template_id, 1_500).await;
        }
        let mut stream = open(app, "acme", 0).await;
        let sent = events(&mut stream, 6_001).await;
        let bytes: usize = sent.iter().map(prost::Message::encoded_len).sum();
        assert!(
            bytes > 1 << 20,
            "the stream sent {bytes} bytes, past the budget"
        );
        // With the stream still open, a large answer on the same connection is served: the
        // stream no longer holds what it sent.
        let page = app
            .events()
            .list_events(pb::ListEventsRequest {
                tenant_id: "acme".into(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .expect("a large answer beside a long stream")
            .into_inner();
        assert!(prost::Message::encoded_len(&page) > 64 * 1024);
        drop(stream);
    }
}
