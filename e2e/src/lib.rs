//! Whole-system tests and benchmarks of vk-eci: the `vk-eci` binary run as a process against the
//! local Kubernetes API sandbox (`kube_sandbox`) and the ECI simulator, or against a real control
//! plane. What runs where is listed in `e2e/README.md`.

pub mod bench;
pub mod control_plane;
pub mod followed_logs;
pub mod stack;
