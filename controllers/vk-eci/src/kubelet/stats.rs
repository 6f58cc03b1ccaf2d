//! `/metrics/resource` and `/stats/summary` from a per-pod cache that a background refresher
//! fills with `DescribeMultiContainerGroupMetric` (20 groups a call) while this replica leads,
//! pacing itself to its share of the call limit: a full pass every
//! `refresh_interval(pods, 20, calls a minute)` (90 s for 10,000 pods on a budget of 400
//! calls a minute, 333 of them sustained; never faster than ECI's 15 s sampling). A few calls
//! are in flight at once: one at a time, a call's round trip (~0.3 s) rather than the budget
//! would set the pace of a large node.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use eci_types::params::JsonList;
use eci_types::wire::DescribeMultiContainerGroupMetricRequest;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http::{StatusCode, header};
use tracing::{debug, warn};
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::cache::{CachedContainerState, CachedPod};
use vk_eci_core::kubelet::budget::{CallBudget, refresh_interval};
use vk_eci_core::kubelet::stats::{
    NodeCounter, NodeUsage, PROMETHEUS_TEXT, PodRef, PodUsage, render_resource_metrics,
};

use super::KubeletState;

/// Container groups per `DescribeMultiContainerGroupMetric` call (ECI's maximum).
pub const IDS_PER_CALL: usize = 20;

/// Metric calls in flight at once: enough to spend a 400-a-minute budget on 0.3 s round trips
/// (one at a time managed ~190 a minute), few enough not to crowd the pod calls' connections.
const CALLS_IN_FLIGHT: usize = 4;

#[derive(Default)]
struct Snapshot {
    /// By pod UID.
    pods: HashMap<String, PodUsage>,
    node: Option<NodeUsage>,
}

pub struct StatsCache {
    snapshot: RwLock<Snapshot>,
    started: DateTime<Utc>,
}

impl StatsCache {
    pub fn new() -> Self {
        Self {
            snapshot: RwLock::new(Snapshot::default()),
            started: Utc::now(),
        }
    }

    fn read(&self) -> (Option<NodeUsage>, Vec<PodUsage>) {
        let Ok(snapshot) = self.snapshot.read() else {
            return (None, Vec::new());
        };
        let mut pods: Vec<PodUsage> = snapshot.pods.values().cloned().collect();
        pods.sort_by(|a, b| (&a.pod.namespace, &a.pod.name).cmp(&(&b.pod.namespace, &b.pod.name)));
        (snapshot.node, pods)
    }
}

impl Default for StatsCache {
    fn default() -> Self {
        Self::new()
    }
}

pub fn resource_metrics(state: &KubeletState) -> Response {
    let (node, pods) = state.stats.read();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        render_resource_metrics(node.as_ref(), &pods),
    )
        .into_response()
}

pub fn summary(state: &KubeletState) -> Response {
    let (node, pods) = state.stats.read();
    axum::Json(vk_eci_core::kubelet::stats::summary(
        &state.ctx.settings.node_name,
        state.stats.started,
        node.as_ref(),
        &pods,
    ))
    .into_response()
}

/// A pod that has a container group to ask about.
struct Sampled {
    group_id: String,
    pod: PodRef,
    start_time: Option<DateTime<Utc>>,
    container_starts: HashMap<String, DateTime<Utc>>,
}

fn sampled(pod: &CachedPod) -> Option<Sampled> {
    let group_id = pod.metadata.annotations.as_ref()?.get(INSTANCE_ID)?.clone();
    let status = &pod.status;
    if status.phase.as_deref() != Some("Running") || group_id.is_empty() {
        return None;
    }
    let container_starts = status
        .container_statuses
        .iter()
        .filter_map(|s| {
            let CachedContainerState::Running {
                started_at: Some(started),
            } = &s.state
            else {
                return None;
            };
            Some((s.name.clone(), chrono_time(&started.0)?))
        })
        .collect();
    Some(Sampled {
        group_id,
        pod: PodRef {
            namespace: pod.metadata.namespace.clone()?,
            name: pod.metadata.name.clone()?,
            uid: pod.metadata.uid.clone()?,
        },
        start_time: status.start_time.as_ref().and_then(|t| chrono_time(&t.0)),
        container_starts,
    })
}

fn chrono_time(at: &k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.as_second(), at.subsec_nanosecond().try_into().ok()?)
}

/// Runs [`refresh`] while this replica leads.
pub async fn refresh_while_leader(
    state: Arc<KubeletState>,
    calls_per_minute: u32,
    min_interval: Duration,
) {
    let mut leadership = state.ctx.leadership.clone();
    let mut budget = CallBudget::per_minute(calls_per_minute, Instant::now());
    loop {
        leadership.acquired().await;
        tokio::select! {
            () = refresh(&state, &mut budget, calls_per_minute, min_interval) => {}
            () = leadership.lost() => {}
        }
    }
}

