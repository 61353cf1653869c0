//! Every counter of a replica in one place: what its use cases count ([`Metrics`]), what its
//! transport refused and closed ([`TransportCounters`]), and its caches' statistics.
//! [`counters`] reads them all under the names they are exported by; a counter added to either
//! struct does not compile until it is named there. [`RpcMetrics`] counts and times every call
//! under the names operators chart for gRPC servers, and [`exposition`] renders all of it in
//! the Prometheus text format (`GET /metrics`, see `server.rs`).

use std::{
    collections::HashMap,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use marketing_infra::{cache::CacheStatsSnapshot, redis::BreakerStats};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter as PromCounter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Claim batches' sizes and durations, points batches' likewise, and how long claim
    /// batches waited for their template's lock (histograms, exported as they are).
    pub claim_batch: BatchHistograms,
    pub points_batch: BatchHistograms,
    pub claim_lock_wait: SecondsHistogram,
    /// Claim batches (and distributions) that ran without the template lock because the lock
    /// backend (Redis) was unreachable.
    pub lock_unavailable: AtomicU64,
    /// Claim batches served, and the claims in them.
    pub claim_batches: AtomicU64,
    pub claims_batched: AtomicU64,
    /// Claim or distribution transactions retried after losing a race (a lapsed lock's fence,
    /// a serialization failure).
    pub claim_retries: AtomicU64,
    /// Coupons the sweepers released from lapsed locks, and expired.
    pub coupons_unlocked: AtomicU64,
    pub coupons_expired: AtomicU64,
    /// Points batches whose one-statement write on PostgreSQL lost a race (an account changed
    /// since it was read, a request id or business reference taken meanwhile) and were
    /// served again in a transaction.
    pub points_fallbacks: AtomicU64,
    /// Points batches that failed for a reason that may lie in one command and were served
    /// again in halves, so that command fails alone.
    pub points_splits: AtomicU64,
    /// The same for claim batches.
    pub claim_splits: AtomicU64,
    /// Claim batches whose template lock had lapsed (its TTL passed) by the time they released
    /// it: their writes were kept safe by the lock's fencing token alone.
    pub claim_lock_lapses: AtomicU64,
    /// Claim and distribution transactions refused because a newer holder of the template's
    /// lock had written (their lock lapsed; retried under the lock again).
    pub fencing_refusals: AtomicU64,
    /// Calls refused by a rate limit.
    pub rate_limited: AtomicU64,
    /// Rate-limit checks this replica counted alone because Redis could not be reached.
    pub local_rate_limits: AtomicU64,
    /// The sweeper's rounds, the parts of them that failed, and what it swept besides coupons:
    /// points holds released and accounts whose lots expired, reminders recorded, request
    /// records and event batches deleted for retention.
    pub sweeps: AtomicU64,
    pub sweep_failures: AtomicU64,
    pub points_holds_released: AtomicU64,
    pub points_accounts_expired: AtomicU64,
    pub reminders: AtomicU64,
    pub records_deleted: AtomicU64,
    pub event_batches_deleted: AtomicU64,
    /// Calls refused by auth (UNAUTHENTICATED, PERMISSION_DENIED) before any service, and
    /// calls shed OVERLOADED for want of a turn.
    pub auth_refusals: AtomicU64,
    pub overload_sheds: AtomicU64,
}

impl Metrics {
    pub fn record_lock_unavailable(&self) {
        self.lock_unavailable.fetch_add(1, Relaxed);
    }

    pub fn record_points_fallback(&self) {
        self.points_fallbacks.fetch_add(1, Relaxed);
    }

    pub fn record_points_split(&self) {
        self.points_splits.fetch_add(1, Relaxed);
    }

    pub fn record_claim_lock_lapse(&self) {
        self.claim_lock_lapses.fetch_add(1, Relaxed);
    }

    /// Counts `result` when a lock's fence refused it ([`marketing_domain::error::Fenced`]).
    pub fn record_fencing<T>(&self, result: &Result<T, marketing_domain::MarketingError>) {
        if let Err(marketing_domain::MarketingError::ConcurrentModification(cause)) = result
            && cause.is::<marketing_domain::error::Fenced>()
        {
            self.fencing_refusals.fetch_add(1, Relaxed);
        }
    }

    pub fn record_claim_split(&self) {
        self.claim_splits.fetch_add(1, Relaxed);
    }

    pub fn record_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    pub fn record_local_rate_limit(&self) {
        self.local_rate_limits.fetch_add(1, Relaxed);
    }

    pub fn record_auth_refusal(&self) {
        self.auth_refusals.fetch_add(1, Relaxed);
    }

