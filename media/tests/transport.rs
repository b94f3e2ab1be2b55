//! The transport end to end on virtual time: a participant (full ICE agent, DTLS server) against
//! a strict ICE-lite server side (DTLS client), both built from real payload and answer JSON.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use groupcall_media::sim::{LinkConfig, Sim};
use groupcall_media::srtp::SrtpProfile;
use groupcall_media::transport::rtcp;
use groupcall_media::{
    AudioLevel, Event, FailureCause, OutgoingRtp, State, Transport, TransportConfig,
};

const C: &str = "10.0.0.1:5000";
const S: &str = "10.0.0.2:32000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn connected(ts: &[&mut Transport], _: &[Vec<Event>]) -> bool {
    ts.iter().all(|t| t.is_connected())
}

fn any_failed(ts: &[&mut Transport]) -> bool {
    ts.iter().any(|t| matches!(t.state(), State::Failed(_)))
}

fn rtp_of(events: &[Event]) -> Vec<&groupcall_media::RtpPacket> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Rtp(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn connect(sim: &mut Sim, p: &mut common::Pair, ev: &mut [Vec<Event>; 2]) {
    let deadline = sim.now + Duration::from_secs(10);
    let ok = sim.run_until(
        &mut [&mut p.client, &mut p.server],
        ev,
        deadline,
        |ts, e| connected(ts, e) || any_failed(ts),
    );
    assert!(
        ok,
        "no progress: client {} server {}",
        p.client.state(),
        p.server.state()
    );
    assert!(p.client.is_connected(), "client {}", p.client.state());
    assert!(p.server.is_connected(), "server {}", p.server.state());
}

#[test]
fn connects_and_decrypts_ssrcs_the_client_never_heard_of() {
    let (mut sim, mut p, mut ev) = common::connected_pair(1, TransportConfig::server());

    // The state sequence a person would expect.
    let states: Vec<State> = ev[0]
        .iter()
        .filter_map(|e| match e {
            Event::StateChanged(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [State::Checking, State::Handshaking, State::Connected]
    );
    // The lite side answered checks and never sent one.
    assert_eq!(p.server.stats().stun_requests_sent, 0);
    assert!(p.server.stats().sent.stun > 0);
    assert!(p.client.stats().stun_requests_sent > 0);
    assert_eq!(p.client.remote_addr(), Some(addr(S)));
    assert_eq!(p.server.remote_addr(), Some(addr(C)));

    // The server forwards three speakers the client was never told about; the client speaks.
    let speakers = [0x1111_0001u32, 0x8000_0002, 0xFFFF_FFFF];
    for seq in 0..20u16 {
        for (i, &ssrc) in speakers.iter().enumerate() {
            let payload = [i as u8; 40];
            let pkt = OutgoingRtp {
                audio_level: Some(AudioLevel {
                    level: 10 + i as u8,
                    voice: true,
                }),
                transport_seq: Some(seq),
                ..OutgoingRtp::new(ssrc, 100 + seq, 960 * seq as u32, 111, &payload)
            };
            p.server.send_rtp(sim.now, &pkt).unwrap();
        }
        p.client
            .send_rtp(
                sim.now,
                &OutgoingRtp::new(
                    p.client_identity.audio_ssrc,
                    seq,
                    960 * seq as u32,
                    111,
                    b"me",
                ),
            )
            .unwrap();
    }
    let sr: Box<dyn rtcp::packet::Packet> = Box::new(rtcp::sender_report::SenderReport {
        ssrc: p.client_identity.audio_ssrc,
        packet_count: 20,
        ..Default::default()
    });
    p.client.send_rtcp(&[sr]).unwrap();
    sim.run_for(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        Duration::from_millis(100),
    );

    let got = rtp_of(&ev[0]);
    assert_eq!(got.len(), 60);
    for (i, &ssrc) in speakers.iter().enumerate() {
        let mine: Vec<_> = got.iter().filter(|p| p.ssrc == ssrc).collect();
        assert_eq!(mine.len(), 20, "ssrc {ssrc:#x}");
        assert!(mine.iter().all(|p| p.payload.as_ref() == [i as u8; 40]));
        assert_eq!(
            mine[0].audio_level,
            Some(AudioLevel {
                level: 10 + i as u8,
                voice: true
            })
        );
        let st = &p.client.stats().ssrcs[&ssrc];
        assert_eq!((st.packets, st.lost()), (20, 0));
    }
    let at_server = rtp_of(&ev[1]);
    assert_eq!(at_server.len(), 20);
    assert!(at_server
        .iter()
        .all(|x| x.ssrc == p.client_identity.audio_ssrc && x.payload.as_ref() == b"me"));
    let rtcp_in = ev[1].iter().filter(|e| matches!(e, Event::Rtcp(_))).count();
    assert_eq!(rtcp_in, 1);
    assert_eq!(p.client.stats().dropped(), 0);
    assert_eq!(p.server.stats().dropped(), 0);
}

#[test]
fn tampered_fingerprint_fails_and_no_media_is_accepted() {
    let mut sim = Sim::new(2);
    let wrong = "AB:".repeat(31) + "AB";
    let mut p = common::pair(
        addr(C),
        addr(S),
        TransportConfig::default(),
        TransportConfig::server(),
        |a| {
            let v: serde_json::Value = serde_json::from_str(&a).unwrap();
            let real = v["transport"]["fingerprints"][0]["fingerprint"]
                .as_str()
                .unwrap()
                .to_owned();
            a.replace(&real, &wrong)
        },
        None,
        sim.now,
    );
    let mut ev: [Vec<Event>; 2] = Default::default();
    let deadline = sim.now + Duration::from_secs(15);
    sim.run_until(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        deadline,
        |ts, _| any_failed(ts),
    );
    match p.client.state() {
        State::Failed(FailureCause::FingerprintMismatch { expected, received }) => {
            assert_eq!(expected, &wrong);
            assert_ne!(received, &wrong);
        }
        s => panic!("client should refuse the impostor, is {s}"),
    }
    // Whatever the server sends now, the client accepts nothing.
    let _ = p
        .server
        .send_rtp(sim.now, &OutgoingRtp::new(7, 1, 1, 111, b"x"));
    sim.run_for(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        Duration::from_secs(1),
    );
    assert!(rtp_of(&ev[0]).is_empty());
    assert!(!ev[0].iter().any(|e| matches!(e, Event::Connected { .. })));
    assert!(p
        .client
        .send_rtp(sim.now, &OutgoingRtp::new(7, 1, 1, 111, b"x"))
        .is_err());
}

#[test]
fn client_whose_certificate_does_not_match_its_payload_is_refused_by_the_server() {
    let mut sim = Sim::new(3);
    let other = groupcall_media::LocalIdentity::generate().unwrap();
    let mut p = common::pair(
        addr(C),
        addr(S),
        TransportConfig::default(),
        TransportConfig::server(),
        |a| a,
        Some(other),
        sim.now,
    );
    let mut ev: [Vec<Event>; 2] = Default::default();
    let deadline = sim.now + Duration::from_secs(15);
    sim.run_until(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        deadline,
        |ts, _| any_failed(ts),
    );
    assert!(
        matches!(
            p.server.state(),
            State::Failed(FailureCause::FingerprintMismatch { .. })
        ),
        "server is {}",
        p.server.state()
    );
    assert!(!p.client.is_connected());
    assert!(rtp_of(&ev[1]).is_empty());
}

#[test]
fn each_srtp_profile_negotiates_and_carries_rtp_both_ways() {
    for (i, profile) in SrtpProfile::ALL.into_iter().enumerate() {
        let mut sim = Sim::new(10 + i as u64);
        // The server accepts only this profile; the client offers all three.
        let server_cfg = TransportConfig {
            srtp_profiles: vec![profile],
            ..TransportConfig::server()
        };
        let mut p = common::pair(
            addr(C),
            addr(S),
            TransportConfig::default(),
            server_cfg,
            |a| a,
            None,
            sim.now,
        );
        let mut ev: [Vec<Event>; 2] = Default::default();
        connect(&mut sim, &mut p, &mut ev);
        assert_eq!(p.client.srtp_profile(), Some(profile));
        assert_eq!(p.server.srtp_profile(), Some(profile));
        for seq in 0..5 {
            p.client
                .send_rtp(sim.now, &OutgoingRtp::new(1, seq, 0, 111, b"up"))
                .unwrap();
            p.server
                .send_rtp(sim.now, &OutgoingRtp::new(2, seq, 0, 111, b"down"))
                .unwrap();
        }
        sim.run_for(
            &mut [&mut p.client, &mut p.server],
            &mut ev,
            Duration::from_millis(50),
        );
        assert_eq!(
            rtp_of(&ev[0])
                .iter()
                .filter(|x| x.payload.as_ref() == b"down")
                .count(),
            5,
            "{profile}"
        );
        assert_eq!(
            rtp_of(&ev[1])
                .iter()
                .filter(|x| x.payload.as_ref() == b"up")
                .count(),
            5,
            "{profile}"
        );
    }
}

#[test]
fn a_sender_report_arrives_parsed_with_its_counts_and_ntp_time() {
    let (mut sim, mut p, mut ev) = common::connected_pair(77, TransportConfig::server());
    let wallclock = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
    let info = groupcall_media::SenderInfo {
        ssrc: 4242,
        rtp_time: 960_000,
        packets: 250,
        octets: 20_000,
    };
    p.client.send_sender_report(&info, wallclock).unwrap();
    sim.run_for(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        Duration::from_millis(50),
    );
    let reports: Vec<_> = ev[1]
        .iter()
        .filter_map(|e| match e {
            Event::Rtcp(pkts) => Some(pkts),
            _ => None,
        })
        .flatten()
        .filter_map(|p| {
            p.as_any()
                .downcast_ref::<groupcall_media::rtcp::sender_report::SenderReport>()
        })
        .collect();
    assert_eq!(reports.len(), 1, "{:?}", ev[1]);
    let sr = reports[0];
    assert_eq!(
        (sr.ssrc, sr.rtp_time, sr.packet_count, sr.octet_count),
        (4242, 960_000, 250, 20_000)
    );
    // 1700000000.5 s after 1970 is 3908988800.5 s after 1900.
    assert_eq!(sr.ntp_time >> 32, 3_908_988_800);
    assert_eq!(sr.ntp_time & 0xffff_ffff, 1 << 31);
}

#[test]
fn replayed_srtp_is_dropped_and_counted() {
    let (sim, mut p, _) = common::connected_pair(4, TransportConfig::server());
    p.server
        .send_rtp(sim.now, &OutgoingRtp::new(9, 1, 0, 111, b"once"))
        .unwrap();
    let t = p.server.poll_transmit().unwrap();
    let now = sim.now;
    p.client.handle_datagram(now, addr(S), &t.contents);
    p.client.handle_datagram(now, addr(S), &t.contents);
    p.client.handle_datagram(now, addr(S), &t.contents);
    let mut n = 0;
    while let Some(e) = p.client.poll_event() {
        n += matches!(e, Event::Rtp(_)) as usize;
    }
    assert_eq!(n, 1);
    assert_eq!(p.client.stats().replays, 2);
}

#[test]
fn media_from_an_unvalidated_address_is_dropped() {
    let (sim, mut p, _) = common::connected_pair(5, TransportConfig::server());
    p.server
        .send_rtp(sim.now, &OutgoingRtp::new(9, 1, 0, 111, b"spoof"))
        .unwrap();
    let t = p.server.poll_transmit().unwrap();
    p.client
        .handle_datagram(sim.now, addr("10.9.9.9:1"), &t.contents);
    assert!(p.client.poll_event().is_none());
    assert_eq!(p.client.stats().unvalidated, 1);
}

#[test]
fn silence_gives_disconnected_then_failed_with_the_configured_timeouts() {
    let mut sim = Sim::new(6);
    let mut cfg = TransportConfig::default();
    cfg.ice_timeouts.disconnected = Duration::from_secs(3);
    cfg.ice_timeouts.failed = Duration::from_secs(8);
    let mut p = common::pair(
        addr(C),
        addr(S),
        cfg,
        TransportConfig::server(),
        |a| a,
        None,
        sim.now,
    );
    let mut ev: [Vec<Event>; 2] = Default::default();
    connect(&mut sim, &mut p, &mut ev);
    // Keepalives hold the connection for a while.
    sim.run_for(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        Duration::from_secs(20),
    );
    assert!(p.client.is_connected(), "{}", p.client.state());
    assert!(p.server.is_connected(), "{}", p.server.state());

    // The server vanishes.
    sim.net.blackholed.insert(addr(S));
    let t0 = sim.now;
    let mut disconnected_at = None;
    let deadline = sim.now + Duration::from_secs(60);
    sim.run_until(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        deadline,
        |ts, _| {
            if disconnected_at.is_none() && *ts[0].state() == State::Disconnected {
                disconnected_at = Some(());
            }
            matches!(ts[0].state(), State::Failed(_))
        },
    );
    let failed_after = sim.now - t0;
    assert!(disconnected_at.is_some(), "never reported disconnected");
    assert!(
        matches!(p.client.state(), State::Failed(FailureCause::Timeout)),
        "{}",
        p.client.state()
    );
    assert!(
        failed_after >= Duration::from_secs(8) && failed_after < Duration::from_secs(20),
        "{failed_after:?}"
    );
}

#[test]
fn lite_side_fails_after_30_s_without_checks() {
    let (mut sim, mut p, mut ev) = common::connected_pair(7, TransportConfig::server());
    sim.net.blackholed.insert(addr(C));
    let t0 = sim.now;
    let deadline = sim.now + Duration::from_secs(60);
    sim.run_until(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        deadline,
        |ts, _| matches!(ts[1].state(), State::Failed(_)),
    );
    let after = sim.now - t0;
    assert!(
        matches!(p.server.state(), State::Failed(FailureCause::Timeout)),
        "{}",
        p.server.state()
    );
    assert!(
        after >= Duration::from_secs(30) && after < Duration::from_secs(33),
        "{after:?}"
    );
}

#[test]
fn connects_through_loss_delay_and_reordering() {
    // rtc-dtls puts every handshake record in its own datagram, so a flight of five records
    // crosses a 10% lossy link whole only 59% of the time, and retransmissions back off
    // exponentially: give the handshake the time a real client would.
    let lossy = |base: TransportConfig| TransportConfig {
        handshake_timeout: Duration::from_secs(30),
        ..base
    };
    for seed in 0..5 {
        let mut sim = Sim::new(100 + seed);
        sim.net.link = LinkConfig {
            loss: 0.1,
            duplicate: 0.05,
            delay: Duration::from_millis(30),
            jitter: Duration::from_millis(40),
        };
        let mut p = common::pair(
            addr(C),
            addr(S),
            lossy(TransportConfig::default()),
            lossy(TransportConfig::server()),
            |a| a,
            None,
            sim.now,
        );
        let mut ev: [Vec<Event>; 2] = Default::default();
        let deadline = sim.now + Duration::from_secs(30);
        let ok = sim.run_until(
            &mut [&mut p.client, &mut p.server],
            &mut ev,
            deadline,
            connected,
        );
        assert!(
            ok,
            "seed {seed}: client {} server {}",
            p.client.state(),
            p.server.state()
        );
        // Paced as audio is, one packet per 20 ms.
        for seq in 0..200 {
            p.server
                .send_rtp(
                    sim.now,
                    &OutgoingRtp::new(5, seq, seq as u32 * 960, 111, b"x"),
                )
                .unwrap();
            sim.run_for(
                &mut [&mut p.client, &mut p.server],
                &mut ev,
                Duration::from_millis(20),
            );
        }
        sim.run_for(
            &mut [&mut p.client, &mut p.server],
            &mut ev,
            Duration::from_millis(200),
        );
        let st = &p.client.stats().ssrcs[&5];
        // About 10% lost; duplicates are replays and dropped; reordering shows as jitter.
        assert!(
            st.packets > 160 && st.packets < 195,
            "seed {seed}: {}",
            st.packets
        );
        assert_eq!(st.lost(), st.expected() - st.packets);
        assert!(st.jitter_ms() > 1.0, "jitter {}", st.jitter_ms());
        assert!(p.client.stats().replays > 0);
    }
}

#[test]
fn close_stops_everything() {
    let (mut sim, mut p, mut ev) = common::connected_pair(9, TransportConfig::server());
    p.client.close(sim.now);
    assert_eq!(*p.client.state(), State::Closed);
    assert!(p
        .client
        .send_rtp(sim.now, &OutgoingRtp::new(1, 1, 1, 111, b"x"))
        .is_err());
    sim.run_for(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        Duration::from_millis(100),
    );
    assert!(
        matches!(p.server.state(), State::Failed(FailureCause::PeerClosed)),
        "{}",
        p.server.state()
    );
}

/// The data channel over a connected pair (docs/protocol.md §6): the participant (DTLS server)
/// opens it, the server (DTLS client) accepts; text goes both ways in order; a side with the
/// channel off gets SCTP as plain application data and refuses to send with a clear error.
#[test]
fn the_data_channel_opens_over_dtls_and_carries_text_both_ways() {
    let mut sim = groupcall_media::sim::Sim::new(21);
    let client_cfg = TransportConfig {
        data_channel: true,
        ..TransportConfig::default()
    };
    let mut p = common::pair(
        "10.0.0.1:5000".parse().unwrap(),
        "10.0.0.2:32000".parse().unwrap(),
        client_cfg,
        TransportConfig::server(),
        |a| a,
        None,
        sim.now,
    );
    let mut ev: [Vec<Event>; 2] = Default::default();
    let open = |ev: &[Event]| ev.iter().any(|e| matches!(e, Event::DataChannelOpen));
    let deadline = sim.now + Duration::from_secs(10);
    let ok = sim.run_until(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        deadline,
        |_, ev| open(&ev[0]) && open(&ev[1]),
    );
    assert!(ok, "both sides report the channel open");

    let constraints = r#"{"colibriClass":"ReceiverVideoConstraints","constraints":{"e":{"maxHeight":720}},"defaultConstraints":{"maxHeight":0},"onStageEndpoints":[]}"#;
    p.client.send_data_channel(sim.now, constraints).unwrap();
    p.client.send_data_channel(sim.now, "second").unwrap();
    p.server
        .send_data_channel(
            sim.now,
            r#"{"colibriClass":"SenderVideoConstraints","videoConstraints":{"idealHeight":360}}"#,
        )
        .unwrap();
    ev[0].clear();
    ev[1].clear();
    sim.run_for(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        Duration::from_secs(1),
    );
    let messages = |ev: &[Event]| -> Vec<String> {
        ev.iter()
            .filter_map(|e| match e {
                Event::DataChannelMessage(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(messages(&ev[1]), [constraints, "second"]);
    assert_eq!(messages(&ev[0]).len(), 1);
    assert!(messages(&ev[0])[0].contains("idealHeight"));
    let st = p.server.data_channel_stats().unwrap();
    assert_eq!((st.messages_in, st.messages_out), (2, 1));
    // Media still flows next to it.
    assert!(p.client.is_connected() && p.server.is_connected());
}

#[test]
fn a_transport_without_the_data_channel_refuses_to_send_on_it() {
    let (sim, mut p, _) = common::connected_pair(3, TransportConfig::server());
    let err = p.client.send_data_channel(sim.now, "hello").unwrap_err();
    assert!(err.to_string().contains("off"), "{err}");
}

/// Once connected, the ICE agent's timer (it runs every 200 ms) is a lenient deadline, which
/// the engine serves on its audio clock; while connecting it is prompt, since every check
/// counts towards the join. Served only on a 60 ms clock, consent checks go on at their pace
/// and neither side ever sees the connection drop.
#[test]
fn consent_served_on_a_60_ms_clock_keeps_the_connection_up() {
    let mut sim = Sim::new(11);
    let mut p = common::pair(
        addr(C),
        addr(S),
        TransportConfig::default(),
        TransportConfig::server(),
        |a| a,
        None,
        sim.now,
    );
    let d = p.client.poll_deadlines();
    assert!(
        d.prompt.is_some() && d.lenient.is_none(),
        "connecting: {d:?}"
    );
    let mut ev = [Vec::new(), Vec::new()];
    connect(&mut sim, &mut p, &mut ev);
    let d = p.client.poll_deadlines();
    let lenient = d.lenient.expect("a connected agent keeps its timer");
    assert!(lenient <= sim.now + Duration::from_secs(1), "{d:?}");

    sim.tick = Some(Duration::from_millis(60));
    let before = p.client.stats().stun_requests_sent;
    let mut ev = [Vec::new(), Vec::new()];
    sim.run_for(
        &mut [&mut p.client, &mut p.server],
        &mut ev,
        Duration::from_secs(60),
    );
    let checks = p.client.stats().stun_requests_sent - before;
    // One consent check every 2.5 s.
    assert!(
        (20..=30).contains(&checks),
        "{checks} consent checks in 60 s"
    );
    for (side, events) in ["client", "server"].iter().zip(&ev) {
        let changes: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, Event::StateChanged(_)))
            .collect();
        assert!(changes.is_empty(), "{side}: {changes:?}");
    }
    assert!(p.client.is_connected() && p.server.is_connected());
}
