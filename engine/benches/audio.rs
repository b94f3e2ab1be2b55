//! The audio path's costs per 20 ms frame.
//!
//! `opus_encode_20ms` and `opus_decode_20ms` are libopus itself: the floor
//! (`opus_encode_20ms_complexity/<c>`: the voice preset at each complexity; `opus_encode_20ms_lean`
//! and `opus_encode_20ms_music`: those presets; `opus_encode_20ms_voice_fec_planned_0`: the
//! voice preset without the FEC it plans for 10 % loss; `opus_encode_20ms_music_complexity/<c>`:
//! the music preset at other complexities; `opus_decode_20ms_lean`: what a listener decodes from
//! a lean speaker). The engine's own
//! work per received packet (RTP parse, jitter buffer insert and pull, level meter, one
//! stream's share of a 10-way mix) is `engine_per_packet`, measured with a decoder that does
//! nothing; the goal is at most 10% of one Opus decode.
//!
//! `mix_<n>_streams` is one 20 ms mix of n speakers. `jitter_insert_pull` is one packet in and
//! one frame out of a jitter buffer (decoder stubbed out).
//!
//! Run: `cargo bench -p groupcall-engine --bench audio`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use groupcall_engine::audio::{
    Channels, Decoder, Encoder, EncoderConfig, FrameDecoder, JitterBuffer, JitterConfig,
    LevelMeter, Mixer, ProcessingConfig,
};
use groupcall_engine::Result;
use groupcall_media::rtp::{AudioLevel, ExtensionIds, OutgoingRtp, RtpPacket};

/// Packets per synthetic stream before the receiver state is rebuilt (keeps timestamps and
/// virtual time consistent however long criterion runs).
const STREAM: usize = 1 << 14;

/// Stands in for libopus so that only the engine's work is timed.
struct NullDecoder;

impl FrameDecoder for NullDecoder {
    fn channels(&self) -> Channels {
        Channels::Mono
    }
    fn decode(&mut self, _: &[u8], out: &mut [i16]) -> Result<usize> {
        Ok(out.len())
    }
    fn decode_fec(&mut self, _: &[u8], out: &mut [i16]) -> Result<usize> {
        Ok(out.len())
    }
    fn has_fec(&self, _: &[u8]) -> bool {
        true
    }
}

fn speechlike(frame: usize) -> Vec<i16> {
    // Two tones with a slow amplitude envelope: enough for the encoder to work as on voice.
    (frame * 960..(frame + 1) * 960)
        .map(|i| {
            let t = i as f64 / 48000.0;
            let env = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
            (env * (8000.0 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()
                + 3000.0 * (2.0 * std::f64::consts::PI * 1700.0 * t).sin())) as i16
        })
        .collect()
}

fn opus_packets(n: usize) -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(&EncoderConfig::default()).unwrap();
    (0..n)
        .map(|i| enc.encode(&speechlike(i)).unwrap().to_vec())
        .collect()
}

fn rtp_stream(payloads: &[Vec<u8>]) -> Vec<Bytes> {
    let ids = ExtensionIds::default();
    (0..STREAM)
        .map(|i| {
            let pkt = OutgoingRtp {
                audio_level: Some(AudioLevel {
                    level: 30,
                    voice: true,
                }),
                transport_seq: Some(i as u16),
                abs_send_time: Some(i as u32),
                ..OutgoingRtp::new(
                    1,
                    i as u16,
                    (i * 960) as u32,
                    111,
                    &payloads[i % payloads.len()],
                )
            };
            let mut b = BytesMut::new();
            pkt.write(&ids, &mut b);
            b.freeze()
        })
        .collect()
}

/// One receiver fed one packet and pulled once per 20 ms of virtual time.
struct Receiver<D> {
    jb: JitterBuffer<D>,
    meter: LevelMeter,
    mixer: Mixer,
    t0: Instant,
    k: usize,
}

