#!/usr/bin/env python3
"""Video CPU, groupcall against ntgcalls 3.0.5 (libwebrtc), side by side on one local server.

Scenarios (each runs both engines in the same invocation, one after another, against the same
`groupcall serve`; benches/compare-video.sh starts the server):

publish-720p30   One participant publishes a 1280x720 30 fps camera for about WARMUP + SECONDS
                 (default 5 + 10 s after the receiver's first frame); measured: the publisher
                 process's CPU over the last SECONDS (utime+stime of /proc/PID/stat, all its
                 threads) and its RSS (VmRSS every 0.5 s: median and peak).
                   groupcall  `groupcall join CALL --local URL --as 1001 --video FIFO.y4m
                              --duration D` reading the Y4M natively (engine/src/video/source.rs)
                              from a named pipe this script writes the frames into, over and over
                              (a file would need ~1 GB for 25 s of 720p)
                   ntgcalls   a Python process (this script, --worker publish) with one NTgCalls,
                              camera = VideoDescription(EXTERNAL, 1280, 720, 30), pushing the same
                              frames as raw I420 with send_external_frame at 30 fps, paced by
                              asyncio. The frames are preloaded into memory (bytes objects), so
                              Python's own cost is the pacing loop and one call per frame; the
                              figure is the WHOLE process, Python's frame pushing included, with
                              nothing subtracted. Its RSS includes the preloaded frames (shown,
                              and shown net of them) and the interpreter with numpy.
                 A receiver (ntgcalls, --worker receive, not measured) subscribes to the camera as
                 py-tgcalls does (add_incoming_video with the groups the server lists), so that
                 the server forwards it and the publisher really encodes (groupcall encodes only
                 the layers someone wants). Reported as well: the sizes and frame rate that
                 receiver decoded from each publisher, second by second, and the layers each
                 publisher sent. Shown as it is, and flagged NOT LIKE FOR LIKE when a receiver got
                 1280x720 for less than 90 % of the window: against the local server, libwebrtc's
                 bandwidth estimate starts at the answer's x-google-start-bitrate (`groupcall
                 serve --video-start-kbps`, default 1500) and falls from there, dropping ntgcalls'
                 720p layer after ~5 s and its 360p layer after ~11 s, whatever the picture and
                 however idle the machine (5000: 720p for ~10 s; 20000: for the whole run, at the
                 same kbit/s per layer as groupcall's). benches/compare-video.sh
                 --video-start-kbps 20000 gives the like-for-like run.

receive-720p30   One publisher (--receive-publisher, default groupcall: a fixed 720p30, no
                 adaptation) and two receivers at once, both measured over the same SECONDS:
                   groupcall  `groupcall join CALL --local URL --as 3001 --muted --decode-video`
                              (every frame decoded, then dropped); frames from its status line
                              (`video in N frames, D decoded, X dropped`, once a second) and its
                              exit report
                   ntgcalls   --worker receive: PLAYBACK, camera = EXTERNAL sink at native size
                              (0x0), an on_frames callback that only counts frames (ntgcalls
                              hands each decoded I420 frame to Python as a bytes object: that copy
                              is part of its cost)

The pictures (identical for both engines: generated once per process by make_frames with a
fixed seed, and the SHA-1 of the frames checked between this process and the ntgcalls worker):
a loop of LOOP_FRAMES (30, one second) 1280x720 I420 frames: four flat quadrants (the interop
tests' colours), a 640x360 box in the middle with a diagonal luma grating scrolling 8 px a frame
(it loops exactly every 30 frames) over a static chroma ramp, fresh uniform noise (+-12 luma)
over that box in every frame, and a white 64 px vertical bar sweeping across the whole width once
a loop. The noise and the grating make the encoder work (motion search, residuals) as a camera
would; flat areas alone would cost next to nothing.

A counting UDP relay (this process, one front port per participant; --no-meter turns it off)
sits between every participant and the server and counts RTP bytes per SSRC and direction, so
the report shows the uplink kbit/s per simulcast layer each publisher sent (SIM order, lowest
first) and the kbit/s each receiver got (the server forwards whichever layer under the SSRC of
SIM[0], so the downlink's SSRC does not tell the layer; the decoded size does). Also shown: how
busy the whole machine was during each window (/proc/stat) and how much of that was processes
outside this bench, flagged above 15 % of a core, since everything here shares the same cores.

Usage: compare_video.py --control URL --media-port PORT --bin GROUPCALL [--server-pid PID]
       [--scenario publish-720p30,receive-720p30] [--engines groupcall,ntgcalls] [--seconds 10]
       [--warmup 5] [--receive-publisher groupcall|ntgcalls] [--video-start-kbps K (what the
       server was started with, for the report)] [--no-meter] [--out DIR] [--json FILE]
The output: per scenario a table, then one JSON line with every figure, then one line per
scenario for scripts:
  ratio cpu ntgcalls/groupcall: X.XX (scenario=publish-720p30)
  ratio cpu ntgcalls/groupcall: X.XX (scenario=receive-720p30)
(n/a when either side did not run). The exit status is 1 when a run was broken.
"""

import argparse
import asyncio
import hashlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "interop"))
from control_api import Api  # noqa: E402 (tests/interop/control_api.py)

W, H, FPS = 1280, 720, 30
LOOP_FRAMES = 30
SEED = 20240
QUADRANTS = [(60, 90, 160), (120, 200, 100), (170, 60, 120), (220, 140, 200)]  # (Y, U, V)
FRAME_BYTES = W * H * 3 // 2
CHAT_ID = -1001234567890  # ntgcalls' key for the call; never reaches Telegram

PEER_CREATOR = 1
PEER_PUBLISHER = 1001
PEER_RECEIVER_NTG = 2002
PEER_RECEIVER_GC = 3001

CONNECT_LIMIT = 10.0
LISTED_LIMIT = 6.0  # for the server to list a publisher's camera
FIRST_FRAME_LIMIT = 10.0
STOP_LIMIT = 5.0
SAMPLE_EVERY = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")
TAIL = 12  # lines of a process's output shown when a run broke


# ---------------------------------------------------------------------------------------------
# The pictures


