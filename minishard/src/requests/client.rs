//! The sender's half of requests: picks the owner in this node's view,
//! sends on that peer's request lane (or queues for this node's own
//! handler), follows "not the owner" answers to the next owner, waits while
//! no owner is known, and ends every request exactly once: with the reply,
//! or with a typed error at its deadline, when its connection is lost
//! after sending, or when the handle closes.
//!
//! At most once: a request goes to a node again only after that node said
//! it did not run it ("not the owner", or its own handler's queue dropped
//! it unrun). Once sent, a lost connection ends it `Uncertain`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::Notify;

use super::server::{RequestJob, Ticket, View};
use super::{locked, Lane, Outcome, Reply, ReplyTo, RequestError, Slot, Then};
use crate::core::{NodeId, Shard, Snapshot};
use crate::mesh::ConnId;
use crate::runtime::calls::CallQueue;
use crate::wire::request::{Reply as ReplyFrame, ReplyOutcome, Request};
use crate::wire::Frame;

/// After a node answers "not the owner", it is asked again no sooner than
/// this (doubling up to [`RETRY_CAP`]) unless this node's view changes.
const RETRY_START: Duration = Duration::from_millis(2);
const RETRY_CAP: Duration = Duration::from_millis(100);

/// The caps and limits of one handle's requests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub in_flight: usize,
    pub per_peer: usize,
    pub max_payload: usize,
}

enum Place {
    /// No owner to send to yet (or it said "not the owner" and its next
    /// turn has not come).
    Waiting,
    /// Sent to a peer on one connection.
    Sent { peer: NodeId, conn: ConnId },
    /// Queued for (or running in) this node's own handler.
    Local,
}

struct Pending {
    shard: Shard,
    payload: Bytes,
    slot: Arc<Slot>,
    deadline: Instant,
    place: Place,
    /// The owner a "not the owner" answer named, tried first.
    hint: Option<NodeId>,
    /// The node that said "not the owner" last, skipped until `retry_at`.
    refused_by: Option<NodeId>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

#[derive(Default)]
struct Book {
    closed: bool,
    next_id: u64,
    links: HashMap<NodeId, (ConnId, Lane)>,
    pending: HashMap<u64, Pending>,
    waiting: HashSet<u64>,
    sent_to: HashMap<NodeId, usize>,
    /// Deadlines and retry times, with the request they are for.
    timers: BTreeSet<(Instant, u64)>,
    /// When the timer task wakes next (`None`: not before it is told).
    armed: Option<Instant>,
}

/// What routing decided for a request.
enum Route {
    /// Sent, waiting, or ended: nothing more to do.
    Done,
    /// To this node's own handler.
    Local(RequestJob),
    /// To a peer, once the book's lock is released: a frame written on
    /// this thread (sealing 64 KiB takes a while) holds no other requester
    /// up. The request is recorded as sent already, so its reply finds it.
    /// `alone`: no other request of this handle is in flight to that peer.
    Send {
        lane: Lane,
        frame: Frame,
        alone: bool,
    },
}

/// One handle's requests in flight.
pub(crate) struct Client {
    me: NodeId,
    snapshot: Arc<ArcSwap<Snapshot>>,
    calls: Arc<CallQueue>,
    view: View,
    limits: Limits,
    book: Mutex<Book>,
    /// Wakes the timer task when an earlier timer is set.
    timers_changed: Notify,
    /// Itself, for the answers of this node's own handler to find it.
    this: std::sync::Weak<Client>,
}

impl Client {
    pub(crate) fn new(
        me: NodeId,
        snapshot: Arc<ArcSwap<Snapshot>>,
        calls: Arc<CallQueue>,
        limits: Limits,
    ) -> Arc<Client> {
        Arc::new_cyclic(|this| Client {
            this: this.clone(),
            view: View::new(me.clone(), snapshot.clone()),
            me,
            snapshot,
            calls,
            limits,
            book: Mutex::default(),
            timers_changed: Notify::new(),
        })
    }

