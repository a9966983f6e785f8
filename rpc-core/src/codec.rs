//! The payload codec: postcard over serde. The only module that names postcard.
//!
//! Values are encoded straight into the outgoing frame buffer (no intermediate `Vec`), and
//! decoded from a zero-copy slice of the received frame. Decoding rejects trailing bytes, so
//! a payload means exactly one value. Both directions hold values to the same limits
//! (`codec/budget.rs`), so what one peer sends, the other accepts.

mod budget;
mod guard;
mod meter;

use std::fmt;

use bytes::{BufMut, BytesMut};
use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::RpcError;

/// Appends the postcard encoding of `value` to `buf`.
///
/// The value is held to the nesting and element limits [`decode`] applies, counted as it
/// is written, so a value the peer would refuse for them is refused here instead. (Memory
/// the encoder cannot see: a value over 32 times larger in memory than on the wire is
/// refused by the peer.)
///
/// # Errors
///
/// `RpcError::Codec` when the value's `Serialize` impl fails (for example a type postcard
/// cannot carry), or the value breaks a limit the peer's decoder would hold it to. `buf` may
/// then hold a partial encoding; callers abandon the frame.
pub fn encode_into<T: Serialize + ?Sized>(buf: &mut BytesMut, value: &T) -> Result<(), RpcError> {
    let flavor = BytesMutFlavor {
        start: buf.len(),
        buf,
    };
    encode_metered(value, flavor).map_err(|failure| match failure {
        EncodeFailure::Serialize(error) => RpcError::codec(format!("cannot encode value: {error}")),
        EncodeFailure::Limit(limit) => RpcError::codec(format!("cannot encode value: {limit}")),
        EncodeFailure::PeerWouldRefuse(limit) => RpcError::codec(format!(
            "cannot encode value: the peer would refuse it: {limit}"
        )),
    })
}

/// Why [`encode_metered`] failed (kept apart from `RpcError` so that a caller with a
/// fallback, [`encode_small`], formats no message).
enum EncodeFailure {
    /// The value's `Serialize` impl, or the flavour, gave up.
    Serialize(postcard::Error),
    /// A limit counted while writing (nesting).
    Limit(&'static str),
    /// A limit the peer's decoder checks against the encoded length.
    PeerWouldRefuse(&'static str),
}

/// Encodes `value` into `flavor`, held to the limits the peer's decoder applies. The
/// flavour's output is the length of what it encoded.
fn encode_metered<T, F>(value: &T, flavor: F) -> Result<(), EncodeFailure>
where
    T: Serialize + ?Sized,
    F: postcard::ser_flavors::Flavor<Output = usize>,
{
    let budget = budget::Budget::for_encoding();
    let metered = meter::Metered {
        value,
        budget: &budget,
    };
    let encoded =
        postcard::serialize_with_flavor(&metered, flavor).map_err(|error| {
            match budget.violation() {
                Some(limit) => EncodeFailure::Limit(limit),
                None => EncodeFailure::Serialize(error),
            }
        })?;
    budget
        .check_encoded(encoded)
        .map_err(EncodeFailure::PeerWouldRefuse)
}

/// Bytes a value's encoding may take to be held inline by [`encode_small`].
const SMALL: usize = 30;

/// The encoding of a small value, held inline (no buffer allocated for it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SmallEncoding {
    len: u8,
    bytes: [u8; SMALL],
}

impl SmallEncoding {
    pub(crate) const EMPTY: SmallEncoding = SmallEncoding {
        len: 0,
        bytes: [0; SMALL],
    };

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// `value`'s encoding held inline, if it takes at most a few dozen bytes and is one
/// [`encode_into`] would write; `None` otherwise (for any reason: the caller then encodes
/// it with [`encode_into`], which says why it cannot be encoded, if it cannot).
pub(crate) fn encode_small<T: Serialize + ?Sized>(value: &T) -> Option<SmallEncoding> {
    let mut small = SmallEncoding::EMPTY;
    encode_metered(value, SmallFlavor { small: &mut small }).ok()?;
    Some(small)
}

/// Writes into a [`SmallEncoding`], failing once it is full.
struct SmallFlavor<'a> {
    small: &'a mut SmallEncoding,
}

impl postcard::ser_flavors::Flavor for SmallFlavor<'_> {
    type Output = usize;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let len = usize::from(self.small.len);
        let room = self
            .small
            .bytes
            .get_mut(len..len + data.len())
            .ok_or(postcard::Error::SerializeBufferFull)?;
        room.copy_from_slice(data);
        // At most `SMALL` bytes: fits in a `u8`.
        self.small.len = (len + data.len()) as u8;
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(usize::from(self.small.len))
    }
}

