"""asyncio: waiting without blocking the loop, and callbacks run on the
event loop, so an async service touches its own state from callbacks
without locks; async def callbacks awaited there before the engine moves on.
Plus plain host dispatch."""

from __future__ import annotations

import asyncio
import logging
import select
import threading
import time

import pytest

import minishard
from conftest import (
    BOUND,
    COOKIE,
    FAST,
    Recorder,
    callback_failures,
    eventually,
    free_addresses,
    on_loop,
)


def test_callbacks_run_on_the_event_loop_and_wait_until_async_waits_without_blocking_it():
    async def scenario():
        addresses = free_addresses(4)
        apps = [Recorder(addresses, 2, a) for a in addresses]
        loop_thread = threading.get_ident()
        clusters = [
            minishard.join("aio", app, listen=a, cookie=COOKIE, dispatch="asyncio", **FAST)
            for app, a in zip(apps, addresses)
        ]
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        beat = asyncio.ensure_future(ticker())
        await asyncio.gather(*(c.wait_until_async("available", timeout=BOUND) for c in clusters))
        maps = [c.shard_map() for c in clusters]
        assert all(m == maps[0] for m in maps) and None not in maps[0]
        assert ticks > 0, "the loop kept running while waiting"
        # Every callback (after the join-time ones) ran on the loop's thread.
        for app in apps:
            callback_threads = {t for _, t, e in app.journal.entries if e[0] != "nodes"}
            assert callback_threads == {loop_thread}, app.journal.all()
        owner = clusters[addresses.index(maps[0][0])]
        app = apps[addresses.index(maps[0][0])]
        owner.leave()  # on the loop's thread: its deallocated runs here, now
        assert app.journal.of("deallocated") == [("deallocated", None, 0)]
        rest = [c for c in clusters if c is not owner]
        await asyncio.gather(*(c.wait_until_async("available", timeout=BOUND) for c in rest))
        beat.cancel()
        for c in rest:
            c.leave()
        assert all(c.closed for c in clusters)

    asyncio.run(scenario())


