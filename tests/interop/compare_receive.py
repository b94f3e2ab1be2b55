#!/usr/bin/env python3
"""Receive quality under a bad downlink: this engine (`groupcall join`) against ntgcalls 3.0.5
(libwebrtc's NetEq), side by side, on the same lost and delayed packets.

Per row (one impairment setting, one seed) and signal (a 1 kHz tone, a synthetic speech-like
signal), in one call of a local `groupcall serve` (scripts/compare-receive.sh starts it):

  sender    groupcall join CALL --as 1001 --play SIGNAL.wav [--clock-log]   straight to the server
  relay     groupcall impair --to 127.0.0.1:MEDIA --direction down --loss P [--burst N]
                             --jitter-ms J --seed S         impairs RTP from the server only
  ours      groupcall join CALL --as 2002 --muted --record OURS.wav --media-via RELAY [--clock-log]
  ntgcalls  an NTgCalls participant in PLAYBACK mode with an EXTERNAL microphone sink
            (tests/interop/test_ntgcalls.py, docs/protocol.md §12.7), joined through the control
            API, with every ICE candidate of the server's answer rewritten to the relay's address

Both listeners join first and are connected before the sender starts. The relay decides loss
and delay from (seed, SSRC, sequence number), so both listeners lose exactly the same packets.

Scores, per listener, on its record aligned to the sent signal (onset detection, refined by
cross-correlation):
  tone      20 ms blocks of the 10 s tone (0.5 s skipped at each end); a block is good when its
            dominant frequency is 1000 Hz +- 2 % and its RMS is at least half the clean block's:
            good-block %, longest run of bad blocks (ms)
  speech    log-spectral distance (dB) per non-silent 20 ms block against the clean block, the
            received block taken at an offset that may follow a receiver's time-stretching (at
            most 60 ms of change from one block to the next, chosen as a smooth path so that a
            dropout cannot be dodged by matching nearby audio): mean and 95th percentile
  latency   mouth-to-ear: wall time of the received onset - wall time the sender sent it (needs
            `--clock-log` on the sender; on ours too, for ours)

Usage (scripts/compare-receive.sh starts the server and passes --control/--media-port/--bin):
  compare_receive.py --control URL --media-port PORT --bin GROUPCALL [--rows none,10,20,30,burst10]
                     [--seeds 1,2] [--signal tone|speech|both] [--json FILE] [--check]
                     [--no-relay] [--out DIR]
  compare_receive.py --self-test        (the scoring functions on synthetic records; no server)
The last line printed is `compare: N rows, M checks failed`.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

from control_api import Api

FS = 48000  # every signal and record here is 48 kHz
BLOCK = 960  # 20 ms, the scoring block

# The sent signals: LEAD_S of silence, SIGNAL_S of signal, TAIL_S of silence.
LEAD_S = 1.0
SIGNAL_S = 10.0
TAIL_S = 0.5
TONE_HZ = 1000.0
TONE_AMPLITUDE = 0.5  # -6 dBFS
SPEECH_SEED = 1  # the speech signal is the same in every row; the row's seed drives the relay

# Tone scoring.
TONE_SKIP_S = 0.5  # skipped at each end of the tone span, after alignment
FREQ_TOLERANCE = 0.02
MIN_RMS_RATIO = 0.5  # of the clean block's RMS
TONE_FFT = 8192  # zero-padding: 5.9 Hz bins for a 20 ms block (plus parabolic interpolation)

# Speech scoring.
LSD_FFT = 1024
LSD_MAX_HZ = 8000.0  # the band compared: 0-8 kHz, where the synthetic speech has its energy
LSD_FLOOR_DB = 50.0  # both spectra are floored this far below the clean block's peak bin
SILENT_DB = 25.0  # a clean block this far below the speech's RMS counts as silent (not scored)
SEARCH_MS = 60  # the largest change of offset from one scored block to the next
SEARCH_STEP = 96  # offsets on a 2 ms grid
DRIFT_BACK_MS = 150  # the offsets searched, relative to the onset alignment: a receiver may
DRIFT_AHEAD_MS = 450  # shrink its delay a little, or grow it a lot (a jitter buffer filling up)
PATH_PENALTY = 1.0  # dB per ms of change of offset between consecutive blocks

# Alignment.
ONSET_FRACTION = 0.1  # onset threshold: this fraction of the sent signal's first 200 ms RMS
ONSET_BLOCKS = 3  # ... exceeded by this many consecutive 20 ms blocks
XCORR_PRE_S = 0.05  # the template: 50 ms before the sent onset (the silence-to-signal edge
XCORR_LEN_S = 0.2  # disambiguates a periodic tone) and the first 200 ms of the signal
XCORR_SEARCH_S = 0.06  # refinement range either side of the onset estimate

# ntgcalls record assembly: a pause in on_frames longer than this is a pause in its playout.
NTG_GAP_S = 0.1

# Rows. `--loss` and `--reorder` etc. are fractions; `--jitter-ms` milliseconds.
ROWS = [
    {"id": "none", "label": "none", "loss": 0.0, "burst": None, "jitter_ms": 0},
    {"id": "10", "label": "10% loss + 40 ms jitter", "loss": 0.10, "burst": None, "jitter_ms": 40},
    {"id": "20", "label": "20% loss + 80 ms jitter", "loss": 0.20, "burst": None, "jitter_ms": 80},
    {"id": "30", "label": "30% loss + 120 ms jitter", "loss": 0.30, "burst": None, "jitter_ms": 120},
    {"id": "burst10", "label": "10% bursty (mean 3) + 40 ms jitter", "loss": 0.10, "burst": 3,
     "jitter_ms": 40},
]

# --check thresholds.
CHECK_MARGIN_PCT = 1.0  # ours' tone good % >= ntgcalls' - this, on every row
CHECK_ROW_10_GOOD = 99.5  # on the 10 %/40 ms row
CHECK_ROW_10_BAD_MS = 20
CHECK_CLEAN_LATENCY_MS = 80.0

# Time bounds of one session (one row, one signal), seconds.
HTTP_TIMEOUT = 5.0
RELAY_READY_LIMIT = 5.0
CONNECT_LIMIT = 10.0
PLAY_LIMIT = LEAD_S + SIGNAL_S + TAIL_S + 8.0  # sender start to "finished playing"
STOP_LIMIT = 4.0

PEER_CREATOR, PEER_SENDER, PEER_OURS, PEER_NTG = 1, 1001, 2002, 2003
NTG_CHAT_BASE = -1001234500000  # ntgcalls' key for each session's call; never reaches Telegram


# ---------------------------------------------------------------------------------------------
# Signals and WAV files


def make_tone():
    """1.0 s silence, 10 s of 1 kHz at -6 dBFS, 0.5 s silence (float, full scale 1.0)."""
    x = np.zeros(int((LEAD_S + SIGNAL_S + TAIL_S) * FS))
    t = np.arange(int(SIGNAL_S * FS)) / FS
    x[int(LEAD_S * FS) : int((LEAD_S + SIGNAL_S) * FS)] = TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)
    return x


def _smooth_contour(rng, n, lo, hi, rates=(0.23, 0.61, 1.37)):
    """A smooth deterministic contour over n samples, spanning [lo, hi]: a sum of slow sinusoids
    with random phases, rescaled."""
    t = np.arange(n) / FS
    c = sum(np.sin(2 * np.pi * r * t + rng.uniform(0, 2 * np.pi)) / (i + 1) for i, r in enumerate(rates))
    c = (c - c.min()) / (c.max() - c.min())
    return lo + (hi - lo) * c


def _resonances(f, formants, bandwidths, gains):
    """Magnitude of a sum of resonance peaks (Lorentzian shapes) at frequencies f; formants is a
    list of arrays (or scalars) broadcastable against f."""
    env = 0.02  # a floor between the peaks
    for fc, bw, g in zip(formants, bandwidths, gains):
        env = env + g / (1.0 + ((f - fc) / (bw / 2.0)) ** 2)
    return env


# Vowel targets (F1, F2, F3) in Hz, roughly /a/ /e/ /i/ /o/ /u/ /ə/.
VOWELS = [(750, 1250, 2600), (500, 1900, 2600), (300, 2250, 3000), (500, 900, 2500),
          (320, 850, 2400), (520, 1450, 2550)]


def make_speech(seed=SPEECH_SEED):
    """1.0 s silence, 10 s of a deterministic speech-like signal, 0.5 s silence.

    Voiced syllables (150-300 ms, about 4 a second): a glottal-pulse-like harmonic source (all
    harmonics of f0 up to 5 kHz with a 1/k tilt) whose pitch glides between 100 and 220 Hz,
    shaped by three formant resonances that move from the previous vowel towards the next one;
    each syllable has a rise-and-fall amplitude envelope. Between them, some unvoiced bits
    (band-passed noise, 60-150 ms) and short pauses (100-300 ms). The first segment is a voiced
    syllable that starts exactly at 1.0 s."""
    rng = np.random.default_rng(seed)
    n = int(SIGNAL_S * FS)
    y = np.zeros(n)
    f0 = _smooth_contour(rng, n, 100.0, 220.0)
    phase = np.cumsum(f0) / FS  # in cycles; continuous across syllables
    prev = np.array(VOWELS[0], dtype=float)
    pos = 0
    first = True
    while pos < n:
        r = rng.random()
        if not first and r < 0.12:  # pause
            pos += int(rng.uniform(0.10, 0.30) * FS)
            continue
        if not first and r < 0.30:  # unvoiced: noise through one broad resonance
            m = min(int(rng.uniform(0.06, 0.15) * FS), n - pos)
            noise = rng.standard_normal(m)
            spec = np.fft.rfft(noise)
            f = np.fft.rfftfreq(m, 1 / FS)
            centre = rng.uniform(2500, 6000)
            spec *= _resonances(f, [centre], [2000.0], [1.0])
            seg = np.fft.irfft(spec, m)
            seg *= 0.25 / (np.sqrt(np.mean(seg**2)) + 1e-12) * 0.35
            y[pos : pos + m] += seg * np.sin(np.pi * np.arange(m) / m) ** 2
            pos += m
            continue
        # voiced syllable
        m = min(int(rng.uniform(0.15, 0.30) * FS), n - pos)
        target = np.array(VOWELS[rng.integers(len(VOWELS))], dtype=float) * rng.uniform(0.93, 1.07)
        u = np.arange(m) / m
        glide = np.clip(u / 0.4, 0.0, 1.0)[:, None]  # 40 % of the syllable to reach the vowel
        formants = prev[None, :] * (1 - glide) + target[None, :] * glide  # (m, 3)
        prev = target
        ph = phase[pos : pos + m]
        f0s = f0[pos : pos + m]
        seg = np.zeros(m)
        for k in range(1, int(5000 / 100) + 1):
            fk = k * f0s
            amp = (fk < 5000.0) / k * _resonances(
                fk, [formants[:, 0], formants[:, 1], formants[:, 2]], (90.0, 120.0, 180.0), (1.0, 0.6, 0.3))
            seg += amp * np.sin(2 * np.pi * k * ph)
        # Rise and fall; the first syllable rises faster, for a clear onset.
        env = np.sin(np.pi * u) ** (0.6 if first else 1.5)
        seg *= env * rng.uniform(0.6, 1.0)
        y[pos : pos + m] += seg
        pos += m
        first = False
    y *= 0.7 / np.max(np.abs(y))  # peak -3 dBFS
    x = np.zeros(int((LEAD_S + SIGNAL_S + TAIL_S) * FS))
    x[int(LEAD_S * FS) : int(LEAD_S * FS) + n] = y
    return x


def write_wav(path, x):
    """48 kHz mono s16 WAV from a float signal (full scale 1.0)."""
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, FS, FS * 2, 2, 16)
    header += b"data" + struct.pack("<I", len(pcm))
    with open(path, "wb") as f:
        f.write(header + pcm)


def read_wav_channels(path):
    """A 16-bit PCM WAV as a float array of shape (frames, channels) and its rate. Tolerates a
    header that was never finalised (a recorder killed mid-way): a data size of 0 or past the
    end of the file means "the rest of the file"."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos, channels, rate, bits = 12, None, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", data[body : body + 8])
            bits = struct.unpack("<H", data[body + 14 : body + 16])[0]
            if fmt not in (1, 0xFFFE) or bits != 16:
                raise ValueError(f"{path}: format {fmt}, {bits} bits; expected 16-bit PCM")
        elif cid == b"data":
            if channels is None:
                raise ValueError(f"{path}: data before fmt")
            end = len(data) if size == 0 or body + size > len(data) else body + size
            n = (end - body) // (2 * channels)
            pcm = np.frombuffer(data[body : body + 2 * n * channels], dtype="<i2").astype(np.float64) / 32768.0
            return pcm.reshape(n, channels), rate
        pos = body + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


