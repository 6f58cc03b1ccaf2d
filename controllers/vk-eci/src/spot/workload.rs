//! The workloads behind doomed pods: which one a pod belongs to, scaling it through the scale
//! subresource with optimistic concurrency, and holding an HPA's floor during a surge.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use vk_eci_core::crd::{HpaHold, WorkloadKind, WorkloadRef};

use super::Error;
use crate::context::FIELD_MANAGER;

/// The workload controlling `pod`: its StatefulSet, or its ReplicaSet's Deployment, or the
/// ReplicaSet itself.
pub async fn of_pod(client: &Client, pod: &Pod) -> Result<Option<WorkloadRef>, Error> {
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

/// Changes the workload's replicas by `delta` through its scale subresource (`0`: only
/// reads them) and returns the replicas. Each write carries the resourceVersion it read; on a
/// concurrent change (409: other rotations, the workload's own controller) it reads again and
/// retries, because the caller has already recorded that this step is taken.
pub async fn scale_by(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    delta: i32,
) -> Result<i32, Error> {
    let mut attempt = 0u64;
    loop {
        match scale_once(client, namespace, workload, delta).await {
            Err(Error::Kube(kube::Error::Api(status))) if status.code == 409 && attempt < 50 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10 * attempt.min(10))).await;
            }
            other => return other,
        }
    }
}

async fn scale_once(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
    delta: i32,
) -> Result<i32, Error> {
    match workload.kind {
        WorkloadKind::Deployment => {
            scale::<Deployment>(client, namespace, &workload.name, delta).await
        }
        WorkloadKind::ReplicaSet => {
            scale::<ReplicaSet>(client, namespace, &workload.name, delta).await
        }
        WorkloadKind::StatefulSet => {
            scale::<StatefulSet>(client, namespace, &workload.name, delta).await
        }
    }
}

async fn scale<K>(client: &Client, namespace: &str, name: &str, delta: i32) -> Result<i32, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut scale = api.get_scale(name).await?;
    let spec = scale.spec.get_or_insert_with(Default::default);
    let current = spec.replicas.unwrap_or(0);
    if delta == 0 {
        return Ok(current);
    }
    let replicas = current.saturating_add(delta).max(0);
    spec.replicas = Some(replicas);
    api.replace_scale(name, &PostParams::default(), &scale)
        .await?;
    Ok(replicas)
}

/// The workload's wanted and current replicas (its scale's spec and status).
pub async fn replicas(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
) -> Result<(i32, i32), Error> {
    let scale = match workload.kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .get_scale(&workload.name)
                .await?
        }
        WorkloadKind::ReplicaSet => {
            Api::<ReplicaSet>::namespaced(client.clone(), namespace)
                .get_scale(&workload.name)
                .await?
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .get_scale(&workload.name)
                .await?
        }
    };
    Ok((
        scale.spec.and_then(|s| s.replicas).unwrap_or(0),
        scale.status.map_or(0, |s| s.replicas),
    ))
}

/// The HPA that scales `workload`, if any.
pub async fn hpa_of(
    client: &Client,
    namespace: &str,
    workload: &WorkloadRef,
) -> Result<Option<HorizontalPodAutoscaler>, Error> {
    let kind = match workload.kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::ReplicaSet => "ReplicaSet",
        WorkloadKind::StatefulSet => "StatefulSet",
    };
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await?;
    Ok(hpas.items.into_iter().find(|hpa| {
        hpa.spec.as_ref().is_some_and(|s| {
            s.scale_target_ref.kind == kind && s.scale_target_ref.name == workload.name
        })
    }))
}

/// Raises the HPA's `minReplicas` to `floor` (never lowers it), guarded by its
/// resourceVersion.
pub async fn hold_hpa(
    client: &Client,
    namespace: &str,
    hpa: &HorizontalPodAutoscaler,
    floor: i32,
) -> Result<(), Error> {
    let own = hpa.spec.as_ref().and_then(|s| s.min_replicas).unwrap_or(1);
    let patch = json!({
        "metadata": { "resourceVersion": hpa.resource_version() },
        "spec": { "minReplicas": own.max(floor) },
    });
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .patch(&hpa.name_any(), &params(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Gives the HPA its own `minReplicas` back.
pub async fn release_hpa(client: &Client, namespace: &str, hold: &HpaHold) -> Result<(), Error> {
    let patch = json!({ "spec": { "minReplicas": hold.min_replicas } });
    match Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .patch(&hold.name, &params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}
