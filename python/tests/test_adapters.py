"""Tests of the bring-your-own-MTProto adapters (groupcall.pyrogram, groupcall.telethon).

Each library gets a fake client that records the request objects the adapter builds and
answers with the library's REAL TL objects, so what is checked is what would go on the wire:
the requests are the library's own classes and must serialize, and the updates pushed through
the registered handler are the ones the library would deliver. Errors are raised the way the
libraries raise them from a server's rpc_error.

The same tests run against both libraries through a small "kit" per library, because the two
generate their TL classes from one schema with the same keyword names; only how a request is
sent, serialized and decoded, and how errors and handlers work, differ.

Needs: pip install pytest pyrogram telethon (a library that is missing skips its half).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import io
import json
import pickle
import struct
import sys

import pytest

from groupcall.signaling import (
    Signaling,
    SignalingError,
    connection_params,
    dialog_id,
    participant_dict,
    signed32,
    split_error_name,
)

CALL_ID = 0x1122334455667788
CALL_HASH = -0x0102030405060708
CHANNEL_ID = 1234567890
CHANNEL_HASH = 987654321
USER_ID = 424242
PAYLOAD = json.dumps({"ufrag": "abcd", "pwd": "secret", "fingerprints": [], "ssrc": 3000000000})
ANSWER = json.dumps({"transport": {"ufrag": "srv", "pwd": "p", "candidates": []}, "audio": {}})


# --- one kit per library -----------------------------------------------------------------------


class Computed:
    """A scripted answer computed from the request (a plain callable will not do: Pyrogram's
    TL objects are callable themselves)."""

    def __init__(self, fn):
        self.fn = fn


class FakeClientBase:
    """What both fake clients share: recorded requests and scripted answers.

    ``responses`` maps a request class to a result, an exception to raise, or a
    :class:`Computed` answer; a request with no scripted answer fails the test.
    """

    def __init__(self, peers=None):
        self.requests = []
        self.responses = {}
        self.peers = dict(peers or {})

    def _answer(self, request):
        self.requests.append(request)
        try:
            answer = self.responses[type(request)]
        except KeyError:
            raise AssertionError(f"unexpected request {type(request).__name__}") from None
        if isinstance(answer, Computed):
            answer = answer.fn(request)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def sent(self, cls):
        return [r for r in self.requests if isinstance(r, cls)]


class PyrogramKit:
    name = "pyrogram"

    def __init__(self):
        pyrogram = pytest.importorskip("pyrogram")
        from pyrogram import raw
        from pyrogram.errors import RPCError
        from pyrogram.raw.core import TLObject

        import groupcall.pyrogram as adapter

        self.lib = pyrogram
        self.types = raw.types
        self.Signaling = adapter.PyrogramSignaling
        self.JoinGroupCall = raw.functions.phone.JoinGroupCall
        self.LeaveGroupCall = raw.functions.phone.LeaveGroupCall
        self.EditGroupCallParticipant = raw.functions.phone.EditGroupCallParticipant
        self.GetFullChannel = raw.functions.channels.GetFullChannel
        self.GetFullChat = raw.functions.messages.GetFullChat
        self.date = 1_700_000_000
        self._RPCError = RPCError
        self._TLObject = TLObject

        class FakeClient(FakeClientBase):
            """A pyrogram.Client as the adapter uses it: invoke, resolve_peer, handlers."""

            def __init__(self, peers=None):
                super().__init__(peers)
                self.handlers = []  # (handler, group), like Dispatcher.groups flattened

            async def invoke(self, query):
                return self._answer(query)

            async def resolve_peer(self, peer_id):
                return self.peers[peer_id]

            def add_handler(self, handler, group=0):
                self.handlers.append((handler, group))
                return handler, group

            def remove_handler(self, handler, group=0):
                self.handlers.remove((handler, group))

            async def push(self, update):
                # Like Pyrogram's Dispatcher.handler_worker for a raw update: every raw handler
                # gets (client, update, users, chats); ContinuePropagation passes it on.
                for handler, _group in sorted(self.handlers, key=lambda hg: hg[1]):
                    assert isinstance(handler, pyrogram.handlers.RawUpdateHandler)
                    try:
                        await handler.callback(self, update, {}, {})
                    except pyrogram.ContinuePropagation:
                        continue

        self.FakeClient = FakeClient

    def serialize(self, request):
        return request.write()

    def decode(self, data):
        return self._TLObject.read(io.BytesIO(data))

    def constructor_id(self, cls):
        return cls.ID

    def rpc_error(self, code, message, request):
        """The exception Pyrogram raises for an rpc_error answer to ``request``."""
        try:
            self._RPCError.raise_it(
                self.types.RpcError(error_code=code, error_message=message), type(request)
            )
        except self._RPCError as e:
            return e
        raise AssertionError("raise_it did not raise")

    def update_group_call(self, call):
        return self.types.UpdateGroupCall(chat_id=CHANNEL_ID, call=call)

    def handler_count(self, client):
        return len(client.handlers)


class TelethonKit:
    name = "telethon"

    def __init__(self):
        telethon = pytest.importorskip("telethon")
        from telethon import errors, events
        from telethon.extensions import BinaryReader
        from telethon.tl import functions, types

        import groupcall.telethon as adapter

        self.lib = telethon
        self.types = types
        self.Signaling = adapter.TelethonSignaling
        self.JoinGroupCall = functions.phone.JoinGroupCallRequest
        self.LeaveGroupCall = functions.phone.LeaveGroupCallRequest
        self.EditGroupCallParticipant = functions.phone.EditGroupCallParticipantRequest
        self.GetFullChannel = functions.channels.GetFullChannelRequest
        self.GetFullChat = functions.messages.GetFullChatRequest
        self.date = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        self._errors = errors
        self._BinaryReader = BinaryReader

        class FakeClient(FakeClientBase):
            """A TelegramClient as the adapter uses it: client(request), get_input_entity,
            event handlers."""

            def __init__(self, peers=None):
                super().__init__(peers)
                self.handlers = []  # (callback, event builder)

            async def __call__(self, request):
                return self._answer(request)

            async def get_input_entity(self, peer):
                return self.peers[peer]

            def add_event_handler(self, callback, event=None):
                self.handlers.append((callback, event))

            def remove_event_handler(self, callback, event=None):
                before = len(self.handlers)
                self.handlers = [(c, e) for c, e in self.handlers if c != callback]
                return before - len(self.handlers)

            async def push(self, update):
                # Like TelegramClient._dispatch_update for events.Raw: the builder gives the
                # update itself, its filter checks the types, the callback is awaited.
                for callback, event in self.handlers:
                    assert isinstance(event, events.Raw)
                    built = event.build(update)
                    if event.filter(built):
                        await callback(built)

        self.FakeClient = FakeClient

    def serialize(self, request):
        return bytes(request)

    def decode(self, data):
        return self._BinaryReader(data).tgread_object()

    def constructor_id(self, cls):
        return cls.CONSTRUCTOR_ID

    def rpc_error(self, code, message, request):
        """The exception Telethon raises for an rpc_error answer to ``request``."""
        return self._errors.rpc_message_to_error(
            self.types.RpcError(error_code=code, error_message=message), request
        )

    def update_group_call(self, call):
        return self.types.UpdateGroupCall(call=call)

    def handler_count(self, client):
        return len(client.handlers)


@pytest.fixture(params=[PyrogramKit, TelethonKit], ids=["pyrogram", "telethon"])
def kit(request):
    return request.param()


# --- builders of real TL objects, through the kit's types ---------------------------------------


def input_call(kit, call_id=CALL_ID):
    return kit.types.InputGroupCall(id=call_id, access_hash=CALL_HASH)


def connection_updates(kit, answer=ANSWER, extra=()):
    t = kit.types
    return t.Updates(
        updates=[
            t.UpdateGroupCallConnection(params=t.DataJSON(data='{"screen": 1}'), presentation=True),
            *extra,
            t.UpdateGroupCallConnection(params=t.DataJSON(data=answer), presentation=False),
        ],
        users=[],
        chats=[],
        date=kit.date,
        seq=0,
    )


def participant(kit, peer, source, **flags):
    return kit.types.GroupCallParticipant(peer=peer, date=kit.date, source=source, **flags)


def roster_update(kit, call_id=CALL_ID, version=7):
    t = kit.types
    return t.UpdateGroupCallParticipants(
        call=input_call(kit, call_id),
        participants=[
            participant(kit, t.PeerChannel(channel_id=CHANNEL_ID), -5, muted=True),
            participant(
                kit, t.PeerUser(user_id=USER_ID), 3000000000 - 2**32, left=True, is_self=True
            ),
        ],
        version=version,
    )


def channel_full(kit, call):
    t = kit.types
    return t.messages.ChatFull(
        full_chat=t.ChannelFull(
            id=CHANNEL_ID,
            about="",
            read_inbox_max_id=0,
            read_outbox_max_id=0,
            unread_count=0,
            chat_photo=t.PhotoEmpty(id=0),
            notify_settings=t.PeerNotifySettings(),
            bot_info=[],
            pts=1,
            call=call,
        ),
        chats=[],
        users=[],
    )


def chat_full(kit, chat_id, call):
    t = kit.types
    return t.messages.ChatFull(
        full_chat=t.ChatFull(
            id=chat_id,
            about="",
            participants=t.ChatParticipants(chat_id=chat_id, participants=[], version=1),
            notify_settings=t.PeerNotifySettings(),
            call=call,
        ),
        chats=[],
        users=[],
    )


def channel_peer(kit):
    return kit.types.InputPeerChannel(channel_id=CHANNEL_ID, access_hash=CHANNEL_HASH)


class Recorder:
    """The engine's two update callbacks, recording what they were given."""

    def __init__(self):
        self.rosters = []
        self.discarded = 0

    def on_participants(self, participants, version):
        self.rosters.append((participants, version))

    def on_discarded(self):
        self.discarded += 1


