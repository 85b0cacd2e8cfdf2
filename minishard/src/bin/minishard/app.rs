//! An application for the command line: it owns nothing but prints every
//! callback it receives, as text or as one JSON object per line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use minishard::{
    CallbackError, Callbacks, HandOff, Health, MeshNotice, NodeId, ReleaseReason, Responder,
};
use serde_json::{json, Map, Value};

/// How `score` answers.
#[derive(Clone, Copy, Debug)]
pub enum ScoreMode {
    /// Milliseconds since the allocation started: the older allocation wins.
    Uptime,
    /// Always this number.
    Fixed(i64),
}

impl std::str::FromStr for ScoreMode {
    type Err = String;
    fn from_str(s: &str) -> Result<ScoreMode, String> {
        match s.split_once(':') {
            None if s == "uptime" => Ok(ScoreMode::Uptime),
            Some(("fixed", n)) => n
                .parse()
                .map(ScoreMode::Fixed)
                .map_err(|_| format!("fixed:N needs an integer, not {n:?}")),
            _ => Err(format!("unknown score {s:?}: expected uptime or fixed:N")),
        }
    }
}

/// What `handle_request` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Handler {
    /// No handler: requests fail, saying so.
    #[default]
    None,
    /// Answers `<node> <epoch> <payload>`.
    Echo,
    /// An in-memory key-value store per shard: `set K V`, `get K`, `del K`.
    Kv,
}

impl std::str::FromStr for Handler {
    type Err = String;
    fn from_str(s: &str) -> Result<Handler, String> {
        match s {
            "none" => Ok(Handler::None),
            "echo" => Ok(Handler::Echo),
            "kv" => Ok(Handler::Kv),
            _ => Err(format!("unknown handler {s:?}: expected echo, kv or none")),
        }
    }
}

/// One `kv` command against a shard's store: the answer, or why not.
pub fn kv_command(store: &mut HashMap<String, String>, command: &str) -> Result<String, String> {
    let mut words = command.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("set"), Some(key), Some(value)) => {
            store.insert(key.to_owned(), value.to_owned());
            Ok("OK".into())
        }
        (Some("get"), Some(key), None) => store
            .get(key)
            .cloned()
            .ok_or_else(|| format!("no key {key:?}")),
        (Some("del"), Some(key), None) => Ok(match store.remove(key) {
            Some(_) => "1".into(),
            None => "0".into(),
        }),
        _ => Err(format!(
            "unknown command {command:?}: expected set K V, get K or del K"
        )),
    }
}

/// A `kv` store as handed off to the shard's next owner: a JSON object of
/// strings, so a person reading a capture can tell what moved.
pub fn kv_hand_off(store: &HashMap<String, String>) -> Vec<u8> {
    serde_json::to_vec(store).unwrap_or_default()
}

/// A `kv` store another node handed off, or why it cannot be read.
pub fn kv_received(hand_off: &HandOff) -> Result<HashMap<String, String>, String> {
    serde_json::from_slice(&hand_off.data)
        .map_err(|e| format!("the hand-off from {} is no kv store: {e}", hand_off.from))
}

/// After a won conflict the winner keeps its own keys and adds the loser's
/// keys it does not have: the winner's allocation is the one that went on,
/// so where both wrote a key the winner's value is the later truth.
pub fn kv_merge(store: &mut HashMap<String, String>, loser: HashMap<String, String>) {
    for (key, value) in loser {
        store.entry(key).or_insert(value);
    }
}

/// One printed event, kept for tools that measure (the demo, the bench).
#[derive(Clone, Debug)]
pub struct Logged {
    pub at: Instant,
    pub event: String,
    pub fields: Value,
}

/// Prints events, one per line, whole lines only (several threads print),
/// and keeps them.
#[derive(Clone)]
pub struct Printer {
    node: String,
    json: bool,
    /// Text lines start with the time since this instant.
    started: Option<Instant>,
    out: Arc<Mutex<Box<dyn Write + Send>>>,
    pub log: Arc<Mutex<Vec<Logged>>>,
    /// Set for a node that crashed in the demo: what it still says as it
    /// winds down is not printed.
    silenced: Arc<AtomicBool>,
}

