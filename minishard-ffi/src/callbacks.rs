//! The application's callbacks as C function pointers, adapted to the Rust
//! [`Callbacks`] trait.
//!
//! The adapter owns `user_data` (freed exactly once, when the engine drops
//! the adapter) and keeps the C `void *state` of the current allocation as
//! the Rust state, so the engine's ordering guarantees (docs/design.md 3) carry
//! over to C unchanged. A C callback that returns anything but
//! `MINISHARD_OK` is a failed callback, handled by the engine as section 3
//! says.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CString};
use std::sync::{Arc, Mutex};

use minishard::{CallbackError, Callbacks, HandOff, Health, NodeId, ReleaseReason, Responder};

use crate::handoff::{minishard_hand_off, minishard_hand_off_writer, Received};

use crate::buffer::{mut_arg, str_arg};
use crate::error::{call, minishard_result, minishard_result_code, Failure};
use crate::health::minishard_health;
use crate::log::{minishard_log_callback, minishard_log_level_code, Sink};
use crate::reason::minishard_release_reason;

/// The member list being built by a `nodes` callback: an opaque handle,
/// valid only during that callback. Fill it with `minishard_node_list_push`.
pub struct minishard_node_list {
    nodes: Vec<String>,
    /// Why the list cannot be used, if a push was refused: then the whole
    /// answer is refused, even if the callback returns `MINISHARD_OK`.
    refused: Option<String>,
}

/// Adds a member's advertised address, `"host:port"`, to the list a `nodes`
/// callback is building. The string is copied.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for NULL or non-UTF-8,
/// `MINISHARD_CONFIG` for an address that does not parse. A refused push
/// makes the whole answer of that `nodes` call fail, so a half-built member
/// list is never used.
///
/// Call it only from inside `nodes`, on the thread that runs it.
///
/// # Safety
///
/// `list`: the list passed to the running `nodes` callback; `addr`: NULL or
/// a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn minishard_node_list_push(
    list: *mut minishard_node_list,
    addr: *const c_char,
) -> minishard_result {
    call(|| {
        // SAFETY: the list of the running `nodes` callback, by the caller's
        // contract; nothing else touches it while the callback runs.
        let list = unsafe { mut_arg(list, "list") }?;
        // SAFETY: NULL or NUL-terminated, by the caller's contract.
        let checked = unsafe { str_arg(addr, "addr") }.and_then(|addr| {
            NodeId::parse(addr)
                .map(|_| addr)
                .map_err(|e| Failure::new(minishard_result::MINISHARD_CONFIG, e))
        });
        match checked {
            Ok(addr) => {
                list.nodes.push(addr.to_owned());
                Ok(())
            }
            Err(failure) => {
                list.refused.get_or_insert_with(|| {
                    format!(
                        "minishard_node_list_push refused a member: {}",
                        failure.message
                    )
                });
                Err(failure)
            }
        }
    })
}

