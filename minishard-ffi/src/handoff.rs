//! Hand-offs (docs/design.md 11.8) from C: what `deallocated_with_hand_off`
//! writes for the shard's next owner, and the `minishard_hand_off` that
//! `allocated_with_hand_off` and `prolonged_with_hand_off` receive.

use std::ffi::{c_char, CString};

use minishard::HandOff;

use crate::error::{call, minishard_result, Failure};
use crate::request::bytes_arg;

/// What the previous owner of a shard handed off, as a receiving callback
/// sees it: valid during that call only (copy what you keep).
#[repr(C)]
pub struct minishard_hand_off {
    /// The node whose allocation ended, `"host:port"`.
    pub from: *const c_char,
    /// The epoch of that allocation.
    pub epoch: u64,
    /// Its bytes (NULL when `len` is 0).
    pub data: *const u8,
    /// How many.
    pub len: usize,
}

/// A hand-off and the C view of it, alive together for one call.
pub(crate) struct Received {
    from: CString,
    hand_off: HandOff,
}

impl Received {
    pub(crate) fn new(hand_off: HandOff) -> Received {
        Received {
            // A NodeId never holds a NUL.
            from: CString::new(hand_off.from.as_str()).unwrap_or_default(),
            hand_off,
        }
    }

    /// The C view, valid while `self` is.
    pub(crate) fn view(&self) -> minishard_hand_off {
        minishard_hand_off {
            from: self.from.as_ptr(),
            epoch: self.hand_off.epoch,
            data: if self.hand_off.data.is_empty() {
                std::ptr::null()
            } else {
                self.hand_off.data.as_ptr()
            },
            len: self.hand_off.data.len(),
        }
    }
}

/// Where `deallocated_with_hand_off` writes the bytes for the shard's next
/// owner, with `minishard_hand_off_write`, during that call only.
pub struct minishard_hand_off_writer {
    pub(crate) data: Option<Vec<u8>>,
}

/// Appends a copy of `len` bytes at `data` to the hand-off being written:
/// the shard's next owner receives everything written (one call with `len`
/// 0 hands off zero bytes, which is not the same as none). Only inside the
/// `deallocated_with_hand_off` call that got `writer`.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for a NULL `writer`, or a NULL
/// `data` with `len` > 0 (nothing is appended).
///
/// # Safety
///
/// `writer`: NULL or the one `deallocated_with_hand_off` got, during that
/// call; `data`: NULL or `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn minishard_hand_off_write(
    writer: *mut minishard_hand_off_writer,
    data: *const u8,
    len: usize,
) -> minishard_result {
    call(|| {
        if writer.is_null() {
            return Err(Failure::invalid("writer is NULL"));
        }
        // SAFETY: the caller's contract.
        let bytes = unsafe { bytes_arg(data, len, "data") }?;
        // SAFETY: non-NULL, and the live writer of the current call, by the
        // caller's contract; used by this thread only during it.
        let writer = unsafe { &mut *writer };
        writer
            .data
            .get_or_insert_with(Vec::new)
            .extend_from_slice(bytes);
        Ok(())
    })
}
