//! The simulator's HTTP front: the ECI RPC protocol at `/`, the admin API under `/_sim/`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use chrono::Utc;
use eci_types::wire::{ErrorBody, Tag};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::actions::{self, Call};
use crate::auth::{AccessKey, Authenticator, RawRequest};
use crate::config::{CredentialConfig, FaultConfig, SimConfig, TimingConfig};
use crate::error::ApiError;
use crate::state::spot::SpotReleaseOutcome;
use crate::state::stats::Stats;
use crate::state::{Sim, format_time};
use crate::throttle::Throttle;
use crate::xml;

/// The AccessKey pair accepted when none is configured (documented in the README).
pub const DEFAULT_ACCESS_KEY_ID: &str = "LTAI-eci-simulator";
pub const DEFAULT_ACCESS_KEY_SECRET: &str = "eci-simulator-secret";

struct Core {
    sim: Sim,
    auth: Authenticator,
    throttle: Throttle,
    faults: BTreeMap<String, FaultConfig>,
}

/// A simulator: cheap to clone, all clones share one simulated region.
#[derive(Clone)]
pub struct Simulator {
    core: Arc<Mutex<Core>>,
}

/// What a fault roll decided for one call.
#[derive(Default)]
struct Roll {
    latency: Duration,
    hang: Option<Duration>,
    error: bool,
    throttle: bool,
    lose_response: bool,
}

