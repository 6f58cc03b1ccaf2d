//! The pod writes of the pod-to-ECI controller. Each is a precise patch: the instance id
//! annotation carries the pod's UID (a recreated pod of the same name is never touched), and
//! status writes carry the resourceVersion they were computed from. They take the pod as the
//! cache keeps it ([`CachedPod`]); a write that needs more of the pod reads it afresh.

use chrono::Utc;
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use kube::api::{Api, DeleteParams, Patch, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::cache::{CachedCondition, CachedPod};
use vk_eci_core::lifecycle::{CREATE_RETRY, CreateRetry};
use vk_eci_core::status::{CONTAINER_INSTANCE_CREATED, condition};

use super::Error;
use crate::runtime::context::{Context, patch_params};

fn api(ctx: &Context, pod: &CachedPod) -> Api<Pod> {
    Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default())
}

/// Writes `k8s.aliyun.com/eci-instance-id`. `Ok(false)` when the pod is gone (or is another
/// pod by now), so the caller can delete the group it just created.
pub async fn record_instance_id(
    ctx: &Context,
    pod: &CachedPod,
    id: &str,
) -> Result<bool, kube::Error> {
    let patch = json!({
        "metadata": {
            "uid": pod.uid(),
            "annotations": { INSTANCE_ID: id },
        }
    });
    match api(ctx, pod)
        .patch(&pod.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Records a failed create on the pod (see [`CreateRetry`]).
pub async fn record_retry(
    ctx: &Context,
    pod: &CachedPod,
    retry: &CreateRetry,
) -> Result<(), kube::Error> {
    let patch = json!({
        "metadata": {
            "uid": pod.uid(),
            "annotations": { CREATE_RETRY: retry.render() },
        }
    });
    api(ctx, pod)
        .patch(&pod.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Patches the status fields in `patch` (a JSON merge patch of `status`), guarded by the
/// resourceVersion the change was computed from.
pub async fn patch_status(
    ctx: &Context,
    pod: &CachedPod,
    status: serde_json::Value,
) -> Result<(), kube::Error> {
    let patch = json!({
        "metadata": { "resourceVersion": pod.resource_version() },
        "status": status,
    });
    api(ctx, pod)
        .patch_status(&pod.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Marks the pod Failed with `reason`, as the kubelet does for a pod it rejects.
pub async fn fail(
    ctx: &Context,
    pod: &CachedPod,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    ctx.leadership.ensure()?;
    let conditions = with_condition(pod, CONTAINER_INSTANCE_CREATED, false, reason, message);
    patch_status(
        ctx,
        pod,
        json!({
            "phase": "Failed",
            "reason": reason,
            "message": message,
            "conditions": conditions,
        }),
    )
    .await?;
    Ok(())
}

/// Fails a pod whose container group vanished: its processes are gone, so it must stop
/// counting as Ready (Services route away) and its controller must replace it. Its container
/// statuses are sent whole, so they are read afresh (the cache keeps only part of each); the
/// write is guarded by the resourceVersion of that read.
pub async fn lost(
    ctx: &Context,
    cached: &CachedPod,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    ctx.leadership.ensure()?;
    let Some(live) = api(ctx, cached)
        .get_opt(&cached.name_any())
        .await?
        .filter(|p| p.uid() == cached.uid())
    else {
        // Gone (or another pod by now): nothing to fail.
        return Ok(());
    };
    let containers: Vec<serde_json::Value> = live
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| {
            let mut c = c.clone();
            c.ready = false;
            c.started = Some(false);
            serde_json::to_value(c).unwrap_or_default()
        })
        .collect();
    let pod = &CachedPod::from(live);
    let mut conditions = with_condition(pod, CONTAINER_INSTANCE_CREATED, false, reason, message);
    for kind in ["Ready", "ContainersReady"] {
        conditions.retain(|c| c.type_ != kind);
        conditions.push(condition(
            &pod.status.conditions,
            kind,
            false,
            Some(reason),
            Some(message.to_string()),
            Utc::now(),
        ));
    }
    let mut status = json!({
        "phase": "Failed",
        "reason": reason,
        "message": message,
        "conditions": conditions,
    });
    if !containers.is_empty() {
        status["containerStatuses"] = json!(containers);
    }
    patch_status(ctx, pod, status).await?;
    Ok(())
}

/// Forgets the pod's recorded container group, so the create runs again; `retry` (when the
/// next create must use a new ClientToken) is recorded with it.
pub async fn clear_instance(
    ctx: &Context,
    pod: &CachedPod,
    retry: Option<&CreateRetry>,
) -> Result<(), Error> {
    ctx.leadership.ensure()?;
    let mut annotations = json!({ INSTANCE_ID: null });
    if let Some(retry) = retry {
        annotations[CREATE_RETRY] = json!(retry.render());
    }
    let patch = json!({
        "metadata": {
            "uid": pod.uid(),
            "annotations": annotations,
        }
    });
    api(ctx, pod)
        .patch(&pod.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Sets `ContainerInstanceCreated=False` with why, leaving the pod Pending.
pub async fn not_created(
    ctx: &Context,
    pod: &CachedPod,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let current = pod.condition(CONTAINER_INSTANCE_CREATED);
    if current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
    }) {
        return Ok(());
    }
    let conditions = with_condition(pod, CONTAINER_INSTANCE_CREATED, false, reason, message);
    patch_status(ctx, pod, json!({ "conditions": conditions })).await
}

/// The pod's conditions with `kind` set; the others (whoever owns them) are kept.
fn with_condition(
    pod: &CachedPod,
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
) -> Vec<PodCondition> {
    let mut conditions: Vec<PodCondition> = pod
        .status
        .conditions
        .iter()
        .filter(|c| c.type_ != kind)
        .map(CachedCondition::to_pod_condition)
        .collect();
    conditions.push(condition(
        &pod.status.conditions,
        kind,
        ok,
        Some(reason),
        Some(message.to_string()),
        Utc::now(),
    ));
    conditions
}

/// Removes the pod object for good (grace 0), only if it is still this pod.
pub async fn remove(ctx: &Context, pod: &CachedPod) -> Result<(), Error> {
    ctx.leadership.ensure()?;
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api(ctx, pod).delete(&pod.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Publishes an Event on the pod; failing to is logged, never fatal.
pub async fn event(ctx: &Context, pod: &CachedPod, kind: EventType, reason: &str, note: String) {
    let event = Event {
        type_: kind,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    ctx.publish(&event, &pod.object_ref(&())).await;
}
