#!/usr/bin/env bash
# groupcall against ntgcalls, same scenario, same run: builds the release binary, runs
# `groupcall bench-load` (the local server and N groupcall participants in one process), then
# starts `groupcall serve` on free loopback ports and runs benches/ntgcalls_load.py (N ntgcalls
# participants in one Python process) against it, and prints both sets of figures and the
# ratios ntgcalls / groupcall.
#
# Usage: benches/compare.sh [-n N] [--seconds S] [--warmup W] [--scenario LIST]
#                           [--probes K] [--dtls-delay-ms MS] [--preset voice|lean|music]
#                           [--packet-ms 20|40|60] [--runs R]
# LIST: one or more of one-speaker (N participants in one call, one speaks), all-speak (all
# speak), many-calls (N calls in one process, each a bot playing a file to one listener outside
# the measured part), separated by commas. The output ends with one line per scenario:
#   ratio cpu_per_call ntgcalls/groupcall: X.XX (scenario=..., n=...)
# Defaults: N=10, 15 s measured after 2 s of warm-up, one-speaker, every listener a probe (it
# takes the received audio: an application sink in groupcall, ntgcalls' EXTERNAL playback sink
# into Python), and a server DTLS start delay of 50 ms for both (libwebrtc needs it; `groupcall
# serve` defaults to it). --probes 0 compares listeners that take no audio. --preset is
# groupcall's speakers' encoder preset (default voice; see `groupcall join --help`); ntgcalls
# sends with its own settings either way; --packet-ms sets groupcall's audio per packet
# (ntgcalls sends 60 ms). --runs R runs each side R times, alternating, and
# compares the medians (default 3: this machine's CPU figures drift by a third between runs,
# ntgcalls' more than groupcall's, so one run can mislead; a failed ntgcalls run is reported
# and left out).
#
# With one-speaker, each side first measures its speaker alone (5 s, before any listener joins):
# "CPU per listener" is what each listener adds to that, the engine's cost of one more person
# hearing the call.
#
# CPU is the participants' alone on both sides: ntgcalls' process does not hold the server, and
# bench-load subtracts its in-process server's threads (and its audio pusher thread). RSS of
# bench-load's process includes the server's; its per-participant figure includes the server's
# share too, so the ratio of RSS per participant is, if anything, unfavourable to groupcall.
#
# Environment: GROUPCALL_BIN (skip the build, use this binary), NTGCALLS_PYTHON (a python
# with ntgcalls 3.0.5 and numpy; default: .venv-interop, then python3, else .venv-interop is made),
# NTGCALLS_CONNECT_LIMIT (seconds an ntgcalls call may take to connect before it is left and
# joined once more; default 10).
set -euo pipefail
cd "$(dirname "$0")/.."

N=10
SECS=15
WARMUP=2
SCENARIO=one-speaker
PROBES=
DTLS_DELAY_MS=50
PRESET=voice
RUNS=3
PACKET_MS=
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--participants) N=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --scenario) SCENARIO=$2; shift 2 ;;
    --probes) PROBES=$2; shift 2 ;;
    --dtls-delay-ms) DTLS_DELAY_MS=$2; shift 2 ;;
    --preset) PRESET=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --packet-ms) PACKET_MS=$2; shift 2 ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "compare: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in "$N" "$SECS" "$WARMUP" "${PROBES:-0}" "$DTLS_DELAY_MS" "$RUNS"; do
  case "$v" in
    ''|*[!0-9]*) echo "compare: '$v' is not a whole number" >&2; exit 2 ;;
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
groupcall_binary compare
OUT=$(mktemp -d -t groupcall-compare.XXXXXX)
cleanup() {
  local rc=$?
  stop_local_server
  if [ "$rc" -ne 0 ] && [ -s "$OUT/server.log" ]; then
    echo "---- groupcall serve log (last 20 lines) ----" >&2
    tail -n 20 "$OUT/server.log" >&2
  fi
  rm -rf "$OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Both tools measure a one-speaker call's speaker alone for 5 s (after 1 s) before the
# listeners join: what each listener adds is "CPU per listener".
LIMIT=$((WARMUP + SECS + N * 4 + 66))
IFS=, read -r -a SCENARIOS <<<"$SCENARIO"
RATIOS=()
for SC in "${SCENARIOS[@]}"; do
  case "$SC" in
    one-speaker|all-speak|many-calls) ;;
    *) echo "compare: unknown scenario '$SC' (one-speaker, all-speak, many-calls)" >&2; exit 2 ;;
  esac
  if [ "$SC" = many-calls ]; then WHAT="$N calls"; else WHAT="$N participants"; fi

  for R in $(seq 1 "$RUNS"); do
    echo "==== groupcall bench-load: $WHAT, $SC (run $R of $RUNS) ===="
    timeout -k 5 "$LIMIT" "$BIN" bench-load -n "$N" --scenario "$SC" --seconds "$SECS" \
      --warmup "$WARMUP" ${PROBES:+--probes "$PROBES"} --dtls-delay-ms "$DTLS_DELAY_MS" \
      --preset "$PRESET" ${PACKET_MS:+--packet-ms "$PACKET_MS"} | tee "$OUT/groupcall-$SC-$R.log"

    start_local_server "$BIN" "$PY" "$OUT/server.log" --dtls-delay-ms "$DTLS_DELAY_MS"
    echo
    echo "==== ntgcalls ($PY) against groupcall serve on $CONTROL: $WHAT, $SC (run $R of $RUNS) ===="
    if ! timeout -k 5 "$LIMIT" "$PY" benches/ntgcalls_load.py --control "$CONTROL" -n "$N" \
      --scenario "$SC" --seconds "$SECS" --warmup "$WARMUP" ${PROBES:+--probes "$PROBES"} \
      >"$OUT/ntgcalls-$SC-$R.out" 2>&1; then
      cat "$OUT/ntgcalls-$SC-$R.out"
      echo "compare: ntgcalls run $R failed (above); it is left out of the medians"
    else
      cat "$OUT/ntgcalls-$SC-$R.out"
      mv "$OUT/ntgcalls-$SC-$R.out" "$OUT/ntgcalls-$SC-$R.log"
    fi
    stop_local_server
    echo
  done

  echo
  "$PY" - "$OUT" "$SC" "$N" >"$OUT/table-$SC" <<'EOF'
