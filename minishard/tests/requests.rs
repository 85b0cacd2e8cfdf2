//! Requests to a shard's owner over real sockets on loopback (DESIGN.md
//! 11): who answers, with which epoch, and that every request ends exactly
//! once, through crashes, leaves, splits and heals.

mod common;

use std::time::Duration;

use common::*;
use minishard::{Health, NodeId};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn every_node_reaches_every_owner_and_the_reply_names_it() {
    let local = Local::start("req-reach", 3, 2);
    local.converged(WAIT).unwrap();
    for (i, node) in local.nodes.iter().enumerate() {
        for shard in 0..2 {
            let owner = node.cluster().snapshot().owner(shard).cloned().unwrap();
            let payload = format!("from {i}");
            let reply = node
                .cluster()
                .request(shard, payload.clone(), WAIT)
                .unwrap();
            assert_eq!(reply.node, owner.node);
            assert_eq!(reply.epoch, owner.epoch);
            assert_eq!(
                String::from_utf8(reply.payload).unwrap(),
                format!("{shard} {} {payload}", owner.epoch)
            );
        }
    }
    let _ = Health::Available;
    let _ = NodeId::parse("127.0.0.1:1");
}
