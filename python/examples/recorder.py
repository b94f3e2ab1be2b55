"""A recorder: joins muted, writes one WAV per speaker (named after the speaker's peer id and
SSRC) and the mix, prints who joins, leaves and speaks, and leaves after --seconds.

    python recorder.py --local http://127.0.0.1:8480 --call 1 --out recordings/ --seconds 60
"""

import argparse
import asyncio

import groupcall


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--local", required=True, help="the local server's control URL (groupcall serve)")
    p.add_argument("--call", type=int, required=True, help="the call id")
    p.add_argument("--user", type=int, default=2002, help="the user to join as")
    p.add_argument("--out", default="recordings", help="the directory for the files")
    p.add_argument("--seconds", type=float, default=60.0, help="how long to record")
    args = p.parse_args()

    engine = groupcall.Engine.local(args.local, args.user)
    call = await engine.join(args.call, record_dir=args.out, record_mix=f"{args.out}/mix.wav")
    speaking = set()

    @call.on("participant_joined")
    def joined(event):
        print(f"joined: peer {event.peer} (SSRC {event.ssrc})", flush=True)

    @call.on("participant_left")
    def left(event):
        print(f"left: peer {event.peer}", flush=True)

    @call.on("speaking")
    def speaks(event):
        if event.voice and event.ssrc not in speaking:
            speaking.add(event.ssrc)
            print(f"speaking: peer {event.peer} (SSRC {event.ssrc})", flush=True)

    await asyncio.sleep(args.seconds)
    summary = await call.leave()
    for r in summary["recordings"]:
        print(f"recorded SSRC {r['ssrc']}: {r['path']}", flush=True)
    print(f"mix: {summary['mix']}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
