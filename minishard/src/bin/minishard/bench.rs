//! `minishard bench`: start-up, failover, hand-over and lookup costs on
//! loopback, as medians over repeated runs, printed as a table.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use minishard::Timings;

use crate::app::ScoreMode;
use crate::local::LocalCluster;

#[derive(clap::Args)]
pub struct Args {
    /// Repetitions of each measurement.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Cluster sizes for the cold-start measurement, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "5,20")]
    sizes: Vec<usize>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Row {
    what: String,
    median: f64,
    unit: &'static str,
    note: String,
}

pub fn run(args: Args) -> Result<(), String> {
    let t = Timings::default();
    let step = t.heartbeat_timeout + t.node_grace + Duration::from_secs(5);
    let mut rows = Vec::new();

    for &size in &args.sizes {
        let shards = (size / 2).max(1) as u32;
        let mut samples = Vec::new();
        for run in 0..args.runs {
            let mut local = LocalCluster::new(
                &format!("bench-start-{run}"),
                size,
                shards,
                t,
                ScoreMode::Uptime,
                None,
            )?;
            let started = Instant::now();
            local.start_all()?;
            local.wait(step * 2, "cold start", |l| l.settled(&l.everyone()))?;
            samples.push(ms(started.elapsed()));
        }
        rows.push(Row {
            what: format!("cold start, {size} nodes / {shards} shards, until available everywhere"),
            median: median(samples),
            unit: "ms",
            note: String::new(),
        });
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

    let mut local = LocalCluster::new("bench-lookup", 3, 2, t, ScoreMode::Uptime, None)?;
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

    println!(
        "minishard bench: loopback, default timings, median of {} runs",
        args.runs
    );
    println!("{:<70} {:>14}", "measurement", "median");
    for row in rows {
        let value = format!("{:.1} {}", row.median, row.unit);
        println!("{:<70} {:>14}  {}", row.what, value, row.note);
    }
    Ok(())
}
