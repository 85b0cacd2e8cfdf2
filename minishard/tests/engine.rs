//! The running engine over real sockets on loopback.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn five_nodes_three_shards_converge() {
    let local = Local::start("converge", 5, 3);
    let map = local.converged(Duration::from_secs(10)).unwrap();
    let owners: std::collections::HashSet<_> = map.iter().flatten().collect();
    assert_eq!(owners.len(), 3, "three different owners: {map:?}");
    let allocated: usize = local
        .nodes
        .iter()
        .map(|n| n.journal.count(|t| matches!(t, Told::Allocated { .. })))
        .sum();
    assert_eq!(allocated, 3);
}
