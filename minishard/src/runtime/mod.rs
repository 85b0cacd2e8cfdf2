//! The runtime: an internal tokio runtime on a thread of its own that feeds
//! the core its events and carries out its actions, and the callback queue
//! that runs the application's callbacks off that thread.
//!
//! The user needs no async runtime. Lookups read the snapshot the core last
//! published (an `ArcSwap`: no lock, no syscall); waits sleep on a condition
//! variable the runtime signals on every new snapshot.

mod calls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::api::{Callbacks, Stats};
use crate::config::{listen_port, Config, Dispatch, NoticeHook};
use crate::core::{self, Action, CallId, Core, CoreConfig, Event, NodeId, Outcome, Role, Snapshot};
use crate::error::Error;
#[cfg(feature = "testing")]
use crate::mesh::faults::Faults;
use crate::mesh::{ConnEvent, Mesh, MeshStats, Settings, Tls};
use crate::wire::handshake::Identity;
use crate::wire::{Frame, MAX_CLUSTER_NAME_LEN};
use calls::{AppRunner, CallQueue};

enum Command {
    Leave,
    Shutdown,
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
        let runner = Box::new(AppRunner::new(name.to_owned(), callbacks));
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
            tls,
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
            hook: config.notice_hook.clone(),
            grace: config.timings.heartbeat_timeout,
            refusal_log: RefusalLog::default(),
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
        let span = tracing::info_span!("minishard", cluster = %name, node = %me);
        let thread = std::thread::Builder::new()
            .name(format!("minishard-{name}"))
            .spawn(move || {
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
        let c = self.snapshot.load().counters;
        let m = &self.mesh_stats;
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
        }
    }

    pub(crate) fn wait_until(
        &self,
        condition: impl Fn(&Snapshot) -> bool,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + timeout;
        let mut generation = self
            .changes
            .generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            if condition(&self.snapshot.load()) {
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
        if abandon {
            self.calls.abandon();
        }
        self.calls.close();
        self.changes.notify();
    }
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
    hook: Option<NoticeHook>,
    grace: Duration,
    refusal_log: RefusalLog,
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
        );
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
                Some((id, outcome)) = results.recv() => Some(Event::CallDone { id, outcome }),
                () = wake => Some(Event::Timeout),
                command = commands.recv() => match command {
                    Some(Command::Leave) => Some(Event::Leave),
                    Some(Command::Shutdown) => Some(Event::Shutdown),
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
        mesh.shutdown(self.grace, &mut conn_events).await;
    }

    fn on_mesh_event(&mut self, mesh: &mut Mesh, event: ConnEvent) -> Option<Event> {
        let (event, notice) = mesh.on_event(event);
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
            if let Some(hook) = &self.hook {
                hook(&notice);
            }
        }
        event
    }

    /// Carries out the core's actions. Returns true once the node has left.
    fn carry_out(&mut self, mesh: &mut Mesh, timer: &mut Option<core::Instant>) -> bool {
        let mut closed = false;
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Send { to, message } => {
                    if mesh.send(&to, Frame::Peer(message)) {
                        let now = self.now();
                        self.core.handle(now, Event::Lost { peer: to });
                    }
                }
                Action::SetTimer(at) => *timer = Some(at),
                Action::CancelTimer => *timer = None,
                Action::Call { id, call } => self.calls.submit(id, call),
                Action::Publish(snapshot) => {
                    self.snapshot.store(snapshot);
                    self.changes.notify();
                }
                Action::SetMembers(members) => mesh.set_members(&members),
                Action::Close => closed = true,
            }
        }
        closed
    }
}
