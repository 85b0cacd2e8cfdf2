/*
 * A 4-node, 2-shard cluster inside one C process, callbacks on the engine's
 * callback thread: convergence, get_node agreement, failover after a crash
 * (with lookups hammered from other threads meanwhile), graceful leave,
 * a split whose heal is resolved by score, the same split in strict mode
 * (no owner on either side), and failing allocated callbacks.
 *
 * It crashes and splits nodes with the minishard_testing_* functions, so it
 * links a library built with the cargo feature `testing`.
 */
#define MINISHARD_TESTING
#include "harness.h"

/* docs/design.md 7.1's bound, with room for a loaded machine. */
#define BOUND_MS ((250.0 + 750.0 + 100.0) * 4)
#define GRACE_MS 750.0

/* No callback ran on the test's own (joining) thread. */
static void check_callbacks_off_main_thread(local *l) {
    size_t i, e;
    for (i = 0; i < l->n; i++) {
        for (e = 0; e < l->apps[i].event_count; e++) {
            CHECK(!pthread_equal(l->apps[i].events[e].thread, l->main_thread));
        }
    }
}

static void four_nodes_two_shards_converge_and_agree_on_owners(void) {
    local l;
    size_t i;
    int owner0, owner1;
    size_t allocations = 0;
    REQUIRE(local_start(&l, "converge", 4, 2, MINISHARD_DISPATCH_THREAD));
    for (i = 0; i < l.n; i++) {
        CHECK_RC(minishard_wait_until(l.nodes[i], MINISHARD_HEALTH_AVAILABLE,
                                      10000 * time_scale()), MINISHARD_OK);
    }
    CHECK(local_converged(&l, 2, 10000));
    owner0 = local_owner(&l, 0, 0);
    owner1 = local_owner(&l, 0, 1);
    CHECK(owner0 >= 0 && owner1 >= 0 && owner0 != owner1);
    for (i = 0; i < l.n; i++) {
        uint32_t shard = 99;
        uint64_t epoch = 0;
        minishard_result rc = minishard_my_shard(l.nodes[i], &shard, &epoch);
        minishard_stats stats = {.struct_size = sizeof stats};
        if ((int)i == owner0 || (int)i == owner1) {
            CHECK(rc == MINISHARD_OK);
            CHECK(shard == ((int)i == owner0 ? 0u : 1u));
            CHECK(epoch > 0);
        } else {
            CHECK(rc == MINISHARD_NOT_FOUND);
        }
        CHECK_RC(minishard_get_stats(l.nodes[i], &stats), MINISHARD_OK);
        allocations += stats.allocations;
        /* Health went up from degraded and ended available. */
        CHECK(app_count(&l.apps[i], EV_STATUS) >= 1);
        CHECK(l.apps[i].events[0].kind == EV_STATUS &&
              l.apps[i].events[0].old_health == MINISHARD_HEALTH_DEGRADED);
    }
    CHECK(allocations == 2);
    for (i = 0; i < l.n; i++) {
        CHECK(app_count(&l.apps[i], EV_ALLOCATED) == ((int)i == owner0 || (int)i == owner1));
        CHECK(app_count(&l.apps[i], EV_DEALLOCATED) == 0);
    }
    {
        char json[8192];
        size_t written = 0;
        CHECK_RC(minishard_status_json(l.nodes[0], json, sizeof json, &written), MINISHARD_OK);
        CHECK(written == strlen(json) + 1);
        CHECK(strstr(json, "\"shard_count\":2") != NULL);
        CHECK(strstr(json, l.addrs[owner0 < 0 ? 0 : owner0]) != NULL);
    }
    check_callbacks_off_main_thread(&l);
    local_stop(&l);
    /* Freeing each handle left: each owner heard deallocated(no winner),
     * for a shutdown. */
    CHECK(app_count(&l.apps[owner0 < 0 ? 0 : owner0], EV_DEALLOCATED) == 1);
    CHECK(app_last_release(&l.apps[owner0 < 0 ? 0 : owner0]) == MINISHARD_RELEASE_SHUTDOWN);
    CHECK(strcmp(minishard_release_reason_name(MINISHARD_RELEASE_SHUTDOWN), "shutdown") == 0);
    CHECK(strcmp(minishard_release_reason_name(99), "unknown") == 0);
}

typedef struct {
    local *l;
    size_t viewer;
    volatile int stop;
    long lookups, bad;
} reader;

