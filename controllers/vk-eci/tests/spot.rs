//! Spot releases end to end against the sandbox and the simulator: surge rotation (with an
//! HPA and a leader change mid-rotation), api-evict blocked by a PodDisruptionBudget until
//! escalation, a replacement that never gets Ready; and a surge that must be taken back
//! whatever happens: its policy or itself deleted mid-surge, two rotations sharing an HPA,
//! failed scale writes, the leader killed between a surge's intent and its write, `maxSurge: 0`,
//! a notice before the policies are listed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{World, condition, eventually, metric};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use std::time::Duration;
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::crd::{RotationPhase, SpotRotation, SpotRotationPolicy, rotation_name};

fn deployment(
    name: &str,
    replicas: i32,
    annotations: serde_json::Value,
    env: serde_json::Value,
) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {
                    "nodeSelector": {"type": "virtual-kubelet"},
                    "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "app", "image": "nginx", "env": env,
                        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}],
                },
            },
        },
    }))
    .unwrap()
}

async fn create<K>(world: &World, object: K)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(world.client.clone(), "default")
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

async fn pods_of(world: &World, app: &str) -> Vec<Pod> {
    world
        .pods()
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

/// Waits until `count` pods of `app` run on ECI, Ready if asked.
async fn running(world: &World, app: &str, count: usize, ready: bool) -> Vec<Pod> {
    eventually(&format!("{count} pods of {app} on ECI"), || async {
        let pods: Vec<Pod> = pods_of(world, app)
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.annotations().contains_key(INSTANCE_ID))
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter(|p| !ready || is_ready(p))
            .collect();
        (pods.len() == count).then_some(pods)
    })
    .await
}

/// Announces the release of `pod`'s instance in `lead_seconds`.
fn release(world: &World, pod: &Pod, lead_seconds: f64) {
    let id = pod.annotations()[INSTANCE_ID].clone();
    let outcome = world.sim.simulator.with_state(|sim| {
        sim.spot_release(std::slice::from_ref(&id), lead_seconds, chrono::Utc::now())
    });
    assert_eq!(outcome.released, vec![id]);
}

async fn rotation_until(
    world: &World,
    pod: &Pod,
    what: &str,
    done: impl Fn(&SpotRotation) -> bool,
) -> SpotRotation {
    let api: Api<SpotRotation> = Api::namespaced(world.client.clone(), "default");
    let name = rotation_name(&pod.uid().unwrap());
    eventually(&format!("rotation {name} {what}"), || {
        let api = api.clone();
        let name = name.clone();
        let done = &done;
        async move { api.get_opt(&name).await.ok().flatten().filter(|r| done(r)) }
    })
    .await
}

fn phase(rotation: &SpotRotation) -> Option<RotationPhase> {
    rotation.status.as_ref()?.phase
}

fn spot_annotations() -> serde_json::Value {
    json!({"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"})
}

