//! Runs random fault schedules through the deterministic simulator and checks
//! the invariants of docs/design.md section 7 after each.
//!
//! ```text
//! cargo run --release -p minishard --example sim -- --schedules 2000 --seed 1
//! cargo run --release -p minishard --example sim -- --schedules 1 --seed 1234 --trace
//! ```
//! Schedule `k` uses seed `S + k`; one seed in three runs in strict mode
//! (`quorum = majority`), counted on a line of its own. The last line is
//! `schedules=N violations=V conflicts=C failovers=F degradations=D leaves=L`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use minishard::sim::schedule::{self, Report};

struct Args {
    schedules: u64,
    seed: u64,
    threads: usize,
    trace: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        schedules: 200,
        seed: 1,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        trace: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value"))?
                .parse::<u64>()
                .map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--schedules" => args.schedules = value("--schedules")?,
            "--seed" => args.seed = value("--seed")?,
            "--threads" => args.threads = value("--threads")?.max(1) as usize,
            "--trace" => args.trace = true,
            "-h" | "--help" => {
                return Err("usage: sim [--schedules N] [--seed S] [--threads T] [--trace]".into())
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if args.trace {
        // The core's own log lines, interleaved with the simulator's trace.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("minishard=debug"))
            .with_writer(std::io::stderr)
            .without_time()
            .init();
    }
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let reports = Mutex::new(Vec::<Report>::new());
    std::thread::scope(|scope| {
        for _ in 0..args.threads {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= args.schedules {
                    break;
                }
                let report = schedule::run_with(args.seed.wrapping_add(k), args.trace);
                reports.lock().expect("no panics while held").push(report);
            });
        }
    });
    let mut reports = reports.into_inner().expect("no panics while held");
    reports.sort_by_key(|r| r.seed);
    let mut totals = Report::default();
    let strict = reports.iter().filter(|r| r.strict);
    let (strict_schedules, strict_violations, excused) = strict.fold((0, 0, 0), |(n, v, e), r| {
        (n + 1, v + r.violations.len(), e + r.excused_overlaps)
    });
    let mut simulated = std::time::Duration::ZERO;
    // How many schedules reached each kind of fault the older generator
    // could not make.
    let reached = |f: fn(&Report) -> u64| reports.iter().filter(|r| f(r) > 0).count();
    for r in &reports {
        if !r.violations.is_empty() {
            println!("schedule seed={} FAILED:", r.seed);
            for line in &r.script {
                println!("  script: {line}");
            }
            for v in &r.violations {
                println!("  violation: {v}");
            }
            println!(
                "  replay: cargo run --release -p minishard --example sim -- --schedules 1 --seed {} --trace",
                r.seed
            );
        }
        totals.violations.extend(r.violations.iter().cloned());
        totals.conflicts += r.conflicts;
        totals.failovers += r.failovers;
        totals.degradations += r.degradations;
        totals.leaves += r.leaves;
        simulated += r.simulated;
    }
    println!(
        "reached: multi_hop={} member_changes={} conflict_races={} three_way_merges={} (schedules with at least one)",
        reached(|r| r.multi_hop),
        reached(|r| r.member_changes),
        reached(|r| r.conflict_races),
        reached(|r| r.three_way_merges),
    );
    eprintln!(
        "simulated {:.0} s of cluster time in {:.1} s of wall time",
        simulated.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "strict mode (quorum = majority): schedules={strict_schedules} violations={strict_violations} overlaps_behind_slow_callbacks={excused}"
    );
    println!(
        "schedules={} violations={} conflicts={} failovers={} degradations={} leaves={}",
        reports.len(),
        totals.violations.len(),
        totals.conflicts,
        totals.failovers,
        totals.degradations,
        totals.leaves
    );
    if totals.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
