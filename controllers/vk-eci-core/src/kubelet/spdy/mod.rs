//! The SPDY/3.1 frame layer API servers speak to kubelets for exec, attach and port-forward
//! (draft-mbelshe-httpbis-spdy-00 with the 3.1 session flow control): frames to and from bytes,
//! and the per-direction zlib context of header blocks. No IO: the session in `vk-eci` owns the
//! connection.
//!
//! Everything read is bounded: a frame longer than the decoder's limit, a header block that
//! inflates past its limit or declares more pairs than fit, and any malformed field is an
//! error, never a panic or an unbounded buffer.

mod dictionary;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub use dictionary::dictionary;

pub const VERSION: u16 = 3;
/// DATA: the sender's last frame on the stream. SYN_STREAM, SYN_REPLY, HEADERS likewise.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM: the recipient may not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// SPDY's initial stream and session window (§2.6.8).
pub const INITIAL_WINDOW: u32 = 64 * 1024;
/// The largest frame this codec writes, and the default largest it reads: far above what
/// exec traffic needs, far below the 16 MiB a 24-bit length allows.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
/// The largest inflated header block read (kubelet streams carry a few short headers).
pub const DEFAULT_MAX_HEADER_BLOCK: usize = 64 * 1024;

const HEADER_LEN: usize = 8;

/// RST_STREAM status codes (§2.6.2).
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
}

/// GOAWAY status codes (§2.6.6).
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// A header block: names as sent (SPDY/3 requires lower case), values with several entries
/// separated by NUL.
pub type Headers = Vec<(String, String)>;

/// The value of header `name` (case-insensitive).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// SETTINGS id of the initial stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame type this codec does not know; SPDY says to ignore it.
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY frame of {len} bytes is larger than the {max} accepted")]
    FrameTooLarge { len: usize, max: usize },
    #[error("SPDY version {0} is not supported (only 3)")]
    UnsupportedVersion(u16),
    #[error("malformed SPDY {frame} frame: {reason}")]
    Malformed {
        frame: &'static str,
        reason: &'static str,
    },
    #[error("SPDY header block: {0}")]
    HeaderBlock(String),
}

fn malformed(frame: &'static str, reason: &'static str) -> SpdyError {
    SpdyError::Malformed { frame, reason }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let slice = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([slice[0], slice[1], slice[2], slice[3]]))
}

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// Reads frames. Keep one per connection: header blocks share one zlib stream.
pub struct FrameDecoder {
    inflate: Decompress,
    dictionary: Vec<u8>,
    max_frame: usize,
    max_header_block: usize,
}

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("max_frame", &self.max_frame)
            .field("max_header_block", &self.max_header_block)
            .finish_non_exhaustive()
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME, DEFAULT_MAX_HEADER_BLOCK)
    }
}

impl FrameDecoder {
    pub fn new(max_frame: usize, max_header_block: usize) -> Self {
        Self {
            inflate: Decompress::new(true),
            dictionary: dictionary(),
            max_frame,
            max_header_block,
        }
    }

