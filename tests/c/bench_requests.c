/*
 * What a request costs from C: minishard_request round trips to a remote
 * owner (100 B and 64 KiB, p50) and to this node's own shard (mean), on a
 * 2-member loopback cluster whose handler echoes. Run by tests/c/bench.sh;
 * `minishard bench` has the same rows from Rust.
 *
 *   bench_requests [ROUND_TRIPS]
 */
#include "harness.h"

static void echo(void *user_data, void *state, const uint8_t *payload, size_t len,
                 minishard_responder *responder) {
    (void)user_data;
    (void)state;
    minishard_respond(responder, payload, len);
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double p50_us(minishard_cluster *asker, size_t size, int round_trips) {
    uint8_t *payload = calloc(size, 1);
    double *samples = calloc((size_t)round_trips, sizeof *samples);
    double p50;
    for (int i = 0; i < round_trips; i++) {
        minishard_reply *reply = NULL;
        double started = now_ms();
        if (minishard_request(asker, 0, payload, size, 5000, &reply) != MINISHARD_OK) {
            print_last_error();
            exit(1);
        }
        samples[i] = (now_ms() - started) * 1000.0;
        minishard_reply_free(reply);
    }
    qsort(samples, (size_t)round_trips, sizeof *samples, by_value);
    p50 = samples[round_trips / 2];
    free(samples);
    free(payload);
    return p50;
}

int main(int argc, char **argv) {
    int round_trips = argc > 1 ? atoi(argv[1]) : 2000;
    local l;
    int owner;
    double started;
    if (!local_prepare(&l, "c-bench-requests", 2, 1, MINISHARD_DISPATCH_THREAD)) return 1;
    l.handle_request = echo;
    if (!local_join(&l, 0) || !local_join(&l, 1) || !local_converged(&l, 1, 20000.0)) return 1;
    owner = local_owner(&l, 0, 0);
    printf("C minishard_request, remote owner, 100 B: p50 %.1f us\n",
           p50_us(l.nodes[1 - owner], 100, round_trips));
    printf("C minishard_request, remote owner, 64 KiB: p50 %.1f us\n",
           p50_us(l.nodes[1 - owner], 64 << 10, round_trips));
    started = now_ms();
    for (int i = 0; i < 100000; i++) {
        minishard_reply *reply = NULL;
        if (minishard_request(l.nodes[owner], 0, (const uint8_t *)"x", 1, 5000, &reply) !=
            MINISHARD_OK) {
            print_last_error();
            return 1;
        }
        minishard_reply_free(reply);
    }
    printf("C minishard_request, local owner: %.2f us per round trip\n",
           (now_ms() - started) * 1000.0 / 100000.0);
    local_stop(&l);
    return 0;
}
