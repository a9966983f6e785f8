//! The outgoing side of a connection, shared by the client and server drivers.
//!
//! Callers encode frames straight into one shared buffer under a short lock; a single writer
//! task swaps the whole buffer out and writes it with one call, so frames queued while a
//! write is in progress are coalesced into the next one. The buffer has a high-water mark:
//! past it, callers wait for the writer (backpressure towards handlers and callers) instead
//! of growing memory without bound.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::Notify;

use crate::error::RpcError;
use crate::transport::FrameWrite;

/// Bytes queued before new frames wait for the writer (a single larger frame still fits).
const HIGH_WATER: usize = 256 * 1024;

/// Capacity of each of the two buffers the writer swaps between.
const INITIAL_CAPACITY: usize = 16 * 1024;

#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    writer_wake: Notify,
    space: Notify,
}

#[derive(Debug)]
struct OutboxState {
    buf: BytesMut,
    /// No more frames are accepted; the writer drains what is queued, then shuts down.
    finishing: bool,
    /// The connection failed: nothing more is written.
    failed: Option<RpcError>,
}

impl Outbox {
    /// An outbox whose first bytes are `preface`.
    pub(crate) fn new(preface: &[u8]) -> Self {
        let mut buf = BytesMut::with_capacity(INITIAL_CAPACITY);
        buf.extend_from_slice(preface);
        Outbox {
            state: Mutex::new(OutboxState {
                buf,
                finishing: false,
                failed: None,
            }),
            writer_wake: Notify::new(),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        // A panic while holding this lock leaves at worst a partly written frame in a
        // connection that is failing anyway; keep going rather than poisoning every caller.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends frames with `encode` once the queue is below its high-water mark.
    ///
    /// `encode` runs under the lock and must leave `buf` holding whole frames only.
    pub(crate) async fn push<T>(
        &self,
        encode: impl FnOnce(&mut BytesMut) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let mut encode = Some(encode);
        loop {
            if let Some(result) = self.try_push_slot(&mut encode) {
                return result;
            }
            // Full: wait for the writer, registering before checking again so that a batch
            // taken in between is not missed.
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if let Some(result) = self.try_push_slot(&mut encode) {
                return result;
            }
            space.await;
        }
    }

    /// Appends frames with the encoder in `encode` if the queue is below its high-water mark;
    /// `None` when it is full, leaving the encoder in its slot.
    pub(crate) fn try_push_slot<T, F>(&self, encode: &mut Option<F>) -> Option<Result<T, RpcError>>
    where
        F: FnOnce(&mut BytesMut) -> Result<T, RpcError>,
    {
        let mut state = self.lock();
        if let Some(error) = &state.failed {
            return Some(Err(error.clone()));
        }
        if state.finishing {
            return Some(Err(RpcError::connection_closed(
                "the connection is closing",
            )));
        }
        if state.buf.len() >= HIGH_WATER {
            return None;
        }
        let encode = encode.take()?;
        let was_empty = state.buf.is_empty();
        let result = encode(&mut state.buf);
        let is_empty = state.buf.is_empty();
        drop(state);
        if was_empty && !is_empty {
            self.writer_wake.notify_one();
        }
        Some(result)
    }

    /// Appends a small control frame now, ignoring the high-water mark. Returns `false`
    /// when the connection no longer accepts frames.
    pub(crate) fn push_now(&self, encode: impl FnOnce(&mut BytesMut)) -> bool {
        let mut state = self.lock();
        if state.failed.is_some() || state.finishing {
            return false;
        }
        let was_empty = state.buf.is_empty();
        encode(&mut state.buf);
        drop(state);
        if was_empty {
            self.writer_wake.notify_one();
        }
        true
    }

    /// Accepts no more frames; the writer writes what is queued and then shuts down.
    pub(crate) fn finish(&self) {
        let mut state = self.lock();
        state.finishing = true;
        drop(state);
        self.writer_wake.notify_one();
        self.space.notify_waiters();
    }

    /// Drops what is queued and fails every waiting and later push with `error`.
    pub(crate) fn fail(&self, error: RpcError) {
        let mut state = self.lock();
        if state.failed.is_none() {
            state.failed = Some(error);
        }
        state.buf.clear();
        drop(state);
        self.writer_wake.notify_one();
        self.space.notify_waiters();
    }

    /// Waits for queued bytes and swaps them into `batch` (which must be empty).
    ///
    /// When `more_coming()` says other calls are in flight, it first yields once to the
    /// scheduler: tasks woken together (callers whose responses arrived in one read, handlers
    /// spawned from one read) then queue their frames before the batch is taken, and leave
    /// in one write instead of one write each. A lone call is written at once.
    async fn next_batch(
        &self,
        batch: &mut BytesMut,
        more_coming: &(impl Fn() -> bool + Sync),
    ) -> NextBatch {
        let mut yielded = false;
        loop {
            let step = {
                let mut state = self.lock();
                if let Some(error) = &state.failed {
                    return NextBatch::Failed(error.clone());
                }
                if state.buf.is_empty() {
                    if state.finishing {
                        return NextBatch::Finished;
                    }
                    Step::Wait
                } else if !yielded && !state.finishing {
                    Step::LetOthersQueue
                } else {
                    std::mem::swap(&mut state.buf, batch);
                    Step::Take
                }
            };
            match step {
                Step::Wait => self.writer_wake.notified().await,
                Step::LetOthersQueue => {
                    yielded = true;
                    if more_coming() {
                        tokio::task::yield_now().await;
                    }
                }
                Step::Take => {
                    self.space.notify_waiters();
                    return NextBatch::Write;
                }
            }
        }
    }
}

enum Step {
    Wait,
    LetOthersQueue,
    Take,
}

enum NextBatch {
    Write,
    Finished,
    Failed(RpcError),
}

/// Writes what the outbox queues until it finishes or fails. A write that makes no progress
/// for `write_timeout` fails the connection (a peer that stopped reading cannot hold memory
/// forever).
///
/// Returns `Ok(())` after a clean finish and shutdown of the write half.
///
/// `more_coming` tells whether other calls are in flight on the connection (see
/// `Outbox::next_batch`).
pub(crate) async fn run_writer<W: FrameWrite>(
    outbox: Arc<Outbox>,
    mut writer: W,
    write_timeout: Duration,
    more_coming: impl Fn() -> bool + Send + Sync,
) -> Result<(), RpcError> {
    let mut batch = BytesMut::with_capacity(INITIAL_CAPACITY);
    loop {
        match outbox.next_batch(&mut batch, &more_coming).await {
            NextBatch::Write => {
                let written = tokio::time::timeout(write_timeout, writer.write_all(&batch)).await;
                batch.clear();
                let error = match written {
                    Ok(Ok(())) => continue,
                    Ok(Err(error)) => RpcError::from(error),
                    Err(_elapsed) => RpcError::connection_closed(format!(
                        "the peer read nothing for {write_timeout:?} (write stalled)"
                    )),
                };
                outbox.fail(error.clone());
                return Err(error);
            }
            NextBatch::Finished => {
                let shutdown = tokio::time::timeout(write_timeout, writer.shutdown()).await;
                return match shutdown {
                    Ok(result) => result.map_err(RpcError::from),
                    Err(_elapsed) => Err(RpcError::connection_closed("shutdown stalled")),
                };
            }
            NextBatch::Failed(error) => return Err(error),
        }
    }
}
