use chrono::{DateTime, Utc};

use super::hpa::{self, HpaState};
use super::*;
use crate::crd::{HpaHold, PodRef, WorkloadKind, WorkloadRef};
use crate::spot::DEFAULT_MARGIN;

fn t(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
}

fn spec(strategy: Strategy) -> SpotRotationSpec {
    SpotRotationSpec {
        policy: Some("web".into()),
        pod: PodRef {
            name: "web-1".into(),
            uid: "u1".into(),
        },
        workload: Some(WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "web".into(),
        }),
        strategy,
        noticed_at: kube_time(t(0)),
        release_at: kube_time(t(180)),
        deadline: kube_time(t(165)),
    }
}

fn deadlines() -> Deadlines {
    Deadlines::new(t(0), t(180), DEFAULT_MARGIN, 30)
}

/// A round at `at` seconds: the doomed pod running, the workload at `replicas`, free to
/// scale and settled, with the finalizer on.
fn seen(at: i64, replicas: i32) -> Seen {
    Seen {
        replicas: Some(replicas),
        may_scale: true,
        may_retry: true,
        settled: true,
        has_finalizer: true,
        plan: Some(Plan::Surge),
        give_up_at: t(120),
        ..Seen::at(t(at), deadlines())
    }
}

fn scales(step: &Step) -> Vec<(i32, i32)> {
    step.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Scale { from, to } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

fn surged(from: i32, applied: bool) -> SpotRotationStatus {
    SpotRotationStatus {
        phase: Some(Phase::Surging),
        surged_at: Some(kube_time(t(1))),
        surge: Some(ScaleChange {
            from,
            to: from + 1,
            applied_at: applied.then(|| kube_time(t(2))),
        }),
        ..SpotRotationStatus::default()
    }
}

#[test]
fn pending_records_the_surge_with_its_replicas_before_any_effect() {
    let step = step(
        &spec(Strategy::Surge),
        &SpotRotationStatus::default(),
        &seen(1, 2),
    );
    assert_eq!(step.status.phase, Some(Phase::Surging));
    assert_eq!(
        step.status.surge,
        Some(ScaleChange {
            from: 2,
            to: 3,
            applied_at: None
        })
    );
    assert_eq!(
        step.effects[..2],
        [
            Effect::Transition {
                phase: Phase::Surging,
                message: "surging a replacement".into()
            },
            Effect::SetDeletionCost(DOOMED_COST),
        ]
    );
    assert_eq!(scales(&step), [(2, 3)]);
}

#[test]
fn pending_holds_the_hpa_before_scaling() {
    let mut seen = seen(1, 2);
    seen.hpa = Some(HpaSeen {
        name: "web".into(),
        held_by_me: false,
    });
    let step = step(
        &spec(Strategy::Surge),
        &SpotRotationStatus::default(),
        &seen,
    );
    let hold = step
        .effects
        .iter()
        .position(|e| matches!(e, Effect::HoldHpa { floor: 3, .. }))
        .unwrap();
    let scale = step
        .effects
        .iter()
        .position(|e| matches!(e, Effect::Scale { .. }))
        .unwrap();
    assert!(hold < scale, "{:?}", step.effects);
    assert_eq!(step.status.hpa_hold.unwrap().floor, 3);
}

#[test]
fn pending_without_the_finalizer_adds_it_first() {
    let mut seen = seen(1, 2);
    seen.has_finalizer = false;
    let step = step(
        &spec(Strategy::Surge),
        &SpotRotationStatus::default(),
        &seen,
    );
    assert_eq!(step.effects[0], Effect::AddFinalizer);
    assert_eq!(scales(&step), [(2, 3)]);
}

#[test]
fn pending_waits_for_the_workloads_turn_and_queues() {
    let mut busy = seen(1, 2);
    busy.may_scale = false;
    let step = step(
        &spec(Strategy::Surge),
        &SpotRotationStatus::default(),
        &busy,
    );
    assert_eq!(step.status.phase, None);
    assert!(step.effects.is_empty());
    assert!(step.requeue_at.is_some());
    let mut queued = seen(1, 2);
    queued.plan = Some(Plan::Queue);
    let step = super::step(
        &spec(Strategy::Surge),
        &SpotRotationStatus::default(),
        &queued,
    );
    assert!(step.effects.is_empty() && step.status.phase.is_none());
}

#[test]
fn pending_not_surgeable_or_planned_for_eviction_degrades() {
    let mut unowned = seen(1, 2);
    unowned.not_surgeable = Some("spec.workload Deployment/web does not control the pod".into());
    let step = step(
        &spec(Strategy::Surge),
        &SpotRotationStatus::default(),
        &unowned,
    );
    assert_eq!(step.status.phase, Some(Phase::Degraded));
    assert!(scales(&step).is_empty());
    assert!(
        step.status
            .message
            .unwrap()
            .contains("does not control the pod"),
        "the reason is kept"
    );
    let mut evict = seen(1, 2);
    evict.plan = Some(Plan::Evict);
    let step = super::step(
        &spec(Strategy::Surge),
        &SpotRotationStatus::default(),
        &evict,
    );
    assert_eq!(step.status.phase, Some(Phase::Degraded));
    assert!(step.status.surge.is_none());
}

#[test]
fn evict_rotations_drain_at_once() {
    let step = step(
        &spec(Strategy::Evict),
        &SpotRotationStatus::default(),
        &seen(1, 2),
    );
    assert_eq!(step.status.phase, Some(Phase::Draining));
    assert!(scales(&step).is_empty());
}

#[test]
fn a_failed_surge_is_retried_on_the_next_step() {
    // The scale write after the intent failed: the workload is still at `from`.
    let step = step(&spec(Strategy::Surge), &surged(2, false), &seen(2, 2));
    assert_eq!(scales(&step), [(2, 3)]);
    assert!(step.status.surge.unwrap().applied_at.is_none());
    // Seen applied once the workload shows it; never scaled twice.
    let step = super::step(&spec(Strategy::Surge), &surged(2, false), &seen(3, 3));
    assert!(scales(&step).is_empty());
    assert!(step.status.surge.unwrap().applied_at.is_some());
}

#[test]
fn a_surge_retry_waits_for_the_workloads_turn() {
    let mut busy = seen(2, 2);
    busy.may_retry = false;
    let step = step(&spec(Strategy::Surge), &surged(2, false), &busy);
    assert!(scales(&step).is_empty());
    assert!(step.status.surge.unwrap().applied_at.is_none());
}

#[test]
fn surging_reapplies_a_lost_deletion_cost_and_hpa_hold() {
    let mut status = surged(2, true);
    status.hpa_hold = Some(HpaHold {
        name: "web".into(),
        floor: 3,
        released_at: None,
    });
    let mut seen = seen(3, 3);
    seen.doomed = DoomedSeen::Running {
        deletion_cost: None,
    };
    seen.hpa = Some(HpaSeen {
        name: "web".into(),
        held_by_me: false,
    });
    let step = step(&spec(Strategy::Surge), &status, &seen);
    assert!(step.effects.contains(&Effect::SetDeletionCost(DOOMED_COST)));
    assert!(step.effects.contains(&Effect::HoldHpa {
        name: "web".into(),
        floor: 3
    }));
    seen.doomed = DoomedSeen::Running {
        deletion_cost: Some(DOOMED_COST),
    };
    seen.hpa = Some(HpaSeen {
        name: "web".into(),
        held_by_me: true,
    });
    let step = super::step(&spec(Strategy::Surge), &status, &seen);
    assert!(step.effects.is_empty(), "{:?}", step.effects);
}

#[test]
fn a_ready_replacement_drains_and_the_take_back_is_recorded_first() {
    let mut seen = seen(5, 3);
    seen.replacement = Some("web-new".into());
    let step = step(&spec(Strategy::Surge), &surged(2, true), &seen);
    assert_eq!(step.status.phase, Some(Phase::Draining));
    assert_eq!(step.status.replacement_pod.as_deref(), Some("web-new"));
    assert_eq!(
        step.status.take_back,
        Some(ScaleChange {
            from: 3,
            to: 2,
            applied_at: None
        })
    );
    let cost = step
        .effects
        .iter()
        .position(|e| *e == Effect::SetDeletionCost(DRAINING_COST))
        .unwrap();
    let scale = step
        .effects
        .iter()
        .position(|e| *e == Effect::Scale { from: 3, to: 2 })
        .unwrap();
    assert!(
        cost < scale,
        "the doomed pod is marked before the scale-down"
    );
}

#[test]
fn draining_waits_for_the_workload_to_settle() {
    let draining = SpotRotationStatus {
        phase: Some(Phase::Draining),
        replacement_ready_at: Some(kube_time(t(4))),
        ..surged(2, true)
    };
    let mut unsettled = seen(5, 3);
    unsettled.settled = false;
    let step = step(&spec(Strategy::Surge), &draining, &unsettled);
    assert!(step.status.take_back.is_none() && scales(&step).is_empty());
    let mut busy = seen(5, 3);
    busy.may_scale = false;
    let step = super::step(&spec(Strategy::Surge), &draining, &busy);
    assert!(step.status.take_back.is_none() && scales(&step).is_empty());
}

fn taken_back(applied: bool) -> SpotRotationStatus {
    SpotRotationStatus {
        phase: Some(Phase::Draining),
        replacement_ready_at: Some(kube_time(t(4))),
        scaled_down_at: Some(kube_time(t(5))),
        take_back: Some(ScaleChange {
            from: 3,
            to: 2,
            applied_at: applied.then(|| kube_time(t(6))),
        }),
        hpa_hold: Some(HpaHold {
            name: "web".into(),
            floor: 3,
            released_at: None,
        }),
        ..surged(2, true)
    }
}

#[test]
fn a_failed_scale_down_is_retried_and_the_hpa_released_only_after() {
    let mut seen = seen(6, 3);
    seen.hpa = Some(HpaSeen {
        name: "web".into(),
        held_by_me: true,
    });
    let step = step(&spec(Strategy::Surge), &taken_back(false), &seen);
    assert_eq!(scales(&step), [(3, 2)]);
    assert!(
        !step
            .effects
            .iter()
            .any(|e| matches!(e, Effect::ReleaseHpa { .. })),
        "the HPA keeps holding until the scale-down is seen"
    );
    seen.replicas = Some(2);
    let step = super::step(&spec(Strategy::Surge), &taken_back(false), &seen);
    assert!(scales(&step).is_empty());
    assert!(step.effects.contains(&Effect::ReleaseHpa {
        name: "web".into(),
        floor: 2
    }));
    // A failed release is retried; once the HPA no longer lists it, the hold is over.
    let step = super::step(&spec(Strategy::Surge), &step.status, &seen);
    assert!(
        step.effects
            .iter()
            .any(|e| matches!(e, Effect::ReleaseHpa { .. }))
    );
    seen.hpa = Some(HpaSeen {
        name: "web".into(),
        held_by_me: false,
    });
    let step = super::step(&spec(Strategy::Surge), &step.status, &seen);
    assert!(step.status.hpa_hold.unwrap().released_at.is_some());
}

#[test]
fn a_finished_rotation_drops_its_finalizer_only_when_nothing_is_left() {
    let mut seen = seen(8, 2);
    seen.doomed = DoomedSeen::Gone;
    let done = SpotRotationStatus {
        hpa_hold: None,
        ..taken_back(true)
    };
    let step = step(&spec(Strategy::Surge), &done, &seen);
    assert_eq!(step.status.phase, Some(Phase::Completed));
    assert!(step.effects.contains(&Effect::RemoveFinalizer));
    assert!(step.effects.contains(&Effect::Finished {
        outcome: Phase::Completed,
        before_release: true
    }));
    seen.replicas = Some(3);
    let holding = step_with(&taken_back(false), &seen);
    assert_eq!(holding.status.phase, Some(Phase::Completed));
    assert!(!holding.effects.contains(&Effect::RemoveFinalizer));
    assert_eq!(scales(&holding), [(3, 2)]);
}

fn step_with(status: &SpotRotationStatus, seen: &Seen) -> Step {
    step(&spec(Strategy::Surge), status, seen)
}

#[test]
fn degraded_takes_back_once_the_pod_is_gone_and_is_counted() {
    let degraded = SpotRotationStatus {
        phase: Some(Phase::Degraded),
        ..surged(2, true)
    };
    let mut seen = seen(130, 3);
    let step = step_with(&degraded, &seen);
    assert!(
        scales(&step).is_empty(),
        "the eviction controller has the pod"
    );
    assert!(
        !step
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Finished { .. }))
    );
    seen.doomed = DoomedSeen::Gone;
    let step = step_with(&degraded, &seen);
    assert_eq!(step.status.phase, Some(Phase::Degraded));
    assert_eq!(scales(&step), [(3, 2)]);
    assert!(step.effects.contains(&Effect::Finished {
        outcome: Phase::Degraded,
        before_release: true
    }));
    // Counted once: the next step of the finished rotation does not count it again.
    let again = step_with(&step.status, &seen);
    assert!(
        !again
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Finished { .. }))
    );
}

