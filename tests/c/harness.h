/*
 * A small test harness for the C ABI tests: checks that report the last
 * error, waits with deadlines, free loopback ports, and a recording test
 * application plus a local cluster of such applications on loopback (the C
 * twin of minishard/tests/common/mod.rs).
 *
 * Header-only: each test program includes it once.
 */
#ifndef MINISHARD_TEST_HARNESS_H
#define MINISHARD_TEST_HARNESS_H

#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "minishard.h"

/* ---- checks ------------------------------------------------------------ */

static int test_failures; /* checks failed in the running test */

static inline void print_last_error(void) {
    char message[512];
    if (minishard_last_error(message, sizeof message) > 0) {
        fprintf(stderr, "    last error: %s\n", message);
    }
}

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__,         \
                    __LINE__, #cond);                                        \
            test_failures++;                                                 \
        }                                                                    \
    } while (0)

/* Like CHECK, but the test cannot go on without it. */
#define REQUIRE(cond)                                                        \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "  %s:%d: REQUIRE(%s) failed\n", __FILE__,       \
                    __LINE__, #cond);                                        \
            print_last_error();                                              \
            test_failures++;                                                 \
            return;                                                          \
        }                                                                    \
    } while (0)

/* A call that must return `expected`; prints the message if it does not. */
#define CHECK_RC(call, expected)                                             \
    do {                                                                     \
        minishard_result rc_ = (call);                                       \
        if (rc_ != (expected)) {                                             \
            fprintf(stderr, "  %s:%d: %s returned %s, expected %s\n",        \
                    __FILE__, __LINE__, #call, minishard_result_name(rc_),   \
                    minishard_result_name(expected));                        \
            print_last_error();                                              \
            test_failures++;                                                 \
        }                                                                    \
    } while (0)

#define REQUIRE_OK(call)                                                     \
    do {                                                                     \
        minishard_result rc_ = (call);                                       \
        if (rc_ != MINISHARD_OK) {                                           \
            fprintf(stderr, "  %s:%d: %s returned %s\n", __FILE__, __LINE__, \
                    #call, minishard_result_name(rc_));                      \
            print_last_error();                                              \
            test_failures++;                                                 \
            return;                                                          \
        }                                                                    \
    } while (0)

/* The calling thread's last error message contains `needle`. */
static inline int last_error_mentions(const char *needle) {
    char message[1024];
    minishard_last_error(message, sizeof message);
    if (strstr(message, needle) == NULL) {
        fprintf(stderr, "    last error %s does not mention %s\n", message,
                needle);
        return 0;
    }
    return 1;
}

/* ---- running tests ----------------------------------------------------- */

static int tests_passed;
static int tests_failed;

static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Slower timings and longer deadlines under valgrind (TIME_SCALE=4). */
static inline uint64_t time_scale(void) {
    const char *scale = getenv("TIME_SCALE");
    long value = scale ? strtol(scale, NULL, 10) : 1;
    return value >= 1 ? (uint64_t)value : 1;
}

/* Runs one test, unless TEST_FILTER is set and not part of its name. */
static inline void run_test(const char *name, void (*test)(void)) {
    double start = now_ms();
    const char *filter = getenv("TEST_FILTER");
    if (filter != NULL && strstr(name, filter) == NULL) return;
    test_failures = 0;
    fprintf(stderr, "test %s ...\n", name);
    test();
    if (test_failures == 0) {
        tests_passed++;
        printf("ok   %s (%.0f ms)\n", name, now_ms() - start);
    } else {
        tests_failed++;
        printf("FAIL %s (%d failed checks)\n", name, test_failures);
    }
    fflush(stdout);
}

#define RUN(test) run_test(#test, test)

static inline int finish(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, tests_passed, tests_failed);
    return tests_failed == 0 ? 0 : 1;
}

