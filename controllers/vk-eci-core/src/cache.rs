//! What the shared pod cache keeps. Every controller reads pods from one informer cache that
//! holds every pod of the virtual node, so its size is the operator's size. A k8s-openapi
//! `Pod` is large in memory before it holds a single string (`Pod`, `Container` and
//! `PodStatus` are kilobytes each), and most of it (volumes, env, probes, resources, security
//! contexts, tolerations) matters only when its container group is created, which reads the
//! pod afresh from the API server.
//!
//! [`CachedPod`] is the cache's own type: a resource whose serde shape is a subset of a Pod's,
//! so the watch and the initial LIST decode straight into it (unknown fields are skipped,
//! never built) and no full `Pod` is held per cached pod, not even while a page of the LIST
//! is decoded. It keeps the metadata (without managed fields and kubectl's last-applied
//! copy of the object), the few spec fields the controllers read after the create, and of
//! the status what they read plus a fingerprint of each status field the status sync owns.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Deserialize;

use crate::status::StatusFingerprint;

/// kubectl's copy of the applied object: as large as the pod's spec, read by nobody here.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A pod as the shared cache keeps it. Decoded from the API server's pod JSON (watch, list
/// or get as `Api<CachedPod>`), or made from a full [`Pod`] with `From`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "wire::Pod")]
pub struct CachedPod {
    /// All of the pod's metadata but `managedFields` and [`LAST_APPLIED`].
    pub metadata: ObjectMeta,
    pub spec: CachedSpec,
    pub status: CachedStatus,
}

/// The spec fields read after the create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CachedSpec {
    pub node_name: Option<String>,
    pub restart_policy: Option<String>,
    pub termination_grace_period_seconds: Option<i64>,
    /// Name and image of each container, in declaration order (pod status reports them).
    pub containers: Vec<NamedContainer>,
    pub init_containers: Vec<NamedContainer>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct NamedContainer {
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
}

/// The status fields read from the cache, and a fingerprint of the ones the status sync
/// writes (it compares what it would write with it, field by field).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CachedStatus {
    pub phase: Option<String>,
    /// All conditions, whoever owns them: a status write sends the list whole.
    pub conditions: Vec<CachedCondition>,
    pub start_time: Option<Time>,
    pub qos_class: Option<String>,
    pub container_statuses: Vec<CachedContainerStatus>,
    pub init_container_statuses: Vec<CachedContainerStatus>,
    pub fingerprint: StatusFingerprint,
}

/// A pod condition. Its type, status and reason are nearly always one of a few well-known
/// names, kept as shared static strings instead of a heap string each per pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CachedCondition {
    pub type_: Cow<'static, str>,
    pub status: Cow<'static, str>,
    pub reason: Option<Cow<'static, str>>,
    pub message: Option<String>,
    pub last_transition_time: Option<Time>,
    pub last_probe_time: Option<Time>,
    pub observed_generation: Option<i64>,
}

/// Condition types, statuses and reasons common enough to share.
const WELL_KNOWN: &[&str] = &[
    "True",
    "False",
    "Unknown",
    "PodScheduled",
    "Initialized",
    "ContainersReady",
    "Ready",
    "PodReadyToStartContainers",
    "DisruptionTarget",
    crate::status::CONTAINER_INSTANCE_CREATED,
    crate::status::CONTAINER_INSTANCE_EXPIRED,
    crate::status::SPOT_TO_BE_RELEASED,
    "Created",
    "Unschedulable",
];

fn shared(text: &str) -> Cow<'static, str> {
    WELL_KNOWN.iter().find(|known| **known == text).map_or_else(
        || Cow::Owned(text.to_string()),
        |known| Cow::Borrowed(*known),
    )
}

impl CachedCondition {
    pub fn of(condition: &PodCondition) -> Self {
        Self {
            type_: shared(&condition.type_),
            status: shared(&condition.status),
            reason: condition.reason.as_deref().map(shared),
            message: condition.message.clone(),
            last_transition_time: condition.last_transition_time.clone(),
            last_probe_time: condition.last_probe_time.clone(),
            observed_generation: condition.observed_generation,
        }
    }

    /// The condition as the API has it (what a status write sends back).
    pub fn to_pod_condition(&self) -> PodCondition {
        PodCondition {
            type_: self.type_.to_string(),
            status: self.status.to_string(),
            reason: self.reason.as_deref().map(str::to_string),
            message: self.message.clone(),
            last_transition_time: self.last_transition_time.clone(),
            last_probe_time: self.last_probe_time.clone(),
            observed_generation: self.observed_generation,
        }
    }
}

