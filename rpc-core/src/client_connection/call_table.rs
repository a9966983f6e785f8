//! The call table of a client connection: a slot per call waiting for its response, the
//! streams being received and sent, and why the connection takes no more calls.
//!
//! Everything here runs under the connection's lock and does no I/O: methods return the
//! wakers to wake (and the streams to end) once the lock is released.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use bytes::Bytes;

use crate::call::MethodSpec;
use crate::error::RpcError;
use crate::status::Status;
use crate::stream::{Credit, Inbox};

/// A map keyed by call id.
type ById<T> = HashMap<u32, T, BuildHasherDefault<CallIdHasher>>;

/// A response frame's status and payload.
pub(super) type Response = (Status, Bytes);

#[derive(Debug)]
pub(super) struct CallTable {
    next_id: u32,
    pending: ById<PendingCall>,
    /// Set once the connection is gone: every later call fails with it.
    closed: Option<RpcError>,
    /// Set when the server said it is going away: later calls fail fast with it.
    going_away: Option<RpcError>,
    /// Response streams being received, by call id, with the method (for errors).
    streams: ById<(Arc<Inbox>, MethodSpec)>,
    /// Request streams being sent, by call id: the credit the server granted.
    credits: ById<Arc<Credit>>,
}

#[derive(Debug)]
enum PendingCall {
    Waiting(Option<Waker>),
    Done(Result<Response, RpcError>),
}

/// What closing the table leaves to do once its lock is released.
pub(super) struct Closed {
    pub(super) wakers: Vec<Waker>,
    pub(super) streams: Vec<Arc<Inbox>>,
    pub(super) credits: Vec<Arc<Credit>>,
}

/// Call ids are small integers stepping by 2: they are their own hash.
#[derive(Debug, Default)]
struct CallIdHasher(u64);

