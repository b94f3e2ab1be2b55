//! The per-packet costs of the media core: SRTP protect + unprotect of a 120-byte Opus-sized
//! payload per profile, RTP parsing, and the whole receive path of one datagram through a
//! connected `Transport` (demux, source check, decrypt, parse, stats, event).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use groupcall_media::sim::Sim;
use groupcall_media::srtp::{SrtpProfile, SrtpSession};
use groupcall_media::{AudioLevel, Event, ExtensionIds, OutgoingRtp, RtpPacket, TransportConfig};

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

fn receive_path(c: &mut Criterion) {
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        let mut sim = Sim::new(1);
        let server_cfg = TransportConfig {
            srtp_profiles: vec![profile],
            ..TransportConfig::server()
        };
        let mut p = common::pair(
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:32000".parse().unwrap(),
            TransportConfig::default(),
            server_cfg,
            |a| a,
            None,
            sim.now,
        );
        let mut ev: [Vec<Event>; 2] = Default::default();
        let deadline = sim.now + Duration::from_secs(5);
        assert!(sim.run_until(
            &mut [&mut p.client, &mut p.server],
            &mut ev,
            deadline,
            |ts, _| ts.iter().all(|t| t.is_connected())
        ));
        let from = p.server.local_addr();
        let now = sim.now;
        let mut seq = 0u16;
        c.bench_function(&format!("receive_path_per_datagram/{profile}"), |b| {
            b.iter_batched(
                || {
                    // A fresh sequence number per datagram, as on the wire (no replays).
                    let batch: Vec<BytesMut> = (0..512)
                        .map(|_| {
                            seq = seq.wrapping_add(1);
                            p.server.send_rtp(&opus_like(seq)).unwrap();
                            p.server.poll_transmit().unwrap().contents
                        })
                        .collect();
                    batch
                },
                |batch| {
                    for d in &batch {
                        p.client.handle_datagram(now, from, d);
                        black_box(p.client.poll_event());
                    }
                },
                BatchSize::LargeInput,
            )
        });
        assert_eq!(
            p.client.stats().dropped(),
            0,
            "every benched datagram was accepted"
        );
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = srtp, rtp_parse, receive_path }
criterion_main!(benches);
