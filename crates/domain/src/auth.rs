//! Callers: API clients, the role that says which methods each may call, the tenants each may
//! act for, and the shape of their keys.
//!
//! A key is `mk_<key id>_<secret>`: the key id (12 characters) finds the client's row, the
//! secret (256 random bits, base64url) is checked against the stored SHA-256 digest of the
//! whole key in constant time. Only the digest is stored; the key is shown once, at creation.

use std::{collections::BTreeSet, fmt};

use crate::{TenantId, UnixMicros};

/// What a client may do: the [`Permission`]s its role grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Every permission: templates, rules, distribution, revocation, the order flow, reads.
    Admin,
    /// What an order flow needs: [`Permission::Order`] and [`Permission::Read`].
    Checkout,
    /// [`Permission::Read`] only.
    Reader,
}

/// What a call needs, declared per RPC in [`RPC_PERMISSIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Reads of a tenant's templates, coupons, accounts, ledger, rules and leaderboard.
    Read,
    /// The writes of an order flow: claim, validate, lock, use, release and return coupons;
    /// earn, deduct, freeze, confirm, release and refund points.
    Order,
    /// Everything else: templates, rules, stock, distribution, revocation.
    Manage,
}

/// How far a call reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The call names one tenant (`tenant_id`), and its client must act for it.
    Tenant,
    /// The call shows or touches every tenant's data (the admin service): its client must act
    /// for all tenants.
    AllTenants,
}

/// One RPC's declared needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcPermission {
    /// The call's path: `/<package>.<Service>/<Method>`.
    pub path: &'static str,
    pub permission: Permission,
    pub scope: Scope,
}

const fn rpc(path: &'static str, permission: Permission) -> RpcPermission {
    RpcPermission {
        path,
        permission,
        scope: Scope::Tenant,
    }
}

const fn service_wide(path: &'static str) -> RpcPermission {
    RpcPermission {
        path,
        permission: Permission::Manage,
        scope: Scope::AllTenants,
    }
}

/// Every RPC of `marketing.v1` and the permission it needs. A path with no entry is refused
/// to every role but admin (permissions fail closed); a test walks the served descriptor set
/// and fails on any RPC without an entry, so a new RPC cannot ship without a decision.
pub const RPC_PERMISSIONS: [RpcPermission; 44] = {
    use Permission::{Manage, Order, Read};
    [
        rpc(
            "/marketing.v1.CouponTemplateService/CreateCouponTemplate",
            Manage,
        ),
        rpc(
            "/marketing.v1.CouponTemplateService/GetCouponTemplate",
            Read,
        ),
        rpc(
            "/marketing.v1.CouponTemplateService/ListCouponTemplates",
            Read,
        ),
        rpc(
            "/marketing.v1.CouponTemplateService/UpdateCouponTemplate",
            Manage,
        ),
        rpc(
            "/marketing.v1.CouponTemplateService/SetCouponTemplateEnabled",
            Manage,
        ),
        rpc("/marketing.v1.CouponTemplateService/AddCouponStock", Manage),
        rpc(
            "/marketing.v1.CouponTemplateService/DeleteCouponTemplate",
            Manage,
        ),
        // Codes are bearer secrets: only admins make or list them.
        rpc(
            "/marketing.v1.CouponTemplateService/CreateSharedCouponCode",
            Manage,
        ),
        rpc(
            "/marketing.v1.CouponTemplateService/GenerateCouponCodes",
            Manage,
        ),
        rpc(
            "/marketing.v1.CouponTemplateService/ListCouponCodes",
            Manage,
        ),
        rpc("/marketing.v1.UserCouponService/ClaimCoupon", Order),
        rpc("/marketing.v1.UserCouponService/ClaimCouponByCode", Order),
        rpc("/marketing.v1.UserCouponService/DistributeCoupons", Manage),
        rpc("/marketing.v1.UserCouponService/GetUserCoupon", Read),
        rpc("/marketing.v1.UserCouponService/ListMemberCoupons", Read),
        rpc("/marketing.v1.UserCouponService/ValidateCoupon", Order),
        rpc("/marketing.v1.UserCouponService/LockCoupon", Order),
        rpc("/marketing.v1.UserCouponService/UseCoupon", Order),
        rpc("/marketing.v1.UserCouponService/ReleaseCoupon", Order),
        rpc("/marketing.v1.UserCouponService/ReturnCoupon", Order),
        rpc("/marketing.v1.UserCouponService/RevokeCoupon", Manage),
        rpc("/marketing.v1.UserCouponService/PriceOrder", Order),
        rpc(
            "/marketing.v1.UserCouponService/ListApplicableCoupons",
            Order,
        ),
        rpc(
            "/marketing.v1.TenantSettingsService/GetTenantSettings",
            Read,
        ),
        rpc(
            "/marketing.v1.TenantSettingsService/UpdateTenantSettings",
            Manage,
        ),
        rpc("/marketing.v1.EventService/ListEvents", Read),
        rpc("/marketing.v1.EventService/StreamEvents", Read),
        rpc("/marketing.v1.PointsAccountService/GetPointsAccount", Read),
        rpc("/marketing.v1.PointsAccountService/EarnPoints", Order),
        rpc("/marketing.v1.PointsAccountService/DeductPoints", Order),
        rpc("/marketing.v1.PointsAccountService/FreezePoints", Order),
        rpc(
            "/marketing.v1.PointsAccountService/ConfirmFrozenPoints",
            Order,
        ),
        rpc(
            "/marketing.v1.PointsAccountService/ReleaseFrozenPoints",
            Order,
        ),
        rpc("/marketing.v1.PointsAccountService/RefundPoints", Order),
        rpc(
            "/marketing.v1.PointsAccountService/ListPointsTransactions",
            Read,
        ),
        rpc(
            "/marketing.v1.PointsAccountService/GetPointsLeaderboard",
            Read,
        ),
        rpc(
            "/marketing.v1.PointsAccountService/CreatePointsRule",
            Manage,
        ),
        rpc(
            "/marketing.v1.PointsAccountService/UpdatePointsRule",
            Manage,
        ),
        rpc("/marketing.v1.PointsAccountService/ListPointsRules", Read),
        rpc("/marketing.v1.PointsAccountService/AdjustPoints", Manage),
        // One replica's caches, every tenant's locks: admins of all tenants only.
        service_wide("/marketing.v1.AdminService/GetCacheStats"),
        service_wide("/marketing.v1.AdminService/ListActiveLocks"),
        service_wide("/marketing.v1.AdminService/EvictCache"),
        service_wide("/marketing.v1.AdminService/GetSweeperStatus"),
    ]
};

