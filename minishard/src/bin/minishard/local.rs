//! A cluster of nodes inside this process, on loopback: what the demo
//! narrates and the benchmarks measure.
//!
//! Faults (splits, crashes) go through a [`Switch`] between the nodes, or,
//! in a build with the library's test hooks (the `testing` feature, which
//! the benchmarks need), straight through `Cluster::cut` and `crash`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use minishard::{Cluster, Config, Health, NodeId, Timings};

use crate::app::{Handler, Logged, MemberSource, Printer, PrintingApp, ScoreMode};
use crate::switch::{node_ip, Switch};

/// How the nodes are wired, and so how faults are made.
pub enum Wiring {
    /// Nodes dial each other directly; faults through the library's test
    /// hooks. Nothing stands between two nodes: what the bench measures.
    #[cfg(feature = "testing")]
    Direct,
    /// Nodes talk through a [`Switch`], which makes the faults.
    Switched,
}

enum Faults {
    #[cfg(feature = "testing")]
    Hooks,
    Switch {
        switch: Switch,
        /// Crashed nodes, still leaving in the background, unheard.
        crashed: Vec<(usize, JoinHandle<()>)>,
    },
}

pub const COOKIE: &[u8] = b"minishard-local-cookie";

pub struct LocalNode {
    pub address: String,
    pub id: NodeId,
    pub cluster: Option<Cluster>,
    pub printer: Printer,
}

pub struct LocalCluster {
    pub name: String,
    pub members: Arc<Mutex<Vec<String>>>,
    pub shards: u32,
    pub timings: Timings,
    pub nodes: Vec<LocalNode>,
    /// What the nodes started from now on answer requests with (echo
    /// unless set).
    pub handler: Handler,
    score: ScoreMode,
    faults: Faults,
}

/// Free loopback ports, each reserved for the rest of this process.
#[cfg(feature = "testing")]
pub fn free_addresses(n: usize) -> Result<Vec<String>, String> {
    let loopback = std::net::Ipv4Addr::LOCALHOST.into();
    (0..n)
        .map(|_| reserve_port(loopback).map(|a| a.to_string()))
        .collect()
}

/// Ports probed free and held for the rest of this process, so that no
/// other socket is given them before (or between) the nodes that listen on
/// them: a probe released at once could be handed to a dial socket, or to
/// another probe, before its node binds it ("Address already in use" at 50
/// nodes).
static RESERVED: Mutex<Vec<socket2::Socket>> = Mutex::new(Vec::new());

/// A free port on `ip`, reserved: a probe bound to it with SO_REUSEADDR and
/// never listening stays open, so the kernel gives the port to no port-0
/// bind and no dial, while a node's listener (std binds with SO_REUSEADDR
/// too) can bind it and listen, as often as the node restarts.
pub fn reserve_port(ip: std::net::IpAddr) -> Result<SocketAddr, String> {
    use socket2::{Domain, Socket, Type};
    let fail = |e: std::io::Error| format!("no free port on {ip}: {e}");
    let probe =
        Socket::new(Domain::for_address((ip, 0).into()), Type::STREAM, None).map_err(fail)?;
    probe.set_reuse_address(true).map_err(fail)?;
    probe.bind(&SocketAddr::new(ip, 0).into()).map_err(fail)?;
    let address = probe
        .local_addr()
        .map_err(fail)?
        .as_socket()
        .ok_or_else(|| format!("no free port on {ip}: not an IP socket"))?;
    RESERVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(probe);
    Ok(address)
}

impl LocalCluster {
    /// `n` members keeping `shards` shards, not started yet. Each node's
    /// events go to `out` (or nowhere) with times relative to `started`.
    pub fn new(
        name: &str,
        n: usize,
        shards: u32,
        timings: Timings,
        score: ScoreMode,
        out: Option<(Arc<Mutex<dyn Write + Send>>, Instant)>,
        wiring: Wiring,
    ) -> Result<LocalCluster, String> {
        let (addresses, faults) = match wiring {
            #[cfg(feature = "testing")]
            Wiring::Direct => (free_addresses(n)?, Faults::Hooks),
            Wiring::Switched => {
                let switch = Switch::new(n)?;
                let ports: Vec<String> = (0..n).map(|i| switch.port(i).to_string()).collect();
                (
                    ports,
                    Faults::Switch {
                        switch,
                        crashed: Vec::new(),
                    },
                )
            }
        };
        let nodes = addresses
            .iter()
            .map(|address| {
                let sink: Box<dyn Write + Send> = match &out {
                    Some((w, _)) => Box::new(Shared(w.clone())),
                    None => Box::new(std::io::sink()),
                };
                let mut printer = Printer::new(address.clone(), false, sink);
                if let Some((_, started)) = &out {
                    printer = printer.timed(*started);
                }
                LocalNode {
                    address: address.clone(),
                    id: NodeId::parse(address).expect("a bound address"),
                    cluster: None,
                    printer,
                }
            })
            .collect();
        Ok(LocalCluster {
            name: name.into(),
            members: Arc::new(Mutex::new(addresses)),
            shards,
            timings,
            nodes,
            handler: Handler::Echo,
            score,
            faults,
        })
    }

