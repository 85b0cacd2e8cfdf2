/*
 * Every error path of the C ABI: NULL pointers, invalid UTF-8, unparsable
 * addresses, limits out of range, zero/negative/huge shard counts, failing
 * callbacks, small buffers, calls after leave and calls from inside a
 * callback; and that user_data is freed exactly once on every path.
 *
 * Built twice: with MINISHARD_TESTING against the library with the test
 * hooks (their errors too), and without it against the static release
 * library.
 */
#include "harness.h"

#include <dirent.h>
#include <signal.h>

static const uint8_t COOKIE[] = "test-cookie";

/* ---- results and messages ---------------------------------------------- */

static void result_names_and_version(void) {
    const char *version = minishard_version();
    REQUIRE(version != NULL);
    CHECK(strchr(version, '.') != NULL);
    CHECK(strcmp(minishard_result_name(MINISHARD_OK), "MINISHARD_OK") == 0);
    CHECK(strcmp(minishard_result_name(MINISHARD_INVALID_ARGUMENT), "MINISHARD_INVALID_ARGUMENT") == 0);
    CHECK(strcmp(minishard_result_name(MINISHARD_CONFIG), "MINISHARD_CONFIG") == 0);
    CHECK(strcmp(minishard_result_name(MINISHARD_IO), "MINISHARD_IO") == 0);
    CHECK(strcmp(minishard_result_name(MINISHARD_TIMEOUT), "MINISHARD_TIMEOUT") == 0);
    CHECK(strcmp(minishard_result_name(MINISHARD_NOT_FOUND), "MINISHARD_NOT_FOUND") == 0);
    CHECK(strcmp(minishard_result_name(MINISHARD_BUFFER_TOO_SMALL), "MINISHARD_BUFFER_TOO_SMALL") == 0);
    CHECK(strcmp(minishard_result_name(MINISHARD_CLOSED), "MINISHARD_CLOSED") == 0);
    CHECK(strcmp(minishard_result_name(MINISHARD_CALLBACK_FAILED), "MINISHARD_CALLBACK_FAILED") == 0);
    CHECK(strcmp(minishard_result_name(MINISHARD_MISCONFIGURED), "MINISHARD_MISCONFIGURED") == 0);
    CHECK(strcmp(minishard_result_name(MINISHARD_PANIC), "MINISHARD_PANIC") == 0);
    CHECK(strcmp(minishard_result_name((minishard_result)77), "MINISHARD_UNKNOWN") == 0);
    CHECK(MINISHARD_OK == 0);
}

static void *last_error_of_a_fresh_thread(void *out) {
    char buf[16] = "untouched";
    *(size_t *)out = minishard_last_error(buf, sizeof buf);
    if (buf[0] != '\0') *(size_t *)out = 999;
    return NULL;
}

static void last_error_is_per_thread_and_truncates(void) {
    char small[8], big[256];
    size_t needed, fresh = 1;
    pthread_t thread;
    /* A thread that has seen no failure has no message. */
    pthread_create(&thread, NULL, last_error_of_a_fresh_thread, &fresh);
    pthread_join(thread, NULL);
    CHECK(fresh == 0);

    CHECK_RC(minishard_config_set_listen(NULL, "127.0.0.1:1"), MINISHARD_INVALID_ARGUMENT);
    needed = minishard_last_error(NULL, 0);
    CHECK(needed == strlen("cfg is NULL") + 1);
    CHECK(minishard_last_error(big, sizeof big) == needed);
    CHECK(strcmp(big, "cfg is NULL") == 0);
    /* Truncated, NUL-terminated, and the return says how much was needed. */
    CHECK(minishard_last_error(small, sizeof small) == needed);
    CHECK(strcmp(small, "cfg is ") == 0);
    /* A success does not clear it. */
    CHECK(minishard_version() != NULL);
    CHECK(minishard_last_error(big, sizeof big) == needed);
}

/* ---- configuration ------------------------------------------------------ */