def make_frames(n=LOOP_FRAMES, w=W, h=H, seed=SEED):
    """n I420 frames (an (n, w*h*3/2) uint8 array) as the module docstring describes them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cw, ch = w // 2, h // 2
    y0 = np.zeros((h, w), np.uint8)
    u0 = np.zeros((ch, cw), np.uint8)
    v0 = np.zeros((ch, cw), np.uint8)
    for i, (qy, qu, qv) in enumerate(QUADRANTS):
        r, c = divmod(i, 2)
        y0[r * h // 2 : (r + 1) * h // 2, c * w // 2 : (c + 1) * w // 2] = qy
        u0[r * ch // 2 : (r + 1) * ch // 2, c * cw // 2 : (c + 1) * cw // 2] = qu
        v0[r * ch // 2 : (r + 1) * ch // 2, c * cw // 2 : (c + 1) * cw // 2] = qv
    # The box in the middle: a static chroma ramp under a scrolling luma grating and noise.
    bx, by, bw, bh = w // 4, h // 4, w // 2, h // 2
    u0[by // 2 : (by + bh) // 2, bx // 2 : (bx + bw) // 2] = np.linspace(64, 192, bw // 2).astype(np.uint8)
    v0[by // 2 : (by + bh) // 2, bx // 2 : (bx + bw) // 2] = 128
    gy, gx = np.mgrid[0:bh, 0:bw]
    period, step = 48, 8  # 8 px a frame, 240 px a loop of 30 = 5 periods: seamless
    bar_w = 64
    frames = np.empty((n, w * h * 3 // 2), np.uint8)
    for k in range(n):
        y = y0.copy()
        grating = 128 + 60 * np.sin(2 * np.pi * (gx + 2 * gy - step * k * (LOOP_FRAMES / n)) / period)
        noise = rng.integers(-12, 13, size=(bh, bw))
        y[by : by + bh, bx : bx + bw] = np.clip(grating + noise, 16, 235).astype(np.uint8)
        x0 = int(round(k * (w - bar_w) / n))
        y[:, x0 : x0 + bar_w] = 235
        frames[k, : w * h] = y.reshape(-1)
        frames[k, w * h : w * h + cw * ch] = u0.reshape(-1)
        frames[k, w * h + cw * ch :] = v0.reshape(-1)
    return frames


def frames_sha1(frames):
    h = hashlib.sha1()
    for f in frames:
        h.update(memoryview(f))
    return h.hexdigest()


def y4m_header(w=W, h=H, fps=FPS):
    return f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode()


def rewrite_candidates(params, relay):
    """The server's answer with every ICE candidate pointed at the relay (as
    tests/interop/compare_receive.py does; candidate fields are strings)."""
    answer = json.loads(params)
    host, port = relay
    for c in answer.get("transport", {}).get("candidates", []):
        c["ip"] = host
        c["port"] = str(port)
    return json.dumps(answer, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# The ntgcalls workers (one process each: the measured process holds nothing else, and a crash
# of the native library loses one run, not the report)


def emit(event, **fields):
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


async def worker_async(args):
    import ntgcalls
    from ntgcalls import (ConnectionState, FrameData, MediaDescription, MediaSource, NTgCalls, SsrcGroup,
                          StreamDevice, StreamMode, VideoDescription, VideoRotation)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + args.duration
    api = Api(args.control, timeout=5.0)
    calls = NTgCalls()
    lock = threading.Lock()
    counts = {"frames": 0, "sizes": {}, "other": 0, "callbacks": 0}

    def on_connection(chat_id, info):
        if info.state == ConnectionState.CONNECTED:
            emit("connected")
        else:
            emit("state", state=info.state.name)

    calls.on_connection_change(on_connection)

    if args.worker == "publish":
        frames = make_frames()
        sha = frames_sha1(frames)
        data = [bytes(f) for f in frames]  # what send_external_frame takes; the array is freed
        del frames
        emit("ready", sha1=sha, preload_bytes=sum(len(d) for d in data), version=ntgcalls.__version__)
        mode = StreamMode.CAPTURE
        media = MediaDescription(microphone=None, speaker=None, screen=None,
                                 camera=VideoDescription(MediaSource.EXTERNAL, W, H, FPS, "", False))
    else:
        def on_frames(chat_id, mode_, device, frames_):
            # Nothing but counting (and the size, one dict update).
            with lock:
                counts["callbacks"] += 1
                for f in frames_:
                    if device == StreamDevice.CAMERA:
                        d = f.frame_data
                        key = f"{d.width}x{d.height}"
                        counts["frames"] += 1
                        counts["sizes"][key] = counts["sizes"].get(key, 0) + 1
                    else:
                        counts["other"] += 1

        calls.on_frames(on_frames)
        emit("ready", version=ntgcalls.__version__)
        mode = StreamMode.PLAYBACK
        sink = VideoDescription(MediaSource.EXTERNAL, 0, 0, FPS, "", False)  # native size
        media = MediaDescription(microphone=None, speaker=None, camera=sink, screen=sink)

    # py-tgcalls' order: create_call, the sources, the join, connect with the answer.
    payload = await calls.create_call(CHAT_ID)
    await calls.set_stream_sources(CHAT_ID, mode, media)
    ssrc = json.loads(payload)["ssrc"] & 0xFFFFFFFF
    status, answer = await api.call("POST", f"/calls/{args.call}/join", {"peer": args.peer, "params": payload})
    if status != 200 or not isinstance(answer.get("params"), str):
        emit("error", what=f"the server refused the join: HTTP {status}: {answer}")
        return 1
    params = answer["params"]
    if args.via:
        host, port = args.via.rsplit(":", 1)
        params = rewrite_candidates(params, (host, int(port)))
    await calls.connect(CHAT_ID, params, False)
    emit("joined", ssrc=ssrc)

    pushed = {"frames": 0, "late": 0, "errors": 0}

    async def push():
        rotation = VideoRotation.VIDEO_ROTATION_0
        t0, n = time.monotonic(), 0
        while not stop.is_set() and time.monotonic() < deadline:
            due = t0 + n / FPS
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 0.5:  # far behind: start the clock over rather than burst
                t0, n = now, 0
                pushed["late"] += 1
            # ntgcalls makes this the frame's timestamp_ms: libwebrtc's clock (rtc::TimeMillis,
            # CLOCK_MONOTONIC) is what a capturer would stamp.
            fd = FrameData(int(time.monotonic() * 1000), rotation, W, H)
            try:
                await calls.send_external_frame(CHAT_ID, StreamDevice.CAMERA, data[pushed["frames"] % len(data)], fd)
            except Exception as e:
                pushed["errors"] += 1
                if pushed["errors"] == 1:
                    emit("error", what=f"send_external_frame: {type(e).__name__}: {e}")
            pushed["frames"] += 1
            n += 1

    async def subscribe():
        groups = None
        limit = time.monotonic() + LISTED_LIMIT
        while time.monotonic() < limit and not stop.is_set():
            status, info = await api.call("GET", f"/calls/{args.call}")
            mine = [p for p in info.get("participants", []) if p.get("peer") == args.source]
            video = mine[0].get("video") if mine else None
            if video and video.get("source_groups"):
                groups = video
                break
            await asyncio.sleep(0.2)
        if groups is None:
            emit("error", what=f"the server does not list peer {args.source}'s camera")
            return
        ssrc_groups = [SsrcGroup(g["semantics"], [s & 0xFFFFFFFF for s in g["sources"]])
                       for g in groups["source_groups"]]
        got = await calls.add_incoming_video(CHAT_ID, 0, groups["endpoint"], ssrc_groups)
        emit("subscribed", ssrc=got & 0xFFFFFFFF, groups=groups["source_groups"])

    task = asyncio.ensure_future(push() if args.worker == "publish" else subscribe())
    while not stop.is_set() and time.monotonic() < deadline:
        with lock:
            snap = {**counts, "sizes": dict(counts["sizes"])}
        emit("stats", **(pushed if args.worker == "publish" else snap))
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except asyncio.TimeoutError:
            pass
    stop.set()
    try:
        await asyncio.wait_for(task, 2)
    except (asyncio.TimeoutError, Exception):
        pass
    with lock:
        snap = {**counts, "sizes": dict(counts["sizes"])}
    emit("final", **(pushed if args.worker == "publish" else snap))
    try:
        await asyncio.wait_for(calls.stop(CHAT_ID), 2)
    except Exception:
        pass
    return 0


def worker_main(args):
    try:
        rc = asyncio.run(worker_async(args))
    except Exception as e:
        traceback.print_exc()
        emit("error", what=f"{type(e).__name__}: {e}")
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)  # ntgcalls' native threads can keep the interpreter from exiting


# ---------------------------------------------------------------------------------------------
# Processes, /proc


class Proc:
    """A subprocess; its stdout and stderr lines kept with the monotonic time they arrived (and
    written to a log), JSON lines (the workers' events) parsed."""

    def __init__(self, name, argv, log_path):
        self.name, self.argv = name, argv
        self.lines = []  # (t, text)
        self.events = []  # (t, dict)
        self.cond = threading.Condition()
        self.log = open(log_path, "w")
        self.log.write("$ " + " ".join(argv) + "\n")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     start_new_session=True)  # a Ctrl+C of ours is not its
        self.pid = self.proc.pid
        self.readers = [threading.Thread(target=self._read, args=(s,), daemon=True)
                        for s in (self.proc.stdout, self.proc.stderr)]
        for r in self.readers:
            r.start()

    def _read(self, stream):
        for raw in iter(stream.readline, b""):
            t = time.monotonic()
            text = raw.decode(errors="replace").rstrip("\n")
            ev = None
            if text.startswith("{"):
                try:
                    ev = json.loads(text)
                except ValueError:
                    pass
            with self.cond:
                self.lines.append((t, text))
                if isinstance(ev, dict) and "event" in ev:
                    self.events.append((ev.get("t", t), ev))
                self.log.write(f"[{t:.3f}] {text}\n")
                self.cond.notify_all()

    def alive(self):
        return self.proc.poll() is None

    def wait_for(self, pred, limit):
        """The first true pred(self) within limit s (checked on each new line), or None (also when
        the process exits)."""
        deadline = time.monotonic() + limit
        with self.cond:
            while True:
                r = pred(self)
                if r:
                    return r
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not any(x.is_alive() for x in self.readers)):
                    return None
                self.cond.wait(min(left, 0.2))

    def event(self, name):
        return next((e for _, e in self.events if e["event"] == name), None)

    def line(self, pattern):
        rx = re.compile(pattern)
        return next((m for _, text in self.lines for m in [rx.search(text)] if m), None)

    def stop(self, sig=signal.SIGINT):
        """sig, again after half of STOP_LIMIT, KILL after STOP_LIMIT; the output read to the end."""
        for _ in range(2):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
                self.proc.wait(STOP_LIMIT / 2)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                break
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            self.proc.wait()
        for r in self.readers:
            r.join(2)
        self.log.close()
        return self.proc.returncode

    def tail(self, n=TAIL):
        with self.cond:
            return [text for _, text in self.lines[-n:]]


def cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def status_kb(pid, names=("VmRSS", "RssAnon", "RssFile", "VmHWM")):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in names:
                    out[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def machine_ticks():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    total = sum(v[:8])
    return total - idle, total


def median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


class Window:
    """CPU of some processes over [start, end], their RSS sampled every SAMPLE_EVERY s, and how
    busy the machine was: in all, and by processes other than this bench's (the measured ones,
    the `extra` ones: the server, this script and its relay)."""

    def __init__(self, procs, extra=None):
        self.procs = procs  # name -> pid, measured
        self.extra = dict(extra or {})  # name -> pid, CPU only
        self.rss = {n: [] for n in procs}
        self.anon = {n: [] for n in procs}

    def run(self, seconds):
        every = {**self.extra, **self.procs}
        self.t0 = time.monotonic()
        c0 = {n: cpu_ticks(p) for n, p in every.items()}
        m0 = machine_ticks()
        end = self.t0 + seconds
        while True:
            for n, p in self.procs.items():
                s = status_kb(p)
                if "VmRSS" in s:
                    self.rss[n].append(s["VmRSS"] / 1024)
                    self.anon[n].append(s.get("RssAnon", 0) / 1024)
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(SAMPLE_EVERY, left))
        self.t1 = time.monotonic()
        c1 = {n: cpu_ticks(p) for n, p in every.items()}
        m1 = machine_ticks()
        wall = self.t1 - self.t0
        self.cpu = {n: (None if c0[n] is None or c1[n] is None else 100.0 * (c1[n] - c0[n]) / CLK_TCK / wall)
                    for n in every}
        self.hwm = {n: status_kb(p).get("VmHWM", 0) / 1024 or None for n, p in self.procs.items()}
        busy, total = m1[0] - m0[0], m1[1] - m0[1]
        self.cores = os.cpu_count()
        self.machine_pct = 100.0 * busy / total if total else None  # of all cores
        # In % of one core, as the processes' figures.
        self.machine_core_pct = 100.0 * busy / CLK_TCK / wall
        self.ours_pct = sum(v for v in self.cpu.values() if v is not None)
        self.others_pct = max(0.0, self.machine_core_pct - self.ours_pct)
        return self

    def load(self):
        """How busy the machine was, for the report."""
        return {"machine_busy_pct": self.machine_pct, "cores": self.cores,
                "bench_cpu_pct": self.ours_pct, "others_cpu_pct": self.others_pct,
                "extra_cpu_pct": {n: self.cpu.get(n) for n in self.extra}}

    def figures(self, name):
        return {"cpu_pct": self.cpu.get(name), "rss_med_mib": median(self.rss.get(name, [])),
                "rss_max_mib": max(self.rss.get(name) or [0]) or None, "anon_med_mib": median(self.anon.get(name, [])),
                "hwm_mib": self.hwm.get(name)}


def at(series, t):
    """A cumulative count at time t, linearly between the samples (t, value) around it."""
    if not series:
        return None
    if t <= series[0][0]:
        return series[0][1]
    for (ta, a), (tb, b) in zip(series, series[1:]):
        if ta <= t <= tb:
            return a if tb == ta else a + (b - a) * (t - ta) / (tb - ta)
    return series[-1][1]


