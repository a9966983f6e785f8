//! Sending a stream: its items as credit allows, large ones in pieces, then its end.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_core::Stream;
use serde::Serialize;

use super::{Credit, Streaming};
use crate::codec;
use crate::error::RpcError;
use crate::outbox::{Lane, Outbox};
use crate::recover::{panic_message, CatchUnwind};
use crate::status::{self, Status};
use crate::wire;

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
                Ok(Some(Err(error))) => return Some(status::for_stream_end(&error)),
                Err(panic) => {
                    tracing::error!(panic = panic_message(&*panic), "a stream producer panicked");
                    return Some((Status::HandlerPanicked, String::new()));
                }
            };
            let pushed = send_item(&outbox, call_id, item, max_frame).await;
            match pushed {
                Ok(()) => {}
                Err(error @ RpcError::FrameTooLarge { .. }) => {
                    return Some(status::from_error(&error));
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
