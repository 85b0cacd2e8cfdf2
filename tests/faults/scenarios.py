"""The named fault scenarios. Each builds its own cluster in the shared
namespace, applies its faults, waits on conditions with deadlines, and
records what it checks; `run` then checks the whole history."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from checks import History
from harness import DEFAULT, FAST, Cluster, EventLog, Namespace, Timing, now_ms

# A SIGTERM hand-over is "immediate": the next owner is allocated within
# this of the leaver's deallocated (node_grace would be the slow path).
HANDOVER_MS = 250


class Ctx:
    """One scenario's cluster, log and the checks it adds."""

    def __init__(self, ns: Namespace, logdir: Path, binary: Optional[Path]):
        self.ns, self.logdir, self.binary = ns, logdir, binary
        self.log = EventLog()
        self.cluster: Optional[Cluster] = None
        self.timing: Timing = FAST
        self.shards = 0
        self.final: list[Callable[[History], None]] = []
        self.violations: list[str] = []
        self.notes: list[str] = []
        self.t_begin = now_ms()

    def start(self, n: int, shards: int, timing: Timing, scores: Optional[list[str]] = None,
              proxy: bool = False) -> Cluster:
        self.timing, self.shards = timing, shards
        self.cluster = Cluster(self.ns, self.log, n, shards, timing, scores=scores, proxy=proxy,
                               logdir=self.logdir, binary=self.binary)
        self.cluster.start_all()
        t0 = self.log.mark("started")
        self.converge(t0, "cold start", timeout_s=20, check_bound=False)
        return self.cluster

    # -- views

    def history(self) -> History:
        return History(self.log.snapshot(), self._stopped())

    def _stopped(self) -> dict:
        out = {}
        if self.cluster:
            for n in self.cluster.nodes:
                out.update(n.stopped_how)
        return out

    def procs(self, idx: Optional[list[int]] = None) -> list[str]:
        assert self.cluster
        idx = idx if idx is not None else [n.index for n in self.cluster.nodes if n.running()]
        return [self.cluster.nodes[i].proc_id for i in idx]

    def owner_of(self, shard: int) -> Optional[int]:
        """Index of the node holding `shard` now (ground truth from events)."""
        assert self.cluster
        h = self.history()
        hs = h.holders(shard, now_ms() + 1e6)
        if len(hs) != 1:
            return None
        return next(n.index for n in self.cluster.nodes if n.addr == hs[0].node)

    def owners(self) -> dict[int, int]:
        return {s: self.owner_of(s) for s in range(self.shards)}

    def standbys(self) -> list[int]:
        held = set(self.owners().values())
        assert self.cluster
        return [n.index for n in self.cluster.nodes if n.running() and n.index not in held]

    # -- waits and checks

    def wait(self, what: str, timeout_s: float, cond: Callable[[History], bool],
             state: Optional[Callable[[History], str]] = None) -> float:
        deadline = time.monotonic() + timeout_s
        while True:
            if cond(self.history()):
                return now_ms()
            if time.monotonic() > deadline:
                found = f"\n    found: {state(self.history())}" if state else ""
                raise AssertionError(f"timed out after {timeout_s:.1f}s waiting for: {what}{found}")
            time.sleep(0.05)

    def converge(self, t0: float, label: str, idx: Optional[list[int]] = None,
                 timeout_s: float = 15, check_bound: bool = True, from_connect: bool = True) -> float:
        """Waits until the group (default: every running node) converges
        after t0, and checks 7.1: within heartbeat_timeout + node_grace +
        100 ms of being mutually connected (or of t0)."""
        procs = self.procs(idx)
        self.wait(f"{label}: {len(procs)} nodes available with one owner per shard", timeout_s,
                  lambda h: h.converged_at(procs, self.shards, t0) is not None
                  and h.connected_since(procs, t0) is not None,
                  lambda h: h.group_state(procs, self.shards))
        h = self.history()
        t_conv = h.converged_at(procs, self.shards, t0)
        t_conn = h.connected_since(procs, t0) if from_connect else t0
        assert t_conv is not None and t_conn is not None
        took = max(0.0, t_conv - t_conn)
        self.notes.append(f"{label}: converged {t_conv - t0:.0f} ms after t0"
                          + (f", {took:.0f} ms after the group was connected again" if from_connect else ""))
        if check_bound and took > self.timing.converge_ms:
            self.violations.append(
                f"1 ({label}): converged {took:.0f} ms after the group was connected again; "
                f"bound is heartbeat_timeout + node_grace + 100 = {self.timing.converge_ms} ms")
        return t_conv

    def hold(self, ms: float) -> tuple[float, float]:
        """Keeps the present faults for `ms` (part of the scenario's script)."""
        t0 = now_ms()
        time.sleep(ms / 1000.0)
        return t0, now_ms()

    def check_no_moves(self, since: float, until: float, label: str, deallocs: bool = True) -> None:
        h = self.history()
        for a in h.moves(since, until):
            self.violations.append(f"7 ({label}): {a.node} allocated shard {a.shard} at "
                                   f"+{a.start - since:.0f} ms; nothing may move")
        for a in (h.deallocs(since, until) if deallocs else []):
            self.violations.append(f"7 ({label}): {a.node} deallocated shard {a.shard} at "
                                   f"+{a.end - since:.0f} ms (winner {a.winner}); nothing may move")

    def check_not_degraded(self, since: float, until: float, label: str) -> None:
        for proc, t in self.history().degraded_in(since, until):
            self.violations.append(f"({label}): {proc} became degraded at +{t - since:.0f} ms")

    def check_moves_at_most_once(self, since: float, until: float, label: str) -> None:
        per: dict[int, list] = {}
        for a in self.history().moves(since, until):
            per.setdefault(a.shard, []).append(a)
        for shard, allocs in per.items():
            if len(allocs) > 1:
                self.violations.append(f"7 ({label}): shard {shard} moved {len(allocs)} times while the partition "
                                       f"stood: " + ", ".join(f"{a.node}@+{a.start - since:.0f}" for a in allocs))


