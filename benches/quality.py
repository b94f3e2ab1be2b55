#!/usr/bin/env python3
"""Audio quality end to end, groupcall's encoder presets side by side with ntgcalls 3.0.5
(libwebrtc): how much of a clip survives sender, local server and listener on a clean loopback
network.

Two clips, each laid out as tests/interop/compare_receive.py lays out its signals (1.0 s of
silence, 10 s of signal, 0.5 s of silence, 48 kHz):
  speech  compare_receive.make_speech(): voiced syllables with moving formants, unvoiced noise,
          pauses; mono, energy up to about 6 kHz
  music   make_music() below: stereo, 120 bpm, a chord per bar (bright harmonic tones up to
          20 kHz, spread across the stereo field), an eighth-note melody on the right, kick and
          snare in the centre, hi-hats on the left and a crash cymbal on the first beat; it
          exercises what speech does not: the band above 8 kHz, sharp transients, deep bass
          and a stereo image. Stereo because the music preset sends stereo; the voice preset
          and ntgcalls get the same file and send what they make of it (the voice preset
          downmixes it). The main scores are on the downmix, (L+R)/2, so that mono and stereo
          paths are compared on the same thing; L/R SNR says what the stereo image adds

Sessions, one call each, one after another, on one `groupcall serve` (benches/quality.sh
starts it):
  groupcall sender   groupcall join CALL --play CLIP.wav --preset voice|lean|music, through a
                     counting relay (below); heard by both listeners
  ntgcalls sender    one NTgCalls participant whose FILE source plays the clip as raw s16le
                     (channels as the clip; otherwise ntgcalls' own defaults: its Opus settings,
                     its audio processing), through the same relay; heard by both listeners
  listeners          groupcall join CALL --muted --stereo --record-dir DIR (one WAV per
                     speaker; --stereo so that a stereo stream is kept as such), and an
                     NTgCalls participant in PLAYBACK mode with a 2-channel EXTERNAL sink (as
                     compare_receive.py's NtgListener, in stereo). Both are connected before the
                     sender starts.
Rows: sender/preset -> listener; ntgcalls -> ntgcalls is printed as the reference libwebrtc
sets for itself.

Scores per record (the reference is the 16-bit file the sender played):
  alignment  compare_receive.align() on the mono downmix (onset detection refined by
             cross-correlation of the first 200 ms), then the lag within +-10 ms of it that
             correlates best over the whole 10 s: one lag per record, as a clean path keeps its
             delay. Shorter windows were tried and rejected: on the music clip a window's best
             lag jumps by a beat's period, or follows the phase of a high-pass filter, which
             flatters the SNR. `lag_drift_ms` is the best lag of the last 3 s minus that of
             the first 3 s: a listener that time-stretched shows there (and its SNR suffers)
  gain       one least-squares gain for the whole record (the received level is not the point)
  LSD        log-spectral distance in dB per non-silent 20 ms block of the downmix, Hann
             window, 0-20 kHz, both spectra floored 50 dB below the clean block's strongest
             bin (compare_receive.py's floor, its band widened from 8 to 20 kHz); the mean over
             the blocks (p95 in the JSON). Lower is better; closer to what the ear notices
             than the SNR: a band cut off, smeared transients, noise between harmonics
  SNR        10 log10(clean energy / error energy) of the downmix over the 10 s of signal.
             Higher is better. Opus is a perceptual codec and keeps band energies rather
             than the waveform, so at 32 kbit/s this is low (about 11 dB on speech) and it
             also counts inaudible phase changes: on the music clip it is near 0 dB at low
             rates, mostly because the kick drum's bass comes out attenuated and phase-shifted
             (libopus' VOIP mode filters the low end). It does show what a higher rate buys
  L/R SNR    music only: the same on both channels against the stereo clip (a mono record
             counts as the same sound on both sides; a mono record of this clip scores about
             10 dB): what the stereo image adds. `side_db` in the JSON is the record's L-R
             energy against its L+R (-100 for mono; the clip's is -10 dB)
  kbit/s     the Opus payload a sender sent while the clip played: the relay between the
             sender and the server counts each RTP packet of the sender's SSRC, minus the RTP
             header and the 16-byte SRTP tag (quality.sh makes the server offer
             AEAD_AES_128_GCM alone, so the tag length is known), from its first to its last
             packet of over 20 bytes (the silence around the clip is a few bytes a packet);
             `frame_ms` in the JSON is the sender's packet duration
The JSON also has, per record, `lsd_p95_db`, the least-squares `gain` applied, and
`bandwidth_khz`: the top of the highest 500 Hz band whose received energy is within 10 dB of
the clip's (among bands where the clip has energy above the LSD floor).

Usage (benches/quality.sh starts the server and passes --control/--media-port/--bin):
  quality.py --control URL --media-port PORT --bin GROUPCALL [--clips speech,music]
             [--complexity N] [--json FILE] [--out DIR]
  quality.py --self-test        (the scoring on synthetic records; no server, no ntgcalls)
The last line printed is one JSON object with every figure.
"""

import argparse
import asyncio
import glob
import json
import os
import re
import selectors
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

try:
    import numpy as np
except ImportError:
    sys.exit("quality: numpy is missing; benches/quality.sh sets up .venv-interop with it and "
             "ntgcalls, or: pip install numpy ntgcalls==3.0.5")

# The signals, the WAV reader/writer, the alignment, the control API client and the subprocess
# wrapper are compare_receive.py's: one definition of each across the receive comparison and this.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "interop"))
import compare_receive as cr  # noqa: E402

FS = cr.FS
BLOCK = cr.BLOCK  # 20 ms
LEAD_S, SIGNAL_S, TAIL_S = cr.LEAD_S, cr.SIGNAL_S, cr.TAIL_S
MUSIC_SEED = 1

