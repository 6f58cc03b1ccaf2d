//! Containers: image, command, env (resolved), ports, mounts, probes, hooks, security, sizes.

use eci_types::wire::{
    self, Capability, ContainerSecurityContext, EnvironmentVar, ExecAction, FieldRef,
    HttpGetAction, HttpHeader, Probe, TcpSocketAction,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, LifecycleHandler, Pod, PodSpec, Probe as KubeProbe,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{References, Refusal};
use crate::quantity;

/// What container translation needs to know about the pod.
pub(super) struct Scope<'a> {
    pub pod: &'a Pod,
    pub namespace: &'a str,
    pub refs: &'a References,
}

/// Capabilities ECI grants (`NET_RAW` needs a ticket with Alibaba, but is accepted).
const SUPPORTED_CAPABILITIES: &[&str] = &["NET_ADMIN", "NET_RAW"];

fn amount(resources: Option<&ResourceRequirements>, name: &str) -> Option<f64> {
    let resources = resources?;
    resources
        .limits
        .as_ref()
        .and_then(|l| l.get(name))
        .or_else(|| resources.requests.as_ref().and_then(|r| r.get(name)))
        .and_then(|q| quantity::parse(&q.0))
}

/// The vCPU and GiB a container asks for (limits, else requests).
fn size(container: &Container) -> (Option<f64>, Option<f64>) {
    let resources = container.resources.as_ref();
    (
        amount(resources, "cpu"),
        amount(resources, "memory").map(quantity::gib),
    )
}

/// What the whole pod needs: the containers together, or the largest init container if that is
/// more (they run one at a time, before the others). `None` when nothing states a size.
pub fn resource_totals(spec: &PodSpec) -> Option<(f64, f64)> {
    let mut stated = false;
    let (mut cpu, mut memory) = (0.0, 0.0);
    for container in &spec.containers {
        let (c, m) = size(container);
        stated |= c.is_some() || m.is_some();
        cpu += c.unwrap_or(0.0);
        memory += m.unwrap_or(0.0);
    }
    for container in spec.init_containers.iter().flatten() {
        let (c, m) = size(container);
        stated |= c.is_some() || m.is_some();
        cpu = f64::max(cpu, c.unwrap_or(0.0));
        memory = f64::max(memory, m.unwrap_or(0.0));
    }
    stated.then_some((cpu, memory))
}

fn env_value(name: &str, value: String) -> EnvironmentVar {
    EnvironmentVar {
        key: name.to_string(),
        value: Some(value),
        field_ref: None,
    }
}

fn field(pod: &Pod, path: &str) -> Option<Result<String, ()>> {
    let meta = &pod.metadata;
    let from_map = |map: &Option<std::collections::BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(Ok(map
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()))
    };
    match path {
        "metadata.name" => Some(Ok(meta.name.clone().unwrap_or_default())),
        "metadata.namespace" => Some(Ok(meta.namespace.clone().unwrap_or_default())),
        "metadata.uid" => Some(Ok(meta.uid.clone().unwrap_or_default())),
        "spec.nodeName" => Some(Ok(pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default())),
        "spec.serviceAccountName" => Some(Ok(pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()))),
        // Known only once the instance runs: ECI fills it in itself.
        "status.podIP" | "status.podIPs" | "status.hostIP" | "status.hostIPs" => Some(Err(())),
        _ => from_map(&meta.labels, "metadata.labels['")
            .or_else(|| from_map(&meta.annotations, "metadata.annotations['")),
    }
}

