//! Spot release planning: deadlines, when to stop asking the Eviction API and escalate, and
//! which doomed pods to surge in a storm. Pure functions over times and counts.
//!
//! Times: a notice announces the release time `R`. The working deadline is `D = R - margin`
//! (the margin absorbs clock skew and ECI's own timing). An application needs its grace period
//! `g` between SIGTERM and the end, so its pod must be deleted by `D - g`; past that, asking
//! politely (eviction, which a PodDisruptionBudget may refuse) would let the instance vanish
//! under a running process.

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{SpotRotationPolicySpec, WorkloadRef};
use crate::time;

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
        let deadline = time::sub(release_at, margin.max(TimeDelta::zero()));
        let window = deadline
            .signed_duration_since(noticed_at)
            .max(TimeDelta::zero());
        let grace = time::seconds(grace_seconds.max(0)).min(window);
        Self {
            release_at,
            deadline,
            escalate_at: time::sub(deadline, grace),
        }
    }

    /// Grace that still fits if the pod is deleted at `now`.
    pub fn grace_that_fits(&self, now: DateTime<Utc>) -> i64 {
        (self.deadline - now).num_seconds().max(0)
    }
}

/// What to do when the deadline approaches and eviction has not gone through (the policy's
/// `onDeadline`; pods without a policy get its default, `Delete`).
pub use crate::crd::OnDeadline;

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
            let next = time::add(refused_at, backoff);
            if next <= now {
                EvictionStep::Evict
            } else {
                // Never sleep past the moment escalation is due.
                EvictionStep::RetryAt(next.min(deadlines.escalate_at))
            }
        }
    }
}

/// Parses a Go-style duration (`90s`, `2m`, `1m30s`, `500ms`, `1h`); an absurd one saturates
/// at [`TimeDelta::MAX`] (callers bound it).
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
        total = time::sum(total, time::milliseconds(value * unit_ms));
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
/// Deployment controller does), at least 1 when replicas exist and the percentage is not 0.
/// Zero (`0` or `0%`) means no surge: the policy rotates by eviction.
pub fn resolve_max_surge(value: &MaxSurge, replicas: i32) -> i32 {
    match value {
        MaxSurge::Count(count) => (*count).max(0),
        MaxSurge::Percent(percent) if *percent <= 0 => 0,
        MaxSurge::Percent(percent) => {
            let count = (f64::from(replicas.max(0)) * f64::from(*percent) / 100.0).ceil() as i32;
            if replicas > 0 {
                count.max(1)
            } else {
                count.max(0)
            }
        }
    }
}

