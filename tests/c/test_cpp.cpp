// The C++ wrapper: RAII (the handler is released exactly when the Cluster
// goes), errors as exceptions with their code, exceptions thrown by
// callbacks contained, lookups as optionals (owners with their epoch, the
// shard count), a cluster's own log sink, move semantics.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "minishard.hpp"

using namespace std::chrono_literals;
using minishard::Health;

static int failures;
static int passed, failed;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            std::fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            failures++;                                                               \
        }                                                                             \
    } while (0)

static std::chrono::milliseconds scaled(std::chrono::milliseconds ms) {
    const char *scale = std::getenv("TIME_SCALE");
    long k = scale ? std::strtol(scale, nullptr, 10) : 1;
    return ms * (k >= 1 ? k : 1);
}

static std::vector<std::string> free_addresses(size_t n) {
    std::vector<int> fds;
    std::vector<std::string> out;
    for (size_t i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in sa{};
        socklen_t len = sizeof sa;
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa);
        getsockname(fd, reinterpret_cast<sockaddr *>(&sa), &len);
        out.push_back("127.0.0.1:" + std::to_string(ntohs(sa.sin_port)));
        fds.push_back(fd);
    }
    for (int fd : fds) close(fd);
    return out;
}

static minishard::Config fast(const std::string &listen) {
    minishard::Config config;
    config.listen(listen)
        .cookie("cpp-cookie")
        .heartbeat_interval(scaled(50ms))
        .heartbeat_timeout(scaled(250ms))
        .transition_timeout(scaled(500ms))
        .node_grace(scaled(750ms))
        .settle(scaled(10ms))
        .score_deadline(scaled(500ms))
        .allocation_retry(scaled(300ms));
    return config;
}

class Recorder : public minishard::Handler {
public:
    Recorder(std::vector<std::string> members, std::int64_t shards)
        : members_(std::move(members)), shards_(shards) {}

    std::vector<std::string> nodes(const std::string &) override {
        if (throw_in_nodes) throw std::runtime_error("no member list today");
        return members_;
    }
    std::int64_t shard_count(const std::string &) override { return shards_; }
    void allocated(const std::string &, std::uint32_t shard, std::uint64_t) override {
        if (refuse_allocations.load()) {
            refused++;
            throw std::runtime_error("not now");
        }
        std::lock_guard<std::mutex> lock(mutex);
        owned = static_cast<int>(shard);
        allocations++;
    }
    std::int64_t score() override { return 0; }
    void deallocated(const std::optional<std::string> &winner,
                     minishard::ReleaseReason reason) override {
        std::lock_guard<std::mutex> lock(mutex);
        owned = -1;
        deallocations++;
        last_reason = reason;
        if (winner.has_value() != (reason == minishard::ReleaseReason::LostConflict)) {
            mismatched_winners++;
        }
    }

    bool throw_in_nodes = false;
    std::atomic<bool> refuse_allocations{false};
    std::atomic<int> refused{0};
    std::mutex mutex;
    int owned = -1, allocations = 0, deallocations = 0, mismatched_winners = 0;
    minishard::ReleaseReason last_reason = minishard::ReleaseReason::LostConflict;

private:
    std::vector<std::string> members_;
    std::int64_t shards_;
};

/// Runs one test, unless TEST_FILTER is set and not part of its name (as
/// the C tests' harness.h does).
static void run(const char *name, void (*test)()) {
    const char *filter = std::getenv("TEST_FILTER");
    if (filter != nullptr && std::strstr(name, filter) == nullptr) return;
    failures = 0;
    try {
        test();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "  unexpected exception: %s\n", e.what());
        failures++;
    }
    if (failures == 0) {
        passed++;
        std::printf("ok   %s\n", name);
    } else {
        failed++;
        std::printf("FAIL %s\n", name);
    }
    std::fflush(stdout);
}