static void config_setters_refuse_bad_values_with_a_message(void) {
    minishard_config *cfg = minishard_config_new();
    REQUIRE(cfg != NULL);
    CHECK_RC(minishard_config_set_listen(cfg, NULL), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("listen is NULL"));
    CHECK_RC(minishard_config_set_listen(cfg, "127.0.0.1:\xff"), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("not valid UTF-8"));
    CHECK_RC(minishard_config_set_listen(cfg, "nowhere"), MINISHARD_CONFIG);
    CHECK(last_error_mentions("invalid listen address"));
    CHECK_RC(minishard_config_set_listen(cfg, "host:99999"), MINISHARD_CONFIG);
    CHECK_RC(minishard_config_set_listen(cfg, ":7000"), MINISHARD_CONFIG);
    CHECK_RC(minishard_config_set_listen(cfg, "127.0.0.1:0"), MINISHARD_OK);
    CHECK_RC(minishard_config_set_advertise(cfg, "10.0.0.1:0"), MINISHARD_CONFIG);
    CHECK(last_error_mentions("port 0"));
    CHECK_RC(minishard_config_set_advertise(cfg, "10.0.0.1:7000"), MINISHARD_OK);
    CHECK_RC(minishard_config_set_advertise(cfg, NULL), MINISHARD_OK);
    CHECK_RC(minishard_config_set_cookie(cfg, NULL, 3), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_config_set_cookie(cfg, COOKIE, 0), MINISHARD_CONFIG);
    CHECK(last_error_mentions("cookie is empty"));
    CHECK_RC(minishard_config_set_cookie(NULL, COOKIE, 3), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_config_set_heartbeat_interval_ms(cfg, 0), MINISHARD_CONFIG);
    CHECK(last_error_mentions("heartbeat_interval_ms must be greater than zero"));
    CHECK_RC(minishard_config_set_heartbeat_timeout_ms(cfg, 0), MINISHARD_CONFIG);
    CHECK_RC(minishard_config_set_transition_timeout_ms(cfg, 0), MINISHARD_CONFIG);
    CHECK_RC(minishard_config_set_node_grace_ms(cfg, 0), MINISHARD_CONFIG);
    CHECK_RC(minishard_config_set_settle_ms(cfg, 0), MINISHARD_CONFIG);
    CHECK_RC(minishard_config_set_score_deadline_ms(cfg, 0), MINISHARD_CONFIG);
    CHECK_RC(minishard_config_set_member_poll_ms(cfg, 0), MINISHARD_CONFIG);
    CHECK_RC(minishard_config_set_allocation_retry_ms(cfg, 0), MINISHARD_CONFIG);
    CHECK_RC(minishard_config_set_node_grace_ms(NULL, 10), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_config_set_dispatch(cfg, (minishard_dispatch_mode)7), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("MINISHARD_DISPATCH_HOST"));
    CHECK_RC(minishard_config_set_dispatch(cfg, MINISHARD_DISPATCH_HOST), MINISHARD_OK);
    CHECK_RC(minishard_config_set_quorum(cfg, (minishard_quorum)2), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("quorum must be MINISHARD_QUORUM_ANY or MINISHARD_QUORUM_MAJORITY, not 2"));
    CHECK_RC(minishard_config_set_quorum(NULL, MINISHARD_QUORUM_MAJORITY), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_config_set_quorum(cfg, MINISHARD_QUORUM_MAJORITY), MINISHARD_OK);
    CHECK_RC(minishard_config_set_quorum(cfg, MINISHARD_QUORUM_ANY), MINISHARD_OK);
    CHECK_RC(minishard_config_set_observer(cfg, 1), MINISHARD_OK);
    minishard_config_free(cfg);
    minishard_config_free(NULL);
}

static void limit_setters_refuse_out_of_range_values_naming_the_setting(void) {
    minishard_config *cfg = minishard_config_new();
    REQUIRE(cfg != NULL);
    /* Out of range: refused at once, with the range join would give. */
    CHECK_RC(minishard_config_set_frame_limit(cfg, 4095), MINISHARD_CONFIG);
    CHECK(last_error_mentions("frame_limit must be between 4096 and 67108864 bytes, not 4095"));
    CHECK_RC(minishard_config_set_frame_limit(cfg, 0), MINISHARD_CONFIG);
    CHECK_RC(minishard_config_set_frame_limit(cfg, ((size_t)64 << 20) + 1), MINISHARD_CONFIG);
    CHECK(last_error_mentions("frame_limit must be between"));
    CHECK_RC(minishard_config_set_frame_limit(cfg, SIZE_MAX), MINISHARD_CONFIG);
    CHECK_RC(minishard_config_set_handshake_timeout_ms(cfg, 0), MINISHARD_CONFIG);
    CHECK(last_error_mentions("handshake_timeout_ms must be greater than zero"));
    CHECK_RC(minishard_config_set_handshake_timeout_ms(cfg, 86400001), MINISHARD_CONFIG);
    CHECK(last_error_mentions("handshake_timeout_ms must be between 1 and 86400000 ms, not 86400001"));
    CHECK_RC(minishard_config_set_max_handshakes(cfg, 0), MINISHARD_CONFIG);
    CHECK(last_error_mentions("max_handshakes must be between 1 and 65536 connections, not 0"));
    CHECK_RC(minishard_config_set_max_handshakes_per_source(cfg, 0), MINISHARD_CONFIG);
    CHECK(last_error_mentions("max_handshakes_per_source must be between 1 and 65536 connections, not 0"));
    CHECK_RC(minishard_config_set_send_queue(cfg, 63), MINISHARD_CONFIG);
    CHECK(last_error_mentions("send_queue must be between 64 and 1048576 frames, not 63"));
    CHECK_RC(minishard_config_set_send_queue(cfg, 0), MINISHARD_CONFIG);
    /* Too large to allocate or to be sane: refused, not a node that never starts. */
    CHECK_RC(minishard_config_set_send_queue(cfg, SIZE_MAX), MINISHARD_CONFIG);
    CHECK(last_error_mentions("send_queue must be between 64 and 1048576 frames, not 18446744073709551615"));
    CHECK_RC(minishard_config_set_max_handshakes(cfg, SIZE_MAX), MINISHARD_CONFIG);
    CHECK(last_error_mentions("max_handshakes must be between 1 and 65536 connections, not"));
    CHECK_RC(minishard_config_set_max_handshakes_per_source(cfg, 65537), MINISHARD_CONFIG);
    CHECK(last_error_mentions("max_handshakes_per_source must be between 1 and 65536 connections, not 65537"));
    /* NULL configurations. */
    CHECK_RC(minishard_config_set_frame_limit(NULL, 65536), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("cfg is NULL"));
    CHECK_RC(minishard_config_set_handshake_timeout_ms(NULL, 1000), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_config_set_max_handshakes(NULL, 8), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_config_set_max_handshakes_per_source(NULL, 4), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_config_set_send_queue(NULL, 128), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("cfg is NULL"));
    /* The ends of the ranges are accepted. */
    CHECK_RC(minishard_config_set_frame_limit(cfg, 4096), MINISHARD_OK);
    CHECK_RC(minishard_config_set_frame_limit(cfg, (size_t)64 << 20), MINISHARD_OK);
    CHECK_RC(minishard_config_set_handshake_timeout_ms(cfg, 1), MINISHARD_OK);
    CHECK_RC(minishard_config_set_max_handshakes(cfg, 1), MINISHARD_OK);
    CHECK_RC(minishard_config_set_max_handshakes_per_source(cfg, 1), MINISHARD_OK);
    CHECK_RC(minishard_config_set_send_queue(cfg, 64), MINISHARD_OK);
    CHECK_RC(minishard_config_set_max_handshakes(cfg, 65536), MINISHARD_OK);
    CHECK_RC(minishard_config_set_max_handshakes_per_source(cfg, 65536), MINISHARD_OK);
    CHECK_RC(minishard_config_set_send_queue(cfg, 1048576), MINISHARD_OK);
    minishard_config_free(cfg);
}

