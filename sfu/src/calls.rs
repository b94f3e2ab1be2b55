//! Calls and participants as Telegram models them, as a plain state machine.
//!
//! Every `phone.*` method of the control API is a method of [`Calls`] here, with Telegram's
//! validation and errors. Nothing here does I/O or reads a clock: the time comes in as `now`
//! (Unix seconds) and the media connection of a joining participant is set up by a closure the
//! caller passes to [`Calls::join`], so that every rule is unit-tested without sockets and the
//! HTTP layer stays a thin translation. Each change reports the [`Update`]s to publish and the
//! sources whose media connection must go ([`Outcome`]).
//!
//! Who is who: `peer` in a request is the *user* acting (what an MTProto session would be); a
//! participant is shown as the peer it joined as (itself, or a channel via `join_as`). One user
//! has at most one connection per call: joining again replaces the previous one, which is how
//! Telegram treats a rejoin or a second device.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use groupcall_media::payload::{JoinPayload, SsrcGroup};
use groupcall_media::RtcAnswer;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A Telegram peer id: users are positive, chats and channels negative.
pub type PeerId = i64;

/// A call's id, as `groupCall.id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub i64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `volume` of a participant nobody changed: 100%.
pub const DEFAULT_VOLUME: u32 = 10_000;
/// The largest `volume` Telegram accepts (200%).
pub const MAX_VOLUME: i64 = 20_000;
/// Participants per page when the request gives no `limit`.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// The largest page; larger limits are capped to it.
pub const MAX_PAGE_LIMIT: usize = 500;
/// The most SSRCs one join payload may declare. A camera payload has 7 (audio, 3 simulcast
/// layers, 3 retransmission sources: docs/protocol.md §1.2); the media plane checks every packet
/// against this list and keeps receive state for each entry, so it must stay short.
pub const MAX_SOURCES: usize = 32;

/// SSRCs travel as signed 32-bit numbers (Telegram's `int`), whatever their value: a source of
/// 2^31 or more is written negative. Reading accepts both forms.
pub(crate) mod signed_ssrc {
    use groupcall_media::payload::WireSsrc;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(*v as i32)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        WireSsrc::deserialize(d).map(|w| w.0)
    }
}

/// [`signed_ssrc`] for an optional source.
pub(crate) mod signed_ssrc_opt {
    use groupcall_media::payload::WireSsrc;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&(*v as i32)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        Option::<WireSsrc>::deserialize(d).map(|w| w.map(|w| w.0))
    }
}

/// `groupCall` as the control API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub id: CallId,
    /// Present for Telegram look-alike ids; the local server never checks it.
    pub access_hash: i64,
    /// Empty when the creator gave none.
    pub title: String,
    /// Set while the call is scheduled and not started.
    pub schedule_date: Option<i64>,
    /// Stored and reported only: the local server has no RTMP ingest.
    pub rtmp_stream: bool,
    pub started: bool,
    pub discarded: bool,
    pub participants_count: u32,
    /// The participants version: +1 with every `participants` update of this call.
    pub version: u32,
}

/// `groupCallParticipant`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// The peer the participant joined as.
    pub peer: PeerId,
    /// The audio SSRC of its connection.
    #[serde(with = "signed_ssrc")]
    pub source: u32,
    pub muted: bool,
    /// False when an admin muted it: it may only raise its hand.
    pub can_self_unmute: bool,
    /// Set in the update that reports it gone.
    pub left: bool,
    /// Set in the update (and join answer) that reports it joining.
    pub just_joined: bool,
    /// When it joined (Unix seconds).
    pub date: i64,
    pub volume: u32,
    /// Higher is later; `None` when the hand is down.
    pub raise_hand_rating: Option<i64>,
    pub video_stopped: bool,
    pub video: Option<ParticipantVideo>,
    /// The screen it shares (`joinGroupCallPresentation`), while it shares one.
    pub presentation: Option<ParticipantVideo>,
}

/// `groupCallParticipantVideo`: what a receiver needs to subscribe to someone's video.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantVideo {
    pub endpoint: String,
    pub source_groups: Vec<SsrcGroup>,
    pub paused: bool,
    /// The presentation's own audio source (shared system sound); absent for a camera.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "signed_ssrc_opt"
    )]
    pub audio_source: Option<u32>,
}

/// One event of a call's update stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Update {
    /// Participants joined, left (`left: true`) or changed; `version` is the call's new version.
    Participants {
        version: u32,
        participants: Vec<Participant>,
    },
    /// The call itself changed (started, discarded).
    Call { call: Call },
}

/// The result of a change: its answer, the updates to publish in order, and the sources (audio
/// SSRCs) whose media connection must be removed.
#[derive(Debug)]
pub struct Outcome<T> {
    pub value: T,
    pub updates: Vec<Update>,
    pub disconnect: Vec<u32>,
}

impl<T> Outcome<T> {
    fn new(value: T) -> Self {
        Outcome {
            value,
            updates: Vec::new(),
            disconnect: Vec::new(),
        }
    }
}

/// `createGroupCall`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CreateCall {
    pub peer: PeerId,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub schedule_date: Option<i64>,
    #[serde(default)]
    pub rtmp_stream: bool,
}

/// `joinGroupCall`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JoinRequest {
    pub peer: PeerId,
    /// The join payload JSON text (docs/protocol.md §1), parsed here so that a malformed one is
    /// refused with `DATA_JSON_INVALID` naming the field.
    pub params: String,
    #[serde(default)]
    pub muted: bool,
    #[serde(default)]
    pub video_stopped: bool,
    #[serde(default)]
    pub join_as: Option<PeerId>,
    /// Accepted and ignored: every participant of the local server may speak already.
    #[serde(default)]
    pub invite_hash: Option<String>,
}

/// What a successful join answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Joined {
    /// `updateGroupCallConnection.params`, as the media plane answered.
    pub params: String,
    pub participant: Participant,
}

/// `editGroupCallParticipant`: each field left `None` is not changed.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct EditParticipant {
    pub peer: PeerId,
    /// The participant's peer (what it joined as).
    pub participant: PeerId,
    #[serde(default)]
    pub muted: Option<bool>,
    #[serde(default)]
    pub volume: Option<i64>,
    #[serde(default)]
    pub raise_hand: Option<bool>,
    #[serde(default)]
    pub video_stopped: Option<bool>,
    #[serde(default)]
    pub video_paused: Option<bool>,
    #[serde(default)]
    pub presentation_paused: Option<bool>,
}

/// `joinGroupCallPresentation`: a second connection of a joined participant that sends its
/// screen (docs/protocol.md §1.4). Its payload has its own ICE credentials, certificate and
/// sources; its `ssrc` is the presentation's audio source.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PresentationRequest {
    pub peer: PeerId,
    pub params: String,
}

/// `getGroupParticipants`' filters and page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParticipantsQuery {
    /// Participants owning one of these sources (audio or video)...
    pub sources: Vec<u32>,
    /// ...or shown as one of these peers. Both empty: everyone.
    pub peers: Vec<PeerId>,
    /// `next_offset` of the previous page, or empty for the first.
    pub offset: String,
    /// 0 means [`DEFAULT_PAGE_LIMIT`]; capped at [`MAX_PAGE_LIMIT`].
    pub limit: usize,
}

/// One page of participants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParticipantsPage {
    /// How many participants match the filters in all.
    pub count: u32,
    pub participants: Vec<Participant>,
    /// Pass as `offset` for the next page; empty when this was the last one.
    pub next_offset: String,
    pub version: u32,
}

#[derive(Clone, Debug)]
struct Member {
    /// Join order; also the pagination cursor, so pages stay stable while people come and go.
    seq: u64,
    user: PeerId,
    peer: PeerId,
    source: u32,
    sources: Vec<u32>,
    date: i64,
    muted: bool,
    can_self_unmute: bool,
    volume: u32,
    raise_hand_rating: Option<i64>,
    video_stopped: bool,
    video_paused: bool,
    video_groups: Vec<SsrcGroup>,
    endpoint: String,
    presentation: Option<Screen>,
}

/// A member's presentation connection.
#[derive(Clone, Debug)]
struct Screen {
    /// Its audio source: the media plane's key of the connection.
    source: u32,
    sources: Vec<u32>,
    groups: Vec<SsrcGroup>,
    endpoint: String,
    paused: bool,
}

impl Member {
    /// Every source it owns: its main connection's and its presentation's.
    fn all_sources(&self) -> impl Iterator<Item = &u32> {
        self.sources
            .iter()
            .chain(self.presentation.iter().flat_map(|p| p.sources.iter()))
    }

