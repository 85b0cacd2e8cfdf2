// Three minishard nodes in one Node.js process, through the C library and
// koffi (no compiler needed). The nodes use host dispatch: every callback
// runs on this thread, from the event loop (koffi's libuv poll on each
// handle's event fd), never on one of minishard's threads. It joins them,
// waits until the cluster is available, looks owners up, stays past the
// 5 s member-list re-poll, then leaves, and exits 0 only if all of that
// happened as it should.
//
//   node cluster.js [--seconds N]     (MINISHARD_LIB: the library to load)
'use strict';

const net = require('node:net');
const path = require('node:path');
const koffi = require('koffi');

const LIB = process.env.MINISHARD_LIB ||
    path.join(__dirname, '..', '..', 'target', 'release', 'libminishard.so');
const lib = koffi.load(LIB);

// ---- the C ABI (include/minishard.h) ---------------------------------------

const OK = 0;
const DISPATCH_HOST = 1;
const HEALTH = ['degraded', 'transition', 'available'];

koffi.opaque('minishard_config');
koffi.opaque('minishard_cluster');
koffi.opaque('minishard_node_list');
const NodesFn = koffi.proto('uint32_t nodes_fn(void *user_data, const char *cluster, minishard_node_list *out)');
const ShardCountFn = koffi.proto('int64_t shard_count_fn(void *user_data, const char *cluster)');
const AllocatedFn = koffi.proto('uint32_t allocated_fn(void *user_data, const char *cluster, uint32_t shard, uint64_t epoch, void **state)');
const ScoreFn = koffi.proto('int64_t score_fn(void *user_data, void *state)');
const ProlongedFn = koffi.proto('uint32_t prolonged_fn(void *user_data, const char *loser, void *state, void **new_state)');
const DeallocatedFn = koffi.proto('void deallocated_fn(void *user_data, const char *winner, void *state)');
const StatusFn = koffi.proto('void status_fn(void *user_data, const char *cluster, uint32_t old_health, uint32_t new_health)');
// The struct as far as this program uses it (through allocated_with_epoch):
// by the header's struct_size rule, later fields count as NULL.
const Callbacks = koffi.struct('minishard_callbacks', {
    struct_size: 'size_t',
    user_data: 'void *',
    nodes: koffi.pointer(NodesFn),
    shard_count: koffi.pointer(ShardCountFn),
    allocated: 'void *',
    score: koffi.pointer(ScoreFn),
    prolonged: koffi.pointer(ProlongedFn),
    deallocated: koffi.pointer(DeallocatedFn),
    status_changed: koffi.pointer(StatusFn),
    free_user_data: 'void *',
    allocated_with_epoch: koffi.pointer(AllocatedFn),
});

const c = {
    version: lib.func('const char *minishard_version(void)'),
    lastError: lib.func('size_t minishard_last_error(_Out_ uint8_t *buf, size_t len)'),
    configNew: lib.func('minishard_config *minishard_config_new(void)'),
    configFree: lib.func('void minishard_config_free(minishard_config *cfg)'),
    setListen: lib.func('uint32_t minishard_config_set_listen(minishard_config *cfg, const char *addr)'),
    setCookie: lib.func('uint32_t minishard_config_set_cookie(minishard_config *cfg, const uint8_t *cookie, size_t len)'),
    setDispatch: lib.func('uint32_t minishard_config_set_dispatch(minishard_config *cfg, uint32_t mode)'),
    push: lib.func('uint32_t minishard_node_list_push(minishard_node_list *list, const char *addr)'),
    join: lib.func('uint32_t minishard_join(const char *cluster, const minishard_config *cfg, const minishard_callbacks *cb, _Out_ minishard_cluster **out)'),
    eventFd: lib.func('int minishard_event_fd(const minishard_cluster *cluster)'),
    dispatch: lib.func('uint32_t minishard_dispatch(minishard_cluster *cluster, size_t max, _Out_ size_t *ran)'),
    health: lib.func('uint32_t minishard_get_health(const minishard_cluster *cluster)'),
    shardCount: lib.func('uint32_t minishard_shard_count(const minishard_cluster *cluster, _Out_ uint32_t *out)'),
    getOwner: lib.func('uint32_t minishard_get_owner(const minishard_cluster *cluster, uint32_t shard, _Out_ uint8_t *buf, size_t len, _Out_ size_t *written, _Out_ uint64_t *epoch)'),
    free: lib.func('void minishard_cluster_free(minishard_cluster *cluster)'),
};

