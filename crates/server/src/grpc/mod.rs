//! The tonic adapters: thin handlers over the use cases in `app`.

pub mod auth;
mod coupon_templates;
pub mod deadline;
pub mod overload;
mod parse;
mod points;
mod user_coupons;

pub use coupon_templates::CouponTemplates;
pub use points::Points;
pub use user_coupons::UserCoupons;
