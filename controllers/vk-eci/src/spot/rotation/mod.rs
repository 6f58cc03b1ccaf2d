//! The SpotRotationPolicy controller: drives each `SpotRotation` through its phases with the
//! pure step of [`vk_eci_core::rotation`]. Each reconcile gathers what the step needs
//! ([`observe`]), takes one step, writes the new status (the intent, guarded by the
//! rotation's resourceVersion) and applies the step's effects ([`apply`]); the next reconcile
//! checks the world against the intent and retries whatever did not happen. The policy's
//! status and its history are kept by [`policy_status`].
//!
//! Rotations of one workload take turns (a lock per workload, held for one reconcile, never
//! across a wait); rotations of different workloads never wait for each other. Anything that
//! has to wait (the workload settling, another rotation's change) requeues instead.

mod apply;
mod observe;
mod policy_status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Resource, ResourceExt};
use tracing::warn;
use vk_eci_core::cache::CachedPod;
use vk_eci_core::crd::{SpotRotation, SpotRotationStatus, Strategy, WorkloadRef};
use vk_eci_core::rotation::{self, Effect, finished, pending, prunable_by_age};
use vk_eci_core::spot::Phase;
use vk_eci_core::status::from_kube_time;
use vk_eci_core::time;

use super::{Error, SpotContext, until};

const CONTROLLER: &str = "spot-rotation";

/// The rotation controller's own state.
pub struct Rotations {
    spot: Arc<SpotContext>,
    /// One lock per workload (`namespace/kind/name`): its rotations take turns.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Rotations as this process last wrote them, for as long as the cache still shows an
    /// older version: decisions about a workload's budget and turn never miss a write.
    written: Mutex<HashMap<String, Written>>,
    /// Pending rotations (by UID) whose `spec.workload` a full observation found to control
    /// their pod, with that workload: while queued they wait without reading it again.
    surgeable: Mutex<HashMap<String, WorkloadRef>>,
}

struct Written {
    /// The versions this write supersedes.
    stale: Vec<String>,
    rotation: Arc<SpotRotation>,
}

fn key_of(rotation: &SpotRotation) -> String {
    format!(
        "{}/{}",
        rotation.namespace().unwrap_or_default(),
        rotation.name_any()
    )
}

impl Rotations {
    pub fn new(spot: Arc<SpotContext>) -> Arc<Self> {
        Arc::new(Self {
            spot,
            turns: Mutex::default(),
            written: Mutex::default(),
            surgeable: Mutex::default(),
        })
    }

    /// `rotation` as this process last wrote it, if the cache is behind.
    fn fresh(&self, rotation: Arc<SpotRotation>) -> Arc<SpotRotation> {
        let Ok(mut written) = self.written.lock() else {
            return rotation;
        };
        let key = key_of(&rotation);
        let version = rotation.resource_version().unwrap_or_default();
        match written.get(&key) {
            Some(w) if w.stale.contains(&version) => w.rotation.clone(),
            Some(_) => {
                written.remove(&key);
                rotation
            }
            None => rotation,
        }
    }

    /// Records a write of `before` that the API server answered with `after`.
    fn remember(&self, before: &SpotRotation, after: SpotRotation) {
        let Ok(mut written) = self.written.lock() else {
            return;
        };
        let key = key_of(before);
        let mut stale = written
            .remove(&key)
            .filter(|w| w.rotation.resource_version() == before.resource_version())
            .map(|w| w.stale)
            .unwrap_or_default();
        stale.push(before.resource_version().unwrap_or_default());
        written.insert(
            key,
            Written {
                stale,
                rotation: Arc::new(after),
            },
        );
    }

    fn forget(&self, rotation: &SpotRotation) {
        if let Ok(mut written) = self.written.lock() {
            written.remove(&key_of(rotation));
        }
    }

    fn remember_surgeable(&self, rotation: &SpotRotation) {
        let (Some(uid), Some(workload)) = (rotation.uid(), rotation.spec.workload.clone()) else {
            return;
        };
        if let Ok(mut surgeable) = self.surgeable.lock() {
            surgeable.insert(uid, workload);
        }
    }

    fn known_surgeable(&self, rotation: &SpotRotation) -> bool {
        let Some(uid) = rotation.uid() else {
            return false;
        };
        self.surgeable.lock().is_ok_and(|s| {
            s.get(&uid)
                .is_some_and(|w| Some(w) == rotation.spec.workload.as_ref())
        })
    }

