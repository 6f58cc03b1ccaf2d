//! Server-side Tables (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): the columns and
//! cells the real API server's printers (`pkg/printers/internalversion`) give the built-in
//! kinds, and the printer columns of custom resources. Like the real server, every Table
//! carries the `-o wide` columns too (priority 1); kubectl shows them only when asked.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::resources::ResourceType;

/// What each row carries besides its cells (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// One column: name, type, and priority (0 always shown, 1 only with `-o wide`).
struct Column(&'static str, &'static str, u8);

/// A Table of `items` by the kind's printer, or its CRD's printer columns; `None` for a kind
/// with neither (kubectl then prints NAME and AGE itself, as it does for a server that has none).
pub fn table(
    printer: Option<&Printer>,
    rt: &ResourceType,
    items: &[Value],
    resource_version: u64,
    include: IncludeObject,
    now: DateTime<Utc>,
) -> Option<Value> {
    let (columns, cells): (Vec<Value>, Vec<Vec<Value>>) = match printer {
        Some(printer) => (
            printer
                .columns
                .iter()
                .map(|Column(name, kind, priority)| {
                    let format = if *name == "Name" { "name" } else { "" };
                    json!({"name": name, "type": kind, "format": format, "description": "", "priority": priority})
                })
                .collect(),
            items.iter().map(|item| (printer.cells)(item, now)).collect(),
        ),
        None if !rt.printer_columns.is_empty() => custom_resource_table(rt, items, now),
        None => return None,
    };
    let rows: Vec<Value> = items
        .iter()
        .zip(cells)
        .map(|(item, cells)| {
            let object = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => {
                    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item["metadata"]})
                }
                IncludeObject::Object => item.clone(),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    Some(json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    }))
}

/// A built-in kind's printer (upstream `TableConvertor`): its columns, and one row's cells.
pub struct Printer {
    columns: &'static [Column],
    cells: fn(&Value, DateTime<Utc>) -> Vec<Value>,
}

use Column as C;

const NAME: Column = C("Name", "string", 0);
const AGE: Column = C("Age", "string", 0);

pub const POD: Printer = Printer {
    columns: &[
        NAME,
        C("Ready", "string", 0),
        C("Status", "string", 0),
        C("Restarts", "string", 0),
        AGE,
        C("IP", "string", 1),
        C("Node", "string", 1),
        C("Nominated Node", "string", 1),
        C("Readiness Gates", "string", 1),
    ],
    cells: pod_cells,
};

pub const NODE: Printer = Printer {
    columns: &[
        NAME,
        C("Status", "string", 0),
        C("Roles", "string", 0),
        AGE,
        C("Version", "string", 0),
        C("Internal-IP", "string", 1),
        C("External-IP", "string", 1),
        C("OS-Image", "string", 1),
        C("Kernel-Version", "string", 1),
        C("Container-Runtime", "string", 1),
    ],
    cells: node_cells,
};

pub const NAMESPACE: Printer = Printer {
    columns: &[NAME, C("Status", "string", 0), AGE],
    cells: |item, now| {
        let (name, age) = name_and_age(item, now);
        vec![name, item["status"]["phase"].clone(), age]
    },
};

pub const CONFIG_MAP: Printer = Printer {
    columns: &[NAME, C("Data", "integer", 0), AGE],
    cells: |item, now| {
        let (name, age) = name_and_age(item, now);
        let count = |field: &str| item[field].as_object().map_or(0, |m| m.len());
        vec![name, json!(count("data") + count("binaryData")), age]
    },
};

pub const SECRET: Printer = Printer {
    columns: &[NAME, C("Type", "string", 0), C("Data", "integer", 0), AGE],
    cells: |item, now| {
        let (name, age) = name_and_age(item, now);
        let data = item["data"].as_object().map_or(0, |m| m.len());
        vec![name, item["type"].clone(), json!(data), age]
    },
};

