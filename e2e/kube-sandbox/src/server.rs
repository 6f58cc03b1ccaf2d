//! The HTTP API: discovery, CRUD, list/watch, patches, subresources, server-side Tables.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::oneshot;

use crate::faults::{
    Answer, Fault, FaultId, FaultSpec, FaultView, Faults, InjectedError, ResourceRequest,
};
use crate::protobuf::ProtobufError;
use crate::resources::ResourceType;
use crate::selector::Selector;
use crate::store::{ApiError, DeleteOptions, PatchKind, Store};
use crate::strategy;

/// An in-memory Kubernetes API server. Clones share one store.
#[derive(Clone)]
pub struct Sandbox {
    store: Arc<Mutex<Store>>,
    accesses: Arc<Mutex<std::collections::BTreeSet<Access>>>,
    faults: Faults,
    /// How it reaches kubelets (`None` if its certificate could not be generated).
    kubelet: Arc<Option<crate::kubelet_proxy::KubeletIdentity>>,
    metrics: Arc<crate::metrics_api::MetricsApi>,
}

/// One kind of request a client made, as RBAC sees it: what an audit log would show.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    /// The client's User-Agent.
    pub user_agent: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    pub group: String,
    /// `pods`, or `pods/status` for a subresource.
    pub resource: String,
    pub namespace: Option<String>,
    /// The object's name, from the path or, for a list or watch, from a `metadata.name=` field
    /// selector: what RBAC's `resourceNames` are checked against.
    pub name: Option<String>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn error_response(error: &ApiError) -> Response {
    json_response(error.code, &error.status())
}

/// `api/v1` → (``, `v1`); `apis/apps/v1` → (`apps`, `v1`).
fn group_version(path: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", version] => Some(("", version)),
        ["apis", group, version] => Some((group, version)),
        _ => None,
    }
}

/// Where a request points.
pub(crate) struct Target {
    pub(crate) rt: ResourceType,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
}

/// The request as RBAC sees it: the one resolution both the Access log and faults use.
fn resource_request(
    method: &Method,
    query: &HashMap<String, String>,
    target: &Target,
) -> ResourceRequest {
    let verb = match (method.as_str(), target.name.is_some()) {
        ("GET", _) if is_watch(query) => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => other,
    };
    let resource = match &target.subresource {
        Some(sub) => format!("{}/{sub}", target.rt.plural),
        None => target.rt.plural.clone(),
    };
    // RBAC authorizes a list or watch narrowed to one name by a `metadata.name=` field
    // selector against that name, as it does a get.
    let name = target.name.clone().or_else(|| {
        if !matches!(verb, "list" | "watch") {
            return None;
        }
        let selector = Selector::parse(query.get("fieldSelector")?).ok()?;
        selector
            .requires_exact_match("metadata.name")
            .map(str::to_string)
    });
    ResourceRequest {
        verb: verb.to_lowercase(),
        resource,
        namespace: target.namespace.clone(),
        name,
    }
}

fn is_watch(query: &HashMap<String, String>) -> bool {
    query.get("watch").is_some_and(|w| w == "true" || w == "1")
}

impl Sandbox {
    pub fn new() -> Self {
        Self::with_history(200_000)
    }

    /// A sandbox that keeps only the last `changes` changes for watches (older resource
    /// versions answer 410 Gone).
    pub fn with_history(changes: usize) -> Self {
        Self {
            store: Arc::new(Mutex::new(Store::new(changes))),
            accesses: Arc::default(),
            faults: Faults::default(),
            kubelet: Arc::new(match crate::kubelet_proxy::KubeletIdentity::generate() {
                Ok(identity) => Some(identity),
                Err(error) => {
                    tracing::warn!(%error, "the sandbox cannot reach kubelets");
                    None
                }
            }),
            metrics: Arc::default(),
        }
    }

    /// How the sandbox reaches kubelets (logs, metrics).
    pub fn kubelet_identity(&self) -> Option<&crate::kubelet_proxy::KubeletIdentity> {
        self.kubelet.as_ref().as_ref()
    }

    /// The CA of the sandbox's kubelet client certificate (a kubelet's `--client-ca-file`).
    pub fn kubelet_client_ca(&self) -> Option<String> {
        self.kubelet_identity().map(|k| k.ca_pem().to_string())
    }

