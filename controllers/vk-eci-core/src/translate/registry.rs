//! `imagePullSecrets` → ECI ImageRegistryCredential (server, user, password).

use base64::Engine as _;
use eci_types::wire::ImageRegistryCredential;
use k8s_openapi::api::core::v1::PodSpec;
use serde::Deserialize;

use super::References;

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DockerAuth {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
}

fn credentials_of(server: &str, auth: DockerAuth) -> Option<ImageRegistryCredential> {
    let (user_name, password) = match (auth.username, auth.password) {
        (Some(user), Some(password)) => (user, password),
        _ => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.auth?.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, password) = text.split_once(':')?;
            (user.to_string(), password.to_string())
        }
    };
    let server = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .to_string();
    Some(ImageRegistryCredential {
        server,
        user_name,
        password,
    })
}

/// Registry logins from the pod's pull secrets. A missing or unreadable secret is a warning
/// (the pull may still work anonymously), as it is for a kubelet.
pub(super) fn credentials(
    spec: &PodSpec,
    refs: &References,
    warnings: &mut Vec<String>,
) -> Vec<ImageRegistryCredential> {
    let mut out = Vec::new();
    for reference in spec.image_pull_secrets.iter().flatten() {
        let Some(secret) = refs.secrets.get(&reference.name) else {
            warnings.push(format!(
                "image pull secret {} not found; images are pulled without it",
                reference.name
            ));
            continue;
        };
        let data = secret.data.clone().unwrap_or_default();
        let config = data
            .get(".dockerconfigjson")
            .and_then(|raw| serde_json::from_slice::<DockerConfig>(&raw.0).ok())
            .map(|c| c.auths)
            .or_else(|| {
                data.get(".dockercfg")
                    .and_then(|raw| serde_json::from_slice(&raw.0).ok())
            });
        let Some(auths) = config else {
            warnings.push(format!(
                "image pull secret {} holds no .dockerconfigjson or .dockercfg; it is ignored",
                reference.name
            ));
            continue;
        };
        for (server, auth) in auths {
            match credentials_of(&server, auth) {
                Some(credential) if !out.iter().any(|c: &ImageRegistryCredential| c.server == credential.server) => {
                    out.push(credential)
                }
                Some(_) => {}
                None => warnings.push(format!(
                    "image pull secret {}: the entry for {server} has no usable username and password",
                    reference.name
                )),
            }
        }
    }
    out
}
