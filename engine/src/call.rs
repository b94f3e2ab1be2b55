//! The public async API: an [`Engine`] joins calls through a signaling backend and hands back a
//! [`Call`] to control it and to read its [`CallEvent`]s.
//!
//! Each call runs in its own tokio task (the driver, `driver.rs`), which owns its socket, its
//! transport and its audio. A `Call` talks to it over channels, so a call that fails, or even
//! panics, ends only itself: the application gets [`CallEvent::Ended`] and carries on.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use groupcall_media::TransportConfig;
use groupcall_signaling::{CallRef, JoinOptions, ParticipantEdit, PeerId, Signaling};
use tokio::sync::{mpsc, oneshot, watch};

use crate::events::{EventReceiver, DEFAULT_EVENT_CAPACITY};

use crate::audio::{
    AppSink, EncoderConfig, FileFormat, JitterConfig, JitterStats, LoudnessConfig, Source,
};
use crate::driver;
use crate::error::{Error, Result, SharedError};
use crate::threads::CallThreads;
use crate::video::constraints::VideoSubscription;
use crate::video::publish::VideoKind;
use crate::video::receive::{VideoReceiveStats, VideoSink};
use crate::video::send::VideoSendStats;
use crate::video::source::VideoSource;

/// Everything about how to take part in one call. `Default` listens only, records nothing.
pub struct CallConfig {
    /// Flags of the join request. `join.muted` is decided by [`CallConfig::muted`].
    pub join: JoinOptions,
    /// Join muted (no RTP at all, and the server shows the participant muted). `None` means
    /// muted exactly when there is no source.
    pub muted: Option<bool>,
    /// What to play; `None` listens only. Replace it later with [`Call::set_source`].
    pub source: Option<Source>,
    pub encoder: EncoderConfig,
    /// Normalise the loudness of what the call plays (see [`LoudnessConfig`]), so tracks
    /// mastered at different levels reach listeners at one. `None` (the default) sends the
    /// source as it is. Ogg/Opus packets passed through without re-encoding are not touched.
    pub loudness: Option<LoudnessConfig>,
    /// Send what this microphone hears (feature `devices`); instead of `source`, not with it.
    /// With [`CallConfig::speaker`] too, the speaker's sound is cancelled from it.
    #[cfg(feature = "devices")]
    pub microphone: Option<crate::audio::device::MicrophoneConfig>,
    /// Play the mix of everyone on this speaker (feature `devices`).
    #[cfg(feature = "devices")]
    pub speaker: Option<crate::audio::device::SpeakerConfig>,
    /// One file per speaker in this directory, created if missing (`peer<PEER>_ssrc<SSRC>.wav`; `…_part2.wav` and on
    /// for a speaker who comes back after being forgotten, see `speaker_timeout`).
    pub record_dir: Option<PathBuf>,
    /// The mix of every speaker in one file.
    pub record_mix: Option<PathBuf>,
    pub record_format: FileFormat,
    /// Per-speaker files keep the call's timeline by default: a speaker's silences (and
    /// concealed losses) are in their file, so it lines up with the mix and the other files.
    /// With `Some(keep)`, silences longer than `keep` are left out instead (smaller files for
    /// transcription, say, at the price of the timeline).
    pub record_trim_silence: Option<Duration>,
    /// Received frames handed to the application, per speaker.
    pub app_sink: Option<AppSink>,
    /// The camera to publish (three simulcast layers, H.264). The join declares the camera's
    /// sources only with one: [`Call::set_video_source`] can replace or stop it later, but a
    /// call joined without one cannot start a camera (join again with one).
    pub video: Option<VideoSource>,
    /// Every participant's decoded video, as it arrives (decoded on the call's own thread).
    pub video_sink: Option<VideoSink>,
    /// Which participants' video to receive and how tall (`ReceiverVideoConstraints`); `None`
    /// takes every video at full size. Change it with [`Call::subscribe_video`].
    pub video_subscription: Option<VideoSubscription>,
    /// One Y4M file per received camera or screen in this directory, created if missing
    /// (`peer<PEER>_ssrc<SSRC>_camera.y4m`, a new `…_part2` when the picture's size changes).
    pub record_video_dir: Option<PathBuf>,
    pub jitter: JitterConfig,
    /// How long audio from an SSRC that the roster has not named yet is held back, waiting
    /// for its owner's name, before it goes out without one.
    pub hold_unknown: Duration,
    pub transport: TransportConfig,
    pub rejoin: RejoinPolicy,
    /// Events queued for [`Call::next_event`] before the overflow policy applies (see
    /// [`CallStats::events_dropped`]): `Speaking` is coalesced per speaker, then dropped first.
    pub event_capacity: usize,
    /// A sender heard from for the last time this long ago is forgotten (its jitter buffer,
    /// decoder and statistics freed, its file closed) even if no roster update said it left:
    /// a missed update must not keep its state forever. It comes back if it speaks again.
    pub speaker_timeout: Duration,
    /// A [`CallEvent::Speaking`] for each speaker every 100 ms (the default). An application
    /// that never shows who speaks (a recorder, a transcriber, a music bot) can turn them off:
    /// each one wakes the task that reads [`Call::next_event`], a few per cent of a listener's
    /// CPU (docs/performance.md §1.2.6). The levels stay in [`CallStats`].
    pub speaking_events: bool,
    /// Send media to this address instead of the server's candidates: a relay in between,
    /// such as `groupcall impair` (the server then sees the relay's address).
    pub media_via: Option<SocketAddr>,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            join: JoinOptions::default(),
            muted: None,
            source: None,
            encoder: EncoderConfig::default(),
            loudness: None,
            #[cfg(feature = "devices")]
            microphone: None,
            #[cfg(feature = "devices")]
            speaker: None,
            record_dir: None,
            record_mix: None,
            record_format: FileFormat::Wav,
            record_trim_silence: None,
            app_sink: None,
            video: None,
            video_sink: None,
            video_subscription: None,
            record_video_dir: None,
            jitter: JitterConfig::default(),
            hold_unknown: Duration::from_secs(2),
            // Only the video estimate reads transport-cc feedback: numbered audio would draw
            // ten RTCP packets a second per call that nothing uses.
            transport: TransportConfig {
                audio_transport_cc: false,
                ..TransportConfig::default()
            },
            rejoin: RejoinPolicy::default(),
            event_capacity: DEFAULT_EVENT_CAPACITY,
            speaker_timeout: Duration::from_secs(60),
            speaking_events: true,
            media_via: None,
        }
    }
}

