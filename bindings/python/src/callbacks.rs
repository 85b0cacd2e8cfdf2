//! The application's Python object as the engine's [`Callbacks`].
//!
//! Each callback attaches to the interpreter (takes the GIL) only while the
//! Python method runs. With `dispatch="asyncio"` the method runs on the
//! event loop instead: the engine's callback thread hands it to the
//! package's loop bridge and waits, detached, until it has returned, or,
//! for an `async def` callback, until its coroutine has finished.
//!
//! An exception, or an answer of the wrong type, becomes a
//! [`CallbackError`], which the engine handles as docs/design.md section 3 says;
//! it is logged here, once, to `logging.getLogger("minishard.callbacks")`
//! with its traceback and the `cluster`, `shard` and `callback` as record
//! attributes. During `join` the first such exception is kept instead, to
//! be chained to the `CallbackError` that `join` raises.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

use minishard::{
    CallbackError, Callbacks, Epoch, HandOff, Health, NodeId, ReleaseReason, Responder, Shard,
};
use pyo3::exceptions::{PyException, PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyMemoryView, PyString, PyTraceback, PyTuple,
};

use crate::errors;

/// Methods the callbacks object must have; `status_changed` is optional.
const REQUIRED: [&str; 6] = [
    "nodes",
    "shard_count",
    "allocated",
    "score",
    "prolonged",
    "deallocated",
];

/// What a handle and its callbacks share.
pub(crate) struct Shared {
    /// Tells this handle's callbacks apart from other handles' on a thread.
    pub(crate) id: u64,
    pub(crate) cluster: String,
    /// True during join's own calls (`nodes`, then `shard_count`, on a
    /// thread of the engine's, before it starts anything else): their
    /// failures are raised by `join`, not logged, and they run where join
    /// waits, not on the event loop.
    joining: AtomicBool,
    join_error: Mutex<Option<PyErr>>,
    /// Host dispatch: callbacks run inside the host's own calls
    /// (`dispatch`, `leave`, `wait_until`).
    host_dispatch: bool,
    /// With host dispatch, a `KeyboardInterrupt` or `SystemExit` raised
    /// inside a callback, and the thread it was raised on: the call that ran
    /// the callback raises it again there, as if the callback had been
    /// called directly. (On a callback thread there is nobody to raise it to.)
    interrupt: Mutex<Option<(ThreadId, PyErr)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one is still whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn new(id: u64, cluster: String, host_dispatch: bool) -> Arc<Shared> {
        Arc::new(Shared {
            id,
            cluster,
            joining: AtomicBool::new(true),
            join_error: Mutex::new(None),
            host_dispatch,
            interrupt: Mutex::new(None),
        })
    }

    /// `join` returned: from now on, failures are logged. Returns the
    /// exception a join-time callback raised, if any.
    pub(crate) fn joined(&self) -> Option<PyErr> {
        self.joining.store(false, Ordering::Release);
        lock(&self.join_error).take()
    }

    /// The interrupt a callback raised on this thread, if any.
    pub(crate) fn take_interrupt(&self) -> Option<PyErr> {
        let mut interrupt = lock(&self.interrupt);
        match interrupt.as_ref() {
            Some((thread, _)) if *thread == std::thread::current().id() => {
                interrupt.take().map(|(_, err)| err)
            }
            _ => None,
        }
    }
}

thread_local! {
    /// The id of the handle whose callback runs on this thread (0: none).
    static RUNNING: Cell<u64> = const { Cell::new(0) };
}

/// Whether this thread is inside a callback of handle `id`, where waiting
/// for that handle's callbacks would wait for itself.
pub(crate) fn in_callback_of(id: u64) -> bool {
    RUNNING.with(|r| r.get() == id)
}

/// Marks this thread as running a callback of one handle, until dropped.
struct Running(u64);

impl Running {
    fn enter(id: u64) -> Running {
        Running(RUNNING.with(|r| r.replace(id)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.with(|r| r.set(self.0));
    }
}

/// Ends join's own calls when dropped.
struct JoinCallsOver<'a>(&'a Shared);

impl Drop for JoinCallsOver<'_> {
    fn drop(&mut self) {
        self.0.joining.store(false, Ordering::Release);
    }
}

/// `repr(value)`, cut short for an error message.
fn short_repr(value: &Bound<'_, PyAny>) -> String {
    let text = value
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unrepresentable>".into());
    let type_name = value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    let mut short: String = text.chars().take(80).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    format!("{short} ({type_name})")
}

