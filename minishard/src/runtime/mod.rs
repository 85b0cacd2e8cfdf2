//! The runtime: an internal tokio runtime on a thread of its own that feeds
//! the core its events and carries out its actions, and the callback queue
//! that runs the application's callbacks off that thread.
//!
//! The user needs no async runtime. Lookups read the snapshot the core last
//! published (an `ArcSwap`: no lock, no syscall); waits sleep on a condition
//! variable the runtime signals on every new snapshot.

pub(crate) mod calls;

mod logs;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::api::{Callbacks, Stats, Status};
use crate::config::{listen_port, Config, Dispatch};
use crate::core::{
    self, Action, CallId, Core, CoreConfig, CoreCounters, Event, NodeId, Outcome, Role, Snapshot,
};
use crate::error::Error;
#[cfg(feature = "testing")]
use crate::mesh::faults::Faults;
use crate::mesh::{
    ConnEvent, ConnId, Mesh, MeshStats, Outgoing, RequestSink, Settings, StatusSource, Tls,
};
use crate::requests::client::{Client, Limits};
use crate::requests::handoff::{self, HandOffs};
use crate::requests::server::{Server, View};
use crate::requests::{Lane, PendingReply, Reply, RequestError, FRAME_OVERHEAD};
use crate::wire::handshake::Identity;
use crate::wire::request::{Reply as ReplyFrame, Request};
use crate::wire::{Frame, MAX_CLUSTER_NAME_LEN};
use calls::{AppRunner, CallQueue};
use logs::LogQueue;

enum Command {
    Leave,
    Shutdown,
    /// Ask a connected peer for its own status; its JSON goes to `answer`
    /// (dropped unanswered if the peer is not connected).
    AskStatus {
        peer: NodeId,
        answer: std::sync::mpsc::SyncSender<String>,
    },
    #[cfg(feature = "testing")]
    Crash,
}

/// Wakes waiters on every new snapshot.
#[derive(Default)]
struct Changes {
    generation: Mutex<u64>,
    signal: Condvar,
}

impl Changes {
    fn notify(&self) {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.signal.notify_all();
    }
}

/// Both halves of this node's requests, where connections hand them.
pub(crate) struct Requests {
    client: Arc<Client>,
    server: Server,
    hand_offs: Arc<HandOffs>,
}

impl RequestSink for Requests {
    fn request(&self, from: &NodeId, lane: &Lane, request: Request) {
        self.server.incoming(from, lane, request);
    }

    fn reply(&self, from: &NodeId, conn: ConnId, reply: ReplyFrame) {
        self.client.on_reply(from, conn, reply);
    }

    fn hand_off(&self, from: &NodeId, frame: crate::wire::request::HandOff) {
        self.hand_offs.on_frame(from, frame);
    }
}

/// One joined cluster: the engine behind a [`crate::Cluster`].
pub(crate) struct Engine {
    name: String,
    me: NodeId,
    snapshot: Arc<ArcSwap<Snapshot>>,
    changes: Arc<Changes>,
    calls: Arc<CallQueue>,
    commands: mpsc::UnboundedSender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stopped: Arc<AtomicBool>,
    left: AtomicBool,
    /// Held for the whole of a leave, so a second caller returns only once
    /// the first has finished.
    leaving: Mutex<()>,
    #[cfg(feature = "testing")]
    faults: Arc<Faults>,
    mesh_stats: Arc<MeshStats>,
    requests: Arc<Requests>,
    logs: Arc<LogQueue>,
}

