//! The [`Signaling`] trait: everything the engine asks of a group-call server, backend-neutral.

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::retry::PayloadFactory;
use crate::types::{
    CallInfo, CallRef, CallState, CreateCall, JoinOptions, Joined, ParticipantEdit,
    ParticipantPage, ParticipantQuery, PeerId,
};
use crate::updates::UpdateStream;
use groupcall_media::JoinPayload;

/// A group-call signaling backend: Telegram ([`crate::telegram::TelegramSignaling`]) or the
/// local server ([`crate::local::LocalSignaling`]).
///
/// Object safe, so an engine can hold `Arc<dyn Signaling>` and not care which server it talks to.
#[async_trait]
pub trait Signaling: Send + Sync {
    /// Joins `call`: sends a payload from `payloads`, and returns the server's connection answer.
    ///
    /// Refusals of the SSRC as a duplicate and transient server errors are retried with a fresh
    /// payload, up to the backend's [`crate::RetryPolicy::join_attempts`]; see [`PayloadFactory`].
    async fn join(
        &self,
        call: &CallRef,
        payloads: &mut PayloadFactory<'_>,
        options: &JoinOptions,
    ) -> Result<Joined>;

    /// Leaves `call`, naming the audio `source` the join used. Leaving a call that already ended,
    /// or that the server already dropped this participant from, succeeds.
    async fn leave(&self, call: &CallRef, source: u32) -> Result<()>;

    /// Which of `sources` the server still counts as joined. A missing own source means the
    /// server dropped this participant: rejoin with a fresh payload.
    async fn check(&self, call: &CallRef, sources: &[u32]) -> Result<Vec<u32>>;

    /// One page of participants, all or only those with the given sources or peers.
    async fn participants(
        &self,
        call: &CallRef,
        query: &ParticipantQuery,
    ) -> Result<ParticipantPage>;

    /// Changes a participant: `None` is this participant (as whoever it joined as); another peer
    /// needs admin rights.
    async fn edit_participant(
        &self,
        call: &CallRef,
        participant: Option<PeerId>,
        edit: &ParticipantEdit,
    ) -> Result<()>;

    /// Mutes, unmutes, sets volume, raises the hand or changes the video flags of this participant.
    async fn edit_self(&self, call: &CallRef, edit: &ParticipantEdit) -> Result<()> {
        self.edit_participant(call, None, edit).await
    }

    /// Starts sharing a screen in `call`, which this participant has joined: a second,
    /// send-only connection described by `payload` (its own ICE credentials, certificate and
    /// sources: `phone.joinGroupCallPresentation`). Returns the server's answer for it.
    async fn join_presentation(&self, call: &CallRef, payload: &JoinPayload) -> Result<Joined> {
        let _ = (call, payload);
        Err(Error::PresentationUnsupported)
    }

    /// Ends this participant's screen share (`phone.leaveGroupCallPresentation`). Ending a
    /// share that already ended succeeds.
    async fn leave_presentation(&self, call: &CallRef) -> Result<()> {
        let _ = call;
        Err(Error::PresentationUnsupported)
    }

    /// A new subscription to the updates of every call this backend watches.
    fn updates(&self) -> UpdateStream;

    /// Makes sure updates about `call` reach [`Signaling::updates`]. `join` does this by itself;
    /// call it to follow a call without joining it. Telegram's updates are account-wide, so
    /// there it only checks that the call exists.
    async fn watch(&self, call: &CallRef) -> Result<()>;

    /// The call's state and the first page of its participants.
    async fn get_call(&self, call: &CallRef) -> Result<CallState>;

    /// Starts (or schedules) a call in `chat`. Needs the right to manage video chats.
    /// Telegram requires the chat; the local server has no chats (the acting user creates the
    /// call and becomes its admin) and ignores it.
    async fn create_call(&self, chat: Option<PeerId>, create: &CreateCall) -> Result<CallInfo>;

    /// Starts a scheduled call now.
    async fn start_scheduled(&self, call: &CallRef) -> Result<()>;

    /// The peers this account may join as (itself, channels it owns, …). Telegram answers per
    /// chat and needs `chat` (see `ResolvedCall::chat`); the local server answers per call.
    async fn join_as_candidates(&self, call: &CallRef, chat: Option<PeerId>)
        -> Result<Vec<PeerId>>;

    /// Invites users to the call (they get a service message).
    async fn invite(&self, call: &CallRef, users: &[PeerId]) -> Result<()>;

    /// Ends the call for everyone. Needs admin rights.
    async fn discard(&self, call: &CallRef) -> Result<()>;
}
