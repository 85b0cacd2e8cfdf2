//! Mutual TLS between nodes: certificates from the cluster's CA only, a
//! member's certificate must name its address, the cookie still applies on
//! top, and bad TLS files are refused at join. Certificates are made by the
//! test (rcgen).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::certs::{self, Ca, Files};
use common::*;
use minishard::{Cluster, Config, Error, Health, MeshNotice, TlsFiles};

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("minishard-tls-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tls(files: &Files) -> TlsFiles {
    TlsFiles {
        cert: files.cert.clone(),
        key: files.key.clone(),
        ca: files.ca.clone(),
    }
}

type Notices = Arc<Mutex<Vec<MeshNotice>>>;

fn listen(config: &mut Config) -> Notices {
    let notices: Notices = Arc::default();
    let sink = notices.clone();
    config.notice_hook = Some(Arc::new(move |n: &MeshNotice| {
        sink.lock().unwrap().push(n.clone())
    }));
    config.handshake_timeout = Duration::from_millis(500);
    notices
}

fn refused(notices: &Notices, words: &[&str]) -> bool {
    notices.lock().unwrap().iter().any(|n| {
        matches!(n, MeshNotice::Refused { reason, .. } if words.iter().all(|w| reason.contains(w)))
    })
}

fn peer_up(notices: &Notices, peer: &str) -> bool {
    notices
        .lock()
        .unwrap()
        .iter()
        .any(|n| matches!(n, MeshNotice::PeerUp { peer: p } if p.as_str() == peer))
}

/// A cluster of `n` members of which the first `good` use certificates from
/// the cluster's CA valid for 127.0.0.1; the others get `odd(i)`'s files.
/// Every node's notices are recorded.
struct TlsCluster {
    local: Local,
    notices: Vec<Notices>,
    dir: PathBuf,
    good: Files,
}

