//! The lifecycle of one call as a plain state machine: no sockets, no tasks, no clock.
//!
//! The driver (`driver.rs`) feeds it what happened ([`Input`]) and the time, and carries out what
//! it asks for ([`Action`]): close the transport, send a join, fetch the roster, ask
//! `checkGroupCall`, subscribe to updates again, tell the application. Everything that decides
//! *when* a call rejoins, gives up or ends lives here, so it is tested on virtual time
//! (`tests` below) rather than through sockets and sleeps.
//!
//! Media pipelines (the audio sender and receivers today, video later, a presentation
//! connection) are not in here: they are components the driver owns, and this machine only
//! tells the driver when the connection they run on is replaced or gone, and which SSRCs the
//! roster names or drops.
//!
//! The phases:
//!
//! ```text
//!            join accepted                 transport connected
//!  (start) ─────────────▶ Connecting ────────────────────────▶ Connected
//!                            │  ▲                               │    ▲
//!            transport failed│  │join accepted     consent lost │    │ recovered
//!                            ▼  │                               ▼    │
//!                          Rejoining ◀──── failed / removed ── Disconnected
//!                            │         / not counted (poll)      (polls checkGroupCall)
//!            policy gives up │
//!                            ▼
//!                          Ended ◀── discarded, joined elsewhere, left (from any phase)
//! ```
//!
//! Rejoin triggers (docs/protocol.md §7.4): the transport fails (ICE consent or DTLS), the
//! socket fails, the server reports our own source as left, `checkGroupCall` no longer lists
//! our source while we are disconnected (§7.3), or the server sends an unsolicited connection
//! answer for our join. Roster upkeep (§7.6): updates are applied in `version` order; a gap in
//! the versions, a lagged subscription or a resubscription refetches the whole roster; an
//! update stream that ends is resubscribed with backoff instead of leaving the roster frozen.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use groupcall_media::ServerAnswer;
use groupcall_signaling::{
    CallId, Participant, ParticipantQuery, ParticipantVideo, PeerId, SignalingUpdate,
};

use crate::video::publish::VideoKind;

use crate::call::{
    CallEvent, ConnectionState, EndReason, ParticipantInfo, RejoinCause, RejoinPolicy, VideoState,
};
use crate::error::{Error, SharedError};

/// While disconnected, how often `checkGroupCall` asks whether the server still counts us (as
/// Telegram's desktop client does; docs/protocol.md §7.3).
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(4);
/// First wait before subscribing to updates again after the stream ended; doubles up to the max.
const RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(1);
const RESUBSCRIBE_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The most participants the roster keeps. Telegram's voice chats have thousands of listeners
/// at most; past this bound new entries are not tracked (and counted), so a hostile or buggy
/// server cannot grow the map without limit.
pub(crate) const MAX_ROSTER: usize = 20_000;

/// What happened, as the driver saw it.
#[derive(Debug)]
pub(crate) enum Input {
    /// The transport finished ICE and DTLS on the current connection.
    Connected,
    /// The transport stopped hearing the server but may recover.
    Disconnected,
    /// The transport recovered from [`Input::Disconnected`].
    Recovered,
    /// The connection is dead: the transport failed for good, or its socket did.
    ConnectionLost(RejoinCause),
    /// A join the machine asked for was accepted and its new transport is set up (`ssrc` is
    /// the new audio source).
    Joined {
        ssrc: u32,
        call: Option<CallId>,
    },
    /// A join the machine asked for failed.
    JoinFailed(Error),
    Update(SignalingUpdate),
    /// The update stream returned `None`: the backend will send no more on it.
    UpdatesClosed,
    /// The driver subscribed to updates again after [`Action::Resubscribe`].
    Resubscribed,
    /// `checkGroupCall` answered for `source`.
    Checked {
        source: u32,
        present: bool,
    },
    /// A roster fetch answered. `complete` is true when these are all participants (every page
    /// of an unfiltered fetch), so that those missing from it have left.
    Roster {
        participants: Vec<Participant>,
        version: Option<i32>,
        complete: bool,
    },
    /// A full roster fetch failed; the next trigger may try again.
    RosterFailed,
}

