//! The backend-neutral vocabulary of signaling: peers, calls, participants, options, updates.
//!
//! Both backends speak in these types so that the engine never sees TL or HTTP shapes. Telegram's
//! wire conventions that matter to media (signed 32-bit `source` values) are converted here, once.

use std::fmt;

use groupcall_media::{JoinPayload, ServerAnswer};

/// A Telegram peer: who a participant is, or where a call lives.
///
/// Bare ids as Telegram's API uses them; [`PeerId::dialog_id`] gives the single-number form the
/// Bot API and the local server use (users positive, basic groups negated, channels `-100…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerId {
    User(i64),
    /// A basic group (`chat`).
    Chat(i64),
    /// A supergroup, gigagroup or broadcast channel.
    Channel(i64),
}

/// The Bot API offset that marks a channel id (`-100` followed by the bare id).
const CHANNEL_DIALOG_OFFSET: i64 = 1_000_000_000_000;

impl PeerId {
    /// Parses the single-number dialog id form: `> 0` user, `-1…-999999999999` basic group,
    /// `< -1000000000000` channel. `0` is no peer.
    pub fn from_dialog_id(id: i64) -> Option<PeerId> {
        if id > 0 {
            Some(PeerId::User(id))
        } else if id < -CHANNEL_DIALOG_OFFSET {
            // i64::MIN has no negation: not a peer.
            id.checked_neg()
                .map(|n| PeerId::Channel(n - CHANNEL_DIALOG_OFFSET))
        } else if id < 0 {
            Some(PeerId::Chat(-id))
        } else {
            None
        }
    }

    /// The single-number dialog id form (see [`PeerId::from_dialog_id`]).
    pub fn dialog_id(self) -> i64 {
        match self {
            PeerId::User(id) => id,
            PeerId::Chat(id) => -id,
            PeerId::Channel(id) => -(CHANNEL_DIALOG_OFFSET + id),
        }
    }

    /// The bare id without its kind.
    pub fn bare_id(self) -> i64 {
        match self {
            PeerId::User(id) | PeerId::Chat(id) | PeerId::Channel(id) => id,
        }
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerId::User(id) => write!(f, "user {id}"),
            PeerId::Chat(id) => write!(f, "group {id} (dialog id {})", self.dialog_id()),
            PeerId::Channel(id) => write!(f, "channel {id} (dialog id {})", self.dialog_id()),
        }
    }
}

/// A group call's identity as the server hands it out (`inputGroupCall`). The local server
/// routes by `id` alone; Telegram also checks `access_hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallId {
    pub id: i64,
    pub access_hash: i64,
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call {}", self.id)
    }
}

/// How a caller names the call to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallRef {
    /// A call whose id and access hash are known (from a chat's full info, an update, a create).
    Id(CallId),
    /// A call link slug (`t.me/call/<slug>`), Telegram's conference calls. Telegram only.
    Slug(String),
}

impl CallRef {
    /// The call id when it is known without asking the server.
    pub fn id(&self) -> Option<CallId> {
        match self {
            CallRef::Id(c) => Some(*c),
            CallRef::Slug(_) => None,
        }
    }
}

impl From<CallId> for CallRef {
    fn from(c: CallId) -> Self {
        CallRef::Id(c)
    }
}

impl fmt::Display for CallRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallRef::Id(c) => c.fmt(f),
            CallRef::Slug(s) => write!(f, "call link {s:?}"),
        }
    }
}

/// A call's public state (Telegram's `groupCall` / `groupCallDiscarded`, the local `Call`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    pub id: CallId,
    pub title: Option<String>,
    /// Unix time the call is scheduled to start, while it has not started.
    pub schedule_date: Option<i32>,
    /// An RTMP livestream: joining gives a stream answer, not RTC.
    pub rtmp_stream: bool,
    pub started: bool,
    pub discarded: bool,
    pub participants_count: i32,
    /// Participant-list version; updates with a higher version supersede this snapshot.
    pub version: i32,
    /// New participants join muted and must raise a hand to speak.
    pub join_muted: bool,
    /// The DC that serves broadcast chunks (stream mode), Telegram only.
    pub stream_dc_id: Option<i32>,
}

