//! One step of a `SpotRotation`: `step(spec, status, seen) -> Step`, a pure function of the
//! rotation, what the controller observed of the world this round, and the time (in
//! [`Seen::now`]). The controller only gathers [`Seen`], writes [`Step::status`] (the intent,
//! guarded by the rotation's resourceVersion) and then applies [`Step::effects`] in order,
//! stopping at the first that fails.
//!
//! Every step is idempotent and checked against the world on the next round: a scale change
//! is recorded with the replicas it started from ([`ScaleChange`]) and retried while the
//! workload is still there; the deletion cost and the HPA hold are re-applied while the world
//! does not show them. So whichever write fails, the next round makes it again, and a
//! rotation that ends (finished, deleted, or its policy deleted) takes back its surge and its
//! HPA hold before its finalizer goes.
//!
//! Phases, one module each: [`pending`] (plan: surge, queue or evict), [`surging`] (the surge
//! applied, waiting for a Ready replacement), and [`take_back`] (Draining: the scale-down
//! that removes the doomed pod; and undoing the surge whenever the rotation ends, whatever
//! its outcome). [`hpa`] is the arithmetic of a hold shared by several rotations.

pub mod hpa;
pub mod pending;
pub mod surging;
pub mod take_back;

use chrono::{DateTime, TimeDelta, Utc};

use crate::crd::{ScaleChange, SpotRotationSpec, SpotRotationStatus, Strategy};
use crate::spot::{Deadlines, Observation, Phase, Plan, next_phase};
use crate::status::{from_kube_time, kube_time};
use crate::time;

/// Doomed pods rank below every other pod for removal...
pub const DOOMED_COST: i32 = i32::MIN + 1;
/// ...and the one being drained right now below them, so a scale-down removes exactly it.
pub const DRAINING_COST: i32 = i32::MIN;
/// How long finished rotations of plain `api-evict` pods (no policy, so no history limit)
/// are kept.
pub const API_EVICT_RETENTION: TimeDelta = TimeDelta::hours(1);

/// The doomed pod as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoomedSeen {
    /// Running, not terminating, with this `pod-deletion-cost` (if it parses).
    Running { deletion_cost: Option<i32> },
    /// Being deleted (scale-down, eviction or escalation).
    Terminating,
    /// No longer exists (or another pod has its name).
    Gone,
}

/// The HPA a rotation holds (or would hold), as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpaSeen {
    pub name: String,
    /// This rotation is among the HPA's holders.
    pub held_by_me: bool,
}

/// What the controller observed this round. Fields a phase does not need may be left at
/// their defaults by the controller (it only reads what the rotation's phase asks for).
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub now: DateTime<Utc>,
    pub deadlines: Deadlines,
    /// When to stop waiting for a Ready replacement.
    pub give_up_at: DateTime<Utc>,
    pub doomed: DoomedSeen,
    /// The rotation is being deleted (its own deletion, or its policy's cascading).
    pub deleting: bool,
    /// The rotation carries [`crate::crd::TAKE_BACK_FINALIZER`].
    pub has_finalizer: bool,
    /// The workload's wanted replicas (its scale's spec), read from the API server this
    /// round; `None` when the rotation has no workload or it is gone.
    pub replicas: Option<i32>,
    /// This rotation may change the workload's replicas now: no other rotation of the
    /// workload has a change not yet seen applied, and every earlier scale-down has started
    /// removing its doomed pod.
    pub may_scale: bool,
    /// This rotation may retry its own recorded change now: as [`Seen::may_scale`], except
    /// that later links of the same batch do not hold it up (they wait for it).
    pub may_retry: bool,
    /// The workload runs every pod it asks for and all but the doomed ones are Ready, so a
    /// scale-down now removes the doomed pod (deletion cost) rather than a starting one.
    pub settled: bool,
    /// A Ready replacement pod no other rotation has taken.
    pub replacement: Option<String>,
    /// The storm plan for this rotation (Pending only).
    pub plan: Option<Plan>,
    /// Why the rotation's workload cannot be scaled, if it cannot (no workload, not the pod's
    /// controller, `maxSurge` 0...). A Pending rotation is then evicted instead.
    pub not_surgeable: Option<String>,
    /// The HPA scaling the workload (Pending), or the one this rotation holds.
    pub hpa: Option<HpaSeen>,
}

