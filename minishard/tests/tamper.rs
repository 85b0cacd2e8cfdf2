//! An attacker on the path between live nodes (docs/design.md 8.4): every node of
//! a cluster is reached through a userspace TCP proxy on loopback that, on
//! command, flips a bit in a frame, replays one, drops one, swaps two, cuts
//! one short or inserts one of its own into a running connection. The node
//! receiving it closes that connection with the reason logged, as a
//! protocol error; no other connection moves; the two nodes reconnect, and
//! the cluster's map stays what it was. Never does a tampered or forged
//! frame take effect.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::by_hand::framed;
use common::*;
use minishard::core::{Holding, NodeId, PeerMessage, Record, Role};
use minishard::wire::{self, Frame};
use minishard::{Cluster, Config, Health, MeshNotice};

/// What the proxy does to the next frame after a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    /// One bit of the frame flipped.
    Flip,
    /// The frame passed on, then again.
    Replay,
    /// The frame kept back.
    Drop,
    /// The frame kept back and passed on after the next one.
    Swap,
    /// The frame's last bytes cut off, its length prefix made to match.
    Truncate,
    /// A frame of the proxy's own (a record in which the sender claims
    /// shard 0 at an epoch nobody uses) passed on before it.
    Insert,
}

/// Which way the attacked frame travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Toward {
    /// From the node that dialled to the one that listens.
    Listener,
    /// From the node that listens to the one that dialled.
    Dialer,
}

/// The attack waiting for its frame, shared by every proxy.
type Armed = Arc<Mutex<Option<(Attack, Toward)>>>;

const FORGED_EPOCH: u64 = 999_999;

fn forged_record(sender: &NodeId) -> Frame {
    Frame::Peer(PeerMessage::Record(Arc::new(Record {
        node: sender.clone(),
        incarnation: 7,
        version: 1_000_000,
        role: Role::Member,
        shard_count: 2,
        health: Health::Available,
        holding: Holding::Active {
            shard: 0,
            epoch: FORGED_EPOCH,
        },
        sees: Vec::new(),
        offer: None,
        yielded: None,
        acknowledged: Vec::new(),
        metadata: Default::default(),
        released: None,
    })))
}

/// A proxy on 127.0.0.2 in front of one node's listener.
struct Proxy {
    address: String,
}

impl Proxy {
    fn start(target: String, armed: Armed) -> Proxy {
        let listener = TcpListener::bind("127.0.0.2:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let armed_there = armed.clone();
                std::thread::spawn(move || pipe(client, s, Toward::Listener, armed_there));
                let armed_back = armed.clone();
                std::thread::spawn(move || pipe(server, c, Toward::Dialer, armed_back));
            }
        });
        Proxy { address }
    }
}

