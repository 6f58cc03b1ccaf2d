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

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube_sandbox::control_plane::{client, render_chart};
use kube_sandbox::stack::{Stack, apply, vk_eci_binary, wait};
use serde_json::{Value, json};

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
