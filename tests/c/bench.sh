#!/usr/bin/env bash
# The lookup benchmark: minishard_get_node from C and Cluster::get_node from
# Rust, ns per call on 1 and 2 threads, median of RUNS runs (default 7).
# Not part of tests/c/run.sh: numbers need a quiet machine.
#
#   tests/c/bench.sh [RUNS] [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-7}"
iterations="${2:-2000000}"
build="tests/build/bench"
mkdir -p "$build"
cargo build --release -p minishard-ffi --example bench_get_node
gcc -std=c99 -Wall -Wextra -Werror -pedantic -O2 -pthread -Iinclude \
    tests/c/bench_get_node.c -o "$build/bench_get_node" \
    -Ltarget/release -lminishard -Wl,-rpath,"$PWD/target/release"
echo "minishard get_node: 3-node 2-shard loopback cluster, lookups alternate shards 0 and 1 ($(nproc) cores)"
"$build/bench_get_node" "$runs" "$iterations"
target/release/examples/bench_get_node "$runs" "$iterations"

# Requests from C (minishard bench prints the Rust rows).
gcc -std=c99 -Wall -Wextra -Werror -pedantic -O2 -pthread -Iinclude \
    tests/c/bench_requests.c -o "$build/bench_requests" \
    -Ltarget/release -lminishard -Wl,-rpath,"$PWD/target/release"
"$build/bench_requests"
