//! Requests to a shard's owner (docs/design.md 11) from C: blocking with a reply
//! the caller owns, or with a completion function; the responder a
//! `handle_request` callback answers through; node metadata.

use std::ffi::{c_char, c_void, CString};
use std::time::Duration;

use minishard::{NodeId, Reply, RequestError, Responder};

use crate::buffer::{fill, mut_arg, ref_arg, str_arg};
use crate::cluster::minishard_cluster;
use crate::error::{call, minishard_result, Failure};

/// The owner's reply to a request: its bytes, the node that answered and
/// the epoch of its allocation. Owned by the caller of `minishard_request`,
/// freed with `minishard_reply_free`; read it with the `minishard_reply_*`
/// functions.
pub struct minishard_reply {
    payload: Vec<u8>,
    node: CString,
    epoch: u64,
}

impl From<Reply> for minishard_reply {
    fn from(reply: Reply) -> minishard_reply {
        minishard_reply {
            payload: reply.payload,
            // A NodeId never holds a NUL.
            node: CString::new(reply.node.as_str()).unwrap_or_default(),
            epoch: reply.epoch,
        }
    }
}

/// Answers one request: handed to `handle_request`, answered exactly once
/// with `minishard_respond` or `minishard_respond_error` (which free it),
/// from any thread, or freed unanswered with `minishard_responder_free`.
pub struct minishard_responder {
    responder: Responder,
}

impl minishard_responder {
    pub(crate) fn boxed(responder: Responder) -> *mut minishard_responder {
        Box::into_raw(Box::new(minishard_responder { responder }))
    }
}

/// Takes a responder back from C.
///
/// # Safety
///
/// `responder`: NULL or from `handle_request`, not answered or freed yet.
unsafe fn take_responder(
    responder: *mut minishard_responder,
) -> Result<Box<minishard_responder>, Failure> {
    if responder.is_null() {
        return Err(Failure::invalid("responder is NULL"));
    }
    // SAFETY: from `Box::into_raw` in `boxed`, given back once, by the
    // caller's contract.
    Ok(unsafe { Box::from_raw(responder) })
}

/// A payload argument: `len` bytes at `ptr` (NULL allowed with `len` 0).
///
/// # Safety
///
/// `ptr`: NULL or `len` readable bytes.
pub(crate) unsafe fn bytes_arg<'a>(
    ptr: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Failure::invalid(format_args!(
            "{what} is NULL but len is {len}"
        )));
    }
    // SAFETY: `len` readable bytes, by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Answers the request with `len` bytes at `payload` (copied), and frees
/// `responder`. Any thread, once per responder. A reply over the frame
/// limit is answered as a failure instead (the requester gets
/// `MINISHARD_HANDLER_FAILED` saying so).
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `responder`, or a NULL
/// `payload` with `len` > 0 (the responder is then answered with that
/// error and freed all the same).
///
/// # Safety
///
/// `responder`: NULL or one not answered or freed yet; `payload`: NULL or
/// `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn minishard_respond(
    responder: *mut minishard_responder,
    payload: *const u8,
    len: usize,
) -> minishard_result {
    call(|| {
        // SAFETY: the caller's contract.
        let responder = unsafe { take_responder(responder) }?;
        // SAFETY: the caller's contract.
        match unsafe { bytes_arg(payload, len, "payload") } {
            Ok(bytes) => {
                responder.responder.respond(bytes.to_vec());
                Ok(())
            }
            Err(failure) => {
                responder.responder.fail(failure.message.clone());
                Err(failure)
            }
        }
    })
}

/// Answers that the handler failed with `message` (NULL: a generic one;
/// copied), and frees `responder`: the requester gets
/// `MINISHARD_HANDLER_FAILED` with the message. Any thread, once.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `responder` or a
/// non-UTF-8 message (then answered with a generic message and freed).
///
/// # Safety
///
/// `responder`: NULL or one not answered or freed yet; `message`: NULL or
/// a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn minishard_respond_error(
    responder: *mut minishard_responder,
    message: *const c_char,
) -> minishard_result {
    call(|| {
        // SAFETY: the caller's contract.
        let responder = unsafe { take_responder(responder) }?;
        if message.is_null() {
            responder.responder.fail("the handler failed");
            return Ok(());
        }
        // SAFETY: non-NULL and NUL-terminated, by the caller's contract.
        match unsafe { str_arg(message, "message") } {
            Ok(message) => {
                responder.responder.fail(message);
                Ok(())
            }
            Err(failure) => {
                responder.responder.fail("the handler failed");
                Err(failure)
            }
        }
    })
}

/// Frees a responder without answering: the requester gets
/// `MINISHARD_HANDLER_FAILED` ("dropped its responder"). NULL is a no-op.
///
/// # Safety
///
/// `responder`: NULL or one not answered or freed yet.
#[no_mangle]
pub unsafe extern "C" fn minishard_responder_free(responder: *mut minishard_responder) {
    crate::panic::boundary(|| {
        // SAFETY: the caller's contract.
        drop(unsafe { take_responder(responder) });
    })
}

