//! Log lines and mesh notices leave the engine's thread through a bounded
//! queue, and a thread of the engine's own hands them on: log lines to the
//! `tracing` subscriber the node was joined under, notices to the notice
//! hook. The engine's thread runs the core, every connection and every
//! heartbeat; a slow sink (a C log callback, the Python bridge, a Rust
//! subscriber writing into a full pipe, a notice hook) now delays only the
//! log thread. What does not fit in the queue is dropped and counted
//! (`Stats::log_lines_dropped`), and the next line delivered says how many.
//!
//! The engine's thread runs under [`Offload`], a subscriber that asks the
//! real one which lines it wants (so a line nobody wants is not even
//! formatted), copies the fields of those it wants, and queues them with
//! the span they happened in; the log thread replays each one, unchanged,
//! into the real subscriber.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::dispatcher::{self, Dispatch};
use tracing::field::{display, DisplayValue, Field, Value, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

use crate::config::{MeshNotice, NoticeHook};

/// Lines and notices waiting for the log thread, at most.
pub(crate) const LOG_QUEUE: usize = 1024;

/// How long a leave waits for the log thread to hand on what is queued;
/// what is left then is dropped (and counted), so a stuck sink cannot hold
/// a leave forever.
const FLUSH_LIMIT: Duration = Duration::from_secs(1);

/// A field's value, copied off the engine's thread.
enum Owned {
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Bool(bool),
    Str(String),
    /// What `Debug` (or `Display`, or an error) printed: replayed through
    /// `Debug` as the same text.
    Shown(DisplayValue<String>),
}

impl Owned {
    fn as_value(&self) -> &dyn Value {
        match self {
            Owned::I64(v) => v,
            Owned::U64(v) => v,
            Owned::I128(v) => v,
            Owned::U128(v) => v,
            Owned::F64(v) => v,
            Owned::Bool(v) => v,
            Owned::Str(v) => v,
            Owned::Shown(v) => v,
        }
    }
}

/// One event, copied: its callsite and a value per field of the callsite.
struct Line {
    metadata: &'static Metadata<'static>,
    values: Vec<Option<Owned>>,
    /// The span it happened in (a reference the line holds), if the real
    /// subscriber was known when it was logged.
    parent: Option<Id>,
}

struct Copy<'a>(&'a mut Vec<Option<Owned>>);

impl Copy<'_> {
    fn put(&mut self, field: &Field, value: Owned) {
        if let Some(slot) = self.0.get_mut(field.index()) {
            *slot = Some(value);
        }
    }
}

impl Visit for Copy<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Owned::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Owned::U64(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, Owned::I128(value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, Owned::U128(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Owned::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Owned::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Owned::Str(value.to_owned()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Owned::Shown(display(format!("{value:?}"))));
    }
}

enum Item {
    Line(Line),
    Notice(MeshNotice),
}

#[derive(Default)]
struct Pending {
    items: VecDeque<Item>,
    /// Dropped since the log thread last said so.
    unreported: u64,
    /// The engine has stopped: hand on what is queued, then end.
    closed: bool,
    /// The leave stopped waiting: end now, dropping the rest.
    abandoned: bool,
    finished: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    ready: Condvar,
    finished: Condvar,
    dropped: AtomicU64,
    /// The subscriber the node was joined under (none: whichever becomes
    /// the global default, see `Offload::real`).
    joined_under: Option<Dispatch>,
    /// The global default, once one is set, when no subscriber was known at
    /// join: found by the log thread, which has no default of its own.
    global: OnceLock<Dispatch>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing panics while holding it; a poisoned queue is still whole.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, item: Item) {
        let mut pending = self.lock();
        if pending.closed || pending.items.len() >= LOG_QUEUE {
            pending.unreported += 1;
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if let Item::Line(Line {
                parent: Some(id), ..
            }) = item
            {
                self.release(id);
            }
            return;
        }
        pending.items.push_back(item);
        drop(pending);
        self.ready.notify_one();
    }

    fn release(&self, span: Id) {
        if let Some(real) = &self.joined_under {
            real.try_close(span);
        }
    }
}

/// The engine's end of the queue, and the log thread.
pub(crate) struct LogQueue {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    has_hook: bool,
}