impl Engine {
    pub(crate) fn start<C: Callbacks>(
        name: &str,
        callbacks: C,
        config: Config,
    ) -> Result<Engine, Error> {
        config.validate()?;
        if name.is_empty() {
            return Err(Error::Config("the cluster name is empty".into()));
        }
        if name.len() > MAX_CLUSTER_NAME_LEN {
            return Err(Error::Config(format!(
                "the cluster name is {} bytes long; at most {MAX_CLUSTER_NAME_LEN} are allowed",
                name.len()
            )));
        }
        let tls = config.tls.as_ref().map(Tls::load).transpose()?;
        let (results, results_rx) = mpsc::unbounded_channel();
        // Kept for anyone to take until a failover has surely ended.
        let hand_offs = Arc::new(HandOffs::new(
            config.hand_off_wait,
            config.hand_off_limit as u64,
            2 * config.timings.node_grace + config.hand_off_wait,
        ));
        let runner = Box::new(AppRunner::new(
            name.to_owned(),
            callbacks,
            hand_offs.clone(),
        ));
        let calls = CallQueue::new(runner, results, config.dispatch)
            .map_err(|e| Error::Io(format!("cannot create the callback queue: {e}")))?;
        let (members, shard_count) = calls
            .at_join()
            .map_err(|(callback, message)| Error::Callback { callback, message })?;

        let listener = std::net::TcpListener::bind(&config.listen)
            .map_err(|e| Error::Io(format!("cannot listen on {}: {e}", config.listen)))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Io(format!("cannot listen on {}: {e}", config.listen)))?;
        let advertised = match (&config.advertise, listen_port(&config.listen)?) {
            (Some(address), _) => address.clone(),
            (None, 0) => listener
                .local_addr()
                .map_err(|e| Error::Io(e.to_string()))?
                .to_string(),
            (None, _) => config.listen.clone(),
        };
        let me = NodeId::parse(&advertised)?;
        let role = if config.observer {
            Role::Observer
        } else {
            Role::Member
        };
        let core_config = CoreConfig {
            me: me.clone(),
            role,
            members,
            shard_count,
            timings: config.timings,
            metadata: Arc::new(config.metadata.clone()),
            quorum: config.quorum,
        };
        core_config.validate()?;

