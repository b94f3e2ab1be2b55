"""The asyncio API: an Engine joins calls; a Call plays, records, mutes, and hands over events
and frames.

Everything here runs on the asyncio loop of whoever calls it. The engine itself runs on its own
threads inside ``groupcall._native``; it never calls Python. Results and events reach Python as
awaitables resolved on this loop, so a user's handler that blocks the loop delays only the
handlers, never the audio (docs/python.md).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Union

from . import _native
from ._bridge import run
from ._pump import LinePump
from .signaling import Signaling

log = logging.getLogger("groupcall")

#: Events kept per ``events()`` iterator that is not read; past this the oldest is dropped.
EVENT_BACKLOG = 1000


@dataclass(frozen=True)
class Event:
    """Something that happened in a call.

    ``kind`` is one of ``connecting``, ``connected``, ``disconnected``, ``rejoining``,
    ``rejoined``, ``participant_joined``, ``participant_left``, ``participant_updated``,
    ``speaking``, ``source_ended``, ``source_error``, ``recording_error``, ``device_failed``,
    ``ended``, and ``handler_error`` (a handler of this package raised). ``data`` holds the
    rest; its keys read as attributes too (``event.level``). ``ssrc`` is unsigned, as in
    frames and file names; ``data["source"]`` keeps Telegram's signed form.
    """

    kind: str
    data: Dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.data[name]
        except KeyError:
            raise AttributeError(f"a {self.kind!r} event has no {name!r}") from None

    @property
    def ssrc(self) -> Optional[int]:
        source = self.data.get("source")
        return None if source is None else source & 0xFFFFFFFF


def _event(line: str) -> Event:
    data = json.loads(line)
    return Event(data.pop("event"), data)


Handler = Callable[[Any], Any]


class _Fanout:
    """One pull loop per stream (events or frames; each pull brings everything that waited),
    handing each item to every handler and every open iterator. Handlers run in the order they
    were added; an exception in one is logged, counted and turned into a ``handler_error``
    event, and the loop goes on."""

    def __init__(self, call: "Call", pull: Callable[[], Any], name: str) -> None:
        self._call = call
        self._pull = pull
        self._name = name
        self.handlers: List[tuple[Optional[str], Handler]] = []
        self.queues: List[asyncio.Queue] = []
        self.task: Optional[asyncio.Task] = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name=f"groupcall {self._name}"
            )

    async def _run(self) -> None:
        while True:
            try:
                items = await self._pull()
            except Exception as e:  # the engine refused: end the iterators, say why once
                log.error("groupcall: the %s stream stopped: %r", self._name, e)
                items = None
            for item in [None] if items is None else items:
                for q in list(self.queues):
                    if q.full():
                        q.get_nowait()
                        self._call.events_dropped += 1
                    q.put_nowait(item)
                if item is None:
                    return
                kind = getattr(item, "kind", None)
                for want, handler in list(self.handlers):
                    if want is None or want == kind:
                        self._call._run_handler(handler, item)

    def iterate(self) -> AsyncIterator[Any]:
        q: asyncio.Queue = asyncio.Queue(EVENT_BACKLOG)
        self.queues.append(q)
        self.start()

        async def items() -> AsyncIterator[Any]:
            try:
                while (item := await q.get()) is not None:
                    yield item
            finally:
                if q in self.queues:
                    self.queues.remove(q)

        return items()


class Call:
    """One joined call. Made by :meth:`Engine.join`; leave it with :meth:`leave` (or
    ``async with``)."""

    def __init__(self, native: Any, pump: Optional[LinePump] = None, frames: bool = False) -> None:
        self._native = native
        self._has_frames = frames
        self._pump = pump
        self._events = _Fanout(self, self._next_events, "events")
        self._frames = _Fanout(self, lambda: run(native.next_frames), "frames")
        self._left: Optional[dict] = None
        self._handler_tasks: set[asyncio.Task] = set()
        self._reported: set[str] = set()
        #: Exceptions raised by this call's handlers, in order (the last 100).
        self.handler_errors: List[BaseException] = []
        #: Events or frames an unread iterator dropped (it keeps the newest 1000).
        self.events_dropped = 0

    async def _next_events(self) -> Optional[List[Event]]:
        lines = await run(self._native.next_events)
        return None if lines is None else [_event(line) for line in lines]

    # -- events and frames ---------------------------------------------------------------

    def events(self) -> AsyncIterator[Event]:
        """Every event from now on, as an async iterator that ends with the call."""
        return self._events.iterate()

    def frames(self) -> AsyncIterator[Any]:
        """Every received frame (needs ``frames=True``): 20 ms of one speaker, with ``ssrc``,
        ``peer``, ``channels``, ``kind`` and ``pcm`` (48 kHz s16le bytes)."""
        self._need_frames()
        return self._frames.iterate()

    def _need_frames(self) -> None:
        if not self._has_frames:
            raise _native.ConfigError("this call does not hand over frames: join with frames=True")

    def on(self, kind: Optional[str] = None) -> Callable[[Handler], Handler]:
        """Decorates a handler of events of ``kind`` (all events with ``None``). Plain
        functions run on the loop, coroutines as tasks of their own."""

        def add(handler: Handler) -> Handler:
            self._events.handlers.append((kind, handler))
            self._events.start()
            return handler

        return add

    def on_frame(self, handler: Handler) -> Handler:
        """Decorates a handler of received frames (needs ``frames=True``)."""
        self._need_frames()
        self._frames.handlers.append((None, handler))
        self._frames.start()
        return handler

    def _run_handler(self, handler: Handler, item: Any) -> None:
        try:
            result = handler(item)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._handler_tasks.add(task)
                task.add_done_callback(self._handler_done)
        except Exception as e:  # a user's bug must not stop the call's events
            self._report(handler, e)

    def _handler_done(self, task: asyncio.Task) -> None:
        self._handler_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._report(None, task.exception())

    def _report(self, handler: Optional[Handler], e: BaseException) -> None:
        name = getattr(handler, "__qualname__", "a handler")
        # The first failure of each handler with its traceback; the rest (a handler that fails
        # on every event would flood the log) counted in handler_errors and as events.
        if name not in self._reported:
            self._reported.add(name)
            log.error("groupcall: %s raised %r; the call goes on", name, e, exc_info=e)
        else:
            log.debug("groupcall: %s raised %r again", name, e)
        self.handler_errors = (self.handler_errors + [e])[-100:]
        error = Event("handler_error", {"handler": name, "error": repr(e)})
        for q in list(self._events.queues):
            if not q.full():
                q.put_nowait(error)

    # -- control -------------------------------------------------------------------------

    @property
    def ssrc(self) -> int:
        """The audio SSRC this participant sends with now (it changes on a rejoin); after
        :meth:`leave`, the last one."""
        if self._left is not None:
            return self._left["stats"]["ssrc"]
        return self._native.ssrc

    async def play(self, source: str, *, loop: bool = False, start: Optional[float] = None) -> None:
        """Plays ``source`` (a path or an http(s) URL; MP3, AAC, FLAC, Vorbis, Opus, WAV, ...)
        from now on. Raises :class:`SourceError` when it cannot be opened."""
        await run(self._native.play, str(source), looping=loop, start=start)

    async def enqueue(self, source: str) -> None:
        """Plays ``source`` after what plays and what is queued, with no gap."""
        await run(self._native.enqueue, str(source))

    async def skip(self) -> None:
        await run(self._native.skip)

    async def stop(self) -> None:
        """Stops what plays."""
        await run(self._native.stop)

    async def pause(self) -> None:
        await run(self._native.pause)

    async def resume(self) -> None:
        await run(self._native.resume)

    async def seek(self, seconds: float) -> None:
        await run(self._native.seek, float(seconds))

    async def mute(self) -> None:
        """Stops sending at once, then tells the server (which shows this participant muted).
        With a Signaling adapter, its ``edit_self`` is awaited: its errors are raised here."""
        if self._pump is None:
            await run(self._native.mute)
        else:
            await run(self._native.mute_locally, True)
            await self._pump.signaling.edit_self(muted=True)

    async def unmute(self) -> None:
        """Tells the server, then sends again."""
        if self._pump is None:
            await run(self._native.unmute)
        else:
            await self._pump.signaling.edit_self(muted=False)
            await run(self._native.mute_locally, False)

    async def set_volume(self, percent: int) -> None:
        """This participant's volume as others hear it, 1 to 200 (%)."""
        if not 1 <= int(percent) <= 200:
            raise _native.ConfigError(f"volume {percent}% is out of range: give 1 to 200")
        if self._pump is None:
            await run(self._native.set_volume, int(percent))
        else:
            await self._pump.signaling.edit_self(volume=int(percent) * 100)

    async def set_gain(self, gain: float) -> None:
        """Gain on what this call receives (recordings, frames); 1.0 unchanged."""
        await run(self._native.set_gain, float(gain))

    async def record(self, dir: Optional[str] = None, mix: Optional[str] = None) -> None:
        """Starts recording now: one WAV per speaker in ``dir`` (``peer<PEER>_ssrc<SSRC>.wav``)
        and/or the mix into ``mix``, from the next 20 ms on; closed and listed in the summary
        when the call is left. Recording what is already recorded raises :class:`ConfigError`."""
        await run(
            self._native.record,
            dir=None if dir is None else str(dir),
            mix=None if mix is None else str(mix),
        )

    async def push(self, pcm: Union[bytes, bytearray, memoryview]) -> None:
        """Sends 48 kHz signed 16-bit little-endian PCM (needs ``push=True``), waiting while a
        second of audio is already queued."""
        await run(self._native.push, bytes(pcm))

    def end_push(self) -> None:
        """No more pushed audio: the source ends once what was pushed has played."""
        self._native.end_push()

    @property
    def position(self) -> Optional[float]:
        """Seconds into the playing source; ``None`` with nothing playing."""
        return self._native.position()

    def stats(self) -> dict:
        """The call's figures: packets, losses, speakers, position, ..."""
        return json.loads(self._native.stats())

    async def leave(self) -> dict:
        """Leaves, closes recordings, and returns the summary (``recordings``: one
        ``{"ssrc", "path"}`` per speaker, ``mix``, ``stats``, ``reason``). Leaving again
        returns the same summary."""
        if self._left is not None:
            return self._left
        summary = json.loads(await run(self._native.leave))
        if self._pump is not None:
            await self._pump.finish()
        for fan in (self._events, self._frames):
            if fan.task is not None:
                try:
                    await asyncio.wait_for(fan.task, 2)
                except (asyncio.TimeoutError, Exception):
                    fan.task.cancel()
        self._left = summary
        return summary

    async def __aenter__(self) -> "Call":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.leave()


