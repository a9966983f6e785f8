//! The wire protocol: what the bytes on a connection mean (PROTOCOL.md is the prose version).
//!
//! A connection starts with an 8-byte [`PREFACE`] from each side, then carries frames:
//!
//! ```text
//! frame    = length:u32be kind:u8 body          (length counts kind + body)
//! REQUEST  = flags:u8 call_id:u32 service_id:u32 method_id:u32
//!            [deadline_us:u64]  (flags & 1)     remaining time, not a wall clock
//!            [meta_len:u16 meta] (flags & 2)    meta = (klen:u16 key vlen:u16 value)*
//!            payload                            postcard-encoded argument tuple
//! RESPONSE = status:u8 call_id:u32 payload      status 0: postcard value; else UTF-8 text
//! CANCEL   = call_id:u32
//! GOAWAY   = last_call_id:u32 reason:UTF-8      the sender accepts no call above last_call_id
//! STREAM_ITEM = call_id:u32 payload             one item of the call's stream
//! STREAM_END  = call_id:u32 status:u8 text      the stream ended (status 0) or failed
//! WINDOW      = call_id:u32 credit:u32          the receiver takes `credit` more items
//! STOP_STREAM = call_id:u32                     the receiver wants no more items
//! STREAM_PART = call_id:u32 bytes               a piece of an item too big for one frame
//! PING        = opaque:u64                      asks the peer to answer with PONG
//! PONG        = opaque:u64                      the answer to the PING with this opaque
//! ```
//!
//! Stream frames travel both ways: from the client they concern the call's request stream
//! (flag 4 of its REQUEST says one follows), from the server its response stream.
//!
//! All integers are big-endian. Nothing here does I/O: [`FrameDecoder`] splits frames out of
//! a byte buffer that a transport fills, and the `encode_*` functions append frames to a
//! buffer that a transport drains. Frame kinds `0x10..=0x1F` are reserved for streams.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::RpcError;

/// The bytes each side sends first: a zero byte (so no text protocol matches), `RPC`,
/// CR LF, the protocol version, and a reserved zero byte.
pub const PREFACE: [u8; 8] = [0x00, b'R', b'P', b'C', b'\r', b'\n', PROTOCOL_VERSION, 0x00];

/// The protocol version carried in [`PREFACE`].
pub const PROTOCOL_VERSION: u8 = 1;

/// Size of the length prefix in front of every frame.
pub const LENGTH_PREFIX: usize = 4;

/// The default maximum frame size (length prefix excluded): 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// The default maximum size of a request's metadata section: 8 KiB.
pub const DEFAULT_MAX_METADATA: usize = 8 * 1024;

/// The kind byte that follows the length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A call from client to server.
    Request = 0x01,
    /// The outcome of a call, from server to client.
    Response = 0x02,
    /// The client no longer wants the outcome of a call.
    Cancel = 0x03,
    /// The sender is going away and accepts no new calls.
    GoAway = 0x04,
    /// A keepalive probe.
    Ping = 0x05,
    /// The answer to a keepalive probe.
    Pong = 0x06,
    /// The fingerprints of a service's methods as the client was built, sent before its
    /// first call to that service on a connection.
    Declare = 0x07,
    /// One item of a call's stream.
    StreamItem = 0x10,
    /// The end of a call's stream, clean or with an error.
    StreamEnd = 0x11,
    /// More credit for the sender of a call's stream.
    Window = 0x12,
    /// The receiver of a call's stream wants no more items.
    StopStream = 0x13,
    /// A piece of a large stream item; the item's last piece comes as a STREAM_ITEM.
    StreamPart = 0x14,
}

/// Status byte of a response frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The handler returned; the payload is its postcard-encoded result.
    Ok = 0,
    /// No such service on this server.
    UnknownService = 1,
    /// No such method in the service.
    UnknownMethod = 2,
    /// The request's arguments did not decode.
    BadRequest = 3,
    /// The handler panicked.
    HandlerPanicked = 4,
    /// The deadline passed before the handler finished.
    DeadlineExceeded = 5,
    /// The encoded result was larger than the server's maximum frame.
    ResponseTooLarge = 6,
    /// The server is shutting down and did not run the call.
    Unavailable = 7,
    /// A server limit refused the call.
    ResourceExhausted = 8,
    /// Any other server-side failure.
    Internal = 9,
    /// An interceptor found no acceptable credentials.
    Unauthenticated = 10,
    /// An interceptor refused the caller this call.
    PermissionDenied = 11,
    /// The client was built against a different version of this method (its argument or
    /// result types differ).
    Incompatible = 12,
}

