//! Storage of the marketing service on PostgreSQL or SQLite through SeaORM: connecting and
//! migrating, one classification of database errors, and tenant-scoped repositories whose
//! functions take any `ConnectionTrait`, so they run on the pool or inside a transaction.
#![forbid(unsafe_code)]

mod cart_terms;
pub mod clients;
pub mod codes;
mod db;
pub mod entity;
pub mod events;
pub mod idempotency;
pub mod points;
pub mod reminders;
pub mod settings;
pub mod templates;
pub mod unit;
pub mod user_coupons;

pub use db::{Backend, Database, DbFailure, classify, db_error, insert_rows};
