"""The engine through Python, over loopback: convergence, failover, leave,
and a 3/3 split healed by score (docs/design.md section 7)."""

from __future__ import annotations

import threading
import time

import minishard
from conftest import BOUND, FAST, Recorder, eventually


def test_four_nodes_two_shards_converge_and_agree(local):
    cluster = local("converge", 4, 2)
    shard_map = cluster.converged()
    assert len(set(shard_map)) == 2, f"two different owners: {shard_map}"
    for i, node in enumerate(cluster.running()):
        assert node.shard_map() == shard_map
        assert [node.get_node(s) for s in range(2)] == shard_map
        assert node.health() == minishard.Health.AVAILABLE == "available"
        mine = node.my_shard()
        if node.node in shard_map:
            assert mine is not None and shard_map[mine[0]] == node.node and mine[1] >= 1
        else:
            assert mine is None
    # One allocated per shard: no churn on the way.
    allocated = [e for app in cluster.apps for e in app.journal.of("allocated")]
    assert sorted(e[1] for e in allocated) == [0, 1]
    # Callbacks ran on callback threads, never on this one.
    assert all(threading.get_ident() not in app.journal.threads() for app in cluster.apps)


def test_status_and_stats_are_typed(local):
    cluster = local("status", 4, 2)
    shard_map = cluster.converged()
    owner = cluster[cluster.index(shard_map[0])]
    status = owner.status()
    assert isinstance(status, minishard.Status)
    assert status.cluster == "status" and status.node == owner.node
    assert status.health is minishard.Health.AVAILABLE
    assert status.shard_count == 2 and status.allocated == 2
    assert [o.node if o else None for o in status.owners] == shard_map
    assert status.local.state == "allocated" and status.local.shard == 0
    assert status.local.epoch == status.owners[0].epoch
    assert set(status.nodes) == set(cluster.addresses)
    states = sorted(s.state for s in status.nodes.values())
    assert states == ["active", "active", "standby", "standby"]
    assert status.nodes[shard_map[1]] == minishard.NodeState("active", 1)
    stats = owner.stats()
    assert isinstance(stats, minishard.Stats)
    assert stats.allocations == 1 and stats.failed_callbacks == 0
    assert "available" in repr(owner) and owner.name == "status"


def test_nodes_joined_with_other_limits_converge(local):
    # Every limit away from its default, the per-source cap above the two
    # peers that dial each node from 127.0.0.1.
    cluster = local(
        "limits", 3, 2, frame_limit=65536, handshake_timeout=1.5, max_handshakes=8,
        max_handshakes_per_source=4, send_queue=128,
    )
    shard_map = cluster.converged()
    assert len(set(shard_map)) == 2, f"two different owners: {shard_map}"


def test_an_owner_that_stops_without_leaving_fails_over_after_the_grace(local):
    cluster = local("failover", 4, 2)
    cluster.converged()
    victim = cluster.owner(0, 0)
    viewer = (victim + 1) % 4
    crashed_at = time.monotonic()
    cluster.crash(victim)
    assert eventually(BOUND, lambda: cluster.owner(viewer, 0) not in (None, victim))
    new_owner = cluster.owner(viewer, 0)
    took_at = cluster.apps[new_owner].journal.first("allocated", after=crashed_at)
    assert took_at is not None
    # The shard stays reserved to the silent owner for node_grace.
    assert took_at - crashed_at >= FAST["node_grace"]
    cluster.converged()
    # The crashed node's application heard nothing more.
    assert cluster.apps[victim].journal.of("deallocated") == []


def test_a_graceful_leave_hands_over_without_waiting_for_the_grace(local):
    # A grace far longer than BOUND: a shard that moves within BOUND was
    # handed over, not failed over after the grace.
    cluster = local("leave", 4, 2, node_grace=30.0)
    cluster.converged()
    leaver = cluster.owner(0, 0)
    viewer = (leaver + 1) % 4
    with cluster[leaver]:
        pass  # leaving the with block leaves the cluster
    cluster.clusters[leaver] = None
    assert cluster.apps[leaver].journal.of("deallocated") == [("deallocated", None, 0)]
    [(_, reason, _)] = cluster.apps[leaver].journal.of("reason")
    assert reason is minishard.Reason.LEFT and reason == "left"
    assert eventually(BOUND, lambda: cluster.owner(viewer, 0) not in (None, leaver))
    cluster.converged()


