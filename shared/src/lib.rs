//! Code both services use and nothing service-specific: generated proto types, typed config
//! loading, SQLite (open, migrations, the writer thread), ESC/POS code pages, shutdown,
//! systemd notify, backoff, logging, metrics and traces (`telemetry`, `traces`) and the gRPC
//! health/reflection plumbing; the one money type (`money`), checked time conversions (`time`)
//! and the order rules both services enforce (`validate`).
//!
//! Must never: know Wix JSON, know receipt layouts, or open another service's database.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod auth;
pub mod backoff;
pub mod breaker;
pub mod bus;
pub mod cli;
pub mod codepage;
mod codepage_tables;
pub mod config;
pub mod connectivity;
pub mod db;
pub mod failure;
pub mod fatal;
pub mod grpc;
pub mod healing;
pub mod health;
pub mod logging;
pub mod money;
pub mod notify;
pub mod otlp_http;
pub mod proto;
pub mod ratelimit;
pub mod retention;
pub mod shutdown;
pub mod telemetry;
pub mod time;
pub mod traces;
pub mod validate;
pub mod watchdog;
pub mod zmtp;

/// Version string both services report in `GetStatus`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
