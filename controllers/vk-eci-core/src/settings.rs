//! Settings of `vk-eci run`, validated. Each setting has the name users of Alibaba's virtual
//! node already know (its environment variable); an invalid value fails start-up with an
//! error naming that setting.

use std::net::IpAddr;

use crate::quantity;

/// The setting names, as environment variables (flags mirror them in kebab case).
pub mod env {
    pub const NODE_NAME: &str = "VKUBELET_NODE_NAME";
    pub const CLUSTER_ID: &str = "ALIYUN_CLUSTERID";
    pub const REGION: &str = "ECI_REGION";
    pub const VPC: &str = "ECI_VPC";
    pub const VSWITCH: &str = "ECI_VSWITCH";
    pub const SECURITY_GROUP: &str = "ECI_SECURITY_GROUP";
    pub const RESOURCE_GROUP: &str = "ECI_RESOURCE_GROUP";
    pub const ACCESS_KEY: &str = "ECI_ACCESS_KEY";
    pub const SECRET_KEY: &str = "ECI_SECRET_KEY";
    pub const SECURITY_TOKEN: &str = "ECI_SECURITY_TOKEN";
    pub const ENDPOINT: &str = "ECI_ENDPOINT";
    pub const SIMULATOR: &str = "ECI_SIMULATOR";
    pub const TAINT_KEY: &str = "VKUBELET_TAINT_KEY";
    pub const TAINT_VALUE: &str = "VKUBELET_TAINT_VALUE";
    pub const TAINT_EFFECT: &str = "VKUBELET_TAINT_EFFECT";
    pub const QUOTA_CPU: &str = "ECI_QUOTA_CPU";
    pub const QUOTA_MEMORY: &str = "ECI_QUOTA_MEMORY";
    pub const QUOTA_POD: &str = "ECI_QUOTA_POD";
    pub const KUBELET_PORT: &str = "KUBELET_PORT";
    pub const POD_IP: &str = "VKUBELET_POD_IP";
    pub const CLUSTER_DNS: &str = "CLUSTER_DNS";
    pub const CLUSTER_DOMAIN: &str = "CLUSTER_DOMAIN";
}

/// A setting with an unusable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {setting}: {problem}")]
pub struct SettingError {
    pub setting: &'static str,
    pub problem: String,
}

fn invalid(setting: &'static str, problem: impl Into<String>) -> SettingError {
    SettingError {
        setting,
        problem: problem.into(),
    }
}

/// Settings as given (flags or environment), before validation. Secrets are not here (so
/// `Debug` cannot show them): they go straight into the ECI client's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSettings {
    pub node_name: String,
    pub cluster_id: Option<String>,
    pub region: Option<String>,
    pub vpc: Option<String>,
    pub vswitches: Option<String>,
    pub security_group: Option<String>,
    pub resource_group: Option<String>,
    pub taint_key: String,
    pub taint_value: String,
    pub taint_effect: String,
    pub quota_cpu: String,
    pub quota_memory: String,
    pub quota_pods: String,
    pub kubelet_port: u16,
    pub pod_ip: Option<String>,
    pub cluster_dns: Option<String>,
    pub cluster_domain: String,
    /// Whether any part of an AccessKey (id or secret) was configured.
    pub has_access_key: bool,
    /// Simulator mode was chosen (`--simulator`, `ECI_SIMULATOR=true`): pods run in an ECI
    /// simulator, never on Alibaba Cloud. Only this choice, never a missing AccessKey, selects
    /// the simulator.
    pub simulator: bool,
}

impl Default for RawSettings {
    /// The reference deployment's defaults.
    fn default() -> Self {
        Self {
            node_name: "virtual-kubelet".into(),
            cluster_id: None,
            region: None,
            vpc: None,
            vswitches: None,
            security_group: None,
            resource_group: None,
            taint_key: "virtual-kubelet.io/provider".into(),
            taint_value: "alibabacloud".into(),
            taint_effect: "NoSchedule".into(),
            quota_cpu: "1000000".into(),
            quota_memory: "6400Ti".into(),
            quota_pods: "10000".into(),
            kubelet_port: 10250,
            pod_ip: None,
            cluster_dns: None,
            cluster_domain: "cluster.local".into(),
            has_access_key: false,
            simulator: false,
        }
    }
}

/// The node's taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTaint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub node_name: String,
    pub cluster_id: String,
    pub region: String,
    pub vpc: Option<String>,
    pub vswitches: Vec<String>,
    pub security_group: Option<String>,
    pub resource_group: Option<String>,
    pub taint: Option<NodeTaint>,
    /// Capacity as Kubernetes quantities (`cpu`, `memory`, `pods`).
    pub quota_cpu: String,
    pub quota_memory: String,
    pub quota_pods: String,
    pub kubelet_port: u16,
    pub pod_ip: Option<IpAddr>,
    pub cluster_dns: Option<IpAddr>,
    pub cluster_domain: String,
    /// Simulator mode: pods run in an ECI simulator (built in, or the one at `ECI_ENDPOINT`),
    /// and the Node says so.
    pub simulated: bool,
}

