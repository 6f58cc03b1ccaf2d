//! The pure logic of vk-eci, with no IO: it is what the controllers call and what unit tests
//! pin down.
//!
//! - [`cache`]: what the shared pod cache keeps of each pod.
//! - [`crd`]: the `SpotRotationPolicy` and `SpotRotation` custom resources.
//! - [`annotations`]: the `k8s.aliyun.com/*` pod annotations, parsed and validated.
//! - [`translate`]: Pod → CreateContainerGroup request, or a reasoned refusal.
//! - [`status`]: ECI container group → pod status; spot release notices; event dedup.
//! - [`spot`]: release deadlines, eviction escalation, storm planning, rotation phases.
//! - [`rotation`]: one step of a spot rotation, as a pure function of what was observed.
//! - [`lifecycle`]: create failures, status-sync pacing, ECI events as pod Events.
//! - [`ownership`]: which container group is whose: orphans, lost and foreign instances,
//!   adoption on a retried create.
//! - [`kubelet`]: the kubelet API's logs, metrics, call budgets and authorization, pure.
//! - [`node`]: the virtual Node (labels, taint, status) and its Lease.
//! - [`profile`]: the `eci-profile` ConfigMap: network defaults, selectors, effects.
//! - [`settings`]: the settings of `vk-eci run`, validated, with the reference names.
//! - [`quantity`]: Kubernetes quantities as numbers.
//! - [`time`]: time arithmetic that saturates instead of panicking (user input meets it).

pub mod annotations;
pub mod cache;
pub mod crd;
pub mod kubelet;
pub mod lifecycle;
pub mod node;
pub mod ownership;
pub mod profile;
pub mod quantity;
pub mod rotation;
pub mod settings;
pub mod spot;
pub mod status;
pub mod time;
pub mod translate;
