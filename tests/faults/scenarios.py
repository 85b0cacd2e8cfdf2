"""The named fault scenarios. Each builds its own cluster in the shared
namespace, applies its faults, waits on conditions with deadlines, and
records what it checks; `run` then checks the whole history."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from checks import History
from harness import DEFAULT, FAST, Cluster, EventLog, Namespace, Timing, now_ms

# FAST with a node_grace far longer than any wait of the scenarios using it:
# a shard that moves within such a wait moved without waiting for a grace
# (a hand-over, a restart's void claim) — a condition, not a stopwatch.
LONG_GRACE = Timing(hb_interval=50, hb_timeout=250, transition=500, grace=30000, settle=20)


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
        # Set once the scenario's faults are over and its cluster has
        # converged again: every request sent from then on must succeed,
        # until `t_quiet_end`, when the harness starts stopping the nodes
        # (a request sent then may meet its owner's leave: `uncertain`).
        self.t_quiet: Optional[float] = None
        self.t_quiet_end: Optional[float] = None

    def start(self, n: int, shards: int, timing: Timing, scores: Optional[list[str]] = None,
              proxy: bool = False, quorum: Optional[str] = None, handler: str = "echo") -> Cluster:
        self.timing, self.shards = timing, shards
        self.cluster = Cluster(self.ns, self.log, n, shards, timing, scores=scores, proxy=proxy,
                               logdir=self.logdir, binary=self.binary, quorum=quorum, handler=handler)
        self.cluster.start_all()
        t0 = self.log.mark("started")
        self.converge(t0, "cold start", timeout_s=20)
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
                 timeout_s: float = 15, from_connect: bool = True) -> float:
        """Waits until the group (default: every running node) converges
        after t0 (7.1 as a condition; how long it took is a note here and a
        figure of `minishard bench`, never a limit)."""
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
        return t_conv

    def requests_after_faults(self) -> None:
        """At the end of a scenario: heals what is still cut, waits for the
        running nodes to converge, then for each of them to get replies to
        requests sent from then on (`check_requests` checks that none of
        those failed)."""
        c = self.cluster
        assert c
        running = [n.index for n in c.nodes if n.running()]
        if not running:
            return
        if c.rules or c.proxy:
            c.heal()
        t0 = now_ms()
        try:
            self.converge(t0, "after the faults", idx=running, timeout_s=15, from_connect=False)
        except AssertionError:
            self.notes.append("requests after the faults: not checked (the running nodes do not converge)")
            return
        t_quiet = now_ms() + 50
        procs = self.procs(running)
        self.wait("replies to requests sent after the faults", 10,
                  lambda h: all(h.requests_since(p, t_quiet) >= 5 for p in procs))
        self.t_quiet = t_quiet
        self.t_quiet_end = now_ms()

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

    def expect_drops(self, label: str, pairs: list[tuple[int, int]], note: bool = True) -> dict[tuple[int, int], int]:
        """The fault rules in force dropped packets in each direction (a, b)
        of `pairs`: the fault really took something away. Read before the
        heal (which resets the counters)."""
        assert self.cluster
        dropped = self.cluster.drops()
        for (a, b) in pairs:
            if dropped.get((a, b), 0) == 0:
                self.violations.append(f"({label}): the fault rules on {self.cluster.nodes[a].addr} -> "
                                       f"{self.cluster.nodes[b].addr} dropped no packet: the fault did nothing")
        if note:
            self.notes.append(f"{label}: {sum(dropped.values())} packets dropped by the fault rules")
        return dropped

    def expect_link_dropped(self, pairs: list[tuple[int, int]], since: float, until: float, label: str,
                            stays_down: bool = True) -> None:
        """Each link of `pairs` dropped in [since, until) as the nodes saw it
        (peer_down), and with `stays_down` stayed down until `until`."""
        assert self.cluster
        h = self.history()
        for (a, b) in pairs:
            h.check_link_dropped(self.cluster.nodes[a].addr, self.cluster.nodes[b].addr, since, until, label,
                                 stays_down=stays_down)
        self.violations += h.violations

    def expect_link_kept(self, pairs: list[tuple[int, int]], since: float, until: float, label: str) -> None:
        """No link of `pairs` dropped in [since, until)."""
        assert self.cluster
        h = self.history()
        for (a, b) in pairs:
            A, B = self.cluster.nodes[a].addr, self.cluster.nodes[b].addr
            downs = [(t, p) for (t, p, up) in h.link_events(A, B, since, until) if not up]
            if downs:
                self.violations.append(f"({label}): the link {A} - {B}, never cut, dropped at "
                                       f"+{downs[0][0] - since:.0f} ms ({downs[0][1]})")

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
    ctx.expect_drops("3/2 split", [(a, b) for a in majority for b in minority] +
                     [(b, a) for a in majority for b in minority])
    t_heal = c.heal()
    ctx.expect_link_dropped([(a, b) for a in majority for b in minority], t_cut, t_heal, "3/2 split")
    h = ctx.history()
    big = {c.nodes[i].addr for i in majority}
    first_claim = min((a.start for a in h.moves(t_cut, t_heal, big)), default=None)
    if first_claim is None:
        ctx.violations.append("3/2 split: the big side never took the small side's shards")
    # 6.5 as an ordering: the small side was degraded (holding nothing)
    # before the big side took the first of its shards.
    h.check_degraded(ctx.procs(minority), t_cut, "small side", before=first_claim)
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


@scenario("majority_3_3", "strict mode, 6 nodes / 2 shards split 3/3: neither side has a majority, both "
          "degrade and hold nothing, nobody claims; the heal converges; never two owners")
def majority_3_3(ctx: Ctx) -> None:
    c = ctx.start(6, 2, FAST, quorum="majority")
    owners = ctx.owners()
    rest = [i for i in range(6) if i not in owners.values()]
    side_a = [owners[0]] + rest[:2]
    side_b = [owners[1]] + rest[2:]
    t_cut = c.split(side_a, side_b)
    everyone = ctx.procs()
    ctx.wait("both sides degraded, no shard held anywhere", 10,
             lambda h: all(h.health_at(p, now_ms()) == "degraded" for p in everyone)
             and all(not h.holders(s, now_ms() + 1e6) for s in range(2)),
             lambda h: f"{[(p, h.health_at(p, now_ms())) for p in everyone]}, "
                       f"holders {[[str(a) for a in h.holders(s, now_ms() + 1e6)] for s in range(2)]}")
    # Past both sides' grace and a claim's proposal window, three times over.
    ctx.hold(3 * (ctx.timing.grace + 2 * ctx.timing.hb_timeout))
    ctx.expect_drops("3/3 split", [(a, b) for a in side_a for b in side_b] +
                     [(b, a) for a in side_a for b in side_b])
    t_heal = c.heal()
    h = ctx.history()
    h.check_degraded(ctx.procs(side_a) + ctx.procs(side_b), t_cut, "3/3 split in strict mode")
    ctx.violations += h.violations
    ctx.check_no_moves(t_cut, t_heal, "3/3 split in strict mode: nobody may claim", deallocs=False)
    released = [a for a in h.deallocs(t_cut, t_heal)]
    if sorted(a.shard for a in released) != [0, 1]:
        ctx.violations.append(f"3/3 split in strict mode: expected both owners to give their shard up, "
                              f"got {[str(a) for a in released]}")
    ctx.converge(t_heal, "heal")
    ctx.final.append(lambda h: h.check_no_overlap(ctx.t_begin, ctx.t_stop, "7.11 (strict mode)"))


@scenario("majority_4_2", "strict mode, 6 nodes / 2 shards split 4/2 with an owner on each side: the 2 side "
          "degrades before the 4 side takes its shard; the 4 side keeps both; never two owners")
def majority_4_2(ctx: Ctx) -> None:
    c = ctx.start(6, 2, FAST, quorum="majority")
    owners = ctx.owners()
    rest = [i for i in range(6) if i not in owners.values()]
    # Shard 1's owner and one standby on the small side: the big side keeps
    # shard 0 and must take shard 1.
    small = [owners[1], rest[0]]
    big = [i for i in range(6) if i not in small]
    t_cut = c.split(big, small)
    ctx.wait("small side degraded", 10, lambda h: all(h.health_at(p, now_ms()) == "degraded"
                                                      for p in ctx.procs(small)))
    ctx.converge(t_cut, "big side during the split", idx=big, from_connect=False)
    ctx.hold(2000)
    ctx.expect_drops("4/2 split", [(a, b) for a in big for b in small] +
                     [(b, a) for a in big for b in small])
    t_heal = c.heal()
    h = ctx.history()
    big_addrs = {c.nodes[i].addr for i in big}
    taken = list(h.moves(t_cut, t_heal, big_addrs))
    if [a.shard for a in taken] != [1]:
        ctx.violations.append(f"4/2 split in strict mode: the big side should take shard 1 once and keep "
                              f"shard 0, it allocated {[str(a) for a in taken]}")
    h.check_degraded(ctx.procs(small), t_cut, "small side", before=min((a.start for a in taken), default=None))
    ctx.violations += h.violations
    small_addrs = {c.nodes[i].addr for i in small}
    for a in h.moves(t_cut, t_heal, small_addrs):
        ctx.violations.append(f"4/2 split in strict mode: {a} on the small side")
    ctx.converge(t_heal, "heal")
    ctx.hold(1000)
    ctx.check_no_moves(t_heal, now_ms(), "after the heal")
    ctx.final.append(lambda h: h.check_no_overlap(ctx.t_begin, ctx.t_stop, "7.11 (strict mode)"))


@scenario("asymmetric", "A hears B, B does not hear A: the link drops and stays down, nothing moves, nobody degrades; heal converges")
def asymmetric(ctx: Ctx) -> None:
    c = ctx.start(5, 3, FAST)
    owners = ctx.owners()
    a, b = owners[0], owners[1]
    t_cut = c.cut_oneway(a, b)   # what a sends is lost: b does not hear a
    ctx.hold(ctx.timing.hb_timeout + ctx.timing.grace + 1500)
    ctx.expect_drops("one-way cut", [(a, b)])
    t_heal = c.heal()
    # A one-way cut still ends the connection (b hears no heartbeat) and
    # keeps it from coming back (a's SYN or b's SYN-ACK is lost).
    ctx.expect_link_dropped([(a, b)], t_cut, t_heal, "one-way cut")
    ctx.check_no_moves(t_cut, t_heal, "one-way cut")
    ctx.check_not_degraded(t_cut, t_heal, "one-way cut")
    ctx.converge(t_heal, "heal")
    ctx.check_no_moves(t_cut, now_ms(), "one-way cut and heal")


@scenario("partial_isolation", "a node cut from 2 of its 4 peers, which still see it: those links drop, nothing moves, nobody degrades")
def partial_isolation(ctx: Ctx) -> None:
    c = ctx.start(5, 3, FAST)
    owners = ctx.owners()
    x = owners[2]
    others = [i for i in range(5) if i != x]
    t_cut = c.cut([x], others[:2])
    ctx.hold(ctx.timing.hb_timeout + ctx.timing.grace + 1500)
    ctx.expect_drops("partial isolation", [(x, o) for o in others[:2]] + [(o, x) for o in others[:2]])
    t_heal = c.heal()
    ctx.expect_link_dropped([(x, o) for o in others[:2]], t_cut, t_heal, "partial isolation")
    ctx.expect_link_kept([(x, o) for o in others[2:]], t_cut, t_heal, "partial isolation")
    ctx.check_no_moves(t_cut, t_heal, "partial isolation")
    ctx.check_not_degraded(t_cut, t_heal, "partial isolation")
    ctx.converge(t_heal, "heal")
    ctx.check_no_moves(t_cut, now_ms(), "partial isolation and heal")


def flap(ctx: Ctx, a: list[int], b: list[int], seconds: float, cut_ms: float,
         heal_ms: float) -> list[tuple[float, float]]:
    """Cuts every link between a and b for `cut_ms`, heals for `heal_ms`,
    for `seconds` (the schedule is the scenario's definition, hence the
    sleeps). Returns each cut's (start, heal) times."""
    assert ctx.cluster
    windows = []
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        t_cut = ctx.cluster.cut(a, b)
        next_at += cut_ms / 1000.0
        time.sleep(max(0.0, next_at - time.monotonic()))
        ctx.expect_drops(f"flap {len(windows) + 1}", [(x, y) for x in a for y in b] + [(y, x) for x in a for y in b],
                         note=False)
        windows.append((t_cut, ctx.cluster.heal()))
        next_at += heal_ms / 1000.0
        time.sleep(max(0.0, next_at - time.monotonic()))
    return windows


