use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use serde_json::{Value, json};

use super::*;
use crate::annotations;

fn pod(spec: Value) -> Pod {
    pod_with(json!({}), spec)
}

fn pod_with(metadata: Value, spec: Value) -> Pod {
    let mut meta = json!({
        "name": "web-7d9f.abc",
        "namespace": "shop",
        "uid": "0f0e0d0c-0b0a-4908-8706-050403020100",
        "labels": {"app": "web"},
    });
    if let (Some(meta), Some(extra)) = (meta.as_object_mut(), metadata.as_object()) {
        meta.extend(extra.clone());
    }
    serde_json::from_value(json!({"metadata": meta, "spec": spec})).unwrap()
}

fn simple() -> Value {
    json!({"containers": [{"name": "app", "image": "nginx:1.27"}]})
}

fn node() -> NodeConfig {
    NodeConfig {
        cluster_id: "c-test".into(),
        node_name: "virtual-kubelet".into(),
        vswitches: vec!["vsw-node".into()],
        security_group: Some("sg-node".into()),
        resource_group: None,
        cluster_dns: None,
        cluster_domain: "cluster.local".into(),
    }
}

fn refs() -> References {
    let mut refs = References::default();
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"},
        "data": {"LEVEL": "debug", "app.conf": "port=8080\n", "bad key": "x"},
    }))
    .unwrap();
    refs.config_maps.insert("settings".into(), config_map);
    let mut data = BTreeMap::new();
    data.insert("password".to_string(), ByteString(b"s3cret".to_vec()));
    let docker = json!({"auths": {"https://registry.example.com": {
        "auth": base64::engine::general_purpose::STANDARD.encode("robot:hunter2")
    }}});
    data.insert(
        ".dockerconfigjson".to_string(),
        ByteString(docker.to_string().into_bytes()),
    );
    refs.secrets.insert(
        "creds".into(),
        Secret {
            data: Some(data),
            ..Secret::default()
        },
    );
    refs
}

fn ok(pod: &Pod) -> Translation {
    translate(pod, &node(), None, &refs()).unwrap()
}

fn refused(pod: &Pod) -> Refusal {
    translate(pod, &node(), None, &refs()).unwrap_err()
}

#[test]
fn minimal_pod_is_named_tagged_and_idempotent() {
    let t = ok(&pod(simple()));
    let r = &t.request;
    assert_eq!(r.container_group_name, "shop-web-7d9f-abc");
    assert_eq!(
        r.client_token.as_deref(),
        Some("0f0e0d0c-0b0a-4908-8706-050403020100")
    );
    let tag = |k: &str| r.tag.iter().find(|t| t.key == k).map(|t| t.value.clone());
    assert_eq!(tag(tags::CLUSTER_ID).as_deref(), Some("c-test"));
    assert_eq!(tag(tags::NAMESPACE).as_deref(), Some("shop"));
    assert_eq!(tag(tags::NAME).as_deref(), Some("web-7d9f.abc"));
    assert_eq!(
        tag(tags::UID).as_deref(),
        Some("0f0e0d0c-0b0a-4908-8706-050403020100")
    );
    assert_eq!(r.v_switch_id.as_ref().unwrap().0, ["vsw-node"]);
    assert_eq!(r.security_group_id.as_deref(), Some("sg-node"));
    assert_eq!(r.container[0].image, "nginx:1.27");
    assert_eq!(
        (r.cpu, r.memory),
        (None, None),
        "no sizes stated: ECI's default applies"
    );
    assert_eq!(r.dns_policy.as_deref(), Some("Default"));
    assert_eq!(r.host_name.as_deref(), Some("web-7d9f.abc"));
    assert!(t.warnings.is_empty());
}

#[test]
fn group_names_fit_eci_rules() {
    assert_eq!(
        container_group_name("default", "My_Pod.1", "u"),
        "default-my-pod-1"
    );
    let long = container_group_name("ns", &"a".repeat(200), "ABCDEF12-3456");
    assert!(long.len() <= 128 && long.ends_with("-abcdef12"), "{long}");
    assert_eq!(container_group_name("-", "-", "1234abcd"), "pod-1234abcd");
}

