//! The real-cluster suite, in two modes, each skipped (saying so) when its variable is unset:
//! - `VK_ECI_E2E_KUBECONFIG`: installs the chart (simulator mode, the image in
//!   `VK_ECI_E2E_IMAGE`) into that cluster (kind, k3d, ACK) and checks the virtual node and a pod
//!   on it;
//! - `VK_ECI_E2E_CONTROL_PLANE`: the admin kubeconfig of a control plane without kubelets
//!   (`hack/control-plane.sh`): vk-eci runs as a process beside it, as the chart's
//!   ServiceAccount with the chart's RBAC, and the same checks run.
//!
//! See e2e/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use vk_eci_e2e::control_plane::{client, render_chart};
use vk_eci_e2e::stack::{Stack, apply, vk_eci_binary, wait};

const NAMESPACE: &str = "vk-eci-e2e";
const NODE: &str = "vk-eci-e2e";

/// The chart rendered for this suite: simulator mode, the image under test.
fn rendered() -> Vec<Value> {
    let image = std::env::var("VK_ECI_E2E_IMAGE")
        .expect("VK_ECI_E2E_IMAGE: the vk-eci image the cluster can pull");
    let (repository, tag) = image.rsplit_once(':').unwrap_or((&image, "latest"));
    let values = format!(
        "simulator: true\nnodeName: {NODE}\nimage: {{repository: {repository}, tag: \"{tag}\", pullPolicy: IfNotPresent}}\neci: {{clusterId: e2e, region: cn-hangzhou}}\n"
    );
    render_chart(&values, "vk-eci-e2e", NAMESPACE).unwrap()
}

#[tokio::test]
async fn the_chart_brings_up_a_virtual_node_that_runs_pods() {
    let Some(path) = std::env::var_os("VK_ECI_E2E_KUBECONFIG") else {
        eprintln!(
            "skipped: set VK_ECI_E2E_KUBECONFIG (and VK_ECI_E2E_IMAGE) to run the real-cluster suite; see e2e/README.md"
        );
        return;
    };
    let client = client(path.as_ref()).await.unwrap();
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    apply(&client, &namespace, NAMESPACE).await.unwrap();
    for object in rendered() {
        apply(&client, &object, NAMESPACE).await.unwrap();
    }
    node_runs_a_pod(&client, NODE, NAMESPACE).await;
}

/// vk-eci as a process beside a real control plane, as the chart's ServiceAccount: the node
/// registers and turns Ready, a pod bound to it runs, and its deletion removes its container
/// group.
#[tokio::test(flavor = "multi_thread")]
async fn beside_a_real_control_plane_the_virtual_node_runs_pods() {
    let Some(kubeconfig) = std::env::var_os("VK_ECI_E2E_CONTROL_PLANE") else {
        eprintln!(
            "skipped: set VK_ECI_E2E_CONTROL_PLANE (hack/control-plane.sh test) to run against a real control plane"
        );
        return;
    };
    let name = format!("vk-eci-node-{}", std::process::id());
    let dir = std::env::temp_dir().join(&name);
    let stack = Stack::on_control_plane(
        &vk_eci_binary().unwrap(),
        &dir,
        &[],
        kubeconfig.as_ref(),
        &name,
    )
    .await
    .unwrap();
    let _operator = stack.operator("replica-a").unwrap();
    node_runs_a_pod(&stack.client, &stack.node, &stack.namespace).await;
    wait(
        "the container group to be deleted",
        Duration::from_secs(60),
        || async {
            let output = stack.sim_ctl(&["stats"]).ok()?;
            let stats: Value = serde_json::from_slice(&output.stdout).ok()?;
            (stats["groups_created"] == 1 && stats["groups_total"] == 0).then_some(())
        },
    )
    .await
    .unwrap();
}