        let incarnation: u64 = rand::random();
        let base = std::time::Instant::now();
        let core = Core::new(core_config, incarnation, core::Instant::ZERO);
        let snapshot = Arc::new(ArcSwap::new(
            core.snapshot()
                .cloned()
                .expect("a new core publishes a snapshot"),
        ));
        let changes = Arc::new(Changes::default());
        #[cfg(feature = "testing")]
        let faults = Faults::new();
        let mesh_stats = Arc::new(MeshStats::default());
        let stopped = Arc::new(AtomicBool::new(false));
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let span = tracing::info_span!("minishard", cluster = %name, node = %me);
        let logs = Arc::new(
            LogQueue::start(name, span.clone(), config.notice_hook.clone())
                .map_err(|e| Error::Io(format!("cannot start the log thread: {e}")))?,
        );
        let status_report = {
            let (name, me) = (name.to_owned(), me.clone());
            let (snapshot, mesh_stats) = (snapshot.clone(), mesh_stats.clone());
            let logs = logs.clone();
            StatusSource(Arc::new(move || {
                let s = snapshot.load();
                status_json(
                    Status::of(&name, &me, &s),
                    stats_of(s.counters, &mesh_stats, logs.dropped()),
                )
            }))
        };
        let max_payload = config.frame_limit - FRAME_OVERHEAD;
        let requests = Arc::new(Requests {
            client: Client::new(
                me.clone(),
                snapshot.clone(),
                calls.clone(),
                Limits {
                    in_flight: config.max_requests_in_flight,
                    per_peer: config.max_requests_per_peer,
                    max_payload,
                },
            ),
            server: Server::new(
                View::new(me.clone(), snapshot.clone()),
                calls.clone(),
                config.max_requests_per_peer,
                config.max_requests_in_flight,
                max_payload,
            ),
            hand_offs,
        });
        let settings = Settings {
            identity: Identity {
                cluster: name.to_owned(),
                node: me.clone(),
                incarnation,
                role,
                cookie: config.cookie.clone().into(),
            },
            frame_limit: config.frame_limit,
            heartbeat_interval: config.timings.heartbeat_interval,
            heartbeat_timeout: config.timings.heartbeat_timeout,
            handshake_timeout: config.handshake_timeout,
            send_queue: config.send_queue,
            // Room for the requests this node sends to the peer and the
            // answers to those the peer sends, each within its cap.
            request_lane: 2 * config.max_requests_per_peer + 64,
            tls,
            status_report,
            source: listener
                .local_addr()
                .ok()
                .map(|address| address.ip())
                .filter(|ip| !ip.is_unspecified()),
        };
        let driver = Driver {
            core,
            base,
            snapshot: snapshot.clone(),
            changes: changes.clone(),
            calls: calls.clone(),
            logs: logs.clone(),
            grace: config.timings.heartbeat_timeout,
            refusal_log: RefusalLog::default(),
            asking: HashMap::new(),
            requests: requests.clone(),
            observer: config.observer,
            dialled: Arc::from(Vec::new()),
            chunk: handoff::chunk_size(config.frame_limit),
            hand_off_wait: config.hand_off_wait,
            streams: Vec::new(),
            deferred: Vec::new(),
            encoded: LastEncoded::default(),
        };
        let mesh_parts = MeshParts {
            listener,
            settings,
            max_handshakes: config.max_handshakes,
            max_per_source: config.max_handshakes_per_source,
            #[cfg(feature = "testing")]
            faults: faults.clone(),
            stats: mesh_stats.clone(),
        };
        calls
            .start(name)
            .map_err(|e| Error::Io(format!("cannot start the callback thread: {e}")))?;
        let thread_stopped = stopped.clone();
        let offload = logs.offload();
        let thread = std::thread::Builder::new()
            .name(format!("minishard-{name}"))
            .spawn(move || {
                // Lines logged on this thread go through the log queue.
                let _default = tracing::dispatcher::set_default(&offload);
                let _entered = span.enter();
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        runtime.block_on(driver.run(mesh_parts, results_rx, commands_rx))
                    }
                    Err(error) => tracing::error!(%error, "cannot start the engine's runtime"),
                }
                thread_stopped.store(true, Ordering::Release);
            })
            .map_err(|e| {
                calls.close();
                logs.finish();
                Error::Io(format!("cannot start the engine thread: {e}"))
            })?;
        tracing::info!(cluster = %name, node = %me, shard_count, "joined");
        Ok(Engine {
            name: name.to_owned(),
            me,
            snapshot,
            changes,
            calls,
            commands,
            thread: Mutex::new(Some(thread)),
            stopped,
            left: AtomicBool::new(false),
            leaving: Mutex::new(()),
            #[cfg(feature = "testing")]
            faults,
            mesh_stats,
            requests,
            logs,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn me(&self) -> &NodeId {
        &self.me
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub(crate) fn with_snapshot<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        f(&self.snapshot.load())
    }

    #[cfg(feature = "testing")]
    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    pub(crate) fn stats(&self) -> Stats {
        stats_of(
            self.snapshot.load().counters,
            &self.mesh_stats,
            self.logs.dropped(),
        )
    }

    /// Asks the connected node `peer` for its own status (the JSON object of
    /// [`status_json`]), over the mesh, and waits for at most `timeout`.
    pub(crate) fn ask_status(&self, peer: &NodeId, timeout: Duration) -> Result<String, Error> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let ask = Command::AskStatus {
            peer: peer.clone(),
            answer,
        };
        if self.stopped.load(Ordering::Acquire) || self.commands.send(ask).is_err() {
            return Err(Error::Closed);
        }
        answered.recv_timeout(timeout).map_err(|e| match e {
            std::sync::mpsc::RecvTimeoutError::Timeout => {
                Error::Timeout(format!("{peer} did not answer within {timeout:?}"))
            }
            std::sync::mpsc::RecvTimeoutError::Disconnected => {
                Error::Io(format!("{peer} is not connected to this node"))
            }
        })
    }

    /// Waits until `condition` says yes, or says why it never will.
    pub(crate) fn wait_until(
        &self,
        condition: impl Fn(&Snapshot) -> Result<bool, Error>,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + timeout;
        let mut generation = self
            .changes
            .generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            if condition(&self.snapshot.load())? {
                return Ok(());
            }
            if self.stopped.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(format!(
                    "condition not met within {timeout:?}"
                )));
            }
            // Host dispatch: the host may be waiting here on its own thread,
            // so a bounded wait lets it come back to dispatch.
            let (guard, _) = self
                .changes
                .signal
                .wait_timeout(generation, deadline - now)
                .unwrap_or_else(|p| p.into_inner());
            generation = guard;
        }
    }

    pub(crate) fn dispatch(&self, max: usize) -> Result<usize, Error> {
        if self.calls.is_callback_thread() {
            return Err(Error::InvalidArgument(
                "dispatch cannot be called from inside a callback".into(),
            ));
        }
        if self.calls.dispatch_mode() != Dispatch::Host {
            return Err(Error::InvalidArgument(
                "dispatch runs callbacks only in host dispatch mode; this handle has a callback thread".into(),
            ));
        }
        Ok(self.calls.dispatch(max))
    }

    /// Sends a request and waits for its outcome (docs/design.md 11).
    pub(crate) fn request(
        &self,
        shard: crate::core::Shard,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        let deadline = std::time::Instant::now() + timeout;
        let client = &self.requests.client;
        let (slot, id) = client.issue(shard, payload, timeout, None, true);
        // Host dispatch: this thread may be the one that runs callbacks,
        // this node's own handler among them; so it runs them while it
        // waits (as `leave` does).
        let pump = self.calls.dispatch_mode() == Dispatch::Host && !self.calls.is_callback_thread();
        loop {
            if let Some(outcome) = slot.try_take() {
                return outcome;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            if pump && self.calls.has_pending() {
                self.calls.dispatch(usize::MAX);
                continue;
            }
            let until = if pump {
                deadline.min(now + Duration::from_millis(1))
            } else {
                deadline
            };
            if let Some(outcome) = slot.wait(until) {
                return outcome;
            }
        }
        if let Some(id) = id {
            client.time_out(id);
        }
        slot.try_take().unwrap_or(Err(RequestError::Timeout))
    }

    /// Sends a request; its outcome is a future.
    pub(crate) fn request_async(
        &self,
        shard: crate::core::Shard,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> PendingReply {
        let client = &self.requests.client;
        let (slot, id) = client.issue(shard, payload, timeout, None, false);
        PendingReply::new(slot, id.map(|id| (client.clone(), id)))
    }

    /// Sends a request; `then` gets its outcome where callbacks run.
    pub(crate) fn request_then(
        &self,
        shard: crate::core::Shard,
        payload: Vec<u8>,
        timeout: Duration,
        then: impl FnOnce(Result<Reply, RequestError>) + Send + 'static,
    ) {
        let calls = self.calls.clone();
        let deliver = Box::new(move |outcome| {
            calls.submit_completion(Box::new(move || then(outcome)));
        });
        let _ = self
            .requests
            .client
            .issue(shard, payload, timeout, Some(deliver), false);
    }

    /// Requests of this handle in flight now.
    pub(crate) fn requests_in_flight(&self) -> usize {
        self.requests.client.in_flight()
    }

    pub(crate) fn event_fd(&self) -> Option<std::os::fd::RawFd> {
        (self.calls.dispatch_mode() == Dispatch::Host).then(|| self.calls.wake_fd())
    }

    pub(crate) fn leave(&self) -> Result<(), Error> {
        self.end(Command::Leave)
    }

    /// Leaves because the handle is dropped (`deallocated` hears "shutdown").
    pub(crate) fn shut_down(&self) -> Result<(), Error> {
        self.end(Command::Shutdown)
    }

    fn end(&self, how: Command) -> Result<(), Error> {
        if self.calls.is_callback_thread() {
            return Err(Error::InvalidArgument(
                "leave cannot be called from inside a callback: it waits for callbacks to finish"
                    .into(),
            ));
        }
        let _serial = self.leaving.lock().unwrap_or_else(|p| p.into_inner());
        if self.left.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let _ = self.commands.send(how);
        self.finish(false);
        tracing::info!(cluster = %self.name, node = %self.me, "left");
        Ok(())
    }

    #[cfg(feature = "testing")]
    pub(crate) fn crash(&self) {
        let _serial = self.leaving.lock().unwrap_or_else(|p| p.into_inner());
        if self.left.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.commands.send(Command::Crash);
        self.finish(true);
    }

    fn finish(&self, abandon: bool) {
        let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        if self.calls.dispatch_mode() == Dispatch::Host && !abandon {
            // The host's thread is the callback thread: run the leave's
            // callbacks here while the engine winds down.
            while !thread.is_finished() {
                if self.calls.dispatch(usize::MAX) == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            self.calls.dispatch(usize::MAX);
        }
        let _ = thread.join();
        self.logs.finish();
        if abandon {
            self.calls.abandon();
        }
        // Every request still pending ends now; their outcomes for
        // functions go through the queue, which runs them as it closes.
        self.requests.client.close();
        if self.calls.dispatch_mode() == Dispatch::Host && !abandon {
            self.calls.dispatch(usize::MAX);
        }
        self.calls.close();
        self.changes.notify();
    }
}

/// The counters of `stats()`: the core's and the mesh's.
fn stats_of(c: CoreCounters, m: &MeshStats, log_lines_dropped: u64) -> Stats {
    Stats {
        allocations: c.allocations,
        deallocations: c.deallocations,
        conflicts_resolved: c.conflicts_resolved,
        failed_callbacks: c.failed_callbacks,
        ignored_messages: c.ignored_messages,
        reconnects: m.reconnects.load(Ordering::Relaxed),
        refused_handshakes: m.refused.load(Ordering::Relaxed),
        protocol_errors: m.protocol_errors.load(Ordering::Relaxed),
        heartbeat_rtt_micros: m.rtt_micros.load(Ordering::Relaxed),
        log_lines_dropped,
    }
}

/// A node's status and counters as one JSON object: what it answers a
/// status request with, and what `minishard_status_json` writes.
pub(crate) fn status_json(status: Status, stats: Stats) -> String {
    #[derive(serde::Serialize)]
    struct Report {
        #[serde(flatten)]
        status: Status,
        stats: Stats,
    }
    serde_json::to_string(&Report { status, stats }).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot write the status as JSON");
        "{}".into()
    })
}