import glob, json, statistics, sys

def last_json(path):
    for line in reversed(open(path).read().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None

def runs(side):
    found = [last_json(p) for p in sorted(glob.glob(f"{sys.argv[1]}/{side}-{sys.argv[2]}-*.log"))]
    found = [f for f in found if f]
    if not found:
        sys.exit(f"compare: no {side} run gave figures")
    return found

def median_of(figs):
    # Per key, the median of the runs' numbers (the first run's value for anything else).
    out = dict(figs[0])
    for k, v in figs[0].items():
        vals = [f.get(k) for f in figs]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
            out[k] = statistics.median(vals)
    out["runs"] = len(figs)
    return out

g_runs, t_runs = runs("groupcall"), runs("ntgcalls")
g, t = median_of(g_runs), median_of(t_runs)
n = int(sys.argv[3])
many = g["scenario"] == "many-calls"
# In the other scenarios one call holds all N participants: its CPU is N times theirs.
for fig in (g, t):
    if fig.get("cpu_per_call_pct") is None and fig.get("cpu_per_participant_pct") is not None:
        fig["cpu_per_call_pct"] = fig["cpu_per_participant_pct"] * n
rows = [
    ("CPU per call (% of a core)", "cpu_per_call_pct"),
    ("CPU per participant (% of a core)", "cpu_per_participant_pct"),
    ("CPU per listener (% of a core)", "cpu_per_listener_pct"),
    ("CPU, the speaker alone (% of a core)", "cpu_speakers_alone_pct"),
    ("peak RSS of the process (MiB)", "peak_rss_mib"),
    ("RSS per extra " + ("call" if many else "participant") + " (MiB)", "rss_per_participant_mib"),
    ("join-to-connected median (ms)", "join_ms_median"),
    ("join-to-connected p95 (ms)", "join_ms_p95"),
]
print(f"==== {n} {'calls' if many else 'participants'}, {g['scenario']}, "
      f"{g['seconds']:.0f} s measured; medians of {g['runs']} groupcall and {t['runs']} ntgcalls runs ====")
if len(g_runs) > 1 or len(t_runs) > 1:
    key = "cpu_per_call_pct" if many else "cpu_per_participant_pct"
    print("CPU each run (% of a core): groupcall " + ", ".join(f"{f[key]:.3f}" for f in g_runs)
          + "; ntgcalls " + ", ".join(f"{f[key]:.3f}" for f in t_runs))
    if g.get("cpu_per_listener_pct") is not None:
        each = lambda fs: ", ".join("n/a" if f.get("cpu_per_listener_pct") is None
                                    else f"{f['cpu_per_listener_pct']:.3f}" for f in fs)
        print(f"CPU per listener each run (% of a core): groupcall {each(g_runs)}; "
              f"ntgcalls {each(t_runs)}")
print(f"{'':36} {'groupcall':>12} {'ntgcalls':>12} {'ntgcalls/groupcall':>20}")
summary = {"n": n, "scenario": g["scenario"]}
for label, key in rows:
    a, b = g.get(key), t.get(key)
    if a is None and b is None:
        continue
    ratio = b / a if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 else None
    fa = "n/a" if a is None else f"{a:.3f}"
    fb = "n/a" if b is None else f"{b:.3f}"
    fr = "n/a" if ratio is None else f"{ratio:.2f}x"
    print(f"{label:36} {fa:>12} {fb:>12} {fr:>20}")
    summary[key] = {"groupcall": a, "ntgcalls": b, "ratio": ratio}
if g.get("loss_pct") is not None:
    jitter = g.get("jitter_ms_max")
    print(f"groupcall: packets lost {int(g.get('packets_lost') or 0)} ({g['loss_pct']:.3f} %)"
          + ("" if jitter is None else f", listeners' interarrival jitter at most {jitter:.2f} ms"))
if t.get("delivered_mean") is not None:
    print(f"ntgcalls: audio that reached the listeners {100 * t['delivered_mean']:.2f} % "
          f"(worst call {100 * t['delivered_worst']:.2f} %)")
lat = g.get("latency_ms_median")
if lat is not None:
    print(f"groupcall speaker-to-listener latency: median {lat:.1f} ms, "
          f"p95 {g.get('latency_ms_p95'):.1f} ms")
print(json.dumps(summary))
r = summary["cpu_per_call_pct"]["ratio"]
preset = g.get("preset", "voice")
extra = ("" if preset == "voice" else f", preset={preset}") + (
    "" if g.get("packet_ms", 20) == 20 else f", packet_ms={g['packet_ms']}")
print(f"ratio cpu_per_call ntgcalls/groupcall: {'n/a' if r is None else f'{r:.2f}'} "
      f"(scenario={g['scenario']}, n={n}{extra})")
EOF
  head -n -1 "$OUT/table-$SC"
  RATIOS+=("$(tail -n 1 "$OUT/table-$SC")")
  echo
done
# The last lines, one per scenario, for scripts.
printf '%s\n' "${RATIOS[@]}"