# Scoring.
SEARCH_MS = 10  # the lag refined within +- this of the onset alignment
DRIFT_WINDOW_S = 3.0  # the lag of the first and of the last 3 s, to see whether it moved
DRIFT_NOTE_MS = 0.5
MONO_SIDE_DB = -40.0  # a stereo record whose L-R is this far below L+R is mono in effect
LSD_FFT = 1024
LSD_MAX_HZ = 20000.0
LSD_FLOOR_DB = cr.LSD_FLOOR_DB
SILENT_DB = cr.SILENT_DB
BAND_DROP_DB = 10.0  # bandwidth: the highest 500 Hz band received within this of the clean one

# Bitrate.
SRTP_TAG = 16  # AEAD_AES_128_GCM, the only profile quality.sh lets the server offer
ACTIVE_BYTES = 20

# Sessions.
CONNECT_LIMIT = 10.0
PLAY_LIMIT = LEAD_S + SIGNAL_S + TAIL_S + 8.0
DRAIN_S = 0.8  # after the sender finished: the listeners' buffers play out (the clip ends in silence)
NTG_EXTRA_LEAD_S = 1.0  # more silence before the clip in ntgcalls' file: its FILE source starts
#                         reading when the sources are set, before the connection is up
PEER_CREATOR, PEER_SENDER, PEER_GC_LISTENER, PEER_NTG_LISTENER = 1, 1001, 2002, 2003
NTG_CHAT_BASE = -1001234600000  # ntgcalls' key per call; never reaches Telegram


# ---------------------------------------------------------------------------------------------
# The music clip and multichannel WAV files


def _note_hz(midi):
    return 440.0 * 2.0 ** ((midi - 69) / 12.0)


