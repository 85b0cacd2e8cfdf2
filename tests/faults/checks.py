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
    epoch: int                           # the epoch it was allocated at
    start: float
    end: Optional[float] = None          # None: still held
    how: str = "open"                    # deallocated | killed | exited | open
    winner: Optional[str] = None
    scores: list = field(default_factory=list)      # (t, score)
    prolonged: list = field(default_factory=list)   # (t, loser, epoch)
    raises: list = field(default_factory=list)      # (t, epoch): raised by a prolonged
    reason: Optional[str] = None                    # deallocated's reason

    @property
    def current(self) -> int:
        """The epoch it carries now (or carried last)."""
        return self.raises[-1][1] if self.raises else self.epoch

    def epoch_before(self, t: float) -> int:
        """The epoch it carried just before t."""
        return max([e for (rt, e) in self.raises if rt < t], default=self.epoch)

    @property
    def epochs(self) -> list[int]:
        return [self.epoch] + [e for (_, e) in self.raises]

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
        leaving: set[str] = set()
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
            elif e.event == "prolonged" and cur is not None and cur.shard == d.get("shard"):
                # The winner's epoch is raised above its loser's (6.3).
                if d.get("epoch", -1) < cur.current:
                    self.v(f"5: {e.node} prolonged against {d.get('loser')} at {e.t:.0f} with epoch "
                           f"{d.get('epoch')}, below its allocation's {cur.current}")
                    continue
                if d["epoch"] != cur.current:
                    cur.raises.append((e.t, d["epoch"]))
                cur.prolonged.append((e.t, d["loser"], d["epoch"]))
            elif e.event in ("score", "prolonged"):
                if cur is None or cur.shard != d.get("shard") or cur.current != d.get("epoch"):
                    self.v(f"4: {e.node} got `{e.event}` for shard {d.get('shard')} epoch {d.get('epoch')} at {e.t:.0f} "
                           f"while holding {cur.shard if cur else 'nothing'}")
                    continue
                cur.scores.append((e.t, d["score"]))
            elif e.event == "deallocated":
                if cur is None or cur.shard != d.get("shard") or cur.current != d.get("epoch"):
                    self.v(f"4: {e.node} deallocated shard {d.get('shard')} epoch {d.get('epoch')} at {e.t:.0f} "
                           f"without a matching allocated (holding {cur.shard if cur else 'nothing'})")
                    continue
                cur.end, cur.how, cur.winner = e.t, "deallocated", d.get("winner")
                cur.reason = d.get("reason")
                if e.proc in leaving and cur.reason not in ("left", "lost_conflict"):
                    self.v(f"4: {cur} ended while its node was leaving, with reason {cur.reason}: expected left")
                # Why it ended: only a lost conflict names a winner.
                if (cur.winner is not None) != (cur.reason == "lost_conflict"):
                    self.v(f"4: {cur} ended with reason {cur.reason} and winner {cur.winner}: "
                           f"a winner is named exactly when the reason is lost_conflict")
                del held[e.proc]
            elif e.event == "status":
                self.health.setdefault(e.proc, []).append((e.t, d["new"]))
            elif e.event == "peer_up":
                self.links.setdefault((e.proc, d["peer"]), []).append((e.t, True))
            elif e.event == "peer_down":
                self.links.setdefault((e.proc, d["peer"]), []).append((e.t, False))
            elif e.event == "leaving":
                leaving.add(e.proc)
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

    def check_requests(self, quiet_since: Optional[float] = None,
                       quiet_until: Optional[float] = None) -> None:
        """7.10 with every node sending requests (`--request-load-ms`):
        each request ends exactly once (a node that left gracefully printed
        how many it sent: each of them ended); a reply comes from a node
        that held the shard at that epoch while the request was on its way;
        and every request sent after `quiet_since` (faults over, cluster
        converged) and before `quiet_until` (when the nodes began to be
        stopped: a request sent then may meet its owner's leave) succeeded."""
        ended: dict[str, dict[int, list[Ev]]] = {}
        issued: dict[str, int] = {}
        for e in self.events:
            if e.event in ("reply", "request_failed"):
                ended.setdefault(e.proc, {}).setdefault(e.data["id"], []).append(e)
            elif e.event == "requests":
                issued[e.proc] = e.data["issued"]
        for proc, by_id in ended.items():
            for rid, evs in by_id.items():
                if len(evs) > 1:
                    self.v(f"10: {proc}'s request {rid} ended {len(evs)} times: "
                           + ", ".join(e.event for e in evs))
        for proc, n in issued.items():
            missing = [i for i in range(1, n + 1) if i not in ended.get(proc, {})]
            if missing:
                self.v(f"10: {len(missing)} of the {n} requests {proc} sent never ended "
                       f"(first ids {missing[:5]})")
        for proc, by_id in ended.items():
            for evs in by_id.values():
                e = evs[0]
                if e.event != "reply":
                    continue
                owner, shard, epoch, sent = e.data["owner"], e.data["shard"], e.data["epoch"], e.data["sent"]
                # A won conflict raises an allocation's epoch (6.3); its
                # replies carry the raised one from the moment the core
                # raised it, which its `prolonged` line follows.
                held = any(a.node == owner and a.shard == shard and epoch in a.epochs and a.start <= e.t
                           and (a.end is None or a.end >= sent) for a in self.allocs)
                if not held:
                    self.v(f"10: {proc}'s request {e.data['id']} for shard {shard} was answered by {owner} "
                           f"at epoch {epoch}, which did not hold it then (sent {sent:.0f}, answered {e.t:.0f})")
        if quiet_since is not None:
            # A request cut short because its own node was being stopped
            # (`closed`: the handle left) is no failure of the cluster.
            leaving = {e.proc for e in self.events if e.event == "leaving"}
            late = [e for by_id in ended.values() for evs in by_id.values() for e in evs
                    if e.event == "request_failed" and e.data["sent"] >= quiet_since
                    and (quiet_until is None or e.data["sent"] < quiet_until)
                    and not (e.data.get("error") == "closed" and e.proc in leaving)]
            for e in late[:5]:
                self.v(f"10: after the faults stopped, {e.proc}'s request {e.data['id']} for shard "
                       f"{e.data['shard']} failed: {e.data.get('error')} ({e.data.get('message')})")

    def requests_since(self, proc: str, since: float) -> int:
        """Replies `proc` got to requests it sent from `since` on."""
        return sum(1 for e in self.events
                   if e.proc == proc and e.event == "reply" and e.data["sent"] >= since)

    def check_epochs(self) -> None:
        """7.5: per node process, per shard, successive epochs only grow."""
        last: dict[tuple[str, int], Alloc] = {}
        for a in sorted(self.allocs, key=lambda a: a.start):
            prev = last.get((a.proc, a.shard))
            if prev is not None and a.epoch <= prev.current:
                self.v(f"5: {a.node} allocated shard {a.shard} with epoch {a.epoch} at {a.start:.0f}, "
                       f"not above its earlier epoch {prev.current}")
            last[(a.proc, a.shard)] = a

    def check_epochs_unique(self) -> None:
        """7.5: no epoch is issued twice for a shard anywhere in the cluster,
        even by two sides of a split into two (docs/design.md 2)."""
        first: dict[tuple[int, int], Alloc] = {}
        for a in sorted(self.allocs, key=lambda a: a.start):
            for epoch in a.epochs:
                other = first.setdefault((a.shard, epoch), a)
                if other is not a:
                    self.v(f"5: shard {a.shard} epoch {epoch} issued twice: by {other.node} at {other.start:.0f} "
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
                # Not b itself: an allocation that ends within the
                # millisecond it started (a claim finished as its node left).
                before = [a for a in allocs if a is not b and a.end is not None and a.end <= b.start]
                if not before:
                    continue
                top = max(before, key=lambda a: a.current)
                if b.epoch <= top.current:
                    self.v(f"5: shard {shard}: {b.node} allocated epoch {b.epoch} at {b.start:.0f}, after "
                           f"{top.node}'s epoch {top.current} ended at {top.end:.0f}: successive epochs must grow")

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
            # Fencing: a store that took the loser's writes takes the winner's.
            if pro and pro[0][2] <= a.current:
                self.v(f"5: winner {w} kept epoch {pro[0][2]} against {a.node}'s {a.current}: "
                       f"a winner's epoch is raised above its loser's")
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
            w_epoch = w.epoch_before(pro[0][0]) if pro else w.current
            key_w = (wscore, -w_epoch, _neg(w.node))
            key_l = (lscore, -a.current, _neg(a.node))
            if key_w < key_l:
                self.v(f"3: shard {a.shard}: {w.node} (score {wscore}, epoch {w_epoch}) beat {a.node} "
                       f"(score {lscore}, epoch {a.current}); the higher score (then older epoch, then smaller NodeId) must win")

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