/* Sleeps a little between two looks at a condition with a deadline. */
static inline void pause_ms(unsigned ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* ---- free loopback ports ----------------------------------------------- */

/* Fills addrs[i] with "127.0.0.1:PORT" for n ports free right now (bound
 * together on port 0, then released). */
static inline int free_addresses(size_t n, char addrs[][64]) {
    int fds[16];
    size_t i;
    if (n > 16) return 0;
    for (i = 0; i < n; i++) {
        struct sockaddr_in sa;
        socklen_t sa_len = sizeof sa;
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = 0;
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&sa, sizeof sa) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&sa, &sa_len) != 0) {
            return 0;
        }
        snprintf(addrs[i], 64, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    }
    for (i = 0; i < n; i++) close(fds[i]);
    return 1;
}

/* ---- the recording test application ------------------------------------ */

#define MAX_NODES 8
#define MAX_EVENTS 512

typedef enum {
    EV_ALLOCATED,
    EV_ALLOCATION_FAILED,
    EV_SCORE,
    EV_PROLONGED,
    EV_DEALLOCATED,
    EV_STATUS
} event_kind;

typedef struct {
    event_kind kind;
    uint32_t shard;
    uint64_t epoch;
    char peer[MINISHARD_ADDRESS_MAX]; /* loser or winner; "" for none */
    minishard_release_reason reason;  /* deallocated: why */
    uint64_t loser_epoch;             /* prolonged: the loser's epoch, if known */
    minishard_health old_health, new_health;
    pthread_t thread;
    double at_ms;
} event;

/* What the application keeps per allocation. */
typedef struct {
    uint32_t shard;
    uint64_t epoch;
    int prolonged;
} shard_state;

typedef struct {
    pthread_mutex_t lock;
    const char *const *members; /* the member list, shared by the cluster */
    size_t member_count;
    int64_t shards;
    int64_t score;
    int fail_allocations; /* this many allocated calls fail first */
    event events[MAX_EVENTS];
    size_t event_count;
    shard_state *state;    /* the current allocation's state, or NULL */
    int discipline_errors; /* allocated/deallocated out of order */
    int dispatching;       /* host mode: the test is inside dispatch/leave */
    int outside_dispatch;  /* host mode: callbacks run outside it */
    int freed;             /* free_user_data calls */
    /* For the reentrancy test: the handle and what calls on it gave. */
    minishard_cluster *self;
    int reentered;
    minishard_result leave_rc, dispatch_rc, wait_rc;
} app;

static inline void app_init(app *a, const char *const *members, size_t member_count,
                     int64_t shards) {
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->lock, NULL);
    a->members = members;
    a->member_count = member_count;
    a->shards = shards;
}

static inline void app_destroy(app *a) {
    /* A crashed node's allocation gets no deallocated: its state is ours. */
    free(a->state);
    a->state = NULL;
    pthread_mutex_destroy(&a->lock);
}

static inline event *app_record(app *a, event_kind kind) {
    event *e;
    if (a->event_count >= MAX_EVENTS) return NULL;
    e = &a->events[a->event_count++];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->thread = pthread_self();
    e->at_ms = now_ms();
    if (!a->dispatching) a->outside_dispatch++;
    return e;
}

static inline size_t app_count(app *a, event_kind kind) {
    size_t i, n = 0;
    pthread_mutex_lock(&a->lock);
    for (i = 0; i < a->event_count; i++) n += a->events[i].kind == kind;
    pthread_mutex_unlock(&a->lock);
    return n;
}

static inline minishard_result app_nodes(void *user_data, const char *cluster,
                                  minishard_node_list *out) {
    app *a = user_data;
    size_t i;
    (void)cluster;
    for (i = 0; i < a->member_count; i++) {
        minishard_result rc = minishard_node_list_push(out, a->members[i]);
        if (rc != MINISHARD_OK) return rc;
    }
    return MINISHARD_OK;
}

static inline int64_t app_shard_count(void *user_data, const char *cluster) {
    (void)cluster;
    return ((app *)user_data)->shards;
}

