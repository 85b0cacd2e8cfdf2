#!/usr/bin/env bash
# The Python package's tests, on a fresh Debian machine as root (or any
# machine with python3 ≥ 3.9 and cargo): lints the extension's Rust and the
# package's annotations, builds the wheel users get (manylinux2014: glibc
# 2.17, abi3: CPython 3.9+) and the same wheel with the `testing` feature
# (fault injection for the tests), installs the testing one into a venv of
# its own from the .whl file, as users install a wheel, then runs pytest,
# which also checks the release wheel (its tags, its glibc symbols, no
# testing hooks).
#
# The wheels are linked with zig (`maturin build --zig`, zig from the
# `ziglang` package on PyPI) against glibc 2.17's symbols: auditwheel can
# only check and relabel a wheel, and this machine's glibc is newer, so it
# would need a manylinux container image to build in, which a test machine
# cannot pull.
#
# The venv, the cargo target directory and the wheels (dist/) stay in this
# folder (gitignored), so a second run only rebuilds what changed.
#
#   bindings/python/run-tests.sh [PYTEST ARGS...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
started=$SECONDS
say() { printf -- '--- %s (%ss)\n' "$*" "$((SECONDS - started))"; }

if ! python3 -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 9)' 2>/dev/null; then
    say "installing python3 and venv support"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
fi

venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    python3 -m venv "$venv"
fi
# As if activated: maturin runs zig (python -m ziglang) from the venv.
export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
pip install -q "maturin>=1.9,<2" "ziglang>=0.13" "pytest>=7" "mypy>=1.5" "auditwheel>=6"

say "cargo fmt --check and clippy -D warnings on the extension (release and testing features)"
cargo fmt --manifest-path Cargo.toml --check
cargo clippy --manifest-path Cargo.toml --quiet -- -D warnings
cargo clippy --manifest-path Cargo.toml --quiet --features testing -- -D warnings

say "mypy --strict on the package's own sources and stubs"
mypy --strict --cache-dir=/dev/null python/minishard
say "mypy --strict on README's examples (examples/python), against the package's stubs"
MYPYPATH=python mypy --strict --cache-dir=/dev/null ../../examples/python

# One wheel per folder: the release one is what users get.
build_wheel() {
    local out="$1"
    shift
    rm -rf "$out"
    local t0=$SECONDS
    maturin build --quiet --release --zig --compatibility manylinux2014 --out "$out" "$@"
    local wheel
    wheel=$(ls "$out"/*.whl)
    say "built $(basename "$wheel"): $(du -k "$wheel" | cut -f1) KiB in $((SECONDS - t0)) s"
}
say "building the release wheel (maturin --zig, manylinux2014, abi3)"
build_wheel dist/release
say "building the testing wheel (the same, with --features testing)"
build_wheel dist/testing --features testing

say "pip install dist/testing/*.whl (the built file; no compiler involved)"
pip install -q --force-reinstall --no-deps dist/testing/*.whl
MINISHARD_RELEASE_WHEEL="$(ls "$here"/dist/release/*.whl)"
export MINISHARD_RELEASE_WHEEL

# From the tests folder, `import minishard` is the installed package, not
# the source tree.
cd "$here/tests"
say "pytest"
python -m pytest -p no:cacheprovider -q "$@"
say "done"