/// The epoch of the allocation the request runs in (what the reply
/// carries), or 0 for NULL. Any thread.
///
/// # Safety
///
/// `responder`: NULL or one not answered or freed yet.
#[no_mangle]
pub unsafe extern "C" fn minishard_responder_epoch(responder: *const minishard_responder) -> u64 {
    crate::panic::boundary(|| {
        // SAFETY: NULL or live, by the caller's contract.
        unsafe { responder.as_ref() }.map_or(0, |r| r.responder.epoch())
    })
}

/// Sends `len` bytes at `payload` to the owner of `shard` and waits for
/// its reply, for at most `timeout_ms` (waiting for an owner included),
/// then stores the reply in `*out` (free it with `minishard_reply_free`).
///
/// Any node may ask, members and observers alike; for this node's own
/// shard no network is used (with `MINISHARD_DISPATCH_HOST` this call then
/// runs the pending callbacks itself while it waits). While no owner is
/// known (a failover, a hand-over) it waits for one; a node that is no
/// longer the owner passes it on. A request is sent to an owner at most
/// once, and ends in exactly one reply or one error. Payloads are at most
/// the frame limit less 64 bytes: send larger data in parts.
///
/// Errors: `MINISHARD_TIMEOUT`, `MINISHARD_OVERLOADED`,
/// `MINISHARD_HANDLER_FAILED` (the handler's message), `MINISHARD_UNCERTAIN`
/// (the connection was lost after sending), `MINISHARD_CLOSED`,
/// `MINISHARD_INVALID_ARGUMENT` (NULL, a shard that does not exist, a
/// payload too large, or a request for this node's own shard from inside
/// one of its callbacks, which would wait for itself: use
/// `minishard_request_async` there). `*out` is NULL on failure. Any thread.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `payload`: NULL or `len` readable
/// bytes; `out`: NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn minishard_request(
    cluster: *const minishard_cluster,
    shard: u32,
    payload: *const u8,
    len: usize,
    timeout_ms: u64,
    out: *mut *mut minishard_reply,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or writable, by the caller's contract.
        let out = unsafe { mut_arg(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { ref_arg(cluster, "cluster") }?;
        // SAFETY: the caller's contract.
        let payload = unsafe { bytes_arg(payload, len, "payload") }?;
        let reply =
            handle
                .cluster
                .request(shard, payload.to_vec(), Duration::from_millis(timeout_ms))?;
        *out = Box::into_raw(Box::new(minishard_reply::from(reply)));
        Ok(())
    })
}

/// What `minishard_request_async` calls with a request's outcome: on
/// success `result` is `MINISHARD_OK` and `reply` the reply (valid during
/// the call: copy what you keep); otherwise `reply` is NULL and `message`
/// says why (valid during the call).
pub type minishard_request_done = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        result: minishard_result,
        reply: *const minishard_reply,
        message: *const c_char,
    ),
>;

/// `user_data` of a completion: the application's, handed back once on
/// the thread where callbacks run.
struct Completion {
    done:
        unsafe extern "C" fn(*mut c_void, minishard_result, *const minishard_reply, *const c_char),
    user_data: *mut c_void,
}

// SAFETY: the application hands `user_data` to its completion function,
// which the header says runs where callbacks run; it is used once.
unsafe impl Send for Completion {}

impl Completion {
    fn deliver(self, outcome: Result<Reply, RequestError>) {
        crate::panic::boundary(|| match outcome {
            Ok(reply) => {
                let reply = minishard_reply::from(reply);
                // SAFETY: the application's function and user_data, called
                // once; the reply lives through the call.
                unsafe {
                    (self.done)(
                        self.user_data,
                        minishard_result::MINISHARD_OK,
                        &reply,
                        std::ptr::null(),
                    )
                }
            }
            Err(error) => {
                let failure = Failure::from(error);
                let message = CString::new(failure.message.replace('\0', " ")).unwrap_or_default();
                // SAFETY: as above; the message lives through the call.
                unsafe {
                    (self.done)(
                        self.user_data,
                        failure.code,
                        std::ptr::null(),
                        message.as_ptr(),
                    )
                }
            }
        })
    }
}

