//! The real-cluster suite: installs the chart (simulator mode) into the cluster that
//! `VK_ECI_E2E_KUBECONFIG` points at (kind, k3d, ACK) and checks the virtual node and a pod on
//! it. Skipped, saying so, when the variable is unset. See e2e/README.md for running it on kind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kube_sandbox::stack::{apply, wait};
use serde_json::{Value, json};

const NAMESPACE: &str = "vk-eci-e2e";
const NODE: &str = "vk-eci-e2e";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn cluster() -> Option<Client> {
    let Some(path) = std::env::var_os("VK_ECI_E2E_KUBECONFIG") else {
        eprintln!(
            "skipped: set VK_ECI_E2E_KUBECONFIG (and VK_ECI_E2E_IMAGE) to run the real-cluster suite; see e2e/README.md"
        );
        return None;
    };
    let kubeconfig = Kubeconfig::read_from(path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Some(Client::try_from(config).unwrap())
}

/// The chart rendered for this suite: simulator mode, the image under test.
fn rendered() -> Vec<Value> {
    let python = std::env::var("VK_ECI_SDK_PYTHON").unwrap_or_else(|_| "python3".into());
    let image = std::env::var("VK_ECI_E2E_IMAGE")
        .expect("VK_ECI_E2E_IMAGE: the vk-eci image the cluster can pull");
    let (repository, tag) = image.rsplit_once(':').unwrap_or((&image, "latest"));
    let values = std::env::temp_dir().join("vk-eci-e2e-values.yaml");
    std::fs::write(
        &values,
        format!(
            "simulator: true\nnodeName: {NODE}\nimage: {{repository: {repository}, tag: \"{tag}\", pullPolicy: IfNotPresent}}\neci: {{clusterId: e2e, region: cn-hangzhou}}\n"
        ),
    )
    .unwrap();
    let output = Command::new(python)
        .arg(root().join("hack/helm-render.py"))
        .arg(root().join("charts/vk-eci"))
        .arg(&values)
        .args(["vk-eci-e2e", NAMESPACE])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut objects = Vec::new();
    for (path, manifest) in rendered["manifests"].as_object().unwrap() {
        let text = manifest.as_str().unwrap();
        if path.ends_with("NOTES.txt") || text.trim().is_empty() {
            continue;
        }
        let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap();
        objects.extend(docs.into_iter().filter(|d| !d.is_null()));
    }
    for crd in std::fs::read_dir(root().join("crds")).unwrap() {
        let path = crd.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            objects.insert(
                0,
                serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap(),
            );
        }
    }
    objects
}

#[tokio::test]
async fn the_chart_brings_up_a_virtual_node_that_runs_pods() {
    let Some(client) = cluster().await else {
        return;
    };
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    apply(&client, &namespace, NAMESPACE).await.unwrap();
    for object in rendered() {
        apply(&client, &object, NAMESPACE).await.unwrap();
    }
    let nodes: Api<Node> = Api::all(client.clone());
    wait(
        "the virtual node to be Ready",
        Duration::from_secs(300),
        || {
            let nodes = nodes.clone();
            async move {
                let node = nodes.get_opt(NODE).await.ok().flatten()?;
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
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "on-eci"},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "nginx"}]},
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