impl Status {
    fn from_byte(byte: u8) -> Option<Status> {
        Some(match byte {
            0 => Status::Ok,
            1 => Status::UnknownService,
            2 => Status::UnknownMethod,
            3 => Status::BadRequest,
            4 => Status::HandlerPanicked,
            5 => Status::DeadlineExceeded,
            6 => Status::ResponseTooLarge,
            7 => Status::Unavailable,
            8 => Status::ResourceExhausted,
            9 => Status::Internal,
            10 => Status::Unauthenticated,
            11 => Status::PermissionDenied,
            12 => Status::Incompatible,
            _ => return None,
        })
    }
}

/// The identifier of a service or method on the wire: 32-bit FNV-1a of its name.
///
/// Routing by a fixed-size id keeps strings off the hot path; the `#[service]` macro computes
/// the same function at compile time and rejects two methods whose ids collide.
pub const fn wire_id(name: &str) -> u32 {
    let bytes = name.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut index = 0;
    while index < bytes.len() {
        hash ^= bytes[index] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        index += 1;
    }
    hash
}

/// The fixed part of a request frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Chosen by the client, unique among its live calls on the connection.
    pub call_id: u32,
    /// [`wire_id`] of the service name.
    pub service_id: u32,
    /// [`wire_id`] of the method name.
    pub method_id: u32,
    /// Time left until the deadline, in microseconds, when the call has one.
    pub deadline_micros: Option<u64>,
    /// Whether the client sends a stream of items for this call after the request.
    pub request_stream: bool,
}

/// One decoded frame. Payloads are zero-copy slices of the received buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A call.
    Request {
        /// Ids and deadline.
        head: RequestHead,
        /// The raw metadata section (see [`decode_metadata`]); empty when absent.
        metadata: Bytes,
        /// The encoded arguments.
        payload: Bytes,
    },
    /// The outcome of a call.
    Response {
        /// The call this answers.
        call_id: u32,
        /// How the call ended.
        status: Status,
        /// The encoded result, or an error message.
        payload: Bytes,
    },
    /// A cancelled call.
    Cancel {
        /// The call to abandon.
        call_id: u32,
    },
    /// The peer accepts no call above `last_call_id`.
    GoAway {
        /// The highest call id the sender accepted.
        last_call_id: u32,
        /// Why it is going away.
        reason: String,
    },
    /// One item of a call's stream.
    StreamItem {
        /// The call the stream belongs to.
        call_id: u32,
        /// The encoded item.
        payload: Bytes,
    },
    /// The end of a call's stream.
    StreamEnd {
        /// The call the stream belongs to.
        call_id: u32,
        /// `Status::Ok` for a clean end; otherwise why the stream failed.
        status: Status,
        /// Text for people, for an error status.
        text: Bytes,
    },
    /// More credit for the sender of a call's stream.
    Window {
        /// The call the stream belongs to.
        call_id: u32,
        /// How many more items the receiver takes.
        credit: u32,
    },
    /// The receiver of a call's stream wants no more items.
    StopStream {
        /// The call the stream belongs to.
        call_id: u32,
    },
    /// A keepalive probe: answer with `Pong` carrying the same value.
    Ping {
        /// Echoed in the answer.
        opaque: u64,
    },
    /// The answer to a keepalive probe.
    Pong {
        /// The value of the `Ping` it answers.
        opaque: u64,
    },
    /// The fingerprints of a service's methods as the client knows them.
    Declare {
        /// The service.
        service_id: u32,
        /// `(method_id, fingerprint)` for each of its methods.
        methods: Vec<(u32, u32)>,
    },
    /// A piece of a large stream item.
    StreamPart {
        /// The call the stream belongs to.
        call_id: u32,
        /// The piece's bytes.
        payload: Bytes,
    },
}

const FLAG_DEADLINE: u8 = 0b01;
const FLAG_METADATA: u8 = 0b10;
const FLAG_REQUEST_STREAM: u8 = 0b100;

