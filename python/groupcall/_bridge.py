"""Where the engine's results come in: one bridge per asyncio loop.

The native module queues each finished operation and writes a byte to a socket; this loop
watches the other end (``add_reader``) and, on its own thread, takes the results and resolves
the futures (``src/completions.rs`` says why no engine thread ever takes the GIL).
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from typing import Any, Callable, Dict

from . import _native

_bridges: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Bridge]" = weakref.WeakKeyDictionary()


class Bridge:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._read, write = socket.socketpair()
        self._read.setblocking(False)
        try:
            self.completions = _native.Completions(write.fileno())
        finally:
            write.close()  # the native side holds its own duplicate
        self._futures: Dict[int, asyncio.Future] = {}
        loop.add_reader(self._read.fileno(), self._drain)

    def start(self, method: Callable[..., int], *args: Any, **kwargs: Any) -> "asyncio.Future":
        """Starts ``method`` (a native operation taking the completions first) and returns
        the future of its result."""
        token = method(self.completions, *args, **kwargs)
        future = self._loop.create_future()
        self._futures[token] = future
        return future

    def _drain(self) -> None:
        try:
            while self._read.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        for token, ok, value in self.completions.take():
            future = self._futures.pop(token, None)
            if future is None or future.done():
                continue  # cancelled while the engine worked
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def close(self) -> None:
        try:
            self._loop.remove_reader(self._read.fileno())
        except Exception:
            pass
        self._read.close()


def bridge() -> Bridge:
    """The running loop's bridge, made on first use."""
    loop = asyncio.get_running_loop()
    b = _bridges.get(loop)
    if b is None:
        b = _bridges[loop] = Bridge(loop)
    return b


def run(method: Callable[..., int], *args: Any, **kwargs: Any) -> "asyncio.Future":
    """``await run(native.mute)``: a native operation as an awaitable on the running loop."""
    return bridge().start(method, *args, **kwargs)
