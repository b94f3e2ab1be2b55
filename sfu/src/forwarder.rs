//! The media plane as a sans-IO state machine: one UDP socket's datagrams routed to per-participant
//! ICE-lite transports, and every RTP packet a participant sends forwarded, re-protected, to every
//! other connected participant of the same call with the sender's SSRC unchanged, as Telegram's
//! server does (docs/protocol.md §5.3).
//!
//! Routing: STUN carries `serverUfrag:clientUfrag`, and every participant gets its own server
//! ufrag, so a check finds its participant even from an address never seen before (the client's
//! address is learned from its checks, never assumed). Everything else is routed by the source
//! address the participant's latest valid check came from.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use groupcall_media::answer::{
    telegram_audio_info, telegram_video_info_with, Candidate, RtcAnswer, TransportInfo, VideoCodec,
};
use groupcall_media::demux::{classify, PacketClass};
use groupcall_media::ice::stun_username;
use groupcall_media::payload::DtlsFingerprint;
use groupcall_media::rtcp;
use groupcall_media::{
    Event, FailureCause, IceCredentials, JoinPayload, LocalEndpoint, LocalIdentity, RemotePeer,
    SrtpProfile, State, Transport, TransportConfig,
};

use crate::constraints::{self, ClientMessage, ReceiverConstraints};
use crate::feedback::{FeedbackRouter, Request, RequestKind};
use crate::simulcast::{Decision, LayerSelector, Layout, Place};
use groupcall_media::video::keyframe::{rtp_payload, starts_keyframe};
use groupcall_media::RtpPacket;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

/// A participant of a call, identified as Telegram does: call id and audio source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub call: i64,
    pub source: u32,
}

/// What the media plane tells the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// DTLS finished and SRTP runs with `profile`.
    Connected { key: Key, profile: SrtpProfile },
    /// The participant's transport failed (silent for the consent timeout, refused
    /// certificate, closed): the control plane removes it and tells the call.
    Gone { key: Key, cause: FailureCause },
    /// The participant started sending video in `codec` (or changed codec): which codec a
    /// client chose from the answer is visible, and logged.
    VideoCodec { key: Key, codec: VideoCodec },
    /// The participant's data channel opened (it can say which video it wants).
    DataChannelOpen { key: Key },
}

/// Counters of the whole media plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwarderStats {
    /// Datagrams from addresses and ufrags that belong to no participant.
    pub strangers: u64,
    /// RTP packets received from participants.
    pub rtp_in: u64,
    /// RTP packets sent to participants (one per receiver).
    pub rtp_forwarded: u64,
    /// Packets that could not be re-protected for a receiver.
    pub forward_failures: u64,
    /// RTP packets on an SSRC their sender did not declare in its join payload. They are
    /// dropped before decryption (not counted in `rtp_in`), so they never get SRTP or
    /// reception state.
    pub rtp_foreign_ssrc: u64,
    /// The same for RTCP, by the packet's sender SSRC.
    pub rtcp_foreign_ssrc: u64,
    /// Keyframe requests (PLI, FIR) from receivers, and those passed on to a publisher (the
    /// rest were merged into a recent one: `feedback::KEYFRAME_REQUEST_INTERVAL`).
    pub keyframe_requests: u64,
    pub keyframe_requests_forwarded: u64,
    /// NACKs passed on to the publisher of the lost packets.
    pub nacks_forwarded: u64,
    /// Feedback about a source nobody in the call declared (a publisher that left).
    pub feedback_unrouted: u64,
    /// Keyframe requests the server made itself, for a receiver switching simulcast layers.
    pub layer_keyframe_requests: u64,
    /// `ReceiverVideoConstraints` taken from data channels.
    pub constraints_received: u64,
    /// Data-channel messages of other colibri classes (ignored), and ones that did not parse.
    pub data_messages_ignored: u64,
    pub data_messages_malformed: u64,
    /// `SenderVideoConstraints` sent to publishers.
    pub sender_constraints_sent: u64,
}

