//! `minishard request`: join as an observer through one node, send one
//! request to a shard's owner, print the reply, and leave.

use std::time::Duration;

use minishard::{Cluster, Config};
use serde_json::json;

use crate::node::error_kind;
use crate::options::{CookieArgs, SettingArgs, TlsArgs};
use crate::status::Watch;

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
    /// The shard whose owner gets the request.
    #[arg(long)]
    shard: u32,
    #[command(flatten)]
    cookie: CookieArgs,
    #[command(flatten)]
    settings: SettingArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// How long to wait for the reply, waiting for an owner included.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    timeout_ms: u64,
    /// Print one JSON object: the reply, the node that answered and its
    /// epoch, or the error.
    #[arg(long)]
    json: bool,
    /// What to send (as UTF-8 bytes).
    data: String,
}

pub fn run(args: Args) -> Result<(), String> {
    let mut config = Config::new(args.listen.clone(), args.cookie.load()?);
    config.observer = true;
    args.settings.apply(&mut config)?;
    config.tls = args.tls.files();
    let watch = Watch {
        connect: args.connect.clone(),
    };
    let cluster = Cluster::join(&args.cluster, watch, config).map_err(|e| e.to_string())?;
    let outcome = cluster.request(
        args.shard,
        args.data.clone().into_bytes(),
        Duration::from_millis(args.timeout_ms),
    );
    cluster.leave().map_err(|e| e.to_string())?;
    match outcome {
        Ok(reply) => {
            let text = String::from_utf8_lossy(&reply.payload);
            if args.json {
                let out = json!({
                    "shard": args.shard,
                    "node": reply.node.as_str(),
                    "epoch": reply.epoch,
                    "reply": text,
                });
                println!("{out}");
            } else {
                println!("{text}");
            }
            Ok(())
        }
        Err(error) => {
            if args.json {
                let out = json!({
                    "shard": args.shard,
                    "error": error_kind(&error),
                    "message": error.to_string(),
                });
                println!("{out}");
            }
            Err(format!("request to shard {}: {error}", args.shard))
        }
    }
}
