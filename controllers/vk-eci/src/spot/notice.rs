//! A spot notice on a pod becomes its `SpotRotation` (named from the pod UID, so duplicate
//! notices, retries and a second leader all land on the one object). Pods covered by a policy
//! take the policy's strategy; uncovered pods that ask for `api-evict` get an `Evict` rotation
//! with no policy; others are left to ECI, as on Alibaba's own virtual node. One owner per pod.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};
use vk_eci_core::annotations::{RELEASE_STRATEGY_API_EVICT, SPOT_RELEASE_STRATEGY};
use vk_eci_core::cache::CachedPod;
use vk_eci_core::crd::{
    NODE_LABEL, PodRef, SpotRotation, SpotRotationSpec, Strategy, TAKE_BACK_FINALIZER,
    WorkloadKind, node_label_value, rotation_name,
};
use vk_eci_core::spot::{DEFAULT_MARGIN, PolicySettings, policy_covers};
use vk_eci_core::status::{kube_time, pod_notice};
use vk_eci_core::time;

use super::{Error, POLICY_LABEL, SpotContext, workload};

const CONTROLLER: &str = "spot-notice";

async fn reconcile(pod: Arc<CachedPod>, spot: Arc<SpotContext>) -> Result<Action, Error> {
    crate::runtime::reconcile::as_leader(&spot.ctx, CONTROLLER, notice(&pod, &spot)).await
}

