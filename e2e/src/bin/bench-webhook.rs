//! `vk-eci-bench-webhook`: the admission webhook of a real `vk-eci run` under a steady load of
//! AdmissionReviews (pods labelled for ECI, in ECI namespaces, matched by profile selectors,
//! burst and plain ones), sent open-loop at a fixed rate over kept-alive HTTPS as the API
//! server does. Measures the round trip (client side) and the webhook's own histogram.
//! Prints JSON (`hack/bench-webhook.sh` saves it to `hack/results/`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use vk_eci_e2e::bench::{histogram_quantile, percentile, report, scrape_metrics};
use vk_eci_e2e::stack::{Stack, StackError, WebhookTls, apply, free_port, vk_eci_binary, wait};

#[derive(Parser)]
struct Args {
    /// Reviews per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Selectors in the eci-profile (each names a namespace and an object selector).
    #[arg(long, default_value_t = 20)]
    selectors: usize,
    /// Namespaces in the cluster (every fifth labelled for ECI).
    #[arg(long, default_value_t = 200)]
    namespaces: usize,
    #[arg(long)]
    vk_eci: Option<PathBuf>,
    #[arg(long, default_value = "/tmp/vk-eci-bench-webhook")]
    dir: PathBuf,
}

fn failed(what: &str) -> impl FnOnce(String) -> StackError + '_ {
    move |e| StackError::NotReady(format!("{what}: {e}"))
}

/// The `index`-th review of the mix: a fifth each labelled, burst, in an ECI namespace,
/// selected by the profile, and plain.
fn review(index: usize, namespaces: usize) -> Value {
    let namespaces = namespaces.max(1);
    let namespace = match index % 5 {
        // Every fifth namespace is labelled for ECI; ns-3 is team-3's, whom selector-3 picks.
        2 => format!("ns-{}", (index / 5 * 5) % namespaces),
        3 => format!("ns-{}", 3 % namespaces),
        _ => format!("ns-{}", index % namespaces),
    };
    let (labels, annotations) = match index % 5 {
        0 => (json!({"alibabacloud.com/eci": "true"}), json!({})),
        1 => (
            json!({"app": "web"}),
            json!({"alibabacloud.com/burst-resource": "eci"}),
        ),
        2 => (json!({"app": "web"}), json!({})),
        3 => (json!({"workload": "batch-3"}), json!({})),
        _ => (json!({"app": "api", "tier": "backend"}), json!({})),
    };
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": namespace, "labels": labels, "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "8b0f1d2e-0000-4000-8000-000000000001", "controller": true}]},
        "spec": {
            "containers": [{"name": "app", "image": "registry.example.com/app:1.2.3",
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                "env": [{"name": "MODE", "value": "production"}],
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]}],
            "volumes": [{"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"
        }
    });
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("bench-{index}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

async fn run(args: Args) -> Result<Value, StackError> {
    let vk_eci = match args.vk_eci {
        Some(path) => path,
        None => vk_eci_binary()?,
    };
    let stack = Stack::start(&vk_eci, &args.dir, &["--seed", "13"]).await?;
    for index in 0..args.namespaces {
        let labels = if index % 5 == 0 {
            json!({"alibabacloud.com/eci": "true"})
        } else {
            json!({"team": format!("team-{}", index % 7)})
        };
        apply(
            &stack.client,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{index}"), "labels": labels}}),
            "",
        )
        .await?;
    }
    let selectors: Vec<Value> = (0..args.selectors)
        .map(|i| {
            json!({"name": format!("selector-{i}"),
                "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": [format!("team-{}", i % 7)]}]},
                "objectSelector": {"matchLabels": {"workload": format!("batch-{i}")}},
                "effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "2-4Gi"}, "labels": {"selected-by": format!("selector-{i}")}}})
        })
        .collect();
    apply(
        &stack.client,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "eci-profile", "namespace": "kube-system"},
            "data": {"selectors": Value::Array(selectors).to_string()}}),
        "kube-system",
    )
    .await?;

    let tls = WebhookTls::generate(stack.dir(), &["127.0.0.1"])?;
    let listen = free_port()?;
    let operator = stack.operator_with("bench", &tls.run_args(listen))?;
    let admin = operator
        .admin
        .ok_or_else(|| StackError::NotReady("the operator's admin address".into()))?;
    let readyz = format!("http://{admin}/readyz");
    wait(
        "the replica to be ready",
        Duration::from_secs(60),
        || async {
            reqwest::get(&readyz)
                .await
                .ok()?
                .status()
                .is_success()
                .then_some(())
        },
    )
    .await?;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| failed("the CA")(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| failed("the CA")(e.to_string()))?;
    }
    let client_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| failed("TLS")(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(client_tls)
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| failed("the client")(e.to_string()))?;
    let url = format!("https://{listen}/mutate-pods");
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..1000)
            .map(|i| review(i, args.namespaces).to_string())
            .collect(),
    );
    // A warm-up second: connections and caches, not measured.
    for body in bodies.iter().take(50) {
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| failed("a warm-up review")(e.to_string()))?;
    }
    let before = scrape_metrics(admin).await?;

    let total = (u64::from(args.rate) * args.seconds) as usize;
    let mut ticks =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = tokio::task::JoinSet::new();
    let started = Instant::now();
    for index in 0..total {
        ticks.tick().await;
        let (client, url, bodies) = (client.clone(), url.clone(), bodies.clone());
        sent.spawn(async move {
            let body = bodies[index % bodies.len()].clone();
            let at = Instant::now();
            let answer = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let elapsed = at.elapsed().as_secs_f64() * 1000.0;
            let answer: Value = serde_json::from_str(&answer).ok()?;
            let patched = answer["response"]["patch"].is_array()
                || answer["response"]["patch"]
                    .as_str()
                    .is_some_and(|p| base64::engine::general_purpose::STANDARD.decode(p).is_ok());
            (answer["response"]["allowed"] == true).then_some((elapsed, patched))
        });
    }
    let mut latencies = Vec::new();
    let (mut errors, mut patched) = (0usize, 0usize);
    while let Some(done) = sent.join_next().await {
        match done.ok().flatten() {
            Some((ms, with_patch)) => {
                latencies.push(ms);
                patched += usize::from(with_patch);
            }
            None => errors += 1,
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let after = scrape_metrics(admin).await?;
    latencies.sort_by(f64::total_cmp);
    let ms = |p| percentile(&latencies, p).map(|v| (v * 1000.0).round() / 1000.0);
    let decisions: Value = ["eci", "burst", "unchanged", "warned"]
        .iter()
        .map(|d| {
            let name = format!("vk_eci_admissions_total{{decision=\"{d}\"}}");
            let count = |text: &str| vk_eci_e2e::bench::counter(text, &name).unwrap_or(0.0);
            (d.to_string(), json!(count(&after) - count(&before)))
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    drop(operator);
    Ok(json!({
        "rate_per_second": args.rate,
        "requests": total,
        "achieved_per_second": (total as f64 / wall * 10.0).round() / 10.0,
        "errors": errors,
        "patched": patched,
        "decisions": decisions,
        "profile_selectors": args.selectors,
        "namespaces": args.namespaces,
        "round_trip_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": latencies.last()},
        "server_seconds_p99_bucket_bound": histogram_quantile(&after, "vk_eci_admission_duration_seconds", 0.99),
        "server_seconds_p50_bucket_bound": histogram_quantile(&after, "vk_eci_admission_duration_seconds", 0.5),
    }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    report("vk-eci-bench-webhook", run(Args::parse()).await)
}
