//! A log sink that takes a second per line, and a notice hook that takes a
//! second per notice, delay no heartbeat: log lines and notices leave the
//! engine's thread through a bounded queue (docs/design.md 7.6, "no stall", for
//! logs). Before that queue, the engine's thread ran the sink itself, and
//! every line stopped its heartbeats for a second.

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, Configure, Local};
use minishard::{Health, MeshNotice};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

const PER_LINE: Duration = Duration::from_secs(1);

/// A subscriber that spends a second on every line of level INFO or more.
struct SlowSink {
    handled: Arc<AtomicUsize>,
    next_span: AtomicU64,
}

impl Subscriber for SlowSink {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_span() || *metadata.level() <= Level::INFO
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {
        std::thread::sleep(PER_LINE);
        self.handled.fetch_add(1, Ordering::Relaxed);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn a_sink_that_takes_a_second_per_line_delays_no_heartbeat() {
    let handled = Arc::new(AtomicUsize::new(0));
    tracing::subscriber::set_global_default(SlowSink {
        handled: handled.clone(),
        next_span: AtomicU64::new(1),
    })
    .expect("the only subscriber of this test process");
    let notices = Arc::new(AtomicUsize::new(0));
    let told = notices.clone();
    let silences = Arc::new(Mutex::new(Vec::new()));
    let heard = silences.clone();
    let slow_hook: Configure = Arc::new(move |_, config| {
        let (told, heard) = (told.clone(), heard.clone());
        config.notice_hook = Some(Arc::new(move |notice: &MeshNotice| {
            if let MeshNotice::PeerDown { peer, reason } = notice {
                if reason.starts_with("no heartbeat") {
                    heard.lock().unwrap().push(format!("{peer}: {reason}"));
                }
            }
            std::thread::sleep(PER_LINE);
            told.fetch_add(1, Ordering::Relaxed);
        }));
    });
    // Each node logs its peers coming up and its health changing (INFO),
    // and its hook hears of every peer: seconds of work for the sinks,
    // against a heartbeat timeout of 250 ms.
    let local = Local::start_with("slow-sink", 3, 2, Some(slow_hook));
    local
        .converged(Duration::from_secs(20))
        .expect("the cluster converges while its sinks crawl");
    // Condition, not a stopwatch: the sinks have spent at least two seconds
    // per node on what the engines queued, all of it while heartbeats had
    // to flow (with the engine's thread stuck in a sink, peers would have
    // dropped its connections after 250 ms, and redialled).
    assert!(
        eventually(Duration::from_secs(30), || {
            handled.load(Ordering::Relaxed) >= 6 && notices.load(Ordering::Relaxed) >= 6
        }),
        "the sinks handled {} lines and {} notices",
        handled.load(Ordering::Relaxed),
        notices.load(Ordering::Relaxed)
    );
    // No connection went silent: with the engine's thread stuck in a sink,
    // its peers would have heard no heartbeat for 250 ms and dropped it. (A
    // connection replaced when both ends dialled at once, closed by the
    // peer, is not what this is about.)
    assert_eq!(
        *silences.lock().unwrap(),
        Vec::<String>::new(),
        "connections went silent while the sinks were busy"
    );
    for cluster in local.running() {
        let stats = cluster.stats();
        assert_eq!(cluster.health(), Health::Available, "{}", cluster.node_id());
        assert_eq!(stats.log_lines_dropped, 0, "{}", cluster.node_id());
    }
}
