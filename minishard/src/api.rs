//! The Rust API: join a cluster with callbacks, look up owners, wait for
//! health, leave.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::core::{
    Epoch, Health, LocalState, Metadata, NodeId, NodeState, Owner, PeerRefusals, ReleaseReason,
    Shard, Snapshot,
};
use crate::error::{CallbackError, Error};
use crate::requests::handoff::HandOff;
use crate::requests::{PendingReply, Reply, RequestError, Responder};
use crate::runtime::Engine;

/// The application's side of a cluster (docs/design.md 3).
///
/// Callbacks of one handle run one at a time, in order: on the handle's
/// callback thread, never on the thread that called [`Cluster::join`]; or,
/// with [`crate::Dispatch::Host`], on the host's thread: `nodes` and
/// `shard_count` inside [`Cluster::join`], the rest inside
/// [`Cluster::dispatch`] (or `leave`). For each allocation the order is exactly `allocated`,
/// then any number of `score`/`prolonged`, then one `deallocated`.
///
/// A callback that returns an error or panics does not stop the engine: a
/// failed `allocated` releases the shard and the node backs off; a failed or
/// late `score` loses the conflict; other failures are logged.
pub trait Callbacks: Send + 'static {
    /// What the application keeps for the shard it owns.
    type State: Send + 'static;

    /// The member list: every node's advertised `host:port`. Asked at join
    /// and then periodically.
    fn nodes(&mut self, cluster: &str) -> Result<Vec<String>, CallbackError>;

    /// How many shards the cluster keeps (at least 1, at most the number of
    /// members). Asked at join.
    fn shard_count(&mut self, cluster: &str) -> Result<u32, CallbackError>;

    /// This node now owns `shard`. `epoch` is the allocation's fencing token:
    /// larger than any epoch this node has seen for the shard, never issued
    /// twice for it anywhere in the cluster, and raised when the allocation
    /// wins a conflict (see `prolonged`). A store that accepts a write only
    /// at an epoch at least the highest it has seen refuses every deposed
    /// owner.
    fn allocated(
        &mut self,
        cluster: &str,
        shard: Shard,
        epoch: Epoch,
    ) -> Result<Self::State, CallbackError>;

    /// A conflict over this node's shard is being resolved: higher wins.
    fn score(&mut self, state: &mut Self::State) -> Result<i64, CallbackError>;

    /// This node won a conflict against `loser` and keeps its shard (or kept
    /// it because the rival it had yielded to left, was removed, restarted
    /// or was lost before taking it). `epoch` is the allocation's epoch from
    /// now on: above every loser's, so a store fenced by epochs refuses the
    /// loser's writes and takes this node's.
    fn prolonged(
        &mut self,
        loser: &NodeId,
        state: &mut Self::State,
        epoch: Epoch,
    ) -> Result<(), CallbackError>;

    /// This node no longer owns its shard, for `reason`: `winner` took it
    /// ([`ReleaseReason::LostConflict`]), or no one did (the node left, shut
    /// down, degraded, or was removed from the member list).
    fn deallocated(&mut self, winner: Option<&NodeId>, reason: ReleaseReason, state: Self::State);

    /// This node's view of the cluster's health changed.
    fn status_changed(&mut self, _cluster: &str, _old: Health, _new: Health) {}

    /// A request for this node's shard (docs/design.md 11), made with
    /// [`Cluster::request`] on any node. It runs only inside the
    /// allocation — after `allocated` returned, before `deallocated` starts
    /// — one at a time with the other callbacks. Answer through
    /// `responder`, here or later from any thread, exactly once; a
    /// responder dropped unanswered answers that the handler failed. The
    /// reply carries [`Responder::epoch`], the allocation's epoch.
    ///
    /// The default answers that this node has no handler.
    fn handle_request(
        &mut self,
        _state: &mut Self::State,
        _payload: Vec<u8>,
        responder: Responder,
    ) {
        responder.fail("this node has no request handler");
    }

    /// [`Callbacks::allocated`], with what the shard's previous owner
    /// handed off (docs/design.md 11.8): `None` when it gave nothing, or
    /// when its hand-off was lost (it crashed, or its connection broke
    /// before the last byte). Override this instead of `allocated` to take
    /// hand-offs; the default calls `allocated`.
    fn allocated_with_hand_off(
        &mut self,
        cluster: &str,
        shard: Shard,
        epoch: Epoch,
        hand_off: Option<HandOff>,
    ) -> Result<Self::State, CallbackError> {
        let _ = hand_off;
        self.allocated(cluster, shard, epoch)
    }

    /// Whether `prolonged_with_hand_off` takes hand-offs: then, after a
    /// won conflict, it waits (at most `hand_off_wait`) for the loser's
    /// `deallocated` to say what it hands off. False by default, so an
    /// application that takes none hears `prolonged` without that wait.
    fn takes_hand_offs(&self) -> bool {
        false
    }

    /// [`Callbacks::prolonged`], with what the loser handed off when it
    /// gave the shard up to this node (`None`: nothing, or lost; always
    /// `None` unless [`Callbacks::takes_hand_offs`]). The default calls
    /// `prolonged`.
    fn prolonged_with_hand_off(
        &mut self,
        loser: &NodeId,
        state: &mut Self::State,
        epoch: Epoch,
        hand_off: Option<HandOff>,
    ) -> Result<(), CallbackError> {
        let _ = hand_off;
        self.prolonged(loser, state, epoch)
    }

    /// [`Callbacks::deallocated`], returning bytes for the shard's next
    /// owner: the winner when the conflict was lost
    /// ([`ReleaseReason::LostConflict`]), the standby that takes the shard
    /// after a [`ReleaseReason::Left`]. Anything returned for another
    /// reason has no next owner and is dropped. The default calls
    /// `deallocated` and hands nothing off.
    fn deallocated_with_hand_off(
        &mut self,
        winner: Option<&NodeId>,
        reason: ReleaseReason,
        state: Self::State,
    ) -> Option<Vec<u8>> {
        self.deallocated(winner, reason, state);
        None
    }
}