fn dns_label_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn id_list(
    setting: &'static str,
    text: Option<&str>,
    prefix: &str,
    max: usize,
) -> Result<Vec<String>, SettingError> {
    let list: Vec<String> = text
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = list.iter().find(|id| !id.starts_with(prefix)) {
        return Err(invalid(
            setting,
            format!("`{bad}` is not an id of the form {prefix}..."),
        ));
    }
    if list.len() > max {
        return Err(invalid(
            setting,
            format!("at most {max} ids, got {}", list.len()),
        ));
    }
    Ok(list)
}

fn ip(setting: &'static str, text: Option<&str>) -> Result<Option<IpAddr>, SettingError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| invalid(setting, format!("`{text}` is not an IP address"))),
    }
}

/// Exactly one of an AccessKey (real capacity) and simulator mode, so that a Secret that failed
/// to mount can never turn a production node into one whose pods run nowhere.
fn capacity_choice(has_access_key: bool, simulator: bool) -> Result<(), SettingError> {
    match (has_access_key, simulator) {
        (true, false) | (false, true) => Ok(()),
        (false, false) => Err(invalid(
            env::ACCESS_KEY,
            format!(
                "not set: pods can only run on Alibaba Cloud with an AccessKey ({} / --access-key-id \
                 and {} / --access-key-secret); to run them in the ECI simulator instead, choose \
                 simulator mode explicitly with {}=true / --simulator",
                env::ACCESS_KEY,
                env::SECRET_KEY,
                env::SIMULATOR
            ),
        )),
        (true, true) => Err(invalid(
            env::SIMULATOR,
            format!(
                "{}=true / --simulator and an AccessKey ({} / --access-key-id) are both set: \
                 simulator mode never uses Alibaba Cloud, so one of them is a mistake; remove one",
                env::SIMULATOR,
                env::ACCESS_KEY
            ),
        )),
    }
}

