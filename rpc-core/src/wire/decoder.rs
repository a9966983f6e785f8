//! [`FrameDecoder`]: length-prefixed frames out of a byte buffer, the preface first.

use bytes::{Buf, Bytes, BytesMut};

use super::{LENGTH_PREFIX, PREFACE, PREFACE_SERVES, PROTOCOL_VERSION};
use crate::error::RpcError;

/// Splits length-prefixed frames out of a byte buffer, checking the preface first.
///
/// It never reserves memory for a frame whose bytes have not arrived: the caller grows the
/// buffer as it reads, and a length prefix over the maximum is refused as soon as its four
/// bytes are in.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame: usize,
    preface_seen: bool,
    /// The flags byte of the peer's preface, once seen.
    preface_flags: u8,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            max_frame,
            preface_seen: false,
            preface_flags: 0,
        }
    }

    /// A decoder for a stream whose preface was already checked.
    pub fn after_preface(max_frame: usize) -> Self {
        FrameDecoder {
            max_frame,
            preface_seen: true,
            preface_flags: 0,
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

    /// The flags byte of the peer's preface (0 until it has been seen).
    pub fn preface_flags(&self) -> u8 {
        self.preface_flags
    }

    /// Whether the peer's preface said it answers calls on this connection
    /// ([`PREFACE_SERVES`]): a client that serves too, so the server may call it back.
    pub fn peer_serves(&self) -> bool {
        self.preface_flags & PREFACE_SERVES != 0
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
        // The last byte holds flags; flags this side does not know are ignored.
        let fixed = PREFACE.len() - 1;
        let available = buf.len().min(fixed);
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
        if buf.len() < PREFACE.len() {
            return Ok(false);
        }
        self.preface_flags = buf[fixed];
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
