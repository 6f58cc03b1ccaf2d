//! The `vk-eci` binary: `sim` serves the ECI protocol, `sim-ctl` drives its admin API, and the
//! server stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use eci_client::{Credentials, EciClient, EciClientConfig};
use eci_types::EciFailure;
use eci_types::wire::{Container, CreateContainerGroupRequest, DescribeContainerGroupsRequest};

const BIN: &str = env!("CARGO_BIN_EXE_vk-eci");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _already_exited = self.0.kill();
        let _reaped = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_sim() -> (Server, String) {
    eci_client::install_crypto_provider();
    let port = free_port();
    let server = Server(
        Command::new(BIN)
            .args([
                "sim",
                "--fast",
                "--seed",
                "3",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("ECI_ACCESS_KEY", "LTAI-cli")
            .env("ECI_SECRET_KEY", "cli-secret")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if reqwest::get(format!("{endpoint}/_sim/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (server, endpoint);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "vk-eci sim did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sim_ctl(endpoint: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["sim-ctl", "--endpoint", endpoint])
        .args(args)
        .output()
        .unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sim_serves_and_sim_ctl_drives_it() {
    let (mut server, endpoint) = start_sim().await;
    let mut config =
        EciClientConfig::new("cn-hangzhou", Credentials::new("LTAI-cli", "cli-secret"));
    config.endpoint = Some(endpoint.clone());
    let client = EciClient::new(config).unwrap();
    let id = client
        .call(&CreateContainerGroupRequest {
            container_group_name: "cli-spot".into(),
            spot_strategy: Some("SpotAsPriceGo".into()),
            container: vec![Container {
                name: "c".into(),
                image: "nginx".into(),
                ..Container::default()
            }],
            ..CreateContainerGroupRequest::default()
        })
        .await
        .unwrap()
        .container_group_id;

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while json(&sim_ctl(&endpoint, &["groups"]))[0]["status"] != "Running" {
        assert!(std::time::Instant::now() < deadline, "group never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let released = json(&sim_ctl(
        &endpoint,
        &["spot-release", "--ids", &id, "--lead-seconds", "60"],
    ));
    assert_eq!(released["released"][0], id.as_str());
    let groups = json(&sim_ctl(&endpoint, &["groups"]));
    assert!(!groups[0]["release_at"].as_str().unwrap().is_empty());

    json(&sim_ctl(
        &endpoint,
        &["stock", "--zone", "cn-hangzhou-h", "--count", "0"],
    ));
    json(&sim_ctl(
        &endpoint,
        &[
            "faults",
            "--action",
            "DescribeContainerGroups",
            "--error-rate",
            "1",
        ],
    ));
    let error = client
        .call(&DescribeContainerGroupsRequest::default())
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(sim_ctl(&endpoint, &["faults", "--clear"]).status.success());
    client
        .call(&DescribeContainerGroupsRequest::default())
        .await
        .unwrap();

    let stats = json(&sim_ctl(&endpoint, &["stats"]));
    assert_eq!(stats["groups_created"], 1);
    assert_eq!(stats["spot_notices"], 1);
    assert_eq!(stats["stock"][0]["count"], 0);
    assert!(
        stats["actions"]["DescribeContainerGroups"]["injected_faults"]
            .as_u64()
            .unwrap()
            > 0
    );

    let bad = sim_ctl(&endpoint, &["spot-release", "--fraction", "2"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fraction must be between 0 and 1"));

    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || server.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "vk-eci sim should exit cleanly on SIGTERM: {exit:?}"
    );
}

#[test]
fn sim_refuses_a_half_configured_access_key() {
    let output = Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0"])
        .env("ECI_ACCESS_KEY", "LTAI-only-id")
        .env_remove("ECI_SECRET_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("ECI_ACCESS_KEY and ECI_SECRET_KEY must be given together")
    );
}
