//! The transport: ICE, then DTLS with the peer's certificate pinned, then SRTP, on one UDP
//! 5-tuple, as a sans-IO state machine in the style of `quinn-proto`.
//!
//! The driver (a tokio loop, a test's simulated network) owns the socket and the clock:
//! - every received datagram goes to [`Transport::handle_datagram`];
//! - after any call, [`Transport::poll_transmit`] yields datagrams to send and
//!   [`Transport::poll_event`] yields what happened (state changes, RTP, RTCP, DTLS data);
//! - [`Transport::poll_timeout`] says when to call [`Transport::handle_timeout`] next.
//!
//! Decrypted RTP is accepted from *any* SSRC: the server forwards every speaker on this one
//! transport under the speaker's own SSRC, and who that is becomes known only later, from the
//! roster.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rtc::dtls::config::HandshakeConfig;
use rtc::dtls::crypto::Certificate;
use rtc::dtls::endpoint::{Endpoint as DtlsEndpoint, EndpointEvent};
use rtc::shared::TransportProtocol;

use crate::answer::RtcAnswer;
use crate::datachannel::{CloseReason, DataChannel, DataChannelEvent, DataChannelStats};
use crate::demux::{classify, PacketClass};
use crate::dtls::{handshake_config, MismatchSlot};
use crate::error::{Error, FailureCause, Result};
use crate::ice::{FullIce, IceState, IceTimeouts, LiteIce};
use crate::identity::{crypto_provider, Fingerprint, IceCredentials};
use crate::payload::{JoinPayload, Setup};
use crate::rtp::{
    abs_send_time_from_micros, restamp, OutgoingRtp, PayloadKind, RtpPacket, RtpParams,
};
use crate::srtp::{SrtpProfile, SrtpSession, Unprotect};
use crate::stats::{SsrcStats, TransportStats};
use crate::twcc::TwccRecorder;

/// Parsed RTCP packets, re-exported so callers need no direct `rtc` dependency.
pub use rtc::rtcp;

/// Which ICE role this side plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceRole {
    /// Full agent that nominates: works against a lite server that never nominates. Default.
    Controlling,
    /// Full agent that waits for the peer to nominate, as tgcalls is configured. rtc-ice then
    /// selects a pair only after a USE-CANDIDATE, which a lite server never sends, so this
    /// connects only to a full, controlling peer.
    Controlled,
    /// The server side: strict ICE-lite responder (see [`crate::ice`]).
    Lite,
}

/// Settings of a transport. `Default` is the participant side against Telegram.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub ice_role: IceRole,
    pub ice_timeouts: IceTimeouts,
    /// SRTP profiles offered (or accepted), in preference order.
    pub srtp_profiles: Vec<SrtpProfile>,
    /// Packets of history per SSRC for SRTP replay protection.
    pub replay_window: usize,
    /// How long a DTLS client waits after ICE succeeds before its ClientHello. A local server
    /// that answers within a few milliseconds otherwise beats libwebrtc's own setup and ntgcalls
    /// loses its CONNECTED event (docs/protocol.md §12.4).
    pub dtls_start_delay: Duration,
    /// The DTLS handshake must finish this long after it starts, or the transport fails.
    pub handshake_timeout: Duration,
    /// Mean time between RTCP receiver reports once connected, randomised to 0.5..1.5 times
    /// this as RFC 3550 §6.3.1 asks (so that many receivers do not report in step). Zero turns
    /// them off.
    pub report_interval: Duration,
    /// When set, arrivals of packets carrying a transport-wide sequence number are reported
    /// back in transport-cc feedback (`twcc`) this long after the first one not yet reported,
    /// so that the sender's bandwidth estimate can grow. `None` sends none and records nothing.
    pub transport_feedback_interval: Option<Duration>,
    /// Whether audio packets carry the transport-wide sequence number too (video always does
    /// when the answer has the extension). A receiver answers every numbered packet with
    /// transport-cc feedback, ten RTCP packets a second, each to be received, decrypted and
    /// parsed; that is worth it only where a bandwidth estimate reads audio's share. The
    /// engine's estimate counts video alone (`engine/src/video/send.rs`), so its calls turn
    /// this off (docs/performance.md §1.2.3).
    pub audio_transport_cc: bool,
    /// Run the data channel (SCTP over this DTLS, docs/protocol.md §6) once DTLS is up: as its
    /// opener when this side is the DTLS server (a participant), as its acceptor when it is the
    /// DTLS client (the server). Off, SCTP records come out as [`Event::ApplicationData`].
    pub data_channel: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            ice_role: IceRole::Controlling,
            ice_timeouts: IceTimeouts::default(),
            srtp_profiles: SrtpProfile::ALL.to_vec(),
            replay_window: 128,
            dtls_start_delay: Duration::ZERO,
            handshake_timeout: Duration::from_secs(10),
            report_interval: Duration::from_secs(1),
            transport_feedback_interval: None,
            audio_transport_cc: true,
            data_channel: false,
        }
    }
}