/// One whole frame (length prefix included), or None at the end.
fn read_frame(from: &mut TcpStream) -> Option<Vec<u8>> {
    let mut frame = vec![0u8; 4];
    from.read_exact(&mut frame).ok()?;
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    frame.resize(4 + len, 0);
    from.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

/// Carries frames one way. The first two are the handshake's, in plain:
/// the first names the node sending on this pipe (its hello or
/// challenge). Every later frame is sealed, and may be attacked.
fn pipe(mut from: TcpStream, mut to: TcpStream, toward: Toward, armed: Armed) {
    let mut sender: Option<NodeId> = None;
    let mut passed = 0usize;
    let mut held: Option<Vec<u8>> = None;
    while let Some(mut frame) = read_frame(&mut from) {
        passed += 1;
        if passed == 1 {
            sender = match wire::decode(&frame[4..], wire::DEFAULT_FRAME_LIMIT) {
                Ok(Frame::Hello(h)) => Some(h.node),
                Ok(Frame::Challenge(c)) => Some(c.node),
                _ => None,
            };
        }
        let mut out = Vec::new();
        if let Some(kept) = held.take() {
            // Swap: the next frame first, then the one kept back.
            out.extend_from_slice(&frame);
            out.extend(kept);
        } else {
            let attack = if passed > 2 {
                let mut armed = armed.lock().unwrap();
                match *armed {
                    Some((_, way)) if way == toward => armed.take().map(|(attack, _)| attack),
                    _ => None,
                }
            } else {
                None
            };
            match attack {
                None => out.extend_from_slice(&frame),
                Some(Attack::Flip) => {
                    let middle = 4 + (frame.len() - 4) / 2;
                    frame[middle] ^= 0x01;
                    out.extend_from_slice(&frame);
                }
                Some(Attack::Replay) => {
                    out.extend_from_slice(&frame);
                    out.extend_from_slice(&frame);
                }
                Some(Attack::Drop) => {}
                Some(Attack::Swap) => held = Some(frame.clone()),
                Some(Attack::Truncate) => {
                    let cut = (frame.len() - 5).min(5);
                    frame.truncate(frame.len() - cut);
                    let len = (frame.len() - 4) as u32;
                    frame[..4].copy_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&frame);
                }
                Some(Attack::Insert) => {
                    let sender = sender.clone().expect("the sender named itself");
                    out.extend(framed(&forged_record(&sender)));
                    out.extend_from_slice(&frame);
                }
            }
        }
        if to.write_all(&out).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

type Notices = Arc<Mutex<Vec<MeshNotice>>>;

/// Three nodes, each reached only through its proxy: every connection
/// between two of them crosses one proxy.
struct Proxied {
    local: Local,
    notices: Vec<Notices>,
    armed: Armed,
}

fn proxied() -> Proxied {
    let listens = free_addresses(3);
    let armed = Armed::default();
    let proxies: Vec<Proxy> = listens
        .iter()
        .map(|l| Proxy::start(l.clone(), armed.clone()))
        .collect();
    let members: Vec<String> = proxies.iter().map(|p| p.address.clone()).collect();
    let mut local = Local {
        name: "tamper".into(),
        members: Arc::new(Mutex::new(members.clone())),
        shards: 2,
        nodes: Vec::new(),
        timings: fast(),
        configure: None,
    };
    let mut notices = Vec::new();
    for (listen, member) in listens.iter().zip(&members) {
        let sink = Notices::default();
        notices.push(sink.clone());
        let mut config = Config::new(listen.clone(), COOKIE.to_vec());
        config.advertise = Some(member.clone());
        config.timings = local.timings;
        config.notice_hook = Some(Arc::new(move |n: &MeshNotice| {
            sink.lock().unwrap().push(n.clone())
        }));
        let journal = Journal::default();
        let score = Arc::new(Mutex::new(0));
        let app = App {
            members: local.members.clone(),
            shards: local.shards,
            score: score.clone(),
            journal: journal.clone(),
        };
        let cluster = Cluster::join("tamper", app, config).unwrap();
        local.nodes.push(Node {
            address: member.clone(),
            cluster: Some(cluster),
            journal,
            score,
        });
    }
    Proxied {
        local,
        notices,
        armed,
    }
}

fn peer_downs(notices: &[MeshNotice]) -> Vec<(String, String)> {
    notices
        .iter()
        .filter_map(|n| match n {
            MeshNotice::PeerDown { peer, reason } => Some((peer.to_string(), reason.clone())),
            _ => None,
        })
        .collect()
}

const REASON: &str = "failed authentication";

#[test]
fn a_tampered_frame_in_a_live_stream_closes_that_connection_and_nothing_else() {
    let p = proxied();
    let before = p.local.converged(Duration::from_secs(10)).unwrap();
    let nodes: Vec<&Cluster> = p.local.running().collect();
    let attacks = [
        (Attack::Flip, Toward::Listener),
        (Attack::Replay, Toward::Listener),
        (Attack::Drop, Toward::Listener),
        (Attack::Swap, Toward::Listener),
        (Attack::Truncate, Toward::Listener),
        (Attack::Insert, Toward::Listener),
        (Attack::Flip, Toward::Dialer),
        (Attack::Insert, Toward::Dialer),
    ];
    for attack in attacks {
        let seen: Vec<usize> = p.notices.iter().map(|n| n.lock().unwrap().len()).collect();
        let errors: Vec<u64> = nodes.iter().map(|c| c.stats().protocol_errors).collect();
        *p.armed.lock().unwrap() = Some(attack);

        // Some node closes a connection for a frame that does not open.
        let new = |i: usize| p.notices[i].lock().unwrap()[seen[i]..].to_vec();
        let mut detector = None;
        assert!(
            eventually(Duration::from_secs(5), || {
                detector = (0..3).find(|&i| {
                    peer_downs(&new(i))
                        .iter()
                        .any(|(_, reason)| reason.contains(REASON))
                });
                detector.is_some()
            }),
            "{attack:?}: no connection closed for it; notices {:#?}",
            (0..3).map(new).collect::<Vec<_>>()
        );
        assert!(
            p.armed.lock().unwrap().is_none(),
            "{attack:?} not carried out"
        );
        let detector = detector.unwrap();
        let (peer, reason) = peer_downs(&new(detector))
            .into_iter()
            .find(|(_, reason)| reason.contains(REASON))
            .unwrap();
        let peer_index = p.local.index_of(&NodeId::parse(&peer).unwrap());
        // With its reason logged, and counted as a protocol error.
        assert!(
            new(detector).iter().any(|n| matches!(n,
                MeshNotice::Refused { peer: from, reason: why } if *from == peer && *why == reason)),
            "{attack:?}: no refusal logged: {:#?}",
            new(detector)
        );
        assert_eq!(
            nodes[detector].stats().protocol_errors,
            errors[detector] + 1,
            "{attack:?}"
        );

        // The two reconnect, and the cluster is as it was.
        let again = |i: usize, other: usize| {
            let other = &p.local.nodes[other].address;
            let notices = new(i);
            let down = notices.iter().position(
                |n| matches!(n, MeshNotice::PeerDown { peer, .. } if peer.as_str() == other),
            );
            down.is_some_and(|at| {
                notices[at..]
                    .iter()
                    .any(|n| matches!(n, MeshNotice::PeerUp { peer } if peer.as_str() == other))
            })
        };
        assert!(
            eventually(Duration::from_secs(5), || again(detector, peer_index)
                && again(peer_index, detector)),
            "{attack:?}: {} and {peer} did not reconnect",
            p.local.nodes[detector].address
        );
        assert_eq!(
            p.local.converged(Duration::from_secs(10)).unwrap(),
            before,
            "{attack:?}"
        );
        // No other connection went down. The attacked pair may flap while it
        // reconnects: both ends redial, and the connection one end keeps may
        // not be the one the other end registered first.
        for (i, node) in p.notices.iter().enumerate() {
            let downs = peer_downs(&node.lock().unwrap()[seen[i]..]);
            let expected = match i {
                i if i == detector => Some(&peer),
                i if i == peer_index => Some(&p.local.nodes[detector].address),
                _ => None,
            };
            assert!(
                downs.iter().all(|(down, _)| Some(down) == expected),
                "{attack:?}: node {i} lost {downs:?}"
            );
        }
        // The forged record never took.
        for node in &nodes {
            assert!(
                !node
                    .snapshot()
                    .owners
                    .iter()
                    .flatten()
                    .any(|o| o.epoch == FORGED_EPOCH),
                "{attack:?}"
            );
        }
    }
    assert!(nodes.iter().all(|c| c.health() == Health::Available));
    for node in nodes {
        node.leave().unwrap();
    }
}
