//! ECI metric samples as the kubelet exposes them: `/metrics/resource` (Prometheus text, the
//! names, labels and timestamps metrics-server reads) and `/stats/summary` (stats v1alpha1).
//!
//! Never a zero: a pod without a sample yet, or whose sample has a container at 0 CPU or 0
//! memory, is left out (metrics-server would drop it, and an HPA would read the zero as
//! idle). Timestamps are ECI's sample times, so metrics-server's rate maths (increase of the
//! counter over increase of the timestamp) measures what ECI measured.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use eci_types::wire::{CpuMetric, MemoryMetric, MetricRecord};
use serde::Serialize;

/// Memory figures of a sample, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub working_set: u64,
    pub usage: u64,
    pub rss: u64,
    pub available: u64,
}

impl Memory {
    fn of(metric: &MemoryMetric) -> Self {
        let bytes = |v: i64| u64::try_from(v).unwrap_or(0);
        Self {
            working_set: bytes(metric.working_set),
            usage: bytes(metric.usage_bytes),
            rss: bytes(metric.rss),
            available: bytes(metric.available_bytes),
        }
    }

    fn add(&mut self, other: &Memory) {
        self.working_set = self.working_set.saturating_add(other.working_set);
        self.usage = self.usage.saturating_add(other.usage);
        self.rss = self.rss.saturating_add(other.rss);
        self.available = self.available.saturating_add(other.available);
    }
}

/// CPU figures of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cpu {
    /// Cumulative core-nanoseconds.
    pub core_nanos: u64,
    pub nano_cores: u64,
}

impl Cpu {
    fn of(metric: &CpuMetric) -> Self {
        Self {
            core_nanos: u64::try_from(metric.usage_core_nano_seconds).unwrap_or(0),
            nano_cores: u64::try_from(metric.usage_nano_cores).unwrap_or(0),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    pub name: String,
    pub start_time: Option<DateTime<Utc>>,
    pub cpu: Cpu,
    pub memory: Memory,
}

/// The pod a sample belongs to, from the cluster's view of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// One pod's latest ECI sample.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    pub pod: PodRef,
    pub start_time: Option<DateTime<Utc>>,
    pub sampled_at: DateTime<Utc>,
    pub cpu: Cpu,
    pub memory: Memory,
    pub containers: Vec<ContainerUsage>,
}

impl PodUsage {
    /// The newest of `records`, or `None` when there is none usable (no sample yet, an
    /// unreadable time, or a zero that metrics-server would reject).
    pub fn from_records(
        pod: PodRef,
        start_time: Option<DateTime<Utc>>,
        container_starts: &HashMap<String, DateTime<Utc>>,
        records: &[MetricRecord],
    ) -> Option<Self> {
        let (sampled_at, record) = records
            .iter()
            .filter_map(|r| {
                let at = DateTime::parse_from_rfc3339(&r.timestamp).ok()?.to_utc();
                Some((at, r))
            })
            .max_by_key(|(at, _)| *at)?;
        let containers: Vec<ContainerUsage> = record
            .containers
            .iter()
            .map(|c| ContainerUsage {
                name: c.name.clone(),
                start_time: container_starts.get(&c.name).copied(),
                cpu: Cpu::of(&c.cpu),
                memory: Memory::of(&c.memory),
            })
            .collect();
        let usage = Self {
            pod,
            start_time,
            sampled_at,
            cpu: Cpu::of(&record.cpu),
            memory: Memory::of(&record.memory),
            containers,
        };
        usage.is_complete().then_some(usage)
    }

    fn is_complete(&self) -> bool {
        self.cpu.core_nanos > 0
            && self.memory.working_set > 0
            && !self.containers.is_empty()
            && self
                .containers
                .iter()
                .all(|c| c.cpu.core_nanos > 0 && c.memory.working_set > 0)
    }
}

/// The node's figures: sums over its pods, with a CPU counter that never goes back when a pod
/// goes away (what the pod used stays used) or restarts.
#[derive(Debug, Clone, Default)]
pub struct NodeCounter {
    seen: HashMap<String, u64>,
    total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeUsage {
    pub sampled_at: DateTime<Utc>,
    pub cpu: Cpu,
    pub memory: Memory,
}

impl NodeCounter {
    /// Folds the current pods in; `None` while no pod has a sample (a zero node is dropped by
    /// metrics-server anyway).
    pub fn observe<'a>(
        &mut self,
        pods: impl IntoIterator<Item = &'a PodUsage>,
    ) -> Option<NodeUsage> {
        let mut seen = HashMap::with_capacity(self.seen.len());
        let mut memory = Memory::default();
        let mut nano_cores = 0u64;
        let mut sampled_at = None::<DateTime<Utc>>;
        for pod in pods {
            let counter = pod.cpu.core_nanos;
            let increase = match self.seen.get(&pod.pod.uid) {
                Some(before) if *before <= counter => counter - before,
                // A counter that went back was reset: all of the new value is new usage.
                Some(_) | None => counter,
            };
            self.total = self.total.saturating_add(increase);
            seen.insert(pod.pod.uid.clone(), counter);
            memory.add(&pod.memory);
            nano_cores = nano_cores.saturating_add(pod.cpu.nano_cores);
            sampled_at = Some(sampled_at.map_or(pod.sampled_at, |at| at.max(pod.sampled_at)));
        }
        self.seen = seen;
        Some(NodeUsage {
            sampled_at: sampled_at?,
            cpu: Cpu {
                core_nanos: self.total,
                nano_cores,
            },
            memory,
        })
    }
}

/// The content type of `/metrics/resource`.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(core_nanos: u64) -> f64 {
    core_nanos as f64 / 1e9
}

struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
}

