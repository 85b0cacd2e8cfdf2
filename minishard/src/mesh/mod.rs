//! The mesh: a listener, a dialer per member, and the registry of live
//! connections, one per peer (docs/design.md 8.1).
//!
//! Every node dials the members it is not connected to, with exponential
//! back-off and jitter. To keep one connection per pair, the node with the
//! smaller address dials and the other waits for it, dialling too only if
//! nothing came for a while; when two connections still meet, both ends keep
//! the one dialled by the smaller address. The registry lives on the engine's
//! task: connection tasks report to it through one bounded channel.
//!
//! A connection runs over plain TCP or, when configured, mutual TLS (`tls`);
//! the cookie handshake (`crate::wire::handshake`) runs on top of either.

mod beat;
mod conn;
#[cfg(feature = "testing")]
pub(crate) mod faults;
mod tls;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio_util::task::TaskTracker;

use conn::{Admission, Link};
pub(crate) use conn::{
    ConnEvent, ConnId, MeshStats, Outgoing, Settings, SharedWriter, StatusSource,
};
#[cfg(feature = "testing")]
use faults::Faults;
pub(crate) use tls::Tls;

use crate::config::MeshNotice;
use crate::core::{Event, Incarnation, NodeId, RefusalReason, Role};
use crate::requests::Lane;
use crate::wire::handshake::{PeerFacts, Refusal, RefusalKind, Refuser};
use crate::wire::request::{Reply, Request};

/// A dial that found nobody listening (or failed on the way) is tried again
/// this soon at first: in a cold start the peer is usually a few
/// milliseconds from binding its listener, and a refused connect costs one
/// packet. Waiting 50 ms there was most of a 5-node cold start.
const BACKOFF_START: Duration = Duration::from_millis(5);
/// A peer that refused this node (its cookie, the member list) is asked
/// again no sooner than this.
const REFUSED_BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// How long the larger address waits to be dialled before dialling itself.
const DIAL_FALLBACK: Duration = Duration::from_secs(1);

/// Where connections hand the request frames they read: past the core,
/// which has no part in them.
pub(crate) trait RequestSink: Send + Sync {
    /// A peer's request for the shard this node owns.
    fn request(&self, from: &NodeId, lane: &Lane, request: Request);
    /// A peer's reply to a request this node sent on connection `conn`.
    fn reply(&self, from: &NodeId, conn: ConnId, reply: Reply);
    /// Part of a hand-off from a peer (docs/design.md 11.8).
    fn hand_off(&self, from: &NodeId, frame: crate::wire::request::HandOff);
}

struct Live {
    conn: ConnId,
    incarnation: u64,
    role: Role,
    dialed: bool,
    sender: mpsc::Sender<Outgoing>,
    lane: Lane,
    kill: Arc<Notify>,
}

/// State shared with the listener and dialer tasks.
struct Shared {
    settings: Arc<Settings>,
    events: mpsc::Sender<ConnEvent>,
    members: ArcSwap<Vec<NodeId>>,
    /// The peers with a live connection, and their incarnations.
    connected: Mutex<HashMap<NodeId, Incarnation>>,
    /// Wakes a peer's dialer when its connection goes: a connected dialer
    /// sleeps until then instead of looking every heartbeat interval (an
    /// idle node's wake-ups are most of its CPU).
    lost: Mutex<HashMap<NodeId, Arc<Notify>>>,
    stopping: AtomicBool,
    /// The node's beat, which every connection's writer follows (see
    /// [`beat`]).
    beat: watch::Receiver<()>,
    next_conn: AtomicU64,
    #[cfg(feature = "testing")]
    faults: Arc<Faults>,
    stats: Arc<MeshStats>,
    tracker: TaskTracker,
    handshakes: Arc<Semaphore>,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    max_per_source: usize,
    requests: Arc<dyn RequestSink>,
}

