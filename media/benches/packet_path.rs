//! The per-packet costs of the media core: SRTP protect + unprotect of a 120-byte Opus-sized
//! payload per profile (together and each alone), RTP parsing and writing, the whole send path of one packet and the whole receive path of one
//! datagram through a connected `Transport` (demux, source check, decrypt, parse, stats, event),
//! the local server's per-receiver cost of forwarding a 1,200-byte video packet, and a video
//! sender's cost per packet of cutting a frame into packets of up to 1,200 bytes and protecting
//! each.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use groupcall_media::srtp::{SrtpProfile, SrtpSession};
use groupcall_media::video::packetize::MAX_PROTECTED_PACKET;
use groupcall_media::video::{Packetizer, DEFAULT_MAX_PAYLOAD};
use groupcall_media::{
    AudioLevel, ExtensionIds, OutgoingRtp, RtpPacket, TransportConfig, VideoCodec,
};

fn opus_like(seq: u16) -> OutgoingRtp<'static> {
    OutgoingRtp {
        audio_level: Some(AudioLevel {
            level: 30,
            voice: true,
        }),
        abs_send_time: Some(0x12_3456),
        transport_seq: Some(seq),
        ..OutgoingRtp::new(0x1234_5678, seq, seq as u32 * 960, 111, &[0x55; 120])
    }
}

fn srtp(c: &mut Criterion) {
    let ids = ExtensionIds::default();
    for profile in SrtpProfile::ALL {
        let (kl, sl) = SrtpSession::key_lengths(profile);
        let (k, s) = (vec![7u8; kl], vec![9u8; sl]);
        let mut tx = SrtpSession::new(profile, (&k, &s), (&k, &s), 128).unwrap();
        let mut rx = SrtpSession::new(profile, (&k, &s), (&k, &s), 128).unwrap();
        let mut seq = 0u16;
        let mut plain = BytesMut::new();
        c.bench_function(&format!("srtp_protect_unprotect_120B/{profile}"), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                opus_like(seq).write(&ids, &mut plain);
                let p = tx.protect_rtp(&plain).unwrap();
                black_box(rx.unprotect_rtp(&p).unwrap());
            })
        });
        // Each half alone: the sender pays one protect per packet, a receiver one unprotect.
        opus_like(1).write(&ids, &mut plain);
        c.bench_function(&format!("srtp_protect_120B/{profile}"), |b| {
            b.iter(|| black_box(tx.protect_rtp(&plain).unwrap()))
        });
        c.bench_function(&format!("srtp_unprotect_120B/{profile}"), |b| {
            b.iter_custom(|iters| {
                // Fresh sequence numbers: replay protection refuses a packet seen before.
                timed_in_chunks(
                    iters,
                    || {
                        seq = seq.wrapping_add(1);
                        opus_like(seq).write(&ids, &mut plain);
                        tx.protect_rtp(&plain).unwrap()
                    },
                    |p| {
                        black_box(rx.unprotect_rtp(p).unwrap());
                    },
                )
            })
        });
    }
}

fn rtp_parse(c: &mut Criterion) {
    let ids = ExtensionIds::default();
    let mut buf = BytesMut::new();
    opus_like(1).write(&ids, &mut buf);
    let raw: Bytes = buf.freeze();
    c.bench_function("rtp_parse_with_extensions", |b| {
        b.iter(|| black_box(RtpPacket::parse(raw.clone(), &ids).unwrap()))
    });
    let mut out = BytesMut::with_capacity(256);
    c.bench_function("rtp_write_with_extensions", |b| {
        b.iter(|| {
            opus_like(black_box(7)).write(&ids, &mut out);
            black_box(&out);
        })
    });
}

/// The whole send path of one packet through a connected `Transport`: header written (with the
/// extensions the transport stamps), protected, queued, taken out.
fn send_path(c: &mut Criterion) {
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        let server_cfg = TransportConfig {
            srtp_profiles: vec![profile],
            ..TransportConfig::server()
        };
        let (sim, mut p, _) = common::connected_pair(1, server_cfg);
        let mut seq = 0u16;
        c.bench_function(&format!("send_path_per_packet/{profile}"), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                p.client.send_rtp(sim.now, &opus_like(seq)).unwrap();
                black_box(p.client.poll_transmit().unwrap());
            })
        });
    }
}