impl TransportConfig {
    /// The server side of a participant: strict ICE-lite, 30 s silence before failure.
    pub fn server() -> Self {
        TransportConfig {
            ice_role: IceRole::Lite,
            ice_timeouts: IceTimeouts {
                disconnected: Duration::from_secs(10),
                failed: Duration::from_secs(30),
                ..IceTimeouts::default()
            },
            dtls_start_delay: Duration::from_millis(50),
            // Telegram's server feeds libwebrtc's bandwidth estimate; so does this one
            // (every 100 ms, as libwebrtc's own receivers do).
            transport_feedback_interval: Some(Duration::from_millis(100)),
            // Receivers say over it which video they want.
            data_channel: true,
            ..TransportConfig::default()
        }
    }
}

/// This side's half of the transport.
#[derive(Clone)]
pub struct LocalEndpoint {
    /// The bound UDP address; it is the one host candidate (the agent gathers nothing itself).
    pub addr: SocketAddr,
    pub ice: IceCredentials,
    pub certificate: Certificate,
    /// This side's DTLS role as it was signalled. `Actpass` acts as passive.
    pub setup: Setup,
}

/// What signalling said about the other side.
#[derive(Clone, Debug)]
pub struct RemotePeer {
    pub ice: IceCredentials,
    pub fingerprint: Fingerprint,
    /// UDP candidates to check (empty on the server side: participants are learned from checks).
    pub candidates: Vec<SocketAddr>,
    /// Extension ids and payload types both directions use: the answer's, on either side.
    pub rtp: RtpParams,
}

impl RemotePeer {
    /// The server as its answer describes it.
    pub fn from_answer(a: &RtcAnswer) -> Result<Self> {
        let candidates = a.transport.udp_addresses();
        if candidates.is_empty() {
            return Err(Error::NoUsableCandidate);
        }
        Ok(RemotePeer {
            ice: IceCredentials {
                ufrag: a.transport.ufrag.clone(),
                pwd: a.transport.pwd.clone(),
            },
            fingerprint: a.transport.fingerprint()?,
            candidates,
            rtp: a.rtp_params()?,
        })
    }

    /// The payload type to send Opus with, as the answer gives it (docs/protocol.md §2.2).
    pub fn audio_payload_type(&self) -> u8 {
        self.rtp.opus_payload_type()
    }

    /// A participant as its join payload describes it. The payload carries no RTP parameters:
    /// `rtp` is Telegram's fixed numbering, what [`crate::answer::telegram_audio_info`]
    /// announces. A server that announces other values sets `rtp` from its own answer
    /// ([`RtcAnswer::rtp_params`]).
    pub fn from_payload(p: &JoinPayload) -> Result<Self> {
        p.validate()?;
        let fp = p
            .fingerprints
            .first()
            .ok_or_else(|| Error::json("fingerprints", "must hold at least one fingerprint"))?;
        Ok(RemotePeer {
            ice: IceCredentials {
                ufrag: p.ufrag.clone(),
                pwd: p.pwd.clone(),
            },
            fingerprint: fp.sha256()?,
            candidates: Vec::new(),
            rtp: RtpParams::default(),
        })
    }
}

/// Where the connection stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    New,
    /// ICE checks under way.
    Checking,
    /// ICE succeeded; DTLS handshake under way.
    Handshaking,
    /// SRTP keys are in place: media flows.
    Connected,
    /// Was connected; nothing valid from the peer for the disconnected timeout. Recovers by
    /// itself if traffic returns.
    Disconnected,
    Failed(FailureCause),
    Closed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::New => f.write_str("new"),
            State::Checking => f.write_str("checking"),
            State::Handshaking => f.write_str("handshaking"),
            State::Connected => f.write_str("connected"),
            State::Disconnected => f.write_str("disconnected"),
            State::Failed(c) => write!(f, "failed: {c}"),
            State::Closed => f.write_str("closed"),
        }
    }
}

/// What a transport reports.
#[derive(Debug)]
pub enum Event {
    StateChanged(State),
    /// SRTP is ready; `profile` is what DTLS negotiated.
    Connected {
        profile: SrtpProfile,
        remote: SocketAddr,
    },
    /// A decrypted RTP packet from any SSRC.
    Rtp(RtpPacket),
    /// A decrypted RTCP compound packet, parsed.
    Rtcp(Vec<Box<dyn rtcp::packet::Packet>>),
    /// Application data over DTLS (SCTP) when the data channel is off.
    ApplicationData(BytesMut),
    /// The data channel is open: [`Transport::send_data_channel`] works.
    DataChannelOpen,
    /// A text message from the peer over the data channel, in order.
    DataChannelMessage(String),
    /// The data channel is gone for good (the media goes on).
    DataChannelClosed(CloseReason),
}

/// What a sender report says about one outgoing source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderInfo {
    pub ssrc: u32,
    /// The RTP timestamp that corresponds to the report's wallclock time.
    pub rtp_time: u32,
    /// Packets and payload octets sent so far (wrapping, as RTCP counts them).
    pub packets: u32,
    pub octets: u32,
}

/// A wallclock time as a 64-bit NTP timestamp (seconds since 1900 in the high 32 bits).
pub fn ntp_time(t: SystemTime) -> u64 {
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs().wrapping_add(UNIX_TO_NTP);
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub contents: BytesMut,
}

// One per transport, never moved after construction: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Ice {
    Full(FullIce),
    Lite(LiteIce),
}

impl Ice {
    fn remote(&self) -> Option<SocketAddr> {
        match self {
            Ice::Full(i) => i.remote(),
            Ice::Lite(i) => i.remote(),
        }
    }
}