# ------------------------------------------------------------------ scenarios

SCENARIOS: dict[str, tuple[str, Callable[[Ctx], None]]] = {}
# Run only when named (--only): each reproduces an engine problem that is
# reported and not fixed yet; moved to the default list once it passes.
ENGINE_REPROS: set[str] = set()


def scenario(name: str, what: str, default: bool = True):
    def register(fn: Callable[[Ctx], None]):
        SCENARIOS[name] = (what, fn)
        if not default:
            ENGINE_REPROS.add(name)
        return fn
    return register


@scenario("split_3_2", "5 nodes / 3 shards split 3/2 and heal: the 2 side degrades before the 3 side takes its shards")
def split_3_2(ctx: Ctx) -> None:
    c = ctx.start(5, 3, FAST)
    owners = ctx.owners()
    # The small side gets two owners, so the big side must take two shards.
    minority = [owners[0], owners[1]]
    majority = [i for i in range(5) if i not in minority]
    t_cut = c.split(majority, minority)
    ctx.wait("small side degraded", 10, lambda h: all(h.health_at(p, now_ms()) == "degraded"
                                                      for p in ctx.procs(minority)))
    ctx.converge(t_cut, "big side during the split", idx=majority, from_connect=False)
    ctx.hold(2000)
    t_heal = c.heal()
    h = ctx.history()
    h.check_degraded(ctx.procs(minority), t_cut, ctx.timing, "small side")
    ctx.violations += h.violations
    ctx.check_moves_at_most_once(t_cut, t_heal, "3/2 split")
    ctx.converge(t_heal, "heal")
    ctx.hold(1000)
    ctx.check_no_moves(t_heal, now_ms(), "after the heal")
    ctx.final.append(lambda h: h.check_no_overlap(ctx.t_begin, ctx.t_stop, "6.5"))


