//! `minishard_config`: the settings of one join, built with setters.
//!
//! Setters check what can be checked alone (a value is not zero, a limit is
//! in its range, an address parses); what depends on several settings
//! together (timings in the right order) is checked by `minishard_join`,
//! with the same messages as the Rust API.

use std::ffi::{c_char, c_int, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use minishard::{settings, Config, Dispatch, Quorum, TlsFiles};

use crate::buffer::{mut_arg, str_arg};
use crate::error::{call, minishard_result, Failure, Outcome};

/// Settings for one node in one cluster: an opaque handle.
///
/// Create it with `minishard_config_new`, free it with
/// `minishard_config_free`. `minishard_join` copies what it needs, so a
/// configuration can be freed right after the join, or reused for more
/// joins. A configuration is not synchronised: do not change it from two
/// threads at once.
pub struct minishard_config {
    pub(crate) config: Config,
}

/// Where callbacks run (see `minishard_config_set_dispatch`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum minishard_dispatch_mode {
    /// Callbacks run on a callback thread the handle owns (the default).
    MINISHARD_DISPATCH_THREAD = 0,
    /// Callbacks run only inside `minishard_dispatch`, on the caller's
    /// thread; `minishard_event_fd` becomes readable when some are pending.
    MINISHARD_DISPATCH_HOST = 1,
}

/// A `minishard_dispatch_mode` as C passes it in: any `uint32_t`.
#[allow(non_camel_case_types)]
pub type minishard_dispatch_mode_code = u32;

/// Which members a node must see to hold shards (see
/// `minishard_config_set_quorum`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum minishard_quorum {
    /// At least `shard_count` members (the default): both sides of a split
    /// with members enough keep their shards, and the conflict is resolved
    /// by score when they meet.
    MINISHARD_QUORUM_ANY = 0,
    /// A strict majority of the member list too: at most one side of a
    /// split holds shards, and no two nodes ever hold a shard at once.
    MINISHARD_QUORUM_MAJORITY = 1,
}

/// A `minishard_quorum` as C passes it in: any `uint32_t`.
#[allow(non_camel_case_types)]
pub type minishard_quorum_code = u32;

/// A new configuration with the defaults (README's configuration table), except
/// that the listen address and the cookie are empty: set both before
/// joining.
///
/// Returns NULL only if minishard panicked (see `minishard_last_error`).
/// Free it with `minishard_config_free`. Any thread.
#[no_mangle]
pub extern "C" fn minishard_config_new() -> *mut minishard_config {
    crate::panic::boundary(|| {
        Box::into_raw(Box::new(minishard_config {
            config: Config::new(String::new(), Vec::new()),
        }))
    })
}

/// Frees a configuration. NULL is a no-op.
///
/// # Safety
///
/// `cfg` must be NULL or a configuration from `minishard_config_new` not yet
/// freed, in use by no other thread.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_free(cfg: *mut minishard_config) {
    crate::panic::boundary(|| {
        if !cfg.is_null() {
            // SAFETY: `cfg` came from `Box::into_raw` in `minishard_config_new`
            // and is freed once, by the caller's contract.
            drop(unsafe { Box::from_raw(cfg) });
        }
    })
}

/// Runs a setter's body on the configuration behind `cfg`.
///
/// # Safety
///
/// `cfg` must be NULL or a live configuration used by no other thread.
unsafe fn set(
    cfg: *mut minishard_config,
    body: impl FnOnce(&mut Config) -> Outcome,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live and unshared, by the caller's contract.
        let cfg = unsafe { mut_arg(cfg, "cfg") }?;
        body(&mut cfg.config)
    })
}

/// Sets the address to listen on, `"host:port"` (e.g. `"0.0.0.0:7001"`,
/// `"[::1]:7001"`). This is also the node's advertised address, the one in
/// the member list, unless `minishard_config_set_advertise` says otherwise.
/// Port 0 picks a free port (then the advertised address is the one bound,
/// see `minishard_node_id`).
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for NULL or non-UTF-8,
/// `MINISHARD_CONFIG` for an address that does not parse; the configuration
/// is then unchanged.
///
/// # Safety
///
/// `cfg`: a live configuration; `listen`: NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_listen(
    cfg: *mut minishard_config,
    listen: *const c_char,
) -> minishard_result {
    let body = |config: &mut Config| {
        // SAFETY: NULL or NUL-terminated, by the caller's contract.
        let listen = unsafe { str_arg(listen, "listen") }?;
        // A default configuration is valid apart from these two, so any
        // complaint is about the address.
        Config::new(listen, b"x".to_vec()).validate()?;
        config.listen = listen.to_owned();
        Ok(())
    };
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set(cfg, body) }
}

