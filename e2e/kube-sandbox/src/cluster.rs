//! What kube-scheduler and kube-controller-manager would do, reduced to what vk-eci's
//! scenarios need: bind pods to nodes, keep ReplicaSets at their replica count (with the real
//! scale-down ranking), and give Deployments a ReplicaSet per pod template.
//!
//! One pass over the store reconciles everything; the sandbox runs passes after changes until
//! nothing more changes. The workload controllers write pods no faster than
//! kube-controller-manager's clients may ([`ControllerClients`]), so a 10,000-replica
//! Deployment arrives over minutes, as on a real cluster, not as one burst of changes.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::selector::Selector;
use crate::store::{DeleteOptions, Store, timestamp};

fn ready(object: &Value) -> bool {
    object["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn terminating(object: &Value) -> bool {
    !object["metadata"]["deletionTimestamp"].is_null()
}

fn tolerates(pod: &Value, taint: &Value) -> bool {
    pod["spec"]["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| {
            let key_matches = t["key"] == taint["key"]
                || (t["key"].as_str().unwrap_or_default().is_empty() && t["operator"] == "Exists");
            let value_matches = t["operator"] == "Exists"
                || t["value"].as_str().unwrap_or_default()
                    == taint["value"].as_str().unwrap_or_default();
            let effect_matches = t["effect"].as_str().unwrap_or_default().is_empty()
                || t["effect"] == taint["effect"];
            key_matches && value_matches && effect_matches
        })
}

