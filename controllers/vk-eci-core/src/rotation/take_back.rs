//! Taking a surge back: once the doomed pod may go (Draining, with the workload settled) or
//! the rotation ends (finished, Failed, deleted), scale the workload down by what the surge
//! added, recorded first with the replicas it starts from; check it every round until the
//! workload shows it; then leave the HPA's holders. A surge that never reached the workload
//! has nothing to take back.

use chrono::TimeDelta;

use super::{DRAINING_COST, Effect, Round, Seen, reached, verify_scale};
use crate::crd::ScaleChange;
use crate::status::kube_time;
use crate::time;

/// How soon a take-back that must wait (another rotation's change first, the workload still
/// starting pods) looks again.
const WAIT: TimeDelta = TimeDelta::milliseconds(300);

/// `draining`: the normal end of a surge, which must remove the doomed pod, so it waits for
/// the workload to settle and marks the doomed pod first. Otherwise (the rotation ends) the
/// surge is taken back as soon as the workload's turn allows.
pub fn undo(round: &mut Round, seen: &Seen, draining: bool) {
    let Some(mut surge) = round.next.surge.clone() else {
        return;
    };
    let take_back = match round.next.take_back.clone() {
        Some(mut take_back) => {
            verify_scale(&mut take_back, seen, &mut round.effects);
            take_back
        }
        None => {
            if surge.applied_at.is_none() && seen.replicas.is_some_and(|r| !reached(&surge, r)) {
                // The surge never reached the workload (its write failed, or an earlier link
                // of its batch has not gone out yet): nothing to scale back.
                nothing_to_take_back(round, seen, surge.from)
            } else {
                if surge.applied_at.is_none() {
                    surge.applied_at = Some(kube_time(seen.now));
                    round.next.surge = Some(surge.clone());
                }
                if draining && !(seen.running() && seen.settled) {
                    round.wake(time::add(seen.now, WAIT));
                    return;
                }
                if !seen.may_scale {
                    round.wake(time::add(seen.now, WAIT));
                    return;
                }
                decide(round, seen, &surge, draining)
            }
        }
    };
    round.next.take_back = Some(take_back.clone());
    if take_back.applied_at.is_none() {
        round.wake(time::add(seen.now, WAIT));
        return;
    }
    if let Some(hold) = round.next.hpa_hold.as_mut()
        && hold.released_at.is_none()
    {
        match &seen.hpa {
            Some(hpa) if hpa.name == hold.name && hpa.held_by_me => {
                round.effects.push(Effect::ReleaseHpa {
                    name: hold.name.clone(),
                    floor: take_back.to,
                });
                round.wake(time::add(seen.now, WAIT));
            }
            _ => hold.released_at = Some(kube_time(seen.now)),
        }
    }
}

fn nothing_to_take_back(round: &mut Round, seen: &Seen, replicas: i32) -> ScaleChange {
    // Nor is the surge retried: a retry asked for earlier in this same step (the scale, the
    // HPA hold) would add a pod, or a holder, nobody takes back.
    round
        .effects
        .retain(|e| !matches!(e, Effect::Scale { .. } | Effect::HoldHpa { .. }));
    round.next.scaled_down_at = Some(kube_time(seen.now));
    ScaleChange {
        from: replicas,
        to: replicas,
        applied_at: Some(kube_time(seen.now)),
    }
}

fn decide(round: &mut Round, seen: &Seen, surge: &ScaleChange, draining: bool) -> ScaleChange {
    round.next.scaled_down_at = Some(kube_time(seen.now));
    let Some(replicas) = seen.replicas else {
        // The workload is gone: nothing left to scale.
        return ScaleChange {
            from: surge.to,
            to: surge.from,
            applied_at: Some(kube_time(seen.now)),
        };
    };
    let added = surge.to.saturating_sub(surge.from).max(0);
    let to = replicas.saturating_sub(added).max(0);
    if draining {
        round.effects.push(Effect::SetDeletionCost(DRAINING_COST));
    }
    round.effects.push(Effect::Scale { from: replicas, to });
    ScaleChange {
        from: replicas,
        to,
        applied_at: None,
    }
}
