//! The data channel of a Telegram group call: SCTP over the call's DTLS association, one
//! WebRTC data channel on top (RFC 8831), opened with DCEP (RFC 8832), as a sans-IO state
//! machine.
//!
//! Telegram's clients carry JSON signalling here (e.g. which video each participant wants).
//! The wire facts, from those clients:
//! - SCTP port 5000 on both ends, messages of at most 256 KiB;
//! - one channel, label `"data"`, stream 0, ordered and reliable;
//! - the participant (the DTLS *server*) opens it: it sends DATA_CHANNEL_OPEN on stream 0 once
//!   the association is up, and the server (the DTLS client) answers DATA_CHANNEL_ACK. RFC 8832
//!   §6 would give the DTLS server odd stream ids; Telegram uses 0 anyway, so the acceptor takes
//!   an OPEN on stream 0 whatever its DTLS role (rtc-sctp enforces no parity either);
//! - messages are UTF-8 text (PPID "WebRTC String"); binary ones are counted and ignored.
//!
//! Two roles are therefore explicit: the DCEP role ([`ChannelRole`]) and the SCTP role
//! ([`SctpRole`]). The SCTP role follows the DTLS role, as in rtc's own peer connection: the
//! DTLS client sends the SCTP INIT, the DTLS server waits for it ([`SctpRole::for_dtls`]).
//! libwebrtc peers send an INIT from both ends; the responder here answers theirs and the
//! initiator's endpoint drops theirs (counted as a refused INIT) while theirs answers ours, so
//! either way exactly one association forms.
//!
//! Driving it mirrors [`crate::Transport`]: every DTLS application-data record goes to
//! [`DataChannel::handle_input`]; after any call, [`DataChannel::poll_output`] yields SCTP
//! packets to write into DTLS and [`DataChannel::poll_event`] what happened; after draining
//! the output, [`DataChannel::poll_timeout`] says when to call
//! [`DataChannel::handle_timeout`]. Nothing here reads a clock: `now` is passed in.
//!
//! rtc-sctp 0.21.1 trusts some lengths and TSNs that only the (authenticated, but possibly
//! buggy) DTLS peer controls, and panics or spins on bad ones; every packet is checked before
//! it gets there (`well_formed`, `tsn_in_window`) and refused, counted, if it would hurt.
//!
//! Memory is bounded: at most [`MAX_QUEUED_EVENTS`] events (and about 1 MiB of message text)
//! wait in the event queue; beyond that incoming messages stay in SCTP's receive buffer, whose
//! shrinking window throttles the peer, until the application polls again. Nothing is
//! dropped to make room. What is sent waits in a send buffer of at most 1 MiB.

use std::collections::{BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rtc::datachannel::data_channel::DataChannel as RtcDataChannel;
use rtc::datachannel::message::message_channel_ack::DataChannelAck;
use rtc::datachannel::message::message_channel_open::{
    ChannelType, DataChannelOpen, CHANNEL_PRIORITY_NORMAL,
};
use rtc::datachannel::message::Message as Dcep;
use rtc::sctp::{
    Association, AssociationError, AssociationHandle, Chunks, ClientConfig, DatagramEvent,
    Endpoint, EndpointConfig, EndpointEvent, Event as SctpEvent, Payload,
    PayloadProtocolIdentifier as Ppi, ServerConfig, StreamEvent, StreamId, TransportConfig,
};
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::shared::TransportProtocol;

use crate::error::{Error, Result};

/// DCEP message types (RFC 8832 §8.2.1).
const DCEP_ACK: u8 = 0x02;
const DCEP_OPEN: u8 = 0x03;

/// The SCTP port of both ends (rtc-sctp writes 5000 whatever it is told; so does Telegram).
pub const SCTP_PORT: u16 = 5000;
/// The largest message either way, in bytes (Telegram's `max-message-size`).
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;
/// The channel's label in DATA_CHANNEL_OPEN.
pub const LABEL: &str = "data";
/// The SCTP stream the channel runs on.
pub const STREAM_ID: StreamId = 0;
/// At most this many events wait in [`DataChannel::poll_event`]'s queue.
pub const MAX_QUEUED_EVENTS: usize = 256;

/// Message text waiting in the event queue, in bytes; one message is always let in, so a
/// 256 KiB message is never stuck behind the limit.
const MAX_QUEUED_TEXT: usize = 1024 * 1024;
/// Bytes handed to SCTP and not yet acknowledged, beyond which `send_text` refuses.
const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// How far past the peer's cumulative TSN a DATA chunk may be (see `tsn_in_window`). One less
/// than the largest 16-bit gap offset, so that rtc-sctp's `end + 1` cannot overflow.
const MAX_TSN_AHEAD: u16 = u16::MAX - 1;
/// SCTP associations a responder keeps half-open at once. A retransmitted INIT (its INIT ACK
/// was lost) starts a fresh one in rtc-sctp, and the peer completes whichever INIT ACK it got
/// first, so the earlier ones must live on until one of them is established.
const MAX_HANDSHAKES: usize = 4;
/// rtc-sctp wants socket addresses; the DTLS association below is what really addresses the
/// peer, so one fixed placeholder serves (its port must not be 0).
const PLACEHOLDER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5000);

/// The DCEP role (RFC 8832).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelRole {
    /// Sends DATA_CHANNEL_OPEN once the association is up: the participant (DTLS server).
    Opener,
    /// Answers DATA_CHANNEL_OPEN with DATA_CHANNEL_ACK: the server (DTLS client).
    Acceptor,
}

/// Which end starts the SCTP association.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SctpRole {
    /// Sends the INIT: the DTLS client.
    Initiator,
    /// Waits for the INIT: the DTLS server.
    Responder,
}

impl SctpRole {
    /// The SCTP role that goes with a DTLS role, as rtc's peer connection pairs them.
    pub fn for_dtls(dtls_client: bool) -> Self {
        if dtls_client {
            SctpRole::Initiator
        } else {
            SctpRole::Responder
        }
    }
}

/// What a data channel reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataChannelEvent {
    /// Messages can be sent. The opener is open once its OPEN is on its way (as in libwebrtc:
    /// the ACK is not waited for, ordered delivery puts the OPEN first); the acceptor once the
    /// OPEN arrived.
    Open,
    /// A text message from the peer, in order.
    Message(String),
    /// The channel is gone for good; no event follows.
    Closed(CloseReason),
}

/// Why a data channel closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// [`DataChannel::close`] was called.
    Local,
    /// The peer aborted or shut down the association, or reset the channel's stream.
    Peer,
    /// SCTP gave up: the handshake or the association failed.
    Failed(String),
}

