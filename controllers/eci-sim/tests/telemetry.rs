//! Logs and metrics through the real ECI client: every DescribeContainerLog parameter over a
//! log that grows while the container runs, the previous container's log after a restart, and
//! the single- and multi-group metric calls with their limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

mod support;

use chrono::{DateTime, Utc};
use eci_client::{Credentials, EciClient, EciClientConfig, RetryPolicy};
use eci_sim::{AppendLogRequest, RunningSimulator, SimConfig, Simulator};
use eci_types::EciFailure;
use eci_types::params::JsonList;
use eci_types::wire::*;
use support::SimOnly;

async fn start(config: SimConfig) -> RunningSimulator {
    eci_client::install_crypto_provider();
    Simulator::new(config, Vec::new())
        .unwrap()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn client(sim: &RunningSimulator) -> EciClient {
    let mut config = EciClientConfig::new(
        "cn-hangzhou",
        Credentials::new(
            eci_sim::DEFAULT_ACCESS_KEY_ID,
            eci_sim::DEFAULT_ACCESS_KEY_SECRET,
        ),
    );
    config.endpoint = Some(sim.endpoint());
    config.timeout = Duration::from_secs(5);
    config.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
    };
    EciClient::new(config).unwrap()
}

async fn running_group(client: &EciClient, name: &str) -> String {
    let id = client
        .call(&CreateContainerGroupRequest {
            container_group_name: name.into(),
            container: vec![
                Container {
                    name: "app".into(),
                    image: "registry.example.com/app:1".into(),
                    cpu: Some(1.0),
                    memory: Some(2.0),
                    ..Container::default()
                },
                Container {
                    name: "sidecar".into(),
                    image: "registry.example.com/sidecar:1".into(),
                    ..Container::default()
                },
            ],
            cpu: Some(2.0),
            memory: Some(4.0),
            client_token: Some(format!("token-{name}")),
            ..CreateContainerGroupRequest::default()
        })
        .await
        .unwrap()
        .container_group_id;
    wait_until(|| async {
        let page = client
            .call(&DescribeContainerGroupsRequest {
                container_group_ids: Some(JsonList(vec![id.clone()])),
                ..DescribeContainerGroupsRequest::default()
            })
            .await
            .unwrap();
        page.container_groups[0].status == status::RUNNING
    })
    .await;
    id
}

/// Polls `check` (the simulator's clock is real time) until it holds, for at most 10 s.
async fn wait_until<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_request(id: &str) -> DescribeContainerLogRequest {
    DescribeContainerLogRequest {
        container_group_id: id.into(),
        container_name: "app".into(),
        ..DescribeContainerLogRequest::default()
    }
}

async fn log(client: &EciClient, request: DescribeContainerLogRequest) -> Vec<String> {
    let content = client.call(&request).await.unwrap().content;
    content.lines().map(str::to_string).collect()
}

fn stamp(line: &str) -> DateTime<Utc> {
    let (time, _) = line.split_once(' ').unwrap();
    DateTime::parse_from_rfc3339(time).unwrap().to_utc()
}