fn tls_cluster(
    test: &str,
    n: usize,
    shards: u32,
    good: usize,
    odd: impl Fn(usize, &std::path::Path, &Ca) -> (Files, Option<Vec<u8>>) + Send + Sync + 'static,
) -> TlsCluster {
    let dir = scratch(test);
    let ca = Ca::new("cluster CA");
    let node = ca.node(&["127.0.0.1"]);
    let good_files = certs::write(&dir, "node", "ca", &ca, &node);
    let good_copy = good_files.clone();
    let notices: Vec<Notices> = (0..n).map(|_| Notices::default()).collect();
    let sinks = notices.clone();
    let odd_files: Vec<Option<(Files, Option<Vec<u8>>)>> = (0..n)
        .map(|i| (i >= good).then(|| odd(i, &dir, &ca)))
        .collect();
    let configure = move |i: usize, config: &mut Config| {
        let sink = sinks[i].clone();
        config.notice_hook = Some(Arc::new(move |n: &MeshNotice| {
            sink.lock().unwrap().push(n.clone())
        }));
        config.handshake_timeout = Duration::from_millis(500);
        match &odd_files[i] {
            None => config.tls = Some(tls(&good_files)),
            Some((files, cookie)) => {
                config.tls = Some(tls(files));
                if let Some(cookie) = cookie {
                    config.cookie = cookie.clone();
                }
            }
        }
    };
    let local = Local::start_with(test, n, shards, Some(Arc::new(configure)));
    TlsCluster {
        local,
        notices,
        dir,
        good: good_copy,
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TlsCluster {
    /// Nodes 0..good converge among themselves; the others stay out.
    fn good_converge(&self, good: usize) {
        assert!(
            eventually(Duration::from_secs(10), || (0..good).all(|i| {
                self.local.nodes[i].cluster().health() == Health::Available
            })),
            "the nodes with good certificates did not converge"
        );
    }
}

#[test]
fn a_cluster_over_mutual_tls_converges_and_refuses_plain_tcp() {
    let t = tls_cluster("converges", 3, 2, 3, |_, _, _| unreachable!());
    t.local.converged(Duration::from_secs(10)).unwrap();
    let victim = &t.local.nodes[0];
    let before: Vec<u64> = t.local.running().map(|c| c.stats().reconnects).collect();

    // Someone speaking the plain protocol: a hello with no TLS under it.
    let mut plain = TcpStream::connect(&victim.address).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let hello = minishard::wire::encode(&minishard::wire::Frame::Welcome);
    let mut bytes = (hello.len() as u32).to_be_bytes().to_vec();
    bytes.extend(hello);
    let _ = plain.write_all(&bytes);
    let _ = std::io::Read::read_to_end(&mut plain, &mut Vec::new());
    assert!(eventually(Duration::from_secs(5), || refused(
        &t.notices[0],
        &["TLS handshake failed"]
    )));

    // A node configured without TLS cannot join either.
    let members = t.local.members.clone();
    let address = free_addresses(1).remove(0);
    let mut config = Config::new(address, COOKIE.to_vec());
    config.observer = true;
    config.timings = t.local.timings;
    let plain_notices = listen(&mut config);
    let app = App {
        members,
        shards: 2,
        score: Default::default(),
        journal: Journal::default(),
    };
    let tls_refusals = |notices: &Notices| {
        notices
            .lock()
            .unwrap()
            .iter()
            .filter(|n| matches!(n, MeshNotice::Refused { reason, .. } if reason.contains("TLS handshake failed")))
            .count()
    };
    let before_outsider = tls_refusals(&t.notices[0]);
    let outsider = Cluster::join("converges", app, config).unwrap();
    assert!(eventually(Duration::from_secs(5), || tls_refusals(
        &t.notices[0]
    ) > before_outsider));
    assert!(!plain_notices
        .lock()
        .unwrap()
        .iter()
        .any(|n| matches!(n, MeshNotice::PeerUp { .. })));
    assert!(outsider.shard_map().iter().all(Option::is_none));
    outsider.leave().unwrap();

    // The cluster never noticed.
    t.local.converged(Duration::from_secs(1)).unwrap();
    let after: Vec<u64> = t.local.running().map(|c| c.stats().reconnects).collect();
    assert_eq!(before, after);
}

/// A TLS client with a certificate from the cluster's CA, connected to
/// `address` (on 127.0.0.1).
fn tls_client(
    files: &Files,
    address: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.ca).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let name = "127.0.0.1".try_into().unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

#[test]
fn over_tls_frames_are_not_sealed_a_second_time() {
    use common::by_hand::{dial_by_hand, read_plain};
    use minishard::core::{NodeId, Role};
    use minishard::wire::handshake::Identity;

    let t = tls_cluster("plain-inside", 2, 1, 2, |_, _, _| unreachable!());
    t.local.converged(Duration::from_secs(10)).unwrap();
    let address = t.local.nodes[0].address.clone();
    let mut stream = tls_client(&t.good, &address);
    let me = Identity {
        cluster: "plain-inside".into(),
        node: NodeId::parse("127.0.0.1:9").unwrap(),
        incarnation: 1,
        role: Role::Observer,
        cookie: Arc::from(COOKIE),
    };
    dial_by_hand(&mut stream, me, &address, [4; 32]).expect("welcomed");
    // What the node sends next reads as plain frames inside TLS: its
    // record, heartbeats. Sealed, not one of them would decode.
    let mut kinds = Vec::new();
    while !kinds.contains(&"heartbeat") {
        match read_plain(&mut stream) {
            Some(frame) => kinds.push(frame.kind()),
            None => panic!("not a plain frame after {kinds:?}"),
        }
        assert!(kinds.len() < 100, "no heartbeat in {kinds:?}");
    }
}

#[test]
fn a_node_with_a_certificate_from_another_ca_is_refused_both_ways() {
    let t = tls_cluster("other-ca", 4, 2, 3, |i, dir, _| {
        let other = Ca::new("someone else's CA");
        let node = other.node(&["127.0.0.1"]);
        (
            certs::write(dir, &format!("stranger{i}"), "other-ca", &other, &node),
            None,
        )
    });
    t.good_converge(3);
    let stranger = t.local.nodes[3].address.clone();
    // Whichever side dials, a good node refuses: as a server, the
    // stranger's client certificate; as a client, its server certificate.
    assert!(
        eventually(Duration::from_secs(5), || (0..3)
            .any(|i| refused(&t.notices[i], &["TLS handshake failed"]))),
        "{:#?}",
        t.notices[0].lock().unwrap()
    );
    assert!(eventually(Duration::from_secs(5), || refused(
        &t.notices[3],
        &["TLS handshake failed"]
    )));
    for i in 0..3 {
        assert!(!peer_up(&t.notices[i], &stranger));
        assert_eq!(t.local.nodes[i].cluster().health(), Health::Available);
    }
    assert_ne!(t.local.nodes[3].cluster().health(), Health::Available);
    assert!(t.local.nodes[3].cluster().my_shard().is_none());
}

#[test]
fn a_member_whose_certificate_names_another_address_is_refused() {
    let t = tls_cluster("wrong-name", 4, 2, 3, |i, dir, ca| {
        let node = ca.node(&["127.0.0.9", "elsewhere.example"]);
        (
            certs::write(dir, &format!("misnamed{i}"), "ca", ca, &node),
            None,
        )
    });
    t.good_converge(3);
    let misnamed = t.local.nodes[3].address.clone();
    // As a server its certificate does not fit the address dialled; as a
    // client, it does not fit the member address it claims.
    assert!(
        eventually(Duration::from_secs(5), || (0..3).any(|i| refused(
            &t.notices[i],
            &["claims to be a member but its TLS certificate is not valid for 127.0.0.1"]
        )) && (0..3)
            .any(|i| refused(&t.notices[i], &["TLS handshake failed"]))),
        "{:#?}",
        t.notices[0].lock().unwrap()
    );
    for i in 0..3 {
        assert!(!peer_up(&t.notices[i], &misnamed));
    }
}

#[test]
fn over_tls_the_cookie_is_still_checked() {
    let t = tls_cluster("cookie", 4, 2, 3, |i, dir, ca| {
        let node = ca.node(&["127.0.0.1"]);
        (
            certs::write(dir, &format!("cookieless{i}"), "ca", ca, &node),
            Some(b"not-the-cookie".to_vec()),
        )
    });
    t.good_converge(3);
    let intruder = t.local.nodes[3].address.clone();
    assert!(eventually(Duration::from_secs(5), || (0..3)
        .any(|i| refused(&t.notices[i], &["cookie"]))));
    for i in 0..3 {
        assert!(!peer_up(&t.notices[i], &intruder));
    }
}

#[test]
fn an_observer_needs_a_certificate_from_the_ca_but_not_one_naming_its_address() {
    let t = tls_cluster("observer", 3, 2, 3, |_, _, _| unreachable!());
    t.local.converged(Duration::from_secs(10)).unwrap();
    // The members' certificate: signed by the CA, naming 127.0.0.1 and
    // nothing of the observer's advertised address.
    let files = Files {
        cert: t.dir.join("node.pem"),
        key: t.dir.join("node-key.pem"),
        ca: t.dir.join("ca.pem"),
    };
    let mut config = Config::new("127.0.0.1:0", COOKIE.to_vec());
    config.observer = true;
    config.advertise = Some("observer.example:9".into());
    config.timings = t.local.timings;
    config.tls = Some(tls(&files));
    let app = App {
        members: t.local.members.clone(),
        shards: 0,
        score: Default::default(),
        journal: Journal::default(),
    };
    let observer = Cluster::join("observer", app, config).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || observer
            .shard_map()
            .iter()
            .all(Option::is_some)
            && !observer.shard_map().is_empty()),
        "the observer never saw the shard map"
    );
    observer.leave().unwrap();
}