/// Sets the address peers know this node by, `"host:port"`, when it is not
/// the listen address (behind NAT, or listening on `0.0.0.0`). NULL goes
/// back to advertising the listen address.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for non-UTF-8, `MINISHARD_CONFIG`
/// for an address that does not parse (port 0 included).
///
/// # Safety
///
/// `cfg`: a live configuration; `advertise`: NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_advertise(
    cfg: *mut minishard_config,
    advertise: *const c_char,
) -> minishard_result {
    let body = |config: &mut Config| {
        if advertise.is_null() {
            config.advertise = None;
            return Ok(());
        }
        // SAFETY: non-NULL and NUL-terminated, by the caller's contract.
        let advertise = unsafe { str_arg(advertise, "advertise") }?;
        minishard::NodeId::parse(advertise)
            .map_err(|e| Failure::new(minishard_result::MINISHARD_CONFIG, e))?;
        config.advertise = Some(advertise.to_owned());
        Ok(())
    };
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set(cfg, body) }
}

/// Sets the cluster's shared secret: `len` bytes at `cookie`, copied. Every
/// node of a cluster needs the same one. It must not be empty.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `cookie`,
/// `MINISHARD_CONFIG` for `len` 0.
///
/// # Safety
///
/// `cfg`: a live configuration; `cookie`: NULL or `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_cookie(
    cfg: *mut minishard_config,
    cookie: *const u8,
    len: usize,
) -> minishard_result {
    let body = |config: &mut Config| {
        if cookie.is_null() {
            return Err(Failure::invalid("cookie is NULL"));
        }
        if len == 0 {
            return Err(Failure::new(
                minishard_result::MINISHARD_CONFIG,
                "the cookie is empty: every node of a cluster needs the same non-empty secret",
            ));
        }
        // SAFETY: `cookie` is non-NULL with `len` readable bytes, by the
        // caller's contract; they are copied before returning.
        config.cookie = unsafe { std::slice::from_raw_parts(cookie, len) }.to_vec();
        Ok(())
    };
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set(cfg, body) }
}

/// Joins as an observer (`observer` non-zero): the node sees the shard map
/// but never hosts a shard, and need not be in the member list. Default 0.
///
/// # Safety
///
/// `cfg`: a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_observer(
    cfg: *mut minishard_config,
    observer: c_int,
) -> minishard_result {
    // SAFETY: the caller's contract covers `cfg`.
    unsafe {
        set(cfg, |config| {
            config.observer = observer != 0;
            Ok(())
        })
    }
}

/// Sets where callbacks run: `MINISHARD_DISPATCH_THREAD` (the default) or
/// `MINISHARD_DISPATCH_HOST`.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for any other value.
///
/// # Safety
///
/// `cfg`: a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_dispatch(
    cfg: *mut minishard_config,
    dispatch: minishard_dispatch_mode_code,
) -> minishard_result {
    // SAFETY: the caller's contract covers `cfg`.
    unsafe {
        set(cfg, |config| {
            config.dispatch = match dispatch {
                d if d == minishard_dispatch_mode::MINISHARD_DISPATCH_THREAD as u32 => {
                    Dispatch::Thread
                }
                d if d == minishard_dispatch_mode::MINISHARD_DISPATCH_HOST as u32 => Dispatch::Host,
                other => {
                    return Err(Failure::invalid(format_args!(
                        "dispatch must be MINISHARD_DISPATCH_THREAD or MINISHARD_DISPATCH_HOST, not {other}"
                    )))
                }
            };
            Ok(())
        })
    }
}

