//! Counters of this replica, read by operators (and the operations work to come).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
