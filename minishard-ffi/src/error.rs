//! Result codes and the per-thread last error message.
//!
//! Every failing call stores a readable message for the calling thread
//! before it returns its code, so a C caller can always ask why. The
//! message is never cleared by a successful call: it describes the most
//! recent failure on this thread.

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::fmt;

use minishard::Error;

/// What a call did. `MINISHARD_OK` is 0; every other value is a failure whose
/// message `minishard_last_error` gives on the same thread.
///
/// In C the type is a `uint32_t`, so values outside this list can be
/// passed in; functions that take one treat them as unknown.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum minishard_result {
    /// Success.
    MINISHARD_OK = 0,
    /// A NULL pointer, a string that is not UTF-8, a value out of range, or
    /// a call that is not allowed here (e.g. from inside a callback).
    MINISHARD_INVALID_ARGUMENT = 1,
    /// A setting, or the answer of `nodes`/`shard_count` at join, is
    /// unusable (bad address, empty cookie, timings out of order, zero
    /// shards, more shards than members, ...).
    MINISHARD_CONFIG = 2,
    /// A network operation failed (e.g. the listen address is in use).
    MINISHARD_IO = 3,
    /// A wait ran out of time.
    MINISHARD_TIMEOUT = 4,
    /// There is no such thing right now (a shard without owner, no shard
    /// on this node).
    MINISHARD_NOT_FOUND = 5,
    /// The caller's buffer is too small; `*written` holds the size needed,
    /// terminating NUL included.
    MINISHARD_BUFFER_TOO_SMALL = 6,
    /// The handle has left the cluster (or crashed, in tests).
    MINISHARD_CLOSED = 7,
    /// A callback failed where its answer was needed (at join).
    MINISHARD_CALLBACK_FAILED = 8,
    /// minishard itself panicked; the call did nothing useful. Please report
    /// it with the message.
    MINISHARD_PANIC = 9,
    /// Too many requests in flight (from this handle, to that owner, or
    /// waiting at it): the handler did not run; try again later.
    MINISHARD_OVERLOADED = 10,
    /// The owner's request handler failed (the message is its own), or
    /// dropped its responder without answering.
    MINISHARD_HANDLER_FAILED = 11,
    /// The connection to the owner was lost after the request was sent:
    /// the handler may or may not have run. Requests are never sent twice.
    MINISHARD_UNCERTAIN = 12,
    /// No member accepts this node and some refuse it (a wrong cookie,
    /// cluster name or version, or not in their member list): it is part of
    /// no cluster and cannot become available. The message names the
    /// members that refuse it and what they said (docs/design.md 6.8).
    MINISHARD_MISCONFIGURED = 13,
}

use minishard_result::*;

impl minishard_result {
    pub(crate) fn name(self) -> &'static CStr {
        match self {
            MINISHARD_OK => c"MINISHARD_OK",
            MINISHARD_INVALID_ARGUMENT => c"MINISHARD_INVALID_ARGUMENT",
            MINISHARD_CONFIG => c"MINISHARD_CONFIG",
            MINISHARD_IO => c"MINISHARD_IO",
            MINISHARD_TIMEOUT => c"MINISHARD_TIMEOUT",
            MINISHARD_NOT_FOUND => c"MINISHARD_NOT_FOUND",
            MINISHARD_BUFFER_TOO_SMALL => c"MINISHARD_BUFFER_TOO_SMALL",
            MINISHARD_CLOSED => c"MINISHARD_CLOSED",
            MINISHARD_CALLBACK_FAILED => c"MINISHARD_CALLBACK_FAILED",
            MINISHARD_PANIC => c"MINISHARD_PANIC",
            MINISHARD_OVERLOADED => c"MINISHARD_OVERLOADED",
            MINISHARD_HANDLER_FAILED => c"MINISHARD_HANDLER_FAILED",
            MINISHARD_UNCERTAIN => c"MINISHARD_UNCERTAIN",
            MINISHARD_MISCONFIGURED => c"MINISHARD_MISCONFIGURED",
        }
    }

    pub(crate) fn from_raw(raw: u32) -> Option<minishard_result> {
        const ALL: [minishard_result; 14] = [
            MINISHARD_OK,
            MINISHARD_INVALID_ARGUMENT,
            MINISHARD_CONFIG,
            MINISHARD_IO,
            MINISHARD_TIMEOUT,
            MINISHARD_NOT_FOUND,
            MINISHARD_BUFFER_TOO_SMALL,
            MINISHARD_CLOSED,
            MINISHARD_CALLBACK_FAILED,
            MINISHARD_PANIC,
            MINISHARD_OVERLOADED,
            MINISHARD_HANDLER_FAILED,
            MINISHARD_UNCERTAIN,
            MINISHARD_MISCONFIGURED,
        ];
        ALL.into_iter().find(|r| *r as u32 == raw)
    }
}