/// The virtual node `node` turns Ready; a pod bound to it in `namespace` runs, and is gone
/// after its deletion.
async fn node_runs_a_pod(client: &Client, node: &str, namespace: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    wait(
        "the virtual node to be Ready",
        Duration::from_secs(300),
        || {
            let nodes = nodes.clone();
            async move {
                let node = nodes.get_opt(node).await.ok().flatten()?;
                node.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "on-eci"},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait(
        "the pod to run on the simulated ECI",
        Duration::from_secs(120),
        || {
            let pods = pods.clone();
            async move {
                let pod = pods.get_opt("on-eci").await.ok().flatten()?;
                (pod.status?.phase.as_deref() == Some("Running")).then_some(())
            }
        },
    )
    .await
    .unwrap();
    pods.delete("on-eci", &DeleteParams::default())
        .await
        .unwrap();
    wait("the pod to be gone", Duration::from_secs(120), || {
        let pods = pods.clone();
        async move {
            pods.get_opt("on-eci")
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        }
    })
    .await
    .unwrap();
}

/// The admin kubeconfig of the real control plane, or `None` (saying so) when the suite is not
/// pointed at one.
fn control_plane() -> Option<PathBuf> {
    let kubeconfig = std::env::var_os("VK_ECI_E2E_CONTROL_PLANE").map(PathBuf::from);
    if kubeconfig.is_none() {
        eprintln!(
            "skipped: set VK_ECI_E2E_CONTROL_PLANE (hack/control-plane.sh test) to run against a real control plane"
        );
    }
    kubeconfig
}

/// Lets the kubelet API refresh metrics every 5 s: metrics-server scrapes every 15 s and needs
/// two distinct samples for a CPU rate.
const FAST_METRICS: (&str, &str) = ("VK_ECI_KUBELET_METRIC_MIN_REFRESH_SECONDS", "5");

/// vk-eci installed beside the control plane as `vk-eci-<what>-<pid>` (its RBAC rendered with
/// `chart_values` too), its operators started with `env` added.
async fn beside(kubeconfig: &Path, what: &str, chart_values: &str, env: &[(&str, &str)]) -> Stack {
    let name = format!("vk-eci-{what}-{}", std::process::id());
    let dir = std::env::temp_dir().join(&name);
    let mut stack = Stack::on_control_plane_with(
        &vk_eci_binary().unwrap(),
        &dir,
        &["--seed", "7"],
        kubeconfig,
        &name,
        chart_values,
    )
    .await
    .unwrap();
    stack
        .operator_env
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    stack
}

/// The real metrics pipeline on ECI pods: metrics-server (behind the real aggregation layer)
/// scrapes the virtual node's kubelet port with its own client certificate, `kubectl top`
/// shows the pod through the API server, and the real HPA controller scales the Deployment on
/// that CPU. The simulator's load is a fifth of the group's CPU (0.25 core for a 100m request,
/// so 25–75 % of the request): a 10 % target can only be met by scaling up.
#[tokio::test(flavor = "multi_thread")]
async fn beside_a_real_control_plane_kubectl_top_and_an_hpa_read_eci_metrics() {
    let Some(kubeconfig) = control_plane() else {
        return;
    };
    let stack = beside(&kubeconfig, "hpa", "", &[FAST_METRICS]).await;
    let _operator = stack.operator("replica-a").unwrap();
    let workload = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "busy"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "busy"}},
            "template": {"metadata": {"labels": {"app": "busy"}},
                "spec": {"nodeSelector": {"type": "virtual-kubelet", "kubernetes.io/hostname": stack.node},
                    "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{"name": "app", "image": "nginx",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}}
    });
    let autoscaler = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "busy"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "busy"},
            "minReplicas": 1, "maxReplicas": 2,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 10}}}]}
    });
    for object in [workload, autoscaler] {
        stack
            .apply_yaml(&object.to_string(), &stack.namespace)
            .await
            .unwrap();
    }
    let top = wait(
        "kubectl top to show the ECI pod",
        Duration::from_secs(180),
        || async {
            let (ok, out) = tokio::task::block_in_place(|| {
                stack
                    .kubectl(&["top", "pod", "-l", "app=busy", "--no-headers"])
                    .unwrap()
            });
            (ok && out.contains("busy-")).then_some(out)
        },
    )
    .await
    .unwrap();
    assert!(top.contains('m') && top.contains("Mi"), "{top}");

    let autoscalers: Api<HorizontalPodAutoscaler> =
        Api::namespaced(stack.client.clone(), &stack.namespace);
    let utilization = wait(
        "the HPA to read the pod's CPU and scale to 2",
        Duration::from_secs(180),
        || async {
            let status = autoscalers.get("busy").await.ok()?.status?;
            let cpu = status
                .current_metrics?
                .into_iter()
                .find_map(|m| m.resource?.current.average_utilization)?;
            (status.desired_replicas == 2).then_some(cpu)
        },
    )
    .await
    .unwrap();
    assert!(
        (10..=100).contains(&utilization),
        "CPU utilization {utilization}% of the request"
    );
    let deployments: Api<Deployment> = Api::namespaced(stack.client.clone(), &stack.namespace);
    wait(
        "two busy pods Running on ECI",
        Duration::from_secs(120),
        || async {
            let ready = deployments.get("busy").await.ok()?.status?.ready_replicas;
            (ready == Some(2)).then_some(())
        },
    )
    .await
    .unwrap();
}