# --- join ----------------------------------------------------------------------------------------


def test_join_sends_one_real_join_request_and_returns_the_answer(kit):
    client = kit.FakeClient({"@me_channel": channel_peer(kit)})
    client.responses[kit.JoinGroupCall] = connection_updates(kit)
    signaling = kit.Signaling(
        client, call=(CALL_ID, CALL_HASH), join_as="@me_channel", invite_hash="speakerhash"
    )
    assert isinstance(signaling, Signaling)

    answer = asyncio.run(signaling.join(PAYLOAD, muted=True, video_stopped=True))

    assert answer == ANSWER
    [req] = client.requests
    assert type(req) is kit.JoinGroupCall
    assert (req.call.id, req.call.access_hash) == (CALL_ID, CALL_HASH)
    assert (req.join_as.channel_id, req.join_as.access_hash) == (CHANNEL_ID, CHANNEL_HASH)
    assert req.params.data == PAYLOAD
    assert req.muted is True and req.video_stopped is True
    assert req.invite_hash == "speakerhash"

    # It is a real, encodable request: the bytes start with the library's constructor id of
    # phone.joinGroupCall, and decode back to the same fields.
    data = kit.serialize(req)
    assert data[:4] == struct.pack("<I", kit.constructor_id(kit.JoinGroupCall))
    back = kit.decode(data)
    assert type(back) is kit.JoinGroupCall
    assert back.params.data == PAYLOAD
    assert (back.muted, back.video_stopped, back.invite_hash) == (True, True, "speakerhash")
    assert back.call.id == CALL_ID


