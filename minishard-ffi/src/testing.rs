//! Fault injection for tests, over the Rust API's `cut`/`heal`/`crash`.
//! These exist so that C test suites can split a cluster inside one
//! process; production code has no use for them.

use std::ffi::c_char;

use minishard::NodeId;

use crate::buffer::{ref_arg, str_arg};
use crate::cluster::minishard_cluster;
use crate::error::{call, minishard_result, Failure};

/// TESTING ONLY. Drops all traffic between this node and `peer`
/// (`"host:port"`), both ways, as a cut cable would, until
/// `minishard_testing_heal`. Cut on both nodes for a clean split.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` (NULL, non-UTF-8),
/// `MINISHARD_CONFIG` (`peer` does not parse). Any thread.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `peer`: NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn minishard_testing_cut(
    cluster: *const minishard_cluster,
    peer: *const c_char,
) -> minishard_result {
    // SAFETY: the caller's contract covers both pointers.
    unsafe { with_peer(cluster, peer, |handle, peer| handle.cluster.cut(peer)) }
}

/// TESTING ONLY. Restores traffic with `peer` after
/// `minishard_testing_cut`. Errors as for `minishard_testing_cut`.
///
/// # Safety
///
/// `cluster`: NULL or a live handle; `peer`: NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn minishard_testing_heal(
    cluster: *const minishard_cluster,
    peer: *const c_char,
) -> minishard_result {
    // SAFETY: the caller's contract covers both pointers.
    unsafe { with_peer(cluster, peer, |handle, peer| handle.cluster.heal(peer)) }
}

/// TESTING ONLY. Restores traffic with every peer.
///
/// Errors: `MINISHARD_INVALID_ARGUMENT` for NULL. Any thread.
///
/// # Safety
///
/// `cluster`: NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn minishard_testing_heal_all(
    cluster: *const minishard_cluster,
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { ref_arg(cluster, "cluster") }?;
        handle.cluster.heal_all();
        Ok(())
    })
}

/// TESTING ONLY. Stops the node at once, as if its process died, and frees
/// the handle: no leave, no goodbye to peers (they notice the closed
/// connections and wait out `node_grace`), and no more callbacks: the
/// current allocation gets no `deallocated`, so its state is the caller's
/// to free. `free_user_data` is called. NULL is a no-op.
///
/// Same rules as `minishard_cluster_free`: no other call on the handle may
/// run or start; from inside a callback of this handle it does nothing and
/// records an error.
///
/// # Safety
///
/// `cluster`: NULL or a live handle that no other thread uses any more.
#[no_mangle]
pub unsafe extern "C" fn minishard_testing_crash(cluster: *mut minishard_cluster) {
    crate::panic::boundary(|| {
        if cluster.is_null() {
            return;
        }
        // SAFETY: non-NULL and live, by the caller's contract.
        let id = unsafe { &*cluster }.id;
        if crate::callbacks::in_callback_of(id) {
            crate::error::set_last_error(
                "minishard_testing_crash cannot be called from inside a callback of the same handle",
            );
            return;
        }
        // SAFETY: from `Box::into_raw` in `minishard_join`, freed once, by
        // the caller's contract.
        unsafe { Box::from_raw(cluster) }.end(true);
    })
}

/// # Safety
///
/// `cluster`: NULL or a live handle; `peer`: NULL or a NUL-terminated string.
unsafe fn with_peer(
    cluster: *const minishard_cluster,
    peer: *const c_char,
    body: impl FnOnce(&minishard_cluster, &NodeId),
) -> minishard_result {
    call(|| {
        // SAFETY: NULL or live, by the caller's contract.
        let handle = unsafe { ref_arg(cluster, "cluster") }?;
        // SAFETY: NULL or NUL-terminated, by the caller's contract.
        let peer = unsafe { str_arg(peer, "peer") }?;
        let peer =
            NodeId::parse(peer).map_err(|e| Failure::new(minishard_result::MINISHARD_CONFIG, e))?;
        body(handle, &peer);
        Ok(())
    })
}
