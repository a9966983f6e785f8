//! `Streaming<T>`: a stream of items as the argument or the result of a call.
//!
//! The producing side builds one from any stream (`Streaming::new`); the runtime sends its
//! items as STREAM_ITEM frames, at most as many as the receiver has granted with WINDOW
//! frames, and ends it with STREAM_END. The receiving side gets a `Streaming<T>` reading
//! from an [`Inbox`] that the connection's reader fills; consuming items grants more credit,
//! so a reader that stops reading holds its writer back within one window. Dropping a
//! received stream tells the producer to stop.
//!
//! `inbox.rs` holds the receiving machinery (an [`Inbox`] per incoming stream, [`Credit`] per
//! outgoing one); `send.rs` the sending loop. Neither knows which side of a connection it
//! serves.

mod inbox;
mod send;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_core::Stream;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::RpcError;
use inbox::InboxItem;
pub(crate) use inbox::{Credit, Inbox, Window};
pub(crate) use send::{send_stream, StreamItem, StreamSink};

/// A stream of `T` sent as the argument or result of a call, with flow control.
///
/// Build one from any stream with [`Streaming::new`]; read one as a
/// `Stream<Item = Result<T, RpcError>>`. A stream received from the peer yields its items in
/// order, then ends; if the call fails meanwhile (the producer panicked, the connection was
/// cut, the deadline passed) it yields one `Err` and then ends, so a failure never looks like
/// a clean end.
///
/// ```
/// use futures_util::StreamExt;
/// use rpc_core::{service, Streaming};
///
/// #[service]
/// pub trait Feed {
///     /// Streams `0..n` to the caller.
///     async fn ticks(&self, n: u64) -> Streaming<u64>;
///     /// Sums what the caller streams.
///     async fn sum(&self, numbers: Streaming<i64>) -> i64;
/// }
///
/// struct Impl;
///
/// impl Feed for Impl {
///     async fn ticks(&self, n: u64) -> Streaming<u64> {
///         Streaming::new(futures_util::stream::iter(0..n))
///     }
///
///     async fn sum(&self, mut numbers: Streaming<i64>) -> i64 {
///         let mut total = 0;
///         while let Some(Ok(number)) = numbers.next().await {
///             total += number;
///         }
///         total
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let _server = rpc_core::Server::new().add_service(FeedServer::new(Impl));
/// // A stream built here reads like one received from a peer.
/// let mut numbers = Streaming::new(futures_util::stream::iter([1, 2, 3]));
/// let mut total = 0;
/// while let Some(number) = numbers.next().await {
///     total += number?;
/// }
/// assert_eq!(total, 6);
/// # Ok(())
/// # }
/// ```
pub struct Streaming<T> {
    source: Source<T>,
}

enum Source<T> {
    Local(Pin<Box<dyn Stream<Item = T> + Send>>),
    Remote(Inbound<T>),
    Failed(Option<RpcError>),
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Local(_) => "local",
            Source::Remote(_) => "remote",
            Source::Failed(_) => "failed",
        };
        f.debug_struct("Streaming")
            .field("source", &source)
            .finish()
    }
}

impl<T> Streaming<T> {
    /// A stream of the items `stream` yields.
    pub fn new(stream: impl Stream<Item = T> + Send + 'static) -> Self {
        Streaming {
            source: Source::Local(Box::pin(stream)),
        }
    }

    /// A stream that yields `error` and ends.
    pub fn failed(error: RpcError) -> Self {
        Streaming {
            source: Source::Failed(Some(error)),
        }
    }

    pub(crate) fn remote(inbox: Arc<Inbox>, deadline: Option<Instant>) -> Self
    where
        T: DeserializeOwned,
    {
        Streaming::from_inbox(inbox, deadline, |bytes| codec::decode(bytes))
    }

    /// A received stream whose items `decode` reads from their encoding.
    fn from_inbox(
        inbox: Arc<Inbox>,
        deadline: Option<Instant>,
        decode: fn(&[u8]) -> Result<T, RpcError>,
    ) -> Self {
        Streaming {
            source: Source::Remote(Inbound {
                inbox,
                decode,
                deadline: deadline
                    .map(|deadline| Box::pin(tokio::time::sleep_until(deadline.into()))),
                done: false,
                _keep_alive: None,
            }),
        }
    }
}

impl Streaming<Bytes> {
    /// A received stream whose items are left encoded (for front doors that transcode
    /// them).
    pub(crate) fn remote_encoded(inbox: Arc<Inbox>, deadline: Option<Instant>) -> Self {
        Streaming::from_inbox(inbox, deadline, |bytes| Ok(Bytes::copy_from_slice(bytes)))
    }
}

impl<T> Streaming<T> {
    /// Keeps `token` alive while the stream is read: the caller passes whatever keeps the
    /// stream's connection open (a handle to its channel).
    pub(crate) fn holding(mut self, token: impl Any + Send + Sync) -> Self {
        if let Source::Remote(inbound) = &mut self.source {
            inbound._keep_alive = Some(Box::new(token));
        }
        self
    }
}

impl<T> Stream for Streaming<T> {
    type Item = Result<T, RpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.get_mut().source {
            Source::Local(stream) => stream.as_mut().poll_next(cx).map(|item| item.map(Ok)),
            Source::Remote(inbound) => inbound.poll_next(cx),
            Source::Failed(error) => Poll::Ready(error.take().map(Err)),
        }
    }
}

/// The receiving end of a stream from the peer.
struct Inbound<T> {
    inbox: Arc<Inbox>,
    decode: fn(&[u8]) -> Result<T, RpcError>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
    /// Whatever keeps the stream's connection open, held for as long as the stream is read
    /// (the caller may drop its own handle, or a balancer its connection, meanwhile).
    _keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

impl<T> Inbound<T> {
    fn poll_next(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<T, RpcError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inbox.poll_item(cx) {
            Poll::Ready(InboxItem::Item(bytes)) => return Poll::Ready(Some((self.decode)(&bytes))),
            Poll::Ready(InboxItem::End(outcome)) => {
                self.done = true;
                return Poll::Ready(outcome.err().map(Err));
            }
            Poll::Pending => {}
        }
        if let Some(deadline) = &mut self.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                self.done = true;
                self.inbox.abandon();
                return Poll::Ready(Some(Err(RpcError::DeadlineExceeded {})));
            }
        }
        Poll::Pending
    }
}

impl<T> Drop for Inbound<T> {
    fn drop(&mut self) {
        self.inbox.abandon();
    }
}
