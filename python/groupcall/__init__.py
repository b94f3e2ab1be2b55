"""groupcall: join Telegram group calls from Python.

A native engine (Rust, in this package's ``_native`` module) joins the call, plays files,
streams and pushed frames, and records every speaker; this package is its asyncio API::

    import groupcall

    async with groupcall.Engine.local("http://127.0.0.1:8480", user=1001) as engine:
        call = await engine.join(1, play="song.mp3")
        async for event in call.events():
            print(event.kind, event.data)

On Telegram, bring your own MTProto client: ``groupcall.pyrogram.PyrogramSignaling(app, chat)``
or ``groupcall.telethon.TelethonSignaling(client, chat)``, passed to ``engine.join``.
"""

from ._native import (
    BusyError,
    CallEndedError,
    ConfigError,
    DeviceError,
    GroupcallError,
    ServerError,
    SourceError,
    __version__,
)
from ._call import Call, Engine, Event
from .signaling import Signaling, SignalingError

__all__ = [
    "BusyError",
    "Call",
    "CallEndedError",
    "ConfigError",
    "DeviceError",
    "Engine",
    "Event",
    "GroupcallError",
    "ServerError",
    "Signaling",
    "SignalingError",
    "SourceError",
    "__version__",
]
