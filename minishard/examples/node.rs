//! One member of a minishard cluster, in Rust. Run one per member, each with
//! its own address first, then the others:
//!   target/debug/examples/node 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003
//! It keeps one shard fewer than it has members (one node on standby), and
//! runs until Ctrl-C (or for --seconds N once available), then leaves.
use minishard::{
    CallbackError, Callbacks, Cluster, Config, Health, NodeId, ReleaseReason, RequestError,
    Responder,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Sessions {
    members: Vec<String>,
}

impl Callbacks for Sessions {
    type State = Vec<u8>; // what this node keeps for its shard
    fn nodes(&mut self, _cluster: &str) -> Result<Vec<String>, CallbackError> {
        Ok(self.members.clone())
    }
    fn shard_count(&mut self, _cluster: &str) -> Result<u32, CallbackError> {
        Ok(self.members.len().saturating_sub(1).max(1) as u32) // one node on standby
    }
    fn allocated(&mut self, _: &str, shard: u32, epoch: u64) -> Result<Vec<u8>, CallbackError> {
        println!("owning shard {shard} at epoch {epoch}"); // fence writes by stale owners with it
        Ok(Vec::new())
    }
    fn score(&mut self, state: &mut Vec<u8>) -> Result<i64, CallbackError> {
        Ok(state.len() as i64) // keep the copy with the most data
    }
    fn prolonged(
        &mut self,
        loser: &NodeId,
        _: &mut Vec<u8>,
        epoch: u64,
    ) -> Result<(), CallbackError> {
        println!("kept my shard at epoch {epoch}; {loser} gave its copy up"); // above the loser's
        Ok(())
    }
    fn deallocated(&mut self, winner: Option<&NodeId>, reason: ReleaseReason, _state: Vec<u8>) {
        let winner = winner.map_or("no one".into(), NodeId::to_string);
        println!("gave it up to {winner} ({reason})"); // lost_conflict, left, degraded, ...
    }
    fn handle_request(&mut self, state: &mut Vec<u8>, payload: Vec<u8>, responder: Responder) {
        state.extend_from_slice(&payload); // runs on the owner, inside its allocation
        responder.respond(state.clone()); // now, or later from another thread
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut seconds = None;
    if args.len() > 2 && args[0] == "--seconds" {
        seconds = Some(Duration::from_secs_f64(args[1].parse()?));
        args.drain(..2);
    }
    if args.is_empty() {
        eprintln!("usage: node [--seconds N] THIS_ADDRESS [OTHER_MEMBER ...]");
        std::process::exit(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }

    let config = Config::new(args[0].as_str(), b"change me".to_vec()); // a long random secret in production
    let cluster = Cluster::join("sessions", Sessions { members: args }, config)?;
    cluster.wait_until(Health::Available, Duration::from_secs(30))?;
    let owner = cluster
        .get_node(0)
        .map_or("nobody".into(), |n| n.to_string());
    println!("shard 0 lives on {owner}");
    match cluster.request(0, b"hello".to_vec(), Duration::from_secs(5)) {
        Ok(reply) => println!("{} answered at epoch {}", reply.node, reply.epoch),
        Err(RequestError::Uncertain) => println!("sent, then the owner was lost: it may have run"),
        Err(other) => println!("the request failed: {other}"),
    }
    let until = seconds.map(|s| Instant::now() + s);
    while !stop.load(Ordering::Relaxed) && until.is_none_or(|t| Instant::now() < t) {
        std::thread::sleep(Duration::from_millis(100)); // the callbacks run on their own thread
    }
    cluster.leave()?; // also on drop
    println!("left");
    Ok(())
}
