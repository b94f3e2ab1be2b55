//! TL responses and updates to the crate's neutral types.
//!
//! Everything here reads data from the network, so nothing panics: unknown shapes are skipped
//! (with a log line) rather than trusted.

use grammers_client::tl;
use groupcall_media::ServerAnswer;

use crate::types::{
    CallId, CallInfo, Participant, ParticipantVideo, PeerId, SignalingUpdate, SourceGroup,
};
use crate::updates::UpdateHub;

pub(crate) fn peer_id(peer: &tl::enums::Peer) -> PeerId {
    match peer {
        tl::enums::Peer::User(u) => PeerId::User(u.user_id),
        tl::enums::Peer::Chat(c) => PeerId::Chat(c.chat_id),
        tl::enums::Peer::Channel(c) => PeerId::Channel(c.channel_id),
    }
}

pub(crate) fn call_id(call: &tl::enums::InputGroupCall) -> Option<CallId> {
    match call {
        tl::enums::InputGroupCall::Call(c) => Some(CallId {
            id: c.id,
            access_hash: c.access_hash,
        }),
        _ => None,
    }
}

/// A participant entry. `source` and every video SSRC are reinterpreted from Telegram's signed
/// 32-bit form to the unsigned SSRC RTP carries.
pub(crate) fn participant(p: &tl::enums::GroupCallParticipant) -> Participant {
    let tl::enums::GroupCallParticipant::Participant(p) = p;
    Participant {
        peer: peer_id(&p.peer),
        source: p.source as u32,
        muted: p.muted,
        can_self_unmute: p.can_self_unmute,
        left: p.left,
        just_joined: p.just_joined,
        is_self: p.is_self,
        min: p.min,
        date: p.date,
        volume: p.volume.map(|v| v.max(0) as u32),
        raise_hand_rating: p.raise_hand_rating,
        // Telegram signals a running camera by sending `video`; no `video` means stopped.
        video_stopped: p.video.is_none(),
        video: p.video.as_ref().map(video),
        presentation: p.presentation.as_ref().map(video),
    }
}

fn video(v: &tl::enums::GroupCallParticipantVideo) -> ParticipantVideo {
    let tl::enums::GroupCallParticipantVideo::Video(v) = v;
    ParticipantVideo {
        endpoint: v.endpoint.clone(),
        source_groups: v
            .source_groups
            .iter()
            .map(|g| {
                let tl::enums::GroupCallParticipantVideoSourceGroup::Group(g) = g;
                SourceGroup {
                    semantics: g.semantics.clone(),
                    sources: g.sources.iter().map(|s| *s as u32).collect(),
                }
            })
            .collect(),
        audio_source: v.audio_source.map(|s| s as u32),
        paused: v.paused,
    }
}

pub(crate) fn call_info(call: &tl::enums::GroupCall) -> CallInfo {
    match call {
        tl::enums::GroupCall::Call(c) => CallInfo {
            id: CallId {
                id: c.id,
                access_hash: c.access_hash,
            },
            title: c.title.clone(),
            schedule_date: c.schedule_date,
            rtmp_stream: c.rtmp_stream,
            started: c.schedule_date.is_none(),
            discarded: false,
            participants_count: c.participants_count,
            version: c.version,
            join_muted: c.join_muted,
            stream_dc_id: c.stream_dc_id,
        },
        tl::enums::GroupCall::Discarded(d) => CallInfo {
            id: CallId {
                id: d.id,
                access_hash: d.access_hash,
            },
            title: None,
            schedule_date: None,
            rtmp_stream: false,
            started: true,
            discarded: true,
            participants_count: 0,
            version: 0,
            join_muted: false,
            stream_dc_id: None,
        },
    }
}

/// The parts of an `Updates` this crate reads.
#[derive(Default)]
pub(crate) struct Unpacked {
    pub updates: Vec<tl::enums::Update>,
    pub users: Vec<tl::enums::User>,
    pub chats: Vec<tl::enums::Chat>,
}

pub(crate) fn unpack(updates: tl::enums::Updates) -> Unpacked {
    match updates {
        tl::enums::Updates::Updates(u) => Unpacked {
            updates: u.updates,
            users: u.users,
            chats: u.chats,
        },
        tl::enums::Updates::Combined(u) => Unpacked {
            updates: u.updates,
            users: u.users,
            chats: u.chats,
        },
        tl::enums::Updates::UpdateShort(u) => Unpacked {
            updates: vec![u.update],
            ..Default::default()
        },
        // Message-shaped short updates and "too long" carry nothing about calls.
        _ => Unpacked::default(),
    }
}

/// The access hashes that `users` and `chats` vectors reveal, so that peers seen in replies can
/// be addressed later (join as, invite, participants by peer).
pub(crate) fn access_hashes(
    users: &[tl::enums::User],
    chats: &[tl::enums::Chat],
) -> Vec<(PeerId, i64)> {
    let mut out = Vec::new();
    for u in users {
        if let tl::enums::User::User(u) = u {
            // A `min` user's hash is only valid in the context it came in; do not keep it.
            if let (Some(h), false) = (u.access_hash, u.min) {
                out.push((PeerId::User(u.id), h));
            }
        }
    }
    for c in chats {
        match c {
            tl::enums::Chat::Channel(c) if !c.min => {
                if let Some(h) = c.access_hash {
                    out.push((PeerId::Channel(c.id), h));
                }
            }
            tl::enums::Chat::ChannelForbidden(c) => {
                out.push((PeerId::Channel(c.id), c.access_hash))
            }
            _ => {}
        }
    }
    out
}

/// One update, as this crate's type. `None` for updates that are not about group calls.
pub(crate) fn update(u: &tl::enums::Update) -> Option<SignalingUpdate> {
    match u {
        tl::enums::Update::GroupCallParticipants(p) => {
            let call = call_id(&p.call)?;
            Some(SignalingUpdate::Participants {
                call,
                version: p.version,
                participants: p.participants.iter().map(participant).collect(),
            })
        }
        tl::enums::Update::GroupCall(g) => {
            let info = call_info(&g.call);
            Some(if info.discarded {
                SignalingUpdate::CallDiscarded { call: info.id }
            } else {
                SignalingUpdate::CallChanged(info)
            })
        }
        tl::enums::Update::GroupCallConnection(c) => {
            let tl::enums::DataJson::Json(d) = &c.params;
            match ServerAnswer::parse(&d.data) {
                Ok(answer) => Some(SignalingUpdate::Connection {
                    presentation: c.presentation,
                    answer: Box::new(answer),
                    answer_json: d.data.clone(),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping an unusable updateGroupCallConnection");
                    None
                }
            }
        }
        _ => None,
    }
}

/// Hands one update from the MTProto update loop to the hub.
pub(crate) fn dispatch(hub: &UpdateHub, u: &tl::enums::Update) {
    match update(u) {
        Some(SignalingUpdate::Participants {
            call,
            version,
            participants,
        }) => hub.publish_participants(call, version, participants),
        Some(other) => hub.publish(other),
        None => {}
    }
}
