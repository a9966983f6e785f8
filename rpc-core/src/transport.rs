//! The seam between the call model and the bytes: what a transport must provide.
//!
//! A transport hands over a [`Connection`]: a [`FrameRead`] that yields whole frames (the
//! preface checked, the length prefix stripped), a [`FrameWrite`] that writes bytes the
//! drivers have already framed, and a description of the [`Peer`]. `rpc-transport`
//! implements both halves for any `AsyncRead + AsyncWrite`; nothing in this crate opens a
//! socket. The framing a transport needs is re-exported here: [`FrameDecoder`] splits frames
//! out of the bytes read, and [`refusal`] is what a server sends to a connection it will not
//! serve.

use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::RpcError;

pub use crate::context::{Peer, UnixCredentials};
pub use crate::wire::{
    preface, refusal, FrameDecoder, DEFAULT_MAX_FRAME, LENGTH_PREFIX, PREFACE, PREFACE_LZ4,
    PREFACE_SERVES,
};

/// The reading half of a connection, frame by frame.
pub trait FrameRead: Send + 'static {
    /// Reads and checks the peer's preface ([`crate::wire::PREFACE`]).
    ///
    /// # Errors
    ///
    /// `RpcError::Protocol` as soon as a byte differs from the preface; `ConnectionClosed`
    /// or `Io` when the stream ends or fails first.
    fn read_preface(&mut self) -> impl Future<Output = Result<(), RpcError>> + Send;

    /// The flags of the peer's preface, once read ([`crate::wire::PREFACE_SERVES`]: a
    /// client that serves its server too; [`crate::wire::PREFACE_LZ4`]: it accepts
    /// compressed frames). The default says none, which only costs a transport that does
    /// not say the calls back and the compression.
    fn preface_flags(&self) -> u8 {
        0
    }

    /// Reads the next frame body (the bytes after the length prefix). `Ok(None)` means the
    /// peer closed the stream cleanly between frames.
    ///
    /// Must be cancel safe: the drivers race it against timers and signals, and a dropped
    /// call must lose no bytes (keep partial frames in the reader, not in the future).
    ///
    /// # Errors
    ///
    /// `RpcError::FrameTooLarge` for a length prefix over the limit (checked before any
    /// allocation), `ConnectionClosed` for an end of stream inside a frame, `Io` for
    /// transport failures.
    fn read_frame(&mut self) -> impl Future<Output = Result<Option<Bytes>, RpcError>> + Send;

    /// The next frame body if the reader already holds all of it, without reading: lets a
    /// driver take the frames one read brought in without waiting on anything else in
    /// between. The default says none, which only costs a transport that does not say that
    /// time.
    ///
    /// # Errors
    ///
    /// The errors of [`read_frame`](FrameRead::read_frame) that need no reading: a length
    /// prefix over the limit, a malformed frame.
    fn buffered_frame(&mut self) -> Result<Option<Bytes>, RpcError> {
        Ok(None)
    }

    /// Whether bytes of a next frame are already buffered (so more requests are about to be
    /// handled and their responses should be batched). The default says yes, which only
    /// costs a transport that does not say the direct-write shortcut.
    fn has_buffered_bytes(&self) -> bool {
        true
    }
}

