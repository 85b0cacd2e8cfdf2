//! `minishard status`: join as an observer through one node, print the
//! cluster's health, shard map and every node's state, and leave.

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

fn state_name(state: &NodeState) -> String {
    match state {
        NodeState::Active { shard } => format!("active({shard})"),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.get("state").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default(),
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
    let answered =
        |s: &Snapshot| s.shard_count > 0 && s.health_views.iter().any(|(n, _)| *n == connect);
    cluster
        .wait_for(answered, timeout)
        .map_err(|_| format!("no answer from {connect} within {timeout:?} (is it running, with this cluster name and cookie?)"))?;
    // Relayed records of the other members follow the first; wait until the
    // picture has been still for a moment.
    let mut last = cluster.snapshot();
    let mut still_since = Instant::now();
    let deadline = Instant::now() + timeout;
    while still_since.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = cluster.snapshot();
        if now.nodes != last.nodes || now.owners != last.owners {
            still_since = Instant::now();
            last = now;
        }
    }
    let s = cluster.snapshot();
    cluster.leave().map_err(|e| e.to_string())?;
    let health = s
        .health_views
        .iter()
        .find(|(n, _)| *n == connect)
        .map(|(_, h)| *h)
        .expect("checked above");
    let owners: Vec<Option<String>> = s
        .owners
        .iter()
        .map(|o| o.as_ref().map(|o| o.node.to_string()))
        .collect();
    let nodes: Vec<(String, String)> = s
        .nodes
        .iter()
        .filter(|(n, _)| n != cluster.node_id())
        .map(|(n, state)| (n.to_string(), state_name(state)))
        .collect();
    if args.json {
        let nodes: serde_json::Map<String, Value> =
            nodes.into_iter().map(|(n, st)| (n, json!(st))).collect();
        let views: serde_json::Map<String, Value> = s
            .health_views
            .iter()
            .map(|(n, h)| (n.to_string(), json!(h.as_str())))
            .collect();
        let out = json!({
            "cluster": args.cluster,
            "connected": connect.as_str(),
            "health": health.as_str(),
            "shard_count": s.shard_count,
            "shards": owners,
            "nodes": nodes,
            "health_views": views,
            "metadata": s
                .metadata
                .iter()
                .map(|(n, m)| (n.to_string(), json!(**m)))
                .collect::<serde_json::Map<String, Value>>(),
        });
        println!("{out}");
    } else {
        println!(
            "cluster {} (through {connect}): {health}, {} shards",
            args.cluster, s.shard_count
        );
        for (shard, owner) in owners.iter().enumerate() {
            println!("  shard {shard:>3}  {}", owner.as_deref().unwrap_or("-"));
        }
        for (node, state) in nodes {
            let meta = NodeId::parse(&node)
                .ok()
                .and_then(|id| s.metadata(&id).cloned())
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!(" {k}={v}"))
                        .collect::<String>()
                })
                .unwrap_or_default();
            println!("  node {node:<24} {state}{meta}");
        }
    }
    Ok(())
}
