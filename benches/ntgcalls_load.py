#!/usr/bin/env python3
"""Load run of ntgcalls participants: the `groupcall bench-load` scenario with ntgcalls.

N ntgcalls participants (one NTgCalls instance each, as N bots would have) join one call of a
running local groupcall server (`groupcall serve`) through its HTTP control API, the way
tests/interop/test_ntgcalls.py does: ntgcalls' join payload goes to POST /calls/{id}/join and
the answer's `params` to ntgcalls' `connect`. Scenarios as in bench-load: `one-speaker` (one
participant plays, N-1 listen), `all-speak` (everyone plays) and `many-calls` (N calls in ONE
NTgCalls instance, as a bot host runs them, each playing the file to one listener; the
listeners are another NTgCalls instance in a child process, so this process's CPU is the
speakers' alone, and the child reports how much of the audio reached them). Speakers play the same signal
as bench-load's (a quiet speech-like tone with a loud 20 ms burst each second) from a raw
s16le 48 kHz file; --probes listeners take the received audio through ntgcalls' EXTERNAL
playback sink (a Python callback that only counts frames), the others join with no playback
sink, like bench-load's listeners without an application sink. By default every listener is
a probe, as in bench-load.

Measured, for this Python process only (the server is another process): CPU seconds per
participant-second over the measured window (resource.getrusage), RSS before joining, once
connected, at the end and at its peak (VmHWM), RSS per extra participant, and
join-to-connected (from ntgcalls' create_call to its CONNECTED event) median and p95. With
one-speaker, the speaker is first measured alone (--alone-seconds, after a second of warm-up)
before the listeners join: CPU per listener is what each adds to that.

Usage: ntgcalls_load.py --control http://127.0.0.1:PORT [-n 10] [--scenario one-speaker]
       [--seconds 15] [--warmup 2] [--probes 4]
benches/compare.sh starts the server and runs this next to `groupcall bench-load`.
The last line printed is one JSON object with the figures.
"""

import argparse
import asyncio
import json
import math
import os
import resource
import sys
import tempfile
import threading
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "interop"))
from control_api import Api  # noqa: E402 (tests/interop/control_api.py, shared with the interop test)

try:
    import numpy as np
    from ntgcalls import (
        AudioDescription,
        ConnectionState,
        MediaDescription,
        MediaSource,
        NTgCalls,
        StreamMode,
    )
except ImportError as e:  # a clear message rather than a traceback
    print(f"ntgcalls_load: {e}; install with: pip install ntgcalls==3.0.5 numpy", file=sys.stderr)
    sys.exit(2)

SAMPLE_RATE = 48000
FRAME = 960
BURST_AMPLITUDE = 16000.0
BURST_HZ = 1000.0
CHAT_ID = -1001234567890  # ntgcalls' key for the call; never reaches Telegram
FIRST_USER = 10000
# How long one call may take to connect; a loaded slow machine may need more
# (NTGCALLS_CONNECT_LIMIT, seconds).
CONNECT_LIMIT = float(os.environ.get("NTGCALLS_CONNECT_LIMIT", "10"))
STOP_LIMIT = 5.0


