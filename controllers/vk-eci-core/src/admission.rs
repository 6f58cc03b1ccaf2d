//! The ECI admission webhook's decision: which pods created in the cluster go to ECI, and the
//! JSON patch (RFC 6902) that sends them there.
//!
//! The ways in follow the reference virtual node, first match wins: the pod's own label
//! `alibabacloud.com/eci=true` (legacy `eci=true`) or burst annotation
//! `alibabacloud.com/burst-resource` (`eci_only`: ECI always; `eci`: ECI only when no normal
//! node fits), then the namespace label `alibabacloud.com/eci=true` (legacy
//! `virtual-node-affinity-injection=enabled`), then the `eci-profile` selectors in order.
//! What the pod says about itself comes first, so a burst pod in an ECI namespace still
//! prefers normal nodes.
//!
//! A pod sent to ECI tolerates the virtual node's taint and gets a nodeSelector that only the
//! virtual node satisfies; a burst pod tolerates the taint and *prefers* (weight 100) nodes
//! that are not virtual, so the scheduler's own filter-then-score uses ECI only when every
//! normal node is filtered out. The patch only adds: the pod's own labels, annotations,
//! tolerations and selectors stay, so a second call on the patched pod (reinvocation) adds
//! nothing more.
//!
//! A pod that asks for ECI but cannot run there (hostNetwork, hostPath, privileged, a
//! DaemonSet's) is admitted unchanged with a warning naming the reason; so is one whose
//! nodeSelector pins it to other nodes. A pod bound by `nodeName` is left as it is.

use std::collections::BTreeMap;
use std::fmt;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
    PreferredSchedulingTerm, Toleration,
};
use serde_json::Value;

use crate::node::node_metadata;
use crate::profile::{Effect, Profile};
use crate::settings::{NodeTaint, Settings};

pub const ECI_LABEL: &str = "alibabacloud.com/eci";
pub const LEGACY_ECI_LABEL: &str = "eci";
pub const LEGACY_NAMESPACE_LABEL: &str = "virtual-node-affinity-injection";
pub const BURST_ANNOTATION: &str = "alibabacloud.com/burst-resource";
/// The label every virtual node carries, and the value that names it virtual.
pub const TYPE_LABEL: &str = "type";
pub const VIRTUAL_NODE_TYPE: &str = "virtual-kubelet";
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The weight of the burst preference: the most a preference can weigh.
pub const BURST_PREFERENCE_WEIGHT: i32 = 100;

/// The virtual node, as the webhook steers pods to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualNode {
    /// The Node's labels: a pod's own nodeSelector must be satisfied by them.
    pub labels: BTreeMap<String, String>,
    /// The taint pods must tolerate (none when the node is configured without one).
    pub taint: Option<NodeTaint>,
    /// The selector a pod sent to ECI gets: `type: virtual-kubelet`, plus this node's
    /// hostname when it has a name of its own (several virtual nodes in one cluster).
    pub selector: BTreeMap<String, String>,
}

impl VirtualNode {
    pub fn from_settings(settings: &Settings, version: &str) -> Self {
        let (metadata, _) = node_metadata(settings, version);
        let mut selector = BTreeMap::from([(TYPE_LABEL.into(), VIRTUAL_NODE_TYPE.into())]);
        if settings.node_name != VIRTUAL_NODE_TYPE {
            selector.insert(HOSTNAME_LABEL.into(), settings.node_name.clone());
        }
        Self {
            labels: metadata.labels.unwrap_or_default(),
            taint: settings.taint.clone(),
            selector,
        }
    }
}

/// Why a pod goes to ECI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `alibabacloud.com/eci=true` or `eci=true` on the pod.
    PodLabel,
    /// `alibabacloud.com/burst-resource: eci_only`.
    BurstOnly,
    /// `alibabacloud.com/burst-resource: eci`: ECI when no normal node fits.
    Burst,
    /// `alibabacloud.com/eci=true` or `virtual-node-affinity-injection=enabled` on the namespace.
    NamespaceLabel,
    /// The named `eci-profile` selector.
    Selector(String),
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::PodLabel => write!(f, "pod label {ECI_LABEL}=true"),
            Via::BurstOnly => write!(f, "{BURST_ANNOTATION}: eci_only"),
            Via::Burst => write!(f, "{BURST_ANNOTATION}: eci"),
            Via::NamespaceLabel => write!(f, "namespace label {ECI_LABEL}=true"),
            Via::Selector(name) => write!(f, "eci-profile selector {name:?}"),
        }
    }
}