/// An integer answer: an `int` or anything with `__index__`, never a bool
/// or a float (which would round silently).
fn integer(value: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    let wrong = || {
        PyTypeError::new_err(format!(
            "{what} returned {}: expected an int",
            short_repr(value)
        ))
    };
    if value.is_instance_of::<PyBool>() || !value.hasattr("__index__")? {
        return Err(wrong());
    }
    value
        .call_method0("__index__")?
        .extract::<i64>()
        .map_err(|_| {
            PyOverflowError::new_err(format!(
                "{what} returned {}: out of range for a 64-bit integer",
                short_repr(value)
            ))
        })
}

/// `minishard.Health(name)`: what `status_changed` receives.
fn health<'py>(py: Python<'py>, value: Health) -> PyResult<Bound<'py, PyAny>> {
    py.import("minishard._types")?
        .getattr("Health")?
        .call1((value.as_str(),))
}

/// What the engine does about a failed callback (docs/design.md section 3), for
/// the one log line that reports it.
fn consequence(callback: &str) -> &'static str {
    match callback {
        "allocated" => "; the shard is given back and offered again after allocation_retry",
        "score" => "; this node ranks last in the conflict",
        "nodes" => "; the member list stays as it was",
        _ => "",
    }
}

/// Logs one callback failure at ERROR to `minishard.callbacks`, with the
/// exception's traceback and `cluster`, `shard` (None when the callback is
/// not about one) and `callback` as attributes of the record. The record's
/// place (pathname, lineno, funcName) is where the exception was raised.
pub(crate) fn log_failure(
    py: Python<'_>,
    cluster: &str,
    shard: Option<Shard>,
    callback: &str,
    message: &str,
    err: &PyErr,
) {
    let logged = (|| -> PyResult<()> {
        let logging = py.import("logging")?;
        let logger = logging.call_method1("getLogger", ("minishard.callbacks",))?;
        let error = logging.getattr("ERROR")?;
        if !logger
            .call_method1("isEnabledFor", (&error,))?
            .is_truthy()?
        {
            return Ok(());
        }
        let extra = PyDict::new(py);
        extra.set_item("cluster", cluster)?;
        extra.set_item("shard", shard)?;
        extra.set_item("callback", callback)?;
        let (mut file, mut line, mut function) = ("<minishard>".to_owned(), 0, py.None());
        if let Some(mut tb) = err.traceback(py) {
            while let Ok(next) = tb.getattr("tb_next")?.cast_into::<PyTraceback>() {
                tb = next;
            }
            let code = tb.getattr("tb_frame")?.getattr("f_code")?;
            file = code.getattr("co_filename")?.extract()?;
            line = tb.getattr("tb_lineno")?.extract()?;
            function = code.getattr("co_name")?.unbind();
        }
        let record = logger.call_method1(
            "makeRecord",
            (
                "minishard.callbacks",
                error,
                file,
                line,
                "%s",
                (message,),
                (err.get_type(py), err.value(py), err.traceback(py)),
                function,
                extra,
            ),
        )?;
        logger.call_method1("handle", (record,))?;
        Ok(())
    })();
    if let Err(failure) = logged {
        // The logging configuration itself is broken: say so the way
        // Python does for errors it has nowhere to raise.
        failure.write_unraisable(py, None);
    }
}

/// Whether `value` is something to await (a coroutine, a future, a task).
fn awaitable(value: &Bound<'_, PyAny>) -> bool {
    value.get_type().hasattr("__await__").unwrap_or(false)
}

/// What `handle_request` returned: the reply, or a future of it.
enum Answer {
    Now(Vec<u8>),
    Later(Py<PyAny>),
}

impl Answer {
    fn of(value: &Bound<'_, PyAny>) -> PyResult<Answer> {
        if value.is_instance_of::<PyBytes>()
            || value.is_instance_of::<PyByteArray>()
            || value.is_instance_of::<PyMemoryView>()
        {
            return Ok(Answer::Now(
                value
                    .extract::<std::borrow::Cow<'_, [u8]>>()
                    .map(|c| c.into_owned())
                    .or_else(|_| value.call_method0("tobytes")?.extract::<Vec<u8>>())?,
            ));
        }
        if value.hasattr("add_done_callback")? && !awaitable(value) {
            return Ok(Answer::Later(value.clone().unbind()));
        }
        Err(PyTypeError::new_err(format!(
            "handle_request returned {}: expected bytes (or a concurrent.futures.Future of bytes)",
            short_repr(value)
        )))
    }
}