def test_join_as_self_by_default_with_flags_off(kit):
    client = kit.FakeClient()
    client.responses[kit.JoinGroupCall] = connection_updates(kit)
    signaling = kit.Signaling(client, call=input_call(kit))

    asyncio.run(signaling.join(PAYLOAD, muted=False, video_stopped=False))

    [req] = client.requests
    assert type(req.join_as) is kit.types.InputPeerSelf
    assert not req.muted and not req.video_stopped and req.invite_hash is None
    back = kit.decode(kit.serialize(req))
    assert (bool(back.muted), bool(back.video_stopped), back.invite_hash) == (False, False, None)


def test_join_result_without_connection_is_an_error(kit):
    client = kit.FakeClient()
    client.responses[kit.JoinGroupCall] = kit.types.Updates(
        updates=[], users=[], chats=[], date=kit.date, seq=0
    )
    signaling = kit.Signaling(client, call=input_call(kit))
    with pytest.raises(SignalingError) as info:
        asyncio.run(signaling.join(PAYLOAD, muted=False, video_stopped=True))
    assert info.value.name == "NO_CONNECTION_IN_ANSWER"


def test_join_by_channel_finds_its_call_once(kit):
    client = kit.FakeClient({"@group": channel_peer(kit)})
    client.responses[kit.GetFullChannel] = channel_full(kit, input_call(kit))
    client.responses[kit.JoinGroupCall] = connection_updates(kit)
    signaling = kit.Signaling(client, "@group")

    async def twice():
        await signaling.join(PAYLOAD, muted=False, video_stopped=True)
        await signaling.join(PAYLOAD, muted=False, video_stopped=True)

    asyncio.run(twice())

    [full] = client.sent(kit.GetFullChannel)
    assert type(full.channel) is kit.types.InputChannel
    assert (full.channel.channel_id, full.channel.access_hash) == (CHANNEL_ID, CHANNEL_HASH)
    kit.serialize(full)  # encodable
    joins = client.sent(kit.JoinGroupCall)
    assert len(joins) == 2
    assert all((j.call.id, j.call.access_hash) == (CALL_ID, CALL_HASH) for j in joins)
    assert signaling.call.id == CALL_ID


