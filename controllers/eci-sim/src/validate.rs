//! Parameter rules of CreateContainerGroup that the real gateway enforces up front.

use std::collections::HashSet;

use eci_types::wire::{CreateContainerGroupRequest, volume_type};

use crate::config::SimConfig;
use crate::error::ApiError;

const MAX_CONTAINERS: usize = 20;
const MAX_VOLUMES: usize = 20;
const MAX_TAGS: usize = 20;
const MAX_VSWITCHES: usize = 10;

pub fn region(region: &str, config: &SimConfig) -> Result<(), ApiError> {
    if region.is_empty() {
        return Err(ApiError::missing("RegionId"));
    }
    if region != config.region {
        return Err(ApiError::new(
            400,
            "InvalidRegionId",
            format!(
                "The specified RegionId {region} is not served by this endpoint ({}).",
                config.region
            ),
        ));
    }
    Ok(())
}

/// `ContainerGroupName`: 2–128 characters, lower-case letters, digits and `-`, not at either end.
pub fn group_name(name: &str) -> Result<(), ApiError> {
    let ok = (2..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "ContainerGroupName",
            "It must be 2 to 128 characters of lower-case letters, digits and hyphens, and must not start or end with a hyphen.",
        ))
    }
}

pub fn create(request: &CreateContainerGroupRequest, config: &SimConfig) -> Result<(), ApiError> {
    region(&request.region_id, config)?;
    group_name(&request.container_group_name)?;
    if request.container.is_empty() {
        return Err(ApiError::missing("Container"));
    }
    if request.container.len() > MAX_CONTAINERS {
        return Err(ApiError::invalid(
            "Container",
            format!("At most {MAX_CONTAINERS} containers."),
        ));
    }
    let mut names = HashSet::new();
    for (prefix, container) in request
        .container
        .iter()
        .map(|c| ("Container", c))
        .chain(request.init_container.iter().map(|c| ("InitContainer", c)))
    {
        if container.name.is_empty() {
            return Err(ApiError::missing(&format!("{prefix}.Name")));
        }
        if container.image.is_empty() || container.image.len() > 255 {
            return Err(ApiError::missing(&format!("{prefix}.Image")));
        }
        if !names.insert(container.name.as_str()) {
            return Err(ApiError::new(
                400,
                "InvalidParameter.DuplicatedName",
                format!("The container name {} is duplicated.", container.name),
            ));
        }
        if container.command.len() > 20 {
            return Err(ApiError::invalid(
                &format!("{prefix}.Command"),
                "At most 20 entries.",
            ));
        }
        for env in &container.environment_var {
            let valid_key = !env.key.is_empty()
                && env.key.len() <= 128
                && env
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
                && !env.key.as_bytes()[0].is_ascii_digit();
            if !valid_key {
                return Err(ApiError::invalid(
                    &format!("{prefix}.EnvironmentVar.Key"),
                    format!("`{}` is not a valid variable name.", env.key),
                ));
            }
            if let Some(field_ref) = &env.field_ref
                && field_ref.field_path != "status.podIP"
            {
                return Err(ApiError::invalid(
                    &format!("{prefix}.EnvironmentVar.FieldRef.FieldPath"),
                    "Only status.podIP is supported.",
                ));
            }
        }
        for port in &container.port {
            if !(1..=65535).contains(&port.port) {
                return Err(ApiError::invalid(
                    &format!("{prefix}.Port.Port"),
                    "1 to 65535.",
                ));
            }
            if let Some(protocol) = &port.protocol
                && !matches!(protocol.as_str(), "TCP" | "UDP")
            {
                return Err(ApiError::invalid(
                    &format!("{prefix}.Port.Protocol"),
                    "TCP or UDP.",
                ));
            }
        }
        if let Some(capability) = container
            .security_context
            .as_ref()
            .and_then(|s| s.capability.as_ref())
        {
            for cap in &capability.add {
                if !matches!(
                    cap.as_str(),
                    "NET_ADMIN" | "NET_RAW" | "SYS_PTRACE" | "SYS_ADMIN" | "NET_BIND_SERVICE"
                ) {
                    return Err(ApiError::invalid(
                        &format!("{prefix}.SecurityContext.Capability.Add"),
                        format!("Capability {cap} is not supported."),
                    ));
                }
            }
        }
        if container.security_context_privileged == Some(true) {
            return Err(ApiError::invalid(
                &format!("{prefix}.SecurityContextPrivileged"),
                "Privileged containers are not supported.",
            ));
        }
    }
    if request.volume.len() > MAX_VOLUMES {
        return Err(ApiError::invalid(
            "Volume",
            format!("At most {MAX_VOLUMES} volumes."),
        ));
    }
    let mut volumes = HashSet::new();
    for volume in &request.volume {
        if !volumes.insert(volume.name.as_str()) {
            return Err(ApiError::new(
                400,
                "InvalidParameter.DuplicatedVolumeName",
                format!("The volume name {} is duplicated.", volume.name),
            ));
        }
        if !volume_type::ALL.contains(&volume.r#type.as_str()) {
            return Err(ApiError::invalid(
                "Volume.Type",
                format!("Unknown volume type {}.", volume.r#type),
            ));
        }
        if volume.r#type == volume_type::HOST_PATH {
            return Err(ApiError::new(
                403,
                "OperationDenied.HostPathVolume",
                "HostPathVolume is only available to allow-listed accounts.",
            ));
        }
        if volume.r#type == volume_type::NFS && volume.nfs_volume.is_none() {
            return Err(ApiError::missing("Volume.NFSVolume.Server"));
        }
        if let Some(config_file) = &volume.config_file_volume {
            let mut total = 0;
            for file in &config_file.config_file_to_path {
                let decoded = base64_len(&file.content).ok_or_else(|| {
                    ApiError::invalid(
                        "Volume.ConfigFileVolume.ConfigFileToPath.Content",
                        "It must be Base64.",
                    )
                })?;
                if decoded > 32 * 1024 {
                    return Err(ApiError::invalid(
                        "Volume.ConfigFileVolume.ConfigFileToPath.Content",
                        "Each file must be at most 32 KB.",
                    ));
                }
                total += decoded;
            }
            if total > 60 * 1024 {
                return Err(ApiError::invalid(
                    "Volume.ConfigFileVolume",
                    "All files together must be at most 60 KB.",
                ));
            }
        }
    }
    for container in request.container.iter().chain(&request.init_container) {
        for mount in &container.volume_mount {
            if !volumes.contains(mount.name.as_str()) {
                return Err(ApiError::invalid(
                    "VolumeMount.Name",
                    format!("Volume {} is not defined.", mount.name),
                ));
            }
        }
    }
    if request.tag.len() > MAX_TAGS {
        return Err(ApiError::invalid(
            "Tag",
            format!("At most {MAX_TAGS} tags."),
        ));
    }
    let mut tag_keys = HashSet::new();
    for tag in &request.tag {
        let bad_key = tag.key.is_empty()
            || tag.key.len() > 64
            || tag.key.starts_with("aliyun")
            || tag.key.starts_with("acs:")
            || tag.key.contains("http://")
            || tag.key.contains("https://");
        if bad_key || !tag_keys.insert(tag.key.as_str()) {
            return Err(ApiError::invalid(
                "Tag.Key",
                format!("`{}` is not a valid tag key.", tag.key),
            ));
        }
        if tag.value.len() > 128 || tag.value.starts_with("acs:") {
            return Err(ApiError::invalid(
                "Tag.Value",
                "At most 128 characters, not starting with acs:.",
            ));
        }
    }
    if let Some(token) = &request.client_token
        && (token.len() > 64 || !token.is_ascii())
    {
        return Err(ApiError::invalid(
            "ClientToken",
            "At most 64 ASCII characters.",
        ));
    }
    if request
        .v_switch_id
        .as_ref()
        .is_some_and(|v| v.0.len() > MAX_VSWITCHES)
    {
        return Err(ApiError::invalid(
            "VSwitchId",
            format!("At most {MAX_VSWITCHES} vSwitches."),
        ));
    }
    if let Some(policy) = &request.restart_policy
        && !matches!(policy.as_str(), "Always" | "Never" | "OnFailure")
    {
        return Err(ApiError::invalid(
            "RestartPolicy",
            "Always, Never or OnFailure.",
        ));
    }
    match request.spot_strategy.as_deref() {
        None | Some("NoSpot") | Some("SpotAsPriceGo") => {}
        Some("SpotWithPriceLimit") => {
            if request.spot_price_limit.is_none() {
                return Err(ApiError::missing("SpotPriceLimit"));
            }
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "SpotStrategy",
                format!("Unknown strategy {other}."),
            ));
        }
    }
    if let Some(policy) = &request.dns_policy
        && !matches!(policy.as_str(), "None" | "Default")
    {
        return Err(ApiError::invalid("DnsPolicy", "None or Default."));
    }
    if let Some(strategy) = &request.schedule_strategy
        && !matches!(strategy.as_str(), "VSwitchOrdered" | "VSwitchRandom")
    {
        return Err(ApiError::invalid(
            "ScheduleStrategy",
            "VSwitchOrdered or VSwitchRandom.",
        ));
    }
    if request
        .core_pattern
        .as_ref()
        .is_some_and(|p| p.starts_with('|'))
    {
        return Err(ApiError::invalid(
            "CorePattern",
            "It must not start with |.",
        ));
    }
    if request.ipv6_address_count.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(
            "Ipv6AddressCount",
            "Only 1 is supported.",
        ));
    }
    Ok(())
}