impl Seen {
    /// A round at `now` with nothing observed yet (the doomed pod running, no workload).
    pub fn at(now: DateTime<Utc>, deadlines: Deadlines) -> Self {
        Self {
            now,
            deadlines,
            give_up_at: deadlines.escalate_at,
            doomed: DoomedSeen::Running {
                deletion_cost: None,
            },
            deleting: false,
            has_finalizer: false,
            replicas: None,
            may_scale: false,
            may_retry: false,
            settled: false,
            replacement: None,
            plan: None,
            not_surgeable: None,
            hpa: None,
        }
    }

    fn running(&self) -> bool {
        matches!(self.doomed, DoomedSeen::Running { .. })
    }
}

/// A change to the world, applied by the controller after the status is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    AddFinalizer,
    RemoveFinalizer,
    /// Give the doomed pod this `pod-deletion-cost`.
    SetDeletionCost(i32),
    /// Join the HPA's holders and raise its `minReplicas` to at least `floor`.
    HoldHpa {
        name: String,
        floor: i32,
    },
    /// Leave the HPA's holders; the last one gives the HPA its own value back, the others
    /// keep it at `floor`.
    ReleaseHpa {
        name: String,
        floor: i32,
    },
    /// Set the workload's replicas to `to`, only if they are still `from`.
    Scale {
        from: i32,
        to: i32,
    },
    /// The rotation reached `phase` (an Event on the rotation and its policy).
    Transition {
        phase: Phase,
        message: String,
    },
    /// The rotation finished with this outcome (the outcome metric, counted once).
    Finished {
        outcome: Phase,
        before_release: bool,
    },
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub status: SpotRotationStatus,
    pub effects: Vec<Effect>,
    /// When to look again if nothing changes meanwhile (`None`: only on a change).
    pub requeue_at: Option<DateTime<Utc>>,
}

/// The phase of a status (Pending when it has none).
pub fn phase_of(status: &SpotRotationStatus) -> Phase {
    status.phase.unwrap_or(Phase::Pending)
}

/// Completed and Failed are final; Degraded is once the doomed pod is gone.
pub fn finished(status: &SpotRotationStatus) -> bool {
    let phase = phase_of(status);
    phase.is_finished() || (phase == Phase::Degraded && status.pod_gone_at.is_some())
}

/// The rotation has scaled its workload up and not yet seen that taken back, or still holds
/// an HPA: it counts against the surge budget, and must not be pruned.
pub fn holds_surge(status: &SpotRotationStatus) -> bool {
    let scaled = status.surge.is_some()
        && status
            .take_back
            .as_ref()
            .is_none_or(|t| t.applied_at.is_none());
    let held = status
        .hpa_hold
        .as_ref()
        .is_some_and(|h| h.released_at.is_none());
    scaled || held
}

/// How long a scale-down may take to start removing its doomed pod. Until then no other
/// rotation of the workload changes its replicas (a scale-up overlapping a scale-down cancels
/// it instead of removing the doomed pod); past it, the eviction controller evicts the pod
/// (the ReplicaSet may have picked another).
pub const SCALE_DOWN_WAIT: TimeDelta = TimeDelta::seconds(30);

/// Another rotation of the same workload, as the turn rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct Sibling<'a> {
    pub status: &'a SpotRotationStatus,
    /// Its doomed pod still runs (not terminating, not gone).
    pub doomed_running: bool,
}

/// The scale change of `status` not yet seen applied, if any. Once a take-back is recorded
/// it is the rotation's change (a surge that never reached the workload is given up then).
fn unapplied(status: &SpotRotationStatus) -> Option<&ScaleChange> {
    status
        .take_back
        .as_ref()
        .or(status.surge.as_ref())
        .filter(|c| c.applied_at.is_none() && c.from != c.to)
}

/// `later` is a further link of the batch `earlier` belongs to: the same direction, starting
/// where `earlier` ends or beyond. One batch's links go out as one scale change; if that
/// fails, each link retries its own step in order, so a later link never blocks an earlier.
fn later_link(earlier: &ScaleChange, later: &ScaleChange) -> bool {
    let up = earlier.to > earlier.from;
    up == (later.to > later.from)
        && if up {
            later.from >= earlier.to
        } else {
            later.from <= earlier.to
        }
}

