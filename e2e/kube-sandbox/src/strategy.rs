//! What differs between kinds as objects are created, written, deleted and printed, in the
//! shape of the API server's registry strategies (`rest.RESTCreateStrategy`,
//! `rest.RESTGracefulDeleteStrategy`, `rest.TableConvertor`): the store and the server are
//! generic and ask the kind's [`Strategy`]. Kinds without one of their own, custom resources
//! among them, get [`GENERIC`].

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::resources::ResourceType;
use crate::selector::Selector;
use crate::store::{ChangeKind, Store, timestamp};
use crate::{defaults, tables};

/// The seconds a delete leaves an object in place (with a deletionTimestamp), given the
/// object and the grace period the request asked for; 0 deletes it at once.
pub type GracePeriod = fn(&Value, Option<i64>) -> i64;

pub struct Strategy {
    /// Rewrites every body written, status writes included.
    pub normalize: fn(&mut Value),
    /// The kind's defaults, filled in on every write of the main resource.
    pub defaults: fn(&mut Value),
    /// Whether a create keeps the status it carries; objects of other kinds with a status
    /// subresource start without one, as on a real API server.
    pub keeps_status_on_create: bool,
    /// The last step of a create, after defaulting: the status an object starts with, and
    /// what the registry allocates it.
    pub prepare_create: fn(&Store, &ResourceType, &mut Value, DateTime<Utc>),
    /// Graceful deletion: how long a delete waits. An object of such a kind stays while it is
    /// being deleted, finalizers or not, until it is deleted with grace 0 (as a pod's kubelet
    /// does).
    pub graceful_delete: Option<GracePeriod>,
    /// The kind's Table printer; without one, custom resources print their CRD's columns.
    pub printer: Option<&'static tables::Printer>,
    /// What follows in the store from a change to an object of the kind, in its namespace.
    pub after_commit: fn(&mut Store, &str, ChangeKind, &Value),
}

pub const GENERIC: Strategy = Strategy {
    normalize: |_| {},
    defaults: |_| {},
    keeps_status_on_create: false,
    prepare_create: |_, _, _, _| {},
    graceful_delete: None,
    printer: None,
    after_commit: |_, _, _, _| {},
};

/// Pods and PodDisruptionBudgets change the budgets' status, as the disruption controller
/// keeps it.
fn refresh_budgets(store: &mut Store, namespace: &str, _: ChangeKind, _: &Value) {
    store.refresh_budgets(namespace);
}

static POD: Strategy = Strategy {
    defaults: defaults::pod,
    prepare_create: |_, _, pod, _| {
        pod["status"] = json!({"phase": "Pending", "qosClass": defaults::qos_class(&pod["spec"])});
    },
    graceful_delete: Some(pod_grace_period),
    printer: Some(&tables::POD),
    after_commit: refresh_budgets,
    ..GENERIC
};

static NODE: Strategy = Strategy {
    // Nodes register with their status, as kubelets do.
    keeps_status_on_create: true,
    printer: Some(&tables::NODE),
    ..GENERIC
};

static NAMESPACE: Strategy = Strategy {
    defaults: defaults::namespace,
    prepare_create: |_, _, namespace, _| namespace["status"] = json!({"phase": "Active"}),
    printer: Some(&tables::NAMESPACE),
    ..GENERIC
};

static CONFIG_MAP: Strategy = Strategy {
    printer: Some(&tables::CONFIG_MAP),
    ..GENERIC
};

static SECRET: Strategy = Strategy {
    normalize: fold_string_data,
    defaults: defaults::secret,
    printer: Some(&tables::SECRET),
    ..GENERIC
};

static SERVICE_ACCOUNT: Strategy = Strategy {
    printer: Some(&tables::SERVICE_ACCOUNT),
    ..GENERIC
};

static SERVICE: Strategy = Strategy {
    defaults: defaults::service,
    prepare_create: |store, services, service, _| {
        allocate_service_addresses(store, services, &mut service["spec"]);
    },
    printer: Some(&tables::SERVICE),
    ..GENERIC
};

static EVENT: Strategy = Strategy {
    printer: Some(&tables::EVENT),
    ..GENERIC
};

static DEPLOYMENT: Strategy = Strategy {
    defaults: defaults::deployment,
    printer: Some(&tables::DEPLOYMENT),
    ..GENERIC
};

static REPLICA_SET: Strategy = Strategy {
    defaults: defaults::replica_set,
    printer: Some(&tables::REPLICA_SET),
    ..GENERIC
};

static STATEFUL_SET: Strategy = Strategy {
    defaults: defaults::stateful_set,
    printer: Some(&tables::STATEFUL_SET),
    ..GENERIC
};

static LEASE: Strategy = Strategy {
    printer: Some(&tables::LEASE),
    ..GENERIC
};

