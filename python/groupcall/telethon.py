"""Signaling through a Telethon client: join a group call with the bot's own Telethon account.

Usage::

    from groupcall.telethon import TelethonSignaling
    signaling = TelethonSignaling(client, "@mygroup")   # the group's current video chat

Requests are Telethon's TL request objects sent with ``await client(request)``; roster updates
come from an ``events.Raw`` handler. Everything that does not depend on the library is in
:class:`groupcall.signaling.MTProtoSignaling`.
"""

from __future__ import annotations

from typing import Any, Optional

try:
    from telethon import events
    from telethon.errors import RPCError
    from telethon.errors.rpcerrorlist import rpc_errors_dict, rpc_errors_re
    from telethon.tl import functions, types
    from telethon.tl.tlobject import TLObject
except ImportError as e:  # pragma: no cover - exercised by a test that hides telethon
    raise ImportError(f"groupcall.telethon needs Telethon (pip install telethon): {e}") from e

from .signaling import MTProtoSignaling, SignalingError, split_error_name

__all__ = ["TelethonSignaling", "signaling_error"]

# Telethon raises a class per known error, and those classes do not keep Telegram's name (their
# .message is the generic one of their code, "BAD_REQUEST"): find it from Telethon's own tables.
_NAME_OF_CLASS = {cls: name for name, cls in rpc_errors_dict.items()}
# Errors with a number ("FLOOD_WAIT_(\d+)"): the name without the number part.
_NAME_OF_CLASS.update(
    {cls: split_error_name(pattern.replace(r"(\d+)", "0"))[0] for pattern, cls in rpc_errors_re}
)
_NUMBERED = {cls for _, cls in rpc_errors_re}


def signaling_error(e: RPCError) -> SignalingError:
    """A Telethon RPC error as a :class:`SignalingError` with Telegram's error name."""
    name = _NAME_OF_CLASS.get(type(e))
    value = None
    if name is None:
        # A generic RPCError built from the server's message: .message is the name.
        name, value = split_error_name(e.message or type(e).__name__)
    elif type(e) in _NUMBERED:
        # The number is kept under a per-class attribute (seconds, new_dc, …); the generated
        # __reduce__ of every such class returns it second, after the request.
        args = e.__reduce__()[1]
        if len(args) == 2 and isinstance(args[1], int):
            value = args[1]
    return SignalingError(name, e.code, str(e), value=value)


class TelethonSignaling(MTProtoSignaling):
    """:class:`groupcall.signaling.Signaling` over a :class:`telethon.TelegramClient`.

    ``chat`` is anything ``client.get_input_entity`` takes (an id, ``"@username"``, an entity…);
    its current call is looked up at the first join with ``channels.getFullChannel`` (channels
    and supergroups) or ``messages.getFullChat`` (basic groups) and kept. Or give ``call``,
    a ``types.InputGroupCall`` or an ``(id, access_hash)`` pair. ``join_as`` is a peer to join
    as, by default the account itself. ``invite_hash`` joins through an invite link.
    """

    JoinGroupCall = functions.phone.JoinGroupCallRequest
    LeaveGroupCall = functions.phone.LeaveGroupCallRequest
    EditGroupCallParticipant = functions.phone.EditGroupCallParticipantRequest
    GetFullChannel = functions.channels.GetFullChannelRequest
    GetFullChat = functions.messages.GetFullChatRequest
    DataJSON = types.DataJSON
    InputGroupCall = types.InputGroupCall
    InputPeerSelf = types.InputPeerSelf
    InputChannel = types.InputChannel

    async def _send(self, request: Any) -> Any:
        try:
            return await self.client(request)
        except RPCError as e:
            raise signaling_error(e) from e

    async def _resolve_peer(self, peer: Any) -> Any:
        if isinstance(peer, TLObject) and type(peer).__name__.startswith("InputPeer"):
            return peer
        return await self.client.get_input_entity(peer)

    async def _raw_update(self, update: Any) -> None:
        # Telethon awaits its handlers, so this is a coroutine function even though the work
        # is synchronous.
        self._on_update(update)

    def _add_handler(self) -> None:
        self.client.add_event_handler(
            self._raw_update,
            events.Raw(types=[types.UpdateGroupCallParticipants, types.UpdateGroupCall]),
        )

    def _remove_handler(self) -> None:
        self.client.remove_event_handler(self._raw_update)
