"""The checkers must catch what they claim to: synthetic histories with one
planted violation each. `run` runs these first (no namespace needed);
also `python3 tests/faults/test_checks.py`."""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checks import History  # noqa: E402
from harness import Ev, parse_counters  # noqa: E402

A, B, C = "127.0.0.11:7000", "127.0.0.12:7000", "127.0.0.13:7000"


def hist(*rows, stopped=None) -> History:
    evs = []
    for i, (t, node, event, data) in enumerate(rows):
        proc = "harness" if node == "harness" else f"{node}#1"
        evs.append(Ev(float(t), node, proc, event, dict(data), i))
    return History(evs, stopped or {})


def alloc(t, node, shard, epoch):
    return (t, node, "allocated", {"shard": shard, "epoch": epoch})


def dealloc(t, node, shard, epoch, winner=None, reason=None):
    reason = reason or ("lost_conflict" if winner else "left")
    return (t, node, "deallocated", {"shard": shard, "epoch": epoch, "winner": winner, "reason": reason})


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

    def test_two_sides_of_a_split_issuing_one_epoch(self):
        # Each process on its own is fine; together they issued epoch 2 twice.
        h = hist(alloc(1, A, 0, 2), alloc(3, B, 0, 2))
        h.check_epochs()
        self.assertEqual(h.violations, [])
        h.check_epochs_unique()
        self.assertTrue(any("issued twice" in v for v in h.violations), h.violations)

    def test_an_epoch_below_one_that_ended_before(self):
        h = hist(alloc(1, A, 0, 5), dealloc(4, A, 0, 5), alloc(6, B, 0, 3))
        h.check_epochs_successive()
        self.assertTrue(any("successive epochs must grow" in v for v in h.violations), h.violations)

    def test_an_allocation_that_ends_within_its_first_millisecond(self):
        h = hist(alloc(1, A, 0, 5), dealloc(1, A, 0, 5), alloc(2, B, 0, 6))
        h.check_epochs_successive()
        self.assertEqual(h.violations, [])

    def test_overlapping_sides_only_need_distinct_epochs(self):
        # B's claim (epoch 3) starts while A's (epoch 5) still runs: a split.
        h = hist(alloc(1, A, 0, 5), alloc(2, B, 0, 3), dealloc(6, A, 0, 5), dealloc(8, B, 0, 3),
                 alloc(9, C, 0, 6))
        h.check_epochs_unique()
        h.check_epochs_successive()
        self.assertEqual(h.violations, [])


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
        rows += [prolonged(11, winner, 0, 2, loser)] * n_prolonged
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

    def test_a_winner_not_raised_above_its_loser(self):
        rows = [alloc(1, A, 0, 1), alloc(2, B, 0, 2), score(10, A, 0, 1, 50), score(10, B, 0, 2, 10),
                prolonged(11, A, 0, 1, B), dealloc(11, B, 0, 2, A)]
        h = hist(*rows)
        h.check_conflicts()
        self.assertTrue(any("raised above its loser" in v for v in h.violations), h.violations)

    def test_a_raised_epoch_is_what_later_callbacks_carry(self):
        rows = [alloc(1, A, 0, 1), alloc(2, B, 0, 2), score(10, A, 0, 1, 50), score(10, B, 0, 2, 10),
                prolonged(11, A, 0, 3, B), dealloc(11, B, 0, 2, A), dealloc(20, A, 0, 3)]
        h = hist(*rows)
        h.check_all(1)
        self.assertEqual(h.violations, [])
        h = hist(*rows[:-1], dealloc(20, A, 0, 1))
        self.assertTrue(any("without a matching allocated" in v for v in h.violations), h.violations)

    def test_a_raised_epoch_is_never_issued_again(self):
        h = hist(alloc(1, A, 0, 1), prolonged(5, A, 0, 3, B), dealloc(9, A, 0, 3), alloc(10, B, 0, 3))
        h.check_all(1)
        self.assertTrue(any("issued twice" in v for v in h.violations), h.violations)

    def test_only_a_lost_conflict_names_a_winner(self):
        h = hist(alloc(1, A, 0, 1), dealloc(5, A, 0, 1, winner=B, reason="degraded"))
        self.assertTrue(any("exactly when the reason is lost_conflict" in v for v in h.violations), h.violations)
        h = hist(alloc(1, A, 0, 1), dealloc(5, A, 0, 1, reason="lost_conflict"))
        self.assertTrue(any("exactly when the reason is lost_conflict" in v for v in h.violations), h.violations)

    def test_a_node_that_leaves_says_left(self):
        h = hist(alloc(1, A, 0, 1), (4, A, "leaving", {"signal": "SIGTERM"}), dealloc(5, A, 0, 1, reason="shutdown"))
        self.assertTrue(any("expected left" in v for v in h.violations), h.violations)

    def test_prolonged_twice(self):
        self.assertTrue(any("expected exactly one" in v for v in self.base(A, B, 50, 10, 2)))

    def without(self, who):
        rows = [alloc(1, A, 0, 1), alloc(2, B, 0, 1)]
        rows += [score(10, n, 0, 1, 7) for n in (A, B) if n != who]
        rows += [prolonged(11, A, 0, 2, B), dealloc(11, B, 0, 1, A)]
        h = hist(*rows)
        h.check_conflicts()
        return h.violations

    def test_a_missing_score_is_a_failure(self):
        self.assertEqual(self.without(None), [])
        self.assertTrue(any("loser" in v and "no score" in v for v in self.without(B)), self.without(B))
        self.assertTrue(any("winner" in v and "no score" in v for v in self.without(A)), self.without(A))


