"""The Pyrogram and Telethon adapters end to end: engine, adapter, a library's real TL objects,
and a real local server (`groupcall serve`) carrying the audio over loopback UDP.

test_adapters.py checks the adapters against scripted answers; test_calls.py checks the
bring-your-own path with a Signaling of its own. Neither shows that what an adapter builds from
the engine's lines (and what it makes of the answers) is enough for a call to work. Here the
fake client's raw-request method stands in for Telegram: it turns the very TL request objects
the adapter sends into calls to the local server's HTTP control API (the `phone.*` methods it
mimics) and answers with the library's own TL result objects and RPC error classes, so the
engine joins, sends, mutes and leaves a real call through the adapter alone.

Needs: pip install pytest numpy pyrogram telethon (a missing library skips its half).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import groupcall
from groupcall.signaling import LEFT_ALREADY, signed32
from conftest import dominant_hz, read_wav, write_tone
from test_adapters import PyrogramKit, TelethonKit

PLAYER, LISTENER = 1001, 2002
#: Another user, named only by a roster update of another call, which must not reach the engine.
STRANGER = 3003

# Straight to loopback, whatever proxy the environment names.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(params=[PyrogramKit, TelethonKit], ids=["pyrogram", "telethon"])
def kit(request, tmp_path, monkeypatch):
    # Pyrogram logs errors it has no class for (GROUPCALL_JOIN_MISSING) to ./unknown_errors.txt.
    monkeypatch.chdir(tmp_path)
    return request.param()


def server_client(kit, server: str, user: int):
    """A fake client of ``kit``'s library acting as ``user``, whose raw-request method relays
    the adapter's phone.* requests to the local server and answers as Telegram would."""
    t = kit.types

    class ServerClient(kit.FakeClient):
        def __init__(self):
            super().__init__()
            self.user = user
            #: The server's refusals, as {"code", "type", "message"}, in order.
            self.failed = []

        async def resolve_peer(self, peer):  # Pyrogram
            return t.InputPeerUser(user_id=self.user, access_hash=0)

        async def get_input_entity(self, peer):  # Telethon
            return t.InputPeerUser(user_id=self.user, access_hash=0)

        def _peer(self, input_peer) -> int:
            if isinstance(input_peer, t.InputPeerSelf):
                return self.user
            assert isinstance(input_peer, t.InputPeerUser), input_peer
            return input_peer.user_id

        def _http(self, request, method: str, path: str, body=None) -> dict:
            url = f"{server}/calls/{request.call.id}{path}"
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(
                url, data=data, method=method, headers={"content-type": "application/json"}
            )
            try:
                with _http.open(req, timeout=5) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                err = json.loads(e.read())["error"]
                self.failed.append(err)
                # What the library raises for Telegram's rpc_error with this code and name.
                raise kit.rpc_error(err["code"], err["type"], request) from None

        async def _post(self, request, path: str, body: dict) -> dict:
            return await asyncio.to_thread(self._http, request, "POST", path, body)

        def _updates(self, updates=()):
            return t.Updates(updates=list(updates), users=[], chats=[], date=kit.date, seq=0)

        async def relay(self, request):
            self.requests.append(request)
            kit.serialize(request)  # what the adapter sends must go on the wire
            if isinstance(request, kit.JoinGroupCall):
                answer = await self._post(
                    request,
                    "/join",
                    {
                        "peer": self._peer(request.join_as),
                        "params": request.params.data,
                        "muted": bool(request.muted),
                        "video_stopped": bool(request.video_stopped),
                    },
                )
                return self._updates(
                    [
                        t.UpdateGroupCallConnection(
                            params=t.DataJSON(data=answer["params"]), presentation=False
                        )
                    ]
                )
            if isinstance(request, kit.LeaveGroupCall):
                await self._post(
                    request, "/leave", {"peer": self.user, "source": request.source}
                )
                return self._updates()
            if isinstance(request, kit.EditGroupCallParticipant):
                body = {"peer": self.user, "participant": self._peer(request.participant)}
                if request.muted is not None:
                    body["muted"] = bool(request.muted)
                if request.volume is not None:
                    body["volume"] = request.volume
                await self._post(request, "/participants/edit", body)
                return self._updates()
            raise AssertionError(f"unexpected request {type(request).__name__}")

    # Only the library's own raw-request method: Pyrogram's invoke, Telethon's client(request).
    setattr(ServerClient, {"pyrogram": "invoke", "telethon": "__call__"}[kit.name], ServerClient.relay)
    return ServerClient()


