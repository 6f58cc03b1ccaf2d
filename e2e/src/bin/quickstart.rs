//! `vk-eci-quickstart`: the whole product on this machine in one command (`hack/quickstart.sh`).
//! The sandbox, `vk-eci sim` and `vk-eci run`; a spot Deployment with a PodDisruptionBudget and
//! a SpotRotationPolicy from `config/samples/`; a pod that goes to ECI by its label alone (the
//! admission webhook); a spot release on some of its pods; and what happens, step by step,
//! until Ctrl-C.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use vk_eci_e2e::stack::{
    Stack, StackError, WebhookTls, apply, free_port, repository, vk_eci_binary, wait,
};

#[derive(Parser)]
#[command(
    name = "vk-eci-quickstart",
    about = "vk-eci end to end on this machine, no cluster or cloud account needed"
)]
struct Args {
    /// The vk-eci binary (default: next to this one, built if missing).
    #[arg(long)]
    vk_eci: Option<PathBuf>,
    /// Where logs and the kubeconfig go.
    #[arg(long, default_value = "/tmp/vk-eci-quickstart")]
    dir: PathBuf,
    /// Fraction of the Deployment's pods whose spot instances ECI reclaims.
    #[arg(long, default_value_t = 0.2)]
    fraction: f64,
    /// Seconds of warning ECI gives (3 minutes on Alibaba Cloud).
    #[arg(long, default_value_t = 180.0)]
    lead_seconds: f64,
}

struct Progress(Instant);

