//! Five `minishard node --json` processes on loopback: a kill -9 of an owner
//! fails over after the grace; a SIGTERM leaves cleanly and hands over at once.
//! Three more with `--tls-*`, and `minishard status` through them. Every
//! line a node prints must be one JSON event.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::certs::{self, Ca};
use common::{eventually, free_addresses};
use serde_json::Value;

const GRACE_MS: u64 = 750;

struct Node {
    address: String,
    child: Child,
    /// Reads the node's stdout into the shared events until it closes.
    reader: Option<JoinHandle<()>>,
}

impl Node {
    /// Kills the process and waits until every line it printed was read.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the stdout reader never panics");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every event the nodes printed, and every line that was not one.
#[derive(Clone, Default)]
struct Events {
    events: Arc<Mutex<Vec<Value>>>,
    malformed: Arc<Mutex<Vec<String>>>,
}

impl Events {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Value>> {
        self.events.lock().unwrap()
    }

    /// Stops the nodes (so their last lines are read) and checks that every
    /// line any of them printed was one JSON event.
    fn stop_and_check(&self, nodes: &mut [Node]) {
        for node in nodes.iter_mut() {
            node.stop();
        }
        let malformed = self.malformed.lock().unwrap();
        assert!(
            malformed.is_empty(),
            "lines that are not one JSON event each: {malformed:#?}"
        );
    }
}

fn start(address: &str, members: &str, events: &Events) -> Node {
    start_with(address, members, events, GRACE_MS, &[])
}

fn start_with(
    address: &str,
    members: &str,
    events: &Events,
    grace_ms: u64,
    extra: &[&str],
) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_minishard"))
        .args([
            "node",
            "--cluster",
            "procs",
            "--listen",
            address,
            "--nodes",
            members,
            "--shards",
            "3",
            "--json",
        ])
        .args([
            "--heartbeat-interval-ms",
            "50",
            "--heartbeat-timeout-ms",
            "250",
        ])
        .args([
            "--transition-timeout-ms",
            "500",
            "--node-grace-ms",
            &grace_ms.to_string(),
        ])
        .args(extra)
        .env("MINISHARD_COOKIE", "process-test-cookie")
        .env("RUST_LOG", "minishard=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the minishard binary runs");
    let stdout = child.stdout.take().unwrap();
    let sink = events.clone();
    // Problems go into the shared record, which the test checks: a panic
    // here would end this thread and fail nothing.
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match serde_json::from_str::<Value>(&line) {
                Ok(value)
                    if ["t", "node", "event"]
                        .iter()
                        .all(|f| value.get(f).is_some()) =>
                {
                    sink.lock().push(value)
                }
                Ok(_) => sink
                    .malformed
                    .lock()
                    .unwrap()
                    .push(format!("{line} (lacks t, node or event)")),
                Err(e) => sink.malformed.lock().unwrap().push(format!("{line} ({e})")),
            }
        }
    });
    Node {
        address: address.to_owned(),
        child,
        reader: Some(reader),
    }
}

/// Waits for the process to exit, for at most `timeout`.
fn exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn find(events: &Events, f: impl Fn(&Value) -> bool) -> Option<Value> {
    events.lock().iter().find(|e| f(e)).cloned()
}

/// The latest owner of each shard according to allocated/deallocated events.
fn owners(events: &Events) -> Vec<Option<String>> {
    let mut owners = vec![None; 3];
    for e in events.lock().iter() {
        let shard = e["shard"].as_u64().unwrap_or(0) as usize;
        match e["event"].as_str() {
            Some("allocated") => owners[shard] = e["node"].as_str().map(str::to_owned),
            Some("deallocated") if owners[shard].as_deref() == e["node"].as_str() => {
                owners[shard] = None
            }
            _ => {}
        }
    }
    owners
}

