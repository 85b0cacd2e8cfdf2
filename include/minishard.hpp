/*
 * minishard.hpp: a small header-only C++17 wrapper over the C ABI in
 * minishard.h (link with -lminishard, or pkg-config minishard).
 *
 *   - minishard::Config and minishard::Cluster own their C handles and free
 *     them in their destructors (a Cluster leaves the cluster when it goes).
 *   - Callbacks are the virtual methods of a minishard::Handler. A node holds
 *     at most one shard at a time, so the handler keeps the state of its
 *     current shard itself, between allocated() and deallocated().
 *   - Requests (docs/design.md 11): Cluster::request / request_async (a
 *     std::future) send bytes to a shard's owner, whose
 *     Handler::handle_request answers through a minishard::Responder, at
 *     once or later from any thread.
 *   - Errors are minishard::Error exceptions carrying the minishard_result
 *     and the library's message. An exception thrown by a callback never
 *     crosses into the library: it makes that callback fail (docs/design.md
 *     section 3), and one thrown by nodes() or shard_count() during
 *     Cluster::join is rethrown from join.
 *
 * Threads: as in minishard.h. Cluster's const methods may be called from any
 * thread concurrently; handler methods run one at a time on the cluster's
 * callback thread (Dispatch::Thread) or inside Cluster::dispatch
 * (Dispatch::Host). A cluster's own log sink (Cluster::join's `log`) is the
 * exception: it runs on whichever thread logs, possibly on several at once.
 */
#ifndef MINISHARD_HPP
#define MINISHARD_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "minishard.h"

namespace minishard {

/// A failed call: the result code and the library's message.
class Error : public std::runtime_error {
public:
    Error(minishard_result code, const std::string &message)
        : std::runtime_error(std::string(minishard_result_name(code)) + ": " + message),
          code_(code) {}

    /// The minishard_result the C call returned.
    minishard_result code() const noexcept { return code_; }

private:
    minishard_result code_;
};

namespace detail {

/// The calling thread's last error message.
inline std::string last_error() {
    std::string message(256, '\0');
    std::size_t needed = minishard_last_error(&message[0], message.size());
    if (needed > message.size()) {
        message.assign(needed, '\0');
        needed = minishard_last_error(&message[0], message.size());
    }
    message.resize(needed > 0 ? needed - 1 : 0);
    return message;
}

/// Throws an Error unless `rc` is MINISHARD_OK.
inline void check(minishard_result rc) {
    if (rc != MINISHARD_OK) throw Error(rc, last_error());
}

/// Calls `fill(buf, len, &written)` with a growing buffer; returns the string,
/// or nullopt on MINISHARD_NOT_FOUND.
template <typename Fill>
std::optional<std::string> read_string(Fill fill) {
    char stack[MINISHARD_ADDRESS_MAX];
    std::size_t written = 0;
    minishard_result rc = fill(stack, sizeof stack, &written);
    if (rc == MINISHARD_OK) return std::string(stack, written - 1);
    if (rc == MINISHARD_NOT_FOUND) return std::nullopt;
    if (rc != MINISHARD_BUFFER_TOO_SMALL) throw Error(rc, last_error());
    std::string heap(written, '\0');
    check(fill(&heap[0], heap.size(), &written));
    heap.resize(written - 1);
    return heap;
}

}  // namespace detail

/// The cluster's health as this node sees it.
enum class Health : std::uint32_t {
    Degraded = MINISHARD_HEALTH_DEGRADED,
    Transition = MINISHARD_HEALTH_TRANSITION,
    Available = MINISHARD_HEALTH_AVAILABLE,
};

/// How much a log line matters (a sink gets its level and every more
/// important one).
enum class LogLevel : std::uint32_t {
    Error = MINISHARD_LOG_ERROR,
    Warn = MINISHARD_LOG_WARN,
    Info = MINISHARD_LOG_INFO,
    Debug = MINISHARD_LOG_DEBUG,
    Trace = MINISHARD_LOG_TRACE,
};

/// One cluster's own log: its lines go here instead of to the process-wide
/// callback of minishard_set_log_callback. `target` is the engine module,
/// `message` the text and its key=value fields; both are valid only during
/// the call. It runs on whichever thread logs, possibly on several at once
/// and while a handler method runs: return quickly, do not block, and call
/// nothing of minishard that waits. An exception it throws is dropped.
struct LogSink {
    std::function<void(LogLevel level, std::string_view target, std::string_view message)> write;
    LogLevel max_level = LogLevel::Warn;
};

/// The owner of a shard and its allocation's epoch (compare the epoch a
/// write carries with it to fence out a stale owner).
struct Owner {
    std::string node;
    std::uint64_t epoch;
};

/// Where callbacks run.
enum class Dispatch : std::uint32_t {
    Thread = MINISHARD_DISPATCH_THREAD,  ///< on the cluster's callback thread
    Host = MINISHARD_DISPATCH_HOST,      ///< only inside Cluster::dispatch
};

/// Which members a node must see to hold shards.
enum class Quorum : std::uint32_t {
    Any = MINISHARD_QUORUM_ANY,            ///< shard_count of them (the default)
    Majority = MINISHARD_QUORUM_MAJORITY,  ///< and a strict majority of the list
};

/// Settings for one node in one cluster (owns a minishard_config).
class Config {
public:
    /// Defaults of docs/design.md section 10; set listen() and cookie().
    Config() : cfg_(minishard_config_new()) {
        if (!cfg_) throw Error(MINISHARD_PANIC, detail::last_error());
    }

