//! The control API: HTTP/1.1 + JSON on a loopback port, one route per `phone.*` method, and a
//! server-sent-event stream of updates per call (the contract is the crate's README).
//!
//! Handlers only translate: they decode the request, call [`Calls`] under one lock together
//! with the [`MediaPlane`], publish the resulting updates while still holding it (so every
//! subscriber sees them in the order they happened) and encode the answer. Anything wrong with
//! the request becomes a JSON error body, never a panic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use groupcall_media::payload::{ssrc_from_i64, WireSsrc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::calls::{
    signed_ssrc, CallId, Calls, CreateCall, EditParticipant, JoinRequest, Outcome,
    ParticipantsQuery, PeerId, PresentationRequest, Update,
};
use crate::error::{Error, Result};
use crate::plane::{MediaEvent, MediaEventReceiver, MediaPlane};

/// Updates a subscriber may fall behind by before its stream is closed (it reconnects and
/// refetches, as a Telegram client does on a version gap).
const STREAM_BACKLOG: usize = 1024;
/// How long [`ControlServer::shutdown`] waits for open requests before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to run a [`ControlServer`].
pub struct ServerConfig {
    /// A loopback address; port 0 lets the system choose (see [`ControlServer::local_addr`]).
    pub addr: SocketAddr,
    pub media: Arc<dyn MediaPlane>,
    /// Where the media plane reports silent participants; `None` if it never does.
    pub media_events: Option<MediaEventReceiver>,
}

impl ServerConfig {
    pub fn new(addr: SocketAddr, media: Arc<dyn MediaPlane>) -> Self {
        ServerConfig {
            addr,
            media,
            media_events: None,
        }
    }

    pub fn with_media_events(mut self, events: MediaEventReceiver) -> Self {
        self.media_events = Some(events);
        self
    }
}

/// A running control API. Dropping it stops the server too; [`shutdown`](Self::shutdown) also
/// waits until it has stopped.
pub struct ControlServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    events: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds the address and serves until shut down. Refuses non-loopback addresses: the API has
    /// no authentication.
    pub async fn start(config: ServerConfig) -> Result<ControlServer> {
        let addr = config.addr;
        if !addr.ip().is_loopback() {
            return Err(Error::NotLoopback(addr));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let (shutdown, stop) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(ServerState::default()),
            media: config.media,
            stop: stop.clone(),
        });
        let app = router(shared.clone());
        let mut stop_serving = stop.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_serving.wait_for(|stopped| *stopped).await;
                })
                .await;
            if let Err(e) = served {
                warn!(error = %e, "control API stopped with an error");
            }
        });
        let events = config
            .media_events
            .map(|rx| tokio::spawn(media_event_loop(shared, rx, stop)));
        info!(addr = %local, "control API listening");
        Ok(ControlServer {
            addr: local,
            shutdown,
            server: Some(server),
            events,
        })
    }

    /// The bound address (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests, ends every update stream, and waits for open requests to
    /// finish (at most a few seconds, then they are cut).
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
                warn!("control API requests still open after {SHUTDOWN_GRACE:?}; cutting them");
                abort.abort();
            }
        }
        if let Some(events) = self.events.take() {
            let _ = events.await;
        }
        info!(addr = %self.addr, "control API stopped");
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// One event of an update stream, serialised once for all subscribers.
#[derive(Clone)]
struct Published {
    data: Arc<str>,
    /// The call was discarded: this is the stream's last event.
    last: bool,
}

#[derive(Default)]
struct ServerState {
    calls: Calls,
    streams: std::collections::HashMap<CallId, broadcast::Sender<Published>>,
}

impl ServerState {
    fn publish(&mut self, call: CallId, updates: &[Update]) {
        for update in updates {
            let last = matches!(update, Update::Call { call } if call.discarded);
            let Some(tx) = self.streams.get(&call) else {
                continue;
            };
            match serde_json::to_string(update) {
                Ok(data) => {
                    let _ = tx.send(Published {
                        data: data.into(),
                        last,
                    });
                }
                Err(e) => warn!(%call, error = %e, "cannot encode an update; not published"),
            }
            // Dropping the sender after the last event ends every stream once it is read.
            if last || tx.receiver_count() == 0 {
                self.streams.remove(&call);
            }
        }
    }
}

