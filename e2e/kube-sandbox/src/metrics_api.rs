//! `metrics.k8s.io/v1beta1` the way metrics-server serves it: every node's kubelet
//! `/metrics/resource` is scraped (over HTTPS with the sandbox's kubelet client certificate);
//! CPU is the rate of the cumulative counter between the last two samples with different
//! timestamps, memory the latest working set. A pod appears only when every container has a
//! rate; a node only with a CPU rate and non-zero memory (metrics-server's rules), so
//! `kubectl top` and an HPA see what a real cluster would show.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::Sandbox;
use crate::kubelet_proxy::kubelet_url;
use crate::store::ApiError;

/// How often every kubelet is scraped.
pub const RESOLUTION: Duration = Duration::from_secs(2);

/// A counter or gauge value at a kubelet-given time (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    value: f64,
    at_ms: i64,
}

/// The last two points of a cumulative counter with distinct timestamps, and the latest.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counter {
    previous: Option<Point>,
    latest: Option<Point>,
}

impl Counter {
    fn push(&mut self, point: Point) {
        match self.latest {
            Some(latest) if point.at_ms <= latest.at_ms => {}
            latest => {
                self.previous = latest;
                self.latest = Some(point);
            }
        }
    }

    /// Cores, the sample time and the window, when two points allow a rate.
    fn rate(&self) -> Option<(f64, i64, i64)> {
        let (previous, latest) = (self.previous?, self.latest?);
        let window = latest.at_ms - previous.at_ms;
        if window <= 0 || latest.value < previous.value {
            return None;
        }
        Some((
            (latest.value - previous.value) / (window as f64 / 1000.0),
            latest.at_ms,
            window,
        ))
    }
}

#[derive(Debug, Default)]
struct ContainerSeries {
    cpu: Counter,
    memory: Option<Point>,
}

#[derive(Debug, Default)]
struct NodeSeries {
    cpu: Counter,
    memory: Option<Point>,
    /// (namespace, pod) → container → series.
    pods: HashMap<(String, String), HashMap<String, ContainerSeries>>,
}

#[derive(Debug, Default)]
pub struct MetricsApi {
    nodes: Mutex<HashMap<String, NodeSeries>>,
}

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
    pub at_ms: Option<i64>,
}

/// Reads the sample lines of a Prometheus text exposition (comments skipped).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest, labels) = match line.find('{') {
        Some(open) => {
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (&line[..open], after, labels)
        }
        None => {
            let space = line.find(' ')?;
            (&line[..space], &line[space..], HashMap::new())
        }
    };
    let mut fields = rest.split_whitespace();
    let value = fields.next()?.parse().ok()?;
    let at_ms = fields.next().and_then(|t| t.parse().ok());
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
        at_ms,
    })
}

