"""Callbacks that fail or take their time never stop the engine, never
delay lookups, and are reported through logging, one record per failure
(docs/design.md sections 3, 7.6)."""

from __future__ import annotations

import logging
import threading
import time
import warnings

import pytest

import minishard
from conftest import BOUND, COOKIE, FAST, Recorder, callback_failures, eventually, free_addresses


def records(caplog, text):
    return callback_failures(caplog, text)


class FailsToAllocate(Recorder):
    """The first node offered a shard (the smallest address) always raises
    in allocated; the others work."""

    def allocated(self, cluster, shard, epoch):
        if self.me == min(self.members):
            self.journal.push("refused", shard)
            raise RuntimeError(f"no memory for shard {shard}")
        return super().allocated(cluster, shard, epoch)


def test_an_allocated_that_raises_is_logged_with_its_traceback_and_gives_the_shard_back(
    local, caplog
):
    caplog.set_level(logging.INFO, logger="minishard")
    cluster = local("raises", 4, 2, app=FailsToAllocate)
    shard_map = cluster.converged()
    failing = cluster.index(min(cluster.addresses))
    assert cluster.addresses[failing] not in shard_map, "the failing node holds no shard"
    refused = cluster.apps[failing].journal.of("refused")
    assert refused, "the failing node was offered a shard (smallest address first)"
    assert eventually(2, lambda: records(caplog, "the allocated callback of cluster 'raises'"))
    record = records(caplog, "the allocated callback")[0]
    assert record.levelno == logging.ERROR
    assert f"for shard {refused[0][1]}" in record.getMessage()
    assert "RuntimeError: no memory for shard" in record.getMessage()
    assert "given back" in record.getMessage(), "it says what the engine does about it"
    # Structured, for log pipelines: logging's `extra` attributes.
    assert (record.cluster, record.shard, record.callback) == ("raises", refused[0][1], "allocated")
    # Placed where the exception was raised, not inside logging.
    assert (record.pathname, record.funcName) == (__file__, "allocated")
    exc_type, exc, tb = record.exc_info
    assert exc_type is RuntimeError and tb is not None
    assert "in allocated" in caplog.text, "the traceback names the callback"
    assert cluster[failing].stats().failed_callbacks >= 1
    assert cluster[failing].status().local.state in ("idle", "standby")


class RaisesEverywhereElse(Recorder):
    """score, prolonged-free: every other callback raises after recording."""

    def deallocated(self, winner, state):
        super().deallocated(winner, state)
        raise ValueError("cleanup failed")

    def status_changed(self, cluster, old, new):
        super().status_changed(cluster, old, new)
        raise KeyError("status")


def test_deallocated_and_status_changed_that_raise_change_nothing(local, caplog):
    cluster = local("raises-later", 3, 1, app=RaisesEverywhereElse)
    shard_map = cluster.converged()
    owner = cluster.index(shard_map[0])
    cluster.leave(owner)
    assert cluster.apps[owner].journal.of("deallocated") == [("deallocated", None, 0)]
    cluster.converged()
    assert eventually(2, lambda: records(caplog, "the deallocated callback"))
    assert records(caplog, "the status_changed callback")
    # Status changes kept being reported after the first one raised.
    assert len(cluster.apps[(owner + 1) % 3].journal.of("status")) >= 2


class ScoreRaises(Recorder):
    def score(self, state):
        self.journal.push("score", None)
        raise ArithmeticError("cannot score")


def test_a_score_that_raises_loses_the_conflict(local, caplog):
    class App(ScoreRaises):
        def score(self, state):
            # The left side (nodes 0-2) fails to score; the right side scores 1.
            if self.me in self.members[:3]:
                return super().score(state)
            return 1

    cluster = local("score-raises", 6, 1, app=App)
    cluster.converged()
    left, right = [0, 1, 2], [3, 4, 5]
    cluster.split(left, right)
    assert eventually(
        BOUND * 2,
        lambda: cluster.owner(0, 0) in left and cluster.owner(3, 0) in right,
    ), "both sides hold the shard during the split"
    cluster.heal()
    (owner,) = cluster.converged(BOUND * 2)
    assert cluster.index(owner) in right, "a failed score loses"
    assert eventually(2, lambda: records(caplog, "the score callback"))


class SlowToAllocate(Recorder):
    started = threading.Event()
    finished = threading.Event()

    def allocated(self, cluster, shard, epoch):
        self.started.set()
        time.sleep(1.0)  # longer than heartbeat_timeout: heartbeats must not wait
        self.finished.set()
        return super().allocated(cluster, shard, epoch)


