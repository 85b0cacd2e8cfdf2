"""One member of a minishard cluster, in Python. Run one per member, each with
its own address first, then the others:
    python examples/python/node.py 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003
It keeps one shard fewer than it has members (one node on standby), and runs
until Ctrl-C (or for --seconds N once available), then leaves."""
from __future__ import annotations   # for `str | None` on Python 3.9

import argparse
import logging
import signal
import time

import minishard

logging.basicConfig(level=logging.WARNING)   # engine lines: "minishard.engine"; failed callbacks: "minishard.callbacks"

Data = dict[str, bytes]                               # what this node keeps for its shard

class Sessions(minishard.Callbacks[Data]):            # or any object with these methods
    def __init__(self, members: list[str]) -> None:
        self.members = members
    def nodes(self, cluster: str) -> list[str]:
        return self.members
    def shard_count(self, cluster: str) -> int:
        return max(len(self.members) - 1, 1)           # one node on standby
    def allocated(self, cluster: str, shard: int, epoch: int) -> Data:
        print(f"owning shard {shard} at epoch {epoch}")  # epoch: fence writes by stale owners with it
        return {}                                      # the state for this shard
    def score(self, state: Data) -> int:
        return len(state)                              # keep the copy with the most data
    def prolonged(self, loser: str, state: Data, epoch: int) -> Data:
        print(f"kept it against {loser}, now at epoch {epoch}")  # above the loser's
        return state                                   # the state to keep
    def deallocated(self, winner: str | None, state: Data, reason: minishard.Reason) -> None:
        print(f"gave it up to {winner or 'no one'} ({reason})")  # lost_conflict, left, degraded, ...
    # optional: status_changed(self, cluster, old, new), on every change of health

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, help="leave this long after the cluster is available")
parser.add_argument("members", nargs="+", help="this node's address first, then the other members'")
args = parser.parse_args()
stop: list[int] = []   # not a threading.Event: its set() in a signal handler can deadlock on its own wait()
signal.signal(signal.SIGINT, lambda *_: stop.append(signal.SIGINT))
signal.signal(signal.SIGTERM, lambda *_: stop.append(signal.SIGTERM))

with minishard.join("sessions", Sessions(args.members), listen=args.members[0],
                    cookie=b"change me") as cluster:   # a long random secret in production
    cluster.wait_until("available", timeout=30)       # True, or raises minishard.TimeoutError
    print(f"shard 0 lives on {cluster.get_node(0)}", flush=True)  # an address, or None
    print(cluster.shard_map(), cluster.my_shard())     # [owner or None, ...], (shard, epoch) or None
    print(cluster.status().health == "available")     # Health members compare equal to strings
    until = time.monotonic() + (args.seconds or float("inf"))
    while not stop and time.monotonic() < until:
        time.sleep(0.1)   # the main thread runs signal handlers between these
# leaving the block leaves the cluster (so does cluster.leave(), and interpreter exit)
print("left", flush=True)