    /// Starts (or restarts, with a new incarnation) node `i`.
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let mut config = Config::new(node.address.clone(), COOKIE.to_vec());
        // (Without the test hooks the switch is the only wiring.)
        #[allow(irrefutable_let_patterns)]
        if let Faults::Switch { switch, crashed } = &mut self.faults {
            // Behind the switch: listen on the node's own loopback address,
            // advertise its port on the switch.
            for (_, leaving) in extract(crashed, |(j, _)| *j == i) {
                let _ = leaving.join();
            }
            let listen = free_port_on(i)?;
            config.listen = listen.to_string();
            config.advertise = Some(node.address.clone());
            switch.attach(i, listen);
        }
        config.timings = self.timings;
        let app = PrintingApp {
            members: MemberSource::Shared(self.members.clone()),
            shards: self.shards,
            score: self.score,
            printer: node.printer.clone(),
            handler: self.handler,
            me: node.address.clone(),
        };
        node.cluster = Some(Cluster::join(&self.name, app, config).map_err(|e| e.to_string())?);
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<(), String> {
        (0..self.nodes.len()).try_for_each(|i| self.start(i))
    }

    /// Node `i` dies without a word.
    pub fn crash(&mut self, i: usize) {
        let Some(c) = self.nodes[i].cluster.take() else {
            return;
        };
        match &mut self.faults {
            #[cfg(feature = "testing")]
            Faults::Hooks => c.crash(),
            Faults::Switch { switch, crashed } => {
                // Dead to the others at once; the node itself, unheard from
                // now on, leaves in the background (a restart waits for it).
                switch.crash(i);
                self.nodes[i].printer.silence_and_detach();
                crashed.push((i, std::thread::spawn(move || drop(c))));
            }
        }
    }

    /// Node `i` leaves gracefully.
    pub fn leave(&mut self, i: usize) -> Result<(), String> {
        match self.nodes[i].cluster.take() {
            Some(c) => c.leave().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &Cluster)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.cluster.as_ref().map(|c| (i, c)))
    }

    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == *id)
    }

    /// The owner of `shard` as node `viewer` sees it.
    pub fn owner(&self, viewer: usize, shard: u32) -> Option<usize> {
        let c = self.nodes[viewer].cluster.as_ref()?;
        self.index_of(&c.get_node(shard)?)
    }

    /// Cuts every link between the groups, both ways.
    pub fn split(&self, a: &[usize], b: &[usize]) {
        for &i in a {
            for &j in b {
                match &self.faults {
                    #[cfg(feature = "testing")]
                    Faults::Hooks => {
                        if let (Some(ci), Some(cj)) =
                            (&self.nodes[i].cluster, &self.nodes[j].cluster)
                        {
                            ci.cut(&self.nodes[j].id);
                            cj.cut(&self.nodes[i].id);
                        }
                    }
                    Faults::Switch { switch, .. } => switch.cut(i, j),
                }
            }
        }
    }

    pub fn heal(&self) {
        match &self.faults {
            #[cfg(feature = "testing")]
            Faults::Hooks => {
                for (_, c) in self.running() {
                    c.heal_all();
                }
            }
            Faults::Switch { switch, .. } => switch.heal_all(),
        }
    }

    /// Every node in `group` is available and sees every shard owned by a
    /// node of `group`, and they all agree.
    pub fn settled(&self, group: &[usize]) -> bool {
        let maps: Vec<Vec<Option<NodeId>>> = group
            .iter()
            .filter_map(|&i| self.nodes[i].cluster.as_ref())
            .map(Cluster::shard_map)
            .collect();
        let healthy = group
            .iter()
            .filter_map(|&i| self.nodes[i].cluster.as_ref())
            .all(|c| c.health() == Health::Available);
        healthy
            && maps.len() == group.len()
            && maps.windows(2).all(|w| w[0] == w[1])
            && maps[0].iter().all(|o| {
                o.as_ref()
                    .and_then(|o| self.index_of(o))
                    .is_some_and(|i| group.contains(&i))
            })
    }

    /// Every running node.
    pub fn everyone(&self) -> Vec<usize> {
        self.running().map(|(i, _)| i).collect()
    }

    /// Waits for `condition`, for at most `timeout`.
    pub fn wait(
        &self,
        timeout: Duration,
        what: &str,
        condition: impl Fn(&LocalCluster) -> bool,
    ) -> Result<Duration, String> {
        let started = Instant::now();
        while !condition(self) {
            if started.elapsed() > timeout {
                return Err(format!("{what}: not done within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(started.elapsed())
    }

    /// Every event of every node since `since`, in time order.
    pub fn events_since(&self, since: Instant) -> Vec<(usize, Logged)> {
        let mut all: Vec<(usize, Logged)> = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.printer.logged().into_iter().map(move |l| (i, l)))
            .filter(|(_, l)| l.at >= since)
            .collect();
        all.sort_by_key(|(_, l)| l.at);
        all
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        #[allow(irrefutable_let_patterns)]
        if let Faults::Switch { crashed, .. } = &mut self.faults {
            for (_, leaving) in crashed.drain(..) {
                let _ = leaving.join();
            }
        }
    }
}

/// Removes and returns the items for which `f` holds.
fn extract<T>(items: &mut Vec<T>, f: impl Fn(&T) -> bool) -> Vec<T> {
    let (taken, kept) = items.drain(..).partition(|item| f(item));
    *items = kept;
    taken
}

/// A port on node `i`'s own loopback address, reserved (see `reserve_port`).
fn free_port_on(i: usize) -> Result<SocketAddr, String> {
    reserve_port(node_ip(i)?)
}

/// A writer shared by every node's printer.
struct Shared(Arc<Mutex<dyn Write + Send>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        // One lock for the whole line: lines of different nodes never mix.
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}