/// The callbacks of one join: what minishard tells the application and asks
/// of it (docs/design.md section 3).
///
/// Every callback gets `user_data` back as its first argument. Callbacks of
/// one handle run one at a time, in order: on the handle's callback thread,
/// never on the thread that called `minishard_join`
/// (`MINISHARD_DISPATCH_THREAD`); or on the host's thread
/// (`MINISHARD_DISPATCH_HOST`): `nodes` and `shard_count` inside
/// `minishard_join`, the others inside `minishard_dispatch` (or
/// `minishard_leave` / `minishard_cluster_free`). So `user_data` and the
/// callbacks must be usable from that thread. For each allocation the order is exactly
/// `allocated`, then any number of `score`/`prolonged`, then one
/// `deallocated`; a node holds at most one allocation at a time.
///
/// Strings passed to callbacks are valid only during the call: copy what
/// you keep. A callback must return normally: no C++ exception and no
/// `longjmp` may leave it. Inside a callback, lookups on any handle are
/// fine; `minishard_leave`, `minishard_dispatch`, `minishard_wait_until` and
/// `minishard_cluster_free` on the handle whose callback is running are
/// refused (they would wait for that very callback).
///
/// A callback that returns anything but `MINISHARD_OK` has failed: at join
/// (`nodes`, `shard_count`) the join fails; a failed `allocated` releases the
/// shard and the node returns to standby after a back-off; a failed or late
/// `score` loses the conflict; other failures are logged and the engine
/// goes on.
///
/// It grows by the header's rule for growing structs: start from
/// `minishard_callbacks cb = { .struct_size = sizeof cb };` (or
/// `= {0}` and set `struct_size`), so that fields you do not set are NULL.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct minishard_callbacks {
    /// Required: `sizeof(minishard_callbacks)` as your header declares it.
    /// Fields past it count as NULL, so a program built against an older
    /// header keeps working with a newer library.
    pub struct_size: usize,
    /// Passed back as the first argument of every callback. Owned by the
    /// handle once `minishard_join` is called (see `free_user_data`).
    pub user_data: *mut c_void,
    /// Required. Fills `out` with the member list: every member's
    /// advertised `"host:port"`, with `minishard_node_list_push`. Asked at
    /// join and then periodically (see `minishard_config_set_member_poll_ms`).
    /// This node's own address must be in it, unless it joins as an
    /// observer (`minishard_config_set_observer`). Return `MINISHARD_OK`,
    /// or any other code to fail (the join fails; later, the old list stays).
    pub nodes: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            cluster: *const c_char,
            out: *mut minishard_node_list,
        ) -> minishard_result_code,
    >,
    /// Required. How many shards the cluster keeps: at least 1, at most the
    /// number of members. Asked once, at join; a value <= 0 or above
    /// `UINT32_MAX` makes the join fail with `MINISHARD_CONFIG`.
    pub shard_count:
        Option<unsafe extern "C" fn(user_data: *mut c_void, cluster: *const c_char) -> i64>,
    /// Required (unless `allocated_with_epoch` is set). This node now owns
    /// `shard`: set `*state` (preset to NULL) to whatever the application
    /// keeps for it; it comes back in `score`, `prolonged` and
    /// `deallocated`. On failure `*state` is ignored and no `deallocated`
    /// follows: free what you made before returning the error.
    pub allocated: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            cluster: *const c_char,
            shard: u32,
            state: *mut *mut c_void,
        ) -> minishard_result_code,
    >,
    /// Required. A conflict over this node's shard is being resolved (after
    /// a split healed): return a score, higher wins. It cannot fail, but one
    /// that takes longer than the score deadline loses.
    pub score: Option<unsafe extern "C" fn(user_data: *mut c_void, state: *mut c_void) -> i64>,
    /// Required (unless `prolonged_with_epoch` is set). This node won a
    /// conflict against `loser` (its address) and keeps its shard. `*new_state` is preset to `state`; whatever it holds
    /// when the callback returns is the state from then on, whatever the
    /// result (so replace `state` only together with `*new_state`).
    pub prolonged: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            loser: *const c_char,
            state: *mut c_void,
            new_state: *mut *mut c_void,
        ) -> minishard_result_code,
    >,
    /// Required (unless `deallocated_with_reason` is set). This node no
    /// longer owns its shard: `winner_or_null` (an address) took it in a
    /// conflict, or no one did (NULL: degraded, `minishard_leave`, free,
    /// removed from the member list). Free `state` here: minishard never
    /// touches it again.
    pub deallocated: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            winner_or_null: *const c_char,
            state: *mut c_void,
        ),
    >,
    /// Optional (may be NULL). This node's view of the cluster's health
    /// changed from `old_health` to `new_health`.
    pub status_changed: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            cluster: *const c_char,
            old_health: minishard_health,
            new_health: minishard_health,
        ),
    >,
    /// Optional (may be NULL). Frees `user_data`. Called exactly once for
    /// every `minishard_join` given a non-NULL `minishard_callbacks`: before
    /// `minishard_join` returns if the join fails, otherwise after the last
    /// callback, inside `minishard_cluster_free` (or
    /// `minishard_testing_crash`), on that caller's thread.
    pub free_user_data: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
    /// Optional (may be NULL). `allocated` with the allocation's epoch:
    /// larger than any epoch this node has seen for `shard`, for fencing
    /// writes by stale owners. When set, it is called instead of
    /// `allocated`, which may then be NULL.
    pub allocated_with_epoch: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            cluster: *const c_char,
            shard: u32,
            epoch: u64,
            state: *mut *mut c_void,
        ) -> minishard_result_code,
    >,
    /// With `log`: the most detailed `minishard_log_level` it gets
    /// (`MINISHARD_LOG_WARN` is a good default). Ignored without `log`.
    pub log_max_level: minishard_log_level_code,
    /// Optional (may be NULL). This handle's own log callback: its lines
    /// (its join, peers, refusals, failed callbacks, leave) go here instead
    /// of the process-wide callback of `minishard_set_log_callback`, with
    /// `user_data`. Unlike the callbacks above it runs on whichever thread
    /// logs, possibly while another callback of this handle runs, so
    /// `user_data` must allow that; return quickly. It is called from
    /// `minishard_join` until `minishard_cluster_free` returns, and
    /// `free_user_data` runs after its last call. See
    /// `minishard_log_callback` for what a line holds.
    pub log: minishard_log_callback,
    /// Optional (may be NULL). `prolonged` with the allocation's epoch from
    /// now on: above the loser's, so a store that takes a write only at an
    /// epoch at least the highest it has seen refuses the loser and takes
    /// this node. Also called, naming the rival, when this allocation
    /// outlived a rival's on the other side of a healed split and its epoch
    /// rose above it. When set, it is called instead of `prolonged`, which
    /// may then be NULL.
    pub prolonged_with_epoch: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            loser: *const c_char,
            epoch: u64,
            state: *mut c_void,
            new_state: *mut *mut c_void,
        ) -> minishard_result_code,
    >,
    /// Optional (may be NULL). `deallocated` with why the allocation ended
    /// (`minishard_release_reason`; `winner_or_null` is set exactly for
    /// `MINISHARD_RELEASE_LOST_CONFLICT`). A failed `allocated` is followed
    /// by no `deallocated` at all. When set, it is called instead of
    /// `deallocated`, which may then be NULL.
    pub deallocated_with_reason: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            winner_or_null: *const c_char,
            reason: minishard_release_reason,
            state: *mut c_void,
        ),
    >,
    /// Optional (may be NULL: requests then fail with
    /// `MINISHARD_HANDLER_FAILED`). A request for this node's shard
    /// (`minishard_request` on any node): `payload` (`len` bytes, valid
    /// during the call) for the allocation whose state is `state`. It runs
    /// only inside the allocation — after `allocated` returned, before
    /// `deallocated` starts — one at a time with the other callbacks.
    /// Answer exactly once through `responder`, here or later from any
    /// thread: `minishard_respond` or `minishard_respond_error` (each frees
    /// it), or `minishard_responder_free` to give up (the request then
    /// fails with `MINISHARD_HANDLER_FAILED`). A responder never answered
    /// leaks, and its request ends at its timeout.
    pub handle_request: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            state: *mut c_void,
            payload: *const u8,
            len: usize,
            responder: *mut crate::request::minishard_responder,
        ),
    >,
    /// Optional (may be NULL). `allocated` with what the shard's previous
    /// owner handed off (docs/design.md 11.8): `hand_off_or_null` is NULL
    /// when it gave nothing or its hand-off was lost (it crashed, or the
    /// connection broke first), and valid during the call only. When set,
    /// it is called instead of `allocated_with_epoch` and `allocated`.
    pub allocated_with_hand_off: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            cluster: *const c_char,
            shard: u32,
            epoch: u64,
            hand_off_or_null: *const crate::handoff::minishard_hand_off,
            state: *mut *mut c_void,
        ) -> minishard_result_code,
    >,
    /// Optional (may be NULL). `prolonged_with_epoch` with what the loser
    /// handed off when it gave the shard up to this node (NULL: nothing,
    /// or lost). When set, it is called instead of the other two, after
    /// waiting (at most `hand_off_wait`) for the loser to say what it
    /// hands off; when NULL, `prolonged` comes without that wait.
    pub prolonged_with_hand_off: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            loser: *const c_char,
            epoch: u64,
            hand_off_or_null: *const crate::handoff::minishard_hand_off,
            state: *mut c_void,
            new_state: *mut *mut c_void,
        ) -> minishard_result_code,
    >,
    /// Optional (may be NULL). `deallocated_with_reason`, which may write
    /// bytes for the shard's next owner with `minishard_hand_off_write(
    /// hand_off, ...)` during the call: the winner for
    /// `MINISHARD_RELEASE_LOST_CONFLICT`, the standby that takes the shard
    /// for `MINISHARD_RELEASE_LEFT` (for other reasons there is no next
    /// owner and the bytes are dropped). When set, it is called instead of
    /// the other two.
    pub deallocated_with_hand_off: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            winner_or_null: *const c_char,
            reason: minishard_release_reason,
            state: *mut c_void,
            hand_off: *mut crate::handoff::minishard_hand_off_writer,
        ),
    >,
}

