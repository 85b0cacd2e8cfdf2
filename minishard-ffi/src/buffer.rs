//! Crossing the boundary with strings and out-parameters: every pointer C
//! hands in is checked for NULL and every string for UTF-8 here, so the rest
//! of the crate works with references.

use std::ffi::{c_char, CStr};

use crate::error::{minishard_result, Failure};

/// A C string argument as `&str`.
///
/// # Safety
///
/// `ptr` must be NULL or point to a NUL-terminated string that stays valid
/// and unchanged for `'a`.
pub(crate) unsafe fn str_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::invalid(format_args!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated, valid for 'a, by the caller's
    // contract.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes.to_str().map_err(|e| {
        Failure::invalid(format_args!(
            "{what} is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// A pointer argument as a reference.
///
/// # Safety
///
/// `ptr` must be NULL or valid for reads for `'a`, with no writer meanwhile.
pub(crate) unsafe fn ref_arg<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, Failure> {
    // SAFETY: `as_ref` needs NULL or a valid pointer: the caller's contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::invalid(format_args!("{what} is NULL")))
}

/// A pointer argument as a mutable reference.
///
/// # Safety
///
/// `ptr` must be NULL or valid for reads and writes for `'a`, with no other
/// access meanwhile.
pub(crate) unsafe fn mut_arg<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: `as_mut` needs NULL or a valid, unaliased pointer: the caller's
    // contract.
    unsafe { ptr.as_mut() }.ok_or_else(|| Failure::invalid(format_args!("{what} is NULL")))
}

/// Fills a caller's buffer with `text` and its NUL, the convention of every
/// function that fills a buffer: `*written` gets the size of the whole
/// string including the NUL, on success and on `MINISHARD_BUFFER_TOO_SMALL`
/// alike; when the buffer is too small it gets an empty string (if `len` >
/// 0). `buf` may be NULL only with `len` 0, to ask for the size.
///
/// # Safety
///
/// `buf` must be NULL or point to `len` writable bytes; `written` must be
/// NULL or point to a writable `size_t`.
pub(crate) unsafe fn fill(
    text: &[u8],
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> Result<(), Failure> {
    // SAFETY: NULL or writable, by the caller's contract.
    let written = unsafe { mut_arg(written, "written") }?;
    if buf.is_null() && len > 0 {
        return Err(Failure::invalid("buf is NULL but len is not 0"));
    }
    let needed = text.len() + 1;
    *written = needed;
    if len < needed {
        if len > 0 {
            // SAFETY: `buf` is non-NULL with at least one writable byte.
            unsafe { *buf = 0 };
        }
        return Err(Failure::new(
            minishard_result::MINISHARD_BUFFER_TOO_SMALL,
            format_args!("the buffer has {len} bytes; {needed} are needed, NUL included"),
        ));
    }
    // SAFETY: `buf` has `len` >= text.len() + 1 writable bytes, and cannot
    // overlap `text`, which Rust owns.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
    Ok(())
}

/// Copies as much of `text` as fits in `len` bytes with a NUL after it,
/// cutting at a character boundary.
///
/// # Safety
///
/// `buf` must be NULL or point to `len` writable bytes.
pub(crate) unsafe fn copy_truncated(text: &str, buf: *mut c_char, len: usize) {
    if buf.is_null() || len == 0 {
        return;
    }
    let mut n = text.len().min(len - 1);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `buf` has `len` > n writable bytes, disjoint from `text`.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
}