fn resource_field(
    container: &Container,
    spec: &PodSpec,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, Refusal> {
    let resources = container.resources.as_ref();
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let pick = |map: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >| {
        map.and_then(|m| m.get(name))
            .and_then(|q| quantity::parse(&q.0))
    };
    let stated = match kind {
        "requests" => pick(resources.and_then(|r| r.requests.as_ref())),
        _ => pick(resources.and_then(|r| r.limits.as_ref()))
            .or_else(|| pick(resources.and_then(|r| r.requests.as_ref()))),
    };
    let fallback = || {
        let (cpu, memory) = super::resource_totals(spec).unwrap_or((2.0, 4.0));
        match name {
            "cpu" => Some(cpu),
            "memory" => Some(memory * 1024.0 * 1024.0 * 1024.0),
            _ => None,
        }
    };
    let value = stated.or_else(fallback).ok_or_else(|| {
        Refusal::unsupported(
            "InvalidEnv",
            format!("resourceFieldRef {resource} is not a resource ECI knows"),
        )
    })?;
    let divisor = divisor
        .and_then(quantity::parse)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(format!("{}", (value / divisor).ceil() as i64))
}

fn resolve_env(
    scope: &Scope<'_>,
    spec: &PodSpec,
    container: &Container,
    env: &EnvVar,
) -> Result<Option<EnvironmentVar>, Refusal> {
    let Some(from) = &env.value_from else {
        return Ok(Some(env_value(
            &env.name,
            env.value.clone().unwrap_or_default(),
        )));
    };
    if let Some(key_ref) = &from.config_map_key_ref {
        let optional = key_ref.optional == Some(true);
        let value = scope
            .refs
            .config_maps
            .get(&key_ref.name)
            .and_then(|cm| cm.data.as_ref().and_then(|d| d.get(&key_ref.key)).cloned());
        return match value {
            Some(value) => Ok(Some(env_value(&env.name, value))),
            None if optional => Ok(None),
            None => Err(Refusal::missing(format!(
                "env {}: ConfigMap {}/{} has no key {}",
                env.name, scope.namespace, key_ref.name, key_ref.key
            ))),
        };
    }
    if let Some(key_ref) = &from.secret_key_ref {
        let optional = key_ref.optional == Some(true);
        let value = scope
            .refs
            .secrets
            .get(&key_ref.name)
            .and_then(|s| s.data.as_ref().and_then(|d| d.get(&key_ref.key)))
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned());
        return match value {
            Some(value) => Ok(Some(env_value(&env.name, value))),
            None if optional => Ok(None),
            None => Err(Refusal::missing(format!(
                "env {}: Secret {}/{} has no key {}",
                env.name, scope.namespace, key_ref.name, key_ref.key
            ))),
        };
    }
    if let Some(field_ref) = &from.field_ref {
        return match field(scope.pod, &field_ref.field_path) {
            Some(Ok(value)) => Ok(Some(env_value(&env.name, value))),
            Some(Err(())) => Ok(Some(EnvironmentVar {
                key: env.name.clone(),
                value: None,
                field_ref: Some(FieldRef {
                    field_path: "status.podIP".into(),
                }),
            })),
            None => Err(Refusal::unsupported(
                "InvalidEnv",
                format!(
                    "env {}: fieldRef {} is not supported",
                    env.name, field_ref.field_path
                ),
            )),
        };
    }
    if let Some(resource_ref) = &from.resource_field_ref {
        let target = match &resource_ref.container_name {
            Some(name) if !name.is_empty() => spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|c| c.name == *name)
                .ok_or_else(|| {
                    Refusal::unsupported(
                        "InvalidEnv",
                        format!("env {}: no container named {name}", env.name),
                    )
                })?,
            _ => container,
        };
        let divisor = resource_ref.divisor.as_ref().map(|q| q.0.as_str());
        return Ok(Some(env_value(
            &env.name,
            resource_field(target, spec, &resource_ref.resource, divisor)?,
        )));
    }
    Ok(Some(env_value(&env.name, String::new())))
}

