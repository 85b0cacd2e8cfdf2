#!/usr/bin/env bash
# Installs the C library under PREFIX (default /usr/local):
#   PREFIX/lib/libminishard.so, PREFIX/lib/libminishard.a,
#   PREFIX/include/minishard.h, PREFIX/include/minishard.hpp,
#   PREFIX/lib/pkgconfig/minishard.pc
# Builds the release library first unless --no-build is given.
#
#   minishard-ffi/install.sh [--no-build] [PREFIX]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build=1
if [[ "${1:-}" == "--no-build" ]]; then
    build=0
    shift
fi
prefix="${1:-${PREFIX:-/usr/local}}"
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}/release"

if [[ $build == 1 ]]; then
    (cd "$root" && cargo build --release -p minishard-ffi)
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"

install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0755 "$target/libminishard.so" "$prefix/lib/"
install -m 0644 "$target/libminishard.a" "$prefix/lib/"
install -m 0644 "$root/include/minishard.h" "$root/include/minishard.hpp" "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|" \
    -e "s|@LIBDIR@|\${prefix}/lib|" \
    -e "s|@INCLUDEDIR@|\${prefix}/include|" \
    -e "s|@VERSION@|$version|" \
    "$root/minishard-ffi/minishard.pc.in" >"$prefix/lib/pkgconfig/minishard.pc"
echo "installed minishard $version under $prefix"
