//! What vk-eci must never do (design §8a), each under the failure that used to make it happen:
//! delete a group whose pod exists, leave a pod Ready without a group, create a second group
//! for one pod, fail a pod for its own retry, or act on a group that is not the pod's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{World, eventually, is_ready, metric, phase, wait_for_event};
use eci_sim::FaultConfig;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::translate::tags;

/// Ids of the simulator's groups tagged with the pod UID `uid`.
fn groups_of(world: &World, uid: &str) -> Vec<String> {
    world
        .groups()
        .into_iter()
        .filter(|(_, _, group_tags)| group_tags.contains(&(tags::UID.to_string(), uid.to_string())))
        .map(|(id, _, _)| id)
        .collect()
}

/// The service account `app`, whose tokens the `tokened` pod mounts.
async fn create_service_account(world: &World) {
    let accounts: Api<ServiceAccount> = Api::namespaced(world.client.clone(), "default");
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
}

/// A pod with a projected service account token: each create attempt mints a new token,
/// so two attempts never send the same parameters.
fn tokened_pod() -> serde_json::Value {
    json!({
        "metadata": {"name": "tokened"},
        "spec": {
            "nodeName": common::NODE,
            "serviceAccountName": "app",
            "containers": [{"name": "app", "image": "nginx:1.27",
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/token"}]}],
            "volumes": [{"name": "token", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}}],
        },
    })
}

#[tokio::test]
async fn a_pod_whose_group_vanished_fails_and_stops_being_ready() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    world.create_pod("web", json!({})).await;
    let pod = world
        .pod_until("web", "Ready", |p: Option<&Pod>| is_ready(p))
        .await;
    let id = pod.annotations()[INSTANCE_ID].clone();

    // Gone from ECI behind our back (a console delete, an account clean-up).
    world.sim.simulator.with_state(|sim| {
        let now = chrono::Utc::now();
        sim.delete(&id, true, now).unwrap();
        sim.advance(now + chrono::TimeDelta::seconds(60));
        assert!(sim.group(&id).is_none(), "the group is gone from ECI");
    });

    let pod = world
        .pod_until("web", "Failed", |p: Option<&Pod>| {
            p.and_then(phase) == Some("Failed")
        })
        .await;
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.reason.as_deref(), Some("ContainerInstanceLost"));
    assert!(!is_ready(Some(&pod)), "a pod without a group is not Ready");
    assert!(
        status.container_statuses.iter().flatten().all(|c| !c.ready),
        "{status:?}"
    );
    wait_for_event(&world, "web", "ContainerInstanceLost").await;
    assert!(
        world.groups().is_empty(),
        "no group is made for a pod that ran"
    );
}

#[tokio::test]
async fn a_create_retried_after_a_lost_answer_adopts_its_group_and_never_fails_the_pod() {
    let world = World::new().await;
    create_service_account(&world).await;
    // ECI carries the creates out but every answer is lost: the client gives up and the
    // controller retries later, minting a new service account token for the same ClientToken.
    world.sim.simulator.set_faults(
        "CreateContainerGroup",
        FaultConfig {
            lost_response_rate: 1.0,
            ..FaultConfig::default()
        },
    );
    let _operator = world.operator("replica-a").await;
    let pod = world.create_pod_from(tokened_pod()).await;
    let uid = pod.uid().unwrap();
    let made = eventually("the first attempt's group", || async {
        groups_of(&world, &uid).first().cloned()
    })
    .await;
    world
        .pod_until("tokened", "marked for a retry", |p: Option<&Pod>| {
            p.is_some_and(|p| p.annotations().contains_key("vk-eci.io/create-retry"))
        })
        .await;
    world
        .sim
        .simulator
        .set_faults("CreateContainerGroup", FaultConfig::default());

    let pod = world
        .pod_until("tokened", "Ready", |p: Option<&Pod>| {
            assert_ne!(
                p.and_then(phase),
                Some("Failed"),
                "our own retry failed the pod: {p:#?}"
            );
            is_ready(p)
        })
        .await;
    assert_eq!(pod.annotations()[INSTANCE_ID], made, "the group is adopted");
    assert_eq!(groups_of(&world, &uid), vec![made], "never a second group");
}

