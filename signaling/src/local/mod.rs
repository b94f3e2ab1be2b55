//! The local backend: the same [`Signaling`] trait over the local server's HTTP+JSON control API
//! and its per-call server-sent-event update streams (`sfu/README.md`).
//!
//! The local server speaks Telegram's error names and JSON shapes, so errors map through the same
//! [`Error::from_rpc`] and answers parse with the same `groupcall_media` types. There is no
//! authentication: the backend says which user it acts as (`peer`) in every request.

mod sse;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::StreamExt;
use groupcall_media::payload::WireSsrc;
use groupcall_media::{JoinPayload, ServerAnswer};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::retry::{join_with_retries, PayloadFactory, RetryPolicy};
use crate::signaling::Signaling;
use crate::types::{
    CallId, CallInfo, CallRef, CallState, CreateCall, JoinOptions, Joined, Participant,
    ParticipantEdit, ParticipantPage, ParticipantQuery, ParticipantVideo, PeerId, SignalingUpdate,
    SourceGroup,
};
use crate::updates::{JoinedState, UpdateHub, UpdateStream};

/// Telegram's method names, so that errors read the same for both backends.
mod names {
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
    pub const UPDATES: &str = "updates";
}

/// The local backend. Cheap to clone; update readers stop when the last clone is dropped.
#[derive(Clone)]
pub struct LocalSignaling {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `http://127.0.0.1:port`, without a trailing slash.
    base: String,
    /// The user this backend acts as.
    peer: PeerId,
    hub: UpdateHub,
    policy: RetryPolicy,
    /// One event-stream reader per watched call.
    watches: Mutex<HashMap<i64, JoinHandle<()>>>,
    /// Events the readers skipped for being over the parser's bounds.
    dropped_events: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(w) = self.watches.get_mut() {
            for (_, t) in w.drain() {
                t.abort();
            }
        }
    }
}

impl std::fmt::Debug for LocalSignaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSignaling")
            .field("base", &self.inner.base)
            .field("peer", &self.inner.peer)
            .finish_non_exhaustive()
    }
}

// ---- wire shapes (sfu/README.md "Objects") ----

#[derive(Deserialize)]
struct WireCall {
    id: i64,
    access_hash: i64,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    schedule_date: Option<i64>,
    #[serde(default)]
    rtmp_stream: bool,
    #[serde(default)]
    started: bool,
    #[serde(default)]
    discarded: bool,
    #[serde(default)]
    participants_count: i64,
    #[serde(default)]
    version: i64,
}

#[derive(Deserialize)]
struct WireParticipant {
    peer: i64,
    source: WireSsrc,
    #[serde(default)]
    muted: bool,
    #[serde(default)]
    can_self_unmute: bool,
    #[serde(default)]
    left: bool,
    #[serde(default)]
    just_joined: bool,
    #[serde(default)]
    date: i64,
    #[serde(default)]
    volume: Option<u32>,
    #[serde(default)]
    raise_hand_rating: Option<i64>,
    #[serde(default)]
    video_stopped: bool,
    #[serde(default)]
    video: Option<WireVideo>,
    #[serde(default)]
    presentation: Option<WireVideo>,
}

#[derive(Deserialize)]
struct WireVideo {
    endpoint: String,
    #[serde(default)]
    source_groups: Vec<WireGroup>,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    audio_source: Option<WireSsrc>,
}

#[derive(Deserialize)]
struct WireGroup {
    semantics: String,
    sources: Vec<WireSsrc>,
}

#[derive(Deserialize)]
struct WireJoined {
    params: String,
    #[serde(default)]
    participant: Option<WireParticipant>,
}

#[derive(Deserialize)]
struct WireCallState {
    call: WireCall,
    #[serde(default)]
    participants: Vec<WireParticipant>,
}

#[derive(Deserialize)]
struct WirePage {
    #[serde(default)]
    count: i64,
    participants: Vec<WireParticipant>,
    /// A string in the server's implementation; tolerated as a number or null as well.
    #[serde(default)]
    next_offset: Value,
    #[serde(default)]
    version: i64,
}

