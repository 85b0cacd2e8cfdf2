"""Not a test: a user's program with typos that `mypy --strict` must reject,
each on a line marked `# rejected` (test_typing.py checks that mypy reports
an error on every marked line and on no other)."""

from __future__ import annotations

import asyncio

import minishard


class App(minishard.Callbacks[int]):
    def nodes(self, cluster: str) -> list[str]:
        return ["127.0.0.1:7001"]

    def shard_count(self, cluster: str) -> int:
        return 1

    def allocated(self, cluster: str, shard: int, epoch: int) -> int:
        return shard


def typos(cluster: minishard.Cluster) -> None:
    cluster.wait_until("availble")  # rejected
    cluster.wait_until("Available", timeout=1)  # rejected
    wanted: minishard.HealthName = "up"  # rejected
    print(wanted)


async def typos_async(cluster: minishard.Cluster) -> None:
    await cluster.wait_until_async("degarded")  # rejected


def join_typo() -> None:
    minishard.join("c", App(), listen="127.0.0.1:7001", cookie=b"s", dispatch="asynco")  # rejected
    minishard.join("c", App(), listen="127.0.0.1:7001", cookie=b"s", quorum="majorty")  # rejected


if __name__ == "__main__":
    asyncio.run(typos_async(minishard.join("c", App(), listen="127.0.0.1:7001", cookie=b"s")))
