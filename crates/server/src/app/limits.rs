//! Rate limits (`MARKETING_RATE_LIMITS`): a member's claims and earns by rule, and a client's
//! calls, counted per key before any other work. With Redis, every replica shares one count
//! per key; without it (the embedded mode), this process counts. While Redis cannot be
//! reached, each replica counts on its own and says so in the log: limits loosen to one
//! count per replica, they never switch off.

use std::{num::NonZeroU32, sync::Arc};

use marketing_domain::{
    MarketingError,
    limits::{LimitedAction, RateLimits},
};
use marketing_infra::rate::{Gcra, LocalRateLimiter, RateLimiter, Verdict};

use super::Metrics;

pub struct Limits {
    limits: RateLimits,
    /// Shared by every replica (Redis); `None` in the embedded mode.
    shared: Option<Arc<dyn RateLimiter>>,
    local: LocalRateLimiter,
    metrics: Arc<Metrics>,
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
        }
    }

    /// Whether `action` is limited at all (a call that is not pays nothing).
    pub fn limits(&self, action: LimitedAction) -> bool {
        self.limits.get(action).is_some()
    }

    /// Counts one `action` by `who` (a member as `tenant/member[/event]`, a client by name);
    /// RATE_LIMITED, with how long to wait, past the limit.
    pub async fn admit(&self, action: LimitedAction, who: &str) -> Result<(), MarketingError> {
        let Some(limit) = self.limits.get(action) else {
            return Ok(());
        };
        let gcra = Gcra {
            period: limit.period(),
            burst: NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN),
        };
        let key = format!("{action}:{who}");
        let verdict = match &self.shared {
            Some(shared) => match shared.check(&key, gcra).await {
                Ok(verdict) => verdict,
                Err(err) => {
                    self.metrics.record_local_rate_limit();
                    marketing_infra::warn_every!(error = %err, %action, "rate limits counted by this replica alone while redis is unreachable");
                    self.local.check_now(&key, gcra)
                }
            },
            None => self.local.check_now(&key, gcra),
        };
        match verdict {
            Verdict::Admitted => Ok(()),
            Verdict::Limited { retry_after } => {
                self.metrics.record_rate_limited();
                marketing_infra::warn_every!(%action, who, "call refused: rate limit reached");
                Err(MarketingError::RateLimited {
                    action,
                    retry_after,
                })
            }
        }
    }
}
