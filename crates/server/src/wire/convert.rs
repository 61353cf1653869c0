//! Conversions between protobuf messages and domain types, and opaque page tokens.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use marketing_domain::{
    FieldViolation, MemberId, TenantId, UnixMicros,
    coupon_code::CodeKind,
    coupon_template::{
        CartTerms, CouponTemplate, Discount, DiscountType, MAX_SCOPE_IDS, TemplateDraft, Validity,
    },
    error::Violations,
    points::{Account, Entry, Hold, HoldStatus, TxType},
    points_rule::{PointsRule, Rounding},
    pricing::{Allocation, Scope, Stacking},
    tenant_settings::TenantSettings,
    user_coupon::{CouponStatus, UserCoupon},
};
use marketing_proto::v1 as pb;
use prost_types::Timestamp;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub fn timestamp(at: UnixMicros) -> Timestamp {
    let (seconds, nanos) = at.to_parts();
    Timestamp { seconds, nanos }
}

/// An optional timestamp field; out-of-range values are a violation of `field`.
pub fn micros(
    field: &str,
    value: Option<&Timestamp>,
) -> Result<Option<UnixMicros>, FieldViolation> {
    value
        .map(|ts| {
            UnixMicros::from_parts(ts.seconds, ts.nanos)
                .ok_or_else(|| FieldViolation::new(field, "is not a valid timestamp"))
        })
        .transpose()
}

pub fn discount_type_to_proto(discount_type: DiscountType) -> pb::DiscountType {
    match discount_type {
        DiscountType::FixedAmount => pb::DiscountType::FixedAmount,
        DiscountType::PercentOff => pb::DiscountType::PercentOff,
        DiscountType::FreeShipping => pb::DiscountType::FreeShipping,
        DiscountType::BuyGet => pb::DiscountType::BuyGet,
    }
}

/// A discount's message, for either oneof that carries one (template, coupon).
enum DiscountMessage {
    Fixed(pb::FixedAmountDiscount),
    Percent(pb::PercentOffDiscount),
    FreeShipping(pb::FreeShippingDiscount),
    BuyGet(pb::BuyGetDiscount),
}

fn allocation_to_proto(allocation: Allocation) -> i32 {
    match allocation {
        Allocation::Across => pb::DiscountAllocation::Unspecified,
        Allocation::Each => pb::DiscountAllocation::Each,
    }
    .into()
}

fn discount_message(discount: &Discount, cart: &CartTerms) -> DiscountMessage {
    match *discount {
        Discount::FixedAmount { amount } => DiscountMessage::Fixed(pb::FixedAmountDiscount {
            amount,
            allocation: allocation_to_proto(cart.allocation),
        }),
        Discount::PercentOff {
            basis_points,
            max_discount_amount,
        } => DiscountMessage::Percent(pb::PercentOffDiscount {
            basis_points,
            max_discount_amount,
            allocation: allocation_to_proto(cart.allocation),
        }),
        Discount::FreeShipping {
            max_discount_amount,
        } => DiscountMessage::FreeShipping(pb::FreeShippingDiscount {
            max_discount_amount,
        }),
        Discount::BuyGet {
            buy_quantity,
            get_quantity,
            basis_points,
            max_applications,
        } => DiscountMessage::BuyGet(pb::BuyGetDiscount {
            buy_quantity,
            get_quantity,
            get_scope: scope_to_proto(&cart.get_scope),
            basis_points,
            max_applications,
        }),
    }
}

/// `None` for the whole order.
pub fn scope_to_proto(scope: &Scope) -> Option<pb::ProductScope> {
    let list = |ids: &std::collections::BTreeSet<String>| ids.iter().cloned().collect();
    (!scope.is_whole_order()).then(|| pb::ProductScope {
        product_ids: list(&scope.products),
        category_ids: list(&scope.categories),
        brand_ids: list(&scope.brands),
        excluded_product_ids: list(&scope.excluded_products),
        excluded_category_ids: list(&scope.excluded_categories),
        excluded_brand_ids: list(&scope.excluded_brands),
    })
}

