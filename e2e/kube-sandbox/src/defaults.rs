//! The API server's defaulting of built-in kinds (upstream `pkg/apis/*/v1/defaults.go`), for
//! the fields kubectl and vk-eci read: what a pod looks like once a cluster has accepted it.
//! One function per kind, each a kind's `strategy::Strategy::defaults`: applied on every write
//! of the main resource, so each is idempotent.

use serde_json::{Value, json};

/// Sets `field` to `value` unless the object already has it.
fn default(object: &mut Value, field: &str, value: Value) {
    if object.is_object() && object[field].is_null() {
        object[field] = value;
    }
}

/// Runs `apply` on every item of the array at `field`, if there is one. (Indexing a
/// `serde_json::Value` mutably would insert a null for a missing field.)
fn each(object: &mut Value, field: &str, mut apply: impl FnMut(&mut Value)) {
    if let Some(items) = object.get_mut(field).and_then(Value::as_array_mut) {
        items.iter_mut().for_each(&mut apply);
    }
}

/// Runs `apply` on the object at `field`, if there is one.
fn within(object: &mut Value, field: &str, apply: impl FnOnce(&mut Value)) {
    if let Some(inner) = object.get_mut(field).filter(|v| v.is_object()) {
        apply(inner);
    }
}

pub fn pod(object: &mut Value) {
    within(object, "spec", pod_spec);
}

/// The API server labels every namespace with its name, for namespaceSelectors.
pub fn namespace(object: &mut Value) {
    let name = object["metadata"]["name"].clone();
    within(object, "metadata", |meta| {
        default(meta, "labels", json!({}));
        within(meta, "labels", |labels| {
            labels["kubernetes.io/metadata.name"] = name;
        });
    });
}

pub fn secret(object: &mut Value) {
    default(object, "type", json!("Opaque"));
}

pub fn service(object: &mut Value) {
    within(object, "spec", service_spec);
}

pub fn deployment(object: &mut Value) {
    within(object, "spec", |spec| {
        default(spec, "replicas", json!(1));
        default(spec, "revisionHistoryLimit", json!(10));
        default(spec, "progressDeadlineSeconds", json!(600));
        default(spec, "strategy", json!({}));
        within(spec, "strategy", |strategy| {
            default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                default(strategy, "rollingUpdate", json!({}));
                within(strategy, "rollingUpdate", |rolling| {
                    default(rolling, "maxUnavailable", json!("25%"));
                    default(rolling, "maxSurge", json!("25%"));
                });
            }
        });
        template(spec);
    });
}

pub fn replica_set(object: &mut Value) {
    within(object, "spec", |spec| {
        default(spec, "replicas", json!(1));
        template(spec);
    });
}

pub fn stateful_set(object: &mut Value) {
    within(object, "spec", |spec| {
        default(spec, "replicas", json!(1));
        default(spec, "podManagementPolicy", json!("OrderedReady"));
        default(spec, "revisionHistoryLimit", json!(10));
        default(
            spec,
            "updateStrategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
        );
        default(
            spec,
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
        template(spec);
    });
}

pub fn horizontal_pod_autoscaler(object: &mut Value) {
    within(object, "spec", |spec| {
        default(spec, "minReplicas", json!(1));
        if spec["metrics"].as_array().is_none_or(Vec::is_empty) {
            spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]);
        }
    });
}

fn template(spec: &mut Value) {
    within(spec, "template", |template| {
        within(template, "spec", pod_spec)
    });
}

fn pod_spec(spec: &mut Value) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "securityContext", json!({}));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "enableServiceLinks", json!(true));
    each(spec, "containers", container);
    each(spec, "initContainers", container);
    each(spec, "volumes", volume);
}

