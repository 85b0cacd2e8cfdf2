//! `minishard_cluster`: joining, leaving and freeing, lookups, waits and
//! host dispatch.
//!
//! A handle wraps a Rust [`Cluster`], whose methods are all safe from any
//! thread; what this module adds is checking what C hands in and refusing
//! the calls that would wait on the very callback that makes them.

use std::ffi::{c_char, c_int};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use minishard::{Cluster, Dispatch, Error, Stats};
use serde::Serialize;

use crate::buffer::{fill, mut_arg, ref_arg, str_arg};
use crate::callbacks::{in_callback_of, minishard_callbacks, Taken};
use crate::config::minishard_config;
use crate::error::{call, minishard_result, set_last_error, Failure, Outcome};
use crate::health::{health_from_code, minishard_health, minishard_health_code};

/// One node's membership of one cluster: an opaque handle from
/// `minishard_join`, freed with `minishard_cluster_free`.
///
/// Every function taking a `const minishard_cluster *` may be called from
/// any thread at any time, concurrently, until `minishard_cluster_free`;
/// lookups take no lock and never wait on the network.
pub struct minishard_cluster {
    pub(crate) cluster: Cluster,
    /// Tells this handle's callbacks apart from other handles' on a thread.
    pub(crate) id: u64,
    dispatch: Dispatch,
    /// Set once `minishard_leave` has returned: lookups answer
    /// `MINISHARD_CLOSED` rather than a frozen view.
    left: AtomicBool,
    /// Marks what this handle logs on the caller's threads (dispatch,
    /// leave), so its lines reach its own log callback.
    pub(crate) span: tracing::Span,
}

impl minishard_cluster {
    /// Ends a handle: the Rust `Cluster` leaves (unless `crash` says it is
    /// already stopped) and stops the engine, its lines still reaching the
    /// handle's log callback; then nothing of it logs any more, and its log
    /// sink (with it the last hold on user_data) goes.
    pub(crate) fn end(self: Box<Self>, crash: bool) {
        let (id, span) = (self.id, self.span.clone());
        span.in_scope(|| {
            #[cfg(feature = "testing")]
            if crash {
                self.cluster.crash();
            }
            #[cfg(not(feature = "testing"))]
            let _ = crash;
            drop(self);
        });
        crate::log::detach_handle(id);
    }
}

/// Counters since join (docs/design.md section 4).
///
/// It grows by the header's rule for growing structs: set `struct_size`
/// before `minishard_get_stats` (`minishard_stats s = { .struct_size =
/// sizeof s };`); the library fills only the counters that fit in it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct minishard_stats {
    /// Required: `sizeof(minishard_stats)` as your header declares it.
    pub struct_size: usize,
    /// `allocated` callbacks that returned successfully.
    pub allocations: u64,
    /// `deallocated` callbacks sent.
    pub deallocations: u64,
    /// Conflicts this node decided.
    pub conflicts_resolved: u64,
    /// Callbacks that failed or were late.
    pub failed_callbacks: u64,
    /// Peer messages ignored as senseless in the current state.
    pub ignored_messages: u64,
    /// Connections established after the first to the same peer.
    pub reconnects: u64,
    /// Handshakes refused (wrong cookie, cluster, version, unknown node, ...).
    pub refused_handshakes: u64,
    /// Connections closed for a malformed, oversized or unexpected frame.
    pub protocol_errors: u64,
    /// The latest heartbeat round trip to any peer, in microseconds.
    pub heartbeat_rtt_micros: u64,
}

// SAFETY: repr(C), `struct_size` first, all-zero is valid (integers); the
// boundaries are its fields' offsets.
unsafe impl crate::growing::GrowingStruct for minishard_stats {
    const NAME: &'static str = "minishard_stats";
    const BOUNDARIES: &'static [usize] = crate::growing::boundaries!(minishard_stats;
        allocations, deallocations, conflicts_resolved, failed_callbacks, ignored_messages,
        reconnects, refused_handshakes, protocol_errors, heartbeat_rtt_micros);
    /// Any size that holds `struct_size`: the library writes what fits.
    const MIN_SIZE: usize = std::mem::size_of::<usize>();
}