impl LogQueue {
    /// Starts the log thread for a node joined under the caller's current
    /// subscriber; `span` is the node's (its lines are attributed to it).
    pub(crate) fn start(
        name: &str,
        span: tracing::Span,
        hook: Option<NoticeHook>,
    ) -> std::io::Result<LogQueue> {
        let has_hook = hook.is_some();
        let joined_under = dispatcher::get_default(|d| {
            (!d.is::<tracing::subscriber::NoSubscriber>()).then(|| d.clone())
        });
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            finished: Condvar::new(),
            dropped: AtomicU64::new(0),
            joined_under,
            global: OnceLock::new(),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("minishard-log-{name}"))
            .spawn(move || {
                let _default = thread_shared
                    .joined_under
                    .as_ref()
                    .map(dispatcher::set_default);
                let _entered = span.enter();
                hand_on(&thread_shared, hook.as_deref());
                thread_shared.lock().finished = true;
                thread_shared.finished.notify_all();
            })?;
        Ok(LogQueue {
            shared,
            thread: Mutex::new(Some(thread)),
            has_hook,
        })
    }

    /// The subscriber the engine's thread runs under.
    pub(crate) fn offload(&self) -> Dispatch {
        Dispatch::new(Offload {
            shared: self.shared.clone(),
        })
    }

    /// Queues a notice for the hook (when there is one).
    pub(crate) fn notice(&self, notice: MeshNotice) {
        if self.has_hook {
            self.shared.push(Item::Notice(notice));
        }
    }

    /// Lines and notices dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The engine has stopped: lets the log thread hand on what is queued,
    /// for at most [`FLUSH_LIMIT`], then drops the rest.
    pub(crate) fn finish(&self) {
        let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let deadline = Instant::now() + FLUSH_LIMIT;
        let mut pending = self.shared.lock();
        pending.closed = true;
        self.shared.ready.notify_all();
        while !pending.finished {
            let now = Instant::now();
            if now >= deadline {
                pending.abandoned = true;
                self.shared.ready.notify_all();
                // The thread ends after the line it is on; not waited for.
                return;
            }
            pending = self
                .shared
                .finished
                .wait_timeout(pending, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(pending);
        let _ = thread.join();
    }
}

impl Drop for LogQueue {
    fn drop(&mut self) {
        let mut pending = self.shared.lock();
        pending.closed = true;
        pending.abandoned = true;
        drop(pending);
        self.shared.ready.notify_all();
    }
}

/// The log thread: hands each line to the real subscriber and each notice
/// to the hook, in the order they came.
fn hand_on(shared: &Shared, hook: Option<&(dyn Fn(&MeshNotice) + Send + Sync)>) {
    loop {
        let (item, dropped) = {
            let mut pending = shared.lock();
            loop {
                if pending.abandoned {
                    let left = pending.items.len() as u64;
                    shared.dropped.fetch_add(left, Ordering::Relaxed);
                    for item in pending.items.drain(..) {
                        if let Item::Line(Line {
                            parent: Some(id), ..
                        }) = item
                        {
                            shared.release(id);
                        }
                    }
                    return;
                }
                if let Some(item) = pending.items.pop_front() {
                    break (item, std::mem::take(&mut pending.unreported));
                }
                if pending.closed {
                    return;
                }
                pending = shared
                    .ready
                    .wait(pending)
                    .unwrap_or_else(|p| p.into_inner());
            }
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "log lines and notices were dropped: the log sink did not keep up"
            );
        }
        match item {
            Item::Line(line) => replay(shared, line),
            Item::Notice(notice) => {
                if let Some(hook) = hook {
                    hook(&notice);
                }
            }
        }
    }
}

fn replay(shared: &Shared, line: Line) {
    let values: Vec<Option<&dyn Value>> = line
        .values
        .iter()
        .map(|v| v.as_ref().map(Owned::as_value))
        .collect();
    let fields = line.metadata.fields().value_set_all(&values);
    match (&shared.joined_under, line.parent) {
        (Some(real), parent) => {
            real.event(&Event::new_child_of(parent.clone(), line.metadata, &fields));
            if let Some(id) = parent {
                real.try_close(id);
            }
        }
        // Joined with no subscriber: this thread has no default of its own,
        // so whatever became the global one gets it, if it wants it.
        (None, _) => dispatcher::get_default(|global| {
            let _ = shared.global.set(global.clone());
            if global.enabled(line.metadata) {
                global.event(&Event::new(line.metadata, &fields));
            }
        }),
    }
}

/// The subscriber of the engine's thread: see the module's comment.
struct Offload {
    shared: Arc<Shared>,
}

