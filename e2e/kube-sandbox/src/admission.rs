//! Mutating admission webhooks, called like the API server calls them: on each CREATE whose
//! resource matches a MutatingWebhookConfiguration's rules and selectors, in order of the
//! configurations' names, over HTTPS verified against the webhook's `caBundle`, within its
//! `timeoutSeconds`, honouring its `failurePolicy`. JSON patches are applied; warnings go
//! back to the client as `Warning` headers.
//!
//! Only `clientConfig.url` is reachable here (the sandbox has no service network); a webhook
//! naming a service fails like an unreachable one. Each webhook is called once
//! (`reinvocationPolicy: IfNeeded` is not honoured) and pods the sandbox's own controllers
//! create are not admitted: these go straight to the store.

use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::resources::ResourceType;
use crate::selector::Selector;
use crate::store::ApiError;

pub const GROUP: &str = "admissionregistration.k8s.io";
/// The API server's default `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One webhook to call, with what the request needs.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub name: String,
    pub url: Option<String>,
    pub ca_bundle: Option<String>,
    pub timeout: Duration,
    pub fail_open: bool,
}

/// What the webhooks made of an object.
#[derive(Debug, Default)]
pub struct Admitted {
    pub object: Value,
    pub warnings: Vec<String>,
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn rule_matches(rule: &Value, rt: &ResourceType, operation: &str) -> bool {
    let any_of = |field: &str, wanted: &str| {
        strings(&rule[field])
            .iter()
            .any(|v| *v == "*" || *v == wanted)
    };
    let scope = rule["scope"].as_str().unwrap_or("*");
    let scope_ok = match scope {
        "Namespaced" => rt.namespaced,
        "Cluster" => !rt.namespaced,
        _ => true,
    };
    any_of("operations", operation)
        && any_of("apiGroups", &rt.group)
        && any_of("apiVersions", &rt.version)
        && any_of("resources", &rt.plural)
        && scope_ok
}

/// The webhooks of `configurations` that want this CREATE, in the API server's order.
pub fn matching(
    configurations: &[Value],
    rt: &ResourceType,
    object: &Value,
    namespace: Option<&Value>,
) -> Vec<Webhook> {
    let mut configurations: Vec<&Value> = configurations.iter().collect();
    configurations.sort_by_key(|c| {
        c["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    let selected = |selector: &Value, object: &Value| {
        selector.is_null() || Selector::from_label_selector(selector).matches_labels(object)
    };
    configurations
        .into_iter()
        .flat_map(|c| c["webhooks"].as_array().into_iter().flatten())
        .filter(|w| {
            strings(&w["admissionReviewVersions"]).contains(&"v1")
                && w["rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| rule_matches(r, rt, "CREATE"))
                && namespace.is_none_or(|ns| selected(&w["namespaceSelector"], ns))
                && selected(&w["objectSelector"], object)
        })
        .map(|w| Webhook {
            name: w["name"].as_str().unwrap_or_default().to_string(),
            url: w["clientConfig"]["url"].as_str().map(str::to_string),
            ca_bundle: w["clientConfig"]["caBundle"].as_str().map(str::to_string),
            timeout: w["timeoutSeconds"]
                .as_u64()
                .map_or(DEFAULT_TIMEOUT, Duration::from_secs),
            fail_open: w["failurePolicy"] == "Ignore",
        })
        .collect()
}

/// The AdmissionReview the API server sends for creating `object`.
pub fn review(rt: &ResourceType, namespace: Option<&str>, object: &Value, dry_run: bool) -> Value {
    let gvk = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
    let gvr = json!({"group": rt.group, "version": rt.version, "resource": rt.plural});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uuid::Uuid::new_v4().to_string(),
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": object["metadata"]["name"].as_str().unwrap_or_default(),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "sandbox-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": dry_run,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        }
    })
}

/// The patch of a response: Go's `[]byte`, which reads base64 or an array of bytes.
fn patch_bytes(patch: &Value) -> Result<Vec<u8>, String> {
    match patch {
        Value::String(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("the patch is not base64: {e}")),
        bytes => serde_json::from_value(bytes.clone())
            .map_err(|e| format!("the patch is neither base64 nor bytes: {e}")),
    }
}

fn client(webhook: &Webhook) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(bundle) = &webhook.ca_bundle {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(bundle)
            .map_err(|e| format!("caBundle is not base64: {e}"))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("caBundle is not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("caBundle holds an unusable certificate: {e}"))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(webhook.timeout)
        .build()
        .map_err(|e| e.to_string())
}

/// The webhook's response to `review`, or why there is none.
async fn call(webhook: &Webhook, review: &Value) -> Result<Value, String> {
    let url = webhook
        .url
        .as_deref()
        .ok_or("the sandbox reaches webhooks by clientConfig.url only")?;
    let response = client(webhook)?
        .post(url)
        .header("content-type", "application/json")
        .body(review.to_string())
        .send()
        .await
        .map_err(|e| format!("Post {url:?}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("the webhook answered {status}: {text}"));
    }
    let answer: Value =
        serde_json::from_str(&text).map_err(|e| format!("the response is not JSON: {e}"))?;
    let response = answer["response"].clone();
    if response["uid"] != review["request"]["uid"] {
        return Err("the response's uid is not the request's".into());
    }
    Ok(response)
}

/// Runs `webhooks` over `object` in turn. Failures of `Ignore` webhooks are skipped; others
/// refuse the create, as do denials.
pub async fn admit(
    webhooks: &[Webhook],
    rt: &ResourceType,
    namespace: Option<&str>,
    mut object: Value,
    dry_run: bool,
) -> Result<Admitted, ApiError> {
    let mut warnings = Vec::new();
    for webhook in webhooks {
        let review = review(rt, namespace, &object, dry_run);
        let response = match call(webhook, &review).await {
            Ok(response) => response,
            Err(_) if webhook.fail_open => continue,
            Err(error) => {
                return Err(ApiError::new(
                    500,
                    "InternalError",
                    format!(
                        "Internal error occurred: failed calling webhook \"{}\": {error}",
                        webhook.name
                    ),
                ));
            }
        };
        warnings.extend(
            strings(&response["warnings"])
                .into_iter()
                .map(str::to_string),
        );
        if response["allowed"] != true {
            let message = response["status"]["message"].as_str().unwrap_or_default();
            let code = response["status"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| *c >= 400)
                .unwrap_or(400);
            return Err(ApiError::new(
                code,
                "Forbidden",
                format!(
                    "admission webhook \"{}\" denied the request: {message}",
                    webhook.name
                ),
            ));
        }
        if response["patch"].is_null() {
            continue;
        }
        let patched = patch_bytes(&response["patch"])
            .and_then(|bytes| {
                serde_json::from_slice::<json_patch::Patch>(&bytes)
                    .map_err(|e| format!("the patch is not a JSON patch: {e}"))
            })
            .and_then(|patch| {
                let mut patched = object.clone();
                json_patch::patch(&mut patched, &patch)
                    .map(|()| patched)
                    .map_err(|e| format!("the patch does not apply: {e}"))
            });
        match patched {
            Ok(patched) => object = patched,
            Err(_) if webhook.fail_open => {}
            Err(error) => {
                return Err(ApiError::new(
                    500,
                    "InternalError",
                    format!(
                        "Internal error occurred: webhook \"{}\": {error}",
                        webhook.name
                    ),
                ));
            }
        }
    }
    Ok(Admitted { object, warnings })
}

/// A `Warning` header value (RFC 7234 warn-code 299, as the API server sends).
pub fn warning_header(text: &str) -> String {
    let escaped: String = text
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("299 - \"{escaped}\"")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pods() -> ResourceType {
        crate::resources::builtin()
            .into_iter()
            .find(|t| t.plural == "pods")
            .unwrap()
    }

    fn configuration(name: &str, webhooks: Value) -> Value {
        json!({"metadata": {"name": name}, "webhooks": webhooks})
    }

    fn webhook(name: &str, extra: Value) -> Value {
        let mut hook = json!({
            "name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        });
        for (k, v) in extra.as_object().unwrap() {
            hook[k] = v.clone();
        }
        hook
    }

    fn names(hooks: &[Webhook]) -> Vec<&str> {
        hooks.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn webhooks_match_by_rule_and_selectors_in_configuration_name_order() {
        let configurations = [
            configuration(
                "b",
                json!([
                    webhook("b.first", json!({})),
                    webhook(
                        "b.namespaced",
                        json!({
                "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}})
                    )
                ]),
            ),
            configuration(
                "a",
                json!([webhook(
                    "a.labelled",
                    json!({"objectSelector": {"matchLabels": {"app": "web"}}})
                )]),
            ),
            configuration(
                "c",
                json!([
                    webhook(
                        "c.updates",
                        json!({"rules": [{"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]})
                    ),
                    webhook(
                        "c.deployments",
                        json!({"rules": [{"operations": ["*"], "apiGroups": ["apps"], "apiVersions": ["*"], "resources": ["deployments"]}]})
                    ),
                    webhook("c.v1beta1", json!({"admissionReviewVersions": ["v1beta1"]})),
                    webhook(
                        "c.wildcard",
                        json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}], "failurePolicy": "Ignore", "timeoutSeconds": 2})
                    ),
                ]),
            ),
        ];
        let web = json!({"metadata": {"labels": {"app": "web"}}});
        let default = json!({"metadata": {"name": "default", "labels": {"kubernetes.io/metadata.name": "default"}}});
        let system = json!({"metadata": {"name": "kube-system", "labels": {"kubernetes.io/metadata.name": "kube-system"}}});
        assert_eq!(
            names(&matching(&configurations, &pods(), &web, Some(&default))),
            ["a.labelled", "b.first", "b.namespaced", "c.wildcard"]
        );
        let hooks = matching(&configurations, &pods(), &json!({}), Some(&system));
        assert_eq!(names(&hooks), ["b.first", "c.wildcard"]);
        assert!(!hooks[0].fail_open && hooks[0].timeout == DEFAULT_TIMEOUT);
        assert!(hooks[1].fail_open && hooks[1].timeout == Duration::from_secs(2));
    }

    #[test]
    fn patches_read_as_go_reads_bytes_and_warnings_are_quoted() {
        let patch = br#"[{"op":"add","path":"/a","value":1}]"#;
        let base64 = json!(base64::engine::general_purpose::STANDARD.encode(patch));
        assert_eq!(patch_bytes(&base64).unwrap(), patch);
        assert_eq!(patch_bytes(&json!(patch.to_vec())).unwrap(), patch);
        assert!(patch_bytes(&json!({"op": "add"})).is_err());
        assert_eq!(
            warning_header("the \"pod\" asks\\for ECI\n"),
            r#"299 - "the \"pod\" asks\\for ECI""#
        );
    }
}