static void a_cluster_joined_with_other_limits_converges(void) {
    /* Every node sets every limit away from its default. */
    local l;
    size_t i;
    uint64_t k = time_scale();
    REQUIRE(local_prepare(&l, "limits", 3, 2, MINISHARD_DISPATCH_THREAD));
    for (i = 0; i < l.n; i++) {
        minishard_callbacks cb = app_callbacks(&l.apps[i]);
        minishard_config *cfg = fast_config(l.addrs[i], l.dispatch);
        minishard_result rc;
        REQUIRE(cfg != NULL);
        CHECK_RC(minishard_config_set_frame_limit(cfg, 65536), MINISHARD_OK);
        CHECK_RC(minishard_config_set_handshake_timeout_ms(cfg, 1500 * k), MINISHARD_OK);
        CHECK_RC(minishard_config_set_max_handshakes(cfg, 8), MINISHARD_OK);
        CHECK_RC(minishard_config_set_max_handshakes_per_source(cfg, 4), MINISHARD_OK);
        CHECK_RC(minishard_config_set_send_queue(cfg, 128), MINISHARD_OK);
        rc = minishard_join(l.name, cfg, &cb, &l.nodes[i]);
        minishard_config_free(cfg);
        REQUIRE_OK(rc);
    }
    CHECK(local_converged(&l, 2, 10000));
    local_stop(&l);
}

/* ---- join --------------------------------------------------------------- */

typedef struct {
    app base;
    int64_t shard_answer;
    minishard_result nodes_answer;
    const char *extra_member; /* pushed after the real members */
} join_app;

static minishard_result join_nodes(void *user_data, const char *cluster, minishard_node_list *out) {
    join_app *a = user_data;
    minishard_result rc = app_nodes(&a->base, cluster, out);
    if (rc != MINISHARD_OK) return rc;
    if (a->extra_member) minishard_node_list_push(out, a->extra_member); /* result ignored on purpose */
    return a->nodes_answer;
}

static int64_t join_shard_count(void *user_data, const char *cluster) {
    (void)cluster;
    return ((join_app *)user_data)->shard_answer;
}

/* Joins a one-member cluster; the join must fail with `expected` and a
 * message mentioning `mention`, leave *out NULL, and free user_data once. */
static void join_fails(join_app *a, const char *name, minishard_config *cfg,
                       minishard_result expected, const char *mention) {
    minishard_callbacks cb = app_callbacks(&a->base);
    minishard_cluster *cluster = (minishard_cluster *)&cb; /* not NULL */
    cb.user_data = a;
    cb.nodes = join_nodes;
    cb.shard_count = join_shard_count;
    a->base.freed = 0;
    CHECK_RC(minishard_join(name, cfg, &cb, &cluster), expected);
    CHECK(last_error_mentions(mention));
    CHECK(cluster == NULL);
    CHECK(a->base.freed == 1);
}

