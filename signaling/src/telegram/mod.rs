//! The Telegram backend: `phone.*` over MTProto with grammers 0.11 (TL layer 230), as a user.
//!
//! Layers, top to bottom: the [`Signaling`] methods (what to ask, what the answer means), the
//! request builders in `requests` (pure, golden-tested), `call` (FLOOD_WAIT handling, decoding,
//! error mapping) and the `Invoker` seam (bytes to Telegram and back). The update loop feeds
//! `convert::dispatch`, which turns TL updates into [`crate::SignalingUpdate`]s.

mod convert;
mod invoker;
mod login;
mod requests;
mod session;
mod target;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use grammers_client::sender::{
    AutoSleep, ConnectionParams, InvocationError, SenderPool, UpdatesConfiguration,
};
use grammers_client::tl::{self, Deserializable, RemoteCall};
use grammers_client::Client;
use groupcall_media::{JoinPayload, ServerAnswer};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::retry::{join_with_retries, with_flood_wait, PayloadFactory, RetryPolicy};
use crate::signaling::Signaling;
use crate::types::{
    CallId, CallInfo, CallRef, CallState, CreateCall, JoinOptions, Joined, Participant,
    ParticipantEdit, ParticipantPage, ParticipantQuery, PeerId, SignalingUpdate,
};
use crate::updates::{wait_for_answer, JoinedState, UpdateHub, UpdateStream};
use invoker::{GrammersInvoker, Invoker};
use requests::names;

pub use login::{LoginPrompt, StdinPrompt};
pub use session::{Secret, SessionStoreError, StoredSession};
pub use target::{parse_target, Target};

/// Where the MTProto session comes from.
#[derive(Clone, Debug)]
pub enum SessionSource {
    /// A session file, created (mode 0600) if missing. Interactive logins persist here.
    File(PathBuf),
    /// A session string (Telethon `StringSession` format), e.g. from the `SESSION` variable.
    String(Secret),
}

/// What the Telegram backend needs to connect. `Debug` shows no secrets.
#[derive(Clone, Debug)]
pub struct TelegramConfig {
    /// From <https://my.telegram.org>.
    pub api_id: i32,
    pub api_hash: Secret,
    pub session: SessionSource,
    pub retry: RetryPolicy,
}

impl TelegramConfig {
    /// Reads `API_ID`, `API_HASH` and `SESSION` (a session string); without `SESSION`,
    /// `SESSION_FILE` names a session file instead.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let api_id = var("API_ID").ok_or_else(|| {
            Error::Config("API_ID is not set; get one at https://my.telegram.org".into())
        })?;
        let api_id: i32 = api_id
            .trim()
            .parse()
            .map_err(|_| Error::Config(format!("API_ID must be a number, not {api_id:?}")))?;
        let api_hash = var("API_HASH").ok_or_else(|| {
            Error::Config("API_HASH is not set; get one at https://my.telegram.org".into())
        })?;
        let session = match (var("SESSION"), var("SESSION_FILE")) {
            (Some(s), _) => SessionSource::String(Secret::new(s)),
            (None, Some(f)) => SessionSource::File(PathBuf::from(f)),
            (None, None) => {
                return Err(Error::Config(
                    "set SESSION to a session string, or SESSION_FILE to a session file made by a login".into(),
                ))
            }
        };
        Ok(TelegramConfig {
            api_id,
            api_hash: Secret::new(api_hash),
            session,
            retry: RetryPolicy::default(),
        })
    }
}

/// What [`TelegramSignaling::resolve`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedCall {
    pub call: CallRef,
    /// The chat the call belongs to (none for call links).
    pub chat: Option<PeerId>,
    /// The speaker invite hash from the link, to put in [`JoinOptions::invite_hash`].
    pub invite_hash: Option<String>,
}

/// The Telegram backend. Cheap to clone; the connection closes when the last clone is dropped.
#[derive(Clone)]
pub struct TelegramSignaling {
    inner: Arc<Inner>,
}

