//! The receive side against a bad network, on virtual time: a 1 kHz tone is encoded as the
//! engine sends it (Opus 32 kbit/s, in-band FEC), each packet meets the fate the impairment
//! relay would give it (`groupcall_sfu::impair`: loss random or in bursts, delay, reordering,
//! duplicates), arrives at the jitter buffer at its virtual arrival time, and the buffer is
//! pulled every 20 ms. Each 20 ms block of the output is scored like the comparison script
//! does (`scripts/compare-receive.sh`): good when it is the tone at at least half its clean
//! level. No sockets and no sleeping: ten seconds of audio take a fraction of a second, so
//! every row runs with several seeds.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use groupcall_engine::audio::{
    Channels, Decoder, Encoder, EncoderConfig, FrameKind, JitterBuffer, JitterConfig, JitterStats,
    FRAME_SAMPLES, SAMPLE_RATE,
};
use groupcall_sfu::impair::{Fate, ImpairConfig, Impairer};
use support::{block_score, tone_block_is_good};

/// The tones: the comparison script's (1 kHz, -6 dBFS) and the end-to-end tests' (600 Hz).
/// Both matter: libopus codes them differently (at 600 Hz it often leaves FEC out).
const TONES: [(f64, f64); 2] = [(1000.0, 16384.0), (600.0, 10000.0)];
const SECONDS: usize = 10;
const SSRC: u32 = 0x1234_5678;

/// Fixed path delay under the random part (loopback plus the server).
const BASE_DELAY: Duration = Duration::from_millis(2);

struct Score {
    good: f64,
    longest_bad_ms: usize,
    stats: JitterStats,
    /// Median playout delay (arrival of the fastest packet to playout), ms.
    delay_ms: f32,
    /// Bad blocks by what the buffer said they were.
    bad_kinds: Vec<(FrameKind, usize)>,
}