#[test]
fn bad_tls_files_are_refused_at_join_with_a_clear_error() {
    let dir = scratch("join-errors");
    let ca = Ca::new("cluster CA");
    let good = certs::write(&dir, "node", "ca", &ca, &ca.node(&["127.0.0.1"]));
    let other = Ca::new("other CA");
    let foreign = certs::write(
        &dir,
        "foreign",
        "other-ca",
        &other,
        &other.node(&["127.0.0.1"]),
    );
    std::fs::write(dir.join("garbage.pem"), "this is not PEM at all\n").unwrap();
    let join = |files: TlsFiles| {
        let mut config = Config::new("127.0.0.1:0", COOKIE.to_vec());
        config.tls = Some(files);
        let app = App {
            members: Arc::new(Mutex::new(vec!["127.0.0.1:1".into()])),
            shards: 1,
            score: Default::default(),
            journal: Journal::default(),
        };
        match Cluster::join("join-errors", app, config) {
            Ok(_) => panic!("joined with bad TLS files"),
            Err(Error::Config(message)) => message,
            Err(other) => panic!("not a configuration error: {other}"),
        }
    };
    let with = |cert: &PathBuf, key: &PathBuf, ca: &PathBuf| TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        ca: ca.clone(),
    };
    let missing = dir.join("missing.pem");
    let garbage = dir.join("garbage.pem");
    let cases = [
        (
            with(&missing, &good.key, &good.ca),
            vec!["TLS certificate", "missing.pem", "No such file"],
        ),
        (
            with(&good.cert, &missing, &good.ca),
            vec!["TLS key", "missing.pem"],
        ),
        (
            with(&good.cert, &good.key, &missing),
            vec!["TLS CA", "missing.pem"],
        ),
        (
            with(&garbage, &good.key, &good.ca),
            vec!["garbage.pem", "no certificate in it"],
        ),
        (
            with(&good.cert, &garbage, &good.ca),
            vec!["garbage.pem", "no private key in it"],
        ),
        (
            with(&good.cert, &good.cert, &good.ca),
            vec!["node.pem", "no private key in it"],
        ),
        (
            with(&good.cert, &foreign.key, &good.ca),
            vec!["does not fit certificate"],
        ),
        (
            with(&foreign.cert, &foreign.key, &good.ca),
            vec!["is not accepted by the CA"],
        ),
    ];
    for (files, words) in cases {
        let message = join(files);
        for word in words {
            assert!(message.contains(word), "{message:?} should say {word:?}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_cluster_name_longer_than_the_limit_is_refused_at_join() {
    let app = App {
        members: Arc::new(Mutex::new(vec!["127.0.0.1:1".into()])),
        shards: 1,
        score: Default::default(),
        journal: Journal::default(),
    };
    let name = "n".repeat(minishard::wire::MAX_CLUSTER_NAME_LEN + 1);
    let err = Cluster::join(&name, app, Config::new("127.0.0.1:0", COOKIE.to_vec()))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("cluster name"), "{err}");
}
