//! What the transport puts on and reads from RTP/RTCP, checked at the other end of a connected
//! pair on virtual time: header extensions on the answer's ids, the answer's Opus payload type,
//! and receiver reports that count what the link lost (docs/protocol.md §2.2, §5.1).

mod common;

use std::time::Duration;

use groupcall_media::rtp::{
    ExtensionIds, PayloadKind, URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_TRANSPORT_CC,
};
use groupcall_media::sim::Sim;
use groupcall_media::transport::rtcp;
use groupcall_media::{
    AudioLevel, Event, OutgoingRtp, RtpPacket, ServerAnswer, Transport, TransportConfig,
};
use serde_json::{json, Value};

fn rtp_of(events: &[Event]) -> Vec<&RtpPacket> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Rtp(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn receiver_reports(events: &[Event]) -> Vec<rtcp::receiver_report::ReceiverReport> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Rtcp(pkts) => Some(pkts),
            _ => None,
        })
        .flatten()
        .filter_map(|p| {
            p.as_any()
                .downcast_ref::<rtcp::receiver_report::ReceiverReport>()
                .cloned()
        })
        .collect()
}

fn set_hdrexts(answer: &mut Value, exts: &[(u8, &str)]) {
    answer["audio"]["rtp-hdrexts"] = exts
        .iter()
        .map(|(id, uri)| json!({"id": id, "uri": uri}))
        .collect();
}

fn voiced(level: u8) -> AudioLevel {
    AudioLevel { level, voice: true }
}

fn run(sim: &mut Sim, p: &mut common::Pair, ev: &mut [Vec<Event>; 2], d: Duration) {
    sim.run_for(&mut [&mut p.client, &mut p.server], ev, d);
}

#[test]
fn sent_packets_carry_abs_send_time_and_one_transport_sequence_on_the_answers_ids() {
    let (mut sim, mut p, mut ev) =
        common::connected_pair_answering(3, TransportConfig::server(), |a| {
            set_hdrexts(
                a,
                &[
                    (7, URI_AUDIO_LEVEL),
                    (5, URI_ABS_SEND_TIME),
                    (9, URI_TRANSPORT_CC),
                ],
            )
        });
    assert_eq!(
        p.client.rtp_params().extensions,
        ExtensionIds {
            audio_level: Some(7),
            abs_send_time: Some(5),
            transport_cc: Some(9),
        }
    );
    let own = p.client_identity.audio_ssrc;
    let other = own ^ 0x5555_0000;
    ev[1].clear();
    // Two sources on one transport, 20 ms apart; the values the packets come with are
    // ignored: the transport stamps its own.
    for i in 0..10u16 {
        let ssrc = if i % 2 == 0 { own } else { other };
        let pkt = OutgoingRtp {
            audio_level: Some(voiced(20)),
            abs_send_time: Some(0xAB_CDEF),
            transport_seq: Some(0xEEEE),
            ..OutgoingRtp::new(ssrc, 500 + i, 960 * i as u32, 111, b"opus")
        };
        p.client.send_rtp(sim.now, &pkt).unwrap();
        run(&mut sim, &mut p, &mut ev, Duration::from_millis(20));
    }
    let got = rtp_of(&ev[1]);
    assert_eq!(got.len(), 10);
    let seqs: Vec<u16> = got.iter().map(|r| r.transport_seq.unwrap()).collect();
    for w in seqs.windows(2) {
        assert_eq!(
            w[1],
            w[0].wrapping_add(1),
            "one counter across SSRCs: {seqs:?}"
        );
    }
    assert_eq!(got[0].ssrc, own);
    assert_eq!(got[1].ssrc, other);
    let abs: Vec<u32> = got.iter().map(|r| r.abs_send_time.unwrap()).collect();
    for w in abs.windows(2) {
        // 20 ms in 6.18 fixed point is 5242.88 units.
        let d = w[1].wrapping_sub(w[0]) & 0xff_ffff;
        assert!(
            (5242..=5243).contains(&d),
            "abs-send-time step {d}: {abs:?}"
        );
    }
    assert!(got.iter().all(|r| r.audio_level == Some(voiced(20))));
    // Read with Telegram's fixed ids, the same bytes carry none of the three: the ids really
    // are 7, 5 and 9.
    let fixed = RtpPacket::parse(got[0].raw.clone(), &ExtensionIds::TELEGRAM).unwrap();
    assert_eq!(
        (fixed.audio_level, fixed.abs_send_time, fixed.transport_seq),
        (None, None, None)
    );

    // The other direction uses the same ids and its own counter.
    ev[0].clear();
    for i in 0..3u16 {
        let pkt = OutgoingRtp::new(0x0102_0304, i, 0, 111, b"x");
        p.server.send_rtp(sim.now, &pkt).unwrap();
    }
    run(&mut sim, &mut p, &mut ev, Duration::from_millis(20));
    let down: Vec<Option<u16>> = rtp_of(&ev[0]).iter().map(|r| r.transport_seq).collect();
    assert_eq!(down.len(), 3);
    assert!(down.iter().all(Option::is_some));
    assert_eq!(down[2].unwrap(), down[0].unwrap().wrapping_add(2));
}