static void errors_are_exceptions_with_their_code() {
    try {
        minishard::Config config;
        config.listen("nowhere");
        CHECK(false);
    } catch (const minishard::Error &e) {
        CHECK(e.code() == MINISHARD_CONFIG);
        CHECK(std::strstr(e.what(), "MINISHARD_CONFIG: configuration error: invalid listen address") != nullptr);
    }
    {
        minishard::Config config;
        config.quorum(minishard::Quorum::Majority).quorum(minishard::Quorum::Any);
        try {
            config.quorum(static_cast<minishard::Quorum>(5));
            CHECK(false);
        } catch (const minishard::Error &e) {
            CHECK(e.code() == MINISHARD_INVALID_ARGUMENT);
            CHECK(std::strstr(e.what(), "quorum must be MINISHARD_QUORUM_ANY or MINISHARD_QUORUM_MAJORITY, not 5") != nullptr);
        }
    }
    auto addrs = free_addresses(1);
    auto zero = std::make_shared<Recorder>(addrs, 0);
    try {
        minishard::Cluster::join("zero", fast(addrs[0]), zero);
        CHECK(false);
    } catch (const minishard::Error &e) {
        CHECK(e.code() == MINISHARD_CONFIG);
        CHECK(std::strstr(e.what(), "shard_count returned 0") != nullptr);
    }
    CHECK(zero.use_count() == 1);  // the failed join released its reference
    // An exception thrown by nodes() at join comes back out of join.
    auto throwing = std::make_shared<Recorder>(addrs, 1);
    throwing->throw_in_nodes = true;
    try {
        minishard::Cluster::join("throwing", fast(addrs[0]), throwing);
        CHECK(false);
    } catch (const std::runtime_error &e) {
        CHECK(std::string(e.what()) == "no member list today");
    }
    CHECK(throwing.use_count() == 1);
}

static void a_cluster_releases_its_handler_when_it_goes() {
    auto addrs = free_addresses(1);
    auto handler = std::make_shared<Recorder>(addrs, 1);
    {
        auto cluster = minishard::Cluster::join("raii", fast(addrs[0]), handler);
        CHECK(handler.use_count() == 2);
        cluster.wait_until(Health::Available, scaled(10s));
        CHECK(cluster.health() == Health::Available);
        CHECK(cluster.get_node(0) == addrs[0]);
        CHECK(cluster.node_id() == addrs[0]);
        auto mine = cluster.my_shard();
        CHECK(mine && mine->first == 0 && mine->second > 0);
        CHECK(cluster.shard_count() == 1);
        auto owner = cluster.get_owner(0);
        CHECK(owner && owner->node == addrs[0] && mine && owner->epoch == mine->second);
        try {
            cluster.get_owner(1);
            CHECK(false);
        } catch (const minishard::Error &e) {
            CHECK(e.code() == MINISHARD_INVALID_ARGUMENT);
        }
        CHECK(cluster.status_json().find("\"shard_count\":1") != std::string::npos);
        CHECK(cluster.stats().allocations == 1);
        try {
            cluster.get_node(5);
            CHECK(false);
        } catch (const minishard::Error &e) {
            CHECK(e.code() == MINISHARD_INVALID_ARGUMENT);
        }
        try {
            cluster.wait_until(Health::Degraded, 20ms);
            CHECK(false);
        } catch (const minishard::Error &e) {
            CHECK(e.code() == MINISHARD_TIMEOUT);
        }
        try {
            cluster.dispatch();
            CHECK(false);
        } catch (const minishard::Error &e) {
            CHECK(e.code() == MINISHARD_INVALID_ARGUMENT);
        }
        // Moving hands the membership over; the moved-from object is inert.
        minishard::Cluster moved = std::move(cluster);
        CHECK(moved.get() != nullptr && cluster.get() == nullptr);
        CHECK(moved.get_node(0) == addrs[0]);
    }
    CHECK(handler.use_count() == 1);
    CHECK(handler->deallocations == 1);  // leaving on destruction
    CHECK(handler->last_reason == minishard::ReleaseReason::Shutdown);
    CHECK(std::string(minishard::to_string(handler->last_reason)) == "shutdown");
    CHECK(handler->mismatched_winners == 0);
}

