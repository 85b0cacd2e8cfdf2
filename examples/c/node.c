/* One member of a minishard cluster. Run one per member, each with its own
 * address first, then the others:
 *   ./node 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003
 * The cluster keeps one shard fewer than it has members, so one node is on
 * standby and any one of them can leave without leaving a shard homeless.
 * Runs until Ctrl-C (or for --seconds N once available), then leaves. */
#define _POSIX_C_SOURCE 200809L
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
    uint32_t *mine = malloc(sizeof *mine);         /* the shard's data lives here */
    (void)user_data;
    if (mine == NULL) return MINISHARD_CALLBACK_FAILED;   /* back off, stay on standby */
    *mine = shard;
    *state = mine;
    printf("%s: now owns shard %u (epoch %llu)\n", cluster, shard, (unsigned long long)epoch);
    return MINISHARD_OK;
}
static int64_t score(void *user_data, void *state) { (void)user_data; (void)state; return 0; }
static minishard_result prolonged(void *user_data, const char *loser, uint64_t epoch, void *state,
                                  void **new_state) {
    (void)user_data; (void)state; (void)new_state;
    printf("kept my shard against %s, now at epoch %llu\n", loser, (unsigned long long)epoch);
    return MINISHARD_OK;
}
static void deallocated(void *user_data, const char *winner, minishard_release_reason reason,
                        void *state) {
    (void)user_data;
    printf("gave shard %u up to %s (%s)\n", *(uint32_t *)state, winner ? winner : "no one",
           minishard_release_reason_name(reason));
    free(state);
}
static void status_changed(void *user_data, const char *cluster, minishard_health old_health,
                           minishard_health new_health) {
    static const char *const names[] = {"degraded", "transition", "available"};
    (void)user_data; (void)old_health;
    printf("%s is %s\n", cluster, new_health <= 2 ? names[new_health] : "?");
    fflush(stdout);
}
static void on_log(void *user_data, minishard_log_level level, const char *target, const char *message) {
    (void)user_data;
    fprintf(stderr, "minishard[%u] %s: %s\n", (unsigned)level, target, message);
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
    double seconds = -1, until;
    char owner[MINISHARD_ADDRESS_MAX], message[256];
    size_t written;
    uint32_t shards = 0;
    uint64_t epoch;
    minishard_result rc;
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "--seconds") == 0) { seconds = atof(argv[2]); first = 3; }
    if (argc <= first) {
        fprintf(stderr, "usage: %s [--seconds N] THIS_ADDRESS [OTHER_MEMBER ...]\n", argv[0]);
        return 2;
    }
    app a = { argv + first, argc - first };
    setvbuf(stdout, NULL, _IOLBF, 0);              /* whole lines, also into a pipe */
    memset(&on_stop, 0, sizeof on_stop);
    on_stop.sa_handler = on_signal;
    sigaction(SIGINT, &on_stop, NULL);
    sigaction(SIGTERM, &on_stop, NULL);
    /* once, at start-up: */
    minishard_set_log_callback(on_log, NULL, MINISHARD_LOG_WARN);

    cb.user_data = &a;
    cb.nodes = nodes; cb.shard_count = shard_count; cb.allocated_with_epoch = allocated;
    cb.score = score; cb.prolonged_with_epoch = prolonged; cb.deallocated_with_reason = deallocated;
    cb.status_changed = status_changed;
    minishard_config *cfg = minishard_config_new();
    minishard_config_set_listen(cfg, a.members[0]);
    minishard_config_set_cookie(cfg, cookie, sizeof cookie - 1);
    rc = minishard_join("sessions", cfg, &cb, &cluster);
    minishard_config_free(cfg);                    /* join copied it */
    if (rc == MINISHARD_OK) rc = minishard_wait_until(cluster, MINISHARD_HEALTH_AVAILABLE, 30000);
    if (rc == MINISHARD_OK) rc = minishard_shard_count(cluster, &shards);
    for (uint32_t s = 0; rc == MINISHARD_OK && s < shards; s++) {
        rc = minishard_get_owner(cluster, s, owner, sizeof owner, &written, &epoch);
        if (rc == MINISHARD_OK) printf("shard %u lives on %s (epoch %llu)\n", s, owner, (unsigned long long)epoch);
    }
    fflush(stdout);
    until = seconds_now() + seconds;
    while (rc == MINISHARD_OK && !stop && (seconds < 0 || seconds_now() < until)) {
        struct timespec tick = { 0, 100 * 1000000L };
        nanosleep(&tick, NULL);                    /* the callbacks run on their own thread */
    }
    if (rc != MINISHARD_OK) {
        minishard_last_error(message, sizeof message);
        fprintf(stderr, "%s: %s\n", minishard_result_name(rc), message);
    }
    minishard_cluster_free(cluster);               /* leaves: the shard is handed over */
    printf("left\n");
    return rc == MINISHARD_OK ? 0 : 1;
}
