//! The outgoing side of a connection, shared by the client and server drivers.
//!
//! Callers encode frames straight into one shared buffer under a short lock. Two ways out:
//!
//! - **Batched**: a writer task swaps the whole buffer out and writes it with one call, so
//!   frames queued while a write is in progress leave together. When other calls are in
//!   flight it first yields once, so that tasks woken together queue their frames before the
//!   batch is taken.
//! - **Direct**: a lone call (nothing else in flight, nothing queued, the writer idle) writes
//!   its frame itself with a non-blocking write, sparing a hop to the writer task. Whatever
//!   the socket does not take at once is left to the writer.
//!
//! Large `Bytes` blocks are not copied into the buffer: they are set aside beside it
//! (`crate::blocks`) and leave between its pieces as segments of one vectored write.
//!
//! The buffer has a high-water mark: past it, callers wait for the writer (backpressure
//! towards handlers and callers) instead of growing memory without bound.

use std::borrow::Borrow;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::sync::Notify;

use crate::blocks::{Block, Blocks, SettingAside};
use crate::error::RpcError;
use crate::recover;
use crate::transport::FrameWrite;
use crate::wire;

/// Bytes queued before new frames wait for the writer (a single larger frame still fits).
const HIGH_WATER: usize = 256 * 1024;

/// How a frame queues, which decides its place when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// A call's frame, when the caller knows no other frame follows right behind it: it may
    /// be written directly.
    Lone,
    /// A call's frame among others.
    Shared,
    /// A stream's item. When the queue is full it lets call frames waiting for room go
    /// first, so a stream running flat out never starves the calls beside it.
    Bulk,
}

pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    writer_wake: Notify,
    space: Notify,
    /// Calls in flight on the connection (see `InFlight`).
    in_flight: AtomicUsize,
    /// Call frames waiting for room, which stream items let go first.
    calls_waiting: AtomicUsize,
    /// The write half while the writer task is idle, for direct writes.
    direct: OnceLock<Arc<dyn TryWrite>>,
    /// Frames of at least this many bytes are compressed; 0 while the connection has not
    /// agreed on compression.
    compress_from: AtomicUsize,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct OutboxState {
    buf: BytesMut,
    /// Large blocks that go out between the bytes of `buf`.
    blocks: Blocks,
    /// No more frames are accepted; the writer drains what is queued, then shuts down.
    finishing: bool,
    /// The connection failed: nothing more is written.
    failed: Option<RpcError>,
}

/// Counts a call frame as waiting for room for as long as it lives.
struct WaitingCall<'a>(&'a AtomicUsize);

impl<'a> WaitingCall<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        WaitingCall(counter)
    }
}

impl Drop for WaitingCall<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one call as in flight on an outbox for as long as it lives: `InFlight<&Outbox>`
/// while the call is on the stack of whoever started it, `InFlight` (holding the outbox)
/// once it moves into a task of its own.
#[derive(Debug)]
pub(crate) struct InFlight<O: Borrow<Outbox> = Arc<Outbox>> {
    outbox: O,
}

impl<O: Borrow<Outbox>> InFlight<O> {
    pub(crate) fn new(outbox: O) -> Self {
        outbox.borrow().in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { outbox }
    }
}

impl InFlight<&Outbox> {
    /// The same count, holding `outbox` (this count's own) so that it can move into a task.
    pub(crate) fn into_owned(self, outbox: &Arc<Outbox>) -> InFlight {
        debug_assert!(std::ptr::eq(self.outbox, &**outbox));
        // The count carries over: the borrowed guard does not give it back.
        std::mem::forget(self);
        InFlight {
            outbox: outbox.clone(),
        }
    }
}