def roster(server: str, call_id: int) -> dict:
    """The server's view: {peer: muted}."""
    with _http.open(f"{server}/calls/{call_id}", timeout=5) as r:
        return {p["peer"]: p["muted"] for p in json.loads(r.read())["participants"]}


async def wait_for(events, kind: str, timeout: float = 15.0, match=lambda e: True):
    """The first event of ``kind`` (matching ``match``) from an ``events()`` iterator."""

    async def first():
        async for e in events:
            if e.kind == kind and match(e):
                return e
        raise AssertionError(f"the call ended before a {kind!r} event")

    return await asyncio.wait_for(first(), timeout)


async def listener_in_a_new_call(server: str, record_dir: Path):
    engine = groupcall.Engine.local(server, LISTENER)
    call_id = await asyncio.wait_for(engine.create_call(), 10)
    listener = await asyncio.wait_for(engine.join(call_id, record_dir=str(record_dir)), 15)
    return call_id, listener


def test_adapter_joins_plays_mutes_and_leaves_a_real_call(kit, server, tmp_path):
    """The player's whole signaling goes through the adapter and the library's TL objects:
    if the join request, the answer read from the library's Updates, the mute edits or the
    leave's signed source were wrong, the server would refuse them or the listener would not
    hear the 440 Hz tone the player sends."""

    async def main():
        tone = write_tone(tmp_path / "tone.wav", 440.0, 3.0)
        call_id, listener = await listener_in_a_new_call(server, tmp_path / "rec")
        client = server_client(kit, server, PLAYER)
        signaling = kit.Signaling(client, call=(call_id, 0))
        player = await asyncio.wait_for(groupcall.Engine().join(signaling, play=str(tone)), 15)
        ssrc = player.ssrc
        await wait_for(player.events(), "source_ended", 15)

        await asyncio.wait_for(player.mute(), 10)
        muted = await asyncio.to_thread(roster, server, call_id)
        await asyncio.wait_for(player.unmute(), 10)
        unmuted = await asyncio.to_thread(roster, server, call_id)

        failed_before_leave = list(client.failed)
        await asyncio.wait_for(player.leave(), 15)
        handlers_after_leave = kit.handler_count(client)
        leave_failures = client.failed[len(failed_before_leave) :]
        await asyncio.sleep(0.3)
        summary = await asyncio.wait_for(listener.leave(), 15)

        # Leaving again: the server answers GROUPCALL_JOIN_MISSING, which reaches the adapter
        # as the library's own error class, and the adapter takes it as "already left".
        await asyncio.wait_for(signaling.leave(ssrc), 10)
        return (client, ssrc, summary, muted, unmuted, handlers_after_leave,
                failed_before_leave, leave_failures)

    (client, ssrc, summary, muted, unmuted, handlers,
     failed_before_leave, leave_failures) = asyncio.run(main())
    assert failed_before_leave == [], f"the server refused: {failed_before_leave}"

    assert muted[PLAYER] is True, f"the server did not see the mute: {muted}"
    assert unmuted[PLAYER] is False, f"the server did not see the unmute: {unmuted}"

    [join] = client.sent(kit.JoinGroupCall)
    assert isinstance(join.join_as, kit.types.InputPeerSelf)
    assert join.muted is False, "the engine joins unmuted when it has something to play"
    assert join.video_stopped is True
    assert json.loads(join.params.data)["ssrc"] & 0xFFFFFFFF == ssrc

    edits = client.sent(kit.EditGroupCallParticipant)
    assert [(e.muted, e.volume) for e in edits] == [(True, None), (False, None)]
    assert all(isinstance(e.participant, kit.types.InputPeerSelf) for e in edits)

    first_leave, again = client.sent(kit.LeaveGroupCall)
    assert first_leave.source == signed32(ssrc)
    assert (first_leave.call.id, first_leave.call.access_hash) == (join.call.id, 0)
    # The engine closes its media connection before it signals the leave, so the server may
    # have dropped the player already (docs/python.md): then it answers GROUPCALL_JOIN_MISSING,
    # which the adapter must take as done. Either way, nothing else may fail.
    assert all(f["type"] in LEFT_ALREADY for f in leave_failures), leave_failures
    assert again.source == signed32(ssrc)
    assert [f["type"] for f in client.failed[len(leave_failures) :]] == ["GROUPCALL_JOIN_MISSING"]
    assert handlers == 0, "leaving removes the adapter's update handler"

    paths = [Path(r["path"]) for r in summary["recordings"] if r["ssrc"] == ssrc]
    assert paths, f"the listener recorded no SSRC {ssrc}: {summary['recordings']}"
    hz = dominant_hz(read_wav(paths[0]))
    assert abs(hz - 440.0) / 440.0 < 0.02, f"heard {hz:.1f} Hz for 440 Hz"


