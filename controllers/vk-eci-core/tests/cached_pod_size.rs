//! How much memory a cached pod holds, counted by a global allocator: a `CachedPod` decoded
//! from the API server's JSON of a running Deployment pod (the defaults the API server adds,
//! managed fields, a token volume, the status vk-eci writes) against the k8s-openapi `Pod`
//! the cache used to hold. Its own test binary: the allocator counts the whole process.
//!
//! `cargo test -p vk-eci-core --test cached_pod_size -- --nocapture` prints the figures. They
//! are the bytes requested: malloc rounds each small allocation up (to 32 bytes and more on
//! glibc), so the resident cost of many short strings is higher still.

#![allow(clippy::unwrap_used)]

use std::alloc::System;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use vk_eci_core::cache::CachedPod;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A Deployment's pod on the virtual node, as the API server serves it once it runs.
fn served_pod(i: usize) -> Value {
    let name = format!("web-7d9f8c6b5-{i:05}");
    let time = "2026-11-23T10:00:00Z";
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "generateName": "web-7d9f8c6b5-", "namespace": "default",
            "uid": format!("0b7c6a4e-1f2d-4c3b-9a8e-{i:012}"),
            "resourceVersion": format!("{}", 100_000 + i),
            "creationTimestamp": time,
            "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5"},
            "annotations": {
                "k8s.aliyun.com/eci-instance-id": format!("eci-2ze{i:017}"),
                "k8s.aliyun.com/eci-use-specs": "2-4Gi",
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-7d9f8c6b5", "uid": "6a1e8f0c-2b3d-4e5f-8a9b-0c1d2e3f4a5b",
                "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update",
                 "apiVersion": "v1", "time": time, "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {},
                    "f:app": {}, "f:pod-template-hash": {}}, "f:ownerReferences": {".": {},
                    "k:{\"uid\":\"6a1e8f0c-2b3d-4e5f-8a9b-0c1d2e3f4a5b\"}": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {},
                    "f:env": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                    "f:readinessProbe": {}, "f:resources": {}, "f:terminationMessagePath": {},
                    "f:terminationMessagePolicy": {}}}, "f:dnsPolicy": {},
                    "f:enableServiceLinks": {}, "f:nodeSelector": {}, "f:restartPolicy": {},
                    "f:schedulerName": {}, "f:securityContext": {},
                    "f:terminationGracePeriodSeconds": {}, "f:tolerations": {}}}},
                {"manager": "vk-eci", "operation": "Update", "apiVersion": "v1",
                 "time": time, "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {},
                    "f:hostIP": {}, "f:phase": {}, "f:podIP": {}, "f:podIPs": {},
                    "f:startTime": {}}}},
            ],
        },
        "spec": {
            "containers": [{
                "name": "app", "image": "registry.example.com/shop/web:1.4.2",
                "imagePullPolicy": "IfNotPresent",
                "env": [{"name": "MODE", "value": "production"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef":
                            {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080,
                    "scheme": "HTTP"}, "periodSeconds": 10, "timeoutSeconds": 1,
                    "successThreshold": 1, "failureThreshold": 3},
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
            }],
            "dnsPolicy": "ClusterFirst", "enableServiceLinks": true,
            "nodeName": "virtual-kubelet", "nodeSelector": {"type": "virtual-kubelet"},
            "preemptionPolicy": "PreemptLowerPriority", "priority": 0,
            "restartPolicy": "Always", "schedulerName": "default-scheduler",
            "securityContext": {}, "serviceAccount": "default",
            "serviceAccountName": "default", "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {"key": "virtual-kubelet.io/provider", "operator": "Exists"},
                {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready",
                 "operator": "Exists", "tolerationSeconds": 300},
                {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable",
                 "operator": "Exists", "tolerationSeconds": 300},
            ],
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef":
                        {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ]}}],
        },
        "status": {
            "phase": "Running", "qosClass": "Burstable", "startTime": time,
            "hostIP": "10.1.0.7", "podIP": "10.1.0.7", "podIPs": [{"ip": "10.1.0.7"}],
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": time},
                {"type": "Initialized", "status": "True", "lastTransitionTime": time},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": time},
                {"type": "Ready", "status": "True", "lastTransitionTime": time},
                {"type": "ContainerInstanceCreated", "status": "True", "reason": "Created",
                 "message": format!("ECI container group eci-2ze{i:017}"),
                 "lastTransitionTime": time},
            ],
            "containerStatuses": [{"name": "app",
                "image": "registry.example.com/shop/web:1.4.2", "imageID": "",
                "containerID": format!("eci://eci-2ze{i:017}/app"), "ready": true,
                "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": time}}}],
        },
    })
}

const PODS: usize = 2_000;

/// Bytes still allocated per object after decoding `PODS` of them and dropping the JSON.
fn held_per_pod<T: serde::de::DeserializeOwned>() -> isize {
    let texts: Vec<String> = (0..PODS).map(|i| served_pod(i).to_string()).collect();
    let region = Region::new(ALLOCATOR);
    let held: Vec<T> = texts
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
    let change = region.change();
    drop(held);
    // A realloc counts its growth as allocated and its shrinking as deallocated.
    let held_bytes = change.bytes_allocated as isize - change.bytes_deallocated as isize;
    held_bytes / PODS as isize
}

#[test]
fn a_cached_pod_holds_a_fraction_of_a_pod() {
    let json = served_pod(0).to_string().len();
    let pod = held_per_pod::<Pod>();
    let cached = held_per_pod::<CachedPod>();
    println!(
        "served JSON {json} B; held per pod: k8s-openapi Pod {pod} B, CachedPod {cached} B \
         (inline {} B)",
        std::mem::size_of::<CachedPod>()
    );
    assert!(pod > 10_000, "the realistic pod is realistic: {pod} B");
    assert!(
        cached * 5 < pod,
        "CachedPod {cached} B is not a fifth of Pod {pod} B"
    );
    assert!(cached < 4_500, "CachedPod holds {cached} B");
}
