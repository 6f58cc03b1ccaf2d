//! Volumes. ConfigMaps, Secrets, downward API and projected volumes become ECI
//! ConfigFileVolumes with their content inlined (Base64); hostPath and anything ECI cannot
//! mount is refused with a way forward.

use std::collections::BTreeMap;

use base64::Engine as _;
use eci_types::wire::{
    self, ConfigFileToPath, ConfigFileVolume, EmptyDirVolume, FlexVolume, NfsVolume, volume_type,
};
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, PodSpec, Volume};

use super::Refusal;
use super::containers::Scope;

/// ECI's ConfigFileVolume limits.
const MAX_FILE_BYTES: usize = 32 * 1024;
const MAX_VOLUME_BYTES: usize = 60 * 1024;

struct File {
    path: String,
    content: Vec<u8>,
    mode: Option<i32>,
}

/// Kubernetes modes are plain integers (420 = 0644); ECI wants the octal digits (644).
fn octal(mode: i32) -> i64 {
    format!("{mode:o}").parse().unwrap_or(644)
}

fn config_file_volume(
    name: &str,
    files: Vec<File>,
    default_mode: Option<i32>,
) -> Result<wire::Volume, Refusal> {
    let mut total = 0;
    let mut paths = Vec::new();
    for file in files {
        if file.content.len() > MAX_FILE_BYTES {
            return Err(Refusal::unsupported(
                "ConfigTooLarge",
                format!(
                    "volume {name}: file {} is {} bytes; ECI config files hold at most 32 KiB",
                    file.path,
                    file.content.len()
                ),
            ));
        }
        total += file.content.len();
        paths.push(ConfigFileToPath {
            path: file.path,
            content: base64::engine::general_purpose::STANDARD.encode(&file.content),
            mode: file.mode.map(octal),
        });
    }
    if total > MAX_VOLUME_BYTES {
        return Err(Refusal::unsupported(
            "ConfigTooLarge",
            format!(
                "volume {name}: its files total {total} bytes; ECI config volumes hold at most 60 KiB"
            ),
        ));
    }
    Ok(wire::Volume {
        name: name.to_string(),
        r#type: volume_type::CONFIG_FILE.into(),
        config_file_volume: Some(ConfigFileVolume {
            config_file_to_path: paths,
            default_mode: default_mode.map(octal),
        }),
        ..wire::Volume::default()
    })
}

/// Selects files from `data` (all keys, or `items`), as a kubelet would.
fn select(
    what: &str,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    prefix: &str,
) -> Result<Vec<File>, Refusal> {
    match items {
        None => Ok(data
            .into_iter()
            .map(|(key, content)| File {
                path: format!("{prefix}{key}"),
                content,
                mode: None,
            })
            .collect()),
        Some(items) => items
            .iter()
            .map(|item| {
                let content = data
                    .get(&item.key)
                    .cloned()
                    .ok_or_else(|| Refusal::missing(format!("{what} has no key {}", item.key)))?;
                Ok(File {
                    path: format!("{prefix}{}", item.path),
                    content,
                    mode: item.mode,
                })
            })
            .collect(),
    }
}

