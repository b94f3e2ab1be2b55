//! Fuzz target bodies, shared by the `cargo fuzz` targets in `fuzz/` and the stable replay test
//! (`tests/fuzz_corpus.rs`), so that what the fuzzer explored and what `cargo test` replays can
//! never drift apart. Each function takes arbitrary bytes, must not panic, and panics only when
//! an invariant the real code relies on is broken. Not part of the API.
//!
//! [`seeds`] builds each target's starting corpus from this crate's own writers, so the fuzzer
//! starts from inputs the real code produces and accepts.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::stun::message::Message;

use crate::answer::{telegram_audio_info, telegram_video_info, Candidate, TransportInfo};
use crate::ice::{stun_username, FullIce, IceTimeouts, LiteIce};
use crate::identity::{crypto_provider, IceCredentials, LocalIdentity};
use crate::payload::{DtlsFingerprint, JoinPayload, Setup, VideoPublish};
use crate::rtp::{AudioLevel, ExtensionIds, OutgoingRtp, RtpPacket};
use crate::transport::{rtcp, Event, Transport, TransportConfig};
use crate::{LocalEndpoint, RemotePeer, RtcAnswer, ServerAnswer};

/// The fuzz targets this crate implements, as named in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &["rtp", "rtcp", "stun", "dtls", "answer", "datachannel"];

/// Runs `target` on `data`. Unknown names panic: a replay must not silently test nothing.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "rtp" => rtp(data),
        "rtcp" => rtcp(data),
        "stun" => stun(data),
        "dtls" => dtls(data),
        "answer" => answer(data),
        "datachannel" => datachannel(data),
        other => panic!("no fuzz target {other:?} in groupcall-media"),
    }
}

/// `RtpPacket::parse`; a packet it accepts, written back with `OutgoingRtp::write`, parses to
/// the same fields (the writer keeps only the three extensions Telegram uses, so that is what is
/// compared).
pub fn rtp(data: &[u8]) {
    let ids = ExtensionIds::default();
    let Ok(p) = RtpPacket::parse(Bytes::copy_from_slice(data), &ids) else {
        return;
    };
    assert!(p.payload.len() <= p.raw.len().saturating_sub(12));
    let mut out = BytesMut::new();
    OutgoingRtp {
        ssrc: p.ssrc,
        sequence: p.sequence,
        timestamp: p.timestamp,
        payload_type: p.payload_type,
        marker: p.marker,
        audio_level: p.audio_level,
        abs_send_time: p.abs_send_time,
        transport_seq: p.transport_seq,
        payload: &p.payload,
    }
    .write(&ids, &mut out);
    let q = RtpPacket::parse(out.freeze(), &ids).expect("a written packet parses");
    assert_eq!(
        (
            q.ssrc,
            q.sequence,
            q.timestamp,
            q.payload_type,
            q.marker,
            q.audio_level,
            q.abs_send_time,
            q.transport_seq,
            &q.payload
        ),
        (
            p.ssrc,
            p.sequence,
            p.timestamp,
            p.payload_type,
            p.marker,
            p.audio_level,
            p.abs_send_time,
            p.transport_seq,
            &p.payload
        )
    );
}

/// The RTCP compound parse the transport runs on every decrypted SRTCP packet. Every packet it
/// hands out can be printed and asked for its SSRCs, and marshalling what it accepted does not
/// panic. (No round trip is asserted: nothing here re-marshals a parsed packet, and rtc-rtcp
/// writes some packets it parsed, e.g. a transport feedback of unknown format, as bytes it then
/// refuses; that is rtc's to fix and harmless to this crate.)
pub fn rtcp(data: &[u8]) {
    let Some(pkts) = crate::transport::parse_rtcp(Bytes::copy_from_slice(data)) else {
        return;
    };
    for p in &pkts {
        let _ = p.destination_ssrc();
        let _ = p.to_string();
        let _ = format!("{p:?}");
    }
    let _ = rtcp::packet::marshal(&pkts);
}

/// Fixed ICE credentials, so that checks captured by [`seeds`] pass the integrity check of the
/// agents here and the fuzzer starts past it.
fn client_creds() -> IceCredentials {
    IceCredentials {
        ufrag: "fzCL".into(),
        pwd: "fuzz-client-password-0001".into(),
    }
}

