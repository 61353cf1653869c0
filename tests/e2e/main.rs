//! One integration-test binary. Every suite runs on both backends (see `backend_suite!`).

mod auth;
mod bounds;
mod cache;
mod claims;
mod clients;
mod coupons;
mod faults;
mod fixtures;
mod frames;
mod generated;
mod infra;
mod isolation;
mod limits;
mod overload;
mod permissions;
mod plans;
mod points;
mod replays;
mod request_ids;
mod retention;
mod rpcs;
mod schema;
mod server;
mod templates;
mod tls;
mod transport;
