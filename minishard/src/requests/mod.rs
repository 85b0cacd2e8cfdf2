//! Requests to a shard's owner (docs/design.md 11): what the application sees
//! ([`Reply`], [`RequestError`], [`Responder`], [`PendingReply`]) and the
//! two halves behind it, [`client`] (send, route, retry, time out) and
//! [`server`] (admit, queue for the handler, answer).
//!
//! Requests live outside the sans-IO core: the core decides who owns what
//! and publishes it in the snapshot; requests only read that snapshot and
//! travel on each connection's request lane, which the connection writes
//! after its heartbeats and the cores' messages. Whether a handler may run
//! is decided where it runs, on the callback thread, by whether the
//! application holds the shard's allocation at that moment: callbacks run
//! one at a time, so "inside the allocation" is exact there.

pub(crate) mod client;
pub(crate) mod handoff;
pub(crate) mod server;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tokio::sync::{mpsc, Notify};

use crate::core::{Epoch, NodeId, Shard};
use crate::runtime::calls::CallQueue;
use crate::wire::request::{Reply as ReplyFrame, ReplyOutcome};
use crate::wire::Frame;

/// Bytes of a request or reply frame besides its payload, at most: the
/// largest payload is the frame limit less this.
pub const FRAME_OVERHEAD: usize = 64;

/// The owner's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The handler's bytes.
    pub payload: Vec<u8>,
    /// The node whose handler answered.
    pub node: NodeId,
    /// The epoch of that node's allocation of the shard when it answered.
    pub epoch: Epoch,
}

/// Why a request has no reply. Every request ends in exactly one [`Reply`]
/// or one of these.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// The timeout ended first: while no owner was known, or after the
    /// request was sent (then the handler may or may not have run).
    Timeout,
    /// The shard does not exist (or an observer does not know the shard
    /// count yet).
    NoSuchShard {
        /// The shard asked for.
        shard: Shard,
        /// The shards the cluster keeps, as known here.
        shard_count: u32,
    },
    /// Too many requests in flight: from this handle, to that owner, or
    /// waiting at that owner. The handler did not run; try again later.
    Overloaded,
    /// The handler failed (its message), or dropped its responder without
    /// answering.
    HandlerFailed(String),
    /// The connection to the owner was lost after the request was sent: the
    /// handler may or may not have run. Requests are never sent twice.
    Uncertain,
    /// This handle has left (or is leaving) the cluster.
    Closed,
    /// The payload is larger than a frame can carry.
    TooLarge {
        /// Its length.
        len: usize,
        /// The largest payload.
        limit: usize,
    },
    /// A blocking request for this node's own shard from inside one of this
    /// handle's callbacks: the handler could only run after that callback,
    /// which waits for it. Use [`crate::Cluster::request_async`] there.
    InsideCallback,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Timeout => f.write_str("the request timed out"),
            RequestError::NoSuchShard { shard, shard_count } => write!(
                f,
                "shard {shard} does not exist: the cluster keeps {shard_count} shards"
            ),
            RequestError::Overloaded => {
                f.write_str("overloaded: too many requests in flight; the handler did not run")
            }
            RequestError::HandlerFailed(message) => {
                write!(f, "the request handler failed: {message}")
            }
            RequestError::Uncertain => f.write_str(
                "the connection to the owner was lost after the request was sent: the handler may or may not have run",
            ),
            RequestError::Closed => f.write_str("the cluster handle has left"),
            RequestError::TooLarge { len, limit } => write!(
                f,
                "the payload is {len} bytes; at most {limit} fit in a frame"
            ),
            RequestError::InsideCallback => f.write_str(
                "a blocking request for this node's own shard cannot be made from inside one of its callbacks: the handler would wait for that callback; use the async form",
            ),
        }
    }
}

impl std::error::Error for RequestError {}

/// What a request's outcome is delivered to.
pub(crate) type Outcome = Result<Reply, RequestError>;

/// A function told a request's outcome, once.
pub(crate) type Then = Box<dyn FnOnce(Outcome) + Send>;