static void join_refuses_bad_arguments_and_answers_and_frees_user_data_once(void) {
    char addrs[2][64];
    const char *members[1];
    join_app a;
    minishard_config *cfg;
    minishard_callbacks cb;
    minishard_cluster *cluster = NULL;
    REQUIRE(free_addresses(2, addrs));
    members[0] = addrs[0];
    app_init(&a.base, members, 1, 1);
    a.shard_answer = 1;
    a.nodes_answer = MINISHARD_OK;
    a.extra_member = NULL;
    cfg = fast_config(addrs[0], MINISHARD_DISPATCH_THREAD);
    REQUIRE(cfg != NULL);

    /* NULL callbacks: nothing to free. */
    CHECK_RC(minishard_join("c", cfg, NULL, &cluster), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("cb is NULL"));
    /* NULL out: the callbacks are still taken over and user_data freed. */
    cb = app_callbacks(&a.base);
    a.base.freed = 0;
    CHECK_RC(minishard_join("c", cfg, &cb, NULL), MINISHARD_INVALID_ARGUMENT);
    CHECK(a.base.freed == 1);
    join_fails(&a, NULL, cfg, MINISHARD_INVALID_ARGUMENT, "cluster is NULL");
    join_fails(&a, "bad\xc3\x28name", cfg, MINISHARD_INVALID_ARGUMENT, "not valid UTF-8");
    join_fails(&a, "", cfg, MINISHARD_CONFIG, "cluster name is empty");
    join_fails(&a, "c", NULL, MINISHARD_INVALID_ARGUMENT, "cfg is NULL");
    {
        /* A required callback missing. */
        minishard_callbacks partial = app_callbacks(&a.base);
        partial.score = NULL;
        a.base.freed = 0;
        CHECK_RC(minishard_join("c", cfg, &partial, &cluster), MINISHARD_INVALID_ARGUMENT);
        CHECK(last_error_mentions("callbacks.score is NULL"));
        CHECK(a.base.freed == 1);
        partial = app_callbacks(&a.base);
        partial.allocated = NULL;
        partial.allocated_with_epoch = NULL;
        a.base.freed = 0;
        CHECK_RC(minishard_join("c", cfg, &partial, &cluster), MINISHARD_INVALID_ARGUMENT);
        CHECK(last_error_mentions("callbacks.allocated is NULL"));
        CHECK(a.base.freed == 1);
    }
    /* Shard counts out of range are configuration errors. */
    a.shard_answer = 0;
    join_fails(&a, "c", cfg, MINISHARD_CONFIG, "shard_count returned 0");
    a.shard_answer = -3;
    join_fails(&a, "c", cfg, MINISHARD_CONFIG, "shard_count returned -3");
    a.shard_answer = (int64_t)1 << 33;
    join_fails(&a, "c", cfg, MINISHARD_CONFIG, "shard_count returned 8589934592");
    a.shard_answer = 2; /* one member cannot keep two shards */
    join_fails(&a, "c", cfg, MINISHARD_CONFIG, "larger than the member list");
    a.shard_answer = 1;
    /* The member list: a failing callback, an unparsable member. */
    a.nodes_answer = MINISHARD_IO;
    join_fails(&a, "c", cfg, MINISHARD_CALLBACK_FAILED, "nodes returned MINISHARD_IO");
    a.nodes_answer = MINISHARD_OK;
    a.extra_member = "not an address";
    join_fails(&a, "c", cfg, MINISHARD_CONFIG, "invalid node address");
    a.extra_member = NULL;
    /* This node not in the member list. */
    members[0] = addrs[1];
    join_fails(&a, "c", cfg, MINISHARD_CONFIG, "not in the member list");
    members[0] = addrs[0];
    /* Timings out of order are found at join. */
    {
        minishard_config *slow = fast_config(addrs[0], MINISHARD_DISPATCH_THREAD);
        REQUIRE(slow != NULL);
        CHECK_RC(minishard_config_set_heartbeat_interval_ms(slow, 5000), MINISHARD_OK);
        join_fails(&a, "c", slow, MINISHARD_CONFIG, "heartbeat_interval");
        minishard_config_free(slow);
    }
    /* An empty cookie (never set). */
    {
        minishard_config *bare = minishard_config_new();
        REQUIRE(bare != NULL);
        CHECK_RC(minishard_config_set_listen(bare, addrs[0]), MINISHARD_OK);
        join_fails(&a, "c", bare, MINISHARD_CONFIG, "cookie is empty");
        minishard_config_free(bare);
    }
    /* The listen address in use. */
    {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa;
        socklen_t sa_len = sizeof sa;
        char taken[64];
        minishard_config *busy;
        const char *busy_members[1];
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 1) == 0);
        REQUIRE(getsockname(fd, (struct sockaddr *)&sa, &sa_len) == 0);
        snprintf(taken, sizeof taken, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
        busy = fast_config(taken, MINISHARD_DISPATCH_THREAD);
        busy_members[0] = taken;
        a.base.members = busy_members;
        join_fails(&a, "c", busy, MINISHARD_IO, "cannot listen");
        a.base.members = members;
        minishard_config_free(busy);
        close(fd);
    }
    minishard_config_free(cfg);
    app_destroy(&a.base);
}

/* ---- a live handle -------------------------------------------------------- */

/* Makes the thread's last error one that a check can tell from the next. */
static void set_last_error_to_something_else(void) {
    char message[256];
    CHECK(minishard_config_set_listen(NULL, "x") == MINISHARD_INVALID_ARGUMENT);
    CHECK(minishard_last_error(message, sizeof message) > 0);
    CHECK(strstr(message, "cluster is NULL") == NULL);
}

static void null_handles_are_refused(void) {
    char buf[64];
    size_t written;
    uint32_t shard;
    uint64_t epoch;
    minishard_stats stats = {.struct_size = sizeof stats};
    CHECK_RC(minishard_get_node(NULL, 0, buf, sizeof buf, &written), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("cluster is NULL"));
    CHECK_RC(minishard_my_shard(NULL, &shard, &epoch), MINISHARD_INVALID_ARGUMENT);
    /* An error, not a health a NULL handle does not have. */
    set_last_error_to_something_else();
    CHECK(minishard_get_health(NULL) == MINISHARD_HEALTH_ERROR);
    CHECK(last_error_mentions("cluster is NULL"));
    CHECK_RC(minishard_wait_until(NULL, MINISHARD_HEALTH_AVAILABLE, 1), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_status_json(NULL, buf, sizeof buf, &written), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_get_stats(NULL, &stats), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_node_id(NULL, buf, sizeof buf, &written), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_dispatch(NULL, 1, &written), MINISHARD_INVALID_ARGUMENT);
    CHECK(minishard_event_fd(NULL) == -1);
    CHECK_RC(minishard_leave(NULL), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_node_list_push(NULL, "127.0.0.1:1"), MINISHARD_INVALID_ARGUMENT);
    minishard_cluster_free(NULL);
#ifdef MINISHARD_TESTING
    CHECK_RC(minishard_testing_cut(NULL, "127.0.0.1:1"), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_testing_heal_all(NULL), MINISHARD_INVALID_ARGUMENT);
    minishard_testing_crash(NULL);
#endif
}

