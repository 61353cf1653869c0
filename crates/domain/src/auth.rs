//! Callers: API clients, the role that says which methods each may call, the tenants each may
//! act for, and the shape of their keys.
//!
//! A key is `mk_<key id>_<secret>`: the key id (12 characters) finds the client's row, the
//! secret (256 random bits, base64url) is checked against the stored SHA-256 digest of the
//! whole key in constant time. Only the digest is stored; the key is shown once, at creation.

use std::{collections::BTreeSet, fmt};

use crate::{TenantId, UnixMicros};

/// What a client may do, as sets of methods (the RPC names of `marketing.v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything: templates, rules, distribution, revocation, and the reads.
    Admin,
    /// What an order flow needs: claim, validate, lock, use, release and return coupons;
    /// earn, deduct, freeze, confirm, release and refund points; and every Get/List.
    Checkout,
    /// Get/List and the leaderboard only.
    Reader,
}

/// The writes a checkout client may make.
const CHECKOUT_WRITES: [&str; 12] = [
    "ClaimCoupon",
    "ValidateCoupon",
    "LockCoupon",
    "UseCoupon",
    "ReleaseCoupon",
    "ReturnCoupon",
    "EarnPoints",
    "DeductPoints",
    "FreezePoints",
    "ConfirmFrozenPoints",
    "ReleaseFrozenPoints",
    "RefundPoints",
];

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Checkout, Role::Reader];

    /// Whether the role may call `method` (an RPC name such as `ClaimCoupon`).
    pub fn allows(self, method: &str) -> bool {
        let read = method.starts_with("Get") || method.starts_with("List");
        match self {
            Role::Admin => true,
            Role::Checkout => read || CHECKOUT_WRITES.contains(&method),
            Role::Reader => read,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Checkout => "checkout",
            Role::Reader => "reader",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// Database code.
    pub fn code(self) -> i16 {
        match self {
            Role::Admin => 1,
            Role::Checkout => 2,
            Role::Reader => 3,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.code() == code)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The tenants a client may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenants {
    All,
    Only(BTreeSet<TenantId>),
}

impl Tenants {
    /// Whether the client may act for `tenant` (a tenant id's text).
    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            Tenants::All => true,
            Tenants::Only(tenants) => tenants.contains(tenant),
        }
    }
}

/// A caller of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiClient {
    pub name: String,
    pub role: Role,
    pub tenants: Tenants,
    pub created_at: UnixMicros,
    pub revoked_at: Option<UnixMicros>,
}

/// Characters of a key id.
pub const KEY_ID_LEN: usize = 12;
/// Characters of a key's secret: 32 bytes in unpadded base64url.
pub const SECRET_LEN: usize = 43;

/// A presented key, split into the id that finds its client and the whole text that is
/// checked against the stored digest. `None` for text that is not a key's shape.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("mk_")?;
    let (id, secret) = rest.split_once('_')?;
    let base64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (id.len() == KEY_ID_LEN
        && secret.len() == SECRET_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric())
        && base64url(secret))
    .then_some((id, key))
}

/// Whether two digests are equal, in time that does not depend on where they differ.
pub fn digests_match(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A client's name: 1 to 64 of letters, digits, `-`, `_` and `.`.
pub fn check_client_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "client name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_their_method_sets() {
        for method in [
            "CreateCouponTemplate",
            "DistributeCoupons",
            "RevokeCoupon",
            "CreatePointsRule",
        ] {
            assert!(Role::Admin.allows(method));
            assert!(!Role::Checkout.allows(method), "{method}");
            assert!(!Role::Reader.allows(method), "{method}");
        }
        for method in [
            "ClaimCoupon",
            "UseCoupon",
            "DeductPoints",
            "RefundPoints",
            "ValidateCoupon",
        ] {
            assert!(Role::Checkout.allows(method));
            assert!(!Role::Reader.allows(method), "{method}");
        }
        for method in [
            "GetCouponTemplate",
            "ListMemberCoupons",
            "GetPointsLeaderboard",
        ] {
            for role in Role::ALL {
                assert!(role.allows(method), "{role} {method}");
            }
        }
    }

    #[test]
    fn roles_read_back_from_their_names_and_codes() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(Role::from_code(role.code()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn keys_split_only_in_their_shape() {
        let key = format!("mk_{}_{}", "a".repeat(KEY_ID_LEN), "B-_".repeat(14) + "x");
        assert_eq!(split_key(&key), Some(("aaaaaaaaaaaa", key.as_str())));
        assert_eq!(split_key("Bearer x"), None);
        assert_eq!(split_key(&key[..key.len() - 1]), None);
        assert_eq!(split_key(&key.replace("mk_", "mx_")), None);
        assert_eq!(
            split_key(&format!("mk_{}_{}", "a!".repeat(6), "b".repeat(43))),
            None
        );
    }

    #[test]
    fn digests_compare_whole() {
        assert!(digests_match(b"abc", b"abc"));
        assert!(!digests_match(b"abc", b"abd"));
        assert!(!digests_match(b"abc", b"ab"));
    }

    #[test]
    fn tenant_scopes() {
        let acme = TenantId::parse("t", "acme").unwrap();
        let beta = TenantId::parse("t", "beta").unwrap();
        assert!(Tenants::All.allows("acme"));
        let only = Tenants::Only(BTreeSet::from([acme.clone()]));
        assert!(only.allows(acme.as_str()) && !only.allows(beta.as_str()));
    }
}