fn config_map_data(
    scope: &Scope<'_>,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Refusal> {
    match scope.refs.config_maps.get(name) {
        Some(cm) => {
            let mut data: BTreeMap<String, Vec<u8>> = cm
                .data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            data.extend(
                cm.binary_data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            Ok(Some(data))
        }
        None if optional => Ok(None),
        None => Err(Refusal::missing(format!(
            "ConfigMap {}/{name} not found",
            scope.namespace
        ))),
    }
}

fn secret_data(
    scope: &Scope<'_>,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Refusal> {
    match scope.refs.secrets.get(name) {
        Some(secret) => Ok(Some(
            secret
                .data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        )),
        None if optional => Ok(None),
        None => Err(Refusal::missing(format!(
            "Secret {}/{name} not found",
            scope.namespace
        ))),
    }
}

fn downward_files(
    scope: &Scope<'_>,
    spec: &PodSpec,
    volume: &str,
    items: &[DownwardAPIVolumeFile],
    warnings: &mut Vec<String>,
) -> Result<Vec<File>, Refusal> {
    let meta = &scope.pod.metadata;
    let render_map = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| {
                format!(
                    "{k}=\"{}\"\n",
                    v.replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n")
                )
            })
            .collect::<String>()
    };
    let mut files = Vec::new();
    for item in items {
        let content = if let Some(field) = &item.field_ref {
            match field.field_path.as_str() {
                "metadata.name" => meta.name.clone().unwrap_or_default(),
                "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
                "metadata.uid" => meta.uid.clone().unwrap_or_default(),
                "metadata.labels" => render_map(&meta.labels),
                "metadata.annotations" => render_map(&meta.annotations),
                path => {
                    let key = path
                        .strip_prefix("metadata.labels['")
                        .map(|k| (&meta.labels, k))
                        .or_else(|| {
                            path.strip_prefix("metadata.annotations['")
                                .map(|k| (&meta.annotations, k))
                        });
                    match key.and_then(|(map, k)| Some((map, k.strip_suffix("']")?))) {
                        Some((map, k)) => map
                            .as_ref()
                            .and_then(|m| m.get(k))
                            .cloned()
                            .unwrap_or_default(),
                        None => {
                            warnings.push(format!(
                                "volume {volume}: downward API field {path} is not available on ECI; {} is left out",
                                item.path
                            ));
                            continue;
                        }
                    }
                }
            }
        } else if let Some(resource) = &item.resource_field_ref {
            let container = spec
                .containers
                .iter()
                .find(|c| Some(&c.name) == resource.container_name.as_ref())
                .or_else(|| spec.containers.first());
            let (cpu, memory) = super::resource_totals(spec).unwrap_or((2.0, 4.0));
            let stated = container.and_then(|c| c.resources.as_ref()).and_then(|r| {
                let (kind, name) = resource.resource.split_once('.')?;
                let map = if kind == "requests" {
                    r.requests.as_ref()
                } else {
                    r.limits.as_ref().or(r.requests.as_ref())
                };
                map?.get(name).and_then(|q| crate::quantity::parse(&q.0))
            });
            let value = stated.unwrap_or(if resource.resource.ends_with("cpu") {
                cpu
            } else {
                memory * 1024.0 * 1024.0 * 1024.0
            });
            let divisor = resource
                .divisor
                .as_ref()
                .and_then(|d| crate::quantity::parse(&d.0))
                .filter(|d| *d > 0.0)
                .unwrap_or(1.0);
            format!("{}", (value / divisor).ceil() as i64)
        } else {
            continue;
        };
        files.push(File {
            path: item.path.clone(),
            content: content.into_bytes(),
            mode: item.mode,
        });
    }
    Ok(files)
}

fn kind_of(volume: &Volume) -> &'static str {
    let kinds: [(&'static str, bool); 18] = [
        (
            "persistentVolumeClaim",
            volume.persistent_volume_claim.is_some(),
        ),
        ("csi", volume.csi.is_some()),
        ("ephemeral", volume.ephemeral.is_some()),
        ("image", volume.image.is_some()),
        ("iscsi", volume.iscsi.is_some()),
        ("rbd", volume.rbd.is_some()),
        ("cephfs", volume.cephfs.is_some()),
        ("glusterfs", volume.glusterfs.is_some()),
        ("fc", volume.fc.is_some()),
        ("flocker", volume.flocker.is_some()),
        ("gitRepo", volume.git_repo.is_some()),
        (
            "awsElasticBlockStore",
            volume.aws_elastic_block_store.is_some(),
        ),
        ("gcePersistentDisk", volume.gce_persistent_disk.is_some()),
        ("azureDisk", volume.azure_disk.is_some()),
        ("azureFile", volume.azure_file.is_some()),
        ("portworxVolume", volume.portworx_volume.is_some()),
        ("quobyte", volume.quobyte.is_some()),
        ("storageos", volume.storageos.is_some()),
    ];
    kinds
        .iter()
        .find(|(_, present)| *present)
        .map_or("unknown", |(kind, _)| kind)
}

