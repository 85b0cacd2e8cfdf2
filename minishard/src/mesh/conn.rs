//! One connection: the handshake over a socket, then frames both ways with
//! heartbeats, until either side closes, a heartbeat is missed, or the peer
//! sends something it must not. Frames after the handshake are sealed with
//! the keys it derived (`wire::seal`), except over TLS, which already
//! encrypts and authenticates the stream: sealing inside it again would
//! only cost CPU.
//!
//! A misbehaving peer costs exactly its own connection: every failure here
//! ends this task with a reason, and nothing else.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{lookup_host, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{timeout, timeout_at, Instant as TokioInstant};
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};

#[cfg(feature = "testing")]
use super::faults::Faults;
use super::tls::{self, Tls};
use super::RequestSink;
use crate::core::{NodeId, PeerMessage, Role};
use crate::requests::Lane;
use crate::wire::codec::{FrameDecoder, FrameEncoder, StreamError};
use crate::wire::handshake::{
    fresh_nonce, peer_text, Answering, Dialing, Established, Identity, PeerFacts, Refusal,
    RefusalKind,
};
use crate::wire::seal::{self, SessionKeys};
use crate::wire::{self, Frame};

/// Identifies one connection, so events of a replaced one are ignored.
pub(crate) type ConnId = u64;

/// What every connection of a node needs.
#[derive(Debug)]
pub(crate) struct Settings {
    pub identity: Identity,
    pub frame_limit: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub handshake_timeout: Duration,
    pub send_queue: usize,
    /// Frames a connection's request lane holds (see [`Lane`]).
    pub request_lane: usize,
    pub tls: Option<Tls>,
    /// This node's own view as `minishard status` shows it (a JSON object),
    /// to answer a peer's [`Frame::StatusRequest`] with.
    pub status_report: StatusSource,
    /// The address this node listens on, when it is a specific one: dials
    /// leave from it too, so peers (and firewalls) see every connection of
    /// a node, dialled or accepted, come from one address.
    pub source: Option<IpAddr>,
}

/// Writes this node's status report (see [`Settings::status_report`]).
#[derive(Clone)]
pub(crate) struct StatusSource(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for StatusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusSource")
    }
}

/// Counters the mesh keeps.
#[derive(Debug, Default)]
pub(crate) struct MeshStats {
    pub reconnects: AtomicU64,
    pub refused: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub rtt_micros: AtomicU64,
}

/// What connections tell the mesh.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    /// A handshake completed.
    Up {
        conn: ConnId,
        peer: PeerFacts,
        dialed: bool,
        sender: mpsc::Sender<Outgoing>,
        lane: Lane,
        kill: Arc<Notify>,
    },
    /// A message for the core.
    Message {
        conn: ConnId,
        peer: NodeId,
        message: PeerMessage,
    },
    /// The connection ended.
    Down {
        conn: ConnId,
        peer: NodeId,
        reason: String,
    },
    /// A connection was refused or closed for misbehaving.
    Refused { peer: String, reason: String },
    /// A peer answered this node's status request.
    StatusReport { peer: NodeId, json: String },
    /// A member this node dialled refused it.
    RefusedBy {
        peer: NodeId,
        kind: RefusalKind,
        reason: String,
    },
}

/// The two directions of a connection, over plain TCP or TLS alike. The
/// write side keeps a plain socket as itself: once the connection runs,
/// other threads may write a request or reply on it directly.
type Reader = Box<dyn AsyncRead + Send + Unpin>;