static void a_throwing_allocated_fails_that_callback_only() {
    auto addrs = free_addresses(2);
    auto refusing = std::make_shared<Recorder>(addrs, 1);
    auto willing = std::make_shared<Recorder>(addrs, 1);
    refusing->refuse_allocations = true;
    auto a = minishard::Cluster::join("refuse", fast(addrs[0]), refusing);
    // Alone, it is enough members for one shard: it is asked, and refuses.
    auto deadline = std::chrono::steady_clock::now() + scaled(10s);
    while (refusing->refused == 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
    }
    auto b = minishard::Cluster::join("refuse", fast(addrs[1]), willing);
    b.wait_until(Health::Available, scaled(10s));
    a.wait_until(Health::Available, scaled(10s));
    CHECK(b.get_node(0) == addrs[1]);
    CHECK(a.get_node(0) == addrs[1]);
    CHECK(refusing->refused >= 1);
    CHECK(refusing->allocations == 0);
    CHECK(willing->allocations == 1);
    CHECK(a.stats().failed_callbacks == static_cast<std::uint64_t>(refusing->refused.load()));
}

static void without_enough_members_no_shard_has_an_owner() {
    // Two members keep two shards; only one runs: it stays degraded.
    auto addrs = free_addresses(2);
    auto handler = std::make_shared<Recorder>(addrs, 2);
    auto cluster = minishard::Cluster::join("alone", fast(addrs[0]), handler);
    CHECK(cluster.shard_count() == 2);
    CHECK(cluster.health() == Health::Degraded);
    CHECK(!cluster.get_owner(0) && !cluster.get_owner(1));
}

/// What a log sink heard, from any thread.
struct Heard {
    std::mutex mutex;
    std::vector<std::pair<minishard::LogLevel, std::string>> lines;
    bool contains(const std::string &a, const std::string &b) {
        std::lock_guard<std::mutex> lock(mutex);
        for (auto &line : lines) {
            if (line.second.find(a) != std::string::npos && line.second.find(b) != std::string::npos) {
                return true;
            }
        }
        return false;
    }
};

static void a_clusters_own_log_sink_hears_its_lines_only() {
    auto addrs = free_addresses(2);
    auto heard = std::make_shared<Heard>();
    std::atomic<int> calls{0};
    minishard::LogSink sink;
    sink.max_level = minishard::LogLevel::Info;
    sink.write = [heard, &calls](minishard::LogLevel level, std::string_view, std::string_view message) {
        {
            std::lock_guard<std::mutex> lock(heard->mutex);
            heard->lines.emplace_back(level, std::string(message));
        }
        if (calls++ == 0) throw std::runtime_error("a sink that throws once");
    };
    auto refusing = std::make_shared<Recorder>(addrs, 1);
    refusing->refuse_allocations = true;
    auto willing = std::make_shared<Recorder>(addrs, 1);
    {
        auto a = minishard::Cluster::join("own-log", fast(addrs[0]), refusing, sink);
        // Alone, it is members enough for the one shard: it is asked, and refuses.
        auto deadline = std::chrono::steady_clock::now() + scaled(10s);
        while (refusing->refused == 0 && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(1ms);
        }
        auto b = minishard::Cluster::join("own-log", fast(addrs[1]), willing);
        a.wait_until(Health::Available, scaled(10s));
        b.wait_until(Health::Available, scaled(10s));
    }
    // Its join and its failed allocated, with its name on them...
    CHECK(heard->contains("joined", "node=" + addrs[0]));
    CHECK(heard->contains("callback failed", "callback=\"allocated\""));  // only it refuses
    // ...nothing of the other node's own lines, nothing past its level, and
    // the first line's exception stayed in the wrapper.
    CHECK(!heard->contains("joined", "node=" + addrs[1]));
    std::lock_guard<std::mutex> lock(heard->mutex);
    for (auto &line : heard->lines) CHECK(line.first <= minishard::LogLevel::Info);
    CHECK(calls == static_cast<int>(heard->lines.size()) && calls >= 2);
    if (failures) {
        for (auto &line : heard->lines) std::fprintf(stderr, "    heard: %s\n", line.second.c_str());
    }
}

static void host_dispatch_runs_handlers_on_the_dispatching_thread() {
    auto addrs = free_addresses(1);
    auto handler = std::make_shared<Recorder>(addrs, 1);
    auto config = fast(addrs[0]);
    config.dispatch(minishard::Dispatch::Host);
    auto cluster = minishard::Cluster::join("host", config, handler);
    CHECK(cluster.event_fd() >= 0);
    auto deadline = std::chrono::steady_clock::now() + scaled(10s);
    while (cluster.health() != Health::Available && std::chrono::steady_clock::now() < deadline) {
        if (cluster.dispatch() == 0) std::this_thread::sleep_for(1ms);
    }
    CHECK(cluster.health() == Health::Available);
    CHECK(handler->allocations == 1);
}

