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
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Resource, ResourceExt};
use tracing::warn;
use vk_eci_core::crd::{SpotRotation, Strategy};
use vk_eci_core::rotation::{self, Effect, finished, prunable_by_age};
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
        let turn = self.turn_of(&rotation);
        let _turn = match &turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        // Under the turn, so the previous holder's writes are in `written`.
        let rotation = self.fresh(rotation);
        let now = Utc::now();
        let seen = observe::observe(self, &rotation, now).await?;
        let status = rotation.status.clone().unwrap_or_default();
        let step = rotation::step(&rotation.spec, &status, &seen);
        let changed_phase = step
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Transition { .. } | Effect::Finished { .. }));
        let gone = apply::apply(self, &rotation, &step, &seen).await?;
        if gone {
            self.forget(&rotation);
            return Ok(Action::await_change());
        }
        if changed_phase || (finished(&step.status) && status != step.status) {
            let mut updated = (*rotation).clone();
            updated.status = Some(step.status.clone());
            policy_status::update(self, &updated).await?;
        }
        if rotation.spec.policy.is_none() && finished(&step.status) {
            return self.prune_by_age(&rotation, &step.status).await;
        }
        Ok(match step.requeue_at {
            Some(at) => Action::requeue(until(at, now)),
            None => Action::await_change(),
        })
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
    crate::reconcile::as_leader(&ctx, CONTROLLER, rotations.reconcile(rotation)).await
}

fn error_policy(rotation: Arc<SpotRotation>, error: &Error, _rotations: Arc<Rotations>) -> Action {
    warn!(rotation = %rotation.name_any(), %error, "rotation reconcile failed; retrying");
    Action::requeue(Duration::from_millis(500))
}

/// Runs over the shared rotation stream; pod changes wake the rotation of their pod.
pub async fn run(
    rotations: Arc<Rotations>,
    stream: impl futures::Stream<Item = Arc<SpotRotation>> + Send + 'static,
    pods: impl futures::Stream<Item = Arc<Pod>> + Send + 'static,
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

/// The object reference events about `rotation` go to.
fn reference(rotation: &SpotRotation) -> k8s_openapi::api::core::v1::ObjectReference {
    rotation.object_ref(&())
}