fn server_creds() -> IceCredentials {
    IceCredentials {
        ufrag: "fuzzServerUfrag1".into(),
        pwd: "fuzz-server-password-001".into(),
    }
}

const CLIENT_ADDR: &str = "10.0.0.1:5000";
const SERVER_ADDR: &str = "10.0.0.2:32000";
const STRANGER_ADDR: &str = "10.0.0.66:4444";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a fixed test address")
}

struct StunAgents {
    now: Instant,
    lite: LiteIce,
    full: FullIce,
}

thread_local! {
    static STUN: RefCell<Option<StunAgents>> = const { RefCell::new(None) };
}

/// A STUN message as the ICE code reads it: the rtc-stun decode the lite agent and
/// `stun_username` use (whose re-encoding must decode to the same message), the lite agent
/// (a valid request is answered with a response that decodes), and the full agent.
pub fn stun(data: &[u8]) {
    let mut m = Message {
        raw: data.to_vec(),
        ..Default::default()
    };
    if m.decode().is_ok() {
        let mut re = Message {
            typ: m.typ,
            transaction_id: m.transaction_id,
            attributes: m.attributes.clone(),
            ..Default::default()
        };
        re.encode();
        let mut back = Message {
            raw: re.raw.clone(),
            ..Default::default()
        };
        back.decode().expect("a re-encoded STUN message decodes");
        assert_eq!(
            (back.typ, back.transaction_id, &back.attributes.0),
            (m.typ, m.transaction_id, &m.attributes.0)
        );
    }
    let _ = stun_username(data);
    STUN.with(|cell| {
        let mut cell = cell.borrow_mut();
        let a = cell.get_or_insert_with(|| {
            let now = Instant::now();
            let provider = crypto_provider().expect("the crypto provider");
            let t = IceTimeouts::default();
            StunAgents {
                now,
                lite: LiteIce::new(now, provider.clone(), &server_creds(), &client_creds(), t),
                full: FullIce::new(
                    now,
                    provider,
                    &client_creds(),
                    addr(CLIENT_ADDR),
                    &server_creds(),
                    &[addr(SERVER_ADDR)],
                    true,
                    t,
                )
                .expect("a full agent"),
            }
        });
        let mut out = std::collections::VecDeque::new();
        if a.lite.handle_stun(a.now, addr(CLIENT_ADDR), data, &mut out) {
            for t in &out {
                let mut r = Message {
                    raw: t.contents.to_vec(),
                    ..Default::default()
                };
                r.decode().expect("the lite agent's response decodes");
            }
        }
        let _ = a.full.handle_stun(a.now, addr(SERVER_ADDR), data);
        let mut sent = 0u64;
        a.full.drain(&mut out, &mut sent);
        while a.full.poll_state().is_some() {}
        while a.lite.poll_state().is_some() {}
    });
}

/// The identities of the harness pair: certificate generation is the slowest part of a
/// connection, and which certificate is used does not matter to the fuzzer.
fn identities() -> &'static (LocalIdentity, LocalIdentity) {
    static IDS: OnceLock<(LocalIdentity, LocalIdentity)> = OnceLock::new();
    IDS.get_or_init(|| {
        let mut client = LocalIdentity::generate().expect("a client identity");
        let server = LocalIdentity::generate().expect("a server identity");
        client.ice = client_creds();
        (client, server)
    })
}

/// A participant and a server side, built from real payload and answer JSON as in a join.
fn new_pair(now: Instant) -> (Transport, Transport) {
    let (client_id, server_id) = identities();
    let payload = JoinPayload::parse(&JoinPayload::new(client_id, VideoPublish::None).to_json())
        .expect("our payload parses");
    let server = Transport::new(
        TransportConfig::server(),
        LocalEndpoint {
            addr: addr(SERVER_ADDR),
            ice: server_creds(),
            certificate: server_id.certificate.clone(),
            setup: payload.fingerprints[0].setup.complement(),
        },
        RemotePeer::from_payload(&payload).expect("a peer from our payload"),
        now,
    )
    .expect("a server transport");
    let answer = ServerAnswer::parse(&answer_json(&server_creds(), server_id, addr(SERVER_ADDR)))
        .and_then(ServerAnswer::into_rtc)
        .expect("our answer parses");
    let client = Transport::new(
        TransportConfig::default(),
        LocalEndpoint {
            addr: addr(CLIENT_ADDR),
            ice: client_id.ice.clone(),
            certificate: client_id.certificate.clone(),
            setup: Setup::Passive,
        },
        RemotePeer::from_answer(&answer).expect("a peer from our answer"),
        now,
    )
    .expect("a client transport");
    (client, server)
}

