//! Why an allocation ended, as `deallocated_with_reason` hears it.

use std::ffi::c_char;

use minishard::ReleaseReason;

/// Why this node's allocation ended. What to do with its state differs:
/// hand it to the winner, persist it, or drop it.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum minishard_release_reason {
    /// It lost a conflict after a split healed; the winner (named) keeps
    /// the shard.
    MINISHARD_RELEASE_LOST_CONFLICT = 0,
    /// The application asked to leave (`minishard_leave`).
    MINISHARD_RELEASE_LEFT = 1,
    /// The handle was freed (`minishard_cluster_free`) without leaving
    /// first.
    MINISHARD_RELEASE_SHUTDOWN = 2,
    /// Too few members were visible for `transition_timeout`.
    MINISHARD_RELEASE_DEGRADED = 3,
    /// This node is no longer in the member list (its own, or every member
    /// it reaches refuses it as not theirs).
    MINISHARD_RELEASE_REMOVED = 4,
}

impl From<ReleaseReason> for minishard_release_reason {
    fn from(reason: ReleaseReason) -> minishard_release_reason {
        match reason {
            ReleaseReason::LostConflict => {
                minishard_release_reason::MINISHARD_RELEASE_LOST_CONFLICT
            }
            ReleaseReason::Left => minishard_release_reason::MINISHARD_RELEASE_LEFT,
            ReleaseReason::Shutdown => minishard_release_reason::MINISHARD_RELEASE_SHUTDOWN,
            ReleaseReason::Degraded => minishard_release_reason::MINISHARD_RELEASE_DEGRADED,
            ReleaseReason::Removed => minishard_release_reason::MINISHARD_RELEASE_REMOVED,
        }
    }
}

/// The lower-case name of a `minishard_release_reason` (`"lost_conflict"`,
/// `"left"`, `"shutdown"`, `"degraded"`, `"removed"`), as logs and the
/// other bindings spell it, or `"unknown"` for a value that is not one.
///
/// The string is static: never free it. Any thread.
#[no_mangle]
pub extern "C" fn minishard_release_reason_name(
    reason: minishard_release_reason_code,
) -> *const c_char {
    crate::panic::boundary(|| {
        let name = match reason {
            0 => c"lost_conflict",
            1 => c"left",
            2 => c"shutdown",
            3 => c"degraded",
            4 => c"removed",
            _ => c"unknown",
        };
        name.as_ptr()
    })
}

/// A `minishard_release_reason` as C passes it: any `uint32_t`.
#[allow(non_camel_case_types)]
pub type minishard_release_reason_code = u32;