def signal_second():
    """bench-load's signal: a quiet two-tone voice, and the burst in the first 20 ms."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t)
    x = env * (1500.0 * np.sin(2 * np.pi * 220.0 * t) + 700.0 * np.sin(2 * np.pi * 1700.0 * t))
    x[:FRAME] = BURST_AMPLITUDE * np.sin(2 * np.pi * BURST_HZ * t[:FRAME])
    return x.astype("<i2")


def write_signal(path, seconds):
    one = signal_second().tobytes()
    with open(path, "wb") as f:
        for _ in range(seconds):
            f.write(one)


def memory_kb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_seconds():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def speaker_source(signal):
    return (StreamMode.CAPTURE, MediaDescription(
        microphone=AudioDescription(MediaSource.FILE, SAMPLE_RATE, 1, signal, False),
        speaker=None, camera=None, screen=None,
    ))


def playback_sink():
    # In PLAYBACK mode the other participants' audio comes out of the `microphone` slot
    # (docs/protocol.md §12.7).
    return (StreamMode.PLAYBACK, MediaDescription(
        microphone=AudioDescription(MediaSource.EXTERNAL, SAMPLE_RATE, 1, "", False),
        speaker=None, camera=None, screen=None,
    ))


class Host:
    """One NTgCalls instance holding many calls (py-tgcalls keeps one per client), keyed by
    chat id; counts the bytes of received audio per chat while `counting` is set."""

    def __init__(self):
        self.calls = NTgCalls()
        self.lock = threading.Lock()
        self.connected = {}  # chat id -> monotonic time of CONNECTED
        self.states = {}  # chat id -> last state name
        self.received = {}  # chat id -> bytes of audio from a sender (ssrc != 0)
        self.counting = False
        self.stuck_retries = 0  # calls left and joined again (join_connected)
        self.calls.on_connection_change(self._on_connection)

    def count_frames(self):
        self.calls.on_frames(self._on_frames)

    def _on_connection(self, chat_id, info):
        now = time.monotonic()
        with self.lock:
            self.states[chat_id] = info.state.name
            if info.state == ConnectionState.CONNECTED:
                self.connected.setdefault(chat_id, now)

    def _on_frames(self, chat_id, mode, device, frames):
        if not self.counting:
            return
        got = sum(len(f.data) for f in frames if f.ssrc)
        with self.lock:
            self.received[chat_id] = self.received.get(chat_id, 0) + got

    async def join(self, api, call_id, chat_id, peer, sources):
        """py-tgcalls' order: create_call, the sources, POST /join, connect. Returns the SSRC
        and the join's start time."""
        started = time.monotonic()
        payload = await self.calls.create_call(chat_id)
        for mode, media in sources:
            await self.calls.set_stream_sources(chat_id, mode, media)
        ssrc = json.loads(payload)["ssrc"] & 0xFFFFFFFF
        status, answer = await api.call(
            "POST", f"/calls/{call_id}/join", {"peer": peer, "params": payload}
        )
        if status != 200 or not isinstance(answer.get("params"), str):
            raise RuntimeError(f"chat {chat_id}: join refused: HTTP {status}: {answer}")
        await self.calls.connect(chat_id, answer["params"], False)
        return ssrc, started

    async def wait_connected(self, chat_id):
        deadline = time.monotonic() + CONNECT_LIMIT
        while time.monotonic() < deadline:
            with self.lock:
                at = self.connected.get(chat_id)
            if at is not None:
                return at
            await asyncio.sleep(0.002)
        raise RuntimeError(
            f"chat {chat_id} did not connect within {CONNECT_LIMIT:.0f} s; "
            f"state {self.states.get(chat_id)}"
        )

    async def join_connected(self, api, call_id, chat_id, peer, sources):
        """`join` and `wait_connected`; a call still not CONNECTED after CONNECT_LIMIT is left
        and joined once more, as a bot would (at 50 calls on the 2-core machine ntgcalls 3.0.5
        left one call in CONNECTING in most runs although the server had completed ICE, DTLS
        and SCTP with it). Returns the SSRC, the successful join's start and its CONNECTED time."""
        ssrc, started = await self.join(api, call_id, chat_id, peer, sources)
        try:
            return ssrc, started, await self.wait_connected(chat_id)
        except RuntimeError as e:
            print(f"ntgcalls load: {e}; leaving and joining once more", flush=True)
            self.stuck_retries += 1
        await self.leave_all(api, [(chat_id, call_id, peer, ssrc)])
        with self.lock:
            self.states.pop(chat_id, None)
        ssrc, started = await self.join(api, call_id, chat_id, peer, sources)
        return ssrc, started, await self.wait_connected(chat_id)

    async def leave_all(self, api, joined):
        """`joined`: (chat id, call id, peer, ssrc)."""
        for chat_id, call_id, peer, ssrc in joined:
            try:
                await asyncio.wait_for(self.calls.stop(chat_id), STOP_LIMIT)
            except Exception:
                pass  # never connected, or gone already
            source = ssrc - (1 << 32) if ssrc >= 1 << 31 else ssrc
            await api.call("POST", f"/calls/{call_id}/leave", {"peer": peer, "source": source})


