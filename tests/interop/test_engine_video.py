#!/usr/bin/env python3
"""Interop, video, with this engine on one side: `groupcall join` sends video that libwebrtc
(ntgcalls 3.0.5) decodes, and records video that libwebrtc sends, through the local groupcall
server.

(a) The engine publishes, ntgcalls receives.
      groupcall join CALL --local URL --as 1001 --video pattern --video-size 640x360 --fps 30
    publishes the engine's test pattern (engine/src/video/pattern.rs: four flat quadrants, a
    moving bar, and a row of cells along the top that spells the frame's number with a check).
    ntgcalls B joins in PLAYBACK mode, subscribes to the engine's camera with the source groups
    the server lists for it (`add_incoming_video`, as tests/interop/test_ntgcalls_video.py does)
    and collects the decoded frames at their native size for 4 s after the first.
    Checks: the server lists the engine's camera; B's frames are CAMERA frames on SIM[0]; at
    least 24 frames per second over 3 s; 640x360; each quadrant's mean Y, U, V within 14 of the
    pattern's colours; the frame numbers read back from B's pictures (as pattern.rs
    `read_counter` reads them) only increase, and at most 10 % of the numbers between the first
    and the last read are missing. So libwebrtc decodes every frame the engine encodes, in order,
    at full size and in the right colours.

(b) ntgcalls publishes, the engine records.
    ntgcalls A publishes a 640x360 30 fps camera from a raw I420 file (the picture of
    tests/interop/test_ntgcalls_video.py: the same four quadrant colours and a box moving along
    the middle), then
      groupcall join CALL --local URL --as 2002 --muted --record-video-dir DIR --duration 10
    joins, records and leaves by itself.
    Checks: the engine leaves by itself with status 0; DIR holds exactly one `.y4m` file, named
    after A (its peer id or its source); its header says 640x360; it holds at least 20 frames per second of the time the
    engine was connected (less a 3 s allowance for start-up) and at least 100; its pictures move
    (the box is in a new place in at least 80 % of consecutive frames); the middle frame's
    quadrant colours are within 14 of what A sent. So the engine decodes libwebrtc's video
    (H.264 simulcast, top layer) and writes it out whole.

(b) runs first: ntgcalls has been seen to crash (heap corruption) as B leaves at the end of (a),
and a crash loses the summary line, which tests/interop/run.sh then counts as a failure.
Every wait has a time limit; the whole test takes about 30 s and at most about 60 s.

Usage: test_engine_video.py --control URL --bin GROUPCALL [--part a|b|both] [--out DIR]
(tests/interop/run.sh starts the server; --out keeps the engine's logs and recordings.)
The last line printed is `interop: N passed, M failed`; the exit status is non-zero on failure.
"""

import argparse
import asyncio
import glob
import json
import os
import re
import signal
import subprocess
import tempfile
import time

import numpy as np

from compare_receive import Proc
from control_api import Api
from test_ntgcalls import CHAT_ID, Participant, join_with_sources, run_and_exit, wait_for
from test_ntgcalls_video import Receiver
import ntgcalls
from ntgcalls import MediaDescription, MediaSource, SsrcGroup, StreamDevice, StreamMode, VideoDescription

W, H, FPS = 640, 360, 30
# (Y, U, V) of the quadrants, top left, top right, bottom left, bottom right: the engine's
# pattern (engine/src/video/pattern.rs QUADRANTS) and A's picture (test_ntgcalls_video.py) alike.
QUADRANTS = [(60, 90, 160), (120, 200, 100), (170, 60, 120), (220, 140, 200)]
TOLERANCE = 14  # per mean component, 0..255