#[tokio::test]
async fn a_forged_instance_id_neither_deletes_another_group_nor_blocks_the_pod() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    world.create_pod("victim", json!({})).await;
    let victim = world
        .pod_until("victim", "Ready", |p: Option<&Pod>| is_ready(p))
        .await;
    let victim_group = victim.annotations()[INSTANCE_ID].clone();

    world
        .create_pod("forger", json!({ INSTANCE_ID: victim_group }))
        .await;
    let forger = world
        .pod_until("forger", "Ready on its own group", |p: Option<&Pod>| {
            is_ready(p)
                && p.is_some_and(|p| p.annotations().get(INSTANCE_ID) != Some(&victim_group))
        })
        .await;
    wait_for_event(&world, "forger", "ForeignInstanceId").await;
    let own = forger.annotations()[INSTANCE_ID].clone();
    assert_eq!(groups_of(&world, &forger.uid().unwrap()), vec![own]);

    // The forger puts the victim's id back and is deleted: only its own group goes.
    world
        .pods()
        .patch(
            "forger",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {INSTANCE_ID: victim_group}}}),
            ),
        )
        .await
        .unwrap();
    world
        .pods()
        .delete("forger", &DeleteParams::default())
        .await
        .unwrap();
    world.pod_gone("forger", &forger.uid().unwrap()).await;
    let ids: Vec<String> = world.groups().into_iter().map(|g| g.0).collect();
    assert_eq!(ids, vec![victim_group], "the victim's group lives on");
    let victim = world.pods().get("victim").await.unwrap();
    assert!(is_ready(Some(&victim)));
}

#[tokio::test]
async fn a_pod_whose_group_cannot_be_stopped_is_removed_after_its_grace_period() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    let pod = world
        .create_pod_from(json!({
            "metadata": {"name": "stuck"},
            "spec": {
                "nodeName": common::NODE,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "app", "image": "nginx:1.27"}],
            },
        }))
        .await;
    world
        .pod_until("stuck", "Ready", |p: Option<&Pod>| is_ready(p))
        .await;
    world.sim.simulator.set_faults(
        "DeleteContainerGroup",
        FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        },
    );
    world
        .pods()
        .delete("stuck", &DeleteParams::default())
        .await
        .unwrap();
    world.pod_gone("stuck", &pod.uid().unwrap()).await;

    // ECI recovers: the group, whose pod the API server no longer has, is collected.
    world
        .sim
        .simulator
        .set_faults("DeleteContainerGroup", FaultConfig::default());
    eventually("the orphaned group to be collected", || async {
        world.groups().is_empty().then_some(())
    })
    .await;
}