/// Where a request's outcome goes: one waiter, blocking or async, or a
/// function. Completed at most once; later completions are ignored.
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

enum SlotState {
    Waiting {
        waker: Option<Waker>,
        then: Option<Then>,
    },
    Ready(Outcome),
    Taken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slot {
    pub(crate) fn new(then: Option<Then>) -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Waiting { waker: None, then }),
            ready: Condvar::new(),
        })
    }

    /// Delivers the outcome, unless one was delivered already.
    pub(crate) fn complete(&self, outcome: Outcome) -> bool {
        let mut state = lock(&self.state);
        let SlotState::Waiting { waker, then } = &mut *state else {
            return false;
        };
        let (waker, then) = (waker.take(), then.take());
        match then {
            Some(then) => {
                *state = SlotState::Taken;
                drop(state);
                then(outcome);
            }
            None => {
                *state = SlotState::Ready(outcome);
                drop(state);
                self.ready.notify_all();
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        }
        true
    }

    fn take_ready(state: &mut SlotState) -> Option<Outcome> {
        match std::mem::replace(state, SlotState::Taken) {
            SlotState::Ready(outcome) => Some(outcome),
            other => {
                *state = other;
                None
            }
        }
    }

    /// Waits for the outcome until `deadline`; `None` if it has not come.
    pub(crate) fn wait(&self, deadline: Instant) -> Option<Outcome> {
        let mut state = lock(&self.state);
        loop {
            if let Some(outcome) = Slot::take_ready(&mut state) {
                return Some(outcome);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = self
                .ready
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The outcome, if it has come.
    pub(crate) fn try_take(&self) -> Option<Outcome> {
        Slot::take_ready(&mut lock(&self.state))
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut state = lock(&self.state);
        if let Some(outcome) = Slot::take_ready(&mut state) {
            return Poll::Ready(outcome);
        }
        match &mut *state {
            SlotState::Waiting { waker, .. } => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            // Polled again after it returned Ready: a misuse of the future.
            _ => Poll::Ready(Err(RequestError::Closed)),
        }
    }
}

/// A request on its way: a future of its outcome that needs no particular
/// async runtime (the engine's own threads complete it and wake the task).
/// Dropping it abandons the wait, not the request: one already sent may
/// still run.
#[must_use = "a request's outcome is in the future; await it or call wait()"]
pub struct PendingReply {
    slot: Arc<Slot>,
    client: Option<(Arc<client::Client>, u64)>,
}

impl PendingReply {
    pub(crate) fn new(slot: Arc<Slot>, client: Option<(Arc<client::Client>, u64)>) -> Self {
        PendingReply { slot, client }
    }

    /// Blocks until the outcome comes (the request's own timeout bounds
    /// the wait).
    pub fn wait(self) -> Result<Reply, RequestError> {
        loop {
            // The engine times the request out; this only guards against
            // waiting for ever should its thread be gone.
            let far = Instant::now() + std::time::Duration::from_secs(3600);
            if let Some(outcome) = self.slot.wait(far) {
                return outcome;
            }
        }
    }
}

impl PendingReply {
    /// Waits for the outcome for at most `timeout`; `None` if it has not
    /// come yet (the request goes on).
    pub fn wait_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> Option<Result<Reply, RequestError>> {
        self.slot.wait(Instant::now() + timeout)
    }
}

impl Future for PendingReply {
    type Output = Result<Reply, RequestError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.slot.poll(cx)
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        if let Some((client, id)) = self.client.take() {
            client.abandon(id);
        }
    }
}

/// A connection's request lane: request and reply frames for one peer,
/// written after the connection's heartbeats and core messages.
#[derive(Clone, Debug)]
pub(crate) struct Lane {
    pub(crate) frames: mpsc::Sender<Frame>,
    /// Closes the connection: a peer that lets its lane fill up has stopped
    /// reading, or floods us with requests beyond every cap.
    pub(crate) kill: Arc<Notify>,
    /// The connection's socket, for a request or reply written at once by
    /// the thread that makes it while the connection is idle (plain TCP).
    pub(crate) direct: Option<Arc<crate::mesh::SharedWriter>>,
}

impl Lane {
    /// Sends a request or reply: written on this thread when the connection
    /// is idle, queued otherwise; a full lane closes the connection (whose
    /// requests then end `Uncertain` at the sender) rather than grow.
    pub(crate) fn push(&self, frame: Frame) {
        let frame = match &self.direct {
            Some(direct) => match direct.try_write_now(frame, &self.frames) {
                Ok(()) => return,
                Err(frame) => frame,
            },
            None => frame,
        };
        self.queue(frame);
    }

    /// Queues a frame for the connection's writer (see [`Lane::push`]).
    pub(crate) fn queue(&self, frame: Frame) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.frames.try_send(frame) {
            tracing::warn!("a peer's request lane is full: closing the connection");
            self.kill.notify_one();
        }
    }
}

/// Where a request's answer goes.
pub(crate) enum ReplyTo {
    /// Back to this node's own client (a request for its own shard).
    Local {
        client: Arc<client::Client>,
        id: u64,
    },
    /// Back over the connection it came on.
    Remote {
        lane: Lane,
        id: u64,
        /// The handler's queue: while more work waits there, the reply is
        /// queued for the connection's writer, which sends a burst of
        /// replies in one write, rather than written at once on its own.
        calls: Arc<CallQueue>,
    },
}

impl ReplyTo {
    pub(crate) fn send(self, outcome: ReplyOutcome) {
        match self {
            ReplyTo::Local { client, id } => client.on_local_reply(id, outcome),
            ReplyTo::Remote { lane, id, calls } => {
                let reply = Frame::Reply(ReplyFrame { id, outcome });
                if calls.errands_waiting() {
                    lane.queue(reply);
                } else {
                    lane.push(reply);
                }
            }
        }
    }
}

/// Answers one request, exactly once: at once inside `handle_request`, or
/// later from any thread. Dropped unanswered, it answers that the handler
/// failed.
pub struct Responder {
    answer: Option<(ReplyTo, server::Ticket)>,
    shard: Shard,
    epoch: Epoch,
    max_payload: usize,
}

impl Responder {
    pub(crate) fn new(
        to: ReplyTo,
        ticket: server::Ticket,
        shard: Shard,
        epoch: Epoch,
        max_payload: usize,
    ) -> Responder {
        Responder {
            answer: Some((to, ticket)),
            shard,
            epoch,
            max_payload,
        }
    }

    /// The shard the request is for.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// The epoch of the allocation the handler runs in (what the reply
    /// carries).
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Answers with `payload`. One over the frame limit is answered as a
    /// failure instead, saying so.
    pub fn respond(mut self, payload: impl Into<Vec<u8>>) {
        let payload = payload.into();
        let outcome = if payload.len() > self.max_payload {
            ReplyOutcome::Failed {
                epoch: self.epoch,
                message: format!(
                    "the reply is {} bytes; at most {} fit in a frame",
                    payload.len(),
                    self.max_payload
                ),
            }
        } else {
            ReplyOutcome::Answered {
                epoch: self.epoch,
                payload: payload.into(),
            }
        };
        self.send(outcome);
    }

    /// Answers that the handler failed, with `message`.
    pub fn fail(mut self, message: impl Into<String>) {
        let message = message.into();
        self.send(ReplyOutcome::Failed {
            epoch: self.epoch,
            message,
        });
    }

    fn send(&mut self, outcome: ReplyOutcome) {
        if let Some((to, ticket)) = self.answer.take() {
            to.send(outcome);
            drop(ticket);
        }
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("shard", &self.shard)
            .field("epoch", &self.epoch)
            .field("answered", &self.answer.is_none())
            .finish()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.answer.is_some() {
            self.send(ReplyOutcome::Failed {
                epoch: self.epoch,
                message: "the handler dropped its responder without answering".into(),
            });
        }
    }
}

/// Locks a mutex, using the data of a poisoned one as is (nothing panics
/// while these locks are held).
pub(crate) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    lock(m)
}
