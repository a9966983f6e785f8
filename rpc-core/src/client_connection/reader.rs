//! The client connection's background tasks: the reader, which routes every frame from the
//! server to the call or stream it concerns, and the optional keepalive pinger.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use super::{call_error, ClientConnection};
use crate::config::Compression;
use crate::error::RpcError;
use crate::recover::lock;
use crate::status::Status;
use crate::transport::FrameRead;
use crate::wire::{self, Frame};

/// Reads frames until the server closes the connection (`Ok`) or breaks the protocol, the
/// transport fails, or a stream is overrun (`Err`).
pub(super) async fn read_responses<R: FrameRead>(
    shared: &ClientConnection,
    mut reader: R,
) -> Result<(), RpcError> {
    let preface_timeout = shared.config.preface_timeout;
    tokio::time::timeout(preface_timeout, reader.read_preface())
        .await
        .map_err(|_elapsed| {
            RpcError::protocol(format!(
                "the server sent no preface within {preface_timeout:?}"
            ))
        })??;
    let compression = shared.config.compression;
    Compression::negotiate(compression, reader.preface_flags(), &shared.outbox);
    let max_frame = shared.config.max_frame_size;
    while let Some(frame) = reader.read_frame().await? {
        let frame = wire::inflate(frame, max_frame, compression.is_some())?;
        shared.handle_frame(Frame::parse(frame)?)?;
    }
    Ok(())
}

impl ClientConnection {
    /// Hands one frame from the peer to the call or stream it concerns. An error closes the
    /// connection: a broken protocol, or a stream overrun.
    ///
    /// On a connection where both sides call, the server driver reading it hands over only
    /// the frames that concern this side's calls; requests reach this engine only from a
    /// peer that calls a client that serves nothing, and are answered `UnknownService`
    /// without running anything.
    pub(crate) fn handle_frame(&self, frame: Frame) -> Result<(), RpcError> {
        match frame {
            Frame::Response {
                call_id,
                status,
                payload,
            } => {
                let waker = lock(&self.calls).complete(call_id, Ok((status, payload)));
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            Frame::GoAway {
                last_call_id,
                reason,
            } => self.go_away(last_call_id, reason),
            Frame::Pong { opaque } => self.last_pong.store(opaque, Ordering::Relaxed),
            Frame::Ping { opaque } => {
                self.outbox
                    .push_now(|buf| wire::encode_ping(buf, opaque, true));
            }
            Frame::StreamItem { call_id, payload } => {
                let inbox = lock(&self.calls).inbox(call_id);
                if let Some(inbox) = inbox {
                    inbox.push_item(payload)?;
                }
            }
            Frame::StreamPart { call_id, payload } => {
                let inbox = lock(&self.calls).inbox(call_id);
                if let Some(inbox) = inbox {
                    inbox.push_piece(payload)?;
                }
            }
            Frame::StreamEnd {
                call_id,
                status,
                text,
            } => {
                let entry = lock(&self.calls).remove_stream(call_id);
                if let Some((inbox, method)) = entry {
                    let outcome = match status {
                        Status::Ok => Ok(()),
                        status => Err(call_error(&method, status, &text)),
                    };
                    inbox.finish(outcome);
                }
            }
            Frame::Window {
                call_id,
                credit,
                bytes,
            } => {
                let entry = lock(&self.calls).credit(call_id);
                if let Some(entry) = entry {
                    entry.grant(credit, bytes);
                }
            }
            Frame::StopStream { call_id } => {
                let entry = lock(&self.calls).remove_credit(call_id);
                if let Some(entry) = entry {
                    entry.stop();
                }
            }
            Frame::Request { head, .. } => {
                let max_frame = self.config.max_frame_size;
                self.outbox.push_now(|buf| {
                    let _ = wire::encode_response(
                        buf,
                        head.call_id,
                        Status::UnknownService,
                        b"",
                        max_frame,
                    );
                });
            }
            // What follows a request this side answered without running it.
            Frame::Cancel { .. } | Frame::Declare { .. } => {}
        }
        Ok(())
    }
}

/// The runtime every channel's keepalive task runs on: one thread for the process, started
/// with the first channel that pings, whose only work is these timers. Keeping them off the
/// caller's runtime keeps its parks free of timer work: with one timer armed, each round
/// trip of a lone call cost about a microsecond more (rpc-bench, Unix socket latency p50,
/// 13.7 µs to 14.7 µs). `None` if the thread cannot be started (the caller's runtime is
/// used then).
pub(super) fn keepalive_runtime() -> Option<&'static tokio::runtime::Handle> {
    static RUNTIME: std::sync::OnceLock<Option<tokio::runtime::Handle>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .ok()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("rpc-keepalive".to_owned())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Pings the server while calls are in flight, and closes the connection when a ping goes
/// unanswered for `timeout`. Ends with the connection.
pub(super) async fn keep_alive(
    shared: Weak<ClientConnection>,
    interval: Duration,
    timeout: Duration,
) {
    let mut opaque = 0_u64;
    loop {
        tokio::time::sleep(interval).await;
        {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let calls = lock(&shared.calls);
            if calls.closed().is_some() {
                return;
            }
            if calls.is_idle() {
                continue;
            }
            drop(calls);
            opaque += 1;
            shared
                .outbox
                .push_now(|buf| wire::encode_ping(buf, opaque, false));
        }
        tokio::time::sleep(timeout).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.last_pong.load(Ordering::Relaxed) < opaque {
            shared.close(RpcError::connection_closed(format!(
                "the server did not answer a keepalive ping within {timeout:?}"
            )));
            return;
        }
    }
}
