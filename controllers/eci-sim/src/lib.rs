//! A local simulator of Alibaba Cloud Elastic Container Instance (ECI).
//!
//! It speaks the real RPC protocol (both signature styles, the same JSON shapes, error codes
//! and HTTP statuses), so the real ECI client, and Alibaba's own SDKs, work against it
//! unchanged. Behind the protocol: a seeded, clock-driven region with zones, vSwitch CIDRs,
//! stock, the ECI lifecycle, spot releases, per-action throttling and injectable faults.
//! An admin API under `/_sim/` triggers spot releases, sets stock and faults, and reports stats.

pub mod actions;
pub mod auth;
pub mod commands;
pub mod config;
pub mod error;
pub mod render;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod validate;
pub mod xml;

pub use config::{CredentialConfig, FaultConfig, MillisRange, SimConfig, TimingConfig};
pub use server::{
    AppendLogRequest, CreatedGroup, DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, FaultRequest,
    RunningSimulator, Simulator, SpotReleaseRequest, StockView,
};
pub use state::behaviour_env;
