//! Whole-binary scenarios: the real `vk-eci run` and `vk-eci sim` processes against the
//! sandbox, judged only from the Kubernetes API and the simulator's own records. With
//! `VK_ECI_E2E_CONTROL_PLANE` set to the admin kubeconfig of a real control plane
//! (`hack/control-plane.sh test`), the same scenarios run there instead: the real scheduler,
//! ReplicaSet, Deployment and disruption controllers, and the real authorizer holding vk-eci to
//! the chart's RBAC.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use vk_eci_e2e::stack::{Stack, vk_eci_binary, wait};

const LIMIT: Duration = Duration::from_secs(60);

async fn stack(name: &str) -> Stack {
    let dir = std::env::temp_dir().join(format!("vk-eci-scenario-{name}-{}", std::process::id()));
    let vk_eci = vk_eci_binary().unwrap();
    let sim_args = ["--seed", "7"];
    if let Some(kubeconfig) = std::env::var_os("VK_ECI_E2E_CONTROL_PLANE") {
        // Scenarios run side by side on one control plane, each in its own namespace and node.
        let name = format!("vk-eci-{name}-{}", std::process::id());
        return Stack::on_control_plane(&vk_eci, &dir, &sim_args, kubeconfig.as_ref(), &name)
            .await
            .unwrap();
    }
    let stack = Stack::start(&vk_eci, &dir, &sim_args).await.unwrap();
    stack.apply_crds().await.unwrap();
    stack
}

fn sim_json(stack: &Stack, args: &[&str]) -> Value {
    let output = stack.sim_ctl(args).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn sim_ok(stack: &Stack, args: &[&str]) {
    let output = stack.sim_ctl(args).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Deployment whose pods go to the stack's virtual node.
fn deployment(stack: &Stack, name: &str, replicas: i32, annotations: Value) -> String {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"nodeSelector": {"type": "virtual-kubelet", "kubernetes.io/hostname": stack.node},
                    "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{"name": "app", "image": "nginx",
                        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]}}}
    })
    .to_string()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn ready_pods(stack: &Stack, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(stack.client.clone(), &stack.namespace)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(is_ready)
        .collect()
}

fn rotations(stack: &Stack) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("spot.vk-eci.io", "v1alpha1", "SpotRotation"),
        "spotrotations",
    );
    Api::namespaced_with(stack.client.clone(), &stack.namespace, &resource)
}

async fn scale(stack: &Stack, name: &str, replicas: i32) {
    Api::<Deployment>::namespaced(stack.client.clone(), &stack.namespace)
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

/// Scenarios 2 and 3: 50 pods Running with simulator IPs and ECI's events; scaled to 0,
/// every container group is gone and none was ever created twice.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_pods_run_and_scale_to_zero_without_orphans_or_duplicates() {
    let stack = stack("fifty").await;
    let _operator = stack.operator("replica-a").unwrap();
    stack
        .apply_yaml(
            &deployment(&stack, "fleet", 50, json!({})),
            &stack.namespace,
        )
        .await
        .unwrap();
    let pods = wait("50 Ready pods", LIMIT, || async {
        let ready = ready_pods(&stack, "fleet").await;
        (ready.len() == 50).then_some(ready)
    })
    .await
    .unwrap();
    for pod in &pods {
        let ip = pod
            .status
            .as_ref()
            .unwrap()
            .pod_ip
            .clone()
            .unwrap_or_default();
        assert!(ip.starts_with("10."), "{ip}");
    }
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(stack.client.clone(), &stack.namespace);
    let started = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Started"))
        .count();
    assert!(started > 0, "ECI events show as pod events");

    scale(&stack, "fleet", 0).await;
    wait("every container group to be gone", LIMIT, || async {
        let stats = sim_json(&stack, &["stats"]);
        (stats["groups_total"] == 0).then_some(())
    })
    .await
    .unwrap();
    let stats = sim_json(&stack, &["stats"]);
    assert_eq!(stats["groups_created"], 50, "created once each: {stats}");
    assert_eq!(stats["groups_deleted"], 50);
}

