//! Spot release planning: deadlines, when to stop asking the Eviction API and escalate, and
//! which doomed pods to surge in a storm. Pure functions over times and counts.
//!
//! Times: a notice announces the release time `R`. The working deadline is `D = R - margin`
//! (the margin absorbs clock skew and ECI's own timing). An application needs its grace period
//! `g` between SIGTERM and the end, so its pod must be deleted by `D - g`; past that, asking
//! politely (eviction, which a PodDisruptionBudget may refuse) would let the instance vanish
//! under a running process.

use chrono::{DateTime, TimeDelta, Utc};

/// Default safety margin before the announced release.
pub const DEFAULT_MARGIN: TimeDelta = TimeDelta::seconds(15);
/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// The deadlines of one doomed pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// When ECI reclaims the instance.
    pub release_at: DateTime<Utc>,
    /// `release_at - margin`: everything must be over by then.
    pub deadline: DateTime<Utc>,
    /// The last moment a deletion still gives the application its grace period (capped to
    /// what the window allows): eviction attempts stop here.
    pub escalate_at: DateTime<Utc>,
}

impl Deadlines {
    /// `noticed_at` is when the notice was first seen (late sightings shrink the window).
    pub fn new(
        noticed_at: DateTime<Utc>,
        release_at: DateTime<Utc>,
        margin: TimeDelta,
        grace_seconds: i64,
    ) -> Self {
        let deadline = release_at - margin.max(TimeDelta::zero());
        let window = (deadline - noticed_at).max(TimeDelta::zero());
        let grace = TimeDelta::seconds(grace_seconds.max(0)).min(window);
        Self {
            release_at,
            deadline,
            escalate_at: deadline - grace,
        }
    }

    /// Grace that still fits if the pod is deleted at `now`.
    pub fn grace_that_fits(&self, now: DateTime<Utc>) -> i64 {
        (self.deadline - now).num_seconds().max(0)
    }
}

/// What to do when the deadline approaches and eviction has not gone through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDeadline {
    /// Delete the pod with a grace period that still fits (default).
    #[default]
    Delete,
    /// Only record; the instance will vanish at release.
    Leave,
}

/// The next step for a pod being evicted before a spot release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionStep {
    /// Call the Eviction API now.
    Evict,
    /// Eviction was refused (PDB); try again at this time.
    RetryAt(DateTime<Utc>),
    /// Delete now with this grace period (seconds): SIGTERM before the instance vanishes.
    Escalate { grace_seconds: i64 },
    /// The policy says leave it; record that the deadline passed.
    Leave,
}

/// Decides the next step at `now`. `last_refusal` is when the Eviction API last answered 429
/// and `backoff` the pause the caller drew for this attempt (jittered, growing).
pub fn eviction_step(
    deadlines: &Deadlines,
    now: DateTime<Utc>,
    last_refusal: Option<DateTime<Utc>>,
    backoff: TimeDelta,
    on_deadline: OnDeadline,
) -> EvictionStep {
    if now >= deadlines.escalate_at {
        return match on_deadline {
            OnDeadline::Delete => EvictionStep::Escalate {
                grace_seconds: deadlines.grace_that_fits(now),
            },
            OnDeadline::Leave => EvictionStep::Leave,
        };
    }
    match last_refusal {
        None => EvictionStep::Evict,
        Some(refused_at) => {
            let next = refused_at + backoff;
            if next <= now {
                EvictionStep::Evict
            } else {
                // Never sleep past the moment escalation is due.
                EvictionStep::RetryAt(next.min(deadlines.escalate_at))
            }
        }
    }
}

