//! The application layer: use cases that combine domain rules, storage and infrastructure,
//! one unit of work each. Handlers in `grpc` call exactly one of these.

/// The unit of work that owns a mutation's request id, or returns (from the use case) the
/// answer that request id got the first time.
macro_rules! begin_or_replay {
    ($app:expr, $key:expr) => {
        match $app.begin_idempotent($key).await? {
            $crate::app::Begun::Fresh(unit) => unit,
            $crate::app::Begun::Replay(first) => {
                return Ok($crate::app::Answer::Recorded(first));
            }
        }
    };
}

pub mod admin;
mod answer;
pub mod auth;
mod batcher;
mod claims;
pub mod clients;
mod codes;
mod coupons;
pub mod events;
mod isolate;
pub mod limits;
mod points;
mod pricing;
mod retention;
mod settings;
pub use retention::RETENTION_SWEEP_EVERY;
mod templates;

use std::{sync::Arc, time::Duration};

use marketing_domain::{MarketingError, time::Clock};

use batcher::Batcher;
use marketing_infra::{
    cache::{Cache, LocalCache, TieredCache, Versioned},
    event_streams::EventStreams,
    leaderboard::{Leaderboard, LocalLeaderboard, RedisLeaderboard},
    lock::{DistributedLock, LocalLock, RedisLock},
    rate::{RateLimiter, RedisRateLimiter},
    redis::RedisPool,
    stamps::{LocalStamps, RedisStamps, StampedCache, Stamps},
};
use marketing_storage::{
    Backend, Database,
    idempotency::IdempotencyKey,
    unit::{self, UnitOfWork},
};

pub use answer::{Answer, Recorded};

pub use crate::observability::Metrics;
use crate::observability::{self, Counter, TransportCounters};
pub use claims::{ClaimCode, ClaimCoupon, ClaimCouponByCode, DistributeCoupons};
pub use clients::ClientService;
pub use codes::{CreateSharedCode, GenerateCodes, Generated, ListCodes};
pub use coupons::{
    CouponChange, CouponService, HeldCoupons, ListCoupons, TransitionCoupon, UseCart,
};
pub use events::{EventService, EventStream, ListEvents, StreamEvents, Streamed};
pub use points::{EarnSource, HoldSelector, PointsCommand, PointsOp, PointsService, RefundTarget};
pub use pricing::{
    ApplicableCoupons, Cart, MAX_CART_LINES, MAX_PRICED_COUPONS, PriceOrder, PricedOrder, Rejected,
};
pub use retention::RetentionService;
pub use settings::{SettingsService, UpdateSettings};
pub use templates::{
    ChangeTemplate, CreateTemplate, ListTemplates, TemplateService, UpdateTemplate,
};

use crate::{
    config::{Config, redact},
    wire::{self, ToWire},
};

/// The configured database (the embedded file's directory created), migrated.
pub async fn open_database(config: &Config) -> anyhow::Result<Database> {
    let url = config.effective_database_url();
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|err| {
            anyhow::anyhow!(
                "cannot create data directory {}: {err}",
                config.data_dir.display()
            )
        })?;
    }
    let db = Database::connect(&url, config.db_max_connections, config.slow_statement)
        .await
        .map_err(|err| anyhow::anyhow!("cannot connect to the database {}: {err}", redact(&url)))?;
    db.migrate()
        .await
        .map_err(|err| anyhow::anyhow!("migrating the database failed: {err}"))?;
    match db.autovacuum_off().await {
        Ok(true) => tracing::warn!(
            "PostgreSQL runs with autovacuum off: nothing keeps the planner's statistics current \
             as tables grow, and plans go bad (claims ran ~5x slower on a database without \
             statistics); turn it on in production"
        ),
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "cannot read PostgreSQL's autovacuum setting"),
    }
    Ok(db)
}

/// What every service shares: the database, the clock, the configuration, the counters and
/// the cache of templates and rules. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub db: Database,
    /// Where every use case reads the time (tests move it instead of sleeping).
    pub clock: Clock,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Copies of templates and points rules (each context keys its own entries).
    pub cache: Arc<dyn Cache>,
    /// The Redis connection every Redis-backed part shares (`None` in the embedded mode):
    /// for its breaker's state and counts.
    pub redis: Option<RedisPool>,
}

/// The services, one per context, each owning its stores, caches and batchers. The gRPC
/// layer holds the ones it calls.
#[derive(Clone)]
pub struct AppState {
    pub templates: TemplateService,
    pub coupons: CouponService,
    pub points: PointsService,
    pub clients: ClientService,
    pub retention: RetentionService,
    pub events: EventService,
    pub settings: SettingsService,
    pub admin: admin::AdminService,
}

