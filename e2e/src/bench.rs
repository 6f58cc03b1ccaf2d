//! What the benchmarks in `hack/` share: Ready pods counted from a watch, percentiles, and
//! the operator's `/metrics`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::stack::StackError;

pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[derive(Debug, Default)]
struct Tally {
    ready: HashSet<String>,
    fewest: Option<usize>,
}

/// The Ready (and not terminating) pods of a label selector, from a watch: every change is
/// seen, so a dip cannot fall between two samples, and the sandbox is not made to list
/// thousands of pods in a loop.
pub struct ReadyPods {
    tally: Arc<Mutex<Tally>>,
    count: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadyPods {
    pub fn watch(client: Client, namespace: &str, labels: &str) -> Self {
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (sender, count) = watch::channel(0);
        let config = watcher::Config::default().labels(labels);
        let task = tokio::spawn({
            let tally = tally.clone();
            async move {
                let mut changes = std::pin::pin!(watcher(api, config).default_backoff());
                // A relist is gathered aside and swapped in whole, so it shows no false dip.
                let mut relisted: HashSet<String> = HashSet::new();
                while let Some(change) = changes.next().await {
                    let Ok(mut tally) = tally.lock() else { return };
                    match change {
                        Ok(Event::Init) => relisted.clear(),
                        Ok(Event::InitApply(pod)) => {
                            if is_ready(&pod) {
                                relisted.insert(pod.name_any());
                            }
                            continue;
                        }
                        Ok(Event::InitDone) => tally.ready = std::mem::take(&mut relisted),
                        Ok(Event::Apply(pod)) if is_ready(&pod) => {
                            tally.ready.insert(pod.name_any());
                        }
                        Ok(Event::Apply(pod) | Event::Delete(pod)) => {
                            tally.ready.remove(&pod.name_any());
                        }
                        Err(_) => continue,
                    }
                    let now = tally.ready.len();
                    tally.fewest = tally.fewest.map(|f| f.min(now));
                    sender.send_replace(now);
                }
            }
        });
        Self { tally, count, task }
    }

    /// Waits until at least `wanted` pods are Ready.
    pub async fn at_least(&mut self, wanted: usize, limit: Duration) -> Result<(), StackError> {
        let waited = tokio::time::timeout(limit, self.count.wait_for(|n| *n >= wanted))
            .await
            .map(|seen| seen.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(StackError::NotReady("the pod watch ended".into())),
            Err(_) => Err(StackError::NotReady(format!(
                "{wanted} Ready pods within {limit:?} (have {})",
                *self.count.borrow()
            ))),
        }
    }

    /// From now on, remember the fewest Ready pods seen.
    pub fn track_fewest(&self) {
        if let Ok(mut tally) = self.tally.lock() {
            tally.fewest = Some(tally.ready.len());
        }
    }

    /// The fewest Ready pods since [`Self::track_fewest`].
    pub fn fewest(&self) -> Option<usize> {
        self.tally.lock().ok().and_then(|t| t.fewest)
    }
}

impl Drop for ReadyPods {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// When a watcher first saw each pod `Running`, by its container group id
/// (`k8s.aliyun.com/eci-instance-id`): the far end of the ECI status → pod status lag.
pub struct FirstRunning {
    seen: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FirstRunning {
    pub fn watch(client: Client, namespace: &str, labels: &str) -> Self {
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let config = watcher::Config::default().labels(labels);
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut pods =
                    std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
                while let Some(pod) = pods.next().await {
                    let Ok(pod) = pod else { continue };
                    let running =
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                    let group = pod.annotations().get("k8s.aliyun.com/eci-instance-id");
                    if let (true, Some(group), Ok(mut seen)) = (running, group, seen.lock()) {
                        seen.entry(group.clone()).or_insert_with(Utc::now);
                    }
                }
            }
        });
        Self { seen, task }
    }

    pub fn seen(&self) -> HashMap<String, DateTime<Utc>> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for FirstRunning {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Prints a benchmark's result as JSON (for `hack/results/`), or its error; the exit code.
pub fn report(program: &str, result: Result<serde_json::Value, StackError>) -> ExitCode {
    match result {
        Ok(result) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&result).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{program}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The `p` quantile (0–1) of sorted samples, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    Some(sorted[((sorted.len() as f64 - 1.0) * p).round() as usize])
}

/// The operator's `/metrics` text.
pub async fn scrape_metrics(addr: SocketAddr) -> Result<String, StackError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let failed = |e: std::io::Error| StackError::NotReady(format!("metrics from {addr}: {e}"));
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(failed)?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await
        .map_err(failed)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.map_err(failed)?;
    Ok(text)
}

/// The `p` quantile of a Prometheus histogram in OpenMetrics text: the upper bound of the
/// first bucket holding it (a bound, not an interpolation).
pub fn histogram_quantile(text: &str, name: &str, p: f64) -> Option<f64> {
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, count))
        })
        .collect();
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, count)| *count >= total * p)
        .map(|(bound, _)| *bound)
}

/// A counter's value in OpenMetrics text (`name` with its labels, as printed).
pub fn counter(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE lag histogram
lag_bucket{le=\"0.5\"} 5
lag_bucket{le=\"1.0\"} 9
lag_bucket{le=\"+Inf\"} 10
lag_count 10
vk_eci_spot_escalations_total 2
vk_eci_spot_rotations_total{outcome=\"Completed\"} 7
";

    #[test]
    fn quantiles_are_bucket_bounds() {
        assert_eq!(histogram_quantile(TEXT, "lag", 0.5), Some(0.5));
        assert_eq!(histogram_quantile(TEXT, "lag", 0.9), Some(1.0));
        assert_eq!(histogram_quantile(TEXT, "lag", 0.99), Some(f64::INFINITY));
        assert_eq!(histogram_quantile(TEXT, "missing", 0.5), None);
    }

    #[test]
    fn counters_are_found_with_their_labels() {
        assert_eq!(counter(TEXT, "vk_eci_spot_escalations_total"), Some(2.0));
        assert_eq!(
            counter(TEXT, "vk_eci_spot_rotations_total{outcome=\"Completed\"}"),
            Some(7.0)
        );
        assert_eq!(counter(TEXT, "vk_eci_spot_rotations_total"), None);
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&sorted, 0.5), Some(3.0));
        assert_eq!(percentile(&sorted, 0.99), Some(5.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
