//! The whole local server ([`LocalServer`]: HTTP control API and UDP media plane) against
//! media-crate clients over real UDP on 127.0.0.1. Clients join through the control API exactly
//! as a Telegram client joins through `phone.joinGroupCall`: their payload JSON goes in as
//! `params`, the answer's `params` text comes back and is all they know about the server.
//! Every test is bounded in time.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use groupcall_media::driver::UdpDriver;
use groupcall_media::rtcp;
use groupcall_media::{
    Event, JoinPayload, LocalEndpoint, LocalIdentity, OutgoingRtp, RemotePeer, RtpPacket,
    ServerAnswer, Setup, SrtpProfile, State, Transport, TransportConfig, VideoPublish,
};
use groupcall_sfu::{LocalServer, LocalServerConfig};
use serde_json::{json, Value};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Upper bound of every test.
const LIMIT: Duration = Duration::from_secs(15);
/// How long one expected thing (a connection, a burst of packets) may take.
const STEP: Duration = Duration::from_secs(5);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test finished in time");
}

/// The payload a client sends as packet number `seq`: names the sender, so that a receiver can
/// tell a packet arrived intact and from whom.
fn payload_for(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = format!("from {ssrc:08x} packet {seq:05} ").into_bytes();
    p.extend((0..40u8).map(|i| i ^ seq as u8));
    p
}

/// A server, an HTTP client for its control API and one call.
struct Harness {
    server: LocalServer,
    http: reqwest::Client,
    call: i64,
}