impl<D: FrameDecoder> Receiver<D> {
    fn new(decoder: D) -> Self {
        Receiver {
            jb: JitterBuffer::new(JitterConfig::default(), decoder),
            meter: LevelMeter::new(),
            mixer: Mixer::new(Channels::Mono),
            t0: Instant::now(),
            k: 0,
        }
    }

    fn step(&mut self, raw: &Bytes, ids: &ExtensionIds) {
        let Ok(pkt) = RtpPacket::parse(raw.clone(), ids) else {
            return;
        };
        let now = self.t0 + Duration::from_millis(20 * self.k as u64);
        self.jb.insert_rtp(now, &pkt);
        if let Some(level) = pkt.audio_level {
            self.meter.observe_extension(level);
        }
        let out = self.jb.pull(now);
        let _ = self.mixer.add(out.pcm, 1.0);
        self.k += 1;
        if self.k.is_multiple_of(10) {
            black_box(self.mixer.finish());
        }
        if self.k.is_multiple_of(5) {
            black_box(self.meter.take());
        }
    }
}

fn benches(c: &mut Criterion) {
    let pcm: Vec<Vec<i16>> = (0..50).map(speechlike).collect();
    let payloads = opus_packets(50);
    let ids = ExtensionIds::default();

    let mut enc = Encoder::new(&EncoderConfig::default()).unwrap();
    let mut i = 0;
    c.bench_function("opus_encode_20ms", |b| {
        b.iter(|| {
            i += 1;
            black_box(enc.encode(&pcm[i % pcm.len()]).unwrap().len())
        })
    });

    // The voice preset at each complexity (its own is 3).
    for complexity in [0, 1, 2, 3, 5, 7, 9, 10] {
        let mut enc = Encoder::new(&EncoderConfig {
            complexity,
            ..EncoderConfig::voice()
        })
        .unwrap();
        c.bench_function(&format!("opus_encode_20ms_complexity/{complexity}"), |b| {
            b.iter(|| {
                i += 1;
                black_box(enc.encode(&pcm[i % pcm.len()]).unwrap().len())
            })
        });
    }
    // The lean preset (CELT alone, 64 kbit/s, complexity 0), and what the voice preset's
    // in-band FEC costs (planned for 0 % loss, libopus sends none).
    for (name, config) in [
        ("opus_encode_20ms_lean", EncoderConfig::lean()),
        (
            "opus_encode_20ms_voice_fec_planned_0",
            EncoderConfig {
                expected_loss_percent: 0,
                ..EncoderConfig::voice()
            },
        ),
    ] {
        let mut enc = Encoder::new(&config).unwrap();
        c.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                black_box(enc.encode(&pcm[i % pcm.len()]).unwrap().len())
            })
        });
    }
    // The music preset: stereo, 128 kbit/s, AUDIO.
    let stereo: Vec<Vec<i16>> = pcm
        .iter()
        .map(|f| f.iter().flat_map(|&s| [s, s / 2]).collect())
        .collect();
    let mut enc = Encoder::new(&EncoderConfig::music()).unwrap();
    c.bench_function("opus_encode_20ms_music", |b| {
        b.iter(|| {
            i += 1;
            black_box(enc.encode(&stereo[i % stereo.len()]).unwrap().len())
        })
    });
    // The music preset at other complexities.
    for complexity in [0, 2, 3] {
        let mut enc = Encoder::new(&EncoderConfig {
            complexity,
            ..EncoderConfig::music()
        })
        .unwrap();
        c.bench_function(
            &format!("opus_encode_20ms_music_complexity/{complexity}"),
            |b| {
                b.iter(|| {
                    i += 1;
                    black_box(enc.encode(&stereo[i % stereo.len()]).unwrap().len())
                })
            },
        );
    }

    let mut dec = Decoder::new(Channels::Mono).unwrap();
    let mut out = vec![0i16; 960];
    c.bench_function("opus_decode_20ms", |b| {
        b.iter(|| {
            i += 1;
            black_box(dec.decode(&payloads[i % payloads.len()], &mut out).unwrap())
        })
    });

    // What a listener decodes when the speaker uses the lean preset (CELT).
    let mut lean = Encoder::new(&EncoderConfig::lean()).unwrap();
    let lean_payloads: Vec<Vec<u8>> = pcm
        .iter()
        .map(|f| lean.encode(f).unwrap().to_vec())
        .collect();
    let mut dec = Decoder::new(Channels::Mono).unwrap();
    c.bench_function("opus_decode_20ms_lean", |b| {
        b.iter(|| {
            i += 1;
            black_box(
                dec.decode(&lean_payloads[i % lean_payloads.len()], &mut out)
                    .unwrap(),
            )
        })
    });

    let stream = rtp_stream(&payloads);
    let payload_bytes: Vec<Bytes> = payloads.iter().map(|p| Bytes::copy_from_slice(p)).collect();
    let mut jb = JitterBuffer::new(JitterConfig::default(), NullDecoder);
    let mut t0 = Instant::now();
    let mut k = 0usize;
    c.bench_function("jitter_insert_pull", |b| {
        b.iter(|| {
            if k == STREAM {
                jb = JitterBuffer::new(JitterConfig::default(), NullDecoder);
                t0 = Instant::now();
                k = 0;
            }
            let now = t0 + Duration::from_millis(20 * k as u64);
            jb.insert(
                now,
                k as u16,
                (k * 960) as u32,
                payload_bytes[k % payload_bytes.len()].clone(),
            );
            k += 1;
            black_box(jb.pull(now).pcm[0])
        })
    });

    // One 20 ms mix of every speaker heard: what a bot recording the call does per tick.
    let frames: Vec<Vec<i16>> = (0..50).map(speechlike).collect();
    let mut mixer = Mixer::new(Channels::Mono);
    for streams in [1, 10, 50] {
        c.bench_function(&format!("mix_{streams}_streams"), |b| {
            b.iter(|| {
                for f in &frames[..streams] {
                    mixer.add(f, 1.0).unwrap();
                }
                black_box(mixer.finish()[0])
            })
        });
    }

    let mut rx = Receiver::new(NullDecoder);
    c.bench_function("engine_per_packet", |b| {
        b.iter(|| {
            if rx.k == STREAM {
                rx = Receiver::new(NullDecoder);
            }
            let raw = &stream[rx.k];
            rx.step(raw, &ids);
        })
    });

    let mut rx = Receiver::new(Decoder::new(Channels::Mono).unwrap());
    c.bench_function("receive_per_packet_with_opus", |b| {
        b.iter(|| {
            if rx.k == STREAM {
                rx = Receiver::new(Decoder::new(Channels::Mono).unwrap());
            }
            let raw = &stream[rx.k];
            rx.step(raw, &ids);
        })
    });

    // The microphone path per 20 ms frame (two 10 ms steps): the speaker's frame as the echo
    // reference, then the microphone's, with each part of the processing on its own and all
    // together. Divide by two for the cost per 10 ms frame.
    let far: Vec<Vec<i16>> = (0..50).map(speechlike).collect();
    let mic: Vec<Vec<i16>> = far
        .iter()
        .map(|f| f.iter().map(|&s| s / 2).collect())
        .collect();
    for (name, config) in [
        ("echo", (true, false, false)),
        ("noise", (false, true, false)),
        ("gain", (false, false, true)),
        ("all", (true, true, true)),
    ] {
        let mut p = groupcall_engine::audio::processing::processor(ProcessingConfig {
            echo_cancellation: config.0,
            noise_suppression: config.1,
            gain_control: config.2,
        })
        .unwrap()
        .unwrap();
        let mut k = 0;
        let mut frame = vec![0i16; 960];
        c.bench_function(&format!("voice_processing_20ms_{name}"), |b| {
            b.iter(|| {
                k = (k + 1) % far.len();
                p.render(&far[k]);
                frame.copy_from_slice(&mic[k]);
                p.capture(&mut frame);
                black_box(&frame);
            })
        });
    }
}

fn config() -> Criterion {
    // Short enough that `cargo bench --workspace` stays within a few minutes on two cores.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = audio; config = config(); targets = benches }
criterion_main!(audio);
