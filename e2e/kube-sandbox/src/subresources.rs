//! Subresources: `scale` (deployments, replicasets, statefulsets), `pods/eviction`,
//! `pods/binding`, `serviceaccounts/token`, and the kubelet's `pods/log`, `exec`, `attach` and
//! `portforward`, proxied to the pod's node. `status` is served by the main resource's
//! handlers, which the store then lets write only the status.

use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use crate::server::{Call, Sandbox, Served, Target, error_response, parse_body};
use crate::store::ApiError;

/// A request for subresource `subresource` of object `name`, or `None` if the type does not
/// serve it by that method.
pub(crate) fn serve(
    call: &Call<'_>,
    method: &Method,
    name: &str,
    subresource: &str,
) -> Option<Result<Served, ApiError>> {
    if !call.rt.has(subresource) {
        return None;
    }
    let served = match (method.as_str(), subresource) {
        ("GET" | "PUT" | "PATCH", "scale") => scale(call, method, name).map(|v| (200, v)),
        ("POST", "eviction") => evict(call, name).map(|v| (201, v)),
        ("POST", "token") => token(call, name).map(|v| (201, v)),
        ("POST", "binding") => bind(call, name).map(|v| (201, v)),
        _ => return None,
    };
    Some(served.map(|(code, value)| Served::Object(code, value)))
}

/// The Scale of a workload; a write sets its replicas, with a resourceVersion precondition.
fn scale(call: &Call<'_>, method: &Method, name: &str) -> Result<Value, ApiError> {
    let (rt, ns) = (call.rt, call.namespace);
    let mut store = call.sandbox.lock();
    let mut object = store.get(rt, ns, name)?;
    if method != Method::GET {
        let requested = parse_body(call.body)?;
        let replicas = requested["spec"]["replicas"]
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.replicas is required"))?;
        let precondition = requested["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if !precondition.is_empty()
            && Some(precondition) != object["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(rt, name));
        }
        object["spec"]["replicas"] = json!(replicas);
        object = store.update(rt, ns, name, object, None)?;
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": object["metadata"]["resourceVersion"], "uid": object["metadata"]["uid"]},
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0)},
    }))
}

/// An Eviction: the pod's disruption budgets decide, then a graceful delete.
fn evict(call: &Call<'_>, name: &str) -> Result<Value, ApiError> {
    let eviction = parse_body(call.body)?;
    call.sandbox.lock().evict(
        call.rt,
        call.namespace.unwrap_or("default"),
        name,
        &eviction,
        call.now,
    )?;
    Ok(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// A TokenRequest: an opaque token for an existing service account.
fn token(call: &Call<'_>, name: &str) -> Result<Value, ApiError> {
    let ns = call.namespace;
    let request = parse_body(call.body)?;
    call.sandbox.lock().get(call.rt, ns, name)?;
    let seconds = request["spec"]["expirationSeconds"]
        .as_i64()
        .unwrap_or(3600);
    let mut issued = request.clone();
    issued["status"] = json!({
        "token": format!("sandbox-token.{}.{name}.{}", ns.unwrap_or_default(), uuid::Uuid::new_v4().simple()),
        "expirationTimestamp": (call.now + chrono::TimeDelta::seconds(seconds)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    Ok(issued)
}

/// A Binding: assigns an unassigned pod to a node, as the scheduler does.
fn bind(call: &Call<'_>, name: &str) -> Result<Value, ApiError> {
    let (rt, ns) = (call.rt, call.namespace);
    let binding = parse_body(call.body)?;
    let node = binding["target"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut store = call.sandbox.lock();
    let mut pod = store.get(rt, ns, name)?;
    if !pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "pod {name} is already assigned to node {}",
                pod["spec"]["nodeName"]
            ),
        ));
    }
    pod["spec"]["nodeName"] = json!(node);
    store.update(rt, ns, name, pod, None)?;
    Ok(json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}))
}

/// Whether a request is `GET pods/{name}/log`, which the kubelet answers.
pub(crate) fn is_log(method: &Method, target: &Target) -> bool {
    target.rt.group.is_empty()
        && target.rt.plural == "pods"
        && target.subresource.as_deref() == Some("log")
        && method == Method::GET
}

/// `pods/{name}/log`: streamed from the pod's kubelet.
pub(crate) async fn log(sandbox: &Sandbox, target: &Target, uri: &Uri) -> Response {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let namespace = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    match crate::kubelet_proxy::proxy_log(sandbox, &namespace, &name, &pairs).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

/// `pods/{name}/exec|attach|portforward`: upgraded connections to the pod's kubelet.
pub(crate) async fn stream(
    State(sandbox): State<Sandbox>,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    let subresource = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    match crate::kubelet_proxy::proxy_stream(&sandbox, &subresource, &namespace, &name, request)
        .await
    {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}