    /// The media connections to drop when it goes.
    fn connections(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.source).chain(self.presentation.as_ref().map(|p| p.source))
    }

    fn view(&self) -> Participant {
        let video =
            (!self.video_groups.is_empty() && !self.video_stopped).then(|| ParticipantVideo {
                endpoint: self.endpoint.clone(),
                source_groups: self.video_groups.clone(),
                paused: self.video_paused,
                audio_source: None,
            });
        let presentation = self.presentation.as_ref().map(|p| ParticipantVideo {
            endpoint: p.endpoint.clone(),
            source_groups: p.groups.clone(),
            paused: p.paused,
            audio_source: Some(p.source),
        });
        Participant {
            peer: self.peer,
            source: self.source,
            muted: self.muted,
            can_self_unmute: self.can_self_unmute,
            left: false,
            just_joined: false,
            date: self.date,
            volume: self.volume,
            raise_hand_rating: self.raise_hand_rating,
            video_stopped: self.video_stopped,
            video,
            presentation,
        }
    }

    fn left_view(&self) -> Participant {
        Participant {
            left: true,
            ..self.view()
        }
    }
}

struct CallState {
    id: CallId,
    access_hash: i64,
    title: String,
    schedule_date: Option<i64>,
    rtmp_stream: bool,
    started: bool,
    discarded: bool,
    version: u32,
    admin: PeerId,
    members: BTreeMap<u64, Member>,
    by_user: HashMap<PeerId, u64>,
    by_peer: HashMap<PeerId, u64>,
    /// Every source of every member (audio and video), for the duplicate check.
    by_source: HashMap<u32, u64>,
    /// Participants an admin muted: they stay muted across rejoins, as in Telegram.
    force_muted: BTreeSet<PeerId>,
    invited: BTreeSet<PeerId>,
    next_seq: u64,
    next_hand: i64,
}

impl CallState {
    fn snapshot(&self) -> Call {
        Call {
            id: self.id,
            access_hash: self.access_hash,
            title: self.title.clone(),
            schedule_date: self.schedule_date,
            rtmp_stream: self.rtmp_stream,
            started: self.started,
            discarded: self.discarded,
            participants_count: self.members.len() as u32,
            version: self.version,
        }
    }

    fn insert(&mut self, m: Member) {
        self.by_user.insert(m.user, m.seq);
        self.by_peer.insert(m.peer, m.seq);
        for s in m.all_sources() {
            self.by_source.insert(*s, m.seq);
        }
        self.members.insert(m.seq, m);
    }

    fn remove(&mut self, seq: u64) -> Option<Member> {
        let m = self.members.remove(&seq)?;
        self.by_user.remove(&m.user);
        self.by_peer.remove(&m.peer);
        for s in m.all_sources() {
            if self.by_source.get(s) == Some(&seq) {
                self.by_source.remove(s);
            }
        }
        Some(m)
    }

    fn participants_update(&mut self, participants: Vec<Participant>) -> Update {
        self.version += 1;
        Update::Participants {
            version: self.version,
            participants,
        }
    }

    fn admin_required(&self, action: &'static str) -> Error {
        Error::AdminRequired {
            call: self.id,
            admin: self.admin,
            action,
        }
    }

    fn join_missing(&self, peer: PeerId, detail: String) -> Error {
        Error::JoinMissing {
            call: self.id,
            peer,
            detail,
        }
    }
}

/// All calls of one server.
#[derive(Default)]
pub struct Calls {
    calls: BTreeMap<CallId, CallState>,
    last_id: i64,
    /// Which user a channel belongs to, learnt from the first user who joins as it. The local
    /// server has no channels of its own; this keeps `join_as` honest (one channel, one owner).
    channel_owner: HashMap<PeerId, PeerId>,
}

fn user(peer: PeerId) -> Result<PeerId> {
    if peer > 0 {
        Ok(peer)
    } else {
        Err(Error::PeerIdInvalid { peer })
    }
}

