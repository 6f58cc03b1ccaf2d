//! The ECI status sync: ECI → pod status, batched. Each pass asks ECI what changed in the
//! last minute (DescribeContainerGroupStatus and DescribeContainerGroupEvents with
//! `SinceSecond`: one page each in the steady state), fetches only the groups whose record
//! differs from the one last applied (DescribeContainerGroups by id, 20 per call) and
//! patches only pods whose status differs ([`apply`]). Every minute (less often on a node of
//! more than 2,000 groups: [`full_pass_interval`]) a full pass (no
//! `SinceSecond`) catches anything missed, checks that every pod's recorded group still
//! exists ([`recorded`]) and runs the [`crate::orphan_gc`] over its listing; the listing
//! itself runs beside the incremental passes ([`listing`]), which it would otherwise hold
//! up for as long as it takes to page through the node. Deleted pods
//! whose groups were stopping are removed once the groups are gone ([`terminating`]); the
//! pod lifecycle controller says which through the [`handoff`]. API calls per pass grow
//! with pages of changes, never with pods.
//!
//! Safety (design §8a): nothing destructive runs before the pod cache has synced in this
//! leadership term; a pod whose group vanished (confirmed by a describe by id) stops showing
//! Running/Ready.

mod apply;
pub mod handoff;
mod listing;
mod recorded;
mod terminating;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eci_types::wire::{ContainerGroup, DescribeContainerGroupStatusRequest, Tag};
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
use listing::{FullListing, Listing, Seen, changes, forget_unlisted, transitioning};

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

/// A pod UID as the owner and event maps keep it (8 bytes, not the 36-byte string).
fn owner_key(uid: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    uid.hash(&mut hasher);
    hasher.finish()
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
    /// How many listings have begun ([`Listing::number`]).
    listings: u32,
    full_listing: Option<FullListing>,
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
            listings: 0,
            full_listing: None,
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
                self.full_listing = None;
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

    /// This node's groups (those changed in the last `since_second`, when given).
    fn filter(&self, since_second: Option<i64>) -> DescribeContainerGroupStatusRequest {
        let settings = &self.ctx.settings;
        DescribeContainerGroupStatusRequest {
            tag: vec![
                Tag::new(tags::CLUSTER_ID, settings.cluster_id.clone()),
                Tag::new(tags::NODE, settings.node_name.clone()),
            ],
            since_second,
            limit: Some(STATUS_PAGE),
            ..DescribeContainerGroupStatusRequest::default()
        }
    }

    fn next_listing_number(&mut self) -> u32 {
        self.listings = self.listings.saturating_add(1);
        self.listings
    }

    /// What this pass works from: a full listing that has finished, or else the changes of
    /// the last minute (with a full listing started beside them when one is due).
    async fn listing(&mut self) -> Result<Listing, Error> {
        if let Some(full) = self.full_listing.as_mut()
            && let Some(finished) = full.finished().await
        {
            self.full_listing = None;
            match finished {
                Ok(listing) => return Ok(listing),
                Err(error) => warn!(%error, "full status listing failed; started again"),
            }
        }
        let full_every = full_pass_interval(self.full_every, self.seen.len());
        if self.full_listing.is_none() && self.last_full.is_none_or(|at| at.elapsed() >= full_every)
        {
            let number = self.next_listing_number();
            self.full_listing = Some(FullListing::start(
                self.ctx.clone(),
                self.filter(None),
                number,
                PASS_TIMEOUT,
            ));
        }
        let number = self.next_listing_number();
        Ok(listing::list(&self.ctx, &self.filter(Some(SINCE_SECONDS)), number).await?)
    }

    /// One pass; returns the pause before the next.
    async fn pass(&mut self) -> Result<Duration, Error> {
        let listing = self.listing().await?;
        let changes = changes(&self.seen, &listing);
        let mut pending = changes.pending;
        if listing.full {
            forget_unlisted(&mut self.seen, &listing);
            let listed: HashSet<&str> = listing.records.iter().map(|r| r.id.as_str()).collect();
            let seen = &self.seen;
            self.owners
                .retain(|id, _| listed.contains(id.as_str()) || seen.contains_key(id));
        }

        self.finish_terminating().await;

        // Unchanged records are applied already: remember them now; changed ones once applied.
        for (id, next) in pending.iter() {
            if !changes.changed.contains(id) {
                self.seen.insert(id.clone(), *next);
            }
        }
        let ids: Vec<String> = changes.changed.into_iter().collect();
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

        if listing.full {
            self.verify_recorded_instances(&listing).await?;
            let listed: Vec<&str> = listing.records.iter().map(|r| r.id.as_str()).collect();
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