/// Whether a rotation (`mine`) may change its workload's replicas now, given the workload's
/// other rotations: none has a change not yet seen applied (other than later links of
/// `mine`'s own unapplied change, which may be retried before them: pass a status without
/// changes to ask whether a new change may be made), and every scale-down has started removing its doomed pod (or has had
/// [`SCALE_DOWN_WAIT`]).
pub fn may_scale<'a>(
    mine: &SpotRotationStatus,
    others: impl IntoIterator<Item = Sibling<'a>>,
    now: DateTime<Utc>,
) -> bool {
    let my_change = unapplied(mine);
    others.into_iter().all(|other| {
        let removing = other.status.take_back.as_ref().is_some_and(|t| {
            t.from != t.to
                && t.applied_at
                    .as_ref()
                    .is_some_and(|at| now < time::add(from_kube_time(at), SCALE_DOWN_WAIT))
        });
        let waiting = unapplied(other.status)
            .is_some_and(|theirs| my_change.is_none_or(|mine| !later_link(mine, theirs)));
        let busy = waiting || (removing && other.doomed_running);
        !busy
    })
}

/// The one-replica scale change `step` asks for, as `(from, to)`: a link another rotation's
/// step may join into one scale change of the workload (see [`batch_extends`]).
pub fn scale_link(step: &Step) -> Option<(i32, i32)> {
    step.effects.iter().find_map(|e| match e {
        Effect::Scale { from, to } if from.abs_diff(*to) == 1 => Some((*from, *to)),
        _ => None,
    })
}

/// Whether `link` continues the batch `from -> to` (the same direction, starting at `to`).
/// A batch is planned by the rotation holding the workload's turn: it steps each other
/// rotation of the workload as if the batch so far were applied (its `Seen::replicas` at
/// `to`, its turn granted), records the steps that continue it, and writes one scale change
/// `from -> end` after all their intents and effects. Each link's intent is its own
/// one-replica change, so a batch cut short anywhere is retried link by link.
pub fn batch_extends(from: i32, to: i32, link: (i32, i32)) -> bool {
    let (start, end) = link;
    start == to && (end - start).signum() == (to - from).signum()
}

/// Whether a rotation may be deleted: finished, with nothing left to take back. A rotation
/// without a policy (plain `api-evict`) goes [`API_EVICT_RETENTION`] after its pod did;
/// policies prune theirs by count.
pub fn prunable_by_age(status: &SpotRotationStatus, now: DateTime<Utc>) -> bool {
    finished(status)
        && !holds_surge(status)
        && status
            .pod_gone_at
            .as_ref()
            .is_none_or(|gone| now >= time::add(from_kube_time(gone), API_EVICT_RETENTION))
}

/// One step of the rotation described by `spec` and `status`, given what was `seen`.
pub fn step(spec: &SpotRotationSpec, status: &SpotRotationStatus, seen: &Seen) -> Step {
    let mut round = Round {
        next: status.clone(),
        effects: Vec::new(),
        requeue_at: None,
    };
    if seen.deleting {
        take_back::undo(&mut round, seen, false);
        if !holds_surge(&round.next) && seen.has_finalizer {
            round.effects.push(Effect::RemoveFinalizer);
        }
        return round.done();
    }
    let phase = phase_of(status);
    let surge = spec.strategy == Strategy::Surge;
    match phase {
        Phase::Pending if surge => pending::step(&mut round, seen),
        Phase::Pending => round.enter(Phase::Draining, "evicting the doomed pod"),
        Phase::Surging => surging::step(&mut round, seen),
        _ => {}
    }
    follow_the_pod(&mut round, spec, seen);
    let ending = finished(&round.next) || round.phase() == Phase::Failed;
    let draining = surge && round.phase() == Phase::Draining;
    if ending || draining || round.next.take_back.is_some() {
        take_back::undo(&mut round, seen, draining && !ending);
    }
    if holds_surge(&round.next) && !seen.has_finalizer {
        round.effects.insert(0, Effect::AddFinalizer);
    }
    if finished(&round.next) && !finished(status) {
        round.effects.push(Effect::Finished {
            outcome: round.phase(),
            before_release: seen.now <= seen.deadlines.release_at,
        });
    }
    if finished(&round.next) && !holds_surge(&round.next) && seen.has_finalizer {
        round.effects.push(Effect::RemoveFinalizer);
    }
    if !finished(&round.next) || holds_surge(&round.next) {
        round.wake(time::add(seen.now, TimeDelta::seconds(1)).min(seen.deadlines.escalate_at));
    }
    round.done()
}

