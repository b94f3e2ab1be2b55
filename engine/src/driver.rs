//! The tokio driver of one call: it owns the connection (`connection.rs`: socket, transport,
//! sender), the outgoing source (`outgoing.rs`) and the receivers (`receive.rs`), and runs them
//! on one task with one 20 ms clock.
//!
//! It decides nothing about the call's lifecycle: the [`Machine`] (`machine.rs`) does, and this
//! loop feeds it what happened and carries out its [`Action`]s. Everything the loop waits on is
//! in one `select!`: datagrams, the transport's and the machine's timers, the 20 ms audio tick,
//! commands from the [`Call`](crate::Call), signaling updates, the join of a rejoin in flight
//! and the answers of requests made off the loop (roster pages, `checkGroupCall`). Nothing
//! here waits on the network: leaving works while a rejoin is pending.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use groupcall_media::{Event, LocalIdentity, State, Transport};
use groupcall_signaling::{
    CallRef, Joined, ParticipantQuery, Signaling, SignalingUpdate, UpdateStream,
};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use crate::audio::{MixRecorder, ParticipantSinks, FRAME_SAMPLES};
use crate::call::{
    CallConfig, CallEvent, CallStats, CallSummary, Command, EndReason, RejoinCause, SpeakerStats,
    COMMAND_CAPACITY,
};
use crate::connection::{connect, join_once, Connection, JoinFuture};
use crate::error::{Error, Result, SharedError};
use crate::events::{self, EventReceiver, EventSender};
use crate::machine::{Action, Input, Machine};
use crate::outgoing::Outgoing;
use crate::receive::Receivers;
use crate::requests::{self, Reply};
use crate::screen::{self, Layers, Screen, ScreenJoin};
use crate::socket::{self as call_socket, RecvBatch};
use crate::threads::CallThreads;
use crate::video::constraints::VideoSubscription;
use crate::video::publish::{Control, Published, Publisher, VideoKind};
use crate::video::receive::VideoReceivers;
use groupcall_media::VideoPublish;

const TICK: Duration = Duration::from_millis(20);
/// The tick of a call with nothing to send and nothing to play out (no source, nobody
/// speaking, no mix file or speaker): statistics and the ledger only. A bot idle in a silent
/// call then wakes once a second for itself, not fifty times.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// A packet sent later than this after its time counts in [`CallStats::late_packets`].
const LATE: Duration = Duration::from_millis(20);
/// An RTCP report every this many idle ticks (5 s, as when busy).
const IDLE_REPORT_TICKS: u32 = 5;
/// Speaking levels and the stats snapshot every this many ticks (100 ms).
const LEVEL_TICKS: u64 = 5;
/// An RTCP sender report every this many ticks (5 s, as libwebrtc sends them).
const REPORT_TICKS: u64 = 250;
/// The recordings' paths are copied out of the task (for a summary after a panic) every 1 s.
const LEDGER_TICKS: u64 = 50;
const RECV_BUFFER: usize = 2048;

/// The next instant on the process's 20 ms grid. Every call ticks on that one grid, so the
/// timer wheel fires all of them in one pass and a worker thread wakes once per 20 ms for
/// all the calls it runs, not once per call at its own phase: with many calls in a process,
/// the wake-ups (futex, epoll), not the audio, were the larger part of a call's cost
/// (`docs/performance.md`).
///
/// A call that ticks every 40 or 60 ms (see [`Driver::tick_period`]) uses the grid of that
/// period shifted by `phase` 20 ms steps, so its instants are also on the 20 ms grid. Calls
/// are spread over the three phases ([`next_phase`]): with 200 calls on 60 ms, a third of them
/// tick at each 20 ms instant instead of all at once every 60 ms, which made a third of their
/// packets late on the 2-core machine (`docs/performance.md` §1.2.4, §1.2.5).
fn next_on_grid(now: Instant, period: Duration, phase: u32) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    let since = now.saturating_duration_since(epoch).as_nanos();
    let tick = period.as_nanos().max(1);
    let offset = u128::from(phase) * TICK.as_nanos() % tick;
    // The first instant `offset + k * tick` after `since`.
    let k = if since >= offset {
        (since - offset) / tick + 1
    } else {
        0
    };
    // u64 nanoseconds last 584 years of process time.
    epoch + Duration::from_nanos((offset + k * tick) as u64)
}

/// Calls that take one phase before the next call opens the next phase.
const PHASE_FILL: u32 = 24;

