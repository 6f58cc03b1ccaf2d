//! Spot release handling. Three reconcilers that coordinate only through objects:
//!
//! - [`notice`]: a pod whose instance ECI will reclaim (`ContainerInstanceExpired=True`) gets a
//!   `SpotRotation`, when a `SpotRotationPolicy` covers it or it asks for `api-evict`;
//! - [`rotation`]: the policy controller. Surge rotations scale the workload up, wait for the
//!   replacement to be Ready, then scale down so the ReplicaSet removes the doomed pod; a
//!   replacement that is not Ready in time makes the rotation `Degraded`. Every step is the
//!   pure [`vk_eci_core::rotation::step`], checked against the world on the next reconcile;
//!   a finalizer takes the surge back before a rotation goes. It keeps the phases and the
//!   policy status;
//! - [`eviction`]: the only component that evicts. It drains `Evict` rotations and `Degraded`
//!   ones through the Eviction API and escalates to a delete that still fits the grace period
//!   before the release.
//!
//! All progress is in the `SpotRotation` status, so a new leader resumes where the old one was.

pub mod eviction;
pub mod notice;
pub mod rotation;
mod workload;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use vk_eci_core::cache::CachedPod;
use vk_eci_core::crd::{SpotRotation, SpotRotationPolicy};
use vk_eci_core::spot::{DEFAULT_GRACE_SECONDS, DEFAULT_MARGIN, Deadlines, PolicySettings};
use vk_eci_core::time;

use crate::runtime::context::Context;

/// The label that names a rotation's policy (for listing and pruning).
pub const POLICY_LABEL: &str = "spot.vk-eci.io/policy";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    NotLeader(#[from] crate::runtime::leader::NotLeader),
    #[error(transparent)]
    Timeout(#[from] crate::runtime::reconcile::ReconcileTimeout),
}

/// What the spot reconcilers share.
pub struct SpotContext {
    pub ctx: Arc<Context>,
    pub rotations: Store<SpotRotation>,
    pub policies: Store<SpotRotationPolicy>,
}

impl SpotContext {
    /// Waits until the rotation and policy caches have their first full list: before, a
    /// missing policy or rotation may only not be listed yet (design §8a).
    pub(crate) async fn synced(&self) {
        let (rotations, policies) = futures::join!(
            self.rotations.wait_until_ready(),
            self.policies.wait_until_ready()
        );
        if rotations.is_err() || policies.is_err() {
            // A dropped writer means the operator is stopping; its reconcilers with it.
            futures::future::pending::<()>().await;
        }
    }

    /// The doomed pod of a rotation, if it still exists (the same pod: same UID).
    fn doomed_pod(&self, rotation: &SpotRotation) -> Option<Arc<CachedPod>> {
        let namespace = rotation.namespace().unwrap_or_default();
        self.ctx
            .pods
            .get(&ObjectRef::new(&rotation.spec.pod.name).within(&namespace))
            .filter(|pod| pod.uid().as_deref() == Some(rotation.spec.pod.uid.as_str()))
    }

    fn policy_of(&self, rotation: &SpotRotation) -> Option<Arc<SpotRotationPolicy>> {
        let name = rotation.spec.policy.as_deref()?;
        self.policies
            .get(&ObjectRef::new(name).within(&rotation.namespace().unwrap_or_default()))
    }

    /// The rotation's deadlines: its margin (from the policy) and the pod's grace period.
    fn deadlines(&self, rotation: &SpotRotation, pod: Option<&CachedPod>) -> Deadlines {
        let margin = self
            .policy_of(rotation)
            .map_or(DEFAULT_MARGIN, |p| PolicySettings::of(&p.spec).margin);
        let grace = pod
            .and_then(|p| p.spec.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        Deadlines::new(
            to_chrono(&rotation.spec.noticed_at),
            to_chrono(&rotation.spec.release_at),
            margin,
            grace,
        )
    }
}

/// The rotation a pod change concerns: the one of the pod itself (named from its UID).
fn rotation_of(pod: Arc<CachedPod>) -> Option<ObjectRef<SpotRotation>> {
    let namespace = pod.namespace().unwrap_or_default();
    pod.uid()
        .map(|uid| ObjectRef::new(&vk_eci_core::crd::rotation_name(&uid)).within(&namespace))
}

pub(crate) fn to_chrono(
    time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> DateTime<Utc> {
    DateTime::from_timestamp(time.0.as_second(), 0).unwrap_or_default()
}

/// A pause until `at` (at least a little, so a requeue never spins).
fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> std::time::Duration {
    time::to_std(
        at.signed_duration_since(now)
            .max(TimeDelta::milliseconds(200)),
    )
}