#[derive(Deserialize)]
struct WireSources {
    sources: Vec<WireSsrc>,
}

#[derive(Deserialize)]
struct WirePeers {
    peers: Vec<i64>,
}

#[derive(Deserialize)]
struct WireErrorBody {
    error: WireError,
}

#[derive(Deserialize)]
struct WireError {
    code: i32,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum WireUpdate {
    Participants {
        #[serde(default)]
        version: i64,
        participants: Vec<WireParticipant>,
    },
    Call {
        call: WireCall,
    },
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

fn peer_of(method: &'static str, id: i64) -> Result<PeerId> {
    PeerId::from_dialog_id(id).ok_or_else(|| Error::BadResponse {
        method,
        problem: format!("{id} is not a peer id"),
    })
}

impl WireCall {
    fn into_info(self) -> CallInfo {
        CallInfo {
            id: CallId {
                id: self.id,
                access_hash: self.access_hash,
            },
            title: self.title.filter(|t| !t.is_empty()),
            schedule_date: self.schedule_date.map(clamp_i32),
            rtmp_stream: self.rtmp_stream,
            started: self.started,
            discarded: self.discarded,
            participants_count: clamp_i32(self.participants_count),
            version: clamp_i32(self.version),
            join_muted: false,
            stream_dc_id: None,
        }
    }
}

impl WireVideo {
    fn into_video(self) -> ParticipantVideo {
        ParticipantVideo {
            endpoint: self.endpoint,
            source_groups: self
                .source_groups
                .into_iter()
                .map(|g| SourceGroup {
                    semantics: g.semantics,
                    sources: g.sources.into_iter().map(|s| s.0).collect(),
                })
                .collect(),
            audio_source: self.audio_source.map(|s| s.0),
            paused: self.paused,
        }
    }
}

impl Inner {
    fn participant(&self, method: &'static str, p: WireParticipant) -> Result<Participant> {
        let peer = peer_of(method, p.peer)?;
        Ok(Participant {
            peer,
            source: p.source.0,
            muted: p.muted,
            can_self_unmute: p.can_self_unmute,
            left: p.left,
            just_joined: p.just_joined,
            // The server has no `self` flag: this backend's own user is "self".
            is_self: peer == self.peer,
            min: false,
            date: clamp_i32(p.date),
            volume: p.volume,
            raise_hand_rating: p.raise_hand_rating,
            video_stopped: p.video_stopped,
            video: p.video.map(WireVideo::into_video),
            presentation: p.presentation.map(WireVideo::into_video),
        })
    }

    fn participants(
        &self,
        method: &'static str,
        ps: Vec<WireParticipant>,
    ) -> Result<Vec<Participant>> {
        ps.into_iter()
            .map(|p| self.participant(method, p))
            .collect()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request and decodes a JSON answer or the server's error body.
    async fn send<T: DeserializeOwned>(
        &self,
        method: &'static str,
        url: String,
        request: reqwest::RequestBuilder,
    ) -> Result<T> {
        let http_err = |e: reqwest::Error| Error::Http {
            method,
            url: url.clone(),
            message: e.to_string(),
        };
        let response = request.send().await.map_err(http_err)?;
        let status = response.status();
        let body = response.bytes().await.map_err(http_err)?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| Error::BadResponse {
                method,
                problem: e.to_string(),
            });
        }
        Err(error_from_body(method, &url, status, &body))
    }

    async fn get<T: DeserializeOwned>(&self, method: &'static str, path: &str) -> Result<T> {
        let url = self.url(path);
        let request = self.http.get(&url);
        self.send(method, url, request).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<T> {
        let url = self.url(path);
        let request = self.http.post(&url).json(body);
        self.send(method, url, request).await
    }
}

fn error_from_body(
    method: &'static str,
    url: &str,
    status: reqwest::StatusCode,
    body: &[u8],
) -> Error {
    match serde_json::from_slice::<WireErrorBody>(body) {
        Ok(WireErrorBody { error }) => {
            Error::from_rpc(method, error.code, &error.kind, None, error.message)
        }
        Err(_) => Error::Http {
            method,
            url: url.to_owned(),
            message: format!(
                "HTTP {status} without an error body: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        },
    }
}

impl LocalSignaling {
    /// A backend for the server at `base_url` (`http://127.0.0.1:<port>`), acting as `user`.
    pub fn new(base_url: impl Into<String>, user: PeerId) -> Result<Self> {
        Self::with_policy(base_url, user, RetryPolicy::default())
    }

    pub fn with_policy(
        base_url: impl Into<String>,
        user: PeerId,
        policy: RetryPolicy,
    ) -> Result<Self> {
        let base = base_url.into().trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(Error::Config(format!(
                "the local server address {base:?} must be an http:// URL, as `groupcall serve` prints it"
            )));
        }
        if !matches!(user, PeerId::User(_)) {
            return Err(Error::Config(format!(
                "the local backend acts as a user, and {user} is not one"
            )));
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(LocalSignaling {
            inner: Arc::new(Inner {
                http,
                base,
                peer: user,
                hub: UpdateHub::new(),
                policy,
                watches: Mutex::default(),
                dropped_events: AtomicU64::new(0),
            }),
        })
    }

    /// The user this backend acts as.
    pub fn user(&self) -> PeerId {
        self.inner.peer
    }

    /// How many server-sent events were skipped, over all watched calls, because a line or
    /// the event's data was larger than the parser keeps (1 MiB of data): the stream goes on
    /// with the next event, so a growing count is the only sign that updates were lost. Whoever
    /// relies on the roster should refetch it when this grows.
    pub fn dropped_events(&self) -> u64 {
        self.inner.dropped_events.load(Ordering::Relaxed)
    }

    fn peer_wire(&self) -> i64 {
        self.inner.peer.dialog_id()
    }

    fn call_id(&self, call: &CallRef) -> Result<CallId> {
        call.id().ok_or(Error::Unsupported(
            "joining by call link (slug) on the local server",
        ))
    }

    /// Opens the call's event stream, unless a reader for it is running already. Returns once
    /// the server has accepted the subscription, so nothing that happens afterwards is missed.
    async fn ensure_watch(&self, call: CallId) -> Result<()> {
        {
            let watches = self.inner.watches.lock().unwrap_or_else(|p| p.into_inner());
            if watches.get(&call.id).is_some_and(|t| !t.is_finished()) {
                return Ok(());
            }
        }
        let url = self.inner.url(&format!("/calls/{}/updates", call.id));
        let response = self
            .inner
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| Error::Http {
                method: names::UPDATES,
                url: url.clone(),
                message: e.to_string(),
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(error_from_body(names::UPDATES, &url, status, &body));
        }
        let reader = tokio::spawn(read_events(
            response,
            call,
            self.inner.hub.clone(),
            Arc::downgrade(&self.inner),
        ));
        let mut watches = self.inner.watches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = watches.insert(call.id, reader) {
            old.abort();
        }
        Ok(())
    }
}

/// Reads one call's event stream into the hub until the server ends it.
async fn read_events(
    response: reqwest::Response,
    call: CallId,
    hub: UpdateHub,
    backend: std::sync::Weak<Inner>,
) {
    let mut parser = sse::SseParser::default();
    let mut body = response.bytes_stream();
    let reason = loop {
        match body.next().await {
            None => break "the server closed the event stream".to_owned(),
            Some(Err(e)) => break format!("the event stream failed: {e}"),
            Some(Ok(chunk)) => {
                let dropped_before = parser.dropped();
                let events = parser.push(&chunk);
                let Some(inner) = backend.upgrade() else {
                    return;
                };
                let dropped = parser.dropped() - dropped_before;
                if dropped > 0 {
                    inner.dropped_events.fetch_add(dropped, Ordering::Relaxed);
                    tracing::warn!(
                        call = call.id,
                        dropped,
                        limit = sse::MAX_EVENT_DATA,
                        "skipped server-sent events larger than the limit; the participant list may be stale"
                    );
                    // Subscribers refetch the call's state, as after any missed update.
                    hub.publish(SignalingUpdate::Lagged { missed: dropped });
                }
                for data in events {
                    handle_event(&inner, &hub, call, &data);
                }
            }
        }
    };
    hub.publish(SignalingUpdate::Ended {
        call: Some(call),
        reason,
    });
}

fn handle_event(inner: &Inner, hub: &UpdateHub, call: CallId, data: &str) {
    let update: WireUpdate = match serde_json::from_str(data) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "skipping an event the local server sent that is not an update");
            return;
        }
    };
    match update {
        WireUpdate::Participants {
            version,
            participants,
        } => match inner.participants(names::UPDATES, participants) {
            Ok(ps) => hub.publish_participants(call, clamp_i32(version), ps),
            Err(e) => tracing::warn!(error = %e, "skipping a participants event"),
        },
        WireUpdate::Call { call } => {
            let info = call.into_info();
            hub.publish(if info.discarded {
                SignalingUpdate::CallDiscarded { call: info.id }
            } else {
                SignalingUpdate::CallChanged(info)
            });
        }
    }
}

/// An event stream as `read_events` reads it: `data` through the SSE parser whole, in two
/// chunks and byte by byte (the events must not depend on where the chunks end), then every
/// event through the update handler of a backend acting as user 1. For the fuzz target
/// (`crate::fuzz::sse_event`).
pub(crate) fn fuzz_event_stream(data: &[u8]) {
    thread_local! {
        static BACKEND: LocalSignaling = LocalSignaling::new("http://127.0.0.1:9", PeerId::User(1))
            .expect("a local backend needs no network to build");
    }
    let mut whole = sse::SseParser::default();
    let events = whole.push(data);
    let mut halves = sse::SseParser::default();
    let (a, b) = data.split_at(data.len() / 2);
    let mut split = halves.push(a);
    split.extend(halves.push(b));
    assert_eq!(split, events, "events depend on the chunking");
    let mut bytes = sse::SseParser::default();
    let single: Vec<String> = data.iter().flat_map(|b| bytes.push(&[*b])).collect();
    assert_eq!(single, events, "events depend on the chunking");
    BACKEND.with(|backend| {
        let call = CallId {
            id: 7,
            access_hash: 8,
        };
        let mut updates = backend.inner.hub.subscribe();
        for data in &events {
            handle_event(&backend.inner, &backend.inner.hub, call, data);
        }
        while let Some(u) = updates.try_next() {
            if let SignalingUpdate::Participants { participants, .. } = &u {
                let me = participants.iter().filter(|p| p.is_self);
                assert!(me.clone().all(|p| p.peer == PeerId::User(1)), "{u:?}");
            }
        }
    });
}

fn insert_some<T: serde::Serialize>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.into(), json!(v));
    }
}

