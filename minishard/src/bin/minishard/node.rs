//! `minishard node`: one member of a real cluster, printing its events.
//! SIGTERM and SIGINT leave gracefully (the shard is handed over at once).
//! A node that no member accepts and some refuse (docs/design.md 6.8) says
//! so, and exits with an error after `--refused-exit-after-ms`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minishard::{Cluster, Config};
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::app::{MemberSource, Printer, PrintingApp, ScoreMode};
use crate::options::{CookieArgs, SettingArgs, TlsArgs};

#[derive(clap::Args)]
pub struct Args {
    /// The cluster's name.
    #[arg(long)]
    cluster: String,
    /// The address to listen on, host:port.
    #[arg(long)]
    listen: String,
    /// The address peers know this node by, if not --listen.
    #[arg(long)]
    advertise: Option<String>,
    /// The member list: every member's host:port, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "members_file",
        conflicts_with = "members_file"
    )]
    nodes: Vec<String>,
    /// Read the member list from this file instead, again at every poll
    /// (see --member-poll-ms), so it can change while the node runs:
    /// addresses separated by commas, spaces or lines; `#` starts a comment.
    #[arg(long, value_name = "PATH")]
    members_file: Option<PathBuf>,
    /// How many shards the cluster keeps.
    #[arg(long)]
    shards: u32,
    #[command(flatten)]
    cookie: CookieArgs,
    #[command(flatten)]
    settings: SettingArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// What `score` answers in a conflict: uptime (of the allocation, in ms)
    /// or fixed:N.
    #[arg(long, default_value = "uptime")]
    score: ScoreMode,
    /// Print exactly one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Exit with an error once no member has accepted this node, and some
    /// have refused it (a wrong cookie, cluster name or version, or not in
    /// their member list), for this long; 0: never.
    #[arg(
        long,
        alias = "refused-exit-after",
        default_value_t = 5000,
        value_name = "MS"
    )]
    refused_exit_after_ms: u64,
}

pub fn run(args: Args) -> Result<(), String> {
    let cookie = args.cookie.load()?;
    // Catch the signals before joining, so a early SIGTERM still leaves.
    let mut signals =
        Signals::new([SIGTERM, SIGINT]).map_err(|e| format!("cannot catch signals: {e}"))?;
    let name = args
        .advertise
        .clone()
        .unwrap_or_else(|| args.listen.clone());
    let printer = Printer::new(name, args.json, Box::new(std::io::stdout()));
    let mut config = Config::new(args.listen.clone(), cookie);
    config.advertise = args.advertise.clone();
    args.settings.apply(&mut config)?;
    config.tls = args.tls.files();
    let hook_printer = printer.clone();
    config.notice_hook = Some(Arc::new(move |n| hook_printer.notice(n)));
    let members = match &args.members_file {
        Some(path) => MemberSource::file(path.clone()),
        None => MemberSource::Shared(Arc::new(Mutex::new(args.nodes.clone()))),
    };
    let app = PrintingApp {
        members,
        shards: args.shards,
        score: args.score,
        printer: printer.clone(),
    };
    let cluster = Cluster::join(&args.cluster, app, config).map_err(|e| e.to_string())?;
    printer.event(
        "joined",
        json!({
            "cluster": args.cluster,
            "shards": args.shards,
            "nodes": cluster.snapshot().members.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        }),
    );
    let refused_exit_after = Duration::from_millis(args.refused_exit_after_ms);
    let mut misconfigured_since: Option<Instant> = None;
    let signal = loop {
        if let Some(signal) = signals.pending().next() {
            break signal;
        }
        // Woken by a change of the node's view, or after a short while to
        // look at the signals again.
        let _ = cluster.wait_for(|s| s.misconfigured != misconfigured_since.is_some(), TICK);
        let snapshot = cluster.snapshot();
        match (snapshot.misconfiguration(), misconfigured_since) {
            (None, _) => misconfigured_since = None,
            (Some(why), None) => {
                printer.event("misconfigured", json!({ "reason": why }));
                misconfigured_since = Some(Instant::now());
            }
            (Some(why), Some(since))
                if !refused_exit_after.is_zero() && since.elapsed() >= refused_exit_after =>
            {
                printer.event("leaving", json!({ "reason": "misconfigured" }));
                cluster.leave().map_err(|e| e.to_string())?;
                printer.event("left", json!({}));
                return Err(format!(
                    "misconfigured for {refused_exit_after:?}, giving up: {why}"
                ));
            }
            (Some(_), Some(_)) => {}
        }
    };
    let name = if signal == SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    printer.event("leaving", json!({ "signal": name }));
    cluster.leave().map_err(|e| e.to_string())?;
    printer.event("left", json!({}));
    Ok(())
}

/// How often the node looks at the signals while nothing changes.
const TICK: Duration = Duration::from_millis(100);