impl Frame {
    /// Decodes one frame body (the bytes after the length prefix).
    ///
    /// # Errors
    ///
    /// `RpcError::Protocol` for an unknown kind, a truncated header or an invalid status.
    pub fn parse(mut body: Bytes) -> Result<Frame, RpcError> {
        let kind = take_u8(&mut body)?;
        match kind {
            k if k == FrameKind::Request as u8 => {
                let flags = take_u8(&mut body)?;
                if flags & !(FLAG_DEADLINE | FLAG_METADATA | FLAG_REQUEST_STREAM) != 0 {
                    return Err(RpcError::protocol("unknown request flags"));
                }
                let call_id = take_u32(&mut body)?;
                let service_id = take_u32(&mut body)?;
                let method_id = take_u32(&mut body)?;
                let deadline_micros = if flags & FLAG_DEADLINE != 0 {
                    Some(take_u64(&mut body)?)
                } else {
                    None
                };
                let metadata = if flags & FLAG_METADATA != 0 {
                    let len = usize::from(take_u16(&mut body)?);
                    take_bytes(&mut body, len)?
                } else {
                    Bytes::new()
                };
                Ok(Frame::Request {
                    head: RequestHead {
                        call_id,
                        service_id,
                        method_id,
                        deadline_micros,
                        request_stream: flags & FLAG_REQUEST_STREAM != 0,
                    },
                    metadata,
                    payload: body,
                })
            }
            k if k == FrameKind::Response as u8 => {
                let status = Status::from_byte(take_u8(&mut body)?)
                    .ok_or_else(|| RpcError::protocol("unknown response status"))?;
                let call_id = take_u32(&mut body)?;
                Ok(Frame::Response {
                    call_id,
                    status,
                    payload: body,
                })
            }
            k if k == FrameKind::Cancel as u8 => {
                let call_id = take_u32(&mut body)?;
                expect_end(&body)?;
                Ok(Frame::Cancel { call_id })
            }
            k if k == FrameKind::GoAway as u8 => {
                let last_call_id = take_u32(&mut body)?;
                let reason = String::from_utf8_lossy(&body).into_owned();
                Ok(Frame::GoAway {
                    last_call_id,
                    reason,
                })
            }
            k if k == FrameKind::Ping as u8 || k == FrameKind::Pong as u8 => {
                let opaque = take_u64(&mut body)?;
                expect_end(&body)?;
                Ok(if k == FrameKind::Ping as u8 {
                    Frame::Ping { opaque }
                } else {
                    Frame::Pong { opaque }
                })
            }
            k if k == FrameKind::StreamItem as u8 => {
                let call_id = take_u32(&mut body)?;
                Ok(Frame::StreamItem {
                    call_id,
                    payload: body,
                })
            }
            k if k == FrameKind::StreamEnd as u8 => {
                let call_id = take_u32(&mut body)?;
                let status = Status::from_byte(take_u8(&mut body)?)
                    .ok_or_else(|| RpcError::protocol("unknown stream status"))?;
                Ok(Frame::StreamEnd {
                    call_id,
                    status,
                    text: body,
                })
            }
            k if k == FrameKind::Window as u8 => {
                let call_id = take_u32(&mut body)?;
                let credit = take_u32(&mut body)?;
                expect_end(&body)?;
                Ok(Frame::Window { call_id, credit })
            }
            k if k == FrameKind::StreamPart as u8 => {
                let call_id = take_u32(&mut body)?;
                Ok(Frame::StreamPart {
                    call_id,
                    payload: body,
                })
            }
            k if k == FrameKind::Declare as u8 => {
                let service_id = take_u32(&mut body)?;
                let count = usize::from(take_u16(&mut body)?);
                if body.len() != count * 8 {
                    return Err(RpcError::protocol("malformed declare frame"));
                }
                let methods = (0..count)
                    .map(|_| Ok((take_u32(&mut body)?, take_u32(&mut body)?)))
                    .collect::<Result<_, RpcError>>()?;
                Ok(Frame::Declare {
                    service_id,
                    methods,
                })
            }
            k if k == FrameKind::StopStream as u8 => {
                let call_id = take_u32(&mut body)?;
                expect_end(&body)?;
                Ok(Frame::StopStream { call_id })
            }
            other => Err(RpcError::protocol(format!(
                "unknown frame kind 0x{other:02x}"
            ))),
        }
    }
}