/// What the webhook did with a pod (the metric's `decision` label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Sent to the virtual node.
    Eci(Via),
    /// Allowed on the virtual node, preferring the others.
    Burst,
    /// Not for ECI, or bound already.
    Unchanged,
    /// Asked for ECI but cannot go there: unchanged, with a warning.
    Warned(Via),
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Eci(_) => "eci",
            Decision::Burst => "burst",
            Decision::Unchanged => "unchanged",
            Decision::Warned(_) => "warned",
        }
    }
}

/// The webhook's answer for one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub decision: Decision,
    /// Only `add` operations; empty unless the decision is `Eci` or `Burst`.
    pub patch: Patch,
    /// Admission warnings, shown by kubectl as `Warning: ...`.
    pub warnings: Vec<String>,
}

impl Admission {
    fn unchanged(decision: Decision, warnings: Vec<String>) -> Self {
        Self {
            decision,
            patch: Patch(Vec::new()),
            warnings,
        }
    }
}

fn is_true(labels: &BTreeMap<String, String>, key: &str) -> bool {
    labels.get(key).is_some_and(|v| v == "true")
}

/// How the pod reaches ECI, if it does, and warnings about what it asked for.
fn route(
    pod: &Pod,
    namespace_labels: &BTreeMap<String, String>,
    profile: Option<&Profile>,
) -> (Option<Via>, Vec<String>) {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let mut warnings = Vec::new();
    if is_true(labels, ECI_LABEL) || is_true(labels, LEGACY_ECI_LABEL) {
        return (Some(Via::PodLabel), warnings);
    }
    match annotations.get(BURST_ANNOTATION).map(|v| v.trim()) {
        Some("eci_only") => return (Some(Via::BurstOnly), warnings),
        Some("eci") => return (Some(Via::Burst), warnings),
        Some(other) => warnings.push(format!(
            "{BURST_ANNOTATION}: {other:?} is neither \"eci\" nor \"eci_only\"; ignored"
        )),
        None => {}
    }
    if is_true(namespace_labels, ECI_LABEL)
        || namespace_labels
            .get(LEGACY_NAMESPACE_LABEL)
            .map(String::as_str)
            == Some("enabled")
    {
        return (Some(Via::NamespaceLabel), warnings);
    }
    let selector = profile.and_then(|p| p.scheduling_selector(labels, namespace_labels));
    (selector.map(|s| Via::Selector(s.name.clone())), warnings)
}

/// Why ECI cannot run this pod, if it cannot.
fn unsupported(pod: &Pod, spec: &PodSpec) -> Option<String> {
    if pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
    {
        return Some("it is a DaemonSet pod (ECI runs no DaemonSets)".into());
    }
    if spec.host_network == Some(true) {
        return Some("hostNetwork is not supported on ECI".into());
    }
    if let Some(volume) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.host_path.is_some())
    {
        return Some(format!(
            "hostPath volume {:?} is not supported on ECI (use emptyDir, disks or NAS)",
            volume.name
        ));
    }
    let privileged = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        });
    if let Some(container) = privileged {
        return Some(format!(
            "container {:?} is privileged, which ECI does not allow (use capabilities in securityContext)",
            container.name
        ));
    }
    None
}

/// The first entry of the pod's nodeSelector the virtual node does not satisfy.
fn pinned_elsewhere<'a>(spec: &'a PodSpec, node: &VirtualNode) -> Option<(&'a String, &'a String)> {
    spec.node_selector
        .iter()
        .flatten()
        .find(|(k, v)| node.labels.get(*k) != Some(*v))
}