/// A failure on its way back to C: its code and its message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: minishard_result,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: minishard_result, message: impl fmt::Display) -> Failure {
        Failure {
            code,
            message: message.to_string(),
        }
    }

    pub(crate) fn invalid(message: impl fmt::Display) -> Failure {
        Failure::new(MINISHARD_INVALID_ARGUMENT, message)
    }

    /// Stores the message for this thread and gives the code to return.
    pub(crate) fn report(self) -> minishard_result {
        set_last_error(&self.message);
        self.code
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        let code = match &error {
            Error::Config(_) => MINISHARD_CONFIG,
            Error::Io(_) => MINISHARD_IO,
            Error::Timeout(_) => MINISHARD_TIMEOUT,
            Error::Closed => MINISHARD_CLOSED,
            Error::Callback { .. } => MINISHARD_CALLBACK_FAILED,
            Error::InvalidArgument(_) => MINISHARD_INVALID_ARGUMENT,
            Error::Misconfigured(_) => MINISHARD_MISCONFIGURED,
        };
        Failure::new(code, error)
    }
}

impl From<minishard::RequestError> for Failure {
    fn from(error: minishard::RequestError) -> Failure {
        use minishard::RequestError as E;
        let code = match &error {
            E::Timeout => MINISHARD_TIMEOUT,
            E::Overloaded => MINISHARD_OVERLOADED,
            E::HandlerFailed(_) => MINISHARD_HANDLER_FAILED,
            E::Uncertain => MINISHARD_UNCERTAIN,
            E::Closed => MINISHARD_CLOSED,
            _ => MINISHARD_INVALID_ARGUMENT,
        };
        Failure::new(code, error)
    }
}

/// The outcome of an exported function's body, before it becomes a code.
pub(crate) type Outcome = Result<(), Failure>;

/// Runs the body of a function that returns a `minishard_result`: inside the
/// panic boundary, storing the message of a failure for this thread.
pub(crate) fn call(body: impl FnOnce() -> Outcome) -> minishard_result {
    crate::panic::boundary(|| match body() {
        Ok(()) => MINISHARD_OK,
        Err(failure) => failure.report(),
    })
}

thread_local! {
    // Reused across failures so that reporting one does not allocate once
    // the thread has seen a message of that size.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) fn set_last_error(message: &str) {
    LAST_ERROR.with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            last.clear();
            // A NUL inside would cut the message short in C.
            last.extend(message.chars().map(|c| if c == '\0' { ' ' } else { c }));
        }
    });
}

/// The name of a result code, e.g. `"MINISHARD_TIMEOUT"`, or
/// `"MINISHARD_UNKNOWN"` for a value that is not a `minishard_result`.
///
/// The string is static: never free it. Any thread.
#[no_mangle]
pub extern "C" fn minishard_result_name(result: minishard_result_code) -> *const c_char {
    crate::panic::boundary(|| match minishard_result::from_raw(result) {
        Some(result) => result.name().as_ptr(),
        None => c"MINISHARD_UNKNOWN".as_ptr(),
    })
}

/// Copies the calling thread's last error message into `buf` (`len` bytes),
/// truncated if needed and always NUL-terminated when `len > 0`.
///
/// Returns the size of the whole message including its terminating NUL (so
/// a value greater than `len` means it was truncated), or 0 when no call
/// has failed on this thread yet. `buf` may be NULL when `len` is 0, to ask
/// for the size. The message describes the most recent failure on this
/// thread; successful calls do not clear it. Any thread.
///
/// # Safety
///
/// `buf` must be NULL or point to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn minishard_last_error(buf: *mut c_char, len: usize) -> usize {
    crate::panic::boundary(|| {
        LAST_ERROR.with(|last| {
            let Ok(last) = last.try_borrow() else {
                return 0;
            };
            if last.is_empty() {
                if !buf.is_null() && len > 0 {
                    // SAFETY: the caller gives `len` > 0 writable bytes at `buf`.
                    unsafe { *buf = 0 };
                }
                return 0;
            }
            // SAFETY: the caller gives `len` writable bytes at `buf`, or NULL.
            unsafe { crate::buffer::copy_truncated(&last, buf, len) };
            last.len() + 1
        })
    })
}

/// A `minishard_result` as C passes it in: any `uint32_t`. Taken as a plain
/// integer so that an out-of-range value from C is a value to refuse, not
/// undefined behaviour.
pub type minishard_result_code = u32;