class Engine:
    """Joins calls. ``Engine.local(url, user)`` talks to a local server (``groupcall serve``);
    ``Engine()`` joins through a :class:`~groupcall.signaling.Signaling` adapter given to
    :meth:`join` (Pyrogram, Telethon, or your own)."""

    def __init__(self, *, local: Optional[str] = None, user: int = 1) -> None:
        self._local = _native.LocalBackend(local, user) if local else None
        self._calls: List[Call] = []

    @classmethod
    def local(cls, url: str, user: int) -> "Engine":
        return cls(local=url, user=user)

    async def create_call(self) -> int:
        """Creates a call on the local server; its id."""
        if self._local is None:
            raise _native.ConfigError(
                "create_call needs a local server: Engine.local(url, user); on Telegram, start a video chat in the app"
            )
        return await run(self._local.create_call)

    async def join(
        self,
        call: Union[int, Signaling],
        *,
        play: Optional[str] = None,
        loop: bool = False,
        start: Optional[float] = None,
        muted: Optional[bool] = None,
        preset: str = "voice",
        stereo: Optional[bool] = None,
        bitrate: Optional[int] = None,
        record_dir: Optional[str] = None,
        record_mix: Optional[str] = None,
        frames: bool = False,
        frame_capacity: int = 250,
        push: bool = False,
        push_capacity: int = 50,
        join_as: Optional[int] = None,
        invite_hash: Optional[str] = None,
        speaking_events: bool = True,
    ) -> Call:
        """Joins ``call``: a local call id, or a Signaling adapter for a Telegram call.

        ``play`` a file or URL (``loop``, ``start`` seconds); ``push=True`` to send frames with
        :meth:`Call.push` instead; ``muted`` (default: muted exactly when there is nothing to
        send); ``preset`` ``"voice"`` (32 kbit/s mono, in-band FEC), ``"lean"`` (64 kbit/s mono
        CELT: a sixth of voice's encoder CPU, for many calls per process, no FEC) or ``"music"`` (128
        kbit/s stereo);
        ``record_dir`` one WAV per speaker, ``peer<PEER>_ssrc<SSRC>.wav``; ``record_mix`` the
        mix; ``frames=True`` to receive frames (:meth:`Call.frames`, :meth:`Call.on_frame`).
        ``join_as`` (a dialog id) and ``invite_hash`` are for local calls; an adapter takes
        them in its constructor (it sends the join). ``speaking_events=False`` for a bot that
        never shows who speaks: no ``speaking`` event ten times a second per speaker (each one
        wakes this process's event loop); the levels stay in :meth:`Call.stats`.
        """
        options = _native.Options(
            play=None if play is None else str(play),
            looping=loop,
            start=start,
            muted=muted,
            preset=preset,
            stereo=stereo,
            bitrate=bitrate,
            record_dir=None if record_dir is None else str(record_dir),
            record_mix=None if record_mix is None else str(record_mix),
            frames=frames,
            frame_capacity=frame_capacity,
            push=push,
            push_capacity=push_capacity,
            join_as=join_as,
            invite_hash=invite_hash,
            speaking_events=speaking_events,
        )
        if isinstance(call, Signaling):
            if join_as is not None or invite_hash is not None:
                raise _native.ConfigError(
                    "join_as and invite_hash go to the Signaling adapter, which sends the join: "
                    "PyrogramSignaling(client, chat, join_as=..., invite_hash=...)"
                )
            backend = _native.LineBackend()
            pump = LinePump(backend, call)
            pump.start()
            try:
                native = await run(backend.join, options)
            except BaseException:
                await pump.finish()
                raise
            joined = Call(native, pump, frames)
        elif isinstance(call, int) and not isinstance(call, bool):
            if self._local is None:
                raise _native.ConfigError(
                    f"call {call} is a local call id, but this engine has no local server: use Engine.local(url, user), or pass a Signaling adapter"
                )
            joined = Call(await run(self._local.join, call, options), frames=frames)
        else:
            raise TypeError(
                f"join takes a local call id (int) or a groupcall.Signaling adapter, not {type(call).__name__}"
            )
        self._calls = [c for c in self._calls if c._left is None] + [joined]
        return joined

    async def close(self) -> None:
        """Leaves every call this engine joined."""
        calls, self._calls = self._calls, []
        for c in calls:
            await c.leave()

    async def __aenter__(self) -> "Engine":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
