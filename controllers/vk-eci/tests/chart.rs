//! The Helm chart, rendered and linted by Helm's own Go SDK (helm-python-sdk; no helm binary):
//! its defaults and the simulator values render what we promise, the manifests apply to the
//! sandbox, and its RBAC grants every request the operator makes in a scenario that walks
//! through all controllers (in that namespace, on that object), and nothing it never makes.
//!
//! Needs the SDK (`hack/sdk-venv.sh`, `VK_ECI_SDK_PYTHON`); skips without it, except under CI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{NODE, World, condition, eventually};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use vk_eci_core::annotations::INSTANCE_ID;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The interpreter with helm-python-sdk, or `None` (outside CI) to skip.
fn python() -> Option<String> {
    let python = std::env::var("VK_ECI_SDK_PYTHON").unwrap_or_else(|_| "python3".into());
    let importable = Command::new(&python)
        .args(["-c", "import helm_python"])
        .status()
        .is_ok_and(|s| s.success());
    if importable {
        return Some(python);
    }
    let message = format!(
        "helm-python-sdk is not importable by `{python}`: run hack/sdk-venv.sh and set VK_ECI_SDK_PYTHON"
    );
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("skipped: {message}");
    None
}

/// Lint report and rendered objects, or Helm's error text.
fn render(python: &str, values: &str) -> Result<(Value, Vec<Value>), String> {
    // Tests render in parallel: every call gets its own file.
    static RENDERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let file = std::env::temp_dir().join(format!(
        "vk-eci-values-{}-{}.yaml",
        std::process::id(),
        RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&file, values).unwrap();
    let output = Command::new(python)
        .arg(root().join("hack/helm-render.py"))
        .arg(root().join("charts/vk-eci"))
        .arg(&file)
        .args(["vk-eci", "vk-eci"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let rendered: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut objects = Vec::new();
    for (path, manifest) in rendered["manifests"].as_object().unwrap() {
        if path.ends_with("NOTES.txt") || manifest.as_str().unwrap().trim().is_empty() {
            continue;
        }
        let docs: Vec<Value> = serde_saphyr::from_multiple(manifest.as_str().unwrap()).unwrap();
        objects.extend(docs.into_iter().filter(|d| !d.is_null()));
    }
    Ok((rendered["lint"].clone(), objects))
}

const PRODUCTION: &str = "eci:\n  clusterId: c123\n  region: cn-beijing\n  vSwitch: vsw-a,vsw-b\n  accessKeyId: LTAI-x\n  accessKeySecret: secret-x\n";

fn kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn names_of(objects: &[Value], of_kind: &str) -> Vec<String> {
    let mut names: Vec<String> = kind(objects, of_kind)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn env_names(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn env_value<'a>(deployment: &'a Value, name: &str) -> Option<&'a str> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

#[test]
fn the_chart_lints_and_renders_for_production_and_for_the_simulator() {
    let Some(python) = python() else { return };
    let (lint, objects) = render(&python, PRODUCTION).unwrap();
    let problems: Vec<&Value> = lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap_or(0) >= 2)
        .collect();
    assert!(problems.is_empty(), "helm lint: {problems:?}");
    let deployment = kind(&objects, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["resources"]["requests"]["memory"], "112Mi");
    assert_eq!(container["resources"]["limits"]["memory"], "168Mi");
    assert!(env_names(deployment).contains(&"ECI_ACCESS_KEY".to_string()));
    assert!(!env_names(deployment).contains(&"ECI_SIMULATOR".to_string()));
    assert_eq!(accesskey_secrets(&objects).len(), 1);
    assert!(names_of(&objects, "Secret").contains(&"vk-eci-webhook-tls".to_string()));
    assert_eq!(kind(&objects, "PodDisruptionBudget").len(), 1);
    assert_eq!(
        names_of(&objects, "Service"),
        ["vk-eci-metrics", "vk-eci-webhook"]
    );
    assert!(kind(&objects, "ServiceMonitor").is_empty());
    for role in kind(&objects, "ClusterRole")
        .into_iter()
        .chain(kind(&objects, "Role"))
    {
        for rule in role["rules"].as_array().unwrap() {
            assert!(
                !rule.to_string().contains("\"*\""),
                "no wildcards in {rule}"
            );
        }
    }

    let simulator =
        std::fs::read_to_string(root().join("charts/vk-eci/values-simulator.yaml")).unwrap();
    let (_, objects) = render(&python, &simulator).unwrap();
    let deployment = kind(&objects, "Deployment")[0];
    assert!(!env_names(deployment).contains(&"ECI_ACCESS_KEY".to_string()));
    assert_eq!(env_value(deployment, "ECI_SIMULATOR"), Some("true"));
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert!(
        accesskey_secrets(&objects).is_empty(),
        "no AccessKey, no AccessKey Secret"
    );
    assert!(
        kind(&objects, "PodDisruptionBudget").is_empty(),
        "minAvailable 1 of 1 replica would block every drain"
    );

    let refused = render(&python, "eci:\n  clusterId: c1\n  region: cn-beijing\n").unwrap_err();
    assert!(refused.contains("simulator: true"), "{refused}");
    let refused = render(
        &python,
        &format!("{simulator}  existingSecret: vk-eci-accesskey\n"),
    )
    .unwrap_err();
    assert!(
        refused.contains("simulator: true") && refused.contains("AccessKey"),
        "{refused}"
    );
    let refused = render(&python, "eci:\n  region: Beijing\n").unwrap_err();
    assert!(
        refused.contains("region"),
        "the schema names the value: {refused}"
    );
}

fn accesskey_secrets(objects: &[Value]) -> Vec<&Value> {
    kind(objects, "Secret")
        .into_iter()
        .filter(|s| s["metadata"]["name"] == "vk-eci-accesskey")
        .collect()
}

fn base64_field(secret: &Value, key: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(secret["data"][key].as_str().unwrap())
        .unwrap()
}

#[test]
fn the_kubelet_api_is_served_securely_by_default() {
    let Some(python) = python() else { return };
    let (_, objects) = render(&python, PRODUCTION).unwrap();
    let deployment = kind(&objects, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "kubelet" && p["containerPort"] == 10250)
    );
    assert_eq!(
        env_value(deployment, "VK_ECI_KUBELET_CA_CERT"),
        Some("/etc/vk-eci/kubelet-tls/tls.crt")
    );
    assert_eq!(
        env_value(deployment, "VK_ECI_KUBELET_CLIENT_CA"),
        Some("/etc/vk-eci/kubelet-client-ca/ca.crt")
    );
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["configMap"]["name"] == "kube-root-ca.crt")
    );

    // Helm's generated CA is one vk-eci can issue its serving certificate from.
    let secrets = kind(&objects, "Secret");
    let ca = secrets
        .iter()
        .find(|s| s["metadata"]["name"] == "vk-eci-kubelet-ca")
        .expect("the generated kubelet CA");
    assert_eq!(
        ca["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let dir = std::env::temp_dir().join(format!("vk-eci-chart-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.crt"), base64_field(ca, "tls.crt")).unwrap();
    std::fs::write(dir.join("ca.key"), base64_field(ca, "tls.key")).unwrap();
    let issued = vk_eci::tls::ServingCert::issued_by(
        &dir.join("ca.crt"),
        &dir.join("ca.key"),
        "system:node:virtual-kubelet",
        Some("system:nodes"),
        &["10.0.0.7".into()],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(issued.is_ok(), "{:?}", issued.err());

    // The reviews, and nothing else in their groups.
    let role = kind(&objects, "ClusterRole")[0];
    let review_rules: Vec<&Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["apiGroups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g == "authentication.k8s.io" || g == "authorization.k8s.io")
        })
        .collect();
    assert_eq!(review_rules.len(), 2, "{review_rules:?}");
    for rule in review_rules {
        assert_eq!(rule["verbs"], json!(["create"]));
    }

    let (_, managed) = render(
        &python,
        &format!(
            "{PRODUCTION}kubelet:\n  tls:\n    mode: certManager\n    certManager:\n      issuerRef: {{name: cluster-ca}}\n"
        ),
    )
    .unwrap();
    let certificate = kind(&managed, "Certificate")[0];
    assert_eq!(certificate["spec"]["isCA"], true);
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "cluster-ca");
    assert_eq!(certificate["spec"]["secretName"], "vk-eci-kubelet-ca");

    let refused = render(
        &python,
        &format!("{PRODUCTION}kubelet:\n  tls:\n    mode: existingSecret\n"),
    )
    .unwrap_err();
    assert!(refused.contains("kubelet.tls.existingSecret"), "{refused}");
    let (_, own) = render(
        &python,
        &format!(
            "{PRODUCTION}kubelet:\n  tls:\n    mode: existingSecret\n    existingSecret: my-tls\n"
        ),
    )
    .unwrap();
    let deployment = kind(&own, "Deployment")[0];
    assert_eq!(
        env_value(deployment, "VK_ECI_KUBELET_CERT"),
        Some("/etc/vk-eci/kubelet-tls/tls.crt")
    );
    assert!(env_value(deployment, "VK_ECI_KUBELET_CA_CERT").is_none());
}

#[test]
fn cluster_signed_certificates_get_request_rights_and_approval_only_when_asked() {
    let Some(python) = python() else { return };
    let csr_rights = |granted: &BTreeSet<Grant>| -> BTreeSet<String> {
        grants_on(granted, "certificatesigningrequests")
            .iter()
            .map(|g| g.verb.clone())
            .collect()
    };
    let (_, default) = render(&python, PRODUCTION).unwrap();
    let granted = grants(&default);
    assert!(csr_rights(&granted).is_empty(), "no CSR rights by default");
    assert!(grants_on(&granted, "signers").is_empty());

    let (_, requesting) = render(
        &python,
        &format!("{PRODUCTION}kubelet:\n  tls:\n    mode: clusterSigned\n"),
    )
    .unwrap();
    let deployment = kind(&requesting, "Deployment")[0];
    assert_eq!(env_value(deployment, "VK_ECI_KUBELET_CSR"), Some("true"));
    assert!(env_value(deployment, "VK_ECI_KUBELET_CSR_APPROVE").is_none());
    assert!(env_value(deployment, "VK_ECI_KUBELET_CA_CERT").is_none());
    assert!(
        !names_of(&requesting, "Secret")
            .iter()
            .any(|n| n.ends_with("kubelet-ca")),
        "no generated CA in clusterSigned mode"
    );
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(!volumes.contains("kubelet-tls"), "{volumes}");
    let granted = grants(&requesting);
    assert_eq!(
        csr_rights(&granted),
        ["create", "get", "list", "watch"].map(String::from).into()
    );
    assert!(grants_on(&granted, "certificatesigningrequests/approval").is_empty());
    assert!(grants_on(&granted, "signers").is_empty());

    let (_, approving) = render(
        &python,
        &format!(
            "{PRODUCTION}kubelet:\n  tls:\n    mode: clusterSigned\n    clusterSigned: {{approve: true}}\n"
        ),
    )
    .unwrap();
    let deployment = kind(&approving, "Deployment")[0];
    assert_eq!(
        env_value(deployment, "VK_ECI_KUBELET_CSR_APPROVE"),
        Some("true")
    );
    let granted = grants(&approving);
    let signers = grants_on(&granted, "signers");
    assert_eq!(signers.len(), 1, "{signers:?}");
    assert_eq!(signers[0].verb, "approve");
    assert_eq!(
        signers[0].names,
        ["kubernetes.io/kubelet-serving".to_string()].into()
    );
    assert!(!grants_on(&granted, "certificatesigningrequests/approval").is_empty());
}

#[test]
fn simulator_mode_runs_one_replica_unless_the_simulator_is_shared() {
    let Some(python) = python() else { return };
    let simulator =
        std::fs::read_to_string(root().join("charts/vk-eci/values-simulator.yaml")).unwrap();
    let (_, objects) = render(&python, &format!("{simulator}replicaCount: 3\n")).unwrap();
    assert_eq!(kind(&objects, "Deployment")[0]["spec"]["replicas"], 1);
    assert!(kind(&objects, "PodDisruptionBudget").is_empty());

    // Replicas of an external simulator (eci.endpoint) share it: HA as configured.
    let (_, objects) = render(
        &python,
        &format!("{simulator}  endpoint: http://eci-sim:18080\nreplicaCount: 2\n"),
    )
    .unwrap();
    let deployment = kind(&objects, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(env_value(deployment, "ECI_SIMULATOR"), Some("true"));
    assert_eq!(kind(&objects, "PodDisruptionBudget").len(), 1);
}

fn pem_der(base64_pem: &Value) -> rustls::pki_types::CertificateDer<'static> {
    use base64::Engine as _;
    use rustls::pki_types::pem::PemObject;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(base64_pem.as_str().unwrap())
        .unwrap();
    rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap()
}

#[test]
fn the_webhook_fails_open_skips_the_system_namespaces_and_its_ca_verifies_the_service() {
    let Some(python) = python() else { return };
    let (_, objects) = render(&python, PRODUCTION).unwrap();
    let configuration = kind(&objects, "MutatingWebhookConfiguration")[0];
    assert!(configuration["metadata"]["annotations"].is_null());
    let hook = &configuration["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert!(hook["timeoutSeconds"].as_i64().unwrap() <= 5);
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(
        hook["rules"],
        json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}])
    );
    assert_eq!(
        hook["namespaceSelector"]["matchExpressions"],
        json!([{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "vk-eci"]}])
    );
    let service = &hook["clientConfig"]["service"];
    assert_eq!(
        (&service["name"], &service["namespace"], &service["path"]),
        (
            &json!("vk-eci-webhook"),
            &json!("vk-eci"),
            &json!("/mutate-pods")
        )
    );
    let secret = kind(&objects, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "vk-eci-webhook-tls")
        .unwrap();
    assert_eq!(secret["data"]["ca.crt"], hook["clientConfig"]["caBundle"]);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pem_der(&hook["clientConfig"]["caBundle"]))
        .unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        vk_eci::tls::provider(),
    )
    .build()
    .unwrap();
    let served = pem_der(&secret["data"]["tls.crt"]);
    for name in ["vk-eci-webhook.vk-eci.svc", "vk-eci-webhook.vk-eci"] {
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &served,
            &[],
            &rustls::pki_types::ServerName::try_from(name).unwrap(),
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let deployment = kind(&objects, "Deployment")[0];
    assert_eq!(env_value(deployment, "WEBHOOK"), Some("true"));
    assert_eq!(
        env_value(deployment, "VK_ECI_WEBHOOK_CERT"),
        Some("/etc/vk-eci/webhook/tls.crt")
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "vk-eci-webhook-tls"),
        "{}",
        pod["volumes"]
    );
    assert!(
        grants(&objects)
            .iter()
            .any(|g| g.resource == "namespaces" && g.verb == "watch")
    );

    let (_, objects) = render(
        &python,
        &format!("{PRODUCTION}webhook:\n  excludeNamespaces: [monitoring, kube-system]\n  certManager:\n    enabled: true\n"),
    )
    .unwrap();
    let configuration = kind(&objects, "MutatingWebhookConfiguration")[0];
    assert_eq!(
        configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "vk-eci/vk-eci-webhook"
    );
    let hook = &configuration["webhooks"][0];
    assert!(
        hook["clientConfig"]["caBundle"].is_null(),
        "the CA injector fills it"
    );
    assert_eq!(
        hook["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["kube-system", "vk-eci", "monitoring"])
    );
    assert!(!names_of(&objects, "Secret").contains(&"vk-eci-webhook-tls".to_string()));
    let certificate = kind(&objects, "Certificate")[0];
    assert_eq!(certificate["spec"]["secretName"], "vk-eci-webhook-tls");
    assert_eq!(
        certificate["spec"]["issuerRef"],
        json!({"kind": "Issuer", "name": "vk-eci-webhook-selfsigned"})
    );
    assert_eq!(names_of(&objects, "Issuer"), ["vk-eci-webhook-selfsigned"]);
    let (_, objects) = render(
        &python,
        &format!("{PRODUCTION}webhook:\n  certManager:\n    enabled: true\n    issuerRef: {{kind: ClusterIssuer, name: corp-ca}}\n"),
    )
    .unwrap();
    assert!(kind(&objects, "Issuer").is_empty());
    assert_eq!(
        kind(&objects, "Certificate")[0]["spec"]["issuerRef"],
        json!({"kind": "ClusterIssuer", "name": "corp-ca"})
    );

    let (_, objects) = render(
        &python,
        &format!("{PRODUCTION}webhook:\n  enabled: false\n"),
    )
    .unwrap();
    assert!(kind(&objects, "MutatingWebhookConfiguration").is_empty());
    assert_eq!(env_value(kind(&objects, "Deployment")[0], "WEBHOOK"), None);
    assert!(
        !grants(&objects)
            .iter()
            .any(|g| g.resource == "namespaces" && g.verb == "watch")
    );
    let refused = render(
        &python,
        &format!("{PRODUCTION}webhook:\n  failurePolicy: Sometimes\n"),
    )
    .unwrap_err();
    assert!(refused.contains("failurePolicy"), "{refused}");
}