/// When and how often a call that lost its connection joins again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejoinPolicy {
    /// Attempts in a row before the call gives up and ends. 0 never rejoins.
    pub max_attempts: u32,
    /// Wait before the first attempt; doubled after each failure...
    pub initial_backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
}

impl Default for RejoinPolicy {
    fn default() -> Self {
        RejoinPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RejoinPolicy {
    /// The wait before attempt `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Where the connection to the server stands.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnectionState {
    /// ICE and DTLS under way.
    Connecting,
    /// Media flows.
    Connected,
    /// Nothing heard from the server for a while; recovers by itself or fails.
    Disconnected,
    /// The connection was lost; joining again, attempt `attempt` (1-based), because of `cause`.
    Rejoining { attempt: u32, cause: RejoinCause },
}

/// Why a call joins again (docs/protocol.md §7.4).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RejoinCause {
    /// ICE consent or DTLS failed: nothing was heard from the server for too long.
    ConnectionFailed { detail: String },
    /// The media socket returned an error.
    SocketFailed {
        kind: std::io::ErrorKind,
        detail: String,
    },
    /// The server reported this participant's own source as left.
    RemovedByServer,
    /// While disconnected, `phone.checkGroupCall` no longer listed this participant's source.
    NotCountedByServer,
    /// The server sent a new connection answer for this participant's join.
    ConnectionReplaced,
    /// The previous attempt's join failed.
    JoinFailed { error: SharedError },
}

impl RejoinCause {
    /// A stable name for the cause, for logs and line protocols (`"connection_failed"`, …).
    pub fn code(&self) -> &'static str {
        match self {
            RejoinCause::ConnectionFailed { .. } => "connection_failed",
            RejoinCause::SocketFailed { .. } => "socket_failed",
            RejoinCause::RemovedByServer => "removed_by_server",
            RejoinCause::NotCountedByServer => "not_counted_by_server",
            RejoinCause::ConnectionReplaced => "connection_replaced",
            RejoinCause::JoinFailed { .. } => "join_failed",
        }
    }
}

impl fmt::Display for RejoinCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejoinCause::ConnectionFailed { detail } => {
                write!(f, "the connection failed: {detail}")
            }
            RejoinCause::SocketFailed { detail, .. } => {
                write!(f, "the media socket failed: {detail}")
            }
            RejoinCause::RemovedByServer => f.write_str("the server dropped this participant"),
            RejoinCause::NotCountedByServer => f.write_str(
                "the server no longer counts this participant as joined (checkGroupCall)",
            ),
            RejoinCause::ConnectionReplaced => {
                f.write_str("the server sent a new connection for this participant")
            }
            RejoinCause::JoinFailed { error } => write!(f, "joining again failed: {error}"),
        }
    }
}

/// A participant as the call's events describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantInfo {
    pub peer: PeerId,
    /// Audio SSRC: what received frames and files are keyed by.
    pub source: u32,
    pub muted: bool,
}

