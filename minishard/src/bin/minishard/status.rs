//! `minishard status`: join as an observer through one node, ask that node
//! for its own view over the mesh (a status request, sealed like every
//! frame), print it — its health, the shard map, every member it knows
//! with its state, dead ones included, the refusals it meets — and leave.

use std::time::{Duration, Instant};

use minishard::{
    CallbackError, Callbacks, Cluster, Config, NodeId, NodeState, ReleaseReason, Snapshot,
};
use serde_json::{json, Value};

use crate::options::{CookieArgs, SettingArgs, TlsArgs};

#[derive(clap::Args)]
pub struct Args {
    /// The cluster's name.
    #[arg(long)]
    cluster: String,
    /// Any member's host:port.
    #[arg(long)]
    connect: String,
    /// Where this observer listens (nobody dials it; it needs an address).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    #[command(flatten)]
    cookie: CookieArgs,
    #[command(flatten)]
    settings: SettingArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// How long to wait for the member to answer.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    timeout_ms: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// An observer's application: it never holds a shard.
pub struct Watch {
    pub connect: String,
}

impl Callbacks for Watch {
    type State = ();
    fn nodes(&mut self, _: &str) -> Result<Vec<String>, CallbackError> {
        Ok(vec![self.connect.clone()])
    }
    fn shard_count(&mut self, _: &str) -> Result<u32, CallbackError> {
        Ok(0) // learned from the member
    }
    fn allocated(&mut self, _: &str, _: u32, _: u64) -> Result<(), CallbackError> {
        Err("an observer holds no shard".into())
    }
    fn score(&mut self, _: &mut ()) -> Result<i64, CallbackError> {
        Err("an observer holds no shard".into())
    }
    fn prolonged(&mut self, _: &NodeId, _: &mut (), _: u64) -> Result<(), CallbackError> {
        Ok(())
    }
    fn deallocated(&mut self, _: Option<&NodeId>, _: ReleaseReason, _: ()) {}
}

/// A node's state as the status lines show it: `active(2)`, `standby`, ...
fn state_name(state: &Value) -> String {
    let name = state["state"].as_str().unwrap_or("?");
    match state["shard"].as_u64() {
        Some(shard) => format!("{name}({shard})"),
        None => name.to_owned(),
    }
}

pub fn run(args: Args) -> Result<(), String> {
    let connect = NodeId::parse(&args.connect).map_err(|e| e.to_string())?;
    let mut config = Config::new(args.listen.clone(), args.cookie.load()?);
    config.observer = true;
    args.settings.apply(&mut config)?;
    config.tls = args.tls.files();
    let watch = Watch {
        connect: args.connect.clone(),
    };
    let cluster = Cluster::join(&args.cluster, watch, config).map_err(|e| e.to_string())?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let deadline = Instant::now() + timeout;
    // Connected to it (or refused by it: then it will never answer).
    let connected = |s: &Snapshot| {
        s.misconfigured
            || s.nodes
                .iter()
                .any(|(n, state)| *n == connect && *state != NodeState::Unavailable)
    };
    let no_answer = |why: &str| {
        format!("no answer from {connect} within {timeout:?}: {why} (is it running, with this cluster name and cookie?)")
    };
    cluster
        .wait_for(connected, timeout)
        .map_err(|_| no_answer("cannot connect"))?;
    if let Some(why) = cluster.snapshot().misconfiguration() {
        return Err(no_answer(&why));
    }
    // The node answers with its own view (docs/design.md 8.2): what it
    // holds, every member it knows, dead ones included, its counters.
    let json = cluster
        .peer_status(&connect, deadline.saturating_duration_since(Instant::now()))
        .map_err(|e| no_answer(&e.to_string()))?;
    let _ = cluster.leave();
    let report: Value = serde_json::from_str(&json)
        .map_err(|e| format!("{connect} answered with a status that is not JSON: {e}"))?;
    let me = cluster.node_id().as_str();
    let nodes: serde_json::Map<String, Value> = report["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| Some((entry[0].as_str()?.to_owned(), entry[1].clone())))
        .filter(|(node, _)| node != me)
        .collect();
    let owners: Vec<Value> = report["owners"].as_array().cloned().unwrap_or_default();
    let shards: Vec<Value> = owners.iter().map(|o| o["node"].clone()).collect();
    let health = report["health"].as_str().unwrap_or("?").to_owned();
    if args.json {
        let out = json!({
            "cluster": args.cluster,
            "connected": connect.as_str(),
            "health": health,
            "shard_count": report["shard_count"],
            "allocated": report["allocated"],
            "shards": shards,
            "owners": owners,
            "nodes": nodes,
            "local": report["local"],
            "refusals": report["refusals"],
            "misconfigured": report["misconfigured"],
            "stats": report["stats"],
            "metadata": report["metadata"],
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "cluster {} as {connect} sees it: {health}, {} shards, {} allocated",
        args.cluster, report["shard_count"], report["allocated"]
    );
    for (shard, owner) in owners.iter().enumerate() {
        match (owner["node"].as_str(), owner["epoch"].as_u64()) {
            (Some(node), Some(epoch)) => println!(
                "  shard {shard:>3}  {node} (epoch {})",
                crate::app::show_epoch(epoch)
            ),
            _ => println!("  shard {shard:>3}  -"),
        }
    }
    for (node, state) in &nodes {
        // What the node published with its record (--meta), if anything.
        let meta: String = report["metadata"][node.as_str()]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!(" {k}={}", v.as_str().unwrap_or("?")))
            .collect();
        println!("  node {node:<24} {}{meta}", state_name(state));
    }
    for refusal in report["refusals"].as_array().into_iter().flatten() {
        println!(
            "  refused by {} {} times: {} ({}){}",
            refusal["peer"].as_str().unwrap_or("?"),
            refusal["count"],
            refusal["reason"].as_str().unwrap_or("?"),
            refusal["detail"].as_str().unwrap_or(""),
            if refusal["refusing"] == true {
                ", still refusing"
            } else {
                ""
            }
        );
    }
    if report["misconfigured"] == true {
        println!("  misconfigured: no member accepts {connect}");
    }
    Ok(())
}
