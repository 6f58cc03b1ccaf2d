//! A translated pod must pass the gateway's own validation: the simulator's CreateContainerGroup
//! accepts what the translation produces, and a refusal never reaches ECI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Utc;
use eci_sim::SimConfig;
use eci_sim::state::Sim;
use eci_types::wire::status;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use vk_eci_core::translate::{NodeConfig, References, translate};

#[test]
fn a_rich_pod_translates_into_a_create_eci_accepts() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "checkout-5c8d7.x", "namespace": "shop", "uid": "8b1e7a52-5d1c-4a35-9f0e-2f0c1a7b9d11",
            "annotations": {
                "k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo",
                "k8s.aliyun.com/eci-spot-release-strategy": "api-evict",
                "k8s.aliyun.com/eci-vswitch": "vsw-sim-a,vsw-sim-b",
            },
        },
        "spec": {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 45,
            "initContainers": [{"name": "migrate", "image": "app:1", "command": ["/migrate"]}],
            "containers": [{
                "name": "app", "image": "registry.example.com/shop/checkout:2.3",
                "resources": {"limits": {"cpu": "1500m", "memory": "3Gi"}},
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
                "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            }],
            "volumes": [{"name": "cache", "emptyDir": {}}],
        },
    }))
    .unwrap();
    let node = NodeConfig {
        cluster_id: "c-1".into(),
        node_name: "virtual-kubelet".into(),
        vswitches: vec!["vsw-sim-a".into()],
        ..NodeConfig::default()
    };
    let mut request = translate(&pod, &node, None, &References::default())
        .unwrap()
        .request;
    assert_eq!((request.cpu, request.memory), (Some(2.0), Some(4.0)));
    request.region_id = "cn-hangzhou".into();
    let mut sim = Sim::new(SimConfig::fast()).unwrap();
    let now = Utc::now();
    let id = sim
        .create(request, now)
        .expect("ECI accepts the translated pod");
    sim.advance(now + chrono::TimeDelta::seconds(1));
    let group = sim.group(&id).unwrap();
    assert_eq!(group.status, status::RUNNING);
    assert_eq!(group.containers.len(), 1);
    assert_eq!(group.init_containers.len(), 1);
}