// SAFETY: repr(C), `struct_size` first, all-zero is valid (NULL pointers,
// None for every callback); the boundaries are its fields' offsets.
unsafe impl crate::growing::GrowingStruct for minishard_callbacks {
    const NAME: &'static str = "minishard_callbacks";
    const BOUNDARIES: &'static [usize] = crate::growing::boundaries!(minishard_callbacks;
        user_data, nodes, shard_count, allocated, score, prolonged, deallocated,
        status_changed, free_user_data, allocated_with_epoch, log_max_level, log,
        prolonged_with_epoch, deallocated_with_reason, handle_request, allocated_with_hand_off,
        prolonged_with_hand_off, deallocated_with_hand_off);
    /// The first version with `struct_size` (0.1.0) ends with
    /// `allocated_with_epoch`.
    const MIN_SIZE: usize = std::mem::offset_of!(minishard_callbacks, allocated_with_epoch)
        + std::mem::size_of::<usize>();
}

/// `user_data` and its destructor: frees it exactly once, when dropped.
/// Shared by the callbacks and the handle's log sink, so it goes when both
/// have.
struct UserData {
    ptr: *mut c_void,
    free: Option<unsafe extern "C" fn(*mut c_void)>,
}

// SAFETY: a pointer the application hands only to its own callbacks, on
// the threads the header allows for each (any thread for `log`), and a
// destructor called once, from whichever thread drops the last owner (the
// header says: inside `minishard_join` or `minishard_cluster_free`).
unsafe impl Send for UserData {}
// SAFETY: as above; the struct itself is never written after creation.
unsafe impl Sync for UserData {}