def worker_series(proc, key):
    return [(t, e[key]) for t, e in proc.events if e["event"] in ("stats", "final") and key in e]


def sizes_in(proc, t0, t1):
    """Frames per decoded size between the stats events nearest t0 and t1."""
    stats = [(t, e["sizes"]) for t, e in proc.events if e["event"] in ("stats", "final") and "sizes" in e]
    if not stats:
        return {}
    before = max((s for s in stats if s[0] <= t0), default=stats[0], key=lambda s: s[0])[1]
    after = min((s for s in stats if s[0] >= t1), default=stats[-1], key=lambda s: s[0])[1]
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}


STATUS_RX = re.compile(r"video in (\d+) frames, (\d+) decoded, (\d+) dropped")
VIDEO_OUT_RX = re.compile(r"video out (\d+) frames, (\d+) layer\(s\), estimate (\d+) kbit/s")


def gc_series(proc, rx, group):
    out = []
    for t, text in proc.lines:
        m = rx.search(text)
        if m:
            out.append((t, int(m.group(group))))
    return out


# ---------------------------------------------------------------------------------------------
# The counting relay


class Meter:
    """A loopback UDP relay between the participants and the server, one front port per
    participant (its own thread): counts RTP bytes and packets per (participant, direction,
    SSRC) with their arrival times, so that a window's rates can be read off."""

    def __init__(self, server):
        self.server = server
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.counts = {}  # (name, "up"|"down", ssrc) -> [bytes, packets]
        self.snaps = []  # (t, copy of counts)
        self.sockets = []
        self.wake_r, self.wake_w = socket.socketpair()
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("stop",))
        self.thread = threading.Thread(target=self._run, name="meter", daemon=True)
        self.thread.start()

    def front(self, name):
        """A new front port for participant `name`: (host, port)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        self.sockets.append(s)
        with self.lock:
            self.sel.register(s, selectors.EVENT_READ, ("front", name, s, {}))
        self.wake_w.send(b"r")  # the selector sees it on its next turn anyway
        return s.getsockname()

    def _count(self, name, direction, data):
        if len(data) < 12 or not 128 <= data[0] <= 191 or 192 <= data[1] <= 223:
            return  # STUN, DTLS, RTCP
        ssrc = int.from_bytes(data[8:12], "big")
        with self.lock:
            c = self.counts.setdefault((name, direction, ssrc), [0, 0])
            c[0] += len(data)
            c[1] += 1

    def _run(self):
        next_snap = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_snap:
                self.snaps.append((now, self.snapshot()))
                next_snap = now + 1.0
            for key, _ in self.sel.select(timeout=max(0.0, next_snap - now)):
                kind = key.data[0]
                try:
                    if kind == "stop":
                        if b"x" in self.wake_r.recv(64):
                            return
                    elif kind == "front":
                        _, name, front, backs = key.data
                        data, client = front.recvfrom(65536)
                        back = backs.get(client)
                        if back is None:
                            back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                            back.bind(("127.0.0.1", 0))
                            back.connect(self.server)
                            back.setblocking(False)
                            backs[client] = back
                            self.sockets.append(back)
                            self.sel.register(back, selectors.EVENT_READ, ("back", name, front, client))
                        back.send(data)
                        self._count(name, "up", data)
                    else:
                        _, name, front, client = key.data
                        data = key.fileobj.recv(65536)
                        front.sendto(data, client)
                        self._count(name, "down", data)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    pass  # an ICMP error from a socket going away
                except Exception:  # a bug in the counting must not stop the relaying
                    traceback.print_exc()

    def snapshot(self):
        with self.lock:
            return {k: list(v) for k, v in self.counts.items()}

    def close(self):
        self.wake_w.send(b"x")
        self.thread.join(2)
        for s in [*self.sockets, self.wake_r, self.wake_w]:
            s.close()


def kbps_between(a, b, seconds, name, direction):
    """{ssrc: kbit/s} of one participant's RTP in one direction between two snapshots."""
    out = {}
    for (n, d, ssrc), (by, _) in b.items():
        if n == name and d == direction:
            delta = by - a.get((n, d, ssrc), [0, 0])[0]
            if delta > 0:
                out[ssrc] = 8.0 * delta / seconds / 1000.0
    return out


def layers_timeline(meter, name, names, since, until, floor_kbps=20.0):
    """Which media layers participant `name` sent, second by second over [since, until], run-length
    encoded: [(label, seconds, mean kbit/s of all its RTP)]."""
    snaps = [(t, c) for t, c in list(meter.snaps) if since - 1.0 <= t <= until + 1.0]
    runs = []
    for (ta, a), (tb, b) in zip(snaps, snaps[1:]):
        rates = by_layer(kbps_between(a, b, tb - ta, name, "up"), names)
        sent = [k for k, v in rates.items() if "rtx" not in k and not k.startswith("ssrc") and v >= floor_kbps]
        label = "+".join(sent) or "nothing"
        total = sum(rates.values())
        if runs and runs[-1][0] == label:
            runs[-1][1] += tb - ta
            runs[-1][2] += total * (tb - ta)
        else:
            runs.append([label, tb - ta, total * (tb - ta)])
    return [(label, secs, kb / secs if secs else 0.0) for label, secs, kb in runs]


def timeline_text(runs):
    return ", ".join(f"{label} {secs:.0f} s ({kbps:.0f} kbit/s)" for label, secs, kbps in runs) or "n/a"


def sizes_timeline(proc):
    """The size a receiver decoded most, second by second from its first frame, run-length
    encoded: [(size, seconds, fps)]."""
    stats = [(t, e["sizes"]) for t, e in proc.events if e["event"] in ("stats", "final") and "sizes" in e]
    first = next((t for t, sz in stats if sum(sz.values()) > 0), None)
    if first is None:
        return []
    buckets = {}
    for (ta, a), (tb, b) in zip(stats, stats[1:]):
        if tb < first:
            continue
        k = int(tb - first)
        d = buckets.setdefault(k, {})
        for size, n in b.items():
            if n - a.get(size, 0) > 0:
                d[size] = d.get(size, 0) + n - a.get(size, 0)
    runs = []
    for k in range(max(buckets) + 1 if buckets else 0):
        d = buckets.get(k, {})
        label = max(d, key=d.get) if d else "no frames"
        if runs and runs[-1][0] == label:
            runs[-1][1] += 1
            runs[-1][2] += sum(d.values())
        else:
            runs.append([label, 1, sum(d.values())])
    return [(label, secs, n / secs) for label, secs, n in runs]


def sizes_timeline_text(runs):
    return ", ".join(f"{label} {secs} s ({fps:.0f} fps)" for label, secs, fps in runs) or "n/a"