/// What a data channel has seen, for logs and tests. Every incoming SCTP packet is counted in
/// `packets_in`; every complete message other than a valid DCEP OPEN or ACK is counted once,
/// in `messages_in`, `malformed_dcep` or one `ignored_*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataChannelStats {
    pub packets_in: u64,
    pub packets_out: u64,
    /// Packets refused: by the checks in front of rtc-sctp (see `well_formed`), or by SCTP
    /// itself (bad header or checksum, unknown verification tag, no live association).
    pub malformed_packets: u64,
    /// INITs not taken: on an initiator, or once an association is established.
    pub refused_inits: u64,
    /// Text messages delivered as events, and their bytes.
    pub messages_in: u64,
    pub bytes_in: u64,
    /// Text messages handed to SCTP, and their bytes.
    pub messages_out: u64,
    pub bytes_out: u64,
    /// DCEP messages that do not parse, or that this role does not expect.
    pub malformed_dcep: u64,
    pub ignored_binary: u64,
    pub ignored_invalid_utf8: u64,
    /// Messages over [`MAX_MESSAGE_SIZE`].
    pub ignored_oversize: u64,
    /// Messages on another stream, with an unknown PPID, or before the channel opened.
    pub ignored_unexpected: u64,
    /// Times reading stopped because the event queue was full (the messages wait in SCTP).
    pub reads_deferred: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Open,
    Closed,
}

/// One data channel over one SCTP association. See the module documentation.
pub struct DataChannel {
    role: ChannelRole,
    sctp_role: SctpRole,
    max_message_size: usize,
    endpoint: Endpoint,
    /// The established association alone, or the ones still handshaking.
    assocs: Vec<(AssociationHandle, Association)>,
    established: bool,
    phase: Phase,
    acked: bool,
    /// The peer's cumulative TSN as this side last acknowledged it: from its INIT or INIT ACK,
    /// then from every SACK sent. See [`DataChannel::tsn_in_window`].
    peer_tsn: Option<u32>,
    /// The newest instant a caller passed in: `poll_output` and `poll_event` have none.
    now: Instant,
    /// Streams with a message SCTP has announced and we have not read yet. rtc-sctp says
    /// "readable" once per arriving chunk, so a stream left unread (full event queue, or
    /// data before the handshake finished) must be remembered here to be read later.
    readable: BTreeSet<StreamId>,
    /// Why the association or the channel's stream went away, once SCTP has said so.
    lost: Option<CloseReason>,
    out: VecDeque<Bytes>,
    events: VecDeque<DataChannelEvent>,
    queued_text: usize,
    stats: DataChannelStats,
}

impl DataChannel {
    /// A channel in `role`, over an association this side starts or waits for (`sctp`).
    pub fn new(role: ChannelRole, sctp: SctpRole, now: Instant) -> Self {
        Self::with_max_message_size(role, sctp, MAX_MESSAGE_SIZE, now)
    }

    /// The participant's side of a Telegram call: DTLS server, so SCTP responder and opener.
    pub fn participant(now: Instant) -> Self {
        Self::new(ChannelRole::Opener, SctpRole::Responder, now)
    }

    /// The server's side of a Telegram call: DTLS client, so SCTP initiator and acceptor.
    pub fn server(now: Instant) -> Self {
        Self::new(ChannelRole::Acceptor, SctpRole::Initiator, now)
    }

    /// As [`new`](Self::new) with another message limit, so that tests can send what a
    /// real channel must refuse.
    pub(crate) fn with_max_message_size(
        role: ChannelRole,
        sctp: SctpRole,
        max_message_size: usize,
        now: Instant,
    ) -> Self {
        let transport = TransportConfig::default()
            .with_sctp_port(SCTP_PORT)
            .with_max_message_size(u32::try_from(max_message_size).unwrap_or(u32::MAX));
        let server = match sctp {
            SctpRole::Initiator => None,
            SctpRole::Responder => Some(Arc::new(ServerConfig::new(transport.clone()))),
        };
        let mut endpoint = Endpoint::new(
            PLACEHOLDER,
            TransportProtocol::UDP,
            Arc::new(EndpointConfig::default()),
            server,
        );
        let mut assocs = Vec::new();
        let mut failed = None;
        if sctp == SctpRole::Initiator {
            // Queues the INIT for the first poll_output.
            match endpoint.connect(now, ClientConfig::new(transport), PLACEHOLDER) {
                Ok(a) => assocs.push(a),
                Err(e) => failed = Some(CloseReason::Failed(format!("SCTP connect: {e}"))),
            }
        }
        let mut dc = DataChannel {
            role,
            sctp_role: sctp,
            max_message_size,
            endpoint,
            assocs,
            established: false,
            phase: Phase::Connecting,
            acked: false,
            peer_tsn: None,
            now,
            readable: BTreeSet::new(),
            lost: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            queued_text: 0,
            stats: DataChannelStats::default(),
        };
        if let Some(reason) = failed {
            dc.finish(reason);
        }
        dc
    }

    pub fn role(&self) -> ChannelRole {
        self.role
    }

    pub fn sctp_role(&self) -> SctpRole {
        self.sctp_role
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether the peer acknowledged this opener's DATA_CHANNEL_OPEN (always false on an
    /// acceptor). Informational: sending does not wait for it.
    pub fn peer_acknowledged(&self) -> bool {
        self.acked
    }

    pub fn stats(&self) -> DataChannelStats {
        self.stats
    }

    /// Feeds one DTLS application-data record: one SCTP packet. Anything malformed or
    /// unexpected is counted in [`stats`](Self::stats) and dropped; nothing here panics on
    /// input.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        self.observe(now);
        self.stats.packets_in += 1;
        if self.phase == Phase::Closed {
            return;
        }
        if !well_formed(data) || !self.tsn_in_window(data) {
            self.stats.malformed_packets += 1;
            return;
        }
        let Some((ch, event)) =
            self.endpoint
                .handle(now, PLACEHOLDER, None, Bytes::copy_from_slice(data))
        else {
            if looks_like_init(data) {
                self.stats.refused_inits += 1;
            } else {
                self.stats.malformed_packets += 1;
            }
            return;
        };
        if !self.established {
            // Past SCTP's checksum: an INIT or INIT ACK here says where the peer's TSNs start.
            self.note_initial_tsn(data);
        }
        match event {
            DatagramEvent::NewAssociation(a) => self.adopt(ch, a),
            DatagramEvent::AssociationEvent(e) => {
                match self.assocs.iter_mut().find(|(h, _)| *h == ch) {
                    Some((_, a)) => a.handle_event(e),
                    // For an association given up (a superseded handshake).
                    None => self.stats.malformed_packets += 1,
                }
            }
            _ => self.stats.malformed_packets += 1,
        }
        self.process();
    }

    /// The next SCTP packet to write into DTLS ([`crate::Transport::send_application_data`]).
    pub fn poll_output(&mut self) -> Option<Bytes> {
        if self.out.is_empty() && self.phase != Phase::Closed {
            self.gather();
        }
        let p = self.out.pop_front()?;
        self.stats.packets_out += 1;
        Some(p)
    }