struct Inner {
    invoker: Arc<dyn Invoker>,
    hub: UpdateHub,
    policy: RetryPolicy,
    /// Access hashes seen in replies, by peer.
    hashes: Mutex<HashMap<PeerId, i64>>,
    me: Mutex<Option<PeerId>>,
    session: Option<Arc<StoredSession>>,
    client: Option<Client>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().map(std::mem::take).unwrap_or_default() {
            t.abort();
        }
        if let Some(c) = &self.client {
            c.disconnect();
        }
        // The sender pool's task holds the store too, and an aborted task is dropped whenever
        // its runtime gets to it (or never, at runtime shutdown): write pending changes now.
        if let Some(s) = &self.session {
            if let Err(e) = s.flush() {
                tracing::warn!("{e}");
            }
        }
    }
}

impl std::fmt::Debug for TelegramSignaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramSignaling")
            .field("me", &self.me())
            .finish_non_exhaustive()
    }
}

/// A grammers client started on a session, not yet checked or logged in.
struct Started {
    client: Client,
    session: Arc<StoredSession>,
    runner: JoinHandle<()>,
    updates: tokio::sync::mpsc::Receiver<grammers_client::session::updates::UpdatesLike>,
}

fn start(config: &TelegramConfig) -> Result<Started> {
    let session = Arc::new(match &config.session {
        SessionSource::File(path) => StoredSession::open(path.clone())?,
        SessionSource::String(s) => StoredSession::from_string(s)?,
    });
    // grammers would sleep through FLOOD_WAITs of up to a minute by itself; this crate does
    // that instead (bounded, logged, tested), so grammers only retries dropped connections.
    let params = ConnectionParams {
        retry_policy: Box::new(AutoSleep {
            tries: NonZeroU32::MIN,
            threshold: Duration::ZERO,
            io_errors_as_flood_of: Some(Duration::from_secs(1)),
        }),
        ..Default::default()
    };
    let pool = SenderPool::with_configuration(Arc::clone(&session), config.api_id, params);
    let client = Client::new(pool.handle);
    let runner = tokio::spawn(pool.runner.run());
    Ok(Started {
        client,
        session,
        runner,
        updates: pool.updates,
    })
}

/// Maps a grammers invocation error to this crate's error for `method`.
pub(crate) fn map_invocation(method: &'static str, e: InvocationError) -> Error {
    match e {
        InvocationError::Rpc(rpc) => {
            if rpc.code == 401 {
                return Error::NotAuthorized;
            }
            Error::from_rpc(method, rpc.code, &rpc.name, rpc.value, None)
        }
        InvocationError::Deserialize(d) => Error::BadResponse {
            method,
            problem: d.to_string(),
        },
        InvocationError::Session(s) => Error::Session(s.to_string()),
        other => Error::Network {
            method,
            message: other.to_string(),
        },
    }
}

impl TelegramSignaling {
    /// Connects with an already logged-in session (file or string). Fails with
    /// [`Error::NotAuthorized`] if it is not logged in, [`Error::BotAccount`] for a bot.
    pub async fn connect(config: TelegramConfig) -> Result<Self> {
        let started = start(&config)?;
        Self::finish(started, config.retry).await
    }

    /// Connects, logging in first (phone, code, 2FA password through `prompt`) if the session
    /// is not logged in yet. With a file session the login is kept for next time.
    pub async fn login(config: TelegramConfig, prompt: &mut dyn LoginPrompt) -> Result<Self> {
        let started = start(&config)?;
        let probe = Self::from_invoker(
            Arc::new(GrammersInvoker {
                client: started.client.clone(),
                session: Arc::clone(&started.session),
            }),
            config.retry.clone(),
        );
        match probe.check_account().await {
            Ok(_) => {}
            Err(Error::NotAuthorized) => {
                if let Err(e) = login::interactive(&started.client, &config.api_hash, prompt).await
                {
                    started.runner.abort();
                    return Err(e);
                }
            }
            Err(e) => {
                started.runner.abort();
                return Err(e);
            }
        }
        Self::finish(started, config.retry).await
    }

