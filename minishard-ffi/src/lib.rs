//! The C ABI of minishard: `libminishard.so` / `libminishard.a` and the
//! header `include/minishard.h`, which cbindgen generates from this crate
//! (see `cbindgen.toml`; `tests/header.rs` fails when the committed header
//! is stale).
//!
//! The shape follows the C libraries people like to embed (rustls-ffi,
//! librdkafka): opaque handles with a constructor and a free function each,
//! a result code plus a per-thread message, `user_data` on every callback,
//! and a host-dispatch mode whose callbacks run only on the host's thread.
//!
//! Every exported function runs inside [`panic::boundary`], checks every
//! pointer and string it is handed (module `buffer`), and maps the Rust
//! API's [`minishard::Error`] onto a `minishard_result`. This crate is the
//! only place in the project with `unsafe` code; each block says why it is
//! sound.

#![allow(non_camel_case_types)]

// The header lists items in the order of these modules: results and
// errors, health, configuration, callbacks, the cluster handle, logging,
// test hooks. (Blank lines keep rustfmt from sorting them.)
mod error;

mod health;

mod config;

mod callbacks;

mod cluster;

mod log;

#[cfg(feature = "testing")]
mod testing;

mod buffer;
mod panic;
mod signals;

pub use callbacks::{minishard_callbacks, minishard_node_list, minishard_node_list_push};
pub use cluster::*;
pub use config::*;
pub use error::{
    minishard_last_error, minishard_result, minishard_result_code, minishard_result_name,
};
pub use health::{minishard_health, minishard_health_code};
pub use log::*;
#[cfg(feature = "testing")]
pub use testing::*;

use std::ffi::c_char;

/// The size of a buffer that holds any node address with its terminating
/// NUL: addresses are at most 261 bytes.
pub const MINISHARD_ADDRESS_MAX: usize = 262;

/// The library's version, e.g. `"0.1.0"`: a static string, never free it.
/// Any thread.
#[no_mangle]
pub extern "C" fn minishard_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_address_buffer_size_fits_the_longest_address() {
        assert_eq!(
            super::MINISHARD_ADDRESS_MAX,
            minishard::core::ids::MAX_ADDRESS_LEN + 1
        );
    }
}
