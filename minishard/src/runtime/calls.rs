//! Running the application's callbacks: one at a time, in order, never on
//! the engine's network thread, never while an engine lock is held.
//!
//! The core asks for a callback with an action; the queue hands it to the
//! application — on a callback thread of the handle's own, or inside
//! `dispatch` on the host's thread — and sends the outcome back to the core.
//! Panics are caught and become failures, so an application bug never stops
//! the engine (docs/design.md 3).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, ThreadId};

use tokio::sync::mpsc::UnboundedSender;

use crate::api::Callbacks;
use crate::config::Dispatch;
use crate::core::ReleaseReason;
use crate::core::{Call, CallId, Epoch, NodeId, Outcome};
use crate::requests::handoff::{HandOffs, Outgoing};
use crate::requests::server::RequestJob;

/// Something that turns a [`Call`] into an [`Outcome`]: the application.
pub(crate) trait Runner: Send {
    /// Runs one callback.
    fn run(&mut self, call: &Call) -> Outcome;
    /// Runs a request's handler if the application holds the request's
    /// shard now; otherwise drops the job, which answers "not the owner".
    fn request(&mut self, job: RequestJob);
    /// `nodes`, at join, with the raw answer for a precise error.
    fn nodes_at_join(&mut self) -> Result<Vec<NodeId>, String>;
    /// `shard_count`, at join.
    fn shard_count(&mut self) -> Result<u32, String>;
}

/// Adapts an application's [`Callbacks`] to a [`Runner`], keeping the state
/// of the current allocation.
pub(crate) struct AppRunner<C: Callbacks> {
    cluster: String,
    app: C,
    state: Option<C::State>,
    shard: Option<u32>,
    /// The epoch of the current allocation, as its callbacks last gave it.
    epoch: Option<Epoch>,
    hand_offs: Arc<HandOffs>,
}

impl<C: Callbacks> AppRunner<C> {
    pub(crate) fn new(cluster: String, app: C, hand_offs: Arc<HandOffs>) -> AppRunner<C> {
        AppRunner {
            cluster,
            app,
            state: None,
            shard: None,
            epoch: None,
            hand_offs,
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => format!("panicked: {s}"),
        Err(payload) => match payload.downcast::<&str>() {
            Ok(s) => format!("panicked: {s}"),
            Err(_) => "panicked".into(),
        },
    }
}

fn parse_members(list: Vec<String>) -> Result<Vec<NodeId>, String> {
    list.iter()
        .map(|s| NodeId::parse(s).map_err(|e| format!("returned {e}")))
        .collect()
}

impl<C: Callbacks> Runner for AppRunner<C> {
    fn run(&mut self, call: &Call) -> Outcome {
        let cluster = self.cluster.clone();
        let result = catch_unwind(AssertUnwindSafe(|| self.run_inner(&cluster, call)));
        let outcome = result.unwrap_or_else(|payload| Outcome::Failed(panic_message(payload)));
        if let Outcome::Failed(reason) = &outcome {
            let shard = match call {
                Call::Allocated { shard, .. }
                | Call::Score { shard, .. }
                | Call::Prolonged { shard, .. }
                | Call::Deallocated { shard, .. } => Some(*shard),
                _ => self.shard,
            };
            // One record per failure, its fields plain values (a shard is a
            // number, or absent), so a log bridge can hand them on as is.
            match shard {
                Some(shard) => tracing::warn!(
                    callback = call.name(),
                    cluster = %self.cluster,
                    shard,
                    %reason,
                    callback_failure = true,
                    "callback failed"
                ),
                None => tracing::warn!(
                    callback = call.name(),
                    cluster = %self.cluster,
                    %reason,
                    callback_failure = true,
                    "callback failed"
                ),
            }
        }
        outcome
    }

    fn request(&mut self, job: RequestJob) {
        // Inside the allocation exactly: `state` is set once `allocated`
        // returned and taken before `deallocated` starts.
        let (Some(shard), Some(epoch), Some(state)) = (self.shard, self.epoch, self.state.as_mut())
        else {
            return drop(job);
        };
        if shard != job.shard() {
            return drop(job);
        }
        let (payload, responder) = job.start(epoch);
        let app = &mut self.app;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| {
            app.handle_request(state, payload, responder)
        })) {
            // The responder went with the unwinding: it answered that the
            // handler dropped it.
            tracing::warn!(
                callback = "handle_request",
                cluster = %self.cluster,
                shard,
                reason = %panic_message(payload),
                callback_failure = true,
                "callback failed"
            );
        }
    }

    fn nodes_at_join(&mut self) -> Result<Vec<NodeId>, String> {
        let cluster = self.cluster.clone();
        match catch_unwind(AssertUnwindSafe(|| self.app.nodes(&cluster))) {
            Ok(Ok(list)) => parse_members(list),
            Ok(Err(e)) => Err(e.0),
            Err(payload) => Err(panic_message(payload)),
        }
    }

    fn shard_count(&mut self) -> Result<u32, String> {
        let cluster = self.cluster.clone();
        match catch_unwind(AssertUnwindSafe(|| self.app.shard_count(&cluster))) {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(e.0),
            Err(payload) => Err(panic_message(payload)),
        }
    }
}