fn answer_json(creds: &IceCredentials, id: &LocalIdentity, at: SocketAddr) -> String {
    RtcAnswer {
        transport: TransportInfo {
            ufrag: creds.ufrag.clone(),
            pwd: creds.pwd.clone(),
            fingerprints: vec![DtlsFingerprint {
                fingerprint: id.fingerprint.to_string(),
                hash: "sha-256".into(),
                setup: Setup::Active,
            }],
            candidates: vec![Candidate::udp_host(at, "1", "c1")],
            xmlns: None,
            rtcp_mux: Some(true),
        },
        audio: Some(telegram_audio_info()),
        video: Some(telegram_video_info("endpoint-1", 12345)),
    }
    .to_json()
}

/// Delivers everything both sides want to send, with the clock at `now`; every delivered
/// datagram goes to `log` as (receiving side, bytes). Returns whether anything moved.
fn pump(ts: &mut [Transport; 2], now: Instant, log: &mut Vec<(usize, Vec<u8>)>) -> bool {
    let mut moved = false;
    for from in 0..2 {
        while let Some(t) = ts[from].poll_transmit() {
            moved = true;
            let to = 1 - from;
            let src = ts[from].local_addr();
            if log.len() < 1000 {
                log.push((to, t.contents.to_vec()));
            }
            ts[to].handle_datagram(now, src, &t.contents);
        }
    }
    moved
}

/// Runs the pair on virtual time until both are connected (or `limit` passes).
fn connect(ts: &mut [Transport; 2], mut now: Instant, limit: Duration) -> (Instant, bool) {
    let deadline = now + limit;
    let mut log = Vec::new();
    while now <= deadline {
        while pump(ts, now, &mut log) {}
        if ts.iter().all(Transport::is_connected) {
            return (now, true);
        }
        let Some(next) = ts.iter_mut().filter_map(|t| t.poll_timeout()).min() else {
            break;
        };
        now = now.max(next);
        for t in ts.iter_mut() {
            if t.poll_timeout().is_some_and(|at| at <= now) {
                t.handle_timeout(now);
            }
        }
    }
    (now, false)
}

struct Connected {
    now: Instant,
    ts: [Transport; 2],
}

thread_local! {
    static PAIR: RefCell<Option<Connected>> = const { RefCell::new(None) };
}

/// The most datagrams one input is split into.
const MAX_DATAGRAMS: usize = 16;

/// Splits a dtls-target input into datagrams: each is `[control][len: u16 BE][bytes]` (a short
/// last one takes what is left). Control bit 0 picks the receiving side (0 participant,
/// 1 server); bit 1 sends it from a stranger's address instead of the validated peer's.
pub fn split_datagrams(mut data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while let Some((&ctl, rest)) = data.split_first() {
        if out.len() == MAX_DATAGRAMS {
            break;
        }
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (rest.len(), &[][..]),
        };
        let (d, rest) = rest.split_at(len.min(rest.len()));
        out.push((ctl, d));
        data = rest;
    }
    out
}