/// Per-participant counters, for a person (or a test) checking who sends what.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParticipantStats {
    pub rtp_received: u64,
    pub rtp_sent: u64,
    /// RTCP compound packets received (sender and receiver reports, feedback).
    pub rtcp_received: u64,
    pub connected: bool,
    /// How many remote SSRCs its transport keeps receive state for (SRTP replay window,
    /// reception statistics): at most the sources its join payload declared, whatever it sends.
    pub receive_ssrcs: usize,
}

/// Which of a participant's connections this is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// The main connection (`joinGroupCall`): sends its audio and camera, receives everyone's.
    #[default]
    Main,
    /// A screen share (`joinGroupCallPresentation`): only sends; nothing is forwarded to it.
    Presentation,
}

struct Participant {
    transport: Transport,
    role: Role,
    server_ufrag: String,
    addr: Option<SocketAddr>,
    stats: ParticipantStats,
    /// Every SSRC its join payload declared (audio, video groups): the only ones it may send.
    sources: Vec<u32>,
    /// Its simulcast streams, as a publisher.
    layout: Layout,
    /// As a receiver: which layer of each publisher's simulcast stream it gets, by publisher
    /// and stream. Entries go when the publisher does.
    selectors: HashMap<(Key, usize), LayerSelector>,
    /// The codec of the last video packet it sent.
    video_codec: Option<VideoCodec>,
    /// Its video's endpoint id, as its answer announced it.
    endpoint: String,
    /// What it asked to see over the data channel; `None` until it says: everything, at the
    /// top layer (a client without a data channel still gets video).
    constraints: Option<ReceiverConstraints>,
    data_channel_open: bool,
    /// The `SenderVideoConstraints` height last sent to it.
    sent_ideal_height: Option<u32>,
}

pub struct Forwarder {
    local_addr: SocketAddr,
    identity: LocalIdentity,
    video: VideoOffer,
    config: TransportConfig,
    participants: HashMap<Key, Participant>,
    by_ufrag: HashMap<String, Key>,
    by_addr: HashMap<SocketAddr, Key>,
    transmits: VecDeque<(SocketAddr, BytesMut)>,
    events: VecDeque<MediaEvent>,
    stats: ForwarderStats,
    /// Reused per forwarded packet: the receivers of the sender's call.
    scratch_keys: Vec<Key>,
    /// Reused per rewritten simulcast packet.
    scratch_rtp: Vec<u8>,
    /// Which connection declared each source: where feedback about it goes.
    owners: HashMap<u32, Key>,
    feedback: FeedbackRouter,
    scratch_requests: Vec<Request>,
    /// Calls whose `SenderVideoConstraints` are to be worked out again.
    constraints_dirty: Vec<i64>,
}

impl Forwarder {
    /// A media plane answering on `local_addr` with one server certificate for every participant.
    pub fn new(local_addr: SocketAddr, config: TransportConfig) -> groupcall_media::Result<Self> {
        Ok(Forwarder {
            local_addr,
            identity: LocalIdentity::generate()?,
            video: VideoOffer::default(),
            config,
            participants: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: ForwarderStats::default(),
            scratch_keys: Vec::new(),
            scratch_rtp: Vec::new(),
            owners: HashMap::new(),
            feedback: FeedbackRouter::default(),
            scratch_requests: Vec::new(),
            constraints_dirty: Vec::new(),
        })
    }