def check_flaps(ctx: Ctx, windows: list[tuple[float, float]], pairs: list[tuple[int, int]], label: str) -> None:
    """Each cut of a link that was up when it began dropped it (a flap
    longer than heartbeat_timeout is a real drop, not a pause), and the link
    was up again at the start of most cuts (the heals were long enough to
    reconnect, so the link really flapped)."""
    assert ctx.cluster
    h = ctx.history()
    up_at_cut = 0
    for n, (t_cut, t_heal) in enumerate(windows, 1):
        for (x, y) in pairs:
            X, Y = ctx.cluster.nodes[x], ctx.cluster.nodes[y]
            if not (h.link_up(X.proc_id, Y.addr, t_cut) or h.link_up(Y.proc_id, X.addr, t_cut)):
                continue
            up_at_cut += 1
            h.check_link_dropped(X.addr, Y.addr, t_cut, t_heal, f"{label}, flap {n}", stays_down=False)
    ctx.violations += h.violations
    if up_at_cut * 2 < len(windows) * len(pairs):
        ctx.violations.append(f"({label}): links were up at only {up_at_cut} of {len(windows) * len(pairs)} cuts: "
                              f"the heals were too short to reconnect, so the links did not flap")
    ctx.notes.append(f"{label}: {len(windows)} flaps of {len(pairs)} link(s), {up_at_cut} drops checked")


