"""A minimal music bot: plays a queue of files or URLs into a call, one after another with no
gap, prints what plays and where it is, and leaves when the queue is done.

    python music_bot.py --local http://127.0.0.1:8480 --call 1 song1.mp3 song2.flac

Against Telegram, replace the engine and the call with an MTProto adapter, e.g. Pyrogram:

    from groupcall.pyrogram import PyrogramSignaling
    call = await groupcall.Engine().join(PyrogramSignaling(app, "@mygroup"), play=first)
"""

import argparse
import asyncio

import groupcall


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--local", required=True, help="the local server's control URL (groupcall serve)")
    p.add_argument("--call", type=int, required=True, help="the call id")
    p.add_argument("--user", type=int, default=1001, help="the user to join as")
    p.add_argument("--preset", default="music", choices=["voice", "music"])
    p.add_argument("tracks", nargs="+", help="files or http(s) URLs to play, in order")
    args = p.parse_args()

    engine = groupcall.Engine.local(args.local, args.user)
    call = await engine.join(args.call, play=args.tracks[0], preset=args.preset)
    for track in args.tracks[1:]:
        await call.enqueue(track)
    remaining = len(args.tracks)

    @call.on("source_ended")
    def ended(event):
        nonlocal remaining
        remaining -= 1
        print(f"finished {event.name} ({remaining} left)", flush=True)

    @call.on("source_error")
    def failed(event):
        nonlocal remaining
        remaining -= 1
        print(f"cannot play {event.name}: {event.error}", flush=True)

    while remaining > 0:
        await asyncio.sleep(1)
        if call.position is not None:
            print(f"playing at {call.position:.1f} s", flush=True)
    summary = await call.leave()
    print(f"left: {summary['stats']['packets_sent']} packets sent", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