/// The pod's answer from the webhook.
pub fn admit(
    pod: &Pod,
    namespace_labels: &BTreeMap<String, String>,
    profile: Option<&Profile>,
    node: &VirtualNode,
) -> Admission {
    let Some(spec) = pod.spec.as_ref() else {
        return Admission::unchanged(Decision::Unchanged, Vec::new());
    };
    let (via, mut warnings) = route(pod, namespace_labels, profile);
    let Some(via) = via else {
        return Admission::unchanged(Decision::Unchanged, warnings);
    };
    if spec.node_name.as_deref().is_some_and(|n| !n.is_empty()) {
        return Admission::unchanged(Decision::Unchanged, warnings);
    }
    if let Some(reason) = unsupported(pod, spec) {
        warnings.push(format!(
            "vk-eci: the pod asks for ECI ({via}) but {reason}; admitted unchanged"
        ));
        return Admission::unchanged(Decision::Warned(via), warnings);
    }
    if let Some((key, value)) = pinned_elsewhere(spec, node) {
        warnings.push(format!(
            "vk-eci: the pod asks for ECI ({via}) but its nodeSelector {key}={value} does not match the virtual node; admitted unchanged"
        ));
        return Admission::unchanged(Decision::Warned(via), warnings);
    }

    let mut patch = Vec::new();
    if let Some(taint) = &node.taint {
        add_toleration(&mut patch, spec, taint);
    }
    let decision = if via == Via::Burst {
        add_burst_preference(&mut patch, spec);
        Decision::Burst
    } else {
        add_entries(
            &mut patch,
            &["spec", "nodeSelector"],
            spec.node_selector.as_ref(),
            &node.selector,
        );
        Decision::Eci(via)
    };
    if let Some(profile) = profile {
        let empty = BTreeMap::new();
        let Effect {
            annotations,
            labels,
        } = profile.additions(
            pod.metadata.annotations.as_ref().unwrap_or(&empty),
            pod.metadata.labels.as_ref().unwrap_or(&empty),
            namespace_labels,
        );
        add_entries(
            &mut patch,
            &["metadata", "annotations"],
            pod.metadata.annotations.as_ref(),
            &annotations,
        );
        add_entries(
            &mut patch,
            &["metadata", "labels"],
            pod.metadata.labels.as_ref(),
            &labels,
        );
    }
    Admission {
        decision,
        patch: Patch(patch),
        warnings,
    }
}

fn add(patch: &mut Vec<PatchOperation>, path: &[&str], value: Value) {
    patch.push(PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    }));
}

/// Adds the `wanted` entries the map at `path` lacks (creating the map if absent).
fn add_entries(
    patch: &mut Vec<PatchOperation>,
    path: &[&str],
    existing: Option<&BTreeMap<String, String>>,
    wanted: &BTreeMap<String, String>,
) {
    let missing: serde_json::Map<String, Value> = wanted
        .iter()
        .filter(|(k, _)| existing.is_none_or(|e| !e.contains_key(*k)))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if missing.is_empty() {
        return;
    }
    if existing.is_none() {
        add(patch, path, Value::Object(missing));
        return;
    }
    for (key, value) in missing {
        let mut entry = path.to_vec();
        entry.push(&key);
        add(patch, &entry, value);
    }
}

/// Whether `toleration` tolerates `taint` (the scheduler's rule).
fn tolerates(toleration: &Toleration, taint: &NodeTaint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = toleration.key.as_deref().unwrap_or("");
    match toleration.operator.as_deref() {
        Some("Exists") => effect_ok && (key.is_empty() || key == taint.key),
        _ => {
            effect_ok
                && key == taint.key
                && toleration.value.as_deref().unwrap_or("") == taint.value
        }
    }
}

fn add_toleration(patch: &mut Vec<PatchOperation>, spec: &PodSpec, taint: &NodeTaint) {
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if tolerations.iter().any(|t| tolerates(t, taint)) {
        return;
    }
    let toleration = Toleration {
        key: Some(taint.key.clone()),
        operator: Some("Equal".into()),
        value: Some(taint.value.clone()),
        effect: Some(taint.effect.clone()),
        toleration_seconds: None,
    };
    let value = json_of(toleration);
    if spec.tolerations.is_none() {
        add(patch, &["spec", "tolerations"], Value::Array(vec![value]));
    } else {
        add(patch, &["spec", "tolerations", "-"], value);
    }
}

fn burst_preference() -> PreferredSchedulingTerm {
    PreferredSchedulingTerm {
        weight: BURST_PREFERENCE_WEIGHT,
        preference: NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: TYPE_LABEL.into(),
                operator: "NotIn".into(),
                values: Some(vec![VIRTUAL_NODE_TYPE.into()]),
            }]),
            match_fields: None,
        },
    }
}

