//! `/exec/{ns}/{pod}/{container}` and `/attach/{ns}/{pod}/{container}` over SPDY/3.1 (what API
//! servers speak to kubelets) or WebSocket (the channel protocol, v5/v4/v1 and base64).
//!
//! - exec without stdin or a TTY: one `ExecContainerCommand` with `Sync=true`; its
//!   `SyncResponse` (the command's output) goes to stdout. ECI's Sync mode reports no exit code
//!   and does not separate stderr: the command is reported as succeeded once ECI ran it.
//! - exec with stdin or a TTY: `ExecContainerCommand` returns a WebSocket, bridged by
//!   [`super::terminal`] (unverified against the real service: its framing is undocumented).
//! - attach: ECI cannot attach to a container's own stdio; the container's output from now on
//!   is followed through `DescribeContainerLog` (the log budget) until it ends. Stdin is
//!   refused.
//!
//! Every `ExecContainerCommand` takes a call from one budget shared by the node.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use eci_types::EciFailure;
use eci_types::params::JsonList;
use eci_types::wire::ExecContainerCommandRequest;
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use vk_eci_core::kubelet::exec::{
    Outcome, Protocol, StreamOptions, WebSocketProtocol, error_stream, negotiate,
    negotiate_websocket,
};

use super::logs::{Target, target};
use super::spdy_session::{self, Streams};
use super::websocket_session;
use super::{KubeletState, take_budget, text};
use vk_eci_core::cache::CachedContainerState;

/// How long the client has to open its streams after the upgrade (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a command waits for the shared budget before it is told the budget is out.
const BUDGET_WAIT: Duration = Duration::from_secs(5);

pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
}

fn upgrade_to(request: &Request) -> Option<String> {
    let connection = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let upgrade = request.headers().get(header::UPGRADE)?.to_str().ok()?;
    connection.then(|| upgrade.trim().to_ascii_lowercase())
}

/// Answers an exec or attach request: the checks, then `101 Switching Protocols` and the
/// session in its own task.
pub async fn serve(
    state: Arc<KubeletState>,
    mut request: Request,
    kind: Kind,
    namespace: &str,
    name: &str,
    container: &str,
) -> Response {
    let query = request.uri().query().unwrap_or("").to_string();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let options = match StreamOptions::parse(&pairs, kind == Kind::Exec) {
        Ok(options) => options,
        Err(error) => return text(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let target = match target(&state, namespace, name, container) {
        Ok(target) => target,
        Err((status, message)) => return text(status, message),
    };
    let running = target
        .pod
        .container_status(container)
        .is_some_and(|s| matches!(s.state, CachedContainerState::Running { .. }));
    if !running {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container} in pod {namespace}/{name} is not running"),
        );
    }
    if kind == Kind::Attach && options.stdin {
        return text(
            StatusCode::BAD_REQUEST,
            "ECI cannot attach to a container's stdin: use kubectl exec -i instead \
             (kubectl attach without -i follows the container's output)",
        );
    }
    let transport = match upgrade_to(&request).as_deref() {
        Some("spdy/3.1") => match spdy_protocol(&request) {
            Ok(protocol) => Transport::Spdy(protocol),
            Err(refusal) => return *refusal,
        },
        Some("websocket") => match websocket_protocol(&request) {
            Ok(accepted) => accepted,
            Err(refusal) => return *refusal,
        },
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "Upgrade request required (SPDY/3.1 or WebSocket)",
            );
        }
    };
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade");
    response = match &transport {
        Transport::Spdy(protocol) => response
            .header(header::UPGRADE, "SPDY/3.1")
            .header(PROTOCOL_HEADER, protocol.name()),
        Transport::WebSocket { protocol, accept } => response
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept.as_str())
            .header(header::SEC_WEBSOCKET_PROTOCOL, protocol.name()),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let session = Session {
        state,
        target,
        container: container.to_string(),
        options,
        kind,
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => session.run(TokioIo::new(upgraded), transport).await,
            Err(error) => debug!(%error, "exec upgrade failed"),
        }
    });
    response
        .body(Body::empty())
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "cannot upgrade"))
}

/// The connection's protocol after the upgrade.
enum Transport {
    Spdy(Protocol),
    WebSocket {
        protocol: WebSocketProtocol,
        accept: String,
    },
}

impl Transport {
    fn version(&self) -> Protocol {
        match self {
            Transport::Spdy(protocol) => *protocol,
            Transport::WebSocket { protocol, .. } => protocol.version,
        }
    }
}

fn header_values(request: &Request, name: impl header::AsHeaderName) -> Vec<String> {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

fn spdy_protocol(request: &Request) -> Result<Protocol, Box<Response>> {
    let offered = header_values(request, PROTOCOL_HEADER);
    negotiate(offered.iter().map(String::as_str)).ok_or_else(|| {
        let mut response = text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, \
                 server accepts {:?}",
                Protocol::OFFERED.map(Protocol::name)
            ),
        );
        for protocol in Protocol::OFFERED {
            response
                .headers_mut()
                .append(ACCEPTED_HEADER, HeaderValue::from_static(protocol.name()));
        }
        Box::new(response)
    })
}