    pub(crate) fn metrics_api(&self) -> &crate::metrics_api::MetricsApi {
        &self.metrics
    }

    /// The fault registry every request to this sandbox (and its clones) goes through.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Every stored object of a resource (`""` for the core group), read in this process: no
    /// fault applies and no access is recorded, so an instrument sees the truth while the API
    /// misbehaves for everyone else (the chaos benchmark). Empty for an unknown resource.
    pub fn objects(&self, group: &str, version: &str, plural: &str) -> Vec<Value> {
        let store = self.lock();
        let Some(rt) = store.find_type(group, version, plural) else {
            return Vec::new();
        };
        let all = Selector::default();
        store.list(&rt, None, &all, &all, None, None).0
    }

    /// Every kind of request served so far (resolved to a resource), for RBAC checks.
    pub fn accesses(&self) -> Vec<Access> {
        match self.accesses.lock() {
            Ok(set) => set.iter().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
        }
    }

    fn record(&self, request: &ResourceRequest, headers: &HeaderMap, target: &Target) {
        let access = Access {
            user_agent: headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            verb: request.verb.clone(),
            group: target.rt.group.clone(),
            resource: request.resource.clone(),
            namespace: request.namespace.clone(),
            name: request.name.clone(),
        };
        if let Ok(mut set) = self.accesses.lock() {
            set.insert(access);
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        match self.store.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/version", get(version))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ok" }))
            .route("/api", get(api_versions))
            .route("/apis", get(api_groups))
            .route("/openapi/v3", get(openapi_index))
            .route("/openapi/v3/{*group_version}", get(openapi_document))
            .route(
                "/_sandbox/faults",
                get(list_faults).post(add_fault).delete(clear_faults),
            )
            .route("/_sandbox/faults/{id}", delete(remove_fault))
            .route(
                "/api/v1/namespaces/{namespace}/pods/{name}/exec",
                any(crate::subresources::stream),
            )
            .route(
                "/api/v1/namespaces/{namespace}/pods/{name}/attach",
                any(crate::subresources::stream),
            )
            .route(
                "/api/v1/namespaces/{namespace}/pods/{name}/portforward",
                any(crate::subresources::stream),
            )
            .fallback(handle)
            .with_state(self.clone())
    }

    /// Serves on `addr` (port 0 for any) in the background until the handle is stopped or
    /// dropped.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<RunningSandbox> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let router = self.router();
        let controllers = tokio::spawn(self.clone().run_controllers());
        let scraper = tokio::spawn(crate::metrics_api::scrape_forever(self.clone()));
        tokio::spawn(async move {
            let shutdown = async {
                let _stop_requested_or_handle_dropped = stopped.await;
            };
            if let Err(error) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(%error, "sandbox server stopped with an error");
            }
            controllers.abort();
            scraper.abort();
        });
        Ok(RunningSandbox {
            addr,
            sandbox: self,
            stop: Some(stop),
        })
    }

    /// Runs the cluster controllers after every burst of changes (and every second), pass
    /// after pass until one changes nothing.
    async fn run_controllers(self) {
        let mut changes = self.lock().subscribe();
        let mut last_pass = Duration::ZERO;
        let mut clients = crate::cluster::ControllerClients::default();
        let mut settled = true;
        loop {
            if settled {
                let woke = tokio::time::timeout(Duration::from_secs(1), changes.recv()).await;
                if matches!(woke, Ok(Err(RecvError::Closed))) {
                    return;
                }
            }
            // Let a burst of writes land before reconciling once for all of them. A pass reads
            // every pod and holds the store while it does, so with thousands of pods the pause
            // grows with it, before every pass: the controllers take at most a fifth of a core
            // and the API keeps answering, as a real API server does while
            // kube-controller-manager works (at 50,000 pods, passes back to back kept the
            // operator's requests waiting for seconds).
            tokio::time::sleep(Duration::from_millis(5).max(last_pass * 4)).await;
            while changes.try_recv().is_ok() {}
            let started = std::time::Instant::now();
            settled = !crate::cluster::reconcile(&mut self.lock(), &mut clients, Utc::now());
            last_pass = started.elapsed();
            while changes.try_recv().is_ok() {}
        }
    }

    fn resolve(&self, path: &str) -> Result<Option<Target>, ApiError> {
        let segments: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ));
            }
        };
        if rest.is_empty() {
            return Ok(None);
        }
        let store = self.lock();
        let find = |plural: &str| store.find_type(group, version, plural);
        let not_found = || {
            ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            )
        };
        let (namespace, rest): (Option<String>, &[&str]) = match rest {
            ["namespaces", ns, plural, ..] if find(plural).is_some_and(|t| t.namespaced) => {
                (Some((*ns).to_string()), &rest[2..])
            }
            _ => (None, rest),
        };
        let rt = find(rest[0]).ok_or_else(not_found)?;
        Ok(Some(Target {
            rt,
            namespace,
            name: rest.get(1).map(|s| s.to_string()),
            subresource: rest.get(2).map(|s| s.to_string()),
        }))
    }

    fn resource_list(&self, path: &str) -> Response {
        let Some((group, version)) = group_version(path) else {
            return error_response(&ApiError::new(404, "NotFound", "not found"));
        };
        let store = self.lock();
        let types = store.types_in(group, version);
        if types.is_empty() {
            return error_response(&ApiError::new(
                404,
                "NotFound",
                format!("no resources in {group}/{version}"),
            ));
        }
        let resources: Vec<Value> = types.iter().flat_map(|t| t.discovery()).collect();
        json_response(
            200,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": types[0].api_version(), "resources": resources}),
        )
    }
}