/// A handle on one node's membership of one cluster. Dropping it leaves.
pub struct Cluster {
    engine: Engine,
}

/// The state of the cluster as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The cluster's name.
    pub cluster: String,
    /// This node's advertised address.
    pub node: NodeId,
    /// The health.
    pub health: Health,
    /// The configured number of shards.
    pub shard_count: u32,
    /// How many shards have an owner.
    pub allocated: usize,
    /// The owner of each shard.
    pub owners: Vec<Option<Owner>>,
    /// Every member and connected node, sorted, this node included.
    pub nodes: Vec<(NodeId, NodeState)>,
    /// What this node is doing.
    pub local: LocalState,
    /// The metadata each node in view published (those with none are left
    /// out), this node's included.
    pub metadata: std::collections::BTreeMap<NodeId, Metadata>,
    /// Every member that refused this node for a misconfiguration (a wrong
    /// cookie, cluster or version, or not in its member list), with how
    /// many times and what it said last (docs/design.md 6.8).
    pub refusals: Vec<PeerRefusals>,
    /// No member accepts this node and some refuse it: it is part of no
    /// cluster and cannot become available.
    pub misconfigured: bool,
}

impl Status {
    /// The status a snapshot shows, for node `node` of `cluster`.
    pub(crate) fn of(cluster: &str, node: &NodeId, s: &Snapshot) -> Status {
        Status {
            cluster: cluster.to_owned(),
            node: node.clone(),
            health: s.health,
            shard_count: s.shard_count,
            allocated: s.allocated_count(),
            owners: s.owners.clone(),
            nodes: s.nodes.clone(),
            local: s.local,
            metadata: s
                .metadata
                .iter()
                .map(|(node, m)| (node.clone(), (**m).clone()))
                .collect(),
            refusals: s.refusals.clone(),
            misconfigured: s.misconfigured,
        }
    }
}

/// Counters since join.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// `allocated` callbacks that returned successfully.
    pub allocations: u64,
    /// `deallocated` callbacks sent.
    pub deallocations: u64,
    /// Conflicts this node decided.
    pub conflicts_resolved: u64,
    /// Callbacks that failed or were late.
    pub failed_callbacks: u64,
    /// Peer messages ignored as senseless in the current state.
    pub ignored_messages: u64,
    /// Connections established after the first to the same peer.
    pub reconnects: u64,
    /// Handshakes refused (wrong cookie, cluster, version, unknown node, ...).
    pub refused_handshakes: u64,
    /// Connections closed for a malformed, oversized or unexpected frame.
    pub protocol_errors: u64,
    /// The latest heartbeat round trip to any peer, in microseconds.
    pub heartbeat_rtt_micros: u64,
    /// Log lines and mesh notices dropped because the log sink (the
    /// `tracing` subscriber, a log callback, the notice hook) did not keep
    /// up: they leave the engine's thread through a bounded queue, so a
    /// slow sink never delays heartbeats.
    pub log_lines_dropped: u64,
}

