//! Requests to a shard's owner over real sockets on loopback (docs/design.md
//! 11): who answers and with which epoch, that the handler runs only inside
//! its allocation, that every request ends exactly once through crashes,
//! leaves, splits and heals, and the caps and timeouts.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use minishard::{
    CallbackError, Callbacks, Cluster, Config, Metadata, NodeId, ReleaseReason, Reply,
    RequestError, Responder,
};

const WAIT: Duration = Duration::from_secs(10);

fn text(reply: &Reply) -> String {
    String::from_utf8(reply.payload.clone()).unwrap()
}

#[test]
fn every_node_and_an_observer_reach_every_owner_and_the_reply_names_it() {
    let local = Local::start("req-reach", 3, 2);
    local.converged(WAIT).unwrap();
    let observer_address = free_addresses(1).remove(0);
    let mut config = Config::new(observer_address, COOKIE.to_vec());
    config.observer = true;
    config.timings = local.timings;
    let observer = Cluster::join(
        &local.name,
        App {
            members: local.members.clone(),
            shards: 2,
            score: Arc::default(),
            journal: Journal::default(),
        },
        config,
    )
    .unwrap();
    let askers: Vec<&Cluster> = local.running().chain([&observer]).collect();
    for (i, asker) in askers.iter().enumerate() {
        for shard in 0..2 {
            let payload = format!("from {i}");
            let reply = asker.request(shard, payload.clone(), WAIT).unwrap();
            let owner = asker.snapshot().owner(shard).cloned().unwrap();
            assert_eq!((&reply.node, reply.epoch), (&owner.node, owner.epoch));
            assert_eq!(text(&reply), format!("{shard} {} {payload}", owner.epoch));
        }
    }
    // The owner's own request ran its handler without the network: its
    // journal has it, and nobody else's does.
    let owner = local.owner(0, 0).unwrap();
    let own = local.nodes[owner]
        .cluster()
        .request(0, "own", WAIT)
        .unwrap();
    assert_eq!(own.node.as_str(), local.nodes[owner].address);
    let handled_own = |n: &Node| {
        n.journal
            .count(|t| matches!(t, Told::Handled { payload, .. } if payload == b"own"))
    };
    assert_eq!(handled_own(&local.nodes[owner]), 1);
    assert_eq!(local.nodes.iter().map(handled_own).sum::<usize>(), 1);
}

#[test]
fn a_shard_that_does_not_exist_or_a_payload_too_large_is_refused_at_once() {
    let local = Local::start("req-refused", 2, 1);
    local.converged(WAIT).unwrap();
    let c = local.nodes[0].cluster();
    assert_eq!(
        c.request(5, "x", WAIT),
        Err(RequestError::NoSuchShard {
            shard: 5,
            shard_count: 1
        })
    );
    let limit = Config::new("127.0.0.1:1", b"c".to_vec()).frame_limit - minishard::FRAME_OVERHEAD;
    assert_eq!(
        c.request(0, vec![0u8; limit + 1], WAIT),
        Err(RequestError::TooLarge {
            len: limit + 1,
            limit
        })
    );
    // The largest payload goes through, to a remote owner and back.
    let asker = 1 - local.owner(0, 0).unwrap();
    let reply = local.nodes[asker]
        .cluster()
        .request(0, vec![7u8; limit - 32], WAIT)
        .unwrap();
    assert!(reply.payload.ends_with(&[7u8; 100]));
}

#[test]
fn metadata_is_published_with_the_record_and_seen_by_every_node() {
    let configure: Configure = Arc::new(|i, config: &mut Config| {
        config
            .metadata
            .insert("http".into(), format!("127.0.0.1:{}", 8000 + i));
    });
    let local = Local::start_with("req-metadata", 3, 1, Some(configure));
    local.converged(WAIT).unwrap();
    for viewer in local.running() {
        for (i, node) in local.nodes.iter().enumerate() {
            let id = NodeId::parse(&node.address).unwrap();
            let expected: Metadata = [("http".to_owned(), format!("127.0.0.1:{}", 8000 + i))]
                .into_iter()
                .collect();
            let seen = eventually(WAIT, || {
                viewer.node_metadata(&id).as_deref() == Some(&expected)
            });
            assert!(seen, "{} never saw {id}'s metadata", viewer.node_id());
            assert_eq!(viewer.status().metadata.get(&id), Some(&expected));
        }
    }
    // Too much metadata is refused at join, with a message saying so.
    let mut config = local.config(0);
    config.metadata.insert("big".into(), "x".repeat(5000));
    let refused = Cluster::join("req-metadata-big", Holding::app(1), config).err();
    assert!(
        refused.is_some_and(|e| e.to_string().contains("metadata is")),
        "oversized metadata must be refused"
    );
}

