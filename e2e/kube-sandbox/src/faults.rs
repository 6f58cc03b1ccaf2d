//! Kubernetes API fault injection: slow, failing, hanging and dropped requests on demand, so
//! whole-binary tests can show what a client does when the API server misbehaves.
//!
//! Faults match resource requests by the same verb and resource the Access log records (what
//! RBAC would see); discovery, `/version`, health and the fault endpoints are never faulted.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The verbs a fault can name, as RBAC names them.
pub const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// Which requests a fault applies to. `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestMatch {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: Option<String>,
    /// A plural in any group (`pods`, `leases`), or with its subresource (`pods/status`,
    /// `pods/eviction`).
    pub resource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// What a fault does to a request it hits.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Wait a duration drawn uniformly from `min..=max`, then serve normally.
    Delay { min: Duration, max: Duration },
    /// Answer with this status code and a `metav1.Status` carrying the code's reason;
    /// `retry_after` sets `Retry-After` and `details.retryAfterSeconds`.
    Error {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// Never answer: the request pends until the client gives up.
    Hang,
    /// Serve a watch, then cut the connection after this long without ending the stream
    /// cleanly, as when an API server restarts. Applies to watch requests only.
    DropWatch { after: Duration },
}

/// One injected misbehaviour: which requests, what happens to them, how often.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub matches: RequestMatch,
    pub effect: Effect,
    /// Chance (0–1) that a matching request is hit, rolled per request.
    pub probability: f64,
    /// Stop after hitting this many requests.
    pub times: Option<u64>,
}

impl Fault {
    /// Requests with this verb on this resource.
    pub fn on(verb: &str, resource: &str) -> RequestMatch {
        RequestMatch {
            verb: Some(verb.to_lowercase()),
            resource: Some(resource.to_string()),
            ..RequestMatch::default()
        }
    }

    /// Every resource request.
    pub fn any() -> RequestMatch {
        RequestMatch::default()
    }

    /// Requests with this verb on any resource.
    pub fn verb(verb: &str) -> RequestMatch {
        RequestMatch {
            verb: Some(verb.to_lowercase()),
            ..RequestMatch::default()
        }
    }

    /// Requests of any verb on this resource.
    pub fn resource(resource: &str) -> RequestMatch {
        RequestMatch {
            resource: Some(resource.to_string()),
            ..RequestMatch::default()
        }
    }

    pub fn probability(mut self, probability: f64) -> Self {
        self.probability = probability;
        self
    }

    pub fn times(mut self, times: u64) -> Self {
        self.times = Some(times);
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.matches.namespace = Some(namespace.to_string());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.matches.name = Some(name.to_string());
        self
    }

    fn applies_to(&self, request: &ResourceRequest) -> bool {
        let wanted = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|want| Some(want) == have)
        };
        wanted(&self.matches.verb, Some(&request.verb))
            && wanted(&self.matches.resource, Some(&request.resource))
            && wanted(&self.matches.namespace, request.namespace.as_deref())
            && wanted(&self.matches.name, request.name.as_deref())
            && (request.verb == "watch" || !matches!(self.effect, Effect::DropWatch { .. }))
    }
}

impl RequestMatch {
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn effect(self, effect: Effect) -> Fault {
        Fault {
            matches: self,
            effect,
            probability: 1.0,
            times: None,
        }
    }

    pub fn delay(self, delay: Duration) -> Fault {
        self.delay_between(delay, delay)
    }

    /// A delay drawn uniformly from `min..=max` for each request.
    pub fn delay_between(self, min: Duration, max: Duration) -> Fault {
        self.effect(Effect::Delay {
            min: min.min(max),
            max: min.max(max),
        })
    }

    /// This status code; a 429 carries `Retry-After: 1`, as the API server's own throttling.
    pub fn error(self, code: u16) -> Fault {
        let retry_after = (code == 429).then_some(Duration::from_secs(1));
        self.effect(Effect::Error { code, retry_after })
    }

