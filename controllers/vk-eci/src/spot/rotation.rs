//! The SpotRotationPolicy controller: drives each `SpotRotation` through its phases.
//!
//! Surge: claim the surge (phase `Surging`, written with the rotation's resourceVersion), give
//! the doomed pod the lowest `pod-deletion-cost`, raise an HPA's floor if one scales the
//! workload, scale up by one, wait for a Ready replacement, then (`Draining`) scale back down
//! so the ReplicaSet removes the doomed pod gracefully. Each step records its timestamp, so a
//! new leader never repeats one. A replacement not Ready before the pod must start
//! terminating makes the rotation `Degraded`: the eviction controller takes over, and the
//! surge is taken back once the doomed pod is gone. Notices are planned earliest deadline
//! first within the policy's `maxSurge` and `maxConcurrent`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};
use vk_eci_core::crd::{HpaHold, SpotRotation, SpotRotationPolicy, SpotRotationStatus, Strategy};
use vk_eci_core::spot::{
    Doomed, Observation, Phase, Plan, PolicySettings, next_phase, plan_storm, resolve_max_surge,
};
use vk_eci_core::status::{CONTAINER_INSTANCE_EXPIRED, kube_time};
use vk_eci_core::time;

use super::{Error, SpotContext, to_chrono, until, workload};
use crate::context::FIELD_MANAGER;

const CONTROLLER: &str = "spot-rotation";
/// The pod annotation the ReplicaSet controller ranks pods by when it scales down.
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Doomed pods rank below every other pod for removal...
const DOOMED_COST: i32 = i32::MIN + 1;
/// ...and the one being drained right now below them, so a scale-down removes exactly it.
const DRAINING_COST: i32 = i32::MIN;
/// How long a replacement is expected to take to be Ready when the policy does not say:
/// notices with less time than this left are evicted at once instead of surged.
const EXPECTED_READY: TimeDelta = TimeDelta::seconds(20);
/// Time left to the eviction controller when a surge gives up: evictions blocked by a budget
/// get retried for this long before escalation.
const EVICTION_WINDOW: TimeDelta = TimeDelta::seconds(10);

/// The rotation controller's own state: surges claimed by this process that the cache may
/// not show yet, so two concurrent plans never spend the same budget.
pub struct Rotations {
    spot: Arc<SpotContext>,
    claimed: Mutex<HashSet<String>>,
    /// Surges and scale-downs take turns (see the Draining step).
    planning: tokio::sync::Mutex<()>,
    /// Replacement pods this process has given to a rotation (the cache may lag).
    replacements: Mutex<HashSet<String>>,
}

impl Rotations {
    pub fn new(spot: Arc<SpotContext>) -> Arc<Self> {
        Arc::new(Self {
            spot,
            claimed: Mutex::default(),
            planning: tokio::sync::Mutex::new(()),
            replacements: Mutex::default(),
        })
    }
}

fn phase_of(rotation: &SpotRotation) -> Phase {
    rotation
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(Phase::Pending)
}

/// Completed and Failed are final; Degraded is once the doomed pod is gone.
fn finished(rotation: &SpotRotation) -> bool {
    let status = rotation.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or(Phase::Pending);
    phase.is_finished() || (phase == Phase::Degraded && status.pod_gone_at.is_some())
}

/// Holds an active surge (scaled up, not yet scaled back).
fn holds_surge(rotation: &SpotRotation) -> bool {
    rotation.status.as_ref().is_some_and(|s| {
        matches!(
            s.phase,
            Some(Phase::Surging | Phase::Draining | Phase::Degraded)
        ) && s.scaled_down_at.is_none()
    })
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && !conditions.is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == CONTAINER_INSTANCE_EXPIRED && c.status == "True")
        })
}

