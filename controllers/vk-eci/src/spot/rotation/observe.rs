//! What one step of a rotation needs to know, gathered for its phase only: the doomed pod
//! (cache), the workload's replicas (read from the API server, since the step compares them
//! with a recorded change), the workload's turn, the HPA, a Ready replacement, whether the
//! workload has settled, and for a Pending rotation its storm plan and whether its
//! `spec.workload` really controls its pod.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use vk_eci_core::cache::CachedPod;
use vk_eci_core::crd::{
    SpotRotation, SpotRotationPolicy, SpotRotationStatus, Strategy, TAKE_BACK_FINALIZER,
    WorkloadRef,
};
use vk_eci_core::rotation::{
    DoomedSeen, HpaSeen, Seen, Sibling, holds_surge, hpa, may_scale, phase_of,
};
use vk_eci_core::spot::{
    Doomed, Phase, Plan, PolicySettings, plan_storm, policy_covers, resolve_max_surge,
};
use vk_eci_core::status::CONTAINER_INSTANCE_EXPIRED;
use vk_eci_core::time;

use super::Rotations;
use crate::spot::{Error, to_chrono, workload};

/// The annotation the ReplicaSet controller ranks pods by when it scales down.
pub(super) const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// How long a replacement is expected to take to be Ready when the policy does not say:
/// notices with less time than this left are evicted at once instead of surged.
const EXPECTED_READY: TimeDelta = TimeDelta::seconds(20);
/// Time left to the eviction controller when a surge gives up: evictions blocked by a budget
/// get retried for this long before escalation.
const EVICTION_WINDOW: TimeDelta = TimeDelta::seconds(10);

/// The world as a batch being planned will leave it (see [`vk_eci_core::rotation::batch_extends`]):
/// the workload's replicas once the batch so far is applied, and whether the workload has
/// settled as the rotation that planned the batch saw it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Projection {
    pub replicas: i32,
    pub settled: bool,
}

pub(super) async fn observe(
    rotations: &Rotations,
    rotation: &SpotRotation,
    now: DateTime<Utc>,
    projection: Option<Projection>,
) -> Result<Seen, Error> {
    let spot = &rotations.spot;
    let client = &spot.ctx.client;
    let namespace = rotation.namespace().unwrap_or_default();
    let status = rotation.status.clone().unwrap_or_default();
    let pod = spot.doomed_pod(rotation);
    let deadlines = spot.deadlines(rotation, pod.as_deref());
    let mut seen = Seen::at(now, deadlines);
    seen.give_up_at = give_up_at(rotations, rotation, &status, deadlines.escalate_at);
    seen.doomed = match &pod {
        None => DoomedSeen::Gone,
        Some(pod) if pod.metadata.deletion_timestamp.is_some() => DoomedSeen::Terminating,
        Some(pod) => DoomedSeen::Running {
            deletion_cost: pod
                .annotations()
                .get(DELETION_COST)
                .and_then(|c| c.trim().parse().ok()),
        },
    };
    seen.deleting = rotation.metadata.deletion_timestamp.is_some();
    seen.has_finalizer = rotation
        .finalizers()
        .iter()
        .any(|f| f == TAKE_BACK_FINALIZER);
    if rotation.spec.strategy != Strategy::Surge {
        return Ok(seen);
    }
    let Some(target) = &rotation.spec.workload else {
        seen.not_surgeable = Some("the pod has no workload that can surge".into());
        return Ok(seen);
    };
    let phase = phase_of(&status);
    let pending = phase == Phase::Pending && !seen.deleting;
    if !pending && !holds_surge(&status) {
        return Ok(seen);
    }
    let scale = match projection {
        Some(projected) => Some((projected.replicas, projected.replicas)),
        None => workload::replicas(client, &namespace, target).await?,
    };
    seen.replicas = scale.map(|(wanted, _)| wanted);
    let siblings = siblings(rotations, rotation, target);
    // In a batch, the turn is the planner's: the only changes since it saw the workload free
    // are the batch's own links, written in one change after this one.
    let turn = |mine: &SpotRotationStatus| {
        projection.is_some()
            || may_scale(
                mine,
                siblings.iter().map(|(status, running)| Sibling {
                    status,
                    doomed_running: *running,
                }),
                now,
            )
    };
    seen.may_scale = turn(&SpotRotationStatus::default());
    seen.may_retry = turn(&status);
    let holder = rotation.name_any();
    let held_by = |found: Option<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>| {
        found.map(|hpa| HpaSeen {
            name: hpa.name_any(),
            held_by_me: hpa::holders(&workload::hpa_state(&hpa)).contains(&holder),
        })
    };
    let running = matches!(seen.doomed, DoomedSeen::Running { .. });
    seen.hpa = match &status.hpa_hold {
        Some(hold) if hold.released_at.is_none() => {
            held_by(workload::hpa_named(client, &namespace, &hold.name).await?)
        }
        _ if pending && running => held_by(workload::hpa_of(client, &namespace, target).await?),
        _ => None,
    };
    if pending && running && now < deadlines.escalate_at {
        match not_surgeable(rotations, rotation, pod.as_deref(), target).await? {
            Some(reason) => seen.not_surgeable = Some(reason),
            None => seen.plan = Some(plan(rotations, rotation, target, seen.replicas, now)),
        }
    }
    if phase == Phase::Surging && running {
        seen.replacement = replacement(rotations, rotation, &status).await?;
    }
    if phase == Phase::Draining && status.take_back.is_none() && running {
        seen.settled = match projection {
            Some(projected) => projected.settled,
            None => {
                scale.is_some_and(|(wanted, current)| wanted == current)
                    && siblings_ready(rotations, rotation).await?
            }
        };
    }
    Ok(seen)
}

