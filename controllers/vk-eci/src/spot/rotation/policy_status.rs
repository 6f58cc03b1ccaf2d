//! The policy's status (counts, condition, last rotation) aggregated from its rotations, and
//! its history limit: finished rotations beyond it are deleted, but only once they have
//! nothing left to take back.

use std::sync::Arc;

use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch};
use serde_json::json;
use vk_eci_core::crd::{SpotRotation, SpotRotationPolicy};
use vk_eci_core::rotation::{finished, holds_surge, phase_of};
use vk_eci_core::spot::{Phase, PolicySettings};
use vk_eci_core::status::kube_time;

use super::Rotations;
use crate::runtime::context::patch_params;
use crate::spot::{Error, to_chrono};

/// Aggregates the policy's rotations into its status, and prunes finished ones beyond
/// its history limit.
pub(super) async fn update(rotations_of: &Rotations, rotation: &SpotRotation) -> Result<(), Error> {
    let Some(policy) = rotations_of.spot.policy_of(rotation) else {
        return Ok(());
    };
    let namespace = policy.namespace().unwrap_or_default();
    let mut rotations: Vec<Arc<SpotRotation>> = rotations_of
        .all_fresh()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|r| r.spec.policy.as_deref() == Some(policy.name_any().as_str()))
        .collect();
    // The cache may not show this rotation's newest phase yet.
    if let Some(slot) = rotations
        .iter_mut()
        .find(|r| r.name_any() == rotation.name_any())
    {
        *slot = Arc::new(rotation.clone());
    }
    let phase = |r: &SpotRotation| phase_of(&r.status.clone().unwrap_or_default());
    let count = |p: Phase| rotations.iter().filter(|r| phase(r) == p).count() as i32;
    let active = rotations
        .iter()
        .filter(|r| !finished(&r.status.clone().unwrap_or_default()))
        .count() as i32;
    let last = rotations
        .iter()
        .map(|r| to_chrono(&r.spec.noticed_at))
        .max()
        .map(kube_time);
    let troubled = count(Phase::Failed) + count(Phase::Degraded);
    let condition = Condition {
        type_: "RotationsHealthy".into(),
        status: if troubled == 0 { "True" } else { "False" }.into(),
        reason: if troubled == 0 {
            "AllRotated".into()
        } else {
            "SomeDegradedOrFailed".into()
        },
        message: format!(
            "{} completed, {} degraded, {} failed",
            count(Phase::Completed),
            count(Phase::Degraded),
            count(Phase::Failed)
        ),
        last_transition_time: policy
            .status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "RotationsHealthy")
                    .filter(|c| (c.status == "True") == (troubled == 0))
                    .map(|c| c.last_transition_time.clone())
            })
            .unwrap_or_else(|| kube_time(Utc::now())),
        observed_generation: policy.metadata.generation,
    };
    let patch = json!({
        "status": {
            "observedGeneration": policy.metadata.generation,
            "active": active,
            "completed": count(Phase::Completed),
            "degraded": count(Phase::Degraded),
            "failed": count(Phase::Failed),
            "lastRotationTime": last,
            "conditions": [condition],
        }
    });
    let policies: Api<SpotRotationPolicy> =
        Api::namespaced(rotations_of.spot.ctx.client.clone(), &namespace);
    policies
        .patch_status(&policy.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;

    let keep = usize::try_from(PolicySettings::of(&policy.spec).history_limit).unwrap_or(0);
    // Only rotations with nothing left to take back; the others are pruned once they are done.
    let mut done: Vec<&Arc<SpotRotation>> = rotations
        .iter()
        .filter(|r| {
            r.status
                .as_ref()
                .is_some_and(|s| finished(s) && !holds_surge(s))
        })
        .collect();
    done.sort_by_key(|r| std::cmp::Reverse(to_chrono(&r.spec.noticed_at)));
    let api: Api<SpotRotation> = Api::namespaced(rotations_of.spot.ctx.client.clone(), &namespace);
    for old in done.into_iter().skip(keep) {
        match api.delete(&old.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
