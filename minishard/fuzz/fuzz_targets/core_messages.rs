//! One node's core fed arbitrary events from its peers: connections coming
//! and going, records and relays with arbitrary contents (any author, shard,
//! epoch, shard count, sightings, offers, yields), epoch lists, the clock
//! moving, and its callbacks answering (or failing) in any order.
//!
//! A peer that has proved the cookie is trusted with the protocol, but not
//! with the node's life: nothing it sends may panic the core or make it
//! allocate without bound, and the application's callback discipline must
//! hold whatever it sends (never two allocations at once, `score` and
//! `prolonged` only inside an allocation, `deallocated` only to end one, an
//! observer never allocated).
#![no_main]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use minishard::core::{
    Ack, Action, Call, CallId, Claim, Core, CoreConfig, Event, Health, Holding, Instant, NodeId,
    Outcome, PeerMessage, Record, Role, ScoreOffer, Sighting, Timings, Yield,
};

const NODES: [&str; 6] = [
    "10.0.0.1:7000",
    "10.0.0.2:7000",
    "10.0.0.3:7000",
    "10.0.0.4:7000",
    "10.0.0.5:7000", // not a member
    "10.0.0.6:7000", // not a member
];
const MEMBERS: usize = 4;
const SHARDS: u32 = 2;

fn node(u: &mut Unstructured<'_>) -> Result<NodeId> {
    Ok(NodeId::parse(NODES[u.choose_index(NODES.len())?]).unwrap())
}

fn peer(u: &mut Unstructured<'_>) -> Result<NodeId> {
    // Anyone but this node (index 0).
    Ok(NodeId::parse(NODES[1 + u.choose_index(NODES.len() - 1)?]).unwrap())
}

fn small_or_any_u32(u: &mut Unstructured<'_>) -> Result<u32> {
    Ok(if u.ratio(7, 8)? {
        u.int_in_range(0..=3)?
    } else {
        u.arbitrary()?
    })
}

fn small_or_any_u64(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => u.arbitrary()?,
        1 => u64::MAX,
        _ => u.int_in_range(0..=5)?,
    })
}

fn holding(u: &mut Unstructured<'_>) -> Result<Holding> {
    let shard = small_or_any_u32(u)?;
    let epoch = small_or_any_u64(u)?;
    Ok(match u.int_in_range(0..=6u8)? {
        0 => Holding::Idle,
        1 => Holding::Standby,
        2 => Holding::Left,
        3 => Holding::Claiming { shard, epoch },
        4 => Holding::Active { shard, epoch },
        5 => Holding::Yielding { shard, epoch },
        _ => Holding::Releasing { shard, epoch },
    })
}

fn claim(u: &mut Unstructured<'_>) -> Result<Claim> {
    Ok(Claim {
        node: node(u)?,
        incarnation: u.int_in_range(0..=3)?,
        epoch: small_or_any_u64(u)?,
    })
}

fn score(u: &mut Unstructured<'_>) -> Result<Option<i64>> {
    Ok(match u.int_in_range(0..=4u8)? {
        0 => None,
        1 => Some(i64::MIN),
        2 => Some(i64::MAX),
        _ => Some(u.int_in_range(-2..=2)?),
    })
}

fn list<T>(
    u: &mut Unstructured<'_>,
    max: usize,
    mut item: impl FnMut(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| item(u)).collect()
}

fn record(u: &mut Unstructured<'_>, author: NodeId) -> Result<Record> {
    let offer = if u.arbitrary()? {
        Some(ScoreOffer {
            shard: small_or_any_u32(u)?,
            epoch: small_or_any_u64(u)?,
            episode: small_or_any_u64(u)?,
            score: score(u)?,
            acks: list(u, 3, |u| {
                Ok(Ack {
                    node: node(u)?,
                    epoch: small_or_any_u64(u)?,
                    episode: small_or_any_u64(u)?,
                })
            })?,
        })
    } else {
        None
    };
    let yielded = if u.arbitrary()? {
        Some(Yield {
            shard: small_or_any_u32(u)?,
            epoch: small_or_any_u64(u)?,
            winner: claim(u)?,
            winner_score: score(u)?,
            own_score: score(u)?,
        })
    } else {
        None
    };
    Ok(Record {
        node: author,
        incarnation: u.int_in_range(0..=3)?,
        version: small_or_any_u64(u)?,
        role: if u.ratio(7, 8)? {
            Role::Member
        } else {
            Role::Observer
        },
        shard_count: if u.ratio(7, 8)? {
            SHARDS
        } else {
            u.arbitrary()?
        },
        health: *u.choose(&[Health::Degraded, Health::Transition, Health::Available])?,
        holding: holding(u)?,
        sees: list(u, 6, |u| {
            Ok(Sighting {
                node: node(u)?,
                incarnation: u.int_in_range(0..=3)?,
            })
        })?,
        offer,
        yielded,
        acknowledged: list(u, 3, claim)?,
        metadata: Default::default(),
    })
}

/// The application's side: what it was asked and the discipline it sees.
#[derive(Default)]
struct App {
    pending: VecDeque<(CallId, Call)>,
    open: Option<(u32, u64)>,
    highest_epoch: Vec<u64>,
}

impl App {
    fn ask(&mut self, id: CallId, call: Call) {
        self.pending.push_back((id, call));
    }

