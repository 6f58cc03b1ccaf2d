//! Typed requests and responses of the ECI actions the simulator serves (Eci 2018-08-08): the
//! eight vk-eci calls, and `UpdateContainerGroup`, `RestartContainerGroup` and
//! `DescribeContainerGroupMetric`, which only the simulator and its tests use.
//!
//! Field names follow the wire exactly, including its quirks (`HostAliase`, `NFSVolume`,
//! `EipISP`, init containers' `Command` versus containers' `Commands`, flattened volume fields in
//! responses, the lower-case keys of `DescribeContainerGroupStatus`). Request types serialize to
//! flat parameters through [`crate::params`]; the client sends them and the simulator
//! deserializes the same types.

use serde::{Deserialize, Serialize};

use crate::params::{CommaList, JsonList, lenient};

/// What `Debug` output and error messages show instead of a secret.
pub const REDACTED: &str = "<redacted>";

// ---------------------------------------------------------------------------------------------
// Request building blocks

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A container's environment variable. Its value may come from a Secret, which the client
/// cannot tell: `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentVar {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<FieldRef>,
}

impl std::fmt::Debug for EnvironmentVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvironmentVar")
            .field("key", &self.key)
            .field("value", &self.value.as_ref().map(|_| REDACTED))
            .field("field_ref", &self.field_ref)
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FieldRef {
    pub field_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerPort {
    #[serde(deserialize_with = "lenient_port")]
    pub port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

fn lenient_port<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    lenient::opt_i64(deserializer)?.ok_or_else(|| serde::de::Error::custom("port is required"))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_propagation: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HttpGetAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TcpSocketAction {
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecAction {
    #[serde(
        default,
        deserialize_with = "lenient::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub initial_delay_seconds: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub period_seconds: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_seconds: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub success_threshold: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub failure_threshold: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Capability {
    #[serde(
        default,
        deserialize_with = "lenient::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub add: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<Capability>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub run_as_user: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HttpHeader {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// `Container.N.*` of CreateContainerGroup (and UpdateContainerGroup).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Container {
    pub name: String,
    pub image: String,
    #[serde(
        default,
        deserialize_with = "lenient::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu: Option<f64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<f64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub gpu: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub command: Vec<String>,
    #[serde(
        default,
        deserialize_with = "lenient::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub arg: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_var: Vec<EnvironmentVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port: Vec<ContainerPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mount: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<ContainerSecurityContext>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub security_context_run_as_group: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub security_context_run_as_non_root: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub security_context_privileged: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub lifecycle_post_start_handler_exec: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_post_start_handler_http_get_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_post_start_handler_http_get_path: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub lifecycle_post_start_handler_http_get_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_post_start_handler_http_get_scheme: Option<String>,
    /// Create spells it singular, Update plural; the simulator accepts both.
    #[serde(
        default,
        alias = "LifecyclePostStartHandlerHttpGetHttpHeaders",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub lifecycle_post_start_handler_http_get_http_header: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_post_start_handler_tcp_socket_host: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub lifecycle_post_start_handler_tcp_socket_port: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub lifecycle_pre_stop_handler_exec: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_pre_stop_handler_http_get_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_pre_stop_handler_http_get_path: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub lifecycle_pre_stop_handler_http_get_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_pre_stop_handler_http_get_scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifecycle_pre_stop_handler_http_get_http_header: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_pre_stop_handler_tcp_socket_host: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub lifecycle_pre_stop_handler_tcp_socket_port: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub stdin: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub stdin_once: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub tty: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_policy: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub environment_var_hide: Option<bool>,
}

impl Container {
    /// Whether the container has any preStop hook (the instance then passes `Terminating`).
    pub fn has_pre_stop(&self) -> bool {
        !self.lifecycle_pre_stop_handler_exec.is_empty()
            || self.lifecycle_pre_stop_handler_http_get_port.is_some()
            || self.lifecycle_pre_stop_handler_tcp_socket_port.is_some()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EmptyDirVolume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NfsVolume {
    pub server: String,
    pub path: String,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub read_only: Option<bool>,
}

/// A file of a config-file volume. Its content may be a Secret's: `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigFileToPath {
    pub path: String,
    /// Base64 of the file content.
    pub content: String,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub mode: Option<i64>,
}

impl std::fmt::Debug for ConfigFileToPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFileToPath")
            .field("path", &self.path)
            .field("content", &REDACTED)
            .field("mode", &self.mode)
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigFileVolume {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_file_to_path: Vec<ConfigFileToPath>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_mode: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FlexVolume {
    pub driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    /// A JSON object as a string, e.g. `{"volumeId":"d-xxx"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostPathVolume {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
}

/// `Volume.N.*`: `Type` names which of the typed blocks applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    pub name: String,
    pub r#type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir_volume: Option<EmptyDirVolume>,
    #[serde(default, rename = "NFSVolume", skip_serializing_if = "Option::is_none")]
    pub nfs_volume: Option<NfsVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file_volume: Option<ConfigFileVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flex_volume: Option<FlexVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path_volume: Option<HostPathVolume>,
}

pub mod volume_type {
    pub const EMPTY_DIR: &str = "EmptyDirVolume";
    pub const NFS: &str = "NFSVolume";
    pub const CONFIG_FILE: &str = "ConfigFileVolume";
    pub const FLEX: &str = "FlexVolume";
    pub const HOST_PATH: &str = "HostPathVolume";
    pub const DISK: &str = "DiskVolume";
    pub const ALL: &[&str] = &[EMPTY_DIR, NFS, CONFIG_FILE, FLEX, HOST_PATH, DISK];
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsOption {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsConfig {
    #[serde(
        default,
        deserialize_with = "lenient::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub name_server: Vec<String>,
    #[serde(
        default,
        deserialize_with = "lenient::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub option: Vec<DnsOption>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostAlias {
    pub ip: String,
    #[serde(
        default,
        deserialize_with = "lenient::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hostname: Vec<String>,
}

/// A registry login. The password is a secret: `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageRegistryCredential {
    pub server: String,
    pub user_name: String,
    pub password: String,
}

impl std::fmt::Debug for ImageRegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageRegistryCredential")
            .field("server", &self.server)
            .field("user_name", &self.user_name)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AcrRegistryInfo {
    pub instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub domain: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Sysctl {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GroupSecurityContext {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctl: Vec<Sysctl>,
}

// ---------------------------------------------------------------------------------------------
// Requests

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateContainerGroupRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region_id: String,
    pub container_group_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_container: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_id: Option<String>,
    #[serde(default, rename = "VSwitchId", skip_serializing_if = "Option::is_none")]
    pub v_switch_id: Option<CommaList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu: Option<f64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<CommaList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_architecture: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_options_core: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_options_threads_per_core: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub ephemeral_storage: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_strategy: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub spot_price_limit: Option<f64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub spot_duration: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub strict_spot: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub auto_create_eip: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub eip_bandwidth: Option<i64>,
    #[serde(default, rename = "EipISP", skip_serializing_if = "Option::is_none")]
    pub eip_isp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip_common_bandwidth_package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip_instance_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip_address: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub ingress_bandwidth: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_bandwidth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    #[serde(default, rename = "HostAliase", skip_serializing_if = "Vec::is_empty")]
    pub host_aliases: Vec<HostAlias>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_registry_credential: Vec<ImageRegistryCredential>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_registry_info: Vec<AcrRegistryInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_snapshot_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub auto_match_image_cache: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_http_registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<GroupSecurityContext>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag: Vec<Tag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub dry_run: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_role_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub active_deadline_seconds: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub share_process_namespace: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_pattern: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ntp_server: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeContainerGroupsRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_group_ids: Option<JsonList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    #[serde(default, rename = "VSwitchId", skip_serializing_if = "Option::is_none")]
    pub v_switch_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag: Vec<Tag>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub with_event: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<i64>,
}

/// Shared by DescribeContainerGroupStatus and DescribeContainerGroupEvents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeContainerGroupStatusRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_group_ids: Option<JsonList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    #[serde(default, rename = "VSwitchId", skip_serializing_if = "Option::is_none")]
    pub v_switch_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag: Vec<Tag>,
    /// Only groups whose status changed in the last N seconds (60–3600).
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub since_second: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeContainerGroupEventsRequest {
    #[serde(flatten)]
    pub filter: DescribeContainerGroupStatusRequest,
    /// `EciService` | `K8sAgent`; empty for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_source: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteContainerGroupRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region_id: String,
    pub container_group_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub force: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateContainerGroupRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region_id: String,
    pub container_group_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// `RenewUpdate` (default) | `IncrementalUpdate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu: Option<f64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag: Vec<Tag>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_container: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_registry_credential: Vec<ImageRegistryCredential>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_registry_info: Vec<AcrRegistryInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartContainerGroupRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region_id: String,
    pub container_group_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeContainerLogRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region_id: String,
    pub container_group_id: String,
    pub container_name: String,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub tail: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub since_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit_bytes: Option<i64>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamps: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_time: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecContainerCommandRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region_id: String,
    pub container_group_id: String,
    pub container_name: String,
    pub command: JsonList,
    #[serde(
        default,
        rename = "TTY",
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub tty: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub stdin: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub sync: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeContainerGroupMetricRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region_id: String,
    pub container_group_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
}

/// The latest metrics of up to 20 container groups in one call (`ContainerGroupIds` is a JSON
/// array string).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeMultiContainerGroupMetricRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region_id: String,
    pub container_group_ids: JsonList,
    /// `summary` is the only documented value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group_id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Responses

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EmptyResponse {
    pub request_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateContainerGroupResponse {
    pub request_id: String,
    pub container_group_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeContainerGroupsResponse {
    pub request_id: String,
    pub next_token: String,
    pub total_count: i64,
    pub container_groups: Vec<ContainerGroup>,
}

/// Instance status values (`Status` of a container group).
pub mod status {
    pub const SCHEDULING: &str = "Scheduling";
    pub const PENDING: &str = "Pending";
    pub const RUNNING: &str = "Running";
    pub const RESTARTING: &str = "Restarting";
    pub const UPDATING: &str = "Updating";
    pub const TERMINATING: &str = "Terminating";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const EXPIRED: &str = "Expired";
    pub const SCHEDULE_FAILED: &str = "ScheduleFailed";
    pub const ALL: &[&str] = &[
        SCHEDULING,
        PENDING,
        RUNNING,
        RESTARTING,
        UPDATING,
        TERMINATING,
        SUCCEEDED,
        FAILED,
        EXPIRED,
        SCHEDULE_FAILED,
    ];
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerGroup {
    pub container_group_id: String,
    pub container_group_name: String,
    pub region_id: String,
    pub zone_id: String,
    pub vpc_id: String,
    #[serde(rename = "VSwitchId")]
    pub v_switch_id: String,
    pub security_group_id: String,
    pub eni_instance_id: String,
    pub intranet_ip: String,
    pub internet_ip: String,
    pub ipv6_address: String,
    pub status: String,
    pub creation_time: String,
    pub succeeded_time: String,
    pub failed_time: String,
    pub expired_time: String,
    pub cpu: f64,
    pub memory: f64,
    pub instance_type: String,
    pub ephemeral_storage: i64,
    pub discount: i64,
    pub restart_policy: String,
    pub spot_strategy: String,
    pub spot_price_limit: f64,
    pub compute_category: String,
    pub resource_group_id: String,
    pub ram_role_name: String,
    pub dns_policy: String,
    pub tags: Vec<Tag>,
    pub events: Vec<Event>,
    pub containers: Vec<ContainerInfo>,
    pub init_containers: Vec<InitContainerInfo>,
    pub volumes: Vec<VolumeInfo>,
    pub host_aliases: Vec<HostAliasInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostAliasInfo {
    pub ip: String,
    pub hostnames: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Event {
    pub count: i64,
    pub r#type: String,
    pub name: String,
    pub reason: String,
    pub message: String,
    pub first_timestamp: String,
    pub last_timestamp: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerState {
    /// `Waiting` | `Running` | `Terminated`.
    pub state: String,
    pub detail_status: String,
    pub reason: String,
    pub message: String,
    pub exit_code: i64,
    pub signal: i64,
    pub start_time: String,
    pub finish_time: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortInfo {
    pub port: i64,
    pub protocol: String,
}

/// An environment variable as ECI reports it back: `Debug` never shows its value.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EnvironmentVarInfo {
    pub key: String,
    pub value: String,
}

impl std::fmt::Debug for EnvironmentVarInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvironmentVarInfo")
            .field("key", &self.key)
            .field("value", &REDACTED)
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeMountInfo {
    pub name: String,
    pub mount_path: String,
    pub sub_path: String,
    pub read_only: bool,
    pub mount_propagation: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerInfo {
    pub name: String,
    pub image: String,
    pub cpu: f64,
    pub memory: f64,
    pub gpu: i64,
    pub working_dir: String,
    pub image_pull_policy: String,
    pub commands: Vec<String>,
    pub args: Vec<String>,
    pub environment_vars: Vec<EnvironmentVarInfo>,
    pub ports: Vec<PortInfo>,
    pub volume_mounts: Vec<VolumeMountInfo>,
    pub ready: bool,
    pub restart_count: i64,
    pub current_state: ContainerState,
    pub previous_state: ContainerState,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
}

/// Init containers in responses: like containers, but the command list is `Command`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InitContainerInfo {
    pub name: String,
    pub image: String,
    pub cpu: f64,
    pub memory: f64,
    pub working_dir: String,
    pub image_pull_policy: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub environment_vars: Vec<EnvironmentVarInfo>,
    pub ports: Vec<PortInfo>,
    pub volume_mounts: Vec<VolumeMountInfo>,
    pub ready: bool,
    pub restart_count: i64,
    pub current_state: ContainerState,
    pub previous_state: ContainerState,
}

/// Volumes in responses use flattened field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeInfo {
    pub name: String,
    pub r#type: String,
    #[serde(rename = "NFSVolumeServer")]
    pub nfs_volume_server: String,
    #[serde(rename = "NFSVolumePath")]
    pub nfs_volume_path: String,
    #[serde(rename = "NFSVolumeReadOnly")]
    pub nfs_volume_read_only: bool,
    pub empty_dir_volume_medium: String,
    pub empty_dir_volume_size_limit: String,
    pub config_file_volume_config_file_to_paths: Vec<ConfigFilePathInfo>,
    pub flex_volume_driver: String,
    pub flex_volume_fs_type: String,
    pub flex_volume_options: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConfigFilePathInfo {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeContainerGroupStatusResponse {
    pub request_id: String,
    pub next_token: String,
    pub total_count: i64,
    pub data: Vec<ContainerGroupStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerGroupStatus {
    pub container_group_id: String,
    pub name: String,
    pub namespace: String,
    pub status: String,
    #[serde(rename = "uuid")]
    pub uuid: String,
    /// A JSON object as a string.
    pub annotations: String,
    pub pod_status: PodStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PodStatus {
    pub phase: String,
    pub host_ip: String,
    pub pod_ip: String,
    pub pod_ips: Vec<PodIp>,
    pub qos_class: String,
    pub start_time: String,
    pub conditions: Vec<PodCondition>,
    pub container_statuses: Vec<PodContainerStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PodIp {
    pub ip: String,
}

/// The wire really mixes cases here: `type`, `status`, `lastTransitionTime` are lower-case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub r#type: String,
    #[serde(rename = "status")]
    pub status: String,
    #[serde(rename = "Reason")]
    pub reason: String,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "lastTransitionTime")]
    pub last_transition_time: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PodContainerStatus {
    pub name: String,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub ready: bool,
    pub started: bool,
    pub restart_count: i64,
    pub state: PodContainerState,
    pub last_state: PodContainerState,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PodContainerState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<WaitingState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminated: Option<TerminatedState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct WaitingState {
    pub reason: String,
    pub message: String,
}

/// The running start time key is literally `StartedAtstartedAt` on the wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunningState {
    #[serde(rename = "StartedAtstartedAt")]
    pub started_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TerminatedState {
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    pub exit_code: i64,
    pub signal: i64,
    pub reason: String,
    pub message: String,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeContainerGroupEventsResponse {
    pub request_id: String,
    pub next_token: String,
    pub total_count: i64,
    pub data: Vec<ContainerGroupEvents>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerGroupEvents {
    pub container_group_id: String,
    pub name: String,
    pub namespace: String,
    #[serde(rename = "uuid")]
    pub uuid: String,
    pub annotations: String,
    pub events: Vec<DetailedEvent>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DetailedEvent {
    pub r#type: String,
    pub count: i64,
    pub reason: String,
    pub message: String,
    pub first_timestamp: String,
    pub last_timestamp: String,
    pub reporting_component: String,
    pub reporting_instance: String,
    pub source: EventSource,
    #[serde(rename = "involvedObject")]
    pub involved_object: InvolvedObject,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EventSource {
    pub component: String,
    pub host: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InvolvedObject {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub api_version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeContainerLogResponse {
    pub request_id: String,
    pub container_name: String,
    pub content: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecContainerCommandResponse {
    pub request_id: String,
    pub web_socket_uri: String,
    pub http_url: String,
    pub sync_response: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeContainerGroupMetricResponse {
    pub request_id: String,
    pub container_group_id: String,
    pub records: Vec<MetricRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MetricRecord {
    pub timestamp: String,
    #[serde(rename = "CPU")]
    pub cpu: CpuMetric,
    pub memory: MemoryMetric,
    pub containers: Vec<ContainerMetric>,
}

/// One container's share of a [`MetricRecord`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerMetric {
    pub name: String,
    #[serde(rename = "CPU")]
    pub cpu: CpuMetric,
    pub memory: MemoryMetric,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeMultiContainerGroupMetricResponse {
    pub request_id: String,
    pub monitor_datas: Vec<GroupMonitorData>,
}

/// One container group's records in a [`DescribeMultiContainerGroupMetricResponse`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GroupMonitorData {
    pub container_group_id: String,
    pub records: Vec<MetricRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CpuMetric {
    pub limit: i64,
    pub load: i64,
    pub usage_core_nano_seconds: i64,
    pub usage_nano_cores: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MemoryMetric {
    pub available_bytes: i64,
    pub cache: i64,
    pub rss: i64,
    pub usage_bytes: i64,
    pub working_set: i64,
}

/// An error body of the gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ErrorBody {
    pub request_id: String,
    pub host_id: String,
    pub code: String,
    pub message: String,
    pub recommend: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{from_params, to_params};

    #[test]
    fn debug_output_never_shows_env_values_file_contents_or_passwords() {
        let request = CreateContainerGroupRequest {
            container: vec![Container {
                name: "c".into(),
                environment_var: vec![EnvironmentVar {
                    key: "DB_PASSWORD".into(),
                    value: Some("hunter2-from-a-secret".into()),
                    field_ref: None,
                }],
                ..Container::default()
            }],
            volume: vec![Volume {
                name: "cfg".into(),
                config_file_volume: Some(ConfigFileVolume {
                    config_file_to_path: vec![ConfigFileToPath {
                        path: "token".into(),
                        content: "c2VjcmV0LXRva2Vu".into(),
                        mode: None,
                    }],
                    ..ConfigFileVolume::default()
                }),
                ..Volume::default()
            }],
            image_registry_credential: vec![ImageRegistryCredential {
                server: "registry.example".into(),
                user_name: "robot".into(),
                password: "registry-pass".into(),
            }],
            ..CreateContainerGroupRequest::default()
        };
        let shown = format!("{request:?}");
        for secret in ["hunter2-from-a-secret", "c2VjcmV0LXRva2Vu", "registry-pass"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("DB_PASSWORD") && shown.contains("robot"),
            "{shown}"
        );
        let reported = EnvironmentVarInfo {
            key: "K".into(),
            value: "hunter2".into(),
        };
        assert!(!format!("{reported:?}").contains("hunter2"));
    }

    #[test]
    fn create_request_uses_wire_names_and_round_trips() {
        let request = CreateContainerGroupRequest {
            region_id: "cn-hangzhou".into(),
            container_group_name: "web".into(),
            v_switch_id: Some(CommaList(vec!["vsw-a".into(), "vsw-b".into()])),
            eip_isp: Some("BGP".into()),
            host_aliases: vec![HostAlias {
                ip: "1.2.3.4".into(),
                hostname: vec!["a".into()],
            }],
            container: vec![Container {
                name: "c".into(),
                image: "nginx".into(),
                readiness_probe: Some(Probe {
                    http_get: Some(HttpGetAction {
                        path: Some("/healthz".into()),
                        port: Some(8080),
                        scheme: None,
                    }),
                    ..Probe::default()
                }),
                ..Container::default()
            }],
            volume: vec![Volume {
                name: "nfs".into(),
                r#type: volume_type::NFS.into(),
                nfs_volume: Some(NfsVolume {
                    server: "nas".into(),
                    path: "/".into(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            }],
            ..CreateContainerGroupRequest::default()
        };
        let params = to_params(&request).unwrap();
        let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
        for expected in [
            "VSwitchId",
            "EipISP",
            "HostAliase.1.Ip",
            "HostAliase.1.Hostname.1",
            "Container.1.ReadinessProbe.HttpGet.Port",
            "Volume.1.NFSVolume.ReadOnly",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let back: CreateContainerGroupRequest =
            from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn registry_password_is_redacted_in_debug() {
        let credential = ImageRegistryCredential {
            server: "r".into(),
            user_name: "u".into(),
            password: "hunter2-registry".into(),
        };
        assert!(!format!("{credential:?}").contains("hunter2-registry"));
    }

    #[test]
    fn status_response_reads_the_mixed_case_keys() {
        let body = r#"{"RequestId":"r","Data":[{"ContainerGroupId":"eci-1","uuid":"u-1",
            "PodStatus":{"Phase":"Running","Conditions":[{"type":"Ready","status":"True","Reason":"","lastTransitionTime":"t"}],
            "ContainerStatuses":[{"Name":"c","State":{"Running":{"StartedAtstartedAt":"s"}}}]}}]}"#;
        let parsed: DescribeContainerGroupStatusResponse = serde_json::from_str(body).unwrap();
        let group = &parsed.data[0];
        assert_eq!(group.uuid, "u-1");
        assert_eq!(group.pod_status.conditions[0].r#type, "Ready");
        assert_eq!(
            group.pod_status.container_statuses[0]
                .state
                .running
                .as_ref()
                .unwrap()
                .started_at,
            "s"
        );
    }
}