impl<C: Callbacks> AppRunner<C> {
    fn run_inner(&mut self, cluster: &str, call: &Call) -> Outcome {
        match call {
            Call::Nodes => match self.app.nodes(cluster) {
                Ok(list) => parse_members(list).map_or_else(Outcome::Failed, Outcome::Members),
                Err(e) => Outcome::Failed(e.0),
            },
            Call::Allocated { shard, epoch } => {
                self.shard = Some(*shard);
                self.epoch = Some(*epoch);
                let hand_off = self.hand_offs.for_allocation(*shard);
                match self
                    .app
                    .allocated_with_hand_off(cluster, *shard, *epoch, hand_off)
                {
                    Ok(state) => {
                        self.state = Some(state);
                        Outcome::Done
                    }
                    Err(e) => {
                        self.shard = None;
                        Outcome::Failed(e.0)
                    }
                }
            }
            Call::Score { epoch, .. } => match self.state.as_mut() {
                Some(state) => {
                    self.epoch = Some(*epoch);
                    self.app
                        .score(state)
                        .map_or_else(|e| Outcome::Failed(e.0), Outcome::Score)
                }
                None => Outcome::Failed("score asked with no allocation".into()),
            },
            Call::Prolonged {
                shard,
                loser,
                epoch,
                won,
            } => match self.state.as_mut() {
                Some(state) => {
                    self.epoch = Some(*epoch);
                    // A loser that yielded says what it hands off, or that
                    // it has nothing; one only outlived hands off nothing.
                    let hand_off = (*won && self.app.takes_hand_offs())
                        .then(|| self.hand_offs.loser_hand_off(*shard, loser))
                        .flatten();
                    self.app
                        .prolonged_with_hand_off(loser, state, *epoch, hand_off)
                        .map_or_else(|e| Outcome::Failed(e.0), |()| Outcome::Done)
                }
                None => Outcome::Failed("prolonged asked with no allocation".into()),
            },
            Call::Deallocated {
                shard,
                epoch,
                winner,
                reason,
            } => {
                self.shard = None;
                self.epoch = None;
                match self.state.take() {
                    Some(state) => {
                        let data =
                            self.app
                                .deallocated_with_hand_off(winner.as_ref(), *reason, state);
                        // Queued before the outcome goes back, so the engine
                        // sends it ahead of the record that frees the shard.
                        let tell_winner = *reason == ReleaseReason::LostConflict;
                        if tell_winner || data.is_some() {
                            self.hand_offs.released(Outgoing {
                                shard: *shard,
                                epoch: *epoch,
                                reason: *reason,
                                winner: winner.clone(),
                                data,
                            });
                        }
                        Outcome::Done
                    }
                    None => Outcome::Failed("deallocated asked with no allocation".into()),
                }
            }
            Call::StatusChanged { old, new } => {
                self.app.status_changed(cluster, *old, *new);
                Outcome::Done
            }
        }
    }
}

/// Work for the callback thread that does not come from the core.
pub(crate) enum Errand {
    /// A request for this node's handler.
    Request(RequestJob),
    /// A request's outcome for a function the application gave.
    Completion(Box<dyn FnOnce() + Send>),
}

struct Queue {
    /// The core's callbacks, which go first: a flood of requests must not
    /// make a `score` late or hold back `deallocated`.
    jobs: VecDeque<(CallId, Call)>,
    errands: VecDeque<Errand>,
    closed: bool,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.errands.is_empty()
    }

    fn pop(&mut self) -> Option<Job> {
        match self.jobs.pop_front() {
            Some((id, call)) => Some(Job::Core(id, call)),
            None => self.errands.pop_front().map(Job::Errand),
        }
    }
}

enum Job {
    Core(CallId, Call),
    Errand(Errand),
}

