//! The tonic adapters: thin handlers over the use cases in `app`.

mod admin;
pub mod auth;
mod coupon_templates;
pub mod deadline;
mod events;
pub mod metrics;
pub mod overload;
mod parse;
pub mod refusals;
pub use parse::REPEATED_FIELD_CAPS;
mod points;
mod settings;
mod user_coupons;

pub use admin::Admin;
pub use coupon_templates::CouponTemplates;
pub use events::Events;
pub use points::Points;
pub use settings::Settings;
pub use user_coupons::UserCoupons;

/// A future a layer answers later with.
pub(crate) type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

/// The service to answer a call with later, from a layer: the one polled ready answers it, and
/// a clone takes its place for the next call (tower's rule for deferred calls).
pub(crate) fn take_ready<S: Clone>(service: &mut S) -> S {
    let clone = service.clone();
    std::mem::replace(service, clone)
}