/// The bound methods of the application's object, fetched once at join.
pub(crate) struct PyCallbacks {
    nodes: Py<PyAny>,
    shard_count: Py<PyAny>,
    allocated: Py<PyAny>,
    score: Py<PyAny>,
    prolonged: Py<PyAny>,
    deallocated: Py<PyAny>,
    status_changed: Option<Py<PyAny>>,
    /// Optional: without it, requests fail saying so.
    handle_request: Option<Py<PyAny>>,
    /// Which of the trailing arguments the application's methods take.
    shapes: Shapes,
    /// `dispatch="asyncio"`: the loop bridge's `run(method, args)`, which
    /// runs a callback on the event loop and returns its (awaited) result.
    bridge: Option<Py<PyAny>>,
    shared: Arc<Shared>,
    /// The shard of the current allocation, for log lines.
    shard: Option<Shard>,
}

/// The trailing arguments the application's methods accept (`minishard.join`
/// looks at their signatures): methods written before an argument was added
/// keep working without it.
#[derive(Clone, Copy)]
pub(crate) struct Shapes {
    /// `allocated(cluster, shard, epoch)` (false only for the deprecated
    /// two-argument form).
    pub allocated_epoch: bool,
    /// `prolonged(loser, state, epoch)`.
    pub prolonged_epoch: bool,
    /// `deallocated(winner, state, reason)`.
    pub deallocated_reason: bool,
    /// `allocated(cluster, shard, epoch, hand_off)`.
    pub allocated_hand_off: bool,
    /// `prolonged(loser, state, epoch, hand_off)`.
    pub prolonged_hand_off: bool,
}

impl PyCallbacks {
    /// Checks that `app` has every callback, callable.
    pub(crate) fn new(
        py: Python<'_>,
        app: &Bound<'_, PyAny>,
        shapes: Shapes,
        bridge: Option<Py<PyAny>>,
        shared: Arc<Shared>,
    ) -> PyResult<PyCallbacks> {
        let method = |name: &str, required: bool| -> PyResult<Option<Py<PyAny>>> {
            match app.getattr(name) {
                Ok(m) if m.is_callable() => Ok(Some(m.unbind())),
                Ok(m) if m.is_none() && !required => Ok(None),
                Ok(m) => Err(errors::config(
                    py,
                    format!(
                        "the callbacks object's {name} is {}, not a method",
                        short_repr(&m)
                    ),
                )),
                Err(_) if !required => Ok(None),
                Err(_) => Err(errors::config(
                    py,
                    format!(
                        "the callbacks object {} has no {name} method (it needs {})",
                        short_repr(app),
                        REQUIRED.join(", ")
                    ),
                )),
            }
        };
        let required = |name| -> PyResult<Py<PyAny>> {
            Ok(method(name, true)?.expect("a required method is present"))
        };
        Ok(PyCallbacks {
            nodes: required("nodes")?,
            shard_count: required("shard_count")?,
            allocated: required("allocated")?,
            score: required("score")?,
            prolonged: required("prolonged")?,
            deallocated: required("deallocated")?,
            status_changed: method("status_changed", false)?,
            handle_request: method("handle_request", false)?,
            shapes,
            bridge,
            shared,
            shard: None,
        })
    }

