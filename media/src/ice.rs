//! The two ICE roles a group-call transport plays.
//!
//! - `FullIce`: the participant. A full rtc-ice agent that checks the server's UDP host
//!   candidates and, when controlling, nominates the pair itself (a lite server never does).
//! - `LiteIce`: the server side, written to behave as Telegram's server does rather than as
//!   rtc-ice's lite mode (docs/crates.md pitfall 7): answer every valid Binding Request at once,
//!   never send a check, accept either role attribute and never answer 487, and take the source
//!   of the latest valid request as the participant's address.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::ice::candidate::candidate_host::CandidateHostConfig;
use rtc::ice::candidate::{CandidateConfig, CandidateType};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::state::ConnectionState;
use rtc::ice::{Agent, AgentConfig, Event as AgentEvent};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{
    Message, MessageType, BINDING_SUCCESS, CLASS_INDICATION, CLASS_REQUEST, METHOD_BINDING,
};
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;

use crate::error::{Error, Result};
use crate::identity::IceCredentials;
use crate::transport::Transmit;

/// Connectivity as the transport needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IceState {
    Checking,
    Connected,
    Disconnected,
    Failed,
}

/// ICE timing settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IceTimeouts {
    /// How often a connecting full agent sends checks.
    pub check_interval: Duration,
    /// How often a connected full agent refreshes consent (libwebrtc: 2.5 s).
    pub keepalive_interval: Duration,
    /// Silence after which the connection is reported disconnected.
    pub disconnected: Duration,
    /// Silence (or failed checking) after which the connection has failed.
    pub failed: Duration,
}

impl Default for IceTimeouts {
    fn default() -> Self {
        IceTimeouts {
            check_interval: Duration::from_millis(50),
            keepalive_interval: Duration::from_millis(2500),
            disconnected: Duration::from_secs(5),
            failed: Duration::from_secs(25),
        }
    }
}

fn ctx(local: SocketAddr, peer: SocketAddr) -> TransportContext {
    TransportContext {
        local_addr: local,
        peer_addr: peer,
        transport_protocol: TransportProtocol::UDP,
        ecn: None,
    }
}

fn is_binding_request(d: &[u8]) -> bool {
    d.len() >= 2 && d[0] == 0 && d[1] == 1
}

pub(crate) struct FullIce {
    agent: Agent,
    local_addr: SocketAddr,
    selected: Option<SocketAddr>,
    events: VecDeque<IceState>,
}

impl FullIce {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        now: Instant,
        provider: Arc<dyn RTCCryptoProvider>,
        local: &IceCredentials,
        local_addr: SocketAddr,
        remote: &IceCredentials,
        remote_candidates: &[SocketAddr],
        controlling: bool,
        t: IceTimeouts,
    ) -> Result<Self> {
        let cfg = AgentConfig {
            local_ufrag: local.ufrag.clone(),
            local_pwd: local.pwd.clone(),
            is_controlling: controlling,
            multicast_dns_mode: MulticastDnsMode::Disabled,
            candidate_types: vec![CandidateType::Host],
            check_interval: t.check_interval,
            keepalive_interval: Some(t.keepalive_interval),
            disconnected_timeout: Some(t.disconnected),
            failed_timeout: Some(t.failed),
            ..Default::default()
        };
        let ice_err = |e: rtc::shared::error::Error| Error::stack("ICE", e);
        let mut agent = Agent::new(now, Arc::new(cfg), provider).map_err(ice_err)?;
        let host = |addr: SocketAddr| {
            CandidateHostConfig {
                base_config: CandidateConfig {
                    network: "udp".into(),
                    address: addr.ip().to_string(),
                    port: addr.port(),
                    component: 1,
                    ..Default::default()
                },
                ..Default::default()
            }
            .new_candidate_host()
        };
        agent
            .add_local_candidate(host(local_addr).map_err(ice_err)?)
            .map_err(ice_err)?;
        // A socket of one family cannot reach the other: only pair same-family candidates.
        let usable: Vec<_> = remote_candidates
            .iter()
            .filter(|a| a.is_ipv4() == local_addr.is_ipv4())
            .collect();
        if usable.is_empty() {
            return Err(Error::NoUsableCandidate);
        }
        for a in usable {
            agent
                .add_remote_candidate(host(*a).map_err(ice_err)?)
                .map_err(ice_err)?;
        }
        agent
            .start_connectivity_checks(now, controlling, remote.ufrag.clone(), remote.pwd.clone())
            .map_err(ice_err)?;
        Ok(FullIce {
            agent,
            local_addr,
            selected: None,
            events: VecDeque::new(),
        })
    }

    /// Feeds a STUN datagram. `false` if the agent refused it.
    pub(crate) fn handle_stun(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let msg = TaggedBytesMut {
            now,
            transport: ctx(self.local_addr, from),
            message: BytesMut::from(data),
        };
        self.agent.handle_read(msg).is_ok()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.agent.poll_timeout().is_some_and(|t| t <= now) {
            let _ = self.agent.handle_timeout(now);
        }
    }

    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.agent.poll_timeout()
    }

    /// Moves the agent's output into `out` and its state changes into the event queue.
    pub(crate) fn drain(&mut self, out: &mut VecDeque<Transmit>, requests_sent: &mut u64) {
        while let Some(tx) = self.agent.poll_write() {
            if is_binding_request(&tx.message) {
                *requests_sent += 1;
            }
            out.push_back(Transmit {
                destination: tx.transport.peer_addr,
                contents: tx.message,
            });
        }
        while let Some(ev) = self.agent.poll_event() {
            match ev.event {
                AgentEvent::ConnectionStateChange(s) => {
                    let mapped = match s {
                        ConnectionState::Checking => Some(IceState::Checking),
                        ConnectionState::Connected | ConnectionState::Completed => {
                            Some(IceState::Connected)
                        }
                        ConnectionState::Disconnected => Some(IceState::Disconnected),
                        ConnectionState::Failed => Some(IceState::Failed),
                        _ => None,
                    };
                    self.events.extend(mapped);
                }
                AgentEvent::SelectedCandidatePairChange(_, remote) => {
                    self.selected = Some(remote.addr());
                }
                _ => {}
            }
        }
    }

    pub(crate) fn poll_state(&mut self) -> Option<IceState> {
        self.events.pop_front()
    }

    pub(crate) fn remote(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// Whether non-STUN traffic from `from` may be used (a checked remote candidate).
    pub(crate) fn is_valid(&mut self, now: Instant, from: SocketAddr) -> bool {
        if Some(from) == self.selected {
            return true;
        }
        self.agent
            .is_valid_non_stun_traffic(now, ctx(self.local_addr, from))
    }
}

