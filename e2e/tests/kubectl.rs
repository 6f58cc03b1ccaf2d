//! kubectl (the one installed on these machines) against the sandbox: plain and server-side
//! apply, the `create` generators (protobuf bodies), get with the API server's columns,
//! describe, delete. Skips with a message where kubectl is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use kube_sandbox::{RunningSandbox, Sandbox};
use serde_json::Value;

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

/// A running sandbox and a directory holding its kubeconfig; `None` (with a message) where
/// kubectl is not installed.
struct Kubectl {
    /// Serves until the test ends.
    _running: RunningSandbox,
    dir: PathBuf,
}

impl Kubectl {
    async fn start(test: &str) -> Option<Self> {
        if Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: kubectl is not installed");
            return None;
        }
        let running = Sandbox::new()
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let dir =
            std::env::temp_dir().join(format!("vk-eci-kubectl-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kubeconfig"), running.kubeconfig()).unwrap();
        Some(Self {
            _running: running,
            dir,
        })
    }

    fn run(&self, args: &[&str]) -> (bool, String) {
        let kubeconfig = self.dir.join("kubeconfig");
        tokio::task::block_in_place(|| kubectl(&kubeconfig, args))
    }

    /// Runs a command that must succeed and returns its output.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.run(args);
        assert!(ok, "kubectl {}: {out}", args.join(" "));
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _best_effort = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_gets_describes_and_deletes() {
    let Some(k) = Kubectl::start("apply").await else {
        return;
    };
    let dir = &k.dir;
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

    let run = |args: &[&str]| k.run(args);
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
}

/// Every `kubectl create` generator for a kind the sandbox serves: kubectl sends these as
/// protobuf, and the stored objects carry what the generator set.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_create_generators_send_protobuf() {
    let Some(k) = Kubectl::start("create").await else {
        return;
    };
    k.ok(&["create", "namespace", "team"]);
    assert_eq!(
        k.json(&["get", "namespace", "team"])["status"]["phase"],
        "Active"
    );

    k.ok(&["create", "secret", "generic", "s", "--from-literal=a=b"]);
    let secret = k.json(&["get", "secret", "s"]);
    assert_eq!(secret["data"]["a"], "Yg==");
    k.ok(&[
        "create",
        "secret",
        "docker-registry",
        "registry",
        "--docker-server=r.example",
        "--docker-username=u",
        "--docker-password=p",
    ]);
    let registry = k.json(&["get", "secret", "registry"]);
    assert_eq!(registry["type"], "kubernetes.io/dockerconfigjson");
    assert!(registry["data"][".dockerconfigjson"].is_string());

    k.ok(&[
        "create",
        "configmap",
        "c",
        "--from-literal=k=v",
        "-n",
        "team",
    ]);
    assert_eq!(
        k.json(&["get", "configmap", "c", "-n", "team"])["data"]["k"],
        "v"
    );

    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=80",
    ]);
    let deployment = k.json(&["get", "deployment", "web"]);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["selector"]["matchLabels"]["app"], "web");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["ports"][0]["containerPort"], 80);

    k.ok(&["create", "serviceaccount", "robot"]);
    k.json(&["get", "serviceaccount", "robot"]);
    assert!(
        k.ok(&["create", "token", "robot"])
            .starts_with("sandbox-token.")
    );

    k.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let service = k.json(&["get", "service", "web"]);
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(service["spec"]["selector"]["app"], "web");
    k.ok(&["create", "service", "nodeport", "edge", "--tcp=443:8443"]);
    assert_eq!(
        k.json(&["get", "service", "edge"])["spec"]["type"],
        "NodePort"
    );
    k.ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name=example.com",
    ]);
    assert_eq!(
        k.json(&["get", "service", "ext"])["spec"]["externalName"],
        "example.com"
    );

    k.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--min-available=1",
    ]);
    let pdb = k.json(&["get", "pdb", "web"]);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"]["app"], "web");

    k.ok(&[
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    assert_eq!(
        k.json(&["get", "role", "reader"])["rules"][0]["verbs"],
        serde_json::json!(["get", "list"])
    );
    k.ok(&[
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        "--user=ann",
    ]);
    let binding = k.json(&["get", "rolebinding", "reader"]);
    assert_eq!(binding["roleRef"]["name"], "reader");
    assert_eq!(binding["subjects"][0]["name"], "ann");
    k.ok(&[
        "create",
        "clusterrole",
        "nodes",
        "--verb=get",
        "--resource=nodes",
    ]);
    k.ok(&[
        "create",
        "clusterrolebinding",
        "nodes",
        "--clusterrole=nodes",
        "--user=ann",
    ]);
    assert_eq!(
        k.json(&["get", "clusterrolebinding", "nodes"])["roleRef"]["kind"],
        "ClusterRole"
    );

    k.ok(&[
        "run",
        "one",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sleep",
        "3600",
    ]);
    let pod = k.json(&["get", "pod", "one"]);
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        serde_json::json!(["sleep", "3600"])
    );
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
}
