//! Core cost at scale, without sockets: a simulated cold start of N
//! members, then a split into two halves that both keep every shard, then
//! the heal, with the simulated time each took (against guarantee 1's bound,
//! `heartbeat_timeout + node_grace + 100 ms`), the CPU the cores spent per
//! node (the simulator runs them all on one thread: its CPU time over N),
//! and the messages each node received.
//!
//! `cargo run --release -p minishard --example scale -- 5 20 50 100 200`

use std::time::Duration;

use minishard::sim::{Delivered, Sim, SimConfig};

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![5, 20, 50]
    } else {
        sizes
    };
    println!(
        "{:>6} {:>7} {:>12} {:>14} {:>22}",
        "nodes",
        "phase",
        "simulated ms",
        "CPU ms / node",
        "received per node: records relays epochs"
    );
    for n in sizes {
        let config = SimConfig::new(n, (n / 2).max(1) as u32);
        let t = config.timings;
        let bound = t.heartbeat_timeout + t.node_grace + Duration::from_millis(100);
        let mut sim = Sim::new(config);
        let half: Vec<usize> = (0..n - n / 2).collect();
        let other: Vec<usize> = (n - n / 2..n).collect();

        let phase =
            |sim: &mut Sim, name: &str, act: &dyn Fn(&mut Sim), done: &dyn Fn(&Sim) -> bool| {
                let before = sim.messages_delivered();
                let from = sim.now();
                let cpu = cpu_time();
                act(sim);
                let settled = sim.wait_until(Duration::from_secs(60), done);
                let cpu = cpu_time() - cpu;
                assert!(
                    settled,
                    "{n} nodes: {name} did not settle: {:?}",
                    sim.convergence_problem()
                );
                let took = sim.now() - from;
                let got = minus(sim.messages_delivered(), before);
                let per_node = |count: u64| count as f64 / n as f64;
                println!(
                    "{n:>6} {name:>7} {:>12} {:>14.2} {:>26.0} {:>6.0} {:>6.0}{}",
                    took.as_millis(),
                    cpu.as_secs_f64() * 1000.0 / n as f64,
                    per_node(got.records),
                    per_node(got.relays),
                    per_node(got.epochs),
                    if name != "split" && took > bound {
                        format!("  OVER the bound of {} ms", bound.as_millis())
                    } else {
                        String::new()
                    },
                );
            };
        phase(&mut sim, "start", &|s| s.start_all(), &Sim::converged);
        let groups = vec![half.clone(), other.clone()];
        phase(&mut sim, "split", &|s| s.split(&groups), &|s| {
            s.convergence_problem_among(&half).is_none()
                && s.convergence_problem_among(&other).is_none()
        });
        phase(&mut sim, "heal", &|s| s.heal_all(), &Sim::converged);
    }
}

fn minus(after: Delivered, before: Delivered) -> Delivered {
    Delivered {
        records: after.records - before.records,
        relays: after.relays - before.relays,
        epochs: after.epochs - before.epochs,
    }
}

/// CPU time this process has used (the simulator runs on this thread
/// alone), so a busy machine does not inflate the figure as a clock would.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses:
    // utime and stime are the 12th and 13th, in clock ticks of 10 ms.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}
