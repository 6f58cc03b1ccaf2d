//! ECI → pod status, batched. Each pass asks ECI what changed in the last minute
//! (DescribeContainerGroupStatus and DescribeContainerGroupEvents with `SinceSecond`: one
//! page each in the steady state), fetches only the groups whose record differs from the one
//! last applied (DescribeContainerGroups by id, 20 per call) and patches only pods whose status
//! differs. Every minute a full pass (no `SinceSecond`) catches anything missed and collects
//! orphans. API calls per pass grow with pages of changes, never with pods.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use eci_client::params::JsonList;
use eci_client::types::{
    ContainerGroup, DeleteContainerGroupRequest, DescribeContainerGroupEventsRequest,
    DescribeContainerGroupStatusRequest, DescribeContainerGroupsRequest, Tag, status,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::lifecycle::{
    CREATE_RETRY, CreateRetry, SyncPacing, orphans, pod_event, reschedule_after_schedule_failure,
};
use vk_eci_core::status::{event_key, last_change, pod_status, status_patch, unreported_events};
use vk_eci_core::translate::tags;

use super::create::annotations_of;
use super::{Error, PodController, writes};
use crate::context::FIELD_MANAGER;

/// A full pass (every group, not only the changed ones) runs this often.
const FULL_EVERY: Duration = Duration::from_secs(60);
/// The incremental window: must exceed the slowest pause between passes.
const SINCE_SECONDS: i64 = 60;
const IDS_PER_CALL: usize = 20;
const STATUS_PAGE: i64 = 200;
/// Pods whose status and events are written at once.
const APPLY_CONCURRENCY: usize = 20;

/// Groups being stopped for deleted pods; the sync removes each pod once its group is gone.
#[derive(Debug, Default)]
pub struct Terminating(Mutex<HashMap<String, ObjectRef<Pod>>>);

impl Terminating {
    pub fn track(&self, id: &str, pod: &Pod) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(id.to_string(), ObjectRef::from_obj(pod));
        }
    }

    fn snapshot(&self) -> Vec<(String, ObjectRef<Pod>)> {
        self.0
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    fn forget(&self, id: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(id);
        }
    }
}

/// What was last applied for a group.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    status: u64,
    events: u64,
    transitioning: bool,
}

fn fingerprint<T: serde::Serialize>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    serde_json::to_vec(value)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

fn transitioning(eci_status: &str) -> bool {
    matches!(
        eci_status,
        status::SCHEDULING
            | status::PENDING
            | status::RESTARTING
            | status::UPDATING
            | status::TERMINATING
    )
}

fn tag<'a>(group: &'a ContainerGroup, key: &str) -> Option<&'a str> {
    group
        .tags
        .iter()
        .find(|t| t.key == key)
        .map(|t| t.value.as_str())
}

pub struct StatusSync {
    controller: Arc<PodController>,
    seen: HashMap<String, Seen>,
    /// ECI event counts already mirrored, by pod UID.
    reported: Mutex<HashMap<String, HashMap<String, i64>>>,
    last_full: Option<Instant>,
    pacing: SyncPacing,
}

impl StatusSync {
    pub fn new(controller: Arc<PodController>) -> Self {
        Self {
            controller,
            seen: HashMap::new(),
            reported: Mutex::default(),
            last_full: None,
            // Even steady pods are polled every second: a spot notice must reach the pod
            // within about a second (two cheap calls, far below ECI's 10,000 per minute).
            pacing: SyncPacing {
                fast: Duration::from_millis(500),
                slow: Duration::from_secs(1),
            },
        }
    }

