//! Bring-your-own signaling over JSON lines, like ntgcalls' `create_call` / `connect`: the
//! engine writes its join payload as a line, the application (a Telethon or Pyrogram bot that
//! owns the MTProto connection, or anything that can reach some server) sends it with
//! `phone.joinGroupCall` and writes the server's answer back as a line.
//!
//! Lines the engine writes (one JSON object each):
//! - `{"payload": {…}, "muted": false, "video_stopped": true}`: a join payload to send
//!   (`phone.joinGroupCall.params`), with the request's flags. A rejoin writes a new one and
//!   waits for its answer.
//! - `{"leave": {"source": N}}`: the engine left; call `phone.leaveGroupCall`.
//! - `{"edit": {"muted": true}}`: the engine muted or unmuted itself (or turned its camera
//!   on or off: `video_stopped`, `video_paused`); call `phone.editGroupCallParticipant` for
//!   yourself.
//! - `{"presentation_payload": {…}}`: the engine shares a screen; send the payload with
//!   `phone.joinGroupCallPresentation` and answer with `presentation_answer`.
//! - `{"presentation_leave": true}`: the share ended; call `phone.leaveGroupCallPresentation`.
//!
//! Lines the engine reads:
//! - `{"answer": …}`: `updateGroupCallConnection.params`, as a JSON object or as the string
//!   Telegram delivers;
//! - `{"presentation_answer": …}`: the same for the screen share's connection (the update
//!   with `presentation` set), or `{"presentation_error": …}` as `error` below;
//! - `{"error": "GROUPCALL_SSRC_DUPLICATE_MUCH"}` (or any Telegram error name, or
//!   `{"error": {"type": …, "code": …, "value": …, "message": …}}`, `value` being the number
//!   of names such as `FLOOD_WAIT_X`): the join failed; a duplicate SSRC gets
//!   a fresh payload line, anything else fails the join with that error;
//! - `{"participants": [{"source": N, "peer": ID, "left": false, "muted": false}, …],
//!   "version": V}`: the roster as `updateGroupCallParticipants` reports it (signed or unsigned
//!   sources; `version` is optional, and lets the engine notice missed changes). A participant
//!   with a camera or a screen has `"video"` / `"presentation"`: `{"endpoint": "…",
//!   "source_groups": [{"semantics": "SIM", "sources": [N, …]}, …], "paused": false}`, and
//!   `"video_stopped": true` while its camera is off;
//! - `{"discarded": true}`: the call ended for everyone;
//! - anything else is handed to the application as a [`StdioCommand`] (`leave`, `mute`,
//!   `pause`, `seek`, `skip`)
//!   or reported as an unknown line; a malformed line never ends the session.
//!
//! A line may be at most [`MAX_LINE`] bytes (1 MiB; the largest real line, an answer or a
//! roster of a big call, is a few hundred kilobytes at most). A longer one is not buffered: it
//! is read through and discarded, reported like any malformed line, and the session goes on
//! with the next line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use groupcall_media::payload::ssrc_from_i64;
use groupcall_media::{JoinPayload, ServerAnswer};
use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::bounded::reserve_capped;
use tokio::sync::{mpsc, Mutex as AsyncMutex};

use crate::error::{Error, Result};
use crate::retry::{join_with_retries, PayloadFactory, RetryPolicy};
use crate::signaling::Signaling;
use crate::types::{
    CallId, CallInfo, CallRef, CallState, CreateCall, JoinOptions, Joined, Participant,
    ParticipantEdit, ParticipantPage, ParticipantQuery, ParticipantVideo, PeerId, SignalingUpdate,
    SourceGroup,
};
use crate::updates::{JoinedState, UpdateHub, UpdateStream};

const METHOD: &str = "phone.joinGroupCall";
const PRESENTATION_METHOD: &str = "phone.joinGroupCallPresentation";

/// The longest input line read, newline excluded. Longer lines are skipped unbuffered.
pub const MAX_LINE: usize = 1 << 20;

/// The most participants the roster holds (those reported and not left); a line that would
/// go past it is refused. Far above any call whose roster a client tracks one by one.
const MAX_ROSTER: usize = 100_000;

/// How much of a skipped line is quoted back in its report, so the application can tell
/// which of its lines it was.
const QUOTED: usize = 200;

/// The call id the line protocol stands for: it carries one call, whose id it never says.
pub const STDIO_CALL: CallId = CallId {
    id: 0,
    access_hash: 0,
};

/// A line that is not signaling, for the application to act on.
#[derive(Clone, Debug, PartialEq)]
pub enum StdioCommand {
    /// `{"leave": true}`, or the end of the input.
    Leave,
    /// `{"mute": true|false}`.
    Mute(bool),
    /// `{"pause": true|false}`: stop or go on sending the source, keeping its position.
    Pause(bool),
    /// `{"seek": SECONDS}`: go to this time in the playing file.
    Seek(std::time::Duration),
    /// `{"skip": true}`: end the playing source; the next queued one plays.
    Skip,
    /// A line that could not be understood, with the reason; the session goes on.
    Invalid { line: String, problem: String },
}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// An answer line: for the screen share's connection (`presentation`) or the call's own.
type Answer = (bool, std::result::Result<String, Error>);

