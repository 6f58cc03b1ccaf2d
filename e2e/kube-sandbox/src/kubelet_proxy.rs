//! How the sandbox reaches kubelets, like a real API server: over HTTPS to the Node's
//! `InternalIP` and `daemonEndpoints.kubeletEndpoint.Port`, presenting its own kubelet client
//! certificate (CN `kube-apiserver-kubelet-client`, O `system:masters`, signed by a CA of its
//! own that [`KubeletIdentity::ca_pem`] gives to kubelets as their client CA), and without
//! verifying the kubelet's serving certificate (an API server does not unless
//! `--kubelet-certificate-authority` is set).
//!
//! `pods/log` is proxied to `/containerLogs/...`, streaming, so `kubectl logs -f` streams;
//! `pods/exec`, `pods/attach` and `pods/portforward` are upgraded connections passed through.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use crate::Sandbox;
use crate::store::ApiError;

/// The user the sandbox's kubelet client certificate names.
pub const CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// The sandbox's kubelet client: its CA, certificate and an HTTPS client presenting it.
pub struct KubeletIdentity {
    ca_pem: String,
    pub http: reqwest::Client,
}

impl std::fmt::Debug for KubeletIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletIdentity").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl KubeletIdentity {
    pub fn generate() -> Result<Self, String> {
        let fail = |e: &dyn std::fmt::Display| format!("kubelet client identity: {e}");
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(&e))?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-sandbox kubelet client CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().map_err(|e| fail(&e))?;
        let ca = ca_params.self_signed(&ca_key).map_err(|e| fail(&e))?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let mut client_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(&e))?;
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, CLIENT_USER);
        client_params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = rcgen::KeyPair::generate().map_err(|e| fail(&e))?;
        let client = client_params
            .signed_by(&client_key, &issuer)
            .map_err(|e| fail(&e))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::try_from(client_key.serialize_der()).map_err(|e| fail(&e))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(&e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
            .with_client_auth_cert(vec![client.der().clone()], key)
            .map_err(|e| fail(&e))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| fail(&e))?;
        Ok(Self {
            ca_pem: ca.pem(),
            http,
        })
    }

    /// The CA that signs the sandbox's kubelet client certificate: a kubelet's client CA.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

/// `https://<InternalIP>:<kubelet port>` of a stored Node.
pub fn kubelet_url(node: &Value) -> Option<String> {
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_i64()?;
    let address = node["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")?["address"]
        .as_str()?
        .to_string();
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address
    };
    (port > 0).then(|| format!("https://{host}:{port}"))
}

fn node_named(sandbox: &Sandbox, name: &str) -> Option<Value> {
    sandbox
        .objects("", "v1", "nodes")
        .into_iter()
        .find(|n| n["metadata"]["name"] == name)
}

/// The kubelet base URL of pod `namespace/name`, and the container the query names (or the
/// pod's only one).
fn pod_kubelet(
    sandbox: &Sandbox,
    namespace: &str,
    name: &str,
    query: &[(String, String)],
) -> Result<(String, String), ApiError> {
    let pod = sandbox
        .objects("", "v1", "pods")
        .into_iter()
        .find(|p| p["metadata"]["namespace"] == namespace && p["metadata"]["name"] == name)
        .ok_or_else(|| ApiError::new(404, "NotFound", format!("pods \"{name}\" not found")))?;
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let container = match query.iter().find(|(k, _)| k == "container") {
        Some((_, container)) => container.clone(),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let node = node_named(sandbox, node_name).ok_or_else(|| {
        ApiError::new(404, "NotFound", format!("nodes \"{node_name}\" not found"))
    })?;
    let base = kubelet_url(&node)
        .ok_or_else(|| ApiError::bad_request(format!("node {node_name} has no kubelet address")))?;
    Ok((base, container))
}

/// Where `GET pods/{name}/log` goes: the kubelet's `/containerLogs` URL for the container.
fn log_location(
    sandbox: &Sandbox,
    namespace: &str,
    name: &str,
    query: &[(String, String)],
) -> Result<String, ApiError> {
    let (base, container) = pod_kubelet(sandbox, namespace, name, query)?;
    let forwarded: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query.iter().filter(|(k, _)| k != "container"))
        .finish();
    Ok(format!(
        "{base}/containerLogs/{namespace}/{name}/{container}?{forwarded}"
    ))
}