def test_join_by_basic_group_uses_get_full_chat(kit):
    client = kit.FakeClient({-777: kit.types.InputPeerChat(chat_id=777)})
    client.responses[kit.GetFullChat] = chat_full(kit, 777, input_call(kit))
    client.responses[kit.JoinGroupCall] = connection_updates(kit)
    signaling = kit.Signaling(client, -777)

    assert asyncio.run(signaling.join(PAYLOAD, muted=False, video_stopped=True)) == ANSWER
    [full] = client.sent(kit.GetFullChat)
    assert full.chat_id == 777


def test_chat_without_a_call_is_groupcall_not_found(kit):
    client = kit.FakeClient({"@quiet": channel_peer(kit)})
    client.responses[kit.GetFullChannel] = channel_full(kit, None)
    signaling = kit.Signaling(client, "@quiet")
    with pytest.raises(SignalingError) as info:
        asyncio.run(signaling.join(PAYLOAD, muted=False, video_stopped=True))
    assert info.value.name == "GROUPCALL_NOT_FOUND"
    assert "start a video chat first" in info.value.message
    assert client.sent(kit.JoinGroupCall) == []


def test_a_user_is_not_a_chat_with_calls(kit):
    client = kit.FakeClient({"@someone": kit.types.InputPeerUser(user_id=1, access_hash=2)})
    signaling = kit.Signaling(client, "@someone")
    with pytest.raises(ValueError):
        asyncio.run(signaling.join(PAYLOAD, muted=False, video_stopped=True))