LISTENER_PEER = 20000000
# Listeners that take the audio in `many-calls` unless --probes says otherwise.
MANY_CALLS_PROBES = 10


async def listeners(args):
    """The child of `many-calls`: joins one listener to each call id given, prints `ready`,
    counts received audio between `start` and `stop` lines on stdin, prints the figures as
    JSON, and leaves on `quit` (or end of input)."""
    api = Api(args.control)
    ids = [int(x) for x in args.listen_calls.split(",")]
    # Only the probes take (and so decode) the audio, as in bench-load: on a small machine N
    # decoding listeners would starve the speakers being measured.
    probes = min(len(ids), MANY_CALLS_PROBES if args.probes is None else args.probes)
    host = Host()
    host.count_frames()
    joined = []
    loop = asyncio.get_running_loop()
    try:
        for k, call_id in enumerate(ids):
            chat_id = CHAT_ID - k
            sinks = [playback_sink()] if k < probes else []
            ssrc, _, _ = await host.join_connected(api, call_id, chat_id, LISTENER_PEER + k, sinks)
            joined.append((chat_id, call_id, LISTENER_PEER + k, ssrc))
        print("ready", flush=True)
        t0 = t1 = None
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line == "start":
                with host.lock:
                    host.received.clear()
                host.counting, t0 = True, time.monotonic()
            elif line == "stop":
                host.counting, t1 = False, time.monotonic()
                with host.lock:
                    got = [host.received.get(CHAT_ID - k, 0) for k in range(probes)]
                window = t1 - t0 if t0 is not None else 0.0
                expected = window * SAMPLE_RATE * 2  # bytes of s16 mono per call
                print(json.dumps({
                    "seconds": window,
                    "delivered": [g / expected if expected else None for g in got],
                    "not_connected": [c for c, *_ in joined if host.states.get(c) != "CONNECTED"],
                    "stuck_retries": host.stuck_retries,
                }), flush=True)
            elif line in ("quit", ""):
                break
    finally:
        await host.leave_all(api, joined)