static void *read_owners(void *arg) {
    reader *r = arg;
    char owner[MINISHARD_ADDRESS_MAX];
    size_t written;
    while (!r->stop) {
        uint32_t s;
        /* Let the engine's threads run now and then: under valgrind all
         * threads share one core, and two spinning readers starve them. */
        if (r->lookups % 256 == 0) pause_ms(1);
        for (s = 0; s < 2; s++) {
            minishard_result rc = minishard_get_node(r->l->nodes[r->viewer], s, owner,
                                                     sizeof owner, &written);
            r->lookups++;
            if (rc == MINISHARD_OK) {
                if (written != strlen(owner) + 1) r->bad++;
            } else if (rc != MINISHARD_NOT_FOUND) {
                r->bad++;
            }
        }
    }
    return NULL;
}

static void a_crashed_owner_fails_over_after_the_grace_while_readers_look_up(void) {
    local l;
    int victim, viewer, moved = 0;
    double crashed_at, deadline;
    reader readers[2];
    pthread_t threads[2];
    size_t r;
    REQUIRE(local_start(&l, "failover", 4, 2, MINISHARD_DISPATCH_THREAD));
    REQUIRE(local_converged(&l, 2, 10000));
    victim = local_owner(&l, 0, 0);
    REQUIRE(victim >= 0);
    viewer = (victim + 1) % 4;
    for (r = 0; r < 2; r++) {
        readers[r].l = &l;
        readers[r].viewer = (size_t)viewer;
        readers[r].stop = 0;
        readers[r].lookups = readers[r].bad = 0;
        pthread_create(&threads[r], NULL, read_owners, &readers[r]);
    }
    crashed_at = now_ms();
    local_crash(&l, (size_t)victim);
    CHECK(l.apps[victim].freed == 1); /* free_user_data ran inside the crash */
    deadline = now_ms() + BOUND_MS * (double)time_scale();
    while (now_ms() < deadline) {
        int owner = local_owner(&l, (size_t)viewer, 0);
        if (owner >= 0 && owner != victim) {
            moved = 1;
            break;
        }
        pause_ms(2);
    }
    for (r = 0; r < 2; r++) {
        readers[r].stop = 1;
        pthread_join(threads[r], NULL);
        CHECK(readers[r].lookups > 0);
        CHECK(readers[r].bad == 0);
    }
    CHECK(moved);
    if (moved) {
        /* The shard stayed reserved to the crashed node for the grace. */
        int owner = local_owner(&l, (size_t)viewer, 0);
        size_t e;
        double allocated_at = 0;
        for (e = 0; e < l.apps[owner].event_count; e++) {
            event *ev = &l.apps[owner].events[e];
            if (ev->kind == EV_ALLOCATED && ev->shard == 0) allocated_at = ev->at_ms;
        }
        CHECK(allocated_at - crashed_at >= GRACE_MS * (double)time_scale());
    }
    CHECK(local_converged(&l, 2, BOUND_MS));
    check_callbacks_off_main_thread(&l);
    /* The crashed node was told nothing: no deallocated. */
    CHECK(app_count(&l.apps[victim], EV_DEALLOCATED) == 0);
    local_stop(&l);
}

static void a_graceful_leave_hands_over_without_waiting_for_the_grace(void) {
    local l;
    int leaver, viewer, moved = 0;
    size_t i;
    double deadline;
    char owner[MINISHARD_ADDRESS_MAX];
    size_t written;
    /* A grace far longer than the wait below: a shard that moves within
     * the wait was handed over, not failed over after the grace. */
    REQUIRE(local_prepare(&l, "leave", 4, 2, MINISHARD_DISPATCH_THREAD));
    l.node_grace_ms = 30000;
    for (i = 0; i < l.n; i++) REQUIRE(local_join(&l, i));
    REQUIRE(local_converged(&l, 2, 10000));
    leaver = local_owner(&l, 0, 0);
    REQUIRE(leaver >= 0);
    viewer = (leaver + 1) % 4;
    CHECK_RC(minishard_leave(l.nodes[leaver]), MINISHARD_OK);
    /* leave returned after deallocated(no winner, left) ran, exactly once. */
    CHECK(app_count(&l.apps[leaver], EV_DEALLOCATED) == 1);
    CHECK(app_last_release(&l.apps[leaver]) == MINISHARD_RELEASE_LEFT);
    CHECK(l.apps[leaver].events[l.apps[leaver].event_count - 1].kind != EV_ALLOCATED);
    CHECK(l.apps[leaver].state == NULL);
    CHECK_RC(minishard_leave(l.nodes[leaver]), MINISHARD_OK); /* again: no-op */
    CHECK_RC(minishard_get_node(l.nodes[leaver], 0, owner, sizeof owner, &written),
             MINISHARD_CLOSED);
    deadline = now_ms() + BOUND_MS * (double)time_scale();
    while (now_ms() < deadline) {
        int o = local_owner(&l, (size_t)viewer, 0);
        if (o >= 0 && o != leaver) {
            moved = 1;
            break;
        }
        pause_ms(2);
    }
    CHECK(moved);
    minishard_cluster_free(l.nodes[leaver]);
    l.nodes[leaver] = NULL;
    CHECK(l.apps[leaver].freed == 1);
    CHECK(local_converged(&l, 2, BOUND_MS));
    local_stop(&l);
}