impl Drop for UserData {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: `free` is the application's destructor for `ptr`; this
            // is the only place it is called, once, as the header promises.
            unsafe { free(self.ptr) };
        }
    }
}

// Handles whose callback is running on this thread, innermost last.
// Calls that wait for that handle's callbacks to finish are refused on it.
thread_local! {
    static RUNNING: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Marks a callback of handle `id` as running on this thread.
struct Running;

impl Running {
    fn enter(id: u64) -> Running {
        RUNNING.with(|r| r.borrow_mut().push(id));
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.with(|r| r.borrow_mut().pop());
    }
}

/// Whether a callback of handle `id` is running on this thread.
pub(crate) fn in_callback_of(id: u64) -> bool {
    RUNNING.with(|r| r.try_borrow().map_or(true, |r| r.contains(&id)))
}

type NodesFn = unsafe extern "C" fn(*mut c_void, *const c_char, *mut minishard_node_list) -> u32;
type ShardCountFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> i64;
type AllocatedFn = unsafe extern "C" fn(*mut c_void, *const c_char, u32, *mut *mut c_void) -> u32;
type AllocatedEpochFn =
    unsafe extern "C" fn(*mut c_void, *const c_char, u32, u64, *mut *mut c_void) -> u32;
type ScoreFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> i64;
type ProlongedFn =
    unsafe extern "C" fn(*mut c_void, *const c_char, *mut c_void, *mut *mut c_void) -> u32;
type ProlongedEpochFn =
    unsafe extern "C" fn(*mut c_void, *const c_char, u64, *mut c_void, *mut *mut c_void) -> u32;
type DeallocatedFn = unsafe extern "C" fn(*mut c_void, *const c_char, *mut c_void);
type DeallocatedReasonFn =
    unsafe extern "C" fn(*mut c_void, *const c_char, minishard_release_reason, *mut c_void);
type StatusFn =
    unsafe extern "C" fn(*mut c_void, *const c_char, minishard_health, minishard_health);
type HandleRequestFn = unsafe extern "C" fn(
    *mut c_void,
    *mut c_void,
    *const u8,
    usize,
    *mut crate::request::minishard_responder,
);

type AllocatedHandOffFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    u32,
    u64,
    *const minishard_hand_off,
    *mut *mut c_void,
) -> u32;
type ProlongedHandOffFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    u64,
    *const minishard_hand_off,
    *mut c_void,
    *mut *mut c_void,
) -> u32;
type DeallocatedHandOffFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    minishard_release_reason,
    *mut c_void,
    *mut minishard_hand_off_writer,
);