/// Something that happened in a call.
#[derive(Clone, Debug, PartialEq)]
pub enum CallEvent {
    State(ConnectionState),
    /// Joined again after a lost connection, with a fresh payload (a new SSRC).
    Rejoined {
        ssrc: u32,
    },
    ParticipantJoined(ParticipantInfo),
    ParticipantLeft(ParticipantInfo),
    /// A participant's muted state (or other flags) changed.
    ParticipantUpdated(ParticipantInfo),
    /// How loud a speaker was over the last ~100 ms (0.0..=1.0, linear).
    Speaking {
        ssrc: u32,
        peer: Option<PeerId>,
        level: f32,
        voice: bool,
    },
    /// The source finished (end of file, end of stream). Once per source; replacing a
    /// source does not fire it for the one replaced.
    SourceEnded {
        source: String,
    },
    /// The source failed to read; it is dropped and nothing more is sent until a new one.
    SourceError {
        source: String,
        error: SharedError,
    },
    /// A recording or the application sink failed. Audio is not silently lost: this says so.
    RecordingError {
        error: SharedError,
    },
    /// The speaker device failed (unplugged, the sound server gone) and was closed; the call
    /// goes on, and [`Call::set_output_device`] opens another. (A failing microphone ends its
    /// source instead: [`CallEvent::SourceError`].)
    DeviceFailed {
        device: String,
        error: String,
    },
    /// A participant's camera or screen started, paused or stopped (from the roster).
    Video {
        source: u32,
        peer: PeerId,
        kind: VideoKind,
        state: VideoState,
    },
    /// The published camera's or screen's source ended or failed (or the screen share's
    /// connection did); nothing more is sent of it until a new one.
    VideoSourceEnded {
        kind: VideoKind,
        source: String,
        error: Option<SharedError>,
    },
    /// The call is over for this participant; no more events follow. [`Call::leave`] still
    /// returns its [`CallSummary`] (where the recordings are), whatever ended it.
    Ended {
        reason: EndReason,
    },
}

impl CallEvent {
    /// The event as one JSON object, `{"event": "speaking", …}`: the events of the stdio line
    /// protocol (`groupcall join --signaling stdio`) and of the Python package. Sources are signed 32-bit, as
    /// Telegram writes them; peers are dialog ids.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let participant = |kind: &str, p: &ParticipantInfo| json!({"event": kind, "source": p.source as i32, "peer": p.peer.dialog_id(), "muted": p.muted});
        match self {
            CallEvent::State(ConnectionState::Connecting) => json!({"event": "connecting"}),
            CallEvent::State(ConnectionState::Connected) => json!({"event": "connected"}),
            CallEvent::State(ConnectionState::Disconnected) => json!({"event": "disconnected"}),
            CallEvent::State(ConnectionState::Rejoining { attempt, cause }) => {
                json!({"event": "rejoining", "attempt": attempt, "cause": cause.code(), "reason": cause.to_string()})
            }
            CallEvent::Rejoined { ssrc } => json!({"event": "rejoined", "source": *ssrc as i32}),
            CallEvent::ParticipantJoined(p) => participant("participant_joined", p),
            CallEvent::ParticipantLeft(p) => participant("participant_left", p),
            CallEvent::ParticipantUpdated(p) => participant("participant_updated", p),
            CallEvent::Speaking {
                ssrc,
                peer,
                level,
                voice,
            } => json!({
                "event": "speaking", "source": *ssrc as i32,
                "peer": peer.map(|p| p.dialog_id()), "level": level, "voice": voice
            }),
            CallEvent::SourceEnded { source } => json!({"event": "source_ended", "name": source}),
            CallEvent::SourceError { source, error } => {
                json!({"event": "source_error", "name": source, "error": error.to_string()})
            }
            CallEvent::DeviceFailed { device, error } => {
                json!({"event": "device_failed", "device": device, "error": error})
            }
            CallEvent::RecordingError { error } => {
                json!({"event": "recording_error", "error": error.to_string()})
            }
            CallEvent::Video {
                source,
                peer,
                kind,
                state,
            } => json!({
                "event": "video", "source": *source as i32, "peer": peer.dialog_id(),
                "kind": kind.as_str(), "state": state.as_str()
            }),
            CallEvent::VideoSourceEnded {
                kind,
                source,
                error,
            } => json!({
                "event": "video_source_ended", "kind": kind.as_str(), "name": source,
                "error": error.as_ref().map(|e| e.to_string())
            }),
            CallEvent::Ended { reason } => {
                json!({"event": "ended", "cause": reason.code(), "reason": reason.to_string()})
            }
        }
    }
}

/// Where a participant's camera or screen stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoState {
    Started,
    Paused,
    Stopped,
}

impl VideoState {
    pub fn as_str(self) -> &'static str {
        match self {
            VideoState::Started => "started",
            VideoState::Paused => "paused",
            VideoState::Stopped => "stopped",
        }
    }
}

