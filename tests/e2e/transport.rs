//! The transport against hostile clients: silent, half-open and idle connections are closed in
//! their time while busy ones stay; the connection cap refuses (and logs) what is past it;
//! clients that never read their responses cannot grow the server's memory. Health answers
//! throughout.
//!
//! The transport is the same on every backend, so these run on the embedded one; the memory
//! test runs the real binary (with its allocator) in its own process, to measure its RSS alone.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use marketing_proto::v1::{
    self as pb, coupon_template_service_client::CouponTemplateServiceClient,
    user_coupon_service_client::UserCouponServiceClient,
};
use marketing_server::config::TransportConfig;
use marketing_tests::{Backend, Options, ServerProcess, spawn_app_with};
use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::fixtures::{create_request, template, unique};

fn options(transport: TransportConfig) -> Options {
    Options {
        transport: Some(transport),
        ..Options::default()
    }
}

/// Reads until the server closes `stream`; how long that took. Panics if it stays open
/// `within`.
/// How long after `since` the server closed `stream`, waiting at most `within` from now.
async fn closed_within(mut stream: TcpStream, since: Instant, within: Duration) -> Duration {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return since.elapsed(),
            // The server's own SETTINGS frame, and the like.
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection is still open after {within:?}"),
        }
    }
}

/// A gRPC frame: uncompressed flag, big-endian length, message.
fn grpc_frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&body);
    frame.into()
}

fn grpc_request(addr: std::net::SocketAddr, path: &str) -> http::Request<()> {
    http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("valid request")
}