impl Hasher for CallIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }

    fn write_u32(&mut self, value: u32) {
        // One table's ids share their parity (they step by 2): drop that bit, or every id
        // would land in the buckets of one parity (a product's low bits follow its
        // factors'). Then spread them over hashbrown's control bits (the top 7 bits).
        self.0 = u64::from(value >> 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl CallTable {
    /// A table whose call ids are `first_id`, `first_id + 2`, ...: the side that dialled
    /// the connection calls with odd ids and the side that accepted it with even ones, so
    /// that on a connection where both call, a frame's call id says whose call it is.
    pub(super) fn new(first_id: u32) -> CallTable {
        CallTable {
            next_id: first_id,
            pending: ById::default(),
            closed: None,
            going_away: None,
            streams: ById::default(),
            credits: ById::default(),
        }
    }

    /// Calls waiting for their response plus response streams still being received.
    pub(super) fn in_flight(&self) -> usize {
        // A request stream whose call has settled (its producer detached, still sending)
        // is work the server is still doing for this connection.
        let detached = self
            .credits
            .keys()
            .filter(|id| !self.pending.contains_key(id) && !self.streams.contains_key(id))
            .count();
        self.pending.len() + self.streams.len() + detached
    }

    /// Whether nothing at all is in flight, streams being sent included.
    pub(super) fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.streams.is_empty() && self.credits.is_empty()
    }

    /// Why the connection ended, once it has.
    pub(super) fn closed(&self) -> Option<&RpcError> {
        self.closed.as_ref()
    }

    /// Why new calls are refused: the server said it was going away (which names its
    /// reason, and says the call never started, even once the connection has closed), or
    /// the connection ended.
    pub(super) fn refusal(&self) -> Option<&RpcError> {
        self.going_away.as_ref().or(self.closed.as_ref())
    }

    /// A slot for a new call, under an id no live call has.
    pub(super) fn register(&mut self) -> Result<u32, RpcError> {
        if let Some(error) = self.refusal() {
            return Err(error.clone());
        }
        // Ids wrap after 2^31 calls, keeping their parity; skip 0 and any id in flight.
        let mut call_id = self.next_id;
        while call_id == 0 || self.pending.contains_key(&call_id) {
            call_id = call_id.wrapping_add(2);
        }
        self.next_id = call_id.wrapping_add(2);
        self.pending.insert(call_id, PendingCall::Waiting(None));
        Ok(call_id)
    }

    /// Settles the call's slot with `outcome`; the waker to wake. A call no longer waiting
    /// (dropped, or settled already) is left as it is.
    pub(super) fn complete(
        &mut self,
        call_id: u32,
        outcome: Result<Response, RpcError>,
    ) -> Option<Waker> {
        let Some(slot) = self.pending.get_mut(&call_id) else {
            tracing::debug!(call_id, "response for a call that is no longer waiting");
            return None;
        };
        let waker = match slot {
            PendingCall::Waiting(waker) => waker.take(),
            PendingCall::Done(_) => return None,
        };
        *slot = PendingCall::Done(outcome);
        waker
    }

    /// The call's outcome once settled (removing its slot), or `Pending` with `cx`'s waker
    /// kept.
    pub(super) fn poll_response(
        &mut self,
        call_id: u32,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<Response, RpcError>> {
        match self.pending.get_mut(&call_id) {
            Some(PendingCall::Waiting(waker)) => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Some(PendingCall::Done(_)) => match self.pending.remove(&call_id) {
                Some(PendingCall::Done(outcome)) => Poll::Ready(outcome),
                _ => Poll::Ready(Err(RpcError::connection_closed("call slot lost"))),
            },
            None => Poll::Ready(Err(self
                .closed
                .clone()
                .unwrap_or_else(|| RpcError::connection_closed("call slot lost")))),
        }
    }

    /// Forgets a call (and, with `with_streams`, its streams, stopping the one it sends);
    /// returns whether it was still waiting for its response.
    pub(super) fn remove(&mut self, call_id: u32, with_streams: bool) -> bool {
        if with_streams {
            self.streams.remove(&call_id);
            if let Some(credit) = self.credits.remove(&call_id) {
                credit.stop();
            }
        }
        matches!(self.pending.remove(&call_id), Some(PendingCall::Waiting(_)))
    }

    /// Records the streams of a call: the one it receives (with its method, for errors)
    /// and the credit of the one it sends.
    pub(super) fn add_streams(
        &mut self,
        call_id: u32,
        inbox: Option<(Arc<Inbox>, MethodSpec)>,
        credit: Option<Arc<Credit>>,
    ) {
        if let Some(inbox) = inbox {
            self.streams.insert(call_id, inbox);
        }
        if let Some(credit) = credit {
            self.credits.insert(call_id, credit);
        }
    }

    /// The inbox of a response stream being received.
    pub(super) fn inbox(&self, call_id: u32) -> Option<Arc<Inbox>> {
        self.streams.get(&call_id).map(|(inbox, _)| inbox.clone())
    }

    /// Forgets a response stream, returning it with its method.
    pub(super) fn remove_stream(&mut self, call_id: u32) -> Option<(Arc<Inbox>, MethodSpec)> {
        self.streams.remove(&call_id)
    }

    /// The credit of a request stream being sent.
    pub(super) fn credit(&self, call_id: u32) -> Option<Arc<Credit>> {
        self.credits.get(&call_id).cloned()
    }

    /// Forgets a request stream's credit, returning it.
    pub(super) fn remove_credit(&mut self, call_id: u32) -> Option<Arc<Credit>> {
        self.credits.remove(&call_id)
    }

    /// The server takes no call above `last_call_id`: those waiting fail with `error`, and
    /// so does every later call. Returns the wakers to wake.
    pub(super) fn go_away(&mut self, last_call_id: u32, error: RpcError) -> Vec<Waker> {
        let wakers = self.fail_waiting(&error, |call_id| call_id > last_call_id);
        self.going_away = Some(error);
        wakers
    }

    /// The connection ended with `error`: every waiting and later call fails with it (the
    /// first reason is kept; see `refusal` for later calls after a GOAWAY), and the streams
    /// are handed back to be ended.
    pub(super) fn close(&mut self, error: &RpcError) -> Closed {
        if self.closed.is_none() {
            self.closed = Some(error.clone());
        }
        Closed {
            wakers: self.fail_waiting(error, |_| true),
            streams: std::mem::take(&mut self.streams)
                .into_values()
                .map(|(inbox, _)| inbox)
                .collect(),
            credits: std::mem::take(&mut self.credits).into_values().collect(),
        }
    }

    /// Settles with `error` every call still waiting whose id passes `which`; returns the
    /// wakers to wake once the lock is released.
    fn fail_waiting(&mut self, error: &RpcError, which: impl Fn(u32) -> bool) -> Vec<Waker> {
        let mut wakers = Vec::new();
        for (call_id, slot) in self.pending.iter_mut() {
            if !which(*call_id) {
                continue;
            }
            if let PendingCall::Waiting(waker) = slot {
                wakers.extend(waker.take());
                *slot = PendingCall::Done(Err(error.clone()));
            }
        }
        wakers
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn poll(table: &mut CallTable, call_id: u32) -> Poll<Result<Response, RpcError>> {
        table.poll_response(call_id, &mut TaskContext::from_waker(Waker::noop()))
    }

    #[test]
    fn a_registered_call_waits_until_its_response_completes_it() {
        let mut table = CallTable::new(1);
        let call_id = table.register().unwrap();
        assert!(poll(&mut table, call_id).is_pending());
        assert_eq!(table.in_flight(), 1);
        table.complete(call_id, Ok((Status::Ok, Bytes::from_static(b"42"))));
        let Poll::Ready(Ok((status, payload))) = poll(&mut table, call_id) else {
            panic!("the call was not completed");
        };
        assert_eq!((status, &payload[..]), (Status::Ok, &b"42"[..]));
        assert_eq!(
            table.in_flight(),
            0,
            "a completed call leaves no slot behind"
        );
    }

    #[test]
    fn a_response_for_a_removed_call_is_dropped() {
        let mut table = CallTable::new(1);
        let call_id = table.register().unwrap();
        assert!(table.remove(call_id, true), "it was waiting");
        assert!(table
            .complete(call_id, Ok((Status::Ok, Bytes::new())))
            .is_none());
        assert!(table.is_idle());
    }

    #[test]
    fn a_request_stream_still_sending_after_its_call_settled_is_in_flight() {
        let mut table = CallTable::new(1);
        let call_id = table.register().unwrap();
        table.add_streams(call_id, None, Some(Arc::new(Credit::default())));
        assert_eq!(table.in_flight(), 1);
        assert!(table
            .complete(call_id, Ok((Status::Ok, Bytes::new())))
            .is_none());
        let _ = poll(&mut table, call_id);
        assert_eq!(table.in_flight(), 1, "the producer still sends");
        table.remove_credit(call_id);
        assert_eq!(table.in_flight(), 0);
    }

    #[test]
    fn ids_keep_their_parity_and_skip_zero_and_live_calls_when_they_wrap() {
        let mut dialler = CallTable::new(1);
        dialler.next_id = u32::MAX;
        let last = dialler.register().unwrap();
        assert_eq!(last, u32::MAX);
        let live = dialler.register().unwrap();
        assert_eq!(live, 1, "odd ids wrap to 1");
        dialler.next_id = 1;
        assert_eq!(dialler.register().unwrap(), 3, "1 is still in flight");

        let mut acceptor = CallTable::new(2);
        assert_eq!(acceptor.register().unwrap(), 2);
        assert_eq!(acceptor.register().unwrap(), 4);
        acceptor.next_id = u32::MAX - 1;
        assert_eq!(acceptor.register().unwrap(), u32::MAX - 1);
        assert_eq!(
            acceptor.register().unwrap(),
            6,
            "0 is never an id; 2 and 4 are live"
        );
    }

    #[test]
    fn going_away_fails_only_the_calls_the_server_did_not_take_and_every_later_one() {
        let mut table = CallTable::new(1);
        let taken = table.register().unwrap();
        let not_taken = table.register().unwrap();
        table.go_away(
            taken,
            RpcError::Unavailable {
                reason: "bye".into(),
            },
        );
        assert!(poll(&mut table, taken).is_pending());
        assert!(matches!(
            poll(&mut table, not_taken),
            Poll::Ready(Err(RpcError::Unavailable { .. }))
        ));
        assert!(matches!(
            table.register(),
            Err(RpcError::Unavailable { .. })
        ));
        assert!(table.closed().is_none(), "going away is not closed");
    }

    #[test]
    fn closing_fails_every_waiting_call_and_keeps_the_first_reason() {
        let mut table = CallTable::new(1);
        let first = table.register().unwrap();
        let second = table.register().unwrap();
        table.close(&RpcError::connection_closed("first"));
        table.close(&RpcError::connection_closed("second"));
        for call_id in [first, second] {
            let Poll::Ready(Err(error)) = poll(&mut table, call_id) else {
                panic!("call {call_id} was not failed");
            };
            assert_eq!(error.to_string(), "connection closed: first");
        }
        let Err(error) = table.register() else {
            panic!("a closed table took a call");
        };
        assert_eq!(error.to_string(), "connection closed: first");
    }
}
