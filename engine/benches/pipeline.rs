//! The whole packet paths of one participant, through a connected media `Transport`:
//!
//! - `receive_path_per_datagram/<profile>`: one SRTP datagram of a real 20 ms Opus packet in,
//!   demux, source check, decrypt, parse, stats, event, then what the engine does with it on
//!   arrival (level meter, jitter-buffer insert). The decode happens later, once per 20 ms
//!   pull: it is `opus_decode_20ms` in the `audio` bench.
//! - `send_path_per_frame/<profile>`: one 20 ms PCM frame out: level and voice bit, Opus
//!   encode, RTP numbering, header extensions, SRTP protect, queued for the socket.
//! - `packetize_protect_per_frame`: the same without the encoder (an already encoded payload),
//!   which is the engine's own share of the send path.
//!
//! Run: `cargo bench -p groupcall-engine --bench pipeline`

#[path = "../../media/tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use groupcall_engine::audio::{
    AudioSender, Channels, Decoder, Encoder, EncoderConfig, Frame, JitterBuffer, JitterConfig,
    LevelMeter, Packetizer,
};
use groupcall_media::rtp::{AudioLevel, OPUS_PAYLOAD_TYPE};
use groupcall_media::sim::Sim;
use groupcall_media::srtp::SrtpProfile;
use groupcall_media::{Event, Transport, TransportConfig};

const PROFILES: [SrtpProfile; 2] = [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80];
/// Datagrams per timed batch.
const BATCH: usize = 256;

fn speechlike(frame: usize) -> Vec<i16> {
    (frame * 960..(frame + 1) * 960)
        .map(|i| {
            let t = i as f64 / 48000.0;
            let env = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
            (env * (8000.0 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()
                + 3000.0 * (2.0 * std::f64::consts::PI * 1700.0 * t).sin())) as i16
        })
        .collect()
}

/// A participant transport connected to a server transport on the simulated network.
fn connected(profile: SrtpProfile) -> (Sim, common::Pair) {
    let server_cfg = TransportConfig {
        srtp_profiles: vec![profile],
        ..TransportConfig::server()
    };
    let (sim, p, _) = common::connected_pair(1, server_cfg);
    assert_eq!(p.client.srtp_profile(), Some(profile));
    (sim, p)
}

fn drain(t: &mut Transport) {
    while t.poll_transmit().is_some() {}
    while t.poll_event().is_some() {}
}

fn receive_path(c: &mut Criterion) {
    // Real Opus packets, as a speaker would send them.
    let mut speaker = AudioSender::new(
        0x1234_5678,
        OPUS_PAYLOAD_TYPE,
        &EncoderConfig::default(),
        1,
        0,
    )
    .unwrap();
    let pcm: Vec<Vec<i16>> = (0..50).map(speechlike).collect();
    let mut rtp = Vec::new();
    for f in &pcm {
        let pkt = speaker.send(Frame::Pcm(f)).unwrap().unwrap();
        rtp.push((pkt.payload.to_vec(), pkt.audio_level.unwrap()));
    }
    for profile in PROFILES {
        let (sim, mut p) = connected(profile);
        drain(&mut p.client);
        let from = p.server.local_addr();
        let t0 = sim.now;
        let mut packetizer = Packetizer::new(0x1234_5678, OPUS_PAYLOAD_TYPE, 1, 0);
        let mut k = 0u64;
        let mut meter = LevelMeter::new();
        let mut overflow = 0;
        c.bench_function(&format!("receive_path_per_datagram/{profile}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH as u64);
                    // Untimed: the server side protects the datagrams, and a fresh jitter
                    // buffer (one per chunk, large enough that nothing overflows) waits. The
                    // 20 ms pulls are not part of this path.
                    let mut jb = JitterBuffer::new(
                        JitterConfig {
                            capacity: 2 * BATCH,
                            ..JitterConfig::default()
                        },
                        Decoder::new(Channels::Mono).unwrap(),
                    );
                    let batch: Vec<(Instant, BytesMut)> = (0..n)
                        .map(|_| {
                            let (payload, level) = &rtp[k as usize % rtp.len()];
                            let pkt = packetizer.packet(payload, 960, *level);
                            p.server.send_rtp(t0, &pkt).unwrap();
                            k += 1;
                            let d = p.server.poll_transmit().unwrap().contents;
                            (t0 + Duration::from_millis(20 * k), d)
                        })
                        .collect();
                    let start = Instant::now();
                    for (now, d) in &batch {
                        p.client.handle_datagram(*now, from, d);
                        while let Some(e) = p.client.poll_event() {
                            if let Event::Rtp(pkt) = e {
                                if let Some(level) = pkt.audio_level {
                                    meter.observe_extension(level);
                                }
                                jb.insert_rtp(*now, &pkt);
                            }
                        }
                    }
                    total += start.elapsed();
                    overflow += jb.stats().overflow;
                    left -= n;
                }
                total
            })
        });
        assert_eq!(overflow, 0, "no jitter-buffer overflow");
        assert_eq!(p.client.stats().dropped(), 0, "every datagram accepted");
    }
}

fn send_path(c: &mut Criterion) {
    let pcm: Vec<Vec<i16>> = (0..50).map(speechlike).collect();
    for profile in PROFILES {
        let (sim, mut p) = connected(profile);
        drain(&mut p.client);
        let mut sender =
            AudioSender::new(7, OPUS_PAYLOAD_TYPE, &EncoderConfig::default(), 1, 0).unwrap();
        let mut i = 0usize;
        c.bench_function(&format!("send_path_per_frame/{profile}"), |b| {
            b.iter(|| {
                i += 1;
                let rtp = sender
                    .send(Frame::Pcm(&pcm[i % pcm.len()]))
                    .unwrap()
                    .unwrap();
                p.client.send_rtp(sim.now, &rtp).unwrap();
                black_box(p.client.poll_transmit().unwrap().contents.len())
            })
        });
    }

    // The engine's share: everything but libopus.
    let mut enc = Encoder::new(&EncoderConfig::default()).unwrap();
    let payloads: Vec<Vec<u8>> = pcm
        .iter()
        .map(|f| enc.encode(f).unwrap().to_vec())
        .collect();
    let (sim, mut p) = connected(SrtpProfile::AeadAes128Gcm);
    drain(&mut p.client);
    let mut packetizer = Packetizer::new(7, OPUS_PAYLOAD_TYPE, 1, 0);
    let level = AudioLevel {
        level: 30,
        voice: true,
    };
    let mut i = 0usize;
    c.bench_function("packetize_protect_per_frame/AEAD_AES_128_GCM", |b| {
        b.iter(|| {
            i += 1;
            let rtp = packetizer.packet(&payloads[i % payloads.len()], 960, level);
            p.client.send_rtp(sim.now, &rtp).unwrap();
            black_box(p.client.poll_transmit().unwrap().contents.len())
        })
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = pipeline; config = config(); targets = receive_path, send_path }
criterion_main!(pipeline);
