/*
 * Host dispatch: four nodes with MINISHARD_DISPATCH_HOST driven by one
 * poll() loop over their event fds on the test's own thread, the way an
 * epoll/libuv/asyncio host would. Callbacks must run only inside
 * minishard_dispatch (or minishard_leave / free), on this thread.
 */
#include "harness.h"

#include <poll.h>

/* Runs the event loop until `done(l)` or the deadline; returns done(l). */
static int pump(local *l, int (*done)(local *), double timeout_ms, size_t *dispatched) {
    double deadline = now_ms() + timeout_ms * (double)time_scale();
    for (;;) {
        struct pollfd fds[MAX_NODES];
        size_t owner[MAX_NODES];
        size_t i, n = 0;
        int ready;
        if (done(l)) return 1;
        if (now_ms() >= deadline) return 0;
        for (i = 0; i < l->n; i++) {
            if (l->nodes[i] == NULL) continue;
            fds[n].fd = minishard_event_fd(l->nodes[i]);
            fds[n].events = POLLIN;
            fds[n].revents = 0;
            owner[n++] = i;
        }
        /* A short timeout: `done` also depends on the network. */
        ready = poll(fds, (nfds_t)n, 10);
        if (ready < 0) return 0;
        for (i = 0; i < n; i++) {
            size_t ran = 0;
            if (!(fds[i].revents & POLLIN)) continue;
            l->apps[owner[i]].dispatching = 1;
            if (minishard_dispatch(l->nodes[owner[i]], 64, &ran) != MINISHARD_OK) {
                print_last_error();
                test_failures++;
            }
            l->apps[owner[i]].dispatching = 0;
            *dispatched += ran;
        }
    }
}

static int two_shards_agreed(local *l) {
    return local_agrees(l, 2);
}

static void check_callbacks_on_main_thread_inside_dispatch(local *l) {
    size_t i, e;
    for (i = 0; i < l->n; i++) {
        CHECK(l->apps[i].outside_dispatch == 0);
        for (e = 0; e < l->apps[i].event_count; e++) {
            CHECK(pthread_equal(l->apps[i].events[e].thread, l->main_thread));
        }
    }
}

static void a_poll_loop_on_the_event_fds_drives_four_nodes_to_agreement(void) {
    local l;
    size_t i, dispatched = 0;
    int leaver;
    REQUIRE(local_start(&l, "host", 4, 2, MINISHARD_DISPATCH_HOST));
    for (i = 0; i < l.n; i++) {
        int fd = minishard_event_fd(l.nodes[i]);
        CHECK(fd >= 0);
        CHECK(fd == minishard_event_fd(l.nodes[i])); /* the same fd each time */
    }
    /* Callbacks wait for the host: once node 0's fd says some are pending,
     * none has run, and without its allocated callbacks no node can be
     * available. */
    {
        struct pollfd fd;
        fd.fd = minishard_event_fd(l.nodes[0]);
        fd.events = POLLIN;
        fd.revents = 0;
        CHECK(poll(&fd, 1, (int)(5000 * time_scale())) == 1 && (fd.revents & POLLIN));
        for (i = 0; i < l.n; i++) {
            CHECK(l.apps[i].event_count == 0);
            CHECK(minishard_get_health(l.nodes[i]) != MINISHARD_HEALTH_AVAILABLE);
        }
    }
    CHECK(pump(&l, two_shards_agreed, 10000, &dispatched));
    CHECK(dispatched >= 2);
    {
        size_t allocations = 0;
        for (i = 0; i < l.n; i++) allocations += app_count(&l.apps[i], EV_ALLOCATED);
        CHECK(allocations == 2);
    }
    /* Once drained and quiet, the fd is not readable. */
    {
        int quiet = 0;
        double deadline = now_ms() + 2000.0 * (double)time_scale();
        while (!quiet && now_ms() < deadline) {
            struct pollfd fd;
            size_t ran = 0;
            fd.fd = minishard_event_fd(l.nodes[0]);
            fd.events = POLLIN;
            fd.revents = 0;
            l.apps[0].dispatching = 1;
            CHECK_RC(minishard_dispatch(l.nodes[0], 1000, &ran), MINISHARD_OK);
            l.apps[0].dispatching = 0;
            quiet = ran == 0 && poll(&fd, 1, 0) == 0;
            if (!quiet) pause_ms(5);
        }
        CHECK(quiet);
    }
    /* A leave in host mode runs its callbacks inside minishard_leave. */
    leaver = local_owner(&l, 0, 1);
    REQUIRE(leaver >= 0);
    l.apps[leaver].dispatching = 1;
    CHECK_RC(minishard_leave(l.nodes[leaver]), MINISHARD_OK);
    l.apps[leaver].dispatching = 0;
    CHECK(app_count(&l.apps[leaver], EV_DEALLOCATED) == 1);
    CHECK_RC(minishard_dispatch(l.nodes[leaver], 1, NULL), MINISHARD_CLOSED);
    minishard_cluster_free(l.nodes[leaver]);
    l.nodes[leaver] = NULL;
    CHECK(pump(&l, two_shards_agreed, 4 * (250.0 + 750.0 + 100.0), &dispatched));
    check_callbacks_on_main_thread_inside_dispatch(&l);
    local_stop(&l);
}

