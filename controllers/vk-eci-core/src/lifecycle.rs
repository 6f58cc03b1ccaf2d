//! Decisions of the pod-to-ECI controller around the ECI calls: what a failed create means
//! for the pod, how often to sync status, and the
//! Kubernetes Event that mirrors an ECI event.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use eci_types::EciFailure;
use eci_types::wire::Event as EciEvent;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::annotations::EciAnnotations;
use crate::status::kube_time;

/// What to do with a pod whose container group could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateFailure {
    /// Leave the pod Pending and try again after the delay.
    Retry {
        reason: String,
        message: String,
        after: Duration,
    },
    /// Mark the pod Failed (the user asked for it with `pod-fail-on-create-err`, or retrying
    /// cannot help).
    Fail { reason: String, message: String },
}

/// Back-off for create retries: 5 s doubling to 5 min.
pub fn create_backoff(attempt: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(2u64.saturating_pow(attempt.min(6))))
        .min(Duration::from_secs(300))
}

/// Classifies a synchronous create error (attempt counts from 1).
pub fn create_failure(
    error: &impl EciFailure,
    annotations: &EciAnnotations,
    attempt: u32,
) -> CreateFailure {
    let (reason, message) = match error.refusal() {
        Some((code, message)) => (
            if error.is_no_stock() {
                "NoStock".to_string()
            } else {
                code.replace('.', "")
            },
            format!("ECI refused the container group: {code}: {message}"),
        ),
        None => ("ECIUnavailable".to_string(), error.to_string()),
    };
    let transient = error.is_retryable() || error.is_no_stock();
    if annotations.fail_on_create_error || !(transient || error.is_auth()) {
        // Parameter errors do not get better by retrying; auth errors might once an operator
        // fixes the AccessKey, so those keep retrying.
        CreateFailure::Fail { reason, message }
    } else {
        CreateFailure::Retry {
            reason,
            message,
            after: create_backoff(attempt),
        }
    }
}

/// The pod annotation that carries [`CreateRetry`]: create progress lives on the pod, so a
/// new leader backs off and picks ClientTokens exactly as the old one would have.
pub const CREATE_RETRY: &str = "vk-eci.io/create-retry";

/// Failed creates of a pod so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CreateRetry {
    /// Failed attempts (drives the back-off).
    pub attempts: u32,
    /// Bumped when ECI answered a create definitively (a 4xx such as NoStock, or a group that
    /// could not be scheduled): ECI replays a ClientToken's first answer, so the next create
    /// needs a new token. Errors after which the create may have happened (5xx, timeouts)
    /// keep the token, so a retry can never make a second instance.
    pub token: u32,
    /// When the last attempt failed.
    pub at: Option<DateTime<Utc>>,
}

impl CreateRetry {
    /// The state on `annotations` (absent or unreadable: no failure yet).
    pub fn of(annotations: &BTreeMap<String, String>) -> Self {
        annotations
            .get(CREATE_RETRY)
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default()
    }

    /// The annotation value.
    pub fn render(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The ClientToken of the next create: the pod UID, then `<uid>-<n>` (≤ 64 characters).
    pub fn client_token(&self, uid: &str) -> String {
        match self.token {
            0 => uid.to_string(),
            n => format!("{uid}-{n}"),
        }
    }

    /// The state after an attempt that failed at `at`; `definitive` when ECI answered the
    /// create (no instance exists for this token and replays would repeat the answer).
    pub fn failed(&self, definitive: bool, at: DateTime<Utc>) -> Self {
        Self {
            attempts: self.attempts.saturating_add(1),
            token: self.token.saturating_add(u32::from(definitive)),
            at: Some(at),
        }
    }

    /// How long to wait before the next create, if at all.
    pub fn wait(&self, now: DateTime<Utc>) -> Option<Duration> {
        let at = self.at?;
        let backoff = create_backoff(self.attempts);
        let due = crate::time::add(at, crate::time::from_std(backoff));
        // A failure time in the future (another replica's clock, an edited annotation) never
        // holds the create back longer than the back-off itself.
        (due > now).then(|| crate::time::to_std(due - now).min(backoff))
    }
}

/// Whether a create error was ECI's answer to the create (so no instance exists for its
/// ClientToken), rather than a failure to hear one.
pub fn definitive(error: &impl EciFailure) -> bool {
    error.refusal().is_some() && !error.is_retryable()
}

/// Whether a group that failed to schedule (`ScheduleFailed`) should be replaced by a new
/// create rather than failing the pod.
pub fn reschedule_after_schedule_failure(annotations: &EciAnnotations) -> bool {
    annotations.reschedule || !annotations.fail_on_create_error
}

/// Status-sync pacing: the pause after a pass that found something transitioning (`fast`)
/// and after a steady one (`slow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPacing {
    pub fast: Duration,
    pub slow: Duration,
}

