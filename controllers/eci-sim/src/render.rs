//! Renders simulated groups into the response shapes of the Describe* actions.

use eci_types::wire::*;

use crate::state::format_time;
use crate::state::group::{ContainerRun, Group, RunPhase, SimEvent};

fn env_infos(container: Option<&Container>) -> Vec<EnvironmentVarInfo> {
    let Some(container) = container else {
        return Vec::new();
    };
    if container.environment_var_hide == Some(true) {
        return Vec::new();
    }
    container
        .environment_var
        .iter()
        .map(|e| EnvironmentVarInfo {
            key: e.key.clone(),
            value: e.value.clone().unwrap_or_default(),
        })
        .collect()
}

fn port_infos(container: Option<&Container>) -> Vec<PortInfo> {
    container
        .map(|c| {
            c.port
                .iter()
                .map(|p| PortInfo {
                    port: p.port,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn mount_infos(container: Option<&Container>) -> Vec<VolumeMountInfo> {
    container
        .map(|c| {
            c.volume_mount
                .iter()
                .map(|m| VolumeMountInfo {
                    name: m.name.clone(),
                    mount_path: m.mount_path.clone(),
                    sub_path: m.sub_path.clone().unwrap_or_default(),
                    read_only: m.read_only.unwrap_or(false),
                    mount_propagation: m.mount_propagation.clone().unwrap_or_else(|| "None".into()),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn container_info(run: &ContainerRun, spec: Option<&Container>) -> ContainerInfo {
    ContainerInfo {
        name: run.name.to_string(),
        image: run.image.to_string(),
        cpu: spec.and_then(|c| c.cpu).unwrap_or(0.0),
        memory: spec.and_then(|c| c.memory).unwrap_or(0.0),
        gpu: spec.and_then(|c| c.gpu).unwrap_or(0),
        working_dir: spec.and_then(|c| c.working_dir.clone()).unwrap_or_default(),
        image_pull_policy: spec
            .and_then(|c| c.image_pull_policy.clone())
            .unwrap_or_else(|| "IfNotPresent".into()),
        commands: spec.map(|c| c.command.clone()).unwrap_or_default(),
        args: spec.map(|c| c.arg.clone()).unwrap_or_default(),
        environment_vars: env_infos(spec),
        ports: port_infos(spec),
        volume_mounts: mount_infos(spec),
        ready: run.ready,
        restart_count: run.restart_count,
        current_state: run.current.to_wire(),
        previous_state: run.previous.to_wire(),
        stdin: spec.and_then(|c| c.stdin).unwrap_or(false),
        stdin_once: spec.and_then(|c| c.stdin_once).unwrap_or(false),
        tty: spec.and_then(|c| c.tty).unwrap_or(false),
    }
}

fn volume_info(volume: &Volume) -> VolumeInfo {
    let nfs = volume.nfs_volume.as_ref();
    let empty_dir = volume.empty_dir_volume.as_ref();
    let flex = volume.flex_volume.as_ref();
    VolumeInfo {
        name: volume.name.clone(),
        r#type: volume.r#type.clone(),
        nfs_volume_server: nfs.map(|n| n.server.clone()).unwrap_or_default(),
        nfs_volume_path: nfs.map(|n| n.path.clone()).unwrap_or_default(),
        nfs_volume_read_only: nfs.and_then(|n| n.read_only).unwrap_or(false),
        empty_dir_volume_medium: empty_dir.and_then(|e| e.medium.clone()).unwrap_or_default(),
        empty_dir_volume_size_limit: empty_dir
            .and_then(|e| e.size_limit.clone())
            .unwrap_or_default(),
        config_file_volume_config_file_to_paths: volume
            .config_file_volume
            .as_ref()
            .map(|c| {
                c.config_file_to_path
                    .iter()
                    .map(|p| ConfigFilePathInfo {
                        path: p.path.clone(),
                        content: p.content.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        flex_volume_driver: flex.map(|f| f.driver.clone()).unwrap_or_default(),
        flex_volume_fs_type: flex.and_then(|f| f.fs_type.clone()).unwrap_or_default(),
        flex_volume_options: flex.and_then(|f| f.options.clone()).unwrap_or_default(),
    }
}

pub fn container_group(
    group: &Group,
    region: &str,
    vpc: &str,
    with_events: bool,
) -> ContainerGroup {
    let spec = &group.spec;
    let finished = group.finished_at.map(format_time).unwrap_or_default();
    ContainerGroup {
        container_group_id: group.id.clone(),
        container_group_name: spec.container_group_name.clone(),
        region_id: region.into(),
        zone_id: group.zone.clone(),
        vpc_id: vpc.into(),
        v_switch_id: group.vswitch.clone(),
        security_group_id: group.security_group.clone(),
        eni_instance_id: group
            .ip
            .map(|_| format!("eni-{}", &group.id[4..]))
            .unwrap_or_default(),
        intranet_ip: group.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        internet_ip: String::new(),
        ipv6_address: String::new(),
        status: group.status.to_string(),
        creation_time: format_time(group.created_at),
        succeeded_time: if group.status == status::SUCCEEDED {
            finished.clone()
        } else {
            String::new()
        },
        failed_time: if matches!(group.status, status::FAILED | status::SCHEDULE_FAILED) {
            finished.clone()
        } else {
            String::new()
        },
        expired_time: if group.status == status::EXPIRED {
            finished
        } else {
            String::new()
        },
        cpu: group.cpu,
        memory: group.memory,
        instance_type: group.instance_type.clone(),
        ephemeral_storage: spec.ephemeral_storage.unwrap_or(0),
        discount: 0,
        restart_policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
        spot_strategy: spec
            .spot_strategy
            .clone()
            .unwrap_or_else(|| "NoSpot".into()),
        spot_price_limit: spec.spot_price_limit.unwrap_or(0.0),
        compute_category: String::new(),
        resource_group_id: spec.resource_group_id.clone().unwrap_or_default(),
        ram_role_name: spec.ram_role_name.clone().unwrap_or_default(),
        dns_policy: spec.dns_policy.clone().unwrap_or_default(),
        tags: spec.tag.clone(),
        events: if with_events {
            group.events.iter().map(SimEvent::to_wire).collect()
        } else {
            Vec::new()
        },
        containers: group
            .containers
            .iter()
            .map(|run| container_info(run, spec.container.iter().find(|c| *c.name == *run.name)))
            .collect(),
        init_containers: group
            .init_containers
            .iter()
            .map(|run| {
                let info = container_info(
                    run,
                    spec.init_container.iter().find(|c| *c.name == *run.name),
                );
                InitContainerInfo {
                    name: info.name,
                    image: info.image,
                    cpu: info.cpu,
                    memory: info.memory,
                    working_dir: info.working_dir,
                    image_pull_policy: info.image_pull_policy,
                    command: info.commands,
                    args: info.args,
                    environment_vars: info.environment_vars,
                    ports: info.ports,
                    volume_mounts: info.volume_mounts,
                    ready: info.ready,
                    restart_count: info.restart_count,
                    current_state: info.current_state,
                    previous_state: info.previous_state,
                }
            })
            .collect(),
        volumes: spec.volume.iter().map(volume_info).collect(),
        host_aliases: spec
            .host_aliases
            .iter()
            .map(|h| HostAliasInfo {
                ip: h.ip.clone(),
                hostnames: h.hostname.clone(),
            })
            .collect(),
    }
}

/// ECI instance status → Kubernetes pod phase, per the lifecycle table.
pub fn pod_phase(status: &str) -> &'static str {
    match status {
        status::RUNNING | status::TERMINATING => "Running",
        status::SUCCEEDED => "Succeeded",
        status::FAILED | status::EXPIRED | status::SCHEDULE_FAILED => "Failed",
        _ => "Pending",
    }
}

fn pod_container_state(state: &ContainerState) -> PodContainerState {
    match state.state.as_str() {
        "Running" => PodContainerState {
            running: Some(RunningState {
                started_at: state.start_time.clone(),
            }),
            ..PodContainerState::default()
        },
        "Terminated" => PodContainerState {
            terminated: Some(TerminatedState {
                container_id: String::new(),
                exit_code: state.exit_code,
                signal: state.signal,
                reason: state.reason.clone(),
                message: state.message.clone(),
                started_at: state.start_time.clone(),
                finished_at: state.finish_time.clone(),
            }),
            ..PodContainerState::default()
        },
        "Waiting" => PodContainerState {
            waiting: Some(WaitingState {
                reason: state.reason.clone(),
                message: state.message.clone(),
            }),
            ..PodContainerState::default()
        },
        _ => PodContainerState::default(),
    }
}

fn condition(kind: &str, ok: bool, at: &str) -> PodCondition {
    PodCondition {
        r#type: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: String::new(),
        message: String::new(),
        last_transition_time: at.into(),
    }
}

pub fn group_status(group: &Group) -> ContainerGroupStatus {
    let changed = format_time(group.status_changed_at);
    let scheduled = !matches!(group.status, status::SCHEDULING | status::SCHEDULE_FAILED);
    let initialized = group
        .init_containers
        .iter()
        .all(|c| c.current.phase == RunPhase::Terminated && c.current.exit_code == 0)
        && group
            .containers
            .iter()
            .any(|c| c.current.phase != RunPhase::Waiting);
    let ready = group.status == status::RUNNING && group.containers.iter().all(|c| c.ready);
    let ip = group.ip.map(|ip| ip.to_string()).unwrap_or_default();
    ContainerGroupStatus {
        container_group_id: group.id.clone(),
        name: group.spec.container_group_name.clone(),
        namespace: String::new(),
        status: group.status.to_string(),
        uuid: String::new(),
        annotations: "{}".into(),
        pod_status: PodStatus {
            phase: pod_phase(group.status).into(),
            host_ip: ip.clone(),
            pod_ip: ip.clone(),
            pod_ips: if ip.is_empty() {
                Vec::new()
            } else {
                vec![PodIp { ip }]
            },
            qos_class: "Guaranteed".into(),
            start_time: format_time(group.created_at),
            conditions: vec![
                condition("PodScheduled", scheduled, &changed),
                condition("Initialized", initialized, &changed),
                condition("ContainersReady", ready, &changed),
                condition("Ready", ready, &changed),
            ],
            container_statuses: group
                .containers
                .iter()
                .map(|run| PodContainerStatus {
                    name: run.name.to_string(),
                    image: run.image.to_string(),
                    image_id: String::new(),
                    ready: run.ready,
                    started: run.current.phase == RunPhase::Running,
                    restart_count: run.restart_count,
                    state: pod_container_state(&run.current.to_wire()),
                    last_state: pod_container_state(&run.previous.to_wire()),
                })
                .collect(),
        },
    }
}

pub fn group_events(group: &Group, host: &str) -> ContainerGroupEvents {
    ContainerGroupEvents {
        container_group_id: group.id.clone(),
        name: group.spec.container_group_name.clone(),
        namespace: String::new(),
        uuid: String::new(),
        annotations: "{}".into(),
        events: group
            .events
            .iter()
            .map(|event| {
                let e = event.to_wire();
                DetailedEvent {
                    r#type: e.r#type,
                    count: e.count,
                    reason: e.reason,
                    message: e.message,
                    first_timestamp: e.first_timestamp,
                    last_timestamp: e.last_timestamp,
                    reporting_component: "EciService".into(),
                    reporting_instance: host.into(),
                    source: EventSource {
                        component: "EciService".into(),
                        host: host.into(),
                    },
                    involved_object: InvolvedObject {
                        kind: "Pod".into(),
                        name: group.spec.container_group_name.clone(),
                        namespace: String::new(),
                        uid: String::new(),
                        api_version: "v1".into(),
                    },
                }
            })
            .collect(),
    }
}