/// Connection events waiting for the engine, at most.
const EVENT_QUEUE: usize = 4096;

/// At most this many queued events go to the core in one batch, so the
/// actions of a long burst (its sends, its snapshot) are not held back.
const BATCH_LIMIT: usize = 256;

struct MeshParts {
    listener: std::net::TcpListener,
    settings: Settings,
    max_handshakes: usize,
    max_per_source: usize,
    #[cfg(feature = "testing")]
    faults: Arc<Faults>,
    stats: Arc<MeshStats>,
}

/// The task that owns the core and the mesh.
struct Driver {
    core: Core,
    base: std::time::Instant,
    snapshot: Arc<ArcSwap<Snapshot>>,
    changes: Arc<Changes>,
    calls: Arc<CallQueue>,
    logs: Arc<LogQueue>,
    grace: Duration,
    refusal_log: RefusalLog,
    /// Status requests sent, by peer, waiting for its report.
    asking: HashMap<NodeId, Vec<std::sync::mpsc::SyncSender<String>>>,
    requests: Arc<Requests>,
    observer: bool,
    /// The members the mesh dials.
    dialled: Arc<[NodeId]>,
    /// The largest chunk of a hand-off.
    chunk: usize,
    hand_off_wait: Duration,
    /// Hand-offs being streamed to their next owner.
    streams: Vec<tokio::task::JoinHandle<()>>,
    /// A lost conflict's hand-offs waiting for the connection to the winner.
    deferred: Vec<Deferred>,
    encoded: LastEncoded,
}