function check(rc, what) {
    if (rc !== OK) {
        const buf = Buffer.alloc(512);
        const size = c.lastError(buf, buf.length);
        throw new Error(`${what}: ${buf.toString('utf8', 0, Math.max(0, Math.min(size, buf.length) - 1))}`);
    }
}

// ---- one node ------------------------------------------------------------------

class Node {
    constructor(address, members, shards) {
        this.address = address;
        this.nodesCalls = 0;
        this.allocations = [];      // [shard, epoch] per allocated
        this.deallocations = 0;
        this.held = null;           // the allocation this node holds: its JS state
        // Registered callbacks: minishard keeps them until the handle is freed.
        this.registered = [
            koffi.register((_ud, _cluster, out) => {
                this.nodesCalls += 1;
                for (const member of members) {
                    const rc = c.push(out, member);
                    if (rc !== OK) return rc;
                }
                return OK;
            }, koffi.pointer(NodesFn)),
            koffi.register(() => shards, koffi.pointer(ShardCountFn)),
            koffi.register((_ud, cluster, shard, epoch) => {
                this.held = { shard, epoch: BigInt(epoch), since: Date.now() };
                this.allocations.push([shard, BigInt(epoch)]);
                log(`${this.address} owns shard ${shard} of ${cluster} (epoch ${epoch})`);
                return OK;                  // *state stays NULL: the state lives here
            }, koffi.pointer(AllocatedFn)),
            koffi.register(() => this.held ? Date.now() - this.held.since : 0, koffi.pointer(ScoreFn)),
            koffi.register(() => OK, koffi.pointer(ProlongedFn)),
            koffi.register((_ud, winner) => {
                log(`${this.address} gave shard ${this.held.shard} up to ${winner ?? 'no one'}`);
                this.held = null;
                this.deallocations += 1;
            }, koffi.pointer(DeallocatedFn)),
            koffi.register((_ud, _cluster, _old, now) => {
                log(`${this.address} sees the cluster ${HEALTH[now]}`);
            }, koffi.pointer(StatusFn)),
        ];
        const [nodes, shardCount, allocated, score, prolonged, deallocated, statusChanged] =
            this.registered;

        const cfg = c.configNew();
        const cookie = Buffer.from('change me');
        check(c.setListen(cfg, address), 'listen');
        check(c.setCookie(cfg, cookie, cookie.length), 'cookie');
        check(c.setDispatch(cfg, DISPATCH_HOST), 'dispatch');
        const out = [null];
        // A plain synchronous call: in host dispatch, join runs nodes and
        // shard_count right here, on this thread.
        const rc = c.join('sessions', cfg, {
            struct_size: koffi.sizeof(Callbacks),
            user_data: null,
            nodes, shard_count: shardCount, allocated: null, score, prolonged, deallocated,
            status_changed: statusChanged, free_user_data: null, allocated_with_epoch: allocated,
        }, out);
        c.configFree(cfg);
        check(rc, `join ${address}`);
        this.handle = out[0];
        // The event fd is readable while callbacks are pending: libuv
        // watches it, and the callbacks run from the event loop.
        this.poll = koffi.node.poll(c.eventFd(this.handle), { readable: true }, () => this.dispatch());
    }

    dispatch() {
        const ran = [0];
        check(c.dispatch(this.handle, 64, ran), `dispatch ${this.address}`);
    }

    health() {
        return HEALTH[c.health(this.handle)];
    }

    // Every shard's owner and its allocation's epoch, in this node's view.
    owners() {
        const count = [0];
        check(c.shardCount(this.handle, count), 'shard count');
        const owners = [];
        for (let shard = 0; shard < count[0]; shard++) {
            const buf = Buffer.alloc(262);    // MINISHARD_ADDRESS_MAX
            const written = [0];
            const epoch = [0];
            const rc = c.getOwner(this.handle, shard, buf, buf.length, written, epoch);
            owners.push(rc === OK
                ? { node: buf.toString('utf8', 0, written[0] - 1), epoch: BigInt(epoch[0]) }
                : null);
        }
        return owners;
    }

