//! Where outgoing audio comes from: files (WAV, raw PCM, Ogg/Opus), streams (standard input, a
//! named pipe, any reader), frames the application pushes, and anything ffmpeg can decode.
//!
//! A [`Source`] is pulled: [`Source::next_frame`] hands out the next 20 ms of 48 kHz PCM, or an
//! Opus packet from an Ogg file to send as it is. Pacing is the driver's job (one pull per
//! frame duration), which keeps sources free of timers and lets tests pull as fast as they like.
//! The end of a source is reported exactly once; a looping source starts over instead.

mod ffmpeg;
mod ogg_opus;
mod pushed;
mod raw;
mod wav;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use ffmpeg::DEFAULT_FFMPEG;
pub use ogg_opus::{OpusHead, OpusTags};
pub use pushed::FramePusher;

use super::resample::Conformer;
use super::{Channels, SAMPLE_RATE};
use crate::error::{Error, Result};

/// 20 ms of audio to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// 960 samples per channel at 48 kHz, interleaved, in the source's channel layout.
    Pcm(&'a [i16]),
    /// An Opus packet from a file, sent without re-encoding. `samples` (per channel at 48 kHz)
    /// is its duration: 10 to 120 ms, so the driver paces by it rather than by 20 ms.
    Opus { packet: &'a [u8], samples: u32 },
}

impl Frame<'_> {
    /// Duration in samples per channel at 48 kHz.
    pub fn samples(&self, channels: Channels) -> u32 {
        match self {
            Frame::Pcm(pcm) => (pcm.len() / channels.count()) as u32,
            Frame::Opus { samples, .. } => *samples,
        }
    }
}

/// The result of one pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next<'a> {
    Frame(Frame<'a>),
    /// Nothing to send right now (pushed frames have not come yet); try again next tick. Also
    /// what a source answers once it has ended.
    Idle,
    /// The source is exhausted. Reported once; later pulls return `Idle`.
    End,
}

/// How a source delivers its audio.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceOptions {
    /// The layout of the frames handed out (the encoder's). Inputs are converted to it.
    pub channels: Channels,
    /// Start over at the end instead of ending (files and ffmpeg inputs only).
    pub looping: bool,
}

/// The layout of raw signed 16-bit little-endian PCM, which carries no header to say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFormat {
    pub rate: u32,
    pub channels: usize,
}

impl Default for RawFormat {
    /// 48 kHz stereo: what `ffmpeg -f s16le -ar 48000 -ac 2` writes.
    fn default() -> Self {
        RawFormat {
            rate: SAMPLE_RATE,
            channels: 2,
        }
    }
}

/// What a PCM reader returned.
pub(crate) enum ReadOutcome {
    /// This many samples (whole frames) were written.
    Samples(usize),
    /// Nothing now, more may come.
    Pending,
    End,
}

/// A decoder or stream that yields interleaved `i16` PCM at its own rate and channel count.
pub(crate) trait PcmReader: Send {
    /// Fills the start of `out` (whose length is a multiple of the channel count).
    fn read(&mut self, out: &mut [i16]) -> Result<ReadOutcome>;
    /// Starts over from the beginning (only called when the source may loop).
    fn rewind(&mut self) -> Result<()>;
}

enum Kind {
    Pcm {
        reader: Box<dyn PcmReader>,
        conformer: Box<Conformer>,
        in_channels: usize,
        input_done: bool,
    },
    Ogg(Box<ogg_opus::OggOpus>),
}

/// A source of outgoing audio. See the module documentation.
pub struct Source {
    name: String,
    kind: Kind,
    channels: Channels,
    looping: bool,
    ended: bool,
    produced_since_start: bool,
    scratch: Vec<i16>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("channels", &self.channels)
            .field("looping", &self.looping)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// Samples read from a PCM reader per call (per channel).
const READ_FRAMES: usize = 1024;

impl Source {
    fn from_pcm(
        name: String,
        reader: Box<dyn PcmReader>,
        rate: u32,
        in_channels: usize,
        options: SourceOptions,
    ) -> Result<Self> {
        let conformer = Box::new(Conformer::new(&name, rate, in_channels, options.channels)?);
        Ok(Source {
            name,
            kind: Kind::Pcm {
                reader,
                conformer,
                in_channels,
                input_done: false,
            },
            channels: options.channels,
            looping: options.looping,
            ended: false,
            produced_since_start: false,
            scratch: vec![0; READ_FRAMES * in_channels],
        })
    }