    /// Answers the oldest call; `fail` makes a fallible callback fail.
    fn answer(&mut self, observer: bool, fail: bool, score: i64) -> Option<Event> {
        let (id, call) = self.pending.pop_front()?;
        let fallible = matches!(
            call,
            Call::Allocated { .. } | Call::Score { .. } | Call::Prolonged { .. }
        );
        let failed = fail && fallible;
        match &call {
            Call::Allocated { shard, epoch } => {
                assert!(!observer, "an observer was allocated shard {shard}");
                assert!(
                    self.open.is_none(),
                    "allocated({shard}) while holding {:?}",
                    self.open
                );
                let highest = self.highest_epoch.get(*shard as usize).copied();
                assert!(
                    highest.is_none_or(|h| *epoch > h),
                    "allocated({shard}) at epoch {epoch}, not above {highest:?}"
                );
                if !failed {
                    self.open = Some((*shard, *epoch));
                    if self.highest_epoch.len() <= *shard as usize {
                        self.highest_epoch.resize(*shard as usize + 1, 0);
                    }
                    self.highest_epoch[*shard as usize] = *epoch;
                }
            }
            Call::Score { shard, epoch } | Call::Prolonged { shard, epoch, .. } => {
                assert_eq!(
                    self.open,
                    Some((*shard, *epoch)),
                    "{} outside of its allocation",
                    call.name()
                );
            }
            Call::Deallocated { shard, epoch, .. } => {
                assert_eq!(
                    self.open.take(),
                    Some((*shard, *epoch)),
                    "deallocated without that allocation"
                );
            }
            Call::Nodes | Call::StatusChanged { .. } => {}
        }
        let outcome = match (&call, failed) {
            (_, true) => Outcome::Failed("fuzzed failure".into()),
            (Call::Score { .. }, false) => Outcome::Score(score),
            (Call::Nodes, false) => Outcome::Members(
                NODES[..MEMBERS]
                    .iter()
                    .map(|n| NodeId::parse(n).unwrap())
                    .collect(),
            ),
            _ => Outcome::Done,
        };
        Some(Event::CallDone { id, outcome })
    }
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let observer = u.ratio(1, 4)?;
    let me = NodeId::parse(NODES[0]).unwrap();
    let config = CoreConfig {
        me,
        role: if observer {
            Role::Observer
        } else {
            Role::Member
        },
        members: NODES[..MEMBERS]
            .iter()
            .map(|n| NodeId::parse(n).unwrap())
            .collect(),
        // An observer may start without the shard count and learn it.
        shard_count: if observer && u.arbitrary()? {
            0
        } else {
            SHARDS
        },
        timings: Timings::default(),
        metadata: Default::default(),
        quorum: Default::default(),
    };
    let mut core = Core::new(config, 99, Instant::ZERO);
    let mut app = App::default();
    let mut now = Instant::ZERO;
    let mut timer: Option<Instant> = None;
    let mut steps = 0;
    while !u.is_empty() && steps < 400 {
        steps += 1;
        let event = match u.int_in_range(0..=9u8)? {
            0 => Event::Connected {
                peer: peer(u)?,
                incarnation: u.int_in_range(0..=3)?,
                role: if u.ratio(7, 8)? {
                    Role::Member
                } else {
                    Role::Observer
                },
            },
            1 => Event::Lost { peer: peer(u)? },
            2..=4 => {
                let from = peer(u)?;
                // Mostly its own record; sometimes another's, as a relay or
                // falsely as its own.
                let author = if u.ratio(2, 3)? {
                    from.clone()
                } else {
                    node(u)?
                };
                let record = Arc::new(record(u, author)?);
                let message = if u.ratio(2, 3)? {
                    PeerMessage::Record(record)
                } else {
                    PeerMessage::Relay {
                        record,
                        current: u.arbitrary()?,
                    }
                };
                Event::Message { from, message }
            }
            5 => Event::Message {
                from: peer(u)?,
                message: PeerMessage::Epochs(list(u, 4, small_or_any_u64)?),
            },
            6 | 7 => {
                let fail = u.ratio(1, 6)?;
                let score = u.int_in_range(-2..=2)?;
                match app.answer(observer, fail, score) {
                    Some(event) => event,
                    None => continue,
                }
            }
            8 => {
                // The clock moves: to the timer, or by an arbitrary step.
                let step = Duration::from_millis(u.int_in_range(0..=3000)?);
                now = match timer {
                    Some(at) if u.arbitrary()? => at.max(now),
                    _ => now + step,
                };
                Event::Timeout
            }
            _ => {
                if u.ratio(1, 20)? {
                    Event::Leave
                } else {
                    Event::MembersChanged(list(u, 6, node)?)
                }
            }
        };
        core.handle(now, event);
        while let Some(action) = core.poll_action() {
            match action {
                Action::SetTimer(at) => timer = Some(at),
                Action::CancelTimer => timer = None,
                Action::Call { id, call } => app.ask(id, call),
                Action::Send { .. } | Action::Publish(_) | Action::SetMembers(_) => {}
                Action::Close => return Ok(()),
            }
        }
        if let Some(snapshot) = core.snapshot() {
            assert!(snapshot.owners.len() <= u32::MAX as usize);
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
