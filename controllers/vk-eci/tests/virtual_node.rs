//! The operator against the Kubernetes API sandbox and the ECI simulator: the virtual node,
//! pods as container groups, deletion, GC, create failures, leader failover, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::{CLUSTER, NODE, World, condition, eventually, is_ready, phase, wait_for_event};
use eci_sim::{FaultConfig, MillisRange};
use eci_types::wire::{CreateContainerGroupRequest, Tag};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::translate::tags;

async fn node_ready(world: &World) -> Node {
    let nodes: Api<Node> = Api::all(world.client.clone());
    eventually("the virtual node to report Ready", || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get_opt(NODE).await.ok().flatten()?;
            let ready = node
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(node)
        }
    })
    .await
}

#[tokio::test]
async fn the_node_registers_renews_its_lease_and_comes_back_when_deleted() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    let node = node_ready(&world).await;
    let labels = node.labels();
    assert_eq!(labels["type"], "virtual-kubelet");
    assert_eq!(labels["kubernetes.io/role"], "agent");
    assert_eq!(labels["topology.kubernetes.io/region"], "cn-hangzhou");
    let taints = node.spec.as_ref().unwrap().taints.clone().unwrap();
    assert_eq!(taints[0].key, "virtual-kubelet.io/provider");
    let status = node.status.unwrap();
    assert_eq!(status.capacity.unwrap()["pods"].0, "10000");
    assert_eq!(
        status
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port,
        10250
    );

    let leases: Api<Lease> = Api::namespaced(world.client.clone(), "kube-node-lease");
    let lease = leases.get(NODE).await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some(NODE));
    assert_eq!(lease.metadata.owner_references.unwrap()[0].kind, "Node");

    let nodes: Api<Node> = Api::all(world.client.clone());
    nodes.delete(NODE, &DeleteParams::default()).await.unwrap();
    let back = node_ready(&world).await;
    assert_ne!(back.uid(), node.metadata.uid, "a new Node object");
}

#[tokio::test]
async fn rejected_credentials_make_the_node_not_ready_with_the_reason() {
    let world = World::new().await;
    let _operator = world.operator_with("replica-a", "wrong-secret").await;
    let nodes: Api<Node> = Api::all(world.client.clone());
    let reason = eventually("the node to report the rejected AccessKey", || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get_opt(NODE).await.ok().flatten()?;
            let ready = node
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")?;
            ready.reason
        }
    })
    .await;
    assert_eq!(reason, "ECICredentialsRejected");
}