pub(crate) enum Writer {
    Plain(OwnedWriteHalf),
    Tls(Box<dyn AsyncWrite + Send + Unpin>),
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_flush(cx),
            Writer::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

pub(crate) struct Streams {
    reader: FramedRead<Reader, FrameDecoder>,
    writer: FramedWrite<Writer, FrameEncoder>,
}

fn streams(reader: Reader, writer: Writer) -> Streams {
    // Until the peer has proved the cookie, it gets the small handshake
    // limit; `authenticated` raises it to the configured one.
    Streams {
        reader: FramedRead::new(reader, FrameDecoder::handshake()),
        writer: FramedWrite::new(writer, FrameEncoder::handshake()),
    }
}

fn plain(stream: TcpStream) -> Streams {
    let (read, write) = stream.into_split();
    streams(Box::new(read), Writer::Plain(write))
}

fn encrypted<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> Streams {
    let (read, write) = tokio::io::split(stream);
    streams(Box::new(read), Writer::Tls(Box::new(write)))
}

/// Says what went wrong reading a frame, in the protocol's words.
fn read_failure(error: &StreamError) -> String {
    match error {
        StreamError::Io(error) => format!("read failed: {error}"),
        StreamError::Broken(error) => error.to_string(),
    }
}

impl Streams {
    async fn read(&mut self) -> Result<Frame, String> {
        let limit = self.reader.decoder().limit();
        match self.reader.next().await {
            None => Err("connection closed".into()),
            Some(Err(e)) => Err(read_failure(&e)),
            Some(Ok(bytes)) => wire::decode(&bytes, limit).map_err(|e| e.to_string()),
        }
    }

    async fn write(&mut self, frame: &Frame) -> Result<(), String> {
        self.writer
            .send(frame)
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    async fn refuse(&mut self, refusal: &Refusal) {
        if let Some(frame) = refusal.frame() {
            let _ = self.write(&frame).await;
        }
    }

    /// The handshake is done: frames up to the configured limit, sealed
    /// with the connection's keys unless TLS protects the stream. Bytes the
    /// peer sent right after its last handshake frame are already in the
    /// reader's buffer and go through the new decoder.
    fn authenticated(mut self, settings: &Settings, keys: SessionKeys) -> Streams {
        let (sealer, opener) = if settings.tls.is_some() || seal::unsealed_for_benchmarks() {
            (None, None)
        } else {
            (Some(keys.sealer), Some(keys.opener))
        };
        *self.reader.decoder_mut() = FrameDecoder::established(settings.frame_limit, opener);
        *self.writer.encoder_mut() = FrameEncoder::established(settings.frame_limit, sealer);
        self
    }
}

/// A heartbeat is answered at most this often: enough for a round-trip
/// figure, without doubling the frames an idle mesh carries.
const RTT_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Microseconds on a process-wide monotonic clock, for heartbeat round trips.
fn clock_micros() -> u64 {
    static BASE: OnceLock<std::time::Instant> = OnceLock::new();
    BASE.get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

/// Dials `target` and authenticates both ways (TLS first, if configured,
/// then the cookie) within the handshake deadline.
pub(crate) async fn dial(
    settings: &Settings,
    target: &NodeId,
) -> Result<(Streams, PeerFacts), Refusal> {
    let fail = |reason: String| Refusal::failed(RefusalKind::Connection, reason);
    let tls_failed = |reason: String| Refusal::ours(RefusalKind::Tls, reason);
    // A connect stalled by a lost SYN (retried by the kernel only after a
    // second) is abandoned after a heartbeat timeout and tried afresh; the
    // handshake itself gets the whole deadline, since a busy listener
    // answers late, and giving up on it would only make it busier.
    let connect_limit = settings.handshake_timeout.min(settings.heartbeat_timeout);
    let work = async {
        let connect = async {
            match target.as_str().parse::<SocketAddr>() {
                // An address literal needs no resolver (a blocking thread).
                Ok(address) => connect_from(settings.source, address).await,
                Err(_) => {
                    let mut last = None;
                    for address in lookup_host(target.as_str()).await? {
                        match connect_from(settings.source, address).await {
                            Ok(stream) => return Ok(stream),
                            Err(e) => last = Some(e),
                        }
                    }
                    Err(last.unwrap_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "the name has no address")
                    }))
                }
            }
        };
        let stream = timeout(connect_limit, connect)
            .await
            .map_err(|_| fail(format!("cannot connect within {connect_limit:?}")))?
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut s = match &settings.tls {
            None => plain(stream),
            Some(tls) => encrypted(tls.connect(stream, target).await.map_err(tls_failed)?),
        };
        let (dialing, hello) =
            Dialing::start(settings.identity.clone(), target.clone(), fresh_nonce());
        s.write(&hello).await.map_err(fail)?;
        let challenge = s.read().await.map_err(fail)?;
        let (awaiting, proof) = match dialing.on_challenge(challenge) {
            Ok(next) => next,
            Err(refusal) => {
                s.refuse(&refusal).await;
                return Err(refusal);
            }
        };
        s.write(&proof).await.map_err(fail)?;
        let welcome = s.read().await.map_err(fail)?;
        let Established { peer, keys } = awaiting.on_welcome(welcome)?;
        Ok((s.authenticated(settings, keys), peer))
    };
    let limit = settings.handshake_timeout;
    timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(fail(format!("no handshake within {limit:?}"))))
}

