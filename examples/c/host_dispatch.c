/* A minishard node whose callbacks run on the program's own thread, from
 * its poll() loop (MINISHARD_DISPATCH_HOST): the way to embed minishard in
 * an event loop (epoll, libuv, asyncio, Node.js). Same arguments as node.c:
 *   ./host_dispatch [--seconds N] THIS_ADDRESS [OTHER_MEMBER ...]
 * Runs until Ctrl-C (or for --seconds N once available), then leaves. */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "minishard.h"

typedef struct { char **members; int count; } app;

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static minishard_result nodes(void *user_data, const char *cluster, minishard_node_list *out) {
    app *a = user_data;
    (void)cluster;
    for (int i = 0; i < a->count; i++) {
        minishard_result rc = minishard_node_list_push(out, a->members[i]);
        if (rc != MINISHARD_OK) return rc;
    }
    return MINISHARD_OK;
}
static int64_t shard_count(void *user_data, const char *cluster) {
    int members = ((app *)user_data)->count;
    (void)cluster;
    return members > 1 ? members - 1 : 1;          /* one node on standby */
}
static minishard_result allocated(void *user_data, const char *cluster, uint32_t shard,
                                  uint64_t epoch, void **state) {
    (void)user_data;
    *state = NULL;                                 /* nothing to keep in this example */
    printf("%s: now owns shard %u (epoch %llu)\n", cluster, shard, (unsigned long long)epoch);
    return MINISHARD_OK;
}
static int64_t score(void *user_data, void *state) { (void)user_data; (void)state; return 0; }
static minishard_result prolonged(void *user_data, const char *loser, void *state, void **new_state) {
    (void)user_data; (void)loser; (void)state; (void)new_state;
    return MINISHARD_OK;
}
static void deallocated(void *user_data, const char *winner, void *state) {
    (void)user_data; (void)state;
    printf("gave my shard up to %s\n", winner ? winner : "no one");
}

/* Runs the callbacks that are pending, waiting up to 100 ms for some. */
static minishard_result pump(minishard_cluster *cluster) {
    struct pollfd pfd = { .fd = minishard_event_fd(cluster), .events = POLLIN };
    size_t ran;
    if (poll(&pfd, 1, 100) > 0 && (pfd.revents & POLLIN))
        return minishard_dispatch(cluster, 64, &ran);  /* the callbacks run here */
    return MINISHARD_OK;
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    static const uint8_t cookie[] = "change me";
    minishard_callbacks cb = { .struct_size = sizeof cb };
    minishard_cluster *cluster = NULL;
    struct sigaction on_stop;
    double seconds = -1, deadline = seconds_now() + 30, until = 0;
    int available = 0, first = 1;
    char owner[MINISHARD_ADDRESS_MAX], message[256];
    size_t written;
    minishard_result rc;
    if (argc > 2 && strcmp(argv[1], "--seconds") == 0) { seconds = atof(argv[2]); first = 3; }
    if (argc <= first) {
        fprintf(stderr, "usage: %s [--seconds N] THIS_ADDRESS [OTHER_MEMBER ...]\n", argv[0]);
        return 2;
    }
    app a = { argv + first, argc - first };
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&on_stop, 0, sizeof on_stop);
    on_stop.sa_handler = on_signal;
    sigaction(SIGINT, &on_stop, NULL);
    sigaction(SIGTERM, &on_stop, NULL);

    cb.user_data = &a;
    cb.nodes = nodes; cb.shard_count = shard_count; cb.allocated_with_epoch = allocated;
    cb.score = score; cb.prolonged = prolonged; cb.deallocated = deallocated;
    minishard_config *cfg = minishard_config_new();
    minishard_config_set_listen(cfg, a.members[0]);
    minishard_config_set_cookie(cfg, cookie, sizeof cookie - 1);
    minishard_config_set_dispatch(cfg, MINISHARD_DISPATCH_HOST);
    rc = minishard_join("sessions", cfg, &cb, &cluster);   /* runs nodes and shard_count here */
    minishard_config_free(cfg);

    while (rc == MINISHARD_OK && !stop && (!available || seconds < 0 || seconds_now() < until)) {
        rc = pump(cluster);
        if (!available && minishard_get_health(cluster) == MINISHARD_HEALTH_AVAILABLE) {
            available = 1;
            until = seconds_now() + seconds;
            if (minishard_get_node(cluster, 0, owner, sizeof owner, &written) == MINISHARD_OK)
                printf("available; shard 0 lives on %s\n", owner);
        }
        if (!available && seconds_now() > deadline) rc = MINISHARD_TIMEOUT;
    }
    if (rc != MINISHARD_OK) {
        minishard_last_error(message, sizeof message);
        fprintf(stderr, "%s: %s\n", minishard_result_name(rc), rc == MINISHARD_TIMEOUT ? "not available within 30 s" : message);
    }
    minishard_cluster_free(cluster);               /* the leave's callbacks run here too */
    printf("left\n");
    return rc == MINISHARD_OK ? 0 : 1;
}