    pub fn error_retry_after(self, code: u16, retry_after: Duration) -> Fault {
        self.effect(Effect::Error {
            code,
            retry_after: Some(retry_after),
        })
    }

    pub fn hang(self) -> Fault {
        self.effect(Effect::Hang)
    }

    pub fn drop_watch_after(self, after: Duration) -> Fault {
        self.effect(Effect::DropWatch { after })
    }
}

/// Identifies an injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FaultId(pub u64);

impl std::fmt::Display for FaultId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A fault in the registry, with how many requests it has hit.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectedFault {
    pub id: FaultId,
    pub fault: Fault,
    pub fired: u64,
}

/// A resource request as RBAC sees it (the Access log's verb and resource), plus its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    pub verb: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// What the faults that hit a request do to it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub delay: Duration,
    pub answer: Answer,
    pub drop_watch_after: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    Serve,
    Error(InjectedError),
    Hang,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InjectedError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
}

/// The `metav1.StatusReason` the API server gives a code (`""` is `StatusReasonUnknown`).
pub fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

/// Applies faults in injection order: each that matches and wins its roll fires (and counts);
/// delays add up, watch drops take the shortest, and the first error or hang answers the
/// request, so faults after it are neither rolled nor counted.
fn plan(
    faults: &mut [InjectedFault],
    request: &ResourceRequest,
    roll: &mut impl FnMut() -> f64,
) -> Plan {
    let mut plan = Plan {
        delay: Duration::ZERO,
        answer: Answer::Serve,
        drop_watch_after: None,
    };
    for injected in faults.iter_mut() {
        let fault = &injected.fault;
        if !fault.applies_to(request) || fault.times.is_some_and(|t| injected.fired >= t) {
            continue;
        }
        if fault.probability < 1.0 && roll() >= fault.probability {
            continue;
        }
        injected.fired = injected.fired.saturating_add(1);
        match &fault.effect {
            Effect::Delay { min, max } => {
                let delay = if min == max {
                    *min
                } else {
                    min.saturating_add(max.saturating_sub(*min).mul_f64(roll()))
                };
                plan.delay = plan.delay.saturating_add(delay);
            }
            Effect::DropWatch { after } => {
                plan.drop_watch_after =
                    Some(plan.drop_watch_after.map_or(*after, |d| d.min(*after)));
            }
            Effect::Error { code, retry_after } => {
                let reason = reason_for(*code);
                plan.answer = Answer::Error(InjectedError {
                    code: *code,
                    reason,
                    message: format!(
                        "kube-sandbox fault {}: injected {code} {reason} for {} {}",
                        injected.id, request.verb, request.resource
                    ),
                    retry_after: *retry_after,
                });
                return plan;
            }
            Effect::Hang => {
                plan.answer = Answer::Hang;
                return plan;
            }
        }
    }
    plan
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    faults: Vec<InjectedFault>,
}

/// The sandbox's fault registry. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    registry: Arc<Mutex<Registry>>,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        match self.registry.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn inject(&self, fault: Fault) -> FaultId {
        let mut registry = self.lock();
        registry.next_id = registry.next_id.saturating_add(1);
        let id = FaultId(registry.next_id);
        registry.faults.push(InjectedFault {
            id,
            fault,
            fired: 0,
        });
        id
    }

    /// Whether the fault was there.
    pub fn remove(&self, id: FaultId) -> bool {
        let mut registry = self.lock();
        let before = registry.faults.len();
        registry.faults.retain(|f| f.id != id);
        registry.faults.len() != before
    }

    pub fn clear(&self) {
        self.lock().faults.clear();
    }

    /// How many requests the fault has hit (0 once it is removed).
    pub fn fired(&self, id: FaultId) -> u64 {
        self.lock()
            .faults
            .iter()
            .find(|f| f.id == id)
            .map_or(0, |f| f.fired)
    }

    pub fn list(&self) -> Vec<InjectedFault> {
        self.lock().faults.clone()
    }

    pub(crate) fn plan(&self, request: &ResourceRequest) -> Plan {
        let mut registry = self.lock();
        let mut rng = rand::rng();
        plan(&mut registry.faults, request, &mut || rng.random::<f64>())
    }
}