/// One rule for one verb on one resource, as RBAC evaluates it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    /// `None`: a ClusterRole's, for every namespace and cluster-scoped objects.
    namespace: Option<String>,
    group: String,
    resource: String,
    verb: String,
    /// The `resourceNames` it is limited to; empty: any name.
    names: BTreeSet<String>,
}

impl Grant {
    fn allows(&self, access: &kube_sandbox::Access) -> bool {
        self.group == access.group
            && self.resource == access.resource
            && self.verb == access.verb
            && (self.namespace.is_none() || self.namespace == access.namespace)
            && (self.names.is_empty()
                || access.name.as_ref().is_some_and(|n| self.names.contains(n)))
    }
}

/// What the rendered roles grant.
fn grants(objects: &[Value]) -> BTreeSet<Grant> {
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let mut granted = BTreeSet::new();
    for role in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        let namespace = role["metadata"]["namespace"].as_str().map(str::to_string);
        for rule in role["rules"].as_array().unwrap() {
            let names: BTreeSet<String> = strings(&rule["resourceNames"]).into_iter().collect();
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        granted.insert(Grant {
                            namespace: namespace.clone(),
                            group: group.clone(),
                            resource: resource.clone(),
                            verb,
                            names: names.clone(),
                        });
                    }
                }
            }
        }
    }
    granted
}

