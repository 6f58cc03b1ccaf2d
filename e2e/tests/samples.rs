//! The samples in config/samples are usable as they are: every pod in them translates into an
//! ECI request without refusal, and every object is accepted by an API server (the sandbox,
//! which validates custom resources against the generated CRD schemas).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use kube_sandbox::Sandbox;
use serde_json::{Value, json};
use vk_eci_core::translate::{NodeConfig, References, translate};

fn documents(dir: &str) -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in text.split("\n---\n") {
            let value: Value =
                serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            out.push((file.display().to_string(), value));
        }
    }
    out
}

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/samples");

#[test]
fn every_sample_pod_translates_without_refusal() {
    let node = NodeConfig {
        cluster_id: "c-samples".into(),
        node_name: "virtual-kubelet".into(),
        vswitches: vec!["vsw-a".into()],
        ..NodeConfig::default()
    };
    let mut pods = 0;
    for (file, doc) in documents(SAMPLES) {
        let pod = match doc["kind"].as_str() {
            Some("Pod") => doc.clone(),
            Some("Deployment") => {
                json!({"metadata": {"name": "from-template", "namespace": "default", "uid": "u-1",
                "annotations": doc["spec"]["template"]["metadata"]["annotations"]}, "spec": doc["spec"]["template"]["spec"]})
            }
            _ => continue,
        };
        let pod: Pod = serde_json::from_value(pod).unwrap();
        let translation = translate(&pod, &node, None, &References::default())
            .unwrap_or_else(|r| panic!("{file}: refused: {r}"));
        assert!(
            translation.warnings.is_empty(),
            "{file}: {:?}",
            translation.warnings
        );
        if doc["kind"] == "Deployment" {
            assert!(
                translation.annotations.api_evict,
                "{file}: the spot sample uses api-evict"
            );
            assert_eq!(
                translation.request.spot_strategy.as_deref(),
                Some("SpotAsPriceGo")
            );
        }
        pods += 1;
    }
    assert_eq!(pods, 2);
}

#[test]
fn the_sample_profile_parses() {
    let (_, profile) = documents(SAMPLES)
        .into_iter()
        .find(|(_, doc)| doc["metadata"]["name"] == vk_eci_core::profile::NAME)
        .unwrap();
    let data: std::collections::BTreeMap<String, String> =
        serde_json::from_value(profile["data"].clone()).unwrap();
    let profile = vk_eci_core::profile::Profile::parse(&data).unwrap();
    assert_eq!(profile.network.vswitches.len(), 2);
    let batch = [("workload".to_string(), "batch".to_string())].into();
    let eci_namespace = [("alibabacloud.com/eci".to_string(), "true".to_string())].into();
    assert_eq!(
        profile
            .scheduling_selector(&batch, &eci_namespace)
            .unwrap()
            .name,
        "batch-on-spot"
    );
}

#[tokio::test]
async fn every_sample_is_accepted_by_an_api_server() {
    let running = Sandbox::new()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::try_from(Config::new(running.url().parse().unwrap())).unwrap();
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds");
    let apply = PatchParams::apply("samples-test");
    for (file, doc) in documents(crds).into_iter().chain(documents(SAMPLES)) {
        let api_version = doc["apiVersion"].as_str().unwrap().to_string();
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let kind = doc["kind"].as_str().unwrap();
        let plural = match kind {
            "CustomResourceDefinition" => "customresourcedefinitions".to_string(),
            "SpotRotationPolicy" => "spotrotationpolicies".to_string(),
            "PodDisruptionBudget" => "poddisruptionbudgets".to_string(),
            other => format!("{}s", other.to_ascii_lowercase()),
        };
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, kind),
            &plural,
        );
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<DynamicObject> = if kind == "CustomResourceDefinition" {
            Api::all_with(client.clone(), &resource)
        } else {
            let namespace = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            Api::namespaced_with(client.clone(), &namespace, &resource)
        };
        api.patch(&name, &apply, &Patch::Apply(&doc))
            .await
            .unwrap_or_else(|e| panic!("{file}: {kind}/{name} refused: {e}"));
    }
}