def layer_names(video):
    """{ssrc: label} from the groups the server lists: SIM index (lowest layer first, as
    libwebrtc and the engine list them) and their FID retransmission SSRCs."""
    names = {}
    groups = (video or {}).get("source_groups") or []
    sim = next((g["sources"] for g in groups if g.get("semantics") == "SIM"), [])
    for i, s in enumerate(sim):
        names[s & 0xFFFFFFFF] = f"L{i}"
    for g in groups:
        if g.get("semantics") == "FID" and len(g["sources"]) == 2:
            media, rtx = (s & 0xFFFFFFFF for s in g["sources"])
            names[rtx] = f"{names.get(media, media)}-rtx"
    return names


def by_layer(rates, names):
    out = {}
    for ssrc, k in rates.items():
        label = names.get(ssrc, f"ssrc {ssrc}")
        out[label] = out.get(label, 0.0) + k
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# The scenarios


class Feeder:
    """Writes the Y4M header and then the frames, over and over, into a named pipe, until
    stopped or the reader goes away (groupcall reads it as a .y4m file, paced by its own
    publisher thread)."""

    def __init__(self, path, frames):
        self.path, self.frames = path, frames
        self.stop_ev = threading.Event()
        self.written = 0
        self.error = None
        os.mkfifo(path)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        fd = None
        try:
            while fd is None and not self.stop_ev.is_set():
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # ENXIO: no reader yet
                    time.sleep(0.02)
            if fd is None:
                return
            os.set_blocking(fd, True)
            try:
                import fcntl
                fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer wake-ups; best effort
            except OSError:
                pass
            self._write(fd, y4m_header())
            k = 0
            while not self.stop_ev.is_set():
                self._write(fd, b"FRAME\n")
                self._write(fd, memoryview(self.frames[k % len(self.frames)]))
                self.written += 1
                k += 1
        except BrokenPipeError:
            pass
        except OSError as e:
            self.error = str(e)
        finally:
            if fd is not None:
                os.close(fd)

    @staticmethod
    def _write(fd, data):
        view = memoryview(data)
        while len(view):
            view = view[os.write(fd, view):]

    def close(self):
        self.stop_ev.set()
        # A writer blocked on a full pipe whose reader is gone gets EPIPE; one blocked on open
        # polls stop_ev.
        self.thread.join(3)
        try:
            os.unlink(self.path)
        except OSError:
            pass


class Ctx:
    def __init__(self, args, out, frames):
        self.args, self.out, self.frames = args, out, frames
        self.api = Api(args.control, timeout=5.0)
        self.meter = None if args.no_meter else Meter(("127.0.0.1", args.media_port))
        self.procs = []
        self.feeders = []

    def extra_pids(self):
        """Processes of this bench measured for CPU only: the server, this script (the relay and
        the Y4M feeder run in it)."""
        out = {"bench": os.getpid()}
        if self.args.server_pid:
            out["server"] = self.args.server_pid
        return out

    def via(self, name):
        if self.meter is None:
            return None
        host, port = self.meter.front(name)
        return f"{host}:{port}"

    def spawn(self, name, argv):
        p = Proc(name, argv, os.path.join(self.out, f"{name}.log"))
        self.procs.append(p)
        return p

    def worker(self, name, role, call_id, peer, duration, source=None):
        argv = [sys.executable, os.path.abspath(__file__), "--worker", role, "--control", self.args.control,
                "--call", str(call_id), "--peer", str(peer), "--duration", f"{duration:.0f}"]
        if source is not None:
            argv += ["--source", str(source)]
        via = self.via(name)
        if via:
            argv += ["--via", via]
        return self.spawn(name, argv)

    def groupcall(self, name, call_id, peer, duration, extra):
        argv = [self.args.bin, "join", str(call_id), "--local", self.args.control, "--as", str(peer),
                "--duration", f"{duration:.0f}", *extra]
        via = self.via(name)
        if via:
            argv += ["--media-via", via]
        return self.spawn(name, argv)

    def new_call(self, title):
        status, call = self.api.request("POST", "/calls", {"peer": PEER_CREATOR, "title": title})
        if status != 200 or "id" not in call:
            raise Broken(f"POST /calls: HTTP {status}: {call}")
        return call["id"]

    def listed_video(self, call_id, peer, limit=LISTED_LIMIT):
        deadline = time.monotonic() + limit
        while True:
            status, info = self.api.request("GET", f"/calls/{call_id}")
            mine = [p for p in info.get("participants", []) if p.get("peer") == peer]
            video = mine[0].get("video") if mine else None
            if video and video.get("source_groups"):
                return video
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)


class Broken(Exception):
    pass


def need(ok, what, *procs):
    if not ok:
        detail = []
        for p in procs:
            if p is None:
                continue
            rc = p.proc.poll()
            detail.append(f"  {p.name} ({'running' if rc is None else f'exit status {rc}'}): $ {' '.join(p.argv)}")
            detail += [f"    | {line}" for line in p.tail()]
        raise Broken(what + ("\n" + "\n".join(detail) if detail else ""))


def wait_connected(proc, kind):
    if kind == "groupcall":
        ok = proc.wait_for(lambda p: p.line(r"call: connected"), CONNECT_LIMIT)
    else:
        ok = proc.wait_for(lambda p: p.event("connected") or p.event("error"), CONNECT_LIMIT)
        ok = ok if ok and ok.get("event") == "connected" else None
    need(ok, f"{proc.name} did not connect within {CONNECT_LIMIT:.0f} s", proc)


def start_publisher(ctx, kind, call_id, duration):
    if kind == "groupcall":
        fifo = os.path.join(ctx.out, f"camera-{call_id}.y4m")
        feeder = Feeder(fifo, ctx.frames)
        ctx.feeders.append(feeder)
        pub = ctx.groupcall("publisher-groupcall", call_id, PEER_PUBLISHER, duration, ["--video", fifo])
        pub.feeder = feeder
    else:
        pub = ctx.worker("publisher-ntgcalls", "publish", call_id, PEER_PUBLISHER, duration)
        pub.feeder = None
        ready = pub.wait_for(lambda p: p.event("ready") or p.event("error"), 30)
        need(ready and ready.get("event") == "ready", "the ntgcalls publisher did not start", pub)
        need(ready["sha1"] == ctx.sha1, f"the ntgcalls publisher's frames differ from the Y4M's "
             f"(SHA-1 {ready['sha1']} vs {ctx.sha1})", pub)
    wait_connected(pub, kind)
    video = ctx.listed_video(call_id, PEER_PUBLISHER)
    need(video, f"the server does not list the {kind} publisher's camera within {LISTED_LIMIT:.0f} s", pub)
    pub.video = video
    pub.connected_t = time.monotonic()
    return pub


def ntg_first_frame(proc):
    def first(p):
        if p.event("error"):
            return p.event("error")
        return next((e for _, e in p.events if e["event"] == "stats" and e.get("frames", 0) > 0), None)

    got = proc.wait_for(first, FIRST_FRAME_LIMIT)
    ok = bool(got) and got.get("event") == "stats"
    need(ok, f"{proc.name} decoded no frame within {FIRST_FRAME_LIMIT:.0f} s"
         + ("" if ok or not got else f": {got.get('what')}"), proc)
    return got["t"]


