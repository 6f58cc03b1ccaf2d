//! The kubelet API on `KUBELET_PORT`: what the API server (`kubectl logs`) and metrics-server
//! (`kubectl top`, HPAs) call on the address the Node advertises.
//!
//! Every replica listens; the Node's `InternalIP` and `daemonEndpoints` point at the leader
//! (the heartbeat, which only the leader runs, writes its `VKUBELET_POD_IP`), so a standby is
//! reached only in the seconds after a failover. A standby authenticates like the leader and
//! then answers 503 (except `/healthz`): serving would spend the ECI call budgets twice, and
//! its metric cache is not refreshed. Exec and attach are served over SPDY/3.1 (see [`exec`]);
//! port-forward is refused with a reason.
//!
//! Each request is a tracing span and counts in `vk_eci_kubelet_requests_total{path,code}` and
//! `vk_eci_kubelet_request_duration_seconds{path}`.

pub mod auth;
pub mod csr;
pub mod exec;
pub mod logs;
pub mod spdy_session;
pub mod stats;
pub mod terminal;
pub mod websocket_session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};
use k8s_openapi::api::core::v1::Pod;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use tokio::sync::Mutex;
use tracing::{Instrument, info, info_span, warn};
use vk_eci_core::kubelet::authz::attributes;
use vk_eci_core::kubelet::budget::CallBudget;

