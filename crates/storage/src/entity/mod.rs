//! SeaORM entities, one per table of `migrations/`. Times are `*_at` microseconds since the
//! epoch; enum columns hold the codes defined in `marketing-domain`.

pub mod api_client;
pub mod code_generation;
pub mod coupon_code;
pub mod coupon_template;
pub mod event_aggregate;
pub mod event_batch;
pub mod event_body;
pub mod event_expiry;
pub mod event_position;
pub mod event_reminder;
pub mod idempotency_record;
pub mod points_account;
pub mod points_allocation;
pub mod points_daily_earning;
pub mod points_hold;
pub mod points_lot;
pub mod points_rule;
pub mod points_transaction;
pub mod tenant_settings;
pub mod user_coupon;