struct Inner {
    writer: AsyncMutex<Writer>,
    answers: AsyncMutex<mpsc::UnboundedReceiver<Answer>>,
    hub: UpdateHub,
    roster: Mutex<HashMap<u32, Participant>>,
    policy: RetryPolicy,
}

/// The line-protocol backend. Cheap to clone.
#[derive(Clone)]
pub struct StdioSignaling {
    inner: Arc<Inner>,
}

impl StdioSignaling {
    /// A backend reading `input` and writing `output` (standard input and output for the
    /// `groupcall join --signaling stdio` command), and the application's commands.
    /// The reader runs on a task of the current tokio runtime until the input ends.
    pub fn new(
        input: impl AsyncBufRead + Send + Unpin + 'static,
        output: impl AsyncWrite + Send + Unpin + 'static,
    ) -> (Self, mpsc::UnboundedReceiver<StdioCommand>) {
        let (answer_tx, answer_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            writer: AsyncMutex::new(Box::new(output)),
            answers: AsyncMutex::new(answer_rx),
            hub: UpdateHub::new(),
            roster: Mutex::default(),
            policy: RetryPolicy {
                // The application may need a while: it talks to Telegram for us.
                answer_timeout: Duration::from_secs(60),
                ..RetryPolicy::default()
            },
        });
        tokio::spawn(read_lines(input, inner.clone(), answer_tx, cmd_tx));
        (StdioSignaling { inner }, cmd_rx)
    }

    /// Writes one JSON line of the protocol (the CLI also writes its events this way).
    pub async fn write_line(&self, value: &Value) -> Result<()> {
        let mut line = value.to_string();
        line.push('\n');
        let mut w = self.inner.writer.lock().await;
        let r = async {
            w.write_all(line.as_bytes()).await?;
            w.flush().await
        }
        .await;
        r.map_err(|e| {
            Error::Stdio(format!(
                "cannot write to the output ({e}); whoever reads it has gone"
            ))
        })
    }
}

fn roster(inner: &Inner) -> MutexGuard<'_, HashMap<u32, Participant>> {
    inner.roster.lock().unwrap_or_else(|p| p.into_inner())
}

/// One input line, as far as the reader took it in.
#[derive(Debug, PartialEq)]
enum Line {
    Text(String),
    /// Over the bound: only its first bytes were kept, for the report.
    TooLong {
        start: String,
        len: usize,
    },
    NotUtf8 {
        start: String,
    },
}

/// Reads lines of at most `max` bytes without ever holding more than that, whatever the input.
struct LineReader<R> {
    input: R,
    buf: Vec<u8>,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    fn new(input: R, max: usize) -> Self {
        LineReader {
            input,
            buf: Vec::new(),
            max,
        }
    }

    /// The next line without its `\n` (or `\r\n`); `None` at the end of the input. A last line
    /// without a newline counts as a line.
    async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        self.buf.clear();
        let mut len = 0usize;
        let mut too_long = false;
        loop {
            let available = self.input.fill_buf().await?;
            if available.is_empty() {
                if len == 0 {
                    return Ok(None);
                }
                break;
            }
            let (part, ends) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            let used = part.len() + usize::from(ends);
            len += part.len();
            if !too_long {
                if self.buf.len() + part.len() > self.max {
                    too_long = true;
                    self.buf.truncate(QUOTED);
                    let quote = (QUOTED - self.buf.len()).min(part.len());
                    self.buf.extend_from_slice(&part[..quote]);
                } else {
                    let want =
                        reserve_capped(self.buf.len(), self.buf.capacity(), part.len(), self.max);
                    self.buf.reserve_exact(want);
                    self.buf.extend_from_slice(part);
                }
            }
            self.input.consume(used);
            if ends {
                break;
            }
        }
        if too_long {
            // A line near the bound leaves a large buffer behind; do not keep it for good.
            self.buf.shrink_to(QUOTED);
            let start = String::from_utf8_lossy(&self.buf[..self.buf.len().min(QUOTED)]);
            return Ok(Some(Line::TooLong {
                start: start.into_owned(),
                len,
            }));
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        match std::str::from_utf8(&self.buf) {
            Ok(text) => Ok(Some(Line::Text(text.to_owned()))),
            Err(_) => Ok(Some(Line::NotUtf8 {
                start: String::from_utf8_lossy(&self.buf[..self.buf.len().min(QUOTED)])
                    .into_owned(),
            })),
        }
    }
}

