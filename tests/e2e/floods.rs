//! Known clients are served through floods: made-up keys by the thousand over many
//! connections, and `Health/Watch` streams held on every free connection slot. Calls of the
//! open services (health, reflection) have limits of their own, a connection that keeps
//! failing to authenticate is closed, and at the connection cap the connections that never
//! made an authenticated call are closed first (never by peer address: behind a load balancer
//! every caller shares one).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use marketing_domain::auth::Role;
use marketing_proto::v1 as pb;
use marketing_server::{config::TransportConfig, transport::OPEN_CALLS_PER_CONNECTION};
use marketing_tests::{Backend, Options, assert_error, spawn_app_with, with_key};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::fixtures::api_client;

fn auth_required(max_connections: usize) -> Options {
    Options {
        auth: Some(marketing_server::config::AuthMode::Required),
        transport: Some(TransportConfig {
            max_connections,
            ..TransportConfig::default()
        }),
        ..Options::default()
    }
}

fn account(member: &str) -> pb::GetPointsAccountRequest {
    pb::GetPointsAccountRequest {
        tenant_id: "acme".into(),
        member_id: member.into(),
    }
}

async fn new_channel(addr: SocketAddr) -> Option<Channel> {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()
}

/// A `Health/Watch` stream held open on a connection of its own (`None` if refused).
async fn held_watch(
    addr: SocketAddr,
) -> Option<(
    Channel,
    tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
)> {
    let channel = new_channel(addr).await?;
    let stream = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .ok()?
        .into_inner();
    Some((channel, stream))
}

/// One connection may hold [`OPEN_CALLS_PER_CONNECTION`] health watches or reflection streams;
/// the next is refused OVERLOADED while health checks and keyed calls on it are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_service_calls_are_limited_per_connection() {
    let app = spawn_app_with(Backend::Embedded, auth_required(100)).await;
    let key = api_client(&app, "steady", Role::Reader, None).await;
    let channel = new_channel(app.addr).await.expect("connect");
    let mut held = Vec::new();
    for _ in 0..OPEN_CALLS_PER_CONNECTION {
        held.push(
            HealthClient::new(channel.clone())
                .watch(HealthCheckRequest::default())
                .await
                .expect("a watch within the limit")
                .into_inner(),
        );
    }
    let refused = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .expect_err("one watch too many on this connection");
    assert_error(&refused, Code::Unavailable, "OVERLOADED");
    // Health checks (one quick answer each) are not streams: dozens at once are answered.
    let checks = (0..32).map(|_| {
        let mut health = HealthClient::new(channel.clone());
        async move { health.check(HealthCheckRequest::default()).await }
    });
    for check in futures::future::join_all(checks).await {
        check.expect("a health check beside the held watches");
    }
    let served =
        pb::points_account_service_client::PointsAccountServiceClient::new(channel.clone())
            .get_points_account(with_key(account("m"), &key))
            .await
            .expect_err("no account yet");
    assert_error(&served, Code::NotFound, "ACCOUNT_NOT_FOUND");
    // Another connection has its own.
    let mut other = HealthClient::new(new_channel(app.addr).await.expect("connect"));
    other
        .check(HealthCheckRequest::default())
        .await
        .expect("another connection's check");
    drop(held);
    app.stop().await;
}

