/*
 * The C ABI's promises to compiled programs: the version macros match the
 * library, the structs the caller allocates grow by the header's rule
 * (struct_size), and the getters for the shard count and an owner with its
 * epoch answer without parsing JSON. (A program built against an older
 * header is tests/c/test_old_header.c.)
 */
#include "harness.h"

/* ---- versions ----------------------------------------------------------- */

static void the_version_macros_are_the_librarys_version(void) {
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", MINISHARD_VERSION_MAJOR,
             MINISHARD_VERSION_MINOR, MINISHARD_VERSION_PATCH);
    CHECK(strcmp(minishard_version(), expected) == 0);
    if (strcmp(minishard_version(), expected) != 0) {
        fprintf(stderr, "    library %s, header %s\n", minishard_version(), expected);
    }
    CHECK(MINISHARD_VERSION_NUM == MINISHARD_VERSION_MAJOR * 1000000 +
                                       MINISHARD_VERSION_MINOR * 1000 + MINISHARD_VERSION_PATCH);
    CHECK(minishard_version_num() == MINISHARD_VERSION_NUM);
#if MINISHARD_VERSION_NUM < 1000
#error "MINISHARD_VERSION_NUM is usable in #if, and this header is at least 0.1.0"
#endif
}

/* ---- growing structs ---------------------------------------------------- */

/* A one-member cluster keeping one shard: available on its own. */
typedef struct {
    char addr[1][64];
    const char *members[1];
    app a;
    minishard_config *cfg;
} solo;

static int solo_prepare(solo *s) {
    if (!free_addresses(1, s->addr)) return 0;
    s->members[0] = s->addr[0];
    app_init(&s->a, s->members, 1, 1);
    s->cfg = fast_config(s->addr[0], MINISHARD_DISPATCH_THREAD);
    return s->cfg != NULL;
}

static void solo_finish(solo *s) {
    minishard_config_free(s->cfg);
    app_destroy(&s->a);
}

static void callbacks_without_struct_size_are_refused_and_user_data_freed(void) {
    solo s;
    minishard_callbacks cb;
    minishard_cluster *cluster = NULL;
    REQUIRE(solo_prepare(&s));
    cb = app_callbacks(&s.a);
    cb.struct_size = 0; /* forgotten */
    CHECK_RC(minishard_join("abi", s.cfg, &cb, &cluster), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("minishard_callbacks.struct_size is 0"));
    CHECK(cluster == NULL);
    CHECK(s.a.freed == 1);
    /* Not on a field boundary: garbage, not a version's size. */
    cb = app_callbacks(&s.a);
    cb.struct_size = sizeof cb - 3;
    CHECK_RC(minishard_join("abi", s.cfg, &cb, &cluster), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("struct_size"));
    CHECK(s.a.freed == 2);
    solo_finish(&s);
}

/* What a program built against a newer header passes: the struct as this
 * header has it, then a field this library does not know. */
typedef struct {
    minishard_callbacks known;
    void (*from_a_newer_header)(void *user_data);
} newer_callbacks;

static void future_noop(void *user_data) { (void)user_data; }

static void a_newer_programs_struct_is_taken_when_its_new_fields_are_unset(void) {
    solo s;
    newer_callbacks newer;
    minishard_cluster *cluster = NULL;
    REQUIRE(solo_prepare(&s));
    memset(&newer, 0, sizeof newer);
    newer.known = app_callbacks(&s.a);
    newer.known.struct_size = sizeof newer;
    REQUIRE(sizeof newer > sizeof newer.known);
    /* A callback this library does not know: refused, not ignored. */
    newer.from_a_newer_header = future_noop;
    CHECK_RC(minishard_join("abi", s.cfg, &newer.known, &cluster), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("newer minishard.h"));
    CHECK(s.a.freed == 1);
    /* Unset: the join goes on as usual. */
    newer.from_a_newer_header = NULL;
    CHECK_RC(minishard_join("abi", s.cfg, &newer.known, &cluster), MINISHARD_OK);
    CHECK_RC(minishard_wait_until(cluster, MINISHARD_HEALTH_AVAILABLE, 5000 * time_scale()),
             MINISHARD_OK);
    CHECK(app_count(&s.a, EV_ALLOCATED) == 1);
    minishard_cluster_free(cluster);
    CHECK(s.a.freed == 2);
    solo_finish(&s);
}

/* What a program built against an older header passes: the stats struct
 * with only its first counters, followed here by a guard. */
typedef struct {
    size_t struct_size;
    uint64_t allocations;
    uint64_t deallocations;
} older_stats;