/// The inverse of [`split_datagrams`], for building seeds.
pub fn join_datagrams(ds: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ctl, d) in ds {
        out.push(*ctl);
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

/// Arbitrary datagrams fed to a connected participant/server pair (the transport's
/// `handle_datagram`: RFC 7983 demux, ICE, the DTLS record layer, SRTP/SRTCP). Every datagram is
/// counted as received and as exactly one of used or dropped, nothing forged comes out as media,
/// and both sides are still connected afterwards: garbage, even from the validated address,
/// must never tear a call down.
pub fn dtls(data: &[u8]) {
    PAIR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell
            .as_ref()
            .is_some_and(|c| !c.ts.iter().all(Transport::is_connected))
        {
            *cell = None;
        }
        let c = cell.get_or_insert_with(|| {
            let start = Instant::now();
            let (client, server) = new_pair(start);
            let mut ts = [client, server];
            let (now, ok) = connect(&mut ts, start, Duration::from_secs(10));
            assert!(ok, "the harness pair did not connect");
            for t in &mut ts {
                while t.poll_event().is_some() {}
            }
            Connected { now, ts }
        });
        let peers = [c.ts[0].local_addr(), c.ts[1].local_addr()];
        for (ctl, d) in split_datagrams(data) {
            let side = usize::from(ctl & 1);
            let from = if ctl & 2 != 0 {
                addr(STRANGER_ADDR)
            } else {
                peers[1 - side]
            };
            let t = &mut c.ts[side];
            let s = t.stats();
            let (rx, handled) = (s.received.total(), s.accepted + s.dropped());
            let decrypted: u64 = s.ssrcs.values().map(|x| x.packets).sum();
            t.handle_datagram(c.now, from, d);
            let s = t.stats();
            assert_eq!(s.received.total(), rx + 1, "datagram not counted: {s:?}");
            assert_eq!(s.accepted + s.dropped(), handled + 1, "{s:?}");
            assert_eq!(
                s.ssrcs.values().map(|x| x.packets).sum::<u64>(),
                decrypted,
                "forged SRTP was decrypted"
            );
            while let Some(e) = t.poll_event() {
                assert!(!matches!(e, Event::Rtp(_)), "forged RTP accepted");
                assert!(!matches!(e, Event::Rtcp(_)), "forged RTCP accepted");
            }
            // What a side answers (a DTLS alert, a STUN response) is only drained, not
            // delivered: a reply goes to whoever sent the datagram, and that is the fuzzer.
            for t in &mut c.ts {
                while t.poll_transmit().is_some() {}
            }
        }
        for t in &c.ts {
            assert!(
                t.is_connected(),
                "garbage tore the call down: {} ({:?})",
                t.state(),
                t.stats()
            );
        }
    });
}

/// `ServerAnswer::parse`, as signalling runs it on `updateGroupCallConnection.params`. An
/// accepted answer serialises (Telegram's shape) to JSON that parses to the same answer, with
/// only the defaults the writer fills in (`xmlns`, `rtcp-mux`) added.
pub fn answer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(a) = ServerAnswer::parse(text) else {
        return;
    };
    let json = a.to_value().to_string();
    let b = ServerAnswer::parse(&json).expect("a written answer parses");
    let mut want = a;
    if let ServerAnswer::Rtc(r) = &mut want {
        r.transport
            .xmlns
            .get_or_insert_with(|| "urn:xmpp:jingle:transports:ice-udp:1".into());
        r.transport.rtcp_mux.get_or_insert(true);
        // The payload-type, header-extension and SSRC writers keep what the parser accepted;
        // an RTC answer also stays usable for a transport exactly when it was before.
    }
    assert_eq!(
        b, want,
        "answer changed in a parse/write round trip: {json}"
    );
    if let ServerAnswer::Rtc(r) = &b {
        let _ = RemotePeer::from_answer(r);
        let _ = r.transport.setup();
    }
}

/// Starting inputs for `target`, built with this crate's writers and a real connection:
/// `(name, bytes)`. Empty for targets this crate does not implement.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "rtp" => rtp_seeds(),
        "rtcp" => rtcp_seeds(),
        "stun" => captured(|side, d| side == 1 && d.first().is_some_and(|b| *b < 4))
            .into_iter()
            .chain(captured(|side, d| {
                side == 0 && d.first().is_some_and(|b| *b < 4)
            }))
            .take(6)
            .collect(),
        "dtls" => dtls_seeds(),
        "answer" => answer_seeds(),
        "datachannel" => datachannel_seeds(),
        _ => Vec::new(),
    }
    .into_iter()
    .enumerate()
    .map(|(i, d)| (format!("seed-{target}-{i}"), d))
    .collect()
}