    /// Forgets that a rotation was found surgeable once it has left the queue.
    fn leave_queue(&self, rotation: &SpotRotation) {
        let pending = rotation.metadata.deletion_timestamp.is_none()
            && rotation
                .status
                .as_ref()
                .is_none_or(|s| rotation::phase_of(s) == Phase::Pending);
        if pending {
            return;
        }
        if let (Some(uid), Ok(mut surgeable)) = (rotation.uid(), self.surgeable.lock()) {
            surgeable.remove(&uid);
        }
    }

    /// Every rotation, each as fresh as this process knows it.
    fn all_fresh(&self) -> Vec<Arc<SpotRotation>> {
        self.spot
            .rotations
            .state()
            .into_iter()
            .map(|r| self.fresh(r))
            .collect()
    }

    fn turn_of(&self, rotation: &SpotRotation) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let workload = rotation.spec.workload.as_ref()?;
        if rotation.spec.strategy != Strategy::Surge {
            return None;
        }
        let key = format!(
            "{}/{:?}/{}",
            rotation.namespace().unwrap_or_default(),
            workload.kind,
            workload.name
        );
        let mut turns = self.turns.lock().ok()?;
        Some(turns.entry(key).or_default().clone())
    }

    async fn reconcile(&self, rotation: Arc<SpotRotation>) -> Result<Action, Error> {
        self.spot.synced().await;
        let cached = self.fresh(rotation.clone());
        self.leave_queue(&cached);
        if observe::waits_for_a_slot(self, &cached, Utc::now()) {
            return Ok(Action::requeue(queue_retry()));
        }
        let turn = self.turn_of(&rotation);
        let _turn = match &turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        // Under the turn, so the previous holder's writes are in `written`.
        let rotation = self.fresh(rotation);
        let now = Utc::now();
        let seen = observe::observe(self, &rotation, now, None).await?;
        let status = rotation.status.clone().unwrap_or_default();
        let step = rotation::step(&rotation.spec, &status, &seen);
        // A batch only while no other rotation of the workload has a change out: its
        // members' links start where this one ends.
        let link = rotation::scale_link(&step)
            .filter(|(from, _)| seen.may_scale && seen.replicas == Some(*from));
        let own = match link {
            Some(_) => without_scale(&step),
            None => step.clone(),
        };
        let gone = apply::apply(self, &rotation, &own, &seen).await?;
        if gone {
            self.forget(&rotation);
            return Ok(Action::await_change());
        }
        self.record(&rotation, &status, &step).await?;
        if let Some((from, to)) = link {
            self.batch(&rotation, from, to, seen.settled, now).await?;
        }
        if rotation.spec.policy.is_none() && finished(&step.status) {
            return self.prune_by_age(&rotation, &step.status).await;
        }
        Ok(match step.requeue_at {
            Some(at) => Action::requeue(until(at, now)),
            None => Action::await_change(),
        })
    }

    /// Keeps the policy's status up to date with a step that changed the rotation's phase
    /// or finished it.
    async fn record(
        &self,
        rotation: &SpotRotation,
        status: &SpotRotationStatus,
        step: &rotation::Step,
    ) -> Result<(), Error> {
        let changed_phase = step
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Transition { .. } | Effect::Finished { .. }));
        if changed_phase || (finished(&step.status) && *status != step.status) {
            let mut updated = rotation.clone();
            updated.status = Some(step.status.clone());
            policy_status::update(self, &updated).await?;
        }
        Ok(())
    }

    /// The turn-holder's one-replica change `from -> to` of the workload, joined by every
    /// other rotation of the workload whose step continues it (surges: the storm plan picks
    /// them within the policy's budget, earliest deadline first; scale-downs: rotations
    /// whose replacements are Ready, their doomed pods marked so the ReplicaSet removes
    /// exactly them). Each member's intent and effects are written first, then the workload
    /// gets one scale change covering every member that got that far.
    async fn batch(
        &self,
        holder: &SpotRotation,
        from: i32,
        mut to: i32,
        settled: bool,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), Error> {
        let Some(target) = holder.spec.workload.clone() else {
            return Ok(());
        };
        let up = to > from;
        let spot = &self.spot;
        let mut members: Vec<Arc<SpotRotation>> = self
            .all_fresh()
            .into_iter()
            .filter(|r| r.namespace() == holder.namespace() && r.name_any() != holder.name_any())
            .filter(|r| r.spec.workload.as_ref() == Some(&target))
            .filter(|r| r.spec.strategy == Strategy::Surge)
            .filter(|r| {
                let status = r.status.clone().unwrap_or_default();
                if up {
                    rotation::phase_of(&status) == Phase::Pending
                        && r.metadata.deletion_timestamp.is_none()
                } else {
                    status.surge.is_some() && status.take_back.is_none()
                }
            })
            .collect();
        members.sort_by_key(|r| spot.deadlines(r, spot.doomed_pod(r).as_deref()).escalate_at);
        for member in members {
            let projection = observe::Projection {
                replicas: to,
                settled,
            };
            let seen = match observe::observe(self, &member, now, Some(projection)).await {
                Ok(seen) => seen,
                Err(error) => {
                    warn!(rotation = %member.name_any(), %error, "cannot join the batch");
                    break;
                }
            };
            let status = member.status.clone().unwrap_or_default();
            let step = rotation::step(&member.spec, &status, &seen);
            let Some((_, end)) =
                rotation::scale_link(&step).filter(|link| rotation::batch_extends(from, to, *link))
            else {
                continue;
            };
            let joined = apply::apply(self, &member, &without_scale(&step), &seen).await;
            if let Err(error) = joined {
                warn!(rotation = %member.name_any(), %error, "cannot join the batch");
                break;
            }
            to = end;
            if let Err(error) = self.record(&member, &status, &step).await {
                warn!(rotation = %member.name_any(), %error, "cannot update the policy status");
            }
        }
        holder_scale(self, holder, &target, from, to).await
    }

    /// A finished rotation of a plain `api-evict` pod (no policy, so no history limit) goes
    /// some time after its pod did.
    async fn prune_by_age(
        &self,
        rotation: &SpotRotation,
        status: &vk_eci_core::crd::SpotRotationStatus,
    ) -> Result<Action, Error> {
        let now = Utc::now();
        if prunable_by_age(status, now) {
            let api: Api<SpotRotation> = Api::namespaced(
                self.spot.ctx.client.clone(),
                &rotation.namespace().unwrap_or_default(),
            );
            match api
                .delete(&rotation.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
            return Ok(Action::await_change());
        }
        let gone_at = status.pod_gone_at.as_ref().map_or(now, from_kube_time);
        Ok(Action::requeue(until(
            time::add(gone_at, rotation::API_EVICT_RETENTION),
            now,
        )))
    }
}

