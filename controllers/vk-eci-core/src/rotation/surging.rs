//! Surging: the surge is recorded. Until the workload shows it, it is retried; the doomed
//! pod's deletion cost and the HPA hold are re-applied whenever the world lost them. A Ready
//! replacement moves the rotation to Draining; none in time, to Degraded (eviction).

use super::{DOOMED_COST, DRAINING_COST, DoomedSeen, Effect, Round, Seen, verify_scale};
use crate::crd::ScaleChange;
use crate::spot::Phase;
use crate::status::kube_time;

pub fn step(round: &mut Round, seen: &Seen) {
    let Some(mut surge) = round.next.surge.clone() else {
        adopt_unrecorded(round, seen);
        return;
    };
    if let DoomedSeen::Running { deletion_cost } = seen.doomed
        && deletion_cost != Some(DOOMED_COST)
        && deletion_cost != Some(DRAINING_COST)
    {
        round.effects.push(Effect::SetDeletionCost(DOOMED_COST));
    }
    if let (Some(hold), Some(hpa)) = (&round.next.hpa_hold, &seen.hpa)
        && hold.released_at.is_none()
        && hold.name == hpa.name
        && !hpa.held_by_me
    {
        round.effects.push(Effect::HoldHpa {
            name: hold.name.clone(),
            floor: hold.floor,
        });
    }
    let applied = verify_scale(&mut surge, seen, &mut round.effects);
    round.next.surge = Some(surge);
    if applied && let Some(replacement) = &seen.replacement {
        round.next.replacement_pod = Some(replacement.clone());
        round.next.replacement_ready_at = Some(kube_time(seen.now));
        round.enter(Phase::Draining, "replacement Ready; scaling back down");
    } else if seen.now >= seen.give_up_at {
        round.enter(
            Phase::Degraded,
            "no Ready replacement in time; evicting the doomed pod",
        );
    } else {
        round.wake(seen.give_up_at);
    }
}

/// A Surging rotation with no recorded change (written by an older vk-eci): with a
/// `surgedAt` it did scale up, by one, to the workload's replicas now; without, it only
/// claimed the surge and plans again.
fn adopt_unrecorded(round: &mut Round, seen: &Seen) {
    match (&round.next.surged_at, seen.replicas) {
        (Some(_), Some(replicas)) => {
            round.next.surge = Some(ScaleChange {
                from: replicas.saturating_sub(1),
                to: replicas,
                applied_at: Some(kube_time(seen.now)),
            });
        }
        (Some(_), None) => {}
        (None, _) => {
            round.next.phase = Some(Phase::Pending);
            round.wake(seen.now);
        }
    }
}