#[test]
fn kill_nine_fails_over_after_the_grace_and_status_shows_the_map() {
    let addresses = free_addresses(5);
    let members = addresses.join(",");
    let events = Events::default();
    let mut nodes: Vec<Node> = addresses
        .iter()
        .map(|a| start(a, &members, &events))
        .collect();
    let all_owned = eventually(Duration::from_secs(20), || {
        owners(&events).iter().all(Option::is_some)
    });
    assert!(all_owned, "no convergence: {:#?}", events.lock());

    // `minishard status` through any member shows what the members agree on.
    let status = Command::new(env!("CARGO_BIN_EXE_minishard"))
        .args([
            "status",
            "--cluster",
            "procs",
            "--connect",
            &addresses[2],
            "--json",
        ])
        .env("MINISHARD_COOKIE", "process-test-cookie")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["health"], "available", "{status}");
    assert_eq!(status["shard_count"], 3);
    let shown: Vec<Option<String>> = status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        shown,
        owners(&events),
        "status shows the owners the members announced"
    );
    assert_eq!(status["nodes"].as_object().unwrap().len(), 5, "{status}");
    // With the wrong cookie, status says it got no answer.
    let refused = Command::new(env!("CARGO_BIN_EXE_minishard"))
        .args([
            "status",
            "--cluster",
            "procs",
            "--connect",
            &addresses[2],
            "--timeout-ms",
            "1000",
        ])
        .env("MINISHARD_COOKIE", "not-the-cookie")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no answer"));

    // kill -9 the owner of shard 0.
    let victim = owners(&events)[0].clone().unwrap();
    let index = nodes.iter().position(|n| n.address == victim).unwrap();
    let killed_at = unix_ms();
    nodes[index].child.kill().unwrap();
    nodes[index].child.wait().unwrap();
    let failed_over = eventually(Duration::from_secs(20), || {
        owners(&events)[0].as_ref().is_some_and(|o| *o != victim)
    });
    assert!(
        failed_over,
        "shard 0 never failed over: {:#?}",
        events.lock()
    );
    let taken = find(&events, |e| {
        e["event"] == "allocated" && e["shard"] == 0 && e["node"] != victim.as_str()
    })
    .unwrap();
    let waited = taken["t"].as_u64().unwrap() - killed_at;
    assert!(
        waited >= GRACE_MS,
        "failover after {waited} ms, before the grace of {GRACE_MS} ms"
    );

    events.stop_and_check(&mut nodes);
}

#[test]
fn sigterm_leaves_and_hands_over_without_the_grace() {
    // A grace far longer than the wait below: a shard that moves within the
    // wait was handed over, not failed over after the grace (how long the
    // hand-over takes is a figure of `minishard bench`).
    const LONG_GRACE_MS: u64 = 60_000;
    let addresses = free_addresses(5);
    let members = addresses.join(",");
    let events = Events::default();
    let mut nodes: Vec<Node> = addresses
        .iter()
        .map(|a| start_with(a, &members, &events, LONG_GRACE_MS, &[]))
        .collect();
    let all_owned = eventually(Duration::from_secs(20), || {
        owners(&events).iter().all(Option::is_some)
    });
    assert!(all_owned, "no convergence: {:#?}", events.lock());

    // SIGTERM the owner of shard 1: it leaves, and the shard moves at once.
    let leaver = owners(&events)[1].clone().unwrap();
    let index = nodes.iter().position(|n| n.address == leaver).unwrap();
    let pid = nodes[index].child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = exit_within(&mut nodes[index].child, Duration::from_secs(15))
        .expect("a node leaves and exits on SIGTERM");
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    let said_goodbye = find(&events, |e| {
        e["node"] == leaver.as_str() && e["event"] == "deallocated" && e["winner"].is_null()
    });
    assert!(
        said_goodbye.is_some(),
        "the leaver printed no deallocated with winner null"
    );
    assert!(find(&events, |e| e["node"] == leaver.as_str()
        && e["event"] == "left")
    .is_some());
    let handed_over = eventually(Duration::from_secs(10), || {
        owners(&events)[1].as_ref().is_some_and(|o| *o != leaver)
    });
    assert!(
        handed_over,
        "shard 1 was not handed over within 10 s (the grace is {LONG_GRACE_MS} ms)"
    );
    events.stop_and_check(&mut nodes);
}

#[test]
fn nodes_and_status_over_mutual_tls() {
    let dir = std::env::temp_dir().join(format!("minishard-procs-tls-{}", std::process::id()));
    let ca = Ca::new("procs CA");
    let files = certs::write(&dir, "node", "ca", &ca, &ca.node(&["127.0.0.1"]));
    let paths = [&files.cert, &files.key, &files.ca].map(|p| p.to_str().unwrap().to_owned());
    let tls = [
        "--tls-cert",
        &paths[0],
        "--tls-key",
        &paths[1],
        "--tls-ca",
        &paths[2],
    ];
    let addresses = free_addresses(3);
    let members = addresses.join(",");
    let events = Events::default();
    let mut nodes: Vec<Node> = addresses
        .iter()
        .map(|a| start_with(a, &members, &events, GRACE_MS, &tls))
        .collect();
    assert!(
        eventually(Duration::from_secs(20), || owners(&events)
            .iter()
            .all(Option::is_some)),
        "no convergence over TLS: {:#?}",
        events.lock()
    );
    let status = |tls: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_minishard"))
            .args([
                "status",
                "--cluster",
                "procs",
                "--connect",
                &addresses[1],
                "--json",
                "--timeout-ms",
                "2000",
            ])
            .args(tls)
            .env("MINISHARD_COOKIE", "process-test-cookie")
            .env("RUST_LOG", "off")
            .output()
            .unwrap()
    };
    let shown = status(&tls);
    assert!(
        shown.status.success(),
        "status over TLS failed: {}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["health"], "available", "{shown}");
    // Without TLS, status gets no answer; a node names the refusal.
    let plain = status(&[]);
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("no answer"));
    assert!(eventually(Duration::from_secs(5), || find(&events, |e| {
        e["event"] == "refused"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("TLS handshake failed"))
    })
    .is_some()));
    events.stop_and_check(&mut nodes);
    let _ = std::fs::remove_dir_all(dir);
}