const FAMILIES: [Family<'static>; 7] = [
    Family {
        name: "container_cpu_usage_seconds_total",
        help: "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        kind: "counter",
    },
    Family {
        name: "container_memory_working_set_bytes",
        help: "[STABLE] Current working set of the container in bytes",
        kind: "gauge",
    },
    Family {
        name: "container_start_time_seconds",
        help: "[STABLE] Start time of the container since unix epoch in seconds",
        kind: "gauge",
    },
    Family {
        name: "node_cpu_usage_seconds_total",
        help: "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        kind: "counter",
    },
    Family {
        name: "node_memory_working_set_bytes",
        help: "[STABLE] Current working set of the node in bytes",
        kind: "gauge",
    },
    Family {
        name: "pod_cpu_usage_seconds_total",
        help: "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        kind: "counter",
    },
    Family {
        name: "pod_memory_working_set_bytes",
        help: "[STABLE] Current working set of the pod in bytes",
        kind: "gauge",
    },
];

/// `/metrics/resource` for `node` and `pods`, like the kubelet's (`resource_scrape_error`
/// included).
pub fn render_resource_metrics(node: Option<&NodeUsage>, pods: &[PodUsage]) -> String {
    let mut out = String::new();
    for family in &FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        let mut sample = |labels: &str, value: String, at: Option<DateTime<Utc>>| {
            let _ = match at {
                Some(at) => writeln!(
                    out,
                    "{}{labels} {value} {}",
                    family.name,
                    at.timestamp_millis()
                ),
                None => writeln!(out, "{}{labels} {value}", family.name),
            };
        };
        match family.name {
            "node_cpu_usage_seconds_total" => {
                if let Some(node) = node {
                    sample(
                        "",
                        seconds(node.cpu.core_nanos).to_string(),
                        Some(node.sampled_at),
                    );
                }
            }
            "node_memory_working_set_bytes" => {
                if let Some(node) = node {
                    sample(
                        "",
                        node.memory.working_set.to_string(),
                        Some(node.sampled_at),
                    );
                }
            }
            "pod_cpu_usage_seconds_total" | "pod_memory_working_set_bytes" => {
                for pod in pods {
                    let labels = format!(
                        "{{namespace=\"{}\",pod=\"{}\"}}",
                        escape(&pod.pod.namespace),
                        escape(&pod.pod.name)
                    );
                    let value = if family.name.starts_with("pod_cpu") {
                        seconds(pod.cpu.core_nanos).to_string()
                    } else {
                        pod.memory.working_set.to_string()
                    };
                    sample(&labels, value, Some(pod.sampled_at));
                }
            }
            _ => {
                for pod in pods {
                    for container in &pod.containers {
                        let labels = format!(
                            "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
                            escape(&container.name),
                            escape(&pod.pod.namespace),
                            escape(&pod.pod.name)
                        );
                        match family.name {
                            "container_cpu_usage_seconds_total" => sample(
                                &labels,
                                seconds(container.cpu.core_nanos).to_string(),
                                Some(pod.sampled_at),
                            ),
                            "container_memory_working_set_bytes" => sample(
                                &labels,
                                container.memory.working_set.to_string(),
                                Some(pod.sampled_at),
                            ),
                            _ => {
                                if let Some(start) = container.start_time {
                                    let value = start.timestamp_millis() as f64 / 1000.0;
                                    sample(&labels, value.to_string(), None);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out.push_str("# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n");
    out.push_str("# TYPE resource_scrape_error gauge\nresource_scrape_error 0\n");
    out
}

/// `/stats/summary` (k8s.io/kubelet/pkg/apis/stats/v1alpha1), the parts ECI can fill.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    pub start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: String,
    pub usage_nano_cores: u64,
    pub usage_core_nano_seconds: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    pub available_bytes: u64,
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    pub start_time: String,
    pub containers: Vec<ContainerStats>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    pub start_time: String,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn cpu_stats(cpu: &Cpu, at: DateTime<Utc>) -> CpuStats {
    CpuStats {
        time: time(at),
        usage_nano_cores: cpu.nano_cores,
        usage_core_nano_seconds: cpu.core_nanos,
    }
}

fn memory_stats(memory: &Memory, at: DateTime<Utc>) -> MemoryStats {
    MemoryStats {
        time: time(at),
        available_bytes: memory.available,
        usage_bytes: memory.usage,
        working_set_bytes: memory.working_set,
        rss_bytes: memory.rss,
    }
}

/// The summary of `node_name` (up since `started`) and its sampled pods.
pub fn summary(
    node_name: &str,
    started: DateTime<Utc>,
    node: Option<&NodeUsage>,
    pods: &[PodUsage],
) -> Summary {
    Summary {
        node: NodeStats {
            node_name: node_name.to_string(),
            start_time: time(started),
            cpu: node.map(|n| cpu_stats(&n.cpu, n.sampled_at)),
            memory: node.map(|n| memory_stats(&n.memory, n.sampled_at)),
        },
        pods: pods
            .iter()
            .map(|pod| PodStats {
                pod_ref: PodReference {
                    name: pod.pod.name.clone(),
                    namespace: pod.pod.namespace.clone(),
                    uid: pod.pod.uid.clone(),
                },
                start_time: time(pod.start_time.unwrap_or(pod.sampled_at)),
                containers: pod
                    .containers
                    .iter()
                    .map(|c| ContainerStats {
                        name: c.name.clone(),
                        start_time: time(c.start_time.or(pod.start_time).unwrap_or(pod.sampled_at)),
                        cpu: cpu_stats(&c.cpu, pod.sampled_at),
                        memory: memory_stats(&c.memory, pod.sampled_at),
                    })
                    .collect(),
                cpu: cpu_stats(&pod.cpu, pod.sampled_at),
                memory: memory_stats(&pod.memory, pod.sampled_at),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
