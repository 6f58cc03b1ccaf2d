//! The workloads behind doomed pods: which one a pod belongs to, scaling it through the scale
//! subresource from the replicas a rotation recorded (optimistic concurrency), and the HPA
//! hold shared by a workload's rotations.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, ListParams, Patch, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use vk_eci_core::cache::CachedPod;
use vk_eci_core::crd::{WorkloadKind, WorkloadRef};
use vk_eci_core::rotation::hpa::{self, HpaChange, HpaState};

use super::Error;
use crate::runtime::context::patch_params;

/// The workload controlling `pod`: its StatefulSet, or its ReplicaSet's Deployment, or the
/// ReplicaSet itself.
pub async fn of_pod(client: &Client, pod: &CachedPod) -> Result<Option<WorkloadRef>, Error> {
    let Some(owner) = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
    else {
        return Ok(None);
    };
    let namespace = pod.namespace().unwrap_or_default();
    match owner.kind.as_str() {
        "StatefulSet" => Ok(Some(WorkloadRef {
            kind: WorkloadKind::StatefulSet,
            name: owner.name.clone(),
        })),
        "ReplicaSet" => {
            let replica_set = Api::<ReplicaSet>::namespaced(client.clone(), &namespace)
                .get_opt(&owner.name)
                .await?;
            let deployment = replica_set.as_ref().and_then(|rs| {
                rs.owner_references()
                    .iter()
                    .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                    .map(|o| o.name.clone())
            });
            Ok(Some(match deployment {
                Some(name) => WorkloadRef {
                    kind: WorkloadKind::Deployment,
                    name,
                },
                None => WorkloadRef {
                    kind: WorkloadKind::ReplicaSet,
                    name: owner.name.clone(),
                },
            }))
        }
        _ => Ok(None),
    }
}

/// The workload's scale: wanted replicas (spec) and current ones (status); `None` when the
/// workload is gone.
pub async fn replicas(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
) -> Result<Option<(i32, i32)>, Error> {
    let scale = match workload.kind {
        WorkloadKind::Deployment => {
            get_scale::<Deployment>(client, namespace, &workload.name).await
        }
        WorkloadKind::ReplicaSet => {
            get_scale::<ReplicaSet>(client, namespace, &workload.name).await
        }
        WorkloadKind::StatefulSet => {
            get_scale::<StatefulSet>(client, namespace, &workload.name).await
        }
    };
    match scale {
        Ok(scale) => Ok(Some((
            scale.spec.and_then(|s| s.replicas).unwrap_or(0),
            scale.status.map_or(0, |s| s.replicas),
        ))),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => Err(error.into()),
    }
}

async fn get_scale<K>(client: &Client, namespace: &str, name: &str) -> Result<Scale, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get_scale(name)
        .await
}

/// Sets the workload's replicas from `from` to `to` through its scale subresource, only if
/// they are still `from` (the write carries the resourceVersion it read). Returns whether it
/// wrote; a workload found elsewhere, or gone, is left alone (the rotation's next step sees
/// why). A concurrent change (409) is an error: the step is retried from a fresh look.
pub async fn scale_from_to(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    from: i32,
    to: i32,
) -> Result<bool, Error> {
    let result = match workload.kind {
        WorkloadKind::Deployment => {
            scale::<Deployment>(client, namespace, &workload.name, from, to).await
        }
        WorkloadKind::ReplicaSet => {
            scale::<ReplicaSet>(client, namespace, &workload.name, from, to).await
        }
        WorkloadKind::StatefulSet => {
            scale::<StatefulSet>(client, namespace, &workload.name, from, to).await
        }
    };
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        other => Ok(other?),
    }
}

async fn scale<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    from: i32,
    to: i32,
) -> Result<bool, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut scale = api.get_scale(name).await?;
    let spec = scale.spec.get_or_insert_with(Default::default);
    if spec.replicas.unwrap_or(0) != from {
        return Ok(false);
    }
    spec.replicas = Some(to.max(0));
    api.replace_scale(name, &PostParams::default(), &scale)
        .await?;
    Ok(true)
}

fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::ReplicaSet => "ReplicaSet",
        WorkloadKind::StatefulSet => "StatefulSet",
    }
}

/// The HPA that scales `workload`, if any.
pub async fn hpa_of(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
) -> Result<Option<HorizontalPodAutoscaler>, Error> {
    let kind = kind_name(workload.kind);
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    Ok(hpas.items.into_iter().find(|hpa| {
        hpa.spec.as_ref().is_some_and(|s| {
            s.scale_target_ref.kind == kind && s.scale_target_ref.name == workload.name
        })
    }))
}

/// The HPA named `name`, if it exists.
pub async fn hpa_named(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<HorizontalPodAutoscaler>, Error> {
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await?;
    Ok(hpas.items.into_iter().find(|hpa| hpa.name_any() == name))
}

/// What the hold arithmetic reads of an HPA.
pub fn hpa_state(hpa: &HorizontalPodAutoscaler) -> HpaState {
    HpaState {
        min_replicas: hpa.spec.as_ref().and_then(|s| s.min_replicas),
        annotations: hpa.annotations().clone(),
    }
}

/// `holder` joins the HPA's hold at `floor` (see [`vk_eci_core::rotation::hpa`]).
pub async fn hold_hpa(
    client: &Client,
    namespace: &str,
    name: &str,
    holder: &str,
    floor: i32,
) -> Result<(), Error> {
    let Some(hpa) = hpa_named(client, namespace, name).await? else {
        return Ok(());
    };
    let change = hpa::hold(&hpa_state(&hpa), holder, floor);
    patch_hpa(client, namespace, &hpa, &change).await
}

/// `holder` leaves the HPA's hold; the last holder gives the user's value back.
pub async fn release_hpa(
    client: &Client,
    namespace: &str,
    name: &str,
    holder: &str,
    floor: i32,
) -> Result<(), Error> {
    let Some(hpa) = hpa_named(client, namespace, name).await? else {
        return Ok(());
    };
    let Some(change) = hpa::release(&hpa_state(&hpa), holder, floor) else {
        return Ok(());
    };
    patch_hpa(client, namespace, &hpa, &change).await
}

/// Writes a hold change, guarded by the resourceVersion it was computed from: a user edit in
/// between fails it (409), and the next step computes it again from the user's edit.
async fn patch_hpa(
    client: &Client,
    namespace: &str,
    hpa: &HorizontalPodAutoscaler,
    change: &HpaChange,
) -> Result<(), Error> {
    let patch = json!({
        "metadata": {
            "resourceVersion": hpa.resource_version(),
            "annotations": change.annotations,
        },
        "spec": { "minReplicas": change.min_replicas },
    });
    match Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .patch(&hpa.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