#[tokio::test(flavor = "multi_thread")]
async fn surge_replaces_first_holds_the_hpa_and_survives_a_leader_change() {
    let world = World::new().await;
    let first = world.operator("replica-a").await;
    create(&world, deployment("web", 2, spot_annotations(), json!([]))).await;
    create::<HorizontalPodAutoscaler>(
        &world,
        serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 5},
        }))
        .unwrap(),
    )
    .await;
    create::<SpotRotationPolicy>(
        &world,
        serde_json::from_value(json!({
            "apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
            "metadata": {"name": "web"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "web"}, "strategy": "Surge", "maxSurge": 1},
        }))
        .unwrap(),
    )
    .await;
    let pods = running(&world, "web", 2, true).await;
    let doomed = pods[0].clone();
    release(&world, &doomed, 120.0);

    let surging = rotation_until(&world, &doomed, "surging", |r| {
        r.status.as_ref().is_some_and(|s| s.surged_at.is_some())
    })
    .await;
    assert_eq!(surging.spec.policy.as_deref(), Some("web"));
    let deployments: Api<Deployment> = Api::namespaced(world.client.clone(), "default");
    eventually("the Deployment to surge to 3", || {
        let deployments = deployments.clone();
        async move {
            let replicas = deployments.get("web").await.ok()?.spec?.replicas;
            (replicas == Some(3)).then_some(())
        }
    })
    .await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(world.client.clone(), "default");
    assert_eq!(
        hpas.get("web").await.unwrap().spec.unwrap().min_replicas,
        Some(3),
        "the HPA is held at the surged size"
    );

    // The leader goes away mid-rotation; the standby finishes it from the rotation's status.
    let second = world.operator("replica-b").await;
    first.stop().await;

    let done = rotation_until(&world, &doomed, "Completed", |r| {
        phase(r) == Some(RotationPhase::Completed)
    })
    .await;
    let status = done.status.unwrap();
    let replacement = status.replacement_pod.clone().unwrap();
    assert!(
        status.replacement_ready_at.unwrap().0 <= status.pod_gone_at.unwrap().0,
        "the replacement was Ready before the doomed pod left"
    );
    assert!(status.scaled_down_at.is_some());
    assert_eq!(
        deployments.get("web").await.unwrap().spec.unwrap().replicas,
        Some(2),
        "surged once, taken back once"
    );
    assert_eq!(
        hpas.get("web").await.unwrap().spec.unwrap().min_replicas,
        Some(1),
        "the HPA has its own floor back"
    );
    let names: Vec<String> = running(&world, "web", 2, true)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert!(names.contains(&replacement), "{names:?}");
    assert!(!names.contains(&doomed.name_any()));

    let policies: Api<SpotRotationPolicy> = Api::namespaced(world.client.clone(), "default");
    let policy = eventually("the policy status to count the rotation", || {
        let policies = policies.clone();
        async move {
            policies
                .get("web")
                .await
                .ok()
                .filter(|p| p.status.as_ref().is_some_and(|s| s.completed == 1))
        }
    })
    .await;
    assert_eq!(policy.status.unwrap().active, 0);
    let completed = eventually("the Completed outcome on /metrics", || async {
        metric(
            &second,
            r#"vk_eci_spot_rotations_total{outcome="Completed"}"#,
        )
        .await
        .filter(|v| *v >= 1.0)
    })
    .await;
    assert_eq!(completed, 1.0, "counted once");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_evict_blocked_by_a_budget_escalates_before_the_release() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    let mut annotations = spot_annotations();
    annotations["k8s.aliyun.com/eci-spot-release-strategy"] = json!("api-evict");
    create(&world, deployment("guarded", 1, annotations, json!([]))).await;
    create::<PodDisruptionBudget>(
        &world,
        serde_json::from_value(json!({
            "metadata": {"name": "guarded"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
        }))
        .unwrap(),
    )
    .await;
    let pods = running(&world, "guarded", 1, true).await;
    let doomed = pods[0].clone();
    // Release in 25 s, margin 15 s, grace 2 s: eviction may be tried for about 8 s.
    release(&world, &doomed, 25.0);
    let released_at = chrono::Utc::now() + chrono::TimeDelta::seconds(25);

    let escalated = rotation_until(&world, &doomed, "escalated", |r| {
        r.status.as_ref().is_some_and(|s| s.escalated_at.is_some())
    })
    .await;
    let status = escalated.status.unwrap();
    assert!(
        status.eviction_refusals.unwrap_or(0) >= 1,
        "the budget refused evictions first"
    );
    assert!(status.evicted_at.is_none());
    assert_eq!(escalated.spec.policy, None, "a plain api-evict rotation");
    world
        .pod_gone(&doomed.name_any(), &doomed.uid().unwrap())
        .await;
    assert!(
        chrono::Utc::now() < released_at,
        "the pod was gone (SIGTERM first) before ECI reclaimed the instance"
    );
    let done = rotation_until(&world, &doomed, "Completed", |r| {
        phase(r) == Some(RotationPhase::Completed)
    })
    .await;
    assert!(done.status.unwrap().pod_gone_at.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replacement_never_ready_degrades_to_eviction_before_the_deadline() {
    let world = World::new().await;
    let operator = world.operator("replica-a").await;
    let never_ready = json!([{"name": "ECI_SIM_READY_AFTER_SECONDS", "value": "3600"}]);
    create(
        &world,
        deployment("stuck", 1, spot_annotations(), never_ready),
    )
    .await;
    create::<SpotRotationPolicy>(
        &world,
        serde_json::from_value(json!({
            "apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
            "metadata": {"name": "stuck"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "stuck"}, "readinessTimeout": "5s"},
        }))
        .unwrap(),
    )
    .await;
    let pods = running(&world, "stuck", 1, false).await;
    let doomed = pods[0].clone();
    release(&world, &doomed, 30.0);
    let released_at = chrono::Utc::now() + chrono::TimeDelta::seconds(30);
    let degraded = rotation_until(&world, &doomed, "Degraded with its pod gone", |r| {
        phase(r) == Some(RotationPhase::Degraded)
            && r.status.as_ref().is_some_and(|s| s.pod_gone_at.is_some())
    })
    .await;
    assert!(chrono::Utc::now() < released_at);
    let status = degraded.status.unwrap();
    assert!(
        status.surged_at.is_some(),
        "it tried to surge first: {status:?}"
    );
    assert!(
        status.evicted_at.is_some(),
        "then evicted, with no budget in the way: {status:?}"
    );
    let deployments: Api<Deployment> = Api::namespaced(world.client.clone(), "default");
    let replicas = eventually("the surge to be taken back", || {
        let deployments = deployments.clone();
        async move {
            let replicas = deployments.get("stuck").await.ok()?.spec?.replicas?;
            (replicas == 1).then_some(replicas)
        }
    })
    .await;
    assert_eq!(replicas, 1);
    let degraded = eventually("the Degraded outcome on /metrics", || async {
        metric(
            &operator,
            r#"vk_eci_spot_rotations_total{outcome="Degraded"}"#,
        )
        .await
    })
    .await;
    assert_eq!(degraded, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_eviction_goes_through_once_the_budget_allows_it() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    let mut annotations = spot_annotations();
    annotations["k8s.aliyun.com/eci-spot-release-strategy"] = json!("api-evict");
    create(&world, deployment("freed", 1, annotations, json!([]))).await;
    create::<PodDisruptionBudget>(
        &world,
        serde_json::from_value(json!({
            "metadata": {"name": "freed"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "freed"}}},
        }))
        .unwrap(),
    )
    .await;
    let pods = running(&world, "freed", 1, true).await;
    let doomed = pods[0].clone();
    release(&world, &doomed, 120.0);
    rotation_until(&world, &doomed, "refused", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.eviction_refusals.unwrap_or(0) >= 1)
    })
    .await;
    Api::<PodDisruptionBudget>::namespaced(world.client.clone(), "default")
        .delete("freed", &Default::default())
        .await
        .unwrap();
    let evicted = rotation_until(&world, &doomed, "evicted", |r| {
        r.status.as_ref().is_some_and(|s| s.evicted_at.is_some())
    })
    .await;
    assert!(evicted.status.unwrap().escalated_at.is_none());
    world
        .pod_gone(&doomed.name_any(), &doomed.uid().unwrap())
        .await;
    let rotations: Api<SpotRotation> = Api::namespaced(world.client.clone(), "default");
    let for_pod = rotations
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| Some(&r.spec.pod.uid) == doomed.uid().as_ref())
        .count();
    assert_eq!(for_pod, 1, "every notice of the pod lands on one rotation");
}