impl From<Stats> for minishard_stats {
    fn from(s: Stats) -> minishard_stats {
        minishard_stats {
            struct_size: std::mem::size_of::<minishard_stats>(),
            allocations: s.allocations,
            deallocations: s.deallocations,
            conflicts_resolved: s.conflicts_resolved,
            failed_callbacks: s.failed_callbacks,
            ignored_messages: s.ignored_messages,
            reconnects: s.reconnects,
            refused_handshakes: s.refused_handshakes,
            protocol_errors: s.protocol_errors,
            heartbeat_rtt_micros: s.heartbeat_rtt_micros,
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A live handle argument.
///
/// # Safety
///
/// `cluster` must be NULL or a handle from `minishard_join` not yet freed.
unsafe fn handle<'a>(cluster: *const minishard_cluster) -> Result<&'a minishard_cluster, Failure> {
    // SAFETY: NULL or live, by the caller's contract; handles are only read
    // through shared references (their state is atomics and the Rust
    // `Cluster`, which is Sync).
    unsafe { ref_arg(cluster, "cluster") }
}

fn not_from_own_callback(handle: &minishard_cluster, what: &str) -> Outcome {
    if in_callback_of(handle.id) {
        return Err(Failure::invalid(format_args!(
            "{what} cannot be called from inside a callback of the same handle: it waits for callbacks to finish"
        )));
    }
    Ok(())
}

fn open(handle: &minishard_cluster) -> Outcome {
    if handle.left.load(Ordering::Acquire) {
        return Err(Failure::from(Error::Closed));
    }
    Ok(())
}

/// Joins `cluster` as the node configured in `cfg`, with the application's
/// callbacks `cb`, and stores the new handle in `*out`.
///
/// Calls `nodes` and `shard_count` (with `MINISHARD_DISPATCH_THREAD` on a
/// thread of its own; with `MINISHARD_DISPATCH_HOST` on the calling thread,
/// so a single-threaded host can call it synchronously), checks their
/// answers and the configuration together, binds the listener and starts
/// the engine; it does not wait for the cluster to be available (see
/// `minishard_wait_until`). `cfg` and `cb` are copied: free or reuse them
/// right after.
///
/// Ownership of `user_data`: if `cb` is not NULL, the handle owns
/// `cb->user_data` from this call on, whatever it returns: on failure,
/// `free_user_data` has been called before `minishard_join` returns.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` (a NULL pointer, a non-UTF-8 or
/// empty `cluster`, a required callback missing, a `cb->struct_size` not
/// set or from a newer header with fields this library does not know, a
/// `log_max_level` that is not a level), `MINISHARD_CONFIG` (a bad
/// setting; `shard_count` <= 0, above `UINT32_MAX` or above the number of
/// members; a member address that does not parse; this node missing from
/// the member list), `MINISHARD_IO` (e.g. the listen address is in use),
/// `MINISHARD_CALLBACK_FAILED` (`nodes` returned an error). On failure
/// `*out` is set to NULL and nothing is left running. Any thread, including
/// a callback of another handle.
///
/// Signals: the threads minishard starts (network, callback) run with
/// SIGPIPE blocked, so a peer closing a connection mid-write never kills the
/// process; the caller's threads and signal handlers are not changed.
///
/// # Safety
///
/// `cluster`: NULL or a NUL-terminated string; `cfg`: NULL or a live
/// configuration; `cb`: NULL or a `minishard_callbacks` readable for its
/// `struct_size` bytes, whose function pointers are NULL or valid functions
/// of the matching types;
/// `out`: NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn minishard_join(
    cluster: *const c_char,
    cfg: *const minishard_config,
    cb: *const minishard_callbacks,
    out: *mut *mut minishard_cluster,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or writable, by the caller's contract.
        let mut out = unsafe { mut_arg(out, "out") };
        if let Ok(out) = out.as_mut() {
            **out = std::ptr::null_mut();
        }
        if cb.is_null() {
            return Err(Failure::invalid("cb is NULL"));
        }
        // SAFETY: readable for its struct_size, by the caller's contract.
        let (cb, layout) = unsafe { crate::growing::read_in(cb) };
        // From here on user_data is ours: every early return frees it.
        let taken = Taken::new(&cb);
        layout?;
        let out = out?;
        // SAFETY: NULL or NUL-terminated, by the caller's contract.
        let name = unsafe { str_arg(cluster, "cluster") }?;
        // SAFETY: NULL or live, by the caller's contract.
        let cfg = unsafe { ref_arg(cfg, "cfg") }?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let log = taken.log_sink()?;
        let app = taken.into_app(name, id)?;
        let bad_answer = app.bad_answer.clone();
        let config = cfg.config.clone();
        let dispatch = config.dispatch;
        if let Some(log) = log {
            crate::log::attach_handle(id, log)?;
        }
        // Everything the join starts (the engine's and the callback
        // threads) runs inside the handle's span.
        let span = crate::log::handle_span(id);
        // The engine's threads inherit this thread's signal mask: start them
        // with SIGPIPE blocked (see signals.rs), then restore ours.
        let sigpipe = crate::signals::SigpipeBlocked::new();
        let joined = span.in_scope(|| Cluster::join(name, app, config));
        drop(sigpipe);
        if joined.is_err() {
            // The callbacks are gone; this frees user_data.
            crate::log::detach_handle(id);
        }
        let cluster = joined.map_err(|error| {
            let bad = bad_answer.lock().unwrap_or_else(|p| p.into_inner()).take();
            match (&error, bad) {
                (Error::Callback { .. }, Some(message)) => Failure::new(
                    minishard_result::MINISHARD_CONFIG,
                    format_args!("configuration error: {message}"),
                ),
                _ => Failure::from(error),
            }
        })?;
        *out = Box::into_raw(Box::new(minishard_cluster {
            cluster,
            id,
            dispatch,
            left: AtomicBool::new(false),
            span,
        }));
        Ok(())
    })
}

