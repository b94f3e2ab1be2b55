//! The public async API: an [`Engine`] joins calls through a signaling backend and hands back a
//! [`Call`] to control it and to read its [`CallEvent`]s.
//!
//! Each call runs in its own tokio task (the driver, `driver.rs`), which owns its socket, its
//! transport and its audio. A `Call` talks to it over channels, so a call that fails, or even
//! panics, ends only itself: the application gets [`CallEvent::Ended`] and carries on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use groupcall_media::TransportConfig;
use groupcall_signaling::{CallRef, JoinOptions, ParticipantEdit, PeerId, Signaling};
use tokio::sync::{mpsc, oneshot, watch};

use crate::audio::{AppSink, EncoderConfig, FileFormat, JitterConfig, Source};
use crate::driver;
use crate::error::{Error, Result};

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
    /// One file per speaker in this directory (`peer<PEER>_ssrc<SSRC>.wav`).
    pub record_dir: Option<PathBuf>,
    /// The mix of every speaker in one file.
    pub record_mix: Option<PathBuf>,
    pub record_format: FileFormat,
    /// Received frames handed to the application, per speaker.
    pub app_sink: Option<AppSink>,
    pub jitter: JitterConfig,
    /// How long audio from an SSRC that the roster has not named yet is held back, waiting
    /// for its owner's name, before it goes out without one.
    pub hold_unknown: Duration,
    pub transport: TransportConfig,
    pub rejoin: RejoinPolicy,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            join: JoinOptions::default(),
            muted: None,
            source: None,
            encoder: EncoderConfig::default(),
            record_dir: None,
            record_mix: None,
            record_format: FileFormat::Wav,
            app_sink: None,
            jitter: JitterConfig::default(),
            hold_unknown: Duration::from_secs(2),
            transport: TransportConfig::default(),
            rejoin: RejoinPolicy::default(),
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// ICE and DTLS under way.
    Connecting,
    /// Media flows.
    Connected,
    /// Nothing heard from the server for a while; recovers by itself or fails.
    Disconnected,
    /// The connection was lost (`reason`); joining again, attempt `attempt`.
    Rejoining { attempt: u32, reason: String },
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
        error: String,
    },
    /// A recording or the application sink failed. Audio is not silently lost: this says so.
    RecordingError {
        error: String,
    },
    /// The call is over for this participant; no more events follow.
    Ended {
        reason: EndReason,
    },
}

/// Why a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// [`Call::leave`] (or the `Call` was dropped).
    Left,
    /// The call was ended for everyone.
    Discarded,
    /// The same account joined from elsewhere.
    JoinedElsewhere,
    /// Rejoining failed `attempts` times in a row; `error` is the last failure.
    RejoinFailed { attempts: u32, error: String },
    /// A bug in the engine ended this call's task; other calls are unaffected.
    Internal(String),
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
}

/// A snapshot of a call's figures, refreshed every 100 ms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallStats {
    pub connected: bool,
    pub ssrc: u32,
    pub muted: bool,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Datagrams dropped by the transport (malformed, forged, replayed, not ready).
    pub dropped: u64,
    pub rejoins: u32,
    /// Frames a recording or the application sink failed to take. The first failure of each
    /// sink is also a [`CallEvent::RecordingError`].
    pub recording_errors: u64,
    pub speakers: Vec<SpeakerStats>,
}

/// What a call left behind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallSummary {
    pub stats: CallStats,
    /// Per-speaker recordings, with the SSRC they hold.
    pub recordings: Vec<(u32, PathBuf)>,
    pub mix: Option<PathBuf>,
    /// Errors closing recordings.
    pub errors: Vec<String>,
}

pub(crate) enum Command {
    SetMuted(bool),
    SetPaused(bool),
    SetSource(Option<Source>),
    SetGain(f32),
    Leave(oneshot::Sender<CallSummary>),
}

/// Joins calls. Cheap to clone; calls joined through one engine are independent.
#[derive(Clone)]
pub struct Engine {
    signaling: Arc<dyn Signaling>,
}

impl Engine {
    pub fn new(signaling: Arc<dyn Signaling>) -> Self {
        Engine { signaling }
    }

    pub fn signaling(&self) -> &Arc<dyn Signaling> {
        &self.signaling
    }

    /// Joins `call` and starts its media. Returns once the server accepted the join; the
    /// connection itself is reported by [`CallEvent::State`].
    pub async fn join(&self, call: CallRef, config: CallConfig) -> Result<Call> {
        let started = driver::start(self.signaling.clone(), call.clone(), config).await?;
        Ok(Call {
            commands: started.commands,
            events: started.events,
            stats: started.stats,
            signaling: self.signaling.clone(),
            call,
        })
    }
}

/// One joined call. Dropping it leaves the call.
pub struct Call {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<CallEvent>,
    stats: watch::Receiver<CallStats>,
    signaling: Arc<dyn Signaling>,
    call: CallRef,
}

impl Call {
    fn send(&self, c: Command) -> Result<()> {
        self.commands
            .send(c)
            .map_err(|_| Error::CallEnded("its task has stopped".into()))
    }

    /// The next event; `None` after [`CallEvent::Ended`].
    pub async fn next_event(&mut self) -> Option<CallEvent> {
        self.events.recv().await
    }

    /// An event if one is queued, without waiting.
    pub fn try_next_event(&mut self) -> Option<CallEvent> {
        self.events.try_recv().ok()
    }

    /// The latest figures.
    pub fn stats(&self) -> CallStats {
        self.stats.borrow().clone()
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

    /// Holds the source where it is; nothing is sent until [`resume`](Self::resume).
    pub fn pause(&self) -> Result<()> {
        self.send(Command::SetPaused(true))
    }

    pub fn resume(&self) -> Result<()> {
        self.send(Command::SetPaused(false))
    }

    /// Plays `source` from now on, without rejoining. The replaced source ends silently.
    pub fn set_source(&self, source: Option<Source>) -> Result<()> {
        self.send(Command::SetSource(source))
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

    /// Leaves the call, closes the recordings and returns what was recorded.
    pub async fn leave(mut self) -> Result<CallSummary> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Leave(tx))?;
        let summary = rx
            .await
            .map_err(|_| Error::CallEnded("its task stopped while leaving".into()))?;
        // Drain what is left so that the task is not kept alive by a full queue.
        self.events.close();
        Ok(summary)
    }
}