/// A `minishard node` for a cluster of `members` keeping one shard, with
/// `cookie`, its stdout and stderr captured.
fn one_shard_node(address: &str, members: &str, cookie: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_minishard"))
        .args(["node", "--cluster", "procs", "--listen", address])
        .args(["--nodes", members, "--shards", "1", "--json"])
        .args([
            "--heartbeat-interval-ms",
            "50",
            "--heartbeat-timeout-ms",
            "250",
        ])
        .args(["--transition-timeout-ms", "500", "--node-grace-ms", "750"])
        .args(extra)
        .env("MINISHARD_COOKIE", cookie)
        .env("RUST_LOG", "minishard=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the minishard binary runs")
}

#[test]
fn a_node_with_another_cookie_exits_with_the_reason_after_being_refused() {
    let addresses = free_addresses(2);
    let members = addresses.join(",");
    let mut good = one_shard_node(&addresses[0], &members, "process-test-cookie", &[]);
    let mut good_out = BufReader::new(good.stdout.take().unwrap()).lines();
    let available = good_out
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("\"allocated\""));
    assert!(available, "the first node takes the shard");
    // Its output is read to the end, so it never writes into a closed pipe.
    let drain = std::thread::spawn(move || good_out.count());
    let bad = one_shard_node(
        &addresses[1],
        &members,
        "another-cookie",
        &["--refused-exit-after-ms", "1000"],
    );
    let started = Instant::now();
    let mut bad = bad;
    let status = exit_within(&mut bad, Duration::from_secs(20)).expect("it gives up");
    let output = bad.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!status.success(), "{stderr}");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "not before --refused-exit-after-ms"
    );
    assert!(stderr.contains("misconfigured"), "{stderr}");
    assert!(stderr.contains(&addresses[0]), "{stderr}");
    assert!(stderr.contains("wrong_cookie"), "{stderr}");
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let said = |name: &str| events.iter().any(|e| e["event"] == name);
    assert!(said("misconfigured") && said("left"), "{stdout}");
    assert!(!said("allocated"), "it never took the shard: {stdout}");
    // The node that was serving carries on.
    assert!(
        good.try_wait().unwrap().is_none(),
        "the first node still runs"
    );
    let _ = good.kill();
    let _ = good.wait();
    drain.join().unwrap();
}

/// `minishard status --json` through `through`.
fn status_json(through: &str) -> Result<Value, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_minishard"))
        .args([
            "status",
            "--cluster",
            "procs",
            "--connect",
            through,
            "--json",
        ])
        .env("MINISHARD_COOKIE", "process-test-cookie")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())
}

#[test]
fn status_shows_the_connected_nodes_own_view_with_every_member_dead_ones_included() {
    let addresses = free_addresses(3);
    let members = addresses.join(",");
    let events = Events::default();
    let mut nodes: Vec<Node> = addresses
        .iter()
        .map(|a| start(a, &members, &events))
        .collect();
    assert!(eventually(Duration::from_secs(20), || owners(&events)
        .iter()
        .all(Option::is_some)));
    // Each node's own view: available, all three members active.
    let all_active = |status: &Value| {
        addresses
            .iter()
            .all(|a| status["nodes"][a]["state"] == "active")
            && status["nodes"].as_object().map(|n| n.len()) == Some(3)
    };
    for through in &addresses {
        let mut last = None;
        let shown = eventually(Duration::from_secs(10), || {
            let status = status_json(through);
            let ok = status
                .as_ref()
                .is_ok_and(|s| s["health"] == "available" && all_active(s));
            last = Some(status);
            ok
        });
        assert!(shown, "through {through}: {last:?}");
        let status = last.unwrap().unwrap();
        assert_eq!(status["connected"], through.as_str());
        assert_eq!(status["local"]["state"], "allocated", "{status}");
        assert!(
            status["stats"]["allocations"].as_u64() == Some(1),
            "{status}"
        );
    }

    // kill -9 one: the others list it as unavailable once its grace is over.
    let victim = addresses[2].clone();
    nodes[2].child.kill().unwrap();
    nodes[2].child.wait().unwrap();
    let mut last = None;
    let listed_down = eventually(Duration::from_secs(10), || {
        let status = status_json(&addresses[0]);
        let ok = status
            .as_ref()
            .is_ok_and(|s| s["nodes"][victim.as_str()]["state"] == "unavailable");
        last = Some(status);
        ok
    });
    assert!(listed_down, "{last:?}");
    events.stop_and_check(&mut nodes);
}
