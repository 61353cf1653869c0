//! The marketing gRPC server: configuration, telemetry, the tonic adapters, the wire format
//! they and the use cases share, and the use cases behind them. `run` starts it the same way for the binary and for the tests.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod error;
pub mod grpc;
pub mod observability;
mod server;
pub mod telemetry;
pub mod transport;
pub mod wire;

pub use config::Config;
pub use server::{Server, run};