/// A call's events on a handle of their own ([`Call::take_events`]).
pub struct CallEvents(EventReceiver);

impl CallEvents {
    /// The next event; `None` after [`CallEvent::Ended`] (or once the call is left).
    pub async fn next(&mut self) -> Option<CallEvent> {
        self.0.recv().await
    }

    /// An event if one is queued, without waiting.
    pub fn try_next(&mut self) -> Option<CallEvent> {
        self.0.try_recv()
    }
}

/// Why a call ended.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EndReason {
    /// [`Call::leave`] (or the `Call` was dropped).
    Left,
    /// The call was ended for everyone.
    Discarded,
    /// The same account joined from elsewhere.
    JoinedElsewhere,
    /// Rejoining failed `attempts` times in a row (or the server said the call is over for
    /// this account); `cause` is the last failure.
    RejoinFailed { attempts: u32, cause: RejoinCause },
    /// The server moved this participant somewhere this engine cannot follow (a livestream).
    Unsupported { error: SharedError },
    /// A bug in the engine ended this call's task; other calls are unaffected.
    Internal(String),
}

impl EndReason {
    /// A stable name for the reason, for logs and line protocols (`"left"`, `"discarded"`, …).
    pub fn code(&self) -> &'static str {
        match self {
            EndReason::Left => "left",
            EndReason::Discarded => "discarded",
            EndReason::JoinedElsewhere => "joined_elsewhere",
            EndReason::RejoinFailed { .. } => "rejoin_failed",
            EndReason::Unsupported { .. } => "unsupported",
            EndReason::Internal(_) => "internal",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Left => f.write_str("left"),
            EndReason::Discarded => f.write_str("the call was ended for everyone"),
            EndReason::JoinedElsewhere => {
                f.write_str("this account joined the call from elsewhere")
            }
            EndReason::RejoinFailed { attempts, cause } => {
                write!(f, "gave up rejoining after {attempts} attempt(s): {cause}")
            }
            EndReason::Unsupported { error } => error.fmt(f),
            EndReason::Internal(e) => write!(f, "internal error: {e}"),
        }
    }
}

/// Reception figures of one speaker, for a status line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpeakerStats {
    pub ssrc: u32,
    pub peer: Option<PeerId>,
    pub packets: u64,
    pub lost: u64,
    pub jitter_ms: f64,
    /// The latest speaking level (0.0..=1.0).
    pub level: f32,
    /// What the receive side did with this speaker's audio: late and lost packets, FEC used,
    /// concealment, time-stretching, its target and current delay. `None` when nothing
    /// consumes decoded audio (no recording, mix or application sink), so nothing is decoded.
    pub receive: Option<JitterStats>,
}

/// A snapshot of a call's figures, refreshed every 100 ms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallStats {
    pub connected: bool,
    pub ssrc: u32,
    pub muted: bool,
    /// Audio packets sent.
    pub packets_sent: u64,
    /// RTP packets received, audio and video (`video_received` has video's own figures).
    pub packets_received: u64,
    /// Datagrams dropped by the transport (malformed, forged, replayed, not ready).
    pub dropped: u64,
    pub rejoins: u32,
    /// Frames a recording or the application sink failed to take. The first failure of each
    /// sink is also a [`CallEvent::RecordingError`].
    pub recording_errors: u64,
    /// Events dropped because the application did not read them (see
    /// [`CallConfig::event_capacity`]).
    pub events_dropped: u64,
    /// `Speaking` events merged into a newer one before the application read them.
    pub events_coalesced: u64,
    /// Senders forgotten after [`CallConfig::speaker_timeout`] of silence.
    pub speakers_expired: u64,
    /// Times the call's task woke up so far: a datagram, a timer, the 20 ms tick (which runs
    /// only while there is audio to send or play out), a command. What an idle call costs.
    pub wakeups: u64,
    /// Packets sent more than 20 ms after their time (the 20 ms tick ran late: an overloaded
    /// machine or runtime). Listeners' jitter buffers absorb some; a growing count does not.
    pub late_packets: u64,
    /// The latest a packet has been sent after its time, over the call.
    pub send_late_max: Duration,
    /// Senders whose state (jitter buffer, decoder, file) is kept now.
    pub speakers_tracked: usize,
    /// Packets of new senders refused because a call keeps at most 1,024 senders.
    pub speakers_refused: u64,
    /// Roster entries not kept because the roster was at its bound.
    pub roster_overflow: u64,
    /// Wall-clock time the current source's first frame was sent.
    pub source_started_at: Option<SystemTime>,
    /// Sources waiting to play after the current one ([`Call::enqueue`]).
    pub queued: usize,
    /// Where in the playing source the call is (the next frame's time in it); `None` without
    /// a source. Follows [`Call::seek`].
    pub source_position: Option<Duration>,
    /// The source is paused ([`Call::pause`]): not pulled, its position kept.
    pub paused: bool,
    /// How long the playing source is, when it says (files, HTTP files; not streams).
    pub source_duration: Option<Duration>,
    /// Wall-clock time of the mix recording's first sample; the file is continuous from there,
    /// so sample `n` was played at this time plus `n / 48000` s.
    pub mix_started_at: Option<SystemTime>,
    pub speakers: Vec<SpeakerStats>,
    /// The published camera, while one is published.
    pub video_sent: Option<VideoSendStats>,
    /// Frames the camera's encoder thread dropped because the call's task was behind.
    pub video_encoder_dropped: u64,
    pub video_received: VideoReceiveStats,
}