fn rtp_seeds() -> Vec<Vec<u8>> {
    let ids = ExtensionIds::default();
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    OutgoingRtp::new(0x1234_5678, 1, 960, 111, b"opus").write(&ids, &mut buf);
    out.push(buf.to_vec());
    OutgoingRtp {
        marker: true,
        audio_level: Some(AudioLevel {
            level: 30,
            voice: true,
        }),
        abs_send_time: Some(crate::rtp::abs_send_time_from_micros(1_234_567)),
        transport_seq: Some(0xBEEF),
        ..OutgoingRtp::new(0xDEAD_BEEF, 65535, 123_456, 111, b"opus-frame")
    }
    .write(&ids, &mut buf);
    out.push(buf.to_vec());
    // rtc's writer: CSRCs, two-byte extensions and padding, which ours never writes.
    use rtc::shared::marshal::Marshal;
    let mut h = rtc::rtp::header::Header {
        version: 2,
        padding: true,
        payload_type: 100,
        sequence_number: 7,
        timestamp: 9,
        ssrc: 42,
        csrc: vec![1, 2],
        extension_profile: 0x1000,
        extension: true,
        ..Default::default()
    };
    h.set_extension(1, Bytes::from_static(&[0x05]))
        .expect("an extension");
    h.set_extension(3, Bytes::from_static(&[0x00, 0x09]))
        .expect("an extension");
    let p = rtc::rtp::packet::Packet {
        header: h,
        payload: Bytes::from_static(b"video"),
    };
    out.push(p.marshal().expect("rtc marshals").to_vec());
    out
}

fn rtcp_seeds() -> Vec<Vec<u8>> {
    use rtcp::goodbye::Goodbye;
    use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    use rtcp::receiver_report::ReceiverReport;
    use rtcp::reception_report::ReceptionReport;
    use rtcp::sender_report::SenderReport;
    use rtcp::source_description::{
        SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
    };
    use rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
    let report = ReceptionReport {
        ssrc: 77,
        fraction_lost: 12,
        total_lost: 3,
        last_sequence_number: 0x0001_0042,
        jitter: 40,
        last_sender_report: 0x1234_5678,
        delay: 655,
    };
    let compounds: Vec<Vec<Box<dyn rtcp::packet::Packet>>> = vec![
        vec![
            Box::new(SenderReport {
                ssrc: 1,
                ntp_time: crate::transport::ntp_time(
                    std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                ),
                rtp_time: 48_000,
                packet_count: 50,
                octet_count: 4000,
                reports: vec![report.clone()],
                ..Default::default()
            }),
            Box::new(SourceDescription {
                chunks: vec![SourceDescriptionChunk {
                    source: 1,
                    items: vec![SourceDescriptionItem {
                        sdes_type: SdesType::SdesCname,
                        text: Bytes::from_static(b"groupcall"),
                    }],
                }],
            }),
        ],
        vec![
            Box::new(ReceiverReport {
                ssrc: 2,
                reports: vec![report],
                ..Default::default()
            }),
            Box::new(TransportLayerNack {
                sender_ssrc: 2,
                media_ssrc: 77,
                nacks: vec![NackPair {
                    packet_id: 100,
                    lost_packets: 0b101,
                }],
            }),
            Box::new(PictureLossIndication {
                sender_ssrc: 2,
                media_ssrc: 77,
            }),
        ],
        vec![
            Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 2,
                bitrate: 300_000.0,
                ssrcs: vec![77, 78],
            }),
            Box::new(Goodbye {
                sources: vec![1],
                reason: Bytes::from_static(b"left"),
            }),
        ],
    ];
    compounds
        .iter()
        .map(|c| rtcp::packet::marshal(c).expect("rtc marshals").to_vec())
        .collect()
}

/// Datagrams of a real connection between a fresh harness pair (fixed ICE credentials, so the
/// STUN ones are valid for the harness agents), then media both ways; those `keep` selects.
fn captured(keep: impl Fn(usize, &[u8]) -> bool) -> Vec<Vec<u8>> {
    capture_connection()
        .into_iter()
        .filter(|(side, d)| keep(*side, d))
        .map(|(_, d)| d)
        .collect()
}

