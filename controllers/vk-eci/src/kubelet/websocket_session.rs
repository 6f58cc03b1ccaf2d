//! The server side of exec and attach over WebSocket (`v5`/`v4.channel.k8s.io`, their
//! `base64` variants and v1): for API servers that forward WebSockets to kubelets and for
//! clients that reach the kubelet port directly. Channels 0–4 are stdin, stdout, stderr, error
//! and resize; with v5 the client closes stdin by sending `[255, 0]`.
//!
//! It yields the same [`Streams`] as the SPDY session, so every command runs the same way.

use std::collections::HashMap;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tracing::debug;
use vk_eci_core::kubelet::exec::{
    ChannelMessage, Protocol, StreamOptions, WebSocketProtocol, channel, channel_message,
    read_channel_message,
};
use vk_eci_core::kubelet::spdy::Frame;

use super::spdy_session::{ClientGone, OutputStream, Session, Streams};

/// Starts the channel protocol on the upgraded connection `io`.
pub async fn accept<IO>(
    io: IO,
    protocol: WebSocketProtocol,
    options: &StreamOptions,
) -> (Streams, Session)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (sink, stream) = socket.split();
    let (frames, outgoing) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(write_messages(sink, outgoing, protocol));
    let mut inputs = HashMap::new();
    let mut input = |channel: u8| {
        let (sender, receiver) = mpsc::channel(16);
        inputs.insert(channel, sender);
        receiver
    };
    let stdin = options.stdin.then(|| input(channel::STDIN));
    let resize = (options.tty && protocol.version.resizes()).then(|| input(channel::RESIZE));
    let (reading, client_gone) = ClientGone::new();
    let reader = tokio::spawn(async move {
        read_messages(stream, inputs, protocol).await;
        drop(reading);
    });
    let output = |channel: u8| OutputStream::new(u32::from(channel), frames.clone());
    let streams = Streams {
        error: output(channel::ERROR),
        stdin,
        stdout: options.stdout.then(|| output(channel::STDOUT)),
        stderr: options.stderr.then(|| output(channel::STDERR)),
        resize,
        client_gone,
    };
    (streams, Session::new(frames, reader, writer))
}

async fn write_messages<S>(
    mut sink: S,
    mut outgoing: mpsc::Receiver<Frame>,
    protocol: WebSocketProtocol,
) where
    S: futures::Sink<Message> + Unpin,
{
    while let Some(frame) = outgoing.recv().await {
        let message = match frame {
            Frame::Data {
                stream_id, data, ..
            } if !data.is_empty() => match channel_message(protocol, stream_id as u8, &data) {
                ChannelMessage::Binary(bytes) => Message::Binary(bytes.into()),
                ChannelMessage::Text(text) => Message::Text(text.into()),
            },
            Frame::GoAway { .. } => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })))
                    .await;
                return;
            }
            _ => continue,
        };
        if sink.send(message).await.is_err() {
            return;
        }
    }
}

async fn read_messages<S, E>(
    mut stream: S,
    mut inputs: HashMap<u8, mpsc::Sender<Vec<u8>>>,
    protocol: WebSocketProtocol,
) where
    S: futures::Stream<Item = Result<Message, E>> + Unpin,
{
    while let Some(Ok(message)) = stream.next().await {
        let message = match message {
            Message::Binary(bytes) => ChannelMessage::Binary(bytes.to_vec()),
            Message::Text(text) => ChannelMessage::Text(text.as_str().to_string()),
            Message::Close(_) => return,
            _ => continue,
        };
        let (channel, data) = match read_channel_message(protocol, message) {
            Ok(read) => read,
            Err(error) => {
                debug!(%error, "channel message dropped");
                continue;
            }
        };
        if channel == channel::CLOSE && protocol.version == Protocol::V5 {
            if let Some(closed) = data.first() {
                inputs.remove(closed);
            }
            continue;
        }
        if data.is_empty() {
            continue;
        }
        if let Some(input) = inputs.get(&channel)
            && input.send(data).await.is_err()
        {
            inputs.remove(&channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(stdin: bool, tty: bool) -> StreamOptions {
        StreamOptions {
            command: vec!["cat".into()],
            stdin,
            stdout: true,
            stderr: !tty,
            tty,
        }
    }

    async fn pair(
        protocol: WebSocketProtocol,
        options: &StreamOptions,
    ) -> (WebSocketStream<tokio::io::DuplexStream>, Streams, Session) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let client = tokio::spawn(WebSocketStream::from_raw_socket(client, Role::Client, None));
        let (streams, session) = accept(server, protocol, options).await;
        (client.await.unwrap(), streams, session)
    }

    #[tokio::test]
    async fn v5_channels_carry_stdin_its_close_and_the_outputs() {
        let v5 = WebSocketProtocol::OFFERED[0];
        let (mut client, mut streams, session) = pair(v5, &options(true, false)).await;
        client
            .send(Message::Binary(b"\x00hi".to_vec().into()))
            .await
            .unwrap();
        client
            .send(Message::Binary(vec![channel::CLOSE, channel::STDIN].into()))
            .await
            .unwrap();
        let stdin = streams.stdin.as_mut().unwrap();
        assert_eq!(stdin.recv().await.unwrap(), b"hi");
        assert_eq!(stdin.recv().await, None, "[255, 0] closes stdin");
        assert!(streams.stderr.as_ref().unwrap().write(b"err").await);
        assert!(streams.error.write(b"{}").await);
        let finished = tokio::spawn(session.finish());
        let mut received = Vec::new();
        while let Some(Ok(message)) = client.next().await {
            received.push(message);
        }
        assert_eq!(received[0], Message::Binary(b"\x02err".to_vec().into()));
        assert_eq!(received[1], Message::Binary(b"\x03{}".to_vec().into()));
        assert!(matches!(received[2], Message::Close(_)));
        finished.await.unwrap();
    }

    #[tokio::test]
    async fn base64_channels_are_text() {
        let base64 = WebSocketProtocol::OFFERED[2];
        let (mut client, mut streams, _session) = pair(base64, &options(true, true)).await;
        assert!(streams.stderr.is_none(), "a TTY merges stderr");
        client
            .send(Message::Text("4eyJXaWR0aCI6ODAsIkhlaWdodCI6MjR9".into()))
            .await
            .unwrap();
        let resize = streams.resize.as_mut().unwrap();
        assert_eq!(resize.recv().await.unwrap(), br#"{"Width":80,"Height":24}"#);
        assert!(streams.stdout.as_ref().unwrap().write(b"ok").await);
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Text("1b2s=".into())
        );
    }
}
