//! `/metrics/resource` and `/stats/summary` from a per-pod cache that a background refresher
//! fills with `DescribeMultiContainerGroupMetric` (20 groups a call) while this replica leads,
//! pacing itself to its share of the call limit: a full pass every
//! `refresh_interval(pods, 20, calls a minute)` (90 s for 10,000 pods on a budget of 400
//! calls a minute, 333 of them sustained; never faster than ECI's 15 s sampling). A few calls
//! are in flight at once: one at a time, a call's round trip (~0.3 s) rather than the budget
//! would set the pace of a large node.

use std::collections::HashMap;
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
        let targets: Vec<Sampled> = state
            .ctx
            .pods
            .state()
            .iter()
            .filter_map(|pod| sampled(pod))
            .collect();
        let mut fresh: HashMap<String, PodUsage> = HashMap::with_capacity(targets.len());
        let mut in_flight = FuturesUnordered::new();
        for batch in targets.chunks(IDS_PER_CALL) {
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
                    Some((batch, answer)) = in_flight.next() => take_in(state, batch, answer, &mut fresh),
                    () = sleep_for(wait) => {}
                }
            }
            in_flight.push(fetch(state, batch));
        }
        while let Some((batch, answer)) = in_flight.next().await {
            take_in(state, batch, answer, &mut fresh);
        }
        let pods: Vec<PodUsage> = fresh.values().cloned().collect();
        let node = counter.observe(&pods);
        state
            .ctx
            .metrics
            .kubelet_metric_pods
            .set(fresh.len() as i64);
        publish_pass(state, fresh, node);
        let interval =
            refresh_interval(targets.len(), IDS_PER_CALL, calls_per_minute, min_interval);
        debug!(pods = targets.len(), ?interval, "metrics refreshed");
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
async fn fetch<'a>(state: &KubeletState, batch: &'a [Sampled]) -> (&'a [Sampled], MetricAnswer) {
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

/// Adds one call's answer to the pass, publishing it at once, so a long pass shows its fresh
/// samples early; a failed call keeps its pods' last samples.
fn take_in(
    state: &KubeletState,
    batch: &[Sampled],
    answer: MetricAnswer,
    fresh: &mut HashMap<String, PodUsage>,
) {
    match answer {
        Ok(usages) => {
            publish_batch(state, &usages);
            fresh.extend(usages.into_iter().map(|u| (u.pod.uid.clone(), u)));
        }
        Err(error) => {
            warn!(%error, "ECI metrics refresh failed for a batch; keeping its last samples");
            keep_previous(state, batch, fresh);
        }
    }
}

fn keep_previous(state: &KubeletState, batch: &[Sampled], fresh: &mut HashMap<String, PodUsage>) {
    if let Ok(snapshot) = state.stats.snapshot.read() {
        for target in batch {
            if let Some(previous) = snapshot.pods.get(&target.pod.uid) {
                fresh.insert(target.pod.uid.clone(), previous.clone());
            }
        }
    }
}

fn publish_batch(state: &KubeletState, usages: &[PodUsage]) {
    if let Ok(mut snapshot) = state.stats.snapshot.write() {
        for usage in usages {
            snapshot.pods.insert(usage.pod.uid.clone(), usage.clone());
        }
    }
}

/// Ends a pass: the cache becomes what it found (pods gone or without samples drop out).
fn publish_pass(state: &KubeletState, fresh: HashMap<String, PodUsage>, node: Option<NodeUsage>) {
    if let Ok(mut snapshot) = state.stats.snapshot.write() {
        snapshot.pods = fresh;
        snapshot.node = node;
    }
}
