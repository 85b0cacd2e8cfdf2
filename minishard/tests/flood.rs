//! A live node flooded by strangers (docs/design.md 7.8, issue #7): 1,000
//! connections that never say a word and 10,000 garbage frames. The cluster
//! stays `available`, the process's memory stays bounded, and the node's
//! real peers never miss a heartbeat (an authenticated observer measures
//! the gaps between the heartbeats the node sends it).

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::by_hand::{dial_by_hand, sealed_halves, SealedReader, SealedWriter};
use common::*;
use minishard::core::{NodeId, Role};
use minishard::wire::handshake::Identity;
use minishard::wire::Frame;
use minishard::{Config, Health, MeshNotice};

type Notices = Arc<Mutex<Vec<MeshNotice>>>;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// An authenticated observer connected to `target` by hand.
fn observe(target: &str, cluster: &str) -> (SealedWriter, SealedReader) {
    let me = Identity {
        cluster: cluster.into(),
        node: NodeId::parse("127.0.0.1:9").unwrap(),
        incarnation: 1,
        role: Role::Observer,
        cookie: Arc::from(COOKIE),
    };
    let mut stream = TcpStream::connect(target).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let established = dial_by_hand(&mut stream, me, target, [7; 32]).expect("welcomed");
    sealed_halves(stream, established)
}

/// Keeps an observer's connection alive and records the largest gap
/// between two heartbeats from the node.
struct HeartbeatProbe {
    stop: Arc<AtomicBool>,
    largest_gap: Arc<Mutex<Duration>>,
    beats: Arc<Mutex<u64>>,
}

impl HeartbeatProbe {
    fn start(connection: (SealedWriter, SealedReader), interval: Duration) -> HeartbeatProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let largest_gap = Arc::new(Mutex::new(Duration::ZERO));
        let beats = Arc::new(Mutex::new(0));
        let (mut writer, mut reader) = connection;
        let writer_stop = stop.clone();
        std::thread::spawn(move || {
            while !writer_stop.load(Ordering::Relaxed) {
                if writer.send(&Frame::Heartbeat { sent_micros: 0 }).is_err() {
                    return;
                }
                std::thread::sleep(interval);
            }
        });
        let (gap, count, reader_stop) = (largest_gap.clone(), beats.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last: Option<Instant> = None;
            while !reader_stop.load(Ordering::Relaxed) {
                match reader.receive() {
                    Some(Frame::Heartbeat { .. }) => {
                        let now = Instant::now();
                        if let Some(last) = last {
                            let mut gap = gap.lock().unwrap();
                            *gap = (*gap).max(now - last);
                        }
                        last = Some(now);
                        *count.lock().unwrap() += 1;
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        });
        HeartbeatProbe {
            stop,
            largest_gap,
            beats,
        }
    }

    fn reset(&self) {
        *self.largest_gap.lock().unwrap() = Duration::ZERO;
        *self.beats.lock().unwrap() = 0;
    }
}

impl Drop for HeartbeatProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Connects from `source` (any 127.0.0.0/8 address) to `target`.
async fn connect_from(
    source: [u8; 4],
    target: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(target).await
}

/// The 127.0.0.x source of the i-th flooding connection: never 127.0.0.1,
/// where the real peers are. The first 50 come from one address, to meet
/// the per-source cap; the rest from 100 others, to meet the listener's.
fn source(i: usize) -> [u8; 4] {
    if i < 50 {
        [127, 0, 0, 2]
    } else {
        [127, 0, 0, 3 + (i % 100) as u8]
    }
}

fn count(notices: &Notices, words: &str) -> usize {
    notices
        .lock()
        .unwrap()
        .iter()
        .filter(|n| matches!(n, MeshNotice::Refused { reason, .. } if reason.contains(words)))
        .count()
}

#[test]
fn a_flood_of_silent_connections_and_garbage_frames_moves_nothing() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let notices: Vec<Notices> = (0..4).map(|_| Notices::default()).collect();
    let sinks = notices.clone();
    let configure = move |i: usize, config: &mut Config| {
        let sink = sinks[i].clone();
        config.notice_hook = Some(Arc::new(move |n: &MeshNotice| {
            sink.lock().unwrap().push(n.clone())
        }));
        config.handshake_timeout = Duration::from_secs(1);
    };
    let local = Local::start_with("flood", 4, 2, Some(Arc::new(configure)));
    local.converged(Duration::from_secs(10)).unwrap();
    let victim = local.nodes[0].cluster();
    let target: SocketAddr = local.nodes[0].address.parse().unwrap();
    let probe = HeartbeatProbe::start(
        observe(&local.nodes[0].address, "flood"),
        local.timings.heartbeat_interval,
    );
    let reconnects: Vec<u64> = local.running().map(|c| c.stats().reconnects).collect();