/// The other rotations of `target`, each with whether its doomed pod still runs.
fn siblings(
    rotations: &Rotations,
    rotation: &SpotRotation,
    target: &WorkloadRef,
) -> Vec<(SpotRotationStatus, bool)> {
    rotations
        .all_fresh()
        .into_iter()
        .filter(|r| r.namespace() == rotation.namespace() && r.name_any() != rotation.name_any())
        .filter(|r| r.spec.workload.as_ref() == Some(target))
        .map(|r| {
            let running = rotations
                .spot
                .doomed_pod(&r)
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none());
            (r.status.clone().unwrap_or_default(), running)
        })
        .collect()
}

/// Why `spec.workload` must not be scaled for this rotation, if it must not: whoever may
/// create a SpotRotation must not make vk-eci scale a workload that does not run the pod.
/// The pod's owner is read from the API server; once it is found to be `spec.workload`,
/// the rotation is remembered as surgeable (see [`waits_for_a_slot`]).
async fn not_surgeable(
    rotations: &Rotations,
    rotation: &SpotRotation,
    pod: Option<&CachedPod>,
    target: &WorkloadRef,
) -> Result<Option<String>, Error> {
    let spot = &rotations.spot;
    let policy = spot.policy_of(rotation);
    if let Some(reason) = refused_by_policy(policy.as_deref(), pod, None) {
        return Ok(Some(reason));
    }
    let Some(pod) = pod else {
        return Ok(Some("the pod is gone".into()));
    };
    let actual = workload::of_pod(&spot.ctx.client, pod).await?;
    if actual.as_ref() != Some(target) {
        return Ok(Some(format!(
            "spec.workload {:?}/{} does not control pod {}",
            target.kind,
            target.name,
            pod.name_any()
        )));
    }
    let refused = refused_by_policy(policy.as_deref(), Some(pod), Some(target));
    if refused.is_none() {
        rotations.remember_surgeable(rotation);
    }
    Ok(refused)
}

/// Why the rotation's policy refuses a surge, from the cache: the policy gone, its
/// `maxSurge` 0, the pod gone, or (given the pod's actual workload) not covered.
fn refused_by_policy(
    policy: Option<&SpotRotationPolicy>,
    pod: Option<&CachedPod>,
    actual: Option<&WorkloadRef>,
) -> Option<String> {
    let Some(policy) = policy else {
        return Some("its policy is gone".into());
    };
    if PolicySettings::of(&policy.spec).max_surge.is_zero() {
        return Some("the policy's maxSurge is 0".into());
    }
    let Some(pod) = pod else {
        return Some("the pod is gone".into());
    };
    match actual {
        Some(actual) if !policy_covers(&policy.spec, pod.labels(), Some(actual)) => Some(format!(
            "policy {} does not cover pod {}",
            policy.name_any(),
            pod.name_any()
        )),
        _ => None,
    }
}