/// Sets which members this node must see to hold or claim a shard:
/// `MINISHARD_QUORUM_ANY` (default MINISHARD_QUORUM_ANY): at least
/// `shard_count`; or `MINISHARD_QUORUM_MAJORITY`: a strict majority of the
/// member list as well (more than half, this node included), so that at
/// most one side of a network split keeps shards and no two nodes ever
/// hold a shard at the same instant. The side without a majority becomes
/// degraded and gives its shard up, even with `shard_count` members.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for any other value; the
/// configuration is then unchanged.
///
/// # Safety
///
/// `cfg`: a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_quorum(
    cfg: *mut minishard_config,
    quorum: minishard_quorum_code,
) -> minishard_result {
    // SAFETY: the caller's contract covers `cfg`.
    unsafe {
        set(cfg, |config| {
            config.quorum = match quorum {
                q if q == minishard_quorum::MINISHARD_QUORUM_ANY as u32 => Quorum::Any,
                q if q == minishard_quorum::MINISHARD_QUORUM_MAJORITY as u32 => Quorum::Majority,
                other => {
                    return Err(Failure::invalid(format_args!(
                    "quorum must be MINISHARD_QUORUM_ANY or MINISHARD_QUORUM_MAJORITY, not {other}"
                )))
                }
            };
            Ok(())
        })
    }
}

/// Sets the numeric setting `name` of `cfg` (declared in
/// `minishard::settings`), refusing at once a value out of its range, with
/// the message the Rust API gives but naming the C setter's setting
/// (`heartbeat_interval_ms`).
///
/// # Safety
///
/// `cfg` must be NULL or a live configuration used by no other thread.
unsafe fn set_setting(cfg: *mut minishard_config, name: &str, value: u64) -> minishard_result {
    let body = |config: &mut Config| {
        let setting = settings::setting(name).expect("every C setter names a declared setting");
        let label = setting.c_setter();
        let label = label.trim_start_matches("minishard_config_set_");
        setting.check(value).map_err(|why| {
            Failure::new(
                minishard_result::MINISHARD_CONFIG,
                format_args!("{label} {why}"),
            )
        })?;
        config.set(name, value)?;
        Ok(())
    };
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set(cfg, body) }
}

/// How often each connection carries a heartbeat, in milliseconds
/// (default 100).
///
/// Errors: `MINISHARD_CONFIG` for 0 or over a day (86400000). The order of the timings is checked at
/// join (`heartbeat_interval < heartbeat_timeout`, `transition_timeout +
/// heartbeat_interval <= node_grace`).
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_heartbeat_interval_ms(
    cfg: *mut minishard_config,
    ms: u64,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "heartbeat_interval", ms) }
}

/// Silence after which a peer is suspect, in milliseconds (default 500).
///
/// Errors: `MINISHARD_CONFIG` for 0 or over a day (86400000). The order of the timings is checked at
/// join (`heartbeat_interval < heartbeat_timeout`, `transition_timeout +
/// heartbeat_interval <= node_grace`).
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_heartbeat_timeout_ms(
    cfg: *mut minishard_config,
    ms: u64,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "heartbeat_timeout", ms) }
}

/// How long too few visible members may last before this node is
/// degraded and gives its shard up, in milliseconds (default 1000).
///
/// Errors: `MINISHARD_CONFIG` for 0 or over a day (86400000). The order of the timings is checked at
/// join (`heartbeat_interval < heartbeat_timeout`, `transition_timeout +
/// heartbeat_interval <= node_grace`).
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_transition_timeout_ms(
    cfg: *mut minishard_config,
    ms: u64,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "transition_timeout", ms) }
}

/// How long a lost peer's shard stays reserved to it, in milliseconds
/// (default 1500).
///
/// Errors: `MINISHARD_CONFIG` for 0 or over a day (86400000). The order of the timings is checked at
/// join (`heartbeat_interval < heartbeat_timeout`, `transition_timeout +
/// heartbeat_interval <= node_grace`).
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_node_grace_ms(
    cfg: *mut minishard_config,
    ms: u64,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "node_grace", ms) }
}

/// How long a standby's pairing with a free shard must hold before it
/// claims the shard, in milliseconds (default 20).
///
/// Errors: `MINISHARD_CONFIG` for 0 or over a day (86400000). The order of the timings is checked at
/// join (`heartbeat_interval < heartbeat_timeout`, `transition_timeout +
/// heartbeat_interval <= node_grace`).
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_settle_ms(
    cfg: *mut minishard_config,
    ms: u64,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "settle", ms) }
}

