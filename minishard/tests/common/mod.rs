//! A test application that records every callback, and a local cluster of
//! such applications on loopback.
#![allow(dead_code)]

pub mod by_hand;
pub mod certs;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minishard::{
    CallbackError, Callbacks, Cluster, Config, Health, NodeId, ReleaseReason, Responder, Timings,
};

/// What one application was told, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Told {
    Allocated {
        shard: u32,
        epoch: u64,
    },
    Score(i64),
    Prolonged {
        loser: String,
        epoch: u64,
    },
    Deallocated {
        winner: Option<String>,
        reason: ReleaseReason,
    },
    Status {
        old: Health,
        new: Health,
    },
    /// `handle_request` ran for this payload, in the allocation of `shard`
    /// at `epoch` (the request handler answers `shard epoch payload`).
    Handled {
        shard: u32,
        epoch: u64,
        payload: Vec<u8>,
    },
}

#[derive(Clone, Default)]
pub struct Journal(pub Arc<Mutex<Vec<(Instant, Told)>>>);

impl Journal {
    pub fn push(&self, told: Told) {
        self.0.lock().unwrap().push((Instant::now(), told));
    }
    pub fn all(&self) -> Vec<Told> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| t.clone())
            .collect()
    }
    pub fn timed(&self) -> Vec<(Instant, Told)> {
        self.0.lock().unwrap().clone()
    }
    pub fn count(&self, f: impl Fn(&Told) -> bool) -> usize {
        self.all().iter().filter(|t| f(t)).count()
    }
}

/// An application that owns nothing but a journal of what it was told.
pub struct App {
    pub members: Arc<Mutex<Vec<String>>>,
    pub shards: u32,
    pub score: Arc<Mutex<i64>>,
    pub journal: Journal,
}

impl Callbacks for App {
    type State = u32;

    fn nodes(&mut self, _cluster: &str) -> Result<Vec<String>, CallbackError> {
        Ok(self.members.lock().unwrap().clone())
    }

    fn shard_count(&mut self, _cluster: &str) -> Result<u32, CallbackError> {
        Ok(self.shards)
    }

    fn allocated(&mut self, _cluster: &str, shard: u32, epoch: u64) -> Result<u32, CallbackError> {
        self.journal.push(Told::Allocated { shard, epoch });
        Ok(shard)
    }

    fn score(&mut self, _state: &mut u32) -> Result<i64, CallbackError> {
        let score = *self.score.lock().unwrap();
        self.journal.push(Told::Score(score));
        Ok(score)
    }

    fn prolonged(
        &mut self,
        loser: &NodeId,
        _state: &mut u32,
        epoch: u64,
    ) -> Result<(), CallbackError> {
        self.journal.push(Told::Prolonged {
            loser: loser.to_string(),
            epoch,
        });
        Ok(())
    }

    fn deallocated(&mut self, winner: Option<&NodeId>, reason: ReleaseReason, _state: u32) {
        self.journal.push(Told::Deallocated {
            winner: winner.map(|w| w.to_string()),
            reason,
        });
    }

    fn status_changed(&mut self, _cluster: &str, old: Health, new: Health) {
        self.journal.push(Told::Status { old, new });
    }

    fn handle_request(&mut self, state: &mut u32, payload: Vec<u8>, responder: Responder) {
        let epoch = responder.epoch();
        let mut reply = format!("{state} {epoch} ").into_bytes();
        reply.extend_from_slice(&payload);
        self.journal.push(Told::Handled {
            shard: *state,
            epoch,
            payload,
        });
        responder.respond(reply);
    }
}

/// Free loopback ports, found by binding port 0.
pub fn free_addresses(n: usize) -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

/// Fast timings for tests, still in the design's proportions.
pub fn fast() -> Timings {
    Timings {
        heartbeat_interval: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_millis(250),
        transition_timeout: Duration::from_millis(500),
        node_grace: Duration::from_millis(750),
        settle: Duration::from_millis(10),
        score_deadline: Duration::from_millis(500),
        member_poll: Duration::from_secs(1),
        allocation_retry: Duration::from_millis(300),
    }
}

pub const COOKIE: &[u8] = b"test-cookie";

/// A node of a local test cluster.
pub struct Node {
    pub address: String,
    pub cluster: Option<Cluster>,
    pub journal: Journal,
    pub score: Arc<Mutex<i64>>,
}

