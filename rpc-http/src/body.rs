//! The response body type: a whole body, or frames streamed as a method's items arrive.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};

/// The body of every response this crate sends.
pub type HttpBody = UnsyncBoxBody<Bytes, Infallible>;

/// A body of `bytes`, whole.
pub(crate) fn full(bytes: Bytes) -> HttpBody {
    Full::new(bytes).boxed_unsync()
}

/// A body that sends each chunk of `chunks` as it is produced (and asks for the next only
/// when the client has taken the last, so a slow reader slows the producer).
pub(crate) fn streamed(chunks: impl Stream<Item = Bytes> + Send + 'static) -> HttpBody {
    StreamBody::new(chunks.map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)))).boxed_unsync()
}