/// A sandbox serving in the background.
pub struct RunningSandbox {
    pub addr: SocketAddr,
    pub sandbox: Sandbox,
    stop: Option<oneshot::Sender<()>>,
}

impl RunningSandbox {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig that kubectl and kube-rs accept.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url())
    }

    /// See [`Sandbox::kubelet_client_ca`].
    pub fn kubelet_client_ca(&self) -> Option<String> {
        self.sandbox.kubelet_client_ca()
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _already_stopped = stop.send(());
        }
    }
}

pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {url}\nusers:\n- name: sandbox\n  user: {{}}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox\n    namespace: default\ncurrent-context: sandbox\n"
    )
}

async fn list_faults(State(sandbox): State<Sandbox>) -> Response {
    let faults: Vec<FaultView> = sandbox.faults.list().iter().map(FaultView::from).collect();
    json_response(200, &json!({ "faults": faults }))
}

async fn add_fault(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    let fault = serde_json::from_slice::<FaultSpec>(&body)
        .map_err(|e| format!("the body is not a fault: {e}"))
        .and_then(|spec| Fault::try_from(spec).map_err(|e| e.to_string()));
    match fault {
        Ok(fault) => json_response(201, &json!({ "id": sandbox.faults.inject(fault) })),
        Err(message) => error_response(&ApiError::bad_request(message)),
    }
}

async fn clear_faults(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.faults.clear();
    StatusCode::NO_CONTENT
}

async fn remove_fault(
    State(sandbox): State<Sandbox>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Ok(id) = id.parse().map(FaultId) else {
        return error_response(&ApiError::bad_request(format!("{id:?} is not a fault id")));
    };
    if sandbox.faults.remove(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error_response(&ApiError::new(404, "NotFound", format!("no fault {id}")))
    }
}

async fn version() -> Response {
    json_response(
        200,
        &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-vk-eci-sandbox", "platform": "linux/amd64", "goVersion": "n/a", "compiler": "rustc"}),
    )
}

async fn api_versions() -> Response {
    json_response(
        200,
        &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
    )
}