# A flap is a real drop: cut longer than heartbeat_timeout (DEFAULT: 500
# ms), still far shorter than node_grace (1500 ms); the heal leaves time to
# redial (a connect lost to a cut is retried after heartbeat_timeout).
FLAP_CUT_MS = DEFAULT.hb_timeout + 2 * DEFAULT.hb_interval
FLAP_HEAL_MS = 3 * DEFAULT.hb_timeout


@scenario("flapping", f"the link between two owners cut for {FLAP_CUT_MS} ms (> heartbeat_timeout, < node_grace) "
          f"and healed for {FLAP_HEAL_MS} ms, for 12 s: each cut drops the link, nothing moves")
def flapping(ctx: Ctx) -> None:
    c = ctx.start(5, 3, DEFAULT)
    owners = ctx.owners()
    a, b = owners[0], owners[1]
    t0 = now_ms()
    windows = flap(ctx, [a], [b], 12, FLAP_CUT_MS, FLAP_HEAL_MS)
    t_heal = c.heal()
    check_flaps(ctx, windows, [(a, b)], "flapping")
    ctx.converge(t_heal, "after the flapping")
    ctx.check_no_moves(t0, now_ms(), f"{len(windows)} flaps")
    ctx.check_not_degraded(t0, now_ms(), f"{len(windows)} flaps")