/// Splits length-prefixed frames out of a byte buffer, checking the preface first.
///
/// It never reserves memory for a frame whose bytes have not arrived: the caller grows the
/// buffer as it reads, and a length prefix over the maximum is refused as soon as its four
/// bytes are in.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame: usize,
    preface_seen: bool,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            max_frame,
            preface_seen: false,
        }
    }

    /// A decoder for a stream whose preface was already checked.
    pub fn after_preface(max_frame: usize) -> Self {
        FrameDecoder {
            max_frame,
            preface_seen: true,
        }
    }

    /// The largest frame this decoder accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Whether the peer's preface has been received and checked.
    pub fn preface_seen(&self) -> bool {
        self.preface_seen
    }

    /// Consumes the preface from `buf` once all of it is there.
    ///
    /// Returns `Ok(true)` once the preface has been seen, `Ok(false)` while more bytes are
    /// needed. Fails at the first byte that differs, without waiting for the rest.
    ///
    /// # Errors
    ///
    /// `RpcError::Protocol` when the bytes cannot start this protocol.
    pub fn decode_preface(&mut self, buf: &mut BytesMut) -> Result<bool, RpcError> {
        if self.preface_seen {
            return Ok(true);
        }
        let available = buf.len().min(PREFACE.len());
        if buf[..available] != PREFACE[..available] {
            let magic_len = PREFACE.len() - 2;
            let message = if available > magic_len && buf[..magic_len] == PREFACE[..magic_len] {
                format!(
                    "peer speaks protocol version {}, this side speaks {PROTOCOL_VERSION}",
                    buf[magic_len]
                )
            } else {
                "the peer does not speak this protocol (bad preface)".to_owned()
            };
            return Err(RpcError::protocol(message));
        }
        if available < PREFACE.len() {
            return Ok(false);
        }
        buf.advance(PREFACE.len());
        self.preface_seen = true;
        Ok(true)
    }

    /// Splits the next complete frame body off `buf`, or returns `Ok(None)` when more bytes
    /// are needed.
    ///
    /// # Errors
    ///
    /// `RpcError::FrameTooLarge` as soon as a length prefix over the maximum is read, and
    /// `RpcError::Protocol` for an empty frame or a missing preface.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, RpcError> {
        if !self.decode_preface(buf)? {
            return Ok(None);
        }
        if buf.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.max_frame {
            return Err(RpcError::FrameTooLarge {
                len: len as u64,
                max: self.max_frame as u64,
            });
        }
        if len == 0 {
            return Err(RpcError::protocol("empty frame"));
        }
        if buf.len() < LENGTH_PREFIX + len {
            return Ok(None);
        }
        buf.advance(LENGTH_PREFIX);
        Ok(Some(buf.split_to(len).freeze()))
    }

    /// How many more bytes the frame at the start of `buf` needs (0 when `buf` holds no
    /// partial frame). A reader uses it to grow its buffer only by what is really coming.
    pub fn bytes_missing(&self, buf: &[u8]) -> usize {
        if !self.preface_seen {
            return PREFACE.len().saturating_sub(buf.len());
        }
        if buf.len() < LENGTH_PREFIX {
            return LENGTH_PREFIX - buf.len();
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        (LENGTH_PREFIX + len).saturating_sub(buf.len())
    }
}

/// Marks where a frame being appended to a buffer begins, so its length can be filled in.
#[derive(Debug)]
#[must_use = "a started frame must be finished or abandoned"]
pub struct FrameStart {
    offset: usize,
}

/// Appends a length placeholder and the kind byte; finish with [`finish_frame`].
pub fn start_frame(buf: &mut BytesMut, kind: FrameKind) -> FrameStart {
    let offset = buf.len();
    buf.put_u32(0);
    buf.put_u8(kind as u8);
    FrameStart { offset }
}