    Config &listen(const std::string &host_port) {
        detail::check(minishard_config_set_listen(cfg_.get(), host_port.c_str()));
        return *this;
    }
    Config &advertise(const std::string &host_port) {
        detail::check(minishard_config_set_advertise(cfg_.get(), host_port.c_str()));
        return *this;
    }
    Config &cookie(std::string_view secret) {
        detail::check(minishard_config_set_cookie(
            cfg_.get(), reinterpret_cast<const std::uint8_t *>(secret.data()), secret.size()));
        return *this;
    }
    Config &observer(bool observer) {
        detail::check(minishard_config_set_observer(cfg_.get(), observer ? 1 : 0));
        return *this;
    }
    Config &dispatch(Dispatch mode) {
        detail::check(minishard_config_set_dispatch(
            cfg_.get(), static_cast<minishard_dispatch_mode>(mode)));
        return *this;
    }
    /// Quorum::Majority: at most one side of a split keeps shards, and no
    /// two nodes ever hold a shard at once (minishard_config_set_quorum).
    Config &quorum(Quorum quorum) {
        detail::check(minishard_config_set_quorum(
            cfg_.get(), static_cast<minishard_quorum>(quorum)));
        return *this;
    }
    Config &heartbeat_interval(std::chrono::milliseconds ms) {
        detail::check(minishard_config_set_heartbeat_interval_ms(cfg_.get(), count(ms)));
        return *this;
    }
    Config &heartbeat_timeout(std::chrono::milliseconds ms) {
        detail::check(minishard_config_set_heartbeat_timeout_ms(cfg_.get(), count(ms)));
        return *this;
    }
    Config &transition_timeout(std::chrono::milliseconds ms) {
        detail::check(minishard_config_set_transition_timeout_ms(cfg_.get(), count(ms)));
        return *this;
    }
    Config &node_grace(std::chrono::milliseconds ms) {
        detail::check(minishard_config_set_node_grace_ms(cfg_.get(), count(ms)));
        return *this;
    }
    Config &settle(std::chrono::milliseconds ms) {
        detail::check(minishard_config_set_settle_ms(cfg_.get(), count(ms)));
        return *this;
    }
    Config &score_deadline(std::chrono::milliseconds ms) {
        detail::check(minishard_config_set_score_deadline_ms(cfg_.get(), count(ms)));
        return *this;
    }
    Config &member_poll(std::chrono::milliseconds ms) {
        detail::check(minishard_config_set_member_poll_ms(cfg_.get(), count(ms)));
        return *this;
    }
    Config &allocation_retry(std::chrono::milliseconds ms) {
        detail::check(minishard_config_set_allocation_retry_ms(cfg_.get(), count(ms)));
        return *this;
    }
    Config &frame_limit(std::size_t bytes) {
        detail::check(minishard_config_set_frame_limit(cfg_.get(), bytes));
        return *this;
    }
    Config &handshake_timeout(std::chrono::milliseconds ms) {
        detail::check(minishard_config_set_handshake_timeout_ms(cfg_.get(), count(ms)));
        return *this;
    }
    Config &max_handshakes(std::size_t n) {
        detail::check(minishard_config_set_max_handshakes(cfg_.get(), n));
        return *this;
    }
    Config &max_handshakes_per_source(std::size_t n) {
        detail::check(minishard_config_set_max_handshakes_per_source(cfg_.get(), n));
        return *this;
    }
    Config &send_queue(std::size_t frames) {
        detail::check(minishard_config_set_send_queue(cfg_.get(), frames));
        return *this;
    }
    /// Publishes `key` = `value` with this node's record (see
    /// minishard_config_set_metadata).
    Config &metadata(const std::string &key, const std::string &value) {
        detail::check(minishard_config_set_metadata(cfg_.get(), key.c_str(), value.c_str()));
        return *this;
    }
    Config &max_requests_in_flight(std::size_t n) {
        detail::check(minishard_config_set_max_requests_in_flight(cfg_.get(), n));
        return *this;
    }
    Config &max_requests_per_peer(std::size_t n) {
        detail::check(minishard_config_set_max_requests_per_peer(cfg_.get(), n));
        return *this;
    }

