"""Every error path: a bad argument raises at join with a clear message,
in the package's hierarchy, and leaves nothing running."""

from __future__ import annotations

import builtins
import os
import socket

import pytest

import minishard
from conftest import BOUND, COOKIE, FAST, Recorder, eventually, free_addresses


def engine_threads():
    """The engine's threads in this process, by name (they are not Python
    threads; the log pump, started by the first join, stays)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                names.append(comm.read().strip())
        except FileNotFoundError:
            pass  # ended meanwhile
    return sorted(n for n in names if n.startswith("minishard") and n != "minishard-log")


@pytest.fixture
def nothing_left_running():
    """Asserts that the test leaves no engine thread behind and that the
    address it tried is free again."""
    (address,) = free_addresses(1)
    # A thread that just ended stays visible for a moment after it was joined.
    settled = []
    eventually(2, lambda: settled.append(engine_threads()) or settled[-2:-1] == settled[-1:])
    before = settled[-1]
    yield address
    assert eventually(2, lambda: engine_threads() == before), (
        f"threads left running: {engine_threads()} (before: {before})"
    )
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.bind((host, int(port)))  # the listener was closed


def join(address, app=None, **options):
    options = {"listen": address, "cookie": COOKIE, **FAST, **options}
    return minishard.join("errors", app or Recorder([address], 1, address), **options)


@pytest.mark.parametrize(
    "options, exception, message",
    [
        ({"listen": "nowhere"}, minishard.ConfigError, "invalid listen address"),
        ({"listen": "127.0.0.1:99999"}, minishard.ConfigError, "invalid listen address"),
        ({"listen": 7001}, minishard.ConfigError, "listen must be a 'host:port' str"),
        ({"advertise": "no port"}, minishard.ConfigError, "invalid node address"),
        ({"cookie": b""}, minishard.ConfigError, "cookie is empty"),
        ({"cookie": ""}, minishard.ConfigError, "cookie is empty"),
        ({"cookie": 1234}, minishard.ConfigError, "cookie must be bytes or str"),
        ({"dispatch": "fibers"}, minishard.ConfigError, "dispatch must be one of"),
        ({"dispatch": "asyncio"}, minishard.ConfigError, "needs an event loop"),
        ({"heartbeat_interval": "fast"}, minishard.ConfigError, "heartbeat_interval must be a number"),
        ({"heartbeat_interval": -1.0}, minishard.ConfigError, "heartbeat_interval must be a finite"),
        ({"node_grace": 0.5}, minishard.ConfigError, "node_grace"),
        ({"frame_limit": 10}, minishard.ConfigError, "frame_limit"),
        ({"frame_limit": 4095}, minishard.ConfigError, "frame_limit must be between 4096 and 67108864 bytes, not 4095"),
        ({"frame_limit": (64 << 20) + 1}, minishard.ConfigError, "frame_limit must be between 4096"),
        ({"frame_limit": -1}, minishard.ConfigError, "frame_limit must be a positive number of bytes, not -1"),
        ({"frame_limit": 2**70}, minishard.ConfigError, "frame_limit must be a number of bytes that fits in 64 bits"),
        ({"frame_limit": 65536.0}, minishard.ConfigError, r"frame_limit must be an int \(a number of bytes\), not 65536.0"),
        ({"frame_limit": True}, minishard.ConfigError, "frame_limit must be an int"),
        ({"handshake_timeout": 0}, minishard.ConfigError, "handshake_timeout must be greater than zero"),
        ({"handshake_timeout": -2.0}, minishard.ConfigError, "handshake_timeout must be a finite"),
        ({"handshake_timeout": "2s"}, minishard.ConfigError, "handshake_timeout must be a number of seconds"),
        ({"max_handshakes": 0}, minishard.ConfigError, "max_handshakes must be between 1 and 65536 connections, not 0"),
        ({"max_handshakes": -8}, minishard.ConfigError, "max_handshakes must be a positive number of connections"),
        ({"max_handshakes": "8"}, minishard.ConfigError, r"max_handshakes must be an int \(a number of connections\), not '8'"),
        ({"max_handshakes_per_source": 0}, minishard.ConfigError, "max_handshakes_per_source must be between 1 and 65536 connections, not 0"),
        ({"max_handshakes_per_source": 2.5}, minishard.ConfigError, "max_handshakes_per_source must be an int"),
        ({"send_queue": 63}, minishard.ConfigError, "send_queue must be between 64 and 1048576 frames, not 63"),
        ({"send_queue": 0}, minishard.ConfigError, "send_queue must be between 64 and 1048576 frames, not 0"),
        ({"send_queue": -1}, minishard.ConfigError, "send_queue must be a positive number of frames"),
        ({"send_queue": 2**62}, minishard.ConfigError, "send_queue must be between 64 and 1048576 frames, not 4611686018427387904"),
        ({"max_handshakes": 2**62}, minishard.ConfigError, "max_handshakes must be between 1 and 65536 connections, not 4611686018427387904"),
    ],
)
def test_a_bad_setting_raises_a_config_error_at_join(nothing_left_running, options, exception, message):
    with pytest.raises(exception, match=message) as raised:
        join(nothing_left_running, **options)
    assert isinstance(raised.value, minishard.Error)
    assert isinstance(raised.value, ValueError)


def test_an_empty_cluster_name_is_refused(nothing_left_running):
    with pytest.raises(minishard.ConfigError, match="cluster name"):
        minishard.join("", Recorder([], 1, ""), listen=nothing_left_running, cookie=COOKIE)


class NotCallable(Recorder):
    score = 42


class Missing:
    def nodes(self, cluster):
        return []


@pytest.mark.parametrize(
    "app, message",
    [
        (NotCallable, r"callbacks object's score is 42 \(int\), not a method"),
        (lambda m, s, me: Missing(), "has no shard_count method"),
    ],
)
def test_a_callbacks_object_without_callable_methods_is_refused(nothing_left_running, app, message):
    address = nothing_left_running
    with pytest.raises(minishard.ConfigError, match=message):
        join(address, app([address], 1, address))


class Answers(Recorder):
    def __init__(self, nodes, shard_count):
        super().__init__([], 1, "")
        self._nodes, self._shard_count = nodes, shard_count

    def nodes(self, cluster):
        if isinstance(self._nodes, BaseException):
            raise self._nodes
        return self._nodes

    def shard_count(self, cluster):
        if isinstance(self._shard_count, BaseException):
            raise self._shard_count
        return self._shard_count


@pytest.mark.parametrize(
    "shard_count, message",
    [
        ("2", r"shard_count returned '2' \(str\): expected an int"),
        (1.0, r"shard_count returned 1.0 \(float\): expected an int"),
        (True, r"shard_count returned True \(bool\): expected an int"),
        (None, r"shard_count returned None \(NoneType\): expected an int"),
        (-1, "shard_count returned -1"),
        (0, "shard_count"),
        (5, "shard_count"),  # more shards than members: refused after the listener bound
    ],
)
def test_a_shard_count_that_is_not_a_usable_int_raises_at_join(nothing_left_running, shard_count, message):
    address = nothing_left_running
    with pytest.raises(minishard.ConfigError, match=message):
        join(address, Answers([address], shard_count))


@pytest.mark.parametrize(
    "nodes, message",
    [
        ("127.0.0.1:1", r"nodes returned '127.0.0.1:1' \(str\): expected a list"),
        ([1, 2], r"nodes returned \[1, 2\] \(list\): expected a list"),
        (["not an address"], "invalid node address"),
    ],
)
def test_a_member_list_that_does_not_parse_raises_at_join(nothing_left_running, nodes, message):
    with pytest.raises(minishard.CallbackError, match=message):
        join(nothing_left_running, Answers(nodes, 1))


def test_an_exception_in_a_join_time_callback_is_the_cause_of_the_callback_error(nothing_left_running):
    address = nothing_left_running
    failure = LookupError("the registry is down")
    with pytest.raises(minishard.CallbackError, match="the nodes callback failed at join: LookupError: the registry is down") as raised:
        join(address, Answers(failure, 1))
    assert raised.value.__cause__ is failure
    assert isinstance(raised.value, minishard.ConfigError)

    with pytest.raises(minishard.CallbackError, match="shard_count") as raised:
        join(address, Answers([address], ZeroDivisionError("no")))
    assert isinstance(raised.value.__cause__, ZeroDivisionError)


def test_a_taken_address_raises_an_io_error(nothing_left_running):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(minishard.IOError, match="cannot listen on") as raised:
            join(address)
    assert isinstance(raised.value, OSError) and isinstance(raised.value, minishard.Error)


def test_wait_until_times_out_with_a_timeout_error():
    a, b = free_addresses(2)
    # Two members, two shards, one of them never started: never available.
    with minishard.join("lonely", Recorder([a, b], 2, a), listen=a, cookie=COOKIE, **FAST) as cluster:
        with pytest.raises(minishard.TimeoutError, match="did not become available within 0.2s") as raised:
            cluster.wait_until("available", timeout=0.2)
        assert isinstance(raised.value, builtins.TimeoutError)
        assert cluster.wait_until(minishard.Health.DEGRADED, timeout=BOUND) is True
        assert cluster.health() == "degraded"


def test_bad_arguments_to_a_joined_cluster_raise_invalid_argument_errors():
    (a,) = free_addresses(1)
    with minishard.join("args", Recorder([a], 1, a), listen=a, cookie=COOKIE, **FAST) as cluster:
        cluster.wait_until("available", timeout=BOUND)
        for call, message in [
            (lambda: cluster.wait_until("healthy", timeout=1), "unknown health"),
            (lambda: cluster.wait_until(3, timeout=1), "health must be"),
            (lambda: cluster.wait_until("available", timeout=-1), "timeout must be"),
            (lambda: cluster.wait_until("available", timeout="soon"), "timeout must be"),
            (lambda: cluster.get_node(1), "shard 1 does not exist: the cluster keeps 1 shards"),
            (lambda: cluster.get_node(-1), "shard -1 does not exist"),
            (lambda: cluster.dispatch(), "host dispatch"),
            (lambda: cluster._testing_cut("nowhere"), "invalid node address"),
            (lambda: cluster.wait_until("availble", timeout=1), "unknown health 'availble'"),
        ]:
            with pytest.raises(minishard.Error, match=message) as raised:
                call()
            assert isinstance(raised.value, ValueError), message
        assert cluster.fileno() is None


def test_a_left_cluster_raises_closed_errors_and_leaves_once():
    (a,) = free_addresses(1)
    app = Recorder([a], 1, a)
    cluster = minishard.join("closed", app, listen=a, cookie=COOKIE, **FAST)
    cluster.wait_until("available", timeout=BOUND)
    cluster.leave()
    cluster.leave()  # again: nothing
    assert app.journal.of("deallocated") == [("deallocated", None, 0)]
    assert cluster.closed and "left" in repr(cluster)
    # The counters keep answering (the final ones), as in C.
    stats = cluster.stats()
    assert (stats.allocations, stats.deallocations) == (1, 1)
    for call in [
        lambda: cluster.get_node(0),
        cluster.shard_map,
        cluster.my_shard,
        cluster.status,
        cluster.health,
        lambda: cluster.wait_until("available", timeout=1),
    ]:
        with pytest.raises(minishard.ClosedError):
            call()


def test_every_exception_is_a_minishard_error():
    for name in ["ConfigError", "CallbackError", "IOError", "TimeoutError", "ClosedError", "InvalidArgumentError"]:
        assert issubclass(getattr(minishard, name), minishard.Error)
    assert "TimeoutError" not in minishard.__all__, "a star import must not shadow the built-in"