    /// What the answers' `video` sections offer.
    pub fn with_video_offer(mut self, offer: VideoOffer) -> Self {
        self.video = offer;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> ForwarderStats {
        let f = self.feedback.stats();
        ForwarderStats {
            keyframe_requests: f.keyframe_requests_in,
            keyframe_requests_forwarded: f.keyframe_requests_out,
            ..self.stats
        }
    }

    pub fn participant_stats(&self, key: Key) -> Option<ParticipantStats> {
        self.participants.get(&key).map(|p| ParticipantStats {
            receive_ssrcs: p.transport.stats().ssrcs.len(),
            ..p.stats
        })
    }

    /// Fresh server credentials for one participant and the answer that announces them. Pure:
    /// callers on another thread can answer the join at once and hand the credentials over.
    pub fn prepare_answer(&self, payload: &JoinPayload, role: Role) -> (IceCredentials, RtcAnswer) {
        self.answerer().answer(payload, role)
    }

    /// A clone of what [`prepare_answer`](Self::prepare_answer) needs, to answer off-thread.
    pub fn answerer(&self) -> Answerer {
        Answerer {
            local_addr: self.local_addr,
            identity: self.identity.clone(),
            video: self.video.clone(),
        }
    }

    /// Registers a participant's connection with the credentials its answer announced.
    pub fn add(
        &mut self,
        now: Instant,
        key: Key,
        payload: &JoinPayload,
        server_ice: IceCredentials,
        role: Role,
    ) -> groupcall_media::Result<()> {
        self.remove(now, key);
        let remote = RemotePeer::from_payload(payload)?;
        let setup = payload.fingerprints[0].setup.complement();
        let transport = Transport::new(
            self.config.clone(),
            LocalEndpoint {
                addr: self.local_addr,
                ice: server_ice.clone(),
                certificate: self.identity.certificate.clone(),
                setup,
            },
            remote,
            now,
        )?;
        self.by_ufrag.insert(server_ice.ufrag.clone(), key);
        for s in payload.all_sources() {
            self.owners.insert(s, key);
        }
        self.participants.insert(
            key,
            Participant {
                transport,
                role,
                server_ufrag: server_ice.ufrag,
                addr: None,
                stats: ParticipantStats::default(),
                sources: payload.all_sources(),
                layout: Layout::from_groups(&payload.ssrc_groups),
                selectors: HashMap::new(),
                video_codec: None,
                endpoint: endpoint_of(key.source, role),
                constraints: None,
                data_channel_open: false,
                sent_ideal_height: None,
            },
        );
        // A new receiver without constraints wants the top layer of everyone.
        self.constraints_changed(key.call);
        self.refresh_sender_constraints(now);
        Ok(())
    }

    /// Drops a participant (left, kicked, call discarded). Its DTLS association is closed.
    pub fn remove(&mut self, now: Instant, key: Key) {
        if let Some(mut p) = self.participants.remove(&key) {
            p.transport.close(now);
            self.drain(now, key, &mut p);
            self.by_ufrag.remove(&p.server_ufrag);
            for s in &p.sources {
                if self.owners.get(s) == Some(&key) {
                    self.owners.remove(s);
                    self.feedback.forget(*s);
                }
            }
            for r in self.participants.values_mut() {
                r.selectors.retain(|(publisher, _), _| *publisher != key);
            }
            if let Some(a) = p.addr {
                if self.by_addr.get(&a) == Some(&key) {
                    self.by_addr.remove(&a);
                }
            }
            // A receiver gone may have been the one that wanted the most.
            self.constraints_changed(key.call);
            self.refresh_sender_constraints(now);
        }
    }

    /// Removes every participant of a call.
    pub fn remove_call(&mut self, now: Instant, call: i64) {
        let keys: Vec<Key> = self
            .participants
            .keys()
            .filter(|k| k.call == call)
            .copied()
            .collect();
        for k in keys {
            self.remove(now, k);
        }
    }

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let class = classify(data);
        let key = if class == PacketClass::Stun {
            stun_username(data)
                .and_then(|u| u.split(':').next().map(str::to_owned))
                .and_then(|ufrag| self.by_ufrag.get(&ufrag).copied())
        } else {
            self.by_addr.get(&from).copied()
        };
        let Some(key) = key else {
            self.stats.strangers += 1;
            return;
        };
        let Some(sources) = self.participants.get(&key).map(|p| &p.sources) else {
            self.stats.strangers += 1;
            return;
        };
        // Ownership before decryption: the SRTP context makes state (replay window, rollover
        // counter) for every SSRC it decrypts, and reception statistics follow, so a
        // participant sending on thousands of made-up SSRCs would grow them without bound.
        // Its own sources are a short list fixed at join (`MAX_SOURCES`). The SSRC is in
        // the clear in SRTP and SRTCP headers; a packet too short to have one is left to the
        // transport, which drops it as malformed without making state.
        match class {
            PacketClass::Rtp if rtp_ssrc(data).is_some_and(|s| !sources.contains(&s)) => {
                self.stats.rtp_foreign_ssrc += 1;
                return;
            }
            PacketClass::Rtcp if rtcp_sender_ssrc(data).is_some_and(|s| !sources.contains(&s)) => {
                self.stats.rtcp_foreign_ssrc += 1;
                return;
            }
            _ => {}
        }
        let Some(mut p) = self.participants.remove(&key) else {
            self.stats.strangers += 1;
            return;
        };
        p.transport.handle_datagram(now, from, data);
        let remote = p.transport.remote_addr();
        if remote != p.addr {
            if let Some(old) = p.addr {
                if self.by_addr.get(&old) == Some(&key) {
                    self.by_addr.remove(&old);
                }
            }
            if let Some(new) = remote {
                self.by_addr.insert(new, key);
            }
            p.addr = remote;
        }
        self.drain(now, key, &mut p);
        self.participants.insert(key, p);
        self.refresh_sender_constraints(now);
    }

