//! One joined call as Python sees it: control methods that return awaitables, events and
//! received frames as awaitables the Python layer turns into async iterators.
//!
//! The engine's `Call` sits behind an async read-write lock: controls (mute, seek, …) share
//! it, `leave` takes it alone. Events and frames have handles of their own, so waiting for
//! the next event never holds up a control.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use groupcall_engine::audio::sink::ReceivedFrame;
use groupcall_engine::audio::{Channels, FrameKind, FramePusher, SourceOptions};
use groupcall_engine::{Call, CallEvents, CallStats, CallSummary};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex as AsyncMutex, RwLock};

use crate::completions::Completions;
use crate::errors::{to_py, CallEndedError, ConfigError};
use crate::on_media;
use crate::options::{open, Prepared};

/// The most events or frames handed to Python at once. Whatever came since the loop last took
/// some goes in one result: one wake-up of the asyncio loop (one task, one byte on the socket)
/// for many speakers' frames, not one each.
const BATCH: usize = 64;

/// Received frames on their way to Python: a bounded queue the engine fills without ever
/// waiting (a full queue drops the frame and counts it), so a slow or blocked event loop
/// costs frames, never the call's timing.
#[derive(Clone)]
pub(crate) struct FrameQueue {
    rx: Arc<AsyncMutex<mpsc::Receiver<ReceivedFrame>>>,
    dropped: Arc<AtomicU64>,
}

impl FrameQueue {
    pub(crate) fn new(capacity: usize) -> (impl FnMut(ReceivedFrame) + Send + 'static, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let sink = move |frame: ReceivedFrame| {
            if tx.try_send(frame).is_err() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        };
        (
            sink,
            FrameQueue {
                rx: Arc::new(AsyncMutex::new(rx)),
                dropped,
            },
        )
    }
}

/// One speaker's 20 ms of decoded audio: 48 kHz signed 16-bit little-endian PCM.
#[pyclass(module = "groupcall._native", frozen)]
pub struct Frame {
    #[pyo3(get)]
    ssrc: u32,
    /// The speaker's dialog id once the roster named it, else `None`.
    #[pyo3(get)]
    peer: Option<i64>,
    #[pyo3(get)]
    channels: u8,
    /// `decoded`, `recovered` (FEC), `concealed` (loss) or `silence`.
    #[pyo3(get)]
    kind: &'static str,
    samples: Vec<i16>,
}

#[pymethods]
impl Frame {
    /// The samples, interleaved, as bytes (`array('h', frame.pcm)` or
    /// `numpy.frombuffer(frame.pcm, '<i2')` reads them).
    #[getter]
    fn pcm<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        // Written straight into the bytes object: one copy per frame, not two.
        PyBytes::new_with(py, self.samples.len() * 2, |out| {
            for (dst, s) in out.chunks_exact_mut(2).zip(&self.samples) {
                dst.copy_from_slice(&s.to_le_bytes());
            }
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Frame(ssrc={}, peer={:?}, channels={}, kind={:?}, samples={})",
            self.ssrc,
            self.peer,
            self.channels,
            self.kind,
            self.samples.len()
        )
    }
}

impl From<ReceivedFrame> for Frame {
    fn from(f: ReceivedFrame) -> Self {
        Frame {
            ssrc: f.ssrc,
            peer: f.peer,
            channels: f.channels.count() as u8,
            kind: match f.kind {
                FrameKind::Decoded => "decoded",
                FrameKind::Recovered => "recovered",
                FrameKind::Concealed => "concealed",
                FrameKind::Silence => "silence",
            },
            samples: f.pcm,
        }
    }
}

/// A joined call.
#[pyclass(module = "groupcall._native", frozen)]
pub struct NativeCall {
    call: Arc<RwLock<Option<Call>>>,
    events: Arc<AsyncMutex<CallEvents>>,
    frames: Option<FrameQueue>,
    pusher: Arc<Mutex<Option<FramePusher>>>,
    channels: Channels,
    summary: Arc<OnceLock<String>>,
}

impl NativeCall {
    pub(crate) fn new(mut call: Call, prepared: Prepared) -> Self {
        let events = call.take_events();
        NativeCall {
            call: Arc::new(RwLock::new(Some(call))),
            events: Arc::new(AsyncMutex::new(events)),
            frames: prepared.frames,
            pusher: Arc::new(Mutex::new(prepared.pusher)),
            channels: prepared.channels,
            summary: Arc::default(),
        }
    }

    fn pusher(&self) -> PyResult<FramePusher> {
        self.pusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                ConfigError::new_err(
                    "this call has no pushed-frame source: join with push=True to push frames, or the push was ended",
                )
            })
    }
}

fn left() -> PyErr {
    CallEndedError::new_err("the call was left; join again to go on")
}