/// Groups whose full status listing costs one `base` interval of the status sync: a full
/// pass pages, decodes and fingerprints every group of the node, so a larger node runs it
/// less often and its idle cost stays that of this many groups (at 10,000 pods, a full pass
/// every minute took the idle operator's ECI calls from 450 to 640 a minute).
pub const FULL_PASS_GROUPS_PER_INTERVAL: usize = 2_000;
/// The longest pause between full passes, however large the node: the full pass is also
/// what notices a group deleted outside vk-eci, so this bounds how long its pod shows
/// Running.
pub const FULL_PASS_LONGEST: Duration = Duration::from_secs(300);

/// The pause between full status passes for a node of `groups` container groups: `base`
/// per [`FULL_PASS_GROUPS_PER_INTERVAL`] groups, at most [`FULL_PASS_LONGEST`] (never
/// shorter than `base`, which tests set below a second).
pub fn full_pass_interval(base: Duration, groups: usize) -> Duration {
    let intervals = groups.div_ceil(FULL_PASS_GROUPS_PER_INTERVAL).max(1);
    let intervals = u32::try_from(intervals).unwrap_or(u32::MAX);
    base.saturating_mul(intervals)
        .min(FULL_PASS_LONGEST)
        .max(base)
}

/// The Kubernetes Event that mirrors an ECI event on `pod`. Its name is stable per ECI event,
/// so repeats update one Event (with the new count) instead of adding more.
pub fn pod_event(
    pod: &crate::cache::CachedPod,
    event: &EciEvent,
    node: &str,
    now: DateTime<Utc>,
) -> Event {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let digest = crate::status::event_key(event);
    let time = |text: &str| {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| kube_time(t.with_timezone(&Utc)))
            .or_else(|| Some(kube_time(now)))
    };
    let field_path = (!event.name.is_empty() && event.name != pod_name)
        .then(|| format!("spec.containers{{{}}}", event.name));
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{pod_name}.eci.{digest:016x}")),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([(
                "vk-eci.io/source".to_string(),
                "eci".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod_name),
            namespace: Some(namespace),
            uid: pod.metadata.uid.clone(),
            field_path,
            ..ObjectReference::default()
        },
        reason: Some(event.reason.clone()),
        message: Some(event.message.clone()),
        type_: Some(
            if event.r#type == "Warning" {
                "Warning"
            } else {
                "Normal"
            }
            .into(),
        ),
        count: Some(i32::try_from(event.count.max(1)).unwrap_or(i32::MAX)),
        first_timestamp: time(&event.first_timestamp),
        last_timestamp: time(if event.last_timestamp.is_empty() {
            &event.first_timestamp
        } else {
            &event.last_timestamp
        }),
        source: Some(EventSource {
            component: Some("vk-eci, eci".into()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some("vk-eci".into()),
        reporting_instance: Some(node.to_string()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use chrono::TimeDelta;
    use eci_types::error::is_retryable_refusal;

    use super::*;

    /// The gateway's error answer to a create, as the client reports it.
    struct Refusal {
        code: &'static str,
        http_status: u16,
    }

    impl fmt::Display for Refusal {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} (HTTP {})", self.code, self.http_status)
        }
    }

    impl EciFailure for Refusal {
        fn refusal(&self) -> Option<(&str, &str)> {
            Some((self.code, "m"))
        }

        fn http_status(&self) -> Option<u16> {
            Some(self.http_status)
        }

        fn is_retryable(&self) -> bool {
            is_retryable_refusal(self.code, self.http_status)
        }
    }

    fn api_error(code: &'static str, http_status: u16) -> Refusal {
        Refusal { code, http_status }
    }

    #[test]
    fn create_failures_retry_or_fail_as_the_pod_asks() {
        let defaults = EciAnnotations::default();
        let fail_fast = EciAnnotations {
            fail_on_create_error: true,
            ..EciAnnotations::default()
        };
        match create_failure(&api_error("OperationDenied.NoStock", 403), &defaults, 1) {
            CreateFailure::Retry { reason, after, .. } => {
                assert_eq!(reason, "NoStock");
                assert_eq!(after, Duration::from_secs(10));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            create_failure(&api_error("OperationDenied.NoStock", 403), &fail_fast, 1),
            CreateFailure::Fail { reason, .. } if reason == "NoStock"
        ));
        assert!(matches!(
            create_failure(&api_error("InvalidParameter", 400), &defaults, 1),
            CreateFailure::Fail { .. }
        ));
        assert!(matches!(
            create_failure(&api_error("Throttling.User", 400), &defaults, 1),
            CreateFailure::Retry { .. }
        ));
        assert!(matches!(
            create_failure(&api_error("SignatureDoesNotMatch", 400), &defaults, 1),
            CreateFailure::Retry { .. }
        ));
        assert_eq!(create_backoff(30), Duration::from_secs(300));
        assert!(reschedule_after_schedule_failure(&defaults));
        assert!(!reschedule_after_schedule_failure(&fail_fast));
        assert!(reschedule_after_schedule_failure(&EciAnnotations {
            reschedule: true,
            ..fail_fast
        }));
    }

    #[test]
    fn eci_events_become_stable_pod_events() {
        let pod: crate::cache::CachedPod = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u-1"}}),
        )
        .unwrap();
        let mut eci = EciEvent {
            count: 1,
            r#type: "Warning".into(),
            name: "app".into(),
            reason: "SpotToBeReleased".into(),
            message: "Spot ECI will be released in 3 minutes".into(),
            first_timestamp: "2026-11-23T10:00:00Z".into(),
            last_timestamp: "2026-11-23T10:00:00Z".into(),
        };
        let now = DateTime::parse_from_rfc3339("2026-11-23T10:00:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let first = pod_event(&pod, &eci, "virtual-kubelet", now);
        assert_eq!(first.type_.as_deref(), Some("Warning"));
        assert_eq!(first.involved_object.uid.as_deref(), Some("u-1"));
        assert_eq!(
            first.involved_object.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        eci.count = 2;
        eci.last_timestamp = "2026-11-23T10:00:04Z".into();
        let repeat = pod_event(&pod, &eci, "virtual-kubelet", now);
        assert_eq!(
            repeat.metadata.name, first.metadata.name,
            "one Event per ECI event"
        );
        assert_eq!(repeat.count, Some(2));
    }

    #[test]
    fn create_retry_backs_off_and_changes_token_only_after_definitive_answers() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let fresh = CreateRetry::of(&BTreeMap::new());
        assert_eq!(fresh.client_token("uid-1"), "uid-1");
        assert_eq!(fresh.wait(t0), None);
        let no_stock = fresh.failed(true, t0);
        assert_eq!(no_stock.client_token("uid-1"), "uid-1-1");
        assert_eq!(no_stock.wait(t0), Some(create_backoff(1)));
        assert_eq!(no_stock.wait(t0 + TimeDelta::seconds(60)), None);
        let timeout = no_stock.failed(false, t0);
        assert_eq!(
            timeout.client_token("uid-1"),
            "uid-1-1",
            "the create may have happened: same token"
        );
        assert_eq!(timeout.attempts, 2);
        let annotations = BTreeMap::from([(CREATE_RETRY.to_string(), timeout.render())]);
        assert_eq!(CreateRetry::of(&annotations), timeout);
        let garbage = BTreeMap::from([(CREATE_RETRY.to_string(), "{".to_string())]);
        assert_eq!(CreateRetry::of(&garbage), CreateRetry::default());
    }

    #[test]
    fn create_retry_from_an_extreme_annotation_never_panics() {
        let extreme = CreateRetry {
            attempts: u32::MAX,
            token: u32::MAX,
            at: Some(DateTime::<Utc>::MAX_UTC),
        };
        let annotations = BTreeMap::from([(CREATE_RETRY.to_string(), extreme.render())]);
        let read = CreateRetry::of(&annotations);
        assert_eq!(read, extreme);
        let next = read.failed(true, Utc::now());
        assert_eq!((next.attempts, next.token), (u32::MAX, u32::MAX));
        assert_eq!(read.wait(Utc::now()), Some(create_backoff(u32::MAX)));
    }

    #[test]
    fn a_larger_node_runs_its_full_pass_less_often_up_to_five_minutes() {
        let minute = Duration::from_secs(60);
        assert_eq!(full_pass_interval(minute, 0), minute);
        assert_eq!(full_pass_interval(minute, 2_000), minute);
        assert_eq!(full_pass_interval(minute, 2_001), 2 * minute);
        assert_eq!(full_pass_interval(minute, 10_000), 5 * minute);
        assert_eq!(full_pass_interval(minute, 50_000), 5 * minute);
        assert_eq!(full_pass_interval(minute, usize::MAX), 5 * minute);
        // A base beyond the cap is the operator's choice and kept.
        assert_eq!(full_pass_interval(10 * minute, 50_000), 10 * minute);
        let fast = Duration::from_millis(200);
        assert_eq!(full_pass_interval(fast, 3), fast);
    }
}