/// A fault as JSON (`POST /_sandbox/faults`) and as `kube-sandbox faults add` flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
#[command(group = clap::ArgGroup::new("effect").required(true).multiple(false))]
pub struct FaultSpec {
    /// Verb as RBAC names it (get, list, watch, create, update, patch, delete,
    /// deletecollection); any if omitted.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// Resource plural, optionally with a subresource (pods, pods/status, leases); any if
    /// omitted.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Only requests in this namespace; any if omitted.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only requests for the object of this name; any if omitted.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Chance (0–1) that a matching request is hit (default 1).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Hit at most this many requests.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// Delay matching requests this long, then serve them.
    #[arg(long, group = "effect")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// With --delay-ms: draw each delay from delay-ms..=delay-max-ms.
    #[arg(long, requires = "delay_ms")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_max_ms: Option<u64>,
    /// Answer with this HTTP error status (400–599) and its Status reason.
    #[arg(long, group = "effect")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<u16>,
    /// With --error: the Retry-After seconds (default 1 for 429, none otherwise).
    #[arg(long, requires = "error")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// Never answer matching requests.
    #[arg(long, group = "effect")]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hang: bool,
    /// Cut matching watch streams after this long.
    #[arg(long, group = "effect")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_watch_after_ms: Option<u64>,
}

/// Why a fault spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault: {0}")]
pub struct InvalidFault(String);

impl TryFrom<FaultSpec> for Fault {
    type Error = InvalidFault;

    fn try_from(spec: FaultSpec) -> Result<Self, InvalidFault> {
        let invalid = |why: String| Err(InvalidFault(why));
        let verb = spec.verb.as_deref().map(str::to_lowercase);
        if let Some(verb) = &verb
            && !VERBS.contains(&verb.as_str())
        {
            return invalid(format!("verb {verb:?} is not one of {}", VERBS.join(", ")));
        }
        let probability = spec.probability.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&probability) {
            return invalid(format!("probability {probability} is not between 0 and 1"));
        }
        let effects: Vec<&str> = [
            ("delay_ms", spec.delay_ms.is_some()),
            ("error", spec.error.is_some()),
            ("hang", spec.hang),
            ("drop_watch_after_ms", spec.drop_watch_after_ms.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if spec.delay_max_ms.is_some() && spec.delay_ms.is_none() {
            return invalid("delay_max_ms needs delay_ms".into());
        }
        if spec.retry_after_s.is_some() && spec.error.is_none() {
            return invalid("retry_after_s needs error".into());
        }
        let effect = match effects.as_slice() {
            [] => {
                return invalid(
                    "no effect: give one of delay_ms, error, hang, drop_watch_after_ms".into(),
                );
            }
            ["delay_ms"] => {
                let min = spec.delay_ms.unwrap_or_default();
                let max = spec.delay_max_ms.unwrap_or(min);
                if max < min {
                    return invalid(format!("delay_max_ms {max} is below delay_ms {min}"));
                }
                Effect::Delay {
                    min: Duration::from_millis(min),
                    max: Duration::from_millis(max),
                }
            }
            ["error"] => {
                let code = spec.error.unwrap_or_default();
                if !(400..=599).contains(&code) {
                    return invalid(format!(
                        "error {code} is not an HTTP error status (400-599)"
                    ));
                }
                let default_retry_after = (code == 429).then_some(Duration::from_secs(1));
                Effect::Error {
                    code,
                    retry_after: spec
                        .retry_after_s
                        .map(Duration::from_secs)
                        .or(default_retry_after),
                }
            }
            ["hang"] => Effect::Hang,
            ["drop_watch_after_ms"] => Effect::DropWatch {
                after: Duration::from_millis(spec.drop_watch_after_ms.unwrap_or_default()),
            },
            several => {
                return invalid(format!(
                    "one effect per fault, got {}",
                    several.join(" and ")
                ));
            }
        };
        Ok(Fault {
            matches: RequestMatch {
                verb,
                resource: spec.resource,
                namespace: spec.namespace,
                name: spec.name,
            },
            effect,
            probability,
            times: spec.times,
        })
    }
}

impl From<&Fault> for FaultSpec {
    fn from(fault: &Fault) -> Self {
        let millis = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut spec = FaultSpec {
            verb: fault.matches.verb.clone(),
            resource: fault.matches.resource.clone(),
            namespace: fault.matches.namespace.clone(),
            name: fault.matches.name.clone(),
            probability: (fault.probability != 1.0).then_some(fault.probability),
            times: fault.times,
            ..FaultSpec::default()
        };
        match &fault.effect {
            Effect::Delay { min, max } => {
                spec.delay_ms = Some(millis(min));
                spec.delay_max_ms = (min != max).then(|| millis(max));
            }
            Effect::Error { code, retry_after } => {
                spec.error = Some(*code);
                spec.retry_after_s = retry_after.map(|d| d.as_secs());
            }
            Effect::Hang => spec.hang = true,
            Effect::DropWatch { after } => spec.drop_watch_after_ms = Some(millis(after)),
        }
        spec
    }
}

/// A fault as `GET /_sandbox/faults` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultView {
    pub id: FaultId,
    pub fired: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
}

