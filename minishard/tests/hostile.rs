//! Bad input against a live node: every malformed, oversized, truncated,
//! unauthenticated or silent connection is refused or closed with a reason,
//! and the node and its other connections carry on (docs/design.md 7.8).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::by_hand::framed;
use common::*;
use minishard::core::{Holding, NodeId, PeerMessage, Record, Role};
use minishard::wire::handshake::{Dialing, Identity};
use minishard::wire::{self, Frame, Hello, PROTOCOL_VERSION};
use minishard::{Cluster, Health, MeshNotice};

struct Target {
    local: Local,
    victim: Cluster,
    address: String,
    notices: Arc<Mutex<Vec<MeshNotice>>>,
}

/// A 3-node cluster plus the node under attack, all converged.
fn target() -> Target {
    let mut local = Local::start("hostile", 4, 2);
    // Replace node 3 with one whose refusals we can read.
    local.nodes[3].cluster.take().unwrap().leave().unwrap();
    let notices = Arc::new(Mutex::new(Vec::new()));
    let sink = notices.clone();
    let mut config = local.config(3);
    config.handshake_timeout = Duration::from_millis(300);
    config.notice_hook = Some(Arc::new(move |n: &MeshNotice| {
        sink.lock().unwrap().push(n.clone())
    }));
    let app = App {
        members: local.members.clone(),
        shards: 2,
        score: Default::default(),
        journal: local.nodes[3].journal.clone(),
    };
    let victim = Cluster::join("hostile", app, config).unwrap();
    let address = local.nodes[3].address.clone();
    local.converged(Duration::from_secs(10)).unwrap();
    victim
        .wait_until(Health::Available, Duration::from_secs(10))
        .unwrap();
    Target {
        local,
        victim,
        address,
        notices,
    }
}

fn hello(version: u16, cluster: &str, node: &str) -> Frame {
    Frame::Hello(Hello {
        version,
        cluster: cluster.into(),
        node: NodeId::parse(node).unwrap(),
        incarnation: 7,
        role: Role::Member,
        nonce: [9; 32],
    })
}

/// Sends `bytes` and hangs up its sending side, then reads whatever comes
/// back until the node closes.
fn attack(address: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    read_all(stream)
}

