"""Requests from Python (docs/design.md 11): cluster.request and request_async,
handle_request answering at once, later from another thread, or async on
the event loop; the errors; node metadata."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Dict, List, Optional

import pytest

import minishard

from conftest import BOUND, Local, Recorder, eventually, on_loop


class Echo(Recorder):
    """Answers ``<shard> <epoch> <data>``; ``later`` is answered by another
    thread through a future; ``boom`` raises."""

    def __init__(self, members: List[str], shards: int, me: str) -> None:
        super().__init__(members, shards, me)
        self.later: List["concurrent.futures.Future[bytes]"] = []

    def handle_request(self, state: Dict[str, Any], data: bytes) -> Any:
        self.journal.push("request", state["shard"], data)
        if data == b"later":
            future: "concurrent.futures.Future[bytes]" = concurrent.futures.Future()
            self.later.append(future)
            return future
        if data == b"boom":
            raise ValueError("no such key")
        return f"{state['shard']} {state['epoch']} ".encode() + data


class AsyncEcho(Echo):
    async def handle_request(self, state: Dict[str, Any], data: bytes) -> bytes:  # type: ignore[override]
        await asyncio.sleep(0.001)
        self.journal.push("request", state["shard"], data)
        return b"async " + data


def test_every_node_reaches_every_owner(local: Callable[..., Local]) -> None:
    nodes = local("py-req", 3, 2, app=Echo)
    nodes.converged()
    for i in range(3):
        for shard in range(2):
            owner = nodes[i].status().owners[shard]
            assert owner is not None
            reply = nodes[i].request(shard, b"hi", timeout=BOUND)
            assert reply == f"{shard} {owner.epoch} hi".encode()
    # The owner handled each exactly once: at most once, and no duplicates.
    handled = sum(len(app.journal.of("request")) for app in nodes.apps)
    assert handled == 6


def test_errors_are_typed_and_subclass_minishard_error(
    local: Callable[..., Local], caplog: Any
) -> None:
    nodes = local("py-req-errors", 2, 1, app=Echo)
    nodes.converged()
    with pytest.raises(minishard.HandlerError, match="no such key") as failed:
        nodes[0].request(0, b"boom", timeout=BOUND)
    assert isinstance(failed.value, minishard.Error)
    with pytest.raises(minishard.InvalidArgumentError, match="does not exist"):
        nodes[0].request(9, b"x", timeout=BOUND)
    with pytest.raises(minishard.InvalidArgumentError):
        nodes[0].request(0, "text", timeout=BOUND)  # type: ignore[arg-type]
    with pytest.raises(minishard.InvalidArgumentError, match="frame"):
        nodes[0].request(0, b"x" * (2 << 20), timeout=BOUND)
    assert issubclass(minishard.TimeoutError, minishard.Error)
    assert issubclass(minishard.OverloadedError, minishard.Error)
    assert issubclass(minishard.UncertainError, minishard.Error)


def test_a_request_waits_for_an_owner_then_times_out(local: Callable[..., Local]) -> None:
    nodes = local("py-req-timeout", 2, 1, app=Echo, node_grace=30.0)
    nodes.converged()
    owner = nodes.owner(0, 0)
    assert owner is not None
    other = 1 - owner
    nodes.crash(owner)
    assert eventually(
        BOUND, lambda: nodes[other].status().nodes[nodes.addresses[owner]].state != "active"
    )
    with pytest.raises(minishard.TimeoutError):
        nodes[other].request(0, b"x", timeout=0.3)


def test_a_handler_answers_later_from_another_thread(local: Callable[..., Local]) -> None:
    nodes = local("py-req-later", 2, 1, app=Echo)
    nodes.converged()
    owner = nodes.owner(0, 0)
    assert owner is not None
    app = nodes.apps[owner]
    assert isinstance(app, Echo)
    result: Dict[str, Any] = {}

    def ask() -> None:
        result["reply"] = nodes[1 - owner].request(0, b"later", timeout=BOUND)

    asker = threading.Thread(target=ask)
    asker.start()
    assert eventually(BOUND, lambda: len(app.later) == 1)
    answerer = threading.Thread(target=lambda: app.later[0].set_result(b"from a thread"))
    answerer.start()
    answerer.join()
    asker.join(BOUND)
    assert result["reply"] == b"from a thread"


def test_request_async_on_a_thread_dispatched_cluster(local: Callable[..., Local]) -> None:
    nodes = local("py-req-async", 2, 2, app=Echo)
    nodes.converged()

    async def ask_both() -> List[bytes]:
        return list(
            await asyncio.gather(
                nodes[0].request_async(0, b"a", timeout=BOUND),
                nodes[0].request_async(1, b"b", timeout=BOUND),
            )
        )

    replies = asyncio.run(ask_both())
    assert replies[0].endswith(b" a") and replies[1].endswith(b" b")

    async def failing() -> None:
        await nodes[0].request_async(0, b"boom", timeout=BOUND)

    with pytest.raises(minishard.HandlerError):
        asyncio.run(failing())


def test_async_handlers_on_the_event_loop(loop_thread: asyncio.AbstractEventLoop) -> None:
    nodes: Optional[Local] = None
    try:
        nodes = Local("py-req-loop", 2, 1, app=AsyncEcho, dispatch="asyncio", loop=loop_thread)
        nodes.converged()
        assert on_loop(loop_thread, nodes[0].request_async(0, b"x", timeout=BOUND)) == b"async x"
        # Blocking, from another thread than the loop's.
        assert nodes[1].request(0, b"y", timeout=BOUND) == b"async y"
        owner = nodes.owner(0, 0)
        assert owner is not None
        loop_ids = {
            thread for thread in nodes.apps[owner].journal.threads() if thread != threading.get_ident()
        }
        assert loop_ids, "the handler ran on the event loop's thread"
    finally:
        if nodes is not None:
            for c in nodes.running():
                on_loop(loop_thread, c.leave_async())


def test_metadata_is_published_and_seen(local: Callable[..., Local]) -> None:
    nodes = local("py-meta", 2, 1, app=Echo)
    nodes.close()
    addresses = nodes.addresses
    clusters = [
        minishard.join(
            "py-meta2",
            nodes.apps[i],
            listen=addresses[i],
            cookie=b"c",
            metadata={"http": f"node-{i}"},
            heartbeat_interval=0.05,
            heartbeat_timeout=0.25,
            transition_timeout=0.5,
            node_grace=0.75,
        )
        for i in range(2)
    ]
    try:
        assert eventually(
            BOUND, lambda: clusters[0].node_metadata(addresses[1]) == {"http": "node-1"}
        )
        assert clusters[1].status().metadata[addresses[0]] == {"http": "node-0"}
        assert clusters[0].node_metadata("127.0.0.1:1") is None
    finally:
        for c in clusters:
            c.leave()
    with pytest.raises(minishard.ConfigError, match="metadata"):
        minishard.join("x", nodes.apps[0], listen=addresses[0], cookie=b"c", metadata={"k": 1})  # type: ignore[dict-item]
    with pytest.raises(minishard.ConfigError, match="metadata is"):
        minishard.join(
            "x", nodes.apps[0], listen=addresses[0], cookie=b"c", metadata={"k": "x" * 5000}
        )


class Keeper(Recorder):
    """Hands its shard's data off when it gives the shard up, and records
    what it was handed."""

    def allocated(  # type: ignore[override]
        self, cluster: str, shard: int, epoch: int, hand_off: Optional[minishard.HandOff]
    ) -> Dict[str, Any]:
        self.journal.push("handed", shard, hand_off)
        return super().allocated(cluster, shard, epoch)

    def deallocated(  # type: ignore[override]
        self, winner: Optional[str], state: Dict[str, Any], reason: minishard.Reason
    ) -> bytes:
        super().deallocated(winner, state, reason)
        return f"data of shard {state['shard']} from {self.me}".encode()


def test_a_leaving_owner_hands_its_data_to_the_next_owner(local: Callable[..., Local]) -> None:
    nodes = local("py-hand-off", 3, 2, app=Keeper)
    nodes.converged()
    owner = nodes.index(nodes[0].get_node(0))
    leaver = nodes.addresses[owner]
    nodes[owner].leave()

    def received() -> Optional[minishard.HandOff]:
        for i, app in enumerate(nodes.apps):
            if i == owner:
                continue
            for entry in app.journal.of("handed"):
                if entry[1] == 0 and entry[2] is not None:
                    return entry[2]
        return None

    assert eventually(BOUND, lambda: received() is not None), [a.journal.all() for a in nodes.apps]
    hand_off = received()
    assert hand_off is not None
    assert hand_off.node == leaver
    assert hand_off.data == f"data of shard 0 from {leaver}".encode()
    assert hand_off.epoch > 0