impl Offload {
    /// The subscriber lines are for, if known yet.
    fn real(&self) -> Option<&Dispatch> {
        self.shared
            .joined_under
            .as_ref()
            .or_else(|| self.shared.global.get())
    }

    /// Span bookkeeping goes to the subscriber the node was joined under.
    fn spans(&self) -> Option<&Dispatch> {
        self.shared.joined_under.as_ref()
    }
}

impl Subscriber for Offload {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Ask `enabled` each time: the real subscriber's wishes may change.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        match self.real() {
            Some(real) => real.enabled(metadata),
            // Joined before any subscriber: queue lines once one exists;
            // the log thread finds it, and filters from then on.
            None => dispatcher::has_been_set(),
        }
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        match self.spans() {
            Some(real) => real.new_span(span),
            None => Id::from_u64(u64::MAX),
        }
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(real) = self.spans() {
            real.record(span, values);
        }
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        if let Some(real) = self.spans() {
            real.record_follows_from(span, follows);
        }
    }

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let mut values: Vec<Option<Owned>> = (0..metadata.fields().len()).map(|_| None).collect();
        event.record(&mut Copy(&mut values));
        let parent = self.spans().and_then(|real| {
            let id = if event.is_root() {
                None
            } else if let Some(parent) = event.parent() {
                Some(parent.clone())
            } else {
                real.current_span().id().cloned()
            }?;
            Some(real.clone_span(&id))
        });
        self.shared.push(Item::Line(Line {
            metadata,
            values,
            parent,
        }));
    }

    fn enter(&self, span: &Id) {
        if let Some(real) = self.spans() {
            real.enter(span);
        }
    }

    fn exit(&self, span: &Id) {
        if let Some(real) = self.spans() {
            real.exit(span);
        }
    }

    fn clone_span(&self, id: &Id) -> Id {
        match self.spans() {
            Some(real) => real.clone_span(id),
            None => id.clone(),
        }
    }

    fn try_close(&self, id: Id) -> bool {
        match self.spans() {
            Some(real) => real.try_close(id),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// What the sink got: each line's message (or its `dropped` count) and
    /// the id of its span.
    type Got = Arc<Mutex<Vec<(String, Option<u64>)>>>;

    /// A subscriber that holds the first line until the gate opens.
    struct Gated {
        got: Got,
        holding: Arc<AtomicBool>,
        gate: Arc<(Mutex<bool>, Condvar)>,
    }

    struct Text<'a>(&'a mut String);

    impl Visit for Text<'_> {
        fn record_u64(&mut self, field: &Field, value: u64) {
            if field.name() == "dropped" {
                *self.0 = format!("dropped {value}");
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" && self.0.is_empty() {
                *self.0 = format!("{value:?}");
            }
        }
    }

    impl Subscriber for Gated {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(7)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            self.holding.store(true, Ordering::SeqCst);
            let (open, opened) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
            let mut text = String::new();
            event.record(&mut Text(&mut text));
            let parent = event.parent().map(Id::into_u64);
            self.got.lock().unwrap().push((text, parent));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn lines_beyond_the_queue_are_dropped_counted_and_said_the_rest_go_in_order_in_their_span() {
        let got = Got::default();
        let holding = Arc::new(AtomicBool::new(false));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Dispatch::new(Gated {
            got: got.clone(),
            holding: holding.clone(),
            gate: gate.clone(),
        });
        let (queue, span) = dispatcher::with_default(&sink, || {
            let span = tracing::info_span!("minishard");
            let queue = LogQueue::start("t", span.clone(), None).unwrap();
            (queue, span)
        });
        let extra = 100;
        dispatcher::with_default(&queue.offload(), || {
            // (The span by an explicit parent: this bare subscriber keeps
            // no current span; the registry that real ones use does.)
            tracing::info!(parent: &span, "line 0");
            // The log thread is stuck on line 0: the queue fills up.
            while !holding.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            for i in 1..=LOG_QUEUE + extra {
                tracing::info!("line {i}");
            }
        });
        assert_eq!(queue.dropped(), extra as u64);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        queue.finish();
        let got = got.lock().unwrap();
        let mut expected: Vec<String> = vec!["line 0".into(), format!("dropped {extra}")];
        expected.extend((1..=LOG_QUEUE).map(|i| format!("line {i}")));
        let texts: Vec<&String> = got.iter().map(|(text, _)| text).collect();
        assert_eq!(texts, expected.iter().collect::<Vec<_>>());
        assert_eq!(got[0].1, Some(7), "a line keeps the span it was logged in");
    }
}