impl Simulator {
    /// `credentials` are accepted besides those in `config`; with none at all, the default
    /// pair [`DEFAULT_ACCESS_KEY_ID`]/[`DEFAULT_ACCESS_KEY_SECRET`] is.
    pub fn new(config: SimConfig, credentials: Vec<CredentialConfig>) -> Result<Self, String> {
        let mut keys: HashMap<String, AccessKey> = config
            .credentials
            .iter()
            .chain(&credentials)
            .map(|c| {
                (
                    c.access_key_id.clone(),
                    AccessKey {
                        secret: c.access_key_secret.clone(),
                        security_token: c.security_token.clone(),
                    },
                )
            })
            .collect();
        if keys.is_empty() {
            keys.insert(
                DEFAULT_ACCESS_KEY_ID.into(),
                AccessKey {
                    secret: DEFAULT_ACCESS_KEY_SECRET.into(),
                    security_token: None,
                },
            );
        }
        let auth = Authenticator::new(keys, config.max_clock_skew_seconds);
        let throttle = Throttle::new(config.throttling.clone());
        let faults = config.faults.clone();
        let sim = Sim::new(config)?;
        Ok(Self {
            core: Arc::new(Mutex::new(Core {
                sim,
                auth,
                throttle,
                faults,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        match self.core.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Runs `f` on the simulated region after bringing it up to date.
    pub fn with_state<T>(&self, f: impl FnOnce(&mut Sim) -> T) -> T {
        let mut core = self.lock();
        core.sim.advance(Utc::now());
        f(&mut core.sim)
    }

    pub fn set_faults(&self, action: &str, fault: FaultConfig) {
        self.lock().faults.insert(action.to_string(), fault);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/", any(rpc))
            .route("/_sim/healthz", get(|| async { "ok" }))
            .route("/_sim/stats", get(admin_stats))
            .route("/_sim/groups", get(admin_groups).post(admin_create_groups))
            .route("/_sim/spot-release", post(admin_spot_release))
            .route("/_sim/stock", put(admin_stock))
            .route("/_sim/log", post(admin_append_log))
            .route("/_sim/timing", put(admin_set_timing))
            .route("/_sim/exec/", get(exec_socket))
            .route(
                "/_sim/faults",
                put(admin_set_faults).delete(admin_clear_faults),
            )
            .with_state(self.clone())
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Starts serving on `addr` (port 0 for any free port) in the background.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<RunningSimulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = self.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _stop_requested_or_sender_dropped = stopped.await;
            };
            if let Err(error) = server.serve(listener, shutdown).await {
                warn!(%error, "ECI simulator stopped with an error");
            }
        });
        info!(%addr, "ECI simulator listening");
        Ok(RunningSimulator {
            addr,
            simulator: self,
            stop: Some(stop),
            task,
        })
    }

    fn roll(core: &mut Core, action: &str) -> Roll {
        let Some(fault) = core
            .faults
            .get(action)
            .or_else(|| core.faults.get("*"))
            .cloned()
        else {
            return Roll::default();
        };
        let rng = core.sim.rng();
        let mut hit = |rate: f64| rate > 0.0 && rng.random_bool(rate.clamp(0.0, 1.0));
        let hang = hit(fault.timeout_rate).then(|| Duration::from_millis(fault.timeout_ms));
        let error = hit(fault.error_rate);
        let throttle = hit(fault.throttle_rate);
        let lose_response = hit(fault.lost_response_rate);
        let latency = fault
            .latency_ms
            .map(|range| {
                let (lo, hi) = (range.min.min(range.max), range.max.max(range.min));
                Duration::from_millis(core.sim.rng().random_range(lo..=hi))
            })
            .unwrap_or_default();
        Roll {
            latency,
            hang,
            error,
            throttle,
            lose_response,
        }
    }

    /// Handles one RPC request; returns the response and how long to stall before sending it.
    fn handle(&self, request: &RawRequest<'_>, host: &str) -> (Duration, Response) {
        let now = Utc::now();
        let mut core = self.lock();
        core.sim.advance(now);
        let request_id = core.sim.request_id();
        let core = &mut *core;
        let authenticated = match core.auth.authenticate(request, now) {
            Ok(authenticated) => authenticated,
            Err(error) => {
                core.sim
                    .stats
                    .action("(unauthenticated)")
                    .errors
                    .entry(error.code.clone())
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                return (
                    Duration::ZERO,
                    error_response(&error, &request_id, host, false, None),
                );
            }
        };
        let action = authenticated.action.as_str();
        let known = actions::serves(action);
        let stats_key = if known { action } else { "(unknown)" };
        core.sim.stats.action(stats_key).calls += 1;
        let roll = Self::roll(core, action);
        let throttle_config = core.throttle.config().clone();
        let throttled = roll.throttle || (known && !core.throttle.admit(action, now));
        let result = if throttled {
            core.sim.stats.action(stats_key).throttled += 1;
            Err(ApiError::new(
                throttle_config.http_status,
                "Throttling.User",
                "Request was denied due to user flow control.",
            ))
        } else if roll.error || roll.hang.is_some() {
            core.sim.stats.action(stats_key).injected_faults += 1;
            Err(if core.sim.rng().random_bool(0.5) {
                ApiError::internal()
            } else {
                ApiError::unavailable()
            })
        } else {
            let call = Call {
                action,
                params: &authenticated.params,
                now,
                host,
                request_id: request_id.clone(),
            };
            let result = actions::dispatch(&mut core.sim, &call);
            if roll.lose_response && result.is_ok() {
                core.sim.stats.action(stats_key).injected_faults += 1;
                Err(ApiError::unavailable())
            } else {
                result
            }
        };
        let stats = core.sim.stats.action(stats_key);
        let response = match result {
            Ok(body) => {
                stats.succeeded += 1;
                success_response(&body, action, authenticated.xml, &request_id)
            }
            Err(error) => {
                *stats.errors.entry(error.code.clone()).or_insert(0) += 1;
                let retry_after = throttled
                    .then_some(throttle_config.retry_after_ms)
                    .flatten();
                error_response(&error, &request_id, host, authenticated.xml, retry_after)
            }
        };
        (roll.latency + roll.hang.unwrap_or_default(), response)
    }
}

/// A simulator serving in the background; dropping it stops the server.
pub struct RunningSimulator {
    pub addr: SocketAddr,
    pub simulator: Simulator,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningSimulator {
    /// `http://127.0.0.1:PORT`, for `--eci-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _server_already_gone = stop.send(());
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _join_result = task.await;
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _server_already_gone = stop.send(());
        }
    }
}

fn json_response(status: u16, body: String, request_id: &str, xml: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if xml {
        "text/xml;charset=utf-8"
    } else {
        "application/json;charset=utf-8"
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-acs-request-id", value);
    }
    response
}

fn success_response(body: &Value, action: &str, xml: bool, request_id: &str) -> Response {
    let text = if xml {
        xml::render(&format!("{action}Response"), body)
    } else {
        body.to_string()
    };
    json_response(200, text, request_id, xml)
}

fn error_response(
    error: &ApiError,
    request_id: &str,
    host: &str,
    xml: bool,
    retry_after_ms: Option<u64>,
) -> Response {
    let body = ErrorBody {
        request_id: request_id.to_string(),
        host_id: host.to_string(),
        code: error.code.clone(),
        message: error.message.clone(),
        recommend: format!(
            "https://api.aliyun.com/troubleshoot?q={}&product=Eci&requestId={request_id}",
            error.code
        ),
    };
    let value = serde_json::to_value(&body).unwrap_or(Value::Null);
    let text = if xml {
        xml::render("Error", &value)
    } else {
        value.to_string()
    };
    let mut response = json_response(error.status, text, request_id, xml);
    if let Some(ms) = retry_after_ms
        && let Ok(value) = HeaderValue::from_str(&ms.to_string())
    {
        response.headers_mut().insert("x-acs-retry-after", value);
    }
    response
}

async fn rpc(
    State(simulator): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                name.as_str().to_ascii_lowercase(),
                value.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    let host = headers
        .iter()
        .find(|(n, _)| n == "host")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let request = RawRequest {
        method: method.as_str(),
        query: uri.query().unwrap_or(""),
        headers,
        body: &body,
    };
    let (stall, response) = simulator.handle(&request, &host);
    if !stall.is_zero() {
        tokio::time::sleep(stall).await;
    }
    response
}

#[derive(Serialize)]
struct StatsView {
    #[serde(flatten)]
    stats: Stats,
    groups_total: usize,
    groups_by_status: BTreeMap<String, usize>,
    stock: Vec<StockView>,
}

#[derive(Serialize, Deserialize)]
pub struct StockView {
    pub zone: String,
    #[serde(default)]
    pub spec: Option<String>,
    /// Remaining instances; `null` = unlimited.
    #[serde(default)]
    pub count: Option<u64>,
}

async fn admin_stats(State(simulator): State<Simulator>) -> Response {
    let view = simulator.with_state(|sim| {
        let mut groups_by_status = BTreeMap::new();
        for group in sim.groups() {
            *groups_by_status
                .entry(group.status.to_string())
                .or_insert(0) += 1;
        }
        StatsView {
            stats: sim.stats.clone(),
            groups_total: sim.len(),
            groups_by_status,
            stock: sim
                .stock()
                .into_iter()
                .map(|(zone, spec, count)| StockView {
                    zone,
                    spec,
                    count: Some(count),
                })
                .collect(),
        }
    });
    axum::Json(view).into_response()
}

#[derive(Serialize)]
struct GroupView {
    id: String,
    name: String,
    status: String,
    ip: String,
    zone: String,
    spot: bool,
    /// When the create arrived (millisecond precision, for latency measurements).
    created_at: String,
    /// When the status last changed (millisecond precision; ECI itself shows whole seconds).
    status_changed_at: String,
    release_at: String,
    tags: Vec<Tag>,
}

async fn admin_groups(State(simulator): State<Simulator>) -> Response {
    let groups: Vec<GroupView> = simulator.with_state(|sim| {
        sim.groups()
            .map(|g| GroupView {
                id: g.id.clone(),
                name: g.spec.container_group_name.clone(),
                status: g.status.to_string(),
                ip: g.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                zone: g.zone.clone(),
                spot: g.is_spot(),
                created_at: g
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                status_changed_at: g
                    .status_changed_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                release_at: g.release_at.map(format_time).unwrap_or_default(),
                tags: g.spec.tag.clone(),
            })
            .collect()
    });
    axum::Json(groups).into_response()
}

/// Answer of `POST /_sim/groups`, one entry per request in order: the new group's id, or why
/// the create was refused (the error `CreateContainerGroup` would have answered).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreatedGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Groups as an earlier fleet left them: each body entry is `CreateContainerGroup`'s
/// parameters (as JSON) and goes through the same validation, placement, stock and timing,
/// but not through signatures, throttling or faults, and its ClientToken is not remembered.
/// Benchmarks load a large fleet with it where ECI's 20 creates/s would take most of an hour.
async fn admin_create_groups(State(simulator): State<Simulator>, body: Bytes) -> Response {
    let requests: Vec<eci_types::wire::CreateContainerGroupRequest> =
        match serde_json::from_slice(&body) {
            Ok(requests) => requests,
            Err(error) => return bad_request(format!("invalid groups request: {error}")),
        };
    let created: Vec<CreatedGroup> = simulator.with_state(|sim| {
        let now = Utc::now();
        requests
            .into_iter()
            .map(|request| match sim.create(request, now) {
                Ok(id) => CreatedGroup {
                    container_group_id: Some(id),
                    error: None,
                },
                Err(error) => CreatedGroup {
                    container_group_id: None,
                    error: Some(format!("{}: {}", error.code, error.message)),
                },
            })
            .collect()
    });
    axum::Json(created).into_response()
}

/// Body of `POST /_sim/spot-release`: explicit ids, or a fraction of the running spot fleet
/// (optionally only groups with all of `tags`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpotReleaseRequest {
    pub container_group_ids: Vec<String>,
    pub fraction: Option<f64>,
    pub tags: Vec<Tag>,
    pub lead_seconds: Option<f64>,
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

async fn admin_spot_release(State(simulator): State<Simulator>, body: Bytes) -> Response {
    let request: SpotReleaseRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return bad_request(format!("invalid spot-release request: {error}")),
    };
    if request.container_group_ids.is_empty() == request.fraction.is_none() {
        return bad_request("give either container_group_ids or fraction");
    }
    if request.fraction.is_some_and(|f| !(0.0..=1.0).contains(&f)) {
        return bad_request("fraction must be between 0 and 1");
    }
    let outcome: SpotReleaseOutcome = simulator.with_state(|sim| {
        let lead = request
            .lead_seconds
            .unwrap_or(sim.config().spot.default_lead_seconds);
        let ids = match request.fraction {
            Some(fraction) => sim.pick_spot_fraction(fraction, &request.tags),
            None => request.container_group_ids.clone(),
        };
        sim.spot_release(&ids, lead, Utc::now())
    });
    axum::Json(outcome).into_response()
}

async fn admin_stock(State(simulator): State<Simulator>, body: Bytes) -> Response {
    let request: StockView = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return bad_request(format!("invalid stock request: {error}")),
    };
    simulator
        .with_state(|sim| sim.set_stock(&request.zone, request.spec.as_deref(), request.count));
    axum::Json(request).into_response()
}