async fn read_lines(
    input: impl AsyncBufRead + Unpin,
    inner: Arc<Inner>,
    answers: mpsc::UnboundedSender<Answer>,
    commands: mpsc::UnboundedSender<StdioCommand>,
) {
    let mut lines = LineReader::new(input, MAX_LINE);
    loop {
        let line = match lines.next_line().await {
            Ok(Some(Line::Text(l))) => l,
            Ok(Some(Line::TooLong { start, len })) => {
                let _ = commands.send(StdioCommand::Invalid {
                    line: format!("{start}…"),
                    problem: format!(
                        "the line is {len} bytes long, over the limit of {MAX_LINE}; it was skipped (one JSON object per line, each under the limit)"
                    ),
                });
                continue;
            }
            Ok(Some(Line::NotUtf8 { start })) => {
                let _ = commands.send(StdioCommand::Invalid {
                    line: start,
                    problem: "the line is not UTF-8 text; it was skipped".into(),
                });
                continue;
            }
            Ok(None) => break,
            Err(e) => {
                let _ = commands.send(StdioCommand::Invalid {
                    line: String::new(),
                    problem: format!("cannot read the input: {e}"),
                });
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Err(problem) = handle_line(&line, &inner, &answers, &commands) {
            let _ = commands.send(StdioCommand::Invalid { line, problem });
        }
    }
    inner.hub.publish(SignalingUpdate::Ended {
        call: Some(STDIO_CALL),
        reason: "the signaling input ended".into(),
    });
    let _ = commands.send(StdioCommand::Leave);
}

/// One input line without its `\n` or `\r\n`; invalid UTF-8 is replaced, so that the line is
/// reported as not understood instead of ending the input.
fn decode_line(raw: &[u8]) -> std::borrow::Cow<'_, str> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    String::from_utf8_lossy(raw)
}

/// The reader's line handling on `data` (the whole input, split as the reader splits it), with
/// a fresh backend whose own source is 1111. A line the handler accepts must have acted (an
/// answer, a command or an update); one it refuses must have done nothing. For the fuzz target
/// (`crate::fuzz::stdio_line`).
pub(crate) fn fuzz_lines(data: &[u8]) {
    let (answer_tx, mut answer_rx) = mpsc::unbounded_channel();
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
    let inner = Inner {
        writer: AsyncMutex::new(Box::new(tokio::io::sink())),
        answers: AsyncMutex::new(mpsc::unbounded_channel().1),
        hub: UpdateHub::new(),
        roster: Mutex::default(),
        policy: RetryPolicy::default(),
    };
    inner.hub.set_joined(
        STDIO_CALL,
        JoinedState {
            sources: vec![1111],
            as_peer: None,
        },
    );
    let mut updates = inner.hub.subscribe();
    for raw in data.split_inclusive(|b| *b == b'\n') {
        let line = decode_line(raw);
        if line.trim().is_empty() {
            continue;
        }
        let result = handle_line(&line, &inner, &answer_tx, &cmd_tx);
        let mut acted = 0;
        while answer_rx.try_recv().is_ok() {
            acted += 1;
        }
        while cmd_rx.try_recv().is_ok() {
            acted += 1;
        }
        while updates.try_next().is_some() {
            acted += 1;
        }
        match result {
            Ok(()) => assert!(acted > 0, "accepted but did nothing: {line:?}"),
            Err(problem) => {
                assert_eq!(acted, 0, "refused ({problem}) but acted: {line:?}");
                assert!(!problem.is_empty());
            }
        }
    }
    let r = roster(&inner);
    assert!(
        r.values().all(|p| !p.left),
        "a participant that left is in the roster"
    );
}

fn handle_line(
    line: &str,
    inner: &Inner,
    answers: &mpsc::UnboundedSender<Answer>,
    commands: &mpsc::UnboundedSender<StdioCommand>,
) -> std::result::Result<(), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("expected a JSON object")?;
    let answer = obj
        .get("answer")
        .map(|a| (false, a))
        .or_else(|| obj.get("presentation_answer").map(|a| (true, a)));
    let error = obj
        .get("error")
        .map(|e| (false, e))
        .or_else(|| obj.get("presentation_error").map(|e| (true, e)));
    if let Some((presentation, a)) = answer {
        let text = match a {
            Value::String(s) => s.clone(),
            Value::Object(_) => a.to_string(),
            _ => return Err("\"answer\" must be the params object or its JSON text".into()),
        };
        let _ = answers.send((presentation, Ok(text)));
    } else if let Some((presentation, e)) = error {
        let (name, code, value, message) = match e {
            Value::String(s) => (s.clone(), 400, None, None),
            Value::Object(o) => (
                o.get("type")
                    .and_then(Value::as_str)
                    .ok_or("\"error\" needs a \"type\" (the Telegram error name)")?
                    .to_owned(),
                o.get("code").and_then(Value::as_i64).unwrap_or(400) as i32,
                // The number in names such as FLOOD_WAIT_X (seconds to wait).
                o.get("value")
                    .and_then(Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok()),
                o.get("message").and_then(Value::as_str).map(str::to_owned),
            ),
            _ => return Err("\"error\" must be a Telegram error name or an object".into()),
        };
        let method = if presentation {
            PRESENTATION_METHOD
        } else {
            METHOD
        };
        let _ = answers.send((
            presentation,
            Err(Error::from_rpc(method, code, &name, value, message)),
        ));
    } else if let Some(ps) = obj.get("participants") {
        let ps = ps.as_array().ok_or("\"participants\" must be an array")?;
        let version = match obj.get("version") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .ok_or("\"version\" must be a 32-bit number")?,
        };
        let mut parsed = Vec::with_capacity(ps.len());
        for (i, p) in ps.iter().enumerate() {
            parsed.push(parse_participant(p).map_err(|e| format!("participants[{i}]: {e}"))?);
        }
        {
            let mut r = roster(inner);
            let added = parsed
                .iter()
                .filter(|p| !p.left && !r.contains_key(&p.source))
                .count();
            if r.len() + added > MAX_ROSTER {
                return Err(format!(
                    "the roster would exceed {MAX_ROSTER} participants; report those who left (\"left\": true)"
                ));
            }
            for p in &parsed {
                if p.left {
                    r.remove(&p.source);
                } else {
                    r.insert(p.source, p.clone());
                }
            }
        }
        inner.hub.publish_participants(STDIO_CALL, version, parsed);
    } else if obj.get("discarded").and_then(Value::as_bool) == Some(true) {
        inner
            .hub
            .publish(SignalingUpdate::CallDiscarded { call: STDIO_CALL });
    } else if obj.contains_key("leave") {
        let _ = commands.send(StdioCommand::Leave);
    } else if let Some(m) = obj.get("mute") {
        let m = m.as_bool().ok_or("\"mute\" must be true or false")?;
        let _ = commands.send(StdioCommand::Mute(m));
    } else if let Some(p) = obj.get("pause") {
        let p = p.as_bool().ok_or("\"pause\" must be true or false")?;
        let _ = commands.send(StdioCommand::Pause(p));
    } else if let Some(t) = obj.get("seek") {
        let t = t
            .as_f64()
            .filter(|t| t.is_finite() && (0.0..=31_536_000.0).contains(t))
            .ok_or("\"seek\" must be a number of seconds from 0 to 31536000")?;
        let _ = commands.send(StdioCommand::Seek(std::time::Duration::from_secs_f64(t)));
    } else if obj.contains_key("skip") {
        let _ = commands.send(StdioCommand::Skip);
    } else {
        return Err(
            "unknown line: expected one of answer, error, presentation_answer, presentation_error, participants, discarded, leave, mute, pause, seek, skip"
                .into(),
        );
    }
    Ok(())
}