/// Runs `$body` with `$c` bound to the call, on the media runtime, as an awaitable.
macro_rules! with_call {
    ($self:ident, $done:ident, |$c:ident| $body:expr) => {{
        let call = $self.call.clone();
        on_media($done, async move {
            let guard = call.read().await;
            let $c = guard.as_ref().ok_or_else(left)?;
            $body.map_err(to_py)
        })
    }};
}

#[pymethods]
impl NativeCall {
    /// The audio SSRC this participant sends with (it changes on a rejoin).
    #[getter]
    fn ssrc(&self) -> PyResult<u32> {
        let guard = self.call.try_read().map_err(|_| left())?;
        Ok(guard.as_ref().ok_or_else(left)?.ssrc())
    }

    /// The events waiting (at least one, at most [`BATCH`]) as JSON objects, waiting for
    /// one if none is; `None` once the call has ended.
    fn next_events<'py>(&self, done: &Bound<'py, Completions>) -> PyResult<u64> {
        let events = self.events.clone();
        on_media(done, async move {
            let mut events = events.lock().await;
            let Some(first) = events.next().await else {
                return Ok(None);
            };
            let mut out = vec![first.to_json().to_string()];
            while out.len() < BATCH {
                match events.try_next() {
                    Some(e) => out.push(e.to_json().to_string()),
                    None => break,
                }
            }
            Ok(Some(out))
        })
    }

    /// The received frames waiting (at least one, at most [`BATCH`]), waiting for one if none
    /// is; `None` once the call has ended. Needs `frames=True`.
    fn next_frames<'py>(&self, done: &Bound<'py, Completions>) -> PyResult<u64> {
        let Some(frames) = self.frames.clone() else {
            return Err(ConfigError::new_err(
                "this call does not hand over frames: join with frames=True",
            ));
        };
        on_media(done, async move {
            let mut rx = frames.rx.lock().await;
            let Some(first) = rx.recv().await else {
                return Ok(None);
            };
            let mut out = vec![Frame::from(first)];
            while out.len() < BATCH {
                match rx.try_recv() {
                    Ok(f) => out.push(Frame::from(f)),
                    Err(_) => break,
                }
            }
            Ok(Some(out))
        })
    }

    /// Pushes 48 kHz signed 16-bit little-endian PCM (interleaved when stereo), waiting while
    /// the queue is full. Needs `push=True`.
    fn push<'py>(&self, done: &Bound<'py, Completions>, pcm: &[u8]) -> PyResult<u64> {
        if !pcm.len().is_multiple_of(2) {
            return Err(ConfigError::new_err(format!(
                "{} bytes is not whole 16-bit samples: push signed 16-bit little-endian PCM",
                pcm.len()
            )));
        }
        let samples: Vec<i16> = pcm
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let pusher = self.pusher()?;
        on_media(
            done,
            async move { pusher.push(samples).await.map_err(to_py) },
        )
    }

    /// No more pushed frames: the source ends once what was pushed has played.
    fn end_push(&self) {
        self.pusher.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Plays `spec` (a path, a URL) from now on, instead of what played.
    #[pyo3(signature = (done, spec, *, looping=false, start=None))]
    fn play<'py>(
        &self,
        done: &Bound<'py, Completions>,
        spec: String,
        looping: bool,
        start: Option<f64>,
    ) -> PyResult<u64> {
        let options = SourceOptions {
            channels: self.channels,
            looping,
        };
        let call = self.call.clone();
        on_media(done, async move {
            let source = open(&spec, options, start).await?;
            let guard = call.read().await;
            guard
                .as_ref()
                .ok_or_else(left)?
                .set_source(Some(source))
                .map_err(to_py)
        })
    }

    /// Plays `spec` after what plays and what is queued, with no gap.
    fn enqueue<'py>(&self, done: &Bound<'py, Completions>, spec: String) -> PyResult<u64> {
        let options = SourceOptions {
            channels: self.channels,
            looping: false,
        };
        let call = self.call.clone();
        on_media(done, async move {
            let source = open(&spec, options, None).await?;
            let guard = call.read().await;
            let c = guard.as_ref().ok_or_else(left)?;
            c.enqueue(source).await.map_err(to_py)
        })
    }

    /// Stops what plays (the queue goes on).
    fn stop<'py>(&self, done: &Bound<'py, Completions>) -> PyResult<u64> {
        with_call!(self, done, |c| c.set_source(None))
    }

    fn skip<'py>(&self, done: &Bound<'py, Completions>) -> PyResult<u64> {
        with_call!(self, done, |c| c.skip())
    }

    fn pause<'py>(&self, done: &Bound<'py, Completions>) -> PyResult<u64> {
        with_call!(self, done, |c| c.pause())
    }

    fn resume<'py>(&self, done: &Bound<'py, Completions>) -> PyResult<u64> {
        with_call!(self, done, |c| c.resume())
    }

    fn seek<'py>(&self, done: &Bound<'py, Completions>, seconds: f64) -> PyResult<u64> {
        if !(seconds.is_finite() && (0.0..=31_536_000.0).contains(&seconds)) {
            return Err(ConfigError::new_err(format!(
                "seek to {seconds} s: give a number of seconds from 0"
            )));
        }
        with_call!(self, done, |c| c
            .seek(Duration::from_secs_f64(seconds))
            .await)
    }

    fn mute<'py>(&self, done: &Bound<'py, Completions>) -> PyResult<u64> {
        with_call!(self, done, |c| c.mute().await)
    }

    fn unmute<'py>(&self, done: &Bound<'py, Completions>) -> PyResult<u64> {
        with_call!(self, done, |c| c.unmute().await)
    }

    /// Stops or resumes sending without telling the server (bring-your-own signaling tells
    /// it through the application's adapter).
    fn mute_locally<'py>(&self, done: &Bound<'py, Completions>, muted: bool) -> PyResult<u64> {
        with_call!(self, done, |c| c.mute_locally(muted))
    }

    /// This participant's volume as others hear it, 1 to 200 %.
    fn set_volume<'py>(&self, done: &Bound<'py, Completions>, percent: u32) -> PyResult<u64> {
        with_call!(self, done, |c| c.set_volume(percent).await)
    }

    /// Gain on what this call receives (recordings, frames), 1.0 unchanged.
    fn set_gain<'py>(&self, done: &Bound<'py, Completions>, gain: f32) -> PyResult<u64> {
        with_call!(self, done, |c| c.set_gain(gain))
    }

    /// Starts recording now: a file per speaker in `dir`, the mix into `mix`, or both.
    #[pyo3(signature = (done, dir=None, mix=None))]
    fn record<'py>(
        &self,
        done: &Bound<'py, Completions>,
        dir: Option<PathBuf>,
        mix: Option<PathBuf>,
    ) -> PyResult<u64> {
        with_call!(self, done, |c| c.record(dir, mix).await)
    }

    /// Where in the playing source the call is, in seconds; `None` with nothing playing.
    fn position(&self) -> PyResult<Option<f64>> {
        let guard = self.call.try_read().map_err(|_| left())?;
        Ok(guard
            .as_ref()
            .ok_or_else(left)?
            .position()
            .map(|d| d.as_secs_f64()))
    }

    /// The call's figures, as a JSON object.
    fn stats(&self) -> PyResult<String> {
        let guard = self.call.try_read().map_err(|_| left())?;
        let stats = guard.as_ref().ok_or_else(left)?.stats();
        let dropped = self
            .frames
            .as_ref()
            .map_or(0, |f| f.dropped.load(Ordering::Relaxed));
        let mut v = stats_json(&stats);
        v["frames_dropped"] = json!(dropped);
        Ok(v.to_string())
    }

    /// Leaves the call and closes its recordings; the summary as a JSON object. Leaving again
    /// answers the same summary.
    fn leave<'py>(&self, done: &Bound<'py, Completions>) -> PyResult<u64> {
        let (call, summary, pusher) =
            (self.call.clone(), self.summary.clone(), self.pusher.clone());
        on_media(done, async move {
            pusher.lock().unwrap_or_else(|p| p.into_inner()).take();
            let taken = call.write().await.take();
            match taken {
                Some(c) => {
                    let s = summary_json(&c.leave().await.map_err(to_py)?).to_string();
                    Ok(summary.get_or_init(|| s).clone())
                }
                None => summary.get().cloned().ok_or_else(left),
            }
        })
    }
}

