//! The client connection's reader, which routes every frame from the server to the call or
//! stream it concerns.

use std::sync::atomic::Ordering;

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
    let inflate = Compression::negotiate(
        shared.config.compression,
        reader.preface_flags(),
        &shared.outbox,
        shared.config.max_frame_size,
    );
    while let Some(frame) = reader.read_frame().await? {
        let frame = wire::inflate(frame, inflate)?;
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
