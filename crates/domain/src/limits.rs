//! Rate limits: how often a member may repeat an action, and a client may call at all.
//!
//! A limit is a rate and a burst (`claim=5/s:10`: five claims a second per member, ten at
//! once after a quiet spell), enforced as a GCRA: each key has a theoretical arrival time
//! that moves one period ahead per admitted call, and a call is admitted while that time is
//! at most `burst - 1` periods ahead of now. Over any window of `w`, a key is admitted at most
//! `burst + rate * w` calls.

use std::{fmt, str::FromStr, time::Duration};

/// What is limited, and per what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitedAction {
    /// `ClaimCoupon`, per tenant and member.
    Claim,
    /// `EarnPoints` by a rule (an event), per tenant, member and event.
    Earn,
    /// Every call of an API client, per client.
    Client,
    /// A failed `ClaimCouponByCode` (a code not found, or claimed already), per tenant and
    /// member: bounds guessing. Every attempt takes a turn; one that is not a failed lookup
    /// gives it back.
    CodeAttempt,
}

impl LimitedAction {
    pub const ALL: [LimitedAction; 4] = [Self::Claim, Self::Earn, Self::Client, Self::CodeAttempt];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Earn => "earn",
            Self::Client => "client",
            Self::CodeAttempt => "code_attempt",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == text)
    }
}

impl fmt::Display for LimitedAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `count` calls per `per`, with up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
}

impl RateLimit {
    /// The time one call costs: the key's arrival time moves this far per admitted call.
    pub fn period(&self) -> Duration {
        self.per / self.count
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}:{}", self.count, self.burst)
    }
}

impl FromStr for RateLimit {
    type Err = String;

    /// `COUNT/UNIT[:BURST]`, UNIT one of `s`, `m`, `h`; the burst defaults to the count.
    fn from_str(text: &str) -> Result<Self, String> {
        let (rate, burst) = match text.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (text, None),
        };
        let (count, unit) = rate
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not COUNT/UNIT[:BURST] (e.g. 5/s:10)"))?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|count| *count > 0)
            .ok_or_else(|| format!("{text:?}: the count must be a whole number above 0"))?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => return Err(format!("{text:?}: unit {other:?} is not s, m or h")),
        };
        let burst = match burst {
            None => count,
            Some(burst) => burst
                .trim()
                .parse()
                .ok()
                .filter(|burst| *burst > 0)
                .ok_or_else(|| format!("{text:?}: the burst must be a whole number above 0"))?,
        };
        // A period under a microsecond cannot be kept by the limiter's clock.
        if per / count < Duration::from_micros(1) {
            return Err(format!("{text:?}: more than one call per microsecond"));
        }
        Ok(Self { count, per, burst })
    }
}

/// The configured limits (`MARKETING_RATE_LIMITS`): at most one per action; an action with
/// none is not limited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    limits: Vec<(LimitedAction, RateLimit)>,
}

/// Failed code attempts a member has when `code_attempt` is not configured: guessing codes is
/// bounded even where no limits are set.
pub const DEFAULT_CODE_ATTEMPTS: RateLimit = RateLimit {
    count: 20,
    per: Duration::from_secs(3600),
    burst: 20,
};

impl RateLimits {
    /// The limit of `action`: as configured, else none (`code_attempt`: else
    /// [`DEFAULT_CODE_ATTEMPTS`]).
    pub fn get(&self, action: LimitedAction) -> Option<RateLimit> {
        self.limits
            .iter()
            .find(|(limited, _)| *limited == action)
            .map(|(_, limit)| *limit)
            .or((action == LimitedAction::CodeAttempt).then_some(DEFAULT_CODE_ATTEMPTS))
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }
}

impl fmt::Display for RateLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (action, limit)) in self.limits.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{action}={limit}")?;
        }
        Ok(())
    }
}

impl FromStr for RateLimits {
    type Err = String;

    /// `ACTION=LIMIT[,ACTION=LIMIT...]`, e.g. `claim=5/s:10,earn=20/m,client=1000/s:2000`;
    /// empty for none.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut limits: Vec<(LimitedAction, RateLimit)> = Vec::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (action, limit) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not ACTION=LIMIT (e.g. claim=5/s:10)"))?;
            let action = LimitedAction::parse(action.trim()).ok_or_else(|| {
                format!(
                    "{:?} is not an action (claim, earn, client, code_attempt)",
                    action.trim()
                )
            })?;
            if limits.iter().any(|(limited, _)| *limited == action) {
                return Err(format!("{action} is limited twice"));
            }
            limits.push((action, limit.parse()?));
        }
        Ok(Self { limits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_print_back() {
        let limits: RateLimits = "claim=5/s:10, earn=20/m ,client=1000/s:2000"
            .parse()
            .expect("valid");
        assert_eq!(
            limits.get(LimitedAction::Claim),
            Some(RateLimit {
                count: 5,
                per: Duration::from_secs(1),
                burst: 10
            })
        );
        let earn = limits.get(LimitedAction::Earn).expect("earn limited");
        assert_eq!((earn.count, earn.burst), (20, 20));
        assert_eq!(earn.period(), Duration::from_secs(3));
        assert_eq!(
            limits.to_string(),
            "claim=5/s:10,earn=20/m:20,client=1000/s:2000"
        );
        assert_eq!(limits.to_string().parse::<RateLimits>(), Ok(limits));
        assert!("".parse::<RateLimits>().expect("empty").is_empty());
    }

    #[test]
    fn a_call_costs_one_period_of_its_rate() {
        let limit: RateLimit = "10/s:1".parse().expect("valid");
        assert_eq!(
            (limit.period(), limit.burst),
            (Duration::from_millis(100), 1)
        );
        let limit: RateLimit = "2/h".parse().expect("valid");
        assert_eq!(
            (limit.period(), limit.burst),
            (Duration::from_secs(1800), 2)
        );
    }

    #[test]
    fn bad_limits_are_named() {
        for (text, said) in [
            ("claim", "ACTION=LIMIT"),
            ("claims=5/s", "not an action"),
            ("claim=5", "COUNT/UNIT"),
            ("claim=0/s", "above 0"),
            ("claim=5/d", "unit"),
            ("claim=5/s:0", "burst"),
            ("claim=5/s:x", "burst"),
            ("claim=5/s,claim=6/s", "twice"),
            ("client=4000000000/s", "microsecond"),
        ] {
            let err = text.parse::<RateLimits>().expect_err(text);
            assert!(err.contains(said), "{text}: {err}");
        }
    }
}
