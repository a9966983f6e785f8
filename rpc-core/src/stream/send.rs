//! Sending a stream: its items as credit allows, large ones in pieces, then its end.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_core::Stream;
use serde::Serialize;

use super::{Credit, Streaming};
use crate::codec;
use crate::error::RpcError;
use crate::outbox::{Lane, Outbox};
use crate::recover::{panic_message, CatchUnwind};
use crate::status::{self, Status};
use crate::wire;

/// An item a stream can send: a serde value, or one encoded already (a front door that
/// transcodes items, like HTTP/JSON, sends them as it made them).
pub(crate) trait StreamItem: Send + 'static {
    /// The length of the item's encoding.
    fn encoded_len(&self) -> Result<usize, RpcError>;
    /// Appends the item's encoding to `buf`.
    fn encode_into(&self, buf: &mut bytes::BytesMut) -> Result<(), RpcError>;
}

impl<T: Serialize + Send + 'static> StreamItem for T {
    fn encoded_len(&self) -> Result<usize, RpcError> {
        codec::encoded_len(self)
    }

    fn encode_into(&self, buf: &mut bytes::BytesMut) -> Result<(), RpcError> {
        codec::encode_into(buf, self)
    }
}

impl StreamItem for codec::Encoded {
    fn encoded_len(&self) -> Result<usize, RpcError> {
        Ok(self.0.len())
    }

    fn encode_into(&self, buf: &mut bytes::BytesMut) -> Result<(), RpcError> {
        crate::blocks::append(buf, &self.0);
        Ok(())
    }
}

/// How a stream is sent: its call, where its frames go, and its limits.
pub(crate) struct StreamSink {
    pub(crate) call_id: u32,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) credit: Arc<Credit>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) max_frame: usize,
    /// How long the receiver may leave the stream without credit before it is ended (the
    /// connection's write timeout: a stream that cannot move is a write making no progress).
    pub(crate) stall_timeout: Duration,
}

/// Sends `stream` as the stream of the sink's call: items as credit allows, then the end.
/// Stops quietly when the receiver stops the stream; reports a producer that panics or
/// fails, a deadline that passes, or a receiver that grants no credit for the stall
/// timeout, as an erroneous end, so a peer that never grants credit holds no producer for
/// ever.
pub(crate) async fn send_stream<T: StreamItem>(mut stream: Streaming<T>, sink: StreamSink) {
    let StreamSink {
        call_id,
        outbox,
        credit,
        deadline,
        max_frame,
        stall_timeout,
    } = sink;
    let sending = async {
        loop {
            // The clock and a timer only when the receiver makes us wait.
            let granted = match credit.try_acquire() {
                Some(granted) => granted,
                None => match tokio::time::timeout(stall_timeout, credit.acquire()).await {
                    Ok(granted) => granted,
                    Err(_stalled) => {
                        return Some((
                            Status::ResourceExhausted,
                            format!("the receiver granted no credit for {stall_timeout:?}"),
                        ));
                    }
                },
            };
            if !granted {
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
            let pushed = send_item(&outbox, &credit, call_id, item, max_frame).await;
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

/// Queues one item, taking its length from the byte credit: encoded straight into the
/// outgoing buffer when it is small, or encoded once and sent in pieces when it is large.
async fn send_item<T: StreamItem>(
    outbox: &Outbox,
    credit: &Credit,
    call_id: u32,
    item: T,
    max_frame: usize,
) -> Result<(), RpcError> {
    let len = item.encoded_len()?;
    if len > max_frame {
        return Err(RpcError::FrameTooLarge {
            len: len as u64,
            max: max_frame as u64,
        });
    }
    credit.spend_bytes(len);
    if len <= PIECE {
        return outbox
            .push(Lane::Bulk, move |buf| {
                wire::encode_stream_item(buf, call_id, max_frame, |buf| item.encode_into(buf))
            })
            .await;
    }
    let mut encoded = bytes::BytesMut::with_capacity(len);
    item.encode_into(&mut encoded)?;
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