/// Connects to `target` from `source` when that can reach it (same family,
/// and loopback only to loopback), from wherever the kernel picks otherwise.
async fn connect_from(source: Option<IpAddr>, target: SocketAddr) -> io::Result<TcpStream> {
    let reachable = |ip: &IpAddr| {
        ip.is_ipv4() == target.is_ipv4() && ip.is_loopback() == target.ip().is_loopback()
    };
    let Some(source) = source.filter(reachable) else {
        return TcpStream::connect(target).await;
    };
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    defer_source_port(&socket);
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// Binding to `(ip, 0)` would reserve a port of the ephemeral range for
/// this socket alone, from the range port-0 listeners take theirs from: a
/// node of a large mesh holds one per dial, and a listener probed free a
/// moment earlier finds its port taken. IP_BIND_ADDRESS_NO_PORT picks the
/// port at connect time instead, shared with any connection to another
/// peer, and never one a socket is bound to.
#[cfg(target_os = "linux")]
fn defer_source_port(socket: &TcpSocket) {
    use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
    if let Err(error) = setsockopt(socket, IpBindAddressNoPort, &true) {
        tracing::debug!(%error, "IP_BIND_ADDRESS_NO_PORT not set: the dial reserves its port at bind");
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_source_port(_: &TcpSocket) {}

/// What the listener checks of a dialer besides the cookie.
pub(crate) struct Admission<A, P> {
    /// Before the proof: may a node with these facts join at all (the
    /// member list)? Cheap, and tells an honest misconfigured node why.
    pub hello: A,
    /// After the proof, just before the welcome: may this connection come
    /// up now (not a second incarnation of a connected node)?
    pub proven: P,
}

/// Answers a dialer within the handshake deadline: TLS first (if
/// configured), then checks its hello with `admission.hello`, authenticates
/// both ways, and welcomes it if `admission.proven` agrees.
pub(crate) async fn answer<A, P>(
    settings: &Settings,
    stream: TcpStream,
    admission: Admission<A, P>,
) -> Result<(Streams, PeerFacts), Refusal>
where
    A: FnOnce(&PeerFacts) -> Result<(), (RefusalKind, String)>,
    P: FnOnce(&PeerFacts) -> Result<(), (RefusalKind, String)>,
{
    let fail = |reason: String| Refusal::failed(RefusalKind::Connection, reason);
    let tls_failed = |reason: String| Refusal::ours(RefusalKind::Tls, reason);
    let _ = stream.set_nodelay(true);
    let work = async {
        let (mut s, certificate) = match &settings.tls {
            None => (plain(stream), None),
            Some(tls) => {
                let (stream, certificate) = tls.accept(stream).await.map_err(tls_failed)?;
                (encrypted(stream), Some(certificate))
            }
        };
        let step = async {
            let hello = s.read().await.map_err(fail)?;
            let admit = |peer: &PeerFacts| {
                if let (Some(certificate), Role::Member) = (&certificate, peer.role) {
                    tls::names(certificate, &peer.node).map_err(|e| (RefusalKind::Tls, e))?;
                }
                (admission.hello)(peer)
            };
            let (answering, challenge) =
                Answering::on_hello(&settings.identity, hello, fresh_nonce(), admit)?;
            s.write(&challenge).await.map_err(fail)?;
            let proof = s.read().await.map_err(fail)?;
            let established = answering.on_proof(proof)?;
            (admission.proven)(&established.peer)
                .map_err(|(kind, reason)| Refusal::ours(kind, reason))?;
            s.write(&Frame::Welcome).await.map_err(fail)?;
            Ok(established)
        }
        .await;
        match step {
            Ok(Established { peer, keys }) => Ok((s.authenticated(settings, keys), peer)),
            Err(refusal) => {
                s.refuse(&refusal).await;
                Err(refusal)
            }
        }
    };
    let limit = settings.handshake_timeout;
    timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(fail(format!("no handshake within {limit:?}"))))
}

/// Everything a running connection needs besides its socket.
pub(crate) struct Link {
    pub conn: ConnId,
    /// Changes once per heartbeat interval: the node's one beat (see
    /// [`super::beat`]), which every connection's writer follows.
    pub beat: watch::Receiver<()>,
    pub peer: PeerFacts,
    pub dialed: bool,
    pub settings: Arc<Settings>,
    pub events: mpsc::Sender<ConnEvent>,
    #[cfg(feature = "testing")]
    pub faults: Arc<Faults>,
    pub stats: Arc<MeshStats>,
    pub requests: Arc<dyn RequestSink>,
}

/// The write side of a running connection, shared by its writer task and
/// the threads that send requests and replies on it.
///
/// A request or reply is written by the thread that makes it (the
/// requester's, or the handler's responding), when the connection has
/// nothing queued or being written and runs over plain TCP: it is then
/// encoded, sealed and handed to the socket at once, instead of waking the
/// engine's thread to do so — one thread hop less each way of a round
/// trip. Anything else, and a request or reply that finds the connection
/// busy, goes through the writer task as before, which writes heartbeats
/// first. Frames are sealed and reach the socket in one order, that of
/// this lock: a direct write only happens when nothing else is pending,
/// and bytes the socket did not take are finished by the writer task
/// before anything else.
pub(crate) struct SharedWriter {
    state: Mutex<WriterState>,
    /// Wakes the writer task for bytes a direct write left (a full socket).
    leftover: Notify,
    #[cfg(feature = "testing")]
    cut: (Arc<Faults>, NodeId),
}

struct WriterState {
    encoder: FrameEncoder,
    /// Encoded (and sealed) bytes not yet written, in order.
    pending: BytesMut,
    /// The writer task is writing bytes it took: only it writes now.
    writing: bool,
    /// The socket, for direct writes: none over TLS, and none once the
    /// connection closes (so that no lane keeps it open).
    socket: Option<Arc<OwnedWriteHalf>>,
}

impl std::fmt::Debug for SharedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedWriter")
    }
}

