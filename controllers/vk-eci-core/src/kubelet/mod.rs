//! The pure parts of the kubelet API `vk-eci run` serves (HTTPS on `KUBELET_PORT`).
//!
//! - [`logs`]: `/containerLogs` options, the `DescribeContainerLog` calls that answer them,
//!   follow by polling with de-duplication.
//! - [`budget`]: sharing an ECI per-minute call limit, and the metric refresh interval it
//!   allows.
//! - [`stats`]: the per-pod metric cache rendered as `/metrics/resource` and `/stats/summary`.
//! - [`exec`]: exec and attach requests, protocol negotiation, the error stream.
//! - [`spdy`]: the SPDY/3.1 frame codec of exec and attach streams.
//! - [`authz`]: the kubelet's webhook authorization attributes and the client certificate's
//!   identity.

pub mod authz;
pub mod budget;
pub mod exec;
pub mod logs;
pub mod spdy;
pub mod stats;