impl Shared {
    fn lost_signal(&self, peer: &NodeId) -> Arc<Notify> {
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer.clone())
            .or_default()
            .clone()
    }

    fn is_connected(&self, peer: &NodeId) -> bool {
        self.connected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(peer)
    }

    /// Refuses a proven dialer that claims the address of a connected node
    /// with another incarnation: two processes must not both be that node.
    /// Once the old connection is gone (closed, or silent past the heartbeat
    /// timeout) the new incarnation is let in.
    fn second_incarnation(&self, peer: &PeerFacts) -> Result<(), (RefusalKind, String)> {
        let connected = self.connected.lock().unwrap_or_else(|p| p.into_inner());
        match connected.get(&peer.node) {
            Some(&live) if live != peer.incarnation => Err((
                RefusalKind::SecondIncarnation,
                format!(
                    "{} is already connected with incarnation {live}; incarnation {} is refused until that connection is gone",
                    peer.node, peer.incarnation
                ),
            )),
            _ => Ok(()),
        }
    }

    fn link(self: &Arc<Self>, peer: PeerFacts, dialed: bool) -> Link {
        Link {
            conn: self.next_conn.fetch_add(1, Ordering::Relaxed),
            beat: self.beat.clone(),
            peer,
            dialed,
            settings: self.settings.clone(),
            events: self.events.clone(),
            #[cfg(feature = "testing")]
            faults: self.faults.clone(),
            stats: self.stats.clone(),
            requests: self.requests.clone(),
        }
    }

    fn refused(&self, peer: String, reason: String) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        conn::report_refusal(&self.events, peer, reason);
    }

    /// A handshake with `peer` failed in a way the core hears of as `peer`
    /// refusing this node (see [`refuses_this_node`]).
    fn refused_by(&self, peer: NodeId, refusal: Refusal) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        let event = ConnEvent::RefusedBy {
            peer,
            kind: refusal.kind,
            reason: refusal.reason,
        };
        if let Err(error) = self.events.try_send(event) {
            tracing::debug!(?error, "refusal not reported: the engine is busy");
        }
    }
}

/// Whether a failed handshake means the peer will not take this node: it
/// refused this node, or this node found their configurations differ (a
/// mismatch is mutual, and the side that checks first refuses). A dialler
/// finds a cookie mismatch first (it checks the listener's proof first); a
/// listener whose dialler's proof fails after that dialler accepted its own
/// was sent a recorded or forged handshake, which says nothing about the
/// node named in it.
fn refuses_this_node(refusal: &Refusal, dialled: bool) -> bool {
    match (refusal.refuser, refusal.kind) {
        (Refuser::Peer, _) => true,
        (Refuser::ThisNode, RefusalKind::WrongCookie) => dialled,
        (Refuser::ThisNode, RefusalKind::WrongCluster | RefusalKind::WrongVersion) => true,
        _ => false,
    }
}

/// The registry of live connections, owned by the engine's task.
pub(crate) struct Mesh {
    shared: Arc<Shared>,
    me: NodeId,
    role: Role,
    live: HashMap<NodeId, Live>,
    ever_connected: HashSet<NodeId>,
    dialers: HashMap<NodeId, tokio::task::AbortHandle>,
    acceptor: tokio::task::AbortHandle,
    beat: tokio::task::AbortHandle,
}

impl Mesh {
    /// Starts listening; dialling starts with [`Mesh::set_members`].
    #[allow(clippy::too_many_arguments)] // each is a separate part of the node
    pub(crate) fn start(
        listener: TcpListener,
        settings: Settings,
        max_handshakes: usize,
        max_per_source: usize,
        #[cfg(feature = "testing")] faults: Arc<Faults>,
        stats: Arc<MeshStats>,
        events: mpsc::Sender<ConnEvent>,
        requests: Arc<dyn RequestSink>,
    ) -> Mesh {
        let me = settings.identity.node.clone();
        let role = settings.identity.role;
        let heartbeat_interval = settings.heartbeat_interval;
        let (beats, beat_seen) = watch::channel(());
        let shared = Arc::new(Shared {
            settings: Arc::new(settings),
            events,
            members: ArcSwap::from_pointee(Vec::new()),
            connected: Mutex::new(HashMap::new()),
            lost: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            beat: beat_seen,
            next_conn: AtomicU64::new(1),
            #[cfg(feature = "testing")]
            faults,
            stats,
            tracker: TaskTracker::new(),
            handshakes: Arc::new(Semaphore::new(max_handshakes)),
            per_source: Mutex::new(HashMap::new()),
            max_per_source,
            requests,
        });
        let acceptor = tokio::spawn(accept_loop(listener, shared.clone())).abort_handle();
        let beat = tokio::spawn(beat::run(beats, heartbeat_interval)).abort_handle();
        Mesh {
            shared,
            me,
            role,
            live: HashMap::new(),
            ever_connected: HashSet::new(),
            dialers: HashMap::new(),
            acceptor,
            beat,
        }
    }

