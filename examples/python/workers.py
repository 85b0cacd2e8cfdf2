"""One member of a minishard cluster, with asyncio: every callback runs on the
event loop, and `deallocated` stops the shard's worker before the shard is
handed over. Same arguments as node.py:
    python examples/python/workers.py 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003"""
from __future__ import annotations

import argparse
import asyncio
import signal

import minishard

async def serve(shard: int, epoch: int) -> None:
    while True:                                        # the shard's work, fenced by its epoch
        await asyncio.sleep(1)

class Workers(minishard.Callbacks[asyncio.Task[None]]):
    def __init__(self, members: list[str]) -> None:
        self.members = members
    def nodes(self, cluster: str) -> list[str]:       # nodes and shard_count stay plain
        return self.members
    def shard_count(self, cluster: str) -> int:
        return max(len(self.members) - 1, 1)
    async def allocated(self, cluster: str, shard: int, epoch: int) -> asyncio.Task[None]:
        print(f"owning shard {shard} at epoch {epoch}")
        return asyncio.create_task(serve(shard, epoch))
    async def deallocated(
        self, winner: str | None, worker: asyncio.Task[None], reason: minishard.Reason
    ) -> None:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)   # the hand-over waits for this
        print(f"worker stopped; gave it up to {winner or 'no one'} ({reason})")

async def main(members: list[str], seconds: float | None) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with minishard.join("sessions", Workers(members), listen=members[0],
                              cookie=b"change me", dispatch="asyncio") as cluster:
        await cluster.wait_until_async("available", timeout=30)
        print(f"shard 0 lives on {cluster.get_node(0)}", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), seconds)       # until Ctrl-C, or --seconds
        except asyncio.TimeoutError:
            pass
    print("left", flush=True)

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float)
parser.add_argument("members", nargs="+")
args = parser.parse_args()
asyncio.run(main(args.members, args.seconds))
