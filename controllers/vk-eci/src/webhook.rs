//! The ECI admission webhook: `POST /mutate-pods` answers the API server's
//! `admission.k8s.io/v1` AdmissionReviews for pod CREATE with the JSON patch of
//! [`vk_eci_core::admission`]. Every replica serves it (it only reads the profile and the
//! namespace cache, and writes nothing); the replica's readiness waits for both to sync.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, ConvertAdmissionReviewError, Operation,
};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};
use vk_eci_core::admission::{VirtualNode, admit};

use crate::runtime::context::ProfileHolder;
use crate::runtime::metrics::Metrics;
use crate::tls::{self, ServingCert};

/// The path the MutatingWebhookConfiguration names.
pub const PATH: &str = "/mutate-pods";

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot serve the admission webhook on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Where and with which certificate the webhook is served.
#[derive(Debug, Clone)]
pub struct WebhookServing {
    pub listen: SocketAddr,
    pub cert: Arc<ServingCert>,
}

/// What answering a review reads.
pub struct WebhookState {
    pub profile: ProfileHolder,
    pub namespaces: Store<Namespace>,
    /// The virtual node as configured; its labels are the live Node's once cached.
    pub node: VirtualNode,
    /// The live Node (others may have labelled it: a pod's nodeSelector may name those labels).
    pub live_node: Store<Node>,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: Arc<WebhookState>) -> Router {
    Router::new().route(PATH, post(mutate)).with_state(state)
}

