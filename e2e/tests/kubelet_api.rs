//! The kubelet API of `vk-eci run`, with kubectl as the client through the sandbox (which
//! proxies `pods/log` to the node's kubelet endpoint over HTTPS with its own client
//! certificate, and serves `metrics.k8s.io` from `/metrics/resource` scrapes like
//! metrics-server): `kubectl logs` and its options, `-f`, `kubectl top`; and the kubelet
//! port's own authentication and authorization. Skips with a message where kubectl is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use serde_json::Value;
use vk_eci_e2e::followed_logs::FollowedLogs;
use vk_eci_e2e::stack::{Stack, vk_eci_binary, wait};

const LIMIT: Duration = Duration::from_secs(60);
const NODE: &str = "virtual-kubelet";

fn kubectl(stack: &Stack, args: &[&str]) -> (bool, String) {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&stack.kubeconfig)
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

fn ok(stack: &Stack, args: &[&str]) -> String {
    let (ok, out) = tokio::task::block_in_place(|| kubectl(stack, args));
    assert!(ok, "kubectl {}: {out}", args.join(" "));
    out
}

fn have_kubectl() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok();
    if !found {
        eprintln!("SKIPPED: kubectl is not installed");
    }
    found
}

/// A stack (whose operators trust the sandbox's kubelet client certificate) and its operator.
async fn stack(name: &str, extra_env: &[(&str, &str)]) -> (Stack, vk_eci_e2e::stack::Process) {
    let dir = std::env::temp_dir().join(format!("vk-eci-kubelet-{name}-{}", std::process::id()));
    let vk_eci = vk_eci_binary().unwrap();
    let mut stack = Stack::start(&vk_eci, &dir, &[]).await.unwrap();
    assert!(
        stack
            .operator_env
            .iter()
            .any(|(k, _)| k == "VK_ECI_KUBELET_CLIENT_CA")
    );
    stack.operator_env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let operator = stack.operator("replica-a").unwrap();
    (stack, operator)
}

const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: steady}
spec:
  nodeName: virtual-kubelet
  containers: [{name: app, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: restarter}
spec:
  nodeName: virtual-kubelet
  restartPolicy: Always
  containers:
  - name: app
    image: busybox
    env:
    - {name: ECI_SIM_EXIT_AFTER_SECONDS, value: '2'}
    - {name: ECI_SIM_EXIT_CODE, value: '1'}
";

async fn running(stack: &Stack, name: &str, restarted: bool) -> Pod {
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), "default");
    wait(&format!("pod {name} running"), LIMIT, || async {
        let pod = pods.get(name).await.ok()?;
        let status = pod.status.as_ref()?;
        let container = status.container_statuses.as_ref()?.first()?;
        let has_group = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("k8s.aliyun.com/eci-instance-id"));
        let ready = status.phase.as_deref() == Some("Running")
            && has_group
            && (!restarted || container.restart_count > 0);
        ready.then_some(pod.clone())
    })
    .await
    .unwrap()
}

fn group_id(pod: &Pod) -> String {
    pod.metadata.annotations.as_ref().unwrap()["k8s.aliyun.com/eci-instance-id"].clone()
}

async fn kubelet_url(stack: &Stack) -> String {
    let nodes: Api<Node> = Api::all(stack.client.clone());
    wait("the node's kubelet endpoint", LIMIT, || async {
        let node = nodes.get(NODE).await.ok()?;
        let status = node.status?;
        let port = status.daemon_endpoints?.kubelet_endpoint?.port;
        let ip = status
            .addresses?
            .into_iter()
            .find(|a| a.type_ == "InternalIP")?
            .address;
        Some(format!("https://{ip}:{port}"))
    })
    .await
    .unwrap()
}