fn grants_on<'a>(granted: &'a BTreeSet<Grant>, resource: &str) -> Vec<&'a Grant> {
    granted.iter().filter(|g| g.resource == resource).collect()
}

#[test]
fn the_rbac_names_the_node_its_leases_and_the_profile() {
    let Some(python) = python() else { return };
    let (_, objects) = render(&python, &format!("nodeName: vk-b\n{PRODUCTION}")).unwrap();
    let granted = grants(&objects);
    let only = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    for grant in grants_on(&granted, "nodes")
        .into_iter()
        .chain(grants_on(&granted, "nodes/status"))
    {
        assert_eq!(grant.names, only(&["vk-b"]), "{grant:?}");
    }
    let leases = grants_on(&granted, "leases");
    assert!(!leases.is_empty());
    for grant in leases {
        match grant.namespace.as_deref() {
            Some("kube-node-lease") => assert_eq!(grant.names, only(&["vk-b"]), "{grant:?}"),
            // The election Lease's first create is a POST, which carries no name.
            Some("vk-eci") if grant.verb == "create" => assert!(grant.names.is_empty()),
            Some("vk-eci") => assert_eq!(grant.names, only(&["vk-eci-vk-b"]), "{grant:?}"),
            _ => panic!("a Lease grant outside kube-node-lease and the release: {grant:?}"),
        }
    }
    let profile: Vec<&Grant> = grants_on(&granted, "configmaps")
        .into_iter()
        .filter(|g| g.verb == "list" || g.verb == "watch")
        .collect();
    assert_eq!(profile.len(), 2);
    for grant in profile {
        assert_eq!(grant.namespace.as_deref(), Some("kube-system"));
        assert_eq!(grant.names, only(&["eci-profile"]), "{grant:?}");
    }
}