@scenario("split_3_3_scores", "6 nodes / 2 shards split 3/3: both sides own both shards; the heal keeps the highest score")
def split_3_3_scores(ctx: Ctx) -> None:
    scores = [10, 60, 20, 50, 30, 40]
    c = ctx.start(6, 2, FAST, scores=[f"fixed:{s}" for s in scores])
    owners = ctx.owners()
    rest = [i for i in range(6) if i not in owners.values()]
    side_a = [owners[0]] + rest[:2]
    side_b = [owners[1]] + rest[2:]
    t_cut = c.split(side_a, side_b)
    ctx.converge(t_cut, "side A during the split", idx=side_a, from_connect=False)
    ctx.converge(t_cut, "side B during the split", idx=side_b, from_connect=False)
    ctx.hold(1500)
    h = ctx.history()
    at_heal = {s: [a for a in h.holders(s, now_ms() + 1e6)] for s in range(2)}
    t_heal = c.heal()
    ctx.check_moves_at_most_once(t_cut, t_heal, "3/3 split")
    for s, hs in at_heal.items():
        if len(hs) != 2:
            ctx.violations.append(f"shard {s} had {len(hs)} owners at the heal, expected one per side")
    ctx.converge(t_heal, "heal")
    ctx.hold(500)
    h = ctx.history()
    for s, hs in at_heal.items():
        if len(hs) != 2:
            continue
        # The same allocations, as the history now tells them.
        hs = [next(a for a in h.allocs if (a.proc, a.shard, a.epoch) == (x.proc, x.shard, x.epoch)) for x in hs]
        by_score = {c.nodes[i].addr: scores[i] for i in range(6)}
        best = max(hs, key=lambda a: (by_score[a.node], -a.epoch, tuple(-ord(ch) for ch in a.node)))
        now = h.holders(s, now_ms() + 1e6)
        if len(now) != 1 or now[0].node != best.node or now[0].epoch != best.epoch:
            ctx.violations.append(f"3: shard {s}: expected {best.node} (score {by_score[best.node]}) to keep it, "
                                  f"it is on {[str(a) for a in now]}")
        loser = next(a for a in hs if a is not best)
        if loser.how != "deallocated" or loser.winner != best.node:
            ctx.violations.append(f"3: shard {s}: loser {loser} should end with deallocated(winner={best.node})")
        pro = [p for p in best.prolonged if p[0] >= t_heal]
        if [p[1] for p in pro] != [loser.node]:
            ctx.violations.append(f"3: shard {s}: winner {best.node} got prolonged {pro}, expected exactly one for {loser.node}")
    ctx.check_no_moves(t_heal, now_ms(), "after the heal (no new allocation)", deallocs=False)
    ctx.notes.append(f"conflicts resolved: {h.conflicts()}")


@scenario("asymmetric", "A hears B, B does not hear A: nothing moves, nobody degrades; heal converges")
def asymmetric(ctx: Ctx) -> None:
    c = ctx.start(5, 3, FAST)
    owners = ctx.owners()
    a, b = owners[0], owners[1]
    t_cut = c.cut_oneway(a, b)   # what a sends is lost: b does not hear a
    _, t_end = ctx.hold(ctx.timing.hb_timeout + ctx.timing.grace + 1500)
    t_heal = c.heal()
    ctx.check_no_moves(t_cut, t_heal, "one-way cut")
    ctx.check_not_degraded(t_cut, t_heal, "one-way cut")
    ctx.converge(t_heal, "heal")
    ctx.check_no_moves(t_cut, now_ms(), "one-way cut and heal")


@scenario("partial_isolation", "a node cut from 2 of its 4 peers, which still see it: nothing moves, nobody degrades")
def partial_isolation(ctx: Ctx) -> None:
    c = ctx.start(5, 3, FAST)
    owners = ctx.owners()
    x = owners[2]
    others = [i for i in range(5) if i != x]
    t_cut = c.cut([x], others[:2])
    ctx.hold(ctx.timing.hb_timeout + ctx.timing.grace + 1500)
    t_heal = c.heal()
    ctx.check_no_moves(t_cut, t_heal, "partial isolation")
    ctx.check_not_degraded(t_cut, t_heal, "partial isolation")
    ctx.converge(t_heal, "heal")
    ctx.check_no_moves(t_cut, now_ms(), "partial isolation and heal")