enum Allocate {
    Plain(AllocatedFn),
    WithEpoch(AllocatedEpochFn),
    WithHandOff(AllocatedHandOffFn),
}

enum Prolong {
    Plain(ProlongedFn),
    WithEpoch(ProlongedEpochFn),
    WithHandOff(ProlongedHandOffFn),
}

enum Deallocate {
    Plain(DeallocatedFn),
    WithReason(DeallocatedReasonFn),
    WithHandOff(DeallocatedHandOffFn),
}

/// The C application behind one handle.
pub(crate) struct CApp {
    user_data: Arc<UserData>,
    nodes: NodesFn,
    shard_count: ShardCountFn,
    allocated: Allocate,
    score: ScoreFn,
    prolonged: Prolong,
    deallocated: Deallocate,
    status_changed: Option<StatusFn>,
    handle_request: Option<HandleRequestFn>,
    cluster: CString,
    handle: u64,
    /// Set when an answer at join was unusable as configuration (rather
    /// than the callback failing), so the join reports `MINISHARD_CONFIG`.
    pub(crate) bad_answer: Arc<Mutex<Option<String>>>,
}

// SAFETY: the only non-Send parts are `user_data` and the C state pointers.
// The header requires them, and the callbacks, to be usable from the
// callback thread, and the engine runs one callback at a time, so they are
// never used from two threads at once.
unsafe impl Send for CApp {}

/// The C `void *state` of the current allocation.
pub(crate) struct CState(*mut c_void);

// SAFETY: as for `CApp`: the application's state is handed only to its own
// callbacks, one at a time, on the thread the header allows.
unsafe impl Send for CState {}

/// A join's callbacks taken over from C: `user_data` is owned from here on,
/// even if the callbacks turn out to be incomplete.
pub(crate) struct Taken {
    user_data: Arc<UserData>,
    cb: minishard_callbacks,
}

impl Taken {
    /// Takes ownership of `cb.user_data`.
    pub(crate) fn new(cb: &minishard_callbacks) -> Taken {
        Taken {
            user_data: Arc::new(UserData {
                ptr: cb.user_data,
                free: cb.free_user_data,
            }),
            cb: minishard_callbacks {
                user_data: cb.user_data,
                free_user_data: None,
                ..*cb
            },
        }
    }

    /// The handle's own log sink, if `log` is set; it shares `user_data`.
    pub(crate) fn log_sink(&self) -> Result<Option<Sink>, Failure> {
        self.cb
            .log
            .map(|log| {
                Sink::for_handle(
                    log,
                    self.cb.user_data,
                    self.cb.log_max_level,
                    self.user_data.clone(),
                )
            })
            .transpose()
    }

    /// Checks that every required callback is there.
    pub(crate) fn into_app(self, cluster: &str, handle: u64) -> Result<CApp, Failure> {
        let missing =
            |name: &str| Failure::invalid(format_args!("callbacks.{name} is NULL; it is required"));
        let cb = &self.cb;
        let allocated = match (
            cb.allocated_with_hand_off,
            cb.allocated_with_epoch,
            cb.allocated,
        ) {
            (Some(f), _, _) => Allocate::WithHandOff(f),
            (None, Some(f), _) => Allocate::WithEpoch(f),
            (None, None, Some(f)) => Allocate::Plain(f),
            (None, None, None) => return Err(missing("allocated")),
        };
        let prolonged = match (
            cb.prolonged_with_hand_off,
            cb.prolonged_with_epoch,
            cb.prolonged,
        ) {
            (Some(f), _, _) => Prolong::WithHandOff(f),
            (None, Some(f), _) => Prolong::WithEpoch(f),
            (None, None, Some(f)) => Prolong::Plain(f),
            (None, None, None) => return Err(missing("prolonged")),
        };
        let deallocated = match (
            cb.deallocated_with_hand_off,
            cb.deallocated_with_reason,
            cb.deallocated,
        ) {
            (Some(f), _, _) => Deallocate::WithHandOff(f),
            (None, Some(f), _) => Deallocate::WithReason(f),
            (None, None, Some(f)) => Deallocate::Plain(f),
            (None, None, None) => return Err(missing("deallocated")),
        };
        Ok(CApp {
            nodes: cb.nodes.ok_or_else(|| missing("nodes"))?,
            shard_count: cb.shard_count.ok_or_else(|| missing("shard_count"))?,
            allocated,
            score: cb.score.ok_or_else(|| missing("score"))?,
            prolonged,
            deallocated,
            status_changed: cb.status_changed,
            handle_request: cb.handle_request,
            cluster: CString::new(cluster)
                .map_err(|_| Failure::invalid("cluster contains a NUL byte"))?,
            handle,
            bad_answer: Arc::default(),
            user_data: self.user_data,
        })
    }
}