@scenario("flapping_isolated", f"every link of an owner cut for {FLAP_CUT_MS} ms and healed for {FLAP_HEAL_MS} ms, "
          "for 12 s: each cut drops its links, it redials within the transition timeout each time, so its shard "
          "stays and nobody degrades")
def flapping_isolated(ctx: Ctx) -> None:
    c = ctx.start(5, 3, DEFAULT)
    a = ctx.owners()[0]
    others = [i for i in range(5) if i != a]
    t0 = now_ms()
    windows = flap(ctx, [a], others, 12, FLAP_CUT_MS, FLAP_HEAL_MS)
    t_heal = c.heal()
    check_flaps(ctx, windows, [(a, o) for o in others], "flapping isolated")
    ctx.converge(t_heal, "after the flapping")
    ctx.check_no_moves(t0, now_ms(), f"{len(windows)} flaps")
    ctx.check_not_degraded(t0, now_ms(), f"{len(windows)} flaps")


@scenario("loss_and_delay", "20% loss on every link (every direction loses packets), then 50 +/- 20 ms delay "
          "through the proxy: no shard moves, nobody degrades")
def loss_and_delay(ctx: Ctx) -> None:
    c = ctx.start(5, 3, DEFAULT, proxy=True)
    t0 = c.loss(0.2)
    ctx.hold(10000)
    ctx.expect_drops("20% loss", [(a, b) for a in range(5) for b in range(5) if a != b])
    c.heal()
    assert c.proxy
    held_before = c.proxy.delayed_chunks
    c.delay(50, 20)
    ctx.hold(8000)
    if c.proxy.delayed_chunks == held_before:
        ctx.violations.append("(delay): the proxy held back no chunk: the delay did nothing")
    ctx.notes.append(f"delay: the proxy held back {c.proxy.delayed_chunks - held_before} chunks")
    t_heal = c.heal()
    ctx.converge(t_heal, "after loss and delay")
    ctx.check_no_moves(t0, now_ms(), "loss then delay")
    ctx.check_not_degraded(t0, now_ms(), "loss then delay")
    downs = sum(1 for e in ctx.log.snapshot() if e.event == "peer_down" and e.t >= t0)
    ctx.notes.append(f"{downs} peer_down during loss and delay; proxy carried {c.proxy.connections} connections")
    ctx.final.append(lambda h: h.check_epochs_global())


