//! Pod (+ referenced ConfigMaps/Secrets, network profile, node config) → CreateContainerGroup.
//!
//! A pure function: everything it needs is passed in, so the pod-to-ECI controller only
//! fetches references and sends the result. Whatever ECI cannot run is refused with a reason
//! the controller turns into an Event and a pod condition; whatever is dropped on the way is a
//! warning, never silence.

mod containers;
mod registry;
mod volumes;

use std::collections::BTreeMap;

use eci_types::params::CommaList;
use eci_types::wire::{
    AcrRegistryInfo, CreateContainerGroupRequest, DnsConfig, DnsOption, GroupSecurityContext,
    HostAlias, Sysctl, Tag,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodSpec, Secret};

use crate::annotations::{AnnotationError, EciAnnotations};

pub use containers::resource_totals;

/// Tags vk-eci puts on every container group (ECI tag keys must not start with `aliyun`).
pub mod tags {
    pub const CLUSTER_ID: &str = "vk-eci.io/cluster-id";
    pub const NODE: &str = "vk-eci.io/node";
    pub const NAMESPACE: &str = "vk-eci.io/namespace";
    pub const NAME: &str = "vk-eci.io/name";
    pub const UID: &str = "vk-eci.io/uid";
}

/// Settings of this virtual node (flags and environment of `vk-eci run`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeConfig {
    pub cluster_id: String,
    pub node_name: String,
    pub vswitches: Vec<String>,
    pub security_group: Option<String>,
    pub resource_group: Option<String>,
    /// The cluster DNS service IP; `ClusterFirst` pods resolve through it when set.
    pub cluster_dns: Option<String>,
    pub cluster_domain: String,
}

/// Network settings of the `eci-profile` ConfigMap; they override the node's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkProfile {
    pub vswitches: Vec<String>,
    pub security_group: Option<String>,
    pub resource_group: Option<String>,
}

/// Objects the pod refers to, fetched by the caller (see [`references`]).
#[derive(Debug, Clone, Default)]
pub struct References {
    /// ConfigMaps of the pod's namespace, by name.
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets of the pod's namespace, by name.
    pub secrets: BTreeMap<String, Secret>,
    /// A token for the pod's service account, for projected service-account-token volumes.
    pub service_account_token: Option<String>,
}

/// What the pod refers to, so the caller knows what to fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Referenced {
    pub config_maps: Vec<String>,
    pub secrets: Vec<String>,
    pub service_account_token: bool,
}

/// Why a pod cannot become a container group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// ECI cannot run this pod as it is (hostNetwork, hostPath, privileged, DaemonSet pods...).
    Unsupported,
    /// An annotation is malformed; fixing it on the pod makes it work.
    InvalidAnnotation,
    /// A referenced ConfigMap, Secret or token does not exist (yet): retry later.
    MissingReference,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    /// A CamelCase reason for the Event and the pod condition.
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn unsupported(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: RefusalKind::Unsupported,
            reason,
            message: message.into(),
        }
    }

    pub fn missing(message: impl Into<String>) -> Self {
        Self {
            kind: RefusalKind::MissingReference,
            reason: "MissingReference",
            message: message.into(),
        }
    }

    /// Whether retrying later can succeed without the pod changing.
    pub fn is_transient(&self) -> bool {
        self.kind == RefusalKind::MissingReference
    }
}

impl From<AnnotationError> for Refusal {
    fn from(error: AnnotationError) -> Self {
        Self {
            kind: RefusalKind::InvalidAnnotation,
            reason: "InvalidAnnotation",
            message: error.to_string(),
        }
    }
}

/// A translated pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    pub request: CreateContainerGroupRequest,
    pub annotations: EciAnnotations,
    /// Parts of the pod that ECI ignores or approximates, for a Warning event.
    pub warnings: Vec<String>,
}

/// The container group name for a pod: `<namespace>-<name>` in ECI's alphabet (lower-case
/// letters, digits, `-`; 2–128 characters), shortened with a stable hash suffix if needed.
pub fn container_group_name(namespace: &str, name: &str, uid: &str) -> String {
    let raw = format!("{namespace}-{name}");
    let mut cleaned: String = raw
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    if cleaned.len() > 128 {
        let suffix: String = uid
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        cleaned.truncate(127 - suffix.len());
        cleaned = format!(
            "{}-{}",
            cleaned.trim_end_matches('-'),
            suffix.to_ascii_lowercase()
        );
    }
    let trimmed = cleaned.trim_matches('-');
    if trimmed.len() < 2 {
        format!(
            "pod-{}",
            uid.chars().take(8).collect::<String>().to_ascii_lowercase()
        )
    } else {
        trimmed.to_string()
    }
}

