//! `vk-eci-bench-storm`: a spot storm against the real `vk-eci run` and `vk-eci sim`
//! processes. A Deployment of N spot pods (with a PodDisruptionBudget) under a Surge
//! SpotRotationPolicy; ECI announces the release of a fraction of them at once, with ECI's
//! real three minutes of warning. Measures, from the SpotRotations the operator records:
//! notice → surge, notice → replacement Ready, notice → doomed pod gone (p50/p99), how many
//! were replaced and gone before their release, and, from a pod watch, the fewest Ready pods
//! during the storm. Prints JSON (`hack/bench-storm.sh` saves it to `hack/results/`).
//!
//! Variants, each set once the fleet is Ready: `--real-timing` (ECI's own 1–4 s scheduling and
//! 4–20 s starts for the replacements, instead of a quarter second), `--create-error-rate`
//! (that fraction of CreateContainerGroup calls fails), `--second-storm-after-seconds` (the
//! same fraction released again while the first storm is being rotated).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use vk_eci_e2e::bench::{ReadyPods, counter, percentile, report, scrape_metrics};
use vk_eci_e2e::stack::{Stack, StackError, vk_eci_binary};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// The fraction of the fleet ECI reclaims at once.
    #[arg(long, default_value_t = 0.2)]
    fraction: f64,
    /// ECI's warning before the release (it announces three minutes).
    #[arg(long, default_value_t = 180)]
    lead_seconds: u64,
    #[arg(long, default_value = "10%")]
    max_surge: String,
    #[arg(long, default_value_t = 50)]
    max_concurrent: u32,
    /// ECI's real start times for the instances created during the storm.
    #[arg(long)]
    real_timing: bool,
    /// Fraction of CreateContainerGroup calls that fail during the storm.
    #[arg(long, default_value_t = 0.0)]
    create_error_rate: f64,
    /// A second release of `fraction` of the spot fleet this long after the first.
    #[arg(long)]
    second_storm_after_seconds: Option<u64>,
    #[arg(long)]
    vk_eci: Option<PathBuf>,
    #[arg(long, default_value = "/tmp/vk-eci-bench-storm")]
    dir: PathBuf,
}

