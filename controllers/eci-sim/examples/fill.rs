//! Load generator for `hack/bench-sim.sh`: creates N container groups through the real client,
//! waits until all run, lists them page by page, and prints timings as JSON.
//!
//! `cargo run --release -p eci-sim --example fill -- ENDPOINT COUNT CONCURRENCY`

use std::sync::Arc;
use std::time::{Duration, Instant};

use eci_client::ratelimit::{Limit, RateLimits};
use eci_client::{Credentials, EciClient, EciClientConfig};
use eci_types::wire::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:18080".into());
    let count: usize = args.get(2).map_or(Ok(10_000), |c| c.parse())?;
    let concurrency: usize = args.get(3).map_or(Ok(32), |c| c.parse())?;

    let mut config = EciClientConfig::new(
        "cn-hangzhou",
        Credentials::new(
            eci_sim::DEFAULT_ACCESS_KEY_ID,
            eci_sim::DEFAULT_ACCESS_KEY_SECRET,
        ),
    );
    config.endpoint = Some(endpoint);
    config.rate_limits = RateLimits {
        per_action: Default::default(),
        default: Limit {
            burst: 1e9,
            per_second: 1e9,
        },
    };
    let client = EciClient::new(config)?;
    let tag = Tag::new("vk-eci.io/cluster-id", "bench");

    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let client = client.clone();
        let permits = permits.clone();
        let tag = tag.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            client
                .call(&CreateContainerGroupRequest {
                    container_group_name: format!("bench-{i}"),
                    container: vec![Container {
                        name: "app".into(),
                        image: "registry.example.com/team/app:1.2.3".into(),
                        cpu: Some(0.5),
                        memory: Some(1.0),
                        environment_var: vec![EnvironmentVar {
                            key: "POD_NAME".into(),
                            value: Some(format!("bench-{i}")),
                            field_ref: None,
                        }],
                        port: vec![ContainerPort {
                            port: 8080,
                            protocol: Some("TCP".into()),
                        }],
                        ..Container::default()
                    }],
                    tag: vec![tag, Tag::new("vk-eci.io/uid", format!("uid-{i}"))],
                    client_token: Some(format!("bench-{i}")),
                    ..CreateContainerGroupRequest::default()
                })
                .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let create_seconds = started.elapsed().as_secs_f64();

    let filter = DescribeContainerGroupStatusRequest {
        tag: vec![tag.clone()],
        limit: Some(200),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all = client
            .describe_all_container_group_status(&filter, |record| record)
            .await?;
        if all.len() == count && all.iter().all(|g| g.status == status::RUNNING) {
            break;
        }
        if Instant::now() > deadline {
            return Err("groups did not all reach Running in 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let listing = Instant::now();
    let groups = client
        .describe_all_container_groups(&DescribeContainerGroupsRequest {
            tag: vec![tag],
            ..Default::default()
        })
        .await?;
    let list_seconds = listing.elapsed().as_secs_f64();
    let pages = groups.len().div_ceil(20);
    println!(
        "{}",
        serde_json::json!({
            "groups": groups.len(),
            "create_seconds": create_seconds,
            "creates_per_second": count as f64 / create_seconds,
            "describe_pages": pages,
            "describe_all_seconds": list_seconds,
            "ms_per_describe_page": list_seconds * 1000.0 / pages.max(1) as f64,
        })
    );
    Ok(())
}