impl SharedWriter {
    fn lock(&self) -> MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_cut(&self) -> bool {
        #[cfg(feature = "testing")]
        return self.cut.0.is_cut(&self.cut.1);
        #[cfg(not(feature = "testing"))]
        false
    }

    /// Writes `frame` on this thread if the connection is idle: nothing
    /// queued on `lane`, nothing pending, nobody writing. Gives the frame
    /// back otherwise, for the lane. Never waits: a busy lock is busy.
    pub(crate) fn try_write_now(
        &self,
        frame: Frame,
        lane: &mpsc::Sender<Frame>,
    ) -> Result<(), Frame> {
        if payload_len(&frame) > DIRECT_WRITE_MAX {
            return Err(frame);
        }
        let Ok(mut state) = self.state.try_lock() else {
            return Err(frame);
        };
        let idle =
            !state.writing && state.pending.is_empty() && lane.capacity() == lane.max_capacity();
        let Some(socket) = state.socket.clone().filter(|_| idle) else {
            return Err(frame);
        };
        if self.is_cut() {
            return Err(frame);
        }
        let state = &mut *state;
        // A frame that does not encode (over the limit) is the writer
        // task's to fail on, which closes the connection.
        if state.encoder.encode(&frame, &mut state.pending).is_err() {
            return Err(frame);
        }
        while !state.pending.is_empty() {
            match socket.try_write(&state.pending) {
                Ok(n) => state.pending.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Full, or failed: the writer task finishes the frame, or
                // meets the error and ends the connection.
                Err(_) => break,
            }
        }
        if !state.pending.is_empty() {
            self.leftover.notify_one();
        }
        Ok(())
    }
}

