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
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds");
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
    assert_eq!(secret["type"], "Opaque");
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

/// Two nodes (one Ready worker, one NotReady and cordoned), three pods bound to the worker,
/// a Lease and an HPA.
const TABLE_OBJECTS: &str = "\
apiVersion: v1
kind: Node
metadata: {name: worker, labels: {node-role.kubernetes.io/worker: ''}}
status:
  conditions: [{type: Ready, status: 'True'}]
  addresses: [{type: InternalIP, address: 10.0.0.5}]
  nodeInfo: {kubeletVersion: v1.33.1, osImage: Ubuntu 24.04, kernelVersion: 6.8.0, containerRuntimeVersion: 'containerd://1.7.24'}
---
apiVersion: v1
kind: Node
metadata: {name: gone}
spec: {unschedulable: true}
status:
  conditions: [{type: Ready, status: 'Unknown'}]
  nodeInfo: {kubeletVersion: v1.33.1}
---
apiVersion: v1
kind: Pod
metadata: {name: half-ready}
spec:
  nodeName: worker
  containers: [{name: app, image: 'app:1'}, {name: probe-fails, image: 'side:1'}]
  readinessGates: [{conditionType: example.com/lb}]
---
apiVersion: v1
kind: Pod
metadata: {name: crashing}
spec: {nodeName: worker, containers: [{name: app, image: 'app:1'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: leaving}
spec: {nodeName: worker, containers: [{name: app, image: 'app:1'}]}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: vk-eci-leader}
spec: {holderIdentity: vk-eci-0}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 5
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}}]
";

fn header(out: &str) -> Vec<&str> {
    out.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

/// The row whose first column is `name`, split on whitespace.
fn row<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row {name} in\n{out}"))
}

fn ago(seconds: i64) -> String {
    (chrono::Utc::now() - chrono::TimeDelta::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `kubectl get` shows the real API server's columns for the built-in kinds, with the
/// printers' STATUS reasons for pods and nodes.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_get_shows_the_api_servers_columns() {
    let Some(k) = Kubectl::start("tables").await else {
        return;
    };
    let manifest = k.dir.join("objects.yaml");
    std::fs::write(&manifest, TABLE_OBJECTS).unwrap();
    k.ok(&[
        "apply",
        "--validate=false",
        "-f",
        manifest.to_str().unwrap(),
    ]);
    let status = |pod: &str, status: String| {
        k.ok(&[
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ]);
    };
    status(
        "half-ready",
        r#"{"status": {"phase": "Running", "podIP": "10.1.0.7", "podIPs": [{"ip": "10.1.0.7"}],
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
              {"name": "app", "ready": true, "restartCount": 0, "image": "app:1", "imageID": "", "state": {"running": {}}},
              {"name": "probe-fails", "ready": false, "restartCount": 0, "image": "side:1", "imageID": "", "state": {"running": {}}}]}}"#
            .to_string(),
    );
    status(
        "crashing",
        format!(
            r#"{{"status": {{"phase": "Running", "containerStatuses": [
              {{"name": "app", "ready": false, "restartCount": 4, "image": "app:1", "imageID": "",
                "state": {{"waiting": {{"reason": "CrashLoopBackOff"}}}},
                "lastState": {{"terminated": {{"exitCode": 1, "reason": "Error", "finishedAt": "{}"}}}}}}]}}}}"#,
            ago(15 * 60 + 10)
        ),
    );
    status(
        "leaving",
        r#"{"status": {"phase": "Running", "containerStatuses": [
            {"name": "app", "ready": true, "restartCount": 0, "image": "app:1", "imageID": "", "state": {"running": {}}}]}}"#
            .to_string(),
    );
    k.ok(&["delete", "pod", "leaving", "--wait=false"]);

    let pods = k.ok(&["get", "pods"]);
    assert_eq!(
        header(&pods),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert_eq!(row(&pods, "half-ready")[1..3], ["1/2", "Running"]);
    assert_eq!(
        row(&pods, "crashing")[1..6],
        ["0/1", "CrashLoopBackOff", "4", "(15m", "ago)"]
    );
    assert_eq!(row(&pods, "leaving")[1..3], ["1/1", "Terminating"]);
    let wide = k.ok(&["get", "pods", "-o", "wide"]);
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]
    );
    let half_ready = row(&wide, "half-ready");
    assert_eq!(half_ready[5..], ["10.1.0.7", "worker", "<none>", "0/1"]);

    let nodes = k.ok(&["get", "nodes", "-o", "wide"]);
    assert_eq!(
        header(&nodes),
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ]
    );
    let worker = row(&nodes, "worker");
    assert_eq!(worker[1..3], ["Ready", "worker"]);
    assert_eq!(
        worker[4..],
        [
            "v1.33.1",
            "10.0.0.5",
            "<none>",
            "Ubuntu",
            "24.04",
            "6.8.0",
            "containerd://1.7.24"
        ]
    );
    let gone = row(&nodes, "gone");
    assert_eq!(gone[1..3], ["NotReady,SchedulingDisabled", "<none>"]);
    assert_eq!(
        gone[5..],
        ["<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"]
    );

    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
    ]);
    let deployments = k.ok(&["get", "deployments", "-o", "wide"]);
    assert_eq!(
        header(&deployments),
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(row(&deployments, "web")[1], "0/2");
    assert_eq!(
        row(&deployments, "web")[5..],
        ["nginx", "nginx:1.27", "app=web"]
    );
    let replica_sets = k.ok(&["get", "rs"]);
    assert_eq!(
        header(&replica_sets),
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    );
    k.ok(&["create", "service", "nodeport", "web", "--tcp=80:8080"]);
    let services = k.ok(&["get", "services", "-o", "wide"]);
    assert_eq!(
        header(&services),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ]
    );
    assert_eq!(row(&services, "web")[1], "NodePort");
    let web = row(&services, "web");
    assert!(web[2].starts_with("10.96."), "{services}");
    assert_eq!(web[3..5], ["<none>", "80:30000/TCP"]);
    assert_eq!(web[6], "app=web");
    k.ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    let config_maps = k.ok(&["get", "configmaps"]);
    assert_eq!(header(&config_maps), ["NAME", "DATA", "AGE"]);
    assert_eq!(row(&config_maps, "settings")[1], "2");
    k.ok(&["create", "secret", "generic", "token", "--from-literal=t=x"]);
    let secrets = k.ok(&["get", "secrets"]);
    assert_eq!(header(&secrets), ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(row(&secrets, "token")[1..3], ["Opaque", "1"]);
    let namespaces = k.ok(&["get", "namespaces"]);
    assert_eq!(header(&namespaces), ["NAME", "STATUS", "AGE"]);
    assert_eq!(row(&namespaces, "kube-system")[1], "Active");
    let leases = k.ok(&["get", "leases"]);
    assert_eq!(header(&leases), ["NAME", "HOLDER", "AGE"]);
    assert_eq!(row(&leases, "vk-eci-leader")[1], "vk-eci-0");
    k.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--max-unavailable=1",
    ]);
    let budgets = k.ok(&["get", "pdb"]);
    assert_eq!(
        header(&budgets),
        [
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ]
    );
    assert_eq!(row(&budgets, "web")[1..3], ["N/A", "1"]);
    let autoscalers = k.ok(&["get", "hpa"]);
    assert_eq!(
        header(&autoscalers),
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ]
    );
    assert_eq!(
        row(&autoscalers, "web")[1..6],
        ["Deployment/web", "cpu:", "<unknown>/80%", "2", "5"]
    );
}

