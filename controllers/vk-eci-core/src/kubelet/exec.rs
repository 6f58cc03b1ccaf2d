//! The decisions of `/exec` and `/attach` (kubelet-api.md §4): the request's streams, the
//! negotiated `channel.k8s.io` protocol, the `Command` ECI is given, resize messages and the
//! final `metav1.Status` of the error stream.

use std::collections::BTreeSet;

use serde_json::json;

/// `channel.k8s.io` versions, newest first: what vk-eci offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    V1,
    V2,
    V3,
    V4,
    V5,
}

impl Protocol {
    pub const OFFERED: [Protocol; 5] = [
        Protocol::V5,
        Protocol::V4,
        Protocol::V3,
        Protocol::V2,
        Protocol::V1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::V1 => "channel.k8s.io",
            Protocol::V2 => "v2.channel.k8s.io",
            Protocol::V3 => "v3.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V5 => "v5.channel.k8s.io",
        }
    }

    /// v3 added the resize stream.
    pub fn resizes(self) -> bool {
        self >= Protocol::V3
    }

    /// v4 made the error stream carry a JSON `metav1.Status` (and so exit codes).
    pub fn status_json(self) -> bool {
        self >= Protocol::V4
    }
}

/// The first protocol the client offers that vk-eci speaks. Every value of every
/// `X-Stream-Protocol-Version` header counts, comma-separated lists included: reading only the
/// first header is how other providers broke on v5.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Protocol> {
    offered
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find_map(|name| Protocol::OFFERED.into_iter().find(|p| p.name() == name))
}

/// A WebSocket subprotocol of the channel protocol: its version and whether payloads are
/// base64 text (for browsers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketProtocol {
    pub version: Protocol,
    pub base64: bool,
}

impl WebSocketProtocol {
    /// What vk-eci accepts, newest first (v5 has no base64 variant; v2 and v3 none at all).
    pub const OFFERED: [WebSocketProtocol; 5] = [
        WebSocketProtocol::binary(Protocol::V5),
        WebSocketProtocol::binary(Protocol::V4),
        WebSocketProtocol {
            version: Protocol::V4,
            base64: true,
        },
        WebSocketProtocol::binary(Protocol::V1),
        WebSocketProtocol {
            version: Protocol::V1,
            base64: true,
        },
    ];

    const fn binary(version: Protocol) -> Self {
        WebSocketProtocol {
            version,
            base64: false,
        }
    }

    pub fn name(self) -> &'static str {
        match (self.version, self.base64) {
            (Protocol::V5, _) => "v5.channel.k8s.io",
            (Protocol::V4, false) => "v4.channel.k8s.io",
            (Protocol::V4, true) => "v4.base64.channel.k8s.io",
            (_, false) => "channel.k8s.io",
            (_, true) => "base64.channel.k8s.io",
        }
    }
}

/// The first subprotocol in `Sec-WebSocket-Protocol` (every value, comma-separated lists
/// included) that vk-eci speaks.
pub fn negotiate_websocket<'a>(
    offered: impl IntoIterator<Item = &'a str>,
) -> Option<WebSocketProtocol> {
    offered
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find_map(|name| {
            WebSocketProtocol::OFFERED
                .into_iter()
                .find(|p| p.name() == name)
        })
}

/// Channel numbers of the WebSocket channel protocol.
pub mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    /// v5: `[255, channel]` closes that channel.
    pub const CLOSE: u8 = 255;
}

/// A WebSocket message of the channel protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMessage {
    Binary(Vec<u8>),
    Text(String),
}