fn policy(name: &str, spec: serde_json::Value) -> SpotRotationPolicy {
    serde_json::from_value(json!({
        "apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// The policy CRD as an older release installed it: durations and counts without bounds.
async fn install_unbounded_policy_crd(world: &World) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(world.client.clone());
    let name = "spotrotationpolicies.spot.vk-eci.io";
    let mut crd = serde_json::to_value(crds.get(name).await.unwrap()).unwrap();
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for field in [
        "deadlineMargin",
        "readinessTimeout",
        "maxConcurrent",
        "historyLimit",
    ] {
        let property = spec[field].as_object_mut().unwrap();
        for bound in [
            "pattern",
            "maxLength",
            "maximum",
            "x-kubernetes-validations",
        ] {
            property.remove(bound);
        }
    }
    crds.replace(
        name,
        &PostParams::default(),
        &serde_json::from_value(crd).unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_bounds_are_enforced_and_an_older_crd_cannot_crash_the_operator() {
    let world = World::new().await;
    let policies: Api<SpotRotationPolicy> = Api::namespaced(world.client.clone(), "default");
    for (spec, field) in [
        (
            json!({"selector": {}, "deadlineMargin": "3000000000h"}),
            "spec.deadlineMargin",
        ),
        (
            json!({"selector": {}, "readinessTimeout": "9223372036854775807ms1ms"}),
            "spec.readinessTimeout",
        ),
        (
            json!({"selector": {}, "maxConcurrent": 5000}),
            "spec.maxConcurrent",
        ),
        (
            json!({"selector": {}, "historyLimit": 100000}),
            "spec.historyLimit",
        ),
    ] {
        match policies
            .create(&PostParams::default(), &policy("bounded", spec.clone()))
            .await
        {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{spec}");
                assert!(status.message.contains(field), "{}", status.message);
            }
            other => panic!("{spec} was accepted: {other:?}"),
        }
    }

    // Under an older CRD the same values are stored, and reach the operator.
    install_unbounded_policy_crd(&world).await;
    create(
        &world,
        policy(
            "loose",
            json!({
                "targetRef": {"kind": "Deployment", "name": "loose"},
                "deadlineMargin": "3000000000h",
                "readinessTimeout": "9223372036854775807ms1ms",
                "maxConcurrent": 2147483647,
                "historyLimit": 2147483647,
            }),
        ),
    )
    .await;
    let _operator = world.operator("replica-a").await;
    create(
        &world,
        deployment("loose", 1, spot_annotations(), json!([])),
    )
    .await;
    let pods = running(&world, "loose", 1, true).await;
    let doomed = pods[0].clone();
    release(&world, &doomed, 60.0);
    let rotation = rotation_until(&world, &doomed, "created", |_| true).await;
    assert_eq!(
        rotation.spec.release_at.0.as_second() - rotation.spec.deadline.0.as_second(),
        3600,
        "the margin is clamped to its maximum, 1h"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(world.client.clone());
    let note = eventually("the policy to report its out-of-bounds values", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("SpotPolicyOutOfBounds")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("loose")
                })
                .and_then(|e| e.note)
        }
    })
    .await;
    assert!(
        note.contains("deadlineMargin `3000000000h` is above the maximum 1h; using 1h"),
        "{note}"
    );
    assert!(note.contains("maxConcurrent 2147483647"), "{note}");
    // A margin of an hour leaves no window: the pod is let go at once, SIGTERM first.
    world
        .pod_gone(&doomed.name_any(), &doomed.uid().unwrap())
        .await;
}

/// Pods whose replacements take `seconds` to be Ready, so a surge lasts long enough to
/// interfere with.
fn ready_after(seconds: u32) -> serde_json::Value {
    json!([{"name": "ECI_SIM_READY_AFTER_SECONDS", "value": seconds.to_string()}])
}

fn hpa(name: &str, min: i32) -> HorizontalPodAutoscaler {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": min, "maxReplicas": 10},
    }))
    .unwrap()
}