fn read_all(mut stream: TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fn refusal_in(answer: &[u8]) -> Option<String> {
    let body = answer.get(4..)?;
    match wire::decode(body, wire::DEFAULT_FRAME_LIMIT) {
        Ok(Frame::Refused { reason, .. }) => Some(reason),
        _ => None,
    }
}

#[test]
fn every_bad_connection_is_refused_with_a_reason_and_nothing_else_moves() {
    let t = target();
    let member = t.local.nodes[0].address.clone();
    let before: Vec<_> = t.local.running().map(|c| c.stats().reconnects).collect();
    let victim_reconnects = t.victim.stats().reconnects;

    // Garbage bytes: an HTTP request reads as a huge length; a small
    // length followed by noise is a malformed frame.
    attack(&t.address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut noise = 8u32.to_be_bytes().to_vec();
    noise.extend([0xff; 8]);
    attack(&t.address, &noise);
    // A frame over the limit: only its length is read.
    attack(&t.address, &(u32::MAX).to_be_bytes());
    // Before the handshake the limit is the small handshake one: a 64 KiB
    // frame (fine later, under the 1 MiB limit) is refused unread.
    let mut big = (64u32 << 10).to_be_bytes().to_vec();
    big.extend(vec![0u8; 64 << 10]);
    attack(&t.address, &big);
    assert!(eventually(Duration::from_secs(5), || refused_with(
        &t.notices,
        &format!("over the limit of {}", wire::HANDSHAKE_FRAME_LIMIT)
    )));
    // A truncated frame: promises 100 bytes, sends 10, hangs up.
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend([1u8; 10]);
    attack(&t.address, &truncated);
    // A client that connects and says nothing (and keeps the line open).
    let silent = TcpStream::connect(&t.address).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    read_all(silent);
    // Wrong protocol version, wrong cluster, a member that is not in the list.
    let version = attack(
        &t.address,
        &framed(&hello(PROTOCOL_VERSION + 1, "hostile", "127.0.0.1:1")),
    );
    let cluster = attack(
        &t.address,
        &framed(&hello(PROTOCOL_VERSION, "other", "127.0.0.1:1")),
    );
    let unknown = attack(
        &t.address,
        &framed(&hello(PROTOCOL_VERSION, "hostile", "127.0.0.1:1")),
    );
    assert!(refusal_in(&version).unwrap().contains("protocol version"));
    assert!(refusal_in(&cluster).unwrap().contains("wrong cluster"));
    assert!(refusal_in(&unknown)
        .unwrap()
        .contains("not in the member list"));
    // An observer under a member's address.
    let mut disguised = hello(PROTOCOL_VERSION, "hostile", &member);
    if let Frame::Hello(h) = &mut disguised {
        h.role = Role::Observer;
    }
    let disguised = attack(&t.address, &framed(&disguised));
    assert!(refusal_in(&disguised)
        .unwrap()
        .contains("is in the member list but joins as an observer"));
    // A member's address with the wrong cookie.
    let impostor = Identity {
        cluster: "hostile".into(),
        node: NodeId::parse(&member).unwrap(),
        incarnation: 1,
        role: Role::Member,
        cookie: Arc::from(&b"not-the-cookie"[..]),
    };
    let (dialing, hello) = Dialing::start(impostor, NodeId::parse(&t.address).unwrap(), [3; 32]);
    let mut stream = TcpStream::connect(&t.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&framed(&hello)).unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).unwrap();
    let challenge = wire::decode(&body, wire::DEFAULT_FRAME_LIMIT).unwrap();
    let refusal = dialing.on_challenge(challenge).unwrap_err();
    assert!(
        refusal.reason.contains("cookie"),
        "the impostor cannot check the listener: {refusal}"
    );
    // It sends a made-up proof anyway.
    stream
        .write_all(&framed(&Frame::Proof(wire::Proof { mac: [0; 32] })))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(refusal_in(&answer).unwrap().contains("wrong cookie"));

    // Every attempt left a reason in the node's notices (and its log).
    let expected = [
        "malformed frame",
        "over the limit",
        "truncated frame",
        "no handshake within",
        "protocol version",
        "wrong cluster",
        "not in the member list",
        "joins as an observer",
        "wrong cookie",
    ];
    let refused = |word: &str| {
        let notices = t.notices.lock().unwrap();
        notices
            .iter()
            .any(|n| matches!(n, MeshNotice::Refused { reason, .. } if reason.contains(word)))
    };
    for word in expected {
        // The node records a refusal once it has told the peer.
        assert!(
            eventually(Duration::from_secs(5), || refused(word)),
            "no refusal mentioning {word:?} in {:#?}",
            t.notices.lock().unwrap()
        );
    }
    let notices = t.notices.lock().unwrap().clone();
    // The node and every other connection carried on untouched.
    assert_eq!(t.victim.health(), Health::Available);
    assert_eq!(t.victim.stats().reconnects, victim_reconnects);
    let after: Vec<_> = t.local.running().map(|c| c.stats().reconnects).collect();
    assert_eq!(
        before, after,
        "a peer lost its connection during the attack"
    );
    assert!(t.victim.stats().refused_handshakes >= expected.len() as u64);
    assert!(
        !notices
            .iter()
            .any(|n| matches!(n, MeshNotice::PeerDown { .. })),
        "{notices:#?}"
    );
}

/// A raw connection that speaks frames, for playing a peer by hand.
struct Raw(TcpStream);

impl Raw {
    fn connect(address: &str) -> Raw {
        let stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Raw(stream)
    }

    fn send(&mut self, frame: &Frame) {
        self.0.write_all(&framed(frame)).unwrap();
    }

    /// The next frame, or None once the node has closed.
    fn receive(&mut self) -> Option<Frame> {
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).ok()?;
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).ok()?;
        Some(wire::decode(&body, wire::DEFAULT_FRAME_LIMIT).unwrap())
    }

    /// Reads until the node closes; returns its refusal.
    fn refusal(mut self) -> String {
        loop {
            match self.receive() {
                Some(Frame::Refused { reason, .. }) => return reason,
                Some(_) => continue,
                None => panic!("closed without a refusal"),
            }
        }
    }
}