/// The largest payload a thread writes itself. The writer task waits for
/// the lock while a direct write seals its frame: a frame of up to this
/// size holds it for tens of microseconds, a 1 MiB one would hold the
/// engine's thread for the better part of a millisecond.
const DIRECT_WRITE_MAX: usize = 128 << 10;

fn payload_len(frame: &Frame) -> usize {
    use crate::wire::request::{Reply, ReplyOutcome};
    match frame {
        Frame::Request(request) => request.payload.len(),
        Frame::Reply(Reply {
            outcome: ReplyOutcome::Answered { payload, .. },
            ..
        }) => payload.len(),
        Frame::Reply(Reply {
            outcome: ReplyOutcome::Failed { message, .. },
            ..
        }) => message.len(),
        _ => 0,
    }
}

/// Announces the connection to the mesh, then carries frames until it ends.
pub(crate) async fn run(link: Link, streams: Streams) {
    let Streams { reader, writer } = streams;
    let parts = writer.into_parts();
    let (output, socket) = match parts.io {
        Writer::Plain(half) => {
            let socket = Arc::new(half);
            (Output::Plain(socket.clone()), Some(socket))
        }
        Writer::Tls(w) => (Output::Tls(w), None),
    };
    let handshake_left = !parts.write_buf.is_empty();
    let direct = socket.is_some();
    let shared = Arc::new(SharedWriter {
        state: Mutex::new(WriterState {
            encoder: parts.codec,
            // Whatever the handshake left unwritten goes first.
            pending: parts.write_buf,
            writing: false,
            // Moved, not cloned: the write half shuts down when its last
            // handle goes, and that must be the writer's as it closes, or
            // a peer would learn of a leave only by a missed heartbeat.
            socket,
        }),
        leftover: Notify::new(),
        #[cfg(feature = "testing")]
        cut: (link.faults.clone(), link.peer.node.clone()),
    });
    let (sender, outbox) = mpsc::channel(link.settings.send_queue);
    let (lane_sender, lane_frames) = mpsc::channel(link.settings.request_lane);
    let kill = Arc::new(Notify::new());
    let lane = Lane {
        frames: lane_sender,
        kill: kill.clone(),
        direct: direct.then(|| shared.clone()),
    };
    let up = ConnEvent::Up {
        conn: link.conn,
        peer: link.peer.clone(),
        dialed: link.dialed,
        sender: sender.clone(),
        lane: lane.clone(),
        kill: kill.clone(),
    };
    if link.events.send(up).await.is_err() {
        return;
    }
    // Only the mesh holds the outbox's sender: when it lets go, the writer
    // flushes what is queued and closes. Heartbeat answers go on a side
    // channel so they do not keep the outbox open.
    drop(sender);
    // Heartbeat answers and status reports: answers to the peer, which the
    // mesh's outbox does not carry.
    let (acks, acks_out) = mpsc::channel(16);
    let peer = link.peer.node.clone();
    if handshake_left {
        shared.leftover.notify_one();
    }
    let writing = tokio::spawn(write_loop(
        output,
        shared.clone(),
        outbox,
        lane_frames,
        acks_out,
        link.beat.clone(),
    ));
    let reason = tokio::select! {
        reason = read_loop(&link, reader, acks, &lane) => reason,
        () = kill.notified() => "closed by this node".to_owned(),
    };
    writing.abort();
    // Lanes outlive the connection (a responder may hold one): they must
    // not keep its socket open.
    shared.lock().socket = None;
    let _ = link
        .events
        .send(ConnEvent::Down {
            conn: link.conn,
            peer,
            reason,
        })
        .await;
}

/// Where the writer task writes.
enum Output {
    /// The socket, shared with direct writes.
    Plain(Arc<OwnedWriteHalf>),
    Tls(Box<dyn AsyncWrite + Send + Unpin>),
}