fn base64_len(content: &str) -> Option<usize> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(content)
        .ok()
        .map(|bytes| bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eci_types::wire::{Container, Volume};

    fn valid() -> CreateContainerGroupRequest {
        CreateContainerGroupRequest {
            region_id: "cn-hangzhou".into(),
            container_group_name: "web-1".into(),
            container: vec![Container {
                name: "c".into(),
                image: "nginx".into(),
                ..Container::default()
            }],
            ..CreateContainerGroupRequest::default()
        }
    }

    #[test]
    fn accepts_a_minimal_request() {
        assert_eq!(create(&valid(), &SimConfig::default()), Ok(()));
    }

    #[test]
    fn refuses_what_the_gateway_refuses() {
        let config = SimConfig::default();
        type Mutation = Box<dyn Fn(&mut CreateContainerGroupRequest)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|r| r.container_group_name = "-bad".into()),
                "InvalidParameter",
            ),
            (
                Box::new(|r| r.container_group_name = "Upper".into()),
                "InvalidParameter",
            ),
            (
                Box::new(|r| r.region_id = "cn-beijing".into()),
                "InvalidRegionId",
            ),
            (Box::new(|r| r.region_id.clear()), "MissingParameter"),
            (Box::new(|r| r.container.clear()), "MissingParameter"),
            (
                Box::new(|r| r.container.push(r.container[0].clone())),
                "InvalidParameter.DuplicatedName",
            ),
            (
                Box::new(|r| r.spot_strategy = Some("SpotWithPriceLimit".into())),
                "MissingParameter",
            ),
            (
                Box::new(|r| r.restart_policy = Some("Sometimes".into())),
                "InvalidParameter",
            ),
            (
                Box::new(|r| {
                    r.volume = vec![Volume {
                        name: "h".into(),
                        r#type: "HostPathVolume".into(),
                        ..Volume::default()
                    }]
                }),
                "OperationDenied.HostPathVolume",
            ),
            (
                Box::new(|r| {
                    r.container[0].volume_mount = vec![eci_types::wire::VolumeMount {
                        name: "missing".into(),
                        mount_path: "/x".into(),
                        ..Default::default()
                    }]
                }),
                "InvalidParameter",
            ),
            (
                Box::new(|r| r.container[0].security_context_privileged = Some(true)),
                "InvalidParameter",
            ),
            (
                Box::new(|r| r.tag = vec![eci_types::wire::Tag::new("aliyun-x", "v")]),
                "InvalidParameter",
            ),
        ];
        for (mutate, code) in cases {
            let mut request = valid();
            mutate(&mut request);
            let error = create(&request, &config).unwrap_err();
            assert_eq!(error.code, code, "{error:?}");
        }
    }
}