impl Printer {
    pub fn new(node: String, json: bool, out: Box<dyn Write + Send>) -> Printer {
        Printer {
            node,
            json,
            started: None,
            out: Arc::new(Mutex::new(out)),
            log: Arc::new(Mutex::new(Vec::new())),
            silenced: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Silences every copy of this printer so far; this one (and copies
    /// made from it from now on) prints again, for the node's next start.
    pub fn silence_and_detach(&mut self) {
        self.silenced.store(true, Ordering::Release);
        self.silenced = Arc::new(AtomicBool::new(false));
    }

    /// Text lines start with the time elapsed since `started`.
    pub fn timed(mut self, started: Instant) -> Printer {
        self.started = Some(started);
        self
    }

    /// The events so far.
    pub fn logged(&self) -> Vec<Logged> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Prints one event with its fields.
    pub fn event(&self, event: &str, fields: Value) {
        if self.silenced.load(Ordering::Acquire) {
            return;
        }
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Logged {
                at: Instant::now(),
                event: event.to_owned(),
                fields: fields.clone(),
            });
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let line = if self.json {
            let mut object = Map::new();
            object.insert("t".into(), json!(t));
            object.insert("node".into(), json!(self.node));
            object.insert("event".into(), json!(event));
            if let Value::Object(extra) = fields {
                object.extend(extra);
            }
            Value::Object(object).to_string()
        } else {
            let mut text = match self.started {
                Some(started) => format!(
                    "{:>8.3}s  {:<16} {event}",
                    started.elapsed().as_secs_f64(),
                    self.node
                ),
                None => format!("{} {event}", self.node),
            };
            if let Value::Object(extra) = fields {
                for (k, v) in extra {
                    let v = match v {
                        Value::Number(n) if k == "epoch" => {
                            n.as_u64().map_or(n.to_string(), show_epoch)
                        }
                        Value::String(s) => s,
                        Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    text.push_str(&format!(" {k}={v}"));
                }
            }
            text
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A closed stdout (a pipe whose reader left) must not stop the node.
        let _ = out.write_all(format!("{line}\n").as_bytes());
        let _ = out.flush();
    }

    /// Prints what the mesh did.
    pub fn notice(&self, notice: &MeshNotice) {
        match notice {
            MeshNotice::PeerUp { peer } => self.event("peer_up", json!({ "peer": peer.as_str() })),
            MeshNotice::PeerDown { peer, reason } => self.event(
                "peer_down",
                json!({ "peer": peer.as_str(), "reason": reason }),
            ),
            MeshNotice::Refused { peer, reason } => {
                self.event("refused", json!({ "peer": peer, "reason": reason }))
            }
        }
    }
}

/// The allocation this node holds.
pub struct Held {
    pub shard: u32,
    pub epoch: u64,
    pub since: Instant,
    /// The shard's data with the `kv` handler.
    pub kv: HashMap<String, String>,
}

/// Where the member list comes from each time the engine asks for it.
pub enum MemberSource {
    /// A list in memory, which whoever holds the other handle may change.
    Shared(Arc<Mutex<Vec<String>>>),
    /// A file read again at every poll (`--members-file`), so the list of a
    /// running node can be changed from outside: addresses separated by
    /// commas, spaces or new lines; `#` starts a comment.
    File {
        path: PathBuf,
        /// The list the file gave last time, to print `members` on a change.
        last: Option<Vec<String>>,
    },
}

impl MemberSource {
    pub fn file(path: PathBuf) -> MemberSource {
        MemberSource::File { path, last: None }
    }

    /// The current list, and whether it differs from the one read before
    /// (never on the first read).
    fn read(&mut self) -> Result<(Vec<String>, bool), CallbackError> {
        match self {
            MemberSource::Shared(list) => Ok((
                list.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                false,
            )),
            MemberSource::File { path, last } => {
                let text = std::fs::read_to_string(&*path).map_err(|e| {
                    CallbackError(format!(
                        "cannot read the member list file {}: {e}",
                        path.display()
                    ))
                })?;
                let list = parse_members(&text);
                let changed = last.as_ref().is_some_and(|old| *old != list);
                *last = Some(list.clone());
                Ok((list, changed))
            }
        }
    }
}

/// The addresses in a member list file.
pub fn parse_members(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split_once('#').map_or(line, |(before, _)| before))
        .flat_map(|line| line.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|address| !address.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An application that prints what it is told.
pub struct PrintingApp {
    pub members: MemberSource,
    pub shards: u32,
    pub score: ScoreMode,
    pub printer: Printer,
    pub handler: Handler,
    /// This node's address, for the echo handler's answers.
    pub me: String,
}

impl Callbacks for PrintingApp {
    type State = Held;

    fn nodes(&mut self, _cluster: &str) -> Result<Vec<String>, CallbackError> {
        let (list, changed) = self.members.read()?;
        if changed {
            // What a test changing the file waits for: this node now
            // answers the new list.
            self.printer.event("members", json!({ "nodes": list }));
        }
        Ok(list)
    }

    fn shard_count(&mut self, _cluster: &str) -> Result<u32, CallbackError> {
        Ok(self.shards)
    }

    fn allocated(&mut self, cluster: &str, shard: u32, epoch: u64) -> Result<Held, CallbackError> {
        self.allocated_with_hand_off(cluster, shard, epoch, None)
    }

    /// With the kv handler the store starts as the previous owner handed
    /// it off (after a graceful leave), or empty.
    fn allocated_with_hand_off(
        &mut self,
        _cluster: &str,
        shard: u32,
        epoch: u64,
        hand_off: Option<HandOff>,
    ) -> Result<Held, CallbackError> {
        let mut fields = json!({ "shard": shard, "epoch": epoch });
        let mut kv = HashMap::new();
        if self.handler == Handler::Kv {
            if let Some(received) = self.kv_received(hand_off.as_ref(), &mut fields) {
                kv = received;
            }
        }
        self.printer.event("allocated", fields);
        Ok(Held {
            shard,
            epoch,
            since: Instant::now(),
            kv,
        })
    }

    fn score(&mut self, state: &mut Held) -> Result<i64, CallbackError> {
        let score = match self.score {
            ScoreMode::Uptime => state.since.elapsed().as_millis() as i64,
            ScoreMode::Fixed(n) => n,
        };
        self.printer.event(
            "score",
            json!({ "shard": state.shard, "epoch": state.epoch, "score": score }),
        );
        Ok(score)
    }

    fn prolonged(
        &mut self,
        loser: &NodeId,
        state: &mut Held,
        epoch: u64,
    ) -> Result<(), CallbackError> {
        self.prolonged_with_hand_off(loser, state, epoch, None)
    }

    /// The kv handler waits for a conflict's loser to hand its store off.
    fn takes_hand_offs(&self) -> bool {
        self.handler == Handler::Kv
    }

    /// With the kv handler the winner of a conflict merges the loser's
    /// store into its own (`kv_merge`).
    fn prolonged_with_hand_off(
        &mut self,
        loser: &NodeId,
        state: &mut Held,
        epoch: u64,
        hand_off: Option<HandOff>,
    ) -> Result<(), CallbackError> {
        state.epoch = epoch;
        let mut fields =
            json!({ "shard": state.shard, "epoch": state.epoch, "loser": loser.as_str() });
        if self.handler == Handler::Kv {
            if let Some(received) = self.kv_received(hand_off.as_ref(), &mut fields) {
                kv_merge(&mut state.kv, received);
            }
        }
        self.printer.event("prolonged", fields);
        Ok(())
    }

    fn deallocated(&mut self, winner: Option<&NodeId>, reason: ReleaseReason, state: Held) {
        self.deallocated_with_hand_off(winner, reason, state);
    }

    /// With the kv handler the store goes to the next owner when there is
    /// one: the winner of a lost conflict, or after a leave the standby
    /// that takes the shard. For any other reason it is dropped.
    fn deallocated_with_hand_off(
        &mut self,
        winner: Option<&NodeId>,
        reason: ReleaseReason,
        state: Held,
    ) -> Option<Vec<u8>> {
        let mut fields = json!({
            "shard": state.shard,
            "epoch": state.epoch,
            "winner": winner.map(NodeId::as_str),
            "reason": reason.as_str(),
        });
        let next_owner = matches!(reason, ReleaseReason::LostConflict | ReleaseReason::Left);
        let hand_off = (self.handler == Handler::Kv && next_owner).then(|| {
            fields["handed_off_keys"] = json!(state.kv.len());
            kv_hand_off(&state.kv)
        });
        self.printer.event("deallocated", fields);
        hand_off
    }

    fn status_changed(&mut self, _cluster: &str, old: Health, new: Health) {
        self.printer.event(
            "status",
            json!({ "old": old.as_str(), "new": new.as_str() }),
        );
    }

    fn handle_request(&mut self, state: &mut Held, payload: Vec<u8>, responder: Responder) {
        let text = String::from_utf8_lossy(&payload);
        match self.handler {
            Handler::None => responder.fail("this node runs without --handler"),
            Handler::Echo => {
                let mut reply = format!("{} {} ", self.me, responder.epoch()).into_bytes();
                reply.extend_from_slice(&payload);
                responder.respond(reply);
            }
            Handler::Kv => match kv_command(&mut state.kv, &text) {
                Ok(answer) => responder.respond(answer.into_bytes()),
                Err(why) => responder.fail(why),
            },
        }
    }
}

impl PrintingApp {
    /// The kv store in a hand-off, noted in the event's `fields`: how many
    /// keys came from whom, or that none came.
    fn kv_received(
        &self,
        hand_off: Option<&HandOff>,
        fields: &mut Value,
    ) -> Option<HashMap<String, String>> {
        let Some(hand_off) = hand_off else {
            fields["received_keys"] = Value::Null;
            return None;
        };
        fields["from"] = json!(hand_off.from.as_str());
        match kv_received(hand_off) {
            Ok(store) => {
                fields["received_keys"] = json!(store.len());
                Some(store)
            }
            Err(why) => {
                fields["received_keys"] = Value::Null;
                fields["error"] = json!(why);
                None
            }
        }
    }
}

/// An epoch as people read it: its count, then its claimant's tag in hex
/// (`3.9f2c41d7`), the two parts `--json` keeps together as one number.
pub(crate) fn show_epoch(epoch: u64) -> String {
    format!(
        "{}.{:08x}",
        epoch >> minishard::EPOCH_TAG_BITS,
        epoch & ((1 << minishard::EPOCH_TAG_BITS) - 1)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{kv_command, kv_merge, parse_members};

    #[test]
    fn the_kv_handler_sets_gets_and_deletes() {
        let mut store = Default::default();
        assert_eq!(kv_command(&mut store, "set a hello world"), Ok("OK".into()));
        assert_eq!(kv_command(&mut store, "get a"), Ok("hello world".into()));
        assert_eq!(kv_command(&mut store, "del a"), Ok("1".into()));
        assert_eq!(kv_command(&mut store, "del a"), Ok("0".into()));
        assert!(kv_command(&mut store, "get a").is_err());
        assert!(kv_command(&mut store, "frobnicate").is_err());
    }

    #[test]
    fn a_conflicts_winner_keeps_its_keys_and_adds_the_losers_others() {
        let mut winner: HashMap<String, String> =
            [("a".into(), "mine".into()), ("b".into(), "mine".into())].into();
        let loser: HashMap<String, String> =
            [("b".into(), "theirs".into()), ("c".into(), "theirs".into())].into();
        kv_merge(&mut winner, loser);
        let mut merged: Vec<_> = winner.into_iter().collect();
        merged.sort();
        assert_eq!(
            merged,
            [
                ("a".to_string(), "mine".to_string()),
                ("b".into(), "mine".into()),
                ("c".into(), "theirs".into())
            ]
        );
    }

    #[test]
    fn a_member_list_file_takes_commas_spaces_lines_and_comments() {
        let text = "# the cluster\n10.0.0.1:7000, 10.0.0.2:7000\n\n  10.0.0.3:7000 # the new one\n";
        assert_eq!(
            parse_members(text),
            ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]
        );
        assert!(parse_members("# nobody\n").is_empty());
    }
}