    /// A WAV file: 8/16/24/32-bit integer or 32-bit float PCM, any rate and channel count.
    pub fn wav(path: impl AsRef<Path>, options: SourceOptions) -> Result<Self> {
        let path = path.as_ref();
        let reader = wav::WavFile::open(path)?;
        let (rate, channels) = (reader.rate(), reader.channels());
        Self::from_pcm(
            path.display().to_string(),
            Box::new(reader),
            rate,
            channels,
            options,
        )
    }

    /// A file of raw signed 16-bit little-endian PCM.
    pub fn raw_file(
        path: impl AsRef<Path>,
        format: RawFormat,
        options: SourceOptions,
    ) -> Result<Self> {
        let path = path.as_ref();
        check_raw(&path.display().to_string(), format)?;
        let reader = raw::RawReader::file(path, format.channels)?;
        Self::from_pcm(
            path.display().to_string(),
            Box::new(reader),
            format.rate,
            format.channels,
            options,
        )
    }

    /// Raw s16le PCM from any byte stream (a socket, a decoder's output). Blocks in
    /// `next_frame` while the stream has nothing; cannot loop.
    pub fn reader(
        name: impl Into<String>,
        reader: impl Read + Send + 'static,
        format: RawFormat,
        options: SourceOptions,
    ) -> Result<Self> {
        let name = name.into();
        check_raw(&name, format)?;
        if options.looping {
            return Err(Error::CannotLoop { input: name });
        }
        let prefetch = raw::Prefetch::spawn(&name, reader)?;
        let reader = raw::RawReader::stream(name.clone(), prefetch, format.channels);
        Self::from_pcm(
            name,
            Box::new(reader),
            format.rate,
            format.channels,
            options,
        )
    }

    /// Raw s16le PCM on standard input (`ffmpeg ... -f s16le - | bot`).
    pub fn stdin(format: RawFormat, options: SourceOptions) -> Result<Self> {
        Self::reader("standard input", std::io::stdin(), format, options)
    }

    /// Raw s16le PCM from a named pipe (FIFO). Opening blocks until a writer opens the pipe, so
    /// call this off the async runtime.
    pub fn named_pipe(
        path: impl AsRef<Path>,
        format: RawFormat,
        options: SourceOptions,
    ) -> Result<Self> {
        let path = path.as_ref();
        let name = path.display().to_string();
        check_raw(&name, format)?;
        if options.looping {
            return Err(Error::CannotLoop { input: name });
        }
        let file = std::fs::File::open(path).map_err(|source| Error::OpenInput {
            path: path.to_path_buf(),
            source,
        })?;
        Self::reader(name, file, format, options)
    }

    /// An Ogg/Opus file. Its packets are sent as they are when they fit (10..120 ms, at most
    /// 1000 bytes); others are decoded and handed out as PCM for the encoder.
    pub fn ogg_opus(path: impl AsRef<Path>, options: SourceOptions) -> Result<Self> {
        let path = path.as_ref();
        let ogg = ogg_opus::OggOpus::open(path, options.channels)?;
        Ok(Source {
            name: path.display().to_string(),
            kind: Kind::Ogg(Box::new(ogg)),
            channels: options.channels,
            looping: options.looping,
            ended: false,
            produced_since_start: false,
            scratch: Vec::new(),
        })
    }

    /// Frames the application pushes through the returned [`FramePusher`]: 48 kHz interleaved
    /// samples in `options.channels`, in chunks of any length. At most `capacity` chunks wait;
    /// the source ends when every pusher is dropped and the queue is drained.
    pub fn pushed(capacity: usize, options: SourceOptions) -> Result<(Self, FramePusher)> {
        if options.looping {
            return Err(Error::CannotLoop {
                input: "pushed frames".into(),
            });
        }
        let (reader, pusher) = pushed::channel(capacity.max(1), options.channels.count());
        let source = Self::from_pcm(
            "pushed frames".into(),
            Box::new(reader),
            SAMPLE_RATE,
            options.channels.count(),
            options,
        )?;
        Ok((source, pusher))
    }

    /// Any input ffmpeg can read (MP3, AAC, FLAC, a URL...), decoded by an `ffmpeg`
    /// subprocess. `binary` defaults to `ffmpeg` on the `PATH`; when it is missing the error
    /// says so ([`Error::FfmpegMissing`]).
    pub fn ffmpeg(input: &str, binary: Option<&Path>, options: SourceOptions) -> Result<Self> {
        let binary: PathBuf =
            binary.map_or_else(|| PathBuf::from(DEFAULT_FFMPEG), Path::to_path_buf);
        let ch = options.channels.count();
        let reader = ffmpeg::Ffmpeg::spawn(binary, input.to_string(), ch)?;
        Self::from_pcm(
            format!("ffmpeg: {input}"),
            Box::new(reader),
            SAMPLE_RATE,
            ch,
            options,
        )
    }