/// Leaves the cluster gracefully: the shard is handed over at once
/// (docs/design.md 6.4). Returns once `deallocated` has run and every connection
/// is closed. Calling it again returns `MINISHARD_OK` and does nothing.
/// After it, lookups, waits and dispatch return `MINISHARD_CLOSED`; the
/// handle must still be freed with `minishard_cluster_free`.
///
/// With `MINISHARD_DISPATCH_HOST`, the leave's callbacks run inside this
/// call, on the calling thread.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for NULL, or when called from inside
/// a callback of this handle. Any other thread.
///
/// # Safety
///
/// `cluster`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn minishard_leave(cluster: *mut minishard_cluster) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { handle(cluster) }?;
        not_from_own_callback(handle, "minishard_leave")?;
        handle.span.in_scope(|| handle.cluster.leave())?;
        handle.left.store(true, Ordering::Release);
        Ok(())
    })
}

/// Frees a handle, leaving the cluster first if it has not left (as
/// `minishard_leave`), then calls `free_user_data`. NULL is a no-op.
///
/// No other call on this handle may run or start once this one has
/// started. Called from inside a callback of this same handle, it cannot
/// wait for that callback: it does nothing, records the error for
/// `minishard_last_error`, and the handle stays valid (free it later, from
/// another place).
///
/// # Safety
///
/// `cluster`: NULL or a live handle that no other thread uses any more.
#[no_mangle]
pub unsafe extern "C" fn minishard_cluster_free(cluster: *mut minishard_cluster) {
    crate::panic::boundary(|| {
        if cluster.is_null() {
            return;
        }
        // SAFETY: non-NULL and live, by the caller's contract.
        let handle = unsafe { &*cluster };
        if let Err(failure) = not_from_own_callback(handle, "minishard_cluster_free") {
            set_last_error(&failure.message);
            return;
        }
        // SAFETY: the pointer came from `Box::into_raw` in `minishard_join`
        // and is freed once, by the caller's contract. Dropping the Rust
        // `Cluster` leaves and stops the engine; the engine then drops the
        // callbacks, and `end` the log sink, which frees user_data.
        unsafe { Box::from_raw(cluster) }.end(false);
    })
}

