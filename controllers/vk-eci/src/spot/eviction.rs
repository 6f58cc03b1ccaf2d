//! The eviction controller, the only component that evicts. It drains the doomed pod of an
//! `Evict` rotation (`Draining`) or a `Degraded` one through the Eviction API (policy/v1, with
//! the pod's UID as precondition), so PodDisruptionBudgets and the grace period are honoured.
//! A refusal (429) is retried with jittered back-off until waiting longer would leave less
//! than the grace period before the release; then, per the policy's `onDeadline`, the pod is
//! deleted with the grace that still fits (`Delete`, the default: SIGTERM always comes before
//! the instance vanishes) or left (`Leave`, recorded). Progress is in the rotation's status.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    DeleteOptions, ObjectMeta, Preconditions, Status,
};
use kube::api::{Api, DeleteParams, Patch, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use rand::Rng;
use serde_json::json;
use tracing::{info, warn};
use vk_eci_core::cache::CachedPod;
use vk_eci_core::crd::{SpotRotation, Strategy};
use vk_eci_core::rotation::SCALE_DOWN_WAIT;
use vk_eci_core::spot::{EvictionStep, OnDeadline, Phase, eviction_step};
use vk_eci_core::status::kube_time;
use vk_eci_core::time;

use super::{Error, SpotContext, to_chrono, until};
use crate::runtime::context::patch_params;

const CONTROLLER: &str = "spot-eviction";

enum Guard {
    Version,
    None,
}

/// Whether the eviction controller owns the rotation's doomed pod now; `Err(at)` when it
/// will at `at` unless the pod goes first.
fn evicting(
    rotation: &SpotRotation,
    now: chrono::DateTime<Utc>,
) -> Result<bool, chrono::DateTime<Utc>> {
    if rotation.metadata.deletion_timestamp.is_some() {
        // Being deleted: its surge is being taken back, and nobody rotates the pod any more.
        return Ok(false);
    }
    let status = rotation.status.clone().unwrap_or_default();
    match status.phase {
        Some(Phase::Degraded) => Ok(status.pod_gone_at.is_none()),
        Some(Phase::Draining) if rotation.spec.strategy == Strategy::Evict => Ok(true),
        Some(Phase::Draining) => match status.scaled_down_at.as_ref().map(to_chrono) {
            Some(at) if now >= time::add(at, SCALE_DOWN_WAIT) => Ok(true),
            Some(at) => Err(time::add(at, SCALE_DOWN_WAIT)),
            None => Ok(false),
        },
        _ => Ok(false),
    }
}

/// Jittered, growing pause between refused evictions: 1 s doubling to 8 s, times 0.5–1.
fn backoff(refusals: i32) -> TimeDelta {
    let base = 1_000i64 << refusals.clamp(0, 3);
    let jitter = rand::rng().random_range(0.5..=1.0);
    TimeDelta::milliseconds((base as f64 * jitter) as i64)
}

async fn evict(spot: &SpotContext, rotation: &SpotRotation) -> Result<Action, Error> {
    let ctx = &spot.ctx;
    match evicting(rotation, Utc::now()) {
        Ok(true) => {}
        Ok(false) => return Ok(Action::await_change()),
        Err(at) => return Ok(Action::requeue(until(at, Utc::now()))),
    }
    let Some(pod) = spot
        .doomed_pod(rotation)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    else {
        // Gone or going: the rotation controller records it.
        return Ok(Action::await_change());
    };
    let now = Utc::now();
    let status = rotation.status.clone().unwrap_or_default();
    let deadlines = spot.deadlines(rotation, Some(&pod));
    let on_deadline = spot
        .policy_of(rotation)
        .map(|p| p.spec.on_deadline)
        .unwrap_or_default();
    let refusals = status.eviction_refusals.unwrap_or(0);
    let step = eviction_step(
        &deadlines,
        now,
        status.last_refusal_at.as_ref().map(to_chrono),
        backoff(refusals.saturating_sub(1)),
        on_deadline,
    );
    let namespace = pod.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    match step {
        EvictionStep::Evict => {
            let eviction = Eviction {
                metadata: ObjectMeta {
                    name: Some(pod.name_any()),
                    namespace: Some(namespace.clone()),
                    ..ObjectMeta::default()
                },
                delete_options: Some(DeleteOptions {
                    preconditions: Some(Preconditions {
                        uid: pod.uid(),
                        resource_version: None,
                    }),
                    ..DeleteOptions::default()
                }),
            };
            ctx.leadership.ensure()?;
            let result = pods
                .create_subresource::<_, Status>(
                    "eviction",
                    &pod.name_any(),
                    &PostParams::default(),
                    &eviction,
                )
                .await;
            match result {
                Ok(_) => {
                    info!(pod = %pod.name_any(), "evicted ahead of the spot release");
                    ctx.metrics
                        .evictions
                        .get_or_create(&crate::runtime::metrics::ResultLabels { result: "evicted" })
                        .inc();
                    let message = format!(
                        "evicted through the Eviction API ahead of the spot release at {}",
                        deadlines.release_at.to_rfc3339()
                    );
                    record(
                        spot,
                        rotation,
                        &pod,
                        EventType::Normal,
                        "SpotEvicted",
                        message,
                        "evictedAt",
                        now,
                    )
                    .await
                }
                Err(kube::Error::Api(error)) if error.code == 429 || error.code == 500 => {
                    let (result, reason) = if error.code == 429 {
                        ("blocked", "SpotEvictionBlocked")
                    } else {
                        ("error", "SpotEvictionFailed")
                    };
                    ctx.metrics
                        .evictions
                        .get_or_create(&crate::runtime::metrics::ResultLabels { result })
                        .inc();
                    note(
                        spot,
                        &pod,
                        EventType::Warning,
                        reason,
                        format!(
                            "{}; retrying until {}, then {}",
                            error.message,
                            deadlines.escalate_at.to_rfc3339(),
                            match on_deadline {
                                OnDeadline::Delete =>
                                    "deleting with the grace period that still fits",
                                OnDeadline::Leave =>
                                    "leaving it to the release (onDeadline: Leave)",
                            }
                        ),
                    )
                    .await;
                    write(
                        spot,
                        rotation,
                        Guard::Version,
                        json!({
                            "evictionRefusals": refusals.saturating_add(1),
                            "lastRefusalAt": kube_time(now),
                        }),
                    )
                    .await?;
                    let retry = time::add(now, backoff(refusals)).min(deadlines.escalate_at);
                    Ok(Action::requeue(until(retry, now)))
                }
                Err(kube::Error::Api(error)) if error.code == 404 || error.code == 409 => {
                    ctx.metrics
                        .evictions
                        .get_or_create(&crate::runtime::metrics::ResultLabels { result: "gone" })
                        .inc();
                    Ok(Action::await_change())
                }
                Err(error) => Err(error.into()),
            }
        }
        EvictionStep::RetryAt(at) => Ok(Action::requeue(until(at, now))),
        EvictionStep::Escalate { grace_seconds } => {
            let params = DeleteParams {
                grace_period_seconds: Some(u32::try_from(grace_seconds.max(0)).unwrap_or(u32::MAX)),
                preconditions: Some(kube::api::Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            ctx.leadership.ensure()?;
            match pods.delete(&pod.name_any(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(error)) if error.code == 404 || error.code == 409 => {
                    return Ok(Action::await_change());
                }
                Err(error) => return Err(error.into()),
            }
            warn!(pod = %pod.name_any(), grace_seconds, "eviction could not finish in time; deleted");
            ctx.metrics.escalations.inc();
            let message = format!(
                "eviction did not go through in time; deleted with a {grace_seconds}s grace period so the application gets SIGTERM before the release at {}",
                deadlines.release_at.to_rfc3339()
            );
            record(
                spot,
                rotation,
                &pod,
                EventType::Warning,
                "SpotEvictionEscalated",
                message,
                "escalatedAt",
                now,
            )
            .await
        }
        EvictionStep::Leave => {
            if status.escalated_at.is_none() {
                note(spot, &pod, EventType::Warning, "SpotDeadlineLeft", format!(
                    "eviction did not go through in time; left running per onDeadline: Leave until the release at {}",
                    deadlines.release_at.to_rfc3339()
                ))
                .await;
                write(spot, rotation, Guard::None, json!({ "escalatedAt": kube_time(now), "message": "deadline passed; left per policy" })).await?;
            }
            Ok(Action::await_change())
        }
    }
}

/// What just happened to the doomed pod: an Event on it and its time in the rotation's
/// status (`field`).
#[allow(clippy::too_many_arguments)]
async fn record(
    spot: &SpotContext,
    rotation: &SpotRotation,
    pod: &CachedPod,
    kind: EventType,
    reason: &str,
    message: String,
    field: &str,
    at: chrono::DateTime<Utc>,
) -> Result<Action, Error> {
    note(spot, pod, kind, reason, message).await;
    write(spot, rotation, Guard::None, json!({ field: kube_time(at) })).await?;
    Ok(Action::await_change())
}

/// A status merge patch of fields only this controller writes. `Guard::Version` for
/// read-modify-writes (the refusal count); a timestamp of what just happened is recorded
/// whatever else changed meanwhile.
async fn write(
    spot: &SpotContext,
    rotation: &SpotRotation,
    guard: Guard,
    status: serde_json::Value,
) -> Result<(), Error> {
    let patch = match guard {
        Guard::Version => json!({
            "metadata": { "resourceVersion": rotation.resource_version() },
            "status": status,
        }),
        Guard::None => json!({ "status": status }),
    };
    Api::<SpotRotation>::namespaced(
        spot.ctx.client.clone(),
        &rotation.namespace().unwrap_or_default(),
    )
    .patch_status(&rotation.name_any(), &patch_params(), &Patch::Merge(&patch))
    .await?;
    Ok(())
}

async fn note(spot: &SpotContext, pod: &CachedPod, kind: EventType, reason: &str, message: String) {
    let event = Event {
        type_: kind,
        reason: reason.into(),
        note: Some(message),
        action: "Evict".into(),
        secondary: None,
    };
    spot.ctx.publish(&event, &pod.object_ref(&())).await;
}

async fn reconcile(rotation: Arc<SpotRotation>, spot: Arc<SpotContext>) -> Result<Action, Error> {
    crate::runtime::reconcile::as_leader(&spot.ctx, CONTROLLER, evict(&spot, &rotation)).await
}

fn error_policy(rotation: Arc<SpotRotation>, error: &Error, _spot: Arc<SpotContext>) -> Action {
    warn!(rotation = %rotation.name_any(), %error, "eviction reconcile failed; retrying");
    Action::requeue(Duration::from_millis(500))
}

/// Runs over the shared rotation stream; a change of a doomed pod wakes its rotation.
pub async fn run(
    spot: Arc<SpotContext>,
    stream: impl futures::Stream<Item = Arc<SpotRotation>> + Send + 'static,
    pods: impl futures::Stream<Item = Arc<CachedPod>> + Send + 'static,
    became_leader: impl futures::Stream<Item = ()> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let store = spot.rotations.clone();
    Controller::for_shared_stream(stream, store)
        .watches_shared_stream(pods, super::rotation_of)
        .reconcile_all_on(became_leader)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, spot)
        .for_each(|_| futures::future::ready(()))
        .await;
}