static inline minishard_result app_allocated(void *user_data, const char *cluster,
                                      uint32_t shard, uint64_t epoch,
                                      void **state) {
    app *a = user_data;
    shard_state *s;
    event *e;
    (void)cluster;
    pthread_mutex_lock(&a->lock);
    if (a->fail_allocations > 0) {
        a->fail_allocations--;
        e = app_record(a, EV_ALLOCATION_FAILED);
        if (e) e->shard = shard;
        pthread_mutex_unlock(&a->lock);
        return MINISHARD_CALLBACK_FAILED;
    }
    if (a->state != NULL) a->discipline_errors++; /* two allocations at once */
    s = malloc(sizeof *s);
    s->shard = shard;
    s->epoch = epoch;
    s->prolonged = 0;
    a->state = s;
    *state = s;
    e = app_record(a, EV_ALLOCATED);
    if (e) {
        e->shard = shard;
        e->epoch = epoch;
    }
    pthread_mutex_unlock(&a->lock);
    return MINISHARD_OK;
}

static inline int64_t app_score(void *user_data, void *state) {
    app *a = user_data;
    int64_t score;
    pthread_mutex_lock(&a->lock);
    if (state != a->state) a->discipline_errors++;
    score = a->score;
    app_record(a, EV_SCORE);
    pthread_mutex_unlock(&a->lock);
    return score;
}

static inline minishard_result app_prolonged(void *user_data, const char *loser,
                                             uint64_t epoch, void *state,
                                             void **new_state) {
    app *a = user_data;
    shard_state *s = state;
    event *e;
    pthread_mutex_lock(&a->lock);
    if (state != a->state || *new_state != state) a->discipline_errors++;
    /* The epoch never goes down. */
    if (epoch < s->epoch) a->discipline_errors++;
    s->prolonged++;
    s->epoch = epoch;
    e = app_record(a, EV_PROLONGED);
    if (e) {
        snprintf(e->peer, sizeof e->peer, "%s", loser);
        e->shard = s->shard;
        e->epoch = epoch;
    }
    pthread_mutex_unlock(&a->lock);
    return MINISHARD_OK;
}

static inline void app_deallocated(void *user_data, const char *winner,
                                   minishard_release_reason reason, void *state) {
    app *a = user_data;
    event *e;
    pthread_mutex_lock(&a->lock);
    if (state == NULL || state != a->state) a->discipline_errors++;
    /* A winner is named exactly when a conflict was lost. */
    if ((winner != NULL) != (reason == MINISHARD_RELEASE_LOST_CONFLICT)) a->discipline_errors++;
    e = app_record(a, EV_DEALLOCATED);
    if (e && state) {
        e->shard = ((shard_state *)state)->shard;
        e->epoch = ((shard_state *)state)->epoch;
    }
    if (e) e->reason = reason;
    if (e && winner) snprintf(e->peer, sizeof e->peer, "%s", winner);
    a->state = NULL;
    free(state);
    pthread_mutex_unlock(&a->lock);
}

/* The reason of the last deallocated an app heard, or -1 for none. */
static inline int app_last_release(app *a) {
    int reason = -1;
    size_t i;
    pthread_mutex_lock(&a->lock);
    for (i = 0; i < a->event_count; i++) {
        if (a->events[i].kind == EV_DEALLOCATED) reason = (int)a->events[i].reason;
    }
    pthread_mutex_unlock(&a->lock);
    return reason;
}

static inline void app_status_changed(void *user_data, const char *cluster,
                               minishard_health old_health,
                               minishard_health new_health) {
    app *a = user_data;
    event *e;
    (void)cluster;
    pthread_mutex_lock(&a->lock);
    e = app_record(a, EV_STATUS);
    if (e) {
        e->old_health = old_health;
        e->new_health = new_health;
    }
    pthread_mutex_unlock(&a->lock);
}

static inline void app_free(void *user_data) {
    app *a = user_data;
    pthread_mutex_lock(&a->lock);
    a->freed++;
    pthread_mutex_unlock(&a->lock);
}

