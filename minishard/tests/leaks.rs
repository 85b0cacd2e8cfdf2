//! Leaving, dropping, crashing and failed joins leave no thread and no
//! socket behind. Its own test binary, so no other test's threads count.

mod common;

use std::time::Duration;

use common::*;
use minishard::{Cluster, Config};

/// Nothing more than `before`: a thread of the warm-up cluster that was
/// still on its way out when `before` was taken may be gone by now.
fn no_more_than(before: (usize, usize)) -> bool {
    let now = threads_and_fds();
    now.0 <= before.0 && now.1 <= before.1
}

#[test]
fn nothing_is_left_behind() {
    // Warm up process-wide statics (tracing, clocks) before counting.
    drop(Local::start("warmup", 2, 1));
    let before = threads_and_fds();

    let mut local = Local::start("leaks", 4, 2);
    local.converged(Duration::from_secs(10)).unwrap();
    local.nodes[0].cluster().leave().unwrap();
    local.crash(1);
    drop(local); // the others leave on drop
    assert!(
        eventually(Duration::from_secs(5), || no_more_than(before)),
        "after leave/crash/drop: threads/fds before {before:?}, after {:?}",
        threads_and_fds()
    );

    // A join that fails after its callbacks ran leaves nothing either.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let app = App {
        members: std::sync::Arc::new(std::sync::Mutex::new(vec![address.clone()])),
        shards: 1,
        score: Default::default(),
        journal: Journal::default(),
    };
    let err = Cluster::join("leaks", app, Config::new(address, COOKIE.to_vec()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("cannot listen"), "{err}");
    drop(taken);
    assert!(
        eventually(Duration::from_secs(5), || no_more_than(before)),
        "after a failed join: threads/fds before {before:?}, after {:?}",
        threads_and_fds()
    );
}