@scenario("kill9_restart", "kill -9 of an owner (fails over, not before the grace) and of a standby (nothing moves); "
          "restarts with new incarnations")
def kill9_restart(ctx: Ctx) -> None:
    c = ctx.start(5, 3, FAST)
    t = ctx.timing
    # An owner dies: its shard stays reserved for the grace, then moves.
    o = ctx.owners()[0]
    t_kill = c.kill9(o)
    ctx.wait("shard 0 failed over", 10, lambda h: any(a.shard == 0 and a.start > t_kill for a in h.allocs))
    h = ctx.history()
    new = next(a for a in h.allocs if a.shard == 0 and a.start > t_kill)
    took = new.start - t_kill
    ctx.notes.append(f"owner kill -9: shard 0 on {new.node} after {took:.0f} ms")
    # An ordering, not a stopwatch: the move comes after the grace (the
    # peers saw the connection close at once; 50 ms for the mark's own lag).
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
    ctx.final.append(lambda h: h.check_no_overlap(ctx.t_begin, ctx.t_stop, "kill -9"))
    ctx.final.append(lambda h: h.check_epochs_global())


@scenario("restart_new_incarnation", "kill -9 of an owner and an immediate restart, with a 30 s node_grace: the "
          "shard moves long before any grace could end, since a new incarnation voids the old claim at once")
def restart_new_incarnation(ctx: Ctx) -> None:
    c = ctx.start(5, 3, LONG_GRACE)
    o = ctx.owners()[1]
    t_kill = c.kill9(o)
    c.start(o)
    # Waiting for the grace would take 30 s: a third of it is the deadline.
    ctx.wait("shard 1 reallocated without waiting for the grace", LONG_GRACE.grace / 3000,
             lambda h: any(a.shard == 1 and a.start > t_kill for a in h.allocs))
    new = next(a for a in ctx.history().allocs if a.shard == 1 and a.start > t_kill)
    ctx.notes.append(f"owner kill -9 + immediate restart: shard 1 on {new.node} after {new.start - t_kill:.0f} ms")
    ctx.converge(t_kill, "restart within the grace", from_connect=False)
    ctx.final.append(lambda h: h.check_no_overlap(ctx.t_begin, ctx.t_stop, "kill -9 and restart"))
    ctx.final.append(lambda h: h.check_epochs_global())


@scenario("rolling_restart", "SIGTERM every node in turn and restart it, with a 30 s node_grace: each hand-over "
          "happens long before any grace could end")
def rolling_restart(ctx: Ctx) -> None:
    c = ctx.start(5, 3, LONG_GRACE)
    handovers = []
    for i in range(5):
        held = [s for s, o in ctx.owners().items() if o == i]
        t_term = c.term(i)
        if held:
            s = held[0]
            # A leave hands over at once (6.4); the slow path would wait
            # for the grace, three times this deadline.
            ctx.wait(f"shard {s} handed over", LONG_GRACE.grace / 3000,
                     lambda h: any(a.shard == s and a.start > t_term for a in h.allocs))
            h = ctx.history()
            gone = next(a for a in h.allocs if a.shard == s and a.node == c.nodes[i].addr and a.end and a.end >= t_term)
            new = next(a for a in h.allocs if a.shard == s and a.start > t_term)
            handovers.append(new.start - gone.end)
        t_start = now_ms()
        c.start(i)
        ctx.converge(t_start, f"node {i} back")
    ctx.notes.append("hand-overs (ms): " + ", ".join(f"{x:.0f}" for x in handovers))
    ctx.final.append(lambda h: h.check_no_overlap(ctx.t_begin, ctx.t_stop, "rolling restart"))
    ctx.final.append(lambda h: h.check_epochs_global())