def _wavetable(harmonics, size=4096):
    """One period of a band-limited waveform: harmonic k (1-based) with amplitude harmonics[k-1]
    and a fixed pseudo-random phase, normalised to peak 1."""
    spec = np.zeros(size // 2 + 1, dtype=complex)
    phases = np.random.default_rng(len(harmonics)).uniform(0, 2 * np.pi, len(harmonics))
    spec[1 : len(harmonics) + 1] = np.asarray(harmonics) * np.exp(1j * phases)
    table = np.fft.irfft(spec, size)
    return table / np.max(np.abs(table))


def _oscillator(table, freq):
    """Reads a wavetable at the instantaneous frequency freq (an array, Hz), linear
    interpolation; the table holds only harmonics below 20 kHz for the note, so no aliasing
    worth the name."""
    phase = np.cumsum(freq) / FS
    pos = (phase % 1.0) * len(table)
    i = pos.astype(np.int64)
    frac = pos - i
    return table[i] * (1 - frac) + table[(i + 1) % len(table)] * frac


def _adsr(n, attack, decay, sustain, release):
    """An envelope over n samples, times in seconds."""
    t = np.arange(n) / FS
    env = np.where(t < attack, t / max(attack, 1e-6),
                   sustain + (1 - sustain) * np.exp(-(t - attack) / max(decay, 1e-6)))
    rel = int(release * FS)
    if 0 < rel < n:
        env[-rel:] *= np.linspace(1.0, 0.0, rel)
    return env


def _filtered_noise(rng, n, lo, hi):
    """White noise band-passed to lo..hi Hz (a brick wall in the frequency domain)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / FS)
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _place(out, pan, start, x):
    """Adds mono x to the stereo out at sample start, constant-power panned (-1 left .. 1 right)."""
    a = (pan + 1) * np.pi / 4
    end = min(start + len(x), len(out))
    out[start:end, 0] += np.cos(a) * x[: end - start]
    out[start:end, 1] += np.sin(a) * x[: end - start]


def make_music(seed=MUSIC_SEED):
    """1.0 s silence, 10 s of a deterministic music-like stereo signal, 0.5 s silence; an
    array [samples, 2], peak -3 dBFS.

    120 bpm, five bars of 4/4 (C, Am, F, G, C): each bar a chord of four notes of a bright
    tone (every harmonic below 20 kHz at 1/k^1.1, two voices 0.15 % apart, so it beats), spread
    from left to centre; an eighth-note melody of a hollow tone (odd harmonics, vibrato) on the
    right, on the chord's notes and a pentatonic scale, with some rests; a kick (a sine falling
    from 150 to 45 Hz) on beats 1 and 3 and a snare (1-9 kHz noise and a 190 Hz body) on 2 and
    4, in the centre; closed hi-hats (7-20 kHz noise, 40 ms) on every eighth, left; a crash
    (3-20 kHz noise, 1.5 s) on the first beat. Everything starts exactly at 1.0 s: the kick,
    the chord and the crash make the onset the alignment looks for."""
    rng = np.random.default_rng(seed)
    n = int(SIGNAL_S * FS)
    beat = int(0.5 * FS)
    bar = 4 * beat
    y = np.zeros((n, 2))

    chords = [[48, 52, 55, 60], [45, 48, 52, 57], [41, 45, 48, 53], [43, 47, 50, 55], [48, 52, 55, 60]]
    pans = [-0.8, -0.5, -0.2, 0.1]
    for b, chord in enumerate(chords):
        start = b * bar
        m = min(bar, n - start)
        env = _adsr(m, 0.008, 0.35, 0.55, 0.08)
        for note, pan in zip(chord, pans):
            f = _note_hz(note)
            k = np.arange(1, int(20000 / f) + 1)
            table = _wavetable(1.0 / k**1.1)
            tone = sum(_oscillator(table, np.full(m, f * d)) for d in (1.0, 1.0015))
            _place(y, pan, start, 0.09 * tone * env)

    scale = [60, 62, 64, 67, 69, 72, 74, 76]  # C major pentatonic around C5
    eighth = beat // 2
    idx = 3
    for i in range(n // eighth):
        if i > 0 and rng.random() < 0.15:
            continue  # a rest
        idx = int(np.clip(idx + rng.integers(-2, 3), 0, len(scale) - 1))
        f = _note_hz(scale[idx])
        m = min(eighth, n - i * eighth)
        t = np.arange(m) / FS
        freq = f * (1 + 0.004 * np.sin(2 * np.pi * 5.5 * t))
        k = np.arange(1, int(20000 / f) + 1)
        table = _wavetable(np.where(k % 2 == 1, 1.0 / k, 0.0))
        _place(y, 0.6, i * eighth, 0.22 * _oscillator(table, freq) * _adsr(m, 0.004, 0.12, 0.4, 0.02))

    for i in range(n // beat):
        at = i * beat
        if i % 2 == 0:  # kick
            m = int(0.25 * FS)
            t = np.arange(m) / FS
            freq = 45 + 105 * np.exp(-t / 0.03)
            kick = np.sin(2 * np.pi * np.cumsum(freq) / FS) * np.exp(-t / 0.12)
            _place(y, 0.0, at, 0.55 * kick)
        else:  # snare
            m = int(0.2 * FS)
            t = np.arange(m) / FS
            body = np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.05)
            snare = 0.6 * _filtered_noise(rng, m, 1000, 9000) * np.exp(-t / 0.07) + 0.5 * body
            _place(y, 0.05, at, 0.3 * snare)
    for i in range(n // eighth):
        m = int(0.04 * FS)
        t = np.arange(m) / FS
        hat = _filtered_noise(rng, m, 7000, 20000) * np.exp(-t / 0.012)
        _place(y, -0.4, i * eighth, (0.09 if i % 2 else 0.06) * hat)
    m = int(1.5 * FS)
    t = np.arange(m) / FS
    _place(y, -0.1, 0, 0.12 * _filtered_noise(rng, m, 3000, 20000) * np.exp(-t / 0.4))

    y *= 0.7 / np.max(np.abs(y))
    x = np.zeros((int((LEAD_S + SIGNAL_S + TAIL_S) * FS), 2))
    x[int(LEAD_S * FS) : int(LEAD_S * FS) + n] = y
    return x


def pcm16(x):
    """Float samples (full scale 1.0; [samples] or [samples, channels]) as interleaved s16le."""
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()


def write_wav(path, x):
    """A 48 kHz s16 WAV of x, [samples] or [samples, channels]."""
    ch = 1 if x.ndim == 1 else x.shape[1]
    data = pcm16(x)
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, ch, FS, FS * 2 * ch, 2 * ch, 16)
    header += b"data" + struct.pack("<I", len(data))
    with open(path, "wb") as f:
        f.write(header + data)


def read_wav(path):
    """A 16-bit PCM WAV as (frames, channels) floats and its rate: compare_receive's reader,
    which this keeps the channels of (its read_wav averages them)."""
    return cr.read_wav_channels(path)


def as_2d(x):
    return x[:, None] if x.ndim == 1 else x


# ---------------------------------------------------------------------------------------------
# Scoring


def _xcorr_valid(seg, ref):
    """c[j] = sum_i ref[i] * seg[i + j] for j = 0 .. len(seg) - len(ref), by FFT."""
    nfft = 1 << int(np.ceil(np.log2(len(seg) + len(ref))))
    c = np.fft.irfft(np.fft.rfft(seg, nfft) * np.conj(np.fft.rfft(ref, nfft)), nfft)
    return c[: len(seg) - len(ref) + 1]


def refine(ref, rec, lag, start, length):
    """The lag within +-SEARCH_MS of `lag` at which rec best matches ref[start:start+length]
    (mono arrays): the maximum of the normalised cross-correlation."""
    s = SEARCH_MS * FS // 1000
    r = ref[start : start + length]
    seg = cr.segment(rec, start + lag - s, len(r) + 2 * s)
    c = np.concatenate([[0.0], np.cumsum(seg**2)])
    energy = c[len(r) :] - c[: len(c) - len(r)]  # sliding sum of seg^2 over len(r)
    return lag - s + int(np.argmax(_xcorr_valid(seg, r) / np.sqrt(np.maximum(energy, 1e-12))))


def aligned(rec, lag):
    """The received samples matching the signal span, [samples, channels]."""
    s0, n = cr.sent_onset(), int(SIGNAL_S * FS)
    return np.stack([cr.segment(rec[:, c], s0 + lag, n) for c in range(rec.shape[1])], axis=1)


def _spectra(blocks):
    w = np.hanning(BLOCK)
    p = np.abs(np.fft.rfft(blocks * w, n=LSD_FFT, axis=-1)) ** 2
    return p[:, 1 : int(LSD_MAX_HZ * LSD_FFT / FS) + 1]  # DC left out


def lsd(clean, got):
    """Log-spectral distance (dB) per non-silent 20 ms block of the mono signal span, 0-20 kHz;
    both spectra floored LSD_FLOOR_DB below the clean block's strongest bin. Returns the
    per-block distances and the clean and received mean spectra of those blocks."""
    nb = len(clean) // BLOCK
    level = np.sqrt(np.mean(clean[np.abs(clean) > 1e-6] ** 2))
    cb, gb = clean[: nb * BLOCK].reshape(nb, BLOCK), got[: nb * BLOCK].reshape(nb, BLOCK)
    keep = np.sqrt(np.mean(cb**2, axis=1)) >= level * 10 ** (-SILENT_DB / 20)
    pc, pg = _spectra(cb[keep]), _spectra(gb[keep])
    floor = pc.max(axis=1, keepdims=True) * 10 ** (-LSD_FLOOR_DB / 10)
    d = 10 * np.log10(np.maximum(pc, floor) / np.maximum(pg, floor))
    return np.sqrt(np.mean(d**2, axis=1)), pc.mean(axis=0), pg.mean(axis=0)


def bandwidth_khz(pc, pg):
    """The top of the highest 500 Hz band in which the received mean power is within
    BAND_DROP_DB of the clean one, among bands that hold clean energy above the floor."""
    bins = int(500 * LSD_FFT / FS)
    top = None
    ref_floor = pc.max() * 10 ** (-LSD_FLOOR_DB / 10)
    for i in range(0, len(pc) - bins + 1, bins):
        c, g = pc[i : i + bins].sum(), pg[i : i + bins].sum()
        if c / bins > ref_floor and g >= c * 10 ** (-BAND_DROP_DB / 10):
            top = (i + bins) * FS / LSD_FFT / 1000
    return None if top is None else round(top, 1)


def side_db(x):
    """Side (L-R) energy against mid (L+R) energy of a stereo signal, dB (-100 for mono)."""
    mid, side = x[:, 0] + x[:, 1], x[:, 0] - x[:, 1]
    return float(10 * np.log10(max(np.sum(side**2) / max(np.sum(mid**2), 1e-20), 1e-10)))


def snr_db(clean, got):
    err = np.sum((clean - got) ** 2)
    return float(10 * np.log10(np.sum(clean**2) / max(err, 1e-20)))


def score(ref, rec):
    """Scores a record against the reference, both [samples, channels] (any channel counts).
    Returns a dict; "error" says why there is no score."""
    ref, rec = as_2d(ref), as_2d(rec)
    rm, ym = ref.mean(axis=1), rec.mean(axis=1)
    lag = cr.align(rm, ym)
    if lag is None:
        return {"error": "no onset found in the record (nothing heard?)"}
    s0, n, edge = cr.sent_onset(), int(SIGNAL_S * FS), int(DRIFT_WINDOW_S * FS)
    lag = refine(rm, ym, lag, s0, n)
    drift = refine(rm, ym, lag, s0 + n - edge, edge) - refine(rm, ym, lag, s0, edge)
    got = aligned(rec, lag)
    clean = ref[s0 : s0 + n]
    cm, gm = clean.mean(axis=1), got.mean(axis=1)
    gain = float(np.dot(cm, gm) / max(np.dot(gm, gm), 1e-20))
    d, pc, pg = lsd(cm, gain * gm)
    out = {
        "lsd_db": float(d.mean()),
        "lsd_p95_db": float(np.percentile(d, 95)),
        "snr_db": snr_db(cm, gain * gm),
        "gain": gain,
        "bandwidth_khz": bandwidth_khz(pc, pg),
        "lag_drift_ms": drift * 1000 / FS,
        "channels": int(rec.shape[1]),
        "blocks": int(len(d)),
    }
    if ref.shape[1] == 2:
        both = got if got.shape[1] == 2 else np.repeat(got, 2, axis=1)
        out["lr_snr_db"] = snr_db(clean.ravel(), gain * both.ravel())
        out["side_db"] = side_db(both)
    return out


# ---------------------------------------------------------------------------------------------
# Self-test of the scoring on synthetic records


def self_test():
    """Scores synthetic records and checks that the scores move as they should; returns the
    number of failures."""
    rng = np.random.default_rng(3)
    failed = 0

    def check(ok, what):
        nonlocal failed
        print(("ok    " if ok else "FAIL  ") + what, flush=True)
        failed += 0 if ok else 1

    def received(x, delay_s=0.4137, noise_db=-70.0, gain=0.8):
        x = as_2d(x)
        d = int(delay_s * FS)
        r = np.concatenate([np.zeros((d, x.shape[1])), gain * x, np.zeros((FS // 2, x.shape[1]))])
        return r + 10 ** (noise_db / 20) * rng.standard_normal(r.shape)

    def lowpass(x, hz):
        spec = np.fft.rfft(x, axis=0)
        spec[np.fft.rfftfreq(len(x), 1 / FS) > hz] = 0
        return np.fft.irfft(spec, len(x), axis=0)

    for name, ref in (("speech", cr.make_speech()), ("music", make_music())):
        ref = as_2d(ref)
        clean = score(ref, received(ref))
        print(f"      {name} clean: {clean}")
        check(clean["lsd_db"] < 1.0 and clean["snr_db"] > 40, f"{name}: a clean copy scores LSD < 1 dB, SNR > 40 dB")
        check(abs(clean["gain"] - 1 / 0.8) < 0.01, f"{name}: the gain is matched ({clean['gain']:.3f})")
        check(clean["lag_drift_ms"] == 0, f"{name}: a clean copy has one lag ({clean['lag_drift_ms']} ms)")
        # (Not louder: compare_receive.align's onset detector expects a quiet lead-in, as a
        # decoder's output of silence is.)
        noisy = score(ref, received(ref, noise_db=-45.0))
        check(noisy["snr_db"] < clean["snr_db"] - 10 and noisy["lsd_db"] > clean["lsd_db"] + 0.5,
              f"{name}: noise at -45 dBFS lowers the SNR ({noisy['snr_db']:.1f} dB) and raises the LSD "
              f"({noisy['lsd_db']:.2f} dB)")
        # A receiver that grew its delay by 6.25 ms at 5.2 s (audio repeated): reported.
        r = received(ref)
        at, k = int((0.4137 + LEAD_S + 5.2) * FS), 300
        s = score(ref, np.concatenate([r[:at], r[at - k : at], r[at:]]))
        check(abs(s["lag_drift_ms"] - 6.25) < 0.1 and s["snr_db"] < 10,
              f"{name}: a 6.25 ms jump of the delay is reported (drift {s['lag_drift_ms']} ms) and costs "
              f"SNR ({s['snr_db']:.1f} dB)")
        d = int(0.4137 * FS)
        got = refine(ref.mean(axis=1), r.mean(axis=1), d + 37, cr.sent_onset(), int(SIGNAL_S * FS))
        check(got == d, f"{name}: the refinement corrects a lag 37 samples off ({got - d:+d})")
        cut = score(ref, received(lowpass(ref, 7000)))
        print(f"      {name} 7 kHz low-pass: LSD {cut['lsd_db']:.2f} dB, band {cut['bandwidth_khz']} kHz")
        check(cut["bandwidth_khz"] is not None and 6.5 <= cut["bandwidth_khz"] <= 7.5,
              f"{name}: a 7 kHz low-pass is a 7 kHz band ({cut['bandwidth_khz']} kHz)")
        if name == "music":
            check(cut["lsd_db"] > clean["lsd_db"] + 5,
                  f"music: cutting the band above 7 kHz shows in the LSD ({cut['lsd_db']:.2f} dB)")
            mono = score(ref, received(ref.mean(axis=1)))
            check(mono["snr_db"] > 40 and mono["lr_snr_db"] < clean["lr_snr_db"] - 20,
                  f"music: a mono record keeps the downmix SNR ({mono['snr_db']:.1f} dB) and loses the "
                  f"stereo one ({mono['lr_snr_db']:.1f} dB)")
        silent = score(ref, np.zeros((len(ref), 1)))
        check("error" in silent, f"{name}: a silent record has no score")
    print(f"self-test: {failed} failed", flush=True)
    return failed


# ---------------------------------------------------------------------------------------------
# The counting relay


def rtp_payload_bytes(datagram):
    """(SSRC, RTP timestamp, Opus payload bytes) of an SRTP packet, or None for anything else
    (STUN, DTLS, RTCP: RFC 7983's demultiplexing by the first byte, RFC 5761's by the second),
    or a padded packet (its padding length is encrypted)."""
    if len(datagram) < 12 or not 128 <= datagram[0] <= 191 or 192 <= datagram[1] <= 223:
        return None
    if datagram[0] & 0x20:
        return None
    header = 12 + 4 * (datagram[0] & 0x0F)
    if datagram[0] & 0x10:
        if len(datagram) < header + 4:
            return None
        header += 4 + 4 * struct.unpack(">H", datagram[header + 2 : header + 4])[0]
    if len(datagram) < header + SRTP_TAG:
        return None
    ts, ssrc = struct.unpack(">II", datagram[4:12])
    return ssrc, ts, len(datagram) - header - SRTP_TAG


class Meter:
    """A loopback UDP relay between senders and the server (its own thread, so that nothing the
    asyncio loop does can delay a packet) that keeps, per SSRC, every RTP packet's timestamp and
    payload size. Each client gets its own socket towards the server, as `groupcall impair`
    does, so the server's answers find their way back."""

    def __init__(self, server):
        self.server = server
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.front.setblocking(False)
        self.addr = self.front.getsockname()
        self.backs = {}
        self.packets = {}  # ssrc -> [(rtp timestamp, payload bytes)]
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = socket.socketpair()
        self.thread = threading.Thread(target=self._run, name="meter", daemon=True)
        self.thread.start()

    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.front, selectors.EVENT_READ, None)
        sel.register(self.wake_r, selectors.EVENT_READ, "stop")
        while True:
            for key, _ in sel.select(timeout=1.0):
                try:
                    if key.data == "stop":
                        sel.close()
                        return
                    if key.data is None:
                        data, client = self.front.recvfrom(65536)
                        back = self.backs.get(client)
                        if back is None:
                            back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                            back.bind(("127.0.0.1", 0))
                            back.connect(self.server)
                            back.setblocking(False)
                            self.backs[client] = back
                            sel.register(back, selectors.EVENT_READ, client)
                        back.send(data)
                        p = rtp_payload_bytes(data)
                        if p is not None:
                            with self.lock:
                                self.packets.setdefault(p[0], []).append(p[1:])
                    else:
                        self.front.sendto(key.fileobj.recv(65536), key.data)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    pass  # an ICMP error from a socket that is going away: the next datagram may pass
                except Exception:  # a bug in the counting must not stop the relaying
                    traceback.print_exc()

    def kbps(self, ssrc):
        """Opus payload kbit/s of one sender from its first to its last packet of over
        ACTIVE_BYTES bytes, by RTP timestamp; None without enough packets."""
        with self.lock:
            pkts = list(self.packets.get(ssrc, []))
        if len(pkts) < 10:
            return None
        # RTP timestamps wrap at 2^32.
        ts = np.unwrap(np.array([t for t, _ in pkts], dtype=np.float64), period=2.0**32).astype(np.int64)
        size = np.array([b for _, b in pkts])
        order = np.argsort(ts, kind="stable")
        ts, size = ts[order], size[order]
        active = np.flatnonzero(size > ACTIVE_BYTES)
        if len(active) < 10:
            return None
        a, z = active[0], active[-1]
        steps = np.diff(ts[a : z + 1])
        frame = int(np.median(steps[steps > 0])) if np.any(steps > 0) else 960
        seconds = (ts[z] - ts[a] + frame) / FS
        return float(size[a : z + 1].sum() * 8 / seconds / 1000), frame * 1000 // FS

    def close(self):
        self.wake_w.send(b"x")
        self.thread.join(2)
        for s in [self.front, self.wake_r, self.wake_w, *self.backs.values()]:
            s.close()


