//! Requests waiting for a handler permit on a connection where both sides call.
//!
//! A server that runs out of permits normally stops reading (backpressure). It cannot when
//! it calls its peer too: the responses to its own calls travel behind the peer's requests,
//! and a handler waiting for one (a callback) would never get it. So the driver keeps
//! reading, and the requests it cannot start yet wait here, in order, with the frames that
//! follow them for the same calls. The queue is bounded: past `max_concurrent_calls`
//! waiting requests, or past the server's cap on buffered bytes, a new request is refused
//! with `ResourceExhausted` without running.

use std::collections::{HashSet, VecDeque};

use crate::error::RpcError;
use crate::transport::BufferCharge;
use crate::wire::Frame;

/// One waiting frame: the call it belongs to, its size on the wire, and the frame.
type Waiting = (u32, usize, Frame);

/// Frames of calls not started yet, in the order they arrived.
pub(super) struct WaitingCalls {
    frames: VecDeque<Waiting>,
    /// The ids of the waiting calls.
    calls: HashSet<u32>,
    /// At most this many calls wait.
    max_calls: usize,
    /// The bytes of the waiting frames, held against the server's buffer budget.
    charge: BufferCharge,
}

impl WaitingCalls {
    pub(super) fn new(max_calls: usize, charge: BufferCharge) -> Self {
        WaitingCalls {
            frames: VecDeque::new(),
            calls: HashSet::new(),
            max_calls,
            charge,
        }
    }

    /// Whether `call_id` is a waiting call (so its frames wait behind its request).
    pub(super) fn holds(&self, call_id: u32) -> bool {
        self.calls.contains(&call_id)
    }

    /// Queues a request that cannot start yet.
    ///
    /// # Errors
    ///
    /// `ResourceExhausted` when the queue is full: the caller refuses the call.
    pub(super) fn push_request(
        &mut self,
        call_id: u32,
        size: usize,
        request: Frame,
    ) -> Result<(), RpcError> {
        if self.calls.len() >= self.max_calls {
            return Err(RpcError::ResourceExhausted {
                message: format!(
                    "{} calls are already waiting for one of the server's handlers on this connection",
                    self.calls.len()
                )
                .into(),
            });
        }
        self.charge.set(self.charge.held() + size)?;
        self.calls.insert(call_id);
        self.frames.push_back((call_id, size, request));
        Ok(())
    }

    /// Queues a frame of a waiting call, behind its request.
    ///
    /// # Errors
    ///
    /// `ResourceExhausted` past the server's cap on buffered bytes: the connection closes.
    pub(super) fn push_frame(
        &mut self,
        call_id: u32,
        size: usize,
        frame: Frame,
    ) -> Result<(), RpcError> {
        self.charge.set(self.charge.held() + size)?;
        self.frames.push_back((call_id, size, frame));
        Ok(())
    }

    /// The first waiting call's request and the frames queued behind it for that call, in
    /// order; `None` when no call waits.
    pub(super) fn next_call(&mut self) -> Option<Vec<Frame>> {
        let (call_id, _, request) = self.frames.pop_front()?;
        Some(self.take(call_id, request))
    }

    /// Drops a waiting call and its frames (the caller cancelled it); whether it waited.
    pub(super) fn cancel(&mut self, call_id: u32) -> bool {
        if !self.calls.contains(&call_id) {
            return false;
        }
        self.frames.retain(|(id, _, _)| *id != call_id);
        self.calls.remove(&call_id);
        self.recharge();
        true
    }

    /// Every waiting call's id, emptying the queue (the connection is draining: they are
    /// answered without running).
    pub(super) fn drain_ids(&mut self) -> Vec<u32> {
        let ids = self
            .frames
            .iter()
            .filter(|(_, _, frame)| matches!(frame, Frame::Request { .. }))
            .map(|(id, _, _)| *id)
            .collect();
        self.frames.clear();
        self.calls.clear();
        self.recharge();
        ids
    }

    fn take(&mut self, call_id: u32, request: Frame) -> Vec<Frame> {
        let mut frames = vec![request];
        let mut rest = VecDeque::with_capacity(self.frames.len());
        for (id, size, frame) in self.frames.drain(..) {
            if id == call_id {
                frames.push(frame);
            } else {
                rest.push_back((id, size, frame));
            }
        }
        self.frames = rest;
        self.calls.remove(&call_id);
        self.recharge();
        frames
    }

    /// Sets the charge to what the queue holds now.
    fn recharge(&mut self) {
        let held: usize = self.frames.iter().map(|(_, size, _)| size).sum();
        // Shrinking a charge never fails.
        let _ = self.charge.set(held);
    }
}
