//! Two things for the C library, next to the built libraries
//! (`target/<profile>/`):
//!
//! - The SONAME: `libminishard.so` is linked with `-soname
//!   libminishard.so.MAJOR`, so programs record `libminishard.so.MAJOR` and
//!   keep working across compatible updates; `libminishard.so.MAJOR` is
//!   made a symlink to the built file, so programs linked straight against
//!   the build tree run too. `install.sh` installs the real file as
//!   `libminishard.so.MAJOR.MINOR.PATCH` with the usual two symlinks.
//! - `minishard.pc`, pointing at the build tree, so that
//!   `PKG_CONFIG_PATH=target/release pkg-config --libs minishard` works right
//!   after `cargo build`. `install.sh` writes the installed one.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=minishard.pc.in");
    let soname = format!("libminishard.so.{}", env!("CARGO_PKG_VERSION_MAJOR"));
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if linux {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: the libraries
    // land in <target>/<profile>.
    let Some(profile_dir) = out.ancestors().nth(3) else {
        return;
    };
    #[cfg(unix)]
    if linux {
        // Best effort, like the .pc below. The link may dangle until the
        // library is built, moments later.
        let link = profile_dir.join(&soname);
        if std::fs::read_link(&link).ok().as_deref() != Some(Path::new("libminishard.so")) {
            let _ = std::fs::remove_file(&link);
            let _ = std::os::unix::fs::symlink("libminishard.so", &link);
        }
    }
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