    /// Dials the members it should and accepts handshakes from them. A
    /// member-role peer no longer in the list is disconnected at once (the
    /// core hears it is lost when its connection ends, and the peer is
    /// refused when it dials again, and so learns it was removed:
    /// docs/design.md 6.6).
    pub(crate) fn set_members(&mut self, members: &[NodeId]) {
        self.shared.members.store(Arc::new(members.to_vec()));
        for (peer, live) in &self.live {
            if live.role == Role::Member && !members.contains(peer) {
                tracing::info!(%peer, "no longer in the member list: disconnecting");
                live.kill.notify_one();
            }
        }
        let wanted: HashSet<&NodeId> = members.iter().filter(|m| **m != self.me).collect();
        self.dialers.retain(|peer, task| {
            let keep = wanted.contains(peer);
            if !keep {
                task.abort();
            }
            keep
        });
        for peer in wanted {
            if !self.dialers.contains_key(peer) {
                let eager = self.role == Role::Observer || self.me < *peer;
                let task = tokio::spawn(dial_loop(self.shared.clone(), peer.clone(), eager));
                self.dialers.insert(peer.clone(), task.abort_handle());
            }
        }
    }

    /// Takes a connection event; returns what the core must hear of it and
    /// what to report to the application's notice hook.
    pub(crate) fn on_event(&mut self, event: ConnEvent) -> (Option<Event>, Option<MeshNotice>) {
        match event {
            ConnEvent::Up {
                conn,
                peer,
                dialed,
                sender,
                lane,
                kill,
            } => {
                let facts = peer.clone();
                if self.on_up(conn, peer, dialed, sender, lane, kill) {
                    let notice = MeshNotice::PeerUp {
                        peer: facts.node.clone(),
                    };
                    let event = Event::Connected {
                        peer: facts.node,
                        incarnation: facts.incarnation,
                        role: facts.role,
                    };
                    (Some(event), Some(notice))
                } else {
                    (None, None)
                }
            }
            ConnEvent::Message {
                conn,
                peer,
                message,
            } => {
                let live = self.live.get(&peer).is_some_and(|l| l.conn == conn);
                (
                    live.then_some(Event::Message {
                        from: peer,
                        message,
                    }),
                    None,
                )
            }
            ConnEvent::Down { conn, peer, reason } => {
                if self.live.get(&peer).is_some_and(|l| l.conn == conn) {
                    self.forget(&peer);
                    let notice = MeshNotice::PeerDown {
                        peer: peer.clone(),
                        reason,
                    };
                    (Some(Event::Lost { peer }), Some(notice))
                } else {
                    (None, None)
                }
            }
            ConnEvent::Refused { peer, reason } => {
                (None, Some(MeshNotice::Refused { peer, reason }))
            }
            // The driver takes these before they get here.
            ConnEvent::StatusReport { .. } => (None, None),
            ConnEvent::RefusedBy { peer, kind, reason } => {
                let event = Event::RefusedBy {
                    peer: peer.clone(),
                    reason: match kind {
                        RefusalKind::NotAMember => RefusalReason::NotAMember,
                        RefusalKind::WrongCookie => RefusalReason::WrongCookie,
                        RefusalKind::WrongCluster => RefusalReason::WrongCluster,
                        RefusalKind::WrongVersion => RefusalReason::WrongVersion,
                        RefusalKind::ObserverAtMemberAddress => {
                            RefusalReason::ObserverAtMemberAddress
                        }
                        _ => RefusalReason::Other,
                    },
                    detail: reason.clone(),
                };
                let notice = MeshNotice::Refused {
                    peer: peer.to_string(),
                    reason,
                };
                (Some(event), Some(notice))
            }
        }
    }

