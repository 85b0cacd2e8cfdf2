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
mod reason;

mod config;

mod callbacks;

mod cluster;

mod handoff;
mod request;

mod log;

#[cfg(feature = "testing")]
mod testing;

mod buffer;
mod growing;
mod panic;
mod signals;

pub use callbacks::{minishard_callbacks, minishard_node_list, minishard_node_list_push};
pub use cluster::*;
pub use config::*;
pub use error::{
    minishard_last_error, minishard_result, minishard_result_code, minishard_result_name,
};
pub use handoff::*;
pub use health::{minishard_health, minishard_health_code};
pub use log::*;
pub use reason::{
    minishard_release_reason, minishard_release_reason_code, minishard_release_reason_name,
};
pub use request::*;
#[cfg(feature = "testing")]
pub use testing::*;

use std::ffi::c_char;

/// The size of a buffer that holds any node address with its terminating
/// NUL: addresses are at most 261 bytes.
pub const MINISHARD_ADDRESS_MAX: usize = 262;

/// The version of this header (the library's is `minishard_version()`).
/// A program runs with any library of the same major version and at least
/// the minor version it was compiled against; the shared library's SONAME
/// is `libminishard.so.MAJOR`.
pub const MINISHARD_VERSION_MAJOR: u32 = 0;
/// See `MINISHARD_VERSION_MAJOR`.
pub const MINISHARD_VERSION_MINOR: u32 = 1;
/// See `MINISHARD_VERSION_MAJOR`.
pub const MINISHARD_VERSION_PATCH: u32 = 0;
/// The header's version as one number, `MAJOR * 1000000 + MINOR * 1000 +
/// PATCH` (0.1.0 is 1000), for `#if MINISHARD_VERSION_NUM >= ...` and to
/// compare with `minishard_version_num()`.
pub const MINISHARD_VERSION_NUM: u32 =
    MINISHARD_VERSION_MAJOR * 1000000 + MINISHARD_VERSION_MINOR * 1000 + MINISHARD_VERSION_PATCH;

/// The library's version, e.g. `"0.1.0"`: a static string, never free it.
/// Any thread.
#[no_mangle]
pub extern "C" fn minishard_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// The library's version as `MINISHARD_VERSION_NUM` counts it: at run time,
/// `minishard_version_num() / 1000000 == MINISHARD_VERSION_MAJOR` and
/// `minishard_version_num() >= MINISHARD_VERSION_NUM` say the loaded library
/// serves a program compiled against this header. Any thread.
#[no_mangle]
pub extern "C" fn minishard_version_num() -> u32 {
    MINISHARD_VERSION_NUM
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_macros_are_the_crate_version() {
        // cbindgen writes the constants' literal values into the header, so
        // they are literals here; this keeps them in step with Cargo.toml.
        let number = |s: &str| s.parse::<u32>().unwrap();
        assert_eq!(
            (
                super::MINISHARD_VERSION_MAJOR,
                super::MINISHARD_VERSION_MINOR,
                super::MINISHARD_VERSION_PATCH
            ),
            (
                number(env!("CARGO_PKG_VERSION_MAJOR")),
                number(env!("CARGO_PKG_VERSION_MINOR")),
                number(env!("CARGO_PKG_VERSION_PATCH"))
            ),
            "update the MINISHARD_VERSION_* constants in minishard-ffi/src/lib.rs to Cargo.toml's version"
        );
    }

    #[test]
    fn the_address_buffer_size_fits_the_longest_address() {
        assert_eq!(
            super::MINISHARD_ADDRESS_MAX,
            minishard::core::ids::MAX_ADDRESS_LEN + 1
        );
    }
}