def flap(ctx: Ctx, a: list[int], b: list[int], seconds: float = 10.0, period: float = 0.3) -> int:
    """Cuts every link between a and b, heals, every `period`, for `seconds`
    (the schedule is the scenario's definition, hence the sleeps)."""
    assert ctx.cluster
    flaps = 0
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        ctx.cluster.cut(a, b)
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
        ctx.cluster.heal()
        flaps += 1
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    return flaps


@scenario("flapping", "the link between two owners cut/healed every 300 ms for 10 s (default timings, within node_grace): nothing moves")
def flapping(ctx: Ctx) -> None:
    c = ctx.start(5, 3, DEFAULT)
    owners = ctx.owners()
    a, b = owners[0], owners[1]
    t0 = now_ms()
    flaps = flap(ctx, [a], [b])
    t_heal = c.heal()
    ctx.converge(t_heal, "after the flapping")
    ctx.check_no_moves(t0, now_ms(), f"{flaps} flaps")
    ctx.check_not_degraded(t0, now_ms(), f"{flaps} flaps")
    ctx.notes.append(f"{flaps} flaps of the link {c.nodes[a].addr} - {c.nodes[b].addr}")


@scenario("flapping_isolated", "every link of an owner cut/healed every 300 ms for 10 s: it redials within the "
          "transition timeout each time, so its shard stays and nobody degrades")
def flapping_isolated(ctx: Ctx) -> None:
    c = ctx.start(5, 3, DEFAULT)
    a = ctx.owners()[0]
    others = [i for i in range(5) if i != a]
    t0 = now_ms()
    flaps = flap(ctx, [a], others)
    t_heal = c.heal()
    ctx.converge(t_heal, "after the flapping")
    ctx.check_no_moves(t0, now_ms(), f"{flaps} flaps")
    ctx.check_not_degraded(t0, now_ms(), f"{flaps} flaps")
    ctx.notes.append(f"{flaps} flaps of every link of {c.nodes[a].addr}")


@scenario("loss_and_delay", "20% loss on every link, then 50 +/- 20 ms delay through the proxy: no shard moves, nobody degrades")
def loss_and_delay(ctx: Ctx) -> None:
    c = ctx.start(5, 3, DEFAULT, proxy=True)
    t0 = c.loss(0.2)
    ctx.hold(10000)
    c.heal()
    c.delay(50, 20)
    ctx.hold(8000)
    t_heal = c.heal()
    ctx.converge(t_heal, "after loss and delay")
    ctx.check_no_moves(t0, now_ms(), "loss then delay")
    ctx.check_not_degraded(t0, now_ms(), "loss then delay")
    downs = sum(1 for e in ctx.log.snapshot() if e.event == "peer_down" and e.t >= t0)
    ctx.notes.append(f"{downs} peer_down during loss and delay; proxy carried {c.proxy.connections} connections")
    ctx.final.append(lambda h: h.check_epochs_global())


