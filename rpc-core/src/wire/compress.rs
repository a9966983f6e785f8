//! Frame compression: LZ4 blocks, negotiated in the preface ([`PREFACE_LZ4`]).
//!
//! A COMPRESSED frame wraps one whole other frame (kind and body):
//!
//! ```text
//! COMPRESSED = original_len:u32 lz4_block      the block inflates to the original frame
//! ```
//!
//! A sender compresses a frame only when the peer's preface accepts LZ4, the frame is at
//! least the configured size, and compressing makes it smaller. A receiver takes them
//! only if its own preface accepted LZ4, and checks the claimed size before inflating:
//! never over the frame limit, never more than LZ4 can expand the bytes that came
//! (255 to 1), so a small frame cannot make it set aside a large buffer (a compression
//! bomb); the block must then inflate to exactly the size claimed, and into a frame that
//! is not itself compressed.

use bytes::{BufMut, Bytes, BytesMut};

use super::{FrameKind, LENGTH_PREFIX};
use crate::error::RpcError;

/// The preface flag of a side that accepts LZ4-compressed frames (see [`super::preface`]).
pub const PREFACE_LZ4: u8 = 0x02;

/// The most an LZ4 block can expand: one byte of match length stands for 255 bytes.
const MAX_RATIO: usize = 255;

/// Slack over [`MAX_RATIO`] for the block's fixed costs (its last literals, the token).
const RATIO_SLACK: usize = 64;

/// Bytes of a COMPRESSED frame before its block: kind and original length.
const HEADER: usize = 1 + 4;

/// Compresses the frames in `buf` from offset `from` (whole frames only, as encoders leave
/// them) that are at least `min_size` bytes long and get smaller for it; the others stay as
/// they are. Frames before `from` are not touched.
pub fn compress_frames(buf: &mut BytesMut, from: usize, min_size: usize) {
    if !has_frame_of(&buf[from..], min_size) {
        return;
    }
    let written = buf.split_off(from);
    let mut rest = &written[..];
    while let Some((frame, after)) = next_frame(rest) {
        if frame.len() >= min_size && frame.first() != Some(&(FrameKind::Compressed as u8)) {
            compress_one(buf, frame);
        } else {
            buf.extend_from_slice(&rest[..LENGTH_PREFIX + frame.len()]);
        }
        rest = after;
    }
    // Encoders leave whole frames only; anything else is kept as it was.
    buf.extend_from_slice(rest);
}

/// The frame body at the start of `bytes` (after its length prefix) and what follows it.
fn next_frame(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let prefix = bytes.get(..LENGTH_PREFIX)?;
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let frame = bytes.get(LENGTH_PREFIX..LENGTH_PREFIX + len)?;
    Some((frame, &bytes[LENGTH_PREFIX + len..]))
}

/// Whether `bytes` (whole frames) hold one of at least `min_size` bytes.
fn has_frame_of(mut bytes: &[u8], min_size: usize) -> bool {
    while let Some((frame, rest)) = next_frame(bytes) {
        if frame.len() >= min_size {
            return true;
        }
        bytes = rest;
    }
    false
}