/// Pods come back as a cluster hands them out: probes, pull policy, DNS and scheduler
/// defaulted, and `kubectl describe` prints them.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_describe_shows_api_server_defaults() {
    let Some(k) = Kubectl::start("defaults").await else {
        return;
    };
    let manifest = k.dir.join("pod.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: probed}\nspec:\n  containers:\n  - name: web\n    image: nginx\n    \
         readinessProbe: {httpGet: {port: 80}}\n    livenessProbe: {tcpSocket: {port: 80}, initialDelaySeconds: 5}\n",
    )
    .unwrap();
    k.ok(&[
        "apply",
        "--validate=false",
        "-f",
        manifest.to_str().unwrap(),
    ]);
    let described = k.ok(&["describe", "pod", "probed"]);
    let line = |label: &str| {
        described
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {label} in\n{described}"))
            .to_string()
    };
    assert_eq!(
        line("Readiness:"),
        "http-get http://:80/ delay=0s timeout=1s period=10s #success=1 #failure=3"
    );
    assert_eq!(
        line("Liveness:"),
        "tcp-socket :80 delay=5s timeout=1s period=10s #success=1 #failure=3"
    );
    assert_eq!(line("QoS Class:"), "BestEffort");
    let pod = k.json(&["get", "pod", "probed"]);
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(
        spec["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );
    k.ok(&["create", "deployment", "web", "--image=nginx:1.27"]);
    let deployment = k.json(&["get", "deployment", "web"]);
    assert_eq!(
        deployment["spec"]["strategy"],
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    assert_eq!(deployment["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(deployment["spec"]["revisionHistoryLimit"], 10);
}

/// `auth can-i` answers yes, the controllers' events read as a cluster's, and `wait` and
/// `rollout status` finish once the pods are Ready.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_auth_events_wait_and_rollout_status() {
    let Some(k) = Kubectl::start("workflow").await else {
        return;
    };
    assert_eq!(k.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    assert_eq!(
        k.ok(&["auth", "can-i", "delete", "nodes", "--all-namespaces"])
            .trim(),
        "yes"
    );
    assert!(k.ok(&["auth", "can-i", "--list"]).contains("*.*"));

    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
    ]);
    let manifest = k.dir.join("node.yaml");
    std::fs::write(&manifest, TABLE_OBJECTS.split("---").next().unwrap()).unwrap();
    k.ok(&[
        "apply",
        "--validate=false",
        "-f",
        manifest.to_str().unwrap(),
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let events = loop {
        let events = k.ok(&["get", "events"]);
        if events.matches("Scheduled").count() >= 2 {
            break events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "both pods scheduled:\n{events}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        header(&events),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert!(
        events.contains("ScalingReplicaSet   deployment/web")
            && events.contains("Scaled up replica set web-"),
        "{events}"
    );
    assert!(
        events.contains("SuccessfulCreate    replicaset/web-"),
        "{events}"
    );
    assert!(
        events.contains("Successfully assigned default/web-"),
        "{events}"
    );
    assert!(events.contains("FailedScheduling"), "{events}");

    let pods = k.ok(&["get", "pods", "-o", "name"]);
    for pod in pods.lines() {
        k.ok(&[
            "patch", pod, "--subresource=status", "--type=merge", "-p",
            r#"{"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
               "containerStatuses": [{"name": "nginx", "ready": true, "restartCount": 0, "image": "nginx:1.27", "imageID": "", "state": {"running": {}}}]}}"#,
        ]);
    }
    let first = pods.lines().next().unwrap();
    assert!(
        k.ok(&["wait", "--for=condition=Ready", first, "--timeout=20s"])
            .contains("condition met")
    );
    assert!(
        k.ok(&["rollout", "status", "deployment/web", "--timeout=20s"])
            .contains("successfully rolled out")
    );
}
