//! The one error type of the local server.
//!
//! Most variants are Telegram's own RPC errors, so a client written against Telegram handles the
//! local server's refusals with the code it already has: [`Error::telegram_type`] is the name
//! Telegram uses and [`Error::code`] its code (the HTTP status of the control API). The message
//! says what was wrong with which input and what to do.

use std::net::SocketAddr;

use crate::calls::{CallId, PeerId};

/// Errors of the local server: refusals of a control-API method and failures to run the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No call has this id.
    #[error("there is no call {call}; create one with POST /calls or use an id it returned")]
    CallInvalid { call: CallId },

    /// The call was discarded: nothing more can happen in it.
    #[error("call {call} has ended (discarded); create a new call")]
    CallForbidden { call: CallId },

    /// `start` on a call that is not (or no longer) scheduled.
    #[error("call {call} has already started; join it directly")]
    AlreadyStarted { call: CallId },

    /// `discard` on a call that was already discarded.
    #[error("call {call} was already discarded")]
    AlreadyDiscarded { call: CallId },

    /// `join` on a scheduled call nobody has started yet.
    #[error("call {call} is scheduled for {schedule_date} and not started; an admin must start it (POST /calls/{call}/start) before anyone joins")]
    NotStarted { call: CallId, schedule_date: i64 },

    /// The join payload claims a source another participant of the call already uses.
    #[error("source {ssrc} (signed {signed}) is already used by participant {holder} in call {call}; generate new SSRCs and join again", signed = *.ssrc as i32)]
    SsrcDuplicate {
        call: CallId,
        ssrc: u32,
        holder: PeerId,
    },

    /// The caller has no connection in the call (never joined, left, or was removed).
    #[error("peer {peer} is not joined to call {call}{detail}; join again with a fresh payload")]
    JoinMissing {
        call: CallId,
        peer: PeerId,
        detail: String,
    },

    /// The join payload (`params`) is not a usable join payload. The message names the field.
    #[error("join payload (params) is invalid: {0}")]
    DataJsonInvalid(String),

    /// `join_as` names a peer the caller cannot present itself as.
    #[error("peer {peer} cannot join as {join_as}: {reason}")]
    JoinAsPeerInvalid {
        peer: PeerId,
        join_as: PeerId,
        reason: &'static str,
    },

    /// `invite` of a user who was already invited to this call.
    #[error("user {user} was already invited to call {call}")]
    UserAlreadyInvited { call: CallId, user: PeerId },

    /// `invite` of something that is not a user id.
    #[error("{user} is not a user id (users are positive numbers)")]
    UserIdInvalid { user: PeerId },

    /// The inviter joined as a channel; inviting would reveal the user behind it.
    #[error("peer {peer} joined call {call} as {join_as}; inviting would reveal who is behind that channel, so it is refused")]
    InviteForbiddenWithJoinAs {
        call: CallId,
        peer: PeerId,
        join_as: PeerId,
    },

    /// `schedule_date` is not in the future.
    #[error("schedule_date {schedule_date} is not in the future (now is {now}); omit it to start the call at once")]
    ScheduleDateInvalid { schedule_date: i64, now: i64 },

    /// `edit` of a peer that is not a participant of the call.
    #[error("peer {participant} is not a participant of call {call}")]
    ParticipantIdInvalid { call: CallId, participant: PeerId },

    /// The acting `peer` is not a user: only users call these methods.
    #[error("peer {peer} is not a user id (users are positive numbers); pass the user you act as in `peer`")]
    PeerIdInvalid { peer: PeerId },

    /// The action needs the call's admin (the user who created it).
    #[error("only an admin of call {call} (its creator, user {admin}) can {action}")]
    AdminRequired {
        call: CallId,
        admin: PeerId,
        action: &'static str,
    },

    /// `volume` outside 1..=20000.
    #[error("volume {volume} is out of range; use 1..=20000 (10000 is 100%)")]
    VolumeInvalid { volume: i64 },

    /// `raise_hand: true` when not allowed.
    #[error("{0}")]
    RaiseHandForbidden(&'static str),

    /// `video_stopped` for someone else.
    #[error("only the participant itself can start or stop its video")]
    VideoStopForbidden,

    /// `video_paused` or `presentation_paused` for someone else.
    #[error("only the participant itself can pause or resume its video")]
    VideoPauseForbidden,

    /// The media plane could not set up the participant's connection.
    #[error("the media plane could not add the participant: {0}")]
    MediaPlane(String),

    /// The HTTP request itself is malformed (body, path or query); the message names the part.
    #[error("{0}")]
    BadRequest(String),

    /// The control API refuses to listen beyond loopback: it has no authentication.
    #[error("refusing to serve the control API on {0}: it has no authentication, so it listens on loopback only (127.0.0.1, ::1)")]
    NotLoopback(SocketAddr),

    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}; pick another port (0 lets the system choose)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Error {
    /// Telegram's error name for this refusal (`type` in the control API's error body).
    pub fn telegram_type(&self) -> &'static str {
        match self {
            Error::CallInvalid { .. } => "GROUPCALL_INVALID",
            Error::CallForbidden { .. } => "GROUPCALL_FORBIDDEN",
            Error::AlreadyStarted { .. } => "GROUPCALL_ALREADY_STARTED",
            Error::AlreadyDiscarded { .. } => "GROUPCALL_ALREADY_DISCARDED",
            Error::NotStarted { .. } => "GROUPCALL_NOT_STARTED",
            Error::SsrcDuplicate { .. } => "GROUPCALL_SSRC_DUPLICATE_MUCH",
            Error::JoinMissing { .. } => "GROUPCALL_JOIN_MISSING",
            Error::DataJsonInvalid(_) => "DATA_JSON_INVALID",
            Error::JoinAsPeerInvalid { .. } => "JOIN_AS_PEER_INVALID",
            Error::UserAlreadyInvited { .. } => "USER_ALREADY_INVITED",
            Error::UserIdInvalid { .. } => "USER_ID_INVALID",
            Error::InviteForbiddenWithJoinAs { .. } => "INVITE_FORBIDDEN_WITH_JOINAS",
            Error::ScheduleDateInvalid { .. } => "SCHEDULE_DATE_INVALID",
            Error::ParticipantIdInvalid { .. } => "PARTICIPANT_ID_INVALID",
            Error::PeerIdInvalid { .. } => "PEER_ID_INVALID",
            Error::AdminRequired { .. } => "CHAT_ADMIN_REQUIRED",
            Error::VolumeInvalid { .. } => "USER_VOLUME_INVALID",
            Error::RaiseHandForbidden(_) => "RAISE_HAND_FORBIDDEN",
            Error::VideoStopForbidden => "VIDEO_STOP_FORBIDDEN",
            Error::VideoPauseForbidden => "VIDEO_PAUSE_FORBIDDEN",
            Error::MediaPlane(_) => "GROUPCALL_ADD_PARTICIPANTS_FAILED",
            Error::BadRequest(_) => "BAD_REQUEST",
            Error::NotLoopback(_) | Error::Bind { .. } => "INTERNAL",
        }
    }

    /// Telegram's error code, also the HTTP status the control API answers with.
    pub fn code(&self) -> u16 {
        match self {
            Error::CallForbidden { .. } | Error::AlreadyStarted { .. } => 403,
            Error::MediaPlane(_) | Error::NotLoopback(_) | Error::Bind { .. } => 500,
            _ => 400,
        }
    }

    /// For media-plane implementations: a failure to set up a participant's connection.
    pub fn media(message: impl Into<String>) -> Self {
        Error::MediaPlane(message.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