/// The callbacks of one handle, waiting to run.
pub(crate) struct CallQueue {
    queue: Mutex<Queue>,
    ready: Condvar,
    runner: Mutex<Box<dyn Runner>>,
    results: UnboundedSender<(CallId, Outcome)>,
    dispatch: Dispatch,
    /// Written to when callbacks are pending in host mode; the host polls
    /// the other end.
    wake_writer: Mutex<UnixStream>,
    wake_reader: UnixStream,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: Mutex<Option<ThreadId>>,
    /// The thread running a callback right now (host dispatch runs them on
    /// whichever thread calls `dispatch`).
    running_on: Mutex<Option<ThreadId>>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A callback that panicked was caught inside the lock; the data it
    // guards is still consistent, so a poisoned lock is used as is.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CallQueue {
    pub(crate) fn new(
        runner: Box<dyn Runner>,
        results: UnboundedSender<(CallId, Outcome)>,
        dispatch: Dispatch,
    ) -> std::io::Result<Arc<CallQueue>> {
        let (wake_writer, wake_reader) = UnixStream::pair()?;
        wake_reader.set_nonblocking(true)?;
        wake_writer.set_nonblocking(true)?;
        Ok(Arc::new(CallQueue {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                errands: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            runner: Mutex::new(runner),
            results,
            dispatch,
            wake_writer: Mutex::new(wake_writer),
            wake_reader,
            thread: Mutex::new(None),
            thread_id: Mutex::new(None),
            running_on: Mutex::new(None),
        }))
    }

    /// Starts the callback thread (thread dispatch only). It runs inside
    /// the caller's current span, as the engine's thread does, so what it
    /// logs is attributed like the rest of the join.
    pub(crate) fn start(self: &Arc<Self>, cluster: &str) -> std::io::Result<()> {
        if self.dispatch != Dispatch::Thread {
            return Ok(());
        }
        let queue = self.clone();
        let span = tracing::Span::current();
        let handle = thread::Builder::new()
            .name(format!("minishard-cb-{cluster}"))
            .spawn(move || {
                let _entered = span.enter();
                while let Some(job) = queue.next_blocking() {
                    queue.run_job(job);
                }
            })?;
        *lock(&self.thread_id) = Some(handle.thread().id());
        *lock(&self.thread) = Some(handle);
        Ok(())
    }

    /// Runs the join-time callbacks, `nodes` then `shard_count`: with
    /// thread dispatch on a thread that is not the caller's, as every
    /// callback; with host dispatch on the caller's thread, as every
    /// callback too, since a single-threaded host (Node.js, a libuv or
    /// asyncio loop) can run them on no other thread, least of all while it
    /// waits here for the join.
    pub(crate) fn at_join(&self) -> Result<(Vec<NodeId>, u32), (&'static str, String)> {
        let ask = || {
            let mut runner = lock(&self.runner);
            let members = runner.nodes_at_join().map_err(|e| ("nodes", e))?;
            let shards = runner.shard_count().map_err(|e| ("shard_count", e))?;
            Ok((members, shards))
        };
        match self.dispatch {
            Dispatch::Host => ask(),
            Dispatch::Thread => thread::scope(|scope| {
                scope
                    .spawn(ask)
                    .join()
                    .unwrap_or_else(|_| Err(("nodes", "panicked".into())))
            }),
        }
    }

    /// Queues a callback.
    pub(crate) fn submit(&self, id: CallId, call: Call) {
        let mut queue = lock(&self.queue);
        queue.jobs.push_back((id, call));
        drop(queue);
        self.wake();
    }

    fn wake(&self) {
        self.ready.notify_one();
        if self.dispatch == Dispatch::Host {
            // A full pipe already says "pending"; nothing more to say.
            let _ = lock(&self.wake_writer).write(&[1]);
        }
    }

    /// Queues a request for the handler, after the core's callbacks.
    pub(crate) fn submit_request(&self, job: RequestJob) {
        self.submit_errand(Errand::Request(job));
    }

    /// Runs `f` where callbacks run, after those queued. Once the queue has
    /// closed, runs it here and now: an outcome is never lost.
    pub(crate) fn submit_completion(&self, f: Box<dyn FnOnce() + Send>) {
        self.submit_errand(Errand::Completion(f));
    }

    fn submit_errand(&self, errand: Errand) {
        let mut queue = lock(&self.queue);
        if queue.closed {
            drop(queue);
            return self.run_errand_here(errand);
        }
        queue.errands.push_back(errand);
        drop(queue);
        self.wake();
    }

    fn run_errand_here(&self, errand: Errand) {
        match errand {
            // Nobody will run it: dropped, it answers "not the owner".
            Errand::Request(job) => drop(job),
            Errand::Completion(f) => f(),
        }
    }