/// A scope as sent; a list past [`MAX_SCOPE_IDS`] is one violation of `{prefix}.{list}` and
/// is not copied.
fn scope_from_proto(
    prefix: &str,
    scope: Option<&pb::ProductScope>,
    violations: &mut Violations,
) -> Scope {
    let Some(scope) = scope else {
        return Scope::default();
    };
    let mut set = |name: &str, ids: &[String]| {
        if ids.len() > MAX_SCOPE_IDS {
            violations.push(
                format!("{prefix}.{name}"),
                format!("must hold at most {MAX_SCOPE_IDS} entries"),
            );
            return Default::default();
        }
        ids.iter().cloned().collect()
    };
    Scope {
        products: set("product_ids", &scope.product_ids),
        categories: set("category_ids", &scope.category_ids),
        brands: set("brand_ids", &scope.brand_ids),
        excluded_products: set("excluded_product_ids", &scope.excluded_product_ids),
        excluded_categories: set("excluded_category_ids", &scope.excluded_category_ids),
        excluded_brands: set("excluded_brand_ids", &scope.excluded_brand_ids),
    }
}

/// `None` for the default (stackable, no group).
pub fn stacking_to_proto(stacking: &Stacking) -> Option<pb::Stacking> {
    (*stacking != Stacking::default()).then(|| match stacking {
        Stacking::Exclusive => pb::Stacking {
            policy: pb::StackingPolicy::Exclusive.into(),
            group: String::new(),
            group_order: 0,
        },
        Stacking::Group { name, order } => pb::Stacking {
            policy: pb::StackingPolicy::Stackable.into(),
            group: name.clone(),
            group_order: *order,
        },
    })
}

fn stacking_from_proto(stacking: Option<&pb::Stacking>, violations: &mut Violations) -> Stacking {
    let Some(stacking) = stacking else {
        return Stacking::default();
    };
    match pb::StackingPolicy::try_from(stacking.policy) {
        Ok(pb::StackingPolicy::Exclusive) => {
            if !stacking.group.is_empty() {
                violations.push("stacking.group", "must be empty for an EXCLUSIVE coupon");
            }
            Stacking::Exclusive
        }
        Ok(pb::StackingPolicy::Stackable | pb::StackingPolicy::Unspecified) => Stacking::Group {
            name: stacking.group.clone(),
            order: stacking.group_order,
        },
        Err(_) => {
            violations.push(
                "stacking.policy",
                format!("unknown policy {}", stacking.policy),
            );
            Stacking::default()
        }
    }
}

fn allocation_from_proto(field: &str, value: i32, violations: &mut Violations) -> Allocation {
    match pb::DiscountAllocation::try_from(value) {
        Ok(pb::DiscountAllocation::Each) => Allocation::Each,
        Ok(_) => Allocation::Across,
        Err(_) => {
            violations.push(field, format!("unknown allocation {value}"));
            Allocation::Across
        }
    }
}

/// `UNSPECIFIED` means no filter.
pub fn discount_type_filter(
    field: &str,
    value: i32,
) -> Result<Option<DiscountType>, FieldViolation> {
    match pb::DiscountType::try_from(value) {
        Ok(pb::DiscountType::Unspecified) => Ok(None),
        Ok(pb::DiscountType::FixedAmount) => Ok(Some(DiscountType::FixedAmount)),
        Ok(pb::DiscountType::PercentOff) => Ok(Some(DiscountType::PercentOff)),
        Ok(pb::DiscountType::FreeShipping) => Ok(Some(DiscountType::FreeShipping)),
        Ok(pb::DiscountType::BuyGet) => Ok(Some(DiscountType::BuyGet)),
        Err(_) => Err(FieldViolation::new(
            field,
            format!("unknown discount type {value}"),
        )),
    }
}

/// `next`: the next points to expire, as `Ledger::next_expiry` gives them.
pub fn account_to_proto(account: &Account, next: Option<(i64, UnixMicros)>) -> pb::PointsAccount {
    pb::PointsAccount {
        tenant_id: account.tenant_id.to_string(),
        member_id: account.member_id.to_string(),
        available: account.available,
        frozen: account.frozen,
        total_earned: account.total_earned,
        total_spent: account.total_spent,
        total_expired: account.total_expired,
        total_refunded: account.total_refunded,
        version: account.version,
        next_expiry_amount: next.map_or(0, |(amount, _)| amount),
        next_expiry_time: next.map(|(_, at)| timestamp(at)),
        create_time: Some(timestamp(account.created_at)),
        update_time: Some(timestamp(account.updated_at)),
    }
}