async fn apply(world: &World, objects: &[Value]) {
    for object in objects {
        vk_eci_e2e::stack::apply(&world.client, object, "default")
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rbac_grants_exactly_what_the_controllers_use() {
    let Some(python) = python() else { return };
    let (_, objects) = render(&python, PRODUCTION).unwrap();
    let world = World::new().await;
    Api::<Namespace>::all(world.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "vk-eci"}})).unwrap(),
        )
        .await
        .unwrap();
    apply(&world, &objects).await;
    // The operator's Lease lives in its own namespace, as the chart deploys it; the chart
    // enables the webhook.
    let operator = world.operator_with_webhook("replica-a", "vk-eci").await;
    walk_through_every_controller(&world).await;
    operator.stop().await;

    let granted = grants(&objects);
    let used: BTreeSet<kube_sandbox::Access> = world
        .sandbox
        .sandbox
        .accesses()
        .into_iter()
        .filter(|a| a.user_agent.starts_with("vk-eci/"))
        .collect();
    let missing: Vec<_> = used
        .iter()
        .filter(|access| !granted.iter().any(|g| g.allows(access)))
        .collect();
    assert!(
        missing.is_empty(),
        "requests the chart does not grant: {missing:#?}"
    );
    // Granted for code paths this walk does not take: creates that server-side apply may
    // need on a fresh cluster (an apply that creates is authorised as a patch here), repeated
    // events (their count is patched), and surges of ReplicaSets and StatefulSets.
    let unexercised_by_design: BTreeSet<(&str, &str, &str)> = [
        ("", "nodes", "create"),
        ("coordination.k8s.io", "leases", "create"),
        ("", "events", "patch"),
        ("events.k8s.io", "events", "patch"),
        ("apps", "replicasets/scale", "get"),
        ("apps", "replicasets/scale", "update"),
        ("apps", "statefulsets/scale", "get"),
        ("apps", "statefulsets/scale", "update"),
        // The kubelet API's reviews: this walk runs the operator without it (the e2e kubelet
        // tests send it authenticated requests).
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    ]
    .into_iter()
    .collect();
    let unused: Vec<_> = granted
        .iter()
        .filter(|grant| {
            !used.iter().any(|access| grant.allows(access))
                && !unexercised_by_design.contains(&(
                    grant.group.as_str(),
                    grant.resource.as_str(),
                    grant.verb.as_str(),
                ))
        })
        .collect();
    assert!(unused.is_empty(), "grants no controller used: {unused:#?}");
}

