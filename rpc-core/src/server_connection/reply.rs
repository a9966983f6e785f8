//! Answering calls: error answers queued at once, and handlers' outcomes encoded straight
//! into their response frames.

use std::panic::AssertUnwindSafe;

use bytes::BytesMut;

use super::call::HandlerOutcome;
use super::ConnState;
use crate::context::Peer;
use crate::error::RpcError;
use crate::observe;
use crate::outbox::Lane;
use crate::recover::panic_message;
use crate::status::{self, Status};
use crate::wire;

impl ConnState {
    /// Queues an error response now (they are small; see `respond` for results). Errors the
    /// client caused are charged to its budget.
    pub(super) fn respond_error(&self, call_id: u32, status: Status, message: &[u8]) {
        if status != Status::Unavailable && status != Status::HandlerPanicked {
            self.charge_error();
        }
        observe::count_refusal(self.config().metrics, status);
        let max_frame = self.config().max_frame_size;
        self.outbox.push_now(|buf| {
            // An error message never comes near the frame limit; if it did, drop the text.
            if wire::encode_response(buf, call_id, status, message, max_frame).is_err() {
                let _ = wire::encode_response(buf, call_id, status, b"", max_frame);
            }
        });
    }

    /// Queues the refusal of a call the server has no room for (on a connection where both
    /// sides call, see `waiting.rs`): load, not the peer's fault, so it is not charged.
    pub(super) fn respond_busy(&self, call_id: u32, status: Status, message: &str) {
        observe::count_refusal(self.config().metrics, status);
        let max_frame = self.config().max_frame_size;
        self.outbox.push_now(|buf| {
            let _ = wire::encode_response(buf, call_id, status, message.as_bytes(), max_frame);
        });
    }

    /// Queues a handler's outcome, waiting for room in the outbox. Returns whether it was
    /// queued.
    pub(super) async fn respond(&self, call_id: u32, outcome: HandlerOutcome) -> bool {
        let max_frame = self.config().max_frame_size;
        let pushed = self
            .outbox
            .push(Lane::Lone, |buf| {
                encode_outcome(buf, call_id, outcome, max_frame, &self.peer)
            })
            .await;
        if let Err(error) = pushed {
            tracing::debug!(peer = %self.peer, call_id, %error, "could not queue a response");
            return false;
        }
        true
    }
}

/// Appends the response frame for a handler's outcome, encoding a reply straight into the
/// frame. A reply that cannot be encoded, or panics while encoding, or is over the frame
/// limit, is replaced by the matching error answer, so the call still ends.
pub(super) fn encode_outcome(
    buf: &mut BytesMut,
    call_id: u32,
    outcome: HandlerOutcome,
    max_frame: usize,
    peer: &Peer,
) -> Result<(), RpcError> {
    let reply = match outcome {
        HandlerOutcome::Replied(reply) => {
            if let Some((status, message)) = reply.refusal() {
                return wire::encode_response(buf, call_id, status, message.as_bytes(), max_frame);
            }
            reply
        }
        HandlerOutcome::Panicked(_) => {
            return wire::encode_response(buf, call_id, Status::HandlerPanicked, b"", max_frame);
        }
        HandlerOutcome::DeadlineExceeded => {
            return wire::encode_response(buf, call_id, Status::DeadlineExceeded, b"", max_frame);
        }
    };
    let start = wire::start_response(buf, call_id, Status::Ok);
    let encoded = std::panic::catch_unwind(AssertUnwindSafe(|| reply.encode_into(buf)));
    let (status, text) = match encoded {
        Ok(Ok(())) => match wire::finish_frame(buf, start, max_frame) {
            Err(error @ RpcError::FrameTooLarge { .. }) => {
                tracing::warn!(%peer, call_id, %error, "a response was over the frame limit");
                status::from_error(&error)
            }
            other => return other,
        },
        Ok(Err(error)) => {
            wire::abandon_frame(buf, start);
            tracing::error!(%peer, call_id, %error, "a handler's result could not be encoded");
            (
                Status::Internal,
                "the result could not be encoded".to_owned(),
            )
        }
        Err(panic) => {
            wire::abandon_frame(buf, start);
            tracing::error!(%peer, call_id, panic = panic_message(&*panic), "a result panicked while encoding");
            (Status::HandlerPanicked, String::new())
        }
    };
    wire::encode_response(buf, call_id, status, text.as_bytes(), max_frame)
}