impl Harness {
    async fn start() -> Harness {
        let server = LocalServer::start(LocalServerConfig::default())
            .await
            .expect("server starts");
        assert!(server.media_addr().ip().is_loopback());
        let http = reqwest::Client::new();
        let mut h = Harness {
            server,
            http,
            call: 0,
        };
        let (status, call) = h.post("/calls", json!({"peer": 1, "title": "udp"})).await;
        assert_eq!(status, 200, "create: {call}");
        h.call = call["id"].as_i64().expect("call id");
        h
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.server.control_url()))
            .json(&body)
            .send()
            .await
            .expect("request sent");
        (r.status().as_u16(), r.json().await.expect("JSON answer"))
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.server.control_url()))
            .send()
            .await
            .expect("request sent");
        assert_eq!(r.status(), 200);
        r.json().await.expect("JSON answer")
    }

    /// Joins as `peer` with a fresh identity and the default client configuration.
    async fn join(&self, peer: i64) -> Client {
        self.join_with(peer, TransportConfig::default(), None).await
    }

    /// Joins as `peer` declaring `video` in its payload (camera: three simulcast layers).
    async fn join_video(&self, peer: i64, video: VideoPublish) -> Client {
        self.join_full(peer, TransportConfig::default(), None, video)
            .await
    }

    /// Joins as `peer`: the payload is built from a fresh identity, the transport then runs with
    /// `cert`'s certificate instead when it is given (an impostor).
    async fn join_with(
        &self,
        peer: i64,
        config: TransportConfig,
        cert: Option<LocalIdentity>,
    ) -> Client {
        self.join_full(peer, config, cert, VideoPublish::None).await
    }

    async fn join_full(
        &self,
        peer: i64,
        config: TransportConfig,
        cert: Option<LocalIdentity>,
        video: VideoPublish,
    ) -> Client {
        self.connect(
            &format!("/calls/{}/join", self.call),
            peer,
            config,
            cert,
            video,
        )
        .await
    }

    /// Shares a screen as `peer` (already joined): a second connection.
    async fn share_screen(&self, peer: i64) -> Client {
        let path = format!("/calls/{}/presentation/join", self.call);
        self.connect(
            &path,
            peer,
            TransportConfig::default(),
            None,
            VideoPublish::Screen,
        )
        .await
    }

    async fn connect(
        &self,
        path: &str,
        peer: i64,
        config: TransportConfig,
        cert: Option<LocalIdentity>,
        video: VideoPublish,
    ) -> Client {
        let identity = LocalIdentity::generate().unwrap();
        let payload = JoinPayload::new(&identity, video).to_json();
        let (status, joined) = self
            .post(path, json!({"peer": peer, "params": payload}))
            .await;
        assert_eq!(status, 200, "join of {peer}: {joined}");
        let shown = if path.contains("presentation") {
            &joined["participant"]["presentation"]["audio_source"]
        } else {
            &joined["participant"]["source"]
        };
        assert_eq!(shown.as_i64().map(|s| s as u32), Some(identity.audio_ssrc));
        let params = joined["params"].as_str().expect("params is JSON text");
        let answer = ServerAnswer::parse(params)
            .expect("answer parses")
            .into_rtc()
            .expect("an RTC answer");
        let server_ufrag = answer.transport.ufrag.clone();

        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let certificate = cert.unwrap_or_else(|| identity.clone()).certificate;
        let transport = Transport::new(
            config,
            LocalEndpoint {
                addr: socket.local_addr().unwrap(),
                ice: identity.ice.clone(),
                certificate,
                setup: Setup::Passive,
            },
            RemotePeer::from_answer(&answer).expect("answer is usable"),
            Instant::now(),
        )
        .unwrap();
        Client::spawn(
            identity.audio_ssrc,
            server_ufrag,
            identity.ice.ufrag,
            UdpDriver::new(socket, transport),
        )
    }

    /// Waits until the server side of `source`'s connection is up: the server forwards only to
    /// connected participants, and the server (DTLS client) finishes after the participant.
    async fn server_connected(&self, source: u32) {
        tokio::time::timeout(STEP, async {
            loop {
                let s = self.server.participant_stats(self.call, source).await;
                if s.is_some_and(|s| s.connected) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the server never connected {source:08x}"));
    }

    /// The sources of the call's current participants.
    async fn sources(&self) -> Vec<u32> {
        let v = self.get(&format!("/calls/{}", self.call)).await;
        v["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["source"].as_i64().unwrap() as u32)
            .collect()
    }
}

enum ClientEvent {
    Connected(SrtpProfile),
    Failed(String),
    Rtp(RtpPacket),
    Rtcp(Vec<Box<dyn rtcp::packet::Packet>>),
    ChannelOpen,
    Text(String),
    SendFailed(String),
}

/// What a client task is asked to send.
enum Send {
    /// The next `n` numbered audio packets with this SSRC.
    Numbered(u32, u16),
    /// One packet exactly as given.
    Packet {
        ssrc: u32,
        seq: u16,
        ts: u32,
        pt: u8,
        payload: Vec<u8>,
    },
    Rtcp(Vec<Box<dyn rtcp::packet::Packet>>),
    /// A text message over the data channel.
    Text(String),
}

/// A participant running in its own task: it sends numbered packets on request and reports
/// what its transport reports.
struct Client {
    ssrc: u32,
    server_ufrag: String,
    client_ufrag: String,
    send: mpsc::UnboundedSender<Send>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    task: JoinHandle<()>,
    /// Packets read while waiting for something else, per sender.
    received: BTreeMap<u32, Vec<RtpPacket>>,
    rtcp: Vec<Box<dyn rtcp::packet::Packet>>,
    channel_open: bool,
    texts: Vec<String>,
    connected: Option<SrtpProfile>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    fn spawn(ssrc: u32, server_ufrag: String, client_ufrag: String, mut driver: UdpDriver) -> Self {
        let (send, mut send_rx) = mpsc::unbounded_channel::<Send>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            // Sequence numbers continue across bursts, per SSRC: SRTP replay protection drops
            // a repeat.
            let mut next_seq: BTreeMap<u32, u16> = BTreeMap::new();
            loop {
                tokio::select! {
                    cmd = send_rx.recv() => {
                        let (ssrc, n) = match cmd {
                            None => return,
                            Some(Send::Numbered(ssrc, n)) => (ssrc, n),
                            Some(Send::Packet { ssrc, seq, ts, pt, payload }) => {
                                let p = OutgoingRtp::new(ssrc, seq, ts, pt, &payload);
                                if let Err(e) = driver.transport_mut().send_rtp(Instant::now(), &p) {
                                    let _ = events_tx.send(ClientEvent::SendFailed(e.to_string()));
                                }
                                let _ = driver.flush().await;
                                continue;
                            }
                            Some(Send::Rtcp(packets)) => {
                                if let Err(e) = driver.transport_mut().send_rtcp(&packets) {
                                    let _ = events_tx.send(ClientEvent::SendFailed(e.to_string()));
                                }
                                let _ = driver.flush().await;
                                continue;
                            }
                            Some(Send::Text(text)) => {
                                if let Err(e) = driver.transport_mut().send_data_channel(Instant::now(), &text) {
                                    let _ = events_tx.send(ClientEvent::SendFailed(e.to_string()));
                                }
                                let _ = driver.flush().await;
                                continue;
                            }
                        };
                        for _ in 0..n {
                            let next = next_seq.entry(ssrc).or_default();
                            let seq = *next;
                            *next += 1;
                            let payload = payload_for(ssrc, seq);
                            let mut p = OutgoingRtp::new(ssrc, seq, seq as u32 * 960, 111, &payload);
                            p.marker = seq == 0;
                            if let Err(e) = driver.transport_mut().send_rtp(Instant::now(), &p) {
                                let _ = events_tx.send(ClientEvent::SendFailed(e.to_string()));
                                break;
                            }
                            // A little pacing, as a real sender has: a burst of hundreds of
                            // datagrams could overflow a socket buffer on a busy machine.
                            if seq % 10 == 9 {
                                let _ = driver.flush().await;
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                        }
                        let _ = driver.flush().await;
                    }
                    e = driver.next_event() => {
                        let e = match e {
                            Ok(Event::Connected { profile, .. }) => ClientEvent::Connected(profile),
                            Ok(Event::StateChanged(State::Failed(c))) => ClientEvent::Failed(c.to_string()),
                            Ok(Event::Rtp(p)) => ClientEvent::Rtp(p),
                            Ok(Event::Rtcp(p)) => ClientEvent::Rtcp(p),
                            Ok(Event::DataChannelOpen) => ClientEvent::ChannelOpen,
                            Ok(Event::DataChannelMessage(m)) => ClientEvent::Text(m),
                            Ok(_) => continue,
                            Err(e) => ClientEvent::Failed(format!("socket: {e}")),
                        };
                        if events_tx.send(e).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Client {
            ssrc,
            server_ufrag,
            client_ufrag,
            send,
            events,
            task,
            received: BTreeMap::new(),
            rtcp: Vec::new(),
            channel_open: false,
            texts: Vec::new(),
            connected: None,
        }
    }

    fn note(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::Connected(p) => self.connected = Some(p),
            ClientEvent::Failed(c) => panic!("client {:08x} failed: {c}", self.ssrc),
            ClientEvent::SendFailed(c) => panic!("client {:08x} could not send: {c}", self.ssrc),
            ClientEvent::Rtp(p) => self.received.entry(p.ssrc).or_default().push(p),
            ClientEvent::Rtcp(p) => self.rtcp.extend(p),
            ClientEvent::ChannelOpen => self.channel_open = true,
            ClientEvent::Text(t) => self.texts.push(t),
        }
    }

    async fn connected(&mut self) -> SrtpProfile {
        let r = tokio::time::timeout(STEP, async {
            while self.connected.is_none() {
                let e = self.events.recv().await.expect("client task runs");
                self.note(e);
            }
        })
        .await;
        r.unwrap_or_else(|_| panic!("client {:08x} never connected", self.ssrc));
        self.connected.unwrap()
    }

    /// Sends the next `n` packets (sequence numbers and timestamps count from 0 over the
    /// client's life).
    fn send(&self, n: u16) {
        self.send_as(self.ssrc, n);
    }

    /// Sends the next `n` packets with someone else's SSRC.
    fn send_as(&self, ssrc: u32, n: u16) {
        self.send
            .send(Send::Numbered(ssrc, n))
            .expect("client task runs");
    }

    /// Waits until, for each `(sender, n)`, `n` packets in all from `sender` have arrived, then
    /// checks they arrived exactly as sent, in order and without gaps or duplicates: sender's
    /// SSRC, sequence, timestamp, marker, payload type and payload.
    async fn expect(&mut self, want: &[(u32, usize)]) {
        let done = |c: &Client| {
            want.iter()
                .all(|(s, n)| c.received.get(s).map_or(0, Vec::len) >= *n)
        };
        let r = tokio::time::timeout(STEP, async {
            while !done(self) {
                let e = self.events.recv().await.expect("client task runs");
                self.note(e);
            }
        })
        .await;
        let counts: BTreeMap<String, usize> = self
            .received
            .iter()
            .map(|(s, v)| (format!("{s:08x}"), v.len()))
            .collect();
        let wanted: Vec<String> = want
            .iter()
            .map(|(s, n)| format!("{n} from {s:08x}"))
            .collect();
        assert!(
            r.is_ok(),
            "client {:08x} expected {wanted:?}, got {counts:?}",
            self.ssrc
        );
        for (s, n) in want {
            let got = &self.received[s];
            assert_eq!(got.len(), *n, "duplicates from {s:08x}: {counts:?}");
            let first = got[0].sequence;
            for (i, p) in got.iter().enumerate() {
                let seq = first + i as u16;
                assert_eq!(
                    (p.ssrc, p.sequence, p.timestamp, p.payload_type, p.marker),
                    (*s, seq, seq as u32 * 960, 111, seq == 0),
                    "packet {i} from {s:08x} as received by {:08x}",
                    self.ssrc
                );
                assert_eq!(&p.payload[..], &payload_for(*s, seq)[..], "payload intact");
            }
        }
        assert!(
            !self.received.contains_key(&self.ssrc),
            "the server echoed {:08x}'s own packets back",
            self.ssrc
        );
    }

    /// Sends one packet exactly as given.
    fn send_packet(&self, ssrc: u32, seq: u16, ts: u32, pt: u8, payload: Vec<u8>) {
        self.send
            .send(Send::Packet {
                ssrc,
                seq,
                ts,
                pt,
                payload,
            })
            .expect("client task runs");
    }

    fn send_text(&self, text: &str) {
        self.send
            .send(Send::Text(text.to_owned()))
            .expect("client task runs");
    }

    /// Waits until the data channel is open.
    async fn channel_opened(&mut self) {
        let r = tokio::time::timeout(STEP, async {
            while !self.channel_open {
                let e = self.events.recv().await.expect("client task runs");
                self.note(e);
            }
        })
        .await;
        assert!(
            r.is_ok(),
            "client {:08x}: the data channel never opened",
            self.ssrc
        );
    }

    fn send_rtcp(&self, packets: Vec<Box<dyn rtcp::packet::Packet>>) {
        self.send
            .send(Send::Rtcp(packets))
            .expect("client task runs");
    }

    /// The media SSRCs of keyframe requests (PLI) received so far.
    fn plis(&self) -> Vec<u32> {
        use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
        self.rtcp
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<PictureLossIndication>())
            .map(|p| p.media_ssrc)
            .collect()
    }

    /// Waits until `n` packets arrived on `ssrc`.
    async fn expect_video(&mut self, ssrc: u32, n: usize) {
        let r = tokio::time::timeout(STEP, async {
            while self.received.get(&ssrc).map_or(0, Vec::len) < n {
                let e = self.events.recv().await.expect("client task runs");
                self.note(e);
            }
        })
        .await;
        assert!(
            r.is_ok(),
            "expected {n} packets on {ssrc:08x}, got {}",
            self.received.get(&ssrc).map_or(0, Vec::len)
        );
    }

    /// Reads what arrives for `d`; fails on a failure report.
    async fn idle(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, async {
            while let Some(e) = self.events.recv().await {
                self.note(e);
            }
        })
        .await;
    }
}

#[tokio::test]
async fn two_participants_exchange_rtp_both_ways() {
    bounded(async {
        let h = Harness::start().await;
        let mut a = h.join(10).await;
        let mut b = h.join(11).await;
        a.connected().await;
        b.connected().await;
        h.server_connected(a.ssrc).await;
        h.server_connected(b.ssrc).await;

        a.send(50);
        b.send(50);
        a.expect(&[(b.ssrc, 50)]).await;
        b.expect(&[(a.ssrc, 50)]).await;

        let sa = h.server.participant_stats(h.call, a.ssrc).await.unwrap();
        let sb = h.server.participant_stats(h.call, b.ssrc).await.unwrap();
        assert_eq!((sa.rtp_received, sa.rtp_sent), (50, 50), "{sa:?}");
        assert_eq!((sb.rtp_received, sb.rtp_sent), (50, 50), "{sb:?}");
        let t = h.server.media_totals().await.unwrap();
        assert_eq!(
            (t.rtp_in, t.rtp_forwarded, t.forward_failures),
            (100, 100, 0)
        );
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_late_joiner_receives_both_earlier_participants() {
    bounded(async {
        let h = Harness::start().await;
        let mut a = h.join(10).await;
        let mut b = h.join(11).await;
        a.connected().await;
        b.connected().await;
        h.server_connected(a.ssrc).await;
        h.server_connected(b.ssrc).await;
        a.send(20);
        b.send(20);
        a.expect(&[(b.ssrc, 20)]).await;
        b.expect(&[(a.ssrc, 20)]).await;

        // The third joins after media has flowed; what it gets starts with its connection.
        let mut c = h.join(12).await;
        c.connected().await;
        h.server_connected(c.ssrc).await;
        a.send(30);
        b.send(30);
        c.send(30);
        c.expect(&[(a.ssrc, 30), (b.ssrc, 30)]).await;
        a.expect(&[(b.ssrc, 50), (c.ssrc, 30)]).await;
        b.expect(&[(a.ssrc, 50), (c.ssrc, 30)]).await;
        // C hears A and B from their first packet after it joined: nothing is replayed to it.
        assert_eq!(c.received[&a.ssrc][0].sequence, 20);
        assert_eq!(c.received[&b.ssrc][0].sequence, 20);

        let sc = h.server.participant_stats(h.call, c.ssrc).await.unwrap();
        assert_eq!((sc.rtp_received, sc.rtp_sent), (30, 60), "{sc:?}");
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_impostor_certificate_never_connects_and_gets_nothing() {
    bounded(async {
        let h = Harness::start().await;
        let mut a = h.join(10).await;
        let mut b = h.join(11).await;
        // The payload carries one identity's fingerprint; DTLS runs with another certificate.
        let other = LocalIdentity::generate().unwrap();
        let mut x = h
            .join_with(12, TransportConfig::default(), Some(other))
            .await;
        a.connected().await;
        b.connected().await;
        h.server_connected(a.ssrc).await;
        h.server_connected(b.ssrc).await;

        a.send(20);
        b.send(20);
        a.expect(&[(b.ssrc, 20)]).await;
        b.expect(&[(a.ssrc, 20)]).await;

        // The impostor's transport may fail on its own (the server aborts the handshake); that
        // is fine, only a connection or media would not be.
        let impostor_events = tokio::time::timeout(Duration::from_millis(500), async {
            let mut seen = Vec::new();
            while let Some(e) = x.events.recv().await {
                seen.push(match e {
                    ClientEvent::Connected(p) => format!("connected with {p}"),
                    ClientEvent::Rtp(p) => format!("RTP from {:08x}", p.ssrc),
                    ClientEvent::Failed(c) => {
                        println!("impostor failed as expected: {c}");
                        continue;
                    }
                    ClientEvent::SendFailed(c) => format!("send failed: {c}"),
                    ClientEvent::Rtcp(_) | ClientEvent::ChannelOpen | ClientEvent::Text(_) => {
                        continue
                    }
                });
            }
            seen
        })
        .await;
        if let Ok(seen) = &impostor_events {
            assert!(seen.is_empty(), "impostor got {seen:?}");
        }
        assert!(x.connected.is_none() && x.received.is_empty());

        let stats = |s| h.server.participant_stats(h.call, s);
        let (sa, sb) = (stats(a.ssrc).await.unwrap(), stats(b.ssrc).await.unwrap());
        assert_eq!((sa.rtp_received, sb.rtp_received), (20, 20));
        assert_eq!((sa.rtp_sent, sb.rtp_sent), (20, 20));
        let t = h.server.media_totals().await.unwrap();
        assert_eq!(
            (t.rtp_in, t.rtp_forwarded),
            (40, 40),
            "only A and B were forwarded to: {t:?}"
        );
        if let Some(sx) = stats(x.ssrc).await {
            assert!(!sx.connected && sx.rtp_sent == 0, "{sx:?}");
        }

        // The refused connection is dropped and published as left.
        let gone = tokio::time::timeout(STEP, async {
            while h.sources().await.contains(&x.ssrc) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(gone.is_ok(), "the impostor is still a participant");
        assert!(stats(x.ssrc).await.is_none());
        let mut remaining = h.sources().await;
        remaining.sort_unstable();
        let mut want = vec![a.ssrc, b.ssrc];
        want.sort_unstable();
        assert_eq!(remaining, want);
        h.server.shutdown().await;
    })
    .await;
}

/// A tiny deterministic generator for the garbage (no extra dependency, reproducible runs).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A STUN Binding Request with `username`, a MESSAGE-INTEGRITY of garbage and no FINGERPRINT.
fn binding_request(username: &str, rng: &mut XorShift) -> Vec<u8> {
    let mut attrs = Vec::new();
    let u = username.as_bytes();
    attrs.extend(0x0006u16.to_be_bytes());
    attrs.extend((u.len() as u16).to_be_bytes());
    attrs.extend(u);
    attrs.resize(attrs.len().next_multiple_of(4), 0);
    attrs.extend(0x0008u16.to_be_bytes());
    attrs.extend(20u16.to_be_bytes());
    attrs.extend(rng.bytes(20));
    let mut m = Vec::new();
    m.extend(0x0001u16.to_be_bytes());
    m.extend((attrs.len() as u16).to_be_bytes());
    m.extend(0x2112_A442u32.to_be_bytes());
    m.extend(rng.bytes(12));
    m.extend(attrs);
    m
}

#[tokio::test]
async fn garbage_from_strangers_changes_nothing() {
    bounded(async {
        let h = Harness::start().await;
        let mut a = h.join(10).await;
        let mut b = h.join(11).await;
        a.connected().await;
        b.connected().await;
        h.server_connected(a.ssrc).await;
        h.server_connected(b.ssrc).await;
        let before = h.server.media_totals().await.unwrap();

        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut strangers: Vec<Vec<u8>> = Vec::new();
        // Random datagrams of every class the demultiplexer knows, and none.
        for len in [0usize, 1, 2, 3, 11, 12, 13, 20, 100, 500, 1200, 1500] {
            strangers.push(rng.bytes(len));
        }
        for first in [0u8, 1, 20, 22, 23, 64, 128, 0x80, 0x90, 191, 200, 255] {
            let mut d = rng.bytes(60);
            d[0] = first;
            strangers.push(d);
        }
        // Truncated and unroutable STUN: a real request cut short, one naming no participant,
        // one with a length field pointing past the end.
        let real = binding_request(&format!("{}:{}", a.server_ufrag, a.client_ufrag), &mut rng);
        for cut in [1usize, 4, 19, 20, 21, 24, 30, real.len() - 1] {
            strangers.push(real[..cut].to_vec());
        }
        strangers.push(binding_request("nobody00nobody00:abcd", &mut rng));
        let mut long = binding_request("nobody00nobody00:abcd", &mut rng);
        long[2..4].copy_from_slice(&400u16.to_be_bytes());
        strangers.push(long);
        // Fake RTP and RTCP claiming A's SSRC, and a fake DTLS handshake record.
        for pt in [111u8, 0x80 | 111, 105] {
            let mut d = vec![0x80, pt, 0, 7, 0, 0, 1, 0];
            d.extend(a.ssrc.to_be_bytes());
            d.extend(rng.bytes(80));
            strangers.push(d);
        }
        let mut rtcp = vec![0x80, 200, 0, 6];
        rtcp.extend(a.ssrc.to_be_bytes());
        rtcp.extend(rng.bytes(20));
        strangers.push(rtcp);
        let mut dtls = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40];
        dtls.extend(rng.bytes(40));
        strangers.push(dtls);
        // Checks naming a real participant, but without its password: these reach A's
        // transport (routing is by ufrag) and must be dropped there, address unchanged.
        let forged: Vec<Vec<u8>> = (0..5)
            .map(|_| binding_request(&format!("{}:{}", a.server_ufrag, a.client_ufrag), &mut rng))
            .collect();

        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let media = h.server.media_addr();
        for d in strangers.iter().chain(&forged) {
            stranger.send_to(d, media).await.unwrap();
        }
        // And while the pair talks.
        a.send(40);
        b.send(40);
        for d in strangers.iter().chain(&forged) {
            stranger.send_to(d, media).await.unwrap();
        }
        a.expect(&[(b.ssrc, 40)]).await;
        b.expect(&[(a.ssrc, 40)]).await;

        let after = h.server.media_totals().await.unwrap();
        assert_eq!(
            after.strangers - before.strangers,
            2 * strangers.len() as u64,
            "every unroutable datagram is counted: {after:?}"
        );
        assert_eq!((after.rtp_in, after.rtp_forwarded), (80, 80), "{after:?}");
        // The server answers no stranger (no reflection, no amplification).
        let mut buf = [0u8; 2048];
        let answered =
            tokio::time::timeout(Duration::from_millis(200), stranger.recv_from(&mut buf)).await;
        assert!(answered.is_err(), "the server answered a stranger");
        // The forged checks did not move A: the pair still talks both ways.
        a.send(10);
        b.send(10);
        a.expect(&[(b.ssrc, 50)]).await;
        b.expect(&[(a.ssrc, 50)]).await;
        assert!(
            h.server
                .participant_stats(h.call, a.ssrc)
                .await
                .unwrap()
                .connected
        );
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn every_srtp_profile_works_against_the_server() {
    bounded(async {
        let h = Harness::start().await;
        for (i, profile) in SrtpProfile::ALL.into_iter().enumerate() {
            let config = || TransportConfig {
                srtp_profiles: vec![profile],
                ..TransportConfig::default()
            };
            let peer = 100 + 2 * i as i64;
            let mut a = h.join_with(peer, config(), None).await;
            let mut b = h.join_with(peer + 1, config(), None).await;
            assert_eq!(a.connected().await, profile);
            assert_eq!(b.connected().await, profile);
            h.server_connected(a.ssrc).await;
            h.server_connected(b.ssrc).await;
            a.send(10);
            b.send(10);
            a.expect(&[(b.ssrc, 10)]).await;
            b.expect(&[(a.ssrc, 10)]).await;
            // Leave, so that the next pair's counts are its own.
            for (peer, c) in [(peer, &a), (peer + 1, &b)] {
                let (status, v) = h
                    .post(
                        &format!("/calls/{}/leave", h.call),
                        json!({"peer": peer, "source": c.ssrc as i32}),
                    )
                    .await;
                assert_eq!(status, 200, "leave: {v}");
            }
            println!("{profile}: ok");
        }
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn join_errors_from_the_real_server() {
    bounded(async {
        let h = Harness::start().await;
        let a = h.join(10).await;
        // Another peer claiming A's source.
        let mut payload: Value = serde_json::from_str(
            &JoinPayload::new(&LocalIdentity::generate().unwrap(), VideoPublish::None).to_json(),
        )
        .unwrap();
        payload["ssrc"] = json!(a.ssrc as i32);
        let (status, v) = h
            .post(
                &format!("/calls/{}/join", h.call),
                json!({"peer": 11, "params": payload.to_string()}),
            )
            .await;
        assert_eq!(
            (status, v["error"]["type"].as_str()),
            (400, Some("GROUPCALL_SSRC_DUPLICATE_MUCH")),
            "{v}"
        );
        let (status, v) = h
            .post(
                &format!("/calls/{}/join", h.call),
                json!({"peer": 11, "params": "{\"ufrag\": 12"}),
            )
            .await;
        assert_eq!(
            (status, v["error"]["type"].as_str()),
            (400, Some("DATA_JSON_INVALID")),
            "{v}"
        );
        assert_eq!(h.sources().await, [a.ssrc]);
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn rtp_on_a_source_the_sender_does_not_own_is_not_forwarded() {
    bounded(async {
        let h = Harness::start().await;
        let mut a = h.join(10).await;
        let mut b = h.join(11).await;
        let mut c = h.join(12).await;
        for x in [&mut a, &mut b, &mut c] {
            x.connected().await;
            h.server_connected(x.ssrc).await;
        }
        // C sends as B (whose listeners map B's source to B's peer) and on a source nobody
        // declared; then everyone sends as themselves.
        c.send_as(b.ssrc, 20);
        c.send_as(0x0bad_f00d, 20);
        a.send(10);
        b.send(10);
        c.send(10);
        a.expect(&[(b.ssrc, 10), (c.ssrc, 10)]).await;
        b.expect(&[(a.ssrc, 10), (c.ssrc, 10)]).await;
        c.expect(&[(a.ssrc, 10), (b.ssrc, 10)]).await;
        a.idle(Duration::from_millis(200)).await;
        b.idle(Duration::from_millis(200)).await;
        for x in [&a, &b] {
            let got: BTreeMap<u32, usize> = x.received.iter().map(|(s, v)| (*s, v.len())).collect();
            assert_eq!(
                got.keys().copied().collect::<Vec<_>>(),
                {
                    let mut k: Vec<u32> = [a.ssrc, b.ssrc, c.ssrc]
                        .into_iter()
                        .filter(|s| *s != x.ssrc)
                        .collect();
                    k.sort_unstable();
                    k
                },
                "{:08x} received {got:x?}",
                x.ssrc
            );
        }
        let t = h.server.media_totals().await.unwrap();
        // The 40 packets on sources C does not own were dropped before decryption.
        assert_eq!((t.rtp_in, t.rtp_forwarded), (30, 60), "{t:?}");
        assert_eq!(t.rtp_foreign_ssrc, 40, "{t:?}");
        h.server.shutdown().await;
    })
    .await;
}

/// A participant sending on 200 sources it never declared (authentic SRTP, its own keys) makes
/// the server keep no state for them: they are dropped and counted before decryption, while its
/// own source is forwarded as usual.
#[tokio::test]
async fn unknown_sources_get_no_state_and_are_counted() {
    bounded(async {
        let h = Harness::start().await;
        let mut a = h.join(10).await;
        let mut c = h.join(12).await;
        for x in [&mut a, &mut c] {
            x.connected().await;
            h.server_connected(x.ssrc).await;
        }
        let before = h.server.media_totals().await.unwrap();
        for i in 0..200u32 {
            c.send_as(0x4000_0000 + i, 2);
        }
        c.send(10);
        a.expect(&[(c.ssrc, 10)]).await;
        a.idle(Duration::from_millis(200)).await;
        assert_eq!(
            a.received.keys().copied().collect::<Vec<_>>(),
            [c.ssrc],
            "only C's own source is forwarded"
        );
        let t = tokio::time::timeout(STEP, async {
            loop {
                let t = h.server.media_totals().await.unwrap();
                if t.rtp_foreign_ssrc - before.rtp_foreign_ssrc >= 400 {
                    return t;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the server counted every packet on an unknown source");
        assert_eq!(t.rtp_foreign_ssrc - before.rtp_foreign_ssrc, 400, "{t:?}");
        assert_eq!(t.rtp_in - before.rtp_in, 10, "{t:?}");
        let sc = h.server.participant_stats(h.call, c.ssrc).await.unwrap();
        assert_eq!(
            (sc.receive_ssrcs, sc.rtp_received),
            (1, 10),
            "receive state for C's own source only: {sc:?}"
        );
        let sa = h.server.participant_stats(h.call, a.ssrc).await.unwrap();
        assert_eq!(sa.receive_ssrcs, 0, "A sent nothing: {sa:?}");
        h.server.shutdown().await;
    })
    .await;
}

/// A participant alone in a call sends into the void: nothing comes back, nothing is forwarded.
#[tokio::test]
async fn a_lone_participant_receives_nothing() {
    bounded(async {
        let h = Harness::start().await;
        let mut a = h.join(10).await;
        a.connected().await;
        h.server_connected(a.ssrc).await;
        a.send(10);
        a.idle(Duration::from_millis(300)).await;
        assert!(a.received.is_empty(), "nothing to forward to, nothing back");
        let sa = h.server.participant_stats(h.call, a.ssrc).await.unwrap();
        assert_eq!((sa.rtp_received, sa.rtp_sent), (10, 0));
        assert_eq!(h.server.media_totals().await.unwrap().rtp_forwarded, 0);
        h.server.shutdown().await;
    })
    .await;
}

/// A VP8 packet of `layer`: payload descriptor with S set (partition 0), then the frame
/// header's first byte (keyframe when its lowest bit is clear), then bytes naming the layer and
/// frame so a receiver can tell what it got.
fn vp8(layer: usize, frame: u16, key: bool) -> Vec<u8> {
    let mut p = vec![0x10, if key { 0x50 } else { 0x51 }];
    p.extend(format!("layer {layer} frame {frame:05}").into_bytes());
    p
}

fn layer_and_frame(p: &RtpPacket) -> (usize, u16) {
    let text = std::str::from_utf8(&p.payload[2..]).expect("text after the VP8 headers");
    let mut words = text.split(' ');
    let layer = words.nth(1).unwrap().parse().unwrap();
    let frame = words.nth(1).unwrap().parse().unwrap();
    (layer, frame)
}

/// A camera in three simulcast layers (docs/protocol.md §1.2, §5.3): each receiver gets one
/// layer, the highest that is sending, re-stamped onto the first SSRC of the SIM group with one
/// continuous sequence-number line; a switch happens only where the new layer has a keyframe,
/// and the server asks the publisher for the keyframes it waits for. A receiver's PLI about the
/// stream reaches the publisher as a PLI of the layer being sent.
#[tokio::test]
async fn a_simulcast_camera_reaches_each_receiver_as_one_layer_switched_on_keyframes() {
    bounded(async {
        let h = Harness::start().await;
        let mut a = h.join_video(10, VideoPublish::Camera).await;
        let mut b = h.join(11).await;
        for c in [&mut a, &mut b] {
            c.connected().await;
            h.server_connected(c.ssrc).await;
        }
        // Camera layout of A's payload: SIM [a+1, a+3, a+5], RTX at +1 of each.
        let sim = [a.ssrc + 1, a.ssrc + 3, a.ssrc + 5];
        // Independent encoders: unrelated numbering per layer.
        let mut seq = [100u16, 30_000, 65_500];
        let mut ts = [5_000u32, 900_000, 4_000_000_000];
        let mut frame = 0u16;
        let mut send_frame = |a: &Client, layers: &[usize], key: bool, frame: &mut u16| {
            for &l in layers {
                a.send_packet(sim[l], seq[l], ts[l], 100, vp8(l, *frame, key));
                seq[l] = seq[l].wrapping_add(1);
                ts[l] = ts[l].wrapping_add(3000);
            }
            *frame += 1;
        };
        let tick = || tokio::time::sleep(Duration::from_millis(33));

        // Delta frames only: nothing B could decode is sent, and A is asked for a keyframe of
        // the top layer.
        for _ in 0..5 {
            send_frame(&a, &[0, 1, 2], false, &mut frame);
            tick().await;
        }
        b.idle(Duration::from_millis(100)).await;
        assert!(
            b.received.is_empty(),
            "undecodable frames were sent: {:?}",
            b.received.keys()
        );
        a.idle(Duration::from_millis(100)).await;
        assert!(
            a.plis().contains(&sim[2]),
            "keyframe requests: {:?}",
            a.plis()
        );

        // A keyframe on every layer: B gets layer 2 from it on, as SIM[0].
        send_frame(&a, &[0, 1, 2], true, &mut frame);
        for _ in 0..10 {
            tick().await;
            send_frame(&a, &[0, 1, 2], false, &mut frame);
        }
        // Layer 2 stops (A's bandwidth went down): after a second B falls back to layer 1, at
        // its next keyframe, and the server asks for one.
        for _ in 0..40 {
            tick().await;
            send_frame(&a, &[0, 1], false, &mut frame);
        }
        a.idle(Duration::from_millis(50)).await;
        assert!(
            a.plis().contains(&sim[1]),
            "keyframe requests: {:?}",
            a.plis()
        );
        send_frame(&a, &[0, 1], true, &mut frame);
        for _ in 0..10 {
            tick().await;
            send_frame(&a, &[0, 1], false, &mut frame);
        }
        b.expect_video(sim[0], 11 + 11).await;
        let got = &b.received[&sim[0]];
        assert!(
            b.received.keys().all(|s| *s == sim[0]),
            "only SIM[0]: {:?}",
            b.received.keys()
        );
        let seen: Vec<(usize, u16)> = got.iter().map(layer_and_frame).collect();
        // Layer 2 from its keyframe (frame 5) to its last frame, then layer 1 from its keyframe.
        let switch = seen
            .iter()
            .position(|(l, _)| *l == 1)
            .expect("a switch to layer 1");
        assert!(seen[..switch].iter().all(|(l, _)| *l == 2), "{seen:?}");
        assert_eq!(seen[0], (2, 5), "starts on layer 2's keyframe");
        assert_eq!(
            seen[switch].1, 56,
            "switches on layer 1's keyframe: {seen:?}"
        );
        assert!(got[0].payload[1] & 1 == 0 && got[switch].payload[1] & 1 == 0);
        for w in got.windows(2) {
            assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1), "continuous");
            let dt = w[1].timestamp.wrapping_sub(w[0].timestamp);
            assert!(dt > 0 && dt < 0x8000_0000, "timestamps move forward: {dt}");
        }
        // Across the switch the timestamps follow the ~1.3 s B waited (90 kHz).
        let gap = got[switch]
            .timestamp
            .wrapping_sub(got[switch - 1].timestamp);
        assert!((90_000..180_000).contains(&gap), "gap {gap}");

        // B asks for a keyframe of what it gets (SIM[0]): A is asked for layer 1's.
        let before = a.plis().len();
        b.send_rtcp(vec![Box::new(
            rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                sender_ssrc: b.ssrc,
                media_ssrc: sim[0],
            },
        )]);
        tokio::time::sleep(Duration::from_millis(400)).await;
        a.idle(Duration::from_millis(100)).await;
        assert_eq!(a.plis()[before..], [sim[1]], "all: {:?}", a.plis());
        let t = h.server.media_totals().await.unwrap();
        assert!(t.layer_keyframe_requests >= 2, "{t:?}");
        assert_eq!(t.keyframe_requests, 1, "{t:?}");
        h.server.shutdown().await;
    })
    .await;
}

/// A screen share is a second, send-only connection: others get its video, it gets nothing,
/// and leaving the presentation drops only that connection.
#[tokio::test]
async fn a_screen_share_is_forwarded_to_the_others_and_gets_nothing_itself() {
    bounded(async {
        let h = Harness::start().await;
        let mut a = h.join(10).await;
        let mut b = h.join(11).await;
        for c in [&mut a, &mut b] {
            c.connected().await;
            h.server_connected(c.ssrc).await;
        }
        let mut s = h.share_screen(10).await;
        s.connected().await;
        h.server_connected(s.ssrc).await;
        let info = h.get(&format!("/calls/{}", h.call)).await;
        let shown = &info["participants"][0]["presentation"];
        assert_eq!(
            shown["audio_source"].as_i64().map(|x| x as u32),
            Some(s.ssrc),
            "{info}"
        );
        assert!(shown["endpoint"].as_str().unwrap().starts_with("screen-"));

        // Its first layer, a keyframe then deltas: B gets them as SIM[0] (S+1).
        let sim0 = s.ssrc + 1;
        for f in 0..10u16 {
            s.send_packet(sim0, 500 + f, 3000 * f as u32, 100, vp8(0, f, f == 0));
            s.send_packet(s.ssrc + 3, 900 + f, 3000 * f as u32, 100, vp8(1, f, f == 0));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        b.send(20);
        b.expect_video(sim0, 10).await;
        let layers: Vec<usize> = b.received[&sim0]
            .iter()
            .map(|p| layer_and_frame(p).0)
            .collect();
        // The first keyframe heard starts the stream (layer 0's came first); the top layer's
        // keyframe right after switches to it.
        assert!(
            layers[1..].iter().all(|l| *l == 1),
            "the top layer: {layers:?}"
        );
        s.idle(Duration::from_millis(300)).await;
        assert!(
            s.received.is_empty(),
            "the share received {:?}",
            s.received.keys()
        );
        a.expect(&[(b.ssrc, 20)]).await;

        let (status, left) = h
            .post(
                &format!("/calls/{}/presentation/leave", h.call),
                json!({"peer": 10}),
            )
            .await;
        assert_eq!(status, 200, "{left}");
        assert!(left["participant"]["presentation"].is_null());
        assert!(h.sources().await.contains(&a.ssrc), "A stays in the call");
        h.server.shutdown().await;
    })
    .await;
}

/// Receivers say over the data channel how tall they want each endpoint's video
/// (`ReceiverVideoConstraints`, docs/protocol.md §6): a receiver asking 360 of a camera gets its
/// middle layer, asking 0 gets none; the publisher hears the tallest anyone wants
/// (`SenderVideoConstraints`). A receiver that never says gets the top layer.
#[tokio::test]
async fn receivers_constraints_pick_their_layer_and_reach_the_publisher() {
    bounded(async {
        let h = Harness::start().await;
        let with_channel = TransportConfig {
            data_channel: true,
            ..TransportConfig::default()
        };
        let mut a = h
            .join_full(10, with_channel.clone(), None, VideoPublish::Camera)
            .await;
        let mut b = h.join_with(11, with_channel, None).await;
        let mut c = h.join(12).await; // no data channel
        for x in [&mut a, &mut b, &mut c] {
            x.connected().await;
            h.server_connected(x.ssrc).await;
        }
        a.channel_opened().await;
        b.channel_opened().await;
        let endpoint = format!("endpoint-{}", a.ssrc);
        let ask = |height: u32| {
            format!(
                r#"{{"colibriClass":"ReceiverVideoConstraints","constraints":{{"{endpoint}":{{"minHeight":180,"maxHeight":{height}}}}},"defaultConstraints":{{"maxHeight":0}},"onStageEndpoints":[]}}"#
            )
        };
        b.send_text(&ask(360));
        b.send_text(r#"{"colibriClass":"EndpointStats"}"#);
        b.send_text("not json");
        tokio::time::sleep(Duration::from_millis(200)).await;

        let sim = [a.ssrc + 1, a.ssrc + 3, a.ssrc + 5];
        let mut seq = [10u16, 20_000, 40_000];
        let mut frame = 0u16;
        let mut send_frames = |a: &Client, n: u16, frame: &mut u16| {
            for i in 0..n {
                for (l, s) in sim.iter().enumerate() {
                    a.send_packet(*s, seq[l], 3000 * *frame as u32, 100, vp8(l, *frame, i == 0));
                    seq[l] = seq[l].wrapping_add(1);
                }
                *frame += 1;
            }
        };
        send_frames(&a, 10, &mut frame);
        b.expect_video(sim[0], 10).await;
        c.expect_video(sim[0], 9).await;
        let b_layers: Vec<usize> = b.received[&sim[0]].iter().map(|p| layer_and_frame(p).0).collect();
        // From the first keyframe heard (layer 0's came first in the frame) to layer 1's.
        assert!(b_layers[1..].iter().all(|l| *l == 1), "B asked for 360: {b_layers:?}");
        // C never said: the top layer, from layer 2's keyframe (after a first packet of layer 0
        // or 1, whichever keyframe came first).
        let c_last = layer_and_frame(c.received[&sim[0]].last().unwrap()).0;
        assert_eq!(c_last, 2);

        // A hears the tallest wanted: C (no constraints) counts as the top.
        a.idle(Duration::from_millis(200)).await;
        assert!(
            a.texts.iter().any(|t| t.contains("SenderVideoConstraints") && t.contains("720")),
            "{:?}",
            a.texts
        );

        // B turns A off: nothing more for B, C goes on.
        b.send_text(&ask(0));
        b.idle(Duration::from_millis(200)).await;
        let before = b.received[&sim[0]].len();
        send_frames(&a, 5, &mut frame);
        c.expect_video(sim[0], 14).await;
        b.idle(Duration::from_millis(200)).await;
        assert_eq!(b.received[&sim[0]].len(), before, "B asked for none");

        // C, the last one wanting A's video, leaves: A is told nobody wants any.
        let (status, left) = h
            .post(
                &format!("/calls/{}/leave", h.call),
                json!({"peer": 12, "source": c.ssrc as i32}),
            )
            .await;
        assert_eq!(status, 200, "{left}");
        a.idle(Duration::from_millis(300)).await;
        assert!(
            a.texts.last().is_some_and(|t| t.contains(r#""idealHeight":0"#)),
            "{:?}",
            a.texts
        );

        let t = h.server.media_totals().await.unwrap();
        assert_eq!(
            (t.constraints_received, t.data_messages_ignored, t.data_messages_malformed),
            (2, 1, 1),
            "{t:?}"
        );
        assert!(t.sender_constraints_sent >= 1, "{t:?}");
        h.server.shutdown().await;
    })
    .await;
}