pub(super) fn volumes(
    scope: &Scope<'_>,
    spec: &PodSpec,
    warnings: &mut Vec<String>,
) -> Result<Vec<wire::Volume>, Refusal> {
    let mut out = Vec::new();
    for volume in spec.volumes.iter().flatten() {
        let name = volume.name.as_str();
        if volume.host_path.is_some() {
            return Err(Refusal::unsupported(
                "HostPathNotSupported",
                format!(
                    "volume {name} is a hostPath: ECI instances have no shared host; use emptyDir, NFS or a cloud disk"
                ),
            ));
        }
        if let Some(source) = &volume.empty_dir {
            out.push(wire::Volume {
                name: name.into(),
                r#type: volume_type::EMPTY_DIR.into(),
                empty_dir_volume: Some(EmptyDirVolume {
                    medium: source.medium.clone().filter(|m| m == "Memory"),
                    size_limit: source.size_limit.as_ref().map(|q| q.0.clone()),
                }),
                ..wire::Volume::default()
            });
        } else if let Some(source) = &volume.nfs {
            out.push(wire::Volume {
                name: name.into(),
                r#type: volume_type::NFS.into(),
                nfs_volume: Some(NfsVolume {
                    server: source.server.clone(),
                    path: source.path.clone(),
                    read_only: source.read_only,
                }),
                ..wire::Volume::default()
            });
        } else if let Some(source) = &volume.config_map {
            let data = config_map_data(scope, &source.name, source.optional == Some(true))?
                .unwrap_or_default();
            let files = select(
                &format!("ConfigMap {}", source.name),
                data,
                source.items.as_ref(),
                "",
            )?;
            out.push(config_file_volume(name, files, source.default_mode)?);
        } else if let Some(source) = &volume.secret {
            let secret_name = source.secret_name.clone().unwrap_or_default();
            let data = secret_data(scope, &secret_name, source.optional == Some(true))?
                .unwrap_or_default();
            let files = select(
                &format!("Secret {secret_name}"),
                data,
                source.items.as_ref(),
                "",
            )?;
            out.push(config_file_volume(name, files, source.default_mode)?);
        } else if let Some(source) = &volume.downward_api {
            let files = downward_files(
                scope,
                spec,
                name,
                source.items.as_deref().unwrap_or_default(),
                warnings,
            )?;
            out.push(config_file_volume(name, files, source.default_mode)?);
        } else if let Some(source) = &volume.projected {
            let mut files = Vec::new();
            for projection in source.sources.iter().flatten() {
                if let Some(cm) = &projection.config_map {
                    if let Some(data) = config_map_data(scope, &cm.name, cm.optional == Some(true))?
                    {
                        files.extend(select(
                            &format!("ConfigMap {}", cm.name),
                            data,
                            cm.items.as_ref(),
                            "",
                        )?);
                    }
                } else if let Some(secret) = &projection.secret {
                    if let Some(data) =
                        secret_data(scope, &secret.name, secret.optional == Some(true))?
                    {
                        files.extend(select(
                            &format!("Secret {}", secret.name),
                            data,
                            secret.items.as_ref(),
                            "",
                        )?);
                    }
                } else if let Some(downward) = &projection.downward_api {
                    files.extend(downward_files(
                        scope,
                        spec,
                        name,
                        downward.items.as_deref().unwrap_or_default(),
                        warnings,
                    )?);
                } else if let Some(token) = &projection.service_account_token {
                    let content = scope.refs.service_account_token.clone().ok_or_else(|| {
                        Refusal::missing(format!(
                            "volume {name}: no token issued yet for the pod's service account"
                        ))
                    })?;
                    files.push(File {
                        path: token.path.clone(),
                        content: content.into_bytes(),
                        mode: None,
                    });
                } else if projection.cluster_trust_bundle.is_some() {
                    warnings.push(format!("volume {name}: cluster trust bundles are not available on ECI and are left out"));
                }
            }
            out.push(config_file_volume(name, files, source.default_mode)?);
        } else if let Some(source) = &volume.flex_volume {
            if !source.driver.starts_with("alicloud/") {
                return Err(Refusal::unsupported(
                    "UnsupportedVolume",
                    format!(
                        "volume {name}: FlexVolume driver {} is not available on ECI (alicloud/disk, alicloud/nas, alicloud/oss are)",
                        source.driver
                    ),
                ));
            }
            out.push(wire::Volume {
                name: name.into(),
                r#type: volume_type::FLEX.into(),
                flex_volume: Some(FlexVolume {
                    driver: source.driver.clone(),
                    fs_type: source.fs_type.clone(),
                    options: source
                        .options
                        .as_ref()
                        .and_then(|o| serde_json::to_string(o).ok()),
                }),
                ..wire::Volume::default()
            });
        } else {
            return Err(Refusal::unsupported(
                "UnsupportedVolume",
                format!(
                    "volume {name} ({}) is not supported on ECI by vk-eci; use emptyDir, NFS, configMap, secret, projected, downwardAPI or an alicloud FlexVolume",
                    kind_of(volume)
                ),
            ));
        }
    }
    Ok(out)
}