/// Sends a request like `minishard_request` without waiting: `done` gets
/// its outcome with `user_data`, exactly once, where callbacks run (the
/// handle's callback thread, or `minishard_dispatch` with
/// `MINISHARD_DISPATCH_HOST`), one at a time with them — also when the
/// request fails at once, and when the handle leaves first (then with
/// `MINISHARD_CLOSED` or `MINISHARD_UNCERTAIN`, inside the leave). It may
/// be called from inside a callback, for this node's own shard too (the
/// handler then runs after that callback).
///
/// Errors (then `done` is never called): `MINISHARD_INVALID_ARGUMENT` for
/// a NULL `cluster` or `done`, or a NULL `payload` with `len` > 0.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `payload`: NULL or `len` readable
/// bytes; `done`: NULL or a function of that type.
#[no_mangle]
pub unsafe extern "C" fn minishard_request_async(
    cluster: *const minishard_cluster,
    shard: u32,
    payload: *const u8,
    len: usize,
    timeout_ms: u64,
    done: minishard_request_done,
    user_data: *mut c_void,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { ref_arg(cluster, "cluster") }?;
        let done = done.ok_or_else(|| Failure::invalid("done is NULL"))?;
        // SAFETY: the caller's contract.
        let payload = unsafe { bytes_arg(payload, len, "payload") }?;
        let completion = Completion { done, user_data };
        handle.cluster.request_then(
            shard,
            payload.to_vec(),
            Duration::from_millis(timeout_ms),
            move |outcome| completion.deliver(outcome),
        );
        Ok(())
    })
}

/// The reply's bytes; their count goes into `*len` (if `len` is not NULL).
/// Valid until `minishard_reply_free`. NULL for a NULL reply.
///
/// # Safety
///
/// `reply`: NULL or a live reply; `len`: NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn minishard_reply_data(
    reply: *const minishard_reply,
    len: *mut usize,
) -> *const u8 {
    crate::panic::boundary(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let reply = unsafe { reply.as_ref() };
        // SAFETY: NULL or writable, by the caller's contract.
        if let Some(len) = unsafe { len.as_mut() } {
            *len = reply.map_or(0, |r| r.payload.len());
        }
        reply.map_or(std::ptr::null(), |r| r.payload.as_ptr())
    })
}

/// The address of the node that answered, `"host:port"`. Valid until
/// `minishard_reply_free`; NULL for a NULL reply.
///
/// # Safety
///
/// `reply`: NULL or a live reply.
#[no_mangle]
pub unsafe extern "C" fn minishard_reply_node(reply: *const minishard_reply) -> *const c_char {
    crate::panic::boundary(|| {
        // SAFETY: NULL or live, by the caller's contract.
        unsafe { reply.as_ref() }.map_or(std::ptr::null(), |r| r.node.as_ptr())
    })
}

/// The epoch of the answering node's allocation of the shard when it
/// answered (0 for a NULL reply): compare it with the epochs your store
/// has seen to fence out a deposed owner.
///
/// # Safety
///
/// `reply`: NULL or a live reply.
#[no_mangle]
pub unsafe extern "C" fn minishard_reply_epoch(reply: *const minishard_reply) -> u64 {
    crate::panic::boundary(|| {
        // SAFETY: NULL or live, by the caller's contract.
        unsafe { reply.as_ref() }.map_or(0, |r| r.epoch)
    })
}

/// Frees a reply from `minishard_request`. NULL is a no-op.
///
/// # Safety
///
/// `reply`: NULL or a reply from `minishard_request` not freed yet.
#[no_mangle]
pub unsafe extern "C" fn minishard_reply_free(reply: *mut minishard_reply) {
    crate::panic::boundary(|| {
        if !reply.is_null() {
            // SAFETY: from `Box::into_raw` in `minishard_request`, freed
            // once, by the caller's contract.
            drop(unsafe { Box::from_raw(reply) });
        }
    })
}

/// The value of `key` in the metadata `node` (`"host:port"`) published,
/// written into `buf` like `minishard_get_node` (same `*written` and
/// `MINISHARD_BUFFER_TOO_SMALL` convention). `minishard_status_json` has
/// every node's whole map.
///
/// Errors: `MINISHARD_NOT_FOUND` (the node is not in view, or published no
/// such key), `MINISHARD_INVALID_ARGUMENT` (NULL, non-UTF-8, an address
/// that does not parse), `MINISHARD_BUFFER_TOO_SMALL`. Any thread; no lock.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `node`, `key`: NULL or NUL-terminated
/// strings; `buf`: NULL or `len` writable bytes; `written`: NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn minishard_node_metadata(
    cluster: *const minishard_cluster,
    node: *const c_char,
    key: *const c_char,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { ref_arg(cluster, "cluster") }?;
        // SAFETY: NULL or NUL-terminated, by the caller's contract.
        let node = unsafe { str_arg(node, "node") }?;
        // SAFETY: NULL or NUL-terminated, by the caller's contract.
        let key = unsafe { str_arg(key, "key") }?;
        let id = NodeId::parse(node).map_err(Failure::invalid)?;
        let metadata = handle.cluster.node_metadata(&id);
        let Some(value) = metadata.as_ref().and_then(|m| m.get(key)) else {
            // SAFETY: NULL or writable, by the caller's contract.
            if let Ok(written) = unsafe { mut_arg(written, "written") } {
                *written = 0;
            }
            return Err(Failure::new(
                minishard_result::MINISHARD_NOT_FOUND,
                format_args!("{node} published no metadata {key:?} (or is not in view)"),
            ));
        };
        // SAFETY: `buf`/`len`/`written` as the caller's contract says.
        unsafe { fill(value.as_bytes(), buf, len, written) }
    })
}