/// Parses a Go-style duration (`90s`, `2m`, `1m30s`, `500ms`, `1h`).
pub fn parse_duration(text: &str) -> Option<TimeDelta> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = TimeDelta::zero();
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|end| *end > 0)?;
        let value: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1.0, 2)
        } else if rest.starts_with('s') {
            (1_000.0, 1)
        } else if rest.starts_with('m') {
            (60_000.0, 1)
        } else if rest.starts_with('h') {
            (3_600_000.0, 1)
        } else {
            return None;
        };
        rest = &rest[unit_len..];
        total += TimeDelta::milliseconds((value * unit_ms).round() as i64);
    }
    Some(total)
}

/// Whether a policy with this target/selector covers a pod with `labels` that belongs to
/// `workload` (its controlling Deployment, ReplicaSet or StatefulSet, if any).
pub fn policy_covers(
    spec: &crate::crd::SpotRotationPolicySpec,
    labels: &std::collections::BTreeMap<String, String>,
    workload: Option<&crate::crd::WorkloadRef>,
) -> bool {
    match (&spec.target_ref, &spec.selector) {
        (Some(target), _) => workload == Some(target),
        (None, Some(selector)) => crate::profile::selector_matches(selector, labels),
        (None, None) => false,
    }
}

/// `maxSurge` as a count: an integer, or a percentage of `replicas` rounded up (as the
/// Deployment controller does), at least 1 when replicas exist.
pub fn resolve_max_surge(value: &MaxSurge, replicas: i32) -> i32 {
    let count = match value {
        MaxSurge::Count(count) => *count,
        MaxSurge::Percent(percent) => {
            (f64::from(replicas.max(0)) * f64::from(*percent) / 100.0).ceil() as i32
        }
    };
    if replicas > 0 {
        count.max(1)
    } else {
        count.max(0)
    }
}

/// `maxSurge` of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxSurge {
    Count(i32),
    Percent(i32),
}

impl MaxSurge {
    /// Parses `3` or `25%`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        match text.strip_suffix('%') {
            Some(percent) => percent
                .parse()
                .ok()
                .filter(|p| (0..=100).contains(p))
                .map(MaxSurge::Percent),
            None => text.parse().ok().filter(|c| *c >= 0).map(MaxSurge::Count),
        }
    }
}

/// A pod under a spot notice, waiting for a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub pod: String,
    /// The workload it belongs to (`Deployment/ns/name`), if surgeable.
    pub workload: Option<String>,
    pub deadlines: Deadlines,
}

/// How one doomed pod will be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Surge a replacement first.
    Surge,
    /// Wait for surge capacity (still time for a replacement later).
    Queue,
    /// No time (or no workload) for a replacement: hand it to eviction now.
    Evict,
}

/// Plans a storm of notices: earliest deadline first, surging while the workload's budget
/// (`budget(workload)` = surges it may still add) and the global `max_concurrent` allow, and
/// only for pods whose replacement can be Ready (`expected_ready` from now) before they must
/// start terminating. The rest queue if a replacement could still make it later, or are
/// evicted now.
pub fn plan_storm(
    mut doomed: Vec<Doomed>,
    now: DateTime<Utc>,
    expected_ready: TimeDelta,
    mut budget: impl FnMut(&str) -> i32,
    max_concurrent: usize,
) -> Vec<(Doomed, Plan)> {
    doomed.sort_by(|a, b| {
        a.deadlines
            .escalate_at
            .cmp(&b.deadlines.escalate_at)
            .then_with(|| a.pod.cmp(&b.pod))
    });
    let mut used: std::collections::HashMap<String, i32> = std::collections::HashMap::new();
    let mut surging = 0usize;
    doomed
        .into_iter()
        .map(|pod| {
            let in_time = now + expected_ready <= pod.deadlines.escalate_at;
            let plan = match &pod.workload {
                Some(workload) if in_time => {
                    let taken = used.entry(workload.clone()).or_insert(0);
                    if surging < max_concurrent && *taken < budget(workload) {
                        *taken += 1;
                        surging += 1;
                        Plan::Surge
                    } else {
                        Plan::Queue
                    }
                }
                _ => Plan::Evict,
            };
            (pod, plan)
        })
        .collect()
}

