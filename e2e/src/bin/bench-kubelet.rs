//! `vk-eci-bench-kubelet`: the kubelet API of the real `vk-eci run` with N pods on one virtual
//! node (against `vk-eci sim` and the sandbox, default settings: 400 metric calls a minute,
//! 15 s minimum refresh). Measures how long until every pod has metrics, how often a pod's
//! sample advances, the DescribeMultiContainerGroupMetric calls per minute, `follow` latency
//! (a line written in ECI to the line read through the sandbox's pods/log proxy, F streams at
//! once) and the operator's RSS with and without the streams. Prints JSON
//! (`hack/bench-kubelet.sh` saves it to `hack/results/`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use kube_sandbox::metrics_api::parse_samples;
use serde_json::{Value, json};
use vk_eci_e2e::bench::{ReadyPods, percentile, report};
use vk_eci_e2e::stack::{Stack, StackError, vk_eci_binary};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Followed logs open at once.
    #[arg(long, default_value_t = 10)]
    followers: usize,
    /// Lines written per follower.
    #[arg(long, default_value_t = 10)]
    lines: usize,
    /// Seconds to watch the metric refresher.
    #[arg(long, default_value_t = 180)]
    observe_seconds: u64,
    #[arg(long)]
    vk_eci: Option<PathBuf>,
    #[arg(long, default_value = "/tmp/vk-eci-bench-kubelet")]
    dir: PathBuf,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn metric_calls(stack: &Stack) -> Result<u64, StackError> {
    let stats: Value =
        serde_json::from_slice(&stack.sim_ctl(&["stats"])?.stdout).unwrap_or_default();
    Ok(
        stats["actions"]["DescribeMultiContainerGroupMetric"]["calls"]
            .as_u64()
            .unwrap_or(0),
    )
}

fn not_ready(what: impl Into<String>) -> StackError {
    StackError::NotReady(what.into())
}