/// Appends the preference for non-virtual nodes, creating what of the affinity is absent.
fn add_burst_preference(patch: &mut Vec<PatchOperation>, spec: &PodSpec) {
    let preference = burst_preference();
    let node_affinity = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref());
    let preferred = node_affinity.and_then(|n| {
        n.preferred_during_scheduling_ignored_during_execution
            .as_ref()
    });
    if preferred.is_some_and(|p| p.contains(&preference)) {
        return;
    }
    let only_preference = NodeAffinity {
        preferred_during_scheduling_ignored_during_execution: Some(vec![preference.clone()]),
        required_during_scheduling_ignored_during_execution: None,
    };
    let (depth, value) = match (spec.affinity.as_ref(), node_affinity, preferred) {
        (None, _, _) => (
            2,
            json_of(Affinity {
                node_affinity: Some(only_preference),
                ..Affinity::default()
            }),
        ),
        (Some(_), None, _) => (3, json_of(only_preference)),
        (Some(_), Some(_), None) => (4, json_of(vec![preference])),
        (Some(_), Some(_), Some(_)) => (5, json_of(preference)),
    };
    let path = [
        "spec",
        "affinity",
        "nodeAffinity",
        "preferredDuringSchedulingIgnoredDuringExecution",
        "-",
    ];
    add(patch, &path[..depth], value);
}