/// The length of `value`'s encoding, without encoding it anywhere (a `Vec<u8>` or string is
/// counted, not copied).
///
/// # Errors
///
/// `RpcError::Codec` when the value's `Serialize` impl fails.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, RpcError> {
    postcard::serialize_with_flavor(value, CountingFlavor { len: 0 })
        .map_err(|error| RpcError::codec(format!("cannot encode value: {error}")))
}

struct CountingFlavor {
    len: usize,
}

impl postcard::ser_flavors::Flavor for CountingFlavor {
    type Output = usize;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.len += data.len();
        Ok(())
    }

    fn try_push(&mut self, _data: u8) -> postcard::Result<()> {
        self.len += 1;
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.len)
    }
}

/// Decodes exactly one value from `bytes`.
///
/// Decoding is bounded by the input: values may nest at most 128 levels deep (every
/// sequence, map, tuple, struct, enum, option and newtype is a level), the payload may
/// yield at most 8 elements per byte plus 4096 (zero-sized elements included), and its values
/// may take at most 32 bytes of memory per payload byte, plus 64 KiB (counted as memory:
/// what a `Box` holds and what a sequence or map stores, not only the slots), so a hostile
/// payload can neither overflow the stack, spin the CPU, nor make a few bytes decode into
/// gigabytes. [`encode_into`] holds what it writes to the same nesting and element limits.
///
/// # Errors
///
/// `RpcError::Codec` when the bytes are not a valid encoding of `T`, break those limits, or
/// bytes are left over.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    decode_borrowed(bytes)
}

/// Decodes exactly one value from a received payload, where [`SharedBytes`] in it (the
/// `bytes::Bytes` arguments and results of generated code) come out as slices of `payload`
/// itself, sharing its buffer rather than copying it.
///
/// # Errors
///
/// As [`decode`].
pub fn decode_shared<T: DeserializeOwned>(payload: &bytes::Bytes) -> Result<T, RpcError> {
    decode_shared_borrowed(payload)
}

/// [`decode_borrowed`] and [`decode_shared`] at once: `&str` and `&[u8]` borrow from
/// `payload`, [`SharedBytes`] share its buffer.
///
/// # Errors
///
/// As [`decode`].
pub fn decode_shared_borrowed<'de, T: Deserialize<'de>>(
    payload: &'de bytes::Bytes,
) -> Result<T, RpcError> {
    let _source = SharedSource::set(payload);
    decode_borrowed(payload)
}

thread_local! {
    /// The payload [`decode_shared`] is decoding, which [`SharedBytes`] slices.
    static SHARED_SOURCE: std::cell::RefCell<Option<bytes::Bytes>> = const { std::cell::RefCell::new(None) };
}

/// Makes `payload` the one [`SharedBytes`] slice while it lives (restoring the one before:
/// a decode inside a decode keeps working).
struct SharedSource(Option<bytes::Bytes>);

impl SharedSource {
    fn set(payload: &bytes::Bytes) -> SharedSource {
        SharedSource(SHARED_SOURCE.with(|source| source.replace(Some(payload.clone()))))
    }
}

impl Drop for SharedSource {
    fn drop(&mut self) {
        let before = self.0.take();
        SHARED_SOURCE.with(|source| source.replace(before));
    }
}

/// A block of bytes that travels like [`ByteBuf`] and, decoded by [`decode_shared`], is a
/// slice of the received payload (no copy). Generated code carries `bytes::Bytes`
/// arguments and results in it. Decoded any other way, it is a copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedBytes(pub bytes::Bytes);

impl Serialize for SharedBytes {
    /// Serialized like [`ByteSlice`]. A large block encoded into a connection's outgoing
    /// buffer is set aside rather than copied there, and leaves as its own segment of a
    /// vectored write (the same bytes on the wire).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let _offer = crate::blocks::offer(&self.0);
        ByteSlice(&self.0).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let ByteBuf(bytes) = deserializer.deserialize_str(Base64Visitor)?;
            return Ok(SharedBytes(bytes.into()));
        }
        deserializer.deserialize_bytes(SharedBytesVisitor)
    }
}

struct SharedBytesVisitor;