def gc_first_frame(proc):
    def decoded(p):
        return next((m for _, t in p.lines for m in [STATUS_RX.search(t)] if m and int(m.group(2)) > 0), None)

    got = proc.wait_for(decoded, FIRST_FRAME_LIMIT + 2)
    need(got, f"{proc.name} decoded no frame within {FIRST_FRAME_LIMIT:.0f} s", proc)
    return time.monotonic()


def window_rates(ctx, before, after, seconds, name, direction, names):
    if ctx.meter is None or before is None:
        return None
    return by_layer(kbps_between(before, after, seconds, name, direction), names)


def total_rate(rates):
    """All of a receiver's RTP in kbit/s: the server forwards whichever layer it picked under the
    SSRC of the publisher's first SIM layer, so the SSRC does not tell the layer."""
    return None if rates is None else sum(rates.values())


def run_publish(ctx, kind):
    a = ctx.args
    call_id = ctx.new_call(f"video publish {kind}")
    total = a.warmup + a.seconds + 25  # a backstop: everything is stopped once measured
    print(f"publish-720p30, {kind}: call {call_id}", file=sys.stderr, flush=True)
    pub = start_publisher(ctx, kind, call_id, total)
    rx = ctx.worker(f"receiver-of-{kind}", "receive", call_id, PEER_RECEIVER_NTG, total, source=PEER_PUBLISHER)
    wait_connected(rx, "ntgcalls")
    first = ntg_first_frame(rx)
    start = max(pub.connected_t + a.warmup, first + min(a.warmup, 3.0))
    time.sleep(max(0.0, start - time.monotonic()))
    need(pub.alive(), f"the {kind} publisher exited before the window", pub)
    before = ctx.meter.snapshot() if ctx.meter else None
    win = Window({"publisher": pub.pid, "receiver": rx.pid}, ctx.extra_pids()).run(a.seconds)
    after = ctx.meter.snapshot() if ctx.meter else None
    alive = pub.alive()
    res = {"engine": kind, "call": call_id, "seconds": win.t1 - win.t0, **win.load(),
           "publisher": win.figures("publisher"), "receiver_cpu_pct": win.cpu.get("receiver")}
    frames = at(worker_series(rx, "frames"), win.t1) - at(worker_series(rx, "frames"), win.t0)
    res["received_fps"] = frames / res["seconds"]
    res["received_sizes"] = sizes_in(rx, win.t0, win.t1)
    names = layer_names(pub.video)
    res["uplink_kbps"] = window_rates(ctx, before, after, res["seconds"], pub.name, "up", names)
    res["downlink_kbps"] = total_rate(window_rates(ctx, before, after, res["seconds"], rx.name, "down", names))
    res["received_sizes_timeline"] = sizes_timeline(rx)
    if kind == "ntgcalls":
        res["preload_mib"] = pub.event("ready")["preload_bytes"] / 2**20
        series = worker_series(pub, "frames")
        res["pushed_fps"] = (at(series, win.t1) - at(series, win.t0)) / res["seconds"]
    else:
        series = gc_series(pub, VIDEO_OUT_RX, 1)
        res["pushed_fps"] = ((at(series, win.t1) - at(series, win.t0)) / res["seconds"]) if len(series) > 1 else None
        lay = gc_series(pub, VIDEO_OUT_RX, 2)
        res["gc_layers"] = lay[-1][1] if lay else None
        est = gc_series(pub, VIDEO_OUT_RX, 3)
        res["gc_estimate_kbps"] = est[-1][1] if est else None
    for p in (pub, rx):
        p.stop()
    if pub.feeder:
        pub.feeder.close()
    if ctx.meter:
        res["layers_timeline"] = layers_timeline(ctx.meter, pub.name, names, pub.connected_t, win.t1)
    if kind == "groupcall":
        m = pub.line(r"video sent: .*")
        res["gc_report"] = m.group(0) if m else None
    res["publisher_exit"] = pub.proc.returncode
    need(alive, f"the {kind} publisher exited during the window", pub)
    return res


def run_receive(ctx):
    a = ctx.args
    kind = a.receive_publisher
    call_id = ctx.new_call("video receive")
    total = a.warmup + a.seconds + 25
    print(f"receive-720p30 (publisher {kind}): call {call_id}", file=sys.stderr, flush=True)
    pub = start_publisher(ctx, kind, call_id, total)
    gc = ctx.groupcall("receiver-groupcall", call_id, PEER_RECEIVER_GC, total, ["--muted", "--decode-video"])
    ntg = ctx.worker("receiver-ntgcalls", "receive", call_id, PEER_RECEIVER_NTG, total, source=PEER_PUBLISHER)
    wait_connected(gc, "groupcall")
    wait_connected(ntg, "ntgcalls")
    t_ntg = ntg_first_frame(ntg)
    t_gc = gc_first_frame(gc)
    start = max(pub.connected_t + a.warmup, max(t_ntg, t_gc) + min(a.warmup, 3.0))
    time.sleep(max(0.0, start - time.monotonic()))
    need(pub.alive() and gc.alive() and ntg.alive(), "a process exited before the window", pub, gc, ntg)
    before = ctx.meter.snapshot() if ctx.meter else None
    win = Window({"groupcall": gc.pid, "ntgcalls": ntg.pid, "publisher": pub.pid}, ctx.extra_pids()).run(a.seconds)
    after = ctx.meter.snapshot() if ctx.meter else None
    alive = gc.alive() and ntg.alive() and pub.alive()
    secs = win.t1 - win.t0
    names = layer_names(pub.video)
    res = {"publisher": kind, "call": call_id, "seconds": secs, **win.load(),
           "publisher_cpu_pct": win.cpu.get("publisher"),
           "uplink_kbps": window_rates(ctx, before, after, secs, pub.name, "up", names)}
    # Stopped now: the groupcall receiver's exit report has its totals.
    for p in (gc, ntg, pub):
        p.stop()
    if pub.feeder:
        pub.feeder.close()
    dec = gc_series(gc, STATUS_RX, 2)
    got = gc_series(gc, STATUS_RX, 1)
    drop = gc_series(gc, STATUS_RX, 3)
    m = gc.line(r"video received: (\d+) frames, (\d+) decoded, (\d+) dropped.*")
    res["groupcall"] = {**win.figures("groupcall"),
                        "decoded_fps": (at(dec, win.t1) - at(dec, win.t0)) / secs if len(dec) > 1 else None,
                        "received_fps": (at(got, win.t1) - at(got, win.t0)) / secs if len(got) > 1 else None,
                        "dropped_in_window": (at(drop, win.t1) - at(drop, win.t0)) if len(drop) > 1 else None,
                        "exit_report": m.group(0) if m else None,
                        "downlink_kbps": total_rate(window_rates(ctx, before, after, secs, gc.name, "down", names))}
    series = worker_series(ntg, "frames")
    res["ntgcalls"] = {**win.figures("ntgcalls"),
                       "decoded_fps": (at(series, win.t1) - at(series, win.t0)) / secs,
                       "sizes": sizes_in(ntg, win.t0, win.t1),
                       "downlink_kbps": total_rate(window_rates(ctx, before, after, secs, ntg.name, "down", names)),
                       "sizes_timeline": sizes_timeline(ntg)}
    need(alive, "a process exited during the window", pub, gc, ntg)
    return res