fn parse_participant(p: &Value) -> std::result::Result<Participant, String> {
    let source = p
        .get("source")
        .and_then(Value::as_i64)
        .ok_or("\"source\" (a number) is missing")?;
    let source = ssrc_from_i64(source).ok_or("\"source\" is not a 32-bit SSRC")?;
    let peer = match p.get("peer") {
        None | Some(Value::Null) => PeerId::User(0),
        Some(v) => v
            .as_i64()
            .and_then(PeerId::from_dialog_id)
            .ok_or("\"peer\" must be a dialog id (a non-zero number)")?,
    };
    let flag = |k: &str| p.get(k).and_then(Value::as_bool).unwrap_or(false);
    let video = |k: &str| -> std::result::Result<Option<ParticipantVideo>, String> {
        match p.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => parse_video(v)
                .map(Some)
                .map_err(|e| format!("\"{k}\": {e}")),
        }
    };
    Ok(Participant {
        peer,
        source,
        muted: flag("muted"),
        can_self_unmute: true,
        left: flag("left"),
        just_joined: false,
        is_self: flag("self"),
        min: false,
        date: 0,
        volume: None,
        raise_hand_rating: None,
        video_stopped: p
            .get("video_stopped")
            .and_then(Value::as_bool)
            .unwrap_or(p.get("video").is_none()),
        video: video("video")?,
        presentation: video("presentation")?,
    })
}

/// The most source groups and sources per group taken (a camera has 4 groups of 2–3).
const MAX_GROUPS: usize = 16;

