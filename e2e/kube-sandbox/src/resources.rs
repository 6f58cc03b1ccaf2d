//! The resource types the sandbox serves: built-in ones, plus any custom resource as soon as
//! its CustomResourceDefinition exists.

use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// Empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Subresources served: `status`, `scale`, `eviction`, `binding`.
    pub subresources: Vec<String>,
    /// Printer columns (custom resources), as in the CRD.
    pub printer_columns: Vec<Value>,
    /// The openAPIV3Schema (custom resources), for defaulting and validation.
    pub schema: Option<Value>,
}

impl ResourceType {
    fn builtin(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        short: &[&str],
        subresources: &[&str],
    ) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            subresources: subresources.iter().map(|s| s.to_string()).collect(),
            printer_columns: Vec::new(),
            schema: None,
        }
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key of the type: `plural.group`.
    pub fn key(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    pub fn has(&self, subresource: &str) -> bool {
        self.subresources.iter().any(|s| s == subresource)
    }

    /// The type's entries in an APIResourceList.
    pub fn discovery(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": self.short_names,
            "categories": self.categories,
        })];
        for sub in &self.subresources {
            let (kind, verbs) = match sub.as_str() {
                "status" => (self.kind.clone(), json!(["get", "patch", "update"])),
                "scale" => ("Scale".to_string(), json!(["get", "patch", "update"])),
                "eviction" => ("Eviction".to_string(), json!(["create"])),
                "binding" => ("Binding".to_string(), json!(["create"])),
                _ => continue,
            };
            out.push(json!({
                "name": format!("{}/{sub}", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": verbs,
            }));
        }
        out
    }

    /// The types a CustomResourceDefinition declares (one per served version).
    pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
        let spec = &crd["spec"];
        let names = &spec["names"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let list = |v: &Value| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        spec["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["served"].as_bool().unwrap_or(true))
            .map(|version| ResourceType {
                group: text(&spec["group"]),
                version: text(&version["name"]),
                kind: text(&names["kind"]),
                plural: text(&names["plural"]),
                singular: {
                    let singular = text(&names["singular"]);
                    if singular.is_empty() {
                        text(&names["kind"]).to_ascii_lowercase()
                    } else {
                        singular
                    }
                },
                namespaced: spec["scope"] != "Cluster",
                short_names: list(&names["shortNames"]),
                categories: list(&names["categories"]),
                subresources: if version["subresources"]["status"].is_object() {
                    vec!["status".into()]
                } else {
                    Vec::new()
                },
                printer_columns: version["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                schema: version["schema"]["openAPIV3Schema"]
                    .as_object()
                    .map(|_| version["schema"]["openAPIV3Schema"].clone()),
            })
            .collect()
    }
}

/// Every built-in type the sandbox serves.
pub fn builtin() -> Vec<ResourceType> {
    use ResourceType as R;
    let rbac = "rbac.authorization.k8s.io";
    vec![
        R::builtin(
            "",
            "v1",
            "Namespace",
            "namespaces",
            false,
            &["ns"],
            &["status"],
        ),
        R::builtin("", "v1", "Node", "nodes", false, &["no"], &["status"]),
        R::builtin(
            "",
            "v1",
            "Pod",
            "pods",
            true,
            &["po"],
            &[
                "status",
                "eviction",
                "binding",
                "log",
                "exec",
                "attach",
                "portforward",
            ],
        ),
        R::builtin("", "v1", "ConfigMap", "configmaps", true, &["cm"], &[]),
        R::builtin("", "v1", "Secret", "secrets", true, &[], &[]),
        R::builtin(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            &["sa"],
            &["token"],
        ),
        R::builtin("", "v1", "Service", "services", true, &["svc"], &["status"]),
        R::builtin("", "v1", "Event", "events", true, &["ev"], &[]),
        R::builtin(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            &[],
            &[],
        ),
        R::builtin(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            &["deploy"],
            &["status", "scale"],
        ),
        R::builtin(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            true,
            &["rs"],
            &["status", "scale"],
        ),
        R::builtin(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            true,
            &["sts"],
            &["status", "scale"],
        ),
        R::builtin(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            &["pdb"],
            &["status"],
        ),
        R::builtin(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
            &["hpa"],
            &["status"],
        ),
        R::builtin("events.k8s.io", "v1", "Event", "events", true, &["ev"], &[]),
        R::builtin(rbac, "v1", "ClusterRole", "clusterroles", false, &[], &[]),
        R::builtin(
            rbac,
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
            &[],
        ),
        R::builtin(rbac, "v1", "Role", "roles", true, &[], &[]),
        R::builtin(rbac, "v1", "RoleBinding", "rolebindings", true, &[], &[]),
        // Reviews are answered, never stored. The sandbox's own API lets every client do
        // everything; SubjectAccessReviews (for servers that delegate authorization) are
        // evaluated against the stored RBAC objects (see `access`).
        R::builtin(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            false,
            &[],
            &[],
        ),
        // Served from kubelet scrapes (`metrics_api`), never stored.
        R::builtin(
            "metrics.k8s.io",
            "v1beta1",
            "NodeMetrics",
            "nodes",
            false,
            &[],
            &[],
        ),
        R::builtin(
            "metrics.k8s.io",
            "v1beta1",
            "PodMetrics",
            "pods",
            true,
            &[],
            &[],
        ),
        R::builtin(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            false,
            &[],
            &[],
        ),
        R::builtin(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            false,
            &[],
            &[],
        ),
        R::builtin(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            false,
            &[],
            &[],
        ),
        R::builtin(
            crate::admission::GROUP,
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
            &[],
            &[],
        ),
        R::builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            &["status"],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_declares_its_served_versions() {
        let crd = json!({"spec": {
            "group": "spot.vk-eci.io", "scope": "Namespaced",
            "names": {"kind": "SpotRotation", "plural": "spotrotations", "singular": "spotrotation", "shortNames": ["sr"]},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}]}],
        }});
        let types = ResourceType::from_crd(&crd);
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].api_version(), "spot.vk-eci.io/v1alpha1");
        assert!(types[0].has("status") && types[0].namespaced);
        assert_eq!(types[0].short_names, ["sr"]);
        assert_eq!(types[0].printer_columns.len(), 1);
    }
}
