//! The custom resources of vk-eci (API group `spot.vk-eci.io`, version `v1alpha1`).
//!
//! `SpotRotationPolicy` says how the spot pods of one workload are rotated; each rotation of
//! one doomed pod is a `SpotRotation`, so `kubectl get spotrotations` shows what happened.
//! `vk-eci crd` prints the definitions; `crds/` holds them and a test keeps it current.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "spot.vk-eci.io";

/// A Go-style duration such as `90s`, `2m` or `1m30s`: at most four parts of at most seven
/// digits (enough for an hour in milliseconds), so no value overflows anything; the upper
/// bound itself ([`crate::spot::MAX_POLICY_DURATION`]) is a CEL rule on each field.
const DURATION_PATTERN: &str = r"^([0-9]{1,7}(\.[0-9]{1,9})?(ms|s|m|h)){1,4}$";
const DURATION_MAX_LENGTH: u32 = 76;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Strategy {
    /// Create the replacement first, wait until it is Ready, then let the doomed pod go.
    #[default]
    Surge,
    /// Evict the doomed pod through the Eviction API (PodDisruptionBudgets apply).
    Evict,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OnDeadline {
    /// Delete the pod with a grace period that still fits before the release.
    #[default]
    Delete,
    /// Only record that the deadline passed; the instance vanishes at release.
    Leave,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
}

/// The workload whose pods a policy rotates.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    #[schemars(length(min = 1))]
    pub name: String,
}

/// How the spot pods of one workload (or of a pod selector) are rotated before ECI reclaims
/// their instances.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "spot.vk-eci.io",
    version = "v1alpha1",
    kind = "SpotRotationPolicy",
    namespaced,
    shortname = "srp",
    category = "vk-eci",
    status = "SpotRotationPolicyStatus",
    printcolumn = r#"{"name":"Strategy","type":"string","jsonPath":".spec.strategy"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Active","type":"integer","jsonPath":".status.active"}"#,
    printcolumn = r#"{"name":"Completed","type":"integer","jsonPath":".status.completed"}"#,
    printcolumn = r#"{"name":"Degraded","type":"integer","jsonPath":".status.degraded"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"Last","type":"date","jsonPath":".status.lastRotationTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.targetRef) != has(self.selector)").message("set exactly one of targetRef and selector"))]
#[x_kube(validation = Rule::new("!has(self.targetRef) || self.targetRef.kind != 'StatefulSet' || self.strategy == 'Evict'").message("StatefulSets cannot surge (their pods have fixed identities): set strategy: Evict"))]
#[serde(rename_all = "camelCase")]
pub struct SpotRotationPolicySpec {
    /// The workload to rotate (Deployment, ReplicaSet or StatefulSet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<WorkloadRef>,
    /// Or: the pods to rotate, in the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default)]
    pub strategy: Strategy,
    /// Extra replicas the workload may run during rotations: a count or a percentage of its
    /// replicas (default 25%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 0 && self <= 10000 : self.matches('^(100|[1-9]?[0-9])%$')").message("maxSurge is a count from 0 to 10000 or a percentage from 0% to 100%"))]
    pub max_surge: Option<IntOrString>,
    /// Rotations of this policy that may surge at once (default 10, 1 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = crate::spot::MAX_CONCURRENT))]
    pub max_concurrent: Option<i32>,
    /// How long a replacement may take to become Ready (default: as long as the release
    /// window allows; at most 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('1h')").message("readinessTimeout is at most 1h"))]
    pub readiness_timeout: Option<String>,
    /// Safety margin before the announced release (default 15s, at most 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('1h')").message("deadlineMargin is at most 1h"))]
    pub deadline_margin: Option<String>,
    #[serde(default)]
    pub on_deadline: OnDeadline,
    /// Finished rotations kept per policy (default 20, 0 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = crate::spot::MAX_HISTORY_LIMIT))]
    pub history_limit: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpotRotationPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub active: i32,
    #[serde(default)]
    pub completed: i32,
    #[serde(default)]
    pub degraded: i32,
    #[serde(default)]
    pub failed: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
}

/// The pod a rotation is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}

/// The rotation of one pod under a spot release notice. Named from the pod's UID and owned by
/// its policy; its progress lives here, so a new leader resumes where the old one stopped.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "spot.vk-eci.io",
    version = "v1alpha1",
    kind = "SpotRotation",
    namespaced,
    shortname = "sr",
    category = "vk-eci",
    status = "SpotRotationStatus",
    printcolumn = r#"{"name":"Policy","type":"string","jsonPath":".spec.policy"}"#,
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".spec.pod.name"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Replacement","type":"string","jsonPath":".status.replacementPod"}"#,
    printcolumn = r#"{"name":"Release","type":"date","jsonPath":".spec.releaseAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SpotRotationSpec {
    /// The policy in charge (absent for plain `api-evict` pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub pod: PodRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
    pub strategy: Strategy,
    /// When the `SpotToBeReleased` notice was first seen.
    pub noticed_at: Time,
    /// When ECI reclaims the instance.
    pub release_at: Time,
    /// When the pod must be gone (release minus the margin).
    pub deadline: Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RotationPhase {
    Pending,
    Surging,
    Draining,
    Completed,
    Degraded,
    Failed,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpotRotationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RotationPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement_pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surged_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement_ready_at: Option<Time>,
    /// The surge: the workload's replicas when it was decided and the replicas it asked for.
    /// Checked against the workload on every reconcile until it is seen applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge: Option<ScaleChange>,
    /// When the surge was taken back (decided), so it happens once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaled_down_at: Option<Time>,
    /// The take-back of the surge, checked like the surge itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take_back: Option<ScaleChange>,
    /// The HPA whose `minReplicas` this rotation holds up during its surge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_hold: Option<HpaHold>,
    /// Eviction API calls refused so far (PodDisruptionBudget), and the last refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_refusals: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_gone_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A change of a workload's replicas through its scale subresource. Recorded before it is
/// made, so a failed write is retried rather than forgotten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleChange {
    /// The workload's replicas when the change was decided.
    pub from: i32,
    /// The replicas it asked for.
    pub to: i32,
    /// When the workload was seen no longer at `from`: the change went through (or something
    /// else moved the workload, which then wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Time>,
}