fn expression_matches(labels: &Value, expression: &Value) -> bool {
    let value = labels[expression["key"].as_str().unwrap_or_default()].as_str();
    let values: Vec<&str> = expression["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let number = |s: &str| s.parse::<i64>().ok();
    match expression["operator"].as_str().unwrap_or_default() {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => value.is_none_or(|v| !values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => value
            .and_then(number)
            .zip(values.first().and_then(|v| number(v)))
            .is_some_and(|(v, x)| v > x),
        "Lt" => value
            .and_then(number)
            .zip(values.first().and_then(|v| number(v)))
            .is_some_and(|(v, x)| v < x),
        _ => false,
    }
}

/// Why `node` cannot take `pod`, or `None` if it can.
fn unfit(pod: &Value, node: &Value) -> Option<&'static str> {
    if !ready(node) || node["spec"]["unschedulable"] == true {
        return Some("node(s) were not ready or unschedulable");
    }
    let labels = &node["metadata"]["labels"];
    if let Some(selector) = pod["spec"]["nodeSelector"].as_object()
        && selector.iter().any(|(k, v)| labels[k] != *v)
    {
        return Some("node(s) didn't match Pod's node affinity/selector");
    }
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    if let Some(terms) = terms.as_array() {
        let name = &node["metadata"]["name"];
        let any_term = terms.iter().any(|term| {
            term["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|e| expression_matches(labels, e))
                && term["matchFields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|e| expression_matches(&json!({"metadata.name": name}), e))
        });
        if !any_term {
            return Some("node(s) didn't match Pod's node affinity/selector");
        }
    }
    let untolerated = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute")))
        .any(|t| !tolerates(pod, t));
    untolerated.then_some("node(s) had untolerated taint(s)")
}

/// The weight of the pod's preferred node affinity terms that `node` matches.
fn preference_score(pod: &Value, node: &Value) -> i64 {
    let labels = &node["metadata"]["labels"];
    pod["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|term| {
            term["preference"]["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|e| expression_matches(labels, e))
        })
        .filter_map(|term| term["weight"].as_i64())
        .sum()
}

/// The fitting node the pod prefers most (filter, then score): the first by name of the
/// best scored.
fn best_fit<'a>(pod: &Value, nodes: &'a [Value]) -> Option<&'a Value> {
    nodes
        .iter()
        .filter(|n| unfit(pod, n).is_none())
        .fold(None, |best: Option<(&Value, i64)>, node| {
            let score = preference_score(pod, node);
            match best {
                Some((_, top)) if top >= score => best,
                _ => Some((node, score)),
            }
        })
        .map(|(node, _)| node)
}

/// Binds unscheduled pods to a fitting node (the best preferred, then the first by name); the rest get
/// `PodScheduled=False` with the reasons.
fn schedule(store: &mut Store, now: DateTime<Utc>) -> bool {
    let (Some(pods_type), Some(nodes_type)) = (
        store.find_type("", "v1", "pods"),
        store.find_type("", "v1", "nodes"),
    ) else {
        return false;
    };
    let all = Selector::default();
    let (nodes, _) = store.list(&nodes_type, None, &all, &all, None, None);
    let pending = Selector::parse("spec.nodeName=").unwrap_or_default();
    let (pods, _) = store.list(&pods_type, None, &all, &pending, None, None);
    let mut changed = false;
    for pod in pods.into_iter().filter(|p| !terminating(p)) {
        let namespace = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let reasons: Vec<&str> = nodes.iter().filter_map(|n| unfit(&pod, n)).collect();
        match best_fit(&pod, &nodes) {
            Some(node) => {
                let mut bound = pod.clone();
                bound["spec"]["nodeName"] = node["metadata"]["name"].clone();
                if let Ok(bound) = store.update(&pods_type, Some(&namespace), &name, bound, None) {
                    let message = format!(
                        "Successfully assigned {namespace}/{name} to {}",
                        node["metadata"]["name"].as_str().unwrap_or_default()
                    );
                    record_event(
                        store,
                        &bound,
                        "Pod",
                        false,
                        ("default-scheduler", "Scheduled"),
                        message,
                        now,
                    );
                    let mut scheduled = bound;
                    set_condition(
                        &mut scheduled,
                        json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": timestamp(now)}),
                    );
                    let _raced = store.update(
                        &pods_type,
                        Some(&namespace),
                        &name,
                        scheduled,
                        Some("status"),
                    );
                    changed = true;
                }
            }
            None => {
                let mut summary: Vec<String> = Vec::new();
                for reason in [
                    "node(s) were not ready or unschedulable",
                    "node(s) didn't match Pod's node affinity/selector",
                    "node(s) had untolerated taint(s)",
                ] {
                    let count = reasons.iter().filter(|r| **r == reason).count();
                    if count > 0 {
                        summary.push(format!("{count} {reason}"));
                    }
                }
                let message = if nodes.is_empty() {
                    "0/0 nodes are available: no nodes available to schedule pods.".to_string()
                } else {
                    format!(
                        "0/{} nodes are available: {}.",
                        nodes.len(),
                        summary.join(", ")
                    )
                };
                let already = pod["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "PodScheduled" && c["message"] == message.as_str())
                });
                if !already {
                    let mut unschedulable = pod.clone();
                    set_condition(
                        &mut unschedulable,
                        json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastTransitionTime": timestamp(now)}),
                    );
                    if store
                        .update(
                            &pods_type,
                            Some(&namespace),
                            &name,
                            unschedulable,
                            Some("status"),
                        )
                        .is_ok()
                    {
                        record_event(
                            store,
                            &pod,
                            "Pod",
                            true,
                            ("default-scheduler", "FailedScheduling"),
                            message,
                            now,
                        );
                        changed = true;
                    }
                }
            }
        }
    }
    changed
}

/// Records a core/v1 Event about `object`, as the controller `component` would.
fn record_event(
    store: &mut Store,
    object: &Value,
    kind: &str,
    warning: bool,
    (component, reason): (&str, &str),
    message: String,
    now: DateTime<Utc>,
) {
    let Some(events) = store.find_type("", "v1", "events") else {
        return;
    };
    let meta = &object["metadata"];
    let namespace = meta["namespace"].as_str().unwrap_or("default").to_string();
    let name = meta["name"].as_str().unwrap_or_default();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let event = json!({
        "metadata": {"name": format!("{name}.{}", &suffix[..16]), "namespace": namespace},
        "involvedObject": {
            "apiVersion": object["apiVersion"], "kind": kind, "namespace": namespace, "name": name,
            "uid": meta["uid"], "resourceVersion": meta["resourceVersion"],
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": "",
        "firstTimestamp": timestamp(now),
        "lastTimestamp": timestamp(now),
        "count": 1,
        "type": if warning { "Warning" } else { "Normal" },
    });
    let _best_effort = store.create(&events, Some(&namespace), event, now);
}

fn set_condition(object: &mut Value, condition: Value) {
    let conditions = &mut object["status"]["conditions"];
    let mut list = conditions.as_array().cloned().unwrap_or_default();
    list.retain(|c| c["type"] != condition["type"]);
    list.push(condition);
    *conditions = Value::Array(list);
}

/// Objects of a type that are not being deleted, with their namespace and name.
fn live_objects(
    store: &Store,
    rt: &crate::resources::ResourceType,
) -> Vec<(String, String, Value)> {
    let all = Selector::default();
    let (objects, _) = store.list(rt, None, &all, &all, None, None);
    objects
        .into_iter()
        .filter(|o| !terminating(o))
        .map(|o| {
            let text = |field: &str| {
                o["metadata"][field]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            };
            (text("namespace"), text("name"), o)
        })
        .collect()
}

fn owned_by<'a>(objects: impl IntoIterator<Item = &'a Value>, uid: &Value) -> Vec<&'a Value> {
    objects
        .into_iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r["uid"] == *uid && r["controller"] == true)
                })
        })
        .collect()
}