#[test]
fn surging_gives_up_at_its_time() {
    let step = step_with(&surged(2, true), &seen(121, 3));
    assert_eq!(step.status.phase, Some(Phase::Degraded));
}

#[test]
fn a_deleted_rotation_takes_back_its_surge_and_hold_then_lets_go() {
    let mut seen = seen(3, 3);
    seen.deleting = true;
    seen.hpa = Some(HpaSeen {
        name: "web".into(),
        held_by_me: true,
    });
    let mut status = surged(2, true);
    status.hpa_hold = Some(HpaHold {
        name: "web".into(),
        floor: 3,
        released_at: None,
    });
    let step = step_with(&status, &seen);
    assert_eq!(scales(&step), [(3, 2)]);
    assert!(!step.effects.contains(&Effect::RemoveFinalizer));
    seen.replicas = Some(2);
    let step = step_with(&step.status, &seen);
    assert!(
        step.effects
            .iter()
            .any(|e| matches!(e, Effect::ReleaseHpa { .. }))
    );
    seen.hpa = Some(HpaSeen {
        name: "web".into(),
        held_by_me: false,
    });
    let step = step_with(&step.status, &seen);
    assert_eq!(step.effects, [Effect::RemoveFinalizer]);
}

#[test]
fn a_rotation_deleted_before_its_surge_reached_the_workload_does_not_scale_down() {
    let mut seen = seen(2, 2);
    seen.deleting = true;
    let step = step_with(&surged(2, false), &seen);
    assert!(scales(&step).is_empty());
    assert_eq!(step.effects, [Effect::RemoveFinalizer]);
}

