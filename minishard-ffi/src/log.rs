//! The engine's log lines (`tracing` events) handed to the host, so that it
//! owns logging (as rustls-ffi's log callback does): to the process-wide
//! callback of `minishard_set_log_callback`, or, for a handle whose
//! `minishard_callbacks.log` is set, to that one instead. Without a
//! callback, minishard logs nothing.
//!
//! One process-wide subscriber is installed the first time a callback is
//! set; it formats an event only when a callback wants its level, and
//! prefixes it with the fields of the spans it happened in (the cluster and
//! the node), so a line says which handle it is about. Each handle's work
//! (its join, its engine and callback threads, dispatch, leave) runs inside
//! a `minishard_handle` span carrying the handle's number: that is how a
//! line finds its handle's callback.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CString};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Once, RwLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

use crate::error::{call, minishard_result, Failure};

/// How much a log line matters. A callback set with a maximum level gets
/// that level and every more important one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum minishard_log_level {
    /// Something failed: a node or a connection cannot go on as it should.
    MINISHARD_LOG_ERROR = 1,
    /// Something went wrong and was handled: a callback failed, a peer was
    /// refused, a connection was closed for bad input.
    MINISHARD_LOG_WARN = 2,
    /// What a node did: joined, left, peers up and down.
    MINISHARD_LOG_INFO = 3,
    /// Details for debugging the protocol.
    MINISHARD_LOG_DEBUG = 4,
    /// Everything.
    MINISHARD_LOG_TRACE = 5,
}

/// A `minishard_log_level` as C passes it in: any `uint32_t`.
pub type minishard_log_level_code = u32;

/// Receives one log line: `level`, `target` (the engine module, e.g.
/// `"minishard::runtime::calls"`) and `message` (the text, then
/// `key=value` fields, e.g. `cluster=sessions node=10.0.0.1:7001 callback
/// failed callback="allocated" ...`). Both strings are valid only during the
/// call.
///
/// It runs on the thread that logged, often the engine's network thread:
/// return quickly, do not block, and call no minishard function that waits
/// or sets a log callback (`minishard_join`, `minishard_leave`,
/// `minishard_wait_until`, `minishard_cluster_free`, `minishard_dispatch`,
/// `minishard_set_log_callback`). It may run on several threads at once.
pub type minishard_log_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: minishard_log_level,
        target: *const c_char,
        message: *const c_char,
    ),
>;

type LogFn = unsafe extern "C" fn(*mut c_void, minishard_log_level, *const c_char, *const c_char);

/// Where lines go: a callback, its user_data, the most detailed level it
/// wants, and (for a handle's) what keeps user_data alive until it goes.
pub(crate) struct Sink {
    callback: LogFn,
    user_data: *mut c_void,
    max_level: u32,
    _keep: Option<Arc<dyn Send + Sync>>,
}

// SAFETY: the header requires a log callback and its user_data to be
// usable from any thread, at once from several.
unsafe impl Send for Sink {}
// SAFETY: as above.
unsafe impl Sync for Sink {}

impl Sink {
    /// A handle's sink; `keep` holds its user_data until the sink is gone.
    pub(crate) fn for_handle(
        callback: LogFn,
        user_data: *mut c_void,
        max_level: minishard_log_level_code,
        keep: Arc<dyn Send + Sync>,
    ) -> Result<Sink, Failure> {
        check_level(max_level, "callbacks.log_max_level")?;
        Ok(Sink {
            callback,
            user_data,
            max_level,
            _keep: Some(keep),
        })
    }
}

static GLOBAL: RwLock<Option<Sink>> = RwLock::new(None);
/// The sinks of handles whose `log` is set, by handle number.
static HANDLES: RwLock<BTreeMap<u64, Sink>> = RwLock::new(BTreeMap::new());
/// The most detailed level any sink wants, 0 for none: checked before
/// formatting.
static MAX_LEVEL: AtomicU32 = AtomicU32::new(0);
static INSTALL: Once = Once::new();

fn check_level(max_level: u32, what: &str) -> Result<(), Failure> {
    if !(1..=5).contains(&max_level) {
        return Err(Failure::invalid(format_args!(
            "{what} {max_level} is not a minishard_log_level (1 to 5)"
        )));
    }
    Ok(())
}

/// Installs the subscriber that hands lines to the sinks, once.
fn install() -> Result<(), Failure> {
    let mut installed = true;
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(ToCallback);
        installed = tracing::subscriber::set_global_default(subscriber).is_ok();
    });
    if !installed {
        return Err(Failure::new(
            minishard_result::MINISHARD_CONFIG,
            "another tracing subscriber is already installed in this process: it receives minishard's logs",
        ));
    }
    Ok(())
}

