/*
 * Requests through the C ABI (docs/design.md 11): minishard_request with a reply
 * the caller owns and frees, minishard_request_async with a completion
 * function, handle_request answering at once, later from another thread,
 * with an error or not at all; the error codes; node metadata.
 */
#include "harness.h"

/* ---- handlers ------------------------------------------------------------ */

/* A responder the handler kept for the test to answer, and its payload. */
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static minishard_responder *held;
static char held_payload[64];

/* Answers "<shard> <epoch> <payload>" at once; "later" keeps the responder;
 * "fail" answers with an error; "drop" frees it unanswered. */
static void echo_handler(void *user_data, void *state, const uint8_t *payload, size_t len,
                         minishard_responder *responder) {
    shard_state *s = state;
    char reply[256];
    int n;
    (void)user_data;
    if (len == 5 && memcmp(payload, "later", 5) == 0) {
        pthread_mutex_lock(&held_lock);
        held = responder;
        memcpy(held_payload, payload, len);
        held_payload[len] = 0;
        pthread_mutex_unlock(&held_lock);
        return;
    }
    if (len == 4 && memcmp(payload, "fail", 4) == 0) {
        minishard_respond_error(responder, "no such thing");
        return;
    }
    if (len == 4 && memcmp(payload, "drop", 4) == 0) {
        minishard_responder_free(responder);
        return;
    }
    n = snprintf(reply, sizeof reply, "%u %llu %.*s", s->shard,
                 (unsigned long long)minishard_responder_epoch(responder), (int)len,
                 (const char *)payload);
    /* Long payloads are cut short in the answer (snprintf says how long the
     * whole would have been). */
    if (n < 0 || (size_t)n >= sizeof reply) n = (int)sizeof reply - 1;
    minishard_respond(responder, (const uint8_t *)reply, (size_t)n);
}

static minishard_responder *wait_held(double timeout_ms) {
    double deadline = now_ms() + timeout_ms;
    minishard_responder *r = NULL;
    while (r == NULL && now_ms() < deadline) {
        pthread_mutex_lock(&held_lock);
        r = held;
        held = NULL;
        pthread_mutex_unlock(&held_lock);
        if (r == NULL) pause_ms(5);
    }
    return r;
}

static int start(local *l, const char *name, size_t n, int64_t shards) {
    if (!local_prepare(l, name, n, shards, MINISHARD_DISPATCH_THREAD)) return 0;
    l->handle_request = echo_handler;
    l->with_metadata = 1;
    for (size_t i = 0; i < n; i++) {
        if (!local_join(l, i)) return 0;
    }
    return local_converged(l, (uint32_t)shards, 10000.0 * (double)time_scale());
}

static uint64_t timeout(void) { return 5000 * time_scale(); }

/* ---- tests --------------------------------------------------------------- */

static void every_node_reaches_every_owner_and_owns_the_reply(void) {
    local l;
    REQUIRE(start(&l, "c-req-reach", 3, 2));
    for (size_t i = 0; i < 3; i++) {
        for (uint32_t shard = 0; shard < 2; shard++) {
            char owner[MINISHARD_ADDRESS_MAX], expected[300];
            size_t written, len = 0;
            uint64_t epoch = 0;
            minishard_reply *reply = NULL;
            CHECK_RC(minishard_get_owner(l.nodes[i], shard, owner, sizeof owner, &written, &epoch),
                     MINISHARD_OK);
            CHECK_RC(minishard_request(l.nodes[i], shard, (const uint8_t *)"hi", 2, timeout(),
                                       &reply),
                     MINISHARD_OK);
            if (reply == NULL) continue;
            const uint8_t *data = minishard_reply_data(reply, &len);
            snprintf(expected, sizeof expected, "%u %llu hi", shard, (unsigned long long)epoch);
            CHECK(len == strlen(expected) && memcmp(data, expected, len) == 0);
            CHECK(strcmp(minishard_reply_node(reply), owner) == 0);
            CHECK(minishard_reply_epoch(reply) == epoch);
            minishard_reply_free(reply);
        }
    }
    local_stop(&l);
}

/* What a completion function was told, once. */
typedef struct {
    pthread_mutex_t lock;
    int calls;
    minishard_result result;
    char data[256];
    char message[256];
    pthread_t thread;
} completion;