/// The owner of `shard` in this node's view, as its `"host:port"`, written
/// into `buf` (`len` bytes) with a terminating NUL. While two claims for a
/// shard are in view, the one a tie would keep.
///
/// `*written` gets the size of the whole address including the NUL, on
/// success and on `MINISHARD_BUFFER_TOO_SMALL` alike (then `buf` gets an
/// empty string if `len` > 0); `buf` may be NULL with `len` 0 to ask the
/// size. Addresses are at most 262 bytes with the NUL, so a 262-byte buffer
/// never fails (`MINISHARD_ADDRESS_MAX`).
///
/// Errors: `MINISHARD_NOT_FOUND` (no owner now; `*written` is 0),
/// `MINISHARD_INVALID_ARGUMENT` (NULL, or `shard` >= the shard count),
/// `MINISHARD_BUFFER_TOO_SMALL`, `MINISHARD_CLOSED` (after leave).
///
/// Any thread, concurrently. Takes no lock, allocates nothing and makes no
/// system call on success: it reads the latest immutable snapshot.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `buf`: NULL or `len` writable bytes;
/// `written`: NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn minishard_get_node(
    cluster: *const minishard_cluster,
    shard: u32,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> minishard_result {
    // SAFETY: the caller's contract is `owner_into`'s.
    call(|| unsafe { owner_into(cluster, shard, buf, len, written, None) })
}

/// The owner of `shard` and its allocation's epoch: the address goes into
/// `buf` exactly as `minishard_get_node` writes it (same `*written`,
/// `MINISHARD_BUFFER_TOO_SMALL` and `MINISHARD_NOT_FOUND` conventions), the
/// epoch into `*epoch` (0 when there is no owner). The epoch is the one the
/// owner's `allocated_with_epoch` got: compare it with the epoch a write
/// carries to fence out a stale owner.
///
/// Errors: as `minishard_get_node`; `MINISHARD_INVALID_ARGUMENT` also for a
/// NULL `epoch`. Any thread; no lock, no allocation.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `buf`: NULL or `len` writable bytes;
/// `written`, `epoch`: NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn minishard_get_owner(
    cluster: *const minishard_cluster,
    shard: u32,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
    epoch: *mut u64,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or writable, by the caller's contract.
        let epoch = unsafe { mut_arg(epoch, "epoch") }?;
        *epoch = 0;
        // SAFETY: the caller's contract is `owner_into`'s.
        unsafe { owner_into(cluster, shard, buf, len, written, Some(epoch)) }
    })
}

/// `minishard_get_node` and `minishard_get_owner`.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `buf`: NULL or `len` writable bytes;
/// `written`: NULL or writable.
unsafe fn owner_into(
    cluster: *const minishard_cluster,
    shard: u32,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
    epoch: Option<&mut u64>,
) -> Outcome {
    // SAFETY: NULL or live, by the caller's contract.
    let handle = unsafe { handle(cluster) }?;
    open(handle)?;
    // Copy the owner's address while it is borrowed from the snapshot: no
    // reference count is touched, so concurrent lookups of the same owner do
    // not contend on one cache line.
    let filled = handle.cluster.with_owner(shard, |owner| {
        owner.map(|owner| {
            if let Some(epoch) = epoch {
                *epoch = owner.epoch;
            }
            // SAFETY: `buf`/`len`/`written` as the caller's contract says.
            unsafe { fill(owner.node.as_str().as_bytes(), buf, len, written) }
        })
    });
    if let Some(filled) = filled {
        return filled;
    }
    // SAFETY: NULL or writable, by the caller's contract.
    if let Ok(written) = unsafe { mut_arg(written, "written") } {
        *written = 0;
    }
    if !buf.is_null() && len > 0 {
        // SAFETY: `buf` has `len` > 0 writable bytes.
        unsafe { *buf = 0 };
    }
    let shard_count = handle.cluster.shard_count();
    if shard >= shard_count {
        return Err(Failure::invalid(format_args!(
            "shard {shard} does not exist: the cluster keeps {shard_count} shards, 0 to {}",
            shard_count.saturating_sub(1)
        )));
    }
    Err(Failure::new(
        minishard_result::MINISHARD_NOT_FOUND,
        format_args!("shard {shard} has no owner in this node's view"),
    ))
}

/// The number of shards the cluster keeps, into `*out`: what `shard_count`
/// answered at join (an observer learns it from the members; 0 until then).
/// Shards are numbered 0 to `*out` - 1.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for NULL. Still answers after
/// leave. Any thread; no lock.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `out`: NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn minishard_shard_count(
    cluster: *const minishard_cluster,
    out: *mut u32,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { handle(cluster) }?;
        // SAFETY: NULL or writable, by the caller's contract.
        let out = unsafe { mut_arg(out, "out") }?;
        *out = handle.cluster.shard_count();
        Ok(())
    })
}

