//! `minishard demo`: a local cluster in this process, narrated.
//!
//! Five nodes keep three shards, each a key-value store (the kv handler):
//! cold start, the crash of an owner and its failover, a graceful leave that
//! hands the store to the next owner, a 3/2 split where the small side
//! degrades.
//! Then six nodes keep two shards through a 3/3 split where both sides
//! allocate and write keys, and the heal resolves each conflict by score:
//! each loser hands its store to the winner, which merges it into its own. Every step waits
//! for its outcome with a deadline; the demo fails if one does not happen.
//! The nodes talk through a switch in this process (`switch.rs`), which
//! makes the crash and the splits.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minishard::{Health, LocalState, PendingReply, Reply, RequestError, Timings};

use crate::app::{Handler, ScoreMode};
use crate::local::{LocalCluster, Wiring};

#[derive(clap::Args)]
pub struct Args {}

struct Narrator {
    out: Arc<Mutex<dyn Write + Send>>,
    started: Instant,
}

impl Narrator {
    fn say(&self, text: &str) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(
            format!(
                "\n{:>8.3}s  == {text}\n",
                self.started.elapsed().as_secs_f64()
            )
            .as_bytes(),
        );
        let _ = out.flush();
    }

    fn table(&self, local: &LocalCluster) {
        let mut text = String::new();
        text.push_str(&format!(
            "           {:<18} {:<11} {:<16} {}\n",
            "node", "health", "holds", "shard map as this node sees it"
        ));
        for (i, node) in local.nodes.iter().enumerate() {
            let Some(c) = &node.cluster else {
                text.push_str(&format!(
                    "           {:<18} {:<11}\n",
                    node.address, "(stopped)"
                ));
                continue;
            };
            let holds = match c.status().local {
                LocalState::Allocated { shard, epoch } => {
                    format!("shard {shard} (e{})", crate::app::show_epoch(epoch))
                }
                LocalState::Standby => "standby".into(),
                LocalState::Idle => "idle".into(),
            };
            let map: Vec<String> = c
                .shard_map()
                .iter()
                .map(|o| match o.as_ref().and_then(|o| local.index_of(o)) {
                    Some(j) => format!("n{j}"),
                    None => "-".into(),
                })
                .collect();
            text.push_str(&format!(
                "           n{i} {:<15} {:<11} {:<16} [{}]\n",
                node.address,
                c.health().as_str(),
                holds,
                map.join(" ")
            ));
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// How long a demo request may wait, an owner's grace included.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends a request for every shard from node `from` (the payload made by
/// `payload` from the shard) and says who answered.
fn ask_all(
    n: &Narrator,
    local: &LocalCluster,
    from: usize,
    payload: impl Fn(u32) -> String,
) -> Result<(), String> {
    let c = local.nodes[from]
        .cluster
        .as_ref()
        .ok_or("the asking node is not running")?;
    for shard in 0..c.shard_count() {
        let pending = c.request_async(shard, payload(shard), ASK_TIMEOUT);
        n.answered(local, from, shard, Instant::now(), pending)?;
    }
    Ok(())
}

/// Node `from` reads `key` of `shard`: the value and the node that answered.
fn read_key(
    n: &Narrator,
    local: &LocalCluster,
    from: usize,
    shard: u32,
    key: &str,
) -> Result<(String, usize), String> {
    let c = local.nodes[from]
        .cluster
        .as_ref()
        .ok_or("the asking node is not running")?;
    let pending = c.request_async(shard, format!("get {key}"), ASK_TIMEOUT);
    let reply = n.answered(local, from, shard, Instant::now(), pending)?;
    let by = local
        .index_of(&reply.node)
        .ok_or("a reply from a node not in the demo")?;
    Ok((String::from_utf8_lossy(&reply.payload).into_owned(), by))
}

impl Narrator {
    /// Waits for a request's reply and says where it landed.
    fn answered(
        &self,
        local: &LocalCluster,
        from: usize,
        shard: u32,
        sent: Instant,
        pending: PendingReply,
    ) -> Result<Reply, String> {
        self.shown(local, from, shard, sent, pending.wait())
    }

    /// Says where a request's reply landed, or fails with its error.
    fn shown(
        &self,
        local: &LocalCluster,
        from: usize,
        shard: u32,
        sent: Instant,
        outcome: Result<Reply, RequestError>,
    ) -> Result<Reply, String> {
        let reply =
            outcome.map_err(|e| format!("a request from n{from} to shard {shard} failed: {e}"))?;
        let by = local
            .index_of(&reply.node)
            .map_or_else(|| reply.node.to_string(), |i| format!("n{i}"));
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "           request n{from} -> shard {shard}: answered by {by} at epoch {} after {:?}: {:?}",
            reply.epoch,
            sent.elapsed(),
            String::from_utf8_lossy(&reply.payload)
        );
        Ok(reply)
    }
}

pub fn run(_args: Args) -> Result<(), String> {
    let started = Instant::now();
    let out: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(std::io::stdout()));
    let n = Narrator {
        out: out.clone(),
        started,
    };
    let t = Timings::default();
    let step = t.heartbeat_timeout + t.node_grace + Duration::from_secs(2);
    n.say(&format!(
        "minishard demo: timings heartbeat {:?}/{:?}, transition {:?}, grace {:?}",
        t.heartbeat_interval, t.heartbeat_timeout, t.transition_timeout, t.node_grace
    ));

    // Part one: five nodes, three shards.
    let mut a = LocalCluster::new(
        "demo",
        5,
        3,
        t,
        ScoreMode::Uptime,
        Some((out.clone(), started)),
        Wiring::Switched,
    )?;
    a.handler = Handler::Kv;
    n.say("cold start: 5 nodes, 3 shards, each shard a key-value store on its owner");
    a.start_all()?;
    let took = a.wait(step, "cold start", |l| l.settled(&l.everyone()))?;
    n.say(&format!("available everywhere after {took:?}"));
    n.table(&a);
    n.say("requests from n4 land on each shard's owner (`set K V`, `get K`, `del K`)");
    ask_all(&n, &a, 4, |shard| {
        format!("set greeting hello shard {shard}")
    })?;

    let victim = a.owner(0, 0).ok_or("nobody owns shard 0")?;
    let viewer = (victim + 1) % 5;
    n.say(&format!("n{victim}, owner of shard 0, crashes (no goodbye): its shard stays reserved for node_grace"));
    a.crash(victim);
    // Once n{viewer} has noticed the owner is gone (its heartbeats stopped),
    // a request for shard 0 waits for the next owner. (One sent before
    // that, into the dead connection, would end `Uncertain`: requests are
    // never sent twice.)
    a.wait(step, "the crash noticed", |l| {
        l.nodes[viewer].cluster.as_ref().is_some_and(|c| {
            c.status().nodes.iter().any(|(id, state)| {
                l.index_of(id) == Some(victim)
                    && *state != minishard::NodeState::Active { shard: 0 }
            })
        })
    })?;
    let during = a.nodes[viewer].cluster.as_ref().map(|c| {
        (
            Instant::now(),
            c.request_async(0, "set sent-during-the-failover yes", ASK_TIMEOUT),
        )
    });
    let took = a.wait(step, "failover", |l| {
        l.owner(viewer, 0).is_some_and(|o| o != victim) && l.settled(&l.everyone())
    })?;
    n.say(&format!(
        "shard 0 failed over to n{} after {took:?}",
        a.owner(viewer, 0).unwrap_or(0)
    ));
    n.table(&a);
    if let Some((sent, pending)) = during {
        n.say(&format!("the request n{viewer} sent for shard 0 once it saw the owner gone waited for the new owner:"));
        n.answered(&a, viewer, 0, sent, pending)?;
    }

    n.say(&format!(
        "n{victim} restarts with a new incarnation and joins as a standby"
    ));
    a.start(victim)?;
    a.wait(step, "restart", |l| {
        l.settled(&l.everyone()) && l.everyone().len() == 5
    })?;
    let leaver = a.owner(0, 1).ok_or("nobody owns shard 1")?;
    let viewer = (leaver + 1) % 5;
    let value = format!("written to n{leaver} before it left");
    n.say(&format!("n{viewer} sets a key in shard 1, on n{leaver}"));
    let set = a.nodes[viewer]
        .cluster
        .as_ref()
        .map(|c| c.request_async(1, format!("set note {value}"), ASK_TIMEOUT));
    if let Some(pending) = set {
        n.answered(&a, viewer, 1, Instant::now(), pending)?;
    }
    n.say(&format!(
        "n{leaver}, owner of shard 1, leaves gracefully: the hand-over needs no grace, and its store goes to the next owner"
    ));
    let left_at = Instant::now();
    a.leave(leaver)?;
    let after_leave = a.nodes[viewer]
        .cluster
        .as_ref()
        .map(|c| (Instant::now(), c.request_async(1, "get note", ASK_TIMEOUT)));
    a.wait(step, "hand-over", |l| {
        l.owner(viewer, 1).is_some_and(|o| o != leaver)
    })?;
    n.say(&format!(
        "shard 1 handed over to n{} {:?} after the leave",
        a.owner(viewer, 1).unwrap_or(0),
        left_at.elapsed()
    ));
    if let Some((sent, pending)) = after_leave {
        let outcome = match pending.wait() {
            // Sent to n{leaver} just as it closed its connections: requests
            // are never sent twice by the library, but a read is safe to
            // send again.
            Err(RequestError::Uncertain) => {
                n.say(&format!("n{viewer}'s read reached n{leaver} as it closed (uncertain); a read is safe to repeat, so it asks again"));
                let c = a.nodes[viewer]
                    .cluster
                    .as_ref()
                    .ok_or("the asking node is not running")?;
                c.request_async(1, "get note", ASK_TIMEOUT).wait()
            }
            outcome => outcome,
        };
        let read = n.shown(&a, viewer, 1, sent, outcome)?.payload;
        if read != value.as_bytes() {
            return Err(format!(
                "the key set before the leave read {:?} from the new owner, not {value:?}",
                String::from_utf8_lossy(&read)
            ));
        }
        n.say("the key set before the leave is read back from the new owner: the store moved with the shard");
    }
    a.start(leaver)?;
    a.wait(step, "rejoin", |l| {
        l.settled(&l.everyone()) && l.everyone().len() == 5
    })?;
    n.table(&a);

    // The small side holds at least one shard, so it has something to give up.
    let mut order: Vec<usize> = (0..5).collect();
    order.sort_by_key(|&i| {
        a.nodes[i]
            .cluster
            .as_ref()
            .and_then(|c| c.my_shard())
            .is_none()
    });
    let (small, big) = ([order[0], order[4]], [order[1], order[2], order[3]]);
    n.say(&format!(
        "split 3/2: {big:?} | {small:?} — the 2-side sees fewer members than shards"
    ));
    a.split(&big, &small);
    let degrade = t.heartbeat_timeout + t.transition_timeout + Duration::from_secs(2);
    a.wait(degrade, "the small side degrading", |l| {
        small.iter().all(|&i| {
            l.nodes[i]
                .cluster
                .as_ref()
                .is_some_and(|c| c.health() == Health::Degraded && c.my_shard().is_none())
        })
    })?;
    n.say("the 2-side is degraded and gave its shards up; the 3-side takes them after the grace");
    a.wait(step, "the big side taking every shard", |l| l.settled(&big))?;
    n.table(&a);
    n.say("heal");
    a.heal();
    a.wait(step, "heal", |l| l.settled(&l.everyone()))?;
    n.table(&a);
    for i in 0..5 {
        a.leave(i)?;
    }

    // Part two: six nodes, two shards, a 3/3 split.
    n.say("six nodes keep two shards, each a key-value store; score = how long the allocation has lived (older wins)");
    let mut b = LocalCluster::new(
        "demo-33",
        6,
        2,
        t,
        ScoreMode::Uptime,
        Some((out.clone(), started)),
        Wiring::Switched,
    )?;
    b.handler = Handler::Kv;
    b.start_all()?;
    b.wait(step, "cold start of six", |l| l.settled(&l.everyone()))?;
    n.table(&b);
    let (left, right) = ([0, 1, 2], [3, 4, 5]);
    n.say("split 3/3: both sides have enough members, so both keep every shard (by design)");
    b.split(&left, &right);
    b.wait(step * 2, "both sides allocating", |l| {
        l.settled(&left) && l.settled(&right)
    })?;
    n.table(&b);
    n.say(
        "each side writes to its own owners: n0 sets `left` and `both`, n5 sets `right` and `both`",
    );
    for (from, side) in [(0, "left"), (5, "right")] {
        ask_all(&n, &b, from, |_| {
            format!("set {side} written on the {side} side")
        })?;
        ask_all(&n, &b, from, |_| format!("set both {side}"))?;
    }
    n.say("heal: each shard now has two owners; they exchange scores and the lower one gives up");
    let healed_at = Instant::now();
    b.heal();
    // Each winner's `prolonged` comes once its loser's store is in, which
    // may be after every node sees one owner per shard: wait for both.
    let resolved = |l: &LocalCluster| {
        l.events_since(healed_at)
            .into_iter()
            .filter(|(_, e)| {
                e.event == "prolonged"
                    || (e.event == "deallocated" && !e.fields["winner"].is_null())
            })
            .count()
    };
    b.wait(step, "conflicts resolved", |l| {
        l.settled(&l.everyone()) && resolved(l) >= 4
    })
    .map_err(|e| {
        format!(
            "{e}: expected a prolonged and a deallocated(winner) per shard, saw {} events",
            resolved(&b)
        )
    })?;
    n.say(&format!(
        "resolved in {:?}: one owner per shard, the higher score",
        healed_at.elapsed()
    ));
    n.table(&b);
    n.say("after the heal, requests from both former sides land on the winners; each loser handed its store to its winner, which kept its own keys and added the loser's others");
    for shard in 0..2 {
        for (from, key) in [(0, "right"), (5, "left"), (0, "both"), (5, "both")] {
            let (value, by) = read_key(&n, &b, from, shard, key)?;
            let winner_side = if left.contains(&by) { "left" } else { "right" };
            let wanted = match key {
                "both" => winner_side.to_string(),
                side => format!("written on the {side} side"),
            };
            if value != wanted {
                return Err(format!(
                    "shard {shard}'s {key:?} read {value:?} from its winner n{by}, not {wanted:?}"
                ));
            }
        }
    }
    n.say("both sides' keys are there; where both sides wrote `both`, the winner's value stayed");
    for i in 0..6 {
        b.leave(i)?;
    }
    n.say(&format!(
        "demo finished in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