/// What the driver must do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Hand this to the application.
    Emit(CallEvent),
    /// Drop the current transport and socket (after closing them politely).
    CloseConnection,
    /// Send a join with a fresh payload; answer with [`Input::Joined`] or [`Input::JoinFailed`].
    Join,
    /// Ask the server for participants; answer with [`Input::Roster`]. An unfiltered query
    /// means every page.
    FetchRoster(ParticipantQuery),
    /// Ask `checkGroupCall` about this source; answer with [`Input::Checked`].
    Check(u32),
    /// Subscribe to the backend's updates again; answer with [`Input::Resubscribed`].
    Resubscribe,
    /// The roster names the sender of `ssrc`.
    Named { ssrc: u32, peer: PeerId },
    /// `ssrc`'s sender left: free whatever is kept for it.
    Gone { ssrc: u32 },
    /// What `owner` publishes as `kind` changed: `video` is the stream to receive, `None` when
    /// it stopped.
    Video {
        owner: u32,
        kind: VideoKind,
        video: Option<ParticipantVideo>,
    },
    /// The call is over; nothing more will be asked.
    End(EndReason),
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// A transport exists and is connecting. `rejoin` is the attempt that made it, if any: it
    /// only counts as a successful rejoin once it connects.
    Connecting {
        rejoin: Option<u32>,
    },
    Connected,
    Disconnected {
        next_check: Instant,
    },
    /// No transport. `join_at` is when the next join goes out; `None` while it is in flight.
    Rejoining {
        attempt: u32,
        cause: RejoinCause,
        join_at: Option<Instant>,
    },
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Updates {
    Open,
    /// The stream ended; resubscribe at `at` (attempt `n`, for the backoff).
    Closed {
        at: Instant,
        n: u32,
    },
    /// [`Action::Resubscribe`] is out.
    Resubscribing {
        n: u32,
    },
}

/// The call's lifecycle and roster.
pub(crate) struct Machine {
    policy: RejoinPolicy,
    phase: Phase,
    call_id: Option<CallId>,
    own_ssrc: u32,
    roster: HashMap<u32, Participant>,
    /// The participants version last applied (docs/protocol.md §7.6).
    version: Option<i32>,
    updates: Updates,
    /// A full roster fetch is out: no second one until it answers.
    refetching: bool,
    rejoins: u32,
    roster_overflow: u64,
    actions: VecDeque<Action>,
}

