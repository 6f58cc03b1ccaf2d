//! The ECI admission webhook, whole: `vk-eci run --webhook` serving the sandbox, which calls
//! it on pod CREATE like an API server (caBundle-verified HTTPS, failurePolicy, warnings);
//! pods created with kubectl the way users of Alibaba's virtual node create them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::{Value, json};
use vk_eci_e2e::stack::{Process, Stack, WebhookTls, apply, free_port, vk_eci_binary, wait};

const LIMIT: Duration = Duration::from_secs(60);

struct Webhooked {
    stack: Stack,
    tls: WebhookTls,
    url: String,
    operator: Process,
}

/// A stack with a worker node, and one replica serving the webhook that `configuration`
/// (given the webhook's URL and TLS) registers once the replica is ready.
async fn webhooked(name: &str, fail_closed: bool) -> Option<Webhooked> {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: kubectl is not installed");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("vk-eci-webhook-{name}-{}", std::process::id()));
    let stack = Stack::start(&vk_eci_binary().unwrap(), &dir, &["--seed", "7"])
        .await
        .unwrap();
    // A normal node for the pods that do not go to ECI (no lease: the sandbox leaves it Ready).
    apply(
        &stack.client,
        &json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "worker-1", "labels": {"kubernetes.io/hostname": "worker-1"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        "",
    )
    .await
    .unwrap();
    let (tls, operator, url) = webhook_replica(&stack).await;
    apply(
        &stack.client,
        &tls.configuration("vk-eci", &url, fail_closed),
        "",
    )
    .await
    .unwrap();
    Some(Webhooked {
        stack,
        tls,
        url,
        operator,
    })
}

/// A `vk-eci run --webhook` replica with certificates of its own, once it is ready; its
/// webhook's URL.
async fn webhook_replica(stack: &Stack) -> (WebhookTls, Process, String) {
    let tls = WebhookTls::generate(stack.dir(), &["127.0.0.1"]).unwrap();
    let listen = free_port().unwrap();
    let operator = stack
        .operator_with("replica-a", &tls.run_args(listen))
        .unwrap();
    let admin = operator.admin.unwrap();
    wait("the replica to be ready", LIMIT, || async move {
        (admin_get(admin, "/readyz").await?.0 == 200).then_some(())
    })
    .await
    .unwrap();
    (tls, operator, format!("https://{listen}/mutate-pods"))
}

/// Status and body of a plain HTTP GET on the admin port.
async fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

/// kubectl's success and its stdout and stderr together (warnings go to stderr).
fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = tokio::task::block_in_place(|| {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .unwrap()
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

impl Webhooked {
    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        kubectl(&self.stack.kubeconfig, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args);
        assert!(ok, "kubectl {}: {out}", args.join(" "));
        out
    }

    /// Waits for the pod to be bound, and returns it.
    async fn bound(&self, namespace: &str, name: &str) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.stack.client.clone(), namespace);
        wait(&format!("{namespace}/{name} to be bound"), LIMIT, || {
            let pods = pods.clone();
            async move {
                pods.get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
            }
        })
        .await
        .unwrap()
    }

    /// Waits for the pod to run as an ECI container group on the virtual node.
    async fn runs_on_eci(&self, namespace: &str, name: &str) -> Pod {
        let pod = self.bound(namespace, name).await;
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some(self.stack.node.as_str()),
            "{namespace}/{name} is on the virtual node"
        );
        let pods: Api<Pod> = Api::namespaced(self.stack.client.clone(), namespace);
        wait(&format!("{namespace}/{name} to run on ECI"), LIMIT, || {
            let pods = pods.clone();
            async move {
                pods.get_opt(name).await.ok().flatten().filter(|p| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key("k8s.aliyun.com/eci-instance-id"))
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
            }
        })
        .await
        .unwrap()
    }

    async fn metrics(&self) -> String {
        admin_get(self.operator.admin.unwrap(), "/metrics")
            .await
            .unwrap()
            .1
    }
}