/// Echoes "<shard> <epoch> <payload>"; keeps the responder of "later".
class Echo : public Recorder {
public:
    using Recorder::Recorder;
    void handle_request(const std::vector<std::uint8_t> &payload,
                        minishard::Responder &responder) override {
        std::string text(payload.begin(), payload.end());
        if (text == "later") {
            std::lock_guard<std::mutex> lock(mutex);
            kept.emplace_back(std::move(responder));
            return;
        }
        if (text == "throw") throw std::runtime_error("thrown by the handler");
        std::lock_guard<std::mutex> lock(mutex);
        responder.respond(std::to_string(owned) + " " + std::to_string(responder.epoch()) + " " +
                          text);
    }
    std::vector<minishard::Responder> kept;
};

static void requests_reach_the_owner_with_futures_and_later_answers() {
    auto addrs = free_addresses(2);
    auto a_handler = std::make_shared<Echo>(addrs, 1);
    auto b_handler = std::make_shared<Echo>(addrs, 1);
    auto a = minishard::Cluster::join("cpp-req", fast(addrs[0]).metadata("http", "a:80"), a_handler);
    auto b = minishard::Cluster::join("cpp-req", fast(addrs[1]).metadata("http", "b:80"), b_handler);
    a.wait_until(Health::Available, scaled(10s));
    b.wait_until(Health::Available, scaled(10s));
    auto owner = a.get_node(0);
    CHECK(owner.has_value());
    bool a_owns = owner == addrs[0];
    auto &asker = a_owns ? b : a;
    auto &owner_handler = a_owns ? *a_handler : *b_handler;
    auto reply = asker.request(0, "hello", scaled(5s));
    CHECK(reply.node == *owner);
    CHECK(reply.text() == "0 " + std::to_string(reply.epoch) + " hello");
    auto later = asker.request_async(0, "later", scaled(5s));
    auto deadline = std::chrono::steady_clock::now() + scaled(5s);
    for (;;) {
        {
            std::lock_guard<std::mutex> lock(owner_handler.mutex);
            if (!owner_handler.kept.empty()) break;
        }
        if (std::chrono::steady_clock::now() > deadline) break;
        std::this_thread::sleep_for(1ms);
    }
    std::thread answerer([&] {
        std::lock_guard<std::mutex> lock(owner_handler.mutex);
        for (auto &r : owner_handler.kept) r.respond(std::string("from a thread"));
        owner_handler.kept.clear();
    });
    answerer.join();
    CHECK(later.wait_for(scaled(5s)) == std::future_status::ready);
    CHECK(later.get().text() == "from a thread");
    try {
        asker.request(0, "throw", scaled(5s));
        CHECK(false);
    } catch (const minishard::Error &e) {
        CHECK(e.code() == MINISHARD_HANDLER_FAILED);
        CHECK(std::string(e.what()).find("thrown by the handler") != std::string::npos);
    }
    auto failing = asker.request_async(7, "x", scaled(5s));
    try {
        failing.get();
        CHECK(false);
    } catch (const minishard::Error &e) {
        CHECK(e.code() == MINISHARD_INVALID_ARGUMENT);
    }
    deadline = std::chrono::steady_clock::now() + scaled(5s);
    while (a.node_metadata(addrs[1], "http") != std::optional<std::string>("b:80") &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
    }
    CHECK(a.node_metadata(addrs[1], "http") == std::optional<std::string>("b:80"));
    CHECK(!a.node_metadata(addrs[1], "nope").has_value());
}