    /// Runs SCTP's timers: retransmissions, delayed SACKs, heartbeats.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        if self.phase == Phase::Closed {
            return;
        }
        for (_, a) in &mut self.assocs {
            a.handle_timeout(now);
        }
        self.process();
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due. Ask after draining
    /// [`poll_output`](Self::poll_output): sending is what starts the retransmission timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        self.assocs
            .iter()
            .filter_map(|(_, a)| a.poll_timeout())
            .min()
    }

    /// Queues a text message, in order after those before it. Refused (with nothing sent)
    /// while the channel is not open (or, still open, the peer has begun shutting the
    /// association down), above [`MAX_MESSAGE_SIZE`], or while 1 MiB sent earlier is still
    /// unacknowledged.
    pub fn send_text(&mut self, now: Instant, text: &str) -> Result<()> {
        self.observe(now);
        match self.phase {
            Phase::Connecting => {
                return Err(Error::DataChannelNotOpen(
                    "not open yet (wait for DataChannelEvent::Open)",
                ))
            }
            Phase::Closed => return Err(Error::DataChannelNotOpen("closed")),
            Phase::Open => {}
        }
        if text.len() > self.max_message_size {
            return Err(Error::MessageTooLarge {
                size: text.len(),
                limit: self.max_message_size,
            });
        }
        let Some((_, a)) = self.assocs.first_mut() else {
            return Err(Error::DataChannelNotOpen("closed"));
        };
        let mut s = a.stream(STREAM_ID).map_err(|e| Error::stack("SCTP", e))?;
        let buffered = s.buffered_amount().unwrap_or(0);
        if buffered + text.len() > MAX_SEND_BUFFER {
            return Err(Error::SendBufferFull { buffered });
        }
        // SCTP cannot carry an empty message: RFC 8831 §6.6 sends one zero byte, PPID
        // "String Empty".
        let (ppi, payload) = if text.is_empty() {
            (Ppi::StringEmpty, Bytes::from_static(&[0]))
        } else {
            (Ppi::String, Bytes::copy_from_slice(text.as_bytes()))
        };
        s.write_sctp(now, &payload, ppi).map_err(|e| match e {
            // The peer sent SHUTDOWN: SCTP finishes what is in flight, then the association
            // closes and Closed follows. rtc-sctp does not say so before a write fails.
            rtc::shared::error::Error::ErrStreamClosed => {
                Error::DataChannelNotOpen("closing (the peer is shutting the association down)")
            }
            e => Error::stack("SCTP", e),
        })?;
        self.stats.messages_out += 1;
        self.stats.bytes_out += text.len() as u64;
        self.process();
        Ok(())
    }

    /// The next event. Taking one makes room: messages held back in SCTP are read then.
    pub fn poll_event(&mut self) -> Option<DataChannelEvent> {
        let e = self.events.pop_front()?;
        if let DataChannelEvent::Message(m) = &e {
            self.queued_text -= m.len();
        }
        if !self.readable.is_empty() {
            self.read_messages();
        }
        Some(e)
    }

    /// Closes the channel for good: what SCTP was about to send goes out, then an ABORT (as
    /// closing a WebRTC peer connection does). Data still unacknowledged may be lost; this is
    /// for leaving the call, which closes DTLS right after.
    pub fn close(&mut self, now: Instant) {
        self.observe(now);
        self.finish(CloseReason::Local);
    }

    /// Sends `data` on `stream` with `ppi` as it is, bypassing every check: tests and the
    /// fuzz target use it to play a peer that sends what this one never would.
    /// Returns whether SCTP took it. Not an empty payload: rtc-sctp 0.21.1 would count it as a
    /// message (one stream sequence number) but send no chunk, and the peer's ordered stream
    /// would wait for it forever; SCTP has no empty messages (RFC 8831 §6.6 sends one zero
    /// byte instead, as `send_text` does).
    pub(crate) fn send_raw(
        &mut self,
        now: Instant,
        stream: StreamId,
        ppi: u32,
        data: &[u8],
    ) -> bool {
        self.observe(now);
        if !self.established || self.phase == Phase::Closed || data.is_empty() {
            return false;
        }
        let Some((_, a)) = self.assocs.first_mut() else {
            return false;
        };
        let s = match a.stream(stream) {
            Ok(s) => Ok(s),
            Err(_) => a.open_stream(stream, Ppi::from(ppi)),
        };
        let sent =
            s.and_then(|mut s| s.write_sctp(now, &Bytes::copy_from_slice(data), Ppi::from(ppi)));
        self.process();
        sent.is_ok()
    }

    /// Events waiting to be polled, for the fuzz target's bound check.
    pub(crate) fn events_queued(&self) -> usize {
        self.events.len()
    }

    fn observe(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// A new association from an INIT (responder only).
    fn adopt(&mut self, ch: AssociationHandle, a: Association) {
        if self.established {
            self.stats.refused_inits += 1;
            self.endpoint.handle_event(ch, EndpointEvent::drained());
            return;
        }
        if self.assocs.len() >= MAX_HANDSHAKES {
            let (old, _) = self.assocs.remove(0);
            self.endpoint.handle_event(old, EndpointEvent::drained());
        }
        self.assocs.push((ch, a));
    }

    /// Takes in what the associations report after any input, then reads what arrived.
    fn process(&mut self) {
        let mut i = 0;
        while i < self.assocs.len() {
            let (ch, a) = &mut self.assocs[i];
            let in_use = self.established || self.sctp_role == SctpRole::Initiator;
            while let Some(e) = a.poll() {
                match e {
                    SctpEvent::Stream(StreamEvent::Readable { id }) => {
                        self.readable.insert(id);
                    }
                    SctpEvent::AssociationLost { reason, id }
                        if in_use && (id == STREAM_ID || a.is_closed()) =>
                    {
                        self.lost.get_or_insert(close_reason(&reason));
                    }
                    SctpEvent::HandshakeFailed { reason } if in_use => {
                        self.lost.get_or_insert(close_reason(&reason));
                    }
                    _ => {}
                }
            }
            // Streams the peer opened queue up in rtc-sctp until accepted; they are read by id.
            while a.accept_stream().is_some() {}
            // rtc-sctp's only endpoint event, Drained, is its last word: the endpoint forgets the
            // association (exactly once: a second Drained for it would panic in the endpoint).
            let mut drained = false;
            while let Some(e) = a.poll_endpoint_event() {
                if !drained {
                    self.endpoint.handle_event(*ch, e);
                    drained = true;
                }
            }
            if drained {
                // If it was the one in use, the check below closes the channel.
                self.assocs.remove(i);
                continue;
            }
            i += 1;
        }

        if !self.established {
            if let Some(i) = self
                .assocs
                .iter()
                .position(|(_, a)| !a.is_handshaking() && !a.is_closed())
            {
                let chosen = self.assocs.swap_remove(i);
                for (ch, _) in self.assocs.drain(..) {
                    self.endpoint.handle_event(ch, EndpointEvent::drained());
                }
                self.assocs.push(chosen);
                self.established = true;
                self.on_established();
            }
        }

        if let Some(reason) = self.lost.take() {
            self.finish(reason);
        } else if (self.established || self.sctp_role == SctpRole::Initiator)
            && self.assocs.first().is_none_or(|(_, a)| a.is_closed())
        {
            self.finish(CloseReason::Failed("the SCTP association closed".into()));
        } else {
            self.read_messages();
        }
    }

    /// The association is up: an opener opens the channel.
    fn on_established(&mut self) {
        tracing::debug!(role = ?self.role, "SCTP association established");
        if self.role != ChannelRole::Opener {
            return;
        }
        let open = Dcep::DataChannelOpen(DataChannelOpen {
            channel_type: ChannelType::Reliable,
            priority: CHANNEL_PRIORITY_NORMAL,
            reliability_parameter: 0,
            label: LABEL.as_bytes().to_vec(),
            protocol: Vec::new(),
        });
        let now = self.now;
        let Some((_, a)) = self.assocs.first_mut() else {
            return;
        };
        let sent = open.marshal().and_then(|msg| {
            let mut s = match a.stream(STREAM_ID) {
                Ok(s) => s,
                Err(_) => a.open_stream(STREAM_ID, Ppi::Dcep)?,
            };
            s.write_sctp(now, &msg.freeze(), Ppi::Dcep)
        });
        match sent {
            Ok(_) => self.set_open(),
            Err(e) => self.finish(CloseReason::Failed(format!(
                "sending DATA_CHANNEL_OPEN: {e}"
            ))),
        }
    }

    fn set_open(&mut self) {
        if self.phase == Phase::Connecting {
            self.phase = Phase::Open;
            self.events.push_back(DataChannelEvent::Open);
        }
    }

    fn events_full(&self) -> bool {
        self.events.len() >= MAX_QUEUED_EVENTS
            || (self.queued_text >= MAX_QUEUED_TEXT && !self.events.is_empty())
    }

    /// Reads complete messages out of SCTP while the event queue has room. What is left
    /// stays in SCTP's reassembly queue, which lowers the window advertised to the peer.
    fn read_messages(&mut self) {
        if !self.established || self.phase == Phase::Closed {
            return;
        }
        while let Some(&id) = self.readable.first() {
            if self.events_full() {
                self.stats.reads_deferred += 1;
                return;
            }
            let Some((_, a)) = self.assocs.first_mut() else {
                return;
            };
            match a.stream(id).and_then(|mut s| s.read_sctp()) {
                Ok(Some(chunks)) => self.on_message(id, &chunks),
                // Read out, or the stream is gone.
                Ok(None) | Err(_) => {
                    self.readable.remove(&id);
                }
            }
        }
    }

    fn on_message(&mut self, id: StreamId, chunks: &Chunks) {
        let len = chunks.len();
        if id != STREAM_ID {
            self.stats.ignored_unexpected += 1;
            return;
        }
        if len > self.max_message_size {
            self.stats.ignored_oversize += 1;
            return;
        }
        match chunks.ppi {
            Ppi::Dcep => match read_all(chunks) {
                Some(b) => self.on_dcep(&b),
                None => self.stats.malformed_dcep += 1,
            },
            Ppi::String | Ppi::StringEmpty if self.phase != Phase::Open => {
                self.stats.ignored_unexpected += 1;
            }
            Ppi::StringEmpty => self.deliver(String::new()),
            Ppi::String => match read_all(chunks).map(String::from_utf8) {
                Some(Ok(text)) => self.deliver(text),
                _ => self.stats.ignored_invalid_utf8 += 1,
            },
            Ppi::Binary | Ppi::BinaryEmpty => self.stats.ignored_binary += 1,
            _ => self.stats.ignored_unexpected += 1,
        }
    }

    fn deliver(&mut self, text: String) {
        self.stats.messages_in += 1;
        self.stats.bytes_in += text.len() as u64;
        self.queued_text += text.len();
        self.events.push_back(DataChannelEvent::Message(text));
    }

    fn on_dcep(&mut self, msg: &[u8]) {
        // Only the two types RFC 8832 puts on the wire reach rtc's parser: it also knows two
        // internal ones (0x00 "threshold", 0x01 "close"), and rtc-datachannel 0.21.1 panics on
        // a "threshold" shorter than 5 bytes (found by the `datachannel` fuzz target).
        if !matches!(msg.first(), Some(&DCEP_ACK | &DCEP_OPEN)) {
            self.stats.malformed_dcep += 1;
            return;
        }
        match (Dcep::unmarshal(&mut &msg[..]), self.role) {
            (Ok(Dcep::DataChannelOpen(open)), ChannelRole::Acceptor) => {
                tracing::debug!(
                    label = %String::from_utf8_lossy(&open.label),
                    "DATA_CHANNEL_OPEN on stream {STREAM_ID}"
                );
                let (unordered, reliability) =
                    RtcDataChannel::get_reliability_params(open.channel_type);
                let now = self.now;
                let Some((_, a)) = self.assocs.first_mut() else {
                    return;
                };
                // A repeated OPEN is acknowledged again; the channel opens once.
                let acked = Dcep::DataChannelAck(DataChannelAck {})
                    .marshal()
                    .and_then(|ack| {
                        let mut s = a.stream(STREAM_ID)?;
                        s.set_reliability_params(
                            unordered,
                            reliability,
                            open.reliability_parameter,
                        )?;
                        s.write_sctp(now, &ack.freeze(), Ppi::Dcep)
                    });
                match acked {
                    Ok(_) => self.set_open(),
                    Err(e) => tracing::debug!("DATA_CHANNEL_ACK not sent: {e}"),
                }
            }
            (Ok(Dcep::DataChannelAck(_)), ChannelRole::Opener) => self.acked = true,
            (other, role) => {
                tracing::debug!(?role, "DCEP message dropped: {other:?}");
                self.stats.malformed_dcep += 1;
            }
        }
    }

    /// Whether every DATA chunk of (well-formed) packet `p` is at most [`MAX_TSN_AHEAD`] past
    /// the peer's cumulative TSN, or behind it (a retransmission). rtc-sctp takes any TSN up to
    /// 2^31 ahead, and then reports gaps in SACKs as 16-bit offsets with 16-bit arithmetic that
    /// overflows (a panic in a debug build, a wrong SACK in a release one). A peer cannot have
    /// that much outstanding anyway: the window is 1 MiB and gap offsets are 16 bits.
    fn tsn_in_window(&self, p: &[u8]) -> bool {
        let Some(cum) = self.peer_tsn else {
            return true;
        };
        chunks(p).filter(|(typ, _)| *typ == 0).all(|(_, v)| {
            let ahead = u32::from_be_bytes([v[0], v[1], v[2], v[3]]).wrapping_sub(cum);
            !(u32::from(MAX_TSN_AHEAD) + 1..1 << 31).contains(&ahead)
        })
    }

    /// Notes the initial TSN of an INIT or INIT ACK in (well-formed) packet `p`: the peer's
    /// cumulative TSN is one less until the first SACK says otherwise.
    fn note_initial_tsn(&mut self, p: &[u8]) {
        if let Some((_, v)) = chunks(p).find(|(typ, _)| matches!(typ, 1 | 2)) {
            let initial = u32::from_be_bytes([v[12], v[13], v[14], v[15]]);
            self.peer_tsn = Some(initial.wrapping_sub(1));
        }
    }

    /// Moves every packet the associations want to send into the output queue, noting the
    /// cumulative TSN of each SACK.
    fn gather(&mut self) {
        for (_, a) in &mut self.assocs {
            while let Some(t) = a.poll_transmit(self.now) {
                if let Payload::RawEncode(packets) = t.message {
                    for p in &packets {
                        if let Some((_, v)) = chunks(p).find(|(typ, _)| *typ == 3) {
                            self.peer_tsn = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                        }
                    }
                    self.out.extend(packets);
                }
            }
        }
    }

    /// Ends the channel once: what is queued goes out, then an ABORT for a live association.
    fn finish(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        self.gather();
        for (_, a) in &mut self.assocs {
            if !a.is_closed() {
                let _ = a.abort();
            }
        }
        self.gather();
        self.assocs.clear();
        self.readable.clear();
        tracing::debug!(role = ?self.role, "data channel closed: {reason:?}");
        self.phase = Phase::Closed;
        self.events.push_back(DataChannelEvent::Closed(reason));
    }
}

