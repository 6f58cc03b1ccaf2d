//! vk-eci beside a real Kubernetes control plane (`hack/control-plane.sh`), installed the way
//! the Helm chart installs it except for its Deployment (there is no kubelet to run the pod):
//! the chart's ServiceAccount, ClusterRole, Roles and bindings are applied, and `vk-eci run`
//! gets a kubeconfig holding a token of that ServiceAccount, so the real authorizer judges
//! every request it makes against the chart's RBAC.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

use crate::stack::{StackError, apply, repository, wait};

/// The kinds of the chart's objects that stand in for its installation here: identity and
/// rights, not the workload.
const IDENTITY_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// How long the ServiceAccount token lasts: longer than any suite run.
const TOKEN_SECONDS: i64 = 4 * 3600;

/// The chart, rendered by Helm's own Go SDK (`hack/helm-render.py`, with the interpreter in
/// `VK_ECI_SDK_PYTHON`, else `python3`), as its objects, CRDs from `crds/` first.
pub fn render_chart(
    values_yaml: &str,
    release: &str,
    namespace: &str,
) -> Result<Vec<Value>, StackError> {
    let python = std::env::var("VK_ECI_SDK_PYTHON").unwrap_or_else(|_| "python3".into());
    let values = std::env::temp_dir().join(format!("vk-eci-e2e-{release}-values.yaml"));
    std::fs::write(&values, values_yaml).map_err(|source| StackError::Io {
        what: format!("cannot write {}", values.display()),
        source,
    })?;
    let root = repository();
    let output = Command::new(&python)
        .arg(root.join("hack/helm-render.py"))
        .arg(root.join("charts/vk-eci"))
        .arg(&values)
        .args([release, namespace])
        .output()
        .map_err(|source| StackError::Io {
            what: format!("cannot run {python} hack/helm-render.py (hack/sdk-venv.sh installs it)"),
            source,
        })?;
    if !output.status.success() {
        return Err(StackError::Manifest(format!(
            "hack/helm-render.py: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let rendered: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| StackError::Manifest(format!("hack/helm-render.py output: {e}")))?;
    let manifests = rendered["manifests"]
        .as_object()
        .ok_or_else(|| StackError::Manifest("hack/helm-render.py gave no manifests".into()))?;
    let mut objects = crds()?;
    for (path, manifest) in manifests {
        let text = manifest.as_str().unwrap_or_default();
        if path.ends_with("NOTES.txt") || text.trim().is_empty() {
            continue;
        }
        let documents: Vec<Value> = serde_saphyr::from_multiple(text)
            .map_err(|e| StackError::Manifest(format!("{path}: {e}")))?;
        objects.extend(documents.into_iter().filter(|d| !d.is_null()));
    }
    Ok(objects)
}

fn crds() -> Result<Vec<Value>, StackError> {
    let dir = repository().join("crds");
    let entries = std::fs::read_dir(&dir).map_err(|source| StackError::Io {
        what: format!("cannot read {}", dir.display()),
        source,
    })?;
    let mut crds = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| StackError::Io {
                what: format!("cannot read {}", dir.display()),
                source,
            })?
            .path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).map_err(|source| StackError::Io {
                what: format!("cannot read {}", path.display()),
                source,
            })?;
            crds.push(
                serde_saphyr::from_str(&text)
                    .map_err(|e| StackError::Manifest(format!("{}: {e}", path.display())))?,
            );
        }
    }
    Ok(crds)
}

/// A kube-rs client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<Client, StackError> {
    let config = Kubeconfig::read_from(kubeconfig)
        .map_err(|e| StackError::NotReady(format!("kubeconfig {}: {e}", kubeconfig.display())))?;
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(|e| StackError::NotReady(format!("kubeconfig {}: {e}", kubeconfig.display())))?;
    Ok(Client::try_from(config)?)
}

/// One installation of vk-eci on a shared control plane: its own namespace (which is also the
/// release's and the workloads'), virtual node and ServiceAccount, so installations side by
/// side do not see each other's pods, Leases or rights.
pub struct Installation {
    pub namespace: String,
    pub node: String,
    /// A kubeconfig authenticating as the chart's ServiceAccount (a bearer token).
    pub operator_kubeconfig: String,
}

impl Installation {
    /// Installs vk-eci's CRDs and the chart's identity and RBAC (simulator mode, node and
    /// release `name`, plus the values YAML `chart_values`) with the admin `client`, and mints
    /// a token for its ServiceAccount.
    pub async fn create(
        client: &Client,
        admin_kubeconfig: &Path,
        name: &str,
        chart_values: &str,
    ) -> Result<Self, StackError> {
        let namespace = name.to_string();
        let node = name.to_string();
        let values = format!(
            "simulator: true\nnodeName: {node}\neci: {{clusterId: e2e, region: cn-hangzhou}}\n{chart_values}\n"
        );
        let namespace_object = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace}});
        apply(client, &namespace_object, &namespace).await?;
        let mut service_account = None;
        for object in render_chart(&values, name, &namespace)? {
            let kind = object["kind"].as_str().unwrap_or_default();
            if kind == "CustomResourceDefinition" || IDENTITY_KINDS.contains(&kind) {
                apply(client, &object, &namespace).await?;
            }
            if kind == "ServiceAccount" {
                service_account = object["metadata"]["name"].as_str().map(str::to_string);
            }
        }
        let service_account = service_account
            .ok_or_else(|| StackError::Manifest("the chart renders no ServiceAccount".into()))?;
        // Pods need their namespace's default ServiceAccount, which a controller creates.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
        wait(
            "the namespace's default ServiceAccount",
            Duration::from_secs(60),
            || async { accounts.get_opt("default").await.ok().flatten() },
        )
        .await?;
        let token = accounts
            .create_token_request(
                &service_account,
                &PostParams::default(),
                &TokenRequest {
                    spec: TokenRequestSpec {
                        expiration_seconds: Some(TOKEN_SECONDS),
                        ..TokenRequestSpec::default()
                    },
                    ..TokenRequest::default()
                },
            )
            .await?
            .status
            .map(|s| s.token)
            .ok_or_else(|| StackError::NotReady("a TokenRequest answered no token".into()))?;
        let operator_kubeconfig = token_kubeconfig(admin_kubeconfig, &token)?;
        wait_for_crds(client).await?;
        Ok(Self {
            namespace,
            node,
            operator_kubeconfig,
        })
    }
}

/// The admin kubeconfig's server and CA, with `token` as the only credential.
fn token_kubeconfig(admin_kubeconfig: &Path, token: &str) -> Result<String, StackError> {
    let admin = Kubeconfig::read_from(admin_kubeconfig).map_err(|e| {
        StackError::NotReady(format!("kubeconfig {}: {e}", admin_kubeconfig.display()))
    })?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| {
            StackError::NotReady(format!("{} names no cluster", admin_kubeconfig.display()))
        })?;
    let server = cluster.server.clone().unwrap_or_default();
    let ca = cluster
        .certificate_authority_data
        .clone()
        .unwrap_or_default();
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: vk-eci\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: vk-eci}}\ncurrent-context: e2e\n"
    ))
}

/// A CRD is served a moment after it is created (`Established`); until then its resources 404.
async fn wait_for_crds(client: &Client) -> Result<(), StackError> {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for name in [
        "spotrotationpolicies.spot.vk-eci.io",
        "spotrotations.spot.vk-eci.io",
    ] {
        wait(
            &format!("the CRD {name} to be Established"),
            Duration::from_secs(60),
            || async {
                let crd = crds.get_opt(name).await.ok().flatten()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await?;
    }
    Ok(())
}
