//! Wiring: the gRPC services, health, reflection (v1 and v1alpha), the metrics endpoint, and
//! graceful shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;

use marketing_domain::{MarketingError, time::Clock};
use marketing_proto::v1::{
    admin_service_server::AdminServiceServer,
    coupon_template_service_server::CouponTemplateServiceServer,
    event_service_server::EventServiceServer,
    points_account_service_server::PointsAccountServiceServer,
    tenant_settings_service_server::TenantSettingsServiceServer,
    user_coupon_service_server::UserCouponServiceServer,
};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig, server::TcpIncoming};
use tonic_health::ServingStatus;

use crate::{
    app::{AppState, admin::SweepRun},
    config::AuthMode,
    config::{Config, TransportConfig},
    grpc::{
        Admin, CouponTemplates, Events, Points, Settings, UserCoupons, auth::AuthLayer,
        deadline::DeadlineLayer, metrics::RpcMetricsLayer, overload::OverloadLayer,
        refusals::RefusalsLayer,
    },
    observability::{self, Readings, ReplicaCollector, RpcMetrics},
    transport::{StreamLayer, Transport},
};

/// TCP keepalive probes on idle sockets, so peers that vanished without a FIN are noticed by
/// the kernel even when HTTP/2 pings cannot be sent.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// File descriptors kept for everything but client connections: database and Redis pools,
/// the SQLite file, logs, telemetry.
const RESERVED_DESCRIPTORS: u64 = 128;

/// The transport limits, with the connection cap lowered to what the process's file
/// descriptors allow (raising the soft limit to the hard one first): past the descriptors,
/// accepting fails and health checks hang, which the cap exists to prevent.
fn connection_limits(config: &Config) -> TransportConfig {
    let mut limits = config.transport.clone();
    let reserved =
        RESERVED_DESCRIPTORS + u64::from(config.db_max_connections) + config.redis_pool_size as u64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(descriptors) => {
            let allowed = usize::try_from(descriptors.saturating_sub(reserved))
                .unwrap_or(usize::MAX)
                .max(1);
            if allowed < limits.max_connections {
                tracing::warn!(
                    configured = limits.max_connections,
                    allowed,
                    descriptors,
                    "MARKETING_MAX_CONNECTIONS lowered to what the file-descriptor limit allows (raise `ulimit -n`)"
                );
                limits.max_connections = allowed;
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the file-descriptor limit; keeping MARKETING_MAX_CONNECTIONS");
        }
    }
    limits
}

/// Serves on `listener` until `shutdown` completes. Then health turns NOT_SERVING, the server
/// waits `shutdown_drain_delay`, stops accepting, lets in-flight calls finish, and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::build(config).await?.serve(listener, shutdown).await
}

/// A server that is connected and migrated but not yet serving.
pub struct Server {
    app: AppState,
    transport: Arc<Transport>,
    tls: Option<ServerTlsConfig>,
    rpc_metrics: Arc<RpcMetrics>,
    /// Where `GET /metrics` is served (`MARKETING_METRICS_ADDR`), bound at build.
    metrics_listener: Option<TcpListener>,
}

/// The TLS the configuration asks for (`MARKETING_TLS_CERT`, `_KEY`, `_CLIENT_CA`), its
/// files read now so that a missing or unreadable one stops the start. A TLS handshake has the
/// transport's handshake deadline.
fn tls_config(config: &Config) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |variable: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|err| anyhow::anyhow!("{variable}: cannot read {}: {err}", path.display()))
    };
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read("MARKETING_TLS_CERT", cert)?,
            read("MARKETING_TLS_KEY", key)?,
        ))
        .timeout(config.transport.handshake_timeout);
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read("MARKETING_TLS_CLIENT_CA", ca)?));
    }
    Ok(Some(tls))
}