/// Waits until the operator has finished `passes` more status sync passes.
async fn sync_passes(operator: &common::RunningOperator, passes: f64) {
    let series = "vk_eci_status_sync_duration_seconds_count";
    let start = metric(operator, series).await.unwrap_or(0.0);
    eventually(&format!("{passes} status sync passes"), || async {
        (metric(operator, series).await? >= start + passes).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_restart_while_the_pod_list_is_slow_deletes_no_group() {
    let world = World::new().await;
    let operator = world.operator("replica-a").await;
    for index in 0..5 {
        world.create_pod(&format!("web-{index}"), json!({})).await;
    }
    for index in 0..5 {
        world
            .pod_until(&format!("web-{index}"), "Ready", |p: Option<&Pod>| {
                is_ready(p)
            })
            .await;
    }
    operator.stop().await;

    // The same replica comes back (an OOM kill, a rollout) while the API server takes
    // seconds to answer the pod LIST, as it does for thousands of pods.
    let slow_list = world
        .sandbox
        .sandbox
        .faults()
        .inject(kube_sandbox::Fault::on("list", "pods").delay(Duration::from_secs(3)));
    let operator = world.operator("replica-a").await;
    eventually("the slow pod list to be served", || async {
        (world.sandbox.sandbox.faults().fired(slow_list) > 0).then_some(())
    })
    .await;
    // Two full passes (every 2 s) after the cache synced: enough for the orphan GC to have
    // acted twice on whatever it believed.
    sync_passes(&operator, 6.0).await;
    assert_eq!(
        world.groups().len(),
        5,
        "every group whose pod exists is kept"
    );
    for index in 0..5 {
        let pod = world.pods().get(&format!("web-{index}")).await.unwrap();
        assert!(is_ready(Some(&pod)), "web-{index} is still Ready");
    }
}

#[tokio::test]
async fn a_leader_whose_lease_calls_hang_steps_down_before_its_lease_could_pass_on() {
    let world = World::new().await;
    let operator = world.operator("replica-a").await;
    eventually("leadership", || async {
        (metric(&operator, "vk_eci_leader").await? == 1.0).then_some(())
    })
    .await;
    let hung = std::time::Instant::now();
    world.sandbox.sandbox.faults().inject(
        kube_sandbox::Fault::resource("leases")
            .namespace("kube-system")
            .hang(),
    );
    eventually("the leader to step down", || async {
        (metric(&operator, "vk_eci_leader").await? == 0.0).then_some(())
    })
    .await;
    // The test replicas' leases last 3 s: another replica could take over no sooner.
    let stepped_down = hung.elapsed();
    assert!(
        stepped_down < Duration::from_secs(3),
        "stepped down after {stepped_down:?}"
    );
    // Each round gives up at its deadline, so the election loop keeps turning.
    let health = reqwest::get(format!("http://{}/healthz", operator.admin))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_pod_that_cannot_be_removed_holds_up_no_other_pod() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    let stuck = world
        .create_pod_from(json!({
            "metadata": {"name": "stuck"},
            "spec": {
                "nodeName": common::NODE,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "app", "image": "nginx:1.27",
                    "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}}}],
            },
        }))
        .await;
    world
        .pod_until("stuck", "Ready", |p: Option<&Pod>| is_ready(p))
        .await;
    // The user's graceful delete goes through; vk-eci's final removal (once the group has
    // stopped, a second later) is refused.
    world
        .pods()
        .delete("stuck", &DeleteParams::default())
        .await
        .unwrap();
    let refuse = world.sandbox.sandbox.faults().inject(
        kube_sandbox::Fault::on("delete", "pods")
            .name("stuck")
            .error(500),
    );
    eventually("the removal of the stopped pod to be refused", || async {
        (world.sandbox.sandbox.faults().fired(refuse) >= 3).then_some(())
    })
    .await;

    world.create_pod("later", json!({})).await;
    world
        .pod_until("later", "Ready", |p: Option<&Pod>| is_ready(p))
        .await;
    world.sandbox.sandbox.faults().remove(refuse);
    world.pod_gone("stuck", &stuck.uid().unwrap()).await;
}

#[tokio::test]
async fn a_create_whose_instance_id_write_failed_adopts_its_group_on_the_retry() {
    let world = World::new().await;
    create_service_account(&world).await;
    // The group is made, but recording its id on the pod fails once: the next attempt
    // (same ClientToken, a new token in its parameters) meets IdempotentParameterMismatch.
    let lost_write = world.sandbox.sandbox.faults().inject(
        kube_sandbox::Fault::on("patch", "pods")
            .name("tokened")
            .error(500)
            .times(1),
    );
    let _operator = world.operator("replica-a").await;
    world.create_pod_from(tokened_pod()).await;
    let pod = world
        .pod_until("tokened", "Ready", |p: Option<&Pod>| {
            assert_ne!(p.and_then(phase), Some("Failed"), "{p:#?}");
            is_ready(p)
        })
        .await;
    assert_eq!(world.sandbox.sandbox.faults().fired(lost_write), 1);
    let uid = pod.uid().unwrap();
    assert_eq!(
        groups_of(&world, &uid),
        vec![pod.annotations()[INSTANCE_ID].clone()],
        "one group, adopted"
    );
}
