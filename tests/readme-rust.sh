#!/usr/bin/env bash
# README's Rust example (minishard/examples/node.rs), built with README's own
# command line and run as README shows it (`target/debug/examples/node THIS
# OTHER OTHER`): three members on free loopback ports with --seconds 2, each
# available, then leaving, together owning both shards; then three without
# it, left by Ctrl-C. (minishard-ffi/tests/readme.rs checks that README
# shows the file as it is.)
set -euo pipefail
cd "$(dirname "$0")/.."
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

build="$(grep -E '^cargo build -p minishard --example node' README.md)" ||
    { echo "README shows no command building the Rust example"; exit 1; }
program="$(grep -oE '^target/debug/examples/node' README.md | head -n1)" ||
    { echo "README shows no command running the Rust example"; exit 1; }
echo "  \$ $build"
eval "$build"

free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join("127.0.0.1:%d" % s.getsockname()[1] for s in socks))' "$1"
}

# Starts three members, each with its own address first as README shows,
# with "$@" before the addresses; sets pids and member_logs.
start_three() {
    local addrs i j
    read -r -a addrs <<<"$(free_ports 3)"
    pids=() member_logs=()
    for i in 0 1 2; do
        local members=("${addrs[i]}")
        for j in 0 1 2; do ((j == i)) || members+=("${addrs[j]}"); done
        member_logs+=("$logs/$1-$i.log")
        "$program" "${@:2}" "${members[@]}" >"${member_logs[i]}" 2>&1 &
        pids+=($!)
    done
}

# Every member exited 0 after being available and leaving.
check_three() {
    local i rc=0
    for i in 0 1 2; do
        wait "${pids[i]}" || { echo "member $i exited with $?"; rc=1; }
        grep -q "shard 0 lives on 127.0.0.1:" "${member_logs[i]}" || { echo "member $i never was available"; rc=1; }
        grep -qx "left" "${member_logs[i]}" || { echo "member $i did not leave"; rc=1; }
        sed "s/^/member $i: /" "${member_logs[i]}"
    done
    return $rc
}

failed=0
echo "--- three members, --seconds 2"
start_three seconds --seconds 2
check_three || failed=1
owned="$(cat "${member_logs[@]}" | grep -oE 'owning shard [0-9]+' | awk '{print $3}' | sort -u | tr '\n' ' ')"
[[ "$owned" == "0 1 " ]] || { echo "shards owned: '$owned', expected 0 and 1"; failed=1; }

echo "--- three members, left by Ctrl-C once available"
start_three ctrl-c
deadline=$((SECONDS + 60))
for i in 0 1 2; do
    until grep -q "shard 0 lives on" "${member_logs[i]}" || ((SECONDS > deadline)); do sleep 0.1; done
done
for i in 0 1 2; do kill -INT "${pids[i]}"; done
check_three || failed=1

((failed == 0)) || { echo "README's Rust example failed"; exit 1; }
echo "README's Rust example: built and run as shown"