fn env_from(
    scope: &Scope<'_>,
    container: &Container,
    warnings: &mut Vec<String>,
) -> Result<Vec<EnvironmentVar>, Refusal> {
    let mut out = Vec::new();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let pairs: Vec<(String, String)> = if let Some(r) = &source.config_map_ref {
            match scope.refs.config_maps.get(&r.name) {
                Some(cm) => cm.data.clone().unwrap_or_default().into_iter().collect(),
                None if r.optional == Some(true) => Vec::new(),
                None => {
                    return Err(Refusal::missing(format!(
                        "envFrom: ConfigMap {}/{} not found",
                        scope.namespace, r.name
                    )));
                }
            }
        } else if let Some(r) = &source.secret_ref {
            match scope.refs.secrets.get(&r.name) {
                Some(secret) => secret
                    .data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect(),
                None if r.optional == Some(true) => Vec::new(),
                None => {
                    return Err(Refusal::missing(format!(
                        "envFrom: Secret {}/{} not found",
                        scope.namespace, r.name
                    )));
                }
            }
        } else {
            Vec::new()
        };
        for (key, value) in pairs {
            let name = format!("{prefix}{key}");
            let valid = !name.is_empty()
                && !name.as_bytes()[0].is_ascii_digit()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if valid {
                out.push(env_value(&name, value));
            } else {
                warnings.push(format!(
                    "container {}: envFrom key `{name}` is not a valid environment variable name and was skipped",
                    container.name
                ));
            }
        }
    }
    Ok(out)
}

fn port_number(container: &Container, port: &IntOrString, what: &str) -> Result<i64, Refusal> {
    match port {
        IntOrString::Int(number) => Ok(i64::from(*number)),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| i64::from(p.container_port))
            .or_else(|| name.parse().ok())
            .ok_or_else(|| {
                Refusal::unsupported(
                    "InvalidProbe",
                    format!("container {}: {what} refers to port `{name}`, which the container does not declare", container.name),
                )
            }),
    }
}

fn probe(
    container: &Container,
    probe: &KubeProbe,
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<Probe, Refusal> {
    if probe.grpc.is_some() {
        return Err(Refusal::unsupported(
            "UnsupportedProbe",
            format!(
                "container {}: the {what} uses gRPC, which ECI does not support; use httpGet, tcpSocket or exec",
                container.name
            ),
        ));
    }
    if let Some(http) = &probe.http_get
        && (http.host.is_some() || http.http_headers.as_ref().is_some_and(|h| !h.is_empty()))
    {
        warnings.push(format!(
            "container {}: the {what}'s host and httpHeaders are not supported by ECI and are ignored",
            container.name
        ));
    }
    Ok(Probe {
        http_get: match &probe.http_get {
            Some(http) => Some(HttpGetAction {
                path: http.path.clone(),
                port: Some(port_number(container, &http.port, what)?),
                scheme: http.scheme.clone(),
            }),
            None => None,
        },
        tcp_socket: match &probe.tcp_socket {
            Some(tcp) => Some(TcpSocketAction {
                port: Some(port_number(container, &tcp.port, what)?),
            }),
            None => None,
        },
        exec: probe.exec.as_ref().map(|e| ExecAction {
            command: e.command.clone().unwrap_or_default(),
        }),
        initial_delay_seconds: probe.initial_delay_seconds.map(i64::from),
        period_seconds: probe.period_seconds.map(i64::from),
        timeout_seconds: probe.timeout_seconds.map(i64::from),
        // ECI accepts only 1 here, which is also what Kubernetes requires for liveness.
        success_threshold: probe.success_threshold.map(|_| 1),
        failure_threshold: probe.failure_threshold.map(i64::from),
    })
}

/// Applies a lifecycle handler to the flat ECI fields of one hook.
struct Hook<'a> {
    exec: &'a mut Vec<String>,
    http_host: &'a mut Option<String>,
    http_path: &'a mut Option<String>,
    http_port: &'a mut Option<i64>,
    http_scheme: &'a mut Option<String>,
    http_headers: &'a mut Vec<HttpHeader>,
    tcp_host: &'a mut Option<String>,
    tcp_port: &'a mut Option<i64>,
}