pub const SERVICE_ACCOUNT: Printer = Printer {
    columns: &[NAME, C("Secrets", "integer", 0), AGE],
    cells: |item, now| {
        let (name, age) = name_and_age(item, now);
        vec![name, json!(array(&item["secrets"]).len()), age]
    },
};

pub const SERVICE: Printer = Printer {
    columns: &[
        NAME,
        C("Type", "string", 0),
        C("Cluster-IP", "string", 0),
        C("External-IP", "string", 0),
        C("Port(s)", "string", 0),
        AGE,
        C("Selector", "string", 1),
    ],
    cells: service_cells,
};

pub const EVENT: Printer = Printer {
    columns: &[
        C("Last Seen", "string", 0),
        C("Type", "string", 0),
        C("Reason", "string", 0),
        C("Object", "string", 0),
        C("Subobject", "string", 1),
        C("Source", "string", 1),
        C("Message", "string", 0),
        C("First Seen", "string", 1),
        C("Count", "string", 1),
        C("Name", "string", 1),
    ],
    cells: event_cells,
};

pub const DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        C("Ready", "string", 0),
        C("Up-to-date", "integer", 0),
        C("Available", "integer", 0),
        AGE,
        C("Containers", "string", 1),
        C("Images", "string", 1),
        C("Selector", "string", 1),
    ],
    cells: |item, now| {
        let (name, age) = name_and_age(item, now);
        let (spec, status) = (&item["spec"], &item["status"]);
        let mut cells = vec![
            name,
            json!(format!(
                "{}/{}",
                int(&status["readyReplicas"]),
                int(&spec["replicas"])
            )),
            json!(int(&status["updatedReplicas"])),
            json!(int(&status["availableReplicas"])),
            age,
        ];
        cells.extend(template_cells(spec, true));
        cells
    },
};

pub const REPLICA_SET: Printer = Printer {
    columns: &[
        NAME,
        C("Desired", "integer", 0),
        C("Current", "integer", 0),
        C("Ready", "integer", 0),
        AGE,
        C("Containers", "string", 1),
        C("Images", "string", 1),
        C("Selector", "string", 1),
    ],
    cells: |item, now| {
        let (name, age) = name_and_age(item, now);
        let (spec, status) = (&item["spec"], &item["status"]);
        let mut cells = vec![
            name,
            json!(int(&spec["replicas"])),
            json!(int(&status["replicas"])),
            json!(int(&status["readyReplicas"])),
            age,
        ];
        cells.extend(template_cells(spec, true));
        cells
    },
};

pub const STATEFUL_SET: Printer = Printer {
    columns: &[
        NAME,
        C("Ready", "string", 0),
        AGE,
        C("Containers", "string", 1),
        C("Images", "string", 1),
    ],
    cells: |item, now| {
        let (name, age) = name_and_age(item, now);
        let (spec, status) = (&item["spec"], &item["status"]);
        let ready = format!(
            "{}/{}",
            int(&status["readyReplicas"]),
            int(&spec["replicas"])
        );
        let mut cells = vec![name, json!(ready), age];
        cells.extend(template_cells(spec, false));
        cells
    },
};

pub const LEASE: Printer = Printer {
    columns: &[NAME, C("Holder", "string", 0), AGE],
    cells: |item, now| {
        let (name, age) = name_and_age(item, now);
        vec![name, json!(text(&item["spec"]["holderIdentity"])), age]
    },
};

