//! The server side of a SPDY/3.1 connection carrying one exec or attach: the client opens
//! one stream per `streamType`; once every expected stream is open (within a deadline) the
//! command's streams are handed over. PINGs are answered, received data is credited back with
//! WINDOW_UPDATE, RST_STREAM and GOAWAY end what they name.
//!
//! vk-eci credits everything it receives but does not hold its own writes to the peer's
//! windows: a kubelet's SPDY clients are client-go's (kubectl, API servers), which are not known
//! to send WINDOW_UPDATE, and waiting for one would stall every output past 64 KiB.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::debug;
use vk_eci_core::kubelet::exec::StreamType;
use vk_eci_core::kubelet::spdy::{
    FLAG_FIN, Frame, FrameDecoder, FrameEncoder, Headers, goaway, header, rst,
};

/// The most one DATA frame carries.
const DATA_CHUNK: usize = 32 * 1024;
/// How long the peer has to close after our GOAWAY before the connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A stream vk-eci writes to (stdout, stderr, error).
#[derive(Clone)]
pub struct OutputStream {
    id: u32,
    frames: mpsc::Sender<Frame>,
}

impl OutputStream {
    /// Writes to stream (or WebSocket channel) `id` through a connection's frame queue.
    pub(crate) fn new(id: u32, frames: mpsc::Sender<Frame>) -> Self {
        Self { id, frames }
    }

    /// Writes `bytes` as DATA frames; false once the connection is gone.
    pub async fn write(&self, bytes: &[u8]) -> bool {
        for chunk in bytes.chunks(DATA_CHUNK) {
            let frame = Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: chunk.to_vec(),
            };
            if self.frames.send(frame).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Ends the stream (an empty DATA frame with FIN).
    pub async fn close(&self) {
        let _ = self
            .frames
            .send(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Vec::new(),
            })
            .await;
    }
}

/// The streams of one command. Inputs end (`None` from `recv`) when the client half-closes.
pub struct Streams {
    pub error: OutputStream,
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    pub stdout: Option<OutputStream>,
    pub stderr: Option<OutputStream>,
    pub resize: Option<mpsc::Receiver<Vec<u8>>>,
    /// Tells when the client has gone: see [`ClientGone::wait`].
    pub client_gone: ClientGone,
}

/// Resolves once the connection's reader has stopped (the client closed or broke it), so a
/// command waiting on ECI alone (attach, a quiet terminal) stops too.
pub struct ClientGone(tokio::sync::watch::Receiver<()>);

impl ClientGone {
    /// A pair: the reader keeps the sender for as long as it reads.
    pub(crate) fn new() -> (tokio::sync::watch::Sender<()>, Self) {
        let (sender, receiver) = tokio::sync::watch::channel(());
        (sender, Self(receiver))
    }

    pub async fn wait(&mut self) {
        while self.0.changed().await.is_ok() {}
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the client did not open its streams within {0:?}")]
    StreamTimeout(Duration),
    #[error("the connection closed before the streams were open")]
    Closed,
}

/// A running connection; [`Session::finish`] ends it.
pub struct Session {
    frames: mpsc::Sender<Frame>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    last_stream: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Session {
    /// A connection whose writer ends after a GOAWAY frame (or when every sender is gone).
    pub(crate) fn new(
        frames: mpsc::Sender<Frame>,
        reader: JoinHandle<()>,
        writer: JoinHandle<()>,
    ) -> Self {
        Self {
            frames,
            reader,
            writer,
            last_stream: std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0)),
        }
    }

