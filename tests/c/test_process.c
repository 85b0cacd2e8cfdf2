/*
 * A member in another process: the test program runs itself as a child
 * member, lets it take a shard, then kills it with SIGKILL, the way a
 * process dies in production (no leave, no goodbye). The shard must stay
 * reserved to it for node_grace, then move to a standby node here.
 *
 *   test_process                     the test
 *   test_process --member ADDR ...   a member (started by the test)
 */
#include "harness.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

#define BOUND_MS ((250.0 + 750.0 + 100.0) * 4)
#define GRACE_MS 750.0

/* The child: join as members[0] of members[0..n), hold on until killed (or
 * until the parent is gone, or a minute has passed). */
static int member_main(int n, char **members) {
    app a;
    minishard_callbacks cb;
    minishard_config *cfg;
    minishard_cluster *cluster = NULL;
    pid_t parent = getppid();
    double deadline = now_ms() + 60000.0 * (double)time_scale();
    app_init(&a, (const char *const *)members, (size_t)n, 2);
    cb = app_callbacks(&a);
    cfg = fast_config(members[0], MINISHARD_DISPATCH_THREAD);
    if (cfg == NULL || minishard_join("processes", cfg, &cb, &cluster) != MINISHARD_OK) {
        print_last_error();
        return 1;
    }
    minishard_config_free(cfg);
    while (getppid() == parent && now_ms() < deadline) pause_ms(20);
    minishard_cluster_free(cluster);
    app_destroy(&a);
    return 0;
}

static const char *self_path;

static void a_killed_member_process_fails_over_after_the_grace(void) {
    local l;
    pid_t child;
    char *child_argv[8];
    size_t i;
    int status = 0, moved = 0, child_shard = -1;
    double killed_at, deadline;
    const size_t CHILD = 3;
    memset(&l, 0, sizeof l);
    snprintf(l.name, sizeof l.name, "processes");
    l.n = 4;
    l.dispatch = MINISHARD_DISPATCH_THREAD;
    l.main_thread = pthread_self();
    REQUIRE(free_addresses(4, l.addrs));
    for (i = 0; i < 4; i++) l.members[i] = l.addrs[i];
    for (i = 0; i < 3; i++) app_init(&l.apps[i], l.members, 4, 2);

    /* The child and node 0 first: two members for two shards, each takes one. */
    child_argv[0] = (char *)self_path;
    child_argv[1] = "--member";
    child_argv[2] = l.addrs[CHILD];
    for (i = 0; i < 3; i++) child_argv[3 + i] = l.addrs[i];
    child_argv[6] = NULL;
    REQUIRE(posix_spawn(&child, self_path, NULL, NULL, child_argv, environ) == 0);
    REQUIRE(local_join(&l, 0));
    deadline = now_ms() + 10000.0 * (double)time_scale();
    while (child_shard < 0 && now_ms() < deadline) {
        uint32_t s;
        for (s = 0; s < 2; s++) {
            if (local_owner(&l, 0, s) == (int)CHILD) child_shard = (int)s;
        }
        if (child_shard < 0) pause_ms(5);
    }
    CHECK(child_shard >= 0);
    if (child_shard >= 0) {
        /* Two standby members join; nothing moves while the child lives. */
        CHECK(local_join(&l, 1));
        CHECK(local_join(&l, 2));
        CHECK(local_converged(&l, 2, 10000));
        CHECK(local_owner(&l, 1, (uint32_t)child_shard) == (int)CHILD);

        killed_at = now_ms();
        CHECK(kill(child, SIGKILL) == 0);
        deadline = now_ms() + BOUND_MS * (double)time_scale();
        while (now_ms() < deadline) {
            int owner = local_owner(&l, 1, (uint32_t)child_shard);
            if (owner >= 0 && owner != (int)CHILD) {
                moved = 1;
                break;
            }
            pause_ms(2);
        }
        CHECK(moved);
        CHECK(now_ms() - killed_at >= GRACE_MS * (double)time_scale());
        CHECK(local_converged(&l, 2, BOUND_MS));
    } else {
        kill(child, SIGKILL);
    }
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    local_stop_first(&l, 3);
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--member") == 0) {
        return member_main(argc - 2, argv + 2);
    }
    self_path = argv[0];
    RUN(a_killed_member_process_fails_over_after_the_grace);
    return finish("c-process");
}