def status(t, node, new):
    return (t, node, "status", {"old": "?", "new": new})


class Convergence(unittest.TestCase):
    def test_converged_and_degraded(self):
        h = hist(alloc(1, A, 0, 1), status(1, A, "available"), status(1, B, "available"),
                 status(1, C, "available"), status(100, C, "transition"), status(900, C, "degraded"))
        self.assertIsNotNone(h.converged_at([f"{A}#1", f"{B}#1"], 1, 0))
        self.assertIsNone(h.converged_at([f"{A}#1", f"{C}#1"], 1, 0))
        h.check_degraded([f"{C}#1"], 100, "test", before=1000)
        self.assertEqual(h.violations, [])
        # The other side claimed first: 6.5's order is broken.
        h.check_degraded([f"{C}#1"], 100, "test", before=800)
        self.assertTrue(any("after the other side's first claim" in v for v in h.violations), h.violations)

    def test_never_degraded(self):
        h = hist(status(1, C, "available"), status(100, C, "transition"))
        h.check_degraded([f"{C}#1"], 50, "test")
        self.assertTrue(any("never became degraded" in v for v in h.violations), h.violations)

    def test_a_shard_taken_while_degraded(self):
        # Degraded at 900 holding nothing, but it claims at 950 while still degraded.
        h = hist(status(1, C, "available"), status(900, C, "degraded"), alloc(950, C, 0, 2),
                 status(2000, C, "available"))
        h.check_degraded([f"{C}#1"], 100, "test")
        self.assertTrue(any("while degraded" in v for v in h.violations), h.violations)


def link(t, node, peer, up):
    return (t, node, "peer_up" if up else "peer_down", {"peer": peer})


class Links(unittest.TestCase):
    def test_a_cut_link_dropped_and_stayed_down(self):
        h = hist(link(1, A, B, True), link(1, B, A, True), link(300, B, A, False), link(301, A, B, False))
        h.check_link_dropped(A, B, 100, 1000, "cut")
        self.assertEqual(h.violations, [])

    def test_a_link_that_never_dropped(self):
        h = hist(link(1, A, B, True), link(1, B, A, True), link(300, A, C, False))
        h.check_link_dropped(A, B, 100, 1000, "cut")
        self.assertTrue(any("never dropped" in v for v in h.violations), h.violations)

    def test_a_link_back_up_while_cut(self):
        h = hist(link(300, B, A, False), link(500, A, B, True))
        h.check_link_dropped(A, B, 100, 1000, "cut")
        self.assertTrue(any("came back" in v for v in h.violations), h.violations)
        h = hist(link(300, B, A, False), link(500, A, B, True))
        h.check_link_dropped(A, B, 100, 1000, "flap", stays_down=False)
        self.assertEqual(h.violations, [])


class Counters(unittest.TestCase):
    LISTING = """Chain MSFAULT (1 references)
    pkts      bytes target     prot opt in     out     source               destination
      12      840 DROP       all  --  *      *       0.0.0.0/0            0.0.0.0/0            ctorigdst 127.0.0.12
       0        0 DROP       all  --  *      *       0.0.0.0/0            0.0.0.0/0            ctorigdst 127.0.0.11
"""

    def test_counters_in_rule_order(self):
        self.assertEqual(parse_counters(self.LISTING), [12, 0])
        self.assertEqual(parse_counters("Chain MSFAULT (1 references)\n pkts bytes target\n"), [])

    def test_an_unexpected_listing_is_refused(self):
        with self.assertRaises(RuntimeError):
            parse_counters("iptables: No chain/target/match by that name.\n")