impl<'de> Visitor<'de> for SharedBytesVisitor {
    type Value = SharedBytes;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a byte array")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, bytes: &'de [u8]) -> Result<SharedBytes, E> {
        let shared = SHARED_SOURCE.with(|source| {
            let source = source.borrow();
            let source = source.as_ref()?;
            let start = bytes.as_ptr() as usize;
            let within = source.as_ptr() as usize;
            (start >= within && start + bytes.len() <= within + source.len())
                .then(|| source.slice_ref(bytes))
        });
        Ok(SharedBytes(
            shared.unwrap_or_else(|| bytes::Bytes::copy_from_slice(bytes)),
        ))
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<SharedBytes, E> {
        Ok(SharedBytes(bytes::Bytes::copy_from_slice(bytes)))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<SharedBytes, E> {
        Ok(SharedBytes(bytes.into()))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<SharedBytes, A::Error> {
        ByteBufVisitor
            .visit_seq(seq)
            .map(|ByteBuf(bytes)| SharedBytes(bytes.into()))
    }
}

/// Decodes exactly one value from `bytes`, which it may borrow from (`&str` and `&[u8]`
/// are slices of `bytes`, not copies), within the limits [`decode`] describes.
///
/// # Errors
///
/// As [`decode`].
pub fn decode_borrowed<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, RpcError> {
    let budget = budget::Budget::for_payload(bytes.len());
    let mut deserializer = postcard::Deserializer::from_bytes(bytes);
    let value = T::deserialize(guard::Guard {
        inner: &mut deserializer,
        budget: &budget,
        covered: 0,
    })
    .map_err(|error| match budget.violation() {
        Some(limit) => RpcError::codec(format!("cannot decode value: {limit}")),
        None => RpcError::codec(format!("cannot decode value: {error}")),
    })?;
    let rest = deserializer
        .finalize()
        .map_err(|error| RpcError::codec(format!("cannot decode value: {error}")))?;
    if !rest.is_empty() {
        return Err(RpcError::codec(format!(
            "{} trailing bytes after the value",
            rest.len()
        )));
    }
    Ok(value)
}

/// Appends to a buffer; its output is the length of the encoding, blocks set aside
/// included.
struct BytesMutFlavor<'a> {
    buf: &'a mut BytesMut,
    /// Where the encoding began.
    start: usize,
}

impl postcard::ser_flavors::Flavor for BytesMutFlavor<'_> {
    type Output = usize;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if !crate::blocks::set_aside(self.buf, data) {
            self.buf.put_slice(data);
        }
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.buf.put_u8(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        let set_aside = crate::blocks::set_aside_after(self.buf, self.start);
        Ok(self.buf.len() - self.start + set_aside)
    }
}

/// One value encoded already (by this codec), to send as it is: a front door that
/// transcodes a stream's items (HTTP/JSON) sends them this way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(pub bytes::Bytes);

/// A byte buffer that serializes as one block (`serialize_bytes`) instead of element by
/// element. Generated code wraps `Vec<u8>` arguments and results in it, so users get fast
/// byte transfers without annotating anything. In human-readable formats (JSON, for the
/// HTTP front door) it is a standard base64 string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ByteBuf(pub Vec<u8>);

impl Serialize for ByteBuf {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ByteSlice(&self.0).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Base64Visitor)
        } else {
            deserializer.deserialize_byte_buf(ByteBufVisitor)
        }
    }
}

/// Borrowed twin of [`ByteBuf`] for the encoding side, so arguments are not copied.
#[derive(Debug, Clone, Copy)]
pub struct ByteSlice<'a>(pub &'a [u8]);

impl Serialize for ByteSlice<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            use base64::Engine;
            serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
        } else {
            serializer.serialize_bytes(self.0)
        }
    }
}

/// Reads a base64 string into bytes.
struct Base64Visitor;

impl Visitor<'_> for Base64Visitor {
    type Value = ByteBuf;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a base64 string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteBuf, E> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(ByteBuf)
            .map_err(|error| E::custom(format!("not base64: {error}")))
    }
}

struct ByteBufVisitor;

impl<'de> Visitor<'de> for ByteBufVisitor {
    type Value = ByteBuf;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a byte array")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<ByteBuf, E> {
        Ok(ByteBuf(bytes.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<ByteBuf, E> {
        Ok(ByteBuf(bytes))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
        // Never trust a peer's size hint beyond what serde's own cautious cap allows.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(ByteBuf(bytes))
    }
}

#[cfg(test)]
mod tests;
