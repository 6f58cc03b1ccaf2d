//! What the shared pod cache keeps. Every controller reads pods from one informer cache that
//! holds every pod of the virtual node, so its size is the operator's size. Most of a pod's
//! spec (volumes, env, probes, resources, security contexts, tolerations) matters only when
//! its container group is created, and the create reads the pod afresh from the API server;
//! the cache keeps metadata, status and the few spec fields the controllers read after that.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

/// Strips `pod` to what the controllers read from the cache: all metadata but managed fields,
/// all status, and of the spec the node, the restart policy, the termination grace period
/// and each container's name and image (which pod status reports).
pub fn slim(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(spec) = pod.spec.take() {
        let named = |containers: Vec<Container>| -> Vec<Container> {
            containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    image: c.image,
                    ..Container::default()
                })
                .collect()
        };
        pod.spec = Some(PodSpec {
            containers: named(spec.containers),
            init_containers: spec.init_containers.map(named),
            node_name: spec.node_name,
            restart_policy: spec.restart_policy,
            termination_grace_period_seconds: spec.termination_grace_period_seconds,
            ..PodSpec::default()
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use chrono::Utc;
    use eci_client::types::ContainerGroup;
    use serde_json::json;

    fn full_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web-1", "namespace": "default", "uid": "u-1",
                "labels": {"app": "web"},
                "annotations": {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"},
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
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    #[test]
    fn keeps_what_the_controllers_read() {
        let full = full_pod();
        let mut pod = full.clone();
        slim(&mut pod);
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(pod.metadata.labels, full.metadata.labels);
        assert_eq!(pod.metadata.annotations, full.metadata.annotations);
        assert_eq!(
            pod.metadata.owner_references,
            full.metadata.owner_references
        );
        assert_eq!(pod.status, full.status);
        assert_eq!(spec.node_name.as_deref(), Some("virtual-kubelet"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(45));
        assert_eq!(spec.containers.len(), 1);
        assert_eq!(spec.containers[0].image.as_deref(), Some("nginx"));
        assert_eq!(spec.init_containers.as_ref().unwrap()[0].name, "init");
    }

    #[test]
    fn drops_what_only_the_create_reads() {
        let mut pod = full_pod();
        slim(&mut pod);
        let spec = pod.spec.as_ref().unwrap();
        assert!(pod.metadata.managed_fields.is_none());
        assert!(spec.volumes.is_none() && spec.tolerations.is_none());
        assert!(spec.service_account_name.is_none());
        let app = &spec.containers[0];
        assert!(app.env.is_none() && app.readiness_probe.is_none() && app.volume_mounts.is_none());
    }

    #[test]
    fn a_slim_pod_reports_the_same_status() {
        let group: ContainerGroup = serde_json::from_value(json!({
            "ContainerGroupId": "eci-1", "Status": "Running",
            "Containers": [{"Name": "app", "Image": "nginx", "Ready": true,
                "CurrentState": {"State": "Running", "StartTime": "2026-11-23T10:00:00Z"}}],
            "InitContainers": [{"Name": "init", "Image": "busybox",
                "CurrentState": {"State": "Terminated", "ExitCode": 0}}],
        }))
        .unwrap();
        let now = Utc::now();
        let full = full_pod();
        let mut cached = full.clone();
        slim(&mut cached);
        let reported = crate::status::pod_status(&full, &group, now);
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
        assert_eq!(crate::status::pod_status(&cached, &group, now), reported);
    }
}
