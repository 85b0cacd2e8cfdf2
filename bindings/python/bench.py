"""The cost of Cluster.get_node from Python, in ns per call: the median of
repeated timeit runs on a settled 3-node 2-shard loopback cluster, lookups
alternating shards 0 and 1 (the method of tests/c/bench.sh for C and Rust).
Not run by the tests: numbers need a quiet machine.

    python bench.py [RUNS] [CALLS]
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
import timeit

import minishard


def free_addresses(n: int) -> list:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return addresses


class Idle(minishard.Callbacks[None]):
    def __init__(self, members: list) -> None:
        self.members = members

    def nodes(self, cluster: str) -> list:
        return self.members

    def shard_count(self, cluster: str) -> int:
        return 2

    def allocated(self, cluster: str, shard: int, epoch: int) -> None:
        return None

    def handle_request(self, state: None, data: bytes) -> bytes:
        return data


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    members = free_addresses(3)
    clusters = [
        minishard.join("bench-lookup", Idle(members), listen=a, cookie=b"bench") for a in members
    ]
    for c in clusters:
        c.wait_until("available", timeout=30)
    cluster = clusters[0]
    get_node = cluster.get_node
    assert get_node(0) is not None and get_node(1) is not None

    def per_call(stmt: str, env: dict) -> float:
        # Two lookups per loop turn (shards 0 and 1), like the C benchmark.
        timer = timeit.Timer(stmt, globals=env)
        samples = [timer.timeit(calls // 2) / calls * 1e9 for _ in range(runs)]
        return statistics.median(samples)

    loop = per_call("pass", {})
    method = per_call("c.get_node(0); c.get_node(1)", {"c": cluster})
    bound = per_call("g(0); g(1)", {"g": get_node})
    shard_map = per_call("c.shard_map(); c.shard_map()", {"c": cluster})
    print(
        f"minishard get_node from Python {sys.version.split()[0]}: 3-node 2-shard loopback "
        f"cluster, median of {runs} runs of {calls} calls"
    )
    print(f"{'Python cluster.get_node(k)':44} {method:8.1f} ns/call")
    print(f"{'Python get_node = cluster.get_node; get_node(k)':44} {bound:8.1f} ns/call")
    print(f"{'Python cluster.shard_map() (2 shards)':44} {shard_map:8.1f} ns/call")
    print(f"{'(empty timeit loop, per call)':44} {loop:8.1f} ns/call")
    # Requests: a round trip to the owner of the shard in another node (p50)
    # and to this node's own shard (the handler runs in Python either way).
    own = cluster.my_shard()
    remote = 1 if own is not None and own[0] == 0 else 0
    for size in (100, 64 << 10):
        data = b"x" * size
        samples = []
        for _ in range(2000):
            started = time.perf_counter()
            cluster.request(remote, data, timeout=5.0)
            samples.append((time.perf_counter() - started) * 1e6)
        label = f"Python cluster.request, remote owner, {size // 1024 if size >= 1024 else size} {'KiB' if size >= 1024 else 'B'}"
        print(f"{label:44} {statistics.median(samples):8.1f} us p50")
    if own is not None:
        n = 20000
        started = time.perf_counter()
        for _ in range(n):
            cluster.request(own[0], b"x", timeout=5.0)
        print(f"{'Python cluster.request, own shard':44} {(time.perf_counter() - started) / n * 1e6:8.1f} us")
    for c in clusters:
        c.leave()


if __name__ == "__main__":
    main()