/// The transitions every phase shares: the doomed pod gone (Completed, or Degraded stays),
/// the release passing under a running pod (Failed), a surge that ran out of time.
fn follow_the_pod(round: &mut Round, spec: &SpotRotationSpec, seen: &Seen) {
    let current = round.phase();
    let past_escalation = seen.now >= seen.deadlines.escalate_at;
    let observation = Observation {
        surged: round.next.surge.is_some(),
        replacement_ready: round.next.replacement_ready_at.is_some(),
        doomed_gone: seen.doomed == DoomedSeen::Gone,
        doomed_terminating: seen.doomed == DoomedSeen::Terminating,
        past_escalation,
        released: seen.now >= seen.deadlines.release_at,
    };
    let mut upcoming = next_phase(current, observation);
    if spec.strategy == Strategy::Surge
        && upcoming == Phase::Draining
        && past_escalation
        && seen.running()
    {
        upcoming = Phase::Degraded;
        round.enter(
            upcoming,
            "the workload did not remove the doomed pod in time; evicting it",
        );
    } else if upcoming != current {
        let message = match upcoming {
            Phase::Degraded => "no Ready replacement in time; evicting the doomed pod",
            Phase::Failed => "the instance was released while the pod still ran",
            Phase::Completed => "rotated before the release",
            _ => "",
        };
        round.enter(upcoming, message);
    }
    if seen.doomed == DoomedSeen::Gone && round.next.pod_gone_at.is_none() {
        round.next.pod_gone_at = Some(kube_time(seen.now));
    }
}

/// A step under construction.
pub struct Round {
    pub next: SpotRotationStatus,
    pub effects: Vec<Effect>,
    requeue_at: Option<DateTime<Utc>>,
}

impl Round {
    pub fn phase(&self) -> Phase {
        phase_of(&self.next)
    }

    /// Moves to `phase` with `message` (an Event says so).
    pub fn enter(&mut self, phase: Phase, message: &str) {
        if self.next.phase == Some(phase) {
            return;
        }
        self.next.phase = Some(phase);
        self.next.message = Some(message.to_string());
        self.effects.push(Effect::Transition {
            phase,
            message: message.to_string(),
        });
    }

    /// Asks to be looked at again by `at`.
    pub fn wake(&mut self, at: DateTime<Utc>) {
        self.requeue_at = Some(self.requeue_at.map_or(at, |current| current.min(at)));
    }

    fn done(self) -> Step {
        Step {
            status: self.next,
            effects: self.effects,
            requeue_at: self.requeue_at,
        }
    }
}

/// Whether the workload's `replicas` show `change`: at or past its `to`, in its direction.
fn reached(change: &ScaleChange, replicas: i32) -> bool {
    if change.to >= change.from {
        replicas >= change.to
    } else {
        replicas <= change.to
    }
}

/// Checks a recorded scale change against the workload's replicas: seen applied once the
/// workload reached `to`; retried while it has not and this rotation may retry. A workload
/// moved elsewhere meanwhile (by its user, its HPA, or an earlier link of the change's batch
/// that was given up) gets the change again from where it is, recorded first: what this
/// rotation adds or removes is always its one replica on top of whatever the workload has.
/// Returns whether it is applied.
fn verify_scale(change: &mut ScaleChange, seen: &Seen, effects: &mut Vec<Effect>) -> bool {
    if change.applied_at.is_some() {
        return true;
    }
    let Some(replicas) = seen.replicas.filter(|_| change.from != change.to) else {
        change.applied_at = Some(kube_time(seen.now));
        return true;
    };
    if reached(change, replicas) {
        change.applied_at = Some(kube_time(seen.now));
        return true;
    }
    if !seen.may_retry {
        return false;
    }
    if replicas != change.from {
        change.to = replicas.saturating_add(change.to.saturating_sub(change.from));
        change.from = replicas;
    }
    effects.push(Effect::Scale {
        from: change.from,
        to: change.to,
    });
    false
}

#[cfg(test)]
mod tests;
