//! Request bodies in the API server's protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed commands (`kubectl create namespace|secret|configmap|deployment ...`,
//! `auth can-i`, `drain`) send. They are decoded with `k8s-pb` into the JSON form the store
//! holds.
//!
//! The envelope is the magic `k8s\0` and a `runtime.Unknown` whose `typeMeta` names the kind and
//! whose `raw` is that kind's message. k8s-pb has no JSON mapping, so the messages the sandbox
//! accepts are mapped here field by field, as Go's JSON encoding would write them: Go encodes
//! every non-pointer scalar in protobuf, so a zero there means "unset" (JSON's `omitempty`),
//! while a pointer field (`replicas`, `terminationGracePeriodSeconds`, ...) that arrives is
//! kept even at zero. Fields outside the mapped set are dropped (listed in `e2e/README.md`).

use std::collections::BTreeMap;

use base64::Engine;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::authentication::v1 as authentication;
use k8s_pb::api::authorization::v1 as authorization;
use k8s_pb::api::autoscaling::v1 as autoscaling;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value, json};

/// The media type of the API server's protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// What every protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the protobuf body does not start with the k8s\\0 magic")]
    NoMagic,
    #[error("the protobuf body is not a runtime.Unknown envelope: {0}")]
    Envelope(prost::DecodeError),
    #[error("the protobuf body is not a valid {kind}: {source}")]
    Message {
        kind: String,
        source: prost::DecodeError,
    },
    #[error(
        "the sandbox cannot decode {kind} ({api_version}) from protobuf; send it as JSON instead"
    )]
    Unsupported { api_version: String, kind: String },
}

/// Decodes a protobuf request body into the object's JSON form, `apiVersion` and `kind`
/// included.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let unknown = Unknown::decode(envelope).map_err(ProtobufError::Envelope)?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut object = message_json(&api_version, &kind, &raw)?;
    if let Value::Object(fields) = &mut object {
        fields.insert("apiVersion".into(), json!(api_version));
        fields.insert("kind".into(), json!(kind));
    }
    Ok(object)
}

fn message_json(api_version: &str, kind: &str, raw: &[u8]) -> Result<Value, ProtobufError> {
    fn as_json<M: Message + Default + ToJson>(
        kind: &str,
        raw: &[u8],
    ) -> Result<Value, ProtobufError> {
        M::decode(raw)
            .map(|message| message.to_json())
            .map_err(|source| ProtobufError::Message {
                kind: kind.to_string(),
                source,
            })
    }
    match (api_version, kind) {
        ("v1", "Namespace") => as_json::<core::Namespace>(kind, raw),
        ("v1", "ConfigMap") => as_json::<core::ConfigMap>(kind, raw),
        ("v1", "Secret") => as_json::<core::Secret>(kind, raw),
        ("v1", "ServiceAccount") => as_json::<core::ServiceAccount>(kind, raw),
        ("v1", "Service") => as_json::<core::Service>(kind, raw),
        ("v1", "Pod") => as_json::<core::Pod>(kind, raw),
        ("v1" | "meta.k8s.io/v1", "DeleteOptions") => as_json::<meta::DeleteOptions>(kind, raw),
        ("apps/v1", "Deployment") => as_json::<apps::Deployment>(kind, raw),
        ("policy/v1", "PodDisruptionBudget") => as_json::<policy::PodDisruptionBudget>(kind, raw),
        ("autoscaling/v1", "Scale") => as_json::<autoscaling::Scale>(kind, raw),
        ("policy/v1", "Eviction") => as_json::<policy::Eviction>(kind, raw),
        ("rbac.authorization.k8s.io/v1", "Role") => as_json::<rbac::Role>(kind, raw),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => as_json::<rbac::ClusterRole>(kind, raw),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => as_json::<rbac::RoleBinding>(kind, raw),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            as_json::<rbac::ClusterRoleBinding>(kind, raw)
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            as_json::<authorization::SelfSubjectAccessReview>(kind, raw)
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            as_json::<authorization::SelfSubjectRulesReview>(kind, raw)
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            as_json::<authentication::TokenRequest>(kind, raw)
        }
        _ => Err(ProtobufError::Unsupported {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        }),
    }
}