pub fn tx_type_to_proto(tx_type: TxType) -> pb::PointsTransactionType {
    match tx_type {
        TxType::Earn => pb::PointsTransactionType::Earn,
        TxType::Deduct => pb::PointsTransactionType::Deduct,
        TxType::Freeze => pb::PointsTransactionType::Freeze,
        TxType::Confirm => pb::PointsTransactionType::Confirm,
        TxType::Release => pb::PointsTransactionType::Release,
        TxType::Refund => pb::PointsTransactionType::Refund,
        TxType::Expire => pb::PointsTransactionType::Expire,
        TxType::Adjust => pb::PointsTransactionType::Adjust,
    }
}

pub fn tx_type_from_proto(field: &str, value: i32) -> Result<TxType, FieldViolation> {
    TxType::ALL
        .into_iter()
        .find(|t| tx_type_to_proto(*t) as i32 == value)
        .ok_or_else(|| FieldViolation::new(field, format!("{value} is not a transaction type")))
}

pub fn entry_to_proto(
    tenant: &TenantId,
    member: &MemberId,
    entry: &Entry,
) -> pb::PointsTransaction {
    pb::PointsTransaction {
        id: entry.id.to_string(),
        tenant_id: tenant.to_string(),
        member_id: member.to_string(),
        r#type: tx_type_to_proto(entry.tx_type).into(),
        amount: entry.amount,
        frozen_amount: entry.frozen_amount,
        available_after: entry.available_after,
        frozen_after: entry.frozen_after,
        biz_type: entry.meta.biz_type.clone().unwrap_or_default(),
        biz_id: entry.meta.biz_id.clone().unwrap_or_default(),
        request_id: entry.meta.request_id.clone().unwrap_or_default(),
        hold_id: entry.hold_id.map(|id| id.to_string()).unwrap_or_default(),
        related_transaction_id: entry
            .related_transaction_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        description: entry.meta.description.clone(),
        actor: entry.meta.actor.clone().unwrap_or_default(),
        create_time: Some(timestamp(entry.created_at)),
        expire_time: entry.expires_at.map(timestamp),
    }
}

pub fn hold_to_proto(tenant: &TenantId, member: &MemberId, hold: &Hold) -> pb::PointsHold {
    let state = match hold.status {
        HoldStatus::Held => pb::PointsHoldState::Held,
        HoldStatus::Confirmed => pb::PointsHoldState::Confirmed,
        HoldStatus::Released => pb::PointsHoldState::Released,
        HoldStatus::Expired => pb::PointsHoldState::Expired,
    };
    pb::PointsHold {
        id: hold.id.to_string(),
        tenant_id: tenant.to_string(),
        member_id: member.to_string(),
        order_id: hold.order_id.clone(),
        state: state.into(),
        amount: hold.amount,
        confirmed_amount: hold.confirmed_amount,
        expire_time: Some(timestamp(hold.expires_at)),
        create_time: Some(timestamp(hold.created_at)),
        update_time: Some(timestamp(hold.updated_at)),
    }
}

pub fn rounding_to_proto(rounding: Rounding) -> pb::PointsRounding {
    match rounding {
        Rounding::Down => pb::PointsRounding::Down,
        Rounding::HalfUp => pb::PointsRounding::HalfUp,
        Rounding::Up => pb::PointsRounding::Up,
    }
}

/// A stored answer's rounding (`None`: not one this server writes).
pub fn rounding_from_proto(value: i32) -> Option<Rounding> {
    match pb::PointsRounding::try_from(value).ok()? {
        pb::PointsRounding::Down => Some(Rounding::Down),
        pb::PointsRounding::HalfUp => Some(Rounding::HalfUp),
        pb::PointsRounding::Up => Some(Rounding::Up),
        pb::PointsRounding::Unspecified => None,
    }
}