/// `data` on `channel`: the channel byte then the data, or with base64 the channel as an ASCII
/// digit then the data in base64.
pub fn channel_message(protocol: WebSocketProtocol, channel: u8, data: &[u8]) -> ChannelMessage {
    use base64::Engine;
    if protocol.base64 {
        let mut text = char::from(b'0' + channel.min(9)).to_string();
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
        ChannelMessage::Text(text)
    } else {
        let mut bytes = Vec::with_capacity(data.len() + 1);
        bytes.push(channel);
        bytes.extend_from_slice(data);
        ChannelMessage::Binary(bytes)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed channel message: {0}")]
pub struct ChannelError(&'static str);

/// The channel and data of a message from the client.
pub fn read_channel_message(
    protocol: WebSocketProtocol,
    message: ChannelMessage,
) -> Result<(u8, Vec<u8>), ChannelError> {
    use base64::Engine;
    match (protocol.base64, message) {
        (false, ChannelMessage::Binary(bytes)) => {
            let (channel, data) = bytes.split_first().ok_or(ChannelError("empty"))?;
            Ok((*channel, data.to_vec()))
        }
        (true, ChannelMessage::Text(text)) => {
            let mut chars = text.chars();
            let channel = chars
                .next()
                .and_then(|c| c.to_digit(10))
                .ok_or(ChannelError("no channel digit"))?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(chars.as_str())
                .map_err(|_| ChannelError("invalid base64"))?;
            Ok((channel as u8, data))
        }
        (false, ChannelMessage::Text(_)) => Err(ChannelError("text on a binary protocol")),
        (true, ChannelMessage::Binary(_)) => Err(ChannelError("binary on a base64 protocol")),
    }
}

/// What the `streamType` header of a SPDY stream names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StreamType {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
}

impl StreamType {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "error" => StreamType::Error,
            "stdin" => StreamType::Stdin,
            "stdout" => StreamType::Stdout,
            "stderr" => StreamType::Stderr,
            "resize" => StreamType::Resize,
            _ => return None,
        })
    }
}

/// The streams of an exec or attach request, as its query asks for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// The argv of an exec; empty for attach.
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecRequestError {
    #[error("you must specify at least 1 of stdin, stdout, stderr")]
    NoStreams,
    #[error("you must specify at least one command for the container")]
    NoCommand,
    #[error(
        "ECI runs commands of at most {MAX_ARGS} arguments: this one has {0} (vk-eci does not join or truncate arguments)"
    )]
    TooManyArguments(usize),
    #[error(
        "ECI accepts arguments of at most {MAX_ARG_CHARS} characters: argument {index} has {chars} (vk-eci does not truncate arguments)"
    )]
    ArgumentTooLong { index: usize, chars: usize },
}

/// ECI's `ExecContainerCommand` limits on `Command` (eci-api.md §2.10).
pub const MAX_ARGS: usize = 20;
pub const MAX_ARG_CHARS: usize = 256;

fn flag(pairs: &[(String, String)], names: &[&str]) -> bool {
    pairs
        .iter()
        .any(|(k, v)| names.contains(&k.as_str()) && (v == "1" || v.eq_ignore_ascii_case("true")))
}

impl StreamOptions {
    /// Reads the kubelet query (`command=` once per argument, `input`, `output`, `error`,
    /// `tty` as `1`). `exec` needs a command; attach has none. With a TTY stderr is merged
    /// into stdout, as the kubelet does.
    pub fn parse(pairs: &[(String, String)], exec: bool) -> Result<Self, ExecRequestError> {
        let command: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect();
        let tty = flag(pairs, &["tty"]);
        let options = StreamOptions {
            stdin: flag(pairs, &["input", "stdin"]),
            stdout: flag(pairs, &["output", "stdout"]),
            stderr: flag(pairs, &["error", "stderr"]) && !tty,
            tty,
            command: if exec { command } else { Vec::new() },
        };
        if !(options.stdin || options.stdout || flag(pairs, &["error", "stderr"])) {
            return Err(ExecRequestError::NoStreams);
        }
        if exec {
            eci_command(&options.command)?;
        }
        Ok(options)
    }

    /// Whether the command needs a live session (stdin or a terminal) rather than one
    /// synchronous call.
    pub fn interactive(&self) -> bool {
        self.stdin || self.tty
    }

    /// The streams the client opens before anything runs: the error stream and each one asked
    /// for (resize with a TTY from v3 on).
    pub fn expected_streams(&self, protocol: Protocol) -> BTreeSet<StreamType> {
        let mut streams = BTreeSet::from([StreamType::Error]);
        for (wanted, stream) in [
            (self.stdin, StreamType::Stdin),
            (self.stdout, StreamType::Stdout),
            (self.stderr, StreamType::Stderr),
            (self.tty && protocol.resizes(), StreamType::Resize),
        ] {
            if wanted {
                streams.insert(stream);
            }
        }
        streams
    }
}