/// `kubelet.tls.mode: clusterSigned`, approved by an admin: each replica asks for a
/// kubelet-serving certificate, serves a self-signed one meanwhile (a client trusting the
/// cluster CA refuses it), and once `kubectl certificate approve` lets kube-controller-manager
/// sign it, serves exactly the signed certificate, which verifies against the cluster CA for
/// the pod IP the Node advertises.
#[tokio::test(flavor = "multi_thread")]
async fn beside_a_real_control_plane_the_kubelet_port_serves_an_admin_approved_certificate() {
    kubelet_port_serves_a_cluster_signed_certificate("csr-admin", false).await;
}

/// The same with `clusterSigned.approve`: the replica approves its own request, with the
/// approval rights the chart grants it for that (the real authorizer judges them).
#[tokio::test(flavor = "multi_thread")]
async fn beside_a_real_control_plane_the_kubelet_port_serves_a_self_approved_certificate() {
    kubelet_port_serves_a_cluster_signed_certificate("csr-self", true).await;
}

async fn kubelet_port_serves_a_cluster_signed_certificate(name: &str, approve: bool) {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let Some(kubeconfig) = control_plane() else {
        return;
    };
    let mut env = vec![("VK_ECI_KUBELET_CSR", "true")];
    if approve {
        env.push(("VK_ECI_KUBELET_CSR_APPROVE", "true"));
    }
    let stack = beside(
        &kubeconfig,
        name,
        &format!(
            "kubelet: {{tls: {{mode: clusterSigned, clusterSigned: {{approve: {approve}}}}}}}"
        ),
        &env,
    )
    .await;
    let operator = stack.operator("replica-a").unwrap();
    let kubelet = operator.kubelet.unwrap();

    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(kubeconfig.parent().unwrap().join("pki/ca.crt")).unwrap();
    let verifying = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("https://{kubelet}/healthz");
    let served = || async {
        let response = verifying.get(&url).send().await.ok()?;
        let info = response.extensions().get::<reqwest::tls::TlsInfo>()?;
        info.peer_certificate().map(<[u8]>::to_vec)
    };

    let csrs: Api<CertificateSigningRequest> = Api::all(stack.client.clone());
    let request = wait(
        "the replica's CertificateSigningRequest",
        Duration::from_secs(60),
        || async {
            csrs.list(
                &kube::api::ListParams::default()
                    .labels(&format!("spot.vk-eci.io/node={}", stack.node)),
            )
            .await
            .ok()?
            .items
            .into_iter()
            .next()
        },
    )
    .await
    .unwrap();
    assert_eq!(request.spec.signer_name, "kubernetes.io/kubelet-serving");
    let requester = request.spec.username.clone().unwrap_or_default();
    assert!(
        requester.starts_with(&format!("system:serviceaccount:{}:", stack.namespace)),
        "the request is the operator's own: {requester}"
    );
    let request_name = request.metadata.name.clone().unwrap();
    if !approve {
        // Until someone approves, the port answers with a certificate nothing verifies.
        wait(
            "the kubelet port to answer TLS",
            Duration::from_secs(30),
            || async {
                let insecure = reqwest::Client::builder()
                    .danger_accept_invalid_certs(true)
                    .build()
                    .ok()?;
                insecure.get(&url).send().await.ok().map(|_| ())
            },
        )
        .await
        .unwrap();
        assert!(
            served().await.is_none(),
            "a verified certificate before approval"
        );
        let output = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["certificate", "approve", &request_name])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let signed = wait(
        "the signed certificate in the request",
        Duration::from_secs(60),
        || async {
            let certificate = csrs.get(&request_name).await.ok()?.status?.certificate?;
            (!certificate.0.is_empty()).then_some(certificate.0)
        },
    )
    .await
    .unwrap();
    let signed = CertificateDer::from_pem_slice(&signed).unwrap();
    let peer = wait(
        "the kubelet port to serve a certificate the cluster CA verifies",
        Duration::from_secs(30),
        served,
    )
    .await
    .unwrap();
    assert_eq!(
        peer,
        signed.as_ref(),
        "the port serves the signed certificate"
    );
}