/// Gives a pod ECI will reclaim its `SpotRotation`, if a policy or its annotation asks.
async fn notice(pod: &CachedPod, spot: &SpotContext) -> Result<Action, Error> {
    let ctx = &spot.ctx;
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Decided from the pod alone: a pod without a notice (nearly all of them) is done at once
    // instead of holding a reconcile until the caches below have synced.
    let Some((noticed_at, release_at)) = pod_notice(pod) else {
        return Ok(Action::await_change());
    };
    // Before the policies are listed, a covered pod would look uncovered: an Evict rotation
    // (named from the pod, so never corrected) or none at all.
    spot.synced().await;
    let uid = pod.uid().unwrap_or_default();
    let namespace = pod.namespace().unwrap_or_default();
    let name = rotation_name(&uid);
    if spot
        .rotations
        .get(&ObjectRef::new(&name).within(&namespace))
        .is_some()
    {
        return Ok(Action::await_change());
    }
    let workload = workload::of_pod(&ctx.client, pod).await?;
    let policy = spot
        .policies
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .find(|p| policy_covers(&p.spec, pod.labels(), workload.as_ref()));
    let api_evict = pod
        .annotations()
        .get(SPOT_RELEASE_STRATEGY)
        .is_some_and(|v| v.trim() == RELEASE_STRATEGY_API_EVICT);
    let settings = policy.as_ref().map(|p| PolicySettings::of(&p.spec));
    let (strategy, margin) = match (&policy, &settings) {
        (Some(policy), Some(settings)) => (policy.spec.strategy, settings.margin),
        _ if api_evict => (Strategy::Evict, DEFAULT_MARGIN),
        _ => return Ok(Action::await_change()),
    };
    // Only Deployments and ReplicaSets can surge: a StatefulSet's pods have fixed identities.
    let surgeable = workload
        .as_ref()
        .is_some_and(|w| w.kind != WorkloadKind::StatefulSet);
    // `maxSurge: 0` is rotation by eviction.
    let no_surge = settings.as_ref().is_some_and(|s| s.max_surge.is_zero());
    let strategy = if surgeable && !no_surge {
        strategy
    } else {
        Strategy::Evict
    };
    let rotation = SpotRotation {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(
                [(
                    NODE_LABEL.to_string(),
                    node_label_value(&ctx.settings.node_name),
                )]
                .into_iter()
                .chain(
                    policy
                        .as_ref()
                        .map(|p| (POLICY_LABEL.to_string(), p.name_any())),
                )
                .collect(),
            ),
            owner_references: policy.as_ref().map(|p| {
                vec![OwnerReference {
                    api_version: "spot.vk-eci.io/v1alpha1".into(),
                    kind: "SpotRotationPolicy".into(),
                    name: p.name_any(),
                    uid: p.uid().unwrap_or_default(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            // A surge is taken back before the rotation goes.
            finalizers: (strategy == Strategy::Surge).then(|| vec![TAKE_BACK_FINALIZER.into()]),
            ..ObjectMeta::default()
        },
        spec: SpotRotationSpec {
            policy: policy.as_ref().map(|p| p.name_any()),
            pod: PodRef {
                name: pod.name_any(),
                uid,
            },
            workload,
            strategy,
            noticed_at: kube_time(noticed_at),
            release_at: kube_time(release_at),
            deadline: kube_time(time::sub(release_at, margin)),
        },
        status: None,
    };
    let api: Api<SpotRotation> = Api::namespaced(ctx.client.clone(), &namespace);
    match api.create(&PostParams::default(), &rotation).await {
        Ok(_) => {
            info!(pod = %pod.name_any(), rotation = %name, ?strategy, "spot notice: rotation started");
            let event = Event {
                type_: EventType::Normal,
                reason: "SpotRotationStarted".into(),
                note: Some(format!(
                    "ECI reclaims this spot instance at {}; {} rotation {name}",
                    release_at.to_rfc3339(),
                    match strategy {
                        Strategy::Surge => "surge",
                        Strategy::Evict => "evict",
                    }
                )),
                action: "Rotate".into(),
                secondary: None,
            };
            ctx.publish(&event, &pod.object_ref(&())).await;
            if let (Some(policy), Some(settings)) = (&policy, &settings)
                && !settings.problems.is_empty()
            {
                report_out_of_bounds(spot, policy, &settings.problems).await;
            }
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    Ok(Action::await_change())
}

/// Values of a policy outside the bounds its CRD states (stored under an older CRD, or not
/// expressible in the schema) are clamped or defaulted; the policy says so in a Warning Event,
/// once per rotation it starts.
async fn report_out_of_bounds(
    spot: &SpotContext,
    policy: &vk_eci_core::crd::SpotRotationPolicy,
    problems: &[String],
) {
    let message = problems.join("; ");
    warn!(policy = %policy.name_any(), %message, "spot rotation policy out of bounds");
    let event = Event {
        type_: EventType::Warning,
        reason: "SpotPolicyOutOfBounds".into(),
        note: Some(message),
        action: "Validate".into(),
        secondary: None,
    };
    spot.ctx.publish(&event, &policy.object_ref(&())).await;
}

fn error_policy(pod: Arc<CachedPod>, error: &Error, _spot: Arc<SpotContext>) -> Action {
    warn!(pod = %pod.name_any(), %error, "spot notice reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Whether [`notice`] could do anything for `pod`: it is live and carries a notice. Only
/// these reach the controller. The rest (nearly every pod) would be reconciled straight to
/// `await_change`, yet each would take an entry in the controller's scheduler, whose tables
/// keep their largest size: a whole node's worth after every (re)list of the pods.
fn noticed(pod: &CachedPod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && pod_notice(pod).is_some()
}

/// Runs over the shared pod stream until `shutdown`; a new leader looks again at every
/// noticed pod in the cache.
pub async fn run(
    spot: Arc<SpotContext>,
    pods: impl futures::Stream<Item = Arc<CachedPod>> + Send + 'static,
    became_leader: impl futures::Stream<Item = ()> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let cache = spot.ctx.pods.clone();
    let noticed_on_leadership = became_leader.flat_map(move |()| {
        futures::stream::iter(cache.state().into_iter().filter(|pod| noticed(pod)))
    });
    let noticed_changes = pods.filter(|pod| futures::future::ready(noticed(pod)));
    Controller::for_shared_stream(
        futures::stream::select(noticed_changes, noticed_on_leadership),
        spot.ctx.pods.clone(),
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, spot)
    .for_each(|_| futures::future::ready(()))
    .await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod_with(conditions: serde_json::Value, deleted: bool) -> CachedPod {
        let mut metadata = json!({"name": "p", "namespace": "ns", "uid": "u"});
        if deleted {
            metadata["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
        }
        serde_json::from_value(json!({
            "metadata": metadata,
            "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn only_live_pods_with_a_notice_reach_the_controller() {
        let notice = json!([{"type": "ContainerInstanceExpired", "status": "True",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "message": "Spot ECI will be released in 3 minutes (release at 2026-01-01T00:03:00Z)"}]);
        let ready = json!([{"type": "Ready", "status": "True"}]);
        assert!(noticed(&pod_with(notice.clone(), false)));
        assert!(!noticed(&pod_with(notice, true)), "a deleted pod");
        assert!(!noticed(&pod_with(ready, false)), "no notice");
    }
}