    /// Starts a request. `blocking`: its issuer will wait on this thread
    /// (so it must not be queued behind a callback running here).
    pub(crate) fn issue(
        &self,
        shard: Shard,
        payload: Vec<u8>,
        timeout: Duration,
        then: Option<Then>,
        blocking: bool,
    ) -> (Arc<Slot>, Option<u64>) {
        let slot = Slot::new(then);
        let fail = |error| {
            slot.complete(Err(error));
            (slot.clone(), None)
        };
        if payload.len() > self.limits.max_payload {
            return fail(RequestError::TooLarge {
                len: payload.len(),
                limit: self.limits.max_payload,
            });
        }
        let shard_count = self.snapshot.load().shard_count;
        if shard_count > 0 && shard >= shard_count {
            return fail(RequestError::NoSuchShard { shard, shard_count });
        }
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(1 << 30));
        let (id, route) = {
            let mut book = locked(&self.book);
            if book.closed {
                drop(book);
                return fail(RequestError::Closed);
            }
            if book.pending.len() >= self.limits.in_flight {
                drop(book);
                return fail(RequestError::Overloaded);
            }
            book.next_id += 1;
            let id = book.next_id;
            book.pending.insert(
                id,
                Pending {
                    shard,
                    payload: payload.into(),
                    slot: slot.clone(),
                    deadline,
                    place: Place::Waiting,
                    hint: None,
                    refused_by: None,
                    retry_at: None,
                    backoff: RETRY_START,
                },
            );
            self.set_timer(&mut book, deadline, id);
            (id, self.route(&mut book, id, now))
        };
        if let Route::Send { lane, frame, alone } = route {
            send(&lane, frame, alone);
        } else if let Route::Local(job) = route {
            if blocking && self.calls.is_callback_thread() {
                self.end(id, Err(RequestError::InsideCallback));
            } else if blocking {
                // The issuer waits anyway: run the handler on its thread if
                // no callback runs or waits, which saves two thread hops.
                if let Some(job) = self.calls.try_run_request_here(job) {
                    self.calls.submit_request(job);
                }
            } else {
                self.calls.submit_request(job);
            }
        }
        (slot, Some(id))
    }

    fn set_timer(&self, book: &mut Book, at: Instant, id: u64) {
        book.timers.insert((at, id));
        // Only a timer before the task's next wake-up wakes it: a steady
        // stream of requests does not wake the engine's thread for each.
        if book.armed.is_none_or(|armed| at < armed) {
            book.armed = Some(at);
            self.timers_changed.notify_one();
        }
    }

    /// Sends request `id` to the owner in view, queues it for this node's
    /// handler, or leaves it waiting.
    fn route(&self, book: &mut Book, id: u64, now: Instant) -> Route {
        let Some(p) = book.pending.get_mut(&id) else {
            return Route::Done;
        };
        let snapshot = self.snapshot.load();
        let in_view = snapshot.owner(p.shard).map(|o| o.node.clone());
        let held_back = |node: &NodeId, p: &Pending| {
            p.refused_by.as_ref() == Some(node) && p.retry_at.is_some_and(|at| now < at)
        };
        let target = p
            .hint
            .take()
            .filter(|n| *n == self.me || book.links.contains_key(n))
            .or(in_view)
            .filter(|n| !held_back(n, p));
        let Some(target) = target else {
            p.place = Place::Waiting;
            book.waiting.insert(id);
            return Route::Done;
        };
        if target == self.me {
            p.place = Place::Local;
            book.waiting.remove(&id);
            let to = ReplyTo::Local {
                client: self.self_arc(),
                id,
            };
            let job = RequestJob::new(
                p.shard,
                p.payload.clone(),
                to,
                Ticket::uncounted(),
                self.view.clone(),
                self.limits.max_payload,
            );
            return Route::Local(job);
        }
        let Some((conn, lane)) = book.links.get(&target) else {
            p.place = Place::Waiting;
            book.waiting.insert(id);
            return Route::Done;
        };
        let sent = book.sent_to.entry(target.clone()).or_insert(0);
        if *sent >= self.limits.per_peer {
            self.end_locked(book, id, Err(RequestError::Overloaded));
            return Route::Done;
        }
        let alone = *sent == 0;
        *sent += 1;
        let frame = Frame::Request(Request {
            id,
            shard: p.shard,
            payload: p.payload.clone(),
        });
        p.place = Place::Sent {
            peer: target,
            conn: *conn,
        };
        let lane = lane.clone();
        book.waiting.remove(&id);
        Route::Send { lane, frame, alone }
    }

    fn self_arc(&self) -> Arc<Client> {
        self.this
            .upgrade()
            .expect("a client is only used through its Arc")
    }

    /// Ends a request with `outcome`, if it is still pending.
    fn end(&self, id: u64, outcome: Outcome) {
        let slot = {
            let mut book = locked(&self.book);
            self.take(&mut book, id)
        };
        if let Some(slot) = slot {
            slot.complete(outcome);
        }
    }

    fn end_locked(&self, book: &mut Book, id: u64, outcome: Outcome) {
        if let Some(slot) = self.take(book, id) {
            slot.complete(outcome);
        }
    }