fn close_reason(e: &AssociationError) -> CloseReason {
    match e {
        AssociationError::Reset
        | AssociationError::ApplicationClosed
        | AssociationError::AssociationClosed => CloseReason::Peer,
        AssociationError::LocallyClosed => CloseReason::Local,
        other => CloseReason::Failed(other.to_string()),
    }
}

fn read_all(chunks: &Chunks) -> Option<Vec<u8>> {
    let mut buf = vec![0; chunks.len()];
    chunks.read(&mut buf).ok()?;
    Some(buf)
}

/// Whether every chunk of SCTP packet `p` is laid out as RFC 9260 and RFC 6525 say, as far as
/// rtc-sctp 0.21.1 relies on it without checking: its ABORT and ERROR parsers panic on an error
/// cause longer than what is left of the chunk, and step from one cause to the next without
/// the padding, so a padded cause followed by another is misread and can panic the same way
/// (found by the `datachannel` fuzz target). Only the DTLS peer can send SCTP here, but a buggy
/// peer must not crash a call either.
///
/// FORWARD TSN (RFC 3758) is refused outright: it belongs to partially reliable channels,
/// which neither this channel nor Telegram's is, and rtc-sctp advances its cumulative TSN one
/// by one up to the one a FORWARD TSN names: up to 2^31 steps for one chunk, seconds of CPU
/// (and an overflow panic in a debug build when the TSN wraps).
///
/// Chunk types rtc-sctp does not know are let through: it drops such packets itself.
fn well_formed(p: &[u8]) -> bool {
    let Some(mut rest) = p.get(12..).filter(|r| !r.is_empty()) else {
        return false;
    };
    while !rest.is_empty() {
        let Some((typ, value, next)) = tlv(rest) else {
            return false;
        };
        let u16_at = |i: usize| usize::from(u16::from_be_bytes([value[i], value[i + 1]]));
        let ok = match typ {
            // DATA: TSN, stream, SSN, PPID and at least one byte (RFC 9260 §3.3.1).
            0 => value.len() > 12,
            // INIT, INIT ACK: fixed part, then parameters.
            1 | 2 => value.len() >= 16 && tlvs_ok(&value[16..]),
            // SACK: fixed part, then as many gap blocks and duplicate TSNs as it says.
            3 => value.len() >= 12 && value.len() == 12 + 4 * (u16_at(8) + u16_at(10)),
            // HEARTBEAT, HEARTBEAT ACK: parameters; RE-CONFIG: parameters (RFC 6525).
            4 | 5 | 130 => tlvs_ok(value),
            // ABORT, ERROR: error causes. rtc-sctp steps from one to the next without the
            // padding, so only the last may have a length that is not a multiple of 4.
            6 | 9 => causes_ok(value),
            // SHUTDOWN: the cumulative TSN.
            7 => value.len() == 4,
            // SHUTDOWN ACK, COOKIE ACK, SHUTDOWN COMPLETE: nothing.
            8 | 11 | 14 => value.is_empty(),
            // FORWARD TSN: see above.
            192 => false,
            _ => true,
        };
        if !ok {
            return false;
        }
        rest = next;
    }
    true
}