/// What the RPC at `path` is declared to need (`None`: no entry).
pub fn rpc_permission(path: &str) -> Option<&'static RpcPermission> {
    RPC_PERMISSIONS.iter().find(|rpc| rpc.path == path)
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Checkout, Role::Reader];

    /// Whether the role grants `permission`.
    pub fn grants(self, permission: Permission) -> bool {
        match self {
            Role::Admin => true,
            Role::Checkout => matches!(permission, Permission::Read | Permission::Order),
            Role::Reader => permission == Permission::Read,
        }
    }

    /// Whether the role may call the RPC at `path` (`/marketing.v1.UserCouponService/ClaimCoupon`):
    /// by its entry in [`RPC_PERMISSIONS`]; a path with no entry only for admins.
    pub fn allows(self, path: &str) -> bool {
        match rpc_permission(path) {
            Some(rpc) => self.grants(rpc.permission),
            None => self == Role::Admin,
        }
    }

    /// Whether a client of this role acting for `tenants` may call the RPC at `path`: its
    /// role allows it, and a call of [`Scope::AllTenants`] needs a client of all tenants.
    pub fn allows_for(self, tenants: &Tenants, path: &str) -> bool {
        self.allows(path)
            && (rpc_permission(path).is_none_or(|rpc| rpc.scope == Scope::Tenant)
                || *tenants == Tenants::All)
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

    fn path(method: &str) -> &'static str {
        RPC_PERMISSIONS
            .iter()
            .find(|rpc| rpc.path.ends_with(&format!("/{method}")))
            .map(|rpc| rpc.path)
            .unwrap_or_else(|| panic!("{method} has no entry"))
    }

    #[test]
    fn roles_allow_their_method_sets() {
        for method in [
            "CreateCouponTemplate",
            "GenerateCouponCodes",
            "ListCouponCodes",
            "CreateSharedCouponCode",
            "DistributeCoupons",
            "RevokeCoupon",
            "CreatePointsRule",
            "AdjustPoints",
        ] {
            let path = path(method);
            assert!(Role::Admin.allows(path));
            assert!(!Role::Checkout.allows(path), "{method}");
            assert!(!Role::Reader.allows(path), "{method}");
        }
        for method in [
            "ClaimCoupon",
            "ClaimCouponByCode",
            "UseCoupon",
            "DeductPoints",
            "RefundPoints",
            "ValidateCoupon",
            "PriceOrder",
            "ListApplicableCoupons",
        ] {
            let path = path(method);
            assert!(Role::Checkout.allows(path));
            assert!(!Role::Reader.allows(path), "{method}");
        }
        for method in [
            "GetCouponTemplate",
            "ListMemberCoupons",
            "GetPointsLeaderboard",
        ] {
            let path = path(method);
            for role in Role::ALL {
                assert!(role.allows(path), "{role} {method}");
            }
        }
    }

    #[test]
    fn a_method_without_an_entry_is_for_admins_only() {
        // Named like a read, on a service of the package: still no entry, so closed.
        for path in [
            "/marketing.v1.AdminService/GetCacheStats",
            "/marketing.v1.CouponTemplateService/ListApiClients",
            "/marketing.v1.UserCouponService/GetCouponTemplate",
            "",
        ] {
            assert!(Role::Admin.allows(path), "{path}");
            assert!(!Role::Checkout.allows(path), "{path}");
            assert!(!Role::Reader.allows(path), "{path}");
        }
    }

    #[test]
    fn every_rpc_has_one_entry() {
        let mut paths: Vec<_> = RPC_PERMISSIONS.iter().map(|rpc| rpc.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), RPC_PERMISSIONS.len(), "a path listed twice");
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