/* In host mode the reentrancy guard matters most: dispatch from inside a
 * callback would run callbacks inside callbacks. */
static minishard_result reentrant_allocated(void *user_data, const char *cluster, uint32_t shard,
                                            uint64_t epoch, void **state) {
    app *a = user_data;
    if (a->self != NULL && !a->reentered) {
        a->leave_rc = minishard_leave(a->self);
        a->dispatch_rc = minishard_dispatch(a->self, 1, NULL);
        minishard_cluster_free(a->self); /* refused: the handle stays valid */
        a->reentered = 1;
    }
    return app_allocated(user_data, cluster, shard, epoch, state);
}

static int one_available(local *l) {
    return minishard_get_health(l->nodes[0]) == MINISHARD_HEALTH_AVAILABLE;
}

static void a_host_callback_cannot_leave_dispatch_or_free_its_own_handle(void) {
    local l;
    minishard_callbacks cb;
    minishard_config *cfg;
    size_t dispatched = 0;
    memset(&l, 0, sizeof l);
    snprintf(l.name, sizeof l.name, "host-reenter");
    l.n = 1;
    l.dispatch = MINISHARD_DISPATCH_HOST;
    l.main_thread = pthread_self();
    REQUIRE(free_addresses(1, l.addrs));
    l.members[0] = l.addrs[0];
    app_init(&l.apps[0], l.members, 1, 1);
    cb = app_callbacks(&l.apps[0]);
    cb.allocated_with_epoch = reentrant_allocated;
    cfg = fast_config(l.addrs[0], MINISHARD_DISPATCH_HOST);
    REQUIRE(cfg != NULL);
    REQUIRE_OK(minishard_join(l.name, cfg, &cb, &l.nodes[0]));
    minishard_config_free(cfg);
    l.apps[0].self = l.nodes[0]; /* callbacks run only when we dispatch */
    CHECK(pump(&l, one_available, 10000, &dispatched));
    CHECK(l.apps[0].reentered);
    CHECK(l.apps[0].leave_rc == MINISHARD_INVALID_ARGUMENT);
    CHECK(l.apps[0].dispatch_rc == MINISHARD_INVALID_ARGUMENT);
    check_callbacks_on_main_thread_inside_dispatch(&l);
    local_stop(&l);
}

/* Where nodes and shard_count ran at join. */
typedef struct {
    app base; /* first: the app callbacks see an app */
    pthread_t nodes_thread, shard_count_thread;
    int nodes_calls, shard_count_calls;
} join_threads;

