//! Rate limits (`MARKETING_RATE_LIMITS`): a member's claims and earns by rule, and a client's
//! calls, counted per key before any other work. With Redis, every replica shares one count
//! per key; without it (the embedded mode), this process counts. While Redis cannot be
//! reached, each replica counts on its own and says so in the log: limits loosen to one
//! count per replica, they never switch off.
//!
//! A replica has at most one check of a key in flight in Redis: the checks of that key that
//! come meanwhile wait and go together in its next one (a busy client's calls cost one script
//! call per round trip, not one each). Turns given back (a code attempt that found its code)
//! join the same queue: the caller does not wait for them, and they reach Redis before any
//! later check of the key from this replica.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
};

use marketing_domain::limits::{LimitedAction, RateLimit, RateLimits};
use marketing_infra::rate::{Gcra, LocalRateLimiter, RateLimiter, Verdict};
use tokio::sync::oneshot;

use super::Metrics;
use crate::error::ServerError;

/// What waits for a key's next call to Redis: checks, and turns given back.
#[derive(Default)]
struct Queue {
    checks: Vec<oneshot::Sender<Verdict>>,
    given_back: u32,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.checks.is_empty() && self.given_back == 0
    }
}

pub struct Limits {
    limits: RateLimits,
    /// Shared by every replica (Redis); `None` in the embedded mode.
    shared: Option<Arc<dyn RateLimiter>>,
    local: LocalRateLimiter,
    metrics: Arc<Metrics>,
    /// By key: present while a call of the key is in flight, with what came since.
    waiting: Mutex<HashMap<String, Queue>>,
}