async fn api_groups(State(sandbox): State<Sandbox>) -> Response {
    let store = sandbox.lock();
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for t in store.types().iter().filter(|t| !t.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, versions)) if !versions.contains(&t.version) => {
                versions.push(t.version.clone())
            }
            Some(_) => {}
            None => groups.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, versions)| {
            let listed: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                .collect();
            json!({"name": name, "versions": listed, "preferredVersion": listed[0]})
        })
        .collect();
    json_response(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

/// The OpenAPI v3 index: one document per group-version. kubectl reads these to learn that
/// the server validates fields itself (`fieldValidation`), and then skips client-side schema
/// validation; the documents carry operations, not schemas.
async fn openapi_index(State(sandbox): State<Sandbox>) -> Response {
    let store = sandbox.lock();
    let mut paths = serde_json::Map::new();
    for t in store.types() {
        let path = if t.group.is_empty() {
            format!("api/{}", t.version)
        } else {
            format!("apis/{}/{}", t.group, t.version)
        };
        let url = format!("/openapi/v3/{path}?hash={}", store.resource_version());
        paths.insert(path, json!({"serverRelativeURL": url}));
    }
    json_response(200, &json!({"paths": paths}))
}

async fn openapi_document(
    State(sandbox): State<Sandbox>,
    axum::extract::Path(group_version): axum::extract::Path<String>,
) -> Response {
    let store = sandbox.lock();
    let Some((group, version)) = self::group_version(&group_version) else {
        return error_response(&ApiError::new(404, "NotFound", "no such OpenAPI document"));
    };
    let types = store.types_in(group, version);
    if types.is_empty() {
        return error_response(&ApiError::new(404, "NotFound", "no such OpenAPI document"));
    }
    let query_parameter =
        |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
    let mut paths = serde_json::Map::new();
    for t in types {
        let prefix = if t.group.is_empty() {
            format!("/api/{}", t.version)
        } else {
            format!("/apis/{}/{}", t.group, t.version)
        };
        let scope = if t.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let operation = |action: &str| {
            json!({
                "x-kubernetes-group-version-kind": gvk,
                "x-kubernetes-action": action,
                "parameters": [query_parameter("fieldValidation"), query_parameter("fieldManager"), query_parameter("dryRun")],
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(
            format!("{prefix}{scope}/{}", t.plural),
            json!({"post": operation("post"), "get": operation("list")}),
        );
        paths.insert(
            format!("{prefix}{scope}/{}/{{name}}", t.plural),
            json!({"get": operation("get"), "put": operation("put"), "patch": operation("patch"), "delete": operation("delete")}),
        );
    }
    json_response(
        200,
        &json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0-vk-eci-sandbox"}, "paths": paths, "components": {"schemas": {}}}),
    )
}

fn list_kind(rt: &ResourceType) -> String {
    format!("{}List", rt.kind)
}

fn include_object(query: &HashMap<String, String>) -> crate::tables::IncludeObject {
    crate::tables::IncludeObject::parse(query.get("includeObject").map(String::as_str))
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"))
}

/// A request body as JSON: JSON, YAML, or the API server's protobuf (recognised by its magic,
/// whatever the Content-Type says).
pub(crate) fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    if body.starts_with(crate::protobuf::MAGIC) {
        return crate::protobuf::decode(body).map_err(|error| match error {
            ProtobufError::Unsupported { .. } => {
                ApiError::new(415, "UnsupportedMediaType", error.to_string())
            }
            _ => ApiError::bad_request(error.to_string()),
        });
    }
    serde_json::from_slice(body)
        .or_else(|_| serde_saphyr::from_slice::<Value>(body).map_err(|e| e.to_string()))
        .map_err(|e| ApiError::bad_request(format!("the body is neither JSON nor YAML: {e}")))
}

fn selectors(query: &HashMap<String, String>) -> Result<(Selector, Selector), ApiError> {
    let parse = |name: &str| {
        Selector::parse(query.get(name).map(String::as_str).unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
    };
    Ok((parse("labelSelector")?, parse("fieldSelector")?))
}

async fn handle(
    State(sandbox): State<Sandbox>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let target = match sandbox.resolve(&path) {
        Ok(Some(target)) => target,
        Ok(None) => return sandbox.resource_list(&path),
        Err(error) => return error_response(&error),
    };
    let request = resource_request(&method, &query, &target);
    sandbox.record(&request, &headers, &target);
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if crate::protobuf::accepts_only_protobuf(accept) {
        return error_response(&ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        ));
    }
    let plan = sandbox.faults.plan(&request);
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    match plan.answer {
        Answer::Serve => {}
        Answer::Error(error) => return injected_error_response(&error),
        Answer::Hang => return std::future::pending().await,
    }
    if target.rt.group == "metrics.k8s.io" {
        return match crate::metrics_api::serve(
            sandbox.metrics_api(),
            method.as_str(),
            &target.rt.plural,
            target.namespace.as_deref(),
            target.name.as_deref(),
        ) {
            Ok(value) => json_response(200, &value),
            Err(error) => error_response(&error),
        };
    }
    if crate::subresources::is_log(&method, &target) {
        return crate::subresources::log(&sandbox, &target, &uri).await;
    }
    let (body, warnings) = match admit(&sandbox, &method, &query, &target, body).await {
        Ok(admitted) => admitted,
        Err(error) => return error_response(&error),
    };
    let mut response = match serve(&sandbox, &method, &headers, &query, &body, target) {
        Ok(Served::Object(code, value)) => json_response(code, &value),
        Ok(Served::Watch(stream)) => {
            let stream = match plan.drop_watch_after {
                Some(after) => cut_after(stream, after),
                None => stream,
            };
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap_or_else(|_| {
                    error_response(&ApiError::new(500, "InternalError", "cannot stream"))
                })
        }
        Err(error) => error_response(&error),
    };
    for warning in warnings {
        if let Ok(value) = crate::admission::warning_header(&warning).parse() {
            response
                .headers_mut()
                .append(axum::http::header::WARNING, value);
        }
    }
    response
}

/// A create passed through the mutating webhooks that want it: the body to store, and the
/// warnings they gave. Other requests, and creates no webhook wants, pass unchanged.
async fn admit(
    sandbox: &Sandbox,
    method: &Method,
    query: &HashMap<String, String>,
    target: &Target,
    body: Bytes,
) -> Result<(Bytes, Vec<String>), ApiError> {
    let rt = &target.rt;
    if method != Method::POST
        || target.name.is_some()
        || target.subresource.is_some()
        || matches!(
            rt.group.as_str(),
            "authorization.k8s.io" | crate::admission::GROUP
        )
    {
        return Ok((body, Vec::new()));
    }
    let mut object = parse_body(&body)?;
    let namespace = target.namespace.as_deref();
    let webhooks = {
        let store = sandbox.lock();
        let Some(configurations_type) = store.find_type(
            crate::admission::GROUP,
            "v1",
            "mutatingwebhookconfigurations",
        ) else {
            return Ok((body, Vec::new()));
        };
        let all = Selector::default();
        let (configurations, _) = store.list(&configurations_type, None, &all, &all, None, None);
        if configurations.is_empty() {
            return Ok((body, Vec::new()));
        }
        let namespace_object = namespace.and_then(|ns| {
            let namespaces = store.find_type("", "v1", "namespaces")?;
            store.get(&namespaces, None, ns).ok()
        });
        if rt.namespaced
            && let Some(ns) = namespace
            && object["metadata"].is_object()
        {
            object["metadata"]["namespace"] = json!(ns);
        }
        crate::admission::matching(&configurations, rt, &object, namespace_object.as_ref())
    };
    if webhooks.is_empty() {
        return Ok((body, Vec::new()));
    }
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
    let admitted = crate::admission::admit(&webhooks, rt, namespace, object, dry_run).await?;
    let body = serde_json::to_vec(&admitted.object)
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
    Ok((Bytes::from(body), admitted.warnings))
}

fn injected_error_response(error: &InjectedError) -> Response {
    let mut status = ApiError::new(error.code, error.reason, error.message.clone()).status();
    let retry_after = error.retry_after.map(|d| d.as_secs());
    if let Some(seconds) = retry_after {
        status["details"] = json!({"retryAfterSeconds": seconds});
    }
    let mut response = json_response(error.code, &status);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, seconds.into());
    }
    response
}

/// Ends a watch after `after` with a broken connection rather than a clean end of the
/// chunked body, so the client sees what an API server restart looks like.
fn cut_after(stream: WatchStream, after: Duration) -> WatchStream {
    let cut = futures::stream::once(async {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "watch dropped by an injected fault",
        ))
    });
    stream
        .take_until(tokio::time::sleep(after))
        .chain(cut)
        .boxed()
}