    // Let the probe see a few heartbeats before the flood.
    assert!(eventually(Duration::from_secs(2), || *probe
        .beats
        .lock()
        .unwrap()
        >= 5));
    probe.reset();
    let rss_before = rss_kib();
    let started = Instant::now();
    let watching = AtomicBool::new(true);
    let peak_rss = Mutex::new(rss_before);
    let unhealthy: Mutex<Vec<String>> = Mutex::default();
    let (silent_done, flood_time) = std::thread::scope(|scope| {
        // Watch every node's health and the process's memory throughout.
        scope.spawn(|| {
            while watching.load(Ordering::Relaxed) {
                let rss = rss_kib();
                let mut peak = peak_rss.lock().unwrap();
                *peak = (*peak).max(rss);
                drop(peak);
                for c in local.running() {
                    if c.health() != Health::Available {
                        unhealthy.lock().unwrap().push(format!(
                            "{} was {} after {:?}",
                            c.node_id(),
                            c.health(),
                            started.elapsed()
                        ));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();

        // 1,000 connections that never say a word, held open by us until the
        // node closes them (at its handshake deadline, or at once when over a
        // cap).
        let silent = runtime.block_on(async {
            let mut held = Vec::new();
            for i in 0..1000 {
                if let Ok(stream) = connect_from(source(i), target).await {
                    held.push(stream);
                }
            }
            held
        });
        assert_eq!(silent.len(), 1000, "the kernel refused some connections");
        // The node closes every one of them: refused at once over a cap, or
        // dropped at the handshake deadline.
        let closed_all = runtime.block_on(async {
            use tokio::io::AsyncReadExt;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let mut closed = 0;
            for mut stream in silent {
                let mut byte = [0u8; 1];
                if let Ok(Ok(0) | Err(_)) =
                    tokio::time::timeout_at(deadline, stream.read(&mut byte)).await
                {
                    closed += 1;
                }
            }
            closed
        });
        assert_eq!(closed_all, 1000, "the node kept silent connections open");
        let silent_done = started.elapsed();

        // 10,000 garbage frames, one per connection, 64 connections at a time.
        let kinds = ["noise", "huge", "truncated", "bad-variant"];
        let sent = runtime.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut sent = 0usize;
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..10_000usize {
                if tasks.len() >= 64 {
                    sent += tasks.join_next().await.unwrap().unwrap();
                }
                let kind = kinds[i % kinds.len()];
                tasks.spawn(async move {
                    let Ok(mut stream) = connect_from(source(i), target).await else {
                        return 0;
                    };
                    let garbage: Vec<u8> = match kind {
                        "noise" => {
                            let mut g = 12u32.to_be_bytes().to_vec();
                            g.extend((0..12).map(|j| (i * 31 + j * 7) as u8 | 0x80));
                            g
                        }
                        "huge" => (u32::MAX - i as u32).to_be_bytes().to_vec(),
                        "truncated" => {
                            let mut g = 200u32.to_be_bytes().to_vec();
                            g.extend([1u8; 20]);
                            g
                        }
                        _ => {
                            let mut g = 2u32.to_be_bytes().to_vec();
                            g.extend([200, 1]);
                            g
                        }
                    };
                    if stream.write_all(&garbage).await.is_err() {
                        return 0;
                    }
                    let _ = stream.shutdown().await;
                    let mut rest = Vec::new();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
                            .await;
                    1
                });
            }
            while let Some(done) = tasks.join_next().await {
                sent += done.unwrap();
            }
            sent
        });
        let flood_time = started.elapsed();
        assert_eq!(sent, 10_000);

        // Give the node a moment to have closed everything, then measure.
        assert!(eventually(Duration::from_secs(5), || {
            count(&notices[0], "malformed frame")
                + count(&notices[0], "over the limit")
                + count(&notices[0], "truncated frame")
                + count(&notices[0], "too many connections")
                >= 10_000
        }));
        watching.store(false, Ordering::Relaxed);
        (silent_done, flood_time)
    });
    let rss_after = rss_kib();
    let peak = *peak_rss.lock().unwrap();
    let gap = *probe.largest_gap.lock().unwrap();
    let beats = *probe.beats.lock().unwrap();
    let stats = victim.stats();
    let summary = format!(
        "flood: silent 1000 in {silent_done:?}, garbage 10000 in {:?}; RSS before {} KiB, peak {} KiB, after {} KiB; \
         observer saw {beats} heartbeats, largest gap {gap:?} (interval {:?}, timeout {:?}); \
         refused: {} over the per-source cap, {} over the listener's cap, {} past the handshake deadline, {} malformed, {} over the limit, {} truncated; \
         victim refused_handshakes={} protocol_errors={}",
        flood_time - silent_done,
        rss_before,
        peak,
        rss_after,
        local.timings.heartbeat_interval,
        local.timings.heartbeat_timeout,
        count(&notices[0], "from this address"),
        count(&notices[0], "too many connections") - count(&notices[0], "from this address"),
        count(&notices[0], "no handshake within"),
        count(&notices[0], "malformed frame"),
        count(&notices[0], "over the limit"),
        count(&notices[0], "truncated frame"),
        stats.refused_handshakes,
        stats.protocol_errors,
    );
    eprintln!("{summary}");

    // What a user would check.
    let unhealthy = unhealthy.into_inner().unwrap();
    assert!(unhealthy.is_empty(), "{unhealthy:?} {summary}");
    local.converged(Duration::from_secs(1)).unwrap();
    let after: Vec<u64> = local.running().map(|c| c.stats().reconnects).collect();
    assert_eq!(reconnects, after, "a real peer reconnected: {summary}");
    for (i, n) in notices.iter().enumerate() {
        let downs: Vec<_> = n
            .lock()
            .unwrap()
            .iter()
            .filter(|n| matches!(n, MeshNotice::PeerDown { .. }))
            .cloned()
            .collect();
        assert!(
            downs.is_empty(),
            "node {i} lost a peer: {downs:?} {summary}"
        );
    }
    // The node kept its observer too: its heartbeats still come, on the
    // same connection. (How long the flood took and the largest gap between
    // heartbeats are figures of `minishard bench`, not limits here.)
    let beats_after_flood = *probe.beats.lock().unwrap();
    assert!(
        eventually(Duration::from_secs(2), || *probe.beats.lock().unwrap()
            > beats_after_flood),
        "the observer's connection stopped carrying heartbeats: {summary}"
    );
    assert!(
        peak.saturating_sub(rss_before) < 128 << 10,
        "memory grew by more than 128 MiB: {summary}"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 32 << 10,
        "memory stayed up by more than 32 MiB: {summary}"
    );
    assert!(
        count(&notices[0], "from this address") >= 50 - 16,
        "the per-source cap did not hold: {summary}"
    );
}
