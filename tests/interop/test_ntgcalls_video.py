#!/usr/bin/env python3
"""Interop, video: ntgcalls A publishes, ntgcalls B receives, through the local groupcall server.

A publishes a raw I420 file (four flat quadrants of distinct colours, and a small box moving
along the middle so that the encoder has motion to code) as its camera, or as a screen share
through a second, presentation connection (`POST /calls/{id}/presentation/join`, as
`phone.joinGroupCallPresentation`). B subscribes to A's endpoint with the source groups the server
lists for A (`add_incoming_video`, as py-tgcalls does from `groupCallParticipant.video` /
`.presentation`) and collects the decoded frames ntgcalls hands over at their native size.

Checks: B's frames carry SIM[0] of A's groups and the right device (CAMERA or SCREEN); at least
20 frames per second over 3 s; the full size of the source (the server forwards the top simulcast
layer); each quadrant's mean Y, U and V within tolerance of what A sent.

Usage: test_ntgcalls_video.py --control URL --kind camera|screen   (tests/interop/run.sh starts the
server; run it with `--video-codec vp8` to prove VP8 when H.264 is not offered).
The last line printed is `interop: N passed, M failed`; the exit status is non-zero on failure.
"""

import argparse
import asyncio
import json
import os
import tempfile
import time

import numpy as np

from control_api import Api
from test_ntgcalls import CHAT_ID, Participant, join_with_sources, run_and_exit, wait_for
import ntgcalls
from ntgcalls import MediaDescription, MediaSource, StreamDevice, StreamMode, SsrcGroup, VideoDescription

W, H, FPS = 640, 360, 30
SECONDS = 12  # of video in the file; ntgcalls does not loop it
MIN_FPS = 20.0
MEASURE_SECONDS = 3.0
# (Y, U, V) of the quadrants: top-left, top-right, bottom-left, bottom-right.
QUADRANTS = [(60, 90, 160), (120, 200, 100), (170, 60, 120), (220, 140, 200)]
TOLERANCE = 14  # per mean component, 0..255: H.264/VP8 at these rates keep flat areas close
TOTAL_LIMIT = 60.0
CONNECT_LIMIT = 10.0
VIDEO_LIMIT = 20.0
PEER_A, PEER_B = 1001, 1002


