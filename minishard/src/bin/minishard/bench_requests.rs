//! `minishard bench` rows for requests (docs/design.md 11), each next to a bare
//! tokio TCP echo over loopback measured in the same run: round trips to a
//! remote and to the local owner, throughput with 1 and 16 requesters, and
//! the time to the first successful reply after an owner's crash and after
//! its leave.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use minishard::{
    CallbackError, Callbacks, Cluster, Config, Epoch, NodeId, ReleaseReason, Responder, Timings,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::bench::{median, Row};
use crate::local::{free_addresses, COOKIE};

/// Payload sizes measured.
const SIZES: [usize; 2] = [100, 64 << 10];
/// Round trips timed per size and run.
const ROUND_TRIPS: usize = 2000;
/// How long a throughput window lasts.
const WINDOW: Duration = Duration::from_secs(2);

/// Answers every request with its own payload.
struct EchoApp {
    members: Vec<String>,
    shards: u32,
}

impl Callbacks for EchoApp {
    type State = ();
    fn nodes(&mut self, _: &str) -> Result<Vec<String>, CallbackError> {
        Ok(self.members.clone())
    }
    fn shard_count(&mut self, _: &str) -> Result<u32, CallbackError> {
        Ok(self.shards)
    }
    fn allocated(&mut self, _: &str, _: u32, _: u64) -> Result<(), CallbackError> {
        Ok(())
    }
    fn score(&mut self, _: &mut ()) -> Result<i64, CallbackError> {
        Ok(0)
    }
    fn prolonged(&mut self, _: &NodeId, _: &mut (), _: Epoch) -> Result<(), CallbackError> {
        Ok(())
    }
    fn deallocated(&mut self, _: Option<&NodeId>, _: ReleaseReason, _: ()) {}
    fn handle_request(&mut self, _: &mut (), payload: Vec<u8>, responder: Responder) {
        responder.respond(payload);
    }
}

/// `n` members keeping `shards` shards, answering with echoes.
fn echo_cluster(name: &str, n: usize, shards: u32) -> Result<Vec<Cluster>, String> {
    let members = free_addresses(n)?;
    let clusters = members
        .iter()
        .map(|address| {
            let app = EchoApp {
                members: members.clone(),
                shards,
            };
            Cluster::join(name, app, Config::new(address.clone(), COOKIE.to_vec()))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    for c in &clusters {
        c.wait_until(minishard::Health::Available, Duration::from_secs(20))
            .map_err(|e| e.to_string())?;
    }
    Ok(clusters)
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let at = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(at).copied().unwrap_or(f64::NAN)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A bare echo server on its own thread and runtime: 4-byte length, bytes.
fn bare_echo_server() -> Result<String, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let address = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).expect("a listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.into_split();
                    let mut buf = Vec::new();
                    loop {
                        let Ok(len) = read.read_u32().await else {
                            return;
                        };
                        buf.resize(len as usize, 0);
                        if read.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        if write.write_u32(len).await.is_err()
                            || write.write_all(&buf).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
    });
    Ok(address)
}

/// Times `ROUND_TRIPS` bare echoes of `size` bytes, one at a time.
fn bare_round_trips(address: &str, size: usize) -> Result<Vec<f64>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let payload = vec![7u8; size];
        let mut back = vec![0u8; size];
        let mut samples = Vec::with_capacity(ROUND_TRIPS);
        for _ in 0..ROUND_TRIPS {
            let started = Instant::now();
            stream
                .write_u32(size as u32)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .write_all(&payload)
                .await
                .map_err(|e| e.to_string())?;
            stream.read_u32().await.map_err(|e| e.to_string())?;
            stream
                .read_exact(&mut back)
                .await
                .map_err(|e| e.to_string())?;
            samples.push(micros(started.elapsed()));
        }
        Ok(samples)
    })
}

/// Bare echoes per second with `window` frames pipelined on one connection.
fn bare_throughput(address: &str, size: usize, window: usize) -> Result<f64, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(window));
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (in_flight, stop) = (in_flight.clone(), stop.clone());
            tokio::spawn(async move {
                let payload = vec![7u8; size];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(permit) = in_flight.acquire().await else {
                        return;
                    };
                    permit.forget();
                    if write.write_u32(size as u32).await.is_err()
                        || write.write_all(&payload).await.is_err()
                    {
                        return;
                    }
                }
            })
        };
        let started = Instant::now();
        let mut done = 0u64;
        let mut back = vec![0u8; size];
        while started.elapsed() < WINDOW {
            read.read_u32().await.map_err(|e| e.to_string())?;
            read.read_exact(&mut back)
                .await
                .map_err(|e| e.to_string())?;
            in_flight.add_permits(1);
            done += 1;
        }
        stop.store(true, Ordering::Relaxed);
        in_flight.add_permits(window);
        sender.abort();
        Ok(done as f64 / started.elapsed().as_secs_f64())
    })
}