/// Fills in the length of a frame started with [`start_frame`].
///
/// # Errors
///
/// When the frame is larger than `max_frame` it is removed from `buf` again and
/// `RpcError::FrameTooLarge` is returned.
pub fn finish_frame(
    buf: &mut BytesMut,
    start: FrameStart,
    max_frame: usize,
) -> Result<(), RpcError> {
    let len = buf.len() - start.offset - LENGTH_PREFIX;
    if len > max_frame {
        buf.truncate(start.offset);
        return Err(RpcError::FrameTooLarge {
            len: len as u64,
            max: max_frame as u64,
        });
    }
    // `len <= max_frame`, and frame limits are kept below u32::MAX by configuration.
    let len = u32::try_from(len).map_err(|_| RpcError::FrameTooLarge {
        len: len as u64,
        max: u64::from(u32::MAX),
    })?;
    buf[start.offset..start.offset + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Removes a started frame from `buf` (used when encoding its payload failed).
pub fn abandon_frame(buf: &mut BytesMut, start: FrameStart) {
    buf.truncate(start.offset);
}

/// Appends the header of a request frame; the caller appends the payload and finishes it.
///
/// `metadata` pairs are written in order. Keys and values longer than `u16::MAX` bytes, or a
/// section longer than `u16::MAX`, are refused with `RpcError::ResourceExhausted`.
///
/// # Errors
///
/// `RpcError::ResourceExhausted` when the metadata does not fit the format.
pub fn start_request(
    buf: &mut BytesMut,
    head: &RequestHead,
    metadata: &[(String, String)],
) -> Result<FrameStart, RpcError> {
    let start = start_frame(buf, FrameKind::Request);
    let mut flags = 0;
    if head.deadline_micros.is_some() {
        flags |= FLAG_DEADLINE;
    }
    if !metadata.is_empty() {
        flags |= FLAG_METADATA;
    }
    if head.request_stream {
        flags |= FLAG_REQUEST_STREAM;
    }
    buf.put_u8(flags);
    buf.put_u32(head.call_id);
    buf.put_u32(head.service_id);
    buf.put_u32(head.method_id);
    if let Some(micros) = head.deadline_micros {
        buf.put_u64(micros);
    }
    if !metadata.is_empty() {
        let section_len: usize = metadata
            .iter()
            .map(|(key, value)| 4 + key.len() + value.len())
            .sum();
        let Ok(section_len) = u16::try_from(section_len) else {
            abandon_frame(buf, start);
            return Err(metadata_too_large(section_len));
        };
        buf.put_u16(section_len);
        for (key, value) in metadata {
            // Each fits in u16: the whole section does.
            buf.put_u16(key.len() as u16);
            buf.put_slice(key.as_bytes());
            buf.put_u16(value.len() as u16);
            buf.put_slice(value.as_bytes());
        }
    }
    Ok(start)
}

fn metadata_too_large(len: usize) -> RpcError {
    RpcError::ResourceExhausted {
        message: format!("metadata of {len} bytes is too large").into(),
    }
}

/// Decodes a request's metadata section into key/value pairs.
///
/// # Errors
///
/// `RpcError::ResourceExhausted` when the section is over `max_len` bytes, and
/// `RpcError::Protocol` when it is malformed or not UTF-8.
pub fn decode_metadata(
    mut section: Bytes,
    max_len: usize,
) -> Result<Vec<(String, String)>, RpcError> {
    if section.len() > max_len {
        return Err(metadata_too_large(section.len()));
    }
    let mut pairs = Vec::new();
    while section.has_remaining() {
        let key = take_string(&mut section)?;
        let value = take_string(&mut section)?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Appends a response frame whose payload is plain bytes (used for error statuses).
///
/// # Errors
///
/// `RpcError::FrameTooLarge` when it does not fit `max_frame` (nothing is appended then).
pub fn encode_response(
    buf: &mut BytesMut,
    call_id: u32,
    status: Status,
    payload: &[u8],
    max_frame: usize,
) -> Result<(), RpcError> {
    let start = start_frame(buf, FrameKind::Response);
    buf.put_u8(status as u8);
    buf.put_u32(call_id);
    buf.put_slice(payload);
    finish_frame(buf, start, max_frame)
}

/// Appends a cancel frame.
pub fn encode_cancel(buf: &mut BytesMut, call_id: u32) {
    let start = start_frame(buf, FrameKind::Cancel);
    buf.put_u32(call_id);
    // A cancel frame is 5 bytes: it fits every limit.
    let _ = finish_frame(buf, start, usize::MAX);
}

/// Appends a stream-item frame whose payload `encode` writes.
///
/// # Errors
///
/// What `encode` returns, or `RpcError::FrameTooLarge`; nothing is appended then.
pub fn encode_stream_item(
    buf: &mut BytesMut,
    call_id: u32,
    max_frame: usize,
    encode: impl FnOnce(&mut BytesMut) -> Result<(), RpcError>,
) -> Result<(), RpcError> {
    let start = start_frame(buf, FrameKind::StreamItem);
    buf.put_u32(call_id);
    if let Err(error) = encode(buf) {
        abandon_frame(buf, start);
        return Err(error);
    }
    finish_frame(buf, start, max_frame)
}

/// Appends a stream-item frame (the last piece of an item when `last`, else a STREAM_PART)
/// carrying `bytes` as they are.
pub fn encode_stream_piece(buf: &mut BytesMut, call_id: u32, bytes: &[u8], last: bool) {
    let kind = if last {
        FrameKind::StreamItem
    } else {
        FrameKind::StreamPart
    };
    let start = start_frame(buf, kind);
    buf.put_u32(call_id);
    buf.put_slice(bytes);
    // Pieces are cut below every frame limit.
    let _ = finish_frame(buf, start, usize::MAX);
}

/// Appends a stream-end frame.
pub fn encode_stream_end(buf: &mut BytesMut, call_id: u32, status: Status, text: &str) {
    let start = start_frame(buf, FrameKind::StreamEnd);
    buf.put_u32(call_id);
    buf.put_u8(status as u8);
    buf.put_slice(text.as_bytes());
    let _ = finish_frame(buf, start, usize::MAX);
}

/// Appends a window frame granting `credit` more items.
pub fn encode_window(buf: &mut BytesMut, call_id: u32, credit: u32) {
    let start = start_frame(buf, FrameKind::Window);
    buf.put_u32(call_id);
    buf.put_u32(credit);
    let _ = finish_frame(buf, start, usize::MAX);
}

/// Appends a stop-stream frame.
pub fn encode_stop_stream(buf: &mut BytesMut, call_id: u32) {
    let start = start_frame(buf, FrameKind::StopStream);
    buf.put_u32(call_id);
    let _ = finish_frame(buf, start, usize::MAX);
}

/// Appends a DECLARE frame: `service_id` and the `(method_id, fingerprint)` of each of its
/// methods (at most 65,535; a service has far fewer).
pub fn encode_declare(buf: &mut BytesMut, service_id: u32, methods: &[(u32, u32)]) {
    let start = start_frame(buf, FrameKind::Declare);
    buf.put_u32(service_id);
    let count = methods.len().min(usize::from(u16::MAX));
    buf.put_u16(count as u16);
    for (method_id, fingerprint) in &methods[..count] {
        buf.put_u32(*method_id);
        buf.put_u32(*fingerprint);
    }
    let _ = finish_frame(buf, start, usize::MAX);
}

/// Appends a ping frame (`pong: false`) or its answer (`pong: true`).
pub fn encode_ping(buf: &mut BytesMut, opaque: u64, pong: bool) {
    let kind = if pong {
        FrameKind::Pong
    } else {
        FrameKind::Ping
    };
    let start = start_frame(buf, kind);
    buf.put_u64(opaque);
    let _ = finish_frame(buf, start, usize::MAX);
}

/// Appends a go-away frame.
pub fn encode_go_away(buf: &mut BytesMut, last_call_id: u32, reason: &str) {
    let start = start_frame(buf, FrameKind::GoAway);
    buf.put_u32(last_call_id);
    buf.put_slice(reason.as_bytes());
    let _ = finish_frame(buf, start, usize::MAX);
}

fn truncated() -> RpcError {
    RpcError::protocol("truncated frame header")
}

fn expect_end(body: &Bytes) -> Result<(), RpcError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(RpcError::protocol("trailing bytes after frame"))
    }
}

fn take_u8(body: &mut Bytes) -> Result<u8, RpcError> {
    body.try_get_u8().map_err(|_| truncated())
}

fn take_u16(body: &mut Bytes) -> Result<u16, RpcError> {
    body.try_get_u16().map_err(|_| truncated())
}

fn take_u32(body: &mut Bytes) -> Result<u32, RpcError> {
    body.try_get_u32().map_err(|_| truncated())
}

fn take_u64(body: &mut Bytes) -> Result<u64, RpcError> {
    body.try_get_u64().map_err(|_| truncated())
}

fn take_bytes(body: &mut Bytes, len: usize) -> Result<Bytes, RpcError> {
    if body.len() < len {
        return Err(truncated());
    }
    Ok(body.split_to(len))
}

fn take_string(body: &mut Bytes) -> Result<String, RpcError> {
    let len = usize::from(take_u16(body)?);
    let bytes = take_bytes(body, len)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| RpcError::protocol("metadata is not UTF-8"))
}

#[cfg(test)]
mod tests;