# ---------------------------------------------------------------------------------------------
# The report


def f(v, fmt=".1f", none="n/a"):
    return none if v is None else format(v, fmt)


def ratio(b, a):
    return b / a if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 else None


def sizes_text(sizes):
    total = sum(sizes.values())
    if not total:
        return "none"
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in top)


def rates_text(rates):
    if rates is None:
        return "n/a"
    if not rates:
        return "none"
    return " ".join(f"{k} {v:.0f}" for k, v in rates.items())


def row(label, a, b, r=None):
    print(f"{label:38} {a:>20} {b:>20}" + (f" {r:>8}" if r is not None else ""))


def ratio_row(label, a, b, fmt=".1f"):
    r = ratio(b, a)
    row(label, f(a, fmt), f(b, fmt), "n/a" if r is None else f"{r:.2f}x")
    return r


OTHERS_WARN = 15.0  # % of a core used by processes outside the bench during a window


def load_lines(what, res):
    others = res.get("others_cpu_pct")
    extra = res.get("extra_cpu_pct") or {}
    line = (f"{what}: machine {f(res.get('machine_busy_pct'), '.0f')} % busy ({res.get('cores')} cores); this "
            f"bench's processes {f(res.get('bench_cpu_pct'), '.0f')} % of a core (server "
            f"{f(extra.get('server'), '.0f')}, relay and feeder {f(extra.get('bench'), '.0f')}); others "
            f"{f(others, '.0f')} %")
    if others is not None and others > OTHERS_WARN:
        line += " -- WARNING: other processes competed for the CPU; these figures are disturbed"
    print(line)


FULL_SIZE_SHARE = 0.9  # of a window's received frames at W x H, for a like-for-like publish run


def full_size_share(sizes):
    total = sum((sizes or {}).values())
    return (sizes or {}).get(f"{W}x{H}", 0) / total if total else 0.0


def report_publish(res, seconds):
    g, t = res.get("groupcall"), res.get("ntgcalls")
    gd, td = (g if isinstance(g, dict) else {}), (t if isinstance(t, dict) else {})
    gp, tp = gd.get("publisher") or {}, td.get("publisher") or {}
    print(f"==== publish-720p30: one {W}x{H} {FPS} fps camera, {seconds:.0f} s measured ====")
    row("", "groupcall", "ntgcalls", "ntg/gc")
    r = ratio_row("publisher CPU (% of a core)", gp.get("cpu_pct"), tp.get("cpu_pct"))
    ratio_row("publisher RSS median (MiB)", gp.get("rss_med_mib"), tp.get("rss_med_mib"))
    ratio_row("publisher RSS peak (MiB)", gp.get("rss_max_mib"), tp.get("rss_max_mib"))
    pre = td.get("preload_mib")
    if pre is not None and tp.get("rss_med_mib") is not None:
        ratio_row(f"  ntgcalls less its frames ({pre:.1f} MiB)", gp.get("rss_med_mib"), tp["rss_med_mib"] - pre)
    ratio_row("publisher RssAnon median (MiB)", gp.get("anon_med_mib"), tp.get("anon_med_mib"))
    row("frames read/pushed per second", f(gd.get("pushed_fps")), f(td.get("pushed_fps")))
    row("uplink kbit/s by SIM layer", rates_text(gd.get("uplink_kbps")), rates_text(td.get("uplink_kbps")))
    row("receiver decoded per second", f(gd.get("received_fps")), f(td.get("received_fps")))
    row("receiver decoded sizes", sizes_text(gd.get("received_sizes") or {}),
        sizes_text(td.get("received_sizes") or {}))
    row("receiver downlink kbit/s", f(gd.get("downlink_kbps"), ".0f"), f(td.get("downlink_kbps"), ".0f"))
    row("receiver CPU (ntgcalls; not compared)", f(gd.get("receiver_cpu_pct")), f(td.get("receiver_cpu_pct")))
    for name, x in (("groupcall", g), ("ntgcalls", t)):
        if isinstance(x, str):
            print(f"{name}: BROKEN: {x}")
            continue
        if x is None:
            continue
        print(f"{name}: layers sent, second by second from its connection: "
              f"{timeline_text(x.get('layers_timeline') or [])}")
        print(f"{name}: its receiver decoded, second by second: "
              f"{sizes_timeline_text(x.get('received_sizes_timeline') or [])}")
        if name == "groupcall":
            print(f"groupcall: {x.get('gc_layers')} layer(s) that its bandwidth estimate allows at the end, "
                  f"the estimate {x.get('gc_estimate_kbps')} "
                  f"kbit/s; at exit: {x.get('gc_report') or 'no video sent report'}")
        load_lines(f"{name} window", x)
    unequal = [(name, share) for name, x in (("groupcall", gd), ("ntgcalls", td))
               if x and (share := full_size_share(x.get("received_sizes"))) < FULL_SIZE_SHARE]
    for name, share in unequal:
        print(f"NOT LIKE FOR LIKE: the receiver of {name} got {W}x{H} for {100 * share:.0f} % of the window's frames; the "
              f"CPU ratio compares different work")
    if any(name == "ntgcalls" for name, _ in unequal):
        k = res.get("video_start_kbps")
        print(f"  (libwebrtc's bandwidth estimate starts at the server's x-google-start-bitrate, here "
              f"{f'{k} kbit/s' if k else 'its default'}, and falls from there against the local server, its top "
              f"layers going with it; benches/compare-video.sh --video-start-kbps 20000 keeps 720p through a run)")
    print("(ntgcalls' publisher CPU is the whole Python process: libwebrtc's encoders and transport plus Python "
          "pushing a preloaded frame with send_external_frame 30 times a second; nothing subtracted. Its RSS "
          "includes the preloaded frames, the interpreter and numpy.)")
    return r


