//! ECI container group → Kubernetes pod status, and the spot release notice.
//!
//! Pure: the pod-to-ECI controller lists groups in batches, calls [`pod_status`] for each pod
//! and patches only pods whose status differs.

use chrono::{DateTime, Utc};
use eci_types::wire::{
    ContainerGroup, ContainerInfo, ContainerState as EciContainerState, Event, InitContainerInfo,
    status,
};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::cache::{CachedCondition, CachedPod, NamedContainer};

/// The pod condition set when ECI announces a spot release.
pub const CONTAINER_INSTANCE_EXPIRED: &str = "ContainerInstanceExpired";
/// The pod condition that says whether the pod's container group exists (False, with the
/// reason, while creating it fails or is refused).
pub const CONTAINER_INSTANCE_CREATED: &str = "ContainerInstanceCreated";
/// The reason of a pod whose spot instance was reclaimed, as on Alibaba's virtual node.
pub const BID_FAILED: &str = "BidFailed";
/// The ECI event that announces a spot release.
pub const SPOT_TO_BE_RELEASED: &str = "SpotToBeReleased";
/// Minutes of warning when a notice does not say (the documented default).
pub const DEFAULT_NOTICE_MINUTES: f64 = 3.0;
/// The longest warning a notice is believed to give. ECI gives minutes; a message announcing
/// more is garbled, and the default (an earlier deadline, so a rotation that is early rather
/// than late) is taken instead.
pub const MAX_NOTICE_MINUTES: f64 = 60.0;

/// ECI status → pod phase (design §4). `ScheduleFailed` maps to Failed here; whether the
/// controller retries instead is its decision (`pod-fail-on-create-err`).
pub fn phase(eci_status: &str) -> &'static str {
    match eci_status {
        status::RUNNING | status::RESTARTING | status::UPDATING | status::TERMINATING => "Running",
        status::SUCCEEDED => "Succeeded",
        status::FAILED | status::SCHEDULE_FAILED | status::EXPIRED => "Failed",
        _ => "Pending",
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A spot release announced by ECI.
#[derive(Debug, Clone, PartialEq)]
pub struct SpotNotice {
    pub noticed_at: DateTime<Utc>,
    /// When ECI will reclaim the instance.
    pub release_at: DateTime<Utc>,
    pub message: String,
}

/// The spot release notice among a group's events, if any (the earliest, should there be more).
pub fn spot_notice(events: &[Event]) -> Option<SpotNotice> {
    events
        .iter()
        .filter(|e| e.reason == SPOT_TO_BE_RELEASED)
        .filter_map(|e| {
            let noticed_at = parse_time(&e.first_timestamp)?;
            let minutes = e
                .message
                .split_whitespace()
                .skip_while(|w| *w != "in")
                .nth(1)
                .and_then(|n| n.parse::<f64>().ok())
                .filter(|m| (0.0..=MAX_NOTICE_MINUTES).contains(m))
                .unwrap_or(DEFAULT_NOTICE_MINUTES);
            Some(SpotNotice {
                noticed_at,
                release_at: crate::time::add(
                    noticed_at,
                    crate::time::milliseconds(minutes * 60_000.0),
                ),
                message: e.message.clone(),
            })
        })
        .min_by_key(|n| n.noticed_at)
}

/// The spot notice recorded on a pod: when the `ContainerInstanceExpired` condition turned
/// True, and the release time its message announces.
pub fn pod_notice(pod: &CachedPod) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let condition = pod
        .condition(CONTAINER_INSTANCE_EXPIRED)
        .filter(|c| c.status == "True")?;
    let noticed_at = condition
        .last_transition_time
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))?;
    let release_at = condition
        .message
        .as_deref()?
        .rsplit_once("(release at ")?
        .1
        .strip_suffix(')')
        .and_then(parse_time)?;
    Some((noticed_at, release_at))
}

/// A Kubernetes `Time` as a chrono time (whole seconds).
pub fn from_kube_time(time: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(time.0.as_second(), 0).unwrap_or_default()
}