pub fn rule_to_proto(rule: &PointsRule) -> pb::PointsRule {
    pb::PointsRule {
        id: rule.id.to_string(),
        tenant_id: rule.tenant_id.to_string(),
        event_type: rule.event_type.clone(),
        description: rule.terms.description.clone(),
        points: rule.terms.points,
        daily_cap: rule.terms.daily_cap,
        expiry_days: rule.terms.expiry_days,
        enabled: rule.terms.enabled,
        version: rule.version,
        create_time: Some(timestamp(rule.created_at)),
        update_time: Some(timestamp(rule.updated_at)),
        actor: rule.actor.clone().unwrap_or_default(),
        per_amount: rule
            .terms
            .per_amount
            .as_ref()
            .map(|per| pb::PointsPerAmount {
                currency: per.currency.as_str().to_owned(),
                amount: per.amount,
                multiplier_bp: per.multiplier_bp,
                rounding: rounding_to_proto(per.rounding).into(),
            }),
    }
}

pub fn coupon_status_to_proto(status: CouponStatus) -> pb::UserCouponState {
    match status {
        CouponStatus::Available => pb::UserCouponState::Available,
        CouponStatus::Locked => pb::UserCouponState::Locked,
        CouponStatus::Used => pb::UserCouponState::Used,
        CouponStatus::Expired => pb::UserCouponState::Expired,
        CouponStatus::Revoked => pb::UserCouponState::Revoked,
    }
}

pub fn coupon_status_from_proto(field: &str, value: i32) -> Result<CouponStatus, FieldViolation> {
    match pb::UserCouponState::try_from(value) {
        Ok(pb::UserCouponState::Available) => Ok(CouponStatus::Available),
        Ok(pb::UserCouponState::Locked) => Ok(CouponStatus::Locked),
        Ok(pb::UserCouponState::Used) => Ok(CouponStatus::Used),
        Ok(pb::UserCouponState::Expired) => Ok(CouponStatus::Expired),
        Ok(pb::UserCouponState::Revoked) => Ok(CouponStatus::Revoked),
        Ok(pb::UserCouponState::Unspecified) | Err(_) => Err(FieldViolation::new(
            field,
            format!("{value} is not a coupon state"),
        )),
    }
}

/// The coupon as a reader sees it at `now` (its effective state).
pub fn coupon_to_proto(coupon: &UserCoupon, now: UnixMicros) -> pb::UserCoupon {
    let status = coupon.effective_status(now);
    // A lapsed lock no longer names its order.
    let locked = status == CouponStatus::Locked;
    let order_id = match status {
        CouponStatus::Locked | CouponStatus::Used => coupon.order_id.clone().unwrap_or_default(),
        _ => String::new(),
    };
    pb::UserCoupon {
        id: coupon.id.to_string(),
        tenant_id: coupon.tenant_id.to_string(),
        member_id: coupon.member_id.to_string(),
        template_id: coupon.template_id.to_string(),
        state: coupon_status_to_proto(status).into(),
        discount: Some(match discount_message(&coupon.discount, &coupon.cart) {
            DiscountMessage::Fixed(m) => pb::user_coupon::Discount::FixedAmount(m),
            DiscountMessage::Percent(m) => pb::user_coupon::Discount::PercentOff(m),
            DiscountMessage::FreeShipping(m) => pb::user_coupon::Discount::FreeShipping(m),
            DiscountMessage::BuyGet(m) => pb::user_coupon::Discount::BuyGet(m),
        }),
        scope: scope_to_proto(&coupon.cart.scope),
        stacking: stacking_to_proto(&coupon.cart.stacking),
        currency: coupon.currency.as_str().to_owned(),
        min_spend_amount: coupon.min_spend_amount,
        valid_from: Some(timestamp(coupon.valid_from)),
        valid_until: Some(timestamp(coupon.valid_until)),
        claim_time: Some(timestamp(coupon.claimed_at)),
        order_id,
        lock_expire_time: coupon.lock_expires_at.filter(|_| locked).map(timestamp),
        order_amount: coupon.order_amount.unwrap_or_default(),
        discount_amount: coupon.discount_applied.unwrap_or_default(),
        use_time: coupon.used_at.map(timestamp),
        revoke_reason: coupon.revoke_reason.clone().unwrap_or_default(),
        version: coupon.version,
        update_time: Some(timestamp(coupon.updated_at)),
        discount_type: discount_type_to_proto(coupon.discount.discount_type()).into(),
        actor: coupon.actor.clone().unwrap_or_default(),
    }
}