async def many_calls(args):
    """N calls, one NTgCalls instance speaking in all of them; listeners in a child process."""
    api = Api(args.control)
    n = args.participants
    host = Host()
    joined = []
    child = None
    with tempfile.TemporaryDirectory(prefix="groupcall-ntgcalls-load-") as tmp:
        signal = os.path.join(tmp, "signal-s16le-48k-mono.raw")
        write_signal(signal, int(args.warmup + args.seconds + 10 * CONNECT_LIMIT + 60))
        ids = []
        for _ in range(n):
            status, call = await api.call("POST", "/calls", {"peer": 1, "title": "ntgcalls many calls"})
            if status != 200 or "id" not in call:
                raise RuntimeError(f"cannot create a call: HTTP {status}: {call}")
            ids.append(call["id"])
        print(
            f"ntgcalls load: {n} calls in one NTgCalls instance, each with a speaker (measured) "
            f"and a listener (a child process); {args.seconds} s measured after {args.warmup} s "
            f"of warm-up; server {args.control}",
            flush=True,
        )
        child = await asyncio.create_subprocess_exec(
            sys.executable, os.path.abspath(__file__), "--control", args.control,
            "--listen-calls", ",".join(str(i) for i in ids),
            *([] if args.probes is None else ["--probes", str(args.probes)]),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )

        async def child_line():
            line = await asyncio.wait_for(child.stdout.readline(), CONNECT_LIMIT * (n + 1))
            if not line:
                raise RuntimeError("the listeners' process ended early (see its errors above)")
            return line.decode().strip()

        try:
            if await child_line() != "ready":
                raise RuntimeError("the listeners' process did not get ready")
            rss_before = memory_kb("VmRSS")
            join_ms = []
            for k, call_id in enumerate(ids):
                chat_id = CHAT_ID - k
                ssrc, started, at = await host.join_connected(
                    api, call_id, chat_id, FIRST_USER + k, [speaker_source(signal)]
                )
                joined.append((chat_id, call_id, FIRST_USER + k, ssrc))
                join_ms.append(1000.0 * (at - started))
            rss_connected = memory_kb("VmRSS")
            print(
                f"all {n} calls connected; join-to-connected median {percentile(join_ms, 50):.1f} ms, "
                f"p95 {percentile(join_ms, 95):.1f} ms",
                flush=True,
            )
            await asyncio.sleep(args.warmup)
            child.stdin.write(b"start\n")
            await child.stdin.drain()
            cpu0, t0 = cpu_seconds(), time.monotonic()
            await asyncio.sleep(args.seconds)
            cpu1, t1 = cpu_seconds(), time.monotonic()
            child.stdin.write(b"stop\n")
            await child.stdin.drain()
            heard = json.loads(await child_line())
            rss_end = memory_kb("VmRSS")
            peak = memory_kb("VmHWM")
        finally:
            await host.leave_all(api, joined)
            if child.returncode is None:
                try:
                    child.stdin.write(b"quit\n")
                    await child.stdin.drain()
                    await asyncio.wait_for(child.wait(), STOP_LIMIT * 2)
                except Exception:
                    child.kill()

    window = t1 - t0
    cpu = cpu1 - cpu0
    per = cpu / (n * window)
    rss_per = None if rss_before is None or rss_end is None else (rss_end - rss_before) / 1024.0 / n
    delivered = [d for d in heard["delivered"] if d is not None]
    worst = min(delivered) if delivered else None
    mean = sum(delivered) / len(delivered) if delivered else None
    bad = [c for c, *_ in joined if host.states.get(c) != "CONNECTED"]
    print(f"---- ntgcalls load: {n} calls, many-calls ----")
    print(f"CPU over {window:.1f} s: process {cpu:.2f} s")
    print(f"CPU per call: {100 * per:.3f} % of a core")
    print(
        f"RSS: before joining {show(mib(rss_before), 'MiB')}, all connected "
        f"{show(mib(rss_connected), 'MiB')}, at the end {show(mib(rss_end), 'MiB')}, peak "
        f"(VmHWM) {show(mib(peak), 'MiB')}; per call {show(rss_per, 'MiB')}"
    )
    print(
        f"audio that reached the listeners: mean {show(None if mean is None else 100 * mean, '%')}, "
        f"worst call {show(None if worst is None else 100 * worst, '%')}"
    )
    if bad or heard["not_connected"]:
        print(f"not connected at the end: {len(bad)} speakers, {len(heard['not_connected'])} listeners")
    retries = host.stuck_retries + heard.get("stuck_retries", 0)
    if retries:
        print(f"calls left and joined again after staying unconnected for {CONNECT_LIMIT:.0f} s: {retries}")
    print(json.dumps({
        "tool": "ntgcalls",
        "scenario": "many-calls",
        "participants": 2 * n,
        "calls": n,
        "seconds": window,
        "cpu_process_s": cpu,
        "cpu_per_call_pct": 100 * per,
        "cpu_per_participant_pct": 100 * per,
        "rss_before_mib": mib(rss_before),
        "rss_connected_mib": mib(rss_connected),
        "rss_end_mib": mib(rss_end),
        "peak_rss_mib": mib(peak),
        "rss_per_participant_mib": rss_per,
        "join_ms_median": percentile(join_ms, 50),
        "join_ms_p95": percentile(join_ms, 95),
        "delivered_mean": mean,
        "delivered_worst": worst,
        "not_connected_at_end": len(bad) + len(heard["not_connected"]),
        "stuck_retries": retries,
    }), flush=True)


def percentile(values, p):
    """Nearest rank, as bench-load computes it."""
    if not values:
        return None
    v = sorted(values)
    rank = math.ceil(p / 100.0 * len(v))
    return v[min(max(rank, 1), len(v)) - 1]


def mib(kb):
    return None if kb is None else kb / 1024.0


def show(v, unit):
    return "n/a" if v is None else f"{v:.2f} {unit}"


