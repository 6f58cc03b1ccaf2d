//! ECI → pod status, batched. Each pass asks ECI what changed in the last minute
//! (DescribeContainerGroupStatus and DescribeContainerGroupEvents with `SinceSecond`: one
//! page each in the steady state), fetches only the groups whose record differs from the one
//! last applied (DescribeContainerGroups by id, 20 per call) and patches only pods whose status
//! differs. Every minute a full pass (no `SinceSecond`) catches anything missed, collects
//! orphans and checks that every pod's recorded group still exists. API calls per pass grow
//! with pages of changes, never with pods.
//!
//! Safety (design §8a): nothing destructive runs before the pod cache has synced in this
//! leadership term; a group is deleted as an orphan only after two full passes found no pod
//! for it in the cache and the API server itself says its pod is gone; a pod whose group
//! vanished (confirmed by a describe by id) stops showing Running/Ready.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use eci_types::params::JsonList;
use eci_types::wire::{
    ContainerGroup, ContainerGroupStatus, DescribeContainerGroupEventsRequest,
    DescribeContainerGroupStatusRequest, Tag, status,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::cache::CachedPod;
use vk_eci_core::lifecycle::{
    CreateRetry, SyncPacing, pod_event, reschedule_after_schedule_failure,
};
use vk_eci_core::ownership::{
    CONTAINER_INSTANCE_LOST, LostInstance, RecordedInstance, confirmed_orphan, lost_instance,
    orphan_suspects, recorded_instance, tagged_pod,
};
use vk_eci_core::status::{event_key, last_change, pod_status, status_patch, unreported_events};
use vk_eci_core::translate::tags;

use super::create::annotations_of;
use super::groups::{self, IDS_PER_CALL};
use super::{Error, PodController, writes};
use crate::liveness::Beat;

/// How often a full pass (every group, not only the changed ones) runs, by default.
pub const FULL_EVERY: Duration = Duration::from_secs(60);
/// The incremental window: must exceed the slowest pause between passes.
const SINCE_SECONDS: i64 = 60;
const STATUS_PAGE: i64 = 200;
/// Pods whose status and events are written at once.
const APPLY_CONCURRENCY: usize = 20;
/// One pass may take this long (its calls can hang); then it is abandoned and retried.
const PASS_TIMEOUT: Duration = Duration::from_secs(120);
/// A standby's sync loop still beats this often.
const STANDBY_BEAT: Duration = Duration::from_secs(10);
/// The liveness bound of the sync loop: a pass and a pause, with room to spare.
pub const STUCK_AFTER: Duration = Duration::from_secs(300);

/// Groups being stopped for deleted pods; the sync removes each pod once its group is gone.
#[derive(Debug, Default)]
pub struct Terminating(Mutex<HashMap<String, ObjectRef<CachedPod>>>);

impl Terminating {
    pub fn track(&self, id: &str, pod: &CachedPod) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(id.to_string(), ObjectRef::from_obj(pod));
        }
    }

    fn snapshot(&self) -> Vec<(String, ObjectRef<CachedPod>)> {
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

/// A pod UID as the owner and event maps keep it (8 bytes, not the 36-byte string).
fn owner_key(uid: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    uid.hash(&mut hasher);
    hasher.finish()
}

fn fingerprint<T: serde::Serialize>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    serde_json::to_vec(value)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// What a pass keeps of a listed status record: a full pass lists every group of the node,
/// and the records whole (conditions, container statuses) would be its memory peak.
struct Listed {
    id: String,
    fingerprint: u64,
    transitioning: bool,
}

impl Listed {
    fn of(record: ContainerGroupStatus) -> Self {
        Self {
            fingerprint: fingerprint(&record),
            transitioning: transitioning(&record.status),
            id: record.container_group_id,
        }
    }
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

/// How the status sync runs, from the operator's settings.
pub struct StatusSyncConfig {
    /// How often a full pass runs ([`FULL_EVERY`] by default).
    pub full_every: Duration,
    /// Beats for the liveness probe.
    pub beat: Beat,
}

pub struct StatusSync {
    controller: Arc<PodController>,
    seen: HashMap<String, Seen>,
    /// ECI event counts already mirrored, by event key, by pod UID ([`owner_key`]); pods
    /// gone from the cache are dropped each full pass.
    reported: Mutex<HashMap<u64, HashMap<u64, i64>>>,
    last_full: Option<Instant>,
    full_every: Duration,
    /// Groups the last full pass found no cached pod for: deleted only if the next full pass
    /// finds none either (and the API server confirms).
    orphan_suspects: HashSet<String>,
    /// The pod UID (hashed) each group's tags name, as last fetched: a pod whose annotation
    /// names a group of another pod is found without describing every group each pass.
    owners: HashMap<String, u64>,
    pacing: SyncPacing,
    beat: Beat,
}

impl StatusSync {
    pub fn new(controller: Arc<PodController>, config: StatusSyncConfig) -> Self {
        let StatusSyncConfig { full_every, beat } = config;
        Self {
            controller,
            seen: HashMap::new(),
            reported: Mutex::default(),
            last_full: None,
            full_every,
            orphan_suspects: HashSet::new(),
            owners: HashMap::new(),
            beat,
            // Even steady pods are polled every second: a spot notice must reach the pod
            // within about a second (two cheap calls, far below ECI's 10,000 per minute).
            pacing: SyncPacing {
                fast: Duration::from_millis(500),
                slow: Duration::from_secs(1),
            },
        }
    }

    /// Syncs while this replica leads; a new leader starts with a full pass once the pod
    /// cache has synced.
    pub async fn run(mut self) {
        let ctx = self.controller.ctx.clone();
        let mut leadership = ctx.leadership.clone();
        loop {
            self.beat.beat();
            if !leadership.is_leader() {
                tokio::select! {
                    () = leadership.acquired() => {}
                    () = tokio::time::sleep(STANDBY_BEAT) => continue,
                }
                self.last_full = None;
                self.orphan_suspects.clear();
                if ctx.pods.wait_until_ready().await.is_err() {
                    return;
                }
                continue;
            }
            let started = Instant::now();
            let pass = tokio::time::timeout(PASS_TIMEOUT, self.pass());
            let pause = match leadership.fenced(pass).await {
                None => continue,
                Some(Ok(Ok(pause))) => pause,
                Some(Ok(Err(error))) => {
                    warn!(%error, "status sync pass failed");
                    Duration::from_secs(2)
                }
                Some(Err(_)) => {
                    warn!(timeout = ?PASS_TIMEOUT, "status sync pass did not finish in time");
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
        let full = self
            .last_full
            .is_none_or(|at| at.elapsed() >= self.full_every);
        let filter = DescribeContainerGroupStatusRequest {
            tag: self.filter_tags(),
            since_second: (!full).then_some(SINCE_SECONDS),
            limit: Some(STATUS_PAGE),
            ..DescribeContainerGroupStatusRequest::default()
        };
        let records = ctx
            .eci
            .describe_all_container_group_status(&filter, Listed::of)
            .await;
        ctx.observe_eci(&records);
        let records = records?;
        let events = self.all_events(&filter).await?;

        let mut changed: BTreeSet<String> = BTreeSet::new();
        let mut pending: HashMap<String, Seen> = HashMap::new();
        for record in &records {
            let seen = self.seen.get(&record.id).copied().unwrap_or_default();
            let next = Seen {
                status: record.fingerprint,
                transitioning: record.transitioning,
                ..seen
            };
            if next.status != seen.status {
                changed.insert(record.id.clone());
            }
            pending.insert(record.id.clone(), next);
        }
        for (id, events_fingerprint) in &events {
            let seen = pending
                .get(id)
                .or_else(|| self.seen.get(id))
                .copied()
                .unwrap_or_default();
            let next = Seen {
                events: *events_fingerprint,
                ..seen
            };
            if next.events != seen.events {
                changed.insert(id.clone());
            }
            pending.insert(id.clone(), next);
        }
        if full {
            let present: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
            self.seen.retain(|id, _| present.contains(id.as_str()));
            self.owners.retain(|id, _| present.contains(id.as_str()));
        }

        self.finish_terminating().await;

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
            self.note_owners(&groups);
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
            self.verify_recorded_instances(&records).await?;
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

    /// A fingerprint of the events of each group in `filter`, by group id (taken page by page:
    /// the events themselves are fetched again with the group when it changed).
    async fn all_events(
        &self,
        filter: &DescribeContainerGroupStatusRequest,
    ) -> Result<HashMap<String, u64>, Error> {
        let ctx = &self.controller.ctx;
        let mut request = DescribeContainerGroupEventsRequest {
            filter: filter.clone(),
            event_source: None,
        };
        let mut events = HashMap::new();
        loop {
            let page = ctx.eci.call(&request).await?;
            for group in page.data {
                events.insert(group.container_group_id, fingerprint(&group.events));
            }
            if page.next_token.is_empty() {
                return Ok(events);
            }
            request.filter.next_token = Some(page.next_token);
        }
    }

    async fn fetch(&self, ids: &[String]) -> Result<Vec<ContainerGroup>, Error> {
        groups::describe(&self.controller.ctx, ids).await
    }

    fn note_owners(&mut self, groups: &[ContainerGroup]) {
        let settings = &self.controller.ctx.settings;
        for group in groups {
            if let Some(tagged) = tagged_pod(group, &settings.cluster_id, &settings.node_name) {
                self.owners
                    .insert(group.container_group_id.clone(), owner_key(tagged.uid));
            }
        }
    }

    /// The cached pod a group belongs to.
    fn pod_of(&self, group: &ContainerGroup) -> Option<Arc<CachedPod>> {
        let settings = &self.controller.ctx.settings;
        let tagged = tagged_pod(group, &settings.cluster_id, &settings.node_name)?;
        self.controller
            .ctx
            .pods
            .get(&ObjectRef::new(tagged.name).within(tagged.namespace))
            .filter(|pod| pod.uid().as_deref() == Some(tagged.uid))
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
        if let Some(patch) = status_patch(&pod.status.fingerprint, &desired) {
            writes::patch_status(&ctx, &pod, patch).await?;
            if let Some(changed_at) = last_change(group) {
                let lag = (now - changed_at).num_milliseconds().max(0) as f64 / 1000.0;
                ctx.metrics.status_sync_lag_seconds.observe(lag);
            }
        }
        self.mirror_events(&pod, group).await
    }

    /// ECI events become pod Events; a repeat updates the same Event's count.
    async fn mirror_events(&self, pod: &CachedPod, group: &ContainerGroup) -> Result<(), Error> {
        let ctx = self.controller.ctx.clone();
        let owner = owner_key(&pod.uid().unwrap_or_default());
        let fresh: Vec<_> = match self.reported.lock() {
            Ok(mut reported) => {
                unreported_events(&group.events, reported.entry(owner).or_default())
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
                    .entry(owner)
                    .or_default()
                    .insert(event_key(&eci_event), eci_event.count);
            }
        }
        Ok(())
    }

    /// Replaces a group that could not be scheduled: delete it, clear the pod's instance id
    /// and count the reschedule (the next create then uses a new ClientToken).
    /// If this is interrupted after the delete, the full pass finds the pod's group lost and
    /// finishes the job ([`LostInstance::Recreate`]).
    async fn reschedule(&self, pod: &CachedPod, group: &ContainerGroup) -> Result<(), Error> {
        let ctx = &self.controller.ctx;
        groups::delete(ctx, &group.container_group_id).await?;
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
        writes::clear_instance(ctx, pod, Some(&retry)).await
    }

    /// Removes the pods whose terminating group is gone (or finished). One pod that cannot
    /// be removed, or one ECI call that fails, holds up nobody else: they are retried next
    /// pass.
    async fn finish_terminating(&self) {
        let ctx = &self.controller.ctx;
        let tracked = self.controller.terminating.snapshot();
        for chunk in tracked.chunks(IDS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let still = ctx
                .eci
                .call(&DescribeContainerGroupStatusRequest {
                    container_group_ids: Some(JsonList(ids)),
                    limit: Some(STATUS_PAGE),
                    ..DescribeContainerGroupStatusRequest::default()
                })
                .await;
            let still: HashMap<String, String> = match still {
                Ok(found) => found
                    .data
                    .into_iter()
                    .map(|g| (g.container_group_id, g.status))
                    .collect(),
                Err(error) => {
                    warn!(%error, "cannot check terminating container groups; retried next pass");
                    continue;
                }
            };
            for (id, key) in chunk {
                if still.get(id).is_some_and(|s| s == status::TERMINATING) {
                    continue;
                }
                if let Some(pod) = ctx.pods.get(key)
                    && let Err(error) = writes::remove(ctx, &pod).await
                {
                    warn!(pod = %key, %error, "cannot remove a deleted pod; retried next pass");
                    continue;
                }
                self.controller.terminating.forget(id);
            }
        }
    }

    /// Deletes groups of this node whose pod is gone. Suspects are groups no cached pod's
    /// annotation or UID claims; one is deleted only when the previous full pass suspected it
    /// too and the API server answers that its pod (by the namespace and name in its tags)
    /// does not exist or is another pod (a different UID).
    async fn collect_orphans(&mut self, records: &[Listed]) -> Result<(), Error> {
        let ctx = self.controller.ctx.clone();
        let pods = ctx.pods.state();
        let claimed: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.annotations().get(INSTANCE_ID).map(String::as_str))
            .collect();
        let unclaimed: Vec<String> = records
            .iter()
            .map(|r| r.id.clone())
            .filter(|id| !claimed.contains(id.as_str()))
            .collect();
        let cached: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        let mut suspects = HashSet::new();
        for chunk in unclaimed.chunks(IDS_PER_CALL) {
            let groups = self.fetch(chunk).await?;
            let settings = &ctx.settings;
            for group in
                orphan_suspects(&groups, &settings.cluster_id, &settings.node_name, &cached)
            {
                let id = &group.container_group_id;
                suspects.insert(id.clone());
                if !self.orphan_suspects.contains(id) {
                    debug!(%id, "container group without a pod in the cache; checked again next full pass");
                    continue;
                }
                if let Err(error) = self.delete_if_orphan(group).await {
                    warn!(%id, %error, "cannot collect a container group that looks orphaned");
                }
            }
        }
        self.orphan_suspects = suspects;
        Ok(())
    }

    async fn delete_if_orphan(&self, group: &ContainerGroup) -> Result<(), Error> {
        let ctx = &self.controller.ctx;
        let settings = &ctx.settings;
        let Some(tagged) = tagged_pod(group, &settings.cluster_id, &settings.node_name) else {
            return Ok(());
        };
        let live = Api::<CachedPod>::namespaced(ctx.client.clone(), tagged.namespace)
            .get_opt(tagged.name)
            .await?;
        let live_uid = live.as_ref().and_then(|p| p.metadata.uid.as_deref());
        if !confirmed_orphan(&tagged, live_uid) {
            debug!(id = %group.container_group_id, pod = %tagged.name, "the API server still has the pod; not an orphan");
            return Ok(());
        }
        groups::delete(ctx, &group.container_group_id).await?;
        info!(id = %group.container_group_id, name = %group.container_group_name, pod = %tagged.name, "deleted an orphaned container group");
        ctx.metrics.orphans_deleted.inc();
        Ok(())
    }

    /// Checks, by a describe by id, the recorded group of every live pod that the listing
    /// did not show or whose tags (as last fetched) name another pod: one that vanished
    /// fails its pod (or, if nothing of it ever ran, makes the pod get another); one that is
    /// not the pod's is forgotten, so the pod gets its own.
    async fn verify_recorded_instances(&mut self, records: &[Listed]) -> Result<(), Error> {
        let ctx = self.controller.ctx.clone();
        let listed: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let doubtful: Vec<(String, Arc<CachedPod>)> = ctx
            .pods
            .state()
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter(|pod| !matches!(pod.phase(), Some("Succeeded" | "Failed")))
            .filter_map(|pod| {
                let id = pod.annotations().get(INSTANCE_ID)?.clone();
                let owner = pod.uid().map(|uid| owner_key(&uid));
                let doubtful =
                    !listed.contains(id.as_str()) || self.owners.get(&id) != owner.as_ref();
                doubtful.then_some((id, pod))
            })
            .collect();
        for chunk in doubtful.chunks(IDS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let found = self.fetch(&ids).await?;
            self.note_owners(&found);
            for (id, pod) in chunk {
                let group = found.iter().find(|g| &g.container_group_id == id);
                let uid = pod.uid().unwrap_or_default();
                let settings = &ctx.settings;
                let verdict =
                    recorded_instance(group, &settings.cluster_id, &settings.node_name, &uid);
                let outcome = match verdict {
                    RecordedInstance::Present => Ok(()),
                    RecordedInstance::Lost => self.instance_lost(pod, id).await,
                    RecordedInstance::Foreign => self.instance_foreign(pod, id).await,
                };
                if let Err(error) = outcome {
                    warn!(pod = %pod.name_any(), %id, ?verdict, %error, "cannot act on the pod's recorded container group; retried next full pass");
                }
            }
        }
        Ok(())
    }

    async fn instance_lost(&self, pod: &CachedPod, id: &str) -> Result<(), Error> {
        let ctx = &self.controller.ctx;
        match lost_instance(pod, &annotations_of(pod)) {
            LostInstance::Recreate => {
                let retry = CreateRetry::of(pod.annotations()).failed(true, Utc::now());
                info!(pod = %pod.name_any(), %id, "container group vanished before it ran; creating another");
                writes::event(
                    ctx,
                    pod,
                    EventType::Warning,
                    CONTAINER_INSTANCE_LOST,
                    format!("ECI container group {id} no longer exists; creating another"),
                )
                .await;
                writes::clear_instance(ctx, pod, Some(&retry)).await
            }
            LostInstance::Fail => {
                let message = format!(
                    "ECI container group {id} no longer exists: the pod's containers are gone"
                );
                warn!(pod = %pod.name_any(), %id, "container group vanished; the pod fails");
                writes::event(
                    ctx,
                    pod,
                    EventType::Warning,
                    CONTAINER_INSTANCE_LOST,
                    message.clone(),
                )
                .await;
                writes::lost(ctx, pod, CONTAINER_INSTANCE_LOST, &message).await
            }
        }
    }

    async fn instance_foreign(&self, pod: &CachedPod, id: &str) -> Result<(), Error> {
        let ctx = &self.controller.ctx;
        warn!(pod = %pod.name_any(), %id, "the pod's instance-id annotation names a container group that is not its own; ignoring it");
        writes::event(
            ctx,
            pod,
            EventType::Warning,
            "ForeignInstanceId",
            format!(
                "{INSTANCE_ID} names container group {id}, which vk-eci did not create for this pod; the annotation is dropped and the pod gets its own"
            ),
        )
        .await;
        writes::clear_instance(ctx, pod, None).await
    }

    /// Drops event bookkeeping of pods that no longer exist.
    fn forget_gone_pods(&mut self) {
        let live: HashSet<u64> = self
            .controller
            .ctx
            .pods
            .state()
            .iter()
            .filter_map(|p| p.uid())
            .map(|uid| owner_key(&uid))
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
            let phase = pod.phase().unwrap_or("Pending").to_string();
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
