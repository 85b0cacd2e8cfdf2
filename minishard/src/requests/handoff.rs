//! Hand-offs (docs/design.md 11.8): the data a node's `deallocated` gives
//! for the shard's next owner, and what the next owner receives in
//! `prolonged` or `allocated`.
//!
//! The callback thread queues what `deallocated` returned; the engine sends
//! it (a `Start` on the core lane, ahead of the record that frees the
//! shard, then the bytes in chunks on the request lane). Connections file
//! what arrives here; the callback thread takes it when the next
//! allocation starts or is prolonged, waiting at most `hand_off_wait` for
//! one still arriving. Nothing here touches the core.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::core::{Epoch, NodeId, ReleaseReason, Shard};
use crate::wire::request::HandOff as HandOffFrame;
use crate::wire::Frame;

use super::Lane;

/// What the previous owner of a shard handed to this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOff {
    /// The node whose allocation ended.
    pub from: NodeId,
    /// The epoch of that allocation.
    pub epoch: Epoch,
    /// What its `deallocated` returned.
    pub data: Vec<u8>,
}

/// A hand-off `deallocated` returned, for the engine to send.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub shard: Shard,
    pub epoch: Epoch,
    pub reason: ReleaseReason,
    pub winner: Option<NodeId>,
    pub data: Option<Vec<u8>>,
}

/// A hand-off arriving or arrived.
#[derive(Debug)]
struct Incoming {
    shard: Shard,
    from: NodeId,
    epoch: Epoch,
    /// `None`: the sender had nothing to hand off.
    len: Option<u64>,
    data: Vec<u8>,
    since: Instant,
}

impl Incoming {
    fn complete(&self) -> bool {
        self.len.is_none_or(|len| self.data.len() as u64 == len)
    }
}

#[derive(Default)]
struct Inner {
    incoming: Vec<Incoming>,
    outgoing: Vec<Outgoing>,
    connected: HashSet<NodeId>,
    /// How many times each peer's connection went down, so a wait can
    /// tell a connection lost while it waited from one not up yet.
    downs: HashMap<NodeId, u64>,
    closed: bool,
}

