//! Writes `minishard.pc` next to the built libraries (`target/release/`),
//! pointing at the build tree, so that
//! `PKG_CONFIG_PATH=target/release pkg-config --libs minishard` works right
//! after `cargo build`. `install.sh` writes the installed one.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=minishard.pc.in");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: the libraries
    // land in <target>/<profile>.
    let Some(profile_dir) = out.ancestors().nth(3) else {
        return;
    };
    let root = manifest.parent().unwrap_or(&manifest);
    let pc = include_str!("minishard.pc.in")
        .replace("@PREFIX@", &path(root))
        .replace("@LIBDIR@", &path(profile_dir))
        .replace("@INCLUDEDIR@", &path(&root.join("include")))
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    let target = profile_dir.join("minishard.pc");
    if std::fs::read_to_string(&target).ok().as_deref() != Some(pc.as_str()) {
        // Best effort: a read-only target directory only loses the .pc.
        let _ = std::fs::write(target, pc);
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