/// What a call left behind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallSummary {
    pub stats: CallStats,
    /// Per-speaker recordings, with the SSRC they hold.
    pub recordings: Vec<(u32, PathBuf)>,
    pub mix: Option<PathBuf>,
    /// Received video recordings ([`CallConfig::record_video_dir`]).
    pub video_recordings: Vec<PathBuf>,
    /// Errors closing recordings.
    pub errors: Vec<SharedError>,
    /// Why the call ended.
    pub reason: Option<EndReason>,
}

/// Commands queued for a call's task before [`Call`]'s methods report it busy.
pub(crate) const COMMAND_CAPACITY: usize = 64;

pub(crate) enum Command {
    SetMuted(bool),
    SetPaused(bool),
    SetSource(Option<Box<Source>>),
    SetVideoSource(Option<Box<VideoSource>>, oneshot::Sender<Result<()>>),
    SetVideoPaused(bool),
    SubscribeVideo(VideoSubscription),
    ShareScreen(Box<VideoSource>, oneshot::Sender<Result<()>>),
    StopScreen(oneshot::Sender<Result<()>>),
    SetGain(f32),
    Seek(Duration, oneshot::Sender<Result<()>>),
    Enqueue(Box<Source>, oneshot::Sender<Result<()>>),
    Skip,
    /// A microphone opened off the task, with the producer of its echo reference.
    #[cfg(feature = "devices")]
    SetMicrophone(Option<Box<(Source, Option<rtrb::Producer<i16>>)>>),
    #[cfg(feature = "devices")]
    SetSpeaker(Option<Box<crate::audio::device::SpeakerOut>>),
    /// Start recording mid-call: per-speaker files in a directory, the mix (opened off the
    /// task).
    StartRecording(
        Box<(Option<PathBuf>, Option<crate::audio::MixRecorder>)>,
        oneshot::Sender<Result<()>>,
    ),
    Leave(oneshot::Sender<CallSummary>),
    /// Makes the call's task panic: how tests prove that a panic ends only that call, and that
    /// its recordings are still finalized.
    #[cfg(any(test, feature = "fault-injection"))]
    Panic,
}

/// Joins calls. Cheap to clone; calls joined through one engine are independent.
#[derive(Clone)]
pub struct Engine {
    signaling: Arc<dyn Signaling>,
    threads: Option<Arc<CallThreads>>,
}

impl Engine {
    /// Calls run as tasks on the runtime that joins them.
    pub fn new(signaling: Arc<dyn Signaling>) -> Self {
        Engine {
            signaling,
            threads: None,
        }
    }

    /// Calls run on `count` threads of the engine's own, placed in turn, instead of on the
    /// application's runtime. For a process with many calls: each call's wake-ups then wake one
    /// thread (a multi-threaded runtime also wakes a second to steal work), and the
    /// application's tasks cannot make a call's packets late. One thread per core is plenty;
    /// a 2-core machine runs 200 calls on two. The threads stop when the engine and every call
    /// joined through it are gone.
    pub fn with_call_threads(signaling: Arc<dyn Signaling>, count: usize) -> Result<Self> {
        Ok(Engine {
            signaling,
            threads: Some(CallThreads::start(count)?),
        })
    }

    /// An engine joining through `signaling` (another account, another server) whose calls
    /// run where this one's do: on the same call threads, if it has them.
    pub fn with_signaling(&self, signaling: Arc<dyn Signaling>) -> Self {
        Engine {
            signaling,
            threads: self.threads.clone(),
        }
    }

    /// How many threads of its own the engine runs calls on (0: the application's runtime).
    pub fn call_threads(&self) -> usize {
        self.threads.as_ref().map_or(0, |t| t.count())
    }

    pub fn signaling(&self) -> &Arc<dyn Signaling> {
        &self.signaling
    }