/// What the controllers read of a container's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CachedContainerStatus {
    pub name: String,
    pub restart_count: i32,
    pub state: CachedContainerState,
    /// Whether its last state is a terminated run (`kubectl logs --previous` has one).
    pub terminated_before: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CachedContainerState {
    #[default]
    Unknown,
    Waiting,
    Running {
        started_at: Option<Time>,
    },
    Terminated,
}

impl CachedPod {
    pub fn phase(&self) -> Option<&str> {
        self.status.phase.as_deref()
    }

    /// The condition of type `kind`, if the pod has it.
    pub fn condition(&self, kind: &str) -> Option<&CachedCondition> {
        self.status.conditions.iter().find(|c| c.type_ == kind)
    }

    /// Whether the condition of type `kind` is True.
    pub fn condition_is_true(&self, kind: &str) -> bool {
        self.condition(kind).is_some_and(|c| c.status == "True")
    }

    /// The status of the container (or init container) named `name`.
    pub fn container_status(&self, name: &str) -> Option<&CachedContainerStatus> {
        self.status
            .container_statuses
            .iter()
            .chain(&self.status.init_container_statuses)
            .find(|s| s.name == name)
    }

    /// Whether the pod declares a container (or init container) named `name`.
    pub fn has_container(&self, name: &str) -> bool {
        self.spec
            .containers
            .iter()
            .chain(&self.spec.init_containers)
            .any(|c| c.name == name)
    }

    fn new(mut metadata: ObjectMeta, spec: CachedSpec, status: Option<&PodStatus>) -> Self {
        metadata.managed_fields = None;
        if let Some(annotations) = metadata.annotations.as_mut() {
            annotations.remove(LAST_APPLIED);
        }
        Self {
            metadata,
            spec,
            status: status.map(CachedStatus::of).unwrap_or_default(),
        }
    }
}

impl CachedStatus {
    /// What the cache keeps of `status`.
    pub fn of(status: &PodStatus) -> Self {
        let containers = |statuses: &Option<Vec<ContainerStatus>>| {
            statuses
                .iter()
                .flatten()
                .map(CachedContainerStatus::of)
                .collect()
        };
        Self {
            phase: status.phase.clone(),
            conditions: status
                .conditions
                .iter()
                .flatten()
                .map(CachedCondition::of)
                .collect(),
            start_time: status.start_time.clone(),
            qos_class: status.qos_class.clone(),
            container_statuses: containers(&status.container_statuses),
            init_container_statuses: containers(&status.init_container_statuses),
            fingerprint: StatusFingerprint::of(status),
        }
    }
}

impl CachedContainerStatus {
    fn of(status: &ContainerStatus) -> Self {
        let state = match &status.state {
            Some(ContainerState {
                running: Some(running),
                ..
            }) => CachedContainerState::Running {
                started_at: running.started_at.clone(),
            },
            Some(ContainerState {
                terminated: Some(_),
                ..
            }) => CachedContainerState::Terminated,
            Some(ContainerState {
                waiting: Some(_), ..
            }) => CachedContainerState::Waiting,
            _ => CachedContainerState::Unknown,
        };
        Self {
            name: status.name.clone(),
            restart_count: status.restart_count,
            state,
            terminated_before: status
                .last_state
                .as_ref()
                .is_some_and(|s| s.terminated.is_some()),
        }
    }

    /// The state as a Kubernetes container state (without the details the cache drops).
    fn to_state(&self) -> Option<ContainerState> {
        match &self.state {
            CachedContainerState::Unknown => None,
            CachedContainerState::Waiting => Some(ContainerState {
                waiting: Some(ContainerStateWaiting::default()),
                ..ContainerState::default()
            }),
            CachedContainerState::Running { started_at } => Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: started_at.clone(),
                }),
                ..ContainerState::default()
            }),
            CachedContainerState::Terminated => Some(ContainerState {
                terminated: Some(ContainerStateTerminated::default()),
                ..ContainerState::default()
            }),
        }
    }
}

fn named(containers: &[Container]) -> Vec<NamedContainer> {
    containers
        .iter()
        .map(|c| NamedContainer {
            name: c.name.clone(),
            image: c.image.clone(),
        })
        .collect()
}

impl From<&Pod> for CachedPod {
    fn from(pod: &Pod) -> Self {
        let spec = pod
            .spec
            .as_ref()
            .map(|spec| CachedSpec {
                node_name: spec.node_name.clone(),
                restart_policy: spec.restart_policy.clone(),
                termination_grace_period_seconds: spec.termination_grace_period_seconds,
                containers: named(&spec.containers),
                init_containers: named(spec.init_containers.as_deref().unwrap_or_default()),
            })
            .unwrap_or_default();
        Self::new(pod.metadata.clone(), spec, pod.status.as_ref())
    }
}

