//! The tokio driver of one call: it owns the UDP socket, the media [`Transport`], the source
//! and the receivers, and runs them on one task with one 20 ms clock.
//!
//! Everything the loop waits on is in one `select!`: datagrams, the transport's timer, the
//! 20 ms audio tick, commands from the [`Call`](crate::Call), signaling updates, and the
//! join request of a rejoin in flight. Nothing here blocks on the network: a rejoin is a
//! future polled by the same loop, so leaving works while a rejoin is pending.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use groupcall_media::{
    Event, JoinPayload, LocalEndpoint, LocalIdentity, RemotePeer, RtcAnswer, SenderInfo,
    ServerAnswer, Setup, State, Transport, VideoPublish,
};
use groupcall_signaling::{
    CallId, CallRef, JoinOptions, Joined, Participant, ParticipantQuery, Signaling,
    SignalingUpdate, UpdateStream,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use crate::audio::{AudioSender, MixRecorder, Next, ParticipantSinks, Source, FRAME_SAMPLES};
use crate::call::{
    CallConfig, CallEvent, CallStats, CallSummary, Command, ConnectionState, EndReason,
    ParticipantInfo, RejoinPolicy, SpeakerStats,
};
use crate::error::{Error, Result};
use crate::receive::Receivers;

const TICK: Duration = Duration::from_millis(20);
/// Speaking levels and the stats snapshot every this many ticks (100 ms).
const LEVEL_TICKS: u32 = 5;
/// An RTCP sender report every this many ticks (5 s, as libwebrtc sends them).
const REPORT_TICKS: u32 = 250;
/// While disconnected, ask the server every this many ticks (4 s, as tdesktop does) whether it
/// still counts us; if not, rejoin at once instead of waiting for the failure timeout.
const CHECK_TICKS: u32 = 200;
const RECV_BUFFER: usize = 2048;

pub(crate) struct Started {
    pub commands: mpsc::UnboundedSender<Command>,
    pub events: mpsc::UnboundedReceiver<CallEvent>,
    pub stats: watch::Receiver<CallStats>,
}

/// A successful join: the accepted payload's identity and the transport it leads to.
struct Connection {
    socket: UdpSocket,
    transport: Transport,
    sender: AudioSender,
    ssrc: u32,
    call_id: Option<CallId>,
}

type JoinFuture = Pin<Box<dyn Future<Output = Result<(Joined, LocalIdentity)>> + Send>>;

/// Sends the join with fresh payloads (a new one per SSRC-duplicate retry) and returns the
/// accepted payload's identity with the answer.
async fn join_once(
    signaling: Arc<dyn Signaling>,
    call: CallRef,
    options: JoinOptions,
) -> Result<(Joined, LocalIdentity)> {
    let mut made: Vec<LocalIdentity> = Vec::new();
    let joined = {
        let mut factory = || {
            let identity = LocalIdentity::generate()?;
            let payload = JoinPayload::new(&identity, VideoPublish::None);
            made.push(identity);
            Ok(payload)
        };
        signaling.join(&call, &mut factory, &options).await?
    };
    let ssrc = joined.payload.audio_ssrc();
    let identity = made
        .into_iter()
        .find(|i| i.audio_ssrc == ssrc)
        .ok_or_else(|| {
            Error::CallEnded(format!(
                "the server accepted SSRC {ssrc}, which this engine never offered"
            ))
        })?;
    Ok((joined, identity))
}

/// The local address that routes to `target`: the transport's one host candidate must be a
/// concrete address, and libwebrtc-style servers learn it from our checks.
fn local_ip_towards(target: SocketAddr) -> std::io::Result<IpAddr> {
    let unspecified: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = std::net::UdpSocket::bind(unspecified)?;
    probe.connect(target)?;
    Ok(probe.local_addr()?.ip())
}

fn connect(
    joined: &Joined,
    identity: &LocalIdentity,
    config: &CallConfig,
    now: Instant,
) -> Result<Connection> {
    let rtc: &RtcAnswer = match &joined.answer {
        ServerAnswer::Rtc(r) => r,
        _ => {
            return Err(Error::StreamUnsupported {
                answer: joined.answer_json.clone(),
            })
        }
    };
    let mut remote = RemotePeer::from_answer(rtc)?;
    let mut last_err = None;
    let mut bound = None;
    for &candidate in &remote.candidates {
        match local_ip_towards(candidate).and_then(|ip| {
            let s = std::net::UdpSocket::bind((ip, 0))?;
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(s) => {
                bound = Some((s, candidate));
                break;
            }
            Err(e) => last_err = Some((candidate, e)),
        }
    }
    let (std_socket, first) = match (bound, last_err) {
        (Some(b), _) => b,
        (None, Some((c, e))) => {
            return Err(Error::Socket {
                target: c.to_string(),
                source: e,
            })
        }
        (None, None) => {
            return Err(Error::Media(groupcall_media::Error::NoUsableCandidate));
        }
    };
    // One host candidate of one family: pairs with the other family could never work.
    remote.candidates.retain(|c| c.is_ipv4() == first.is_ipv4());
    let local_addr = std_socket.local_addr().map_err(|e| Error::Socket {
        target: first.to_string(),
        source: e,
    })?;
    let socket = UdpSocket::from_std(std_socket).map_err(|e| Error::Socket {
        target: first.to_string(),
        source: e,
    })?;
    let transport = Transport::new(
        config.transport.clone(),
        LocalEndpoint {
            addr: local_addr,
            ice: identity.ice.clone(),
            certificate: identity.certificate.clone(),
            setup: Setup::Passive,
        },
        remote,
        now,
    )?;
    let ssrc = identity.audio_ssrc;
    let sender = AudioSender::new(
        ssrc,
        transport.audio_payload_type(),
        &config.encoder,
        rand::random(),
        rand::random(),
    )?;
    Ok(Connection {
        socket,
        transport,
        sender,
        ssrc,
        call_id: joined.call,
    })
}

/// Joins, connects and spawns the call's task. Errors before the task exists are returned.
pub(crate) async fn start(
    signaling: Arc<dyn Signaling>,
    call: CallRef,
    mut config: CallConfig,
) -> Result<Started> {
    let muted = config.muted.unwrap_or(config.source.is_none());
    config.join.muted = muted;
    let channels = config.encoder.channels;
    // Files first: a recording that cannot even be created is better refused before joining.
    let mix = match &config.record_mix {
        Some(path) => Some(MixRecorder::create(path, config.record_format, channels)?),
        None => None,
    };
    let mut sinks = ParticipantSinks::new(channels, config.hold_unknown);
    if let Some(dir) = &config.record_dir {
        sinks = sinks.with_files(dir.clone(), config.record_format);
    }
    if let Some(app) = config.app_sink.take() {
        sinks = sinks.with_app(app);
    }
    let receivers = Receivers::new(channels, config.jitter, sinks, mix);
    // Subscribe before joining so that no roster update in between is missed.
    let updates = signaling.updates();
    let (joined, identity) =
        join_once(signaling.clone(), call.clone(), config.join.clone()).await?;
    let connection = match connect(&joined, &identity, &config, Instant::now()) {
        Ok(c) => c,
        Err(e) => {
            // The server counts us as joined: say we left, or our source would linger.
            let _ = signaling.leave(&call, identity.audio_ssrc).await;
            return Err(e);
        }
    };
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let stats = CallStats {
        ssrc: connection.ssrc,
        muted,
        ..CallStats::default()
    };
    let (stats_tx, stats_rx) = watch::channel(stats);
    let source = config.source.take();
    let driver = Driver {
        signaling,
        call,
        call_id: connection.call_id,
        connection: Some(connection),
        config,
        source,
        muted,
        paused: false,
        gain: 1.0,
        budget: 0,
        receivers,
        roster: HashMap::new(),
        lookups_asked: Vec::new(),
        updates,
        commands: cmd_rx,
        events: ev_tx.clone(),
        stats_tx,
        rejoin: None,
        rejoins: 0,
        ticks: 0,
        levels: HashMap::new(),
        packets_sent_before: 0,
        disconnected: false,
    };
    if let Some(p) = &joined.participant {
        tracing::debug!(source = p.source, "joined as {}", p.peer);
    }
    // The task is watched: if it panics, the application still gets its Ended event.
    let task = tokio::spawn(driver.run());
    tokio::spawn(async move {
        if let Err(e) = task.await {
            let reason = if e.is_panic() {
                EndReason::Internal(
                    "the call's task panicked; this is a bug, please report it".into(),
                )
            } else {
                EndReason::Internal(format!("the call's task was cancelled: {e}"))
            };
            let _ = ev_tx.send(CallEvent::Ended { reason });
        }
    });
    Ok(Started {
        commands: cmd_tx,
        events: ev_rx,
        stats: stats_rx,
    })
}

/// A rejoin in progress: from the lost connection until the new one is connected. Attempts
/// count up until then, so a server that accepts joins but never connects still ends the call.
struct Rejoin {
    attempt: u32,
    reason: String,
    at: Instant,
    join: Option<JoinFuture>,
    /// The join was accepted; waiting for the new transport to connect.
    connecting: bool,
}

struct Driver {
    signaling: Arc<dyn Signaling>,
    call: CallRef,
    call_id: Option<CallId>,
    /// `None` while rejoining.
    connection: Option<Connection>,
    config: CallConfig,
    source: Option<Source>,
    muted: bool,
    paused: bool,
    gain: f32,
    /// Samples (per channel, 48 kHz) the source may still send this tick; Opus packets from a
    /// file can be 10-120 ms, so pacing counts samples, not packets.
    budget: i64,
    receivers: Receivers,
    roster: HashMap<u32, Participant>,
    /// SSRCs we asked the server to name (once each).
    lookups_asked: Vec<u32>,
    updates: UpdateStream,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<CallEvent>,
    stats_tx: watch::Sender<CallStats>,
    rejoin: Option<Rejoin>,
    rejoins: u32,
    ticks: u32,
    levels: HashMap<u32, f32>,
    /// Packets sent on earlier connections (each rejoin has a new sender).
    packets_sent_before: u64,
    /// The transport reported Disconnected and has not recovered.
    disconnected: bool,
}

enum Wake {
    Datagram(usize, SocketAddr),
    SocketError(std::io::Error),
    Timeout,
    Tick,
    Command(Option<Command>),
    Update(Option<SignalingUpdate>),
    Joined(Box<Result<(Joined, LocalIdentity)>>),
    RejoinDue,
    Lookup(Vec<Participant>),
    /// `phone.checkGroupCall` answered for this source: whether the server still has it.
    Checked {
        source: u32,
        present: bool,
    },
}

impl Driver {
    fn emit(&self, e: CallEvent) {
        let _ = self.events.send(e);
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let (lookup_tx, mut lookup_rx) = mpsc::unbounded_channel::<Vec<Participant>>();
        let (check_tx, mut check_rx) = mpsc::unbounded_channel::<(u32, bool)>();
        let mut updates_open = true;
        self.emit(CallEvent::State(ConnectionState::Connecting));
        self.fetch_roster(&lookup_tx, ParticipantQuery::default());
        let reason = loop {
            self.flush().await;
            if let Some(reason) = self.drain_transport(&lookup_tx) {
                break reason;
            }
            let wake = {
                let timeout = self
                    .connection
                    .as_mut()
                    .and_then(|c| c.transport.poll_timeout())
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                let rejoin_at = self
                    .rejoin
                    .as_ref()
                    .filter(|r| r.join.is_none() && !r.connecting)
                    .map(|r| r.at);
                let socket = self.connection.as_ref().map(|c| &c.socket);
                let join = self.rejoin.as_mut().and_then(|r| r.join.as_mut());
                tokio::select! {
                    r = async { socket.expect("guarded").recv_from(&mut buf).await }, if socket.is_some() => match r {
                        Ok((n, from)) => Wake::Datagram(n, from),
                        Err(e) => Wake::SocketError(e),
                    },
                    _ = tokio::time::sleep_until(timeout.into()) => Wake::Timeout,
                    _ = tick.tick() => Wake::Tick,
                    c = self.commands.recv() => Wake::Command(c),
                    u = self.updates.next(), if updates_open => Wake::Update(u),
                    r = async { join.expect("guarded").await }, if join.is_some() => Wake::Joined(Box::new(r)),
                    _ = tokio::time::sleep_until(rejoin_at.unwrap_or_else(Instant::now).into()), if rejoin_at.is_some() => Wake::RejoinDue,
                    Some(l) = lookup_rx.recv() => Wake::Lookup(l),
                    Some((source, present)) = check_rx.recv() => Wake::Checked { source, present },
                }
            };
            let now = Instant::now();
            match wake {
                Wake::Datagram(n, from) => {
                    if let Some(c) = self.connection.as_mut() {
                        c.transport.handle_datagram(now, from, &buf[..n]);
                    }
                }
                Wake::SocketError(e) => {
                    // ICMP "port unreachable" from an earlier send lands here on Linux: the
                    // transport's own timeouts decide whether the path is dead.
                    if e.kind() != std::io::ErrorKind::ConnectionRefused {
                        tracing::warn!("media socket error: {e}");
                        if let Some(reason) =
                            self.start_rejoin(now, format!("the media socket failed: {e}"))
                        {
                            break reason;
                        }
                    }
                }
                Wake::Timeout => {
                    if let Some(c) = self.connection.as_mut() {
                        c.transport.handle_timeout(now);
                    }
                }
                Wake::Tick => {
                    self.on_tick(now);
                    if self.disconnected && self.ticks % CHECK_TICKS == 0 {
                        self.check_membership(&check_tx);
                    }
                }
                Wake::Checked { source, present } => {
                    if !present && self.disconnected && Some(source) == self.own_ssrc() {
                        if let Some(reason) = self.start_rejoin(
                            now,
                            "the server no longer counts this participant (checkGroupCall)".into(),
                        ) {
                            break reason;
                        }
                    }
                }
                Wake::Command(None) => break EndReason::Left,
                Wake::Command(Some(Command::Leave(reply))) => {
                    let summary = self.finish(EndReason::Left).await;
                    let _ = reply.send(summary);
                    return;
                }
                Wake::Command(Some(c)) => self.on_command(c),
                Wake::Update(None) => {
                    // The backend's update source is gone: the media goes on, with no more
                    // roster news (and no busy loop on a closed stream).
                    tracing::warn!("the signaling backend stopped sending updates");
                    updates_open = false;
                }
                Wake::Update(Some(u)) => {
                    if let Some(reason) = self.on_update(now, u, &lookup_tx) {
                        break reason;
                    }
                }
                Wake::RejoinDue => {
                    if let Some(r) = self.rejoin.as_mut() {
                        r.join = Some(Box::pin(join_once(
                            self.signaling.clone(),
                            self.call.clone(),
                            self.config.join.clone(),
                        )));
                    }
                }
                Wake::Joined(result) => {
                    if let Some(reason) = self.on_rejoined(now, *result) {
                        break reason;
                    }
                }
                Wake::Lookup(participants) => {
                    for p in participants {
                        self.apply_participant(p);
                    }
                }
            }
        };
        self.finish(reason).await;
    }

    /// Sends everything the transport queued.
    async fn flush(&mut self) {
        if let Some(c) = self.connection.as_mut() {
            while let Some(t) = c.transport.poll_transmit() {
                if let Err(e) = c.socket.send_to(&t.contents, t.destination).await {
                    tracing::debug!("send to {} failed: {e}", t.destination);
                }
            }
        }
    }

    fn drain_transport(
        &mut self,
        lookups: &mpsc::UnboundedSender<Vec<Participant>>,
    ) -> Option<EndReason> {
        let now = Instant::now();
        let mut failed = None;
        while let Some(event) = self
            .connection
            .as_mut()
            .and_then(|c| c.transport.poll_event())
        {
            match event {
                Event::Rtp(packet) => match self.receivers.insert(now, &packet) {
                    Ok(true) => self.name_ssrc(packet.ssrc, lookups),
                    Ok(false) => {}
                    Err(e) => self.emit(CallEvent::RecordingError {
                        error: e.to_string(),
                    }),
                },
                Event::Connected { profile, remote } => {
                    tracing::info!(%remote, ?profile, "connected");
                    if self.rejoin.take().is_some() {
                        self.rejoins += 1;
                    }
                    self.emit(CallEvent::State(ConnectionState::Connected));
                }
                Event::StateChanged(State::Disconnected) => {
                    self.disconnected = true;
                    self.emit(CallEvent::State(ConnectionState::Disconnected))
                }
                Event::StateChanged(State::Connected) => {
                    if std::mem::take(&mut self.disconnected) {
                        self.emit(CallEvent::State(ConnectionState::Connected));
                    }
                }
                Event::StateChanged(State::Failed(cause)) => failed = Some(cause.to_string()),
                Event::StateChanged(_) | Event::Rtcp(_) | Event::ApplicationData(_) => {}
            }
        }
        if let Some(reason) = failed {
            return self.start_rejoin(now, format!("the connection failed: {reason}"));
        }
        None
    }

    /// Starts (or continues) the rejoin sequence. `Some` when the policy says give up.
    fn start_rejoin(&mut self, now: Instant, reason: String) -> Option<EndReason> {
        self.disconnected = false;
        if let Some(mut c) = self.connection.take() {
            c.transport.close(now);
            self.packets_sent_before += c.sender.stats().packets;
        }
        let attempt = self.rejoin.as_ref().map_or(1, |r| r.attempt + 1);
        self.schedule_rejoin(now, attempt, reason)
    }

    fn schedule_rejoin(&mut self, now: Instant, attempt: u32, reason: String) -> Option<EndReason> {
        let policy: RejoinPolicy = self.config.rejoin;
        if attempt > policy.max_attempts {
            return Some(EndReason::RejoinFailed {
                attempts: attempt - 1,
                error: reason,
            });
        }
        tracing::warn!(attempt, "rejoining: {reason}");
        self.emit(CallEvent::State(ConnectionState::Rejoining {
            attempt,
            reason: reason.clone(),
        }));
        self.rejoin = Some(Rejoin {
            attempt,
            reason,
            at: now + policy.backoff(attempt),
            join: None,
            connecting: false,
        });
        None
    }

    fn on_rejoined(
        &mut self,
        now: Instant,
        result: Result<(Joined, LocalIdentity)>,
    ) -> Option<EndReason> {
        let attempt = self.rejoin.as_ref().map_or(1, |r| r.attempt);
        let connected =
            result.and_then(|(joined, identity)| connect(&joined, &identity, &self.config, now));
        match connected {
            Ok(c) => {
                tracing::info!(ssrc = c.ssrc, "rejoined");
                if let Some(r) = self.rejoin.as_mut() {
                    r.join = None;
                    r.connecting = true;
                }
                self.emit(CallEvent::Rejoined { ssrc: c.ssrc });
                self.emit(CallEvent::State(ConnectionState::Connecting));
                if c.call_id.is_some() {
                    self.call_id = c.call_id;
                }
                self.connection = Some(c);
                None
            }
            Err(e) => {
                let reason = match &self.rejoin {
                    Some(r) => format!("{}; the rejoin failed: {e}", r.reason),
                    None => e.to_string(),
                };
                self.schedule_rejoin(now, attempt + 1, reason)
            }
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::SetMuted(m) => self.muted = m,
            Command::SetPaused(p) => self.paused = p,
            Command::SetSource(s) => {
                self.source = s;
                self.budget = 0;
            }
            Command::SetGain(g) => self.gain = g,
            // The loop handles leaving before it gets here.
            Command::Leave(_) => {}
        }
    }

    fn on_tick(&mut self, now: Instant) {
        self.send_audio();
        let report = self.receivers.tick(now, self.gain);
        for e in report.errors {
            self.emit(CallEvent::RecordingError {
                error: e.to_string(),
            });
        }
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks % LEVEL_TICKS == 0 {
            for (ssrc, level) in self.receivers.levels() {
                self.levels.insert(ssrc, level.level);
                self.emit(CallEvent::Speaking {
                    ssrc,
                    peer: self.roster.get(&ssrc).map(|p| p.peer),
                    level: level.level,
                    voice: level.voice,
                });
            }
            self.publish_stats();
        }
        if self.ticks % REPORT_TICKS == 0 {
            self.send_report();
        }
    }

    /// A sender report for our source, once something was sent on this connection.
    fn send_report(&mut self) {
        let Some(c) = self
            .connection
            .as_mut()
            .filter(|c| c.transport.is_connected())
        else {
            return;
        };
        let sent = c.sender.stats();
        if sent.packets == 0 {
            return;
        }
        let info = SenderInfo {
            ssrc: c.ssrc,
            rtp_time: c.sender.rtp_timestamp(),
            packets: sent.packets as u32,
            octets: sent.payload_bytes as u32,
        };
        if let Err(e) = c.transport.send_sender_report(&info, SystemTime::now()) {
            tracing::debug!("sender report not sent: {e}");
        }
    }

    /// One tick's worth of the source: pulled only while connected, so nothing is lost while
    /// (re)connecting; pulled but not sent while muted; not pulled while paused.
    fn send_audio(&mut self) {
        let Some(c) = self
            .connection
            .as_mut()
            .filter(|c| c.transport.is_connected())
        else {
            return;
        };
        let Some(source) = self.source.as_mut() else {
            return;
        };
        if self.paused {
            c.sender.skip(FRAME_SAMPLES as u32);
            return;
        }
        self.budget = (self.budget + FRAME_SAMPLES as i64).min(FRAME_SAMPLES as i64);
        while self.budget > 0 {
            let channels = source.channels();
            match source.next_frame() {
                Ok(Next::Frame(frame)) => {
                    let samples = frame.samples(channels);
                    self.budget -= i64::from(samples);
                    if self.muted {
                        c.sender.skip(samples);
                        continue;
                    }
                    match c.sender.send(frame) {
                        Ok(Some(rtp)) => {
                            if let Err(e) = c.transport.send_rtp(Instant::now(), &rtp) {
                                tracing::debug!("RTP not sent: {e}");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!("frame not sent: {e}");
                        }
                    }
                }
                Ok(Next::Idle) => {
                    self.budget = 0;
                    c.sender.skip(FRAME_SAMPLES as u32);
                }
                Ok(Next::End) => {
                    let name = source.name().to_owned();
                    self.source = None;
                    self.budget = 0;
                    let _ = self.events.send(CallEvent::SourceEnded { source: name });
                    return;
                }
                Err(e) => {
                    let name = source.name().to_owned();
                    self.source = None;
                    self.budget = 0;
                    let _ = self.events.send(CallEvent::SourceError {
                        source: name,
                        error: e.to_string(),
                    });
                    return;
                }
            }
        }
    }

    fn publish_stats(&mut self) {
        let mut s = CallStats {
            muted: self.muted,
            rejoins: self.rejoins,
            packets_sent: self.packets_sent_before,
            ..CallStats::default()
        };
        if let Some(c) = &self.connection {
            let t = c.transport.stats();
            s.connected = c.transport.is_connected();
            s.ssrc = c.ssrc;
            s.packets_sent += c.sender.stats().packets;
            s.packets_received = t.received.rtp;
            s.dropped = t.dropped();
            s.recording_errors = self.receivers.sink_errors;
            let mut speakers: Vec<SpeakerStats> = t
                .ssrcs
                .iter()
                .filter(|(ssrc, _)| self.roster.get(ssrc).is_none_or(|p| !p.left))
                .map(|(&ssrc, st)| SpeakerStats {
                    ssrc,
                    peer: self.roster.get(&ssrc).map(|p| p.peer),
                    packets: st.packets,
                    lost: st.lost(),
                    jitter_ms: st.jitter_ms(),
                    level: self.levels.get(&ssrc).copied().unwrap_or(0.0),
                })
                .collect();
            speakers.sort_by_key(|s| s.ssrc);
            s.speakers = speakers;
        } else {
            s.ssrc = self.stats_tx.borrow().ssrc;
        }
        self.stats_tx.send_replace(s);
    }

    /// Asks the server who sends with `ssrc`, once, off the loop.
    fn name_ssrc(&mut self, ssrc: u32, lookups: &mpsc::UnboundedSender<Vec<Participant>>) {
        if self.roster.contains_key(&ssrc) || self.lookups_asked.contains(&ssrc) {
            return;
        }
        self.lookups_asked.push(ssrc);
        self.fetch_roster(lookups, ParticipantQuery::by_sources([ssrc]));
    }

    fn fetch_roster(
        &self,
        lookups: &mpsc::UnboundedSender<Vec<Participant>>,
        query: ParticipantQuery,
    ) {
        let signaling = self.signaling.clone();
        let call = self.call.clone();
        let tx = lookups.clone();
        tokio::spawn(async move {
            match signaling.participants(&call, &query).await {
                Ok(page) => {
                    let _ = tx.send(page.participants);
                }
                Err(e) => tracing::debug!("participant lookup failed: {e}"),
            }
        });
    }

    /// Asks the server, off the loop, whether it still counts our source as joined.
    fn check_membership(&self, checks: &mpsc::UnboundedSender<(u32, bool)>) {
        let Some(source) = self.own_ssrc() else {
            return;
        };
        let (signaling, call, tx) = (self.signaling.clone(), self.call.clone(), checks.clone());
        tokio::spawn(async move {
            match signaling.check(&call, &[source]).await {
                Ok(present) => {
                    let _ = tx.send((source, present.contains(&source)));
                }
                Err(e) => tracing::debug!("checkGroupCall failed: {e}"),
            }
        });
    }

    fn own_ssrc(&self) -> Option<u32> {
        self.connection.as_ref().map(|c| c.ssrc)
    }

    fn is_our_call(&self, call: &CallId) -> bool {
        self.call_id.is_none_or(|id| id.id == call.id)
    }

    fn on_update(
        &mut self,
        now: Instant,
        update: SignalingUpdate,
        lookups: &mpsc::UnboundedSender<Vec<Participant>>,
    ) -> Option<EndReason> {
        match update {
            SignalingUpdate::Participants {
                call, participants, ..
            } if self.is_our_call(&call) => {
                for p in participants {
                    self.apply_participant(p);
                }
                None
            }
            SignalingUpdate::CallDiscarded { call } if self.is_our_call(&call) => {
                Some(EndReason::Discarded)
            }
            SignalingUpdate::SelfRemoved { call, source }
                if self.is_our_call(&call) && Some(source) == self.own_ssrc() =>
            {
                self.start_rejoin(now, "the server dropped this participant".into())
            }
            SignalingUpdate::JoinedElsewhere { call, .. } if self.is_our_call(&call) => {
                Some(EndReason::JoinedElsewhere)
            }
            SignalingUpdate::Lagged { .. } => {
                self.fetch_roster(lookups, ParticipantQuery::default());
                None
            }
            _ => None,
        }
    }

    fn apply_participant(&mut self, p: Participant) {
        if Some(p.source) == self.own_ssrc() {
            return;
        }
        let info = ParticipantInfo {
            peer: p.peer,
            source: p.source,
            muted: p.muted,
        };
        if p.left {
            if self.roster.remove(&p.source).is_some() {
                if let Err(e) = self.receivers.remove(p.source) {
                    self.emit(CallEvent::RecordingError {
                        error: e.to_string(),
                    });
                }
                self.emit(CallEvent::ParticipantLeft(info));
            }
            return;
        }
        match self.roster.get(&p.source) {
            None => {
                if let Err(e) = self.receivers.identify(p.source, p.peer.dialog_id()) {
                    self.emit(CallEvent::RecordingError {
                        error: e.to_string(),
                    });
                }
                self.emit(CallEvent::ParticipantJoined(info));
                self.roster.insert(p.source, p);
            }
            Some(old) if old.muted != p.muted || old.peer != p.peer => {
                self.emit(CallEvent::ParticipantUpdated(info));
                self.roster.insert(p.source, p);
            }
            Some(_) => {}
        }
    }

    /// Leaves (when the call still exists), closes every file, reports the end.
    async fn finish(mut self, reason: EndReason) -> CallSummary {
        let now = Instant::now();
        if let Some(c) = self.connection.as_mut() {
            c.transport.close(now);
        }
        self.flush().await;
        self.publish_stats();
        if let (Some(ssrc), true) = (self.own_ssrc(), reason != EndReason::Discarded) {
            if let Err(e) = self.signaling.leave(&self.call, ssrc).await {
                tracing::warn!("leaving the call failed: {e}");
            }
        }
        let recordings = self.receivers.recordings();
        let mix = self.receivers.mix_path().map(|p| p.to_path_buf());
        let stats = self.stats_tx.borrow().clone();
        let mut errors = Vec::new();
        if let Err(e) = self.receivers.finish() {
            let error = e.to_string();
            let _ = self.events.send(CallEvent::RecordingError {
                error: error.clone(),
            });
            errors.push(error);
        }
        let _ = self.events.send(CallEvent::Ended { reason });
        CallSummary {
            stats,
            recordings,
            mix,
            errors,
        }
    }
}