/// The shard this node owns and its allocation's epoch, into `*shard` and
/// `*epoch`.
///
/// Errors: `MINISHARD_NOT_FOUND` when this node owns no shard (standby,
/// observer, degraded, or still inside `allocated`), then the outputs are
/// untouched; `MINISHARD_INVALID_ARGUMENT` for NULL; `MINISHARD_CLOSED`
/// after leave. Any thread; no lock.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `shard`, `epoch`: NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn minishard_my_shard(
    cluster: *const minishard_cluster,
    shard: *mut u32,
    epoch: *mut u64,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { handle(cluster) }?;
        // SAFETY: NULL or writable, by the caller's contract.
        let shard = unsafe { mut_arg(shard, "shard") }?;
        // SAFETY: NULL or writable, by the caller's contract.
        let epoch = unsafe { mut_arg(epoch, "epoch") }?;
        open(handle)?;
        let (s, e) = handle.cluster.my_shard().ok_or_else(|| {
            Failure::new(
                minishard_result::MINISHARD_NOT_FOUND,
                "this node owns no shard",
            )
        })?;
        *shard = s;
        *epoch = e;
        Ok(())
    })
}

/// This node's view of the cluster's health. For NULL it returns
/// `MINISHARD_HEALTH_DEGRADED` and records an error. Any thread; no lock.
///
/// # Safety
///
/// `cluster`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn minishard_get_health(
    cluster: *const minishard_cluster,
) -> minishard_health {
    crate::panic::boundary(|| {
        // SAFETY: NULL or live, by the caller's contract.
        match unsafe { handle(cluster) } {
            Ok(handle) => handle.cluster.health().into(),
            Err(failure) => {
                failure.report();
                minishard_health::MINISHARD_HEALTH_DEGRADED
            }
        }
    })
}

/// Blocks until this node's view of the health is `health`, for at most
/// `timeout_ms` milliseconds.
///
/// With `MINISHARD_DISPATCH_HOST`, callbacks do not run while a thread
/// waits here, and a cluster does not become available without its
/// `allocated` callbacks: wait from another thread than the one that
/// dispatches, or poll `minishard_get_health` from the dispatch loop.
///
/// Errors: `MINISHARD_TIMEOUT` (the message says the health at the end),
/// `MINISHARD_INVALID_ARGUMENT` (NULL, a value that is not a
/// `minishard_health`, or called from inside a callback of this handle,
/// where it would hold up the very callbacks a change of health may need),
/// `MINISHARD_CLOSED` (left, before or while waiting). Any other thread.
///
/// # Safety
///
/// `cluster`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn minishard_wait_until(
    cluster: *const minishard_cluster,
    health: minishard_health_code,
    timeout_ms: u64,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { handle(cluster) }?;
        let health = health_from_code(health)
            .ok_or_else(|| Failure::invalid(format_args!("{health} is not a minishard_health")))?;
        not_from_own_callback(handle, "minishard_wait_until")?;
        open(handle)?;
        handle
            .cluster
            .wait_until(health, Duration::from_millis(timeout_ms))?;
        Ok(())
    })
}

#[derive(Serialize)]
struct StatusJson {
    #[serde(flatten)]
    status: minishard::Status,
    stats: Stats,
}

/// The cluster as this node sees it, as one JSON object, written into `buf`
/// like `minishard_get_node` (same `*written` and
/// `MINISHARD_BUFFER_TOO_SMALL` convention): `cluster`, `node`, `health`,
/// `shard_count`, `allocated`, `owners` (per shard: null or `{"node",
/// "epoch"}`), `nodes` (every member and connected node with its state),
/// `local` (this node's own state) and `stats` (the counters of
/// `minishard_get_stats`). Still answers after leave (the last view).
///
/// Errors: `MINISHARD_INVALID_ARGUMENT`, `MINISHARD_BUFFER_TOO_SMALL`.
/// Any thread; no lock, but it allocates.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `buf`: NULL or `len` writable bytes;
/// `written`: NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn minishard_status_json(
    cluster: *const minishard_cluster,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { handle(cluster) }?;
        let json = serde_json::to_string(&StatusJson {
            status: handle.cluster.status(),
            stats: handle.cluster.stats(),
        })
        .map_err(|e| Failure::new(minishard_result::MINISHARD_PANIC, e))?;
        // SAFETY: `buf`/`len`/`written` as the caller's contract says.
        unsafe { fill(json.as_bytes(), buf, len, written) }
    })
}