    /// Calls one of the application's methods: here, or on the event loop
    /// through the bridge once joined (join-time callbacks run while the
    /// loop's thread waits in `join`). Without the bridge, a coroutine is
    /// refused rather than silently never run.
    fn invoke<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        method: &Py<PyAny>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(bridge) = &self.bridge {
            if !self.shared.joining.load(Ordering::Acquire) {
                return bridge.bind(py).call1((method, args));
            }
        }
        let result = method.bind(py).call1(args)?;
        if awaitable(&result) {
            if result.hasattr("close")? {
                // A coroutine never awaited would warn at garbage collection.
                result.call_method0("close")?;
            }
            let hint = if self.bridge.is_some() {
                "nodes and shard_count run inside join, which cannot await: make them plain def"
            } else {
                "async def callbacks need dispatch=\"asyncio\""
            };
            return Err(PyTypeError::new_err(format!(
                "{name} returned {}: {hint}",
                short_repr(&result)
            )));
        }
        Ok(result)
    }

    /// Runs one callback attached to the interpreter, turning a Python
    /// failure into a [`CallbackError`].
    fn call<T>(
        &self,
        name: &'static str,
        f: impl for<'py> FnOnce(Python<'py>) -> PyResult<T>,
    ) -> Result<T, CallbackError> {
        let _running = Running::enter(self.shared.id);
        Python::try_attach(|py| f(py).map_err(|err| self.failed(py, name, err))).unwrap_or_else(
            || {
                Err(CallbackError(
                    "the Python interpreter is shutting down".into(),
                ))
            },
        )
    }

    fn failed(&self, py: Python<'_>, name: &'static str, err: PyErr) -> CallbackError {
        let message = match err.value(py).str() {
            Ok(text) if !text.to_string().is_empty() => {
                format!(
                    "{}: {text}",
                    err.get_type(py)
                        .name()
                        .map_or("?".into(), |n| n.to_string())
                )
            }
            _ => err
                .get_type(py)
                .name()
                .map_or("?".into(), |n| n.to_string()),
        };
        if self.shared.joining.load(Ordering::Acquire) {
            lock(&self.shared.join_error).get_or_insert(err);
        } else {
            if self.shared.host_dispatch && !err.is_instance_of::<PyException>(py) {
                *lock(&self.shared.interrupt) =
                    Some((std::thread::current().id(), err.clone_ref(py)));
            }
            let shard = match name {
                "nodes" | "shard_count" | "status_changed" => None,
                _ => self.shard,
            };
            let at = shard.map(|s| format!(" for shard {s}")).unwrap_or_default();
            log_failure(
                py,
                &self.shared.cluster,
                shard,
                name,
                &format!(
                    "the {name} callback of cluster '{}' failed{at}: {message}{}",
                    self.shared.cluster,
                    consequence(name)
                ),
                &err,
            );
        }
        CallbackError(message)
    }
}

impl Callbacks for PyCallbacks {
    type State = Py<PyAny>;

    fn nodes(&mut self, cluster: &str) -> Result<Vec<String>, CallbackError> {
        self.call("nodes", |py| {
            let args = (cluster,).into_pyobject(py)?;
            let list = self.invoke(py, "nodes", &self.nodes, args)?;
            let wrong = || {
                PyTypeError::new_err(format!(
                    "nodes returned {}: expected a list of \"host:port\" strings",
                    short_repr(&list)
                ))
            };
            if list.is_instance_of::<PyString>() {
                return Err(wrong());
            }
            list.try_iter()
                .map_err(|_| wrong())?
                .map(|item| item?.extract::<String>().map_err(|_| wrong()))
                .collect()
        })
    }

    fn shard_count(&mut self, cluster: &str) -> Result<u32, CallbackError> {
        // Asked once, at join, right after `nodes`: every later callback
        // comes from the engine's callback thread.
        let _over = JoinCallsOver(&self.shared);
        self.call("shard_count", |py| {
            let args = (cluster,).into_pyobject(py)?;
            let answer = self.invoke(py, "shard_count", &self.shard_count, args)?;
            let n = integer(&answer, "shard_count")?;
            u32::try_from(n).map_err(|_| {
                PyTypeError::new_err(format!(
                    "shard_count returned {n}: expected an int from 1 to the number of members"
                ))
            })
        })
    }

    fn allocated(
        &mut self,
        cluster: &str,
        shard: Shard,
        epoch: Epoch,
    ) -> Result<Py<PyAny>, CallbackError> {
        self.allocated_with_hand_off(cluster, shard, epoch, None)
    }

    fn allocated_with_hand_off(
        &mut self,
        cluster: &str,
        shard: Shard,
        epoch: Epoch,
        hand_off: Option<HandOff>,
    ) -> Result<Py<PyAny>, CallbackError> {
        self.shard = Some(shard);
        let state = self.call("allocated", |py| {
            let args = if self.shapes.allocated_hand_off {
                let hand_off = py_hand_off(py, hand_off)?;
                (cluster, shard, epoch, hand_off).into_pyobject(py)?
            } else if self.shapes.allocated_epoch {
                (cluster, shard, epoch).into_pyobject(py)?
            } else {
                (cluster, shard).into_pyobject(py)?
            };
            Ok(self
                .invoke(py, "allocated", &self.allocated, args)?
                .unbind())
        });
        if state.is_err() {
            self.shard = None;
        }
        state
    }

    fn score(&mut self, state: &mut Py<PyAny>) -> Result<i64, CallbackError> {
        self.call("score", |py| {
            let args = (state.bind(py),).into_pyobject(py)?;
            integer(&self.invoke(py, "score", &self.score, args)?, "score")
        })
    }

    fn prolonged(
        &mut self,
        loser: &NodeId,
        state: &mut Py<PyAny>,
        epoch: Epoch,
    ) -> Result<(), CallbackError> {
        self.prolonged_with_hand_off(loser, state, epoch, None)
    }

