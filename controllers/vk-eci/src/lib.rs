//! The vk-eci operator: Alibaba Cloud ECI as a virtual node of a Kubernetes cluster.
//!
//! The pure decisions (translation, status mapping, planning) live in `vk-eci-core`; this crate
//! is the thin async shell around them: the informer cache, the controllers, leader election,
//! metrics and the command line.

pub mod admin;
pub mod context;
pub mod eci_status;
pub mod fanout;
pub mod heartbeat;
pub mod kubelet;
pub mod leader;
pub mod liveness;
pub mod metrics;
pub mod operator;
pub mod orphan_gc;
pub mod pod_lifecycle;
pub mod profile;
pub mod reconcile;
pub mod spot;
pub mod tls;
pub mod webhook;