    async fn finish(started: Started, policy: RetryPolicy) -> Result<Self> {
        let Started {
            client,
            session,
            runner,
            updates,
        } = started;
        let mut this = Self::from_invoker(
            Arc::new(GrammersInvoker {
                client: client.clone(),
                session: Arc::clone(&session),
            }),
            policy,
        );
        {
            // Only this clone exists yet, so the Arc is unique.
            let inner = Arc::get_mut(&mut this.inner).ok_or(Error::Config(
                "internal: backend shared before it was started".into(),
            ))?;
            inner.session = Some(session);
            inner.client = Some(client.clone());
            inner.tasks.get_mut().map(|t| t.push(runner)).ok();
        }
        this.check_account().await?;
        let stream = client
            .stream_updates(updates, UpdatesConfiguration { catch_up: false })
            .await
            .map_err(|e| Error::Session(e.to_string()))?;
        let pump = tokio::spawn(update_loop(stream, this.inner.hub.clone()));
        this.inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pump);
        Ok(this)
    }

    /// A backend over any invoker; the tests' entry point.
    pub(crate) fn from_invoker(invoker: Arc<dyn Invoker>, policy: RetryPolicy) -> Self {
        TelegramSignaling {
            inner: Arc::new(Inner {
                invoker,
                hub: UpdateHub::new(),
                policy,
                hashes: Mutex::default(),
                me: Mutex::default(),
                session: None,
                client: None,
                tasks: Mutex::default(),
            }),
        }
    }

    /// The logged-in user, once [`TelegramSignaling::connect`] has checked it.
    pub fn me(&self) -> Option<PeerId> {
        *self.inner.me.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session as a string, to put in `SESSION` for unattended runs. Whoever has it is
    /// logged in as this account: store it like a password.
    pub fn export_session_string(&self) -> Result<Secret> {
        self.inner
            .session
            .as_ref()
            .ok_or(Error::Unsupported(
                "exporting a session without a session store",
            ))?
            .to_string_session()
    }

    /// Checks that the session is logged in as a user (bots cannot join group calls), and
    /// remembers who that is.
    async fn check_account(&self) -> Result<PeerId> {
        let users = self
            .call(
                names::GET_USERS,
                &tl::functions::users::GetUsers {
                    id: vec![tl::enums::InputUser::UserSelf],
                },
            )
            .await?;
        let me = match users.first() {
            Some(tl::enums::User::User(u)) => {
                if u.bot {
                    return Err(Error::BotAccount);
                }
                u.id
            }
            _ => {
                return Err(Error::BadResponse {
                    method: names::GET_USERS,
                    problem: "no user came back for the logged-in account".into(),
                })
            }
        };
        self.remember(&users, &[]);
        let peer = PeerId::User(me);
        *self.inner.me.lock().unwrap_or_else(|p| p.into_inner()) = Some(peer);
        Ok(peer)
    }

    /// Sends `request`, sleeping through FLOOD_WAITs as the policy allows, and decodes its result.
    async fn call<R>(&self, method: &'static str, request: &R) -> Result<R::Return>
    where
        R: RemoteCall + Sync,
        R::Return: Send,
    {
        let body = request.to_bytes();
        let invoker = &self.inner.invoker;
        with_flood_wait(&self.inner.policy, || {
            let body = body.clone();
            async move {
                let bytes = invoker
                    .invoke(body)
                    .await
                    .map_err(|e| map_invocation(method, e))?;
                R::Return::from_bytes(&bytes).map_err(|e| Error::BadResponse {
                    method,
                    problem: e.to_string(),
                })
            }
        })
        .await
    }

    fn remember(&self, users: &[tl::enums::User], chats: &[tl::enums::Chat]) {
        let found = convert::access_hashes(users, chats);
        if found.is_empty() {
            return;
        }
        let mut hashes = self.inner.hashes.lock().unwrap_or_else(|p| p.into_inner());
        hashes.extend(found);
    }

    async fn access_hash(&self, peer: PeerId) -> Result<i64> {
        let cached = self
            .inner
            .hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .copied();
        if let Some(h) = cached {
            return Ok(h);
        }
        self.inner
            .invoker
            .cached_access_hash(peer)
            .await
            .ok_or(Error::UnknownPeer(peer))
    }

    async fn input_peer(&self, peer: PeerId) -> Result<tl::enums::InputPeer> {
        if Some(peer) == self.me() {
            return Ok(tl::enums::InputPeer::PeerSelf);
        }
        Ok(match peer {
            PeerId::Chat(chat_id) => tl::types::InputPeerChat { chat_id }.into(),
            PeerId::User(user_id) => tl::types::InputPeerUser {
                user_id,
                access_hash: self.access_hash(peer).await?,
            }
            .into(),
            PeerId::Channel(channel_id) => tl::types::InputPeerChannel {
                channel_id,
                access_hash: self.access_hash(peer).await?,
            }
            .into(),
        })
    }

    async fn input_user(&self, peer: PeerId) -> Result<tl::enums::InputUser> {
        match peer {
            _ if Some(peer) == self.me() => Ok(tl::enums::InputUser::UserSelf),
            PeerId::User(user_id) => Ok(tl::types::InputUser {
                user_id,
                access_hash: self.access_hash(peer).await?,
            }
            .into()),
            other => Err(Error::InvalidArgument(format!(
                "only users can be invited, and {other} is not a user"
            ))),
        }
    }

    /// Finds the call that `target` names: `@username`, a t.me link (a speaker invite hash in
    /// it is returned too), a private invite link of a chat the account is in, a `t.me/call/…`
    /// link, or a numeric chat id (`-100…`).
    pub async fn resolve(&self, target: &str) -> Result<ResolvedCall> {
        match parse_target(target)? {
            Target::CallSlug(slug) => Ok(ResolvedCall {
                call: CallRef::Slug(slug),
                chat: None,
                invite_hash: None,
            }),
            Target::Username {
                username,
                invite_hash,
            } => {
                let chat = self.resolve_username(&username).await?;
                self.resolved(chat, invite_hash).await
            }
            Target::Peer { peer, invite_hash } => self.resolved(peer, invite_hash).await,
            Target::ChatInvite(hash) => {
                let chat = self.resolve_invite(&hash).await?;
                self.resolved(chat, None).await
            }
        }
    }

    async fn resolved(&self, chat: PeerId, invite_hash: Option<String>) -> Result<ResolvedCall> {
        Ok(ResolvedCall {
            call: CallRef::Id(self.call_of_chat(chat).await?),
            chat: Some(chat),
            invite_hash,
        })
    }

    async fn resolve_username(&self, username: &str) -> Result<PeerId> {
        let reply = self
            .call(
                names::RESOLVE_USERNAME,
                &tl::functions::contacts::ResolveUsername {
                    username: username.to_owned(),
                    referer: None,
                },
            )
            .await;
        let tl::enums::contacts::ResolvedPeer::Peer(r) = match reply {
            Err(Error::Rpc { name, .. })
                if name == "USERNAME_NOT_OCCUPIED" || name == "USERNAME_INVALID" =>
            {
                return Err(Error::ChatNotFound(format!("@{username}")))
            }
            other => other?,
        };
        self.remember(&r.users, &r.chats);
        match convert::peer_id(&r.peer) {
            PeerId::User(_) => Err(Error::ChatReference {
                input: format!("@{username}"),
                problem: "it is a user, and users have no group calls".into(),
            }),
            chat => Ok(chat),
        }
    }

    async fn resolve_invite(&self, hash: &str) -> Result<PeerId> {
        let reply = self
            .call(
                names::CHECK_INVITE,
                &tl::functions::messages::CheckChatInvite {
                    hash: hash.to_owned(),
                },
            )
            .await;
        let chat = match reply {
            Err(Error::Rpc { name, .. }) if name.starts_with("INVITE_HASH_") => {
                return Err(Error::ChatNotFound(format!("invite link +{hash}")))
            }
            Err(e) => return Err(e),
            Ok(tl::enums::ChatInvite::Already(a)) => a.chat,
            Ok(tl::enums::ChatInvite::Peek(p)) => p.chat,
            Ok(tl::enums::ChatInvite::Invite(_)) => {
                return Err(Error::UserNotParticipant {
                    method: names::CHECK_INVITE,
                })
            }
        };
        self.remember(&[], std::slice::from_ref(&chat));
        match chat {
            tl::enums::Chat::Chat(c) => Ok(PeerId::Chat(c.id)),
            tl::enums::Chat::Forbidden(c) => Ok(PeerId::Chat(c.id)),
            tl::enums::Chat::Channel(c) => Ok(PeerId::Channel(c.id)),
            tl::enums::Chat::ChannelForbidden(c) => Ok(PeerId::Channel(c.id)),
            _ => Err(Error::ChatTypeInvalid {
                method: names::CHECK_INVITE,
            }),
        }
    }

    /// The call currently running (or scheduled) in `chat`, from its full info.
    pub async fn call_of_chat(&self, chat: PeerId) -> Result<CallId> {
        let (method, full) = match chat {
            PeerId::Channel(channel_id) => (
                names::FULL_CHANNEL,
                self.call(
                    names::FULL_CHANNEL,
                    &tl::functions::channels::GetFullChannel {
                        channel: tl::types::InputChannel {
                            channel_id,
                            access_hash: self.access_hash(chat).await?,
                        }
                        .into(),
                    },
                )
                .await?,
            ),
            PeerId::Chat(chat_id) => (
                names::FULL_CHAT,
                self.call(
                    names::FULL_CHAT,
                    &tl::functions::messages::GetFullChat { chat_id },
                )
                .await?,
            ),
            PeerId::User(_) => {
                return Err(Error::ChatReference {
                    input: chat.to_string(),
                    problem: "it is a user, and users have no group calls".into(),
                })
            }
        };
        let tl::enums::messages::ChatFull::Full(full) = full;
        self.remember(&full.users, &full.chats);
        let call = match &full.full_chat {
            tl::enums::ChatFull::Full(f) => f.call.clone(),
            tl::enums::ChatFull::ChannelFull(f) => f.call.clone(),
            tl::enums::ChatFull::CommunityFull(_) => return Err(Error::ChatTypeInvalid { method }),
        };
        match call {
            None => Err(Error::NoActiveCall(chat)),
            Some(c) => convert::call_id(&c).ok_or_else(|| Error::BadResponse {
                method,
                problem: "the chat's call is not an id/access-hash pair".into(),
            }),
        }
    }

    /// Unpacks an `Updates` reply, keeping the access hashes it reveals. The updates themselves
    /// also arrive through the update stream, which is where they are published.
    fn updates_reply(&self, reply: tl::enums::Updates) -> convert::Unpacked {
        let reply = convert::unpack(reply);
        self.remember(&reply.users, &reply.chats);
        reply
    }
}

/// Reads the MTProto update stream for as long as the client runs.
async fn update_loop(mut stream: grammers_client::client::UpdateStream, hub: UpdateHub) {
    let reason = loop {
        match stream.next_raw().await {
            Ok((update, _, _)) => convert::dispatch(&hub, &update),
            Err(InvocationError::Dropped(why)) => break why.to_owned(),
            Err(e) => {
                tracing::warn!(error = %e, "Telegram update stream failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    hub.publish(SignalingUpdate::Ended {
        call: None,
        reason: format!("the Telegram connection closed ({reason})"),
    });
}

/// What a join reply said besides success.
#[derive(Default)]
struct JoinReply {
    answer_json: Option<String>,
    call: Option<CallId>,
    participant: Option<Participant>,
}

fn read_join_reply(updates: &[tl::enums::Update], ssrc: u32) -> JoinReply {
    read_reply(updates, ssrc, false)
}

/// [`read_join_reply`] for a join (`presentation` false) or a screen share's join.
fn read_reply(updates: &[tl::enums::Update], ssrc: u32, presentation: bool) -> JoinReply {
    let mut out = JoinReply::default();
    for u in updates {
        match u {
            tl::enums::Update::GroupCallConnection(c) if c.presentation == presentation => {
                let tl::enums::DataJson::Json(d) = &c.params;
                out.answer_json.get_or_insert_with(|| d.data.clone());
            }
            tl::enums::Update::GroupCallParticipants(p) => {
                if out.call.is_none() {
                    out.call = convert::call_id(&p.call);
                }
                for part in p.participants.iter().map(convert::participant) {
                    if part.source == ssrc && !part.left {
                        out.participant = Some(part);
                    }
                }
            }
            tl::enums::Update::GroupCall(g) => {
                out.call.get_or_insert(convert::call_info(&g.call).id);
            }
            _ => {}
        }
    }
    out
}

/// An `Updates` as the backend receives it (from a join reply or the update loop): TL bytes
/// deserialised with grammers' types, whose serialisation must then be a fixed point, and
/// unpacked, read as a join reply and converted update by update. For the fuzz target
/// (`crate::fuzz::tl_updates`).
pub(crate) fn fuzz_updates(data: &[u8]) {
    use grammers_client::tl::Serializable;
    let Ok(updates) = tl::enums::Updates::from_bytes(data) else {
        return;
    };
    let once = updates.to_bytes();
    let again = tl::enums::Updates::from_bytes(&once).expect("serialised TL deserialises");
    assert_eq!(
        again.to_bytes(),
        once,
        "TL serialisation is not a fixed point"
    );
    let unpacked = convert::unpack(updates);
    let _ = convert::access_hashes(&unpacked.users, &unpacked.chats);
    let reply = read_join_reply(&unpacked.updates, 1111);
    if let Some(p) = &reply.participant {
        assert!(p.source == 1111 && !p.left);
    }
    let hub = UpdateHub::new();
    let mut stream = hub.subscribe();
    for u in &unpacked.updates {
        let converted = convert::update(u);
        match (u, &converted) {
            (
                tl::enums::Update::GroupCallParticipants(p),
                Some(SignalingUpdate::Participants { participants, .. }),
            ) => {
                assert_eq!(p.participants.len(), participants.len());
            }
            (tl::enums::Update::GroupCallConnection(c), got) => {
                let tl::enums::DataJson::Json(d) = &c.params;
                assert_eq!(got.is_some(), ServerAnswer::parse(&d.data).is_ok());
            }
            _ => {}
        }
        convert::dispatch(&hub, u);
    }
    while stream.try_next().is_some() {}
}

fn validate_edit(edit: &ParticipantEdit) -> Result<()> {
    if edit.is_empty() {
        return Err(Error::InvalidArgument(
            "the participant edit changes nothing; set at least one field".into(),
        ));
    }
    if let Some(v) = edit.volume {
        if !(1..=20000).contains(&v) {
            return Err(Error::InvalidArgument(format!(
                "volume {v} is outside 1..=20000 (10000 is 100 %)"
            )));
        }
    }
    Ok(())
}

#[async_trait]
impl Signaling for TelegramSignaling {
    async fn join(
        &self,
        call: &CallRef,
        payloads: &mut PayloadFactory<'_>,
        options: &JoinOptions,
    ) -> Result<Joined> {
        // Before anything goes out, resolving the join-as peer included.
        if options.conference.is_some() {
            return Err(Error::ConferenceUnsupported);
        }
        let join_as = match options.join_as {
            Some(p) => self.input_peer(p).await?,
            None => tl::enums::InputPeer::PeerSelf,
        };
        // Subscribe before sending, so an answer that only comes through the stream is not missed.
        let mut stream = self.inner.hub.subscribe();
        let (payload, reply, attempts) =
            join_with_retries(&self.inner.policy, names::JOIN, payloads, |payload| {
                if let Some(c) = call.id() {
                    self.inner.hub.expect_sources(c.id, &payload.all_sources());
                }
                let request =
                    requests::join_group_call(call, join_as.clone(), payload.to_json(), options);
                async move { self.call(names::JOIN, &request).await }
            })
            .await?;
        let reply = self.updates_reply(reply);
        let found = read_join_reply(&reply.updates, payload.audio_ssrc());
        let answer_json = match found.answer_json {
            Some(a) => a,
            None => wait_for_answer(stream.raw(), self.inner.policy.answer_timeout).await?,
        };
        let answer = ServerAnswer::parse(&answer_json).map_err(Error::BadAnswer)?;
        self.inner.hub.record_answer(&answer_json);
        let call_id = call.id().or(found.call);
        if let Some(c) = call_id {
            self.inner.hub.set_joined(
                c,
                JoinedState {
                    sources: payload.all_sources(),
                    as_peer: options.join_as.or(self.me()),
                },
            );
        }
        Ok(Joined {
            answer,
            answer_json,
            payload,
            attempts,
            call: call_id,
            participant: found.participant,
        })
    }

    async fn join_presentation(&self, call: &CallRef, payload: &JoinPayload) -> Result<Joined> {
        let mut stream = self.inner.hub.subscribe();
        let request = requests::join_presentation(call, payload.to_json());
        let reply = self.call(names::JOIN_PRESENTATION, &request).await?;
        let reply = self.updates_reply(reply);
        let found = read_reply(&reply.updates, payload.audio_ssrc(), true);
        let answer_json = match found.answer_json {
            Some(a) => a,
            None => {
                crate::updates::wait_for_presentation_answer(
                    stream.raw(),
                    self.inner.policy.answer_timeout,
                )
                .await?
            }
        };
        let answer = ServerAnswer::parse(&answer_json).map_err(Error::BadAnswer)?;
        self.inner.hub.record_answer(&answer_json);
        Ok(Joined {
            answer,
            answer_json,
            payload: payload.clone(),
            attempts: 1,
            call: call.id().or(found.call),
            participant: found.participant,
        })
    }

    async fn leave_presentation(&self, call: &CallRef) -> Result<()> {
        match self
            .call(
                names::LEAVE_PRESENTATION,
                &requests::leave_presentation(call),
            )
            .await
        {
            Ok(reply) => {
                self.updates_reply(reply);
                Ok(())
            }
            Err(Error::JoinMissing { .. }) | Err(Error::GroupCallForbidden { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn leave(&self, call: &CallRef, source: u32) -> Result<()> {
        // Forget the join first: the server's "left" entry that follows is expected, not a removal.
        if let Some(c) = call.id() {
            self.inner.hub.clear_joined(c.id);
        }
        match self
            .call(names::LEAVE, &requests::leave(call, source))
            .await
        {
            Ok(reply) => {
                self.updates_reply(reply);
                Ok(())
            }
            Err(Error::JoinMissing { .. }) | Err(Error::GroupCallForbidden { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn check(&self, call: &CallRef, sources: &[u32]) -> Result<Vec<u32>> {
        match self
            .call(names::CHECK, &requests::check(call, sources))
            .await
        {
            Ok(joined) => Ok(joined.into_iter().map(|s| s as u32).collect()),
            // Telegram answers "not joined at all" with an error; to the caller it is "none of them".
            Err(Error::JoinMissing { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn participants(
        &self,
        call: &CallRef,
        query: &ParticipantQuery,
    ) -> Result<ParticipantPage> {
        let mut ids = Vec::with_capacity(query.peers.len());
        for p in &query.peers {
            ids.push(self.input_peer(*p).await?);
        }
        let request =
            requests::get_participants(call, ids, &query.sources, &query.offset, query.limit);
        let tl::enums::phone::GroupParticipants::Participants(page) =
            self.call(names::PARTICIPANTS, &request).await?;
        self.remember(&page.users, &page.chats);
        Ok(ParticipantPage {
            count: page.count,
            participants: page.participants.iter().map(convert::participant).collect(),
            next_offset: Some(page.next_offset).filter(|o| !o.is_empty()),
            version: page.version,
        })
    }

    async fn edit_participant(
        &self,
        call: &CallRef,
        participant: Option<PeerId>,
        edit: &ParticipantEdit,
    ) -> Result<()> {
        validate_edit(edit)?;
        let who = match participant {
            Some(p) => Some(p),
            // Joined as a channel: "self" is that channel's entry.
            None => call
                .id()
                .and_then(|c| self.inner.hub.joined(c.id))
                .and_then(|j| j.as_peer),
        };
        let peer = match who {
            Some(p) => self.input_peer(p).await?,
            None => tl::enums::InputPeer::PeerSelf,
        };
        let reply = self
            .call(names::EDIT, &requests::edit_participant(call, peer, edit))
            .await?;
        self.updates_reply(reply);
        Ok(())
    }

    fn updates(&self) -> UpdateStream {
        self.inner.hub.subscribe()
    }

    async fn watch(&self, call: &CallRef) -> Result<()> {
        self.call(names::GET_CALL, &requests::get_call(call, 1))
            .await
            .map(|_| ())
    }

    async fn get_call(&self, call: &CallRef) -> Result<CallState> {
        let tl::enums::phone::GroupCall::Call(g) = self
            .call(names::GET_CALL, &requests::get_call(call, 100))
            .await?;
        self.remember(&g.users, &g.chats);
        Ok(CallState {
            call: convert::call_info(&g.call),
            participants: g.participants.iter().map(convert::participant).collect(),
            next_offset: Some(g.participants_next_offset).filter(|o| !o.is_empty()),
        })
    }

    async fn create_call(&self, chat: Option<PeerId>, create: &CreateCall) -> Result<CallInfo> {
        let chat = chat.ok_or_else(|| {
            Error::InvalidArgument("Telegram creates calls in a chat: pass the chat".into())
        })?;
        if let PeerId::User(_) = chat {
            return Err(Error::ChatTypeInvalid {
                method: names::CREATE,
            });
        }
        let peer = self.input_peer(chat).await?;
        let request = requests::create_group_call(peer, rand::random::<i32>(), create);
        let reply = self.call(names::CREATE, &request).await?;
        let reply = self.updates_reply(reply);
        reply
            .updates
            .iter()
            .find_map(|u| match u {
                tl::enums::Update::GroupCall(g) => Some(convert::call_info(&g.call)),
                _ => None,
            })
            .ok_or(Error::BadResponse {
                method: names::CREATE,
                problem: "the reply has no updateGroupCall describing the new call".into(),
            })
    }

    async fn start_scheduled(&self, call: &CallRef) -> Result<()> {
        let reply = self
            .call(names::START_SCHEDULED, &requests::start_scheduled(call))
            .await?;
        self.updates_reply(reply);
        Ok(())
    }

    async fn join_as_candidates(
        &self,
        _call: &CallRef,
        chat: Option<PeerId>,
    ) -> Result<Vec<PeerId>> {
        let chat = chat.ok_or_else(|| {
            Error::InvalidArgument(
                "Telegram lists join-as peers per chat: pass the call's chat (ResolvedCall::chat)"
                    .into(),
            )
        })?;
        let peer = self.input_peer(chat).await?;
        let tl::enums::phone::JoinAsPeers::Peers(p) = self
            .call(names::JOIN_AS, &requests::get_join_as(peer))
            .await?;
        self.remember(&p.users, &p.chats);
        Ok(p.peers.iter().map(convert::peer_id).collect())
    }

    async fn invite(&self, call: &CallRef, users: &[PeerId]) -> Result<()> {
        let mut input = Vec::with_capacity(users.len());
        for u in users {
            input.push(self.input_user(*u).await?);
        }
        let reply = self
            .call(names::INVITE, &requests::invite(call, input))
            .await?;
        self.updates_reply(reply);
        Ok(())
    }

    async fn discard(&self, call: &CallRef) -> Result<()> {
        let reply = self.call(names::DISCARD, &requests::discard(call)).await?;
        self.updates_reply(reply);
        Ok(())
    }
}
