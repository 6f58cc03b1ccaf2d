//! The virtual node as the heartbeat controller declares it: the Node's labels, taint and
//! status, and the Lease it renews. Pure builders; the controller applies them with
//! server-side apply under its own field manager, so labels, taints and conditions that
//! others own are left alone.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

use crate::settings::Settings;
use crate::status::kube_time;

/// Set on a node whose ECI is the built-in simulator, so nobody mistakes it for capacity.
pub const SIMULATED_LABEL: &str = "vk-eci.io/simulated";
pub const SIMULATED_ANNOTATION: &str = "vk-eci.io/simulated";
/// Seconds a Lease lasts without renewal (the kubelet's default).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// NodeStatus is re-posted at least this often, and whenever it changes.
pub const STATUS_REPORT_SECONDS: i64 = 60;

/// Whether ECI can be used right now, as last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EciHealth {
    Reachable,
    /// The gateway rejected the credentials (signature, unknown key, no permission).
    CredentialsRejected(String),
    /// Transport errors, timeouts or 5xx on the last attempts.
    Unreachable(String),
}

/// Labels and annotations of the Node (metadata), plus its taint (spec).
pub fn node_metadata(settings: &Settings, version: &str) -> (ObjectMeta, NodeSpec) {
    let mut labels = BTreeMap::from([
        ("type".to_string(), "virtual-kubelet".to_string()),
        ("kubernetes.io/role".to_string(), "agent".to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        (
            "kubernetes.io/hostname".to_string(),
            settings.node_name.clone(),
        ),
        (
            "node.kubernetes.io/exclude-from-external-load-balancers".to_string(),
            String::new(),
        ),
        (
            "topology.kubernetes.io/region".to_string(),
            settings.region.clone(),
        ),
        (
            "alibabacloud.com/virtual-node".to_string(),
            "true".to_string(),
        ),
        ("vk-eci.io/version".to_string(), version.to_string()),
    ]);
    let mut annotations = BTreeMap::new();
    if settings.simulated {
        labels.insert(SIMULATED_LABEL.to_string(), "true".to_string());
        annotations.insert(
            SIMULATED_ANNOTATION.to_string(),
            "Simulator mode (--simulator / ECI_SIMULATOR=true): pods run in an ECI simulator, not on real capacity".to_string(),
        );
    }
    let taints = settings.taint.as_ref().map(|t| {
        vec![Taint {
            key: t.key.clone(),
            value: Some(t.value.clone()).filter(|v| !v.is_empty()),
            effect: t.effect.clone(),
            time_added: None,
        }]
    });
    (
        ObjectMeta {
            name: Some(settings.node_name.clone()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        NodeSpec {
            taints,
            ..NodeSpec::default()
        },
    )
}

fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    previous: &[NodeCondition],
    now: DateTime<Utc>,
) -> NodeCondition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| kube_time(now));
    NodeCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_heartbeat_time: Some(kube_time(now)),
        last_transition_time: Some(since),
    }
}