static void on_done(void *user_data, minishard_result result, const minishard_reply *reply,
                    const char *message) {
    completion *c = user_data;
    size_t len = 0;
    pthread_mutex_lock(&c->lock);
    c->calls++;
    c->result = result;
    c->thread = pthread_self();
    if (reply != NULL) {
        const uint8_t *data = minishard_reply_data(reply, &len);
        if (len >= sizeof c->data) len = sizeof c->data - 1;
        memcpy(c->data, data, len);
        c->data[len] = 0;
    }
    if (message != NULL) snprintf(c->message, sizeof c->message, "%s", message);
    pthread_mutex_unlock(&c->lock);
}

static int wait_done(completion *c, double timeout_ms) {
    double deadline = now_ms() + timeout_ms;
    int calls = 0;
    while (now_ms() < deadline) {
        pthread_mutex_lock(&c->lock);
        calls = c->calls;
        pthread_mutex_unlock(&c->lock);
        if (calls > 0) break;
        pause_ms(5);
    }
    /* A second call would show up here. */
    pause_ms(50);
    pthread_mutex_lock(&c->lock);
    calls = c->calls;
    pthread_mutex_unlock(&c->lock);
    return calls;
}

static void *answer_later(void *arg) {
    minishard_responder *r = arg;
    CHECK_RC(minishard_respond(r, (const uint8_t *)"from another thread", 19), MINISHARD_OK);
    return NULL;
}

static void async_requests_complete_once_even_when_answered_from_another_thread(void) {
    local l;
    completion now, later;
    pthread_t answerer;
    int owner;
    size_t asker;
    REQUIRE(start(&l, "c-req-async", 2, 1));
    owner = local_owner(&l, 0, 0);
    REQUIRE(owner >= 0);
    asker = (size_t)(1 - owner);
    memset(&now, 0, sizeof now);
    memset(&later, 0, sizeof later);
    pthread_mutex_init(&now.lock, NULL);
    pthread_mutex_init(&later.lock, NULL);
    REQUIRE_OK(minishard_request_async(l.nodes[asker], 0, (const uint8_t *)"x", 1, timeout(),
                                       on_done, &now));
    CHECK(wait_done(&now, (double)timeout()) == 1);
    CHECK(now.result == MINISHARD_OK);
    CHECK(strstr(now.data, " x") != NULL);
    CHECK(!pthread_equal(now.thread, pthread_self()));

    REQUIRE_OK(minishard_request_async(l.nodes[asker], 0, (const uint8_t *)"later", 5, timeout(),
                                       on_done, &later));
    minishard_responder *r = wait_held((double)timeout());
    REQUIRE(r != NULL);
    CHECK(strcmp(held_payload, "later") == 0);
    REQUIRE(pthread_create(&answerer, NULL, answer_later, r) == 0);
    pthread_join(answerer, NULL);
    CHECK(wait_done(&later, (double)timeout()) == 1);
    CHECK(later.result == MINISHARD_OK);
    CHECK(strcmp(later.data, "from another thread") == 0);
    local_stop(&l);
    pthread_mutex_destroy(&now.lock);
    pthread_mutex_destroy(&later.lock);
}

