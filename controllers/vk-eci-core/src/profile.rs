//! The `eci-profile` ConfigMap (namespace `kube-system`): network defaults for ECI pods and
//! selectors that send matching pods to ECI with extra annotations and labels. Parsing is
//! strict (a malformed profile is refused with the key at fault, so the caller keeps the last
//! good one); applying it only ever adds.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use crate::translate::NetworkProfile;

pub const NAME: &str = "eci-profile";
pub const NAMESPACE: &str = "kube-system";

/// A key of the profile with an unusable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{NAMESPACE}/{NAME}: invalid {key}: {problem}")]
pub struct ProfileError {
    pub key: String,
    pub problem: String,
}

fn invalid(key: &str, problem: impl Into<String>) -> ProfileError {
    ProfileError {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// What a selector adds to the pods it matches.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Effect {
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSelector {
    pub name: String,
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    pub object_selector: Option<LabelSelector>,
    #[serde(default)]
    pub effect: Effect,
}

/// Whether `selector` matches `labels` (an empty selector matches everything).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_label && by_expression
}

impl ProfileSelector {
    /// Whether this selector can send pods to ECI (it names at least one selector).
    pub fn schedules(&self) -> bool {
        self.namespace_selector.is_some() || self.object_selector.is_some()
    }

    /// Both given selectors match (an absent one matches everything).
    pub fn matches(
        &self,
        pod_labels: &BTreeMap<String, String>,
        namespace_labels: &BTreeMap<String, String>,
    ) -> bool {
        self.namespace_selector
            .as_ref()
            .is_none_or(|s| selector_matches(s, namespace_labels))
            && self
                .object_selector
                .as_ref()
                .is_none_or(|s| selector_matches(s, pod_labels))
    }
}

/// A parsed profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub network: NetworkProfile,
    pub vpc: Option<String>,
    pub enable_cluster_ip: bool,
    pub enable_hybrid_mode: bool,
    pub enable_private_zone: bool,
    pub selectors: Vec<ProfileSelector>,
}

fn flag(data: &BTreeMap<String, String>, key: &str) -> Result<bool, ProfileError> {
    match data.get(key).map(|v| v.trim()) {
        None | Some("") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(invalid(key, format!("`{v}` is not \"true\" or \"false\""))),
    }
}

fn id(
    data: &BTreeMap<String, String>,
    key: &str,
    prefix: &str,
) -> Result<Option<String>, ProfileError> {
    match data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if v.starts_with(prefix) && !v.contains(',') => Ok(Some(v.to_string())),
        Some(v) => Err(invalid(
            key,
            format!("`{v}` is not one id of the form {prefix}..."),
        )),
    }
}

