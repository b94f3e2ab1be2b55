#!/usr/bin/env bash
# Video CPU, groupcall against ntgcalls 3.0.5, side by side in one run: builds the release binary
# (or takes GROUPCALL_BIN), starts `groupcall serve` on free loopback ports and runs
# benches/compare_video.py against it:
#   publish-720p30  one 1280x720 30 fps camera published by `groupcall join --video FIFO.y4m`,
#                   then by an ntgcalls process pushing the same frames (EXTERNAL source), each
#                   watched by an ntgcalls receiver; the publisher process's CPU and RSS
#   receive-720p30  one publisher (groupcall by default), `groupcall join --muted --decode-video`
#                   and an ntgcalls receiver (EXTERNAL sink, native size, frames only counted)
#                   at once; each receiver's CPU, RSS and frames decoded
# The pictures, the windows and what each figure includes: benches/compare_video.py's docstring
# (--help). About a minute: each run is ~5 s of warm-up and 10 s measured.
#
# Usage: benches/compare-video.sh [--scenario publish-720p30,receive-720p30] [--seconds S]
#                                 [--warmup W] [--receive-publisher groupcall|ntgcalls]
#                                 [--video-start-kbps K] [--no-meter] [--out DIR] [--json FILE]
# --video-start-kbps starts the server with it (`groupcall serve --video-start-kbps`, the
# x-google-start-bitrate of its answers; default the server's): libwebrtc's estimate starts
# there and, against the local server, falls from there, taking ntgcalls' 720p and then 360p
# layer with it (1500: after ~5 s; 5000: ~10 s; 20000: not within a run). The report says when
# a receiver did not get 1280x720, and the ratio then compares different work.
# The output ends with one line per scenario, for scripts:
#   ratio cpu ntgcalls/groupcall: X.XX (scenario=publish-720p30)
#   ratio cpu ntgcalls/groupcall: X.XX (scenario=receive-720p30)
# The exit status is 1 when a run broke (its processes' last lines are in the report).
#
# Environment: GROUPCALL_BIN (skip the build, use this binary), NTGCALLS_PYTHON (a python with
# ntgcalls 3.0.5 and numpy; default: .venv-interop, then python3, else .venv-interop is made),
# COMPARE_VIDEO_TIMEOUT (backstop for the whole run, seconds, default 170).
set -euo pipefail
cd "$(dirname "$0")/.."

SCRIPT=benches/compare_video.py
SERVE_ARGS=()
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --video-start-kbps)
      case "${2:-}" in
        ''|*[!0-9]*) echo "compare-video: --video-start-kbps takes a whole number of kbit/s" >&2; exit 2 ;;
      esac
      SERVE_ARGS=(--video-start-kbps "$2"); ARGS+=(--video-start-kbps "$2"); shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
set -- "${ARGS[@]+"${ARGS[@]}"}"
for a in "$@"; do
  case "$a" in
    -h|--help) sed -n '2,29p' "$0"; echo; PY=${NTGCALLS_PYTHON:-python3}; exec "$PY" "$SCRIPT" --help ;;
  esac
done

# A Python with ntgcalls and numpy, picked (or set up) as the interop test does;
# NTGCALLS_PYTHON names one.
# shellcheck source=../scripts/python-env.sh
. scripts/python-env.sh
INTEROP_PYTHON=${NTGCALLS_PYTHON:-${INTEROP_PYTHON:-}}
pick_python

# shellcheck source=../scripts/local-server.sh
. scripts/local-server.sh
groupcall_binary compare-video
server_log compare-video

start_local_server "$BIN" "$PY" "$LOG" "${SERVE_ARGS[@]+"${SERVE_ARGS[@]}"}"
echo "compare-video: groupcall serve on $CONTROL (media udp 127.0.0.1:$MEDIA_PORT), python $PY" >&2
# The script bounds each run itself (every wait has a limit, every process a --duration); this
# is the backstop for a hung native library.
timeout -k 5 "${COMPARE_VIDEO_TIMEOUT:-170}" "$PY" "$SCRIPT" --control "$CONTROL" \
  --media-port "$MEDIA_PORT" --server-pid "$SERVER_PID" --bin "$BIN" "$@"
