#!/usr/bin/env bash
# Builds the Python package's wheel (maturin, from PyPI) and runs its tests from a fresh venv
# with the wheel installed, against `groupcall serve`. Run by scripts/test.sh; alone it needs
# the `groupcall` binary (cargo build -p groupcall-cli), or GROUPCALL_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../scripts/python-env.sh
. scripts/python-env.sh

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/groupcall/main-target}
CACHE=$HOME/.cache/groupcall
BUILD_VENV=$CACHE/venv-build
WHEEL_VENV=$CACHE/venv-wheel
WHEELS=$CACHE/wheels
TEST_DEPS=(pytest numpy pyrogram telethon)

if [ ! -x "$BUILD_VENV/bin/pip" ]; then
  VENV=$BUILD_VENV make_venv || { echo "python: cannot make a venv" >&2; exit 1; }
fi
"$BUILD_VENV/bin/pip" install -q "maturin>=1.16,<2"

# The tests' build: the same dev profile as `cargo test` (dependencies optimised), stripped.
rm -rf "$WHEELS"
(cd python && "$BUILD_VENV/bin/maturin" build --profile dev --strip -o "$WHEELS" 2>&1 | tail -1)

# A fresh venv every run: the wheel must install and work on its own.
rm -rf "$WHEEL_VENV"
VENV=$WHEEL_VENV make_venv || { echo "python: cannot make a venv" >&2; exit 1; }
"$WHEEL_VENV/bin/pip" install -q "$WHEELS"/groupcall-*.whl "${TEST_DEPS[@]}"

export GROUPCALL_BIN=${GROUPCALL_BIN:-$CARGO_TARGET_DIR/debug/groupcall}
[ -x "$GROUPCALL_BIN" ] || cargo build -q -p groupcall-cli --bin groupcall ${GROUPCALL_CARGO_FEATURES:+--features "$GROUPCALL_CARGO_FEATURES"}
cd python/tests
exec "$WHEEL_VENV/bin/python" -m pytest -q -p no:cacheprovider -rs "$@"
