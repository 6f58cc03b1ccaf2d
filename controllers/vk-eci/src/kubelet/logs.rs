//! `/containerLogs/{ns}/{pod}/{container}`: one `DescribeContainerLog` call, or a followed
//! stream of them (see `vk_eci_core::kubelet::logs`), all within one shared call budget.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use chrono::{TimeDelta, Utc};
use eci_types::wire::DescribeContainerLogRequest;
use http::{StatusCode, header};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;
use tracing::debug;
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::cache::{CachedContainerState, CachedPod};
use vk_eci_core::kubelet::logs::{FollowCursor, LogOptions, poll_interval};

use super::{KubeletState, streamed, take_budget, text};

/// The fastest a followed stream polls: with ECI's call latency a new line shows within 2 s.
const FOLLOW_POLL_FLOOR: TimeDelta = TimeDelta::milliseconds(1000);
/// The longest a request waits for the shared budget before it is told the budget is out.
const BUDGET_WAIT: Duration = Duration::from_secs(5);

/// What answers a log, exec or attach request: the container group and what the pod's status says.
pub(crate) struct Target {
    pub(crate) group_id: String,
    pub(crate) pod: Arc<CachedPod>,
}

fn find(
    state: &KubeletState,
    namespace: &str,
    name: &str,
    container: &str,
    options: &LogOptions,
) -> Result<Target, (StatusCode, String)> {
    let target = target(state, namespace, name, container)?;
    if options.previous {
        let restarted = target
            .pod
            .container_status(container)
            .is_some_and(|s| s.restart_count > 0 || s.terminated_before);
        if !restarted {
            return Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "previous terminated container \"{container}\" in pod \"{name}\" not found"
                ),
            ));
        }
    }
    Ok(target)
}

/// The pod `namespace/name` on this node, its `container` and its container group.
pub(crate) fn target(
    state: &KubeletState,
    namespace: &str,
    name: &str,
    container: &str,
) -> Result<Target, (StatusCode, String)> {
    let pod = state
        .ctx
        .pods
        .get(&ObjectRef::new(name).within(namespace))
        .filter(|pod| pod.spec.node_name.as_deref() == Some(state.ctx.settings.node_name.as_str()))
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!(
                    "pod {namespace}/{name} is not on node {}",
                    state.ctx.settings.node_name
                ),
            )
        })?;
    if !pod.has_container(container) {
        return Err((
            StatusCode::NOT_FOUND,
            format!("container {container} is not valid for pod {name}"),
        ));
    }
    let group_id = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INSTANCE_ID))
        .filter(|id| !id.is_empty())
        .cloned()
        .ok_or_else(|| {
            (StatusCode::BAD_REQUEST,
                format!(
                    "container \"{container}\" in pod \"{name}\" is waiting to start: no ECI instance yet"
                ),
            )
        })?;
    Ok(Target { group_id, pod })
}

/// Whether the followed container has ended (or its pod is gone), as the cache says.
fn ended(state: &KubeletState, namespace: &str, name: &str, uid: &str, container: &str) -> bool {
    let Some(pod) = state.ctx.pods.get(&ObjectRef::new(name).within(namespace)) else {
        return true;
    };
    if pod.metadata.uid.as_deref() != Some(uid) {
        return true;
    }
    pod.container_status(container)
        .is_some_and(|s| s.state == CachedContainerState::Terminated)
}

/// Why a budgeted call did not happen.
enum CallFailure {
    BudgetExhausted,
    Eci(eci_client::EciError),
}

impl CallFailure {
    fn message(&self, state: &KubeletState) -> String {
        match self {
            CallFailure::BudgetExhausted => format!(
                "vk-eci: the DescribeContainerLog budget ({} calls a minute, shared by every log request on this node) is exhausted; try again shortly",
                state.log_calls_per_minute
            ),
            CallFailure::Eci(error) => format!("vk-eci: ECI DescribeContainerLog failed: {error}"),
        }
    }
}

async fn call(
    state: &KubeletState,
    request: &DescribeContainerLogRequest,
) -> Result<String, CallFailure> {
    if !take_budget(&state.log_budget, BUDGET_WAIT).await {
        return Err(CallFailure::BudgetExhausted);
    }
    let result = state.ctx.eci.call(request).await;
    state.ctx.observe_eci(&result);
    result.map(|r| r.content).map_err(CallFailure::Eci)
}