    /// The C handle, still owned by this Config.
    const minishard_config *get() const noexcept { return cfg_.get(); }

private:
    static std::uint64_t count(std::chrono::milliseconds ms) {
        // A negative duration would wrap to a huge one; 0 is refused as such.
        return ms.count() > 0 ? static_cast<std::uint64_t>(ms.count()) : 0;
    }
    struct Free {
        void operator()(minishard_config *cfg) const noexcept { minishard_config_free(cfg); }
    };
    std::unique_ptr<minishard_config, Free> cfg_;
};

/// The owner's reply to a request.
struct Reply {
    std::vector<std::uint8_t> payload;  ///< the handler's bytes
    std::string node;                   ///< the node that answered
    std::uint64_t epoch = 0;            ///< its allocation's epoch then

    /// The payload as a string.
    std::string text() const { return std::string(payload.begin(), payload.end()); }

    /// Copies a C reply.
    static Reply from(const minishard_reply *reply) {
        std::size_t len = 0;
        const std::uint8_t *data = minishard_reply_data(reply, &len);
        Reply out;
        out.payload.assign(data, data + len);
        out.node = minishard_reply_node(reply);
        out.epoch = minishard_reply_epoch(reply);
        return out;
    }
};

/// Answers one request, exactly once: respond() or fail(), here or later
/// from any thread. Move-only; destroyed unanswered, it answers that the
/// handler failed.
class Responder {
public:
    explicit Responder(minishard_responder *raw) noexcept : raw_(raw) {}
    Responder(Responder &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    Responder &operator=(Responder &&other) noexcept {
        if (this != &other) {
            minishard_responder_free(raw_);
            raw_ = std::exchange(other.raw_, nullptr);
        }
        return *this;
    }
    Responder(const Responder &) = delete;
    Responder &operator=(const Responder &) = delete;
    ~Responder() { minishard_responder_free(raw_); }

    /// The epoch of the allocation the request runs in.
    std::uint64_t epoch() const noexcept { return minishard_responder_epoch(raw_); }

    /// Answers with these bytes.
    void respond(std::string_view bytes) {
        detail::check(minishard_respond(std::exchange(raw_, nullptr),
                                        reinterpret_cast<const std::uint8_t *>(bytes.data()),
                                        bytes.size()));
    }
    void respond(const std::vector<std::uint8_t> &bytes) {
        detail::check(minishard_respond(std::exchange(raw_, nullptr), bytes.data(), bytes.size()));
    }
    /// Answers that the handler failed, with `message`.
    void fail(const std::string &message) {
        detail::check(minishard_respond_error(std::exchange(raw_, nullptr), message.c_str()));
    }

private:
    minishard_responder *raw_;
};

/// Why this node's allocation ended (minishard_release_reason).
enum class ReleaseReason : std::uint32_t {
    /// It lost a conflict after a split healed; the winner keeps the shard.
    LostConflict = MINISHARD_RELEASE_LOST_CONFLICT,
    /// Cluster::leave.
    Left = MINISHARD_RELEASE_LEFT,
    /// The Cluster was destroyed without leaving first.
    Shutdown = MINISHARD_RELEASE_SHUTDOWN,
    /// Too few members were visible for transition_timeout.
    Degraded = MINISHARD_RELEASE_DEGRADED,
    /// This node is no longer in the member list.
    Removed = MINISHARD_RELEASE_REMOVED,
};

/// "lost_conflict", "left", "shutdown", "degraded" or "removed".
inline const char *to_string(ReleaseReason reason) {
    return minishard_release_reason_name(static_cast<std::uint32_t>(reason));
}

/// What the previous owner of a shard handed off (docs/design.md 11.8).
struct HandOff {
    std::string from;                ///< the node whose allocation ended
    std::uint64_t epoch = 0;         ///< that allocation's epoch
    std::vector<std::uint8_t> data;  ///< what its deallocated returned
};

/// The application's side of a cluster: override these. They run one at a
/// time (see the top of this file); an exception thrown from one makes that
/// callback fail.
class Handler {
public:
    virtual ~Handler() = default;