/// Names of every ConfigMap and Secret the pod refers to.
pub fn references(pod: &Pod) -> Referenced {
    let mut referenced = Referenced::default();
    let Some(spec) = &pod.spec else {
        return referenced;
    };
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for env in container.env.iter().flatten() {
            if let Some(from) = &env.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    referenced.config_maps.push(r.name.clone());
                }
                if let Some(r) = &from.secret_key_ref {
                    referenced.secrets.push(r.name.clone());
                }
            }
        }
        for from in container.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                referenced.config_maps.push(r.name.clone());
            }
            if let Some(r) = &from.secret_ref {
                referenced.secrets.push(r.name.clone());
            }
        }
    }
    for volume in spec.volumes.iter().flatten() {
        if let Some(source) = &volume.config_map {
            referenced.config_maps.push(source.name.clone());
        }
        if let Some(source) = &volume.secret
            && let Some(name) = &source.secret_name
        {
            referenced.secrets.push(name.clone());
        }
        for projection in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(source) = &projection.config_map {
                referenced.config_maps.push(source.name.clone());
            }
            if let Some(source) = &projection.secret {
                referenced.secrets.push(source.name.clone());
            }
            if projection.service_account_token.is_some() {
                referenced.service_account_token = true;
            }
        }
    }
    for secret in spec.image_pull_secrets.iter().flatten() {
        referenced.secrets.push(secret.name.clone());
    }
    for list in [&mut referenced.config_maps, &mut referenced.secrets] {
        list.retain(|n| !n.is_empty());
        list.sort();
        list.dedup();
    }
    referenced
}

fn refuse_unsupported_pod(pod: &Pod, spec: &PodSpec) -> Result<(), Refusal> {
    let owned_by_daemon_set = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    if owned_by_daemon_set {
        return Err(Refusal::unsupported(
            "DaemonSetPodNotSupported",
            "DaemonSet pods cannot run on ECI: a virtual node has no host to run a per-node agent on; \
             exclude the virtual node from the DaemonSet (node affinity on type!=virtual-kubelet)",
        ));
    }
    if spec.host_network == Some(true) {
        return Err(Refusal::unsupported(
            "HostNetworkNotSupported",
            "hostNetwork pods cannot run on ECI: each instance has its own network namespace",
        ));
    }
    if spec.host_pid == Some(true) || spec.host_ipc == Some(true) {
        return Err(Refusal::unsupported(
            "HostNamespaceNotSupported",
            "hostPID and hostIPC pods cannot run on ECI: there is no shared host",
        ));
    }
    Ok(())
}