fn websocket_protocol(request: &Request) -> Result<Transport, Box<Response>> {
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key is missing",
        )));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let offered = header_values(request, header::SEC_WEBSOCKET_PROTOCOL);
    let protocol = negotiate_websocket(offered.iter().map(String::as_str)).ok_or_else(|| {
        Box::new(text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: no WebSocket subprotocol in common: client supports \
                 {offered:?}, server accepts {:?}",
                WebSocketProtocol::OFFERED.map(WebSocketProtocol::name)
            ),
        ))
    })?;
    Ok(Transport::WebSocket { protocol, accept })
}

struct Session {
    state: Arc<KubeletState>,
    target: Target,
    container: String,
    options: StreamOptions,
    kind: Kind,
}

impl Session {
    async fn run<IO>(self, io: IO, transport: Transport)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let protocol = transport.version();
        let wire = match &transport {
            Transport::Spdy(protocol) => format!("SPDY/3.1 {}", protocol.name()),
            Transport::WebSocket { protocol, .. } => format!("WebSocket {}", protocol.name()),
        };
        let (streams, connection) = match transport {
            Transport::Spdy(protocol) => {
                let expected = self.options.expected_streams(protocol);
                match spdy_session::accept(io, expected, STREAM_CREATION_TIMEOUT).await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "exec session ended before it started");
                        return;
                    }
                }
            }
            Transport::WebSocket { protocol, .. } => {
                websocket_session::accept(io, protocol, &self.options).await
            }
        };
        let error = streams.error.clone();
        let outputs = [streams.stdout.clone(), streams.stderr.clone()];
        let outcome = match self.kind {
            Kind::Exec if self.options.interactive() => {
                super::terminal::run(
                    &self.state,
                    &self.target,
                    &self.container,
                    &self.options,
                    streams,
                )
                .await
            }
            Kind::Exec => self.sync(streams).await,
            Kind::Attach => self.attach(streams).await,
        };
        info!(
            pod = %self.target.pod.metadata.name.as_deref().unwrap_or_default(),
            container = %self.container,
            kind = ?self.kind,
            %wire,
            ?outcome,
            "exec session ended"
        );
        for output in outputs.iter().flatten() {
            output.close().await;
        }
        let report = error_stream(protocol, &outcome);
        if !report.is_empty() {
            error.write(&report).await;
        }
        error.close().await;
        connection.finish().await;
    }

    async fn sync(&self, streams: Streams) -> Outcome {
        let output = match exec_call(
            &self.state,
            &self.target,
            &self.container,
            &self.options.command,
            ExecMode::Sync,
        )
        .await
        {
            Ok(response) => response.sync_response,
            Err(message) => return Outcome::Failed(message),
        };
        if let Some(stream) = streams.stdout.as_ref().or(streams.stderr.as_ref()) {
            stream.write(output.as_bytes()).await;
        }
        Outcome::Exited(0)
    }

    async fn attach(&self, streams: Streams) -> Outcome {
        let Some(stdout) = streams.stdout.or(streams.stderr) else {
            return Outcome::Failed("attach needs stdout or stderr".into());
        };
        let mut client_gone = streams.client_gone;
        let (sender, mut receiver) = mpsc::channel::<String>(64);
        let namespace = self
            .target
            .pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_default();
        let name = self.target.pod.metadata.name.clone().unwrap_or_default();
        let follow = super::logs::follow_new_output(
            self.state.clone(),
            &namespace,
            &name,
            &self.container,
            sender,
        );
        // Ends when the output ends or the client goes; either way the follower then stops.
        let copy = async move {
            loop {
                tokio::select! {
                    chunk = receiver.recv() => match chunk {
                        Some(chunk) if stdout.write(chunk.as_bytes()).await => {}
                        _ => return,
                    },
                    () = client_gone.wait() => return,
                }
            }
        };
        let (followed, ()) = tokio::join!(follow, copy);
        match followed {
            Ok(()) => Outcome::Exited(0),
            Err(message) => Outcome::Failed(message),
        }
    }
}

/// How ECI is asked to run a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecMode {
    /// `Sync=true`: the output in the answer (no TTY, no stdin).
    Sync,
    /// A WebSocket session.
    Session { tty: bool, stdin: bool },
}

/// One budgeted `ExecContainerCommand` call; the error is the message the client sees.
pub(crate) async fn exec_call(
    state: &KubeletState,
    target: &Target,
    container: &str,
    command: &[String],
    mode: ExecMode,
) -> Result<eci_types::wire::ExecContainerCommandResponse, String> {
    if !take_budget(&state.exec_budget, BUDGET_WAIT).await {
        return Err(format!(
            "vk-eci: the ExecContainerCommand budget ({} calls a minute, shared by every exec on this node) is exhausted; try again shortly",
            state.exec_calls_per_minute
        ));
    }
    let request = ExecContainerCommandRequest {
        region_id: String::new(),
        container_group_id: target.group_id.clone(),
        container_name: container.to_string(),
        command: JsonList(command.to_vec()),
        tty: Some(matches!(mode, ExecMode::Session { tty: true, .. })),
        stdin: Some(matches!(mode, ExecMode::Session { stdin: true, .. })),
        sync: Some(mode == ExecMode::Sync),
    };
    let result = state.ctx.eci.call(&request).await;
    state.ctx.observe_eci(&result);
    result.map_err(|error| {
        if error.code() == Some(eci_types::error::code::INCORRECT_STATUS) {
            format!("container {container} is not running on ECI: {error}")
        } else {
            format!("vk-eci: ECI ExecContainerCommand failed: {error}")
        }
    })
}
