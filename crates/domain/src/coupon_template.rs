//! Coupon templates: their terms, the rules a valid template obeys, partial updates by field,
//! and the discount arithmetic coupons inherit.

use crate::{
    error::{FieldViolation, Violations},
    ids::{TemplateId, TenantId},
    pricing::{Allocation, Benefit, Scope, Stacking, Terms},
    text::{TextKind, check_display_text},
    time::UnixMicros,
};

pub const MAX_NAME_CHARS: usize = 128;
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
pub const MAX_BASIS_POINTS: i32 = 10_000;
pub const MAX_VALID_DAYS: i32 = 3650;
pub const MAX_PER_MEMBER_LIMIT: i32 = 1000;
/// Upper bound of `total_stock`, so stock arithmetic can never overflow.
pub const MAX_TOTAL_STOCK: i64 = 1_000_000_000;
/// Upper bound of any money amount (minor units), so sums can never overflow.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscountType {
    FixedAmount,
    PercentOff,
    FreeShipping,
    BuyGet,
}

impl DiscountType {
    /// The code stored in the database.
    pub fn code(self) -> i16 {
        match self {
            Self::FixedAmount => 1,
            Self::PercentOff => 2,
            Self::FreeShipping => 3,
            Self::BuyGet => 4,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        match code {
            1 => Some(Self::FixedAmount),
            2 => Some(Self::PercentOff),
            3 => Some(Self::FreeShipping),
            4 => Some(Self::BuyGet),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discount {
    /// `amount` minor units off, capped at the order amount.
    FixedAmount { amount: i64 },
    /// `basis_points` / 10000 of the order, rounded down, capped by `max_discount_amount`.
    PercentOff {
        basis_points: i32,
        max_discount_amount: Option<i64>,
    },
    /// The cart's shipping amount, capped by `max_discount_amount`. Needs a cart.
    FreeShipping { max_discount_amount: Option<i64> },
    /// Buy X get Y: for every `buy_quantity` units of the scope's lines, `get_quantity` units
    /// of the get scope's lines ([`CartTerms::get_scope`]) at `basis_points` off (10000:
    /// free), cheapest first, at most `max_applications` times. Needs a cart.
    BuyGet {
        buy_quantity: i32,
        get_quantity: i32,
        basis_points: i32,
        max_applications: Option<i32>,
    },
}

/// Bound of buy X get Y quantities and applications.
pub const MAX_BUY_GET_QUANTITY: i32 = 1000;

impl Discount {
    pub fn discount_type(&self) -> DiscountType {
        match self {
            Self::FixedAmount { .. } => DiscountType::FixedAmount,
            Self::PercentOff { .. } => DiscountType::PercentOff,
            Self::FreeShipping { .. } => DiscountType::FreeShipping,
            Self::BuyGet { .. } => DiscountType::BuyGet,
        }
    }

    /// The discount this gives on an order of `order_amount` minor units (>= 0), for a
    /// coupon that needs no cart ([`CartTerms::needs_cart`]; one that does gives nothing
    /// here). Never more than the order amount.
    pub fn discount_for(&self, order_amount: i64) -> i64 {
        let order_amount = order_amount.max(0);
        match *self {
            Self::FreeShipping { .. } | Self::BuyGet { .. } => 0,
            Self::FixedAmount { amount } => amount.min(order_amount),
            Self::PercentOff {
                basis_points,
                max_discount_amount,
            } => {
                // i128: amount * 10000 cannot overflow; the quotient is <= order_amount.
                let raw = i128::from(order_amount) * i128::from(basis_points)
                    / i128::from(MAX_BASIS_POINTS);
                let raw = i64::try_from(raw).unwrap_or(order_amount).min(order_amount);
                max_discount_amount.map_or(raw, |cap| raw.min(cap))
            }
        }
    }

    fn validate(&self, violations: &mut Violations) {
        match *self {
            Self::FixedAmount { amount } => {
                if !(1..=MAX_AMOUNT).contains(&amount) {
                    violations.push(
                        "fixed_amount.amount",
                        format!("must be between 1 and {MAX_AMOUNT}"),
                    );
                }
            }
            Self::PercentOff {
                basis_points,
                max_discount_amount,
            } => {
                if !(1..=MAX_BASIS_POINTS).contains(&basis_points) {
                    violations.push(
                        "percent_off.basis_points",
                        format!("must be between 1 and {MAX_BASIS_POINTS}"),
                    );
                }
                if let Some(cap) = max_discount_amount
                    && !(1..=MAX_AMOUNT).contains(&cap)
                {
                    violations.push(
                        "percent_off.max_discount_amount",
                        format!("must be between 1 and {MAX_AMOUNT} when set"),
                    );
                }
            }
            Self::FreeShipping {
                max_discount_amount,
            } => {
                if let Some(cap) = max_discount_amount
                    && !(1..=MAX_AMOUNT).contains(&cap)
                {
                    violations.push(
                        "free_shipping.max_discount_amount",
                        format!("must be between 1 and {MAX_AMOUNT} when set"),
                    );
                }
            }
            Self::BuyGet {
                buy_quantity,
                get_quantity,
                basis_points,
                max_applications,
            } => {
                let quantity = 1..=MAX_BUY_GET_QUANTITY;
                for (field, value) in [
                    ("buy_get.buy_quantity", Some(buy_quantity)),
                    ("buy_get.get_quantity", Some(get_quantity)),
                    ("buy_get.max_applications", max_applications),
                ] {
                    if value.is_some_and(|value| !quantity.contains(&value)) {
                        violations.push(
                            field,
                            format!("must be between 1 and {MAX_BUY_GET_QUANTITY}"),
                        );
                    }
                }
                if !(1..=MAX_BASIS_POINTS).contains(&basis_points) {
                    violations.push(
                        "buy_get.basis_points",
                        format!("must be between 1 and {MAX_BASIS_POINTS}"),
                    );
                }
            }
        }
    }
}

/// Most ids the scopes of one template name in all (inclusions, exclusions, buy X get Y's
/// get scope), and the longest id: a coupon carries its terms, so they stay small.
pub const MAX_SCOPE_IDS: usize = 200;
pub const MAX_SCOPE_ID_CHARS: usize = 64;
pub const MAX_GROUP_CHARS: usize = 64;
pub const MAX_GROUP_ORDER: i32 = 1000;

/// Where and how a coupon applies in a cart, beyond its discount: the lines (scope), per unit
/// or across them, the lines buy X get Y gives, and how it stacks with other coupons. The
/// default (every line, across, stackable without a group) is a coupon of a whole order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CartTerms {
    pub scope: Scope,
    pub allocation: Allocation,
    /// Buy X get Y: the lines whose units are given (empty: the scope's).
    pub get_scope: Scope,
    pub stacking: Stacking,
}

impl CartTerms {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Whether a coupon of `discount` with these terms can only be priced with a cart (its
    /// lines, units or shipping), so an order amount alone is refused `CART_REQUIRED`.
    pub fn needs_cart(&self, discount: &Discount) -> bool {
        !self.scope.is_whole_order()
            || self.allocation == Allocation::Each
            || matches!(
                discount,
                Discount::FreeShipping { .. } | Discount::BuyGet { .. }
            )
    }

    fn validate(&self, discount: Option<&Discount>, violations: &mut Violations) {
        let mut count = 0;
        for (prefix, scope) in [
            ("scope", &self.scope),
            ("buy_get.get_scope", &self.get_scope),
        ] {
            for (name, ids) in [
                ("product_ids", &scope.products),
                ("category_ids", &scope.categories),
                ("brand_ids", &scope.brands),
                ("excluded_product_ids", &scope.excluded_products),
                ("excluded_category_ids", &scope.excluded_categories),
                ("excluded_brand_ids", &scope.excluded_brands),
            ] {
                count += ids.len();
                if ids.iter().any(|id| {
                    id.is_empty()
                        || id.chars().count() > MAX_SCOPE_ID_CHARS
                        || id.chars().any(|c| c.is_control() || c.is_whitespace())
                }) {
                    violations.push(
                        format!("{prefix}.{name}"),
                        format!("ids must be 1..={MAX_SCOPE_ID_CHARS} characters without spaces"),
                    );
                }
            }
        }
        if count > MAX_SCOPE_IDS {
            violations.push(
                "scope",
                format!("names {count} ids; at most {MAX_SCOPE_IDS} in all"),
            );
        }
        if !self.get_scope.is_whole_order() && !matches!(discount, Some(Discount::BuyGet { .. })) {
            violations.push("buy_get.get_scope", "is for buy X get Y discounts only");
        }
        if self.allocation == Allocation::Each
            && matches!(
                discount,
                Some(Discount::FreeShipping { .. } | Discount::BuyGet { .. })
            )
        {
            violations.push(
                "allocation",
                "EACH is for fixed amount and percent off only",
            );
        }
        match &self.stacking {
            Stacking::Exclusive => {}
            Stacking::Group { name, order } => {
                if name.chars().count() > MAX_GROUP_CHARS
                    || name.chars().any(|c| c.is_control())
                    || name.trim() != name
                {
                    violations.push(
                        "stacking.group",
                        format!("must be 0..={MAX_GROUP_CHARS} characters, no outer spaces"),
                    );
                }
                if !(-MAX_GROUP_ORDER..=MAX_GROUP_ORDER).contains(order) {
                    violations.push(
                        "stacking.group_order",
                        format!("must be between -{MAX_GROUP_ORDER} and {MAX_GROUP_ORDER}"),
                    );
                }
            }
        }
    }
}

/// What pricing needs of a coupon: its discount, minimum spend and cart terms.
pub fn pricing_terms(discount: &Discount, min_spend_amount: i64, cart: &CartTerms) -> Terms {
    let benefit = match *discount {
        Discount::FixedAmount { amount } => Benefit::AmountOff {
            amount,
            allocation: cart.allocation,
        },
        Discount::PercentOff {
            basis_points,
            max_discount_amount,
        } => Benefit::PercentOff {
            basis_points: i64::from(basis_points),
            max_discount_amount,
            allocation: cart.allocation,
        },
        Discount::FreeShipping {
            max_discount_amount,
        } => Benefit::FreeShipping {
            max_discount_amount,
        },
        Discount::BuyGet {
            buy_quantity,
            get_quantity,
            basis_points,
            max_applications,
        } => Benefit::BuyGet {
            buy_quantity: i64::from(buy_quantity),
            get_quantity: i64::from(get_quantity),
            get_scope: if cart.get_scope.is_whole_order() {
                cart.scope.clone()
            } else {
                cart.get_scope.clone()
            },
            basis_points: i64::from(basis_points),
            max_applications: max_applications.map(i64::from),
        },
    };
    Terms {
        min_spend_amount,
        scope: cart.scope.clone(),
        benefit,
        stacking: cart.stacking.clone(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Every coupon is valid in [valid_from, valid_until).
    FixedWindow {
        valid_from: UnixMicros,
        valid_until: UnixMicros,
    },
    /// A coupon is valid for `valid_days` days from its claim.
    Relative { valid_days: i32 },
}

impl Validity {
    /// The code stored in the database.
    pub fn kind_code(&self) -> i16 {
        match self {
            Self::FixedWindow { .. } => 1,
            Self::Relative { .. } => 2,
        }
    }

    /// The validity window of a coupon claimed at `claimed_at`; `None` if it overflows.
    pub fn window_for_claim(&self, claimed_at: UnixMicros) -> Option<(UnixMicros, UnixMicros)> {
        match *self {
            Self::FixedWindow {
                valid_from,
                valid_until,
            } => Some((valid_from, valid_until)),
            Self::Relative { valid_days } => claimed_at
                .checked_add_days(i64::from(valid_days))
                .map(|until| (claimed_at, until)),
        }
    }
}

/// An ISO-4217 currency code: three upper-case letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(String);

impl Currency {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(value.to_owned()))
        } else {
            Err(FieldViolation::new(
                field,
                "must be an ISO-4217 code of three upper-case letters, e.g. EUR",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The terms of a template as a client sent them, not yet checked. Field names in violations
/// are relative to the template message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateDraft {
    pub name: String,
    pub description: String,
    pub discount: Option<Discount>,
    pub currency: String,
    pub min_spend_amount: i64,
    pub per_member_limit: i32,
    pub distribution_start: Option<UnixMicros>,
    pub distribution_end: Option<UnixMicros>,
    pub validity: Option<Validity>,
    pub enabled: bool,
    pub cart: CartTerms,
    pub budget_amount: Option<i64>,
}

/// The checked, editable terms of a template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateTerms {
    pub name: String,
    pub description: String,
    pub discount: Discount,
    pub currency: Currency,
    pub min_spend_amount: i64,
    pub per_member_limit: i32,
    pub distribution_start: UnixMicros,
    pub distribution_end: UnixMicros,
    pub validity: Validity,
    pub enabled: bool,
    /// Scope, allocation, buy X get Y's get scope, stacking.
    pub cart: CartTerms,
    /// The most discount its coupons may give in all (minor units); `None`: no budget.
    pub budget_amount: Option<i64>,
}

impl TemplateTerms {
    /// Checks every rule and reports every violation at once.
    pub fn parse(draft: TemplateDraft) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Violations::new();
        let name = draft.name.trim().to_owned();
        if name.is_empty() {
            violations.push("name", "must not be empty");
        } else {
            violations.check(check_display_text(
                "name",
                &name,
                TextKind::Line,
                MAX_NAME_CHARS,
            ));
        }
        violations.check(check_display_text(
            "description",
            &draft.description,
            TextKind::Lines,
            MAX_DESCRIPTION_CHARS,
        ));
        match &draft.discount {
            None => violations.push("discount", "is required: set fixed_amount or percent_off"),
            Some(discount) => discount.validate(&mut violations),
        }
        draft
            .cart
            .validate(draft.discount.as_ref(), &mut violations);
        if draft
            .budget_amount
            .is_some_and(|budget| !(1..=MAX_AMOUNT).contains(&budget))
        {
            violations.push(
                "budget_amount",
                format!("must be between 1 and {MAX_AMOUNT} when set"),
            );
        }
        let currency = violations.check(Currency::parse("currency", &draft.currency));
        if !(0..=MAX_AMOUNT).contains(&draft.min_spend_amount) {
            violations.push(
                "min_spend_amount",
                format!("must be between 0 and {MAX_AMOUNT}"),
            );
        }
        if !(1..=MAX_PER_MEMBER_LIMIT).contains(&draft.per_member_limit) {
            violations.push(
                "per_member_limit",
                format!("must be between 1 and {MAX_PER_MEMBER_LIMIT}"),
            );
        }
        if draft.distribution_start.is_none() {
            violations.push("distribution_start_time", "is required");
        }
        if draft.distribution_end.is_none() {
            violations.push("distribution_end_time", "is required");
        }
        if let (Some(start), Some(end)) = (draft.distribution_start, draft.distribution_end)
            && start >= end
        {
            violations.push(
                "distribution_end_time",
                "must be after distribution_start_time",
            );
        }
        match draft.validity {
            None => violations.push("validity", "is required: set fixed_window or relative"),
            Some(Validity::FixedWindow {
                valid_from,
                valid_until,
            }) => {
                if valid_from >= valid_until {
                    violations.push("fixed_window.valid_until", "must be after valid_from");
                }
                if draft
                    .distribution_start
                    .is_some_and(|start| valid_until <= start)
                {
                    violations.push(
                        "fixed_window.valid_until",
                        "must be after distribution_start_time, or no claimed coupon is usable",
                    );
                }
            }
            Some(Validity::Relative { valid_days }) => {
                if !(1..=MAX_VALID_DAYS).contains(&valid_days) {
                    violations.push(
                        "relative.valid_days",
                        format!("must be between 1 and {MAX_VALID_DAYS}"),
                    );
                }
            }
        }
        let (Some(discount), Some(currency), Some(start), Some(end), Some(validity)) = (
            draft.discount,
            currency,
            draft.distribution_start,
            draft.distribution_end,
            draft.validity,
        ) else {
            return Err(violations.into_vec());
        };
        violations.finish(|| Self {
            name,
            description: draft.description,
            discount,
            currency,
            min_spend_amount: draft.min_spend_amount,
            per_member_limit: draft.per_member_limit,
            distribution_start: start,
            distribution_end: end,
            validity,
            enabled: draft.enabled,
            cart: draft.cart,
            budget_amount: draft.budget_amount,
        })
    }

    pub fn to_draft(&self) -> TemplateDraft {
        TemplateDraft {
            name: self.name.clone(),
            description: self.description.clone(),
            discount: Some(self.discount),
            currency: self.currency.as_str().to_owned(),
            min_spend_amount: self.min_spend_amount,
            per_member_limit: self.per_member_limit,
            distribution_start: Some(self.distribution_start),
            distribution_end: Some(self.distribution_end),
            validity: Some(self.validity),
            enabled: self.enabled,
            cart: self.cart.clone(),
            budget_amount: self.budget_amount,
        }
    }
}

/// Checks the initial stock of a new template.
pub fn check_initial_stock(field: &str, total_stock: i64) -> Result<i64, FieldViolation> {
    if (1..=MAX_TOTAL_STOCK).contains(&total_stock) {
        Ok(total_stock)
    } else {
        Err(FieldViolation::new(
            field,
            format!("must be between 1 and {MAX_TOTAL_STOCK}"),
        ))
    }
}

/// Checks a stock change: non-zero and bounded (the database checks it against the counters).
pub fn check_stock_change(field: &str, amount: i64) -> Result<i64, FieldViolation> {
    if amount != 0 && amount.unsigned_abs() <= MAX_TOTAL_STOCK as u64 {
        Ok(amount)
    } else {
        Err(FieldViolation::new(
            field,
            format!("must be non-zero and between -{MAX_TOTAL_STOCK} and {MAX_TOTAL_STOCK}"),
        ))
    }
}

/// The fields of a template an update may name (AIP-134 field mask paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateField {
    Name,
    Description,
    Discount,
    Currency,
    MinSpendAmount,
    PerMemberLimit,
    DistributionStart,
    DistributionEnd,
    Validity,
    Enabled,
    Scope,
    Stacking,
    BudgetAmount,
}

impl TemplateField {
    pub const ALL: [Self; 13] = [
        Self::Name,
        Self::Description,
        Self::Discount,
        Self::Currency,
        Self::MinSpendAmount,
        Self::PerMemberLimit,
        Self::DistributionStart,
        Self::DistributionEnd,
        Self::Validity,
        Self::Enabled,
        Self::Scope,
        Self::Stacking,
        Self::BudgetAmount,
    ];

    /// Parses one field-mask path; `Err` explains why a known field cannot be updated.
    pub fn from_path(path: &str) -> Result<Self, String> {
        Ok(match path {
            "name" => Self::Name,
            "description" => Self::Description,
            "discount" | "fixed_amount" | "percent_off" | "free_shipping" | "buy_get" => {
                Self::Discount
            }
            "currency" => Self::Currency,
            "min_spend_amount" => Self::MinSpendAmount,
            "per_member_limit" => Self::PerMemberLimit,
            "distribution_start_time" => Self::DistributionStart,
            "distribution_end_time" => Self::DistributionEnd,
            "validity" | "fixed_window" | "relative" => Self::Validity,
            "enabled" => Self::Enabled,
            "scope" => Self::Scope,
            "stacking" => Self::Stacking,
            "budget_amount" => Self::BudgetAmount,
            "total_stock" | "remaining_stock" => {
                return Err(format!("{path} cannot be updated: use AddCouponStock"));
            }
            "id"
            | "tenant_id"
            | "claimed_count"
            | "used_count"
            | "version"
            | "create_time"
            | "update_time"
            | "discount_type"
            | "archived"
            | "archive_time"
            | "actor"
            | "unique_code_count"
            | "available_unique_code_count"
            | "shared_code_count"
            | "budget_remaining_amount"
            | "budget_used_amount" => {
                return Err(format!("{path} is output only"));
            }
            other => return Err(format!("unknown field {other:?}")),
        })
    }
}

impl TemplateDraft {
    /// Takes the named fields from `source`, keeping the rest.
    pub fn overwrite(&mut self, source: TemplateDraft, fields: &[TemplateField]) {
        for field in fields {
            match field {
                TemplateField::Name => self.name.clone_from(&source.name),
                TemplateField::Description => self.description.clone_from(&source.description),
                TemplateField::Discount => {
                    // Allocation and the get scope travel in the discount's message.
                    self.discount = source.discount;
                    self.cart.allocation = source.cart.allocation;
                    self.cart.get_scope.clone_from(&source.cart.get_scope);
                }
                TemplateField::Scope => self.cart.scope.clone_from(&source.cart.scope),
                TemplateField::Stacking => self.cart.stacking.clone_from(&source.cart.stacking),
                TemplateField::BudgetAmount => self.budget_amount = source.budget_amount,
                TemplateField::Currency => self.currency.clone_from(&source.currency),
                TemplateField::MinSpendAmount => self.min_spend_amount = source.min_spend_amount,
                TemplateField::PerMemberLimit => self.per_member_limit = source.per_member_limit,
                TemplateField::DistributionStart => {
                    self.distribution_start = source.distribution_start;
                }
                TemplateField::DistributionEnd => self.distribution_end = source.distribution_end,
                TemplateField::Validity => self.validity = source.validity,
                TemplateField::Enabled => self.enabled = source.enabled,
            }
        }
    }
}

/// A stored template.
#[derive(Debug, Clone, PartialEq)]
pub struct CouponTemplate {
    pub id: TemplateId,
    pub tenant_id: TenantId,
    pub terms: TemplateTerms,
    pub total_stock: i64,
    pub remaining_stock: i64,
    pub claimed_count: i64,
    pub used_count: i64,
    /// The etag of updates: raised by every change an operator makes.
    pub version: i64,
    /// Raised by every write, claims and uses included: which of two copies is newer.
    pub revision: i64,
    pub created_at: UnixMicros,
    pub updated_at: UnixMicros,
    pub archived_at: Option<UnixMicros>,
    /// The API client that made the latest change (`None` when calls are open).
    pub actor: Option<String>,
    /// Its redemption codes.
    pub codes: crate::coupon_code::CodeInventory,
    /// The discount its used coupons gave in all, counted against `terms.budget_amount`.
    pub budget_used: i64,
}

impl CouponTemplate {
    /// What its campaign budget has left (`None`: no budget).
    pub fn budget_remaining(&self) -> Option<i64> {
        self.terms
            .budget_amount
            .map(|budget| budget.saturating_sub(self.budget_used).max(0))
    }

    /// Whether a claim at `at` is accepted, stock and per-member limits aside.
    pub fn is_open_at(&self, at: UnixMicros) -> bool {
        self.terms.enabled
            && self.archived_at.is_none()
            && self.terms.distribution_start <= at
            && at < self.terms.distribution_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = crate::time::MICROS_PER_DAY;

    fn draft() -> TemplateDraft {
        TemplateDraft {
            name: "Spring 10%".into(),
            description: String::new(),
            discount: Some(Discount::PercentOff {
                basis_points: 1000,
                max_discount_amount: Some(500),
            }),
            currency: "EUR".into(),
            min_spend_amount: 2000,
            per_member_limit: 2,
            distribution_start: Some(UnixMicros(0)),
            distribution_end: Some(UnixMicros(10 * DAY)),
            validity: Some(Validity::Relative { valid_days: 30 }),
            enabled: true,
            cart: CartTerms::default(),
            budget_amount: None,
        }
    }

    fn fields(result: Result<TemplateTerms, Vec<FieldViolation>>) -> Vec<String> {
        result
            .expect_err("draft should be rejected")
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn a_complete_draft_parses() {
        let terms = TemplateTerms::parse(draft()).expect("valid draft");
        assert_eq!(terms.name, "Spring 10%");
        assert_eq!(terms.to_draft(), draft());
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let bad = TemplateDraft {
            name: "  ".into(),
            discount: None,
            currency: "eur".into(),
            min_spend_amount: -1,
            per_member_limit: 0,
            distribution_start: Some(UnixMicros(5)),
            distribution_end: Some(UnixMicros(5)),
            validity: None,
            ..draft()
        };
        assert_eq!(
            fields(TemplateTerms::parse(bad)),
            [
                "name",
                "discount",
                "currency",
                "min_spend_amount",
                "per_member_limit",
                "distribution_end_time",
                "validity"
            ]
        );
    }

    #[test]
    fn discount_bounds() {
        for (discount, field) in [
            (Discount::FixedAmount { amount: 0 }, "fixed_amount.amount"),
            (
                Discount::PercentOff {
                    basis_points: 10_001,
                    max_discount_amount: None,
                },
                "percent_off.basis_points",
            ),
            (
                Discount::PercentOff {
                    basis_points: 0,
                    max_discount_amount: None,
                },
                "percent_off.basis_points",
            ),
            (
                Discount::PercentOff {
                    basis_points: 500,
                    max_discount_amount: Some(0),
                },
                "percent_off.max_discount_amount",
            ),
        ] {
            let bad = TemplateDraft {
                discount: Some(discount),
                ..draft()
            };
            assert_eq!(fields(TemplateTerms::parse(bad)), [field]);
        }
    }

    #[test]
    fn fixed_window_must_be_ordered_and_reachable() {
        let backwards = TemplateDraft {
            validity: Some(Validity::FixedWindow {
                valid_from: UnixMicros(2 * DAY),
                valid_until: UnixMicros(DAY),
            }),
            ..draft()
        };
        assert_eq!(
            fields(TemplateTerms::parse(backwards)),
            ["fixed_window.valid_until"]
        );
        let ends_before_distribution = TemplateDraft {
            distribution_start: Some(UnixMicros(5 * DAY)),
            validity: Some(Validity::FixedWindow {
                valid_from: UnixMicros(0),
                valid_until: UnixMicros(DAY),
            }),
            ..draft()
        };
        assert_eq!(
            fields(TemplateTerms::parse(ends_before_distribution)),
            ["fixed_window.valid_until"]
        );
        let zero_days = TemplateDraft {
            validity: Some(Validity::Relative { valid_days: 0 }),
            ..draft()
        };
        assert_eq!(
            fields(TemplateTerms::parse(zero_days)),
            ["relative.valid_days"]
        );
    }

    #[test]
    fn lengths_are_bounded_in_characters() {
        let long = TemplateDraft {
            name: "é".repeat(MAX_NAME_CHARS),
            description: "d".repeat(MAX_DESCRIPTION_CHARS),
            ..draft()
        };
        assert!(TemplateTerms::parse(long).is_ok());
        let too_long = TemplateDraft {
            name: "é".repeat(MAX_NAME_CHARS + 1),
            description: "d".repeat(MAX_DESCRIPTION_CHARS + 1),
            ..draft()
        };
        assert_eq!(
            fields(TemplateTerms::parse(too_long)),
            ["name", "description"]
        );
    }

    #[test]
    fn discount_arithmetic() {
        let fixed = Discount::FixedAmount { amount: 500 };
        assert_eq!(fixed.discount_for(2000), 500);
        assert_eq!(fixed.discount_for(300), 300);
        let percent = Discount::PercentOff {
            basis_points: 1250,
            max_discount_amount: None,
        };
        assert_eq!(percent.discount_for(999), 124); // 124.875 rounds down
        let capped = Discount::PercentOff {
            basis_points: 5000,
            max_discount_amount: Some(100),
        };
        assert_eq!(capped.discount_for(1000), 100);
        let whole = Discount::PercentOff {
            basis_points: MAX_BASIS_POINTS,
            max_discount_amount: None,
        };
        assert_eq!(whole.discount_for(i64::MAX), i64::MAX);
    }

    #[test]
    fn update_paths() {
        assert_eq!(
            TemplateField::from_path("percent_off"),
            Ok(TemplateField::Discount)
        );
        assert_eq!(
            TemplateField::from_path("relative"),
            Ok(TemplateField::Validity)
        );
        assert!(
            TemplateField::from_path("total_stock")
                .unwrap_err()
                .contains("AddCouponStock")
        );
        assert!(TemplateField::from_path("version").is_err());
        assert!(TemplateField::from_path("nope").is_err());

        let mut current = draft();
        let incoming = TemplateDraft {
            name: "New".into(),
            per_member_limit: 9,
            ..TemplateDraft::default()
        };
        current.overwrite(incoming, &[TemplateField::Name]);
        assert_eq!(current.name, "New");
        assert_eq!(current.per_member_limit, 2);
    }

    #[test]
    fn stock_bounds() {
        assert!(check_initial_stock("total_stock", 0).is_err());
        assert!(check_initial_stock("total_stock", MAX_TOTAL_STOCK + 1).is_err());
        assert_eq!(check_stock_change("amount", -5), Ok(-5));
        assert!(check_stock_change("amount", 0).is_err());
        assert!(check_stock_change("amount", i64::MIN).is_err());
    }

    #[test]
    fn relative_validity_starts_at_claim() {
        let relative = Validity::Relative { valid_days: 2 };
        assert_eq!(
            relative.window_for_claim(UnixMicros(7)),
            Some((UnixMicros(7), UnixMicros(7 + 2 * DAY)))
        );
        assert_eq!(relative.window_for_claim(UnixMicros(i64::MAX)), None);
    }
}
