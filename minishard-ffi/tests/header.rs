//! The committed `include/minishard.h` must be what cbindgen writes from
//! this crate today: C users compile against the header, not the Rust.
//!
//! `MINISHARD_BLESS=1 cargo test -p minishard-ffi --test header` rewrites it.

use std::path::PathBuf;

#[test]
fn the_committed_header_is_what_cbindgen_generates() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let header = crate_dir.join("../include/minishard.h");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("minishard-ffi/cbindgen.toml parses");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");

    if std::env::var_os("MINISHARD_BLESS").is_some() {
        std::fs::write(&header, &generated).expect("write include/minishard.h");
        return;
    }
    let committed = std::fs::read_to_string(&header).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()))
            + 1;
        panic!(
            "include/minishard.h is stale: it differs from what cbindgen generates from \
             minishard-ffi/src, first at line {line}.\n\
             Regenerate it with `MINISHARD_BLESS=1 cargo test -p minishard-ffi --test header` \
             and commit it."
        );
    }
}