#[test]
fn sizes_round_up_to_a_sold_spec_and_init_containers_count_by_maximum() {
    let t = ok(&pod(json!({"containers": [
        {"name": "a", "image": "i", "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}},
        {"name": "b", "image": "i", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}},
    ]})));
    assert_eq!((t.request.cpu, t.request.memory), (Some(2.0), Some(4.0)));
    assert_eq!(
        (t.request.container[0].cpu, t.request.container[0].memory),
        (Some(0.5), Some(1.0))
    );
    let t = ok(&pod(json!({
        "containers": [{"name": "a", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "2Gi"}}}],
        "initContainers": [{"name": "migrate", "image": "i", "resources": {"limits": {"cpu": "4", "memory": "8Gi"}}}],
    })));
    assert_eq!((t.request.cpu, t.request.memory), (Some(4.0), Some(8.0)));
    let huge = refused(&pod(
        json!({"containers": [{"name": "a", "image": "i", "resources": {"limits": {"cpu": "100"}}}]}),
    ));
    assert_eq!(huge.reason, "ResourcesTooLarge");
}

#[test]
fn use_specs_become_instance_types_instead_of_sizes() {
    let t = ok(&pod_with(
        json!({"annotations": {annotations::USE_SPECS: "ecs.c6.large,2-4Gi"}}),
        json!({"containers": [{"name": "a", "image": "i", "resources": {"limits": {"cpu": "1"}}}]}),
    ));
    assert_eq!(
        t.request.instance_type.as_ref().unwrap().0,
        ["ecs.c6.large", "2-4Gi"]
    );
    assert_eq!((t.request.cpu, t.request.memory), (None, None));
}

#[test]
fn env_is_resolved_from_every_kind_of_source() {
    let t = ok(&pod(json!({"containers": [{
        "name": "app", "image": "i",
        "resources": {"limits": {"memory": "512Mi"}},
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "env": [
            {"name": "PLAIN", "value": "b c+d"},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MEM_MB", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "OPTIONAL", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": true}}},
        ],
    }]})));
    let env: BTreeMap<String, (Option<String>, Option<String>)> = t.request.container[0]
        .environment_var
        .iter()
        .map(|e| {
            (
                e.key.clone(),
                (
                    e.value.clone(),
                    e.field_ref.as_ref().map(|f| f.field_path.clone()),
                ),
            )
        })
        .collect();
    let value = |k: &str| env[k].0.clone().unwrap();
    assert_eq!(value("PLAIN"), "b c+d");
    assert_eq!(value("LEVEL"), "debug");
    assert_eq!(value("PASSWORD"), "s3cret");
    assert_eq!(value("POD_NAME"), "web-7d9f.abc");
    assert_eq!(value("APP"), "web");
    assert_eq!(env["POD_IP"], (None, Some("status.podIP".into())));
    assert_eq!(value("MEM_MB"), "512");
    assert_eq!(value("CFG_LEVEL"), "debug");
    assert_eq!(value("CFG_app.conf"), "port=8080\n");
    assert!(!env.contains_key("OPTIONAL"));
    assert!(
        t.warnings.iter().any(|w| w.contains("CFG_bad key")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn missing_references_are_transient_refusals() {
    let refusal = refused(&pod(json!({"containers": [{"name": "a", "image": "i",
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]}]})));
    assert!(refusal.is_transient());
    assert!(refusal.message.contains("shop/nope"), "{}", refusal.message);
    let refusal = refused(&pod(json!({
        "containers": [{"name": "a", "image": "i"}],
        "volumes": [{"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
    })));
    assert!(refusal.is_transient());
}

#[test]
fn probes_hooks_and_ports_translate() {
    let t = ok(&pod(json!({"containers": [{
        "name": "app", "image": "i",
        "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "initialDelaySeconds": 3, "successThreshold": 2},
        "livenessProbe": {"tcpSocket": {"port": 8080}, "failureThreshold": 5},
        "startupProbe": {"exec": {"command": ["true"]}},
        "lifecycle": {
            "preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 5"]}},
            "postStart": {"httpGet": {"path": "/warm", "port": 8080}},
        },
    }]})));
    let c = &t.request.container[0];
    let readiness = c.readiness_probe.as_ref().unwrap();
    assert_eq!(readiness.http_get.as_ref().unwrap().port, Some(8080));
    assert_eq!(readiness.initial_delay_seconds, Some(3));
    assert_eq!(readiness.success_threshold, Some(1));
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .tcp_socket
            .as_ref()
            .unwrap()
            .port,
        Some(8080)
    );
    assert_eq!(
        c.lifecycle_pre_stop_handler_exec,
        ["/bin/sh", "-c", "sleep 5"]
    );
    assert_eq!(c.lifecycle_post_start_handler_http_get_port, Some(8080));
    assert_eq!(c.port[1].protocol.as_deref(), Some("UDP"));
    assert!(t.warnings.iter().any(|w| w.contains("startupProbe")));

    let grpc = refused(&pod(
        json!({"containers": [{"name": "a", "image": "i", "livenessProbe": {"grpc": {"port": 9090}}}]}),
    ));
    assert_eq!(grpc.reason, "UnsupportedProbe");
    let unknown_port = refused(&pod(
        json!({"containers": [{"name": "a", "image": "i", "readinessProbe": {"httpGet": {"port": "web"}}}]}),
    ));
    assert_eq!(unknown_port.reason, "InvalidProbe");
    let sctp = refused(&pod(
        json!({"containers": [{"name": "a", "image": "i", "ports": [{"containerPort": 1, "protocol": "SCTP"}]}]}),
    ));
    assert_eq!(sctp.reason, "UnsupportedPort");
}

