//! The `minishard` command: a narrated local demo, one node of a real
//! cluster, a status probe, and (built with the `testing` feature)
//! benchmarks.

mod app;
#[cfg(feature = "testing")]
mod bench;
#[cfg(feature = "testing")]
mod bench_conditions;
#[cfg(feature = "testing")]
mod bench_processes;
#[cfg(feature = "testing")]
mod bench_requests;
mod demo;
mod local;
mod node;
mod options;
mod request;
mod status;
mod switch;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "minishard",
    version,
    about = "Keep a fixed set of shards alive across a cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local cluster in this process and narrate cold start, failover,
    /// leave, a 3/2 split and a 3/3 split healed by score.
    Demo(demo::Args),
    /// Run one member of a cluster and print its events.
    Node(node::Args),
    /// Join a cluster as an observer, print its state, and exit.
    Status(status::Args),
    /// Join a cluster as an observer, send one request to a shard's owner,
    /// print the reply, and exit.
    Request(request::Args),
    /// Measure start-up, failover, hand-over and lookup costs on loopback
    /// (only in a build with the test hooks, which it crashes nodes with:
    /// `cargo run --release -p minishard --features testing -- bench`).
    #[cfg(feature = "testing")]
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Node(_) => "minishard=info",
        // The bench floods a node on purpose: a warning per refused
        // connection would bury the table.
        #[cfg(feature = "testing")]
        Command::Bench(_) => "minishard=error",
        _ => "minishard=warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: logs piped to a file or
        // a collector stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Node(args) => node::run(args),
        Command::Status(args) => status::run(args),
        Command::Request(args) => request::run(args),
        #[cfg(feature = "testing")]
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("minishard: {error}");
            ExitCode::FAILURE
        }
    }
}
