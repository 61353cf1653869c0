//! Every counter of a replica in one place: what its use cases count ([`Metrics`]), what its
//! transport refused and closed ([`TransportCounters`]), and its caches' statistics.
//! [`counters`] reads them all under the names they are exported by (the operations work adds
//! the endpoint); a counter added to either struct does not compile until it is named there.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use marketing_infra::cache::CacheStatsSnapshot;

#[derive(Debug, Default)]
pub struct Metrics {
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
    /// Calls refused by a rate limit.
    pub rate_limited: AtomicU64,
    /// Rate-limit checks this replica counted alone because Redis could not be reached.
    pub local_rate_limits: AtomicU64,
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

    pub fn record_claim_split(&self) {
        self.claim_splits.fetch_add(1, Relaxed);
    }

    pub fn record_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    pub fn record_local_rate_limit(&self) {
        self.local_rate_limits.fetch_add(1, Relaxed);
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
    pub cache: Option<&'static str>,
    pub value: u64,
}

/// Every counter of the replica: its use cases', its transport's and, for each named cache,
/// that cache's.
pub fn counters(
    metrics: &Metrics,
    transport: &TransportCounters,
    caches: &[(&'static str, CacheStatsSnapshot)],
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
        rate_limited,
        local_rate_limits,
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
        ("marketing_claim_lock_unavailable_total", lock_unavailable),
        ("marketing_claim_batches_total", claim_batches),
        ("marketing_claims_batched_total", claims_batched),
        ("marketing_claim_retries_total", claim_retries),
        ("marketing_coupons_unlocked_total", coupons_unlocked),
        ("marketing_coupons_expired_total", coupons_expired),
        ("marketing_points_fallbacks_total", points_fallbacks),
        ("marketing_points_splits_total", points_splits),
        ("marketing_claim_splits_total", claim_splits),
        ("marketing_claim_lock_lapses_total", claim_lock_lapses),
        ("marketing_rate_limited_total", rate_limited),
        ("marketing_local_rate_limits_total", local_rate_limits),
        ("marketing_refused_connections_total", refused_connections),
        ("marketing_handshake_timeouts_total", handshake_timeouts),
        ("marketing_idle_closes_total", idle_closes),
        ("marketing_refused_responses_total", refused_responses),
        ("marketing_evicted_connections_total", evicted_connections),
        ("marketing_refused_open_calls_total", refused_open_calls),
    ];
    let mut all: Vec<Counter> = atomics
        .into_iter()
        .map(|(name, value)| Counter {
            name,
            cache: None,
            value: value.load(Relaxed),
        })
        .collect();
    for (cache, stats) in caches {
        let CacheStatsSnapshot {
            local_hits,
            remote_hits,
            misses,
            evictions,
            remote_evictions,
        } = *stats;
        for (name, value) in [
            ("marketing_cache_local_hits_total", local_hits),
            ("marketing_cache_remote_hits_total", remote_hits),
            ("marketing_cache_misses_total", misses),
            ("marketing_cache_evictions_total", evictions),
            ("marketing_cache_remote_evictions_total", remote_evictions),
        ] {
            all.push(Counter {
                name,
                cache: Some(cache),
                value,
            });
        }
    }
    all
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
        let all = counters(
            &metrics,
            &transport,
            &[("templates", stats), ("lists", stats)],
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
        assert_eq!(all.len(), 18 + 2 * 5);
    }
}