/// Serves the webhook until `shutdown`.
pub async fn serve(
    serving: WebhookServing,
    state: Arc<WebhookState>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WebhookError> {
    let listener =
        TcpListener::bind(serving.listen)
            .await
            .map_err(|source| WebhookError::Listen {
                addr: serving.listen,
                source,
            })?;
    info!(addr = %serving.listen, path = PATH, "admission webhook serving");
    serve_on(listener, serving.cert, state, shutdown).await
}

/// Serves the webhook on a bound `listener` until `shutdown`.
pub async fn serve_on(
    listener: TcpListener,
    cert: Arc<ServingCert>,
    state: Arc<WebhookState>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WebhookError> {
    let config = tls::server_config(cert, None)?;
    tls::serve(listener, config, router(state), shutdown).await;
    Ok(())
}

/// The review's answer. A pod the webhook cannot read is admitted unchanged with a warning;
/// a body that is no AdmissionReview at all gets a 400, which the API server treats like an
/// outage (failurePolicy). Never a denial: this webhook only ever steers.
async fn mutate(State(state): State<Arc<WebhookState>>, body: Bytes) -> Response {
    let started = Instant::now();
    let answered = match request_of::<Pod>(&body) {
        Ok(request) => Ok(answer(&state, &request)),
        Err(error) => match request_of::<DynamicObject>(&body) {
            Ok(request) => {
                warn!(%error, uid = %request.uid, "cannot read the pod under review; admitting it unchanged");
                state.metrics.admitted("unchanged");
                let mut response = AdmissionResponse::from(&request);
                response.warnings = Some(vec![format!(
                    "vk-eci: cannot read the pod ({error}); admitted unchanged"
                )]);
                Ok(response)
            }
            Err(_) => {
                warn!(%error, "not an AdmissionReview");
                Err(format!(
                    "not an admission.k8s.io/v1 AdmissionReview: {error}"
                ))
            }
        },
    };
    state
        .metrics
        .admission_seconds
        .observe(started.elapsed().as_secs_f64());
    match answered {
        Ok(response) => axum::Json(response.into_review()).into_response(),
        Err(problem) => (StatusCode::BAD_REQUEST, problem).into_response(),
    }
}

fn request_of<K>(body: &[u8]) -> Result<AdmissionRequest<K>, String>
where
    K: kube::Resource + serde::de::DeserializeOwned,
{
    let review: AdmissionReview<K> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    review
        .try_into()
        .map_err(|e: ConvertAdmissionReviewError| e.to_string())
}

fn answer(state: &WebhookState, request: &AdmissionRequest<Pod>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(pod) = request
        .object
        .as_ref()
        .filter(|_| request.operation == Operation::Create && request.sub_resource.is_none())
    else {
        return response;
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.namespace())
        .unwrap_or_default();
    let namespace_labels = state
        .namespaces
        .get(&ObjectRef::new(&namespace))
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    let profile = state.profile.current();
    let live = state.live_node.state().into_iter().next();
    let node = match live {
        Some(live) => &VirtualNode {
            labels: live.labels().clone(),
            ..state.node.clone()
        },
        None => &state.node,
    };
    let admission = admit(pod, &namespace_labels, profile.as_deref(), node);
    state.metrics.admitted(admission.decision.label());
    let name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    debug!(%namespace, pod = %name, decision = ?admission.decision, "admission");
    let mut response = response;
    if !admission.warnings.is_empty() {
        response.warnings = Some(admission.warnings);
    }
    if admission.patch.0.is_empty() {
        return response;
    }
    match response.clone().with_patch(admission.patch) {
        Ok(patched) => patched,
        Err(error) => {
            warn!(%error, %namespace, pod = %name, "cannot encode the admission patch; admitting unchanged");
            response
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::Engine as _;
    use kube::runtime::{reflector, watcher};
    use serde_json::{Value, json};
    use vk_eci_core::profile::Profile;
    use vk_eci_core::settings::RawSettings;

    use super::*;

    fn review(pod: Value, namespace: &str, operation: &str) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "review-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace, "operation": operation,
                "userInfo": {"username": "alice"},
                "object": pod, "dryRun": false
            }
        })
    }

    struct Served {
        client: reqwest::Client,
        url: String,
        metrics: Arc<Metrics>,
        stop: tokio::sync::oneshot::Sender<()>,
    }

    async fn served(profile: Option<Profile>, namespaces: &[(&str, Value)]) -> Served {
        let settings = RawSettings {
            cluster_id: Some("c-1".into()),
            region: Some("cn-beijing".into()),
            vswitches: Some("vsw-a".into()),
            simulator: true,
            ..RawSettings::default()
        }
        .validate()
        .unwrap();
        let (live_node, mut node_writer) = reflector::store::<Node>();
        node_writer.apply_watcher_event(&watcher::Event::Init);
        node_writer.apply_watcher_event(&watcher::Event::InitApply(
            serde_json::from_value(json!({"metadata": {"name": "virtual-kubelet",
                "labels": {"type": "virtual-kubelet", "pool": "eci"}}}))
            .unwrap(),
        ));
        node_writer.apply_watcher_event(&watcher::Event::InitDone);
        let (store, mut writer) = reflector::store::<Namespace>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for (name, labels) in namespaces {
            let namespace: Namespace =
                serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                    .unwrap();
            writer.apply_watcher_event(&watcher::Event::InitApply(namespace));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let holder = ProfileHolder::default();
        holder.set(profile);
        let metrics = Arc::new(Metrics::new());
        let state = Arc::new(WebhookState {
            profile: holder,
            namespaces: store,
            node: VirtualNode::from_settings(&settings, "test"),
            live_node,
            metrics: metrics.clone(),
        });
        let cert = ServingCert::self_signed(&["127.0.0.1".into()]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.current().unwrap().cert[0].clone()).unwrap();
        tokio::spawn(serve_on(listener, cert, state, async {
            stopped.await.ok();
        }));
        let tls = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .unwrap();
        let url = format!("https://{addr}{PATH}");
        Served {
            client,
            url,
            metrics,
            stop,
        }
    }

    impl Served {
        async fn ask(&self, review: Value) -> Value {
            let response: Value = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .body(review.to_string())
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .parse()
                .unwrap();
            response["response"].clone()
        }
    }

    /// The patch, as the API server reads `[]byte`: a JSON array of bytes (what kube
    /// sends) or base64.
    fn patch_of(response: &Value) -> Value {
        let bytes: Vec<u8> = match &response["patch"] {
            Value::String(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
            bytes => serde_json::from_value(bytes.clone()).unwrap(),
        };
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn answers_reviews_with_a_json_patch_and_counts_decisions() {
        let profile = Profile::parse(
            &[(
                "selectors".to_string(),
                json!([{"name": "batch", "objectSelector": {"matchLabels": {"workload": "batch"}},
                    "effect": {"annotations": {"team": "batch"}}}])
                .to_string(),
            )]
            .into(),
        )
        .unwrap();
        let served = served(
            Some(profile),
            &[("eci-ns", json!({"alibabacloud.com/eci": "true"}))],
        )
        .await;
        let pod = |labels: Value| json!({"metadata": {"generateName": "p-", "labels": labels}, "spec": {"containers": [{"name": "c", "image": "i"}]}});

        let labelled = served
            .ask(review(pod(json!({"eci": "true"})), "default", "CREATE"))
            .await;
        assert_eq!(labelled["uid"], "review-1");
        assert_eq!(labelled["allowed"], true);
        assert_eq!(labelled["patchType"], "JSONPatch");
        let ops = patch_of(&labelled);
        assert!(
            ops.as_array()
                .unwrap()
                .iter()
                .any(|op| op["path"] == "/spec/nodeSelector"),
            "{ops}"
        );

        let in_namespace = served.ask(review(pod(json!({})), "eci-ns", "CREATE")).await;
        assert!(
            !patch_of(&in_namespace).as_array().unwrap().is_empty(),
            "the namespace cache is read: {in_namespace}"
        );

        let selected = served
            .ask(review(
                pod(json!({"workload": "batch"})),
                "default",
                "CREATE",
            ))
            .await;
        let ops = patch_of(&selected);
        assert!(
            ops.as_array()
                .unwrap()
                .iter()
                .any(|op| op["path"] == "/metadata/annotations"),
            "{ops}"
        );

        // A label someone else put on the Node satisfies a pod's nodeSelector too.
        let mut pooled = pod(json!({"eci": "true"}));
        pooled["spec"]["nodeSelector"] = json!({"pool": "eci"});
        let pooled = served.ask(review(pooled, "default", "CREATE")).await;
        assert!(pooled.get("warnings").is_none(), "{pooled}");
        assert!(!patch_of(&pooled).as_array().unwrap().is_empty());

        let plain = served
            .ask(review(pod(json!({})), "default", "CREATE"))
            .await;
        assert_eq!(plain["allowed"], true);
        assert!(plain.get("patch").is_none(), "{plain}");

        let update = served
            .ask(review(pod(json!({"eci": "true"})), "default", "UPDATE"))
            .await;
        assert!(
            update.get("patch").is_none(),
            "only CREATE is mutated: {update}"
        );

        let mut privileged = pod(json!({"eci": "true"}));
        privileged["spec"]["hostNetwork"] = json!(true);
        let warned = served.ask(review(privileged, "default", "CREATE")).await;
        assert_eq!(warned["allowed"], true);
        assert!(warned.get("patch").is_none());
        assert!(
            warned["warnings"][0]
                .as_str()
                .unwrap()
                .contains("hostNetwork"),
            "{warned}"
        );

        let mut unreadable = pod(json!({"eci": "true"}));
        unreadable["spec"]["containers"] = json!("not a list");
        let admitted = served.ask(review(unreadable, "default", "CREATE")).await;
        assert_eq!(admitted["allowed"], true, "never a denial: {admitted}");
        assert!(admitted.get("patch").is_none());
        assert!(
            admitted["warnings"][0]
                .as_str()
                .unwrap()
                .contains("cannot read the pod"),
            "{admitted}"
        );
        let garbage = served
            .client
            .post(&served.url)
            .body("{\"kind\": 7}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            garbage.status(),
            400,
            "a call error, for failurePolicy to decide"
        );

        let text = served.metrics.encode();
        for line in [
            r#"vk_eci_admissions_total{decision="eci"} 4"#,
            r#"vk_eci_admissions_total{decision="unchanged"} 2"#,
            r#"vk_eci_admissions_total{decision="warned"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains("vk_eci_admission_duration_seconds_count"),
            "{text}"
        );
        served.stop.send(()).unwrap();
    }
}