/// Requests per second from `requesters` threads, each waiting for its
/// reply before it sends the next.
fn request_throughput(cluster: &Cluster, shard: u32, size: usize, requesters: usize) -> f64 {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(requesters + 1);
    let payload = vec![7u8; size];
    let elapsed = std::thread::scope(|scope| {
        for _ in 0..requesters {
            scope.spawn(|| {
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    if cluster
                        .request(shard, payload.clone(), Duration::from_secs(5))
                        .is_ok()
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        barrier.wait();
        let started = Instant::now();
        std::thread::sleep(WINDOW);
        stop.store(true, Ordering::Relaxed);
        started.elapsed()
    });
    done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

fn size_name(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// Time from `fault` to the first request for shard 0 that succeeds, with
/// a requester sending one every millisecond.
fn first_reply_after(
    asker: &Cluster,
    fault: impl FnOnce(),
    step: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    fault();
    while started.elapsed() < step {
        if asker
            .request(0, b"x".to_vec(), Duration::from_millis(200))
            .is_ok()
        {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err("no reply after the fault".into())
}

pub(crate) fn run(runs: usize, t: Timings, rows: &mut Vec<Row>) -> Result<(), String> {
    let bare = bare_echo_server()?;
    let clusters = echo_cluster("bench-requests", 2, 1)?;
    let owner = clusters[0].get_node(0).ok_or("nobody owns shard 0")?;
    let (own, remote) = if *clusters[0].node_id() == owner {
        (&clusters[0], &clusters[1])
    } else {
        (&clusters[1], &clusters[0])
    };
    for size in SIZES {
        let (mut bare_p50, mut bare_p99, mut req_p50, mut req_p99) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let samples = bare_round_trips(&bare, size)?;
            bare_p50.push(percentile(samples.clone(), 0.5));
            bare_p99.push(percentile(samples, 0.99));
            let payload = vec![7u8; size];
            let mut samples = Vec::with_capacity(ROUND_TRIPS);
            for _ in 0..ROUND_TRIPS {
                let started = Instant::now();
                remote
                    .request(0, payload.clone(), Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                samples.push(micros(started.elapsed()));
            }
            req_p50.push(percentile(samples.clone(), 0.5));
            req_p99.push(percentile(samples, 0.99));
        }
        let (b50, r50) = (median(bare_p50), median(req_p50));
        let s = size_name(size);
        rows.push(Row {
            what: format!("request round trip to a remote owner, {s}: p50"),
            median: r50,
            unit: "µs",
            note: format!(
                "bare tokio echo p50 {b50:.1} µs ({:.2}x; goal 1.5x)",
                r50 / b50
            ),
        });
        rows.push(Row {
            what: format!("request round trip to a remote owner, {s}: p99"),
            median: median(req_p99),
            unit: "µs",
            note: format!("bare tokio echo p99 {:.1} µs", median(bare_p99)),
        });
    }
    let mut local = Vec::new();
    for _ in 0..runs {
        let iterations = 100_000u32;
        let started = Instant::now();
        for _ in 0..iterations {
            own.request(0, b"x".to_vec(), Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
        }
        local.push(micros(started.elapsed()) / f64::from(iterations));
    }
    rows.push(Row {
        what: "request round trip to the local owner (this node's own shard)".into(),
        median: median(local),
        unit: "µs",
        note: "goal <= 2 µs".into(),
    });
    for size in SIZES {
        for requesters in [1usize, 16] {
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            for _ in 0..runs.min(3) {
                ours.push(request_throughput(remote, 0, size, requesters));
                theirs.push(bare_throughput(&bare, size, requesters)?);
            }
            let (o, b) = (median(ours), median(theirs));
            rows.push(Row {
                what: format!(
                    "requests/s to a remote owner, {}, {requesters} requester{}",
                    size_name(size),
                    if requesters == 1 { "" } else { "s" }
                ),
                median: o,
                unit: "/s",
                note: format!(
                    "bare echo, {requesters} pipelined: {b:.0}/s ({:.0}%; goal 50%)",
                    100.0 * o / b
                ),
            });
        }
    }
    drop(clusters);

    let step = t.heartbeat_timeout + t.node_grace + Duration::from_secs(5);
    let (mut after_crash, mut after_leave) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let clusters = Arc::new(Mutex::new(echo_cluster(
            &format!("bench-requests-fault-{run}"),
            3,
            1,
        )?));
        let owner = {
            let c = clusters.lock().map_err(|_| "poisoned")?;
            let owner = c[0].get_node(0).ok_or("nobody owns shard 0")?;
            c.iter()
                .position(|n| *n.node_id() == owner)
                .ok_or("the owner is not a member")?
        };
        let crashed = owner;
        let asker = (owner + 1) % 3;
        let c = clusters.lock().map_err(|_| "poisoned")?;
        after_crash.push(micros(first_reply_after(&c[asker], || c[owner].crash(), step)?) / 1000.0);
        let owner = c[asker].get_node(0).ok_or("nobody owns shard 0")?;
        let owner = c
            .iter()
            .position(|n| *n.node_id() == owner)
            .ok_or("the owner is not a member")?;
        let asker = (0..3)
            .find(|i| *i != owner && *i != crashed)
            .ok_or("no asker left")?;
        after_leave.push(
            micros(first_reply_after(
                &c[asker],
                || {
                    let _ = c[owner].leave();
                },
                step,
            )?) / 1000.0,
        );
    }
    rows.push(Row {
        what: "first successful reply after the owner's crash (kill -9)".into(),
        median: median(after_crash),
        unit: "ms",
        note: format!("node_grace is {} ms", t.node_grace.as_millis()),
    });
    rows.push(Row {
        what: "first successful reply after the owner's leave()".into(),
        median: median(after_leave),
        unit: "ms",
        note: String::new(),
    });
    Ok(())
}
