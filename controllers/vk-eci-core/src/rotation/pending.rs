//! Pending: a notice waiting for its plan. Surge (record the change with the replicas it
//! starts from, then mark the doomed pod, hold the HPA, scale up), queue for surge capacity,
//! or hand the pod to eviction when no replacement can be Ready in time.

use chrono::TimeDelta;

use super::{DOOMED_COST, Effect, Round, Seen};
use crate::crd::{HpaHold, ScaleChange};
use crate::spot::{Phase, Plan};
use crate::status::kube_time;
use crate::time;

/// How often a queued notice looks for surge capacity again.
pub const QUEUE_RETRY: TimeDelta = TimeDelta::seconds(1);

pub fn step(round: &mut Round, seen: &Seen) {
    if !seen.running() || seen.now >= seen.deadlines.escalate_at {
        // The pod is going or there is no time left: the shared transitions decide.
        return;
    }
    if let Some(reason) = &seen.not_surgeable {
        round.enter(Phase::Degraded, &format!("{reason}; evicting instead"));
        return;
    }
    match seen.plan {
        Some(Plan::Surge) if seen.may_scale => match seen.replicas {
            Some(replicas) => surge(round, seen, replicas),
            None => round.enter(Phase::Degraded, "the workload is gone; evicting instead"),
        },
        Some(Plan::Evict) => round.enter(
            Phase::Degraded,
            "no surge capacity in time for this notice; evicting instead",
        ),
        _ => round.wake(time::add(seen.now, QUEUE_RETRY)),
    }
}

fn surge(round: &mut Round, seen: &Seen, replicas: i32) {
    let to = replicas.saturating_add(1);
    round.next.surged_at = Some(kube_time(seen.now));
    round.next.surge = Some(ScaleChange {
        from: replicas,
        to,
        applied_at: None,
    });
    round.next.hpa_hold = seen.hpa.as_ref().map(|hpa| HpaHold {
        name: hpa.name.clone(),
        floor: to,
        released_at: None,
    });
    round.enter(Phase::Surging, "surging a replacement");
    round.effects.push(Effect::SetDeletionCost(DOOMED_COST));
    if let Some(hpa) = &seen.hpa {
        // The HPA would undo a surge above its own computation: hold its floor at the
        // surged size until the surge is taken back.
        round.effects.push(Effect::HoldHpa {
            name: hpa.name.clone(),
            floor: to,
        });
    }
    round.effects.push(Effect::Scale { from: replicas, to });
    round.wake(seen.now);
}