/// A hand-off for a conflict's winner not connected (yet): after a heal the
/// conflict is often resolved through other nodes before the two have
/// dialled each other again, and the winner waits for it (11.8).
struct Deferred {
    to: NodeId,
    shard: core::Shard,
    epoch: core::Epoch,
    data: Option<Bytes>,
    until: std::time::Instant,
}

/// The last record sent, encoded: the core sends a record to every peer
/// in a row, and encoding its sightings once per peer took a tenth of a
/// 50-node heal's CPU.
#[derive(Default)]
struct LastEncoded {
    /// The record (by address: the core shares one `Arc` among the sends),
    /// whether it was relayed and as current, and its frame.
    last: Option<(Arc<crate::core::Record>, Option<bool>, Bytes)>,
}

impl LastEncoded {
    /// The message as the writer takes it: a record or relay encoded once
    /// for the peers it goes to in a row, anything else as a frame.
    fn of(&mut self, message: crate::core::PeerMessage) -> Outgoing {
        use crate::core::PeerMessage;
        let (record, relayed) = match &message {
            PeerMessage::Record(record) => (record.clone(), None),
            PeerMessage::Relay { record, current } => (record.clone(), Some(*current)),
            PeerMessage::Epochs(_) => return Frame::Peer(message).into(),
        };
        if let Some((last, last_relayed, bytes)) = &self.last {
            // Holding the `Arc` keeps its address from being reused.
            if Arc::ptr_eq(&record, last) && relayed == *last_relayed {
                return bytes.clone().into();
            }
        }
        let bytes = Bytes::from(crate::wire::encode(&Frame::Peer(message)));
        self.last = Some((record, relayed, bytes.clone()));
        bytes.into()
    }
}