/// Scenario 6: surge rotation keeps 10 pods Ready at every sampled moment.
#[tokio::test(flavor = "multi_thread")]
async fn surge_rotation_never_dips_below_the_desired_capacity() {
    let stack = stack("surge").await;
    let _operator = stack.operator("replica-a").unwrap();
    stack
        .apply_yaml(
            &deployment(
                &stack,
                "web",
                10,
                json!({"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}),
            ),
            &stack.namespace,
        )
        .await
        .unwrap();
    stack
        .apply_yaml(
            &json!({"apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
                "metadata": {"name": "web"},
                "spec": {"targetRef": {"kind": "Deployment", "name": "web"}, "maxSurge": 2}})
            .to_string(),
            &stack.namespace,
        )
        .await
        .unwrap();
    wait("10 Ready pods", LIMIT, || async {
        (ready_pods(&stack, "web").await.len() == 10).then_some(())
    })
    .await
    .unwrap();
    let released = sim_json(
        &stack,
        &["spot-release", "--fraction", "0.2", "--lead-seconds", "180"],
    );
    let count = released["released"].as_array().unwrap().len();
    assert_eq!(count, 2);
    let mut fewest = usize::MAX;
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        fewest = fewest.min(ready_pods(&stack, "web").await.len());
        let list = rotations(&stack)
            .list(&ListParams::default())
            .await
            .unwrap();
        let completed = list
            .items
            .iter()
            .filter(|r| r.data["status"]["phase"] == "Completed")
            .count();
        if completed == count {
            for rotation in &list.items {
                let status = &rotation.data["status"];
                assert!(
                    status["replacementReadyAt"].as_str().unwrap()
                        <= status["podGoneAt"].as_str().unwrap()
                );
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotations: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fewest >= 10, "Ready pods dipped to {fewest}");
}

/// Scenario 8: the leader dies mid-rotation (SIGKILL); the standby takes over within 15 s
/// and finishes the rotation; nothing is created twice.
#[tokio::test(flavor = "multi_thread")]
async fn the_standby_finishes_a_rotation_when_the_leader_dies() {
    let stack = stack("failover").await;
    let first = stack.operator("replica-a").unwrap();
    stack
        .apply_yaml(
            &deployment(
                &stack,
                "ha",
                3,
                json!({"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}),
            ),
            &stack.namespace,
        )
        .await
        .unwrap();
    stack
        .apply_yaml(
            &json!({"apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
                "metadata": {"name": "ha"},
                "spec": {"targetRef": {"kind": "Deployment", "name": "ha"}}})
            .to_string(),
            &stack.namespace,
        )
        .await
        .unwrap();
    wait("3 Ready pods", LIMIT, || async {
        (ready_pods(&stack, "ha").await.len() == 3).then_some(())
    })
    .await
    .unwrap();
    let _second = stack.operator("replica-b").unwrap();
    // Slow ECI down so the rotation is still in flight when the leader dies.
    sim_ok(
        &stack,
        &[
            "faults",
            "--action",
            "CreateContainerGroup",
            "--latency-ms",
            "3000-3000",
        ],
    );
    sim_json(
        &stack,
        &[
            "spot-release",
            "--fraction",
            "0.34",
            "--lead-seconds",
            "180",
        ],
    );
    wait("a rotation to surge", LIMIT, || async {
        let list = rotations(&stack).list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|r| r.data["status"]["surgedAt"].is_string())
            .then_some(())
    })
    .await
    .unwrap();
    first.kill();
    let killed_at = tokio::time::Instant::now();
    sim_ok(&stack, &["faults", "--clear"]);
    wait(
        "the rotation to complete under the new leader",
        LIMIT,
        || async {
            let list = rotations(&stack).list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .all(|r| r.data["status"]["phase"] == "Completed")
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(30),
        "took over and finished in {:?}",
        killed_at.elapsed()
    );
    let stats = sim_json(&stack, &["stats"]);
    assert_eq!(
        stats["groups_total"], 3,
        "3 replicas, one group each: {stats}"
    );
    assert_eq!(
        stats["groups_created"], 4,
        "the three, plus one replacement: {stats}"
    );
}

/// Scenario 9: 20 % errors and 20 % throttling on every ECI call; every pod still runs, none
/// is lost, duplicated or orphaned.
#[tokio::test(flavor = "multi_thread")]
async fn pods_survive_a_faulty_eci() {
    let stack = stack("faults").await;
    sim_ok(
        &stack,
        &["faults", "--error-rate", "0.2", "--throttle-rate", "0.2"],
    );
    let _operator = stack.operator("replica-a").unwrap();
    stack
        .apply_yaml(
            &deployment(&stack, "sturdy", 20, json!({})),
            &stack.namespace,
        )
        .await
        .unwrap();
    wait("20 Ready pods despite the faults", LIMIT, || async {
        (ready_pods(&stack, "sturdy").await.len() == 20).then_some(())
    })
    .await
    .unwrap();
    let stats = sim_json(&stack, &["stats"]);
    assert_eq!(stats["groups_total"], 20, "{stats}");
    let injected: u64 = stats["actions"]
        .as_object()
        .unwrap()
        .values()
        .map(|a| a["injected_faults"].as_u64().unwrap_or(0) + a["throttled"].as_u64().unwrap_or(0))
        .sum();
    assert!(injected > 0, "faults were injected: {stats}");
    scale(&stack, "sturdy", 0).await;
    wait("no group left", LIMIT, || async {
        (sim_json(&stack, &["stats"])["groups_total"] == 0).then_some(())
    })
    .await
    .unwrap();
}

/// Scenario 5: api-evict pods behind a PodDisruptionBudget (maxUnavailable 1); a release on
/// 3 of them evicts one at a time, and each is gone before its release.
#[tokio::test(flavor = "multi_thread")]
async fn api_evict_honours_the_budget_and_beats_the_release() {
    let stack = stack("api-evict").await;
    let operator = stack.operator("replica-a").unwrap();
    let annotations = json!({"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo",
        "k8s.aliyun.com/eci-spot-release-strategy": "api-evict"});
    stack
        .apply_yaml(
            &deployment(&stack, "guarded", 10, annotations),
            &stack.namespace,
        )
        .await
        .unwrap();
    stack
        .apply_yaml(
            &json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "guarded"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}})
            .to_string(),
            &stack.namespace,
        )
        .await
        .unwrap();
    wait("10 Ready pods", LIMIT, || async {
        (ready_pods(&stack, "guarded").await.len() == 10).then_some(())
    })
    .await
    .unwrap();
    let released = sim_json(
        &stack,
        &["spot-release", "--fraction", "0.3", "--lead-seconds", "60"],
    );
    let release_at = time(&released["release_at"]);
    let count = released["released"].as_array().unwrap().len();
    assert_eq!(count, 3);
    let mut fewest = usize::MAX;
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        fewest = fewest.min(ready_pods(&stack, "guarded").await.len());
        let list = rotations(&stack)
            .list(&ListParams::default())
            .await
            .unwrap();
        let gone: Vec<&str> = list
            .items
            .iter()
            .filter_map(|r| r.data["status"]["podGoneAt"].as_str())
            .collect();
        if gone.len() == count {
            for at in gone {
                assert!(chrono::DateTime::parse_from_rfc3339(at).unwrap() < release_at);
            }
            assert!(
                list.items
                    .iter()
                    .all(|r| r.data["status"]["evictedAt"].is_string())
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotations: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fewest >= 9,
        "the budget allows one unavailable pod; Ready dipped to {fewest}"
    );
    // The operator's own account agrees: three evictions, three rotations finished in time.
    let admin = operator.admin.unwrap();
    let text = wait("the outcome metrics", LIMIT, || async {
        let text = metrics(admin).await?;
        text.contains("vk_eci_spot_rotations_total{outcome=\"Completed\"} 3")
            .then_some(text)
    })
    .await
    .unwrap();
    assert!(
        text.contains("vk_eci_spot_evictions_total{result=\"evicted\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("vk_eci_spot_rotations_finished_before_release_total 3"),
        "{text}"
    );
    assert!(text.contains("vk_eci_spot_escalations_total 0"), "{text}");
}

/// The operator's `/metrics` text.
async fn metrics(addr: std::net::SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: scenario\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    Some(text)
}

/// Scenario 7: a storm takes 20 % of a 100-pod fleet at once; every doomed pod is replaced
/// before the release within the surge budget, and capacity never dips.
#[tokio::test(flavor = "multi_thread")]
async fn a_storm_is_rotated_within_the_surge_budget() {
    let stack = stack("storm").await;
    let _operator = stack.operator("replica-a").unwrap();
    stack
        .apply_yaml(
            &deployment(
                &stack,
                "fleet",
                100,
                json!({"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}),
            ),
            &stack.namespace,
        )
        .await
        .unwrap();
    stack
        .apply_yaml(
            &json!({"apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
                "metadata": {"name": "fleet"},
                "spec": {"targetRef": {"kind": "Deployment", "name": "fleet"},
                         "maxSurge": 10, "maxConcurrent": 8, "historyLimit": 100}})
            .to_string(),
            &stack.namespace,
        )
        .await
        .unwrap();
    wait("100 Ready pods", Duration::from_secs(120), || async {
        (ready_pods(&stack, "fleet").await.len() == 100).then_some(())
    })
    .await
    .unwrap();
    // Two waves a moment apart, the later one released sooner: the plan reorders the queue
    // by deadline (its order is unit-tested in vk_eci_core::spot; rotations here finish too
    // fast for the order to be seen from their whole-second timestamps).
    let late = sim_json(
        &stack,
        &["spot-release", "--fraction", "0.1", "--lead-seconds", "180"],
    );
    let early = sim_json(
        &stack,
        &[
            "spot-release",
            "--fraction",
            "0.111",
            "--lead-seconds",
            "90",
        ],
    );
    let count =
        late["released"].as_array().unwrap().len() + early["released"].as_array().unwrap().len();
    assert_eq!(count, 20);
    let deployments: Api<Deployment> = Api::namespaced(stack.client.clone(), &stack.namespace);
    let (mut fewest, mut most_replicas, mut most_surging) = (usize::MAX, 0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        fewest = fewest.min(ready_pods(&stack, "fleet").await.len());
        let replicas = deployments
            .get("fleet")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas
            .unwrap();
        most_replicas = most_replicas.max(replicas);
        let list = rotations(&stack)
            .list(&ListParams::default())
            .await
            .unwrap();
        // maxConcurrent bounds the rotations holding a surge: a Draining rotation whose
        // scale-down is applied no longer does, though its doomed pod may still be going.
        let surging = list
            .items
            .iter()
            .filter(|r| {
                let status = &r.data["status"];
                status["surge"]["appliedAt"].is_string()
                    && !status["takeBack"]["appliedAt"].is_string()
            })
            .count();
        most_surging = most_surging.max(surging);
        let completed = list
            .items
            .iter()
            .filter(|r| r.data["status"]["phase"] == "Completed")
            .count();
        if completed == count {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{completed} of {count} completed: {:?}",
            list.items
                .iter()
                .map(|r| (
                    r.data["status"]["phase"].clone(),
                    r.data["status"]["message"].clone(),
                    r.data["status"]["surgedAt"].clone()
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fewest >= 100, "Ready pods dipped to {fewest}");
    assert!(
        most_replicas <= 110,
        "maxSurge 10 exceeded: {most_replicas} replicas"
    );
    assert!(
        most_surging <= 8,
        "maxConcurrent 8 exceeded: {most_surging}"
    );
    // Each doomed pod left before its own release, the sooner wave's included.
    for rotation in rotations(&stack)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let (gone, release) = (
            &rotation.data["status"]["podGoneAt"],
            &rotation.data["spec"]["releaseAt"],
        );
        assert!(
            time(gone) < time(release),
            "gone at {gone}, released at {release}"
        );
    }
}

fn time(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap()).unwrap()
}

/// Scenario 10: an invalid SpotRotationPolicy is refused by the API server with the field at
/// fault, a malformed annotation refuses only its own pod, and the operator keeps working.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_clearly_and_nothing_else_suffers() {
    let stack = stack("bad-input").await;
    let _operator = stack.operator("replica-a").unwrap();
    let refused = stack
        .apply_yaml(
            &json!({"apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
                "metadata": {"name": "nonsense"},
                "spec": {"targetRef": {"kind": "Deployment", "name": "web"}, "strategy": "Teleport"}})
            .to_string(),
            &stack.namespace,
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("strategy"), "{refused}");
    stack
        .apply_yaml(
            &deployment(
                &stack,
                "broken",
                1,
                json!({"k8s.aliyun.com/eci-use-specs": "lots-of-cpu"}),
            ),
            &stack.namespace,
        )
        .await
        .unwrap();
    stack
        .apply_yaml(&deployment(&stack, "fine", 2, json!({})), &stack.namespace)
        .await
        .unwrap();
    wait("the good pods Ready", LIMIT, || async {
        (ready_pods(&stack, "fine").await.len() == 2).then_some(())
    })
    .await
    .unwrap();
    let broken = wait("the broken pod to say why", LIMIT, || async {
        let pods = Api::<Pod>::namespaced(stack.client.clone(), &stack.namespace)
            .list(&ListParams::default().labels("app=broken"))
            .await
            .ok()?;
        pods.items.into_iter().find_map(|p| {
            p.status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "ContainerInstanceCreated" && c.status == "False")
        })
    })
    .await
    .unwrap();
    assert_eq!(broken.reason.as_deref(), Some("InvalidAnnotation"));
    assert!(broken.message.unwrap().contains("eci-use-specs"));
}

/// Scenario 10: `kubectl logs` and `kubectl logs -f` reach an ECI container through the API
/// server's proxy to the node's kubelet endpoint (on the real control plane: the real
/// kube-apiserver with its kubelet client certificate); a line written in ECI shows within 2 s.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs_follow_an_eci_container_through_the_api_server() {
    use std::time::Instant;
    use vk_eci_e2e::followed_logs::FollowedLogs;

    let stack = stack("logs").await;
    let _operator = stack.operator("replica-a").unwrap();
    stack
        .apply_yaml(
            &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "talker", "namespace": stack.namespace},
                "spec": {"nodeName": stack.node,
                         "tolerations": [{"operator": "Exists"}],
                         "containers": [{"name": "app", "image": "nginx"}]}})
            .to_string(),
            &stack.namespace,
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), &stack.namespace);
    let group = wait("talker running on ECI", LIMIT, || async {
        let pod = pods.get("talker").await.ok()?;
        let running = pod.status.as_ref()?.phase.as_deref() == Some("Running");
        let group = pod
            .metadata
            .annotations
            .as_ref()?
            .get("k8s.aliyun.com/eci-instance-id")?
            .clone();
        running.then_some(group)
    })
    .await
    .unwrap();
    let kubectl = |args: &[&str]| stack.kubectl(args).unwrap();
    let all = wait("three log lines through the API server", LIMIT, || async {
        let (ok, out) = tokio::task::block_in_place(|| kubectl(&["logs", "talker"]));
        (ok && out.lines().count() >= 3).then_some(out)
    })
    .await
    .unwrap();
    assert!(all.contains("started container app"), "{all}");
    let (ok, tail) = kubectl(&["logs", "talker", "--tail=1"]);
    assert!(ok && tail.lines().count() == 1, "{tail}");

    let follower = FollowedLogs::start(&stack.kubeconfig, &stack.namespace, "talker").unwrap();
    follower
        .next_within(Duration::from_secs(10))
        .expect("the followed log printed nothing");
    let marker = format!("marker-{}", std::process::id());
    stack.append_log(&group, "app", &[&marker]).await.unwrap();
    let written = Instant::now();
    let seen = follower
        .arrival_of(&marker, Duration::from_secs(5))
        .expect("the marker line never arrived");
    let latency = seen.saturating_duration_since(written);
    assert!(
        latency < Duration::from_secs(2),
        "the line took {latency:?}"
    );
}