    /// The first complete frame in `input` and how many bytes it took, `None` while more
    /// bytes are needed. A frame longer than the limit is refused as soon as its header is
    /// seen, so the caller never buffers it.
    pub fn decode(&mut self, input: &[u8]) -> Result<Option<(Frame, usize)>, SpdyError> {
        if input.len() < HEADER_LEN {
            return Ok(None);
        }
        let len =
            (usize::from(input[5]) << 16) | (usize::from(input[6]) << 8) | usize::from(input[7]);
        if len > self.max_frame {
            return Err(SpdyError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        let total = HEADER_LEN + len;
        if input.len() < total {
            return Ok(None);
        }
        let flags = input[4];
        let payload = &input[HEADER_LEN..total];
        let frame = if input[0] & 0x80 == 0 {
            let stream_id = u32_at(input, 0).unwrap_or(0) & STREAM_ID_MASK;
            if stream_id == 0 {
                return Err(malformed("DATA", "stream id 0"));
            }
            Frame::Data {
                stream_id,
                flags,
                data: payload.to_vec(),
            }
        } else {
            let version = u16::from_be_bytes([input[0] & 0x7f, input[1]]);
            if version != VERSION {
                return Err(SpdyError::UnsupportedVersion(version));
            }
            let kind = u16::from_be_bytes([input[2], input[3]]);
            self.control(kind, flags, payload)?
        };
        Ok(Some((frame, total)))
    }

    fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) -> Result<Frame, SpdyError> {
        let id = |name, at| {
            u32_at(payload, at)
                .map(|v| v & STREAM_ID_MASK)
                .ok_or_else(|| malformed(name, "too short"))
        };
        let word = |name, at| u32_at(payload, at).ok_or_else(|| malformed(name, "too short"));
        Ok(match kind {
            1 => {
                let stream_id = id("SYN_STREAM", 0)?;
                let associated_to = id("SYN_STREAM", 4)?;
                let priority = payload
                    .get(8)
                    .map(|p| p >> 5)
                    .ok_or_else(|| malformed("SYN_STREAM", "too short"))?;
                if payload.len() < 10 {
                    return Err(malformed("SYN_STREAM", "too short"));
                }
                if stream_id == 0 {
                    return Err(malformed("SYN_STREAM", "stream id 0"));
                }
                let headers = self.headers(&payload[10..])?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers,
                }
            }
            2 => {
                let stream_id = id("SYN_REPLY", 0)?;
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers: self.headers(&payload[4..])?,
                }
            }
            3 => {
                if payload.len() != 8 {
                    return Err(malformed("RST_STREAM", "length is not 8"));
                }
                Frame::RstStream {
                    stream_id: id("RST_STREAM", 0)?,
                    status: word("RST_STREAM", 4)?,
                }
            }
            4 => {
                let count = word("SETTINGS", 0)? as usize;
                if payload.len() != 4 + count.saturating_mul(8) {
                    return Err(malformed("SETTINGS", "length does not match the entries"));
                }
                let entries = (0..count)
                    .map(|i| {
                        let at = 4 + i * 8;
                        let flags_and_id = word("SETTINGS", at)?;
                        Ok(Setting {
                            flags: (flags_and_id >> 24) as u8,
                            id: flags_and_id & 0x00ff_ffff,
                            value: word("SETTINGS", at + 4)?,
                        })
                    })
                    .collect::<Result<_, SpdyError>>()?;
                Frame::Settings { flags, entries }
            }
            6 => {
                if payload.len() != 4 {
                    return Err(malformed("PING", "length is not 4"));
                }
                Frame::Ping {
                    id: word("PING", 0)?,
                }
            }
            7 => {
                if payload.len() != 8 {
                    return Err(malformed("GOAWAY", "length is not 8"));
                }
                Frame::GoAway {
                    last_good_stream_id: id("GOAWAY", 0)?,
                    status: word("GOAWAY", 4)?,
                }
            }
            8 => {
                let stream_id = id("HEADERS", 0)?;
                Frame::Headers {
                    stream_id,
                    flags,
                    headers: self.headers(&payload[4..])?,
                }
            }
            9 => {
                if payload.len() != 8 {
                    return Err(malformed("WINDOW_UPDATE", "length is not 8"));
                }
                let delta = id("WINDOW_UPDATE", 4)?;
                if delta == 0 {
                    return Err(malformed("WINDOW_UPDATE", "delta 0"));
                }
                Frame::WindowUpdate {
                    stream_id: id("WINDOW_UPDATE", 0)?,
                    delta,
                }
            }
            other => Frame::Unknown { kind: other },
        })
    }

    /// Inflates one header block (the zlib stream goes on across blocks) and parses it.
    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let block = self.inflate_block(compressed)?;
        parse_header_block(&block)
    }

    fn inflate_block(&mut self, compressed: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let limit = self.max_header_block;
        let too_large =
            || SpdyError::HeaderBlock(format!("inflates past the {limit} bytes accepted"));
        let mut out: Vec<u8> = Vec::new();
        let mut offset = 0;
        loop {
            if out.len() == out.capacity() {
                // One byte past the limit tells a block at the limit from one beyond it.
                let room = (limit + 1)
                    .saturating_sub(out.len())
                    .min(out.len().max(1024));
                if room == 0 {
                    return Err(too_large());
                }
                out.reserve_exact(room);
            }
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            let result =
                self.inflate
                    .decompress_vec(&compressed[offset..], &mut out, FlushDecompress::Sync);
            let consumed = (self.inflate.total_in() - before_in) as usize;
            let produced = self.inflate.total_out() - before_out;
            offset += consumed;
            match result {
                Ok(Status::StreamEnd) => {
                    return Err(SpdyError::HeaderBlock("the zlib stream ended".into()));
                }
                Ok(_) => {}
                Err(error) if error.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| SpdyError::HeaderBlock(format!("dictionary: {e}")))?;
                    continue;
                }
                Err(error) => return Err(SpdyError::HeaderBlock(format!("inflate: {error}"))),
            }
            if out.len() > limit {
                return Err(too_large());
            }
            let room_left = out.len() < out.capacity();
            // With input used up and room to spare, the sync flush has given everything.
            if offset >= compressed.len() && room_left {
                return Ok(out);
            }
            if consumed == 0 && produced == 0 && room_left {
                return Err(SpdyError::HeaderBlock("truncated zlib data".into()));
            }
        }
    }
}