fn capture_connection() -> Vec<(usize, Vec<u8>)> {
    let start = Instant::now();
    let (client, server) = new_pair(start);
    let mut ts = [client, server];
    let mut log = Vec::new();
    let mut now = start;
    for _ in 0..10_000 {
        while pump(&mut ts, now, &mut log) {}
        if ts.iter().all(Transport::is_connected) {
            break;
        }
        let Some(next) = ts.iter_mut().filter_map(|t| t.poll_timeout()).min() else {
            break;
        };
        now = now.max(next);
        for t in ts.iter_mut() {
            if t.poll_timeout().is_some_and(|at| at <= now) {
                t.handle_timeout(now);
            }
        }
    }
    assert!(
        ts.iter().all(Transport::is_connected),
        "capture pair did not connect"
    );
    let mut rtp = OutgoingRtp::new(0x55, 1, 960, 111, b"opus");
    rtp.audio_level = Some(AudioLevel {
        level: 20,
        voice: true,
    });
    ts[1].send_rtp(now, &rtp).expect("server sends RTP");
    ts[0].send_rtp(now, &rtp).expect("client sends RTP");
    let sr = crate::transport::SenderInfo {
        ssrc: 0x55,
        rtp_time: 960,
        packets: 1,
        octets: 4,
    };
    ts[0]
        .send_sender_report(&sr, std::time::UNIX_EPOCH)
        .expect("client sends RTCP");
    ts[1]
        .send_application_data(now, b"sctp?")
        .expect("server sends DTLS data");
    while pump(&mut ts, now, &mut log) {}
    log
}

fn dtls_seeds() -> Vec<Vec<u8>> {
    let log = capture_connection();
    let mut seeds: Vec<Vec<u8>> = log
        .iter()
        .filter(|(_, d)| {
            d.first()
                .is_some_and(|b| (20..=63).contains(b) || *b >= 128)
        })
        .take(12)
        .map(|(side, d)| join_datagrams(&[(*side as u8, d)]))
        .collect();
    // A whole handshake replayed in order, to either side, and once from a stranger.
    let flights: Vec<(u8, &[u8])> = log
        .iter()
        .filter(|(_, d)| d.first().is_some_and(|b| (20..=63).contains(b)))
        .take(8)
        .map(|(side, d)| (*side as u8, &d[..]))
        .collect();
    seeds.push(join_datagrams(&flights));
    let strangers: Vec<(u8, &[u8])> = flights.iter().map(|(s, d)| (s | 2, *d)).collect();
    seeds.push(join_datagrams(&strangers));
    seeds
}

fn answer_seeds() -> Vec<Vec<u8>> {
    let (_, server_id) = identities();
    let rtc = answer_json(&server_creds(), server_id, addr(SERVER_ADDR));
    let v6 = answer_json(
        &server_creds(),
        server_id,
        "[2001:db8::1]:443".parse().expect("v6"),
    );
    vec![
        rtc.into_bytes(),
        v6.into_bytes(),
        ServerAnswer::Stream.to_value().to_string().into_bytes(),
        ServerAnswer::Rtmp.to_value().to_string().into_bytes(),
    ]
}

/// What a datachannel-target record does, from bits 1-2 of its control byte.
const DC_RAW: u8 = 0;
const DC_TAGGED: u8 = 1;
const DC_MESSAGE: u8 = 2;
const DC_TEXT: u8 = 3;
/// PPIDs a `DC_MESSAGE` record picks from with its first byte: DCEP, string, binary, string
/// empty, binary empty, and one nobody defines.
const DC_PPIDS: [u32; 6] = [50, 51, 53, 56, 57, 1234];