fn hook(
    container: &Container,
    handler: &LifecycleHandler,
    what: &str,
    target: Hook<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), Refusal> {
    if let Some(exec) = &handler.exec {
        *target.exec = exec.command.clone().unwrap_or_default();
    } else if let Some(http) = &handler.http_get {
        *target.http_host = http.host.clone();
        *target.http_path = http.path.clone();
        *target.http_port = Some(port_number(container, &http.port, what)?);
        *target.http_scheme = http.scheme.clone();
        *target.http_headers = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| HttpHeader {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect();
    } else if let Some(tcp) = &handler.tcp_socket {
        *target.tcp_host = tcp.host.clone();
        *target.tcp_port = Some(port_number(container, &tcp.port, what)?);
    } else if let Some(sleep) = &handler.sleep {
        *target.exec = vec!["sleep".into(), sleep.seconds.to_string()];
        warnings.push(format!(
            "container {}: the {what} sleep action runs as `sleep {}` inside the container, which needs a sleep binary",
            container.name, sleep.seconds
        ));
    }
    Ok(())
}

fn port(container: &Container, port: &ContainerPort) -> Result<wire::ContainerPort, Refusal> {
    let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
    if !matches!(protocol.as_str(), "TCP" | "UDP") {
        return Err(Refusal::unsupported(
            "UnsupportedPort",
            format!(
                "container {}: port {} uses {protocol}; ECI supports TCP and UDP",
                container.name, port.container_port
            ),
        ));
    }
    Ok(wire::ContainerPort {
        port: i64::from(port.container_port),
        protocol: Some(protocol),
    })
}

pub(super) fn container(
    scope: &Scope<'_>,
    spec: &PodSpec,
    container: &Container,
    is_init: bool,
    warnings: &mut Vec<String>,
) -> Result<wire::Container, Refusal> {
    let image = container
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| {
            Refusal::unsupported(
                "InvalidPod",
                format!("container {} has no image", container.name),
            )
        })?;
    let context = container.security_context.as_ref();
    if context.and_then(|c| c.privileged) == Some(true) {
        return Err(Refusal::unsupported(
            "PrivilegedNotSupported",
            format!(
                "container {} is privileged, which ECI does not allow; grant capabilities ({}) in securityContext instead",
                container.name,
                SUPPORTED_CAPABILITIES.join(", ")
            ),
        ));
    }
    let added: Vec<String> = context
        .and_then(|c| c.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default();
    if let Some(unsupported) = added
        .iter()
        .find(|c| !SUPPORTED_CAPABILITIES.contains(&c.trim_start_matches("CAP_")))
    {
        return Err(Refusal::unsupported(
            "CapabilityNotSupported",
            format!(
                "container {} adds capability {unsupported}; ECI allows only {}",
                container.name,
                SUPPORTED_CAPABILITIES.join(", ")
            ),
        ));
    }
    let pod_context = spec.security_context.as_ref();
    let run_as_user = context
        .and_then(|c| c.run_as_user)
        .or_else(|| pod_context.and_then(|c| c.run_as_user));
    let run_as_group = context
        .and_then(|c| c.run_as_group)
        .or_else(|| pod_context.and_then(|c| c.run_as_group));
    let run_as_non_root = context
        .and_then(|c| c.run_as_non_root)
        .or_else(|| pod_context.and_then(|c| c.run_as_non_root));
    let read_only_root = context
        .and_then(|c| c.read_only_root_filesystem)
        .filter(|r| *r);

    let mut env = Vec::new();
    env.extend(env_from(scope, container, warnings)?);
    for variable in container.env.iter().flatten() {
        if let Some(resolved) = resolve_env(scope, spec, container, variable)? {
            env.retain(|e: &EnvironmentVar| e.key != resolved.key);
            env.push(resolved);
        }
    }
    let (cpu, memory) = size(container);
    let gpu = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("nvidia.com/gpu"))
        .and_then(|q| quantity::parse(&q.0))
        .map(|g| g.ceil() as i64);

    let mut out = wire::Container {
        name: container.name.clone(),
        image,
        cpu,
        memory,
        gpu,
        working_dir: container.working_dir.clone(),
        image_pull_policy: container.image_pull_policy.clone(),
        command: container.command.clone().unwrap_or_default(),
        arg: container.args.clone().unwrap_or_default(),
        environment_var: env,
        port: container
            .ports
            .iter()
            .flatten()
            .map(|p| port(container, p))
            .collect::<Result<_, _>>()?,
        volume_mount: container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| wire::VolumeMount {
                name: m.name.clone(),
                mount_path: m.mount_path.clone(),
                sub_path: m.sub_path.clone().filter(|s| !s.is_empty()),
                read_only: m.read_only,
                mount_propagation: m.mount_propagation.clone(),
            })
            .collect(),
        security_context: (run_as_user.is_some() || read_only_root.is_some() || !added.is_empty())
            .then(|| ContainerSecurityContext {
                capability: (!added.is_empty()).then(|| Capability {
                    add: added
                        .iter()
                        .map(|c| c.trim_start_matches("CAP_").to_string())
                        .collect(),
                }),
                read_only_root_filesystem: read_only_root,
                run_as_user,
            }),
        security_context_run_as_group: run_as_group,
        security_context_run_as_non_root: run_as_non_root,
        stdin: container.stdin,
        stdin_once: container.stdin_once,
        tty: container.tty,
        termination_message_path: container.termination_message_path.clone(),
        termination_message_policy: container.termination_message_policy.clone(),
        ..wire::Container::default()
    };
    if is_init {
        return Ok(out);
    }
    if let Some(p) = &container.readiness_probe {
        out.readiness_probe = Some(probe(container, p, "readinessProbe", warnings)?);
    }
    if let Some(p) = &container.liveness_probe {
        out.liveness_probe = Some(probe(container, p, "livenessProbe", warnings)?);
    }
    if container.startup_probe.is_some() {
        warnings.push(format!(
            "container {}: ECI has no startup probes; the startupProbe is ignored (raise the liveness probe's initialDelaySeconds instead)",
            container.name
        ));
    }
    if let Some(lifecycle) = &container.lifecycle {
        if let Some(handler) = &lifecycle.post_start {
            let c = &mut out;
            hook(
                container,
                handler,
                "postStart hook",
                Hook {
                    exec: &mut c.lifecycle_post_start_handler_exec,
                    http_host: &mut c.lifecycle_post_start_handler_http_get_host,
                    http_path: &mut c.lifecycle_post_start_handler_http_get_path,
                    http_port: &mut c.lifecycle_post_start_handler_http_get_port,
                    http_scheme: &mut c.lifecycle_post_start_handler_http_get_scheme,
                    http_headers: &mut c.lifecycle_post_start_handler_http_get_http_header,
                    tcp_host: &mut c.lifecycle_post_start_handler_tcp_socket_host,
                    tcp_port: &mut c.lifecycle_post_start_handler_tcp_socket_port,
                },
                warnings,
            )?;
        }
        if let Some(handler) = &lifecycle.pre_stop {
            let c = &mut out;
            hook(
                container,
                handler,
                "preStop hook",
                Hook {
                    exec: &mut c.lifecycle_pre_stop_handler_exec,
                    http_host: &mut c.lifecycle_pre_stop_handler_http_get_host,
                    http_path: &mut c.lifecycle_pre_stop_handler_http_get_path,
                    http_port: &mut c.lifecycle_pre_stop_handler_http_get_port,
                    http_scheme: &mut c.lifecycle_pre_stop_handler_http_get_scheme,
                    http_headers: &mut c.lifecycle_pre_stop_handler_http_get_http_header,
                    tcp_host: &mut c.lifecycle_pre_stop_handler_tcp_socket_host,
                    tcp_port: &mut c.lifecycle_pre_stop_handler_tcp_socket_port,
                },
                warnings,
            )?;
        }
    }
    Ok(out)
}