/// `Command` as ECI takes it: the argv as a JSON array, each argument intact.
pub fn eci_command(argv: &[String]) -> Result<String, ExecRequestError> {
    if argv.is_empty() {
        return Err(ExecRequestError::NoCommand);
    }
    if argv.len() > MAX_ARGS {
        return Err(ExecRequestError::TooManyArguments(argv.len()));
    }
    if let Some((index, chars)) = argv
        .iter()
        .map(|a| a.chars().count())
        .enumerate()
        .find(|(_, chars)| *chars > MAX_ARG_CHARS)
    {
        return Err(ExecRequestError::ArgumentTooLong { index, chars });
    }
    Ok(serde_json::Value::from(argv.to_vec()).to_string())
}

/// How a command ended, as the error stream tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with this code (0 is success).
    Exited(i32),
    /// It could not run (or its end is unknown): the reason.
    Failed(String),
}

/// The error stream's bytes for `outcome`: a JSON `metav1.Status` from v4 on (with the
/// `NonZeroExitCode` reason and `ExitCode` cause kubectl turns into its exit code), plain text
/// before; nothing for a success before v4.
pub fn error_stream(protocol: Protocol, outcome: &Outcome) -> Vec<u8> {
    if !protocol.status_json() {
        return match outcome {
            Outcome::Exited(0) => Vec::new(),
            Outcome::Exited(code) => {
                format!("command terminated with non-zero exit code: exit status {code}")
                    .into_bytes()
            }
            Outcome::Failed(message) => message.clone().into_bytes(),
        };
    }
    let status = match outcome {
        Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(message) => json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    status.to_string().into_bytes()
}

/// A terminal size from the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Splits the resize stream (JSON objects one after another, in any chunking) into sizes.
/// Holds at most `MAX_PENDING` bytes of an unfinished message.
#[derive(Debug, Default)]
pub struct ResizeDecoder {
    pending: Vec<u8>,
}

const MAX_PENDING: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed resize message: {0}")]
pub struct ResizeError(String);

impl ResizeDecoder {
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<TerminalSize>, ResizeError> {
        self.pending.extend_from_slice(bytes);
        let mut sizes = Vec::new();
        let mut stream =
            serde_json::Deserializer::from_slice(&self.pending).into_iter::<TerminalSize>();
        let mut used = 0;
        loop {
            match stream.next() {
                Some(Ok(size)) => {
                    sizes.push(size);
                    used = stream.byte_offset();
                }
                Some(Err(error)) if error.is_eof() => break,
                Some(Err(error)) => return Err(ResizeError(error.to_string())),
                None => {
                    used = stream.byte_offset();
                    break;
                }
            }
        }
        self.pending.drain(..used);
        if self.pending.len() > MAX_PENDING {
            return Err(ResizeError(format!(
                "more than {MAX_PENDING} bytes without a complete message"
            )));
        }
        Ok(sizes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("%20", " ")))
            .collect()
    }

    #[test]
    fn negotiation_reads_every_offered_value() {
        assert_eq!(negotiate(["v5.channel.k8s.io"]), Some(Protocol::V5));
        assert_eq!(
            negotiate([
                "v9.channel.k8s.io",
                "v4.channel.k8s.io",
                "v5.channel.k8s.io"
            ]),
            Some(Protocol::V4),
            "the client's order wins"
        );
        assert_eq!(
            negotiate(["v9.channel.k8s.io, v3.channel.k8s.io"]),
            Some(Protocol::V3)
        );
        assert_eq!(negotiate(["channel.k8s.io"]), Some(Protocol::V1));
        assert_eq!(negotiate(["base64.channel.k8s.io"]), None);
        assert_eq!(negotiate([]), None);
    }

    #[test]
    fn websocket_subprotocols_are_negotiated_over_every_value() {
        let chosen = negotiate_websocket(["base64.channel.k8s.io, v4.channel.k8s.io"]).unwrap();
        assert_eq!(chosen.name(), "base64.channel.k8s.io");
        assert!(chosen.base64 && chosen.version == Protocol::V1);
        let chosen = negotiate_websocket(["v6.channel.k8s.io", "v5.channel.k8s.io"]).unwrap();
        assert_eq!(chosen.version, Protocol::V5);
        assert_eq!(negotiate_websocket(["v3.channel.k8s.io"]), None);
    }

    #[test]
    fn channel_messages_roundtrip_binary_and_base64() {
        for protocol in WebSocketProtocol::OFFERED {
            let message = channel_message(protocol, channel::STDOUT, b"hi\0");
            assert_eq!(
                read_channel_message(protocol, message).unwrap(),
                (channel::STDOUT, b"hi\0".to_vec()),
                "{}",
                protocol.name()
            );
        }
        let base64 = WebSocketProtocol::OFFERED[2];
        assert_eq!(
            channel_message(base64, channel::STDERR, b"ok"),
            ChannelMessage::Text("2b2s=".into())
        );
        assert!(read_channel_message(base64, ChannelMessage::Text("x".into())).is_err());
        assert!(read_channel_message(base64, ChannelMessage::Text("1!!".into())).is_err());
        let binary = WebSocketProtocol::OFFERED[0];
        assert!(read_channel_message(binary, ChannelMessage::Binary(Vec::new())).is_err());
    }

    #[test]
    fn exec_queries_keep_every_argument() {
        let options = StreamOptions::parse(
            &pairs("command=echo&command=a&command=b%20c&output=1&error=1"),
            true,
        )
        .unwrap();
        assert_eq!(options.command, ["echo", "a", "b c"]);
        assert!(options.stdout && options.stderr && !options.stdin && !options.tty);
        assert!(!options.interactive());
        assert_eq!(
            eci_command(&options.command).unwrap(),
            r#"["echo","a","b c"]"#
        );
    }

    #[test]
    fn a_tty_merges_stderr_and_adds_resize_from_v3() {
        let options =
            StreamOptions::parse(&pairs("command=sh&input=1&output=1&error=1&tty=1"), true)
                .unwrap();
        assert!(!options.stderr && options.interactive());
        assert_eq!(
            options.expected_streams(Protocol::V4),
            BTreeSet::from([
                StreamType::Error,
                StreamType::Stdin,
                StreamType::Stdout,
                StreamType::Resize
            ])
        );
        assert!(
            !options
                .expected_streams(Protocol::V2)
                .contains(&StreamType::Resize)
        );
    }

    #[test]
    fn requests_eci_cannot_run_are_refused_not_truncated() {
        assert_eq!(
            StreamOptions::parse(&pairs("command=ls"), true),
            Err(ExecRequestError::NoStreams)
        );
        assert_eq!(
            StreamOptions::parse(&pairs("output=1"), true),
            Err(ExecRequestError::NoCommand)
        );
        let many: Vec<String> = (0..21).map(|i| i.to_string()).collect();
        assert_eq!(
            eci_command(&many),
            Err(ExecRequestError::TooManyArguments(21))
        );
        let long = vec!["x".into(), "é".repeat(257)];
        assert_eq!(
            eci_command(&long),
            Err(ExecRequestError::ArgumentTooLong {
                index: 1,
                chars: 257
            })
        );
        assert!(
            eci_command(&["é".repeat(256)]).is_ok(),
            "characters, not bytes"
        );
        let attach = StreamOptions::parse(&pairs("output=1&command=ignored"), false).unwrap();
        assert!(attach.command.is_empty());
    }

    #[test]
    fn the_error_stream_carries_the_exit_code_from_v4() {
        let status: serde_json::Value =
            serde_json::from_slice(&error_stream(Protocol::V5, &Outcome::Exited(3))).unwrap();
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        let success: serde_json::Value =
            serde_json::from_slice(&error_stream(Protocol::V4, &Outcome::Exited(0))).unwrap();
        assert_eq!(success["status"], "Success");
        assert!(error_stream(Protocol::V3, &Outcome::Exited(0)).is_empty());
        assert_eq!(
            error_stream(Protocol::V2, &Outcome::Failed("no".into())),
            b"no"
        );
    }

    #[test]
    fn resize_messages_are_split_whatever_the_chunking() {
        let mut decoder = ResizeDecoder::default();
        assert_eq!(decoder.push(br#"{"Width":80,"#).unwrap(), []);
        assert_eq!(
            decoder
                .push(br#""Height":24}{"Width":100,"Height":30}"#)
                .unwrap(),
            [
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 30
                }
            ]
        );
        assert!(decoder.push(b"not json").is_err());
        let mut decoder = ResizeDecoder::default();
        assert!(decoder.push(&[b'['; 5000]).is_err(), "bounded");
    }
}