static void a_live_handle_checks_buffers_shards_and_modes_then_closes(void) {
    local l;
    char buf[MINISHARD_ADDRESS_MAX], tiny[4];
    size_t written = 0, needed;
    uint32_t shard = 7;
    uint64_t epoch = 0;
    REQUIRE(local_start(&l, "one", 1, 1, MINISHARD_DISPATCH_THREAD));
    REQUIRE_OK(minishard_wait_until(l.nodes[0], MINISHARD_HEALTH_AVAILABLE, 10000 * time_scale()));

    CHECK_RC(minishard_get_node(l.nodes[0], 0, buf, sizeof buf, &written), MINISHARD_OK);
    CHECK(strcmp(buf, l.addrs[0]) == 0);
    CHECK(written == strlen(l.addrs[0]) + 1);
    needed = written;
    /* Too small: the size needed, NUL included, and an empty string. */
    written = 0;
    CHECK_RC(minishard_get_node(l.nodes[0], 0, tiny, sizeof tiny, &written), MINISHARD_BUFFER_TOO_SMALL);
    CHECK(written == needed);
    CHECK(tiny[0] == '\0');
    CHECK(last_error_mentions("are needed"));
    /* Exactly the size needed fits. */
    CHECK_RC(minishard_get_node(l.nodes[0], 0, buf, needed, &written), MINISHARD_OK);
    /* NULL with 0 asks the size. */
    CHECK_RC(minishard_get_node(l.nodes[0], 0, NULL, 0, &written), MINISHARD_BUFFER_TOO_SMALL);
    CHECK(written == needed);
    CHECK_RC(minishard_get_node(l.nodes[0], 0, NULL, 5, &written), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_get_node(l.nodes[0], 0, buf, sizeof buf, NULL), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("written is NULL"));
    CHECK_RC(minishard_get_node(l.nodes[0], 1, buf, sizeof buf, &written), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("shard 1 does not exist"));

    CHECK_RC(minishard_my_shard(l.nodes[0], &shard, &epoch), MINISHARD_OK);
    CHECK(shard == 0 && epoch > 0);
    CHECK_RC(minishard_my_shard(l.nodes[0], NULL, &epoch), MINISHARD_INVALID_ARGUMENT);

    CHECK_RC(minishard_node_id(l.nodes[0], buf, sizeof buf, &written), MINISHARD_OK);
    CHECK(strcmp(buf, l.addrs[0]) == 0);
    CHECK_RC(minishard_status_json(l.nodes[0], NULL, 0, &written), MINISHARD_BUFFER_TOO_SMALL);
    {
        char *json = malloc(written);
        size_t again = 0;
        CHECK_RC(minishard_status_json(l.nodes[0], json, written, &again), MINISHARD_OK);
        CHECK(again == written && strlen(json) + 1 == written);
        CHECK(strstr(json, "\"shard_count\":1") != NULL);
        CHECK(strstr(json, "\"stats\":{") != NULL);
        free(json);
    }

    /* Thread dispatch has no dispatch and no event fd. */
    CHECK_RC(minishard_dispatch(l.nodes[0], 10, &written), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("host dispatch"));
    CHECK(minishard_event_fd(l.nodes[0]) == -1);
    CHECK(last_error_mentions("MINISHARD_DISPATCH_HOST"));
    /* Waits: an unknown health, a timeout that says where it stands. */
    CHECK_RC(minishard_wait_until(l.nodes[0], (minishard_health)9, 10), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_wait_until(l.nodes[0], MINISHARD_HEALTH_DEGRADED, 30), MINISHARD_TIMEOUT);
    CHECK(last_error_mentions("it is available"));
#ifdef MINISHARD_TESTING
    /* Fault injection refuses what is not an address. */
    CHECK_RC(minishard_testing_cut(l.nodes[0], "no-port"), MINISHARD_CONFIG);
    CHECK_RC(minishard_testing_heal(l.nodes[0], NULL), MINISHARD_INVALID_ARGUMENT);
#endif

    /* Leave, twice; then the live view is closed. */
    CHECK_RC(minishard_leave(l.nodes[0]), MINISHARD_OK);
    CHECK(app_count(&l.apps[0], EV_DEALLOCATED) == 1);
    CHECK_RC(minishard_leave(l.nodes[0]), MINISHARD_OK);
    CHECK_RC(minishard_get_node(l.nodes[0], 0, buf, sizeof buf, &written), MINISHARD_CLOSED);
    CHECK_RC(minishard_my_shard(l.nodes[0], &shard, &epoch), MINISHARD_CLOSED);
    CHECK_RC(minishard_wait_until(l.nodes[0], MINISHARD_HEALTH_AVAILABLE, 10), MINISHARD_CLOSED);
    CHECK_RC(minishard_status_json(l.nodes[0], NULL, 0, &written), MINISHARD_BUFFER_TOO_SMALL);
    CHECK(l.apps[0].freed == 0);
    local_stop(&l);
    CHECK(app_count(&l.apps[0], EV_DEALLOCATED) == 1); /* free after leave: no second one */
}

/* Two members, one shard: the second joins with another cookie. No member
 * accepts it, so it is part of no cluster: waiting for it to be available
 * fails at once with MINISHARD_MISCONFIGURED naming the member that refuses
 * it, its status says so, and the first keeps the shard alone. */