#[test]
fn security_context_is_checked_and_inherited() {
    let t = ok(&pod(json!({
        "securityContext": {"runAsUser": 1000, "runAsNonRoot": true, "sysctls": [{"name": "net.ipv4.ping_group_range", "value": "0 1"}]},
        "containers": [{"name": "a", "image": "i", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}, "readOnlyRootFilesystem": true}}],
    })));
    let c = &t.request.container[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(1000));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.capability.as_ref().unwrap().add, ["NET_ADMIN"]);
    assert_eq!(c.security_context_run_as_non_root, Some(true));
    assert_eq!(
        t.request.security_context.as_ref().unwrap().sysctl[0].name,
        "net.ipv4.ping_group_range"
    );

    let privileged = refused(&pod(
        json!({"containers": [{"name": "a", "image": "i", "securityContext": {"privileged": true}}]}),
    ));
    assert_eq!(
        (privileged.kind, privileged.reason),
        (RefusalKind::Unsupported, "PrivilegedNotSupported")
    );
    let cap = refused(&pod(
        json!({"containers": [{"name": "a", "image": "i", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}),
    ));
    assert_eq!(cap.reason, "CapabilityNotSupported");
}

#[test]
fn volumes_become_eci_volumes_with_inlined_content() {
    let t = translate(
        &pod(json!({
            "containers": [{"name": "a", "image": "i", "volumeMounts": [{"name": "conf", "mountPath": "/etc/app", "readOnly": true}]}],
            "volumes": [
                {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
                {"name": "share", "nfs": {"server": "nas.example.com", "path": "/data", "readOnly": true}},
                {"name": "conf", "configMap": {"name": "settings", "items": [{"key": "app.conf", "path": "app.conf", "mode": 420}], "defaultMode": 292}},
                {"name": "secret", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "pw"}]}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "token", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"configMap": {"name": "settings", "items": [{"key": "LEVEL", "path": "level"}]}},
                ]}},
                {"name": "disk", "flexVolume": {"driver": "alicloud/disk", "options": {"volumeId": "d-1"}}},
            ],
        })),
        &node(),
        None,
        &References {
            service_account_token: Some("eyJhbGciOi.token".into()),
            ..refs()
        },
    )
    .unwrap();
    let volume = |name: &str| {
        t.request
            .volume
            .iter()
            .find(|v| v.name == name)
            .unwrap()
            .clone()
    };
    let decode = |text: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
        )
        .unwrap()
    };
    let scratch = volume("scratch");
    assert_eq!(scratch.r#type, "EmptyDirVolume");
    assert_eq!(
        scratch.empty_dir_volume.unwrap().medium.as_deref(),
        Some("Memory")
    );
    assert_eq!(
        volume("share").nfs_volume.unwrap().server,
        "nas.example.com"
    );
    let conf = volume("conf").config_file_volume.unwrap();
    assert_eq!(conf.config_file_to_path[0].path, "app.conf");
    assert_eq!(decode(&conf.config_file_to_path[0].content), "port=8080\n");
    assert_eq!(conf.config_file_to_path[0].mode, Some(644));
    assert_eq!(conf.default_mode, Some(444));
    assert_eq!(
        decode(
            &volume("secret")
                .config_file_volume
                .unwrap()
                .config_file_to_path[0]
                .content
        ),
        "s3cret"
    );
    assert_eq!(
        decode(
            &volume("info")
                .config_file_volume
                .unwrap()
                .config_file_to_path[0]
                .content
        ),
        "app=\"web\"\n"
    );
    let token = volume("token").config_file_volume.unwrap();
    assert_eq!(
        decode(&token.config_file_to_path[0].content),
        "eyJhbGciOi.token"
    );
    assert_eq!(decode(&token.config_file_to_path[1].content), "debug");
    assert_eq!(
        volume("disk").flex_volume.unwrap().options.as_deref(),
        Some(r#"{"volumeId":"d-1"}"#)
    );
    assert_eq!(t.request.container[0].volume_mount[0].read_only, Some(true));
}

#[test]
fn unsupported_volumes_are_refused_with_a_way_forward() {
    let host = refused(&pod(
        json!({"containers": [{"name": "a", "image": "i"}], "volumes": [{"name": "h", "hostPath": {"path": "/var/log"}}]}),
    ));
    assert_eq!(host.reason, "HostPathNotSupported");
    assert!(host.message.contains("emptyDir"));
    let pvc = refused(&pod(
        json!({"containers": [{"name": "a", "image": "i"}], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]}),
    ));
    assert_eq!(pvc.reason, "UnsupportedVolume");
    assert!(pvc.message.contains("persistentVolumeClaim"));
    let mut big = refs();
    big.config_maps.insert(
        "big".into(),
        serde_json::from_value(json!({"data": {"blob": "x".repeat(40 * 1024)}})).unwrap(),
    );
    let too_big = translate(
        &pod(json!({"containers": [{"name": "a", "image": "i"}], "volumes": [{"name": "b", "configMap": {"name": "big"}}]})),
        &node(),
        None,
        &big,
    )
    .unwrap_err();
    assert_eq!(too_big.reason, "ConfigTooLarge");
}