impl AppState {
    /// Every counter of this replica: its use cases', `transport`'s, and its caches' (templates
    /// and rules; members' coupon lists when they are kept).
    pub fn counters(&self, transport: &TransportCounters) -> Vec<Counter> {
        let shared = &self.templates.shared;
        let mut caches = vec![("templates_and_rules", shared.cache.stats())];
        if let Some(lists) = &self.coupons.coupon_lists {
            caches.push(("coupon_lists", lists.stats()));
        }
        let redis = shared.redis.as_ref().map(|pool| pool.breaker().stats());
        let mut all = observability::counters(&shared.metrics, transport, &caches, redis);
        if let Some(lists) = &self.coupons.coupon_lists {
            let (checks, failures) = lists.stamp_checks();
            all.extend([
                Counter {
                    name: "marketing_stamp_checks_total",
                    help: "freshness checks of members' coupon-list copies (one Redis command a read)",
                    cache: None,
                    value: checks,
                },
                Counter {
                    name: "marketing_stamp_check_failures_total",
                    help: "freshness checks that failed (Redis unreachable): the list was read from the database",
                    cache: None,
                    value: failures,
                },
            ]);
        }
        all
    }

    /// What every service shares.
    pub fn shared(&self) -> &Shared {
        &self.templates.shared
    }

    /// Connects to the database (migrating it) and to Redis, or sets up the embedded mode.
    pub async fn connect(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let db = open_database(&config).await?;
        let url = config.effective_database_url();
        let replica = admin::Replica {
            id: config.effective_replica_id(),
            started_at: clock.now(),
        };
        type Backends = (
            Arc<dyn Cache>,
            Arc<dyn DistributedLock>,
            Arc<dyn Leaderboard>,
            Arc<dyn Stamps>,
            Option<Arc<dyn RateLimiter>>,
            Option<EventStreams>,
        );
        let mut redis = None;
        let (cache, lock, leaderboard, stamps, rate_limiter, event_streams): Backends =
            match &config.redis_url {
                Some(redis_url) => {
                    let pool =
                        RedisPool::new(redis_url, config.redis_pool_size, &config.redis_key_prefix)
                            .map_err(|err| anyhow::anyhow!("invalid Redis configuration: {err}"))?;
                    redis = Some(pool.clone());
                    if let Err(err) = pool.ping().await {
                        // Redis is never the source of truth: start anyway, degraded.
                        tracing::warn!(redis = %redact(redis_url), error = %err, "redis unreachable at start-up; continuing on the database alone");
                    }
                    let legacy = pool.clone();
                    tokio::spawn(async move {
                        match legacy.remove_legacy_keys().await {
                            Ok(None | Some(0)) => {}
                            Ok(Some(removed)) => {
                                tracing::info!(
                                    removed,
                                    "removed keys older versions left without a bound"
                                );
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "removing keys older versions left failed; the next start tries again");
                            }
                        }
                    });
                    (
                        Arc::new(TieredCache::start(
                            pool.clone(),
                            config.local_cache_capacity,
                        )),
                        Arc::new(RedisLock::new(pool.clone(), &replica.id)),
                        Arc::new(RedisLeaderboard::new(pool.clone())),
                        Arc::new(RedisStamps::new(pool.clone())),
                        Some(Arc::new(RedisRateLimiter::new(pool.clone()))),
                        Some(EventStreams::new(
                            pool,
                            config.events_stream_maxlen,
                            Duration::from_secs(
                                config.events_retention_days.saturating_mul(86_400),
                            ),
                        )),
                    )
                }
                None => (
                    Arc::new(LocalCache::new(config.local_cache_capacity)),
                    Arc::new(LocalLock::new(&replica.id)),
                    Arc::new(LocalLeaderboard::new()),
                    Arc::new(LocalStamps::new(config.local_cache_capacity)),
                    None,
                    None,
                ),
            };
        match (db.backend(), config.redis_url.is_some()) {
            (Backend::Sqlite, _) if config.database_url.is_none() && config.redis_url.is_none() => {
                tracing::info!(database = %url, "embedded mode: SQLite file with in-process lock and cache; single-node, run exactly one replica");
            }
            (Backend::Sqlite, _) => {
                tracing::info!(database = %url, "SQLite database: single-node, run exactly one replica");
            }
            (Backend::Postgres, false) => {
                tracing::warn!(
                    "PostgreSQL without Redis: in-process lock and cache, so this server must run as a single replica"
                );
            }
            (Backend::Postgres, true) => {
                tracing::info!("PostgreSQL with Redis: ready for several replicas");
            }
        }
        let coupon_lists = (config.coupon_list_cache_capacity > 0).then(|| {
            Arc::new(StampedCache::new(
                stamps,
                config.coupon_list_cache_capacity,
                HeldCoupons::weight,
            ))
        });
        // A quarter of the pool at most for keys this replica has not seen, and half of
        // its turns for calls waiting for that: the rest stays with clients it knows.
        let auth = Arc::new(auth::Authenticator::new(
            db.clone(),
            config.effective_auth(),
            config.tls_client_name,
            config.db_max_connections as usize / 4,
            config.max_calls / 2,
        ));
        let metrics = Arc::<Metrics>::default();
        let limits = Arc::new(limits::Limits::new(
            config.rate_limits.clone(),
            rate_limiter,
            metrics.clone(),
        ));
        let claim_batcher = Arc::new(Batcher::new(config.claim_batch_max, "claim"));
        let code_lookups = Arc::new(Batcher::new(config.claim_batch_max, "code lookup"));
        let points_batcher = Arc::new(Batcher::new(config.points_batch_max, "points"));
        let shared = Shared {
            db,
            clock,
            config: Arc::new(config),
            metrics,
            cache,
            redis,
        };
        let templates = TemplateService {
            shared: shared.clone(),
        };
        let admin = admin::AdminService {
            shared: shared.clone(),
            replica,
            lock: lock.clone(),
            coupon_lists: coupon_lists.clone(),
            sweeper: Arc::default(),
            samples: Arc::default(),
            tenant_evictions: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        Ok(Self {
            admin,
            coupons: CouponService {
                shared: shared.clone(),
                templates: templates.clone(),
                lock,
                coupon_lists,
                claim_batcher,
                code_lookups,
            },
            points: PointsService {
                shared: shared.clone(),
                leaderboard,
                points_batcher,
                stale_boards: Arc::default(),
            },
            clients: ClientService {
                db: shared.db.clone(),
                auth,
                limits,
            },
            events: EventService::new(shared.clone(), event_streams),
            settings: SettingsService {
                shared: shared.clone(),
            },
            retention: RetentionService { shared },
            templates,
        })
    }
}

