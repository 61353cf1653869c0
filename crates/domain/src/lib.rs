//! The marketing domain: identifiers, coupon-template rules and the error vocabulary shared by
//! every layer. Pure code: no I/O, no tonic, no SeaORM.
#![forbid(unsafe_code)]

pub mod auth;
pub mod coupon_code;
pub mod coupon_template;
pub mod error;
pub mod events;
pub mod ids;
pub mod limits;
pub mod page;
pub mod points;
pub mod points_rule;
pub mod pricing;
pub mod tenant_settings;
pub mod text;
pub mod time;
pub mod user_coupon;

pub use error::{FieldViolation, MarketingError, Reason};
pub use ids::{CouponId, MemberId, RequestId, TemplateId, TenantId};
pub use time::UnixMicros;
