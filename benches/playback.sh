#!/usr/bin/env bash
# What a music bot pays per call to play an MP3, groupcall against ntgcalls, side by side in one
# run: starts `groupcall serve` on free loopback ports and, one after another, each in a call of
# its own with a recording listener (`groupcall join --record`), runs one player:
#   in-process  groupcall join --local URL --as 1000 CALL --play song.mp3 --quiet
#               (the MP3 decoded in-process, by symphonia)
#   ffmpeg      the same with --ffmpeg (decoded by an ffmpeg child process)
#   ntgcalls    benches/ntgcalls_play.py: one NTgCalls playing the file through its SHELL media
#               source running `ffmpeg -i song.mp3 -f s16le -ac 2 -ar 48000 -v quiet pipe:1`, as
#               py-tgcalls does (ffmpeg is a child of the Python process)
#
# Usage: benches/playback.sh [--seconds S] [--warmup W] [--song FILE] [--min-rms-dbfs DB]
#                            [--stereo]
# Defaults: 20 s measured after 2 s of warm-up (counted from when the player is playing: the
# source_start of its --clock-log, ntgcalls' CONNECTED), a generated 60 s MP3 (chords, a melody,
# pink noise; 44.1 kHz stereo 128 kbit/s), -40 dBFS. --stereo makes the groupcall players send
# stereo (default mono, as Telegram's apps; ntgcalls is given 2 channels, as py-tgcalls does).
#
# Measured per player, over the window: CPU of the player process plus its descendants (ffmpeg)
# from /proc/PID/stat (utime+stime, and cutime+cstime for children that exited), as % of one
# core; RSS (VmRSS of the player plus its descendants) sampled every 0.5 s, median and max, and
# the median of its anonymous part (RssAnon: not library or file pages, which several players
# would share; ffmpeg's RSS is mostly its libraries); the same per process name;
# time to first packet, groupcall only: its --clock-log source_start (the first RTP packet sent)
# minus the wall clock just before the process was spawned (ntgcalls has no hook for its first
# packet: n/a); "heard": the first audible 10 ms at the listener minus the same spawn time, for
# all three (it includes process start: for ntgcalls the interpreter and the import of ntgcalls,
# shown apart). A run is reported BROKEN, not measured, when the listener's recording over the
# window is under --min-rms-dbfs, or the player stopped or never played. An idle Python
# interpreter and an idle Python holding ntgcalls (imported, one NTgCalls) are measured too, and
# the ntgcalls RSS is also given net of them. The server and the listener are not measured.
# The last line is one JSON object with the figures; the exit status is 1 if a run was BROKEN.
#
# Environment: GROUPCALL_BIN (skip the build, use this binary), NTGCALLS_PYTHON (a python with
# ntgcalls 3.0.5 and numpy; default: .venv-interop, then python3, else .venv-interop is made), FFMPEG (default ffmpeg).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=20
WARMUP=2
SONG=
MIN_RMS_DBFS=-40
STEREO=
BASE_SECS=5
START_LIMIT=15
FFMPEG=${FFMPEG:-ffmpeg}
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --song) SONG=$2; shift 2 ;;
    --min-rms-dbfs) MIN_RMS_DBFS=$2; shift 2 ;;
    --stereo) STEREO=--stereo; shift ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    *) echo "playback: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in "$SECS" "$WARMUP"; do
  case "$v" in
    ''|*[!0-9]*) echo "playback: '$v' is not a whole number" >&2; exit 2 ;;
  esac
done
[ "$SECS" -gt 0 ] || { echo "playback: --seconds must be > 0" >&2; exit 2; }
case "$MIN_RMS_DBFS" in
  -[0-9]*) ;;
  *) echo "playback: --min-rms-dbfs takes a negative number of dB, not '$MIN_RMS_DBFS'" >&2; exit 2 ;;
esac
command -v "$FFMPEG" >/dev/null || { echo "playback: $FFMPEG is not on the PATH" >&2; exit 1; }

# A Python with ntgcalls and numpy, picked (or set up) as the interop test does;
# NTGCALLS_PYTHON names one.
# shellcheck source=../scripts/python-env.sh
. scripts/python-env.sh
INTEROP_PYTHON=${NTGCALLS_PYTHON:-${INTEROP_PYTHON:-}}
pick_python