def test_wait_until_async_times_out_and_can_be_cancelled():
    async def scenario():
        a, b = free_addresses(2)
        with minishard.join(
            "aio-timeout", Recorder([a, b], 2, a), listen=a, cookie=COOKIE, dispatch="asyncio", **FAST
        ) as cluster:
            with pytest.raises(minishard.TimeoutError, match="within 0.1s"):
                await cluster.wait_until_async("available", timeout=0.1)
            task = asyncio.ensure_future(cluster.wait_until_async("available"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(minishard.InvalidArgumentError):
                await cluster.wait_until_async("sunny")

    asyncio.run(scenario())


def test_a_blocking_wait_on_the_loop_thread_runs_the_callbacks_itself():
    async def scenario():
        addresses = free_addresses(3)
        # Three shards: every node must allocate, the loop's node included.
        apps = [Recorder(addresses, 3, a) for a in addresses]
        on_loop = minishard.join(
            "aio-sync", apps[0], listen=addresses[0], cookie=COOKIE, dispatch="asyncio", **FAST
        )
        others = [
            minishard.join("aio-sync", app, listen=a, cookie=COOKIE, **FAST)
            for app, a in zip(apps[1:], addresses[1:])
        ]
        # The loop cannot dispatch while this blocks: wait_until does it.
        assert on_loop.wait_until("available", timeout=BOUND) is True
        assert apps[0].journal.threads() == {threading.get_ident()}
        for c in [on_loop, *others]:
            c.leave()

    asyncio.run(scenario())


def test_a_leave_from_another_thread_still_runs_deallocated_on_the_loop():
    async def scenario():
        (a,) = free_addresses(1)
        app = Recorder([a], 1, a)
        cluster = minishard.join(
            "aio-thread", app, listen=a, cookie=COOKIE, dispatch="asyncio", **FAST
        )
        await cluster.wait_until_async("available", timeout=BOUND)
        await asyncio.get_running_loop().run_in_executor(None, cluster.leave)
        assert app.journal.of("deallocated") == [("deallocated", None, 0)]
        assert app.journal.threads() == {threading.get_ident()}
        assert cluster.closed

    asyncio.run(scenario())


def test_host_dispatch_runs_callbacks_only_inside_dispatch():
    addresses = free_addresses(3)
    apps = [Recorder(addresses, 1, a) for a in addresses]
    clusters = [
        minishard.join("host", app, listen=a, cookie=COOKIE, dispatch="host", **FAST)
        for app, a in zip(apps, addresses)
    ]
    fds = {c.fileno(): c for c in clusters}
    assert None not in fds
    here = threading.get_ident()
    deadline = time.monotonic() + BOUND
    while not all(c.health() == "available" for c in clusters):
        assert time.monotonic() < deadline, [c.health() for c in clusters]
        readable, _, _ = select.select(list(fds), [], [], 0.05)
        for fd in readable:
            fds[fd].dispatch()
    for app in apps:
        assert {t for _, t, e in app.journal.entries} <= {here}
    assert sum(len(app.journal.of("allocated")) for app in apps) == 1
    for c in clusters:
        c.leave()


def test_an_interrupt_raised_in_a_host_dispatched_callback_reaches_the_dispatcher():
    class Interrupted(Recorder):
        def allocated(self, cluster, shard, epoch):
            raise KeyboardInterrupt

    (a,) = free_addresses(1)
    cluster = minishard.join("host-interrupt", Interrupted([a], 1, a), listen=a, cookie=COOKIE, dispatch="host", **FAST)
    deadline = time.monotonic() + BOUND
    with pytest.raises(KeyboardInterrupt):
        while time.monotonic() < deadline:
            select.select([cluster.fileno()], [], [], 0.05)
            cluster.dispatch()
    cluster.leave()


def test_wait_until_async_is_woken_by_the_engine_not_by_polling(monkeypatch):
    async def scenario():
        a, b = free_addresses(2)
        apps = [Recorder([a, b], 2, me) for me in (a, b)]
        first = minishard.join("aio-wake", apps[0], listen=a, cookie=COOKIE, dispatch="asyncio", **FAST)
        looks = []
        native_health = first._health

        def counted_health():
            looks.append(time.monotonic())
            return native_health()

        monkeypatch.setattr(first, "_health", counted_health)
        waiting = asyncio.ensure_future(first.wait_until_async("available", timeout=BOUND))
        # Half a second with nothing to see: the other member is not there.
        await asyncio.sleep(0.5)
        assert not waiting.done()
        second = minishard.join("aio-wake", apps[1], listen=b, cookie=COOKIE, dispatch="asyncio", **FAST)
        assert await waiting is True
        # One look when the wait starts and one per wake-up; polling every
        # 5 ms would have looked about a hundred times in that half second.
        assert len(looks) <= 3, f"the health was read {len(looks)} times"
        for cluster in (first, second):
            await cluster.leave_async()

    asyncio.run(scenario())


def test_wait_until_async_raises_closed_error_when_the_cluster_leaves_meanwhile():
    async def scenario():
        a, b = free_addresses(2)
        cluster = minishard.join(
            "aio-closed", Recorder([a, b], 2, a), listen=a, cookie=COOKIE, dispatch="asyncio", **FAST
        )
        waiting = asyncio.ensure_future(cluster.wait_until_async("available", timeout=BOUND))
        await asyncio.sleep(0.05)
        await cluster.leave_async()
        with pytest.raises(minishard.ClosedError):
            await waiting

    asyncio.run(scenario())


class Worker(Recorder):
    """An application whose shard is served by a task on the event loop:
    allocated starts it, deallocated stops it and waits for it to finish."""

    STOPPING = 0.3  # seconds the worker needs to shut down

    async def allocated(self, cluster, shard, epoch):
        await asyncio.sleep(0)
        self.journal.push("allocated", shard)
        stopped = asyncio.Event()

        async def serve():
            try:
                await asyncio.Event().wait()  # serves until cancelled
            finally:
                stopped.set()

        return {"shard": shard, "task": asyncio.ensure_future(serve()), "stopped": stopped}

    async def deallocated(self, winner, state):
        state["task"].cancel()
        await state["stopped"].wait()
        await asyncio.sleep(self.STOPPING)  # flushing, closing connections...
        self.journal.push("worker stopped", state["shard"])


def test_an_async_deallocated_is_awaited_before_the_hand_over_completes(loop_thread, local):
    cluster = local("aio-handover", 3, 1, app=Worker, dispatch="asyncio", loop=loop_thread)
    (owner_address,) = cluster.converged()
    owner = cluster.index(owner_address)
    assert cluster.apps[owner].journal.of("allocated") == [("allocated", 0)]
    viewer = (owner + 1) % 3
    cluster.leave(owner)
    # leave() returned once the async deallocated had finished...
    assert cluster.apps[owner].journal.of("worker stopped") == [("worker stopped", 0)]
    stopped_at = cluster.apps[owner].journal.first("worker stopped")
    assert eventually(BOUND, lambda: cluster.owner(viewer, 0) not in (None, owner))
    new_owner = cluster.owner(viewer, 0)
    # ...and the shard went to its next owner only then.
    taken_at = cluster.apps[new_owner].journal.first("allocated")
    assert taken_at is not None and stopped_at is not None
    assert taken_at > stopped_at, "the next owner started before the old worker had stopped"
    # deallocated found the worker's task in its state: the state was what
    # the coroutine returned. Every callback ran on the loop's thread.
    async def loop_ident():
        return threading.get_ident()

    assert cluster.apps[owner].journal.threads() == {on_loop(loop_thread, loop_ident())}


def test_an_async_allocated_that_raises_is_logged_once_and_gives_the_shard_back(
    loop_thread, local, caplog
):
    caplog.set_level(logging.INFO, logger="minishard")

    class FailsAfterAwaiting(Recorder):
        async def allocated(self, cluster, shard, epoch):
            await asyncio.sleep(0.01)
            if self.me == min(self.members):
                self.journal.push("refused", shard)
                raise RuntimeError(f"cannot open the store of shard {shard}")
            return super().allocated(cluster, shard, epoch)

    cluster = local("aio-raises", 3, 1, app=FailsAfterAwaiting, dispatch="asyncio", loop=loop_thread)
    (owner,) = cluster.converged()
    failing = cluster.index(min(cluster.addresses))
    assert owner != cluster.addresses[failing]
    assert cluster.apps[failing].journal.of("refused")
    assert eventually(2, lambda: callback_failures(caplog, "allocated"))
    record = callback_failures(caplog, "allocated")[0]
    assert (record.cluster, record.shard, record.callback) == ("aio-raises", 0, "allocated")
    assert "RuntimeError: cannot open the store of shard 0" in record.getMessage()
    assert record.exc_info[0] is RuntimeError
    assert "in allocated" in caplog.text, "the traceback reaches into the coroutine"


def test_a_late_async_score_loses_like_a_late_plain_one(loop_thread, local):
    class SlowToScore(Recorder):
        async def score(self, state):
            if self.me in self.members[:3]:
                # The left side would win on score, but answers too late.
                await asyncio.sleep(FAST["score_deadline"] * 2)
                self.journal.push("score", 1000)
                return 1000
            self.journal.push("score", 1)
            return 1

    cluster = local("aio-late-score", 6, 1, app=SlowToScore, dispatch="asyncio", loop=loop_thread)
    cluster.converged()
    left, right = [0, 1, 2], [3, 4, 5]
    cluster.split(left, right)
    assert eventually(
        BOUND * 2, lambda: cluster.owner(0, 0) in left and cluster.owner(3, 0) in right
    ), "both sides hold the shard during the split"
    cluster.heal()
    (owner,) = cluster.converged(BOUND * 3)
    assert cluster.index(owner) in right, "a score later than score_deadline loses"
    assert any(app.journal.of("score") == [("score", 1000)] for app in cluster.apps[:3])


def test_with_async_callbacks_the_loop_thread_must_not_block_in_leave_or_wait_until():
    class AsyncApp(Recorder):
        async def deallocated(self, winner, state):
            await asyncio.sleep(0)
            self.journal.push("deallocated", winner, state["shard"])

    async def scenario():
        (a,) = free_addresses(1)
        app = AsyncApp([a], 1, a)
        async with minishard.join(
            "aio-block", app, listen=a, cookie=COOKIE, dispatch="asyncio", **FAST
        ) as cluster:
            await cluster.wait_until_async("available", timeout=BOUND)
            with pytest.raises(minishard.InvalidArgumentError, match="leave_async"):
                cluster.leave()
            with pytest.raises(minishard.InvalidArgumentError, match="wait_until_async"):
                cluster.wait_until("available", timeout=1)
            assert not cluster.closed
        # The async with block left, awaiting deallocated on the loop.
        assert cluster.closed
        assert app.journal.of("deallocated") == [("deallocated", None, 0)]

    asyncio.run(scenario())


def test_leave_or_wait_from_inside_an_async_callback_is_refused():
    seen = {}

    class Curious(Recorder):
        cluster = None

        async def allocated(self, cluster, shard, epoch):
            for name, call in [
                ("leave_async", lambda: self.cluster.leave_async()),
                ("wait_until_async", lambda: self.cluster.wait_until_async("available", timeout=1)),
            ]:
                try:
                    await call()
                except minishard.InvalidArgumentError as e:
                    seen[name] = str(e)
            return super().allocated(cluster, shard, epoch)

    async def scenario():
        (a,) = free_addresses(1)
        app = Curious([a], 1, a)
        cluster = minishard.join(
            "aio-inside", app, listen=a, cookie=COOKIE, dispatch="asyncio", allocation_retry=0.05,
            **{k: v for k, v in FAST.items() if k != "allocation_retry"},
        )
        app.cluster = cluster
        await cluster.wait_until_async("available", timeout=BOUND)
        await cluster.leave_async()

    asyncio.run(scenario())
    assert "from inside a callback" in seen["leave_async"]
    assert "from inside a callback" in seen["wait_until_async"]


@pytest.mark.parametrize("dispatch", ["thread", "host"])
def test_async_callbacks_without_asyncio_dispatch_are_refused_at_join(dispatch):
    class AsyncApp(Recorder):
        async def deallocated(self, winner, state):
            pass

    (a,) = free_addresses(1)
    with pytest.raises(minishard.ConfigError, match="deallocated: async def callbacks need dispatch='asyncio'"):
        minishard.join("aio-refused", AsyncApp([a], 1, a), listen=a, cookie=COOKIE, dispatch=dispatch)


def test_async_nodes_is_refused_at_join():
    class AsyncNodes(Recorder):
        async def nodes(self, cluster):
            return self.members

    async def scenario():
        (a,) = free_addresses(1)
        with pytest.raises(minishard.ConfigError, match="nodes must be plain def"):
            minishard.join("aio-nodes", AsyncNodes([a], 1, a), listen=a, cookie=COOKIE, dispatch="asyncio")

    asyncio.run(scenario())