/// Parses `a="x",b="y"}` and returns the labels and what follows the brace.
fn parse_labels(text: &str) -> Option<(HashMap<String, String>, &str)> {
    let mut labels = HashMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (index, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(eq + 1 + index + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        labels.insert(key, value);
        rest = &rest[end?..];
    }
}

impl MetricsApi {
    fn record(&self, node: &str, samples: &[Sample]) {
        let Ok(mut nodes) = self.nodes.lock() else {
            return;
        };
        let series = nodes.entry(node.to_string()).or_default();
        let mut present: HashMap<(String, String), Vec<String>> = HashMap::new();
        for sample in samples {
            let Some(at_ms) = sample.at_ms else {
                continue;
            };
            let point = Point {
                value: sample.value,
                at_ms,
            };
            let label = |name: &str| sample.labels.get(name).cloned().unwrap_or_default();
            match sample.name.as_str() {
                "node_cpu_usage_seconds_total" => series.cpu.push(point),
                "node_memory_working_set_bytes" => series.memory = Some(point),
                "container_cpu_usage_seconds_total" | "container_memory_working_set_bytes" => {
                    let pod = (label("namespace"), label("pod"));
                    let container = label("container");
                    present
                        .entry(pod.clone())
                        .or_default()
                        .push(container.clone());
                    let entry = series
                        .pods
                        .entry(pod)
                        .or_default()
                        .entry(container)
                        .or_default();
                    if sample.name.starts_with("container_cpu") {
                        entry.cpu.push(point);
                    } else {
                        entry.memory = Some(point);
                    }
                }
                _ => {}
            }
        }
        // What the kubelet no longer reports is gone.
        series
            .pods
            .retain(|pod, containers| match present.get(pod) {
                Some(names) => {
                    containers.retain(|name, _| names.contains(name));
                    true
                }
                None => false,
            });
    }

    fn forget_other_nodes(&self, nodes: &[String]) {
        if let Ok(mut series) = self.nodes.lock() {
            series.retain(|name, _| nodes.contains(name));
        }
    }

    fn node_metrics(&self) -> Vec<Value> {
        let Ok(nodes) = self.nodes.lock() else {
            return Vec::new();
        };
        let mut out: Vec<Value> = nodes
            .iter()
            .filter_map(|(name, series)| {
                let (cores, at_ms, window) = series.cpu.rate()?;
                let memory = series.memory.filter(|m| m.value > 0.0)?;
                Some(json!({
                    "kind": "NodeMetrics",
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "metadata": {"name": name, "creationTimestamp": now()},
                    "timestamp": time(at_ms),
                    "window": format!("{}s", window as f64 / 1000.0),
                    "usage": {"cpu": nano_cores(cores), "memory": bytes(memory.value)},
                }))
            })
            .collect();
        out.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        out
    }

    fn pod_metrics(&self, namespace: Option<&str>) -> Vec<Value> {
        let Ok(nodes) = self.nodes.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for series in nodes.values() {
            for ((ns, pod), containers) in &series.pods {
                if namespace.is_some_and(|wanted| wanted != ns) {
                    continue;
                }
                let mut listed = Vec::new();
                let mut latest = (0i64, 0i64);
                for (name, container) in containers {
                    let Some((cores, at_ms, window)) = container.cpu.rate() else {
                        break;
                    };
                    let Some(memory) = container.memory.filter(|m| m.value > 0.0) else {
                        break;
                    };
                    latest = latest.max((at_ms, window));
                    listed.push(json!({
                        "name": name,
                        "usage": {"cpu": nano_cores(cores), "memory": bytes(memory.value)},
                    }));
                }
                if listed.is_empty() || listed.len() != containers.len() {
                    continue;
                }
                listed.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                out.push(json!({
                    "kind": "PodMetrics",
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "metadata": {"name": pod, "namespace": ns, "creationTimestamp": now()},
                    "timestamp": time(latest.0),
                    "window": format!("{}s", latest.1 as f64 / 1000.0),
                    "containers": listed,
                }));
            }
        }
        out.sort_by(|a, b| {
            let key = |v: &Value| {
                (
                    v["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    v["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            };
            key(a).cmp(&key(b))
        });
        out
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time(at_ms: i64) -> String {
    DateTime::from_timestamp_millis(at_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn nano_cores(cores: f64) -> String {
    format!("{}n", (cores * 1e9).round() as i64)
}

fn bytes(value: f64) -> String {
    format!("{}", value.round() as i64)
}

/// Scrapes every node with a kubelet address, forever, every [`RESOLUTION`].
pub async fn scrape_forever(sandbox: Sandbox) {
    loop {
        let nodes = sandbox.objects("", "v1", "nodes");
        let names: Vec<String> = nodes
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        for node in &nodes {
            let (Some(name), Some(url)) = (node["metadata"]["name"].as_str(), kubelet_url(node))
            else {
                continue;
            };
            if let Some(identity) = sandbox.kubelet_identity() {
                let scraped = identity
                    .http
                    .get(format!("{url}/metrics/resource"))
                    .timeout(RESOLUTION)
                    .send()
                    .await;
                if let Ok(response) = scraped
                    && response.status().is_success()
                    && let Ok(text) = response.text().await
                {
                    sandbox.metrics_api().record(name, &parse_samples(&text));
                }
            }
        }
        sandbox.metrics_api().forget_other_nodes(&names);
        tokio::time::sleep(RESOLUTION).await;
    }
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items})
}

/// Answers a read of `metrics.k8s.io/v1beta1` (`nodes` or `pods`, listed or by name).
pub fn serve(
    api: &MetricsApi,
    method: &str,
    plural: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<Value, ApiError> {
    if method != "GET" {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the metrics API is read-only",
        ));
    }
    let items = match plural {
        "nodes" => api.node_metrics(),
        _ => api.pod_metrics(namespace),
    };
    let kind = if plural == "nodes" {
        "NodeMetrics"
    } else {
        "PodMetrics"
    };
    match name {
        None => Ok(list(&format!("{kind}List"), items)),
        Some(name) => items
            .into_iter()
            .find(|item| item["metadata"]["name"] == name)
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    format!("{plural}.metrics.k8s.io \"{name}\" not found"),
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SCRAPE: &str = "# TYPE container_cpu_usage_seconds_total counter\n\
container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"} 2.5 1700000010000\n\
container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod=\"web\"} 1048576 1700000010000\n\
node_cpu_usage_seconds_total 10 1700000010000\n\
node_memory_working_set_bytes 4096 1700000010000\n";

    #[test]
    fn samples_are_parsed_with_labels_and_timestamps() {
        let samples = parse_samples(SCRAPE);
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].labels["pod"], "web");
        assert_eq!(samples[0].at_ms, Some(1_700_000_010_000));
        let escaped = parse_line(r#"x{a="q\"uote",b="c"} 1"#).unwrap();
        assert_eq!(escaped.labels["a"], "q\"uote");
        assert_eq!(escaped.labels["b"], "c");
    }

    #[test]
    fn usage_is_the_rate_between_samples_with_different_timestamps() {
        let api = MetricsApi::default();
        api.record("n", &parse_samples(SCRAPE));
        assert!(api.pod_metrics(None).is_empty(), "one point: no rate yet");
        api.record("n", &parse_samples(SCRAPE));
        assert!(
            api.pod_metrics(None).is_empty(),
            "same timestamp: still no rate"
        );
        let later = SCRAPE
            .replace("2.5 1700000010000", "3.5 1700000012000")
            .replace(
                "node_cpu_usage_seconds_total 10 1700000010000",
                "node_cpu_usage_seconds_total 14 1700000012000",
            );
        api.record("n", &parse_samples(&later));
        let pods = api.pod_metrics(Some("default"));
        assert_eq!(pods[0]["containers"][0]["usage"]["cpu"], "500000000n");
        assert_eq!(pods[0]["containers"][0]["usage"]["memory"], "1048576");
        assert_eq!(pods[0]["window"], "2s");
        let nodes = api.node_metrics();
        assert_eq!(nodes[0]["usage"]["cpu"], "2000000000n");
        assert!(api.pod_metrics(Some("other")).is_empty());
    }
}