#[tokio::test]
async fn a_pod_runs_as_a_container_group_and_deleting_it_deletes_the_group() {
    let world = World::new().await;
    let operator = world.operator("replica-a").await;
    world.create_pod("web", json!({})).await;
    let pod = world
        .pod_until("web", "Ready", |p: Option<&Pod>| is_ready(p))
        .await;
    assert_eq!(phase(&pod), Some("Running"));
    let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    assert!(ip.starts_with("10."), "{ip}");
    let id = pod.annotations()[INSTANCE_ID].clone();
    let groups = world.groups();
    assert_eq!(groups.len(), 1);
    let (group_id, status, group_tags) = &groups[0];
    assert_eq!(group_id, &id);
    assert_eq!(status, "Running");
    for (key, value) in [
        (tags::CLUSTER_ID, CLUSTER),
        (tags::NAMESPACE, "default"),
        (tags::NAME, "web"),
        (tags::UID, pod.uid().unwrap().as_str()),
    ] {
        assert!(
            group_tags.contains(&(key.to_string(), value.to_string())),
            "{key} tag in {group_tags:?}"
        );
    }
    let container = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert!(container.ready);
    assert!(container.state.as_ref().unwrap().running.is_some());
    wait_for_event(&world, "web", "ContainerGroupCreated").await;
    // ECI's own events are mirrored.
    wait_for_event(&world, "web", "Started").await;

    let metrics = reqwest::get(format!("http://{}/metrics", operator.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"vk_eci_eci_calls_total{action="CreateContainerGroup",code="Success"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("vk_eci_leader 1"), "{metrics}");
    let ready = reqwest::get(format!("http://{}/readyz", operator.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    world
        .pods()
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    world.pod_gone("web", &pod.uid().unwrap()).await;
    eventually("the container group to be deleted", || async {
        world.groups().is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_pod_deleted_while_its_create_is_in_flight_leaves_no_group() {
    let world = World::new().await;
    world.sim.simulator.set_faults(
        "CreateContainerGroup",
        FaultConfig {
            latency_ms: Some(MillisRange::fixed(1_500)),
            ..FaultConfig::default()
        },
    );
    let _operator = world.operator("replica-a").await;
    world.create_pod("slow", json!({})).await;
    eventually("ECI to carry out the create", || async {
        (!world.groups().is_empty()).then_some(())
    })
    .await;
    world
        .pods()
        .delete("slow", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("the late group to be deleted", || async {
        world.groups().is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn orphans_are_collected_and_owned_or_foreign_groups_never() {
    let world = World::new().await;
    let owned = world.create_pod("owned", json!({})).await;
    let create = |name: &str, cluster: &str, uid: &str| {
        let request = CreateContainerGroupRequest {
            region_id: "cn-hangzhou".into(),
            container_group_name: name.into(),
            container: vec![eci_types::wire::Container {
                name: "app".into(),
                image: "nginx".into(),
                ..Default::default()
            }],
            tag: vec![
                Tag::new(tags::CLUSTER_ID, cluster),
                Tag::new(tags::NODE, NODE),
                Tag::new(tags::NAMESPACE, "default"),
                Tag::new(tags::NAME, name),
                Tag::new(tags::UID, uid),
            ],
            ..CreateContainerGroupRequest::default()
        };
        world
            .sim
            .simulator
            .with_state(|sim| sim.create(request, chrono::Utc::now()).unwrap())
    };
    let orphan = create("gone", CLUSTER, "uid-of-a-deleted-pod");
    let foreign = create("theirs", "another-cluster", "uid-elsewhere");
    // Created by a previous leader whose annotation write never landed.
    let adopted = create("owned", CLUSTER, &owned.uid().unwrap());

    let _operator = world.operator("replica-a").await;
    eventually("the orphan to be deleted", || async {
        let ids: HashSet<String> = world.groups().into_iter().map(|g| g.0).collect();
        (!ids.contains(&orphan)).then_some(())
    })
    .await;
    let ids: HashSet<String> = world.groups().into_iter().map(|g| g.0).collect();
    assert!(
        ids.contains(&foreign),
        "another cluster's group is untouched"
    );
    assert!(ids.contains(&adopted), "a group whose pod exists is kept");
}

#[tokio::test]
async fn no_stock_keeps_the_pod_pending_or_fails_it_when_asked() {
    let world = World::new().await;
    world.sim.simulator.with_state(|sim| {
        sim.set_stock("cn-hangzhou-h", None, Some(0));
        sim.set_stock("cn-hangzhou-i", None, Some(0));
    });
    let _operator = world.operator("replica-a").await;
    world.create_pod("patient", json!({})).await;
    world
        .create_pod(
            "strict",
            json!({"k8s.aliyun.com/pod-fail-on-create-err": "true"}),
        )
        .await;
    let strict = world
        .pod_until("strict", "Failed", |p: Option<&Pod>| {
            p.and_then(phase) == Some("Failed")
        })
        .await;
    assert_eq!(
        strict.status.as_ref().unwrap().reason.as_deref(),
        Some("NoStock")
    );
    let patient = world
        .pod_until("patient", "marked not created", |p: Option<&Pod>| {
            p.and_then(|p| condition(p, "ContainerInstanceCreated"))
                .is_some_and(|c| c.status == "False")
        })
        .await;
    assert_eq!(phase(&patient), Some("Pending"));
    assert_eq!(
        condition(&patient, "ContainerInstanceCreated")
            .unwrap()
            .reason
            .as_deref(),
        Some("NoStock")
    );
    wait_for_event(&world, "patient", "NoStock").await;

    world.sim.simulator.with_state(|sim| {
        sim.set_stock("cn-hangzhou-h", None, None);
        sim.set_stock("cn-hangzhou-i", None, None);
    });
    world
        .pod_until("patient", "Ready once stock returns", |p: Option<&Pod>| {
            is_ready(p)
        })
        .await;
}

#[tokio::test]
async fn refused_pods_get_an_event_and_a_reason() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    world
        .create_pod_from(json!({
            "metadata": {"name": "host-net", "annotations": {"k8s.aliyun.com/pod-fail-on-create-err": "true"}},
            "spec": {"nodeName": NODE, "hostNetwork": true,
                     "containers": [{"name": "app", "image": "nginx"}]},
        }))
        .await;
    world
        .create_pod(
            "bad-annotation",
            json!({"k8s.aliyun.com/eci-use-specs": "not a spec"}),
        )
        .await;
    let failed = world
        .pod_until("host-net", "Failed", |p: Option<&Pod>| {
            p.and_then(phase) == Some("Failed")
        })
        .await;
    assert!(
        failed
            .status
            .unwrap()
            .message
            .unwrap()
            .contains("hostNetwork")
    );
    let pending = world
        .pod_until("bad-annotation", "refused", |p: Option<&Pod>| {
            p.and_then(|p| condition(p, "ContainerInstanceCreated"))
                .is_some()
        })
        .await;
    let refused = condition(&pending, "ContainerInstanceCreated").unwrap();
    assert_eq!(refused.reason.as_deref(), Some("InvalidAnnotation"));
    assert!(
        refused
            .message
            .as_deref()
            .unwrap()
            .contains("eci-use-specs"),
        "{refused:?}"
    );
    assert!(world.groups().is_empty());
}

#[tokio::test]
async fn throttling_storms_neither_lose_nor_duplicate_instances() {
    let world = World::new().await;
    world.sim.simulator.set_faults(
        "CreateContainerGroup",
        FaultConfig {
            throttle_rate: 0.4,
            lost_response_rate: 0.2,
            ..FaultConfig::default()
        },
    );
    let _operator = world.operator("replica-a").await;
    for index in 0..12 {
        world.create_pod(&format!("storm-{index}"), json!({})).await;
    }
    for index in 0..12 {
        world
            .pod_until(&format!("storm-{index}"), "Ready", |p: Option<&Pod>| {
                is_ready(p)
            })
            .await;
    }
    let groups = world.groups();
    assert_eq!(groups.len(), 12, "one group per pod, never two");
}

#[tokio::test]
async fn the_spot_notice_sets_the_condition_and_the_release_fails_the_pod() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    // ECI sells spot from 2 vCPU up.
    world
        .create_pod_from(json!({
            "metadata": {"name": "spot", "annotations": {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}},
            "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "nginx",
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]},
        }))
        .await;
    let pod = world
        .pod_until("spot", "Ready", |p: Option<&Pod>| is_ready(p))
        .await;
    let id = pod.annotations()[INSTANCE_ID].clone();
    world
        .sim
        .simulator
        .with_state(|sim| sim.spot_release(std::slice::from_ref(&id), 3.0, chrono::Utc::now()));
    let noticed = world
        .pod_until("spot", "noticed", |p: Option<&Pod>| {
            p.and_then(|p| condition(p, "ContainerInstanceExpired"))
                .is_some()
        })
        .await;
    let expired = condition(&noticed, "ContainerInstanceExpired").unwrap();
    assert_eq!(expired.status, "True");
    assert!(expired.message.as_deref().unwrap().contains("release at"));
    let released = world
        .pod_until("spot", "Failed", |p: Option<&Pod>| {
            p.and_then(phase) == Some("Failed")
        })
        .await;
    assert_eq!(
        released.status.unwrap().reason.as_deref(),
        Some("BidFailed")
    );
}

#[tokio::test]
async fn the_profile_applies_without_restart_and_a_bad_one_keeps_the_last_good() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(world.client.clone(), "kube-system");
    let profile = |vswitch: &str| -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": "eci-profile"},
            "data": {"vSwitchIds": vswitch},
        }))
        .unwrap()
    };
    config_maps
        .create(&PostParams::default(), &profile("vsw-profile-1"))
        .await
        .unwrap();
    // Wait until the operator has seen it: a pod created after this joins that vSwitch.
    let vswitch_of = |pod: &str| {
        let pod = pod.to_string();
        let world = &world;
        async move {
            let pod = world.pods().get(&pod).await.ok()?;
            let id = pod.annotations().get(INSTANCE_ID)?.clone();
            world
                .sim
                .simulator
                .with_state(|sim| sim.group(&id).map(|g| g.vswitch.clone()))
        }
    };
    let mut attempt = 0;
    eventually("a pod to join the profile's vSwitch", || {
        attempt += 1;
        let name = format!("p{attempt}");
        let world = &world;
        async move {
            world.create_pod(&name, json!({})).await;
            let joined = eventually("the pod's group", || vswitch_of(&name)).await;
            (joined == "vsw-profile-1").then_some(())
        }
    })
    .await;

    config_maps
        .replace("eci-profile", &PostParams::default(), &{
            let mut bad = profile("subnet-1");
            bad.metadata.resource_version = config_maps
                .get("eci-profile")
                .await
                .unwrap()
                .resource_version();
            bad
        })
        .await
        .unwrap();
    wait_for_event(&world, "eci-profile", "InvalidProfile").await;
    world.create_pod("after-bad", json!({})).await;
    let joined = eventually("the pod's group", || vswitch_of("after-bad")).await;
    assert_eq!(joined, "vsw-profile-1", "the last good profile stays");
}

#[tokio::test]
async fn a_standby_takes_over_without_duplicating_or_losing_anything() {
    let world = World::new().await;
    let first = world.operator("replica-a").await;
    let second = world.operator("replica-b").await;
    let leases: Api<Lease> = Api::namespaced(world.client.clone(), "kube-system");
    let holder = || {
        let leases = leases.clone();
        async move {
            leases
                .get_opt(&format!("vk-eci-{NODE}"))
                .await
                .ok()
                .flatten()?
                .spec?
                .holder_identity
        }
    };
    let leader = eventually("a leader", holder).await;
    world.create_pod("before", json!({})).await;
    world
        .pod_until("before", "Ready", |p: Option<&Pod>| is_ready(p))
        .await;
    let (stopped, standby) = if leader == "replica-a" {
        (first, "replica-b")
    } else {
        (second, "replica-a")
    };
    stopped.stop().await;
    eventually("the standby to lead", || async {
        (holder().await.as_deref() == Some(standby)).then_some(())
    })
    .await;
    world.create_pod("after", json!({})).await;
    world
        .pod_until("after", "Ready", |p: Option<&Pod>| is_ready(p))
        .await;
    world
        .pods()
        .delete("before", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the new leader to delete the old pod's group", || async {
        (world.groups().len() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_group_that_cannot_be_scheduled_is_replaced_with_a_new_client_token() {
    let config = eci_sim::SimConfig {
        timing: eci_sim::config::TimingConfig {
            schedule_ms: MillisRange::fixed(1_000),
            ..eci_sim::config::TimingConfig::fast()
        },
        ..eci_sim::SimConfig::fast()
    };
    let world = World::with_sim(config).await;
    let _operator = world.operator("replica-a").await;
    world.create_pod("unlucky", json!({})).await;
    let first = eventually("the first group", || async {
        world.groups().first().map(|g| g.0.clone())
    })
    .await;
    // Stock runs out while ECI is still placing the group: it ends ScheduleFailed.
    world.sim.simulator.with_state(|sim| {
        sim.set_stock("cn-hangzhou-h", None, Some(0));
        sim.set_stock("cn-hangzhou-i", None, Some(0));
    });
    wait_for_event(&world, "unlucky", "Rescheduling").await;
    world.sim.simulator.with_state(|sim| {
        sim.set_stock("cn-hangzhou-h", None, None);
        sim.set_stock("cn-hangzhou-i", None, None);
    });
    let pod = world
        .pod_until("unlucky", "Ready on a new group", |p: Option<&Pod>| {
            is_ready(p)
        })
        .await;
    let second = pod.annotations()[INSTANCE_ID].clone();
    assert_ne!(second, first);
    let ids: Vec<String> = world.groups().into_iter().map(|g| g.0).collect();
    assert_eq!(
        ids,
        vec![second],
        "the failed group is deleted, nothing duplicated"
    );
}
