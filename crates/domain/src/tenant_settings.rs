//! A tenant's settings: its points program (what points pay at checkout, at most what share
//! of an order, from how many points on) and how many coupons one order may carry. A tenant
//! that never set any has the defaults.

use std::collections::BTreeMap;

use crate::{FieldViolation, TenantId, UnixMicros, coupon_template::Currency, pricing::WHOLE_BP};

/// Currencies one tenant's points program names at most.
pub const MAX_POINTS_VALUES: usize = 20;
/// The largest `points` or `amount` of a points value.
pub const MAX_POINTS_VALUE_TERM: i64 = 1_000_000_000;
/// The largest per-order coupon cap (0: no cap).
pub const MAX_COUPONS_PER_ORDER: i32 = 10;
/// The largest smallest redemption.
pub const MAX_MIN_REDEMPTION: i64 = 1 << 50;

/// What points pay in one currency: `points` points pay `amount` minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointsValue {
    pub points: i64,
    pub amount: i64,
}

/// The settings' terms, as a caller sets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsTerms {
    pub points_values: BTreeMap<Currency, PointsValue>,
    pub max_points_share_bp: i32,
    pub min_points_redemption: i64,
    /// `None`: no cap.
    pub max_coupons_per_order: Option<i32>,
}

impl Default for SettingsTerms {
    fn default() -> Self {
        Self {
            points_values: BTreeMap::new(),
            max_points_share_bp: WHOLE_BP as i32,
            min_points_redemption: 0,
            max_coupons_per_order: None,
        }
    }
}

/// A tenant's settings as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSettings {
    pub tenant_id: TenantId,
    pub terms: SettingsTerms,
    /// The etag: 0 while never updated.
    pub version: i64,
    pub updated_at: Option<UnixMicros>,
    pub actor: Option<String>,
}

impl TenantSettings {
    /// The settings of a tenant that never set any.
    pub fn defaults(tenant_id: TenantId) -> Self {
        Self {
            tenant_id,
            terms: SettingsTerms::default(),
            version: 0,
            updated_at: None,
            actor: None,
        }
    }
}

/// The fields an update may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsField {
    PointsValues,
    MaxPointsShare,
    MinPointsRedemption,
    MaxCouponsPerOrder,
}

impl SettingsField {
    pub const ALL: [SettingsField; 4] = [
        Self::PointsValues,
        Self::MaxPointsShare,
        Self::MinPointsRedemption,
        Self::MaxCouponsPerOrder,
    ];

    pub fn from_path(path: &str) -> Result<Self, String> {
        match path {
            "points_values" => Ok(Self::PointsValues),
            "max_points_share_bp" => Ok(Self::MaxPointsShare),
            "min_points_redemption" => Ok(Self::MinPointsRedemption),
            "max_coupons_per_order" => Ok(Self::MaxCouponsPerOrder),
            other => Err(format!("{other:?} is not an updatable field")),
        }
    }
}

/// What a request sent, unchecked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsDraft {
    /// (currency, points, amount) in the order sent.
    pub points_values: Vec<(String, i64, i64)>,
    pub max_points_share_bp: i32,
    pub min_points_redemption: i64,
    pub max_coupons_per_order: i32,
}

impl SettingsTerms {
    /// `current` with the `fields` of `draft`, checked: every violation, named by its field.
    pub fn updated(
        &self,
        draft: SettingsDraft,
        fields: &[SettingsField],
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut next = self.clone();
        let mut violations = Vec::new();
        for field in fields {
            match field {
                SettingsField::PointsValues => match points_values(&draft.points_values) {
                    Ok(values) => next.points_values = values,
                    Err(found) => violations.extend(found),
                },
                SettingsField::MaxPointsShare => {
                    if (0..=WHOLE_BP as i32).contains(&draft.max_points_share_bp) {
                        next.max_points_share_bp = draft.max_points_share_bp;
                    } else {
                        violations.push(FieldViolation::new(
                            "max_points_share_bp",
                            format!("must be between 0 and {WHOLE_BP}"),
                        ));
                    }
                }
                SettingsField::MinPointsRedemption => {
                    if (0..=MAX_MIN_REDEMPTION).contains(&draft.min_points_redemption) {
                        next.min_points_redemption = draft.min_points_redemption;
                    } else {
                        violations.push(FieldViolation::new(
                            "min_points_redemption",
                            format!("must be between 0 and {MAX_MIN_REDEMPTION}"),
                        ));
                    }
                }
                SettingsField::MaxCouponsPerOrder => match draft.max_coupons_per_order {
                    0 => next.max_coupons_per_order = None,
                    n @ 1..=MAX_COUPONS_PER_ORDER => next.max_coupons_per_order = Some(n),
                    _ => violations.push(FieldViolation::new(
                        "max_coupons_per_order",
                        format!("must be 0 (no cap) or between 1 and {MAX_COUPONS_PER_ORDER}"),
                    )),
                },
            }
        }
        if violations.is_empty() {
            Ok(next)
        } else {
            Err(violations
                .into_iter()
                .map(|v| v.under("tenant_settings"))
                .collect())
        }
    }
}