/// The ReplicaSet controller's scale-down order: the pod to delete first sorts first.
/// Unassigned before assigned, Pending before Running, not Ready before Ready, lower
/// `controller.kubernetes.io/pod-deletion-cost` first, then the newest first.
pub fn deletion_order(a: &Value, b: &Value) -> Ordering {
    let assigned = |p: &Value| {
        !p["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    };
    let phase_rank = |p: &Value| match p["status"]["phase"].as_str() {
        Some("Running") => 2,
        Some("Pending") => 0,
        _ => 1,
    };
    let cost = |p: &Value| {
        p["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
            .as_str()
            .and_then(|c| c.parse::<i32>().ok())
            .unwrap_or(0)
    };
    let created = |p: &Value| {
        p["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assigned(a)
        .cmp(&assigned(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(ready(a).cmp(&ready(b)))
        .then(cost(a).cmp(&cost(b)))
        .then(created(b).cmp(&created(a)))
}

/// A client-go token bucket (`flowcontrol.NewTokenBucketRateLimiter`): it starts full, holds
/// at most `burst` requests and refills at `qps`. A controller waits on it request by request,
/// so one that has been waiting since the last pass has made a request every `1/qps` since,
/// however long the pass took: the sandbox's passes are seconds apart at 50,000 pods, and a
/// bucket capped at `burst` between them would slow the controller far below its rate.
#[derive(Debug, Clone)]
struct RequestBudget {
    qps: f64,
    burst: f64,
    tokens: f64,
    refilled: Option<DateTime<Utc>>,
    /// A request found the bucket empty, so the controller is still waiting on it.
    waiting: bool,
}

impl RequestBudget {
    fn new(qps: f64, burst: f64) -> Self {
        Self {
            qps,
            burst,
            tokens: burst,
            refilled: None,
            waiting: false,
        }
    }

    /// Takes one request's token if one is there at `now`.
    fn try_take(&mut self, now: DateTime<Utc>) -> bool {
        // Requests of one pass share its instant: the bucket moves only as time does.
        if let Some(refilled) = self.refilled
            && now > refilled
        {
            let seconds = (now - refilled).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
            self.tokens += seconds * self.qps;
            if !self.waiting {
                self.tokens = self.tokens.min(self.burst);
            }
        }
        self.refilled = Some(now);
        self.waiting = self.tokens < 1.0;
        if self.waiting {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// kube-controller-manager gives each controller its own API client, limited by
/// `--kube-api-qps` (default 20) and `--kube-api-burst` (default 30); the ReplicaSet and
/// StatefulSet controllers' pod creates and deletes wait on it.
#[derive(Debug, Clone)]
pub struct ControllerClients {
    replica_sets: RequestBudget,
    stateful_sets: RequestBudget,
}

impl Default for ControllerClients {
    fn default() -> Self {
        Self {
            replica_sets: RequestBudget::new(20.0, 30.0),
            stateful_sets: RequestBudget::new(20.0, 30.0),
        }
    }
}

fn reconcile_replica_sets(
    store: &mut Store,
    budget: &mut RequestBudget,
    now: DateTime<Utc>,
) -> bool {
    let (Some(rs_type), Some(pods_type)) = (
        store.find_type("apps", "v1", "replicasets"),
        store.find_type("", "v1", "pods"),
    ) else {
        return false;
    };
    let all = Selector::default();
    let mut changed = false;
    for (namespace, name, set) in live_objects(store, &rs_type) {
        let wanted = set["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        let (missing, surplus) = {
            let mut live: Vec<&Value> = owned_by(
                store.scan(&pods_type, Some(&namespace), &all, &all),
                &set["metadata"]["uid"],
            )
            .into_iter()
            .filter(|p| !terminating(p))
            .collect();
            if live.len() > wanted {
                live.sort_by(|a, b| deletion_order(a, b));
            }
            let surplus: Vec<String> = live
                .iter()
                .take(live.len().saturating_sub(wanted))
                .map(|p| name_of(p))
                .collect();
            (wanted.saturating_sub(live.len()), surplus)
        };
        let controller = ("replicaset-controller", "SuccessfulCreate");
        for _ in 0..missing {
            if !budget.try_take(now) {
                break;
            }
            let pod = pod_from_template(&set, "ReplicaSet", PodName::Generated(format!("{name}-")));
            if let Ok(pod) = store.create(&pods_type, Some(&namespace), pod, now) {
                let message = format!("Created pod: {}", name_of(&pod));
                record_event(store, &set, "ReplicaSet", false, controller, message, now);
                changed = true;
            }
        }
        for pod in &surplus {
            if !budget.try_take(now) {
                break;
            }
            if delete_pod(store, &pods_type, &namespace, pod, now) {
                let controller = ("replicaset-controller", "SuccessfulDelete");
                let message = format!("Deleted pod: {pod}");
                record_event(store, &set, "ReplicaSet", false, controller, message, now);
                changed = true;
            }
        }
        let (replicas, ready_count) = replica_counts(store, &pods_type, &namespace, &set);
        let status = json!({"replicas": replicas, "fullyLabeledReplicas": replicas, "readyReplicas": ready_count, "availableReplicas": ready_count, "observedGeneration": set["metadata"]["generation"]});
        changed |= write_status(store, &rs_type, &namespace, &name, status);
    }
    changed
}

/// Deletes one of a workload's pods (gracefully, as the controllers do).
fn delete_pod(
    store: &mut Store,
    pods: &crate::resources::ResourceType,
    namespace: &str,
    name: &str,
    now: DateTime<Utc>,
) -> bool {
    store
        .delete(pods, Some(namespace), name, &DeleteOptions::default(), now)
        .is_ok()
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The workload's live pods and how many of them are Ready, for its status.
fn replica_counts(
    store: &Store,
    pods: &crate::resources::ResourceType,
    namespace: &str,
    owner: &Value,
) -> (usize, usize) {
    let all = Selector::default();
    let live: Vec<&Value> = owned_by(
        store.scan(pods, Some(namespace), &all, &all),
        &owner["metadata"]["uid"],
    )
    .into_iter()
    .filter(|p| !terminating(p))
    .collect();
    let ready_count = live.iter().filter(|p| ready(p)).count();
    (live.len(), ready_count)
}

/// How a pod made from a template is named.
enum PodName {
    Given(String),
    Generated(String),
}

/// A pod from a workload's template, owned by the workload.
fn pod_from_template(owner: &Value, owner_kind: &str, name: PodName) -> Value {
    let template = &owner["spec"]["template"];
    let mut metadata = json!({
        "labels": template["metadata"]["labels"],
        "annotations": template["metadata"]["annotations"],
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}],
    });
    match name {
        PodName::Given(name) => metadata["name"] = json!(name),
        PodName::Generated(prefix) => metadata["generateName"] = json!(prefix),
    }
    clean(json!({"metadata": metadata, "spec": template["spec"]}))
}

/// Writes a workload's status through its status subresource when it differs.
fn write_status(
    store: &mut Store,
    rt: &crate::resources::ResourceType,
    namespace: &str,
    name: &str,
    status: Value,
) -> bool {
    match store.get(rt, Some(namespace), name) {
        Ok(current) if current["status"] != status => {
            let mut next = current;
            next["status"] = status;
            store
                .update(rt, Some(namespace), name, next, Some("status"))
                .is_ok()
        }
        _ => false,
    }
}

fn clean(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, clean(v)))
                .collect(),
        ),
        other => other,
    }
}

fn template_hash(template: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    format!("{:x}", hasher.finish()).chars().take(10).collect()
}

/// Each Deployment gets one ReplicaSet per pod template (named `<deployment>-<hash>`); the
/// current one runs the replicas, older ones are scaled to zero at once (a simple Recreate).
fn reconcile_deployments(store: &mut Store, now: DateTime<Utc>) -> bool {
    let (Some(deploy_type), Some(rs_type)) = (
        store.find_type("apps", "v1", "deployments"),
        store.find_type("apps", "v1", "replicasets"),
    ) else {
        return false;
    };
    let all = Selector::default();
    let mut changed = false;
    for (namespace, name, deployment) in live_objects(store, &deploy_type) {
        let hash = template_hash(&deployment["spec"]["template"]);
        let current_name = format!("{name}-{hash}");
        let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
        let (sets, _) = store.list(&rs_type, Some(&namespace), &all, &all, None, None);
        let owned = owned_by(&sets, &deployment["metadata"]["uid"]);
        let mut scalings = Vec::new();
        for set in &owned {
            let set_name = set["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let want = if set_name == current_name {
                replicas
            } else {
                0
            };
            let had = set["spec"]["replicas"].as_i64().unwrap_or(0);
            if had != want {
                let mut next = (*set).clone();
                next["spec"]["replicas"] = json!(want);
                scalings.push((set_name, had, want, next));
            }
        }
        for (set_name, had, want, next) in scalings {
            if store
                .update(&rs_type, Some(&namespace), &set_name, next, None)
                .is_ok()
            {
                record_scaling(store, &deployment, &set_name, (had, want), now);
                changed = true;
            }
        }
        if !owned
            .iter()
            .any(|s| s["metadata"]["name"] == current_name.as_str())
        {
            let mut template = deployment["spec"]["template"].clone();
            template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut selector = deployment["spec"]["selector"].clone();
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let set = json!({
                "metadata": {
                    "name": current_name,
                    "labels": template["metadata"]["labels"],
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": deployment["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}],
                },
                "spec": {"replicas": replicas, "selector": selector, "template": template},
            });
            if store.create(&rs_type, Some(&namespace), set, now).is_ok() {
                record_scaling(store, &deployment, &current_name, (0, replicas), now);
                changed = true;
            }
        }
        let (sets, _) = store.list(&rs_type, Some(&namespace), &all, &all, None, None);
        let owned = owned_by(&sets, &deployment["metadata"]["uid"]);
        let sum = |field: &str| {
            owned
                .iter()
                .map(|s| s["status"][field].as_i64().unwrap_or(0))
                .sum::<i64>()
        };
        let updated = owned
            .iter()
            .find(|s| s["metadata"]["name"] == current_name.as_str())
            .map_or(0, |s| s["status"]["replicas"].as_i64().unwrap_or(0));
        let available = sum("availableReplicas");
        let progressing = if updated == replicas && available >= replicas {
            json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{current_name}\" has successfully progressed.")})
        } else {
            json!({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": format!("ReplicaSet \"{current_name}\" is progressing.")})
        };
        let status = json!({
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": sum("replicas"),
            "updatedReplicas": updated,
            "readyReplicas": sum("readyReplicas"),
            "availableReplicas": available,
            "conditions": [
                {"type": "Available", "status": if available >= replicas { "True" } else { "False" }, "reason": "MinimumReplicasAvailable"},
                progressing,
            ],
        });
        changed |= write_status(store, &deploy_type, &namespace, &name, status);
    }
    changed
}

