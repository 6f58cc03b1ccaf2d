//! `vk-eci-bench-operator`: N pods on one virtual node through the real `vk-eci run` and
//! `vk-eci sim` processes. Measures pod bound → container group created (p50/p99), the time
//! until all are Ready, ECI's status change → a watcher sees the pod Running (to the
//! millisecond), the operator's RSS and idle CPU, and ECI calls per minute while idle
//! (a minute after the last change, so ECI's incremental window is empty too).
//!
//! `--preloaded N` first loads N pods that already run: pods bound to the virtual node, their
//! groups made through the simulator's admin API (ECI's 20 creates/s would take 42 minutes
//! for 50,000), and the instance id recorded on each pod, as an operator restart finds a full
//! node. The operator then starts cold (the time until all N are Ready is reported) and the
//! `--pods` burst runs on top of them.
//! Prints JSON (`hack/bench-operator.sh` saves it to `hack/results/`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::translate::tags;
use vk_eci_e2e::bench::{
    FirstRunning, ReadyPods, histogram_quantile, is_ready, percentile, report, scrape_metrics,
};
use vk_eci_e2e::stack::{Stack, StackError, vk_eci_binary};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    #[arg(long)]
    vk_eci: Option<PathBuf>,
    #[arg(long, default_value = "/tmp/vk-eci-bench-operator")]
    dir: PathBuf,
    /// Seconds to watch the idle operator.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Pods already running on the node when the operator starts.
    #[arg(long, default_value_t = 0)]
    preloaded: usize,
}

/// How many groups one admin call makes, and how many pod writes are in flight at once.
const PRELOAD_BATCH: usize = 2000;
const PRELOAD_CONCURRENCY: usize = 32;