/// A protobuf message or scalar as JSON.
trait ToJson {
    fn to_json(&self) -> Value;
    /// Go's zero value, which protobuf carries for every non-pointer field that was never set.
    fn is_zero(&self) -> bool {
        false
    }
}

/// How one field of a message is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// A non-pointer Go field: its zero value is left out (`omitempty`).
    OmitZero,
    /// A pointer Go field: present means set, even at zero.
    Pointer,
    /// An embedded struct whose fields JSON writes inline (`LocalObjectReference`).
    Inline,
}

trait Field {
    fn field_json(&self, presence: Presence) -> Option<Value>;
}

impl<T: ToJson> Field for Option<T> {
    fn field_json(&self, presence: Presence) -> Option<Value> {
        let value = self.as_ref()?;
        if presence == Presence::OmitZero && value.is_zero() {
            return None;
        }
        Some(value.to_json()).filter(|v| !v.is_null())
    }
}

impl<T: ToJson> Field for Vec<T> {
    fn field_json(&self, _: Presence) -> Option<Value> {
        (!self.is_empty()).then(|| Value::Array(self.iter().map(ToJson::to_json).collect()))
    }
}

impl<T: ToJson> Field for BTreeMap<String, T> {
    fn field_json(&self, _: Presence) -> Option<Value> {
        (!self.is_empty()).then(|| {
            Value::Object(
                self.iter()
                    .map(|(key, value)| (key.clone(), value.to_json()))
                    .collect(),
            )
        })
    }
}