static void a_node_with_another_cookie_is_misconfigured_and_never_available(void) {
    static const uint8_t other_cookie[] = "another-cookie";
    local l;
    minishard_callbacks cb;
    minishard_config *cfg;
    char json[4096];
    char owner[64];
    char expected[128];
    size_t written;
    uint32_t shard;
    uint64_t epoch;
    double started;
    uint64_t k = time_scale();
    REQUIRE(local_prepare(&l, "misconfigured", 2, 1, MINISHARD_DISPATCH_THREAD));
    REQUIRE(local_join(&l, 0));
    REQUIRE_OK(minishard_wait_until(l.nodes[0], MINISHARD_HEALTH_AVAILABLE, 10000 * k));
    cb = app_callbacks(&l.apps[1]);
    cfg = fast_config(l.addrs[1], MINISHARD_DISPATCH_THREAD);
    REQUIRE(cfg != NULL);
    REQUIRE_OK(minishard_config_set_cookie(cfg, other_cookie, sizeof other_cookie - 1));
    REQUIRE_OK(minishard_join(l.name, cfg, &cb, &l.nodes[1]));
    minishard_config_free(cfg);
    started = now_ms();
    CHECK_RC(minishard_wait_until(l.nodes[1], MINISHARD_HEALTH_AVAILABLE, 30000 * k),
             MINISHARD_MISCONFIGURED);
    CHECK(now_ms() - started < 30000.0 * (double)k); /* failed, did not time out */
    CHECK(last_error_mentions(l.addrs[0]));
    CHECK(last_error_mentions("wrong_cookie"));
    CHECK(minishard_get_health(l.nodes[1]) != MINISHARD_HEALTH_AVAILABLE);
    /* Too few members (itself not counted) for transition_timeout. */
    CHECK_RC(minishard_wait_until(l.nodes[1], MINISHARD_HEALTH_DEGRADED, 10000 * k), MINISHARD_OK);
    CHECK_RC(minishard_my_shard(l.nodes[1], &shard, &epoch), MINISHARD_NOT_FOUND);
    REQUIRE_OK(minishard_status_json(l.nodes[1], json, sizeof json, &written));
    CHECK(strstr(json, "\"misconfigured\":true") != NULL);
    snprintf(expected, sizeof expected, "{\"peer\":\"%s\",\"count\":", l.addrs[0]);
    CHECK(strstr(json, expected) != NULL);
    CHECK(strstr(json, "\"reason\":\"wrong_cookie\"") != NULL);
    /* The member that was serving is not the one out of the cluster. */
    CHECK(minishard_get_health(l.nodes[0]) == MINISHARD_HEALTH_AVAILABLE);
    REQUIRE_OK(minishard_get_node(l.nodes[0], 0, owner, sizeof owner, &written));
    CHECK(strcmp(owner, l.addrs[0]) == 0);
    REQUIRE_OK(minishard_status_json(l.nodes[0], json, sizeof json, &written));
    CHECK(strstr(json, "\"misconfigured\":false") != NULL);
    CHECK(app_count(&l.apps[1], EV_ALLOCATED) == 0);
    local_stop(&l);
}

static void without_enough_members_there_is_no_owner(void) {
    /* Three members, two shards, only one running: degraded, no owner. */
    char addrs[3][64];
    const char *members[3];
    app a;
    minishard_callbacks cb;
    minishard_config *cfg;
    minishard_cluster *cluster = NULL;
    char buf[64] = "x";
    size_t written = 9;
    uint32_t shard = 5;
    uint64_t epoch = 5;
    REQUIRE(free_addresses(3, addrs));
    members[0] = addrs[0];
    members[1] = addrs[1];
    members[2] = addrs[2];
    app_init(&a, members, 3, 2);
    cb = app_callbacks(&a);
    cfg = fast_config(addrs[0], MINISHARD_DISPATCH_THREAD);
    REQUIRE(cfg != NULL);
    REQUIRE_OK(minishard_join("lonely", cfg, &cb, &cluster));
    minishard_config_free(cfg);
    CHECK(minishard_get_health(cluster) == MINISHARD_HEALTH_DEGRADED);
    CHECK_RC(minishard_get_node(cluster, 0, buf, sizeof buf, &written), MINISHARD_NOT_FOUND);
    CHECK(written == 0 && buf[0] == '\0');
    CHECK(last_error_mentions("no owner"));
    CHECK_RC(minishard_my_shard(cluster, &shard, &epoch), MINISHARD_NOT_FOUND);
    CHECK(shard == 5 && epoch == 5);
    minishard_cluster_free(cluster);
    CHECK(a.freed == 1);
    CHECK(app_count(&a, EV_ALLOCATED) == 0);
    app_destroy(&a);
}

/* ---- calls from inside a callback -------------------------------------- */

static minishard_result reentrant_nodes(void *user_data, const char *cluster, minishard_node_list *out) {
    app *a = user_data;
    pthread_mutex_lock(&a->lock);
    if (a->self != NULL && !a->reentered) {
        a->leave_rc = minishard_leave(a->self);
        a->dispatch_rc = minishard_dispatch(a->self, 1, NULL);
        a->wait_rc = minishard_wait_until(a->self, MINISHARD_HEALTH_AVAILABLE, 1);
        minishard_cluster_free(a->self); /* refused: the handle stays valid */
        a->reentered = 1;
    }
    pthread_mutex_unlock(&a->lock);
    return app_nodes(a, cluster, out);
}

static void a_callback_cannot_leave_dispatch_wait_on_or_free_its_own_handle(void) {
    char addrs[1][64];
    const char *members[1];
    app a;
    minishard_callbacks cb;
    minishard_config *cfg;
    minishard_cluster *cluster = NULL;
    double deadline;
    int reentered = 0;
    REQUIRE(free_addresses(1, addrs));
    members[0] = addrs[0];
    app_init(&a, members, 1, 1);
    cb = app_callbacks(&a);
    cb.nodes = reentrant_nodes;
    cfg = fast_config(addrs[0], MINISHARD_DISPATCH_THREAD);
    REQUIRE(cfg != NULL);
    /* `nodes` is asked again every 20 ms: the callback thread re-enters. */
    CHECK_RC(minishard_config_set_member_poll_ms(cfg, 20), MINISHARD_OK);
    REQUIRE_OK(minishard_join("reenter", cfg, &cb, &cluster));
    minishard_config_free(cfg);
    pthread_mutex_lock(&a.lock);
    a.self = cluster;
    pthread_mutex_unlock(&a.lock);
    deadline = now_ms() + 5000.0 * (double)time_scale();
    while (!reentered && now_ms() < deadline) {
        pthread_mutex_lock(&a.lock);
        reentered = a.reentered;
        pthread_mutex_unlock(&a.lock);
        if (!reentered) pause_ms(5);
    }
    REQUIRE(reentered);
    CHECK(a.leave_rc == MINISHARD_INVALID_ARGUMENT);
    CHECK(a.dispatch_rc == MINISHARD_INVALID_ARGUMENT);
    CHECK(a.wait_rc == MINISHARD_INVALID_ARGUMENT);
    /* The handle survived the refused free and still works. */
    CHECK_RC(minishard_wait_until(cluster, MINISHARD_HEALTH_AVAILABLE, 10000 * time_scale()), MINISHARD_OK);
    minishard_cluster_free(cluster);
    CHECK(a.freed == 1);
    app_destroy(&a);
}

