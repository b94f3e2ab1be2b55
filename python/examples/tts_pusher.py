"""A text-to-speech pusher: turns each line of text into audio and pushes it into the call as
20 ms frames, at the pace the call takes them (push waits while a second is queued).

    python tts_pusher.py --local http://127.0.0.1:8480 --call 1 "hello" "second line"

The synthesiser here is a stand-in that needs nothing installed (a short chime per word);
replace `synthesise` with your TTS engine's output: 48 kHz mono signed 16-bit PCM. To use
espeak-ng, for instance: `espeak-ng --stdout TEXT` gives a WAV to resample to 48 kHz.
"""

import argparse
import asyncio
import math
import struct

import groupcall

RATE = 48_000
FRAME = RATE // 50  # 20 ms


def synthesise(text: str) -> bytes:
    """A chime per word, its pitch from the word, 0.25 s each with a short pause."""
    samples = []
    for word in text.split():
        freq = 300 + (sum(map(ord, word)) % 500)
        n = RATE // 4
        for i in range(n):
            envelope = min(1.0, i / 480, (n - i) / 480)
            samples.append(int(12_000 * envelope * math.sin(2 * math.pi * freq * i / RATE)))
        samples.extend([0] * (RATE // 20))
    return struct.pack(f"<{len(samples)}h", *samples)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--local", required=True, help="the local server's control URL (groupcall serve)")
    p.add_argument("--call", type=int, required=True, help="the call id")
    p.add_argument("--user", type=int, default=3003, help="the user to join as")
    p.add_argument("lines", nargs="+", help="what to say")
    args = p.parse_args()

    engine = groupcall.Engine.local(args.local, args.user)
    call = await engine.join(args.call, push=True, muted=False)
    events = call.events()  # from now on, so that the end of the audio is not missed
    pushed = 0
    for line in args.lines:
        pcm = synthesise(line)
        for i in range(0, len(pcm), FRAME * 2):
            await call.push(pcm[i : i + FRAME * 2])
        pushed += len(pcm) // 2
        print(f"said: {line!r} ({len(pcm) / 2 / RATE:.2f} s)", flush=True)
    call.end_push()
    async for event in events:
        if event.kind == "source_ended":
            break
    summary = await call.leave()
    print(f"pushed {pushed / RATE:.2f} s; {summary['stats']['packets_sent']} packets sent", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