pub const POD_DISRUPTION_BUDGET: Printer = Printer {
    columns: &[
        NAME,
        C("Min Available", "string", 0),
        C("Max Unavailable", "string", 0),
        C("Allowed Disruptions", "integer", 0),
        AGE,
    ],
    cells: |item, now| {
        let (name, age) = name_and_age(item, now);
        let spec = &item["spec"];
        let bound = |value: &Value| match value {
            Value::Null => "N/A".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        vec![
            name,
            json!(bound(&spec["minAvailable"])),
            json!(bound(&spec["maxUnavailable"])),
            json!(int(&item["status"]["disruptionsAllowed"])),
            age,
        ]
    },
};

pub const HORIZONTAL_POD_AUTOSCALER: Printer = Printer {
    columns: &[
        NAME,
        C("Reference", "string", 0),
        C("Targets", "string", 0),
        C("MinPods", "string", 0),
        C("MaxPods", "integer", 0),
        C("Replicas", "integer", 0),
        AGE,
    ],
    cells: |item, now| {
        let (name, age) = name_and_age(item, now);
        let (spec, status) = (&item["spec"], &item["status"]);
        let target = &spec["scaleTargetRef"];
        let min = spec["minReplicas"]
            .as_i64()
            .map_or_else(|| "<unset>".to_string(), |m| m.to_string());
        vec![
            name,
            json!(format!(
                "{}/{}",
                text(&target["kind"]),
                text(&target["name"])
            )),
            json!(hpa_targets(
                array(&spec["metrics"]),
                array(&status["currentMetrics"])
            )),
            json!(min),
            json!(int(&spec["maxReplicas"])),
            json!(int(&status["currentReplicas"])),
            age,
        ]
    },
};

/// Roles and ClusterRoles.
pub const ROLE: Printer = Printer {
    columns: &[NAME, C("Created At", "date", 0)],
    cells: |item, _| {
        vec![
            json!(item["metadata"]["name"]),
            item["metadata"]["creationTimestamp"].clone(),
        ]
    },
};

/// RoleBindings and ClusterRoleBindings.
pub const ROLE_BINDING: Printer = Printer {
    columns: &[
        NAME,
        C("Role", "string", 0),
        AGE,
        C("Users", "string", 1),
        C("Groups", "string", 1),
        C("ServiceAccounts", "string", 1),
    ],
    cells: |item, now| {
        let (name, age) = name_and_age(item, now);
        let subjects = |kind: &str| {
            array(&item["subjects"])
                .iter()
                .filter(|s| s["kind"] == kind)
                .map(|s| match text(&s["namespace"]) {
                    "" => text(&s["name"]).to_string(),
                    ns => format!("{ns}/{}", text(&s["name"])),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let role = &item["roleRef"];
        vec![
            name,
            json!(format!("{}/{}", text(&role["kind"]), text(&role["name"]))),
            age,
            json!(subjects("User")),
            json!(subjects("Group")),
            json!(subjects("ServiceAccount")),
        ]
    },
};

/// The NAME and AGE cells most printers start and end with.
fn name_and_age(item: &Value, now: DateTime<Utc>) -> (Value, Value) {
    (
        json!(item["metadata"]["name"]),
        json!(timestamp_age(&item["metadata"]["creationTimestamp"], now)),
    )
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or_default()
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn or_none(value: &str) -> String {
    if value.is_empty() {
        "<none>".into()
    } else {
        value.to_string()
    }
}

/// CONTAINERS, IMAGES (and SELECTOR) of a workload's pod template.
fn template_cells(spec: &Value, with_selector: bool) -> Vec<Value> {
    let containers = array(&spec["template"]["spec"]["containers"]);
    let join = |field: &str| {
        containers
            .iter()
            .map(|c| text(&c[field]))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut cells = vec![json!(join("name")), json!(join("image"))];
    if with_selector {
        cells.push(json!(or_none(&label_selector(&spec["selector"]))));
    }
    cells
}

/// A LabelSelector as `labels.Selector.String()` writes it: requirements sorted by key.
fn label_selector(selector: &Value) -> String {
    let mut requirements: Vec<(String, String)> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| (key.clone(), format!("{key}={}", text(value))))
        .collect();
    for expression in array(&selector["matchExpressions"]) {
        let key = text(&expression["key"]);
        let mut values: Vec<&str> = array(&expression["values"]).iter().map(text).collect();
        values.sort_unstable();
        let requirement = match text(&expression["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        };
        requirements.push((key.to_string(), requirement));
    }
    requirements.sort();
    requirements
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(",")
}

/// A pod's row, with the kubelet's and printer's reason for STATUS: the phase, or the pod's
/// reason, replaced by the first unfinished init container's state (`Init:0/1`,
/// `Init:CrashLoopBackOff`), then by the last waiting or terminated container's reason
/// (`CrashLoopBackOff`, `ErrImagePull`, `Completed`, `ExitCode:1`), then `Terminating` while
/// a deletion is pending.
fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let init_specs = array(&spec["initContainers"]);
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| c["name"] == name && c["restartPolicy"] == "Always")
    };
    let total = array(&spec["containers"]).len()
        + init_specs
            .iter()
            .filter(|c| c["restartPolicy"] == "Always")
            .count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut note_restart = |container: &Value| {
        if let Some(at) = parse_time(&container["lastState"]["terminated"]["finishedAt"]) {
            last_restart = Some(last_restart.map_or(at, |last| last.max(at)));
        }
    };
    let mut reason = match text(&status["reason"]) {
        "" => text(&status["phase"]).to_string(),
        reason => reason.to_string(),
    };
    if array(&status["conditions"])
        .iter()
        .any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let init_statuses = array(&status["initContainerStatuses"]);
    let mut initializing = false;
    for (index, container) in init_statuses.iter().enumerate() {
        let count = int(&container["restartCount"]);
        restarts += count;
        note_restart(container);
        let sidecar = is_sidecar(text(&container["name"]));
        if sidecar {
            sidecar_restarts += count;
            if container["started"] == true && container["ready"] == true {
                ready += 1;
            }
        }
        let state = &container["state"];
        let terminated = &state["terminated"];
        let waiting_reason = text(&state["waiting"]["reason"]);
        if terminated.is_object() && int(&terminated["exitCode"]) == 0 {
            continue;
        }
        if sidecar && container["started"] == true {
            continue;
        }
        reason = if terminated.is_object() {
            match (text(&terminated["reason"]), int(&terminated["signal"])) {
                ("", 0) => format!("Init:ExitCode:{}", int(&terminated["exitCode"])),
                ("", signal) => format!("Init:Signal:{signal}"),
                (why, _) => format!("Init:{why}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{index}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }
    let initialized = array(&status["conditions"])
        .iter()
        .any(|c| c["type"] == "Initialized" && c["status"] == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        let mut running = false;
        for container in array(&status["containerStatuses"]).iter().rev() {
            restarts += int(&container["restartCount"]);
            note_restart(container);
            let state = &container["state"];
            let waiting = text(&state["waiting"]["reason"]);
            let terminated = &state["terminated"];
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if terminated.is_object() {
                reason = match (text(&terminated["reason"]), int(&terminated["signal"])) {
                    ("", 0) => format!("ExitCode:{}", int(&terminated["exitCode"])),
                    ("", signal) => format!("Signal:{signal}"),
                    (why, _) => why.to_string(),
                };
            } else if container["ready"] == true && state["running"].is_object() {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            let pod_ready = array(&status["conditions"])
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
    let phase = text(&status["phase"]);
    if deleting && text(&status["reason"]) == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    let restarts = match last_restart {
        Some(at) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - at)),
        _ => restarts.to_string(),
    };
    let ip = array(&status["podIPs"])
        .first()
        .map_or_else(|| text(&status["podIP"]), |ip| text(&ip["ip"]));
    let gates = array(&spec["readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = array(&status["conditions"]);
        let passing = gates
            .iter()
            .filter(|gate| {
                conditions
                    .iter()
                    .find(|c| c["type"] == gate["conditionType"])
                    .is_some_and(|c| c["status"] == "True")
            })
            .count();
        format!("{passing}/{}", gates.len())
    };
    vec![
        json!(pod["metadata"]["name"]),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(timestamp_age(&pod["metadata"]["creationTimestamp"], now)),
        json!(or_none(ip)),
        json!(or_none(text(&spec["nodeName"]))),
        json!(or_none(text(&status["nominatedNodeName"]))),
        json!(readiness_gates),
    ]
}

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let status = &node["status"];
    let mut states: Vec<String> = array(&status["conditions"])
        .iter()
        .filter(|c| c["type"] == "Ready")
        .take(1)
        .map(|c| {
            if c["status"] == "True" {
                "Ready".to_string()
            } else {
                "NotReady".to_string()
            }
        })
        .collect();
    if states.is_empty() {
        states.push("Unknown".into());
    }
    if node["spec"]["unschedulable"] == true {
        states.push("SchedulingDisabled".into());
    }
    let mut roles = BTreeSet::new();
    for (key, value) in node["metadata"]["labels"].as_object().into_iter().flatten() {
        if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if key == "kubernetes.io/role" && !text(value).is_empty() {
            roles.insert(text(value).to_string());
        }
    }
    let roles = roles.into_iter().collect::<Vec<_>>().join(",");
    let address = |kind: &str| {
        array(&status["addresses"])
            .iter()
            .find(|a| a["type"] == kind)
            .map_or_else(|| "<none>".to_string(), |a| text(&a["address"]).to_string())
    };
    let info = &status["nodeInfo"];
    let known = |field: &str| match text(&info[field]) {
        "" => "<unknown>".to_string(),
        value => value.to_string(),
    };
    vec![
        json!(node["metadata"]["name"]),
        json!(states.join(",")),
        json!(or_none(&roles)),
        json!(timestamp_age(&node["metadata"]["creationTimestamp"], now)),
        json!(text(&info["kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(known("osImage")),
        json!(known("kernelVersion")),
        json!(known("containerRuntimeVersion")),
    ]
}

fn service_cells(service: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (name, age) = name_and_age(service, now);
    let spec = &service["spec"];
    let kind = text(&spec["type"]);
    let cluster_ip = array(&spec["clusterIPs"])
        .first()
        .map(text)
        .unwrap_or_else(|| text(&spec["clusterIP"]));
    let external_ips: Vec<&str> = array(&spec["externalIPs"]).iter().map(text).collect();
    let external = match kind {
        "ClusterIP" | "NodePort" => or_none(&external_ips.join(",")),
        "LoadBalancer" => {
            let mut ips: Vec<&str> = array(&service["status"]["loadBalancer"]["ingress"])
                .iter()
                .map(|i| match text(&i["ip"]) {
                    "" => text(&i["hostname"]),
                    ip => ip,
                })
                .filter(|ip| !ip.is_empty())
                .collect();
            ips.extend(&external_ips);
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        "ExternalName" => text(&spec["externalName"]).to_string(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = array(&spec["ports"])
        .iter()
        .map(|p| {
            let protocol = match text(&p["protocol"]) {
                "" => "TCP",
                protocol => protocol,
            };
            match int(&p["nodePort"]) {
                0 => format!("{}/{protocol}", int(&p["port"])),
                node_port => format!("{}:{node_port}/{protocol}", int(&p["port"])),
            }
        })
        .collect();
    let mut selector: Vec<String> = spec["selector"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    selector.sort();
    vec![
        name,
        json!(kind),
        json!(or_none(cluster_ip)),
        json!(external),
        json!(or_none(&ports.join(","))),
        age,
        json!(or_none(&selector.join(","))),
    ]
}

fn event_cells(event: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let first = if event["firstTimestamp"].is_null() {
        timestamp_age(&event["eventTime"], now)
    } else {
        timestamp_age(&event["firstTimestamp"], now)
    };
    let (last, count) = if event["series"].is_object() {
        (
            timestamp_age(&event["series"]["lastObservedTime"], now),
            int(&event["series"]["count"]),
        )
    } else {
        let last = if event["lastTimestamp"].is_null() {
            first.clone()
        } else {
            timestamp_age(&event["lastTimestamp"], now)
        };
        (last, int(&event["count"]).max(1))
    };
    let involved = &event["involvedObject"];
    let kind = text(&involved["kind"]).to_ascii_lowercase();
    let object = match text(&involved["name"]) {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let source = match (
        text(&event["source"]["component"]),
        text(&event["source"]["host"]),
    ) {
        ("", _) => match (
            text(&event["reportingComponent"]),
            text(&event["reportingInstance"]),
        ) {
            (component, "") => component.to_string(),
            (component, instance) => format!("{component}, {instance}"),
        },
        (component, "") => component.to_string(),
        (component, host) => format!("{component}, {host}"),
    };
    vec![
        json!(last),
        json!(text(&event["type"])),
        json!(text(&event["reason"])),
        json!(object),
        json!(text(&involved["fieldPath"])),
        json!(source),
        json!(text(&event["message"]).trim()),
        json!(first),
        json!(count.to_string()),
        json!(event["metadata"]["name"]),
    ]
}

/// TARGETS of an autoscaling/v2 HPA: `cpu: 40%/80%`, `<unknown>/500m`, at most three.
fn hpa_targets(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".into();
    }
    let quantity = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let listed: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let current = statuses.get(i).unwrap_or(&Value::Null);
            let kind = text(&spec["type"]);
            let source = match kind {
                "Resource" => "resource",
                "ContainerResource" => "containerResource",
                "Pods" => "pods",
                "Object" => "object",
                "External" => "external",
                _ => return "<unknown type>".to_string(),
            };
            let target = &spec[source]["target"];
            let observed = &current[source]["current"];
            let (now_value, target_value) = if target["averageUtilization"].is_number()
                || (target["averageValue"].is_null() && target["value"].is_null())
            {
                let now_value = observed["averageUtilization"]
                    .as_i64()
                    .map_or_else(|| "<unknown>".into(), |u| format!("{u}%"));
                let target_value = target["averageUtilization"]
                    .as_i64()
                    .map_or_else(|| "<auto>".into(), |u| format!("{u}%"));
                (now_value, target_value)
            } else {
                let field = if target["averageValue"].is_null() {
                    "value"
                } else {
                    "averageValue"
                };
                let now_value = match quantity(&observed[field]) {
                    v if v.is_empty() => "<unknown>".into(),
                    v => v,
                };
                (now_value, quantity(&target[field]))
            };
            match kind {
                "Resource" | "ContainerResource" => format!(
                    "{}: {now_value}/{target_value}",
                    text(&spec[source]["name"])
                ),
                _ => format!("{now_value}/{target_value}"),
            }
        })
        .collect();
    if listed.len() > 3 {
        format!("{} + {} more...", listed[..3].join(", "), listed.len() - 3)
    } else {
        listed.join(", ")
    }
}

/// Custom resources: NAME, the CRD's printer columns, and AGE unless the CRD has one.
fn custom_resource_table(
    rt: &ResourceType,
    items: &[Value],
    now: DateTime<Utc>,
) -> (Vec<Value>, Vec<Vec<Value>>) {
    let printer = &rt.printer_columns;
    let has_age = printer.iter().any(|c| c["name"] == "Age");
    let mut columns =
        vec![json!({"name": "Name", "type": "string", "format": "name", "description": "Name"})];
    for column in printer {
        columns.push(json!({"name": column["name"], "type": column["type"], "format": "", "description": column["description"].as_str().unwrap_or_default(), "priority": column["priority"].as_i64().unwrap_or(0)}));
    }
    if !has_age {
        columns.push(json!({"name": "Age", "type": "date", "format": "", "description": "Age"}));
    }
    let cells = items
        .iter()
        .map(|item| {
            let mut cells = vec![item["metadata"]["name"].clone()];
            for column in printer {
                let value = json_path(item, text(&column["jsonPath"]));
                cells.push(if column["type"] == "date" {
                    json!(timestamp_age(value, now))
                } else {
                    value.clone()
                });
            }
            if !has_age {
                cells.push(json!(timestamp_age(
                    &item["metadata"]["creationTimestamp"],
                    now
                )));
            }
            cells
        })
        .collect();
    (columns, cells)
}

/// Evaluates the simple JSONPaths printer columns use (`.a.b.c`).
fn json_path<'a>(object: &'a Value, path: &str) -> &'a Value {
    path.trim_start_matches('.')
        .split('.')
        .fold(object, |v, segment| &v[segment])
}

fn parse_time(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The age of a timestamp as the printers write it, `<unknown>` when there is none.
fn timestamp_age(value: &Value, now: DateTime<Utc>) -> String {
    parse_time(value).map_or_else(|| "<unknown>".into(), |at| human_duration(now - at))
}

/// apimachinery's `duration.HumanDuration`: two units while they say something (`5m30s`,
/// `3h20m`, `2d5h`, `3y10d`), one beyond that.
pub fn human_duration(elapsed: chrono::TimeDelta) -> String {
    let seconds = elapsed.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(now: DateTime<Utc>, seconds_ago: i64) -> String {
        (now - TimeDelta::seconds(seconds_ago)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    #[test]
    fn human_durations_match_apimachinery() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (9 * 3600, "9h"),
            (2 * 86_400 + 5 * 3600, "2d5h"),
            (10 * 86_400, "10d"),
            (3 * 365 * 86_400 + 10 * 86_400, "3y10d"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(human_duration(TimeDelta::seconds(seconds)), expected);
        }
    }

    #[test]
    fn pod_status_follows_the_printer_reasons() {
        let now = Utc::now();
        let pod = |status: Value, extra: Value| {
            let mut pod = json!({"metadata": {"name": "p", "creationTimestamp": at(now, 30)},
                "spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "status": status});
            if let Value::Object(extra) = extra {
                for (k, v) in extra {
                    pod["metadata"][k] = v;
                }
            }
            pod_cells(&pod, now)
        };
        let crashing = pod(
            json!({"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": at(now, 90)}}}]}),
            json!({}),
        );
        assert_eq!(crashing[1], "1/2");
        assert_eq!(crashing[2], "CrashLoopBackOff");
        assert_eq!(crashing[3], "4 (90s ago)");
        let terminating = pod(
            json!({"phase": "Running"}),
            json!({"deletionTimestamp": at(now, 0)}),
        );
        assert_eq!(terminating[2], "Terminating");
        assert_eq!(terminating[1], "0/2");
        let failed = pod(
            json!({"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": false, "state": {"terminated": {"exitCode": 2}}}]}),
            json!({}),
        );
        assert_eq!(failed[2], "ExitCode:2");
        let init = json!({"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        assert_eq!(pod_cells(&init, now)[2], "Init:0/1");
        assert_eq!(pod_cells(&init, now)[5], "<none>");
    }

    #[test]
    fn node_status_roles_and_addresses() {
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "edge"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}], "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
        let cells = node_cells(&node, Utc::now());
        assert_eq!(cells[1], "NotReady,SchedulingDisabled");
        assert_eq!(cells[2], "control-plane,edge");
        assert_eq!(cells[4], "v1.33.0");
        assert_eq!(cells[5], "10.0.0.1");
        assert_eq!(cells[6], "<none>");
        assert_eq!(cells[7], "<unknown>");
    }

    #[test]
    fn selectors_and_hpa_targets_read_as_kubectl_prints_them() {
        let selector = json!({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [{"key": "t", "operator": "In", "values": ["y", "x"]}]});
        assert_eq!(label_selector(&selector), "a=1,b=2,t in (x,y)");
        let specs = [
            json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}),
            json!({"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}),
        ];
        let statuses =
            [json!({"type": "Resource", "resource": {"current": {"averageUtilization": 40}}})];
        assert_eq!(hpa_targets(&specs, &statuses), "cpu: 40%/80%, <unknown>/10");
        assert_eq!(hpa_targets(&[], &[]), "<none>");
    }
}
