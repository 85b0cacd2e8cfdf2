"""The interpreter around the engine: logs reach `logging`, the process exits
cleanly with clusters still joined (they leave at exit, in every dispatch
mode), and Ctrl-C interrupts wait_until."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import time

import minishard
from conftest import BOUND, COOKIE, FAST, Recorder, eventually, free_addresses

PRELUDE = textwrap.dedent(
    f"""
    import asyncio, sys, time
    import minishard
    FAST = {FAST!r}

    class App(minishard.Callbacks):
        def __init__(self, members, shards):
            self.members, self.shards = members, shards
        def nodes(self, cluster):
            return self.members
        def shard_count(self, cluster):
            return self.shards
        def allocated(self, cluster, shard, epoch):
            print("allocated", cluster, shard, flush=True)
            return (cluster, shard)
        def deallocated(self, winner, state):
            print("deallocated", *state, winner, flush=True)
    """
)


def given_back_at_exit(out: str, clusters: list, deallocated: str = "deallocated") -> None:
    """Every allocation of each cluster ended, after "exiting", with a
    deallocated that names no winner. (When the first of two members
    leaves, the other may take the shard over before its own leave, then
    give it back too.)"""
    lines = out.splitlines()
    assert "exiting" in lines, out
    after = lines[lines.index("exiting") + 1 :]
    for name in clusters:
        taken = [l for l in lines if l.startswith(f"allocated {name} ")]
        given = [l for l in lines if l.startswith(f"{deallocated} {name} ")]
        assert taken, out
        assert len(given) == len(taken), out
        assert all(l in after and l.endswith(" None") for l in given), out


def run_python(script: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_engine_logs_go_to_the_minishard_engine_logger(caplog):
    caplog.set_level(logging.INFO, logger="minishard")
    (a,) = free_addresses(1)
    with minishard.join("logs", Recorder([a], 1, a), listen=a, cookie=COOKIE, **FAST) as cluster:
        cluster.wait_until("available", timeout=BOUND)

    def logged(text):
        return [r for r in caplog.records if r.name == "minishard.engine" and text in r.getMessage()]

    assert eventually(2, lambda: logged("joined cluster=logs") and logged("left cluster=logs"))
    # Logged on the engine's thread: it says which cluster and node.
    record = logged("new=available")[0]
    assert record.levelno == logging.INFO
    assert record.getMessage().endswith(f"cluster=logs node={a}")
    # The same fields as attributes of the record, as logging's `extra` makes.
    assert (record.cluster, record.node, record.new) == ("logs", a, "available")
    assert record.threadName.startswith("minishard"), "named after the engine thread"
    assert record.pathname.endswith(".rs")


def test_the_interpreter_exits_cleanly_with_clusters_still_joined():
    a, b, c, d = free_addresses(4)
    child = run_python(
        f"""
        members = {[a, b]!r}
        threaded = [minishard.join("exit", App(members, 1), listen=x, cookie=b"c", **FAST) for x in members]
        for cluster in threaded:
            cluster.wait_until("available", timeout=10)

        async def main():
            members = {[c, d]!r}
            clusters = [minishard.join("exit-aio", App(members, 1), listen=x, cookie=b"c", dispatch="asyncio", **FAST) for x in members]
            for cluster in clusters:
                await cluster.wait_until_async("available", timeout=10)
            return clusters

        kept = asyncio.run(main())
        print("exiting", flush=True)
        """
    )
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    given_back_at_exit(out, ["exit", "exit-aio"])


def test_async_deallocated_still_runs_at_exit_after_the_loop_closed():
    a, b = free_addresses(2)
    child = run_python(
        f"""
        class AsyncApp(App):
            async def deallocated(self, winner, state):
                await asyncio.sleep(0.01)
                print("async deallocated", *state, winner, flush=True)

        async def main():
            members = {[a, b]!r}
            clusters = [minishard.join("exit-async", AsyncApp(members, 1), listen=x, cookie=b"c", dispatch="asyncio", **FAST) for x in members]
            for cluster in clusters:
                await cluster.wait_until_async("available", timeout=10)
            return clusters

        kept = asyncio.run(main())
        print("exiting", flush=True)
        """
    )
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    given_back_at_exit(out, ["exit-async"], deallocated="async deallocated")


def test_ctrl_c_interrupts_wait_until():
    a, b = free_addresses(2)
    child = run_python(
        f"""
        cluster = minishard.join("sigint", App({[a, b]!r}, 2), listen={a!r}, cookie=b"c", **FAST)
        print("waiting", flush=True)
        started = time.monotonic()
        try:
            cluster.wait_until("available", timeout=60)
        except KeyboardInterrupt:
            print("interrupted after %.1f s" % (time.monotonic() - started), flush=True)
            sys.exit(3)
        """
    )
    assert child.stdout.readline() == "waiting\n"
    time.sleep(0.2)  # let it enter the wait (the signal would be seen anyway)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=10)
    assert child.returncode == 3, err
    assert out.startswith("interrupted after 0."), out