fn failed(callback: &str, code: u32) -> CallbackError {
    let name = minishard_result::from_raw(code).map_or_else(
        || format!("unknown result {code}"),
        |r| r.name().to_string_lossy().into_owned(),
    );
    CallbackError(format!("{callback} returned {name}"))
}

fn c_address(node: &NodeId) -> CString {
    // A NodeId has only letters, digits and `.-_:[]`: never a NUL.
    CString::new(node.as_str()).unwrap_or_default()
}

impl CApp {
    fn answer_unusable(&self, message: String) -> CallbackError {
        *self.bad_answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
        CallbackError(message)
    }
}

impl Callbacks for CApp {
    type State = CState;

    fn nodes(&mut self, _cluster: &str) -> Result<Vec<String>, CallbackError> {
        let mut list = minishard_node_list {
            nodes: Vec::new(),
            refused: None,
        };
        let _running = Running::enter(self.handle);
        // SAFETY: a callback the application gave for this handle, called
        // with its user_data, a NUL-terminated name and a list that lives
        // through the call; one callback at a time (engine guarantee).
        let code = unsafe { (self.nodes)(self.user_data.ptr, self.cluster.as_ptr(), &mut list) };
        if let Some(refused) = list.refused {
            return Err(self.answer_unusable(refused));
        }
        if code != minishard_result::MINISHARD_OK as u32 {
            return Err(failed("nodes", code));
        }
        Ok(list.nodes)
    }

    fn shard_count(&mut self, _cluster: &str) -> Result<u32, CallbackError> {
        let _running = Running::enter(self.handle);
        // SAFETY: as in `nodes`.
        let count = unsafe { (self.shard_count)(self.user_data.ptr, self.cluster.as_ptr()) };
        match u32::try_from(count) {
            Ok(count) if count > 0 => Ok(count),
            _ => Err(self.answer_unusable(format!(
                "shard_count returned {count}; a cluster keeps between 1 and {} shards",
                u32::MAX
            ))),
        }
    }

    fn allocated(
        &mut self,
        cluster: &str,
        shard: u32,
        epoch: u64,
    ) -> Result<CState, CallbackError> {
        self.allocated_with_hand_off(cluster, shard, epoch, None)
    }

    fn allocated_with_hand_off(
        &mut self,
        _cluster: &str,
        shard: u32,
        epoch: u64,
        hand_off: Option<HandOff>,
    ) -> Result<CState, CallbackError> {
        let mut state: *mut c_void = std::ptr::null_mut();
        let received = hand_off.map(Received::new);
        let view = received.as_ref().map(Received::view);
        let view_ptr = view
            .as_ref()
            .map_or(std::ptr::null(), |v| v as *const minishard_hand_off);
        let _running = Running::enter(self.handle);
        let (name, code) = match self.allocated {
            // SAFETY: as in `nodes`; `view_ptr` is NULL or lives through the
            // call, and `state` is a valid place for the answer.
            Allocate::WithHandOff(f) => ("allocated_with_hand_off", unsafe {
                f(
                    self.user_data.ptr,
                    self.cluster.as_ptr(),
                    shard,
                    epoch,
                    view_ptr,
                    &mut state,
                )
            }),
            // SAFETY: as in `nodes`; `state` is a valid place for the answer.
            Allocate::Plain(f) => ("allocated", unsafe {
                f(self.user_data.ptr, self.cluster.as_ptr(), shard, &mut state)
            }),
            // SAFETY: as above.
            Allocate::WithEpoch(f) => ("allocated_with_epoch", unsafe {
                f(
                    self.user_data.ptr,
                    self.cluster.as_ptr(),
                    shard,
                    epoch,
                    &mut state,
                )
            }),
        };
        if code != minishard_result::MINISHARD_OK as u32 {
            return Err(failed(name, code));
        }
        Ok(CState(state))
    }