/// N running pods as a restarted operator finds them: bound to the node, each with its group
/// (tagged as vk-eci tags the groups it creates) and the group's id on the pod.
async fn preload(stack: &Stack, dir: &std::path::Path, count: usize) -> Result<(), StackError> {
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), "default");
    let created: Vec<Pod> = stream::iter(0..count)
        .map(|i| {
            let pods = pods.clone();
            let pod = serde_json::from_value::<Pod>(json!({
                "metadata": {"name": format!("preloaded-{i}"), "labels": {"app": "preloaded"}},
                "spec": {"nodeName": stack.node,
                    "containers": [{"name": "app", "image": "nginx"}]}
            }))
            .map_err(|e| StackError::Manifest(e.to_string()));
            async move { Ok::<_, StackError>(pods.create(&PostParams::default(), &pod?).await?) }
        })
        .buffer_unordered(PRELOAD_CONCURRENCY)
        .try_collect()
        .await?;
    let mut recorded = Vec::with_capacity(count);
    for (batch, chunk) in created.chunks(PRELOAD_BATCH).enumerate() {
        let requests: Vec<Value> = chunk
            .iter()
            .map(|pod| {
                let tag = |key: &str, value: &str| json!({"Key": key, "Value": value});
                json!({
                    "RegionId": "cn-hangzhou",
                    "ContainerGroupName": pod.name_any(),
                    "Container": [{"Name": "app", "Image": "nginx"}],
                    "Tag": [
                        tag(tags::CLUSTER_ID, &stack.cluster_id),
                        tag(tags::NODE, &stack.node),
                        tag(tags::NAMESPACE, "default"),
                        tag(tags::NAME, &pod.name_any()),
                        tag(tags::UID, &pod.uid().unwrap_or_default()),
                    ],
                })
            })
            .collect();
        let file = dir.join(format!("preload-{batch}.json"));
        std::fs::write(&file, Value::from(requests).to_string()).map_err(|source| {
            StackError::Io {
                what: format!("cannot write {}", file.display()),
                source,
            }
        })?;
        let output = stack.sim_ctl(&["create-groups", "--file", &file.display().to_string()])?;
        let answers: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_default();
        if answers.len() != chunk.len() {
            return Err(StackError::NotReady(format!(
                "the simulator made {} of {} groups: {}",
                answers.len(),
                chunk.len(),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        for (pod, answer) in chunk.iter().zip(answers) {
            let Some(id) = answer["container_group_id"].as_str() else {
                return Err(StackError::NotReady(format!(
                    "the simulator refused {}'s group: {}",
                    pod.name_any(),
                    answer["error"]
                )));
            };
            recorded.push((pod.name_any(), id.to_string()));
        }
    }
    stream::iter(recorded)
        .map(|(name, id)| {
            let pods = pods.clone();
            let patch = json!({"metadata": {"annotations": {INSTANCE_ID: id}}});
            async move {
                pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            }
        })
        .buffer_unordered(PRELOAD_CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(())
}

fn proc_field(pid: u32, file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of `pid`, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn calls(stats: &Value) -> u64 {
    stats["actions"].as_object().map_or(0, |a| {
        a.values().map(|v| v["calls"].as_u64().unwrap_or(0)).sum()
    })
}

async fn run(args: Args) -> Result<Value, StackError> {
    let vk_eci = match args.vk_eci {
        Some(path) => path,
        None => vk_eci_binary()?,
    };
    let mut stack = Stack::start(&vk_eci, &args.dir, &["--seed", "11"]).await?;
    // The operator's default, as the chart runs it (the stack's 6 s are for failover tests).
    stack.lease_seconds = 10;
    // As the chart installs them: without the SpotRotation CRDs the operator's rotation
    // caches never sync, which is not the state to measure.
    stack.apply_crds().await?;
    let preload_started = Instant::now();
    preload(&stack, &args.dir, args.preloaded).await?;
    let preload_seconds = preload_started.elapsed().as_secs_f64();
    let quota = (args.preloaded + args.pods).max(10_000).to_string();
    let operator = stack.operator_with("bench", &["--quota-pod".into(), quota])?;
    let pid = operator.pid();
    let operator_started = Instant::now();
    ReadyPods::watch(stack.client.clone(), "default", "app=preloaded")
        .at_least(args.preloaded, Duration::from_secs(3600))
        .await?;
    let cold_start = operator_started.elapsed();
    let rss_cold_start = proc_field(pid, "status", "VmRSS:").unwrap_or(0);
    let calls_cold_start: Value =
        serde_json::from_slice(&stack.sim_ctl(&["stats"])?.stdout).unwrap_or_default();
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bench"},
        "spec": {"replicas": args.pods, "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}},
                "spec": {"nodeSelector": {"type": "virtual-kubelet"},
                    "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
                    "containers": [{"name": "app", "image": "nginx"}]}}}
    });
    let first_running = FirstRunning::watch(stack.client.clone(), "default", "app=bench");
    let started = Instant::now();
    stack.apply_yaml(&deployment.to_string(), "default").await?;
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), "default");
    let all_in_time = ReadyPods::watch(stack.client.clone(), "default", "app=bench")
        .at_least(args.pods, Duration::from_secs(1800))
        .await;
    if let Err(error) = all_in_time {
        return Err(StackError::NotReady(format!(
            "{error}; the pods not Ready: {}",
            not_ready(&pods).await?
        )));
    }
    let all_ready = started.elapsed();
    // Bound (the scheduler's binding) → group created, from the simulator's own records.
    let groups: Value =
        serde_json::from_slice(&stack.sim_ctl(&["groups"])?.stdout).unwrap_or_default();
    let created: std::collections::HashMap<String, String> = groups
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| {
            Some((
                g["id"].as_str()?.to_string(),
                g["created_at"].as_str()?.to_string(),
            ))
        })
        .collect();
    let mut latencies: Vec<f64> = Vec::new();
    for pod in pods
        .list(&ListParams::default().labels("app=bench"))
        .await?
        .items
    {
        let scheduled = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
            .and_then(|c| c.last_transition_time.clone());
        let id = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("k8s.aliyun.com/eci-instance-id"));
        if let (Some(bound), Some(at)) = (scheduled, id.and_then(|id| created.get(id)))
            && let Ok(at) = chrono::DateTime::parse_from_rfc3339(at)
        {
            let bound_ms = bound.0.as_millisecond();
            latencies.push((at.timestamp_millis() - bound_ms) as f64 / 1000.0);
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    // ECI's status change (the simulator's own time, to the millisecond) → a watcher of the
    // pod sees it Running: the whole path, the operator's poll, patch and the watch included.
    let seen_running = first_running.seen();
    let mut running_lags: Vec<f64> = groups
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["status"] == "Running")
        .filter_map(|g| {
            let changed =
                chrono::DateTime::parse_from_rfc3339(g["status_changed_at"].as_str()?).ok()?;
            let seen = seen_running.get(g["id"].as_str()?)?;
            Some((seen.timestamp_millis() - changed.timestamp_millis()) as f64 / 1000.0)
        })
        .collect();
    running_lags.sort_by(|a, b| a.total_cmp(b));

    let rss_busy = proc_field(pid, "status", "VmRSS:").unwrap_or(0);
    let metrics = match operator.admin {
        Some(addr) => scrape_metrics(addr).await?,
        None => String::new(),
    };
    let lag = |p| histogram_quantile(&metrics, "vk_eci_status_sync_lag_seconds", p);
    // Idle means no change in ECI's last minute either (the incremental window).
    tokio::time::sleep(Duration::from_secs(65)).await;
    let stats_before: Value =
        serde_json::from_slice(&stack.sim_ctl(&["stats"])?.stdout).unwrap_or_default();
    let ticks_before = cpu_ticks(pid).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let ticks_after = cpu_ticks(pid).unwrap_or(0);
    let stats_after: Value =
        serde_json::from_slice(&stack.sim_ctl(&["stats"])?.stdout).unwrap_or_default();
    let rss_idle = proc_field(pid, "status", "VmRSS:").unwrap_or(0);
    let rss_idle_anon = proc_field(pid, "status", "RssAnon:").unwrap_or(0);
    let rss_idle_file = proc_field(pid, "status", "RssFile:").unwrap_or(0);
    let rss_peak = proc_field(pid, "status", "VmHWM:").unwrap_or(0);
    let idle_core = (ticks_after - ticks_before) as f64 / 100.0 / args.idle_seconds as f64;
    let calls_per_minute =
        (calls(&stats_after) - calls(&stats_before)) as f64 * 60.0 / args.idle_seconds as f64;
    let _stopped = operator.terminate(Duration::from_secs(10));
    let malloc = match std::env::var("GLIBC_TUNABLES") {
        Ok(tunables) if !tunables.is_empty() => format!("GLIBC_TUNABLES={tunables}"),
        _ => "glibc defaults".to_string(),
    };
    Ok(json!({
        "pods": args.pods,
        "malloc": malloc,
        "preloaded": {
            "pods": args.preloaded,
            "load_seconds": preload_seconds,
            "operator_start_to_all_ready_seconds": cold_start.as_secs_f64(),
            "operator_rss_mib_then": rss_cold_start as f64 / 1024.0,
            "eci_calls_until_then": calls(&calls_cold_start),
            "note": "pods bound and their groups made through the simulator's admin API before the operator starts",
        },
        "all_ready_seconds": all_ready.as_secs_f64(),
        "bound_to_group_created_seconds": {
            "p50": percentile(&latencies, 0.5),
            "p99": percentile(&latencies, 0.99),
            "samples": latencies.len(),
            "note": "API times have whole-second resolution; ECI's own limit of 20 creates/s (burst 100) paces a burst",
        },
        "group_running_to_pod_running_seconds": {
            "p50": percentile(&running_lags, 0.5),
            "p99": percentile(&running_lags, 0.99),
            "max": running_lags.last(),
            "samples": running_lags.len(),
            "note": "the simulator's status change (ms) to the bench's pod watch seeing Running (ms), during the create burst",
        },
        "status_sync_lag_seconds_at_most": {"p50": lag(0.5), "p99": lag(0.99),
            "note": "ECI change (event or container time, whole seconds) to pod patched; bucket upper bounds"},
        "operator_rss_mib": {
            "after_burst": rss_busy as f64 / 1024.0,
            "idle": rss_idle as f64 / 1024.0,
            "peak": rss_peak as f64 / 1024.0,
            "idle_anon": rss_idle_anon as f64 / 1024.0,
            "idle_file": rss_idle_file as f64 / 1024.0,
        },
        "operator_idle_cpu_cores": idle_core,
        "eci_calls_per_minute_idle": calls_per_minute,
        "eci_calls_by_action": stats_after["actions"]
            .as_object()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v["calls"].clone())).collect::<serde_json::Map<_, _>>()),
    }))
}

/// What the pods that are not Ready have in common, counted, with a few names.
async fn not_ready(pods: &Api<Pod>) -> Result<String, StackError> {
    let mut kinds: std::collections::BTreeMap<String, (usize, Vec<String>)> = Default::default();
    for pod in pods
        .list(&ListParams::default().labels("app=bench"))
        .await?
        .items
        .into_iter()
        .filter(|pod| !is_ready(pod))
    {
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let group = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("k8s.aliyun.com/eci-instance-id"))
            .is_some();
        let kind = format!("phase={phase:?} node={node:?} group={group}");
        let entry = kinds.entry(kind).or_default();
        entry.0 += 1;
        if entry.1.len() < 5 {
            entry.1.extend(pod.metadata.name);
        }
    }
    Ok(serde_json::to_string(&kinds).unwrap_or_default())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // The sandbox runs in this process: its warnings (a watch it closed for falling behind)
    // explain a slow benchmark.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .init();
    report("vk-eci-bench-operator", run(Args::parse()).await)
}