struct Shared {
    state: Mutex<ServerState>,
    media: Arc<dyn MediaPlane>,
    stop: watch::Receiver<bool>,
}

impl Shared {
    /// A panic elsewhere (say, in a media plane) must not take the whole API down with it: the
    /// state machine never leaves a half-applied change, so a poisoned lock is still consistent.
    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes an outcome's updates and drops its connections; call with the lock held.
    fn apply<T>(&self, st: &mut ServerState, call: CallId, out: Outcome<T>) -> T {
        for source in &out.disconnect {
            self.media.remove_participant(call, *source);
        }
        st.publish(call, &out.updates);
        out.value
    }

    fn on_media_event(&self, event: MediaEvent) {
        match event {
            MediaEvent::Silent { call, source } => {
                let mut st = self.lock();
                if let Some(out) = st.calls.remove_source(call, source) {
                    info!(%call, source, peer = out.value.peer, "participant's connection ended (silent, closed or refused): removed");
                    self.apply(&mut st, call, out);
                } else {
                    debug!(%call, source, "silence report for a connection already gone");
                }
            }
        }
    }
}

async fn media_event_loop(
    shared: Arc<Shared>,
    mut rx: MediaEventReceiver,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            event = rx.0.recv() => match event {
                Some(event) => shared.on_media_event(event),
                None => break,
            },
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/calls", post(create))
        .route("/calls/{id}", get(get_call))
        .route("/calls/{id}/start", post(start))
        .route("/calls/{id}/join", post(join))
        .route("/calls/{id}/leave", post(leave))
        .route("/calls/{id}/presentation/join", post(join_presentation))
        .route("/calls/{id}/presentation/leave", post(leave_presentation))
        .route("/calls/{id}/check", post(check))
        .route("/calls/{id}/participants", get(participants))
        .route("/calls/{id}/participants/edit", post(edit))
        .route("/calls/{id}/invite", post(invite))
        .route("/calls/{id}/join-as", get(join_as))
        .route("/calls/{id}/discard", post(discard))
        .route("/calls/{id}/updates", get(updates))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn error_body(code: u16, typ: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"code": code, "type": typ, "message": message}});
    (status, Json(body)).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let message = self.to_string();
        if self.code() >= 500 {
            warn!(error = %message, "request failed");
        } else {
            debug!(error = %message, "request refused");
        }
        error_body(self.code(), self.telegram_type(), &message)
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error_body(
        404,
        "NOT_FOUND",
        &format!("no route {method} {uri}; the routes are listed in groupcall-sfu's README"),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error_body(
        405,
        "METHOD_NOT_ALLOWED",
        &format!(
            "{} does not take {method}; the routes are listed in groupcall-sfu's README",
            uri.path()
        ),
    )
}

/// A JSON body read whatever its content type (bots in other languages often forget it), with
/// errors that name the field at fault.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            Error::BadRequest(format!("cannot read the request body: {}", e.body_text()))
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::BadRequest(
                "the request body is empty; send a JSON object".into(),
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                Error::BadRequest(format!("request body: {inner}"))
            } else {
                Error::BadRequest(format!("request body, field `{path}`: {inner}"))
            }
        })?;
        de.end()
            .map_err(|e| Error::BadRequest(format!("request body: {e}")))?;
        Ok(Body(value))
    }
}

/// The `{id}` of a call route.
struct CallPath(CallId);

impl<S: Send + Sync> FromRequestParts<S> for CallPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        raw.parse()
            .map(|id| CallPath(CallId(id)))
            .map_err(|_| Error::BadRequest(format!("call id {raw:?} in the path is not a number")))
    }
}

/// The query string as key/value pairs, so that lists may be `a=1,2` or `a=1&a=2`.
struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        Ok(Params(pairs))
    }
}

impl Params {
    fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    fn numbers(&self, key: &str) -> Result<Vec<i64>> {
        self.values(key)
            .map(|v| {
                v.parse().map_err(|_| {
                    Error::BadRequest(format!("query parameter `{key}`: {v:?} is not a number"))
                })
            })
            .collect()
    }

    fn one(&self, key: &str) -> Result<Option<i64>> {
        match self.numbers(key)?[..] {
            [] => Ok(None),
            [v] => Ok(Some(v)),
            _ => Err(Error::BadRequest(format!(
                "query parameter `{key}` takes one number"
            ))),
        }
    }
}