    fn on_up(
        &mut self,
        conn: ConnId,
        peer: PeerFacts,
        dialed: bool,
        sender: mpsc::Sender<Outgoing>,
        lane: Lane,
        kill: Arc<Notify>,
    ) -> bool {
        let new = Live {
            conn,
            incarnation: peer.incarnation,
            role: peer.role,
            dialed,
            sender,
            lane,
            kill,
        };
        // Both ends keep the connection dialled by the smaller address.
        let preferred = |l: &Live| l.dialed == (self.me < peer.node);
        match self.live.get(&peer.node) {
            // The handshake checks this before its welcome; two handshakes
            // finishing at once can still get here.
            Some(old) if old.incarnation != new.incarnation => {
                new.kill.notify_one();
                self.shared.refused(
                    peer.node.to_string(),
                    format!(
                        "{} is already connected with incarnation {}; incarnation {} is refused until that connection is gone",
                        peer.node, old.incarnation, new.incarnation
                    ),
                );
                false
            }
            // Both ends keep the one dialled by the smaller address; a newer
            // connection from the same side replaces the old, which its
            // dialler has already given up.
            Some(old) if preferred(old) && !preferred(&new) => {
                new.kill.notify_one();
                false
            }
            _ => {
                if let Some(old) = self.live.insert(peer.node.clone(), new) {
                    old.kill.notify_one();
                }
                if !self.ever_connected.insert(peer.node.clone()) {
                    self.shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                self.shared
                    .connected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(peer.node.clone(), peer.incarnation);
                true
            }
        }
    }

    /// The live connection to `peer` and its request lane.
    pub(crate) fn lane(&self, peer: &NodeId) -> Option<(ConnId, Lane)> {
        self.live.get(peer).map(|l| (l.conn, l.lane.clone()))
    }

    fn forget(&mut self, peer: &NodeId) {
        self.live.remove(peer);
        self.shared
            .connected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
        self.shared.lost_signal(peer).notify_one();
    }

    /// Whether a connection to `peer` is up.
    pub(crate) fn is_up(&self, peer: &NodeId) -> bool {
        self.live.contains_key(peer)
    }

    /// Queues a frame (or one encoded already) for a peer. A peer whose queue is full has fallen too
    /// far behind: it is disconnected (returns true: the core must hear it
    /// is lost) rather than let memory grow.
    pub(crate) fn send(&mut self, to: &NodeId, frame: impl Into<Outgoing>) -> bool {
        let Some(live) = self.live.get(to) else {
            return false;
        };
        match live.sender.try_send(frame.into()) {
            Ok(()) => false,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                live.kill.notify_one();
                self.forget(to);
                self.shared
                    .refused(to.to_string(), "send queue full: peer too slow".into());
                true
            }
        }
    }

    /// Stops dialling and accepting, lets every connection flush what it was
    /// sent and close, and waits for that for at most `grace`. Connection
    /// events that still come in are drained (and dropped), so no task is
    /// stuck on a full event channel.
    pub(crate) async fn shutdown(
        mut self,
        grace: Duration,
        events: &mut mpsc::Receiver<ConnEvent>,
    ) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.acceptor.abort();
        for (_, task) in self.dialers.drain() {
            task.abort();
        }
        // Dropping the senders lets each writer flush and close.
        self.live.clear();
        self.shared.tracker.close();
        let drain = async { while events.recv().await.is_some() {} };
        let _ = tokio::time::timeout(grace, async {
            tokio::select! {
                () = self.shared.tracker.wait() => {}
                () = drain => {}
            }
        })
        .await;
        self.beat.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors or similar: wait rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = shared.handshakes.clone().try_acquire_owned() else {
            shared.refused(
                from.to_string(),
                "too many connections in their handshake".into(),
            );
            continue;
        };
        let source = from.ip();
        {
            let mut per_source = shared.per_source.lock().unwrap_or_else(|p| p.into_inner());
            let count = per_source.entry(source).or_insert(0);
            if *count >= shared.max_per_source {
                drop(per_source);
                shared.refused(
                    from.to_string(),
                    "too many connections in their handshake from this address".into(),
                );
                continue;
            }
            *count += 1;
        }
        let task_shared = shared.clone();
        shared.tracker.spawn(async move {
            let admitted = admit_and_answer(&task_shared, stream).await;
            drop(permit);
            {
                let mut per_source = task_shared
                    .per_source
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if let Some(count) = per_source.get_mut(&source) {
                    *count -= 1;
                    if *count == 0 {
                        per_source.remove(&source);
                    }
                }
            }
            match admitted {
                Ok((streams, peer)) => {
                    let link = task_shared.link(peer, false);
                    conn::run(link, streams).await;
                }
                // A dialer that refuses this node, or that this node
                // refuses for a mismatch, will not take it either: the core
                // hears of it as of a refusal by that member (docs/design.md
                // 6.8), or a node started next to a misconfigured member would
                // hear of it only once it dials, which the larger address
                // does late (8.1).
                Err(refusal) => match refusal.claimed.clone() {
                    Some(node) if refuses_this_node(&refusal, false) => {
                        task_shared.refused_by(node, refusal)
                    }
                    // The node the dialer says it is, where it said so: its
                    // source port is an ephemeral one.
                    claimed => {
                        let peer =
                            claimed.map_or_else(|| from.to_string(), |node| node.to_string());
                        task_shared.refused(peer, refusal.reason)
                    }
                },
            }
        });
    }
}

