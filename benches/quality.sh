#!/usr/bin/env bash
# Audio quality end to end on a clean loopback network, groupcall's encoder presets side by side
# with ntgcalls 3.0.5 (libwebrtc): starts `groupcall serve` on free loopback ports and runs
# benches/quality.py against it. Two generated clips (speech-like, music-like, ~10 s each) go
# through the real server: a groupcall sender with `--preset voice` and with `--preset music`,
# and an ntgcalls sender (FILE source, its own defaults), each heard by a groupcall listener
# (`join --record-dir`) and an ntgcalls listener (EXTERNAL sink). Per row, log-spectral distance
# (lower is better) and SNR (higher is better) after alignment and gain matching, and the Opus
# bitrate the sender sent. How the clips are made and scored: benches/quality.py's docstring.
#
# Usage: benches/quality.sh [--clips speech,music] [--presets voice,lean,music] [--complexity N]
#                           [--sender-args ARGS] [--json FILE] [--out DIR]
#        benches/quality.sh --self-test       (the scoring alone; no server, no ntgcalls)
#        benches/quality.sh --help            (quality.py's help)
# A table, then, as the last line, one JSON object with every figure. The exit status is 1 when
# a session or a score failed. A run takes about 2 minutes (8 calls of ~13 s, one at a time).
#
# Environment: GROUPCALL_BIN (the binary; default: build the release binary), INTEROP_PYTHON and
# NTGCALLS_VERSION (as for tests/interop/run.sh: a Python with ntgcalls and numpy, else
# .venv-interop is made), QUALITY_TIMEOUT (backstop for the whole run, seconds, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."

SCRIPT=benches/quality.py
for a in "$@"; do
  case "$a" in
    # The scoring needs numpy only; do not make a venv with ntgcalls for it.
    --self-test|-h|--help)
      PY=${INTEROP_PYTHON:-}
      if [ -z "$PY" ]; then
        if [ -x .venv-interop/bin/python ]; then PY=.venv-interop/bin/python; else PY=python3; fi
      fi
      exec "$PY" "$SCRIPT" "$a" ;;
  esac
done

# A Python with ntgcalls and numpy, picked (or set up) as the interop test does.
# shellcheck source=../scripts/python-env.sh
. scripts/python-env.sh
pick_python

# shellcheck source=../scripts/local-server.sh
. scripts/local-server.sh
groupcall_binary quality
server_log quality

# One SRTP profile offered, AEAD_AES_128_GCM (both engines take it: tests/interop/run.sh): the
# relay that counts each sender's bytes then knows every packet's tag is 16 bytes, and reports
# the Opus payload rate. The profile changes nothing about the audio.
start_local_server "$BIN" "$PY" "$LOG" --srtp aes128-gcm
echo "quality: groupcall serve on $CONTROL (media udp 127.0.0.1:$MEDIA_PORT), python $PY"
# The script bounds each call itself (connect, play and leave have limits; every groupcall
# process has --duration); this is the backstop for a hung native library.
timeout -k 5 "${QUALITY_TIMEOUT:-600}" "$PY" "$SCRIPT" --control "$CONTROL" --media-port "$MEDIA_PORT" \
  --bin "$BIN" "$@"
