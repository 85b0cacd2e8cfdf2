"""Checks of docs/design.md section 7 (and 6.5) over the events the nodes print.

Times are the nodes' own `t` (unix ms; every node runs on this machine's
clock) and the harness's marks, taken on the same clock.

An allocation is one node process's `allocated` up to its `deallocated`
(or up to its kill -9, or open if the process still runs). Intervals are
half-open, so a hand-over printed in the same millisecond is no overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from harness import Ev


@dataclass
class Alloc:
    proc: str
    node: str
    shard: int
    epoch: int
    start: float
    end: Optional[float] = None          # None: still held
    how: str = "open"                    # deallocated | killed | exited | open
    winner: Optional[str] = None
    scores: list = field(default_factory=list)      # (t, score)
    prolonged: list = field(default_factory=list)   # (t, loser)
    # Epochs a won conflict raised it to, in order (`prolonged` says so).
    raised: list = field(default_factory=list)

    @property
    def current_epoch(self) -> int:
        return self.raised[-1] if self.raised else self.epoch

    def holds_at(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)

    def overlaps(self, other: "Alloc") -> bool:
        a_end = self.end if self.end is not None else float("inf")
        b_end = other.end if other.end is not None else float("inf")
        return self.start < b_end and other.start < a_end

    def __str__(self) -> str:
        end = "now" if self.end is None else f"{self.end:.0f}"
        return f"{self.node} shard {self.shard} epoch {self.epoch} [{self.start:.0f}, {end}) {self.how}" + (
            f" winner={self.winner}" if self.how == "deallocated" else "")


class History:
    """The allocations, health timelines and link states read from events,
    and every violation found while reading them."""

    def __init__(self, events: Iterable[Ev], stopped: Optional[dict] = None):
        self.events = sorted(events, key=lambda e: e.seq)
        self.violations: list[str] = []
        self.allocs: list[Alloc] = []
        self.health: dict[str, list[tuple[float, str]]] = {}   # proc -> [(t, new)]
        self.links: dict[tuple[str, str], list[tuple[float, bool]]] = {}  # (proc, peer) -> [(t, up)]
        self.procs: dict[str, str] = {}   # proc -> node
        stopped = stopped or {}
        self._read(stopped)

    def v(self, msg: str) -> None:
        self.violations.append(msg)

    def _read(self, stopped: dict) -> None:
        held: dict[str, Alloc] = {}
        left: set[str] = set()
        kills = {e.data["proc"]: e.t for e in self.events if e.event == "mark" and e.data.get("what") == "kill9"}
        for e in self.events:
            if e.proc == "harness":
                continue
            self.procs[e.proc] = e.node
            cur = held.get(e.proc)
            d = e.data
            if e.event == "allocated":
                if cur is not None:
                    self.v(f"4: {e.node} allocated shard {d['shard']} at {e.t:.0f} while holding shard {cur.shard} (epoch {cur.epoch})")
                if e.proc in left:
                    self.v(f"4: {e.node} allocated shard {d['shard']} at {e.t:.0f} after `left`")
                a = Alloc(e.proc, e.node, d["shard"], d["epoch"], e.t)
                self.allocs.append(a)
                held[e.proc] = a
            elif e.event in ("score", "prolonged"):
                # `prolonged` may raise the allocation's epoch (above its losers').
                raise_ok = e.event == "prolonged" and cur is not None and (d.get("epoch") or 0) > cur.current_epoch
                if cur is None or cur.shard != d.get("shard") or (cur.current_epoch != d.get("epoch") and not raise_ok):
                    self.v(f"4: {e.node} got `{e.event}` for shard {d.get('shard')} epoch {d.get('epoch')} at {e.t:.0f} "
                           f"while holding {cur.shard if cur else 'nothing'}")
                    continue
                if e.event == "score":
                    cur.scores.append((e.t, d["score"]))
                else:
                    cur.prolonged.append((e.t, d["loser"]))
                    if raise_ok:
                        cur.raised.append(d["epoch"])
            elif e.event == "deallocated":
                if cur is None or cur.shard != d.get("shard") or cur.current_epoch != d.get("epoch"):
                    self.v(f"4: {e.node} deallocated shard {d.get('shard')} epoch {d.get('epoch')} at {e.t:.0f} "
                           f"without a matching allocated (holding {cur.shard if cur else 'nothing'})")
                    continue
                cur.end, cur.how, cur.winner = e.t, "deallocated", d.get("winner")
                del held[e.proc]
            elif e.event == "status":
                self.health.setdefault(e.proc, []).append((e.t, d["new"]))
            elif e.event == "peer_up":
                self.links.setdefault((e.proc, d["peer"]), []).append((e.t, True))
            elif e.event == "peer_down":
                self.links.setdefault((e.proc, d["peer"]), []).append((e.t, False))
            elif e.event == "left":
                if cur is not None:
                    self.v(f"4: {e.node} printed `left` at {e.t:.0f} still holding shard {cur.shard}: no deallocated on leave")
                left.add(e.proc)
            elif e.event == "exit":
                code = d.get("code")
                how = stopped.get(e.proc)
                if e.proc in kills:
                    if cur is not None:
                        cur.end, cur.how = kills[e.proc], "killed"
                        del held[e.proc]
                    continue
                if cur is not None:
                    self.v(f"4: {e.node} exited (code {code}) holding shard {cur.shard} epoch {cur.epoch}: allocated without deallocated")
                    cur.end, cur.how = e.t, "exited"
                    del held[e.proc]
                if how == "term" and code != 0:
                    self.v(f"{e.proc} exited with {code} after SIGTERM (expected 0)")
                if how == "term" and e.proc not in left:
                    self.v(f"{e.proc} exited after SIGTERM without printing `left`")
                if how is None:
                    self.v(f"{e.proc} exited on its own with code {code}")

    # ---------------------------------------------------------- timelines

    def holders(self, shard: int, t: float) -> list[Alloc]:
        return [a for a in self.allocs if a.shard == shard and a.holds_at(t)]

    def health_at(self, proc: str, t: float) -> str:
        h = "degraded"   # the state at start-up
        for (ht, new) in self.health.get(proc, []):
            if ht <= t:
                h = new
        return h

    def live_procs(self, t: float) -> list[str]:
        """Processes started and not exited at t."""
        out = []
        for proc in self.procs:
            evs = [e for e in self.events if e.proc == proc]
            start = evs[0].t
            exits = [e.t for e in evs if e.event == "exit"]
            if start <= t and (not exits or exits[0] > t):
                out.append(proc)
        return out

    def link_up(self, proc: str, peer: str, t: float) -> bool:
        up = False
        for (lt, state) in self.links.get((proc, peer), []):
            if lt <= t:
                up = state
        return up

    # ---------------------------------------------------------- checks

    def check_all(self, shard_count: int) -> None:
        """What holds over any history: discipline (read above), epochs
        within each process and across all of them, conflicts resolved as
        docs/design.md 6.3 says."""
        self.check_epochs()
        self.check_epochs_unique()
        self.check_epochs_successive()
        self.check_conflicts()

    def check_epochs(self) -> None:
        """7.5: per node process, per shard, successive epochs only grow."""
        last: dict[tuple[str, int], Alloc] = {}
        for a in sorted(self.allocs, key=lambda a: a.start):
            prev = last.get((a.proc, a.shard))
            if prev is not None and a.epoch <= prev.epoch:
                self.v(f"5: {a.node} allocated shard {a.shard} with epoch {a.epoch} at {a.start:.0f}, "
                       f"not above its earlier epoch {prev.epoch}")
            last[(a.proc, a.shard)] = a

    def check_epochs_unique(self) -> None:
        """7.5: no epoch is issued twice for a shard anywhere in the cluster,
        even by two sides of a split into two (docs/design.md 2)."""
        first: dict[tuple[int, int], Alloc] = {}
        for a in sorted(self.allocs, key=lambda a: a.start):
            other = first.setdefault((a.shard, a.epoch), a)
            if other is not a:
                self.v(f"5: shard {a.shard} epoch {a.epoch} issued twice: by {other.node} at {other.start:.0f} "
                       f"and by {a.node} at {a.start:.0f}")

    def check_epochs_successive(self) -> None:
        """7.5 across processes: an allocation of a shard that starts once
        another allocation of it has ended (on any node) has a larger epoch.
        Allocations that overlap (two sides of a split) are only unique."""
        by_shard: dict[int, list[Alloc]] = {}
        for a in self.allocs:
            by_shard.setdefault(a.shard, []).append(a)
        for shard, allocs in by_shard.items():
            for b in allocs:
                before = [a for a in allocs if a.end is not None and a.end <= b.start]
                if not before:
                    continue
                top = max(before, key=lambda a: a.epoch)
                if b.epoch <= top.epoch:
                    self.v(f"5: shard {shard}: {b.node} allocated epoch {b.epoch} at {b.start:.0f}, after "
                           f"{top.node}'s epoch {top.epoch} ended at {top.end:.0f}: successive epochs must grow")

    def check_epochs_global(self) -> None:
        """Where the cluster never split: a shard's allocations follow each
        other and each epoch is above the one before."""
        by_shard: dict[int, list[Alloc]] = {}
        for a in self.allocs:
            by_shard.setdefault(a.shard, []).append(a)
        for shard, allocs in by_shard.items():
            allocs.sort(key=lambda a: a.start)
            for prev, a in zip(allocs, allocs[1:]):
                if a.epoch <= prev.epoch:
                    self.v(f"5: shard {shard}: {a.node} epoch {a.epoch} at {a.start:.0f} follows "
                           f"{prev.node} epoch {prev.epoch}: epochs must grow")

    def overlaps(self, since: float = float("-inf"), until: float = float("inf")) -> list[tuple[Alloc, Alloc]]:
        out = []
        for i, a in enumerate(self.allocs):
            for b in self.allocs[i + 1:]:
                if a.shard == b.shard and a.proc != b.proc and a.overlaps(b):
                    lo = max(a.start, b.start)
                    hi = min(a.end if a.end is not None else float("inf"), b.end if b.end is not None else float("inf"))
                    if lo < until and hi > since:
                        out.append((a, b))
        return out

    def check_no_overlap(self, since: float, until: float, why: str) -> None:
        for a, b in self.overlaps(since, until):
            lo = max(a.start, b.start)
            hi = min(x for x in (a.end, b.end, float("inf")) if x is not None)
            self.v(f"{why}: two owners of shard {a.shard} during [{lo:.0f}, {hi:.0f}) ({hi - lo:.0f} ms): "
                   f"{a.node} (epoch {a.epoch}) and {b.node} (epoch {b.epoch})")

    def check_conflicts(self) -> None:
        """7.3 for every pair of allocations that overlapped: it ended with
        one of them losing to the other, the winner having the higher score
        (ties: older epoch, then smaller NodeId), one `prolonged(loser)` on
        the winner per loser, one `deallocated(winner)` on the loser.
        Overlaps ended otherwise (a kill, a degradation, a leave) are not
        conflicts and are not judged here."""
        for a in self.allocs:
            if a.how != "deallocated" or a.winner is None:
                continue
            # The loser is `a`; the winner is the overlapping allocation of
            # the same shard on a.winner.
            rivals = [w for w in self.allocs if w.shard == a.shard and w.node == a.winner and w.overlaps(a)]
            if not rivals:
                self.v(f"3: {a} names winner {a.winner}, which held no overlapping allocation of shard {a.shard}")
                continue
            w = max(rivals, key=lambda r: r.start)
            pro = [p for p in w.prolonged if p[1] == a.node and p[0] >= a.start]
            if len(pro) != 1:
                self.v(f"3: winner {w} has {len(pro)} prolonged(loser={a.node}) for the loss of {a}, expected exactly one")
            if a.end is not None and w.end is not None and w.end <= a.end:
                self.v(f"3: winner {w} gave the shard up before its loser {a}")
            # docs/design.md 6.3 exempts an owner whose score failed or was late;
            # the nodes' `score` never fails and prints even when late, so
            # here a conflict decided without both scores is a failure.
            ls = [s for (t, s) in a.scores if t <= a.end]
            ws = [s for (t, s) in w.scores if t <= (pro[0][0] if pro else float('inf'))]
            if not ws:
                self.v(f"3: winner {w} printed no score before it won against {a.node}: "
                       f"the conflict was decided without its score")
            if not ls:
                self.v(f"3: loser {a} printed no score before it gave the shard up to {w.node}: "
                       f"the conflict was decided without its score")
            if not ls or not ws:
                continue
            lscore, wscore = ls[-1], ws[-1]
            key_w = (wscore, -w.epoch, _neg(w.node))
            key_l = (lscore, -a.epoch, _neg(a.node))
            if key_w < key_l:
                self.v(f"3: shard {a.shard}: {w.node} (score {wscore}, epoch {w.epoch}) beat {a.node} "
                       f"(score {lscore}, epoch {a.epoch}); the higher score (then older epoch, then smaller NodeId) must win")

    def link_events(self, a: str, b: str, since: float = float("-inf"),
                    until: float = float("inf")) -> list[tuple[float, str, bool]]:
        """peer_up (True) and peer_down (False) between nodes a and b, as
        either end printed them, in [since, until): (t, proc, up), by time."""
        out = []
        for (proc, peer), changes in self.links.items():
            if {self.procs.get(proc), peer} == {a, b}:
                out += [(t, proc, up) for (t, up) in changes if since <= t < until]
        return sorted(out)

    def check_link_dropped(self, a: str, b: str, since: float, until: float, label: str,
                           stays_down: bool = True) -> None:
        """The link between a and b really dropped in [since, until): one of
        them printed peer_down for the other; with `stays_down`, neither
        printed peer_up for the other after that, before `until`."""
        evs = self.link_events(a, b, since, until)
        downs = [t for (t, _, up) in evs if not up]
        if not downs:
            self.v(f"({label}): no peer_down between {a} and {b} in the {until - since:.0f} ms of the fault: "
                   f"the link never dropped")
            return
        ups = [(t, proc) for (t, proc, up) in evs if up and t > downs[0]]
        if stays_down and ups:
            self.v(f"({label}): the link {a} - {b} dropped at +{downs[0] - since:.0f} ms and came back "
                   f"at +{ups[0][0] - since:.0f} ms ({ups[0][1]}) while it was cut")

    def health_changes(self, procs: Optional[set] = None, since: float = float("-inf"),
                       until: float = float("inf")) -> list[tuple[float, str, str]]:
        """(t, proc, new health) in [since, until), by time."""
        return sorted((t, proc, new) for proc, changes in self.health.items()
                      if procs is None or proc in procs
                      for (t, new) in changes if since <= t < until)

    def conflicts(self) -> int:
        return sum(len(a.prolonged) for a in self.allocs)

    def moves(self, since: float, until: float, nodes: Optional[set] = None) -> list[Alloc]:
        return [a for a in self.allocs if since <= a.start < until and (nodes is None or a.node in nodes)]

    def deallocs(self, since: float, until: float) -> list[Alloc]:
        return [a for a in self.allocs if a.end is not None and since <= a.end < until and a.how != "killed"]

    def degraded_in(self, since: float, until: float, procs: Optional[set] = None) -> list[tuple[str, float]]:
        out = []
        for proc, changes in self.health.items():
            if procs is not None and proc not in procs:
                continue
            for (t, new) in changes:
                if since <= t < until and new == "degraded":
                    out.append((proc, t))
        return out

    # ---------------------------------------------------------- 7.1 / 7.2

    def connected_since(self, procs: list[str], t0: float) -> Optional[float]:
        """When every pair of `procs` was connected (both directions of the
        mesh up, as each side reports it) after t0: t0 if they already were,
        else the last peer_up that completed it; None if not yet."""
        nodes = {p: self.procs[p] for p in procs}
        worst = t0
        for p in procs:
            for q in procs:
                if p == q:
                    continue
                peer = nodes[q]
                changes = self.links.get((p, peer), [])
                up_at_t0 = self.link_up(p, peer, t0)
                later = [(t, s) for (t, s) in changes if t > t0]
                if later:
                    if not later[-1][1]:
                        return None
                    worst = max(worst, later[-1][0])
                elif not up_at_t0:
                    return None
        return worst

    def group_state(self, procs: list[str], shard_count: int) -> str:
        """What the group looks like at the end of the history, for a
        failure message: who holds each shard, each node's health, and which
        links inside the group are down."""
        end = max(e.t for e in self.events) + 0.5
        pset = set(procs)
        parts = []
        for s in range(shard_count):
            hs = [f"{a.node}@{a.epoch}" for a in self.holders(s, end) if a.proc in pset]
            parts.append(f"shard {s}: {hs or 'nobody'}")
        parts.append("health: " + ", ".join(f"{self.procs[p]}={self.health_at(p, end)}" for p in procs))
        down = [f"{self.procs[p]}->{self.procs[q]}" for p in procs for q in procs
                if p != q and not self.link_up(p, self.procs[q], end)]
        parts.append(f"links down: {down or 'none'}")
        return "; ".join(parts)

    def converged_at(self, procs: list[str], shard_count: int, after: float) -> Optional[float]:
        """The time from which, up to the last event, every shard has exactly
        one owner among `procs` and every one of them is `available`; None if
        that does not hold at the end of the history."""
        end = max(e.t for e in self.events)
        for s in range(shard_count):
            hs = [h for h in self.holders(s, end + 0.5) if h.proc in procs]
            if len(hs) != 1:
                return None
        for p in procs:
            if self.health_at(p, end + 0.5) != "available":
                return None
        stamps = [after]
        pset = set(procs)
        for a in self.allocs:
            if a.start >= after and a.proc in pset:
                stamps.append(a.start)
            if a.end is not None and a.end >= after and (a.proc in pset):
                stamps.append(a.end)
        for p in procs:
            for (t, new) in self.health.get(p, []):
                if t >= after:
                    stamps.append(t)
        return max(stamps)

    def check_degraded(self, procs: list[str], t_fault: float, label: str,
                       before: Optional[float] = None) -> None:
        """7.2 as a condition and an ordering (its time bound is a figure of
        `minishard bench`): each of `procs` became degraded after the fault,
        held no shard from then on, and — when `before` is given (the other
        side's first claim) — had done so before it."""
        for p in procs:
            when = [t for (t, new) in self.health.get(p, []) if t >= t_fault and new == "degraded"]
            if not when:
                self.v(f"2 ({label}): {self.procs[p]} never became degraded after the fault at {t_fault:.0f}")
                continue
            if before is not None and when[0] > before:
                self.v(f"2 ({label}): {self.procs[p]} became degraded at +{when[0] - t_fault:.0f} ms, after the "
                       f"other side's first claim at +{before - t_fault:.0f} ms")
            # Degraded from when[0] until its health next changes: no shard
            # held at any instant of that (not only at its start).
            after = [t for (t, new) in self.health.get(p, []) if t > when[0] and new != "degraded"]
            lo, hi = when[0] + 1, (after[0] if after else float("inf"))
            for a in self.allocs:
                a_end = a.end if a.end is not None else float("inf")
                if a.proc == p and a.start < hi and a_end > lo:
                    self.v(f"2 ({label}): {self.procs[p]} holds shard {a.shard} while degraded "
                           f"(from {when[0]:.0f}; allocation [{a.start:.0f}, {a_end:.0f}))")


def _neg(s: str) -> tuple:
    # Ordering key where the smaller NodeId counts as "higher" in a max.
    return tuple(-ord(c) for c in s)