# shellcheck source=../scripts/local-server.sh
. scripts/local-server.sh
groupcall_binary playback
OUT=$(mktemp -d -t groupcall-playback.XXXXXX)
PIDS=()

# The process and everything under it, children first.
tree_of() {
  local p c
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    tree_of "$c"
  done
  echo "$1"
}

# Ask a process we started to leave (SIGINT: groupcall join leaves the call and finishes its
# recording; ntgcalls_play.py stops the call), then TERM and KILL it and what it started.
stop_proc() {
  local pid=$1 tree
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  if kill -0 "$pid" 2>/dev/null; then
    tree=$(tree_of "$pid")
    # shellcheck disable=SC2086
    kill -TERM $tree 2>/dev/null || true
    sleep 1
    # shellcheck disable=SC2086
    kill -KILL $tree 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  untrack "$pid"
}

# Forget a process once it is stopped and waited for, so that cleanup never signals its PID
# after the system has reused it.
untrack() {
  local p kept=()
  for p in "${PIDS[@]}"; do
    [ "$p" = "$1" ] || kept+=("$p")
  done
  PIDS=("${kept[@]}")
}

cleanup() {
  local rc=$? p
  for p in "${PIDS[@]}"; do
    stop_proc "$p"
  done
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

now_us() { date +%s%6N; }

# The helpers: /proc sampling, the recording's check and the report.
cat >"$OUT/tools.py" <<'EOF'
import json, math, os, statistics, sys, time, wave

TICK = os.sysconf("SC_CLK_TCK")


def children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.append(p)
            todo += children(p)
    return seen


def cpu_ticks(pid):
    """utime+stime, and cutime+cstime: children that exited and were waited for."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return sum(int(x) for x in fields[11:15])


def memory_kb(pid):
    """VmRSS and RssAnon (the part no other process could share: not library or file pages)."""
    got = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "RssAnon:")):
                    got[line.split(":")[0]] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return got.get("VmRSS", 0), got.get("RssAnon", 0)


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def measure(pid, warmup, seconds, out):
    """CPU of the process tree over the window, RSS of the tree every 0.5 s; both also per
    process name (a process that exited is counted in its parent's cutime)."""
    pid = int(pid)
    time.sleep(float(warmup))

    def snapshot():
        by = {}
        for p in tree(pid):
            name = comm(p)
            cpu, (rss, anon) = cpu_ticks(p), memory_kb(p)
            c, r, a = by.get(name, (0, 0, 0))
            by[name] = (c + cpu, r + rss, a + anon)
        return by

    first = snapshot()
    t0_us, m0 = time.time_ns() // 1000, time.monotonic()
    samples, alive, last = [first], True, first
    end = m0 + float(seconds)
    while True:
        nxt = min(end, m0 + 0.5 * len(samples))
        time.sleep(max(0.0, nxt - time.monotonic()))
        if not os.path.exists(f"/proc/{pid}"):
            alive = False
            break
        last = snapshot()
        samples.append(last)
        if time.monotonic() >= end:
            break
    m1, t1_us = time.monotonic(), time.time_ns() // 1000
    window = m1 - m0
    total = lambda s, i: sum(v[i] for v in s.values())
    cpu = (total(last, 0) - total(first, 0)) / TICK if alive else None
    rss = [total(s, 1) / 1024.0 for s in samples]
    anon = [total(s, 2) / 1024.0 for s in samples]
    names = sorted({n for s in samples for n in s})
    procs = {}
    for n in names:
        c = (last.get(n, (0,))[0] - first.get(n, (0,))[0]) / TICK if alive else None
        procs[n] = {
            "cpu_pct": None if c is None else 100.0 * c / window,
            "rss_med_mib": statistics.median(s.get(n, (0, 0))[1] for s in samples) / 1024.0,
        }
    json.dump({
        "t0_us": t0_us, "t1_us": t1_us, "window_s": window, "alive": alive,
        "cpu_s": cpu, "cpu_pct": None if cpu is None else 100.0 * cpu / window,
        "rss_med_mib": statistics.median(rss), "rss_max_mib": max(rss),
        "anon_med_mib": statistics.median(anon), "samples": len(samples), "procs": procs,
    }, open(out, "w"))


def first_event(path, name):
    try:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                e = json.loads(line)
                if e.get("event") == name:
                    return e["unix_us"]
    except (OSError, ValueError):
        pass
    return None


def dbfs(rms):
    return -200.0 if rms <= 0 else 20 * math.log10(rms / 32768.0)


def check(wav, clock, spawn_us, measured, out, min_dbfs):
    """The listener's recording: RMS and silent 20 ms blocks over the measured window, and the
    first audible 10 ms after the player was spawned."""
    import numpy as np
    r = {"ok": False}
    try:
        start = first_event(clock, "record_start")
        m = json.load(open(measured))
        w = wave.open(wav)
        rate, ch = w.getframerate(), w.getnchannels()
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
        x = x[: len(x) // ch * ch].reshape(-1, ch).mean(axis=1)
    except Exception as e:  # a missing or cut recording is reported, not a traceback
        r["why"] = f"no usable recording ({type(e).__name__}: {e})"
        json.dump(r, open(out, "w"))
        return
    if start is None:
        r["why"] = "the listener logged no record_start"
        json.dump(r, open(out, "w"))
        return
    at = lambda us: max(0, int((us - start) * rate / 1e6))
    seg = x[at(m["t0_us"]):at(m["t1_us"])]
    block = rate // 50
    if len(seg) < block:
        r["why"] = "the recording does not cover the measured window"
        json.dump(r, open(out, "w"))
        return
    b = seg[: len(seg) // block * block].reshape(-1, block)
    rms = float(np.sqrt(np.mean(seg ** 2)))
    r["rms_dbfs"] = dbfs(rms)
    r["silent_pct"] = 100.0 * float(np.mean(np.sqrt(np.mean(b ** 2, axis=1)) < 32768 * 10 ** (-60 / 20)))
    ten = rate // 100
    tail = x[at(int(spawn_us)):]
    tb = tail[: len(tail) // ten * ten].reshape(-1, ten)
    loud = np.nonzero(np.sqrt(np.mean(tb ** 2, axis=1)) > 32768 * 10 ** (float(min_dbfs) / 20))[0]
    if len(loud):
        heard = start + (at(int(spawn_us)) + int(loud[0]) * ten) * 1e6 / rate
        r["heard_ms"] = (heard - int(spawn_us)) / 1000.0
    r["ok"] = True
    json.dump(r, open(out, "w"))


def report(outdir, min_dbfs, secs, warmup):
    min_dbfs = float(min_dbfs)
    load = lambda name: json.load(open(os.path.join(outdir, name))) if os.path.exists(os.path.join(outdir, name)) else {}
    rows, broken = [], 0
    for key, label in (("inproc", "groupcall in-process"), ("ffmpeg", "groupcall --ffmpeg"), ("ntgcalls", "ntgcalls SHELL ffmpeg")):
        m, c, s = load(f"{key}.measure.json"), load(f"{key}.check.json"), load(f"{key}.start.json")
        why = s.get("why") or (None if m.get("alive", False) else "the player stopped while measured") \
            or (None if c.get("ok") else c.get("why", "no check of the recording"))
        if why is None and c["rms_dbfs"] < min_dbfs:
            why = f"the listener heard {c['rms_dbfs']:.1f} dBFS RMS, under {min_dbfs:.0f}"
        rows.append({"key": key, "label": label, "m": m, "c": c, "s": s, "why": why})
        broken += why is not None
    f = lambda v, fmt: "n/a" if v is None else format(v, fmt)
    print(f"==== one player per call, {secs} s measured after {warmup} s of warm-up ====")
    print(f"{'player':22} {'CPU %core':>9} {'RSS med':>7} {'RSS max':>7} {'anon med':>8} {'1st pkt ms':>10} "
          f"{'heard ms':>8} {'RMS dBFS':>8} {'silent%':>7}  per process: CPU %core/RSS med MiB")
    for r in rows:
        m, c, s = r["m"], r["c"], r["s"]
        if r["why"]:
            print(f"{r['label']:22} BROKEN: {r['why']}")
            continue
        per = ", ".join(f"{n} {f(p['cpu_pct'], '.2f')}/{p['rss_med_mib']:.1f}" for n, p in m["procs"].items())
        print(f"{r['label']:22} {f(m['cpu_pct'], '.2f'):>9} {f(m['rss_med_mib'], '.1f'):>7} "
              f"{f(m['rss_max_mib'], '.1f'):>7} {f(m.get('anon_med_mib'), '.1f'):>8} "
              f"{f(s.get('first_packet_ms'), '.0f'):>10} {f(c.get('heard_ms'), '.0f'):>8} "
              f"{f(c['rms_dbfs'], '.1f'):>8} {f(c['silent_pct'], '.1f'):>7}  {per}")
    by = {r["key"]: r for r in rows}
    val = lambda k, what: None if by[k]["why"] else by[k]["m"].get(what)
    n = by["ntgcalls"]["s"]
    if not by["ntgcalls"]["why"] and n.get("import_ms") is not None:
        heard = by["ntgcalls"]["c"].get("heard_ms")
        print(f"ntgcalls: interpreter start and import {n['import_ms']:.0f} ms, create_call to CONNECTED "
              f"{f(n.get('connect_ms'), '.0f')} ms, create_call to heard "
              f"{f(None if heard is None else heard - n['create_ms'], '.0f')} ms; first packet n/a "
              f"(ntgcalls has no hook for it)")
    a, b = by["inproc"]["s"].get("first_packet_ms"), by["ffmpeg"]["s"].get("first_packet_ms")
    if not by["inproc"]["why"] and not by["ffmpeg"]["why"] and a is not None and b is not None:
        print(f"starting through ffmpeg costs {b - a:+.0f} ms to the first packet")
    base = load("baseline.json")
    if base:
        print(f"idle baselines (not subtracted above), RSS/anon MiB: python {f(base.get('python_rss'), '.1f')}/"
              f"{f(base.get('python_anon'), '.1f')}; python holding ntgcalls (imported, one NTgCalls) "
              f"{f(base.get('ntgcalls_rss'), '.1f')}/{f(base.get('ntgcalls_anon'), '.1f')}, "
              f"{f(base.get('ntgcalls_cpu'), '.2f')} % CPU")
    ratio = lambda x, y: "n/a" if x is None or y is None or y <= 0 else f"{x / y:.2f}"
    cin, rin = val("inproc", "cpu_pct"), val("inproc", "rss_med_mib")
    print(f"ratio cpu ffmpeg/in-process: {ratio(val('ffmpeg', 'cpu_pct'), cin)}")
    print(f"ratio cpu ntgcalls/in-process: {ratio(val('ntgcalls', 'cpu_pct'), cin)}")
    print(f"ratio rss ffmpeg/in-process: {ratio(val('ffmpeg', 'rss_med_mib'), rin)}")
    print(f"ratio rss ntgcalls/in-process: {ratio(val('ntgcalls', 'rss_med_mib'), rin)}")
    ain = val("inproc", "anon_med_mib")
    print(f"ratio rss anon ffmpeg/in-process: {ratio(val('ffmpeg', 'anon_med_mib'), ain)}")
    print(f"ratio rss anon ntgcalls/in-process: {ratio(val('ntgcalls', 'anon_med_mib'), ain)}")
    nr = val("ntgcalls", "rss_med_mib")
    for label, k in (("idle python", "python_rss"), ("idle python+ntgcalls", "ntgcalls_rss")):
        net = None if nr is None or base.get(k) is None else nr - base[k]
        print(f"ratio rss ntgcalls net of {label} ({f(net, '.1f')} MiB)/in-process: {ratio(net, rin)}")
    print(json.dumps({r["key"]: {"broken": r["why"], **{k: r["m"].get(k) for k in ("cpu_pct", "rss_med_mib", "rss_max_mib", "anon_med_mib")},
                                 "first_packet_ms": r["s"].get("first_packet_ms"), "heard_ms": r["c"].get("heard_ms"),
                                 "rms_dbfs": r["c"].get("rms_dbfs")} for r in rows} | {"baseline": base}))
    sys.exit(1 if broken else 0)


def baseline(python_json, ntgcalls_json, out):
    p, n = json.load(open(python_json)), json.load(open(ntgcalls_json))
    json.dump({"python_rss": p["rss_med_mib"], "python_anon": p["anon_med_mib"], "ntgcalls_rss": n["rss_med_mib"],
               "ntgcalls_anon": n["anon_med_mib"], "ntgcalls_cpu": n["cpu_pct"]}, open(out, "w"))


def start(kind, spawn_us, log, out):
    """When the player started: groupcall's first packet, ntgcalls' milestones."""
    spawn = int(spawn_us)
    r = {}
    ms = lambda us: None if us is None else (us - spawn) / 1000.0
    if kind == "groupcall":
        r["first_packet_ms"] = ms(first_event(log, "source_start"))
    else:
        r["import_ms"] = ms(first_event(log, "imported"))
        r["create_ms"] = ms(first_event(log, "create_call"))
        c = first_event(log, "connected")
        r["connect_ms"] = None if c is None or r["create_ms"] is None else ms(c) - r["create_ms"]
    json.dump(r, open(out, "w"))


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
EOF
tools() { "$PY" "$OUT/tools.py" "$@"; }

if [ -z "$SONG" ]; then
  SONG=$OUT/song.mp3
  echo "playback: generating a 60 s MP3 (44.1 kHz stereo, 128 kbit/s)" >&2
  # Chords moving every 2 s with a decaying beat, a melody of plucked notes in each channel, and
  # pink noise under it all.
  chord="196*pow(2,mod(7*floor(t/2),12)/12)"
  beat="(0.5+0.5*exp(-6*mod(t,0.5)))"
  left="$beat*(0.16*sin(2*PI*$chord*t)+0.11*sin(2*PI*$chord*pow(2,4/12)*t)+0.09*sin(2*PI*$chord*pow(2,7/12)*t))+0.12*exp(-10*mod(t,0.25))*sin(2*PI*784*pow(2,mod(floor(t*4)*5,12)/12)*t)"
  right="$beat*(0.11*sin(2*PI*$chord*t)+0.16*sin(2*PI*$chord*pow(2,4/12)*t)+0.09*sin(2*PI*$chord/2*t))+0.1*exp(-10*mod(t+0.125,0.25))*sin(2*PI*587*pow(2,mod(floor(t*4)*3,12)/12)*t)"
  "$FFMPEG" -nostdin -hide_banner -loglevel error -y \
    -f lavfi -i "aevalsrc=exprs='$left|$right':s=44100:d=60" \
    -f lavfi -i "anoisesrc=color=pink:amplitude=0.06:sample_rate=44100:duration=60:seed=7" \
    -filter_complex "[1]pan=stereo|c0=c0|c1=c0[n];[0][n]amix=inputs=2:normalize=0,alimiter=limit=0.9[a]" \
    -map "[a]" -ar 44100 -ac 2 -c:a libmp3lame -b:a 128k "$SONG"
fi
[ -f "$SONG" ] || { echo "playback: no such file: $SONG" >&2; exit 1; }
LENGTH=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$SONG" 2>/dev/null || echo 0)
NEED=$((START_LIMIT + WARMUP + SECS + 2))
if ! awk -v l="$LENGTH" -v n="$NEED" 'BEGIN { exit !(l + 0 >= n) }'; then
  echo "playback: $SONG lasts ${LENGTH:-?} s; the run needs $NEED s (--seconds, --warmup)" >&2
  exit 1
fi
SONG=$(cd "$(dirname "$SONG")" && pwd)/$(basename "$SONG")
BACKSTOP=$((NEED + 20))

start_local_server "$BIN" "$PY" "$OUT/server.log"
echo "playback: groupcall serve on $CONTROL, python $PY, $SONG" >&2

new_call() {
  "$PY" - "$CONTROL" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/calls", data=b'{"peer": 1, "title": "playback"}',
                             method="POST", headers={"content-type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=10))["id"])
PY
}

# Wait until FILE has the JSON event NAME while PID lives; false after START_LIMIT seconds.
# (grep, not Python: polling must not take the CPU the player is starting with.)
wait_event() {
  local file=$1 name=$2 pid=$3
  for _ in $(seq 1 $((START_LIMIT * 20))); do
    grep -Eq "\"event\": ?\"$name\"" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# Idle baselines: a bare interpreter, and one holding ntgcalls.
echo "playback: idle baselines (${BASE_SECS} s each)" >&2
"$PY" -c 'import time; time.sleep(600)' &
P=$!; PIDS+=("$P")
tools measure "$P" 1 "$BASE_SECS" "$OUT/base-python.json"
stop_proc "$P"
"$PY" benches/ntgcalls_play.py --idle 600 >"$OUT/base-ntgcalls.log" 2>&1 &
P=$!; PIDS+=("$P")
if wait_event "$OUT/base-ntgcalls.log" ready "$P"; then
  tools measure "$P" 1 "$BASE_SECS" "$OUT/base-ntgcalls.json"
  stop_proc "$P"
  tools baseline "$OUT/base-python.json" "$OUT/base-ntgcalls.json" "$OUT/baseline.json"
else
  stop_proc "$P"
  echo "playback: the idle ntgcalls baseline did not start:" >&2
  cat "$OUT/base-ntgcalls.log" >&2
fi

# run KEY: one player in a call of its own, with a listener recording it.
run() {
  local key=$1 call lp pp spawn kind log decode=
  [ "$key" != ffmpeg ] || decode=--ffmpeg
  call=$(new_call)
  echo "playback: $key, call $call" >&2
  "$BIN" join --local "$CONTROL" --as 2000 "$call" --record "$OUT/$key.wav" --quiet \
    --clock-log "$OUT/$key.listener.clock" --duration "$BACKSTOP" >"$OUT/$key.listener.log" 2>&1 &
  lp=$!; PIDS+=("$lp")
  if ! wait_event "$OUT/$key.listener.clock" record_start "$lp"; then
    echo "{\"why\": \"the listener did not start recording\"}" >"$OUT/$key.start.json"
    stop_proc "$lp"
    cat "$OUT/$key.listener.log" >&2
    return 0
  fi
  spawn=$(now_us)
  case "$key" in
    inproc|ffmpeg)
      kind=groupcall log=$OUT/$key.clock
      # shellcheck disable=SC2086 # empty or one word
      "$BIN" join --local "$CONTROL" --as 1000 "$call" --play "$SONG" --quiet $STEREO $decode \
        --clock-log "$log" --duration "$BACKSTOP" \
        >"$OUT/$key.log" 2>&1 &
      pp=$!; PIDS+=("$pp")
      wait_event "$log" source_start "$pp" || true ;;
    ntgcalls)
      kind=ntgcalls log=$OUT/$key.log
      "$PY" benches/ntgcalls_play.py --control "$CONTROL" --call "$call" --peer 1000 \
        --file "$SONG" --ffmpeg "$FFMPEG" --duration "$BACKSTOP" >"$log" 2>"$OUT/$key.err" &
      pp=$!; PIDS+=("$pp")
      wait_event "$log" connected "$pp" || true ;;
  esac
  tools start "$kind" "$spawn" "$log" "$OUT/$key.start.json"
  if ! kill -0 "$pp" 2>/dev/null; then
    echo "{\"why\": \"the player exited before playing\"}" >"$OUT/$key.start.json"
    cat "$OUT/$key.log" "$OUT/$key.err" 2>/dev/null | tail -n 5 >&2
  else
    tools measure "$pp" "$WARMUP" "$SECS" "$OUT/$key.measure.json"
  fi
  stop_proc "$pp"
  stop_proc "$lp"
  tools check "$OUT/$key.wav" "$OUT/$key.listener.clock" "$spawn" "$OUT/$key.measure.json" \
    "$OUT/$key.check.json" "$MIN_RMS_DBFS" || true
}

run inproc
run ffmpeg
run ntgcalls

echo
tools report "$OUT" "$MIN_RMS_DBFS" "$SECS" "$WARMUP"
