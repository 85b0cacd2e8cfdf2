/*
 * A program built against an older minishard.h runs against today's
 * library: run.sh compiles this file with tests/c/old-header/ (the header
 * of the first version with the struct_size rule, before
 * minishard_callbacks grew its `log` fields) ahead of include/, and links
 * it to the library built now.
 *
 * The old program's callbacks struct is smaller than the library's. Right
 * after it lies memory the old program never set (here: 0xff bytes, where
 * the new `log` fields would be); if the library read past struct_size it
 * would take that for a log callback, refuse the join or crash.
 *
 * Self-contained (no harness.h), so that it keeps compiling against the
 * old header whatever the harness comes to use.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "minishard.h"

static int failures;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            char message_[512];                                                \
            minishard_last_error(message_, sizeof message_);                   \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed (last error: %s)\n",    \
                    __FILE__, __LINE__, #cond, message_);                      \
            failures++;                                                        \
        }                                                                      \
    } while (0)

typedef struct {
    char address[64];
    int allocations, deallocations, freed;
    uint64_t epoch;
} old_app;

static minishard_result nodes(void *user_data, const char *cluster, minishard_node_list *out) {
    (void)cluster;
    return minishard_node_list_push(out, ((old_app *)user_data)->address);
}
static int64_t shard_count(void *user_data, const char *cluster) {
    (void)user_data;
    (void)cluster;
    return 1;
}
static minishard_result allocated(void *user_data, const char *cluster, uint32_t shard,
                                  uint64_t epoch, void **state) {
    old_app *a = user_data;
    (void)cluster;
    (void)shard;
    a->allocations++;
    a->epoch = epoch;
    *state = a;
    return MINISHARD_OK;
}
static int64_t score(void *user_data, void *state) {
    (void)user_data;
    (void)state;
    return 0;
}
static minishard_result prolonged(void *user_data, const char *loser, void *state,
                                  void **new_state) {
    (void)user_data;
    (void)loser;
    (void)state;
    (void)new_state;
    return MINISHARD_OK;
}
static void deallocated(void *user_data, const char *winner, void *state) {
    (void)winner;
    (void)state;
    ((old_app *)user_data)->deallocations++;
}
static void free_app(void *user_data) { ((old_app *)user_data)->freed++; }

static int free_address(char *out, size_t len) {
    struct sockaddr_in sa;
    socklen_t sa_len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sa_len) != 0) {
        return 0;
    }
    snprintf(out, len, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    close(fd);
    return 1;
}

int main(void) {
    static const uint8_t cookie[] = "old-cookie";
    /* The old struct, then what the old program never set. */
    struct {
        minishard_callbacks cb;
        unsigned char never_set[64];
    } memory;
    old_app a;
    minishard_config *cfg;
    minishard_cluster *cluster = NULL;
    minishard_stats stats = {.struct_size = sizeof stats};
    char owner[MINISHARD_ADDRESS_MAX];
    size_t written = 0;
    long scale = getenv("TIME_SCALE") ? strtol(getenv("TIME_SCALE"), NULL, 10) : 1;

    memset(&a, 0, sizeof a);
    if (!free_address(a.address, sizeof a.address)) return 2;
    memset(&memory, 0xff, sizeof memory);
    memset(&memory.cb, 0, sizeof memory.cb);
    memory.cb.struct_size = sizeof memory.cb;
    memory.cb.user_data = &a;
    memory.cb.nodes = nodes;
    memory.cb.shard_count = shard_count;
    memory.cb.allocated_with_epoch = allocated;
    memory.cb.score = score;
    memory.cb.prolonged = prolonged;
    memory.cb.deallocated = deallocated;
    memory.cb.free_user_data = free_app;

    cfg = minishard_config_new();
    CHECK(minishard_config_set_listen(cfg, a.address) == MINISHARD_OK);
    CHECK(minishard_config_set_cookie(cfg, cookie, sizeof cookie - 1) == MINISHARD_OK);
    CHECK(minishard_join("old-header", cfg, &memory.cb, &cluster) == MINISHARD_OK);
    minishard_config_free(cfg);
    if (cluster != NULL) {
        CHECK(minishard_wait_until(cluster, MINISHARD_HEALTH_AVAILABLE, 10000 * (uint64_t)scale) ==
              MINISHARD_OK);
        CHECK(a.allocations == 1 && a.epoch > 0);
        CHECK(minishard_get_node(cluster, 0, owner, sizeof owner, &written) == MINISHARD_OK);
        CHECK(strcmp(owner, a.address) == 0);
        CHECK(minishard_get_stats(cluster, &stats) == MINISHARD_OK);
        CHECK(stats.allocations == 1);
        minishard_cluster_free(cluster);
        CHECK(a.deallocations == 1);
    }
    CHECK(a.freed == 1);
    printf("%s old-header: a program built against the 0.1.0 struct_size header (callbacks %zu "
           "bytes) ran against library %s\n",
           failures ? "FAIL" : "ok  ", sizeof memory.cb, minishard_version());
    return failures ? 1 : 0;
}