static void a_split_two_two_heals_to_the_higher_score(void) {
    local l;
    const size_t left[2] = {0, 1}, right[2] = {2, 3};
    size_t i, e;
    int both_full = 0;
    double deadline, split_at;
    int failures_before = test_failures;
    REQUIRE(local_start(&l, "split22", 4, 2, MINISHARD_DISPATCH_THREAD));
    REQUIRE(local_converged(&l, 2, 10000));
    for (i = 0; i < 4; i++) {
        pthread_mutex_lock(&l.apps[i].lock);
        l.apps[i].score = i >= 2 ? 100 + (int64_t)i : (int64_t)i;
        pthread_mutex_unlock(&l.apps[i].lock);
    }
    split_at = now_ms();
    local_split(&l, left, 2, right, 2);
    /* Both halves have as many members as shards: each keeps both. */
    deadline = now_ms() + 2 * BOUND_MS * (double)time_scale();
    while (!both_full && now_ms() < deadline) {
        int l0 = local_owner(&l, 0, 0), l1 = local_owner(&l, 0, 1);
        int r0 = local_owner(&l, 2, 0), r1 = local_owner(&l, 2, 1);
        both_full = l0 >= 0 && l0 < 2 && l1 >= 0 && l1 < 2 && r0 >= 2 && r1 >= 2;
        if (!both_full) pause_ms(5);
    }
    CHECK(both_full);
    local_heal(&l);
    CHECK(local_converged(&l, 2, 2 * BOUND_MS));
    /* The right side scores higher: it keeps both shards. */
    CHECK(local_owner(&l, 0, 0) >= 2);
    CHECK(local_owner(&l, 0, 1) >= 2);
    /* Each loser heard deallocated(winner, lost_conflict); the winner heard
     * prolonged(loser) exactly once, with an epoch above the loser's: a
     * store fenced by epochs takes the winner's writes, not the loser's. */
    for (i = 0; i < 2; i++) {
        app *loser = &l.apps[left[i]];
        for (e = 0; e < loser->event_count; e++) {
            event *ev = &loser->events[e];
            size_t w, p, told = 0;
            if (ev->kind != EV_DEALLOCATED || ev->peer[0] == '\0') continue;
            CHECK(ev->reason == MINISHARD_RELEASE_LOST_CONFLICT);
            for (w = 2; w < 4; w++) {
                if (strcmp(ev->peer, l.addrs[w]) != 0) continue;
                for (p = 0; p < l.apps[w].event_count; p++) {
                    event *pe = &l.apps[w].events[p];
                    if (pe->kind != EV_PROLONGED || strcmp(pe->peer, l.addrs[left[i]]) != 0) continue;
                    told++;
                    CHECK(pe->shard == ev->shard);
                    CHECK(pe->epoch > ev->epoch);
                }
            }
            CHECK(told == 1);
        }
    }
    for (i = 0; i < 4; i++) CHECK(l.apps[i].discipline_errors == 0);
    {
        size_t lost = 0, scores = 0;
        for (i = 0; i < 2; i++) {
            for (e = 0; e < l.apps[left[i]].event_count; e++) {
                lost += l.apps[left[i]].events[e].kind == EV_DEALLOCATED &&
                        l.apps[left[i]].events[e].peer[0] != '\0';
            }
        }
        for (i = 0; i < 4; i++) scores += app_count(&l.apps[i], EV_SCORE);
        /* Two shards, so at least two losers. More is possible while the
         * heal reconnects: a loser that cannot see the winner yet may claim
         * the other shard its side just gave up, and lose a second,
         * separate conflict (checked pair by pair above). */
        CHECK(lost >= 2);
        CHECK(scores >= 4);
    }
    if (test_failures > failures_before) {
        for (i = 0; i < 4; i++) app_dump(&l.apps[i], l.addrs[i], split_at);
    }
    local_stop(&l);
}

/* Strict mode: two halves of four members each have as many members as
 * shards, but neither has a majority: both degrade and give their shards
 * up (no side keeps one), and nobody allocates anything during the split.
 * Healed, the cluster converges again. */