PEER_CREATOR = 1
# (a)
ENGINE_SENDER, PEER_B = 1001, 1002
SEND_DURATION = 14  # the sender's --duration; it is stopped as soon as B has what it needs
MIN_FPS_RECEIVED = 24.0
MEASURE_SECONDS = 3.0  # after a second of start-up following the first frame
MAX_MISSING = 0.10  # of the frame numbers between the first and the last read
# (b)
PEER_A, ENGINE_RECORDER = 1001, 2002
RECORD_DURATION = 10  # the recorder's --duration
A_SECONDS = 18  # of video in A's file (ntgcalls does not loop it): longer than A is needed
MIN_FPS_RECORDED = 20.0
STARTUP_ALLOWANCE = 3.0  # seconds of the recorder's connection not held to MIN_FPS_RECORDED
MIN_FRAMES_RECORDED = 100
MIN_MOVING = 0.8

# Time bounds, seconds.
PART_A_LIMIT = 22.0
PART_B_LIMIT = 25.0
CONNECT_LIMIT = 10.0
VIDEO_LIMIT = 8.0  # from B's subscription to its first decoded frame
LISTED_LIMIT = 5.0  # for the server to list the engine's camera
EXIT_GRACE = 5.0  # past --duration, for the recorder to leave by itself
HTTP_TIMEOUT = 5.0
STOP_LIMIT = 3.0  # for a process or an ntgcalls call to stop, once asked
ENGINE_TAIL = 15  # lines of the engine's output shown when something failed


# ---------------------------------------------------------------------------------------------
# Pictures


def planes(data, w, h):
    """The Y, U and V planes of an I420 frame."""
    cw, ch = (w + 1) // 2, (h + 1) // 2
    a = np.frombuffer(data, np.uint8)
    y = a[: w * h].reshape(h, w)
    u = a[w * h : w * h + cw * ch].reshape(ch, cw)
    v = a[w * h + cw * ch : w * h + 2 * cw * ch].reshape(ch, cw)
    return y, u, v