/// Body of `POST /_sim/log`: lines a running container writes to its log now.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendLogRequest {
    pub container_group_id: String,
    pub container: String,
    pub lines: Vec<String>,
}

async fn admin_append_log(State(simulator): State<Simulator>, body: Bytes) -> Response {
    let request: AppendLogRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return bad_request(format!("invalid log request: {error}")),
    };
    if request.lines.iter().any(|line| line.contains('\n')) {
        return bad_request("a line may not contain a newline");
    }
    let outcome = simulator.with_state(|sim| {
        sim.append_log(
            &request.container_group_id,
            &request.container,
            &request.lines,
            Utc::now(),
        )
    });
    match outcome {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(message) => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": message })),
        )
            .into_response(),
    }
}

/// Body of `PUT /_sim/faults`: a [`FaultConfig`] for `action` (`*` = every action).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultRequest {
    pub action: Option<String>,
    #[serde(flatten)]
    pub fault: FaultConfig,
}

/// `PUT /_sim/timing`: how long instances created from now on take (a [`TimingConfig`],
/// omitted fields at real ECI's values), so a run can start its fleet fast and then see ECI's
/// real start times.
async fn admin_set_timing(State(simulator): State<Simulator>, body: Bytes) -> Response {
    let timing: TimingConfig = match serde_json::from_slice(&body) {
        Ok(timing) => timing,
        Err(error) => return bad_request(format!("invalid timing request: {error}")),
    };
    let ranges = [timing.schedule_ms, timing.start_ms, timing.restart_ms];
    if ranges.iter().any(|r| r.min > r.max) {
        return bad_request("every range needs min <= max");
    }
    simulator.with_state(|sim| sim.set_timing(timing.clone()));
    axum::Json(timing).into_response()
}