/// A stable, non-obvious access hash, so ids look like Telegram's without a random source.
fn access_hash(id: i64) -> i64 {
    let mut z = (id as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as i64
}

fn parse_payload(params: &str) -> Result<JoinPayload> {
    use groupcall_media::Error as MediaError;
    let p = JoinPayload::parse(params).map_err(|e| match e {
        MediaError::NotJson(m) => Error::DataJsonInvalid(format!("not JSON: {m}")),
        other => Error::DataJsonInvalid(other.to_string()),
    })?;
    if p.ssrc.0 == 0 {
        return Err(Error::DataJsonInvalid(
            "ssrc: must not be 0 (draw a random non-zero SSRC)".into(),
        ));
    }
    // Counted before de-duplication too, which is quadratic: a megabyte of groups must not
    // cost seconds. A camera payload lists its 7 sources 10 times.
    let listed = 1 + p.ssrc_groups.iter().map(|g| g.sources.len()).sum::<usize>();
    let sources = if listed > 2 * MAX_SOURCES {
        listed
    } else {
        p.all_sources().len()
    };
    if sources > MAX_SOURCES {
        return Err(Error::DataJsonInvalid(format!(
            "the payload declares {sources} sources; at most {MAX_SOURCES} are accepted (one audio source and a few video layers with their retransmission sources)"
        )));
    }
    for (i, g) in p.ssrc_groups.iter().enumerate() {
        if let Some(j) = g.sources.iter().position(|s| s.0 == 0) {
            return Err(Error::DataJsonInvalid(format!(
                "ssrc-groups[{i}].sources[{j}]: must not be 0"
            )));
        }
    }
    Ok(p)
}

impl Calls {
    pub fn new() -> Self {
        Self::default()
    }

    fn existing(&self, id: CallId) -> Result<&CallState> {
        self.calls.get(&id).ok_or(Error::CallInvalid { call: id })
    }

    fn live(&self, id: CallId) -> Result<&CallState> {
        let c = self.existing(id)?;
        if c.discarded {
            return Err(Error::CallForbidden { call: id });
        }
        Ok(c)
    }

    fn live_mut(&mut self, id: CallId) -> Result<&mut CallState> {
        let c = self
            .calls
            .get_mut(&id)
            .ok_or(Error::CallInvalid { call: id })?;
        if c.discarded {
            return Err(Error::CallForbidden { call: id });
        }
        Ok(c)
    }

    /// `createGroupCall`. The creator is the call's admin.
    pub fn create(&mut self, now: i64, req: &CreateCall) -> Result<Call> {
        let admin = user(req.peer)?;
        if let Some(d) = req.schedule_date {
            if d <= now {
                return Err(Error::ScheduleDateInvalid {
                    schedule_date: d,
                    now,
                });
            }
        }
        self.last_id += 1;
        let id = CallId(self.last_id);
        let state = CallState {
            id,
            access_hash: access_hash(id.0),
            title: req.title.clone().unwrap_or_default(),
            schedule_date: req.schedule_date,
            rtmp_stream: req.rtmp_stream,
            started: req.schedule_date.is_none(),
            discarded: false,
            version: 1,
            admin,
            members: BTreeMap::new(),
            by_user: HashMap::new(),
            by_peer: HashMap::new(),
            by_source: HashMap::new(),
            force_muted: BTreeSet::new(),
            invited: BTreeSet::new(),
            next_seq: 1,
            next_hand: 1,
        };
        let call = state.snapshot();
        self.calls.insert(id, state);
        Ok(call)
    }

    /// The call as it is now (also after it was discarded).
    pub fn call(&self, id: CallId) -> Result<Call> {
        Ok(self.existing(id)?.snapshot())
    }

    /// `getGroupCall`: the call and all its participants in join order.
    pub fn get(&self, id: CallId) -> Result<(Call, Vec<Participant>)> {
        let c = self.existing(id)?;
        Ok((c.snapshot(), c.members.values().map(Member::view).collect()))
    }

    /// `startScheduledGroupCall`.
    pub fn start(&mut self, id: CallId, peer: PeerId) -> Result<Outcome<Call>> {
        let peer = user(peer)?;
        let c = self.live_mut(id)?;
        if c.started {
            return Err(Error::AlreadyStarted { call: id });
        }
        if peer != c.admin {
            return Err(c.admin_required("start a scheduled call"));
        }
        c.started = true;
        c.schedule_date = None;
        let call = c.snapshot();
        let mut out = Outcome::new(call.clone());
        out.updates.push(Update::Call { call });
        Ok(out)
    }

    /// `joinGroupCall`. `connect` sets up the participant's media connection once every check
    /// has passed and before anything changes, so a refused join leaves no connection behind and
    /// a failed connection leaves the roster as it was. If the same user was already joined, its
    /// old entry is replaced: reported as left when its source or peer changes, and its old
    /// connection listed in `disconnect` when the source changes.
    pub fn join(
        &mut self,
        now: i64,
        id: CallId,
        req: &JoinRequest,
        connect: impl FnOnce(&JoinPayload) -> Result<RtcAnswer>,
    ) -> Result<Outcome<Joined>> {
        let user = user(req.peer)?;
        let (peer, payload, sources) = {
            let c = self.live(id)?;
            if !c.started {
                return Err(Error::NotStarted {
                    call: id,
                    schedule_date: c.schedule_date.unwrap_or_default(),
                });
            }
            let peer = self.join_as_peer(user, req.join_as)?;
            let payload = parse_payload(&req.params)?;
            let sources = payload.all_sources();
            for s in &sources {
                if let Some(m) = c.by_source.get(s).and_then(|seq| c.members.get(seq)) {
                    if m.user != user {
                        return Err(Error::SsrcDuplicate {
                            call: id,
                            ssrc: *s,
                            holder: m.peer,
                        });
                    }
                }
            }
            // Another user's participant shown as the same channel cannot exist: the channel
            // has one owner, checked above.
            (peer, payload, sources)
        };
        let answer = connect(&payload)?;

        let c = self.live_mut(id)?;
        let source = payload.audio_ssrc();
        let mut out_updates = Vec::new();
        let mut disconnect = Vec::new();
        let mut presentation = None;
        if let Some(old) = c.by_user.get(&user).copied().and_then(|s| c.remove(s)) {
            if old.source != source || old.peer != peer {
                out_updates.push(old.left_view());
            }
            if old.source != source {
                // A new main connection ends the screen share of the old one: the client
                // shares again after rejoining (docs/protocol.md §7.2).
                disconnect.extend(old.connections());
            } else {
                presentation = old.presentation;
            }
        }
        let forced = c.force_muted.contains(&peer);
        let endpoint = answer
            .video
            .as_ref()
            .and_then(|v| v.endpoint.clone())
            .unwrap_or_else(|| format!("{id}-{source}"));
        let member = Member {
            seq: c.next_seq,
            user,
            peer,
            source,
            sources,
            date: now,
            muted: req.muted || forced,
            can_self_unmute: !forced,
            volume: DEFAULT_VOLUME,
            raise_hand_rating: None,
            video_stopped: req.video_stopped,
            video_paused: false,
            video_groups: payload.ssrc_groups.clone(),
            endpoint,
            presentation,
        };
        c.next_seq += 1;
        let participant = Participant {
            just_joined: true,
            ..member.view()
        };
        c.insert(member);
        out_updates.push(participant.clone());
        let update = c.participants_update(out_updates);
        if peer < 0 {
            self.channel_owner.insert(peer, user);
        }
        Ok(Outcome {
            value: Joined {
                params: answer.to_json(),
                participant,
            },
            updates: vec![update],
            disconnect,
        })
    }

    fn join_as_peer(&self, user: PeerId, join_as: Option<PeerId>) -> Result<PeerId> {
        let invalid = |join_as, reason| Error::JoinAsPeerInvalid {
            peer: user,
            join_as,
            reason,
        };
        match join_as {
            None => Ok(user),
            Some(p) if p == user => Ok(user),
            Some(0) => Err(invalid(0, "0 is not a peer")),
            Some(p) if p > 0 => Err(invalid(
                p,
                "a user joins as itself or as a channel (a negative id), never as another user",
            )),
            Some(ch) => match self.channel_owner.get(&ch) {
                Some(owner) if *owner != user => Err(invalid(
                    ch,
                    "that channel already joined calls on behalf of another user",
                )),
                _ => Ok(ch),
            },
        }
    }

    /// `leaveGroupCall`. `source` 0 leaves whatever connection the user has (as py-tgcalls
    /// does); any other source must be the current one, so that a late leave of an old
    /// connection cannot drop its replacement.
    pub fn leave(&mut self, id: CallId, peer: PeerId, source: u32) -> Result<Outcome<()>> {
        let user = user(peer)?;
        let c = self.live_mut(id)?;
        let Some(seq) = c.by_user.get(&user).copied() else {
            return Err(c.join_missing(user, String::new()));
        };
        let current = c.members[&seq].source;
        if source != 0 && source != current {
            return Err(c.join_missing(
                user,
                format!(
                    " with source {} (its connection has source {})",
                    source as i32, current as i32
                ),
            ));
        }
        let mut out = Outcome::new(());
        if let Some(m) = c.remove(seq) {
            out.updates.push(c.participants_update(vec![m.left_view()]));
            out.disconnect.extend(m.connections());
        }
        Ok(out)
    }

    /// `joinGroupCallPresentation`: starts (or replaces) the caller's screen share. The caller
    /// must be joined; the presentation's sources must be free, as at a join. `connect` sets up
    /// the presentation's media connection once every check has passed.
    pub fn join_presentation(
        &mut self,
        id: CallId,
        req: &PresentationRequest,
        connect: impl FnOnce(&JoinPayload) -> Result<RtcAnswer>,
    ) -> Result<Outcome<Joined>> {
        let user = user(req.peer)?;
        let (seq, payload, sources) = {
            let c = self.live(id)?;
            let Some(seq) = c.by_user.get(&user).copied() else {
                return Err(c.join_missing(user, " (join the call before sharing a screen)".into()));
            };
            let payload = parse_payload(&req.params)?;
            let sources = payload.all_sources();
            let main = &c.members[&seq];
            for s in &sources {
                let taken = match c.by_source.get(s) {
                    // Its own old presentation's sources may be reused; its main ones may not.
                    Some(owner) if *owner == seq => main.sources.contains(s),
                    Some(_) => true,
                    None => false,
                };
                if taken {
                    let holder = c.by_source.get(s).and_then(|o| c.members.get(o));
                    return Err(Error::SsrcDuplicate {
                        call: id,
                        ssrc: *s,
                        holder: holder.map_or(main.peer, |m| m.peer),
                    });
                }
            }
            (seq, payload, sources)
        };
        let answer = connect(&payload)?;
        let c = self.live_mut(id)?;
        let mut m = c
            .remove(seq)
            .expect("checked above, under the same borrow of self");
        let mut out = Outcome::new(());
        if let Some(old) = m.presentation.take() {
            if old.source != payload.audio_ssrc() {
                out.disconnect.push(old.source);
            }
        }
        let endpoint = answer
            .video
            .as_ref()
            .and_then(|v| v.endpoint.clone())
            .unwrap_or_else(|| format!("{id}-screen-{}", payload.audio_ssrc()));
        m.presentation = Some(Screen {
            source: payload.audio_ssrc(),
            sources,
            groups: payload.ssrc_groups.clone(),
            endpoint,
            paused: false,
        });
        let participant = m.view();
        c.insert(m);
        out.updates
            .push(c.participants_update(vec![participant.clone()]));
        Ok(Outcome {
            value: Joined {
                params: answer.to_json(),
                participant,
            },
            updates: out.updates,
            disconnect: out.disconnect,
        })
    }

    /// `leaveGroupCallPresentation`: ends the caller's screen share (a no-op when it shares none).
    pub fn leave_presentation(&mut self, id: CallId, peer: PeerId) -> Result<Outcome<Participant>> {
        let user = user(peer)?;
        let c = self.live_mut(id)?;
        let Some(seq) = c.by_user.get(&user).copied() else {
            return Err(c.join_missing(user, String::new()));
        };
        if c.members[&seq].presentation.is_none() {
            // Nothing to end: as a retried leave, not an error.
            return Ok(Outcome::new(c.members[&seq].view()));
        }
        let mut m = c.remove(seq).expect("looked up above");
        let screen = m.presentation.take().expect("checked above");
        let view = m.view();
        c.insert(m);
        let mut out = Outcome::new(view.clone());
        out.updates.push(c.participants_update(vec![view]));
        out.disconnect.push(screen.source);
        Ok(out)
    }

    /// `checkGroupCall`: of the given sources, those that are still the caller's joined
    /// connection, in the order given. A source of someone else is never "joined" for the caller.
    pub fn check(&self, id: CallId, peer: PeerId, sources: &[u32]) -> Result<Vec<u32>> {
        let user = user(peer)?;
        let c = self.live(id)?;
        let Some(m) = c.by_user.get(&user).and_then(|seq| c.members.get(seq)) else {
            return Err(c.join_missing(user, String::new()));
        };
        Ok(sources.iter().copied().filter(|s| *s == m.source).collect())
    }

    /// `getGroupParticipants`.
    pub fn participants(&self, id: CallId, q: &ParticipantsQuery) -> Result<ParticipantsPage> {
        let c = self.live(id)?;
        let after: u64 = if q.offset.is_empty() {
            0
        } else {
            q.offset.parse().map_err(|_| {
                Error::BadRequest(format!(
                    "offset {:?} is not a next_offset this server returned; start with an empty offset",
                    q.offset
                ))
            })?
        };
        let limit = match q.limit {
            0 => DEFAULT_PAGE_LIMIT,
            n => n.min(MAX_PAGE_LIMIT),
        };
        let unfiltered = q.sources.is_empty() && q.peers.is_empty();
        let matching: Vec<&Member> = c
            .members
            .values()
            .filter(|m| {
                unfiltered
                    || q.peers.contains(&m.peer)
                    || m.all_sources().any(|s| q.sources.contains(s))
            })
            .collect();
        let rest: Vec<&&Member> = matching.iter().filter(|m| m.seq > after).collect();
        let page: Vec<&&Member> = rest.iter().take(limit).copied().collect();
        let next_offset = if rest.len() > page.len() {
            page.last().map(|m| m.seq.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ParticipantsPage {
            count: matching.len() as u32,
            participants: page.iter().map(|m| m.view()).collect(),
            next_offset,
            version: c.version,
        })
    }

    /// `editGroupCallParticipant`, with Telegram's rules: a participant mutes, unmutes (unless an
    /// admin muted it), raises its hand and controls its video itself; the admin mutes others
    /// (they cannot unmute themselves then), lets them speak again (they stay muted until they
    /// unmute), lowers hands and sets volumes. Either everything asked is applied or nothing.
    pub fn edit(&mut self, id: CallId, e: &EditParticipant) -> Result<Outcome<Participant>> {
        let user = user(e.peer)?;
        let c = self.live_mut(id)?;
        let Some(seq) = c.by_peer.get(&e.participant).copied() else {
            return Err(Error::ParticipantIdInvalid {
                call: id,
                participant: e.participant,
            });
        };
        let old = c.members[&seq].clone();
        let is_self = old.user == user;
        let is_admin = user == c.admin;

        // Check everything first so that a refused field leaves the others unapplied.
        if let Some(muted) = e.muted {
            if !is_self && !is_admin {
                return Err(c.admin_required("mute or unmute other participants"));
            }
            if is_self && !muted && !old.can_self_unmute && !is_admin {
                return Err(c.admin_required(
                    "unmute a participant an admin muted (raise your hand to ask)",
                ));
            }
        }
        if let Some(v) = e.volume {
            if !(1..=MAX_VOLUME).contains(&v) {
                return Err(Error::VolumeInvalid { volume: v });
            }
            if !is_self && !is_admin {
                return Err(c.admin_required("set another participant's volume"));
            }
        }
        match e.raise_hand {
            Some(true) if !is_self => {
                return Err(Error::RaiseHandForbidden(
                    "only the participant itself can raise its hand",
                ))
            }
            Some(true) if old.can_self_unmute => {
                return Err(Error::RaiseHandForbidden(
                    "this participant can unmute itself; hands are raised by participants an admin muted",
                ))
            }
            Some(false) if !is_self && !is_admin => {
                return Err(c.admin_required("lower another participant's hand"))
            }
            _ => {}
        }
        if e.video_stopped.is_some() && !is_self {
            return Err(Error::VideoStopForbidden);
        }
        if (e.video_paused.is_some() || e.presentation_paused.is_some()) && !is_self {
            return Err(Error::VideoPauseForbidden);
        }

        let mut m = old.clone();
        match e.muted {
            Some(true) if is_self => m.muted = true,
            Some(true) => {
                m.muted = true;
                m.can_self_unmute = false;
                c.force_muted.insert(m.peer);
            }
            Some(false) if is_self => {
                m.muted = false;
                m.can_self_unmute = true;
                m.raise_hand_rating = None;
                c.force_muted.remove(&m.peer);
            }
            Some(false) => {
                m.can_self_unmute = true;
                m.raise_hand_rating = None;
                c.force_muted.remove(&m.peer);
            }
            None => {}
        }
        if let Some(v) = e.volume {
            m.volume = v as u32;
        }
        match e.raise_hand {
            Some(true) if m.raise_hand_rating.is_none() => {
                m.raise_hand_rating = Some(c.next_hand);
                c.next_hand += 1;
            }
            Some(false) => m.raise_hand_rating = None,
            _ => {}
        }
        if let Some(v) = e.video_stopped {
            m.video_stopped = v;
        }
        if let Some(v) = e.video_paused {
            m.video_paused = v;
        }
        if let (Some(v), Some(p)) = (e.presentation_paused, m.presentation.as_mut()) {
            p.paused = v;
        }

        let view = m.view();
        let mut out = Outcome::new(view.clone());
        if view != old.view() {
            c.members.insert(seq, m);
            out.updates.push(c.participants_update(vec![view]));
        }
        Ok(out)
    }

    /// `inviteToGroupCall`. All or nothing: one refused user invites nobody.
    pub fn invite(&mut self, id: CallId, peer: PeerId, users: &[PeerId]) -> Result<()> {
        let inviter = user(peer)?;
        let c = self.live_mut(id)?;
        if let Some(m) = c.by_user.get(&inviter).and_then(|seq| c.members.get(seq)) {
            if m.peer != inviter {
                return Err(Error::InviteForbiddenWithJoinAs {
                    call: id,
                    peer: inviter,
                    join_as: m.peer,
                });
            }
        }
        let mut fresh = BTreeSet::new();
        for &u in users {
            if u <= 0 {
                return Err(Error::UserIdInvalid { user: u });
            }
            if c.invited.contains(&u) || !fresh.insert(u) {
                return Err(Error::UserAlreadyInvited { call: id, user: u });
            }
        }
        c.invited.extend(fresh);
        Ok(())
    }

    /// `getGroupCallJoinAs`: the user itself first, then the channels it has joined calls as.
    pub fn join_as(&self, id: CallId, peer: PeerId) -> Result<Vec<PeerId>> {
        let user = user(peer)?;
        self.live(id)?;
        let mut channels: Vec<PeerId> = self
            .channel_owner
            .iter()
            .filter(|(_, owner)| **owner == user)
            .map(|(ch, _)| *ch)
            .collect();
        channels.sort_unstable_by(|a, b| b.cmp(a));
        let mut peers = vec![user];
        peers.extend(channels);
        Ok(peers)
    }

    /// `discardGroupCall`: ends the call for everyone. Its update stream ends with the `call`
    /// update this returns; every connection is to be dropped.
    pub fn discard(&mut self, id: CallId, peer: PeerId) -> Result<Outcome<()>> {
        let peer = user(peer)?;
        let c = self
            .calls
            .get_mut(&id)
            .ok_or(Error::CallInvalid { call: id })?;
        if c.discarded {
            return Err(Error::AlreadyDiscarded { call: id });
        }
        if peer != c.admin {
            return Err(c.admin_required("discard the call"));
        }
        let mut out = Outcome::new(());
        out.disconnect = c.members.values().flat_map(Member::connections).collect();
        c.members.clear();
        c.by_user.clear();
        c.by_peer.clear();
        c.by_source.clear();
        c.discarded = true;
        c.started = false;
        c.schedule_date = None;
        out.updates.push(Update::Call { call: c.snapshot() });
        Ok(out)
    }

    /// Removes the participant whose connection has `source`, as when the media plane reports
    /// it silent. `None` when there is no such connection (it left meanwhile, or the call ended):
    /// the report raced with something else and there is nothing to do.
    pub fn remove_source(&mut self, id: CallId, source: u32) -> Option<Outcome<Participant>> {
        let c = self.live_mut(id).ok()?;
        let seq = *c.by_source.get(&source)?;
        let m = c.members.get(&seq)?;
        if m.presentation.as_ref().is_some_and(|p| p.source == source) {
            // Only the screen share's connection went: the participant stays.
            let mut m = c.remove(seq)?;
            m.presentation = None;
            let view = m.view();
            c.insert(m);
            let mut out = Outcome::new(view.clone());
            out.updates.push(c.participants_update(vec![view]));
            out.disconnect.push(source);
            return Some(out);
        }
        if m.source != source {
            return None;
        }
        let m = c.remove(seq)?;
        let left = m.left_view();
        let mut out = Outcome::new(left.clone());
        out.updates.push(c.participants_update(vec![left]));
        out.disconnect.extend(m.connections());
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use groupcall_media::answer::{
        telegram_audio_info, telegram_video_info, Candidate, TransportInfo,
    };
    use groupcall_media::payload::{DtlsFingerprint, Setup};
    use std::cell::Cell;

    const NOW: i64 = 1_700_000_000;
    const ADMIN: PeerId = 1;
    const FP: &str = "00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F";

    /// A join payload as JSON text with the audio SSRC written exactly as given (signed or
    /// unsigned) and the given video groups.
    fn payload(ssrc: i64, groups: &[(&str, &[i64])]) -> String {
        let groups: Vec<serde_json::Value> = groups
            .iter()
            .map(|(sem, s)| serde_json::json!({"semantics": sem, "sources": s}))
            .collect();
        serde_json::json!({
            "fingerprints": [{"fingerprint": FP, "hash": "sha-256", "setup": "passive"}],
            "pwd": "0123456789abcdefghijklmn", "ssrc": ssrc, "ssrc-groups": groups, "ufrag": "abcd",
        })
        .to_string()
    }

    fn answer(source: u32) -> RtcAnswer {
        RtcAnswer {
            transport: TransportInfo {
                ufrag: "srvu".into(),
                pwd: "server-password-0123456".into(),
                fingerprints: vec![DtlsFingerprint {
                    fingerprint: FP.into(),
                    hash: "sha-256".into(),
                    setup: Setup::Active,
                }],
                candidates: vec![Candidate::udp_host(
                    "127.0.0.1:40000".parse().unwrap(),
                    "1",
                    "1",
                )],
                xmlns: None,
                rtcp_mux: Some(true),
            },
            audio: Some(telegram_audio_info()),
            video: Some(telegram_video_info(&format!("ep{source}"), 1)),
        }
    }

    fn connect_ok(p: &JoinPayload) -> Result<RtcAnswer> {
        Ok(answer(p.audio_ssrc()))
    }

    fn req(peer: PeerId, ssrc: i64) -> JoinRequest {
        JoinRequest {
            peer,
            params: payload(ssrc, &[]),
            ..Default::default()
        }
    }

    fn started() -> (Calls, CallId) {
        let mut calls = Calls::new();
        let call = calls
            .create(
                NOW,
                &CreateCall {
                    peer: ADMIN,
                    title: Some("t".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        (calls, call.id)
    }

    fn join(calls: &mut Calls, id: CallId, peer: PeerId, ssrc: i64) -> Outcome<Joined> {
        calls.join(NOW, id, &req(peer, ssrc), connect_ok).unwrap()
    }

    fn participants_of(u: &Update) -> (u32, Vec<Participant>) {
        match u {
            Update::Participants {
                version,
                participants,
            } => (*version, participants.clone()),
            other => panic!("expected a participants update, got {other:?}"),
        }
    }

    fn all(calls: &Calls, id: CallId) -> Vec<Participant> {
        calls.get(id).unwrap().1
    }

    fn err_type<T: fmt::Debug>(r: Result<T>) -> &'static str {
        r.expect_err("expected an error").telegram_type()
    }

    fn screen(peer: PeerId, ssrc: i64) -> PresentationRequest {
        let s = ssrc;
        PresentationRequest {
            peer,
            params: payload(
                ssrc,
                &[
                    ("SIM", &[s + 1, s + 3]),
                    ("FID", &[s + 1, s + 2]),
                    ("FID", &[s + 3, s + 4]),
                ],
            ),
        }
    }

    #[test]
    fn a_screen_share_is_a_second_connection_shown_as_presentation_until_it_ends() {
        let (mut calls, id) = started();
        // Not joined: nothing to share from.
        assert_eq!(
            err_type(calls.join_presentation(id, &screen(10, 500), connect_ok)),
            "GROUPCALL_JOIN_MISSING"
        );
        join(&mut calls, id, 10, 100);
        join(&mut calls, id, 11, 200);
        // Its sources must be free: another's audio source is taken.
        assert_eq!(
            err_type(calls.join_presentation(id, &screen(10, 200), connect_ok)),
            "GROUPCALL_SSRC_DUPLICATE_MUCH"
        );

        let out = calls
            .join_presentation(id, &screen(10, 500), connect_ok)
            .unwrap();
        assert!(out.disconnect.is_empty());
        let (_, ps) = participants_of(&out.updates[0]);
        let shown = ps[0]
            .presentation
            .clone()
            .expect("the update shows the share");
        assert_eq!(shown.endpoint, "ep500", "the media plane's endpoint");
        assert_eq!(shown.audio_source, Some(500));
        let sim: Vec<u32> = shown.source_groups[0].sources.iter().map(|s| s.0).collect();
        assert_eq!(sim, [501, 503]);
        assert!(ps[0].video.is_none(), "the camera is not what is shared");
        // Found by its presentation's sources too.
        let page = calls
            .participants(
                id,
                &ParticipantsQuery {
                    sources: vec![503],
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(page.participants[0].peer, 10);

        // Pausing is the participant's own business and shows in the update.
        let out = calls
            .edit(
                id,
                &EditParticipant {
                    peer: 10,
                    participant: 10,
                    presentation_paused: Some(true),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(out.value.presentation.unwrap().paused);

        // Sharing again replaces it: the old connection goes.
        let out = calls
            .join_presentation(id, &screen(10, 600), connect_ok)
            .unwrap();
        assert_eq!(out.disconnect, [500]);

        // The media plane losing the share's connection ends the share, not the participant.
        let out = calls.remove_source(id, 600).unwrap();
        assert_eq!(out.disconnect, [600]);
        assert!(!out.value.left && out.value.presentation.is_none());

        // Leaving the call drops both connections; a leave of no share is a no-op.
        calls
            .join_presentation(id, &screen(10, 700), connect_ok)
            .unwrap();
        let out = calls.leave_presentation(id, 10).unwrap();
        assert_eq!(out.disconnect, [700]);
        assert!(calls
            .leave_presentation(id, 10)
            .unwrap()
            .disconnect
            .is_empty());
        calls
            .join_presentation(id, &screen(10, 800), connect_ok)
            .unwrap();
        let out = calls.leave(id, 10, 0).unwrap();
        assert_eq!(out.disconnect, [100, 800]);
        // Its sources are free again.
        join(&mut calls, id, 12, 800);
    }

    #[test]
    fn create_starts_at_once_or_schedules_and_refuses_past_dates() {
        let mut calls = Calls::new();
        let a = calls
            .create(
                NOW,
                &CreateCall {
                    peer: ADMIN,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(a.started && !a.discarded);
        assert_eq!(
            (a.title.as_str(), a.schedule_date, a.version),
            ("", None, 1)
        );
        let b = calls
            .create(
                NOW,
                &CreateCall {
                    peer: ADMIN,
                    title: Some("later".into()),
                    schedule_date: Some(NOW + 60),
                    rtmp_stream: true,
                },
            )
            .unwrap();
        assert_ne!(a.id, b.id);
        assert!(!b.started && b.rtmp_stream);
        assert_eq!(b.schedule_date, Some(NOW + 60));
        for past in [NOW, NOW - 1] {
            let e = calls.create(
                NOW,
                &CreateCall {
                    peer: ADMIN,
                    schedule_date: Some(past),
                    ..Default::default()
                },
            );
            assert_eq!(err_type(e), "SCHEDULE_DATE_INVALID");
        }
        for bad in [0, -5] {
            let e = calls.create(
                NOW,
                &CreateCall {
                    peer: bad,
                    ..Default::default()
                },
            );
            assert_eq!(err_type(e), "PEER_ID_INVALID");
        }
    }

    #[test]
    fn scheduled_call_refuses_joins_until_its_admin_starts_it() {
        let mut calls = Calls::new();
        let id = calls
            .create(
                NOW,
                &CreateCall {
                    peer: ADMIN,
                    schedule_date: Some(NOW + 3600),
                    ..Default::default()
                },
            )
            .unwrap()
            .id;
        let connected = Cell::new(false);
        let e = calls.join(NOW, id, &req(10, 5), |p| {
            connected.set(true);
            connect_ok(p)
        });
        assert_eq!(err_type(e), "GROUPCALL_NOT_STARTED");
        assert!(!connected.get(), "no connection for a refused join");
        assert_eq!(err_type(calls.start(id, 10)), "CHAT_ADMIN_REQUIRED");

        let out = calls.start(id, ADMIN).unwrap();
        assert!(out.value.started);
        assert_eq!(out.value.schedule_date, None);
        assert!(matches!(&out.updates[..], [Update::Call { call }] if call.started));

        let e = calls.start(id, ADMIN).unwrap_err();
        assert_eq!(
            (e.telegram_type(), e.code()),
            ("GROUPCALL_ALREADY_STARTED", 403)
        );
        join(&mut calls, id, 10, 5);
        assert_eq!(
            err_type(calls.start(CallId(99), ADMIN)),
            "GROUPCALL_INVALID"
        );
    }

    #[test]
    fn join_reports_the_participant_and_bumps_the_version_once() {
        let (mut calls, id) = started();
        let out = calls
            .join(
                NOW + 5,
                id,
                &JoinRequest {
                    muted: true,
                    ..req(10, 1000)
                },
                connect_ok,
            )
            .unwrap();
        let p = &out.value.participant;
        assert_eq!((p.peer, p.source, p.date), (10, 1000, NOW + 5));
        assert!(p.muted && p.can_self_unmute && p.just_joined && !p.left);
        assert_eq!((p.volume, p.raise_hand_rating), (DEFAULT_VOLUME, None));
        assert_eq!(p.video, None, "no ssrc-groups, no video");
        assert_eq!(out.value.params, answer(1000).to_json());
        assert!(out.disconnect.is_empty());
        let (version, ps) = participants_of(&out.updates[0]);
        assert_eq!((version, ps), (2, vec![p.clone()]));

        let out = join(&mut calls, id, 11, 2000);
        assert_eq!(participants_of(&out.updates[0]).0, 3);
        let call = calls.call(id).unwrap();
        assert_eq!((call.version, call.participants_count), (3, 2));
        let listed = all(&calls, id);
        assert_eq!(listed.iter().map(|p| p.peer).collect::<Vec<_>>(), [10, 11]);
        assert!(listed.iter().all(|p| !p.just_joined && !p.left));
    }

    #[test]
    fn a_payload_of_max_sources_each_listed_twice_is_accepted() {
        let (mut calls, id) = started();
        // 32 distinct sources (the audio one and 31 more), 63 entries in all.
        let listed: Vec<i64> = (3001..3032).chain(3001..3032).collect();
        let r = JoinRequest {
            params: payload(3000, &[("SIM", &listed)]),
            ..req(10, 0)
        };
        let p = calls
            .join(NOW, id, &r, connect_ok)
            .unwrap()
            .value
            .participant;
        assert_eq!(p.source, 3000);
    }

    #[test]
    fn video_groups_become_the_participant_video_unless_stopped() {
        let (mut calls, id) = started();
        let groups: &[(&str, &[i64])] = &[("SIM", &[101, 103, 105]), ("FID", &[101, 102])];
        let r = JoinRequest {
            params: payload(100, groups),
            ..req(10, 0)
        };
        let p = calls
            .join(NOW, id, &r, connect_ok)
            .unwrap()
            .value
            .participant;
        let v = p.video.expect("video declared");
        assert_eq!(
            v.endpoint, "ep100",
            "endpoint comes from the media plane's answer"
        );
        assert_eq!(v.source_groups.len(), 2);
        assert_eq!(v.source_groups[0].sources[2].0, 105);
        assert!(!v.paused);

        let r = JoinRequest {
            params: payload(200, groups),
            video_stopped: true,
            ..req(11, 0)
        };
        // Same video sources as participant 10: a duplicate.
        assert_eq!(
            err_type(calls.join(NOW, id, &r, connect_ok)),
            "GROUPCALL_SSRC_DUPLICATE_MUCH"
        );
        let r = JoinRequest {
            params: payload(200, &[("FID", &[201, 202])]),
            video_stopped: true,
            ..req(11, 0)
        };
        let p = calls
            .join(NOW, id, &r, connect_ok)
            .unwrap()
            .value
            .participant;
        assert!(p.video_stopped && p.video.is_none());
    }

    #[test]
    fn join_refusals_name_the_problem_and_change_nothing() {
        let (mut calls, id) = started();
        join(&mut calls, id, 10, 1000);
        let before = calls.call(id).unwrap();
        let connected = Cell::new(0);
        let mut try_join = |r: JoinRequest| {
            calls.join(NOW, id, &r, |p| {
                connected.set(connected.get() + 1);
                connect_ok(p)
            })
        };

        let e = try_join(JoinRequest {
            params: payload(1000, &[]).replace("\"ssrc\":1000", "\"ssrc\":\"1000\""),
            ..req(11, 0)
        })
        .unwrap_err();
        assert_eq!(e.telegram_type(), "DATA_JSON_INVALID");
        assert!(e.to_string().contains("ssrc"), "{e}");
        let e = try_join(JoinRequest {
            params: "{not json".into(),
            ..req(11, 0)
        })
        .unwrap_err();
        assert_eq!(e.telegram_type(), "DATA_JSON_INVALID");
        let e = try_join(JoinRequest {
            params: payload(7, &[]).replace("\"ufrag\":\"abcd\"", "\"ufrag\":\"\""),
            ..req(11, 0)
        })
        .unwrap_err();
        assert!(e.to_string().contains("ufrag"), "{e}");
        let e = try_join(req(11, 0)).unwrap_err();
        assert_eq!(e.telegram_type(), "DATA_JSON_INVALID");
        assert!(e.to_string().contains("ssrc: must not be 0"), "{e}");
        let e = try_join(JoinRequest {
            params: payload(7, &[("FID", &[8, 0])]),
            ..req(11, 0)
        })
        .unwrap_err();
        assert!(e.to_string().contains("ssrc-groups[0].sources[1]"), "{e}");
        // Too many sources, distinct (33) or listed (a million times the same one).
        let many: Vec<i64> = (3001..3033).collect();
        let e = try_join(JoinRequest {
            params: payload(3000, &[("SIM", &many)]),
            ..req(11, 0)
        })
        .unwrap_err();
        assert_eq!(e.telegram_type(), "DATA_JSON_INVALID");
        assert!(e.to_string().contains("declares 33 sources"), "{e}");
        let same = vec![3001i64; 1_000_000];
        let e = try_join(JoinRequest {
            params: payload(3000, &[("FID", &same)]),
            ..req(11, 0)
        })
        .unwrap_err();
        assert!(e.to_string().contains("at most 32"), "{e}");

        let e = try_join(req(11, 1000)).unwrap_err();
        assert_eq!(e.telegram_type(), "GROUPCALL_SSRC_DUPLICATE_MUCH");
        assert!(e.to_string().contains("participant 10"), "{e}");
        // A video source that is someone's audio source is taken too.
        let e = try_join(JoinRequest {
            params: payload(2000, &[("FID", &[1000, 2001])]),
            ..req(11, 0)
        });
        assert_eq!(err_type(e), "GROUPCALL_SSRC_DUPLICATE_MUCH");

        assert_eq!(err_type(try_join(req(-11, 3000))), "PEER_ID_INVALID");
        for bad in [12, 0] {
            let e = try_join(JoinRequest {
                join_as: Some(bad),
                ..req(11, 3000)
            });
            assert_eq!(err_type(e), "JOIN_AS_PEER_INVALID");
        }

        assert_eq!(
            connected.get(),
            0,
            "no connection is set up for a refused join"
        );
        assert_eq!(calls.call(id).unwrap(), before);
        assert_eq!(
            err_type(calls.join(NOW, CallId(42), &req(11, 3000), connect_ok)),
            "GROUPCALL_INVALID"
        );
    }

    #[test]
    fn a_failed_media_connection_leaves_the_roster_unchanged() {
        let (mut calls, id) = started();
        let e = calls
            .join(NOW, id, &req(10, 5), |_| Err(Error::media("no ports left")))
            .unwrap_err();
        assert_eq!(
            (e.telegram_type(), e.code()),
            ("GROUPCALL_ADD_PARTICIPANTS_FAILED", 500)
        );
        assert_eq!(calls.call(id).unwrap().version, 1);
        assert!(all(&calls, id).is_empty());
        join(&mut calls, id, 10, 5);
    }

    #[test]
    fn rejoin_with_a_new_source_replaces_the_entry_and_reports_the_old_source_left() {
        let (mut calls, id) = started();
        join(&mut calls, id, 10, 1000);
        join(&mut calls, id, 11, 2000);
        let out = join(&mut calls, id, 10, 1001);
        assert_eq!(out.disconnect, [1000]);
        let (version, ps) = participants_of(&out.updates[0]);
        assert_eq!(version, 4);
        assert_eq!(ps.len(), 2);
        assert!(ps[0].left && ps[0].source == 1000 && ps[0].peer == 10);
        assert!(!ps[1].left && ps[1].just_joined && ps[1].source == 1001);
        let listed = all(&calls, id);
        assert_eq!(
            listed
                .iter()
                .map(|p| (p.peer, p.source))
                .collect::<Vec<_>>(),
            [(11, 2000), (10, 1001)]
        );
        assert_eq!(calls.check(id, 10, &[1000, 1001]).unwrap(), [1001]);
        // The old source is free again for anyone.
        join(&mut calls, id, 12, 1000);

        // Same source again (a retried join): no "left", nothing to disconnect.
        let out = join(&mut calls, id, 10, 1001);
        assert!(out.disconnect.is_empty());
        let (_, ps) = participants_of(&out.updates[0]);
        assert_eq!(ps.len(), 1);
        assert!(!ps[0].left);
        assert_eq!(calls.call(id).unwrap().participants_count, 3);
    }

    #[test]
    fn sources_above_2_31_are_the_same_source_signed_or_unsigned() {
        let (mut calls, id) = started();
        let big: u32 = 3_000_000_000;
        let signed = big as i32 as i64;
        assert!(signed < 0);
        let p = join(&mut calls, id, 10, big as i64).value.participant;
        assert_eq!(p.source, big);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["source"], serde_json::json!(signed), "written signed");
        let back: Participant = serde_json::from_value(json).unwrap();
        assert_eq!(back.source, big);

        let e = calls.join(NOW, id, &req(11, signed), connect_ok);
        assert_eq!(err_type(e), "GROUPCALL_SSRC_DUPLICATE_MUCH");
        assert_eq!(calls.check(id, 10, &[big]).unwrap(), [big]);
        let page = calls
            .participants(
                id,
                &ParticipantsQuery {
                    sources: vec![big],
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(page.count, 1);

        // Video SSRCs derived from an audio SSRC near 2^31 wrap past it.
        let groups = groupcall_media::VideoPublish::Camera.ssrc_groups(0x7fff_fffe);
        let g: Vec<Vec<i64>> = groups
            .iter()
            .map(|g| g.sources.iter().map(|s| s.0 as i32 as i64).collect())
            .collect();
        let r = JoinRequest {
            params: payload(
                0x7fff_fffe,
                &[
                    ("SIM", &g[0]),
                    ("FID", &g[1]),
                    ("FID", &g[2]),
                    ("FID", &g[3]),
                ],
            ),
            ..req(12, 0)
        };
        let p = calls
            .join(NOW, id, &r, connect_ok)
            .unwrap()
            .value
            .participant;
        assert_eq!(p.video.unwrap().source_groups, groups);
        let e = calls.join(NOW, id, &req(13, 0x8000_0003u32 as i32 as i64), connect_ok);
        assert_eq!(err_type(e), "GROUPCALL_SSRC_DUPLICATE_MUCH");
    }

    #[test]
    fn leave_removes_only_the_current_connection() {
        let (mut calls, id) = started();
        join(&mut calls, id, 10, 1000);
        join(&mut calls, id, 10, 1001);
        let e = calls.leave(id, 10, 1000).unwrap_err();
        assert_eq!(e.telegram_type(), "GROUPCALL_JOIN_MISSING");
        assert!(e.to_string().contains("1001"), "{e}");
        assert_eq!(all(&calls, id).len(), 1);

        let out = calls.leave(id, 10, 1001).unwrap();
        assert_eq!(out.disconnect, [1001]);
        let (version, ps) = participants_of(&out.updates[0]);
        assert_eq!(version, calls.call(id).unwrap().version);
        assert!(ps[0].left && ps[0].source == 1001);
        assert!(all(&calls, id).is_empty());
        assert_eq!(
            err_type(calls.leave(id, 10, 1001)),
            "GROUPCALL_JOIN_MISSING"
        );
        assert_eq!(
            err_type(calls.check(id, 10, &[1001])),
            "GROUPCALL_JOIN_MISSING"
        );

        // Source 0 leaves whatever connection the user has.
        join(&mut calls, id, 11, 2000);
        assert_eq!(calls.leave(id, 11, 0).unwrap().disconnect, [2000]);
    }

    #[test]
    fn check_returns_the_callers_sources_still_joined() {
        let (mut calls, id) = started();
        join(&mut calls, id, 10, 1000);
        join(&mut calls, id, 11, 2000);
        assert_eq!(calls.check(id, 10, &[1000]).unwrap(), [1000]);
        assert_eq!(calls.check(id, 10, &[5, 1000]).unwrap(), [1000]);
        assert!(
            calls.check(id, 10, &[2000]).unwrap().is_empty(),
            "someone else's source is not the caller's connection"
        );
        assert_eq!(
            err_type(calls.check(id, 12, &[1000])),
            "GROUPCALL_JOIN_MISSING"
        );
        assert_eq!(
            err_type(calls.check(CallId(9), 10, &[1000])),
            "GROUPCALL_INVALID"
        );
    }

    #[test]
    fn participants_filter_and_page_stably() {
        let (mut calls, id) = started();
        for (peer, ssrc) in [(10, 100), (11, 110), (12, 120), (13, 130), (14, 140)] {
            join(&mut calls, id, peer, ssrc);
        }
        let q = |sources: Vec<u32>, peers: Vec<PeerId>, offset: &str, limit| ParticipantsQuery {
            sources,
            peers,
            offset: offset.into(),
            limit,
        };
        let page = calls.participants(id, &q(vec![], vec![], "", 2)).unwrap();
        assert_eq!(page.count, 5);
        assert_eq!(page.version, 6);
        assert_eq!(
            page.participants.iter().map(|p| p.peer).collect::<Vec<_>>(),
            [10, 11]
        );
        assert!(!page.next_offset.is_empty());
        // Someone earlier leaves: the next page neither skips nor repeats anyone.
        calls.leave(id, 10, 0).unwrap();
        let page2 = calls
            .participants(id, &q(vec![], vec![], &page.next_offset, 2))
            .unwrap();
        assert_eq!(
            page2
                .participants
                .iter()
                .map(|p| p.peer)
                .collect::<Vec<_>>(),
            [12, 13]
        );
        let page3 = calls
            .participants(id, &q(vec![], vec![], &page2.next_offset, 2))
            .unwrap();
        assert_eq!(
            page3
                .participants
                .iter()
                .map(|p| p.peer)
                .collect::<Vec<_>>(),
            [14]
        );
        assert_eq!(page3.next_offset, "");

        let f = calls
            .participants(id, &q(vec![120, 999], vec![14], "", 0))
            .unwrap();
        assert_eq!(f.count, 2);
        assert_eq!(
            f.participants.iter().map(|p| p.peer).collect::<Vec<_>>(),
            [12, 14]
        );
        assert_eq!(f.next_offset, "");
        let e = calls
            .participants(id, &q(vec![], vec![], "abc", 0))
            .unwrap_err();
        assert_eq!(e.telegram_type(), "BAD_REQUEST");
        assert!(e.to_string().contains("offset"), "{e}");
    }

    #[test]
    fn self_mute_and_admin_force_mute_follow_telegram() {
        let (mut calls, id) = started();
        join(&mut calls, id, ADMIN, 1);
        join(&mut calls, id, 10, 1000);
        let edit = |peer, participant| EditParticipant {
            peer,
            participant,
            ..Default::default()
        };

        let out = calls
            .edit(
                id,
                &EditParticipant {
                    muted: Some(true),
                    ..edit(10, 10)
                },
            )
            .unwrap();
        assert!(out.value.muted && out.value.can_self_unmute);
        assert_eq!(
            participants_of(&out.updates[0]).1,
            std::slice::from_ref(&out.value)
        );
        let p = calls
            .edit(
                id,
                &EditParticipant {
                    muted: Some(false),
                    ..edit(10, 10)
                },
            )
            .unwrap()
            .value;
        assert!(!p.muted);

        // A non-admin cannot mute someone else.
        let e = calls.edit(
            id,
            &EditParticipant {
                muted: Some(true),
                ..edit(10, ADMIN)
            },
        );
        assert_eq!(err_type(e), "CHAT_ADMIN_REQUIRED");
        // A participant that can speak has no hand to raise.
        let e = calls.edit(
            id,
            &EditParticipant {
                raise_hand: Some(true),
                ..edit(10, 10)
            },
        );
        assert_eq!(err_type(e), "RAISE_HAND_FORBIDDEN");

        // The admin mutes 10: it cannot unmute itself, but may raise its hand.
        let p = calls
            .edit(
                id,
                &EditParticipant {
                    muted: Some(true),
                    ..edit(ADMIN, 10)
                },
            )
            .unwrap()
            .value;
        assert!(p.muted && !p.can_self_unmute);
        let e = calls.edit(
            id,
            &EditParticipant {
                muted: Some(false),
                ..edit(10, 10)
            },
        );
        assert_eq!(err_type(e), "CHAT_ADMIN_REQUIRED");
        let e = calls.edit(
            id,
            &EditParticipant {
                raise_hand: Some(true),
                ..edit(ADMIN, 10)
            },
        );
        assert_eq!(err_type(e), "RAISE_HAND_FORBIDDEN");
        let p = calls
            .edit(
                id,
                &EditParticipant {
                    raise_hand: Some(true),
                    ..edit(10, 10)
                },
            )
            .unwrap()
            .value;
        assert_eq!(p.raise_hand_rating, Some(1));

        // The force-mute survives a rejoin.
        let p = join(&mut calls, id, 10, 1001).value.participant;
        assert!(p.muted && !p.can_self_unmute);

        // The admin lets 10 speak: still muted until it unmutes itself; the hand goes down.
        let p = calls
            .edit(
                id,
                &EditParticipant {
                    muted: Some(false),
                    ..edit(ADMIN, 10)
                },
            )
            .unwrap()
            .value;
        assert!(p.muted && p.can_self_unmute && p.raise_hand_rating.is_none());
        let p = calls
            .edit(
                id,
                &EditParticipant {
                    muted: Some(false),
                    ..edit(10, 10)
                },
            )
            .unwrap()
            .value;
        assert!(!p.muted);
    }

    #[test]
    fn edit_checks_every_field_before_applying_any() {
        let (mut calls, id) = started();
        join(&mut calls, id, ADMIN, 1);
        let groups: &[(&str, &[i64])] = &[("FID", &[1001, 1002])];
        let r = JoinRequest {
            params: payload(1000, groups),
            ..req(10, 0)
        };
        calls.join(NOW, id, &r, connect_ok).unwrap();
        let edit = |peer, participant| EditParticipant {
            peer,
            participant,
            ..Default::default()
        };
        for v in [0, -1, MAX_VOLUME + 1] {
            let e = calls.edit(
                id,
                &EditParticipant {
                    volume: Some(v),
                    ..edit(ADMIN, 10)
                },
            );
            assert_eq!(err_type(e), "USER_VOLUME_INVALID");
        }
        let e = calls.edit(
            id,
            &EditParticipant {
                volume: Some(5000),
                ..edit(10, ADMIN)
            },
        );
        assert_eq!(err_type(e), "CHAT_ADMIN_REQUIRED");
        let e = calls.edit(
            id,
            &EditParticipant {
                video_stopped: Some(true),
                ..edit(ADMIN, 10)
            },
        );
        assert_eq!(err_type(e), "VIDEO_STOP_FORBIDDEN");
        let e = calls.edit(
            id,
            &EditParticipant {
                video_paused: Some(true),
                ..edit(ADMIN, 10)
            },
        );
        assert_eq!(err_type(e), "VIDEO_PAUSE_FORBIDDEN");
        // A valid volume with a refused field: neither is applied.
        let e = calls.edit(
            id,
            &EditParticipant {
                volume: Some(5000),
                video_stopped: Some(true),
                ..edit(ADMIN, 10)
            },
        );
        assert_eq!(err_type(e), "VIDEO_STOP_FORBIDDEN");
        assert_eq!(all(&calls, id)[1].volume, DEFAULT_VOLUME);
        let e = calls.edit(id, &edit(ADMIN, 77));
        assert_eq!(err_type(e), "PARTICIPANT_ID_INVALID");

        let before = calls.call(id).unwrap().version;
        let p = calls
            .edit(
                id,
                &EditParticipant {
                    volume: Some(5000),
                    ..edit(ADMIN, 10)
                },
            )
            .unwrap()
            .value;
        assert_eq!(p.volume, 5000);
        let p = calls
            .edit(
                id,
                &EditParticipant {
                    video_paused: Some(true),
                    ..edit(10, 10)
                },
            )
            .unwrap()
            .value;
        assert!(p.video.unwrap().paused);
        let p = calls
            .edit(
                id,
                &EditParticipant {
                    video_stopped: Some(true),
                    ..edit(10, 10)
                },
            )
            .unwrap()
            .value;
        assert!(p.video.is_none());
        assert_eq!(calls.call(id).unwrap().version, before + 3);
        // Nothing changes: no update, no new version.
        let out = calls
            .edit(
                id,
                &EditParticipant {
                    video_stopped: Some(true),
                    ..edit(10, 10)
                },
            )
            .unwrap();
        assert!(out.updates.is_empty());
        assert_eq!(calls.call(id).unwrap().version, before + 3);
    }

    #[test]
    fn invites_are_all_or_nothing_and_not_repeated() {
        let (mut calls, id) = started();
        calls.invite(id, ADMIN, &[20, 21]).unwrap();
        assert_eq!(
            err_type(calls.invite(id, ADMIN, &[21])),
            "USER_ALREADY_INVITED"
        );
        assert_eq!(
            err_type(calls.invite(id, ADMIN, &[22, 22])),
            "USER_ALREADY_INVITED"
        );
        assert_eq!(
            err_type(calls.invite(id, ADMIN, &[23, 20])),
            "USER_ALREADY_INVITED"
        );
        // 23 was not invited by the refused call above.
        calls.invite(id, ADMIN, &[23]).unwrap();
        assert_eq!(
            err_type(calls.invite(id, ADMIN, &[-100])),
            "USER_ID_INVALID"
        );

        let r = JoinRequest {
            join_as: Some(-100),
            ..req(10, 1000)
        };
        calls.join(NOW, id, &r, connect_ok).unwrap();
        assert_eq!(
            err_type(calls.invite(id, 10, &[24])),
            "INVITE_FORBIDDEN_WITH_JOINAS"
        );
    }

    #[test]
    fn join_as_channels_have_one_owner() {
        let (mut calls, id) = started();
        assert_eq!(calls.join_as(id, 10).unwrap(), [10]);
        let r = JoinRequest {
            join_as: Some(-100),
            ..req(10, 1000)
        };
        let p = calls
            .join(NOW, id, &r, connect_ok)
            .unwrap()
            .value
            .participant;
        assert_eq!(p.peer, -100);
        assert_eq!(calls.join_as(id, 10).unwrap(), [10, -100]);
        assert_eq!(calls.join_as(id, 11).unwrap(), [11]);
        let r = JoinRequest {
            join_as: Some(-100),
            ..req(11, 2000)
        };
        assert_eq!(
            err_type(calls.join(NOW, id, &r, connect_ok)),
            "JOIN_AS_PEER_INVALID"
        );

        // Switching back to joining as itself replaces the channel's entry.
        let out = join(&mut calls, id, 10, 1000);
        let (_, ps) = participants_of(&out.updates[0]);
        assert_eq!(
            ps.iter().map(|p| (p.peer, p.left)).collect::<Vec<_>>(),
            [(-100, true), (10, false)]
        );
        assert!(
            out.disconnect.is_empty(),
            "same source: the connection was replaced"
        );
        assert_eq!(err_type(calls.join_as(id, 0)), "PEER_ID_INVALID");
    }

    #[test]
    fn discard_ends_the_call_for_every_method() {
        let (mut calls, id) = started();
        join(&mut calls, id, ADMIN, 1);
        join(&mut calls, id, 10, 1000);
        assert_eq!(err_type(calls.discard(id, 10)), "CHAT_ADMIN_REQUIRED");
        let out = calls.discard(id, ADMIN).unwrap();
        assert_eq!(out.disconnect, [1, 1000]);
        let [Update::Call { call }] = &out.updates[..] else {
            panic!("expected one call update, got {:?}", out.updates)
        };
        assert!(call.discarded && call.participants_count == 0);

        let e = calls.discard(id, ADMIN).unwrap_err();
        assert_eq!(e.telegram_type(), "GROUPCALL_ALREADY_DISCARDED");
        let forbidden = |e: Result<()>| {
            let e = e.unwrap_err();
            assert_eq!((e.telegram_type(), e.code()), ("GROUPCALL_FORBIDDEN", 403));
        };
        forbidden(calls.join(NOW, id, &req(11, 5), connect_ok).map(drop));
        forbidden(calls.leave(id, 10, 1000).map(drop));
        forbidden(calls.check(id, 10, &[1000]).map(drop));
        forbidden(
            calls
                .participants(id, &ParticipantsQuery::default())
                .map(drop),
        );
        forbidden(
            calls
                .edit(
                    id,
                    &EditParticipant {
                        peer: ADMIN,
                        participant: 10,
                        ..Default::default()
                    },
                )
                .map(drop),
        );
        forbidden(calls.invite(id, ADMIN, &[30]));
        forbidden(calls.join_as(id, 10).map(drop));
        forbidden(calls.start(id, ADMIN).map(drop));
        assert!(calls.remove_source(id, 1000).is_none());
        let (call, ps) = calls.get(id).unwrap();
        assert!(call.discarded && ps.is_empty());
    }

    #[test]
    fn silent_source_is_removed_with_an_update() {
        let (mut calls, id) = started();
        let groups: &[(&str, &[i64])] = &[("FID", &[1001, 1002])];
        let r = JoinRequest {
            params: payload(1000, groups),
            ..req(10, 0)
        };
        calls.join(NOW, id, &r, connect_ok).unwrap();
        assert!(
            calls.remove_source(id, 1001).is_none(),
            "a video source is no connection"
        );
        assert!(calls.remove_source(id, 5).is_none());
        assert!(calls.remove_source(CallId(9), 1000).is_none());
        let out = calls.remove_source(id, 1000).unwrap();
        assert!(out.value.left);
        assert_eq!(out.disconnect, [1000]);
        assert_eq!(
            participants_of(&out.updates[0]).1,
            std::slice::from_ref(&out.value)
        );
        assert!(all(&calls, id).is_empty());
        assert!(
            calls.remove_source(id, 1000).is_none(),
            "reported twice: nothing left to do"
        );
    }

    #[test]
    fn updates_serialise_as_the_readme_says() {
        let (mut calls, id) = started();
        let out = join(&mut calls, id, 10, 3_000_000_000);
        let v = serde_json::to_value(&out.updates[0]).unwrap();
        assert_eq!(v["type"], "participants");
        assert_eq!(v["version"], 2);
        let p = &v["participants"][0];
        for key in [
            "peer",
            "source",
            "muted",
            "can_self_unmute",
            "left",
            "just_joined",
            "date",
            "volume",
            "raise_hand_rating",
            "video_stopped",
            "video",
            "presentation",
        ] {
            assert!(p.get(key).is_some(), "participant lacks {key}: {p}");
        }
        assert_eq!(p["source"], -1_294_967_296i64);
        let out = calls.discard(id, ADMIN).unwrap();
        let v = serde_json::to_value(&out.updates[0]).unwrap();
        assert_eq!(v["type"], "call");
        assert_eq!(v["call"]["discarded"], true);
        for key in [
            "id",
            "access_hash",
            "title",
            "schedule_date",
            "rtmp_stream",
            "started",
            "discarded",
            "participants_count",
            "version",
        ] {
            assert!(v["call"].get(key).is_some(), "call lacks {key}");
        }
    }
}