#[test]
fn the_turn_rule_waits_for_unapplied_changes_and_unstarted_scale_downs() {
    let free = SpotRotationStatus::default();
    let running = |status| Sibling {
        status,
        doomed_running: true,
    };
    let mine = SpotRotationStatus::default();
    assert!(may_scale(&mine, [running(&free)], t(10)));
    let unapplied = surged(2, false);
    assert!(!may_scale(&mine, [running(&unapplied)], t(10)));
    let removing = taken_back(true);
    assert!(!may_scale(&mine, [running(&removing)], t(10)));
    assert!(may_scale(
        &mine,
        [Sibling {
            status: &removing,
            doomed_running: false
        }],
        t(10)
    ));
    assert!(
        may_scale(&mine, [running(&removing)], t(40)),
        "past the scale-down wait, eviction has the pod"
    );
}

#[test]
fn a_batch_link_waits_for_the_earlier_links_never_for_the_later() {
    let running = |status| Sibling {
        status,
        doomed_running: true,
    };
    let first = surged(3, false);
    let second = surged(4, false);
    assert!(may_scale(&first, [running(&second)], t(10)));
    assert!(!may_scale(&second, [running(&first)], t(10)));
    let mut first_down = taken_back(false);
    first_down.take_back = Some(ScaleChange {
        from: 5,
        to: 4,
        applied_at: None,
    });
    let mut second_down = first_down.clone();
    second_down.take_back = Some(ScaleChange {
        from: 4,
        to: 3,
        applied_at: None,
    });
    assert!(may_scale(&first_down, [running(&second_down)], t(10)));
    assert!(!may_scale(&second_down, [running(&first_down)], t(10)));
    assert!(!may_scale(&first_down, [running(&second)], t(10)));
}