/// How long a `score` callback may take before its owner loses the
/// conflict, in milliseconds (default 1000).
///
/// Errors: `MINISHARD_CONFIG` for 0 or over a day (86400000). The order of the timings is checked at
/// join (`heartbeat_interval < heartbeat_timeout`, `transition_timeout +
/// heartbeat_interval <= node_grace`).
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_score_deadline_ms(
    cfg: *mut minishard_config,
    ms: u64,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "score_deadline", ms) }
}

/// How often the `nodes` callback is asked for the member list again, in
/// milliseconds (default 5000).
///
/// Errors: `MINISHARD_CONFIG` for 0 or over a day (86400000). The order of the timings is checked at
/// join (`heartbeat_interval < heartbeat_timeout`, `transition_timeout +
/// heartbeat_interval <= node_grace`).
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_member_poll_ms(
    cfg: *mut minishard_config,
    ms: u64,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "member_poll", ms) }
}

/// Back-off after a failed `allocated` before this node takes a shard
/// again, in milliseconds (default 1000).
///
/// Errors: `MINISHARD_CONFIG` for 0 or over a day (86400000). The order of the timings is checked at
/// join (`heartbeat_interval < heartbeat_timeout`, `transition_timeout +
/// heartbeat_interval <= node_grace`).
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_allocation_retry_ms(
    cfg: *mut minishard_config,
    ms: u64,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "allocation_retry", ms) }
}

/// The largest frame a peer may send once authenticated, in bytes (default
/// 1048576, 1 MiB); a larger one closes the connection. Before the
/// handshake is done the limit is 16 KiB whatever this says.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `cfg`, `MINISHARD_CONFIG`
/// for a value outside 4096 to 67108864 (64 MiB); the configuration is then
/// unchanged.
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_frame_limit(
    cfg: *mut minishard_config,
    bytes: usize,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "frame_limit", bytes as u64) }
}

/// How long a connection may take to authenticate, TLS included, in
/// milliseconds (default 2000); a client that has not by then is dropped.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `cfg`, `MINISHARD_CONFIG`
/// for 0 or over a day (86400000).
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_handshake_timeout_ms(
    cfg: *mut minishard_config,
    ms: u64,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "handshake_timeout", ms) }
}

/// How many connections may be in their handshake at once on this node's
/// listener (default 256); more are closed at once.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `cfg`, `MINISHARD_CONFIG`
/// for 0 or more than 65536.
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_max_handshakes(
    cfg: *mut minishard_config,
    n: usize,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "max_handshakes", n as u64) }
}

/// How many connections from one source IP address may be in their
/// handshake at once on this node's listener (default 16); more are closed
/// at once.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `cfg`, `MINISHARD_CONFIG`
/// for 0 or more than 65536.
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_max_handshakes_per_source(
    cfg: *mut minishard_config,
    n: usize,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "max_handshakes_per_source", n as u64) }
}

/// How many frames may wait to be sent to one peer (default 4096); a peer
/// that falls further behind is disconnected ("send queue full: peer too
/// slow") rather than buffered.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `cfg`, `MINISHARD_CONFIG`
/// for fewer than 64 (a new connection starts with a burst of frames that
/// must fit) or more than 1048576.
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_send_queue(
    cfg: *mut minishard_config,
    frames: usize,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "send_queue", frames as u64) }
}

/// Turns on mutual TLS between the nodes: `cert_path` is this node's
/// certificate (PEM, its chain after it), `key_path` its private key (PEM),
/// `ca_path` the cluster's CA certificate (PEM). Every node of the cluster
/// needs a certificate from that CA; a member's must also be valid for the
/// host of its advertised address (an IP SAN for an IP address). The
/// cookie is still checked on top. Three NULLs turn TLS off again.
///
/// The files are read and checked by `minishard_join`, which fails with
/// `MINISHARD_CONFIG` and a message naming the file for one that cannot be
/// read, is not PEM, holds a key that does not fit the certificate, or a
/// certificate the CA did not sign.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` when some but not all three are
/// NULL, or for an empty path; the configuration is then unchanged.
///
/// # Safety
///
/// `cfg`: a live configuration; each path NULL or a NUL-terminated string
/// (any bytes but NUL: paths need not be UTF-8).
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_tls(
    cfg: *mut minishard_config,
    cert_path: *const c_char,
    key_path: *const c_char,
    ca_path: *const c_char,
) -> minishard_result {
    let body = |config: &mut Config| {
        let paths = [
            (cert_path, "cert_path"),
            (key_path, "key_path"),
            (ca_path, "ca_path"),
        ];
        if paths.iter().all(|(p, _)| p.is_null()) {
            config.tls = None;
            return Ok(());
        }
        let mut files = Vec::with_capacity(3);
        for (ptr, what) in paths {
            if ptr.is_null() {
                return Err(Failure::invalid(format_args!(
                    "{what} is NULL: TLS needs a certificate, a key and a CA (or three NULLs to turn it off)"
                )));
            }
            // SAFETY: non-NULL and NUL-terminated, by the caller's contract.
            let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
            if bytes.is_empty() {
                return Err(Failure::invalid(format_args!("{what} is empty")));
            }
            files.push(PathBuf::from(OsStr::from_bytes(bytes)));
        }
        let [cert, key, ca]: [PathBuf; 3] = files.try_into().expect("three paths");
        config.tls = Some(TlsFiles { cert, key, ca });
        Ok(())
    };
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set(cfg, body) }
}