/// A Kubernetes `Time`, in whole seconds as the API server stores it (so a status that
/// round-trips compares equal).
pub fn kube_time(at: DateTime<Utc>) -> Time {
    use k8s_openapi::jiff::Timestamp;
    // Beyond Kubernetes' range (years 0001-9999, give or take) the nearest end, never 1970.
    let seconds = at
        .timestamp()
        .clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn time(text: &str) -> Option<Time> {
    parse_time(text).map(kube_time)
}

fn container_state(state: &EciContainerState) -> Option<ContainerState> {
    match state.state.as_str() {
        "Running" => Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(&state.start_time),
            }),
            ..ContainerState::default()
        }),
        "Terminated" => Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: i32::try_from(state.exit_code).unwrap_or(i32::MAX),
                signal: (state.signal != 0).then(|| i32::try_from(state.signal).unwrap_or(0)),
                reason: Some(state.reason.clone()).filter(|r| !r.is_empty()),
                message: Some(state.message.clone()).filter(|m| !m.is_empty()),
                started_at: time(&state.start_time),
                finished_at: time(&state.finish_time),
                container_id: None,
            }),
            ..ContainerState::default()
        }),
        "Waiting" => Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(state.reason.clone()).filter(|r| !r.is_empty()),
                message: Some(state.message.clone()).filter(|m| !m.is_empty()),
            }),
            ..ContainerState::default()
        }),
        _ => None,
    }
}

struct Observed<'a> {
    name: &'a str,
    ready: bool,
    restart_count: i64,
    current: &'a EciContainerState,
    previous: &'a EciContainerState,
}

impl<'a> From<&'a ContainerInfo> for Observed<'a> {
    fn from(info: &'a ContainerInfo) -> Self {
        Self {
            name: &info.name,
            ready: info.ready,
            restart_count: info.restart_count,
            current: &info.current_state,
            previous: &info.previous_state,
        }
    }
}

impl<'a> From<&'a InitContainerInfo> for Observed<'a> {
    fn from(info: &'a InitContainerInfo) -> Self {
        Self {
            name: &info.name,
            ready: info.ready,
            restart_count: info.restart_count,
            current: &info.current_state,
            previous: &info.previous_state,
        }
    }
}

/// Statuses of the declared containers, in declaration order, from what ECI reports.
fn statuses(
    group_id: &str,
    declared: &[NamedContainer],
    observed: &[Observed<'_>],
) -> Vec<ContainerStatus> {
    declared
        .iter()
        .map(|c| {
            let seen = observed.iter().find(|o| o.name == c.name);
            container_status(
                group_id,
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                seen,
            )
        })
        .collect()
}

fn container_status(
    group_id: &str,
    name: &str,
    image: &str,
    observed: Option<&Observed<'_>>,
) -> ContainerStatus {
    let creating = ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some("ContainerCreating".into()),
            message: None,
        }),
        ..ContainerState::default()
    };
    match observed {
        None => ContainerStatus {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            ready: false,
            restart_count: 0,
            started: Some(false),
            state: Some(creating),
            ..ContainerStatus::default()
        },
        Some(o) => {
            let state = container_state(o.current).unwrap_or(creating);
            let running = state.running.is_some();
            ContainerStatus {
                name: o.name.to_string(),
                image: image.to_string(),
                image_id: String::new(),
                container_id: Some(format!("eci://{group_id}/{name}")),
                ready: o.ready && running,
                restart_count: i32::try_from(o.restart_count).unwrap_or(i32::MAX),
                started: Some(running),
                state: Some(state),
                last_state: container_state(o.previous),
                ..ContainerStatus::default()
            }
        }
    }
}

/// A condition, keeping its transition time when its status did not change.
pub fn condition(
    previous: &[CachedCondition],
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: DateTime<Utc>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| kube_time(now));
    PodCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(since),
        ..PodCondition::default()
    }
}

