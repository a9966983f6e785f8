//! Parsing frame bodies: [`Frame::parse`] and the metadata section of a request.

use bytes::{Buf, Bytes};

use super::{
    metadata_too_large, FrameKind, RequestHead, Status, FLAG_DEADLINE, FLAG_METADATA,
    FLAG_REQUEST_STREAM,
};
use crate::error::RpcError;

/// One decoded frame. Payloads are zero-copy slices of the received buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
        /// How many more bytes of items it takes (an item may start while any are left).
        bytes: u32,
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

impl Frame {
    /// The call the frame concerns; `None` for the frames about the connection (GOAWAY,
    /// PING, PONG, DECLARE).
    pub fn call_id(&self) -> Option<u32> {
        match self {
            Frame::Request { head, .. } => Some(head.call_id),
            Frame::Response { call_id, .. }
            | Frame::Cancel { call_id }
            | Frame::StreamItem { call_id, .. }
            | Frame::StreamPart { call_id, .. }
            | Frame::StreamEnd { call_id, .. }
            | Frame::Window { call_id, .. }
            | Frame::StopStream { call_id } => Some(*call_id),
            Frame::GoAway { .. }
            | Frame::Ping { .. }
            | Frame::Pong { .. }
            | Frame::Declare { .. } => None,
        }
    }

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
                let bytes = take_u32(&mut body)?;
                expect_end(&body)?;
                Ok(Frame::Window {
                    call_id,
                    credit,
                    bytes,
                })
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

/// The most metadata entries a request may carry, whatever their size: tiny entries cost
/// their bookkeeping, not their bytes.
pub const MAX_METADATA_ENTRIES: usize = 64;

/// Decodes a request's metadata section into key/value pairs.
///
/// # Errors
///
/// `RpcError::ResourceExhausted` when the section is over `max_len` bytes or has more than
/// [`MAX_METADATA_ENTRIES`] entries, and
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
        if pairs.len() == MAX_METADATA_ENTRIES {
            return Err(RpcError::ResourceExhausted {
                message: format!("metadata of more than {MAX_METADATA_ENTRIES} entries").into(),
            });
        }
        let key = take_string(&mut section)?;
        let value = take_string(&mut section)?;
        pairs.push((key, value));
    }
    Ok(pairs)
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