fn node_of(pod: &Pod) -> &str {
    pod.spec.as_ref().unwrap().node_name.as_deref().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn labelled_pods_and_namespaces_go_to_eci_and_others_stay() {
    let Some(hooked) = webhooked("labels", false).await else {
        return;
    };
    hooked.ok(&[
        "run",
        "labelled",
        "--image=nginx",
        "--labels=alibabacloud.com/eci=true",
    ]);
    let pod = hooked.runs_on_eci("default", "labelled").await;
    let tolerations = pod.spec.as_ref().unwrap().tolerations.clone().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("virtual-kubelet.io/provider"))
    );

    hooked.ok(&["run", "legacy", "--image=nginx", "--labels=eci=true"]);
    hooked.runs_on_eci("default", "legacy").await;

    hooked.ok(&["create", "namespace", "batch"]);
    hooked.ok(&["label", "namespace", "batch", "alibabacloud.com/eci=true"]);
    // The replica's namespace cache follows the label: dry runs show when it has.
    wait(
        "the namespace label to reach the webhook",
        LIMIT,
        || async {
            let out = hooked.ok(&[
                "run",
                "probe",
                "-n",
                "batch",
                "--image=nginx",
                "--dry-run=server",
                "-o",
                "json",
            ]);
            serde_json::from_str::<Value>(&out).ok()?["spec"]["nodeSelector"]["type"]
                .as_str()
                .filter(|t| *t == "virtual-kubelet")
                .map(|_| ())
        },
    )
    .await
    .unwrap();
    hooked.ok(&["run", "in-namespace", "-n", "batch", "--image=nginx"]);
    hooked.runs_on_eci("batch", "in-namespace").await;

    hooked.ok(&["run", "plain", "--image=nginx"]);
    assert_eq!(node_of(&hooked.bound("default", "plain").await), "worker-1");

    let (ok, out) = hooked.kubectl(&[
        "run",
        "host-network",
        "--image=nginx",
        "--labels=alibabacloud.com/eci=true",
        r#"--overrides={"spec": {"hostNetwork": true}}"#,
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Warning: vk-eci: the pod asks for ECI (pod label alibabacloud.com/eci=true) but hostNetwork is not supported on ECI; admitted unchanged"),
        "kubectl shows the refusal: {out}"
    );
    assert_eq!(
        node_of(&hooked.bound("default", "host-network").await),
        "worker-1"
    );

    let metrics = hooked.metrics().await;
    let count = |decision: &str| -> u64 {
        let prefix = format!("vk_eci_admissions_total{{decision=\"{decision}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.parse().unwrap())
    };
    // Dry runs are admissions too: the probes add to `eci`.
    assert!(count("eci") >= 3, "{metrics}");
    assert_eq!(count("warned"), 1, "{metrics}");
    assert_eq!(count("burst"), 0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_selector_added_while_running_applies_to_the_next_pod_and_a_malformed_one_changes_nothing()
 {
    let Some(hooked) = webhooked("profile", false).await else {
        return;
    };
    hooked.ok(&["run", "before", "--image=nginx", "--labels=workload=batch"]);
    assert_eq!(
        node_of(&hooked.bound("default", "before").await),
        "worker-1"
    );

    let selectors = json!([{"name": "batch", "objectSelector": {"matchLabels": {"workload": "batch"}},
        "effect": {"annotations": {"team": "batch"}, "labels": {"on-eci": "yes"}}}]);
    apply(
        &hooked.stack.client,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "eci-profile", "namespace": "kube-system"},
            "data": {"selectors": selectors.to_string()}}),
        "kube-system",
    )
    .await
    .unwrap();
    wait("the profile to reach the webhook", LIMIT, || async {
        let out = hooked.ok(&[
            "run",
            "probe",
            "--image=nginx",
            "--labels=workload=batch",
            "--dry-run=server",
            "-o",
            "json",
        ]);
        serde_json::from_str::<Value>(&out).ok()?["spec"]["nodeSelector"]["type"]
            .as_str()
            .map(|_| ())
    })
    .await
    .unwrap();
    hooked.ok(&["run", "after", "--image=nginx", "--labels=workload=batch"]);
    let pod = hooked.runs_on_eci("default", "after").await;
    assert_eq!(
        pod.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("team")
            .map(String::as_str),
        Some("batch"),
        "the effect is on the pod itself"
    );
    assert_eq!(
        pod.metadata
            .labels
            .as_ref()
            .unwrap()
            .get("on-eci")
            .map(String::as_str),
        Some("yes")
    );

    // A malformed profile is refused (an InvalidProfile Event says so) and the last good one
    // keeps sending pods to ECI.
    apply(
        &hooked.stack.client,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "eci-profile", "namespace": "kube-system"},
            "data": {"selectors": "[{\"name\": \"batch\", \"objectSelector\": 7}]"}}),
        "kube-system",
    )
    .await
    .unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(hooked.stack.client.clone(), "kube-system");
    wait("the InvalidProfile event", LIMIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("InvalidProfile"))
                .then_some(())
        }
    })
    .await
    .unwrap();
    hooked.ok(&["run", "still", "--image=nginx", "--labels=workload=batch"]);
    hooked.runs_on_eci("default", "still").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_pods_use_a_normal_node_while_one_fits_and_eci_once_none_does() {
    let Some(hooked) = webhooked("burst", false).await else {
        return;
    };
    let burst =
        r#"--overrides={"metadata": {"annotations": {"alibabacloud.com/burst-resource": "eci"}}}"#;
    hooked.ok(&["run", "fits", "--image=nginx", burst]);
    assert_eq!(node_of(&hooked.bound("default", "fits").await), "worker-1");
    hooked.ok(&["cordon", "worker-1"]);
    hooked.ok(&["run", "overflows", "--image=nginx", burst]);
    hooked.runs_on_eci("default", "overflows").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_are_created_when_the_webhook_is_down_unless_it_fails_closed() {
    let Some(hooked) = webhooked("down", false).await else {
        return;
    };
    let client = hooked.stack.client.clone();
    // A CA that did not sign the webhook's certificate: the call fails verification.
    let stranger = WebhookTls::generate(&hooked.stack.dir().join(".."), &["127.0.0.1"]).unwrap();
    let configuration =
        |tls: &WebhookTls, fail_closed| tls.configuration("vk-eci", &hooked.url, fail_closed);
    apply(&client, &configuration(&stranger, true), "")
        .await
        .unwrap();
    let (ok, out) = hooked.kubectl(&["run", "unverified", "--image=nginx", "--labels=eci=true"]);
    assert!(!ok && out.contains("failed calling webhook"), "{out}");
    apply(&client, &configuration(&hooked.tls, true), "")
        .await
        .unwrap();
    hooked.ok(&["run", "verified", "--image=nginx", "--labels=eci=true"]);
    hooked.runs_on_eci("default", "verified").await;

    let lenient = configuration(&hooked.tls, false);
    let Webhooked {
        stack, operator, ..
    } = hooked;
    operator.terminate(Duration::from_secs(10));
    let (ok, out) = kubectl(
        &stack.kubeconfig,
        &["run", "closed", "--image=nginx", "--labels=eci=true"],
    );
    assert!(
        !ok && out.contains("failed calling webhook"),
        "Fail refuses: {out}"
    );
    apply(&client, &lenient, "").await.unwrap();
    let (ok, out) = kubectl(
        &stack.kubeconfig,
        &["run", "open", "--image=nginx", "--labels=eci=true"],
    );
    assert!(ok, "Ignore admits: {out}");
    let pod = Api::<Pod>::namespaced(client, "default")
        .get("open")
        .await
        .unwrap();
    assert!(
        pod.spec.unwrap().node_selector.is_none(),
        "created as sent, without the webhook"
    );
}

/// With `VK_ECI_E2E_CONTROL_PLANE` (`hack/control-plane.sh test`): the real kube-scheduler
/// filters then scores, so a burst pod takes the normal node while its CPU has room and the
/// virtual node once it has none.
#[tokio::test(flavor = "multi_thread")]
async fn burst_on_the_real_scheduler_uses_eci_only_when_no_normal_node_has_room() {
    let Some(admin) = std::env::var_os("VK_ECI_E2E_CONTROL_PLANE") else {
        eprintln!("SKIPPED: VK_ECI_E2E_CONTROL_PLANE is not set (hack/control-plane.sh test)");
        return;
    };
    let name = format!("vk-eci-burst-{}", std::process::id());
    let dir = std::env::temp_dir().join(&name);
    let stack = Stack::on_control_plane(
        &vk_eci_binary().unwrap(),
        &dir,
        &["--seed", "7"],
        admin.as_ref(),
        &name,
    )
    .await
    .unwrap();
    // A normal node with room for one pod of the two (no kubelet: nothing runs there, the
    // scheduler only binds).
    let worker = format!("{name}-worker");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(stack.client.clone());
    let status = json!({
        "capacity": {"cpu": "1", "memory": "4Gi", "pods": "10"},
        "allocatable": {"cpu": "1", "memory": "4Gi", "pods": "10"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}],
    });
    nodes
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": worker,
                "labels": {"kubernetes.io/hostname": worker, "kubernetes.io/os": "linux", "vk-eci.io/e2e-stack": name}}, "status": status}))
            .unwrap(),
        )
        .await
        .unwrap();
    nodes
        .patch_status(
            &worker,
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();

    let (tls, operator, url) = webhook_replica(&stack).await;
    // Both nodes must be candidates: the virtual node Ready, untainted but for its own taint.
    let virtual_node = stack.node.clone();
    wait("the virtual node to be schedulable", LIMIT, || {
        let (nodes, virtual_node) = (nodes.clone(), virtual_node.clone());
        async move {
            let node = nodes.get_opt(&virtual_node).await.ok().flatten()?;
            let ready = node
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let taints = node.spec?.taints.unwrap_or_default();
            (ready
                && taints
                    .iter()
                    .all(|t| t.key == "virtual-kubelet.io/provider"))
            .then_some(())
        }
    })
    .await
    .unwrap();
    // The pods choose between this stack's two nodes only: other stacks' virtual nodes stay
    // Ready a while after their scenario ends, and burst pods tolerate every virtual node.
    nodes
        .patch(
            &virtual_node,
            &Default::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"labels": {"vk-eci.io/e2e-stack": name}}}),
            ),
        )
        .await
        .unwrap();
    // Only this stack's namespace: other scenarios share the control plane.
    let mut configuration = tls.configuration(&name, &url, false);
    configuration["webhooks"][0]["namespaceSelector"] =
        json!({"matchLabels": {"kubernetes.io/metadata.name": stack.namespace}});
    apply(&stack.client, &configuration, "").await.unwrap();

    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), &stack.namespace);
    let burst_pod = |pod: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": pod, "annotations": {"alibabacloud.com/burst-resource": "eci"}},
            "spec": {"terminationGracePeriodSeconds": 0, "nodeSelector": {"vk-eci.io/e2e-stack": name}, "containers": [{"name": "app", "image": "nginx",
                "resources": {"requests": {"cpu": "600m", "memory": "1Gi"}}}]}}))
        .unwrap()
    };
    let bound = |pod: &'static str| {
        let pods = pods.clone();
        async move {
            wait(&format!("{pod} to be bound"), LIMIT, || {
                let pods = pods.clone();
                async move { pods.get_opt(pod).await.ok().flatten()?.spec?.node_name }
            })
            .await
            .unwrap()
        }
    };
    // The webhook has the configuration and the node's new label once a dry run is patched.
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait("the webhook to patch burst pods", LIMIT, || {
        let (pods, probe, dry_run) = (pods.clone(), burst_pod("probe"), dry_run.clone());
        async move {
            let answered = pods.create(&dry_run, &probe).await.ok()?;
            let tolerations = answered.spec?.tolerations?;
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("virtual-kubelet.io/provider"))
                .then_some(())
        }
    })
    .await
    .unwrap();
    pods.create(&Default::default(), &burst_pod("first"))
        .await
        .unwrap();
    assert_eq!(
        bound("first").await,
        worker,
        "a normal node with room wins the score"
    );
    pods.create(&Default::default(), &burst_pod("second"))
        .await
        .unwrap();
    assert_eq!(
        bound("second").await,
        stack.node,
        "no normal node fits: ECI"
    );

    let configurations: Api<kube::api::DynamicObject> = Api::all_with(
        stack.client.clone(),
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "MutatingWebhookConfiguration",
            ),
            "mutatingwebhookconfigurations",
        ),
    );
    configurations
        .delete(&name, &Default::default())
        .await
        .unwrap();
    nodes.delete(&worker, &Default::default()).await.unwrap();
    drop(operator);
}
