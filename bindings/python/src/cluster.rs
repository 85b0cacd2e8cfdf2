//! `NativeCluster`: one joined cluster, the base class of the Python
//! `minishard.Cluster`.
//!
//! Lookups read the engine's snapshot while attached: they are lock-free and
//! short. Everything that waits (join, wait_until, leave, dispatch) detaches
//! from the interpreter first, because the callbacks it may be waiting for
//! need the GIL; waits run in short slices and check for signals in between,
//! so Ctrl-C works. With `dispatch="asyncio"`, a leave on the event loop's
//! thread (or while no loop runs) is carried out by a thread of its own
//! while the caller runs the callbacks the leave waits for.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use minishard::{
    Cluster, Config, Dispatch, Error, Health, LocalState, NodeId, NodeState, Stats, TlsFiles,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::callbacks::{in_callback_of, PyCallbacks, Shapes, Shared};
use crate::requests;
use crate::watch::HealthWatch;
use crate::{errors, logbridge};

/// How long a wait sleeps between two checks for signals.
const SIGNAL_SLICE: Duration = Duration::from_millis(50);
/// The longest a pumping leave waits for a callback before it looks again
/// whether the leave has finished (it is woken sooner, when it has).
const PUMP_SLICE_SECONDS: f64 = 1.0;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A duration in seconds from Python: finite and not negative.
fn seconds(py: Python<'_>, name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        errors::config(
            py,
            format!("{name} must be a finite, non-negative number of seconds, not {value}"),
        )
    })
}

/// A timeout: `None` waits for ever.
fn deadline(py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t == f64::INFINITY => Ok(None),
        Some(t) => Duration::try_from_secs_f64(t)
            .map(|d| Instant::now().checked_add(d))
            .map_err(|_| {
                errors::invalid(
                    py,
                    format!("timeout must be a non-negative number of seconds or None, not {t}"),
                )
            }),
    }
}