impl Progress {
    fn say(&self, text: impl AsRef<str>) {
        println!(
            "[{:>5.1}s] {}",
            self.0.elapsed().as_secs_f64(),
            text.as_ref()
        );
    }
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn run(args: Args) -> Result<(), StackError> {
    let progress = Progress(Instant::now());
    let vk_eci = match args.vk_eci {
        Some(path) => path,
        None => vk_eci_binary()?,
    };
    progress.say("starting the Kubernetes API sandbox and the ECI simulator (vk-eci sim)");
    let mut stack = Stack::start(&vk_eci, &args.dir, &[]).await?;
    // ECI samples every 15 s; the simulator (fast) every second: refresh often enough that
    // `kubectl top` has two samples soon.
    stack.operator_env.push((
        "VK_ECI_KUBELET_METRIC_MIN_REFRESH_SECONDS".into(),
        "5".into(),
    ));
    progress.say("starting vk-eci run --simulator: it drives that simulator, not Alibaba Cloud");
    let tls = WebhookTls::generate(stack.dir(), &["127.0.0.1"])?;
    let webhook = free_port()?;
    let operator = stack.operator_with("quickstart", &tls.run_args(webhook))?;

    let nodes: Api<Node> = Api::all(stack.client.clone());
    wait(
        "the virtual node to turn Ready",
        Duration::from_secs(60),
        || async {
            let node = nodes.get_opt("virtual-kubelet").await.ok().flatten()?;
            node.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        },
    )
    .await?;
    progress.say("node virtual-kubelet is Ready (labelled vk-eci.io/simulated=true)");

    // Registered once the replica is ready, that is once the caches the webhook answers from
    // have synced.
    let readyz = format!(
        "http://{}/readyz",
        operator
            .admin
            .ok_or_else(|| StackError::NotReady("the operator's admin address".into()))?
    );
    wait("vk-eci to be ready", Duration::from_secs(60), || async {
        let status = reqwest::get(&readyz).await.ok()?.status();
        status.is_success().then_some(())
    })
    .await?;
    let url = format!("https://{webhook}/mutate-pods");
    apply(&stack.client, &tls.configuration("vk-eci", &url, false), "").await?;
    progress.say(format!(
        "registered the admission webhook at {url} (failurePolicy Ignore)"
    ));
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), "default");
    let labelled: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "labelled", "labels": {"alibabacloud.com/eci": "true"}},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]}}))
    .map_err(|e| StackError::Manifest(e.to_string()))?;
    pods.create(&PostParams::default(), &labelled).await?;
    progress.say(
        "created pod labelled: label alibabacloud.com/eci=true, no nodeSelector, no toleration",
    );
    let labelled = wait(
        "pod labelled to run on ECI",
        Duration::from_secs(60),
        || async {
            let pod = pods.get_opt("labelled").await.ok().flatten()?;
            let instance = pod
                .metadata
                .annotations
                .as_ref()?
                .get("k8s.aliyun.com/eci-instance-id")?
                .clone();
            ready(&pod).then_some((pod, instance))
        },
    )
    .await?;
    let (pod, instance) = labelled;
    let spec = pod.spec.unwrap_or_default();
    progress.say(format!(
        "pod labelled runs on {} as ECI instance {instance}: the webhook added nodeSelector {:?} and the toleration",
        spec.node_name.unwrap_or_default(),
        spec.node_selector.unwrap_or_default(),
    ));

    stack.apply_crds().await?;
    for sample in ["spot-deployment.yaml", "spot-rotation-policy.yaml"] {
        let text = std::fs::read_to_string(repository().join("config/samples").join(sample))
            .map_err(|e| StackError::Manifest(format!("config/samples/{sample}: {e}")))?;
        stack.apply_yaml(&text, "default").await?;
        progress.say(format!("applied config/samples/{sample}"));
    }

    let by_app = ListParams::default().labels("app=web");
    let mut last = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let count = pods
            .list(&by_app)
            .await?
            .items
            .iter()
            .filter(|p| ready(p))
            .count();
        if count != last {
            progress.say(format!("web pods Ready on ECI: {count}/10"));
            last = count;
        }
        if count >= 10 {
            break;
        }
        if Instant::now() > deadline {
            return Err(StackError::NotReady(
                "10 web pods Ready within 120 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let fraction = args.fraction.to_string();
    let lead = args.lead_seconds.to_string();
    let tag = format!("vk-eci.io/cluster-id={}", stack.cluster_id);
    let released = stack.sim_ctl(&[
        "spot-release",
        "--fraction",
        &fraction,
        "--lead-seconds",
        &lead,
        "--tag",
        &tag,
    ])?;
    let outcome: serde_json::Value = serde_json::from_slice(&released.stdout).unwrap_or_default();
    let count = outcome["released"].as_array().map_or(0, Vec::len);
    progress.say(format!(
        "ECI announces the release of {count} spot instances in {lead} s (SpotToBeReleased)"
    ));

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("spot.vk-eci.io", "v1alpha1", "SpotRotation"),
        "spotrotations",
    );
    let rotations: Api<DynamicObject> =
        Api::namespaced_with(stack.client.clone(), "default", &resource);
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut ready_low = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(args.lead_seconds as u64 + 60);
    loop {
        let list = rotations.list(&ListParams::default()).await?;
        let ready_now = pods
            .list(&by_app)
            .await?
            .items
            .iter()
            .filter(|p| ready(p))
            .count();
        ready_low = ready_low.min(ready_now);
        let mut finished = 0;
        for rotation in &list.items {
            let name = rotation.metadata.name.clone().unwrap_or_default();
            let pod = rotation.data["spec"]["pod"]["name"]
                .as_str()
                .unwrap_or_default();
            let phase = rotation.data["status"]["phase"]
                .as_str()
                .unwrap_or("Pending")
                .to_string();
            let replacement = rotation.data["status"]["replacementPod"]
                .as_str()
                .unwrap_or("-");
            if seen.get(&name) != Some(&phase) {
                progress.say(format!(
                    "rotation of {pod}: {phase} (replacement {replacement}; Ready web pods {ready_now})"
                ));
                seen.insert(name, phase.clone());
            }
            let pod_gone = !rotation.data["status"]["podGoneAt"].is_null();
            if matches!(phase.as_str(), "Completed" | "Failed") || (phase == "Degraded" && pod_gone)
            {
                finished += 1;
            }
        }
        if finished >= count {
            break;
        }
        if Instant::now() > deadline {
            return Err(StackError::NotReady(
                "every rotation finished before the release".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    progress.say(format!(
        "all {count} rotations finished; the fewest Ready web pods seen was {ready_low}"
    ));
    println!("\nkubectl get spotrotations:");
    println!("{:<44} {:<28} {:<10} REPLACEMENT", "NAME", "POD", "PHASE");
    for rotation in rotations.list(&ListParams::default()).await?.items {
        println!(
            "{:<44} {:<28} {:<10} {}",
            rotation.metadata.name.unwrap_or_default(),
            rotation.data["spec"]["pod"]["name"]
                .as_str()
                .unwrap_or_default(),
            rotation.data["status"]["phase"]
                .as_str()
                .unwrap_or_default(),
            rotation.data["status"]["replacementPod"]
                .as_str()
                .unwrap_or("-"),
        );
    }
    show_logs_and_top(&stack, &pods, &progress).await?;
    println!(
        "\nIt keeps running. Look around with kubectl:\n  export KUBECONFIG={}\n  kubectl get nodes,pods -o wide\n  kubectl get spotrotations\n  kubectl describe pod -l app=web\n  kubectl logs -f deploy/web\n  kubectl exec -it deploy/web -- sh\n  kubectl top pod; kubectl top node\nMore spot releases: {} sim-ctl --endpoint {} spot-release --fraction 0.3\nLogs: {}\nCtrl-C stops everything.",
        stack.kubeconfig.display(),
        vk_eci.display(),
        stack.sim_endpoint,
        stack.dir().display(),
    );
    let _interrupted = tokio::signal::ctrl_c().await;
    progress.say("stopping");
    let _status = operator.terminate(Duration::from_secs(10));
    Ok(())
}

/// `kubectl exec` into the pod (through the sandbox to vk-eci's kubelet API, then ECI's
/// `ExecContainerCommand`), when kubectl is installed; otherwise the line to try.
async fn show_exec(stack: &Stack, name: &str) {
    let args = [
        "--kubeconfig".to_string(),
        stack.kubeconfig.display().to_string(),
        "exec".into(),
        name.to_string(),
        "--".into(),
        "printf".into(),
        "[%s]\\n".into(),
        "a".into(),
        "b c".into(),
    ];
    let shown = format!("kubectl exec {name} -- printf '[%s]\\n' a 'b c'");
    let ran = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kubectl").args(&args).output()
    })
    .await;
    match ran {
        Ok(Ok(output)) if output.status.success() => println!(
            "\n{shown}:\n{}",
            String::from_utf8_lossy(&output.stdout).trim_end()
        ),
        _ => println!("\nWith kubectl installed, try: {shown}"),
    }
}

/// `kubectl logs` and `kubectl top pod` for one web pod, through the sandbox as kubectl would
/// (pods/log proxied to vk-eci's kubelet API; metrics.k8s.io from its /metrics/resource).
async fn show_logs_and_top(
    stack: &Stack,
    pods: &Api<Pod>,
    progress: &Progress,
) -> Result<(), StackError> {
    let listed = pods.list(&ListParams::default().labels("app=web")).await?;
    let Some(name) = listed
        .items
        .iter()
        .find(|p| ready(p))
        .and_then(|p| p.metadata.name.clone())
    else {
        return Ok(());
    };
    let logs = pods
        .logs(
            &name,
            &kube::api::LogParams {
                tail_lines: Some(3),
                ..kube::api::LogParams::default()
            },
        )
        .await?;
    println!("\nkubectl logs {name} --tail=3:\n{}", logs.trim_end());
    show_exec(stack, &name).await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
        "pods",
    );
    let metrics: Api<DynamicObject> =
        Api::namespaced_with(stack.client.clone(), "default", &resource);
    progress.say("waiting for two metric samples (kubectl top pod)");
    let usage = wait("pod metrics", Duration::from_secs(60), || async {
        let item = metrics.get(&name).await.ok()?;
        let container = item.data["containers"].get(0)?.clone();
        Some(container["usage"].clone())
    })
    .await?;
    let nano_cores: f64 = usage["cpu"]
        .as_str()
        .and_then(|c| c.trim_end_matches('n').parse().ok())
        .unwrap_or(0.0);
    let bytes: f64 = usage["memory"]
        .as_str()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0.0);
    println!(
        "\nkubectl top pod {name}: CPU {:.0}m, memory {:.0}Mi",
        nano_cores / 1e6,
        bytes / 1024.0 / 1024.0
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vk-eci-quickstart: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