/// The transport's next deadlines ([`Transport::poll_deadlines`]): `prompt` ones must be met
/// on time; `lenient` ones may be served late by up to a few tens of milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadlines {
    pub prompt: Option<Instant>,
    pub lenient: Option<Instant>,
}

impl Deadlines {
    /// The first deadline of either kind.
    pub fn earliest(&self) -> Option<Instant> {
        self.prompt.into_iter().chain(self.lenient).min()
    }
}

/// One ICE/DTLS/SRTP transport. See the module documentation for how to drive it.
pub struct Transport {
    config: TransportConfig,
    local_addr: SocketAddr,
    ice: Ice,
    ice_connected: bool,
    dtls: DtlsEndpoint,
    /// Present while this side still has to send the ClientHello.
    dtls_client: Option<Arc<HandshakeConfig>>,
    dtls_start_at: Option<Instant>,
    dtls_peer: Option<SocketAddr>,
    handshake_deadline: Option<Instant>,
    mismatch: MismatchSlot,
    expected_fingerprint: Fingerprint,
    srtp: Option<SrtpSession>,
    state: State,
    epoch: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: TransportStats,
    scratch: BytesMut,
    rtp: RtpParams,
    /// The transport-wide sequence number of the next packet that carries one: one counter for
    /// every SSRC this transport sends, as the congestion controller at the other end counts
    /// packets per transport (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3).
    transport_seq: u16,
    /// The SSRC receiver reports are sent from: the first this side sent RTP on.
    report_ssrc: Option<u32>,
    next_report: Option<Instant>,
    twcc: Option<TwccRecorder>,
    next_feedback: Option<Instant>,
    is_dtls_client: bool,
    data_channel: Option<DataChannel>,
    last_report: Option<Instant>,
    /// xorshift state for the report interval's randomisation.
    report_rng: u64,
}

/// The SSRC a side that has sent no RTP uses for its receiver reports, as libwebrtc does.
const RECEIVE_ONLY_SSRC: u32 = 1;

/// At most this many report blocks fit the 5-bit count of one RR (RFC 3550 §6.4.2).
const MAX_REPORT_BLOCKS: usize = 31;