/// A call plus the first page of its participants (`phone.getGroupCall`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallState {
    pub call: CallInfo,
    pub participants: Vec<Participant>,
    /// Pass to [`ParticipantQuery::offset`] for the next page; `None` when complete.
    pub next_offset: Option<String>,
}

/// One participant of a call (`groupCallParticipant`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    pub peer: PeerId,
    /// The participant's audio SSRC. Telegram sends it as a signed 32-bit number; RTP packets
    /// carry it unsigned, so it is reinterpreted (`as u32`) here, once.
    pub source: u32,
    pub muted: bool,
    pub can_self_unmute: bool,
    /// This entry announces that the participant left (with the source it had).
    pub left: bool,
    pub just_joined: bool,
    /// Telegram marks the entry describing the logged-in account (any of its devices).
    pub is_self: bool,
    /// A partial entry (Telegram `min`): fields it lacks keep their previous value.
    pub min: bool,
    /// Unix time the participant joined.
    pub date: i32,
    /// 1..=20000, 10000 is 100 %. `None` means the default.
    pub volume: Option<u32>,
    /// Set while the hand is raised; higher ratings raised later.
    pub raise_hand_rating: Option<i64>,
    pub video_stopped: bool,
    pub video: Option<ParticipantVideo>,
    pub presentation: Option<ParticipantVideo>,
}

impl Participant {
    /// Every SSRC this participant sends with: audio, video groups, presentation audio.
    pub fn all_sources(&self) -> Vec<u32> {
        let mut v = vec![self.source];
        for video in [&self.video, &self.presentation].into_iter().flatten() {
            for g in &video.source_groups {
                for s in &g.sources {
                    if !v.contains(s) {
                        v.push(*s);
                    }
                }
            }
            if let Some(a) = video.audio_source {
                if !v.contains(&a) {
                    v.push(a);
                }
            }
        }
        v
    }
}

/// A participant's camera or screen stream (`groupCallParticipantVideo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantVideo {
    pub endpoint: String,
    pub source_groups: Vec<SourceGroup>,
    /// Presentation audio SSRC, when screen sharing with sound.
    pub audio_source: Option<u32>,
    pub paused: bool,
}

/// `SIM` / `FID` source group of a participant's video, SSRCs unsigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceGroup {
    pub semantics: String,
    pub sources: Vec<u32>,
}

/// End-to-end conference key material (`phone.joinGroupCall` flag 3). Both halves travel together.
#[derive(Clone, PartialEq, Eq)]
pub struct ConferenceKey {
    pub public_key: [u8; 32],
    pub block: Vec<u8>,
}

impl fmt::Debug for ConferenceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConferenceKey")
            .field("block_len", &self.block.len())
            .finish_non_exhaustive()
    }
}

/// How to join. The defaults are what a polite bot wants: muted, camera off, as itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinOptions {
    /// Join muted (`muted` flag). Unmute later with [`ParticipantEdit::muted`].
    pub muted: bool,
    /// Join with the camera off (`video_stopped` flag).
    pub video_stopped: bool,
    /// Join as a channel or group the account may speak for (see `join_as_candidates`);
    /// `None` joins as the account itself.
    pub join_as: Option<PeerId>,
    /// The hash of a speaker invite link (`?videochat=<hash>`), which lets the joiner speak.
    pub invite_hash: Option<String>,
    /// E2E conference key material (`phone.joinGroupCall` `public_key` and `block`). Every
    /// backend refuses a join that sets it with [`crate::Error::ConferenceUnsupported`], before
    /// sending anything, until the engine generates the keys and encrypts frames.
    pub conference: Option<ConferenceKey>,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            muted: true,
            video_stopped: true,
            join_as: None,
            invite_hash: None,
            conference: None,
        }
    }
}