static minishard_result recording_nodes(void *user_data, const char *cluster,
                                        minishard_node_list *out) {
    join_threads *j = user_data;
    pthread_mutex_lock(&j->base.lock);
    if (j->nodes_calls++ == 0) j->nodes_thread = pthread_self();
    pthread_mutex_unlock(&j->base.lock);
    return app_nodes(user_data, cluster, out);
}

static int64_t recording_shard_count(void *user_data, const char *cluster) {
    join_threads *j = user_data;
    pthread_mutex_lock(&j->base.lock);
    if (j->shard_count_calls++ == 0) j->shard_count_thread = pthread_self();
    pthread_mutex_unlock(&j->base.lock);
    return app_shard_count(user_data, cluster);
}

typedef struct {
    minishard_dispatch_mode mode;
    const char *address;
    join_threads *app;
    pthread_t self;
    minishard_result rc;
    minishard_cluster *cluster;
} joiner;

static void *join_from_this_thread(void *arg) {
    joiner *jn = arg;
    minishard_callbacks cb = app_callbacks(&jn->app->base);
    minishard_config *cfg = fast_config(jn->address, jn->mode);
    jn->self = pthread_self();
    cb.user_data = jn->app;
    cb.nodes = recording_nodes;
    cb.shard_count = recording_shard_count;
    jn->rc = cfg ? minishard_join("join-thread", cfg, &cb, &jn->cluster) : MINISHARD_CONFIG;
    minishard_config_free(cfg);
    return NULL;
}

/* Joins from a thread of the test's own; returns where the join-time
 * callbacks ran, relative to that thread. */
static void join_from_a_thread(minishard_dispatch_mode mode, int *on_joining_thread) {
    char addr[1][64];
    const char *members[1];
    join_threads j;
    joiner jn;
    pthread_t thread;
    *on_joining_thread = -1;
    REQUIRE(free_addresses(1, addr));
    members[0] = addr[0];
    memset(&j, 0, sizeof j);
    app_init(&j.base, members, 1, 1);
    memset(&jn, 0, sizeof jn);
    jn.mode = mode;
    jn.address = addr[0];
    jn.app = &j;
    REQUIRE(pthread_create(&thread, NULL, join_from_this_thread, &jn) == 0);
    REQUIRE(pthread_join(thread, NULL) == 0);
    CHECK_RC(jn.rc, MINISHARD_OK);
    pthread_mutex_lock(&j.base.lock);
    CHECK(j.nodes_calls >= 1 && j.shard_count_calls == 1);
    if (j.nodes_calls >= 1 && j.shard_count_calls == 1) {
        int nodes_here = pthread_equal(j.nodes_thread, jn.self) != 0;
        int shard_count_here = pthread_equal(j.shard_count_thread, jn.self) != 0;
        CHECK(nodes_here == shard_count_here);
        *on_joining_thread = nodes_here;
    }
    pthread_mutex_unlock(&j.base.lock);
    j.base.dispatching = 1; /* a host-mode leave runs its callbacks here */
    minishard_cluster_free(jn.cluster);
    CHECK(j.base.freed == 1);
    app_destroy(&j.base);
}

/* A single-threaded host (Node.js calling join synchronously) can run
 * callbacks only on the thread that is inside minishard_join. */
static void host_mode_join_runs_nodes_and_shard_count_on_the_joining_thread(void) {
    int on_joining_thread;
    join_from_a_thread(MINISHARD_DISPATCH_HOST, &on_joining_thread);
    CHECK(on_joining_thread == 1);
    /* Thread mode keeps its promise: never on the joining thread. */
    join_from_a_thread(MINISHARD_DISPATCH_THREAD, &on_joining_thread);
    CHECK(on_joining_thread == 0);
}

int main(void) {
    RUN(a_poll_loop_on_the_event_fds_drives_four_nodes_to_agreement);
    RUN(a_host_callback_cannot_leave_dispatch_or_free_its_own_handle);
    RUN(host_mode_join_runs_nodes_and_shard_count_on_the_joining_thread);
    return finish("c-host-dispatch");
}