    /// The member list: every member's advertised "host:port".
    virtual std::vector<std::string> nodes(const std::string &cluster) = 0;
    /// How many shards the cluster keeps (1 .. number of members). At join.
    virtual std::int64_t shard_count(const std::string &cluster) = 0;
    /// This node now owns `shard`; `epoch` fences writes by stale owners.
    /// Throw to refuse it (the node backs off and stays on standby).
    virtual void allocated(const std::string &cluster, std::uint32_t shard,
                           std::uint64_t epoch) = 0;
    /// A conflict over this node's shard: higher wins. Throwing loses.
    virtual std::int64_t score() = 0;
    /// This node won a conflict against `loser` and keeps its shard;
    /// `epoch` is the allocation's epoch from now on, above the loser's (so
    /// a store fenced by epochs refuses the loser's writes).
    virtual void prolonged(const std::string &loser, std::uint64_t epoch) {
        (void)loser;
        (void)epoch;
    }
    /// This node no longer owns its shard, for `reason`: `winner` took it
    /// (ReleaseReason::LostConflict), or no one did (nullopt).
    virtual void deallocated(const std::optional<std::string> &winner, ReleaseReason reason) = 0;
    /// This node's view of the health changed.
    virtual void status_changed(const std::string &cluster, Health old_health, Health new_health) {
        (void)cluster;
        (void)old_health;
        (void)new_health;
    }
    /// A request for this node's shard, inside its allocation: answer
    /// through `responder`, or move it out to answer later from any thread.
    /// Left unanswered here, it answers that the handler failed (with the
    /// exception's message if one is thrown). The default answers that
    /// there is no handler.
    virtual void handle_request(const std::vector<std::uint8_t> &payload, Responder &responder) {
        (void)payload;
        responder.fail("this node has no request handler");
    }
    /// allocated(), with what the shard's previous owner handed off
    /// (nullopt: nothing, or lost). The default calls allocated().
    virtual void allocated_with_hand_off(const std::string &cluster, std::uint32_t shard,
                                         std::uint64_t epoch,
                                         const std::optional<HandOff> &hand_off) {
        (void)hand_off;
        allocated(cluster, shard, epoch);
    }
    /// Whether prolonged_with_hand_off takes hand-offs (read at join):
    /// then, after a won conflict, it waits for the loser's bytes. False by
    /// default, so prolonged() comes without that wait.
    virtual bool takes_hand_offs() const { return false; }
    /// prolonged(), with what the loser handed off (nullopt unless
    /// takes_hand_offs()). The default calls prolonged().
    virtual void prolonged_with_hand_off(const std::string &loser, std::uint64_t epoch,
                                         const std::optional<HandOff> &hand_off) {
        (void)hand_off;
        prolonged(loser, epoch);
    }
    /// deallocated(), returning bytes for the shard's next owner (the
    /// winner of a conflict, or the standby that takes the shard after a
    /// leave). The default calls deallocated() and hands nothing off.
    virtual std::optional<std::vector<std::uint8_t>> deallocated_with_hand_off(
        const std::optional<std::string> &winner, ReleaseReason reason) {
        deallocated(winner, reason);
        return std::nullopt;
    }
};

namespace detail {

/// What user_data points to: keeps the handler alive as long as the C side
/// may call it, and carries a join-time exception back to Cluster::join.
struct Holder {
    std::shared_ptr<Handler> handler;
    std::exception_ptr join_error;
    LogSink log;
};

using HolderRef = std::shared_ptr<Holder>;

inline Holder &holder(void *user_data) { return **static_cast<HolderRef *>(user_data); }

inline minishard_result on_nodes(void *user_data, const char *cluster, minishard_node_list *out) {
    Holder &h = holder(user_data);
    try {
        for (const std::string &node : h.handler->nodes(cluster)) {
            minishard_result rc = minishard_node_list_push(out, node.c_str());
            if (rc != MINISHARD_OK) return rc;
        }
        return MINISHARD_OK;
    } catch (...) {
        h.join_error = std::current_exception();
        return MINISHARD_CALLBACK_FAILED;
    }
}

inline std::int64_t on_shard_count(void *user_data, const char *cluster) {
    Holder &h = holder(user_data);
    try {
        return h.handler->shard_count(cluster);
    } catch (...) {
        h.join_error = std::current_exception();
        return 0;
    }
}

inline minishard_result on_allocated(void *user_data, const char *cluster, std::uint32_t shard,
                                     std::uint64_t epoch, void **state) {
    *state = nullptr;  // the handler keeps its own state
    try {
        holder(user_data).handler->allocated(cluster, shard, epoch);
        return MINISHARD_OK;
    } catch (...) {
        return MINISHARD_CALLBACK_FAILED;
    }
}

inline std::optional<HandOff> hand_off_of(const minishard_hand_off *h) {
    if (h == nullptr) return std::nullopt;
    HandOff out;
    out.from = h->from;
    out.epoch = h->epoch;
    if (h->len > 0) out.data.assign(h->data, h->data + h->len);
    return out;
}

inline minishard_result on_allocated_hand_off(void *user_data, const char *cluster,
                                              std::uint32_t shard, std::uint64_t epoch,
                                              const minishard_hand_off *hand_off, void **state) {
    *state = nullptr;  // the handler keeps its own state
    try {
        holder(user_data).handler->allocated_with_hand_off(cluster, shard, epoch,
                                                           hand_off_of(hand_off));
        return MINISHARD_OK;
    } catch (...) {
        return MINISHARD_CALLBACK_FAILED;
    }
}

inline minishard_result on_prolonged_hand_off(void *user_data, const char *loser,
                                              std::uint64_t epoch,
                                              const minishard_hand_off *hand_off, void *,
                                              void **) {
    try {
        holder(user_data).handler->prolonged_with_hand_off(loser, epoch, hand_off_of(hand_off));
        return MINISHARD_OK;
    } catch (...) {
        return MINISHARD_CALLBACK_FAILED;
    }
}

inline void on_deallocated_hand_off(void *user_data, const char *winner,
                                    minishard_release_reason reason, void *,
                                    minishard_hand_off_writer *writer) {
    try {
        std::optional<std::vector<std::uint8_t>> data =
            holder(user_data).handler->deallocated_with_hand_off(
                winner ? std::optional<std::string>(winner) : std::nullopt,
                static_cast<ReleaseReason>(reason));
        if (data) minishard_hand_off_write(writer, data->data(), data->size());
    } catch (...) {
        // Nothing to fail: the shard is gone either way.
    }
}

inline std::int64_t on_score(void *user_data, void *) {
    try {
        return holder(user_data).handler->score();
    } catch (...) {
        return INT64_MIN;  // the C ABI has no failed score: the lowest loses
    }
}

inline minishard_result on_prolonged(void *user_data, const char *loser, std::uint64_t epoch,
                                     void *, void **) {
    try {
        holder(user_data).handler->prolonged(loser, epoch);
        return MINISHARD_OK;
    } catch (...) {
        return MINISHARD_CALLBACK_FAILED;
    }
}

inline void on_deallocated(void *user_data, const char *winner, minishard_release_reason reason,
                           void *) {
    try {
        holder(user_data).handler->deallocated(
            winner ? std::optional<std::string>(winner) : std::nullopt,
            static_cast<ReleaseReason>(reason));
    } catch (...) {
        // Nothing to fail: the shard is gone either way.
    }
}

inline void on_status_changed(void *user_data, const char *cluster, minishard_health old_health,
                              minishard_health new_health) {
    try {
        holder(user_data).handler->status_changed(cluster, static_cast<Health>(old_health),
                                                  static_cast<Health>(new_health));
    } catch (...) {
    }
}

inline void on_handle_request(void *user_data, void *, const std::uint8_t *payload,
                              std::size_t len, minishard_responder *responder) {
    Responder answer(responder);
    try {
        std::vector<std::uint8_t> bytes(payload, payload + len);
        holder(user_data).handler->handle_request(bytes, answer);
    } catch (const std::exception &e) {
        // Unless the handler answered or took it before throwing.
        try {
            answer.fail(e.what());
        } catch (...) {
        }
    } catch (...) {
    }
}

/// A request_async's promise, handed to the C completion as user_data.
inline void on_request_done(void *user_data, minishard_result result,
                            const minishard_reply *reply, const char *message) {
    std::unique_ptr<std::promise<Reply>> promise(static_cast<std::promise<Reply> *>(user_data));
    try {
        if (result == MINISHARD_OK) {
            promise->set_value(Reply::from(reply));
        } else {
            promise->set_exception(
                std::make_exception_ptr(Error(result, message ? message : "")));
        }
    } catch (...) {
        promise->set_exception(std::current_exception());
    }
}

inline void on_log(void *user_data, minishard_log_level level, const char *target,
                   const char *message) {
    try {
        holder(user_data).log.write(static_cast<LogLevel>(level), target, message);
    } catch (...) {
        // A log line is not worth failing anything for.
    }
}

inline void on_free(void *user_data) { delete static_cast<HolderRef *>(user_data); }

}  // namespace detail

/// One node's membership of one cluster. Move-only; the destructor leaves
/// and frees it.
class Cluster {
public:
    /// Joins `name` with `config`; `handler` is kept alive until the Cluster
    /// is gone. With a `log` sink, this cluster's log lines go to it (until
    /// the Cluster is gone) instead of the process-wide log callback.
    /// Throws Error (or what nodes()/shard_count() threw).
    static Cluster join(const std::string &name, const Config &config,
                        std::shared_ptr<Handler> handler, LogSink log = {}) {
        if (!handler) throw Error(MINISHARD_INVALID_ARGUMENT, "handler is null");
        auto holder = std::make_shared<detail::Holder>();
        holder->handler = std::move(handler);
        holder->log = std::move(log);
        minishard_callbacks cb{};
        cb.struct_size = sizeof cb;
        cb.user_data = new detail::HolderRef(holder);  // freed by on_free, always
        cb.nodes = detail::on_nodes;
        cb.shard_count = detail::on_shard_count;
        cb.allocated_with_epoch = detail::on_allocated;
        cb.score = detail::on_score;
        cb.prolonged_with_epoch = detail::on_prolonged;
        cb.deallocated_with_reason = detail::on_deallocated;
        cb.status_changed = detail::on_status_changed;
        cb.handle_request = detail::on_handle_request;
        cb.allocated_with_hand_off = detail::on_allocated_hand_off;
        if (holder->handler->takes_hand_offs()) {
            cb.prolonged_with_hand_off = detail::on_prolonged_hand_off;
        }
        cb.deallocated_with_hand_off = detail::on_deallocated_hand_off;
        cb.free_user_data = detail::on_free;
        if (holder->log.write) {
            cb.log = detail::on_log;
            cb.log_max_level = static_cast<minishard_log_level>(holder->log.max_level);
        }
        minishard_cluster *raw = nullptr;
        minishard_result rc = minishard_join(name.c_str(), config.get(), &cb, &raw);
        if (rc != MINISHARD_OK) {
            if (holder->join_error) std::rethrow_exception(holder->join_error);
            throw Error(rc, detail::last_error());
        }
        return Cluster(raw);
    }