static void handler_errors_and_bad_arguments_have_their_codes(void) {
    local l;
    minishard_reply *reply = (minishard_reply *)&reply;
    uint8_t big[1 << 16];
    REQUIRE(start(&l, "c-req-errors", 2, 1));
    CHECK_RC(minishard_request(l.nodes[0], 0, (const uint8_t *)"fail", 4, timeout(), &reply),
             MINISHARD_HANDLER_FAILED);
    CHECK(reply == NULL);
    CHECK(last_error_mentions("no such thing"));
    CHECK_RC(minishard_request(l.nodes[1], 0, (const uint8_t *)"drop", 4, timeout(), &reply),
             MINISHARD_HANDLER_FAILED);
    CHECK(last_error_mentions("dropped"));
    CHECK_RC(minishard_request(l.nodes[0], 7, (const uint8_t *)"x", 1, timeout(), &reply),
             MINISHARD_INVALID_ARGUMENT);
    CHECK(last_error_mentions("does not exist"));
    CHECK_RC(minishard_request(l.nodes[0], 0, NULL, 3, timeout(), &reply),
             MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_request(l.nodes[0], 0, (const uint8_t *)"x", 1, timeout(), NULL),
             MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_request(NULL, 0, (const uint8_t *)"x", 1, timeout(), &reply),
             MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_request_async(l.nodes[0], 0, (const uint8_t *)"x", 1, timeout(), NULL,
                                     NULL),
             MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_respond(NULL, NULL, 0), MINISHARD_INVALID_ARGUMENT);
    minishard_responder_free(NULL);
    minishard_reply_free(NULL);
    CHECK(minishard_reply_node(NULL) == NULL);
    /* A payload of 64 KiB is fine; the frame limit is 1 MiB. */
    memset(big, 'b', sizeof big);
    CHECK_RC(minishard_request(l.nodes[0], 0, big, sizeof big, timeout(), &reply), MINISHARD_OK);
    minishard_reply_free(reply);
    local_stop(&l);
}

static void too_many_requests_in_flight_is_overloaded(void) {
    local l;
    completion held_one;
    minishard_reply *reply = NULL;
    REQUIRE(local_prepare(&l, "c-req-cap", 2, 1, MINISHARD_DISPATCH_THREAD));
    l.handle_request = echo_handler;
    l.max_requests_in_flight = 1;
    REQUIRE(local_join(&l, 0) && local_join(&l, 1));
    REQUIRE(local_converged(&l, 1, 10000.0 * (double)time_scale()));
    memset(&held_one, 0, sizeof held_one);
    pthread_mutex_init(&held_one.lock, NULL);
    REQUIRE_OK(minishard_request_async(l.nodes[0], 0, (const uint8_t *)"later", 5, timeout(),
                                       on_done, &held_one));
    minishard_responder *r = wait_held((double)timeout());
    REQUIRE(r != NULL);
    CHECK_RC(minishard_request(l.nodes[0], 0, (const uint8_t *)"x", 1, timeout(), &reply),
             MINISHARD_OVERLOADED);
    CHECK_RC(minishard_respond_error(r, NULL), MINISHARD_OK);
    CHECK(wait_done(&held_one, (double)timeout()) == 1);
    CHECK(held_one.result == MINISHARD_HANDLER_FAILED);
    local_stop(&l);
    pthread_mutex_destroy(&held_one.lock);
}

static void metadata_is_set_in_the_config_and_read_on_every_node(void) {
    local l;
    char value[64];
    size_t written = 0;
    minishard_config *cfg = minishard_config_new();
    REQUIRE(cfg != NULL);
    CHECK_RC(minishard_config_set_metadata(cfg, "", "x"), MINISHARD_CONFIG);
    CHECK_RC(minishard_config_set_metadata(cfg, NULL, "x"), MINISHARD_INVALID_ARGUMENT);
    CHECK_RC(minishard_config_set_metadata(cfg, "k", "v"), MINISHARD_OK);
    CHECK_RC(minishard_config_set_metadata(cfg, "k", NULL), MINISHARD_OK);
    CHECK_RC(minishard_config_set_max_requests_per_peer(cfg, 0), MINISHARD_CONFIG);
    minishard_config_free(cfg);

    REQUIRE(start(&l, "c-req-meta", 2, 1));
    for (size_t viewer = 0; viewer < 2; viewer++) {
        for (size_t node = 0; node < 2; node++) {
            char expected[32];
            double deadline = now_ms() + 5000.0 * (double)time_scale();
            minishard_result rc;
            snprintf(expected, sizeof expected, "node-%zu", node);
            do {
                rc = minishard_node_metadata(l.nodes[viewer], l.addrs[node], "http", value,
                                             sizeof value, &written);
                if (rc != MINISHARD_OK) pause_ms(5);
            } while (rc != MINISHARD_OK && now_ms() < deadline);
            CHECK_RC(rc, MINISHARD_OK);
            CHECK(strcmp(value, expected) == 0);
        }
    }
    CHECK_RC(minishard_node_metadata(l.nodes[0], l.addrs[1], "nope", value, sizeof value,
                                     &written),
             MINISHARD_NOT_FOUND);
    CHECK_RC(minishard_node_metadata(l.nodes[0], "bad address", "http", value, sizeof value,
                                     &written),
             MINISHARD_INVALID_ARGUMENT);
    local_stop(&l);
}

