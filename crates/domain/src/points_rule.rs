//! Points rules: how many points an event earns, with an optional daily cap and expiry.

use uuid::Uuid;

use crate::{
    TenantId, UnixMicros,
    coupon_template::Currency,
    error::{FieldViolation, Refusal, Violations},
    points::MAX_POINTS,
    text::{TextKind, check_display_text},
};

pub const MAX_EXPIRY_DAYS: i32 = 3650;
const MAX_DESCRIPTION_CHARS: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointsRule {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub event_type: String,
    pub terms: RuleTerms,
    pub version: i64,
    pub created_at: UnixMicros,
    pub updated_at: UnixMicros,
    /// The API client that made the latest change (`None` when calls are open).
    pub actor: Option<String>,
}

/// How a rule rounds the points an amount earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rounding {
    #[default]
    Down,
    HalfUp,
    Up,
}

impl Rounding {
    pub fn code(self) -> i16 {
        match self {
            Self::Down => 1,
            Self::HalfUp => 2,
            Self::Up => 3,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            1 => Self::Down,
            2 => Self::HalfUp,
            3 => Self::Up,
            _ => return None,
        })
    }

    /// `numerator / denominator` (both >= 0, denominator > 0) rounded this way.
    fn divide(self, numerator: i128, denominator: i128) -> i128 {
        match self {
            Self::Down => numerator / denominator,
            Self::HalfUp => (2 * numerator + denominator) / (2 * denominator),
            Self::Up => (numerator + denominator - 1) / denominator,
        }
    }
}

/// Bound of a rule's multiplier (basis points: 10,000 is x1).
pub const MAX_MULTIPLIER_BP: i32 = 1_000_000;

/// A rule that earns by the amount spent: `points` for every `amount` minor units of
/// `currency`, times `multiplier_bp` / 10,000, rounded by `rounding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerAmount {
    pub currency: Currency,
    pub amount: i64,
    pub multiplier_bp: i32,
    pub rounding: Rounding,
}

/// The editable part of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleTerms {
    pub description: String,
    /// Points per event, or (with `per_amount`) per amount spent.
    pub points: i64,
    pub daily_cap: Option<i64>,
    pub expiry_days: Option<i32>,
    pub enabled: bool,
    pub per_amount: Option<PerAmount>,
}

impl RuleTerms {
    /// What an event earns before the daily cap: the rule's points, or what the order
    /// (`amount` minor units of `currency`) earns under a rule by amount.
    pub fn points_for(&self, order: Option<(i64, &Currency)>) -> Result<i64, Refusal> {
        let Some(per) = &self.per_amount else {
            if order.is_some() {
                return Err(Refusal::invalid(
                    "order_amount",
                    "is for events whose rule earns by the amount spent",
                ));
            }
            return Ok(self.points);
        };
        let Some((amount, currency)) = order else {
            return Err(Refusal::invalid(
                "order_amount",
                "is required: this event's rule earns by the amount spent",
            ));
        };
        if currency != &per.currency {
            return Err(Refusal::CurrencyMismatch);
        }
        let numerator =
            i128::from(amount) * i128::from(self.points) * i128::from(per.multiplier_bp);
        let denominator = i128::from(per.amount) * 10_000;
        let points = per.rounding.divide(numerator, denominator);
        let points = i64::try_from(points).unwrap_or(i64::MAX).min(MAX_POINTS);
        if points <= 0 {
            return Err(Refusal::invalid(
                "order_amount",
                "earns no points under the event's rule",
            ));
        }
        Ok(points)
    }

    /// The points an event earning `points` ([`Self::points_for`]) gets when the member
    /// already earned `earned_today` under this rule today: cut to what the daily cap leaves. Refused when the rule
    /// is off, or its cap is reached.
    pub fn award(&self, points: i64, earned_today: i64) -> Result<i64, Refusal> {
        if !self.enabled {
            return Err(Refusal::RuleDisabled);
        }
        let Some(cap) = self.daily_cap else {
            return Ok(points);
        };
        let award = points.min(cap.saturating_sub(earned_today));
        if award <= 0 {
            return Err(Refusal::DailyCapReached);
        }
        Ok(award)
    }
}

/// An event type: 1..=64 of `[a-z0-9_.-]`.
pub fn parse_event_type(field: &str, value: &str) -> Result<String, FieldViolation> {
    if value.is_empty() || value.len() > 64 {
        return Err(FieldViolation::new(field, "must be 1 to 64 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(FieldViolation::new(
            field,
            "may contain only a-z, 0-9 and _ . -",
        ));
    }
    Ok(value.to_owned())
}

impl RuleTerms {
    /// Checks every rule; field names relative to the rule message.
    pub fn check(self) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Violations::new();
        violations.check(check_display_text(
            "description",
            &self.description,
            TextKind::Lines,
            MAX_DESCRIPTION_CHARS,
        ));
        if !(1..=MAX_POINTS).contains(&self.points) {
            violations.push("points", format!("must be between 1 and {MAX_POINTS}"));
        }
        if let Some(cap) = self.daily_cap
            && !(1..=MAX_POINTS).contains(&cap)
        {
            violations.push(
                "daily_cap",
                format!("must be between 1 and {MAX_POINTS} when set"),
            );
        }
        if let Some(days) = self.expiry_days
            && !(1..=MAX_EXPIRY_DAYS).contains(&days)
        {
            violations.push(
                "expiry_days",
                format!("must be between 1 and {MAX_EXPIRY_DAYS} when set"),
            );
        }
        if let Some(per) = &self.per_amount {
            if !(1..=crate::coupon_template::MAX_AMOUNT).contains(&per.amount) {
                violations.push(
                    "per_amount.amount",
                    format!(
                        "must be between 1 and {}",
                        crate::coupon_template::MAX_AMOUNT
                    ),
                );
            }
            if !(1..=MAX_MULTIPLIER_BP).contains(&per.multiplier_bp) {
                violations.push(
                    "per_amount.multiplier_bp",
                    format!("must be between 1 and {MAX_MULTIPLIER_BP}"),
                );
            }
        }
        violations.finish(|| self)
    }
}