    /// Moves a participant's output to the socket queue, forwards its RTP, reports its fate.
    fn drain(&mut self, now: Instant, key: Key, p: &mut Participant) {
        while let Some(t) = p.transport.poll_transmit() {
            self.transmits.push_back((t.destination, t.contents));
        }
        while let Some(e) = p.transport.poll_event() {
            match e {
                Event::Rtp(pkt) => {
                    p.stats.rtp_received += 1;
                    self.stats.rtp_in += 1;
                    // Only sources the sender owns get here (`handle_datagram`): receivers
                    // attribute an SSRC to the participant whose `source` it is (docs/protocol.md
                    // §5.3) and share one SRTP replay window per SSRC, so a packet on another's
                    // source would let one participant speak as another and get the owner's
                    // real packets dropped as replays. SRTP authenticates the header, so the
                    // SSRC checked before decryption is the one decrypted.
                    // Video (not its RTX: the codec's own payload type is even).
                    if let Some(codec) = VideoCodec::from_payload_type(pkt.payload_type)
                        .filter(|c| c.payload_type() == pkt.payload_type)
                    {
                        if p.video_codec != Some(codec) {
                            p.video_codec = Some(codec);
                            self.events.push_back(MediaEvent::VideoCodec { key, codec });
                        }
                    }
                    self.forward(now, key, p, &pkt);
                }
                Event::DataChannelOpen => {
                    p.data_channel_open = true;
                    self.events.push_back(MediaEvent::DataChannelOpen { key });
                    self.constraints_changed(key.call);
                }
                Event::DataChannelMessage(text) => match constraints::parse(&text) {
                    Ok(ClientMessage::Receiver(c)) => {
                        self.stats.constraints_received += 1;
                        tracing::debug!(call = key.call, source = key.source, max_heights = ?c.max_heights, default = c.default_max_height, "receiver video constraints");
                        p.constraints = Some(c);
                        self.apply_constraints(p);
                        self.constraints_changed(key.call);
                    }
                    Ok(ClientMessage::Other(_)) => self.stats.data_messages_ignored += 1,
                    Err(e) => {
                        self.stats.data_messages_malformed += 1;
                        tracing::debug!(
                            call = key.call,
                            source = key.source,
                            "data channel message dropped: {e}"
                        );
                    }
                },
                Event::DataChannelClosed(_) => p.data_channel_open = false,
                Event::Connected { profile, .. } => {
                    p.stats.connected = true;
                    self.events
                        .push_back(MediaEvent::Connected { key, profile });
                }
                Event::StateChanged(State::Failed(cause)) => {
                    p.stats.connected = false;
                    self.events.push_back(MediaEvent::Gone { key, cause });
                }
                // Reports are counted; video feedback goes to the publisher it is about.
                Event::Rtcp(packets) => {
                    p.stats.rtcp_received += 1;
                    let mut requests = std::mem::take(&mut self.scratch_requests);
                    self.feedback.route(now, &packets, &mut requests);
                    for r in requests.drain(..) {
                        let r = self.translate_feedback(now, p, r);
                        self.send_feedback(key, r);
                    }
                    self.scratch_requests = requests;
                }
                _ => {}
            }
        }
        // What handling the events queued on this transport (keyframe requests the server
        // made for a waiting receiver) goes out now, not with its next datagram.
        while let Some(t) = p.transport.poll_transmit() {
            self.transmits.push_back((t.destination, t.contents));
        }
    }