async fn replicas_of(world: &World, name: &str) -> i32 {
    Api::<Deployment>::namespaced(world.client.clone(), "default")
        .get(name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .replicas
        .unwrap()
}

/// The HPA's `minReplicas`, and whether it still carries vk-eci's hold annotations.
async fn hpa_floor(world: &World, name: &str) -> (Option<i32>, bool) {
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(world.client.clone(), "default")
        .get(name)
        .await
        .unwrap();
    let held = hpa
        .annotations()
        .keys()
        .any(|k| k.starts_with("spot.vk-eci.io/"));
    (hpa.spec.unwrap().min_replicas, held)
}

async fn replicas_become(world: &World, name: &str, want: i32) {
    eventually(&format!("{name} at {want} replicas"), || async {
        (replicas_of(world, name).await == want).then_some(())
    })
    .await;
}

async fn hpa_back_to(world: &World, name: &str, want: i32) {
    eventually(
        &format!("the HPA {name} back at {want}, unheld"),
        || async { (hpa_floor(world, name).await == (Some(want), false)).then_some(()) },
    )
    .await;
}

/// A Deployment `name` of `replicas` slow-to-Ready spot pods with an HPA at `min`, a surge
/// policy, and its pods running.
async fn surging_setup(world: &World, name: &str, replicas: i32, max_surge: i32) -> Vec<Pod> {
    create(
        world,
        deployment(name, replicas, spot_annotations(), ready_after(4)),
    )
    .await;
    create(world, hpa(name, 1)).await;
    create(
        world,
        policy(
            name,
            json!({"targetRef": {"kind": "Deployment", "name": name}, "maxSurge": max_surge}),
        ),
    )
    .await;
    running(world, name, usize::try_from(replicas).unwrap(), true).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_deleted_mid_surge_takes_back_the_surge_and_the_hpa_hold() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    let pods = surging_setup(&world, "web", 2, 1).await;
    let doomed = pods[0].clone();
    release(&world, &doomed, 120.0);
    replicas_become(&world, "web", 3).await;
    assert_eq!(hpa_floor(&world, "web").await.0, Some(3), "the HPA is held");

    Api::<SpotRotationPolicy>::namespaced(world.client.clone(), "default")
        .delete("web", &Default::default())
        .await
        .unwrap();
    let rotations: Api<SpotRotation> = Api::namespaced(world.client.clone(), "default");
    let name = rotation_name(&doomed.uid().unwrap());
    eventually("the rotation to go with its policy", || async {
        rotations
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    replicas_become(&world, "web", 2).await;
    hpa_back_to(&world, "web", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_deleted_mid_surge_takes_back_the_surge_and_the_hpa_hold() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    let pods = surging_setup(&world, "web", 2, 1).await;
    let doomed = pods[0].clone();
    release(&world, &doomed, 120.0);
    let surging = rotation_until(&world, &doomed, "surging", |r| {
        r.status.as_ref().is_some_and(|s| s.surged_at.is_some())
    })
    .await;
    replicas_become(&world, "web", 3).await;

    let rotations: Api<SpotRotation> = Api::namespaced(world.client.clone(), "default");
    rotations
        .delete(&surging.name_any(), &Default::default())
        .await
        .unwrap();
    let old_uid = surging.uid();
    eventually("the deleted rotation to go", || async {
        let now = rotations.get_opt(&surging.name_any()).await.unwrap();
        (now.and_then(|r| r.uid()) != old_uid).then_some(())
    })
    .await;
    // The pod's notice still stands, so its rotation may start again: whatever it does, the
    // workload and the HPA end where they began.
    eventually("no rotation of the pod left holding a surge", || async {
        let now = rotations.get_opt(&surging.name_any()).await.unwrap();
        now.is_none_or(|r| phase(&r) == Some(RotationPhase::Completed))
            .then_some(())
    })
    .await;
    replicas_become(&world, "web", 2).await;
    hpa_back_to(&world, "web", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_rotations_share_one_hpa_hold_and_a_user_edit_during_it_is_kept() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    let pods = surging_setup(&world, "web", 3, 2).await;
    release(&world, &pods[0], 120.0);
    release(&world, &pods[1], 120.0);
    replicas_become(&world, "web", 5).await;
    eventually("the HPA held at 5", || async {
        (hpa_floor(&world, "web").await.0 == Some(5)).then_some(())
    })
    .await;

    // The user raises their own floor while both surges hold the HPA.
    Api::<HorizontalPodAutoscaler>::namespaced(world.client.clone(), "default")
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"minReplicas": 2}})),
        )
        .await
        .unwrap();
    for doomed in &pods[..2] {
        rotation_until(&world, doomed, "Completed", |r| {
            phase(r) == Some(RotationPhase::Completed)
        })
        .await;
    }
    replicas_become(&world, "web", 3).await;
    hpa_back_to(&world, "web", 2).await;
}