#[test]
fn pods_eci_cannot_run_are_refused() {
    let host_network = refused(&pod(
        json!({"hostNetwork": true, "containers": [{"name": "a", "image": "i"}]}),
    ));
    assert_eq!(host_network.reason, "HostNetworkNotSupported");
    let daemon = refused(&pod_with(
        json!({"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u", "controller": true}]}),
        simple(),
    ));
    assert_eq!(daemon.reason, "DaemonSetPodNotSupported");
    let bad = refused(&pod_with(
        json!({"annotations": {annotations::EIP_BANDWIDTH: "lots"}}),
        simple(),
    ));
    assert_eq!(
        (bad.kind, bad.reason),
        (RefusalKind::InvalidAnnotation, "InvalidAnnotation")
    );
    assert!(bad.message.contains(annotations::EIP_BANDWIDTH));
    assert!(!bad.is_transient());
}

#[test]
fn annotations_map_onto_the_request() {
    let t = translate(
        &pod_with(
            json!({"annotations": {
                annotations::VSWITCH: "vsw-a,vsw-b",
                annotations::SCHEDULE_STRATEGY: "VSwitchRandom",
                annotations::SPOT_STRATEGY: "SpotAsPriceGo",
                annotations::WITH_EIP: "true",
                annotations::EIP_BANDWIDTH: "10",
                annotations::EIP_ISP: "BGP_PRO",
                annotations::ENABLE_IPV6: "true",
                annotations::INGRESS_BANDWIDTH: "40M",
                annotations::EXTRA_EPHEMERAL_STORAGE: "50Gi",
                annotations::IMAGE_CACHE: "true",
                annotations::ACR_INSTANCE_ID: "cri-1",
                annotations::RAM_ROLE_NAME: "reader",
                annotations::CPU_OPTION_CORE: "2",
                annotations::NTP_SERVER: "100.100.5.1",
                annotations::EIP_CHARGE_TYPE: "PayByTraffic",
            }}),
            simple(),
        ),
        &node(),
        Some(&NetworkProfile {
            vswitches: vec!["vsw-profile".into()],
            security_group: Some("sg-profile".into()),
            resource_group: Some("rg-1".into()),
        }),
        &refs(),
    )
    .unwrap();
    let r = &t.request;
    assert_eq!(
        r.v_switch_id.as_ref().unwrap().0,
        ["vsw-a", "vsw-b"],
        "the pod's annotation wins"
    );
    assert_eq!(
        r.security_group_id.as_deref(),
        Some("sg-profile"),
        "then the profile"
    );
    assert_eq!(r.resource_group_id.as_deref(), Some("rg-1"));
    assert_eq!(r.schedule_strategy.as_deref(), Some("VSwitchRandom"));
    assert_eq!(r.spot_strategy.as_deref(), Some("SpotAsPriceGo"));
    assert_eq!(
        (r.auto_create_eip, r.eip_bandwidth, r.eip_isp.as_deref()),
        (Some(true), Some(10), Some("BGP_PRO"))
    );
    assert_eq!(r.ipv6_address_count, Some(1));
    assert_eq!(r.ingress_bandwidth, Some(40_000_000));
    assert_eq!(r.ephemeral_storage, Some(50));
    assert_eq!(r.auto_match_image_cache, Some(true));
    assert_eq!(r.acr_registry_info[0].instance_id, "cri-1");
    assert_eq!(r.ram_role_name.as_deref(), Some("reader"));
    assert_eq!(r.cpu_options_core, Some(2));
    assert_eq!(r.ntp_server, ["100.100.5.1"]);
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains(annotations::EIP_CHARGE_TYPE))
    );
}