/// Splits the first type-length-value item (a chunk, a parameter or an error cause: all share
/// the layout, with a 16-bit length that counts the 4-byte header but not the padding to 4)
/// off `b`: its type (the first byte of a chunk), value and what follows the padding.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let len = usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
    let value = b.get(4..len)?;
    let next = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    Some((b[0], value, next))
}

/// The chunks of a packet [`well_formed`] accepted (or that rtc-sctp wrote): type and value.
fn chunks(p: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = p.get(12..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        let (typ, value, next) = tlv(rest)?;
        rest = next;
        Some((typ, value))
    })
}

fn tlvs_ok(mut b: &[u8]) -> bool {
    while !b.is_empty() {
        match tlv(b) {
            Some((_, _, next)) => b = next,
            None => return false,
        }
    }
    true
}

fn causes_ok(mut b: &[u8]) -> bool {
    while !b.is_empty() {
        match tlv(b) {
            Some((_, value, next)) if next.is_empty() || value.len() % 4 == 0 => b = next,
            _ => return false,
        }
    }
    true
}

/// An SCTP packet whose first chunk is an INIT (RFC 9260 §3.3.2: verification tag 0, chunk
/// type 1), so that a refused one is not counted as malformed.
fn looks_like_init(p: &[u8]) -> bool {
    p.len() >= 16 && p[4..8] == [0, 0, 0, 0] && p[12] == 1
}

/// Two channels wired back to back on virtual time, for the tests and the fuzz target.
#[doc(hidden)]
pub(crate) mod harness {
    use std::time::{Duration, Instant};

    use super::*;

    pub(crate) struct Pair {
        /// `[participant, server]` as in a Telegram call, unless built otherwise.
        pub sides: [DataChannel; 2],
        pub now: Instant,
        /// Packets sent by each side, delivered or not.
        pub sent: [u64; 2],
        /// The verification tag each side expects, learnt from packets delivered to it.
        pub tags: [Option<[u8; 4]>; 2],
    }

    impl Pair {
        pub(crate) fn new(sides: [DataChannel; 2], now: Instant) -> Self {
            Pair {
                sides,
                now,
                sent: [0; 2],
                tags: [None; 2],
            }
        }

        /// A participant and a server, as Telegram pairs them.
        pub(crate) fn telegram(now: Instant) -> Self {
            Self::new(
                [DataChannel::participant(now), DataChannel::server(now)],
                now,
            )
        }

