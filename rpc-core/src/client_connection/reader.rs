//! The client connection's background tasks: the reader, which routes every frame from the
//! server to the call or stream it concerns, and the optional keepalive pinger.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use super::{call_error, ClientConnection};
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
    while let Some(frame) = reader.read_frame().await? {
        match Frame::parse(frame)? {
            Frame::Response {
                call_id,
                status,
                payload,
            } => {
                let waker = lock(&shared.calls).complete(call_id, Ok((status, payload)));
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            Frame::GoAway {
                last_call_id,
                reason,
            } => shared.go_away(last_call_id, reason),
            Frame::Pong { opaque } => shared.last_pong.store(opaque, Ordering::Relaxed),
            Frame::Ping { opaque } => {
                shared
                    .outbox
                    .push_now(|buf| wire::encode_ping(buf, opaque, true));
            }
            Frame::StreamItem { call_id, payload } => {
                let inbox = lock(&shared.calls).inbox(call_id);
                if let Some(inbox) = inbox {
                    inbox.push_item(payload)?;
                }
            }
            Frame::StreamPart { call_id, payload } => {
                let inbox = lock(&shared.calls).inbox(call_id);
                if let Some(inbox) = inbox {
                    inbox.push_piece(payload)?;
                }
            }
            Frame::StreamEnd {
                call_id,
                status,
                text,
            } => {
                let entry = lock(&shared.calls).remove_stream(call_id);
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
                let entry = lock(&shared.calls).credit(call_id);
                if let Some(entry) = entry {
                    entry.grant(credit, bytes);
                }
            }
            Frame::StopStream { call_id } => {
                let entry = lock(&shared.calls).remove_credit(call_id);
                if let Some(entry) = entry {
                    entry.stop();
                }
            }
            Frame::Request { .. } | Frame::Cancel { .. } | Frame::Declare { .. } => {
                return Err(RpcError::protocol("the server sent a client-only frame"));
            }
        }
    }
    Ok(())
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