impl Rotations {
    async fn reconcile(&self, rotation: &SpotRotation) -> Result<Action, Error> {
        let spot = &self.spot;
        let now = Utc::now();
        let name = rotation.name_any();
        let status = rotation.status.clone().unwrap_or_default();
        let phase = phase_of(rotation);
        let pod = spot.doomed_pod(rotation);
        let deadlines = spot.deadlines(rotation, pod.as_deref());
        let mut next = status.clone();
        let surge = rotation.spec.strategy == Strategy::Surge;

        if finished(rotation) {
            if self.take_back_surge(rotation).await? {
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
            if let Ok(mut claimed) = self.claimed.lock() {
                claimed.remove(&name);
            }
            if let (Some(replacement), Ok(mut chosen)) =
                (&status.replacement_pod, self.replacements.lock())
            {
                chosen.remove(replacement);
            }
            self.update_policy(rotation).await?;
            return Ok(Action::await_change());
        }

        let alive = pod
            .as_ref()
            .filter(|p| p.metadata.deletion_timestamp.is_none());
        let past_escalation = now >= deadlines.escalate_at;
        match (surge, phase) {
            (false, Phase::Pending) => next.phase = Some(Phase::Draining),
            (true, Phase::Pending) if alive.is_some() && !past_escalation => {
                let _planning = self.planning.lock().await;
                match self.plan(rotation, now).await? {
                    Plan::Surge => {
                        next.phase = Some(Phase::Surging);
                        next.message = Some("surging a replacement".into());
                        self.write_status(rotation, &status, &next).await?;
                        if let Ok(mut claimed) = self.claimed.lock() {
                            claimed.insert(name.clone());
                        }
                        return Ok(Action::requeue(Duration::from_millis(100)));
                    }
                    Plan::Queue => return Ok(Action::requeue(Duration::from_secs(1))),
                    Plan::Evict => {
                        next.phase = Some(Phase::Degraded);
                        next.message = Some(
                            "no surge capacity in time for this notice; evicting instead".into(),
                        );
                    }
                }
            }
            (true, Phase::Surging) if next.surged_at.is_none() => {
                let _turn = self.planning.lock().await;
                if let Some(pod) = alive {
                    self.surge(rotation, pod).await?;
                    return Ok(Action::requeue(Duration::from_millis(100)));
                }
            }
            (true, Phase::Surging) => {
                // Under the turn, so two rotations never pick the same replacement while the
                // cache has yet to show the other's choice.
                let _turn = self.planning.lock().await;
                if let Some(replacement) = self.replacement(rotation, &status).await? {
                    if let Ok(mut chosen) = self.replacements.lock() {
                        chosen.insert(replacement.clone());
                    }
                    info!(rotation = %name, replacement = %replacement, "replacement Ready; draining the doomed pod");
                    next.replacement_pod = Some(replacement);
                    next.replacement_ready_at = Some(kube_time(now));
                    next.phase = Some(Phase::Draining);
                    next.message = Some("replacement Ready; scaling back down".into());
                    self.spot.ctx.metrics.notice_to_replacement_ready.observe(
                        (now - to_chrono(&rotation.spec.noticed_at)).num_milliseconds() as f64
                            / 1000.0,
                    );
                } else if now >= self.give_up_at(rotation, &status, deadlines.escalate_at) {
                    next.phase = Some(Phase::Degraded);
                    next.message =
                        Some("no Ready replacement in time; evicting the doomed pod".into());
                }
            }
            (true, Phase::Draining) if next.scaled_down_at.is_none() => {
                // A ReplicaSet scaling down removes unready pods before deletion cost counts,
                // and a scale-down that overlaps a surge cancels it instead of removing the
                // doomed pod. So surges and scale-downs take turns, and a scale-down waits
                // until the workload runs every pod it asked for and none is still starting.
                let _turn = self.planning.lock().await;
                if !self.siblings_ready(rotation).await? || !self.settled(rotation).await? {
                    return Ok(Action::requeue(Duration::from_millis(300)));
                }
                if let Some(pod) = alive {
                    self.mark_draining(rotation, pod).await?;
                }
                self.take_back_surge(rotation).await?;
                self.await_doomed_going(rotation).await?;
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
            _ => {}
        }

        let seen = Observation {
            surged: next.surged_at.is_some(),
            replacement_ready: next.replacement_ready_at.is_some(),
            doomed_gone: pod.is_none(),
            doomed_terminating: pod
                .as_ref()
                .is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
            past_escalation,
            released: now >= deadlines.release_at,
        };
        let current = next.phase.unwrap_or(phase);
        let mut upcoming = next_phase(current, seen);
        if surge && upcoming == Phase::Draining && past_escalation && alive.is_some() {
            upcoming = Phase::Degraded;
            next.message =
                Some("the workload did not remove the doomed pod in time; evicting it".into());
        } else if upcoming == Phase::Degraded && current != Phase::Degraded {
            next.message = Some("no Ready replacement in time; evicting the doomed pod".into());
        }
        if upcoming == Phase::Failed && current != Phase::Failed {
            next.message = Some("the instance was released while the pod still ran".into());
        }
        next.phase = Some(upcoming);
        if pod.is_none() && next.pod_gone_at.is_none() {
            next.pod_gone_at = Some(kube_time(now));
            if upcoming == Phase::Completed {
                next.message = Some("rotated before the release".into());
            }
            self.spot.ctx.metrics.notice_to_pod_gone.observe(
                (now - to_chrono(&rotation.spec.noticed_at)).num_milliseconds() as f64 / 1000.0,
            );
        }
        let changed_phase = next.phase != status.phase;
        self.write_status(rotation, &status, &next).await?;
        if changed_phase {
            self.record_transition(rotation, &next, now, deadlines.release_at)
                .await;
            self.update_policy(rotation).await?;
        }
        Ok(Action::requeue(
            until(deadlines.escalate_at, now).min(Duration::from_secs(1)),
        ))
    }

    /// When to stop waiting for the replacement: after the policy's `readinessTimeout`, and in
    /// any case early enough to leave the eviction controller time to evict politely.
    fn give_up_at(
        &self,
        rotation: &SpotRotation,
        status: &SpotRotationStatus,
        escalate_at: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let latest = time::sub(escalate_at, EVICTION_WINDOW);
        let timeout = self
            .spot
            .policy_of(rotation)
            .and_then(|p| PolicySettings::of(&p.spec).readiness_timeout);
        match (status.surged_at.as_ref().map(to_chrono), timeout) {
            (Some(surged), Some(timeout)) => time::add(surged, timeout).min(latest),
            _ => latest,
        }
    }

    /// Plans the pending notices of this rotation's policy; returns this one's plan.
    async fn plan(&self, rotation: &SpotRotation, now: DateTime<Utc>) -> Result<Plan, Error> {
        let spot = &self.spot;
        let (Some(policy), Some(target)) = (spot.policy_of(rotation), &rotation.spec.workload)
        else {
            return Ok(Plan::Evict);
        };
        let namespace = rotation.namespace().unwrap_or_default();
        let same_policy: Vec<Arc<SpotRotation>> = spot
            .rotations
            .state()
            .into_iter()
            .filter(|r| {
                r.namespace() == rotation.namespace() && r.spec.policy == rotation.spec.policy
            })
            .collect();
        let claimed = self.claimed.lock().map(|c| c.clone()).unwrap_or_default();
        let holding = |r: &SpotRotation| holds_surge(r) || claimed.contains(&r.name_any());
        let active = same_policy.iter().filter(|r| holding(r)).count();
        let surging_here = same_policy
            .iter()
            .filter(|r| holding(r) && r.spec.workload.as_ref() == Some(target))
            .count();
        let surging_here = i32::try_from(surging_here).unwrap_or(i32::MAX);
        let replicas = workload::scale_by(&spot.ctx.client, &namespace, target, 0).await?;
        let settings = PolicySettings::of(&policy.spec);
        let budget = resolve_max_surge(&settings.max_surge, replicas.saturating_sub(surging_here))
            .saturating_sub(surging_here);
        let max_concurrent = usize::try_from(settings.max_concurrent).unwrap_or(0);
        let expected_ready = settings.readiness_timeout.unwrap_or(EXPECTED_READY);
        let pending: Vec<Doomed> = same_policy
            .iter()
            .filter(|r| phase_of(r) == Phase::Pending && !claimed.contains(&r.name_any()))
            .map(|r| Doomed {
                pod: r.name_any(),
                workload: r
                    .spec
                    .workload
                    .as_ref()
                    .map(|w| format!("{:?}/{}", w.kind, w.name)),
                deadlines: spot.deadlines(r, spot.doomed_pod(r).as_deref()),
            })
            .collect();
        let key = format!("{:?}/{}", target.kind, target.name);
        let plans = plan_storm(
            pending,
            now,
            expected_ready,
            |w| if w == key { budget } else { 0 },
            max_concurrent.saturating_sub(active),
        );
        Ok(plans
            .into_iter()
            .find(|(d, _)| d.pod == rotation.name_any())
            .map_or(Plan::Queue, |(_, plan)| plan))
    }

    /// Scales the workload up by one for this rotation, once. The intent (`surgedAt`, and the
    /// HPA floor to restore) is written first with the rotation's resourceVersion: a reconcile
    /// working from a stale cache fails there instead of surging twice.
    async fn surge(&self, rotation: &SpotRotation, pod: &Pod) -> Result<(), Error> {
        let client = &self.spot.ctx.client;
        let namespace = rotation.namespace().unwrap_or_default();
        let Some(target) = &rotation.spec.workload else {
            return Ok(());
        };
        let current = workload::scale_by(client, &namespace, target, 0).await?;
        let hpa = workload::hpa_of(client, &namespace, target).await?;
        let status = rotation.status.clone().unwrap_or_default();
        let intent = SpotRotationStatus {
            surged_at: Some(kube_time(Utc::now())),
            hpa_hold: hpa.as_ref().map(|hpa| HpaHold {
                name: hpa.name_any(),
                min_replicas: hpa.spec.as_ref().and_then(|s| s.min_replicas).unwrap_or(1),
            }),
            ..status.clone()
        };
        self.write_status(rotation, &status, &intent).await?;
        let cost = json!({
            "metadata": {
                "uid": pod.uid(),
                "annotations": { DELETION_COST: DOOMED_COST.to_string() },
            }
        });
        Api::<Pod>::namespaced(client.clone(), &namespace)
            .patch(&pod.name_any(), &params(), &Patch::Merge(&cost))
            .await?;
        if let Some(hpa) = &hpa {
            // The HPA would undo a surge above its own computation: hold its floor at the
            // surged size until the rotation takes the surge back.
            workload::hold_hpa(client, &namespace, hpa, current.saturating_add(1)).await?;
        }
        let replicas = workload::scale_by(client, &namespace, target, 1).await?;
        info!(rotation = %rotation.name_any(), workload = %target.name, replicas, "surged");
        Ok(())
    }

    /// Scales back down by one and gives an HPA its own floor back, once (intent first, as
    /// for the surge). Returns whether it acted.
    async fn take_back_surge(&self, rotation: &SpotRotation) -> Result<bool, Error> {
        let status = rotation.status.clone().unwrap_or_default();
        if status.surged_at.is_none() || status.scaled_down_at.is_some() {
            return Ok(false);
        }
        let intent = SpotRotationStatus {
            scaled_down_at: Some(kube_time(Utc::now())),
            ..status.clone()
        };
        self.write_status(rotation, &status, &intent).await?;
        let client = &self.spot.ctx.client;
        let namespace = rotation.namespace().unwrap_or_default();
        if let Some(target) = &rotation.spec.workload {
            match workload::scale_by(client, &namespace, target, -1).await {
                Ok(_) => {}
                Err(Error::Kube(kube::Error::Api(status))) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        if let Some(hold) = &status.hpa_hold {
            workload::release_hpa(client, &namespace, hold).await?;
        }
        Ok(true)
    }

    /// Whether the workload runs as many pods as it was last asked for.
    async fn settled(&self, rotation: &SpotRotation) -> Result<bool, Error> {
        let Some(target) = &rotation.spec.workload else {
            return Ok(true);
        };
        let (wanted, running) = workload::replicas(
            &self.spot.ctx.client,
            &rotation.namespace().unwrap_or_default(),
            target,
        )
        .await?;
        Ok(wanted == running)
    }

    /// Gives the doomed pod the lowest deletion cost of all, right before the scale-down.
    async fn mark_draining(&self, rotation: &SpotRotation, pod: &Pod) -> Result<(), Error> {
        let patch = json!({
            "metadata": {
                "uid": pod.uid(),
                "annotations": { DELETION_COST: DRAINING_COST.to_string() },
            }
        });
        Api::<Pod>::namespaced(
            self.spot.ctx.client.clone(),
            &rotation.namespace().unwrap_or_default(),
        )
        .patch(&pod.name_any(), &params(), &Patch::Merge(&patch))
        .await?;
        Ok(())
    }

    /// Waits (briefly) until the scale-down has begun removing the doomed pod, so the next
    /// scale-down cannot pick it again.
    async fn await_doomed_going(&self, rotation: &SpotRotation) -> Result<(), Error> {
        let api = Api::<Pod>::namespaced(
            self.spot.ctx.client.clone(),
            &rotation.namespace().unwrap_or_default(),
        );
        for _ in 0..30 {
            let going = api
                .get_opt(&rotation.spec.pod.name)
                .await?
                .filter(|p| p.uid().as_deref() == Some(rotation.spec.pod.uid.as_str()))
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
            if going {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Whether every pod of the doomed pod's ReplicaSet, other than pods under a notice and
    /// pods already going, is Ready.
    async fn siblings_ready(&self, rotation: &SpotRotation) -> Result<bool, Error> {
        let Some((doomed, owner)) = self.doomed_and_owner(rotation) else {
            return Ok(true);
        };
        Ok(self
            .same_owner(rotation, &doomed, &owner)
            .await?
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                !p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == CONTAINER_INSTANCE_EXPIRED && c.status == "True")
                    })
            })
            .all(is_ready))
    }

    fn doomed_and_owner(&self, rotation: &SpotRotation) -> Option<(Arc<Pod>, String)> {
        let doomed = self.spot.doomed_pod(rotation)?;
        let owner = doomed
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone())?;
        Some((doomed, owner))
    }

    /// The pods that share the doomed pod's controller (found by its labels).
    async fn same_owner(
        &self,
        rotation: &SpotRotation,
        doomed: &Pod,
        owner: &str,
    ) -> Result<Vec<Pod>, Error> {
        let selector = doomed
            .labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods = Api::<Pod>::namespaced(
            self.spot.ctx.client.clone(),
            &rotation.namespace().unwrap_or_default(),
        )
        .list(&ListParams::default().labels(&selector))
        .await?;
        Ok(pods
            .items
            .into_iter()
            .filter(|p| p.uid() != doomed.uid())
            .filter(|p| p.owner_references().iter().any(|o| o.uid == owner))
            .collect())
    }

    /// A Ready replacement: a pod of the doomed pod's ReplicaSet created since the surge,
    /// not itself under a notice, and not another rotation's replacement.
    async fn replacement(
        &self,
        rotation: &SpotRotation,
        status: &SpotRotationStatus,
    ) -> Result<Option<String>, Error> {
        let Some((doomed, owner)) = self.doomed_and_owner(rotation) else {
            return Ok(None);
        };
        let since = status
            .surged_at
            .as_ref()
            .map(|t| time::sub(to_chrono(t), TimeDelta::seconds(1)));
        let mut taken: HashSet<String> = self
            .spot
            .rotations
            .state()
            .iter()
            .filter(|r| r.name_any() != rotation.name_any())
            .flat_map(|r| {
                let replacement = r.status.as_ref().and_then(|s| s.replacement_pod.clone());
                replacement.into_iter().chain([r.spec.pod.name.clone()])
            })
            .collect();
        if let Ok(chosen) = self.replacements.lock() {
            taken.extend(chosen.iter().cloned());
        }
        Ok(self
            .same_owner(rotation, &doomed, &owner)
            .await?
            .into_iter()
            .filter(|p| !taken.contains(&p.name_any()))
            .filter(|p| {
                let created = p.creation_timestamp().map(|t| to_chrono(&t));
                since.is_none_or(|since| created.is_some_and(|c| c >= since))
            })
            .find(is_ready)
            .map(|p| p.name_any()))
    }

    async fn write_status(
        &self,
        rotation: &SpotRotation,
        before: &SpotRotationStatus,
        next: &SpotRotationStatus,
    ) -> Result<(), Error> {
        if before == next && rotation.status.is_some() {
            return Ok(());
        }
        let patch = json!({
            "metadata": { "resourceVersion": rotation.resource_version() },
            "status": next,
        });
        Api::<SpotRotation>::namespaced(
            self.spot.ctx.client.clone(),
            &rotation.namespace().unwrap_or_default(),
        )
        .patch_status(&rotation.name_any(), &params(), &Patch::Merge(&patch))
        .await?;
        Ok(())
    }

    async fn record_transition(
        &self,
        rotation: &SpotRotation,
        status: &SpotRotationStatus,
        now: DateTime<Utc>,
        release_at: DateTime<Utc>,
    ) {
        let Some(phase) = status.phase else {
            return;
        };
        let metrics = &self.spot.ctx.metrics;
        if matches!(phase, Phase::Completed | Phase::Degraded | Phase::Failed)
            && (phase != Phase::Degraded || status.pod_gone_at.is_some())
        {
            metrics.rotation_finished(phase, now <= release_at);
        }
        let kind = if matches!(phase, Phase::Degraded | Phase::Failed) {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let event = Event {
            type_: kind,
            reason: format!("Rotation{phase:?}"),
            note: Some(format!(
                "{}: {}",
                rotation.spec.pod.name,
                status.message.clone().unwrap_or_default()
            )),
            action: "Rotate".into(),
            secondary: None,
        };
        let ctx = &self.spot.ctx;
        if let Err(error) = ctx
            .recorder
            .publish(&event, &rotation.object_ref(&()))
            .await
        {
            warn!(%error, "cannot publish the rotation event");
        }
        if let Some(policy) = self.spot.policy_of(rotation)
            && let Err(error) = ctx.recorder.publish(&event, &policy.object_ref(&())).await
        {
            warn!(%error, "cannot publish the policy event");
        }
    }

    /// Aggregates the policy's rotations into its status, and prunes finished ones beyond
    /// its history limit.
    async fn update_policy(&self, rotation: &SpotRotation) -> Result<(), Error> {
        let Some(policy) = self.spot.policy_of(rotation) else {
            return Ok(());
        };
        let namespace = policy.namespace().unwrap_or_default();
        let mut rotations: Vec<Arc<SpotRotation>> = self
            .spot
            .rotations
            .state()
            .into_iter()
            .filter(|r| r.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|r| r.spec.policy.as_deref() == Some(policy.name_any().as_str()))
            .collect();
        // The cache may not show this rotation's newest phase yet.
        if let Some(slot) = rotations
            .iter_mut()
            .find(|r| r.name_any() == rotation.name_any())
        {
            *slot = Arc::new(rotation.clone());
        }
        let count = |phase: Phase| rotations.iter().filter(|r| phase_of(r) == phase).count() as i32;
        let active = rotations.iter().filter(|r| !finished(r)).count() as i32;
        let last = rotations
            .iter()
            .map(|r| to_chrono(&r.spec.noticed_at))
            .max()
            .map(kube_time);
        let troubled = count(Phase::Failed) + count(Phase::Degraded);
        let condition = Condition {
            type_: "RotationsHealthy".into(),
            status: if troubled == 0 { "True" } else { "False" }.into(),
            reason: if troubled == 0 {
                "AllRotated".into()
            } else {
                "SomeDegradedOrFailed".into()
            },
            message: format!(
                "{} completed, {} degraded, {} failed",
                count(Phase::Completed),
                count(Phase::Degraded),
                count(Phase::Failed)
            ),
            last_transition_time: policy
                .status
                .as_ref()
                .and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == "RotationsHealthy")
                        .filter(|c| (c.status == "True") == (troubled == 0))
                        .map(|c| c.last_transition_time.clone())
                })
                .unwrap_or_else(|| kube_time(Utc::now())),
            observed_generation: policy.metadata.generation,
        };
        let patch = json!({
            "status": {
                "observedGeneration": policy.metadata.generation,
                "active": active,
                "completed": count(Phase::Completed),
                "degraded": count(Phase::Degraded),
                "failed": count(Phase::Failed),
                "lastRotationTime": last,
                "conditions": [condition],
            }
        });
        let policies: Api<SpotRotationPolicy> =
            Api::namespaced(self.spot.ctx.client.clone(), &namespace);
        policies
            .patch_status(&policy.name_any(), &params(), &Patch::Merge(&patch))
            .await?;

        let keep = usize::try_from(PolicySettings::of(&policy.spec).history_limit).unwrap_or(0);
        let mut done: Vec<&Arc<SpotRotation>> = rotations.iter().filter(|r| finished(r)).collect();
        done.sort_by_key(|r| std::cmp::Reverse(to_chrono(&r.spec.noticed_at)));
        let api: Api<SpotRotation> = Api::namespaced(self.spot.ctx.client.clone(), &namespace);
        for old in done.into_iter().skip(keep) {
            match api.delete(&old.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

async fn reconcile(
    rotation: Arc<SpotRotation>,
    rotations: Arc<Rotations>,
) -> Result<Action, Error> {
    let ctx = rotations.spot.ctx.clone();
    crate::reconcile::as_leader(&ctx, CONTROLLER, rotations.reconcile(&rotation)).await
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
