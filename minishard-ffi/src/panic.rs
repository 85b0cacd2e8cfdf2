//! The panic boundary: no panic ever unwinds into C.
//!
//! Every exported function runs its body through [`boundary`]. A panic is
//! caught there and becomes the function's failure value (a result code,
//! NULL, -1, ...), with a message for `minishard_last_error`, the pattern of
//! rustls-ffi's `ffi_panic_boundary!`.

use std::any::Any;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{minishard_result, set_last_error};

/// What an exported function returns when its body panicked.
pub(crate) trait Fallback {
    fn after_panic() -> Self;
}

impl Fallback for minishard_result {
    fn after_panic() -> Self {
        minishard_result::MINISHARD_PANIC
    }
}

impl Fallback for crate::health::minishard_health {
    fn after_panic() -> Self {
        crate::health::minishard_health::MINISHARD_HEALTH_ERROR
    }
}

impl Fallback for () {
    fn after_panic() -> Self {}
}

impl Fallback for usize {
    fn after_panic() -> Self {
        0
    }
}

impl Fallback for i32 {
    fn after_panic() -> Self {
        -1
    }
}

impl<T> Fallback for *mut T {
    fn after_panic() -> Self {
        std::ptr::null_mut()
    }
}

impl Fallback for *const c_char {
    fn after_panic() -> Self {
        std::ptr::null()
    }
}

impl Fallback for *const u8 {
    fn after_panic() -> Self {
        std::ptr::null()
    }
}

impl Fallback for u64 {
    fn after_panic() -> Self {
        0
    }
}

/// Runs `body`, turning a panic into `T::after_panic()` and a message.
///
/// `AssertUnwindSafe` is right here: after a panic the caller only sees the
/// failure value, and every object the body may have touched half-way is
/// either owned by the body (dropped) or a handle whose Rust side keeps its
/// own invariants through poisoning-tolerant locks.
pub(crate) fn boundary<T: Fallback>(body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            set_last_error(&format!(
                "minishard panicked (a bug, please report it): {}",
                panic_message(payload.as_ref())
            ));
            T::after_panic()
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else {
        "no message"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{call, minishard_last_error};

    fn last_error() -> String {
        let mut buf = [0 as c_char; 256];
        // SAFETY: `buf` has 256 writable bytes.
        let needed = unsafe { minishard_last_error(buf.as_mut_ptr(), buf.len()) };
        assert!(needed > 0 && needed <= buf.len());
        buf[..needed - 1].iter().map(|&c| c as u8 as char).collect()
    }

    #[test]
    fn a_panic_becomes_minishard_panic_with_its_message() {
        let rc = call(|| panic!("the engine broke an invariant"));
        assert_eq!(rc, minishard_result::MINISHARD_PANIC);
        assert_eq!(
            last_error(),
            "minishard panicked (a bug, please report it): the engine broke an invariant"
        );
    }

    #[test]
    fn a_panic_in_a_function_returning_a_pointer_becomes_null() {
        let ptr: *mut u8 = boundary(|| panic!("no"));
        assert!(ptr.is_null());
        let fd: i32 = boundary(|| panic!("no"));
        assert_eq!(fd, -1);
    }
}