/// A Deployment `web` of two spot pods (Ready 3 s after start) under a policy surging by
/// one, and its pods running.
async fn two_web_pods_surging_by_one(world: &World) -> Vec<Pod> {
    create(
        world,
        deployment("web", 2, spot_annotations(), ready_after(3)),
    )
    .await;
    create(
        world,
        policy(
            "web",
            json!({"targetRef": {"kind": "Deployment", "name": "web"}, "maxSurge": 1}),
        ),
    )
    .await;
    running(world, "web", 2, true).await
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_scale_writes_after_the_intent_are_retried_up_and_down() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    let pods = two_web_pods_surging_by_one(&world).await;
    let doomed = pods[0].clone();
    let faults = world.sandbox.sandbox.faults();
    let up = faults.inject(
        kube_sandbox::Fault::on("update", "deployments/scale")
            .error(500)
            .times(1),
    );
    // Released in 40 s: a surge never retried would give up at about 13 s and evict.
    release(&world, &doomed, 40.0);
    replicas_become(&world, "web", 3).await;
    assert_eq!(faults.fired(up), 1, "the surge's first write failed");
    let down = faults.inject(
        kube_sandbox::Fault::on("update", "deployments/scale")
            .error(500)
            .times(1),
    );
    let done = rotation_until(&world, &doomed, "Completed", |r| {
        phase(r) == Some(RotationPhase::Completed)
    })
    .await;
    assert_eq!(faults.fired(down), 1, "the take-back's first write failed");
    assert!(done.status.unwrap().replacement_pod.is_some());
    replicas_become(&world, "web", 2).await;
}