/// Parses an inflated header block: a 32-bit pair count, then length-prefixed names and values.
pub fn parse_header_block(block: &[u8]) -> Result<Headers, SpdyError> {
    let bad = |reason: &str| SpdyError::HeaderBlock(reason.to_string());
    let count = u32_at(block, 0).ok_or_else(|| bad("no pair count"))? as usize;
    // Each pair takes at least 8 bytes: a count past that cannot be honest.
    if count > block.len() / 8 {
        return Err(bad("more pairs declared than the block holds"));
    }
    let mut at = 4;
    let string = |at: &mut usize| -> Result<String, SpdyError> {
        let len = u32_at(block, *at).ok_or_else(|| bad("truncated length"))? as usize;
        let start = *at + 4;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= block.len())
            .ok_or_else(|| bad("a string runs past the block"))?;
        *at = end;
        String::from_utf8(block[start..end].to_vec()).map_err(|_| bad("a string is not UTF-8"))
    };
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = string(&mut at)?;
        if name.is_empty() {
            return Err(bad("an empty header name"));
        }
        let value = string(&mut at)?;
        headers.push((name, value));
    }
    if at != block.len() {
        return Err(bad("bytes after the last pair"));
    }
    Ok(headers)
}

/// Writes frames. Keep one per connection: header blocks share one zlib stream.
pub struct FrameEncoder {
    deflate: Compress,
}

impl std::fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameEncoder").finish_non_exhaustive()
    }
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameEncoder {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh zlib stream always accepts a dictionary.
        let _ = deflate.set_dictionary(&dictionary());
        Self { deflate }
    }

    /// Appends `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        let (kind, flags, payload) = match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                check_len(data.len())?;
                out.extend_from_slice(&(stream_id & STREAM_ID_MASK).to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                return Ok(());
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut payload = Vec::new();
                payload.extend_from_slice(&(stream_id & STREAM_ID_MASK).to_be_bytes());
                payload.extend_from_slice(&(associated_to & STREAM_ID_MASK).to_be_bytes());
                payload.push((priority & 0x07) << 5);
                payload.push(0);
                self.deflate_block(headers, &mut payload)?;
                (1, *flags, payload)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut payload = (stream_id & STREAM_ID_MASK).to_be_bytes().to_vec();
                self.deflate_block(headers, &mut payload)?;
                (2, *flags, payload)
            }
            Frame::RstStream { stream_id, status } => {
                let mut payload = (stream_id & STREAM_ID_MASK).to_be_bytes().to_vec();
                payload.extend_from_slice(&status.to_be_bytes());
                (3, 0, payload)
            }
            Frame::Settings { flags, entries } => {
                let mut payload = (entries.len() as u32).to_be_bytes().to_vec();
                for entry in entries {
                    let flags_and_id = (u32::from(entry.flags) << 24) | (entry.id & 0x00ff_ffff);
                    payload.extend_from_slice(&flags_and_id.to_be_bytes());
                    payload.extend_from_slice(&entry.value.to_be_bytes());
                }
                (4, *flags, payload)
            }
            Frame::Ping { id } => (6, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut payload = (last_good_stream_id & STREAM_ID_MASK)
                    .to_be_bytes()
                    .to_vec();
                payload.extend_from_slice(&status.to_be_bytes());
                (7, 0, payload)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut payload = (stream_id & STREAM_ID_MASK).to_be_bytes().to_vec();
                self.deflate_block(headers, &mut payload)?;
                (8, *flags, payload)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut payload = (stream_id & STREAM_ID_MASK).to_be_bytes().to_vec();
                payload.extend_from_slice(&(delta & STREAM_ID_MASK).to_be_bytes());
                (9, 0, payload)
            }
            Frame::Unknown { .. } => {
                return Err(malformed("unknown", "cannot be written"));
            }
        };
        check_len(payload.len())?;
        out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        out.extend_from_slice(&(kind as u16).to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&payload);
        Ok(())
    }

    fn deflate_block(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        let block = header_block(headers)?;
        let mut offset = 0;
        loop {
            out.reserve(block.len() / 2 + 64);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&block[offset..], out, FlushCompress::Sync)
                .map_err(|e| SpdyError::HeaderBlock(format!("deflate: {e}")))?;
            offset += (self.deflate.total_in() - before) as usize;
            // A sync flush is complete once input is used up and output space was left over.
            if offset >= block.len() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

fn check_len(len: usize) -> Result<(), SpdyError> {
    if len > DEFAULT_MAX_FRAME {
        return Err(SpdyError::FrameTooLarge {
            len,
            max: DEFAULT_MAX_FRAME,
        });
    }
    Ok(())
}

/// The uncompressed header block of `headers`.
pub fn header_block(headers: &Headers) -> Result<Vec<u8>, SpdyError> {
    let mut block = (headers.len() as u32).to_be_bytes().to_vec();
    for (name, value) in headers {
        for part in [name.as_str(), value.as_str()] {
            let len = u32::try_from(part.len())
                .map_err(|_| SpdyError::HeaderBlock("a header is too long".into()))?;
            block.extend_from_slice(&len.to_be_bytes());
            block.extend_from_slice(part.as_bytes());
        }
    }
    Ok(block)
}

#[cfg(test)]
mod tests;
