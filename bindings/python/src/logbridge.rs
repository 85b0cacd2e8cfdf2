//! Engine logs (`tracing` events) into Python's
//! `logging.getLogger("minishard.engine")`, with their fields (`cluster`,
//! `node`, `shard`, `peer`...) both in the text, as `name=value`, and as
//! attributes of the record, like `logging`'s `extra`.
//!
//! An engine thread never waits for the interpreter: the tracing layer puts
//! each event in a bounded queue, and a pump thread hands them to Python in
//! batches, attached only while it does. So a log line emitted while another
//! thread holds the GIL (perhaps waiting for the engine) cannot deadlock, and
//! heartbeats never wait for a log handler.
//!
//! The engine's own lines about a failed callback are left out: the
//! callbacks module logs each failure once, with the Python traceback and
//! what the engine does about it.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PySet};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// Lines waiting beyond this are dropped (and counted): a stuck log handler
/// must not grow the engine's memory without bound.
const CAPACITY: usize = 10_000;
/// Lines handed over per attachment, so the pump never holds the GIL long.
const BATCH: usize = 256;

/// The Python level below which events are not even formatted; follows the
/// logger's effective level (refreshed at every join and every batch).
static THRESHOLD: AtomicU8 = AtomicU8::new(20);

/// The logger engine lines go to.
const ENGINE_LOGGER: &str = "minishard.engine";

/// The field the engine puts on every line about a failed callback: the
/// binding logs each such failure once itself, with its traceback
/// (`callbacks::log_failure`), so these lines would only repeat it.
const CALLBACK_FAILURE_FIELD: &str = "callback_failure";

/// A field's value, kept typed for the record's attributes.
enum Value {
    Int(i64),
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// A `Debug`-formatted value as a user reads it: an `Option` field shows
/// its content, or nothing when it is `None`; a number becomes one.
fn plain(debug: String) -> Option<Value> {
    let inner = match debug
        .strip_prefix("Some(")
        .and_then(|d| d.strip_suffix(')'))
    {
        Some(inner) => inner.to_owned(),
        None if debug == "None" => return None,
        None => debug,
    };
    Some(match inner.parse::<i64>() {
        Ok(n) => Value::Int(n),
        Err(_) => Value::Text(inner),
    })
}

struct Line {
    level: u8,
    target: &'static str,
    file: Option<&'static str>,
    line: Option<u32>,
    message: String,
    /// The event's and its spans' fields, for the record's attributes.
    fields: Vec<(&'static str, Value)>,
    /// The engine thread that logged it (the pump is the one calling Python).
    thread: Option<String>,
}

#[derive(Default)]
struct Pending {
    lines: VecDeque<Line>,
    dropped: u64,
    stopped: bool,
    pump: Option<(u32, JoinHandle<()>)>,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    lines: VecDeque::new(),
    dropped: 0,
    stopped: false,
    pump: None,
});
static READY: Condvar = Condvar::new();

fn pending() -> MutexGuard<'static, Pending> {
    // Nothing panics while holding the lock; a poisoned queue is still whole.
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

fn python_level(level: Level) -> u8 {
    match level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// Collects fields, keeping `message` apart.
struct Fields<'a> {
    message: Option<&'a mut String>,
    rest: &'a mut Vec<(&'static str, Value)>,
}

impl Fields<'_> {
    fn add(&mut self, field: &Field, value: Option<Value>) {
        if let Some(value) = value {
            self.rest.push((field.name(), value));
        }
    }
}

impl Visit for Fields<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, Some(Value::Int(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let value =
            i64::try_from(value).map_or_else(|_| Value::Text(value.to_string()), Value::Int);
        self.add(field, Some(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match (&mut self.message, field.name()) {
            (Some(message), "message") => message.push_str(value),
            _ => self.add(field, Some(Value::Text(value.to_owned()))),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match (&mut self.message, field.name()) {
            (Some(message), "message") => {
                let _ = write!(message, "{value:?}");
            }
            _ => self.add(field, plain(format!("{value:?}"))),
        }
    }
}

/// A span's fields, recorded once when it is created.
struct SpanFields(Vec<(&'static str, Value)>);

struct PythonLogging;

impl<S> Layer<S> for PythonLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Ask `enabled` every time: the Python level can change at run time.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata.is_span() || python_level(*metadata.level()) >= THRESHOLD.load(Ordering::Relaxed)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        attrs.record(&mut Fields {
            message: None,
            rest: &mut fields,
        });
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
                values.record(&mut Fields {
                    message: None,
                    rest: fields,
                });
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut message = String::new();
        let mut fields = Vec::new();
        event.record(&mut Fields {
            message: Some(&mut message),
            rest: &mut fields,
        });
        if metadata.fields().field(CALLBACK_FAILURE_FIELD).is_some() {
            return;
        }
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(span_fields)) = span.extensions().get::<SpanFields>() {
                    for (name, value) in span_fields {
                        // The event's own field wins over its span's.
                        if !fields.iter().any(|(n, _)| n == name) {
                            let copy = match value {
                                Value::Int(n) => Value::Int(*n),
                                Value::Text(t) => Value::Text(t.clone()),
                            };
                            fields.push((name, copy));
                        }
                    }
                }
            }
        }
        for (name, value) in &fields {
            let _ = write!(message, " {name}={value}");
        }
        let mut pending = pending();
        if pending.stopped {
            return;
        }
        if pending.lines.len() >= CAPACITY {
            pending.lines.pop_front();
            pending.dropped += 1;
        }
        pending.lines.push_back(Line {
            level: python_level(*metadata.level()),
            target: metadata.target(),
            file: metadata.file(),
            line: metadata.line(),
            message,
            fields,
            thread: std::thread::current().name().map(str::to_owned),
        });
        drop(pending);
        READY.notify_one();
    }
}