def report_receive(res, seconds):
    print(f"==== receive-720p30: two receivers of one {W}x{H} {FPS} fps camera "
          f"(publisher {res.get('publisher', '?')}), {seconds:.0f} s measured ====")
    if isinstance(res.get("error"), str):
        print(f"BROKEN: {res['error']}")
        return None
    g, t = res["groupcall"], res["ntgcalls"]
    row("", "groupcall", "ntgcalls", "ntg/gc")
    r = ratio_row("receiver CPU (% of a core)", g.get("cpu_pct"), t.get("cpu_pct"))
    def per(x):  # ms of CPU per decoded frame
        return None if not x.get("decoded_fps") or x.get("cpu_pct") is None else x["cpu_pct"] * 10 / x["decoded_fps"]
    ratio_row("CPU per decoded frame (ms)", per(g), per(t), ".2f")
    ratio_row("receiver RSS median (MiB)", g.get("rss_med_mib"), t.get("rss_med_mib"))
    ratio_row("receiver RSS peak (MiB)", g.get("rss_max_mib"), t.get("rss_max_mib"))
    ratio_row("receiver RssAnon median (MiB)", g.get("anon_med_mib"), t.get("anon_med_mib"))
    row("frames decoded per second", f(g.get("decoded_fps")), f(t.get("decoded_fps")))
    row("decoded sizes", "(not reported)", sizes_text(t.get("sizes") or {}))
    row("downlink kbit/s", f(g.get("downlink_kbps"), ".0f"), f(t.get("downlink_kbps"), ".0f"))
    print(f"groupcall: {f(g.get('received_fps'))} frames/s received, {f(g.get('dropped_in_window'), '.0f')} dropped "
          f"in the window; at exit: {g.get('exit_report') or 'no video received report'}")
    print(f"ntgcalls: decoded, second by second: {sizes_timeline_text(t.get('sizes_timeline') or [])}")
    print(f"publisher ({res['publisher']}): CPU {f(res.get('publisher_cpu_pct'))} % of a core, uplink kbit/s "
          f"{rates_text(res.get('uplink_kbps'))}")
    load_lines("window", res)
    return r


# ---------------------------------------------------------------------------------------------


def stop_all(ctx):
    """Whatever a run left behind (a broken run stops where it broke)."""
    for pr in ctx.procs:
        if pr.alive():
            pr.stop()
    for fd in ctx.feeders:
        fd.close()
    ctx.procs, ctx.feeders = [], []


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--control", help="the server's control API, http://127.0.0.1:PORT")
    p.add_argument("--media-port", type=int, help="the server's media UDP port (for the counting relay)")
    p.add_argument("--bin", help="the groupcall binary")
    p.add_argument("--scenario", default="publish-720p30,receive-720p30")
    p.add_argument("--seconds", type=float, default=10.0, help="measured, per run (default 10)")
    p.add_argument("--warmup", type=float, default=5.0,
                   help="from the publisher's connection to the window (default 5; at least 3 s after "
                        "the receivers' first frames)")
    p.add_argument("--engines", default="groupcall,ntgcalls",
                   help="publish-720p30: which publishers to run (default both; one alone gives no ratio)")
    p.add_argument("--receive-publisher", choices=["groupcall", "ntgcalls"], default="groupcall")
    p.add_argument("--no-meter", action="store_true",
                   help="no counting relay: participants talk to the server directly")
    p.add_argument("--server-pid", type=int, help="the server's PID: its CPU is counted as the bench's own, "
                   "not as other processes' load")
    p.add_argument("--video-start-kbps", type=int,
                   help="what the server was started with (groupcall serve --video-start-kbps), for the report")
    p.add_argument("--out", help="keep the processes' logs in this directory")
    p.add_argument("--json", help="also write the figures to this file")
    # The ntgcalls worker processes.
    p.add_argument("--worker", choices=["publish", "receive"], help=argparse.SUPPRESS)
    p.add_argument("--call", type=int, help=argparse.SUPPRESS)
    p.add_argument("--peer", type=int, help=argparse.SUPPRESS)
    p.add_argument("--source", type=int, help=argparse.SUPPRESS)
    p.add_argument("--via", help=argparse.SUPPRESS)
    p.add_argument("--duration", type=float, default=60, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker_main(args)
        return
    if not args.control or not args.bin:
        p.error("--control and --bin are required (benches/compare-video.sh starts the server)")
    if not args.no_meter and not args.media_port:
        p.error("--media-port is required for the counting relay (or give --no-meter)")
    args.bin = os.path.abspath(args.bin)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not args.engines or any(e not in ("groupcall", "ntgcalls") for e in args.engines):
        p.error("--engines takes groupcall, ntgcalls or both, separated by a comma")
    scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    for s in scenarios:
        if s not in ("publish-720p30", "receive-720p30"):
            p.error(f"unknown scenario {s!r} (publish-720p30, receive-720p30)")

    started = time.monotonic()
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="groupcall-compare-video-")
    out = args.out or tmp.name
    os.makedirs(out, exist_ok=True)
    frames = make_frames()
    ctx = Ctx(args, out, frames)
    ctx.sha1 = frames_sha1(frames)
    print(f"compare-video: server video start bitrate "
          f"{args.video_start_kbps if args.video_start_kbps is not None else 'its default'} kbit/s", file=sys.stderr)
    print(f"compare-video: {W}x{H} {FPS} fps, a loop of {LOOP_FRAMES} frames (SHA-1 {ctx.sha1[:12]}), "
          f"{args.seconds:.0f} s measured per run, {os.cpu_count()} cores, {args.bin}", file=sys.stderr, flush=True)
    results, broken = {}, False
    try:
        for s in scenarios:
            if s == "publish-720p30":
                res = {}
                for kind in args.engines:
                    try:
                        res[kind] = run_publish(ctx, kind)
                    except Broken as e:
                        res[kind] = str(e)
                        broken = True
                        print(f"compare-video: publish {kind}: BROKEN: {e}", file=sys.stderr, flush=True)
                    finally:
                        stop_all(ctx)
                res["video_start_kbps"] = args.video_start_kbps
                results[s] = res
            else:
                try:
                    results[s] = run_receive(ctx)
                except Broken as e:
                    results[s] = {"publisher": args.receive_publisher, "error": str(e)}
                    broken = True
                    print(f"compare-video: receive: BROKEN: {e}", file=sys.stderr, flush=True)
                finally:
                    stop_all(ctx)
    finally:
        stop_all(ctx)
        if ctx.meter:
            ctx.meter.close()
        if tmp:
            tmp.cleanup()
        elif args.out:
            print(f"compare-video: logs in {out}", file=sys.stderr)

    print()
    ratios = []
    for s in scenarios:
        if s == "publish-720p30":
            r = report_publish(results[s], args.seconds)
        else:
            r = report_receive(results[s], args.seconds)
        ratios.append(f"ratio cpu ntgcalls/groupcall: {f(r, '.2f')} (scenario={s})")
        print()
    summary = {"seconds": args.seconds, "cores": os.cpu_count(), "frames_sha1": ctx.sha1,
               "video_start_kbps": args.video_start_kbps,
               "elapsed_s": time.monotonic() - started, **results}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)
    print(json.dumps(summary))
    for line in ratios:
        print(line)
    sys.stdout.flush()
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
