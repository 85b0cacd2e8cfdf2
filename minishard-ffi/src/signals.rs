//! Keeping SIGPIPE away from the host process.
//!
//! The engine writes to peers' sockets with `writev`, which raises SIGPIPE
//! when the peer has just closed the connection. A Rust program ignores
//! SIGPIPE from `main`, but a C host usually keeps the default action, which
//! kills the process: one peer crashing at the wrong moment would take every
//! C process it talked to down with it. Threads inherit their creator's
//! signal mask, so `minishard_join` blocks SIGPIPE on the calling thread
//! while the engine starts its threads, and restores the caller's mask: the
//! engine's threads get EPIPE instead of the signal, and the host's own
//! threads and signal handlers are left as they were.

use std::mem::MaybeUninit;

/// SIGPIPE blocked on this thread until dropped, which restores the mask.
pub(crate) struct SigpipeBlocked {
    previous: libc::sigset_t,
}

impl SigpipeBlocked {
    /// Blocks SIGPIPE on the calling thread; `None` if the mask could not be
    /// changed (then nothing changed).
    pub(crate) fn new() -> Option<SigpipeBlocked> {
        let mut pipe = MaybeUninit::<libc::sigset_t>::uninit();
        let mut previous = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises `pipe`; sigaddset and
        // pthread_sigmask get valid pointers to initialised sets, and
        // pthread_sigmask fills `previous` when it returns 0.
        unsafe {
            if libc::sigemptyset(pipe.as_mut_ptr()) != 0
                || libc::sigaddset(pipe.as_mut_ptr(), libc::SIGPIPE) != 0
                || libc::pthread_sigmask(libc::SIG_BLOCK, pipe.as_ptr(), previous.as_mut_ptr()) != 0
            {
                return None;
            }
            Some(SigpipeBlocked {
                previous: previous.assume_init(),
            })
        }
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        // SAFETY: `previous` is the mask pthread_sigmask gave back in `new`,
        // on this same thread (the guard never leaves the function that
        // made it).
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}