/// The attacker of the flood test until `until`: eight openers holding `Health/Watch` streams on
/// every connection slot they get, and calls with made-up keys 2,000 at a time over 20
/// connections. Returns the streams held and the waves of made-up calls sent.
async fn flood(addr: SocketAddr, until: Instant) -> (usize, usize) {
    // Eight openers at once, so that the slots fill within the first seconds and stay full.
    let watchers = futures::future::join_all((0..8).map(|_| async move {
        let mut held = Vec::new();
        while Instant::now() < until {
            // Every one kept: the attacker never lets go of a slot.
            if let Some(watch) = held_watch(addr).await {
                held.push(watch);
            }
        }
        held.len()
    }));
    let made_up = async move {
        let mut channels = Vec::new();
        for _ in 0..20 {
            channels.extend(new_channel(addr).await);
        }
        let mut waves = 0;
        while Instant::now() < until && !channels.is_empty() {
            let calls = (0..2_000).map(|i| {
                let mut points = pb::points_account_service_client::PointsAccountServiceClient::new(
                    channels[i % channels.len()].clone(),
                );
                let made_up = format!("mk_{:012}_{}", waves * 2_000 + i, "y".repeat(43));
                async move {
                    let _ = points
                        .get_points_account(with_key(account("m"), &made_up))
                        .await;
                }
            });
            futures::future::join_all(calls).await;
            waves += 1;
        }
        waves
    };
    let (held, waves) = tokio::join!(watchers, made_up);
    (held.into_iter().sum(), waves)
}

/// The flood: for 20 s, calls with made-up keys 2,000 at a time over 20 connections,
/// and new connections holding `Health/Watch` streams opened without pause so every free slot
/// is taken; a known client calling every 100 ms, which comes back on a new connection 5 s in,
/// is served (at most 1% refused, none after the first second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_client_is_served_through_a_flood() {
    const CAP: usize = 300;
    const FLOOD: Duration = Duration::from_secs(20);
    let app = spawn_app_with(Backend::PostgresRedis, auth_required(CAP)).await;
    let key = api_client(&app, "steady", Role::Reader, None).await;
    let mut steady = pb::points_account_service_client::PointsAccountServiceClient::new(
        new_channel(app.addr).await.expect("connect"),
    );
    // Known to the replica before the flood.
    let _ = steady
        .get_points_account(with_key(account("m"), &key))
        .await;

    let started = Instant::now();
    let until = started + FLOOD;
    // The attacker runs on a thread and runtime of its own, as it would on its own machine: its
    // 2,000 calls at a time must compete with the server for the CPU, not starve the timers of
    // the runtime the server and the known client share.
    let addr = app.addr;
    let attacker = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("attacker runtime")
            .block_on(flood(addr, until))
    });
    let known = async {
        let mut refused = Vec::new();
        let mut calls = 0;
        let mut reconnected = false;
        while Instant::now() < until {
            let at = started.elapsed();
            // Mid-flood the client comes back on a new connection (a restart, a load balancer
            // moving it), when every slot is taken.
            if !reconnected && at > FLOOD / 4 {
                reconnected = true;
                match new_channel(app.addr).await {
                    Some(channel) => {
                        steady = pb::points_account_service_client::PointsAccountServiceClient::new(
                            channel,
                        );
                    }
                    None => refused.push((at, tonic::Status::unavailable("not connected"))),
                }
            }
            let call = steady.get_points_account(with_key(account("m"), &key));
            match tokio::time::timeout(Duration::from_secs(2), call).await {
                Ok(Err(status)) if status.code() != Code::NotFound => refused.push((at, status)),
                Ok(_) => {}
                Err(_) => refused.push((at, tonic::Status::deadline_exceeded("no answer in 2 s"))),
            }
            calls += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (calls, refused)
    };
    let (calls, refused) = known.await;
    let (held, waves) = tokio::task::spawn_blocking(move || attacker.join().expect("attacker"))
        .await
        .expect("attacker thread");
    let evicted = app
        .transport
        .counters
        .evicted_connections
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        held > 0 && waves > 0 && evicted > 0,
        "no flood: {held} held, {waves} waves, {evicted} evicted"
    );
    assert!(
        refused.len() * 100 <= calls,
        "{} of {calls} refused: {refused:?}",
        refused.len()
    );
    assert!(
        refused.iter().all(|(at, _)| *at < Duration::from_secs(1)),
        "refused after the first second: {refused:?}"
    );
    app.stop().await;
}