    /// Runs a request's handler on the calling thread, if nothing else is
    /// running or waiting to run (thread dispatch only): one at a time with
    /// the other callbacks still, without waking the callback thread twice.
    /// Gives the job back otherwise.
    pub(crate) fn try_run_request_here(&self, job: RequestJob) -> Option<RequestJob> {
        if self.dispatch != Dispatch::Thread {
            return Some(job);
        }
        {
            let queue = lock(&self.queue);
            if !queue.is_empty() || queue.closed {
                return Some(job);
            }
        }
        let Ok(mut runner) = self.runner.try_lock() else {
            return Some(job);
        };
        *lock(&self.running_on) = Some(thread::current().id());
        runner.request(job);
        *lock(&self.running_on) = None;
        None
    }

    /// Whether more work waits for the callback thread now: requests for
    /// the handler, or completions.
    pub(crate) fn errands_waiting(&self) -> bool {
        !lock(&self.queue).errands.is_empty()
    }

    /// Answers every request still waiting for the handler "not the owner"
    /// (the node is leaving); completions stay.
    pub(crate) fn drop_requests(&self) {
        let dropped: VecDeque<Errand> = {
            let mut queue = lock(&self.queue);
            let (requests, others) = std::mem::take(&mut queue.errands)
                .into_iter()
                .partition(|e| matches!(e, Errand::Request(_)));
            queue.errands = others;
            requests
        };
        drop(dropped);
    }

    fn next_blocking(&self) -> Option<Job> {
        let mut queue = lock(&self.queue);
        loop {
            if let Some(job) = queue.pop() {
                return Some(job);
            }
            if queue.closed {
                return None;
            }
            queue = self.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn run_job(&self, job: Job) {
        match job {
            Job::Core(id, call) => self.run_one(id, &call),
            Job::Errand(Errand::Request(request)) => {
                let mut runner = lock(&self.runner);
                *lock(&self.running_on) = Some(thread::current().id());
                runner.request(request);
                *lock(&self.running_on) = None;
            }
            Job::Errand(Errand::Completion(f)) => {
                // Not a callback of the engine's: it holds no runner, so it
                // may wait for callbacks (e.g. make a blocking request).
                if catch_unwind(AssertUnwindSafe(f)).is_err() {
                    tracing::warn!("a request's completion function panicked");
                }
            }
        }
    }

    fn run_one(&self, id: CallId, call: &Call) {
        let mut runner = lock(&self.runner);
        *lock(&self.running_on) = Some(thread::current().id());
        let outcome = runner.run(call);
        *lock(&self.running_on) = None;
        drop(runner);
        // The engine may be gone after a leave; then nobody needs the outcome.
        let _ = self.results.send((id, outcome));
        self.ready.notify_all();
    }

    /// Host dispatch: runs up to `max` pending callbacks on this thread.
    pub(crate) fn dispatch(&self, max: usize) -> usize {
        let mut ran = 0;
        while ran < max {
            let job = lock(&self.queue).pop();
            let Some(job) = job else { break };
            self.run_job(job);
            ran += 1;
        }
        if lock(&self.queue).is_empty() {
            let mut sink = [0u8; 64];
            while matches!((&self.wake_reader).read(&mut sink), Ok(n) if n > 0) {}
        }
        ran
    }

    /// The descriptor that is readable while callbacks wait (host dispatch).
    pub(crate) fn wake_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.wake_reader.as_raw_fd()
    }

    pub(crate) fn dispatch_mode(&self) -> Dispatch {
        self.dispatch
    }

    /// Whether the calling thread is running one of this queue's callbacks
    /// (or is its callback thread): it must not wait for callbacks.
    pub(crate) fn is_callback_thread(&self) -> bool {
        let me = Some(thread::current().id());
        *lock(&self.thread_id) == me || *lock(&self.running_on) == me
    }

    /// Drops every callback not yet started (the node crashed: its
    /// application hears nothing more).
    pub(crate) fn abandon(&self) {
        let unrun: VecDeque<Errand> = {
            let mut queue = lock(&self.queue);
            queue.jobs.clear();
            // Requests go unrun; the outcomes of this node's own requests
            // are still delivered.
            let (completions, requests) = std::mem::take(&mut queue.errands)
                .into_iter()
                .partition(|e| matches!(e, Errand::Completion(_)));
            queue.errands = completions;
            requests
        };
        // Dropped outside the lock: a dropped request answers its sender,
        // which may queue again.
        drop(unrun);
    }

    /// Whether anything waits to run (host dispatch).
    pub(crate) fn has_pending(&self) -> bool {
        !lock(&self.queue).is_empty()
    }

    /// Stops taking callbacks once the queued ones have run, and waits for
    /// the callback thread to end.
    pub(crate) fn close(&self) {
        lock(&self.queue).closed = true;
        self.ready.notify_all();
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
    }
}