impl<O: Borrow<Outbox>> Drop for InFlight<O> {
    fn drop(&mut self) {
        self.outbox
            .borrow()
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Outbox {
    /// An outbox whose first bytes are `preface`.
    pub(crate) fn new(preface: &[u8]) -> Self {
        Outbox {
            state: Mutex::new(OutboxState {
                buf: BytesMut::from(preface),
                blocks: Blocks::default(),
                finishing: false,
                failed: None,
            }),
            writer_wake: Notify::new(),
            space: Notify::new(),
            in_flight: AtomicUsize::new(0),
            calls_waiting: AtomicUsize::new(0),
            direct: OnceLock::new(),
            compress_from: AtomicUsize::new(0),
        }
    }

    /// From now on, compresses the frames of at least `min_size` bytes that calls and
    /// streams queue (the peer's preface accepted compression). Control frames, always
    /// small, are never compressed.
    pub(crate) fn compress_frames_of(&self, min_size: usize) {
        self.compress_from.store(min_size.max(1), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        // A panic while holding this lock leaves at worst a partly written frame in a
        // connection that is failing anyway; keep going rather than poisoning every caller.
        recover::lock(&self.state)
    }

    /// Whether calls other than one are in flight, so that more frames are likely to follow.
    fn others_in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 1
    }

    /// Appends frames with `encode` once the queue is below its high-water mark.
    ///
    /// `encode` runs under the lock and must leave `buf` holding whole frames only. The
    /// `lane` says whether the frame may be written directly and who goes first when the
    /// queue is full.
    pub(crate) async fn push<T>(
        &self,
        lane: Lane,
        encode: impl FnOnce(&mut BytesMut) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let mut encode = Some(encode);
        if let Some(result) = self.try_push_slot(lane, &mut encode) {
            return result;
        }
        let _waiting = (lane != Lane::Bulk).then(|| WaitingCall::new(&self.calls_waiting));
        loop {
            // Full: wait for the writer, registering before checking again so that a batch
            // taken in between is not missed.
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if let Some(result) = self.try_push_slot(lane, &mut encode) {
                return result;
            }
            space.await;
        }
    }

    /// Appends frames with the encoder in `encode` if the queue has room for `lane`; `None`
    /// when it has not, leaving the encoder in its slot.
    pub(crate) fn try_push_slot<T, F>(
        &self,
        lane: Lane,
        encode: &mut Option<F>,
    ) -> Option<Result<T, RpcError>>
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
        if state.buf.len() + state.blocks.len() >= HIGH_WATER {
            return None;
        }
        if lane == Lane::Bulk
            && self.calls_waiting.load(Ordering::Relaxed) > 0
            && !state.buf.is_empty()
        {
            return None;
        }
        let encode = encode.take()?;
        let was_empty = state.buf.is_empty();
        let from = state.buf.len();
        let compress_from = self.compress_from.load(Ordering::Relaxed);
        let result = if compress_from == 0 {
            let state = &mut *state;
            let _aside = SettingAside::open(&state.buf, &mut state.blocks);
            encode(&mut state.buf)
        } else {
            // Compressed frames are whole: nothing is set aside.
            let result = encode(&mut state.buf);
            if state.buf.len() - from >= compress_from {
                wire::compress_frames(&mut state.buf, from, compress_from);
            }
            result
        };
        if !was_empty || state.buf.is_empty() {
            // The writer already knows about the queued bytes (or there are none).
            return Some(result);
        }
        if lane == Lane::Lone && !self.others_in_flight() && state.blocks.is_empty() {
            self.write_directly(&mut state);
            if state.buf.is_empty() {
                return Some(result);
            }
        }
        drop(state);
        self.writer_wake.notify_one();
        Some(result)
    }

    /// Writes what is queued with a non-blocking write, if the writer task is idle. Runs under
    /// the state lock, so nothing can be queued or taken meanwhile.
    fn write_directly(&self, state: &mut OutboxState) {
        let Some(direct) = self.direct.get() else {
            return;
        };
        match direct.try_write(&state.buf) {
            Some(Ok(written)) => state.buf.advance(written),
            // Not now (writer busy, or the socket full): the writer task takes it from here.
            Some(Err(error)) if error.kind() == io::ErrorKind::WouldBlock => {}
            // A real error: let the writer task meet it on its own write and fail the
            // connection through the usual path.
            Some(Err(_)) | None => {}
        }
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
        state.blocks.clear();
        drop(state);
        self.writer_wake.notify_one();
        self.space.notify_waiters();
    }

    /// Waits for queued bytes and swaps them into `batch` (which must be empty).
    ///
    /// When other calls are in flight, it first yields once to the scheduler: tasks woken
    /// together (callers whose responses arrived in one read, handlers finishing together)
    /// then queue their frames before the batch is taken, and leave in one write instead of
    /// one write each.
    ///
    /// The write half is taken from `slot` under the same lock as the batch, so no direct
    /// write can slip in between the batch being taken and being written.
    async fn next_batch<W>(&self, batch: &mut Batch, slot: &WriterSlot<W>) -> NextBatch<W> {
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
                } else if !yielded && !state.finishing && self.others_in_flight() {
                    Step::LetOthersQueue
                } else {
                    let Some(writer) = slot.take() else {
                        return NextBatch::Failed(RpcError::Internal {
                            message: "the write half is gone".into(),
                        });
                    };
                    std::mem::swap(&mut state.buf, &mut batch.bytes);
                    std::mem::swap(&mut state.blocks, &mut batch.blocks);
                    Step::Take(writer)
                }
            };
            match step {
                Step::Wait => self.writer_wake.notified().await,
                Step::LetOthersQueue => {
                    yielded = true;
                    tokio::task::yield_now().await;
                }
                Step::Take(writer) => {
                    self.space.notify_waiters();
                    return NextBatch::Write(writer);
                }
            }
        }
    }
}