/* ---- signals ------------------------------------------------------------ */

/* Whether thread `tid` of this process has SIGPIPE blocked; its name in
 * `name`. */
static int sigpipe_blocked(const char *tid, char *name, size_t name_len) {
    char path[64], line[256];
    FILE *f;
    unsigned long long blocked = 0;
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", tid);
    f = fopen(path, "r");
    name[0] = '\0';
    if (f != NULL) {
        if (fgets(name, (int)name_len, f) != NULL) name[strcspn(name, "\n")] = '\0';
        fclose(f);
    }
    snprintf(path, sizeof path, "/proc/self/task/%s/status", tid);
    f = fopen(path, "r");
    if (f == NULL) return 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "SigBlk:", 7) == 0) blocked = strtoull(line + 7, NULL, 16);
    }
    fclose(f);
    return (blocked >> (SIGPIPE - 1)) & 1;
}

static void the_engine_threads_block_sigpipe_and_the_hosts_do_not(void) {
    /* A peer closing a socket mid-write raises SIGPIPE in the writing
     * thread; a C host's default action would kill the whole process. */
    local l;
    DIR *tasks;
    struct dirent *task;
    char self[32], name[64];
    size_t engine_threads = 0;
    REQUIRE(local_start(&l, "sigpipe", 1, 1, MINISHARD_DISPATCH_THREAD));
    REQUIRE_OK(minishard_wait_until(l.nodes[0], MINISHARD_HEALTH_AVAILABLE, 10000 * time_scale()));
    snprintf(self, sizeof self, "%ld", (long)getpid());
    tasks = opendir("/proc/self/task");
    REQUIRE(tasks != NULL);
    while ((task = readdir(tasks)) != NULL) {
        int blocked;
        if (task->d_name[0] == '.') continue;
        blocked = sigpipe_blocked(task->d_name, name, sizeof name);
        if (strcmp(task->d_name, self) == 0) {
            CHECK(!blocked); /* the host's thread is as it was */
        } else if (strncmp(name, "minishard", 9) == 0) {
            CHECK(blocked);
            engine_threads++;
        }
    }
    closedir(tasks);
    CHECK(engine_threads >= 2); /* the network thread and the callback thread */
    local_stop(&l);
}

/* ---- logging -------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t lock;
    char lines[64][512];
    minishard_log_level levels[64];
    size_t count;
} log_lines;

static void collect(void *user_data, minishard_log_level level, const char *target,
                    const char *message) {
    log_lines *log = user_data;
    pthread_mutex_lock(&log->lock);
    if (log->count < 64) {
        snprintf(log->lines[log->count], sizeof log->lines[0], "%s: %s", target, message);
        log->levels[log->count++] = level;
    }
    pthread_mutex_unlock(&log->lock);
}

/* The first line containing both needles, or -1. */
static int log_find(log_lines *log, const char *a, const char *b) {
    size_t i;
    int found = -1;
    pthread_mutex_lock(&log->lock);
    for (i = 0; i < log->count && found < 0; i++) {
        if (strstr(log->lines[i], a) && strstr(log->lines[i], b)) found = (int)i;
    }
    pthread_mutex_unlock(&log->lock);
    return found;
}

static void a_log_callback_hears_joins_and_failed_callbacks(void) {
    static log_lines log; /* static: it must outlive any late log line */
    local l;
    int joined, failed;
    memset(&log, 0, sizeof log);
    pthread_mutex_init(&log.lock, NULL);
    CHECK_RC(minishard_set_log_callback(collect, &log, 9), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_set_log_callback(collect, &log, MINISHARD_LOG_INFO), MINISHARD_OK);
    memset(&l, 0, sizeof l);
    snprintf(l.name, sizeof l.name, "logs");
    l.n = 1;
    l.dispatch = MINISHARD_DISPATCH_THREAD;
    REQUIRE(free_addresses(1, l.addrs));
    l.members[0] = l.addrs[0];
    app_init(&l.apps[0], l.members, 1, 1);
    l.apps[0].fail_allocations = 1; /* the first allocated fails: a warning */
    REQUIRE(local_join(&l, 0));
    CHECK_RC(minishard_wait_until(l.nodes[0], MINISHARD_HEALTH_AVAILABLE, 10000 * time_scale()),
             MINISHARD_OK);
    local_stop(&l);
    /* Nothing more after clearing: the log may go away. */
    CHECK_RC(minishard_set_log_callback(NULL, NULL, MINISHARD_LOG_TRACE), MINISHARD_OK);
    joined = log_find(&log, "joined", "logs");
    failed = log_find(&log, "callback failed", "allocated");
    CHECK(joined >= 0);
    CHECK(failed >= 0);
    if (joined >= 0) CHECK(log.levels[joined] == MINISHARD_LOG_INFO);
    if (failed >= 0) {
        CHECK(log.levels[failed] == MINISHARD_LOG_WARN);
        CHECK(strstr(log.lines[failed], "cluster=logs") != NULL);
    }
    /* Lines from the engine's thread carry its span: cluster and node. */
    {
        char node[96];
        snprintf(node, sizeof node, "node=%s", l.addrs[0]);
        CHECK(log_find(&log, "cluster=logs", node) >= 0);
    }
    if (test_failures) {
        size_t i;
        for (i = 0; i < log.count; i++) fprintf(stderr, "    log: %s\n", log.lines[i]);
    }
    pthread_mutex_destroy(&log.lock);
}