#[test]
fn an_extension_the_answer_does_not_list_is_not_sent() {
    let (mut sim, mut p, mut ev) =
        common::connected_pair_answering(4, TransportConfig::server(), |a| {
            set_hdrexts(a, &[(1, URI_AUDIO_LEVEL), (3, URI_TRANSPORT_CC)])
        });
    ev[1].clear();
    let pkt = OutgoingRtp {
        audio_level: Some(voiced(40)),
        ..OutgoingRtp::new(p.client_identity.audio_ssrc, 1, 0, 111, b"opus")
    };
    p.client.send_rtp(sim.now, &pkt).unwrap();
    run(&mut sim, &mut p, &mut ev, Duration::from_millis(20));
    let got = rtp_of(&ev[1]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].audio_level, Some(voiced(40)));
    assert!(got[0].transport_seq.is_some());
    assert_eq!(got[0].abs_send_time, None);
    // Not even on Telegram's usual id: the block holds audio level (2 bytes) and the sequence
    // number (3 bytes), two words, and nothing on id 2.
    let raw = &got[0].raw;
    assert_eq!(&raw[12..16], &[0xBE, 0xDE, 0, 2]);
    let fixed = RtpPacket::parse(raw.clone(), &ExtensionIds::TELEGRAM).unwrap();
    assert_eq!(fixed.abs_send_time, None);

    // No extension listed at all for the known URIs: a packet without any header extension.
    let (mut sim, mut p, mut ev) =
        common::connected_pair_answering(5, TransportConfig::server(), |a| {
            set_hdrexts(a, &[(13, "urn:3gpp:video-orientation")])
        });
    ev[1].clear();
    p.client.send_rtp(sim.now, &pkt).unwrap();
    run(&mut sim, &mut p, &mut ev, Duration::from_millis(20));
    let got = rtp_of(&ev[1]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].raw[0] & 0x10, 0, "no extension bit");
    assert_eq!(got[0].payload.as_ref(), b"opus");
}

#[test]
fn the_answers_opus_payload_type_is_sent_and_accepted() {
    let (mut sim, mut p, mut ev) =
        common::connected_pair_answering(6, TransportConfig::server(), |a| {
            a["audio"]["payload-types"] = json!([
                {"id": 126, "name": "telephone-event", "clockrate": 8000, "channels": 1},
                {"id": 109, "name": "opus", "clockrate": 48000, "channels": 2},
            ]);
        });
    assert_eq!(p.client.audio_payload_type(), 109);
    let params = p.client.rtp_params();
    assert_eq!(params.kind(109), PayloadKind::Opus);
    assert_eq!(
        params.kind(111),
        PayloadKind::Unknown,
        "111 is not hard-coded"
    );
    assert_eq!(params.kind(126), PayloadKind::OtherAudio);
    assert_eq!(params.kind(100), PayloadKind::Video);

    ev[0].clear();
    ev[1].clear();
    let up = OutgoingRtp::new(
        p.client_identity.audio_ssrc,
        1,
        0,
        p.client.audio_payload_type(),
        b"up",
    );
    p.client.send_rtp(sim.now, &up).unwrap();
    for (seq, pt) in [(1u16, 109u8), (2, 111), (3, 100)] {
        p.server
            .send_rtp(sim.now, &OutgoingRtp::new(0x0A0B_0C0D, seq, 0, pt, b"down"))
            .unwrap();
    }
    run(&mut sim, &mut p, &mut ev, Duration::from_millis(20));
    let at_server = rtp_of(&ev[1]);
    assert_eq!(at_server.len(), 1);
    assert_eq!(
        (at_server[0].payload_type, at_server[0].kind),
        (109, PayloadKind::Opus)
    );
    let at_client: Vec<(u8, PayloadKind)> = rtp_of(&ev[0])
        .iter()
        .map(|r| (r.payload_type, r.kind))
        .collect();
    assert_eq!(
        at_client,
        [
            (109, PayloadKind::Opus),
            (111, PayloadKind::Unknown),
            (100, PayloadKind::Video)
        ]
    );
    assert_eq!(p.client.stats().ssrcs[&0x0A0B_0C0D].clock_rate, 48_000);
}