/// An HorizontalPodAutoscaler held at a raised `minReplicas` during a surge. The HPA itself
/// records its holders and its own value (annotations), so rotations sharing it hold it once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HpaHold {
    pub name: String,
    /// The floor this rotation asked for (the surged replicas).
    #[serde(default)]
    pub floor: i32,
    /// When this rotation was seen no longer among the HPA's holders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Time>,
}

/// The finalizer a surging rotation carries: it is removed once the surge and any HPA hold
/// are taken back, so deleting a rotation (or its policy) never leaks them.
pub const TAKE_BACK_FINALIZER: &str = "spot.vk-eci.io/take-back";

/// The name of the rotation of the pod with `uid`.
pub fn rotation_name(uid: &str) -> String {
    format!("pod-{uid}")
}

/// The label naming the virtual node whose pod a rotation is for: each installation watches
/// only its own rotations, so several virtual nodes in one cluster never act on each other's.
pub const NODE_LABEL: &str = "spot.vk-eci.io/node";

/// The value of [`NODE_LABEL`] for `node`: the name itself when it is a valid label value,
/// otherwise (a node name may be 253 characters, a label value 63) a stable hash of it.
pub fn node_label_value(node: &str) -> String {
    let valid = !node.is_empty()
        && node.len() <= 63
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && node.starts_with(|c: char| c.is_ascii_alphanumeric())
        && node.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        return node.to_string();
    }
    format!("node-{:016x}", crate::stable_hash(node.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_label_values_are_valid_and_stable() {
        use super::node_label_value;
        assert_eq!(node_label_value("virtual-kubelet"), "virtual-kubelet");
        let long = "a".repeat(64);
        let hashed = node_label_value(&long);
        assert_eq!(hashed, node_label_value(&long));
        assert_ne!(hashed, node_label_value(&"a".repeat(65)));
        for odd in [long.as_str(), "-edge", "edge-", "", "with:colon"] {
            let value = node_label_value(odd);
            assert!(
                value.len() <= 63 && value.starts_with("node-"),
                "{odd:?} -> {value}"
            );
        }
        assert_eq!(node_label_value("with:colon"), "node-c6b0bacda8761c08");
    }

    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn definitions_carry_names_columns_and_validation() {
        let policy = serde_json::to_value(SpotRotationPolicy::crd()).unwrap();
        assert_eq!(
            policy["metadata"]["name"],
            "spotrotationpolicies.spot.vk-eci.io"
        );
        assert_eq!(policy["spec"]["names"]["shortNames"][0], "srp");
        let version = &policy["spec"]["versions"][0];
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            [
                "Strategy",
                "Target",
                "Active",
                "Completed",
                "Degraded",
                "Failed",
                "Last",
                "Age"
            ]
        );
        assert!(version["subresources"]["status"].is_object());
        let text = policy.to_string();
        assert!(text.contains("set exactly one of targetRef and selector"));
        assert!(text.contains("StatefulSets cannot surge"));
        assert!(text.contains(r#""enum":["Surge","Evict"]"#), "{text}");
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for field in ["deadlineMargin", "readinessTimeout"] {
            assert_eq!(spec[field]["pattern"], DURATION_PATTERN);
            assert_eq!(spec[field]["maxLength"], DURATION_MAX_LENGTH);
            assert_eq!(
                spec[field]["x-kubernetes-validations"][0]["rule"],
                format!(
                    "duration(self) <= duration('{}')",
                    crate::spot::MAX_POLICY_DURATION_TEXT
                )
            );
        }
        let bound = |field: &str, which: &str| spec[field][which].as_f64().unwrap();
        assert_eq!(bound("maxConcurrent", "minimum"), 1.0);
        assert_eq!(
            bound("maxConcurrent", "maximum"),
            f64::from(crate::spot::MAX_CONCURRENT)
        );
        assert_eq!(
            bound("historyLimit", "maximum"),
            f64::from(crate::spot::MAX_HISTORY_LIMIT)
        );
        let surge_rule = spec["maxSurge"]["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap();
        assert!(
            surge_rule.contains(&format!("self <= {}", crate::spot::MAX_SURGE_COUNT)),
            "{surge_rule}"
        );

        let rotation = serde_json::to_value(SpotRotation::crd()).unwrap();
        assert_eq!(rotation["spec"]["names"]["plural"], "spotrotations");
        assert_eq!(rotation["spec"]["names"]["shortNames"][0], "sr");
        let columns: Vec<&str> = rotation["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            ["Policy", "Pod", "Phase", "Replacement", "Release", "Age"]
        );
    }
}
