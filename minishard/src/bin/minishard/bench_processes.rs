//! `minishard bench` rows for real node processes: n `minishard node`
//! processes started at once, until every one has printed that the cluster
//! is available, then the CPU each one spends at idle, then a failover
//! after an owner's `kill -9` and a hand-over after an owner's SIGTERM
//! (a graceful leave): what an application running the command sees.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bench::{median, ms, Row};
use crate::local::free_addresses;

/// The instant each node first printed `available`, by node index.
type Available = Arc<Mutex<Vec<Option<Instant>>>>;

/// Every `allocated` printed: node index, shard, and when, by the node's
/// own clock (`t`, ms since the epoch): the time a line takes through the
/// pipe and this process's reader thread is not the cluster's.
type Allocated = Arc<Mutex<Vec<(usize, u64, u64)>>>;

/// Now, in ms since the epoch, as the nodes print `t`.
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Nodes {
    children: Vec<Child>,
    available: Available,
    allocated: Allocated,
    /// When (its clock, ms) each node printed `leaving`: it calls `leave()`.
    leaving: Arc<Mutex<Vec<Option<u64>>>>,
}

impl Nodes {
    /// The node that most recently printed `allocated` for `shard`.
    fn owner(&self, shard: u64) -> Option<usize> {
        let allocated = self.allocated.lock().unwrap_or_else(|p| p.into_inner());
        allocated
            .iter()
            .rev()
            .find(|(_, s, _)| *s == shard)
            .map(|(i, _, _)| *i)
    }

    /// When (ms since the epoch) a node other than `not` printed
    /// `allocated` for `shard` at or after `since`, waiting at most `timeout`.
    fn allocated_after(
        &self,
        shard: u64,
        not: usize,
        since: u64,
        timeout: Duration,
    ) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .allocated
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|(i, s, at)| *s == shard && *i != not && *at >= since)
                .map(|(_, _, at)| *at);
            if let Some(at) = found {
                return Ok(at);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "shard {shard} not allocated again within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(run: usize, n: usize) -> Result<(Nodes, Instant), String> {
    let addresses = free_addresses(n)?;
    let members = addresses.join(",");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let available: Available = Arc::new(Mutex::new(vec![None; n]));
    let allocated: Allocated = Arc::default();
    let leaving = Arc::new(Mutex::new(vec![None; n]));
    let mut nodes = Nodes {
        children: Vec::new(),
        available: available.clone(),
        allocated: allocated.clone(),
        leaving: leaving.clone(),
    };
    let started = Instant::now();
    for (i, address) in addresses.iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(["node", "--cluster", &format!("bench-procs-{run}")])
            .args(["--listen", address, "--nodes", &members])
            .args(["--shards", &(n / 2).max(1).to_string(), "--json"])
            .env("MINISHARD_COOKIE", "bench-processes")
            .env("RUST_LOG", "minishard=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a node process: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        nodes.children.push(child);
        let available = available.clone();
        let allocated = allocated.clone();
        let leaving = leaving.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["event"] == "allocated" {
                    if let (Some(shard), Some(t)) = (event["shard"].as_u64(), event["t"].as_u64()) {
                        let mut allocated = allocated.lock().unwrap_or_else(|p| p.into_inner());
                        allocated.push((i, shard, t));
                    }
                }
                if event["event"] == "leaving" {
                    leaving.lock().unwrap_or_else(|p| p.into_inner())[i] = event["t"].as_u64();
                }
                if event["event"] == "status" && event["new"] == "available" {
                    let mut available = available.lock().unwrap_or_else(|p| p.into_inner());
                    available[i].get_or_insert_with(Instant::now);
                }
            }
        });
    }
    Ok((nodes, started))
}

/// CPU seconds a process has used so far, summed over its threads from
/// their schedstat (nanoseconds: an idle node uses a few ms a second, below
/// what /proc/PID/stat's clock ticks resolve).
fn cpu_seconds_of(pid: u32) -> Result<f64, String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
    let mut nanos = 0u64;
    for task in tasks.flatten() {
        // A thread that ended meanwhile is simply not counted.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        nanos += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(nanos as f64 / 1e9)
}