impl Server {
    /// Connects to the database (migrating it) and to Redis, or sets up the embedded mode.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Clock::system()).await
    }

    /// [`build`](Self::build), reading the time from `clock` (tests move it).
    pub async fn build_with_clock(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let transport = Transport::new(connection_limits(&config));
        let tls = tls_config(&config)?;
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("MARKETING_METRICS_ADDR: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let app = AppState::connect(config, clock).await?;
        check_auth(&app).await?;
        Ok(Self {
            app,
            transport,
            tls,
            rpc_metrics: Arc::new(RpcMetrics::new(&[marketing_proto::FILE_DESCRIPTOR_SET])),
            metrics_listener,
        })
    }

    /// Where `GET /metrics` listens, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    pub fn app(&self) -> &AppState {
        &self.app
    }

    /// The transport's limits and counters (connections refused, idle ones closed, ...).
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            app,
            transport,
            tls,
            rpc_metrics,
            metrics_listener,
        } = self;
        let (health, health_service) = tonic_health::server::health_reporter();
        let service_names = [
            "marketing.v1.CouponTemplateService",
            "marketing.v1.UserCouponService",
            "marketing.v1.PointsAccountService",
            "marketing.v1.EventService",
            "marketing.v1.TenantSettingsService",
            "marketing.v1.AdminService",
        ];
        for name in service_names {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(marketing_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let drain_delay = app.shared().config.shutdown_drain_delay;
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for name in service_names {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            tokio::time::sleep(drain_delay).await;
        };

        let overload = OverloadLayer::new(
            app.shared().config.max_calls,
            app.shared().config.call_queue_timeout,
            app.shared().metrics.clone(),
        );
        let exporter = metrics_listener.map(|listener| {
            let app_metrics = app.shared().metrics.clone();
            let events = app.events.clone();
            let (app, transport, overload) = (app.clone(), transport.clone(), overload.clone());
            let replica = ReplicaCollector(Box::new(move || Readings {
                counters: app.counters(&transport.counters),
                gauges: gauges(&app, &transport, &overload),
            }));
            let registry = observability::registry(&rpc_metrics, &app_metrics, replica);
            tokio::spawn(serve_metrics(listener, Arc::new(registry), events))
        });
        let sweeper = tokio::spawn(sweep_forever(app.clone()));
        let sequencer = tokio::spawn(number_events_forever(app.events.clone()));
        let relay = tokio::spawn(relay_events_forever(app.events.clone()));
        let addr = listener.local_addr()?;
        tracing::info!(
            %addr,
            tls = tls.is_some(),
            client_certificates = app.shared().config.tls_client_ca.is_some(),
            replica = %app.admin.replica().id,
            "serving gRPC"
        );
        let limits = transport.config().clone();
        let max_request = app.shared().config.max_request_bytes;
        let incoming = transport.guard(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(TCP_KEEPALIVE)),
        );
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        builder
            .timeout(app.shared().config.call_timeout)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_header_list_size(limits.max_header_list_bytes)
            .layer(RpcMetricsLayer::new(rpc_metrics))
            .layer(StreamLayer)
            .layer(DeadlineLayer)
            .layer(overload.clone())
            .layer(AuthLayer::new(
                app.clients.auth.clone(),
                app.clients.limits.clone(),
                app.shared().metrics.clone(),
            ))
            .layer(RefusalsLayer::new(max_request))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                CouponTemplateServiceServer::new(CouponTemplates::new(app.templates.clone()))
                    .max_decoding_message_size(max_request),
            )
            .add_service(
                UserCouponServiceServer::new(UserCoupons::new(
                    app.coupons.clone(),
                    app.clients.limits.clone(),
                ))
                .max_decoding_message_size(max_request),
            )
            .add_service(
                PointsAccountServiceServer::new(Points::new(
                    app.points.clone(),
                    app.clients.limits.clone(),
                ))
                .max_decoding_message_size(max_request),
            )
            .add_service(TenantSettingsServiceServer::new(Settings::new(
                app.settings.clone(),
            )))
            .add_service(
                EventServiceServer::new(Events::new(app.events.clone()))
                    .max_decoding_message_size(max_request),
            )
            .add_service(AdminServiceServer::new(Admin::new(app.admin.clone())))
            .serve_with_incoming_shutdown(incoming, signal)
            .await?;
        // Aborting mid-sweep rolls its statement back: nothing is half-done.
        sweeper.abort();
        sequencer.abort();
        relay.abort();
        if let Some(exporter) = exporter {
            exporter.abort();
        }
        app.shared().db.clone().close().await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// What the replica holds open now, for `GET /metrics`: its database pool's connections, its