static inline minishard_callbacks app_callbacks(app *a) {
    minishard_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.struct_size = sizeof cb;
    cb.user_data = a;
    cb.nodes = app_nodes;
    cb.shard_count = app_shard_count;
    cb.allocated_with_epoch = app_allocated;
    cb.score = app_score;
    cb.prolonged_with_epoch = app_prolonged;
    cb.deallocated_with_reason = app_deallocated;
    cb.status_changed = app_status_changed;
    cb.free_user_data = app_free;
    return cb;
}

static inline const char *health_name(minishard_health h) {
    return h == MINISHARD_HEALTH_AVAILABLE ? "available"
           : h == MINISHARD_HEALTH_TRANSITION ? "transition" : "degraded";
}

/* Prints what an app was told, for a failing check's context. */
static inline void app_dump(app *a, const char *label, double origin_ms) {
    size_t e;
    static const char *const kinds[] = {"allocated", "allocation-failed", "score",
                                        "prolonged", "deallocated", "status"};
    pthread_mutex_lock(&a->lock);
    fprintf(stderr, "    %s:", label);
    for (e = 0; e < a->event_count; e++) {
        event *ev = &a->events[e];
        fprintf(stderr, " [%.0fms %s", ev->at_ms - origin_ms, kinds[ev->kind]);
        if (ev->kind == EV_ALLOCATED || ev->kind == EV_DEALLOCATED) fprintf(stderr, " s%u", ev->shard);
        if (ev->peer[0]) fprintf(stderr, " %s", ev->peer);
        if (ev->kind == EV_STATUS) {
            fprintf(stderr, " %s->%s", health_name(ev->old_health), health_name(ev->new_health));
        }
        fprintf(stderr, "]");
    }
    fprintf(stderr, "\n");
    pthread_mutex_unlock(&a->lock);
}

/* ---- configuration with fast timings ----------------------------------- */