    fn score(&mut self, state: &mut CState) -> Result<i64, CallbackError> {
        let _running = Running::enter(self.handle);
        // SAFETY: as in `nodes`; `state` is what `allocated` or `prolonged`
        // gave for the current allocation.
        Ok(unsafe { (self.score)(self.user_data.ptr, state.0) })
    }

    fn prolonged(
        &mut self,
        loser: &NodeId,
        state: &mut CState,
        epoch: u64,
    ) -> Result<(), CallbackError> {
        self.prolonged_with_hand_off(loser, state, epoch, None)
    }

    fn takes_hand_offs(&self) -> bool {
        matches!(self.prolonged, Prolong::WithHandOff(_))
    }

    fn prolonged_with_hand_off(
        &mut self,
        loser: &NodeId,
        state: &mut CState,
        epoch: u64,
        hand_off: Option<HandOff>,
    ) -> Result<(), CallbackError> {
        let loser = c_address(loser);
        let mut new_state = state.0;
        let received = hand_off.map(Received::new);
        let view = received.as_ref().map(Received::view);
        let view_ptr = view
            .as_ref()
            .map_or(std::ptr::null(), |v| v as *const minishard_hand_off);
        let _running = Running::enter(self.handle);
        // SAFETY: as in `score`; `loser` and `view_ptr` (NULL or not) live
        // through the call and `new_state` is a valid place for the answer.
        let code = unsafe {
            match self.prolonged {
                Prolong::WithHandOff(f) => f(
                    self.user_data.ptr,
                    loser.as_ptr(),
                    epoch,
                    view_ptr,
                    state.0,
                    &mut new_state,
                ),
                Prolong::Plain(f) => f(self.user_data.ptr, loser.as_ptr(), state.0, &mut new_state),
                Prolong::WithEpoch(f) => f(
                    self.user_data.ptr,
                    loser.as_ptr(),
                    epoch,
                    state.0,
                    &mut new_state,
                ),
            }
        };
        state.0 = new_state;
        if code != minishard_result::MINISHARD_OK as u32 {
            return Err(failed("prolonged", code));
        }
        Ok(())
    }

    fn deallocated(&mut self, winner: Option<&NodeId>, reason: ReleaseReason, state: CState) {
        self.deallocated_with_hand_off(winner, reason, state);
    }

    fn deallocated_with_hand_off(
        &mut self,
        winner: Option<&NodeId>,
        reason: ReleaseReason,
        state: CState,
    ) -> Option<Vec<u8>> {
        let winner = winner.map(c_address);
        let winner_ptr = winner.as_ref().map_or(std::ptr::null(), |w| w.as_ptr());
        let mut writer = minishard_hand_off_writer { data: None };
        let _running = Running::enter(self.handle);
        // SAFETY: as in `score`; `winner_ptr` is NULL or lives through the
        // call, as does `writer`, and the state is handed back for the last
        // time.
        unsafe {
            match self.deallocated {
                Deallocate::WithHandOff(f) => f(
                    self.user_data.ptr,
                    winner_ptr,
                    reason.into(),
                    state.0,
                    &mut writer,
                ),
                Deallocate::Plain(f) => f(self.user_data.ptr, winner_ptr, state.0),
                Deallocate::WithReason(f) => {
                    f(self.user_data.ptr, winner_ptr, reason.into(), state.0)
                }
            }
        };
        writer.data
    }

    fn handle_request(&mut self, state: &mut CState, payload: Vec<u8>, responder: Responder) {
        let Some(handle_request) = self.handle_request else {
            return responder.fail("this node has no handle_request callback");
        };
        let responder = crate::request::minishard_responder::boxed(responder);
        let _running = Running::enter(self.handle);
        // SAFETY: as in `score`; `payload` lives through the call, and the
        // responder is the application's from here on (it answers or frees
        // it, once).
        unsafe {
            handle_request(
                self.user_data.ptr,
                state.0,
                payload.as_ptr(),
                payload.len(),
                responder,
            )
        };
    }

    fn status_changed(&mut self, _cluster: &str, old: Health, new: Health) {
        if let Some(status_changed) = self.status_changed {
            let _running = Running::enter(self.handle);
            // SAFETY: as in `nodes`.
            unsafe {
                status_changed(
                    self.user_data.ptr,
                    self.cluster.as_ptr(),
                    old.into(),
                    new.into(),
                )
            };
        }
    }
}