    fn forward(&mut self, now: Instant, from: Key, sender: &mut Participant, pkt: &RtpPacket) {
        let raw = &pkt.raw[..];
        let place = sender.layout.place(pkt.ssrc);
        let keyframe = match place {
            Some(Place::Layer { .. }) => VideoCodec::from_payload_type(pkt.payload_type)
                .zip(rtp_payload(raw))
                .is_some_and(|(codec, payload)| starts_keyframe(codec, payload)),
            _ => false,
        };
        let mut receivers = std::mem::take(&mut self.scratch_keys);
        receivers.clear();
        receivers.extend(
            self.participants
                .iter()
                .filter(|(k, p)| {
                    k.call == from.call
                        && **k != from
                        && p.role == Role::Main
                        && p.transport.is_connected()
                })
                .map(|(k, _)| *k),
        );
        let mut keyframe_wanted = None;
        for k in &receivers {
            if let Some(r) = self.participants.get_mut(k) {
                let sent = match place {
                    // A single-encoding video stream goes to those who watch it at all.
                    None if VideoCodec::from_payload_type(pkt.payload_type).is_some()
                        && r.constraints
                            .as_ref()
                            .is_some_and(|c| c.max_height(&sender.endpoint) == 0) =>
                    {
                        continue
                    }
                    None => r.transport.send_rtp_raw(now, raw),
                    Some(place) => {
                        let (stream, out) = match place {
                            Place::Layer { stream, .. } | Place::Rtx { stream, .. } => {
                                (stream, &sender.layout.streams[stream])
                            }
                        };
                        let sel = r.selectors.entry((from, stream)).or_insert_with(|| {
                            let mut sel = LayerSelector::new(usize::MAX);
                            sel.set_target(target_for(
                                r.constraints.as_ref(),
                                &sender.endpoint,
                                out.layers.len(),
                            ));
                            sel
                        });
                        let rewritten = match place {
                            Place::Layer { layer, .. } => {
                                let d = sel.on_packet(
                                    now,
                                    layer,
                                    pkt.sequence,
                                    pkt.timestamp,
                                    keyframe,
                                );
                                if let Some(l) = sel.needs_keyframe(now) {
                                    keyframe_wanted = out.layers.get(l).copied();
                                }
                                match d {
                                    Decision::Forward {
                                        sequence,
                                        timestamp,
                                    } => rewrite(
                                        &mut self.scratch_rtp,
                                        raw,
                                        out.layers[0],
                                        sequence,
                                        timestamp,
                                        None,
                                    ),
                                    Decision::Drop => false,
                                }
                            }
                            Place::Rtx { layer, .. } => {
                                // Padding-only RTX (the publisher's bandwidth probes) carries no
                                // original packet: it was for this hop only.
                                let osn = rtp_payload(raw)
                                    .and_then(|p| p.get(..2))
                                    .map(|b| u16::from_be_bytes([b[0], b[1]]));
                                match (osn.and_then(|o| sel.on_rtx(layer, o)), out.rtx[0]) {
                                    (Some((osn, seq)), Some(rtx_ssrc)) => rewrite(
                                        &mut self.scratch_rtp,
                                        raw,
                                        rtx_ssrc,
                                        seq,
                                        sel.timestamp(pkt.timestamp),
                                        Some(osn),
                                    ),
                                    _ => false,
                                }
                            }
                        };
                        if !rewritten {
                            continue;
                        }
                        r.transport.send_rtp_raw(now, &self.scratch_rtp)
                    }
                };
                match sent {
                    Ok(()) => {
                        r.stats.rtp_sent += 1;
                        self.stats.rtp_forwarded += 1;
                        while let Some(t) = r.transport.poll_transmit() {
                            self.transmits.push_back((t.destination, t.contents));
                        }
                    }
                    Err(_) => self.stats.forward_failures += 1,
                }
            }
        }
        self.scratch_keys = receivers;
        // A receiver waits for a keyframe of the layer it should get: ask its publisher.
        if let Some(ssrc) = keyframe_wanted {
            if self.feedback.may_request_keyframe(now, ssrc) {
                let pli: [Box<dyn rtcp::packet::Packet>; 1] = [Box::new(PictureLossIndication {
                    sender_ssrc: SERVER_RTCP_SSRC,
                    media_ssrc: ssrc,
                })];
                if sender.transport.send_rtcp(&pli).is_ok() {
                    self.stats.layer_keyframe_requests += 1;
                }
            }
        }
    }

