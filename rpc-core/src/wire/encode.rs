//! Frame builders: every frame this protocol sends, appended to an outgoing buffer.

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    metadata_too_large, FrameKind, RequestHead, Status, FLAG_DEADLINE, FLAG_METADATA,
    FLAG_REQUEST_STREAM, LENGTH_PREFIX, PREFACE,
};
use crate::blocks;
use crate::error::RpcError;

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
    let len = buf.len() - start.offset - LENGTH_PREFIX + blocks::set_aside_after(buf, start.offset);
    if len > max_frame {
        abandon_frame(buf, start);
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
    blocks::truncate(buf, start.offset);
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

/// Appends a whole request frame: the header, then the payload `encode_payload` writes.
///
/// # Errors
///
/// `RpcError::ResourceExhausted` for metadata that does not fit the format, what
/// `encode_payload` returns, or `RpcError::FrameTooLarge`; nothing is appended then.
pub fn encode_request(
    buf: &mut BytesMut,
    head: &RequestHead,
    metadata: &[(String, String)],
    max_frame: usize,
    encode_payload: impl FnOnce(&mut BytesMut) -> Result<(), RpcError>,
) -> Result<(), RpcError> {
    let start = start_request(buf, head, metadata)?;
    if let Err(error) = encode_payload(buf) {
        abandon_frame(buf, start);
        return Err(error);
    }
    finish_frame(buf, start, max_frame)
}

/// Appends the header of a response frame; the caller appends the payload (an encoded value
/// for `Status::Ok`, UTF-8 text otherwise) and finishes it.
pub fn start_response(buf: &mut BytesMut, call_id: u32, status: Status) -> FrameStart {
    let start = start_frame(buf, FrameKind::Response);
    buf.put_u8(status as u8);
    buf.put_u32(call_id);
    start
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
    let start = start_response(buf, call_id, status);
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
/// carrying `bytes` as they are (set aside rather than copied when the outbox sends large
/// blocks as segments of their own).
pub fn encode_stream_piece(buf: &mut BytesMut, call_id: u32, bytes: &Bytes, last: bool) {
    let kind = if last {
        FrameKind::StreamItem
    } else {
        FrameKind::StreamPart
    };
    let start = start_frame(buf, kind);
    buf.put_u32(call_id);
    blocks::append(buf, bytes);
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

/// Appends a window frame granting `credit` more items and `bytes` more bytes of items.
pub fn encode_window(buf: &mut BytesMut, call_id: u32, credit: u32, bytes: u32) {
    let start = start_frame(buf, FrameKind::Window);
    buf.put_u32(call_id);
    buf.put_u32(credit);
    buf.put_u32(bytes);
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

/// Everything a server sends to a connection it will not serve: its preface, then a GOAWAY
/// that takes no call and says why (the client's calls fail with `RpcError::Unavailable`
/// naming `reason`).
pub fn refusal(reason: &str) -> BytesMut {
    let mut buf = BytesMut::from(&PREFACE[..]);
    encode_go_away(&mut buf, 0, reason);
    buf
}