#[derive(Deserialize)]
struct PeerBody {
    peer: PeerId,
}

#[derive(Deserialize)]
struct LeaveBody {
    peer: PeerId,
    /// 0 (or absent) leaves whatever connection the peer has.
    #[serde(default, with = "signed_ssrc")]
    source: u32,
}

#[derive(Deserialize)]
struct CheckBody {
    peer: PeerId,
    sources: Vec<WireSsrc>,
}

#[derive(Deserialize)]
struct InviteBody {
    peer: PeerId,
    users: Vec<PeerId>,
}

type Answer = Result<Json<Value>>;

fn to_json<T: serde::Serialize>(v: &T) -> Answer {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| Error::BadRequest(format!("cannot encode the answer: {e}")))
}

async fn create(State(sh): State<Arc<Shared>>, Body(req): Body<CreateCall>) -> Answer {
    let call = sh.lock().calls.create(unix_now(), &req)?;
    info!(call = %call.id, admin = req.peer, scheduled = call.schedule_date, "call created");
    to_json(&call)
}

async fn get_call(State(sh): State<Arc<Shared>>, CallPath(id): CallPath) -> Answer {
    let (call, participants) = sh.lock().calls.get(id)?;
    Ok(Json(json!({"call": call, "participants": participants})))
}

async fn start(
    State(sh): State<Arc<Shared>>,
    CallPath(id): CallPath,
    Body(req): Body<PeerBody>,
) -> Answer {
    let mut st = sh.lock();
    let out = st.calls.start(id, req.peer)?;
    let call = sh.apply(&mut st, id, out);
    info!(call = %id, "scheduled call started");
    to_json(&call)
}

async fn join(
    State(sh): State<Arc<Shared>>,
    CallPath(id): CallPath,
    Body(req): Body<JoinRequest>,
) -> Answer {
    let now = unix_now();
    let mut st = sh.lock();
    let media = sh.media.clone();
    let out = st
        .calls
        .join(now, id, &req, |payload| media.add_participant(id, payload))?;
    let joined = sh.apply(&mut st, id, out);
    info!(call = %id, peer = joined.participant.peer, source = joined.participant.source, "joined");
    Ok(Json(
        json!({"params": joined.params, "participant": joined.participant}),
    ))
}

async fn leave(
    State(sh): State<Arc<Shared>>,
    CallPath(id): CallPath,
    Body(req): Body<LeaveBody>,
) -> Answer {
    let mut st = sh.lock();
    let out = st.calls.leave(id, req.peer, req.source)?;
    sh.apply(&mut st, id, out);
    info!(call = %id, peer = req.peer, "left");
    Ok(Json(json!({})))
}

async fn join_presentation(
    State(sh): State<Arc<Shared>>,
    CallPath(id): CallPath,
    Body(req): Body<PresentationRequest>,
) -> Answer {
    let mut st = sh.lock();
    let media = sh.media.clone();
    let out = st
        .calls
        .join_presentation(id, &req, |payload| media.add_presentation(id, payload))?;
    let joined = sh.apply(&mut st, id, out);
    info!(call = %id, peer = joined.participant.peer, "screen share started");
    Ok(Json(
        json!({"params": joined.params, "participant": joined.participant}),
    ))
}

async fn leave_presentation(
    State(sh): State<Arc<Shared>>,
    CallPath(id): CallPath,
    Body(req): Body<PeerBody>,
) -> Answer {
    let mut st = sh.lock();
    let out = st.calls.leave_presentation(id, req.peer)?;
    let participant = sh.apply(&mut st, id, out);
    info!(call = %id, peer = req.peer, "screen share ended");
    Ok(Json(json!({ "participant": participant })))
}

async fn check(
    State(sh): State<Arc<Shared>>,
    CallPath(id): CallPath,
    Body(req): Body<CheckBody>,
) -> Answer {
    let sources: Vec<u32> = req.sources.iter().map(|s| s.0).collect();
    let joined = sh.lock().calls.check(id, req.peer, &sources)?;
    let signed: Vec<i32> = joined.iter().map(|s| *s as i32).collect();
    Ok(Json(json!({ "sources": signed })))
}

