"""Fixtures: a local server (`groupcall serve`, the binary named by GROUPCALL_BIN or found in
the cargo target directory) per test module, and audio helpers that measure what a recording
holds."""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
import wave
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def groupcall_bin() -> str:
    if os.environ.get("GROUPCALL_BIN"):
        return os.environ["GROUPCALL_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for profile in ("debug", "release"):
        candidate = target / profile / "groupcall"
        if candidate.exists():
            return str(candidate)
    pytest.fail("no groupcall binary: build it (cargo build -p groupcall-cli) or set GROUPCALL_BIN")


@pytest.fixture(scope="module")
def server():
    """The control API's URL of a fresh local server on loopback."""
    proc = subprocess.Popen(
        [groupcall_bin(), "serve", "--control", "127.0.0.1:0", "--media", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = None
    deadline = time.monotonic() + 10
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(r"control API\s+(http://\S+)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        pytest.fail("groupcall serve did not start:\n" + "".join(seen))
    yield url
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


def write_tone(path: Path, freq: float, seconds: float, rate: int = 48_000, level: float = 0.5) -> Path:
    """A mono 16-bit WAV of a sine."""
    n = int(seconds * rate)
    frames = bytearray()
    for i in range(n):
        v = int(level * 32767 * math.sin(2 * math.pi * freq * i / rate))
        frames += v.to_bytes(2, "little", signed=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return path


def tone_pcm(freq: float, seconds: float, start: int = 0, level: float = 0.5) -> bytes:
    import numpy as np

    t = (np.arange(int(seconds * 48_000)) + start) / 48_000
    return (level * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def read_wav(path) -> "np.ndarray":
    """The first channel of a 16-bit WAV as float samples."""
    import numpy as np

    with wave.open(str(path), "rb") as w:
        ch = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(float)
    return data[::ch]


def dominant_hz(samples, rate: int = 48_000) -> float:
    """The strongest frequency of the loud part of a signal, to a fraction of a hertz."""
    import numpy as np

    idx = np.flatnonzero(np.abs(samples) > 0.05 * (np.abs(samples).max() or 1))
    if len(idx) == 0:
        return 0.0
    seg = samples[idx[0] : idx[-1] + 1][: rate * 4]
    x = seg * np.hanning(len(seg))
    spectrum = np.abs(np.fft.rfft(x, n=8 * len(x)))
    return float(np.argmax(spectrum) * rate / (8 * len(x)))


def longest_gap_ms(samples, start_s: float, end_s: float, rate: int = 48_000) -> float:
    """The longest run of near-silent 5 ms blocks between two times of a tone's recording."""
    import numpy as np

    seg = samples[int(start_s * rate) : int(end_s * rate)]
    block = rate // 200
    quiet = [np.abs(seg[i : i + block]).max() < 500 for i in range(0, len(seg) - block, block)]
    longest = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        longest = max(longest, run)
    return longest * 5.0