# ---------------------------------------------------------------------------------------------
# ntgcalls: listener and sender


class Ntg(cr.NtgListener):
    """compare_receive's NTgCalls holder (frames per chat, connection states), with a stereo
    listener and a FILE-source sender; each participant is a chat id of its own."""

    def __init__(self):
        super().__init__()
        self.ended = set()
        self.calls.on_stream_end(self._on_end)

    def _on_end(self, chat_id, kind, device):
        with self.lock:
            self.ended.add(chat_id)

    async def _join(self, api, call_id, chat_id, peer, mode, audio, via=None):
        """py-tgcalls' order: create_call, the sources, POST /join, connect (with the answer's
        candidates pointed at `via` when given). Returns the participant's SSRC."""
        from ntgcalls import MediaDescription

        payload = await self.calls.create_call(chat_id)
        await self.calls.set_stream_sources(chat_id, mode, MediaDescription(
            microphone=audio, speaker=None, camera=None, screen=None))
        ssrc = json.loads(payload)["ssrc"] & 0xFFFFFFFF
        status, answer = await api.call("POST", f"/calls/{call_id}/join", {"peer": peer, "params": payload})
        if status != 200 or not isinstance(answer.get("params"), str):
            raise RuntimeError(f"the server refused ntgcalls' join: HTTP {status}: {answer}")
        params = answer["params"] if via is None else cr.rewrite_candidates(answer["params"], via)
        await self.calls.connect(chat_id, params, False)
        return ssrc

    async def listen(self, api, call_id, chat_id):
        """In PLAYBACK mode the others' audio comes out of the `microphone` slot
        (docs/protocol.md §12.7); a 2-channel EXTERNAL sink hands it over as interleaved
        stereo."""
        from ntgcalls import AudioDescription, MediaSource, StreamMode

        return await self._join(api, call_id, chat_id, PEER_NTG_LISTENER, StreamMode.PLAYBACK,
                                AudioDescription(MediaSource.EXTERNAL, FS, 2, "", False))

    async def play(self, api, call_id, chat_id, path, channels, via):
        from ntgcalls import AudioDescription, MediaSource, StreamMode

        return await self._join(api, call_id, chat_id, PEER_SENDER, StreamMode.CAPTURE,
                                AudioDescription(MediaSource.FILE, FS, channels, path, False), via)

    async def wait_connected(self, chat_id, limit=CONNECT_LIMIT):
        deadline = time.monotonic() + limit
        while chat_id not in self.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if chat_id not in self.connected:
            raise RuntimeError(f"ntgcalls (chat {chat_id}) did not connect within {limit:.0f} s: "
                               f"states {self.states.get(chat_id)}")

    def stereo_record(self, chat_id, ssrc, channels=2):
        """One sender's frames in one chat as a record [samples, channels]: each channel through
        compare_receive.assemble_frames (a pause in the callbacks becomes silence)."""
        with self.lock:
            got = [(t, d) for t, s, d in self.frames.get(chat_id, []) if s == ssrc]
        if not got:
            return np.zeros((0, channels)), {"frames": 0}
        frames = [(t, np.frombuffer(d[: len(d) // (2 * channels) * 2 * channels], dtype="<i2")
                   .astype(np.float64).reshape(-1, channels) / 32768.0) for t, d in got]
        cols = [cr.assemble_frames([(t, x[:, c]) for t, x in frames]) for c in range(channels)]
        rec = np.stack([c[0] for c in cols], axis=1)
        return rec, {"frames": len(frames), "frame_samples": sorted({len(x) for _, x in frames}),
                     "pauses_filled_ms": cols[0][2]}


# ---------------------------------------------------------------------------------------------
# Sessions


def preset_args(ctx, preset):
    """The sender's encoder flags. A binary from before --preset gets the nearest it has: the
    voice preset is its default, the music preset --stereo --bitrate 128 (still libopus VOIP
    with FEC, which the real preset turns off)."""
    if ctx.has_preset:
        args = ["--preset", preset]
        if ctx.args.complexity is not None:
            args += ["--complexity", str(ctx.args.complexity)]
        return args + shlex.split(ctx.args.sender_args or "")
    return [] if preset == "voice" else ["--stereo", "--bitrate", "128"]


async def start_listener(ctx, call_id, work):
    """Our listener: per-speaker WAVs in work/rec, stereo so that a stereo stream stays so."""
    rec_dir = os.path.join(work, "rec")
    os.makedirs(rec_dir, exist_ok=True)
    argv = [ctx.bin, "join", str(call_id), "--local", ctx.args.control, "--as", str(PEER_GC_LISTENER),
            "--muted", "--stereo", "--record-dir", rec_dir, "--quiet",
            "--duration", str(int(2 * CONNECT_LIMIT + PLAY_LIMIT + 10))]
    p = cr.Proc("listener", argv, os.path.join(work, "listener.log"))
    await p.start()
    return p, rec_dir


def listener_record(proc, rec_dir, ssrc):
    """The listener's WAV of one sender: named by `left` lines as `recorded SSRC N to PATH`
    (and peer<ID>_ssrc<N>.wav in the directory otherwise)."""
    for line in proc.lines:
        m = re.search(r"recorded SSRC (\d+) to (.+)$", line)
        if m and int(m.group(1)) == ssrc:
            return m.group(2).strip()
    found = sorted(glob.glob(os.path.join(rec_dir, f"*ssrc{ssrc}*.wav")))
    if found:
        return found[0]
    raise FileNotFoundError(f"no recording of SSRC {ssrc} in {rec_dir} "
                            f"(files: {os.listdir(rec_dir)}; listener: {proc.tail()})")


async def run_session(ctx, sender, preset, clip, index):
    """One call: both listeners, then one sender playing `clip`. Returns the session's dict
    with a score per listener."""
    a = ctx.args
    tag = f"{sender}-{preset}-{clip}"
    work = os.path.join(ctx.out, tag)
    os.makedirs(work, exist_ok=True)
    ref = ctx.clips[clip]
    result = {"sender": sender, "preset": preset, "clip": clip, "notes": []}
    listen_chat, send_chat = NTG_CHAT_BASE - 2 * index, NTG_CHAT_BASE - 2 * index - 1
    procs, call_id, meter, ssrc = {}, None, None, None
    try:
        status, call = await ctx.api.call("POST", "/calls", {"peer": PEER_CREATOR, "title": f"quality {tag}"})
        if status != 200 or "id" not in call:
            raise RuntimeError(f"POST /calls: HTTP {status}: {call}")
        call_id = call["id"]

        procs["listener"], rec_dir = await start_listener(ctx, call_id, work)
        await asyncio.wait_for(ctx.ntg.listen(ctx.api, call_id, listen_chat), CONNECT_LIMIT)
        if not await procs["listener"].wait_line(r"call: connected", CONNECT_LIMIT):
            raise RuntimeError(f"our listener did not connect within {CONNECT_LIMIT:.0f} s: "
                               f"{procs['listener'].tail()}")
        await ctx.ntg.wait_connected(listen_chat)

        meter = Meter(("127.0.0.1", a.media_port))
        if sender == "groupcall":
            argv = [ctx.bin, "join", str(call_id), "--local", a.control, "--as", str(PEER_SENDER),
                    "--play", ctx.paths[clip]["wav"], *preset_args(ctx, preset), "--quiet",
                    "--media-via", f"{meter.addr[0]}:{meter.addr[1]}",
                    "--duration", str(int(CONNECT_LIMIT + PLAY_LIMIT))]
            procs["sender"] = cr.Proc("sender", argv, os.path.join(work, "sender.log"))
            await procs["sender"].start()
            m = await procs["sender"].wait_line(r"joined \S+ with SSRC (\d+)", CONNECT_LIMIT)
            if not m:
                raise RuntimeError(f"the sender did not join: {procs['sender'].tail()}")
            ssrc = int(m.group(1))
            if not await procs["sender"].wait_line(r"finished playing", PLAY_LIMIT):
                raise RuntimeError(f"the sender did not finish playing within {PLAY_LIMIT:.0f} s: "
                                   f"{procs['sender'].tail()}")
        else:
            ssrc = await asyncio.wait_for(
                ctx.ntg.play(ctx.api, call_id, send_chat, ctx.paths[clip]["raw"], ref.shape[1], meter.addr),
                CONNECT_LIMIT)
            await ctx.ntg.wait_connected(send_chat)
            deadline = time.monotonic() + PLAY_LIMIT + NTG_EXTRA_LEAD_S
            while send_chat not in ctx.ntg.ended and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if send_chat not in ctx.ntg.ended:
                raise RuntimeError(f"ntgcalls did not finish its file within {PLAY_LIMIT + NTG_EXTRA_LEAD_S:.0f} s")
        await asyncio.sleep(DRAIN_S)
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        # Our listener first (its files are finalised as it leaves), then ntgcalls, the sender,
        # the relay; the call is discarded last.
        for name in ("listener", "sender"):
            if name in procs:
                how = await procs[name].stop(signal.SIGINT)
                if how != "exited":
                    result["notes"].append(f"{name}: {how} (SIGINT)")
        await ctx.ntg.stop(listen_chat)
        if sender == "ntgcalls":
            await ctx.ntg.stop(send_chat)
        if meter is not None:
            got = meter.kbps(ssrc) if ssrc is not None else None
            result["kbps"], result["frame_ms"] = got if got else (None, None)
            meter.close()
        if call_id is not None:
            await ctx.api.call("POST", f"/calls/{call_id}/discard", {"peer": PEER_CREATOR})
    if "error" in result:
        return result
    result["ssrc"] = ssrc

    scores = {}
    try:
        rec, rate = read_wav(listener_record(procs["listener"], rec_dir, ssrc))
        if rate != FS:
            raise ValueError(f"the record is {rate} Hz, expected {FS}")
        scores["groupcall"] = score(ref, rec)
    except (OSError, ValueError) as e:
        scores["groupcall"] = {"error": f"our listener's record: {e}"}
    rec, info = ctx.ntg.stereo_record(listen_chat, ssrc)
    if a.out:
        write_wav(os.path.join(work, "ntgcalls.wav"), rec)
    s = score(ref, rec) if len(rec) else {"error": "ntgcalls handed over no frames from the sender"}
    s.update(info)
    scores["ntgcalls"] = s
    result["listeners"] = scores
    return result


# ---------------------------------------------------------------------------------------------
# Report


def table_rows(presets):
    """(sender, preset, listener, label): each groupcall preset to each listener, then ntgcalls."""
    rows = [("groupcall", p, listener, f"groupcall {p} -> {listener}")
            for listener in ("groupcall", "ntgcalls") for p in presets]
    return rows + [
        ("ntgcalls", "default", "groupcall", "ntgcalls default -> groupcall"),
        ("ntgcalls", "default", "ntgcalls", "ntgcalls default -> ntgcalls (reference)"),
    ]


def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def build_rows(sessions, clips, presets):
    """Sessions (one per sender/preset/clip, both listeners in each) -> the table's rows."""
    rows = []
    for sender, preset, listener, label in table_rows(presets):
        row = {"sender": sender, "preset": preset, "listener": listener, "label": label}
        for clip in clips:
            ses = next((s for s in sessions if (s["sender"], s["preset"], s["clip"]) == (sender, preset, clip)), None)
            if ses is None:
                continue
            if "error" in ses:
                row[clip] = {"error": ses["error"]}
                continue
            sc = dict(ses["listeners"][listener])
            sc["kbps"] = ses.get("kbps")
            sc["frame_ms"] = ses.get("frame_ms")
            row[clip] = sc
        rows.append(row)
    return rows


def print_table(rows, clips, ref_of):
    head = ["sender / preset -> listener"]
    for clip in clips:
        head += [f"{clip} LSD dB", f"{clip} SNR dB"] + (["music L/R SNR dB"] if clip == "music" else [])
    head += ["sent kbit/s (" + " / ".join(clips) + ")"]
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["label"]]
        for clip in clips:
            s = r.get(clip)
            width = 3 if clip == "music" else 2
            if s is None or "error" in s:
                cells += ["error" if s else "n/a"] + [""] * (width - 1)
                continue
            cells += [fmt(s["lsd_db"], 2), fmt(s["snr_db"], 1)] + ([fmt(s.get("lr_snr_db"), 1)] if clip == "music" else [])
        cells.append(" / ".join(fmt((r.get(c) or {}).get("kbps"), 1) for c in clips))
        print("| " + " | ".join(cells) + " |")
    print()
    for r in rows:
        for clip in clips:
            s = r.get(clip) or {}
            if "error" in s:
                print(f"{r['label']}, {clip}: {s['error']}")
            # Mono where the other listener of the same sender heard stereo: the listener's doing.
            heard_stereo = [(o.get(clip) or {}).get("side_db", -100.0) >= MONO_SIDE_DB for o in rows
                            if (o["sender"], o["preset"]) == (r["sender"], r["preset"]) and o is not r]
            if "side_db" in s and s["side_db"] < MONO_SIDE_DB and any(heard_stereo):
                print(f"note: {r['label']}, {clip}: the sender sent stereo, this listener plays it in mono "
                      f"(L-R {-s['side_db']:.0f} dB below L+R; {-side_db(ref_of[clip]):.0f} dB in the clip)")
            if abs(s.get("lag_drift_ms") or 0) >= DRIFT_NOTE_MS:
                print(f"note: {r['label']}, {clip}: the listener's delay moved by {s['lag_drift_ms']:.1f} ms "
                      "between the first and the last 3 s (time-stretching); the SNR counts it as error")


# ---------------------------------------------------------------------------------------------
# Main


class Ctx:
    pass


def probe_preset(binary):
    try:
        r = subprocess.run([binary, "join", "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        sys.exit(f"quality: cannot run {binary}: {e}")
    if r.returncode != 0:
        sys.exit(f"quality: {binary} join --help failed: {(r.stdout + r.stderr).strip()[:300]}")
    return "--preset" in r.stdout


async def main_async(ctx, plan):
    ctx.api = cr.Api(ctx.args.control)
    ctx.ntg = Ntg()
    sessions = []
    for index, (sender, preset, clip) in enumerate(plan, 1):
        t0 = time.monotonic()
        print(f"quality: {sender} {preset}, {clip} ...", flush=True)
        try:
            r = await run_session(ctx, sender, preset, clip, index)
        except Exception as e:  # a bug here must not lose the other sessions
            traceback.print_exc()
            r = {"sender": sender, "preset": preset, "clip": clip, "error": f"{type(e).__name__}: {e}", "notes": []}
        r["seconds"] = round(time.monotonic() - t0, 1)
        if "error" in r:
            print(f"quality:   failed: {r['error']}", flush=True)
        else:
            parts = [f"{who}: " + ("error: " + s["error"] if "error" in s else
                                   f"LSD {s['lsd_db']:.2f} dB, SNR {s['snr_db']:.1f} dB")
                     for who, s in r["listeners"].items()]
            print(f"quality:   {'; '.join(parts)}; sent {fmt(r.get('kbps'))} kbit/s; {r['seconds']} s", flush=True)
        for n in r.get("notes", []):
            print(f"quality:   note: {n}", flush=True)
        sessions.append(r)
    return sessions


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--control", help="control API base URL, http://127.0.0.1:PORT")
    p.add_argument("--media-port", type=int, help="the server's media UDP port (the counting relay forwards to it)")
    p.add_argument("--bin", default=os.environ.get("GROUPCALL_BIN") or shutil.which("groupcall"),
                   help="the groupcall binary (default: $GROUPCALL_BIN, then PATH)")
    p.add_argument("--clips", default="speech,music", help="speech, music or both (comma-separated)")
    p.add_argument("--complexity", type=int, choices=range(11), metavar="0-10",
                   help="groupcall senders' libopus complexity (default: the preset's: voice 3, music 5)")
    p.add_argument("--presets", default="voice,lean,music",
                   help="groupcall's presets to send with (comma-separated; default voice,lean,music)")
    p.add_argument("--sender-args", help="more encoder flags for the groupcall senders, e.g. "
                   "'--application low-delay --bitrate 48' (see groupcall join --help)")
    p.add_argument("--json", help="also write every figure to this file")
    p.add_argument("--out", help="keep the clips, records and logs here (default: a temporary directory, removed)")
    p.add_argument("--self-test", action="store_true", help="test the scoring on synthetic records and exit")
    args = p.parse_args()

    if args.self_test:
        sys.exit(1 if self_test() else 0)
    if not args.control or args.media_port is None:
        p.error("--control and --media-port are required (benches/quality.sh passes them)")
    if not args.bin or not os.access(args.bin, os.X_OK):
        p.error(f"no groupcall binary ({args.bin!r}): --bin or GROUPCALL_BIN")
    clips = [c.strip() for c in args.clips.split(",") if c.strip()]
    if not clips or any(c not in ("speech", "music") for c in clips):
        p.error("--clips takes speech, music or speech,music")
    try:
        import ntgcalls
    except ImportError:
        sys.exit("quality: ntgcalls is missing; benches/quality.sh sets up .venv-interop with it, or: "
                 "pip install ntgcalls==3.0.5")

    ctx = Ctx()
    ctx.args, ctx.bin = args, args.bin
    ctx.has_preset = probe_preset(args.bin)
    if not ctx.has_preset:
        print(f"quality: {args.bin} has no `join --preset`: voice is its default settings, music is "
              "approximated by --stereo --bitrate 128", flush=True)
        if args.complexity is not None:
            sys.exit("quality: --complexity needs a binary with `join --complexity`")
    version = getattr(ntgcalls, "__version__", None)
    print(f"quality: groupcall {args.bin}, ntgcalls {version or '?'}, server {args.control}", flush=True)

    tmp = None
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        ctx.out = args.out
    else:
        tmp = tempfile.mkdtemp(prefix="groupcall-quality-")
        ctx.out = tmp
    ctx.clips, ctx.paths = {}, {}
    for clip in clips:
        x = cr.make_speech() if clip == "speech" else make_music()
        wav = os.path.join(ctx.out, f"{clip}.wav")
        write_wav(wav, x)
        # What is scored is the 16-bit file the senders play, not the float signal.
        ctx.clips[clip] = read_wav(wav)[0]
        raw = os.path.join(ctx.out, f"{clip}.s16le")
        lead = np.zeros((int(NTG_EXTRA_LEAD_S * FS), ctx.clips[clip].shape[1]))
        with open(raw, "wb") as f:
            f.write(pcm16(np.concatenate([lead, ctx.clips[clip]])))
        ctx.paths[clip] = {"wav": os.path.abspath(wav), "raw": os.path.abspath(raw)}

    presets = [p for p in args.presets.split(",") if p]
    plan = [(s, pr, c) for s, pr in [("groupcall", p) for p in presets] + [("ntgcalls", "default")]
            for c in clips]
    sessions = []
    try:
        sessions = asyncio.run(main_async(ctx, plan))
    except KeyboardInterrupt:
        print("quality: interrupted", flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = build_rows(sessions, clips, presets)
    print_table(rows, clips, ctx.clips)
    failed = sum(1 for s in sessions if "error" in s) + sum(
        1 for s in sessions for v in s.get("listeners", {}).values() if "error" in v) + len(plan) - len(sessions)
    figures = {
        "quality": [{k: v for k, v in r.items()} for r in rows],
        "groupcall_bin": args.bin,
        "presets": "native" if ctx.has_preset else "approximated (--stereo --bitrate 128 for music)",
        "complexity": args.complexity,
        "ntgcalls": version,
        "clips": {c: {"channels": int(ctx.clips[c].shape[1]), "seconds": SIGNAL_S} for c in clips},
        "failed": failed,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**figures, "sessions": sessions}, f, indent=1)
    print(json.dumps(figures, separators=(",", ":")), flush=True)
    # ntgcalls' native threads can keep the interpreter from exiting: leave at once.
    os._exit(1 if failed else 0)


if __name__ == "__main__":
    main()