use crate::runtime::context::Context;
use crate::tls::{self, Peer, ServingCert, TlsError};
use auth::{AuthError, Authenticator};

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum Serving {
    /// PEM files, reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// Issued at start for `names` (the pod IP, the node name) by the CA in these PEM files,
    /// so clients that trust that CA can verify the address they dial.
    IssuedBy {
        ca_cert: PathBuf,
        ca_key: PathBuf,
        names: Vec<String>,
    },
    /// Signed by the cluster through a CertificateSigningRequest for these names (see
    /// [`csr`]), approved by this replica itself when `approve`; self-signed until then.
    ClusterSigned { names: Vec<String>, approve: bool },
    /// Generated at start for these names (nothing can verify it).
    SelfSigned { names: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub listen: SocketAddr,
    pub serving: Serving,
    /// CA bundle of the API server's kubelet client certificates; without it only bearer
    /// tokens authenticate.
    pub client_ca: Option<PathBuf>,
    /// `DescribeContainerLog` calls a minute all log requests share (a share of ECI's 500).
    pub log_calls_per_minute: u32,
    /// `ExecContainerCommand` calls a minute all exec requests share (a share of ECI's 500).
    pub exec_calls_per_minute: u32,
    /// `DescribeMultiContainerGroupMetric` calls a minute the metric refresher may make.
    pub metric_calls_per_minute: u32,
    /// The shortest time between two metric refreshes of a pod (ECI samples every 15 s).
    pub metric_min_interval: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("kubelet API TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot read the kubelet client CA {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("cannot listen on the kubelet port {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the handlers share.
pub struct KubeletState {
    pub ctx: Arc<Context>,
    auth: Authenticator,
    log_budget: Mutex<CallBudget>,
    log_calls_per_minute: u32,
    exec_budget: Mutex<CallBudget>,
    exec_calls_per_minute: u32,
    /// Followed logs being served now (they share the log budget).
    log_streams: AtomicUsize,
    stats: stats::StatsCache,
}

fn client_verifier(
    path: &PathBuf,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, KubeletError> {
    let failed = |reason: String| KubeletError::ClientCa {
        path: path.clone(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| failed(e.to_string()))?;
        roots.add(cert).map_err(|e| failed(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(failed("no certificate in PEM form".into()));
    }
    // Clients without a certificate may still come in with a bearer token.
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), tls::provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| failed(e.to_string()))
}

/// Binds the kubelet port: a port that cannot be had is a start-up error, not a silent
/// node without logs.
pub async fn bind(config: &KubeletConfig) -> Result<tokio::net::TcpListener, KubeletError> {
    tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| KubeletError::Listen {
            addr: config.listen,
            source,
        })
}

/// Serves the kubelet API on `listener` until `shutdown`, refreshing metrics while leader.
pub async fn serve(
    ctx: Arc<Context>,
    config: KubeletConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), KubeletError> {
    let cert = match &config.serving {
        Serving::Files { cert, key } => ServingCert::from_files(cert, key)?,
        Serving::IssuedBy {
            ca_cert,
            ca_key,
            names,
        } => {
            info!(?names, ca = %ca_cert.display(), "kubelet API serving certificate issued by the configured CA");
            ServingCert::issued_by(
                ca_cert,
                ca_key,
                &format!("system:node:{}", ctx.settings.node_name),
                Some("system:nodes"),
                names,
            )?
        }
        Serving::ClusterSigned { names, .. } => {
            info!(
                ?names,
                "kubelet API serves a self-signed certificate until the cluster signs its request"
            );
            ServingCert::self_signed(names)?
        }
        Serving::SelfSigned { names } => {
            warn!(
                ?names,
                "KUBELET API SERVES A SELF-SIGNED CERTIFICATE: set --kubelet-cert/--kubelet-key \
                 (the chart does) so metrics-server can verify it; the API server only works \
                 with it while --kubelet-certificate-authority is unset"
            );
            ServingCert::self_signed(names)?
        }
    };
    let signing = match &config.serving {
        Serving::ClusterSigned { names, approve } => Some(csr::keep_signed(
            ctx.client.clone(),
            ctx.settings.node_name.clone(),
            names.clone(),
            *approve,
            cert.clone(),
        )),
        _ => None,
    };
    let verifier = config.client_ca.as_ref().map(client_verifier).transpose()?;
    if verifier.is_none() {
        warn!("no --kubelet-client-ca: only bearer tokens authenticate on the kubelet API");
    }
    let server_config = tls::server_config(cert, verifier)?;
    let state = Arc::new(KubeletState {
        auth: Authenticator::new(ctx.client.clone(), ctx.settings.node_name.clone()),
        log_budget: Mutex::new(CallBudget::per_minute(
            config.log_calls_per_minute,
            Instant::now(),
        )),
        log_calls_per_minute: config.log_calls_per_minute,
        exec_budget: Mutex::new(CallBudget::per_minute(
            config.exec_calls_per_minute,
            Instant::now(),
        )),
        exec_calls_per_minute: config.exec_calls_per_minute,
        log_streams: AtomicUsize::new(0),
        stats: stats::StatsCache::new(),
        ctx,
    });
    let router = Router::new().fallback(handle).with_state(state.clone());
    info!(addr = %config.listen, "kubelet API listening (HTTPS)");
    let refresher = stats::refresh_while_leader(
        state.clone(),
        config.metric_calls_per_minute,
        config.metric_min_interval,
    );
    let signing = async {
        match signing {
            Some(signing) => signing.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tls::serve(listener, server_config, router, shutdown) => {}
        () = refresher => {}
        () = signing => {}
    }
    Ok(())
}

/// The metric label of a path: its route, never the raw path.
fn route_of(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "containerLogs" => "/containerLogs",
        "stats" => "/stats",
        "metrics" if path == "/metrics/resource" => "/metrics/resource",
        "metrics" => "/metrics",
        "pods" => "/pods",
        "healthz" => "/healthz",
        "exec" => "/exec",
        "attach" => "/attach",
        "portForward" => "/portForward",
        "run" => "/run",
        _ => "other",
    }
}

pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn handle(State(state): State<Arc<KubeletState>>, request: Request) -> Response {
    let started = Instant::now();
    let route = route_of(request.uri().path());
    let span = info_span!(
        "kubelet_request",
        method = %request.method(),
        path = route,
        code = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    let response = serve_request(&state, request)
        .instrument(span.clone())
        .await;
    let code = response.status().as_u16();
    span.record("code", code);
    state
        .ctx
        .metrics
        .kubelet_request(route, code, started.elapsed());
    response
}

/// Takes a call from `budget`, waiting at most `patience` for one; false if none came.
pub(crate) async fn take_budget(budget: &Mutex<CallBudget>, patience: std::time::Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        let taken = budget.lock().await.try_take(Instant::now());
        match taken {
            Ok(()) => return true,
            Err(wait) if Instant::now() + wait <= deadline => tokio::time::sleep(wait).await,
            Err(_) => return false,
        }
    }
}

async fn serve_request(state: &Arc<KubeletState>, request: Request) -> Response {
    let peer = request.extensions().get::<Peer>();
    let identity = match state.auth.authenticate(peer, request.headers()).await {
        Ok(identity) => identity,
        Err(error) => return auth_refusal(&error),
    };
    tracing::Span::current().record("user", identity.user.as_str());
    let path = request.uri().path().to_string();
    let wanted = attributes(request.method().as_str(), &path);
    if let Err(error) = state.auth.authorize(&identity, &wanted).await {
        return auth_refusal(&error);
    }
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    if !state.ctx.leadership.is_leader() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this vk-eci replica is a standby: the Node's address points at the leader; retry",
        );
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    let query = request.uri().query().unwrap_or("").to_string();
    let streaming = match segments.as_slice() {
        ["exec", ns, pod, container] => Some((exec::Kind::Exec, *ns, *pod, *container)),
        ["attach", ns, pod, container] => Some((exec::Kind::Attach, *ns, *pod, *container)),
        _ => None,
    };
    if let Some((kind, ns, pod, container)) = streaming {
        if method != Method::GET && method != Method::POST {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not supported here"),
            );
        }
        let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
        return exec::serve(state.clone(), request, kind, &ns, &pod, &container).await;
    }
    match (segments.as_slice(), method == Method::GET) {
        (["containerLogs", ns, pod, container], true) => {
            logs::container_logs(state.clone(), ns, pod, container, &query).await
        }
        (["metrics", "resource"], true) => stats::resource_metrics(state),
        (["stats", "summary"], true) => stats::summary(state),
        (["pods"], true) => pods(state),
        (
            ["containerLogs", ..] | ["metrics", "resource"] | ["stats", "summary"] | ["pods"],
            false,
        ) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not supported here"),
        ),
        (["portForward", ..], _) => text(
            StatusCode::NOT_IMPLEMENTED,
            "port-forward is not supported on ECI: ECI has no port-forwarding API",
        ),
        (["run", ..], _) => text(
            StatusCode::NOT_IMPLEMENTED,
            "/run is not supported by vk-eci: use exec",
        ),
        (["exec" | "attach", ..], _) => text(
            StatusCode::NOT_FOUND,
            "exec and attach need /{exec|attach}/{namespace}/{pod}/{container}",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("{path} is not served by vk-eci's kubelet API"),
        ),
    }
}

fn auth_refusal(error: &AuthError) -> Response {
    let status = match error {
        AuthError::Unauthenticated => StatusCode::UNAUTHORIZED,
        AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
        AuthError::Review(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(status, error.to_string())
}

/// `/pods`: the pods bound to this node, as the informer cache has them (the spec and status
/// trimmed to what the operator keeps).
fn pods(state: &KubeletState) -> Response {
    let items: Vec<Pod> = state
        .ctx
        .pods
        .state()
        .iter()
        .map(|p| Pod::from(p.as_ref()))
        .collect();
    let list = serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    });
    let mut response = axum::Json(list).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

/// A streamed body from chunks sent on a channel.
pub(crate) fn streamed(receiver: tokio::sync::mpsc::Receiver<String>) -> Body {
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), receiver))
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_bounded_labels() {
        assert_eq!(route_of("/containerLogs/ns/pod/c"), "/containerLogs");
        assert_eq!(route_of("/metrics/resource"), "/metrics/resource");
        assert_eq!(route_of("/metrics/cadvisor"), "/metrics");
        assert_eq!(route_of("/stats/summary"), "/stats");
        assert_eq!(route_of("/exec/a/b/c"), "/exec");
        assert_eq!(route_of("/some/secret-looking/path"), "other");
    }
}
