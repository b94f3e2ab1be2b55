//! How a Python caller asks to join: one `Options` object, checked when it is made, turned
//! into the engine's `CallConfig` when the join runs.

use std::path::PathBuf;
use std::time::Duration;

use groupcall_engine::audio::source::{OpenOptions, RawFormat};
use groupcall_engine::audio::{
    AppSink, Channels, EncoderConfig, FramePusher, Source, SourceOptions,
};
use groupcall_engine::signaling::{JoinOptions, PeerId};
use groupcall_engine::CallConfig;
use pyo3::prelude::*;

use crate::call::FrameQueue;
use crate::errors::{to_py, ConfigError};

/// Chunks of pushed audio queued ahead by default: 50 chunks of 20 ms are one second.
const PUSH_CAPACITY: usize = 50;
/// Received frames waiting for Python by default: five seconds of one speaker.
const FRAME_CAPACITY: usize = 250;

#[pyclass(module = "groupcall._native", frozen)]
#[derive(Clone, Debug)]
pub struct Options {
    play: Option<String>,
    looping: bool,
    start: Option<f64>,
    muted: Option<bool>,
    /// The encoder preset (`voice`, `lean` or `music`).
    encoder: EncoderConfig,
    stereo: Option<bool>,
    bitrate: Option<u32>,
    record_dir: Option<PathBuf>,
    record_mix: Option<PathBuf>,
    frames: bool,
    frame_capacity: usize,
    push: bool,
    push_capacity: usize,
    join_as: Option<PeerId>,
    invite_hash: Option<String>,
    speaking_events: bool,
}

#[pymethods]
impl Options {
    #[new]
    #[pyo3(signature = (*, play=None, looping=false, start=None, muted=None, preset="voice",
        stereo=None, bitrate=None, record_dir=None, record_mix=None, frames=false,
        frame_capacity=FRAME_CAPACITY, push=false, push_capacity=PUSH_CAPACITY, join_as=None,
        invite_hash=None, speaking_events=true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        play: Option<String>,
        looping: bool,
        start: Option<f64>,
        muted: Option<bool>,
        preset: &str,
        stereo: Option<bool>,
        bitrate: Option<u32>,
        record_dir: Option<PathBuf>,
        record_mix: Option<PathBuf>,
        frames: bool,
        frame_capacity: usize,
        push: bool,
        push_capacity: usize,
        join_as: Option<i64>,
        invite_hash: Option<String>,
        speaking_events: bool,
    ) -> PyResult<Self> {
        let encoder = match preset {
            "voice" => EncoderConfig::voice(),
            "lean" => EncoderConfig::lean(),
            "music" => EncoderConfig::music(),
            other => {
                return Err(ConfigError::new_err(format!(
                    "preset {other:?} is unknown: give \"voice\" (32 kbit/s mono), \"lean\" (64 kbit/s mono CELT, a sixth of voice's encoder CPU, no FEC) or \"music\" (128 kbit/s stereo)"
                )))
            }
        };
        if play.is_some() && push {
            return Err(ConfigError::new_err(
                "play and push are two sources: give one (play a file, or push frames)",
            ));
        }
        if let Some(k) = bitrate.filter(|k| !(6..=510).contains(k)) {
            return Err(ConfigError::new_err(format!(
                "bitrate {k} kbit/s is out of range: Opus takes 6 to 510"
            )));
        }
        if let Some(s) = start.filter(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(ConfigError::new_err(format!(
                "start {s} s is not a time in the file: give a number of seconds >= 0"
            )));
        }
        if frame_capacity == 0 || push_capacity == 0 {
            return Err(ConfigError::new_err(
                "frame_capacity and push_capacity must be at least 1",
            ));
        }
        let join_as = join_as
            .map(|id| {
                PeerId::from_dialog_id(id).ok_or_else(|| {
                    ConfigError::new_err(format!(
                        "join_as {id} is not a peer: give a user id (positive) or a channel id (-100…)"
                    ))
                })
            })
            .transpose()?;
        Ok(Options {
            play,
            looping,
            start,
            muted,
            encoder,
            stereo,
            bitrate,
            record_dir,
            record_mix,
            frames,
            frame_capacity,
            push,
            push_capacity,
            join_as,
            invite_hash,
            speaking_events,
        })
    }
}

/// A `CallConfig` and the Python-side ends of what it feeds.
pub(crate) struct Prepared {
    pub config: CallConfig,
    pub pusher: Option<FramePusher>,
    pub frames: Option<FrameQueue>,
    pub channels: Channels,
}

impl Options {
    pub(crate) fn channels(&self) -> Channels {
        if self
            .stereo
            .unwrap_or(self.encoder.channels == Channels::Stereo)
        {
            Channels::Stereo
        } else {
            Channels::Mono
        }
    }

    /// Opens the source (files off the runtime's workers) and builds the call's config. Runs
    /// on the media runtime.
    pub(crate) async fn prepare(&self) -> PyResult<Prepared> {
        let channels = self.channels();
        let mut encoder = self.encoder;
        encoder.channels = channels;
        if let Some(k) = self.bitrate {
            encoder.bitrate = k * 1000;
        }
        let source_options = SourceOptions {
            channels,
            looping: self.looping,
        };
        let mut pusher = None;
        let source = match (&self.play, self.push) {
            (Some(spec), _) => Some(open(spec, source_options, self.start).await?),
            (None, true) => {
                let (s, p) = Source::pushed(self.push_capacity, source_options).map_err(to_py)?;
                pusher = Some(p);
                Some(s)
            }
            (None, false) => None,
        };
        let (app_sink, frames) = if self.frames {
            let (sink, queue) = FrameQueue::new(self.frame_capacity);
            (Some(sink), Some(queue))
        } else {
            (None, None)
        };
        let config = CallConfig {
            join: JoinOptions {
                join_as: self.join_as,
                invite_hash: self.invite_hash.clone(),
                ..JoinOptions::default()
            },
            muted: self.muted,
            source,
            encoder,
            record_dir: self.record_dir.clone(),
            record_mix: self.record_mix.clone(),
            app_sink: app_sink.map(AppSink::callback),
            speaking_events: self.speaking_events,
            ..CallConfig::default()
        };
        Ok(Prepared {
            config,
            pusher,
            frames,
            channels,
        })
    }
}

/// Opens what `play` names, as `groupcall join --play` does, and goes to `start`.
pub(crate) async fn open(
    spec: &str,
    options: SourceOptions,
    start: Option<f64>,
) -> PyResult<Source> {
    let open = OpenOptions {
        raw: RawFormat::default(),
        ffmpeg: false,
        source: options,
    };
    let mut source = Source::open(spec, open).await.map_err(to_py)?;
    if let Some(s) = start {
        source.seek(Duration::from_secs_f64(s)).map_err(to_py)?;
    }
    Ok(source)
}