/// Scenario 11: `kubectl exec` and `kubectl attach` reach an ECI container through the API
/// server, with kubectl's default protocol (WebSocket; the real API server translates it to
/// SPDY toward the kubelet, the sandbox passes it on untranslated) and with SPDY forced:
/// every argument intact, stdin, the exit code, the container's output followed by attach.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_exec_and_attach_reach_an_eci_container_through_the_api_server() {
    use std::process::Command;
    use vk_eci_e2e::followed_logs::FollowedLogs;

    let stack = stack("exec").await;
    let _operator = stack.operator("replica-a").unwrap();
    stack
        .apply_yaml(
            &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "shell", "namespace": stack.namespace},
                "spec": {"nodeName": stack.node,
                         "tolerations": [{"operator": "Exists"}],
                         "containers": [{"name": "app", "image": "busybox",
                                         "env": [{"name": "GREETING", "value": "hello"}]}]}})
            .to_string(),
            &stack.namespace,
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), &stack.namespace);
    let group = wait("shell running on ECI", LIMIT, || async {
        let pod = pods.get("shell").await.ok()?;
        let running = pod.status.as_ref()?.phase.as_deref() == Some("Running");
        let group = pod
            .metadata
            .annotations
            .as_ref()?
            .get("k8s.aliyun.com/eci-instance-id")?
            .clone();
        running.then_some(group)
    })
    .await
    .unwrap();
    let kubectl_with = |args: &[&str], websockets: bool, stdin: &str| {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&stack.kubeconfig)
            .args(["-n", &stack.namespace])
            .args(args)
            .env(
                "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
                if websockets { "true" } else { "false" },
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let kubectl = |args: &[&str], websockets: bool| kubectl_with(args, websockets, "");
    for websockets in [true, false] {
        let (code, out, err) = tokio::task::block_in_place(|| {
            kubectl_with(&["exec", "-i", "shell", "--", "cat"], websockets, "hi\n")
        });
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "hi\n"),
            "stdin, websockets={websockets}: {err}"
        );
        let (code, _, err) = tokio::task::block_in_place(|| {
            kubectl(
                &["exec", "-i", "shell", "--", "sh", "-c", "exit 3"],
                websockets,
            )
        });
        assert_eq!(code, Some(3), "exit code, websockets={websockets}: {err}");
        let (code, out, err) = tokio::task::block_in_place(|| {
            kubectl(
                &["exec", "shell", "--", "printf", "[%s]", "a", "b c"],
                websockets,
            )
        });
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "[a][b c]"),
            "websockets={websockets}: {err}"
        );
        let (code, out, err) = tokio::task::block_in_place(|| {
            kubectl(
                &["exec", "shell", "-c", "app", "--", "printenv", "GREETING"],
                websockets,
            )
        });
        assert_eq!((code, out.as_str()), (Some(0), "hello\n"), "{err}");
    }

    let attached = FollowedLogs::kubectl(
        &stack.kubeconfig,
        &["-n", &stack.namespace, "attach", "shell"],
        &[],
    )
    .unwrap();
    let marker = format!("attached-{}", std::process::id());
    let seen = wait("attach follows the output", LIMIT, || async {
        stack.append_log(&group, "app", &[&marker]).await.unwrap();
        // A marker written before attach connected is history it never shows: write it again
        // until one arrives.
        tokio::task::block_in_place(|| {
            attached
                .next_within(Duration::from_secs(3))
                .filter(|(_, line)| line == &marker)
        })
    })
    .await;
    assert!(seen.is_ok(), "the marker never reached kubectl attach");
}
