#!/usr/bin/env python3
"""One ntgcalls participant playing an audio file the way py-tgcalls plays one.

The music-bot case of benches/playback.sh: one NTgCalls instance joins a call of a running
local groupcall server (`groupcall serve`) through its HTTP control API (as
benches/ntgcalls_load.py does: ntgcalls' join payload to POST /calls/{id}/join, the answer's
`params` to ntgcalls' `connect`) and plays the file through ntgcalls' SHELL media source: a
shell command whose standard output is raw s16le PCM, here
`ffmpeg -i FILE -f s16le -ac 2 -ar 48000 -v quiet pipe:1`, as py-tgcalls builds it. ntgcalls
runs the command itself, so the ffmpeg process is a descendant of this one.

It stays until --duration seconds after connecting, SIGTERM or SIGINT, or the end of the file,
then stops the call and leaves through the API.

Printed on standard output, one JSON object a line, each with `unix_us` (wall clock,
microseconds since the Unix epoch, to line up with groupcall's --clock-log):
  start        the script began (before ntgcalls is imported)
  imported     ntgcalls is imported
  create_call  create_call is called (sources are set, then POST /join, then connect)
  connect      connect is called with the server's answer
  connected    ntgcalls reports CONNECTED
  stream_end   ntgcalls says the source ended (the file was played to its end)
  left         the call is stopped
With --idle S it only imports ntgcalls, makes one NTgCalls instance and sleeps S seconds (the
baseline of an idle interpreter holding ntgcalls); `ready` is printed once it has.

Usage: ntgcalls_play.py --control http://127.0.0.1:PORT --call ID --file song.mp3
       [--peer 1000] [--duration S] [--channels 2] [--ffmpeg ffmpeg]
       ntgcalls_play.py --idle S
"""

import time

START_US = time.time_ns() // 1000

import argparse  # noqa: E402 (the start time is taken before anything is imported)
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "interop"))
from control_api import Api  # noqa: E402 (tests/interop/control_api.py, shared with the interop test)

SAMPLE_RATE = 48000
CHAT_ID = -1001234567890  # ntgcalls' key for the call; never reaches Telegram
CONNECT_LIMIT = 10.0
STOP_LIMIT = 5.0


def now_us():
    return time.time_ns() // 1000


def emit(event, unix_us=None, **extra):
    print(json.dumps({"event": event, "unix_us": now_us() if unix_us is None else unix_us, **extra}),
          flush=True)


def shell_command(ffmpeg, path, channels):
    """py-tgcalls' command for a local file: decode, resample and write raw PCM to stdout."""
    return (
        f"{shlex.quote(ffmpeg)} -i {shlex.quote(path)} -f s16le -ac {channels} "
        f"-ar {SAMPLE_RATE} -v quiet pipe:1"
    )


async def idle(seconds):
    import ntgcalls

    calls = ntgcalls.NTgCalls()
    emit("ready")
    await asyncio.sleep(seconds)
    del calls


async def play(args, stop):
    from ntgcalls import AudioDescription, ConnectionState, MediaDescription, MediaSource, NTgCalls, StreamMode

    emit("imported")
    api = Api(args.control)
    calls = NTgCalls()
    lock = threading.Lock()
    connected = threading.Event()
    ended = threading.Event()
    states = []

    def on_connection(chat_id, info):
        with lock:
            states.append(info.state.name)
        if info.state == ConnectionState.CONNECTED and not connected.is_set():
            connected.set()
            emit("connected")

    def on_stream_end(chat_id, kind, device):
        if not ended.is_set():
            ended.set()
            emit("stream_end")

    calls.on_connection_change(on_connection)
    calls.on_stream_end(on_stream_end)
    command = shell_command(args.ffmpeg, os.path.abspath(args.file), args.channels)
    ssrc = None
    try:
        emit("create_call", command=command)
        payload = await calls.create_call(CHAT_ID)
        await calls.set_stream_sources(CHAT_ID, StreamMode.CAPTURE, MediaDescription(
            microphone=AudioDescription(MediaSource.SHELL, SAMPLE_RATE, args.channels, command, False),
            speaker=None, camera=None, screen=None,
        ))
        ssrc = json.loads(payload)["ssrc"] & 0xFFFFFFFF
        status, answer = await api.call(
            "POST", f"/calls/{args.call}/join", {"peer": args.peer, "params": payload}
        )
        if status != 200 or not isinstance(answer.get("params"), str):
            raise RuntimeError(f"join refused: HTTP {status}: {answer}")
        emit("connect")
        await calls.connect(CHAT_ID, answer["params"], False)
        deadline = time.monotonic() + CONNECT_LIMIT
        while not connected.is_set():
            if time.monotonic() > deadline or stop.is_set():
                raise RuntimeError(f"not connected within {CONNECT_LIMIT:.0f} s; states {states}")
            await asyncio.sleep(0.002)
        # No event marks ntgcalls' first packet (NTgCalls.time counts whole seconds played), so
        # benches/playback.sh times the first audio its listener hears instead.
        end = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set() and not ended.is_set():
            if end is not None and time.monotonic() >= end:
                break
            await asyncio.sleep(0.05)
    finally:
        try:
            await asyncio.wait_for(calls.stop(CHAT_ID), STOP_LIMIT)
        except Exception:
            pass  # never connected, or gone already
        if ssrc is not None:
            source = ssrc - (1 << 32) if ssrc >= 1 << 31 else ssrc
            await api.call("POST", f"/calls/{args.call}/leave", {"peer": args.peer, "source": source})
        emit("left", states=states)


async def main_async(args):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.idle is not None:
        idle_task = asyncio.ensure_future(idle(args.idle))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([idle_task, stopped], return_when=asyncio.FIRST_COMPLETED)
        return
    await play(args, stop)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", help="control API base URL, http://127.0.0.1:PORT")
    parser.add_argument("--call", type=int, help="the call id (POST /calls made it)")
    parser.add_argument("--peer", type=int, default=1000, help="the user id to join as")
    parser.add_argument("--file", help="the audio file to play")
    parser.add_argument("--duration", type=float, help="seconds to stay once connected")
    parser.add_argument("--channels", type=int, default=2, choices=[1, 2])
    parser.add_argument("--ffmpeg", default="ffmpeg", help="the ffmpeg of the shell command")
    parser.add_argument("--idle", type=float, help="only import ntgcalls and sleep this long")
    args = parser.parse_args()
    if args.idle is None and (args.control is None or args.call is None or args.file is None):
        parser.error("need --control, --call and --file (or --idle S)")
    if args.file is not None and not os.path.isfile(args.file):
        parser.error(f"no such file: {args.file}")
    emit("start", START_US)
    rc = 0
    try:
        asyncio.run(main_async(args))
    except ImportError as e:
        print(f"ntgcalls_play: {e}; install with: pip install ntgcalls==3.0.5", file=sys.stderr)
        rc = 2
    except Exception as e:  # ntgcalls raises its own exception types
        print(f"ntgcalls_play: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        rc = 1
    sys.stdout.flush()
    # ntgcalls' native threads can keep the interpreter from exiting: leave at once.
    os._exit(rc)


if __name__ == "__main__":
    main()
