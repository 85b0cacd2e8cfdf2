//! Core cost at scale, without sockets: a simulated cold start of N members,
//! timed in wall-clock, with the number of messages the cores exchanged.
//!
//! `cargo run --release -p minishard --example scale -- 5 20 50 100`

use std::time::{Duration, Instant};

use minishard::sim::{Sim, SimConfig};

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
        "{:>6} {:>10} {:>13} {:>22}",
        "nodes", "wall ms", "simulated ms", "received per node: records relays epochs"
    );
    for n in sizes {
        let mut sim = Sim::new(SimConfig::new(n, (n / 2).max(1) as u32));
        let started = Instant::now();
        sim.start_all();
        let converged = sim.wait_until(Duration::from_secs(30), Sim::converged);
        let wall = started.elapsed();
        assert!(
            converged,
            "{n} nodes did not converge: {:?}",
            sim.convergence_problem()
        );
        let got = sim.messages_delivered();
        let per_node = |count: u64| count as f64 / n as f64;
        println!(
            "{n:>6} {:>10.1} {:>13} {:>26.0} {:>6.0} {:>6.0}",
            wall.as_secs_f64() * 1000.0,
            sim.now().as_micros() / 1000,
            per_node(got.records),
            per_node(got.relays),
            per_node(got.epochs),
        );
    }
}