impl Machine {
    /// A machine for a call whose first join was accepted with `ssrc`; its transport is
    /// connecting. Asks for the roster at once.
    pub(crate) fn new(policy: RejoinPolicy, ssrc: u32, call_id: Option<CallId>) -> Self {
        let mut m = Machine {
            policy,
            phase: Phase::Connecting { rejoin: None },
            call_id,
            own_ssrc: ssrc,
            roster: HashMap::new(),
            version: None,
            updates: Updates::Open,
            refetching: false,
            rejoins: 0,
            roster_overflow: 0,
            actions: VecDeque::new(),
        };
        m.emit(CallEvent::State(ConnectionState::Connecting));
        m.refetch();
        m
    }

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next instant [`Machine::handle_timeout`] has something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let phase = match &self.phase {
            Phase::Disconnected { next_check } => Some(*next_check),
            Phase::Rejoining { join_at, .. } => *join_at,
            _ => None,
        };
        let updates = match self.updates {
            Updates::Closed { at, .. } => Some(at),
            _ => None,
        };
        match (phase, updates) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Disconnected { next_check } if *next_check <= now => {
                *next_check = now + CHECK_INTERVAL;
                self.actions.push_back(Action::Check(self.own_ssrc));
            }
            Phase::Rejoining { join_at, .. } if join_at.is_some_and(|t| t <= now) => {
                *join_at = None;
                self.actions.push_back(Action::Join);
            }
            _ => {}
        }
        if let Updates::Closed { at, n } = self.updates {
            if at <= now && !self.is_ended() {
                self.updates = Updates::Resubscribing { n };
                self.actions.push_back(Action::Resubscribe);
            }
        }
    }

    pub(crate) fn handle(&mut self, now: Instant, input: Input) {
        if self.is_ended() {
            return;
        }
        match input {
            Input::Connected => {
                if let Phase::Connecting { rejoin } = &self.phase {
                    if rejoin.is_some() {
                        self.rejoins += 1;
                    }
                    self.phase = Phase::Connected;
                    self.emit(CallEvent::State(ConnectionState::Connected));
                }
            }
            Input::Disconnected => {
                if self.phase == Phase::Connected {
                    self.phase = Phase::Disconnected {
                        next_check: now + CHECK_INTERVAL,
                    };
                    self.emit(CallEvent::State(ConnectionState::Disconnected));
                }
            }
            Input::Recovered => {
                if matches!(self.phase, Phase::Disconnected { .. }) {
                    self.phase = Phase::Connected;
                    self.emit(CallEvent::State(ConnectionState::Connected));
                }
            }
            Input::ConnectionLost(cause) => {
                if self.has_connection() {
                    self.lose_connection(now, cause);
                }
            }
            Input::Joined { ssrc, call } => self.on_joined(ssrc, call),
            Input::JoinFailed(error) => self.on_join_failed(now, error),
            Input::Update(u) => self.on_update(now, u),
            Input::UpdatesClosed => self.on_updates_closed(now),
            Input::Resubscribed => {
                self.updates = Updates::Open;
                // Whatever happened while no stream was open is only in a full fetch.
                self.refetch();
            }
            Input::Checked { source, present } => {
                if !present
                    && source == self.own_ssrc
                    && matches!(self.phase, Phase::Disconnected { .. })
                {
                    self.lose_connection(now, RejoinCause::NotCountedByServer);
                }
            }
            Input::Roster {
                participants,
                version,
                complete,
            } => self.on_roster(participants, version, complete),
            Input::RosterFailed => self.refetching = false,
        }
    }

    /// Leaving was asked for: nothing more happens.
    pub(crate) fn leave(&mut self) {
        self.phase = Phase::Ended;
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Whether a transport exists now (connecting, connected or disconnected).
    pub(crate) fn has_connection(&self) -> bool {
        matches!(
            self.phase,
            Phase::Connecting { .. } | Phase::Connected | Phase::Disconnected { .. }
        )
    }

    pub(crate) fn own_ssrc(&self) -> u32 {
        self.own_ssrc
    }

    pub(crate) fn rejoins(&self) -> u32 {
        self.rejoins
    }

    /// Roster entries not tracked because the roster was full.
    pub(crate) fn roster_overflow(&self) -> u64 {
        self.roster_overflow
    }

    pub(crate) fn peer(&self, ssrc: u32) -> Option<PeerId> {
        self.roster.get(&ssrc).map(|p| p.peer)
    }

    /// Whether the roster names `ssrc`'s sender.
    pub(crate) fn is_known(&self, ssrc: u32) -> bool {
        self.roster.contains_key(&ssrc)
    }

    fn emit(&mut self, e: CallEvent) {
        self.actions.push_back(Action::Emit(e));
    }

    fn end(&mut self, reason: EndReason) {
        self.phase = Phase::Ended;
        self.actions.push_back(Action::End(reason));
    }

    fn is_our_call(&self, call: &CallId) -> bool {
        self.call_id.is_none_or(|id| id.id == call.id)
    }

    fn refetch(&mut self) {
        if !self.refetching {
            self.refetching = true;
            self.actions
                .push_back(Action::FetchRoster(ParticipantQuery::default()));
        }
    }

    /// The connection is gone: close it and schedule the first (or next) rejoin.
    fn lose_connection(&mut self, now: Instant, cause: RejoinCause) {
        self.actions.push_back(Action::CloseConnection);
        // A connection that a rejoin made but that never connected continues that count.
        let attempt = match &self.phase {
            Phase::Connecting { rejoin: Some(n) } => n + 1,
            _ => 1,
        };
        self.schedule_rejoin(now, attempt, cause, Duration::ZERO);
    }

    fn schedule_rejoin(
        &mut self,
        now: Instant,
        attempt: u32,
        cause: RejoinCause,
        at_least: Duration,
    ) {
        if attempt > self.policy.max_attempts {
            self.end(EndReason::RejoinFailed {
                attempts: attempt - 1,
                cause,
            });
            return;
        }
        let wait = self.policy.backoff(attempt).max(at_least);
        self.emit(CallEvent::State(ConnectionState::Rejoining {
            attempt,
            cause: cause.clone(),
        }));
        self.phase = Phase::Rejoining {
            attempt,
            cause,
            join_at: Some(now + wait),
        };
    }

    fn on_joined(&mut self, ssrc: u32, call: Option<CallId>) {
        let Phase::Rejoining {
            attempt,
            join_at: None,
            ..
        } = self.phase
        else {
            return;
        };
        let rejoin = Some(attempt);
        self.own_ssrc = ssrc;
        if call.is_some() {
            self.call_id = call;
        }
        self.phase = Phase::Connecting { rejoin };
        self.emit(CallEvent::Rejoined { ssrc });
        self.emit(CallEvent::State(ConnectionState::Connecting));
        if let Some(p) = self.roster.remove(&ssrc) {
            // Someone else's entry with our new SSRC cannot be current.
            self.actions.push_back(Action::Gone { ssrc: p.source });
        }
    }

    fn on_join_failed(&mut self, now: Instant, error: Error) {
        let Phase::Rejoining {
            attempt,
            join_at: None,
            ..
        } = &self.phase
        else {
            return;
        };
        let attempt = *attempt;
        let flood = match &error {
            Error::Signaling(groupcall_signaling::Error::FloodWait { seconds, .. }) => {
                Duration::from_secs(u64::from(*seconds))
            }
            _ => Duration::ZERO,
        };
        let over = matches!(&error, Error::Signaling(s) if s.is_call_over());
        let cause = RejoinCause::JoinFailed {
            error: SharedError::from(error),
        };
        if over {
            // Rejoining a call that is over or shut to us cannot help.
            self.end(EndReason::RejoinFailed {
                attempts: attempt,
                cause,
            });
            return;
        }
        self.schedule_rejoin(now, attempt + 1, cause, flood);
    }

    fn on_updates_closed(&mut self, now: Instant) {
        let n = match self.updates {
            Updates::Open => 0,
            Updates::Closed { n, .. } | Updates::Resubscribing { n } => n + 1,
        };
        let wait = RESUBSCRIBE_BACKOFF
            .saturating_mul(1 << n.min(5))
            .min(RESUBSCRIBE_BACKOFF_MAX);
        self.updates = Updates::Closed { at: now + wait, n };
    }

    fn on_update(&mut self, now: Instant, update: SignalingUpdate) {
        match update {
            SignalingUpdate::Participants {
                call,
                version,
                participants,
            } if self.is_our_call(&call) => {
                match self.version {
                    // A source that does not number its updates (stdio without "version"):
                    // applied as it comes, with no gap to detect.
                    _ if version <= 0 => {}
                    // Older than what we have: a full fetch or a later update already said more.
                    Some(v) if version < v => return,
                    // Versions were skipped: updates were missed, and only a full fetch has them.
                    Some(v) if version > v.saturating_add(1) => self.refetch(),
                    _ => {}
                }
                if version > 0 {
                    self.version = Some(self.version.map_or(version, |v| v.max(version)));
                }
                for p in participants {
                    self.apply(p);
                }
            }
            SignalingUpdate::CallDiscarded { call } if self.is_our_call(&call) => {
                self.end(EndReason::Discarded)
            }
            SignalingUpdate::SelfRemoved { call, source }
                if self.is_our_call(&call) && source == self.own_ssrc && self.has_connection() =>
            {
                self.lose_connection(now, RejoinCause::RemovedByServer)
            }
            SignalingUpdate::JoinedElsewhere { call, .. } if self.is_our_call(&call) => {
                self.end(EndReason::JoinedElsewhere)
            }
            SignalingUpdate::Lagged { .. } => self.refetch(),
            SignalingUpdate::Ended { call, .. } if call.is_none_or(|c| self.is_our_call(&c)) => {
                self.on_updates_closed(now)
            }
            SignalingUpdate::Connection {
                presentation: false,
                answer,
                answer_json,
            } if self.has_connection() => match *answer {
                // The server moved us to a broadcast: this engine cannot follow there.
                ServerAnswer::Rtc(_) => self.lose_connection(now, RejoinCause::ConnectionReplaced),
                _ => self.end(EndReason::Unsupported {
                    error: SharedError::from(Error::StreamUnsupported {
                        answer: answer_json,
                    }),
                }),
            },
            _ => {}
        }
    }

    fn on_roster(&mut self, participants: Vec<Participant>, version: Option<i32>, complete: bool) {
        if complete {
            self.refetching = false;
            let present: std::collections::HashSet<u32> = participants
                .iter()
                .filter(|p| !p.left)
                .map(|p| p.source)
                .collect();
            let gone: Vec<u32> = self
                .roster
                .keys()
                .filter(|s| !present.contains(s))
                .copied()
                .collect();
            for ssrc in gone {
                if let Some(p) = self.roster.remove(&ssrc) {
                    self.actions.push_back(Action::Gone { ssrc });
                    self.video_gone(&p);
                    self.emit(CallEvent::ParticipantLeft(info(&p)));
                }
            }
            if let Some(v) = version.filter(|&v| v > 0) {
                self.version = Some(self.version.map_or(v, |old| old.max(v)));
            }
        }
        for p in participants {
            self.apply(p);
        }
    }

    fn apply(&mut self, mut p: Participant) {
        if p.source == self.own_ssrc || p.source == 0 {
            return;
        }
        if p.left {
            if let Some(old) = self.roster.remove(&p.source) {
                self.actions.push_back(Action::Gone { ssrc: p.source });
                self.video_gone(&old);
                self.emit(CallEvent::ParticipantLeft(info(&p)));
            }
            return;
        }
        if let Some(old) = self.roster.get(&p.source).filter(|_| p.min) {
            // A partial entry says nothing about video: keep what we knew.
            p.video = old.video.clone();
            p.presentation = old.presentation.clone();
            p.video_stopped = old.video_stopped;
        }
        match self.roster.get(&p.source) {
            None => {
                if self.roster.len() >= MAX_ROSTER {
                    self.roster_overflow += 1;
                    return;
                }
                self.actions.push_back(Action::Named {
                    ssrc: p.source,
                    peer: p.peer,
                });
                self.emit(CallEvent::ParticipantJoined(info(&p)));
                self.video_changes(None, &p);
                self.roster.insert(p.source, p);
            }
            Some(old) if old.muted != p.muted || old.peer != p.peer => {
                if old.peer != p.peer {
                    self.actions.push_back(Action::Named {
                        ssrc: p.source,
                        peer: p.peer,
                    });
                }
                self.emit(CallEvent::ParticipantUpdated(info(&p)));
                let old = self.roster.insert(p.source, p.clone());
                self.video_changes(old.as_ref(), &p);
            }
            Some(_) => {
                let old = self.roster.insert(p.source, p.clone());
                self.video_changes(old.as_ref(), &p);
            }
        }
    }

    /// A participant who leaves stops its camera and screen first, as far as events go.
    fn video_gone(&mut self, p: &Participant) {
        let mut gone = p.clone();
        gone.video = None;
        gone.presentation = None;
        self.video_changes(Some(p), &gone);
    }

    /// Events and receiver changes for a participant's camera and screen, from its previous
    /// roster entry (`None` when new).
    fn video_changes(&mut self, old: Option<&Participant>, p: &Participant) {
        for kind in [VideoKind::Camera, VideoKind::Screen] {
            let of = |p: &Participant| match kind {
                VideoKind::Camera => p.video.clone().filter(|_| !p.video_stopped),
                VideoKind::Screen => p.presentation.clone(),
            };
            let (before, now) = (old.and_then(of), of(p));
            let state = |v: &Option<ParticipantVideo>| match v {
                None => VideoState::Stopped,
                Some(v) if v.paused => VideoState::Paused,
                Some(_) => VideoState::Started,
            };
            if state(&before) != state(&now) {
                self.emit(CallEvent::Video {
                    source: p.source,
                    peer: p.peer,
                    kind,
                    state: state(&now),
                });
            }
            let groups = |v: &Option<ParticipantVideo>| v.as_ref().map(|v| v.source_groups.clone());
            if groups(&before) != groups(&now) {
                self.actions.push_back(Action::Video {
                    owner: p.source,
                    kind,
                    video: now,
                });
            }
        }
    }
}

fn info(p: &Participant) -> ParticipantInfo {
    ParticipantInfo {
        peer: p.peer,
        source: p.source,
        muted: p.muted,
    }
}

#[cfg(test)]
mod tests;