#[test]
fn a_batch_member_counts_as_surged_once_the_workload_reached_its_link() {
    // The second link of a batch 3 -> 5: its own change is 4 -> 5.
    let status = surged(4, false);
    let mut waiting = seen(10, 3);
    waiting.may_retry = false;
    let step = step_with(&status, &waiting);
    assert!(step.status.surge.as_ref().unwrap().applied_at.is_none());
    assert!(scales(&step).is_empty(), "the earlier link goes first");
    let step = step_with(&status, &seen(10, 5));
    assert!(step.status.surge.as_ref().unwrap().applied_at.is_some());
    let step = step_with(&status, &seen(10, 4));
    assert_eq!(scales(&step), [(4, 5)], "its own link, retried");
}

#[test]
fn a_surge_that_ends_unapplied_is_not_retried_in_its_last_step() {
    let status = SpotRotationStatus {
        hpa_hold: Some(HpaHold {
            name: "web".into(),
            floor: 4,
            released_at: None,
        }),
        ..surged(3, false)
    };
    let at_release = Seen {
        hpa: Some(HpaSeen {
            name: "web".into(),
            held_by_me: false,
        }),
        ..seen(180, 3)
    };
    let step = step_with(&status, &at_release);
    assert_eq!(step.status.phase, Some(Phase::Failed));
    assert!(scales(&step).is_empty(), "{:?}", step.effects);
    assert!(
        !step
            .effects
            .iter()
            .any(|e| matches!(e, Effect::HoldHpa { .. })),
        "{:?}",
        step.effects
    );
}