impl Transport {
    /// Builds a transport and starts ICE. The participant side starts sending checks at the
    /// first [`poll_transmit`](Self::poll_transmit); the lite side waits for them.
    pub fn new(
        config: TransportConfig,
        local: LocalEndpoint,
        remote: RemotePeer,
        now: Instant,
    ) -> Result<Self> {
        let provider = crypto_provider()?;
        let ice = match config.ice_role {
            IceRole::Lite => Ice::Lite(LiteIce::new(
                now,
                provider.clone(),
                &local.ice,
                &remote.ice,
                config.ice_timeouts,
            )),
            role => Ice::Full(FullIce::new(
                now,
                provider.clone(),
                &local.ice,
                local.addr,
                &remote.ice,
                &remote.candidates,
                role == IceRole::Controlling,
                config.ice_timeouts,
            )?),
        };
        let rtp = remote.rtp.clone();
        let mismatch: MismatchSlot = Arc::new(OnceLock::new());
        let is_dtls_client = local.setup.is_dtls_client();
        let hs = Arc::new(handshake_config(
            &provider,
            &local.certificate,
            is_dtls_client,
            remote.fingerprint,
            &config.srtp_profiles,
            mismatch.clone(),
        )?);
        let (dtls, dtls_client) = if is_dtls_client {
            (
                DtlsEndpoint::new(local.addr, TransportProtocol::UDP, None),
                Some(hs),
            )
        } else {
            (
                DtlsEndpoint::new(local.addr, TransportProtocol::UDP, Some(hs)),
                None,
            )
        };
        let twcc = config
            .transport_feedback_interval
            .map(|_| TwccRecorder::new(RECEIVE_ONLY_SSRC));
        let mut t = Transport {
            config,
            local_addr: local.addr,
            ice,
            ice_connected: false,
            dtls,
            dtls_client,
            dtls_start_at: None,
            dtls_peer: None,
            handshake_deadline: None,
            mismatch,
            expected_fingerprint: remote.fingerprint,
            srtp: None,
            state: State::New,
            epoch: now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: TransportStats::default(),
            scratch: BytesMut::with_capacity(1500),
            rtp,
            transport_seq: 1,
            report_ssrc: None,
            next_report: None,
            twcc,
            next_feedback: None,
            is_dtls_client,
            data_channel: None,
            last_report: None,
            // Never zero, which would stick xorshift at zero.
            report_rng: rand::random::<u64>() | 1,
        };
        t.after_ice(now);
        Ok(t)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn stats(&self) -> &TransportStats {
        &self.stats
    }

    /// The SSRC this side's receiver reports come from, before it sends any RTP (after, it is
    /// the first SSRC sent on). A Telegram client always declares an audio SSRC in its join
    /// payload, muted or not, and a server may drop RTCP from any other (the local server does:
    /// docs/protocol.md §5.3); without this, a listener reports from SSRC 1 as libwebrtc does
    /// for a receive-only side.
    pub fn set_report_ssrc(&mut self, ssrc: u32) {
        self.report_ssrc = Some(ssrc);
    }

    /// Forgets `ssrc`'s reception statistics: a sender gone for good (it left, or was silent
    /// past the engine's timeout) must not keep its entry forever. It starts afresh if it
    /// sends again.
    pub fn forget_ssrc(&mut self, ssrc: u32) {
        self.stats.ssrcs.remove(&ssrc);
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address media goes to: the selected pair (participant) or the source of the latest
    /// valid check (server).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.ice.remote()
    }

    /// The negotiated SRTP profile, once connected.
    pub fn srtp_profile(&self) -> Option<SrtpProfile> {
        self.srtp.as_ref().map(|s| s.profile)
    }

    /// Extension ids and payload types in use, from the remote side's description.
    pub fn rtp_params(&self) -> &RtpParams {
        &self.rtp
    }

    /// The payload type to send Opus with (see [`RemotePeer::audio_payload_type`]).
    pub fn audio_payload_type(&self) -> u8 {
        self.rtp.opus_payload_type()
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether datagrams may wait in the socket for a few tens of milliseconds before they
    /// are fed: keyed and connected, nothing that times arrivals (transport-cc feedback), and
    /// the data channel, if any, past its handshake. A driver that plays audio out on a clock
    /// can then read at that clock instead of waking for every packet; it must still give
    /// each RTP packet its own arrival time (the jitter buffer measures it).
    pub fn reads_may_wait(&self) -> bool {
        self.srtp.is_some()
            && self.is_connected()
            && self.twcc.is_none()
            && self.data_channel.as_ref().is_none_or(DataChannel::is_open)
    }

    fn is_dead(&self) -> bool {
        matches!(self.state, State::Failed(_) | State::Closed)
    }

    fn set_state(&mut self, s: State) {
        if self.state != s && !self.is_dead() {
            tracing::debug!(local = %self.local_addr, "transport {} -> {}", self.state, s);
            self.state = s.clone();
            self.events.push_back(Event::StateChanged(s));
        }
    }

    fn fail(&mut self, cause: FailureCause) {
        if !self.is_dead() {
            // A peer that closes is leaving as it should (a server side sees it on every
            // leave): not worth a warning.
            if cause == FailureCause::PeerClosed {
                tracing::debug!(local = %self.local_addr, "transport closed by the peer");
            } else {
                tracing::warn!(local = %self.local_addr, "transport failed: {cause}");
            }
            self.set_state(State::Failed(cause));
            self.srtp = None;
        }
    }

    /// Feeds one received datagram. Anything malformed, forged, replayed or unexpected is
    /// dropped and counted in [`stats`](Self::stats); nothing here can panic on input.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let class = classify(data);
        self.stats.received.add(class);
        self.stats.bytes_received += data.len() as u64;
        if self.is_dead() {
            self.stats.not_ready += 1;
            return;
        }
        match class {
            PacketClass::Stun => self.on_stun(now, from, data),
            PacketClass::Dtls => self.on_dtls(now, from, data),
            PacketClass::Rtp => self.on_rtp(now, from, data),
            PacketClass::Rtcp => self.on_rtcp(now, from, data),
            PacketClass::Unknown => self.stats.malformed += 1,
        }
    }

    fn on_stun(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let ok = match &mut self.ice {
            Ice::Full(i) => i.handle_stun(now, from, data),
            Ice::Lite(i) => i.handle_stun(now, from, data, &mut self.transmits),
        };
        if ok {
            self.stats.accepted += 1;
        } else {
            self.stats.malformed += 1;
        }
        self.after_ice(now);
    }

    fn media_source_ok(&mut self, from: SocketAddr) -> bool {
        // The per-packet check: one comparison against the selected address.
        if self.ice.remote() == Some(from) {
            return true;
        }
        self.stats.unvalidated += 1;
        false
    }

    fn on_dtls(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let valid = match &mut self.ice {
            Ice::Full(i) => i.is_valid(now, from),
            Ice::Lite(i) => i.is_valid(from),
        };
        if !valid {
            self.stats.unvalidated += 1;
            return;
        }
        if self.dtls_peer.is_some_and(|p| p != from) {
            // One association per transport; records from elsewhere are not ours.
            self.stats.unvalidated += 1;
            return;
        }
        if self.dtls_client.is_none() && self.dtls_peer.is_none() {
            // DTLS server: the first ClientHello from the validated peer opens the association.
            self.dtls_peer = Some(from);
            self.handshake_deadline = Some(now + self.config.handshake_timeout);
        }
        match self.dtls.read(now, from, None, BytesMut::from(data)) {
            Ok(events) => {
                self.stats.accepted += 1;
                for ev in events {
                    match ev {
                        EndpointEvent::HandshakeComplete => self.on_handshake_complete(now, from),
                        EndpointEvent::ApplicationData(d) => match self.data_channel.as_mut() {
                            Some(ch) => {
                                ch.handle_input(now, &d);
                                self.pump_data_channel(now);
                            }
                            None => self.events.push_back(Event::ApplicationData(d)),
                        },
                        EndpointEvent::PeerClosed => self.fail(FailureCause::PeerClosed),
                        _ => {}
                    }
                }
            }
            Err(e) => {
                self.stats.malformed += 1;
                self.check_mismatch(&e.to_string());
            }
        }
        self.drain_dtls();
    }

    /// A handshake error caused by the pinned fingerprint is fatal and reported as such; any
    /// other record error only drops that record (it may be forged), and a stuck handshake is
    /// caught by the handshake timeout.
    fn check_mismatch(&mut self, err: &str) {
        if let Some(received) = self.mismatch.get() {
            let cause = FailureCause::FingerprintMismatch {
                expected: self.expected_fingerprint.to_string(),
                received: received.to_string(),
            };
            self.fail(cause);
        } else {
            tracing::debug!(local = %self.local_addr, "DTLS record dropped: {err}");
        }
    }

    fn on_handshake_complete(&mut self, now: Instant, peer: SocketAddr) {
        let Some(state) = self.dtls.get_connection_state(peer) else {
            self.fail(FailureCause::Dtls(
                "handshake completed without a connection".into(),
            ));
            return;
        };
        match SrtpSession::from_dtls(state, self.config.replay_window) {
            Ok(s) => {
                let profile = s.profile;
                self.srtp = Some(s);
                self.handshake_deadline = None;
                self.schedule_report(now);
                self.set_state(State::Connected);
                self.events.push_back(Event::Connected {
                    profile,
                    remote: peer,
                });
                if self.config.data_channel {
                    self.data_channel = Some(if self.is_dtls_client {
                        DataChannel::server(now)
                    } else {
                        DataChannel::participant(now)
                    });
                    self.pump_data_channel(now);
                }
            }
            Err(e) => self.fail(FailureCause::Srtp(e.to_string())),
        }
    }

    fn on_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if !self.media_source_ok(from) {
            return;
        }
        let Some(srtp) = self.srtp.as_mut() else {
            self.stats.not_ready += 1;
            return;
        };
        let plain = match srtp.unprotect_rtp(data) {
            Ok(p) => p,
            Err(Unprotect::Replay) => {
                self.stats.replays += 1;
                return;
            }
            Err(Unprotect::Failed) => {
                self.stats.decrypt_failures += 1;
                return;
            }
        };
        match RtpPacket::parse(plain.freeze(), &self.rtp.extensions) {
            Ok(mut p) => {
                self.stats.accepted += 1;
                p.kind = self.rtp.kind(p.payload_type);
                let rate = self.rtp.clock_rate(p.payload_type);
                let arrival = (now.saturating_duration_since(self.epoch).as_micros() as i64)
                    * rate as i64
                    / 1_000_000;
                self.stats
                    .ssrcs
                    .entry(p.ssrc)
                    .or_insert_with(|| SsrcStats::new(p.sequence, rate, now))
                    .on_packet(p.sequence, p.timestamp, arrival, data.len(), now);
                if let (Some(twcc), Some(seq)) = (self.twcc.as_mut(), p.transport_seq) {
                    let micros = now.saturating_duration_since(self.epoch).as_micros() as i64;
                    twcc.record(seq, micros);
                    if self.next_feedback.is_none() {
                        self.next_feedback =
                            self.config.transport_feedback_interval.map(|i| now + i);
                    }
                }
                self.events.push_back(Event::Rtp(p));
            }
            Err(_) => self.stats.malformed += 1,
        }
    }

