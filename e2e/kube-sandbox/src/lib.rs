//! A local Kubernetes API sandbox: an in-memory API server that kube-rs and kubectl talk to
//! over plain HTTP, so the whole `vk-eci` binary can be tested on a machine with no cluster.
//! What it does and does not do is listed in `e2e/README.md`.

pub mod access;
pub mod admission;
pub mod cluster;
pub mod defaults;
pub mod disruption;
pub mod faults;
pub mod kubelet_proxy;
pub mod metrics_api;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod server;
pub mod store;
pub mod strategy;
pub mod subresources;
pub mod tables;

pub use faults::{Effect, Fault, FaultId, FaultSpec, Faults, InjectedFault};
pub use server::{Access, RunningSandbox, Sandbox, kubeconfig};