fn plain(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

pub async fn container_logs(
    state: Arc<KubeletState>,
    namespace: &str,
    name: &str,
    container: &str,
    query: &str,
) -> Response {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let options = match LogOptions::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        Ok(options) => options,
        Err(error) => return text(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let target = match find(&state, namespace, name, container, &options) {
        Ok(target) => target,
        Err((status, message)) => return text(status, message),
    };
    if options.nothing_to_read() {
        return plain(String::new());
    }
    let first = options.first_request(&target.group_id, container);
    if !options.follow {
        return match call(&state, &first).await {
            Ok(content) => plain(content),
            Err(CallFailure::BudgetExhausted) => text(
                StatusCode::TOO_MANY_REQUESTS,
                CallFailure::BudgetExhausted.message(&state),
            ),
            Err(error) => text(StatusCode::BAD_GATEWAY, error.message(&state)),
        };
    }
    let started = Utc::now();
    let content = match call(&state, &first).await {
        Ok(content) => content,
        Err(CallFailure::BudgetExhausted) => {
            return text(
                StatusCode::TOO_MANY_REQUESTS,
                CallFailure::BudgetExhausted.message(&state),
            );
        }
        Err(error) => return text(StatusCode::BAD_GATEWAY, error.message(&state)),
    };
    let (sender, receiver) = mpsc::channel::<String>(64);
    let uid = target.pod.metadata.uid.clone().unwrap_or_default();
    let follow = Follow {
        state: state.clone(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid,
        container: container.to_string(),
        options,
        first,
        started,
    };
    tokio::spawn(follow.run(content, sender));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        streamed(receiver),
    )
        .into_response()
}

/// Sends what `container` writes from now on to `sender` until it ends (or the receiver
/// leaves): what attach shows, as ECI cannot attach to a container's stdio.
pub(crate) async fn follow_new_output(
    state: Arc<KubeletState>,
    namespace: &str,
    name: &str,
    container: &str,
    sender: mpsc::Sender<String>,
) -> Result<(), String> {
    let options = LogOptions {
        follow: true,
        tail_lines: Some(0),
        ..LogOptions::default()
    };
    let target = find(&state, namespace, name, container, &options).map_err(|(_, m)| m)?;
    let first = options.first_request(&target.group_id, container);
    let started = Utc::now();
    let content = call(&state, &first).await.map_err(|f| f.message(&state))?;
    let follow = Follow {
        state: state.clone(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: target.pod.metadata.uid.clone().unwrap_or_default(),
        container: container.to_string(),
        options,
        first,
        started,
    };
    follow.run(content, sender).await;
    Ok(())
}

/// One followed stream.
struct Follow {
    state: Arc<KubeletState>,
    namespace: String,
    name: String,
    uid: String,
    container: String,
    options: LogOptions,
    first: DescribeContainerLogRequest,
    started: chrono::DateTime<Utc>,
}

/// Counts a stream while it lives.
struct StreamGuard(Arc<KubeletState>);

impl StreamGuard {
    fn new(state: Arc<KubeletState>) -> Self {
        state.log_streams.fetch_add(1, Ordering::Relaxed);
        state.ctx.metrics.kubelet_log_streams.inc();
        Self(state)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.log_streams.fetch_sub(1, Ordering::Relaxed);
        self.0.ctx.metrics.kubelet_log_streams.dec();
    }
}

impl Follow {
    async fn run(self, first_content: String, sender: mpsc::Sender<String>) {
        let _counted = StreamGuard::new(self.state.clone());
        let mut cursor = FollowCursor::new(&self.options);
        let mut content = first_content;
        if self.options.tail_lines == Some(0) {
            // ECI cannot be asked for no lines: what the first call found is history.
            cursor.skip(&content);
            content.clear();
        }
        loop {
            let step = cursor.accept(&content, self.options.timestamps);
            for chunk in step.chunks {
                if sender.send(chunk).await.is_err() {
                    debug!(pod = %self.name, "log follower left");
                    return;
                }
            }
            if step.exhausted {
                return;
            }
            // Decide to stop before waiting, so the last lines of an ended container are read
            // by one more poll and then the stream closes.
            let was_ended = ended(
                &self.state,
                &self.namespace,
                &self.name,
                &self.uid,
                &self.container,
            );
            let streams = self.state.log_streams.load(Ordering::Relaxed);
            let wait = poll_interval(streams, self.state.log_calls_per_minute, FOLLOW_POLL_FLOOR)
                .to_std()
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                () = sender.closed() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let request = cursor.next_request(&self.first, self.started);
            content = match call(&self.state, &request).await {
                Ok(content) => content,
                Err(failure) => {
                    let _ = sender
                        .send(format!("{}\n", failure.message(&self.state)))
                        .await;
                    return;
                }
            };
            if was_ended {
                let step = cursor.accept(&content, self.options.timestamps);
                for chunk in step.chunks {
                    if sender.send(chunk).await.is_err() {
                        return;
                    }
                }
                return;
            }
        }
    }
}