async fn reconcile(
    rotation: Arc<SpotRotation>,
    rotations: Arc<Rotations>,
) -> Result<Action, Error> {
    let ctx = rotations.spot.ctx.clone();
    crate::runtime::reconcile::as_leader(&ctx, CONTROLLER, rotations.reconcile(rotation)).await
}

fn error_policy(rotation: Arc<SpotRotation>, error: &Error, _rotations: Arc<Rotations>) -> Action {
    warn!(rotation = %rotation.name_any(), %error, "rotation reconcile failed; retrying");
    Action::requeue(Duration::from_millis(500))
}

/// Runs over the shared rotation stream; pod changes wake the rotation of their pod.
pub async fn run(
    rotations: Arc<Rotations>,
    stream: impl futures::Stream<Item = Arc<SpotRotation>> + Send + 'static,
    pods: impl futures::Stream<Item = Arc<CachedPod>> + Send + 'static,
    became_leader: impl futures::Stream<Item = ()> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let store = rotations.spot.rotations.clone();
    Controller::for_shared_stream(stream, store)
        .watches_shared_stream(pods, super::rotation_of)
        .reconcile_all_on(became_leader)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, rotations)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn queue_retry() -> Duration {
    pending::QUEUE_RETRY
        .to_std()
        .unwrap_or(Duration::from_secs(1))
}

/// `step` without its scale change: a batch writes the scale once, for all its members.
fn without_scale(step: &rotation::Step) -> rotation::Step {
    let mut step = step.clone();
    step.effects.retain(|e| !matches!(e, Effect::Scale { .. }));
    step
}

async fn holder_scale(
    rotations: &Rotations,
    holder: &SpotRotation,
    target: &WorkloadRef,
    from: i32,
    to: i32,
) -> Result<(), Error> {
    let ctx = &rotations.spot.ctx;
    ctx.leadership.ensure()?;
    let namespace = holder.namespace().unwrap_or_default();
    let wrote = super::workload::scale_from_to(&ctx.client, &namespace, target, from, to).await?;
    tracing::info!(rotation = %holder.name_any(), workload = %target.name, from, to, wrote, "scaled");
    Ok(())
}

/// The object reference events about `rotation` go to.
fn reference(rotation: &SpotRotation) -> k8s_openapi::api::core::v1::ObjectReference {
    rotation.object_ref(&())
}
