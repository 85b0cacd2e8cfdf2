"""asyncio: waiting without blocking the loop, and callbacks dispatched on
the event loop (DESIGN.md's host dispatch), so an async service touches its
own state from callbacks without locks. Plus plain host dispatch."""

from __future__ import annotations

import asyncio
import select
import threading
import time

import pytest

import minishard
from conftest import BOUND, COOKIE, FAST, Recorder, free_addresses


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


def test_leave_from_another_thread_than_the_loop_is_refused():
    async def scenario():
        (a,) = free_addresses(1)
        cluster = minishard.join(
            "aio-thread", Recorder([a], 1, a), listen=a, cookie=COOKIE, dispatch="asyncio", **FAST
        )
        await cluster.wait_until_async("available", timeout=BOUND)
        with pytest.raises(minishard.InvalidArgumentError, match="event loop's thread"):
            await asyncio.get_running_loop().run_in_executor(None, cluster.leave)
        cluster.leave()

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
        def allocated(self, cluster, shard):
            raise KeyboardInterrupt

    (a,) = free_addresses(1)
    cluster = minishard.join("host-interrupt", Interrupted([a], 1, a), listen=a, cookie=COOKIE, dispatch="host", **FAST)
    deadline = time.monotonic() + BOUND
    with pytest.raises(KeyboardInterrupt):
        while time.monotonic() < deadline:
            select.select([cluster.fileno()], [], [], 0.05)
            cluster.dispatch()
    cluster.leave()
