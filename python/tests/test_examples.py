"""The examples run against `groupcall serve` with the installed package: a music bot and a
TTS pusher speak, the recorder writes one file per speaker with their audio in it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np

import groupcall
from conftest import dominant_hz, read_wav, write_tone

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str, timeout: float = 60) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_the_examples_run_against_a_local_server(server, tmp_path):
    call_id = asyncio.run(groupcall.Engine.local(server, 1).create_call())
    out = tmp_path / "recordings"
    recorder = run("recorder.py", "--local", server, "--call", str(call_id), "--out", str(out), "--seconds", "7")
    import time

    time.sleep(1.5)
    first = write_tone(tmp_path / "a.wav", 440.0, 1.5)
    second = write_tone(tmp_path / "b.wav", 660.0, 1.5)
    bot = run("music_bot.py", "--local", server, "--call", str(call_id), "--preset", "voice", str(first), str(second))
    tts = run("tts_pusher.py", "--local", server, "--call", str(call_id), "hello there", "groupcall")
    outputs = {}
    for name, proc in [("music_bot", bot), ("tts_pusher", tts), ("recorder", recorder)]:
        text, _ = proc.communicate(timeout=60)
        outputs[name] = text
        assert proc.returncode == 0, f"{name} failed:\n{text}"
    assert outputs["music_bot"].count("finished") == 2, outputs["music_bot"]
    assert "said: 'groupcall'" in outputs["tts_pusher"], outputs["tts_pusher"]
    assert "speaking: peer 1001" in outputs["recorder"], outputs["recorder"]
    files = {p.name.split("_")[0]: p for p in out.glob("peer*_ssrc*.wav")}
    assert {"peer1001", "peer3003"} <= set(files), f"recorded {sorted(files)}:\n{outputs['recorder']}"
    bot_audio = read_wav(files["peer1001"])
    assert (np.abs(bot_audio) > 2000).sum() > 48_000 * 2.5, "the bot's two tracks are in its file"
    hz = dominant_hz(bot_audio)
    assert abs(hz - 440.0) / 440.0 < 0.02 or abs(hz - 660.0) / 660.0 < 0.02, f"{hz:.1f} Hz"
    assert (np.abs(read_wav(files["peer3003"])) > 2000).sum() > 48_000 * 0.5, "the TTS is in its file"
    assert (out / "mix.wav").exists()