async fn admit_and_answer(
    shared: &Arc<Shared>,
    stream: TcpStream,
) -> Result<(conn::Streams, PeerFacts), Refusal> {
    let members = shared.members.load_full();
    #[cfg(feature = "testing")]
    let faults = shared.faults.clone();
    let admission = Admission {
        hello: move |peer: &PeerFacts| {
            #[cfg(feature = "testing")]
            if faults.is_cut(&peer.node) {
                return Err((RefusalKind::Cut, "cut off by fault injection".into()));
            }
            match peer.role {
                Role::Member if !members.contains(&peer.node) => Err((
                    RefusalKind::NotAMember,
                    format!(
                        "{} claims to be a member but is not in the member list",
                        peer.node
                    ),
                )),
                // An observer under a member's address would take that
                // member's place in the registry (and, over TLS, needs no
                // certificate naming it).
                Role::Observer if members.contains(&peer.node) => Err((
                    RefusalKind::ObserverAtMemberAddress,
                    format!(
                        "{} is in the member list but joins as an observer",
                        peer.node
                    ),
                )),
                _ => Ok(()),
            }
        },
        proven: |peer: &PeerFacts| shared.second_incarnation(peer),
    };
    conn::answer(&shared.settings, stream, admission).await
}

async fn dial_loop(shared: Arc<Shared>, peer: NodeId, eager: bool) {
    let mut backoff = BACKOFF_START;
    let mut waiting_since = tokio::time::Instant::now();
    let idle = shared.settings.heartbeat_interval;
    // A retry waits at most this long, so a link that comes back after a
    // flap is redialled well within the transition timeout.
    let cap = BACKOFF_CAP.min(shared.settings.heartbeat_timeout);
    // Once two nodes have been connected, the larger address redials a lost
    // connection too, after a heartbeat interval instead of the whole
    // fallback delay: the smaller one redials at once, and when a link comes
    // back (a heal of many nodes, say) one connection per pair comes up,
    // not two of which one is thrown away.
    let mut fallback = if eager { Duration::ZERO } else { DIAL_FALLBACK };
    let lost = shared.lost_signal(&peer);
    loop {
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let connected = shared.is_connected(&peer);
        #[cfg(feature = "testing")]
        let connected_or_cut = connected || shared.faults.is_cut(&peer);
        #[cfg(not(feature = "testing"))]
        let connected_or_cut = connected;
        if connected_or_cut {
            if connected {
                fallback = fallback.min(idle);
            }
            if connected {
                // Until the connection goes (a loss before this wait left
                // a permit: no loss is missed).
                lost.notified().await;
            } else {
                // Cut off in a test: looked at again every interval.
                tokio::time::sleep(idle).await;
            }
            waiting_since = tokio::time::Instant::now();
            continue;
        }
        if waiting_since.elapsed() < fallback {
            tokio::time::sleep(idle).await;
            continue;
        }
        match conn::dial(&shared.settings, &peer).await {
            Ok((streams, facts)) => {
                backoff = BACKOFF_START;
                let link = shared.link(facts, true);
                // Its own task, so stopping the dialer at shutdown does not
                // cut the connection before it has flushed.
                let _ = shared.tracker.spawn(conn::run(link, streams)).await;
                fallback = fallback.min(idle);
                waiting_since = tokio::time::Instant::now();
            }
            Err(refusal) => {
                if refusal.refuser != Refuser::Neither {
                    backoff = backoff.max(REFUSED_BACKOFF_START);
                }
                match refusal.refuser {
                    // The core hears of it: a member that refuses this node
                    // as a non-member may mean it was removed (docs/design.md
                    // 6.6), and one that refuses it for a mismatch, that it is
                    // misconfigured (6.8).
                    _ if refuses_this_node(&refusal, true) => {
                        shared.refused_by(peer.clone(), refusal)
                    }
                    Refuser::Peer | Refuser::ThisNode => {
                        shared.refused(peer.to_string(), refusal.reason)
                    }
                    Refuser::Neither => {
                        tracing::debug!(%peer, reason = %refusal.reason, "dial failed")
                    }
                }
                let jitter = rand::rng().random_range(0.5..1.5);
                tokio::time::sleep(backoff.mul_f64(jitter)).await;
                backoff = (backoff * 2).min(cap);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::handshake::Identity;
    use crate::wire::Frame;

    fn settings() -> Settings {
        Settings {
            identity: Identity {
                cluster: "c".into(),
                node: NodeId::parse("127.0.0.1:1").unwrap(),
                incarnation: 1,
                role: Role::Member,
                cookie: Arc::from(&b"cookie"[..]),
            },
            frame_limit: crate::wire::DEFAULT_FRAME_LIMIT,
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_timeout: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(1),
            send_queue: 2,
            request_lane: 16,
            tls: None,
            status_report: StatusSource(Arc::new(|| "{}".into())),
            source: None,
        }
    }

    struct NoRequests;

    impl RequestSink for NoRequests {
        fn request(&self, _: &NodeId, _: &Lane, _: Request) {}
        fn hand_off(&self, _: &NodeId, _: crate::wire::request::HandOff) {}
        fn reply(&self, _: &NodeId, _: ConnId, _: Reply) {}
    }

    #[tokio::test]
    async fn a_peer_that_falls_behind_is_disconnected_not_buffered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (events, mut reports) = mpsc::channel(16);
        let stats = Arc::new(MeshStats::default());
        let mut mesh = Mesh::start(
            listener,
            settings(),
            4,
            4,
            #[cfg(feature = "testing")]
            Faults::new(),
            stats.clone(),
            events,
            Arc::new(NoRequests),
        );
        // A connection whose writer is stuck (a peer that stopped reading):
        // nobody drains its queue of two.
        let (sender, _stuck) = mpsc::channel(2);
        let kill = Arc::new(Notify::new());
        let (lane, _lane_frames) = mpsc::channel(2);
        let slow = NodeId::parse("127.0.0.1:9").unwrap();
        let up = ConnEvent::Up {
            conn: 1,
            peer: PeerFacts {
                node: slow.clone(),
                incarnation: 5,
                role: Role::Observer,
            },
            dialed: false,
            sender,
            lane: Lane {
                direct: None,
                frames: lane,
                kill: kill.clone(),
            },
            kill: kill.clone(),
        };
        assert!(matches!(mesh.on_event(up).0, Some(Event::Connected { .. })));
        assert!(!mesh.send(&slow, Frame::Welcome));
        assert!(!mesh.send(&slow, Frame::Welcome));
        // The third does not fit: the peer is dropped, the core told.
        assert!(
            mesh.send(&slow, Frame::Welcome),
            "the core must hear it is lost"
        );
        tokio::time::timeout(Duration::from_secs(1), kill.notified())
            .await
            .expect("the connection is closed");
        match reports.recv().await {
            Some(ConnEvent::Refused { peer, reason }) => {
                assert_eq!(peer, slow.to_string());
                assert!(
                    reason.contains("send queue full: peer too slow"),
                    "{reason}"
                );
            }
            other => panic!("no refusal reported: {other:?}"),
        }
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
        // Nothing more is queued for it.
        assert!(!mesh.send(&slow, Frame::Welcome));
        assert!(!mesh.shared.is_connected(&slow));
    }
}
