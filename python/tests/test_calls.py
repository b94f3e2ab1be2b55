"""The package end to end against a real local server (`groupcall serve`) over loopback UDP:
what one Python call sends, another hears; events, frames and handlers behave as documented."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import groupcall
from groupcall.signaling import LEFT_ALREADY
from conftest import dominant_hz, longest_gap_ms, read_wav, tone_pcm, write_tone

PLAYER, LISTENER = 1001, 2002


async def wait_for(call: groupcall.Call, kind: str, timeout: float = 10.0) -> groupcall.Event:
    async def first():
        async for e in call.events():
            if e.kind == kind:
                return e

    return await asyncio.wait_for(first(), timeout)


async def listener_and_call(server: str, tmp: Path, **options):
    """A call on the server and a listener in it, recording each speaker to `tmp`."""
    listener_engine = groupcall.Engine.local(server, LISTENER)
    call_id = await listener_engine.create_call()
    listener = await listener_engine.join(call_id, record_dir=str(tmp), **options)
    return call_id, listener


def recording_of(summary: dict, ssrc: int) -> Path:
    paths = [Path(r["path"]) for r in summary["recordings"] if r["ssrc"] == ssrc]
    assert paths, f"no recording of SSRC {ssrc}: {summary['recordings']}"
    return paths[0]


@pytest.mark.parametrize("preset", ["voice", "lean"])
def test_a_tone_played_is_recorded_per_speaker_at_its_frequency(server, tmp_path, preset):
    async def main():
        tone = write_tone(tmp_path / "tone.wav", 440.0, 3.0)
        call_id, listener = await listener_and_call(server, tmp_path / "rec")
        player = await groupcall.Engine.local(server, PLAYER).join(call_id, play=str(tone), preset=preset)
        ssrc = player.ssrc
        await wait_for(player, "source_ended", 15)
        await asyncio.sleep(0.5)
        await player.leave()
        return ssrc, await listener.leave()

    ssrc, summary = asyncio.run(main())
    path = recording_of(summary, ssrc)
    assert path.name == f"peer{PLAYER}_ssrc{ssrc}.wav", "named after the speaker"
    got = read_wav(path)
    loud = np.abs(got) > 2000
    assert loud.sum() > 48_000 * 2.5, f"only {loud.sum() / 48_000:.2f} s of the 3 s tone heard"
    hz = dominant_hz(got)
    assert abs(hz - 440.0) / 440.0 < 0.02, f"heard {hz:.1f} Hz for 440 Hz"


def test_pushed_frames_arrive_intact_and_frames_reach_a_handler(server, tmp_path):
    async def main():
        call_id, listener = await listener_and_call(server, tmp_path / "rec", frames=True)
        got = {}

        @listener.on_frame
        def collect(frame):
            got.setdefault((frame.ssrc, frame.peer), []).append(frame)

        player = await groupcall.Engine.local(server, PLAYER).join(call_id, push=True)
        await wait_for(player, "connected")
        sent = tone_pcm(660.0, 3.0)
        chunk = 960 * 2
        for i in range(0, len(sent), chunk):
            await player.push(sent[i : i + chunk])
        player.end_push()
        await wait_for(player, "source_ended", 15)
        await asyncio.sleep(0.5)
        ssrc = player.ssrc
        await player.leave()
        await listener.leave()
        return ssrc, got, sent

    ssrc, got, sent = asyncio.run(main())
    frames = got.get((ssrc, PLAYER))
    assert frames, f"no frames of SSRC {ssrc} from peer {PLAYER}; got {list(got)}"
    assert all(f.channels == 1 and len(f.pcm) == 960 * 2 for f in frames)
    heard = np.frombuffer(b"".join(f.pcm for f in frames), "<i2").astype(float)
    hz = dominant_hz(heard)
    assert abs(hz - 660.0) / 660.0 < 0.02, f"heard {hz:.1f} Hz for 660 Hz"
    # Intact: one second of what was heard matches what was pushed, shifted by the path's delay.
    src = np.frombuffer(sent, "<i2").astype(float)
    start = int(np.argmax(np.abs(heard) > 2000)) + 24_000
    a = heard[start : start + 48_000]
    b = src[: 48_000 * 2]
    corr = np.correlate(b, a, "valid") / (np.linalg.norm(a) * np.sqrt(np.convolve(b * b, np.ones(len(a)), "valid")))
    assert corr.max() > 0.9, f"correlation with the pushed tone {corr.max():.3f}"
    rms_ratio = np.sqrt(np.mean(a * a)) / np.sqrt(np.mean(src * src))
    assert 0.7 < rms_ratio < 1.3, f"level changed by {rms_ratio:.2f}x"


def test_an_exception_in_a_handler_is_reported_and_the_call_goes_on(server, tmp_path):
    async def main():
        tone = write_tone(tmp_path / "tone.wav", 550.0, 4.0)
        call_id, listener = await listener_and_call(server, tmp_path / "rec")
        speaking = []

        @listener.on("speaking")
        def broken(event):
            raise RuntimeError("a bug in the bot")

        @listener.on("speaking")
        def counting(event):
            speaking.append(time.monotonic())

        errors = []

        async def watch():
            async for e in listener.events():
                if e.kind == "handler_error":
                    errors.append(e)

        watcher = asyncio.create_task(watch())
        player = await groupcall.Engine.local(server, PLAYER).join(call_id, play=str(tone))
        await wait_for(player, "source_ended", 15)
        await player.leave()
        summary = await listener.leave()
        await asyncio.wait_for(watcher, 5)
        return speaking, errors, listener.handler_errors, summary, player.ssrc

    speaking, errors, raised, summary, ssrc = asyncio.run(main())
    assert raised and all(isinstance(e, RuntimeError) for e in raised), raised
    assert errors and "a bug in the bot" in errors[0].error, "reported as an event"
    assert len(speaking) >= 20, f"the next handler ran {len(speaking)} times over 4 s"
    assert speaking[-1] - speaking[0] > 2.5, "events went on after the first exception"
    got = read_wav(recording_of(summary, ssrc))
    assert (np.abs(got) > 2000).sum() > 48_000 * 3.5, "the audio went on"


@pytest.mark.parametrize("blocking", ["sleep", "busy"])
def test_a_handler_blocking_the_loop_for_2_s_leaves_no_gap_in_the_audio(server, tmp_path, blocking):
    async def main():
        tone = write_tone(tmp_path / "tone.wav", 440.0, 6.0)
        call_id, listener = await listener_and_call(server, tmp_path / "rec")
        blocked = []

        @listener.on("speaking")
        def block(event):
            if not blocked:
                blocked.append(time.monotonic())
                end = time.monotonic() + 2.0
                if blocking == "sleep":
                    time.sleep(2.0)
                while time.monotonic() < end:  # holds the GIL, released only by the interpreter's switch
                    pass

        player = await groupcall.Engine.local(server, PLAYER).join(call_id, play=str(tone))
        await wait_for(player, "source_ended", 20)
        await asyncio.sleep(0.3)
        await player.leave()
        return blocked, await listener.leave(), player.ssrc

    blocked, summary, ssrc = asyncio.run(main())
    assert blocked, "the handler ran"
    got = read_wav(recording_of(summary, ssrc))
    loud = np.flatnonzero(np.abs(got) > 2000)
    first, last = loud[0] / 48_000, loud[-1] / 48_000
    assert last - first > 5.5, f"the tone lasted {last - first:.2f} s of 6"
    gap = longest_gap_ms(got, first + 0.1, last - 0.1)
    print(f"\nlongest gap while the loop was blocked ({blocking}): {gap:.0f} ms")
    assert gap <= 60, f"a {gap:.0f} ms gap in the recording"


def test_a_recording_started_mid_call_holds_the_speaker_from_then_on(server, tmp_path):
    async def main():
        tone = write_tone(tmp_path / "tone.wav", 550.0, 3.0)
        engine = groupcall.Engine.local(server, LISTENER)
        call_id = await engine.create_call()
        listener = await engine.join(call_id)
        player = await groupcall.Engine.local(server, PLAYER).join(call_id, play=str(tone))
        await wait_for(player, "connected")
        await asyncio.sleep(1.0)
        await listener.record(dir=str(tmp_path / "rec"), mix=str(tmp_path / "mix.wav"))
        with pytest.raises(groupcall.ConfigError, match="already records"):
            await listener.record(mix=str(tmp_path / "again.wav"))
        await wait_for(player, "source_ended", 15)
        await asyncio.sleep(0.3)
        ssrc = player.ssrc
        await player.leave()
        return ssrc, await listener.leave()

    ssrc, summary = asyncio.run(main())
    path = recording_of(summary, ssrc)
    assert path.name == f"peer{PLAYER}_ssrc{ssrc}.wav"
    got = read_wav(path)
    heard = (np.abs(got) > 2000).sum() / 48_000
    assert 1.0 < heard < 2.6, f"{heard:.2f} s of the tone: the part after the start, not all 3 s"
    assert abs(dominant_hz(got) - 550.0) / 550.0 < 0.02
    assert summary["mix"] == str(tmp_path / "mix.wav")
    assert (np.abs(read_wav(summary["mix"])) > 2000).sum() > 48_000


def test_set_volume_reaches_the_server(server):
    async def main():
        engine = groupcall.Engine.local(server, PLAYER)
        call_id = await engine.create_call()
        call = await engine.join(call_id)
        await wait_for(call, "connected")
        await call.set_volume(50)
        with urllib.request.urlopen(f"{server}/calls/{call_id}", timeout=5) as r:
            volumes = {p["peer"]: p["volume"] for p in json.loads(r.read())["participants"]}
        await call.leave()
        return volumes

    assert asyncio.run(main())[PLAYER] == 5000, "50 % is Telegram's 5000"


def test_bad_input_is_refused_with_typed_errors(server, tmp_path):
    async def main():
        engine = groupcall.Engine.local(server, PLAYER)
        with pytest.raises(groupcall.SourceError, match="no such file"):
            await engine.join(await engine.create_call(), play=str(tmp_path / "missing.mp3"))
        not_audio = tmp_path / "notes.txt"
        not_audio.write_text("not audio")
        with pytest.raises(groupcall.ConfigError, match="preset"):
            await engine.join(1, preset="loud")
        with pytest.raises(groupcall.ServerError):
            await engine.join(987_654, play=None)
        call = await engine.join(await engine.create_call())
        with pytest.raises(groupcall.ConfigError, match="push=True"):
            await call.push(b"\0\0")
        with pytest.raises(groupcall.ConfigError, match="frames=True"):
            call.frames()
        with pytest.raises(groupcall.ConfigError, match="volume"):
            await call.set_volume(500)
        await call.leave()
        with pytest.raises(groupcall.CallEndedError):
            await call.mute()
        with pytest.raises(TypeError, match="call id"):
            await engine.join("1")
        with pytest.raises(groupcall.ConfigError, match="adapter"):
            await groupcall.Engine().join(HttpSignaling(server, 1, PLAYER), join_as=-1001234567890)

    asyncio.run(main())


class HttpSignaling(groupcall.Signaling):
    """A Signaling of the test's own, on the local server's HTTP control API, to prove that
    the bring-your-own path (payload out, answer in, leave, mute) works through a real server
    just as an MTProto adapter's calls would."""

    def __init__(self, server: str, call_id: int, peer: int):
        self.base, self.call_id, self.peer = server, call_id, peer
        self.requests = []
        self.failed = []

    def _post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(
            f"{self.base}/calls/{self.call_id}/{path}",
            data=json.dumps({"peer": self.peer, **body}).encode(),
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            err = json.loads(e.read())["error"]
            self.failed.append(err)
            raise groupcall.SignalingError(err["type"], err["code"], err["message"]) from None

    def roster(self) -> dict:
        with urllib.request.urlopen(f"{self.base}/calls/{self.call_id}", timeout=5) as r:
            return {p["peer"]: p["muted"] for p in json.loads(r.read())["participants"]}

    async def join(self, params, *, muted, video_stopped):
        self.requests.append(("join", muted))
        answer = await asyncio.to_thread(self._post, "join", {"params": params, "muted": muted})
        return answer["params"]

    async def leave(self, source):
        self.requests.append(("leave", source))
        try:
            await asyncio.to_thread(self._post, "leave", {"source": source})
        except groupcall.SignalingError as e:
            if e.name not in LEFT_ALREADY:
                raise
            self.failed.pop()

    async def edit_self(self, *, muted=None, volume=None):
        self.requests.append(("edit", muted, volume))
        body = {"participant": self.peer, "muted": muted, "volume": volume}
        await asyncio.to_thread(self._post, "participants/edit", {k: v for k, v in body.items() if v is not None})

    def start_updates(self, on_participants, on_discarded):
        pass

    async def stop_updates(self):
        pass


def test_bring_your_own_signaling_joins_plays_mutes_and_leaves(server, tmp_path):
    async def main():
        tone = write_tone(tmp_path / "tone.wav", 770.0, 3.0)
        call_id, listener = await listener_and_call(server, tmp_path / "rec")
        signaling = HttpSignaling(server, call_id, PLAYER)
        player = await groupcall.Engine().join(signaling, play=str(tone))
        await wait_for(player, "source_ended", 15)
        await player.mute()
        muted = await asyncio.to_thread(signaling.roster)
        await player.unmute()
        unmuted = await asyncio.to_thread(signaling.roster)
        ssrc = player.ssrc
        await player.leave()
        await asyncio.sleep(0.3)
        return signaling, ssrc, await listener.leave(), muted, unmuted

    signaling, ssrc, summary, muted, unmuted = asyncio.run(main())
    requests = signaling.requests
    assert muted[PLAYER] is True and unmuted[PLAYER] is False, "the server saw the mute"
    assert requests[0] == ("join", False)
    assert ("edit", True, None) in requests and ("edit", False, None) in requests
    assert requests[-1][0] == "leave" and requests[-1][1] & 0xFFFFFFFF == ssrc
    assert not signaling.failed, f"the server refused: {signaling.failed}"
    hz = dominant_hz(read_wav(recording_of(summary, ssrc)))
    assert abs(hz - 770.0) / 770.0 < 0.02, f"heard {hz:.1f} Hz for 770 Hz"


EXIT_SCRIPT = """
import asyncio, sys, groupcall

async def main():
    engine = groupcall.Engine.local(sys.argv[1], 4004)
    call = await engine.join(int(sys.argv[2]), push=True)
    events = call.events()
    await call.push(bytes(1920 * 5))
    call.end_push()
    async for event in events:
        if event.kind == "source_ended":
            break
    await call.leave()

asyncio.run(main())
print("exited")
"""


def test_a_process_that_exits_right_after_leaving_exits_cleanly(server, tmp_path):
    """Results used to reach Python from a Rust thread, which CPython stops mid-way when it
    asks for the GIL during shutdown: this script crashed (SIGSEGV) within a few runs. Now
    no Rust thread takes the GIL; twenty runs in a row exit 0."""
    import subprocess
    import sys

    call_id = asyncio.run(groupcall.Engine.local(server, 1).create_call())
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    for i in range(20):
        r = subprocess.run(
            [sys.executable, str(script), server, str(call_id)], capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 0 and "exited" in r.stdout, f"run {i}: exit {r.returncode}\n{r.stderr}"


def test_speaking_events_turned_off_send_none_and_the_level_stays_in_the_stats(server, tmp_path):
    async def main():
        tone = write_tone(tmp_path / "tone.wav", 600.0, 2.0)
        call_id, listener = await listener_and_call(server, tmp_path / "rec", speaking_events=False)
        told = await groupcall.Engine.local(server, LISTENER + 1).join(call_id)
        heard = {"quiet": 0, "told": 0}

        @listener.on("speaking")
        def quiet(event):
            heard["quiet"] += 1

        @told.on("speaking")
        def counting(event):
            heard["told"] += 1

        player = await groupcall.Engine.local(server, PLAYER).join(call_id, play=str(tone))
        await asyncio.sleep(1.0)
        levels = [s["level"] for s in listener.stats()["speakers"] if s["ssrc"] == player.ssrc]
        await wait_for(player, "source_ended", 15)
        await player.leave()
        await told.leave()
        await listener.leave()
        return heard, levels

    heard, levels = asyncio.run(main())
    assert heard["quiet"] == 0, f"{heard['quiet']} speaking events with them off"
    assert heard["told"] >= 10, f"the default listener had {heard['told']} speaking events in 2 s"
    assert levels and levels[0] > 0.05, f"the level in the stats: {levels}"