impl Node {
    pub fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("running")
    }
}

/// Adjusts node i's configuration before it joins.
pub type Configure = Arc<dyn Fn(usize, &mut Config) + Send + Sync>;

/// A local cluster of `n` members keeping `shards` shards.
pub struct Local {
    pub name: String,
    pub members: Arc<Mutex<Vec<String>>>,
    pub shards: u32,
    pub nodes: Vec<Node>,
    pub timings: Timings,
    /// Adjusts node i's configuration (e.g. TLS files) before it joins.
    pub configure: Option<Configure>,
}

impl Local {
    pub fn start(name: &str, n: usize, shards: u32) -> Local {
        Local::start_with(name, n, shards, None)
    }

    /// A local cluster whose configurations go through `configure` first.
    pub fn start_with(name: &str, n: usize, shards: u32, configure: Option<Configure>) -> Local {
        let addresses = free_addresses(n);
        let members = Arc::new(Mutex::new(addresses.clone()));
        let mut local = Local {
            name: name.into(),
            members,
            shards,
            nodes: Vec::new(),
            timings: fast(),
            configure,
        };
        for address in addresses {
            let journal = Journal::default();
            let score = Arc::new(Mutex::new(0));
            local.nodes.push(Node {
                address,
                cluster: None,
                journal,
                score,
            });
        }
        for i in 0..n {
            local.restart(i);
        }
        local
    }

    pub fn config(&self, i: usize) -> Config {
        let mut config = Config::new(self.nodes[i].address.clone(), COOKIE.to_vec());
        config.timings = self.timings;
        if let Some(configure) = &self.configure {
            configure(i, &mut config);
        }
        config
    }

    /// (Re)starts node `i` with a new incarnation.
    pub fn restart(&mut self, i: usize) {
        let app = App {
            members: self.members.clone(),
            shards: self.shards,
            score: self.nodes[i].score.clone(),
            journal: self.nodes[i].journal.clone(),
        };
        let config = self.config(i);
        self.nodes[i].cluster = Some(Cluster::join(&self.name, app, config).expect("join"));
    }

    pub fn running(&self) -> impl Iterator<Item = &Cluster> {
        self.nodes.iter().filter_map(|n| n.cluster.as_ref())
    }

    /// Waits until every running node reports `available` and the same
    /// complete shard map.
    pub fn converged(&self, timeout: Duration) -> Result<Vec<Option<NodeId>>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let maps: Vec<Vec<Option<NodeId>>> = self.running().map(|c| c.shard_map()).collect();
            let healthy = self.running().all(|c| c.health() == Health::Available);
            let agree = maps.windows(2).all(|w| w[0] == w[1]);
            let complete = maps.first().is_some_and(|m| m.iter().all(Option::is_some));
            if healthy && agree && complete {
                return Ok(maps[0].clone());
            }
            if Instant::now() >= deadline {
                let health: Vec<String> = self.running().map(|c| c.health().to_string()).collect();
                return Err(format!("not converged: health {health:?}, maps {maps:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn index_of(&self, node: &NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| n.address == node.as_str())
            .expect("a member")
    }
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}

impl Local {
    /// Cuts every link between the two groups (by node index), both ways.
    pub fn split(&self, a: &[usize], b: &[usize]) {
        for &i in a {
            for &j in b {
                let (ni, nj) = (&self.nodes[i], &self.nodes[j]);
                let (idi, idj) = (
                    NodeId::parse(&ni.address).unwrap(),
                    NodeId::parse(&nj.address).unwrap(),
                );
                ni.cluster().cut(&idj);
                nj.cluster().cut(&idi);
            }
        }
    }

    /// Heals every cut on every running node.
    pub fn heal(&self) {
        for c in self.running() {
            c.heal_all();
        }
    }

    /// Node `i` dies without a word.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].cluster.take().expect("running").crash();
    }

    /// Which node index owns `shard` in node `viewer`'s view.
    pub fn owner(&self, viewer: usize, shard: u32) -> Option<usize> {
        self.nodes[viewer]
            .cluster()
            .get_node(shard)
            .map(|n| self.index_of(&n))
    }
}

/// Threads and open descriptors of this process.
pub fn threads_and_fds() -> (usize, usize) {
    let count = |dir: &str| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    (count("/proc/self/task"), count("/proc/self/fd"))
}