/// Refusals are logged at most [`RefusalLog::PER_SECOND`] a second, so a
/// flood of bad connections cannot flood the log; the lines left out are
/// counted in the next one. The notice hook and the counters see them all.
#[derive(Default)]
struct RefusalLog {
    second: Option<std::time::Instant>,
    logged: u32,
    left_out: u64,
}

impl RefusalLog {
    const PER_SECOND: u32 = 20;

    fn log(&mut self, peer: &str, reason: &str) {
        let now = std::time::Instant::now();
        if self
            .second
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            self.second = Some(now);
            self.logged = 0;
        }
        if self.logged == Self::PER_SECOND {
            self.left_out += 1;
            return;
        }
        self.logged += 1;
        if self.left_out > 0 {
            let left_out = std::mem::take(&mut self.left_out);
            tracing::warn!(%peer, %reason, left_out, "refused a connection (and {left_out} more not logged)");
        } else {
            tracing::warn!(%peer, %reason, "refused a connection");
        }
    }
}

impl Driver {
    fn now(&self) -> core::Instant {
        core::Instant::from_micros(self.base.elapsed().as_micros() as u64)
    }

    async fn run(
        mut self,
        parts: MeshParts,
        mut results: mpsc::UnboundedReceiver<(CallId, Outcome)>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let listener = match tokio::net::TcpListener::from_std(parts.listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "cannot use the listener");
                return;
            }
        };
        // Bounded: a peer flooding messages waits for the engine (and TCP
        // pushes back on it) instead of piling them up in memory.
        let (events, mut conn_events) = mpsc::channel(EVENT_QUEUE);
        let mut mesh = Mesh::start(
            listener,
            parts.settings,
            parts.max_handshakes,
            parts.max_per_source,
            #[cfg(feature = "testing")]
            parts.faults,
            parts.stats,
            events,
            self.requests.clone(),
        );
        let timers = tokio::spawn(self.requests.client.clone().run_timers());
        let base = tokio::time::Instant::from_std(self.base);
        let mut timer: Option<core::Instant> = None;
        loop {
            if self.carry_out(&mut mesh, &mut timer) {
                break;
            }
            let wake = async {
                match timer {
                    Some(at) => {
                        tokio::time::sleep_until(base + Duration::from_micros(at.as_micros())).await
                    }
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                Some(event) = conn_events.recv() => self.on_mesh_event(&mut mesh, event),
                Some((id, outcome)) = results.recv() => {
                    self.send_hand_offs(&mut mesh);
                    Some(Event::CallDone { id, outcome })
                }
                () = wake => Some(Event::Timeout),
                command = commands.recv() => match command {
                    Some(Command::Leave) => Some(Event::Leave),
                    Some(Command::Shutdown) => Some(Event::Shutdown),
                    Some(Command::AskStatus { peer, answer }) => {
                        if mesh.send(&peer, Frame::StatusRequest) {
                            let now = self.now();
                            self.core.handle(now, Event::Lost { peer: peer.clone() });
                        } else if mesh.is_up(&peer) {
                            self.asking.entry(peer).or_default().push(answer);
                        }
                        None
                    }
                    #[cfg(feature = "testing")]
                    Some(Command::Crash) => return,
                    None => return,
                },
            };
            // What else is already queued goes in the same batch: one
            // evaluation for a burst, which is what keeps a busy node (or
            // many nodes on few cores) from falling behind its heartbeats.
            let mut batch: Vec<Event> = event.into_iter().collect();
            while batch.len() < BATCH_LIMIT {
                if let Ok(event) = conn_events.try_recv() {
                    batch.extend(self.on_mesh_event(&mut mesh, event));
                } else if let Ok((id, outcome)) = results.try_recv() {
                    self.send_hand_offs(&mut mesh);
                    batch.push(Event::CallDone { id, outcome });
                } else {
                    break;
                }
            }
            if !batch.is_empty() {
                let now = self.now();
                self.core.handle_all(now, batch);
            }
        }
        timers.abort();
        // Hand-offs under way finish before the connections close (a
        // leaving node's goes to the standbys), within `hand_off_wait`.
        let until = tokio::time::Instant::now() + self.hand_off_wait;
        for stream in self.streams.drain(..) {
            let _ = tokio::time::timeout_at(until, stream).await;
        }
        self.requests.hand_offs.close();
        mesh.shutdown(self.grace, &mut conn_events).await;
    }

    fn on_mesh_event(&mut self, mesh: &mut Mesh, event: ConnEvent) -> Option<Event> {
        if let ConnEvent::StatusReport { peer, json } = event {
            for answer in self.asking.remove(&peer).unwrap_or_default() {
                let _ = answer.try_send(json.clone());
            }
            return None;
        }
        let (event, notice) = mesh.on_event(event);
        match &event {
            Some(Event::Connected { peer, .. }) => {
                if let Some((conn, lane)) = mesh.lane(peer) {
                    self.requests.client.link_up(peer.clone(), conn, lane);
                }
                self.requests.hand_offs.link(peer, true);
                self.send_deferred_hand_offs(mesh, peer);
            }
            Some(Event::Lost { peer }) => {
                self.requests.client.link_down(peer);
                self.requests.hand_offs.link(peer, false);
            }
            _ => {}
        }
        if let Some(notice) = notice {
            match &notice {
                crate::config::MeshNotice::PeerUp { peer } => tracing::info!(%peer, "peer up"),
                crate::config::MeshNotice::PeerDown { peer, reason } => {
                    tracing::info!(%peer, %reason, "peer down")
                }
                crate::config::MeshNotice::Refused { peer, reason } => {
                    self.refusal_log.log(peer, reason)
                }
            }
            self.logs.notice(notice);
        }
        event
    }

    /// An observer dials the members it learned of through the ones in its
    /// list too: its requests go straight to a shard's owner, which may be
    /// any member.
    fn dial_learned_members(&mut self, mesh: &mut Mesh, snapshot: &Snapshot) {
        let learned: Vec<NodeId> = snapshot
            .nodes
            .iter()
            .filter(|(n, state)| {
                *state != crate::core::NodeState::Connected
                    && *n != *self.core.me()
                    && !self.dialled.contains(n)
            })
            .map(|(n, _)| n.clone())
            .collect();
        if !learned.is_empty() {
            let mut all = self.dialled.to_vec();
            all.extend(learned);
            all.sort();
            self.dialled = Arc::from(all);
            mesh.set_members(&self.dialled);
        }
    }

    /// Sends what `deallocated` handed off, before the core hears that it
    /// returned: the `Start` goes on the core lane ahead of the record that
    /// frees the shard, so the next owner knows to wait for the bytes. A
    /// conflict's loser sends to its winner; a leaving node to every
    /// standby, since the next owner is chosen after it left.
    fn send_hand_offs(&mut self, mesh: &mut Mesh) {
        self.streams.retain(|s| !s.is_finished());
        for out in self.requests.hand_offs.take_outgoing() {
            let targets: Vec<NodeId> = match (out.reason, &out.winner) {
                (core::ReleaseReason::LostConflict, Some(winner)) => vec![winner.clone()],
                (core::ReleaseReason::Left, _) if out.data.is_some() => self
                    .snapshot
                    .load()
                    .nodes
                    .iter()
                    .filter(|(n, s)| *s == core::NodeState::Standby && n != self.core.me())
                    .map(|(n, _)| n.clone())
                    .collect(),
                _ => Vec::new(),
            };
            if targets.is_empty() && out.data.is_some() {
                tracing::info!(shard = out.shard, reason = %out.reason, "a hand-off has no next owner to go to: dropped");
            }
            let data = out.data.map(Bytes::from);
            for to in targets {
                if out.reason == core::ReleaseReason::LostConflict && mesh.lane(&to).is_none() {
                    self.deferred.push(Deferred {
                        to,
                        shard: out.shard,
                        epoch: out.epoch,
                        data: data.clone(),
                        until: std::time::Instant::now() + self.hand_off_wait,
                    });
                    continue;
                }
                self.start_hand_off(mesh, &to, out.shard, out.epoch, data.clone());
            }
        }
    }

    /// The `Start` of a hand-off to `to`, then its bytes in chunks.
    fn start_hand_off(
        &mut self,
        mesh: &mut Mesh,
        to: &NodeId,
        shard: core::Shard,
        epoch: core::Epoch,
        data: Option<Bytes>,
    ) {
        let Some((_, lane)) = mesh.lane(to) else {
            tracing::info!(shard, %to, "the next owner is not connected: the hand-off is lost");
            return;
        };
        let start = crate::wire::request::HandOff::Start {
            shard,
            epoch,
            len: data.as_ref().map(|d| d.len() as u64),
        };
        if mesh.send(to, Frame::HandOff(start)) {
            return;
        }
        if let Some(data) = data {
            self.streams.push(tokio::spawn(handoff::stream(
                lane, shard, epoch, data, self.chunk,
            )));
        }
    }

    /// `peer` connected: the hand-offs that waited for it go now, unless
    /// they waited past `hand_off_wait` (the winner no longer waits).
    fn send_deferred_hand_offs(&mut self, mesh: &mut Mesh, peer: &NodeId) {
        if self.deferred.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let (due, waiting): (Vec<Deferred>, Vec<Deferred>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .filter(|d| {
                let live = d.until > now;
                if !live {
                    tracing::info!(shard = d.shard, to = %d.to, "the winner did not connect within hand_off_wait: the hand-off is lost");
                }
                live
            })
            .partition(|d| d.to == *peer);
        self.deferred = waiting;
        for d in due {
            self.start_hand_off(mesh, &d.to, d.shard, d.epoch, d.data);
        }
    }

    /// Carries out the core's actions. Returns true once the node has left.
    fn carry_out(&mut self, mesh: &mut Mesh, timer: &mut Option<core::Instant>) -> bool {
        let mut closed = false;
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Send { to, message } => {
                    if mesh.send(&to, self.encoded.of(message)) {
                        self.requests.client.link_down(&to);
                        let now = self.now();
                        self.core.handle(now, Event::Lost { peer: to });
                    }
                }
                Action::SetTimer(at) => *timer = Some(at),
                Action::CancelTimer => *timer = None,
                Action::Call { id, call } => self.calls.submit(id, call),
                Action::Publish(snapshot) => {
                    if self.observer {
                        self.dial_learned_members(mesh, &snapshot);
                    }
                    self.snapshot.store(snapshot);
                    self.changes.notify();
                    self.requests.client.on_view_changed();
                }
                Action::SetMembers(members) => {
                    mesh.set_members(&members);
                    self.dialled = members;
                }
                Action::Close => {
                    // Queued requests are answered "not the owner" while the
                    // connections can still carry the answers.
                    self.requests.server.close();
                    closed = true;
                }
            }
        }
        closed
    }
}
