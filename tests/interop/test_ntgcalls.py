#!/usr/bin/env python3
"""Interop: two ntgcalls (libwebrtc) participants in one call of the local groupcall server.

A plays a 1 kHz tone from a raw s16le 48 kHz file; B receives it through ntgcalls' PLAYBACK
`microphone` slot with an EXTERNAL sink (docs/protocol.md §12.7) and collects the PCM frames that
`on_frames` hands over. The test checks that B's frames carry A's SSRC and that what B hears is
the tone: dominant frequency 1000 Hz +- 2 %, RMS above a floor.

Both participants join through the server's HTTP control API exactly as py-tgcalls joins
through Telegram: ntgcalls' join payload goes in as `params` of POST /calls/{id}/join, and the
`params` text of the answer goes to ntgcalls' `connect` unchanged.

Usage: test_ntgcalls.py --control http://127.0.0.1:PORT   (tests/interop/run.sh starts the server)
The last line printed is `interop: N passed, M failed`; the exit status is non-zero on failure.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

from control_api import Api
import ntgcalls
from ntgcalls import (
    AudioDescription,
    ConnectionState,
    MediaDescription,
    MediaSource,
    NTgCalls,
    StreamDevice,
    StreamMode,
)

SAMPLE_RATE = 48000
TONE_HZ = 1000.0
TONE_AMPLITUDE = 0.5  # of full scale
TONE_SECONDS = 20  # longer than the test: the file never ends while we listen
FREQ_TOLERANCE = 0.02
# The tone's RMS is 0.35 of full scale (11 600); Opus and libwebrtc's audio processing keep most
# of it. A floor well below that and far above silence or comfort noise.
RMS_FLOOR = 2000.0
# Opus at 32 kbit/s passes a pure tone almost untouched (observed: ~100 %); garbled audio
# (lost or misordered packets, wrong decoder) spreads its power.
MIN_TONE_SHARE = 0.5
# Audio analysed: this much after the first received frame is skipped (decoder and jitter-buffer
# start-up), then this much is analysed.
SKIP_SECONDS = 0.5
LISTEN_SECONDS = 2.0

TOTAL_LIMIT = 55.0  # the whole test, seconds
CONNECT_LIMIT = 10.0
AUDIO_LIMIT = 15.0
HTTP_TIMEOUT = 5.0

CHAT_ID = -1001234567890  # ntgcalls' key for the call; any id works, it never reaches Telegram
PEER_A, PEER_B = 1001, 1002


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print(f"ok    {what}" + (f": {detail}" if detail else ""), flush=True)
        else:
            self.failed += 1
            print(f"FAIL  {what}" + (f": {detail}" if detail else ""), flush=True)
        return ok


class Participant:
    """One ntgcalls instance, in one call, with its connection events and received frames."""

    def __init__(self, name):
        self.name = name
        self.calls = NTgCalls()
        self.lock = threading.Lock()
        self.states = []  # (monotonic time, ConnectionState)
        self.connected_at = None
        self.connected = threading.Event()
        self.frames = []  # (monotonic time, mode, device, ssrc, bytes)
        self.ssrc = None
        self.join_started = None
        self.calls.on_connection_change(self._on_connection)
        self.calls.on_frames(self._on_frames)

    # ntgcalls calls these from its own threads.
    def _on_connection(self, chat_id, info):
        now = time.monotonic()
        with self.lock:
            self.states.append((now, info.state))
            if info.state == ConnectionState.CONNECTED and self.connected_at is None:
                self.connected_at = now
                self.connected.set()

    def _on_frames(self, chat_id, mode, device, frames):
        now = time.monotonic()
        with self.lock:
            for f in frames:
                self.frames.append((now, mode, device, f.ssrc & 0xFFFFFFFF, bytes(f.data)))

    def state_names(self):
        with self.lock:
            return [s.name for _, s in self.states]

    def frames_snapshot(self):
        with self.lock:
            return list(self.frames)


def write_tone(path):
    t = np.arange(SAMPLE_RATE * TONE_SECONDS) / SAMPLE_RATE
    pcm = TONE_AMPLITUDE * 32767 * np.sin(2 * np.pi * TONE_HZ * t)
    with open(path, "wb") as f:
        f.write(pcm.astype("<i2").tobytes())


def dominant_frequency(samples):
    """Peak of the Hann-windowed spectrum, refined by parabolic interpolation of the log
    magnitude; also the share of the power within +-50 Hz of the peak."""
    x = samples.astype(np.float64)
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    delta = 0.0
    if 0 < k < len(spectrum) - 1:
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
        denom = a - 2 * b + c
        if denom != 0:
            delta = 0.5 * (a - c) / denom
    bin_hz = SAMPLE_RATE / len(x)
    power = spectrum**2
    near = int(round(50 / bin_hz))
    share = power[max(k - near, 0) : k + near + 1].sum() / power.sum()
    return (k + delta) * bin_hz, share


async def wait_for(predicate, limit, step=0.02):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


async def run(api, checks, tone_path):
    a, b = Participant("A"), Participant("B")
    try:
        status, call = await api.call("POST", "/calls", {"peer": PEER_A, "title": "ntgcalls interop"})
        if not checks.check(
            status == 200 and "id" in call,
            "POST /calls created a call",
            f"call {call['id']}" if status == 200 and "id" in call else f"HTTP {status}: {call}",
        ):
            return
        call_id = call["id"]

        # A speaks from the tone file; B listens: in PLAYBACK mode other participants' audio
        # comes out of the `microphone` slot (docs/protocol.md §12.7).
        ok_a = await join_with_sources(
            api, checks, call_id, a, PEER_A,
            StreamMode.CAPTURE,
            MediaDescription(
                microphone=AudioDescription(MediaSource.FILE, SAMPLE_RATE, 1, tone_path, False),
                speaker=None, camera=None, screen=None,
            ),
        )
        ok_b = await join_with_sources(
            api, checks, call_id, b, PEER_B,
            StreamMode.PLAYBACK,
            MediaDescription(
                microphone=AudioDescription(MediaSource.EXTERNAL, SAMPLE_RATE, 1, "", False),
                speaker=None, camera=None, screen=None,
            ),
        )
        if not (ok_a and ok_b):
            return

        await wait_for(lambda: a.connected.is_set() and b.connected.is_set(), CONNECT_LIMIT)
        for p in (a, b):
            up = p.connected.is_set()
            checks.check(
                up,
                f"{p.name}: ntgcalls reported CONNECTED",
                f"join-to-connected {1000 * (p.connected_at - p.join_started):.0f} ms"
                if up
                else f"not within {CONNECT_LIMIT:.0f} s; states {p.state_names()}",
            )
        if not (a.connected.is_set() and b.connected.is_set()):
            return

        status, info = await api.call("GET", f"/calls/{call_id}")
        sources = sorted(x.get("source", 0) & 0xFFFFFFFF for x in info.get("participants", []))
        checks.check(
            status == 200 and sources == sorted([a.ssrc, b.ssrc]),
            "the server lists both participants with their sources",
            f"{sources}",
        )

        # B hears A: wait for enough of A's audio, then analyse it.
        need = int((SKIP_SECONDS + LISTEN_SECONDS) * SAMPLE_RATE) * 2

        def heard_from_a():
            return sum(len(f[4]) for f in b.frames_snapshot() if f[3] == a.ssrc) >= need

        heard = await wait_for(heard_from_a, AUDIO_LIMIT, step=0.05)
        frames = b.frames_snapshot()
        if not checks.check(
            heard,
            f"B received {SKIP_SECONDS + LISTEN_SECONDS:.1f} s of audio frames tagged with A's SSRC",
            f"{sum(1 for f in frames if f[3] == a.ssrc)} frames from A"
            + (f", first after {1000 * (frames[0][0] - b.connected_at):.0f} ms of B's connection" if frames else ""),
        ):
            return

        others = sorted({f[3] for f in frames if f[3] != a.ssrc})
        kinds = sorted({(f[1].name, f[2].name) for f in frames})
        checks.check(
            not others and kinds == [(StreamMode.PLAYBACK.name, StreamDevice.MICROPHONE.name)],
            "every frame B received is A's, as PLAYBACK/MICROPHONE",
            f"other SSRCs {others}, (mode, device) {kinds}",
        )

        pcm = b"".join(f[4] for f in frames if f[3] == a.ssrc)
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        start = int(SKIP_SECONDS * SAMPLE_RATE)
        window = samples[start : start + int(LISTEN_SECONDS * SAMPLE_RATE)]
        freq, share = dominant_frequency(window)
        rms = float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))
        print(f"received: dominant frequency {freq:.1f} Hz ({100 * share:.0f} % of the power "
              f"within 50 Hz), RMS {rms:.0f} ({rms / 32768:.3f} of full scale)", flush=True)
        checks.check(
            abs(freq - TONE_HZ) <= FREQ_TOLERANCE * TONE_HZ,
            f"B hears {TONE_HZ:.0f} Hz +- {100 * FREQ_TOLERANCE:.0f} %",
            f"dominant frequency {freq:.1f} Hz",
        )
        checks.check(
            share >= MIN_TONE_SHARE,
            f"the received tone is clean: at least {100 * MIN_TONE_SHARE:.0f} % of the power within 50 Hz of the peak",
            f"{100 * share:.1f} %",
        )
        checks.check(rms >= RMS_FLOOR, f"B's received audio RMS is above {RMS_FLOOR:.0f}", f"RMS {rms:.0f}")

        for p, peer in ((a, PEER_A), (b, PEER_B)):
            status, v = await api.call(
                "POST", f"/calls/{call_id}/leave", {"peer": peer, "source": signed32(p.ssrc)}
            )
            checks.check(status == 200, f"{p.name} left the call", "" if status == 200 else f"HTTP {status}: {v}")
    finally:
        for p in (a, b):
            try:
                await asyncio.wait_for(p.calls.stop(CHAT_ID), 5)
            except Exception:
                pass  # never connected, or already gone
        for p in (a, b):
            if p.connected_at is not None and p.join_started is not None:
                print(f"ntgcalls {p.name}: join-to-connected {1000 * (p.connected_at - p.join_started):.0f} ms",
                      flush=True)


async def join_with_sources(api, checks, call_id, p, peer, mode, media):
    """create_call, then the media sources, then the join: py-tgcalls' order."""
    try:
        payload = await p.calls.create_call(CHAT_ID)
        await p.calls.set_stream_sources(CHAT_ID, mode, media)
    except Exception as e:
        checks.check(False, f"{p.name}: ntgcalls set up its call", f"{type(e).__name__}: {e}")
        return False
    return await join_payload(api, checks, call_id, p, peer, payload)


