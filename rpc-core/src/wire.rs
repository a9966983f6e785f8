//! The wire protocol: what the bytes on a connection mean (PROTOCOL.md is the prose version).
//!
//! A connection starts with an 8-byte preface from each side ([`PREFACE`], whose last byte
//! holds flags: [`PREFACE_SERVES`] says the side answers calls), then carries frames:
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
//! DECLARE     = service_id:u32 count:u16 (method_id:u32 fingerprint:u32)*
//!                                               the client's view of a service's methods
//! COMPRESSED  = original_len:u32 lz4_block      another frame, compressed (compress.rs)
//! ```
//!
//! Stream frames travel both ways: from the client they concern the call's request stream
//! (flag 4 of its REQUEST says one follows), from the server its response stream.
//!
//! When the client serves too, the server calls it over the same connection: the side that
//! dialled calls under odd call ids and the side that accepted under even ones, so a frame's
//! call id says whose call it concerns (PROTOCOL.md, "Calls both ways").
//!
//! All integers are big-endian. Nothing here does I/O: [`FrameDecoder`] (`decoder.rs`) splits
//! frames out of a byte buffer that a transport fills, [`Frame::parse`] (`frame.rs`) reads
//! one, and the builders (`encode.rs`) append every frame either side sends to a buffer that
//! a transport drains. Frame kinds `0x10..=0x1F` are reserved for streams. Status bytes and
//! their meaning as errors live in the crate's `status` module.
//!
//! This module is public for transport authors, tests and fuzzing; services never need it.

use crate::error::RpcError;

/// The bytes each side sends first: a zero byte (so no text protocol matches), `RPC`,
/// CR LF, the protocol version, and a byte of flags, here none: the preface of a side that
/// answers no calls (a plain client). See [`preface`] for the others.
pub const PREFACE: [u8; 8] = [0x00, b'R', b'P', b'C', b'\r', b'\n', PROTOCOL_VERSION, 0x00];

/// The preface flag of a side that answers calls on the connection: every server, and a
/// client that serves its peer too (so calls travel both ways). Flags a side does not know
/// are ignored.
pub const PREFACE_SERVES: u8 = 0x01;

/// The preface a side sends: [`PREFACE`] with `flags` ([`PREFACE_SERVES`],
/// [`PREFACE_LZ4`]).
pub const fn preface(flags: u8) -> [u8; 8] {
    let mut preface = PREFACE;
    preface[7] = flags;
    preface
}

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
#[non_exhaustive]
pub enum FrameKind {
    /// A call, from caller to callee (usually client to server).
    Request = 0x01,
    /// The outcome of a call, from callee to caller.
    Response = 0x02,
    /// The caller no longer wants the outcome of a call.
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
    /// Another frame, LZ4-compressed (only to a peer whose preface accepts it).
    Compressed = 0x08,
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

/// The identifier of a service or method on the wire: 32-bit FNV-1a of its name.
///
/// Routing by a fixed-size id keeps strings off the hot path; the `#[service]` macro computes
/// the same function at compile time and rejects two methods whose ids collide.
pub const fn wire_id(name: &str) -> u32 {
    fnv1a(name.as_bytes())
}

/// 32-bit FNV-1a of `bytes`.
pub(crate) const fn fnv1a(bytes: &[u8]) -> u32 {
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
    /// Chosen by the caller, unique among its live calls on the connection: odd when the
    /// caller dialled the connection, even when it accepted it.
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

const FLAG_DEADLINE: u8 = 0b01;
const FLAG_METADATA: u8 = 0b10;
const FLAG_REQUEST_STREAM: u8 = 0b100;

fn metadata_too_large(len: usize) -> RpcError {
    RpcError::ResourceExhausted {
        message: format!("metadata of {len} bytes is too large").into(),
    }
}

mod compress;
mod decoder;
mod encode;
mod frame;

pub use crate::status::Status;
pub use compress::{compress_frames, inflate, PREFACE_LZ4};
pub use decoder::FrameDecoder;
pub use encode::*;
pub use frame::{decode_metadata, Frame, MAX_METADATA_ENTRIES};

#[cfg(test)]
mod tests;
