"""Signaling through a Pyrogram client: join a group call with the bot's own Pyrogram account.

Usage::

    from groupcall.pyrogram import PyrogramSignaling
    signaling = PyrogramSignaling(app, "@mygroup")      # the group's current video chat

The requests are Pyrogram's raw TL functions sent with ``client.invoke``; roster updates come
from a :class:`pyrogram.handlers.RawUpdateHandler`. Everything that does not depend on the
library is in :class:`groupcall.signaling.MTProtoSignaling`.
"""

from __future__ import annotations

import re
from typing import Any, Optional

try:
    import pyrogram
    from pyrogram import raw
    from pyrogram.errors import RPCError
    from pyrogram.handlers import RawUpdateHandler
    from pyrogram.raw.core import TLObject
except ImportError as e:  # pragma: no cover - exercised by a test that hides pyrogram
    raise ImportError(f"groupcall.pyrogram needs Pyrogram (pip install pyrogram): {e}") from e

from .signaling import MTProtoSignaling, SignalingError, split_error_name

__all__ = ["PyrogramSignaling", "signaling_error"]

# Pyrogram keeps Telegram's name only for errors it knows; for the others the value is
# "[CODE NAME]" (see pyrogram.errors.RPCError.raise_it).
_UNKNOWN_VALUE = re.compile(r"^\[(-?\d+) ([^\]\s]+)\]$")


def signaling_error(e: RPCError) -> SignalingError:
    """A Pyrogram RPC error as a :class:`SignalingError` with Telegram's error name.

    Pyrogram files an error with a number under an id ending in ``_X`` (``FLOOD_WAIT_X``) and
    keeps the number in ``.value``; the engine wants the name without it and the number apart.
    """
    code = e.CODE
    value = e.value if isinstance(e.value, int) else None
    if e.ID:
        name = re.sub(r"_X(?=_|$)", "", e.ID)
    else:
        m = _UNKNOWN_VALUE.match(str(e.value)) if e.value is not None else None
        if m is not None:
            code = int(m.group(1))
            name, value = split_error_name(m.group(2))
        else:
            name = e.NAME or type(e).__name__
    return SignalingError(name, code, str(e), value=value)


class PyrogramSignaling(MTProtoSignaling):
    """:class:`groupcall.signaling.Signaling` over a :class:`pyrogram.Client`.

    ``chat`` is anything ``client.resolve_peer`` takes (an id, ``"@username"``, ``"me"``…);
    its current call is looked up at the first join with ``channels.getFullChannel`` (channels
    and supergroups) or ``messages.getFullChat`` (basic groups) and kept. Or give ``call``,
    a ``raw.types.InputGroupCall`` or an ``(id, access_hash)`` pair. ``join_as`` is a peer to
    join as (a channel the account owns, …), by default the account itself. ``invite_hash``
    joins through an invite link (lets a listener-only link speak, for example).
    """

    JoinGroupCall = raw.functions.phone.JoinGroupCall
    LeaveGroupCall = raw.functions.phone.LeaveGroupCall
    EditGroupCallParticipant = raw.functions.phone.EditGroupCallParticipant
    GetFullChannel = raw.functions.channels.GetFullChannel
    GetFullChat = raw.functions.messages.GetFullChat
    DataJSON = raw.types.DataJSON
    InputGroupCall = raw.types.InputGroupCall
    InputPeerSelf = raw.types.InputPeerSelf
    InputChannel = raw.types.InputChannel

    #: The dispatcher group of the update handler. Pyrogram runs at most one handler per group
    #: for an update, so the handler gets a group of its own, ahead of the default group 0, and
    #: passes every update on (``ContinuePropagation``) so that several calls on one client
    #: share it.
    HANDLER_GROUP = -1_000_001

    _handler: Optional[RawUpdateHandler] = None

    async def _send(self, request: Any) -> Any:
        try:
            return await self.client.invoke(request)
        except RPCError as e:
            raise signaling_error(e) from e

    async def _resolve_peer(self, peer: Any) -> Any:
        if isinstance(peer, TLObject):  # already an InputPeer
            return peer
        return await self.client.resolve_peer(peer)

    async def _raw_update(self, client, update, users, chats) -> None:
        # A coroutine function, so that Pyrogram calls it on its event loop rather than in its
        # thread pool: the engine's callbacks then run where the rest of the client runs.
        self._on_update(update)
        raise pyrogram.ContinuePropagation

    def _add_handler(self) -> None:
        self._handler = RawUpdateHandler(self._raw_update)
        self.client.add_handler(self._handler, self.HANDLER_GROUP)

    def _remove_handler(self) -> None:
        if self._handler is not None:
            self.client.remove_handler(self._handler, self.HANDLER_GROUP)
            self._handler = None