fn points_values(
    sent: &[(String, i64, i64)],
) -> Result<BTreeMap<Currency, PointsValue>, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if sent.len() > MAX_POINTS_VALUES {
        return Err(vec![FieldViolation::new(
            "points_values",
            format!("must have at most {MAX_POINTS_VALUES} entries"),
        )]);
    }
    let mut values = BTreeMap::new();
    for (index, (currency, points, amount)) in sent.iter().enumerate() {
        let field = |name: &str| format!("points_values[{index}].{name}");
        let currency = Currency::parse(&field("currency"), currency)
            .map_err(|v| violations.push(v))
            .ok();
        for (name, value) in [("points", points), ("amount", amount)] {
            if !(1..=MAX_POINTS_VALUE_TERM).contains(value) {
                violations.push(FieldViolation::new(
                    field(name),
                    format!("must be between 1 and {MAX_POINTS_VALUE_TERM}"),
                ));
            }
        }
        if let Some(currency) = currency {
            let value = PointsValue {
                points: *points,
                amount: *amount,
            };
            if values.insert(currency, value).is_some() {
                violations.push(FieldViolation::new(
                    field("currency"),
                    "names a currency named before",
                ));
            }
        }
    }
    if violations.is_empty() {
        Ok(values)
    } else {
        Err(violations)
    }
}

/// The stored form of points values: `EUR=100:100;USD=1:1`.
pub fn points_values_text(values: &BTreeMap<Currency, PointsValue>) -> String {
    values
        .iter()
        .map(|(currency, v)| format!("{}={}:{}", currency.as_str(), v.points, v.amount))
        .collect::<Vec<_>>()
        .join(";")
}

/// [`points_values_text`] read back; `None` when it is not such a text.
pub fn parse_points_values(text: &str) -> Option<BTreeMap<Currency, PointsValue>> {
    let mut values = BTreeMap::new();
    for item in text.split(';').filter(|item| !item.is_empty()) {
        let (currency, value) = item.split_once('=')?;
        let (points, amount) = value.split_once(':')?;
        let currency = Currency::parse("currency", currency).ok()?;
        let value = PointsValue {
            points: points.parse().ok()?,
            amount: amount.parse().ok()?,
        };
        values.insert(currency, value);
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::parse("c", "EUR").unwrap()
    }

    #[test]
    fn an_update_changes_only_the_fields_named_and_checks_them() {
        let current = SettingsTerms::default();
        let draft = SettingsDraft {
            points_values: vec![("EUR".into(), 100, 100)],
            max_points_share_bp: 5_000,
            min_points_redemption: 50,
            max_coupons_per_order: 3,
        };
        let next = current
            .updated(
                draft.clone(),
                &[
                    SettingsField::PointsValues,
                    SettingsField::MaxCouponsPerOrder,
                ],
            )
            .unwrap();
        assert_eq!(
            next.points_values[&eur()],
            PointsValue {
                points: 100,
                amount: 100
            }
        );
        assert_eq!(next.max_coupons_per_order, Some(3));
        assert_eq!(next.max_points_share_bp, 10_000, "not named: kept");
        let bad = SettingsDraft {
            points_values: vec![
                ("EUR".into(), 0, 100),
                ("eur".into(), 1, 1),
                ("EUR".into(), 1, 1),
            ],
            max_points_share_bp: 10_001,
            min_points_redemption: -1,
            max_coupons_per_order: 11,
        };
        let violations = current.updated(bad, &SettingsField::ALL).unwrap_err();
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tenant_settings.points_values[0].points",
                "tenant_settings.points_values[1].currency",
                "tenant_settings.points_values[2].currency",
                "tenant_settings.max_points_share_bp",
                "tenant_settings.min_points_redemption",
                "tenant_settings.max_coupons_per_order",
            ]
        );
    }

    #[test]
    fn points_values_are_stored_as_text_and_read_back() {
        let mut values = BTreeMap::new();
        values.insert(
            eur(),
            PointsValue {
                points: 100,
                amount: 1,
            },
        );
        values.insert(
            Currency::parse("c", "USD").unwrap(),
            PointsValue {
                points: 3,
                amount: 7,
            },
        );
        let text = points_values_text(&values);
        assert_eq!(text, "EUR=100:1;USD=3:7");
        assert_eq!(parse_points_values(&text), Some(values));
        assert_eq!(parse_points_values(""), Some(BTreeMap::new()));
        assert_eq!(parse_points_values("EUR=1"), None);
    }
}