impl Cluster {
    /// Joins `cluster` as the node configured in `config`.
    ///
    /// Calls `nodes` and `shard_count` (on a thread of its own; with
    /// [`crate::Dispatch::Host`] on the calling thread), checks their
    /// answers and the configuration together, binds the listener and starts
    /// the engine. On any error nothing is left running.
    pub fn join<C: Callbacks>(
        cluster: &str,
        callbacks: C,
        config: Config,
    ) -> Result<Cluster, Error> {
        Ok(Cluster {
            engine: Engine::start(cluster, callbacks, config)?,
        })
    }

    /// Leaves gracefully: the shard is handed over at once (docs/design.md 6.4).
    /// Returns once `deallocated` has run and every connection is closed.
    /// Calling it again does nothing. Not allowed from inside a callback.
    pub fn leave(&self) -> Result<(), Error> {
        self.engine.leave()
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        self.engine.name()
    }

    /// This node's advertised address.
    pub fn node_id(&self) -> &NodeId {
        self.engine.me()
    }

    /// The latest snapshot of this node's view. Lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.engine.snapshot()
    }

    /// The owner of `shard` in this node's view (while two claims stand, the
    /// one a tie would keep). Lock-free, no allocation, no syscall; the
    /// returned id shares the snapshot's (one reference-count increment).
    pub fn get_node(&self, shard: Shard) -> Option<NodeId> {
        self.engine
            .with_snapshot(|s| s.owner(shard).map(|o| o.node.clone()))
    }

    /// Calls `f` with the owner of `shard`, borrowed from the snapshot: the
    /// cheapest lookup, with no reference count touched, so threads that look
    /// up the same owner at once do not contend.
    pub fn with_node<T>(&self, shard: Shard, f: impl FnOnce(Option<&NodeId>) -> T) -> T {
        self.engine
            .with_snapshot(|s| f(s.owner(shard).map(|o| &o.node)))
    }

    /// Calls `f` with the owner of `shard` and its allocation's epoch,
    /// borrowed from the snapshot like [`Cluster::with_node`].
    pub fn with_owner<T>(&self, shard: Shard, f: impl FnOnce(Option<&Owner>) -> T) -> T {
        self.engine.with_snapshot(|s| f(s.owner(shard)))
    }

    /// The owner of every shard.
    pub fn shard_map(&self) -> Vec<Option<NodeId>> {
        self.engine.with_snapshot(|s| {
            s.owners
                .iter()
                .map(|o| o.as_ref().map(|o| o.node.clone()))
                .collect()
        })
    }

    /// This node's shard and its epoch, if it owns one.
    pub fn my_shard(&self) -> Option<(Shard, Epoch)> {
        self.engine.with_snapshot(Snapshot::my_shard)
    }

    /// This node's view of the cluster's health.
    pub fn health(&self) -> Health {
        self.engine.with_snapshot(|s| s.health)
    }

    /// Health, owners, every node's state and this node's own.
    pub fn status(&self) -> Status {
        Status::of(self.name(), self.node_id(), &self.snapshot())
    }

    /// Asks `peer`, a node this one is connected to, for its own status
    /// over the mesh (sealed like every frame), and waits for at most
    /// `timeout`: the JSON object of its [`Status`] with its [`Stats`]
    /// under `"stats"`, as `minishard status` prints it. Errors:
    /// [`Error::Io`] if `peer` is not connected, [`Error::Timeout`].
    pub fn peer_status(&self, peer: &NodeId, timeout: Duration) -> Result<String, Error> {
        self.engine.ask_status(peer, timeout)
    }

    /// The metadata `node` published with its config, if it is in view
    /// (this node included) and published some. Lock-free.
    pub fn node_metadata(&self, node: &NodeId) -> Option<Arc<Metadata>> {
        self.engine.with_snapshot(|s| s.metadata(node).cloned())
    }

    /// Sends `payload` to the owner of `shard` and waits for its reply, for
    /// at most `timeout` (docs/design.md 11). Any node may ask, members and
    /// observers alike; a request for this node's own shard makes no
    /// network hop. While no owner is known (a failover, a hand-over) the
    /// request waits for one; a node that is no longer the owner sends it
    /// on to the next. It is sent to an owner at most once: every request
    /// ends in exactly one reply or one [`RequestError`].
    ///
    /// Payloads are at most the frame limit less
    /// [`crate::FRAME_OVERHEAD`]: send larger data in parts, or through
    /// your own transport (see [`Cluster::node_metadata`]).
    pub fn request(
        &self,
        shard: Shard,
        payload: impl Into<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        self.engine.request(shard, payload.into(), timeout)
    }

    /// [`Cluster::request`] for async code: the future needs no particular
    /// runtime, and works from inside a callback (for this node's own shard
    /// it completes once that callback has returned).
    pub fn request_async(
        &self,
        shard: Shard,
        payload: impl Into<Vec<u8>>,
        timeout: Duration,
    ) -> PendingReply {
        self.engine.request_async(shard, payload.into(), timeout)
    }

    /// [`Cluster::request`] without waiting: `then` gets the outcome where
    /// callbacks run (the callback thread, or [`Cluster::dispatch`] with
    /// host dispatch), one at a time with them.
    pub fn request_then(
        &self,
        shard: Shard,
        payload: impl Into<Vec<u8>>,
        timeout: Duration,
        then: impl FnOnce(Result<Reply, RequestError>) + Send + 'static,
    ) {
        self.engine
            .request_then(shard, payload.into(), timeout, then)
    }

    /// Requests of this handle in flight now.
    pub fn requests_in_flight(&self) -> usize {
        self.engine.requests_in_flight()
    }

    /// Blocks until the health is `health`, for at most `timeout`. A wait
    /// for `available` fails with [`Error::Misconfigured`] as soon as no
    /// member accepts this node and some refuse it (docs/design.md 6.8): it
    /// cannot become available then, and waiting longer would only hide why.
    pub fn wait_until(&self, health: Health, timeout: Duration) -> Result<(), Error> {
        self.engine
            .wait_until(
                |s| {
                    if s.health == health {
                        return Ok(true);
                    }
                    if health != Health::Available {
                        return Ok(false);
                    }
                    match s.misconfiguration() {
                        Some(why) => Err(Error::Misconfigured(why)),
                        None => Ok(false),
                    }
                },
                timeout,
            )
            .map_err(|e| match e {
                Error::Timeout(_) => Error::Timeout(format!(
                    "health did not become {health} within {timeout:?} (it is {})",
                    self.health()
                )),
                other => other,
            })
    }

    /// Blocks until `condition` holds for a snapshot, for at most `timeout`.
    pub fn wait_for(
        &self,
        condition: impl Fn(&Snapshot) -> bool,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.engine.wait_until(|s| Ok(condition(s)), timeout)
    }

    /// Counters since join.
    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }

    /// Host dispatch: runs up to `max` pending callbacks on this thread and
    /// returns how many ran.
    pub fn dispatch(&self, max: usize) -> Result<usize, Error> {
        self.engine.dispatch(max)
    }

    /// Host dispatch: a descriptor that is readable while callbacks are
    /// pending (for epoll, libuv, asyncio). `None` with thread dispatch.
    pub fn event_fd(&self) -> Option<std::os::fd::RawFd> {
        self.engine.event_fd()
    }

    /// Fault injection for tests, only with the `testing` feature: drops
    /// all traffic to and from `peer`, as a cut cable would, until
    /// [`Cluster::heal`].
    #[cfg(feature = "testing")]
    pub fn cut(&self, peer: &NodeId) {
        self.engine.faults().cut(peer);
    }

    /// Fault injection for tests: restores traffic with `peer`.
    #[cfg(feature = "testing")]
    pub fn heal(&self, peer: &NodeId) {
        self.engine.faults().heal(peer);
    }

    /// Fault injection for tests: restores traffic with every peer.
    #[cfg(feature = "testing")]
    pub fn heal_all(&self) {
        self.engine.faults().heal_all();
    }

    /// Fault injection for tests: stops the engine at once, as if the
    /// process died: no callback, no goodbye, connections just close. The
    /// handle stays, closed.
    #[cfg(feature = "testing")]
    pub fn crash(&self) {
        self.engine.crash();
    }

    /// The number of shards the cluster keeps (for an observer, once
    /// learned; 0 before).
    pub fn shard_count(&self) -> u32 {
        self.engine.with_snapshot(|s| s.shard_count)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = self.engine.shut_down() {
            tracing::warn!(%error, cluster = self.name(), "leaving on drop failed");
        }
    }
}