fn sim_ok(stack: &Stack, args: &[&str]) -> Result<(), StackError> {
    let output = stack.sim_ctl(args)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(StackError::NotReady(format!(
            "sim-ctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

fn time(value: &Value) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(value.as_str()?).ok()
}

/// Seconds from `from` to `to` for every rotation that has both, sorted.
fn spans(rotations: &[DynamicObject], from: &str, to: &str) -> Vec<f64> {
    let mut spans: Vec<f64> = rotations
        .iter()
        .filter_map(|r| {
            let field = |path: &str| {
                let (part, name) = path.split_once('.')?;
                time(&r.data[part][name])
            };
            Some((field(to)? - field(from)?).num_milliseconds() as f64 / 1000.0)
        })
        .collect();
    spans.sort_by(f64::total_cmp);
    spans
}

fn summary(spans: &[f64]) -> Value {
    json!({
        "p50": percentile(spans, 0.5),
        "p99": percentile(spans, 0.99),
        "max": spans.last(),
        "samples": spans.len(),
    })
}

async fn run(args: Args) -> Result<Value, StackError> {
    let vk_eci = match args.vk_eci {
        Some(path) => path,
        None => vk_eci_binary()?,
    };
    let stack = Stack::start(&vk_eci, &args.dir, &["--seed", "13"]).await?;
    let operator = stack.operator("bench")?;
    stack.apply_crds().await?;
    let fleet = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fleet"},
        "spec": {"replicas": args.pods, "selector": {"matchLabels": {"app": "fleet"}},
            "template": {"metadata": {"labels": {"app": "fleet"},
                    "annotations": {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}},
                "spec": {"nodeSelector": {"type": "virtual-kubelet"},
                    "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
                    "containers": [{"name": "app", "image": "nginx"}]}}}
    });
    let budget = json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "fleet"},
        "spec": {"maxUnavailable": "10%", "selector": {"matchLabels": {"app": "fleet"}}}
    });
    let policy = json!({
        "apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
        "metadata": {"name": "fleet"},
        "spec": {"targetRef": {"kind": "Deployment", "name": "fleet"}, "strategy": "Surge",
            "maxSurge": args.max_surge, "maxConcurrent": args.max_concurrent,
            "historyLimit": args.pods}
    });
    for object in [&fleet, &budget, &policy] {
        stack.apply_yaml(&object.to_string(), "default").await?;
    }
    let mut ready = ReadyPods::watch(stack.client.clone(), "default", "app=fleet");
    ready.at_least(args.pods, Duration::from_secs(1800)).await?;

    if args.real_timing {
        sim_ok(&stack, &["timing"])?;
    }
    if args.create_error_rate > 0.0 {
        let rate = args.create_error_rate.to_string();
        sim_ok(
            &stack,
            &[
                "faults",
                "--action",
                "CreateContainerGroup",
                "--error-rate",
                &rate,
            ],
        )?;
    }
    ready.track_fewest();
    let release = || -> Result<usize, StackError> {
        let released: Value = serde_json::from_slice(
            &stack
                .sim_ctl(&[
                    "spot-release",
                    "--fraction",
                    &args.fraction.to_string(),
                    "--lead-seconds",
                    &args.lead_seconds.to_string(),
                ])?
                .stdout,
        )
        .map_err(|e| StackError::NotReady(format!("spot-release answered: {e}")))?;
        released["released"]
            .as_array()
            .map(Vec::len)
            .ok_or_else(|| StackError::NotReady(format!("spot-release answered {released}")))
    };
    let first_storm = release()?;
    let mut doomed = first_storm;
    let second_storm_at = args
        .second_storm_after_seconds
        .map(|after| tokio::time::Instant::now() + Duration::from_secs(after));
    let mut second_storm = None;

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("spot.vk-eci.io", "v1alpha1", "SpotRotation"),
        "spotrotations",
    );
    let rotations: Api<DynamicObject> =
        Api::namespaced_with(stack.client.clone(), "default", &resource);
    let deployments: Api<Deployment> = Api::namespaced(stack.client.clone(), "default");
    let finished = |r: &DynamicObject| {
        matches!(
            r.data["status"]["phase"].as_str(),
            Some("Completed" | "Failed")
        ) || r.data["status"]["podGoneAt"].is_string()
    };
    let mut most_replicas = 0;
    let mut deadline = tokio::time::Instant::now()
        + Duration::from_secs(args.lead_seconds)
        + Duration::from_secs(60);
    let list = loop {
        if second_storm.is_none()
            && second_storm_at.is_some_and(|at| tokio::time::Instant::now() >= at)
        {
            let released = release()?;
            doomed += released;
            second_storm = Some(released);
            deadline = tokio::time::Instant::now()
                + Duration::from_secs(args.lead_seconds)
                + Duration::from_secs(60);
        }
        let replicas = deployments
            .get("fleet")
            .await?
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        most_replicas = most_replicas.max(replicas);
        let list = rotations.list(&ListParams::default()).await?.items;
        let second_storm_due = second_storm_at.is_some() && second_storm.is_none();
        if !second_storm_due && list.len() >= doomed && list.iter().all(finished) {
            break list;
        }
        if tokio::time::Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    for rotation in &list {
        let phase = rotation.data["status"]["phase"]
            .as_str()
            .unwrap_or("none")
            .to_string();
        *phases.entry(phase).or_default() += 1;
    }
    let before_release = |field: &str| {
        list.iter()
            .filter(|r| {
                let at = time(&r.data["status"][field]);
                let release_at = time(&r.data["spec"]["releaseAt"]);
                at.zip(release_at).is_some_and(|(at, release)| at < release)
            })
            .count()
    };
    let metrics = match operator.admin {
        Some(addr) => scrape_metrics(addr).await?,
        None => String::new(),
    };
    let _stopped = operator.terminate(Duration::from_secs(10));
    Ok(json!({
        "pods": args.pods,
        "doomed": doomed,
        "storms": {"first": first_storm, "second": second_storm,
            "second_after_seconds": args.second_storm_after_seconds},
        "real_timing": args.real_timing,
        "create_error_rate": args.create_error_rate,
        "lead_seconds": args.lead_seconds,
        "policy": {"maxSurge": args.max_surge, "maxConcurrent": args.max_concurrent},
        "rotations": list.len(),
        "phases": phases,
        "replacement_ready_before_release": before_release("replacementReadyAt"),
        "doomed_pod_gone_before_release": before_release("podGoneAt"),
        "notice_to_surge_seconds": summary(&spans(&list, "spec.noticedAt", "status.surgedAt")),
        "notice_to_replacement_ready_seconds":
            summary(&spans(&list, "spec.noticedAt", "status.replacementReadyAt")),
        "surge_to_replacement_ready_seconds":
            summary(&spans(&list, "status.surgedAt", "status.replacementReadyAt")),
        "notice_to_pod_gone_seconds": summary(&spans(&list, "spec.noticedAt", "status.podGoneAt")),
        "fewest_ready_pods": ready.fewest(),
        "most_replicas": most_replicas,
        "escalations": counter(&metrics, "vk_eci_spot_escalations_total"),
        "rotation_reconciles": {
            "count": counter(&metrics, "vk_eci_reconcile_duration_seconds_count{controller=\"spot-rotation\"}"),
            "seconds": counter(&metrics, "vk_eci_reconcile_duration_seconds_sum{controller=\"spot-rotation\"}"),
        },
        "note": if args.real_timing {
            "times are the SpotRotation's own timestamps (whole seconds); replacements took ECI's real 1-4 s to schedule and 4-20 s to start"
        } else {
            "times are the SpotRotation's own timestamps (whole seconds); with the simulator's --fast timing a container group starts within a quarter second, so the spans are mostly the operator's own"
        },
    }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    report("vk-eci-bench-storm", run(Args::parse()).await)
}
