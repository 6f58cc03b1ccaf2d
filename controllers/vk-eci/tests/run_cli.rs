//! The `vk-eci run` binary: bad settings fail at start naming the setting; without an
//! AccessKey it refuses to start unless simulator mode is chosen; in simulator mode it runs pods
//! on the built-in simulator, says so on the Node, and on SIGTERM it stops and hands its leader
//! lease back.
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

/// `vk-eci run` with these arguments and no AccessKey or simulator choice in the environment.
fn run(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .args(args)
        .env_remove("ECI_ACCESS_KEY")
        .env_remove("ECI_SECRET_KEY")
        .env_remove("ECI_SECURITY_TOKEN")
        .env_remove("ECI_SIMULATOR")
        .env_remove("ECI_ENDPOINT")
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    command
}

#[test]
fn invalid_settings_fail_at_start_naming_the_setting() {
    let output = run(&[
        "--simulator",
        "--cluster-id",
        "c-1",
        "--region",
        "Hangzhou!",
    ])
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ECI_REGION"), "{stderr}");

    let output = run(&["--simulator", "--region", "cn-hangzhou"])
        .env_remove("ALIYUN_CLUSTERID")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ALIYUN_CLUSTERID"), "{stderr}");
}

#[test]
fn without_an_access_key_it_refuses_to_start_unless_the_simulator_is_chosen() {
    let output = run(&["--cluster-id", "c-1", "--region", "cn-hangzhou"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a configuration error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for named in [
        "ECI_ACCESS_KEY",
        "--access-key-id",
        "ECI_SIMULATOR=true",
        "--simulator",
    ] {
        assert!(stderr.contains(named), "{named} in: {stderr}");
    }

    // The environment variable chooses it too: start-up gets past the choice to the region.
    let output = run(&["--cluster-id", "c-1", "--region", "Hangzhou!"])
        .env("ECI_SIMULATOR", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ECI_REGION") && !stderr.contains("ECI_ACCESS_KEY"),
        "{stderr}"
    );

    // A Secret mounted with only one of its keys is no AccessKey and no simulator either.
    let output = run(&["--cluster-id", "c-1", "--region", "cn-hangzhou"])
        .args(["--vswitch", "vsw-a"])
        .env("ECI_SECRET_KEY", "only-the-secret")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ECI_ACCESS_KEY"), "{stderr}");
    assert!(!stderr.contains("only-the-secret"), "{stderr}");
}

#[test]
fn the_simulator_choice_with_an_access_key_is_refused() {
    let output = run(&[
        "--simulator",
        "--cluster-id",
        "c-1",
        "--region",
        "cn-hangzhou",
    ])
    .env("ECI_ACCESS_KEY", "LTAI-id")
    .env("ECI_SECRET_KEY", "secret-value")
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ECI_SIMULATOR") && stderr.contains("ECI_ACCESS_KEY"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-value"), "{stderr}");
}

struct Operator(std::process::Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _already_exited = self.0.kill();
        let _reaped = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_simulator_mode_it_runs_pods_on_the_built_in_simulator_and_says_so() {
    let world = common::World::new().await;
    let kubeconfig = std::env::temp_dir().join(format!("vk-eci-run-{}.yaml", std::process::id()));
    std::fs::write(&kubeconfig, world.sandbox.kubeconfig()).unwrap();
    let mut operator = Operator(
        Command::new(BIN)
            .args([
                "run",
                "--simulator",
                "--cluster-id",
                "c-cli",
                "--region",
                "cn-beijing",
            ])
            .args(["--admin-listen", &common::free_port().to_string()])
            .args(["--identity", "cli-replica"])
            .env("KUBELET_PORT", common::free_port().port().to_string())
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("ECI_ACCESS_KEY")
            .env_remove("ECI_SECRET_KEY")
            .env_remove("ECI_ENDPOINT")
            .env_remove("ECI_SIMULATOR")
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
    assert!(stderr.contains("SIMULATOR MODE"), "{stderr}");
    let lease: Api<Lease> = Api::namespaced(world.client.clone(), "kube-system");
    let lease = lease.get(&format!("vk-eci-{NODE}")).await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "the lease is handed back"
    );
    let _ = std::fs::remove_file(kubeconfig);
}