    /// What this source reads, for logs and errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layout of the PCM frames handed out.
    pub fn channels(&self) -> Channels {
        self.channels
    }

    /// Whether the end has been reported.
    pub fn is_finished(&self) -> bool {
        self.ended
    }

    /// The tags of an Ogg/Opus source (title, artist...).
    pub fn opus_tags(&self) -> Option<&OpusTags> {
        match &self.kind {
            Kind::Ogg(o) => Some(o.tags()),
            Kind::Pcm { .. } => None,
        }
    }

    /// The identification header of an Ogg/Opus source.
    pub fn opus_head(&self) -> Option<&OpusHead> {
        match &self.kind {
            Kind::Ogg(o) => Some(o.head()),
            Kind::Pcm { .. } => None,
        }
    }

    /// Packets of an Ogg/Opus source that no decoder would accept (skipped, not sent).
    pub fn skipped_packets(&self) -> u64 {
        match &self.kind {
            Kind::Ogg(o) => o.skipped(),
            Kind::Pcm { .. } => 0,
        }
    }

    /// The next frame. Blocking sources (pipes, standard input, ffmpeg) block here until they
    /// have a frame or end.
    ///
    /// After the end or an error the source is finished: later pulls return `Idle`, so the
    /// driver sees exactly one `End` (or one error).
    pub fn next_frame(&mut self) -> Result<Next<'_>> {
        if self.ended {
            return Ok(Next::Idle);
        }
        let step = match self.advance() {
            Ok(step) => step,
            Err(e) => {
                self.ended = true;
                return Err(e);
            }
        };
        match (step, &mut self.kind) {
            (Step::Ready, Kind::Pcm { conformer, .. }) => Ok(Next::Frame(Frame::Pcm(
                conformer.frame().unwrap_or_default(),
            ))),
            (Step::Ready, Kind::Ogg(ogg)) => Ok(Next::Frame(ogg.current())),
            (Step::Idle, _) => Ok(Next::Idle),
            (Step::End, _) => {
                self.ended = true;
                Ok(Next::End)
            }
        }
    }

    /// Reads until a frame is ready (left in the conformer or the Ogg reader), the input has
    /// nothing for now, or it has ended.
    fn advance(&mut self) -> Result<Step> {
        match &mut self.kind {
            Kind::Pcm {
                reader,
                conformer,
                in_channels,
                input_done,
            } => loop {
                if conformer.has_frame() {
                    return Ok(Step::Ready);
                }
                if *input_done {
                    if conformer.buffered_frames() > 0 {
                        conformer.pad_to_frame();
                        return Ok(Step::Ready);
                    }
                    return Ok(Step::End);
                }
                let usable = self.scratch.len() / *in_channels * *in_channels;
                match reader.read(&mut self.scratch[..usable])? {
                    ReadOutcome::Samples(n) => {
                        conformer.push(&self.scratch[..n])?;
                        self.produced_since_start |= n > 0;
                    }
                    ReadOutcome::Pending => return Ok(Step::Idle),
                    ReadOutcome::End => {
                        // An empty input must not loop forever.
                        if self.looping && self.produced_since_start {
                            // The conformer keeps its state: the loop point is seamless.
                            reader.rewind()?;
                            self.produced_since_start = false;
                        } else {
                            conformer.finish()?;
                            *input_done = true;
                        }
                    }
                }
            },
            Kind::Ogg(ogg) => loop {
                match ogg.next()? {
                    ogg_opus::Item::Some => {
                        self.produced_since_start = true;
                        return Ok(Step::Ready);
                    }
                    ogg_opus::Item::End if self.looping && self.produced_since_start => {
                        ogg.rewind()?;
                        self.produced_since_start = false;
                    }
                    ogg_opus::Item::End => return Ok(Step::End),
                }
            },
        }
    }
}

/// What [`Source::advance`] found.
enum Step {
    Ready,
    Idle,
    End,
}

fn check_raw(name: &str, format: RawFormat) -> Result<()> {
    if format.rate == 0 || format.channels == 0 || format.channels > 64 {
        return Err(Error::InvalidConfig(format!(
            "{name}: raw PCM needs a sample rate above 0 and 1..=64 channels, got {} Hz and {} channels",
            format.rate, format.channels
        )));
    }
    Ok(())
}