impl Limits {
    pub fn new(
        limits: RateLimits,
        shared: Option<Arc<dyn RateLimiter>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            limits,
            shared,
            local: LocalRateLimiter::new(),
            metrics,
            waiting: Mutex::default(),
        }
    }

    /// Whether `action` is limited at all (a call that is not pays nothing).
    pub fn limits(&self, action: LimitedAction) -> bool {
        self.limits.get(action).is_some()
    }

    /// Counts one `action` by `who` (a member as `tenant/member[/event]`, a client by name);
    /// RATE_LIMITED, with how long to wait, past the limit.
    pub async fn admit(
        self: &Arc<Self>,
        action: LimitedAction,
        who: &str,
    ) -> Result<(), ServerError> {
        let Some(limit) = self.limits.get(action) else {
            return Ok(());
        };
        let gcra = gcra_of(limit);
        let key = format!("{action}:{who}");
        let verdict = match &self.shared {
            Some(shared) => self.shared_verdict(shared, key, gcra).await,
            None => self.local.check_now(&key, &overflow_of(&key), gcra),
        };
        match verdict {
            Verdict::Admitted => Ok(()),
            Verdict::Limited { retry_after } => {
                self.metrics.record_rate_limited();
                marketing_infra::warn_every!(%action, who, "call refused: rate limit reached");
                Err(ServerError::RateLimited {
                    action,
                    retry_after,
                })
            }
        }
    }

    /// Gives back one `action` of `who` admitted before its outcome was known, when the
    /// outcome does not count (a code attempt that found its code). The caller does not wait:
    /// with Redis, the turn joins the key's queue and goes with its next call, before any
    /// check of the key that comes later. Best effort: a give-back lost to a Redis failure
    /// leaves the member one turn short until the limit's period passes.
    pub fn give_back(self: &Arc<Self>, action: LimitedAction, who: &str) {
        let Some(limit) = self.limits.get(action) else {
            return;
        };
        let gcra = gcra_of(limit);
        let key = format!("{action}:{who}");
        match &self.shared {
            Some(shared) => {
                self.enqueue(shared, key, gcra, |queue| {
                    queue.given_back = queue.given_back.saturating_add(1);
                });
            }
            None => self.local.give_back_now(&key, gcra),
        }
    }

    /// Joins the checks of `key` waiting for Redis, starting a drainer when none is in flight.
    async fn shared_verdict(
        self: &Arc<Self>,
        shared: &Arc<dyn RateLimiter>,
        key: String,
        gcra: Gcra,
    ) -> Verdict {
        let (sender, verdict) = oneshot::channel();
        self.enqueue(shared, key.clone(), gcra, |queue| queue.checks.push(sender));
        match verdict.await {
            Ok(verdict) => verdict,
            // The drainer is gone (it panicked): this replica counts the call alone.
            Err(_) => self.local.check_now(&key, &overflow_of(&key), gcra),
        }
    }

    /// Adds to `key`'s queue, starting its drainer when none is in flight.
    fn enqueue(
        self: &Arc<Self>,
        shared: &Arc<dyn RateLimiter>,
        key: String,
        gcra: Gcra,
        add: impl FnOnce(&mut Queue),
    ) {
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            match waiting.get_mut(&key) {
                Some(queue) => {
                    add(queue);
                    false
                }
                None => {
                    let mut queue = Queue::default();
                    add(&mut queue);
                    waiting.insert(key.clone(), queue);
                    true
                }
            }
        };
        if first {
            tokio::spawn(self.clone().drain(shared.clone(), key, gcra));
        }
    }

    /// Serves what waits on `key`, all of it in one call to Redis at a time, until nothing is
    /// left.
    async fn drain(self: Arc<Self>, shared: Arc<dyn RateLimiter>, key: String, gcra: Gcra) {
        // If this task dies, what is queued on the key is dropped (its callers count alone)
        // and the next check starts a new drainer.
        let _gone = Drained {
            limits: self.clone(),
            key: key.clone(),
        };
        loop {
            let Queue {
                mut checks,
                given_back,
            } = {
                let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                match waiting.get_mut(&key) {
                    Some(queue) if !queue.is_empty() => std::mem::take(queue),
                    _ => {
                        waiting.remove(&key);
                        return;
                    }
                }
            };
            // A caller gone meanwhile (cancelled, past its deadline) is not counted.
            checks.retain(|sender| !sender.is_closed());
            if checks.is_empty() && given_back == 0 {
                continue;
            }
            let wanted = u32::try_from(checks.len()).unwrap_or(u32::MAX);
            match shared.check(&key, gcra, given_back, wanted).await {
                Ok(counted) => {
                    for (index, sender) in checks.into_iter().enumerate() {
                        let _ = sender.send(counted.verdict(index));
                    }
                }
                Err(err) => {
                    marketing_infra::warn_every!(error = %err, key, "rate limits counted by this replica alone while redis is unreachable");
                    for _ in 0..given_back {
                        self.local.give_back_now(&key, gcra);
                    }
                    let overflow = overflow_of(&key);
                    for sender in checks {
                        self.metrics.record_local_rate_limit();
                        let _ = sender.send(self.local.check_now(&key, &overflow, gcra));
                    }
                }
            }
        }
    }
}

fn gcra_of(limit: RateLimit) -> Gcra {
    Gcra {
        period: limit.period(),
        burst: NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN),
    }
}

/// The key that new keys of `key`'s scope share when the in-process limiter is full of live
/// keys: one per tenant and action (`earn:acme/m1/signup` -> `earn:acme/*`), one per action
/// for clients (`client:ops` -> `client:*`).
fn overflow_of(key: &str) -> String {
    match key.split_once('/') {
        Some((scope, _)) => format!("{scope}/*"),
        None => match key.split_once(':') {
            Some((action, _)) => format!("{action}:*"),
            None => "*".to_owned(),
        },
    }
}

/// Removes a key's queue when its drainer ends without emptying it (a panic).
struct Drained {
    limits: Arc<Limits>,
    key: String,
}

impl Drop for Drained {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.limits
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::overflow_of;

    #[test]
    fn new_keys_overflow_into_their_tenant_and_action() {
        assert_eq!(overflow_of("earn:acme/m1/signup"), "earn:acme/*");
        assert_eq!(overflow_of("claim:acme/m1"), "claim:acme/*");
        assert_eq!(overflow_of("client:ops"), "client:*");
    }
}