static void in_strict_mode_a_split_two_two_leaves_no_owner_on_either_side(void) {
    local l;
    const size_t left[2] = {0, 1}, right[2] = {2, 3};
    size_t i, allocated_before[4];
    int all_degraded = 0;
    double deadline, split_at;
    int failures_before = test_failures;
    REQUIRE(local_prepare(&l, "strict22", 4, 2, MINISHARD_DISPATCH_THREAD));
    l.quorum = MINISHARD_QUORUM_MAJORITY;
    for (i = 0; i < 4; i++) REQUIRE(local_join(&l, i));
    REQUIRE(local_converged(&l, 2, 10000));
    for (i = 0; i < 4; i++) allocated_before[i] = app_count(&l.apps[i], EV_ALLOCATED);
    split_at = now_ms();
    local_split(&l, left, 2, right, 2);
    deadline = now_ms() + 2 * BOUND_MS * (double)time_scale();
    while (!all_degraded && now_ms() < deadline) {
        all_degraded = 1;
        for (i = 0; i < 4; i++) {
            uint32_t shard;
            uint64_t epoch;
            all_degraded &= minishard_get_health(l.nodes[i]) == MINISHARD_HEALTH_DEGRADED &&
                            minishard_my_shard(l.nodes[i], &shard, &epoch) == MINISHARD_NOT_FOUND;
        }
        if (!all_degraded) pause_ms(5);
    }
    CHECK(all_degraded);
    /* Past the grace: still nobody claims a shard on either side. */
    pause_ms(2 * GRACE_MS * (double)time_scale());
    for (i = 0; i < 4; i++) {
        CHECK(app_count(&l.apps[i], EV_ALLOCATED) == allocated_before[i]);
        CHECK(local_owner(&l, i, 0) == -1 && local_owner(&l, i, 1) == -1);
        if (allocated_before[i] > 0) {
            CHECK(app_last_release(&l.apps[i]) == MINISHARD_RELEASE_DEGRADED);
        }
    }
    local_heal(&l);
    CHECK(local_converged(&l, 2, 2 * BOUND_MS));
    if (test_failures > failures_before) {
        for (i = 0; i < 4; i++) app_dump(&l.apps[i], l.addrs[i], split_at);
    }
    local_stop(&l);
}

static void failed_allocated_callbacks_release_the_shard_and_it_lands_elsewhere(void) {
    local l;
    size_t i, failed = 0, dangling = 0;
    uint64_t failed_callbacks = 0;
    char addrs[3][64];
    size_t n = 3;
    REQUIRE(free_addresses(n, addrs));
    memset(&l, 0, sizeof l);
    snprintf(l.name, sizeof l.name, "failing");
    l.n = n;
    l.dispatch = MINISHARD_DISPATCH_THREAD;
    l.main_thread = pthread_self();
    for (i = 0; i < n; i++) {
        memcpy(l.addrs[i], addrs[i], sizeof addrs[i]);
        l.members[i] = l.addrs[i];
        app_init(&l.apps[i], l.members, n, 1);
        l.apps[i].fail_allocations = 1; /* each node's first allocated fails */
    }
    for (i = 0; i < n; i++) REQUIRE(local_join(&l, i));
    CHECK(local_converged(&l, 1, 4 * BOUND_MS));
    for (i = 0; i < n; i++) {
        minishard_stats stats = {.struct_size = sizeof stats};
        size_t e;
        failed += app_count(&l.apps[i], EV_ALLOCATION_FAILED);
        CHECK_RC(minishard_get_stats(l.nodes[i], &stats), MINISHARD_OK);
        failed_callbacks += stats.failed_callbacks;
        /* A failed allocation is never followed by a deallocated for it. */
        for (e = 0; e + 1 < l.apps[i].event_count; e++) {
            dangling += l.apps[i].events[e].kind == EV_ALLOCATION_FAILED &&
                        l.apps[i].events[e + 1].kind == EV_DEALLOCATED;
        }
    }
    CHECK(failed >= 1);
    CHECK(failed_callbacks >= 1);
    CHECK(dangling == 0);
    local_stop(&l);
}

int main(void) {
    RUN(four_nodes_two_shards_converge_and_agree_on_owners);
    RUN(a_crashed_owner_fails_over_after_the_grace_while_readers_look_up);
    RUN(a_graceful_leave_hands_over_without_waiting_for_the_grace);
    RUN(a_split_two_two_heals_to_the_higher_score);
    RUN(in_strict_mode_a_split_two_two_leaves_no_owner_on_either_side);
    RUN(failed_allocated_callbacks_release_the_shard_and_it_lands_elsewhere);
    return finish("c-cluster");
}
