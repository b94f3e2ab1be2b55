//! Method calls to TL requests: the only place that fills in `phone.*` constructors.
//!
//! Pure functions, so the exact bytes (constructor ids, flag words) are checked by golden tests
//! without a network. Peers arrive here already resolved to `InputPeer`s.

use grammers_client::tl;

use crate::types::{CallRef, ConferenceKey, CreateCall, JoinOptions, ParticipantEdit};

/// Telegram's name of each method, used in errors and logs.
pub(crate) mod names {
    pub const CREATE: &str = "phone.createGroupCall";
    pub const JOIN: &str = "phone.joinGroupCall";
    pub const JOIN_PRESENTATION: &str = "phone.joinGroupCallPresentation";
    pub const LEAVE_PRESENTATION: &str = "phone.leaveGroupCallPresentation";
    pub const START_SCHEDULED: &str = "phone.startScheduledGroupCall";
    pub const JOIN_AS: &str = "phone.getGroupCallJoinAs";
    pub const INVITE: &str = "phone.inviteToGroupCall";
    pub const LEAVE: &str = "phone.leaveGroupCall";
    pub const CHECK: &str = "phone.checkGroupCall";
    pub const GET_CALL: &str = "phone.getGroupCall";
    pub const PARTICIPANTS: &str = "phone.getGroupParticipants";
    pub const EDIT: &str = "phone.editGroupCallParticipant";
    pub const DISCARD: &str = "phone.discardGroupCall";
    pub const RESOLVE_USERNAME: &str = "contacts.resolveUsername";
    pub const CHECK_INVITE: &str = "messages.checkChatInvite";
    pub const FULL_CHANNEL: &str = "channels.getFullChannel";
    pub const FULL_CHAT: &str = "messages.getFullChat";
    pub const GET_USERS: &str = "users.getUsers";
}

pub(crate) fn input_call(call: &CallRef) -> tl::enums::InputGroupCall {
    match call {
        CallRef::Id(c) => tl::types::InputGroupCall {
            id: c.id,
            access_hash: c.access_hash,
        }
        .into(),
        CallRef::Slug(slug) => tl::types::InputGroupCallSlug { slug: slug.clone() }.into(),
    }
}

/// `phone.joinGroupCall#8fb53057`. `params` is the join payload's JSON text.
pub(crate) fn join_group_call(
    call: &CallRef,
    join_as: tl::enums::InputPeer,
    params: String,
    options: &JoinOptions,
) -> tl::functions::phone::JoinGroupCall {
    let (public_key, block) = match &options.conference {
        Some(ConferenceKey { public_key, block }) => (Some(*public_key), Some(block.clone())),
        None => (None, None),
    };
    tl::functions::phone::JoinGroupCall {
        muted: options.muted,
        video_stopped: options.video_stopped,
        call: input_call(call),
        join_as,
        invite_hash: options.invite_hash.clone(),
        public_key,
        block,
        params: tl::types::DataJson { data: params }.into(),
    }
}

/// `phone.joinGroupCallPresentation#cbea6bc4`: a screen share's payload.
pub(crate) fn join_presentation(
    call: &CallRef,
    params: String,
) -> tl::functions::phone::JoinGroupCallPresentation {
    tl::functions::phone::JoinGroupCallPresentation {
        call: input_call(call),
        params: tl::types::DataJson { data: params }.into(),
    }
}

/// `phone.leaveGroupCallPresentation#1c50d144`.
pub(crate) fn leave_presentation(
    call: &CallRef,
) -> tl::functions::phone::LeaveGroupCallPresentation {
    tl::functions::phone::LeaveGroupCallPresentation {
        call: input_call(call),
    }
}

/// `phone.createGroupCall#48cdc6d8`. `random_id` lets Telegram drop a resent duplicate.
pub(crate) fn create_group_call(
    peer: tl::enums::InputPeer,
    random_id: i32,
    create: &CreateCall,
) -> tl::functions::phone::CreateGroupCall {
    tl::functions::phone::CreateGroupCall {
        rtmp_stream: create.rtmp_stream,
        peer,
        random_id,
        title: create.title.clone(),
        schedule_date: create.schedule_date,
    }
}

/// `phone.startScheduledGroupCall#5680e342`.
pub(crate) fn start_scheduled(call: &CallRef) -> tl::functions::phone::StartScheduledGroupCall {
    tl::functions::phone::StartScheduledGroupCall {
        call: input_call(call),
    }
}

/// `phone.getGroupCallJoinAs#ef7c213a`.
pub(crate) fn get_join_as(peer: tl::enums::InputPeer) -> tl::functions::phone::GetGroupCallJoinAs {
    tl::functions::phone::GetGroupCallJoinAs { peer }
}

/// `phone.inviteToGroupCall#7b393160`.
pub(crate) fn invite(
    call: &CallRef,
    users: Vec<tl::enums::InputUser>,
) -> tl::functions::phone::InviteToGroupCall {
    tl::functions::phone::InviteToGroupCall {
        call: input_call(call),
        users,
    }
}

/// `phone.leaveGroupCall`. The source goes back on the wire in Telegram's signed form.
pub(crate) fn leave(call: &CallRef, source: u32) -> tl::functions::phone::LeaveGroupCall {
    tl::functions::phone::LeaveGroupCall {
        call: input_call(call),
        source: source as i32,
    }
}

/// `phone.checkGroupCall` (current layer: a vector of sources in, the joined ones out).
pub(crate) fn check(call: &CallRef, sources: &[u32]) -> tl::functions::phone::CheckGroupCall {
    tl::functions::phone::CheckGroupCall {
        call: input_call(call),
        sources: sources.iter().map(|s| *s as i32).collect(),
    }
}

/// `phone.getGroupCall`.
pub(crate) fn get_call(call: &CallRef, limit: u32) -> tl::functions::phone::GetGroupCall {
    tl::functions::phone::GetGroupCall {
        call: input_call(call),
        limit: clamp_limit(limit),
    }
}

/// `phone.getGroupParticipants`.
pub(crate) fn get_participants(
    call: &CallRef,
    ids: Vec<tl::enums::InputPeer>,
    sources: &[u32],
    offset: &str,
    limit: u32,
) -> tl::functions::phone::GetGroupParticipants {
    tl::functions::phone::GetGroupParticipants {
        call: input_call(call),
        ids,
        sources: sources.iter().map(|s| *s as i32).collect(),
        offset: offset.to_owned(),
        limit: clamp_limit(limit),
    }
}

/// `phone.editGroupCallParticipant`. Only the fields that are `Some` get their flag.
pub(crate) fn edit_participant(
    call: &CallRef,
    participant: tl::enums::InputPeer,
    edit: &ParticipantEdit,
) -> tl::functions::phone::EditGroupCallParticipant {
    tl::functions::phone::EditGroupCallParticipant {
        call: input_call(call),
        participant,
        muted: edit.muted,
        // Validated to 1..=20000 by the caller, so the conversion is lossless.
        volume: edit.volume.map(|v| v.min(i32::MAX as u32) as i32),
        raise_hand: edit.raise_hand,
        video_stopped: edit.video_stopped,
        video_paused: edit.video_paused,
        presentation_paused: edit.presentation_paused,
    }
}

/// `phone.discardGroupCall`.
pub(crate) fn discard(call: &CallRef) -> tl::functions::phone::DiscardGroupCall {
    tl::functions::phone::DiscardGroupCall {
        call: input_call(call),
    }
}

fn clamp_limit(limit: u32) -> i32 {
    limit.clamp(1, i32::MAX as u32) as i32
}