/// client connections, long-lived streams and unsent response bytes, and the calls in progress.
fn gauges(
    app: &AppState,
    transport: &Transport,
    overload: &OverloadLayer,
) -> Vec<observability::Gauge> {
    let (open, idle, max) = app.shared().db.pool_connections();
    let gauge = |name, help, value: usize| observability::Gauge {
        name,
        help,
        cache: None,
        value: value as f64,
    };
    let outbox = &app.events.outbox;
    let load = |value: &std::sync::atomic::AtomicU64| {
        value.load(std::sync::atomic::Ordering::Relaxed) as usize
    };
    let redis_open = app
        .shared()
        .redis
        .as_ref()
        .is_some_and(|pool| pool.breaker().open_since().is_some());
    let mut all = vec![
        gauge(
            "marketing_outbox_unnumbered_events",
            "events committed and waiting for their position (the sequencer numbers them every 100 ms)",
            load(&outbox.unnumbered),
        ),
        gauge(
            "marketing_outbox_unrelayed_events",
            "events numbered and not yet in the tenants' Redis streams (0 in the embedded mode)",
            load(&outbox.unrelayed),
        ),
        observability::Gauge {
            name: "marketing_outbox_relay_lag_seconds",
            help: "how long ago the oldest event not yet relayed (or numbered) was recorded; 0 when none waits",
            cache: None,
            value: load(&outbox.relay_lag_micros) as f64 / 1e6,
        },
        gauge(
            "marketing_redis_circuit_open",
            "1 while the Redis circuit breaker is open (commands fail at once; fallbacks serve)",
            usize::from(redis_open),
        ),
        gauge(
            "marketing_db_pool_connections",
            "database connections open (in use or idle)",
            open as usize,
        ),
        gauge(
            "marketing_db_pool_idle_connections",
            "database connections open and idle",
            idle,
        ),
        gauge(
            "marketing_db_pool_max_connections",
            "the most database connections the pool opens",
            max as usize,
        ),
        gauge(
            "marketing_open_connections",
            "client connections open",
            transport.open_connections(),
        ),
        gauge(
            "marketing_open_streams",
            "long-lived streams open (health watches, reflection, StreamEvents)",
            transport.open_streams(),
        ),
        gauge(
            "marketing_unsent_response_bytes",
            "response bytes written and not yet sent (the budget's use)",
            transport.unsent_bytes(),
        ),
        gauge(
            "marketing_calls_in_progress",
            "calls of the marketing services being served (at most MARKETING_MAX_CALLS)",
            overload.in_progress(),
        ),
    ];
    all.extend(
        app.admin
            .cache_entries()
            .into_iter()
            .map(|(cache, entries)| observability::Gauge {
                name: "marketing_cache_entries",
                help: "copies this replica's cache holds",
                cache: Some(cache),
                value: entries as f64,
            }),
    );
    all
}

/// Serves `GET /metrics` (no auth: it binds to loopback unless configured otherwise) until
/// aborted.
async fn serve_metrics(
    listener: TcpListener,
    registry: Arc<prometheus_client::registry::Registry>,
    events: crate::app::EventService,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics");
    }
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            let events = events.clone();
            async move {
                // The outbox's gauges are measured per scrape (two indexed reads), not per call.
                match tokio::time::timeout(Duration::from_secs(2), events.measure_outbox()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        marketing_infra::warn_every!(error = %err, "measuring the outbox for /metrics failed; its gauges show the last measure")
                    }
                    Err(_) => {
                        marketing_infra::warn_every!("measuring the outbox for /metrics took over 2 s; its gauges show the last measure")
                    }
                }
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    observability::exposition(&registry),
                )
            }
        }),
    );
    if let Err(err) = axum::serve(listener, router).await {
        tracing::error!(error = %err, "the metrics endpoint stopped");
    }
}

/// Refuses to start open to the network by accident: on an address that is not loopback,
/// with `MARKETING_AUTH` unset and no client yet, nobody could call, so say how to begin.
/// Warns when calls are open.
async fn check_auth(app: &AppState) -> anyhow::Result<()> {
    let config = &app.shared().config;
    match config.effective_auth() {
        AuthMode::Disabled => {
            tracing::warn!(addr = %config.grpc_addr, "MARKETING_AUTH is disabled: anyone who can reach the port may call for any tenant");
        }
        AuthMode::Required if config.auth.is_none() => {
            let clients = app.clients.count_active().await?;
            anyhow::ensure!(
                clients > 0,
                "{} is not a loopback address, so every call needs an API client, and there is \
                 none yet. Create the first one with\n  marketing-server clients create --name \
                 admin --role admin --all-tenants\n(with the same configuration), or set \
                 MARKETING_AUTH=disabled to serve without.",
                config.grpc_addr
            );
        }
        AuthMode::Required => {}
    }
    Ok(())
}