#[test]
fn cluster_first_dns_uses_the_cluster_resolver() {
    let mut with_dns = node();
    with_dns.cluster_dns = Some("172.21.0.10".into());
    let t = translate(
        &pod(json!({
            "containers": [{"name": "a", "image": "i"}],
            "dnsConfig": {"searches": ["corp.example"], "options": [{"name": "ndots", "value": "2"}]},
            "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db"]}],
        })),
        &with_dns,
        None,
        &refs(),
    )
    .unwrap();
    let dns = t.request.dns_config.unwrap();
    assert_eq!(t.request.dns_policy.as_deref(), Some("None"));
    assert_eq!(dns.name_server, ["172.21.0.10"]);
    assert_eq!(
        dns.search,
        [
            "shop.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "corp.example"
        ]
    );
    assert_eq!(dns.option.len(), 1);
    assert_eq!(dns.option[0].value.as_deref(), Some("2"));
    assert_eq!(t.request.host_aliases[0].hostname, ["db"]);
}

#[test]
fn image_pull_secrets_become_registry_credentials() {
    let t = ok(&pod(json!({
        "containers": [{"name": "a", "image": "registry.example.com/app:1"}],
        "imagePullSecrets": [{"name": "creds"}, {"name": "gone"}],
    })));
    let credential = &t.request.image_registry_credential[0];
    assert_eq!(
        (
            credential.server.as_str(),
            credential.user_name.as_str(),
            credential.password.as_str()
        ),
        ("registry.example.com", "robot", "hunter2")
    );
    assert!(t.warnings.iter().any(|w| w.contains("gone")));
    assert!(
        !format!("{:?}", t.request).contains("hunter2"),
        "Debug output must not show registry passwords"
    );
}

#[test]
fn references_lists_what_to_fetch() {
    let referenced = references(&pod(json!({
        "containers": [{"name": "a", "image": "i",
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}}],
            "envFrom": [{"configMapRef": {"name": "c1"}}]}],
        "volumes": [
            {"name": "v", "configMap": {"name": "c2"}},
            {"name": "p", "projected": {"sources": [{"secret": {"name": "s2"}}, {"serviceAccountToken": {"path": "t"}}]}},
        ],
        "imagePullSecrets": [{"name": "pull"}],
    })));
    assert_eq!(referenced.config_maps, ["c1", "c2"]);
    assert_eq!(referenced.secrets, ["pull", "s1", "s2"]);
    assert!(referenced.service_account_token);
}