impl Profile {
    /// Parses the ConfigMap's data.
    pub fn parse(data: &BTreeMap<String, String>) -> Result<Self, ProfileError> {
        let vswitches: Vec<String> = data
            .get("vSwitchIds")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(bad) = vswitches.iter().find(|v| !v.starts_with("vsw-")) {
            return Err(invalid(
                "vSwitchIds",
                format!("`{bad}` is not a vSwitch id (vsw-...)"),
            ));
        }
        if vswitches.len() > 10 {
            return Err(invalid("vSwitchIds", "at most 10 vSwitches"));
        }
        let selectors: Vec<ProfileSelector> = match data
            .get("selectors")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            None => Vec::new(),
            Some(text) => serde_json::from_str(text)
                .map_err(|e| invalid("selectors", format!("not a JSON list of selectors: {e}")))?,
        };
        let mut names = std::collections::BTreeSet::new();
        for selector in &selectors {
            if selector.name.trim().is_empty() {
                return Err(invalid("selectors", "every selector needs a name"));
            }
            if !names.insert(selector.name.as_str()) {
                return Err(invalid(
                    "selectors",
                    format!("the name `{}` is used twice", selector.name),
                ));
            }
        }
        Ok(Self {
            network: NetworkProfile {
                vswitches,
                security_group: id(data, "securityGroupId", "sg-")?,
                resource_group: id(data, "resourceGroupId", "rg-")?,
            },
            vpc: id(data, "vpcId", "vpc-")?,
            enable_cluster_ip: flag(data, "enableClusterIp")?,
            enable_hybrid_mode: flag(data, "enableHybridMode")?,
            enable_private_zone: flag(data, "enablePrivateZone")?,
            selectors,
        })
    }

    /// The first selector that sends this pod to ECI, if any.
    pub fn scheduling_selector(
        &self,
        pod_labels: &BTreeMap<String, String>,
        namespace_labels: &BTreeMap<String, String>,
    ) -> Option<&ProfileSelector> {
        self.selectors
            .iter()
            .find(|s| s.schedules() && s.matches(pod_labels, namespace_labels))
    }

    /// Annotations and labels to add to a pod that goes to ECI: its own values win, then the
    /// matching selectors in order (selectors without any selector match every such pod).
    /// Only the additions are returned.
    pub fn additions(
        &self,
        pod_annotations: &BTreeMap<String, String>,
        pod_labels: &BTreeMap<String, String>,
        namespace_labels: &BTreeMap<String, String>,
    ) -> Effect {
        let mut added = Effect::default();
        for selector in self
            .selectors
            .iter()
            .filter(|s| s.matches(pod_labels, namespace_labels))
        {
            for (key, value) in &selector.effect.annotations {
                if !pod_annotations.contains_key(key) {
                    added
                        .annotations
                        .entry(key.clone())
                        .or_insert_with(|| value.clone());
                }
            }
            for (key, value) in &selector.effect.labels {
                if !pod_labels.contains_key(key) {
                    added
                        .labels
                        .entry(key.clone())
                        .or_insert_with(|| value.clone());
                }
            }
        }
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn profile() -> Profile {
        Profile::parse(&map(&[
            ("vpcId", "vpc-1"),
            ("vSwitchIds", "vsw-a, vsw-b"),
            ("securityGroupId", "sg-1"),
            ("enableClusterIp", "true"),
            (
                "selectors",
                r#"[
                {"name": "batch", "objectSelector": {"matchLabels": {"workload": "batch"}},
                 "effect": {"annotations": {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo", "team": "batch"}}},
                {"name": "ns", "namespaceSelector": {"matchExpressions": [{"key": "alibabacloud.com/eci", "operator": "In", "values": ["true"]}]},
                 "effect": {"annotations": {"team": "platform"}, "labels": {"via": "ns"}}},
                {"name": "everyone", "effect": {"labels": {"via": "default", "on-eci": "yes"}}}
            ]"#,
            ),
        ]))
        .unwrap()
    }

    #[test]
    fn parses_network_settings_and_selectors() {
        let profile = profile();
        assert_eq!(profile.network.vswitches, ["vsw-a", "vsw-b"]);
        assert_eq!(profile.network.security_group.as_deref(), Some("sg-1"));
        assert_eq!(profile.vpc.as_deref(), Some("vpc-1"));
        assert!(profile.enable_cluster_ip && !profile.enable_hybrid_mode);
        assert_eq!(profile.selectors.len(), 3);
    }

    #[test]
    fn selectors_schedule_only_when_they_select_something() {
        let profile = profile();
        let eci_namespace = map(&[("alibabacloud.com/eci", "true")]);
        assert_eq!(
            profile
                .scheduling_selector(&map(&[("workload", "batch")]), &map(&[]))
                .unwrap()
                .name,
            "batch"
        );
        assert_eq!(
            profile
                .scheduling_selector(&map(&[]), &eci_namespace)
                .unwrap()
                .name,
            "ns"
        );
        assert!(
            profile.scheduling_selector(&map(&[]), &map(&[])).is_none(),
            "the selector-less effect does not schedule"
        );
    }

    #[test]
    fn effects_only_add_pod_first_then_selectors_in_order() {
        let profile = profile();
        let added = profile.additions(
            &map(&[("team", "mine")]),
            &map(&[("workload", "batch")]),
            &map(&[("alibabacloud.com/eci", "true")]),
        );
        assert_eq!(
            added.annotations,
            map(&[("k8s.aliyun.com/eci-spot-strategy", "SpotAsPriceGo")]),
            "the pod's own team wins"
        );
        assert_eq!(
            added.labels,
            map(&[("via", "ns"), ("on-eci", "yes")]),
            "the earlier selector wins over the later"
        );
    }

    #[test]
    fn malformed_profiles_name_the_key() {
        for (key, value) in [
            ("vSwitchIds", "subnet-1"),
            ("securityGroupId", "sg-1,sg-2"),
            ("enableClusterIp", "yes"),
            ("selectors", "not json"),
            ("selectors", r#"[{"name": "a"}, {"name": "a"}]"#),
            (
                "selectors",
                r#"[{"name": "a", "effect": {"colour": "red"}}]"#,
            ),
        ] {
            let error = Profile::parse(&map(&[(key, value)])).unwrap_err();
            assert_eq!(error.key, key, "{error}");
            assert!(
                error
                    .to_string()
                    .starts_with("kube-system/eci-profile: invalid ")
            );
        }
        assert_eq!(Profile::parse(&map(&[])).unwrap(), Profile::default());
    }
}
