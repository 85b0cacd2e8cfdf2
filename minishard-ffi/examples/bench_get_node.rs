//! The Rust side of the lookup benchmark: `Cluster::get_node` and
//! `Cluster::with_node` ns per call on 1 and 2 threads, with the method of
//! tests/c/bench_get_node.c, so that tests/c/bench.sh prints the C and the
//! Rust figures side by side.
//!
//! `cargo run --release -p minishard-ffi --example bench_get_node -- [RUNS] [ITERATIONS]`

use std::net::TcpListener;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use minishard::{
    CallbackError, Callbacks, Cluster, Config, Health, NodeId, ReleaseReason, Timings,
};

struct Member(Vec<String>);

impl Callbacks for Member {
    type State = ();
    fn nodes(&mut self, _: &str) -> Result<Vec<String>, CallbackError> {
        Ok(self.0.clone())
    }
    fn shard_count(&mut self, _: &str) -> Result<u32, CallbackError> {
        Ok(2)
    }
    fn allocated(&mut self, _: &str, _: u32, _: u64) -> Result<(), CallbackError> {
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The median over `runs` of the per-thread ns per call of `lookup`, with
/// `threads` threads calling it `iterations` times each, started together.
fn measure(
    runs: usize,
    threads: usize,
    iterations: u32,
    lookup: &(dyn Fn(u32) -> bool + Sync),
) -> f64 {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let barrier = Barrier::new(threads);
        let per_thread: Vec<f64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        let started = Instant::now();
                        let mut found = 0u32;
                        for i in 0..iterations {
                            found += u32::from(lookup(i));
                        }
                        assert_eq!(std::hint::black_box(found), iterations);
                        started.elapsed().as_nanos() as f64 / f64::from(iterations)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(f64::NAN))
                .collect()
        });
        samples.push(median(per_thread));
    }
    median(samples)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(Ok(7), |a| a.parse())?;
    let iterations: u32 = args.next().map_or(Ok(2_000_000), |a| a.parse())?;

    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let members: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    drop(listeners);
    let timings = Timings {
        heartbeat_interval: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_millis(250),
        transition_timeout: Duration::from_millis(500),
        node_grace: Duration::from_millis(750),
        ..Timings::default()
    };
    let nodes: Vec<Cluster> = members
        .iter()
        .map(|address| {
            let mut config = Config::new(address.clone(), b"bench".to_vec());
            config.timings = timings;
            Cluster::join("bench-lookup", Member(members.clone()), config)
        })
        .collect::<Result<_, _>>()?;
    for node in &nodes {
        node.wait_until(Health::Available, Duration::from_secs(10))?;
    }
    let cluster = &nodes[0];
    let get_node = |i: u32| cluster.get_node(i & 1).is_some();
    let with_node = |i: u32| cluster.with_node(i & 1, |n| std::hint::black_box(n).is_some());
    for (name, lookup) in [
        (
            "Rust Cluster::get_node",
            &get_node as &(dyn Fn(u32) -> bool + Sync),
        ),
        ("Rust Cluster::with_node", &with_node),
    ] {
        for threads in [1usize, 2] {
            let per_call = measure(runs, threads, iterations, lookup);
            println!(
                "{:<44} {per_call:8.1} ns/call  (per thread, median of {runs} runs of {iterations} calls)",
                format!("{name}, {threads} thread{}", if threads == 1 { "" } else { "s" }),
            );
        }
    }
    Ok(())
}
