//! Options shared by the subcommands: the cookie and the timings.

use std::path::PathBuf;
use std::time::Duration;

use minishard::{Timings, TlsFiles};

/// Where the cluster's cookie comes from.
#[derive(clap::Args, Clone, Debug)]
pub struct CookieArgs {
    /// Read the cookie from this file (a trailing newline is ignored).
    #[arg(long, value_name = "PATH")]
    pub cookie_file: Option<PathBuf>,
    /// The cookie itself.
    #[arg(
        long = "cookie-env",
        env = "MINISHARD_COOKIE",
        hide = true,
        hide_env_values = true
    )]
    pub cookie_env: Option<String>,
}

impl CookieArgs {
    /// The cookie; refuses to go on without one.
    pub fn load(&self) -> Result<Vec<u8>, String> {
        let cookie = match (&self.cookie_file, &self.cookie_env) {
            (Some(path), _) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read the cookie file {}: {e}", path.display()))?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                bytes
            }
            (None, Some(value)) => value.clone().into_bytes(),
            (None, None) => {
                return Err("no cookie: pass --cookie-file PATH or set MINISHARD_COOKIE".into())
            }
        };
        if cookie.is_empty() {
            return Err("the cookie is empty".into());
        }
        Ok(cookie)
    }
}

/// Protocol timings, each defaulting to docs/design.md section 10.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TimingArgs {
    /// How often each connection carries a heartbeat.
    #[arg(long, value_name = "MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Silence after which a connection is lost.
    #[arg(long, value_name = "MS")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// How long too few members may last before the node is degraded.
    #[arg(long, value_name = "MS")]
    pub transition_timeout_ms: Option<u64>,
    /// How long a lost peer's shard stays reserved to it.
    #[arg(long, value_name = "MS")]
    pub node_grace_ms: Option<u64>,
    /// How long a standby's pairing with a free shard must hold before it claims it.
    #[arg(long, value_name = "MS")]
    pub settle_ms: Option<u64>,
    /// How often the member list is asked for again.
    #[arg(long, value_name = "MS")]
    pub member_poll_ms: Option<u64>,
}

impl TimingArgs {
    pub fn timings(&self) -> Timings {
        let mut t = Timings::default();
        let set = |slot: &mut Duration, ms: Option<u64>| {
            if let Some(ms) = ms {
                *slot = Duration::from_millis(ms);
            }
        };
        set(&mut t.heartbeat_interval, self.heartbeat_interval_ms);
        set(&mut t.heartbeat_timeout, self.heartbeat_timeout_ms);
        set(&mut t.transition_timeout, self.transition_timeout_ms);
        set(&mut t.node_grace, self.node_grace_ms);
        set(&mut t.settle, self.settle_ms);
        set(&mut t.member_poll, self.member_poll_ms);
        t
    }
}

/// Mutual TLS between the nodes: all three files, or none.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// This node's certificate (PEM), signed by the cluster's CA; a
    /// member's must be valid for the host of its advertised address.
    #[arg(long, value_name = "PATH", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "PATH", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): peers must present one it signed.
    #[arg(long, value_name = "PATH", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        }
    }
}