/// Whether `rotation` is a queued notice that can only go on waiting for a surge slot,
/// judged from the cache alone: surgeable as a full observation found it, its doomed pod
/// running, and its policy's surges all taken ([`vk_eci_core::spot::waits_for_a_slot`]).
/// Such a notice neither reads its workload nor takes the workload's turn, so the
/// rotations that free slots (take-backs) never wait behind a queue of notices. Stale
/// cache only ever delays a notice by one retry here; it never decides an action.
pub(super) fn waits_for_a_slot(
    rotations: &Rotations,
    rotation: &SpotRotation,
    now: DateTime<Utc>,
) -> bool {
    let spot = &rotations.spot;
    let queued = rotation.spec.strategy == Strategy::Surge
        && rotation.metadata.deletion_timestamp.is_none()
        && rotation
            .status
            .as_ref()
            .is_none_or(|s| phase_of(s) == Phase::Pending);
    if !queued || !rotations.known_surgeable(rotation) {
        return false;
    }
    let (Some(policy), Some(pod)) = (spot.policy_of(rotation), spot.doomed_pod(rotation)) else {
        return false;
    };
    if pod.metadata.deletion_timestamp.is_some()
        || refused_by_policy(Some(&policy), Some(&pod), rotation.spec.workload.as_ref()).is_some()
    {
        return false;
    }
    let settings = PolicySettings::of(&policy.spec);
    vk_eci_core::spot::waits_for_a_slot(
        &spot.deadlines(rotation, Some(&pod)),
        now,
        settings.readiness_timeout.unwrap_or(EXPECTED_READY),
        holding_surges(&same_policy(rotations, rotation)),
        usize::try_from(settings.max_concurrent).unwrap_or(0),
    )
}

/// The rotations of `rotation`'s policy (itself included), as fresh as this process knows.
fn same_policy(rotations: &Rotations, rotation: &SpotRotation) -> Vec<Arc<SpotRotation>> {
    rotations
        .all_fresh()
        .into_iter()
        .filter(|r| r.namespace() == rotation.namespace() && r.spec.policy == rotation.spec.policy)
        .collect()
}

/// How many of `rotations` hold a surge: what counts against `maxConcurrent`.
fn holding_surges(rotations: &[Arc<SpotRotation>]) -> usize {
    rotations
        .iter()
        .filter(|r| r.status.as_ref().is_some_and(holds_surge))
        .count()
}

/// Plans the pending notices of this rotation's policy; returns this one's plan.
fn plan(
    rotations: &Rotations,
    rotation: &SpotRotation,
    target: &WorkloadRef,
    replicas: Option<i32>,
    now: DateTime<Utc>,
) -> Plan {
    let spot = &rotations.spot;
    let (Some(policy), Some(replicas)) = (spot.policy_of(rotation), replicas) else {
        return Plan::Evict;
    };
    let same_policy = same_policy(rotations, rotation);
    let active = holding_surges(&same_policy);
    let surging_here = same_policy
        .iter()
        .filter(|r| r.status.as_ref().is_some_and(holds_surge))
        .filter(|r| r.spec.workload.as_ref() == Some(target))
        .count();
    let surging_here = i32::try_from(surging_here).unwrap_or(i32::MAX);
    let settings = PolicySettings::of(&policy.spec);
    let budget = resolve_max_surge(&settings.max_surge, replicas.saturating_sub(surging_here))
        .saturating_sub(surging_here);
    let max_concurrent = usize::try_from(settings.max_concurrent).unwrap_or(0);
    let expected_ready = settings.readiness_timeout.unwrap_or(EXPECTED_READY);
    let pending: Vec<Doomed> = same_policy
        .iter()
        .filter(|r| {
            r.status
                .as_ref()
                .is_none_or(|s| phase_of(s) == Phase::Pending)
        })
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .map(|r| Doomed {
            pod: r.name_any(),
            workload: r.spec.workload.clone(),
            deadlines: spot.deadlines(r, spot.doomed_pod(r).as_deref()),
        })
        .collect();
    plan_storm(
        pending,
        now,
        expected_ready,
        |w| if w == target { budget } else { 0 },
        max_concurrent.saturating_sub(active),
    )
    .into_iter()
    .find(|(d, _)| d.pod == rotation.name_any())
    .map_or(Plan::Queue, |(_, plan)| plan)
}

