/*
 * The cost of minishard_get_node from C: ns per call on 1 and 2 threads,
 * the median of repeated runs, on a settled 3-node 2-shard loopback cluster
 * (the same method as `minishard bench` uses for the Rust get_node, and as
 * minishard-ffi/examples/bench_get_node.rs, which tests/c/bench.sh runs
 * next to it).
 *
 *   bench_get_node [RUNS] [ITERATIONS]
 */
#include "harness.h"

typedef struct {
    minishard_cluster *cluster;
    pthread_barrier_t *start;
    long iterations;
    double ns_per_call;
    long found;
} worker;

static void *look_up(void *arg) {
    worker *w = arg;
    char owner[MINISHARD_ADDRESS_MAX];
    size_t written;
    long i, found = 0;
    double started;
    pthread_barrier_wait(w->start);
    started = now_ms();
    for (i = 0; i < w->iterations; i++) {
        found += minishard_get_node(w->cluster, (uint32_t)(i & 1), owner, sizeof owner,
                                    &written) == MINISHARD_OK;
    }
    w->ns_per_call = (now_ms() - started) * 1e6 / (double)w->iterations;
    w->found = found;
    return NULL;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, size_t n) {
    qsort(values, n, sizeof *values, by_value);
    return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

static int bench(local *l, int runs, long iterations) {
    size_t threads;
    for (threads = 1; threads <= 2; threads++) {
        double samples[64];
        int run;
        for (run = 0; run < runs && run < 64; run++) {
            pthread_t ids[2];
            worker workers[2];
            pthread_barrier_t start;
            double per_thread[2];
            size_t t;
            pthread_barrier_init(&start, NULL, (unsigned)threads);
            for (t = 0; t < threads; t++) {
                workers[t].cluster = l->nodes[0];
                workers[t].start = &start;
                workers[t].iterations = iterations;
                pthread_create(&ids[t], NULL, look_up, &workers[t]);
            }
            for (t = 0; t < threads; t++) {
                pthread_join(ids[t], NULL);
                if (workers[t].found != iterations) {
                    fprintf(stderr, "lookups failed during the run\n");
                    return 0;
                }
                per_thread[t] = workers[t].ns_per_call;
            }
            pthread_barrier_destroy(&start);
            samples[run] = median(per_thread, threads);
        }
        printf("%-44s %8.1f ns/call  (per thread, median of %d runs of %ld calls)\n",
               threads == 1 ? "C minishard_get_node, 1 thread" : "C minishard_get_node, 2 threads",
               median(samples, (size_t)(runs < 64 ? runs : 64)), runs, iterations);
    }
    return 1;
}

int main(int argc, char **argv) {
    local l;
    int runs = argc > 1 ? atoi(argv[1]) : 7;
    long iterations = argc > 2 ? atol(argv[2]) : 2000000;
    int ok;
    if (runs < 1 || iterations < 1) return 2;
    if (!local_start(&l, "bench-lookup", 3, 2, MINISHARD_DISPATCH_THREAD) ||
        !local_converged(&l, 2, 10000)) {
        fprintf(stderr, "the cluster did not settle\n");
        return 1;
    }
    ok = bench(&l, runs, iterations);
    local_stop(&l);
    return ok && test_failures == 0 ? 0 : 1;
}