@scenario("kill9_restart", "kill -9 of an owner (fails over after the grace) and of a standby (nothing moves); restarts with new incarnations")
def kill9_restart(ctx: Ctx) -> None:
    c = ctx.start(5, 3, FAST)
    t = ctx.timing
    # An owner dies: its shard moves after heartbeat_timeout + node_grace at most.
    o = ctx.owners()[0]
    t_kill = c.kill9(o)
    ctx.wait("shard 0 failed over", 10, lambda h: any(a.shard == 0 and a.start > t_kill for a in h.allocs))
    h = ctx.history()
    new = next(a for a in h.allocs if a.shard == 0 and a.start > t_kill)
    took = new.start - t_kill
    ctx.notes.append(f"owner kill -9: shard 0 on {new.node} after {took:.0f} ms")
    if took > t.converge_ms:
        ctx.violations.append(f"1: failover took {took:.0f} ms; bound {t.converge_ms} ms")
    if took < t.grace - 50:
        ctx.violations.append(f"6.1: shard 0 moved {took:.0f} ms after its owner died, before node_grace ({t.grace} ms)")
    ctx.converge(t_kill, "failover", from_connect=False)
    t_start = now_ms()
    c.start(o)
    ctx.converge(t_start, "restarted owner rejoins")
    ctx.check_no_moves(t_start, now_ms(), "restart after failover")
    # A standby dies: nothing moves, before or after its restart.
    s = ctx.standbys()[0]
    t_kill = c.kill9(s)
    ctx.hold(t.hb_timeout + t.grace + 500)
    t_start = now_ms()
    c.start(s)
    ctx.converge(t_start, "restarted standby rejoins")
    ctx.check_no_moves(t_kill, now_ms(), "standby kill -9 and restart")
    # An owner dies and comes back at once with a new incarnation: its old
    # allocation is void at once, nobody waits for the grace.
    o = ctx.owners()[1]
    t_kill = c.kill9(o)
    c.start(o)
    ctx.wait("shard 1 reallocated", 10, lambda h: any(a.shard == 1 and a.start > t_kill for a in h.allocs))
    new = next(a for a in ctx.history().allocs if a.shard == 1 and a.start > t_kill)
    took = new.start - t_kill
    ctx.notes.append(f"owner kill -9 + immediate restart: shard 1 on {new.node} after {took:.0f} ms")
    if took >= t.grace:
        ctx.violations.append(f"6.1: after a restart with a new incarnation shard 1 waited {took:.0f} ms "
                              f"(>= node_grace {t.grace} ms); the old allocation must be void at once")
    ctx.converge(t_kill, "restart within the grace", from_connect=False)
    ctx.final.append(lambda h: h.check_no_overlap(ctx.t_begin, ctx.t_stop, "kill -9"))
    ctx.final.append(lambda h: h.check_epochs_global())


@scenario("rolling_restart", "SIGTERM every node in turn and restart it: each hand-over is immediate, no shard is ownerless longer")
def rolling_restart(ctx: Ctx) -> None:
    c = ctx.start(5, 3, FAST)
    t_roll = now_ms()
    handovers = []
    for i in range(5):
        held = [s for s, o in ctx.owners().items() if o == i]
        t_term = c.term(i)
        if held:
            s = held[0]
            ctx.wait(f"shard {s} handed over", 5, lambda h: any(a.shard == s and a.start > t_term for a in h.allocs))
            h = ctx.history()
            gone = next(a for a in h.allocs if a.shard == s and a.node == c.nodes[i].addr and a.end and a.end >= t_term)
            new = next(a for a in h.allocs if a.shard == s and a.start > t_term)
            handovers.append(new.start - gone.end)
            if new.start - gone.end > HANDOVER_MS:
                ctx.violations.append(f"6.4: shard {s} handed over {new.start - gone.end:.0f} ms after "
                                      f"{gone.node} let it go; a leave hands over at once (bound {HANDOVER_MS} ms)")
        t_start = now_ms()
        c.start(i)
        ctx.converge(t_start, f"node {i} back")
    t_end = now_ms()
    ctx.notes.append("hand-overs (ms): " + ", ".join(f"{x:.0f}" for x in handovers))

    def ownerless(h: History) -> None:
        for s in range(ctx.shards):
            allocs = sorted((a for a in h.allocs if a.shard == s), key=lambda a: a.start)
            covered_to = None
            for a in allocs:
                if covered_to is not None and a.start > covered_to and t_roll <= covered_to < t_end:
                    gap = a.start - covered_to
                    if gap > HANDOVER_MS:
                        h.v(f"rolling restart: shard {s} had no owner for {gap:.0f} ms from {covered_to:.0f}")
                end = a.end if a.end is not None else float("inf")
                covered_to = end if covered_to is None else max(covered_to, end)

    ctx.final.append(ownerless)
    ctx.final.append(lambda h: h.check_no_overlap(ctx.t_begin, ctx.t_stop, "rolling restart"))
    ctx.final.append(lambda h: h.check_epochs_global())
