#!/usr/bin/env bash
# Installs the C library under PREFIX (default /usr/local), stripped:
#   PREFIX/lib/libminishard.so.X.Y.Z        the shared library (SONAME libminishard.so.X)
#   PREFIX/lib/libminishard.so.X            -> libminishard.so.X.Y.Z (what programs load)
#   PREFIX/lib/libminishard.so              -> libminishard.so.X     (what -lminishard finds)
#   PREFIX/lib/libminishard.a               the static library
#   PREFIX/include/minishard.h, minishard.hpp
#   PREFIX/lib/pkgconfig/minishard.pc
# With --debug-file, the shared library's debug information goes to
#   PREFIX/lib/.debug/libminishard.so.X.Y.Z.debug
# (named in the library's .gnu_debuglink; gdb looks in .debug/ next to it).
# Builds the release library first unless --no-build is given.
#
#   minishard-ffi/install.sh [--no-build] [--debug-file] [PREFIX]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build=1
debug_file=0
while [[ "${1:-}" == --* ]]; do
    case "$1" in
        --no-build) build=0 ;;
        --debug-file) debug_file=1 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
prefix="${1:-${PREFIX:-/usr/local}}"
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}/release"
for tool in strip objcopy; do
    command -v "$tool" >/dev/null || { echo "install.sh: $tool not found (Debian: apt-get install binutils)" >&2; exit 1; }
done

if [[ $build == 1 ]]; then
    (cd "$root" && cargo build --release -p minishard-ffi)
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
major="${version%%.*}"
lib="libminishard.so.$version"

install -d "$prefix/lib/pkgconfig" "$prefix/include"
rm -f "$prefix/lib/libminishard.so" "$prefix/lib/libminishard.so.$major"
install -m 0755 "$target/libminishard.so" "$prefix/lib/$lib"
if [[ $debug_file == 1 ]]; then
    install -d "$prefix/lib/.debug"
    objcopy --only-keep-debug "$prefix/lib/$lib" "$prefix/lib/.debug/$lib.debug"
    chmod 0644 "$prefix/lib/.debug/$lib.debug"
fi
strip --strip-unneeded "$prefix/lib/$lib"
if [[ $debug_file == 1 ]]; then
    (cd "$prefix/lib" && objcopy --add-gnu-debuglink=".debug/$lib.debug" "$lib")
fi
ln -s "$lib" "$prefix/lib/libminishard.so.$major"
ln -s "libminishard.so.$major" "$prefix/lib/libminishard.so"
install -m 0644 "$target/libminishard.a" "$prefix/lib/"
# Debug sections only: the archive's symbols are what programs link against.
strip --strip-debug "$prefix/lib/libminishard.a"
install -m 0644 "$root/include/minishard.h" "$root/include/minishard.hpp" "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|" \
    -e "s|@LIBDIR@|\${prefix}/lib|" \
    -e "s|@INCLUDEDIR@|\${prefix}/include|" \
    -e "s|@VERSION@|$version|" \
    "$root/minishard-ffi/minishard.pc.in" >"$prefix/lib/pkgconfig/minishard.pc"
echo "installed minishard $version under $prefix"
