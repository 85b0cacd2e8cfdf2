//! `minishard bench` rows for the times the tests check only as conditions
//! or orderings, never as limits: a restarted owner's old claim voided, a
//! small side degrading after a split (docs/design.md 7.2), lookups while a
//! callback blocks (7.6), and a node flooded with garbage frames (7.8).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minishard::{
    CallbackError, Callbacks, Cluster, Config, Health, NodeId, ReleaseReason, Timings,
};

use crate::app::ScoreMode;
use crate::bench::{median, ms, Row};
use crate::local::{free_addresses, LocalCluster, Wiring, COOKIE};

/// A restart with a new incarnation until the shard is allocated again, and
/// a 3/2 split until the small side is degraded.
pub fn restart_and_degrade(runs: usize, t: Timings, rows: &mut Vec<Row>) -> Result<(), String> {
    let step = t.heartbeat_timeout + t.node_grace + Duration::from_secs(5);
    let (mut restart, mut degrade) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let mut local = LocalCluster::new(
            &format!("bench-restart-{run}"),
            5,
            3,
            t,
            ScoreMode::Uptime,
            None,
            Wiring::Direct,
        )?;
        local.start_all()?;
        local.wait(step, "cold start", |l| l.settled(&l.everyone()))?;
        let victim = local.owner(0, 0).ok_or("nobody owns shard 0")?;
        let restarted_at = Instant::now();
        local.crash(victim);
        local.start(victim)?;
        let allocated = |l: &LocalCluster| {
            l.events_since(restarted_at)
                .into_iter()
                .find(|(_, e)| e.event == "allocated" && e.fields["shard"] == 0)
                .map(|(_, e)| e.at)
        };
        local.wait(step, "re-allocation after a restart", |l| {
            allocated(l).is_some()
        })?;
        let at = allocated(&local).ok_or("no allocated event after the restart")?;
        restart.push(ms(at - restarted_at));

        local.wait(step, "settle", |l| l.settled(&l.everyone()))?;
        let small: Vec<usize> = (0..2)
            .map(|s| local.owner(0, s).ok_or("a shard without an owner"))
            .collect::<Result<_, _>>()?;
        let big: Vec<usize> = (0..5).filter(|i| !small.contains(i)).collect();
        let split_at = Instant::now();
        local.split(&big, &small);
        let degraded = |l: &LocalCluster| {
            small.iter().all(|&i| {
                l.nodes[i]
                    .cluster
                    .as_ref()
                    .is_some_and(|c| c.health() == Health::Degraded)
            })
        };
        local.wait(step, "the small side degraded", degraded)?;
        let last = local
            .events_since(split_at)
            .into_iter()
            .filter(|(i, e)| {
                small.contains(i) && e.event == "status" && e.fields["new"] == "degraded"
            })
            .map(|(_, e)| e.at)
            .max()
            .ok_or("no status event for the degradation")?;
        degrade.push(ms(last - split_at));
        for i in 0..5 {
            local.crash(i);
        }
    }
    rows.push(Row {
        what: "restart of a crashed owner (new incarnation), until allocated again".into(),
        median: median(restart),
        unit: "ms",
        note: format!(
            "the old claim is void at once; node_grace is {} ms",
            t.node_grace.as_millis()
        ),
    });
    rows.push(Row {
        what: "3/2 split, until both nodes of the small side are degraded".into(),
        median: median(degrade),
        unit: "ms",
        note: format!(
            "7.2's bound: {} ms (heartbeat_timeout + transition_timeout + 100)",
            (t.heartbeat_timeout + t.transition_timeout).as_millis() + 100
        ),
    });
    Ok(())
}

/// An application whose `allocated` keeps the callback thread for a while.
struct Blocking {
    members: Vec<String>,
    block: Duration,
    blocking: Arc<AtomicBool>,
}

impl Callbacks for Blocking {
    type State = ();

    fn nodes(&mut self, _: &str) -> Result<Vec<String>, CallbackError> {
        Ok(self.members.clone())
    }
    fn shard_count(&mut self, _: &str) -> Result<u32, CallbackError> {
        Ok(1)
    }
    fn allocated(&mut self, _: &str, _: u32, _: u64) -> Result<(), CallbackError> {
        self.blocking.store(true, Ordering::SeqCst);
        std::thread::sleep(self.block);
        self.blocking.store(false, Ordering::SeqCst);
        Ok(())
    }
    fn score(&mut self, _: &mut ()) -> Result<i64, CallbackError> {
        Ok(0)
    }
    fn prolonged(&mut self, _: &NodeId, _: &mut (), _: u64) -> Result<(), CallbackError> {
        Ok(())
    }
    fn deallocated(&mut self, _: Option<&NodeId>, _: ReleaseReason, _: ()) {}
}

