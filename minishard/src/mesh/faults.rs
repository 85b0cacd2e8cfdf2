//! Test-only fault injection: cut this node off from chosen peers, as a
//! pulled cable would, without touching the operating system's network.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::core::NodeId;

/// The peers whose traffic is dropped.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    cut: RwLock<HashSet<NodeId>>,
}

impl Faults {
    pub(crate) fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    pub(crate) fn cut(&self, peer: &NodeId) {
        self.cut
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.clone());
    }

    pub(crate) fn heal(&self, peer: &NodeId) {
        self.cut
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
    }

    pub(crate) fn heal_all(&self) {
        self.cut.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Whether traffic with `peer` is dropped.
    pub(crate) fn is_cut(&self, peer: &NodeId) -> bool {
        let cut = self.cut.read().unwrap_or_else(|p| p.into_inner());
        !cut.is_empty() && cut.contains(peer)
    }
}