    /// Syncs while this replica leads; a new leader starts with a full pass.
    pub async fn run(mut self) {
        let ctx = self.controller.ctx.clone();
        let mut leadership = ctx.leadership.clone();
        loop {
            if !leadership.is_leader() {
                leadership.acquired().await;
                self.last_full = None;
            }
            let started = Instant::now();
            let pause = match self.pass().await {
                Ok(pause) => pause,
                Err(error) => {
                    warn!(%error, "status sync pass failed");
                    Duration::from_secs(2)
                }
            };
            ctx.metrics
                .status_sync_seconds
                .observe(started.elapsed().as_secs_f64());
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = ctx.sync_now.notified() => {}
                () = leadership.lost() => {}
            }
        }
    }

    fn filter_tags(&self) -> Vec<Tag> {
        let settings = &self.controller.ctx.settings;
        vec![
            Tag::new(tags::CLUSTER_ID, settings.cluster_id.clone()),
            Tag::new(tags::NODE, settings.node_name.clone()),
        ]
    }

    /// One pass; returns the pause before the next.
    async fn pass(&mut self) -> Result<Duration, Error> {
        let ctx = self.controller.ctx.clone();
        let full = self.last_full.is_none_or(|at| at.elapsed() >= FULL_EVERY);
        let filter = DescribeContainerGroupStatusRequest {
            tag: self.filter_tags(),
            since_second: (!full).then_some(SINCE_SECONDS),
            limit: Some(STATUS_PAGE),
            ..DescribeContainerGroupStatusRequest::default()
        };
        let records = ctx.eci.describe_all_container_group_status(&filter).await;
        ctx.observe_eci(&records);
        let records = records?;
        let events = self.all_events(&filter).await?;

        let mut changed: BTreeSet<String> = BTreeSet::new();
        let mut pending: HashMap<String, Seen> = HashMap::new();
        for record in &records {
            let seen = self
                .seen
                .get(&record.container_group_id)
                .copied()
                .unwrap_or_default();
            let next = Seen {
                status: fingerprint(record),
                transitioning: transitioning(&record.status),
                ..seen
            };
            if next.status != seen.status {
                changed.insert(record.container_group_id.clone());
            }
            pending.insert(record.container_group_id.clone(), next);
        }
        for (id, list) in &events {
            let seen = pending
                .get(id)
                .or_else(|| self.seen.get(id))
                .copied()
                .unwrap_or_default();
            let next = Seen {
                events: fingerprint(list),
                ..seen
            };
            if next.events != seen.events {
                changed.insert(id.clone());
            }
            pending.insert(id.clone(), next);
        }
        if full {
            let present: HashSet<&str> = records
                .iter()
                .map(|r| r.container_group_id.as_str())
                .collect();
            self.seen.retain(|id, _| present.contains(id.as_str()));
        }

        self.finish_terminating().await?;

        // Unchanged records are applied already: remember them now; changed ones once applied.
        for (id, next) in pending.iter() {
            if !changed.contains(id) {
                self.seen.insert(id.clone(), *next);
            }
        }
        let ids: Vec<String> = changed.into_iter().collect();
        let mut fetched_any_transitioning = false;
        for chunk in ids.chunks(IDS_PER_CALL) {
            let groups = self.fetch(chunk).await?;
            fetched_any_transitioning |= groups.iter().any(|g| transitioning(&g.status));
            // Pods are independent: their writes go out together, not one after another.
            let this = &*self;
            let outcomes: Vec<(String, Result<(), Error>)> = futures::stream::iter(groups)
                .map(|group| async move {
                    let outcome = this.apply(&group).await;
                    (group.container_group_id, outcome)
                })
                .buffer_unordered(APPLY_CONCURRENCY)
                .collect()
                .await;
            for (id, outcome) in outcomes {
                match outcome {
                    Ok(()) => {
                        if let Some(next) = pending.remove(&id) {
                            self.seen.insert(id, next);
                        }
                    }
                    Err(error) => {
                        debug!(%id, %error, "group not applied yet; retried next pass");
                    }
                }
            }
        }

        if full {
            self.collect_orphans(&records).await?;
            self.forget_gone_pods();
            self.last_full = Some(Instant::now());
        }
        self.count_pods();

        let busy = fetched_any_transitioning
            || self.seen.values().any(|s| s.transitioning)
            || !self.controller.terminating.snapshot().is_empty();
        Ok(if busy {
            self.pacing.fast
        } else {
            self.pacing.slow
        })
    }

    /// Events of the groups in `filter`, by group id.
    async fn all_events(
        &self,
        filter: &DescribeContainerGroupStatusRequest,
    ) -> Result<HashMap<String, Vec<eci_client::types::DetailedEvent>>, Error> {
        let ctx = &self.controller.ctx;
        let mut request = DescribeContainerGroupEventsRequest {
            filter: filter.clone(),
            event_source: None,
        };
        let mut events = HashMap::new();
        loop {
            let page = ctx.eci.call(&request).await?;
            for group in page.data {
                events.insert(group.container_group_id, group.events);
            }
            if page.next_token.is_empty() {
                return Ok(events);
            }
            request.filter.next_token = Some(page.next_token);
        }
    }

    async fn fetch(&self, ids: &[String]) -> Result<Vec<ContainerGroup>, Error> {
        let ctx = &self.controller.ctx;
        let result = ctx
            .eci
            .call(&DescribeContainerGroupsRequest {
                container_group_ids: Some(JsonList(ids.to_vec())),
                with_event: Some(true),
                limit: Some(IDS_PER_CALL as i64),
                ..DescribeContainerGroupsRequest::default()
            })
            .await;
        ctx.observe_eci(&result);
        Ok(result?.container_groups)
    }

    /// The live pod a group belongs to.
    fn pod_of(&self, group: &ContainerGroup) -> Option<Arc<Pod>> {
        let (namespace, name, uid) = (
            tag(group, tags::NAMESPACE)?,
            tag(group, tags::NAME)?,
            tag(group, tags::UID)?,
        );
        self.controller
            .ctx
            .pods
            .get(&ObjectRef::new(name).within(namespace))
            .filter(|pod| pod.uid().as_deref() == Some(uid))
    }

    /// Mirrors one group onto its pod.
    async fn apply(&self, group: &ContainerGroup) -> Result<(), Error> {
        let ctx = self.controller.ctx.clone();
        let Some(pod) = self.pod_of(group) else {
            // No pod: an orphan, which the full pass collects.
            return Ok(());
        };
        if pod.annotations().get(INSTANCE_ID) != Some(&group.container_group_id) {
            return Err(Error::NotYetRecorded);
        }
        let now = Utc::now();
        if group.status == status::SCHEDULE_FAILED
            && pod.metadata.deletion_timestamp.is_none()
            && reschedule_after_schedule_failure(&annotations_of(&pod))
        {
            return self.reschedule(&pod, group).await;
        }
        let desired = pod_status(&pod, group, now);
        let current = pod.status.clone().unwrap_or_default();
        if let Some(patch) = status_patch(&current, &desired) {
            writes::patch_status(&ctx, &pod, patch).await?;
            if let Some(changed_at) = last_change(group) {
                let lag = (now - changed_at).num_milliseconds().max(0) as f64 / 1000.0;
                ctx.metrics.status_sync_lag_seconds.observe(lag);
            }
        }
        self.mirror_events(&pod, group).await
    }

    /// ECI events become pod Events; a repeat updates the same Event's count.
    async fn mirror_events(&self, pod: &Pod, group: &ContainerGroup) -> Result<(), Error> {
        let ctx = self.controller.ctx.clone();
        let uid = pod.uid().unwrap_or_default();
        let fresh: Vec<_> = match self.reported.lock() {
            Ok(mut reported) => {
                unreported_events(&group.events, reported.entry(uid.clone()).or_default())
                    .into_iter()
                    .cloned()
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        let api: Api<Event> =
            Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        for eci_event in fresh {
            let event = pod_event(pod, &eci_event, &ctx.settings.node_name, Utc::now());
            let name = event.metadata.name.clone().unwrap_or_default();
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let repeat = json!({
                        "count": event.count,
                        "lastTimestamp": event.last_timestamp,
                        "message": event.message,
                    });
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&repeat))
                        .await?;
                }
                Err(error) => return Err(error.into()),
            }
            if let Ok(mut reported) = self.reported.lock() {
                reported
                    .entry(uid.clone())
                    .or_default()
                    .insert(event_key(&eci_event), eci_event.count);
            }
        }
        Ok(())
    }

    /// Replaces a group that could not be scheduled: delete it, clear the pod's instance id
    /// and count the reschedule (the next create then uses a new ClientToken).
    async fn reschedule(&self, pod: &Pod, group: &ContainerGroup) -> Result<(), Error> {
        let ctx = &self.controller.ctx;
        let deleted = ctx
            .eci
            .call(&DeleteContainerGroupRequest {
                container_group_id: group.container_group_id.clone(),
                ..DeleteContainerGroupRequest::default()
            })
            .await;
        match deleted {
            Ok(_) => {}
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error.into()),
        }
        let retry = CreateRetry::of(pod.annotations()).failed(true, Utc::now());
        let why = group
            .events
            .iter()
            .rev()
            .find(|e| e.r#type == "Warning")
            .map(|e| format!("{}: {}", e.reason, e.message))
            .unwrap_or_else(|| "ScheduleFailed".into());
        info!(pod = %pod.name_any(), id = %group.container_group_id, attempt = retry.attempts, "container group could not be scheduled; creating another");
        writes::event(
            ctx,
            pod,
            EventType::Warning,
            "Rescheduling",
            format!(
                "ECI could not schedule container group {} ({why}); creating another",
                group.container_group_id
            ),
        )
        .await;
        let patch = json!({
            "metadata": {
                "uid": pod.uid(),
                "annotations": {
                    INSTANCE_ID: null,
                    CREATE_RETRY: retry.render(),
                },
            }
        });
        Api::<Pod>::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default())
            .patch(
                &pod.name_any(),
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }

    /// Removes the pods whose terminating group is gone (or finished).
    async fn finish_terminating(&self) -> Result<(), Error> {
        let ctx = &self.controller.ctx;
        let tracked = self.controller.terminating.snapshot();
        for chunk in tracked.chunks(IDS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let still: HashMap<String, String> = ctx
                .eci
                .call(&DescribeContainerGroupStatusRequest {
                    container_group_ids: Some(JsonList(ids)),
                    limit: Some(STATUS_PAGE),
                    ..DescribeContainerGroupStatusRequest::default()
                })
                .await?
                .data
                .into_iter()
                .map(|g| (g.container_group_id, g.status))
                .collect();
            for (id, key) in chunk {
                if still.get(id).is_some_and(|s| s == status::TERMINATING) {
                    continue;
                }
                if let Some(pod) = ctx.pods.get(key) {
                    writes::remove(ctx, &pod).await?;
                }
                self.controller.terminating.forget(id);
            }
        }
        Ok(())
    }

    /// Deletes groups of this node that no pod owns. Candidates are groups no pod's
    /// annotation names; each is confirmed by its UID tag against the live pods, so a group
    /// whose annotation write is still in flight is kept.
    async fn collect_orphans(
        &self,
        records: &[eci_client::types::ContainerGroupStatus],
    ) -> Result<(), Error> {
        let ctx = &self.controller.ctx;
        let pods = ctx.pods.state();
        let claimed: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.annotations().get(INSTANCE_ID).map(String::as_str))
            .collect();
        let candidates: Vec<String> = records
            .iter()
            .map(|r| r.container_group_id.clone())
            .filter(|id| !claimed.contains(id.as_str()))
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let live: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        for chunk in candidates.chunks(IDS_PER_CALL) {
            let groups = self.fetch(chunk).await?;
            for orphan in orphans(
                &groups,
                &ctx.settings.cluster_id,
                &ctx.settings.node_name,
                &live,
            ) {
                let id = &orphan.container_group_id;
                let result = ctx
                    .eci
                    .call(&DeleteContainerGroupRequest {
                        container_group_id: id.clone(),
                        ..DeleteContainerGroupRequest::default()
                    })
                    .await;
                match result {
                    Ok(_) => {
                        info!(%id, name = %orphan.container_group_name, "deleted an orphaned container group");
                        ctx.metrics.orphans_deleted.inc();
                    }
                    Err(error) if error.is_not_found() => {}
                    Err(error) => warn!(%id, %error, "cannot delete an orphaned container group"),
                }
            }
        }
        Ok(())
    }

    /// Drops event bookkeeping of pods that no longer exist.
    fn forget_gone_pods(&mut self) {
        let live: HashSet<String> = self
            .controller
            .ctx
            .pods
            .state()
            .iter()
            .filter_map(|p| p.uid())
            .collect();
        if let Ok(mut reported) = self.reported.lock() {
            reported.retain(|uid, _| live.contains(uid));
        }
    }

    fn count_pods(&self) {
        let mut by_phase: HashMap<String, i64> = ["Pending", "Running", "Succeeded", "Failed"]
            .into_iter()
            .map(|p| (p.to_string(), 0))
            .collect();
        for pod in self.controller.ctx.pods.state() {
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".into());
            *by_phase.entry(phase).or_default() += 1;
        }
        for (phase, count) in by_phase {
            self.controller
                .ctx
                .metrics
                .pods
                .get_or_create(&crate::metrics::PhaseLabels { phase })
                .set(count);
        }
    }
}