impl RawSettings {
    pub fn validate(self) -> Result<Settings, SettingError> {
        capacity_choice(self.has_access_key, self.simulator)?;
        if !dns_label_ok(&self.node_name) {
            return Err(invalid(
                env::NODE_NAME,
                format!(
                    "`{}` is not a valid node name (lower-case DNS name)",
                    self.node_name
                ),
            ));
        }
        let cluster_id = self
            .cluster_id
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                invalid(
                    env::CLUSTER_ID,
                    "required: it tags and owns this cluster's ECI instances",
                )
            })?;
        if cluster_id.len() > 128 || cluster_id.starts_with("acs:") {
            return Err(invalid(
                env::CLUSTER_ID,
                "at most 128 characters, not starting with acs:",
            ));
        }
        let region = self
            .region
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| invalid(env::REGION, "required, e.g. cn-beijing"))?;
        if !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || !region.contains('-')
        {
            return Err(invalid(
                env::REGION,
                format!("`{region}` is not a region id such as cn-beijing"),
            ));
        }
        let vswitches = id_list(env::VSWITCH, self.vswitches.as_deref(), "vsw-", 10)?;
        // The simulator makes vSwitches on demand; real ECI needs to be told which to join.
        if vswitches.is_empty() && !self.simulator {
            return Err(invalid(
                env::VSWITCH,
                "required with a real AccessKey: the vSwitch(es) ECI instances join",
            ));
        }
        let security_group = id_list(
            env::SECURITY_GROUP,
            self.security_group.as_deref(),
            "sg-",
            1,
        )?
        .pop();
        let vpc = id_list(env::VPC, self.vpc.as_deref(), "vpc-", 1)?.pop();
        let taint = if self.taint_key.trim().is_empty() {
            None
        } else {
            if !matches!(
                self.taint_effect.as_str(),
                "NoSchedule" | "PreferNoSchedule" | "NoExecute"
            ) {
                return Err(invalid(
                    env::TAINT_EFFECT,
                    format!(
                        "`{}` is not NoSchedule, PreferNoSchedule or NoExecute",
                        self.taint_effect
                    ),
                ));
            }
            Some(NodeTaint {
                key: self.taint_key.trim().to_string(),
                value: self.taint_value.trim().to_string(),
                effect: self.taint_effect,
            })
        };
        for (setting, value) in [
            (env::QUOTA_CPU, &self.quota_cpu),
            (env::QUOTA_MEMORY, &self.quota_memory),
            (env::QUOTA_POD, &self.quota_pods),
        ] {
            if quantity::parse(value).is_none_or(|v| v <= 0.0) {
                return Err(invalid(
                    setting,
                    format!("`{value}` is not a positive quantity"),
                ));
            }
        }
        if self.kubelet_port == 0 {
            return Err(invalid(env::KUBELET_PORT, "must be a port number"));
        }
        if !dns_label_ok(&self.cluster_domain) {
            return Err(invalid(
                env::CLUSTER_DOMAIN,
                format!("`{}` is not a DNS domain", self.cluster_domain),
            ));
        }
        Ok(Settings {
            node_name: self.node_name,
            cluster_id,
            region,
            vpc,
            vswitches,
            security_group,
            resource_group: self.resource_group.filter(|r| !r.trim().is_empty()),
            taint,
            quota_cpu: self.quota_cpu,
            quota_memory: self.quota_memory,
            quota_pods: self.quota_pods,
            kubelet_port: self.kubelet_port,
            pod_ip: ip(env::POD_IP, self.pod_ip.as_deref())?,
            cluster_dns: ip(env::CLUSTER_DNS, self.cluster_dns.as_deref())?,
            cluster_domain: self.cluster_domain,
            simulated: self.simulator,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawSettings {
        RawSettings {
            cluster_id: Some("c-123".into()),
            region: Some("cn-beijing".into()),
            vswitches: Some("vsw-a, vsw-b".into()),
            security_group: Some("sg-1".into()),
            has_access_key: true,
            pod_ip: Some("10.0.0.5".into()),
            ..RawSettings::default()
        }
    }

    #[test]
    fn reference_defaults_validate() {
        let settings = raw().validate().unwrap();
        assert_eq!(settings.node_name, "virtual-kubelet");
        assert_eq!(settings.vswitches, ["vsw-a", "vsw-b"]);
        let taint = settings.taint.unwrap();
        assert_eq!(
            (
                taint.key.as_str(),
                taint.value.as_str(),
                taint.effect.as_str()
            ),
            ("virtual-kubelet.io/provider", "alibabacloud", "NoSchedule")
        );
        assert_eq!(settings.kubelet_port, 10250);
        assert!(!settings.simulated);
    }

    #[test]
    fn simulator_mode_needs_no_vswitch_and_marks_the_settings_simulated() {
        let settings = RawSettings {
            vswitches: None,
            has_access_key: false,
            simulator: true,
            ..raw()
        }
        .validate()
        .unwrap();
        assert!(settings.simulated && settings.vswitches.is_empty());
        let real = RawSettings {
            vswitches: None,
            ..raw()
        }
        .validate()
        .unwrap_err();
        assert_eq!(real.setting, env::VSWITCH);
    }

    #[test]
    fn without_an_access_key_or_the_simulator_choice_nothing_starts() {
        let error = RawSettings {
            has_access_key: false,
            ..raw()
        }
        .validate()
        .unwrap_err();
        assert_eq!(error.setting, env::ACCESS_KEY);
        let message = error.to_string();
        for named in [
            "ECI_ACCESS_KEY",
            "--access-key-id",
            "ECI_SIMULATOR=true",
            "--simulator",
        ] {
            assert!(message.contains(named), "{named} in: {message}");
        }
    }

    #[test]
    fn the_simulator_choice_and_an_access_key_exclude_each_other() {
        let error = RawSettings {
            simulator: true,
            ..raw()
        }
        .validate()
        .unwrap_err();
        assert_eq!(error.setting, env::SIMULATOR);
        let message = error.to_string();
        assert!(
            message.contains("--simulator") && message.contains("ECI_ACCESS_KEY"),
            "{message}"
        );
    }

    #[test]
    fn each_invalid_setting_is_named() {
        let cases: Vec<(RawSettings, &str)> = vec![
            (
                RawSettings {
                    cluster_id: None,
                    ..raw()
                },
                env::CLUSTER_ID,
            ),
            (
                RawSettings {
                    region: Some("Beijing".into()),
                    ..raw()
                },
                env::REGION,
            ),
            (
                RawSettings {
                    region: None,
                    ..raw()
                },
                env::REGION,
            ),
            (
                RawSettings {
                    vswitches: Some("subnet-1".into()),
                    ..raw()
                },
                env::VSWITCH,
            ),
            (
                RawSettings {
                    security_group: Some("sg-1,sg-2".into()),
                    ..raw()
                },
                env::SECURITY_GROUP,
            ),
            (
                RawSettings {
                    vpc: Some("net-1".into()),
                    ..raw()
                },
                env::VPC,
            ),
            (
                RawSettings {
                    taint_effect: "Sometimes".into(),
                    ..raw()
                },
                env::TAINT_EFFECT,
            ),
            (
                RawSettings {
                    quota_memory: "lots".into(),
                    ..raw()
                },
                env::QUOTA_MEMORY,
            ),
            (
                RawSettings {
                    quota_pods: "0".into(),
                    ..raw()
                },
                env::QUOTA_POD,
            ),
            (
                RawSettings {
                    kubelet_port: 0,
                    ..raw()
                },
                env::KUBELET_PORT,
            ),
            (
                RawSettings {
                    pod_ip: Some("10.0.0".into()),
                    ..raw()
                },
                env::POD_IP,
            ),
            (
                RawSettings {
                    cluster_dns: Some("dns".into()),
                    ..raw()
                },
                env::CLUSTER_DNS,
            ),
            (
                RawSettings {
                    node_name: "Virtual_Kubelet".into(),
                    ..raw()
                },
                env::NODE_NAME,
            ),
        ];
        for (settings, setting) in cases {
            let error = settings.validate().unwrap_err();
            assert_eq!(error.setting, setting, "{error}");
            assert!(error.to_string().contains(setting));
        }
    }
}