static POD_DISRUPTION_BUDGET: Strategy = Strategy {
    printer: Some(&tables::POD_DISRUPTION_BUDGET),
    after_commit: refresh_budgets,
    ..GENERIC
};

static HORIZONTAL_POD_AUTOSCALER: Strategy = Strategy {
    defaults: defaults::horizontal_pod_autoscaler,
    printer: Some(&tables::HORIZONTAL_POD_AUTOSCALER),
    ..GENERIC
};

static ROLE: Strategy = Strategy {
    printer: Some(&tables::ROLE),
    ..GENERIC
};

static ROLE_BINDING: Strategy = Strategy {
    printer: Some(&tables::ROLE_BINDING),
    ..GENERIC
};

static CUSTOM_RESOURCE_DEFINITION: Strategy = Strategy {
    // A CRD is accepted and established at once: there is no naming controller to wait for.
    prepare_create: |_, _, crd, now| {
        crd["status"] = json!({
            "acceptedNames": crd["spec"]["names"].clone(),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": timestamp(now)},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "lastTransitionTime": timestamp(now)},
            ],
        });
    },
    // Its custom resources are served as soon as it is written.
    after_commit: |store, _, change, crd| {
        if change != ChangeKind::Deleted {
            store.declare_types(ResourceType::from_crd(crd));
        }
    },
    ..GENERIC
};

/// The strategy of objects of `rt`.
pub fn of(rt: &ResourceType) -> &'static Strategy {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => &POD,
        ("", "Node") => &NODE,
        ("", "Namespace") => &NAMESPACE,
        ("", "ConfigMap") => &CONFIG_MAP,
        ("", "Secret") => &SECRET,
        ("", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("", "Service") => &SERVICE,
        ("", "Event") => &EVENT,
        ("apps", "Deployment") => &DEPLOYMENT,
        ("apps", "ReplicaSet") => &REPLICA_SET,
        ("apps", "StatefulSet") => &STATEFUL_SET,
        ("coordination.k8s.io", "Lease") => &LEASE,
        ("policy", "PodDisruptionBudget") => &POD_DISRUPTION_BUDGET,
        ("autoscaling", "HorizontalPodAutoscaler") => &HORIZONTAL_POD_AUTOSCALER,
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => &ROLE,
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => &ROLE_BINDING,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => &CUSTOM_RESOURCE_DEFINITION,
        _ => &GENERIC,
    }
}

/// A pod bound to a node and not finished waits the grace period asked for (else its own
/// `terminationGracePeriodSeconds`) for its node's agent; any other pod goes at once.
fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let bound = !pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .is_empty();
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    let requested = requested
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    if bound && !finished {
        requested.max(0)
    } else {
        0
    }
}

/// A Secret's `stringData` is write-only: the API server folds it into `data` (base64).
fn fold_string_data(secret: &mut Value) {
    let Some(Value::Object(plain)) = secret.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    use base64::Engine as _;
    let data = &mut secret["data"];
    if !data.is_object() {
        *data = json!({});
    }
    for (key, value) in plain {
        let text = value.as_str().unwrap_or_default();
        data[key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// A Service's cluster IP (from 10.96.0.0/16, the first free one, as the registry
/// allocates on create) and node ports (from 30000) where its type has them and none was
/// asked for.
fn allocate_service_addresses(store: &Store, services: &ResourceType, spec: &mut Value) {
    let all = Selector::default();
    let services: Vec<&Value> = store
        .scan(services, None, &all, &all)
        .map(|service| &service["spec"])
        .collect();
    let kind = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if kind != "ExternalName" && spec["clusterIP"].as_str().is_none_or(str::is_empty) {
        let used: BTreeSet<&str> = services
            .iter()
            .filter_map(|s| s["clusterIP"].as_str())
            .collect();
        if let Some(ip) = (1..=u16::MAX)
            .map(|n| format!("10.96.{}.{}", n >> 8, n & 0xff))
            .find(|ip| !used.contains(ip.as_str()))
        {
            spec["clusterIP"] = json!(ip);
            spec["clusterIPs"] = json!([ip]);
            spec["ipFamilies"] = json!(["IPv4"]);
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        let mut used: BTreeSet<i64> = services
            .iter()
            .flat_map(|s| s["ports"].as_array().into_iter().flatten())
            .filter_map(|p| p["nodePort"].as_i64())
            .collect();
        if let Some(ports) = spec["ports"].as_array_mut() {
            for port in ports.iter_mut().filter(|p| p["nodePort"].is_null()) {
                if let Some(free) = (30000..=32767).find(|n| !used.contains(n)) {
                    used.insert(free);
                    port["nodePort"] = json!(free);
                }
            }
        }
    }
}