/// The fields of a rule an update may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleField {
    Description,
    Points,
    DailyCap,
    ExpiryDays,
    Enabled,
    PerAmount,
}

impl RuleField {
    pub const ALL: [Self; 6] = [
        Self::Description,
        Self::Points,
        Self::DailyCap,
        Self::ExpiryDays,
        Self::Enabled,
        Self::PerAmount,
    ];

    pub fn from_path(path: &str) -> Result<Self, String> {
        Ok(match path {
            "description" => Self::Description,
            "points" => Self::Points,
            "daily_cap" => Self::DailyCap,
            "expiry_days" => Self::ExpiryDays,
            "enabled" => Self::Enabled,
            "per_amount" => Self::PerAmount,
            "event_type" => return Err("event_type cannot be changed: create another rule".into()),
            "id" | "tenant_id" | "version" | "create_time" | "update_time" => {
                return Err(format!("{path} is output only"));
            }
            other => return Err(format!("unknown field {other:?}")),
        })
    }
}

impl RuleTerms {
    /// Takes the named fields from `source`.
    pub fn overwrite(&mut self, source: RuleTerms, fields: &[RuleField]) {
        for field in fields {
            match field {
                RuleField::Description => self.description.clone_from(&source.description),
                RuleField::Points => self.points = source.points,
                RuleField::DailyCap => self.daily_cap = source.daily_cap,
                RuleField::ExpiryDays => self.expiry_days = source.expiry_days,
                RuleField::Enabled => self.enabled = source.enabled,
                RuleField::PerAmount => self.per_amount.clone_from(&source.per_amount),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_award_is_cut_to_what_the_daily_cap_leaves() {
        let capped = RuleTerms {
            points: 50,
            daily_cap: Some(120),
            enabled: true,
            ..RuleTerms::default()
        };
        assert_eq!(capped.award(50, 0).ok(), Some(50));
        assert_eq!(capped.award(50, 100).ok(), Some(20), "what the cap leaves");
        assert!(matches!(
            capped.award(50, 120),
            Err(Refusal::DailyCapReached)
        ));
        assert!(matches!(
            capped.award(50, i64::MAX),
            Err(Refusal::DailyCapReached)
        ));
        let uncapped = RuleTerms {
            daily_cap: None,
            ..capped.clone()
        };
        assert_eq!(uncapped.award(50, 1_000_000).ok(), Some(50));
        let off = RuleTerms {
            enabled: false,
            ..capped
        };
        assert!(matches!(off.award(50, 0), Err(Refusal::RuleDisabled)));
    }

    #[test]
    fn a_rule_by_amount_earns_per_step_with_its_multiplier_and_rounding() {
        let eur = Currency::parse("c", "EUR").unwrap();
        let rule = |rounding| RuleTerms {
            // 1 point per 1.00 EUR, x1.5.
            points: 1,
            enabled: true,
            per_amount: Some(PerAmount {
                currency: eur.clone(),
                amount: 100,
                multiplier_bp: 15_000,
                rounding,
            }),
            ..RuleTerms::default()
        };
        // 12.99 EUR: 12.99 x 1.5 = 19.485 points.
        assert_eq!(rule(Rounding::Down).points_for(Some((1_299, &eur))), Ok(19));
        assert_eq!(
            rule(Rounding::HalfUp).points_for(Some((1_299, &eur))),
            Ok(19)
        );
        assert_eq!(rule(Rounding::Up).points_for(Some((1_299, &eur))), Ok(20));
        assert_eq!(
            rule(Rounding::HalfUp).points_for(Some((1_300, &eur))),
            Ok(20)
        ); // 19.5
        let usd = Currency::parse("c", "USD").unwrap();
        assert_eq!(
            rule(Rounding::Down).points_for(Some((1_000, &usd))),
            Err(Refusal::CurrencyMismatch)
        );
        assert!(rule(Rounding::Down).points_for(None).is_err());
        assert!(
            rule(Rounding::Down).points_for(Some((50, &eur))).is_err(),
            "no points"
        );
        let fixed = RuleTerms {
            points: 7,
            ..RuleTerms::default()
        };
        assert_eq!(fixed.points_for(None), Ok(7));
        assert!(fixed.points_for(Some((100, &eur))).is_err());
    }

    #[test]
    fn rule_terms_are_bounded() {
        let good = RuleTerms {
            points: 10,
            daily_cap: Some(50),
            expiry_days: Some(30),
            enabled: true,
            ..RuleTerms::default()
        };
        assert!(good.clone().check().is_ok());
        let bad = RuleTerms {
            points: 0,
            daily_cap: Some(0),
            expiry_days: Some(0),
            ..good
        };
        let fields: Vec<String> = bad
            .check()
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["points", "daily_cap", "expiry_days"]);
        assert!(parse_event_type("e", "order_paid").is_ok());
        assert!(parse_event_type("e", "Order Paid").is_err());
        assert!(RuleField::from_path("event_type").is_err());
    }
}