fn rtc_answer(edit: impl FnOnce(&mut Value)) -> groupcall_media::RtcAnswer {
    let creds = groupcall_media::IceCredentials::generate_with_len(16, 24);
    let id = groupcall_media::LocalIdentity::generate().unwrap();
    let mut v: Value = serde_json::from_str(&common::answer_json(
        &creds,
        &id,
        "10.0.0.2:1".parse().unwrap(),
    ))
    .unwrap();
    edit(&mut v);
    ServerAnswer::from_value(&v).unwrap().into_rtc().unwrap()
}

#[test]
fn payload_types_fall_back_to_111_only_when_the_answer_has_none() {
    // No audio section, or one without payload types: the official client's fixed numbering.
    for edit in [
        Box::new(|a: &mut Value| {
            a.as_object_mut().unwrap().remove("audio");
        }) as Box<dyn FnOnce(&mut Value)>,
        Box::new(|a: &mut Value| {
            a["audio"].as_object_mut().unwrap().remove("payload-types");
        }),
    ] {
        let params = rtc_answer(edit).rtp_params().unwrap();
        assert_eq!(params.opus_payload_type(), 111);
        assert_eq!(params.kind(111), PayloadKind::Opus);
    }
    // Without extensions listed, Telegram's fixed ids.
    let params = rtc_answer(|a| {
        a["audio"].as_object_mut().unwrap().remove("rtp-hdrexts");
    })
    .rtp_params()
    .unwrap();
    assert_eq!(params.extensions, ExtensionIds::TELEGRAM);
    // Payload types without Opus: nothing this side could send, said so.
    let err = rtc_answer(|a| {
        a["audio"]["payload-types"] = json!([{"id": 0, "name": "PCMU", "clockrate": 8000}]);
    })
    .rtp_params()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("audio.payload-types") && err.contains("opus"),
        "{err}"
    );
}

/// Takes every datagram the server has queued and hands it to the link, except the RTP packets
/// `drop` picks (by their order among the RTP packets).
fn deliver_from_server(sim: &mut Sim, server: &mut Transport, mut drop: impl FnMut() -> bool) {
    let from = server.local_addr();
    while let Some(t) = server.poll_transmit() {
        let is_rtp = t.contents.first().is_some_and(|b| b & 0xc0 == 0x80)
            && !(200..=206).contains(&t.contents[1]);
        if is_rtp && drop() {
            continue;
        }
        sim.net.send(sim.now, from, t);
    }
}

#[test]
fn receiver_reports_count_what_the_link_dropped() {
    let (mut sim, mut p, mut ev) = common::connected_pair(7, TransportConfig::server());
    assert_eq!(p.client.stats().sent.rtcp, 0, "no report before any media");
    const SSRC: u32 = 0x0BAD_CAFE;
    const N: u16 = 50;
    // K = 5 lost on the link, none of them the last (a receiver cannot see a lost tail).
    let dropped = [3u16, 10, 11, 27, 40];
    // The whole stream within 50 ms of connecting: the first report, due 0.5..1.5 s after
    // connecting, covers all of it.
    for i in 0..N {
        p.server
            .send_rtp(
                sim.now,
                &OutgoingRtp::new(SSRC, 1000 + i, 960 * i as u32, 111, b"voice"),
            )
            .unwrap();
        deliver_from_server(&mut sim, &mut p.server, || dropped.contains(&i));
        run(&mut sim, &mut p, &mut ev, Duration::from_millis(1));
    }
    let st = &p.client.stats().ssrcs[&SSRC];
    assert_eq!((st.packets, st.lost()), (45, 5));
    ev[1].clear();
    run(&mut sim, &mut p, &mut ev, Duration::from_millis(1600));
    let rrs = receiver_reports(&ev[1]);
    // Later timers find nothing heard since: one report.
    assert_eq!(rrs.len(), 1, "{rrs:?}");
    let rr = &rrs[0];
    // The client sent no RTP: it reports as a receive-only side.
    assert_eq!(rr.ssrc, 1);
    assert_eq!(rr.reports.len(), 1);
    let b = &rr.reports[0];
    assert_eq!(b.ssrc, SSRC);
    assert_eq!(b.total_lost, 5);
    assert_eq!(b.fraction_lost, (5 * 256 / 50) as u8);
    assert_eq!(b.last_sequence_number, 1000 + N as u32 - 1);
    assert_eq!(b.last_sender_report, 0, "no sender report yet");
    assert_eq!(b.delay, 0);

    // A sender report, then a clean stretch: fraction 0, cumulative loss kept, the LSR echoed
    // with the delay since it arrived.
    let sr: Box<dyn rtcp::packet::Packet> = Box::new(rtcp::sender_report::SenderReport {
        ssrc: SSRC,
        ntp_time: 0x1122_3344_5566_7788,
        ..Default::default()
    });
    p.server.send_rtcp(&[sr]).unwrap();
    for i in N..N + 20 {
        p.server
            .send_rtp(
                sim.now,
                &OutgoingRtp::new(SSRC, 1000 + i, 960 * i as u32, 111, b"voice"),
            )
            .unwrap();
    }
    ev[1].clear();
    run(&mut sim, &mut p, &mut ev, Duration::from_millis(1600));
    let rrs = receiver_reports(&ev[1]);
    assert_eq!(rrs.len(), 1, "{rrs:?}");
    let b = &rrs[0].reports[0];
    assert_eq!((b.fraction_lost, b.total_lost), (0, 5));
    assert_eq!(b.last_sequence_number, 1000 + N as u32 + 19);
    assert_eq!(b.last_sender_report, 0x3344_5566);
    // The report came at most 1.5 s after the SR (the longest interval), in 1/65536 s.
    assert!(b.delay > 0 && b.delay <= 65536 * 3 / 2, "DLSR {}", b.delay);
}

