//! What an operator asks of one replica: its caches' counts (since start and over the last
//! minute), the locks held, evictions of cached copies, and what its sweeper did.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use marketing_domain::{MarketingError, MemberId, TemplateId, TenantId, UnixMicros};
use marketing_infra::{
    cache::{CacheStatsSnapshot, Copies, Dropped},
    lock::{ActivePage, DistributedLock},
    stamps::StampedCache,
};

use super::{PointsService, Shared, coupons, coupons::HeldCoupons, settings, templates};

/// The replica that answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub id: String,
    pub started_at: UnixMicros,
}

/// How far back "the last minute" of the caches' counts reaches.
const CACHE_WINDOW: Duration = Duration::from_secs(60);

/// A cache as an operator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheView {
    pub name: &'static str,
    pub kind: &'static str,
    pub entries: u64,
    pub since_start: CacheStatsSnapshot,
    pub last_minute: CacheStatsSnapshot,
    /// What `last_minute` covers.
    pub window: Duration,
}

/// What to drop from the caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictTarget {
    Template(TemplateId),
    /// The cached rule of this event type.
    Rule(String),
    /// A member's coupon list.
    CouponList(MemberId),
    /// Everything cached of the tenant.
    Tenant,
}

/// One part of the sweeper, as its last runs left it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweeperPart {
    pub name: &'static str,
    pub last_run: Option<UnixMicros>,
    pub last_success: Option<UnixMicros>,
    pub last_items: u64,
    pub total_items: u64,
    pub runs: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// When a run last left nothing due (swept less than a full batch); `None` before.
    pub caught_up: Option<UnixMicros>,
    /// Whether the last run left nothing due.
    pub keeping_up: bool,
}

impl SweeperPart {
    /// How far behind the part is at `now`: zero while it keeps up, else the time since it
    /// last did (or since the replica started, if it never did).
    pub fn lag(&self, now: UnixMicros, started: UnixMicros) -> Duration {
        if self.keeping_up {
            return Duration::ZERO;
        }
        let since = self.caught_up.unwrap_or(started);
        Duration::from_micros(u64::try_from(now.0 - since.0).unwrap_or(0))
    }
}

/// How one run of a sweeper part went.
pub enum SweepRun {
    /// It swept `items`; `full` when it swept a whole batch of some kind (more may be due).
    Swept {
        items: u64,
        full: bool,
    },
    Failed(String),
}

/// The sweeper's parts, in the order a round runs them.
pub const SWEEPER_PARTS: [&str; 6] = [
    "coupons",
    "reminders",
    "code_generations",
    "points",
    "retention_records",
    "retention_events",
];

/// What the sweeper of this replica did, part by part.
#[derive(Debug)]
pub struct SweeperStatus {
    parts: Mutex<Vec<SweeperPart>>,
}

impl Default for SweeperStatus {
    fn default() -> Self {
        Self {
            parts: Mutex::new(
                SWEEPER_PARTS
                    .iter()
                    .map(|name| SweeperPart {
                        name,
                        ..SweeperPart::default()
                    })
                    .collect(),
            ),
        }
    }
}

impl SweeperStatus {
    /// Records a run of part `name` (one of [`SWEEPER_PARTS`]) at `now`.
    pub fn record(&self, name: &str, now: UnixMicros, run: SweepRun) {
        let mut parts = lock(&self.parts);
        let Some(part) = parts.iter_mut().find(|part| part.name == name) else {
            debug_assert!(false, "unknown sweeper part {name}");
            return;
        };
        part.runs += 1;
        part.last_run = Some(now);
        match run {
            SweepRun::Swept { items, full } => {
                part.last_success = Some(now);
                part.last_items = items;
                part.total_items += items;
                part.last_error = None;
                part.keeping_up = !full;
                if !full {
                    part.caught_up = Some(now);
                }
            }
            SweepRun::Failed(error) => {
                part.failures += 1;
                part.last_error = Some(error);
                part.keeping_up = false;
            }
        }
    }