fn stats_json(s: &CallStats) -> Value {
    let speakers: Vec<Value> = s
        .speakers
        .iter()
        .map(|p| {
            json!({"ssrc": p.ssrc, "peer": p.peer.map(|p| p.dialog_id()), "packets": p.packets,
                "lost": p.lost, "jitter_ms": p.jitter_ms, "level": p.level})
        })
        .collect();
    json!({
        "connected": s.connected, "ssrc": s.ssrc, "muted": s.muted,
        "packets_sent": s.packets_sent, "packets_received": s.packets_received,
        "dropped": s.dropped, "rejoins": s.rejoins, "recording_errors": s.recording_errors,
        "events_dropped": s.events_dropped, "queued": s.queued, "paused": s.paused,
        "position": s.source_position.map(|d| d.as_secs_f64()),
        "duration": s.source_duration.map(|d| d.as_secs_f64()),
        "speakers": speakers,
    })
}

fn summary_json(s: &CallSummary) -> Value {
    let recordings: Vec<Value> = s
        .recordings
        .iter()
        .map(|(ssrc, path)| json!({"ssrc": ssrc, "path": path.display().to_string()}))
        .collect();
    json!({
        "stats": stats_json(&s.stats),
        "recordings": recordings,
        "mix": s.mix.as_ref().map(|p| p.display().to_string()),
        "errors": s.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "reason": s.reason.as_ref().map(|r| r.code()),
    })
}