def read_wav(path):
    """A 16-bit PCM WAV as a float mono array (channels averaged), its rate and its channel
    count (see read_wav_channels)."""
    pcm, rate = read_wav_channels(path)
    return pcm.mean(axis=1), rate, pcm.shape[1]


# ---------------------------------------------------------------------------------------------
# Scoring


def block_rms(x, block=BLOCK):
    n = len(x) // block
    b = x[: n * block].reshape(n, block)
    return np.sqrt(np.mean(b**2, axis=1))


def sent_onset():
    """Index of the first signal sample in the sent file."""
    return int(LEAD_S * FS)


def detect_onset(x, threshold):
    """Start index of the first 20 ms block that begins ONSET_BLOCKS consecutive blocks with an
    RMS above threshold, or None."""
    above = block_rms(x) > threshold
    run = 0
    for i, a in enumerate(above):
        run = run + 1 if a else 0
        if run == ONSET_BLOCKS:
            return (i - ONSET_BLOCKS + 1) * BLOCK
    return None


def align(sent, recv):
    """The lag L such that recv[i + L] corresponds to sent[i], or None when the received record
    has no onset. First the onset of each (the same detector and threshold on both), then the
    maximum of the normalised cross-correlation of the template (50 ms before the sent onset and
    the first 200 ms of the signal) within +-60 ms of that estimate."""
    s0 = sent_onset()
    ref_rms = np.sqrt(np.mean(sent[s0 : s0 + int(0.2 * FS)] ** 2))
    threshold = ONSET_FRACTION * ref_rms
    so, ro = detect_onset(sent, threshold), detect_onset(recv, threshold)
    if so is None or ro is None:
        return None
    rough = ro - so
    pre, length, search = int(XCORR_PRE_S * FS), int(XCORR_LEN_S * FS), int(XCORR_SEARCH_S * FS)
    template = sent[s0 - pre : s0 + length]
    lo = s0 - pre + rough - search  # recv index of the template's start at the smallest lag
    hi = lo + 2 * search + len(template)
    pad_lo = max(0, -lo)
    window = np.concatenate([np.zeros(pad_lo), recv[max(lo, 0) : max(hi, 0)]])
    window = np.concatenate([window, np.zeros(max(0, hi - lo - len(window)))])
    corr = np.correlate(window, template, mode="valid")  # one value per lag, 2*search+1 of them
    energy = np.convolve(window**2, np.ones(len(template)), mode="valid")
    score = corr / np.sqrt(np.maximum(energy, 1e-12))
    return rough - search + int(np.argmax(score))