def write_video(path):
    """SECONDS of I420 at W x H: flat quadrants, a 24x24 box moving along the horizontal middle."""
    y = np.zeros((H, W), np.uint8)
    u = np.zeros((H // 2, W // 2), np.uint8)
    v = np.zeros((H // 2, W // 2), np.uint8)
    for i, (qy, qu, qv) in enumerate(QUADRANTS):
        r, c = divmod(i, 2)
        y[r * H // 2 : (r + 1) * H // 2, c * W // 2 : (c + 1) * W // 2] = qy
        u[r * H // 4 : (r + 1) * H // 4, c * W // 4 : (c + 1) * W // 4] = qu
        v[r * H // 4 : (r + 1) * H // 4, c * W // 4 : (c + 1) * W // 4] = qv
    with open(path, "wb") as f:
        for n in range(SECONDS * FPS):
            frame = y.copy()
            x0 = (n * 6) % (W - 24)
            frame[H // 2 - 12 : H // 2 + 12, x0 : x0 + 24] = 255
            f.write(frame.tobytes())
            f.write(u.tobytes())
            f.write(v.tobytes())


def quadrant_means(data, w, h):
    """Mean (Y, U, V) of each quadrant's inner half (away from edges and the moving box)."""
    a = np.frombuffer(data, np.uint8)
    y = a[: w * h].reshape(h, w)
    u = a[w * h : w * h + (w // 2) * (h // 2)].reshape(h // 2, w // 2)
    v = a[w * h + (w // 2) * (h // 2) : w * h + 2 * (w // 2) * (h // 2)].reshape(h // 2, w // 2)
    out = []
    for i in range(4):
        r, c = divmod(i, 2)

        def inner(plane, pw, ph):
            qh, qw = ph // 2, pw // 2
            top, left = r * qh + qh // 4, c * qw + qw // 4
            return float(plane[top : top + qh // 2, left : left + qw // 2].mean())

        out.append((inner(y, w, h), inner(u, w // 2, h // 2), inner(v, w // 2, h // 2)))
    return out


class Receiver(Participant):
    """B: also keeps each video frame's size and bytes."""

    def __init__(self, name):
        super().__init__(name)
        self.video = []  # (monotonic time, device, ssrc, width, height, bytes)
        self.calls.on_frames(self._on_video)

    def _on_video(self, chat_id, mode, device, frames):
        now = time.monotonic()
        with self.lock:
            for f in frames:
                if device in (StreamDevice.CAMERA, StreamDevice.SCREEN):
                    d = f.frame_data
                    self.video.append((now, device, f.ssrc & 0xFFFFFFFF, d.width, d.height, bytes(f.data)))

    def video_snapshot(self):
        with self.lock:
            return list(self.video)


async def run(api, checks, kind, video_path):
    a, b = Participant("A"), Receiver("B")
    try:
        status, call = await api.call("POST", "/calls", {"peer": PEER_A, "title": f"ntgcalls video {kind}"})
        if not checks.check(status == 200 and "id" in call, "POST /calls created a call", f"HTTP {status}"):
            return
        call_id = call["id"]
        camera = VideoDescription(MediaSource.FILE, W, H, FPS, video_path, False)
        ok_a = await join_with_sources(
            api, checks, call_id, a, PEER_A, StreamMode.CAPTURE,
            MediaDescription(microphone=None, speaker=None, camera=camera if kind == "camera" else None, screen=None),
        )
        # Native size (0 x 0): what the decoder produced, not scaled by ntgcalls.
        sink = VideoDescription(MediaSource.EXTERNAL, 0, 0, FPS, "", False)
        ok_b = await join_with_sources(
            api, checks, call_id, b, PEER_B, StreamMode.PLAYBACK,
            MediaDescription(microphone=None, speaker=None, camera=sink, screen=sink),
        )
        if not (ok_a and ok_b):
            return
        await wait_for(lambda: a.connected.is_set() and b.connected.is_set(), CONNECT_LIMIT)
        if not checks.check(a.connected.is_set() and b.connected.is_set(), "A and B reported CONNECTED",
                            f"A {a.state_names()}, B {b.state_names()}"):
            return

        if kind == "screen":
            # The presentation: a second connection with its own payload and answer.
            try:
                payload = await a.calls.init_presentation(CHAT_ID)
                await a.calls.set_stream_sources(
                    CHAT_ID, StreamMode.CAPTURE,
                    MediaDescription(microphone=None, speaker=None, camera=None,
                                     screen=VideoDescription(MediaSource.FILE, W, H, FPS, video_path, False)),
                )
            except Exception as e:
                checks.check(False, "A: ntgcalls set up its presentation", f"{type(e).__name__}: {e}")
                return
            status, joined = await api.call("POST", f"/calls/{call_id}/presentation/join",
                                            {"peer": PEER_A, "params": payload})
            if not checks.check(status == 200 and isinstance(joined.get("params"), str),
                                "the server accepted A's presentation payload",
                                "" if status == 200 else f"HTTP {status}: {joined}"):
                return
            answer = json.loads(joined["params"])
            checks.check("audio" not in answer and answer.get("video", {}).get("endpoint", "").startswith("screen-"),
                         "the presentation answer has the screen's endpoint and no audio section",
                         f"keys {sorted(answer)}")
            try:
                await a.calls.connect(CHAT_ID, joined["params"], True)
            except Exception as e:
                checks.check(False, "A: ntgcalls accepted the presentation answer", f"{type(e).__name__}: {e}")
                return

        # B subscribes as py-tgcalls does, from what the server lists for A.
        status, info = await api.call("GET", f"/calls/{call_id}")
        mine = [p for p in info.get("participants", []) if p.get("peer") == PEER_A]
        video = (mine[0].get("presentation") if kind == "screen" else mine[0].get("video")) if mine else None
        if not checks.check(bool(video), f"the server lists A's {'presentation' if kind == 'screen' else 'video'}",
                            f"endpoint {video['endpoint']}" if video else json.dumps(mine)[:300]):
            return
        groups = [SsrcGroup(g["semantics"], [s & 0xFFFFFFFF for s in g["sources"]]) for g in video["source_groups"]]
        sim = [g for g in video["source_groups"] if g["semantics"] == "SIM"][0]["sources"]
        sim0 = sim[0] & 0xFFFFFFFF
        checks.check(len(sim) == (2 if kind == "screen" else 3), f"A's SIM group has {len(sim)} layers")
        got = await b.calls.add_incoming_video(CHAT_ID, 0, video["endpoint"], groups)
        checks.check((got & 0xFFFFFFFF) == sim0, "B's incoming video is on SIM[0]", f"{got} vs {sim0}")

        # Frames: wait for the first, then for MEASURE_SECONDS of them after a second of start-up.
        await wait_for(lambda: len(b.video_snapshot()) > 0, VIDEO_LIMIT, step=0.05)
        frames = b.video_snapshot()
        if not checks.check(bool(frames), "B decoded video frames",
                            f"first {1000 * (frames[0][0] - b.connected_at):.0f} ms after B connected"
                            if frames else f"none within {VIDEO_LIMIT:.0f} s"):
            return
        start = frames[0][0] + 1.0
        await asyncio.sleep(max(0.0, start + MEASURE_SECONDS - time.monotonic()) + 0.1)
        frames = b.video_snapshot()
        window = [f for f in frames if start <= f[0] < start + MEASURE_SECONDS]
        fps = len(window) / MEASURE_SECONDS
        device = StreamDevice.SCREEN if kind == "screen" else StreamDevice.CAMERA
        checks.check(all(f[1] == device and f[2] == sim0 for f in frames),
                     f"every frame is {device.name} on SIM[0]",
                     f"{sorted({(f[1].name, f[2]) for f in frames})}")
        checks.check(fps >= MIN_FPS, f"B receives at least {MIN_FPS:.0f} frames per second", f"{fps:.1f} fps")
        sizes = sorted({(f[3], f[4]) for f in window})
        last = window[-1] if window else frames[-1]
        checks.check((last[3], last[4]) == (W, H), f"B gets the full {W}x{H} (the top simulcast layer)",
                     f"sizes in the window {sizes}")
        means = quadrant_means(last[5], last[3], last[4])
        worst = max(abs(m - e) for got_q, want_q in zip(means, QUADRANTS) for m, e in zip(got_q, want_q))
        print("quadrant means (Y, U, V): " + "; ".join(f"({y:.0f}, {u:.0f}, {v:.0f})" for y, u, v in means),
              flush=True)
        checks.check(worst <= TOLERANCE, f"each quadrant's colour is what A sent (within {TOLERANCE})",
                     f"largest difference {worst:.1f}")
    finally:
        for p in (a, b):
            try:
                await asyncio.wait_for(p.calls.stop(CHAT_ID), 5)
            except Exception:
                pass


async def main_async(args, checks):
    api = Api(args.control, timeout=5.0)
    with tempfile.TemporaryDirectory(prefix="groupcall-interop-video-") as tmp:
        path = os.path.join(tmp, f"pattern-{W}x{H}-i420.yuv")
        write_video(path)
        try:
            await asyncio.wait_for(run(api, checks, args.kind, path), TOTAL_LIMIT)
        except asyncio.TimeoutError:
            checks.check(False, f"the test finished within {TOTAL_LIMIT:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, help="control API base URL, http://127.0.0.1:PORT")
    parser.add_argument("--kind", choices=["camera", "screen"], default="camera")
    args = parser.parse_args()
    print(f"ntgcalls {getattr(ntgcalls, '__version__', '')} video ({args.kind}) against {args.control}", flush=True)
    run_and_exit(lambda checks: main_async(args, checks))


if __name__ == "__main__":
    main()