    /// Sends GOAWAY and lets the client close (so nothing it has not read is reset), within a
    /// grace period.
    pub async fn finish(self) {
        let last = self.last_stream.load(std::sync::atomic::Ordering::Relaxed);
        let _ = self
            .frames
            .send(Frame::GoAway {
                last_good_stream_id: last,
                status: goaway::OK,
            })
            .await;
        drop(self.frames);
        let mut reader = self.reader;
        if tokio::time::timeout(CLOSE_GRACE, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
        let mut writer = self.writer;
        if tokio::time::timeout(CLOSE_GRACE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
}

/// Serves the SPDY connection `io` until the client has opened `expected`, within
/// `stream_timeout`.
pub async fn accept<IO>(
    io: IO,
    expected: BTreeSet<StreamType>,
    stream_timeout: Duration,
) -> Result<(Streams, Session), SessionError>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (frames, outgoing) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(write_frames(write, outgoing));
    let (ready, streams) = oneshot::channel();
    let last_stream = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (reading, client_gone) = ClientGone::new();
    let reader = tokio::spawn(
        Reader {
            frames: frames.clone(),
            expected,
            opened: HashMap::new(),
            inputs: HashMap::new(),
            pending: Pending::default(),
            ready: Some(ready),
            last_stream: last_stream.clone(),
            _reading: reading,
            client_gone: Some(client_gone),
        }
        .run(read),
    );
    let session = Session {
        frames,
        reader,
        writer,
        last_stream,
    };
    match tokio::time::timeout(stream_timeout, streams).await {
        Ok(Ok(streams)) => Ok((streams, session)),
        Ok(Err(_)) => {
            session.finish().await;
            Err(SessionError::Closed)
        }
        Err(_) => {
            session.finish().await;
            Err(SessionError::StreamTimeout(stream_timeout))
        }
    }
}

async fn write_frames<W: AsyncWrite>(write: W, mut outgoing: mpsc::Receiver<Frame>) {
    let mut write = std::pin::pin!(write);
    let mut encoder = FrameEncoder::new();
    let mut buffer = Vec::new();
    while let Some(frame) = outgoing.recv().await {
        buffer.clear();
        if let Err(error) = encoder.encode(&frame, &mut buffer) {
            debug!(%error, "SPDY frame not written");
            continue;
        }
        // Write what is queued too, then flush once.
        while let Ok(next) = outgoing.try_recv() {
            if encoder.encode(&next, &mut buffer).is_err() {
                continue;
            }
        }
        if write.write_all(&buffer).await.is_err() || write.flush().await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

#[derive(Default)]
struct Pending {
    error: Option<OutputStream>,
    stdin: Option<mpsc::Receiver<Vec<u8>>>,
    stdout: Option<OutputStream>,
    stderr: Option<OutputStream>,
    resize: Option<mpsc::Receiver<Vec<u8>>>,
}

struct Reader {
    frames: mpsc::Sender<Frame>,
    expected: BTreeSet<StreamType>,
    opened: HashMap<u32, StreamType>,
    inputs: HashMap<u32, mpsc::Sender<Vec<u8>>>,
    pending: Pending,
    ready: Option<oneshot::Sender<Streams>>,
    last_stream: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Dropped with the reader: what [`ClientGone`] waits for.
    _reading: tokio::sync::watch::Sender<()>,
    client_gone: Option<ClientGone>,
}

impl Reader {
    async fn run<R: AsyncRead>(mut self, read: R) {
        let mut read = std::pin::pin!(read);
        let mut decoder = FrameDecoder::default();
        let mut buffer: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            loop {
                match decoder.decode(&buffer) {
                    Ok(Some((frame, used))) => {
                        buffer.drain(..used);
                        if !self.handle(frame).await {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        debug!(%error, "SPDY protocol error: closing");
                        let _ = self
                            .frames
                            .send(Frame::GoAway {
                                last_good_stream_id: self
                                    .last_stream
                                    .load(std::sync::atomic::Ordering::Relaxed),
                                status: goaway::PROTOCOL_ERROR,
                            })
                            .await;
                        return;
                    }
                }
            }
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Handles one frame; false ends the connection.
    async fn handle(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                self.open(stream_id, flags, &headers).await;
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if !data.is_empty() {
                    let delta = data.len() as u32;
                    for id in [stream_id, 0] {
                        let _ = self
                            .frames
                            .send(Frame::WindowUpdate {
                                stream_id: id,
                                delta,
                            })
                            .await;
                    }
                }
                if let Some(input) = self.inputs.get(&stream_id)
                    && !data.is_empty()
                    && input.send(data).await.is_err()
                {
                    self.inputs.remove(&stream_id);
                }
                if flags & FLAG_FIN != 0 {
                    self.inputs.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                self.inputs.remove(&stream_id);
            }
            Frame::Ping { id } => {
                let _ = self.frames.send(Frame::Ping { id }).await;
            }
            Frame::GoAway { .. } => return false,
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
        true
    }

    async fn open(&mut self, stream_id: u32, flags: u8, headers: &Headers) {
        self.last_stream
            .fetch_max(stream_id, std::sync::atomic::Ordering::Relaxed);
        let kind = header(headers, "streamtype").and_then(StreamType::parse);
        let refuse = |status| Frame::RstStream { stream_id, status };
        let kind = match kind {
            _ if self.opened.contains_key(&stream_id) => {
                let _ = self.frames.send(refuse(rst::STREAM_IN_USE)).await;
                return;
            }
            Some(kind)
                if self.expected.contains(&kind) && !self.opened.values().any(|k| *k == kind) =>
            {
                kind
            }
            _ => {
                let _ = self.frames.send(refuse(rst::REFUSED_STREAM)).await;
                return;
            }
        };
        self.opened.insert(stream_id, kind);
        let _ = self
            .frames
            .send(Frame::SynReply {
                stream_id,
                flags: 0,
                headers: Headers::new(),
            })
            .await;
        let output = || OutputStream {
            id: stream_id,
            frames: self.frames.clone(),
        };
        let mut input = || {
            let (sender, receiver) = mpsc::channel(16);
            if flags & FLAG_FIN == 0 {
                self.inputs.insert(stream_id, sender);
            }
            receiver
        };
        match kind {
            StreamType::Error => self.pending.error = Some(output()),
            StreamType::Stdout => self.pending.stdout = Some(output()),
            StreamType::Stderr => self.pending.stderr = Some(output()),
            StreamType::Stdin => self.pending.stdin = Some(input()),
            StreamType::Resize => self.pending.resize = Some(input()),
        }
        if self.opened.len() == self.expected.len()
            && let (Some(ready), Some(error), Some(client_gone)) = (
                self.ready.take(),
                self.pending.error.take(),
                self.client_gone.take(),
            )
        {
            let pending = std::mem::take(&mut self.pending);
            let _ = ready.send(Streams {
                error,
                stdin: pending.stdin,
                stdout: pending.stdout,
                stderr: pending.stderr,
                resize: pending.resize,
                client_gone,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vk_eci_core::kubelet::spdy::Frame;

    struct Client {
        encoder: FrameEncoder,
        decoder: FrameDecoder,
        io: tokio::io::DuplexStream,
        buffer: Vec<u8>,
    }

    impl Client {
        async fn send(&mut self, frame: Frame) {
            let mut bytes = Vec::new();
            self.encoder.encode(&frame, &mut bytes).unwrap();
            self.io.write_all(&bytes).await.unwrap();
        }

        async fn open(&mut self, id: u32, kind: &str, flags: u8) {
            self.send(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                flags,
                headers: vec![("streamtype".into(), kind.into())],
            })
            .await;
        }

        /// The next frame that is not a WINDOW_UPDATE or SYN_REPLY.
        async fn next(&mut self) -> Option<Frame> {
            loop {
                if let Some((frame, used)) = self.decoder.decode(&self.buffer).unwrap() {
                    self.buffer.drain(..used);
                    match frame {
                        Frame::WindowUpdate { .. } | Frame::SynReply { .. } => continue,
                        frame => return Some(frame),
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.io.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return None;
                }
                self.buffer.extend_from_slice(&chunk[..n]);
            }
        }
    }

    fn pair() -> (Client, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(1 << 20);
        (
            Client {
                encoder: FrameEncoder::new(),
                decoder: FrameDecoder::default(),
                io: client,
                buffer: Vec::new(),
            },
            server,
        )
    }

    #[tokio::test]
    async fn streams_are_handed_over_once_all_are_open_and_pings_answered() {
        let (mut client, server) = pair();
        let expected = BTreeSet::from([StreamType::Error, StreamType::Stdin, StreamType::Stdout]);
        let server = tokio::spawn(accept(server, expected, Duration::from_secs(5)));
        client.open(1, "error", 0).await;
        client.send(Frame::Ping { id: 1 }).await;
        assert_eq!(client.next().await, Some(Frame::Ping { id: 1 }));
        client.open(3, "stdin", 0).await;
        client.open(5, "stdout", 0).await;
        let (mut streams, session) = server.await.unwrap().unwrap();
        client
            .send(Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: b"hi\n".to_vec(),
            })
            .await;
        let stdin = streams.stdin.as_mut().unwrap();
        assert_eq!(stdin.recv().await.unwrap(), b"hi\n");
        assert_eq!(stdin.recv().await, None, "FIN ends stdin");
        let stdout = streams.stdout.clone().unwrap();
        assert!(stdout.write(b"out").await);
        stdout.close().await;
        streams.error.close().await;
        let finished = tokio::spawn(session.finish());
        assert_eq!(
            client.next().await,
            Some(Frame::Data {
                stream_id: 5,
                flags: 0,
                data: b"out".to_vec()
            })
        );
        assert!(matches!(
            client.next().await,
            Some(Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                ..
            })
        ));
        assert!(matches!(
            client.next().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                ..
            })
        ));
        assert!(matches!(
            client.next().await,
            Some(Frame::GoAway {
                last_good_stream_id: 5,
                ..
            })
        ));
        drop(client);
        finished.await.unwrap();
    }

    #[tokio::test]
    async fn unexpected_and_duplicate_streams_are_refused() {
        let (mut client, server) = pair();
        let expected = BTreeSet::from([StreamType::Error]);
        let server = tokio::spawn(accept(server, expected, Duration::from_secs(5)));
        client.open(1, "stdin", 0).await;
        assert_eq!(
            client.next().await,
            Some(Frame::RstStream {
                stream_id: 1,
                status: rst::REFUSED_STREAM
            })
        );
        client.open(3, "error", 0).await;
        let (_streams, session) = server.await.unwrap().unwrap();
        drop(session);
    }

    #[tokio::test]
    async fn a_client_that_leaves_is_noticed_without_writing_to_it() {
        let (mut client, server) = pair();
        let server = tokio::spawn(accept(
            server,
            BTreeSet::from([StreamType::Error]),
            Duration::from_secs(5),
        ));
        client.open(1, "error", 0).await;
        let (mut streams, _session) = server.await.unwrap().unwrap();
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), streams.client_gone.wait())
            .await
            .expect("the client's leaving was not noticed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_opens_its_streams_times_out() {
        let (mut client, server) = pair();
        let expected = BTreeSet::from([StreamType::Error, StreamType::Stdout]);
        let server = tokio::spawn(accept(server, expected, Duration::from_secs(30)));
        client.open(1, "error", 0).await;
        let result = server.await.unwrap();
        assert!(matches!(result, Err(SessionError::StreamTimeout(_))));
    }

    #[tokio::test]
    async fn garbage_ends_the_connection_with_a_protocol_error() {
        let (mut client, server) = pair();
        let server = tokio::spawn(accept(
            server,
            BTreeSet::from([StreamType::Error]),
            Duration::from_secs(5),
        ));
        client
            .io
            .write_all(&[0x80, 0x02, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1])
            .await
            .unwrap();
        assert!(matches!(
            client.next().await,
            Some(Frame::GoAway {
                status: goaway::PROTOCOL_ERROR,
                ..
            })
        ));
        assert!(matches!(server.await.unwrap(), Err(SessionError::Closed)));
    }
}