pub fn code_kind_to_proto(kind: CodeKind) -> pb::CouponCodeKind {
    match kind {
        CodeKind::Shared => pb::CouponCodeKind::Shared,
        CodeKind::Unique => pb::CouponCodeKind::Unique,
    }
}

pub fn settings_to_proto(settings: &TenantSettings) -> pb::TenantSettings {
    let terms = &settings.terms;
    pb::TenantSettings {
        tenant_id: settings.tenant_id.to_string(),
        points_values: terms
            .points_values
            .iter()
            .map(|(currency, value)| pb::PointsValue {
                currency: currency.as_str().to_owned(),
                points: value.points,
                amount: value.amount,
            })
            .collect(),
        max_points_share_bp: terms.max_points_share_bp,
        min_points_redemption: terms.min_points_redemption,
        max_coupons_per_order: terms.max_coupons_per_order.unwrap_or(0),
        version: settings.version,
        update_time: settings.updated_at.map(timestamp),
        actor: settings.actor.clone().unwrap_or_default(),
    }
}

pub fn code_to_proto(code: &marketing_storage::codes::StoredCode) -> pb::CouponCode {
    let claim = code.claim.as_ref();
    pb::CouponCode {
        code: code.code.as_str().to_owned(),
        state: if claim.is_some() {
            pb::CouponCodeState::Claimed
        } else {
            pb::CouponCodeState::Available
        }
        .into(),
        template_id: code.template_id.to_string(),
        kind: code_kind_to_proto(code.kind).into(),
        member_id: claim.map(|c| c.member_id.clone()).unwrap_or_default(),
        user_coupon_id: claim.map(|c| c.coupon_id.to_string()).unwrap_or_default(),
        claim_time: claim.map(|c| timestamp(c.at)),
        create_time: Some(timestamp(code.created_at)),
        actor: code.actor.clone().unwrap_or_default(),
    }
}

pub fn template_to_proto(template: &CouponTemplate) -> pb::CouponTemplate {
    let terms = &template.terms;
    pb::CouponTemplate {
        id: template.id.to_string(),
        tenant_id: template.tenant_id.to_string(),
        name: terms.name.clone(),
        description: terms.description.clone(),
        discount: Some(match discount_message(&terms.discount, &terms.cart) {
            DiscountMessage::Fixed(m) => pb::coupon_template::Discount::FixedAmount(m),
            DiscountMessage::Percent(m) => pb::coupon_template::Discount::PercentOff(m),
            DiscountMessage::FreeShipping(m) => pb::coupon_template::Discount::FreeShipping(m),
            DiscountMessage::BuyGet(m) => pb::coupon_template::Discount::BuyGet(m),
        }),
        scope: scope_to_proto(&terms.cart.scope),
        stacking: stacking_to_proto(&terms.cart.stacking),
        budget_amount: terms.budget_amount,
        budget_used_amount: template.budget_used,
        budget_remaining_amount: template.budget_remaining().unwrap_or(0),
        currency: terms.currency.as_str().to_owned(),
        min_spend_amount: terms.min_spend_amount,
        total_stock: template.total_stock,
        remaining_stock: template.remaining_stock,
        claimed_count: template.claimed_count,
        used_count: template.used_count,
        per_member_limit: terms.per_member_limit,
        distribution_start_time: Some(timestamp(terms.distribution_start)),
        distribution_end_time: Some(timestamp(terms.distribution_end)),
        validity: Some(match terms.validity {
            Validity::FixedWindow {
                valid_from,
                valid_until,
            } => pb::coupon_template::Validity::FixedWindow(pb::FixedValidityWindow {
                valid_from: Some(timestamp(valid_from)),
                valid_until: Some(timestamp(valid_until)),
            }),
            Validity::Relative { valid_days } => {
                pb::coupon_template::Validity::Relative(pb::RelativeValidity { valid_days })
            }
        }),
        enabled: terms.enabled,
        version: template.version,
        create_time: Some(timestamp(template.created_at)),
        update_time: Some(timestamp(template.updated_at)),
        discount_type: discount_type_to_proto(terms.discount.discount_type()).into(),
        archived: template.archived_at.is_some(),
        archive_time: template.archived_at.map(timestamp),
        actor: template.actor.clone().unwrap_or_default(),
        unique_code_count: template.codes.unique,
        available_unique_code_count: template.codes.unique_available(),
        shared_code_count: template.codes.shared,
    }
}