fn container(container: &mut Value) {
    default(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    default(container, "terminationMessagePolicy", json!("File"));
    let pull = image_pull_policy(container["image"].as_str().unwrap_or_default());
    default(container, "imagePullPolicy", json!(pull));
    default(container, "resources", json!({}));
    within(container, "resources", |resources| {
        // A resource with a limit and no request is requested at its limit.
        if let Some(limits) = resources["limits"].as_object().cloned() {
            default(resources, "requests", json!({}));
            within(resources, "requests", |requests| {
                for (resource, limit) in limits {
                    default(requests, &resource, limit);
                }
            });
        }
    });
    each(container, "ports", |port| {
        default(port, "protocol", json!("TCP"))
    });
    each(container, "env", |env| {
        within(env, "valueFrom", |from| {
            within(from, "fieldRef", |field| {
                default(field, "apiVersion", json!("v1"))
            });
        });
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        within(container, probe, |probe| {
            default(probe, "timeoutSeconds", json!(1));
            default(probe, "periodSeconds", json!(10));
            default(probe, "successThreshold", json!(1));
            default(probe, "failureThreshold", json!(3));
            within(probe, "httpGet", |get| {
                default(get, "path", json!("/"));
                default(get, "scheme", json!("HTTP"));
            });
        });
    }
}

/// `Always` for `:latest` or no tag, `IfNotPresent` for any other tag or a digest.
fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    match last_segment.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn volume(volume: &mut Value) {
    let Some(fields) = volume.as_object() else {
        return;
    };
    // A volume that names no source is an emptyDir.
    if fields.len() == 1 && fields.contains_key("name") {
        volume["emptyDir"] = json!({});
    }
    for source in ["configMap", "secret", "downwardAPI", "projected"] {
        within(volume, source, |source| {
            default(source, "defaultMode", json!(420))
        });
    }
    within(volume, "hostPath", |host_path| {
        default(host_path, "type", json!(""))
    });
    within(volume, "projected", |projected| {
        each(projected, "sources", |projection| {
            within(projection, "serviceAccountToken", |token| {
                default(token, "expirationSeconds", json!(3600));
            });
        });
    });
}

fn service_spec(spec: &mut Value) {
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    let kind = spec["type"].as_str().unwrap_or_default().to_string();
    if kind != "ExternalName" {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    each(spec, "ports", |port| {
        default(port, "protocol", json!("TCP"));
        let number = port["port"].clone();
        default(port, "targetPort", number);
    });
}

/// A pod's QoS class, which the API server records in its status on creation.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|field| spec[*field].as_array())
        .flatten()
        .collect();
    let resources = |c: &Value, kind: &str, resource: &str| {
        c["resources"][kind][resource].as_str().map(str::to_string)
    };
    let any = containers.iter().any(|c| {
        ["cpu", "memory"]
            .iter()
            .any(|r| resources(c, "requests", r).is_some() || resources(c, "limits", r).is_some())
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = resources(c, "limits", r);
            limit.is_some() && resources(c, "requests", r).is_none_or(|req| Some(req) == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_the_api_servers_defaults_once() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
             "readinessProbe": {"httpGet": {"port": 80}}, "resources": {"limits": {"cpu": "1"}}},
            {"name": "b", "image": "registry:5000/app:1.2", "imagePullPolicy": "Never"},
            {"name": "c", "image": "app@sha256:abc"},
            {"name": "d", "image": "app:latest"}],
            "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "cfg"}}]}});
        super::pod(&mut pod);
        let once = pod.clone();
        super::pod(&mut pod);
        assert_eq!(pod, once, "defaulting is idempotent");
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        let a = &spec["containers"][0];
        assert_eq!(a["imagePullPolicy"], "Always");
        assert_eq!(a["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(a["terminationMessagePolicy"], "File");
        assert_eq!(a["ports"][0]["protocol"], "TCP");
        assert_eq!(a["resources"]["requests"]["cpu"], "1");
        assert_eq!(
            a["readinessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        let pulls: Vec<&Value> = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["imagePullPolicy"])
            .collect();
        assert_eq!(pulls, ["Always", "Never", "IfNotPresent", "Always"]);
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        assert_eq!(qos_class(spec), "Burstable");
    }

    #[test]
    fn deployments_roll_by_a_quarter_and_templates_are_defaulted() {
        let mut deployment = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:1"}]}}}});
        super::deployment(&mut deployment);
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}}});
        super::deployment(&mut recreate);
        assert!(recreate["spec"]["strategy"]["rollingUpdate"].is_null());
    }

    #[test]
    fn services_and_secrets() {
        let mut service = json!({"spec": {"ports": [{"port": 80}]}});
        super::service(&mut service);
        assert_eq!(service["spec"]["type"], "ClusterIP");
        assert_eq!(service["spec"]["sessionAffinity"], "None");
        assert_eq!(
            service["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        let mut secret = json!({"data": {}});
        super::secret(&mut secret);
        assert_eq!(secret["type"], "Opaque");
    }

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "a"}]})),
            "BestEffort"
        );
        assert_eq!(
            qos_class(
                &json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]})
            ),
            "Guaranteed"
        );
    }
}