/// A health check over a raw HTTP/2 connection (so the test knows it is this connection that
/// answers); its `grpc-status`.
async fn health_on(send: &h2::client::SendRequest<Bytes>, addr: std::net::SocketAddr) -> String {
    let mut send = send.clone().ready().await.expect("connection open");
    let (response, mut body) = send
        .send_request(grpc_request(addr, "/grpc.health.v1.Health/Check"), false)
        .expect("send headers");
    body.send_data(grpc_frame(&HealthCheckRequest::default()), true)
        .expect("send message");
    let mut recv = response.await.expect("response").into_body();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("data");
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    let trailers = recv.trailers().await.expect("trailers").expect("some");
    trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn serving(channel: Channel) -> bool {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status == ServingStatus::Serving as i32)
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_open_and_idle_connections_are_closed_and_busy_ones_stay() {
    let handshake = Duration::from_millis(300);
    let idle = Duration::from_millis(800);
    let app = spawn_app_with(
        Backend::Embedded,
        options(TransportConfig {
            handshake_timeout: handshake,
            idle_timeout: idle,
            ..TransportConfig::default()
        }),
    )
    .await;
    // Taken before connecting: the server's deadline runs from its accept, which comes later.
    let silent_since = Instant::now();
    let silent = TcpStream::connect(app.addr).await.expect("connect");
    let half_since = Instant::now();
    let mut half = TcpStream::connect(app.addr).await.expect("connect");
    half.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    let idle_conn = TcpStream::connect(app.addr).await.expect("connect");
    let (_idle_send, idle_connection) = h2::client::handshake(idle_conn).await.expect("handshake");
    let idle_closed = tokio::spawn(async move {
        let start = Instant::now();
        let _ = idle_connection.await;
        start.elapsed()
    });
    let busy = TcpStream::connect(app.addr).await.expect("connect");
    let (busy_send, busy_connection) = h2::client::handshake(busy).await.expect("handshake");
    let busy_open = tokio::spawn(busy_connection);

    let (silent_after, half_after) = tokio::join!(
        closed_within(silent, silent_since, Duration::from_secs(10)),
        closed_within(half, half_since, Duration::from_secs(10))
    );
    assert!(silent_after >= handshake, "{silent_after:?}");
    assert!(half_after >= handshake, "{half_after:?}");

    // A connection with a call every 200 ms stays open well past the idle timeout.
    let until = Instant::now() + idle * 3;
    let mut calls = 0;
    while Instant::now() < until {
        assert_eq!(health_on(&busy_send, app.addr).await, "0");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(calls >= 5, "{calls} calls");
    assert!(!busy_open.is_finished(), "a busy connection is never idle");

    let idle_after = tokio::time::timeout(Duration::from_secs(10), idle_closed)
        .await
        .expect("an idle connection is closed")
        .expect("join");
    assert!(idle_after >= idle, "{idle_after:?}");
    assert!(
        app.transport.counters.handshake_timeouts.load(Relaxed) >= 2,
        "both counted"
    );
    assert!(app.transport.counters.idle_closes.load(Relaxed) >= 1);
    // The replica's one list of counters reads the same.
    let counters = app.state.counters(&app.transport.counters);
    let idle_closes = counters
        .iter()
        .find(|c| c.name == "marketing_idle_closes_total")
        .expect("listed");
    assert_eq!(
        idle_closes.value,
        app.transport.counters.idle_closes.load(Relaxed)
    );
    assert!(
        serving(app.channel.clone()).await,
        "health answers throughout"
    );
    drop(busy_send);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_a_silent_connection_makes_room_else_new_ones_are_refused() {
    let app = spawn_app_with(
        Backend::Embedded,
        options(TransportConfig {
            max_connections: 3,
            handshake_timeout: Duration::from_secs(60),
            ..TransportConfig::default()
        }),
    )
    .await;
    // The test's own channel is the first connection, and calls: it is a client's.
    let mut templates = CouponTemplateServiceClient::new(app.channel.clone());
    templates
        .create_coupon_template(create_request("acme", template()))
        .await
        .expect("a call");
    // A connection that never calls is closed for a new one at the cap.
    let silent = TcpStream::connect(app.addr).await.expect("connect");
    let second = connected(&app).await;
    let third = connected(&app).await;
    closed_within(silent, Instant::now(), Duration::from_secs(10)).await;
    assert_eq!(app.transport.counters.evicted_connections.load(Relaxed), 1);
    // Once every connection has made a call, the next is refused.
    for channel in [&second, &third] {
        CouponTemplateServiceClient::new(channel.clone())
            .create_coupon_template(create_request("acme", template()))
            .await
            .expect("a call");
    }
    let refused = TcpStream::connect(app.addr)
        .await
        .expect("TCP itself connects");
    closed_within(refused, Instant::now(), Duration::from_secs(10)).await;
    assert_eq!(app.transport.counters.refused_connections.load(Relaxed), 1);
    assert!(
        serving(app.channel.clone()).await,
        "connections within the cap are served"
    );

    drop((second, templates));
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.transport.open_connections() > 2 {
        assert!(
            Instant::now() < deadline,
            "the closed connection frees its place"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .connect()
        .await
        .expect("a place is free again");
    assert!(serving(channel).await);
    drop(third);
    app.stop().await;
}

/// A new connection (HTTP/2 handshake done).
async fn connected(app: &marketing_tests::TestApp) -> Channel {
    Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_cannot_grow_the_server_and_the_cap_is_logged() {
    const CONNECTIONS: usize = 5;
    const STREAMS: usize = 100;
    let server = ServerProcess::start(&[("MARKETING_MAX_CONNECTIONS", "8")]);
    let channel = server.channel().await;

    // 100 templates of ~8.5 KB each: a page of them is a ~850 KB response.
    let wide = pb::CouponTemplate {
        name: "\u{1D11E}".repeat(128),
        description: "\u{1D11E}".repeat(2000),
        ..template()
    };
    let mut templates = CouponTemplateServiceClient::new(channel.clone());
    for _ in 0..100 {
        templates
            .create_coupon_template(create_request("acme", wide.clone()))
            .await
            .expect("create");
    }
    let page = pb::ListCouponTemplatesRequest {
        tenant_id: "acme".into(),
        page_size: 100,
        ..Default::default()
    };
    let size = templates
        .list_coupon_templates(page.clone())
        .await
        .expect("list")
        .into_inner()
        .encoded_len();
    assert!(size > 800_000, "a page is {size} bytes");

    // 500 calls on 5 connections whose clients read the socket but never their streams:
    // HTTP/2's windows stop the sending, and without a bound the server would hold
    // 500 x 850 KB meanwhile.
    let mut connections = Vec::new();
    let mut responses = Vec::new();
    for _ in 0..CONNECTIONS {
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let (send, connection) = h2::client::handshake(tcp).await.expect("handshake");
        connections.push(tokio::spawn(connection));
        responses.extend(list_calls(&send, server.addr, &page, STREAMS).await);
    }
    // Held, not dropped: dropping one would cancel its stream and free the server of it.
    let mut checks = Vec::new();
    for response in responses {
        let response = tokio::time::timeout(Duration::from_secs(120), response)
            .await
            .expect("the server answers every call")
            .expect("headers");
        assert_eq!(response.status(), http::StatusCode::OK);
        let mut body = response.into_body();
        // A refused response is trailers alone; an admitted one's data waits for its reader,
        // so its trailers do not come.
        checks.push(tokio::spawn(async move {
            let trailers = tokio::time::timeout(Duration::from_secs(3), body.trailers()).await;
            let status = match trailers {
                Ok(Ok(Some(trailers))) => trailers
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                _ => None,
            };
            (status, body)
        }));
    }
    let mut refused = 0;
    let mut unread = Vec::new();
    for check in checks {
        let (status, body) = check.await.expect("join");
        if let Some(status) = status {
            assert_eq!(status, "8", "RESOURCE_EXHAUSTED");
            refused += 1;
        }
        unread.push(body);
    }
    assert!(
        refused > 0,
        "past the budget, responses are refused instead of held"
    );
    assert!(server.logged("response refused"), "and logged");
    assert!(serving(channel.clone()).await, "health answers meanwhile");
    for connection in connections.drain(..) {
        connection.abort();
    }
    drop(unread);

    // 500 more on 5 connections that open their windows wide and then stop reading the
    // socket at all: only the server's budget stands between them and its memory.
    let mut paused = Vec::new();
    let mut responses = Vec::new();
    for _ in 0..CONNECTIONS {
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let (io, pause) = PausableIo::new(tcp);
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 30)
            .initial_connection_window_size(1 << 30)
            .handshake(io)
            .await
            .expect("handshake");
        connections.push(tokio::spawn(connection));
        pause.store(true, Relaxed);
        responses.extend(list_calls(&send, server.addr, &page, STREAMS).await);
        paused.push(pause);
    }
    // The client reads nothing, so no answer shows when the server is done: wait until it
    // is idle (the high-water mark below keeps the worst moment).
    server.settled(Duration::from_secs(120)).await;
    assert!(
        serving(server.channel().await).await,
        "health answers meanwhile"
    );
    let peak = server.peak_rss_mib();
    assert!(
        peak < 300,
        "peak RSS {peak} MiB with 1,000 unread responses"
    );
    for connection in connections {
        connection.abort();
    }
    drop((paused, responses));

    // Past the cap (8), each new connection closes the oldest that never made a call (the
    // raw ones here), never the client's own.
    let mut held = Vec::new();
    for _ in 0..12 {
        held.push(
            TcpStream::connect(server.addr)
                .await
                .expect("TCP itself connects"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.logged("connection closed to make room") {
        assert!(
            Instant::now() < deadline,
            "the closing is logged: {:?}",
            server.log_lines("connection")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut closed = 0;
    for tcp in &mut held {
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => {}
                Err(_) => break,
            }
        }
    }
    assert!(
        closed >= 4,
        "{closed} of 12 raw connections closed at a cap of 8"
    );
    assert!(serving(channel).await, "health answers at the cap");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let app = spawn_app_with(
        Backend::Embedded,
        options(TransportConfig {
            // A loaded 2-core machine may take a while to answer a ping: generous, not tight.
            keepalive_interval: Duration::from_millis(300),
            keepalive_timeout: Duration::from_millis(1500),
            idle_timeout: Duration::from_secs(3600),
            ..TransportConfig::default()
        }),
    )
    .await;
    let open = |n: usize| {
        let transport = app.transport.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while transport.open_connections() != n {
                assert!(Instant::now() < deadline, "never {n} connections open");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    open(1).await;
    let tcp = TcpStream::connect(app.addr).await.expect("connect");
    let (io, pause) = PausableIo::new(tcp);
    let (send, connection) = h2::client::handshake(io).await.expect("handshake");
    let connection = tokio::spawn(connection);
    assert_eq!(health_on(&send, app.addr).await, "0");
    // Pinged every 300 ms and answering, it stays well past a timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(app.transport.open_connections(), 2, "a live peer stays");
    // It stops reading: no ping is answered, and the server drops it.
    pause.store(true, Relaxed);
    open(1).await;
    assert!(
        serving(app.channel.clone()).await,
        "the test's own channel answers its pings and stays"
    );
    connection.abort();
    drop(send);
    app.stop().await;
}

/// Sends `count` list calls on `send` without reading them; their response futures.
async fn list_calls(
    send: &h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
    page: &pb::ListCouponTemplatesRequest,
    count: usize,
) -> Vec<h2::client::ResponseFuture> {
    unread_calls(
        send,
        addr,
        "/marketing.v1.CouponTemplateService/ListCouponTemplates",
        page,
        count,
    )
    .await
}

/// Sends `count` calls of `path` with `message` on `send` without reading them; their
/// response futures.
async fn unread_calls(
    send: &h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
    path: &str,
    message: &impl Message,
    count: usize,
) -> Vec<h2::client::ResponseFuture> {
    let frame = grpc_frame(message);
    let mut responses = Vec::with_capacity(count);
    for _ in 0..count {
        let mut ready = send.clone().ready().await.expect("stream capacity");
        let (response, mut body) = ready
            .send_request(grpc_request(addr, path), false)
            .expect("send headers");
        body.send_data(frame.clone(), true).expect("send");
        responses.push(response);
    }
    responses
}

/// A socket whose reads stop (stay pending) once its flag is set, while writes go on: a
/// client that stopped reading.
struct PausableIo {
    stream: TcpStream,
    paused: Arc<AtomicBool>,
}

impl PausableIo {
    fn new(stream: TcpStream) -> (Self, Arc<AtomicBool>) {
        let paused = Arc::new(AtomicBool::new(false));
        (
            Self {
                stream,
                paused: paused.clone(),
            },
            paused,
        )
    }
}

impl tokio::io::AsyncRead for PausableIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.paused.load(Relaxed) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PausableIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// 2,000 replays of a distribution whose ~1.8 MB answers are never read, on connections whose
/// clients grant no window at all, so that no answer can leave. Room for each answer is
/// reserved before it is built (before this, every call built its answer and the peak went
/// 337 MiB over the idle size): past the budget calls are refused at once, and the peak stays
/// within the bound the README states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_unread_answers_stay_within_the_stated_peak() {
    const CONNECTIONS: usize = 10;
    const STREAMS: usize = 200;
    let server = ServerProcess::start(&[("MARKETING_MAX_CONNECTIONS", "64")]);
    let channel = server.channel().await;
    let created = CouponTemplateServiceClient::new(channel.clone())
        .create_coupon_template(create_request(
            "acme",
            pb::CouponTemplate {
                total_stock: 10_000,
                per_member_limit: 1,
                ..template()
            },
        ))
        .await
        .expect("create")
        .into_inner()
        .coupon_template
        .expect("template");
    // One distribution to 10,000 members: its answer (~1.8 MB) is kept for replays.
    let distribution = pb::DistributeCouponsRequest {
        tenant_id: "acme".into(),
        template_id: created.id,
        request_id: unique("distribute"),
        member_ids: (0..10_000).map(|i| format!("member-{i:05}")).collect(),
        allow_partial: false,
    };
    let size = UserCouponServiceClient::new(channel.clone())
        .distribute_coupons(distribution.clone())
        .await
        .expect("distribute")
        .into_inner()
        .encoded_len();
    assert!(size > 1_000_000, "the answer is {size} bytes");
    let base = server.rss_mib();

    let mut connections = Vec::new();
    let mut responses = Vec::new();
    for _ in 0..CONNECTIONS {
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        // Windows of zero: the server may not send a byte of any answer.
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake(tcp)
            .await
            .expect("handshake");
        connections.push(tokio::spawn(connection));
        responses.extend(
            unread_calls(
                &send,
                server.addr,
                "/marketing.v1.UserCouponService/DistributeCoupons",
                &distribution,
                STREAMS,
            )
            .await,
        );
    }
    // Every call answered (its headers sent) means every answer was built and charged or
    // refused: the worst moment is behind, and VmHWM kept it.
    let mut heads = Vec::new();
    for response in responses {
        let response = tokio::time::timeout(Duration::from_secs(300), response)
            .await
            .expect("the server answers every call")
            .expect("headers");
        assert_eq!(response.status(), http::StatusCode::OK);
        heads.push(response);
    }
    // Past the budget a call is refused before its answer is built: RESOURCE_EXHAUSTED in
    // its headers. The others' answers wait for windows that never open.
    let mut refused = 0;
    for head in &heads {
        match head.headers().get("grpc-status") {
            None => {}
            Some(status) => {
                assert_eq!(status, "8", "RESOURCE_EXHAUSTED");
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0 && refused < heads.len(),
        "{refused} of {} refused",
        heads.len()
    );
    let peak = server.peak_rss_mib();
    // The README's bound: four times MARKETING_UNSENT_BYTES (64 MiB) over the idle size.
    let stated = 64 * 4;
    eprintln!("2,000 unread ~1.8 MB answers: base {base} MiB, peak {peak} MiB, {refused} refused");
    assert!(
        peak < base + stated,
        "peak RSS {peak} MiB (base {base} MiB) with 2,000 unread answers: over base + {stated}"
    );
    assert!(server.logged("response refused"), "refusals are logged");
    assert!(serving(channel).await, "health answers meanwhile");
    for connection in connections {
        connection.abort();
    }
    drop(heads);
}