/// What the local server pays per video packet per receiver: a 1,200-byte plaintext video packet
/// (PT 104, abs-send-time and transport-wide number on the wire's ids) re-stamped with this hop's
/// extension values, protected and queued through a connected server `Transport`
/// (`send_rtp_raw`, the forwarder's path; the simulcast rewrite adds a copy of the packet).
fn forward_video(c: &mut Criterion) {
    let ids = ExtensionIds::default();
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        let server_cfg = TransportConfig {
            srtp_profiles: vec![profile],
            ..TransportConfig::server()
        };
        let (sim, mut p, _) = common::connected_pair(1, server_cfg);
        let mut plain = BytesMut::new();
        let payload = [0x42u8; 1200 - 12 - 12];
        let mut seq = 0u16;
        c.bench_function(
            &format!("forward_video_1200B_per_receiver/{profile}"),
            |b| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    OutgoingRtp {
                        abs_send_time: Some(0x12_3456),
                        transport_seq: Some(seq),
                        ..OutgoingRtp::new(0x2222_0001, seq, seq as u32 * 3000, 104, &payload)
                    }
                    .write(&ids, &mut plain);
                    p.server.send_rtp_raw(sim.now, &plain).unwrap();
                    black_box(p.server.poll_transmit().unwrap());
                })
            },
        );
    }
}

/// What a video sender pays per packet: a 32 KB VP8 frame (a 720p delta frame at about
/// 2 Mbit/s) cut into 28 payloads at the default size, each written with abs-send-time and the
/// transport-wide number and SRTP-protected (up to 1,200 bytes on the wire). One iteration is a
/// frame; the figure reported is per packet.
fn video_packetize_protect(c: &mut Criterion) {
    let ids = ExtensionIds::default();
    let frame: Vec<u8> = (0..32_000u32)
        .map(|i| (i.wrapping_mul(7) | 1) as u8)
        .collect();
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        let (kl, sl) = SrtpSession::key_lengths(profile);
        let (k, s) = (vec![7u8; kl], vec![9u8; sl]);
        let mut tx = SrtpSession::new(profile, (&k, &s), (&k, &s), 128).unwrap();
        let mut packetizer = Packetizer::new(VideoCodec::Vp8, DEFAULT_MAX_PAYLOAD, 0, 0).unwrap();
        let mut plain = BytesMut::new();
        let (mut timestamp, mut transport_seq) = (0u32, 0u16);
        let mut send_frame = |largest: &mut usize| {
            timestamp = timestamp.wrapping_add(3000);
            let packets = packetizer.packetize(timestamp, black_box(&frame)).unwrap();
            for p in &packets {
                transport_seq = transport_seq.wrapping_add(1);
                OutgoingRtp {
                    marker: p.marker,
                    abs_send_time: Some(0x12_3456),
                    transport_seq: Some(transport_seq),
                    ..OutgoingRtp::new(0x3333_0001, p.sequence, p.timestamp, 100, &p.payload)
                }
                .write(&ids, &mut plain);
                let protected = tx.protect_rtp(&plain).unwrap();
                *largest = (*largest).max(protected.len());
                black_box(protected);
            }
            packets.len() as u32
        };
        let mut largest = 0;
        let per_frame = send_frame(&mut largest);
        assert!(largest <= MAX_PROTECTED_PACKET, "{largest} bytes");
        c.bench_function(&format!("video_packetize_protect_1200B/{profile}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    send_frame(&mut largest);
                }
                start.elapsed() / per_frame
            })
        });
    }
}

fn receive_path(c: &mut Criterion) {
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        let server_cfg = TransportConfig {
            srtp_profiles: vec![profile],
            ..TransportConfig::server()
        };
        let (sim, mut p, _) = common::connected_pair(1, server_cfg);
        let from = p.server.local_addr();
        let now = sim.now;
        let mut seq = 0u16;
        c.bench_function(&format!("receive_path_per_datagram/{profile}"), |b| {
            b.iter_custom(|iters| {
                timed_in_chunks(
                    iters,
                    || {
                        // A fresh sequence number per datagram, as on the wire (no replays).
                        seq = seq.wrapping_add(1);
                        p.server.send_rtp(now, &opus_like(seq)).unwrap();
                        p.server.poll_transmit().unwrap().contents
                    },
                    |d| {
                        p.client.handle_datagram(now, from, d);
                        black_box(p.client.poll_event());
                    },
                )
            })
        });
        assert_eq!(
            p.client.stats().dropped(),
            0,
            "every benched datagram was accepted"
        );
    }
}

/// Runs `run` on `iters` inputs made by `make` and returns the time spent in `run` alone. Inputs
/// are made in chunks, untimed, so that per-iteration figures are per packet however many
/// packets criterion asks for.
fn timed_in_chunks<T>(
    iters: u64,
    mut make: impl FnMut() -> T,
    mut run: impl FnMut(&T),
) -> Duration {
    const CHUNK: u64 = 512;
    let mut total = Duration::ZERO;
    let mut left = iters;
    let mut inputs = Vec::with_capacity(CHUNK as usize);
    while left > 0 {
        let n = left.min(CHUNK);
        inputs.clear();
        inputs.extend((0..n).map(|_| make()));
        let start = Instant::now();
        for input in &inputs {
            run(input);
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = srtp, rtp_parse, send_path, forward_video, video_packetize_protect, receive_path }
criterion_main!(benches);