/// What the writer takes from the outbox at once: bytes, and the blocks that go between
/// them.
#[derive(Default)]
struct Batch {
    bytes: BytesMut,
    blocks: Blocks,
}

impl Batch {
    fn clear(&mut self) {
        self.bytes.clear();
        self.blocks.clear();
    }
}

enum Step<W> {
    Wait,
    LetOthersQueue,
    Take(W),
}

enum NextBatch<W> {
    Write(W),
    Finished,
    Failed(RpcError),
}

/// A non-blocking write into the connection's write half, when the writer task is idle.
trait TryWrite: Send + Sync {
    /// `None` when the writer task holds the write half.
    fn try_write(&self, bytes: &[u8]) -> Option<io::Result<usize>>;
}

/// The write half, parked here while the writer task waits for work.
struct WriterSlot<W> {
    writer: Mutex<Option<W>>,
}

impl<W: FrameWrite> TryWrite for WriterSlot<W> {
    fn try_write(&self, bytes: &[u8]) -> Option<io::Result<usize>> {
        let mut slot = self.writer.try_lock().ok()?;
        Some(slot.as_mut()?.try_write(bytes))
    }
}

impl<W> WriterSlot<W> {
    fn park(&self, writer: W) {
        *recover::lock(&self.writer) = Some(writer);
    }

    fn take(&self) -> Option<W> {
        recover::lock(&self.writer).take()
    }
}