fn insecure_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs_with_every_option_and_follow_within_two_seconds() {
    if !have_kubectl() {
        return;
    }
    let (stack, _operator) = stack("logs", &[]).await;
    stack.apply_yaml(PODS, "default").await.unwrap();
    let steady = running(&stack, "steady", false).await;
    kubelet_url(&stack).await;

    let all = wait("three log lines", LIMIT, || async {
        let (ok, out) = tokio::task::block_in_place(|| kubectl(&stack, &["logs", "steady"]));
        (ok && out.lines().count() >= 3).then_some(out)
    })
    .await
    .unwrap();
    assert!(
        all.lines()
            .next()
            .unwrap()
            .contains("started container app"),
        "{all}"
    );

    let tail = ok(&stack, &["logs", "steady", "--tail=1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.contains("heartbeat"), "{tail}");

    let stamped = ok(&stack, &["logs", "steady", "--timestamps", "--tail=2"]);
    for line in stamped.lines() {
        let (time, _) = line.split_once(' ').unwrap();
        chrono::DateTime::parse_from_rfc3339(time).unwrap();
    }

    let recent = ok(&stack, &["logs", "steady", "--since=2s"]);
    assert!(!recent.contains("started container"), "{recent}");
    assert!(recent.lines().count() <= 3, "{recent}");

    let (refused, message) =
        tokio::task::block_in_place(|| kubectl(&stack, &["logs", "steady", "--previous"]));
    assert!(!refused, "{message}");
    assert!(
        message.contains("previous terminated container"),
        "{message}"
    );

    running(&stack, "restarter", true).await;
    let previous = ok(&stack, &["logs", "restarter", "--previous"]);
    assert!(previous.contains("started container app"), "{previous}");

    let (missing, message) =
        tokio::task::block_in_place(|| kubectl(&stack, &["logs", "steady", "-c", "nope"]));
    assert!(
        !missing && message.contains("not valid for pod"),
        "{message}"
    );

    // -f: a line written in ECI shows within 2 s.
    let follower = FollowedLogs::start(&stack.kubeconfig, "default", "steady").unwrap();
    let first = follower.next_within(Duration::from_secs(10)).unwrap();
    assert!(
        first.1.contains("steady") || first.1.contains("app"),
        "{first:?}"
    );
    let marker = format!("marker-{}", std::process::id());
    stack
        .append_log(&group_id(&steady), "app", &[&marker])
        .await
        .unwrap();
    let written = Instant::now();
    let seen = follower
        .arrival_of(&marker, Duration::from_secs(5))
        .expect("the marker line never arrived");
    let latency = seen.saturating_duration_since(written);
    assert!(
        latency < Duration::from_secs(2),
        "the line took {latency:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kubelet_port_authenticates_and_authorizes_like_a_kubelet() {
    if !have_kubectl() {
        return;
    }
    let (stack, _operator) = stack("auth", &[]).await;
    let url = kubelet_url(&stack).await;
    let client = insecure_client();

    let anonymous = client.get(format!("{url}/pods")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    ok(&stack, &["create", "serviceaccount", "nosy"]);
    let token = ok(&stack, &["create", "token", "nosy"]).trim().to_string();
    let denied = client
        .get(format!("{url}/pods"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let message = denied.text().await.unwrap();
    assert!(message.contains("subresource=proxy"), "{message}");

    let forged = client
        .get(format!("{url}/pods"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    ok(
        &stack,
        &[
            "create",
            "clusterrole",
            "node-reader",
            "--verb=get",
            "--resource=nodes/proxy,nodes/metrics,nodes/stats",
        ],
    );
    // Another account: the kubelet keeps a denial for 30 s, as a kubelet would.
    ok(&stack, &["create", "serviceaccount", "reader"]);
    ok(
        &stack,
        &[
            "create",
            "clusterrolebinding",
            "reader-reads-nodes",
            "--clusterrole=node-reader",
            "--serviceaccount=default:reader",
        ],
    );
    let token = ok(&stack, &["create", "token", "reader"])
        .trim()
        .to_string();
    let allowed = client
        .get(format!("{url}/pods"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.status(),
        200,
        "{}",
        ok(
            &stack,
            &[
                "get",
                "clusterrole/node-reader",
                "clusterrolebinding/reader-reads-nodes",
                "-o",
                "json"
            ]
        )
    );
    let list: Value = serde_json::from_str(&allowed.text().await.unwrap()).unwrap();
    assert_eq!(list["kind"], "PodList");

    let refused = client
        .get(format!("{url}/portForward/default/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 501);
    assert!(refused.text().await.unwrap().contains("port-forward"));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_prometheus_advance_and_kubectl_top_shows_them() {
    if !have_kubectl() {
        return;
    }
    let (stack, _operator) =
        stack("top", &[("VK_ECI_KUBELET_METRIC_MIN_REFRESH_SECONDS", "1")]).await;
    stack.apply_yaml(PODS, "default").await.unwrap();
    running(&stack, "steady", false).await;
    let url = kubelet_url(&stack).await;
    ok(&stack, &["create", "serviceaccount", "scraper"]);
    ok(
        &stack,
        &[
            "create",
            "clusterrole",
            "metrics-reader",
            "--verb=get",
            "--resource=nodes/metrics,nodes/stats",
        ],
    );
    ok(
        &stack,
        &[
            "create",
            "clusterrolebinding",
            "scraper-reads-metrics",
            "--clusterrole=metrics-reader",
            "--serviceaccount=default:scraper",
        ],
    );
    let token = ok(&stack, &["create", "token", "scraper"])
        .trim()
        .to_string();
    let client = insecure_client();
    let scrape = || async {
        let response = client
            .get(format!("{url}/metrics/resource"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
    };
    let cpu_of = |scrape: &prometheus_parse::Scrape| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "container_cpu_usage_seconds_total"
                    && s.labels.get("pod") == Some("steady")
                    && s.labels.get("namespace") == Some("default")
                    && s.labels.get("container") == Some("app")
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => {
                    (v, s.timestamp)
                }
                _ => panic!("container_cpu_usage_seconds_total is not a counter"),
            })
    };
    let first = wait("a CPU sample for steady", LIMIT, || async {
        cpu_of(&scrape().await)
    })
    .await
    .unwrap();
    let later = wait("a newer CPU sample", LIMIT, || async {
        cpu_of(&scrape().await).filter(|(_, at)| *at > first.1)
    })
    .await
    .unwrap();
    assert!(
        later.0 > first.0,
        "the counter must grow: {first:?} then {later:?}"
    );
    let parsed = scrape().await;
    for name in [
        "container_memory_working_set_bytes",
        "container_start_time_seconds",
        "node_cpu_usage_seconds_total",
        "node_memory_working_set_bytes",
    ] {
        assert!(
            parsed.samples.iter().any(|s| s.metric == name),
            "{name} missing"
        );
    }
    let memory = parsed
        .samples
        .iter()
        .find(|s| s.metric == "container_memory_working_set_bytes")
        .unwrap();
    assert!(matches!(memory.value, prometheus_parse::Value::Gauge(v) if v > 0.0));

    let summary = client
        .get(format!("{url}/stats/summary"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["node"]["nodeName"], NODE);
    assert!(
        summary["pods"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["podRef"]["name"] == "steady")
    );

    let top = wait("kubectl top pod", LIMIT, || async {
        let (ok, out) = tokio::task::block_in_place(|| kubectl(&stack, &["top", "pod", "steady"]));
        (ok && out.contains("steady")).then_some(out)
    })
    .await
    .unwrap();
    assert!(top.contains('m') && top.contains("Mi"), "{top}");
    let nodes = wait("kubectl top node", LIMIT, || async {
        let (ok, out) = tokio::task::block_in_place(|| kubectl(&stack, &["top", "node", NODE]));
        (ok && out.contains(NODE)).then_some(out)
    })
    .await
    .unwrap();
    assert!(nodes.contains("Mi"), "{nodes}");

    // A pass whose metric call fails keeps the pods' last samples.
    let failed_refreshes = || {
        std::fs::read_to_string(stack.log("replica-a"))
            .unwrap_or_default()
            .matches("keeping its last samples")
            .count()
    };
    let failed_before = failed_refreshes();
    stack
        .sim_ctl(&[
            "faults",
            "--action",
            "DescribeMultiContainerGroupMetric",
            "--error-rate",
            "1",
        ])
        .unwrap();
    // The second failure is in the pass after the first failed pass was published.
    wait("two failed metric refreshes", LIMIT, || async {
        (failed_refreshes() >= failed_before + 2).then_some(())
    })
    .await
    .unwrap();
    assert!(
        cpu_of(&scrape().await).is_some(),
        "a failed refresh keeps steady's last sample"
    );
    stack.sim_ctl(&["faults", "--clear"]).unwrap();

    // A pod gone from the node drops out of the metrics when a pass ends.
    ok(
        &stack,
        &["delete", "pod", "steady", "--grace-period=0", "--force"],
    );
    wait("steady to leave the metrics", LIMIT, || async {
        cpu_of(&scrape().await).is_none().then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_log_budget_is_said_not_hung() {
    if !have_kubectl() {
        return;
    }
    // Three calls a minute: one at once, then one every 30 s. The stream spreads its polls
    // over the budget (one every 20 s), and its second poll finds the budget still short.
    let (stack, _operator) = stack("budget", &[("VK_ECI_KUBELET_LOG_CALLS_PER_MINUTE", "3")]).await;
    stack.apply_yaml(PODS, "default").await.unwrap();
    running(&stack, "steady", false).await;
    kubelet_url(&stack).await;

    let started = Instant::now();
    let (_, followed) = tokio::task::block_in_place(|| kubectl(&stack, &["logs", "-f", "steady"]));
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the stream must end, not wait for the budget"
    );
    assert!(followed.contains("started container app"), "{followed}");
    let last = followed.lines().last().unwrap_or_default();
    assert!(
        last.contains("DescribeContainerLog budget") && last.contains("exhausted"),
        "{followed}"
    );

    let (ok, refused) = tokio::task::block_in_place(|| kubectl(&stack, &["logs", "steady"]));
    assert!(!ok, "{refused}");
    assert!(refused.contains("exhausted"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_exec_budget_is_said_not_hung() {
    if !have_kubectl() {
        return;
    }
    // Two calls a minute: one at once, the next a minute later, longer than a command waits.
    let (stack, _operator) = stack(
        "exec-budget",
        &[("VK_ECI_KUBELET_EXEC_CALLS_PER_MINUTE", "2")],
    )
    .await;
    stack.apply_yaml(PODS, "default").await.unwrap();
    running(&stack, "steady", false).await;
    kubelet_url(&stack).await;

    let (code, out, err) = exec_spdy(&stack, &["exec", "steady", "--", "echo", "first"], None);
    assert_eq!((code, out.as_str()), (Some(0), "first\n"), "{err}");
    let started = Instant::now();
    let (code, _, err) = exec_spdy(&stack, &["exec", "steady", "--", "echo", "second"], None);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refused, not hung"
    );
    assert_ne!(code, Some(0));
    assert!(
        err.contains("ExecContainerCommand budget") && err.contains("exhausted"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_points_at_the_leader_and_a_standby_says_so() {
    if !have_kubectl() {
        return;
    }
    let (stack, leader) = stack("standby", &[]).await;
    let leader_url = kubelet_url(&stack).await;
    assert_eq!(
        leader_url,
        format!("https://127.0.0.1:{}", leader.kubelet.unwrap().port())
    );
    let standby = stack.operator("replica-b").unwrap();
    let standby_url = format!("https://127.0.0.1:{}", standby.kubelet.unwrap().port());
    ok(&stack, &["create", "serviceaccount", "reader"]);
    ok(
        &stack,
        &[
            "create",
            "clusterrole",
            "node-proxy",
            "--verb=get",
            "--resource=nodes/proxy",
        ],
    );
    ok(
        &stack,
        &[
            "create",
            "clusterrolebinding",
            "reader-proxies-nodes",
            "--clusterrole=node-proxy",
            "--serviceaccount=default:reader",
        ],
    );
    let token = ok(&stack, &["create", "token", "reader"])
        .trim()
        .to_string();
    let client = insecure_client();
    let get = |url: String| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }
    };
    let standby_pods = wait("the standby to listen", LIMIT, || {
        get(format!("{standby_url}/pods"))
    })
    .await
    .unwrap();
    assert_eq!(standby_pods, 503, "a standby refuses politely");
    assert_eq!(get(format!("{standby_url}/healthz")).await, Some(200));
    assert_eq!(get(format!("{leader_url}/pods")).await, Some(200));

    // The standby takes over: the Node moves to it and it serves.
    leader.kill();
    let moved = wait("the Node to point at the new leader", LIMIT, || async {
        let url = kubelet_url(&stack).await;
        (url == standby_url).then_some(url)
    })
    .await
    .unwrap();
    let served = wait("the new leader to serve", LIMIT, || async {
        get(format!("{moved}/pods"))
            .await
            .filter(|code| *code == 200)
    })
    .await;
    assert!(served.is_ok());
}

/// kubectl with SPDY toward the API server (what it falls back to, and what every API server
/// before 1.36 speaks to kubelets): exit code, stdout, stderr.
fn kubectl_spdy(
    stack: &Stack,
    args: &[&str],
    stdin: Option<&str>,
) -> (Option<i32>, String, String) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&stack.kubeconfig)
        .args(args)
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        let mut input = child.stdin.take().unwrap();
        input.write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn exec_spdy(stack: &Stack, args: &[&str], stdin: Option<&str>) -> (Option<i32>, String, String) {
    tokio::task::block_in_place(|| kubectl_spdy(stack, args, stdin))
}

const DONE_POD: &str = "
apiVersion: v1
kind: Pod
metadata: {name: done}
spec:
  nodeName: virtual-kubelet
  restartPolicy: Never
  containers:
  - name: app
    image: busybox
    env:
    - {name: ECI_SIM_EXIT_AFTER_SECONDS, value: '1'}
";

/// An exec request straight to the kubelet port, as an API server would send it.
async fn exec_upgrade(url: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = insecure_client()
        .post(format!("{url}{path}"))
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", "v5.channel.k8s.io")
        .header("x-stream-protocol-version", "v4.channel.k8s.io");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_exec_and_attach_over_spdy_and_websocket() {
    if !have_kubectl() {
        return;
    }
    let (stack, _operator) = stack("exec", &[]).await;
    stack.apply_yaml(PODS, "default").await.unwrap();
    stack.apply_yaml(DONE_POD, "default").await.unwrap();
    let steady = running(&stack, "steady", false).await;
    kubelet_url(&stack).await;

    let (code, out, err) = exec_spdy(
        &stack,
        &["exec", "steady", "--", "printf", "[%s]", "a", "b c"],
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "[a][b c]", "argv intact: {err}");

    let (code, out, err) = exec_spdy(
        &stack,
        &["exec", "steady", "-c", "app", "--", "echo", "hi"],
        None,
    );
    assert_eq!((code, out.as_str()), (Some(0), "hi\n"), "{err}");

    // Interactive: stdin reaches the command, and the exit code reaches kubectl.
    let (code, out, err) = exec_spdy(&stack, &["exec", "-i", "steady", "--", "cat"], Some("hi\n"));
    assert_eq!((code, out.as_str()), (Some(0), "hi\n"), "{err}");
    let (code, _, err) = exec_spdy(
        &stack,
        &["exec", "-i", "steady", "--", "sh", "-c", "exit 3"],
        Some(""),
    );
    assert_eq!(code, Some(3), "{err}");
    let (code, out, err) = exec_spdy(
        &stack,
        &["exec", "-i", "steady", "--", "sh"],
        Some("echo one\nexit 4\n"),
    );
    assert_eq!((code, out.as_str()), (Some(4), "one\n"), "{err}");

    // kubectl's default, WebSocket v5, which the sandbox passes to the kubelet untranslated
    // (as an API server from 1.36 would): the v5 CLOSE of stdin ends cat.
    let websocket = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&stack.kubeconfig)
            .args(args)
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "true")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, out) = tokio::task::block_in_place(|| {
        websocket(&["exec", "-i", "steady", "--", "cat"], "over websocket\n")
    });
    assert_eq!((code, out.as_str()), (Some(0), "over websocket\n"));
    let (code, _) = tokio::task::block_in_place(|| {
        websocket(&["exec", "steady", "-i", "--", "sh", "-c", "exit 5"], "")
    });
    assert_eq!(code, Some(5));
    let log = std::fs::read_to_string(stack.log("replica-a")).unwrap();
    assert!(
        log.contains("WebSocket v5.channel.k8s.io"),
        "the WebSocket path was not taken"
    );
    assert!(
        log.contains("SPDY/3.1 v4.channel.k8s.io") || log.contains("SPDY/3.1 v5.channel.k8s.io")
    );

    // attach: what the container writes from now on.
    let attached = FollowedLogs::kubectl(
        &stack.kubeconfig,
        &["attach", "steady"],
        &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")],
    )
    .unwrap();
    let marker = format!("attached-{}", std::process::id());
    let seen = wait("attach follows the output", LIMIT, || async {
        stack
            .append_log(&group_id(&steady), "app", &[&marker])
            .await
            .unwrap();
        // One line a probe, and the marker written again each time: a marker written before
        // kubectl attach connected is history it never shows.
        tokio::task::block_in_place(|| {
            attached
                .next_within(Duration::from_secs(3))
                .filter(|(_, line)| line == &marker)
        })
    })
    .await;
    assert!(seen.is_ok(), "the marker never reached kubectl attach");
    drop(attached);

    let (code, _, err) = exec_spdy(&stack, &["attach", "-i", "steady"], Some("x\n"));
    assert_ne!(code, Some(0));
    assert!(
        err.contains("cannot attach to a container's stdin"),
        "{err}"
    );

    // Port-forward: refused at once with the reason, not a listener that never forwards.
    let refused = tokio::task::block_in_place(|| {
        Command::new("timeout")
            .args(["30", "kubectl", "--kubeconfig"])
            .arg(&stack.kubeconfig)
            .args(["port-forward", "steady", "0:80"])
            .output()
            .unwrap()
    });
    let message = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{message}");
    assert!(
        message.contains("ECI has no port-forwarding API"),
        "{message}"
    );

    // A completed pod: kubectl refuses, and so does the kubelet port on its own.
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), "default");
    wait("pod done completed", LIMIT, || async {
        let pod = pods.get("done").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Succeeded")).then_some(())
    })
    .await
    .unwrap();
    let (code, _, err) = exec_spdy(&stack, &["exec", "done", "--", "echo", "x"], None);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("completed pod") || err.contains("not running"),
        "{err}"
    );
    let url = kubelet_url(&stack).await;
    ok(&stack, &["create", "serviceaccount", "runner"]);
    ok(
        &stack,
        &[
            "create",
            "clusterrole",
            "node-proxy",
            "--verb=create",
            "--resource=nodes/proxy",
        ],
    );
    ok(
        &stack,
        &[
            "create",
            "clusterrolebinding",
            "runner-proxies",
            "--clusterrole=node-proxy",
            "--serviceaccount=default:runner",
        ],
    );
    let runner = ok(&stack, &["create", "token", "runner"])
        .trim()
        .to_string();
    let (status, message) = exec_upgrade(
        &url,
        "/exec/default/done/app?command=echo&output=1",
        Some(&runner),
    )
    .await;
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("not running"), "{message}");

    // Without nodes/proxy: 403, before anything runs.
    ok(&stack, &["create", "serviceaccount", "stranger"]);
    let stranger = ok(&stack, &["create", "token", "stranger"])
        .trim()
        .to_string();
    let (status, message) = exec_upgrade(
        &url,
        "/exec/default/steady/app?command=echo&output=1",
        Some(&stranger),
    )
    .await;
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains("verb=create") && message.contains("subresource=proxy"),
        "{message}"
    );

    // No protocol in common: refused with the versions the kubelet speaks.
    let response = insecure_client()
        .post(format!(
            "{url}/exec/default/steady/app?command=echo&output=1"
        ))
        .bearer_auth(&runner)
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", "v9.channel.k8s.io")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response
            .headers()
            .get_all("x-accepted-stream-protocol-versions")
            .iter()
            .any(|v| v == "v5.channel.k8s.io")
    );
}

/// `kubectl exec -it` in a real pseudo-terminal (tmux): the prompt, what is typed and its
/// output, a window resize reaching the kubelet, and the shell's exit code reaching kubectl.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_exec_it_gets_a_terminal_that_resizes() {
    if !have_kubectl() {
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("SKIPPED: tmux is not installed");
        return;
    }
    let (stack, _operator) = stack(
        "exec-it",
        &[("RUST_LOG", "info,vk_eci::kubelet::terminal=debug")],
    )
    .await;
    stack.apply_yaml(PODS, "default").await.unwrap();
    running(&stack, "steady", false).await;
    kubelet_url(&stack).await;

    /// Stops the test's own tmux server however the test ends.
    struct TmuxServer(String);
    impl Drop for TmuxServer {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-L", &self.0, "kill-server"])
                .output();
        }
    }
    let socket = format!("vk-eci-exec-it-{}", std::process::id());
    let _server = TmuxServer(socket.clone());
    let tmux = |args: &[&str]| {
        let output = Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let command = format!(
        "kubectl --kubeconfig {} exec -it steady -- sh; echo EXIT=$?; sleep 60",
        stack.kubeconfig.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "exec",
        "-x",
        "80",
        "-y",
        "24",
        &command,
    ]);
    let screen = || tmux(&["capture-pane", "-p", "-t", "exec"]);
    let shown = |what: &'static str| {
        let screen = &screen;
        async move {
            wait(&format!("{what:?} on the terminal"), LIMIT, || async {
                let text = screen();
                text.contains(what).then_some(text)
            })
            .await
        }
    };
    // capture-pane drops trailing spaces: the prompt "$ " shows as "$".
    let prompt = shown("$").await;
    assert!(prompt.is_ok(), "no prompt: {}", screen());
    tmux(&["send-keys", "-t", "exec", "echo typed-here", "Enter"]);
    let echoed = shown("\ntyped-here").await;
    assert!(echoed.is_ok(), "no output: {}", screen());

    tmux(&["resize-window", "-t", "exec", "-x", "100", "-y", "30"]);
    let resized = wait("the resize at the kubelet", LIMIT, || async {
        let log = std::fs::read_to_string(stack.log("replica-a")).ok()?;
        log.contains("width: 100, height: 30").then_some(())
    })
    .await;
    assert!(resized.is_ok(), "the resize never reached the kubelet");

    tmux(&["send-keys", "-t", "exec", "exit 4", "Enter"]);
    let exited = shown("EXIT=4").await;
    assert!(
        exited.is_ok(),
        "the exit code did not reach kubectl: {exited:?}"
    );
}