pub(crate) struct LiteIce {
    provider: Arc<dyn RTCCryptoProvider>,
    local_pwd: String,
    /// `localUfrag:remoteUfrag`: what the participant's requests must carry.
    username: String,
    selected: Option<SocketAddr>,
    last_valid: Option<Instant>,
    state: IceState,
    events: VecDeque<IceState>,
    started: Instant,
    timeouts: IceTimeouts,
}

impl LiteIce {
    pub(crate) fn new(
        now: Instant,
        provider: Arc<dyn RTCCryptoProvider>,
        local: &IceCredentials,
        remote: &IceCredentials,
        timeouts: IceTimeouts,
    ) -> Self {
        LiteIce {
            provider,
            local_pwd: local.pwd.clone(),
            username: format!("{}:{}", local.ufrag, remote.ufrag),
            selected: None,
            last_valid: None,
            state: IceState::Checking,
            events: VecDeque::from([IceState::Checking]),
            started: now,
            timeouts,
        }
    }

    /// Answers a valid Binding Request at once. `false` if the datagram was not a valid request
    /// or indication for this participant.
    pub(crate) fn handle_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        out: &mut VecDeque<Transmit>,
    ) -> bool {
        let mut m = Message {
            raw: data.to_vec(),
            ..Default::default()
        };
        if m.decode().is_err() {
            return false;
        }
        if m.typ == MessageType::new(METHOD_BINDING, CLASS_INDICATION) {
            return true; // keepalive indication: nothing to answer
        }
        if m.typ != MessageType::new(METHOD_BINDING, CLASS_REQUEST) {
            return false; // a lite agent sends no requests, so expects no responses
        }
        match TextAttribute::get_from_as(&m, ATTR_USERNAME) {
            Ok(u) if u.text == self.username => {}
            _ => return false,
        }
        if m.contains(rtc::stun::attributes::ATTR_FINGERPRINT) && FINGERPRINT.check(&m).is_err() {
            return false;
        }
        let crypto = self.provider.crypto();
        if MessageIntegrity::check(&mut m, self.local_pwd.as_bytes(), crypto).is_err() {
            return false;
        }
        let mut r = Message::new();
        let built = r.build(&[
            Box::new(m),
            Box::new(BINDING_SUCCESS),
            Box::new(XorMappedAddress {
                ip: from.ip(),
                port: from.port(),
            }),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                self.local_pwd.clone(),
                crypto,
            )),
            Box::new(FINGERPRINT),
        ]);
        if built.is_err() {
            return false;
        }
        out.push_back(Transmit {
            destination: from,
            contents: BytesMut::from(&r.raw[..]),
        });
        self.selected = Some(from);
        self.last_valid = Some(now);
        self.set_state(IceState::Connected);
        true
    }

    fn set_state(&mut self, s: IceState) {
        if self.state != s {
            self.state = s;
            self.events.push_back(s);
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.state == IceState::Failed {
            return;
        }
        let since = now.saturating_duration_since(self.last_valid.unwrap_or(self.started));
        if since >= self.timeouts.failed {
            self.set_state(IceState::Failed);
        } else if since >= self.timeouts.disconnected && self.state == IceState::Connected {
            self.set_state(IceState::Disconnected);
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.state == IceState::Failed {
            return None;
        }
        let base = self.last_valid.unwrap_or(self.started);
        Some(if self.state == IceState::Connected {
            base + self.timeouts.disconnected
        } else {
            base + self.timeouts.failed
        })
    }

    pub(crate) fn poll_state(&mut self) -> Option<IceState> {
        self.events.pop_front()
    }

    pub(crate) fn remote(&self) -> Option<SocketAddr> {
        self.selected
    }

    pub(crate) fn is_valid(&self, from: SocketAddr) -> bool {
        Some(from) == self.selected
    }
}

/// The USERNAME of a STUN request (`receiverUfrag:senderUfrag`), for servers that route one
/// socket's datagrams to many participants. `None` if `data` is not STUN with a USERNAME.
pub fn stun_username(data: &[u8]) -> Option<String> {
    let mut m = Message {
        raw: data.to_vec(),
        ..Default::default()
    };
    m.decode().ok()?;
    TextAttribute::get_from_as(&m, ATTR_USERNAME)
        .ok()
        .map(|t| t.text)
}
