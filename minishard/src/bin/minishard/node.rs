//! `minishard node`: one member of a real cluster, printing its events.
//! SIGTERM and SIGINT leave gracefully (the shard is handed over at once).
//! A node that no member accepts and some refuse (docs/design.md 6.8) says
//! so, and exits with an error after `--refused-exit-after-ms`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use minishard::{Cluster, Config, RequestError};
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::app::{Handler, MemberSource, Printer, PrintingApp, ScoreMode};
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
    /// What requests for this node's shard get: echo answers `<node>
    /// <epoch> <payload>`; kv keeps a key-value store per shard (`set K V`,
    /// `get K`, `del K`) that moves with the shard: on a graceful leave the
    /// next owner gets the whole store, and the winner of a conflict keeps
    /// its own keys and adds those of the loser's it does not have (a crash
    /// loses the store); none fails them.
    #[arg(long, default_value = "none")]
    handler: Handler,
    /// Metadata published with this node's record, KEY=VALUE (repeat it
    /// for more); other nodes see it in `status` and `node_metadata`.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = key_value)]
    metadata: Vec<(String, String)>,
    /// Send a request to each shard in turn every MS milliseconds, and
    /// print each one's outcome (`reply` or `request_failed`), for tests
    /// and demonstrations under load.
    #[arg(long, value_name = "MS")]
    request_load_ms: Option<u64>,
    /// The timeout of those requests.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    request_timeout_ms: u64,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The short name of a request error, as the `request_failed` event says.
pub fn error_kind(error: &RequestError) -> &'static str {
    match error {
        RequestError::Timeout => "timeout",
        RequestError::NoSuchShard { .. } => "no_such_shard",
        RequestError::Overloaded => "overloaded",
        RequestError::HandlerFailed(_) => "handler_failed",
        RequestError::Uncertain => "uncertain",
        RequestError::Closed => "closed",
        RequestError::TooLarge { .. } => "too_large",
        RequestError::InsideCallback => "inside_callback",
        _ => "other",
    }
}

/// Sends requests to every shard in turn until `stop`, printing each
/// outcome; returns how many it sent. Each one's payload is its id, which
/// the kv handler would refuse: with kv it is `set load <id>`.
fn load(
    cluster: &Cluster,
    printer: &Printer,
    handler: Handler,
    every: Duration,
    timeout: Duration,
    stop: &AtomicBool,
) -> u64 {
    let issued = AtomicU64::new(0);
    while !stop.load(Ordering::Acquire) {
        let shards = cluster.shard_count().max(1);
        let id = issued.fetch_add(1, Ordering::Relaxed) + 1;
        let shard = (id % u64::from(shards)) as u32;
        let sent = unix_ms();
        let printer = printer.clone();
        let payload = match handler {
            Handler::Kv => format!("set load {id}"),
            _ => format!("{id}"),
        };
        cluster.request_then(shard, payload, timeout, move |outcome| match outcome {
            Ok(reply) => printer.event(
                "reply",
                json!({ "id": id, "shard": shard, "sent": sent, "owner": reply.node.as_str(), "epoch": reply.epoch }),
            ),
            Err(error) => printer.event(
                "request_failed",
                json!({ "id": id, "shard": shard, "sent": sent, "error": error_kind(&error), "message": error.to_string() }),
            ),
        });
        std::thread::sleep(every);
    }
    issued.load(Ordering::Relaxed)
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
    config.metadata = args.metadata.iter().cloned().collect();
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
        handler: args.handler,
        me: config
            .advertise
            .clone()
            .unwrap_or_else(|| args.listen.clone()),
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
    let cluster = Arc::new(cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let loader = args.request_load_ms.map(|ms| {
        let (cluster, printer, stop) = (cluster.clone(), printer.clone(), stop.clone());
        let timeout = Duration::from_millis(args.request_timeout_ms);
        let handler = args.handler;
        std::thread::spawn(move || {
            load(
                &cluster,
                &printer,
                handler,
                Duration::from_millis(ms),
                timeout,
                &stop,
            )
        })
    });
    // A signal is taken the moment it comes (a leave hands the shard over
    // at once: looking at the signals every 100 ms put 50 ms on average
    // in front of every hand-over), and a node misconfigured for too long
    // gives up: whichever comes first.
    let (stopping, why) = std::sync::mpsc::channel();
    {
        let stopping = stopping.clone();
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _ = stopping.send(Stop::Signal(signal));
            }
        });
    }
    {
        let (cluster, printer, stop) = (cluster.clone(), printer.clone(), stop.clone());
        let refused_exit_after = Duration::from_millis(args.refused_exit_after_ms);
        std::thread::spawn(move || {
            let mut misconfigured_since: Option<Instant> = None;
            while !stop.load(Ordering::Acquire) {
                // Woken by the snapshot that changes whether the node is
                // misconfigured (or by the leave, which ends the wait), and
                // while it is, when it is time to give up. Looking again on
                // a fixed tick woke an idle node ten times a second for
                // nothing: a snapshot that does not change says nothing new.
                let wait = match misconfigured_since {
                    Some(since) if !refused_exit_after.is_zero() => {
                        refused_exit_after.saturating_sub(since.elapsed())
                    }
                    _ => UNCHANGED_WAIT,
                };
                let _ =
                    cluster.wait_for(|s| s.misconfigured != misconfigured_since.is_some(), wait);
                let snapshot = cluster.snapshot();
                match (snapshot.misconfiguration(), misconfigured_since) {
                    (None, _) => misconfigured_since = None,
                    (Some(why), None) => {
                        printer.event("misconfigured", json!({ "reason": why }));
                        misconfigured_since = Some(Instant::now());
                    }
                    (Some(why), Some(since))
                        if !refused_exit_after.is_zero()
                            && since.elapsed() >= refused_exit_after =>
                    {
                        let _ = stopping.send(Stop::Misconfigured(format!(
                            "misconfigured for {refused_exit_after:?}, giving up: {why}"
                        )));
                        return;
                    }
                    (Some(_), Some(_)) => {}
                }
            }
        });
    }
    let signal = match why.recv() {
        Ok(Stop::Signal(signal)) => signal,
        Ok(Stop::Misconfigured(error)) => {
            stop.store(true, Ordering::Release);
            printer.event("leaving", json!({ "reason": "misconfigured" }));
            cluster.leave().map_err(|e| e.to_string())?;
            printer.event("left", json!({}));
            return Err(error);
        }
        Err(_) => return Err("the signal and misconfiguration watchers stopped".into()),
    };
    stop.store(true, Ordering::Release);
    if let Some(loader) = loader {
        let issued = loader.join().unwrap_or(0);
        // Every one of them prints its outcome before `left`.
        printer.event("requests", json!({ "issued": issued }));
    }
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

/// Why the node stops.
enum Stop {
    Signal(i32),
    Misconfigured(String),
}

/// The misconfiguration watcher's wait while there is no deadline to give
/// up at: any length will do (it is woken by a change), short enough that
/// `Instant + wait` cannot overflow.
const UNCHANGED_WAIT: Duration = Duration::from_secs(3600);
