// One member of a minishard cluster, in C++. Run one per member, each with
// its own address first, then the others:
//   ./node-cpp 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003
// It keeps one shard fewer than it has members (one node on standby), and
// runs until Ctrl-C (or for --seconds N once available), then leaves.
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>
#include "minishard.hpp"
using namespace std::chrono_literals;

static volatile std::sig_atomic_t stop = 0;

struct Sessions : minishard::Handler {
    std::vector<std::string> members;
    explicit Sessions(std::vector<std::string> list) : members(std::move(list)) {}
    std::vector<std::string> nodes(const std::string &) override { return members; }
    std::int64_t shard_count(const std::string &) override {
        return members.size() > 1 ? static_cast<std::int64_t>(members.size()) - 1 : 1;
    }
    void allocated(const std::string &, std::uint32_t shard, std::uint64_t epoch) override {
        std::cout << "owning shard " << shard << " at epoch " << epoch << std::endl;
    }
    std::int64_t score() override { return 0; }
    void deallocated(const std::optional<std::string> &winner,
                     minishard::ReleaseReason reason) override {
        std::cout << "gave it up to " << winner.value_or("no one") << " ("
                  << minishard::to_string(reason) << ")" << std::endl;
    }
};

int main(int argc, char **argv) try {
    double seconds = -1;
    int first = 1;
    if (argc > 2 && std::strcmp(argv[1], "--seconds") == 0) { seconds = std::atof(argv[2]); first = 3; }
    if (argc <= first) {
        std::cerr << "usage: " << argv[0] << " [--seconds N] THIS_ADDRESS [OTHER_MEMBER ...]\n";
        return 2;
    }
    std::vector<std::string> members(argv + first, argv + argc);
    std::signal(SIGINT, [](int) { stop = 1; });
    std::signal(SIGTERM, [](int) { stop = 1; });

    minishard::Config config;
    config.listen(members[0]).cookie("change me");
    auto cluster = minishard::Cluster::join("sessions", config, std::make_shared<Sessions>(members));
    cluster.wait_until(minishard::Health::Available, 30s);
    std::cout << "shard 0 lives on " << cluster.get_node(0).value_or("nobody") << std::endl;
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (!stop && (seconds < 0 || std::chrono::steady_clock::now() < until)) {
        std::this_thread::sleep_for(100ms);
    }
    cluster.leave();   // also when `cluster` goes out of scope
    std::cout << "left" << std::endl;
} catch (const minishard::Error &e) {
    std::cerr << e.what() << "\n";   // e.code() is the minishard_result
    return 1;
}
