//! Points rules: how many points an event earns, with an optional daily cap and expiry.

use uuid::Uuid;

use crate::{
    TenantId, UnixMicros,
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

/// The editable part of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleTerms {
    pub description: String,
    pub points: i64,
    pub daily_cap: Option<i64>,
    pub expiry_days: Option<i32>,
    pub enabled: bool,
}

impl RuleTerms {
    /// The points an event earns when the member already earned `earned_today` under this
    /// rule today: the rule's points, cut to what the daily cap leaves. Refused when the rule
    /// is off, or its cap is reached.
    pub fn award(&self, earned_today: i64) -> Result<i64, Refusal> {
        if !self.enabled {
            return Err(Refusal::RuleDisabled);
        }
        let Some(cap) = self.daily_cap else {
            return Ok(self.points);
        };
        let award = self.points.min(cap.saturating_sub(earned_today));
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
}

impl RuleField {
    pub const ALL: [Self; 5] = [
        Self::Description,
        Self::Points,
        Self::DailyCap,
        Self::ExpiryDays,
        Self::Enabled,
    ];

    pub fn from_path(path: &str) -> Result<Self, String> {
        Ok(match path {
            "description" => Self::Description,
            "points" => Self::Points,
            "daily_cap" => Self::DailyCap,
            "expiry_days" => Self::ExpiryDays,
            "enabled" => Self::Enabled,
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
        assert_eq!(capped.award(0).ok(), Some(50));
        assert_eq!(capped.award(100).ok(), Some(20), "what the cap leaves");
        assert!(matches!(capped.award(120), Err(Refusal::DailyCapReached)));
        assert!(matches!(
            capped.award(i64::MAX),
            Err(Refusal::DailyCapReached)
        ));
        let uncapped = RuleTerms {
            daily_cap: None,
            ..capped.clone()
        };
        assert_eq!(uncapped.award(1_000_000).ok(), Some(50));
        let off = RuleTerms {
            enabled: false,
            ..capped
        };
        assert!(matches!(off.award(0), Err(Refusal::RuleDisabled)));
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
