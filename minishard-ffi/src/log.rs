//! `minishard_set_log_callback`: the engine's log lines (`tracing` events)
//! handed to the host, so that it owns logging (as rustls-ffi's log
//! callback does). Without one, minishard logs nothing.
//!
//! One process-wide subscriber is installed the first time a callback is
//! set; it formats an event only when a callback wants its level, and
//! prefixes it with the fields of the spans it happened in (the cluster and
//! the node), so a line says which handle it is about.

use std::ffi::{c_char, c_void, CString};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Once, RwLock};

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
/// (`minishard_leave`, `minishard_wait_until`, `minishard_cluster_free`,
/// `minishard_dispatch`). It may run on several threads at once.
pub type minishard_log_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: minishard_log_level,
        target: *const c_char,
        message: *const c_char,
    ),
>;

struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, minishard_log_level, *const c_char, *const c_char),
    user_data: *mut c_void,
}

// SAFETY: the header requires the callback and its user_data to be usable
// from any thread, at once from several.
unsafe impl Send for Sink {}
// SAFETY: as above.
unsafe impl Sync for Sink {}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);
/// The most detailed level wanted, 0 for none: checked before formatting.
static MAX_LEVEL: AtomicU32 = AtomicU32::new(0);
static INSTALL: Once = Once::new();

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
/// with `user_data`. NULL stops logging. Replacing or clearing the callback
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
        if !(1..=5).contains(&max_level) {
            return Err(Failure::invalid(format_args!(
                "max_level {max_level} is not a minishard_log_level (1 to 5)"
            )));
        }
        let mut installed = true;
        if callback.is_some() {
            INSTALL.call_once(|| {
                let subscriber = tracing_subscriber::registry().with(ToCallback);
                installed = tracing::subscriber::set_global_default(subscriber).is_ok();
            });
        }
        if !installed {
            return Err(Failure::new(
                minishard_result::MINISHARD_CONFIG,
                "another tracing subscriber is already installed in this process: it receives minishard's logs",
            ));
        }
        let mut sink = SINK.write().unwrap_or_else(|p| p.into_inner());
        *sink = callback.map(|callback| Sink {
            callback,
            user_data,
        });
        MAX_LEVEL.store(
            if sink.is_some() { max_level } else { 0 },
            Ordering::Release,
        );
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
        let sink = SINK.read().unwrap_or_else(|p| p.into_inner());
        if let Some(sink) = sink.as_ref() {
            // SAFETY: a callback the application set, with its user_data,
            // callable from any thread (header contract); both strings live
            // through the call.
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
}
