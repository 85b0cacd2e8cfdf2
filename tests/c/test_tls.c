/*
 * Mutual TLS through the C ABI (minishard_config_set_tls), with
 * certificates written by `cargo run -p minishard --example test-certs`
 * into $MINISHARD_TEST_CERTS (tests/c/run.sh does it): three nodes with
 * certificates from the cluster's CA converge; a node whose certificate
 * comes from another CA is refused and never gets a shard; bad arguments
 * and unreadable files are errors with a message naming them.
 */
#include "harness.h"

static char paths[6][600];

/* The path of a file of the certificate set, kept in slot `slot`. */
static const char *cert_file(int slot, const char *name) {
    const char *dir = getenv("MINISHARD_TEST_CERTS");
    snprintf(paths[slot], sizeof paths[slot], "%s/%s", dir ? dir : ".", name);
    return paths[slot];
}

static void use_cluster_ca(local *l, size_t i) {
    l->tls_cert[i] = cert_file(0, "node.pem");
    l->tls_key[i] = cert_file(1, "node-key.pem");
    l->tls_ca[i] = cert_file(2, "ca.pem");
}

static void three_nodes_over_mutual_tls_converge(void) {
    local l;
    size_t i;
    REQUIRE(local_prepare(&l, "tls", 3, 2, MINISHARD_DISPATCH_THREAD));
    for (i = 0; i < l.n; i++) use_cluster_ca(&l, i);
    for (i = 0; i < l.n; i++) REQUIRE(local_join(&l, i));
    CHECK(local_converged(&l, 2, 10000 * time_scale()));
    local_stop(&l);
}

static void a_node_with_a_certificate_from_another_ca_is_refused(void) {
    local l;
    size_t i;
    uint64_t refused = 0;
    double deadline;
    minishard_stats stats = {.struct_size = sizeof stats};
    REQUIRE(local_prepare(&l, "tls-other", 4, 2, MINISHARD_DISPATCH_THREAD));
    for (i = 0; i < 3; i++) use_cluster_ca(&l, i);
    l.tls_cert[3] = cert_file(3, "other.pem");
    l.tls_key[3] = cert_file(4, "other-key.pem");
    l.tls_ca[3] = cert_file(5, "other-ca.pem");
    for (i = 0; i < l.n; i++) REQUIRE(local_join(&l, i));
    for (i = 0; i < 3; i++) {
        CHECK_RC(minishard_wait_until(l.nodes[i], MINISHARD_HEALTH_AVAILABLE,
                                      10000 * time_scale()), MINISHARD_OK);
    }
    /* The good nodes refuse it (and count it); it never gets anywhere. */
    deadline = now_ms() + 5000.0 * (double)time_scale();
    while (refused == 0 && now_ms() < deadline) {
        refused = 0;
        for (i = 0; i < 3; i++) {
            CHECK_RC(minishard_get_stats(l.nodes[i], &stats), MINISHARD_OK);
            refused += stats.refused_handshakes;
        }
        pause_ms(10);
    }
    CHECK(refused > 0);
    for (i = 0; i < 3; i++) {
        CHECK_RC(minishard_get_stats(l.nodes[i], &stats), MINISHARD_OK);
        CHECK(stats.reconnects == 0);
    }
    {
        uint32_t shard;
        uint64_t epoch;
        CHECK_RC(minishard_my_shard(l.nodes[3], &shard, &epoch), MINISHARD_NOT_FOUND);
        CHECK(minishard_get_health(l.nodes[3]) != MINISHARD_HEALTH_AVAILABLE);
    }
    local_stop(&l);
}

static void tls_arguments_and_files_are_checked(void) {
    char addrs[1][64];
    const char *members[1];
    app a;
    minishard_callbacks cb;
    minishard_cluster *cluster = NULL;
    minishard_config *cfg;
    REQUIRE(free_addresses(1, addrs));
    cfg = fast_config(addrs[0], MINISHARD_DISPATCH_THREAD);
    REQUIRE(cfg != NULL);
    CHECK_RC(minishard_config_set_tls(cfg, "cert.pem", NULL, "ca.pem"), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("key_path is NULL"));
    CHECK_RC(minishard_config_set_tls(cfg, "", "key.pem", "ca.pem"), MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("cert_path is empty"));
    CHECK_RC(minishard_config_set_tls(NULL, NULL, NULL, NULL), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_config_set_tls(cfg, NULL, NULL, NULL), MINISHARD_OK);
    /* A missing file: the join fails, naming it, and frees user_data. */
    CHECK_RC(minishard_config_set_tls(cfg, cert_file(0, "node.pem"), cert_file(1, "missing.pem"),
                                      cert_file(2, "ca.pem")), MINISHARD_OK);
    members[0] = addrs[0];
    app_init(&a, members, 1, 1);
    cb = app_callbacks(&a);
    CHECK_RC(minishard_join("tls-errors", cfg, &cb, &cluster), MINISHARD_CONFIG);
    CHECK(last_error_mentions("missing.pem"));
    CHECK(cluster == NULL);
    CHECK(a.freed == 1);
    /* A key that does not fit the certificate. */
    CHECK_RC(minishard_config_set_tls(cfg, cert_file(0, "node.pem"), cert_file(1, "other-key.pem"),
                                      cert_file(2, "ca.pem")), MINISHARD_OK);
    cb = app_callbacks(&a);
    CHECK_RC(minishard_join("tls-errors", cfg, &cb, &cluster), MINISHARD_CONFIG);
    CHECK(last_error_mentions("does not fit certificate"));
    CHECK(a.freed == 2);
    app_destroy(&a);
    minishard_config_free(cfg);
}

int main(void) {
    RUN(tls_arguments_and_files_are_checked);
    RUN(three_nodes_over_mutual_tls_converge);
    RUN(a_node_with_a_certificate_from_another_ca_is_refused);
    return finish("tls");
}