/// The terms a client sent, unchecked; field names relative to the template message.
/// Only malformed timestamps are violations here; the domain checks the rest.
pub fn draft_from_proto(
    template: &pb::CouponTemplate,
    violations: &mut Violations,
) -> TemplateDraft {
    let mut cart = CartTerms {
        scope: scope_from_proto("scope", template.scope.as_ref(), violations),
        stacking: stacking_from_proto(template.stacking.as_ref(), violations),
        ..CartTerms::default()
    };
    let discount = template.discount.as_ref().map(|discount| match discount {
        pb::coupon_template::Discount::FixedAmount(fixed) => {
            cart.allocation =
                allocation_from_proto("fixed_amount.allocation", fixed.allocation, violations);
            Discount::FixedAmount {
                amount: fixed.amount,
            }
        }
        pb::coupon_template::Discount::PercentOff(percent) => {
            cart.allocation =
                allocation_from_proto("percent_off.allocation", percent.allocation, violations);
            Discount::PercentOff {
                basis_points: percent.basis_points,
                max_discount_amount: percent.max_discount_amount,
            }
        }
        pb::coupon_template::Discount::FreeShipping(free) => Discount::FreeShipping {
            max_discount_amount: free.max_discount_amount,
        },
        pb::coupon_template::Discount::BuyGet(buy_get) => {
            cart.get_scope =
                scope_from_proto("buy_get.get_scope", buy_get.get_scope.as_ref(), violations);
            Discount::BuyGet {
                buy_quantity: buy_get.buy_quantity,
                get_quantity: buy_get.get_quantity,
                basis_points: buy_get.basis_points,
                max_applications: buy_get.max_applications,
            }
        }
    });
    let validity = match &template.validity {
        None => None,
        Some(pb::coupon_template::Validity::FixedWindow(window)) => {
            let from = violations.check(micros(
                "fixed_window.valid_from",
                window.valid_from.as_ref(),
            ));
            let until = violations.check(micros(
                "fixed_window.valid_until",
                window.valid_until.as_ref(),
            ));
            match (from, until) {
                (Some(Some(valid_from)), Some(Some(valid_until))) => Some(Validity::FixedWindow {
                    valid_from,
                    valid_until,
                }),
                (Some(from), Some(until)) => {
                    if from.is_none() {
                        violations.push("fixed_window.valid_from", "is required");
                    }
                    if until.is_none() {
                        violations.push("fixed_window.valid_until", "is required");
                    }
                    None
                }
                _ => None,
            }
        }
        Some(pb::coupon_template::Validity::Relative(relative)) => Some(Validity::Relative {
            valid_days: relative.valid_days,
        }),
    };
    TemplateDraft {
        name: template.name.clone(),
        description: template.description.clone(),
        discount,
        currency: template.currency.clone(),
        min_spend_amount: template.min_spend_amount,
        per_member_limit: template.per_member_limit,
        distribution_start: violations
            .check(micros(
                "distribution_start_time",
                template.distribution_start_time.as_ref(),
            ))
            .flatten(),
        distribution_end: violations
            .check(micros(
                "distribution_end_time",
                template.distribution_end_time.as_ref(),
            ))
            .flatten(),
        validity,
        enabled: template.enabled,
        cart,
        budget_amount: template.budget_amount,
    }
}

const PAGE_TOKEN_VERSION: u8 = 1;