/// The leader dies after recording the surge's intent, while its scale write is still on
/// the wire (the sandbox holds it, then applies it or not: a lost response). The standby
/// takes over from the rotation's status: it surges at most once, finishes the rotation
/// and leaves the workload at its size.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_between_the_surge_intent_and_its_scale_surges_once() {
    let world = World::new().await;
    let first = world.operator("replica-a").await;
    let pods = two_web_pods_surging_by_one(&world).await;
    let doomed = pods[0].clone();
    let most = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let watching = {
        let most = most.clone();
        let deployments = Api::<Deployment>::namespaced(world.client.clone(), "default");
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut changes = kube::runtime::watcher::watch_object(deployments, "web").boxed();
            while let Some(Ok(Some(deployment))) = changes.next().await {
                let replicas = deployment.spec.and_then(|s| s.replicas).unwrap_or(0);
                most.fetch_max(replicas, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let faults = world.sandbox.sandbox.faults();
    let held = faults.inject(
        kube_sandbox::Fault::on("update", "deployments/scale")
            .delay(std::time::Duration::from_secs(5))
            .times(1),
    );
    release(&world, &doomed, 60.0);
    rotation_until(&world, &doomed, "recording its surge", |r| {
        r.status.as_ref().is_some_and(|s| s.surge.is_some())
    })
    .await;
    eventually("the surge's scale write on the wire", || async {
        (faults.fired(held) == 1).then_some(())
    })
    .await;
    let second = world.operator("replica-b").await;
    drop(first);
    let done = rotation_until(&world, &doomed, "Completed under the new leader", |r| {
        phase(r) == Some(RotationPhase::Completed)
    })
    .await;
    assert!(done.status.unwrap().replacement_pod.is_some());
    replicas_become(&world, "web", 2).await;
    assert_eq!(
        most.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "surged exactly once, never past desired + maxSurge"
    );
    watching.abort();
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_surge_zero_rotates_by_eviction() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    create(&world, deployment("web", 2, spot_annotations(), json!([]))).await;
    create(
        &world,
        policy(
            "web",
            json!({"targetRef": {"kind": "Deployment", "name": "web"}, "maxSurge": 0}),
        ),
    )
    .await;
    let pods = running(&world, "web", 2, true).await;
    let doomed = pods[0].clone();
    release(&world, &doomed, 120.0);
    let done = rotation_until(&world, &doomed, "Completed", |r| {
        assert!(
            r.status.as_ref().is_none_or(|s| s.surged_at.is_none()),
            "{r:?}"
        );
        phase(r) == Some(RotationPhase::Completed)
    })
    .await;
    assert_eq!(done.spec.strategy, vk_eci_core::crd::Strategy::Evict);
    assert!(done.status.unwrap().evicted_at.is_some());
    assert_eq!(replicas_of(&world, "web").await, 2, "never surged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notice_seen_before_the_policies_are_listed_still_follows_its_policy() {
    let world = World::new().await;
    let first = world.operator("replica-a").await;
    let mut annotations = spot_annotations();
    annotations["k8s.aliyun.com/eci-spot-release-strategy"] = json!("api-evict");
    create(&world, deployment("web", 2, annotations, json!([]))).await;
    create(
        &world,
        policy(
            "web",
            json!({"targetRef": {"kind": "Deployment", "name": "web"}, "maxSurge": 1}),
        ),
    )
    .await;
    let pods = running(&world, "web", 2, true).await;
    first.stop().await;
    let doomed = pods[0].clone();
    release(&world, &doomed, 120.0);
    world.sandbox.sandbox.faults().inject(
        kube_sandbox::Fault::on("list", "spotrotationpolicies")
            .delay(std::time::Duration::from_secs(4))
            .times(1),
    );
    let _second = world.operator("replica-b").await;
    let rotation = rotation_until(&world, &doomed, "created", |_| true).await;
    assert_eq!(rotation.spec.policy.as_deref(), Some("web"));
    assert_eq!(rotation.spec.strategy, vk_eci_core::crd::Strategy::Surge);
}

/// A notice queued behind `maxConcurrent` waits from the cache: it reads nothing of its
/// workload (no HPA lookup, no scale read) and so never holds up the workload's turn, which
/// the surge that frees its slot needs. Once the slot frees it surges in its turn.
#[tokio::test(flavor = "multi_thread")]
async fn a_notice_queued_for_a_slot_waits_without_reading_its_workload() {
    let world = World::new().await;
    let _operator = world.operator("replica-a").await;
    create(
        &world,
        deployment("web", 3, spot_annotations(), ready_after(8)),
    )
    .await;
    create(
        &world,
        policy(
            "web",
            json!({"targetRef": {"kind": "Deployment", "name": "web"},
                   "maxSurge": 2, "maxConcurrent": 1}),
        ),
    )
    .await;
    let pods = running(&world, "web", 3, true).await;
    release(&world, &pods[0], 120.0);
    release(&world, &pods[1], 120.0);
    replicas_become(&world, "web", 4).await;
    let rotations: Vec<SpotRotation> = {
        let mut found = Vec::new();
        for doomed in &pods[..2] {
            found.push(rotation_until(&world, doomed, "planned", |r| r.status.is_some()).await);
        }
        found
    };
    let queued = rotations
        .iter()
        .find(|r| r.status.as_ref().is_some_and(|s| s.surged_at.is_none()))
        .expect("one notice is queued behind maxConcurrent 1")
        .clone();

    let faults = world.sandbox.sandbox.faults();
    let lookups = faults
        .inject(kube_sandbox::Fault::on("list", "horizontalpodautoscalers").delay(Duration::ZERO));
    // The surged replacement takes 8 s to be Ready, so the slot stays taken meanwhile; a
    // queued notice retries every second.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still = Api::<SpotRotation>::namespaced(world.client.clone(), "default")
        .get(&queued.name_any())
        .await
        .unwrap();
    assert!(
        still.status.as_ref().is_some_and(|s| s.surged_at.is_none()),
        "the notice is still queued"
    );
    assert!(
        faults.fired(lookups) <= 1,
        "a queued notice looked up its HPA {} times in 4 s",
        faults.fired(lookups)
    );

    for doomed in &pods[..2] {
        rotation_until(&world, doomed, "Completed", |r| {
            phase(r) == Some(RotationPhase::Completed)
        })
        .await;
    }
    replicas_become(&world, "web", 3).await;
}