/* An app that also keeps its handle's own log lines. */
typedef struct {
    app base; /* first: the app callbacks see an app */
    log_lines log;
} logging_app;

static void collect_own(void *user_data, minishard_log_level level, const char *target,
                        const char *message) {
    collect(&((logging_app *)user_data)->log, level, target, message);
}

static int log_count(log_lines *log) {
    int n;
    pthread_mutex_lock(&log->lock);
    n = (int)log->count;
    pthread_mutex_unlock(&log->lock);
    return n;
}

static void a_handles_own_log_callback_gets_its_lines_and_the_global_one_the_rest(void) {
    static log_lines global; /* static: it must outlive any late log line */
    static logging_app own;
    local l; /* node 0 logs to its own callback, node 1 to the global one */
    minishard_callbacks cb;
    minishard_config *cfg;
    int own_lines;
    size_t i;
    memset(&global, 0, sizeof global);
    pthread_mutex_init(&global.lock, NULL);
    memset(&own, 0, sizeof own);
    pthread_mutex_init(&own.log.lock, NULL);
    CHECK_RC(minishard_set_log_callback(collect, &global, MINISHARD_LOG_INFO), MINISHARD_OK);
    memset(&l, 0, sizeof l);
    l.n = 2;
    l.dispatch = MINISHARD_DISPATCH_THREAD;
    REQUIRE(free_addresses(2, l.addrs));
    l.members[0] = l.addrs[0];
    l.members[1] = l.addrs[1];
    app_init(&own.base, &l.members[0], 1, 1);
    app_init(&l.apps[1], &l.members[1], 1, 1);
    own.base.fail_allocations = 1; /* a warning on each side */
    l.apps[1].fail_allocations = 1;

    cfg = fast_config(l.addrs[0], MINISHARD_DISPATCH_THREAD);
    REQUIRE(cfg != NULL);
    cb = app_callbacks(&own.base);
    cb.user_data = &own;
    cb.log = collect_own;
    cb.log_max_level = 9; /* not a level */
    CHECK_RC(minishard_join("own-log", cfg, &cb, &l.nodes[0]), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("log_max_level 9"));
    CHECK(own.base.freed == 1);
    cb.log_max_level = MINISHARD_LOG_INFO;
    own.base.freed = 0;
    REQUIRE_OK(minishard_join("own-log", cfg, &cb, &l.nodes[0]));
    minishard_config_free(cfg);
    snprintf(l.name, sizeof l.name, "global-log");
    REQUIRE(local_join(&l, 1));
    for (i = 0; i < 2; i++) {
        CHECK_RC(minishard_wait_until(l.nodes[i], MINISHARD_HEALTH_AVAILABLE, 10000 * time_scale()),
                 MINISHARD_OK);
    }
    minishard_cluster_free(l.nodes[0]);
    l.nodes[0] = NULL;
    own_lines = log_count(&own.log);
    CHECK(own.base.freed == 1);
    minishard_cluster_free(l.nodes[1]);
    l.nodes[1] = NULL;
    CHECK(l.apps[1].freed == 1);
    CHECK_RC(minishard_set_log_callback(NULL, NULL, MINISHARD_LOG_TRACE), MINISHARD_OK);

    /* Each handle's join and failed allocated went to its own place... */
    CHECK(log_find(&own.log, "joined", "own-log") >= 0);
    CHECK(log_find(&own.log, "callback failed", "cluster=own-log") >= 0);
    CHECK(log_find(&global, "joined", "global-log") >= 0);
    CHECK(log_find(&global, "callback failed", "cluster=global-log") >= 0);
    /* ...and only there; its leave too, before free_user_data. */
    CHECK(log_find(&own.log, "global-log", "") < 0);
    CHECK(log_find(&global, "own-log", "") < 0);
    CHECK(log_find(&own.log, "left", "") >= 0);
    CHECK(log_count(&own.log) == own_lines);
    if (test_failures) {
        for (i = 0; i < own.log.count; i++) fprintf(stderr, "    own: %s\n", own.log.lines[i]);
        for (i = 0; i < global.count; i++) fprintf(stderr, "    global: %s\n", global.lines[i]);
    }
    app_destroy(&own.base);
    app_destroy(&l.apps[1]);
    pthread_mutex_destroy(&own.log.lock);
    pthread_mutex_destroy(&global.lock);
}

int main(void) {
    RUN(result_names_and_version);
    RUN(last_error_is_per_thread_and_truncates);
    RUN(config_setters_refuse_bad_values_with_a_message);
    RUN(limit_setters_refuse_out_of_range_values_naming_the_setting);
    RUN(a_cluster_joined_with_other_limits_converges);
    RUN(join_refuses_bad_arguments_and_answers_and_frees_user_data_once);
    RUN(null_handles_are_refused);
    RUN(a_live_handle_checks_buffers_shards_and_modes_then_closes);
    RUN(without_enough_members_there_is_no_owner);
    RUN(a_node_with_another_cookie_is_misconfigured_and_never_available);
    RUN(a_callback_cannot_leave_dispatch_wait_on_or_free_its_own_handle);
    RUN(the_engine_threads_block_sigpipe_and_the_hosts_do_not);
    RUN(a_log_callback_hears_joins_and_failed_callbacks);
    RUN(a_handles_own_log_callback_gets_its_lines_and_the_global_one_the_rest);
    return finish("c-errors");
}
