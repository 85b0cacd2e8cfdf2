//! `minishard bench`: start-up, failover, hand-over, idle, frame sealing
//! and lookup costs on loopback, as medians over repeated runs, printed as
//! a table (with the rows of `bench_conditions`: what the tests check
//! without a stopwatch).

use std::sync::Barrier;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use minishard::wire::codec::{FrameDecoder, FrameEncoder};
use minishard::wire::seal::{self, SessionKeys, Side};
use minishard::{Cluster, Config, Timings};
use tokio_util::codec::{Decoder, Encoder};

use crate::app::{MemberSource, PrintingApp, ScoreMode};
use crate::bench_conditions;
use crate::bench_processes;
use crate::local::{LocalCluster, Wiring, COOKIE};

#[derive(clap::Args)]
pub struct Args {
    /// Repetitions of each measurement.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Cluster sizes (n nodes keeping n/2 shards) for the scale scenarios:
    /// cold start, failover, heal after a split, idle cost. Comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "5,20,50")]
    sizes: Vec<usize>,
    /// Length of the idle window over which CPU and memory are measured.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    idle_secs: u64,
    /// Skip the lookup measurements (get_node, with_node).
    #[arg(long)]
    no_lookups: bool,
    /// Measure requests only (round trips, throughput, first reply after a
    /// fault), next to a bare tokio echo.
    #[arg(long)]
    only_requests: bool,
    /// Only the scale scenarios of `--sizes` (cold start, failover, heal,
    /// idle cost).
    #[arg(long)]
    scale_only: bool,
    /// Internal: measure one idle cluster of this size in this process and
    /// print one JSON line (the parent runs it in a fresh process so that
    /// the memory it measures is that cluster's only).
    #[arg(long, hide = true)]
    idle_probe: Option<usize>,
    /// Internal: the idle probe leaves frames unsealed, to measure what
    /// sealing costs.
    #[arg(long, hide = true)]
    unsealed: bool,
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) struct Row {
    pub what: String,
    pub median: f64,
    pub unit: &'static str,
    pub note: String,
}

