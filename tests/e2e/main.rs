//! One integration-test binary. Every suite runs on both backends (see `backend_suite!`).

mod auth;
mod cache;
mod claims;
mod clients;
mod coupons;
mod faults;
mod fixtures;
mod generated;
mod infra;
mod limits;
mod overload;
mod points;
mod replays;
mod schema;
mod server;
mod templates;
mod tls;
mod transport;