type WatchStream = futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

pub(crate) enum Served {
    Object(u16, Value),
    Watch(WatchStream),
}

/// A resource request as its handlers read it.
pub(crate) struct Call<'a> {
    pub(crate) sandbox: &'a Sandbox,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) query: &'a HashMap<String, String>,
    pub(crate) body: &'a Bytes,
    pub(crate) rt: &'a ResourceType,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) now: DateTime<Utc>,
}

/// Routes a resource request by method, object name and subresource to its handler.
fn serve(
    sandbox: &Sandbox,
    method: &Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &Bytes,
    target: Target,
) -> Result<Served, ApiError> {
    let Target {
        rt,
        namespace,
        name,
        subresource,
    } = target;
    let call = Call {
        sandbox,
        headers,
        query,
        body,
        rt: &rt,
        namespace: namespace.as_deref(),
        now: Utc::now(),
    };
    match (method.as_str(), name.as_deref(), subresource.as_deref()) {
        ("GET", None, None) if is_watch(query) => {
            watch(sandbox, &rt, namespace.clone(), query).map(Served::Watch)
        }
        ("GET", None, None) => list_objects(&call),
        ("POST", None, None) if is_review(&rt) => {
            review(sandbox, &rt, parse_body(body)?).map(|review| Served::Object(201, review))
        }
        ("POST", None, None) => create_object(&call),
        ("GET", Some(name), None | Some("status")) => get_object(&call, name),
        ("PUT", Some(name), status @ (None | Some("status"))) => update_object(&call, name, status),
        ("PATCH", Some(name), status @ (None | Some("status"))) => {
            patch_object(&call, name, status)
        }
        ("DELETE", Some(name), None) => delete_object(&call, name),
        (_, Some(name), Some(subresource)) => {
            match crate::subresources::serve(&call, method, name, subresource) {
                Some(served) => served,
                None => Err(method_not_allowed(method)),
            }
        }
        _ => Err(method_not_allowed(method)),
    }
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        format!("{method} is not supported here"),
    )
}