def test_chat_or_call_is_required_but_not_both(kit):
    with pytest.raises(ValueError):
        kit.Signaling(kit.FakeClient())
    with pytest.raises(ValueError):
        kit.Signaling(kit.FakeClient(), "@group", call=(1, 2))


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, message, name, value",
    [
        (400, "GROUPCALL_SSRC_DUPLICATE_MUCH", "GROUPCALL_SSRC_DUPLICATE_MUCH", None),
        (403, "GROUPCALL_FORBIDDEN", "GROUPCALL_FORBIDDEN", None),
        (420, "FLOOD_WAIT_31", "FLOOD_WAIT", 31),
        (400, "GROUPCALL_SOMETHING_NEW", "GROUPCALL_SOMETHING_NEW", None),
        (500, "SOME_SERVER_HICCUP", "SOME_SERVER_HICCUP", None),
    ],
)
def test_rpc_errors_become_signaling_errors(
    kit, code, message, name, value, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # Pyrogram logs unknown errors to ./unknown_errors.txt
    client = kit.FakeClient()
    client.responses[kit.JoinGroupCall] = Computed(lambda req: kit.rpc_error(code, message, req))
    signaling = kit.Signaling(client, call=input_call(kit))

    with pytest.raises(SignalingError) as info:
        asyncio.run(signaling.join(PAYLOAD, muted=False, video_stopped=True))

    err = info.value
    assert (err.name, err.code, err.value) == (name, code, value)
    assert isinstance(err.__cause__, Exception) and err.__cause__ is not err


def test_library_error_classes_are_the_real_ones(kit):
    # The conversion above is fed the library's own classes, not look-alikes.
    err = kit.rpc_error(400, "GROUPCALL_SSRC_DUPLICATE_MUCH", kit.JoinGroupCall(
        call=input_call(kit), join_as=kit.types.InputPeerSelf(),
        params=kit.types.DataJSON(data="{}")))
    assert type(err).__name__ in ("GroupcallSsrcDuplicateMuch", "GroupcallSsrcDuplicateMuchError")


# --- leave and edit_self -------------------------------------------------------------------------


def test_leave_sends_the_source_as_signed_int32(kit):
    client = kit.FakeClient()
    client.responses[kit.LeaveGroupCall] = kit.types.Updates(
        updates=[], users=[], chats=[], date=kit.date, seq=0
    )
    signaling = kit.Signaling(client, call=input_call(kit))

    async def leave_both():
        await signaling.leave(3000000000)
        await signaling.leave(12345)

    asyncio.run(leave_both())

    first, second = client.sent(kit.LeaveGroupCall)
    assert first.source == 3000000000 - 2**32
    assert second.source == 12345
    assert first.call.id == CALL_ID
    data = kit.serialize(first)  # an unsigned value would not encode
    assert data[:4] == struct.pack("<I", kit.constructor_id(kit.LeaveGroupCall))
    assert kit.decode(data).source == 3000000000 - 2**32


def test_edit_self_sends_muted_and_volume_for_join_as(kit):
    client = kit.FakeClient({"@me_channel": channel_peer(kit)})
    client.responses[kit.EditGroupCallParticipant] = kit.types.Updates(
        updates=[], users=[], chats=[], date=kit.date, seq=0
    )
    signaling = kit.Signaling(client, call=input_call(kit), join_as="@me_channel")

    async def edits():
        await signaling.edit_self(muted=True)
        await signaling.edit_self(muted=False, volume=5000)

    asyncio.run(edits())

    mute, unmute = client.sent(kit.EditGroupCallParticipant)
    assert mute.participant.channel_id == CHANNEL_ID
    assert (mute.muted, mute.volume) == (True, None)
    assert (unmute.muted, unmute.volume) == (False, 5000)
    back = kit.decode(kit.serialize(unmute))
    assert (back.muted, back.volume, back.call.id) == (False, 5000, CALL_ID)


def test_edit_self_as_self(kit):
    client = kit.FakeClient()
    client.responses[kit.EditGroupCallParticipant] = kit.types.Updates(
        updates=[], users=[], chats=[], date=kit.date, seq=0
    )
    signaling = kit.Signaling(client, call=input_call(kit))
    asyncio.run(signaling.edit_self(muted=True))
    [req] = client.requests
    assert type(req.participant) is kit.types.InputPeerSelf


# --- updates -------------------------------------------------------------------------------------

# What roster_update() must come out as: the channel as a -100… dialog id, sources as given.
EXPECTED_ROSTER = [
    {
        "source": -5,
        "peer": -1000000000000 - CHANNEL_ID,
        "left": False,
        "muted": True,
        "self": False,
    },
    {"source": 3000000000 - 2**32, "peer": USER_ID, "left": True, "muted": False, "self": True},
]


def test_updates_reach_the_callbacks_for_this_call_only(kit):
    client = kit.FakeClient()
    signaling = kit.Signaling(client, call=input_call(kit))
    seen = Recorder()
    t = kit.types

    async def scenario():
        signaling.start_updates(seen.on_participants, seen.on_discarded)
        assert kit.handler_count(client) == 1
        await client.push(roster_update(kit))
        await client.push(roster_update(kit, call_id=CALL_ID + 1))  # another call
        await client.push(kit.update_group_call(
            t.GroupCallDiscarded(id=CALL_ID + 1, access_hash=1, duration=5)))
        assert seen.discarded == 0
        await client.push(kit.update_group_call(
            t.GroupCallDiscarded(id=CALL_ID, access_hash=CALL_HASH, duration=60)))
        await signaling.stop_updates()
        assert kit.handler_count(client) == 0
        await client.push(roster_update(kit, version=8))  # nobody listens any more

    asyncio.run(scenario())

    assert seen.rosters == [(EXPECTED_ROSTER, 7)]
    assert seen.discarded == 1


def test_roster_in_the_join_result_is_reported_too(kit):
    client = kit.FakeClient({"@group": channel_peer(kit)})
    client.responses[kit.GetFullChannel] = channel_full(kit, input_call(kit))
    client.responses[kit.JoinGroupCall] = connection_updates(kit, extra=[roster_update(kit)])
    signaling = kit.Signaling(client, "@group")
    seen = Recorder()

    async def scenario():
        signaling.start_updates(seen.on_participants, seen.on_discarded)
        return await signaling.join(PAYLOAD, muted=False, video_stopped=True)

    assert asyncio.run(scenario()) == ANSWER
    assert seen.rosters == [(EXPECTED_ROSTER, 7)]


def test_roster_from_a_join_before_start_updates_is_kept_for_it(kit):
    client = kit.FakeClient()
    client.responses[kit.JoinGroupCall] = connection_updates(kit, extra=[roster_update(kit)])
    signaling = kit.Signaling(client, call=input_call(kit))
    seen = Recorder()

    async def scenario():
        await signaling.join(PAYLOAD, muted=False, video_stopped=True)
        signaling.start_updates(seen.on_participants, seen.on_discarded)
        assert seen.rosters == []  # not from inside start_updates
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert seen.rosters == [(EXPECTED_ROSTER, 7)]


def test_start_updates_twice_registers_one_handler(kit):
    client = kit.FakeClient()
    signaling = kit.Signaling(client, call=input_call(kit))
    first, second = Recorder(), Recorder()

    async def scenario():
        signaling.start_updates(first.on_participants, first.on_discarded)
        signaling.start_updates(second.on_participants, second.on_discarded)
        assert kit.handler_count(client) == 1
        await client.push(roster_update(kit))
        await signaling.stop_updates()
        await signaling.stop_updates()  # harmless

    asyncio.run(scenario())
    assert first.rosters == [] and len(second.rosters) == 1


def test_a_missing_library_says_how_to_install_it(kit, monkeypatch):
    monkeypatch.setitem(sys.modules, kit.name, None)  # makes `import <lib>` fail
    monkeypatch.delitem(sys.modules, f"groupcall.{kit.name}")
    with pytest.raises(ImportError, match=f"pip install {kit.name}"):
        importlib.import_module(f"groupcall.{kit.name}")


# --- library-independent helpers -----------------------------------------------------------------


class PeerUser:
    def __init__(self, user_id):
        self.user_id = user_id


class PeerChat:
    def __init__(self, chat_id):
        self.chat_id = chat_id


class PeerChannel:
    def __init__(self, channel_id):
        self.channel_id = channel_id


def test_dialog_ids():
    assert dialog_id(PeerUser(5)) == 5
    assert dialog_id(PeerChat(5)) == -5
    assert dialog_id(PeerChannel(5)) == -1000000000005
    with pytest.raises(TypeError):
        dialog_id(object())


def test_signed32():
    assert signed32(0) == 0
    assert signed32(2**31 - 1) == 2**31 - 1
    assert signed32(2**31) == -(2**31)
    assert signed32(2**32 - 1) == -1
    assert signed32(-7) == -7
    with pytest.raises(ValueError):
        signed32(2**32)


def test_participant_dict_marks_self_by_flag_or_peer():
    class P:
        peer = PeerUser(9)
        source = 77
        left = None
        muted = True
        is_self = None

    expected = {"source": 77, "peer": 9, "left": False, "muted": True, "self": False}
    assert participant_dict(P()) == expected
    assert participant_dict(P(), self_peer_id=9)["self"] is True


def test_split_error_name():
    assert split_error_name("FLOOD_WAIT_31") == ("FLOOD_WAIT", 31)
    assert split_error_name("FILE_PART_3_MISSING") == ("FILE_PART_MISSING", 3)
    assert split_error_name("GROUPCALL_FORBIDDEN") == ("GROUPCALL_FORBIDDEN", None)


def test_connection_params_reads_update_short():
    class DataJSON:
        data = "{}"

    class UpdateGroupCallConnection:
        params = DataJSON()
        presentation = None

    class UpdateShort:
        update = UpdateGroupCallConnection()

    assert connection_params(UpdateShort()) == "{}"
    with pytest.raises(SignalingError):
        connection_params(object())


def test_signaling_error_keeps_its_fields_through_pickle():
    err = SignalingError("FLOOD_WAIT", 420, "wait", value=31)
    back = pickle.loads(pickle.dumps(err))
    assert (back.name, back.code, back.message, back.value) == ("FLOOD_WAIT", 420, "wait", 31)
    assert "FLOOD_WAIT" in str(err)


def test_the_protocol_base_class_is_abstract():
    base = Signaling()
    with pytest.raises(NotImplementedError):
        asyncio.run(base.join("{}", muted=False, video_stopped=False))
    with pytest.raises(NotImplementedError):
        base.start_updates(lambda p, v: None, lambda: None)