    fn takes_hand_offs(&self) -> bool {
        self.shapes.prolonged_hand_off
    }

    fn prolonged_with_hand_off(
        &mut self,
        loser: &NodeId,
        state: &mut Py<PyAny>,
        epoch: Epoch,
        hand_off: Option<HandOff>,
    ) -> Result<(), CallbackError> {
        self.call("prolonged", |py| {
            let args = if self.shapes.prolonged_hand_off {
                let hand_off = py_hand_off(py, hand_off)?;
                (loser.as_str(), state.bind(py), epoch, hand_off).into_pyobject(py)?
            } else if self.shapes.prolonged_epoch {
                (loser.as_str(), state.bind(py), epoch).into_pyobject(py)?
            } else {
                (loser.as_str(), state.bind(py)).into_pyobject(py)?
            };
            let new_state = self.invoke(py, "prolonged", &self.prolonged, args)?;
            // Replaced while attached, so the old state is released now.
            *state = new_state.unbind();
            Ok(())
        })
    }

    fn deallocated(&mut self, winner: Option<&NodeId>, reason: ReleaseReason, state: Py<PyAny>) {
        self.deallocated_with_hand_off(winner, reason, state);
    }

    fn deallocated_with_hand_off(
        &mut self,
        winner: Option<&NodeId>,
        reason: ReleaseReason,
        state: Py<PyAny>,
    ) -> Option<Vec<u8>> {
        // The engine has nothing to do about a failure here: it is logged.
        // The state moves in, so the application's last reference to it
        // goes away while attached. Bytes returned are the hand-off.
        let hand_off = self.call("deallocated", |py| {
            let winner = winner.map(NodeId::as_str);
            let args = if self.shapes.deallocated_reason {
                let reason = py
                    .import("minishard._types")?
                    .getattr("Reason")?
                    .call1((reason.as_str(),))?;
                (winner, state.into_bound(py), reason).into_pyobject(py)?
            } else {
                (winner, state.into_bound(py)).into_pyobject(py)?
            };
            let returned = self.invoke(py, "deallocated", &self.deallocated, args)?;
            if returned.is_none() {
                return Ok(None);
            }
            match Answer::of(&returned) {
                Ok(Answer::Now(bytes)) => Ok(Some(bytes)),
                _ => Err(PyTypeError::new_err(format!(
                    "deallocated returned {}: return bytes to hand off, or None",
                    short_repr(&returned)
                ))),
            }
        });
        self.shard = None;
        hand_off.ok().flatten()
    }

    fn handle_request(&mut self, state: &mut Py<PyAny>, payload: Vec<u8>, responder: Responder) {
        let Some(method) = &self.handle_request else {
            return responder.fail("the callbacks object has no handle_request method");
        };
        let answer = self.call("handle_request", |py| {
            let args = (state.bind(py), PyBytes::new(py, &payload)).into_pyobject(py)?;
            let answer = self.invoke(py, "handle_request", method, args)?;
            Answer::of(&answer)
        });
        match answer {
            Ok(Answer::Now(bytes)) => responder.respond(bytes),
            Ok(Answer::Later(future)) => {
                // A concurrent.futures.Future: answered when it is done, on
                // whichever thread completes it.
                let _ = self.call("handle_request", |py| {
                    let responder = Py::new(py, crate::requests::PyResponder::new(responder))?;
                    py.import("minishard._cluster")?
                        .getattr("_answer_when_done")?
                        .call1((future.bind(py), responder))?;
                    Ok(())
                });
            }
            Err(error) => responder.fail(error.0),
        }
    }

    fn status_changed(&mut self, cluster: &str, old: Health, new: Health) {
        let Some(method) = &self.status_changed else {
            return;
        };
        let _ = self.call("status_changed", |py| {
            let args = (cluster, health(py, old)?, health(py, new)?).into_pyobject(py)?;
            self.invoke(py, "status_changed", method, args)?;
            Ok(())
        });
    }
}

/// A hand-off as Python sees it: `minishard.HandOff(node, epoch, data)`,
/// or None.
fn py_hand_off(py: Python<'_>, hand_off: Option<HandOff>) -> PyResult<Py<PyAny>> {
    match hand_off {
        None => Ok(py.None()),
        Some(h) => Ok(py
            .import("minishard._types")?
            .getattr("HandOff")?
            .call1((h.from.as_str(), h.epoch, PyBytes::new(py, &h.data)))?
            .unbind()),
    }
}