def dominant_frequency(block):
    """Peak of the Hann-windowed, zero-padded spectrum, refined by parabolic interpolation of
    the log magnitude."""
    x = block - block.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=TONE_FFT))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    delta = 0.0
    if 0 < k < len(spectrum) - 1:
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
        denom = a - 2 * b + c
        if denom != 0:
            delta = 0.5 * (a - c) / denom
    return (k + delta) * FS / TONE_FFT


def segment(x, start, length):
    """x[start:start+length], zero-filled where it falls outside x."""
    out = np.zeros(length)
    a, b = max(start, 0), min(start + length, len(x))
    if b > a:
        out[a - start : b - start] = x[a:b]
    return out


def longest_run(flags):
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def score_tone(sent, recv, lag):
    """Good-block % and the longest run of bad blocks (ms) over the tone span, 0.5 s skipped at
    each end."""
    first = sent_onset() + int(TONE_SKIP_S * FS)
    count = int((SIGNAL_S - 2 * TONE_SKIP_S) * FS) // BLOCK
    bad = []
    for b in range(count):
        i = first + b * BLOCK
        clean = sent[i : i + BLOCK]
        got = segment(recv, i + lag, BLOCK)
        rms_ok = np.sqrt(np.mean(got**2)) >= MIN_RMS_RATIO * np.sqrt(np.mean(clean**2))
        freq_ok = rms_ok and abs(dominant_frequency(got) - TONE_HZ) <= FREQ_TOLERANCE * TONE_HZ
        bad.append(not (rms_ok and freq_ok))
    return {
        "good_pct": 100.0 * (count - sum(bad)) / count,
        "longest_bad_ms": longest_run(bad) * BLOCK * 1000 // FS,
        "blocks": count,
        "bad_blocks": int(sum(bad)),
        # Where, in ms after the tone's first sample (to line up both engines' losses).
        "bad_at_ms": [int(TONE_SKIP_S * 1000) + b * BLOCK * 1000 // FS for b, x in enumerate(bad) if x],
    }


def _power_spectra(blocks):
    """Hann-windowed power spectra of the rows of blocks, bins 0..LSD_MAX_HZ."""
    w = np.hanning(BLOCK)
    p = np.abs(np.fft.rfft(blocks * w, n=LSD_FFT, axis=-1)) ** 2
    return p[..., : int(LSD_MAX_HZ * LSD_FFT / FS) + 1]


def lsd_matrix(sent, recv, lag, offsets):
    """For each non-silent clean 20 ms block b of the speech span, the log-spectral distance
    (dB) to the received 20 ms block at recv[start_b + lag + offsets[j]], for every j. Returns
    (the indices of the blocks scored, an array [blocks, offsets]).

    Both power spectra are floored LSD_FLOOR_DB below the clean block's strongest bin, so that
    a silent received block scores a large but finite distance and the codec's noise far below
    the speech does not count."""
    s0 = sent_onset()
    n_blocks = int(SIGNAL_S * FS) // BLOCK
    speech = sent[s0 : s0 + int(SIGNAL_S * FS)]
    level = np.sqrt(np.mean(speech[np.abs(speech) > 1e-6] ** 2))
    silent_rms = level * 10 ** (-SILENT_DB / 20)
    scored = [b for b in range(n_blocks)
              if np.sqrt(np.mean(sent[s0 + b * BLOCK : s0 + (b + 1) * BLOCK] ** 2)) >= silent_rms]
    # The received spectra on a grid of SEARCH_STEP samples, computed once: block b at offset
    # offsets[j] is grid frame b * BLOCK / SEARCH_STEP + j.
    per_block = BLOCK // SEARCH_STEP
    first = s0 + lag + offsets[0]
    count = (n_blocks - 1) * per_block + len(offsets)
    idx = first + SEARCH_STEP * np.arange(count)[:, None] + np.arange(BLOCK)[None, :]
    padded = np.concatenate([np.zeros(max(0, -idx.min())), recv,
                             np.zeros(max(0, idx.max() + 1 - len(recv)))])
    grid = _power_spectra(padded[idx + max(0, -idx.min())])
    clean = _power_spectra(np.stack([sent[s0 + b * BLOCK : s0 + (b + 1) * BLOCK] for b in scored]))
    out = np.empty((len(scored), len(offsets)))
    for row, b in enumerate(scored):
        pc = clean[row]
        floor = pc.max() * 10 ** (-LSD_FLOOR_DB / 10)
        pr = grid[b * per_block : b * per_block + len(offsets)]
        d = 10 * np.log10(np.maximum(pc, floor)[None, :] / np.maximum(pr, floor))
        out[row] = np.sqrt(np.mean(d**2, axis=1))
    return np.array(scored), out


def best_path(cost, blocks, offsets_ms, max_step_ms, penalty_db_per_ms):
    """The sequence of offsets (one per scored block) minimising the sum of the blocks' LSD plus
    penalty_db_per_ms * |change of offset| between consecutive scored blocks, each change at
    most max_step_ms (Viterbi). Across silent blocks (a pause) the offset may move by 20 ms per
    silent block without penalty: receivers like to adjust their delay in pauses."""
    n, m = cost.shape
    jump = np.abs(offsets_ms[:, None] - offsets_ms[None, :])  # [from, to]
    acc = cost[0].copy()
    back = np.zeros((n, m), dtype=np.int64)
    for r in range(1, n):
        gap_ms = 20.0 * (blocks[r] - blocks[r - 1] - 1)
        allowed = jump <= max_step_ms + gap_ms
        trans = penalty_db_per_ms * np.maximum(jump - gap_ms, 0.0)
        total = np.where(allowed, acc[:, None] + trans, np.inf)
        back[r] = np.argmin(total, axis=0)
        acc = total[back[r], np.arange(m)] + cost[r]
    path = np.empty(n, dtype=np.int64)
    path[-1] = int(np.argmin(acc))
    for r in range(n - 1, 0, -1):
        path[r - 1] = back[r, path[r]]
    return path


def score_speech(sent, recv, lag, search_ms=SEARCH_MS, per_block=False):
    """Log-spectral distance (dB) per non-silent clean 20 ms block against the received block,
    the received block taken at lag + an offset that may follow a receiver's time-stretching:
    one offset per block, within -DRIFT_BACK_MS..+DRIFT_AHEAD_MS of the onset alignment, each
    at most search_ms from the previous block's, chosen as the path of least total LSD with a
    penalty of PATH_PENALTY dB per ms of change (a dropout cannot be skipped by jumping to
    nearby audio and back; a lasting shift is followed). search_ms=0 compares at the onset
    alignment only. Returns mean, p95 and max LSD, the blocks scored and the offset at the
    end (ms)."""
    if search_ms > 0:
        offsets = np.arange(-DRIFT_BACK_MS * FS // 1000, DRIFT_AHEAD_MS * FS // 1000 + 1, SEARCH_STEP)
    else:
        offsets = np.array([0])
    blocks, cost = lsd_matrix(sent, recv, lag, offsets)
    if len(blocks) == 0:
        return {"lsd_mean": None, "lsd_p95": None, "lsd_max": None, "blocks": 0, "end_offset_ms": None}
    offsets_ms = offsets * 1000.0 / FS
    path = best_path(cost, blocks, offsets_ms, search_ms, PATH_PENALTY) if search_ms > 0 else np.zeros(len(blocks), int)
    lsds = cost[np.arange(len(blocks)), path]
    if per_block:
        return blocks, lsds
    return {
        "lsd_mean": float(lsds.mean()),
        "lsd_p95": float(np.percentile(lsds, 95)),
        "lsd_max": float(lsds.max()),
        "blocks": int(len(lsds)),
        "end_offset_ms": float(offsets_ms[path[-1]]),
    }


def score(kind, sent, recv):
    """Align and score one record. Returns a dict; "error" says why there is no score."""
    lag = align(sent, recv)
    if lag is None:
        return {"error": "no onset found in the received record (nothing heard?)"}
    result = {"lag_samples": int(lag)}
    result.update(score_tone(sent, recv, lag) if kind == "tone" else score_speech(sent, recv, lag))
    return result


# ---------------------------------------------------------------------------------------------
# Self-test of the scoring on synthetic records


def self_test():
    """Scores synthetic records and asserts that the scores react as they should. Prints one
    line per check; returns the number of failures."""
    rng = np.random.default_rng(7)
    failed = 0

    def check(ok, what):
        nonlocal failed
        print(("ok    " if ok else "FAIL  ") + what, flush=True)
        failed += 0 if ok else 1

    def received(sent, delay_s=0.7321, noise_db=-60.0):
        """sent, delayed (a record starts before the sender does) with a little noise."""
        d = int(delay_s * FS)
        r = np.concatenate([np.zeros(d), sent, np.zeros(FS // 2)])
        return r + 10 ** (noise_db / 20) * rng.standard_normal(len(r)), d

    def dropout(r, at_s, ms):
        r = r.copy()
        a = int(at_s * FS)
        r[a : a + ms * FS // 1000] = 0.0
        return r

    def shift(r, at_s, ms):
        """From at_s on, everything 40 ms later (a receiver that stretched time): ms of
        repeated audio are inserted, the tail is cut to keep the length."""
        a, k = int(at_s * FS), ms * FS // 1000
        return np.concatenate([r[:a], r[a - k : a], r[a:]])[: len(r)]

    for kind, sent in (("tone", make_tone()), ("speech", make_speech())):
        clean, d = received(sent)
        lag = align(sent, clean)
        check(lag is not None and abs(lag - d) <= 1, f"{kind}: alignment finds the delay ({lag} vs {d} samples)")
        # A record that starts after a different delay, with an early click: the onset detector
        # needs 60 ms above threshold, a 5 ms click does not fool it.
        clicky, d2 = received(sent, delay_s=0.2503)
        clicky[FS // 10 : FS // 10 + 240] += 0.5
        lag2 = align(sent, clicky)
        check(lag2 is not None and abs(lag2 - d2) <= 1, f"{kind}: a click before the onset is ignored ({lag2} vs {d2})")
        s_clean = score(kind, sent, clean)
        # 60 ms dropout, not on a block boundary, where the signal is loud (in the speech, the
        # loudest 60 ms after 4 s).
        env = np.convolve(np.abs(sent[sent_onset() + 4 * FS : sent_onset() + 6 * FS]), np.ones(2880), "valid")
        at = d / FS + LEAD_S + 4.0 + (int(np.argmax(env)) // 48 * 48 + 13) / FS
        s_drop = score(kind, sent, dropout(clean, at, 60))
        # From the middle on, 40 ms late.
        s_shift = score(kind, sent, shift(clean, d / FS + LEAD_S + 5.007, 40))
        silent = score(kind, sent, np.zeros(len(clean)))
        check("error" in silent, f"{kind}: a silent record has no score ({silent.get('error')})")
        if kind == "tone":
            print(f"      tone clean {s_clean}\n      tone 60 ms dropout {s_drop}\n      tone 40 ms shift {s_shift}")
            check(s_clean["good_pct"] == 100.0 and s_clean["longest_bad_ms"] == 0, "tone: clean record is 100 % good")
            check(96.0 < s_drop["good_pct"] < 100.0, f"tone: a 60 ms dropout costs blocks ({s_drop['good_pct']:.2f} %)")
            check(40 <= s_drop["longest_bad_ms"] <= 80,
                  f"tone: a 60 ms dropout is a 40-80 ms bad run ({s_drop['longest_bad_ms']} ms)")
            check(s_shift["good_pct"] >= 99.5 and s_shift["longest_bad_ms"] <= 20,
                  f"tone: a 40 ms shift costs at most one block ({s_shift['good_pct']:.2f} %, {s_shift['longest_bad_ms']} ms)")
            quiet = score(kind, sent, clean * 0.4)
            check(quiet["good_pct"] == 0.0, f"tone: a record at 0.4 of the level fails the RMS test ({quiet['good_pct']:.1f} %)")
            wrong = received(0.5 * np.sin(2 * np.pi * 1100 * np.arange(len(sent)) / FS) * (np.abs(sent) > 0))[0]
            s_wrong = score_tone(sent, wrong, d)
            check(s_wrong["good_pct"] == 0.0, f"tone: 1100 Hz fails the frequency test ({s_wrong['good_pct']:.1f} %)")
        else:
            no_search = score_speech(sent, shift(clean, d / FS + LEAD_S + 5.007, 40), d, search_ms=0)
            print(f"      speech clean {s_clean}\n      speech 60 ms dropout {s_drop}\n"
                  f"      speech 40 ms shift {s_shift}\n      speech 40 ms shift, no search {no_search}")
            check(s_clean["lsd_mean"] < 2.0,
                  f"speech: clean record LSD < 2 dB (mean {s_clean['lsd_mean']:.2f}, p95 {s_clean['lsd_p95']:.2f})")
            check(s_clean["blocks"] > 300, f"speech: most blocks are scored ({s_clean['blocks']} of 500)")
            _, per_clean = score_speech(sent, clean, d, per_block=True)
            _, per_drop = score_speech(sent, dropout(clean, at, 60), d, per_block=True)
            worse = int(np.sum(per_drop > per_clean + 6.0))
            check(s_drop["lsd_mean"] > s_clean["lsd_mean"] + 0.05 and worse >= 2,
                  f"speech: a 60 ms dropout shows (mean {s_drop['lsd_mean']:.2f} dB, {worse} blocks "
                  f"6 dB worse than clean)")
            check(s_shift["lsd_mean"] < s_clean["lsd_mean"] + 0.3,
                  f"speech: a 40 ms shift is followed by the search ({s_shift['lsd_mean']:.2f} dB, "
                  f"offset at the end {s_shift['end_offset_ms']} ms)")
            check(no_search["lsd_mean"] > s_shift["lsd_mean"] + 1.0,
                  f"speech: without the search the shift would cost ({no_search['lsd_mean']:.2f} dB)")
            noisy = received(sent, noise_db=-30.0)[0]
            s_noisy = score(kind, sent, noisy)
            check(s_noisy["lsd_mean"] > s_clean["lsd_mean"] + 1.0,
                  f"speech: noise at -30 dBFS raises the LSD ({s_noisy['lsd_mean']:.2f} dB)")

    # ntgcalls' record assembly and its wall-clock map.
    frames = [(100.000 + 0.010 * i + rng.uniform(-0.002, 0.002), np.full(480, 0.1)) for i in range(50)]
    frames += [(100.800 + 0.010 * i, np.full(480, 0.2)) for i in range(50)]  # 300 ms pause first
    rec, marks, inserted = assemble_frames(frames)
    check(abs(len(rec) - int(1.3 * FS)) <= 480 and 290 <= inserted <= 310, f"ntgcalls record: a 300 ms pause becomes silence ({len(rec) / FS:.3f} s)")
    t = wall_of_sample(marks, int(1.0 * FS) + 100)
    check(abs(t - (101.000 + 100 / FS)) < 0.003, f"ntgcalls record: sample -> wall time ({t - 100:.4f} s after 100)")
    print(f"self-test: {failed} failed", flush=True)
    return failed


# ---------------------------------------------------------------------------------------------
# ntgcalls' received frames


def assemble_frames(frames):
    """(wall time of the on_frames callback, float samples) in arrival order -> one continuous
    record, its marks [(index of the frame's first sample, callback wall time)] and the
    silence inserted for pauses (ms). Frames are
    concatenated; when the callbacks pause for longer than NTG_GAP_S beyond the audio already
    delivered, the pause becomes silence (ntgcalls delivers frames only while it plays out a
    stream, one 10 ms frame per callback, about every 10 ms)."""
    parts, marks = [], []
    n = inserted = 0
    expected = None  # wall time at which the next frame is due
    for t, x in frames:
        if expected is not None and t - expected > NTG_GAP_S:
            gap = int(round((t - expected) * FS / 480)) * 480
            parts.append(np.zeros(gap))
            n += gap
            inserted += gap
        marks.append((n, t))
        parts.append(x)
        n += len(x)
        expected = t + len(x) / FS if expected is None else max(expected + len(x) / FS, t + len(x) / FS - 0.05)
    return (np.concatenate(parts) if parts else np.zeros(0)), marks, inserted * 1000 // FS


def wall_of_sample(marks, index):
    """Wall time at which ntgcalls handed over sample `index`: the callback that delivered a
    frame is taken as the moment the frame starts playing (the sink pulls 10 ms at a time, in
    real time), so a sample's time is its frame's callback time + its offset in the frame. The
    callback times jitter by a few ms (and more on a loaded machine): the offset between
    callback time and sample index is the median over the frames within 0.5 s."""
    near = [(t - i / FS) for i, t in marks if abs(i - index) <= FS // 2]
    if not near:
        return None
    return float(np.median(near)) + index / FS


class NtgListener:
    """The one NTgCalls instance of this process; each session is its own chat id."""

    def __init__(self):
        from ntgcalls import NTgCalls

        self.calls = NTgCalls()
        self.lock = threading.Lock()
        self.frames = {}  # chat id -> [(time.time(), ssrc, bytes)]
        self.connected = {}  # chat id -> time.time() of CONNECTED
        self.states = {}  # chat id -> [state names]
        self.calls.on_frames(self._on_frames)
        self.calls.on_connection_change(self._on_connection)

    def _on_frames(self, chat_id, mode, device, frames):
        now = time.time()
        with self.lock:
            got = self.frames.setdefault(chat_id, [])
            for f in frames:
                got.append((now, f.ssrc & 0xFFFFFFFF, bytes(f.data)))

    def _on_connection(self, chat_id, info):
        from ntgcalls import ConnectionState

        with self.lock:
            self.states.setdefault(chat_id, []).append(info.state.name)
            if info.state == ConnectionState.CONNECTED:
                self.connected.setdefault(chat_id, time.time())

    async def join(self, api, call_id, chat_id, relay):
        """create_call, the EXTERNAL playback sink, the join through the control API, and
        connect with the answer's candidates pointed at the relay (if any). Returns our SSRC
        and the answer as sent to connect."""
        from ntgcalls import AudioDescription, MediaDescription, MediaSource, StreamMode

        payload = await self.calls.create_call(chat_id)
        await self.calls.set_stream_sources(chat_id, StreamMode.PLAYBACK, MediaDescription(
            microphone=AudioDescription(MediaSource.EXTERNAL, FS, 1, "", False),
            speaker=None, camera=None, screen=None))
        ssrc = json.loads(payload)["ssrc"] & 0xFFFFFFFF
        status, answer = await api.call("POST", f"/calls/{call_id}/join", {"peer": PEER_NTG, "params": payload})
        if status != 200 or not isinstance(answer.get("params"), str):
            raise RuntimeError(f"the server refused ntgcalls' join: HTTP {status}: {answer}")
        params = answer["params"]
        if relay is not None:
            params = rewrite_candidates(params, relay)
        await self.calls.connect(chat_id, params, False)
        return ssrc, params

    def record(self, chat_id, ssrc):
        """The frames of one sender in one session, as a record and its marks."""
        with self.lock:
            got = list(self.frames.get(chat_id, []))
        frames = [(t, np.frombuffer(d[: len(d) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0)
                  for t, s, d in got if ssrc is None or s == ssrc]
        sizes = sorted({len(x) for _, x in frames})
        rec, marks, inserted_ms = assemble_frames(frames)
        return rec, marks, {"frames": len(frames), "frame_samples": sizes, "pauses_filled_ms": inserted_ms,
                            "other_ssrcs": sorted({s for _, s, _ in got if ssrc is not None and s != ssrc})}

    async def stop(self, chat_id):
        try:
            await asyncio.wait_for(self.calls.stop(chat_id), 5)
        except Exception:
            pass  # never connected, or already gone


def rewrite_candidates(params, relay):
    """The server's answer (JSON text) with every ICE candidate's ip and port set to the relay's
    (strings, as every candidate field must be: docs/protocol.md §12.2)."""
    answer = json.loads(params)
    host, port = relay
    for c in answer.get("transport", {}).get("candidates", []):
        c["ip"] = host
        c["port"] = str(port)
    return json.dumps(answer, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# The control API and the groupcall subprocesses


class Proc:
    """A subprocess with its stdout and stderr read line by line into a log file, and waiters
    for a line matching a pattern."""

    def __init__(self, name, argv, log_path):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.lines = []
        self.proc = None
        self.readers = []
        self.changed = asyncio.Event()

    async def start(self):
        self.log = open(self.log_path, "w")
        self.log.write("$ " + " ".join(self.argv) + "\n")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)  # its own process group: a Ctrl+C of ours is not its
        self.readers = [asyncio.ensure_future(self._read(s)) for s in (self.proc.stdout, self.proc.stderr)]

    async def _read(self, stream):
        while True:
            line = await stream.readline()
            if not line:
                break
            text = line.decode(errors="replace").rstrip("\n")
            self.lines.append(text)
            self.log.write(f"[{time.time():.3f}] {text}\n")  # wall time, to line up with the clock logs
            self.log.flush()
            self.changed.set()

    async def wait_line(self, pattern, limit):
        """The first match of pattern in the output (past or future), or None after limit s or
        when the process exits without printing it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + limit
        while True:
            for line in self.lines:
                m = rx.search(line)
                if m:
                    return m
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.returncode is not None and all(r.done() for r in self.readers)):
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                pass

    async def stop(self, sig=signal.SIGINT, limit=STOP_LIMIT):
        """sig; sig again after limit/2 s (a signal can be missed: groupcall join's Ctrl+C
        handler is re-armed on each turn of its event loop); SIGKILL after limit s. Waits for
        the output to be read. Returns "exited", "signalled twice" or "killed"."""
        how = "exited"
        if self.proc is None:
            return how
        for attempt in range(2):
            if self.proc.returncode is not None:
                break
            try:
                self.proc.send_signal(sig)
                await asyncio.wait_for(self.proc.wait(), limit / 2)
            except asyncio.TimeoutError:
                how = "signalled twice" if attempt == 0 else "killed"
            except ProcessLookupError:
                break
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            await self.proc.wait()
        try:
            await asyncio.wait_for(asyncio.gather(*self.readers), 2)
        except asyncio.TimeoutError:
            pass
        self.log.close()
        return how

    def tail(self, n=8):
        return " | ".join(self.lines[-n:])


def read_clock_log(path):
    """{event: unix seconds} from a --clock-log file (the first of each event)."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                try:
                    v = json.loads(line)
                except ValueError:
                    continue
                if isinstance(v, dict) and "event" in v and "unix_us" in v:
                    out.setdefault(v["event"], v["unix_us"] / 1e6)
    except OSError:
        pass
    return out


def probe_features(binary):
    """What this groupcall binary can do: the relay, --media-via, --clock-log."""
    def help_of(*args):
        try:
            r = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, timeout=10)
            return r.returncode, r.stdout + r.stderr
        except (OSError, subprocess.TimeoutExpired) as e:
            return 1, str(e)

    rc_impair, _ = help_of("impair")
    rc_join, join_help = help_of("join")
    if rc_join != 0:
        raise SystemExit(f"compare: {binary} join --help failed: {join_help.strip()[:300]}")
    return {"impair": rc_impair == 0, "media_via": "--media-via" in join_help,
            "clock_log": "--clock-log" in join_help}


# ---------------------------------------------------------------------------------------------
# One session: one row, one seed, one signal


def relay_args(row, seed):
    args = ["--direction", "down", "--loss", f"{row['loss']:g}", "--jitter-ms", str(row["jitter_ms"]),
            "--seed", str(seed)]
    if row["burst"]:
        args += ["--burst", f"{row['burst']:g}"]
    return args


async def run_session(ctx, row, seed, kind, index):
    """Runs one call and returns {"ours": score, "ntgcalls": score, ...}."""
    a = ctx.args
    tag = f"{row['id']}-s{seed}-{kind}"
    work = os.path.join(ctx.out, tag)
    os.makedirs(work, exist_ok=True)
    signal_path = os.path.join(ctx.out, f"{kind}.wav")
    sent = ctx.signals[kind]
    clock = ctx.features["clock_log"]
    chat_id = NTG_CHAT_BASE - index
    result = {"row": row["id"], "label": row["label"], "seed": seed, "signal": kind, "notes": [], "timing_s": {}}
    t0 = time.monotonic()

    def phase(name):
        """Seconds since the session started, by phase (in the JSON; a slow session says where)."""
        result["timing_s"][name] = round(time.monotonic() - t0, 2)

    procs = []
    call_id = None
    try:
        status, call = await ctx.api.call("POST", "/calls", {"peer": PEER_CREATOR, "title": f"compare {tag}"})
        if status != 200 or "id" not in call:
            raise RuntimeError(f"POST /calls: HTTP {status}: {call}")
        call_id = call["id"]

        relay = None
        if not a.no_relay:
            rp = Proc("relay", [ctx.bin, "impair", "--to", f"127.0.0.1:{a.media_port}", "--listen", "127.0.0.1:0",
                                *relay_args(row, seed)], os.path.join(work, "relay.log"))
            procs.append(rp)
            await rp.start()
            m = await rp.wait_line(r"impair: listening on ([0-9.]+):(\d+)", RELAY_READY_LIMIT)
            if not m:
                raise RuntimeError(f"the relay did not say it was listening: {rp.tail()}")
            relay = (m.group(1), int(m.group(2)))
            phase("relay_ready")

        # Listener 1: ours.
        ours_wav = os.path.join(work, "ours.wav")
        ours_clock = os.path.join(work, "ours.jsonl")
        argv = [ctx.bin, "join", str(call_id), "--local", a.control, "--as", str(PEER_OURS), "--muted",
                "--record", ours_wav, "--quiet", "--duration", str(int(CONNECT_LIMIT + PLAY_LIMIT + 10))]
        if relay:
            argv += ["--media-via", f"{relay[0]}:{relay[1]}"]
        if clock:
            argv += ["--clock-log", ours_clock]
        ours = Proc("ours", argv, os.path.join(work, "ours.log"))
        procs.append(ours)
        await ours.start()

        # Listener 2: ntgcalls.
        ntg_ssrc, params = await asyncio.wait_for(ctx.ntg.join(ctx.api, call_id, chat_id, relay), CONNECT_LIMIT)
        with open(os.path.join(work, "ntgcalls-answer.json"), "w") as f:
            f.write(params + "\n")
        phase("ntgcalls_joined")

        if not await ours.wait_line(r"call: connected", CONNECT_LIMIT):
            raise RuntimeError(f"ours did not connect within {CONNECT_LIMIT:.0f} s: {ours.tail()}")
        deadline = time.monotonic() + CONNECT_LIMIT
        while chat_id not in ctx.ntg.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if chat_id not in ctx.ntg.connected:
            raise RuntimeError(f"ntgcalls did not connect within {CONNECT_LIMIT:.0f} s: "
                               f"states {ctx.ntg.states.get(chat_id)}")
        phase("listeners_connected")

        # The sender, straight to the server.
        sender_clock = os.path.join(work, "sender.jsonl")
        argv = [ctx.bin, "join", str(call_id), "--local", a.control, "--as", str(PEER_SENDER), "--play", signal_path,
                "--quiet", "--duration", str(int(PLAY_LIMIT + 5))]
        if clock:
            argv += ["--clock-log", sender_clock]
        sender = Proc("sender", argv, os.path.join(work, "sender.log"))
        procs.append(sender)
        await sender.start()
        m = await sender.wait_line(r"joined \S+ with SSRC (\d+)", CONNECT_LIMIT)
        sender_ssrc = int(m.group(1)) if m else None
        phase("sender_started")
        if not await sender.wait_line(r"finished playing", PLAY_LIMIT):
            raise RuntimeError(f"the sender did not finish playing within {PLAY_LIMIT:.0f} s: {sender.tail()}")
        phase("sender_finished")
        # Let the receivers' jitter buffers drain (the signal ends with 0.5 s of silence too).
        await asyncio.sleep(0.5 + 2 * row["jitter_ms"] / 1000)
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        # Listeners first (their records end here), then the sender (it has left by itself at
        # the end of its file, normally), then the relay (it prints its stats on SIGTERM). Ours
        # before ntgcalls: ntgcalls leaving is an event for ours, and a SIGINT that lands while
        # `groupcall join` handles an event can be missed.
        by_name = {p.name: p for p in procs}
        for name in ("ours", "sender"):
            if name not in by_name:
                continue
            how = await by_name[name].stop(signal.SIGINT)
            if how == "signalled twice":
                result["notes"].append(f"{name} missed a SIGINT and left on the second one")
            elif how == "killed":
                result["notes"].append(f"{name} did not leave within {STOP_LIMIT:.0f} s of SIGINT and was "
                                       "killed (its WAV header and clock log are then missing)")
            if name == "ours":
                await ctx.ntg.stop(chat_id)
        if "ours" not in by_name:
            await ctx.ntg.stop(chat_id)
        if "relay" in by_name:
            await by_name["relay"].stop(signal.SIGTERM)
            stats = [ln for ln in by_name["relay"].lines if not ln.startswith("impair: listening")]
            result["relay_stats"] = stats[-1] if stats else None
        phase("stopped")
        if call_id is not None:
            await ctx.api.call("POST", f"/calls/{call_id}/discard", {"peer": PEER_CREATOR})
        phase("discarded")
    if "error" in result:
        return result

    sender_times = read_clock_log(sender_clock) if clock else {}
    sent_onset_wall = sender_times["source_start"] + LEAD_S if "source_start" in sender_times else None

    # Ours.
    try:
        rec, rate, channels = read_wav(ours_wav)
        if rate != FS:
            raise ValueError(f"{ours_wav}: {rate} Hz, expected {FS}")
        s = score(kind, sent, rec)
        s["channels"] = channels
        times = read_clock_log(ours_clock) if clock else {}
        if "lag_samples" in s:
            if sent_onset_wall is not None and "record_start" in times:
                s["latency_ms"] = 1000 * (times["record_start"] + (sent_onset() + s["lag_samples"]) / FS - sent_onset_wall)
            else:
                s["latency_ms"] = None
                result["notes"].append("ours: no latency (no --clock-log source_start/record_start)")
    except (OSError, ValueError) as e:
        s = {"error": f"ours' record: {e}"}
    result["ours"] = s
    phase("ours_scored")

    # ntgcalls.
    rec, marks, info = ctx.ntg.record(chat_id, sender_ssrc)
    s = score(kind, sent, rec) if len(rec) else {"error": "ntgcalls handed over no frames from the sender"}
    s.update(info)
    if "lag_samples" in s:
        wall = wall_of_sample(marks, sent_onset() + s["lag_samples"])
        if sent_onset_wall is not None and wall is not None:
            s["latency_ms"] = 1000 * (wall - sent_onset_wall)
        else:
            s["latency_ms"] = None
            result["notes"].append("ntgcalls: no latency (no sender --clock-log source_start)")
    result["ntgcalls"] = s
    phase("ntgcalls_scored")
    np.save(os.path.join(work, "ntgcalls.npy"), rec.astype(np.float32))
    return result


# ---------------------------------------------------------------------------------------------
# Report


def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def cell(kind, s):
    if s is None:
        return "n/a"
    if "error" in s:
        return "error"
    if kind == "tone":
        return f"{fmt(s['good_pct'], 1)} / {s['longest_bad_ms']} / {fmt(s.get('latency_ms'), 0)}"
    return f"{fmt(s['lsd_mean'], 2)} / {fmt(s['lsd_p95'], 2)} / {fmt(s.get('latency_ms'), 0)}"


def print_tables(results):
    for kind, head in (("tone", "good % / longest bad ms / latency ms"),
                       ("speech", "LSD mean dB / p95 dB / latency ms")):
        rows = [r for r in results if r["signal"] == kind]
        if not rows:
            continue
        print(f"\n{kind}:")
        print(f"| impairment | seed | ours: {head} | ntgcalls: {head} |")
        print("|---|---|---|---|")
        for r in rows:
            if "error" in r:
                print(f"| {r['label']} | {r['seed']} | session failed: {r['error']} | |")
                continue
            print(f"| {r['label']} | {r['seed']} | {cell(kind, r.get('ours'))} | {cell(kind, r.get('ntgcalls'))} |")
    errors = [(r, e, r[e]["error"]) for r in results for e in ("ours", "ntgcalls")
              if isinstance(r.get(e), dict) and "error" in r[e]]
    for r, e, msg in errors:
        print(f"{r['row']} seed {r['seed']} {r['signal']}: {e}: {msg}")
    where = {}  # note -> the sessions it applies to
    for r in results:
        for n in r.get("notes", []):
            where.setdefault(n, []).append(f"{r['row']}/seed {r['seed']}/{r['signal']}")
    for n, sessions in where.items():
        print(f"note: {n} ({', '.join(sessions)})")


def run_checks(results):
    """--check: a list of (ok, message)."""
    out = []
    for r in results:
        where = f"{r['label']} seed {r['seed']} {r['signal']}"
        if "error" in r:
            out.append((False, f"{where}: the session failed: {r['error']}"))
            continue
        ours, ntg = r.get("ours", {}), r.get("ntgcalls", {})
        for name, s in (("ours", ours), ("ntgcalls", ntg)):
            if "error" in s:
                out.append((False, f"{where}: {name}: {s['error']}"))
        if r["signal"] == "tone" and "error" not in ours and "error" not in ntg:
            out.append((ours["good_pct"] >= ntg["good_pct"] - CHECK_MARGIN_PCT,
                        f"{where}: ours' good blocks {ours['good_pct']:.1f} % >= ntgcalls' "
                        f"{ntg['good_pct']:.1f} % - {CHECK_MARGIN_PCT:.0f}"))
        if r["signal"] == "tone" and r["row"] == "10" and "error" not in ours:
            out.append((ours["good_pct"] >= CHECK_ROW_10_GOOD and ours["longest_bad_ms"] <= CHECK_ROW_10_BAD_MS,
                        f"{where}: ours {ours['good_pct']:.1f} % >= {CHECK_ROW_10_GOOD} % with no bad run over "
                        f"{CHECK_ROW_10_BAD_MS} ms (longest {ours['longest_bad_ms']} ms)"))
        if r["row"] == "none" and "error" not in ours:
            lat = ours.get("latency_ms")
            out.append((lat is not None and lat <= CHECK_CLEAN_LATENCY_MS,
                        f"{where}: ours' clean-path latency {fmt(lat, 0)} ms <= {CHECK_CLEAN_LATENCY_MS:.0f} ms"
                        + ("" if lat is not None else " (not measurable: no --clock-log)")))
    return out


# ---------------------------------------------------------------------------------------------
# Main


class Ctx:
    pass


async def main_async(args, rows, seeds, kinds, ctx):
    ctx.api = Api(args.control, timeout=HTTP_TIMEOUT)
    ctx.ntg = NtgListener()
    results = []
    index = 0
    for row in rows:
        for seed in seeds:
            for kind in kinds:
                index += 1
                t0 = time.monotonic()
                print(f"compare: {row['label']}, seed {seed}, {kind} ...", flush=True)
                try:
                    r = await run_session(ctx, row, seed, kind, index)
                except Exception as e:  # a bug here must not lose the other rows
                    traceback.print_exc()
                    r = {"row": row["id"], "label": row["label"], "seed": seed, "signal": kind,
                         "error": f"{type(e).__name__}: {e}", "notes": []}
                r["seconds"] = round(time.monotonic() - t0, 1)
                print(f"compare:   {cell(kind, r.get('ours'))} (ours) | {cell(kind, r.get('ntgcalls'))} (ntgcalls)"
                      + (f" | error: {r['error']}" if "error" in r else "")
                      + (f" | relay: {r['relay_stats']}" if r.get("relay_stats") else "")
                      + f" | {r['seconds']} s"
                      + (f" (slow: {r.get('timing_s')})" if r["seconds"] > 20 else ""), flush=True)
                results.append(r)
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--control", help="control API base URL, http://127.0.0.1:PORT")
    p.add_argument("--media-port", type=int, help="the server's media UDP port (the relay forwards to it)")
    p.add_argument("--bin", default=os.environ.get("GROUPCALL_BIN") or shutil.which("groupcall"),
                   help="the groupcall binary (default: $GROUPCALL_BIN, then PATH)")
    p.add_argument("--rows", default=",".join(r["id"] for r in ROWS),
                   help="rows to run: " + ", ".join(f"{r['id']} ({r['label']})" for r in ROWS).replace("%", "%%"))
    p.add_argument("--seeds", default="1", help="relay seeds, comma-separated")
    p.add_argument("--signal", choices=("tone", "speech", "both"), default="both")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--check", action="store_true", help="exit non-zero unless ours holds up (see the thresholds)")
    p.add_argument("--no-relay", action="store_true",
                   help="listeners join the server directly; only the 'none' row (for a groupcall without impair)")
    p.add_argument("--out", help="keep the records and logs in this directory (default: a temporary one, removed)")
    p.add_argument("--self-test", action="store_true", help="test the scoring on synthetic records and exit")
    args = p.parse_args()

    if args.self_test:
        sys.exit(1 if self_test() else 0)

    if not args.control:
        p.error("--control is required")
    if not args.bin:
        p.error("no groupcall binary: --bin or GROUPCALL_BIN")
    by_id = {r["id"]: r for r in ROWS}
    wanted = [x.strip() for x in args.rows.split(",") if x.strip()]
    unknown = [x for x in wanted if x not in by_id]
    if unknown:
        p.error(f"unknown rows {unknown}; known: {list(by_id)}")
    rows = [by_id[x] for x in wanted]
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        p.error("--seeds takes whole numbers, comma-separated")
    kinds = ["tone", "speech"] if args.signal == "both" else [args.signal]

    ctx = Ctx()
    ctx.args = args
    ctx.bin = args.bin
    ctx.features = probe_features(args.bin)
    if args.no_relay:
        skipped = [r["id"] for r in rows if r["id"] != "none"]
        if skipped:
            print(f"compare: --no-relay: rows {skipped} need the relay; only 'none' runs, on the direct path")
        rows = [by_id["none"]]
    else:
        missing = [w for w, ok in (("`groupcall impair`", ctx.features["impair"]),
                                   ("`join --media-via`", ctx.features["media_via"])) if not ok]
        if missing:
            sys.exit(f"compare: {args.bin} has no {' and no '.join(missing)}; --no-relay runs the clean "
                     "direct path only")
        if args.media_port is None:
            p.error("--media-port is required for the relay")
    if not ctx.features["clock_log"]:
        print(f"compare: {args.bin} has no `join --clock-log`: no latency for either engine", flush=True)

    import ntgcalls  # here, so that --self-test and --help work without it

    print(f"compare: groupcall {args.bin} ({', '.join(k for k, v in ctx.features.items() if v) or 'no new options'}), "
          f"ntgcalls {getattr(ntgcalls, '__version__', '?')}, server {args.control}, "
          f"{'direct path' if args.no_relay else 'relay on the downlink'}", flush=True)

    tmp = None
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        ctx.out = args.out
    else:
        tmp = tempfile.mkdtemp(prefix="groupcall-compare-receive-")
        ctx.out = tmp
    ctx.signals = {}
    for kind in kinds:
        ctx.signals[kind] = make_tone() if kind == "tone" else make_speech()
        write_wav(os.path.join(ctx.out, f"{kind}.wav"), ctx.signals[kind])
        # What is scored is the 16-bit file the sender plays, not the float signal.
        ctx.signals[kind] = read_wav(os.path.join(ctx.out, f"{kind}.wav"))[0]

    results = []
    try:
        results = asyncio.run(main_async(args, rows, seeds, kinds, ctx))
    except KeyboardInterrupt:
        print("compare: interrupted", flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print_tables(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": results, "features": ctx.features,
                       "ntgcalls": getattr(ntgcalls, "__version__", None)}, f, indent=1)
    failed = 0
    if args.check:
        checks = run_checks(results)
        print()
        for ok, msg in checks:
            print(("ok    " if ok else "FAIL  ") + msg)
        failed = sum(1 for ok, _ in checks if not ok)
    n_rows = len({(r["row"], r["seed"]) for r in results})
    print(f"compare: {n_rows} rows, {failed} checks failed", flush=True)
    sys.stdout.flush()
    # ntgcalls' native threads can keep the interpreter from exiting: leave at once.
    os._exit(1 if failed else 0)


if __name__ == "__main__":
    main()
