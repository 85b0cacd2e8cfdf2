//! minishard keeps a fixed number of unique shards allocated across the nodes
//! of a cluster: one shard per node at most, the other nodes on standby. It
//! connects the nodes, tracks the cluster's health, moves a shard to a standby
//! node when its owner goes away, and after a network split heals resolves
//! duplicate owners by score. The application hears all of it through
//! callbacks.
//!
//! The protocol lives in [`core`], a pure state machine (events in, actions
//! out, time as an input); [`sim`] drives it through thousands of random fault
//! schedules and checks the guarantees of DESIGN.md section 7.

#![forbid(unsafe_code)]

pub mod core;
pub mod sim;