#[test]
fn receiver_reports_hold_at_most_31_sources() {
    let (mut sim, mut p, mut ev) = common::connected_pair(9, TransportConfig::server());
    for ssrc in 1..=40u32 {
        p.server
            .send_rtp(sim.now, &OutgoingRtp::new(1000 + ssrc, 1, 0, 111, b"v"))
            .unwrap();
    }
    ev[1].clear();
    run(&mut sim, &mut p, &mut ev, Duration::from_millis(1600));
    let rrs = receiver_reports(&ev[1]);
    assert!(!rrs.is_empty());
    assert_eq!(rrs.len(), 1);
    assert_eq!(rrs[0].reports.len(), 31);
}

#[test]
fn a_forwarded_packet_carries_this_hops_transport_sequence() {
    let (mut sim, mut p, mut ev) = common::connected_pair(10, TransportConfig::server());
    // A packet as another participant sent it, with its own sequence number 0x7777.
    let mut raw = bytes::BytesMut::new();
    OutgoingRtp {
        audio_level: Some(voiced(5)),
        abs_send_time: Some(1),
        transport_seq: Some(0x7777),
        ..OutgoingRtp::new(42, 9, 0, 111, b"fwd")
    }
    .write(&ExtensionIds::TELEGRAM, &mut raw);
    ev[0].clear();
    p.server.send_rtp_raw(sim.now, &raw).unwrap();
    p.server
        .send_rtp(sim.now, &OutgoingRtp::new(43, 1, 0, 111, b"own"))
        .unwrap();
    run(&mut sim, &mut p, &mut ev, Duration::from_millis(20));
    let got = rtp_of(&ev[0]);
    let fwd = got.iter().find(|r| r.ssrc == 42).unwrap();
    let own = got.iter().find(|r| r.ssrc == 43).unwrap();
    assert_ne!(fwd.transport_seq, Some(0x7777));
    assert_eq!(
        own.transport_seq.unwrap(),
        fwd.transport_seq.unwrap().wrapping_add(1),
        "one counter for forwarded and own packets"
    );
    assert_eq!(fwd.audio_level, Some(voiced(5)), "the rest is kept");
    assert_eq!(fwd.payload.as_ref(), b"fwd");
}

