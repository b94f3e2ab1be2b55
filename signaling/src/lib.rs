//! # groupcall-signaling: how a join payload reaches a server and the answer comes back
//!
//! Where it sits: `engine -> signaling -> media`. The engine gets a fresh
//! [`groupcall_media::JoinPayload`] from `media`, hands it to a [`Signaling`] backend's
//! [`Signaling::join`], and gets back the server's [`groupcall_media::ServerAnswer`], which it
//! gives to `media`'s transport. While the call runs, the backend's [`UpdateStream`] tells the
//! engine who joined and left (with their SSRCs), when the server dropped this participant, and
//! when the call ended.
//!
//! Two backends implement the one trait: [`telegram::TelegramSignaling`] (`phone.*` over MTProto
//! with grammers, as a user account) and [`local::LocalSignaling`] (the local server's HTTP
//! control API, `sfu/README.md`). Protocol logic is tested without a network: the Telegram
//! backend's network sits behind a small internal invoker that tests replace with scripted TL.

mod bounded;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod local;
pub mod retry;
mod signaling;
pub mod stdio;
pub mod telegram;
pub mod types;
pub mod updates;

pub use error::{Error, Result};
pub use retry::{PayloadFactory, RetryPolicy};
pub use signaling::Signaling;
pub use types::{
    CallId, CallInfo, CallRef, CallState, ConferenceKey, CreateCall, JoinOptions, Joined,
    Participant, ParticipantEdit, ParticipantPage, ParticipantQuery, ParticipantVideo, PeerId,
    SignalingUpdate, SourceGroup,
};
pub use updates::UpdateStream;