/// Translates `pod` into the CreateContainerGroup request for it.
pub fn translate(
    pod: &Pod,
    node: &NodeConfig,
    profile: Option<&NetworkProfile>,
    refs: &References,
) -> Result<Translation, Refusal> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| Refusal::unsupported("InvalidPod", "the pod has no spec"))?;
    refuse_unsupported_pod(pod, spec)?;
    let meta = &pod.metadata;
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    let annotations = EciAnnotations::parse(&meta.annotations.clone().unwrap_or_default())?;
    let mut warnings = Vec::new();

    let scope = containers::Scope {
        pod,
        namespace: &namespace,
        refs,
    };
    let mut containers = Vec::new();
    for container in &spec.containers {
        containers.push(containers::container(
            &scope,
            spec,
            container,
            false,
            &mut warnings,
        )?);
    }
    let mut init_containers = Vec::new();
    for container in spec.init_containers.iter().flatten() {
        init_containers.push(containers::container(
            &scope,
            spec,
            container,
            true,
            &mut warnings,
        )?);
    }
    let volumes = volumes::volumes(&scope, spec, &mut warnings)?;

    let (cpu, memory) = match resource_totals(spec) {
        Some((cpu, memory)) if annotations.use_specs.is_empty() => {
            let rounded = eci_types::spec::round_up(cpu.max(0.25), memory.max(0.5)).ok_or_else(|| {
                Refusal::unsupported(
                    "ResourcesTooLarge",
                    format!("the pod asks for {cpu} vCPU and {memory} GiB; the largest ECI instance has 64 vCPU and 512 GiB"),
                )
            })?;
            (Some(rounded.0), Some(rounded.1))
        }
        _ => (None, None),
    };

    let vswitches = if !annotations.vswitches.is_empty() {
        annotations.vswitches.clone()
    } else if let Some(profile) = profile.filter(|p| !p.vswitches.is_empty()) {
        profile.vswitches.clone()
    } else {
        node.vswitches.clone()
    };
    let security_group = annotations
        .security_group
        .clone()
        .or_else(|| profile.and_then(|p| p.security_group.clone()))
        .or_else(|| node.security_group.clone());
    let resource_group = profile
        .and_then(|p| p.resource_group.clone())
        .or_else(|| node.resource_group.clone());

    let (dns_policy, dns_config) = dns(spec, &namespace, node);
    let sysctls: Vec<Sysctl> = spec
        .security_context
        .iter()
        .flat_map(|s| s.sysctls.iter().flatten())
        .map(|s| Sysctl {
            name: s.name.clone(),
            value: s.value.clone(),
        })
        .collect();

    let mut tags = vec![
        Tag::new(tags::CLUSTER_ID, &node.cluster_id),
        Tag::new(tags::NODE, &node.node_name),
        Tag::new(tags::NAMESPACE, &namespace),
        Tag::new(tags::NAME, &name),
        Tag::new(tags::UID, &uid),
    ];
    tags.retain(|t| t.value.len() <= 128);
    if annotations.eip_charge_type.is_some() {
        warnings.push(format!(
            "annotation {} is not supported by the ECI API version vk-eci uses; the EIP uses the default charge type",
            crate::annotations::EIP_CHARGE_TYPE
        ));
    }

    let request = CreateContainerGroupRequest {
        container_group_name: container_group_name(&namespace, &name, &uid),
        container: containers,
        init_container: init_containers,
        volume: volumes,
        security_group_id: security_group,
        v_switch_id: (!vswitches.is_empty()).then_some(CommaList(vswitches)),
        schedule_strategy: annotations.schedule_strategy.clone(),
        restart_policy: spec.restart_policy.clone(),
        cpu,
        memory,
        instance_type: (!annotations.use_specs.is_empty())
            .then(|| CommaList(annotations.use_specs.clone())),
        cpu_options_core: annotations.cpu_option_core,
        cpu_options_threads_per_core: annotations.cpu_option_threads_per_core,
        ephemeral_storage: annotations.extra_ephemeral_storage_gib,
        spot_strategy: annotations.spot_strategy.clone(),
        spot_price_limit: annotations.spot_price_limit,
        spot_duration: annotations.spot_duration,
        auto_create_eip: annotations.with_eip.then_some(true),
        eip_bandwidth: annotations.eip_bandwidth,
        eip_isp: annotations.eip_isp.clone(),
        eip_common_bandwidth_package: annotations.eip_bandwidth_package.clone(),
        eip_instance_id: annotations.eip_instance_id.clone(),
        ipv6_address_count: annotations.ipv6.then_some(1),
        ingress_bandwidth: annotations.ingress_bandwidth,
        egress_bandwidth: annotations.egress_bandwidth,
        dns_policy,
        dns_config,
        host_aliases: spec
            .host_aliases
            .iter()
            .flatten()
            .map(|h| HostAlias {
                ip: h.ip.clone(),
                hostname: h.hostnames.clone().unwrap_or_default(),
            })
            .collect(),
        host_name: Some(spec.hostname.clone().unwrap_or_else(|| name.clone())),
        image_registry_credential: registry::credentials(spec, refs, &mut warnings),
        acr_registry_info: annotations
            .acr_instance_ids
            .iter()
            .map(|id| AcrRegistryInfo {
                instance_id: id.clone(),
                ..AcrRegistryInfo::default()
            })
            .collect(),
        image_snapshot_id: annotations.image_snapshot_id.clone(),
        auto_match_image_cache: annotations.image_cache.then_some(true),
        insecure_registry: annotations.insecure_registries.clone(),
        security_context: (!sysctls.is_empty()).then_some(GroupSecurityContext { sysctl: sysctls }),
        tag: tags,
        client_token: (!uid.is_empty()).then(|| uid.clone()),
        resource_group_id: resource_group,
        ram_role_name: annotations.ram_role_name.clone(),
        active_deadline_seconds: spec.active_deadline_seconds,
        termination_grace_period_seconds: spec.termination_grace_period_seconds,
        share_process_namespace: spec.share_process_namespace,
        core_pattern: annotations.core_pattern.clone(),
        ntp_server: annotations.ntp_servers.clone(),
        ..CreateContainerGroupRequest::default()
    };
    Ok(Translation {
        request,
        annotations,
        warnings,
    })
}

/// Kubernetes DNS policy → ECI. `ClusterFirst` (the default) resolves through the cluster DNS
/// when the node knows it, with the search path a kubelet would write.
fn dns(spec: &PodSpec, namespace: &str, node: &NodeConfig) -> (Option<String>, Option<DnsConfig>) {
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let custom = spec.dns_config.as_ref();
    let mut config = DnsConfig::default();
    let own_policy = match policy {
        "Default" => "Default",
        "None" => "None",
        _ => match &node.cluster_dns {
            Some(ip) => {
                let domain = if node.cluster_domain.is_empty() {
                    "cluster.local"
                } else {
                    &node.cluster_domain
                };
                config.name_server.push(ip.clone());
                config.search = vec![
                    format!("{namespace}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.to_string(),
                ];
                config.option.push(DnsOption {
                    name: "ndots".into(),
                    value: Some("5".into()),
                });
                "None"
            }
            None => "Default",
        },
    };
    if let Some(custom) = custom {
        for server in custom.nameservers.iter().flatten() {
            if !config.name_server.contains(server) {
                config.name_server.push(server.clone());
            }
        }
        for search in custom.searches.iter().flatten() {
            if !config.search.contains(search) {
                config.search.push(search.clone());
            }
        }
        for option in custom.options.iter().flatten() {
            let name = option.name.clone().unwrap_or_default();
            config.option.retain(|o| o.name != name);
            config.option.push(DnsOption {
                name,
                value: option.value.clone(),
            });
        }
    }
    let empty = config == DnsConfig::default();
    (Some(own_policy.to_string()), (!empty).then_some(config))
}

#[cfg(test)]
mod tests;
