//! minishard keeps a fixed number of unique shards allocated across the nodes
//! of a cluster: one shard per node at most, the other nodes on standby. It
//! connects the nodes, tracks the cluster's health, moves a shard to a standby
//! node when its owner goes away, and after a network split heals resolves
//! duplicate owners by score. The application hears all of it through
//! [`Callbacks`].
//!
//! ```no_run
//! use minishard::{Callbacks, CallbackError, Cluster, Config, Health, NodeId, ReleaseReason};
//! use std::time::Duration;
//!
//! struct Sessions;
//! impl Callbacks for Sessions {
//!     type State = Vec<u8>;
//!     fn nodes(&mut self, _: &str) -> Result<Vec<String>, CallbackError> {
//!         Ok(vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into(), "127.0.0.1:7003".into()])
//!     }
//!     fn shard_count(&mut self, _: &str) -> Result<u32, CallbackError> { Ok(2) }
//!     fn allocated(&mut self, _: &str, shard: u32, epoch: u64) -> Result<Vec<u8>, CallbackError> {
//!         Ok(Vec::new())
//!     }
//!     fn score(&mut self, state: &mut Vec<u8>) -> Result<i64, CallbackError> { Ok(state.len() as i64) }
//!     fn prolonged(&mut self, _: &NodeId, _: &mut Vec<u8>, _: u64) -> Result<(), CallbackError> { Ok(()) }
//!     fn deallocated(&mut self, _: Option<&NodeId>, _: ReleaseReason, _: Vec<u8>) {}
//! }
//!
//! let cluster = Cluster::join("sessions", Sessions, Config::new("127.0.0.1:7001", b"cookie".to_vec()))?;
//! cluster.wait_until(Health::Available, Duration::from_secs(10))?;
//! println!("shard 0 lives on {:?}", cluster.get_node(0));
//! # Ok::<(), minishard::Error>(())
//! ```
//!
//! Inside, the protocol is [`core`], a pure state machine (events in,
//! actions out, time as an input), driven by a small tokio shell (`mesh`,
//! `runtime`) — and by [`sim`], a deterministic simulator that runs
//! thousands of random fault schedules and checks docs/design.md section 7.

#![forbid(unsafe_code)]

mod api;
mod config;
pub mod core;
mod error;
mod mesh;
mod requests;
mod runtime;
pub mod settings;
pub mod sim;
pub mod wire;

pub use api::{Callbacks, Cluster, Stats, Status};
pub use config::{
    validate_metadata, Config, Dispatch, MeshNotice, NoticeHook, TlsFiles, MAX_HANDSHAKES,
    MAX_METADATA_BYTES, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_LEN, MAX_REQUESTS_IN_FLIGHT,
    MAX_SEND_QUEUE, MIN_SEND_QUEUE,
};
pub use core::{
    Epoch, Health, LocalState, Metadata, NodeId, NodeState, Owner, PeerRefusals, Quorum,
    RefusalReason, ReleaseReason, Shard, Snapshot, Timings, EPOCH_TAG_BITS,
};
pub use error::{CallbackError, Error};
pub use requests::handoff::HandOff;
pub use requests::{PendingReply, Reply, RequestError, Responder, FRAME_OVERHEAD};
