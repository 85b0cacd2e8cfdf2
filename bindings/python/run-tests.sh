#!/usr/bin/env bash
# The Python package's tests, on a fresh Debian machine as root (or any
# machine with python3 ≥ 3.9 and cargo): lints the extension's Rust, builds
# and installs the package into a venv of its own the way users do
# (`pip install ./bindings/python`: PEP 517 through maturin), then runs
# pytest. The venv and the cargo target directory stay in this folder
# (gitignored), so a second run only rebuilds what changed.
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
# As if activated: the maturin build backend runs `maturin` from PATH.
export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
pip install -q "maturin>=1.9,<2" "pytest>=7" "mypy>=1.5"

say "cargo fmt --check and clippy -D warnings on the extension"
cargo fmt --manifest-path Cargo.toml --check
cargo clippy --manifest-path Cargo.toml --quiet -- -D warnings

say "pip install ./bindings/python (PEP 517, maturin, release build)"
# --no-build-isolation: build with the venv's maturin instead of fetching a
# fresh one for every run; the route (pip -> PEP 517 -> maturin) is the same.
pip install -q --no-build-isolation --force-reinstall --no-deps "$here"

# From the tests folder, `import minishard` is the installed package, not
# the source tree.
cd "$here/tests"
say "mypy --strict: the package's annotations and stubs, as a user's program sees them"
mypy --strict --cache-dir=/dev/null typing_example.py

say "pytest"
python -m pytest -p no:cacheprovider -q "$@"
say "done"
