"""A local loopback cluster of recording applications, in one interpreter,
with the fast timings of the engine's own tests (in the design's
proportions), and helpers that wait on conditions with deadlines."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import minishard

FAST: Dict[str, float] = dict(
    heartbeat_interval=0.05,
    heartbeat_timeout=0.25,
    transition_timeout=0.5,
    node_grace=0.75,
    settle=0.01,
    score_deadline=0.5,
    member_poll=1.0,
    allocation_retry=0.3,
)
COOKIE = b"test-cookie"
# docs/design.md 7.1 (heartbeat_timeout + node_grace + 100 ms), with room for a
# loaded 2-core CI machine, as the engine's tests allow.
BOUND = (0.25 + 0.75 + 0.1) * 4


def free_addresses(n: int) -> List[str]:
    """Free loopback addresses, found by binding port 0."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()


def callback_failures(caplog: Any, text: str = "") -> List[logging.LogRecord]:
    """The records of failed callbacks whose message contains `text`."""
    return [
        r for r in caplog.records if r.name == "minishard.callbacks" and text in r.getMessage()
    ]


def eventually(timeout: float, condition: Callable[[], Any], every: float = 0.005) -> bool:
    """Polls `condition` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return bool(condition())


class Journal:
    """What one application was told, in order, with when and on which thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: List[Tuple[float, int, Tuple[Any, ...]]] = []

    def push(self, *event: Any) -> None:
        with self._lock:
            self.entries.append((time.monotonic(), threading.get_ident(), event))

    def all(self) -> List[Tuple[Any, ...]]:
        with self._lock:
            return [e for _, _, e in self.entries]

    def of(self, kind: str) -> List[Tuple[Any, ...]]:
        return [e for e in self.all() if e[0] == kind]

    def first(self, kind: str, after: float = 0.0) -> Optional[float]:
        with self._lock:
            times = [t for t, _, e in self.entries if e[0] == kind and t > after]
        return min(times) if times else None

    def threads(self) -> set:
        with self._lock:
            return {thread for _, thread, _ in self.entries}


class Recorder(minishard.Callbacks[Dict[str, Any]]):
    """An application that owns nothing but a journal of what it was told."""

    def __init__(self, members: List[str], shards: int, me: str) -> None:
        self.members = members
        self.shards = shards
        self.me = me
        self.score_value = 0
        self.journal = Journal()

    def nodes(self, cluster: str) -> List[str]:
        return list(self.members)

    def shard_count(self, cluster: str) -> int:
        return self.shards

    def allocated(self, cluster: str, shard: int, epoch: int) -> Dict[str, Any]:
        self.journal.push("allocated", shard)
        return {"shard": shard, "owner": self.me, "epoch": epoch}

    def score(self, state: Dict[str, Any]) -> int:
        self.journal.push("score", self.score_value)
        return self.score_value

    def prolonged(self, loser: str, state: Dict[str, Any], epoch: int) -> Dict[str, Any]:
        self.journal.push("prolonged", loser)
        self.journal.push("epoch raised", loser, state["epoch"], epoch)
        return dict(state, prolonged=loser, epoch=epoch)

    def deallocated(
        self, winner: Optional[str], state: Dict[str, Any], reason: Optional[minishard.Reason] = None
    ) -> None:
        self.journal.push("deallocated", winner, state["shard"])
        self.journal.push("reason", reason, state["epoch"])

    def status_changed(self, cluster: str, old: minishard.Health, new: minishard.Health) -> None:
        self.journal.push("status", old, new)


class Local:
    """`n` members keeping `shards` shards on loopback."""

    def __init__(
        self,
        name: str,
        n: int,
        shards: int,
        app: Callable[[List[str], int, str], Recorder] = Recorder,
        **join_options: Any,
    ) -> None:
        self.name = name
        self.addresses = free_addresses(n)
        self.members = list(self.addresses)
        self.apps = [app(self.members, shards, a) for a in self.addresses]
        self.clusters: List[Optional[minishard.Cluster]] = [None] * n
        self.options = dict(FAST, **join_options)
        for i in range(n):
            self.start(i)

    def start(self, i: int) -> minishard.Cluster:
        cluster = minishard.join(
            self.name,
            self.apps[i],
            listen=self.addresses[i],
            cookie=COOKIE,
            **self.options,
        )
        self.clusters[i] = cluster
        return cluster

    def __getitem__(self, i: int) -> minishard.Cluster:
        cluster = self.clusters[i]
        assert cluster is not None, f"node {i} is not running"
        return cluster

    def running(self) -> List[minishard.Cluster]:
        return [c for c in self.clusters if c is not None]

    def index(self, address: Optional[str]) -> int:
        return self.addresses.index(address)  # type: ignore[arg-type]

    def owner(self, viewer: int, shard: int) -> Optional[int]:
        node = self[viewer].get_node(shard)
        return None if node is None else self.index(node)

    def converged(self, timeout: float = BOUND) -> List[Optional[str]]:
        """Waits until every running node is available with the same,
        complete shard map, and returns it."""

        def agreed() -> bool:
            maps = [c.shard_map() for c in self.running()]
            return (
                all(c.health() == "available" for c in self.running())
                and all(m == maps[0] for m in maps)
                and all(o is not None for o in maps[0])
            )

        if not eventually(timeout, agreed):
            raise AssertionError(
                "not converged: "
                + ", ".join(f"{c.node} {c.health()} {c.shard_map()}" for c in self.running())
            )
        return self.running()[0].shard_map()

    def crash(self, i: int) -> None:
        self[i]._testing_crash()
        self.clusters[i] = None

    def leave(self, i: int) -> None:
        self[i].leave()
        self.clusters[i] = None

    def split(self, a: List[int], b: List[int]) -> None:
        """Cuts every link between the groups, both ways."""
        for i in a:
            for j in b:
                self[i]._testing_cut(self.addresses[j])
                self[j]._testing_cut(self.addresses[i])

    def heal(self) -> None:
        for c in self.running():
            c._testing_heal_all()

    def close(self) -> None:
        for c in self.running():
            c.leave()
        self.clusters = [None] * len(self.clusters)


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running on a thread of its own, for clusters joined
    with dispatch="asyncio": their callbacks run there while the test's own
    thread waits on conditions."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=BOUND)
    assert not thread.is_alive(), "the test's event loop did not stop"
    loop.close()


def on_loop(loop: asyncio.AbstractEventLoop, coroutine: Any, timeout: float = BOUND) -> Any:
    """Runs `coroutine` on the loop of `loop_thread` and returns its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)


@pytest.fixture
def local() -> Iterator[Callable[..., Local]]:
    """Starts local clusters; leaves whatever still runs at the end."""
    started: List[Local] = []

    def start(*args: Any, **kwargs: Any) -> Local:
        cluster = Local(*args, **kwargs)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.close()
