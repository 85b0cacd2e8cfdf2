// The C++ example: three nodes of one cluster keeping two shards, all in
// this process (a real service runs one node per process, with the member
// list from its configuration). Build:
//   g++ -std=c++17 example.cpp $(pkg-config --cflags --libs minishard)
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "minishard.hpp"

using namespace std::chrono_literals;

// One shard's worth of sessions, kept by whichever node owns the shard.
class Sessions : public minishard::Handler {
public:
    explicit Sessions(std::vector<std::string> members) : members_(std::move(members)) {}

    std::vector<std::string> nodes(const std::string &) override { return members_; }
    std::int64_t shard_count(const std::string &) override { return 2; }

    void allocated(const std::string &cluster, std::uint32_t shard, std::uint64_t epoch) override {
        std::lock_guard<std::mutex> lock(mutex_);
        shard_ = static_cast<int>(shard);
        std::printf("[%s] now owns shard %u (epoch %llu)\n", cluster.c_str(), shard,
                    static_cast<unsigned long long>(epoch));
    }
    std::int64_t score() override { return 0; }
    void deallocated(const std::optional<std::string> &winner) override {
        std::lock_guard<std::mutex> lock(mutex_);
        std::printf("gave shard %d up to %s\n", shard_, winner ? winner->c_str() : "no one");
        shard_ = -1;
    }

private:
    std::vector<std::string> members_;
    std::mutex mutex_;
    int shard_ = -1;
};

int main(int argc, char **argv) {
    // Three loopback addresses; pass others as arguments if these are taken.
    std::vector<std::string> members = {"127.0.0.1:27101", "127.0.0.1:27102", "127.0.0.1:27103"};
    if (argc == 4) members = {argv[1], argv[2], argv[3]};
    try {
        std::vector<minishard::Cluster> nodes;
        for (const std::string &address : members) {
            minishard::Config config;
            config.listen(address).cookie("example-secret");
            nodes.push_back(minishard::Cluster::join("sessions", config,
                                                     std::make_shared<Sessions>(members)));
        }
        for (const minishard::Cluster &node : nodes) {
            node.wait_until(minishard::Health::Available, 10s);
        }
        for (std::uint32_t shard = 0; shard < 2; shard++) {
            std::cout << "shard " << shard << " lives on " << nodes[0].get_node(shard).value_or("?")
                      << "\n";
        }
        nodes[0].leave();  // the others leave when `nodes` goes
    } catch (const minishard::Error &e) {
        std::cerr << "minishard: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