    pub fn record_overload_shed(&self) {
        self.overload_sheds.fetch_add(1, Relaxed);
    }

    pub fn record_claim_batch(&self, claims: usize) {
        self.claim_batches.fetch_add(1, Relaxed);
        self.claims_batched.fetch_add(claims as u64, Relaxed);
    }
}

/// What the transport refused and closed.
#[derive(Debug, Default)]
pub struct TransportCounters {
    /// Connections refused at the cap, handshakes that timed out, idle connections closed and
    /// responses refused for the unsent-bytes budget.
    pub refused_connections: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub idle_closes: AtomicU64,
    pub refused_responses: AtomicU64,
    /// Connections closed to make room (never authenticated, at the cap) or for failing to
    /// authenticate too often, and streams of the open services refused for their limits.
    pub evicted_connections: AtomicU64,
    pub refused_open_calls: AtomicU64,
}

/// One counter's value under its export name, and the cache it is of (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub name: &'static str,
    /// What it counts, for the exposition's `# HELP`.
    pub help: &'static str,
    pub cache: Option<&'static str>,
    pub value: u64,
}

/// Every counter of the replica: its use cases', its transport's and, for each named cache,
/// that cache's.
pub fn counters(
    metrics: &Metrics,
    transport: &TransportCounters,
    caches: &[(&'static str, CacheStatsSnapshot)],
    redis: Option<&BreakerStats>,
) -> Vec<Counter> {
    let Metrics {
        lock_unavailable,
        claim_batches,
        claims_batched,
        claim_retries,
        coupons_unlocked,
        coupons_expired,
        points_fallbacks,
        points_splits,
        claim_splits,
        claim_lock_lapses,
        fencing_refusals,
        rate_limited,
        local_rate_limits,
        sweeps,
        sweep_failures,
        points_holds_released,
        points_accounts_expired,
        reminders,
        records_deleted,
        event_batches_deleted,
        auth_refusals,
        overload_sheds,
        // Histograms: registered as they are (see `registry`).
        claim_batch: _,
        points_batch: _,
        claim_lock_wait: _,
    } = metrics;
    let TransportCounters {
        refused_connections,
        handshake_timeouts,
        idle_closes,
        refused_responses,
        evicted_connections,
        refused_open_calls,
    } = transport;
    let atomics = [
        (
            "marketing_claim_lock_unavailable_total",
            "claim batches served without the template lock (Redis unreachable)",
            lock_unavailable,
        ),
        (
            "marketing_claim_batches_total",
            "claim batches (and distributions) served",
            claim_batches,
        ),
        (
            "marketing_claims_batched_total",
            "claims in the claim batches served",
            claims_batched,
        ),
        (
            "marketing_claim_retries_total",
            "claim transactions retried after losing a race",
            claim_retries,
        ),
        (
            "marketing_coupons_unlocked_total",
            "coupons the sweeper released from lapsed locks",
            coupons_unlocked,
        ),
        (
            "marketing_coupons_expired_total",
            "coupons the sweeper expired",
            coupons_expired,
        ),
        (
            "marketing_points_fallbacks_total",
            "points batches served again in a transaction after their one-statement write lost a race",
            points_fallbacks,
        ),
        (
            "marketing_points_splits_total",
            "points batches served again in halves after a failure",
            points_splits,
        ),
        (
            "marketing_claim_splits_total",
            "claim batches served again in halves after a failure",
            claim_splits,
        ),
        (
            "marketing_claim_lock_lapses_total",
            "claim batches whose template lock lapsed before they released it (kept safe by its fence)",
            claim_lock_lapses,
        ),
        (
            "marketing_fencing_refusals_total",
            "claim and distribution transactions refused by the template's fence: a newer lock holder had written (retried)",
            fencing_refusals,
        ),
        (
            "marketing_rate_limited_total",
            "calls refused by a rate limit",
            rate_limited,
        ),
        (
            "marketing_local_rate_limits_total",
            "rate-limit checks counted by this replica alone (Redis unreachable)",
            local_rate_limits,
        ),
        (
            "marketing_sweeps_total",
            "rounds of the sweeper (every MARKETING_SWEEP_INTERVAL_MS)",
            sweeps,
        ),
        (
            "marketing_sweep_failures_total",
            "parts of sweeper rounds that failed (retried the next round)",
            sweep_failures,
        ),
        (
            "marketing_points_holds_released_total",
            "points holds the sweeper released when they lapsed",
            points_holds_released,
        ),
        (
            "marketing_points_accounts_expired_total",
            "accounts whose expired lots the sweeper wrote off",
            points_accounts_expired,
        ),
        (
            "marketing_reminders_total",
            "expiry reminders the sweeper recorded (coupons and points lots)",
            reminders,
        ),
        (
            "marketing_records_deleted_total",
            "request records and holds deleted for retention",
            records_deleted,
        ),
        (
            "marketing_event_batches_deleted_total",
            "event batches deleted for retention",
            event_batches_deleted,
        ),
        (
            "marketing_auth_refusals_total",
            "calls refused by auth before any service (no or a wrong key, a role or tenant not allowed)",
            auth_refusals,
        ),
        (
            "marketing_overload_sheds_total",
            "calls shed OVERLOADED: no turn within MARKETING_CALL_QUEUE_TIMEOUT_MS",
            overload_sheds,
        ),
        (
            "marketing_refused_connections_total",
            "connections refused at the connection cap",
            refused_connections,
        ),
        (
            "marketing_handshake_timeouts_total",
            "connections closed for a handshake that took too long",
            handshake_timeouts,
        ),
        (
            "marketing_idle_closes_total",
            "idle connections closed",
            idle_closes,
        ),
        (
            "marketing_refused_responses_total",
            "responses refused for the unsent-bytes budget",
            refused_responses,
        ),
        (
            "marketing_evicted_connections_total",
            "connections closed to make room or for failing to authenticate",
            evicted_connections,
        ),
        (
            "marketing_refused_open_calls_total",
            "health or reflection streams refused for their limits",
            refused_open_calls,
        ),
    ];
    let mut all: Vec<Counter> = atomics
        .into_iter()
        .map(|(name, help, value)| Counter {
            name,
            help,
            cache: None,
            value: value.load(Relaxed),
        })
        .collect();
    if let Some(BreakerStats {
        failures,
        trips,
        short_circuited,
        recoveries,
        reconnects,
    }) = redis
    {
        for (name, help, value) in [
            (
                "marketing_redis_failures_total",
                "Redis commands that timed out or could not reach it",
                failures,
            ),
            (
                "marketing_redis_circuit_trips_total",
                "times the Redis circuit breaker opened (repeated timeouts or failures)",
                trips,
            ),
            (
                "marketing_redis_short_circuited_total",
                "Redis commands not sent because the breaker was open (their callers took fallbacks)",
                short_circuited,
            ),
            (
                "marketing_redis_circuit_recoveries_total",
                "times the Redis circuit breaker closed again after a probe succeeded",
                recoveries,
            ),
            (
                "marketing_redis_connects_total",
                "Redis connections made (the first, and one after each that failed)",
                reconnects,
            ),
        ] {
            all.push(Counter {
                name,
                help,
                cache: None,
                value: value.load(Relaxed),
            });
        }
    }
    for (cache, stats) in caches {
        let CacheStatsSnapshot {
            local_hits,
            remote_hits,
            misses,
            evictions,
            remote_evictions,
        } = *stats;
        for (name, help, value) in [
            (
                "marketing_cache_local_hits_total",
                "reads served from this replica's copy",
                local_hits,
            ),
            (
                "marketing_cache_remote_hits_total",
                "reads served from Redis",
                remote_hits,
            ),
            (
                "marketing_cache_misses_total",
                "reads that went to the database",
                misses,
            ),
            (
                "marketing_cache_evictions_total",
                "entries this replica dropped",
                evictions,
            ),
            (
                "marketing_cache_remote_evictions_total",
                "entries dropped on another replica's word",
                remote_evictions,
            ),
        ] {
            all.push(Counter {
                name,
                help,
                cache: Some(cache),
                value,
            });
        }
    }
    all
}

/// A histogram of durations, in seconds: 0.5 ms to 10 s.
#[derive(Debug, Clone)]
pub struct SecondsHistogram(Histogram);

impl Default for SecondsHistogram {
    fn default() -> Self {
        Self(handling_histogram())
    }
}

impl SecondsHistogram {
    pub fn observe(&self, elapsed: Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }
}

/// Batch sizes (commands: 1 to 512 and more) and how long each batch took.
#[derive(Debug, Clone)]
pub struct BatchHistograms {
    sizes: Histogram,
    seconds: SecondsHistogram,
}

impl Default for BatchHistograms {
    fn default() -> Self {
        Self {
            sizes: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
            seconds: SecondsHistogram::default(),
        }
    }
}

impl BatchHistograms {
    /// A batch of `size` commands served in `elapsed`.
    pub fn observe(&self, size: usize, elapsed: Duration) {
        self.sizes.observe(size as f64);
        self.seconds.observe(elapsed);
    }
}

/// A method's labels: `grpc_service` (`marketing.v1.UserCouponService`) and `grpc_method`
/// (`ClaimCoupon`). Only methods this server serves get their own (see [`RpcMetrics::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

type Seconds = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// Upper bounds of `grpc_server_handling_seconds`' buckets: 0.5 ms to 10 s.
const HANDLING_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn handling_histogram() -> Histogram {
    Histogram::new(HANDLING_BUCKETS)
}

/// Calls started, handled (by status code) and how long they took, per method:
/// `grpc_server_started_total`, `grpc_server_handled_total`, `grpc_server_handling_seconds`.
/// A path that names no served method counts under `unknown` (labels stay bounded whatever
/// a caller sends).
pub struct RpcMetrics {
    started: Family<MethodLabels, PromCounter>,
    handled: Family<HandledLabels, PromCounter>,
    seconds: Seconds,
    /// By path (`/marketing.v1.UserCouponService/ClaimCoupon`): the method's labels and, once
    /// it is first called, its series.
    methods: HashMap<String, (MethodLabels, OnceLock<Arc<MethodSeries>>)>,
    unknown: (MethodLabels, OnceLock<Arc<MethodSeries>>),
}

/// One method's series.
pub struct MethodSeries {
    labels: MethodLabels,
    started: PromCounter,
    seconds: Histogram,
    /// Its `OK` calls (most of them: no look-up in the family).
    ok: PromCounter,
    handled: Family<HandledLabels, PromCounter>,
}

impl MethodSeries {
    pub fn started(&self) {
        self.started.inc();
    }

    /// A call ended with `code` after `elapsed`.
    pub fn handled(&self, code: tonic::Code, elapsed: Duration) {
        self.seconds.observe(elapsed.as_secs_f64());
        if code == tonic::Code::Ok {
            self.ok.inc();
            return;
        }
        let labels = HandledLabels {
            grpc_service: self.labels.grpc_service,
            grpc_method: self.labels.grpc_method,
            grpc_code: code_name(code),
        };
        self.handled.get_or_create(&labels).inc();
    }
}

impl RpcMetrics {
    /// The metrics of the methods in `descriptor_sets` (encoded `FileDescriptorSet`s) and of
    /// health and reflection.
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        let mut paths: Vec<String> = [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .map(str::to_owned)
        .to_vec();
        for encoded in descriptor_sets {
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(*encoded)
            else {
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        paths.push(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        let methods = paths
            .into_iter()
            .filter_map(|path| {
                let (service, method) = path.trim_start_matches('/').split_once('/')?;
                let labels = MethodLabels {
                    grpc_service: intern(service),
                    grpc_method: intern(method),
                };
                Some((path, (labels, OnceLock::new())))
            })
            .collect();
        Self {
            started: Family::default(),
            handled: Family::default(),
            seconds: Family::new_with_constructor(handling_histogram),
            methods,
            unknown: (
                MethodLabels {
                    grpc_service: "unknown",
                    grpc_method: "unknown",
                },
                OnceLock::new(),
            ),
        }
    }

    /// The series of the method at `path` (`unknown`'s for a path no method has).
    pub fn method(&self, path: &str) -> Arc<MethodSeries> {
        let (labels, series) = self.methods.get(path).unwrap_or(&self.unknown);
        series
            .get_or_init(|| {
                let ok = HandledLabels {
                    grpc_service: labels.grpc_service,
                    grpc_method: labels.grpc_method,
                    grpc_code: code_name(tonic::Code::Ok),
                };
                Arc::new(MethodSeries {
                    labels: labels.clone(),
                    started: self.started.get_or_create(labels).clone(),
                    seconds: self.seconds.get_or_create(labels).clone(),
                    ok: self.handled.get_or_create(&ok).clone(),
                    handled: self.handled.clone(),
                })
            })
            .clone()
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            self.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status code",
            self.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "How long RPCs took until the server answered them in full",
            self.seconds.clone(),
        );
    }
}

/// `name` as a `&'static str`: each distinct name is kept once for the process (the served
/// methods' names, a fixed set however many servers a process builds).
fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match names.get(name) {
        Some(kept) => kept,
        None => {
            let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
            names.insert(kept);
            kept
        }
    }
}

/// gRPC's name of `code`, as Go's `codes.Code.String()` spells it (the label values
/// go-grpc-prometheus dashboards expect).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A value that goes up and down, read at each scrape (per cache, for the caches' gauges).
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub cache: Option<&'static str>,
    pub value: f64,
}

/// What the replica reads at each scrape: its counters ([`counters`]) and gauges.
pub struct Readings {
    pub counters: Vec<Counter>,
    pub gauges: Vec<Gauge>,
}

/// Reads the replica's own counters and gauges at each scrape.
pub struct ReplicaCollector(pub Box<dyn Fn() -> Readings + Send + Sync>);

impl std::fmt::Debug for ReplicaCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicaCollector")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabel {
    cache: &'static str,
}

impl Collector for ReplicaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Readings {
            counters: mut all,
            mut gauges,
        } = (self.0)();
        // One descriptor per name, its caches' values under it.
        gauges.sort_by_key(|gauge| gauge.name);
        for same in gauges.chunk_by(|a, b| a.name == b.name) {
            let kind = ConstGauge::new(0.0).metric_type();
            let mut metric = encoder.encode_descriptor(same[0].name, same[0].help, None, kind)?;
            match same {
                [alone] if alone.cache.is_none() => ConstGauge::new(alone.value).encode(metric)?,
                _ => {
                    for gauge in same {
                        let cache = gauge.cache.unwrap_or("none");
                        ConstGauge::new(gauge.value)
                            .encode(metric.encode_family(&CacheLabel { cache })?)?;
                    }
                }
            }
        }
        // One descriptor per name, its caches' values under it.
        all.sort_by_key(|counter| counter.name);
        for same in all.chunk_by(|a, b| a.name == b.name) {
            let name = same[0].name;
            let base = name.strip_suffix("_total").unwrap_or(name);
            let kind = ConstCounter::new(0_u64).metric_type();
            let mut metric = encoder.encode_descriptor(base, same[0].help, None, kind)?;
            match same {
                [alone] if alone.cache.is_none() => {
                    ConstCounter::new(alone.value).encode(metric)?
                }
                _ => {
                    for counter in same {
                        let cache = counter.cache.unwrap_or("none");
                        ConstCounter::new(counter.value)
                            .encode(metric.encode_family(&CacheLabel { cache })?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Everything `GET /metrics` shows: the RPC metrics and the replica's counters.
pub fn registry(rpc: &RpcMetrics, metrics: &Metrics, replica: ReplicaCollector) -> Registry {
    let mut registry = Registry::default();
    rpc.register(&mut registry);
    for (name, help, batches) in [
        (
            "marketing_claim_batch",
            "claim batches",
            &metrics.claim_batch,
        ),
        (
            "marketing_points_batch",
            "points batches",
            &metrics.points_batch,
        ),
    ] {
        registry.register(
            format!("{name}_size"),
            format!("commands in each of the {help}"),
            batches.sizes.clone(),
        );
        registry.register(
            format!("{name}_seconds"),
            format!("how long each of the {help} took, retries included"),
            batches.seconds.0.clone(),
        );
    }
    registry.register(
        "marketing_claim_lock_wait_seconds",
        "how long claim batches waited for their template's lock",
        metrics.claim_lock_wait.0.clone(),
    );
    registry.register_collector(Box::new(replica));
    registry
}

/// `registry` in the Prometheus (OpenMetrics) text format.
pub fn exposition(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_counter_has_its_own_name_and_reads_its_value() {
        let metrics = Metrics::default();
        metrics.record_claim_batch(3);
        let transport = TransportCounters::default();
        transport.idle_closes.fetch_add(2, Relaxed);
        let stats = CacheStatsSnapshot {
            misses: 5,
            ..CacheStatsSnapshot::default()
        };
        let redis = BreakerStats::default();
        redis.trips.fetch_add(1, Relaxed);
        let all = counters(
            &metrics,
            &transport,
            &[("templates", stats), ("lists", stats)],
            Some(&redis),
        );
        let unique: HashSet<(&str, Option<&str>)> = all.iter().map(|c| (c.name, c.cache)).collect();
        assert_eq!(
            unique.len(),
            all.len(),
            "a name (and cache) names one counter"
        );
        let value = |name: &str, cache: Option<&str>| {
            all.iter()
                .find(|c| c.name == name && c.cache == cache)
                .map(|c| c.value)
        };
        assert_eq!(value("marketing_claims_batched_total", None), Some(3));
        assert_eq!(value("marketing_idle_closes_total", None), Some(2));
        assert_eq!(
            value("marketing_cache_misses_total", Some("lists")),
            Some(5)
        );
        assert_eq!(value("marketing_redis_circuit_trips_total", None), Some(1));
        assert_eq!(all.len(), 28 + 5 + 2 * 5);
    }
}
