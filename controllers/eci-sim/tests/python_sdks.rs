//! Alibaba's own published Python SDKs, unchanged, against the simulator: the fidelity bar.
//!
//! Needs a Python with `alibabacloud-eci20180808` and `aliyun-python-sdk-eci` installed
//! (`hack/sdk-venv.sh` makes one; point `VK_ECI_SDK_PYTHON` at its interpreter). Without one
//! the test says so and skips, except under CI (`CI` set), where a missing SDK is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use eci_sim::{CredentialConfig, SimConfig, Simulator};

#[tokio::test(flavor = "multi_thread")]
async fn alibaba_python_sdks_work_against_the_simulator_unchanged() {
    let python = std::env::var("VK_ECI_SDK_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import alibabacloud_eci20180808, aliyunsdkeci"])
        .output();
    if !probe.as_ref().is_ok_and(|out| out.status.success()) {
        let message = format!(
            "Alibaba's ECI SDKs are not importable by `{python}`: run hack/sdk-venv.sh and set VK_ECI_SDK_PYTHON"
        );
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("SKIPPED: {message}");
        return;
    }
    let simulator = Simulator::new(
        SimConfig::fast(),
        vec![CredentialConfig {
            access_key_id: "LTAI-sdk-check".into(),
            access_key_secret: "sdk-check-secret".into(),
            security_token: None,
        }],
    )
    .unwrap();
    let running = simulator
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../e2e/sdk-compat/check_sdks.py"
    );
    let endpoint = running.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("ECI_ENDPOINT", endpoint)
            .env("ECI_ACCESS_KEY", "LTAI-sdk-check")
            .env("ECI_SECRET_KEY", "sdk-check-secret")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "SDK checks failed:\n{stdout}");
    assert!(stdout.contains("6 passed, 0 failed"), "{stdout}");
    let stats = running.simulator.with_state(|sim| sim.stats.clone());
    assert!(
        stats.actions["CreateContainerGroup"].succeeded >= 3,
        "{stats:?}"
    );
    running.stop().await;
}
