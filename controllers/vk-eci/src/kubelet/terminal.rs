//! Interactive exec (stdin and/or a TTY): `ExecContainerCommand` without `Sync` answers with a
//! WebSocket URI, and the client's streams are bridged to it.
//!
//! **ECI does not document that WebSocket's framing and no public code speaks it**: this bridge
//! is unverified against the real service. What is assumed lives in one place, the
//! [`TerminalFraming`] that [`RawTerminal`] implements: stdin goes out as binary messages,
//! binary and text messages coming back are the terminal's output, the end of stdin closes the
//! socket, and the session ends when ECI closes it (with an exit status only if the close
//! reason says `exit status N`; otherwise the command counts as succeeded). ECI has no
//! terminal-size parameter, so resizes are accepted and not passed on.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::debug;
use vk_eci_core::kubelet::exec::{Outcome, ResizeDecoder, StreamOptions, TerminalSize};

use super::KubeletState;
use super::exec::{ExecMode, exec_call};
use super::logs::Target;
use super::spdy_session::Streams;

/// What a message from ECI's terminal means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalEvent {
    Output(Vec<u8>),
    /// The session is over; the exit code if ECI said it.
    Ended(Option<i32>),
    /// Nothing for the client (pings, empty messages).
    Nothing,
}

/// How the client's streams map to ECI's terminal messages: the one place to correct when
/// ECI's protocol is known.
pub trait TerminalFraming: Send + Sync {
    fn stdin(&self, bytes: Vec<u8>) -> Message;
    /// The message that tells the end of stdin, if the protocol has one.
    fn stdin_closed(&self) -> Option<Message>;
    fn resize(&self, size: TerminalSize) -> Option<Message>;
    fn received(&self, message: Message) -> TerminalEvent;
}

/// The most plausible framing: a raw terminal over binary messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawTerminal;

impl TerminalFraming for RawTerminal {
    fn stdin(&self, bytes: Vec<u8>) -> Message {
        Message::Binary(bytes.into())
    }

    fn stdin_closed(&self) -> Option<Message> {
        Some(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "stdin closed".into(),
        })))
    }

    fn resize(&self, _size: TerminalSize) -> Option<Message> {
        None
    }

    fn received(&self, message: Message) -> TerminalEvent {
        match message {
            Message::Binary(bytes) if !bytes.is_empty() => TerminalEvent::Output(bytes.to_vec()),
            Message::Text(text) if !text.is_empty() => {
                TerminalEvent::Output(text.as_bytes().to_vec())
            }
            Message::Close(frame) => TerminalEvent::Ended(frame.and_then(|f| {
                f.reason
                    .strip_prefix("exit status ")
                    .and_then(|code| code.trim().parse().ok())
            })),
            _ => TerminalEvent::Nothing,
        }
    }
}

/// Runs an interactive command: one budgeted `ExecContainerCommand`, then the bridge.
pub(crate) async fn run(
    state: &Arc<KubeletState>,
    target: &Target,
    container: &str,
    options: &StreamOptions,
    streams: Streams,
) -> Outcome {
    let mode = ExecMode::Session {
        tty: options.tty,
        stdin: options.stdin,
    };
    let response = match exec_call(state, target, container, &options.command, mode).await {
        Ok(response) => response,
        Err(message) => return Outcome::Failed(message),
    };
    let uri = response.web_socket_uri;
    match connect_and_bridge(&uri, &RawTerminal, streams).await {
        Ok(outcome) => outcome,
        Err(error) => Outcome::Failed(format!(
            "vk-eci: cannot reach the container's terminal on ECI: {error}"
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("ECI gave no usable WebSocket URI")]
    BadUri,
    #[error("{0}")]
    Connect(String),
}

async fn connect_and_bridge(
    uri: &str,
    framing: &dyn TerminalFraming,
    streams: Streams,
) -> Result<Outcome, TerminalError> {
    let parsed: http::Uri = uri.parse().map_err(|_| TerminalError::BadUri)?;
    let secure = match parsed.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err(TerminalError::BadUri),
    };
    let host = parsed.host().ok_or(TerminalError::BadUri)?.to_string();
    let port = parsed.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| TerminalError::Connect(format!("connect {host}:{port}: {e}")))?;
    if secure {
        let config = tls_config().map_err(TerminalError::Connect)?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| TerminalError::BadUri)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| TerminalError::Connect(format!("TLS: {e}")))?;
        let (socket, _) = tokio_tungstenite::client_async(uri, tls)
            .await
            .map_err(|e| TerminalError::Connect(e.to_string()))?;
        Ok(bridge(socket, framing, streams).await)
    } else {
        let (socket, _) = tokio_tungstenite::client_async(uri, tcp)
            .await
            .map_err(|e| TerminalError::Connect(e.to_string()))?;
        Ok(bridge(socket, framing, streams).await)
    }
}