/// Requests a handler kept, with their payloads, to be answered later.
type Held = Arc<Mutex<Vec<(Vec<u8>, Responder)>>>;

/// An application whose handler keeps the responders, to be answered (or
/// dropped) later by the test, from its own thread.
struct Holding {
    members: Arc<Mutex<Vec<String>>>,
    held: Held,
}

impl Holding {
    fn app(_: u32) -> Holding {
        Holding {
            members: Arc::default(),
            held: Arc::default(),
        }
    }
}

impl Callbacks for Holding {
    type State = ();
    fn nodes(&mut self, _: &str) -> Result<Vec<String>, CallbackError> {
        Ok(self.members.lock().unwrap().clone())
    }
    fn shard_count(&mut self, _: &str) -> Result<u32, CallbackError> {
        Ok(1)
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
    fn handle_request(&mut self, _: &mut (), payload: Vec<u8>, responder: Responder) {
        self.held.lock().unwrap().push((payload, responder));
    }
}

/// Two members keeping one shard, with holding handlers; `configure`
/// adjusts both configs.
fn holding_pair(name: &str, configure: impl Fn(&mut Config)) -> (Vec<Cluster>, Vec<Held>) {
    let addresses = free_addresses(2);
    let members = Arc::new(Mutex::new(addresses.clone()));
    let mut clusters = Vec::new();
    let mut helds = Vec::new();
    for address in addresses {
        let held = Arc::new(Mutex::new(Vec::new()));
        let mut config = Config::new(address, COOKIE.to_vec());
        config.timings = fast();
        configure(&mut config);
        let app = Holding {
            members: members.clone(),
            held: held.clone(),
        };
        clusters.push(Cluster::join(name, app, config).unwrap());
        helds.push(held);
    }
    assert!(eventually(WAIT, || clusters
        .iter()
        .all(
            |c| c.get_node(0).is_some() && c.health() == minishard::Health::Available
        )));
    (clusters, helds)
}

#[test]
fn a_responder_answers_later_from_another_thread_and_a_dropped_one_is_an_error() {
    let (clusters, helds) = holding_pair("req-later", |_| {});
    let owner = clusters[0].get_node(0).unwrap();
    let (o, asker) = if *clusters[0].node_id() == owner {
        (0, 1)
    } else {
        (1, 0)
    };
    let first = clusters[asker].request_async(0, "answer me", WAIT);
    let second = clusters[asker].request_async(0, "drop me", WAIT);
    assert!(eventually(WAIT, || helds[o].lock().unwrap().len() == 2));
    let held: Vec<_> = std::mem::take(&mut *helds[o].lock().unwrap());
    std::thread::spawn(move || {
        for (payload, responder) in held {
            if payload == b"answer me" {
                responder.respond(b"later".to_vec());
            } else {
                drop(responder);
            }
        }
    })
    .join()
    .unwrap();
    assert_eq!(first.wait().unwrap().payload, b"later");
    match second.wait() {
        Err(RequestError::HandlerFailed(m)) => assert!(m.contains("dropped"), "{m}"),
        other => panic!("a dropped responder must fail the request: {other:?}"),
    }
}

#[test]
fn caps_answer_overloaded_and_a_lost_owner_makes_a_sent_request_uncertain() {
    let (mut clusters, helds) = holding_pair("req-caps", |config| {
        config.max_requests_in_flight = 3;
        config.max_requests_per_peer = 2;
    });
    let owner = clusters[0].get_node(0).unwrap();
    let (o, asker) = if *clusters[0].node_id() == owner {
        (0, 1)
    } else {
        (1, 0)
    };
    let a = clusters[asker].request_async(0, "a", WAIT);
    let b = clusters[asker].request_async(0, "b", WAIT);
    // Two in flight to that owner: the third is over the per-peer cap.
    assert_eq!(
        clusters[asker].request(0, "c", WAIT),
        Err(RequestError::Overloaded)
    );
    assert!(eventually(WAIT, || helds[o].lock().unwrap().len() == 2));
    // The owner crashes with both requests sent and unanswered: neither
    // may be sent again, both end uncertain.
    clusters.remove(o).crash();
    assert_eq!(a.wait(), Err(RequestError::Uncertain));
    assert_eq!(b.wait(), Err(RequestError::Uncertain));
    helds[o].lock().unwrap().clear();
}

#[test]
fn a_request_waits_for_an_owner_and_times_out_without_one() {
    let (mut clusters, _helds) = holding_pair("req-timeout", |config| {
        // A long grace: the crashed owner's shard stays reserved.
        config.timings.node_grace = Duration::from_secs(30);
    });
    let owner = clusters[0].get_node(0).unwrap();
    let o = usize::from(*clusters[0].node_id() != owner);
    clusters.remove(o).crash();
    let survivor = &clusters[0];
    // Its shard stays reserved to it (so it is still the owner in view),
    // but nothing can reach it.
    assert!(eventually(WAIT, || survivor.status().nodes.iter().any(
        |(n, s)| *n == owner && *s == minishard::NodeState::Transition
    )));
    assert_eq!(survivor.get_node(0), Some(owner));
    let started = Instant::now();
    assert_eq!(
        survivor.request(0, "x", Duration::from_millis(300)),
        Err(RequestError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(survivor.requests_in_flight(), 0);
}

/// Calls a request from inside its own callbacks: blocking for its own
/// shard must not deadlock, async completes once the callback returned.
struct Reentrant {
    members: Arc<Mutex<Vec<String>>>,
    cluster: Arc<Mutex<Option<Arc<Cluster>>>>,
    seen: Arc<Mutex<Vec<Result<Reply, RequestError>>>>,
    async_reply: Arc<Mutex<Option<minishard::PendingReply>>>,
}

impl Callbacks for Reentrant {
    type State = ();
    fn nodes(&mut self, _: &str) -> Result<Vec<String>, CallbackError> {
        Ok(self.members.lock().unwrap().clone())
    }
    fn shard_count(&mut self, _: &str) -> Result<u32, CallbackError> {
        Ok(1)
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
    fn handle_request(&mut self, _: &mut (), payload: Vec<u8>, responder: Responder) {
        if payload == b"outer" {
            let cluster = self.cluster.lock().unwrap().clone().unwrap();
            let inner = cluster.request(0, "inner", Duration::from_secs(1));
            self.seen.lock().unwrap().push(inner);
            *self.async_reply.lock().unwrap() = Some(cluster.request_async(0, "inner async", WAIT));
        }
        responder.respond(payload);
    }
}

#[test]
fn a_request_for_its_own_shard_from_inside_a_callback_does_not_deadlock() {
    let address = free_addresses(1).remove(0);
    let members = Arc::new(Mutex::new(vec![address.clone()]));
    let app = Reentrant {
        members,
        cluster: Arc::default(),
        seen: Arc::default(),
        async_reply: Arc::default(),
    };
    let (slot, seen, pending) = (
        app.cluster.clone(),
        app.seen.clone(),
        app.async_reply.clone(),
    );
    let mut config = Config::new(address, COOKIE.to_vec());
    config.timings = fast();
    let cluster = Arc::new(Cluster::join("req-reentrant", app, config).unwrap());
    *slot.lock().unwrap() = Some(cluster.clone());
    assert!(eventually(WAIT, || cluster.my_shard().is_some()));
    let started = Instant::now();
    assert_eq!(cluster.request(0, "outer", WAIT).unwrap().payload, b"outer");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the inner blocking request must fail at once, not wait out its timeout"
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[Err(RequestError::InsideCallback)]
    );
    let inner = pending.lock().unwrap().take().unwrap();
    assert_eq!(inner.wait().unwrap().payload, b"inner async");
    slot.lock().unwrap().take();
}

/// Every request of every node, by its payload: its outcomes (exactly one
/// expected).
type Outcomes = Arc<Mutex<HashMap<String, Vec<Result<Reply, RequestError>>>>>;

/// Sends requests from node `i` for every shard in turn until `stop`, each
/// outcome delivered to a function, counted per payload.
fn load(cluster: Arc<Cluster>, i: usize, outcomes: Outcomes, stop: Arc<AtomicBool>) {
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let payload = format!("n{i}-{k}");
        outcomes.lock().unwrap().insert(payload.clone(), Vec::new());
        let record = outcomes.clone();
        let key = payload.clone();
        cluster.request_then((k % 2) as u32, payload, Duration::from_secs(3), move |r| {
            record.lock().unwrap().get_mut(&key).unwrap().push(r);
        });
        k += 1;
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// Checks each node's journal: every handled request ran inside an
/// allocation of its shard, at that allocation's epoch.
fn handled_inside_allocations(local: &Local) -> HashMap<Vec<u8>, (String, u64)> {
    let mut handled = HashMap::new();
    for node in &local.nodes {
        let mut current: Option<(u32, u64)> = None;
        for told in node.journal.all() {
            match told {
                Told::Allocated { shard, epoch } => current = Some((shard, epoch)),
                Told::Deallocated { .. } => current = None,
                Told::Handled {
                    shard,
                    epoch,
                    payload,
                } => {
                    let (held, allocated_at) = current.unwrap_or_else(|| {
                        panic!("{} handled {payload:?} outside an allocation", node.address)
                    });
                    assert_eq!(
                        held, shard,
                        "{} handled a request for another shard",
                        node.address
                    );
                    assert!(
                        epoch >= allocated_at,
                        "a reply's epoch below its allocation's"
                    );
                    let before = handled.insert(payload.clone(), (node.address.clone(), epoch));
                    assert!(
                        before.is_none(),
                        "{payload:?} was handled twice: at most once is broken"
                    );
                }
                _ => {}
            }
        }
    }
    handled
}

#[test]
fn every_request_ends_exactly_once_through_split_heal_crash_and_leave() {
    let mut local = Local::start("req-faults", 6, 2);
    local.converged(WAIT).unwrap();
    let outcomes: Outcomes = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut loaders = Vec::new();
    let handles: Vec<Arc<Cluster>> = local
        .nodes
        .iter_mut()
        .map(|n| Arc::new(n.cluster.take().unwrap()))
        .collect();
    for (i, cluster) in handles.iter().enumerate() {
        let (c, o, s) = (cluster.clone(), outcomes.clone(), stop.clone());
        loaders.push(std::thread::spawn(move || load(c, i, o, s)));
    }
    let owner_of =
        |viewer: usize, shard: u32| handles[viewer].get_node(shard).map(|n| local.index_of(&n));
    let pause = |d| std::thread::sleep(Duration::from_millis(d));
    pause(200);
    // A split that leaves both sides with enough members, then its heal:
    // a conflict per shard, resolved by score.
    let split = |cut: bool| {
        for a in 0..3 {
            for b in 3..6 {
                let (ia, ib) = (
                    NodeId::parse(&local.nodes[a].address).unwrap(),
                    NodeId::parse(&local.nodes[b].address).unwrap(),
                );
                if cut {
                    handles[a].cut(&ib);
                    handles[b].cut(&ia);
                } else {
                    handles[a].heal(&ib);
                    handles[b].heal(&ia);
                }
            }
        }
    };
    split(true);
    assert!(eventually(WAIT, || (0..2).all(|s| owner_of(0, s)
        .is_some_and(|o| o < 3)
        && owner_of(5, s).is_some_and(|o| o >= 3))));
    pause(300);
    split(false);
    assert!(eventually(WAIT, || (0..2).all(|s| {
        let o = owner_of(0, s);
        o.is_some() && (1..6).all(|v| owner_of(v, s) == o)
    })));
    pause(300);
    // The owner of shard 0 dies; the owner of shard 1 leaves.
    let crashed = owner_of(0, 0).unwrap();
    handles[crashed].crash();
    let viewer = (crashed + 1) % 6;
    assert!(eventually(WAIT, || owner_of(viewer, 0).is_some_and(|o| o != crashed)));
    pause(300);
    let leaver = owner_of(viewer, 1).unwrap();
    handles[leaver].leave().unwrap();
    let viewer = (0..6).find(|v| *v != crashed && *v != leaver).unwrap();
    assert!(eventually(WAIT, || owner_of(viewer, 1).is_some_and(|o| o != leaver)));
    pause(300);
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join().unwrap();
    }
    // Faults over: every request from every node still up succeeds.
    let up: Vec<usize> = (0..6).filter(|i| *i != crashed && *i != leaver).collect();
    assert!(eventually(WAIT, || up
        .iter()
        .all(|&i| (0..2).all(|s| handles[i].get_node(s).is_some()))));
    for &i in &up {
        for shard in 0..2 {
            let reply = handles[i].request(shard, format!("after {i} {shard}"), WAIT);
            assert!(reply.is_ok(), "after the faults, {i} got {reply:?}");
        }
    }
    // Exactly one outcome per request.
    assert!(eventually(WAIT, || {
        outcomes.lock().unwrap().values().all(|o| !o.is_empty())
    }));
    let outcomes = outcomes.lock().unwrap();
    let mut answered = 0;
    for (payload, got) in outcomes.iter() {
        assert_eq!(got.len(), 1, "{payload} ended {} times: {got:?}", got.len());
    }
    for (i, node) in local.nodes.iter_mut().enumerate() {
        node.cluster = None;
        let _ = i;
    }
    let handled = handled_inside_allocations(&local);
    for (payload, got) in outcomes.iter() {
        if let Ok(reply) = &got[0] {
            answered += 1;
            let (node, epoch) = handled
                .get(payload.as_bytes())
                .unwrap_or_else(|| panic!("{payload} was answered but never handled"));
            assert_eq!((reply.node.as_str(), reply.epoch), (node.as_str(), *epoch));
        }
    }
    assert!(
        answered > outcomes.len() / 2,
        "most requests succeed: {answered} of {}",
        outcomes.len()
    );
    drop(handles);
}