/// The phase of the next call's clock on a grid longer than 20 ms: the first [`PHASE_FILL`]
/// calls take phase 0, the next ones 1, then 2, then 0 again. A few calls thus tick together
/// (one wake-up every 60 ms serves them all, where three phases would wake the thread three
/// times), and many are still spread over the three instants.
fn next_phase() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    phase_of(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The phase of the `n`th call (from 0) on a longer clock.
fn phase_of(n: u32) -> u32 {
    n / PHASE_FILL % 3
}

/// Answers of requests made off the loop waiting for it; the requests are few (one roster
/// fetch at a time, one check per 4 s, one lookup per new sender), so this is never reached in
/// practice, and a full queue makes the requester wait, not the loop.
const REPLY_CAPACITY: usize = 64;
/// Senders being named by a lookup at once; past this, new senders stay unnamed until the
/// roster names them. A server forwards only declared sources, so this bounds a broken one.
const MAX_LOOKUPS: usize = 4096;

pub(crate) struct Started {
    pub position: Arc<AtomicU64>,
    pub commands: mpsc::Sender<Command>,
    pub events: EventReceiver,
    pub stats: watch::Receiver<CallStats>,
    pub summary: Arc<OnceLock<CallSummary>>,
}

/// Joins, connects and spawns the call's task. Errors before the task exists are returned.
pub(crate) async fn start(
    signaling: Arc<dyn Signaling>,
    call: CallRef,
    mut config: CallConfig,
    threads: Option<Arc<CallThreads>>,
) -> Result<Started> {
    #[cfg(feature = "devices")]
    let speaker = open_devices(&mut config).await?;
    let muted = config.muted.unwrap_or(config.source.is_none());
    config.join.muted = muted;
    let publish = if config.video.is_some() {
        VideoPublish::Camera
    } else {
        VideoPublish::None
    };
    config.join.video_stopped = config.video.is_none();
    let video_in = VideoReceivers::new(config.video_sink.take(), config.record_video_dir.clone())?;
    if publish != VideoPublish::None || video_in.is_consuming() {
        // SenderVideoConstraints arrive, and ReceiverVideoConstraints leave, on it.
        config.transport.data_channel = true;
    }
    let publisher = match config.video.take() {
        Some(source) => Some(Publisher::start(source, VideoKind::Camera, rand::random())?),
        None => None,
    };
    let channels = config.encoder.channels;
    // Files first: a recording that cannot even be created is better refused before joining.
    // The directory first: the mix may be in it.
    if let Some(dir) = &config.record_dir {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateSink {
            path: dir.clone(),
            source,
        })?;
    }
    let mix = match &config.record_mix {
        Some(path) => Some(MixRecorder::create(path, config.record_format, channels)?),
        None => None,
    };
    let mut sinks = ParticipantSinks::new(channels, config.hold_unknown);
    if let Some(dir) = &config.record_dir {
        sinks = sinks.with_files(dir.clone(), config.record_format);
    }
    if let Some(keep) = config.record_trim_silence {
        sinks = sinks.trim_silence(keep);
    }
    // One writer thread per call: the per-speaker files share the mix's.
    if let Some(m) = &mix {
        sinks = sinks.with_writer(m.writer());
    }
    if let Some(app) = config.app_sink.take() {
        sinks = sinks.with_app(app);
    }
    #[allow(unused_mut)]
    let mut receivers = Receivers::new(channels, config.jitter, sinks, mix);
    #[cfg(feature = "devices")]
    receivers.set_speaker(speaker);
    // Subscribe before joining so that no roster update in between is missed.
    let updates = signaling.updates();
    let (joined, identity) = join_once(
        signaling.clone(),
        call.clone(),
        config.join.clone(),
        publish,
    )
    .await?;
    let connection = match connect(&joined, &identity, &config, publish, Instant::now()) {
        Ok(c) => c,
        Err(e) => {
            // The server counts us as joined: say we left, or our source would linger.
            let _ = signaling.leave(&call, identity.audio_ssrc).await;
            return Err(e);
        }
    };
    if let Some(p) = &joined.participant {
        tracing::debug!(source = p.source, "joined as {}", p.peer);
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (ev_tx, ev_rx) = events::channel(config.event_capacity);
    let stats = CallStats {
        ssrc: connection.ssrc,
        muted,
        ..CallStats::default()
    };
    let (stats_tx, stats_rx) = watch::channel(stats);
    let summary = Arc::new(OnceLock::new());
    let position = Arc::new(AtomicU64::new(NO_POSITION));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (reply_tx, reply_rx) = mpsc::channel(REPLY_CAPACITY);
    let machine = Machine::new(config.rejoin, connection.ssrc, connection.call_id);
    let outgoing = Outgoing::new(config.source.take(), muted, config.loudness);
    // On the heap: an async fn's state keeps its by-value arguments besides its locals, so a
    // driver moved into `run` by value would be held twice, in every call's task.
    let driver = Box::new(Driver {
        signaling,
        call,
        machine,
        connection: Some(connection),
        config,
        outgoing,
        gain: 1.0,
        receivers,
        publish,
        publisher,
        video_in,
        screen: None,
        screen_join: None,
        camera_layers: Layers::all(VideoKind::Camera),
        updates: Some(updates),
        commands: cmd_rx,
        events: ev_tx.clone(),
        stats_tx,
        ledger: ledger.clone(),
        summary: summary.clone(),
        position: position.clone(),
        join: None,
        reply_tx,
        replies: reply_rx,
        lookups_asked: HashSet::new(),
        ticks: 0,
        idle_ticks: 0,
        wakeups: 0,
        late_packets: 0,
        send_late_max: Duration::ZERO,
        levels: HashMap::new(),
        packets_sent_before: 0,
        transport_disconnected: false,
        speakers_expired: 0,
        fed_until: Instant::now(),
    });
    // The task is watched: if it panics, the application still gets its summary and its Ended
    // event. Its files are finalized by their writers as the task's state unwinds.
    // On the engine's own threads, the task keeps them running until it has left the call.
    let task = tokio::spawn(async move {
        driver.run().await;
        drop(threads);
    });
    let (watched_stats, watched_summary) = (stats_rx.clone(), summary.clone());
    tokio::spawn(async move {
        if let Err(e) = task.await {
            let reason = if e.is_panic() {
                EndReason::Internal(
                    "the call's task panicked; this is a bug, please report it".into(),
                )
            } else {
                EndReason::Internal(format!("the call's task was cancelled: {e}"))
            };
            let (recordings, mix) = {
                let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
                (l.recordings.clone(), l.mix.clone())
            };
            let _ = watched_summary.set(CallSummary {
                stats: watched_stats.borrow().clone(),
                recordings,
                video_recordings: Vec::new(),
                mix,
                errors: Vec::new(),
                reason: Some(reason.clone()),
            });
            ev_tx.send(CallEvent::Ended { reason });
        }
    });
    Ok(Started {
        position,
        commands: cmd_tx,
        events: ev_rx,
        stats: stats_rx,
        summary,
    })
}

/// Opens the microphone and speaker the configuration asks for, linked for echo cancellation,
/// off the runtime (the audio system may take a while to answer). The microphone becomes the
/// source; the speaker is returned for the receivers.
#[cfg(feature = "devices")]
async fn open_devices(config: &mut CallConfig) -> Result<Option<crate::audio::device::SpeakerOut>> {
    use crate::audio::device::{echo_path, open_speaker};
    if config.microphone.is_some() && config.source.is_some() {
        return Err(Error::InvalidConfig(
            "a call sends one source: give a microphone or a source, not both".into(),
        ));
    }
    let (mic, speaker) = (config.microphone.clone(), config.speaker.clone());
    if mic.is_none() && speaker.is_none() {
        return Ok(None);
    }
    let options = crate::audio::SourceOptions {
        channels: config.encoder.channels,
        looping: false,
    };
    let (source, out) = tokio::task::spawn_blocking(move || -> Result<_> {
        let cancel =
            mic.as_ref().is_some_and(|m| m.processing.echo_cancellation) && speaker.is_some();
        let (tx, rx) = if cancel {
            let (tx, rx) = echo_path();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let out = speaker.map(|c| open_speaker(&c, tx)).transpose()?;
        let source = mic
            .map(|c| crate::audio::Source::microphone_with_echo(&c, rx, options))
            .transpose()?;
        Ok((source, out))
    })
    .await
    .map_err(|e| Error::Device {
        device: "microphone and speaker".into(),
        reason: format!("the task that opened them failed: {e}"),
    })??;
    if source.is_some() {
        config.source = source;
    }
    Ok(out)
}

/// [`Driver::position`] when nothing plays.
pub(crate) const NO_POSITION: u64 = u64::MAX;

/// Where the recordings are, kept outside the task so that a panic does not lose it.
#[derive(Default)]
struct Ledger {
    recordings: Vec<(u32, PathBuf)>,
    mix: Option<PathBuf>,
}

struct Driver {
    signaling: Arc<dyn Signaling>,
    call: CallRef,
    /// When to rejoin, give up or end; the roster.
    machine: Machine,
    /// `None` while rejoining.
    connection: Option<Connection>,
    config: CallConfig,
    outgoing: Outgoing,
    gain: f32,
    receivers: Receivers,
    /// What the join declares (a camera, or no video).
    publish: VideoPublish,
    /// The camera's encoder thread, while a camera is published.
    publisher: Option<Publisher>,
    video_in: VideoReceivers,
    /// The screen share, from `share_screen` to its end. Boxed: few calls share a screen, and
    /// its transport would otherwise take room in every call's state.
    screen: Option<Box<Screen>>,
    /// Its presentation join in flight.
    screen_join: Option<ScreenJoin>,
    /// How many of the camera's layers the receivers want and the estimate carries.
    camera_layers: Layers,
    /// `None` between the end of a stream and the machine's resubscription.
    updates: Option<UpdateStream>,
    commands: mpsc::Receiver<Command>,
    events: EventSender,
    stats_tx: watch::Sender<CallStats>,
    ledger: Arc<Mutex<Ledger>>,
    summary: Arc<OnceLock<CallSummary>>,
    /// The playing source's position in microseconds ([`NO_POSITION`] without one), written
    /// every tick so that [`crate::Call::position`] is never more than a tick old.
    position: Arc<AtomicU64>,
    /// The join the machine asked for, in flight.
    join: Option<JoinFuture>,
    reply_tx: mpsc::Sender<Reply>,
    replies: mpsc::Receiver<Reply>,
    /// SSRCs we asked the server to name (once each, while they send).
    lookups_asked: HashSet<u32>,
    /// 20 ms steps ticked while busy.
    ticks: u64,
    idle_ticks: u32,
    /// Times the task woke (anything the loop waits on), for [`CallStats::wakeups`].
    wakeups: u64,
    /// Packets sent more than [`LATE`] after their tick's time, and the latest any was sent.
    late_packets: u64,
    send_late_max: Duration,
    levels: HashMap<u32, f32>,
    /// Packets sent on earlier connections (each rejoin has a new sender).
    packets_sent_before: u64,
    /// The transport reported Disconnected and has not recovered.
    transport_disconnected: bool,
    speakers_expired: u64,
    /// When the polled socket was last read: datagrams read later are dated no earlier, so
    /// the transport's clock never runs backwards.
    fed_until: Instant,
}

enum Wake {
    Datagram(usize, SocketAddr),
    SocketError(std::io::Error),
    Timeout,
    /// The 20 ms clock (or the idle one), with when it was due.
    Tick(Instant),
    Command(Option<Command>),
    Update(Option<SignalingUpdate>),
    Joined(Box<Result<(Joined, LocalIdentity)>>),
    Reply(Reply),
    Video(Option<Published>),
    ScreenDatagram(usize, SocketAddr),
    ScreenFrame(Option<Published>),
    ScreenJoined(Box<Result<(Joined, LocalIdentity)>>),
}

impl Driver {
    fn recording_error(&self, e: Error) {
        self.events.send(CallEvent::RecordingError {
            error: SharedError::from(e),
        });
    }

    async fn run(mut self: Box<Self>) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut screen_buf = vec![0u8; RECV_BUFFER];
        let mut ticking = true;
        let mut period = TICK;
        let phase = next_phase();
        let mut tick =
            tokio::time::interval_at(next_on_grid(Instant::now(), TICK, phase).into(), TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        // One timer for the transport's and the machine's deadlines, moved when they change
        // rather than made anew on every pass (each new one is a registration in the timer
        // wheel under its lock, and each dropped one a removal).
        let mut deadline = Instant::now() + Duration::from_secs(1);
        let timer = tokio::time::sleep_until(deadline.into());
        tokio::pin!(timer);
        // The timer has fired and must be set again before it is awaited again.
        let mut fired = false;
        let reason = loop {
            self.flush().await;
            self.drain_transport(None);
            if let Some(reason) = self.carry_out() {
                break reason;
            }
            // The clock runs only while it has work; it starts again on the grid.
            let busy = self.outgoing.source.is_some() || self.receivers.needs_tick();
            let wanted = if busy { self.tick_period() } else { IDLE_TICK };
            if busy != ticking || wanted != period {
                ticking = busy;
                period = wanted;
                let (grid, missed) = if busy {
                    (period, MissedTickBehavior::Burst)
                } else {
                    (TICK, MissedTickBehavior::Skip)
                };
                tick = tokio::time::interval_at(
                    next_on_grid(Instant::now(), grid, phase).into(),
                    period,
                );
                tick.set_missed_tick_behavior(missed);
            }
            // A call on its clock with nothing that needs datagrams on arrival reads its
            // socket at the tick instead of waking for each (src/socket.rs).
            let read_at_tick = ticking && self.reads_may_wait();
            if let Some(c) = self.connection.as_mut().filter(|c| !c.socket.is_gone()) {
                let switched = if read_at_tick {
                    c.socket.poll().map(drop)
                } else {
                    c.socket.register()
                };
                if let Err(e) = switched {
                    self.socket_failed(Instant::now(), e);
                    continue;
                }
            }
            // The transports' lenient deadlines (consent, receiver reports) that fall before
            // the clock's next tick are served by that tick: no wake-up of their own.
            let mut deferred = false;
            let wake = {
                let next_tick = ticking.then(|| next_on_grid(Instant::now(), period, phase));
                let mut transport_timeout = |t: &mut Transport| {
                    let d = t.poll_deadlines();
                    match (d.lenient, next_tick) {
                        (Some(l), Some(tick)) if l <= tick => {
                            deferred = true;
                            d.prompt
                        }
                        _ => d.earliest(),
                    }
                };
                let transport = self
                    .connection
                    .as_mut()
                    .and_then(|c| transport_timeout(&mut c.transport));
                let screen_timer = self
                    .screen
                    .as_mut()
                    .and_then(|s| s.connection.as_mut())
                    .and_then(|c| transport_timeout(&mut c.transport));
                let wanted = [
                    transport,
                    self.machine.poll_timeout(),
                    self.video_in.poll_timeout(),
                    screen_timer,
                ]
                .into_iter()
                .flatten()
                .min();
                // With nothing due, the timer stays where it is (a spurious wake-up at the
                // latest in a second) rather than moving on every pass.
                // A timer still set for a deadline the tick now serves is moved away too.
                let stale = deferred && next_tick.is_some_and(|tick| deadline <= tick);
                let target = match wanted {
                    Some(t) => Some(t),
                    None if fired || stale => Some(Instant::now() + Duration::from_secs(1)),
                    None => None,
                };
                if let Some(t) = target.filter(|&t| t != deadline || fired) {
                    deadline = t;
                    timer.as_mut().reset(t.into());
                }
                fired = false;
                let socket = self.connection.as_ref().and_then(|c| c.socket.registered());
                let join = self.join.as_mut();
                let updates = self.updates.as_mut();
                let video = self.publisher.as_mut().map(|p| &mut p.frames);
                let (screen_socket, screen_frames) = match self.screen.as_mut() {
                    Some(s) => (
                        s.connection.as_ref().and_then(|c| c.socket.registered()),
                        Some(&mut s.publisher.frames),
                    ),
                    None => (None, None),
                };
                let screen_join = self.screen_join.as_mut();
                tokio::select! {
                    r = async { screen_socket.expect("guarded").recv_from(&mut screen_buf).await }, if screen_socket.is_some() => match r {
                        Ok((n, from)) => Wake::ScreenDatagram(n, from),
                        // A broken presentation socket shows as its transport failing.
                        Err(_) => Wake::Timeout,
                    },
                    f = async { screen_frames.expect("guarded").recv().await }, if screen_frames.is_some() => Wake::ScreenFrame(f),
                    r = async { screen_join.expect("guarded").await }, if screen_join.is_some() => Wake::ScreenJoined(Box::new(r)),
                    v = async { video.expect("guarded").recv().await }, if video.is_some() => Wake::Video(v),
                    r = async { socket.expect("guarded").recv_from(&mut buf).await }, if socket.is_some() => match r {
                        Ok((n, from)) => Wake::Datagram(n, from),
                        Err(e) => Wake::SocketError(e),
                    },
                    _ = &mut timer => Wake::Timeout,
                    t = tick.tick() => Wake::Tick(t.into_std()),
                    c = self.commands.recv() => Wake::Command(c),
                    u = async { updates.expect("guarded").next().await }, if updates.is_some() => Wake::Update(u),
                    r = async { join.expect("guarded").await }, if join.is_some() => Wake::Joined(Box::new(r)),
                    Some(r) = self.replies.recv() => Wake::Reply(r),
                }
            };
            let now = Instant::now();
            self.wakeups += 1;
            // Whatever woke the call, the transport first takes in what its polled socket
            // holds: it then never sees a time earlier than one it has already been given.
            self.read_queued(now);
            match wake {
                Wake::Datagram(n, from) => {
                    if let Some(c) = self.connection.as_mut() {
                        c.transport.handle_datagram(now, from, &buf[..n]);
                    }
                }
                Wake::SocketError(e) => self.socket_failed(now, e),
                Wake::Timeout => {
                    fired = true;
                    self.transports_timeout(now);
                    self.machine.handle_timeout(now);
                }
                Wake::Tick(due) if ticking => {
                    self.on_tick(now, due, period);
                    if deferred {
                        self.transports_timeout(now);
                    }
                }
                Wake::Tick(_) => self.on_idle_tick(),
                Wake::Command(None) => break EndReason::Left,
                Wake::Command(Some(Command::Leave(reply))) => {
                    self.machine.leave();
                    let summary = Box::pin(self.finish(EndReason::Left)).await;
                    let _ = reply.send(summary);
                    return;
                }
                Wake::Command(Some(c)) => {
                    self.on_command(c);
                    if !ticking {
                        self.publish_stats();
                    }
                }
                Wake::Update(None) => {
                    tracing::warn!("the signaling backend stopped sending updates; resubscribing");
                    self.updates = None;
                    self.machine.handle(now, Input::UpdatesClosed);
                }
                Wake::Update(Some(u)) => {
                    let repeat = matches!(
                        (&u, &self.connection),
                        (SignalingUpdate::Connection { answer_json, .. }, Some(c)) if *answer_json == c.answer_json
                    );
                    if !repeat {
                        self.machine.handle(now, Input::Update(u));
                    }
                }
                Wake::Joined(result) => self.on_joined(now, *result),
                Wake::Reply(Reply::Roster {
                    participants,
                    version,
                    complete,
                }) => self.machine.handle(
                    now,
                    Input::Roster {
                        participants,
                        version,
                        complete,
                    },
                ),
                Wake::Reply(Reply::RosterFailed) => self.machine.handle(now, Input::RosterFailed),
                Wake::Reply(Reply::Checked { source, present }) => {
                    self.machine.handle(now, Input::Checked { source, present })
                }
                Wake::Video(v) => self.on_video(now, v),
                Wake::ScreenDatagram(n, from) => {
                    if let Some(c) = self.screen.as_mut().and_then(|s| s.connection.as_mut()) {
                        c.transport.handle_datagram(now, from, &screen_buf[..n]);
                    }
                }
                Wake::ScreenFrame(Some(f @ Published::Frame { .. })) => {
                    if let Some(s) = self.screen.as_mut() {
                        s.on_frame(now, f);
                    }
                }
                Wake::ScreenFrame(end) => {
                    let error = match end {
                        Some(Published::Failed(e)) => Some(e),
                        _ => None,
                    };
                    self.end_screen(now, error);
                }
                Wake::ScreenJoined(r) => self.on_screen_joined(now, *r),
            }
            if let Some(e) = self.screen.as_mut().and_then(|s| s.drain(now)) {
                self.end_screen(now, Some(e));
            }
            if let Some(c) = self.connection.as_mut() {
                let machine = &self.machine;
                self.video_in
                    .poll(now, c.ssrc, &mut c.transport, |s| machine.peer(s));
            }
        };
        Box::pin(self.finish(reason)).await;
    }

    /// Sends everything the transports queued.
    async fn flush(&mut self) {
        if let Some(s) = self.screen.as_mut() {
            s.flush().await;
        }
        if let Some(c) = self.connection.as_mut() {
            let transport = &mut c.transport;
            c.socket
                .send_queued("media", || transport.poll_transmit())
                .await;
        }
    }

    /// A failed receive or send on the call's socket. ICMP "port unreachable" from an earlier
    /// send lands here on Linux: the transport's own timeouts decide whether the path is dead.
    fn socket_failed(&mut self, now: Instant, e: std::io::Error) {
        if e.kind() != std::io::ErrorKind::ConnectionRefused {
            tracing::warn!("media socket error: {e}");
            let cause = RejoinCause::SocketFailed {
                kind: e.kind(),
                detail: e.to_string(),
            };
            self.machine.handle(now, Input::ConnectionLost(cause));
        }
    }

    /// Whether the call's datagrams may wait for its next tick: audio only, no video either
    /// way, no screen share, and a transport that needs nothing on arrival.
    fn reads_may_wait(&self) -> bool {
        self.publisher.is_none()
            && self.screen.is_none()
            && !self.video_in.is_consuming()
            && self
                .connection
                .as_ref()
                .is_some_and(|c| c.video.is_none() && c.transport.reads_may_wait())
    }

    /// Feeds the transport what a polled socket holds, each datagram's events drained with
    /// its kernel arrival time (the jitter buffer's measure). Bounded per wake-up: a flood
    /// waits in the socket (and overflows there) rather than holding the thread.
    fn read_queued(&mut self, now: Instant) {
        if !self
            .connection
            .as_ref()
            .is_some_and(|c| c.socket.is_polled())
        {
            return;
        }
        call_socket::with_batch(|batch| self.read_batches(now, batch));
        self.fed_until = now;
    }

    fn read_batches(&mut self, now: Instant, batch: &mut RecvBatch) {
        const MAX_READS: usize = 32;
        for _ in 0..MAX_READS {
            let Some(c) = self.connection.as_mut() else {
                break;
            };
            let n = match c.socket.recv_batch(batch) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    self.socket_failed(now, e);
                    break;
                }
            };
            for i in 0..n {
                let (r, data) = batch.get(i);
                let arrival = r.arrival.max(self.fed_until).min(now);
                if let Some(c) = self.connection.as_mut() {
                    c.transport.handle_datagram(arrival, r.from, data);
                }
                self.drain_transport(Some(arrival));
            }
            if n < call_socket::BATCH {
                break;
            }
        }
    }

    /// Hands the transport's events to the receivers and the machine. `arrival`: when the
    /// datagram just fed came in, if not now (read at the tick).
    fn drain_transport(&mut self, arrival: Option<Instant>) {
        let now = Instant::now();
        let arrival = arrival.unwrap_or(now);
        while let Some(event) = self
            .connection
            .as_mut()
            .and_then(|c| c.transport.poll_event())
        {
            match event {
                Event::Rtp(packet) if packet.kind == groupcall_media::PayloadKind::Video => {
                    let machine = &self.machine;
                    self.video_in.insert(now, &packet, |s| machine.peer(s));
                }
                Event::Rtp(packet) => match self.receivers.insert(arrival, &packet) {
                    Ok(true) => self.name_ssrc(packet.ssrc),
                    Ok(false) => {}
                    Err(e) => self.recording_error(e),
                },
                Event::Connected { profile, remote } => {
                    tracing::info!(%remote, ?profile, "connected");
                    // Frames encoded before now went nowhere: start receivers on a keyframe.
                    self.send_camera_codec();
                    if let Some(n) = self
                        .connection
                        .as_ref()
                        .and_then(|c| c.video.as_ref())
                        .map(|v| v.estimate_layers())
                    {
                        self.camera_layers.estimate = n;
                    }
                    if let Some(p) = &self.publisher {
                        p.send(Control::Layers(self.camera_layers.active()));
                        p.send(Control::Keyframe);
                    }
                    self.machine.handle(now, Input::Connected);
                }
                Event::StateChanged(State::Disconnected) => {
                    self.transport_disconnected = true;
                    self.machine.handle(now, Input::Disconnected);
                }
                Event::StateChanged(State::Connected) => {
                    if std::mem::take(&mut self.transport_disconnected) {
                        self.machine.handle(now, Input::Recovered);
                    }
                }
                Event::StateChanged(State::Failed(cause)) => {
                    let cause = RejoinCause::ConnectionFailed {
                        detail: cause.to_string(),
                    };
                    self.machine.handle(now, Input::ConnectionLost(cause));
                }
                Event::Rtcp(packets) => {
                    if let Some(c) = self.connection.as_mut() {
                        if let Some(v) = c.video.as_mut() {
                            let fb = v.on_rtcp(now, &mut c.transport, &packets);
                            if let Some(n) = fb.layers {
                                self.camera_layers.estimate = n;
                            }
                            if let Some(p) = &self.publisher {
                                if fb.keyframe {
                                    p.send(Control::Keyframe);
                                }
                                if fb.layers.is_some() {
                                    p.send(Control::Layers(self.camera_layers.active()));
                                }
                            }
                        }
                    }
                }
                Event::DataChannelOpen => {
                    tracing::debug!("data channel open");
                    self.send_subscription(now);
                }
                Event::DataChannelMessage(text) => {
                    if let Some(height) = crate::video::constraints::sender_ideal_height(&text) {
                        let wanted = crate::video::constraints::layers_for_height(
                            height,
                            VideoKind::Camera.layers(),
                        );
                        tracing::debug!(height, wanted, "receivers' constraints");
                        self.camera_layers.wanted = wanted;
                        if let Some(p) = &self.publisher {
                            p.send(Control::Layers(self.camera_layers.active()));
                        }
                    }
                }
                Event::StateChanged(_)
                | Event::ApplicationData(_)
                | Event::DataChannelClosed(_) => {}
            }
        }
    }

    /// Carries out what the machine asked for. `Some` when the call is over.
    fn carry_out(&mut self) -> Option<EndReason> {
        while let Some(action) = self.machine.poll_action() {
            let now = Instant::now();
            match action {
                Action::Emit(e) => {
                    // An idle call refreshes its statistics once a second: a change of state
                    // is published at once, so `stats()` agrees with the event.
                    let state = matches!(e, CallEvent::State(_));
                    self.events.send(e);
                    if state {
                        self.publish_stats();
                    }
                }
                Action::CloseConnection => self.close_connection(now),
                Action::Join => {
                    self.join = Some(Box::pin(join_once(
                        self.signaling.clone(),
                        self.call.clone(),
                        self.config.join.clone(),
                        self.publish,
                    )))
                }
                Action::Video { owner, kind, video } => {
                    let own = self.machine.own_ssrc();
                    self.video_in.declare(own, owner, kind, video.as_ref());
                    self.forget_video_ssrcs();
                }
                Action::FetchRoster(query) => self.fetch_roster(query),
                Action::Check(source) => requests::check_membership(
                    self.signaling.clone(),
                    self.call.clone(),
                    self.reply_tx.clone(),
                    source,
                ),
                Action::Resubscribe => {
                    self.updates = Some(self.signaling.updates());
                    self.machine.handle(now, Input::Resubscribed);
                }
                Action::Named { ssrc, peer } => {
                    if let Err(e) = self.receivers.identify(ssrc, peer.dialog_id()) {
                        self.recording_error(e);
                    }
                }
                Action::Gone { ssrc } => self.forget(ssrc),
                Action::End(reason) => return Some(reason),
            }
        }
        None
    }

    /// Closes the transport (its goodbye goes out if the socket takes it now) and drops it.
    fn close_connection(&mut self, now: Instant) {
        self.transport_disconnected = false;
        if let Some(mut c) = self.connection.take() {
            c.transport.close(now);
            while let Some(t) = c.transport.poll_transmit() {
                let _ = c.socket.try_send_to(&t.contents, t.destination);
            }
            self.packets_sent_before += c.sender.stats().packets;
        }
    }

    fn on_joined(&mut self, now: Instant, result: Result<(Joined, LocalIdentity)>) {
        self.join = None;
        let (joined, identity) = match result {
            Ok(j) => j,
            Err(e) => return self.machine.handle(now, Input::JoinFailed(e)),
        };
        match connect(&joined, &identity, &self.config, self.publish, now) {
            Ok(c) => {
                tracing::info!(ssrc = c.ssrc, "rejoined");
                let (ssrc, call) = (c.ssrc, c.call_id);
                self.connection = Some(c);
                self.outgoing.budget = 0;
                self.machine.handle(now, Input::Joined { ssrc, call });
                // The server ended the share with the old source: share again.
                if let Some(s) = self.screen.as_mut() {
                    s.close(now);
                    self.screen_join =
                        Some(screen::join(self.signaling.clone(), self.call.clone()));
                }
            }
            Err(e) => {
                // The server counts the accepted source as joined: take it back.
                let (signaling, call) = (self.signaling.clone(), self.call.clone());
                let ssrc = identity.audio_ssrc;
                tokio::spawn(async move {
                    let _ = signaling.leave(&call, ssrc).await;
                });
                self.machine.handle(now, Input::JoinFailed(e));
            }
        }
    }

    /// An encoded frame (or the end) from the camera's encoder thread.
    fn on_video(&mut self, now: Instant, v: Option<Published>) {
        match v {
            Some(Published::Frame {
                layer,
                rtp_timestamp,
                keyframe,
                data,
            }) => {
                if let Some(c) = self.connection.as_mut() {
                    if let Some(v) = c.video.as_mut() {
                        if c.transport.is_connected() {
                            if let Err(e) = v.send_frame(
                                now,
                                &mut c.transport,
                                layer,
                                rtp_timestamp,
                                keyframe,
                                &data,
                            ) {
                                tracing::debug!("video frame not sent: {e}");
                            }
                        }
                    }
                }
            }
            Some(Published::Ended) | None => {
                if let Some(p) = self.publisher.take() {
                    self.events.send(CallEvent::VideoSourceEnded {
                        kind: VideoKind::Camera,
                        source: p.name.clone(),
                        error: None,
                    });
                }
            }
            Some(Published::Failed(e)) => {
                if let Some(p) = self.publisher.take() {
                    tracing::warn!(source = %p.name, "video source failed: {e}");
                    self.events.send(CallEvent::VideoSourceEnded {
                        kind: VideoKind::Camera,
                        source: p.name.clone(),
                        error: Some(SharedError::from(e)),
                    });
                }
            }
        }
    }

    fn set_video_source(&mut self, source: Option<crate::video::VideoSource>) -> Result<()> {
        let Some(source) = source else {
            self.publisher = None;
            return Ok(());
        };
        if self.publish == VideoPublish::None {
            return Err(Error::InvalidConfig(
                "this call joined without a camera, so it declared no video sources; join with CallConfig::video (or --video) to publish one".into(),
            ));
        }
        let p = Publisher::start(source, VideoKind::Camera, rand::random())?;
        p.send(Control::Layers(self.camera_layers.active()));
        self.publisher = Some(p);
        self.send_camera_codec();
        Ok(())
    }

    /// The presentation join answered: connect the share, or give it up.
    fn on_screen_joined(&mut self, now: Instant, r: Result<(Joined, LocalIdentity)>) {
        self.screen_join = None;
        let Some(screen) = self.screen.as_mut() else {
            // Stopped while joining: take the share back at the server.
            if r.is_ok() {
                self.leave_screen_at_server();
            }
            return;
        };
        let connected = r.and_then(|(joined, identity)| {
            connect(&joined, &identity, &self.config, VideoPublish::Screen, now)
        });
        match connected {
            Ok(c) => {
                tracing::info!(ssrc = c.ssrc, "screen share joined");
                screen.connection = Some(c);
                screen.answer(Ok(()));
            }
            Err(e) if screen.reply.is_some() => {
                if let Some(mut s) = self.screen.take() {
                    s.answer(Err(e));
                }
            }
            Err(e) => self.end_screen(now, Some(e)),
        }
    }

    /// Ends the screen share (its source ended, it failed, or it was stopped), telling the
    /// server and the application.
    fn end_screen(&mut self, now: Instant, error: Option<Error>) {
        let Some(mut s) = self.screen.take() else {
            return;
        };
        self.screen_join = None;
        if s.connection.is_some() {
            self.leave_screen_at_server();
        }
        s.close(now);
        let reason = error
            .as_ref()
            .map_or("the screen share ended".to_string(), |e| e.to_string());
        s.answer(Err(Error::CallEnded(reason)));
        self.events.send(CallEvent::VideoSourceEnded {
            kind: VideoKind::Screen,
            source: s.publisher.name.clone(),
            error: error.map(SharedError::from),
        });
    }

    fn leave_screen_at_server(&self) {
        let (signaling, call) = (self.signaling.clone(), self.call.clone());
        tokio::spawn(async move {
            if let Err(e) = signaling.leave_presentation(&call).await {
                tracing::debug!("leaving the screen share failed: {e}");
            }
        });
    }

    /// Tells the server which video this call wants: the subscription, or nothing at all when
    /// nothing here shows or records video. Without one, the server sends everything.
    fn send_subscription(&mut self, now: Instant) {
        let message = if !self.video_in.is_consuming() {
            VideoSubscription::all(0).to_message()
        } else if let Some(s) = &self.config.video_subscription {
            s.to_message()
        } else {
            return;
        };
        if let Some(c) = self.connection.as_mut() {
            if let Err(e) = c.transport.send_data_channel(now, &message) {
                tracing::debug!("video constraints not sent: {e}");
            }
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::SubscribeVideo(s) => {
                self.config.video_subscription = Some(s);
                self.send_subscription(Instant::now());
            }
            Command::ShareScreen(source, reply) => {
                if let Some(mut old) = self.screen.take() {
                    if old.connection.is_some() {
                        self.leave_screen_at_server();
                    }
                    old.close(Instant::now());
                }
                match Screen::start(*source, reply) {
                    Ok(s) => {
                        self.screen = Some(Box::new(s));
                        self.screen_join =
                            Some(screen::join(self.signaling.clone(), self.call.clone()));
                    }
                    Err((e, reply)) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::StopScreen(reply) => {
                if let Some(mut s) = self.screen.take() {
                    self.screen_join = None;
                    if s.connection.is_some() {
                        self.leave_screen_at_server();
                    }
                    s.close(Instant::now());
                    s.answer(Err(Error::CallEnded("the screen share was stopped".into())));
                }
                let _ = reply.send(Ok(()));
            }
            Command::SetVideoSource(source, reply) => {
                let _ = reply.send(self.set_video_source(source.map(|s| *s)));
            }
            Command::SetVideoPaused(paused) => {
                if let Some(p) = &self.publisher {
                    p.send(Control::Paused(paused));
                }
            }
            Command::SetMuted(m) => self.outgoing.muted = m,
            Command::SetPaused(p) => self.outgoing.paused = p,
            Command::SetSource(s) => self.outgoing.set_source(s.map(|s| *s)),
            Command::SetGain(g) => self.gain = g,
            Command::Enqueue(source, reply) => {
                let _ = reply.send(self.outgoing.enqueue(*source));
            }
            Command::Skip => self.outgoing.skip(&self.events),
            Command::Seek(to, reply) => {
                let r = match self.outgoing.source.as_mut() {
                    Some(s) => s.seek(to),
                    None => Err(Error::CannotSeek {
                        input: "the call".into(),
                        reason: "nothing is playing".into(),
                    }),
                };
                self.publish_position();
                let _ = reply.send(r);
            }
            #[cfg(feature = "devices")]
            Command::SetMicrophone(m) => match m {
                Some(opened) => {
                    let (source, echo) = *opened;
                    if echo.is_some() {
                        self.receivers.set_echo(echo);
                    }
                    self.outgoing.set_source(Some(source));
                }
                None => self.outgoing.set_source(None),
            },
            #[cfg(feature = "devices")]
            Command::SetSpeaker(s) => {
                // The old device closes on its own thread when dropped here.
                drop(self.receivers.set_speaker(s.map(|b| *b)));
            }
            Command::StartRecording(what, reply) => {
                let (dir, mix) = *what;
                let format = self.config.record_format;
                let r = self
                    .receivers
                    .start_recording(dir.map(|d| (d, format)), mix);
                let _ = reply.send(r);
            }
            #[cfg(any(test, feature = "fault-injection"))]
            Command::Panic => panic!("fault injected by a test"),
            // The loop handles leaving before it gets here.
            Command::Leave(_) => {}
        }
    }

    fn publish_position(&self) {
        let p = self.outgoing.source.as_ref().map_or(NO_POSITION, |s| {
            u64::try_from(s.position().as_micros()).unwrap_or(NO_POSITION - 1)
        });
        self.position.store(p, Ordering::Relaxed);
    }

    /// The clock of a busy call: one tick per packet while the call plays nothing out (a bot
    /// that only sends), so 40 and 60 ms packets ([`EncoderConfig::packet_ms`]) cost one
    /// wake-up each rather than two or three; 20 ms while anything is played out or recorded,
    /// which the jitter buffers need.
    ///
    /// [`EncoderConfig::packet_ms`]: crate::audio::EncoderConfig::packet_ms
    fn tick_period(&self) -> Duration {
        if self.receivers.needs_tick() {
            return TICK;
        }
        match self.config.encoder.packet_ms {
            40 => Duration::from_millis(40),
            60 => Duration::from_millis(60),
            _ => TICK,
        }
    }

    /// Both transports (the call's and the screen share's) serve what is due by `now`.
    fn transports_timeout(&mut self, now: Instant) {
        if let Some(c) = self.connection.as_mut() {
            c.transport.handle_timeout(now);
        }
        if let Some(c) = self.screen.as_mut().and_then(|s| s.connection.as_mut()) {
            c.transport.handle_timeout(now);
        }
    }

    /// `due`: when this tick should have run. A packet sent more than [`LATE`] after its
    /// time is counted: the measure of whether pacing holds with many calls per thread.
    fn on_tick(&mut self, now: Instant, due: Instant, period: Duration) {
        let frames = (period.as_millis() / TICK.as_millis()).max(1) as u64;
        if let Some(c) = self.connection.as_mut() {
            let before = c.sender.stats().packets;
            let samples = FRAME_SAMPLES as i64 * frames as i64;
            self.outgoing.tick(now, c, &self.events, samples);
            let sent = c.sender.stats().packets - before;
            if sent > 0 {
                let late = now.saturating_duration_since(due);
                self.send_late_max = self.send_late_max.max(late);
                if late > LATE {
                    self.late_packets += sent;
                }
            }
        }
        self.publish_position();
        let report = self.receivers.tick(now, self.gain);
        for e in report.errors {
            self.recording_error(e);
        }
        #[cfg(feature = "devices")]
        for f in report.device_failures {
            tracing::warn!(device = %f.device, "speaker failed: {}", f.error);
            self.events.send(CallEvent::DeviceFailed {
                device: f.device,
                error: f.error,
            });
        }
        // Counted in 20 ms steps whatever the period, so the things done every so many
        // steps keep their pace.
        let (before, after) = (self.ticks, self.ticks + frames);
        self.ticks = after;
        let every = |n: u64| before / n != after / n;
        if every(LEVEL_TICKS) {
            for (ssrc, level) in self.receivers.levels() {
                self.levels.insert(ssrc, level.level);
                if self.config.speaking_events {
                    self.events.send(CallEvent::Speaking {
                        ssrc,
                        peer: self.machine.peer(ssrc),
                        level: level.level,
                        voice: level.voice,
                    });
                }
            }
            for ssrc in self.receivers.idle_since(now, self.config.speaker_timeout) {
                tracing::debug!(ssrc, "forgetting a sender silent for too long");
                self.speakers_expired += 1;
                self.forget(ssrc);
            }
            self.publish_stats();
        }
        if every(LEDGER_TICKS) {
            self.update_ledger();
        }
        if every(REPORT_TICKS) {
            self.send_reports();
        }
    }

    /// Once a second while there is nothing to send or play out: what the application reads
    /// (statistics, the position a removed source left, the ledger) stays fresh, and the
    /// server still hears from us.
    fn on_idle_tick(&mut self) {
        self.publish_position();
        self.publish_stats();
        self.update_ledger();
        self.idle_ticks = self.idle_ticks.wrapping_add(1);
        if self.idle_ticks.is_multiple_of(IDLE_REPORT_TICKS) {
            self.send_reports();
        }
    }

    /// Tells the camera's encoder thread the codec the connection's answer chose.
    fn send_camera_codec(&self) {
        let codec = self
            .connection
            .as_ref()
            .and_then(|c| c.video.as_ref())
            .map(|v| v.codec());
        if let (Some(p), Some(codec)) = (&self.publisher, codec) {
            p.send(Control::Codec(codec));
        }
    }

    /// Drops the transport's statistics of video streams that ended.
    fn forget_video_ssrcs(&mut self) {
        for ssrc in self.video_in.take_forgotten() {
            if let Some(c) = self.connection.as_mut() {
                c.transport.forget_ssrc(ssrc);
            }
        }
    }

    /// Sender reports on the call's connection and the screen share's.
    fn send_reports(&mut self) {
        if let Some(c) = self.connection.as_mut() {
            c.send_report();
        }
        if let Some(c) = self.screen.as_mut().and_then(|s| s.connection.as_mut()) {
            c.send_report();
        }
    }

    /// Frees everything kept for `ssrc`: its receiver and file, its statistics, its lookup.
    fn forget(&mut self, ssrc: u32) {
        if let Err(e) = self.receivers.remove(ssrc) {
            self.recording_error(e);
        }
        self.levels.remove(&ssrc);
        self.lookups_asked.remove(&ssrc);
        self.video_in.forget(ssrc);
        self.forget_video_ssrcs();
        if let Some(c) = self.connection.as_mut() {
            c.transport.forget_ssrc(ssrc);
        }
    }

    fn update_ledger(&self) {
        let recordings = self.receivers.recordings();
        let mix = self.receivers.mix_path().map(|p| p.to_path_buf());
        let mut l = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        l.recordings = recordings;
        l.mix = mix;
    }

    fn publish_stats(&mut self) {
        let mut s = CallStats {
            muted: self.outgoing.muted,
            rejoins: self.machine.rejoins(),
            packets_sent: self.packets_sent_before,
            recording_errors: self.receivers.sink_errors,
            events_dropped: self.events.dropped(),
            events_coalesced: self.events.coalesced(),
            speakers_expired: self.speakers_expired,
            speakers_tracked: self.receivers.len(),
            speakers_refused: self.receivers.refused,
            roster_overflow: self.machine.roster_overflow(),
            source_started_at: self.outgoing.started_at,
            source_position: self.outgoing.source.as_ref().map(|s| s.position()),
            paused: self.outgoing.paused,
            source_duration: self.outgoing.source.as_ref().and_then(|s| s.duration()),
            queued: self.outgoing.queue.len(),
            mix_started_at: self.receivers.mix_started_at,
            wakeups: self.wakeups,
            late_packets: self.late_packets,
            send_late_max: self.send_late_max,
            video_received: self.video_in.stats(),
            video_encoder_dropped: self
                .publisher
                .as_ref()
                .map_or(0, |p| p.dropped.load(Ordering::Relaxed)),
            ..CallStats::default()
        };
        if let Some(c) = &self.connection {
            let t = c.transport.stats();
            s.connected = c.transport.is_connected();
            s.ssrc = c.ssrc;
            s.packets_sent += c.sender.stats().packets;
            s.video_sent = c.video.as_ref().map(|v| v.stats());
            s.packets_received = t.received.rtp;
            s.dropped = t.dropped();
            let mut speakers: Vec<SpeakerStats> = t
                .ssrcs
                .iter()
                .filter(|(ssrc, _)| !self.video_in.is_video_ssrc(**ssrc))
                .map(|(&ssrc, st)| SpeakerStats {
                    ssrc,
                    peer: self.machine.peer(ssrc),
                    packets: st.packets,
                    lost: st.lost(),
                    jitter_ms: st.jitter_ms(),
                    level: self.levels.get(&ssrc).copied().unwrap_or(0.0),
                    receive: self.receivers.jitter_stats(ssrc),
                })
                .collect();
            speakers.sort_by_key(|s| s.ssrc);
            s.speakers = speakers;
        } else {
            s.ssrc = self.stats_tx.borrow().ssrc;
        }
        self.stats_tx.send_replace(s);
    }

    /// Asks the server who sends with `ssrc`, once while it sends, off the loop.
    fn name_ssrc(&mut self, ssrc: u32) {
        if self.machine.is_known(ssrc) || self.lookups_asked.len() >= MAX_LOOKUPS {
            return;
        }
        if self.lookups_asked.insert(ssrc) {
            self.fetch_roster(ParticipantQuery::by_sources([ssrc]));
        }
    }

    fn fetch_roster(&self, query: ParticipantQuery) {
        requests::fetch_roster(
            self.signaling.clone(),
            self.call.clone(),
            self.reply_tx.clone(),
            query,
        );
    }

    /// Leaves (when the call still exists), closes every file, reports the end.
    async fn finish(mut self: Box<Self>, reason: EndReason) -> CallSummary {
        let now = Instant::now();
        let had_connection = self.connection.is_some();
        if let Some(mut s) = self.screen.take() {
            if s.connection.is_some() && reason != EndReason::Discarded {
                let _ = self.signaling.leave_presentation(&self.call).await;
            }
            s.close(now);
        }
        if let Some(c) = self.connection.as_mut() {
            c.transport.close(now);
        }
        self.flush().await;
        self.publish_stats();
        if had_connection && reason != EndReason::Discarded {
            if let Err(e) = self
                .signaling
                .leave(&self.call, self.machine.own_ssrc())
                .await
            {
                tracing::warn!("leaving the call failed: {e}");
            }
        }
        let recordings = self.receivers.recordings();
        let mix = self.receivers.mix_path().map(|p| p.to_path_buf());
        let stats = self.stats_tx.borrow().clone();
        let mut errors = Vec::new();
        self.publisher = None;
        let video_recordings = self.video_in.recordings();
        for r in [self.receivers.finish(), self.video_in.finish()] {
            if let Err(e) = r {
                let error = SharedError::from(e);
                self.events.send(CallEvent::RecordingError {
                    error: error.clone(),
                });
                errors.push(error);
            }
        }
        let summary = CallSummary {
            stats,
            recordings,
            video_recordings,
            mix,
            errors,
            reason: Some(reason.clone()),
        };
        let _ = self.summary.set(summary.clone());
        self.events.send(CallEvent::Ended { reason });
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instant is on the 20 ms grid and after `now`; a 60 ms grid's three phases fall on
    /// three different 20 ms instants, so calls spread over them do not tick all at once.
    #[test]
    fn longer_grids_are_on_the_20_ms_grid_and_their_phases_apart() {
        let start = next_on_grid(Instant::now(), TICK, 0);
        let on_20ms = |t: Instant| {
            let d = t.duration_since(start).as_nanos();
            d.is_multiple_of(TICK.as_nanos())
        };
        for step_us in [0u64, 1, 19_999, 20_000, 33_333, 59_999, 60_000, 123_457] {
            let now = start + Duration::from_micros(step_us);
            let mut seen = Vec::new();
            for phase in 0..3 {
                let t = next_on_grid(now, Duration::from_millis(60), phase);
                assert!(
                    t > now && t <= now + Duration::from_millis(60),
                    "{step_us} µs"
                );
                assert!(on_20ms(t), "phase {phase} at {step_us} µs");
                seen.push(t);
            }
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 3, "three phases, three instants");
            let t = next_on_grid(now, TICK, 2);
            assert!(t > now && t <= now + TICK && on_20ms(t));
        }
    }

    /// A few calls share phase 0 (one wake-up serves them); 200 are spread over all three,
    /// none holding more than twice the least.
    #[test]
    fn calls_fill_a_phase_before_the_next_opens() {
        assert!((0..PHASE_FILL).all(|n| phase_of(n) == 0));
        assert_eq!(phase_of(PHASE_FILL), 1);
        assert_eq!(phase_of(2 * PHASE_FILL), 2);
        assert_eq!(phase_of(3 * PHASE_FILL), 0);
        let mut count = [0u32; 3];
        for n in 0..200 {
            count[phase_of(n) as usize] += 1;
        }
        let (least, most) = (count.iter().min().unwrap(), count.iter().max().unwrap());
        assert!(*most <= 2 * *least, "{count:?}");
    }
}
#[cfg(test)]
mod size {
    use std::mem::size_of;

    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(Box<super::Driver>) -> Fut,
    {
        size_of::<Fut>()
    }

    /// Every call's task holds its driver's loop. An async fn keeps its by-value arguments
    /// beside its locals, and an inline `finish` kept a second driver: the loop's state was
    /// 68 KB, and the task 83 KB, for a driver of 14.6 KB. The driver is now on the heap once
    /// and `finish` is boxed; the loop's own state stays small.
    #[test]
    fn a_calls_task_holds_its_driver_once() {
        let run = future_size(super::Driver::run);
        assert!(run <= 2048, "the call loop's state is {run} bytes");
        // The screen share's state (its own transport) is boxed: few calls share a screen.
        let driver = size_of::<super::Driver>();
        let screen = size_of::<crate::screen::Screen>();
        assert!(
            driver < 12 * 1024 && screen > 1024,
            "driver {driver}, screen {screen}"
        );
    }
}