    /// A receiver's feedback about a rewritten simulcast stream names the stream's first SSRC
    /// and the numbers it was sent with: it is about the layer being sent (or the one it waits
    /// for), in that layer's numbers.
    fn translate_feedback(&self, now: Instant, receiver: &Participant, r: Request) -> Request {
        let Some(publisher_key) = self.owners.get(&r.media_ssrc).copied() else {
            return r;
        };
        let Some(publisher) = self.participants.get(&publisher_key) else {
            return r;
        };
        let Some(stream) = publisher
            .layout
            .streams
            .iter()
            .position(|s| s.layers[0] == r.media_ssrc)
        else {
            return r;
        };
        let Some(sel) = receiver.selectors.get(&(publisher_key, stream)) else {
            return r;
        };
        let layers = &publisher.layout.streams[stream].layers;
        match r.kind {
            RequestKind::Keyframe => {
                let now_layer = sel.needs_keyframe(now).or(sel.current()).unwrap_or(0);
                let media_ssrc = layers.get(now_layer).copied().unwrap_or(r.media_ssrc);
                Request {
                    media_ssrc,
                    packet: Box::new(PictureLossIndication {
                        sender_ssrc: SERVER_RTCP_SSRC,
                        media_ssrc,
                    }),
                    kind: RequestKind::Keyframe,
                }
            }
            RequestKind::Nack => {
                let (Some(nack), Some(layer)) = (
                    r.packet.as_any().downcast_ref::<TransportLayerNack>(),
                    sel.current(),
                ) else {
                    return r;
                };
                let mut nack = nack.clone();
                nack.media_ssrc = layers[layer];
                nack.nacks
                    .retain_mut(|n| match sel.original_sequence(n.packet_id) {
                        Some(orig) => {
                            n.packet_id = orig;
                            true
                        }
                        None => false,
                    });
                Request {
                    media_ssrc: nack.media_ssrc,
                    packet: Box::new(nack),
                    kind: RequestKind::Nack,
                }
            }
        }
    }

    /// A receiver's new constraints: the layer it gets of every stream it receives.
    fn apply_constraints(&self, receiver: &mut Participant) {
        for ((publisher, stream), sel) in receiver.selectors.iter_mut() {
            if let Some(p) = self.participants.get(publisher) {
                if let Some(s) = p.layout.streams.get(*stream) {
                    sel.set_target(target_for(
                        receiver.constraints.as_ref(),
                        &p.endpoint,
                        s.layers.len(),
                    ));
                }
            }
        }
    }

    /// Tells every publisher of the calls whose constraints may have changed (a receiver said
    /// something, a data channel opened, someone joined or left) the tallest video anyone now
    /// wants of it, where that changed. Runs with every participant in the map.
    fn refresh_sender_constraints(&mut self, now: Instant) {
        while let Some(call) = self.constraints_dirty.pop() {
            let updates: Vec<(Key, u32)> = self
                .participants
                .iter()
                .filter(|(k, p)| k.call == call && !p.layout.streams.is_empty())
                .map(|(k, p)| {
                    let wanted = self
                        .participants
                        .iter()
                        .filter(|(r, rp)| r.call == call && *r != k && rp.role == Role::Main)
                        .map(|(_, rp)| wanted_height(rp.constraints.as_ref(), &p.endpoint))
                        .max()
                        .unwrap_or(0);
                    (*k, wanted)
                })
                .collect();
            for (k, height) in updates {
                let Some(p) = self.participants.get_mut(&k) else {
                    continue;
                };
                if !p.data_channel_open || p.sent_ideal_height == Some(height) {
                    continue;
                }
                let text = constraints::sender_constraints(height);
                if p.transport.send_data_channel(now, &text).is_ok() {
                    p.sent_ideal_height = Some(height);
                    self.stats.sender_constraints_sent += 1;
                }
                // Out now: nothing else may drain this participant's transport soon.
                while let Some(t) = p.transport.poll_transmit() {
                    self.transmits.push_back((t.destination, t.contents));
                }
            }
        }
    }