async fn run(args: Args) -> Result<Value, StackError> {
    let vk_eci = match args.vk_eci {
        Some(path) => path,
        None => vk_eci_binary()?,
    };
    let stack = Stack::start(&vk_eci, &args.dir, &["--seed", "13"]).await?;
    let operator = stack.operator("bench")?;
    let pid = operator.pid();
    let kubelet = operator
        .kubelet
        .ok_or_else(|| not_ready("the operator's kubelet port"))?;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bench"},
        "spec": {"replicas": args.pods, "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}},
                "spec": {"nodeSelector": {"type": "virtual-kubelet"},
                    "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
                    "containers": [{"name": "app", "image": "nginx"}]}}}
    });
    stack.apply_yaml(&deployment.to_string(), "default").await?;
    ReadyPods::watch(stack.client.clone(), "default", "app=bench")
        .at_least(args.pods, Duration::from_secs(1800))
        .await?;
    let all_running = Instant::now();
    let rss_without_streams = rss_kib(pid);

    // Metrics: scrape /metrics/resource as the API server would, every second.
    let http = stack
        .sandbox
        .as_ref()
        .and_then(|s| s.sandbox.kubelet_identity())
        .map(|k| k.http.clone())
        .ok_or_else(|| not_ready("the sandbox's kubelet client"))?;
    let url = format!("https://{kubelet}/metrics/resource");
    let calls_before = metric_calls(&stack)?;
    let observe_started = Instant::now();
    let mut last_sample: HashMap<String, (i64, Instant)> = HashMap::new();
    let mut advances: Vec<f64> = Vec::new();
    let mut all_present_after = None;
    while observe_started.elapsed() < Duration::from_secs(args.observe_seconds) {
        if let Ok(response) = http.get(&url).send().await
            && let Ok(text) = response.text().await
        {
            let now = Instant::now();
            for sample in parse_samples(&text)
                .into_iter()
                .filter(|s| s.name == "container_cpu_usage_seconds_total")
            {
                let pod = sample.labels.get("pod").cloned().unwrap_or_default();
                let at = sample.at_ms.unwrap_or(0);
                match last_sample.get(&pod) {
                    Some((seen, since)) if *seen != at => {
                        advances.push(now.duration_since(*since).as_secs_f64());
                        last_sample.insert(pod, (at, now));
                    }
                    Some(_) => {}
                    None => {
                        last_sample.insert(pod, (at, now));
                    }
                }
            }
            if all_present_after.is_none() && last_sample.len() >= args.pods {
                all_present_after = Some(all_running.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let observed = observe_started.elapsed().as_secs_f64();
    let calls_per_minute = (metric_calls(&stack)? - calls_before) as f64 * 60.0 / observed;
    advances.sort_by(|a, b| a.total_cmp(b));

    // Follow: F streams through the sandbox; a line written in ECI to the line read.
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), "default");
    let listed = pods
        .list(&ListParams::default().labels("app=bench"))
        .await?
        .items;
    let targets: Vec<(String, String)> = listed
        .iter()
        .filter_map(|p| {
            let id = p
                .metadata
                .annotations
                .as_ref()?
                .get("k8s.aliyun.com/eci-instance-id")?;
            Some((p.metadata.name.clone()?, id.clone()))
        })
        .take(args.followers)
        .collect();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    for (name, _) in &targets {
        let stream = pods
            .log_stream(
                name,
                &LogParams {
                    follow: true,
                    tail_lines: Some(1),
                    ..LogParams::default()
                },
            )
            .await?;
        let seen = seen_tx.clone();
        tokio::spawn(async move {
            let mut lines = stream.lines();
            while let Some(Ok(line)) = lines.next().await {
                if line.starts_with("bench-marker-") && seen.send((line, Instant::now())).is_err() {
                    return;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_with_streams = rss_kib(pid);
    let sim = reqwest::Client::new();
    let mut latencies = Vec::new();
    for round in 0..args.lines {
        let mut written = HashMap::new();
        for (index, (_, group)) in targets.iter().enumerate() {
            let marker = format!("bench-marker-{round}-{index}");
            let body = json!({"container_group_id": group, "container": "app", "lines": [marker]});
            sim.post(format!("{}/_sim/log", stack.sim_endpoint))
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| not_ready(format!("append a log line: {e}")))?;
            written.insert(marker, Instant::now());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !written.is_empty() && Instant::now() < deadline {
            let Ok(Some((line, at))) =
                tokio::time::timeout(Duration::from_secs(30), seen_rx.recv()).await
            else {
                break;
            };
            if let Some(sent) = written.remove(&line) {
                latencies.push(at.saturating_duration_since(sent).as_secs_f64());
            }
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let expected = targets.len() * args.lines;
    let _stopped = operator.terminate(Duration::from_secs(10));
    Ok(json!({
        "pods": args.pods,
        "metrics": {
            "seconds_from_all_running_to_all_pods_in_metrics": all_present_after,
            "pods_seen": last_sample.len(),
            "sample_advance_interval_seconds": {
                "p50": percentile(&advances, 0.5),
                "p99": percentile(&advances, 0.99),
                "samples": advances.len(),
            },
            "describe_multi_container_group_metric_calls_per_minute": calls_per_minute,
            "observed_seconds": observed,
            "note": "defaults: 400 calls/min budget, 15 s minimum refresh, 20 groups per call",
        },
        "follow": {
            "streams": targets.len(),
            "line_latency_seconds": {
                "p50": percentile(&latencies, 0.5),
                "p99": percentile(&latencies, 0.99),
                "received": latencies.len(),
                "expected": expected,
            },
            "note": "ECI line written (simulator admin API) to the line read through the sandbox's pods/log proxy",
        },
        "operator_rss_mib": {
            "without_streams": rss_without_streams as f64 / 1024.0,
            "with_streams": rss_with_streams as f64 / 1024.0,
        },
    }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    report("vk-eci-bench-kubelet", run(Args::parse()).await)
}
