//! Everything the telephony functions share: domain types, configuration, the
//! database, envelope encryption, caller identity, the audit log, the HTTP adapter.
//! Routes live in `functions/<name>`; they stay thin over this crate.

pub mod audit;
pub mod carrier_audit;
pub mod clients;
pub mod config;
pub mod db;
pub mod envelope;
pub mod error;
pub mod http;
pub mod identity;
pub mod ids;
pub mod metrics;
#[cfg(feature = "migrate")]
pub mod migrate;
pub mod rds_iam;
pub mod telemetry;
pub mod tls;

pub use error::ApiError;
pub mod credential;
pub mod numbers;
pub mod offboard;
pub mod providers;
pub mod purchase;
pub mod release;
pub mod rotation;
pub mod routing;
pub mod search;
pub mod steps;
pub mod twilio;
pub mod vapi;

#[cfg(feature = "gateway-event")]
pub mod gateway_event;