impl MaxSurge {
    /// Whether this `maxSurge` allows no surge at all, whatever the replicas.
    pub fn is_zero(&self) -> bool {
        matches!(self, MaxSurge::Count(0) | MaxSurge::Percent(0))
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

/// `maxSurge` when a policy does not say.
pub const DEFAULT_MAX_SURGE: MaxSurge = MaxSurge::Percent(25);
/// `maxConcurrent` when a policy does not say.
pub const DEFAULT_MAX_CONCURRENT: i32 = 10;
/// `historyLimit` when a policy does not say.
pub const DEFAULT_HISTORY_LIMIT: i32 = 20;
/// The longest `deadlineMargin` and `readinessTimeout`, as the CRD schema states it. ECI
/// announces a release minutes ahead, so nothing longer can mean anything else: a margin of
/// an hour already escalates at once, a readiness timeout of an hour already waits for the
/// whole window.
pub const MAX_POLICY_DURATION: TimeDelta = TimeDelta::hours(1);
/// [`MAX_POLICY_DURATION`] as the policy spells it.
pub const MAX_POLICY_DURATION_TEXT: &str = "1h";
/// The largest `maxConcurrent`.
pub const MAX_CONCURRENT: i32 = 1000;
/// The largest `historyLimit`.
pub const MAX_HISTORY_LIMIT: i32 = 1000;
/// The largest `maxSurge` count.
pub const MAX_SURGE_COUNT: i32 = 10_000;

/// A `SpotRotationPolicy` spec with its defaults filled in and every value within the bounds
/// its CRD schema states. Values that reach vk-eci out of bounds anyway (an object stored
/// under an older CRD, a value the schema cannot express) are clamped or, when unreadable,
/// replaced by the default; `problems` says which and why, for the controllers to report.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySettings {
    pub margin: TimeDelta,
    pub readiness_timeout: Option<TimeDelta>,
    pub max_surge: MaxSurge,
    pub max_concurrent: i32,
    pub history_limit: i32,
    pub problems: Vec<String>,
}

impl PolicySettings {
    pub fn of(spec: &SpotRotationPolicySpec) -> Self {
        let mut problems = Vec::new();
        let mut duration = |field: &str, text: Option<&str>| {
            let text = text?;
            let Some(value) = parse_duration(text) else {
                problems.push(format!(
                    "{field} `{text}` is not a duration such as 90s; using the default"
                ));
                return None;
            };
            if value > MAX_POLICY_DURATION {
                problems.push(format!(
                    "{field} `{text}` is above the maximum {MAX_POLICY_DURATION_TEXT}; using {MAX_POLICY_DURATION_TEXT}"
                ));
                return Some(MAX_POLICY_DURATION);
            }
            Some(value)
        };
        let margin =
            duration("deadlineMargin", spec.deadline_margin.as_deref()).unwrap_or(DEFAULT_MARGIN);
        let readiness_timeout = duration("readinessTimeout", spec.readiness_timeout.as_deref());
        let max_surge = match &spec.max_surge {
            None => DEFAULT_MAX_SURGE,
            Some(IntOrString::Int(count)) => {
                let bounded = (*count).clamp(0, MAX_SURGE_COUNT);
                if bounded != *count {
                    problems.push(format!(
                        "maxSurge {count} is outside 0 to {MAX_SURGE_COUNT}; using {bounded}"
                    ));
                }
                MaxSurge::Count(bounded)
            }
            Some(IntOrString::String(text)) => match MaxSurge::parse(text) {
                Some(MaxSurge::Count(count)) if count > MAX_SURGE_COUNT => {
                    problems.push(format!(
                        "maxSurge {count} is above {MAX_SURGE_COUNT}; using {MAX_SURGE_COUNT}"
                    ));
                    MaxSurge::Count(MAX_SURGE_COUNT)
                }
                Some(value) => value,
                None => {
                    problems.push(format!(
                        "maxSurge `{text}` is neither a count nor a percentage from 0% to 100%; using 25%"
                    ));
                    DEFAULT_MAX_SURGE
                }
            },
        };
        let mut count = |field: &str, value: Option<i32>, default: i32, min: i32, max: i32| {
            let value = value.unwrap_or(default);
            let bounded = value.clamp(min, max);
            if bounded != value {
                problems.push(format!(
                    "{field} {value} is outside {min} to {max}; using {bounded}"
                ));
            }
            bounded
        };
        let max_concurrent = count(
            "maxConcurrent",
            spec.max_concurrent,
            DEFAULT_MAX_CONCURRENT,
            1,
            MAX_CONCURRENT,
        );
        let history_limit = count(
            "historyLimit",
            spec.history_limit,
            DEFAULT_HISTORY_LIMIT,
            0,
            MAX_HISTORY_LIMIT,
        );
        Self {
            margin,
            readiness_timeout,
            max_surge,
            max_concurrent,
            history_limit,
            problems,
        }
    }
}

/// A pod under a spot notice, waiting for a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub pod: String,
    /// The workload it belongs to (in the pod's namespace), if surgeable.
    pub workload: Option<WorkloadRef>,
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
    mut budget: impl FnMut(&WorkloadRef) -> i32,
    max_concurrent: usize,
) -> Vec<(Doomed, Plan)> {
    doomed.sort_by(|a, b| {
        a.deadlines
            .escalate_at
            .cmp(&b.deadlines.escalate_at)
            .then_with(|| a.pod.cmp(&b.pod))
    });
    let mut used: std::collections::HashMap<WorkloadRef, i32> = std::collections::HashMap::new();
    let mut surging = 0usize;
    doomed
        .into_iter()
        .map(|pod| {
            let plan = match &pod.workload {
                Some(workload) if in_time(&pod.deadlines, now, expected_ready) => {
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

/// Whether a replacement surged `now` can be Ready (`expected_ready` later) before the pod
/// must start terminating.
fn in_time(deadlines: &Deadlines, now: DateTime<Utc>, expected_ready: TimeDelta) -> bool {
    time::add(now, expected_ready) <= deadlines.escalate_at
}

/// Whether [`plan_storm`] can only queue a doomed pod with a workload, whatever the other
/// notices and the workload's budget: a replacement still has time, and `holding` rotations
/// already take all `max_concurrent` surges. Such a notice need not look at its workload
/// (nor wait for its turn) to know it waits.
pub fn waits_for_a_slot(
    deadlines: &Deadlines,
    now: DateTime<Utc>,
    expected_ready: TimeDelta,
    holding: usize,
    max_concurrent: usize,
) -> bool {
    now < deadlines.escalate_at
        && in_time(deadlines, now, expected_ready)
        && holding >= max_concurrent
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
        assert_eq!(resolve_max_surge(&MaxSurge::Count(2), 0), 2);
    }

    #[test]
    fn max_surge_zero_means_no_surge() {
        assert_eq!(resolve_max_surge(&MaxSurge::Count(0), 10), 0);
        assert_eq!(resolve_max_surge(&MaxSurge::Percent(0), 10), 0);
        assert!(MaxSurge::Count(0).is_zero() && MaxSurge::Percent(0).is_zero());
        assert!(!MaxSurge::Percent(1).is_zero());
    }

    fn deployment(name: &str) -> WorkloadRef {
        WorkloadRef {
            kind: crate::crd::WorkloadKind::Deployment,
            name: name.into(),
        }
    }

    fn doomed(pod: &str, workload: Option<&str>, notice: i64) -> Doomed {
        Doomed {
            pod: pod.into(),
            workload: workload.map(deployment),
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
            |w| if w.name == "web" { 2 } else { 5 },
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
    fn the_extreme_values_of_issue_11_never_panic() {
        let huge = parse_duration("3000000000h").unwrap();
        let d = Deadlines::new(t(0), t(180), huge, 30);
        assert_eq!(d.deadline, DateTime::<Utc>::MIN_UTC);
        assert_eq!(d.escalate_at, d.deadline);
        assert_eq!(
            eviction_step(&d, t(0), None, TimeDelta::zero(), OnDeadline::Delete),
            EvictionStep::Escalate { grace_seconds: 0 }
        );
        assert_eq!(
            parse_duration("9223372036854775807ms1ms"),
            Some(TimeDelta::MAX)
        );
        let d = Deadlines::new(t(0), t(180), TimeDelta::seconds(15), i64::MAX);
        assert_eq!(d.escalate_at, t(0));
        let d = Deadlines::new(t(0), t(180), TimeDelta::MIN, 30);
        assert_eq!(d.deadline, t(180), "a negative margin is no margin");
        let refused = eviction_step(
            &Deadlines::new(t(0), t(180), TimeDelta::seconds(15), 30),
            t(10),
            Some(t(5)),
            TimeDelta::MAX,
            OnDeadline::Delete,
        );
        assert_eq!(refused, EvictionStep::RetryAt(t(135)));
        let plans = plan_storm(
            vec![Doomed {
                pod: "a".into(),
                workload: Some(deployment("w")),
                deadlines: Deadlines::new(t(0), t(180), TimeDelta::zero(), 30),
            }],
            t(0),
            TimeDelta::MAX,
            |_| 1,
            1,
        );
        assert_eq!(plans[0].1, Plan::Evict);
    }

    #[test]
    fn policy_settings_bound_what_the_schema_bounds_and_say_so() {
        let spec = |value: serde_json::Value| -> SpotRotationPolicySpec {
            serde_json::from_value(value).unwrap()
        };
        let fine = PolicySettings::of(&spec(serde_json::json!({
            "selector": {}, "deadlineMargin": "30s", "readinessTimeout": "2m",
            "maxSurge": "50%", "maxConcurrent": 3, "historyLimit": 5,
        })));
        assert_eq!(
            fine,
            PolicySettings {
                margin: TimeDelta::seconds(30),
                readiness_timeout: Some(TimeDelta::minutes(2)),
                max_surge: MaxSurge::Percent(50),
                max_concurrent: 3,
                history_limit: 5,
                problems: Vec::new(),
            }
        );
        let defaults = PolicySettings::of(&spec(serde_json::json!({"selector": {}})));
        assert_eq!(
            (
                defaults.margin,
                defaults.readiness_timeout,
                defaults.max_surge
            ),
            (DEFAULT_MARGIN, None, DEFAULT_MAX_SURGE)
        );
        assert_eq!(
            (defaults.max_concurrent, defaults.history_limit),
            (DEFAULT_MAX_CONCURRENT, DEFAULT_HISTORY_LIMIT)
        );
        assert!(defaults.problems.is_empty());

        let absurd = PolicySettings::of(&spec(serde_json::json!({
            "selector": {}, "deadlineMargin": "3000000000h",
            "readinessTimeout": "9223372036854775807ms1ms", "maxSurge": 2147483647,
            "maxConcurrent": -4, "historyLimit": 2147483647,
        })));
        assert_eq!(absurd.margin, MAX_POLICY_DURATION);
        assert_eq!(absurd.readiness_timeout, Some(MAX_POLICY_DURATION));
        assert_eq!(absurd.max_surge, MaxSurge::Count(MAX_SURGE_COUNT));
        assert_eq!(absurd.max_concurrent, 1);
        assert_eq!(absurd.history_limit, MAX_HISTORY_LIMIT);
        assert_eq!(absurd.problems.len(), 5, "{:?}", absurd.problems);
        assert!(
            absurd.problems[0]
                .contains("deadlineMargin `3000000000h` is above the maximum 1h; using 1h"),
            "{:?}",
            absurd.problems
        );

        let unreadable = PolicySettings::of(&spec(serde_json::json!({
            "selector": {}, "deadlineMargin": "soon", "maxSurge": "150%",
        })));
        assert_eq!(unreadable.margin, DEFAULT_MARGIN);
        assert_eq!(unreadable.max_surge, DEFAULT_MAX_SURGE);
        assert_eq!(unreadable.problems.len(), 2, "{:?}", unreadable.problems);
    }

    mod extremes {
        use proptest::prelude::*;

        use super::super::*;
        use super::deployment;

        /// Any time a Kubernetes object can carry (years 0001 to 9999).
        fn kube_time() -> impl Strategy<Value = DateTime<Utc>> {
            (-62_135_596_800i64..=253_402_300_799)
                .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default())
        }

        fn any_delta() -> impl Strategy<Value = TimeDelta> {
            prop_oneof![
                Just(TimeDelta::MAX),
                Just(TimeDelta::MIN),
                any::<i64>().prop_map(time::seconds),
                (-1_000_000i64..1_000_000).prop_map(time::seconds),
                any::<f64>().prop_map(time::milliseconds),
            ]
        }

        fn any_grace() -> impl Strategy<Value = i64> {
            prop_oneof![any::<i64>(), -10i64..100_000]
        }

        fn deadlines() -> impl Strategy<Value = Deadlines> {
            (kube_time(), kube_time(), any_delta(), any_grace()).prop_map(
                |(notice, release, margin, grace)| Deadlines::new(notice, release, margin, grace),
            )
        }

        proptest! {
            #[test]
            fn deadlines_are_ordered(
                noticed in kube_time(),
                release in kube_time(),
                margin in any_delta(),
                grace in any_grace(),
            ) {
                let d = Deadlines::new(noticed, release, margin, grace);
                prop_assert!(d.escalate_at <= d.deadline);
                prop_assert!(d.deadline <= d.release_at);
                prop_assert!(d.escalate_at >= noticed.min(d.deadline));
            }

            #[test]
            fn eviction_never_waits_past_escalation_and_sigterm_fits(
                d in deadlines(),
                now in kube_time(),
                refused in proptest::option::of(kube_time()),
                backoff in any_delta(),
                leave in any::<bool>(),
            ) {
                let policy = if leave { OnDeadline::Leave } else { OnDeadline::Delete };
                match eviction_step(&d, now, refused, backoff, policy) {
                    EvictionStep::RetryAt(at) => {
                        prop_assert!(now < at && at <= d.escalate_at);
                    }
                    EvictionStep::Escalate { grace_seconds } => {
                        prop_assert!(now >= d.escalate_at && grace_seconds >= 0);
                        prop_assert!(time::add(now, time::seconds(grace_seconds)) <= d.deadline.max(now));
                    }
                    EvictionStep::Evict => prop_assert!(now < d.escalate_at),
                    EvictionStep::Leave => prop_assert!(leave && now >= d.escalate_at),
                }
            }

            #[test]
            fn storms_are_planned_in_deadline_order(
                all in proptest::collection::vec(deadlines(), 0..8),
                now in kube_time(),
                expected_ready in any_delta(),
                budget in any::<i32>(),
                max_concurrent in any::<usize>(),
            ) {
                let doomed = all
                    .into_iter()
                    .enumerate()
                    .map(|(i, deadlines)| Doomed {
                        pod: format!("p{i}"),
                        workload: (i % 2 == 0).then(|| deployment("w")),
                        deadlines,
                    })
                    .collect();
                let plans = plan_storm(doomed, now, expected_ready, |_| budget, max_concurrent);
                prop_assert!(plans
                    .windows(2)
                    .all(|w| w[0].0.deadlines.escalate_at <= w[1].0.deadlines.escalate_at));
                let surging = plans.iter().filter(|(_, p)| *p == Plan::Surge).count();
                prop_assert!(surging <= max_concurrent);
            }

            #[test]
            fn a_notice_waiting_for_a_slot_is_always_queued_by_the_plan(
                others in proptest::collection::vec(deadlines(), 0..8),
                mine in deadlines(),
                now in kube_time(),
                expected_ready in any_delta(),
                budget in any::<i32>(),
                holding in 0usize..8,
                max_concurrent in 0usize..8,
            ) {
                let doomed: Vec<Doomed> = others
                    .into_iter()
                    .enumerate()
                    .map(|(i, deadlines)| (format!("p{i}"), deadlines))
                    .chain([("mine".to_string(), mine)])
                    .map(|(pod, deadlines)| Doomed {
                        pod,
                        workload: Some(deployment("w")),
                        deadlines,
                    })
                    .collect();
                if waits_for_a_slot(&mine, now, expected_ready, holding, max_concurrent) {
                    let free = max_concurrent.saturating_sub(holding);
                    let plans = plan_storm(doomed, now, expected_ready, |_| budget, free);
                    let plan = plans.iter().find(|(d, _)| d.pod == "mine").map(|(_, p)| *p);
                    prop_assert_eq!(plan, Some(Plan::Queue));
                }
            }

            #[test]
            fn any_text_parses_without_panic(text in "\\PC{0,40}") {
                if let Some(value) = parse_duration(&text) {
                    prop_assert!(value >= TimeDelta::zero());
                }
            }

            #[test]
            fn durations_the_schema_admits_parse(
                parts in proptest::collection::vec(
                    (0u64..10_000_000, proptest::option::of(0u32..1_000_000_000), 0usize..4),
                    1..5,
                ),
            ) {
                let text: String = parts
                    .iter()
                    .map(|(whole, fraction, unit)| {
                        let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
                        format!("{whole}{fraction}{}", ["ms", "s", "m", "h"][*unit])
                    })
                    .collect();
                let value = parse_duration(&text);
                prop_assert!(value.is_some_and(|v| v >= TimeDelta::zero()), "{}", text);
            }

            #[test]
            fn policy_settings_are_always_within_bounds(
                margin in proptest::option::of("\\PC{0,30}|[0-9]{1,25}(ms|s|m|h)"),
                timeout in proptest::option::of("[0-9]{1,25}(\\.[0-9]{1,5})?(ms|s|m|h)"),
                surge in proptest::option::of(prop_oneof![
                    any::<i32>().prop_map(IntOrString::Int),
                    "\\PC{0,6}%?".prop_map(IntOrString::String),
                ]),
                max_concurrent in proptest::option::of(any::<i32>()),
                history_limit in proptest::option::of(any::<i32>()),
            ) {
                let spec = SpotRotationPolicySpec {
                    target_ref: None,
                    selector: Some(Default::default()),
                    strategy: Default::default(),
                    max_surge: surge,
                    max_concurrent,
                    readiness_timeout: timeout,
                    deadline_margin: margin,
                    on_deadline: Default::default(),
                    history_limit,
                };
                let settings = PolicySettings::of(&spec);
                prop_assert!(settings.margin >= TimeDelta::zero() && settings.margin <= MAX_POLICY_DURATION);
                prop_assert!(settings
                    .readiness_timeout
                    .is_none_or(|t| t >= TimeDelta::zero() && t <= MAX_POLICY_DURATION));
                prop_assert!((1..=MAX_CONCURRENT).contains(&settings.max_concurrent));
                prop_assert!((0..=MAX_HISTORY_LIMIT).contains(&settings.history_limit));
                match settings.max_surge {
                    MaxSurge::Count(c) => prop_assert!((0..=MAX_SURGE_COUNT).contains(&c)),
                    MaxSurge::Percent(p) => prop_assert!((0..=100).contains(&p)),
                }
                for replicas in [0, 1, 7, i32::MAX] {
                    prop_assert!(resolve_max_surge(&settings.max_surge, replicas) >= 0);
                }
            }
        }
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