def test_a_slow_callback_delays_neither_lookups_nor_heartbeats(local):
    SlowToAllocate.started = threading.Event()
    SlowToAllocate.finished = threading.Event()
    cluster = local("slow", 3, 1, app=SlowToAllocate)
    assert SlowToAllocate.started.wait(BOUND)
    # While an allocated sleeps on a callback thread, lookups answer: on
    # every node, lookups return before that callback does (an ordering;
    # their latency is a figure of `minishard bench`).
    answered = [0] * len(cluster.running())
    while not SlowToAllocate.finished.is_set():
        for i, node in enumerate(cluster.running()):
            node.get_node(0)
            node.status()
            answered[i] += not SlowToAllocate.finished.is_set()
    assert all(answered), f"lookups per node answered while allocated ran: {answered}"
    cluster.converged()
    # No peer was taken for dead while the callback slept: one allocation, no churn.
    allocations = [e for app in cluster.apps for e in app.journal.of("allocated")]
    assert allocations == [("allocated", 0)]
    assert all(node.stats().reconnects == 0 for node in cluster.running())


def test_callbacks_may_call_lookups_but_not_wait_for_their_own_cluster(local):
    seen = {}

    class Curious(Recorder):
        cluster = None

        def allocated(self, cluster, shard, epoch):
            me = self.cluster
            seen["status"] = me.status().local.state
            seen["map"] = me.shard_map()
            for name, call in [
                ("leave", me.leave),
                ("wait_until", lambda: me.wait_until("available", timeout=1)),
            ]:
                try:
                    call()
                except minishard.InvalidArgumentError as e:
                    seen[name] = str(e)
            return super().allocated(cluster, shard, epoch)

    addresses = []

    def app(members, shards, me):
        addresses.append(me)
        return Curious(members, shards, me)

    cluster = local("curious", 3, 1, app=app, allocation_retry=0.3)
    for i, a in enumerate(cluster.apps):
        a.cluster = cluster[i]
    # The first offer may come before the cluster attribute is set: it then
    # raises (AttributeError), and the shard is offered again after the retry.
    cluster.converged()
    assert eventually(BOUND, lambda: "leave" in seen)
    assert "from inside a callback" in seen["leave"]
    assert "from inside a callback" in seen["wait_until"]
    assert seen["status"] in ("standby", "idle")


def test_a_keyboard_interrupt_in_a_callback_thread_is_logged_not_fatal(local, caplog):
    class Interrupted(Recorder):
        def status_changed(self, cluster, old, new):
            raise KeyboardInterrupt

    cluster = local("interrupt", 3, 1, app=Interrupted)
    cluster.converged()
    assert eventually(2, lambda: records(caplog, "KeyboardInterrupt"))


def test_allocated_gets_the_epoch(local):
    class Fencing(Recorder):
        def allocated(self, cluster, shard, epoch):
            self.journal.push("epoch", shard, epoch)
            return super().allocated(cluster, shard, epoch)

    cluster = local("epochs", 3, 2, app=Fencing)
    shard_map = cluster.converged()
    for shard, owner in enumerate(shard_map):
        i = cluster.index(owner)
        assert cluster.apps[i].journal.of("epoch") == [("epoch", shard, cluster[i].my_shard()[1])]


def test_a_two_argument_allocated_still_works_with_a_deprecation_warning():
    class Old(Recorder):
        def allocated(self, cluster, shard):
            self.journal.push("allocated", shard)
            return {"shard": shard}

    (a,) = free_addresses(1)
    app = Old([a], 1, a)
    with pytest.warns(DeprecationWarning, match=r"allocated\(self, cluster, shard, epoch\)") as warned:
        cluster = minishard.join("old-allocated", app, listen=a, cookie=COOKIE, **FAST)
    assert warned[0].filename == __file__, "the warning points at the join call"
    with cluster:
        cluster.wait_until("available", timeout=BOUND)
        assert app.journal.of("allocated") == [("allocated", 0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (b,) = free_addresses(1)
        minishard.join("new-allocated", Recorder([b], 1, b), listen=b, cookie=COOKIE, **FAST).leave()


def test_one_failure_is_one_record_without_rust_formatting(local, caplog):
    caplog.set_level(logging.DEBUG, logger="minishard")
    cluster = local("one-record", 3, 1, app=FailsToAllocate)
    cluster.converged()
    failing = cluster.index(min(cluster.addresses))
    assert cluster.apps[failing].journal.of("refused")
    assert eventually(2, lambda: records(caplog, "allocated"))
    for node in cluster.running():
        node.leave()
    cluster.clusters = [None] * 3
    failures = cluster.apps[failing].journal.of("refused")
    # Every line about it, engine's or binding's, at any level.
    about_it = [
        r for r in caplog.records
        if r.name.startswith("minishard") and "no memory" in r.getMessage()
    ]
    assert len(about_it) == len(failures), [(r.name, r.getMessage()) for r in about_it]
    assert all(r.name == "minishard.callbacks" for r in about_it)
    engine = [r for r in caplog.records if r.name == "minishard.engine"]
    assert engine, "the engine's own lines still arrive"
    for record in caplog.records:
        assert "Some(" not in record.getMessage() and "=None" not in record.getMessage(), (
            record.getMessage()
        )