/// A record in which `node` says it owns shard 0 at an epoch no real node
/// uses: if the victim ever took it, its shard map would show it.
fn forged_record(node: &str) -> Frame {
    Frame::Peer(PeerMessage::Record(Arc::new(Record {
        node: NodeId::parse(node).unwrap(),
        incarnation: 7,
        version: 1_000,
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

const FORGED_EPOCH: u64 = 999_999;

/// What a user would check to see that nothing moved: the health, the shard
/// map with its epochs, and every node's reconnect counter.
#[derive(Debug, PartialEq)]
struct Picture {
    health: Health,
    owners: Vec<Option<(String, u64)>>,
    reconnects: Vec<u64>,
}

fn picture(victim: &Cluster, others: &Local) -> Picture {
    Picture {
        health: victim.health(),
        owners: victim
            .snapshot()
            .owners
            .iter()
            .map(|o| o.as_ref().map(|o| (o.node.to_string(), o.epoch)))
            .collect(),
        reconnects: others
            .running()
            .chain([victim])
            .map(|c| c.stats().reconnects)
            .collect(),
    }
}

fn refused_with(notices: &Mutex<Vec<MeshNotice>>, words: &str) -> bool {
    notices
        .lock()
        .unwrap()
        .iter()
        .any(|n| matches!(n, MeshNotice::Refused { reason, .. } if reason.contains(words)))
}

fn no_peer_down(notices: &Mutex<Vec<MeshNotice>>) {
    let notices = notices.lock().unwrap();
    assert!(
        !notices
            .iter()
            .any(|n| matches!(n, MeshNotice::PeerDown { .. })),
        "{notices:#?}"
    );
}

#[test]
fn a_peer_message_before_the_handshake_is_done_is_refused_and_changes_nothing() {
    let t = target();
    let member = t.local.nodes[0].address.clone();
    let before = picture(&t.victim, &t.local);

    // As the very first frame.
    let mut first = Raw::connect(&t.address);
    first.send(&forged_record(&member));
    let reason = first.refusal();
    assert!(
        reason.contains("expected hello during the handshake, got peer message"),
        "{reason}"
    );

    // After a hello, in place of the proof of the cookie.
    let mut early = Raw::connect(&t.address);
    early.send(&hello(PROTOCOL_VERSION, "hostile", &member));
    assert!(matches!(early.receive(), Some(Frame::Challenge(_))));
    early.send(&forged_record(&member));
    let reason = early.refusal();
    assert!(
        reason.contains("expected a proof during the handshake, got peer message"),
        "{reason}"
    );

    for words in [
        "expected hello during the handshake, got peer message",
        "expected a proof during the handshake, got peer message",
    ] {
        assert!(eventually(Duration::from_secs(5), || refused_with(
            &t.notices, words
        )));
    }
    assert_eq!(picture(&t.victim, &t.local), before);
    assert!(!t
        .victim
        .snapshot()
        .owners
        .iter()
        .flatten()
        .any(|o| o.epoch == FORGED_EPOCH));
    no_peer_down(&t.notices);
}

#[test]
fn a_second_incarnation_of_a_connected_node_is_refused_until_the_first_is_gone() {
    let mut t = target();
    let member = t.local.nodes[0].address.clone();
    let before = picture(&t.victim, &t.local);
    // Someone with the cookie (a second process started with the same
    // address, by mistake) completes the whole handshake.
    let twin = Identity {
        cluster: "hostile".into(),
        node: NodeId::parse(&member).unwrap(),
        incarnation: 0x5eed,
        role: Role::Member,
        cookie: Arc::from(COOKIE),
    };
    let handshake = |twin: Identity| -> Frame {
        let (dialing, hello) = Dialing::start(twin, NodeId::parse(&t.address).unwrap(), [5; 32]);
        let mut raw = Raw::connect(&t.address);
        raw.send(&hello);
        let challenge = raw.receive().expect("a challenge");
        let (_, proof) = dialing
            .on_challenge(challenge)
            .expect("the victim knows the cookie");
        raw.send(&proof);
        raw.receive().expect("an answer to the proof")
    };
    match handshake(twin.clone()) {
        Frame::Refused { reason, .. } => assert!(
            reason.contains("already connected with incarnation")
                && reason.contains("refused until that connection is gone"),
            "{reason}"
        ),
        other => panic!("the twin was let in: {other:?}"),
    }
    assert!(eventually(Duration::from_secs(5), || refused_with(
        &t.notices,
        "already connected with incarnation"
    )));
    assert_eq!(picture(&t.victim, &t.local), before);
    no_peer_down(&t.notices);

    // Once the first incarnation is gone, the new one is let in.
    t.local.crash(0);
    assert!(eventually(Duration::from_secs(5), || t
        .notices
        .lock()
        .unwrap()
        .iter()
        .any(
            |n| matches!(n, MeshNotice::PeerDown { peer, .. } if peer.as_str() == member)
        )));
    assert_eq!(handshake(twin), Frame::Welcome);
}

/// What one client of the relay sent, byte for byte.
type Tape = Arc<Mutex<Vec<u8>>>;

/// A TCP relay that records what each of its clients sent.
struct Relay {
    address: String,
    recordings: Arc<Mutex<Vec<Tape>>>,
}

impl Relay {
    /// Listens on 127.0.0.2 (so its address sorts after every 127.0.0.1
    /// node, which therefore dial it) and forwards to `target`.
    fn start(target: String) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let recordings: Arc<Mutex<Vec<Tape>>> = Arc::default();
        let all = recordings.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let recording = Arc::new(Mutex::new(Vec::new()));
                all.lock().unwrap().push(recording.clone());
                let pipe = |mut from: TcpStream, mut to: TcpStream, tape: Option<Tape>| {
                    std::thread::spawn(move || {
                        let mut buffer = [0u8; 16 << 10];
                        while let Ok(n @ 1..) = from.read(&mut buffer) {
                            if let Some(tape) = &tape {
                                tape.lock().unwrap().extend_from_slice(&buffer[..n]);
                            }
                            if to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    Some(recording),
                );
                pipe(server, client, None);
            }
        });
        Relay {
            address,
            recordings,
        }
    }
}

/// The frames in a recorded byte stream, as (kind, bytes with the
/// prefix); "sealed" for those after the handshake, which only the two
/// ends can open.
fn split_frames(mut bytes: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        if bytes.len() < 4 + len {
            break;
        }
        let kind = if frames.len() < 2 {
            wire::decode(&bytes[4..4 + len], wire::DEFAULT_FRAME_LIMIT)
                .unwrap()
                .kind()
        } else {
            "sealed"
        };
        frames.push((kind, bytes[..4 + len].to_vec()));
        bytes = &bytes[4 + len..];
    }
    frames
}

#[test]
fn a_recorded_handshake_and_its_frames_replayed_on_a_new_connection_are_refused() {
    // Three members, then a victim that advertises a relay's address: every
    // member dials the relay, which records what they send.
    let local = Local::start("replay", 3, 2);
    let listen = free_addresses(1).remove(0);
    let relay = Relay::start(listen.clone());
    let notices: Arc<Mutex<Vec<MeshNotice>>> = Arc::default();
    let sink = notices.clone();
    let mut config = minishard::Config::new(listen.clone(), COOKIE.to_vec());
    config.advertise = Some(relay.address.clone());
    config.timings = local.timings;
    config.notice_hook = Some(Arc::new(move |n: &MeshNotice| {
        sink.lock().unwrap().push(n.clone())
    }));
    local.members.lock().unwrap().push(relay.address.clone());
    let app = App {
        members: local.members.clone(),
        shards: 2,
        score: Default::default(),
        journal: Journal::default(),
    };
    let victim = Cluster::join("replay", app, config).unwrap();
    local.converged(Duration::from_secs(10)).unwrap();
    victim
        .wait_until(Health::Available, Duration::from_secs(10))
        .unwrap();
    // Wait for a recording with the handshake and some messages after it.
    let mut tape = Vec::new();
    assert!(eventually(Duration::from_secs(5), || {
        let recordings = relay.recordings.lock().unwrap();
        recordings.iter().any(|r| {
            let frames = split_frames(&r.lock().unwrap());
            let kinds: Vec<_> = frames.iter().map(|(k, _)| *k).collect();
            let done = kinds.starts_with(&["hello", "proof"])
                && kinds.iter().filter(|k| **k == "sealed").count() >= 5;
            if done {
                tape = frames;
            }
            done
        })
    }));
    let before = picture(&victim, &local);

    // The whole recording, straight to the victim: it answers the replayed
    // hello with a fresh nonce, so the recorded proof no longer fits.
    let mut replay = Raw::connect(&listen);
    for (_, bytes) in &tape {
        // The node may refuse the proof and close before the rest is sent.
        let _ = replay.0.write_all(bytes);
    }
    let reason = replay.refusal();
    assert!(
        reason.contains("wrong cookie: the proof does not match"),
        "{reason}"
    );

    // The frames after the handshake alone: sealed bytes are no hello;
    // the connection is closed unanswered.
    let refused_before = victim.stats().refused_handshakes;
    let mut frames_only = Raw::connect(&listen);
    for (_, bytes) in &tape[2..] {
        let _ = frames_only.0.write_all(bytes);
    }
    assert_eq!(
        frames_only.receive(),
        None,
        "the node answered sealed bytes"
    );
    assert!(eventually(Duration::from_secs(5), || refused_with(
        &notices,
        "wrong cookie"
    )));
    assert!(eventually(Duration::from_secs(5), || victim
        .stats()
        .refused_handshakes
        > refused_before));
    assert_eq!(picture(&victim, &local), before);
    assert_eq!(victim.health(), Health::Available);
    no_peer_down(&notices);
    victim.leave().unwrap();
}
