//! How a discount and its cart terms are stored, on templates and (copied at claim) on
//! coupons: the discount's kind and numbers in columns, and what the columns do not hold
//! (scope, allocation, buy X get Y, stacking) as a small JSON document, NULL for a coupon of
//! a whole order (every row before cart terms existed).

use std::collections::BTreeSet;

use marketing_domain::{
    coupon_template::{CartTerms, Discount, DiscountType},
    pricing::{Allocation, Scope, Stacking},
};
use serde::{Deserialize, Serialize};

/// The discount's columns.
pub(crate) struct DiscountColumns {
    pub kind: i16,
    pub amount: Option<i64>,
    pub basis_points: Option<i32>,
    pub cap: Option<i64>,
    pub cart_terms: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct StoredScope {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    p: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    c: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    b: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    xp: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    xc: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    xb: BTreeSet<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct StoredTerms {
    #[serde(default)]
    scope: StoredScope,
    /// Per unit (allocation EACH).
    #[serde(default)]
    each: bool,
    #[serde(default)]
    get_scope: StoredScope,
    #[serde(default)]
    exclusive: bool,
    #[serde(default)]
    group: String,
    #[serde(default)]
    group_order: i32,
    /// Buy X get Y's quantities and applications.
    #[serde(default)]
    buy: i32,
    #[serde(default)]
    get: i32,
    #[serde(default)]
    max_applications: Option<i32>,
}

fn store_scope(scope: &Scope) -> StoredScope {
    StoredScope {
        p: scope.products.clone(),
        c: scope.categories.clone(),
        b: scope.brands.clone(),
        xp: scope.excluded_products.clone(),
        xc: scope.excluded_categories.clone(),
        xb: scope.excluded_brands.clone(),
    }
}

fn load_scope(scope: StoredScope) -> Scope {
    Scope {
        products: scope.p,
        categories: scope.c,
        brands: scope.b,
        excluded_products: scope.xp,
        excluded_categories: scope.xc,
        excluded_brands: scope.xb,
    }
}

pub(crate) fn to_columns(discount: &Discount, cart: &CartTerms) -> DiscountColumns {
    let (amount, basis_points, cap) = match *discount {
        Discount::FixedAmount { amount } => (Some(amount), None, None),
        Discount::PercentOff {
            basis_points,
            max_discount_amount,
        } => (None, Some(basis_points), max_discount_amount),
        Discount::FreeShipping {
            max_discount_amount,
        } => (None, None, max_discount_amount),
        Discount::BuyGet { basis_points, .. } => (None, Some(basis_points), None),
    };
    let buy_get = match *discount {
        Discount::BuyGet {
            buy_quantity,
            get_quantity,
            max_applications,
            ..
        } => Some((buy_quantity, get_quantity, max_applications)),
        _ => None,
    };
    let cart_terms = (!cart.is_default() || buy_get.is_some()).then(|| {
        let (exclusive, group, group_order) = match &cart.stacking {
            Stacking::Exclusive => (true, String::new(), 0),
            Stacking::Group { name, order } => (false, name.clone(), *order),
        };
        let (buy, get, max_applications) = buy_get.unwrap_or_default();
        let stored = StoredTerms {
            scope: store_scope(&cart.scope),
            each: cart.allocation == Allocation::Each,
            get_scope: store_scope(&cart.get_scope),
            exclusive,
            group,
            group_order,
            buy,
            get,
            max_applications,
        };
        serde_json::to_string(&stored).unwrap_or_default()
    });
    DiscountColumns {
        kind: discount.discount_type().code(),
        amount,
        basis_points,
        cap,
        cart_terms,
    }
}

/// `None` when the columns do not make a discount (corrupt data).
pub(crate) fn from_columns(columns: DiscountColumns) -> Option<(Discount, CartTerms)> {
    let stored: StoredTerms = match &columns.cart_terms {
        None => StoredTerms::default(),
        Some(text) => serde_json::from_str(text).ok()?,
    };
    let discount = match (
        DiscountType::from_code(columns.kind)?,
        columns.amount,
        columns.basis_points,
    ) {
        (DiscountType::FixedAmount, Some(amount), _) => Discount::FixedAmount { amount },
        (DiscountType::PercentOff, _, Some(basis_points)) => Discount::PercentOff {
            basis_points,
            max_discount_amount: columns.cap,
        },
        (DiscountType::FreeShipping, _, _) => Discount::FreeShipping {
            max_discount_amount: columns.cap,
        },
        (DiscountType::BuyGet, _, Some(basis_points)) if stored.buy > 0 => Discount::BuyGet {
            buy_quantity: stored.buy,
            get_quantity: stored.get,
            basis_points,
            max_applications: stored.max_applications,
        },
        _ => return None,
    };
    let cart = CartTerms {
        scope: load_scope(stored.scope),
        allocation: if stored.each {
            Allocation::Each
        } else {
            Allocation::Across
        },
        get_scope: load_scope(stored.get_scope),
        stacking: if stored.exclusive {
            Stacking::Exclusive
        } else {
            Stacking::Group {
                name: stored.group,
                order: stored.group_order,
            }
        },
    };
    Some((discount, cart))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_survive_the_columns() {
        let cart = CartTerms {
            scope: Scope {
                products: ["p1".to_owned()].into(),
                excluded_brands: ["b9".to_owned()].into(),
                ..Scope::default()
            },
            allocation: Allocation::Each,
            get_scope: Scope::default(),
            stacking: Stacking::Group {
                name: "product".into(),
                order: -3,
            },
        };
        for discount in [
            Discount::FixedAmount { amount: 5 },
            Discount::PercentOff {
                basis_points: 10,
                max_discount_amount: Some(3),
            },
            Discount::FreeShipping {
                max_discount_amount: None,
            },
            Discount::BuyGet {
                buy_quantity: 2,
                get_quantity: 1,
                basis_points: 10_000,
                max_applications: Some(4),
            },
        ] {
            for cart in [cart.clone(), CartTerms::default()] {
                let columns = to_columns(&discount, &cart);
                assert_eq!(from_columns(columns), Some((discount, cart)));
            }
        }
        let plain = to_columns(&Discount::FixedAmount { amount: 1 }, &CartTerms::default());
        assert!(
            plain.cart_terms.is_none(),
            "a whole-order coupon stores no terms"
        );
    }
}