def test_roster_updates_through_the_adapter_reach_the_engine(kit, server, tmp_path):
    """Through an adapter the engine learns the roster only from the updates the adapter hands
    on: a real UpdateGroupCallParticipants pushed through the client's update handler must come
    out as participant_joined (and, once left, participant_left) for the listener, while the
    same update for another call must be dropped by the adapter."""

    async def main():
        call_id, listener = await listener_in_a_new_call(server, tmp_path / "rec")
        client = server_client(kit, server, PLAYER)
        signaling = kit.Signaling(client, call=(call_id, 0), join_as="me")
        player = await asyncio.wait_for(
            groupcall.Engine().join(signaling, record_dir=str(tmp_path / "player-rec")), 15
        )
        events = player.events()  # from now on: before the updates are pushed
        t = kit.types

        def update(call, peer, version, **flags):
            return t.UpdateGroupCallParticipants(
                call=t.InputGroupCall(id=call, access_hash=0),
                participants=[
                    t.GroupCallParticipant(
                        peer=t.PeerUser(user_id=peer),
                        date=kit.date,
                        source=signed32(listener.ssrc),
                        **flags,
                    )
                ],
                version=version,
            )

        assert kit.handler_count(client) == 1, "the adapter registered its update handler"
        # Pushed in order: had the other call's update got through, its participant_joined
        # (peer 3003) would come first.
        await client.push(update(call_id + 1, STRANGER, 9))
        await client.push(update(call_id, LISTENER, 2, muted=True))
        joined = await wait_for(events, "participant_joined", 10)
        await client.push(update(call_id, LISTENER, 3, left=True))
        left = await wait_for(events, "participant_left", 10)

        await asyncio.wait_for(player.leave(), 15)
        await asyncio.wait_for(listener.leave(), 15)
        return client, listener.ssrc, joined, left

    client, listener_ssrc, joined, left = asyncio.run(main())

    assert joined.peer == LISTENER, f"participant_joined names {joined.peer}, not {LISTENER}"
    assert joined.ssrc == listener_ssrc and joined.source == signed32(listener_ssrc)
    assert joined.muted is True
    assert left.peer == LISTENER and left.ssrc == listener_ssrc

    [join] = client.sent(kit.JoinGroupCall)
    assert isinstance(join.join_as, kit.types.InputPeerUser), "join_as went through resolve_peer"
    assert join.join_as.user_id == PLAYER
    assert client.failed == [], f"the server refused: {client.failed}"