/// `serve` as a batcher's drainer, run on a clone of `service` (a drainer outlives the call
/// that started it).
fn drainer<S: Clone + Send + 'static, G, F>(
    service: &S,
    serve: impl Fn(S, G) -> F + Send + 'static,
) -> impl Fn(G) -> F + Send + 'static {
    let service = service.clone();
    move |groups| serve(service.clone(), groups)
}

/// A unit of work that owns its request id, or the first answer of that request.
pub enum Begun<R> {
    Fresh(UnitOfWork),
    Replay(Recorded<R>),
}

impl Shared {
    /// Opens the unit of work of a mutation and claims its request id in it. A request id
    /// answered before gives that answer (a recorded refusal as the error).
    pub async fn begin_idempotent<R>(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Begun<R>, MarketingError> {
        match UnitOfWork::begin_idempotent(&self.db, key, self.clock.now()).await? {
            unit::Begun::Fresh(unit) => Ok(Begun::Fresh(unit)),
            unit::Begun::Replay(outcome) => {
                wire::replay(outcome).map(|bytes| Begun::Replay(Recorded::new(bytes)))
            }
        }
    }

    /// Writes a copy through to the cache (the highest version wins, so a slow writer cannot
    /// put an older copy back). If the write fails, the entry is evicted so no older copy
    /// outlives the change; if that fails too, the TTL bounds the staleness.
    pub(crate) async fn write_through(&self, key: &str, entry: Versioned, ttl: Duration) {
        if let Err(err) = self.cache.put(key, entry, ttl).await {
            marketing_infra::warn_every!(error = %err, cache_key = %key, "caching failed");
            if let Err(err) = self.cache.evict(key).await {
                marketing_infra::warn_every!(error = %err, cache_key = %key, "evicting failed");
            }
        }
    }

    /// Records `response` as the outcome of the request and commits.
    pub async fn commit_idempotent<R: ToWire>(
        &self,
        unit: UnitOfWork,
        key: &IdempotencyKey,
        response: &R,
    ) -> Result<(), MarketingError> {
        unit.commit_answered(key, wire::answered(response)).await
    }
}