async def run(args):
    api = Api(args.control)
    n = args.participants
    speakers = 1 if args.scenario == "one-speaker" else n
    count = n if args.probes is None else args.probes
    if args.scenario == "one-speaker":
        probes = set(range(1, n)[:count])
    else:
        probes = set(range(n)[:count])
    parts = []
    with tempfile.TemporaryDirectory(prefix="groupcall-ntgcalls-load-") as tmp:
        signal = os.path.join(tmp, "signal-s16le-48k-mono.raw")
        # Long enough that no speaker's file ends while measuring, however slow the joins.
        write_signal(
            signal, int(args.warmup + args.seconds + args.alone_seconds + 10 * CONNECT_LIMIT + 60)
        )
        status, call = await api.call("POST", "/calls", {"peer": 1, "title": "ntgcalls load"})
        if status != 200 or "id" not in call:
            raise RuntimeError(f"cannot create the call: HTTP {status}: {call}")
        call_id = call["id"]
        print(
            f"ntgcalls load: {n} participants, scenario {args.scenario}, {args.seconds} s measured "
            f"after {args.warmup} s of warm-up; server {args.control}",
            flush=True,
        )
        rss_before = memory_kb("VmRSS")
        join_ms = []
        joined = []  # (host, (chat id, call id, peer, ssrc))
        alone = None  # (the speakers' CPU in cores, seconds) before any listener joined
        try:
            for i in range(n):
                # One NTgCalls instance per participant, as N bots would have.
                host = Host()
                parts.append(host)
                sources = [speaker_source(signal)] if i < speakers else []
                if i in probes:
                    host.count_frames()
                    sources.append(playback_sink())
                ssrc, started = await host.join(api, call_id, CHAT_ID, FIRST_USER + i, sources)
                joined.append((host, (CHAT_ID, call_id, FIRST_USER + i, ssrc)))
                at = await host.wait_connected(CHAT_ID)
                join_ms.append(1000.0 * (at - started))
                # The speakers (who join first) play on their own for a while, so that what
                # each listener adds can be told apart, as bench-load does.
                if i + 1 == speakers and speakers < n and args.alone_seconds > 0:
                    await asyncio.sleep(1)
                    a0, at0 = cpu_seconds(), time.monotonic()
                    await asyncio.sleep(args.alone_seconds)
                    a1, at1 = cpu_seconds(), time.monotonic()
                    alone = ((a1 - a0) / (at1 - at0), at1 - at0)
            rss_connected = memory_kb("VmRSS")
            print(
                f"all {n} connected; join-to-connected median {percentile(join_ms, 50):.1f} ms, "
                f"p95 {percentile(join_ms, 95):.1f} ms",
                flush=True,
            )
            await asyncio.sleep(args.warmup)
            for host in parts:
                host.counting = True
            cpu0, t0 = cpu_seconds(), time.monotonic()
            await asyncio.sleep(args.seconds)
            cpu1, t1 = cpu_seconds(), time.monotonic()
            for host in parts:
                host.counting = False
            heard_bytes = sum(sum(h.received.values()) for h in parts)
            rss_end = memory_kb("VmRSS")
            peak = memory_kb("VmHWM")
        finally:
            for host, entry in joined:
                await host.leave_all(api, [entry])

    window = t1 - t0
    cpu = cpu1 - cpu0
    per = cpu / (n * window)
    listeners = n - speakers
    per_listener = None if alone is None else (cpu / window - alone[0]) / max(listeners, 1)
    rss_per = None if rss_before is None or rss_end is None else (rss_end - rss_before) / 1024.0 / n
    rss_per_connected = (
        None if rss_before is None or rss_connected is None else (rss_connected - rss_before) / 1024.0 / n
    )
    states_bad = [i for i, h in enumerate(parts) if h.states.get(CHAT_ID) != "CONNECTED"]
    print(f"---- ntgcalls load: {n} participants, {args.scenario} ----")
    print(f"CPU over {window:.1f} s: process {cpu:.2f} s")
    print(
        f"CPU per participant-second: {per:.5f} s = {100 * per:.3f} % of a core "
        f"({speakers} speaking, {n - speakers} listening)"
    )
    if per_listener is not None:
        print(
            f"CPU per listener: {100 * per_listener:.3f} % of a core (the process with {listeners} "
            f"listeners, less {100 * alone[0]:.3f} % for the {speakers} speaking alone over "
            f"{alone[1]:.1f} s before they joined)"
        )
    print(
        f"RSS: before joining {show(mib(rss_before), 'MiB')}, all connected {show(mib(rss_connected), 'MiB')}, "
        f"at the end {show(mib(rss_end), 'MiB')}, peak (VmHWM) {show(mib(peak), 'MiB')}"
    )
    print(
        f"RSS per extra participant: {show(rss_per, 'MiB')} at the end "
        f"({show(rss_per_connected, 'MiB')} once connected)"
    )
    print(
        f"join-to-connected: median {percentile(join_ms, 50):.1f} ms, p95 {percentile(join_ms, 95):.1f} ms, "
        f"max {max(join_ms):.1f} ms"
    )
    heard_s = heard_bytes / 2 / SAMPLE_RATE
    print(
        f"audio received by {len(probes)} probes while measuring: {heard_s:.1f} s "
        f"({heard_s / max(len(probes), 1) / window:.3f} of real time each)"
    )
    if states_bad:
        print(f"not connected at the end: participants {states_bad}")
    print(
        json.dumps(
            {
                "tool": "ntgcalls",
                "scenario": args.scenario,
                "participants": n,
                "speakers": speakers,
                "probes": len(probes),
                "seconds": window,
                "cpu_process_s": cpu,
                "cpu_per_participant_s_per_s": per,
                "cpu_per_participant_pct": 100 * per,
                "cpu_speakers_alone_pct": None if alone is None else 100 * alone[0],
                "cpu_per_listener_pct": None if per_listener is None else 100 * per_listener,
                "rss_before_mib": mib(rss_before),
                "rss_connected_mib": mib(rss_connected),
                "rss_end_mib": mib(rss_end),
                "peak_rss_mib": mib(peak),
                "rss_per_participant_mib": rss_per,
                "join_ms_median": percentile(join_ms, 50),
                "join_ms_p95": percentile(join_ms, 95),
                "probe_audio_s": heard_s,
                "not_connected_at_end": len(states_bad),
            }
        ),
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, help="control API base URL, http://127.0.0.1:PORT")
    parser.add_argument("-n", "--participants", type=int, default=10)
    parser.add_argument(
        "--scenario", choices=["one-speaker", "all-speak", "many-calls"], default="one-speaker"
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of audio before measuring")
    parser.add_argument(
        "--probes", type=int, default=None, help="listeners with a playback sink (default: all)"
    )
    parser.add_argument(
        "--alone-seconds", type=float, default=5.0,
        help="one-speaker: seconds the speaker is measured alone before the listeners join "
        "(CPU per listener is what they add); 0 skips it",
    )
    parser.add_argument("--listen-calls", help=argparse.SUPPRESS)  # many-calls' child
    args = parser.parse_args()
    if args.listen_calls:
        rc = 0
        try:
            asyncio.run(listeners(args))
        except Exception as e:
            print(f"ntgcalls_load listeners: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            rc = 1
        sys.stdout.flush()
        os._exit(rc)
    least = 1 if args.scenario == "many-calls" else 2  # calls, or participants in one call
    if (args.participants < least or args.seconds <= 0 or args.warmup < 0 or (args.probes or 0) < 0
            or args.alone_seconds < 0):
        parser.error(
            f"need -n >= {least}, --seconds > 0, --warmup >= 0, --probes >= 0, --alone-seconds >= 0"
        )
    rc = 0
    try:
        asyncio.run(many_calls(args) if args.scenario == "many-calls" else run(args))
    except Exception as e:  # ntgcalls raises its own exception types
        print(f"ntgcalls_load: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        rc = 1
    sys.stdout.flush()
    # ntgcalls' native threads can keep the interpreter from exiting: leave at once.
    os._exit(rc)


if __name__ == "__main__":
    main()
