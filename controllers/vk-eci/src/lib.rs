//! The vk-eci operator: Alibaba Cloud ECI as a virtual node of a Kubernetes cluster.
//!
//! The pure decisions (translation, status mapping, planning) live in `vk-eci-core`; this crate
//! is the thin async shell around them. One module per reconciler: [`node_heartbeat`],
//! [`pod_lifecycle`], [`eci_status`], [`orphan_gc`], [`profile`], and [`spot`] (the notice,
//! rotation and eviction controllers); the servers [`kubelet`] and [`webhook`] (with
//! [`tls`]); and [`runtime`], which wires them.

pub mod eci_status;
pub mod kubelet;
pub mod node_heartbeat;
pub mod orphan_gc;
pub mod pod_lifecycle;
pub mod profile;
pub mod runtime;
pub mod spot;
pub mod tls;
pub mod webhook;