fn tone(frame: usize, (hz, amplitude): (f64, f64)) -> Vec<i16> {
    (0..FRAME_SAMPLES)
        .map(|i| {
            let t = (frame * FRAME_SAMPLES + i) as f64 / SAMPLE_RATE as f64;
            (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
        })
        .collect()
}

fn good_block(block: &[i16], (hz, amplitude): (f64, f64)) -> bool {
    tone_block_is_good(block, SAMPLE_RATE, hz, amplitude)
}

/// Plays `SECONDS` of the tone through `impair` into a jitter buffer and scores the output
/// from 0.5 s after its first audible block for `SECONDS - 1` seconds.
fn run(impair: ImpairConfig, signal: (f64, f64)) -> Score {
    let mut encoder = Encoder::new(&EncoderConfig::default()).unwrap();
    let impairer = Impairer::new(impair);
    let mut jitter = JitterBuffer::new(
        JitterConfig::default(),
        Decoder::new(Channels::Mono).unwrap(),
    );
    let t0 = Instant::now();
    // (arrival, seq, ts, payload), sorted by arrival.
    let mut arrivals: Vec<(Duration, u16, u32, Bytes)> = Vec::new();
    let frames = SECONDS * 50;
    for f in 0..frames {
        let payload = Bytes::copy_from_slice(encoder.encode(&tone(f, signal)).unwrap());
        let seq = (f as u16).wrapping_add(40_000); // wraps during the run
        let ts = (f as u32 * FRAME_SAMPLES as u32).wrapping_add(3_000_000_000);
        let mut rtp = vec![0x80, 111];
        rtp.extend_from_slice(&seq.to_be_bytes());
        rtp.extend_from_slice(&ts.to_be_bytes());
        rtp.extend_from_slice(&SSRC.to_be_bytes());
        let sent = Duration::from_millis(20 * f as u64);
        match impairer.judge(&rtp, true) {
            Fate::Drop => {}
            Fate::Pass => arrivals.push((sent + BASE_DELAY, seq, ts, payload)),
            Fate::Delay { delay, copy } => {
                arrivals.push((sent + BASE_DELAY + delay, seq, ts, payload.clone()));
                if let Some(copy) = copy {
                    arrivals.push((sent + BASE_DELAY + copy, seq, ts, payload));
                }
            }
        }
    }
    arrivals.sort_by_key(|a| a.0);
    let mut out: Vec<i16> = Vec::new();
    let mut kinds = Vec::new();
    let mut delays = Vec::new();
    let mut next = 0;
    // The receiver's 20 ms clock, out of phase with the sender's.
    let phase = Duration::from_millis(7);
    for tick in 0..(frames + 50) {
        let now = phase + Duration::from_millis(20 * tick as u64);
        while next < arrivals.len() && arrivals[next].0 <= now {
            let (at, seq, ts, ref payload) = arrivals[next];
            jitter.insert(t0 + at, seq, ts, payload.clone());
            next += 1;
        }
        let pulled = jitter.pull(t0 + now);
        kinds.push(pulled.kind);
        out.extend_from_slice(pulled.pcm);
        delays.push(jitter.stats().delay_ms);
    }
    let start = out
        .chunks(FRAME_SAMPLES)
        .position(|b| b.iter().any(|&s| s.unsigned_abs() > 1000))
        .expect("the tone came out")
        + 25;
    let blocks: Vec<bool> = out
        .chunks(FRAME_SAMPLES)
        .skip(start)
        .take((SECONDS - 1) * 50)
        .map(|b| good_block(b, signal))
        .collect();
    let mut bad_kinds: Vec<(FrameKind, usize)> = Vec::new();
    for (i, _) in blocks.iter().enumerate().filter(|(_, g)| !**g) {
        let k = kinds[start + i];
        match bad_kinds.iter_mut().find(|(kind, _)| *kind == k) {
            Some((_, n)) => *n += 1,
            None => bad_kinds.push((k, 1)),
        }
    }
    let (good, longest_bad_ms) = block_score(&blocks);
    delays.sort_by(f32::total_cmp);
    Score {
        good,
        longest_bad_ms,
        stats: jitter.stats(),
        delay_ms: delays[delays.len() / 2],
        bad_kinds,
    }
}

fn row(loss: f64, burst: f64, jitter_ms: u64, seed: u64, signal: (f64, f64)) -> Score {
    let s = run(
        ImpairConfig {
            loss,
            burst,
            jitter: Duration::from_millis(jitter_ms),
            seed,
            ..ImpairConfig::default()
        },
        signal,
    );
    println!(
        "{:>4} Hz, loss {:>4.0} % burst {burst:>3} jitter {jitter_ms:>3} ms seed {seed}: good {:>6.2} %, longest bad {:>3} ms, delay {:>5.1} ms, bad {:?} | {:?}",
        signal.0,
        loss * 100.0,
        s.good,
        s.longest_bad_ms,
        s.delay_ms,
        s.bad_kinds,
        s.stats
    );
    s
}

#[test]
fn a_clean_path_plays_every_block_with_little_delay() {
    for signal in TONES {
        let s = row(0.0, 1.0, 0, 1, signal);
        assert_eq!(s.good, 100.0);
        assert!(s.delay_ms <= 45.0, "{} ms", s.delay_ms);
    }
}

#[test]
fn ten_percent_loss_and_40_ms_jitter() {
    for signal in TONES {
        for seed in 1..=5 {
            let s = row(0.10, 1.0, 40, seed, signal);
            assert!(s.good >= 99.5, "seed {seed}: {} %", s.good);
            assert!(
                s.longest_bad_ms <= 20,
                "seed {seed}: {} ms",
                s.longest_bad_ms
            );
        }
    }
}

#[test]
fn heavier_rows_for_the_record() {
    for (loss, burst, jitter) in [(0.2, 1.0, 80), (0.3, 1.0, 120), (0.1, 3.0, 40)] {
        for seed in 1..=3 {
            for signal in TONES {
                let s = row(loss, burst, jitter, seed, signal);
                assert!(s.good > 95.0, "{} %", s.good);
            }
        }
    }
}

/// DTX: a speaker talks 1 s, is silent 1 s, talks 1 s, with the encoder's discontinuous
/// transmission on, so the silent second goes out as a few tiny packets (the sender skips the
/// rest, as WebRTC does, keeping sequence numbers contiguous). The receiver takes the pause for
/// what it is, not loss: nothing is counted lost, the pause keeps its length, and the second
/// sentence plays whole and on time.
#[test]
fn dtx_pauses_are_not_loss_and_keep_their_length() {
    let mut encoder = Encoder::new(&EncoderConfig {
        dtx: true,
        ..EncoderConfig::default()
    })
    .unwrap();
    let mut jitter = JitterBuffer::new(
        JitterConfig::default(),
        Decoder::new(Channels::Mono).unwrap(),
    );
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut seq = 0u16;
    let (mut sent, mut skipped) = (0, 0);
    for f in 0..200usize {
        let now = t0 + Duration::from_millis(20 * f as u64);
        let pcm = if (50..100).contains(&f) || f >= 150 {
            vec![0i16; FRAME_SAMPLES]
        } else {
            tone(f, TONES[0])
        };
        let packet = encoder.encode(&pcm).unwrap().to_vec();
        if encoder.is_dtx_packet(&packet) {
            skipped += 1;
        } else {
            let ts = (f * FRAME_SAMPLES) as u32;
            jitter.insert(now + BASE_DELAY, seq, ts, Bytes::from(packet));
            seq = seq.wrapping_add(1);
            sent += 1;
        }
        out.extend_from_slice(jitter.pull(now + Duration::from_millis(7)).pcm);
    }
    let s = jitter.stats();
    println!("DTX: sent {sent}, skipped {skipped}: {s:?}");
    assert!(skipped > 60, "DTX skipped {skipped} frames");
    assert_eq!(s.lost, 0, "{s:?}");
    let loud: Vec<bool> = out
        .chunks(FRAME_SAMPLES)
        .map(|b| b.iter().any(|&x| x.unsigned_abs() > 4000))
        .collect();
    let first = loud.iter().position(|&l| l).unwrap();
    let second = first + 60 + loud[first + 60..].iter().position(|&l| l).unwrap();
    assert_eq!(second - first, 100, "the pause kept its length");
    let good = out.chunks(FRAME_SAMPLES).skip(second + 2).take(45);
    assert!(
        good.clone().all(|b| good_block(b, TONES[0])),
        "the second sentence plays whole"
    );
}

/// Whatever the network does, the receive side neither panics nor stops giving 20 ms per pull:
/// real Opus packets and random bytes, sequence numbers and timestamps that jump, repeat and
/// wrap, arrivals in bursts and after long gaps, all at once on a seeded random walk.
#[test]
fn hostile_streams_never_break_the_buffer() {
    let mut encoder = Encoder::new(&EncoderConfig::default()).unwrap();
    let mut jitter = JitterBuffer::new(
        JitterConfig::default(),
        Decoder::new(Channels::Mono).unwrap(),
    );
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t0 = Instant::now();
    let (mut now, mut seq, mut ts) = (Duration::ZERO, 0u16, 0u32);
    for i in 0..20_000usize {
        let r = rand();
        now += Duration::from_micros(r % 30_000);
        if r % 97 == 0 {
            now += Duration::from_millis(r % 3000); // a long gap
        }
        seq = match r % 50 {
            0 => (r >> 8) as u16,     // anywhere
            1 => seq.wrapping_sub(5), // back
            2 => seq,                 // again
            _ => seq.wrapping_add(1 + (r % 3) as u16),
        };
        ts = match (r >> 16) % 60 {
            0 => (r >> 20) as u32,
            1 => ts.wrapping_sub(48_000),
            _ => ts.wrapping_add(960 * (1 + (r >> 24) % 3) as u32),
        };
        let payload = if r % 7 == 0 {
            let n = (r >> 32) as usize % 64;
            Bytes::from((0..n).map(|_| rand() as u8).collect::<Vec<u8>>())
        } else {
            Bytes::copy_from_slice(encoder.encode(&tone(i, TONES[i % 2])).unwrap())
        };
        jitter.insert(t0 + now, seq, ts, payload);
        if r % 3 != 0 {
            assert_eq!(jitter.pull(t0 + now).pcm.len(), FRAME_SAMPLES);
        }
    }
    let s = jitter.stats();
    println!("{s:?}");
    assert!(
        s.received > 10_000 && s.malformed > 0 && s.resyncs > 0,
        "{s:?}"
    );
    assert!(jitter.len() <= JitterConfig::default().capacity);
}

/// A voiced sound with a glottal pulse train, a pitch glide and a syllable envelope: what
/// the encoders code as speech.
fn voiced(frame: usize) -> Vec<i16> {
    (frame * FRAME_SAMPLES..(frame + 1) * FRAME_SAMPLES)
        .map(|i| {
            let t = i as f64 / SAMPLE_RATE as f64;
            let env = (0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin()).powi(2);
            let f0 = 140.0 + 30.0 * (2.0 * std::f64::consts::PI * 0.5 * t).sin();
            let s: f64 = (1..20)
                .map(|h| (2.0 * std::f64::consts::PI * f0 * h as f64 * t).sin() / h as f64)
                .sum();
            (s * env * 6000.0) as i16
        })
        .collect()
}

/// The voice preset on clean packets and on the same packets with `loss` of them dropped
/// (seeded), each through the jitter buffer; the share of voiced 20 ms blocks the loss
/// damaged (under 3 dB SNR against the clean run's output), in %.
fn damaged_blocks(config: EncoderConfig, loss: f64) -> f64 {
    let frames = 250;
    let run = |loss: f64, seed: u64| {
        let mut encoder = Encoder::new(&config).unwrap();
        let mut jitter = JitterBuffer::new(
            JitterConfig::default(),
            Decoder::new(Channels::Mono).unwrap(),
        );
        let impairer = Impairer::new(ImpairConfig {
            loss,
            seed,
            ..ImpairConfig::default()
        });
        let t0 = Instant::now();
        let mut out = Vec::new();
        for f in 0..frames {
            let payload = Bytes::copy_from_slice(encoder.encode(&voiced(f)).unwrap());
            let mut rtp = vec![0x80, 111];
            rtp.extend_from_slice(&(f as u16).to_be_bytes());
            rtp.extend_from_slice(&((f * FRAME_SAMPLES) as u32).to_be_bytes());
            rtp.extend_from_slice(&SSRC.to_be_bytes());
            if !matches!(impairer.judge(&rtp, true), Fate::Drop) {
                let at = t0 + BASE_DELAY + Duration::from_millis(20 * f as u64);
                jitter.insert(at, f as u16, (f * FRAME_SAMPLES) as u32, payload);
            }
            let now = t0 + Duration::from_millis(20 * f as u64 + 7);
            out.extend_from_slice(jitter.pull(now).pcm);
        }
        out
    };
    let clean = run(0.0, 1);
    let (mut voiced_blocks, mut damaged) = (0usize, 0usize);
    for seed in 1..=5 {
        let lossy = run(loss, seed);
        for (a, b) in clean
            .chunks(FRAME_SAMPLES)
            .zip(lossy.chunks(FRAME_SAMPLES))
            .skip(50)
        {
            let signal: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum();
            if signal < 1e6 * FRAME_SAMPLES as f64 {
                continue; // the envelope's quiet part
            }
            voiced_blocks += 1;
            let error: f64 = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
                .sum();
            if 10.0 * (signal / error.max(1.0)).log10() < 3.0 {
                damaged += 1;
            }
        }
    }
    100.0 * damaged as f64 / voiced_blocks as f64
}

/// What the lean preset gives up for its CPU: in-band FEC. At 10 % loss the voice preset's
/// FEC brings most lost blocks back; the lean preset (CELT, no FEC) can only conceal them,
/// and about every lost block is a damaged one.
#[test]
fn fec_recovers_at_10_percent_loss_what_the_lean_preset_only_conceals() {
    let voice = damaged_blocks(EncoderConfig::voice(), 0.10);
    let lean = damaged_blocks(EncoderConfig::lean(), 0.10);
    let voice_no_fec = damaged_blocks(
        EncoderConfig {
            fec: false,
            ..EncoderConfig::voice()
        },
        0.10,
    );
    println!(
        "10 % loss, voiced blocks damaged: voice {voice:.1} %, voice without FEC {voice_no_fec:.1} %, lean {lean:.1} %"
    );
    assert!(voice < 6.0, "voice preset: {voice:.1} %");
    assert!(
        lean > 2.0 * voice && lean < 20.0,
        "lean preset: {lean:.1} %"
    );
    assert!(voice_no_fec > lean, "SILK without FEC: {voice_no_fec:.1} %");
}