/// The NodeStatus to report. `previous` conditions keep their transition times.
pub fn node_status(
    settings: &Settings,
    health: &EciHealth,
    version: &str,
    previous: &[NodeCondition],
    now: DateTime<Utc>,
) -> NodeStatus {
    let (ready, reason, message) = match health {
        EciHealth::Reachable => (
            true,
            "KubeletReady",
            "vk-eci is posting ready status; ECI is reachable".to_string(),
        ),
        EciHealth::CredentialsRejected(why) => (
            false,
            "ECICredentialsRejected",
            format!("ECI rejected the AccessKey: {why}"),
        ),
        EciHealth::Unreachable(why) => (
            false,
            "ECIUnreachable",
            format!("ECI cannot be reached: {why}"),
        ),
    };
    let capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity(settings.quota_cpu.clone())),
        (
            "memory".to_string(),
            Quantity(settings.quota_memory.clone()),
        ),
        ("pods".to_string(), Quantity(settings.quota_pods.clone())),
    ]);
    let mut addresses = vec![NodeAddress {
        type_: "Hostname".into(),
        address: settings.node_name.clone(),
    }];
    if let Some(ip) = settings.pod_ip {
        addresses.insert(
            0,
            NodeAddress {
                type_: "InternalIP".into(),
                address: ip.to_string(),
            },
        );
    }
    let calm = |kind: &str, reason: &str| {
        condition(
            kind,
            false,
            reason,
            format!("ECI manages {}", kind.to_lowercase()),
            previous,
            now,
        )
    };
    NodeStatus {
        capacity: Some(capacity.clone()),
        allocatable: Some(capacity),
        conditions: Some(vec![
            condition("Ready", ready, reason, message, previous, now),
            calm("MemoryPressure", "KubeletHasSufficientMemory"),
            calm("DiskPressure", "KubeletHasNoDiskPressure"),
            calm("PIDPressure", "KubeletHasSufficientPID"),
            calm("NetworkUnavailable", "RouteCreated"),
        ]),
        addresses: Some(addresses),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(settings.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            operating_system: "linux".into(),
            os_image: if settings.simulated {
                "ECI simulator".into()
            } else {
                "Alibaba Cloud ECI".into()
            },
            kernel_version: String::new(),
            container_runtime_version: "eci://2018-08-08".into(),
            kubelet_version: format!("v1.33.0-vk-eci-{version}"),
            kube_proxy_version: String::new(),
            machine_id: settings.node_name.clone(),
            system_uuid: settings.node_name.clone(),
            boot_id: String::new(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// Whether a status must be posted now: something besides heartbeat times changed, or the
/// last report is `STATUS_REPORT_SECONDS` old.
pub fn status_due(
    reported: Option<&NodeStatus>,
    desired: &NodeStatus,
    last_report: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    let Some(reported) = reported else {
        return true;
    };
    if last_report.is_none_or(|at| (now - at).num_seconds() >= STATUS_REPORT_SECONDS) {
        return true;
    }
    let strip = |status: &NodeStatus| {
        let mut status = status.clone();
        for condition in status.conditions.iter_mut().flatten() {
            condition.last_heartbeat_time = None;
        }
        status
    };
    strip(reported) != strip(desired)
}

/// The spec of the node's Lease in `kube-node-lease`, renewed at `now` (held by the node).
pub fn lease_spec(settings: &Settings, now: DateTime<Utc>) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(settings.node_name.clone()),
        lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
        renew_time: k8s_openapi::jiff::Timestamp::from_microsecond(now.timestamp_micros())
            .ok()
            .map(MicroTime),
        ..LeaseSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::RawSettings;

    fn settings(simulated: bool) -> Settings {
        RawSettings {
            cluster_id: Some("c-1".into()),
            region: Some("cn-beijing".into()),
            vswitches: Some("vsw-a".into()),
            pod_ip: Some("10.0.0.5".into()),
            has_access_key: !simulated,
            simulator: simulated,
            ..RawSettings::default()
        }
        .validate()
        .unwrap()
    }

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn node_carries_reference_labels_taint_and_simulation_marks() {
        let (meta, spec) = node_metadata(&settings(false), "0.1.0");
        let labels = meta.labels.unwrap();
        assert_eq!(labels["type"], "virtual-kubelet");
        assert_eq!(labels["kubernetes.io/role"], "agent");
        assert_eq!(labels["topology.kubernetes.io/region"], "cn-beijing");
        assert!(!labels.contains_key(SIMULATED_LABEL));
        assert!(meta.annotations.is_none());
        let taint = &spec.taints.unwrap()[0];
        assert_eq!(
            (taint.key.as_str(), taint.effect.as_str()),
            ("virtual-kubelet.io/provider", "NoSchedule")
        );

        let (meta, _) = node_metadata(&settings(true), "0.1.0");
        assert_eq!(meta.labels.unwrap()[SIMULATED_LABEL], "true");
        assert!(meta.annotations.unwrap()[SIMULATED_ANNOTATION].contains("simulator"));
    }

    #[test]
    fn status_reports_capacity_address_port_and_readiness() {
        let status = node_status(&settings(false), &EciHealth::Reachable, "0.1.0", &[], t(0));
        assert_eq!(
            status.capacity.as_ref().unwrap()["pods"],
            Quantity("10000".into())
        );
        assert_eq!(status.addresses.as_ref().unwrap()[0].address, "10.0.0.5");
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        let ready = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );

        let down = node_status(
            &settings(false),
            &EciHealth::CredentialsRejected("SignatureDoesNotMatch".into()),
            "0.1.0",
            &[],
            t(0),
        );
        let ready = &down.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("ECICredentialsRejected"))
        );
        assert!(
            ready
                .message
                .as_ref()
                .unwrap()
                .contains("SignatureDoesNotMatch")
        );
    }

    #[test]
    fn status_is_posted_on_change_or_every_minute() {
        let s = settings(false);
        let first = node_status(&s, &EciHealth::Reachable, "0.1.0", &[], t(0));
        assert!(status_due(None, &first, None, t(0)));
        let later = node_status(
            &s,
            &EciHealth::Reachable,
            "0.1.0",
            first.conditions.as_deref().unwrap(),
            t(30),
        );
        assert_eq!(
            later.conditions.as_ref().unwrap()[0].last_transition_time,
            first.conditions.as_ref().unwrap()[0].last_transition_time,
            "unchanged conditions keep their transition time"
        );
        assert!(
            !status_due(Some(&first), &later, Some(t(0)), t(30)),
            "only heartbeat times moved"
        );
        assert!(
            status_due(Some(&first), &later, Some(t(0)), t(60)),
            "a minute passed"
        );
        let down = node_status(
            &s,
            &EciHealth::Unreachable("timeout".into()),
            "0.1.0",
            first.conditions.as_deref().unwrap(),
            t(30),
        );
        assert!(
            status_due(Some(&first), &down, Some(t(0)), t(30)),
            "readiness changed"
        );
    }

    #[test]
    fn lease_is_held_by_the_node_for_forty_seconds() {
        let lease = lease_spec(&settings(false), t(5));
        assert_eq!(lease.holder_identity.as_deref(), Some("virtual-kubelet"));
        assert_eq!(lease.lease_duration_seconds, Some(40));
        assert!(lease.renew_time.is_some());
    }
}