/* ---- hand-off ------------------------------------------------------------ */

/* What the last allocated_with_hand_off received: from whom, and the bytes
 * (or "(none)"). */
static pthread_mutex_t received_lock = PTHREAD_MUTEX_INITIALIZER;
static char received_from[MINISHARD_ADDRESS_MAX];
static char received[64];
static int received_count;

static minishard_result handoff_allocated(void *user_data, const char *cluster, uint32_t shard,
                                          uint64_t epoch, const minishard_hand_off *hand_off,
                                          void **state) {
    pthread_mutex_lock(&received_lock);
    if (hand_off != NULL) {
        snprintf(received_from, sizeof received_from, "%s", hand_off->from);
        snprintf(received, sizeof received, "%.*s", (int)hand_off->len,
                 (const char *)hand_off->data);
    } else {
        received_from[0] = 0;
        snprintf(received, sizeof received, "(none)");
    }
    received_count++;
    pthread_mutex_unlock(&received_lock);
    return app_allocated(user_data, cluster, shard, epoch, state);
}

/* Hands off "data of shard <n>", written in two pieces. */
static void handoff_deallocated(void *user_data, const char *winner,
                                minishard_release_reason reason, void *state,
                                minishard_hand_off_writer *hand_off) {
    char data[32];
    int n = snprintf(data, sizeof data, "data of shard %u", ((shard_state *)state)->shard);
    minishard_hand_off_write(hand_off, (const uint8_t *)data, 5);
    minishard_hand_off_write(hand_off, (const uint8_t *)data + 5, (size_t)n - 5);
    CHECK(minishard_hand_off_write(NULL, (const uint8_t *)data, 1) ==
          MINISHARD_INVALID_ARGUMENT);
    app_deallocated(user_data, winner, reason, state);
}

static void a_leaving_owner_hands_its_data_to_the_next_owner(void) {
    local l;
    int owner, next = 0;
    size_t i;
    double deadline;
    char leaver[64];
    REQUIRE(local_prepare(&l, "c-hand-off", 3, 2, MINISHARD_DISPATCH_THREAD));
    l.allocated_with_hand_off = handoff_allocated;
    l.deallocated_with_hand_off = handoff_deallocated;
    for (i = 0; i < 3; i++) REQUIRE(local_join(&l, i));
    REQUIRE(local_converged(&l, 2, 10000.0 * (double)time_scale()));
    owner = local_owner(&l, 0, 0);
    REQUIRE(owner >= 0);
    snprintf(leaver, sizeof leaver, "%s", l.addrs[owner]);
    pthread_mutex_lock(&received_lock);
    received_count = 0;
    pthread_mutex_unlock(&received_lock);
    CHECK(minishard_leave(l.nodes[owner]) == MINISHARD_OK);
    /* The next owner's allocated_with_hand_off has run once it says so. */
    deadline = now_ms() + 10000.0 * (double)time_scale();
    while (now_ms() < deadline) {
        pthread_mutex_lock(&received_lock);
        next = received_count;
        pthread_mutex_unlock(&received_lock);
        if (next > 0) break;
        pause_ms(5);
    }
    pthread_mutex_lock(&received_lock);
    CHECK(received_count == 1);
    CHECK(strcmp(received_from, leaver) == 0);
    CHECK(strcmp(received, "data of shard 0") == 0);
    if (strcmp(received, "data of shard 0") != 0) {
        fprintf(stderr, "  received \"%s\" from \"%s\"\n", received, received_from);
    }
    pthread_mutex_unlock(&received_lock);
    local_stop(&l);
}

int main(void) {
    RUN(every_node_reaches_every_owner_and_owns_the_reply);
    RUN(async_requests_complete_once_even_when_answered_from_another_thread);
    RUN(handler_errors_and_bad_arguments_have_their_codes);
    RUN(too_many_requests_in_flight_is_overloaded);
    RUN(metadata_is_set_in_the_config_and_read_on_every_node);
    RUN(a_leaving_owner_hands_its_data_to_the_next_owner);
    return finish("requests");
}