async fn admin_set_faults(State(simulator): State<Simulator>, body: Bytes) -> Response {
    let request: FaultRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return bad_request(format!("invalid faults request: {error}")),
    };
    let rates = [
        request.fault.error_rate,
        request.fault.throttle_rate,
        request.fault.timeout_rate,
        request.fault.lost_response_rate,
    ];
    if rates.iter().any(|r| !(0.0..=1.0).contains(r)) {
        return bad_request("rates must be between 0 and 1");
    }
    let action = request.action.clone().unwrap_or_else(|| "*".into());
    simulator.set_faults(&action, request.fault.clone());
    axum::Json(request).into_response()
}

async fn admin_clear_faults(State(simulator): State<Simulator>) -> Response {
    simulator.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /_sim/exec/?s=<session>`: the WebSocket of an interactive `ExecContainerCommand`,
/// framed as a raw terminal (ECI's own framing is not public): binary or text messages in are
/// stdin, binary messages out are the output, a close from the client ends stdin, and the
/// simulator closes with the reason `exit status N` when the command ends.
async fn exec_socket(
    State(simulator): State<Simulator>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let id = query.get("s").cloned().unwrap_or_default();
    let Some(session) = simulator.with_state(|sim| sim.take_exec_session(&id, Utc::now())) else {
        return (
            StatusCode::NOT_FOUND,
            "no such exec session (a session is good for one connection within 30 s)",
        )
            .into_response();
    };
    upgrade.on_upgrade(move |socket| run_exec_session(socket, session))
}

async fn run_exec_session(
    mut socket: axum::extract::ws::WebSocket,
    session: crate::state::ExecSession,
) {
    use crate::commands::{Effect, Program};
    use axum::extract::ws::{CloseFrame, Message};
    use futures::{SinkExt, StreamExt};

    let container = session.container;
    let (mut program, mut effects) = Program::start(&session.argv, &container, session.tty);
    loop {
        for effect in std::mem::take(&mut effects) {
            match effect {
                Effect::Output(text) => {
                    let text = if session.tty && !matches!(program, Program::Shell { .. }) {
                        text.replace('\n', "\r\n")
                    } else {
                        text
                    };
                    if socket
                        .send(Message::Binary(text.into_bytes().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Effect::Sleep(duration) => tokio::time::sleep(duration).await,
                Effect::Exit(code) => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: axum::extract::ws::close_code::NORMAL,
                            reason: format!("exit status {code}").into(),
                        })))
                        .await;
                    let _ = socket.close().await;
                    return;
                }
            }
        }
        effects = match socket.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                program.input(&String::from_utf8_lossy(&bytes), &container)
            }
            Some(Ok(Message::Text(text))) => program.input(text.as_str(), &container),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                let mut ended = program.end_of_input();
                if ended.is_empty() {
                    ended.push(Effect::Exit(0));
                }
                ended
            }
            Some(Ok(_)) => Vec::new(),
        };
    }
}
