//! Load generator for `hack/bench-sandbox.sh`: with a watch open on pods, creates N pods
//! through kube-rs, waits until the watch has seen them all, and prints timings as JSON.
//!
//! `cargo run --release -p kube-sandbox --example fill_pods -- URL COUNT CONCURRENCY`

use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, Config};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:6443".into());
    let count: usize = args.get(2).map_or(Ok(10_000), |c| c.parse())?;
    let concurrency: usize = args.get(3).map_or(Ok(32), |c| c.parse())?;
    let client = Client::try_from(Config::new(url.parse()?))?;
    let pods: Api<Pod> = Api::namespaced(client, "default");

    let version = pods
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut watch = pods
        .watch(&WatchParams::default().timeout(600), &version)
        .await?
        .boxed();
    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let pods = pods.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("bench-{i}"), "labels": {"app": "bench"}},
                "spec": {"nodeName": "virtual-kubelet", "containers": [{"name": "app", "image": "registry.example.com/team/app:1.2.3",
                    "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}}]},
            }))?;
            pods.create(&PostParams::default(), &pod).await.map(|_| ()).map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        });
    }
    while let Some(result) = tasks.join_next().await {
        result?.map_err(|e| e.to_string())?;
    }
    let create_seconds = started.elapsed().as_secs_f64();
    let mut seen = 0;
    while seen < count {
        match watch.try_next().await? {
            Some(WatchEvent::Added(_)) => seen += 1,
            Some(_) => {}
            None => return Err("the watch ended early".into()),
        }
    }
    let listing = Instant::now();
    let listed = pods
        .list(&ListParams::default().labels("app=bench"))
        .await?
        .items
        .len();
    println!(
        "{}",
        json!({
            "pods": count,
            "create_seconds": create_seconds,
            "creates_per_second": count as f64 / create_seconds,
            "watch_events_seen": seen,
            "list_all_seconds": listing.elapsed().as_secs_f64(),
            "listed": listed,
        })
    );
    Ok(())
}