/* The timings of minishard/tests/common/mod.rs, times TIME_SCALE. */
static inline minishard_config *fast_config(const char *listen,
                                     minishard_dispatch_mode dispatch) {
    static const uint8_t cookie[] = "test-cookie";
    uint64_t k = time_scale();
    minishard_config *cfg = minishard_config_new();
    if (cfg == NULL) return NULL;
    if (minishard_config_set_listen(cfg, listen) != MINISHARD_OK ||
        minishard_config_set_cookie(cfg, cookie, sizeof cookie - 1) != MINISHARD_OK ||
        minishard_config_set_heartbeat_interval_ms(cfg, 50 * k) != MINISHARD_OK ||
        minishard_config_set_heartbeat_timeout_ms(cfg, 250 * k) != MINISHARD_OK ||
        minishard_config_set_transition_timeout_ms(cfg, 500 * k) != MINISHARD_OK ||
        minishard_config_set_node_grace_ms(cfg, 750 * k) != MINISHARD_OK ||
        minishard_config_set_settle_ms(cfg, 10 * k) != MINISHARD_OK ||
        minishard_config_set_score_deadline_ms(cfg, 500 * k) != MINISHARD_OK ||
        minishard_config_set_member_poll_ms(cfg, 1000 * k) != MINISHARD_OK ||
        minishard_config_set_allocation_retry_ms(cfg, 300 * k) != MINISHARD_OK ||
        minishard_config_set_dispatch(cfg, dispatch) != MINISHARD_OK) {
        print_last_error();
        minishard_config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* ---- a local cluster ---------------------------------------------------- */

typedef struct {
    char name[64];
    size_t n;
    char addrs[MAX_NODES][64];
    const char *members[MAX_NODES];
    app apps[MAX_NODES];
    minishard_cluster *nodes[MAX_NODES];
    minishard_dispatch_mode dispatch;
    pthread_t main_thread;
    /* When set, node i joins with these TLS files (see test_tls.c). */
    const char *tls_cert[MAX_NODES], *tls_key[MAX_NODES], *tls_ca[MAX_NODES];
    /* When set, every node's node_grace (ms, before TIME_SCALE). */
    uint64_t node_grace_ms;
    /* When set, every node's handle_request (see test_requests.c). */
    void (*handle_request)(void *user_data, void *state, const uint8_t *payload, size_t len,
                           minishard_responder *responder);
    /* When set, node i publishes the metadata "http" = "node-<i>". */
    int with_metadata;
    /* When set, every node's cap on requests in flight. */
    size_t max_requests_in_flight;
    /* When set, every node's hand-off callbacks (see test_requests.c). */
    minishard_result (*allocated_with_hand_off)(void *user_data, const char *cluster,
                                                uint32_t shard, uint64_t epoch,
                                                const minishard_hand_off *hand_off_or_null,
                                                void **state);
    void (*deallocated_with_hand_off)(void *user_data, const char *winner_or_null,
                                      minishard_release_reason reason, void *state,
                                      minishard_hand_off_writer *hand_off);
    /* Every node's quorum (MINISHARD_QUORUM_ANY unless set). */
    minishard_quorum quorum;
} local;

/* Joins node i. */
static inline int local_join(local *l, size_t i) {
    minishard_callbacks cb = app_callbacks(&l->apps[i]);
    minishard_config *cfg = fast_config(l->addrs[i], l->dispatch);
    minishard_result rc;
    char meta[32];
    if (cfg == NULL) return 0;
    cb.handle_request = l->handle_request;
    cb.allocated_with_hand_off = l->allocated_with_hand_off;
    cb.deallocated_with_hand_off = l->deallocated_with_hand_off;
    snprintf(meta, sizeof meta, "node-%zu", i);
    if ((l->with_metadata && minishard_config_set_metadata(cfg, "http", meta) != MINISHARD_OK) ||
        (l->max_requests_in_flight != 0 &&
         minishard_config_set_max_requests_in_flight(cfg, l->max_requests_in_flight) !=
             MINISHARD_OK)) {
        print_last_error();
        minishard_config_free(cfg);
        return 0;
    }
    if (l->node_grace_ms != 0 &&
        minishard_config_set_node_grace_ms(cfg, l->node_grace_ms * time_scale()) != MINISHARD_OK) {
        print_last_error();
        minishard_config_free(cfg);
        return 0;
    }
    if (minishard_config_set_quorum(cfg, l->quorum) != MINISHARD_OK) {
        print_last_error();
        minishard_config_free(cfg);
        return 0;
    }
    if (l->tls_cert[i] != NULL &&
        minishard_config_set_tls(cfg, l->tls_cert[i], l->tls_key[i], l->tls_ca[i]) != MINISHARD_OK) {
        print_last_error();
        minishard_config_free(cfg);
        return 0;
    }
    rc = minishard_join(l->name, cfg, &cb, &l->nodes[i]);
    minishard_config_free(cfg);
    if (rc != MINISHARD_OK) {
        fprintf(stderr, "  join of node %zu: %s\n", i, minishard_result_name(rc));
        print_last_error();
        return 0;
    }
    return 1;
}

/* Prepares n members keeping `shards` shards, without joining them. */
static inline int local_prepare(local *l, const char *name, size_t n, int64_t shards,
                                minishard_dispatch_mode dispatch) {
    size_t i;
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", name);
    l->n = n;
    l->dispatch = dispatch;
    l->main_thread = pthread_self();
    if (!free_addresses(n, l->addrs)) return 0;
    for (i = 0; i < n; i++) {
        l->members[i] = l->addrs[i];
        app_init(&l->apps[i], l->members, n, shards);
    }
    return 1;
}

/* Starts n members keeping `shards` shards. */
static inline int local_start(local *l, const char *name, size_t n, int64_t shards,
                       minishard_dispatch_mode dispatch) {
    size_t i;
    if (!local_prepare(l, name, n, shards, dispatch)) return 0;
    for (i = 0; i < n; i++) {
        if (!local_join(l, i)) return 0;
    }
    return 1;
}

/* Frees every running node among the first `apps`, checks each app was
 * freed exactly once and followed the callback discipline, and releases the
 * apps. (Nodes from `apps` on run in other processes.) */
static inline void local_stop_first(local *l, size_t apps) {
    size_t i;
    for (i = 0; i < apps; i++) {
        if (l->nodes[i] != NULL) {
            l->apps[i].dispatching = 1;
            minishard_cluster_free(l->nodes[i]);
            l->apps[i].dispatching = 0;
            l->nodes[i] = NULL;
        }
    }
    for (i = 0; i < apps; i++) {
        CHECK(l->apps[i].freed == 1);
        CHECK(l->apps[i].discipline_errors == 0);
        app_destroy(&l->apps[i]);
    }
}

/* local_stop_first for a cluster wholly in this process. */
static inline void local_stop(local *l) { local_stop_first(l, l->n); }


/* Which node index owns `shard` in node `viewer`'s view, or -1. */
static inline int local_owner(local *l, size_t viewer, uint32_t shard) {
    char owner[MINISHARD_ADDRESS_MAX];
    size_t written, i;
    if (minishard_get_node(l->nodes[viewer], shard, owner, sizeof owner,
                           &written) != MINISHARD_OK) {
        return -1;
    }
    for (i = 0; i < l->n; i++) {
        if (strcmp(owner, l->addrs[i]) == 0) return (int)i;
    }
    return -2; /* an owner that is not a member: never expected */
}

/* Whether every running node is available and all report the same complete
 * shard map. */
static inline int local_agrees(local *l, uint32_t shards) {
    size_t i;
    uint32_t s;
    int first = -1;
    for (i = 0; i < l->n; i++) {
        if (l->nodes[i] == NULL) continue;
        if (minishard_get_health(l->nodes[i]) != MINISHARD_HEALTH_AVAILABLE) return 0;
        if (first < 0) first = (int)i;
        for (s = 0; s < shards; s++) {
            int owner = local_owner(l, i, s);
            if (owner < 0 || owner != local_owner(l, (size_t)first, s)) return 0;
        }
    }
    return first >= 0;
}

/* Waits, with a deadline, until every running node agrees (see above). */
static inline int local_converged(local *l, uint32_t shards, double timeout_ms) {
    double deadline = now_ms() + timeout_ms * (double)time_scale();
    while (now_ms() < deadline) {
        if (local_agrees(l, shards)) return 1;
        pause_ms(5);
    }
    if (local_agrees(l, shards)) return 1;
    fprintf(stderr, "  not converged within %.0f ms:", timeout_ms * (double)time_scale());
    {
        size_t i;
        for (i = 0; i < l->n; i++) {
            if (l->nodes[i] == NULL) continue;
            fprintf(stderr, " node%zu=%s[%d,%d]", i,
                    minishard_get_health(l->nodes[i]) == MINISHARD_HEALTH_AVAILABLE
                        ? "available" : "not-available",
                    local_owner(l, i, 0), shards > 1 ? local_owner(l, i, 1) : -1);
        }
        fprintf(stderr, "\n");
    }
    return 0;
}

#ifdef MINISHARD_TESTING
/* Fault injection: only with a library built with the `testing` feature. */

/* Node i dies without a word (its app is kept for inspection). */
static inline void local_crash(local *l, size_t i) {
    minishard_testing_crash(l->nodes[i]);
    l->nodes[i] = NULL;
}

/* Cuts every link between groups a and b, both ways. */
static inline void local_split(local *l, const size_t *a, size_t na, const size_t *b,
                        size_t nb) {
    size_t i, j;
    for (i = 0; i < na; i++) {
        for (j = 0; j < nb; j++) {
            CHECK_RC(minishard_testing_cut(l->nodes[a[i]], l->addrs[b[j]]), MINISHARD_OK);
            CHECK_RC(minishard_testing_cut(l->nodes[b[j]], l->addrs[a[i]]), MINISHARD_OK);
        }
    }
}

static inline void local_heal(local *l) {
    size_t i;
    for (i = 0; i < l->n; i++) {
        if (l->nodes[i]) CHECK_RC(minishard_testing_heal_all(l->nodes[i]), MINISHARD_OK);
    }
}
#endif /* MINISHARD_TESTING */

#endif /* MINISHARD_TEST_HARNESS_H */