/// A successful join.
#[derive(Clone, Debug, PartialEq)]
pub struct Joined {
    /// The parsed answer to hand to `groupcall_media`.
    pub answer: ServerAnswer,
    /// The answer exactly as the server sent it (`updateGroupCallConnection.params`).
    pub answer_json: String,
    /// The payload the server accepted: its SSRC is the one the call knows this participant by.
    /// After an SSRC-duplicate retry this is not the first payload the factory produced.
    pub payload: JoinPayload,
    /// How many join requests it took (1 when the first was accepted).
    pub attempts: u32,
    /// The call's id, when the server's reply revealed it (always for [`CallRef::Id`]).
    pub call: Option<CallId>,
    /// The participant entry the server sent for this join, when it sent one.
    pub participant: Option<Participant>,
}

/// Which participants to fetch. Empty `sources` and `peers` means "everyone", paged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantQuery {
    pub sources: Vec<u32>,
    pub peers: Vec<PeerId>,
    /// `""` for the first page, then [`ParticipantPage::next_offset`].
    pub offset: String,
    pub limit: u32,
}

impl Default for ParticipantQuery {
    fn default() -> Self {
        ParticipantQuery {
            sources: Vec::new(),
            peers: Vec::new(),
            offset: String::new(),
            limit: 100,
        }
    }
}

impl ParticipantQuery {
    /// The participants that send with these SSRCs: how an unknown incoming SSRC is named.
    pub fn by_sources(sources: impl IntoIterator<Item = u32>) -> Self {
        ParticipantQuery {
            sources: sources.into_iter().collect(),
            ..Default::default()
        }
    }
}

/// One page of participants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantPage {
    /// Total participants in the call (not in this page).
    pub count: i32,
    pub participants: Vec<Participant>,
    /// `None` when there are no more pages.
    pub next_offset: Option<String>,
    pub version: i32,
}

/// Changes to one participant (`phone.editGroupCallParticipant`); `None` fields are left alone.
/// Telegram's own clients send one field per request; several at once are accepted too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParticipantEdit {
    pub muted: Option<bool>,
    /// 1..=20000, 10000 is 100 %.
    pub volume: Option<u32>,
    pub raise_hand: Option<bool>,
    pub video_stopped: Option<bool>,
    pub video_paused: Option<bool>,
    pub presentation_paused: Option<bool>,
}

impl ParticipantEdit {
    pub fn is_empty(&self) -> bool {
        self == &ParticipantEdit::default()
    }
}

/// How to create a call (`phone.createGroupCall`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateCall {
    pub title: Option<String>,
    /// Unix time to schedule the call for; `None` starts it now.
    pub schedule_date: Option<i32>,
    /// Create an RTMP livestream instead of a voice chat.
    pub rtmp_stream: bool,
}

/// Something the server reported about a call, outside any request.
#[derive(Clone, Debug, PartialEq)]
pub enum SignalingUpdate {
    /// Participants joined, left (`left`) or changed. Apply in `version` order; refetch on a gap.
    Participants {
        call: CallId,
        /// The participant list's version after this change (Telegram's
        /// `updateGroupCallParticipants.version`; the local server's `version`). It grows by
        /// one per change, so a step of more than one means changes were missed. 0 when the
        /// source does not say (a stdio application that leaves it out).
        version: i32,
        participants: Vec<Participant>,
    },
    /// A connection answer that no `join` returned: the server moved this participant (for
    /// example to stream mode) or answered a presentation join. Answers a `join` already
    /// returned are not repeated here.
    Connection {
        presentation: bool,
        answer: Box<ServerAnswer>,
        answer_json: String,
    },
    /// The call's state changed (started, title, counts).
    CallChanged(CallInfo),
    /// The call ended for everyone: hang up.
    CallDiscarded { call: CallId },
    /// The server dropped this participant (its own source is reported `left`): rejoin with a
    /// fresh payload.
    SelfRemoved { call: CallId, source: u32 },
    /// The same account joined the call from another device (its entry came back with a source
    /// this process did not send): hang up, as Telegram's own clients do.
    JoinedElsewhere { call: CallId, source: u32 },
    /// This subscriber fell behind and `missed` updates were dropped: refetch the call state.
    Lagged { missed: u64 },
    /// No more updates will come from this source (`call` for a per-call stream).
    Ended {
        call: Option<CallId>,
        reason: String,
    },
}
