"""Bring-your-own MTProto: what the engine asks of a Telegram client for one group call.

The engine does the media side of a call (the join payload, ICE/DTLS, RTP) but not the
MTProto side: a bot that already has a logged-in Pyrogram or Telethon client joins with *that*
account. The engine hands its join payload to a :class:`Signaling` object, which sends it with
``phone.joinGroupCall`` and hands back the server's answer, and the same object reports the
call's roster and its end. :mod:`groupcall.pyrogram` and :mod:`groupcall.telethon` are the
ready-made adapters; anything that implements the five methods of :class:`Signaling` works.

This module imports only the standard library, so that the protocol and the shared helpers can
be used (and tested) without either MTProto library installed. The helpers read TL objects by
class name and attribute, because Pyrogram's and Telethon's TL classes share the schema's names
but no Python base class.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Callable, Iterable, List, Optional, Tuple

__all__ = [
    "SignalingError",
    "Signaling",
    "MTProtoSignaling",
    "ParticipantsCallback",
    "DiscardedCallback",
    "dialog_id",
    "signed32",
    "participant_dict",
    "split_error_name",
    "iter_updates",
    "connection_params",
]

#: ``on_participants(participants, version)``: a list of :func:`participant_dict` dicts and the
#: roster version the server gave (``None`` if it gave none).
ParticipantsCallback = Callable[[List[dict], Optional[int]], None]
#: ``on_discarded()``: the call ended for everyone.
DiscardedCallback = Callable[[], None]

# Bot API style ids: channels (and supergroups) live below -10**12 so that they never collide
# with basic groups (negated chat ids) or users (positive ids). Both libraries use this scheme.
_CHANNEL_ID_BASE = 1_000_000_000_000


#: Errors of phone.leaveGroupCall that mean the participant is already out of the call.
LEFT_ALREADY = frozenset({"GROUPCALL_JOIN_MISSING", "GROUPCALL_FORBIDDEN", "GROUPCALL_INVALID"})


class SignalingError(Exception):
    """A Telegram RPC error from a signaling call, in a form that does not depend on the library.

    ``name`` is Telegram's error name (``"GROUPCALL_SSRC_DUPLICATE_MUCH"``,
    ``"GROUPCALL_FORBIDDEN"``, …) and ``code`` the RPC code (400, 403, …) or ``None``.
    The engine decides by ``name`` what to do: a duplicate SSRC means "make a new payload and
    join again", a forbidden or invalid call means the call is over.

    Names that carry a number (``FLOOD_WAIT_31``) are split the way the engine's own Telegram
    backend splits them: ``name`` is ``"FLOOD_WAIT"`` and ``value`` is ``31``, so one table of
    names serves both backends. Errors that come from the adapter itself rather than from
    Telegram (``"GROUPCALL_NOT_FOUND"``, ``"NO_CONNECTION_IN_ANSWER"``) use the same shape.
    """

    def __init__(
        self,
        name: str,
        code: Optional[int] = None,
        message: Optional[str] = None,
        *,
        value: Optional[int] = None,
    ) -> None:
        self.name = name
        self.code = code
        self.message = message
        self.value = value
        text = name if code is None else f"[{code}] {name}"
        if value is not None:
            text += f" (value {value})"
        if message:
            text += f": {message}"
        super().__init__(text)

    def __reduce__(self):
        # Keyword-only ``value`` would be lost by the default pickling of exceptions.
        return (_rebuild_error, (self.name, self.code, self.message, self.value))


def _rebuild_error(name, code, message, value):
    return SignalingError(name, code, message, value=value)


class Signaling:
    """What the engine needs from an MTProto client for one call.

    A base class that documents the protocol: adapters subclass it and override every method.
    All ``async`` methods run on the event loop the client runs on; the callbacks given to
    :meth:`start_updates` are plain functions that are safe to call from the client's update
    handler.
    """

    async def join(self, params: str, *, muted: bool, video_stopped: bool) -> str:
        """Sends ``phone.joinGroupCall`` with ``params`` (the engine's join payload, a JSON
        string) as ``DataJSON`` and returns ``updateGroupCallConnection.params.data`` (the
        server's answer, a JSON string) from the resulting ``Updates``.

        Raises :class:`SignalingError` for RPC errors, and
        ``SignalingError("NO_CONNECTION_IN_ANSWER")`` when the result has no connection update.
        """
        raise NotImplementedError

    async def leave(self, source: int) -> None:
        """Sends ``phone.leaveGroupCall`` naming the audio ``source`` (SSRC) the join used.
        ``source`` may be unsigned; it is sent as the signed 32-bit integer TL wants. A
        participant already out of the call (``LEFT_ALREADY``) has left: not an error."""
        raise NotImplementedError

    async def edit_self(
        self, *, muted: Optional[bool] = None, volume: Optional[int] = None
    ) -> None:
        """Sends ``phone.editGroupCallParticipant`` for this participant; ``None`` leaves a
        setting unchanged."""
        raise NotImplementedError

    def start_updates(
        self, on_participants: ParticipantsCallback, on_discarded: DiscardedCallback
    ) -> None:
        """Starts reporting this call's ``updateGroupCallParticipants`` to ``on_participants``
        and its end (``groupCallDiscarded``) to ``on_discarded``."""
        raise NotImplementedError

    async def stop_updates(self) -> None:
        """Removes what :meth:`start_updates` registered with the client."""
        raise NotImplementedError


# --- helpers shared by the adapters ---------------------------------------------------------


def signed32(x: int) -> int:
    """``x`` as the signed 32-bit integer TL's ``int`` carries.

    The engine counts SSRCs as unsigned 32-bit numbers, Telegram's schema declares them as a
    signed ``int``: both libraries refuse to serialize an ``int`` of 2**31 or more.
    """
    x = int(x)
    if not -(2**31) <= x < 2**32:
        raise ValueError(f"{x} does not fit in 32 bits")
    return x - 2**32 if x >= 2**31 else x


def dialog_id(peer: Any) -> int:
    """The Bot API style id of a TL ``Peer`` (or ``InputPeer``) of either library.

    ``PeerUser(user_id)`` is ``user_id``, ``PeerChat(chat_id)`` is ``-chat_id`` and
    ``PeerChannel(channel_id)`` is ``-1000000000000 - channel_id``: the ids both libraries
    show their users, so a roster can be matched with the chats a bot already knows.
    """
    # Attribute first, not class name alone, so that InputPeerChannel, PeerChannel and
    # InputChannel all work; channel before user because InputPeerChannelFromMessage-like
    # types carry both.
    channel_id = getattr(peer, "channel_id", None)
    if channel_id is not None:
        return -_CHANNEL_ID_BASE - channel_id
    chat_id = getattr(peer, "chat_id", None)
    if chat_id is not None:
        return -chat_id
    user_id = getattr(peer, "user_id", None)
    if user_id is not None:
        return user_id
    raise TypeError(f"{type(peer).__name__} is not a user, chat or channel peer")


def participant_dict(p: Any, self_peer_id: Optional[int] = None) -> dict:
    """One TL ``groupCallParticipant`` as the engine's roster entry.

    ``source`` is passed on as the library gives it (TL's signed int; the engine takes signed
    or unsigned). ``self`` is Telegram's own flag (``is_self`` in both libraries, since
    ``self`` is taken in Python), or a peer equal to ``self_peer_id`` when the caller knows whom
    it joined as.
    """
    peer = dialog_id(p.peer)
    is_self = bool(getattr(p, "is_self", None) or getattr(p, "self", None))
    if self_peer_id is not None and peer == self_peer_id:
        is_self = True
    return {
        "source": p.source,
        "peer": peer,
        "left": bool(p.left),
        "muted": bool(p.muted),
        "self": is_self,
    }


_NUMBER_PART = re.compile(r"_(\d+)(?=_|$)")


def split_error_name(name: str) -> Tuple[str, Optional[int]]:
    """Splits the number out of a Telegram error name: ``"FLOOD_WAIT_31"`` is
    ``("FLOOD_WAIT", 31)``, ``"FILE_PART_3_MISSING"`` is ``("FILE_PART_MISSING", 3)``, and a
    name without a number comes back as it is with ``None``.

    The engine's own Telegram backend files errors under the name without the number, so the
    adapters do the same.
    """
    m = _NUMBER_PART.search(name)
    if m is None:
        return name, None
    return name[: m.start()] + name[m.end() :], int(m.group(1))


def iter_updates(result: Any) -> Iterable[Any]:
    """The single updates inside an ``Updates`` result of either library (``updates``,
    ``updatesCombined`` or ``updateShort``); nothing for anything else."""
    updates = getattr(result, "updates", None)
    if isinstance(updates, (list, tuple)):
        return updates
    update = getattr(result, "update", None)
    if update is not None:
        return (update,)
    return ()


def connection_params(result: Any) -> str:
    """The server's answer to a join: ``updateGroupCallConnection.params.data`` of the
    connection that is not a screen-sharing one (``presentation`` unset).

    Raises ``SignalingError("NO_CONNECTION_IN_ANSWER")`` when the result has none, which a
    server that accepted the join never does; saying so beats handing the engine nothing.
    """
    for update in iter_updates(result):
        if type(update).__name__ == "UpdateGroupCallConnection" and not update.presentation:
            return update.params.data
    raise SignalingError(
        "NO_CONNECTION_IN_ANSWER",
        message=f"phone.joinGroupCall returned {type(result).__name__} without an "
        "updateGroupCallConnection",
    )


def _is_tl_named(obj: Any, prefix: str) -> bool:
    return type(obj).__name__.startswith(prefix)


class MTProtoSignaling(Signaling):
    """The logic both adapters share; a subclass supplies the library's TL classes and the four
    calls that differ (send a request, resolve a peer, add and remove the update handler).

    Pyrogram and Telethon generate their TL classes from the same schema with the same keyword
    names (``call``, ``join_as``, ``params``, ``source``, …), so everything but those calls is
    written once here. The class attributes below name the library's TL classes.
    """

    # The library's TL classes, set by each adapter.
    JoinGroupCall: Any = None
    LeaveGroupCall: Any = None
    EditGroupCallParticipant: Any = None
    GetFullChannel: Any = None
    GetFullChat: Any = None
    DataJSON: Any = None
    InputGroupCall: Any = None
    InputPeerSelf: Any = None
    InputChannel: Any = None

    def __init__(
        self,
        client: Any,
        chat: Any = None,
        *,
        call: Any = None,
        join_as: Any = None,
        invite_hash: Optional[str] = None,
    ) -> None:
        if (chat is None) == (call is None):
            raise ValueError("give either chat (whose current call to join) or call, not both")
        self.client = client
        self.chat = chat
        self.invite_hash = invite_hash
        self._join_as_arg = join_as
        self._join_as: Any = None
        self._call: Any = None
        if call is not None:
            if isinstance(call, tuple):
                call_id, access_hash = call
                call = self.InputGroupCall(id=call_id, access_hash=access_hash)
            self._call = call
        self._on_participants: Optional[ParticipantsCallback] = None
        self._on_discarded: Optional[DiscardedCallback] = None
        # Roster updates that arrived in a join result before start_updates was called.
        self._pending: List[Any] = []

    # --- what a subclass provides ---

    async def _send(self, request: Any) -> Any:
        """Sends ``request`` and returns its result; library RPC errors become
        :class:`SignalingError`."""
        raise NotImplementedError

    async def _resolve_peer(self, peer: Any) -> Any:
        """The ``InputPeer`` for whatever the user passed as ``chat`` or ``join_as``."""
        raise NotImplementedError

    def _add_handler(self) -> None:
        """Registers :meth:`_on_update` with the client for raw updates."""
        raise NotImplementedError

    def _remove_handler(self) -> None:
        """Undoes :meth:`_add_handler`."""
        raise NotImplementedError

    # --- resolving the call and the peer ---

    @property
    def call(self) -> Any:
        """The ``InputGroupCall``, once known (at construction or after the first join)."""
        return self._call

    async def input_call(self) -> Any:
        """The call to join: the one given, or the chat's current call, asked once and kept."""
        if self._call is None:
            self._call = await self._find_chat_call()
        return self._call

    async def _find_chat_call(self) -> Any:
        peer = await self._resolve_peer(self.chat)
        if _is_tl_named(peer, "InputPeerChannel"):
            channel = self.InputChannel(channel_id=peer.channel_id, access_hash=peer.access_hash)
            full = await self._send(self.GetFullChannel(channel=channel))
        elif _is_tl_named(peer, "InputPeerChat"):
            full = await self._send(self.GetFullChat(chat_id=peer.chat_id))
        else:
            raise ValueError(
                f"{self.chat!r} is a {type(peer).__name__}: group calls live in groups and "
                "channels"
            )
        call = getattr(full.full_chat, "call", None)
        if call is None:
            raise SignalingError(
                "GROUPCALL_NOT_FOUND",
                message=f"{self.chat!r} has no active video chat: start a video chat first",
            )
        return call

    async def input_join_as(self) -> Any:
        """Whom to join as: ``join_as`` resolved once, or this account (``InputPeerSelf``)."""
        if self._join_as is None:
            if self._join_as_arg is None:
                self._join_as = self.InputPeerSelf()
            else:
                self._join_as = await self._resolve_peer(self._join_as_arg)
        return self._join_as

    def _self_peer_id(self) -> Optional[int]:
        # Known only when joining as a named peer; as oneself, Telegram's `self` flag tells.
        try:
            return dialog_id(self._join_as) if self._join_as is not None else None
        except TypeError:
            return None

    # --- the protocol ---

    async def join(self, params: str, *, muted: bool, video_stopped: bool) -> str:
        request = self.JoinGroupCall(
            call=await self.input_call(),
            join_as=await self.input_join_as(),
            params=self.DataJSON(data=params),
            muted=muted,
            video_stopped=video_stopped,
            invite_hash=self.invite_hash,
        )
        result = await self._send(request)
        # Some servers put the roster in the join result itself, and neither library hands a
        # request's own result to its update handlers, so read it here.
        for update in iter_updates(result):
            self._on_update(update)
        return connection_params(result)

    async def leave(self, source: int) -> None:
        # Leaving a call that ended, or that already dropped this participant (the media
        # connection closing can reach the server first), is done, not an error.
        try:
            await self._send(
                self.LeaveGroupCall(call=await self.input_call(), source=signed32(source))
            )
        except SignalingError as e:
            if e.name not in LEFT_ALREADY:
                raise

    async def edit_self(
        self, *, muted: Optional[bool] = None, volume: Optional[int] = None
    ) -> None:
        await self._send(
            self.EditGroupCallParticipant(
                call=await self.input_call(),
                participant=await self.input_join_as(),
                muted=muted,
                volume=volume,
            )
        )

    def start_updates(
        self, on_participants: ParticipantsCallback, on_discarded: DiscardedCallback
    ) -> None:
        registered = self._on_participants is not None
        self._on_participants = on_participants
        self._on_discarded = on_discarded
        if not registered:
            self._add_handler()
        if self._pending:
            pending, self._pending = self._pending, []
            self._deliver_later(pending)

    async def stop_updates(self) -> None:
        if self._on_participants is None:
            return
        self._remove_handler()
        self._on_participants = None
        self._on_discarded = None

    # --- updates ---

    def _is_this_call(self, call: Any) -> bool:
        own_id = getattr(self._call, "id", None)  # None before the call is resolved
        return own_id is not None and getattr(call, "id", None) == own_id

    def _on_update(self, update: Any) -> None:
        """Hands one raw update of this call to the callbacks (or keeps it until
        :meth:`start_updates` if they are not set yet); ignores everything else."""
        kind = type(update).__name__
        if kind == "UpdateGroupCallParticipants":
            if not self._is_this_call(update.call):
                return
        elif kind == "UpdateGroupCall":
            discarded = _is_tl_named(update.call, "GroupCallDiscarded")
            if not (discarded and self._is_this_call(update.call)):
                return
        else:
            return
        if self._on_participants is None:
            self._pending.append(update)
        else:
            self._deliver(update)

    def _deliver(self, update: Any) -> None:
        if type(update).__name__ == "UpdateGroupCall":
            if self._on_discarded is not None:
                self._on_discarded()
            return
        self_id = self._self_peer_id()
        participants = [participant_dict(p, self_id) for p in update.participants]
        if self._on_participants is not None:
            self._on_participants(participants, update.version)

    def _deliver_later(self, updates: List[Any]) -> None:
        # Not from inside start_updates itself: the engine may call start_updates while holding
        # its own state, and a callback re-entering it there could deadlock.
        def run() -> None:
            for update in updates:
                self._deliver(update)

        try:
            asyncio.get_running_loop().call_soon(run)
        except RuntimeError:
            run()
