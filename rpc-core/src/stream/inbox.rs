//! The receiving side of a stream ([`Inbox`]) and the sending side's credit ([`Credit`]).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};

use bytes::Bytes;

use crate::error::RpcError;
use crate::outbox::Outbox;
use crate::recover::lock;
use crate::wire;

/// What the consumer of an inbox gets next.
pub(super) enum InboxItem {
    Item(Bytes),
    End(Result<(), RpcError>),
}

/// A stream's flow-control window: items, and bytes of items, the receiver takes before
/// its consumer reads them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) items: u32,
    pub(crate) bytes: u32,
}

/// The items of one incoming stream, filled by the connection's reader.
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    call_id: u32,
    window: u32,
    window_bytes: u32,
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
    /// Bytes of the items queued and of the partial one.
    queued_bytes: usize,
    /// Items consumed since credit was last granted.
    consumed: u32,
    /// Bytes of them.
    consumed_bytes: u64,
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
    /// An inbox for `call_id` that grants `window` at a time through `outbox`, and takes
    /// items of up to `max_item` bytes.
    pub(crate) fn new(
        call_id: u32,
        window: Window,
        max_item: usize,
        outbox: Arc<Outbox>,
    ) -> Arc<Self> {
        Arc::new(Inbox {
            state: Mutex::new(InboxState {
                items: VecDeque::new(),
                partial: bytes::BytesMut::new(),
                end: None,
                waker: None,
                queued_bytes: 0,
                consumed: 0,
                consumed_bytes: 0,
            }),
            call_id,
            window: window.items.max(1),
            window_bytes: window.bytes.max(1),
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
        wire::encode_window(buf, self.call_id, self.window, self.window_bytes);
    }

    /// Grants the initial credit now.
    pub(crate) fn grant_initial_window(&self) {
        let (call_id, window, window_bytes) = (self.call_id, self.window, self.window_bytes);
        self.outbox
            .push_now(|buf| wire::encode_window(buf, call_id, window, window_bytes));
    }

    /// Counts `len` more bytes buffered.
    ///
    /// # Errors
    ///
    /// `RpcError::Protocol` when that passes what the window lets a sender have buffered:
    /// the byte window plus the one item it may start with credit left.
    fn check_buffered(&self, state: &mut InboxState, len: usize) -> Result<(), RpcError> {
        state.queued_bytes += len;
        if state.queued_bytes > self.window_bytes as usize + self.max_item {
            return Err(RpcError::protocol(
                "a stream sent more bytes than its window allows",
            ));
        }
        Ok(())
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
        self.check_buffered(&mut state, item.len())?;
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
        self.check_buffered(&mut state, piece.len())?;
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

    pub(super) fn poll_item(&self, cx: &mut TaskContext<'_>) -> Poll<InboxItem> {
        let mut state = lock(&self.state);
        if let Some(item) = state.items.pop_front() {
            state.queued_bytes -= item.len();
            state.consumed += 1;
            state.consumed_bytes += item.len() as u64;
            // Credit goes back once half of either window has been read.
            let half_read = state.consumed >= self.window.div_ceil(2)
                || state.consumed_bytes >= u64::from(self.window_bytes.div_ceil(2));
            if half_read && state.end.is_none() {
                let credit = std::mem::take(&mut state.consumed);
                let bytes =
                    u32::try_from(std::mem::take(&mut state.consumed_bytes)).unwrap_or(u32::MAX);
                let call_id = self.call_id;
                drop(state);
                self.outbox
                    .push_now(|buf| wire::encode_window(buf, call_id, credit, bytes));
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
    pub(super) fn abandon(&self) {
        let action = lock(&self.on_abandon).take();
        if let Some(action) = action {
            action();
        }
    }
}

/// Credit for sending one stream: how many more items, and bytes of items, the receiver
/// takes. An item may start while any byte of credit is left, and takes its whole length
/// from it (so the receiver buffers at most its byte window plus one item).
#[derive(Debug, Default)]
pub(crate) struct Credit {
    state: Mutex<CreditState>,
}

#[derive(Debug, Default)]
struct CreditState {
    available: u64,
    /// Bytes of credit left; below zero after an item larger than what was left.
    bytes: i64,
    stopped: bool,
    waker: Option<Waker>,
}

impl CreditState {
    fn can_send(&self) -> bool {
        self.available > 0 && self.bytes > 0
    }
}

impl Credit {
    /// The receiver granted `credit` more items and `bytes` more bytes.
    pub(crate) fn grant(&self, credit: u32, bytes: u32) {
        let mut state = lock(&self.state);
        state.available = state.available.saturating_add(u64::from(credit));
        state.bytes = state.bytes.saturating_add(i64::from(bytes));
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

    /// Takes one item's worth of credit if there is some: `Some(true)`; `Some(false)` when
    /// the receiver stopped the stream; `None` when it has to wait.
    pub(super) fn try_acquire(&self) -> Option<bool> {
        let mut state = lock(&self.state);
        if state.stopped {
            return Some(false);
        }
        if state.can_send() {
            state.available -= 1;
            return Some(true);
        }
        None
    }

    /// Takes an item's length from the byte credit, once the item is known.
    pub(super) fn spend_bytes(&self, len: usize) {
        let mut state = lock(&self.state);
        state.bytes = state
            .bytes
            .saturating_sub(i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// Waits for one item's worth of credit; `false` when the receiver stopped the stream.
    pub(super) async fn acquire(&self) -> bool {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.stopped {
                return Poll::Ready(false);
            }
            if state.can_send() {
                state.available -= 1;
                return Poll::Ready(true);
            }
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