/// One node's hand-offs, both ways.
pub(crate) struct HandOffs {
    inner: Mutex<Inner>,
    changed: Condvar,
    /// How long a next owner waits for a hand-off under way.
    wait: Duration,
    /// The largest hand-off taken, in bytes.
    limit: u64,
    /// How long a hand-off nobody took is kept.
    keep: Duration,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HandOffs {
    pub(crate) fn new(wait: Duration, limit: u64, keep: Duration) -> HandOffs {
        HandOffs {
            inner: Mutex::new(Inner::default()),
            changed: Condvar::new(),
            wait,
            limit,
            keep,
        }
    }

    /// `deallocated` returned: the engine sends what it gave (a loser
    /// always tells its winner, also that it has nothing).
    pub(crate) fn released(&self, outgoing: Outgoing) {
        lock(&self.inner).outgoing.push(outgoing);
    }

    /// What the engine has to send.
    pub(crate) fn take_outgoing(&self) -> Vec<Outgoing> {
        std::mem::take(&mut lock(&self.inner).outgoing)
    }

    /// A connection to `peer` came up or went down. A hand-off still
    /// arriving from a peer whose connection went down is lost.
    pub(crate) fn link(&self, peer: &NodeId, up: bool) {
        let mut inner = lock(&self.inner);
        if up {
            inner.connected.insert(peer.clone());
        } else {
            inner.connected.remove(peer);
            *inner.downs.entry(peer.clone()).or_default() += 1;
            inner.incoming.retain(|i| i.from != *peer || i.complete());
            drop(inner);
            self.changed.notify_all();
        }
    }

    /// Drops what nobody took in time: a later allocation of the shard
    /// here must not get data that missed its own.
    fn prune(&self, inner: &mut Inner, now: Instant) {
        inner
            .incoming
            .retain(|i| now.saturating_duration_since(i.since) < self.keep);
    }

    /// A hand-off frame from `from`.
    pub(crate) fn on_frame(&self, from: &NodeId, frame: HandOffFrame) {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        self.prune(&mut inner, now);
        match frame {
            HandOffFrame::Start { shard, epoch, len } => {
                inner
                    .incoming
                    .retain(|i| !(i.shard == shard && i.from == *from));
                let len = match len {
                    Some(len) if len > self.limit => {
                        tracing::warn!(%from, shard, len, limit = self.limit, "a hand-off over hand_off_limit is refused: the next owner gets none");
                        None
                    }
                    len => len,
                };
                inner.incoming.push(Incoming {
                    shard,
                    from: from.clone(),
                    epoch,
                    len,
                    data: Vec::new(),
                    since: now,
                });
            }
            HandOffFrame::Chunk {
                shard,
                epoch,
                bytes,
            } => {
                let Some(at) = inner.incoming.iter().position(|i| {
                    i.shard == shard && i.from == *from && i.epoch == epoch && !i.complete()
                }) else {
                    return;
                };
                let entry = &mut inner.incoming[at];
                if entry.data.len() as u64 + bytes.len() as u64 > entry.len.unwrap_or(0) {
                    tracing::warn!(%from, shard, "a hand-off longer than announced is dropped");
                    inner.incoming.remove(at);
                } else {
                    entry.data.extend_from_slice(&bytes);
                    if !entry.complete() {
                        return;
                    }
                }
            }
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// What a new allocation of `shard` receives: the latest hand-off for
    /// it, once none still arriving from a connected peer (waiting at most
    /// `hand_off_wait`). Every hand-off for the shard is used up.
    pub(crate) fn for_allocation(&self, shard: Shard) -> Option<HandOff> {
        let deadline = Instant::now() + self.wait;
        let mut inner = lock(&self.inner);
        self.prune(&mut inner, Instant::now());
        loop {
            let arriving = inner
                .incoming
                .iter()
                .any(|i| i.shard == shard && !i.complete() && inner.connected.contains(&i.from));
            let now = Instant::now();
            if !arriving || now >= deadline {
                break;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let mut taken: Vec<Incoming> = Vec::new();
        inner.incoming.retain_mut(|i| {
            if i.shard != shard {
                return true;
            }
            taken.push(Incoming {
                data: std::mem::take(&mut i.data),
                from: i.from.clone(),
                ..*i
            });
            false
        });
        taken
            .into_iter()
            .filter(|i| i.len.is_some() && i.complete())
            .max_by_key(|i| i.epoch)
            .map(|i| HandOff {
                from: i.from,
                epoch: i.epoch,
                data: i.data,
            })
    }

    /// What the winner of a conflict over `shard` receives from `loser`:
    /// waits (at most `hand_off_wait`) for the loser to say, unless the
    /// loser's connection goes down meanwhile. A loser not connected yet is
    /// waited for: after a heal the conflict is often resolved through
    /// other nodes before the two have dialled each other again, and the
    /// loser sends once they have.
    pub(crate) fn loser_hand_off(&self, shard: Shard, loser: &NodeId) -> Option<HandOff> {
        let deadline = Instant::now() + self.wait;
        let mut inner = lock(&self.inner);
        self.prune(&mut inner, Instant::now());
        let downs = inner.downs.get(loser).copied().unwrap_or(0);
        loop {
            let at = inner
                .incoming
                .iter()
                .position(|i| i.shard == shard && i.from == *loser && i.complete());
            if let Some(at) = at {
                let i = inner.incoming.remove(at);
                return i.len.map(|_| HandOff {
                    from: i.from,
                    epoch: i.epoch,
                    data: i.data,
                });
            }
            let now = Instant::now();
            let dropped = inner.downs.get(loser).copied().unwrap_or(0) != downs;
            if dropped || inner.closed || now >= deadline {
                if now >= deadline {
                    tracing::debug!(%loser, shard, "no hand-off from the loser in time");
                }
                return None;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Gives up every wait: the node is closing.
    pub(crate) fn close(&self) {
        let mut inner = lock(&self.inner);
        inner.connected.clear();
        inner.closed = true;
        drop(inner);
        self.changed.notify_all();
    }
}

/// The largest chunk of a hand-off, in bytes: a frame well under the
/// smallest limit a peer may use for requests, and a write batch at most.
pub(crate) fn chunk_size(frame_limit: usize) -> usize {
    frame_limit
        .saturating_sub(super::FRAME_OVERHEAD)
        .clamp(1, 256 << 10)
}

/// Sends the bytes of a hand-off on `lane`, in order, leaving half the lane
/// to requests and replies (which never wait) and so never filling it.
pub(crate) async fn stream(lane: Lane, shard: Shard, epoch: Epoch, data: Bytes, chunk: usize) {
    let room = lane.frames.max_capacity() / 2;
    let mut at = 0;
    while at < data.len() {
        while lane.frames.capacity() < room {
            if lane.frames.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let end = (at + chunk).min(data.len());
        let frame = Frame::HandOff(HandOffFrame::Chunk {
            shard,
            epoch,
            bytes: data.slice(at..end),
        });
        if lane.frames.try_send(frame).is_err() {
            return;
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId::parse(name).unwrap()
    }

    fn start(shard: Shard, epoch: Epoch, len: Option<u64>) -> HandOffFrame {
        HandOffFrame::Start { shard, epoch, len }
    }

    fn chunk(shard: Shard, epoch: Epoch, bytes: &'static [u8]) -> HandOffFrame {
        HandOffFrame::Chunk {
            shard,
            epoch,
            bytes: Bytes::from_static(bytes),
        }
    }

    fn hand_offs(keep: Duration) -> HandOffs {
        HandOffs::new(Duration::from_millis(20), 8, keep)
    }

    #[test]
    fn a_complete_hand_off_goes_to_the_shards_next_allocation_once() {
        let h = hand_offs(Duration::from_secs(60));
        let a = node("a:1");
        h.link(&a, true);
        h.on_frame(&a, start(3, 7, Some(5)));
        h.on_frame(&a, chunk(3, 7, b"he"));
        h.on_frame(&a, chunk(3, 7, b"llo"));
        assert_eq!(h.for_allocation(2), None, "another shard's");
        let got = h.for_allocation(3).unwrap();
        assert_eq!((got.from, got.epoch, got.data), (a, 7, b"hello".to_vec()));
        assert_eq!(h.for_allocation(3), None, "used up");
    }

    #[test]
    fn an_unfinished_or_oversized_or_stale_hand_off_is_none() {
        let h = hand_offs(Duration::from_secs(60));
        let (a, b) = (node("a:1"), node("b:1"));
        h.link(&a, true);
        h.link(&b, true);
        // Still arriving when the wait ends.
        h.on_frame(&a, start(0, 1, Some(4)));
        h.on_frame(&a, chunk(0, 1, b"ab"));
        assert_eq!(h.for_allocation(0), None);
        // Its sender's connection broke.
        h.on_frame(&a, start(0, 1, Some(4)));
        h.link(&a, false);
        assert_eq!(h.for_allocation(0), None);
        // Over hand_off_limit (8 bytes here), or longer than announced.
        h.on_frame(&b, start(1, 1, Some(9)));
        h.on_frame(&b, chunk(1, 1, b"123456789"));
        assert_eq!(h.for_allocation(1), None);
        h.on_frame(&b, start(1, 2, Some(2)));
        h.on_frame(&b, chunk(1, 2, b"abc"));
        assert_eq!(h.for_allocation(1), None);
        // Kept no longer than `keep`.
        let brief = hand_offs(Duration::ZERO);
        brief.link(&b, true);
        brief.on_frame(&b, start(2, 1, Some(1)));
        brief.on_frame(&b, chunk(2, 1, b"x"));
        assert_eq!(brief.for_allocation(2), None);
    }

    #[test]
    fn a_winner_waits_for_its_loser_to_say_and_no_longer() {
        let h = hand_offs(Duration::from_secs(60));
        let a = node("a:1");
        h.link(&a, true);
        h.on_frame(&a, start(0, 4, None));
        assert_eq!(h.loser_hand_off(0, &a), None, "it had nothing");
        h.on_frame(&a, start(0, 5, Some(1)));
        h.on_frame(&a, chunk(0, 5, b"z"));
        assert_eq!(h.loser_hand_off(0, &a).unwrap().data, b"z".to_vec());
        // A loser whose connection goes down while it is waited for has
        // nothing more to send (the wait would last a minute otherwise).
        let h = HandOffs::new(Duration::from_secs(60), 8, Duration::from_secs(60));
        h.link(&a, true);
        let waiting = std::thread::scope(|scope| {
            let waiting = scope.spawn(|| h.loser_hand_off(0, &a));
            while !waiting.is_finished() {
                h.link(&a, false);
                std::thread::yield_now();
            }
            waiting.join().unwrap()
        });
        assert_eq!(waiting, None);
    }

    #[test]
    fn a_winner_waits_for_a_loser_not_connected_yet() {
        let h = HandOffs::new(Duration::from_secs(60), 8, Duration::from_secs(60));
        let b = node("b:1");
        let got = std::thread::scope(|scope| {
            let waiting = scope.spawn(|| h.loser_hand_off(0, &b));
            // The loser dials in only after the winner began to wait.
            h.link(&b, true);
            h.on_frame(&b, start(0, 3, Some(2)));
            h.on_frame(&b, chunk(0, 3, b"ok"));
            waiting.join().unwrap()
        });
        assert_eq!(got.map(|g| g.data), Some(b"ok".to_vec()));
    }
}
