//! Applying one step: the new status first (the intent, guarded by the resourceVersion the
//! step was computed from, so a step from a stale cache writes nothing), then what it means
//! for the record (Events, outcome metrics), then the changes to the world in order, stopping
//! at the first that fails: the next step sees what is missing and asks for it again.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;
use vk_eci_core::crd::{SpotRotation, TAKE_BACK_FINALIZER};
use vk_eci_core::rotation::{Effect, Seen, Step};
use vk_eci_core::spot::Phase;

use super::observe::DELETION_COST;
use super::{Rotations, reference};
use crate::runtime::context::patch_params;
use crate::spot::{Error, to_chrono, workload};

/// Applies `step` to `rotation`; returns whether the rotation is gone (its last finalizer
/// removed while it was being deleted).
pub(super) async fn apply(
    rotations: &Rotations,
    rotation: &SpotRotation,
    step: &Step,
    seen: &Seen,
) -> Result<bool, Error> {
    let spot = &rotations.spot;
    let ctx = &spot.ctx;
    let client = &ctx.client;
    let namespace = rotation.namespace().unwrap_or_default();
    let mut current = rotation.clone();
    let before = rotation.status.clone().unwrap_or_default();
    if rotation.status.is_none() || before != step.status {
        let patch = json!({
            "metadata": { "resourceVersion": rotation.resource_version() },
            "status": step.status,
        });
        let written = Api::<SpotRotation>::namespaced(client.clone(), &namespace)
            .patch_status(&rotation.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await?;
        rotations.remember(&current, written.clone());
        current = written;
        observe_latencies(rotations, rotation, &before, step);
    }
    for effect in &step.effects {
        match effect {
            Effect::Transition { phase, message } => {
                publish(rotations, rotation, *phase, message).await;
            }
            Effect::Finished {
                outcome,
                before_release,
            } => ctx.metrics.rotation_finished(*outcome, *before_release),
            _ => {}
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let holder = rotation.name_any();
    for effect in &step.effects {
        match effect {
            Effect::AddFinalizer | Effect::RemoveFinalizer => {
                let mut finalizers: Vec<String> = current
                    .finalizers()
                    .iter()
                    .filter(|f| *f != TAKE_BACK_FINALIZER)
                    .cloned()
                    .collect();
                if *effect == Effect::AddFinalizer {
                    finalizers.push(TAKE_BACK_FINALIZER.into());
                }
                let patch = json!({
                    "metadata": {
                        "resourceVersion": current.resource_version(),
                        "finalizers": finalizers,
                    }
                });
                let api = Api::<SpotRotation>::namespaced(client.clone(), &namespace);
                let written = api
                    .patch(&holder, &patch_params(), &Patch::Merge(&patch))
                    .await?;
                if *effect == Effect::RemoveFinalizer && seen.deleting {
                    info!(rotation = %holder, "surge taken back; the rotation can go");
                    return Ok(true);
                }
                rotations.remember(&current, written.clone());
                current = written;
            }
            Effect::SetDeletionCost(cost) => {
                let patch = json!({
                    "metadata": {
                        "uid": rotation.spec.pod.uid,
                        "annotations": { DELETION_COST: cost.to_string() },
                    }
                });
                match pods
                    .patch(
                        &rotation.spec.pod.name,
                        &patch_params(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                    Err(error) => return Err(error.into()),
                }
            }
            Effect::HoldHpa { name, floor } => {
                ctx.leadership.ensure()?;
                workload::hold_hpa(client, &namespace, name, &holder, *floor).await?;
            }
            Effect::ReleaseHpa { name, floor } => {
                ctx.leadership.ensure()?;
                workload::release_hpa(client, &namespace, name, &holder, *floor).await?;
            }
            Effect::Scale { from, to } => {
                let Some(target) = &rotation.spec.workload else {
                    continue;
                };
                ctx.leadership.ensure()?;
                let wrote = workload::scale_from_to(client, &namespace, target, *from, *to).await?;
                info!(rotation = %holder, workload = %target.name, from, to, wrote, "scaled");
            }
            Effect::Transition { .. } | Effect::Finished { .. } => {}
        }
    }
    Ok(false)
}

fn observe_latencies(
    rotations: &Rotations,
    rotation: &SpotRotation,
    before: &vk_eci_core::crd::SpotRotationStatus,
    step: &Step,
) {
    let metrics = &rotations.spot.ctx.metrics;
    let noticed = to_chrono(&rotation.spec.noticed_at);
    let seconds = |at: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
        (to_chrono(at) - noticed).num_milliseconds() as f64 / 1000.0
    };
    if before.replacement_ready_at.is_none()
        && let Some(at) = &step.status.replacement_ready_at
    {
        metrics.notice_to_replacement_ready.observe(seconds(at));
    }
    if before.pod_gone_at.is_none()
        && let Some(at) = &step.status.pod_gone_at
    {
        metrics.notice_to_pod_gone.observe(seconds(at));
    }
}

/// An Event on the rotation and on its policy.
async fn publish(rotations: &Rotations, rotation: &SpotRotation, phase: Phase, message: &str) {
    let kind = if matches!(phase, Phase::Degraded | Phase::Failed) {
        EventType::Warning
    } else {
        EventType::Normal
    };
    let event = Event {
        type_: kind,
        reason: format!("Rotation{phase:?}"),
        note: Some(format!("{}: {message}", rotation.spec.pod.name)),
        action: "Rotate".into(),
        secondary: None,
    };
    let spot = &rotations.spot;
    let ctx = &spot.ctx;
    ctx.publish(&event, &reference(rotation)).await;
    if let Some(policy) = spot.policy_of(rotation) {
        ctx.publish(&event, &policy.object_ref(&())).await;
    }
}