async fn refresh(
    state: &KubeletState,
    budget: &mut CallBudget,
    calls_per_minute: u32,
    min_interval: Duration,
) {
    let mut counter = NodeCounter::default();
    loop {
        let pass_started = Instant::now();
        // Targets are made a call's worth at a time from the store's pods, and answers go
        // straight into the snapshot: a pass holds no second copy of the node's pods.
        let pods = state.ctx.pods.state();
        let mut targets = pods.iter().filter_map(|pod| sampled(pod));
        let mut target_count = 0;
        let mut sampled_uids: HashSet<String> = HashSet::new();
        let mut in_flight = FuturesUnordered::new();
        loop {
            let batch: Vec<Sampled> = targets.by_ref().take(IDS_PER_CALL).collect();
            if batch.is_empty() {
                break;
            }
            target_count += batch.len();
            // A slot, then a token of the budget; answers are taken in while waiting for either.
            loop {
                let wait = if in_flight.len() >= CALLS_IN_FLIGHT {
                    None
                } else {
                    match budget.try_take(Instant::now()) {
                        Ok(()) => break,
                        Err(wait) => Some(wait),
                    }
                };
                tokio::select! {
                    Some((batch, answer)) = in_flight.next() => {
                        take_in(state, batch, answer, &mut sampled_uids);
                    }
                    () = sleep_for(wait) => {}
                }
            }
            in_flight.push(fetch(state, batch));
        }
        drop(pods);
        while let Some((batch, answer)) = in_flight.next().await {
            take_in(state, batch, answer, &mut sampled_uids);
        }
        publish_pass(state, &sampled_uids, &mut counter);
        let interval = refresh_interval(target_count, IDS_PER_CALL, calls_per_minute, min_interval);
        debug!(pods = target_count, ?interval, "metrics refreshed");
        let next = pass_started + interval;
        tokio::time::sleep(
            next.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        )
        .await;
    }
}

/// Sleeps `wait`, or forever when there is nothing to wait for but a call in flight.
async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

type MetricAnswer = Result<Vec<PodUsage>, eci_client::EciError>;

/// One `DescribeMultiContainerGroupMetric` call for `batch`, as the pods' usages.
async fn fetch(state: &KubeletState, batch: Vec<Sampled>) -> (Vec<Sampled>, MetricAnswer) {
    let request = DescribeMultiContainerGroupMetricRequest {
        container_group_ids: JsonList(batch.iter().map(|t| t.group_id.clone()).collect()),
        metric_type: Some("summary".into()),
        ..DescribeMultiContainerGroupMetricRequest::default()
    };
    let answer = state.ctx.eci.call(&request).await;
    state.ctx.observe_eci(&answer);
    let usages = answer.map(|answer| {
        let by_group: HashMap<&str, &[eci_types::wire::MetricRecord]> = answer
            .monitor_datas
            .iter()
            .map(|d| (d.container_group_id.as_str(), d.records.as_slice()))
            .collect();
        batch
            .iter()
            .filter_map(|target| {
                let records = by_group
                    .get(target.group_id.as_str())
                    .copied()
                    .unwrap_or(&[]);
                PodUsage::from_records(
                    target.pod.clone(),
                    target.start_time,
                    &target.container_starts,
                    records,
                )
            })
            .collect()
    });
    (batch, usages)
}

/// Publishes one call's answer at once, so a long pass shows its fresh samples early; a
/// failed call keeps its pods' last samples. `sampled_uids` gathers the pods this pass has a
/// sample for.
fn take_in(
    state: &KubeletState,
    batch: Vec<Sampled>,
    answer: MetricAnswer,
    sampled_uids: &mut HashSet<String>,
) {
    let Ok(mut snapshot) = state.stats.snapshot.write() else {
        return;
    };
    match answer {
        Ok(usages) => {
            for usage in usages {
                sampled_uids.insert(usage.pod.uid.clone());
                snapshot.pods.insert(usage.pod.uid.clone(), usage);
            }
        }
        Err(error) => {
            warn!(%error, "ECI metrics refresh failed for a batch; keeping its last samples");
            let kept = batch
                .iter()
                .filter(|target| snapshot.pods.contains_key(&target.pod.uid));
            sampled_uids.extend(kept.map(|target| target.pod.uid.clone()));
        }
    }
}

/// Ends a pass: the cache keeps only the pods it found samples for (pods gone or without
/// samples drop out), and the node's usage is their sum.
fn publish_pass(state: &KubeletState, sampled_uids: &HashSet<String>, counter: &mut NodeCounter) {
    let Ok(mut snapshot) = state.stats.snapshot.write() else {
        return;
    };
    snapshot.pods.retain(|uid, _| sampled_uids.contains(uid));
    snapshot.node = counter.observe(snapshot.pods.values());
    state
        .ctx
        .metrics
        .kubelet_metric_pods
        .set(snapshot.pods.len() as i64);
}