fn parse_video(v: &Value) -> std::result::Result<ParticipantVideo, String> {
    let endpoint = v
        .get("endpoint")
        .and_then(Value::as_str)
        .ok_or("\"endpoint\" (a string) is missing")?;
    if endpoint.len() > 256 {
        return Err("\"endpoint\" is longer than 256 bytes".into());
    }
    let groups = v
        .get("source_groups")
        .and_then(Value::as_array)
        .ok_or("\"source_groups\" (an array) is missing")?;
    if groups.len() > MAX_GROUPS {
        return Err(format!("more than {MAX_GROUPS} source groups"));
    }
    let mut source_groups = Vec::with_capacity(groups.len());
    for g in groups {
        let semantics = g
            .get("semantics")
            .and_then(Value::as_str)
            .ok_or("a source group without \"semantics\"")?;
        let sources = g
            .get("sources")
            .and_then(Value::as_array)
            .ok_or("a source group without \"sources\"")?;
        if sources.is_empty() || sources.len() > MAX_GROUPS {
            return Err(format!("a source group needs 1 to {MAX_GROUPS} sources"));
        }
        let sources = sources
            .iter()
            .map(|s| s.as_i64().and_then(ssrc_from_i64))
            .collect::<Option<Vec<u32>>>()
            .ok_or("a source is not a 32-bit SSRC")?;
        source_groups.push(SourceGroup {
            semantics: semantics.chars().take(16).collect(),
            sources,
        });
    }
    Ok(ParticipantVideo {
        endpoint: endpoint.to_owned(),
        source_groups,
        audio_source: v
            .get("audio_source")
            .and_then(Value::as_i64)
            .and_then(ssrc_from_i64),
        paused: v.get("paused").and_then(Value::as_bool).unwrap_or(false),
    })
}

impl StdioSignaling {
    async fn request_answer(&self, payload: &JoinPayload, options: &JoinOptions) -> Result<String> {
        // An answer left over from an earlier join is stale: drop it.
        let mut answers = self.inner.answers.lock().await;
        while answers.try_recv().is_ok() {}
        self.inner
            .hub
            .expect_sources(STDIO_CALL.id, &payload.all_sources());
        let value: Value = serde_json::from_str(&payload.to_json())
            .map_err(|e| Error::InvalidArgument(format!("the join payload is not JSON: {e}")))?;
        self.write_line(&json!({
            "payload": value,
            "muted": options.muted,
            "video_stopped": options.video_stopped,
        }))
        .await?;
        self.wait_answer(&mut answers, false).await
    }

    /// The next answer line of the kind asked for; one of the other kind is stale (its request
    /// is no longer waiting) and dropped.
    async fn wait_answer(
        &self,
        answers: &mut mpsc::UnboundedReceiver<Answer>,
        presentation: bool,
    ) -> Result<String> {
        let waited = self.inner.policy.answer_timeout;
        let deadline = tokio::time::Instant::now() + waited;
        loop {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some((p, r))) if p == presentation => return r,
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(Error::Stdio(
                        "the input ended before the answer came; write {\"answer\": …} after reading {\"payload\": …} (or {\"presentation_answer\": …} after {\"presentation_payload\": …})".into(),
                    ))
                }
                Err(_) => return Err(Error::NoAnswer { waited }),
            }
        }
    }
}

#[async_trait]
impl Signaling for StdioSignaling {
    async fn join(
        &self,
        _call: &CallRef,
        payloads: &mut PayloadFactory<'_>,
        options: &JoinOptions,
    ) -> Result<Joined> {
        if options.conference.is_some() {
            return Err(Error::ConferenceUnsupported);
        }
        let (payload, params, attempts) =
            join_with_retries(&self.inner.policy, METHOD, payloads, |payload| async move {
                self.request_answer(&payload, options).await
            })
            .await?;
        let answer = ServerAnswer::parse(&params).map_err(Error::BadAnswer)?;
        self.inner.hub.set_joined(
            STDIO_CALL,
            JoinedState {
                sources: payload.all_sources(),
                as_peer: options.join_as,
            },
        );
        Ok(Joined {
            answer,
            answer_json: params,
            payload,
            attempts,
            call: Some(STDIO_CALL),
            participant: None,
        })
    }

    async fn join_presentation(&self, _call: &CallRef, payload: &JoinPayload) -> Result<Joined> {
        let mut answers = self.inner.answers.lock().await;
        while answers.try_recv().is_ok() {}
        let value: Value = serde_json::from_str(&payload.to_json())
            .map_err(|e| Error::InvalidArgument(format!("the payload is not JSON: {e}")))?;
        self.write_line(&json!({ "presentation_payload": value }))
            .await?;
        let params = self.wait_answer(&mut answers, true).await?;
        let answer = ServerAnswer::parse(&params).map_err(Error::BadAnswer)?;
        Ok(Joined {
            answer,
            answer_json: params,
            payload: payload.clone(),
            attempts: 1,
            call: Some(STDIO_CALL),
            participant: None,
        })
    }

    async fn leave_presentation(&self, _call: &CallRef) -> Result<()> {
        self.write_line(&json!({ "presentation_leave": true }))
            .await
    }

    async fn leave(&self, _call: &CallRef, source: u32) -> Result<()> {
        self.inner.hub.clear_joined(STDIO_CALL.id);
        self.write_line(&json!({ "leave": { "source": source as i32 } }))
            .await
    }

    /// The application owns the real signaling; as far as this side knows, every source it
    /// was told about is still there.
    async fn check(&self, _call: &CallRef, sources: &[u32]) -> Result<Vec<u32>> {
        Ok(sources.to_vec())
    }

