"""Carries one call's signaling between the engine and a Python Signaling adapter.

The engine speaks the JSON-line protocol of ``groupcall join --signaling stdio`` over an
in-memory pipe (``_native.LineBackend``). This task reads its lines (a join payload, a leave,
a mute) and calls the adapter, which talks to Telegram through the user's MTProto client;
answers, errors and roster updates go back as lines. It runs on the user's asyncio loop, like
the MTProto client it calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, List, Optional

from ._bridge import run
from .signaling import Signaling, SignalingError

log = logging.getLogger("groupcall")


class LinePump:
    def __init__(self, backend: Any, signaling: Signaling) -> None:
        self._backend = backend
        #: The adapter; Call.mute and set_volume call it directly, to see its answer.
        self.signaling = signaling
        self._task: Optional[asyncio.Task] = None

    def start(self) -> None:
        self.signaling.start_updates(self._participants, self._discarded)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="groupcall signaling"
        )

    def _write(self, value: dict) -> None:
        try:
            self._backend.write_line(json.dumps(value))
        except Exception as e:  # the call is over: nothing to tell
            log.debug("groupcall: signaling line not delivered: %s", e)

    def _participants(self, participants: List[dict], version: Optional[int]) -> None:
        line = {"participants": participants}
        if version is not None:
            line["version"] = version
        self._write(line)

    def _discarded(self) -> None:
        self._write({"discarded": True})

    async def _run(self) -> None:
        while (line := await run(self._backend.read_line)) is not None:
            try:
                await self._handle(json.loads(line))
            except Exception as e:
                log.error("groupcall: signaling request failed: %r", e, exc_info=e)

    async def _handle(self, msg: dict) -> None:
        if "payload" in msg:
            try:
                answer = await self.signaling.join(
                    json.dumps(msg["payload"]),
                    muted=bool(msg.get("muted", False)),
                    video_stopped=bool(msg.get("video_stopped", True)),
                )
            except SignalingError as e:
                error = {"type": e.name, "code": e.code or 400, "message": str(e)}
                if getattr(e, "value", None) is not None:
                    error["value"] = e.value
                self._write({"error": error})
                return
            except Exception as e:
                # Anything else (a network error in the client) fails this join with its text.
                self._write({"error": {"type": "CLIENT_ERROR", "code": 500, "message": repr(e)}})
                raise
            self._write({"answer": answer})
        elif "leave" in msg:
            await self.signaling.leave(int(msg["leave"]["source"]))
        else:
            # Mute and volume do not come this way: Call calls edit_self itself (_call.py).
            log.warning("groupcall: unexpected signaling line from the engine: %s", msg)

    async def finish(self) -> None:
        """Handles what the engine wrote before it left, then stops."""
        self._backend.finish()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except Exception as e:
                log.warning("groupcall: signaling did not finish cleanly: %r", e)
        try:
            await self.signaling.stop_updates()
        except Exception as e:
            log.warning("groupcall: stopping updates failed: %r", e)