/// When to stop waiting for the replacement: after the policy's `readinessTimeout`, and in
/// any case early enough to leave the eviction controller time to evict politely.
fn give_up_at(
    rotations: &Rotations,
    rotation: &SpotRotation,
    status: &SpotRotationStatus,
    escalate_at: DateTime<Utc>,
) -> DateTime<Utc> {
    let latest = time::sub(escalate_at, EVICTION_WINDOW);
    let timeout = rotations
        .spot
        .policy_of(rotation)
        .and_then(|p| PolicySettings::of(&p.spec).readiness_timeout);
    match (status.surged_at.as_ref().map(to_chrono), timeout) {
        (Some(surged), Some(timeout)) => time::add(surged, timeout).min(latest),
        _ => latest,
    }
}

fn is_ready(pod: &CachedPod) -> bool {
    pod.condition_is_true("Ready") && !under_notice(pod)
}

fn under_notice(pod: &CachedPod) -> bool {
    pod.condition_is_true(CONTAINER_INSTANCE_EXPIRED)
}

/// Whether every pod of the doomed pod's ReplicaSet, other than pods under a notice and
/// pods already going, is Ready.
async fn siblings_ready(rotations: &Rotations, rotation: &SpotRotation) -> Result<bool, Error> {
    let Some((doomed, owner)) = doomed_and_owner(rotations, rotation) else {
        return Ok(true);
    };
    Ok(same_owner(rotations, rotation, &doomed, &owner)
        .await?
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !under_notice(p))
        .all(is_ready))
}

fn doomed_and_owner(
    rotations: &Rotations,
    rotation: &SpotRotation,
) -> Option<(Arc<CachedPod>, String)> {
    let doomed = rotations.spot.doomed_pod(rotation)?;
    let owner = doomed
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())?;
    Some((doomed, owner))
}

/// The pods that share the doomed pod's controller (found by its labels).
async fn same_owner(
    rotations: &Rotations,
    rotation: &SpotRotation,
    doomed: &CachedPod,
    owner: &str,
) -> Result<Vec<CachedPod>, Error> {
    let selector = doomed
        .labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<CachedPod>::namespaced(
        rotations.spot.ctx.client.clone(),
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

/// A Ready replacement: a pod of the doomed pod's ReplicaSet created since the earliest
/// surge the workload still holds, not itself under a notice, and not another rotation's
/// replacement. Since the earliest, not this rotation's own: the surges of one workload
/// share their pods, and another rotation may have taken the one this surge created.
async fn replacement(
    rotations: &Rotations,
    rotation: &SpotRotation,
    status: &SpotRotationStatus,
) -> Result<Option<String>, Error> {
    let Some((doomed, owner)) = doomed_and_owner(rotations, rotation) else {
        return Ok(None);
    };
    let all = rotations.all_fresh();
    let since = all
        .iter()
        .filter(|r| r.namespace() == rotation.namespace())
        .filter(|r| r.spec.workload.is_some() && r.spec.workload == rotation.spec.workload)
        .filter_map(|r| r.status.as_ref())
        .filter(|s| holds_surge(s))
        .filter_map(|s| s.surged_at.as_ref())
        .chain(status.surged_at.as_ref())
        .map(to_chrono)
        .min()
        .map(|t| time::sub(t, TimeDelta::seconds(1)));
    let taken: HashSet<String> = all
        .iter()
        .filter(|r| r.name_any() != rotation.name_any())
        .flat_map(|r| {
            let replacement = r.status.as_ref().and_then(|s| s.replacement_pod.clone());
            replacement.into_iter().chain([r.spec.pod.name.clone()])
        })
        .collect();
    Ok(same_owner(rotations, rotation, &doomed, &owner)
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