        /// Delivers what both sides send until neither has more, except what `lose` picks
        /// (called with the sending side, that side's packet count from 1, and the packet).
        /// Returns whether anything was sent.
        pub(crate) fn pump(&mut self, lose: &mut dyn FnMut(usize, u64, &[u8]) -> bool) -> bool {
            let mut any = false;
            loop {
                let mut moved = false;
                for from in 0..2 {
                    while let Some(p) = self.sides[from].poll_output() {
                        moved = true;
                        self.sent[from] += 1;
                        if lose(from, self.sent[from], &p) {
                            continue;
                        }
                        assert!(
                            well_formed(&p),
                            "a packet rtc-sctp wrote is refused: {p:02x?}"
                        );
                        let to = 1 - from;
                        if p.len() >= 8 && p[4..8] != [0, 0, 0, 0] {
                            self.tags[to] = Some([p[4], p[5], p[6], p[7]]);
                        }
                        self.sides[to].handle_input(self.now, &p);
                    }
                }
                any |= moved;
                if !moved {
                    return any;
                }
            }
        }

        /// Pumps, and moves the clock to the next timer whenever nothing is in flight, until
        /// `done` holds or `limit` of virtual time has passed. Returns whether `done` held.
        pub(crate) fn run_until(
            &mut self,
            limit: Duration,
            lose: &mut dyn FnMut(usize, u64, &[u8]) -> bool,
            done: &mut dyn FnMut(&mut Pair) -> bool,
        ) -> bool {
            let deadline = self.now + limit;
            loop {
                self.pump(lose);
                if done(self) {
                    return true;
                }
                let next = self
                    .sides
                    .iter()
                    .filter_map(DataChannel::poll_timeout)
                    .min();
                match next {
                    Some(t) if t <= deadline => {
                        self.now = self.now.max(t);
                        for s in &mut self.sides {
                            if s.poll_timeout().is_some_and(|t| t <= self.now) {
                                s.handle_timeout(self.now);
                            }
                        }
                    }
                    _ => return false,
                }
            }
        }