fn tls_config() -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_platform_verifier()
            .map_err(|e| e.to_string())?
            .with_no_client_auth(),
    )
}

/// Copies stdin and resizes to the socket and its messages to stdout (or stderr) until the
/// session ends.
pub async fn bridge<S>(
    mut socket: WebSocketStream<S>,
    framing: &dyn TerminalFraming,
    streams: Streams,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Streams {
        stdin,
        stdout,
        stderr,
        resize,
        mut client_gone,
        ..
    } = streams;
    let output = stdout.or(stderr);
    let mut stdin = stdin;
    let mut resize = resize;
    let mut sizes = ResizeDecoder::default();
    loop {
        tokio::select! {
            () = client_gone.wait() => {
                let _ = socket.close(None).await;
                return Outcome::Failed("the client went away".into());
            }
            chunk = async { stdin.as_mut()?.recv().await }, if stdin.is_some() => {
                let message = match chunk {
                    Some(bytes) => Some(framing.stdin(bytes)),
                    None => {
                        stdin = None;
                        framing.stdin_closed()
                    }
                };
                if let Some(message) = message
                    && socket.send(message).await.is_err()
                {
                    return Outcome::Failed("vk-eci: the connection to ECI's terminal broke".into());
                }
            }
            message = async { resize.as_mut()?.recv().await }, if resize.is_some() => {
                let Some(bytes) = message else {
                    resize = None;
                    continue;
                };
                match sizes.push(&bytes) {
                    Ok(new_sizes) => {
                        for size in new_sizes {
                            debug!(?size, "terminal resized");
                            if let Some(message) = framing.resize(size) {
                                let _ = socket.send(message).await;
                            }
                        }
                    }
                    Err(error) => {
                        debug!(%error, "resize stream dropped");
                        resize = None;
                    }
                }
            }
            message = socket.next() => {
                let event = match message {
                    Some(Ok(message)) => framing.received(message),
                    Some(Err(error)) => {
                        return Outcome::Failed(format!(
                            "vk-eci: the connection to ECI's terminal broke: {error}"
                        ));
                    }
                    None => TerminalEvent::Ended(None),
                };
                match event {
                    TerminalEvent::Output(bytes) => {
                        if let Some(output) = output.as_ref()
                            && !output.write(&bytes).await
                        {
                            return Outcome::Failed("the client went away".into());
                        }
                    }
                    TerminalEvent::Ended(code) => return Outcome::Exited(code.unwrap_or(0)),
                    TerminalEvent::Nothing => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_framing_reads_output_and_an_exit_status() {
        let raw = RawTerminal;
        assert_eq!(
            raw.received(Message::Binary(b"hi".to_vec().into())),
            TerminalEvent::Output(b"hi".to_vec())
        );
        assert_eq!(
            raw.received(Message::Text("ok".into())),
            TerminalEvent::Output(b"ok".to_vec())
        );
        let close = |reason: &str| {
            Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: reason.to_string().into(),
            }))
        };
        assert_eq!(
            raw.received(close("exit status 3")),
            TerminalEvent::Ended(Some(3))
        );
        assert_eq!(raw.received(close("bye")), TerminalEvent::Ended(None));
        assert_eq!(
            raw.received(Message::Close(None)),
            TerminalEvent::Ended(None)
        );
        assert_eq!(
            raw.received(Message::Ping(Vec::new().into())),
            TerminalEvent::Nothing
        );
        assert!(
            raw.resize(TerminalSize {
                width: 80,
                height: 24
            })
            .is_none()
        );
    }
}