def test_in_strict_mode_a_three_three_split_leaves_no_owner_and_a_four_two_keeps_the_four(local):
    cluster = local("strict33", 6, 2, quorum="majority")
    cluster.converged()
    allocations = [len(app.journal.of("allocated")) for app in cluster.apps]
    cluster.split([0, 1, 2], [3, 4, 5])

    def nobody_holds() -> bool:
        return all(
            c.health() == "degraded" and c.my_shard() is None and c.shard_map() == [None, None]
            for c in cluster.running()
        )

    # Three of six is enough members for two shards, but not a majority.
    assert eventually(BOUND * 2, nobody_holds), [
        (c.node, c.health(), c.my_shard()) for c in cluster.running()
    ]
    time.sleep(FAST["node_grace"] * 2)
    assert nobody_holds(), "past the grace, still no owner on either side"
    assert [len(app.journal.of("allocated")) for app in cluster.apps] == allocations
    for app, before in zip(cluster.apps, allocations):
        if before:
            assert app.journal.of("reason")[-1][1] is minishard.Reason.DEGRADED
    cluster.heal()
    cluster.converged(BOUND * 2)
    # Four against two: the four keep or take every shard, the two degrade.
    big, small = [0, 1, 2, 3], [4, 5]
    cluster.split(big, small)
    assert eventually(
        BOUND * 2,
        lambda: all(cluster[i].health() == "degraded" for i in small)
        and all(cluster.owner(i, s) in big for i in big for s in (0, 1))
        and all(cluster[i].health() == "available" for i in big),
    )
    assert all(cluster[i].my_shard() is None for i in small)


def test_a_three_three_split_keeps_both_sides_whole_and_the_heal_keeps_the_higher_score(local):
    cluster = local("split33", 6, 2)
    cluster.converged()
    left, right = [0, 1, 2], [3, 4, 5]
    for i, app in enumerate(cluster.apps):
        # The right side scores higher: it must win every conflict.
        app.score_value = 100 + i if i in right else i
    cluster.split(left, right)

    def side_holds_everything(side):
        return all(
            owner is not None and cluster.index(owner) in side
            for owner in cluster[side[0]].shard_map()
        )

    assert eventually(
        BOUND * 2, lambda: side_holds_everything(left) and side_holds_everything(right)
    ), "each side should hold both shards during the split"
    cluster.heal()
    shard_map = cluster.converged(BOUND * 2)
    assert all(cluster.index(owner) in right for owner in shard_map), shard_map
    # Each loser was told who won; each winner heard prolonged once per
    # loser, with an epoch above the loser's: a store fenced by epochs takes
    # the winner's writes and refuses the loser's.
    losers = set()
    for i in left:
        released = cluster.apps[i].journal.of("reason")
        for (_, winner, _), (_, reason, loser_epoch) in zip(
            cluster.apps[i].journal.of("deallocated"), released
        ):
            if winner is None:
                assert reason is not minishard.Reason.LOST_CONFLICT
                continue
            assert reason is minishard.Reason.LOST_CONFLICT
            losers.add(i)
            loser = cluster.addresses[i]
            winner_app = cluster.apps[cluster.index(winner)]
            told = winner_app.journal.of("prolonged")
            assert told.count(("prolonged", loser)) == 1
            [(_, _, _, new_epoch)] = [
                e for e in winner_app.journal.of("epoch raised") if e[1] == loser
            ]
            assert new_epoch > loser_epoch
    assert len(losers) == 2, "two shards, two losers on the left: " + repr(
        [(cluster.addresses[i], cluster.apps[i].journal.all()) for i in range(6)]
    )
    # The winners were asked for their score (once per conflict).
    assert all(cluster.apps[cluster.index(o)].journal.of("score") for o in shard_map)


def test_wait_until_releases_the_gil_for_the_callbacks_it_waits_for(local):
    members = local("gil", 3, 2)
    for node in members.running():
        # Only possible if the callback threads got the GIL meanwhile.
        assert node.wait_until(minishard.Health.AVAILABLE, timeout=BOUND) is True


def test_a_joined_cluster_stays_joined_without_a_reference(local):
    import gc

    from minishard import _cluster

    cluster = local("unreferenced", 3, 1)
    address, app = cluster.addresses[2], cluster.apps[2]
    cluster.clusters[2] = None  # drop the only reference the test holds
    gc.collect()
    cluster.converged()
    assert app.journal.of("deallocated") == []
    assert cluster[0].status().nodes[address].state in ("standby", "active")
    # It leaves through the registry the exit hook uses.
    (node,) = [c for c in list(_cluster._joined) if c.node == address]
    node.leave()
    assert eventually(BOUND, lambda: cluster[0].status().nodes[address].state == "unavailable")
