//! Writes throwaway TLS certificates for the C and Python tests:
//! `cargo run -p minishard --example test-certs -- DIR` puts `ca.pem`,
//! `node.pem`, `node-key.pem` (valid for 127.0.0.1 and localhost) and, from
//! an unrelated CA, `other-ca.pem`, `other.pem`, `other-key.pem` into DIR.
//! For tests only: the keys are written unprotected.

#[path = "../tests/common/certs.rs"]
#[allow(dead_code)]
mod certs;

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: test-certs DIR");
        std::process::exit(2);
    };
    certs::write_test_set(std::path::Path::new(&dir));
}
