use eci_types::wire::ContainerMetric;

use super::*;

fn at(second: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + second, 0).unwrap()
}

fn record(second: i64, containers: &[(&str, i64, i64)]) -> MetricRecord {
    let containers: Vec<ContainerMetric> = containers
        .iter()
        .map(|(name, cpu, memory)| ContainerMetric {
            name: (*name).into(),
            cpu: CpuMetric {
                usage_core_nano_seconds: *cpu,
                usage_nano_cores: 5_000_000,
                ..CpuMetric::default()
            },
            memory: MemoryMetric {
                working_set: *memory,
                usage_bytes: *memory * 2,
                ..MemoryMetric::default()
            },
        })
        .collect();
    MetricRecord {
        timestamp: at(second).to_rfc3339(),
        cpu: CpuMetric {
            usage_core_nano_seconds: containers
                .iter()
                .map(|c| c.cpu.usage_core_nano_seconds)
                .sum(),
            usage_nano_cores: 10_000_000,
            ..CpuMetric::default()
        },
        memory: MemoryMetric {
            working_set: containers.iter().map(|c| c.memory.working_set).sum(),
            available_bytes: 1 << 30,
            ..MemoryMetric::default()
        },
        containers,
    }
}

fn pod(name: &str, records: &[MetricRecord]) -> Option<PodUsage> {
    let starts = HashMap::from([("app".to_string(), at(-100))]);
    PodUsage::from_records(
        PodRef {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        },
        Some(at(-120)),
        &starts,
        records,
    )
}

#[test]
fn the_newest_record_is_used_and_zeros_are_left_out() {
    let usage = pod(
        "web",
        &[
            record(30, &[("app", 3_000_000_000, 100)]),
            record(15, &[("app", 1_000_000_000, 50)]),
        ],
    )
    .unwrap();
    assert_eq!(usage.sampled_at, at(30));
    assert_eq!(usage.containers[0].cpu.core_nanos, 3_000_000_000);
    assert_eq!(usage.containers[0].start_time, Some(at(-100)));

    assert!(pod("none", &[]).is_none(), "no sample yet: no entry");
    assert!(
        pod(
            "idle",
            &[record(30, &[("app", 1, 100), ("sidecar", 0, 100)])]
        )
        .is_none(),
        "a container at 0 CPU would make metrics-server drop the pod"
    );
    assert!(pod("empty", &[record(30, &[("app", 1, 0)])]).is_none());
    let mut unreadable = record(30, &[("app", 1, 1)]);
    unreadable.timestamp = "later".into();
    assert!(pod("unreadable", &[unreadable]).is_none());
}

#[test]
fn the_node_counter_never_goes_back_when_pods_go_or_restart() {
    let mut node = NodeCounter::default();
    let a = pod("a", &[record(10, &[("app", 1_000, 10)])]).unwrap();
    let b = pod("b", &[record(12, &[("app", 2_000, 20)])]).unwrap();
    let first = node.observe(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(first.cpu.core_nanos, 3_000);
    assert_eq!(first.memory.working_set, 30, "memory is the sum");
    assert_eq!(first.sampled_at, at(12), "the newest sample's time");

    let a_later = pod("a", &[record(25, &[("app", 1_500, 10)])]).unwrap();
    let second = node.observe(std::slice::from_ref(&a_later)).unwrap();
    assert_eq!(second.cpu.core_nanos, 3_500, "b's usage stays counted");
    assert_eq!(second.memory.working_set, 10);

    let a_reset = pod("a", &[record(40, &[("app", 200, 10)])]).unwrap();
    assert_eq!(node.observe(&[a_reset]).unwrap().cpu.core_nanos, 3_700);
    assert!(node.observe(&[]).is_none(), "no pods: no node entry");
}

#[test]
fn resource_metrics_have_the_kubelet_names_labels_and_timestamps() {
    let web = pod("web", &[record(30, &[("app", 2_500_000_000, 1_048_576)])]).unwrap();
    let node = NodeCounter::default()
        .observe(std::slice::from_ref(&web))
        .unwrap();
    let text = render_resource_metrics(Some(&node), &[web]);
    let ms = at(30).timestamp_millis();
    for line in [
        format!(
            "container_cpu_usage_seconds_total{{container=\"app\",namespace=\"default\",pod=\"web\"}} 2.5 {ms}"
        ),
        format!(
            "container_memory_working_set_bytes{{container=\"app\",namespace=\"default\",pod=\"web\"}} 1048576 {ms}"
        ),
        format!(
            "container_start_time_seconds{{container=\"app\",namespace=\"default\",pod=\"web\"}} {}",
            at(-100).timestamp()
        ),
        format!("node_cpu_usage_seconds_total 2.5 {ms}"),
        format!("node_memory_working_set_bytes 1048576 {ms}"),
        format!("pod_cpu_usage_seconds_total{{namespace=\"default\",pod=\"web\"}} 2.5 {ms}"),
        "# TYPE container_cpu_usage_seconds_total counter".to_string(),
        "resource_scrape_error 0".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }

    let empty = render_resource_metrics(None, &[]);
    assert!(
        !empty.lines().any(|l| l.starts_with("node_")),
        "no pods: no node samples\n{empty}"
    );
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

#[test]
fn the_summary_has_the_stats_v1alpha1_shape() {
    let web = pod("web", &[record(30, &[("app", 2_000, 64)])]).unwrap();
    let node = NodeCounter::default()
        .observe(std::slice::from_ref(&web))
        .unwrap();
    let json =
        serde_json::to_value(summary("virtual-kubelet", at(-500), Some(&node), &[web])).unwrap();
    assert_eq!(json["node"]["nodeName"], "virtual-kubelet");
    assert_eq!(json["node"]["cpu"]["usageCoreNanoSeconds"], 2_000);
    assert_eq!(json["node"]["memory"]["workingSetBytes"], 64);
    let pod = &json["pods"][0];
    assert_eq!(pod["podRef"]["uid"], "uid-web");
    assert_eq!(pod["podRef"]["namespace"], "default");
    assert_eq!(pod["startTime"], "2023-11-14T22:11:20Z");
    assert_eq!(pod["containers"][0]["name"], "app");
    assert_eq!(pod["containers"][0]["memory"]["usageBytes"], 128);
    assert_eq!(pod["cpu"]["usageNanoCores"], 10_000_000);
    assert_eq!(pod["memory"]["time"], "2023-11-14T22:13:50Z");

    let bare = serde_json::to_value(summary("n", at(0), None, &[])).unwrap();
    assert!(bare["node"].get("cpu").is_none());
}
