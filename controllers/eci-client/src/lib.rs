//! Alibaba Cloud Elastic Container Instance (ECI) OpenAPI client.
//!
//! - [`sign`]: the v1 (HMAC-SHA1) and V3 (`ACS3-HMAC-SHA256`) request signatures.
//! - [`params`]: the gateway's flat `X.N.Y` parameter form, both directions.
//! - [`types`]: typed requests and responses of every action vk-eci uses.
//! - [`EciClient`]: signing, per-action rate limits, retries with jittered back-off, typed
//!   errors ([`EciError`]). Secrets never reach `Debug` output, errors or logs.
//! - [`redact`]: what an error may not repeat of its request (secrets, env values, files).

pub mod client;
pub mod credentials;
pub mod error;
pub mod params;
pub mod ratelimit;
pub mod redact;
pub mod sign;
pub mod spec;
pub mod types;

pub use client::{
    API_VERSION, CallObserver, EciClient, EciClientConfig, RetryPolicy, SignatureVersion,
    install_crypto_provider,
};
pub use credentials::{Credentials, Secret};
pub use error::EciError;
