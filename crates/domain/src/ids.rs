//! Identifiers. Tenants and members are the callers' own ids (bounded, printable); resources
//! we create are UUID v7, so their order is their creation order.

use std::fmt;

use uuid::Uuid;

use crate::error::FieldViolation;

/// Checks a caller-provided id: 1..=max characters of `[A-Za-z0-9_.:-]`.
fn check_external_id(field: &str, value: &str, max: usize) -> Result<(), FieldViolation> {
    if value.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Err(FieldViolation::new(
            field,
            "may contain only letters, digits and _ - . :",
        ));
    }
    Ok(())
}

macro_rules! external_id {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            /// Parses the value of request field `field`.
            pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
                check_external_id(field, value, Self::MAX_LEN)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Ordered and hashed as its text, so sets of ids can be asked with a `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

external_id!(
    /// The tenant every request is scoped by.
    TenantId,
    64
);
external_id!(
    /// A member of a tenant (the caller's member id).
    MemberId,
    64
);
external_id!(
    /// The client-chosen id of a mutation (AIP-155).
    RequestId,
    128
);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the value of request field `field`.
            pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
                if value.is_empty() {
                    return Err(FieldViolation::new(field, "must not be empty"));
                }
                Uuid::try_parse(value)
                    .map(Self)
                    .map_err(|_| FieldViolation::new(field, "must be a UUID"))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A coupon template.
    TemplateId
);
uuid_id!(
    /// A coupon held by a member.
    CouponId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_are_bounded_and_printable() {
        assert!(TenantId::parse("tenant_id", "acme-eu:1").is_ok());
        assert_eq!(
            TenantId::parse("tenant_id", "").unwrap_err().description,
            "must not be empty"
        );
        assert!(TenantId::parse("tenant_id", &"a".repeat(65)).is_err());
        assert!(MemberId::parse("member_id", "a b").is_err());
        assert!(RequestId::parse("request_id", &"r".repeat(128)).is_ok());
    }

    #[test]
    fn uuid_ids_parse_and_are_time_ordered() {
        let first = TemplateId::new();
        let second = TemplateId::new();
        assert!(first < second);
        assert_eq!(
            TemplateId::parse("id", &first.to_string()).ok(),
            Some(first)
        );
        assert_eq!(TemplateId::parse("id", "nope").unwrap_err().field, "id");
    }
}