    async fn participants(
        &self,
        _call: &CallRef,
        query: &ParticipantQuery,
    ) -> Result<ParticipantPage> {
        let r = roster(&self.inner);
        let participants: Vec<Participant> = r
            .values()
            .filter(|p| query.sources.is_empty() || query.sources.contains(&p.source))
            .filter(|p| query.peers.is_empty() || query.peers.contains(&p.peer))
            .cloned()
            .collect();
        Ok(ParticipantPage {
            count: r.len() as i32,
            participants,
            next_offset: None,
            version: 0,
        })
    }

    async fn edit_participant(
        &self,
        _call: &CallRef,
        participant: Option<PeerId>,
        edit: &ParticipantEdit,
    ) -> Result<()> {
        if participant.is_some() {
            return Err(Error::Unsupported(
                "editing another participant over stdio signaling",
            ));
        }
        let mut fields = serde_json::Map::new();
        if let Some(m) = edit.muted {
            fields.insert("muted".into(), json!(m));
        }
        if let Some(v) = edit.volume {
            fields.insert("volume".into(), json!(v));
        }
        if let Some(r) = edit.raise_hand {
            fields.insert("raise_hand".into(), json!(r));
        }
        for (key, v) in [
            ("video_stopped", edit.video_stopped),
            ("video_paused", edit.video_paused),
            ("presentation_paused", edit.presentation_paused),
        ] {
            if let Some(v) = v {
                fields.insert(key.into(), json!(v));
            }
        }
        self.write_line(&json!({ "edit": fields })).await
    }

    fn updates(&self) -> UpdateStream {
        self.inner.hub.subscribe()
    }

    async fn watch(&self, _call: &CallRef) -> Result<()> {
        Ok(())
    }

    async fn get_call(&self, _call: &CallRef) -> Result<CallState> {
        let page = self
            .participants(&CallRef::Id(STDIO_CALL), &ParticipantQuery::default())
            .await?;
        Ok(CallState {
            call: CallInfo {
                id: STDIO_CALL,
                title: None,
                schedule_date: None,
                rtmp_stream: false,
                started: true,
                discarded: false,
                participants_count: page.count,
                version: 0,
                join_muted: false,
                stream_dc_id: None,
            },
            participants: page.participants,
            next_offset: None,
        })
    }

    async fn create_call(&self, _chat: Option<PeerId>, _create: &CreateCall) -> Result<CallInfo> {
        Err(Error::Unsupported("creating calls over stdio signaling"))
    }

    async fn start_scheduled(&self, _call: &CallRef) -> Result<()> {
        Err(Error::Unsupported("starting calls over stdio signaling"))
    }

    async fn join_as_candidates(
        &self,
        _call: &CallRef,
        _chat: Option<PeerId>,
    ) -> Result<Vec<PeerId>> {
        Err(Error::Unsupported("join-as peers over stdio signaling"))
    }

    async fn invite(&self, _call: &CallRef, _users: &[PeerId]) -> Result<()> {
        Err(Error::Unsupported("invitations over stdio signaling"))
    }