#[async_trait]
impl Signaling for LocalSignaling {
    async fn join(
        &self,
        call: &CallRef,
        payloads: &mut PayloadFactory<'_>,
        options: &JoinOptions,
    ) -> Result<Joined> {
        if options.conference.is_some() {
            return Err(Error::ConferenceUnsupported);
        }
        let id = self.call_id(call)?;
        // Watch first, so that this participant's own "joined" entry reaches the stream.
        self.ensure_watch(id).await?;
        let path = format!("/calls/{}/join", id.id);
        let (payload, reply, attempts) =
            join_with_retries(&self.inner.policy, names::JOIN, payloads, |payload| {
                self.inner.hub.expect_sources(id.id, &payload.all_sources());
                let mut body = Map::new();
                body.insert("peer".into(), json!(self.peer_wire()));
                body.insert("params".into(), json!(payload.to_json()));
                body.insert("muted".into(), json!(options.muted));
                body.insert("video_stopped".into(), json!(options.video_stopped));
                insert_some(&mut body, "join_as", options.join_as.map(PeerId::dialog_id));
                insert_some(&mut body, "invite_hash", options.invite_hash.clone());
                let body = Value::Object(body);
                let path = &path;
                async move {
                    self.inner
                        .post::<WireJoined>(names::JOIN, path, &body)
                        .await
                }
            })
            .await?;
        let answer = ServerAnswer::parse(&reply.params).map_err(Error::BadAnswer)?;
        self.inner.hub.record_answer(&reply.params);
        self.inner.hub.set_joined(
            id,
            JoinedState {
                sources: payload.all_sources(),
                as_peer: Some(options.join_as.unwrap_or(self.inner.peer)),
            },
        );
        let participant = reply
            .participant
            .map(|p| self.inner.participant(names::JOIN, p))
            .transpose()?;
        Ok(Joined {
            answer,
            answer_json: reply.params,
            payload,
            attempts,
            call: Some(id),
            participant,
        })
    }