/// Where `pods/{name}/{exec|attach|portforward}` goes, with the query translated as the API
/// server does (`stdin=true` → `input=1`, `stdout` → `output`, `stderr` → `error`, `tty`).
fn stream_location(
    sandbox: &Sandbox,
    subresource: &str,
    namespace: &str,
    name: &str,
    query: &[(String, String)],
) -> Result<String, ApiError> {
    if subresource == "portforward" {
        let (base, _) = pod_kubelet(
            sandbox,
            namespace,
            name,
            &[("container".into(), String::new())],
        )?;
        let ports = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query.iter().filter(|(k, _)| k == "ports"))
            .finish();
        return Ok(format!("{base}/portForward/{namespace}/{name}?{ports}"));
    }
    let (base, container) = pod_kubelet(sandbox, namespace, name, query)?;
    let mut forwarded = form_urlencoded::Serializer::new(String::new());
    for (key, value) in query {
        let flag = match key.as_str() {
            "stdin" => "input",
            "stdout" => "output",
            "stderr" => "error",
            "tty" => "tty",
            "command" if subresource == "exec" => {
                forwarded.append_pair("command", value);
                continue;
            }
            _ => continue,
        };
        if value == "true" || value == "1" {
            forwarded.append_pair(flag, "1");
        }
    }
    let path = if subresource == "exec" {
        "exec"
    } else {
        "attach"
    };
    Ok(format!(
        "{base}/{path}/{namespace}/{name}/{container}?{}",
        forwarded.finish()
    ))
}

/// The headers of an upgrade passed on in each direction.
fn upgrade_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "connection"
        || name == "upgrade"
        || name.starts_with("x-stream-protocol-version")
        || name.starts_with("x-accepted-stream-protocol-version")
        || name.starts_with("sec-websocket-")
}

fn kubelet_error(status: u16, message: &str) -> ApiError {
    let reason = match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        429 => "TooManyRequests",
        501 => "NotImplemented",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    ApiError::new(status, reason, message.trim().to_string())
}

/// Proxies `pods/{name}/exec|attach|portforward` to the pod's kubelet: the upgrade request is
/// passed on with its protocol headers (SPDY as API servers of 1.30–1.35 pass it; a WebSocket
/// as one from 1.36 does for nodes that take it), the kubelet's `101` answered back, then
/// bytes are copied both ways.
pub async fn proxy_stream(
    sandbox: &Sandbox,
    subresource: &str,
    namespace: &str,
    name: &str,
    mut request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let query: Vec<(String, String)> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let url = stream_location(sandbox, subresource, namespace, name, &query)?;
    let identity = sandbox.kubelet_identity().ok_or_else(|| {
        ApiError::new(
            500,
            "InternalError",
            "the sandbox has no kubelet client certificate",
        )
    })?;
    // The client's method: a WebSocket handshake is a GET, SPDY upgrades are POSTs.
    let mut upstream = identity.http.request(request.method().clone(), &url);
    for (header, value) in request.headers() {
        if upgrade_header(header.as_str()) {
            upstream = upstream.header(header.as_str(), value.as_bytes());
        }
    }
    let response = upstream.send().await.map_err(|e| {
        ApiError::new(
            500,
            "InternalError",
            format!("error dialing the kubelet for pod {name}: {e}"),
        )
    })?;
    let status = response.status().as_u16();
    if status != 101 {
        let message = response.text().await.unwrap_or_default();
        return Err(kubelet_error(status, &message));
    }
    let mut answer = Response::builder().status(101);
    for (header, value) in response.headers() {
        if upgrade_header(header.as_str()) {
            answer = answer.header(header.as_str(), value.as_bytes());
        }
    }
    let client_side = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(mut kubelet) = response.upgrade().await else {
            return;
        };
        let Ok(client) = client_side.await else {
            return;
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await;
    });
    answer
        .body(Body::empty())
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))
}

/// Proxies `GET /api/v1/namespaces/{ns}/pods/{name}/log` to the pod's kubelet, streaming.
pub async fn proxy_log(
    sandbox: &Sandbox,
    namespace: &str,
    name: &str,
    query: &[(String, String)],
) -> Result<Response, ApiError> {
    let url = log_location(sandbox, namespace, name, query)?;
    let identity = sandbox.kubelet_identity().ok_or_else(|| {
        ApiError::new(
            500,
            "InternalError",
            "the sandbox has no kubelet client certificate",
        )
    })?;
    let response = identity.http.get(&url).send().await.map_err(|e| {
        ApiError::new(
            500,
            "InternalError",
            format!("error dialing the kubelet for pod {name}: {e}"),
        )
    })?;
    let status = response.status().as_u16();
    if status != 200 {
        // Like the API server: the kubelet's own message, with its status.
        let message = response.text().await.unwrap_or_default();
        return Err(kubelet_error(status, &message));
    }
    let body = futures::stream::unfold(Some(response), |response| async move {
        let mut response = response?;
        match response.chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(chunk), Some(response))),
            Ok(None) => None,
            Err(error) => Some((Err(std::io::Error::other(error)), None)),
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))
}