    /// Removes a pending request and gives its slot.
    fn take(&self, book: &mut Book, id: u64) -> Option<Arc<Slot>> {
        let p = book.pending.remove(&id)?;
        book.waiting.remove(&id);
        book.timers.remove(&(p.deadline, id));
        if let Some(at) = p.retry_at {
            book.timers.remove(&(at, id));
        }
        if let Place::Sent { peer, .. } = &p.place {
            if let Some(n) = book.sent_to.get_mut(peer) {
                *n -= 1;
                if *n == 0 {
                    book.sent_to.remove(peer);
                }
            }
        }
        Some(p.slot)
    }

    /// A "not the owner" answer from `from` (`None`: this node's own
    /// handler): try the owner it names, or wait.
    fn refused(
        &self,
        book: &mut Book,
        id: u64,
        from: NodeId,
        owner: Option<NodeId>,
        now: Instant,
    ) -> Route {
        let Some(p) = book.pending.get_mut(&id) else {
            return Route::Done;
        };
        if let Place::Sent { peer, .. } = std::mem::replace(&mut p.place, Place::Waiting) {
            if let Some(n) = book.sent_to.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    book.sent_to.remove(&peer);
                }
            }
        }
        let Some(p) = book.pending.get_mut(&id) else {
            return Route::Done;
        };
        p.hint = owner.filter(|n| *n != from);
        if let Some(at) = p.retry_at.take() {
            book.timers.remove(&(at, id));
        }
        let at = now + p.backoff;
        p.backoff = (p.backoff * 2).min(RETRY_CAP);
        p.retry_at = Some(at);
        p.refused_by = Some(from);
        self.set_timer(book, at, id);
        self.route(book, id, now)
    }

    fn run_routes(&self, routes: Vec<Route>) {
        for route in routes {
            match route {
                Route::Done => {}
                Route::Local(job) => self.calls.submit_request(job),
                Route::Send { lane, frame, alone } => send(&lane, frame, alone),
            }
        }
    }

    /// A peer's reply, from its connection's reader.
    pub(crate) fn on_reply(&self, from: &NodeId, conn: ConnId, reply: ReplyFrame) {
        let ReplyFrame { id, outcome } = reply;
        let route = {
            let mut book = locked(&self.book);
            let Some(p) = book.pending.get(&id) else {
                return; // timed out, abandoned, or not ours
            };
            match &p.place {
                Place::Sent { peer, conn: c } if peer == from && *c == conn => {}
                _ => return,
            }
            match outcome {
                ReplyOutcome::NotOwner { owner } => self.refused(
                    &mut book,
                    id,
                    from.clone(),
                    owner.map(|(n, _)| n),
                    Instant::now(),
                ),
                other => {
                    let result = finished(other, from);
                    self.end_locked(&mut book, id, result);
                    Route::Done
                }
            }
        };
        self.run_routes(vec![route]);
    }

    /// This node's own handler answered (or its job was dropped unrun).
    pub(crate) fn on_local_reply(&self, id: u64, outcome: ReplyOutcome) {
        let route = {
            let mut book = locked(&self.book);
            let Some(p) = book.pending.get(&id) else {
                return;
            };
            if !matches!(p.place, Place::Local) {
                return;
            }
            match outcome {
                ReplyOutcome::NotOwner { owner } => self.refused(
                    &mut book,
                    id,
                    self.me.clone(),
                    owner.map(|(n, _)| n),
                    Instant::now(),
                ),
                other => {
                    let result = finished(other, &self.me);
                    self.end_locked(&mut book, id, result);
                    Route::Done
                }
            }
        };
        self.run_routes(vec![route]);
    }

    /// The caller no longer waits for request `id`.
    pub(crate) fn abandon(&self, id: u64) {
        let mut book = locked(&self.book);
        let _ = self.take(&mut book, id);
    }

    /// The blocking issuer's own deadline passed.
    pub(crate) fn time_out(&self, id: u64) {
        self.end(id, Err(RequestError::Timeout));
    }

    /// A connection to `peer` came up: its lane carries requests from now
    /// on. One it replaced takes its requests with it (`Uncertain`).
    pub(crate) fn link_up(&self, peer: NodeId, conn: ConnId, lane: Lane) {
        let routes = {
            let mut book = locked(&self.book);
            if let Some((old, _)) = book.links.insert(peer.clone(), (conn, lane)) {
                if old != conn {
                    self.lost_locked(&mut book, &peer, old);
                }
            }
            self.retry_waiting(&mut book)
        };
        self.run_routes(routes);
    }

    /// The live connection to `peer` ended: what was sent on it is lost.
    pub(crate) fn link_down(&self, peer: &NodeId) {
        let mut book = locked(&self.book);
        if let Some((conn, _)) = book.links.remove(peer) {
            self.lost_locked(&mut book, peer, conn);
        }
    }

    fn lost_locked(&self, book: &mut Book, peer: &NodeId, conn: ConnId) {
        let lost: Vec<u64> = book
            .pending
            .iter()
            .filter(|(_, p)| matches!(&p.place, Place::Sent { peer: n, conn: c } if n == peer && *c == conn))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.end_locked(book, id, Err(RequestError::Uncertain));
        }
    }

    fn retry_waiting(&self, book: &mut Book) -> Vec<Route> {
        let now = Instant::now();
        let waiting: Vec<u64> = book.waiting.iter().copied().collect();
        waiting
            .into_iter()
            .map(|id| self.route(book, id, now))
            .collect()
    }

    /// The snapshot changed: requests waiting for an owner look again.
    pub(crate) fn on_view_changed(&self) {
        let routes = {
            let mut book = locked(&self.book);
            if book.waiting.is_empty() {
                return;
            }
            for id in book.waiting.clone() {
                // A new view is worth asking a refusing node again.
                if let Some(p) = book.pending.get_mut(&id) {
                    p.refused_by = None;
                }
            }
            self.retry_waiting(&mut book)
        };
        self.run_routes(routes);
    }

    /// Ends the requests whose deadline passed and retries those whose
    /// turn came; returns the next timer.
    fn fire(&self, now: Instant) -> Option<Instant> {
        let mut routes = Vec::new();
        let next = {
            let mut book = locked(&self.book);
            while let Some(&(at, id)) = book.timers.first() {
                if at > now {
                    break;
                }
                book.timers.pop_first();
                let Some(p) = book.pending.get_mut(&id) else {
                    continue;
                };
                if p.deadline <= now {
                    let outcome = Err(RequestError::Timeout);
                    self.end_locked(&mut book, id, outcome);
                } else if p.retry_at.is_some_and(|r| r <= now) {
                    p.retry_at = None;
                    if matches!(p.place, Place::Waiting) {
                        routes.push(self.route(&mut book, id, now));
                    }
                }
            }
            let next = book.timers.first().map(|(at, _)| *at);
            book.armed = next;
            next
        };
        self.run_routes(routes);
        next
    }

    /// Times requests out and retries them, on the engine's runtime, until
    /// the engine stops.
    pub(crate) async fn run_timers(self: Arc<Self>) {
        loop {
            let next = self.fire(Instant::now());
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.timers_changed.notified() => {}
            }
        }
    }

    /// The handle stops: every request still pending ends, `Uncertain` if
    /// it was sent (or queued for this node's handler), `Closed` if not.
    pub(crate) fn close(&self) {
        let ended: Vec<(Arc<Slot>, RequestError)> = {
            let mut book = locked(&self.book);
            book.closed = true;
            book.links.clear();
            let ids: Vec<u64> = book.pending.keys().copied().collect();
            ids.into_iter()
                .filter_map(|id| {
                    let sent = book
                        .pending
                        .get(&id)
                        .is_some_and(|p| !matches!(p.place, Place::Waiting));
                    let error = if sent {
                        RequestError::Uncertain
                    } else {
                        RequestError::Closed
                    };
                    self.take(&mut book, id).map(|slot| (slot, error))
                })
                .collect()
        };
        for (slot, error) in ended {
            slot.complete(Err(error));
        }
    }

    /// Requests in flight now (for tests and stats).
    pub(crate) fn in_flight(&self) -> usize {
        locked(&self.book).pending.len()
    }
}

/// A lone request is written at once, on this thread, if its connection
/// is idle: its round trip is what the caller waits for. One among others
/// in flight to the same peer goes to the connection's writer, which sends
/// those that pile up in one write (and the peer reads them in one wake-up):
/// with many requesters, batching is worth more than the hop it costs.
fn send(lane: &Lane, frame: Frame, alone: bool) {
    if alone {
        lane.push(frame);
    } else {
        lane.queue(frame);
    }
}

fn finished(outcome: ReplyOutcome, from: &NodeId) -> Outcome {
    match outcome {
        ReplyOutcome::Answered { epoch, payload } => Ok(Reply {
            payload: payload.into(),
            node: from.clone(),
            epoch,
        }),
        ReplyOutcome::Failed { message, .. } => Err(RequestError::HandlerFailed(message)),
        ReplyOutcome::Overloaded => Err(RequestError::Overloaded),
        ReplyOutcome::NotOwner { .. } => unreachable!("handled by the caller"),
    }
}
