//! kubectl (the one installed on these machines) against the sandbox: plain and server-side
//! apply, get with printer columns, describe, delete. Skips with a message where kubectl is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use kube_sandbox::Sandbox;

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_gets_describes_and_deletes() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: kubectl is not installed");
        return;
    }
    let running = Sandbox::new()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("vk-eci-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, running.kubeconfig()).unwrap();
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds");
    let manifest = dir.join("objects.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo, labels: {app: web}}\ndata: {a: b}\n---\n\
         apiVersion: spot.vk-eci.io/v1alpha1\nkind: SpotRotationPolicy\nmetadata: {name: web}\nspec: {targetRef: {kind: Deployment, name: web}}\n---\n\
         apiVersion: spot.vk-eci.io/v1alpha1\nkind: SpotRotation\nmetadata: {name: pod-1234}\n\
         spec: {policy: web, pod: {name: web-abc, uid: '1234'}, strategy: Surge, noticedAt: '2026-01-01T00:00:00Z', releaseAt: '2026-01-01T00:03:00Z', deadline: '2026-01-01T00:02:45Z'}\n",
    )
    .unwrap();

    let run = |args: &[&str]| tokio::task::block_in_place(|| kubectl(&kubeconfig, args));
    let (ok, out) = run(&["apply", "--validate=false", "-f", crds]);
    assert!(ok, "{out}");
    let (ok, out) = run(&[
        "apply",
        "--validate=false",
        "-f",
        manifest.to_str().unwrap(),
    ]);
    assert!(
        ok && out.contains("spotrotationpolicy.spot.vk-eci.io/web created"),
        "{out}"
    );
    let (ok, out) = run(&["get", "configmaps", "-l", "app=web"]);
    assert!(ok && out.contains("demo"), "{out}");
    let (ok, out) = run(&["get", "srp"]);
    assert!(ok, "{out}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "STRATEGY",
            "TARGET",
            "ACTIVE",
            "COMPLETED",
            "DEGRADED",
            "FAILED",
            "LAST",
            "AGE"
        ]
    );
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["web", "Surge", "web"]);
    let (ok, out) = run(&["get", "spotrotations"]);
    assert!(ok, "{out}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "POLICY",
            "POD",
            "PHASE",
            "REPLACEMENT",
            "RELEASE",
            "AGE"
        ]
    );
    let (ok, out) = run(&["get", "sr"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert!(ok && row[..3] == ["pod-1234", "web", "web-abc"], "{out}");
    let (ok, out) = run(&["describe", "spotrotationpolicy", "web"]);
    assert!(
        ok && out.contains("Kind:         SpotRotationPolicy"),
        "{out}"
    );
    let (ok, out) = run(&["delete", "configmap", "demo"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["get", "configmap", "demo"]);
    assert!(!ok && out.contains("NotFound"), "{out}");
    std::fs::remove_dir_all(dir).unwrap();
}