    leave() {
        this.poll.close();
        c.free(this.handle);                  // leaves; its callbacks run here
        this.handle = null;
        for (const callback of this.registered) koffi.unregister(callback);
    }
}

// ---- the program ---------------------------------------------------------------

const started = Date.now();
function log(line) {
    console.log(`${String(Date.now() - started).padStart(6)} ms  ${line}`);
}

function freePorts(n) {
    return Promise.all(Array.from({ length: n }, () => new Promise((resolve, reject) => {
        const server = net.createServer().listen(0, '127.0.0.1', () => {
            const { port } = server.address();
            server.close(() => resolve(`127.0.0.1:${port}`));
        }).on('error', reject);
    })));
}

function until(condition, timeoutMs, what) {
    return new Promise((resolve, reject) => {
        const deadline = Date.now() + timeoutMs;
        const timer = setInterval(() => {
            if (condition()) {
                clearInterval(timer);
                resolve(Date.now());
            } else if (Date.now() > deadline) {
                clearInterval(timer);
                reject(new Error(`${what}: not within ${timeoutMs} ms`));
            }
        }, 10);
    });
}

function agreed(nodes) {
    const maps = nodes.map((n) => JSON.stringify(n.owners(), (_k, v) => typeof v === 'bigint' ? String(v) : v));
    return nodes.every((n) => n.health() === 'available') &&
        maps.every((m) => m === maps[0]) && nodes[0].owners().every((o) => o !== null);
}

async function main() {
    const seconds = process.argv[2] === '--seconds' ? Number(process.argv[3]) : 6;
    const members = await freePorts(3);
    const shards = members.length - 1;         // one node on standby
    log(`libminishard ${c.version()}: ${members.length} nodes keeping ${shards} shards`);
    const nodes = members.map((address) => new Node(address, members, shards));
    if (!nodes.every((n) => n.nodesCalls === 1)) throw new Error('join did not ask nodes on this thread');

    const available = await until(() => agreed(nodes), 10000, 'available everywhere');
    log(`available everywhere after ${available - started} ms`);
    for (const [shard, owner] of nodes[0].owners().entries()) {
        const holder = nodes.find((n) => n.address === owner.node);
        if (!holder?.held || holder.held.shard !== shard || holder.held.epoch !== owner.epoch) {
            throw new Error(`shard ${shard}: the lookup says ${owner.node} at epoch ${owner.epoch}, which does not hold it`);
        }
        log(`shard ${shard} lives on ${owner.node} (epoch ${owner.epoch})`);
    }

    // Stay past the member list's re-poll (every 5 s): nothing moves.
    const before = JSON.stringify(nodes[0].owners(), (_k, v) => typeof v === 'bigint' ? String(v) : v);
    await until(() => nodes.every((n) => n.nodesCalls >= 2), 15000, 'the member list re-poll');
    await until(() => Date.now() - available >= seconds * 1000, seconds * 1000 + 1000, 'waiting');
    const after = JSON.stringify(nodes[0].owners(), (_k, v) => typeof v === 'bigint' ? String(v) : v);
    if (!agreed(nodes) || after !== before) throw new Error(`the shard map moved: ${before} -> ${after}`);
    log(`still available after ${Math.round((Date.now() - available) / 1000)} s and ${nodes[0].nodesCalls - 1} re-polls, nothing moved`);

    for (const node of nodes) node.leave();
    const allocations = nodes.reduce((sum, n) => sum + n.allocations.length, 0);
    const deallocations = nodes.reduce((sum, n) => sum + n.deallocations, 0);
    if (allocations !== deallocations) {
        throw new Error(`${allocations} allocated but ${deallocations} deallocated`);
    }
    log(`all left: ${allocations} allocations, each closed by its deallocated`);
}

main().catch((error) => {
    console.error(`minishard example failed: ${error.message}`);
    process.exit(1);
});