async def join_payload(api, checks, call_id, p, peer, payload):
    """POST the payload to /join, hand the answer to ntgcalls' connect."""
    try:
        p.ssrc = json.loads(payload)["ssrc"] & 0xFFFFFFFF
    except (ValueError, KeyError, TypeError) as e:
        checks.check(False, f"{p.name}: ntgcalls' join payload has an ssrc", f"{e}: {payload!r}")
        return False
    p.join_started = time.monotonic()
    status, answer = await api.call("POST", f"/calls/{call_id}/join", {"peer": peer, "params": payload})
    if not checks.check(
        status == 200 and isinstance(answer.get("params"), str),
        f"{p.name}: the server accepted ntgcalls' join payload",
        f"source {p.ssrc}" if status == 200 else f"HTTP {status}: {answer}",
    ):
        return False
    try:
        await p.calls.connect(CHAT_ID, answer["params"], False)
    except Exception as e:  # ntgcalls raises its own exception types
        checks.check(False, f"{p.name}: ntgcalls accepted the server's answer",
                     f"{type(e).__name__}: {e}")
        return False
    return True


def signed32(x):
    return x - (1 << 32) if x >= 1 << 31 else x


async def main_async(args, checks):
    api = Api(args.control, timeout=HTTP_TIMEOUT)
    with tempfile.TemporaryDirectory(prefix="groupcall-interop-") as tmp:
        tone = os.path.join(tmp, "tone-1khz-s16le-48k-mono.raw")
        write_tone(tone)
        try:
            await asyncio.wait_for(run(api, checks, tone), TOTAL_LIMIT)
        except asyncio.TimeoutError:
            checks.check(False, f"the test finished within {TOTAL_LIMIT:.0f} s")


def run_and_exit(run):
    """Runs `run(checks)` (a coroutine function) under asyncio, prints the summary line the
    runner reads (`interop: N passed, M failed`) and leaves at once: ntgcalls' native threads
    can keep the interpreter from exiting."""
    checks = Checks()
    try:
        asyncio.run(run(checks))
    except Exception:
        traceback.print_exc()
        checks.check(False, "the test ran without an unexpected exception")
    if checks.passed == 0 and checks.failed == 0:
        checks.check(False, "at least one check ran")
    print(f"interop: {checks.passed} passed, {checks.failed} failed", flush=True)
    sys.stdout.flush()
    os._exit(0 if checks.failed == 0 else 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, help="control API base URL, http://127.0.0.1:PORT")
    args = parser.parse_args()
    print(f"ntgcalls {getattr(ntgcalls, '__version__', '')} against {args.control}".replace("  ", " "),
          flush=True)
    run_and_exit(lambda checks: main_async(args, checks))


if __name__ == "__main__":
    main()