async fn append(sim: &RunningSimulator, id: &str, lines: &[&str]) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{}/_sim/log", sim.endpoint()))
        .body(
            serde_json::to_string(&AppendLogRequest {
                container_group_id: id.into(),
                container: "app".into(),
                lines: lines.iter().map(|l| l.to_string()).collect(),
            })
            .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn the_log_grows_and_every_parameter_selects_from_it() {
    let sim = start(SimConfig::fast()).await;
    let client = client(&sim);
    let id = running_group(&client, "logs").await;

    wait_until(|| async { log(&client, log_request(&id)).await.len() >= 3 }).await;
    let all = log(&client, log_request(&id)).await;
    assert!(all[0].contains("started container app"), "{all:?}");
    assert!(all[1].contains("app is alive, heartbeat 1"), "{all:?}");

    let tail = log(
        &client,
        DescribeContainerLogRequest {
            tail: Some(2),
            ..log_request(&id)
        },
    )
    .await;
    assert_eq!(tail.len(), 2);

    let stamped = log(
        &client,
        DescribeContainerLogRequest {
            timestamps: Some(true),
            ..log_request(&id)
        },
    )
    .await;
    let times: Vec<_> = stamped.iter().map(|l| stamp(l)).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{stamped:?}");
    assert!(
        stamped[0].ends_with(&all[0]),
        "the prefix is added, the text kept"
    );

    let since_second = log(
        &client,
        DescribeContainerLogRequest {
            start_time: Some(times[1].to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            timestamps: Some(true),
            ..log_request(&id)
        },
    )
    .await;
    assert_eq!(stamp(&since_second[0]), times[1], "StartTime is inclusive");

    let recent = log(
        &client,
        DescribeContainerLogRequest {
            since_seconds: Some(1),
            ..log_request(&id)
        },
    )
    .await;
    assert!(recent.len() <= 2 && !recent.iter().any(|l| l.contains("started")));

    let head = client
        .call(&DescribeContainerLogRequest {
            limit_bytes: Some(12),
            ..log_request(&id)
        })
        .await
        .unwrap()
        .content;
    assert_eq!(head, all[0][..12], "LimitBytes keeps the head");

    assert_eq!(
        append(&sim, &id, &["hello from the test", "second"]).await,
        204
    );
    let appended = log(&client, log_request(&id)).await;
    assert!(appended.iter().any(|l| l == "hello from the test"));
    let tail = log(
        &client,
        DescribeContainerLogRequest {
            tail: Some(1),
            ..log_request(&id)
        },
    )
    .await;
    assert!(
        tail == ["second"] || tail[0].contains("heartbeat"),
        "{tail:?}"
    );

    let out_of_range = client
        .call(&DescribeContainerLogRequest {
            tail: Some(2001),
            ..log_request(&id)
        })
        .await
        .unwrap_err();
    assert_eq!(out_of_range.code(), Some("InvalidParameter"));
    let bad_time = client
        .call(&DescribeContainerLogRequest {
            start_time: Some("yesterday".into()),
            ..log_request(&id)
        })
        .await
        .unwrap_err();
    assert_eq!(bad_time.code(), Some("InvalidParameter"));
}

#[tokio::test]
async fn after_a_restart_last_time_answers_the_previous_container() {
    let sim = start(SimConfig::fast()).await;
    let client = client(&sim);
    let id = running_group(&client, "restart").await;
    let previous = || DescribeContainerLogRequest {
        last_time: Some(true),
        ..log_request(&id)
    };
    assert!(
        log(&client, previous()).await.is_empty(),
        "no previous run yet"
    );
    assert_eq!(append(&sim, &id, &["before the restart"]).await, 204);

    client
        .call(&SimOnly(RestartContainerGroupRequest {
            container_group_id: id.clone(),
            ..RestartContainerGroupRequest::default()
        }))
        .await
        .unwrap();
    wait_until(|| async {
        let page = client
            .call(&DescribeContainerGroupsRequest {
                container_group_ids: Some(JsonList(vec![id.clone()])),
                ..DescribeContainerGroupsRequest::default()
            })
            .await
            .unwrap();
        let group = &page.container_groups[0];
        group.status == status::RUNNING && group.containers[0].restart_count == 1
    })
    .await;

    let old = log(&client, previous()).await;
    assert!(old[0].contains("started container app"), "{old:?}");
    assert!(old.iter().any(|l| l == "before the restart"), "{old:?}");
    let current = log(&client, log_request(&id)).await;
    assert!(current[0].contains("started container app"));
    assert!(!current.iter().any(|l| l == "before the restart"));
}

fn counters(records: &[MetricRecord]) -> Vec<i64> {
    records
        .iter()
        .map(|r| r.cpu.usage_core_nano_seconds)
        .collect()
}

#[tokio::test]
async fn metrics_are_plausible_changing_and_monotonic() {
    let sim = start(SimConfig::fast()).await;
    let client = client(&sim);
    let id = running_group(&client, "metrics").await;
    let describe = || DescribeContainerGroupMetricRequest {
        container_group_id: id.clone(),
        ..DescribeContainerGroupMetricRequest::default()
    };
    wait_until(|| async {
        client
            .call(&SimOnly(describe()))
            .await
            .unwrap()
            .records
            .len()
            >= 3
    })
    .await;
    let records = client.call(&SimOnly(describe())).await.unwrap().records;
    assert!(records.len() <= 50);
    let times: Vec<_> = records
        .iter()
        .map(|r| DateTime::parse_from_rfc3339(&r.timestamp).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    let cpu = counters(&records);
    assert!(cpu.windows(2).all(|w| w[0] < w[1]), "{cpu:?}");
    let latest = records.last().unwrap();
    assert_eq!(latest.cpu.limit, 2000, "2 vCPU in millicores");
    assert!(latest.cpu.usage_nano_cores > 0);
    assert!(latest.memory.working_set > 0);
    let names: Vec<_> = latest.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["app", "sidecar"]);
    assert_eq!(
        latest.containers[0].cpu.limit, 1000,
        "the container's own vCPU"
    );
    assert!(latest.containers.iter().all(|c| c.memory.working_set > 0));
    assert_eq!(
        latest.memory.working_set,
        latest
            .containers
            .iter()
            .map(|c| c.memory.working_set)
            .sum::<i64>()
    );

    let bad_period = client
        .call(&SimOnly(DescribeContainerGroupMetricRequest {
            period: Some("7".into()),
            ..describe()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_period.code(), Some("InvalidParameter"));
}

#[tokio::test]
async fn the_multi_group_call_batches_up_to_20_ids_and_is_throttled_at_its_limit() {
    let mut config = SimConfig::fast();
    config
        .throttling
        .per_minute
        .insert("DescribeMultiContainerGroupMetric".into(), 3);
    let sim = start(config).await;
    let client = client(&sim);
    let first = running_group(&client, "multi-a").await;
    let second = running_group(&client, "multi-b").await;
    wait_until(|| async {
        let single = DescribeContainerGroupMetricRequest {
            container_group_id: second.clone(),
            ..DescribeContainerGroupMetricRequest::default()
        };
        !client
            .call(&SimOnly(single))
            .await
            .unwrap()
            .records
            .is_empty()
    })
    .await;
    let request = DescribeMultiContainerGroupMetricRequest {
        container_group_ids: JsonList(vec![
            first.clone(),
            "eci-doesnotexist000000".into(),
            second.clone(),
        ]),
        metric_type: Some("summary".into()),
        ..DescribeMultiContainerGroupMetricRequest::default()
    };
    let answer = client.call(&request).await.unwrap();
    let ids: Vec<_> = answer
        .monitor_datas
        .iter()
        .map(|d| d.container_group_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [first.as_str(), second.as_str()],
        "unknown ids left out"
    );
    assert!(answer.monitor_datas.iter().all(|d| !d.records.is_empty()));

    let too_many = client
        .call(&DescribeMultiContainerGroupMetricRequest {
            container_group_ids: JsonList((0..21).map(|i| format!("eci-{i}")).collect()),
            ..DescribeMultiContainerGroupMetricRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Some("InvalidParameter"));

    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(client.call(&request).await);
    }
    assert!(
        outcomes
            .iter()
            .any(|o| o.as_ref().is_err_and(|e| e.is_throttling())),
        "3 calls a minute allowed, 5 made"
    );
}
