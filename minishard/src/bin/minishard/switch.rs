//! A network switch inside this process, between the demo's nodes, so that
//! the demo can split the cluster and crash a node with the library exactly
//! as it ships: the library's own fault injection (`Cluster::cut`, `crash`)
//! exists only in test builds (the `testing` feature).
//!
//! Node `i` listens on its own loopback address, `127.0.0.(10+i)`, and dials
//! from it; it advertises a port of the switch on 127.0.0.1, which forwards
//! to it. The switch knows a connection's two ends by the dialer's source
//! address, so it can
//! - cut two nodes apart: traffic between them vanishes, as on a pulled
//!   cable (nothing is closed; their heartbeats stop arriving), and new
//!   connections between them are closed at once;
//! - crash a node: close every connection it has, as the kernel does when a
//!   process dies, and close every new one, until it restarts.
//!
//! A connection that was ever cut never carries traffic again, so nobody
//! receives a stream with a hole in it.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};

/// The loopback address node `i` listens on and dials from.
pub fn node_ip(i: usize) -> Result<IpAddr, String> {
    let last = u8::try_from(10 + i)
        .map_err(|_| format!("the switch has room for 245 nodes, not {}", i + 1))?;
    Ok(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

fn node_of(ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] >= 10 => {
            Some(usize::from(v4.octets()[3]) - 10)
        }
        _ => None,
    }
}

/// One connection through the switch.
struct Link {
    ends: (usize, usize),
    /// Set when the two ends are cut apart: from then on bytes are dropped.
    cut: Arc<AtomicBool>,
    /// Closes the connection (its node crashed).
    close: Arc<Notify>,
}

#[derive(Default)]
struct State {
    /// Where each node listens now (it changes when a node restarts).
    targets: Vec<Option<SocketAddr>>,
    crashed: Vec<bool>,
    /// Pairs cut apart, smaller index first.
    cut: HashSet<(usize, usize)>,
    links: Vec<Link>,
}

impl State {
    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }
}

pub struct Switch {
    state: Arc<Mutex<State>>,
    ports: Vec<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Switch {
    /// A switch with one port on 127.0.0.1 per node.
    pub fn new(nodes: usize) -> Result<Switch, String> {
        let listeners = (0..nodes)
            .map(|_| {
                let listener = std::net::TcpListener::bind("127.0.0.1:0")
                    .map_err(|e| format!("the switch cannot listen: {e}"))?;
                listener.set_nonblocking(true).map_err(|e| e.to_string())?;
                Ok(listener)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, String>>()?;
        let state = Arc::new(Mutex::new(State {
            targets: vec![None; nodes],
            crashed: vec![false; nodes],
            ..State::default()
        }));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| format!("the switch cannot start: {e}"))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("demo-switch".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| format!("the switch cannot start: {e}"))?;
        for (port, listener) in listeners.into_iter().enumerate() {
            handle.spawn(serve_port(port, listener, state.clone()));
        }
        Ok(Switch {
            state,
            ports,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address node `i` advertises: its port on the switch.
    pub fn port(&self, i: usize) -> SocketAddr {
        self.ports[i]
    }

    /// Node `i` (re)started, listening on `at`.
    pub fn attach(&self, i: usize, at: SocketAddr) {
        let mut state = lock(&self.state);
        state.targets[i] = Some(at);
        state.crashed[i] = false;
    }

    /// Drops all traffic between `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize) {
        let mut state = lock(&self.state);
        state.cut.insert((a.min(b), a.max(b)));
        for link in &state.links {
            if link.ends == (a, b) || link.ends == (b, a) {
                link.cut.store(true, Ordering::Release);
            }
        }
    }

    /// Lets new connections through between every pair again.
    pub fn heal_all(&self) {
        lock(&self.state).cut.clear();
    }

    /// Node `i` dies: its connections close, new ones are closed at once.
    pub fn crash(&self, i: usize) {
        let mut state = lock(&self.state);
        state.crashed[i] = true;
        state.links.retain(|link| {
            let touches = link.ends.0 == i || link.ends.1 == i;
            if touches {
                // Cut first: not one more byte of it is forwarded.
                link.cut.store(true, Ordering::Release);
                link.close.notify_one();
            }
            !touches
        });
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve_port(to: usize, listener: std::net::TcpListener, state: Arc<Mutex<State>>) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let Ok((inbound, from)) = listener.accept().await else {
            continue;
        };
        let admitted = {
            let state = lock(&state);
            match node_of(from.ip()) {
                Some(from)
                    if from < state.crashed.len()
                        && !state.crashed[from]
                        && !state.crashed[to]
                        && !state.is_cut(from, to) =>
                {
                    state.targets[to].map(|target| (from, target))
                }
                _ => None,
            }
        };
        // Unknown, crashed or cut off: closed at once (dropped).
        if let Some((from, target)) = admitted {
            tokio::spawn(forward(from, to, inbound, target, state.clone()));
        }
    }
}

async fn forward(
    from: usize,
    to: usize,
    inbound: TcpStream,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let cut = Arc::new(AtomicBool::new(false));
    let close = Arc::new(Notify::new());
    {
        let mut state = lock(&state);
        if state.crashed[from] || state.crashed[to] || state.is_cut(from, to) {
            return;
        }
        state.links.push(Link {
            ends: (from, to),
            cut: cut.clone(),
            close: close.clone(),
        });
    }
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    tokio::select! {
        () = pump(&mut in_read, &mut out_write, &cut) => {}
        () = pump(&mut out_read, &mut in_write, &cut) => {}
        () = close.notified() => {}
    }
    let close_ptr = Arc::as_ptr(&close);
    lock(&state)
        .links
        .retain(|link| Arc::as_ptr(&link.close) != close_ptr);
}

/// Copies bytes one way until either side closes; drops them once cut.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    cut: &AtomicBool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if cut.load(Ordering::Acquire) {
                    continue;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