    /// Joins `call` and starts its media. Returns once the server accepted the join; the
    /// connection itself is reported by [`CallEvent::State`].
    pub async fn join(&self, call: CallRef, config: CallConfig) -> Result<Call> {
        if let Some(l) = &config.loudness {
            l.check()?;
        }
        let channels = config.encoder.channels;
        let signaling = self.signaling.clone();
        let started = match &self.threads {
            None => driver::start(signaling, call.clone(), config, None).await?,
            // The join runs on the call's thread too: its socket and timers belong to that
            // thread's runtime, and the task it spawns lands there.
            Some(threads) => threads
                .pick()
                .spawn(driver::start(
                    signaling,
                    call.clone(),
                    config,
                    Some(threads.clone()),
                ))
                .await
                .map_err(|e| {
                    Error::CallEnded(format!("the call's thread stopped during the join: {e}"))
                })??,
        };
        Ok(Call {
            position: started.position,
            channels,
            commands: started.commands,
            events: started.events,
            stats: started.stats,
            summary: started.summary,
            signaling: self.signaling.clone(),
            call,
        })
    }
}

/// One joined call. Dropping it leaves the call.
pub struct Call {
    /// The playing source's position, in microseconds, written by the call's task.
    position: Arc<std::sync::atomic::AtomicU64>,
    /// The call's channel layout (sources and recordings opened for it later use it).
    channels: crate::audio::Channels,
    commands: mpsc::Sender<Command>,
    events: EventReceiver,
    stats: watch::Receiver<CallStats>,
    /// Set by the call's task (or its watcher, after a panic) when the call ends.
    summary: Arc<OnceLock<CallSummary>>,
    signaling: Arc<dyn Signaling>,
    call: CallRef,
}