/// A surge rotation of a Deployment that the real HPA controller scales: while the surge
/// stands the HPA's minReplicas is held at the surged size (without the hold the HPA, whose
/// CPU target the pods are well under, would take the surge back at its next sync), Ready pods
/// never dip below the two the HPA wants, and after the rotation the HPA has the user's
/// minReplicas again and no hold annotations, and the Deployment is back at 2.
#[tokio::test(flavor = "multi_thread")]
async fn beside_a_real_control_plane_a_surge_rotation_holds_the_real_hpa() {
    use kube::api::{DynamicObject, ListParams};
    use kube::core::{ApiResource, GroupVersionKind};

    let Some(kubeconfig) = control_plane() else {
        return;
    };
    let stack = beside(&kubeconfig, "hpa-surge", "", &[FAST_METRICS]).await;
    let _operator = stack.operator("replica-a").unwrap();
    let objects = [
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"},
                        "annotations": {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}},
                    "spec": {"nodeSelector": {"type": "virtual-kubelet", "kubernetes.io/hostname": stack.node},
                        "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
                        "terminationGracePeriodSeconds": 5,
                        "containers": [{"name": "app", "image": "nginx",
                            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]}}}
        }),
        // The simulator's load is a fifth of the group's 2 cores: 10–30 % of the request.
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2, "maxReplicas": 4,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 90}}}]}
        }),
        json!({"apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
            "metadata": {"name": "web"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "web"}, "maxSurge": 1}}),
    ];
    for object in objects {
        stack
            .apply_yaml(&object.to_string(), &stack.namespace)
            .await
            .unwrap();
    }
    let autoscalers: Api<HorizontalPodAutoscaler> =
        Api::namespaced(stack.client.clone(), &stack.namespace);
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), &stack.namespace);
    let ready = || async {
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .map(|list| {
                list.items
                    .iter()
                    .filter(|p| {
                        p.metadata.deletion_timestamp.is_none()
                            && p.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|c| {
                                    c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    wait(
        "the HPA to read both pods' CPU",
        Duration::from_secs(180),
        || async {
            let status = autoscalers.get("web").await.ok()?.status?;
            let reading = status.current_metrics?.into_iter().any(|m| {
                m.resource
                    .is_some_and(|r| r.current.average_utilization.is_some())
            });
            (reading && ready().await == 2).then_some(())
        },
    )
    .await
    .unwrap();

    let output = stack
        .sim_ctl(&["spot-release", "--fraction", "0.5", "--lead-seconds", "180"])
        .unwrap();
    assert!(output.status.success());
    let rotations: Api<DynamicObject> = Api::namespaced_with(
        stack.client.clone(),
        &stack.namespace,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("spot.vk-eci.io", "v1alpha1", "SpotRotation"),
            "spotrotations",
        ),
    );
    let mut fewest = usize::MAX;
    let mut held = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        fewest = fewest.min(ready().await);
        let hpa = autoscalers.get("web").await.unwrap();
        held = held.max(hpa.spec.as_ref().and_then(|s| s.min_replicas).unwrap_or(0));
        let list = rotations.list(&ListParams::default()).await.unwrap();
        if !list.items.is_empty()
            && list
                .items
                .iter()
                .all(|r| r.data["status"]["phase"] == "Completed")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotations: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(held, 3, "the HPA's minReplicas was held at the surged size");
    assert!(fewest >= 2, "Ready pods dipped to {fewest}");
    let given_back = wait(
        "the HPA to have the user's minReplicas back",
        Duration::from_secs(30),
        || async {
            let hpa = autoscalers.get("web").await.ok()?;
            let annotations = hpa.metadata.annotations.clone().unwrap_or_default();
            (hpa.spec.as_ref()?.min_replicas == Some(2)
                && !annotations.keys().any(|k| k.starts_with("spot.vk-eci.io/")))
            .then_some(hpa)
        },
    )
    .await
    .unwrap();
    assert_eq!(given_back.spec.unwrap().max_replicas, 4);
    let deployments: Api<Deployment> = Api::namespaced(stack.client.clone(), &stack.namespace);
    wait(
        "the Deployment back at two Ready replicas",
        Duration::from_secs(60),
        || async {
            let deployment = deployments.get("web").await.ok()?;
            let replicas = deployment.spec?.replicas;
            (replicas == Some(2) && ready().await == 2).then_some(())
        },
    )
    .await
    .unwrap();
}