/// Every `sweep_interval`, on every replica: releases lapsed coupon locks, expires coupons,
/// finishes a coupon code generation a replica left, releases lapsed points holds, expires
/// points lots, and (every minute) deletes records past
/// their retention (all safe to run concurrently).
async fn sweep_forever(app: AppState) {
    const BATCH: u64 = 500;
    /// Changes' event batches one retention unit deletes (a distribution's batch holds up to
    /// 10,000 events).
    const EVENT_BATCHES: u64 = 100;
    let mut interval = tokio::time::interval(app.shared().config.sweep_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_retention: Option<std::time::Instant> = None;
    // The first sweep one interval after start, not at once (an interval's first tick is
    // immediate): what a replica starting finds due, the running replicas sweep anyway.
    interval.tick().await;
    let metrics = app.shared().metrics.clone();
    let count = |counter: &std::sync::atomic::AtomicU64, n: u64| {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    };
    let status = app.admin.sweeper.clone();
    let clock = app.shared().clock.clone();
    // Records a part's run in the admin service's status; a failure is counted and logged.
    let record = |part: &str, outcome: Result<(u64, bool), MarketingError>| {
        let run = match outcome {
            Ok((items, full)) => SweepRun::Swept { items, full },
            Err(err) => {
                count(&metrics.sweep_failures, 1);
                marketing_infra::warn_every!(error = %err, part, "a sweeper part failed; retrying next interval");
                SweepRun::Failed(marketing_domain::error::chain(&err))
            }
        };
        status.record(part, clock.now(), run);
    };
    loop {
        interval.tick().await;
        count(&metrics.sweeps, 1);
        app.admin.sample_caches();
        let coupons = app.coupons.sweep_coupons(BATCH).await;
        if let Ok((unlocked, expired)) = &coupons
            && unlocked + expired > 0
        {
            tracing::info!(unlocked, expired, "coupon sweep");
        }
        // It sweeps batch after batch until nothing is due: caught up whenever it returns.
        record(
            "coupons",
            coupons.map(|(unlocked, expired)| (unlocked + expired, false)),
        );
        let reminders = app.events.remind_expiring(BATCH).await;
        if let Ok((coupons, lots)) = &reminders
            && coupons + lots > 0
        {
            count(&metrics.reminders, coupons + lots);
            tracing::info!(coupons, lots, "expiry reminders");
        }
        record(
            "reminders",
            reminders.map(|(coupons, lots)| (coupons + lots, coupons.max(lots) >= BATCH)),
        );
        let generation = app.templates.resume_abandoned_generation().await;
        if let Ok(true) = generation {
            tracing::info!("resumed a coupon code generation a replica left");
        }
        // A generation resumed is one item; another may wait for the next round.
        record(
            "code_generations",
            generation.map(|resumed| (u64::from(resumed), resumed)),
        );
        // Up to half a round for points: a mass expiry drains over rounds, the other parts
        // still run every round.
        let points = app
            .points
            .sweep_points(BATCH, app.shared().config.sweep_interval / 2)
            .await;
        if let Ok(swept) = &points
            && swept.holds_released + swept.accounts_expired > 0
        {
            count(&metrics.points_holds_released, swept.holds_released as u64);
            count(
                &metrics.points_accounts_expired,
                swept.accounts_expired as u64,
            );
            tracing::info!(
                holds_released = swept.holds_released,
                accounts_expired = swept.accounts_expired,
                caught_up = swept.caught_up,
                "points sweep"
            );
        }
        record(
            "points",
            points.map(|swept| {
                (
                    (swept.holds_released + swept.accounts_expired) as u64,
                    !swept.caught_up,
                )
            }),
        );
        if last_retention.is_none_or(|at| at.elapsed() >= crate::app::RETENTION_SWEEP_EVERY) {
            last_retention = Some(std::time::Instant::now());
            let records = app.retention.sweep_records(BATCH).await;
            if let Ok((records, holds)) = &records
                && records + holds > 0
            {
                count(&metrics.records_deleted, records + holds);
                tracing::info!(records, holds, "retention sweep");
            }
            record(
                "retention_records",
                records.map(|(records, holds)| (records + holds, records.max(holds) >= BATCH)),
            );
            let events = app.retention.sweep_events(EVENT_BATCHES).await;
            if let Ok(events) = &events
                && *events > 0
            {
                count(&metrics.event_batches_deleted, *events);
                tracing::info!(events, "event retention sweep");
            }
            record(
                "retention_events",
                events.map(|events| (events, events >= EVENT_BATCHES)),
            );
        }
    }
}

/// Numbers committed events every `NUMBER_EVERY` on every replica (their units take turns), so
/// that readers see them soon even when nobody reads.
async fn number_events_forever(events: crate::app::EventService) {
    let mut interval = tokio::time::interval(crate::app::events::NUMBER_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(err) = events.number_and_announce().await {
            marketing_infra::warn_every!(error = %err, "numbering events failed; retrying");
        }
    }
}

/// Relays numbered events to the tenants' Redis streams every `NUMBER_EVERY`, on the replica
/// that holds the relay's lease (with Redis configured; nothing in embedded mode). While Redis
/// is down the passes fail (logged now and then) and events wait in the outbox.
async fn relay_events_forever(events: crate::app::EventService) {
    if !events.relays() {
        return;
    }
    let mut interval = tokio::time::interval(crate::app::events::NUMBER_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(err) = events.relay_events().await {
            marketing_infra::warn_every!(error = %err, "relaying events to Redis failed; they wait in the outbox, retrying");
        }
    }
}
