#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what is missing, then formatting,
# lints, unit and end-to-end tests, and the interop test against ntgcalls.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)        # libopus is built with CMake
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)            # OpenH264 is built from its C++ source
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
# Microphones and speakers: cpal builds against ALSA; the device tests run their own
# PulseAudio server with null sinks (no sound card needed).
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
dpkg -s libasound2-dev >/dev/null 2>&1 || need_apt+=(libasound2-dev)
# VP8 (the engine's feature `vp8`, tested below) links the system's libvpx, found with pkg-config.
dpkg -s libvpx-dev >/dev/null 2>&1 || need_apt+=(libvpx-dev)
command -v pulseaudio >/dev/null 2>&1 || need_apt+=(pulseaudio)
command -v pacat >/dev/null 2>&1 || need_apt+=(pulseaudio-utils)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Build outside the clone, so a fresh clone on the same machine reuses what an earlier run built.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/groupcall/main-target}

echo "== cargo fmt --check"
cargo fmt --all -- --check

# The engine's optional VP8 codec (libvpx) is linted and tested with everything else, in the same
# workspace-wide runs: one feature set for both commands, no second build of the engine.
features=groupcall-engine/vp8
# The scripts below build the binary with the same features, so nothing is compiled twice.
export GROUPCALL_CARGO_FEATURES=$features

echo "== cargo clippy"
cargo clippy --workspace --all-targets --features "$features" -- -D warnings

echo "== cargo test"
cargo test --workspace --features "$features"

if [ -x tests/interop/run.sh ]; then
  echo "== interop with ntgcalls"
  tests/interop/run.sh
fi

# The Python package: its wheel built with maturin, installed into a fresh venv, and its
# pytest suite against a local server (python/README.md).
echo "== python package"
python/test.sh

# The receive side against ntgcalls (NetEq) behind the same lossy downlink (docs/receive.md §8):
# the clean path and 10 % loss + 40 ms jitter, with the issue's targets checked. The debug
# binary the tests built is enough for three participants.
echo "== receive quality against ntgcalls"
scripts/compare-receive.sh --self-test
cargo build -q -p groupcall-cli --bin groupcall --features "$features"
GROUPCALL_BIN=$CARGO_TARGET_DIR/debug/groupcall scripts/compare-receive.sh \
  --rows none,10 --seeds 1 --signal tone --check
