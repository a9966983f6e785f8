//! `Streaming<T>`: a stream of items as the argument or the result of a call.
//!
//! The producing side builds one from any stream (`Streaming::new`); the runtime sends its
//! items as STREAM_ITEM frames, at most as many as the receiver has granted with WINDOW
//! frames, and ends it with STREAM_END. The receiving side gets a `Streaming<T>` reading
//! from an [`Inbox`] that the connection's reader fills; consuming items grants more credit,
//! so a reader that stops reading holds its writer back within one window. Dropping a
//! received stream tells the producer to stop.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use futures_core::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::channel::Channel;
use crate::codec;
use crate::error::RpcError;
use crate::outbox::{Lane, Outbox};
use crate::recover::{lock, panic_message, CatchUnwind};
use crate::wire::{self, Status};

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
        Streaming {
            source: Source::Remote(Inbound {
                inbox,
                decode: |bytes| codec::decode(bytes),
                deadline: deadline
                    .map(|deadline| Box::pin(tokio::time::sleep_until(deadline.into()))),
                done: false,
                channel: None,
            }),
        }
    }
}

impl<T> Streaming<T> {
    /// Keeps `channel` (the one this stream arrives on) open while the stream is read.
    pub(crate) fn holding(mut self, channel: Channel) -> Self {
        if let Source::Remote(inbound) = &mut self.source {
            inbound.channel = Some(channel);
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
    /// The channel the stream arrives on, kept open for as long as the stream is read
    /// (the caller may drop its own handle, or a balancer its connection, meanwhile).
    channel: Option<Channel>,
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

/// What the consumer of an inbox gets next.
enum InboxItem {
    Item(Bytes),
    End(Result<(), RpcError>),
}

/// The items of one incoming stream, filled by the connection's reader.
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    call_id: u32,
    window: u32,
    /// The largest item accepted, pieces included.
    max_item: usize,
    outbox: Arc<Outbox>,
    /// Runs once when the consumer goes away before the stream ended.
    on_abandon: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

struct InboxState {
    items: VecDeque<Bytes>,
    /// The pieces of a large item received so far.
    partial: bytes::BytesMut,
    end: Option<Result<(), RpcError>>,
    waker: Option<Waker>,
    /// Items consumed since credit was last granted.
    consumed: u32,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("call_id", &self.call_id)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// An inbox for `call_id` that grants `window` items at a time through `outbox`, and
    /// takes items of up to `max_item` bytes.
    pub(crate) fn new(
        call_id: u32,
        window: u32,
        max_item: usize,
        outbox: Arc<Outbox>,
    ) -> Arc<Self> {
        Arc::new(Inbox {
            state: Mutex::new(InboxState {
                items: VecDeque::new(),
                partial: bytes::BytesMut::new(),
                end: None,
                waker: None,
                consumed: 0,
            }),
            call_id,
            window: window.max(1),
            max_item,
            outbox,
            on_abandon: Mutex::new(None),
        })
    }

    /// Sets what to do if the consumer goes away before the end.
    pub(crate) fn on_abandon(&self, action: impl FnOnce() + Send + 'static) {
        *lock(&self.on_abandon) = Some(Box::new(action));
    }

    /// The first grant of credit, as a frame appended to `buf`.
    pub(crate) fn encode_initial_window(&self, buf: &mut bytes::BytesMut) {
        wire::encode_window(buf, self.call_id, self.window);
    }

    /// Grants the initial credit now.
    pub(crate) fn grant_initial_window(&self) {
        let (call_id, window) = (self.call_id, self.window);
        self.outbox
            .push_now(|buf| wire::encode_window(buf, call_id, window));
    }

    /// Adds an item from the peer.
    ///
    /// # Errors
    ///
    /// `RpcError::Protocol` when the peer sent more than it was granted.
    pub(crate) fn push_item(&self, item: Bytes) -> Result<(), RpcError> {
        let mut state = lock(&self.state);
        if state.end.is_some() {
            return Ok(());
        }
        if state.items.len() >= self.window as usize {
            return Err(RpcError::protocol(
                "a stream sent more items than its window allows",
            ));
        }
        let item = if state.partial.is_empty() {
            item
        } else {
            // The last piece of a large item completes it.
            self.check_item_size(state.partial.len() + item.len())?;
            state.partial.extend_from_slice(&item);
            std::mem::take(&mut state.partial).freeze()
        };
        state.items.push_back(item);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Adds a piece of a large item from the peer.
    ///
    /// # Errors
    ///
    /// `RpcError::Protocol` when the pieces add up to more than the largest item accepted.
    pub(crate) fn push_piece(&self, piece: Bytes) -> Result<(), RpcError> {
        let mut state = lock(&self.state);
        if state.end.is_some() {
            return Ok(());
        }
        self.check_item_size(state.partial.len() + piece.len())?;
        state.partial.extend_from_slice(&piece);
        Ok(())
    }

    fn check_item_size(&self, len: usize) -> Result<(), RpcError> {
        if len > self.max_item {
            return Err(RpcError::FrameTooLarge {
                len: len as u64,
                max: self.max_item as u64,
            });
        }
        Ok(())
    }

    /// Ends the stream (cleanly or with an error); items already queued are still read.
    pub(crate) fn finish(&self, outcome: Result<(), RpcError>) {
        let mut state = lock(&self.state);
        if state.end.is_none() {
            state.end = Some(outcome);
        }
        let waker = state.waker.take();
        drop(state);
        // Nothing is left to abandon once the stream has ended.
        lock(&self.on_abandon).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn poll_item(&self, cx: &mut TaskContext<'_>) -> Poll<InboxItem> {
        let mut state = lock(&self.state);
        if let Some(item) = state.items.pop_front() {
            state.consumed += 1;
            if state.consumed >= self.window.div_ceil(2) && state.end.is_none() {
                let credit = std::mem::take(&mut state.consumed);
                let call_id = self.call_id;
                drop(state);
                self.outbox
                    .push_now(|buf| wire::encode_window(buf, call_id, credit));
            }
            return Poll::Ready(InboxItem::Item(item));
        }
        if let Some(end) = &state.end {
            return Poll::Ready(InboxItem::End(end.clone()));
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The consumer is gone: run the abandon action once (it tells the producer to stop).
    fn abandon(&self) {
        let action = lock(&self.on_abandon).take();
        if let Some(action) = action {
            action();
        }
    }
}

/// Credit for sending one stream: how many more items the receiver takes.
#[derive(Debug, Default)]
pub(crate) struct Credit {
    state: Mutex<CreditState>,
}

#[derive(Debug, Default)]
struct CreditState {
    available: u64,
    stopped: bool,
    waker: Option<Waker>,
}

impl Credit {
    /// The receiver granted `credit` more items.
    pub(crate) fn grant(&self, credit: u32) {
        let mut state = lock(&self.state);
        state.available = state.available.saturating_add(u64::from(credit));
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The receiver wants no more items.
    pub(crate) fn stop(&self) {
        let mut state = lock(&self.state);
        state.stopped = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Waits for one item's worth of credit; `false` when the receiver stopped the stream.
    async fn acquire(&self) -> bool {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.stopped {
                return Poll::Ready(false);
            }
            if state.available > 0 {
                state.available -= 1;
                return Poll::Ready(true);
            }
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Sends `stream` as the stream of `call_id`: items as credit allows, then the end. Stops
/// quietly when the receiver stops the stream; reports a producer that panics or fails, or a
/// deadline that passes, as an erroneous end.
pub(crate) async fn send_stream<T: Serialize>(
    mut stream: Streaming<T>,
    call_id: u32,
    outbox: Arc<Outbox>,
    credit: Arc<Credit>,
    deadline: Option<Instant>,
    max_frame: usize,
) {
    let sending = async {
        loop {
            if !credit.acquire().await {
                return None;
            }
            let next = CatchUnwind(std::future::poll_fn(|cx| {
                Pin::new(&mut stream).poll_next(cx)
            }))
            .await;
            let item = match next {
                Ok(Some(Ok(item))) => item,
                Ok(None) => return Some((Status::Ok, String::new())),
                Ok(Some(Err(error))) => return Some(end_for_error(&error)),
                Err(panic) => {
                    tracing::error!(panic = panic_message(&*panic), "a stream producer panicked");
                    return Some((Status::HandlerPanicked, String::new()));
                }
            };
            let pushed = send_item(&outbox, call_id, item, max_frame).await;
            match pushed {
                Ok(()) => {}
                Err(RpcError::FrameTooLarge { len, max }) => {
                    return Some((Status::ResponseTooLarge, format!("{len} {max}")));
                }
                Err(RpcError::Codec { .. }) => {
                    return Some((
                        Status::Internal,
                        "a stream item could not be encoded".to_owned(),
                    ));
                }
                // The connection is gone: nobody is left to tell.
                Err(_) => return None,
            }
        }
    };
    let end = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), sending)
            .await
            .unwrap_or(Some((Status::DeadlineExceeded, String::new()))),
        None => sending.await,
    };
    if let Some((status, text)) = end {
        outbox.push_now(|buf| wire::encode_stream_end(buf, call_id, status, &text));
    }
}

/// Items up to this size go in one frame; larger ones go in pieces of this size, each queued
/// on its own, so that call frames and other streams' items go out between the pieces.
const PIECE: usize = 64 * 1024;

/// Queues one item: encoded straight into the outgoing buffer when it is small, or encoded
/// once and sent in pieces when it is large.
async fn send_item<T: Serialize>(
    outbox: &Outbox,
    call_id: u32,
    item: T,
    max_frame: usize,
) -> Result<(), RpcError> {
    let len = codec::encoded_len(&item)?;
    if len > max_frame {
        return Err(RpcError::FrameTooLarge {
            len: len as u64,
            max: max_frame as u64,
        });
    }
    if len <= PIECE {
        return outbox
            .push(Lane::Bulk, move |buf| {
                wire::encode_stream_item(buf, call_id, max_frame, |buf| {
                    codec::encode_into(buf, &item)
                })
            })
            .await;
    }
    let mut encoded = bytes::BytesMut::with_capacity(len);
    codec::encode_into(&mut encoded, &item)?;
    let mut encoded = encoded.freeze();
    while !encoded.is_empty() {
        let piece = encoded.split_to(encoded.len().min(PIECE));
        let last = encoded.is_empty();
        outbox
            .push(Lane::Bulk, move |buf| {
                wire::encode_stream_piece(buf, call_id, &piece, last);
                Ok(())
            })
            .await?;
    }
    Ok(())
}

/// How a stream that met `error` ends on the wire.
fn end_for_error(error: &RpcError) -> (Status, String) {
    match error {
        RpcError::DeadlineExceeded { .. } => (Status::DeadlineExceeded, String::new()),
        RpcError::HandlerPanicked { .. } => (Status::HandlerPanicked, String::new()),
        RpcError::Unavailable { reason } => (Status::Unavailable, reason.to_string()),
        RpcError::ResourceExhausted { message } => (Status::ResourceExhausted, message.to_string()),
        other => (Status::Internal, other.to_string()),
    }
}