/// The writing half of a connection.
pub trait FrameWrite: Send + 'static {
    /// Writes all of `bytes` (whole frames, already length-prefixed) and flushes them.
    fn write_all(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Flushes and closes the write direction.
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// Writes a first part of `bytes` (at least one byte when the transport takes any) and
    /// returns its length, flushing once that is all of them. The connection's write timeout
    /// is measured per call, so a transport that implements it lets a slow reader that
    /// keeps reading take a large batch however long it takes as a whole. The default
    /// writes them all with [`write_all`](FrameWrite::write_all).
    fn write_some(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<usize>> + Send {
        async move {
            self.write_all(bytes).await?;
            Ok(bytes.len())
        }
    }

    /// Writes a first part of `parts` (a frame's bytes with large blocks beside them, in
    /// order) and returns its length, flushing once that is all of them, like
    /// [`write_some`](FrameWrite::write_some). A transport over a socket passes them to one
    /// vectored write, so blocks are not copied together first. The default writes the
    /// first part that is not empty with `write_some`.
    fn write_some_vectored(
        &mut self,
        parts: &[io::IoSlice<'_>],
    ) -> impl Future<Output = io::Result<usize>> + Send {
        async move {
            match parts.iter().find(|part| !part.is_empty()) {
                Some(part) => self.write_some(part).await,
                None => Ok(0),
            }
        }
    }

    /// Writes as much of `bytes` as the transport takes right now, without waiting; an
    /// `io::ErrorKind::WouldBlock` error when it takes nothing. A lone call uses it to send
    /// its frame without a hop to the writer task. The default never writes (every frame
    /// then goes through `write_all`).
    fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let _ = bytes;
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// One established connection, as a transport hands it to a [`crate::Channel`] or a
/// [`crate::Server`].
#[derive(Debug)]
pub struct Connection<R, W> {
    /// Reads frames from the peer.
    pub reader: R,
    /// Writes frames to the peer.
    pub writer: W,
    /// Who is at the other end.
    pub peer: Arc<Peer>,
    pub(crate) activity: ConnectionActivity,
}

impl<R: FrameRead, W: FrameWrite> Connection<R, W> {
    /// Bundles the two halves of a connection with its peer.
    pub fn new(reader: R, writer: W, peer: Peer) -> Self {
        Connection {
            reader,
            writer,
            peer: Arc::new(peer),
            activity: ConnectionActivity::default(),
        }
    }

    /// What the server serving this connection reports of it: take a clone before handing
    /// the connection to [`Server::serve_connection`](crate::Server::serve_connection).
    pub fn activity(&self) -> &ConnectionActivity {
        &self.activity
    }
}

/// What an accept loop can see of a connection it handed to a server: how many calls it is
/// running. `rpc_transport::serve` uses it to close a peer's oldest idle connection, rather
/// than refuse a new one, when a connection limit is reached.
#[derive(Debug, Clone, Default)]
pub struct ConnectionActivity {
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl ConnectionActivity {
    /// Calls whose handlers are running on the connection now (a call answered without
    /// waiting is over before anything could see it).
    pub fn calls_in_flight(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One more call running.
    pub(crate) fn call_started(&self) {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// One call fewer running.
    pub(crate) fn call_ended(&self) {
        self.calls
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// No call running any more (the connection ended).
    pub(crate) fn clear(&self) {
        self.calls.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One cap on the bytes a server's connections hold in their read buffers, shared by all of
/// them ([`ServerConfig::max_buffered_bytes`](crate::ServerConfig::max_buffered_bytes)), so
/// that many peers each starting a large frame and sending it slowly cannot together hold
/// more memory than the server allows. A transport's reader takes a [`BufferCharge`] from
/// [`Server::buffer_budget`](crate::Server::buffer_budget) and keeps it equal to what its
/// buffer holds.
#[derive(Debug, Clone)]
pub struct BufferBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    max: usize,
    held: std::sync::atomic::AtomicUsize,
}

impl BufferBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Self {
        BufferBudget {
            inner: Arc::new(BudgetInner {
                max,
                held: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// Bytes held against the budget now, by every charge taken from it.
    pub fn held(&self) -> usize {
        self.inner.held.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The budget's cap.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// A charge holding nothing yet, released when dropped.
    pub fn charge(&self) -> BufferCharge {
        BufferCharge {
            budget: self.clone(),
            held: 0,
        }
    }
}

/// What one reader holds against a [`BufferBudget`]; gives it back when dropped.
#[derive(Debug)]
pub struct BufferCharge {
    budget: BufferBudget,
    held: usize,
}

impl BufferCharge {
    /// Sets what this reader holds to `bytes`.
    ///
    /// # Errors
    ///
    /// `RpcError::ResourceExhausted` when growing to `bytes` would take the budget past its
    /// cap; the charge is then unchanged.
    pub fn set(&mut self, bytes: usize) -> Result<(), RpcError> {
        use std::sync::atomic::Ordering;
        let held = &self.budget.inner.held;
        if bytes == self.held {
            return Ok(());
        }
        if bytes < self.held {
            held.fetch_sub(self.held - bytes, Ordering::Relaxed);
            self.held = bytes;
            return Ok(());
        }
        let more = bytes - self.held;
        let max = self.budget.inner.max;
        held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
            now.checked_add(more).filter(|after| *after <= max)
        })
        .map_err(|_| RpcError::ResourceExhausted {
            message: format!(
                "the server's read buffers are full ({max} bytes across its connections)"
            )
            .into(),
        })?;
        self.held = bytes;
        Ok(())
    }

    /// What this reader holds.
    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for BufferCharge {
    fn drop(&mut self) {
        let _ = self.set(0);
    }
}