impl Call {
    /// Commands are few and the task takes them within a tick, so a full queue means the task
    /// is stuck: an error, not a wait.
    fn send(&self, c: Command) -> Result<()> {
        self.commands.try_send(c).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::CommandsFull {
                capacity: COMMAND_CAPACITY,
            },
            mpsc::error::TrySendError::Closed(_) => self.ended_error(),
        })
    }

    fn ended_error(&self) -> Error {
        match self.summary.get().and_then(|s| s.reason.as_ref()) {
            Some(reason) => Error::CallEnded(reason.to_string()),
            None => Error::CallEnded("its task has stopped".into()),
        }
    }

    /// What the call left behind, once it has ended (by [`Call::leave`] or on its own).
    pub fn summary(&self) -> Option<CallSummary> {
        self.summary.get().cloned()
    }

    /// The next event; `None` after [`CallEvent::Ended`].
    pub async fn next_event(&mut self) -> Option<CallEvent> {
        self.events.recv().await
    }

    /// Takes the call's events onto a handle of their own, so that one task waits for events
    /// while another controls the call (a binding's event loop, say). [`Call::next_event`]
    /// answers `None` from then on.
    pub fn take_events(&mut self) -> CallEvents {
        let (_, closed) = crate::events::channel(1);
        CallEvents(std::mem::replace(&mut self.events, closed))
    }

    /// An event if one is queued, without waiting.
    pub fn try_next_event(&mut self) -> Option<CallEvent> {
        self.events.try_recv()
    }

    /// The latest figures.
    pub fn stats(&self) -> CallStats {
        self.stats.borrow().clone()
    }

    /// Where in the playing source the call is: `None` with nothing playing. Paused, it
    /// stays where it was. Fresher than [`CallStats::source_position`] (refreshed every
    /// 100 ms): the call's task writes it every 20 ms tick and on every seek.
    pub fn position(&self) -> Option<Duration> {
        match self.position.load(std::sync::atomic::Ordering::Relaxed) {
            driver::NO_POSITION => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// How long the playing source is, when it says ([`CallStats::source_duration`]).
    pub fn duration(&self) -> Option<Duration> {
        self.stats().source_duration
    }

    /// The audio SSRC this participant sends with now (it changes on a rejoin).
    pub fn ssrc(&self) -> u32 {
        self.stats.borrow().ssrc
    }

    /// Stops sending at once (no RTP at all; the source keeps playing silently) and tells the
    /// server, which shows this participant muted.
    pub async fn mute(&self) -> Result<()> {
        self.set_muted(true).await
    }

    /// Tells the server, then resumes sending.
    pub async fn unmute(&self) -> Result<()> {
        self.set_muted(false).await
    }

    /// Stops (or resumes) sending without telling the server: for an application that owns
    /// the signaling and tells the server itself (`phone.editGroupCallParticipant` through
    /// its own MTProto client), so that it sees that request's answer.
    pub fn mute_locally(&self, muted: bool) -> Result<()> {
        self.send(Command::SetMuted(muted))
    }

    async fn set_muted(&self, muted: bool) -> Result<()> {
        if muted {
            self.send(Command::SetMuted(true))?;
        }
        let edit = ParticipantEdit {
            muted: Some(muted),
            ..Default::default()
        };
        self.signaling.edit_self(&self.call, &edit).await?;
        if !muted {
            self.send(Command::SetMuted(false))?;
        }
        Ok(())
    }

    /// Sets this participant's volume as others hear it (Telegram's per-participant volume,
    /// `phone.editGroupCallParticipant`): `percent` 1 to 200, 100 as sent. The audio sent is
    /// not changed; the server and clients apply it.
    pub async fn set_volume(&self, percent: u32) -> Result<()> {
        if !(1..=200).contains(&percent) {
            return Err(Error::InvalidConfig(format!(
                "volume {percent}% is out of range: give 1 to 200"
            )));
        }
        let edit = ParticipantEdit {
            volume: Some(percent * 100),
            ..Default::default()
        };
        self.signaling.edit_self(&self.call, &edit).await?;
        Ok(())
    }

    /// Holds the source where it is; nothing is sent until [`resume`](Self::resume).
    pub fn pause(&self) -> Result<()> {
        self.send(Command::SetPaused(true))
    }

    pub fn resume(&self) -> Result<()> {
        self.send(Command::SetPaused(false))
    }

    /// Publishes `source` as the camera from now on (`None` stops it), without rejoining; the
    /// participants see the camera on or off (`video_stopped`). Only a call joined with a
    /// camera ([`CallConfig::video`]) declared the camera's sources and can publish one.
    pub async fn set_video_source(&self, source: Option<VideoSource>) -> Result<()> {
        let on = source.is_some();
        let (tx, rx) = oneshot::channel();
        self.send(Command::SetVideoSource(source.map(Box::new), tx))?;
        rx.await
            .unwrap_or_else(|_| Err(Error::CallEnded("its task has stopped".into())))?;
        let edit = ParticipantEdit {
            video_stopped: Some(!on),
            ..Default::default()
        };
        self.signaling.edit_self(&self.call, &edit).await?;
        Ok(())
    }

    /// Shares a screen: `source` goes out on the presentation connection (two simulcast
    /// layers) beside the camera and the sound, as Telegram's clients share one. Returns once
    /// the server took the share; a share already running is replaced.
    pub async fn share_screen(&self, source: VideoSource) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::ShareScreen(Box::new(source), tx))?;
        rx.await
            .unwrap_or_else(|_| Err(Error::CallEnded("its task has stopped".into())))
    }

    /// Ends the screen share (nothing to do without one).
    pub async fn stop_screen(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::StopScreen(tx))?;
        rx.await
            .unwrap_or_else(|_| Err(Error::CallEnded("its task has stopped".into())))
    }

    /// Receives only the video `subscription` asks for, from now on (the server sends each
    /// endpoint the simulcast layer that suits its height). Needs a call that takes video
    /// ([`CallConfig::video_sink`] or `record_video_dir`) or publishes it: others have no data
    /// channel to say it on.
    pub fn subscribe_video(&self, subscription: VideoSubscription) -> Result<()> {
        self.send(Command::SubscribeVideo(subscription))
    }

    /// Holds the camera on its last picture (`video_paused`): pictures are read but not sent.
    pub async fn set_video_paused(&self, paused: bool) -> Result<()> {
        self.send(Command::SetVideoPaused(paused))?;
        let edit = ParticipantEdit {
            video_paused: Some(paused),
            ..Default::default()
        };
        self.signaling.edit_self(&self.call, &edit).await?;
        Ok(())
    }

    /// Plays `source` from now on, without rejoining. The replaced source ends silently.
    pub fn set_source(&self, source: Option<Source>) -> Result<()> {
        self.send(Command::SetSource(source.map(Box::new)))
    }

    /// Plays `source` after the current one (and after those queued before it), with no gap:
    /// it takes over within the tick the previous one ends, and each finished source still
    /// gets its own [`CallEvent::SourceEnded`]. With nothing playing it starts at once. A queue
    /// holds at most 64 sources (each is open from the moment it is made); past that this
    /// returns [`Error::QueueFull`].
    pub async fn enqueue(&self, source: Source) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Enqueue(Box::new(source), tx))?;
        rx.await
            .unwrap_or_else(|_| Err(Error::CallEnded("its task has stopped".into())))
    }

    /// Ends the playing source now and plays the next queued one, or nothing. The skipped
    /// source reports [`CallEvent::SourceEnded`] as one that played out does: one end per
    /// source, whichever way it stopped.
    pub fn skip(&self) -> Result<()> {
        self.send(Command::Skip)
    }

    /// Switches to another microphone (or, with `None`, stops sending one), keeping the
    /// call: the new device is opened before the old one is let go, off the call's task. The
    /// speaker's sound is cancelled from it when the call has a speaker.
    #[cfg(feature = "devices")]
    pub async fn set_input_device(
        &self,
        config: Option<crate::audio::device::MicrophoneConfig>,
    ) -> Result<()> {
        let Some(config) = config else {
            return self.send(Command::SetMicrophone(None));
        };
        let options = crate::audio::SourceOptions {
            channels: self.channels,
            looping: false,
        };
        let opened = tokio::task::spawn_blocking(move || {
            let (tx, rx) = if config.processing.echo_cancellation {
                let (tx, rx) = crate::audio::device::echo_path();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            Source::microphone_with_echo(&config, rx, options).map(|s| (s, tx))
        })
        .await
        .map_err(|e| Error::Device {
            device: "microphone".into(),
            reason: format!("the task that opened it failed: {e}"),
        })??;
        self.send(Command::SetMicrophone(Some(Box::new(opened))))
    }

    /// Switches to another speaker (or, with `None`, plays to none), keeping the call.
    #[cfg(feature = "devices")]
    pub async fn set_output_device(
        &self,
        config: Option<crate::audio::device::SpeakerConfig>,
    ) -> Result<()> {
        let Some(config) = config else {
            return self.send(Command::SetSpeaker(None));
        };
        let out =
            tokio::task::spawn_blocking(move || crate::audio::device::open_speaker(&config, None))
                .await
                .map_err(|e| Error::Device {
                    device: "speaker".into(),
                    reason: format!("the task that opened it failed: {e}"),
                })??;
        self.send(Command::SetSpeaker(Some(Box::new(out))))
    }

    /// Starts recording now: one file per speaker in `dir` (named as with
    /// [`CallConfig::record_dir`]) and/or the mix into `mix`. Each file starts with the next
    /// 20 ms, so a recording started mid-call holds the call from then on. Files are created
    /// before this returns (off the call's task); recording what is already recorded is an
    /// error. They are closed, and listed in the summary, when the call ends.
    pub async fn record(&self, dir: Option<PathBuf>, mix: Option<PathBuf>) -> Result<()> {
        if dir.is_none() && mix.is_none() {
            return Err(Error::InvalidConfig(
                "record needs a directory for per-speaker files, a mix file, or both".into(),
            ));
        }
        let (channels, format) = (self.channels, FileFormat::Wav);
        let opened = tokio::task::spawn_blocking(move || -> Result<_> {
            if let Some(d) = &dir {
                std::fs::create_dir_all(d).map_err(|source| Error::CreateSink {
                    path: d.clone(),
                    source,
                })?;
            }
            let mix = mix
                .map(|p| crate::audio::MixRecorder::create(p, format, channels))
                .transpose()?;
            Ok((dir, mix))
        })
        .await
        .map_err(|e| {
            Error::InvalidConfig(format!("the task that opened the files failed: {e}"))
        })??;
        let (tx, rx) = oneshot::channel();
        self.send(Command::StartRecording(Box::new(opened), tx))?;
        rx.await
            .unwrap_or_else(|_| Err(Error::CallEnded("its task has stopped".into())))
    }

    /// Goes to `to` in the playing source (see [`Source::seek`]). Answers once the call's
    /// task has asked the source: an error says why it cannot (a stream, no source, ended).
    /// [`CallStats::source_position`] then counts from `to`.
    pub async fn seek(&self, to: Duration) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Seek(to, tx))?;
        rx.await
            .unwrap_or_else(|_| Err(Error::CallEnded("its task has stopped".into())))
    }

    /// Makes the call's task panic (test builds with the `fault-injection` feature only).
    #[cfg(any(test, feature = "fault-injection"))]
    #[doc(hidden)]
    pub fn inject_panic(&self) -> Result<()> {
        self.send(Command::Panic)
    }

    /// Gain applied to the received mix (1.0 unchanged).
    pub fn set_gain(&self, gain: f32) -> Result<()> {
        if !gain.is_finite() || gain < 0.0 {
            return Err(Error::InvalidConfig(format!(
                "gain {gain} must be a finite number >= 0"
            )));
        }
        self.send(Command::SetGain(gain))
    }

    /// Leaves the call, closes the recordings and returns what was recorded. After a call
    /// ended on its own (discarded, rejoining gave up, an internal failure) this returns that
    /// call's summary.
    pub async fn leave(mut self) -> Result<CallSummary> {
        self.events.close();
        if let Some(s) = self.summary.get() {
            return Ok(s.clone());
        }
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).await.is_err() {
            return self
                .summary
                .get()
                .cloned()
                .ok_or_else(|| self.ended_error());
        }
        match rx.await {
            Ok(summary) => Ok(summary),
            // The task ended (on its own, or by a panic) before it took the command: its
            // summary, if it got to write one, is the answer.
            Err(_) => self
                .summary
                .get()
                .cloned()
                .ok_or_else(|| self.ended_error()),
        }
    }
}