impl From<&InjectedFault> for FaultView {
    fn from(injected: &InjectedFault) -> Self {
        Self {
            id: injected.id,
            fired: injected.fired,
            spec: FaultSpec::from(&injected.fault),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn request(
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> ResourceRequest {
        ResourceRequest {
            verb: verb.into(),
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
        }
    }

    fn injected(faults: Vec<Fault>) -> Vec<InjectedFault> {
        faults
            .into_iter()
            .zip(1..)
            .map(|(fault, id)| InjectedFault {
                id: FaultId(id),
                fault,
                fired: 0,
            })
            .collect()
    }

    #[test]
    fn matches_verb_resource_namespace_and_name() {
        let mut faults = injected(vec![
            Fault::on("get", "pods").namespace("a").name("p").error(500),
        ]);
        let mut never = || 0.0;
        let hit = request("get", "pods", Some("a"), Some("p"));
        for miss in [
            request("list", "pods", Some("a"), None),
            request("get", "pods/status", Some("a"), Some("p")),
            request("get", "pods", Some("b"), Some("p")),
            request("get", "pods", Some("a"), Some("q")),
            request("get", "pods", None, Some("p")),
        ] {
            assert_eq!(plan(&mut faults, &miss, &mut never).answer, Answer::Serve);
        }
        assert!(matches!(
            plan(&mut faults, &hit, &mut never).answer,
            Answer::Error(_)
        ));
        assert_eq!(faults[0].fired, 1);
    }

    #[test]
    fn delays_add_up_until_the_first_error_and_later_faults_are_not_counted() {
        let mut faults = injected(vec![
            Fault::any().delay(Duration::from_secs(1)),
            Fault::verb("list").delay(Duration::from_secs(2)),
            Fault::resource("pods").error(429),
            Fault::any().hang(),
        ]);
        let planned = plan(
            &mut faults,
            &request("list", "pods", None, None),
            &mut || 0.0,
        );
        assert_eq!(planned.delay, Duration::from_secs(3));
        let Answer::Error(error) = planned.answer else {
            panic!("expected an error, got {:?}", planned.answer);
        };
        assert_eq!((error.code, error.reason), (429, "TooManyRequests"));
        assert_eq!(error.retry_after, Some(Duration::from_secs(1)));
        let fired: Vec<u64> = faults.iter().map(|f| f.fired).collect();
        assert_eq!(fired, [1, 1, 1, 0]);
    }

    #[test]
    fn times_and_probability_limit_hits() {
        let mut faults = injected(vec![
            Fault::any().error(500).times(2),
            Fault::any().hang().probability(0.5),
        ]);
        let get = request("get", "pods", None, Some("p"));
        let answers: Vec<Answer> = [0.9, 0.9, 0.9, 0.1]
            .into_iter()
            .map(|roll| plan(&mut faults, &get, &mut || roll).answer)
            .collect();
        assert!(matches!(answers[0], Answer::Error(_)));
        assert!(matches!(answers[1], Answer::Error(_)));
        assert_eq!(answers[2], Answer::Serve);
        assert_eq!(answers[3], Answer::Hang);
        assert_eq!((faults[0].fired, faults[1].fired), (2, 1));
    }

    #[test]
    fn a_watch_drop_hits_only_watches_and_the_shortest_wins() {
        let mut faults = injected(vec![
            Fault::any().drop_watch_after(Duration::from_secs(5)),
            Fault::resource("pods").drop_watch_after(Duration::from_secs(2)),
        ]);
        let list = plan(
            &mut faults,
            &request("list", "pods", None, None),
            &mut || 0.0,
        );
        assert_eq!(list.drop_watch_after, None);
        let watch = plan(
            &mut faults,
            &request("watch", "pods", None, None),
            &mut || 0.0,
        );
        assert_eq!(watch.drop_watch_after, Some(Duration::from_secs(2)));
        assert_eq!((faults[0].fired, faults[1].fired), (1, 1));
    }

    #[test]
    fn a_delay_range_stays_within_its_bounds() {
        let mut faults = injected(vec![
            Fault::any().delay_between(Duration::from_secs(3), Duration::from_secs(1)),
        ]);
        let get = request("get", "pods", None, Some("p"));
        for (roll, expected) in [(0.0, 1), (0.5, 2), (1.0, 3)] {
            let planned = plan(&mut faults, &get, &mut || roll);
            assert_eq!(planned.delay, Duration::from_secs(expected));
        }
    }

    #[test]
    fn specs_round_trip_and_bad_ones_say_why() {
        let parse = |json: &str| {
            serde_json::from_str::<FaultSpec>(json)
                .map_err(|e| e.to_string())
                .and_then(|spec| Fault::try_from(spec).map_err(|e| e.to_string()))
        };
        for json in [
            r#"{"verb":"list","resource":"pods","delay_ms":3000}"#,
            r#"{"delay_ms":100,"delay_max_ms":300,"times":4}"#,
            r#"{"error":429,"probability":0.2}"#,
            r#"{"error":503,"retry_after_s":7,"namespace":"x","name":"y"}"#,
            r#"{"hang":true,"resource":"leases"}"#,
            r#"{"drop_watch_after_ms":500,"resource":"pods"}"#,
        ] {
            let fault = parse(json).unwrap();
            let again = Fault::try_from(FaultSpec::from(&fault)).unwrap();
            assert_eq!(again, fault, "{json}");
        }
        let error = Fault::try_from(serde_json::from_str::<FaultSpec>(r#"{"error":429}"#).unwrap());
        assert_eq!(
            error.unwrap().effect,
            Effect::Error {
                code: 429,
                retry_after: Some(Duration::from_secs(1))
            }
        );
        for (json, says) in [
            (r#"{"verb":"list"}"#, "no effect"),
            (r#"{"error":500,"hang":true}"#, "error and hang"),
            (r#"{"verb":"lst","error":500}"#, "not one of"),
            (r#"{"error":200}"#, "400-599"),
            (r#"{"error":500,"probability":1.5}"#, "between 0 and 1"),
            (r#"{"delay_ms":5,"delay_max_ms":1}"#, "below"),
            (r#"{"delay_max_ms":5,"error":500}"#, "needs delay_ms"),
            (r#"{"hang":true,"retry_after_s":1}"#, "needs error"),
            (r#"{"hang":true,"verbs":"get"}"#, "unknown field"),
        ] {
            let error = parse(json).unwrap_err();
            assert!(error.contains(says), "{json}: {error}");
        }
    }
}
