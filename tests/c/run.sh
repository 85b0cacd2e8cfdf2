#!/usr/bin/env bash
# The C ABI's tests: builds libminishard in release, installs it with the
# documented install command into tests/build/prefix, compiles the C tests
# (gcc -std=c99 -Wall -Wextra -Werror -pedantic) and the C++ ones (g++
# -std=c++17 -Wall -Werror) against the installed header and pkg-config file,
# runs them, then runs them again under valgrind (no leaks, no invalid
# accesses). Works as root on a fresh Debian machine with no stdin.
#
# The tests that split and crash nodes (minishard_testing_*) need a library
# built with the cargo feature `testing`, installed into
# tests/build/prefix-testing; everything else uses the release library,
# which must export no test hook.
#
#   tests/c/run.sh            everything
#   SKIP_VALGRIND=1 tests/c/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
build="$root/tests/build/c"
prefix="$root/tests/build/prefix"
testing_prefix="$root/tests/build/prefix-testing"

need=()
command -v gcc >/dev/null || need+=(gcc)
command -v g++ >/dev/null || need+=(g++)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v nm >/dev/null || need+=(binutils)
if [[ -z "${SKIP_VALGRIND:-}" ]] && ! command -v valgrind >/dev/null; then need+=(valgrind); fi
if ((${#need[@]})); then
    echo "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq "${need[@]}" </dev/null >/dev/null
fi

echo "--- build and install libminishard: with the test hooks, then as released"
rm -rf "$prefix" "$testing_prefix" "$build"
mkdir -p "$build"
cargo build --release -p minishard-ffi --features testing
minishard-ffi/install.sh --no-build --debug-file "$testing_prefix" >/dev/null
# The release library last, so that target/release holds it afterwards.
cargo build --release -p minishard-ffi
minishard-ffi/install.sh --no-build --debug-file "$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cflags="$(pkg-config --cflags minishard)"
libs="$(pkg-config --libs minishard) -Wl,-rpath,$prefix/lib"
testing_libs="-L$testing_prefix/lib -lminishard -Wl,-rpath,$testing_prefix/lib"

echo "--- compile"
c_flags=(-std=c99 -Wall -Wextra -Werror -pedantic -g -pthread)
cxx_flags=(-std=c++17 -Wall -Wextra -Werror -pedantic -g -pthread)
# The header alone, as C and as C++, with exactly the flags users are promised.
echo '#include "minishard.h"' >"$build/header_only.c"
gcc -std=c99 -Wall -Wextra -Werror -pedantic $cflags -c "$build/header_only.c" -o "$build/header_only_c.o"
printf '#include "minishard.h"\n#include "minishard.hpp"\n' >"$build/header_only.cpp"
g++ -std=c++17 -Wall -Werror $cflags -c "$build/header_only.cpp" -o "$build/header_only_cpp.o"
gcc -std=c99 -Wall -Wextra -Werror -pedantic -DMINISHARD_TESTING $cflags -c "$build/header_only.c" \
    -o "$build/header_only_testing.o"
# With the test hooks.
gcc "${c_flags[@]}" -DMINISHARD_TESTING $cflags tests/c/test_errors.c -o "$build/test_errors" $testing_libs
gcc "${c_flags[@]}" $cflags tests/c/test_cluster.c -o "$build/test_cluster" $testing_libs
# As released.
for t in test_abi test_host_dispatch test_process test_tls test_requests; do
    gcc "${c_flags[@]}" $cflags "tests/c/$t.c" -o "$build/$t" $libs
done
g++ "${cxx_flags[@]}" $cflags tests/c/test_cpp.cpp -o "$build/test_cpp" $libs
# A program built against an older header (tests/c/old-header: before
# minishard_callbacks grew) runs against this library.
gcc "${c_flags[@]}" -Itests/c/old-header tests/c/test_old_header.c -o "$build/test_old_header" $libs
# The static release library links too (the error tests but for the hooks,
# no .so at run time).
gcc "${c_flags[@]}" $cflags tests/c/test_errors.c -o "$build/test_errors_static" \
    "$prefix/lib/libminishard.a" $(pkg-config --static --libs-only-l minishard | sed 's/-lminishard//')
# README's examples, built with README's own command lines, verbatim (its
# `cc ... examples/...` and `g++ ... examples/...` lines), against the
# installed library: README cannot show a command that does not work.
# (minishard-ffi/tests/readme.rs checks README shows the files as they are.)
mkdir -p "$build/readme"
ln -s "$root/examples" "$build/readme/examples"
readme_builds="$(grep -E '^(cc -std=c99|g\+\+ -std=c\+\+17) examples/' README.md || true)"
for wanted in node node-static host_dispatch node-cpp; do
    grep -qE -- "-o $wanted\$" <<<"$readme_builds" || { echo "README shows no command building $wanted"; exit 1; }
done
(cd "$build/readme" && while IFS= read -r line; do echo "  \$ $line"; eval "$line"; done <<<"$readme_builds")
# And with every warning an error, as the tests are.
gcc "${c_flags[@]}" $cflags examples/c/node.c -o "$build/node_strict" $libs
gcc "${c_flags[@]}" $cflags examples/c/host_dispatch.c -o "$build/host_dispatch_strict" $libs
g++ "${cxx_flags[@]}" $cflags examples/cpp/node.cpp -o "$build/node_cpp_strict" $libs

free_ports() {
    python3 - "$1" <<'PY' 2>/dev/null || { for i in $(seq "$1"); do printf '127.0.0.1:%d ' $((20000 + RANDOM % 20000)); done; }
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join("127.0.0.1:%d" % s.getsockname()[1] for s in socks))
PY
}

# The release library exports no test hook; the testing one exports them all.
test_hooks_only_in_testing_build() {
    local hooks="minishard_testing_crash minishard_testing_cut minishard_testing_heal minishard_testing_heal_all"
    local released testing h
    released="$(nm -D --defined-only "$prefix/lib/libminishard.so" | awk '{print $3}')"
    testing="$(nm -D --defined-only "$testing_prefix/lib/libminishard.so" | awk '{print $3}')"
    grep -qx minishard_join <<<"$released" || { echo "nm -D shows no minishard_join in the release library"; return 1; }
    if grep minishard_testing <<<"$released"; then
        echo "the release libminishard.so exports the test hooks above"
        return 1
    fi
    if nm "$prefix/lib/libminishard.a" 2>/dev/null | grep -w "T minishard_testing_[a-z_]*"; then
        echo "the release libminishard.a defines the test hooks above"
        return 1
    fi
    for h in $hooks; do
        grep -qx "$h" <<<"$testing" || { echo "the testing build lacks $h"; return 1; }
    done
    echo "release: no minishard_testing_* symbol; testing build: all four"
}

# install.sh installs libminishard.so.X.Y.Z with SONAME libminishard.so.X,
# the two usual symlinks, and strips both libraries; programs record the
# SONAME.
installed_library_is_versioned_and_stripped() {
    local lib="$prefix/lib" version major so
    version="$(pkg-config --modversion minishard)"
    major="${version%%.*}"
    so="$lib/libminishard.so.$version"
    [[ -f "$so" && ! -L "$so" ]] || { echo "no file $so"; return 1; }
    [[ "$(readlink "$lib/libminishard.so.$major")" == "libminishard.so.$version" ]] ||
        { echo "libminishard.so.$major does not point at libminishard.so.$version"; return 1; }
    [[ "$(readlink "$lib/libminishard.so")" == "libminishard.so.$major" ]] ||
        { echo "libminishard.so does not point at libminishard.so.$major"; return 1; }
    readelf -d "$so" | grep -qF "Library soname: [libminishard.so.$major]" ||
        { echo "SONAME is not libminishard.so.$major:"; readelf -d "$so" | grep SONAME; return 1; }
    readelf -d "$build/test_abi" | grep -qF "Shared library: [libminishard.so.$major]" ||
        { echo "a program built against it does not need libminishard.so.$major"; return 1; }
    if readelf -S "$so" | grep -E '\.(debug_[a-z]+|symtab)'; then
        echo "$so is not stripped"
        return 1
    fi
    if readelf -S "$lib/libminishard.a" | grep -m3 -E '\.debug_[a-z]+'; then
        echo "libminishard.a still has debug sections"
        return 1
    fi
    echo "sizes: target/release/libminishard.so $(stat -c %s target/release/libminishard.so) B," \
        "installed .so $(stat -c %s "$so") B, target/release/libminishard.a" \
        "$(stat -c %s target/release/libminishard.a) B, installed .a $(stat -c %s "$lib/libminishard.a") B"
}

# One member per program given (three), on free loopback ports, each run as
# README shows (`./node THIS OTHER OTHER`) with --seconds 2: each becomes
# available, exits 0 and leaves, and together they owned both shards (the
# examples keep one shard fewer than members).
three_members() {
    local addrs pids=() i j logs=() rc=0 owned
    read -r -a addrs <<<"$(free_ports 3)"
    for i in 0 1 2; do
        local members=("${addrs[i]}")
        for j in 0 1 2; do ((j == i)) || members+=("${addrs[j]}"); done
        logs+=("$build/$BASHPID-member-$i.log")
        "${@:i+1:1}" --seconds 2 "${members[@]}" >"${logs[i]}" 2>&1 &
        pids+=($!)
    done
    for i in 0 1 2; do
        wait "${pids[i]}" || { echo "member $i exited with $?"; rc=1; }
        grep -q "shard 0 lives on" "${logs[i]}" || { echo "member $i never was available"; rc=1; }
        grep -qx "left" "${logs[i]}" || { echo "member $i did not leave"; rc=1; }
    done
    owned="$(cat "${logs[@]}" | grep -oE '(owns|owning) shard [0-9]+' | awk '{print $3}' | sort -u | tr '\n' ' ')"
    [[ "$owned" == "0 1 " ]] || { echo "shards owned: '$owned', expected 0 and 1"; rc=1; }
    for i in 0 1 2; do sed "s/^/member $i: /" "${logs[i]}"; done
    return $rc
}

# Three members without --seconds, left by Ctrl-C once all are available.
ctrl_c_leaves() {
    local addrs pids=() i j logs=() rc=0 deadline
    read -r -a addrs <<<"$(free_ports 3)"
    for i in 0 1 2; do
        local members=("${addrs[i]}")
        for j in 0 1 2; do ((j == i)) || members+=("${addrs[j]}"); done
        logs+=("$build/$BASHPID-ctrl-c-$i.log")
        "$1" "${members[@]}" >"${logs[i]}" 2>&1 &
        pids+=($!)
    done
    deadline=$((SECONDS + 60))
    for i in 0 1 2; do
        until grep -q "shard 0 lives on" "${logs[i]}" || ((SECONDS > deadline)); do sleep 0.1; done
    done
    for i in 0 1 2; do kill -INT "${pids[i]}"; done
    for i in 0 1 2; do
        wait "${pids[i]}" || { echo "member $i exited with $? after SIGINT"; rc=1; }
        grep -qx "left" "${logs[i]}" || { echo "member $i did not leave"; rc=1; }
        sed "s/^/member $i: /" "${logs[i]}"
    done
    return $rc
}

passed=0
failed=0
failures=()
run() { # name, command...
    local name="$1"
    shift
    if "$@" >"$build/$name.log" 2>&1; then
        passed=$((passed + 1))
        grep -E '^(ok|FAIL) |passed, |^sizes: ' "$build/$name.log" | sed 's/^/  /' || true
        echo "ok   $name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        sed 's/^/  | /' "$build/$name.log"
        echo "FAIL $name"
    fi
}

# Throwaway TLS certificates for test_tls (a cluster CA and another one).
cargo run -q -p minishard --example test-certs -- "$build/certs"
export MINISHARD_TEST_CERTS="$build/certs"

echo "--- run"
run test-hooks-only-in-testing-build test_hooks_only_in_testing_build
run installed-library-is-versioned-and-stripped installed_library_is_versioned_and_stripped
run errors "$build/test_errors"
run abi "$build/test_abi"
run old-header "$build/test_old_header"
run errors-static "$build/test_errors_static"
run cluster "$build/test_cluster"
run host-dispatch "$build/test_host_dispatch"
run process "$build/test_process"
run tls "$build/test_tls"
run requests "$build/test_requests"
run c++-wrapper "$build/test_cpp"
readme="$build/readme"
run readme-c-example three_members "$readme/node" "$readme/node" "$readme/node-static"
run readme-c-example-ctrl-c ctrl_c_leaves "$readme/node"
run readme-host-dispatch-example three_members "$readme/host_dispatch" "$readme/host_dispatch" "$readme/node"
run readme-c++-example three_members "$readme/node-cpp" "$readme/node-cpp" "$readme/node-cpp"

if [[ -z "${SKIP_VALGRIND:-}" ]]; then
    echo "--- run under valgrind"
    vg=(valgrind --error-exitcode=1 --leak-check=full --show-leak-kinds=definite,possible
        --errors-for-leak-kinds=definite,possible --track-fds=no
        --suppressions="$root/tests/c/valgrind.supp" --quiet)
    # Valgrind runs the engine's threads one at a time, many times slower:
    # the tests stretch their timings and deadlines by TIME_SCALE.
    export TIME_SCALE=4
    run valgrind-errors "${vg[@]}" "$build/test_errors"
    run valgrind-abi "${vg[@]}" "$build/test_abi"
    run valgrind-old-header "${vg[@]}" "$build/test_old_header"
    run valgrind-cluster "${vg[@]}" "$build/test_cluster"
    run valgrind-host-dispatch "${vg[@]}" "$build/test_host_dispatch"
    run valgrind-process "${vg[@]}" "$build/test_process"
    run valgrind-tls "${vg[@]}" "$build/test_tls"
    run valgrind-requests "${vg[@]}" "$build/test_requests"
    run valgrind-c++-wrapper "${vg[@]}" "$build/test_cpp"
    # One member alone keeps its one shard.
    run valgrind-c-example "${vg[@]}" "$readme/node" --seconds 1 $(free_ports 1)
    run valgrind-host-dispatch-example "${vg[@]}" "$readme/host_dispatch" --seconds 1 $(free_ports 1)
fi

echo
echo "c-abi: $passed passed, $failed failed"
if ((failed)); then
    echo "failed: ${failures[*]}"
    exit 1
fi