def quadrant_means(data, w, h):
    """Mean (Y, U, V) of a block inside each quadrant, clear of both pictures' moving parts and
    of the counter row: rows h/8..5h/16 of the top half and 11h/16..7h/8 of the bottom half (the
    engine's bar spans rows 3h/8..5h/8, A's box h/2 +- 12; the counter row ends at row 2w/40,
    32 at 640 wide, above h/8 = 45), columns w/8..3w/8 and 5w/8..7w/8 (the same fractions of the
    chroma planes)."""
    out = []
    for i in range(4):
        r, c = divmod(i, 2)
        means = []
        for plane in planes(data, w, h):
            ph, pw = plane.shape
            top = (ph // 8, 5 * ph // 16) if r == 0 else (11 * ph // 16, 7 * ph // 8)
            left = (pw // 8, 3 * pw // 8) if c == 0 else (5 * pw // 8, 7 * pw // 8)
            means.append(float(plane[top[0] : top[1], left[0] : left[1]].mean()))
        out.append(tuple(means))
    return out


def colour_check(checks, means, what):
    worst = max(abs(m - e) for got_q, want_q in zip(means, QUADRANTS) for m, e in zip(got_q, want_q))
    print("quadrant means (Y, U, V): " + "; ".join(f"({y:.0f}, {u:.0f}, {v:.0f})" for y, u, v in means),
          flush=True)
    checks.check(worst <= TOLERANCE, f"{what} (each quadrant within {TOLERANCE})", f"largest difference {worst:.1f}")


# The counter row of engine/src/video/pattern.rs: cells a fortieth of the width, from one cell in
# from the top left; a start mark (white, black), 24 bits of the number (MSB first), 6 check bits.
CELLS, NUMBER_BITS, CELLS_PER_WIDTH = 32, 24, 40


def check_bits(n):
    return (n ^ (n >> 6) ^ (n >> 12) ^ (n >> 18) ^ 0x2A) & 0x3F


def read_counter(y):
    """The frame number in a luma plane, read exactly as pattern.rs `read_counter` reads it
    (each cell's centre pixel on the row through the cells' middle, white above 128), or None."""
    h, w = y.shape
    side = max(w // CELLS_PER_WIDTH, 1)
    row = side + side // 2
    if row >= h or side * (CELLS + 1) > w:
        return None
    bits = [bool(y[row, side + i * side + side // 2] > 128) for i in range(CELLS)]
    if not bits[0] or bits[1]:
        return None
    n = 0
    for b in bits[2 : 2 + NUMBER_BITS]:
        n = n << 1 | b
    c = 0
    for b in bits[2 + NUMBER_BITS :]:
        c = c << 1 | b
    return n if c == check_bits(n) else None


def write_camera(path, seconds):
    """A's camera, as test_ntgcalls_video.py's write_video draws it: `seconds` of I420 at W x H,
    flat quadrants and a 24x24 white box moving 6 pixels a frame along the horizontal middle."""
    y = np.zeros((H, W), np.uint8)
    u = np.zeros((H // 2, W // 2), np.uint8)
    v = np.zeros((H // 2, W // 2), np.uint8)
    for i, (qy, qu, qv) in enumerate(QUADRANTS):
        r, c = divmod(i, 2)
        y[r * H // 2 : (r + 1) * H // 2, c * W // 2 : (c + 1) * W // 2] = qy
        u[r * H // 4 : (r + 1) * H // 4, c * W // 4 : (c + 1) * W // 4] = qu
        v[r * H // 4 : (r + 1) * H // 4, c * W // 4 : (c + 1) * W // 4] = qv
    chroma = u.tobytes() + v.tobytes()
    with open(path, "wb") as f:
        for n in range(seconds * FPS):
            frame = y.copy()
            x0 = (n * 6) % (W - 24)
            frame[H // 2 - 12 : H // 2 + 12, x0 : x0 + 24] = 255
            f.write(frame.tobytes())
            f.write(chroma)


def box_position(y):
    """Where A's box is (the mean of the columns bright in most of the 20 rows through the box's
    middle: the box is 255, the brightest quadrant 220 and only in half of those rows), or None."""
    h = y.shape[0]
    band = y[h // 2 - 10 : h // 2 + 10]
    cols = np.nonzero((band > 238).sum(axis=0) >= 16)[0]
    return float(cols.mean()) if len(cols) else None


# ---------------------------------------------------------------------------------------------
# Y4M


def read_y4m(path):
    """(header fields {W, H, F, ...}, frame data offsets, whether the last frame is cut short)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = f.readline(1024)
        if not header.startswith(b"YUV4MPEG2") or not header.endswith(b"\n"):
            raise ValueError(f"the header is not a YUV4MPEG2 line: {header[:80]!r}")
        fields = {}
        for word in header.decode(errors="replace").split()[1:]:
            fields[word[0]] = word[1:]
        if "W" not in fields or "H" not in fields:
            raise ValueError(f"the header has no W and H: {header!r}")
        w, h = int(fields["W"]), int(fields["H"])
        frame_bytes = w * h + 2 * ((w + 1) // 2) * ((h + 1) // 2)
        offsets, cut = [], False
        while True:
            line = f.readline(1024)
            if not line:
                break
            if not line.startswith(b"FRAME"):
                raise ValueError(f"frame {len(offsets)} does not start with FRAME: {line[:40]!r}")
            at = f.tell()
            if at + frame_bytes > size:
                cut = True
                break
            offsets.append(at)
            f.seek(frame_bytes, os.SEEK_CUR)
    return fields, offsets, cut


def y4m_frame(path, offset, w, h):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(w * h + 2 * ((w + 1) // 2) * ((h + 1) // 2))


# ---------------------------------------------------------------------------------------------
# The engine


def engine_flags(binary):
    """`groupcall join --help`, and which of the video options it lists."""
    try:
        r = subprocess.run([binary, "join", "--help"], capture_output=True, text=True, timeout=10)
        text = r.stdout + r.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e), {}
    have = {flag: re.search(re.escape(flag) + r"(?![\w-])", text) is not None
            for flag in ("--video", "--video-size", "--fps", "--record-video-dir")}
    return text, have


def show_engine(proc):
    """The engine's command line, exit status and last lines of output, for a failure report."""
    if proc is None or proc.proc is None:
        return
    print(f"engine ({proc.name}): $ {' '.join(proc.argv)}", flush=True)
    print(f"engine ({proc.name}): exit status {proc.proc.returncode}; last {ENGINE_TAIL} lines:", flush=True)
    for line in proc.lines[-ENGINE_TAIL:]:
        print(f"  | {line}", flush=True)


async def start_engine(name, argv, out):
    proc = Proc(name, argv, os.path.join(out, f"{name}.log"))
    await proc.start()
    return proc


async def wait_connected(checks, api, call_id, peer, proc, what):
    """Waits for the engine's `call: connected` and checks that the server lists it; returns the
    monotonic time it connected, or None. (Its `joined CALL with SSRC N` line is not relied on:
    another thread's output on the same standard error can land in the middle of it, as
    OpenH264's warnings from the encoder threads did.)"""
    connected = await proc.wait_line(r"call: connected", CONNECT_LIMIT)
    at = time.monotonic()
    status, info = await api.call("GET", f"/calls/{call_id}")
    mine = [p for p in info.get("participants", []) if p.get("peer") == peer]
    if connected and mine:
        detail = f"SSRC {mine[0]['source'] & 0xFFFFFFFF}"
    elif connected:
        detail = "connected, but the server does not list it"
    elif proc.proc.returncode is not None:
        detail = f"it exited with status {proc.proc.returncode}"
    else:
        detail = f"no `call: connected` within {CONNECT_LIMIT:.0f} s"
    if not checks.check(bool(connected and mine), f"{what} the engine joined and connected", detail):
        return None
    return at


# ---------------------------------------------------------------------------------------------
# (a) The engine publishes, ntgcalls receives


async def part_a(api, checks, args, out):
    engine, b = None, Receiver("B")
    failed_before = checks.failed
    try:
        status, call = await api.call("POST", "/calls", {"peer": PEER_CREATOR, "title": "engine video out"})
        if not checks.check(status == 200 and "id" in call, "(a) POST /calls created a call", f"HTTP {status}"):
            return
        call_id = call["id"]
        engine = await start_engine("sender", [
            args.bin, "join", str(call_id), "--local", args.control, "--as", str(ENGINE_SENDER),
            "--video", "pattern", "--video-size", f"{W}x{H}", "--fps", str(FPS),
            "--duration", str(SEND_DURATION)], out)
        if await wait_connected(checks, api, call_id, ENGINE_SENDER, engine, "(a)") is None:
            return

        # Native size (0 x 0): what the decoder produced, not scaled by ntgcalls.
        sink = VideoDescription(MediaSource.EXTERNAL, 0, 0, FPS, "", False)
        if not await join_with_sources(api, checks, call_id, b, PEER_B, StreamMode.PLAYBACK,
                                       MediaDescription(microphone=None, speaker=None, camera=sink, screen=sink)):
            return
        await wait_for(b.connected.is_set, CONNECT_LIMIT)
        if not checks.check(b.connected.is_set(), "(a) B reported CONNECTED", f"states {b.state_names()}"):
            return

        # B subscribes as py-tgcalls does, from what the server lists for the engine.
        listed = {}

        async def engine_video():
            status, info = await api.call("GET", f"/calls/{call_id}")
            mine = [p for p in info.get("participants", []) if p.get("peer") == ENGINE_SENDER]
            listed["entry"] = mine[0] if mine else info
            return mine[0].get("video") if mine else None

        deadline = time.monotonic() + LISTED_LIMIT
        video = await engine_video()
        while not video and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            video = await engine_video()
        groups = (video or {}).get("source_groups") or []
        sims = [g["sources"] for g in groups if g.get("semantics") == "SIM"]
        if not checks.check(bool(video) and bool(sims), "(a) the server lists the engine's camera with a SIM group",
                            f"endpoint {video['endpoint']}, groups "
                            + ", ".join(f"{g['semantics']} {len(g['sources'])}" for g in groups)
                            if video and sims else json.dumps(listed.get("entry"))[:300]):
            return
        sim0 = sims[0][0] & 0xFFFFFFFF
        ssrc_groups = [SsrcGroup(g["semantics"], [s & 0xFFFFFFFF for s in g["sources"]]) for g in groups]
        got = await b.calls.add_incoming_video(CHAT_ID, 0, video["endpoint"], ssrc_groups)
        checks.check((got & 0xFFFFFFFF) == sim0, "(a) B's incoming video is on the engine's SIM[0]", f"{got} vs {sim0}")
        subscribed = time.monotonic()

        await wait_for(lambda: len(b.video_snapshot()) > 0, VIDEO_LIMIT, step=0.05)
        frames = b.video_snapshot()
        if not checks.check(bool(frames), "(a) B decoded the engine's video",
                            f"first frame {1000 * (frames[0][0] - subscribed):.0f} ms after subscribing"
                            if frames else f"no frame within {VIDEO_LIMIT:.0f} s of subscribing"):
            return
        start = frames[0][0] + 1.0
        await asyncio.sleep(max(0.0, start + MEASURE_SECONDS - time.monotonic()) + 0.1)
        frames = b.video_snapshot()
        window = [f for f in frames if start <= f[0] < start + MEASURE_SECONDS]
        fps = len(window) / MEASURE_SECONDS
        checks.check(all(f[1] == StreamDevice.CAMERA and f[2] == sim0 for f in frames),
                     "(a) every frame is CAMERA on SIM[0]", f"{sorted({(f[1].name, f[2]) for f in frames})}")
        checks.check(fps >= MIN_FPS_RECEIVED, f"(a) B receives at least {MIN_FPS_RECEIVED:.0f} frames per second",
                     f"{fps:.1f} fps ({len(frames)} frames in all)")
        sizes = sorted({(f[3], f[4]) for f in window})
        last = window[-1] if window else frames[-1]
        if not checks.check((last[3], last[4]) == (W, H), f"(a) B gets the full {W}x{H}",
                            f"sizes in the window {sizes}"):
            return
        colour_check(checks, quadrant_means(last[5], W, H), "(a) the quadrants have the pattern's colours")

        # The frame numbers, in the order B got the pictures.
        numbers = [read_counter(planes(f[5], f[3], f[4])[0]) for f in frames]
        read = [n for n in numbers if n is not None]
        if not checks.check(len(read) >= 2, "(a) the frame numbers read from B's pictures",
                            f"{len(read)} of {len(frames)} read"):
            return
        backwards = sum(1 for p, n in zip(read, read[1:]) if n < p)
        repeated = sum(1 for p, n in zip(read, read[1:]) if n == p)
        span = read[-1] - read[0] + 1
        distinct = len(set(read))
        missing = 1.0 - distinct / span if span > 0 else 1.0
        print(f"frame numbers: {read[0]}..{read[-1]}, {distinct} distinct of {span}, {len(frames) - len(read)} "
              f"pictures unreadable, {repeated} repeated, {backwards} going back", flush=True)
        checks.check(backwards == 0, "(a) the frame numbers only increase", f"{backwards} steps back")
        checks.check(missing <= MAX_MISSING, f"(a) at most {100 * MAX_MISSING:.0f} % of the frame numbers are missing",
                     f"{100 * missing:.1f} % ({span - distinct} of {span})")
    finally:
        if engine is not None:
            await engine.stop(signal.SIGINT, STOP_LIMIT)
            if checks.failed > failed_before:
                show_engine(engine)
        # Said first, so that a crash of ntgcalls here shows where it happened.
        print("(a) B leaves (ntgcalls stop)", flush=True)
        try:
            await asyncio.wait_for(b.calls.stop(CHAT_ID), STOP_LIMIT)
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# (b) ntgcalls publishes, the engine records


async def part_b(api, checks, args, out, camera_path):
    a, engine = Participant("A"), None
    failed_before = checks.failed
    rec_dir = os.path.join(out, "video-records")
    os.makedirs(rec_dir, exist_ok=True)
    try:
        status, call = await api.call("POST", "/calls", {"peer": PEER_CREATOR, "title": "engine video in"})
        if not checks.check(status == 200 and "id" in call, "(b) POST /calls created a call", f"HTTP {status}"):
            return
        call_id = call["id"]
        camera = VideoDescription(MediaSource.FILE, W, H, FPS, camera_path, False)
        if not await join_with_sources(api, checks, call_id, a, PEER_A, StreamMode.CAPTURE,
                                       MediaDescription(microphone=None, speaker=None, camera=camera, screen=None)):
            return
        await wait_for(a.connected.is_set, CONNECT_LIMIT)
        if not checks.check(a.connected.is_set(), "(b) A reported CONNECTED", f"states {a.state_names()}"):
            return

        engine = await start_engine("recorder", [
            args.bin, "join", str(call_id), "--local", args.control, "--as", str(ENGINE_RECORDER), "--muted",
            "--record-video-dir", rec_dir, "--duration", str(RECORD_DURATION)], out)
        connected_at = await wait_connected(checks, api, call_id, ENGINE_RECORDER, engine, "(b)")
        if connected_at is None:
            return
        try:
            await asyncio.wait_for(engine.proc.wait(), RECORD_DURATION + EXIT_GRACE)
        except asyncio.TimeoutError:
            pass
        exited_at = time.monotonic()
        rc = engine.proc.returncode
        checks.check(rc == 0, f"(b) the engine left by itself after --duration {RECORD_DURATION} with status 0",
                     f"connected for {exited_at - connected_at:.1f} s" if rc is not None else
                     f"still running {RECORD_DURATION + EXIT_GRACE:.0f} s after connecting (stopped with SIGINT)")
        await engine.stop(signal.SIGINT, STOP_LIMIT)  # a no-op when it has exited; reads the rest of its output
        connected_s = exited_at - connected_at

        files = sorted(glob.glob(os.path.join(rec_dir, "*.y4m")))
        others = sorted(set(os.listdir(rec_dir)) - {os.path.basename(p) for p in files})
        names = [os.path.basename(p) for p in files]
        if not checks.check(len(files) == 1 and (str(PEER_A) in names[0] or str(a.ssrc) in names[0]),
                            "(b) the engine wrote one .y4m file, A's camera",
                            f"{names}" + (f", other files {others}" if others else "")):
            return
        path = files[0]
        try:
            fields, offsets, cut = read_y4m(path)
        except (OSError, ValueError) as e:
            checks.check(False, f"(b) {os.path.basename(path)} reads as YUV4MPEG2", str(e))
            return
        w, h = int(fields["W"]), int(fields["H"])
        print(f"{os.path.basename(path)}: {os.path.getsize(path)} bytes, header "
              + " ".join(f"{k}{v}" for k, v in fields.items())
              + f", {len(offsets)} frames" + (", the last one cut short" if cut else ""), flush=True)
        if not checks.check((w, h) == (W, H), f"(b) the recording is {W}x{H}", f"W{w} H{h}"):
            return
        need = max(MIN_FRAMES_RECORDED, int(MIN_FPS_RECORDED * (connected_s - STARTUP_ALLOWANCE)))
        checks.check(len(offsets) >= need,
                     f"(b) the recording has at least {MIN_FPS_RECORDED:.0f} frames per second of the connection",
                     f"{len(offsets)} frames ({len(offsets) / connected_s:.1f} per second of {connected_s:.1f} s "
                     f"connected; at least {need} wanted), header rate F{fields.get('F', '?')}")
        if not offsets:
            return

        # The pictures move: A's box is somewhere new in each frame.
        where = []
        with open(path, "rb") as f:
            for at in offsets:
                f.seek(at)
                where.append(box_position(np.frombuffer(f.read(w * h), np.uint8).reshape(h, w)))
        pairs = [(p, n) for p, n in zip(where, where[1:]) if p is not None and n is not None]
        moved = sum(1 for p, n in pairs if abs(n - p) >= 2)
        share = moved / len(pairs) if pairs else 0.0
        checks.check(share >= MIN_MOVING, f"(b) the pictures move (A's box in a new place in at least "
                                          f"{100 * MIN_MOVING:.0f} % of consecutive frames)",
                     f"{moved} of {len(pairs)} pairs; the box not found in {sum(1 for x in where if x is None)} frames")
        middle = offsets[len(offsets) // 2]
        colour_check(checks, quadrant_means(y4m_frame(path, middle, w, h), w, h),
                     f"(b) the middle frame (of {len(offsets)}) has A's colours")
    finally:
        if engine is not None:
            await engine.stop(signal.SIGINT, STOP_LIMIT)
            if checks.failed > failed_before:
                show_engine(engine)
        try:
            await asyncio.wait_for(a.calls.stop(CHAT_ID), STOP_LIMIT)
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------


async def bounded(checks, what, limit, coro):
    try:
        await asyncio.wait_for(coro, limit)
    except asyncio.TimeoutError:
        checks.check(False, f"{what} finished within {limit:.0f} s")


async def main_async(args, checks):
    api = Api(args.control, timeout=HTTP_TIMEOUT)
    help_text, have = engine_flags(args.bin)
    run_a = args.part in ("a", "both")
    run_b = args.part in ("b", "both")
    if run_a:
        missing = [f for f in ("--video", "--video-size", "--fps") if not have.get(f)]
        if not checks.check(not missing, "(a) `groupcall join --help` lists --video, --video-size and --fps",
                            f"{args.bin} lacks {' '.join(missing)}" if missing else ""):
            run_a = False
    if run_b:
        ok = have.get("--record-video-dir", False)
        if not checks.check(ok, "(b) `groupcall join --help` lists --record-video-dir",
                            "" if ok else f"{args.bin} lacks it"):
            run_b = False
    if not have:
        print(f"cannot run {args.bin} join --help: {help_text}", flush=True)

    keep = args.out
    tmp = None if keep else tempfile.TemporaryDirectory(prefix="groupcall-engine-video-")
    out = keep or tmp.name
    os.makedirs(out, exist_ok=True)
    try:
        # (b) first: ntgcalls has been seen to crash as B leaves at the end of (a) (heap corruption
        # after decoding the engine's video), which would lose (b)'s results.
        if run_b:
            camera_path = os.path.join(out, f"camera-{W}x{H}-i420.yuv")
            write_camera(camera_path, A_SECONDS)
            try:
                await bounded(checks, "(b)", PART_B_LIMIT, part_b(api, checks, args, out, camera_path))
            finally:
                os.remove(camera_path)  # 190 MB
        if run_a:
            await bounded(checks, "(a)", PART_A_LIMIT, part_a(api, checks, args, out))
    finally:
        if tmp:
            tmp.cleanup()
        else:
            print(f"logs and recordings kept in {out}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, help="control API base URL, http://127.0.0.1:PORT")
    parser.add_argument("--bin", required=True, help="the groupcall binary")
    parser.add_argument("--part", choices=["a", "b", "both"], default="both",
                        help="a: the engine publishes; b: the engine records; both (the default)")
    parser.add_argument("--out", help="keep the engine's logs and recordings in this directory")
    args = parser.parse_args()
    args.bin = os.path.abspath(args.bin)
    print(f"ntgcalls {getattr(ntgcalls, '__version__', '')} and {args.bin}: video both ways, against {args.control}",
          flush=True)
    run_and_exit(lambda checks: main_async(args, checks))


if __name__ == "__main__":
    main()
