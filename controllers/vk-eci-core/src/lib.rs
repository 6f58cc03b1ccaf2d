//! The pure logic of vk-eci, with no IO: it is what the controllers call and what unit tests
//! pin down.
//!
//! - [`admission`]: the admission webhook's decision: which new pods go to ECI, as a JSON patch.
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

pub mod admission;
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

/// A hash that stays the same across builds, platforms and Rust versions (FNV-1a, 64 bits),
/// for names and label values derived from other names.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stable_hash_is_fnv1a() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(super::stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
