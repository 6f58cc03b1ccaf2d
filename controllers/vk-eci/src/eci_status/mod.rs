//! The ECI status sync: ECI → pod status, batched. Each pass asks ECI what changed in the
//! last minute (DescribeContainerGroupStatus and DescribeContainerGroupEvents with
//! `SinceSecond`: one page each in the steady state), fetches only the groups whose record
//! differs from the one last applied (DescribeContainerGroups by id, 20 per call) and
//! patches only pods whose status differs ([`apply`]). Every minute (less often on a node of
//! more than 2,000 groups: [`full_pass_interval`]) a full pass (no
//! `SinceSecond`) catches anything missed, checks that every pod's recorded group still
//! exists ([`recorded`]) and runs the [`crate::orphan_gc`] over its listing. Deleted pods
//! whose groups were stopping are removed once the groups are gone ([`terminating`]); the
//! pod lifecycle controller says which through the [`handoff`]. API calls per pass grow
//! with pages of changes, never with pods.
//!
//! Safety (design §8a): nothing destructive runs before the pod cache has synced in this
//! leadership term; a pod whose group vanished (confirmed by a describe by id) stops showing
//! Running/Ready.

mod apply;
pub mod handoff;
mod recorded;
mod terminating;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eci_types::wire::{
    ContainerGroup, ContainerGroupStatus, DescribeContainerGroupEventsRequest,
    DescribeContainerGroupStatusRequest, Tag, status,
};
use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tokio::time::Instant;
use tracing::{debug, warn};
use vk_eci_core::cache::CachedPod;
use vk_eci_core::lifecycle::{SyncPacing, full_pass_interval};
use vk_eci_core::ownership::tagged_pod;
use vk_eci_core::translate::tags;

use crate::orphan_gc::OrphanGc;
use crate::pod_lifecycle::Error;
use crate::pod_lifecycle::groups::{self, IDS_PER_CALL};
use crate::runtime::context::Context;
use crate::runtime::liveness::Beat;
use handoff::Inbox;

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
    /// How often a full pass runs on a small node ([`FULL_EVERY`] by default; see
    /// [`full_pass_interval`]).
    pub full_every: Duration,
    /// Beats for the liveness probe.
    pub beat: Beat,
}

pub struct StatusSync {
    ctx: Arc<Context>,
    inbox: Inbox,
    seen: HashMap<String, Seen>,
    /// ECI event counts already mirrored, by event key, by pod UID ([`owner_key`]); pods
    /// gone from the cache are dropped each full pass.
    reported: Mutex<HashMap<u64, HashMap<u64, i64>>>,
    last_full: Option<Instant>,
    full_every: Duration,
    orphans: OrphanGc,
    /// The pod UID (hashed) each group's tags name, as last fetched: a pod whose annotation
    /// names a group of another pod is found without describing every group each pass.
    owners: HashMap<String, u64>,
    pacing: SyncPacing,
    beat: Beat,
}

impl StatusSync {
    /// The sync of `ctx`'s node, told about creates and deletes through `inbox`.
    pub fn new(ctx: Arc<Context>, inbox: Inbox, config: StatusSyncConfig) -> Self {
        let StatusSyncConfig { full_every, beat } = config;
        Self {
            orphans: OrphanGc::new(ctx.clone()),
            ctx,
            inbox,
            seen: HashMap::new(),
            reported: Mutex::default(),
            last_full: None,
            full_every,
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
        let ctx = self.ctx.clone();
        let mut leadership = ctx.leadership.clone();
        loop {
            self.beat.beat();
            if !leadership.is_leader() {
                tokio::select! {
                    () = leadership.acquired() => {}
                    () = tokio::time::sleep(STANDBY_BEAT) => continue,
                }
                self.last_full = None;
                self.orphans.forget_suspects();
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
                () = self.inbox.woken() => {}
                () = leadership.lost() => {}
            }
        }
    }

    fn filter_tags(&self) -> Vec<Tag> {
        let settings = &self.ctx.settings;
        vec![
            Tag::new(tags::CLUSTER_ID, settings.cluster_id.clone()),
            Tag::new(tags::NODE, settings.node_name.clone()),
        ]
    }

    /// One pass; returns the pause before the next.
    async fn pass(&mut self) -> Result<Duration, Error> {
        let ctx = self.ctx.clone();
        let full_every = full_pass_interval(self.full_every, self.seen.len());
        let full = self.last_full.is_none_or(|at| at.elapsed() >= full_every);
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
            let listed: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
            self.orphans.collect(&listed).await?;
            self.forget_gone_pods();
            self.last_full = Some(Instant::now());
        }
        self.count_pods();

        let busy = fetched_any_transitioning
            || self.seen.values().any(|s| s.transitioning)
            || self.inbox.has_terminating();
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
        let ctx = &self.ctx;
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
        groups::describe(&self.ctx, ids).await
    }

    fn note_owners(&mut self, groups: &[ContainerGroup]) {
        let settings = &self.ctx.settings;
        for group in groups {
            if let Some(tagged) = tagged_pod(group, &settings.cluster_id, &settings.node_name) {
                self.owners
                    .insert(group.container_group_id.clone(), owner_key(tagged.uid));
            }
        }
    }

    /// The cached pod a group belongs to.
    fn pod_of(&self, group: &ContainerGroup) -> Option<Arc<CachedPod>> {
        let settings = &self.ctx.settings;
        let tagged = tagged_pod(group, &settings.cluster_id, &settings.node_name)?;
        self.ctx
            .pods
            .get(&ObjectRef::new(tagged.name).within(tagged.namespace))
            .filter(|pod| pod.uid().as_deref() == Some(tagged.uid))
    }

    /// Drops event bookkeeping of pods that no longer exist.
    fn forget_gone_pods(&mut self) {
        let live: HashSet<u64> = self
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
        let pods = self.ctx.pods.state();
        let mut by_phase: HashMap<&str, i64> = ["Pending", "Running", "Succeeded", "Failed"]
            .into_iter()
            .map(|p| (p, 0))
            .collect();
        for pod in &pods {
            *by_phase
                .entry(pod.phase().unwrap_or("Pending"))
                .or_default() += 1;
        }
        for (phase, count) in by_phase {
            let phase = phase.to_string();
            self.ctx
                .metrics
                .pods
                .get_or_create(&crate::runtime::metrics::PhaseLabels { phase })
                .set(count);
        }
    }
}