/// Records in the dtls target's framing (`[control][len u16][bytes]`, [`split_datagrams`])
/// played into a participant/server data-channel pair that has just opened. Control bit 0 picks
/// the receiving side (0 participant, 1 server); bits 1-2 what the record is:
/// - 0: an SCTP packet, as it is (it almost never passes the checksum);
/// - 1: an SCTP packet given the verification tag the receiver expects and a correct CRC32c,
///   so that it reaches the association's chunk handling (as if the authenticated peer sent it);
/// - 2: a message the other side sends: PPID from the first byte ([`DC_PPIDS`]), the rest as
///   the payload, on stream 0 (stream 1 with control bit 3), bypassing every check;
/// - 3: the rest sent by the other side with `send_text` (lossy UTF-8).
///
/// Every packet is counted as received; no more than `MAX_QUEUED_EVENTS` events wait; events
/// come in a sane order (Open first, nothing after Closed); `send_text` succeeds only while
/// open and fails only as documented. If every packet was refused before reaching an
/// association (as garbage and the chunks `well_formed` rejects must be) and both sides are
/// still open, the text messages each side received are exactly the valid ones sent to it, in
/// order, and the channel still carries a message from the participant, and one from the
/// server unless a DCEP message reached it (an OPEN may legitimately change its reliability).
pub fn datachannel(data: &[u8]) {
    use crate::datachannel::{harness::Pair, DataChannel, DataChannelEvent, MAX_QUEUED_EVENTS};
    let mut p = Pair::telegram(Instant::now());
    assert!(p.open(), "the harness pair did not open");
    let mut got: [Vec<String>; 2] = Default::default();
    let mut want: [Vec<String>; 2] = Default::default();
    let mut closed = [false; 2];
    let mut clean = true;
    let mut server_dcep = false;
    for s in &mut p.sides {
        assert_eq!(s.poll_event(), Some(DataChannelEvent::Open));
    }
    for (ctl, d) in split_datagrams(data) {
        let to = usize::from(ctl & 1);
        let from = 1 - to;
        let open = p.sides.iter().all(DataChannel::is_open);
        match (ctl >> 1) & 3 {
            kind @ (DC_RAW | DC_TAGGED) => {
                let pkt = match (kind, p.tags[to]) {
                    (DC_TAGGED, Some(tag)) => seal_sctp(d, tag),
                    _ => d.to_vec(),
                };
                let before = p.sides[to].stats();
                p.sides[to].handle_input(p.now, &pkt);
                let after = p.sides[to].stats();
                assert_eq!(after.packets_in, before.packets_in + 1);
                let refused = after.malformed_packets + after.refused_inits
                    - before.malformed_packets
                    - before.refused_inits;
                clean &= refused == 1 || p.sides[to].is_closed();
            }
            DC_MESSAGE => {
                let (&pick, payload) = d.split_first().unwrap_or((&0, &[]));
                let ppid = DC_PPIDS[usize::from(pick) % DC_PPIDS.len()];
                let stream = u16::from(ctl & 8 != 0);
                let sent = p.sides[from].send_raw(p.now, stream, ppid, payload);
                server_dcep |= to == 1 && ppid == 50;
                let text = match ppid {
                    51 => std::str::from_utf8(payload).ok(),
                    56 => Some(""),
                    _ => None,
                };
                // (`send_raw` refuses an empty payload: SCTP has no empty messages.)
                if let (Some(t), true, true, 0) = (text, sent, open, stream) {
                    want[to].push(t.to_owned());
                }
            }
            _ => {
                let text = String::from_utf8_lossy(d);
                // Time stands still between records, so nothing is acknowledged and the send
                // buffer may fill up.
                let sender_open = p.sides[from].is_open();
                match p.sides[from].send_text(p.now, &text) {
                    Ok(()) => {
                        assert!(sender_open, "sent while not open");
                        if open {
                            want[to].push(text.into_owned());
                        }
                    }
                    Err(crate::Error::SendBufferFull { .. }) => assert!(sender_open),
                    // Also while open, once the peer has begun an SCTP SHUTDOWN.
                    Err(crate::Error::DataChannelNotOpen(_)) => {}
                    Err(e) => panic!("send_text while open={sender_open}: {e}"),
                }
            }
        }
        p.pump(&mut |_, _, _| false);
        for s in &p.sides {
            assert!(s.events_queued() <= MAX_QUEUED_EVENTS + 2);
        }
        take_events(&mut p, &mut got, &mut closed);
    }
    p.run_until(Duration::from_secs(10), &mut |_, _, _| false, &mut |_| {
        false
    });
    take_events(&mut p, &mut got, &mut closed);
    if !clean || closed.iter().any(|c| *c) {
        return;
    }
    assert_eq!(got, want, "text messages lost, altered or reordered");
    let mut check = |from: usize| {
        p.sides[from]
            .send_text(p.now, "{\"still\":\"open\"}")
            .expect("the channel is open");
        let mut last = None;
        p.run_until(Duration::from_secs(30), &mut |_, _, _| false, &mut |p| {
            while let Some(e) = p.sides[1 - from].poll_event() {
                last = Some(e);
            }
            last.is_some()
        });
        assert_eq!(
            last,
            Some(DataChannelEvent::Message("{\"still\":\"open\"}".into())),
            "side {from} can no longer send"
        );
    };
    check(0);
    if !server_dcep {
        check(1);
    }
}

