#!/usr/bin/env bash
# Runs `groupcall demo` on a fresh machine: installs what is missing (cmake for libopus, the ALSA
# headers for microphones and speakers), builds
# the engine, and runs the offline demo (a local server, a bot playing a clip, bots recording it).
# Extra arguments go to `groupcall demo` (e.g. --listeners 3, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)              # libopus is built with it
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
dpkg -s libasound2-dev >/dev/null 2>&1 || need_apt+=(libasound2-dev) # microphones and speakers
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi

echo "== building groupcall (release)"
cargo build --release -q -p groupcall-cli --bin groupcall
exec "${CARGO_TARGET_DIR:-target}/release/groupcall" demo "$@"
