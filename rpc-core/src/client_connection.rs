//! The client's connection engine: one multiplexed connection to a server.
//!
//! The life of a call on this side (`exchange.rs`): it registers a pending slot in the
//! [`CallTable`](call_table::CallTable), encodes its request straight into the connection's
//! [`Outbox`], and waits on the slot. The reader task (`reader.rs`) fills slots as responses
//! arrive, in any order. A call that is dropped first removes its slot and queues a cancel
//! frame; a connection that fails fills every slot with the error at once ([`close`]).
//!
//! [`close`]: ClientConnection::close

mod call_table;
mod exchange;
mod keepalive;
mod reader;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::call::MethodSpec;
use crate::config::{ChannelConfig, Compression};
use crate::context::Peer;
use crate::error::RpcError;
use crate::outbox::{self, Outbox};
use crate::recover::lock;
use crate::status::{self, Status};
use crate::transport::{Connection, FrameRead, FrameWrite};
use crate::wire;
use call_table::CallTable;

/// The first call id of the side that dialled a connection: its calls have odd ids.
pub(crate) const DIALLER_FIRST_ID: u32 = 1;

/// The first call id of the side that accepted a connection, when it calls back: its calls
/// have even ids.
pub(crate) const ACCEPTOR_FIRST_ID: u32 = 2;

/// One client connection: its call table, its outbox, and the tasks that read and write it.
#[derive(Debug)]
pub(crate) struct ClientConnection {
    calls: Mutex<CallTable>,
    outbox: Arc<Outbox>,
    config: ChannelConfig,
    peer: Arc<Peer>,
    /// The reader task, stopped when the connection closes.
    background_tasks: Mutex<Vec<AbortHandle>>,
    /// Whether the keepalive task watches this connection (to be told when it closes).
    keepalive_watched: AtomicBool,
    /// Signalled when the connection closes or the server says it is going away.
    closed_notify: Notify,
    /// The opaque of the last PONG received.
    last_pong: AtomicU64,
    /// The services whose method fingerprints this connection has declared to the server.
    declared: Mutex<Vec<u32>>,
    /// The service declared last (0 before any): calls to it skip the lock.
    last_declared: AtomicU32,
}