/// A participant that leaves audio unnumbered (`audio_transport_cc: false`, as the engine's
/// calls do) draws no transport-cc feedback while it sends only audio, and its video is numbered
/// on one counter without gaps, so the video estimate sees every packet it sent.
#[test]
fn unnumbered_audio_draws_no_feedback_and_video_keeps_a_gapless_count() {
    use rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
    let client = TransportConfig {
        audio_transport_cc: false,
        ..TransportConfig::default()
    };
    let (mut sim, mut p, _) =
        common::connected_pair_configured(13, client, TransportConfig::server(), |_| {});
    let feedbacks = |ev: &[Event]| -> Vec<TransportLayerCc> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Rtcp(pkts) => Some(pkts),
                _ => None,
            })
            .flatten()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerCc>().cloned())
            .collect()
    };
    let audio = |i: u16| OutgoingRtp::new(0xA0D1, 100 + i, 960 * u32::from(i), 111, b"voice");
    let mut ev: [Vec<Event>; 2] = Default::default();
    for i in 0..25u16 {
        p.client.send_rtp(sim.now, &audio(i)).unwrap();
        run(&mut sim, &mut p, &mut ev, Duration::from_millis(20));
    }
    run(&mut sim, &mut p, &mut ev, Duration::from_millis(300));
    let got = rtp_of(&ev[1]);
    assert_eq!(got.len(), 25, "the audio arrived");
    assert!(got.iter().all(|r| r.transport_seq.is_none()));
    assert!(feedbacks(&ev[0]).is_empty(), "no feedback for audio alone");

    ev = Default::default();
    for i in 0..10u16 {
        p.client.send_rtp(sim.now, &audio(25 + i)).unwrap();
        let video = OutgoingRtp::new(0xB1D0, 7 + i, 3000 * u32::from(i), 100, b"frame");
        p.client.send_rtp(sim.now, &video).unwrap();
        run(&mut sim, &mut p, &mut ev, Duration::from_millis(20));
    }
    run(&mut sim, &mut p, &mut ev, Duration::from_millis(300));
    let got = rtp_of(&ev[1]);
    let video: Vec<u16> = got
        .iter()
        .filter(|r| r.ssrc == 0xB1D0)
        .map(|r| r.transport_seq.expect("video is numbered"))
        .collect();
    assert_eq!(video.len(), 10);
    assert!(
        video.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{video:?}"
    );
    assert!(got
        .iter()
        .filter(|r| r.ssrc == 0xA0D1)
        .all(|r| r.transport_seq.is_none()));
    let reported: Vec<u16> = feedbacks(&ev[0])
        .iter()
        .flat_map(groupcall_media::twcc::arrivals)
        .filter(|(_, t)| t.is_some())
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(reported, video, "feedback reports the video, all of it");
}

/// Transport-cc feedback as the server sends it (docs/protocol.md §5.1): every packet the
/// client numbered is reported, received with its spacing or lost, so a libwebrtc sender's
/// bandwidth estimate can follow the link.
#[test]
fn the_server_reports_arrivals_and_losses_in_transport_cc_feedback() {
    use rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
    let (mut sim, mut p, mut ev) = common::connected_pair(9, TransportConfig::server());
    const N: u16 = 30;
    let dropped = [7u16, 8, 20];
    let from = p.client.local_addr();
    for i in 0..N {
        p.client
            .send_rtp(
                sim.now,
                &OutgoingRtp::new(0x5EED, 100 + i, 960 * i as u32, 111, b"voice"),
            )
            .unwrap();
        while let Some(t) = p.client.poll_transmit() {
            let is_rtp = t.contents.first().is_some_and(|b| b & 0xc0 == 0x80)
                && !(200..=206).contains(&t.contents[1]);
            if !(is_rtp && dropped.contains(&i)) {
                sim.net.send(sim.now, from, t);
            }
        }
        run(&mut sim, &mut p, &mut ev, Duration::from_millis(20));
    }
    run(&mut sim, &mut p, &mut ev, Duration::from_millis(300));
    let feedback: Vec<TransportLayerCc> = ev[0]
        .iter()
        .filter_map(|e| match e {
            Event::Rtcp(pkts) => Some(pkts),
            _ => None,
        })
        .flatten()
        .filter_map(|p| p.as_any().downcast_ref::<TransportLayerCc>().cloned())
        .collect();
    assert!(
        feedback.len() >= 5,
        "one feedback per 100 ms of media: {}",
        feedback.len()
    );
    // Statuses in order of transport-wide sequence number, over all feedbacks, and the
    // spacing of arrivals within each feedback.
    let mut received = Vec::new();
    let mut deltas = Vec::new();
    for fb in &feedback {
        let one = groupcall_media::twcc::arrivals(fb);
        let times: Vec<i64> = one.iter().filter_map(|(_, t)| *t).collect();
        deltas.extend(times.windows(2).map(|w| w[1] - w[0]));
        received.extend(one.iter().map(|(seq, t)| (*seq, t.is_some())));
    }
    // The client's transport-wide numbers follow its send order (it sent nothing else).
    let first = received[0].0;
    let lost: Vec<u16> = received
        .iter()
        .filter(|r| !r.1)
        .map(|r| r.0.wrapping_sub(first))
        .collect();
    assert_eq!(lost, dropped);
    assert_eq!(
        received.len(),
        N as usize,
        "every packet reported once: {received:?}"
    );
    // Within one feedback, packets sent 20 ms apart (40 or 60 ms across lost ones) arrived so.
    assert!(
        deltas.iter().all(|d| [20_000, 40_000, 60_000].contains(d)),
        "{deltas:?}"
    );
    assert!(deltas.iter().filter(|d| **d == 20_000).count() >= 15);
}