/// `get_node` on every node of a 3-node cluster while one node's
/// `allocated` sleeps for a second on its callback thread.
pub fn lookups_while_a_callback_blocks(
    runs: usize,
    t: Timings,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let block = Duration::from_secs(1);
    let (mut medians, mut worst) = (Vec::new(), 0f64);
    for run in 0..runs {
        let addresses = free_addresses(3)?;
        let blocking = Arc::new(AtomicBool::new(false));
        let mut nodes = Vec::new();
        for address in &addresses {
            let mut config = Config::new(address.clone(), COOKIE.to_vec());
            config.timings = t;
            let app = Blocking {
                members: addresses.clone(),
                block,
                blocking: blocking.clone(),
            };
            nodes.push(
                Cluster::join(&format!("bench-blocking-{run}"), app, config)
                    .map_err(|e| e.to_string())?,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !blocking.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                return Err("no allocated began within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut samples = Vec::new();
        while blocking.load(Ordering::SeqCst) {
            for node in &nodes {
                let started = Instant::now();
                std::hint::black_box(node.get_node(0));
                samples.push(started.elapsed().as_nanos() as f64);
            }
        }
        worst = samples.iter().copied().fold(worst, f64::max);
        medians.push(median(samples));
        for node in nodes {
            node.leave().map_err(|e| e.to_string())?;
        }
    }
    rows.push(Row {
        what: format!(
            "get_node while an allocated blocks the callback thread for {} s",
            block.as_secs()
        ),
        median: median(medians),
        unit: "ns/call",
        note: format!("worst {:.1} µs", worst / 1000.0),
    });
    Ok(())
}

/// 1,000 connections to one node of a settled 3-node cluster, each sending
/// one malformed frame, one after the other; the largest heartbeat round
/// trip any node reports meanwhile.
pub fn flood(runs: usize, t: Timings, rows: &mut Vec<Row>) -> Result<(), String> {
    const FRAMES: usize = 1000;
    let step = t.heartbeat_timeout + t.node_grace + Duration::from_secs(5);
    let (mut took, mut rtts, mut unclosed) = (Vec::new(), Vec::new(), 0);
    for run in 0..runs {
        let mut local = LocalCluster::new(
            &format!("bench-flood-{run}"),
            3,
            1,
            t,
            ScoreMode::Uptime,
            None,
            Wiring::Direct,
        )?;
        local.start_all()?;
        local.wait(step, "cold start", |l| l.settled(&l.everyone()))?;
        let target = local.nodes[0].address.clone();
        let largest_rtt = AtomicU64::new(0);
        let flooding = AtomicBool::new(true);
        let result: Result<(Duration, usize), String> = std::thread::scope(|scope| {
            scope.spawn(|| {
                while flooding.load(Ordering::Relaxed) {
                    for (_, c) in local.running() {
                        largest_rtt.fetch_max(c.stats().heartbeat_rtt_micros, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            let started = Instant::now();
            let mut closed = 0;
            for i in 0..FRAMES {
                // A length prefix, then bytes no message starts with.
                let mut garbage = 12u32.to_be_bytes().to_vec();
                garbage.extend((0..12).map(|j| (i * 31 + j * 7) as u8 | 0x80));
                let mut stream = TcpStream::connect(&target).map_err(|e| e.to_string())?;
                stream.write_all(&garbage).map_err(|e| e.to_string())?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                let mut rest = Vec::new();
                match stream.read_to_end(&mut rest) {
                    Ok(_) => closed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
                    Err(_) => {}
                }
            }
            let elapsed = started.elapsed();
            flooding.store(false, Ordering::Relaxed);
            Ok((elapsed, closed))
        });
        let (elapsed, closed) = result?;
        took.push(ms(elapsed));
        unclosed += FRAMES - closed;
        rtts.push(largest_rtt.load(Ordering::Relaxed) as f64 / 1000.0);
        for i in 0..3 {
            local.crash(i);
        }
    }
    rows.push(Row {
        what: format!("{FRAMES} malformed frames at one node, one connection each, until closed"),
        median: median(took),
        unit: "ms",
        note: if unclosed == 0 {
            "every connection closed by the node".into()
        } else {
            format!("{unclosed} connections not closed within 5 s")
        },
    });
    rows.push(Row {
        what: "  largest heartbeat round trip in the cluster meanwhile".into(),
        median: median(rtts),
        unit: "ms",
        note: format!(
            "heartbeat_timeout is {} ms",
            t.heartbeat_timeout.as_millis()
        ),
    });
    Ok(())
}