fn node_state(py: Python<'_>, state: NodeState) -> PyResult<Bound<'_, PyAny>> {
    let (name, shard) = match state {
        NodeState::Unavailable => ("unavailable", None),
        NodeState::Connected => ("connected", None),
        NodeState::Standby => ("standby", None),
        NodeState::Active { shard } => ("active", Some(shard)),
        NodeState::Transition => ("transition", None),
    };
    Ok((name, shard).into_pyobject(py)?.into_any())
}

fn local_state(py: Python<'_>, state: LocalState) -> PyResult<Bound<'_, PyAny>> {
    let (name, shard, epoch) = match state {
        LocalState::Idle => ("idle", None, None),
        LocalState::Standby => ("standby", None, None),
        LocalState::Allocated { shard, epoch } => ("allocated", Some(shard), Some(epoch)),
    };
    Ok((name, shard, epoch).into_pyobject(py)?.into_any())
}

/// An owner's address as a Python string, kept per shard: a lookup of an
/// unchanged owner returns the same `str` (its hash already computed)
/// instead of building a new one.
struct Named {
    node: NodeId,
    text: Py<PyString>,
}

/// Slots per shard for [`Named`]; larger clusters build strings.
const NAMED_SHARDS: u32 = 4096;

/// One node's membership of one cluster. Created joined by `__new__`;
/// `leave` (or the interpreter's exit) ends it.
#[pyclass(subclass, frozen, weakref, module = "minishard._minishard")]
pub(crate) struct NativeCluster {
    /// `None` once left (or crashed, in tests).
    cluster: ArcSwapOption<Cluster>,
    /// The counters as they were when the handle left: `stats()` keeps
    /// answering, as the C API's does.
    final_stats: OnceLock<Stats>,
    watch: Arc<HealthWatch>,
    shared: Arc<Shared>,
    name: String,
    node: String,
    /// Sized at the first lookup that finds a shard count (an observer may
    /// learn it late).
    names: OnceLock<Box<[ArcSwapOption<Named>]>>,
}

impl NativeCluster {
    fn cluster(&self, py: Python<'_>) -> PyResult<Arc<Cluster>> {
        self.cluster.load_full().ok_or_else(|| errors::closed(py))
    }

    /// Refuses a call that waits for this handle's callbacks from inside one.
    fn not_from_own_callback(&self, py: Python<'_>, what: &str) -> PyResult<()> {
        if in_callback_of(self.shared.id) {
            return Err(errors::invalid(
                py,
                format!(
                    "{what} cannot be called from inside a callback of the same cluster: it waits for callbacks to finish"
                ),
            ));
        }
        Ok(())
    }

    /// The owner's address as a `str`, from the per-shard cache when the
    /// owner is unchanged.
    fn owner_name<'py>(
        &self,
        py: Python<'py>,
        cluster: &Cluster,
        shard: u32,
        node: &NodeId,
    ) -> Bound<'py, PyString> {
        let names = match self.names.get() {
            Some(names) => names,
            None => {
                let count = cluster.snapshot().shard_count.min(NAMED_SHARDS);
                if count == 0 {
                    return PyString::new(py, node.as_str());
                }
                self.names
                    .get_or_init(|| (0..count).map(|_| ArcSwapOption::empty()).collect())
            }
        };
        let Some(slot) = names.get(shard as usize) else {
            return PyString::new(py, node.as_str());
        };
        if let Some(named) = slot.load().as_ref() {
            if named.node == *node {
                return named.text.bind(py).clone();
            }
        }
        let text = PyString::new(py, node.as_str());
        slot.store(Some(Arc::new(Named {
            node: node.clone(),
            text: text.clone().unbind(),
        })));
        text
    }

    /// Raises a `KeyboardInterrupt`/`SystemExit` a callback raised on this
    /// thread's dispatch.
    fn reraise_interrupt(&self) -> PyResult<()> {
        match self.shared.take_interrupt() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Ends the handle: `end` (leave or crash) runs detached, or, with a
    /// loop bridge to `pump`, on a thread of its own while this thread runs
    /// the callbacks it waits for. Keeps the final counters.
    fn end(
        &self,
        py: Python<'_>,
        pump: Option<&Bound<'_, PyAny>>,
        end: fn(&Cluster) -> Result<(), Error>,
    ) -> PyResult<()> {
        let Some(cluster) = self.cluster.load_full() else {
            return Ok(());
        };
        let ended = match pump {
            None => py.detach(|| end(&cluster)),
            Some(bridge) => {
                let wake = bridge.getattr("wake")?.unbind();
                let ending = cluster.clone();
                let worker = std::thread::Builder::new()
                    .name(format!("minishard-end-{}", self.name))
                    .spawn(move || {
                        let ended = end(&ending);
                        drop(ending);
                        Python::try_attach(|py| {
                            if let Err(err) = wake.call0(py) {
                                err.write_unraisable(py, None);
                            }
                        });
                        ended
                    })
                    .map_err(|e| {
                        errors::raise(
                            py,
                            "IOError",
                            format!("cannot start a thread to leave: {e}"),
                        )
                    })?;
                while !worker.is_finished() {
                    bridge.call_method1("pump", (PUMP_SLICE_SECONDS,))?;
                }
                worker
                    .join()
                    .unwrap_or_else(|_| Err(Error::Io("the thread that left panicked".into())))
            }
        };
        ended.map_err(|e| errors::from_engine(py, e))?;
        let _ = self.final_stats.set(cluster.stats());
        self.cluster.store(None);
        py.detach(|| drop(cluster));
        Ok(())
    }
}

#[pymethods]
impl NativeCluster {
    /// Joins `name` (see `minishard.join`, which checks the arguments' types
    /// and calls this).
    #[new]
    #[pyo3(signature = (
        name, callbacks, listen, cookie, *, advertise=None, observer=false, host_dispatch=false,
        loop_bridge=None, allocated_epoch=true, prolonged_epoch=true, deallocated_reason=true,
        allocated_hand_off=false, prolonged_hand_off=false, seconds=None, counts=None, choices=None, tls_cert=None, tls_key=None, tls_ca=None, metadata=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: String,
        callbacks: &Bound<'_, PyAny>,
        listen: String,
        cookie: Cow<'_, [u8]>,
        advertise: Option<String>,
        observer: bool,
        host_dispatch: bool,
        loop_bridge: Option<Py<PyAny>>,
        allocated_epoch: bool,
        prolonged_epoch: bool,
        deallocated_reason: bool,
        allocated_hand_off: bool,
        prolonged_hand_off: bool,
        seconds: Option<HashMap<String, f64>>,
        counts: Option<HashMap<String, u64>>,
        choices: Option<HashMap<String, String>>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        tls_ca: Option<PathBuf>,
        metadata: Option<std::collections::BTreeMap<String, String>>,
    ) -> PyResult<NativeCluster> {
        let mut config = Config::new(listen, cookie.into_owned());
        config.advertise = advertise;
        config.observer = observer;
        config.dispatch = if host_dispatch {
            Dispatch::Host
        } else {
            Dispatch::Thread
        };
        // The settings of `minishard::settings`, by name: timings in
        // seconds, the rest in their unit. The engine checks each range
        // and names the setting.
        let engine = |py, error| errors::from_engine(py, error);
        for (name, value) in seconds.unwrap_or_default() {
            let value = self::seconds(py, &name, value)?;
            config
                .set_duration(&name, value)
                .map_err(|e| engine(py, e))?;
        }
        for (name, value) in counts.unwrap_or_default() {
            config.set(&name, value).map_err(|e| engine(py, e))?;
        }
        config.metadata = metadata.unwrap_or_default();
        for (name, value) in choices.unwrap_or_default() {
            config
                .set_choice(&name, &value)
                .map_err(|e| engine(py, e))?;
        }
        // minishard.join checks that the three come together.
        if let (Some(cert), Some(key), Some(ca)) = (tls_cert, tls_key, tls_ca) {
            config.tls = Some(TlsFiles { cert, key, ca });
        }

        let shared = Shared::new(
            NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name.clone(),
            host_dispatch,
        );
        let shapes = Shapes {
            allocated_epoch,
            prolonged_epoch,
            deallocated_reason,
            allocated_hand_off,
            prolonged_hand_off,
        };
        let app = PyCallbacks::new(py, callbacks, shapes, loop_bridge, shared.clone())?;
        logbridge::start(py)?;
        // Join calls `nodes` and `shard_count` on a thread of its own and
        // waits for it: that thread needs the GIL.
        let joined = py.detach(|| Cluster::join(&name, app, config));
        let raised = shared.joined();
        let cluster = joined.map_err(|error| {
            let err = errors::from_engine(py, error);
            if let Some(cause) = raised {
                err.set_cause(py, Some(cause));
            }
            err
        })?;
        let node = cluster.node_id().to_string();
        Ok(NativeCluster {
            cluster: ArcSwapOption::new(Some(Arc::new(cluster))),
            final_stats: OnceLock::new(),
            watch: Arc::default(),
            shared,
            name,
            node,
            names: OnceLock::new(),
        })
    }

    /// The cluster's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// This node's advertised address, `host:port`.
    #[getter(node)]
    fn advertised(&self) -> &str {
        &self.node
    }

    /// True once the handle has left.
    #[getter]
    fn closed(&self) -> bool {
        self.cluster.load().is_none()
    }

    /// The owner of `shard` in this node's view, or None.
    fn get_node<'py>(&self, py: Python<'py>, shard: i64) -> PyResult<Option<Bound<'py, PyString>>> {
        let guard = self.cluster.load();
        let cluster = guard.as_ref().ok_or_else(|| errors::closed(py))?;
        // Borrowed from the snapshot: no reference count touched.
        let found = u32::try_from(shard).ok().map(|s| {
            (
                s,
                cluster.with_node(s, |n| n.map(|n| self.owner_name(py, cluster, s, n))),
            )
        });
        match found {
            Some((_, Some(node))) => Ok(Some(node)),
            Some((shard, None)) if shard < cluster.snapshot().shard_count => Ok(None),
            _ => {
                let count = cluster.snapshot().shard_count;
                Err(errors::invalid(
                    py,
                    format!(
                        "shard {shard} does not exist: the cluster keeps {count} shards, 0 to {}",
                        count.saturating_sub(1)
                    ),
                ))
            }
        }
    }

    /// The owner of every shard (None where there is none).
    fn shard_map(&self, py: Python<'_>) -> PyResult<Vec<Option<String>>> {
        let guard = self.cluster.load();
        let cluster = guard.as_ref().ok_or_else(|| errors::closed(py))?;
        Ok(cluster
            .shard_map()
            .into_iter()
            .map(|o| o.map(|n| n.as_str().to_owned()))
            .collect())
    }

    /// `(shard, epoch)` if this node owns a shard.
    fn my_shard(&self, py: Python<'_>) -> PyResult<Option<(u32, u64)>> {
        let guard = self.cluster.load();
        let cluster = guard.as_ref().ok_or_else(|| errors::closed(py))?;
        Ok(cluster.my_shard())
    }

    /// The health's name.
    fn _health(&self, py: Python<'_>) -> PyResult<&'static str> {
        let guard = self.cluster.load();
        let cluster = guard.as_ref().ok_or_else(|| errors::closed(py))?;
        Ok(cluster.health().as_str())
    }

    /// Everything `status()` shows, as plain values.
    fn _status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let status = self.cluster(py)?.status();
        let d = PyDict::new(py);
        d.set_item("cluster", &status.cluster)?;
        d.set_item("node", status.node.as_str())?;
        d.set_item("health", status.health.as_str())?;
        d.set_item("shard_count", status.shard_count)?;
        d.set_item("allocated", status.allocated)?;
        let owners: Vec<Option<(&str, u64)>> = status
            .owners
            .iter()
            .map(|o| o.as_ref().map(|o| (o.node.as_str(), o.epoch)))
            .collect();
        d.set_item("owners", owners)?;
        let nodes = PyDict::new(py);
        for (node, state) in &status.nodes {
            nodes.set_item(node.as_str(), node_state(py, *state)?)?;
        }
        d.set_item("nodes", nodes)?;
        d.set_item("local", local_state(py, status.local)?)?;
        let refusals = PyDict::new(py);
        for r in &status.refusals {
            let entry = (r.count, r.reason.as_str(), r.detail.as_str(), r.refusing);
            refusals.set_item(r.peer.as_str(), entry)?;
        }
        d.set_item("refusals", refusals)?;
        d.set_item("misconfigured", status.misconfigured)?;
        let metadata = PyDict::new(py);
        for (node, m) in &status.metadata {
            metadata.set_item(node.as_str(), m.clone())?;
        }
        d.set_item("metadata", metadata)?;
        Ok(d)
    }

    /// Why no member accepts this node, while that is so (docs/design.md 6.8).
    fn _misconfiguration(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let guard = self.cluster.load();
        let cluster = guard.as_ref().ok_or_else(|| errors::closed(py))?;
        Ok(cluster.snapshot().misconfiguration())
    }

    /// The metadata `node` published, or None if it is not in view or
    /// published none.
    fn node_metadata(
        &self,
        py: Python<'_>,
        node: &str,
    ) -> PyResult<Option<std::collections::BTreeMap<String, String>>> {
        let id = NodeId::parse(node).map_err(|e| errors::invalid(py, e.to_string()))?;
        Ok(self.cluster(py)?.node_metadata(&id).map(|m| (*m).clone()))
    }

    /// Sends a request and waits, detached, for its reply's bytes. Waits in
    /// slices so that Ctrl-C interrupts it (the request is then abandoned,
    /// not cancelled: a request already sent may still run).
    fn _request<'py>(
        &self,
        py: Python<'py>,
        shard: u32,
        data: std::borrow::Cow<'_, [u8]>,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let timeout = seconds(py, "timeout", timeout)?;
        let cluster = self.cluster(py)?;
        let payload = data.into_owned();
        let own = cluster.my_shard().is_some_and(|(mine, _)| mine == shard);
        if own || in_callback_of(self.shared.id) {
            // This node's own shard: the engine runs the handler on this
            // thread when it can (no thread hop), and refuses at once what
            // would wait for this very callback.
            let reply = py
                .detach(|| cluster.request(shard, payload, timeout))
                .map_err(|e| requests::error(py, e))?;
            return Ok(PyBytes::new(py, &reply.payload));
        }
        let pending = cluster.request_async(shard, payload, timeout);
        drop(cluster);
        loop {
            if let Some(outcome) = py.detach(|| pending.wait_timeout(SIGNAL_SLICE)) {
                let reply = outcome.map_err(|e| requests::error(py, e))?;
                return Ok(PyBytes::new(py, &reply.payload));
            }
            py.check_signals()?;
        }
    }

    /// Sends a request; `done((data, node, epoch), None)` or `done(None,
    /// exception)` is called once, where callbacks run.
    fn _request_async(
        &self,
        py: Python<'_>,
        shard: u32,
        data: std::borrow::Cow<'_, [u8]>,
        timeout: f64,
        done: Py<PyAny>,
    ) -> PyResult<()> {
        let timeout = seconds(py, "timeout", timeout)?;
        let cluster = self.cluster(py)?;
        let payload = data.into_owned();
        py.detach(|| {
            cluster.request_then(shard, payload, timeout, move |outcome| {
                Python::try_attach(|py| {
                    let called = match outcome {
                        Ok(reply) => done.call1(
                            py,
                            (
                                (
                                    PyBytes::new(py, &reply.payload),
                                    reply.node.as_str(),
                                    reply.epoch,
                                ),
                                py.None(),
                            ),
                        ),
                        Err(error) => {
                            let exception = requests::error(py, error).into_value(py);
                            done.call1(py, (py.None(), exception))
                        }
                    };
                    if let Err(err) = called {
                        err.write_unraisable(py, None);
                    }
                });
            })
        });
        Ok(())
    }

    /// The counters, as a dict.
    fn _stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = match (self.cluster.load().as_ref(), self.final_stats.get()) {
            (Some(cluster), _) => cluster.stats(),
            (None, Some(last)) => *last,
            (None, None) => return Err(errors::closed(py)),
        };
        let d = PyDict::new(py);
        d.set_item("allocations", s.allocations)?;
        d.set_item("deallocations", s.deallocations)?;
        d.set_item("conflicts_resolved", s.conflicts_resolved)?;
        d.set_item("failed_callbacks", s.failed_callbacks)?;
        d.set_item("ignored_messages", s.ignored_messages)?;
        d.set_item("reconnects", s.reconnects)?;
        d.set_item("refused_handshakes", s.refused_handshakes)?;
        d.set_item("protocol_errors", s.protocol_errors)?;
        d.set_item("heartbeat_rtt_micros", s.heartbeat_rtt_micros)?;
        Ok(d)
    }

    /// Waits, detached, until the health is `health`.
    #[pyo3(signature = (health, timeout=None))]
    fn _wait_until(&self, py: Python<'_>, health: &str, timeout: Option<f64>) -> PyResult<()> {
        let target: Health = health.parse().map_err(|e: String| errors::invalid(py, e))?;
        let deadline = deadline(py, timeout)?;
        self.not_from_own_callback(py, "wait_until")?;
        loop {
            let cluster = self.cluster(py)?;
            let remaining = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => SIGNAL_SLICE,
            };
            let waited = py.detach(|| {
                let waited = cluster.wait_until(target, remaining.min(SIGNAL_SLICE));
                // Not held across slices: a leave may be waiting for it.
                drop(cluster);
                waited
            });
            match waited {
                Ok(()) => return Ok(()),
                Err(Error::Timeout(_)) => {}
                Err(other) => return Err(errors::from_engine(py, other)),
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let now = self._health(py)?;
                return Err(errors::timeout(
                    py,
                    format!(
                        "health did not become {target} within {}s (it is {now})",
                        timeout.unwrap_or_default()
                    ),
                ));
            }
        }
    }

    /// Calls `watcher(health_name)` from a thread of the handle's own at
    /// every change of health, and `watcher(None)` once the handle has
    /// stopped, until `_unwatch_health(token)`. Returns the token.
    fn _watch_health(&self, py: Python<'_>, watcher: Py<PyAny>) -> PyResult<u64> {
        let cluster = self.cluster(py)?;
        self.watch.add(cluster, watcher).map_err(|e| {
            errors::raise(
                py,
                "IOError",
                format!("cannot start the health watch thread: {e}"),
            )
        })
    }

    /// Stops calling the watcher `token` names.
    fn _unwatch_health(&self, token: u64) {
        drop(self.watch.remove(token));
    }

    /// Host dispatch: runs up to `max` pending callbacks on this thread and
    /// returns how many ran.
    #[pyo3(signature = (max=64))]
    fn dispatch(&self, py: Python<'_>, max: usize) -> PyResult<usize> {
        // Dispatching from inside a callback would run callbacks inside a
        // callback, out of order.
        self.not_from_own_callback(py, "dispatch")?;
        let cluster = self.cluster(py)?;
        let ran = py
            .detach(|| cluster.dispatch(max))
            .map_err(|e| errors::from_engine(py, e))?;
        self.reraise_interrupt()?;
        Ok(ran)
    }

    /// Host dispatch: the descriptor that is readable while callbacks are
    /// pending; None with a callback thread.
    fn fileno(&self, py: Python<'_>) -> PyResult<Option<i32>> {
        Ok(self.cluster(py)?.event_fd())
    }

    /// Raises `InvalidArgumentError` if called from inside one of this
    /// cluster's callbacks (where `what` would wait for itself).
    fn _check_not_in_callback(&self, py: Python<'_>, what: &str) -> PyResult<()> {
        self.not_from_own_callback(py, what)
    }

    /// Leaves gracefully (docs/design.md 6.4); returns once `deallocated` has run
    /// and the connections are closed. Again: does nothing. `pump`: the loop
    /// bridge whose callbacks this thread must run meanwhile.
    #[pyo3(signature = (pump=None))]
    fn _native_leave(&self, py: Python<'_>, pump: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.not_from_own_callback(py, "leave")?;
        // With host dispatch the leave's callbacks run here, attaching.
        self.end(py, pump, Cluster::leave)?;
        self.reraise_interrupt()
    }

    // Fault injection for the package's own tests: only in builds with the
    // `testing` feature, never in the wheel users install.
    /// TESTING ONLY: drops all traffic to and from `peer` until healed.
    #[cfg(feature = "testing")]
    fn _testing_cut(&self, py: Python<'_>, peer: &str) -> PyResult<()> {
        let peer = NodeId::parse(peer).map_err(|e| errors::config(py, e.to_string()))?;
        self.cluster(py)?.cut(&peer);
        Ok(())
    }

    /// TESTING ONLY: restores traffic with `peer`.
    #[cfg(feature = "testing")]
    fn _testing_heal(&self, py: Python<'_>, peer: &str) -> PyResult<()> {
        let peer = NodeId::parse(peer).map_err(|e| errors::config(py, e.to_string()))?;
        self.cluster(py)?.heal(&peer);
        Ok(())
    }

    /// TESTING ONLY: restores traffic with every peer.
    #[cfg(feature = "testing")]
    fn _testing_heal_all(&self, py: Python<'_>) -> PyResult<()> {
        self.cluster(py)?.heal_all();
        Ok(())
    }

    /// TESTING ONLY: stops the node at once, as if its process died: no
    /// `deallocated`, no goodbye; peers wait out `node_grace`.
    #[cfg(feature = "testing")]
    #[pyo3(signature = (pump=None))]
    fn _testing_crash_native(
        &self,
        py: Python<'_>,
        pump: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.not_from_own_callback(py, "_testing_crash")?;
        self.end(py, pump, |cluster| {
            cluster.crash();
            Ok(())
        })
    }
}

impl Drop for NativeCluster {
    fn drop(&mut self) {
        // The Python package keeps every joined cluster until it leaves, so
        // this is a last resort: leaving waits for the callback thread,
        // which needs the GIL, so wait detached.
        if let Some(cluster) = self.cluster.swap(None) {
            Python::attach(|py| py.detach(|| drop(cluster)));
        }
    }
}