static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOGGER
        .get_or_try_init(py, || {
            Ok(py
                .import("logging")?
                .call_method1("getLogger", (ENGINE_LOGGER,))?
                .unbind())
        })
        .map(|l| l.bind(py))
}

/// Follows the logger's effective level, so that lines nobody would see are
/// not formatted on the engine's threads.
pub(crate) fn sync_level(py: Python<'_>) -> PyResult<()> {
    let level: i64 = logger(py)?.call_method0("getEffectiveLevel")?.extract()?;
    THRESHOLD.store(level.clamp(1, 255) as u8, Ordering::Relaxed);
    Ok(())
}

static RECORD_ATTRIBUTES: PyOnceLock<Py<PySet>> = PyOnceLock::new();

/// The attributes every `LogRecord` has, plus the two `makeRecord` reserves.
fn record_attributes(py: Python<'_>) -> PyResult<&Bound<'_, PySet>> {
    RECORD_ATTRIBUTES
        .get_or_try_init(py, || {
            let record = py.import("logging")?.getattr("LogRecord")?.call1((
                "",
                0,
                "",
                0,
                "",
                (),
                py.None(),
            ))?;
            let names = PySet::new(py, ["message", "asctime"])?;
            for name in record.getattr("__dict__")?.try_iter()? {
                names.add(name?)?;
            }
            Ok(names.unbind())
        })
        .map(|names| names.bind(py))
}

fn deliver(py: Python<'_>, lines: Vec<Line>, dropped: u64) -> PyResult<()> {
    let logger = logger(py)?;
    if dropped > 0 {
        logger.call_method1(
            "warning",
            (
                "%d engine log lines were dropped: the log handlers did not keep up",
                dropped,
            ),
        )?;
    }
    for line in lines {
        if !logger
            .call_method1("isEnabledFor", (line.level,))?
            .is_truthy()?
        {
            continue;
        }
        let extra = PyDict::new(py);
        for (name, value) in line.fields {
            // Names a record already has (none of the engine's today) stay
            // in the text only: makeRecord refuses to overwrite them.
            if record_attributes(py)?.contains(name)? {
                continue;
            }
            match value {
                Value::Int(n) => extra.set_item(name, n)?,
                Value::Text(t) => extra.set_item(name, t)?,
            }
        }
        let record = logger.call_method1(
            "makeRecord",
            (
                ENGINE_LOGGER,
                line.level,
                line.file.unwrap_or("<minishard engine>"),
                line.line.unwrap_or(0),
                line.message,
                (),
                py.None(),
                line.target,
                extra,
            ),
        )?;
        if let Some(thread) = line.thread {
            record.setattr("threadName", thread)?;
        }
        logger.call_method1("handle", (record,))?;
    }
    sync_level(py)
}

fn pump() {
    // Seen from Python, this thread would otherwise be "Dummy-N".
    Python::try_attach(|py| {
        let named = py
            .import("threading")
            .and_then(|t| t.call_method0("current_thread"))
            .and_then(|t| t.setattr("name", "minishard-log"));
        if let Err(err) = named {
            err.write_unraisable(py, None);
        }
    });
    loop {
        let (lines, dropped) = {
            let mut pending = pending();
            while pending.lines.is_empty() && !pending.stopped {
                pending = READY.wait(pending).unwrap_or_else(|p| p.into_inner());
            }
            if pending.lines.is_empty() {
                return;
            }
            let n = pending.lines.len().min(BATCH);
            let lines: Vec<Line> = pending.lines.drain(..n).collect();
            (lines, std::mem::take(&mut pending.dropped))
        };
        // `try_attach`: once the interpreter is shutting down, lines are lost
        // rather than the thread stuck.
        let delivered = Python::try_attach(|py| {
            if let Err(err) = deliver(py, lines, dropped) {
                err.write_unraisable(py, None);
            }
        });
        if delivered.is_none() {
            return;
        }
    }
}

/// Installs the tracing layer (once per process). It does not import
/// `logging` (`import minishard` stays cheap): the level is read at the
/// first join, before the engine logs anything.
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Fails only if this library already installed one: nothing to do.
        let _ = tracing_subscriber::registry()
            .with(PythonLogging)
            .try_init();
    });
}

/// Starts the pump unless it runs in this process (a forked child has none).
pub(crate) fn start(py: Python<'_>) -> PyResult<()> {
    sync_level(py)?;
    let mut pending = pending();
    let pid = std::process::id();
    if pending
        .pump
        .as_ref()
        .is_some_and(|(owner, _)| *owner == pid)
    {
        return Ok(());
    }
    pending.stopped = false;
    let handle = std::thread::Builder::new()
        .name("minishard-log".into())
        .spawn(pump)
        .map_err(|e| {
            crate::errors::raise(py, "IOError", format!("cannot start the log thread: {e}"))
        })?;
    pending.pump = Some((pid, handle));
    Ok(())
}

/// Hands the remaining lines to Python and stops the pump. Called at
/// interpreter exit, after every cluster has left; lines logged later are
/// dropped.
#[pyfunction]
pub(crate) fn shutdown_logging(py: Python<'_>) {
    let pump = {
        let mut pending = pending();
        pending.stopped = true;
        pending.pump.take()
    };
    READY.notify_all();
    if let Some((pid, handle)) = pump {
        if pid == std::process::id() {
            // The pump attaches to deliver its last batch: wait detached.
            py.detach(|| {
                let _ = handle.join();
            });
        }
    }
}