/// Kubernetes API types always serialise.
fn json_of(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::settings::RawSettings;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn raw_settings() -> RawSettings {
        RawSettings {
            cluster_id: Some("c-1".into()),
            region: Some("cn-beijing".into()),
            vswitches: Some("vsw-a".into()),
            simulator: true,
            ..RawSettings::default()
        }
    }

    fn node() -> VirtualNode {
        VirtualNode::from_settings(&raw_settings().validate().unwrap(), "test")
    }

    fn pod(value: Value) -> Pod {
        let mut base = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}
        });
        merge(&mut base, value);
        serde_json::from_value(base).unwrap()
    }

    fn merge(base: &mut Value, patch: Value) {
        match (base, patch) {
            (Value::Object(base), Value::Object(patch)) => {
                for (k, v) in patch {
                    merge(base.entry(k).or_insert(Value::Null), v);
                }
            }
            (base, patch) => *base = patch,
        }
    }

    fn profile(selectors: Value) -> Profile {
        Profile::parse(&map(&[("selectors", &selectors.to_string())])).unwrap()
    }

    /// The pod as the API server stores it after the patch.
    fn patched(pod: &Pod, admission: &Admission) -> Pod {
        let mut value = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut value, &admission.patch).unwrap();
        serde_json::from_value(value).unwrap()
    }

    fn admit_plain(pod: &Pod, namespace: &BTreeMap<String, String>) -> Admission {
        admit(pod, namespace, None, &node())
    }

    fn assert_sent_to_eci(pod: &Pod) {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.node_selector
                .as_ref()
                .unwrap()
                .get("type")
                .map(String::as_str),
            Some("virtual-kubelet")
        );
        let tolerations = spec.tolerations.as_ref().unwrap();
        assert!(
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("virtual-kubelet.io/provider")
                    && t.value.as_deref() == Some("alibabacloud")
                    && t.effect.as_deref() == Some("NoSchedule"))
        );
    }

    #[test]
    fn every_way_in_sends_the_pod_to_the_virtual_node() {
        let none = map(&[]);
        let cases = [
            (
                pod(json!({"metadata": {"labels": {"alibabacloud.com/eci": "true"}}})),
                none.clone(),
                Via::PodLabel,
            ),
            (
                pod(json!({"metadata": {"labels": {"eci": "true"}}})),
                none.clone(),
                Via::PodLabel,
            ),
            (
                pod(json!({"metadata": {"annotations": {BURST_ANNOTATION: "eci_only"}}})),
                none.clone(),
                Via::BurstOnly,
            ),
            (
                pod(json!({})),
                map(&[("alibabacloud.com/eci", "true")]),
                Via::NamespaceLabel,
            ),
            (
                pod(json!({})),
                map(&[("virtual-node-affinity-injection", "enabled")]),
                Via::NamespaceLabel,
            ),
        ];
        for (pod, namespace, via) in cases {
            let admission = admit_plain(&pod, &namespace);
            assert_eq!(admission.decision, Decision::Eci(via), "{pod:?}");
            assert!(admission.warnings.is_empty());
            assert_sent_to_eci(&patched(&pod, &admission));
        }
    }

    #[test]
    fn other_pods_are_left_alone() {
        for (pod, namespace) in [
            (pod(json!({})), map(&[])),
            (
                pod(
                    json!({"metadata": {"labels": {"alibabacloud.com/eci": "false", "eci": "yes"}}}),
                ),
                map(&[]),
            ),
            (
                pod(json!({})),
                map(&[
                    ("alibabacloud.com/eci", "false"),
                    ("virtual-node-affinity-injection", "true"),
                ]),
            ),
        ] {
            let admission = admit_plain(&pod, &namespace);
            assert_eq!(admission.decision, Decision::Unchanged);
            assert!(admission.patch.0.is_empty() && admission.warnings.is_empty());
        }
    }

    #[test]
    fn profile_selectors_and_namespace_and_object_selectors_are_anded() {
        let profile = profile(json!([
            {"name": "batch-in-prod",
             "namespaceSelector": {"matchLabels": {"env": "prod"}},
             "objectSelector": {"matchExpressions": [
                 {"key": "workload", "operator": "In", "values": ["batch", "etl"]},
                 {"key": "gpu", "operator": "DoesNotExist"}]}},
            {"name": "effects-only", "effect": {"labels": {"on-eci": "yes"}}}
        ]));
        let prod = map(&[("env", "prod")]);
        let batch = pod(json!({"metadata": {"labels": {"workload": "etl"}}}));
        let admission = admit(&batch, &prod, Some(&profile), &node());
        assert_eq!(
            admission.decision,
            Decision::Eci(Via::Selector("batch-in-prod".into()))
        );
        let after = patched(&batch, &admission);
        assert_sent_to_eci(&after);
        assert_eq!(
            after
                .metadata
                .labels
                .unwrap()
                .get("on-eci")
                .map(String::as_str),
            Some("yes")
        );

        for (pod, namespace) in [
            (batch.clone(), map(&[("env", "dev")])),
            (
                pod(json!({"metadata": {"labels": {"workload": "web"}}})),
                prod.clone(),
            ),
            (
                pod(json!({"metadata": {"labels": {"workload": "batch", "gpu": "1"}}})),
                prod.clone(),
            ),
            (pod(json!({})), prod.clone()),
        ] {
            let admission = admit(&pod, &namespace, Some(&profile), &node());
            assert_eq!(
                admission.decision,
                Decision::Unchanged,
                "{pod:?} in {namespace:?}"
            );
            assert!(
                admission.patch.0.is_empty(),
                "effects only on pods that go to ECI"
            );
        }
    }

    #[test]
    fn the_pod_itself_comes_before_its_namespace_and_the_namespace_before_the_profile() {
        let profile = profile(json!([{"name": "all", "namespaceSelector": {}}]));
        let eci_namespace = map(&[("alibabacloud.com/eci", "true")]);
        let burst = pod(json!({"metadata": {"annotations": {BURST_ANNOTATION: "eci"}}}));
        assert_eq!(
            admit(&burst, &eci_namespace, Some(&profile), &node()).decision,
            Decision::Burst
        );
        let labelled = pod(
            json!({"metadata": {"labels": {"eci": "true"}, "annotations": {BURST_ANNOTATION: "eci"}}}),
        );
        assert_eq!(
            admit(&labelled, &eci_namespace, Some(&profile), &node()).decision,
            Decision::Eci(Via::PodLabel)
        );
        assert_eq!(
            admit(&pod(json!({})), &eci_namespace, Some(&profile), &node()).decision,
            Decision::Eci(Via::NamespaceLabel)
        );
        assert_eq!(
            admit(&pod(json!({})), &map(&[]), Some(&profile), &node()).decision,
            Decision::Eci(Via::Selector("all".into()))
        );
    }

    #[test]
    fn effects_add_without_overwriting_pod_first_then_selectors_in_order() {
        let profile = profile(json!([
            {"name": "first", "objectSelector": {"matchLabels": {"app": "a"}},
             "effect": {"annotations": {"team": "first", "k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"},
                        "labels": {"tier": "first"}}},
            {"name": "second", "objectSelector": {"matchLabels": {"app": "a"}},
             "effect": {"annotations": {"team": "second", "cost/centre": "42"}, "labels": {"tier": "second", "extra": "x"}}}
        ]));
        let pod =
            pod(json!({"metadata": {"labels": {"app": "a"}, "annotations": {"team": "mine"}}}));
        let after = patched(&pod, &admit(&pod, &map(&[]), Some(&profile), &node()));
        assert_eq!(
            after.metadata.annotations.unwrap(),
            map(&[
                ("team", "mine"),
                ("k8s.aliyun.com/eci-spot-strategy", "SpotAsPriceGo"),
                ("cost/centre", "42")
            ])
        );
        assert_eq!(
            after.metadata.labels.unwrap(),
            map(&[("app", "a"), ("tier", "first"), ("extra", "x")])
        );
    }

    #[test]
    fn keys_with_slashes_and_tildes_are_escaped_in_the_patch() {
        let profile = profile(json!([
            {"name": "s", "objectSelector": {"matchLabels": {"app": "a"}},
             "effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "2-4Gi", "odd~key": "v"}}}
        ]));
        let pod = pod(json!({"metadata": {"labels": {"app": "a"}, "annotations": {"x": "y"}}}));
        let admission = admit(&pod, &map(&[]), Some(&profile), &node());
        let paths: Vec<String> = serde_json::to_value(&admission.patch)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["path"].as_str().unwrap().to_string())
            .collect();
        assert!(
            paths.contains(&"/metadata/annotations/k8s.aliyun.com~1eci-use-specs".to_string()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"/metadata/annotations/odd~0key".to_string()),
            "{paths:?}"
        );
        let annotations = patched(&pod, &admission).metadata.annotations.unwrap();
        assert_eq!(
            annotations
                .get("k8s.aliyun.com/eci-use-specs")
                .map(String::as_str),
            Some("2-4Gi")
        );
        assert_eq!(annotations.get("odd~key").map(String::as_str), Some("v"));
    }

    #[test]
    fn burst_tolerates_the_virtual_node_and_prefers_the_others() {
        let pod = pod(json!({"metadata": {"annotations": {BURST_ANNOTATION: "eci"}}}));
        let admission = admit_plain(&pod, &map(&[]));
        assert_eq!(admission.decision, Decision::Burst);
        let spec = patched(&pod, &admission).spec.unwrap();
        assert!(
            spec.node_selector.is_none(),
            "burst pods must stay free to use normal nodes"
        );
        assert_eq!(
            spec.tolerations.unwrap()[0].key.as_deref(),
            Some("virtual-kubelet.io/provider")
        );
        let preferred = spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(preferred, vec![burst_preference()]);
        assert_eq!(preferred[0].weight, 100);
        assert_eq!(
            serde_json::to_value(&preferred[0].preference).unwrap(),
            json!({"matchExpressions": [{"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}]})
        );

        let only = self::pod(json!({"metadata": {"annotations": {BURST_ANNOTATION: "eci_only"}}}));
        let spec = patched(&only, &admit_plain(&only, &map(&[]))).spec.unwrap();
        assert!(spec.affinity.is_none());
        assert_eq!(
            spec.node_selector.unwrap(),
            map(&[("type", "virtual-kubelet")])
        );
    }

    #[test]
    fn burst_keeps_the_pods_own_affinity_at_every_depth() {
        let term = json!({"weight": 5, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}});
        for affinity in [
            json!({"podAntiAffinity": {}}),
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}),
            json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [term]}}),
        ] {
            let pod = pod(
                json!({"metadata": {"annotations": {BURST_ANNOTATION: "eci"}}, "spec": {"affinity": affinity.clone()}}),
            );
            let after = patched(&pod, &admit_plain(&pod, &map(&[])));
            let after = serde_json::to_value(after.spec.unwrap().affinity.unwrap()).unwrap();
            for (key, value) in affinity.as_object().unwrap() {
                for (inner, v) in value.as_object().unwrap() {
                    if inner != "preferredDuringSchedulingIgnoredDuringExecution" {
                        assert_eq!(&after[key][inner], v, "{affinity}");
                    }
                }
            }
            let preferred =
                after["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
                    .as_array()
                    .unwrap();
            assert!(
                preferred.contains(&serde_json::to_value(burst_preference()).unwrap()),
                "{after}"
            );
            if affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
                .is_array()
            {
                assert_eq!(preferred[0], term, "the pod's own preference stays first");
            }
        }
    }

    #[test]
    fn a_second_call_on_the_patched_pod_adds_nothing() {
        let profile = profile(
            json!([{"name": "s", "objectSelector": {}, "effect": {"labels": {"l": "v"}, "annotations": {"a": "b"}}}]),
        );
        for pod in [
            pod(json!({"metadata": {"labels": {"eci": "true"}}})),
            pod(json!({"metadata": {"annotations": {BURST_ANNOTATION: "eci"}}})),
            pod(
                json!({"metadata": {"labels": {"x": "y"}, "annotations": {"z": "w"}},
                       "spec": {"tolerations": [{"key": "other", "operator": "Exists"}], "nodeSelector": {"kubernetes.io/os": "linux"}}}),
            ),
        ] {
            let first = admit(&pod, &map(&[]), Some(&profile), &node());
            assert!(!first.patch.0.is_empty());
            let once = patched(&pod, &first);
            let second = admit(&once, &map(&[]), Some(&profile), &node());
            assert_eq!(second.patch.0, Vec::new(), "{once:?}");
            assert_eq!(second.decision, first.decision);
        }
    }

    #[test]
    fn existing_tolerations_and_compatible_selectors_are_kept() {
        let pod = pod(json!({"metadata": {"labels": {"eci": "true"}},
            "spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                     "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}]}}));
        let after = patched(&pod, &admit_plain(&pod, &map(&[])));
        let spec = after.spec.unwrap();
        assert_eq!(
            spec.node_selector.unwrap(),
            map(&[("kubernetes.io/os", "linux"), ("type", "virtual-kubelet")])
        );
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 2);
        assert_eq!(
            spec.tolerations.unwrap()[0].key.as_deref(),
            Some("node.kubernetes.io/not-ready")
        );

        for toleration in [
            json!({"operator": "Exists"}),
            json!({"key": "virtual-kubelet.io/provider", "operator": "Exists"}),
            json!({"key": "virtual-kubelet.io/provider", "value": "alibabacloud", "effect": "NoSchedule"}),
        ] {
            let pod = self::pod(
                json!({"metadata": {"labels": {"eci": "true"}}, "spec": {"tolerations": [toleration.clone()]}}),
            );
            let after = patched(&pod, &admit_plain(&pod, &map(&[])));
            assert_eq!(
                after.spec.unwrap().tolerations.unwrap().len(),
                1,
                "{toleration} already tolerates"
            );
        }
        let wrong_value = self::pod(json!({"metadata": {"labels": {"eci": "true"}},
            "spec": {"tolerations": [{"key": "virtual-kubelet.io/provider", "value": "other"}]}}));
        let after = patched(&wrong_value, &admit_plain(&wrong_value, &map(&[])));
        assert_eq!(after.spec.unwrap().tolerations.unwrap().len(), 2);
    }

    #[test]
    fn a_node_without_taint_needs_no_toleration_and_a_named_node_is_pinned_by_hostname() {
        let settings = RawSettings {
            node_name: "vk-eci-beijing".into(),
            taint_key: String::new(),
            ..raw_settings()
        }
        .validate()
        .unwrap();
        let node = VirtualNode::from_settings(&settings, "test");
        let pod = pod(json!({"metadata": {"labels": {"eci": "true"}}}));
        let spec = patched(&pod, &admit(&pod, &map(&[]), None, &node))
            .spec
            .unwrap();
        assert!(spec.tolerations.is_none());
        assert_eq!(
            spec.node_selector.unwrap(),
            map(&[
                ("type", "virtual-kubelet"),
                ("kubernetes.io/hostname", "vk-eci-beijing")
            ])
        );
    }

    #[test]
    fn pods_bound_or_pinned_elsewhere_are_left_as_they_are() {
        let bound =
            pod(json!({"metadata": {"labels": {"eci": "true"}}, "spec": {"nodeName": "node-a"}}));
        let admission = admit_plain(&bound, &map(&[]));
        assert_eq!(admission.decision, Decision::Unchanged);
        assert!(admission.patch.0.is_empty());

        let pinned = pod(
            json!({"metadata": {"labels": {"eci": "true"}}, "spec": {"nodeSelector": {"kubernetes.io/hostname": "node-a"}}}),
        );
        let admission = admit_plain(&pinned, &map(&[]));
        assert_eq!(admission.decision, Decision::Warned(Via::PodLabel));
        assert!(admission.patch.0.is_empty());
        assert!(
            admission.warnings[0].contains("kubernetes.io/hostname=node-a"),
            "{:?}",
            admission.warnings
        );
    }

    #[test]
    fn pods_eci_cannot_run_are_admitted_unchanged_with_the_reason() {
        let daemon = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u", "controller": true}]}});
        let cases = [
            (json!({"spec": {"hostNetwork": true}}), "hostNetwork"),
            (
                json!({"spec": {"volumes": [{"name": "logs", "hostPath": {"path": "/var/log"}}]}}),
                "hostPath volume \"logs\"",
            ),
            (
                json!({"spec": {"containers": [{"name": "app", "image": "i", "securityContext": {"privileged": true}}]}}),
                "container \"app\" is privileged",
            ),
            (
                json!({"spec": {"initContainers": [{"name": "init", "image": "i", "securityContext": {"privileged": true}}]}}),
                "container \"init\" is privileged",
            ),
            (daemon, "DaemonSet"),
        ];
        for (shape, reason) in cases {
            for (ways_in, namespace) in [
                (
                    json!({"metadata": {"labels": {"alibabacloud.com/eci": "true"}}}),
                    map(&[]),
                ),
                (
                    json!({"metadata": {"annotations": {BURST_ANNOTATION: "eci"}}}),
                    map(&[]),
                ),
                (json!({}), map(&[("alibabacloud.com/eci", "true")])),
            ] {
                let mut value = ways_in;
                merge(&mut value, shape.clone());
                let pod = pod(value);
                let admission = admit_plain(&pod, &namespace);
                assert!(
                    matches!(admission.decision, Decision::Warned(_)),
                    "{reason}"
                );
                assert!(admission.patch.0.is_empty(), "{reason}");
                assert_eq!(admission.warnings.len(), 1);
                assert!(
                    admission.warnings[0].contains(reason),
                    "{:?}",
                    admission.warnings
                );
                assert!(admission.warnings[0].contains("admitted unchanged"));
                assert!(
                    admission.warnings[0].len() <= 256,
                    "{}",
                    admission.warnings[0]
                );
            }
        }
        let not_for_eci = pod(json!({"spec": {"hostNetwork": true}}));
        assert_eq!(
            admit_plain(&not_for_eci, &map(&[])),
            Admission::unchanged(Decision::Unchanged, Vec::new())
        );
    }

    #[test]
    fn an_unknown_burst_value_is_ignored_with_a_warning() {
        let pod = pod(json!({"metadata": {"annotations": {BURST_ANNOTATION: "yes"}}}));
        let admission = admit_plain(&pod, &map(&[]));
        assert_eq!(admission.decision, Decision::Unchanged);
        assert!(admission.warnings[0].contains("\"yes\""));
        let in_eci_namespace = admit_plain(&pod, &map(&[("alibabacloud.com/eci", "true")]));
        assert_eq!(
            in_eci_namespace.decision,
            Decision::Eci(Via::NamespaceLabel)
        );
        assert_eq!(in_eci_namespace.warnings.len(), 1);
    }

    #[test]
    fn patches_create_missing_maps_and_append_to_existing_lists() {
        let bare = pod(json!({"metadata": {"labels": {"eci": "true"}}}));
        let ops = serde_json::to_value(admit_plain(&bare, &map(&[])).patch).unwrap();
        assert_eq!(
            ops,
            json!([
                {"op": "add", "path": "/spec/tolerations", "value": [
                    {"key": "virtual-kubelet.io/provider", "operator": "Equal", "value": "alibabacloud", "effect": "NoSchedule"}]},
                {"op": "add", "path": "/spec/nodeSelector", "value": {"type": "virtual-kubelet"}}
            ])
        );
        let with_lists = pod(json!({"metadata": {"labels": {"eci": "true"}},
            "spec": {"tolerations": [], "nodeSelector": {"a": "b"}}}));
        let node = VirtualNode {
            labels: map(&[("a", "b"), ("type", "virtual-kubelet")]),
            ..node()
        };
        let ops = serde_json::to_value(admit(&with_lists, &map(&[]), None, &node).patch).unwrap();
        assert_eq!(ops[0]["path"], "/spec/tolerations/-");
        assert_eq!(
            ops[1],
            json!({"op": "add", "path": "/spec/nodeSelector/type", "value": "virtual-kubelet"})
        );
    }

    #[test]
    fn decisions_have_the_metric_labels() {
        assert_eq!(
            [
                Decision::Eci(Via::PodLabel),
                Decision::Burst,
                Decision::Unchanged,
                Decision::Warned(Via::Burst)
            ]
            .map(|d| d.label()),
            ["eci", "burst", "unchanged", "warned"]
        );
    }
}
