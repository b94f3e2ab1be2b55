#!/usr/bin/env bash
# Interop test: two ntgcalls (libwebrtc) participants pass a 1 kHz tone, then camera and screen
# video, through the local groupcall server (`groupcall serve`), joined through its HTTP control API.
#
# Sets up Python with ntgcalls and numpy (reuses a Python that has them, else a venv at
# .venv-interop), builds the binary if it is missing, starts the server on two free loopback
# ports, runs tests/interop/test_ntgcalls.py against it and always stops the server.
#
# Environment: GROUPCALL_BIN (the binary to run), NTGCALLS_VERSION (default 3.0.5, the version
# docs/protocol.md §12 was observed with), INTEROP_PYTHON (a python that already has both packages).
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=../../scripts/python-env.sh
. scripts/python-env.sh
pick_python

if [ -n "${GROUPCALL_BIN:-}" ]; then
  BIN=$GROUPCALL_BIN
  [ -x "$BIN" ] || { echo "interop: GROUPCALL_BIN=$BIN is not an executable" >&2; exit 1; }
else
  BIN=${CARGO_TARGET_DIR:-target}/debug/groupcall
  # Always: a no-op when it is current, and never a stale binary from an older checkout.
  cargo build -q -p groupcall-cli --bin groupcall ${GROUPCALL_CARGO_FEATURES:+--features "$GROUPCALL_CARGO_FEATURES"}
fi

# shellcheck source=../../scripts/local-server.sh
. scripts/local-server.sh
server_log interop 40

# docs/protocol.md §12.6: offered all three, libwebrtc picks AES_CM_128_HMAC_SHA1_80; each GCM profile
# works when it is the only one offered. Run the test once per case and check, in the server's
# log, which profile both participants' connections negotiated.
passed=0
failed=0

# Runs one Python test (its arguments after the time limit) with a backstop for a hung native
# library, and adds its `interop: N passed, M failed` summary to the totals. A test that died
# after printing its summary still counts as a failure.
#
# ntgcalls itself sometimes dies of heap corruption (`malloc_consolidate(): unaligned fastbin
# chunk detected`, SIGABRT) as it tears down, after every check has passed. A test whose Python
# process died of SIGABRT or SIGSEGV runs once more, saying so; a second crash counts as a failure.
run_py() {
  local limit=$1
  shift
  local out rc=0 p f attempt
  out=$(mktemp -t groupcall-interop-out.XXXXXX)
  for attempt in 1 2; do
    rc=0
    timeout -k 5 "$limit" "$PY" "$@" | tee "$out" || rc=$?
    if [ "$attempt" -eq 1 ] && { [ "$rc" -eq 134 ] || [ "$rc" -eq 139 ]; }; then
      echo "interop: the ntgcalls process crashed (exit $rc: signal $((rc - 128))); running $1 once more"
      continue
    fi
    break
  done
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "interop: $1 hung and was killed after $limit s" >&2
  fi
  read -r p f < <(sed -n 's/^interop: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$out" | tail -n 1)
  rm -f "$out"
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-1}))
  if [ "$rc" -ne 0 ] && [ "${f:-1}" -eq 0 ]; then failed=$((failed + 1)); fi
}

for case in "all:AES_CM_128_HMAC_SHA1_80" "aes128-gcm:AEAD_AES_128_GCM" \
            "aes256-gcm:AEAD_AES_256_GCM" "sha1-80:AES_CM_128_HMAC_SHA1_80"; do
  offer=${case%%:*}
  want=${case#*:}
  if [ "$offer" = all ]; then srtp_args=(); else srtp_args=(--srtp "$offer"); fi
  start_local_server "$BIN" "$PY" "$LOG" -v "${srtp_args[@]}"
  echo "interop: server offers SRTP: $offer; groupcall serve on $CONTROL (media udp 127.0.0.1:$MEDIA_PORT), python $PY"
  # The test bounds itself (55 s); the limit is the backstop.
  run_py 75 tests/interop/test_ntgcalls.py --control "$CONTROL"
  stop_local_server
  got=$(grep -c "participant connected, SRTP $want" "$LOG" || true)
  if [ "$got" -ge 2 ]; then
    echo "ok    both ntgcalls connections negotiated $want"
    passed=$((passed + 1))
  else
    echo "FAIL  expected both connections on $want; the server log says: $(grep -o 'participant connected, SRTP [A-Z0-9_]*' "$LOG" | tr '\n' ';')"
    failed=$((failed + 1))
  fi
done
# Video (docs/protocol.md §1.2-1.4, §5.2-5.3): A publishes a camera, or a screen through its
# presentation connection; B decodes it. With H.264 offered (the default) libwebrtc sends H.264;
# offered only VP8, it must send VP8.
for case in "camera:" "camera:--video-codec vp8" "screen:" "screen:--video-codec vp8"; do
  kind=${case%%:*}
  read -r -a server_args <<<"${case#*:}"
  start_local_server "$BIN" "$PY" "$LOG" -v "${server_args[@]}"
  echo "interop: video, $kind, server ${server_args[*]:-offering every codec}; groupcall serve on $CONTROL"
  # The test bounds itself (60 s).
  run_py 80 tests/interop/test_ntgcalls_video.py --control "$CONTROL" --kind "$kind"
  stop_local_server
  if [ "${server_args[*]}" = "--video-codec vp8" ]; then want=VP8; else want=H264; fi
  got=$(grep -o 'participant sends [A-Z0-9]* video' "$LOG" | sort -u | tr '\n' ';')
  if [ "$got" = "participant sends $want video;" ]; then
    echo "ok    A's $kind went out as $want"
    passed=$((passed + 1))
  else
    echo "FAIL  expected A's $kind as $want only; the server log says: $got"
    failed=$((failed + 1))
  fi
  # docs/protocol.md §6: libwebrtc opens the data channel over our SCTP and says what it wants.
  channels=$(grep -c "participant's data channel open" "$LOG" || true)
  if [ "$channels" -ge 2 ]; then
    echo "ok    both ntgcalls opened the data channel ($channels channels)"
    passed=$((passed + 1))
  else
    echo "FAIL  expected both ntgcalls' data channels open; the server log has $channels"
    failed=$((failed + 1))
  fi
done
# This engine's video against libwebrtc: `groupcall join --video pattern` publishes and ntgcalls
# decodes it (frame numbers, size, colours); ntgcalls publishes and `groupcall join
# --record-video-dir` records it to Y4M.
start_local_server "$BIN" "$PY" "$LOG" -v
echo "interop: video, this engine and ntgcalls both ways; groupcall serve on $CONTROL"
# The test bounds itself (60 s).
run_py 80 tests/interop/test_engine_video.py --control "$CONTROL" --bin "$BIN"
stop_local_server
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