/// The pod status that mirrors `group`, given the pod as it is now.
pub fn pod_status(pod: &CachedPod, group: &ContainerGroup, now: DateTime<Utc>) -> PodStatus {
    let (spec, current) = (&pod.spec, &pod.status);
    let previous = &current.conditions;
    let phase = phase(&group.status);

    let group_id = &group.container_group_id;
    let observed: Vec<Observed<'_>> = group.containers.iter().map(Observed::from).collect();
    let containers = statuses(group_id, &spec.containers, &observed);
    let observed: Vec<Observed<'_>> = group.init_containers.iter().map(Observed::from).collect();
    let init_containers = statuses(group_id, &spec.init_containers, &observed);

    let scheduled = !matches!(
        group.status.as_str(),
        status::SCHEDULING | status::SCHEDULE_FAILED
    );
    let last_warning = group
        .events
        .iter()
        .rev()
        .find(|e| e.r#type == "Warning" && e.reason != SPOT_TO_BE_RELEASED);
    let initialized = scheduled
        && init_containers.iter().all(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        });
    let ready =
        phase == "Running" && group.status == status::RUNNING && containers.iter().all(|c| c.ready);

    let mut conditions = vec![
        condition(
            previous,
            "PodScheduled",
            scheduled,
            (!scheduled && group.status == status::SCHEDULE_FAILED).then_some("Unschedulable"),
            (!scheduled)
                .then(|| last_warning.map(|e| format!("{}: {}", e.reason, e.message)))
                .flatten(),
            now,
        ),
        condition(previous, "Initialized", initialized, None, None, now),
        condition(previous, "ContainersReady", ready, None, None, now),
        condition(previous, "Ready", ready, None, None, now),
        condition(
            previous,
            CONTAINER_INSTANCE_CREATED,
            true,
            Some("Created"),
            Some(format!("ECI container group {group_id}")),
            now,
        ),
    ];
    if let Some(notice) = spot_notice(&group.events) {
        conditions.push(condition(
            previous,
            CONTAINER_INSTANCE_EXPIRED,
            true,
            Some(SPOT_TO_BE_RELEASED),
            Some(format!(
                "{} (release at {})",
                notice.message,
                notice
                    .release_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            now,
        ));
    }
    // Conditions other controllers own are kept as they are.
    let ours = [
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
        CONTAINER_INSTANCE_CREATED,
        CONTAINER_INSTANCE_EXPIRED,
    ];
    conditions.extend(
        previous
            .iter()
            .filter(|c| !ours.contains(&c.type_.as_ref()))
            .map(CachedCondition::to_pod_condition),
    );

    let (reason, message) = match group.status.as_str() {
        status::EXPIRED => {
            let at = parse_time(&group.expired_time)
                .or_else(|| spot_notice(&group.events).map(|n| n.release_at))
                .unwrap_or(now);
            (
                Some(BID_FAILED.to_string()),
                Some(format!(
                    "The pod is spot instance, and have been released at {}",
                    at.format("%Y-%m-%dT%H:%MZ")
                )),
            )
        }
        status::SCHEDULE_FAILED => (
            last_warning
                .map(|e| e.reason.clone())
                .or(Some("ScheduleFailed".into())),
            last_warning.map(|e| e.message.clone()),
        ),
        _ => (None, None),
    };

    let mut ips = Vec::new();
    if !group.intranet_ip.is_empty() {
        ips.push(PodIP {
            ip: group.intranet_ip.clone(),
        });
    }
    if !group.ipv6_address.is_empty() {
        ips.push(PodIP {
            ip: group.ipv6_address.clone(),
        });
    }
    PodStatus {
        phase: Some(phase.to_string()),
        reason,
        message,
        conditions: Some(conditions),
        container_statuses: Some(containers),
        init_container_statuses: (!init_containers.is_empty()).then_some(init_containers),
        pod_ip: ips.first().map(|ip| ip.ip.clone()),
        pod_ips: (!ips.is_empty()).then(|| ips.clone()),
        // The instance is its own host: there is no node IP behind it.
        host_ip: ips.first().map(|ip| ip.ip.clone()),
        start_time: time(&group.creation_time).or_else(|| current.start_time.clone()),
        qos_class: current.qos_class.clone(),
        ..PodStatus::default()
    }
}

/// Status fields this controller owns, as the kubelet does; anything else in the status (say
/// `nominatedNodeName`, `resize`) belongs to others and is never touched.
const OWNED_STATUS_FIELDS: &[&str] = &[
    "phase",
    "reason",
    "message",
    "conditions",
    "containerStatuses",
    "initContainerStatuses",
    "podIP",
    "podIPs",
    "hostIP",
    "hostIPs",
    "startTime",
];

/// A fingerprint of each status field this controller owns, as the cache last saw it: the
/// status sync compares what it would write with it instead of keeping the whole status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StatusFingerprint([u64; OWNED_STATUS_FIELDS.len()]);

/// The fingerprint of a field that is absent (or null).
const ABSENT: u64 = 0;

impl StatusFingerprint {
    pub fn of(status: &PodStatus) -> Self {
        let fields = serde_json::to_value(status).unwrap_or_default();
        Self(std::array::from_fn(|i| {
            fields
                .get(OWNED_STATUS_FIELDS[i])
                .filter(|v| !v.is_null())
                .map_or(ABSENT, |v| {
                    crate::stable_hash(&serde_json::to_vec(v).unwrap_or_default()) | 1
                })
        }))
    }
}

/// The JSON merge patch that turns the status fingerprinted as `current` into `desired` on
/// the fields this controller owns (a field that must go is sent as `null`), or `None` when
/// nothing differs. Lists are sent whole: `conditions` in `desired` already carries the
/// conditions others own.
pub fn status_patch(current: &StatusFingerprint, desired: &PodStatus) -> Option<serde_json::Value> {
    let wanted = StatusFingerprint::of(desired);
    let desired = serde_json::to_value(desired).unwrap_or_default();
    let mut patch = serde_json::Map::new();
    for (i, field) in OWNED_STATUS_FIELDS.iter().enumerate() {
        if current.0[i] != wanted.0[i] {
            let next = desired.get(field).filter(|v| !v.is_null());
            patch.insert(
                (*field).to_string(),
                next.cloned().unwrap_or(serde_json::Value::Null),
            );
        }
    }
    (!patch.is_empty()).then_some(serde_json::Value::Object(patch))
}

/// When ECI last recorded a change of `group` (its latest event or container transition), to
/// measure how far the pod lags behind.
pub fn last_change(group: &ContainerGroup) -> Option<DateTime<Utc>> {
    let containers = group.containers.iter().flat_map(|c| {
        [
            &c.current_state.start_time,
            &c.current_state.finish_time,
            &c.previous_state.finish_time,
        ]
    });
    group
        .events
        .iter()
        .map(|e| &e.last_timestamp)
        .chain(containers)
        .chain([
            &group.creation_time,
            &group.succeeded_time,
            &group.failed_time,
        ])
        .filter_map(|t| parse_time(t))
        .max()
}

/// The identity of an ECI event across polls (its count grows when it repeats): a stable hash
/// of its reason, container, first time and message, 8 bytes however long the message.
pub fn event_key(event: &Event) -> u64 {
    crate::stable_hash(
        format!(
            "{}/{}/{}/{}",
            event.reason, event.name, event.first_timestamp, event.message
        )
        .as_bytes(),
    )
}

/// Events not yet reported (or repeated since), given the counts already reported by key.
pub fn unreported_events<'a>(
    events: &'a [Event],
    reported: &std::collections::HashMap<u64, i64>,
) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| {
            reported
                .get(&event_key(e))
                .is_none_or(|count| e.count > *count)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::TimeDelta;
    use serde_json::json;

    use super::*;

    fn pod() -> CachedPod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [{"name": "app", "image": "nginx"}, {"name": "side", "image": "envoy"}],
            },
            "status": {"qosClass": "Burstable", "conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "example.com/Gate", "status": "True"},
            ]},
        }))
        .unwrap()
    }

    fn running(name: &str, ready: bool) -> ContainerInfo {
        ContainerInfo {
            name: name.into(),
            ready,
            restart_count: 2,
            current_state: EciContainerState {
                state: "Running".into(),
                start_time: "2026-11-23T10:00:05Z".into(),
                ..Default::default()
            },
            previous_state: EciContainerState {
                state: "Terminated".into(),
                exit_code: 137,
                signal: 9,
                reason: "Error".into(),
                start_time: "2026-11-23T09:59:00Z".into(),
                finish_time: "2026-11-23T10:00:04Z".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn group(status: &str) -> ContainerGroup {
        ContainerGroup {
            container_group_id: "eci-1".into(),
            status: status.into(),
            intranet_ip: "10.1.0.7".into(),
            creation_time: "2026-11-23T10:00:00Z".into(),
            containers: vec![running("app", true), running("side", true)],
            init_containers: vec![InitContainerInfo {
                name: "init".into(),
                current_state: EciContainerState {
                    state: "Terminated".into(),
                    exit_code: 0,
                    reason: "Completed".into(),
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn now() -> DateTime<Utc> {
        parse_time("2026-11-23T10:01:00Z").unwrap()
    }

    fn condition_of<'a>(status: &'a PodStatus, kind: &str) -> Option<&'a PodCondition> {
        status.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
    }

    #[test]
    fn every_eci_status_maps_to_a_phase() {
        let expected = [
            (status::SCHEDULING, "Pending"),
            (status::PENDING, "Pending"),
            (status::RUNNING, "Running"),
            (status::RESTARTING, "Running"),
            (status::UPDATING, "Running"),
            (status::TERMINATING, "Running"),
            (status::SUCCEEDED, "Succeeded"),
            (status::FAILED, "Failed"),
            (status::SCHEDULE_FAILED, "Failed"),
            (status::EXPIRED, "Failed"),
        ];
        assert_eq!(expected.len(), status::ALL.len());
        for (eci, pod_phase) in expected {
            assert_eq!(phase(eci), pod_phase, "{eci}");
        }
    }

    #[test]
    fn running_group_gives_a_ready_pod_with_ips_and_container_states() {
        let status = pod_status(&pod(), &group(status::RUNNING), now());
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.1.0.7"));
        assert_eq!(status.host_ip.as_deref(), Some("10.1.0.7"));
        assert_eq!(
            status.qos_class.as_deref(),
            Some("Burstable"),
            "kept from the API server"
        );
        assert_eq!(status.start_time, time("2026-11-23T10:00:00Z"));
        let ready = condition_of(&status, "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(
            ready.last_transition_time,
            Some(kube_time(now())),
            "it changed from False"
        );
        assert!(
            condition_of(&status, "example.com/Gate").is_some(),
            "others' conditions are kept"
        );
        let app = &status.container_statuses.as_ref().unwrap()[0];
        assert!(app.ready && app.started == Some(true));
        assert_eq!(app.restart_count, 2);
        assert_eq!(app.container_id.as_deref(), Some("eci://eci-1/app"));
        let last = app
            .last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!((last.exit_code, last.signal), (137, Some(9)));
        assert_eq!(
            status.init_container_statuses.as_ref().unwrap()[0]
                .state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("Completed")
        );
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let mut g = group(status::RUNNING);
        g.containers[1].ready = false;
        let status = pod_status(&pod(), &g, now());
        let ready = condition_of(&status, "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.last_transition_time, time("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn containers_not_yet_reported_are_creating() {
        let mut g = group(status::SCHEDULING);
        g.containers.clear();
        g.intranet_ip.clear();
        let status = pod_status(&pod(), &g, now());
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.pod_ip, None);
        assert_eq!(
            condition_of(&status, "PodScheduled").unwrap().status,
            "False"
        );
        let waiting = status.container_statuses.as_ref().unwrap()[0]
            .state
            .as_ref()
            .unwrap()
            .waiting
            .clone()
            .unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
    }

    #[test]
    fn spot_notice_sets_the_expired_condition_with_the_release_time() {
        let mut g = group(status::RUNNING);
        g.events.push(Event {
            count: 1,
            r#type: "Warning".into(),
            reason: SPOT_TO_BE_RELEASED.into(),
            message: "Spot ECI will be released in 3 minutes".into(),
            first_timestamp: "2026-11-23T10:00:30Z".into(),
            last_timestamp: "2026-11-23T10:00:30Z".into(),
            ..Default::default()
        });
        let notice = spot_notice(&g.events).unwrap();
        assert_eq!(
            notice.release_at,
            parse_time("2026-11-23T10:03:30Z").unwrap()
        );
        let status = pod_status(&pod(), &g, now());
        let expired = condition_of(&status, CONTAINER_INSTANCE_EXPIRED).unwrap();
        assert_eq!(expired.status, "True");
        assert!(
            expired
                .message
                .as_ref()
                .unwrap()
                .contains("release at 2026-11-23T10:03:30Z")
        );

        g.events[0].message = "Spot ECI will be released in 0.5 minutes".into();
        assert_eq!(
            spot_notice(&g.events).unwrap().release_at,
            parse_time("2026-11-23T10:01:00Z").unwrap()
        );
        g.events[0].message = "Spot ECI will be released soon".into();
        assert_eq!(
            spot_notice(&g.events).unwrap().release_at,
            parse_time("2026-11-23T10:03:30Z").unwrap()
        );
    }

    fn notice_saying(message: &str) -> Event {
        Event {
            count: 1,
            r#type: "Warning".into(),
            reason: SPOT_TO_BE_RELEASED.into(),
            message: message.into(),
            first_timestamp: "2026-11-23T10:00:30Z".into(),
            last_timestamp: "2026-11-23T10:00:30Z".into(),
            ..Default::default()
        }
    }

    #[test]
    fn absurd_notice_minutes_take_the_default_instead_of_panicking() {
        for minutes in [
            "9223372036854775807",
            "1e300",
            "99999999999999999999999",
            "61",
            "-5",
            "NaN",
            "inf",
        ] {
            let notice =
                spot_notice(&[notice_saying(&format!("released in {minutes} minutes"))]).unwrap();
            assert_eq!(
                notice.release_at,
                parse_time("2026-11-23T10:03:30Z").unwrap(),
                "{minutes}"
            );
        }
        let hour = spot_notice(&[notice_saying("released in 60 minutes")]).unwrap();
        assert_eq!(hour.release_at, parse_time("2026-11-23T11:00:30Z").unwrap());
    }

    #[test]
    fn kube_time_clamps_to_the_kubernetes_range() {
        use k8s_openapi::jiff::Timestamp;
        let far = kube_time(DateTime::<Utc>::MAX_UTC).0;
        assert_eq!(far.as_second(), Timestamp::MAX.as_second());
        let early = kube_time(DateTime::<Utc>::MIN_UTC).0;
        assert_eq!(early.as_second(), Timestamp::MIN.as_second());
    }

    proptest::proptest! {
        #[test]
        fn any_notice_message_gives_a_release_within_the_hour(
            number in proptest::prelude::any::<f64>(),
            words in "[ -~]{0,40}",
        ) {
            for message in [format!("released in {number} minutes"), words.clone()] {
                let notice = spot_notice(&[notice_saying(&message)]).unwrap();
                let lead = notice.release_at - notice.noticed_at;
                proptest::prop_assert!(lead >= TimeDelta::zero() && lead <= TimeDelta::minutes(60));
            }
        }
    }

    #[test]
    fn expired_spot_is_failed_bid_failed() {
        let mut g = group(status::EXPIRED);
        g.expired_time = "2026-11-23T10:03:30Z".into();
        let status = pod_status(&pod(), &g, now());
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some(BID_FAILED));
        assert_eq!(
            status.message.as_deref(),
            Some("The pod is spot instance, and have been released at 2026-11-23T10:03Z")
        );
    }

    #[test]
    fn schedule_failure_carries_the_eci_reason() {
        let mut g = group(status::SCHEDULE_FAILED);
        g.events.push(Event {
            r#type: "Warning".into(),
            reason: "NoStock".into(),
            message: "Create ECI failed because the specified instance is out of stock.".into(),
            ..Default::default()
        });
        let status = pod_status(&pod(), &g, now());
        assert_eq!(status.reason.as_deref(), Some("NoStock"));
        let scheduled = condition_of(&status, "PodScheduled").unwrap();
        assert_eq!(
            (scheduled.status.as_str(), scheduled.reason.as_deref()),
            ("False", Some("Unschedulable"))
        );
        assert!(scheduled.message.as_ref().unwrap().starts_with("NoStock: "));
    }

    #[test]
    fn events_are_reported_once_and_again_when_they_repeat() {
        let mut event = Event {
            count: 1,
            r#type: "Normal".into(),
            reason: "Pulled".into(),
            name: "app".into(),
            message: "pulled".into(),
            first_timestamp: "t".into(),
            ..Default::default()
        };
        let mut reported = HashMap::new();
        assert_eq!(
            unreported_events(std::slice::from_ref(&event), &reported).len(),
            1
        );
        reported.insert(event_key(&event), 1);
        assert!(unreported_events(std::slice::from_ref(&event), &reported).is_empty());
        event.count = 2;
        assert_eq!(
            unreported_events(std::slice::from_ref(&event), &reported).len(),
            1
        );
    }

    #[test]
    fn status_patch_sends_only_owned_changes_and_nulls_what_went() {
        let current = PodStatus {
            phase: Some("Failed".into()),
            reason: Some("BidFailed".into()),
            nominated_node_name: Some("other".into()),
            ..PodStatus::default()
        };
        let cached = StatusFingerprint::of(&current);
        assert_eq!(status_patch(&cached, &current), None);
        let desired = PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.0.0.9".into()),
            ..PodStatus::default()
        };
        let patch = status_patch(&cached, &desired).unwrap();
        assert_eq!(
            patch,
            json!({"phase": "Running", "reason": null, "podIP": "10.0.0.9"}),
            "nominatedNodeName is not ours: neither kept nor cleared"
        );
    }

    #[test]
    fn a_status_written_and_read_back_through_the_cache_needs_no_patch() {
        let desired = pod_status(&pod(), &group(status::RUNNING), now());
        let stored = json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "status": serde_json::to_value(&desired).unwrap(),
        });
        let cached: CachedPod = serde_json::from_value(stored).unwrap();
        assert_eq!(status_patch(&cached.status.fingerprint, &desired), None);
        let mut changed = desired.clone();
        changed.pod_ip = Some("10.9.9.9".into());
        assert_eq!(
            status_patch(&cached.status.fingerprint, &changed),
            Some(json!({"podIP": "10.9.9.9"}))
        );
    }

    #[test]
    fn last_change_is_the_latest_event_or_container_transition() {
        let group: ContainerGroup = serde_json::from_value(json!({
            "CreationTime": "2026-01-01T00:00:00Z",
            "Events": [{"LastTimestamp": "2026-01-01T00:00:05Z"}],
            "Containers": [{"CurrentState": {"StartTime": "2026-01-01T00:00:07Z"}}]
        }))
        .unwrap();
        assert_eq!(
            last_change(&group).map(|t| t.to_rfc3339()),
            Some("2026-01-01T00:00:07+00:00".to_string())
        );
        assert_eq!(last_change(&ContainerGroup::default()), None);
    }

    #[test]
    fn the_notice_round_trips_through_the_pod_condition() {
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]},
        });
        let mut pod: CachedPod = serde_json::from_value(pod).unwrap();
        assert_eq!(pod_notice(&pod), None);
        let group: ContainerGroup = serde_json::from_value(json!({
            "Status": "Running",
            "Events": [{"Reason": "SpotToBeReleased", "Type": "Warning",
                        "Message": "Spot ECI will be released in 3 minutes",
                        "FirstTimestamp": "2026-01-01T00:00:00Z"}],
        }))
        .unwrap();
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:02Z")
            .unwrap()
            .with_timezone(&Utc);
        pod.status = crate::cache::CachedStatus::of(&pod_status(&pod, &group, now));
        let (noticed, release) = pod_notice(&pod).unwrap();
        assert_eq!(noticed, now, "when vk-eci saw it");
        assert_eq!(release.to_rfc3339(), "2026-01-01T00:03:00+00:00");
    }
}