        /// Runs until both sides are open (no loss); false if they do not open within 10 s.
        pub(crate) fn open(&mut self) -> bool {
            self.run_until(Duration::from_secs(10), &mut |_, _, _| false, &mut |p| {
                p.sides.iter().all(DataChannel::is_open)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::harness::Pair;
    use super::*;

    fn no_loss() -> impl FnMut(usize, u64, &[u8]) -> bool {
        |_, _, _| false
    }

    fn messages(dc: &mut DataChannel) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = dc.poll_event() {
            match e {
                DataChannelEvent::Message(m) => out.push(m),
                DataChannelEvent::Open => {}
                DataChannelEvent::Closed(r) => panic!("unexpected close: {r:?}"),
            }
        }
        out
    }

    /// Sends `texts` from `from` and runs until the other side has them all; returns them.
    fn exchange(p: &mut Pair, from: usize, texts: &[String]) -> Vec<String> {
        for t in texts {
            p.sides[from].send_text(p.now, t).expect("send");
        }
        let mut got = Vec::new();
        let want = texts.len();
        assert!(
            p.run_until(Duration::from_secs(30), &mut no_loss(), &mut |p| {
                got.extend(messages(&mut p.sides[1 - from]));
                got.len() >= want
            }),
            "only {} of {want} messages arrived",
            got.len()
        );
        got
    }

    fn texts(prefix: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{{\"{prefix}\":{i},\"colibriClass\":\"ReceiverVideoConstraints\"}}"))
            .collect()
    }

    fn opened(mut p: Pair) -> Pair {
        assert!(
            p.open(),
            "channel did not open: {:?}",
            p.sides.each_ref().map(|s| s.stats())
        );
        for s in &mut p.sides {
            assert_eq!(s.poll_event(), Some(DataChannelEvent::Open));
        }
        p
    }

    #[test]
    fn opens_on_both_sides_and_carries_text_both_ways_in_order() {
        let mut p = opened(Pair::telegram(Instant::now()));
        assert_eq!(p.sides[0].role(), ChannelRole::Opener);
        assert_eq!(p.sides[1].sctp_role(), SctpRole::Initiator);
        assert!(
            p.sides[0].peer_acknowledged(),
            "the server answered DATA_CHANNEL_ACK"
        );
        assert!(!p.sides[1].peer_acknowledged());

        let mut up = texts("up", 20);
        // A large message among small ones: fragmented by SCTP, reassembled in order.
        up.insert(10, "x".repeat(100_000));
        up.push(String::new());
        up.push("ünïcödé ✓".into());
        assert_eq!(exchange(&mut p, 0, &up), up);
        let down = texts("down", 20);
        assert_eq!(exchange(&mut p, 1, &down), down);

        let (c, s) = (p.sides[0].stats(), p.sides[1].stats());
        assert_eq!((c.messages_out, s.messages_in), (23, 23));
        assert_eq!((s.messages_out, c.messages_in), (20, 20));
        assert_eq!(s.bytes_in, up.iter().map(|t| t.len() as u64).sum::<u64>());
        for st in [c, s] {
            assert_eq!(
                st.malformed_packets + st.malformed_dcep + st.ignored_unexpected,
                0
            );
        }
    }

    #[test]
    fn works_with_the_sctp_roles_swapped() {
        // An opener that also starts the association, and an acceptor that waits for it.
        let now = Instant::now();
        let mut p = opened(Pair::new(
            [
                DataChannel::new(ChannelRole::Opener, SctpRole::Initiator, now),
                DataChannel::new(ChannelRole::Acceptor, SctpRole::Responder, now),
            ],
            now,
        ));
        let t = texts("swapped", 5);
        assert_eq!(exchange(&mut p, 0, &t), t);
        assert_eq!(exchange(&mut p, 1, &t), t);
    }

    #[test]
    fn sctp_role_follows_the_dtls_role() {
        assert_eq!(SctpRole::for_dtls(true), SctpRole::Initiator);
        assert_eq!(SctpRole::for_dtls(false), SctpRole::Responder);
        let now = Instant::now();
        assert_eq!(
            DataChannel::server(now).sctp_role(),
            SctpRole::for_dtls(true)
        );
        assert_eq!(
            DataChannel::participant(now).sctp_role(),
            SctpRole::for_dtls(false)
        );
    }

    #[test]
    fn sending_before_open_after_close_or_too_much_is_a_clear_error() {
        let now = Instant::now();
        let mut p = Pair::telegram(now);
        let e = p.sides[0].send_text(now, "early").unwrap_err();
        assert!(matches!(e, Error::DataChannelNotOpen(_)), "{e:?}");
        assert!(e.to_string().contains("DataChannelEvent::Open"), "{e}");

        let mut p = opened(p);
        let e = p.sides[1]
            .send_text(p.now, &"x".repeat(MAX_MESSAGE_SIZE + 1))
            .unwrap_err();
        assert!(
            matches!(e, Error::MessageTooLarge { size, limit } if size == MAX_MESSAGE_SIZE + 1 && limit == MAX_MESSAGE_SIZE),
            "{e:?}"
        );
        // Exactly the limit is fine.
        p.sides[1]
            .send_text(p.now, &"y".repeat(MAX_MESSAGE_SIZE))
            .expect("a message of exactly the limit");
        // A few more fill the 1 MiB send buffer before the peer acknowledges anything.
        let big = "z".repeat(MAX_MESSAGE_SIZE);
        let mut accepted = 1;
        let refused = loop {
            match p.sides[1].send_text(p.now, &big) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted <= 4, "the send buffer is not bounded");
        };
        assert!(
            matches!(refused, Error::SendBufferFull { .. }),
            "{refused:?}"
        );
        assert!(accepted >= 3, "{accepted}");
        // What was accepted arrives.
        let mut got = Vec::new();
        p.run_until(Duration::from_secs(30), &mut no_loss(), &mut |p| {
            got.extend(messages(&mut p.sides[0]));
            got.len() == accepted
        });
        assert_eq!(got.len(), accepted);
        assert!(got.iter().all(|m| m.len() == MAX_MESSAGE_SIZE));
        // Once acknowledged, the buffer takes more.
        p.sides[1].send_text(p.now, &big).expect("room again");

        p.sides[0].close(p.now);
        let e = p.sides[0].send_text(p.now, "late").unwrap_err();
        assert!(e.to_string().contains("closed"), "{e}");
    }

    #[test]
    fn garbage_and_malformed_messages_are_counted_and_dropped() {
        let mut p = opened(Pair::telegram(Instant::now()));
        let now = p.now;

        // Not SCTP (bad checksum), too short, empty, and an INIT once established.
        let before = p.sides[1].stats();
        p.sides[1].handle_input(now, b"definitely not an SCTP packet, the checksum fails");
        p.sides[1].handle_input(now, &[0x13, 0x88]);
        p.sides[1].handle_input(now, &[]);
        let s = p.sides[1].stats();
        assert_eq!(s.packets_in - before.packets_in, 3);
        assert_eq!(s.malformed_packets - before.malformed_packets, 3);

        // Through a real association: DCEP that does not parse, an unknown DCEP type, an ACK
        // to the acceptor, binary, invalid UTF-8, an unknown PPID and another stream.
        let (dcep, string, binary) = (50, 51, 53);
        p.sides[0].send_raw(now, STREAM_ID, dcep, &[0x03, 0x00]);
        p.sides[0].send_raw(now, STREAM_ID, dcep, &[0x7f]);
        // rtc's internal types, one of which its parser panicked on when short.
        p.sides[0].send_raw(now, STREAM_ID, dcep, &[0x00]);
        p.sides[0].send_raw(now, STREAM_ID, dcep, &[0x00, 0x01]);
        p.sides[0].send_raw(now, STREAM_ID, dcep, &[0x01]);
        p.sides[0].send_raw(now, STREAM_ID, dcep, &[0x02]);
        p.sides[0].send_raw(now, STREAM_ID, binary, b"\x00\x01binary");
        p.sides[0].send_raw(now, STREAM_ID, string, b"\xff\xfe not utf-8");
        p.sides[0].send_raw(now, STREAM_ID, 99, b"what is this");
        p.sides[0].send_raw(now, 1, string, b"{\"on\":\"another stream\"}");
        // And the reverse: an OPEN to the opener.
        p.sides[1].send_raw(
            now,
            STREAM_ID,
            dcep,
            &[0x03, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        p.pump(&mut no_loss());
        let s = p.sides[1].stats();
        assert_eq!(s.malformed_dcep, 6, "{s:?}");
        assert_eq!(s.ignored_binary, 1, "{s:?}");
        assert_eq!(s.ignored_invalid_utf8, 1, "{s:?}");
        assert_eq!(s.ignored_unexpected, 2, "{s:?}");
        assert_eq!(s.messages_in, 0, "{s:?}");
        assert_eq!(p.sides[0].stats().malformed_dcep, 1);

        // Still open both ways.
        assert!(p.sides.iter().all(DataChannel::is_open));
        let t = texts("after", 3);
        assert_eq!(exchange(&mut p, 0, &t), t);
        assert_eq!(exchange(&mut p, 1, &t), t);
    }

    #[test]
    fn chunks_rtc_sctp_would_panic_or_stall_on_are_refused() {
        let mut p = opened(Pair::telegram(Instant::now()));
        let tag = p.tags[1].expect("the server's verification tag");
        // The server's cumulative TSN, from the SACK it sends for a message.
        let mut cum = None;
        p.sides[0].send_text(p.now, "{}").unwrap();
        let mut sacks = |from: usize, _: u64, pkt: &[u8]| {
            if from == 1 && pkt.get(12) == Some(&3) {
                cum = Some(u32::from_be_bytes([pkt[16], pkt[17], pkt[18], pkt[19]]));
            }
            false
        };
        p.run_until(Duration::from_secs(2), &mut sacks, &mut |_| false);
        let cum = cum.expect("a SACK");
        let far = cum.wrapping_add(0x7fff_fff0).to_be_bytes();
        let data_at = |ahead: u32| {
            let t = cum.wrapping_add(ahead).to_be_bytes();
            [
                0, 3, 0, 17, t[0], t[1], t[2], t[3], 0, 0, 0, 0, 0, 0, 0, 51, b'x', 0, 0, 0,
            ]
        };
        let (gap_end, gap_wrap) = (data_at(0xffff), data_at(0x1_0000));
        let packet = |chunk: &[u8]| {
            let mut pkt = vec![0x13, 0x88, 0x13, 0x88, 0, 0, 0, 0, 0, 0, 0, 0];
            pkt.extend_from_slice(chunk);
            crate::fuzz::seal_sctp(&pkt, tag)
        };
        let hostile: [&[u8]; 7] = [
            // ABORT whose error cause claims 40 bytes of a 4-byte value: rtc-sctp panics.
            &[6, 0, 0, 8, 0, 1, 0, 40],
            // ERROR with a 5-byte cause, padded, then another (type 0xff00): rtc-sctp steps
            // over no padding, reads a cause of length 0x00ff there and panics.
            &[9, 0, 0, 16, 0, 1, 0, 5, 9, 0, 0, 0, 0xff, 0, 0, 4],
            // FORWARD TSN 2^31 - 16 ahead: rtc-sctp steps there one TSN at a time (seconds
            // of CPU in a release build, an overflow panic in a debug one).
            &[192, 0, 0, 8, far[0], far[1], far[2], far[3]],
            // FORWARD TSN shorter than its new cumulative TSN.
            &[192, 0, 0, 6, 1, 2, 0, 0],
            // DATA without user data.
            &[0, 3, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 51],
            // DATA 65535 and 65536 TSNs ahead: rtc-sctp takes both, and its SACK's 16-bit gap
            // offsets overflow (a panic in a debug build).
            &gap_end,
            &gap_wrap,
        ];
        for chunk in hostile {
            let before = p.sides[1].stats().malformed_packets;
            p.sides[1].handle_input(p.now, &packet(chunk));
            assert_eq!(
                p.sides[1].stats().malformed_packets,
                before + 1,
                "{chunk:?}"
            );
        }
        p.pump(&mut no_loss());
        assert_eq!(messages(&mut p.sides[1]), ["{}"]);
        let t = texts("unharmed", 2);
        assert_eq!(exchange(&mut p, 0, &t), t);
        assert_eq!(exchange(&mut p, 1, &t), t);

        // The same way in, a well-formed ABORT does reach the association.
        p.sides[1].handle_input(p.now, &packet(&[6, 0, 0, 4]));
        let e = p.sides[1].poll_event();
        assert!(matches!(e, Some(DataChannelEvent::Closed(_))), "{e:?}");
    }

    #[test]
    fn oversize_incoming_messages_are_counted_and_dropped() {
        let now = Instant::now();
        // A peer with a larger limit than Telegram's.
        let mut p = opened(Pair::new(
            [
                DataChannel::with_max_message_size(
                    ChannelRole::Opener,
                    SctpRole::Responder,
                    2 * MAX_MESSAGE_SIZE,
                    now,
                ),
                DataChannel::server(now),
            ],
            now,
        ));
        p.sides[0]
            .send_text(p.now, &"o".repeat(MAX_MESSAGE_SIZE + 1))
            .expect("the peer's own limit allows it");
        let t = texts("next", 2);
        assert_eq!(exchange(&mut p, 0, &t), t);
        assert_eq!(p.sides[1].stats().ignored_oversize, 1);
    }

    #[test]
    fn lost_packets_are_recovered_by_retransmission() {
        let mut p = Pair::telegram(Instant::now());
        let start = p.now;
        // Lose the first INIT, the first INIT ACK, the first COOKIE ECHO and, later, some
        // data and SACKs in both directions.
        let mut lose = |from: usize, n: u64, _: &[u8]| match from {
            0 => [1, 4, 6, 9].contains(&n),
            _ => [1, 2, 5, 8, 12].contains(&n),
        };
        assert!(p.run_until(Duration::from_secs(60), &mut lose, &mut |p| {
            p.sides.iter().all(DataChannel::is_open)
        }));
        let open_after = p.now - start;
        for s in &mut p.sides {
            assert_eq!(s.poll_event(), Some(DataChannelEvent::Open));
        }
        let up = texts("lossy-up", 10);
        let down = texts("lossy-down", 10);
        for t in &up {
            p.sides[0].send_text(p.now, t).unwrap();
        }
        for t in &down {
            p.sides[1].send_text(p.now, t).unwrap();
        }
        let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
        let delivered = p.run_until(Duration::from_secs(60), &mut lose, &mut |p| {
            got_up.extend(messages(&mut p.sides[1]));
            got_down.extend(messages(&mut p.sides[0]));
            got_up.len() == up.len() && got_down.len() == down.len()
        });
        assert!(delivered, "{got_up:?} {got_down:?}");
        assert_eq!((got_up, got_down), (up, down));
        // A handful of 1 s retransmission timeouts, not minutes.
        assert!(
            p.now - start < Duration::from_secs(30),
            "took {:?}",
            p.now - start
        );
        assert!(
            open_after >= Duration::from_secs(1),
            "no loss was exercised?"
        );
    }

    #[test]
    fn data_that_overtakes_the_end_of_the_handshake_is_read_once_it_completes() {
        // The participant's COOKIE ACK (chunk type 11) is lost, so its OPEN reaches a server
        // still in COOKIE-ECHOED; the server reads it only after the retransmitted COOKIE
        // ECHO is answered.
        let mut p = Pair::telegram(Instant::now());
        let mut acks_lost = 0;
        let mut lose = |from: usize, _: u64, pkt: &[u8]| {
            let cookie_ack = from == 0 && pkt.get(12) == Some(&11) && acks_lost == 0;
            acks_lost += u32::from(cookie_ack);
            cookie_ack
        };
        assert!(p.run_until(Duration::from_secs(30), &mut lose, &mut |p| {
            p.sides.iter().all(DataChannel::is_open)
        }));
        assert_eq!(acks_lost, 1);
        for s in &mut p.sides {
            assert_eq!(s.poll_event(), Some(DataChannelEvent::Open));
        }
        let t = texts("late", 2);
        assert_eq!(exchange(&mut p, 1, &t), t);
        assert_eq!(exchange(&mut p, 0, &t), t);
    }

    #[test]
    fn a_full_event_queue_holds_messages_back_without_losing_them() {
        let mut p = opened(Pair::telegram(Instant::now()));
        let n = MAX_QUEUED_EVENTS + 100;
        let sent = texts("flood", n);
        let mut got = Vec::new();
        // Send in bursts the send buffer accepts; the receiver does not poll until the end.
        let mut i = 0;
        while i < n {
            while i < n && p.sides[0].send_text(p.now, &sent[i]).is_ok() {
                i += 1;
            }
            p.run_until(Duration::from_secs(5), &mut no_loss(), &mut |_| false);
        }
        let s = p.sides[1].stats();
        assert_eq!(s.messages_in as usize, MAX_QUEUED_EVENTS, "{s:?}");
        assert!(s.reads_deferred > 0);
        // Taking events lets the rest in.
        p.run_until(Duration::from_secs(60), &mut no_loss(), &mut |p| {
            got.extend(messages(&mut p.sides[1]));
            got.len() == n
        });
        assert_eq!(got, sent);
    }

    #[test]
    fn close_reaches_the_peer() {
        let mut p = opened(Pair::telegram(Instant::now()));
        p.sides[1].close(p.now);
        assert_eq!(
            p.sides[1].poll_event(),
            Some(DataChannelEvent::Closed(CloseReason::Local))
        );
        p.pump(&mut no_loss());
        assert_eq!(
            p.sides[0].poll_event(),
            Some(DataChannelEvent::Closed(CloseReason::Peer))
        );
        assert!(p.sides.iter().all(DataChannel::is_closed));
        assert!(p.sides.iter().all(|s| s.poll_timeout().is_none()));
        // Nothing more comes out, and input is only counted.
        p.sides[0].handle_input(p.now, b"late");
        assert_eq!(p.sides[0].poll_event(), None);
        assert_eq!(p.sides[0].poll_output(), None);
    }

    #[test]
    fn an_initiator_with_no_peer_gives_up() {
        let now = Instant::now();
        let mut p = Pair::new([DataChannel::server(now), DataChannel::server(now)], now);
        // Two initiators: each refuses the other's INIT, so no association ever forms.
        let mut done = |p: &mut Pair| p.sides.iter().all(DataChannel::is_closed);
        assert!(p.run_until(Duration::from_secs(3600), &mut no_loss(), &mut done));
        let e = p.sides[0].poll_event();
        assert!(
            matches!(e, Some(DataChannelEvent::Closed(CloseReason::Failed(_)))),
            "{e:?}"
        );
        assert!(p.sides[0].stats().refused_inits > 0);
    }
}
