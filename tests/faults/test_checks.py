"""The checkers must catch what they claim to: synthetic histories with one
planted violation each. `run` runs these first (no namespace needed);
also `python3 tests/faults/test_checks.py`."""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checks import History  # noqa: E402
from harness import FAST, Ev  # noqa: E402

A, B, C = "127.0.0.11:7000", "127.0.0.12:7000", "127.0.0.13:7000"


def hist(*rows, stopped=None) -> History:
    evs = []
    for i, (t, node, event, data) in enumerate(rows):
        proc = "harness" if node == "harness" else f"{node}#1"
        evs.append(Ev(float(t), node, proc, event, dict(data), i))
    return History(evs, stopped or {})


def alloc(t, node, shard, epoch):
    return (t, node, "allocated", {"shard": shard, "epoch": epoch})


def dealloc(t, node, shard, epoch, winner=None):
    return (t, node, "deallocated", {"shard": shard, "epoch": epoch, "winner": winner})


def score(t, node, shard, epoch, s):
    return (t, node, "score", {"shard": shard, "epoch": epoch, "score": s})


def prolonged(t, node, shard, epoch, loser):
    return (t, node, "prolonged", {"shard": shard, "epoch": epoch, "loser": loser})


class Discipline(unittest.TestCase):
    def test_clean(self):
        h = hist(alloc(1, A, 0, 1), dealloc(5, A, 0, 1), alloc(6, A, 1, 2), dealloc(9, A, 1, 2),
                 (10, A, "left", {}), (11, A, "exit", {"code": 0}), stopped={f"{A}#1": "term"})
        self.assertEqual(h.violations, [])

    def test_two_at_once(self):
        h = hist(alloc(1, A, 0, 1), alloc(2, A, 1, 1))
        self.assertTrue(any("while holding" in v for v in h.violations), h.violations)

    def test_unmatched_deallocated(self):
        h = hist(dealloc(1, A, 0, 1))
        self.assertTrue(any("without a matching allocated" in v for v in h.violations))

    def test_exit_holding(self):
        h = hist(alloc(1, A, 0, 1), (10, A, "left", {}), (11, A, "exit", {"code": 0}),
                 stopped={f"{A}#1": "term"})
        self.assertTrue(any("no deallocated on leave" in v for v in h.violations), h.violations)

    def test_kill_closes_allocation(self):
        h = hist(alloc(1, A, 0, 1), (5, "harness", "mark", {"what": "kill9", "proc": f"{A}#1"}),
                 (6, A, "exit", {"code": -9}), stopped={f"{A}#1": "kill"})
        self.assertEqual(h.violations, [])
        self.assertEqual(h.allocs[0].end, 5)


class Epochs(unittest.TestCase):
    def test_per_node_growth(self):
        h = hist(alloc(1, A, 0, 3), dealloc(2, A, 0, 3), alloc(3, A, 0, 3), dealloc(4, A, 0, 3))
        h.check_epochs()
        self.assertTrue(any(v.startswith("5:") for v in h.violations))


class Overlap(unittest.TestCase):
    def test_overlap_found(self):
        h = hist(alloc(1, A, 0, 1), alloc(5, B, 0, 2), dealloc(7, A, 0, 1))
        h.check_no_overlap(0, 100, "6.5")
        self.assertEqual(len(h.violations), 1)
        self.assertIn("[5, 7)", h.violations[0])

    def test_handover_same_ms_is_no_overlap(self):
        h = hist(alloc(1, A, 0, 1), dealloc(5, A, 0, 1), alloc(5, B, 0, 2))
        h.check_no_overlap(0, 100, "6.5")
        self.assertEqual(h.violations, [])


class Conflicts(unittest.TestCase):
    def base(self, winner, loser, ws, ls, n_prolonged=1):
        rows = [alloc(1, winner, 0, 1), alloc(2, loser, 0, 1), score(10, winner, 0, 1, ws),
                score(10, loser, 0, 1, ls)]
        rows += [prolonged(11, winner, 0, 1, loser)] * n_prolonged
        rows += [dealloc(11, loser, 0, 1, winner)]
        h = hist(*rows)
        h.check_conflicts()
        return h.violations

    def test_good(self):
        self.assertEqual(self.base(A, B, 50, 10), [])

    def test_lower_score_won(self):
        self.assertTrue(any("must win" in v for v in self.base(A, B, 10, 50)))

    def test_tie_goes_to_smaller_node(self):
        self.assertEqual(self.base(A, B, 7, 7), [])
        self.assertTrue(any("must win" in v for v in self.base(B, A, 7, 7)))

    def test_prolonged_twice(self):
        self.assertTrue(any("expected exactly one" in v for v in self.base(A, B, 50, 10, 2)))


class Convergence(unittest.TestCase):
    def test_converged_and_degraded(self):
        h = hist(alloc(1, A, 0, 1), (1, A, "status", {"old": "transition", "new": "available"}),
                 (1, B, "status", {"old": "transition", "new": "available"}),
                 (1, C, "status", {"old": "transition", "new": "available"}),
                 (100, C, "status", {"old": "available", "new": "transition"}),
                 (100 + FAST.degrade_ms + 50, C, "status", {"old": "transition", "new": "degraded"}))
        self.assertIsNotNone(h.converged_at([f"{A}#1", f"{B}#1"], 1, 0))
        self.assertIsNone(h.converged_at([f"{A}#1", f"{C}#1"], 1, 0))
        h.check_degraded([f"{C}#1"], 100, FAST, "test")
        self.assertTrue(any("bound is" in v for v in h.violations), h.violations)


def run_quietly() -> tuple[int, str]:
    """Runs these tests; returns (failures, report)."""
    import io
    out = io.StringIO()
    result = unittest.TextTestRunner(stream=out, verbosity=0).run(
        unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__]))
    return len(result.failures) + len(result.errors), out.getvalue()


if __name__ == "__main__":
    unittest.main()
