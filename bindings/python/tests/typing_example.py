"""Not a test: a user's program that `mypy --strict` must accept (run by
test_typing.py) to check the package's annotations and stubs."""

from __future__ import annotations

import asyncio
from typing import Dict, Optional

import minishard

State = Dict[str, int]


class Sessions(minishard.Callbacks[State]):
    def nodes(self, cluster: str) -> list[str]:
        return ["127.0.0.1:7001"]

    def shard_count(self, cluster: str) -> int:
        return 1

    def allocated(self, cluster: str, shard: int, epoch: int) -> State:
        return {"epoch": epoch}

    def score(self, state: State) -> int:
        return state["epoch"]

    def prolonged(self, loser: str, state: State, epoch: int) -> State:
        return {"epoch": epoch}

    def deallocated(self, winner: Optional[str], state: State, reason: minishard.Reason) -> None:
        assert reason in (minishard.Reason.LOST_CONFLICT, "left")

    def handle_request(self, state: State, data: bytes) -> bytes:
        return data + str(state["epoch"]).encode()


class AsyncSessions(minishard.Callbacks[State]):
    """dispatch="asyncio": every callback but nodes and shard_count may await."""

    def nodes(self, cluster: str) -> list[str]:
        return ["127.0.0.1:7001"]

    def shard_count(self, cluster: str) -> int:
        return 1

    async def allocated(self, cluster: str, shard: int, epoch: int) -> State:
        await asyncio.sleep(0)
        return {"epoch": epoch}

    async def score(self, state: State) -> int:
        return state["epoch"]

    async def deallocated(
        self, winner: Optional[str], state: State, reason: minishard.Reason
    ) -> None:
        await asyncio.sleep(0)

    async def status_changed(
        self, cluster: str, old: minishard.Health, new: minishard.Health
    ) -> None:
        pass


def use(cluster: minishard.Cluster) -> None:
    owner: Optional[str] = cluster.get_node(0)
    owners: list[Optional[str]] = cluster.shard_map()
    mine: Optional[tuple[int, int]] = cluster.my_shard()
    status: minishard.Status = cluster.status()
    health: minishard.Health = status.health
    nodes: dict[str, minishard.NodeState] = status.nodes
    stats: minishard.Stats = cluster.stats()
    ok: bool = cluster.wait_until(minishard.Health.AVAILABLE, timeout=1.5)
    wanted: minishard.HealthName = "transition"
    print(owner, owners, mine, health == "available", nodes, stats.allocations, ok, wanted)
    reply: bytes = cluster.request(0, b"get k", timeout=1.0)
    metadata: Optional[dict[str, str]] = cluster.node_metadata("127.0.0.1:7001")
    by_node: dict[str, dict[str, str]] = status.metadata
    print(reply, metadata, by_node)
    try:
        cluster.wait_until("available", timeout=0.1)
    except (minishard.TimeoutError, minishard.HandlerError, minishard.UncertainError):
        pass
    except minishard.Error as error:
        print(error)


async def use_async() -> None:
    dispatch: minishard.DispatchMode = "asyncio"
    async with minishard.join("sessions", AsyncSessions(), listen="127.0.0.1:7001",
                              cookie=b"secret", dispatch=dispatch, metadata={"http": "x:80"},
                              heartbeat_interval=0.05) as cluster:
        done: bool = await cluster.wait_until_async("available", timeout=5)
        answer: bytes = await cluster.request_async(1, bytearray(b"x"), timeout=0.5)
        print(done, answer)
    quorum: minishard.Quorum = "majority"
    with minishard.join("sessions", Sessions(), listen="127.0.0.1:7001", cookie=b"secret",
                        dispatch="thread", quorum=quorum) as other:
        await other.leave_async()


if __name__ == "__main__":
    asyncio.run(use_async())
