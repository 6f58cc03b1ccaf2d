//! Prometheus metrics of the operator, served on the admin port.
//!
//! Label values are bounded: controller names, ECI action names and error codes, pod phases.
//! No pod names, ids or anything secret ever becomes a label.

use std::time::Duration;

use eci_client::CallObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub action: &'static str,
    /// `Success` or the ECI error code (`Throttling.User`, `OperationDenied.NoStock`...).
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `evicted`, `blocked` (429, a PodDisruptionBudget), `gone`, `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `eci`, `burst`, `unchanged` or `warned`.
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeletRequestLabels {
    /// The route, never the raw path: `/containerLogs`, `/metrics/resource`, `other`...
    pub path: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub path: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Every metric vk-eci exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    pub eci_calls: Family<CallLabels, Counter>,
    pub eci_call_seconds: Family<ActionLabels, Histogram, fn() -> Histogram>,
    pub eci_rate_limited: Family<ActionLabels, Counter>,
    pub pods: Family<PhaseLabels, Gauge>,
    pub status_sync_lag_seconds: Histogram,
    pub status_sync_seconds: Histogram,
    pub orphans_deleted: Counter,
    pub leader: Gauge,
    pub rotations: Family<OutcomeLabels, Counter>,
    pub rotations_before_release: Counter,
    pub notice_to_replacement_ready: Histogram,
    pub notice_to_pod_gone: Histogram,
    pub evictions: Family<ResultLabels, Counter>,
    pub escalations: Counter,
    pub admissions: Family<DecisionLabels, Counter>,
    pub admission_seconds: Histogram,
    pub kubelet_requests: Family<KubeletRequestLabels, Counter>,
    pub kubelet_request_seconds: Family<PathLabels, Histogram, fn() -> Histogram>,
    pub kubelet_log_streams: Gauge,
    pub kubelet_metric_pods: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vk_eci");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciliations by controller and result",
            reconciles.clone(),
        );
        let reconcile_seconds =
            Family::<ControllerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            reconcile_seconds.clone(),
        );
        let eci_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "eci_calls",
            "ECI OpenAPI calls by action and outcome code",
            eci_calls.clone(),
        );
        let eci_call_seconds =
            Family::<ActionLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "eci_call_duration_seconds",
            "ECI OpenAPI call latency, retries included",
            eci_call_seconds.clone(),
        );
        let eci_rate_limited = Family::<ActionLabels, Counter>::default();
        registry.register(
            "eci_rate_limited_calls",
            "ECI calls that waited for the client-side rate limiter",
            eci_rate_limited.clone(),
        );
        let pods = Family::<PhaseLabels, Gauge>::default();
        registry.register("pods", "Pods on the virtual node by phase", pods.clone());
        let status_sync_lag_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "status_sync_lag_seconds",
            "From ECI recording a change to the pod status showing it",
            status_sync_lag_seconds.clone(),
        );
        let status_sync_seconds = latency_histogram();
        registry.register(
            "status_sync_duration_seconds",
            "Time of one status sync pass",
            status_sync_seconds.clone(),
        );
        let orphans_deleted = Counter::default();
        registry.register(
            "orphan_container_groups_deleted",
            "Container groups of this node that no pod owned, deleted by GC",
            orphans_deleted.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let rotations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "spot_rotations",
            "Finished spot rotations by outcome (Completed, Degraded, Failed)",
            rotations.clone(),
        );
        let rotations_before_release = Counter::default();
        registry.register(
            "spot_rotations_finished_before_release",
            "Rotations finished before their instance's release (ratio: divide by spot_rotations_total)",
            rotations_before_release.clone(),
        );
        let notice_to_replacement_ready = Histogram::new(exponential_buckets(1.0, 1.5, 14));
        registry.register(
            "spot_notice_to_replacement_ready_seconds",
            "From a spot notice to its surged replacement being Ready",
            notice_to_replacement_ready.clone(),
        );
        let notice_to_pod_gone = Histogram::new(exponential_buckets(1.0, 1.5, 14));
        registry.register(
            "spot_notice_to_pod_gone_seconds",
            "From a spot notice to the doomed pod being gone",
            notice_to_pod_gone.clone(),
        );
        let evictions = Family::<ResultLabels, Counter>::default();
        registry.register(
            "spot_evictions",
            "Eviction API calls for doomed pods by result",
            evictions.clone(),
        );
        let escalations = Counter::default();
        registry.register(
            "spot_escalations",
            "Doomed pods deleted with a shortened grace period because eviction could not finish in time",
            escalations.clone(),
        );
        let admissions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Pods the admission webhook answered, by decision",
            admissions.clone(),
        );
        // From 50 µs: the target is a p99 of 5 ms.
        let admission_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 14));
        registry.register(
            "admission_duration_seconds",
            "Time to answer one AdmissionReview, body parsing included",
            admission_seconds.clone(),
        );
        let kubelet_requests = Family::<KubeletRequestLabels, Counter>::default();
        registry.register(
            "kubelet_requests",
            "Kubelet API requests by route and HTTP status",
            kubelet_requests.clone(),
        );
        let kubelet_request_seconds =
            Family::<PathLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "kubelet_request_duration_seconds",
            "Kubelet API request latency (a followed log: until its first byte)",
            kubelet_request_seconds.clone(),
        );
        let kubelet_log_streams = Gauge::default();
        registry.register(
            "kubelet_log_streams",
            "Followed container logs being served",
            kubelet_log_streams.clone(),
        );
        let kubelet_metric_pods = Gauge::default();
        registry.register(
            "kubelet_metric_pods",
            "Pods with a usable ECI metric sample in the kubelet API's cache",
            kubelet_metric_pods.clone(),
        );
        Self {
            registry,
            admissions,
            admission_seconds,
            kubelet_requests,
            kubelet_request_seconds,
            kubelet_log_streams,
            kubelet_metric_pods,
            rotations,
            rotations_before_release,
            notice_to_replacement_ready,
            notice_to_pod_gone,
            evictions,
            escalations,
            reconciles,
            reconcile_seconds,
            eci_calls,
            eci_call_seconds,
            eci_rate_limited,
            pods,
            status_sync_lag_seconds,
            status_sync_seconds,
            orphans_deleted,
            leader,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    /// Counts a finished rotation.
    pub fn rotation_finished(&self, phase: vk_eci_core::spot::Phase, before_release: bool) {
        let outcome = match phase {
            vk_eci_core::spot::Phase::Completed => "Completed",
            vk_eci_core::spot::Phase::Degraded => "Degraded",
            _ => "Failed",
        };
        self.rotations
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if before_release {
            self.rotations_before_release.inc();
        }
    }

    /// Counts one pod the admission webhook answered.
    pub fn admitted(&self, decision: &'static str) {
        self.admissions
            .get_or_create(&DecisionLabels { decision })
            .inc();
    }

    /// Counts one kubelet API request.
    pub fn kubelet_request(&self, path: &'static str, code: u16, elapsed: Duration) {
        self.kubelet_requests
            .get_or_create(&KubeletRequestLabels { path, code })
            .inc();
        self.kubelet_request_seconds
            .get_or_create(&PathLabels { path })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one reconciliation of `controller`.
    pub fn reconciled(&self, controller: &'static str, ok: bool, elapsed: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller,
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        self.reconcile_seconds
            .get_or_create(&ControllerLabels { controller })
            .observe(elapsed.as_secs_f64());
    }
}

impl CallObserver for Metrics {
    fn observe(&self, action: &'static str, outcome: &str, elapsed: Duration, rate_limited: bool) {
        self.eci_calls
            .get_or_create(&CallLabels {
                action,
                code: outcome.to_string(),
            })
            .inc();
        self.eci_call_seconds
            .get_or_create(&ActionLabels { action })
            .observe(elapsed.as_secs_f64());
        if rate_limited {
            self.eci_rate_limited
                .get_or_create(&ActionLabels { action })
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eci_calls_are_counted_by_action_and_code() {
        let metrics = Metrics::new();
        metrics.observe(
            "CreateContainerGroup",
            "Throttling.User",
            Duration::from_millis(20),
            true,
        );
        metrics.observe(
            "CreateContainerGroup",
            "Success",
            Duration::from_millis(20),
            false,
        );
        let text = metrics.encode();
        assert!(text.contains(
            r#"vk_eci_eci_calls_total{action="CreateContainerGroup",code="Throttling.User"} 1"#
        ));
        assert!(
            text.contains(
                r#"vk_eci_eci_rate_limited_calls_total{action="CreateContainerGroup"} 1"#
            )
        );
        assert!(text.contains(
            r#"vk_eci_eci_call_duration_seconds_count{action="CreateContainerGroup"} 2"#
        ));
    }

    #[test]
    fn kubelet_requests_are_counted_by_route_and_status() {
        let metrics = Metrics::new();
        metrics.kubelet_request("/containerLogs", 403, Duration::from_millis(3));
        let text = metrics.encode();
        assert!(
            text.contains(r#"vk_eci_kubelet_requests_total{path="/containerLogs",code="403"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"vk_eci_kubelet_request_duration_seconds_count{path="/containerLogs"} 1"#
            )
        );
    }
}