/// Phases of a `SpotRotation` (the CRD's own enum).
pub use crate::crd::RotationPhase as Phase;

impl Phase {
    /// Completed and Failed are final; a Degraded rotation is final once its pod is gone,
    /// which the rotation's status records.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed)
    }
}

/// What the rotation controller observed this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observation {
    /// The workload was scaled up for this rotation.
    pub surged: bool,
    /// The replacement pod is Ready.
    pub replacement_ready: bool,
    /// The doomed pod no longer exists (or its deletion finished).
    pub doomed_gone: bool,
    /// The doomed pod is being terminated (scale-down, eviction or escalation).
    pub doomed_terminating: bool,
    /// It is past the time a replacement could still help (`escalate_at`).
    pub past_escalation: bool,
    /// The instance has been released.
    pub released: bool,
}

/// The next phase. Surge succeeded → Draining → Completed. A replacement that is not Ready
/// in time hands the pod to eviction (Degraded, which stays the final word once the pod is
/// gone: it left with SIGTERM, but capacity dipped). A pod still running, not terminating,
/// when its instance is released died without SIGTERM: Failed.
pub fn next_phase(phase: Phase, seen: Observation) -> Phase {
    if phase.is_finished() {
        return phase;
    }
    if seen.released && !seen.doomed_gone && !seen.doomed_terminating {
        return Phase::Failed;
    }
    if seen.doomed_gone {
        return if phase == Phase::Degraded {
            Phase::Degraded
        } else {
            Phase::Completed
        };
    }
    match phase {
        Phase::Pending | Phase::Surging if seen.past_escalation && !seen.replacement_ready => {
            Phase::Degraded
        }
        Phase::Pending if seen.surged => Phase::Surging,
        Phase::Surging if seen.replacement_ready => Phase::Draining,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn deadlines_leave_the_grace_period_before_the_margin() {
        let d = Deadlines::new(t(0), t(180), TimeDelta::seconds(15), 30);
        assert_eq!(d.deadline, t(165));
        assert_eq!(d.escalate_at, t(135));
        assert_eq!(d.grace_that_fits(t(135)), 30);
    }

    #[test]
    fn grace_longer_than_the_window_escalates_at_once_with_what_fits() {
        let d = Deadlines::new(t(0), t(180), TimeDelta::seconds(15), 600);
        assert_eq!(d.escalate_at, t(0));
        assert_eq!(
            eviction_step(&d, t(0), None, TimeDelta::zero(), OnDeadline::Delete),
            EvictionStep::Escalate { grace_seconds: 165 }
        );
    }

    #[test]
    fn a_notice_seen_late_shrinks_the_window() {
        let d = Deadlines::new(t(150), t(180), TimeDelta::seconds(15), 30);
        assert_eq!(d.escalate_at, t(150));
        assert_eq!(
            eviction_step(&d, t(150), None, TimeDelta::zero(), OnDeadline::Delete),
            EvictionStep::Escalate { grace_seconds: 15 }
        );
        let past = Deadlines::new(t(200), t(180), TimeDelta::seconds(15), 30);
        assert_eq!(
            eviction_step(&past, t(200), None, TimeDelta::zero(), OnDeadline::Delete),
            EvictionStep::Escalate { grace_seconds: 0 }
        );
    }

    #[test]
    fn refused_evictions_retry_but_never_past_escalation() {
        let d = Deadlines::new(t(0), t(180), TimeDelta::seconds(15), 30);
        assert_eq!(
            eviction_step(&d, t(10), None, TimeDelta::zero(), OnDeadline::Delete),
            EvictionStep::Evict
        );
        assert_eq!(
            eviction_step(
                &d,
                t(11),
                Some(t(10)),
                TimeDelta::seconds(5),
                OnDeadline::Delete
            ),
            EvictionStep::RetryAt(t(15))
        );
        assert_eq!(
            eviction_step(
                &d,
                t(16),
                Some(t(10)),
                TimeDelta::seconds(5),
                OnDeadline::Delete
            ),
            EvictionStep::Evict
        );
        assert_eq!(
            eviction_step(
                &d,
                t(130),
                Some(t(129)),
                TimeDelta::seconds(60),
                OnDeadline::Delete
            ),
            EvictionStep::RetryAt(t(135))
        );
        assert_eq!(
            eviction_step(
                &d,
                t(135),
                Some(t(129)),
                TimeDelta::seconds(60),
                OnDeadline::Leave
            ),
            EvictionStep::Leave
        );
    }

    #[test]
    fn escalation_always_delivers_sigterm_before_release() {
        for notice in (0..200).step_by(7) {
            for grace in [0, 1, 30, 90, 165, 1000] {
                for margin in [0, 5, 15] {
                    let d = Deadlines::new(t(notice), t(180), TimeDelta::seconds(margin), grace);
                    let mut now = t(notice);
                    let mut refusal = None;
                    loop {
                        match eviction_step(
                            &d,
                            now,
                            refusal,
                            TimeDelta::seconds(4),
                            OnDeadline::Delete,
                        ) {
                            EvictionStep::Evict => {
                                refusal = Some(now);
                                now += TimeDelta::seconds(1);
                            }
                            EvictionStep::RetryAt(at) => {
                                assert!(at > now && at <= d.escalate_at);
                                now = at;
                            }
                            EvictionStep::Escalate { grace_seconds } => {
                                assert!(now <= d.escalate_at.max(t(notice)), "escalated late");
                                assert!(
                                    now + TimeDelta::seconds(grace_seconds) <= d.deadline.max(now)
                                );
                                if t(notice) <= d.escalate_at {
                                    assert_eq!(
                                        grace_seconds,
                                        grace.min((d.deadline - t(notice)).num_seconds().max(0))
                                    );
                                }
                                break;
                            }
                            EvictionStep::Leave => unreachable!(),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn max_surge_counts_and_percentages() {
        assert_eq!(MaxSurge::parse("25%"), Some(MaxSurge::Percent(25)));
        assert_eq!(MaxSurge::parse("3"), Some(MaxSurge::Count(3)));
        assert_eq!(MaxSurge::parse("150%"), None);
        assert_eq!(MaxSurge::parse("-1"), None);
        assert_eq!(resolve_max_surge(&MaxSurge::Percent(25), 10), 3);
        assert_eq!(resolve_max_surge(&MaxSurge::Percent(1), 10), 1);
        assert_eq!(resolve_max_surge(&MaxSurge::Count(0), 10), 1);
        assert_eq!(resolve_max_surge(&MaxSurge::Count(2), 0), 2);
    }

    fn doomed(pod: &str, workload: Option<&str>, notice: i64) -> Doomed {
        Doomed {
            pod: pod.into(),
            workload: workload.map(str::to_string),
            deadlines: Deadlines::new(t(notice), t(notice + 180), DEFAULT_MARGIN, 30),
        }
    }

    #[test]
    fn storms_are_planned_earliest_deadline_first_within_budgets() {
        let storm = vec![
            doomed("late", Some("web"), 20),
            doomed("early", Some("web"), 0),
            doomed("middle", Some("web"), 10),
            doomed("other", Some("api"), 5),
            doomed("orphan", None, 1),
        ];
        let plans = plan_storm(
            storm,
            t(0),
            TimeDelta::seconds(40),
            |w| if w == "web" { 2 } else { 5 },
            10,
        );
        let order: Vec<(&str, Plan)> = plans.iter().map(|(d, p)| (d.pod.as_str(), *p)).collect();
        assert_eq!(
            order,
            [
                ("early", Plan::Surge),
                ("orphan", Plan::Evict),
                ("other", Plan::Surge),
                ("middle", Plan::Surge),
                ("late", Plan::Queue),
            ]
        );
    }

    #[test]
    fn storms_respect_max_concurrent_and_evict_what_cannot_make_it() {
        let storm: Vec<Doomed> = (0..5)
            .map(|i| doomed(&format!("p{i}"), Some("web"), 0))
            .collect();
        let plans = plan_storm(storm.clone(), t(0), TimeDelta::seconds(40), |_| 100, 2);
        assert_eq!(plans.iter().filter(|(_, p)| *p == Plan::Surge).count(), 2);
        assert_eq!(plans.iter().filter(|(_, p)| *p == Plan::Queue).count(), 3);
        let too_late = plan_storm(storm, t(120), TimeDelta::seconds(40), |_| 100, 10);
        assert!(too_late.iter().all(|(_, p)| *p == Plan::Evict));
    }

    #[test]
    fn rotation_phases() {
        let seen = |f: fn(&mut Observation)| {
            let mut o = Observation::default();
            f(&mut o);
            o
        };
        assert_eq!(
            next_phase(Phase::Pending, Observation::default()),
            Phase::Pending
        );
        assert_eq!(
            next_phase(Phase::Pending, seen(|o| o.surged = true)),
            Phase::Surging
        );
        assert_eq!(
            next_phase(Phase::Surging, seen(|o| o.replacement_ready = true)),
            Phase::Draining
        );
        assert_eq!(
            next_phase(Phase::Draining, seen(|o| o.doomed_gone = true)),
            Phase::Completed
        );
        assert_eq!(
            next_phase(Phase::Surging, seen(|o| o.past_escalation = true)),
            Phase::Degraded
        );
        assert_eq!(
            next_phase(Phase::Pending, seen(|o| o.past_escalation = true)),
            Phase::Degraded
        );
        assert_eq!(
            next_phase(Phase::Draining, seen(|o| o.released = true)),
            Phase::Failed
        );
        let terminating_at_release = seen(|o| {
            o.released = true;
            o.doomed_terminating = true;
        });
        assert_eq!(
            next_phase(Phase::Degraded, terminating_at_release),
            Phase::Degraded
        );
        assert_eq!(
            next_phase(Phase::Degraded, seen(|o| o.doomed_gone = true)),
            Phase::Degraded
        );
        assert_eq!(
            next_phase(Phase::Completed, seen(|o| o.released = true)),
            Phase::Completed
        );
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("90s"), Some(TimeDelta::seconds(90)));
        assert_eq!(parse_duration("1m30s"), Some(TimeDelta::seconds(90)));
        assert_eq!(parse_duration("500ms"), Some(TimeDelta::milliseconds(500)));
        assert_eq!(parse_duration("1.5h"), Some(TimeDelta::minutes(90)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn policies_cover_their_target_or_their_selector() {
        use crate::crd::{SpotRotationPolicySpec, WorkloadKind, WorkloadRef};
        let web = WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "web".into(),
        };
        let by_target: SpotRotationPolicySpec = serde_json::from_value(
            serde_json::json!({"targetRef": {"kind": "Deployment", "name": "web"}}),
        )
        .unwrap();
        let labels = std::collections::BTreeMap::from([("app".to_string(), "web".to_string())]);
        assert!(policy_covers(&by_target, &labels, Some(&web)));
        let other = WorkloadRef {
            kind: WorkloadKind::ReplicaSet,
            name: "web".into(),
        };
        assert!(!policy_covers(&by_target, &labels, Some(&other)));
        assert!(!policy_covers(&by_target, &labels, None));
        let by_selector: SpotRotationPolicySpec = serde_json::from_value(
            serde_json::json!({"selector": {"matchLabels": {"app": "web"}}}),
        )
        .unwrap();
        assert!(policy_covers(&by_selector, &labels, None));
        assert!(!policy_covers(
            &by_selector,
            &std::collections::BTreeMap::new(),
            None
        ));
    }
}