def reply(t, node, rid, shard, owner, epoch, sent):
    return (t, node, "reply", {"id": rid, "shard": shard, "owner": owner, "epoch": epoch, "sent": sent})


def failed(t, node, rid, shard, sent, error="timeout"):
    return (t, node, "request_failed", {"id": rid, "shard": shard, "sent": sent, "error": error})


class Requests(unittest.TestCase):
    def test_clean(self):
        h = hist(alloc(1, A, 0, 1), reply(5, B, 1, 0, A, 1, 3), failed(9, B, 2, 0, 4),
                 (10, B, "requests", {"issued": 2}))
        h.check_requests()
        self.assertEqual(h.violations, [])

    def test_a_request_cut_short_by_its_own_leave_is_excused_after_the_faults(self):
        rows = [alloc(1, A, 0, 1), (8, B, "leaving", {"signal": "SIGTERM"}), failed(9, B, 1, 0, 7, "closed")]
        h = hist(*rows)
        h.check_requests(quiet_since=5)
        self.assertEqual(h.violations, [])
        h = hist(alloc(1, A, 0, 1), failed(9, B, 1, 0, 7, "closed"))
        h.check_requests(quiet_since=5)
        self.assertTrue(any("after the faults stopped" in v for v in h.violations), h.violations)

    def test_a_request_that_never_ended(self):
        h = hist(alloc(1, A, 0, 1), reply(5, B, 1, 0, A, 1, 3), (10, B, "requests", {"issued": 2}))
        h.check_requests()
        self.assertTrue(any("never ended" in v for v in h.violations), h.violations)

    def test_a_request_that_ended_twice(self):
        h = hist(alloc(1, A, 0, 1), reply(5, B, 1, 0, A, 1, 3), failed(6, B, 1, 0, 3))
        h.check_requests()
        self.assertTrue(any("ended 2 times" in v for v in h.violations), h.violations)

    def test_a_reply_from_a_node_that_no_longer_held_the_shard(self):
        h = hist(alloc(1, A, 0, 1), dealloc(2, A, 0, 1), alloc(3, C, 0, 2), reply(6, B, 1, 0, A, 1, 4))
        h.check_requests()
        self.assertTrue(any("did not hold it" in v for v in h.violations), h.violations)

    def test_a_reply_at_another_epoch(self):
        h = hist(alloc(1, A, 0, 2), reply(6, B, 1, 0, A, 1, 4))
        h.check_requests()
        self.assertTrue(any("did not hold it" in v for v in h.violations), h.violations)

    def test_a_reply_at_an_epoch_a_won_conflict_raised_it_to(self):
        h = hist(alloc(1, A, 0, 1), prolonged(4, A, 0, 7, C), reply(6, B, 1, 0, A, 7, 5))
        h.check_requests()
        self.assertEqual(h.violations, [])
        h = hist(alloc(1, A, 0, 1), prolonged(4, A, 0, 7, C), reply(6, B, 1, 0, A, 8, 5))
        h.check_requests()
        self.assertTrue(any("did not hold it" in v for v in h.violations), h.violations)

    def test_a_request_sent_as_the_nodes_are_stopped_is_not_checked(self):
        # Sent at 12, after the window closed at 11 (the harness began to
        # stop the nodes): its owner's leave may cut it short.
        h = hist(alloc(1, A, 0, 1), failed(13, B, 1, 0, 12, "uncertain"))
        h.check_requests(quiet_since=10, quiet_until=11)
        self.assertEqual(h.violations, [])
        h = hist(alloc(1, A, 0, 1), failed(13, B, 1, 0, 10.5, "uncertain"))
        h.check_requests(quiet_since=10, quiet_until=11)
        self.assertTrue(any("after the faults stopped" in v for v in h.violations), h.violations)

    def test_a_failure_after_the_faults_stopped(self):
        h = hist(alloc(1, A, 0, 1), failed(9, B, 1, 0, 8), failed(12, B, 2, 0, 11))
        h.check_requests(quiet_since=10)
        self.assertEqual(sum("after the faults stopped" in v for v in h.violations), 1, h.violations)


def run_quietly() -> tuple[int, str]:
    """Runs these tests; returns (failures, report)."""
    import io
    out = io.StringIO()
    result = unittest.TextTestRunner(stream=out, verbosity=0).run(
        unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__]))
    return len(result.failures) + len(result.errors), out.getvalue()


if __name__ == "__main__":
    unittest.main()
