//! Alibaba Cloud Elastic Container Instance (ECI) OpenAPI client.
//!
//! - [`sign`]: the v1 (HMAC-SHA1) and V3 (`ACS3-HMAC-SHA256`) request signatures.
//! - [`action`]: the actions vk-eci calls, each request type's name and response type (the
//!   types themselves are in [`eci_types::wire`]).
//! - [`EciClient`]: signing, per-action rate limits, retries with jittered back-off, typed
//!   errors ([`EciError`], classified by [`eci_types::EciFailure`]). Secrets never reach
//!   `Debug` output, errors or logs.
//! - [`redact`]: what an error may not repeat of its request (secrets, env values, files).

pub mod action;
pub mod client;
pub mod credentials;
pub mod error;
pub mod ratelimit;
pub mod redact;
pub mod sign;

pub use client::{
    API_VERSION, CallObserver, EciClient, EciClientConfig, RetryPolicy, SignatureVersion,
    install_crypto_provider,
};
pub use credentials::{Credentials, Secret};
pub use error::EciError;
