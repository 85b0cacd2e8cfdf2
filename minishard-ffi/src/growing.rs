//! The rule that lets the structs C allocates (`minishard_callbacks`,
//! `minishard_stats`) grow without breaking compiled programs, as the
//! header states it: each starts with `size_t struct_size`, which the
//! caller sets to `sizeof` the struct as its header declares it; fields are
//! only ever added at the end; the library reads and writes only the first
//! `struct_size` bytes.
//!
//! - In (callbacks): fields past the caller's `struct_size` count as NULL.
//!   A `struct_size` larger than this library's struct (a program built
//!   against a newer header) is accepted only if the extra bytes are all
//!   zero: a callback this library does not know is refused, not ignored.
//! - Out (stats): only whole fields within `struct_size` are written; the
//!   rest of the caller's struct is left as it was.
//!
//! For maintainers: add fields only at the end of these structs, and never
//! one that would fit in trailing padding (a test checks there is none), so
//! every version's `sizeof` differs.

use crate::error::Failure;

/// Anything larger is not a struct size but an unset field: the memory
/// behind it is not read.
const PLAUSIBLE_SIZE: usize = 4096;

/// A struct under the rule.
///
/// # Safety
///
/// The type must be `repr(C)`, start with a `usize` `struct_size`, and be
/// valid when all its bytes are zero; `BOUNDARIES` must be the offsets of
/// its fields after the first, in order, then its size.
pub(crate) unsafe trait GrowingStruct: Copy {
    /// The name C knows it by.
    const NAME: &'static str;
    /// Every size a version of the struct can have: where each field after
    /// `struct_size` starts, then the whole size.
    const BOUNDARIES: &'static [usize];
    /// The smallest `struct_size` accepted.
    const MIN_SIZE: usize;
}

fn size_error<T: GrowingStruct>(size: usize) -> Failure {
    Failure::invalid(format_args!(
        "{name}.struct_size is {size}: set it to sizeof({name}) (this library's is {ours}); \
         see \"growing structs\" in minishard.h",
        name = T::NAME,
        ours = std::mem::size_of::<T>(),
    ))
}

/// Copies a caller's struct by the rule: what its `struct_size` covers,
/// zeros for the rest. With an unusable `struct_size` it fails, but still
/// gives the first `MIN_SIZE` bytes (which every caller's struct has) so
/// that what they own can be released.
///
/// # Safety
///
/// `ptr` must be valid for reads of its `struct_size` bytes, and of at
/// least `T::MIN_SIZE` bytes.
pub(crate) unsafe fn read_in<T: GrowingStruct>(ptr: *const T) -> (T, Result<(), Failure>) {
    let ours = std::mem::size_of::<T>();
    // SAFETY: `T` is valid all-zero (trait contract).
    let mut copy: T = unsafe { std::mem::zeroed() };
    // SAFETY: the struct starts with an aligned `usize` (trait contract),
    // readable by the caller's contract.
    let size = unsafe { ptr.cast::<usize>().read() };
    let usable = size >= T::MIN_SIZE
        && size <= PLAUSIBLE_SIZE
        && (size > ours || T::BOUNDARIES.contains(&size));
    let take = if usable { size.min(ours) } else { T::MIN_SIZE };
    // SAFETY: `take` bytes are readable (`size` or `MIN_SIZE`, by the
    // caller's contract) and fit in `copy`; the bytes copied end on a field
    // boundary, so every field is either whole or zero.
    unsafe {
        std::ptr::copy_nonoverlapping(
            ptr.cast::<u8>(),
            std::ptr::addr_of_mut!(copy).cast::<u8>(),
            take,
        )
    };
    if !usable {
        return (copy, Err(size_error::<T>(size)));
    }
    if size > ours {
        // SAFETY: `size` bytes are readable, by the caller's contract.
        let extra = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>().add(ours), size - ours) };
        if let Some(at) = extra.iter().position(|&b| b != 0) {
            return (
                copy,
                Err(Failure::invalid(format_args!(
                    "{name}.struct_size is {size}, larger than this library's {ours}, and byte {} \
                     is set: the program was built against a newer minishard.h than this library \
                     ({}) and uses a field it does not know",
                    ours + at,
                    env!("CARGO_PKG_VERSION"),
                    name = T::NAME,
                ))),
            );
        }
    }
    (copy, Ok(()))
}

/// Writes `value` into a caller's struct by the rule: the whole fields that
/// fit in its `struct_size` (which is kept), nothing past them.
///
/// # Safety
///
/// `out` must be valid for reads of its `struct_size` field and for writes
/// of that many bytes.
pub(crate) unsafe fn write_out<T: GrowingStruct>(value: &T, out: *mut T) -> Result<(), Failure> {
    // SAFETY: the struct starts with an aligned `usize`, readable by the
    // caller's contract.
    let size = unsafe { out.cast::<usize>().read() };
    if size < T::MIN_SIZE {
        return Err(size_error::<T>(size));
    }
    let fits = T::BOUNDARIES
        .iter()
        .copied()
        .filter(|&end| end <= size)
        .max()
        .unwrap_or(0);
    let skip = std::mem::size_of::<usize>();
    if fits > skip {
        // SAFETY: bytes `skip..fits` lie within the caller's `struct_size`
        // (writable by its contract) and within `value`; whole fields only.
        unsafe {
            std::ptr::copy_nonoverlapping(
                std::ptr::from_ref(value).cast::<u8>().add(skip),
                out.cast::<u8>().add(skip),
                fits - skip,
            )
        };
    }
    Ok(())
}

/// `BOUNDARIES` for a struct: the offsets of the fields after the first,
/// then the size.
macro_rules! boundaries {
    ($t:ty; $($field:ident),+ $(,)?) => {
        &[$(std::mem::offset_of!($t, $field),)+ std::mem::size_of::<$t>()]
    };
}
pub(crate) use boundaries;

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::GrowingStruct;
    use crate::{minishard_callbacks, minishard_stats};

    fn check_layout<T: GrowingStruct>(last_field_end: usize) {
        let b = T::BOUNDARIES;
        assert_eq!(b[0], size_of::<usize>(), "{}: struct_size first", T::NAME);
        assert!(
            b.windows(2).all(|w| w[0] < w[1]),
            "{}: fields in order",
            T::NAME
        );
        assert!(
            b.contains(&T::MIN_SIZE),
            "{}: the minimum is a boundary",
            T::NAME
        );
        // No trailing padding: a field added later could hide in it, and
        // two versions would have the same size. (A new last field: update
        // the field named below.)
        assert_eq!(
            last_field_end,
            size_of::<T>(),
            "{}: trailing padding",
            T::NAME
        );
    }

    #[test]
    fn the_growing_structs_follow_the_rule() {
        check_layout::<minishard_callbacks>(
            offset_of!(minishard_callbacks, deallocated_with_hand_off) + size_of::<usize>(),
        );
        check_layout::<minishard_stats>(
            offset_of!(minishard_stats, heartbeat_rtt_micros) + size_of::<u64>(),
        );
    }
}
