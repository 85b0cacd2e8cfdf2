"""Chaos soak: random faults from the scenario list for a chosen time, then
heal, converge, and check every invariant over the whole history.

Last line: `faults=N allocations=A conflicts=C failovers=F violations=V`.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Optional

from checks import History
from harness import DEFAULT, Namespace, now_ms
from scenarios import FLAP_CUT_MS, FLAP_HEAL_MS, Ctx


def soak(ns: Namespace, root: Path, binary: Optional[Path], minutes: float, seed: Optional[int],
         n: int, shards: int) -> bool:
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    logdir = root / "soak"
    logdir.mkdir(parents=True, exist_ok=True)
    print(f"soak: {n} nodes / {shards} shards, default timings, {minutes:g} min, seed {seed}", flush=True)
    ctx = Ctx(ns, logdir, binary)
    faults = 0
    clean_splits: list[tuple[float, float, str]] = []   # windows where 6.5 must hold
    converge_times: list[float] = []
    errors: list[str] = []
    c = None
    try:
        c = ctx.start(n, shards, DEFAULT, proxy=True)
        t = ctx.timing
        end = time.monotonic() + minutes * 60
        step = 0
        while time.monotonic() < end:
            step += 1
            everyone = list(range(n))
            down: list[int] = []
            kind = rng.choice(["split", "split", "split3", "oneway", "partial", "loss", "flap",
                               "delay", "kill9", "kill9", "sigterm", "loss+kill9", "oneway+loss"])
            hold_ms = rng.uniform(500, 6000)
            clean = False
            if kind in ("split", "split3") and rng.random() < 0.5:
                # A clean split from a converged cluster: 6.5 is checked on it.
                ctx.converge(now_ms(), f"step {step}: before a clean split", timeout_s=30)
                clean = True
            faults += 1
            t_fault = now_ms()
            if clean_splits and clean_splits[-1][1] > t_fault:
                lo, _, w = clean_splits[-1]      # the next fault starts: its window ends
                clean_splits[-1] = (lo, t_fault, w)
            what = kind
            if kind == "split":
                k = rng.randint(1, n - 1)
                a = rng.sample(everyone, k)
                b = [i for i in everyone if i not in a]
                c.split(a, b)
                small = min(len(a), len(b))
                what = f"split {len(a)}/{len(b)}"
                clean = clean and small < shards
            elif kind == "split3":
                order = rng.sample(everyone, n)
                i, j = sorted(rng.sample(range(1, n), 2))
                groups = [order[:i], order[i:j], order[j:]]
                c.split(*groups)
                what = "split " + "/".join(str(len(g)) for g in groups)
                clean = clean and sum(1 for g in groups if len(g) >= shards) <= 1
            elif kind.startswith("oneway"):
                a, b = rng.sample(everyone, 2)
                c.cut_oneway(a, b)
                if kind.endswith("loss"):
                    c.loss(rng.uniform(0.05, 0.25))
                    faults += 1
            elif kind == "partial":
                x = rng.choice(everyone)
                others = [i for i in everyone if i != x]
                c.cut([x], rng.sample(others, rng.randint(1, len(others) - 1)))
            elif kind.startswith("loss"):
                p = rng.uniform(0.05, 0.3)
                c.loss(p)
                what = f"loss {p:.2f}"
                if kind.endswith("kill9"):
                    v = rng.choice(everyone)
                    c.kill9(v)
                    down.append(v)
                    faults += 1
            elif kind == "flap":
                x = rng.choice(everyone)
                others = [i for i in everyone if i != x]
                flap_end = time.monotonic() + hold_ms / 1000
                while time.monotonic() < flap_end:
                    # Each cut outlasts heartbeat_timeout: a real drop.
                    c.cut([x], others)
                    time.sleep(FLAP_CUT_MS / 1000)
                    c.heal()
                    time.sleep(FLAP_HEAL_MS / 1000)
                hold_ms = 0
            elif kind == "delay":
                d = rng.uniform(10, 100)
                c.delay(d, rng.uniform(0, d / 2))
            elif kind == "kill9":
                v = rng.choice(everyone)
                c.kill9(v)
                down.append(v)
                if rng.random() < 0.3:
                    c.start(v)          # back at once, with a new incarnation
                    down.remove(v)
            elif kind == "sigterm":
                v = rng.choice(everyone)
                c.term(v)
                down.append(v)
            time.sleep(hold_ms / 1000)
            t_heal = c.heal()
            for v in down:
                c.start(v)
            if clean:
                clean_splits.append((t_fault, t_heal + t.converge_ms, what))
            print(f"soak: step {step} {what} for {now_ms() - t_fault:.0f} ms", flush=True)
            if rng.random() < 0.3:
                t_conv = ctx.converge(t_heal, f"step {step} ({what})", timeout_s=30)
                converge_times.append(t_conv - t_heal)
            else:
                time.sleep(rng.uniform(0, 2.5))
        # The end: no fault; everyone back; converge and stay put.
        t_heal = c.heal()
        for node in c.nodes:
            if not node.running():
                c.start(node.index)
        t_conv = ctx.converge(t_heal, "final heal", timeout_s=60)
        converge_times.append(t_conv - t_heal)
        t0, t1 = ctx.hold(3000)
        ctx.check_no_moves(t0, t1, "after the final convergence")
    except AssertionError as e:
        errors.append(str(e))
    except Exception as e:  # noqa: BLE001 - reported, cleanup runs
        import traceback
        errors.append(traceback.format_exc())
    finally:
        ctx.t_stop = now_ms()
        if c is not None:
            try:
                c.stop_all()
            except Exception as e:  # noqa: BLE001
                errors.append(f"stopping the nodes: {e}")
            c.close()
    h = History(ctx.log.snapshot(), ctx._stopped())
    h.check_all(shards)
    for (lo, hi, what) in clean_splits:
        h.check_no_overlap(lo, hi, f"6.5 ({what})")
    violations = errors + ctx.violations + h.violations + ctx.log.errors
    with open(logdir / "events.jsonl", "w") as f:
        for e in ctx.log.snapshot():
            f.write(json.dumps({"t": e.t, "node": e.node, "proc": e.proc, "event": e.event, **e.data}) + "\n")
    allocations = len(h.allocs)
    # Every allocation of a shard but its first is the shard moving.
    failovers = allocations - len({a.shard for a in h.allocs})
    for v in violations[:50]:
        print("  violation: " + v.replace("\n", "\n    "))
    if len(violations) > 50:
        print(f"  ... and {len(violations) - 50} more")
    if converge_times:
        cs = sorted(converge_times)
        print(f"soak: {len(cs)} convergence checks, median {cs[len(cs) // 2]:.0f} ms, max {cs[-1]:.0f} ms "
              f"after the heal; {len(clean_splits)} clean splits with a small side checked for 6.5; "
              f"events in {logdir}", flush=True)
    print(f"faults={faults} allocations={allocations} conflicts={h.conflicts()} "
          f"failovers={failovers} violations={len(violations)}", flush=True)
    return not violations