    fn constraints_changed(&mut self, call: i64) {
        if !self.constraints_dirty.contains(&call) {
            self.constraints_dirty.push(call);
        }
    }

    /// Passes a receiver's feedback on to the connection that declared its source. The
    /// receiver itself is never the target: its own connection is out of the map while it
    /// is drained, and asking oneself for a keyframe means nothing.
    fn send_feedback(&mut self, from: Key, request: Request) {
        let target = self
            .owners
            .get(&request.media_ssrc)
            .copied()
            .filter(|k| k.call == from.call && *k != from);
        let Some(p) = target.and_then(|k| self.participants.get_mut(&k)) else {
            self.stats.feedback_unrouted += 1;
            return;
        };
        let packets: [Box<dyn rtcp::packet::Packet>; 1] = [request.packet];
        if p.transport.send_rtcp(&packets).is_ok() {
            if request.kind == RequestKind::Nack {
                self.stats.nacks_forwarded += 1;
            }
            while let Some(t) = p.transport.poll_transmit() {
                self.transmits.push_back((t.destination, t.contents));
            }
        }
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.participants
            .values_mut()
            .filter_map(|p| p.transport.poll_timeout())
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<Key> = self
            .participants
            .iter_mut()
            .filter_map(|(k, p)| {
                p.transport
                    .poll_timeout()
                    .is_some_and(|t| t <= now)
                    .then_some(*k)
            })
            .collect();
        for key in due {
            if let Some(mut p) = self.participants.remove(&key) {
                p.transport.handle_timeout(now);
                self.drain(now, key, &mut p);
                self.participants.insert(key, p);
            }
        }
        self.refresh_sender_constraints(now);
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }
}

/// The endpoint id the answer gives a connection.
fn endpoint_of(source: u32, role: Role) -> String {
    match role {
        Role::Main => format!("endpoint-{source}"),
        Role::Presentation => format!("screen-{source}"),
    }
}

/// The height a receiver with `constraints` wants of `endpoint`'s video: without any (no data
/// channel, or not said yet) the top layer, so such clients still receive.
fn wanted_height(constraints: Option<&ReceiverConstraints>, endpoint: &str) -> u32 {
    constraints.map_or(constraints::TOP_HEIGHT, |c| c.max_height(endpoint))
}

/// The layer a receiver with `constraints` gets of a `layers`-layer stream of `endpoint`.
fn target_for(
    constraints: Option<&ReceiverConstraints>,
    endpoint: &str,
    layers: usize,
) -> Option<usize> {
    constraints::layer_for_height(wanted_height(constraints, endpoint), layers)
}

/// The sender SSRC of the server's own RTCP (keyframe requests).
const SERVER_RTCP_SSRC: u32 = 1;

/// Copies `raw` into `out` with a new SSRC, sequence number and timestamp, and for RTX a new
/// original sequence number (the payload's first two bytes). False when the packet is too short.
fn rewrite(out: &mut Vec<u8>, raw: &[u8], ssrc: u32, seq: u16, ts: u32, osn: Option<u16>) -> bool {
    if raw.len() < 12 {
        return false;
    }
    out.clear();
    out.extend_from_slice(raw);
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
    if let Some(osn) = osn {
        let Some(payload) = rtp_payload(raw) else {
            return false;
        };
        let at = payload.as_ptr() as usize - raw.as_ptr() as usize;
        if payload.len() < 2 {
            return false;
        }
        out[at..at + 2].copy_from_slice(&osn.to_be_bytes());
    }
    true
}

