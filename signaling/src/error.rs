//! The one error type of the signaling crate.
//!
//! Telegram's RPC errors and the local server's `{"error": {"type": …}}` bodies use the same names,
//! so both backends map them through [`Error::from_rpc`] into the same variants. Each message names
//! the method that failed, Telegram's error name (so it can be searched for), and what to do.

use std::path::PathBuf;
use std::time::Duration;

use crate::types::PeerId;

/// Errors returned by the signaling crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{method}: this needs admin rights in the chat (CHAT_ADMIN_REQUIRED); ask an admin to do it, or to give the account the \"manage video chats\" right")]
    ChatAdminRequired { method: &'static str },

    #[error("{method}: the account may not write in this chat (CHAT_WRITE_FORBIDDEN); it is restricted or not a member: join the chat or ask an admin to lift the restriction")]
    ChatWriteForbidden { method: &'static str },

    #[error("{method}: the server rejected the join payload JSON (DATA_JSON_INVALID); this is a bug in the payload builder, report it together with the payload")]
    DataJsonInvalid { method: &'static str },

    #[error("{method}: the server failed to add the participant (GROUPCALL_ADD_PARTICIPANTS_FAILED, a server-side error); retry the join in a few seconds")]
    AddParticipantsFailed { method: &'static str },

    #[error("{method}: the group call has ended or this account may not take part (GROUPCALL_FORBIDDEN); stop, or fetch the chat's current call and join that one")]
    GroupCallForbidden { method: &'static str },

    #[error("{method}: no such group call (GROUPCALL_INVALID); the id or access hash is wrong or the call was replaced: resolve the chat's call again")]
    GroupCallInvalid { method: &'static str },

    #[error("{method}: the server refused the payload's SSRC as a duplicate on {attempts} attempt(s) (GROUPCALL_SSRC_DUPLICATE_MUCH); the payload factory must return a payload with a fresh random SSRC every time it is called")]
    SsrcDuplicate { method: &'static str, attempts: u32 },

    #[error("{method}: this peer cannot be joined as in this call (JOIN_AS_PEER_INVALID); pick one from join_as_candidates(), or join as the account itself")]
    JoinAsPeerInvalid { method: &'static str },

    #[error("{method}: the conference public key was rejected (PUBLIC_KEY_INVALID); generate a fresh key pair and block")]
    PublicKeyInvalid { method: &'static str },

    /// Refused before anything is sent: a join with [`crate::ConferenceKey`] material would
    /// announce end-to-end encryption that this engine does not perform (nothing generates the
    /// key pair or the block, and media frames go out unencrypted), so the server or the other
    /// participants would be told something false.
    #[error("E2E conference calls are not supported yet: nothing generates the conference key pair or encrypts media frames; join without JoinOptions::conference (only ordinary group calls work)")]
    ConferenceUnsupported,

    /// The backend has no screen sharing (`phone.joinGroupCallPresentation`).
    #[error("this signaling backend cannot start a screen share; share the screen through Telegram or the local server")]
    PresentationUnsupported,

    #[error("{method}: the call has already started (GROUPCALL_ALREADY_STARTED); nothing to start, join it")]
    AlreadyStarted { method: &'static str },

    #[error("{method}: the channel is invalid or unknown to this account (CHANNEL_INVALID); resolve it again by username or link so that its access hash is current")]
    ChannelInvalid { method: &'static str },

    #[error("{method}: the peer is invalid for this account (PEER_ID_INVALID); resolve the chat again by username or link")]
    PeerIdInvalid { method: &'static str },

    #[error("{method}: the schedule date was refused (SCHEDULE_DATE_INVALID); give a unix time in the future, within Telegram's scheduling window (days, not months)")]
    ScheduleDateInvalid { method: &'static str },

    #[error("{method}: this kind of chat cannot have a group call (CHAT_TYPE_INVALID); use a group, supergroup or channel")]
    ChatTypeInvalid { method: &'static str },

    #[error("{method}: nobody can be invited while joined as a channel (INVITE_FORBIDDEN_WITH_JOINAS); join as the account itself to invite")]
    InviteForbiddenWithJoinAs { method: &'static str },

    #[error("{method}: the user was already invited (USER_ALREADY_INVITED); nothing to do")]
    UserAlreadyInvited { method: &'static str },

    #[error("{method}: the account is not a member of the chat (USER_NOT_PARTICIPANT); join the chat first")]
    UserNotParticipant { method: &'static str },

    #[error("{method}: the server no longer counts this participant as joined (GROUPCALL_JOIN_MISSING); join again with a fresh payload")]
    JoinMissing { method: &'static str },

    #[error("{method}: that participant is not in the call (PARTICIPANT_ID_INVALID); refetch the participant list")]
    ParticipantIdInvalid { method: &'static str },

    #[error("{method}: Telegram asks to wait {seconds} s before calling it again (FLOOD_WAIT), more than this client waits on its own ({max_wait:?}); retry later, and call it less often")]
    FloodWait {
        method: &'static str,
        seconds: u32,
        max_wait: Duration,
    },

    /// Any other error the server named.
    #[error("{method} failed: {code} {name}{}{}; see the method's error list on core.telegram.org", value.map(|v| format!(" ({v})")).unwrap_or_default(), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Rpc {
        method: &'static str,
        code: i32,
        name: String,
        value: Option<u32>,
        message: Option<String>,
    },

    #[error(
        "{method}: the connection to Telegram failed ({message}); check connectivity and retry"
    )]
    Network {
        method: &'static str,
        message: String,
    },

    #[error("{method}: could not talk to the local server at {url} ({message}); check that it is running there (`groupcall serve` prints its address)")]
    Http {
        method: &'static str,
        url: String,
        message: String,
    },

    #[error("{method}: the server's reply could not be understood ({problem}); the server and this client disagree about the protocol: report it")]
    BadResponse {
        method: &'static str,
        problem: String,
    },

    #[error("the join was accepted but no connection answer (updateGroupCallConnection) arrived within {waited:?}; leave and join again")]
    NoAnswer { waited: Duration },

    #[error("the server's connection answer is not usable: {0}")]
    BadAnswer(#[source] groupcall_media::Error),

    #[error("could not make a fresh join payload: {0}")]
    Payload(#[source] groupcall_media::Error),

    #[error("the session is not logged in; log in (phone, code, 2FA password) or set SESSION to the session string of a logged-in user account")]
    NotAuthorized,

    #[error("the session belongs to a bot account, and Telegram does not let bots join group calls; log in with a user account")]
    BotAccount,

    #[error("login failed at the {step} step: {message}")]
    Login { step: &'static str, message: String },

    #[error("session file {}: {source}; check the path and its permissions (the file must be readable and writable by this user only)", path.display())]
    SessionFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the session is not valid ({0}); export a fresh session string or log in again")]
    Session(String),

    /// The stdio line protocol broke down (the input ended, the output closed).
    #[error("stdio signaling: {0}")]
    Stdio(String),

    #[error("configuration: {0}")]
    Config(String),

    #[error("cannot read {input:?} as a chat or call ({problem}); use @username, a t.me link, a t.me/call/… link or a numeric id such as -1001234567890")]
    ChatReference { input: String, problem: String },

    #[error("nothing named {0:?} exists; check the username or link")]
    ChatNotFound(String),

    #[error("{0} has no group call at the moment; start one (create_call) or wait for it")]
    NoActiveCall(PeerId),

    #[error("no access hash is known for {0}; resolve it first (by username, link, or a participant list that mentions it)")]
    UnknownPeer(PeerId),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("{0} is not supported by this backend")]
    Unsupported(&'static str),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps a server-named error (Telegram RPC error or local-server error body) to its variant.
    /// `name` is Telegram's error name with any number removed (`FLOOD_WAIT`, value 31).
    pub fn from_rpc(
        method: &'static str,
        code: i32,
        name: &str,
        value: Option<u32>,
        message: Option<String>,
    ) -> Error {
        if let Some(seconds) = value {
            if code == 420 || name.starts_with("FLOOD_") {
                // `max_wait` is filled in by the retry loop if it gives up.
                return Error::FloodWait {
                    method,
                    seconds,
                    max_wait: Duration::ZERO,
                };
            }
        }
        match name {
            "CHAT_ADMIN_REQUIRED" => Error::ChatAdminRequired { method },
            "CHAT_WRITE_FORBIDDEN" => Error::ChatWriteForbidden { method },
            "DATA_JSON_INVALID" => Error::DataJsonInvalid { method },
            "GROUPCALL_ADD_PARTICIPANTS_FAILED" => Error::AddParticipantsFailed { method },
            "GROUPCALL_FORBIDDEN" => Error::GroupCallForbidden { method },
            "GROUPCALL_INVALID" => Error::GroupCallInvalid { method },
            "GROUPCALL_SSRC_DUPLICATE_MUCH" => Error::SsrcDuplicate {
                method,
                attempts: 1,
            },
            "JOIN_AS_PEER_INVALID" => Error::JoinAsPeerInvalid { method },
            "PUBLIC_KEY_INVALID" => Error::PublicKeyInvalid { method },
            "GROUPCALL_ALREADY_STARTED" => Error::AlreadyStarted { method },
            "CHANNEL_INVALID" | "CHANNEL_PRIVATE" => Error::ChannelInvalid { method },
            "PEER_ID_INVALID" => Error::PeerIdInvalid { method },
            "SCHEDULE_DATE_INVALID" => Error::ScheduleDateInvalid { method },
            "CHAT_TYPE_INVALID" => Error::ChatTypeInvalid { method },
            "INVITE_FORBIDDEN_WITH_JOINAS" => Error::InviteForbiddenWithJoinAs { method },
            "USER_ALREADY_INVITED" => Error::UserAlreadyInvited { method },
            "USER_NOT_PARTICIPANT" => Error::UserNotParticipant { method },
            "GROUPCALL_JOIN_MISSING" => Error::JoinMissing { method },
            "PARTICIPANT_ID_INVALID" => Error::ParticipantIdInvalid { method },
            _ => Error::Rpc {
                method,
                code,
                name: name.to_owned(),
                value,
                message,
            },
        }
    }

    /// A server-side hiccup worth retrying after a pause (Telegram 500-class and -503 timeouts,
    /// and its explicit "failed to add participants").
    pub fn is_transient(&self) -> bool {
        match self {
            Error::AddParticipantsFailed { .. } => true,
            Error::Rpc { code, .. } => *code >= 500 || *code == -503,
            _ => false,
        }
    }

    /// Whether the server has ended the call or shut this account out of it, so that rejoining
    /// the same call cannot help.
    pub fn is_call_over(&self) -> bool {
        matches!(
            self,
            Error::GroupCallForbidden { .. } | Error::GroupCallInvalid { .. }
        )
    }
}