/// Appends `frame` (kind and body) to `buf` as a COMPRESSED frame, or as it is when
/// compressing does not make it smaller.
fn compress_one(buf: &mut BytesMut, frame: &[u8]) {
    let start = buf.len();
    let bound = lz4_flex::block::get_maximum_output_size(frame.len());
    buf.resize(start + LENGTH_PREFIX + HEADER + bound, 0);
    let block_at = start + LENGTH_PREFIX + HEADER;
    let compressed = lz4_flex::block::compress_into(frame, &mut buf[block_at..]);
    match compressed {
        Ok(block_len) if HEADER + block_len < frame.len() => {
            buf.truncate(block_at + block_len);
            let len = (HEADER + block_len) as u32;
            buf[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
            buf[start + LENGTH_PREFIX] = FrameKind::Compressed as u8;
            let original = frame.len() as u32;
            buf[start + LENGTH_PREFIX + 1..block_at].copy_from_slice(&original.to_be_bytes());
        }
        // Incompressible (or the bound was wrong): the frame goes as it is.
        _ => {
            buf.truncate(start);
            buf.put_u32(frame.len() as u32);
            buf.extend_from_slice(frame);
        }
    }
}

/// The frame a received frame body stands for: `frame` itself, or, for a COMPRESSED frame,
/// the frame it inflates to.
///
/// `accepted_up_to` is the frame limit compressed frames may inflate to, `None` when this
/// side's preface did not accept compression.
///
/// # Errors
///
/// `RpcError::Protocol` for a COMPRESSED frame when `accepted_up_to` is `None`, one whose
/// claimed size is over the limit or more than its bytes can inflate to, a block that does
/// not inflate to exactly that size, and a compressed frame inside another.
#[inline]
pub fn inflate(frame: Bytes, accepted_up_to: Option<usize>) -> Result<Bytes, RpcError> {
    if frame.first() != Some(&(FrameKind::Compressed as u8)) {
        return Ok(frame);
    }
    inflate_compressed(&frame, accepted_up_to)
}

/// [`inflate`] of a COMPRESSED frame.
#[cold]
fn inflate_compressed(frame: &Bytes, accepted_up_to: Option<usize>) -> Result<Bytes, RpcError> {
    let Some(max_frame) = accepted_up_to else {
        return Err(RpcError::protocol(
            "a compressed frame, though this side's preface did not accept compression",
        ));
    };
    let Some(claim) = frame.get(1..HEADER) else {
        return Err(RpcError::protocol("a compressed frame without its size"));
    };
    let original = u32::from_be_bytes([claim[0], claim[1], claim[2], claim[3]]) as usize;
    let block = &frame[HEADER..];
    if original > max_frame {
        return Err(RpcError::protocol(format!(
            "a compressed frame claims {original} bytes, over the frame limit of {max_frame}"
        )));
    }
    let most = block
        .len()
        .saturating_mul(MAX_RATIO)
        .saturating_add(RATIO_SLACK);
    if original > most {
        return Err(RpcError::protocol(format!(
            "a compressed frame claims {original} bytes from {}: more than LZ4 can inflate to",
            block.len()
        )));
    }
    if original == 0 {
        return Err(RpcError::protocol(
            "a compressed frame claims an empty frame",
        ));
    }
    let mut inflated = BytesMut::zeroed(original);
    match lz4_flex::block::decompress_into(block, &mut inflated) {
        Ok(len) if len == original => {}
        Ok(len) => {
            return Err(RpcError::protocol(format!(
                "a compressed frame inflated to {len} bytes, not the {original} it claimed"
            )))
        }
        Err(error) => {
            return Err(RpcError::protocol(format!(
                "a compressed frame did not inflate: {error}"
            )))
        }
    }
    if inflated[0] == FrameKind::Compressed as u8 {
        return Err(RpcError::protocol("a compressed frame inside another"));
    }
    Ok(inflated.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode_response, Frame, Status};

    /// A RESPONSE frame of `payload`, length prefix included.
    fn response(call_id: u32, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        encode_response(&mut buf, call_id, Status::Ok, payload, usize::MAX).unwrap();
        buf
    }

    /// The frame bodies in `buf`.
    fn frames(buf: &[u8]) -> Vec<Bytes> {
        let mut bodies = Vec::new();
        let mut rest = buf;
        while let Some((frame, after)) = next_frame(rest) {
            bodies.push(Bytes::copy_from_slice(frame));
            rest = after;
        }
        assert!(rest.is_empty());
        bodies
    }

    /// The body of a RESPONSE frame of 4 KiB, compressed.
    fn compressed_response() -> Bytes {
        let mut buf = response(1, &[7; 4096]);
        compress_frames(&mut buf, 0, 1024);
        frames(&buf).remove(0)
    }

    /// A COMPRESSED frame body claiming `original` bytes, with `block` after the claim.
    fn compressed(original: u32, block: &[u8]) -> Bytes {
        let mut frame = vec![FrameKind::Compressed as u8];
        frame.extend_from_slice(&original.to_be_bytes());
        frame.extend_from_slice(block);
        Bytes::from(frame)
    }

    #[test]
    fn large_compressible_frames_are_compressed_and_inflate_to_themselves() {
        let mut buf = response(1, b"small");
        let before = buf.len();
        let text = b"the same words again and again ".repeat(2000);
        buf.extend_from_slice(&response(3, &text));
        buf.extend_from_slice(&response(5, b"small too"));
        let original = frames(&buf);
        compress_frames(&mut buf, before, 1024);
        let sent = frames(&buf);
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0], original[0], "frames before `from` are not touched");
        assert_eq!(sent[2], original[2], "small frames go as they are");
        assert_eq!(sent[1][0], FrameKind::Compressed as u8);
        assert!(
            sent[1].len() < original[1].len() / 10,
            "{} bytes",
            sent[1].len()
        );
        for (sent, original) in sent.into_iter().zip(original) {
            assert_eq!(inflate(sent, Some(1 << 20)).unwrap(), original);
        }
    }

    #[test]
    fn frames_that_do_not_shrink_go_as_they_are() {
        let mut random = fastrand::Rng::with_seed(7);
        let noise: Vec<u8> = (0..4096).map(|_| random.u8(..)).collect();
        let mut buf = response(1, &noise);
        let original = buf.clone();
        compress_frames(&mut buf, 0, 1024);
        assert!(
            buf == original,
            "random bytes do not shrink, so they go as they are"
        );
    }

    #[test]
    fn a_compressed_frame_is_refused_where_compression_was_not_accepted() {
        let error = inflate(compressed_response(), None).unwrap_err();
        assert!(
            error.to_string().contains("did not accept compression"),
            "{error}"
        );
    }

    #[test]
    fn a_claim_over_the_frame_limit_is_refused_before_inflating() {
        let error = inflate(compressed_response(), Some(1024)).unwrap_err();
        assert!(
            error.to_string().contains("over the frame limit"),
            "{error}"
        );
    }

    /// A compression bomb: a few bytes claiming many megabytes (within the frame limit) are
    /// refused for their claim, before a buffer of that size is set aside.
    #[test]
    fn a_claim_larger_than_lz4_can_inflate_its_bytes_to_is_refused() {
        let bomb = compressed(8 << 20, &[0x1F, 0, 0, 0, 0]);
        let error = inflate(bomb, Some(16 << 20)).unwrap_err();
        assert!(
            error.to_string().contains("more than LZ4 can inflate to"),
            "{error}"
        );
        // The most LZ4 can really do passes the check (and inflates): 64 KiB of zeros.
        let zeros = response(1, &[0; 65_536]);
        let block = lz4_flex::block::compress(&zeros[LENGTH_PREFIX..]);
        let claim = (zeros.len() - LENGTH_PREFIX) as u32;
        assert!(inflate(compressed(claim, &block), Some(1 << 20)).is_ok());
    }

    #[test]
    fn a_block_that_does_not_inflate_to_its_claim_is_refused() {
        let frame = response(1, &[7; 4096]);
        let block = lz4_flex::block::compress(&frame[LENGTH_PREFIX..]);
        let claim = (frame.len() - LENGTH_PREFIX) as u32;
        for wrong in [claim - 1, claim + 1] {
            assert!(
                inflate(compressed(wrong, &block), Some(1 << 20)).is_err(),
                "{wrong}"
            );
        }
        assert!(inflate(compressed(claim, &block[..block.len() / 2]), Some(1 << 20)).is_err());
        assert!(inflate(compressed(0, &[]), Some(1 << 20)).is_err());
    }

    #[test]
    fn a_compressed_frame_inside_another_is_refused() {
        let inner = compressed(4, &[0x40, 1, 2, 3, 4]);
        let block = lz4_flex::block::compress(&inner);
        let error = inflate(compressed(inner.len() as u32, &block), Some(1 << 20)).unwrap_err();
        assert!(error.to_string().contains("inside another"), "{error}");
    }

    #[test]
    fn frames_that_are_not_compressed_pass_through() {
        let frame = frames(&response(1, b"plain")).remove(0);
        assert_eq!(inflate(frame.clone(), None).unwrap(), frame);
        assert!(matches!(Frame::parse(frame), Ok(Frame::Response { .. })));
    }
}