/// The deployment controller's `ScalingReplicaSet` event.
fn record_scaling(
    store: &mut Store,
    deployment: &Value,
    set_name: &str,
    (from, to): (i64, i64),
    now: DateTime<Utc>,
) {
    let direction = if to > from { "up" } else { "down" };
    let message = format!("Scaled {direction} replica set {set_name} from {from} to {to}");
    let controller = ("deployment-controller", "ScalingReplicaSet");
    record_event(
        store,
        deployment,
        "Deployment",
        false,
        controller,
        message,
        now,
    );
}

/// StatefulSets: pods `<name>-0` .. `<name>-(n-1)`, each recreated when it is gone; scaling
/// down removes the highest ordinals first.
fn reconcile_stateful_sets(
    store: &mut Store,
    budget: &mut RequestBudget,
    now: DateTime<Utc>,
) -> bool {
    let (Some(sts_type), Some(pods_type)) = (
        store.find_type("apps", "v1", "statefulsets"),
        store.find_type("", "v1", "pods"),
    ) else {
        return false;
    };
    let all = Selector::default();
    let mut changed = false;
    for (namespace, name, set) in live_objects(store, &sts_type) {
        let replicas = set["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
        let ordinal = |pod: &Value| {
            pod["metadata"]["name"]
                .as_str()
                .and_then(|n| n.strip_prefix(&format!("{name}-")))
                .and_then(|i| i.parse::<i64>().ok())
        };
        let (present, surplus): (Vec<i64>, Vec<String>) = {
            let owned = owned_by(
                store.scan(&pods_type, Some(&namespace), &all, &all),
                &set["metadata"]["uid"],
            );
            (
                owned.iter().filter_map(|p| ordinal(p)).collect(),
                owned
                    .iter()
                    .filter(|p| !terminating(p) && ordinal(p).is_some_and(|i| i >= replicas))
                    .map(|p| name_of(p))
                    .collect(),
            )
        };
        for index in (0..replicas).filter(|i| !present.contains(i)) {
            if !budget.try_take(now) {
                break;
            }
            let pod_name = format!("{name}-{index}");
            let mut pod = pod_from_template(&set, "StatefulSet", PodName::Given(pod_name.clone()));
            pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
            if store.create(&pods_type, Some(&namespace), pod, now).is_ok() {
                let message = format!("create Pod {pod_name} in StatefulSet {name} successful");
                let controller = ("statefulset-controller", "SuccessfulCreate");
                record_event(store, &set, "StatefulSet", false, controller, message, now);
                changed = true;
            }
        }
        for pod in &surplus {
            if !budget.try_take(now) {
                break;
            }
            if delete_pod(store, &pods_type, &namespace, pod, now) {
                let message = format!("delete Pod {pod} in StatefulSet {name} successful");
                let controller = ("statefulset-controller", "SuccessfulDelete");
                record_event(store, &set, "StatefulSet", false, controller, message, now);
                changed = true;
            }
        }
        let (live, ready_count) = replica_counts(store, &pods_type, &namespace, &set);
        let status = json!({"replicas": live, "readyReplicas": ready_count, "availableReplicas": ready_count, "currentReplicas": live, "updatedReplicas": live, "observedGeneration": set["metadata"]["generation"]});
        changed |= write_status(store, &sts_type, &namespace, &name, status);
    }
    changed
}

/// Seconds without a Lease renewal after which a node's readiness is Unknown.
pub const NODE_GRACE_SECONDS: i64 = 40;

/// Node lifecycle: a node whose Lease in `kube-node-lease` was not renewed for 40 s gets
/// `Ready=Unknown`, as the node lifecycle controller sets it.
fn reconcile_node_leases(store: &mut Store, now: DateTime<Utc>) -> bool {
    let (Some(nodes_type), Some(lease_type)) = (
        store.find_type("", "v1", "nodes"),
        store.find_type("coordination.k8s.io", "v1", "leases"),
    ) else {
        return false;
    };
    let all = Selector::default();
    let (nodes, _) = store.list(&nodes_type, None, &all, &all, None, None);
    let mut changed = false;
    for node in nodes {
        let name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Ok(lease) = store.get(&lease_type, Some("kube-node-lease"), &name) else {
            continue;
        };
        let renewed = lease["spec"]["renewTime"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let stale = renewed.is_none_or(|at| (now - at).num_seconds() > NODE_GRACE_SECONDS);
        let already_unknown = node["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "Unknown")
        });
        if stale && !already_unknown {
            let mut next = node.clone();
            set_condition(
                &mut next,
                json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.", "lastTransitionTime": timestamp(now), "lastHeartbeatTime": node["status"]["conditions"][0]["lastHeartbeatTime"]}),
            );
            changed |= store
                .update(&nodes_type, None, &name, clean(next), Some("status"))
                .is_ok();
        }
    }
    changed
}

/// One pass of every controller; true if anything changed.
pub fn reconcile(store: &mut Store, clients: &mut ControllerClients, now: DateTime<Utc>) -> bool {
    let deployments = reconcile_deployments(store, now);
    let replica_sets = reconcile_replica_sets(store, &mut clients.replica_sets, now);
    let stateful_sets = reconcile_stateful_sets(store, &mut clients.stateful_sets, now);
    let nodes = reconcile_node_leases(store, now);
    let scheduled = schedule(store, now);
    deployments || replica_sets || stateful_sets || nodes || scheduled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: &str, phase: &str, ready_: bool, cost: Option<&str>, created: &str) -> Value {
        let mut pod = json!({"metadata": {"creationTimestamp": created, "annotations": {}}, "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready_ { "True" } else { "False" }}]}});
        if let Some(cost) = cost {
            pod["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"] =
                json!(cost);
        }
        pod
    }

    #[test]
    fn scale_down_ranking_follows_the_replicaset_controller() {
        let unassigned = pod("", "Pending", false, None, "2026-01-01T00:00:00Z");
        let pending = pod("n", "Pending", false, None, "2026-01-01T00:00:00Z");
        let not_ready = pod("n", "Running", false, None, "2026-01-01T00:00:00Z");
        let cheap = pod("n", "Running", true, Some("-100"), "2026-01-01T00:00:00Z");
        let newer = pod("n", "Running", true, None, "2026-01-02T00:00:00Z");
        let older = pod("n", "Running", true, None, "2026-01-01T00:00:00Z");
        let mut pods = vec![
            older.clone(),
            newer.clone(),
            cheap.clone(),
            not_ready.clone(),
            pending.clone(),
            unassigned.clone(),
        ];
        pods.sort_by(deletion_order);
        assert_eq!(
            pods,
            vec![unassigned, pending, not_ready, cheap, newer, older]
        );
    }

    #[test]
    fn nodes_whose_lease_lapses_become_unknown() {
        let mut store = Store::new(1000);
        let mut clients = ControllerClients::default();
        let now = Utc::now();
        let nodes = store.find_type("", "v1", "nodes").unwrap();
        let leases = store
            .find_type("coordination.k8s.io", "v1", "leases")
            .unwrap();
        store
            .create(&nodes, None, json!({"metadata": {"name": "vk"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}), now)
            .unwrap();
        let renewed = timestamp(now - chrono::TimeDelta::seconds(30));
        store
            .create(
                &leases,
                Some("kube-node-lease"),
                json!({"metadata": {"name": "vk"}, "spec": {"renewTime": renewed}}),
                now,
            )
            .unwrap();
        assert!(
            !reconcile(&mut store, &mut clients, now),
            "a lease renewed 30 s ago is fresh"
        );
        let later = now + chrono::TimeDelta::seconds(15);
        assert!(reconcile(&mut store, &mut clients, later));
        let node = store.get(&nodes, None, "vk").unwrap();
        assert_eq!(node["status"]["conditions"][0]["status"], "Unknown");
        assert!(!reconcile(&mut store, &mut clients, later), "reported once");
    }

    #[test]
    fn replica_sets_create_pods_at_the_controller_managers_client_rate() {
        let mut store = Store::new(1000);
        let mut clients = ControllerClients::default();
        let now = Utc::now();
        let rs = store.find_type("apps", "v1", "replicasets").unwrap();
        let pods = store.find_type("", "v1", "pods").unwrap();
        store
            .create(&rs, Some("default"), json!({"metadata": {"name": "web"}, "spec": {"replicas": 200, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}), now)
            .unwrap();
        let all = Selector::default();
        let seconds = |s: f64| now + chrono::TimeDelta::milliseconds((s * 1000.0) as i64);
        let mut pods_at = |store: &mut Store, at: DateTime<Utc>| {
            while reconcile(store, &mut clients, at) {}
            store.scan(&pods, Some("default"), &all, &all).count()
        };
        assert_eq!(pods_at(&mut store, now), 30, "the burst");
        assert_eq!(pods_at(&mut store, seconds(1.0)), 50);
        assert_eq!(
            pods_at(&mut store, seconds(5.0)),
            130,
            "a controller waiting on its client makes 20 requests a second, not a burst a pass"
        );
        assert_eq!(pods_at(&mut store, seconds(60.0)), 200);
        let mut set = store.get(&rs, Some("default"), "web").unwrap();
        set["spec"]["replicas"] = json!(300);
        store
            .update(&rs, Some("default"), "web", set, None)
            .unwrap();
        assert_eq!(
            pods_at(&mut store, seconds(120.0)),
            230,
            "an idle client holds no more than its burst"
        );
    }

    #[test]
    fn stateful_sets_keep_their_ordinals() {
        let mut store = Store::new(1000);
        let mut clients = ControllerClients::default();
        let now = Utc::now();
        let sts = store.find_type("apps", "v1", "statefulsets").unwrap();
        let pods = store.find_type("", "v1", "pods").unwrap();
        store
            .create(&sts, Some("default"), json!({"metadata": {"name": "db"}, "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}), now)
            .unwrap();
        while reconcile(&mut store, &mut clients, now) {}
        assert!(
            store.get(&pods, Some("default"), "db-0").is_ok()
                && store.get(&pods, Some("default"), "db-1").is_ok()
        );
        store
            .delete(
                &pods,
                Some("default"),
                "db-0",
                &DeleteOptions::default(),
                now,
            )
            .unwrap();
        while reconcile(&mut store, &mut clients, now) {}
        assert!(
            store.get(&pods, Some("default"), "db-0").is_ok(),
            "recreated under the same name"
        );
        let mut set = store.get(&sts, Some("default"), "db").unwrap();
        set["spec"]["replicas"] = json!(1);
        store
            .update(&sts, Some("default"), "db", set, None)
            .unwrap();
        while reconcile(&mut store, &mut clients, now) {}
        assert!(
            store.get(&pods, Some("default"), "db-1").is_err(),
            "the highest ordinal goes"
        );
        assert_eq!(
            store.get(&sts, Some("default"), "db").unwrap()["status"]["replicas"],
            1
        );
    }

    #[test]
    fn scheduling_respects_taints_selectors_and_affinity() {
        let node = json!({"metadata": {"name": "vk", "labels": {"type": "virtual-kubelet"}},
            "spec": {"taints": [{"key": "virtual-kubelet.io/provider", "value": "alibabacloud", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let plain = json!({"spec": {}});
        assert_eq!(
            unfit(&plain, &node),
            Some("node(s) had untolerated taint(s)")
        );
        let tolerating = json!({"spec": {"nodeSelector": {"type": "virtual-kubelet"}, "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}]}});
        assert_eq!(unfit(&tolerating, &node), None);
        let elsewhere = json!({"spec": {"nodeSelector": {"type": "worker"}, "tolerations": [{"operator": "Exists"}]}});
        assert!(unfit(&elsewhere, &node).is_some());
        let affinity = json!({"spec": {"tolerations": [{"operator": "Exists"}], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}]}]}}}}});
        assert!(unfit(&affinity, &node).is_some());
        let mut not_ready = node.clone();
        not_ready["status"]["conditions"][0]["status"] = json!("Unknown");
        assert!(unfit(&tolerating, &not_ready).is_some());
    }

    #[test]
    fn scheduling_prefers_the_best_scored_fitting_node() {
        let ready = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        let virtual_node = json!({"metadata": {"name": "a-virtual", "labels": {"type": "virtual-kubelet"}}, "status": ready});
        let worker = json!({"metadata": {"name": "b-worker", "labels": {"type": "worker"}}, "status": ready});
        let plain = json!({"spec": {}});
        let nodes = [virtual_node.clone(), worker.clone()];
        assert_eq!(
            best_fit(&plain, &nodes).unwrap()["metadata"]["name"],
            "a-virtual",
            "first by name"
        );
        let burst = json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [{"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}]}}]}}}});
        assert_eq!(
            best_fit(&burst, &nodes).unwrap()["metadata"]["name"],
            "b-worker"
        );
        let mut cordoned = worker;
        cordoned["spec"] = json!({"unschedulable": true});
        assert_eq!(
            best_fit(&burst, &[virtual_node, cordoned]).unwrap()["metadata"]["name"],
            "a-virtual",
            "a preference never makes a node fit"
        );
    }
}