/// The SSRC of an (S)RTP packet: bytes 8..12 of the fixed header, never encrypted.
fn rtp_ssrc(data: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(8..12)?.try_into().ok()?))
}

/// The sender SSRC of an (S)RTCP compound packet: bytes 4..8 of its first packet, which SRTCP
/// leaves in the clear.
fn rtcp_sender_ssrc(data: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(4..8)?.try_into().ok()?))
}

/// Builds answers without access to the forwarder (the control plane's thread).
#[derive(Clone)]
pub struct Answerer {
    local_addr: SocketAddr,
    identity: LocalIdentity,
    video: VideoOffer,
}

/// The video part of the server's answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoOffer {
    /// Codecs offered (all three by default): a server that offers only VP8 makes libwebrtc
    /// clients send VP8 instead of H.264.
    pub codecs: Vec<VideoCodec>,
    /// `x-google-start-bitrate` on every video codec, in kbit/s: where a libwebrtc sender's
    /// bandwidth estimate starts. Its own default (300) carries only the lowest simulcast layer,
    /// and an encoder that does not use what it has (a still picture) never shows the estimate
    /// the link could carry more, so the upper layers would never start. Telegram's answers
    /// carry a bitrate hint of their own (docs/protocol.md §2.2). `None` leaves it out.
    pub start_bitrate_kbps: Option<u32>,
}

impl Default for VideoOffer {
    fn default() -> Self {
        VideoOffer {
            codecs: VideoCodec::ALL.to_vec(),
            start_bitrate_kbps: Some(DEFAULT_START_BITRATE_KBPS),
        }
    }
}

/// Enough for a 640x360 camera's two layers and a screen's two.
pub const DEFAULT_START_BITRATE_KBPS: u32 = 1500;

impl Answerer {
    /// A main connection's answer has `transport`, `audio` and `video` (with the camera's
    /// endpoint); a presentation's has no `audio` and the screen's endpoint, as Telegram's
    /// (docs/protocol.md §2.2).
    pub fn answer(&self, payload: &JoinPayload, role: Role) -> (IceCredentials, RtcAnswer) {
        let (ice, mut answer) = answer_for(self.local_addr, &self.identity, payload);
        let source = payload.audio_ssrc();
        let endpoint = endpoint_of(source, role);
        if role == Role::Presentation {
            answer.audio = None;
        }
        let mut video =
            telegram_video_info_with(&endpoint, source ^ 0x5a5a_5a5a, &self.video.codecs);
        if let Some(kbps) = self.video.start_bitrate_kbps {
            for pt in video
                .media
                .payload_types
                .iter_mut()
                .filter(|pt| pt.name != "rtx")
            {
                pt.parameters
                    .insert("x-google-start-bitrate".into(), kbps.into());
            }
        }
        answer.video = Some(video);
        (ice, answer)
    }
}

/// The transport part of an answer (and Telegram's audio section); the caller adds `video`.
fn answer_for(
    addr: SocketAddr,
    identity: &LocalIdentity,
    payload: &JoinPayload,
) -> (IceCredentials, RtcAnswer) {
    // Longer than a client's 4 characters: the ufrag is also the routing key of this socket.
    let ice = IceCredentials::generate_with_len(16, 24);
    let setup = payload
        .fingerprints
        .first()
        .map(|f| f.setup.complement())
        .unwrap_or(groupcall_media::Setup::Active);
    let answer = RtcAnswer {
        transport: TransportInfo {
            ufrag: ice.ufrag.clone(),
            pwd: ice.pwd.clone(),
            fingerprints: vec![DtlsFingerprint {
                fingerprint: identity.fingerprint.to_string(),
                hash: "sha-256".into(),
                setup,
            }],
            candidates: vec![Candidate::udp_host(addr, "1", &ice.ufrag)],
            xmlns: Some("urn:xmpp:jingle:transports:ice-udp:1".into()),
            rtcp_mux: Some(true),
        },
        audio: Some(telegram_audio_info()),
        video: None,
    };
    (ice, answer)
}