impl Output {
    async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        match self {
            Output::Plain(socket) => {
                while !bytes.is_empty() {
                    socket.writable().await?;
                    match socket.try_write(bytes) {
                        Ok(n) => bytes = &bytes[n..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Output::Tls(w) => {
                w.write_all(bytes).await?;
                w.flush().await
            }
        }
    }

    async fn close(self) {
        match self {
            // The last handle of the write half shuts it down as it goes.
            Output::Plain(socket) => drop(socket),
            Output::Tls(mut w) => {
                let _ = w.shutdown().await;
            }
        }
    }
}

/// Frames written after one that had to be waited for, before a flush, at
/// most: a burst costs one system call, and the next heartbeat waits for
/// at most this many bytes.
const WRITE_BATCH_BYTES: usize = 256 << 10;

/// Writes, in this order of priority: heartbeats and their answers, the
/// core's messages, then the request lane. A heartbeat therefore waits for
/// at most one batch of frames already taken, never behind a queue of
/// requests; and a request flood cannot fill the core's queue, whose
/// overflow would close the connection. Bytes a direct write left go
/// before all of these (they are a frame begun on the socket).
async fn write_loop(
    mut output: Output,
    shared: Arc<SharedWriter>,
    mut outbox: mpsc::Receiver<Outgoing>,
    mut lane: mpsc::Receiver<Frame>,
    mut acks: mpsc::Receiver<Frame>,
    mut beat: watch::Receiver<()>,
) {
    // The first heartbeat goes at the node's next beat, as every later one.
    beat.mark_unchanged();
    let mut spare = BytesMut::new();
    let mut closing = false;
    let mut first_after_close = None;
    loop {
        let first = if let Some(frame) = first_after_close.take() {
            Some(frame)
        } else {
            tokio::select! {
            biased;
            Some(answer) = acks.recv() => Some(answer.into()),
            // The beat stops only as the mesh shuts down, when this
            // connection is closing too.
            Ok(()) = beat.changed() => Some(Frame::Heartbeat { sent_micros: clock_micros() }.into()),
            next = outbox.recv() => match next {
                Some(frame) => Some(frame),
                // The mesh let go of this connection: flush and close.
                None => {
                    closing = true;
                    None
                }
            },
            () = shared.leftover.notified() => None,
            Some(frame) = lane.recv() => Some(frame.into()),
            }
        };
        let out = {
            let mut state = shared.lock();
            let state = &mut *state;
            state.writing = true;
            let mut out = std::mem::replace(&mut state.pending, std::mem::take(&mut spare));
            let mut next = first;
            while let Some(frame) = next.take() {
                if !shared.is_cut() {
                    let encoded = match frame {
                        Outgoing::Frame(frame) => state.encoder.encode(&frame, &mut out),
                        Outgoing::Encoded(bytes) => state.encoder.encode(bytes, &mut out),
                    };
                    if encoded.is_err() {
                        return;
                    }
                }
                if out.len() < WRITE_BATCH_BYTES {
                    next = if closing {
                        // Answers already queued go out before the close.
                        lane.try_recv().ok().map(Outgoing::Frame)
                    } else {
                        outbox
                            .try_recv()
                            .or_else(|_| lane.try_recv().map(Outgoing::Frame))
                            .ok()
                    };
                }
            }
            out
        };
        if !out.is_empty() && output.write_all(&out).await.is_err() {
            return;
        }
        spare = out;
        spare.clear();
        shared.lock().writing = false;
        if closing {
            match lane.try_recv() {
                Ok(frame) => first_after_close = Some(frame.into()),
                Err(_) => break,
            }
        }
    }
    // Direct writes stop before the socket closes.
    let socket = {
        let mut state = shared.lock();
        state.writing = true;
        state.socket.take()
    };
    drop(socket);
    output.close().await;
}

/// What the writer takes: a frame, encoded straight into its buffer, or a
/// frame's body encoded already (a record for every peer is encoded once,
/// not once per connection).
pub(crate) enum Outgoing {
    Frame(Frame),
    Encoded(Bytes),
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Outgoing {
        Outgoing::Frame(frame)
    }
}

impl From<Bytes> for Outgoing {
    fn from(body: Bytes) -> Outgoing {
        Outgoing::Encoded(body)
    }
}

async fn read_loop(
    link: &Link,
    mut reader: FramedRead<Reader, FrameDecoder>,
    acks: mpsc::Sender<Frame>,
    lane: &Lane,
) -> String {
    let settings = &link.settings;
    let peer = &link.peer.node;
    let mut last_heard = TokioInstant::now();
    let mut last_answer: Option<TokioInstant> = None;
    let mut last_report: Option<TokioInstant> = None;
    loop {
        let next = match timeout_at(last_heard + settings.heartbeat_timeout, reader.next()).await {
            Err(_) => return format!("no heartbeat for {:?}", settings.heartbeat_timeout),
            Ok(None) => return "closed by the peer".into(),
            Ok(Some(next)) => next,
        };
        #[cfg(feature = "testing")]
        if link.faults.is_cut(peer) {
            continue;
        }
        let bytes = match next {
            Ok(bytes) => bytes,
            // A frame over the limit, cut short or failing authentication
            // broke the protocol; a socket error (a reset) is the
            // connection ending, not misbehaviour.
            Err(StreamError::Io(e)) => return format!("read failed: {e}"),
            Err(StreamError::Broken(e)) => return protocol_error(link, e.to_string()),
        };
        let frame = match wire::decode(&bytes, settings.frame_limit) {
            Ok(frame) => frame,
            Err(e) => return protocol_error(link, e.to_string()),
        };
        last_heard = TokioInstant::now();
        match frame {
            Frame::Heartbeat { sent_micros } => {
                // Answered about once a second, so a peer that floods
                // heartbeats gets no more answers than one that does not.
                let due = last_answer.is_none_or(|at| at.elapsed() >= RTT_SAMPLE_EVERY);
                if due && acks.try_send(Frame::HeartbeatAck { sent_micros }).is_ok() {
                    last_answer = Some(last_heard);
                }
            }
            Frame::HeartbeatAck { sent_micros } => {
                let rtt = clock_micros().saturating_sub(sent_micros);
                link.stats.rtt_micros.store(rtt, Ordering::Relaxed);
            }
            Frame::Peer(message) => {
                let event = ConnEvent::Message {
                    conn: link.conn,
                    peer: peer.clone(),
                    message,
                };
                // A full channel holds this peer back (TCP pushes back on it)
                // rather than letting its messages pile up in memory.
                if link.events.send(event).await.is_err() {
                    return "engine stopped".into();
                }
            }
            Frame::StatusRequest => {
                // Built at most once per heartbeat interval per connection,
                // so a peer asking in a loop costs little.
                let due = last_report.is_none_or(|at| at.elapsed() >= settings.heartbeat_interval);
                if due {
                    last_report = Some(last_heard);
                    let _ = acks.try_send(Frame::StatusReport {
                        json: (settings.status_report.0)(),
                    });
                }
            }
            Frame::StatusReport { json } => {
                let event = ConnEvent::StatusReport {
                    peer: peer.clone(),
                    json,
                };
                if link.events.send(event).await.is_err() {
                    return "engine stopped".into();
                }
            }
            // Requests bypass the core: the owner's handler or the waiting
            // sender takes them straight from here.
            Frame::Request(request) => link.requests.request(peer, lane, request),
            Frame::Reply(reply) => link.requests.reply(peer, link.conn, reply),
            Frame::HandOff(frame) => link.requests.hand_off(peer, frame),
            Frame::Refused { reason, .. } => {
                return format!("refused by the peer: {}", peer_text(&reason))
            }
            other => {
                return protocol_error(
                    link,
                    format!("unexpected {} after the handshake", other.kind()),
                )
            }
        }
    }
}

fn protocol_error(link: &Link, reason: String) -> String {
    link.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
    report_refusal(&link.events, link.peer.node.to_string(), reason.clone());
    reason
}

/// Tells the engine about a refusal without waiting: when a flood has filled
/// the event channel, the line goes straight to the log instead (the
/// counters have it either way).
pub(crate) fn report_refusal(events: &mpsc::Sender<ConnEvent>, peer: String, reason: String) {
    if let Err(mpsc::error::TrySendError::Full(ConnEvent::Refused { peer, reason })) =
        events.try_send(ConnEvent::Refused { peer, reason })
    {
        tracing::warn!(%peer, %reason, "refused a connection");
    }
}