@scenario("rolling_restart_kv", "with --handler kv: a key written to each owner just before its SIGTERM "
          "is read back from the next owner, and after the owner restarts and everyone else leaves in turn, "
          "still there (the store moves with the shard on every graceful leave)")
def rolling_restart_kv(ctx: Ctx) -> None:
    c = ctx.start(4, 2, LONG_GRACE, handler="kv")
    written: dict[int, str] = {}
    for i in range(4):
        held = [s for s, o in ctx.owners().items() if o == i]
        via = (i + 1) % 4
        for s in held:
            value = f"written-on-{c.nodes[i].addr}-before-its-sigterm"
            out = c.request(via, s, f"set before-leave-{i} {value}")
            assert out.get("reply") == "OK", f"set on shard {s} through node {via}: {out}"
            written[s] = written.get(s, "") + f" before-leave-{i}={value}"
        t_term = c.term(i)
        for s in held:
            ctx.wait(f"shard {s} handed over", LONG_GRACE.grace / 3000,
                     lambda h: any(a.shard == s and a.start > t_term for a in h.allocs))
        # Every key written so far, on every shard, reads back from its
        # owner now: each leave handed the store on.
        for s, pairs in written.items():
            for pair in pairs.split():
                key, value = pair.split("=", 1)
                out = c.request(via, s, f"get {key}")
                if out.get("reply") != value:
                    ctx.violations.append(f"after node {i} left, shard {s}'s {key} read {out}, not {value!r}")
        t_start = now_ms()
        c.start(i)
        ctx.converge(t_start, f"node {i} back")
    ctx.notes.append(f"keys read back after each leave: {sum(len(p.split()) for p in written.values())}")


@scenario("chain", "4 members / 2 shards, links S0-Ox-S1-Oy only (Ox, Oy the owners): every other link drops, "
          "and for 12 s each shard keeps exactly its one owner, nothing moves, health stays put")
def chain(ctx: Ctx) -> None:
    c = ctx.start(4, 2, FAST)
    owners = ctx.owners()
    ox, oy = owners[0], owners[1]
    s0, s1 = ctx.standbys()
    kept = [(s0, ox), (ox, s1), (s1, oy)]
    cuts = [(s0, s1), (s0, oy), (ox, oy)]
    names = {ox: "Ox", oy: "Oy", s0: "S0", s1: "S1"}
    ctx.notes.append("chain " + " - ".join(f"{names[i]}={c.nodes[i].addr}" for i in (s0, ox, s1, oy)))
    ctx.final.append(lambda h: h.check_no_overlap(ctx.t_begin, ctx.t_stop, "9 (chain)"))
    t_cut = c.cut_links(cuts)
    # docs/design.md 7.9: S0 reaches Oy through two hops, so Oy's shard is
    # reserved to it; no standby claims, no owner degrades.
    _, t_end = ctx.hold(12000)
    ctx.expect_drops("chain", cuts + [(b, a) for (a, b) in cuts])
    ctx.expect_link_dropped(cuts, t_cut, t_end, "chain")
    ctx.expect_link_kept(kept, t_cut, t_end, "chain")
    h = ctx.history()
    ctx.check_no_moves(t_cut, t_end, "chain")
    ctx.check_not_degraded(t_cut, t_end, "chain")
    # Spotting the cut may take each node to `transition` and back; more
    # changes than that is health flapping while the topology stands still.
    changes = h.health_changes(set(ctx.procs()), t_cut, t_end)
    for p in ctx.procs():
        mine = [(t, new) for (t, q, new) in changes if q == p]
        if len(mine) > 2:
            ctx.violations.append(f"7 (chain): {h.procs[p]} changed health {len(mine)} times in "
                                  f"{(t_end - t_cut) / 1000:.0f} s: " +
                                  ", ".join(f"{new}@+{t - t_cut:.0f}" for (t, new) in mine[:8]))
    state = h.group_state(ctx.procs(), 2)
    if h.converged_at(ctx.procs(), 2, t_cut) is None:
        ctx.violations.append(f"9 (chain): not one owner per shard and available everywhere after "
                              f"{(t_end - t_cut) / 1000:.0f} s: {state}")
    ctx.notes.append(f"chain at the end: {state}")
    t_heal = c.heal()
    ctx.converge(t_heal, "heal")
    ctx.check_no_moves(t_heal, now_ms(), "after the chain healed")


