//! The core is sans-IO: no runtime, no sockets, no threads, no clock. A
//! simulator can drive it only because of that, so it is checked here.

use std::path::Path;

#[test]
fn the_core_imports_nothing_that_does_io_or_reads_a_clock() {
    let forbidden = [
        "tokio",
        "std::net",
        "std::thread",
        "std::fs",
        "std::io",
        "std::time::Instant",
        "SystemTime",
        "crate::runtime",
        "crate::mesh",
        "crate::api",
        "rand::",
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let source = std::fs::read_to_string(&path).unwrap();
        // Code only: the comments may well explain what drives the core.
        let code: String = source
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for word in forbidden {
            assert!(
                !code.contains(word),
                "{} mentions {word}: the core must stay free of I/O, threads and clocks",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 8,
        "expected the core's modules in {}",
        dir.display()
    );
}