impl ClientConnection {
    /// Starts the engine over an established connection: it sends its preface at once,
    /// spawns a writer and a reader task on the current tokio runtime, and (if configured)
    /// has the process's keepalive task watch the connection.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub(crate) fn start<R: FrameRead, W: FrameWrite>(
        connection: Connection<R, W>,
        config: ChannelConfig,
    ) -> Arc<ClientConnection> {
        let Connection {
            reader,
            writer,
            peer,
            ..
        } = connection;
        let flags = Compression::preface_flag(config.compression);
        let outbox = Arc::new(Outbox::new(&wire::preface(flags)));
        let shared = ClientConnection::new(outbox.clone(), peer, config, DIALLER_FIRST_ID);
        let write_timeout = shared.config.write_timeout;
        let writer_shared = shared.clone();
        tokio::spawn(async move {
            let outcome = outbox::run_writer(outbox, writer, write_timeout).await;
            let error = match outcome {
                Ok(()) => RpcError::connection_closed("the channel was dropped"),
                Err(error) => error,
            };
            writer_shared.close(error);
        });
        let reader_shared = shared.clone();
        let reader_task = tokio::spawn(async move {
            let error = match reader::read_responses(&reader_shared, reader).await {
                Ok(()) => RpcError::connection_closed("the server closed the connection"),
                Err(error) => error,
            };
            reader_shared.close(error);
        });
        shared.keep_tasks(Some(reader_task.abort_handle()));
        shared
    }

    /// The calling half of a connection on which both sides call: a server driver reads
    /// the connection and hands this engine the frames that concern its calls
    /// ([`handle_frame`](Self::handle_frame)); it writes into the driver's `outbox`. Its
    /// call ids start at `first_id` ([`DIALLER_FIRST_ID`] or [`ACCEPTOR_FIRST_ID`]). Spawns
    /// nothing (the keepalive task watches it, if configured); whoever reads the connection
    /// closes this engine when the connection ends.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub(crate) fn attached(
        outbox: Arc<Outbox>,
        peer: Arc<Peer>,
        config: ChannelConfig,
        first_id: u32,
    ) -> Arc<ClientConnection> {
        let shared = ClientConnection::new(outbox, peer, config, first_id);
        shared.keep_tasks(None);
        shared
    }

    fn new(
        outbox: Arc<Outbox>,
        peer: Arc<Peer>,
        config: ChannelConfig,
        first_id: u32,
    ) -> Arc<ClientConnection> {
        Arc::new(ClientConnection {
            calls: Mutex::new(CallTable::new(first_id)),
            outbox,
            config,
            peer,
            background_tasks: Mutex::new(Vec::new()),
            keepalive_watched: AtomicBool::new(false),
            declared: Mutex::new(Vec::new()),
            last_declared: AtomicU32::new(0),
            closed_notify: Notify::new(),
            last_pong: AtomicU64::new(0),
        })
    }

    /// Keeps the handle of the connection's reader task, if it has one, to stop it when
    /// the connection closes, and has the connection pinged if configured.
    fn keep_tasks(self: &Arc<Self>, reader: Option<AbortHandle>) {
        *lock(&self.background_tasks) = reader.into_iter().collect();
        if self.is_closed() {
            // The connection failed before the handle was stored: stop the task now.
            for task in lock(&self.background_tasks).drain(..) {
                task.abort();
            }
            return;
        }
        if let Some(interval) = self.config.keepalive_interval {
            let watched = keepalive::watch(
                Arc::downgrade(self),
                interval,
                self.config.keepalive_timeout,
            );
            self.keepalive_watched.store(watched, Ordering::Relaxed);
        }
    }

    /// Who is at the other end.
    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The connection's configuration.
    pub(crate) fn config(&self) -> &ChannelConfig {
        &self.config
    }

    /// Calls waiting for their response plus response streams still being received.
    pub(crate) fn calls_in_flight(&self) -> usize {
        lock(&self.calls).in_flight()
    }

    /// Whether the server said it takes no new calls here (GOAWAY), or the connection ended.
    pub(crate) fn stopped_taking_calls(&self) -> bool {
        lock(&self.calls).refusal().is_some()
    }

    /// Resolves once the server said it takes no new calls here, or the connection ended.
    pub(crate) async fn until_stopped_taking_calls(&self) {
        loop {
            let notified = self.closed_notify.notified();
            if self.stopped_taking_calls() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.calls).closed().is_some()
    }

    /// Resolves once the connection has ended, with the reason.
    pub(crate) async fn closed(&self) -> RpcError {
        loop {
            let notified = self.closed_notify.notified();
            if let Some(error) = lock(&self.calls).closed() {
                return error.clone();
            }
            notified.await;
        }
    }

    /// Starts an orderly close: what is queued is written, then the connection shuts.
    pub(crate) fn finish(&self) {
        self.outbox.finish();
    }

    /// The server will take no call after `last_call_id`: later calls fail at once with
    /// `Unavailable` (they never started, so they are safe to retry elsewhere), and so do
    /// the ones already sent that it did not take. Calls it took may still finish.
    fn go_away(&self, last_call_id: u32, reason: String) {
        let error = RpcError::Unavailable {
            reason: format!("the server is going away: {reason}").into(),
        };
        let wakers = lock(&self.calls).go_away(last_call_id, error);
        for waker in wakers {
            waker.wake();
        }
        self.closed_notify.notify_waiters();
    }

    /// Fails every pending and later call with `error`, ends every stream, and stops the
    /// connection's tasks.
    pub(crate) fn close(&self, error: RpcError) {
        let closed = lock(&self.calls).close(&error);
        for inbox in closed.streams {
            inbox.finish(Err(error.clone()));
        }
        for credit in closed.credits {
            credit.stop();
        }
        for waker in closed.wakers {
            waker.wake();
        }
        self.outbox.fail(error);
        for task in lock(&self.background_tasks).drain(..) {
            task.abort();
        }
        if self.keepalive_watched.swap(false, Ordering::Relaxed) {
            keepalive::forget(std::ptr::from_ref(self) as usize);
        }
        self.closed_notify.notify_waiters();
    }
}

/// The error a non-OK status stands for, for a call to `method`. An `INCOMPATIBLE` answer
/// carries the server's shape of the method, which names the first difference.
fn call_error(method: &MethodSpec, status: Status, text: &[u8]) -> RpcError {
    match status::to_error(method.service(), method.method(), status, text) {
        RpcError::Incompatible {
            service,
            method: name,
            reason,
        } => RpcError::Incompatible {
            service,
            method: name,
            reason: method.incompatibility(text).map_or(reason, Arc::from),
        },
        error => error,
    }
}