fn is_review(rt: &ResourceType) -> bool {
    rt.group == "authorization.k8s.io" || rt.group == "authentication.k8s.io"
}

/// The objects as a Table when the client asks for one and the kind prints as one; `next` is
/// the continue token of a list chunk (kubectl asks for 500 rows at a time and stops where a
/// chunk has none).
fn as_table(
    call: &Call<'_>,
    items: &[Value],
    resource_version: u64,
    next: Option<&str>,
) -> Option<Served> {
    if !wants_table(call.headers) {
        return None;
    }
    crate::tables::table(
        strategy::of(call.rt).printer,
        call.rt,
        items,
        resource_version,
        include_object(call.query),
        call.now,
    )
    .map(|mut table| {
        if let Some(next) = next {
            table["metadata"]["continue"] = json!(next);
        }
        Served::Object(200, table)
    })
}

fn list_objects(call: &Call<'_>) -> Result<Served, ApiError> {
    let (rt, query) = (call.rt, call.query);
    let (labels, fields) = selectors(query)?;
    let limit = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l: &usize| *l > 0);
    let store = call.sandbox.lock();
    let (items, next) = store.list(
        rt,
        call.namespace,
        &labels,
        &fields,
        limit,
        query.get("continue").map(String::as_str),
    );
    let rv = store.resource_version();
    if let Some(table) = as_table(call, &items, rv, next.as_deref()) {
        return Ok(table);
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    Ok(Served::Object(
        200,
        json!({"apiVersion": rt.api_version(), "kind": list_kind(rt), "metadata": metadata, "items": items}),
    ))
}

fn create_object(call: &Call<'_>) -> Result<Served, ApiError> {
    let object = parse_body(call.body)?;
    let mut store = call.sandbox.lock();
    let created = if call.query.get("dryRun").is_some_and(|d| d == "All") {
        store.create_dry_run(call.rt, call.namespace, object, call.now)?
    } else {
        store.create(call.rt, call.namespace, object, call.now)?
    };
    Ok(Served::Object(201, created))
}

fn get_object(call: &Call<'_>, name: &str) -> Result<Served, ApiError> {
    let store = call.sandbox.lock();
    let object = store.get(call.rt, call.namespace, name)?;
    if let Some(table) = as_table(
        call,
        std::slice::from_ref(&object),
        store.resource_version(),
        None,
    ) {
        return Ok(table);
    }
    Ok(Served::Object(200, object))
}

fn update_object(call: &Call<'_>, name: &str, status: Option<&str>) -> Result<Served, ApiError> {
    let object = parse_body(call.body)?;
    let updated = call
        .sandbox
        .lock()
        .update(call.rt, call.namespace, name, object, status)?;
    Ok(Served::Object(200, updated))
}