static void stats_fill_only_what_the_callers_struct_holds(void) {
    solo s;
    minishard_callbacks cb;
    minishard_cluster *cluster = NULL;
    minishard_stats full = {.struct_size = sizeof full};
    struct {
        older_stats stats;
        uint64_t guard;
    } older;
    REQUIRE(solo_prepare(&s));
    cb = app_callbacks(&s.a);
    REQUIRE_OK(minishard_join("abi", s.cfg, &cb, &cluster));
    CHECK_RC(minishard_wait_until(cluster, MINISHARD_HEALTH_AVAILABLE, 5000 * time_scale()),
             MINISHARD_OK);

    memset(&older, 0, sizeof older);
    older.stats.struct_size = sizeof older.stats;
    older.guard = 0x5afe5afe5afe5afeULL;
    CHECK_RC(minishard_get_stats(cluster, (minishard_stats *)&older.stats), MINISHARD_OK);
    CHECK_RC(minishard_get_stats(cluster, &full), MINISHARD_OK);
    CHECK(older.stats.struct_size == sizeof older.stats);
    CHECK(older.stats.allocations == 1 && full.allocations == 1);
    CHECK(older.stats.deallocations == full.deallocations);
    CHECK(older.guard == 0x5afe5afe5afe5afeULL); /* nothing written past it */
    CHECK(full.struct_size == sizeof full);

    /* Not set: refused, nothing written. */
    memset(&full, 0xab, sizeof full);
    full.struct_size = 0;
    CHECK_RC(minishard_get_stats(cluster, &full), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("minishard_stats.struct_size is 0"));
    CHECK(full.allocations == 0xababababababababULL);
    minishard_cluster_free(cluster);
    solo_finish(&s);
}

/* ---- getters ------------------------------------------------------------ */

static void the_shard_count_and_each_owner_with_its_epoch(void) {
    local l;
    uint32_t count = 0, shard;
    size_t i;
    char owner0[MINISHARD_ADDRESS_MAX] = "";
    REQUIRE(local_start(&l, "getters", 3, 2, MINISHARD_DISPATCH_THREAD));
    REQUIRE(local_converged(&l, 2, 4000));
    for (i = 0; i < l.n; i++) {
        CHECK_RC(minishard_shard_count(l.nodes[i], &count), MINISHARD_OK);
        CHECK(count == 2);
    }
    for (shard = 0; shard < 2; shard++) {
        char owner[MINISHARD_ADDRESS_MAX], by_get_node[MINISHARD_ADDRESS_MAX];
        size_t written = 0, j;
        uint64_t epoch = 0, owners_epoch = 0;
        uint32_t owners_shard = 99;
        int found = -1;
        CHECK_RC(minishard_get_owner(l.nodes[0], shard, owner, sizeof owner, &written, &epoch),
                 MINISHARD_OK);
        CHECK(written == strlen(owner) + 1);
        CHECK_RC(minishard_get_node(l.nodes[0], shard, by_get_node, sizeof by_get_node, &written),
                 MINISHARD_OK);
        CHECK(strcmp(owner, by_get_node) == 0);
        if (shard == 0) snprintf(owner0, sizeof owner0, "%s", owner);
        for (j = 0; j < l.n; j++) {
            if (strcmp(owner, l.addrs[j]) == 0) found = (int)j;
        }
        REQUIRE(found >= 0);
        /* The epoch is the one the owner was allocated with. */
        CHECK_RC(minishard_my_shard(l.nodes[found], &owners_shard, &owners_epoch), MINISHARD_OK);
        CHECK(owners_shard == shard);
        CHECK(epoch > 0 && epoch == owners_epoch);
    }
    {
        char small[4];
        size_t written = 0;
        uint64_t epoch = 7;
        CHECK_RC(minishard_get_owner(l.nodes[0], 2, small, sizeof small, &written, &epoch),
                 MINISHARD_INVALID_ARGUMENT);
        CHECK(last_error_mentions("keeps 2 shards"));
        CHECK(epoch == 0);
        CHECK_RC(minishard_get_owner(l.nodes[0], 0, small, sizeof small, &written, &epoch),
                 MINISHARD_BUFFER_TOO_SMALL);
        CHECK(written == strlen(owner0) + 1);
        CHECK_RC(minishard_get_owner(l.nodes[0], 0, small, sizeof small, &written, NULL),
                 MINISHARD_INVALID_ARGUMENT);
        CHECK(last_error_mentions("epoch is NULL"));
        CHECK_RC(minishard_shard_count(l.nodes[0], NULL), MINISHARD_INVALID_ARGUMENT);
        CHECK_RC(minishard_shard_count(NULL, &count), MINISHARD_INVALID_ARGUMENT);
    }
    local_stop(&l);
}

int main(void) {
    RUN(the_version_macros_are_the_librarys_version);
    RUN(callbacks_without_struct_size_are_refused_and_user_data_freed);
    RUN(a_newer_programs_struct_is_taken_when_its_new_fields_are_unset);
    RUN(stats_fill_only_what_the_callers_struct_holds);
    RUN(the_shard_count_and_each_owner_with_its_epoch);
    return finish("c-abi-stability");
}