/// Writes what the outbox queues until it finishes or fails. A write that makes no progress
/// for `write_timeout` fails the connection (a peer that stopped reading cannot hold memory
/// forever).
///
/// Returns `Ok(())` after a clean finish and shutdown of the write half.
pub(crate) async fn run_writer<W: FrameWrite>(
    outbox: Arc<Outbox>,
    writer: W,
    write_timeout: Duration,
) -> Result<(), RpcError> {
    let slot = Arc::new(WriterSlot {
        writer: Mutex::new(Some(writer)),
    });
    let direct: Arc<dyn TryWrite> = slot.clone();
    // Each outbox has one writer; should a second ever start, it simply gets no direct writes.
    let _ = outbox.direct.set(direct);
    let mut batch = Batch::default();
    loop {
        match outbox.next_batch(&mut batch, &slot).await {
            NextBatch::Write(mut writer) => {
                let written = if batch.blocks.is_empty() {
                    write_making_progress(&mut writer, &batch.bytes, write_timeout).await
                } else {
                    // Boxed: its slices would make every connection's writer task larger,
                    // idle or not, for the batches that carry large blocks.
                    Box::pin(write_segments(&mut writer, &batch, write_timeout)).await
                };
                batch.clear();
                if let Err(error) = written {
                    outbox.fail(error.clone());
                    return Err(error);
                }
                slot.park(writer);
            }
            NextBatch::Finished => {
                let Some(mut writer) = slot.take() else {
                    return Ok(());
                };
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

/// Writes all of `batch`, failing only when the transport takes none of it for
/// `write_timeout`: a slow reader that keeps reading is not a stalled one.
async fn write_making_progress<W: FrameWrite>(
    writer: &mut W,
    batch: &[u8],
    write_timeout: Duration,
) -> Result<(), RpcError> {
    let mut rest = batch;
    while !rest.is_empty() {
        let written = made_progress(
            tokio::time::timeout(write_timeout, writer.write_some(rest)).await,
            write_timeout,
        )?;
        rest = rest.get(written..).unwrap_or_default();
    }
    Ok(())
}

/// Segments one vectored write passes at most (a batch with more takes more writes).
const MAX_SEGMENTS: usize = 16;

/// Writes a batch with blocks: the pieces of its buffer and its blocks in order, with
/// vectored writes, failing as [`write_making_progress`] does.
async fn write_segments<W: FrameWrite>(
    writer: &mut W,
    batch: &Batch,
    write_timeout: Duration,
) -> Result<(), RpcError> {
    let total = batch.bytes.len() + batch.blocks.len();
    let mut done = 0;
    while done < total {
        let mut slices = [IoSlice::new(&[]); MAX_SEGMENTS];
        let count = segments_from(&batch.bytes, batch.blocks.as_slice(), done, &mut slices);
        let parts = &slices[..count];
        let written = made_progress(
            tokio::time::timeout(write_timeout, writer.write_some_vectored(parts)).await,
            write_timeout,
        )?;
        done += written;
    }
    Ok(())
}

/// Fills `slices` with the segments of `bytes` and `blocks` (each block before the byte
/// of `bytes` at its offset) that follow the first `skip` bytes; returns how many.
fn segments_from<'a>(
    bytes: &'a [u8],
    blocks: &'a [Block],
    mut skip: usize,
    slices: &mut [IoSlice<'a>],
) -> usize {
    let mut count = 0;
    let mut from = 0;
    for index in 0..=blocks.len() {
        let (piece_end, block) = match blocks.get(index) {
            Some(block) => (block.at, &block.bytes[..]),
            None => (bytes.len(), &[][..]),
        };
        for segment in [bytes.get(from..piece_end).unwrap_or_default(), block] {
            if segment.len() <= skip {
                skip -= segment.len();
                continue;
            }
            let Some(slot) = slices.get_mut(count) else {
                return count;
            };
            *slot = IoSlice::new(&segment[skip..]);
            skip = 0;
            count += 1;
        }
        from = piece_end;
    }
    count
}

/// How many bytes a write took, or why the connection fails.
fn made_progress(
    attempt: Result<io::Result<usize>, tokio::time::error::Elapsed>,
    write_timeout: Duration,
) -> Result<usize, RpcError> {
    match attempt {
        Ok(Ok(0)) => Err(io::Error::from(io::ErrorKind::WriteZero).into()),
        Ok(Ok(written)) => Ok(written),
        Ok(Err(error)) => Err(RpcError::from(error)),
        Err(_elapsed) => Err(RpcError::connection_closed(format!(
            "the peer read nothing for {write_timeout:?} (write stalled)"
        ))),
    }
}

#[cfg(test)]
mod tests;
