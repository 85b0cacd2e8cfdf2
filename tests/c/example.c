/* A complete minishard node in C: joins the cluster "sessions" whose members
 * are given on the command line (the first is this node), keeps one shard
 * per member, prints who owns shard 0, and leaves.
 *
 *   cc example.c $(pkg-config --cflags --libs minishard) -o example
 *   ./example 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003   (one per node)
 */
#include <stdio.h>
#include <stdlib.h>

#include "minishard.h"

typedef struct {
    char **members;
    int count;
} app;

static minishard_result nodes(void *user_data, const char *cluster, minishard_node_list *out) {
    app *a = user_data;
    int i;
    (void)cluster;
    for (i = 0; i < a->count; i++) {
        minishard_result rc = minishard_node_list_push(out, a->members[i]);
        if (rc != MINISHARD_OK) return rc;
    }
    return MINISHARD_OK;
}

static int64_t shard_count(void *user_data, const char *cluster) {
    (void)cluster;
    return ((app *)user_data)->count; /* one shard per member */
}

static minishard_result allocated(void *user_data, const char *cluster, uint32_t shard,
                                  void **state) {
    uint32_t *mine = malloc(sizeof *mine); /* the shard's data would live here */
    (void)user_data;
    if (mine == NULL) return MINISHARD_CALLBACK_FAILED;
    *mine = shard;
    *state = mine;
    printf("%s: this node now owns shard %u\n", cluster, shard);
    return MINISHARD_OK;
}

static int64_t score(void *user_data, void *state) {
    (void)user_data;
    (void)state;
    return 0; /* e.g. how much data this copy of the shard holds */
}

static minishard_result prolonged(void *user_data, const char *loser, void *state,
                                  void **new_state) {
    (void)user_data;
    (void)loser;
    (void)state;
    (void)new_state; /* keep the state as it is */
    return MINISHARD_OK;
}

static void deallocated(void *user_data, const char *winner, void *state) {
    (void)user_data;
    printf("gave shard %u up to %s\n", *(uint32_t *)state, winner ? winner : "no one");
    free(state);
}

static int fail(const char *what, minishard_result rc) {
    char message[256];
    minishard_last_error(message, sizeof message);
    fprintf(stderr, "%s: %s: %s\n", what, minishard_result_name(rc), message);
    return 1;
}

int main(int argc, char **argv) {
    static const uint8_t cookie[] = "change me";
    app a;
    minishard_callbacks cb = { .struct_size = sizeof cb };
    minishard_config *cfg;
    minishard_cluster *cluster = NULL;
    minishard_result rc;
    char owner[MINISHARD_ADDRESS_MAX];
    size_t written;

    if (argc < 2) {
        fprintf(stderr, "usage: %s THIS_NODE [OTHER_MEMBER...]\n", argv[0]);
        return 2;
    }
    a.members = argv + 1;
    a.count = argc - 1;
    cb.user_data = &a;
    cb.nodes = nodes;
    cb.shard_count = shard_count;
    cb.allocated = allocated;
    cb.score = score;
    cb.prolonged = prolonged;
    cb.deallocated = deallocated;

    cfg = minishard_config_new();
    if ((rc = minishard_config_set_listen(cfg, argv[1])) != MINISHARD_OK ||
        (rc = minishard_config_set_cookie(cfg, cookie, sizeof cookie - 1)) != MINISHARD_OK) {
        minishard_config_free(cfg);
        return fail("config", rc);
    }
    rc = minishard_join("sessions", cfg, &cb, &cluster);
    minishard_config_free(cfg);
    if (rc != MINISHARD_OK) return fail("join", rc);

    rc = minishard_wait_until(cluster, MINISHARD_HEALTH_AVAILABLE, 30000);
    if (rc == MINISHARD_OK) {
        rc = minishard_get_node(cluster, 0, owner, sizeof owner, &written);
    }
    if (rc != MINISHARD_OK) {
        fail("lookup", rc);
        minishard_cluster_free(cluster);
        return 1;
    }
    printf("shard 0 lives on %s\n", owner);
    minishard_cluster_free(cluster); /* leaves: the shard is handed over */
    return 0;
}