#[test]
fn batch_links_continue_in_one_direction_from_where_the_batch_ends() {
    let pending = SpotRotationStatus::default();
    let step = step_with(&pending, &seen(10, 7));
    assert_eq!(scale_link(&step), Some((7, 8)));
    assert!(batch_extends(5, 7, (7, 8)));
    assert!(!batch_extends(5, 7, (6, 7)));
    assert!(!batch_extends(5, 7, (7, 6)));
    assert!(batch_extends(5, 4, (4, 3)));
}

#[test]
fn pruning_waits_for_the_take_back_and_api_evict_rotations_go_by_age() {
    let mut done = SpotRotationStatus {
        phase: Some(Phase::Completed),
        pod_gone_at: Some(kube_time(t(10))),
        ..surged(2, true)
    };
    assert!(
        !prunable_by_age(&done, t(100_000)),
        "the surge is still out"
    );
    done.take_back = Some(ScaleChange {
        from: 3,
        to: 2,
        applied_at: Some(kube_time(t(11))),
    });
    assert!(!prunable_by_age(&done, t(10 + 3599)));
    assert!(prunable_by_age(&done, t(10 + 3600)));
}

fn hpa_state(min: i32, annotations: &[(&str, &str)]) -> HpaState {
    HpaState {
        min_replicas: Some(min),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn apply(state: &HpaState, change: &hpa::HpaChange) -> HpaState {
    let mut next = state.clone();
    next.min_replicas = Some(change.min_replicas);
    for (key, value) in &change.annotations {
        match value {
            Some(value) => next.annotations.insert(key.clone(), value.clone()),
            None => next.annotations.remove(key),
        };
    }
    next
}

#[test]
fn one_hold_per_hpa_shared_by_its_rotations() {
    let user = hpa_state(1, &[("team", "web")]);
    let a = apply(&user, &hpa::hold(&user, "a", 4));
    assert_eq!(a.min_replicas, Some(4));
    let both = apply(&a, &hpa::hold(&a, "b", 5));
    assert_eq!(both.min_replicas, Some(5));
    assert_eq!(hpa::holders(&both), ["a", "b"]);
    assert_eq!(hpa::own_min(&both), 1, "the user's value, recorded once");
    let b_left = apply(&both, &hpa::release(&both, "a", 4).unwrap());
    assert_eq!(b_left.min_replicas, Some(4), "still held for b's surge");
    let none = apply(&b_left, &hpa::release(&b_left, "b", 3).unwrap());
    assert_eq!(none, user, "the user's HPA exactly as it was");
    assert_eq!(
        hpa::release(&none, "b", 3),
        None,
        "releasing twice is a no-op"
    );
    assert_eq!(
        hpa::hold(&both, "a", 5),
        hpa::hold(&both, "a", 5),
        "holding again is idempotent"
    );
}

#[test]
fn a_user_edit_during_the_hold_is_what_the_user_gets_back() {
    let user = hpa_state(1, &[]);
    let held = apply(&user, &hpa::hold(&user, "a", 4));
    let mut edited = held.clone();
    edited.min_replicas = Some(2);
    assert_eq!(hpa::own_min(&edited), 2);
    let joined = apply(&edited, &hpa::hold(&edited, "b", 5));
    assert_eq!(joined.min_replicas, Some(5));
    let a_left = apply(&joined, &hpa::release(&joined, "a", 4).unwrap());
    let done = apply(&a_left, &hpa::release(&a_left, "b", 3).unwrap());
    assert_eq!(done.min_replicas, Some(2));
    assert!(done.annotations.is_empty());
    let mut raised = held;
    raised.min_replicas = Some(7);
    let done = apply(&raised, &hpa::release(&raised, "a", 3).unwrap());
    assert_eq!(done.min_replicas, Some(7), "a raised floor is kept too");
}

mod properties {
    //! A workload, its HPA and a few rotations, driven by the step function through failing
    //! writes: whatever fails, the workload never runs more than desired + one per surge or
    //! fewer than desired, and once every rotation has ended it is back at desired and the
    //! HPA at the user's value.

    use proptest::prelude::{
        ProptestConfig, any, prop_assert, prop_assert_eq, prop_oneof, proptest,
    };
    use proptest::strategy::Strategy as _;

    use super::super::hpa::{self, HpaState};
    use super::super::*;
    use super::{spec, t};
    use crate::crd::PodRef;
    use crate::spot::DEFAULT_MARGIN;

    const DESIRED: i32 = 3;
    const USER_MIN: i32 = 2;

    #[derive(Debug, Clone)]
    struct Rotation {
        status: SpotRotationStatus,
        finalizer: bool,
        deleting: bool,
        gone: bool,
        doomed: DoomedSeen,
    }

    struct World {
        replicas: i32,
        hpa: HpaState,
        rotations: Vec<Rotation>,
        /// A ReplicaSet scale-down removes the lowest-cost doomed pod: the one draining.
        pending_removals: i32,
    }

    #[derive(Debug, Clone)]
    enum Action {
        /// Reconcile rotation `i`; the status write fails, or the `n`th effect.
        Reconcile {
            i: usize,
            status_fails: bool,
            effect_fails: Option<usize>,
        },
        /// Rotation `i` takes its step and plans a batch with the others (as the controller
        /// does); the `n`th member's effects fail (its intent is written), or the one scale
        /// change of the batch.
        Batch {
            i: usize,
            member_fails: Option<usize>,
            scale_fails: bool,
        },
        /// Delete rotation `i` (its own deletion, or its policy's).
        Delete(usize),
        /// Time passes.
        Tick(i64),
    }

    fn action(rotations: usize) -> impl proptest::strategy::Strategy<Value = Action> {
        prop_oneof![
            8 => (0..rotations, any::<bool>(), proptest::option::of(0usize..6)).prop_map(
                |(i, status_fails, effect_fails)| Action::Reconcile {
                    i,
                    status_fails: status_fails && effect_fails.is_some(),
                    effect_fails,
                }
            ),
            4 => (0..rotations, proptest::option::of(0usize..3), any::<bool>()).prop_map(
                |(i, member_fails, scale_fails)| Action::Batch { i, member_fails, scale_fails }
            ),
            1 => (0..rotations).prop_map(Action::Delete),
            1 => (1i64..40).prop_map(Action::Tick),
        ]
    }

    impl World {
        fn new(rotations: usize) -> Self {
            Self {
                replicas: DESIRED,
                hpa: HpaState {
                    min_replicas: Some(USER_MIN),
                    annotations: Default::default(),
                },
                rotations: (0..rotations)
                    .map(|_| Rotation {
                        status: SpotRotationStatus::default(),
                        finalizer: true,
                        deleting: false,
                        gone: false,
                        doomed: DoomedSeen::Running {
                            deletion_cost: None,
                        },
                    })
                    .collect(),
                pending_removals: 0,
            }
        }

        fn name(i: usize) -> String {
            format!("r{i}")
        }

        fn seen(&self, i: usize, now: DateTime<Utc>) -> Seen {
            let me = &self.rotations[i];
            let siblings = self
                .rotations
                .iter()
                .enumerate()
                .filter(|(j, r)| *j != i && !r.gone)
                .map(|(_, r)| Sibling {
                    status: &r.status,
                    doomed_running: matches!(r.doomed, DoomedSeen::Running { .. }),
                });
            let surged_pods = self
                .rotations
                .iter()
                .filter(|r| {
                    r.status
                        .surge
                        .as_ref()
                        .is_some_and(|s| s.applied_at.is_some())
                })
                .count();
            Seen {
                doomed: me.doomed,
                deleting: me.deleting,
                has_finalizer: me.finalizer,
                replicas: Some(self.replicas),
                may_scale: may_scale(&SpotRotationStatus::default(), siblings.clone(), now),
                may_retry: may_scale(&me.status, siblings, now),
                settled: true,
                replacement: (self.replicas > DESIRED && surged_pods > 0)
                    .then(|| format!("replacement-{i}")),
                plan: Some(Plan::Surge),
                hpa: Some(HpaSeen {
                    name: "web".into(),
                    held_by_me: hpa::holders(&self.hpa).contains(&Self::name(i)),
                }),
                give_up_at: t(120),
                ..Seen::at(now, Deadlines::new(t(0), t(180), DEFAULT_MARGIN, 30))
            }
        }

        /// Applies one effect; `false` when it failed.
        fn apply(&mut self, i: usize, effect: &Effect) {
            let rotation = &mut self.rotations[i];
            match effect {
                Effect::AddFinalizer => rotation.finalizer = true,
                Effect::RemoveFinalizer => {
                    rotation.finalizer = false;
                    if rotation.deleting {
                        rotation.gone = true;
                    }
                }
                Effect::SetDeletionCost(cost) => {
                    if let DoomedSeen::Running { deletion_cost } = &mut rotation.doomed {
                        *deletion_cost = Some(*cost);
                    }
                }
                Effect::HoldHpa { floor, .. } => {
                    let change = hpa::hold(&self.hpa, &Self::name(i), *floor);
                    apply_hpa(&mut self.hpa, &change);
                }
                Effect::ReleaseHpa { floor, .. } => {
                    if let Some(change) = hpa::release(&self.hpa, &Self::name(i), *floor) {
                        apply_hpa(&mut self.hpa, &change);
                    }
                }
                Effect::Scale { from, to } => {
                    // The controller writes only over the replicas it expects.
                    if self.replicas == *from {
                        if to < from {
                            self.pending_removals += from - to;
                        }
                        self.replicas = *to;
                    }
                }
                Effect::Transition { .. } | Effect::Finished { .. } => {}
            }
        }

        /// The ReplicaSet removes the pods a scale-down asked for: the draining doomed pod
        /// first (lowest cost), else a surge pod.
        fn replica_set(&mut self) {
            while self.pending_removals > 0 {
                self.pending_removals -= 1;
                if let Some(r) = self.rotations.iter_mut().find(|r| {
                    r.doomed
                        == DoomedSeen::Running {
                            deletion_cost: Some(DRAINING_COST),
                        }
                }) {
                    r.doomed = DoomedSeen::Terminating;
                }
            }
            for r in &mut self.rotations {
                if r.doomed == DoomedSeen::Terminating {
                    r.doomed = DoomedSeen::Gone;
                }
            }
        }

        fn ended(&self) -> bool {
            self.rotations
                .iter()
                .all(|r| r.gone || (finished(&r.status) && !holds_surge(&r.status)))
        }

        fn run(&mut self, action: &Action, now: &mut DateTime<Utc>) {
            match action {
                Action::Tick(seconds) => *now = time::add(*now, TimeDelta::seconds(*seconds)),
                Action::Delete(i) => {
                    let r = &mut self.rotations[*i];
                    if !r.gone {
                        r.deleting = true;
                        if !r.finalizer {
                            r.gone = true;
                        }
                    }
                }
                Action::Reconcile {
                    i,
                    status_fails,
                    effect_fails,
                } => {
                    if self.rotations[*i].gone {
                        return;
                    }
                    let seen = self.seen(*i, *now);
                    let step = step(&spec_of(*i), &self.rotations[*i].status, &seen);
                    if *status_fails {
                        return;
                    }
                    self.rotations[*i].status = step.status;
                    for (n, effect) in step.effects.iter().enumerate() {
                        if Some(n) == *effect_fails {
                            break;
                        }
                        self.apply(*i, effect);
                    }
                    self.replica_set();
                }
                Action::Batch {
                    i,
                    member_fails,
                    scale_fails,
                } => self.batch(*i, *member_fails, *scale_fails, *now),
            }
        }

        /// The controller's batch: the turn-holder's one-replica change, joined by every
        /// other rotation whose step, taken as if the batch so far were applied, continues
        /// it; the members' intents and effects first, then one scale change.
        fn batch(
            &mut self,
            i: usize,
            member_fails: Option<usize>,
            scale_fails: bool,
            now: DateTime<Utc>,
        ) {
            if self.rotations[i].gone {
                return;
            }
            let seen = self.seen(i, now);
            let first = step(&spec_of(i), &self.rotations[i].status, &seen);
            let Some((from, mut to)) =
                scale_link(&first).filter(|(from, _)| seen.may_scale && *from == self.replicas)
            else {
                return;
            };
            self.rotations[i].status = first.status.clone();
            for effect in &first.effects {
                if !matches!(effect, Effect::Scale { .. }) {
                    self.apply(i, effect);
                }
            }
            let mut joined = 0;
            for j in (0..self.rotations.len()).filter(|j| *j != i) {
                if self.rotations[j].gone {
                    continue;
                }
                let seen = Seen {
                    replicas: Some(to),
                    may_scale: true,
                    may_retry: true,
                    ..self.seen(j, now)
                };
                let member = step(&spec_of(j), &self.rotations[j].status, &seen);
                let Some((_, end)) =
                    scale_link(&member).filter(|link| batch_extends(from, to, *link))
                else {
                    continue;
                };
                self.rotations[j].status = member.status.clone();
                if Some(joined) == member_fails {
                    break;
                }
                for effect in &member.effects {
                    if !matches!(effect, Effect::Scale { .. }) {
                        self.apply(j, effect);
                    }
                }
                to = end;
                joined += 1;
            }
            if !scale_fails {
                self.apply(i, &Effect::Scale { from, to });
            }
            self.replica_set();
        }
    }

    fn apply_hpa(state: &mut HpaState, change: &hpa::HpaChange) {
        state.min_replicas = Some(change.min_replicas);
        for (key, value) in &change.annotations {
            match value {
                Some(value) => state.annotations.insert(key.clone(), value.clone()),
                None => state.annotations.remove(key),
            };
        }
    }

    fn spec_of(i: usize) -> SpotRotationSpec {
        SpotRotationSpec {
            pod: PodRef {
                name: format!("web-{i}"),
                uid: format!("u{i}"),
            },
            ..spec(crate::crd::Strategy::Surge)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn no_sequence_of_failures_leaves_the_workload_off_desired(
            rotations in 1usize..4,
            actions in proptest::collection::vec(action(3), 0..80),
        ) {
            let mut world = World::new(rotations);
            let mut now = t(1);
            let surge_limit = DESIRED + i32::try_from(rotations).unwrap();
            for action in actions.iter().filter(|a| match a {
                Action::Reconcile { i, .. } | Action::Batch { i, .. } | Action::Delete(i) => {
                    *i < rotations
                }
                Action::Tick(_) => true,
            }) {
                world.run(action, &mut now);
                prop_assert!(world.replicas <= surge_limit, "above desired + surge: {}", world.replicas);
                prop_assert!(world.replicas >= DESIRED, "below desired: {}", world.replicas);
            }
            // Then nothing fails any more, time runs on, and every rotation ends.
            for round in 0..400 {
                if world.ended() {
                    break;
                }
                let i = round % rotations;
                world.run(
                    &Action::Reconcile { i, status_fails: false, effect_fails: None },
                    &mut now,
                );
                if round % rotations == 0 {
                    now = time::add(now, TimeDelta::seconds(2));
                }
                prop_assert!(world.replicas <= surge_limit && world.replicas >= DESIRED, "round {round} replicas {} {:#?}", world.replicas, world.rotations.iter().map(|r| (&r.status.phase, &r.status.surge, &r.status.take_back, r.doomed)).collect::<Vec<_>>());
            }
            prop_assert!(world.ended(), "rotations never ended: {:?}", world.rotations);
            prop_assert_eq!(world.replicas, DESIRED, "{:?}", world.rotations);
            prop_assert_eq!(world.hpa.min_replicas, Some(USER_MIN), "{:?} {:?}", world.hpa, world.rotations);
            prop_assert!(world.hpa.annotations.is_empty(), "{:?}", world.hpa.annotations);
        }
    }
}
