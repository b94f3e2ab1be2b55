# Sourced by scripts that need a `groupcall serve` of their own (the ntgcalls interop test, the
# load comparison): free loopback ports, start, wait until the control API answers, always stop.
#
#   start_local_server BIN PYTHON LOG [extra serve arguments...]
#     sets SERVER_PID, CONTROL (the control API's URL) and MEDIA_PORT; exits the script with a
#     message if the server does not come up within 10 s.
#   stop_local_server
#     stops it (TERM, then KILL after 1 s); safe to call twice. Call it from the EXIT trap.
#   server_log TAG [LINES]
#     sets LOG to a new temporary file for the server's output, and on exit stops the server,
#     shows the log's last LINES (20) lines if the script failed, and removes it.
#   groupcall_binary TOOL
#     sets BIN: $GROUPCALL_BIN, or the release binary, built here; exits with a message naming
#     TOOL if it is not an executable.

SERVER_PID=

groupcall_binary() {
  if [ -n "${GROUPCALL_BIN:-}" ]; then
    BIN=$GROUPCALL_BIN
  else
    echo "$1: building the release binary" >&2
    cargo build --release -q -p groupcall-cli --bin groupcall
    BIN=${CARGO_TARGET_DIR:-target}/release/groupcall
  fi
  [ -x "$BIN" ] || { echo "$1: $BIN is not an executable (set GROUPCALL_BIN, or unset it to build)" >&2; exit 1; }
}

start_local_server() {
  local bin=$1 py=$2 log=$3
  shift 3
  local control_port
  # Another process could take a port before the server binds it; the server then fails at once
  # and says so in the log.
  read -r control_port MEDIA_PORT < <("$py" - <<'PY'
import socket
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.bind(("127.0.0.1", 0))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
print(t.getsockname()[1], u.getsockname()[1])
PY
)
  CONTROL=http://127.0.0.1:$control_port
  "$bin" serve --control "127.0.0.1:$control_port" --media "127.0.0.1:$MEDIA_PORT" "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  # Any HTTP answer (404 for an unknown call is one) means the control API is up.
  for _ in $(seq 1 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "groupcall serve exited before its control API answered; its log:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    if "$py" - "$CONTROL" <<'PY' 2>/dev/null
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/calls/0", timeout=1)
except urllib.error.HTTPError:
    pass
PY
    then
      return 0
    fi
    sleep 0.1
  done
  echo "the control API at $CONTROL did not answer within 10 s" >&2
  exit 1
}

stop_local_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

server_log() {
  LOG=$(mktemp -t "groupcall-$1-server.XXXXXX")
  SERVER_LOG_LINES=${2:-20}
  trap _server_log_exit EXIT
  trap 'exit 130' INT TERM
}

_server_log_exit() {
  local rc=$?
  stop_local_server
  if [ "$rc" -ne 0 ] && [ -s "$LOG" ]; then
    echo "---- groupcall serve log (last $SERVER_LOG_LINES lines) ----" >&2
    tail -n "$SERVER_LOG_LINES" "$LOG" >&2
  fi
  rm -f "$LOG"
  exit "$rc"
}