    fn on_rtcp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if !self.media_source_ok(from) {
            return;
        }
        let Some(srtp) = self.srtp.as_mut() else {
            self.stats.not_ready += 1;
            return;
        };
        let plain = match srtp.unprotect_rtcp(data) {
            Ok(p) => p,
            Err(Unprotect::Replay) => {
                self.stats.replays += 1;
                return;
            }
            Err(Unprotect::Failed) => {
                self.stats.decrypt_failures += 1;
                return;
            }
        };
        match parse_rtcp(plain.freeze()) {
            Some(pkts) => {
                self.stats.accepted += 1;
                for p in &pkts {
                    if let Some(sr) = p
                        .as_any()
                        .downcast_ref::<rtcp::sender_report::SenderReport>()
                    {
                        if let Some(st) = self.stats.ssrcs.get_mut(&sr.ssrc) {
                            st.on_sender_report(sr.ntp_time, now);
                        }
                    }
                }
                self.events.push_back(Event::Rtcp(pkts));
            }
            None => self.stats.malformed += 1,
        }
    }

    /// Collects ICE output and reacts to its state: starts DTLS once a pair is selected.
    fn after_ice(&mut self, now: Instant) {
        let mut changes = Vec::new();
        match &mut self.ice {
            Ice::Full(i) => {
                i.drain(&mut self.transmits, &mut self.stats.stun_requests_sent);
                while let Some(s) = i.poll_state() {
                    changes.push(s);
                }
            }
            Ice::Lite(i) => {
                while let Some(s) = i.poll_state() {
                    changes.push(s);
                }
            }
        }
        for s in changes {
            match s {
                IceState::Checking => {
                    if self.state == State::New {
                        self.set_state(State::Checking);
                    }
                }
                IceState::Connected => {
                    self.ice_connected = true;
                    if self.srtp.is_some() {
                        self.set_state(State::Connected);
                    } else {
                        self.set_state(State::Handshaking);
                    }
                }
                IceState::Disconnected => {
                    self.ice_connected = false;
                    self.set_state(State::Disconnected);
                }
                IceState::Failed => {
                    let cause = if self.srtp.is_some() {
                        FailureCause::Timeout
                    } else {
                        FailureCause::IceFailed
                    };
                    self.fail(cause);
                }
            }
        }
        if self.dtls_client.is_some()
            && self.dtls_start_at.is_none()
            && self.ice_connected
            && self.ice.remote().is_some()
        {
            self.dtls_start_at = Some(now + self.config.dtls_start_delay);
        }
        self.maybe_start_dtls(now);
    }

    fn maybe_start_dtls(&mut self, now: Instant) {
        if self.dtls_start_at.is_some_and(|t| t <= now) && !self.is_dead() {
            if let (Some(cfg), Some(remote)) = (self.dtls_client.take(), self.ice.remote()) {
                self.dtls_peer = Some(remote);
                self.handshake_deadline = Some(now + self.config.handshake_timeout);
                if let Err(e) = self.dtls.connect(now, remote, cfg, None) {
                    self.fail(FailureCause::Dtls(e.to_string()));
                }
                self.drain_dtls();
            }
        }
    }

    /// Writes the data channel's SCTP packets into DTLS and reports its events.
    fn pump_data_channel(&mut self, now: Instant) {
        let Some(ch) = self.data_channel.as_mut() else {
            return;
        };
        if let Some(peer) = self.dtls_peer {
            while let Some(pkt) = ch.poll_output() {
                if let Err(e) = self.dtls.write(now, peer, &pkt) {
                    tracing::debug!(local = %self.local_addr, "data channel packet not sent: {e}");
                }
            }
        }
        while let Some(e) = ch.poll_event() {
            self.events.push_back(match e {
                DataChannelEvent::Open => Event::DataChannelOpen,
                DataChannelEvent::Message(m) => Event::DataChannelMessage(m),
                DataChannelEvent::Closed(r) => Event::DataChannelClosed(r),
            });
        }
        self.drain_dtls();
    }

    /// Sends a text message over the data channel (off, not open yet, or closed: an error
    /// that says which).
    pub fn send_data_channel(&mut self, now: Instant, text: &str) -> Result<()> {
        let ch = self.data_channel.as_mut().ok_or(Error::DataChannelNotOpen(
            if self.config.data_channel {
                "the transport is not connected yet"
            } else {
                "the data channel is off in this transport's configuration"
            },
        ))?;
        ch.send_text(now, text)?;
        self.pump_data_channel(now);
        Ok(())
    }

    /// The data channel's counters, once DTLS is up and the channel is on.
    pub fn data_channel_stats(&self) -> Option<DataChannelStats> {
        self.data_channel.as_ref().map(DataChannel::stats)
    }

    fn drain_dtls(&mut self) {
        while let Some(tx) = self.dtls.poll_transmit() {
            self.stats.sent.dtls += 1;
            self.stats.bytes_sent += tx.message.len() as u64;
            self.transmits.push_back(Transmit {
                destination: tx.transport.peer_addr,
                contents: tx.message,
            });
        }
    }

    /// Advances timers: ICE checks and keepalives, DTLS retransmissions, the delayed DTLS
    /// start, and the handshake and consent timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_dead() {
            return;
        }
        match &mut self.ice {
            Ice::Full(i) => i.handle_timeout(now),
            Ice::Lite(i) => i.handle_timeout(now),
        }
        self.after_ice(now);
        if let Some(peer) = self.dtls_peer {
            if self.dtls.poll_timeout(&peer).is_some_and(|t| t <= now) {
                // rtc reports transient conditions here (a retransmission racing a reordered
                // flight); a handshake that is really stuck is caught by the deadline below.
                if let Err(e) = self.dtls.handle_timeout(peer, now) {
                    tracing::debug!(local = %self.local_addr, "DTLS timer: {e}");
                }
                self.drain_dtls();
            }
        }
        if self.next_report.is_some_and(|t| t <= now) && self.srtp.is_some() {
            if self.state == State::Connected {
                self.send_receiver_report(now);
            }
            self.schedule_report(now);
        }
        if self.next_feedback.is_some_and(|t| t <= now) {
            // The next one is scheduled by the next arrival: no timer while nothing comes.
            self.next_feedback = None;
            if let Some(fb) = self.twcc.as_mut().and_then(TwccRecorder::build) {
                if let Err(e) = self.send_rtcp(&[Box::new(fb)]) {
                    tracing::debug!(local = %self.local_addr, "transport-cc feedback not sent: {e}");
                }
            }
        }
        if let Some(ch) = self.data_channel.as_mut() {
            if ch.poll_timeout().is_some_and(|t| t <= now) {
                ch.handle_timeout(now);
                self.pump_data_channel(now);
            }
        }
        if self.handshake_deadline.is_some_and(|d| d <= now) && self.srtp.is_none() {
            self.fail(FailureCause::Dtls(format!(
                "handshake did not complete within {:?}",
                self.config.handshake_timeout
            )));
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.poll_deadlines().earliest()
    }

    /// [`poll_timeout`](Self::poll_timeout) split by how much the deadline cares about being
    /// met on time. A driver that wakes anyway on a short clock (the engine's 20 to 60 ms audio
    /// tick) can serve the lenient ones at its next tick instead of waking for them: once
    /// connected, the ICE agent's timer runs every 200 ms whatever its keep-alive interval and
    /// was a fifth of a sending call's wake-ups, for consent checks measured in seconds.
    pub fn poll_deadlines(&mut self) -> Deadlines {
        if self.is_dead() {
            return Deadlines::default();
        }
        let ice = match &mut self.ice {
            Ice::Full(i) => i.poll_timeout(),
            Ice::Lite(i) => i.poll_timeout(),
        };
        let connected = self.srtp.is_some();
        // Once SRTP keys exist the handshake is over and DTLS needs no timer (a peer that
        // retransmits its last flight is answered on arrival): skip asking on every wake-up.
        let dtls = if connected {
            None
        } else {
            self.dtls_peer.and_then(|p| self.dtls.poll_timeout(&p))
        };
        let start = if self.dtls_client.is_some() {
            self.dtls_start_at
        } else {
            None
        };
        let hs = if connected {
            None
        } else {
            self.handshake_deadline
        };
        let report = if connected { self.next_report } else { None };
        let channel = self
            .data_channel
            .as_ref()
            .and_then(DataChannel::poll_timeout);
        // While connecting, every ICE check counts towards the join time; once connected the
        // agent only refreshes consent and watches for silence, both on a scale of seconds.
        // Receiver reports go every few seconds. Transport-cc feedback and the data channel's
        // retransmissions stay prompt: a sender's estimate and SCTP's RTO read their timing.
        let (ice_prompt, ice_lenient) = if connected { (None, ice) } else { (ice, None) };
        let min = |xs: &[Option<Instant>]| xs.iter().flatten().min().copied();
        Deadlines {
            prompt: min(&[ice_prompt, dtls, start, hs, self.next_feedback, channel]),
            lenient: min(&[ice_lenient, report]),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        if classify(&t.contents) == PacketClass::Stun {
            self.stats.sent.stun += 1;
            self.stats.bytes_sent += t.contents.len() as u64;
        }
        Some(t)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn media_target(&self) -> Result<SocketAddr> {
        if self.srtp.is_none() {
            return Err(Error::NotConnected(self.state.to_string()));
        }
        self.ice
            .remote()
            .or(self.dtls_peer)
            .ok_or_else(|| Error::NotConnected(self.state.to_string()))
    }

    fn queue_media(&mut self, dest: SocketAddr, contents: BytesMut, rtcp: bool) {
        if rtcp {
            self.stats.sent.rtcp += 1;
        } else {
            self.stats.sent.rtp += 1;
        }
        self.stats.bytes_sent += contents.len() as u64;
        self.transmits.push_back(Transmit {
            destination: dest,
            contents,
        });
    }

    /// Protects and queues an RTP packet built from its fields, stamped with abs-send-time
    /// (this transport's clock at `now`) and the next transport-wide sequence number, each on
    /// the id the answer gives it; the packet's own values of both are ignored, and an
    /// extension the answer does not list is left out.
    pub fn send_rtp(&mut self, now: Instant, packet: &OutgoingRtp<'_>) -> Result<()> {
        let dest = self.media_target()?;
        let ids = self.rtp.extensions;
        let mut p = *packet;
        p.abs_send_time = Some(self.abs_send_time(now));
        let numbered = ids.transport_cc.is_some()
            && (self.config.audio_transport_cc
                || self.rtp.kind(packet.payload_type) == PayloadKind::Video);
        p.transport_seq = numbered.then_some(self.transport_seq);
        let mut scratch = std::mem::take(&mut self.scratch);
        p.write(&ids, &mut scratch);
        let protected = self.srtp_mut()?.protect_rtp(&scratch);
        self.scratch = scratch;
        self.queue_media(dest, protected?, false);
        if numbered {
            self.transport_seq = self.transport_seq.wrapping_add(1);
        }
        self.report_ssrc.get_or_insert(packet.ssrc);
        Ok(())
    }

    /// The transport-wide sequence number the next [`Transport::send_rtp`] of a video packet
    /// stamps, when the answer has the extension: what a send-side bandwidth estimate records
    /// the packet under.
    pub fn next_transport_seq(&self) -> Option<u16> {
        self.rtp.extensions.transport_cc.map(|_| self.transport_seq)
    }

    /// Protects and queues a plaintext RTP packet (a forwarder's path). Its layout is kept;
    /// where it carries abs-send-time or the transport-wide sequence number on this
    /// transport's ids, the values are replaced by this hop's, as they describe the hop.
    pub fn send_rtp_raw(&mut self, now: Instant, plain: &[u8]) -> Result<()> {
        let dest = self.media_target()?;
        let ids = self.rtp.extensions;
        let has_ext = plain.first().is_some_and(|b| b & 0x10 != 0);
        let protected = if has_ext && (ids.abs_send_time.is_some() || ids.transport_cc.is_some()) {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            scratch.extend_from_slice(plain);
            let abs = self.abs_send_time(now);
            let used_seq = restamp(&mut scratch, &ids, abs, self.transport_seq);
            let protected = self.srtp_mut().and_then(|s| s.protect_rtp(&scratch));
            self.scratch = scratch;
            if used_seq && protected.is_ok() {
                self.transport_seq = self.transport_seq.wrapping_add(1);
            }
            protected?
        } else {
            self.srtp_mut()?.protect_rtp(plain)?
        };
        self.queue_media(dest, protected, false);
        Ok(())
    }

    fn abs_send_time(&self, now: Instant) -> u32 {
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        abs_send_time_from_micros(micros as u64)
    }

    /// Sets the next receiver report at a random point of 0.5..1.5 report intervals from `now`.
    fn schedule_report(&mut self, now: Instant) {
        let interval = self.config.report_interval;
        if interval.is_zero() {
            self.next_report = None;
            return;
        }
        let mut x = self.report_rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.report_rng = x;
        // 0.5 + a uniform fraction in 0..1, in 1/1024 steps.
        let factor = 512 + (x % 1024) as u32;
        self.next_report = Some(now + interval * factor / 1024);
    }

    /// An RR for every source heard since the previous report (RFC 3550 §6.4.2), the most
    /// recently heard first when there are more than one packet can carry.
    fn send_receiver_report(&mut self, now: Instant) {
        let since = self.last_report;
        let mut heard: Vec<(Instant, u32)> = self
            .stats
            .ssrcs
            .iter()
            .filter(|(_, st)| since.is_none_or(|t| st.last_packet > t))
            .map(|(ssrc, st)| (st.last_packet, *ssrc))
            .collect();
        if heard.is_empty() {
            return;
        }
        heard.sort_unstable_by(|a, b| b.cmp(a));
        heard.truncate(MAX_REPORT_BLOCKS);
        let mut reports = Vec::with_capacity(heard.len());
        for (_, ssrc) in heard {
            if let Some(st) = self.stats.ssrcs.get_mut(&ssrc) {
                let b = st.report_block(ssrc, now);
                reports.push(rtcp::reception_report::ReceptionReport {
                    ssrc: b.ssrc,
                    fraction_lost: b.fraction_lost,
                    total_lost: b.total_lost,
                    last_sequence_number: b.extended_highest_seq,
                    jitter: b.jitter,
                    last_sender_report: b.last_sr,
                    delay: b.delay_since_last_sr,
                });
            }
        }
        self.last_report = Some(now);
        let rr = rtcp::receiver_report::ReceiverReport {
            ssrc: self.report_ssrc.unwrap_or(RECEIVE_ONLY_SSRC),
            reports,
            ..Default::default()
        };
        if let Err(e) = self.send_rtcp(&[Box::new(rr)]) {
            tracing::debug!(local = %self.local_addr, "receiver report not sent: {e}");
        }
    }

    /// Marshals, protects and queues an RTCP compound packet.
    pub fn send_rtcp(&mut self, packets: &[Box<dyn rtcp::packet::Packet>]) -> Result<()> {
        let raw = rtcp::packet::marshal(packets).map_err(|e| Error::BuildRtp(e.to_string()))?;
        self.send_rtcp_raw(&raw)
    }

    /// Queues an RTCP sender report (RFC 3550 §6.4.1) for one of this side's sources. The
    /// wallclock is an argument, not read here: the core never reads a clock.
    pub fn send_sender_report(&mut self, report: &SenderInfo, wallclock: SystemTime) -> Result<()> {
        let sr = rtcp::sender_report::SenderReport {
            ssrc: report.ssrc,
            ntp_time: ntp_time(wallclock),
            rtp_time: report.rtp_time,
            packet_count: report.packets,
            octet_count: report.octets,
            ..Default::default()
        };
        self.send_rtcp(&[Box::new(sr)])
    }

    /// Protects and queues a plaintext RTCP packet.
    pub fn send_rtcp_raw(&mut self, plain: &[u8]) -> Result<()> {
        let dest = self.media_target()?;
        let protected = self.srtp_mut()?.protect_rtcp(plain)?;
        self.queue_media(dest, protected, true);
        Ok(())
    }

    /// Sends application data (SCTP) over the DTLS association.
    pub fn send_application_data(&mut self, now: Instant, data: &[u8]) -> Result<()> {
        let peer = match (&self.srtp, self.dtls_peer) {
            (Some(_), Some(p)) => p,
            _ => return Err(Error::NotConnected(self.state.to_string())),
        };
        self.dtls
            .write(now, peer, data)
            .map_err(|e| Error::stack("DTLS write", e))?;
        self.drain_dtls();
        Ok(())
    }

    fn srtp_mut(&mut self) -> Result<&mut SrtpSession> {
        let state = self.state.to_string();
        self.srtp.as_mut().ok_or(Error::NotConnected(state))
    }

    /// Closes the DTLS association (close_notify) and stops. No further events except this
    /// state change.
    pub fn close(&mut self, now: Instant) {
        if let Some(peer) = self.dtls_peer {
            let _ = self.dtls.stop(now, peer);
            self.drain_dtls();
        }
        self.srtp = None;
        if !self.is_dead() {
            self.set_state(State::Closed);
        }
    }
}

/// Parses a decrypted RTCP compound packet as [`Event::Rtcp`] hands it out. `None` if it is
/// malformed, or if it holds a packet that rtc-rtcp cannot even print: its REMB `Display`
/// indexes past its unit table from 10^21 b/s up (found by the `rtcp` fuzz target), and an
/// estimate anywhere near that is nonsense, so refusing it costs nothing while handing it out
/// would let a peer crash whoever logs the event.
pub(crate) fn parse_rtcp(mut plain: bytes::Bytes) -> Option<Vec<Box<dyn rtcp::packet::Packet>>> {
    use rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    let pkts = rtcp::packet::unmarshal(&mut plain).ok()?;
    let printable = |p: &dyn rtcp::packet::Packet| {
        p.as_any()
            .downcast_ref::<ReceiverEstimatedMaximumBitrate>()
            .is_none_or(|r| r.bitrate.is_finite() && r.bitrate < 1e18)
    };
    pkts.iter().all(|p| printable(p.as_ref())).then_some(pkts)
}