    async fn join_presentation(&self, call: &CallRef, payload: &JoinPayload) -> Result<Joined> {
        let id = self.call_id(call)?;
        let body = json!({"peer": self.peer_wire(), "params": payload.to_json()});
        let path = format!("/calls/{}/presentation/join", id.id);
        let reply = self
            .inner
            .post::<WireJoined>(names::JOIN_PRESENTATION, &path, &body)
            .await?;
        let answer = ServerAnswer::parse(&reply.params).map_err(Error::BadAnswer)?;
        self.inner.hub.record_answer(&reply.params);
        let participant = reply
            .participant
            .map(|p| self.inner.participant(names::JOIN_PRESENTATION, p))
            .transpose()?;
        Ok(Joined {
            answer,
            answer_json: reply.params,
            payload: payload.clone(),
            attempts: 1,
            call: Some(id),
            participant,
        })
    }

    async fn leave_presentation(&self, call: &CallRef) -> Result<()> {
        let id = self.call_id(call)?;
        let body = json!({"peer": self.peer_wire()});
        let path = format!("/calls/{}/presentation/leave", id.id);
        match self
            .inner
            .post::<Value>(names::LEAVE_PRESENTATION, &path, &body)
            .await
        {
            Ok(_) | Err(Error::JoinMissing { .. }) | Err(Error::GroupCallForbidden { .. }) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn leave(&self, call: &CallRef, source: u32) -> Result<()> {
        let id = self.call_id(call)?;
        self.inner.hub.clear_joined(id.id);
        let body = json!({"peer": self.peer_wire(), "source": source as i32});
        match self
            .inner
            .post::<Value>(names::LEAVE, &format!("/calls/{}/leave", id.id), &body)
            .await
        {
            Ok(_) | Err(Error::JoinMissing { .. }) | Err(Error::GroupCallForbidden { .. }) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn check(&self, call: &CallRef, sources: &[u32]) -> Result<Vec<u32>> {
        let id = self.call_id(call)?;
        let body = json!({
            "peer": self.peer_wire(),
            "sources": sources.iter().map(|s| *s as i32).collect::<Vec<_>>(),
        });
        match self
            .inner
            .post::<WireSources>(names::CHECK, &format!("/calls/{}/check", id.id), &body)
            .await
        {
            Ok(r) => Ok(r.sources.into_iter().map(|s| s.0).collect()),
            Err(Error::JoinMissing { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn participants(
        &self,
        call: &CallRef,
        query: &ParticipantQuery,
    ) -> Result<ParticipantPage> {
        let id = self.call_id(call)?;
        let join = |v: Vec<String>| v.join(",");
        let sources = join(
            query
                .sources
                .iter()
                .map(|s| (*s as i32).to_string())
                .collect(),
        );
        let peers = join(
            query
                .peers
                .iter()
                .map(|p| p.dialog_id().to_string())
                .collect(),
        );
        let url = self.inner.url(&format!("/calls/{}/participants", id.id));
        let request = self.inner.http.get(&url).query(&[
            ("sources", sources.as_str()),
            ("peers", peers.as_str()),
            ("offset", query.offset.as_str()),
            ("limit", query.limit.to_string().as_str()),
        ]);
        let page: WirePage = self.inner.send(names::PARTICIPANTS, url, request).await?;
        let next_offset = match page.next_offset {
            Value::String(s) if !s.is_empty() => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        Ok(ParticipantPage {
            count: clamp_i32(page.count),
            participants: self
                .inner
                .participants(names::PARTICIPANTS, page.participants)?,
            next_offset,
            version: clamp_i32(page.version),
        })
    }

    async fn edit_participant(
        &self,
        call: &CallRef,
        participant: Option<PeerId>,
        edit: &ParticipantEdit,
    ) -> Result<()> {
        let id = self.call_id(call)?;
        if edit.is_empty() {
            return Err(Error::InvalidArgument(
                "the participant edit changes nothing; set at least one field".into(),
            ));
        }
        let who = participant
            .or_else(|| self.inner.hub.joined(id.id).and_then(|j| j.as_peer))
            .unwrap_or(self.inner.peer);
        let mut body = Map::new();
        body.insert("peer".into(), json!(self.peer_wire()));
        body.insert("participant".into(), json!(who.dialog_id()));
        insert_some(&mut body, "muted", edit.muted);
        insert_some(&mut body, "volume", edit.volume);
        insert_some(&mut body, "raise_hand", edit.raise_hand);
        insert_some(&mut body, "video_stopped", edit.video_stopped);
        insert_some(&mut body, "video_paused", edit.video_paused);
        insert_some(&mut body, "presentation_paused", edit.presentation_paused);
        self.inner
            .post::<Value>(
                names::EDIT,
                &format!("/calls/{}/participants/edit", id.id),
                &Value::Object(body),
            )
            .await
            .map(|_| ())
    }

    fn updates(&self) -> UpdateStream {
        self.inner.hub.subscribe()
    }

    async fn watch(&self, call: &CallRef) -> Result<()> {
        self.ensure_watch(self.call_id(call)?).await
    }

    async fn get_call(&self, call: &CallRef) -> Result<CallState> {
        let id = self.call_id(call)?;
        let state: WireCallState = self
            .inner
            .get(names::GET_CALL, &format!("/calls/{}", id.id))
            .await?;
        Ok(CallState {
            call: state.call.into_info(),
            participants: self
                .inner
                .participants(names::GET_CALL, state.participants)?,
            next_offset: None,
        })
    }

    async fn create_call(&self, _chat: Option<PeerId>, create: &CreateCall) -> Result<CallInfo> {
        let mut body = Map::new();
        body.insert("peer".into(), json!(self.peer_wire()));
        insert_some(&mut body, "title", create.title.clone());
        insert_some(&mut body, "schedule_date", create.schedule_date);
        if create.rtmp_stream {
            body.insert("rtmp_stream".into(), json!(true));
        }
        let call: WireCall = self
            .inner
            .post(names::CREATE, "/calls", &Value::Object(body))
            .await?;
        Ok(call.into_info())
    }

    async fn start_scheduled(&self, call: &CallRef) -> Result<()> {
        let id = self.call_id(call)?;
        self.inner
            .post::<Value>(
                names::START_SCHEDULED,
                &format!("/calls/{}/start", id.id),
                &json!({"peer": self.peer_wire()}),
            )
            .await
            .map(|_| ())
    }

    async fn join_as_candidates(
        &self,
        call: &CallRef,
        _chat: Option<PeerId>,
    ) -> Result<Vec<PeerId>> {
        let id = self.call_id(call)?;
        let peers: WirePeers = self
            .inner
            .get(
                names::JOIN_AS,
                &format!("/calls/{}/join-as?peer={}", id.id, self.peer_wire()),
            )
            .await?;
        peers
            .peers
            .into_iter()
            .map(|p| peer_of(names::JOIN_AS, p))
            .collect()
    }

    async fn invite(&self, call: &CallRef, users: &[PeerId]) -> Result<()> {
        let id = self.call_id(call)?;
        let body = json!({
            "peer": self.peer_wire(),
            "users": users.iter().map(|u| u.dialog_id()).collect::<Vec<_>>(),
        });
        self.inner
            .post::<Value>(names::INVITE, &format!("/calls/{}/invite", id.id), &body)
            .await
            .map(|_| ())
    }

    async fn discard(&self, call: &CallRef) -> Result<()> {
        let id = self.call_id(call)?;
        self.inner
            .post::<Value>(
                names::DISCARD,
                &format!("/calls/{}/discard", id.id),
                &json!({"peer": self.peer_wire()}),
            )
            .await
            .map(|_| ())
    }
}