    async fn discard(&self, _call: &CallRef) -> Result<()> {
        Err(Error::Unsupported("ending calls over stdio signaling"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, BufReader};

    #[tokio::test]
    async fn lines_over_the_bound_are_skipped_without_being_held() {
        let (mut w, r) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            w.write_all(b"first\r\n").await.unwrap();
            // 3000 bytes: far over a bound of 1000, in pieces smaller than the bound.
            w.write_all(&[b'x'; 3000]).await.unwrap();
            w.write_all(b"\n").await.unwrap();
            w.write_all(&[b'y'; 1000]).await.unwrap(); // exactly the bound
            w.write_all(b"\n\xff\xfe\nlast").await.unwrap();
        });
        let mut lines = LineReader::new(BufReader::with_capacity(256, r), 1000);
        let mut got = Vec::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            assert!(lines.buf.capacity() <= 1000, "{}", lines.buf.capacity());
            got.push(l);
        }
        writer.await.unwrap();
        assert_eq!(
            got,
            [
                Line::Text("first".into()),
                Line::TooLong {
                    start: "x".repeat(QUOTED),
                    len: 3000
                },
                Line::Text("y".repeat(1000)),
                Line::NotUtf8 {
                    start: "\u{fffd}\u{fffd}".into()
                },
                Line::Text("last".into()),
            ]
        );
    }

    async fn next(c: &mut mpsc::UnboundedReceiver<StdioCommand>) -> StdioCommand {
        tokio::time::timeout(Duration::from_secs(5), c.recv())
            .await
            .expect("a command in time")
            .expect("the reader runs")
    }

    #[tokio::test]
    async fn an_over_long_line_is_reported_and_the_session_goes_on() {
        let (mut input, reader) = tokio::io::duplex(64 * 1024);
        let (_sig, mut commands) = StdioSignaling::new(BufReader::new(reader), tokio::io::sink());
        // A valid command padded past the bound must not act: it is not even parsed.
        let mut long = br#"{"mute": true, "pad": ""#.to_vec();
        long.resize(MAX_LINE + 10, b' ');
        long.extend_from_slice(b"\"}\n{\"mute\": false}\n");
        let writer = tokio::spawn(async move {
            input.write_all(&long).await.unwrap();
            input
        });
        match next(&mut commands).await {
            StdioCommand::Invalid { line, problem } => {
                assert!(line.len() < 2 * QUOTED, "{} bytes quoted", line.len());
                assert!(line.starts_with(r#"{"mute": true"#), "{line}");
                assert!(problem.contains("over the limit of 1048576"), "{problem}");
            }
            other => panic!("expected the long line's report, got {other:?}"),
        }
        assert_eq!(next(&mut commands).await, StdioCommand::Mute(false));
        drop(writer.await.unwrap());
        assert_eq!(next(&mut commands).await, StdioCommand::Leave);
    }

    /// The Python package's pump writes FLOOD_WAIT as its name and the seconds apart, as
    /// Pyrogram and Telethon report it: it must be the wait the retry logic sleeps through.
    #[tokio::test]
    async fn an_error_line_carries_the_number_of_names_such_as_flood_wait() {
        let (sig, _commands) =
            StdioSignaling::new(BufReader::new(tokio::io::empty()), tokio::io::sink());
        let (answers, mut got) = mpsc::unbounded_channel();
        let (commands, _) = mpsc::unbounded_channel();
        let line = r#"{"error": {"type": "FLOOD_WAIT", "code": 420, "value": 7}}"#;
        handle_line(line, &sig.inner, &answers, &commands).unwrap();
        match got.recv().await {
            Some((false, Err(Error::FloodWait { seconds, .. }))) => assert_eq!(seconds, 7),
            other => panic!("expected a 7 s FLOOD_WAIT, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_participants_line_carries_its_version() {
        let (mut input, reader) = tokio::io::duplex(4096);
        let (sig, mut commands) = StdioSignaling::new(BufReader::new(reader), tokio::io::sink());
        let mut updates = sig.updates();
        input
            .write_all(
                b"{\"participants\": [{\"source\": -5, \"peer\": 7}], \"version\": 42}\n\
                  {\"participants\": []}\n\
                  {\"participants\": [], \"version\": \"x\"}\n",
            )
            .await
            .unwrap();
        let mut versions = Vec::new();
        while versions.len() < 2 {
            let u = tokio::time::timeout(Duration::from_secs(5), updates.next())
                .await
                .expect("an update in time")
                .expect("the backend lives");
            if let SignalingUpdate::Participants {
                version,
                participants,
                ..
            } = u
            {
                versions.push((
                    version,
                    participants.iter().map(|p| p.source).collect::<Vec<_>>(),
                ));
            }
        }
        assert_eq!(versions, [(42, vec![(-5i32) as u32]), (0, vec![])]);
        match next(&mut commands).await {
            StdioCommand::Invalid { problem, .. } => {
                assert!(problem.contains("version"), "{problem}")
            }
            other => panic!("expected the bad version's report, got {other:?}"),
        }
        drop(input);
        assert_eq!(next(&mut commands).await, StdioCommand::Leave);
    }

    #[tokio::test]
    async fn the_roster_is_bounded() {
        let (mut input, reader) = tokio::io::duplex(64 * 1024);
        let (sig, mut commands) = StdioSignaling::new(BufReader::new(reader), tokio::io::sink());
        let line = |sources: std::ops::Range<i64>, left: bool| {
            let ps: Vec<Value> = sources
                .map(|s| json!({"source": s, "peer": s + 1, "left": left}))
                .collect();
            format!("{}\n", json!({ "participants": ps }))
        };
        let chunk = MAX_ROSTER as i64 / 10;
        let writer = tokio::spawn(async move {
            for i in 0..10 {
                let l = line(1 + i * chunk..1 + (i + 1) * chunk, false);
                input.write_all(l.as_bytes()).await.unwrap();
            }
            // One more is too many; one leaving makes room for it.
            input.write_all(line(0..1, false).as_bytes()).await.unwrap();
            input.write_all(line(1..2, true).as_bytes()).await.unwrap();
            input.write_all(line(0..1, false).as_bytes()).await.unwrap();
            input.write_all(b"{\"mute\": true}\n").await.unwrap();
            input
        });
        match next(&mut commands).await {
            StdioCommand::Invalid { problem, .. } => {
                assert!(problem.contains("would exceed 100000"), "{problem}")
            }
            other => panic!("expected the refusal, got {other:?}"),
        }
        assert_eq!(next(&mut commands).await, StdioCommand::Mute(true));
        let _input = writer.await.unwrap();
        let page = sig
            .participants(&CallRef::Id(STDIO_CALL), &ParticipantQuery::default())
            .await
            .unwrap();
        assert_eq!(page.count as usize, MAX_ROSTER);
        assert!(page.participants.iter().any(|p| p.source == 0));
        assert!(!page.participants.iter().any(|p| p.source == 1));
    }

    #[tokio::test]
    async fn a_line_of_invalid_utf8_is_reported_and_the_session_goes_on() {
        let input: &[u8] = b"\xff\xfe{\"mute\":1}\r\n{\"mute\":true}\n";
        let (_backend, mut commands) = StdioSignaling::new(input, tokio::io::sink());
        match commands.recv().await {
            Some(StdioCommand::Invalid { line, problem }) => {
                assert!(line.contains('\u{fffd}'), "{line:?}");
                assert!(problem.contains("UTF-8"), "{problem}");
            }
            other => panic!("expected the bad line reported, got {other:?}"),
        }
        assert_eq!(commands.recv().await, Some(StdioCommand::Mute(true)));
        assert_eq!(commands.recv().await, Some(StdioCommand::Leave));
    }

    #[tokio::test]
    async fn participants_carry_their_camera_and_screen_and_bad_video_is_reported() {
        let (mut input, reader) = tokio::io::duplex(8192);
        let (sig, mut commands) = StdioSignaling::new(BufReader::new(reader), tokio::io::sink());
        let mut updates = sig.updates();
        let cam = json!({"endpoint": "cam-1", "source_groups": [
            {"semantics": "SIM", "sources": [11, 13, 15]},
            {"semantics": "FID", "sources": [11, -12]}], "paused": true});
        let good = json!({"participants": [{"source": 10, "peer": 7, "video": cam,
            "video_stopped": false, "presentation": {"endpoint": "screen-1",
            "source_groups": [{"semantics": "FID", "sources": [21, 22]}]}}]});
        let bad = json!({"participants": [{"source": 10, "peer": 7,
            "video": {"endpoint": "x", "source_groups": [{"semantics": "SIM", "sources": ["a"]}]}}]});
        input
            .write_all(format!("{good}\n{bad}\n").as_bytes())
            .await
            .unwrap();
        let p = loop {
            let u = tokio::time::timeout(Duration::from_secs(5), updates.next())
                .await
                .expect("an update in time")
                .expect("the backend lives");
            if let SignalingUpdate::Participants { participants, .. } = u {
                break participants[0].clone();
            }
        };
        let v = p.video.expect("the camera");
        assert!(!p.video_stopped && v.paused);
        assert_eq!(v.endpoint, "cam-1");
        assert_eq!(v.source_groups[0].sources, [11, 13, 15]);
        assert_eq!(v.source_groups[1].sources, [11, (-12i32) as u32]);
        assert_eq!(p.presentation.expect("the screen").endpoint, "screen-1");
        match next(&mut commands).await {
            StdioCommand::Invalid { problem, .. } => {
                assert!(
                    problem.contains("\"video\"") && problem.contains("SSRC"),
                    "{problem}"
                )
            }
            other => panic!("expected the bad video reported, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_screen_share_writes_its_payload_and_takes_only_a_presentation_answer() {
        let (mut input, reader) = tokio::io::duplex(8192);
        let (out_w, out_r) = tokio::io::duplex(8192);
        let (sig, _commands) = StdioSignaling::new(BufReader::new(reader), out_w);
        let identity = groupcall_media::LocalIdentity::generate().unwrap();
        let payload = JoinPayload::new(&identity, groupcall_media::VideoPublish::Screen);
        let share = tokio::spawn({
            let sig = sig.clone();
            let payload = payload.clone();
            async move {
                sig.join_presentation(&CallRef::Id(STDIO_CALL), &payload)
                    .await
            }
        });
        let mut lines = BufReader::new(out_r).lines();
        let line: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        let written = JoinPayload::parse(&line["presentation_payload"].to_string()).unwrap();
        assert_eq!(written, payload);
        assert_eq!(written.ssrc_groups.len(), 3, "two layers: SIM and two FID");
        // A stray answer for the call's own connection is not the share's.
        let answer = r#"{"transport":{"ufrag":"u","pwd":"p","fingerprints":[{"hash":"sha-256","setup":"active","fingerprint":"00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F"}],"candidates":[{"generation":"0","component":"1","protocol":"udp","port":"32000","ip":"127.0.0.1","foundation":"1","id":"c","priority":"1","type":"host","network":"0"}]}}"#;
        input
            .write_all(
                format!("{{\"answer\": {{}}}}\n{{\"presentation_answer\": {answer}}}\n").as_bytes(),
            )
            .await
            .unwrap();
        let joined = share.await.unwrap().expect("the share is answered");
        let json = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        assert_eq!(json(&joined.answer_json), json(answer));
        sig.leave_presentation(&CallRef::Id(STDIO_CALL))
            .await
            .unwrap();
        let line: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(line, json!({"presentation_leave": true}));
    }
}