/// The counters since join, into `*out`, whose `struct_size` says how many
/// of them it has room for (see `minishard_stats`). Still answers after
/// leave.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for NULL or an `out->struct_size`
/// smaller than `sizeof(size_t)` (e.g. not set). Any thread; no lock.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `out`: NULL or a `minishard_stats`
/// writable for its `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn minishard_get_stats(
    cluster: *const minishard_cluster,
    out: *mut minishard_stats,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { handle(cluster) }?;
        if out.is_null() {
            return Err(Failure::invalid("out is NULL"));
        }
        let stats: minishard_stats = handle.cluster.stats().into();
        // SAFETY: writable for its struct_size, by the caller's contract.
        unsafe { crate::growing::write_out(&stats, out) }
    })
}

/// This node's advertised address, `"host:port"` (with listen port 0, the
/// port actually bound), written into `buf` like `minishard_get_node`.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT`, `MINISHARD_BUFFER_TOO_SMALL`.
/// Any thread.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `buf`: NULL or `len` writable bytes;
/// `written`: NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn minishard_node_id(
    cluster: *const minishard_cluster,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { handle(cluster) }?;
        // SAFETY: `buf`/`len`/`written` as the caller's contract says.
        unsafe {
            fill(
                handle.cluster.node_id().as_str().as_bytes(),
                buf,
                len,
                written,
            )
        }
    })
}

/// Host dispatch: runs up to `max` pending callbacks on the calling thread
/// and stores how many ran in `*ran` (if `ran` is not NULL). Returns at
/// once when none is pending. Call it when `minishard_event_fd` is
/// readable, or periodically; the engine keeps heartbeats and lookups going
/// meanwhile, but `allocated` and the rest wait for it.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` (NULL; the handle uses
/// `MINISHARD_DISPATCH_THREAD`; called from inside a callback of this
/// handle), `MINISHARD_CLOSED` (after leave). Any thread, but callbacks
/// then run on whichever thread calls it.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `ran`: NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn minishard_dispatch(
    cluster: *mut minishard_cluster,
    max: usize,
    ran: *mut usize,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { handle(cluster) }?;
        // SAFETY: NULL or writable, by the caller's contract.
        let mut ran = unsafe { ran.as_mut() };
        if let Some(ran) = ran.as_deref_mut() {
            *ran = 0;
        }
        not_from_own_callback(handle, "minishard_dispatch")?;
        open(handle)?;
        let count = handle.span.in_scope(|| handle.cluster.dispatch(max))?;
        if let Some(ran) = ran {
            *ran = count;
        }
        Ok(())
    })
}

/// Host dispatch: a file descriptor that is readable while callbacks are
/// pending, for poll/epoll/kqueue, libuv or asyncio. Watch it for reading;
/// do not read, write or close it: `minishard_dispatch` drains it, and it
/// stays valid until `minishard_cluster_free`.
///
/// Returns -1 (and records why) for NULL or a handle with
/// `MINISHARD_DISPATCH_THREAD`. Any thread.
///
/// # Safety
///
/// `cluster`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn minishard_event_fd(cluster: *const minishard_cluster) -> c_int {
    crate::panic::boundary(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let fd = unsafe { handle(cluster) }.and_then(|handle| {
            if handle.dispatch != Dispatch::Host {
                return Err(Failure::invalid(
                    "this handle runs callbacks on its own thread: only MINISHARD_DISPATCH_HOST has an event fd",
                ));
            }
            handle
                .cluster
                .event_fd()
                .ok_or_else(|| Failure::invalid("this handle has no event fd"))
        });
        match fd {
            Ok(fd) => fd,
            Err(failure) => {
                failure.report();
                -1
            }
        }
    })
}