fn patch_object(call: &Call<'_>, name: &str, status: Option<&str>) -> Result<Served, ApiError> {
    let content_type = call
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let kind = match content_type.split(';').next().unwrap_or_default().trim() {
        "application/merge-patch+json" => PatchKind::Merge,
        "application/json-patch+json" => PatchKind::Json,
        "application/strategic-merge-patch+json" => PatchKind::Strategic,
        "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the patch content type {other} is not supported"),
            ));
        }
    };
    let manager = call.query.get("fieldManager").map(String::as_str);
    if kind == PatchKind::Apply && manager.is_none_or(str::is_empty) {
        return Err(ApiError::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let patch = parse_body(call.body)?;
    let patched = call.sandbox.lock().patch(
        call.rt,
        call.namespace,
        name,
        kind,
        &patch,
        status,
        manager,
        call.now,
    )?;
    Ok(Served::Object(200, patched))
}

fn delete_object(call: &Call<'_>, name: &str) -> Result<Served, ApiError> {
    let options = parse_body(call.body)?;
    let grace = call
        .query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| options["gracePeriodSeconds"].as_i64());
    let options = DeleteOptions {
        grace_period_seconds: grace,
        uid: options["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: options["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
    };
    let deleted = call
        .sandbox
        .lock()
        .delete(call.rt, call.namespace, name, &options, call.now)?;
    Ok(Served::Object(200, deleted))
}

/// A review. Self-subject access and rules reviews are answered as allowed: the sandbox's own
/// API lets every client do everything. Token and subject access reviews are evaluated
/// (`access`), for servers that delegate to the API server.
fn review(sandbox: &Sandbox, rt: &ResourceType, mut review: Value) -> Result<Value, ApiError> {
    if !review.is_object() {
        return Err(ApiError::bad_request("the body is not an object"));
    }
    review["apiVersion"] = json!(rt.api_version());
    review["kind"] = json!(rt.kind);
    review["metadata"] = json!({"creationTimestamp": null});
    match rt.kind.as_str() {
        "TokenReview" => return Ok(crate::access::token_review(sandbox, review)),
        "SubjectAccessReview" => return Ok(crate::access::subject_access_review(sandbox, review)),
        _ => {}
    }
    review["status"] = match rt.kind.as_str() {
        "SelfSubjectRulesReview" => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
        _ => json!({"allowed": true, "reason": "the sandbox authorizes every request"}),
    };
    Ok(review)
}

fn watch(
    sandbox: &Sandbox,
    rt: &ResourceType,
    namespace: Option<String>,
    query: &HashMap<String, String>,
) -> Result<WatchStream, ApiError> {
    let (labels, fields) = selectors(query)?;
    let timeout = Duration::from_secs(
        query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1800),
    );
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let from = query
        .get("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0);
    let mut store = sandbox.lock();
    let current = store.resource_version();
    let type_key = rt.key();
    let matches = {
        let namespace = namespace.clone();
        move |object: &Value, change_namespace: &str| {
            namespace.as_deref().is_none_or(|n| n == change_namespace)
                && labels.matches_labels(object)
                && fields.matches_fields(object)
        }
    };
    let line = |kind: &str, object: &Value| {
        Ok::<_, std::io::Error>(Bytes::from(format!(
            "{}\n",
            json!({"type": kind, "object": object})
        )))
    };
    let mut initial: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    let receiver = match from {
        // No version: the current state as ADDED, then changes (as a real server does).
        None => {
            let (items, _) = store.list(
                rt,
                namespace.as_deref(),
                &Selector::default(),
                &Selector::default(),
                None,
                None,
            );
            for item in items {
                let ns = item["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if matches(&item, &ns) {
                    initial.push(line("ADDED", &item));
                }
            }
            store.watch(rt, current)?.1
        }
        Some(from) => match store.watch(rt, from) {
            Ok((backlog, receiver)) => {
                for change in backlog {
                    if matches(&change.object, &change.namespace) {
                        initial.push(line(change.kind.as_str(), &change.object));
                    }
                }
                receiver
            }
            Err(gone) => {
                let event = json!({"type": "ERROR", "object": gone.status()});
                return Ok(futures::stream::iter([Ok(Bytes::from(format!("{event}\n")))]).boxed());
            }
        },
    };
    drop(store);
    let last_sent = from.unwrap_or(current);
    let api_version = rt.api_version();
    let kind = rt.kind.clone();
    let sandbox = sandbox.clone();
    let selectors: Arc<str> = format!(
        "labelSelector={:?} fieldSelector={:?}",
        query.get("labelSelector").map_or("", String::as_str),
        query.get("fieldSelector").map_or("", String::as_str)
    )
    .into();
    let live = futures::stream::unfold(
        (receiver, last_sent),
        move |(mut receiver, mut last_sent)| {
            let sandbox = sandbox.clone();
            let selectors = selectors.clone();
            let matches = matches.clone();
            let type_key = type_key.clone();
            let api_version = api_version.clone();
            let kind = kind.clone();
            async move {
                loop {
                    let next = if bookmarks {
                        match tokio::time::timeout(Duration::from_secs(5), receiver.recv()).await {
                            Ok(next) => next,
                            // A real server's bookmark carries its watch cache's current
                            // version, not the last one of the watched type: a quiet type's
                            // resume point would otherwise fall out of the (global) history.
                            // Every change recorded up to `current` is in this feed already
                            // (the store sends under its lock), so an empty feed means all of
                            // them have been seen.
                            Err(_) => {
                                let current = sandbox.lock().resource_version();
                                match receiver.try_recv() {
                                    Ok(change) => Ok(change),
                                    Err(TryRecvError::Lagged(missed)) => {
                                        Err(RecvError::Lagged(missed))
                                    }
                                    Err(TryRecvError::Closed) => Err(RecvError::Closed),
                                    Err(TryRecvError::Empty) => {
                                        last_sent = last_sent.max(current);
                                        let bookmark = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": last_sent.to_string()}}});
                                        return Some((
                                            Ok(Bytes::from(format!("{bookmark}\n"))),
                                            (receiver, last_sent),
                                        ));
                                    }
                                }
                            }
                        }
                    } else {
                        receiver.recv().await
                    };
                    match next {
                        Ok(change) => {
                            if change.resource_version <= last_sent || change.type_key != type_key {
                                continue;
                            }
                            last_sent = change.resource_version;
                            if !matches(&change.object, &change.namespace) {
                                continue;
                            }
                            let event =
                                json!({"type": change.kind.as_str(), "object": change.object});
                            return Some((
                                Ok(Bytes::from(format!("{event}\n"))),
                                (receiver, last_sent),
                            ));
                        }
                        // A real API server closes a watcher that cannot keep up ("Forcing
                        // watcher close due to unresponsiveness") without an error event:
                        // the client watches again from the last version it saw, which the
                        // history serves unless it has been compacted away (then 410).
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(%kind, %selectors, missed, "closing a watch that fell behind its feed; it resumes from its last version");
                            return None;
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        },
    );
    let stream = futures::stream::iter(initial)
        .chain(live)
        .take_until(tokio::time::sleep(timeout));
    Ok(stream.boxed())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A watcher that falls behind is closed, not told to relist: its resume from the last
    /// version it saw is served from the history. (The sandbox used to answer 410 here, and
    /// a kube-runtime watcher that fell behind relisted every object it watches.)
    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_closed_and_resumes_without_a_relist() {
        let sandbox = Sandbox::new();
        let (config_maps, from) = {
            let store = sandbox.lock();
            let config_maps = store.find_type("", "v1", "configmaps").unwrap();
            (config_maps, store.resource_version())
        };
        let query = HashMap::from([("resourceVersion".to_string(), from.to_string())]);
        let mut behind = watch(&sandbox, &config_maps, None, &query).unwrap();
        let changes = crate::store::WATCH_FEED_CAPACITY + 1;
        let now = Utc::now();
        for i in 0..changes {
            let config_map = json!({"metadata": {"name": format!("cm-{i}")}});
            sandbox
                .lock()
                .create(&config_maps, Some("default"), config_map, now)
                .unwrap();
        }
        assert!(
            behind.next().await.is_none(),
            "a watch that fell behind ends without an error event"
        );
        let resumed: Vec<Value> = watch(&sandbox, &config_maps, None, &query)
            .unwrap()
            .take(changes)
            .map(|line| serde_json::from_slice(&line.unwrap()).unwrap())
            .collect()
            .await;
        assert_eq!(resumed.len(), changes);
        assert!(resumed.iter().all(|event| event["type"] == "ADDED"));
        assert_eq!(
            resumed[changes - 1]["object"]["metadata"]["name"],
            format!("cm-{}", changes - 1)
        );
    }
}