impl ToJson for String {
    fn to_json(&self) -> Value {
        json!(self)
    }
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

macro_rules! scalar_to_json {
    ($($ty:ty = $zero:expr),*) => {$(
        impl ToJson for $ty {
            fn to_json(&self) -> Value {
                json!(self)
            }
            fn is_zero(&self) -> bool {
                *self == $zero
            }
        }
    )*};
}
scalar_to_json!(i32 = 0, i64 = 0, bool = false);

/// Bytes (Secret `data`, ConfigMap `binaryData`) are base64 in JSON.
impl ToJson for Vec<u8> {
    fn to_json(&self) -> Value {
        json!(base64::engine::general_purpose::STANDARD.encode(self))
    }
}

impl ToJson for meta::Time {
    /// RFC 3339 to the second, as the API server writes timestamps; the zero time is `null`.
    fn to_json(&self) -> Value {
        let seconds = self.seconds.unwrap_or_default();
        if seconds == 0 {
            return Value::Null;
        }
        chrono::DateTime::from_timestamp(seconds, 0).map_or(Value::Null, |at| {
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
    }
}

impl ToJson for IntOrString {
    fn to_json(&self) -> Value {
        match self.r#type {
            Some(1) => json!(self.str_val.clone().unwrap_or_default()),
            _ => json!(self.int_val.unwrap_or_default()),
        }
    }
}

impl ToJson for Quantity {
    fn to_json(&self) -> Value {
        json!(self.string.clone().unwrap_or_default())
    }
}

/// The JSON name of a field: the proto names are the JSON names, which prost snake-cased, so
/// camel-case them back; the acronyms Kubernetes spells in capitals come back in capitals.
fn json_name(field: &str) -> String {
    let field = field.trim_start_matches("r#");
    let mut words = field.split('_');
    let mut name = words.next().unwrap_or_default().to_string();
    for word in words {
        match word {
            "ip" | "pid" | "ipc" | "fqdn" => name.push_str(&word.to_ascii_uppercase()),
            "ips" => name.push_str("IPs"),
            _ => {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    name.push(first.to_ascii_uppercase());
                    name.push_str(chars.as_str());
                }
            }
        }
    }
    name
}

fn put(object: &mut Map<String, Value>, name: &str, value: Option<Value>, presence: Presence) {
    match (value, presence) {
        (Some(Value::Object(inline)), Presence::Inline) => object.extend(inline),
        (Some(value), _) => {
            object.insert(name.to_string(), value);
        }
        (None, _) => {}
    }
}

/// `to_json!(Type { field, field = "jsonName", field: Pointer, field: Inline })`.
macro_rules! to_json {
    ($($ty:ty { $($field:ident $(= $json:literal)? $(: $presence:ident)?),* $(,)? })*) => {$(
        impl ToJson for $ty {
            fn to_json(&self) -> Value {
                let mut object = Map::new();
                $(
                    put(
                        &mut object,
                        &to_json!(@name $field $($json)?),
                        self.$field.field_json(to_json!(@presence $($presence)?)),
                        to_json!(@presence $($presence)?),
                    );
                )*
                Value::Object(object)
            }
        }
    )*};
    (@name $field:ident) => { json_name(stringify!($field)) };
    (@name $field:ident $json:literal) => { String::from($json) };
    (@presence) => { Presence::OmitZero };
    (@presence $presence:ident) => { Presence::$presence };
}

to_json! {
    meta::ObjectMeta {
        name, generate_name, namespace, uid, resource_version, generation, creation_timestamp,
        deletion_timestamp, deletion_grace_period_seconds: Pointer, labels, annotations,
        owner_references, finalizers,
    }
    meta::OwnerReference {
        api_version, kind, name, uid, controller: Pointer, block_owner_deletion: Pointer,
    }
    meta::LabelSelector { match_labels, match_expressions }
    meta::LabelSelectorRequirement { key, operator, values }
    meta::DeleteOptions {
        grace_period_seconds: Pointer, preconditions, orphan_dependents: Pointer,
        propagation_policy, dry_run,
    }
    meta::Preconditions { uid, resource_version }

    core::Namespace { metadata, spec }
    core::NamespaceSpec { finalizers }
    core::ConfigMap { metadata, immutable: Pointer, data, binary_data }
    core::Secret { metadata, immutable: Pointer, data, string_data, r#type }
    core::ServiceAccount {
        metadata, secrets, image_pull_secrets, automount_service_account_token: Pointer,
    }
    core::ObjectReference { kind, namespace, name, uid, api_version, resource_version, field_path }
    core::LocalObjectReference { name }
    core::Service { metadata, spec }
    core::ServiceSpec {
        ports, selector, cluster_ip, cluster_ips, r#type, external_ips, session_affinity,
        load_balancer_ip, load_balancer_source_ranges, external_name, external_traffic_policy,
        health_check_node_port, publish_not_ready_addresses, ip_families, ip_family_policy,
        allocate_load_balancer_node_ports: Pointer, load_balancer_class, internal_traffic_policy,
    }
    core::ServicePort { name, protocol, app_protocol, port, target_port, node_port }
    core::Pod { metadata, spec }
    core::PodTemplateSpec { metadata, spec }
    core::PodSpec {
        volumes, init_containers, containers, restart_policy,
        termination_grace_period_seconds: Pointer, active_deadline_seconds: Pointer, dns_policy,
        node_selector, service_account_name, service_account,
        automount_service_account_token: Pointer, node_name, host_network, host_pid, host_ipc,
        share_process_namespace: Pointer, security_context, image_pull_secrets, hostname,
        subdomain, affinity, scheduler_name, tolerations, priority_class_name, priority: Pointer,
        readiness_gates, runtime_class_name: Pointer, enable_service_links: Pointer,
        preemption_policy: Pointer, overhead,
    }
    core::Container {
        name, image, command, args, working_dir, ports, env_from, env, resources, restart_policy,
        volume_mounts, liveness_probe, readiness_probe, startup_probe, termination_message_path,
        termination_message_policy, image_pull_policy, security_context, stdin, stdin_once, tty,
    }
    core::ContainerPort { name, host_port, container_port, protocol, host_ip }
    core::EnvVar { name, value, value_from }
    core::EnvVarSource { field_ref, resource_field_ref, config_map_key_ref, secret_key_ref }
    core::ObjectFieldSelector { api_version, field_path }
    core::ResourceFieldSelector { container_name, resource, divisor }
    core::ConfigMapKeySelector { local_object_reference: Inline, key, optional: Pointer }
    core::SecretKeySelector { local_object_reference: Inline, key, optional: Pointer }
    core::EnvFromSource { prefix, config_map_ref, secret_ref }
    core::ConfigMapEnvSource { local_object_reference: Inline, optional: Pointer }
    core::SecretEnvSource { local_object_reference: Inline, optional: Pointer }
    core::ResourceRequirements { limits, requests }
    core::VolumeMount {
        name, read_only, recursive_read_only: Pointer, mount_path, sub_path, mount_propagation: Pointer,
        sub_path_expr,
    }
    core::Volume { name, volume_source: Inline }
    core::VolumeSource {
        host_path, empty_dir, secret, persistent_volume_claim, config_map,
        downward_api = "downwardAPI", projected,
    }
    core::HostPathVolumeSource { path, r#type: Pointer }
    core::EmptyDirVolumeSource { medium, size_limit }
    core::SecretVolumeSource { secret_name, items, default_mode: Pointer, optional: Pointer }
    core::ConfigMapVolumeSource {
        local_object_reference: Inline, items, default_mode: Pointer, optional: Pointer,
    }
    core::KeyToPath { key, path, mode: Pointer }
    core::PersistentVolumeClaimVolumeSource { claim_name, read_only }
    core::DownwardAPIVolumeSource { items, default_mode: Pointer }
    core::DownwardAPIVolumeFile { path, field_ref, resource_field_ref, mode: Pointer }
    core::ProjectedVolumeSource { sources, default_mode: Pointer }
    core::VolumeProjection {
        secret, downward_api = "downwardAPI", config_map, service_account_token,
    }
    core::SecretProjection { local_object_reference: Inline, items, optional: Pointer }
    core::ConfigMapProjection { local_object_reference: Inline, items, optional: Pointer }
    core::DownwardAPIProjection { items }
    core::ServiceAccountTokenProjection { audience, expiration_seconds: Pointer, path }
    core::Probe {
        handler: Inline, initial_delay_seconds, timeout_seconds, period_seconds,
        success_threshold, failure_threshold, termination_grace_period_seconds: Pointer,
    }
    core::ProbeHandler { exec, http_get, tcp_socket, grpc }
    core::ExecAction { command }
    core::HttpGetAction { path, port, host, scheme, http_headers }
    core::HttpHeader { name, value }
    core::TcpSocketAction { port, host }
    core::GrpcAction { port, service: Pointer }
    core::Toleration { key, operator, value, effect, toleration_seconds: Pointer }
    core::Affinity { node_affinity }
    core::NodeAffinity { required_during_scheduling_ignored_during_execution }
    core::NodeSelector { node_selector_terms }
    core::NodeSelectorTerm { match_expressions, match_fields }
    core::NodeSelectorRequirement { key, operator, values }
    core::PodReadinessGate { condition_type }
    core::PodSecurityContext {
        run_as_user: Pointer, run_as_group: Pointer, run_as_non_root: Pointer,
        supplemental_groups, fs_group: Pointer,
    }
    core::SecurityContext {
        capabilities, privileged: Pointer, run_as_user: Pointer, run_as_group: Pointer,
        run_as_non_root: Pointer, read_only_root_filesystem: Pointer,
        allow_privilege_escalation: Pointer,
    }
    core::Capabilities { add, drop }

    apps::Deployment { metadata, spec }
    apps::DeploymentSpec {
        replicas: Pointer, selector, template, strategy, min_ready_seconds,
        revision_history_limit: Pointer, paused, progress_deadline_seconds: Pointer,
    }
    apps::DeploymentStrategy { r#type, rolling_update }
    apps::RollingUpdateDeployment { max_unavailable: Pointer, max_surge: Pointer }

    policy::PodDisruptionBudget { metadata, spec }
    policy::PodDisruptionBudgetSpec {
        min_available: Pointer, selector, max_unavailable: Pointer,
        unhealthy_pod_eviction_policy: Pointer,
    }
    policy::Eviction { metadata, delete_options }

    autoscaling::Scale { metadata, spec }
    autoscaling::ScaleSpec { replicas }

    rbac::Role { metadata, rules }
    rbac::ClusterRole { metadata, rules, aggregation_rule }
    rbac::RoleBinding { metadata, subjects, role_ref }
    rbac::ClusterRoleBinding { metadata, subjects, role_ref }
    rbac::PolicyRule {
        verbs, api_groups, resources, resource_names, non_resource_ur_ls = "nonResourceURLs",
    }
    rbac::Subject { kind, api_group, name, namespace }
    rbac::RoleRef { api_group, kind, name }
    rbac::AggregationRule { cluster_role_selectors }

    authorization::SelfSubjectAccessReview { metadata, spec }
    authorization::SelfSubjectAccessReviewSpec { resource_attributes, non_resource_attributes }
    authorization::ResourceAttributes {
        namespace, verb, group, version, resource, subresource, name,
    }
    authorization::NonResourceAttributes { path, verb }
    authorization::SelfSubjectRulesReview { metadata, spec }
    authorization::SelfSubjectRulesReviewSpec { namespace }

    authentication::TokenRequest { metadata, spec }
    authentication::TokenRequestSpec { audiences, expiration_seconds: Pointer, bound_object_ref }
    authentication::BoundObjectReference { kind, api_version, name, u_id = "uid" }
}

/// Whether an `Accept` header leaves the server nothing it can answer with: protobuf only
/// (the sandbox answers JSON, so a real server's 406 is the honest reply).
pub fn accepts_only_protobuf(accept: &str) -> bool {
    let types: Vec<&str> = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or_default().trim())
        .filter(|t| !t.is_empty())
        .collect();
    !types.is_empty() && types.iter().all(|t| *t == MEDIA_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [MAGIC, &unknown.encode_to_vec()].concat()
    }

    fn named(name: &str) -> Option<meta::ObjectMeta> {
        Some(meta::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(meta::Time {
                seconds: Some(0),
                nanos: Some(0),
            }),
            ..Default::default()
        })
    }

    #[test]
    fn secret_data_is_base64_and_zero_values_are_left_out() {
        let secret = core::Secret {
            metadata: named("s"),
            data: BTreeMap::from([("a".to_string(), b"b".to_vec())]),
            r#type: Some("Opaque".into()),
            immutable: None,
            ..Default::default()
        };
        let object = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "Yg=="}, "type": "Opaque"})
        );
    }

    #[test]
    fn pointer_fields_keep_zero_and_embedded_references_are_inline() {
        let deployment = apps::Deployment {
            metadata: named("web"),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(0),
                min_ready_seconds: Some(0),
                template: Some(core::PodTemplateSpec {
                    metadata: None,
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: Some("web".into()),
                            image: Some("nginx".into()),
                            resources: Some(core::ResourceRequirements::default()),
                            env: vec![core::EnvVar {
                                name: Some("K".into()),
                                value: Some(String::new()),
                                value_from: Some(core::EnvVarSource {
                                    secret_key_ref: Some(core::SecretKeySelector {
                                        local_object_reference: Some(core::LocalObjectReference {
                                            name: Some("s".into()),
                                        }),
                                        key: Some("a".into()),
                                        optional: None,
                                    }),
                                    ..Default::default()
                                }),
                            }],
                            ..Default::default()
                        }],
                        host_pid: Some(true),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        };
        let object = decode(&envelope(
            "apps/v1",
            "Deployment",
            deployment.encode_to_vec(),
        ))
        .unwrap();
        assert_eq!(object["spec"]["replicas"], 0);
        assert!(object["spec"].get("minReadySeconds").is_none());
        let spec = &object["spec"]["template"]["spec"];
        assert_eq!(spec["hostPID"], true);
        assert_eq!(spec["containers"][0]["resources"], json!({}));
        assert_eq!(
            spec["containers"][0]["env"][0],
            json!({"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a"}}})
        );
    }

    #[test]
    fn json_names_keep_kubernetes_acronyms() {
        assert_eq!(json_name("cluster_ips"), "clusterIPs");
        assert_eq!(json_name("cluster_ip"), "clusterIP");
        assert_eq!(json_name("ip_families"), "ipFamilies");
        assert_eq!(json_name("set_hostname_as_fqdn"), "setHostnameAsFQDN");
        assert_eq!(json_name("r#type"), "type");
        assert_eq!(
            json_name("termination_message_path"),
            "terminationMessagePath"
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        assert!(matches!(decode(b"{}"), Err(ProtobufError::NoMagic)));
        assert!(matches!(
            decode(&envelope("batch/v1", "Job", Vec::new())),
            Err(ProtobufError::Unsupported { .. })
        ));
        assert!(matches!(
            decode(&envelope("v1", "ConfigMap", vec![0xff, 0xff])),
            Err(ProtobufError::Message { .. })
        ));
    }

    #[test]
    fn only_a_protobuf_only_accept_is_unanswerable() {
        assert!(accepts_only_protobuf(MEDIA_TYPE));
        assert!(accepts_only_protobuf(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io"
        ));
        assert!(!accepts_only_protobuf(
            "application/vnd.kubernetes.protobuf, application/json"
        ));
        assert!(!accepts_only_protobuf("*/*"));
        assert!(!accepts_only_protobuf(""));
    }
}