/// Collects both sides' messages and checks the order of their events.
fn take_events(
    p: &mut crate::datachannel::harness::Pair,
    got: &mut [Vec<String>; 2],
    closed: &mut [bool; 2],
) {
    use crate::datachannel::DataChannelEvent;
    for (i, s) in p.sides.iter_mut().enumerate() {
        while let Some(e) = s.poll_event() {
            assert!(!closed[i], "event after Closed: {e:?}");
            match e {
                DataChannelEvent::Open => panic!("a second Open"),
                DataChannelEvent::Message(m) => got[i].push(m),
                DataChannelEvent::Closed(_) => closed[i] = true,
            }
        }
    }
}

/// `pkt` as an SCTP packet for an association expecting verification tag `tag`: the tag
/// written in, and the CRC32c (RFC 9260 Appendix B) over it recomputed.
pub(crate) fn seal_sctp(pkt: &[u8], tag: [u8; 4]) -> Vec<u8> {
    let mut p = pkt.to_vec();
    if p.len() < 12 {
        return p;
    }
    p[4..8].copy_from_slice(&tag);
    p[8..12].fill(0);
    let crc = crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn datachannel_seeds() -> Vec<Vec<u8>> {
    use crate::datachannel::harness::Pair;
    let ctl = |to: u8, kind: u8| to | (kind << 1);
    // Packets of a real exchange: the handshake and OPEN/ACK, then text both ways.
    let mut p = Pair::telegram(Instant::now());
    let mut log: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut record = |from: usize, _: u64, pkt: &[u8]| {
        log.push((1 - from as u8, pkt.to_vec()));
        false
    };
    p.run_until(Duration::from_secs(10), &mut record, &mut |p| {
        p.sides.iter().all(crate::datachannel::DataChannel::is_open)
    });
    for (from, text) in [
        (0, "{\"colibriClass\":\"ReceiverVideoConstraints\"}"),
        (1, "{}"),
    ] {
        p.sides[from].send_text(p.now, text).expect("open");
    }
    p.pump(&mut record);
    // A packet sealed again with its own tag is unchanged: the checksum here is SCTP's.
    for (_, pkt) in &log {
        let tag = [pkt[4], pkt[5], pkt[6], pkt[7]];
        assert_eq!(&seal_sctp(pkt, tag), pkt, "crc32c disagrees with rtc-sctp");
    }
    let tagged: Vec<(u8, &[u8])> = log
        .iter()
        .skip(4)
        .map(|(to, d)| (ctl(*to, DC_TAGGED), &d[..]))
        .collect();
    let raw: Vec<(u8, &[u8])> = log
        .iter()
        .take(4)
        .map(|(to, d)| (ctl(*to, DC_RAW), &d[..]))
        .collect();
    let messages: Vec<(u8, &[u8])> = vec![
        (ctl(1, DC_MESSAGE), b"\x01{\"ok\":true}"),
        (ctl(0, DC_MESSAGE), b"\x01{\"ok\":false}"),
        (
            ctl(1, DC_MESSAGE),
            b"\x00\x03\x00\x01\x00\x00\x00\x00\x00\x00\x04\x00\x00data",
        ),
        (ctl(0, DC_MESSAGE), b"\x00\x02"),
        (ctl(1, DC_MESSAGE), b"\x02binary"),
        (ctl(1, DC_MESSAGE), b"\x01\xff\xfe"),
        (ctl(1, DC_MESSAGE), b"\x03"),
        (ctl(1, DC_MESSAGE) | 8, b"\x01other stream"),
    ];
    let texts: Vec<(u8, &[u8])> = vec![
        (
            ctl(1, DC_TEXT),
            "{\"colibriClass\":\"ReceiverVideoConstraints\"}".as_bytes(),
        ),
        (ctl(0, DC_TEXT), "ünïcödé".as_bytes()),
        (ctl(0, DC_TEXT), b""),
    ];
    vec![
        join_datagrams(&tagged),
        join_datagrams(&raw),
        join_datagrams(&messages),
        join_datagrams(&texts),
    ]
}