    pub fn parts(&self) -> Vec<SweeperPart> {
        lock(&self.parts).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a copy or a few assignments.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Samples of the caches' counts, oldest first, kept for [`CACHE_WINDOW`] and a bit.
type Samples = VecDeque<(Instant, Vec<CacheStatsSnapshot>)>;

/// The admin service's use cases, over the caches, the lock and the sweeper of this replica.
#[derive(Clone)]
pub struct AdminService {
    pub(super) shared: Shared,
    pub(super) replica: Replica,
    /// The lock the claims take (tests hold one to see it listed).
    pub lock: Arc<dyn DistributedLock>,
    pub(super) coupon_lists: Option<Arc<StampedCache<HeldCoupons>>>,
    pub sweeper: Arc<SweeperStatus>,
    pub(super) samples: Arc<Mutex<Samples>>,
    /// Whole-tenant evictions scan Redis: one at a time per replica.
    pub(super) tenant_evictions: Arc<tokio::sync::Semaphore>,
}

impl AdminService {
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Each cache's name, kind and counts now.
    fn caches_now(&self) -> Vec<(&'static str, &'static str, CacheStatsSnapshot)> {
        let cache = &self.shared.cache;
        let mut caches = vec![("templates_and_rules", cache.kind(), cache.stats())];
        if let Some(lists) = &self.coupon_lists {
            caches.push(("coupon_lists", "in-process", lists.stats()));
        }
        caches
    }

    /// Copies each cache holds, by the cache's name (for `/metrics`).
    pub fn cache_entries(&self) -> Vec<(&'static str, u64)> {
        self.caches_now()
            .into_iter()
            .map(|(name, ..)| name)
            .zip(self.entries())
            .collect()
    }

    /// Copies each cache of [`Self::caches_now`] holds.
    fn entries(&self) -> Vec<u64> {
        let mut entries = vec![self.shared.cache.entries()];
        if let Some(lists) = &self.coupon_lists {
            entries.push(lists.entries());
        }
        entries
    }

    /// Keeps a sample of the caches' counts (the sweeper calls this every round), so that
    /// [`Self::cache_stats`] can tell the last minute's.
    pub fn sample_caches(&self) {
        let counts = self.caches_now().into_iter().map(|c| c.2).collect();
        let now = Instant::now();
        let mut samples = lock(&self.samples);
        samples.push_back((now, counts));
        // Keep the newest sample at least a window old, and none older.
        while samples
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= CACHE_WINDOW)
        {
            samples.pop_front();
        }
    }

    /// Each cache, with its counts since start and over the last minute (since start while
    /// the replica is younger than that).
    pub fn cache_stats(&self) -> Vec<CacheView> {
        let now = Instant::now();
        let caches = self.caches_now();
        let entries = self.entries();
        let uptime = Duration::from_micros(
            u64::try_from(self.shared.clock.now().0 - self.replica.started_at.0).unwrap_or(0),
        );
        let samples = lock(&self.samples);
        // The oldest sample within the window (the sweeper samples every round).
        let base = samples
            .iter()
            .find(|(at, _)| now.duration_since(*at) <= CACHE_WINDOW)
            .filter(|_| uptime > CACHE_WINDOW);
        caches
            .into_iter()
            .enumerate()
            .map(|(index, (name, kind, since_start))| {
                let (window, before) = base
                    .and_then(|(at, counts)| {
                        counts.get(index).map(|c| (now.duration_since(*at), *c))
                    })
                    .unwrap_or((uptime, CacheStatsSnapshot::default()));
                CacheView {
                    name,
                    kind,
                    entries: entries.get(index).copied().unwrap_or_default(),
                    since_start,
                    last_minute: difference(since_start, before),
                    window,
                }
            })
            .collect()
    }

    /// A page of the locks held now (see [`DistributedLock::active`]).
    pub async fn active_locks(
        &self,
        cursor: u64,
        count: usize,
    ) -> Result<ActivePage, MarketingError> {
        self.lock
            .active(cursor, count)
            .await
            .map_err(|err| MarketingError::Unavailable(err.into()))
    }

    /// Drops the cached copies of `target` of `tenant` on every replica.
    pub async fn evict(
        &self,
        tenant: &TenantId,
        target: &EvictTarget,
    ) -> Result<Dropped, MarketingError> {
        let unavailable =
            |err: marketing_infra::InfraError| MarketingError::Unavailable(err.into());
        let cache = &self.shared.cache;
        let mut dropped = Dropped::default();
        let mut add = |more: Dropped| {
            dropped.local += more.local;
            dropped.shared += more.shared;
        };
        match target {
            EvictTarget::Template(id) => add(cache
                .drop_copies(Copies::Key(&templates::cache_key(tenant, *id)))
                .await
                .map_err(unavailable)?),
            EvictTarget::Rule(event) => add(cache
                .drop_copies(Copies::Key(&PointsService::rule_cache_key(tenant, event)))
                .await
                .map_err(unavailable)?),
            EvictTarget::CouponList(member) => {
                if let Some(lists) = &self.coupon_lists {
                    let key = coupons::held_key(tenant.as_str(), member.as_str());
                    let held = lists.holds(&key);
                    lists.invalidate(vec![key]).await;
                    add(Dropped {
                        local: u64::from(held),
                        shared: 0,
                    });
                }
            }
            EvictTarget::Tenant => {
                let _turn = self
                    .tenant_evictions
                    .acquire()
                    .await
                    .map_err(|_| MarketingError::internal("eviction turns closed"))?;
                for family in [
                    templates::cache_family(tenant),
                    PointsService::rule_cache_family(tenant),
                    // Exactly the tenant's one settings key (a family's rest has no `:`).
                    settings::settings_cache_key(tenant),
                ] {
                    add(cache
                        .drop_copies(Copies::Family(&family))
                        .await
                        .map_err(unavailable)?);
                }
                if let Some(lists) = &self.coupon_lists {
                    let (local, stamps) = lists
                        .invalidate_prefixed(&coupons::held_prefix(tenant.as_str()))
                        .await
                        .map_err(unavailable)?;
                    add(Dropped {
                        local,
                        shared: stamps,
                    });
                }
            }
        }
        Ok(dropped)
    }
}

fn difference(now: CacheStatsSnapshot, before: CacheStatsSnapshot) -> CacheStatsSnapshot {
    CacheStatsSnapshot {
        local_hits: now.local_hits.saturating_sub(before.local_hits),
        remote_hits: now.remote_hits.saturating_sub(before.remote_hits),
        misses: now.misses.saturating_sub(before.misses),
        evictions: now.evictions.saturating_sub(before.evictions),
        remote_evictions: now.remote_evictions.saturating_sub(before.remote_evictions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_that_sweeps_full_batches_falls_behind_until_a_run_leaves_nothing_due() {
        let status = SweeperStatus::default();
        let started = UnixMicros(1_000_000);
        let at = |seconds: i64| UnixMicros(started.0 + seconds * 1_000_000);
        let part = |status: &SweeperStatus| {
            status
                .parts()
                .into_iter()
                .find(|part| part.name == "coupons")
                .expect("coupons")
        };
        status.record(
            "coupons",
            at(5),
            SweepRun::Swept {
                items: 3,
                full: false,
            },
        );
        assert_eq!(part(&status).lag(at(6), started), Duration::ZERO);
        status.record(
            "coupons",
            at(10),
            SweepRun::Swept {
                items: 500,
                full: true,
            },
        );
        status.record("coupons", at(15), SweepRun::Failed("down".into()));
        let behind = part(&status);
        assert_eq!(behind.lag(at(20), started), Duration::from_secs(15));
        assert_eq!(
            (behind.runs, behind.failures, behind.total_items),
            (3, 1, 503)
        );
        assert_eq!(behind.last_items, 500);
        assert_eq!(behind.last_error.as_deref(), Some("down"));
        status.record(
            "coupons",
            at(25),
            SweepRun::Swept {
                items: 7,
                full: false,
            },
        );
        let caught_up = part(&status);
        assert_eq!(caught_up.lag(at(30), started), Duration::ZERO);
        assert_eq!(caught_up.last_error, None);
    }
}