/// Pods with references and a profile selector, a spot surge with an HPA, an api-evict pod,
/// a deletion: every controller and every kind of request they make.
async fn walk_through_every_controller(world: &World) {
    let core = |kind: &str, body: Value| {
        let mut body = body;
        body["apiVersion"] = json!("v1");
        body["kind"] = json!(kind);
        body
    };
    let create = |object: Value| async move { apply(world, &[object]).await };
    create(core(
        "ServiceAccount",
        json!({"metadata": {"name": "default", "namespace": "default"}}),
    ))
    .await;
    create(core(
        "ConfigMap",
        json!({"metadata": {"name": "settings", "namespace": "default"}, "data": {"mode": "fast"}}),
    ))
    .await;
    create(core("Secret", json!({"metadata": {"name": "password", "namespace": "default"}, "stringData": {"value": "p"}}))).await;
    create(core("ConfigMap", json!({"metadata": {"name": "eci-profile", "namespace": "kube-system"},
        "data": {"selectors": "[{\"name\": \"all\", \"effect\": {\"annotations\": {\"k8s.aliyun.com/eci-spot-strategy\": \"SpotAsPriceGo\"}}}]"}}))).await;
    create(core("Pod", json!({"metadata": {"name": "refs", "namespace": "default"},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "nginx",
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
            "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "password", "key": "value"}}}],
            "volumeMounts": [{"name": "token", "mountPath": "/var/run/token"}]}],
            "volumes": [{"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]}}))).await;
    let refs = world
        .pod_until("refs", "Running", |p: Option<&Pod>| {
            p.and_then(|p| condition(p, "Ready"))
                .is_some_and(|c| c.status == "True")
        })
        .await;

    let template = |name: &str, annotations: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}, "annotations": annotations},
                    "spec": {"nodeSelector": {"type": "virtual-kubelet"},
                        "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
                        "terminationGracePeriodSeconds": 2,
                        "containers": [{"name": "app", "image": "nginx",
                            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]}}}})
    };
    create(template("surged", json!({}))).await;
    create(json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "surged", "namespace": "default"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "surged"},
                 "minReplicas": 1, "maxReplicas": 3}})).await;
    create(
        json!({"apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
        "metadata": {"name": "surged", "namespace": "default"},
        "spec": {"targetRef": {"kind": "Deployment", "name": "surged"}, "historyLimit": 0}}),
    )
    .await;
    create(template(
        "evicted",
        json!({"k8s.aliyun.com/eci-spot-release-strategy": "api-evict"}),
    ))
    .await;

    for app in ["surged", "evicted"] {
        let pod = eventually(&format!("{app} on ECI"), || async {
            world
                .pods()
                .list(&kube::api::ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?
                .items
                .into_iter()
                .find(|p| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        && p.annotations().contains_key(INSTANCE_ID)
                })
        })
        .await;
        let id = pod.annotations()[INSTANCE_ID].clone();
        world.sim.simulator.with_state(|sim| {
            sim.spot_release(std::slice::from_ref(&id), 60.0, chrono::Utc::now())
        });
        world.pod_gone(&pod.name_any(), &pod.uid().unwrap()).await;
    }
    world
        .pods()
        .delete("refs", &Default::default())
        .await
        .unwrap();
    world.pod_gone("refs", &refs.uid().unwrap()).await;
    // The pruned rotation (historyLimit 0) shows the policy controller finished its work.
    let rotations: Api<vk_eci_core::crd::SpotRotation> =
        Api::namespaced(world.client.clone(), "default");
    eventually("the surge rotation to be pruned", || async {
        let left = rotations.list(&Default::default()).await.ok()?.items;
        (!left
            .iter()
            .any(|r| r.spec.policy.as_deref() == Some("surged")))
        .then_some(())
    })
    .await;
}

#[test]
fn the_plain_manifests_are_the_chart_rendered() {
    let Some(python) = python() else { return };
    let output = Command::new(python)
        .arg(root().join("hack/gen-manifests.py"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