def member_removed_scenario(ctx: Ctx, own_list_updated: bool) -> None:
    """5 members / 2 shards; the owner x of shard 0 is dropped from the
    others' lists, then (if `own_list_updated`) from its own a while later.
    docs/design.md 6.6: they disconnect it at once and keep its shard reserved
    for node_grace; x releases (removed, or degraded for lack of peers);
    only then is the shard re-allocated; never two owners at once."""
    timing = Timing(hb_interval=50, hb_timeout=250, transition=500, grace=750, settle=20, member_poll=200)
    c = ctx.start(5, 2, timing)
    x = ctx.owners()[0]
    rest = [i for i in range(5) if i != x]
    X = c.nodes[x]
    new_list = [c.nodes[i].addr for i in rest]
    label = "6.6 (member removed, " + ("its own list updated)" if own_list_updated else "its own list stale)")
    # Checked over the whole run, also when a wait below times out.
    ctx.final.append(lambda h: h.check_no_overlap(ctx.t_begin, ctx.t_stop, label))
    t_removed = now_ms()
    for i in rest:
        c.set_members(i, new_list)
    ctx.wait("every other member read the list without x", 10,
             lambda h: all(any(e.proc == c.nodes[i].proc_id and e.event == "members" and e.t >= t_removed
                               and e.data.get("nodes") == new_list for e in h.events) for i in rest))
    if own_list_updated:
        # x's own list changes last, and a while after the others' (half a
        # grace: the others must keep its shard reserved meanwhile).
        ctx.hold(timing.grace / 2)
        c.set_members(x, new_list)
    ctx.wait(f"{X.addr} released shard 0", 10,
             lambda h: any(a.proc == X.proc_id and a.shard == 0 and a.end is not None for a in h.allocs),
             lambda h: h.group_state(ctx.procs(), 2))
    ctx.wait("shard 0 re-allocated on a remaining member", 15,
             lambda h: any(a.shard == 0 and a.proc != X.proc_id and a.start >= t_removed for a in h.allocs),
             lambda h: h.group_state(ctx.procs(rest), 2))
    t_conv = ctx.converge(t_removed, "the members left", idx=rest, from_connect=False)
    ctx.hold(1000)
    t_end = now_ms()
    h = ctx.history()
    released = next(a for a in h.allocs if a.proc == X.proc_id and a.shard == 0)
    taken = next(a for a in h.allocs if a.shard == 0 and a.proc != X.proc_id and a.start >= t_removed)
    ctx.notes.append(f"{label}: {X.addr} released shard 0 +{released.end - t_removed:.0f} ms after the others' lists "
                     f"changed; {taken.node} took it +{taken.start - t_removed:.0f} ms")
    if released.how != "deallocated" or released.winner is not None:
        ctx.violations.append(f"{label}: {released} should end with deallocated(no winner)")
    for a in h.allocs:
        if a.proc == X.proc_id and a.start > released.start:
            ctx.violations.append(f"{label}: removed {X.addr} allocated shard {a.shard} again at "
                                  f"+{a.start - t_removed:.0f} ms")
    # (t_conv is the re-allocation's own time, or a later health change.)
    ctx.check_no_moves(t_conv + 1, t_end, f"{label}, after the re-allocation")
    # Disconnected at once, existing connections too; with a stale list x
    # still claims to be a member, so it is refused from then on.
    ctx.expect_link_dropped([(x, i) for i in rest], t_removed, t_end, label, stays_down=not own_list_updated)
    if not own_list_updated:
        refused = {e.node for e in h.events if e.event == "refused" and e.t >= t_removed
                   and X.addr in str(e.data.get("peer", ""))}
        if not refused:
            ctx.violations.append(f"{label}: no member printed a refusal of {X.addr}, which still claims "
                                  f"to be a member")


@scenario("member_removed", "5 members / 2 shards: the owner of shard 0 is removed from every member list, its own "
          "last: it is disconnected, its shard is never held twice and moves once it has released it")
def member_removed(ctx: Ctx) -> None:
    member_removed_scenario(ctx, own_list_updated=True)


@scenario("member_removed_stale", "5 members / 2 shards: the owner of shard 0 is removed from every member list "
          "but its own: it is disconnected and refused, degrades and releases; its shard is never held twice")
def member_removed_stale(ctx: Ctx) -> None:
    member_removed_scenario(ctx, own_list_updated=False)