pub fn run(args: Args) -> Result<(), String> {
    let t = Timings::default();
    let step = t.heartbeat_timeout + t.node_grace + Duration::from_secs(5);
    let mut rows = Vec::new();

    if let Some(size) = args.idle_probe {
        if args.unsealed {
            seal::leave_frames_unsealed_for_benchmarks();
        }
        return idle_probe(size, Duration::from_secs(args.idle_secs), t);
    }
    if args.only_requests {
        if args.unsealed {
            // What sealing costs a request: compare with a sealed run.
            seal::leave_frames_unsealed_for_benchmarks();
        }
        // Sealing is most of what a 64 KiB round trip adds to the echo's.
        frame_costs(&args, &mut rows);
        crate::bench_requests::run(args.runs, t, &mut rows)?;
        print_rows(&args, rows);
        return Ok(());
    }
    check_fd_limit(args.sizes.iter().copied().max().unwrap_or(5))?;

    // Real processes, as an application runs them: the cold start and what
    // each costs at idle.
    if let Err(error) = bench_processes::node_processes(
        args.runs,
        5,
        Duration::from_secs(args.idle_secs),
        &mut rows,
    ) {
        rows.push(Row {
            what: "5 node processes: FAILED".into(),
            median: f64::NAN,
            unit: "",
            note: error,
        });
    }
    for &size in &args.sizes {
        // A size that does not converge is a result, not the end of the run.
        if let Err(error) = scale(size, &args, t, &mut rows) {
            rows.push(Row {
                what: format!("{size} nodes: FAILED"),
                median: f64::NAN,
                unit: "",
                note: error,
            });
        }
    }
    if args.scale_only {
        print_rows(&args, rows);
        return Ok(());
    }
    let (mut failover, mut excess, mut handover) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        let mut local = LocalCluster::new(
            &format!("bench-failover-{run}"),
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
        let crashed_at = Instant::now();
        local.crash(victim);
        let viewer = (victim + 1) % 5;
        local.wait(step, "failover", |l| {
            l.owner(viewer, 0).is_some_and(|o| o != victim)
        })?;
        let allocated_at = local
            .events_since(crashed_at)
            .into_iter()
            .find(|(_, e)| e.event == "allocated" && e.fields["shard"] == 0)
            .map(|(_, e)| e.at)
            .ok_or("no allocated event for the failover")?;
        let took = allocated_at - crashed_at;
        failover.push(ms(took));
        excess.push(ms(took.saturating_sub(t.node_grace)));

        local.wait(step, "settle", |l| l.settled(&l.everyone()))?;
        let leaver = local.owner(viewer, 1).ok_or("nobody owns shard 1")?;
        let left_at = Instant::now();
        local.leave(leaver)?;
        let viewer = (leaver + 1) % 5;
        let viewer = if local.nodes[viewer].cluster.is_none() {
            (viewer + 1) % 5
        } else {
            viewer
        };
        local.wait(step, "hand-over", |l| {
            l.owner(viewer, 1).is_some_and(|o| o != leaver)
        })?;
        let allocated_at = local
            .events_since(left_at)
            .into_iter()
            .find(|(_, e)| e.event == "allocated" && e.fields["shard"] == 1)
            .map(|(_, e)| e.at)
            .ok_or("no allocated event for the hand-over")?;
        handover.push(ms(allocated_at - left_at));
    }
    rows.push(Row {
        what: "failover after an owner's crash, until allocated on the new owner".into(),
        median: median(failover),
        unit: "ms",
        note: format!("node_grace is {} ms", t.node_grace.as_millis()),
    });
    rows.push(Row {
        what: "  of which above node_grace (detection + settle + claim)".into(),
        median: median(excess),
        unit: "ms",
        note: String::new(),
    });
    rows.push(Row {
        what: "hand-over after leave(), until allocated on the new owner".into(),
        median: median(handover),
        unit: "ms",
        note: String::new(),
    });
    // The times the tests check only as conditions or orderings.
    bench_conditions::restart_and_degrade(args.runs, t, &mut rows)?;
    bench_conditions::lookups_while_a_callback_blocks(args.runs, t, &mut rows)?;
    bench_conditions::flood(args.runs, t, &mut rows)?;

    frame_costs(&args, &mut rows);
    crate::bench_requests::run(args.runs, t, &mut rows)?;

    if args.no_lookups {
        print_rows(&args, rows);
        return Ok(());
    }
    let mut local = LocalCluster::new(
        "bench-lookup",
        3,
        2,
        t,
        ScoreMode::Uptime,
        None,
        Wiring::Direct,
    )?;
    local.start_all()?;
    local.wait(step, "cold start", |l| l.settled(&l.everyone()))?;
    let cluster = local.nodes[0].cluster.as_ref().ok_or("node 0 stopped")?;
    type Lookup<'a> = (&'static str, &'a (dyn Fn(u32) -> bool + Sync));
    let clone: &(dyn Fn(u32) -> bool + Sync) = &|shard| cluster.get_node(shard).is_some();
    let borrow: &(dyn Fn(u32) -> bool + Sync) = &|shard| cluster.with_node(shard, |n| n.is_some());
    let lookups: [Lookup<'_>; 2] = [("get_node", clone), ("with_node", borrow)];
    for (name, lookup) in lookups {
        for threads in [1usize, 2] {
            let mut samples = Vec::new();
            for _ in 0..args.runs.max(3) {
                let iterations = 2_000_000u32;
                let barrier = Barrier::new(threads);
                let per_call = std::thread::scope(|scope| {
                    let handles: Vec<_> = (0..threads)
                        .map(|_| {
                            scope.spawn(|| {
                                barrier.wait();
                                let started = Instant::now();
                                let mut found = 0u32;
                                for i in 0..iterations {
                                    found += u32::from(lookup(i & 1));
                                }
                                std::hint::black_box(found);
                                started.elapsed().as_nanos() as f64 / f64::from(iterations)
                            })
                        })
                        .collect();
                    median(
                        handles
                            .into_iter()
                            .map(|h| h.join().unwrap_or(f64::NAN))
                            .collect(),
                    )
                });
                samples.push(per_call);
            }
            rows.push(Row {
                what: format!(
                    "{name}, {threads} thread{}",
                    if threads == 1 { "" } else { "s" }
                ),
                median: median(samples),
                unit: "ns/call",
                note: "per thread".into(),
            });
        }
    }
    for i in 0..3 {
        local.leave(i)?;
    }

    print_rows(&args, rows);
    Ok(())
}

fn print_rows(args: &Args, rows: Vec<Row>) {
    println!(
        "minishard bench: loopback, default timings, median of {} runs",
        args.runs
    );
    println!("{:<70} {:>16}", "measurement", "median");
    for row in rows {
        // Idle CPU per node is a fraction of a percent: one decimal would
        // hide what sealing adds.
        let decimals = if row.unit == "% core" { 3 } else { 1 };
        let value = format!("{:.*} {}", decimals, row.median, row.unit);
        println!("{:<70} {:>16}  {}", row.what, value, row.note);
    }
}

/// Cold start, failover and heal-to-resolved for `size` nodes keeping
/// `size / 2` shards, then the idle cost in a fresh process.
fn scale(size: usize, args: &Args, t: Timings, rows: &mut Vec<Row>) -> Result<(), String> {
    let shards = (size / 2).max(1) as u32;
    let step = t.heartbeat_timeout + t.node_grace + Duration::from_secs(5 + size as u64 / 5);
    let bound = ms(t.heartbeat_timeout + t.node_grace) + 100.0;
    let (mut start, mut failover, mut heal, mut conflicts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // A heal that does not settle in time is counted, not the end of the
    // size: the cold start and failover figures still stand.
    let mut unsettled_heals = 0;
    let mut start_bytes = Vec::new();
    for run in 0..args.runs {
        let mut local = LocalCluster::new(
            &format!("bench-{size}-{run}"),
            size,
            shards,
            t,
            ScoreMode::Uptime,
            None,
            Wiring::Direct,
        )?;
        // Cold start: every node joins at once; until all are available
        // and agree on the map.
        let started = Instant::now();
        let lo_before = loopback()?;
        start_all_one_host(&mut local)?;
        poll(&local, cold_start_limit(size), "cold start", |l| {
            l.settled(&l.everyone())
        })?;
        start.push(ms(started.elapsed()));
        let lo_after = loopback()?;
        start_bytes.push((lo_after.1 - lo_before.1) as f64 / size as f64);

        // Failover: the owner of shard 0 dies without a word; until the
        // new owner's `allocated`.
        let victim = local.owner(0, 0).ok_or("nobody owns shard 0")?;
        let viewer = (victim + 1) % size;
        let crashed_at = Instant::now();
        local.crash(victim);
        poll(&local, step, "failover", |l| {
            l.owner(viewer, 0).is_some_and(|o| o != victim)
        })?;
        let allocated_at = local
            .events_since(crashed_at)
            .into_iter()
            .find(|(_, e)| e.event == "allocated" && e.fields["shard"] == 0)
            .map(|(_, e)| e.at)
            .ok_or("no allocated event for the failover")?;
        failover.push(ms(allocated_at - crashed_at));
        start_one_host(&mut local, victim)?;
        poll(&local, step, "rejoin", |l| l.settled(&l.everyone()))?;

        // Heal: split in two halves that both keep every shard (each has at
        // least `shards` members), wait until each side is settled, heal;
        // until everyone is available with one owner per shard again.
        let half = size - size / 2;
        let a: Vec<usize> = (0..half).collect();
        let b: Vec<usize> = (half..size).collect();
        local.split(&a, &b);
        poll(&local, step, "split", |l| l.settled(&a) && l.settled(&b))?;
        let before: u64 = local
            .running()
            .map(|(_, c)| c.stats().conflicts_resolved)
            .sum();
        let healed_at = Instant::now();
        local.heal();
        let heal_result = poll(&local, step, "heal", |l| l.settled(&l.everyone()));
        match heal_result {
            Ok(_) => heal.push(ms(healed_at.elapsed())),
            Err(error) => {
                unsettled_heals += 1;
                eprintln!("{size} nodes, run {run}: {error}");
            }
        }
        let after: u64 = local
            .running()
            .map(|(_, c)| c.stats().conflicts_resolved)
            .sum();
        conflicts.push((after - before) as f64);
        for i in 0..size {
            local.crash(i);
        }
    }
    rows.push(Row {
        what: format!("{size} nodes / {shards} shards: cold start, until available everywhere"),
        median: median(start),
        unit: "ms",
        note: String::new(),
    });
    rows.push(Row {
        what: format!("{size} nodes: loopback bytes per node during the cold start"),
        median: median(start_bytes) / 1024.0,
        unit: "KiB",
        note: String::new(),
    });
    let failover = median(failover);
    rows.push(Row {
        what: format!("{size} nodes: failover after an owner's crash, until allocated"),
        median: failover,
        unit: "ms",
        note: format!(
            "bound {bound:.0} ms (heartbeat_timeout + node_grace + 100){}",
            if failover > bound { ": OVER" } else { "" }
        ),
    });
    rows.push(Row {
        what: format!(
            "{size} nodes: heal after a {}/{} split, until resolved",
            size - size / 2,
            size / 2
        ),
        median: median(heal),
        unit: "ms",
        note: if unsettled_heals == 0 {
            format!("{:.0} conflicts decided per heal", median(conflicts))
        } else {
            format!(
                "{:.0} conflicts decided per heal; {unsettled_heals} of {} heals not settled within {:.0} s",
                median(conflicts),
                args.runs,
                step.as_secs_f64()
            )
        },
    });

    // Idle cost in a fresh process: its memory is this cluster's alone.
    let probe = idle_in_fresh_process(size, args, false)?;
    let unsealed = idle_in_fresh_process(size, args, true)?;
    let f = |k: &str| probe[k].as_f64().unwrap_or(f64::NAN);
    let u = |k: &str| unsealed[k].as_f64().unwrap_or(f64::NAN);
    rows.push(Row {
        what: format!(
            "{size} nodes: CPU per node at idle, over {} s",
            args.idle_secs
        ),
        median: f("cpu_percent_per_node"),
        unit: "% core",
        note: format!("{:.1}% of one core for the whole process", f("cpu_percent")),
    });
    rows.push(Row {
        what: format!("{size} nodes:   the same with frames left unsealed"),
        median: u("cpu_percent_per_node"),
        unit: "% core",
        note: format!(
            "sealing costs {:+.3}% of a core per node",
            f("cpu_percent_per_node") - u("cpu_percent_per_node")
        ),
    });
    rows.push(Row {
        what: format!("{size} nodes: heartbeat round trip at idle (median over nodes)"),
        median: f("rtt_micros_median"),
        unit: "us",
        note: format!("{:.0} us with frames left unsealed", u("rtt_micros_median")),
    });
    rows.push(Row {
        what: format!("{size} nodes: memory per node at idle (RSS growth / nodes)"),
        median: f("rss_kib_per_node") / 1024.0,
        unit: "MiB",
        note: format!("{:.1} MiB for the process", f("rss_kib") / 1024.0),
    });
    rows.push(Row {
        what: format!("{size} nodes: loopback packets per node per second at idle"),
        median: f("packets_per_node_per_s"),
        unit: "pkt/s",
        note: format!("{:.0} bytes/s per node", f("bytes_per_node_per_s")),
    });
    Ok(())
}

/// Runs the idle probe for `size` nodes in a fresh process (its memory is
/// that cluster's alone), frames sealed or not; returns its JSON line.
fn idle_in_fresh_process(
    size: usize,
    args: &Args,
    unsealed: bool,
) -> Result<serde_json::Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = std::process::Command::new(exe);
    command
        .args(["bench", "--idle-probe", &size.to_string()])
        .args(["--idle-secs", &args.idle_secs.to_string()]);
    if unsealed {
        command.arg("--unsealed");
    }
    let out = command
        .output()
        .map_err(|e| format!("cannot run the idle probe: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "idle probe for {size} nodes failed ({e}): {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// What sealing and opening one frame costs (the codec a connection runs,
/// without the socket), per frame size, next to the same frames unsealed.
fn frame_costs(args: &Args, rows: &mut Vec<Row>) {
    for (size, label, iterations) in [(100, "100 B", 200_000u32), (64 << 10, "64 KiB", 2_000)] {
        let payload = Bytes::from(vec![0x5au8; size]);
        let per_frame = |sealed: bool| {
            let samples = (0..args.runs.max(3))
                .map(|_| {
                    let (dialer, listener) = (
                        SessionKeys::derive(b"bench", &[1; 32], &[2; 32], Side::Dialer),
                        SessionKeys::derive(b"bench", &[1; 32], &[2; 32], Side::Listener),
                    );
                    let limit = minishard::wire::DEFAULT_FRAME_LIMIT;
                    let mut encoder =
                        FrameEncoder::established(limit, sealed.then_some(dialer.sealer));
                    let mut decoder =
                        FrameDecoder::established(limit, sealed.then_some(listener.opener));
                    let mut wire = BytesMut::with_capacity(size + 64);
                    let started = Instant::now();
                    for _ in 0..iterations {
                        encoder
                            .encode(payload.clone(), &mut wire)
                            .expect("under the limit");
                        let body = decoder.decode(&mut wire).expect("opens");
                        std::hint::black_box(body);
                    }
                    started.elapsed().as_nanos() as f64 / f64::from(iterations)
                })
                .collect();
            median(samples)
        };
        let (sealed, plain) = (per_frame(true), per_frame(false));
        rows.push(Row {
            what: format!("frame of {label}: seal + open (AES-256-GCM)"),
            median: sealed,
            unit: "ns/frame",
            note: format!(
                "{:.0} MB/s; {plain:.0} ns unsealed (framing and copies only)",
                size as f64 / sealed * 1000.0
            ),
        });
    }
}

/// One idle cluster in this process: after it settles, the CPU time,
/// resident memory, loopback traffic and heartbeat round trips over
/// `window`.
fn idle_probe(size: usize, window: Duration, t: Timings) -> Result<(), String> {
    let shards = (size / 2).max(1) as u32;
    let rss_before = proc_status_kib("VmRSS")?;
    let mut local = LocalCluster::new(
        &format!("bench-idle-{size}"),
        size,
        shards,
        t,
        ScoreMode::Uptime,
        None,
        Wiring::Direct,
    )?;
    start_all_one_host(&mut local)?;
    poll(&local, cold_start_limit(size), "cold start", |l| {
        l.settled(&l.everyone())
    })?;
    // Let the start-up's reconnections and timers die down first.
    std::thread::sleep(Duration::from_secs(2));
    let (cpu0, lo0, t0) = (cpu_seconds()?, loopback()?, Instant::now());
    std::thread::sleep(window);
    let (cpu1, lo1, secs) = (cpu_seconds()?, loopback()?, t0.elapsed().as_secs_f64());
    let rss = proc_status_kib("VmRSS")?;
    let moved = local.events_since(t0).len();
    let rtt = median(
        local
            .running()
            .map(|(_, c)| c.stats().heartbeat_rtt_micros as f64)
            .collect(),
    );
    let n = size as f64;
    let cpu = (cpu1 - cpu0) / secs * 100.0;
    let growth = rss.saturating_sub(rss_before) as f64;
    println!(
        "{}",
        serde_json::json!({
            "nodes": size,
            "cpu_percent": cpu,
            "cpu_percent_per_node": cpu / n,
            "rss_kib": rss,
            "rss_kib_per_node": growth / n,
            "packets_per_node_per_s": (lo1.0 - lo0.0) as f64 / secs / n,
            "bytes_per_node_per_s": (lo1.1 - lo0.1) as f64 / secs / n,
            "events_while_idle": moved,
            "rtt_micros_median": rtt,
        })
    );
    for i in 0..size {
        local.crash(i);
    }
    Ok(())
}

/// How long a cold start of `size` nodes may take before the bench gives up.
fn cold_start_limit(size: usize) -> Duration {
    Duration::from_secs(30 + 2 * size as u64)
}

/// Waits for `condition` like `LocalCluster::wait`, polling every 10 ms
/// instead of 2: checking a 50-node cluster costs enough that polling it
/// every 2 ms takes a core of this 2-core machine from the nodes measured.
fn poll(
    local: &LocalCluster,
    timeout: Duration,
    what: &str,
    condition: impl Fn(&LocalCluster) -> bool,
) -> Result<Duration, String> {
    let started = Instant::now();
    while !condition(local) {
        if started.elapsed() > timeout {
            return Err(format!(
                "{what}: not done within {timeout:?} ({})",
                where_it_stands(local)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(started.elapsed())
}

/// What a cluster that did not settle looks like: health, maps, churn.
/// (The bench's nodes have no notice hook, so why connections went down
/// is not known here: `minishard node` prints it as `peer_down`.)
fn where_it_stands(local: &LocalCluster) -> String {
    let clusters: Vec<&Cluster> = local.running().map(|(_, c)| c).collect();
    let count = |h: minishard::Health| clusters.iter().filter(|c| c.health() == h).count();
    let mut maps: Vec<_> = clusters.iter().map(|c| c.shard_map()).collect();
    let unowned = maps
        .iter()
        .map(|m| m.iter().filter(|o| o.is_none()).count())
        .sum::<usize>();
    maps.sort();
    maps.dedup();
    let stats: Vec<_> = clusters.iter().map(|c| c.stats()).collect();
    let sum = |f: fn(&minishard::Stats) -> u64| stats.iter().map(f).sum::<u64>();
    format!(
        "available {}, transition {}, degraded {}; {} different maps, {unowned} unowned shards over all views; {} reconnects, {} ignored messages, {} log lines dropped",
        count(minishard::Health::Available),
        count(minishard::Health::Transition),
        count(minishard::Health::Degraded),
        maps.len(),
        sum(|s| s.reconnects),
        sum(|s| s.ignored_messages),
        sum(|s| s.log_lines_dropped),
    )
}

/// Starts node `i` as `LocalCluster::start` does, except that every peer
/// may be in its handshake at once: all the nodes of this process dial
/// from 127.0.0.1, so the per-source cap meant for one remote host (16)
/// would otherwise refuse most of a 50-node cold start.
fn start_one_host(local: &mut LocalCluster, i: usize) -> Result<(), String> {
    let n = local.nodes.len();
    let node = &mut local.nodes[i];
    let mut config = Config::new(node.address.clone(), COOKIE.to_vec());
    config.timings = local.timings;
    config.max_handshakes_per_source = config.max_handshakes_per_source.max(2 * n);
    config.max_handshakes = config.max_handshakes.max(4 * n);
    let app = PrintingApp {
        members: MemberSource::Shared(local.members.clone()),
        shards: local.shards,
        score: ScoreMode::Uptime,
        printer: node.printer.clone(),
        handler: crate::app::Handler::Echo,
        me: node.address.clone(),
    };
    node.cluster = Some(Cluster::join(&local.name, app, config).map_err(|e| e.to_string())?);
    Ok(())
}

fn start_all_one_host(local: &mut LocalCluster) -> Result<(), String> {
    (0..local.nodes.len()).try_for_each(|i| start_one_host(local, i))
}

/// This process's user + system CPU time, from /proc/self/stat.
fn cpu_seconds() -> Result<f64, String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("odd /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 here.
    let ticks: u64 = fields
        .get(11..13)
        .ok_or("short /proc/self/stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Ok(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `Vm*` line of /proc/self/status, in KiB.
fn proc_status_kib(key: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no {key} in /proc/self/status"))
}

/// Packets and bytes received on loopback in this network namespace.
fn loopback() -> Result<(u64, u64), String> {
    let dev = std::fs::read_to_string("/proc/self/net/dev").map_err(|e| e.to_string())?;
    let line = dev
        .lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .ok_or("no lo in /proc/self/net/dev")?;
    let f: Vec<u64> = line
        .split_once(':')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    Ok((
        f.get(1).copied().unwrap_or(0),
        f.first().copied().unwrap_or(0),
    ))
}

/// A full mesh of n in-process nodes holds about 2 n (n - 1) sockets plus
/// a listener each; say so instead of failing half-way.
fn check_fd_limit(largest: usize) -> Result<(), String> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok());
    let need = 2 * largest * largest + 64 * largest + 256;
    match soft {
        Some(soft) if soft < need => Err(format!(
            "{largest} nodes in one process need about {need} file descriptors; the limit is {soft}: raise it first (ulimit -n {need})"
        )),
        _ => Ok(()),
    }
}