async fn participants(
    State(sh): State<Arc<Shared>>,
    CallPath(id): CallPath,
    params: Params,
) -> Answer {
    let sources = params
        .numbers("sources")?
        .into_iter()
        .map(|v| {
            ssrc_from_i64(v).ok_or_else(|| {
                Error::BadRequest(format!(
                    "query parameter `sources`: {v} is not a 32-bit source"
                ))
            })
        })
        .collect::<Result<Vec<u32>>>()?;
    let limit = match params.one("limit")? {
        None => 0,
        Some(v) => usize::try_from(v)
            .map_err(|_| Error::BadRequest(format!("query parameter `limit`: {v} is negative")))?,
    };
    let offset = params
        .0
        .iter()
        .rev()
        .find(|(k, _)| k == "offset")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let q = ParticipantsQuery {
        sources,
        peers: params.numbers("peers")?,
        offset,
        limit,
    };
    let page = sh.lock().calls.participants(id, &q)?;
    to_json(&page)
}

async fn edit(
    State(sh): State<Arc<Shared>>,
    CallPath(id): CallPath,
    Body(req): Body<EditParticipant>,
) -> Answer {
    let mut st = sh.lock();
    let out = st.calls.edit(id, &req)?;
    let participant = sh.apply(&mut st, id, out);
    to_json(&participant)
}

async fn invite(
    State(sh): State<Arc<Shared>>,
    CallPath(id): CallPath,
    Body(req): Body<InviteBody>,
) -> Answer {
    sh.lock().calls.invite(id, req.peer, &req.users)?;
    info!(call = %id, inviter = req.peer, users = ?req.users, "invited");
    Ok(Json(json!({})))
}

async fn join_as(State(sh): State<Arc<Shared>>, CallPath(id): CallPath, params: Params) -> Answer {
    let peer = params.one("peer")?.ok_or_else(|| {
        Error::BadRequest("query parameter `peer` is missing: pass the user you act as".into())
    })?;
    let peers = sh.lock().calls.join_as(id, peer)?;
    Ok(Json(json!({ "peers": peers })))
}

async fn discard(
    State(sh): State<Arc<Shared>>,
    CallPath(id): CallPath,
    Body(req): Body<PeerBody>,
) -> Answer {
    let mut st = sh.lock();
    let out = st.calls.discard(id, req.peer)?;
    sh.apply(&mut st, id, out);
    info!(call = %id, "call discarded");
    Ok(Json(json!({})))
}

/// Where an update stream is: the snapshot to send first, then the live updates.
enum Feed {
    Snapshot {
        data: String,
        rx: Option<broadcast::Receiver<Published>>,
        stop: watch::Receiver<bool>,
    },
    Live {
        rx: broadcast::Receiver<Published>,
        stop: watch::Receiver<bool>,
    },
    Ended,
}

async fn updates(
    State(sh): State<Arc<Shared>>,
    CallPath(id): CallPath,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // Subscribing and taking the snapshot under one lock: no update falls between the two.
    let (data, rx) = {
        let mut st = sh.lock();
        let call = st.calls.call(id)?;
        let rx = (!call.discarded).then(|| {
            st.streams
                .entry(id)
                .or_insert_with(|| broadcast::channel(STREAM_BACKLOG).0)
                .subscribe()
        });
        let data = serde_json::to_string(&Update::Call { call })
            .map_err(|e| Error::BadRequest(format!("cannot encode the call: {e}")))?;
        (data, rx)
    };
    let feed = Feed::Snapshot {
        data,
        rx,
        stop: sh.stop.clone(),
    };
    let events = stream::unfold(feed, move |feed| async move {
        match feed {
            Feed::Snapshot { data, rx, stop } => {
                let next = match rx {
                    Some(rx) => Feed::Live { rx, stop },
                    None => Feed::Ended,
                };
                Some((Ok(Event::default().data(data)), next))
            }
            Feed::Live { mut rx, mut stop } => {
                if *stop.borrow() {
                    return None;
                }
                let received = tokio::select! {
                    received = rx.recv() => received,
                    _ = stop.wait_for(|stopped| *stopped) => return None,
                };
                match received {
                    Ok(p) => {
                        let next = if p.last {
                            Feed::Ended
                        } else {
                            Feed::Live { rx, stop }
                        };
                        Some((Ok(Event::default().data(&*p.data)), next))
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(call = %id, missed = n, "update subscriber fell behind; closing its stream");
                        None
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            }
            Feed::Ended => None,
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
