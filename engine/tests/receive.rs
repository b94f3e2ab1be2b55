//! The whole audio path on virtual time: a tone is encoded and packetized by the sender,
//! written and re-parsed as RTP, sent through a network that loses, delays, reorders and
//! duplicates, then buffered, decoded and checked for its frequency and continuity.

mod support;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use groupcall_engine::audio::jitter::JitterStats;
use groupcall_engine::audio::source::Frame;
use groupcall_engine::audio::{
    AudioSender, Channels, Decoder, EncoderConfig, FrameKind, JitterBuffer, JitterConfig, Mixer,
};
use groupcall_media::rtp::{ExtensionIds, RtpPacket, OPUS_PAYLOAD_TYPE};
use support::*;

struct Net {
    loss: f64,
    /// Delay is 40 ms ± this (uniform).
    jitter_ms: f64,
    duplicate: f64,
}

/// Sends `packets` (one per `frame_ms`) through the network; returns (arrival ms, packet).
fn network(packets: &[Bytes], frame_ms: f64, net: &Net, rng: &mut Rng) -> Vec<(f64, Bytes)> {
    let mut out = vec![];
    for (i, p) in packets.iter().enumerate() {
        if rng.unit() < net.loss {
            continue;
        }
        let at = i as f64 * frame_ms + 40.0 + (rng.unit() * 2.0 - 1.0) * net.jitter_ms;
        out.push((at, p.clone()));
        if rng.unit() < net.duplicate {
            out.push((at + rng.unit() * 30.0, p.clone()));
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Encodes `pcm` (interleaved) in 20 ms frames with the real sender; returns the RTP packets.
fn send(pcm: &[i16], config: &EncoderConfig) -> Vec<Bytes> {
    let mut sender = AudioSender::new(
        0x1234_5678,
        OPUS_PAYLOAD_TYPE,
        config,
        65000,
        u32::MAX - 48_000,
    )
    .unwrap();
    let ids = ExtensionIds::default();
    let mut out = vec![];
    for frame in pcm.chunks_exact(config.channels.frame_len()) {
        let mut buf = BytesMut::new();
        if let Some(rtp) = sender.send(Frame::Pcm(frame)).unwrap() {
            rtp.write(&ids, &mut buf);
            out.push(buf.freeze());
        }
    }
    out
}

/// Receives with 20 ms pulls; returns the PCM, each pull's kind, and the buffer's stats.
fn receive(
    arrivals: Vec<(f64, Bytes)>,
    channels: Channels,
    pulls: usize,
) -> (Vec<i16>, Vec<FrameKind>, JitterStats) {
    let mut jb = JitterBuffer::new(JitterConfig::default(), Decoder::new(channels).unwrap());
    let ids = ExtensionIds::default();
    let t0 = Instant::now();
    let at = |ms: f64| t0 + Duration::from_micros((ms * 1000.0) as u64);
    let mut it = arrivals.into_iter().peekable();
    let (mut pcm, mut kinds) = (vec![], vec![]);
    for k in 0..pulls {
        let now = at(20.0 * k as f64 + 1.0);
        while let Some((ms, raw)) = it.next_if(|a| at(a.0) <= now) {
            let pkt = RtpPacket::parse(raw, &ids).unwrap();
            assert_eq!((pkt.ssrc, pkt.payload_type), (0x1234_5678, 111));
            assert!(pkt.audio_level.is_some());
            jb.insert_rtp(at(ms), &pkt);
        }
        let p = jb.pull(now);
        assert_eq!(p.pcm.len(), channels.frame_len());
        pcm.extend_from_slice(p.pcm);
        kinds.push(p.kind);
    }
    (pcm, kinds, jb.stats())
}

/// The part of the output between the first and the last decoded frame.
fn played(pcm: &[i16], kinds: &[FrameKind], frame_len: usize) -> Vec<i16> {
    let first = kinds.iter().position(|&k| k == FrameKind::Decoded).unwrap();
    let last = kinds
        .iter()
        .rposition(|&k| k == FrameKind::Decoded)
        .unwrap();
    pcm[first * frame_len..(last + 1) * frame_len].to_vec()
}

#[test]
fn a_tone_survives_loss_jitter_reordering_and_duplicates() {
    for (freq, seed) in [(440.0, 1u64), (1000.0, 2), (440.0, 3), (1000.0, 4)] {
        let seconds = 6;
        let tone = sine(freq, 12000.0, 48000, 0, 48000 * seconds);
        let packets = send(&tone, &EncoderConfig::default());
        assert_eq!(packets.len(), 50 * seconds);
        let net = Net {
            loss: 0.10,
            jitter_ms: 40.0,
            duplicate: 0.05,
        };
        let arrivals = network(&packets, 20.0, &net, &mut Rng::new(seed));
        let (pcm, kinds, stats) = receive(arrivals, Channels::Mono, 50 * seconds + 30);
        let out = played(&pcm, &kinds, 960);
        let what = format!("{freq} Hz, seed {seed}, {stats:?}");
        // Five seconds of steady state, after the first half second.
        assert!(
            out.len() >= 48000 * 5,
            "{what}: only {} samples played",
            out.len()
        );
        assert_frequency(&out[24000..24000 + 48000 * 5], 48000, freq, &what);
        let gap = longest_gap_ms(&out, 48000, 0.01);
        assert!(gap <= 60.0, "{what}: a {gap} ms gap");
        // The loss was real and was handled by FEC and concealment, not hidden.
        let sent = packets.len() as u64;
        assert!(stats.lost >= sent / 20 && stats.lost <= sent / 5, "{what}");
        assert!(stats.recovered_samples > 0, "{what}: FEC never used");
        assert!(stats.duplicates > 0, "{what}");
        assert!(stats.late <= sent / 50, "{what}: too many late packets");
        assert!(
            stats.target_delay_ms >= 60.0,
            "{what}: the target ignores the jitter"
        );
        // Concealment filled the losses that FEC could not (libopus often leaves FEC out of a
        // pure tone) and a few waits for late packets: at most 5 % of the stream beyond them.
        assert!(
            stats.concealed_samples <= (stats.lost + sent / 20) * 960,
            "{what}: too much concealment"
        );
    }
}

#[test]
fn a_clean_network_plays_every_packet_with_a_small_delay() {
    let tone = sine(1000.0, 12000.0, 48000, 0, 48000 * 3);
    let packets = send(&tone, &EncoderConfig::default());
    let net = Net {
        loss: 0.0,
        jitter_ms: 1.0,
        duplicate: 0.0,
    };
    let arrivals = network(&packets, 20.0, &net, &mut Rng::new(9));
    let (pcm, kinds, stats) = receive(arrivals, Channels::Mono, 170);
    assert_eq!(
        (stats.lost, stats.late, stats.recovered_samples),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(stats.target_delay_ms <= 45.0, "{stats:?}");
    let out = played(&pcm, &kinds, 960);
    assert_eq!(out.len(), 48000 * 3);
    assert_frequency(&out, 48000, 1000.0, "clean");
    assert_eq!(longest_gap_ms(&out, 48000, 0.01), 0.0);
}

#[test]
fn stereo_keeps_each_channel() {
    let n = 48000 * 4;
    let (l, r) = (
        sine(440.0, 10000.0, 48000, 0, n),
        sine(1000.0, 10000.0, 48000, 0, n),
    );
    let pcm: Vec<i16> = l.iter().zip(&r).flat_map(|(&a, &b)| [a, b]).collect();
    let config = EncoderConfig {
        channels: Channels::Stereo,
        bitrate: 64_000,
        ..Default::default()
    };
    let packets = send(&pcm, &config);
    let net = Net {
        loss: 0.05,
        jitter_ms: 20.0,
        duplicate: 0.0,
    };
    let arrivals = network(&packets, 20.0, &net, &mut Rng::new(5));
    let (out, kinds, _) = receive(arrivals, Channels::Stereo, 230);
    let out = played(&out, &kinds, 1920);
    let (l, r) = (channel(&out, 2, 0), channel(&out, 2, 1));
    assert_frequency(&l[24000..24000 + 48000 * 3], 48000, 440.0, "left");
    assert_frequency(&r[24000..24000 + 48000 * 3], 48000, 1000.0, "right");
}

#[test]
fn opus_frames_of_10_to_120_ms_are_all_played() {
    for frame in [480usize, 960, 1920, 2880, 5760] {
        let mut enc =
            opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Audio).unwrap();
        enc.set_bitrate(opus::Bitrate::Bits(48000)).unwrap();
        let tone = sine(1000.0, 12000.0, 48000, 0, 48000 * 3);
        let ids = ExtensionIds::default();
        let mut packets = vec![];
        let mut buf = [0u8; 4000];
        for (i, chunk) in tone.chunks_exact(frame).enumerate() {
            let n = enc.encode(chunk, &mut buf).unwrap();
            let rtp = groupcall_media::rtp::OutgoingRtp::new(
                7,
                i as u16,
                (i * frame) as u32,
                111,
                &buf[..n],
            );
            let mut b = BytesMut::new();
            rtp.write(&ids, &mut b);
            packets.push(b.freeze());
        }
        let net = Net {
            loss: 0.0,
            jitter_ms: 15.0,
            duplicate: 0.0,
        };
        let frame_ms = frame as f64 / 48.0;
        let arrivals = network(&packets, frame_ms, &net, &mut Rng::new(frame as u64));
        let mut jb = JitterBuffer::new(
            JitterConfig::default(),
            Decoder::new(Channels::Mono).unwrap(),
        );
        let t0 = Instant::now();
        let at = |ms: f64| t0 + Duration::from_micros((ms * 1000.0) as u64);
        let mut it = arrivals.into_iter().peekable();
        let mut out = vec![];
        for k in 0..180 {
            let now = at(20.0 * k as f64 + 1.0);
            while let Some((ms, raw)) = it.next_if(|a| at(a.0) <= now) {
                jb.insert_rtp(at(ms), &RtpPacket::parse(raw, &ids).unwrap());
            }
            out.extend_from_slice(jb.pull(now).pcm);
        }
        let stats = jb.stats();
        assert_eq!((stats.lost, stats.late), (0, 0), "{frame}: {stats:?}");
        let start = out.iter().position(|&s| s.abs() > 1000).unwrap();
        let played = &out[start..start + 48000 * 5 / 2];
        assert_frequency(played, 48000, 1000.0, &format!("{frame}-sample packets"));
        assert_eq!(
            longest_gap_ms(played, 48000, 0.01),
            0.0,
            "{frame}-sample packets"
        );
    }
}

#[test]
fn ten_speakers_mix_into_one_frame() {
    // Each speaker a different tone; the mix holds the loudest and stays in range.
    let mut mixer = Mixer::new(Channels::Mono);
    let mut mixed = vec![];
    for k in 0..50 {
        for s in 0..10 {
            let amp = if s == 3 { 12000.0 } else { 2000.0 };
            let f = sine(300.0 + 100.0 * s as f64, amp, 48000, k * 960, 960);
            mixer.add(&f, 1.0).unwrap();
        }
        mixed.extend_from_slice(mixer.finish());
    }
    assert_frequency(&mixed, 48000, 600.0, "mix of 10");
}
