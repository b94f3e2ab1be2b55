#!/usr/bin/env bash
# Receive quality under a bad downlink, groupcall against ntgcalls (libwebrtc/NetEq): starts
# `groupcall serve` on free loopback ports and runs tests/interop/compare_receive.py against it
# (a sender, an impairment relay on the downlink, our listener and an ntgcalls listener behind
# it; tone and speech scores and latency, side by side).
#
# Usage: scripts/compare-receive.sh [--rows none,10,20,30,burst10] [--seeds 1,2,3]
#          [--signal tone|speech|both] [--json FILE] [--check] [--no-relay] [--out DIR]
#        scripts/compare-receive.sh --self-test       (the scoring alone; no server)
#        scripts/compare-receive.sh --help            (the script's own help)
# The last line is `compare: N rows, M checks failed`; with --check the exit status says whether
# every check passed.
#
# Environment: GROUPCALL_BIN (the binary; default: build the release binary), INTEROP_PYTHON and
# NTGCALLS_VERSION (as for tests/interop/run.sh), COMPARE_TIMEOUT (backstop for the whole run,
# seconds, default 3600).
set -euo pipefail
cd "$(dirname "$0")/.."

# A Python with ntgcalls and numpy, picked as the interop test picks it.
# shellcheck source=python-env.sh
. scripts/python-env.sh
pick_python

SCRIPT=tests/interop/compare_receive.py
for a in "$@"; do
  case "$a" in
    --self-test|-h|--help) exec "$PY" "$SCRIPT" "$a" ;;
  esac
done

# shellcheck source=local-server.sh
. scripts/local-server.sh
groupcall_binary compare-receive
server_log compare-receive

start_local_server "$BIN" "$PY" "$LOG"
echo "compare-receive: groupcall serve on $CONTROL (media udp 127.0.0.1:$MEDIA_PORT), python $PY"
# The script bounds each session itself; this is the backstop for a hung native library.
timeout -k 5 "${COMPARE_TIMEOUT:-3600}" "$PY" "$SCRIPT" --control "$CONTROL" --media-port "$MEDIA_PORT" \
  --bin "$BIN" "$@"
