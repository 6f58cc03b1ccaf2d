//! What the ECI client, the simulator and the core share of the ECI OpenAPI, without IO.
//!
//! - [`wire`]: typed requests and responses of every action the simulator serves.
//! - [`params`]: the gateway's flat `X.N.Y` parameter form, both directions.
//! - [`spec`]: the vCPU/memory pairs ECI sells, and rounding a request up to one.
//! - [`error`]: the gateway's error codes, classified ([`EciFailure`]).

pub mod error;
pub mod params;
pub mod spec;
pub mod wire;

pub use error::EciFailure;
