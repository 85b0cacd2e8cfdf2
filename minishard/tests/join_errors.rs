//! Bad input at the API: join returns a clear error and nothing runs.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use minishard::{CallbackError, Callbacks, Cluster, Config, Error, NodeId, ReleaseReason};

/// An application whose join-time answers are chosen by the test.
struct Answers {
    nodes: Result<Vec<String>, String>,
    shards: Result<u32, String>,
    panic_in_nodes: bool,
}

impl Callbacks for Answers {
    type State = ();
    fn nodes(&mut self, _: &str) -> Result<Vec<String>, CallbackError> {
        assert!(!self.panic_in_nodes, "the application's nodes() blew up");
        self.nodes.clone().map_err(CallbackError)
    }
    fn shard_count(&mut self, _: &str) -> Result<u32, CallbackError> {
        self.shards.clone().map_err(CallbackError)
    }
    fn allocated(&mut self, _: &str, _: u32, _: u64) -> Result<(), CallbackError> {
        Ok(())
    }
    fn score(&mut self, _: &mut ()) -> Result<i64, CallbackError> {
        Ok(0)
    }
    fn prolonged(&mut self, _: &NodeId, _: &mut (), _: u64) -> Result<(), CallbackError> {
        Ok(())
    }
    fn deallocated(&mut self, _: Option<&NodeId>, _: ReleaseReason, _: ()) {}
}

fn join_with(nodes: Result<Vec<&str>, &str>, shards: Result<u32, &str>, config: Config) -> Error {
    let answers = Answers {
        nodes: nodes
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .map_err(str::to_owned),
        shards: shards.map_err(str::to_owned),
        panic_in_nodes: false,
    };
    Cluster::join("errors", answers, config)
        .err()
        .expect("join must fail")
}

#[test]
fn bad_answers_and_settings_are_refused_at_join_with_a_clear_message() {
    let me = free_addresses(1).remove(0);
    let ok = || Config::new(me.clone(), COOKIE.to_vec());
    let list = vec![me.as_str(), "127.0.0.1:1"];
    let cases: Vec<(Error, &str)> = vec![
        (
            join_with(Ok(vec![me.as_str(), "not-an-address"]), Ok(1), ok()),
            "invalid node address \"not-an-address\"",
        ),
        (
            join_with(Ok(list.clone()), Ok(0), ok()),
            "shard_count must be at least 1",
        ),
        (
            join_with(Ok(list.clone()), Ok(3), ok()),
            "larger than the member list",
        ),
        (
            join_with(Err("directory unreachable"), Ok(1), ok()),
            "nodes callback failed: directory unreachable",
        ),
        (
            join_with(Ok(list.clone()), Err("no config"), ok()),
            "shard_count callback failed: no config",
        ),
        (
            join_with(Ok(vec!["127.0.0.1:2", "127.0.0.1:1"]), Ok(1), ok()),
            "not in the member list",
        ),
        (
            join_with(Ok(vec![me.as_str(), me.as_str()]), Ok(1), ok()),
            "twice",
        ),
        (
            join_with(Ok(list.clone()), Ok(1), Config::new(me.clone(), Vec::new())),
            "cookie is empty",
        ),
        (
            join_with(
                Ok(list.clone()),
                Ok(1),
                Config::new("nowhere", COOKIE.to_vec()),
            ),
            "invalid listen address",
        ),
    ];
    for (error, expected) in cases {
        assert!(
            error.to_string().contains(expected),
            "{error} should say {expected:?}"
        );
    }
}

#[test]
fn a_panicking_nodes_callback_is_an_error_not_a_crash() {
    let me = free_addresses(1).remove(0);
    let answers = Answers {
        nodes: Ok(vec![]),
        shards: Ok(1),
        panic_in_nodes: true,
    };
    let error = Cluster::join("errors", answers, Config::new(me, COOKIE.to_vec()))
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            Error::Callback {
                callback: "nodes",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("panicked"), "{error}");
}

#[test]
fn after_a_failed_join_the_address_is_free_again() {
    let me = free_addresses(1).remove(0);
    let error = join_with(
        Ok(vec![me.as_str(), "127.0.0.1:1"]),
        Ok(5),
        Config::new(me.clone(), COOKIE.to_vec()),
    );
    assert!(matches!(error, Error::Config(_)));
    let app = App {
        members: Arc::new(Mutex::new(vec![me.clone()])),
        shards: 1,
        score: Default::default(),
        journal: Journal::default(),
    };
    let cluster = Cluster::join("errors", app, Config::new(me, COOKIE.to_vec())).unwrap();
    cluster.leave().unwrap();
}