fn update_max_level() {
    let global = read(&GLOBAL).as_ref().map_or(0, |s| s.max_level);
    let handles = read(&HANDLES)
        .values()
        .map(|s| s.max_level)
        .max()
        .unwrap_or(0);
    MAX_LEVEL.store(global.max(handles), Ordering::Release);
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// Sends handle `id`'s lines to `sink` from now on.
pub(crate) fn attach_handle(id: u64, sink: Sink) -> Result<(), Failure> {
    install()?;
    write(&HANDLES).insert(id, sink);
    update_max_level();
    Ok(())
}

/// Stops sending handle `id`'s lines anywhere but the global callback;
/// waits for calls of its own callback to finish.
pub(crate) fn detach_handle(id: u64) {
    let sink = write(&HANDLES).remove(&id);
    if sink.is_some() {
        update_max_level();
    }
    // Dropped here, outside the lock: this may free the handle's user_data.
    drop(sink);
}

/// The span that marks work of handle `id` (see the module's comment).
pub(crate) fn handle_span(id: u64) -> tracing::Span {
    tracing::info_span!(target: "minishard_ffi", HANDLE_SPAN, handle = id)
}

const HANDLE_SPAN: &str = "minishard_handle";

/// A handle's number, kept on its span.
struct HandleId(u64);

fn level_of(level: Level) -> minishard_log_level {
    match level {
        Level::ERROR => minishard_log_level::MINISHARD_LOG_ERROR,
        Level::WARN => minishard_log_level::MINISHARD_LOG_WARN,
        Level::INFO => minishard_log_level::MINISHARD_LOG_INFO,
        Level::DEBUG => minishard_log_level::MINISHARD_LOG_DEBUG,
        Level::TRACE => minishard_log_level::MINISHARD_LOG_TRACE,
    }
}

/// Sets the process-wide log callback: `callback` gets every line of level
/// `max_level` or more important (`MINISHARD_LOG_WARN` is a good default),
/// with `user_data`, except the lines of handles that have a log callback
/// of their own (`minishard_callbacks.log`). NULL stops logging. Replacing or clearing the callback
/// waits for calls of the previous one to finish, so its `user_data` may be
/// freed when this returns; minishard never frees it.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a `max_level` that is not a
/// `minishard_log_level`; `MINISHARD_CONFIG` if another library in this
/// process already installed a global `tracing` subscriber, which then
/// keeps the engine's logs. Any thread, but not from inside the callback.
///
/// # Safety
///
/// `callback`: NULL or a function of the declared type, callable from any
/// thread with `user_data`, until it is replaced.
#[no_mangle]
pub unsafe extern "C" fn minishard_set_log_callback(
    callback: minishard_log_callback,
    user_data: *mut c_void,
    max_level: minishard_log_level_code,
) -> minishard_result {
    call(|| {
        check_level(max_level, "max_level")?;
        if callback.is_some() {
            install()?;
        }
        *write(&GLOBAL) = callback.map(|callback| Sink {
            callback,
            user_data,
            max_level,
            _keep: None,
        });
        update_max_level();
        Ok(())
    })
}

/// The tracing layer that hands events to the C callback.
struct ToCallback;

/// The fields of a span, formatted once when it is created.
struct SpanFields(String);

/// Writes fields as `name=value`, the message first and bare.
struct Fields<'a> {
    message: &'a mut String,
    rest: &'a mut String,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

fn wanted(level: Level) -> bool {
    level_of(level) as u32 <= MAX_LEVEL.load(Ordering::Acquire)
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for ToCallback {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // The wanted level changes at run time: ask `enabled` every time
        // rather than let tracing cache a "never".
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata.is_span() || wanted(*metadata.level())
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() == HANDLE_SPAN {
            let mut handle = HandleNumber(None);
            attrs.record(&mut handle);
            if let (Some(number), Some(span)) = (handle.0, ctx.span(id)) {
                span.extensions_mut().insert(HandleId(number));
            }
            return;
        }
        let (mut message, mut rest) = (String::new(), String::new());
        attrs.record(&mut Fields {
            message: &mut message,
            rest: &mut rest,
        });
        if let Some(span) = ctx.span(id) {
            span.extensions_mut()
                .insert(SpanFields(rest.trim_start().replace('"', "")));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if !wanted(level) {
            return;
        }
        let handle = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<HandleId>().map(|h| h.0))
        });
        let handles = read(&HANDLES);
        let global;
        let sink = match handle.and_then(|id| handles.get(&id)) {
            Some(own) => own,
            None => {
                global = read(&GLOBAL);
                match global.as_ref() {
                    Some(global) => global,
                    None => return,
                }
            }
        };
        if level_of(level) as u32 > sink.max_level {
            return;
        }
        let mut line = String::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    line.push_str(&fields.0);
                    line.push(' ');
                }
            }
        }
        let mut rest = String::new();
        event.record(&mut Fields {
            message: &mut line,
            rest: &mut rest,
        });
        line.push_str(&rest);
        let message = CString::new(line.replace('\0', " ")).unwrap_or_default();
        let target = CString::new(event.metadata().target()).unwrap_or_default();
        // SAFETY: a callback the application set, with its user_data,
        // callable from any thread (header contract); both strings live
        // through the call, and the sink (and with it user_data) cannot go
        // while the read lock is held.
        unsafe {
            (sink.callback)(
                sink.user_data,
                level_of(level),
                target.as_ptr(),
                message.as_ptr(),
            )
        };
    }
}

/// Reads the `handle` field of a handle's span.
struct HandleNumber(Option<u64>);

impl Visit for HandleNumber {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "handle" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}