/// Cold start of `n` node processes, and their CPU at idle over `idle`.
pub fn node_processes(
    runs: usize,
    n: usize,
    idle: Duration,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let mut cold = Vec::new();
    let mut cpu = Vec::new();
    let (mut failover, mut hand_over) = (Vec::new(), Vec::new());
    let grace = minishard::Timings::default().node_grace;
    for run in 0..runs {
        let (nodes, started) = start(run, n)?;
        let deadline = started + Duration::from_secs(30);
        let last = loop {
            let seen = nodes
                .available
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(last) = seen.iter().copied().collect::<Option<Vec<Instant>>>() {
                break last.into_iter().max().ok_or("no nodes")?;
            }
            if Instant::now() > deadline {
                return Err(format!("{n} node processes not available within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        cold.push(ms(last - started));
        // The idle cost, once the start-up's timers have died down; only
        // in the first run (it takes `idle`).
        if run == 0 {
            std::thread::sleep(Duration::from_secs(2));
            let pids: Vec<u32> = nodes.children.iter().map(Child::id).collect();
            let before: Vec<f64> = pids
                .iter()
                .map(|p| cpu_seconds_of(*p))
                .collect::<Result<_, _>>()?;
            let t0 = Instant::now();
            std::thread::sleep(idle);
            let secs = t0.elapsed().as_secs_f64();
            for (pid, before) in pids.iter().zip(before) {
                cpu.push((cpu_seconds_of(*pid)? - before) / secs * 100.0);
            }
        }
        // Hand-over: the owner of shard 1 is asked to leave (SIGTERM);
        // until the next owner's `allocated`. First, while every member is
        // up: with a member down, the successor cannot know that every
        // standby pairs as it does, and waits `settle` (docs/design.md 6.2).
        let mut nodes = nodes;
        let leaver = nodes
            .owner(1)
            .ok_or("nobody printed allocated for shard 1")?;
        let asked_at = epoch_ms();
        let status = Command::new("kill")
            .args(["-TERM", &nodes.children[leaver].id().to_string()])
            .status()
            .map_err(|e| format!("cannot signal a node: {e}"))?;
        if !status.success() {
            return Err("kill -TERM failed".into());
        }
        let at = nodes.allocated_after(1, leaver, asked_at, grace * 3)?;
        // From the moment it calls `leave()`: the signal's delivery is the
        // system's, not the library's.
        let left_at = nodes.leaving.lock().unwrap_or_else(|p| p.into_inner())[leaver]
            .ok_or("the leaver did not print leaving")?;
        hand_over.push(at.saturating_sub(left_at) as f64);
        // Failover: the owner of shard 0 is killed (the kernel closes its
        // sockets as it dies); until another node's `allocated`.
        let victim = nodes
            .owner(0)
            .ok_or("nobody printed allocated for shard 0")?;
        let killed_at = epoch_ms();
        nodes.children[victim]
            .kill()
            .map_err(|e| format!("cannot kill a node: {e}"))?;
        let at = nodes.allocated_after(0, victim, killed_at, grace * 3)?;
        failover.push((at - killed_at) as f64 - ms(grace));
    }
    rows.push(Row {
        what: format!(
            "{n} `minishard node` processes / {} shards: cold start, until each says available",
            (n / 2).max(1)
        ),
        median: median(cold),
        unit: "ms",
        note: "from spawning the first process".into(),
    });
    rows.push(Row {
        what: format!(
            "{n} `minishard node` processes: CPU per process at idle, over {} s",
            idle.as_secs()
        ),
        median: median(cpu.clone()),
        unit: "% core",
        note: format!(
            "median over processes; highest {:.3}%",
            cpu.iter().copied().fold(0.0, f64::max)
        ),
    });
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.1} to {hi:.1} ms over {} runs", v.len())
    };
    rows.push(Row {
        what: format!("{n} `minishard node` processes: failover after kill -9, above node_grace"),
        median: median(failover.clone()),
        unit: "ms",
        note: format!(
            "until the next owner prints allocated (its clock, ms), minus {} ms; {}",
            grace.as_millis(),
            range(&failover)
        ),
    });
    rows.push(Row {
        what: format!("{n} `minishard node` processes: hand-over after SIGTERM, from leave()"),
        median: median(hand_over.clone()),
        unit: "ms",
        note: format!(
            "until the next owner prints allocated; {}",
            range(&hand_over)
        ),
    });
    Ok(())
}