/// Adds `key = value` to the metadata this node publishes with its record
/// (replacing the value of a key set before; a NULL `value` removes the
/// key). Other nodes read it with `minishard_node_metadata`, and
/// `minishard_status_json` shows it: e.g. `"http" = "10.0.0.1:8080"`, for
/// applications that route with their own transport. At most 64 entries
/// and 4096 bytes of keys and values together; keys are 1 to 128 bytes
/// without control characters.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `cfg` or `key`, or
/// non-UTF-8; `MINISHARD_CONFIG` when the entry breaks a limit; the
/// configuration is then unchanged.
///
/// # Safety
///
/// `cfg`: NULL or a live configuration; `key`: NULL or a NUL-terminated
/// string; `value`: NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_metadata(
    cfg: *mut minishard_config,
    key: *const c_char,
    value: *const c_char,
) -> minishard_result {
    let body = |config: &mut Config| {
        // SAFETY: NULL or NUL-terminated, by the caller's contract.
        let key = unsafe { str_arg(key, "key") }?;
        let mut metadata = config.metadata.clone();
        if value.is_null() {
            metadata.remove(key);
        } else {
            // SAFETY: non-NULL and NUL-terminated, by the caller's contract.
            let value = unsafe { str_arg(value, "value") }?;
            metadata.insert(key.to_owned(), value.to_owned());
        }
        minishard::validate_metadata(&metadata)?;
        config.metadata = metadata;
        Ok(())
    };
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set(cfg, body) }
}

/// How many requests this handle may have in flight at once
/// (default 4096 requests): waiting for an owner, sent, or queued for its own handler; beyond
/// it `minishard_request` fails with `MINISHARD_OVERLOADED` at once. Also
/// the most requests from all peers that may wait here for this node's
/// `handle_request`.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `cfg`, `MINISHARD_CONFIG`
/// for 0 or more than 1048576.
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_max_requests_in_flight(
    cfg: *mut minishard_config,
    n: usize,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "max_requests_in_flight", n as u64) }
}

/// How many requests may be in flight to one peer, and wait here from one
/// peer for `handle_request` (default 1024 requests); beyond it
/// `MINISHARD_OVERLOADED`.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `cfg`, `MINISHARD_CONFIG`
/// for 0 or more than 1048576.
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_max_requests_per_peer(
    cfg: *mut minishard_config,
    n: usize,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "max_requests_per_peer", n as u64) }
}

/// How long a next owner's `allocated` (or a conflict winner's `prolonged`)
/// waits for a hand-off still arriving, in milliseconds (default 1000);
/// see docs/design.md 11.8.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `cfg`, `MINISHARD_CONFIG`
/// for 0 or over a day (86400000).
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_hand_off_wait_ms(
    cfg: *mut minishard_config,
    ms: u64,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "hand_off_wait", ms) }
}

/// The largest hand-off this node takes, in bytes (default 67108864); a
/// larger one is refused and the next owner gets none.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `cfg`, `MINISHARD_CONFIG`
/// for more than 1073741824.
///
/// # Safety
///
/// `cfg`: NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn minishard_config_set_hand_off_limit(
    cfg: *mut minishard_config,
    bytes: usize,
) -> minishard_result {
    // SAFETY: NULL or a live, unshared configuration, by the caller's contract.
    unsafe { set_setting(cfg, "hand_off_limit", bytes as u64) }
}