    Cluster(Cluster &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    Cluster &operator=(Cluster &&other) noexcept {
        if (this != &other) {
            minishard_cluster_free(raw_);
            raw_ = std::exchange(other.raw_, nullptr);
        }
        return *this;
    }
    Cluster(const Cluster &) = delete;
    Cluster &operator=(const Cluster &) = delete;
    ~Cluster() { minishard_cluster_free(raw_); }

    /// Leaves gracefully (hands the shard over at once). Idempotent.
    void leave() { detail::check(minishard_leave(raw_)); }

    /// The owner of `shard`, or nullopt when it has none right now.
    std::optional<std::string> get_node(std::uint32_t shard) const {
        return detail::read_string([&](char *buf, std::size_t len, std::size_t *written) {
            return minishard_get_node(raw_, shard, buf, len, written);
        });
    }

    /// The owner of `shard` with its epoch, or nullopt when it has none
    /// right now.
    std::optional<Owner> get_owner(std::uint32_t shard) const {
        std::uint64_t epoch = 0;
        auto node = detail::read_string([&](char *buf, std::size_t len, std::size_t *written) {
            return minishard_get_owner(raw_, shard, buf, len, written, &epoch);
        });
        if (!node) return std::nullopt;
        return Owner{std::move(*node), epoch};
    }

    /// How many shards the cluster keeps (numbered 0 .. shard_count() - 1):
    /// what shard_count() answered at join; an observer learns it from the
    /// members (0 until then).
    std::uint32_t shard_count() const {
        std::uint32_t count = 0;
        detail::check(minishard_shard_count(raw_, &count));
        return count;
    }

    /// This node's shard and its epoch, or nullopt.
    std::optional<std::pair<std::uint32_t, std::uint64_t>> my_shard() const {
        std::uint32_t shard = 0;
        std::uint64_t epoch = 0;
        minishard_result rc = minishard_my_shard(raw_, &shard, &epoch);
        if (rc == MINISHARD_NOT_FOUND) return std::nullopt;
        detail::check(rc);
        return std::make_pair(shard, epoch);
    }

    /// This node's view of the health.
    Health health() const {
        minishard_health health = minishard_get_health(raw_);
        if (health == MINISHARD_HEALTH_ERROR) {
            throw Error(MINISHARD_INVALID_ARGUMENT, detail::last_error());
        }
        return static_cast<Health>(health);
    }

    /// Blocks until `health`; throws Error(MINISHARD_TIMEOUT) after `timeout`,
    /// Error(MINISHARD_MISCONFIGURED) at once while no member accepts this node.
    void wait_until(Health health, std::chrono::milliseconds timeout) const {
        detail::check(minishard_wait_until(raw_, static_cast<minishard_health>(health),
                                           static_cast<std::uint64_t>(timeout.count())));
    }

    /// The status as JSON (see minishard_status_json).
    std::string status_json() const {
        return *detail::read_string([&](char *buf, std::size_t len, std::size_t *written) {
            return minishard_status_json(raw_, buf, len, written);
        });
    }

    /// This node's advertised address.
    std::string node_id() const {
        return *detail::read_string([&](char *buf, std::size_t len, std::size_t *written) {
            return minishard_node_id(raw_, buf, len, written);
        });
    }

    /// Counters since join.
    minishard_stats stats() const {
        minishard_stats stats{};
        stats.struct_size = sizeof stats;
        detail::check(minishard_get_stats(raw_, &stats));
        return stats;
    }

    /// Sends `payload` to the owner of `shard` and waits for its reply
    /// (see minishard_request). Throws Error: MINISHARD_TIMEOUT,
    /// MINISHARD_OVERLOADED, MINISHARD_HANDLER_FAILED, MINISHARD_UNCERTAIN...
    Reply request(std::uint32_t shard, std::string_view payload,
                  std::chrono::milliseconds timeout) const {
        minishard_reply *raw = nullptr;
        detail::check(minishard_request(raw_, shard,
                                        reinterpret_cast<const std::uint8_t *>(payload.data()),
                                        payload.size(), ms(timeout), &raw));
        std::unique_ptr<minishard_reply, void (*)(minishard_reply *)> owned(raw,
                                                                            minishard_reply_free);
        return Reply::from(owned.get());
    }

    /// request() without waiting: the future gets the reply or the Error,
    /// set where callbacks run (so do not wait on it from a callback).
    std::future<Reply> request_async(std::uint32_t shard, std::string_view payload,
                                     std::chrono::milliseconds timeout) const {
        auto promise = std::make_unique<std::promise<Reply>>();
        std::future<Reply> future = promise->get_future();
        detail::check(minishard_request_async(
            raw_, shard, reinterpret_cast<const std::uint8_t *>(payload.data()), payload.size(),
            ms(timeout), detail::on_request_done, promise.get()));
        promise.release();  // on_request_done owns it now
        return future;
    }

    /// The value of `key` in the metadata `node` published, or nullopt.
    std::optional<std::string> node_metadata(const std::string &node,
                                             const std::string &key) const {
        return detail::read_string([&](char *buf, std::size_t len, std::size_t *written) {
            return minishard_node_metadata(raw_, node.c_str(), key.c_str(), buf, len, written);
        });
    }

    /// Host dispatch: runs up to `max` pending callbacks here; how many ran.
    std::size_t dispatch(std::size_t max = SIZE_MAX) {
        std::size_t ran = 0;
        detail::check(minishard_dispatch(raw_, max, &ran));
        return ran;
    }

    /// Host dispatch: readable while callbacks are pending. Do not close it.
    int event_fd() const {
        int fd = minishard_event_fd(raw_);
        if (fd < 0) throw Error(MINISHARD_INVALID_ARGUMENT, detail::last_error());
        return fd;
    }

    /// The C handle, still owned by this Cluster.
    minishard_cluster *get() const noexcept { return raw_; }

private:
    explicit Cluster(minishard_cluster *raw) noexcept : raw_(raw) {}
    static std::uint64_t ms(std::chrono::milliseconds timeout) {
        return timeout.count() > 0 ? static_cast<std::uint64_t>(timeout.count()) : 0;
    }
    minishard_cluster *raw_;
};

/// The library's version.
inline std::string version() { return minishard_version(); }

}  // namespace minishard

#endif  // MINISHARD_HPP