impl From<Pod> for CachedPod {
    fn from(pod: Pod) -> Self {
        Self::from(&pod)
    }
}

impl From<&CachedPod> for Pod {
    /// The pod as the cache knows it: what `/pods` of the kubelet API lists.
    fn from(cached: &CachedPod) -> Self {
        let containers = |named: &[NamedContainer]| -> Vec<Container> {
            named
                .iter()
                .map(|c| Container {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    ..Container::default()
                })
                .collect()
        };
        let statuses = |cached: &[CachedContainerStatus], spec: &[NamedContainer]| {
            cached
                .iter()
                .map(|s| ContainerStatus {
                    name: s.name.clone(),
                    image: spec
                        .iter()
                        .find(|c| c.name == s.name)
                        .and_then(|c| c.image.clone())
                        .unwrap_or_default(),
                    restart_count: s.restart_count,
                    ready: false,
                    state: s.to_state(),
                    last_state: s.terminated_before.then(|| ContainerState {
                        terminated: Some(ContainerStateTerminated::default()),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                })
                .collect::<Vec<_>>()
        };
        let (spec, status) = (&cached.spec, &cached.status);
        Pod {
            metadata: cached.metadata.clone(),
            spec: Some(PodSpec {
                node_name: spec.node_name.clone(),
                restart_policy: spec.restart_policy.clone(),
                termination_grace_period_seconds: spec.termination_grace_period_seconds,
                containers: containers(&spec.containers),
                init_containers: some_vec(containers(&spec.init_containers)),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: status.phase.clone(),
                conditions: some_vec(
                    status
                        .conditions
                        .iter()
                        .map(CachedCondition::to_pod_condition)
                        .collect(),
                ),
                start_time: status.start_time.clone(),
                qos_class: status.qos_class.clone(),
                container_statuses: some_vec(statuses(
                    &status.container_statuses,
                    &spec.containers,
                )),
                init_container_statuses: some_vec(statuses(
                    &status.init_container_statuses,
                    &spec.init_containers,
                )),
                ..PodStatus::default()
            }),
        }
    }
}

fn some_vec<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

impl kube::Resource for CachedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The pod JSON as far as the cache reads it; serde skips every other field as it parses.
mod wire {
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde::Deserialize;

    use super::{CachedSpec, NamedContainer};

    #[derive(Deserialize)]
    pub(super) struct Pod {
        #[serde(default)]
        metadata: ObjectMeta,
        #[serde(default)]
        spec: Option<Spec>,
        #[serde(default)]
        status: Option<PodStatus>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        #[serde(default)]
        node_name: Option<String>,
        #[serde(default)]
        restart_policy: Option<String>,
        #[serde(default)]
        termination_grace_period_seconds: Option<i64>,
        #[serde(default)]
        containers: Option<Vec<NamedContainer>>,
        #[serde(default)]
        init_containers: Option<Vec<NamedContainer>>,
    }

    impl From<Pod> for super::CachedPod {
        fn from(pod: Pod) -> Self {
            let spec = pod
                .spec
                .map(|spec| CachedSpec {
                    node_name: spec.node_name,
                    restart_policy: spec.restart_policy,
                    termination_grace_period_seconds: spec.termination_grace_period_seconds,
                    containers: spec.containers.unwrap_or_default(),
                    init_containers: spec.init_containers.unwrap_or_default(),
                })
                .unwrap_or_default();
            Self::new(pod.metadata, spec, pod.status.as_ref())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use chrono::Utc;
    use eci_types::wire::ContainerGroup;
    use serde_json::json;

    fn full_pod_json() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-1", "namespace": "default", "uid": "u-1",
                "resourceVersion": "42",
                "labels": {"app": "web"},
                "annotations": {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo",
                    LAST_APPLIED: "{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-abc", "uid": "rs-1", "controller": true}],
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {
                "nodeName": "virtual-kubelet",
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 45,
                "serviceAccountName": "web",
                "initContainers": [{"name": "init", "image": "busybox",
                    "command": ["sh", "-c", "true"]}],
                "containers": [{"name": "app", "image": "nginx",
                    "env": [{"name": "A", "value": "1"}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]}],
                "volumes": [{"name": "config", "configMap": {"name": "app"}}],
                "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            },
            "status": {"phase": "Running", "qosClass": "BestEffort",
                "startTime": "2026-11-23T10:00:00Z",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "image": "nginx", "imageID": "",
                    "ready": true, "restartCount": 2,
                    "state": {"running": {"startedAt": "2026-11-23T10:00:05Z"}},
                    "lastState": {"terminated": {"exitCode": 137}}}],
                "initContainerStatuses": [{"name": "init", "image": "busybox", "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0}}}]},
        })
    }

    fn full_pod() -> Pod {
        serde_json::from_value(full_pod_json()).unwrap()
    }

    #[test]
    fn keeps_what_the_controllers_read() {
        let full = full_pod();
        let pod: CachedPod = serde_json::from_value(full_pod_json()).unwrap();
        assert_eq!(pod.metadata.labels, full.metadata.labels);
        assert_eq!(
            pod.metadata.owner_references,
            full.metadata.owner_references
        );
        assert_eq!(
            pod.metadata
                .annotations
                .as_ref()
                .unwrap()
                .get("k8s.aliyun.com/eci-spot-strategy")
                .map(String::as_str),
            Some("SpotAsPriceGo")
        );
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(pod.spec.node_name.as_deref(), Some("virtual-kubelet"));
        assert_eq!(pod.spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(pod.spec.termination_grace_period_seconds, Some(45));
        assert_eq!(pod.spec.containers.len(), 1);
        assert_eq!(pod.spec.containers[0].image.as_deref(), Some("nginx"));
        assert_eq!(pod.spec.init_containers[0].name, "init");
        assert_eq!(pod.phase(), Some("Running"));
        assert!(pod.condition_is_true("Ready"));
        assert_eq!(pod.status.qos_class.as_deref(), Some("BestEffort"));
        let app = pod.container_status("app").unwrap();
        assert_eq!(app.restart_count, 2);
        assert!(app.terminated_before);
        assert!(matches!(
            app.state,
            CachedContainerState::Running {
                started_at: Some(_)
            }
        ));
        assert_eq!(
            pod.container_status("init").unwrap().state,
            CachedContainerState::Terminated
        );
        assert!(pod.has_container("init") && !pod.has_container("other"));
    }

    #[test]
    fn drops_what_only_the_create_reads() {
        let pod: CachedPod = serde_json::from_value(full_pod_json()).unwrap();
        assert!(pod.metadata.managed_fields.is_none());
        assert!(
            !pod.metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(LAST_APPLIED)
        );
    }

    #[test]
    fn decoding_the_json_and_converting_a_pod_agree() {
        let decoded: CachedPod = serde_json::from_value(full_pod_json()).unwrap();
        assert_eq!(CachedPod::from(&full_pod()), decoded);
        assert_eq!(
            decoded.status.fingerprint,
            StatusFingerprint::of(full_pod().status.as_ref().unwrap())
        );
    }

    #[test]
    fn a_pod_with_nothing_but_a_name_decodes() {
        let pod: CachedPod = serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"containers": null}, "status": null}))
        .unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
        assert!(pod.spec.containers.is_empty() && pod.phase().is_none());
    }

    #[test]
    fn a_cached_pod_reports_the_same_status() {
        let group: ContainerGroup = serde_json::from_value(json!({
            "ContainerGroupId": "eci-1", "Status": "Running",
            "Containers": [{"Name": "app", "Image": "nginx", "Ready": true,
                "CurrentState": {"State": "Running", "StartTime": "2026-11-23T10:00:00Z"}}],
            "InitContainers": [{"Name": "init", "Image": "busybox",
                "CurrentState": {"State": "Terminated", "ExitCode": 0}}],
        }))
        .unwrap();
        let now = Utc::now();
        let cached: CachedPod = serde_json::from_value(full_pod_json()).unwrap();
        let reported = crate::status::pod_status(&cached, &group, now);
        let containers = reported.container_statuses.as_deref().unwrap_or_default();
        assert_eq!(containers.len(), 1);
        assert_eq!(
            (containers[0].image.as_str(), containers[0].ready),
            ("nginx", true)
        );
        assert_eq!(
            reported.init_container_statuses.as_ref().map(Vec::len),
            Some(1)
        );
        assert_eq!(reported.qos_class.as_deref(), Some("BestEffort"));
    }

    #[test]
    fn the_pod_it_lists_as_keeps_what_it_cached() {
        let cached: CachedPod = serde_json::from_value(full_pod_json()).unwrap();
        let listed = Pod::from(&cached);
        assert_eq!(CachedPod::from(&listed).spec, cached.spec);
        let status = listed.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let app = &status.container_statuses.unwrap()[0];
        assert_eq!((app.image.as_str(), app.restart_count), ("nginx", 2));
    }
}
