//! Bad input against a live node: every malformed, oversized, truncated,
//! unauthenticated or silent connection is refused or closed with a reason,
//! and the node and its other connections carry on (DESIGN.md 7.8).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use minishard::core::{NodeId, Role};
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

fn framed(frame: &Frame) -> Vec<u8> {
    let body = wire::encode(frame);
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend(body);
    bytes
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
        Ok(Frame::Refused { reason }) => Some(reason),
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
