#!/usr/bin/env bash
# Runs the Node.js embedding example as README shows it: `npm ci` (koffi,
# pinned in package-lock.json), then `node cluster.js` against the release
# library, which exits 0 only if the three nodes joined, became available,
# agreed on owners and epochs, outlived the member-list re-poll and left.
# Installs nodejs and npm with apt-get when missing (a fresh Debian machine).
#
#   examples/node/test.sh [LIBRARY]   default: tests/build/prefix/lib/libminishard.so.0
#                                     if tests/c/run.sh installed it, else target/release
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

need=()
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if ((${#need[@]})); then
    echo "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq "${need[@]}" </dev/null >/dev/null
fi

library="${1:-}"
if [[ -z "$library" ]]; then
    library="$root/tests/build/prefix/lib/libminishard.so.0"
    if [[ ! -e "$library" ]]; then
        (cd "$root" && cargo build --release -p minishard-ffi)
        library="$root/target/release/libminishard.so"
    fi
fi
echo "node $(node --version), npm $(npm --version), library $library"
cd "$here"
npm ci --no-audit --no-fund --loglevel=error
# A join that blocks the event loop would hang: give up after a minute.
MINISHARD_LIB="$library" timeout 60 node cluster.js
