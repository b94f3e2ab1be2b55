#!/usr/bin/env bash
# Interop test: two ntgcalls (libwebrtc) participants pass a 1 kHz tone through the local
# groupcall server (`groupcall serve`), joined through its HTTP control API.
#
# Sets up Python with ntgcalls and numpy (reuses a Python that has them, else a venv at
# .venv-interop), builds the binary if it is missing, starts the server on two free loopback
# ports, runs tests/interop/test_ntgcalls.py against it and always stops the server.
#
# Environment: GROUPCALL_BIN (the binary to run), NTGCALLS_VERSION (default 3.0.5, the version
# docs/protocol.md §12 was observed with), INTEROP_PYTHON (a python that already has both packages).
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.venv-interop
NTGCALLS_VERSION=${NTGCALLS_VERSION:-3.0.5}

has_deps() { "$1" -c 'import ntgcalls, numpy' >/dev/null 2>&1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

make_venv() {
  python3 -m venv "$VENV" >/dev/null 2>&1 && [ -x "$VENV/bin/pip" ] && return 0
  # Debian and Ubuntu ship venv's pip bootstrap separately.
  rm -rf "$VENV"
  if command -v apt-get >/dev/null 2>&1; then
    echo "interop: installing python3-venv" >&2
    as_root apt-get update -qq
    as_root apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV" && [ -x "$VENV/bin/pip" ] && return 0
    rm -rf "$VENV"
  fi
  return 1
}

pick_python() {
  if [ -n "${INTEROP_PYTHON:-}" ]; then
    PY=$INTEROP_PYTHON
  elif [ -x "$VENV/bin/python" ] && has_deps "$VENV/bin/python"; then
    PY=$VENV/bin/python
  elif has_deps python3; then
    PY=python3
  elif make_venv; then
    echo "interop: installing ntgcalls==$NTGCALLS_VERSION and numpy into $VENV" >&2
    "$VENV/bin/pip" install -q "ntgcalls==$NTGCALLS_VERSION" numpy
    PY=$VENV/bin/python
  else
    echo "interop: no venv; installing ntgcalls and numpy with pip --user" >&2
    python3 -m pip install -q --user "ntgcalls==$NTGCALLS_VERSION" numpy ||
      python3 -m pip install -q --user --break-system-packages "ntgcalls==$NTGCALLS_VERSION" numpy
    PY=python3
  fi
  if ! has_deps "$PY"; then
    echo "interop: $PY cannot import ntgcalls and numpy" >&2
    exit 1
  fi
}

pick_python

if [ -n "${GROUPCALL_BIN:-}" ]; then
  BIN=$GROUPCALL_BIN
  [ -x "$BIN" ] || { echo "interop: GROUPCALL_BIN=$BIN is not an executable" >&2; exit 1; }
else
  BIN=${CARGO_TARGET_DIR:-target}/debug/groupcall
  # Always: a no-op when it is current, and never a stale binary from an older checkout.
  cargo build -q -p groupcall-cli --bin groupcall
fi

# shellcheck source=../../scripts/local-server.sh
. scripts/local-server.sh
LOG=$(mktemp -t groupcall-interop-server.XXXXXX)
cleanup() {
  local rc=$?
  stop_local_server
  if [ "$rc" -ne 0 ] && [ -s "$LOG" ]; then
    echo "---- groupcall serve log (last 40 lines) ----" >&2
    tail -n 40 "$LOG" >&2
  fi
  rm -f "$LOG"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# docs/protocol.md §12.6: offered all three, libwebrtc picks AES_CM_128_HMAC_SHA1_80; each GCM profile
# works when it is the only one offered. Run the test once per case and check, in the server's
# log, which profile both participants' connections negotiated.
passed=0
failed=0
for case in "all:AES_CM_128_HMAC_SHA1_80" "aes128-gcm:AEAD_AES_128_GCM" \
            "aes256-gcm:AEAD_AES_256_GCM" "sha1-80:AES_CM_128_HMAC_SHA1_80"; do
  offer=${case%%:*}
  want=${case#*:}
  if [ "$offer" = all ]; then srtp_args=(); else srtp_args=(--srtp "$offer"); fi
  start_local_server "$BIN" "$PY" "$LOG" -v "${srtp_args[@]}"
  echo "interop: server offers SRTP: $offer; groupcall serve on $CONTROL (media udp 127.0.0.1:$MEDIA_PORT), python $PY"
  out=$(mktemp -t groupcall-interop-out.XXXXXX)
  rc=0
  # The test bounds itself (55 s); this is the backstop for a hung native library.
  timeout -k 5 75 "$PY" tests/interop/test_ntgcalls.py --control "$CONTROL" | tee "$out" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "interop: the Python test hung and was killed after 75 s" >&2
  fi
  read -r p f < <(sed -n 's/^interop: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$out" | tail -n 1)
  rm -f "$out"
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-1}))
  # A test that died after printing its summary still counts as a failure.
  if [ "$rc" -ne 0 ] && [ "${f:-1}" -eq 0 ]; then failed=$((failed + 1)); fi
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
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