/// An opaque page token: the last id of the page, bound to the query it came from (a digest
/// of its tenant and filters), so it cannot be replayed against other filters.
pub fn encode_page_token(last_id: Uuid, query: &str) -> String {
    let mut bytes = Vec::with_capacity(25);
    bytes.push(PAGE_TOKEN_VERSION);
    bytes.extend_from_slice(last_id.as_bytes());
    bytes.extend_from_slice(&Sha256::digest(query.as_bytes())[..8]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The last id of the previous page; an empty token is the first page.
pub fn decode_page_token(
    field: &str,
    token: &str,
    query: &str,
) -> Result<Option<Uuid>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || FieldViolation::new(field, "is not a page token of this query");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let [PAGE_TOKEN_VERSION, rest @ ..] = bytes.as_slice() else {
        return Err(invalid());
    };
    let (id, digest) = rest.split_at_checked(16).ok_or_else(invalid)?;
    if digest != &Sha256::digest(query.as_bytes())[..8] {
        return Err(invalid());
    }
    Uuid::from_slice(id).map(Some).map_err(|_| invalid())
}

/// The version byte of page tokens that carry a text key (a code) instead of an id.
const TEXT_PAGE_TOKEN_VERSION: u8 = 2;

/// A page token after the key `last` (a code: short ASCII text), bound to `query`.
pub fn encode_text_page_token(last: &str, query: &str) -> String {
    let mut bytes = Vec::with_capacity(9 + last.len());
    bytes.push(TEXT_PAGE_TOKEN_VERSION);
    bytes.extend_from_slice(&Sha256::digest(query.as_bytes())[..8]);
    bytes.extend_from_slice(last.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The last key of the previous page ([`encode_text_page_token`]); an empty token is the
/// first page.
pub fn decode_text_page_token(
    field: &str,
    token: &str,
    query: &str,
) -> Result<Option<String>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || FieldViolation::new(field, "is not a page token of this query");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let [TEXT_PAGE_TOKEN_VERSION, rest @ ..] = bytes.as_slice() else {
        return Err(invalid());
    };
    let (digest, key) = rest.split_at_checked(8).ok_or_else(invalid)?;
    if digest != &Sha256::digest(query.as_bytes())[..8] {
        return Err(invalid());
    }
    let key = std::str::from_utf8(key).map_err(|_| invalid())?;
    marketing_domain::coupon_code::CodeText::parse(field, key)
        .map(|code| Some(code.into_string()))
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_page_tokens_round_trip_and_are_bound_to_their_query() {
        let token = encode_text_page_token("SPRING10", "codes;a");
        assert_eq!(
            decode_text_page_token("t", &token, "codes;a"),
            Ok(Some("SPRING10".to_owned()))
        );
        assert!(decode_text_page_token("t", &token, "codes;b").is_err());
        assert!(decode_text_page_token("t", "not-a-token", "codes;a").is_err());
        let id_token = encode_page_token(Uuid::nil(), "codes;a");
        assert!(decode_text_page_token("t", &id_token, "codes;a").is_err());
        assert_eq!(decode_text_page_token("t", "", "codes;a"), Ok(None));
    }

    #[test]
    fn page_tokens_round_trip_and_are_bound_to_their_query() {
        let id = Uuid::now_v7();
        let token = encode_page_token(id, "tenant=a;enabled=true");
        assert_eq!(
            decode_page_token("page_token", &token, "tenant=a;enabled=true"),
            Ok(Some(id))
        );
        assert!(decode_page_token("page_token", &token, "tenant=b;enabled=true").is_err());
        assert!(decode_page_token("page_token", "garbage!", "q").is_err());
        assert!(decode_page_token("page_token", &token[..10], "q").is_err());
        assert_eq!(decode_page_token("page_token", "", "q"), Ok(None));
    }

    #[test]
    fn timestamps_convert_both_ways() {
        let ts = Timestamp {
            seconds: 1_763_788_800,
            nanos: 123_456_000,
        };
        let at = micros("t", Some(&ts)).expect("valid").expect("present");
        assert_eq!(timestamp(at), ts);
        assert!(
            micros(
                "t",
                Some(&Timestamp {
                    seconds: 0,
                    nanos: -5
                })
            )
            .is_err()
        );
        assert_eq!(micros("t", None), Ok(None));
    }
}
