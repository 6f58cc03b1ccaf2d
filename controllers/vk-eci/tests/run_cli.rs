//! The `vk-eci run` binary: bad settings fail at start naming the setting; without an
//! AccessKey it runs pods on the built-in simulator, says so on the Node, and on SIGTERM it
//! stops and hands its leader lease back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{NODE, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use serde_json::json;
use vk_eci_core::node::SIMULATED_LABEL;

const BIN: &str = env!("CARGO_BIN_EXE_vk-eci");

#[test]
fn invalid_settings_fail_at_start_naming_the_setting() {
    let output = Command::new(BIN)
        .args(["run", "--cluster-id", "c-1", "--region", "Hangzhou!"])
        .env_remove("ECI_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ECI_REGION"), "{stderr}");

    let output = Command::new(BIN)
        .args(["run", "--region", "cn-hangzhou"])
        .env_remove("ALIYUN_CLUSTERID")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ALIYUN_CLUSTERID"), "{stderr}");
}

struct Operator(std::process::Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _already_exited = self.0.kill();
        let _reaped = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_access_key_it_runs_pods_on_the_simulator_and_says_so() {
    let world = common::World::new().await;
    let kubeconfig = std::env::temp_dir().join(format!("vk-eci-run-{}.yaml", std::process::id()));
    std::fs::write(&kubeconfig, world.sandbox.kubeconfig()).unwrap();
    let mut operator = Operator(
        Command::new(BIN)
            .args(["run", "--cluster-id", "c-cli", "--region", "cn-beijing"])
            .args(["--admin-listen", &common::free_port().to_string()])
            .args(["--identity", "cli-replica"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("ECI_ACCESS_KEY")
            .env_remove("ECI_SECRET_KEY")
            .env_remove("ECI_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    let nodes: Api<Node> = Api::all(world.client.clone());
    let node = eventually("the virtual node", || {
        let nodes = nodes.clone();
        async move { nodes.get_opt(NODE).await.ok().flatten() }
    })
    .await;
    assert_eq!(node.metadata.labels.unwrap()[SIMULATED_LABEL], "true");

    world
        .create_pod_from(json!({
            "metadata": {"name": "tryout"},
            "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "nginx"}]},
        }))
        .await;
    world
        .pod_until("tryout", "Running", |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Running")
        })
        .await;

    let pid = operator.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = operator.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(operator.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("NO ECI ACCESSKEY"), "{stderr}");
    let lease: Api<Lease> = Api::namespaced(world.client.clone(), "kube-system");
    let lease = lease.get(&format!("vk-eci-{NODE}")).await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "the lease is handed back"
    );
    let _ = std::fs::remove_file(kubeconfig);
}