/// Hands "data of <its address>" off when it gives its shard up, and keeps
/// what it was handed.
class Keeper : public Recorder {
public:
    Keeper(std::vector<std::string> members, std::int64_t shards, std::string me)
        : Recorder(std::move(members), shards), me_(std::move(me)) {}
    void allocated_with_hand_off(const std::string &cluster, std::uint32_t shard,
                                 std::uint64_t epoch,
                                 const std::optional<minishard::HandOff> &hand_off) override {
        {
            std::lock_guard<std::mutex> lock(mutex);
            if (hand_off) received = *hand_off;
        }
        allocated(cluster, shard, epoch);
    }
    std::optional<std::vector<std::uint8_t>> deallocated_with_hand_off(
        const std::optional<std::string> &winner, minishard::ReleaseReason reason) override {
        deallocated(winner, reason);
        std::string data = "data of " + me_;
        return std::vector<std::uint8_t>(data.begin(), data.end());
    }
    std::optional<minishard::HandOff> received;

private:
    std::string me_;
};

static void a_leaving_owner_hands_its_data_to_the_next_owner() {
    auto addrs = free_addresses(3);
    std::vector<std::shared_ptr<Keeper>> handlers;
    std::vector<minishard::Cluster> nodes;
    for (const auto &addr : addrs) {
        handlers.push_back(std::make_shared<Keeper>(addrs, 2, addr));
        nodes.push_back(minishard::Cluster::join("cpp-hand-off", fast(addr), handlers.back()));
    }
    for (auto &node : nodes) node.wait_until(Health::Available, scaled(10s));
    auto deadline = std::chrono::steady_clock::now() + scaled(10s);
    while ((!nodes[0].get_node(0) || !nodes[0].get_node(1)) &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
    }
    auto owner = nodes[0].get_node(0);
    CHECK(owner.has_value());
    if (!owner) return;
    std::size_t leaver = 0;
    while (addrs[leaver] != *owner) leaver++;
    nodes[leaver].leave();
    std::optional<minishard::HandOff> got;
    while (!got && std::chrono::steady_clock::now() < deadline + scaled(10s)) {
        for (std::size_t i = 0; i < handlers.size(); i++) {
            std::lock_guard<std::mutex> lock(handlers[i]->mutex);
            if (i != leaver && handlers[i]->received) got = handlers[i]->received;
        }
        std::this_thread::sleep_for(1ms);
    }
    CHECK(got.has_value());
    if (!got) return;
    CHECK(got->from == *owner);
    CHECK(std::string(got->data.begin(), got->data.end()) == "data of " + *owner);
}

static void a_blocking_request_to_its_own_shard_runs_the_handler_in_host_dispatch() {
    auto addrs = free_addresses(1);
    auto handler = std::make_shared<Echo>(addrs, 1);
    auto config = fast(addrs[0]);
    config.dispatch(minishard::Dispatch::Host);
    auto cluster = minishard::Cluster::join("cpp-host-req", config, handler);
    auto deadline = std::chrono::steady_clock::now() + scaled(10s);
    while (cluster.health() != Health::Available && std::chrono::steady_clock::now() < deadline) {
        if (cluster.dispatch() == 0) std::this_thread::sleep_for(1ms);
    }
    // Only this thread dispatches: the request runs the handler itself.
    auto reply = cluster.request(0, "mine", scaled(5s));
    CHECK(reply.text().find("mine") != std::string::npos);
    CHECK(reply.node == addrs[0]);
}

int main() {
    run("errors_are_exceptions_with_their_code", errors_are_exceptions_with_their_code);
    run("a_cluster_releases_its_handler_when_it_goes", a_cluster_releases_its_handler_when_it_goes);
    run("a_throwing_allocated_fails_that_callback_only", a_throwing_allocated_fails_that_callback_only);
    run("without_enough_members_no_shard_has_an_owner", without_enough_members_no_shard_has_an_owner);
    run("a_clusters_own_log_sink_hears_its_lines_only", a_clusters_own_log_sink_hears_its_lines_only);
    run("host_dispatch_runs_handlers_on_the_dispatching_thread",
        host_dispatch_runs_handlers_on_the_dispatching_thread);
    run("requests_reach_the_owner_with_futures_and_later_answers",
        requests_reach_the_owner_with_futures_and_later_answers);
    run("a_blocking_request_to_its_own_shard_runs_the_handler_in_host_dispatch",
        a_blocking_request_to_its_own_shard_runs_the_handler_in_host_dispatch);
    run("a_leaving_owner_hands_its_data_to_the_next_owner",
        a_leaving_owner_hands_its_data_to_the_next_owner);
    std::printf("c++-wrapper: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
