//! Where outgoing audio comes from: files (WAV, raw PCM, Ogg/Opus), streams (standard input, a
//! named pipe, any reader), frames the application pushes, and anything ffmpeg can decode.
//!
//! A [`Source`] is pulled: [`Source::next_frame`] hands out the next 20 ms of 48 kHz PCM, or an
//! Opus packet from an Ogg file to send as it is. Pacing is the driver's job (one pull per
//! frame duration), which keeps sources free of timers and lets tests pull as fast as they like.
//! The end of a source is reported exactly once; a looping source starts over instead.

mod ahead;
mod decoded;
pub(crate) mod ffmpeg;
#[cfg(feature = "http")]
mod http;
mod ogg_opus;
mod open;
mod pushed;
mod raw;
mod wav;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use ffmpeg::DEFAULT_FFMPEG;
#[cfg(feature = "http")]
pub use http::HttpOptions;
pub use ogg_opus::{OpusHead, OpusTags};
pub use open::OpenOptions;
pub use pushed::FramePusher;

use self::ahead::ReadAhead;
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
    /// Whether [`PcmReader::seek`] works (files; not pipes or streams).
    fn can_seek(&self) -> bool {
        false
    }
    /// Goes to `to` from the start (the end, when past it).
    fn seek(&mut self, _to: std::time::Duration) -> Result<()> {
        Ok(())
    }
    /// How long the input is, when it says (files; not streams).
    fn duration(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Decoding from input to 20 ms frames: a PCM reader through the conformer (resampling and
/// channel mapping), or an Ogg/Opus file. Runs on the read-ahead thread for every source that
/// does I/O, and inline for pushed frames (which never wait).
pub(crate) struct Pipeline {
    kind: PipeKind,
    looping: bool,
    produced_since_start: bool,
    scratch: Vec<i16>,
}

enum PipeKind {
    Pcm {
        reader: Box<dyn PcmReader>,
        conformer: Box<Conformer>,
        in_channels: usize,
        input_done: bool,
    },
    Ogg(Box<ogg_opus::OggOpus>),
}

/// Samples read from a PCM reader per call (per channel).
const READ_FRAMES: usize = 1024;

impl Pipeline {
    fn pcm(
        name: &str,
        reader: Box<dyn PcmReader>,
        rate: u32,
        in_channels: usize,
        options: SourceOptions,
    ) -> Result<Self> {
        let conformer = Box::new(Conformer::new(name, rate, in_channels, options.channels)?);
        Ok(Pipeline {
            kind: PipeKind::Pcm {
                reader,
                conformer,
                in_channels,
                input_done: false,
            },
            looping: options.looping,
            produced_since_start: false,
            scratch: vec![0; READ_FRAMES * in_channels],
        })
    }

    /// The next frame, `Idle` when the reader has nothing for now, or `End` (after which the
    /// pipeline is not pulled again).
    pub(crate) fn pull(&mut self) -> Result<Next<'_>> {
        match self.advance()? {
            Step::Ready => Ok(Next::Frame(match &mut self.kind {
                PipeKind::Pcm { conformer, .. } => {
                    Frame::Pcm(conformer.frame().unwrap_or_default())
                }
                PipeKind::Ogg(ogg) => ogg.current(),
            })),
            Step::Idle => Ok(Next::Idle),
            Step::End => Ok(Next::End),
        }
    }

    pub(crate) fn can_seek(&self) -> bool {
        matches!(&self.kind, PipeKind::Pcm { reader, .. } if reader.can_seek())
    }

    fn duration(&self) -> Option<std::time::Duration> {
        match &self.kind {
            PipeKind::Pcm { reader, .. } => reader.duration(),
            // Its length is in the last page's granule position, which would mean reading
            // the file's end first: not worth it for a passthrough.
            PipeKind::Ogg(_) => None,
        }
    }

    /// Goes to `to` in the input; what was decoded ahead of it is dropped.
    pub(crate) fn seek(&mut self, to: std::time::Duration) -> Result<()> {
        if let PipeKind::Pcm {
            reader,
            conformer,
            input_done,
            ..
        } = &mut self.kind
        {
            reader.seek(to)?;
            conformer.reset()?;
            *input_done = false;
        }
        Ok(())
    }

    pub(crate) fn skipped(&self) -> u64 {
        match &self.kind {
            PipeKind::Ogg(o) => o.skipped(),
            PipeKind::Pcm { .. } => 0,
        }
    }

    /// Reads until a frame is ready (left in the conformer or the Ogg reader), the input has
    /// nothing for now, or it has ended.
    fn advance(&mut self) -> Result<Step> {
        match &mut self.kind {
            PipeKind::Pcm {
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
            PipeKind::Ogg(ogg) => loop {
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

/// What [`Pipeline::advance`] found.
enum Step {
    Ready,
    Idle,
    End,
}

enum Kind {
    /// Pushed frames: the queue never waits, so they are conformed on the call's task.
    Inline(Box<Pipeline>),
    /// Everything that reads a file, a pipe or a process: decoded on a thread of its own.
    Ahead(ReadAhead),
}

/// A source of outgoing audio. See the module documentation.
pub struct Source {
    name: String,
    kind: Kind,
    channels: Channels,
    looping: bool,
    ended: bool,
    underruns: u64,
    /// Where in the input the next frame is: the last seek's target plus what was pulled.
    position: std::time::Duration,
    duration: Option<std::time::Duration>,
    /// The headers of an Ogg/Opus file, read when it was opened.
    ogg: Option<Box<(OpusHead, OpusTags)>>,
    /// Kills and reaps an ffmpeg child when the source goes, without waiting for it.
    _child: Option<ffmpeg::KillOnDrop>,
    /// Closes the microphone when the source goes.
    #[cfg(feature = "devices")]
    _device: Option<crate::audio::device::DeviceHandle>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("channels", &self.channels)
            .field("looping", &self.looping)
            .field("ended", &self.ended)
            .field("underruns", &self.underruns)
            .finish_non_exhaustive()
    }
}

impl Source {
    fn new(name: String, kind: Kind, options: SourceOptions) -> Self {
        Source {
            name,
            kind,
            channels: options.channels,
            looping: options.looping,
            ended: false,
            underruns: 0,
            position: std::time::Duration::ZERO,
            duration: None,
            ogg: None,
            _child: None,
            #[cfg(feature = "devices")]
            _device: None,
        }
    }

    /// A source read on its own thread. Files are primed (their first second decoded before
    /// this returns); streams are not, since their writer may take any time to start.
    fn ahead(
        name: String,
        pipeline: Pipeline,
        prime: bool,
        options: SourceOptions,
    ) -> Result<Self> {
        let duration = pipeline.duration();
        let ahead = ReadAhead::spawn(&name, pipeline, prime)?;
        let mut source = Self::new(name, Kind::Ahead(ahead), options);
        source.duration = duration;
        Ok(source)
    }

    /// A file read by `reader`, at `rate` with `in_channels`, on a thread of its own.
    fn pcm_file(
        path: &Path,
        reader: Box<dyn PcmReader>,
        (rate, in_channels): (u32, usize),
        options: SourceOptions,
    ) -> Result<Self> {
        let name = path.display().to_string();
        let pipeline = Pipeline::pcm(&name, reader, rate, in_channels, options)?;
        Self::ahead(name, pipeline, true, options)
    }

    /// A WAV file: 8/16/24/32-bit integer or 32-bit float PCM, any rate and channel count.
    ///
    /// The file is opened and its header read here; the samples are read on a thread of the
    /// source's own, which has decoded up to a second ahead before this returns. Call it off
    /// the async runtime when the file system may be slow.
    pub fn wav(path: impl AsRef<Path>, options: SourceOptions) -> Result<Self> {
        let path = path.as_ref();
        let reader = wav::WavFile::open(path)?;
        let format = (reader.rate(), reader.channels());
        Self::pcm_file(path, Box::new(reader), format, options)
    }

    /// A file of raw signed 16-bit little-endian PCM, read on a thread like [`Source::wav`].
    pub fn raw_file(
        path: impl AsRef<Path>,
        format: RawFormat,
        options: SourceOptions,
    ) -> Result<Self> {
        let path = path.as_ref();
        check_raw(&path.display().to_string(), format)?;
        let reader = raw::RawReader::file(path, format.channels)?;
        Self::pcm_file(
            path,
            Box::new(reader),
            (format.rate, format.channels),
            options,
        )
    }

    /// Raw s16le PCM from any byte stream (a socket, a decoder's output), read on a thread of
    /// its own: `next_frame` never waits for it. Cannot loop.
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
        let reader = raw::RawReader::stream(name.clone(), reader, format.channels);
        let pipeline = Pipeline::pcm(
            &name,
            Box::new(reader),
            format.rate,
            format.channels,
            options,
        )?;
        Self::ahead(name, pipeline, false, options)
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

    /// A compressed audio file decoded in-process (symphonia): MP3, AAC in MP4/M4A or ADTS,
    /// FLAC, Ogg Vorbis, ALAC, WAV; any rate and channel count, resampled to 48 kHz. No ffmpeg
    /// process is started. Read on a thread like [`Source::wav`]. A format symphonia cannot
    /// read is [`Error::UnsupportedFormat`] (then [`Source::ffmpeg`] may).
    pub fn decoded(path: impl AsRef<Path>, options: SourceOptions) -> Result<Self> {
        let path = path.as_ref();
        let reader = decoded::DecodedFile::open(path)?;
        let format = (reader.rate(), reader.channels());
        Self::pcm_file(path, Box::new(reader), format, options)
    }

    /// Audio streamed over HTTP(S) and decoded in-process, like [`Source::decoded`]: a file on
    /// a web server (MP3, AAC, FLAC, Vorbis, ALAC, WAV) or a live Icecast/Shoutcast-style
    /// stream. The first request happens here, so a 404, a refused connection or a web page
    /// instead of audio is an error at once ([`Error::HttpStatus`], [`Error::Http`],
    /// [`Error::HttpContentType`]). The body then streams on a task of the current runtime,
    /// ahead of what plays; a dropped connection is resumed (with a range request where the
    /// server takes them) with backoff, and only after [`HttpOptions::max_retries`] failed
    /// reconnections does the source fail. Seeking and looping need a server that takes
    /// range requests and says the body's length.
    ///
    /// Must be called within a tokio runtime.
    #[cfg(feature = "http")]
    pub async fn http(url: &str, options: SourceOptions) -> Result<Self> {
        Self::http_with(url, options, HttpOptions::default()).await
    }

    /// [`Source::http`] with other timeouts and retries.
    #[cfg(feature = "http")]
    pub async fn http_with(
        url: &str,
        options: SourceOptions,
        http_options: HttpOptions,
    ) -> Result<Self> {
        let stream = http::open(url, http_options).await?;
        let head = stream.head().clone();
        if options.looping && !(head.ranges && head.length.is_some()) {
            return Err(Error::CannotLoop { input: url.into() });
        }
        let mut hint = symphonia::core::probe::Hint::new();
        if let Some(t) = &head.content_type {
            hint.mime_type(t);
        }
        let path = url.split(['?', '#']).next().unwrap_or(url);
        if let Some((_, ext)) = path.rsplit_once('/').and_then(|(_, f)| f.rsplit_once('.')) {
            hint.with_extension(ext);
        }
        let name = url.to_owned();
        // Probing reads the start of the body, which the fetch task is downloading: a
        // blocking wait, kept off the runtime's workers.
        tokio::task::spawn_blocking(move || {
            let reader = decoded::DecodedFile::from_media(name.clone(), Box::new(stream), hint)?;
            let format = (reader.rate(), reader.channels());
            let pipeline = Pipeline::pcm(&name, Box::new(reader), format.0, format.1, options)?;
            // A file is primed like a local one; a live stream comes at its own pace.
            Self::ahead(name, pipeline, head.length.is_some(), options)
        })
        .await
        .map_err(|e| Error::Http {
            url: url.into(),
            reason: format!("the task that opened the stream failed: {e}"),
        })?
    }

    /// A microphone (feature `devices`): the device's audio brought to the call's clock, in
    /// 20 ms frames, processed as `config.processing` says (without an echo reference here:
    /// for echo cancellation give the call both [`crate::CallConfig::microphone`] and
    /// [`crate::CallConfig::speaker`], which links them). Opening waits for the audio system
    /// (up to 10 s): call it off the async runtime. A device that fails later ends the source
    /// with a [`crate::CallEvent::SourceError`]; the call goes on.
    #[cfg(feature = "devices")]
    pub fn microphone(
        config: &crate::audio::device::MicrophoneConfig,
        options: SourceOptions,
    ) -> Result<Self> {
        Self::microphone_with_echo(config, None, options)
    }

    #[cfg(feature = "devices")]
    pub(crate) fn microphone_with_echo(
        config: &crate::audio::device::MicrophoneConfig,
        echo: Option<rtrb::Consumer<i16>>,
        options: SourceOptions,
    ) -> Result<Self> {
        if options.looping {
            return Err(Error::CannotLoop {
                input: "the microphone".into(),
            });
        }
        let (reader, handle) = crate::audio::device::open_microphone(config, echo)?;
        let name = format!("microphone {}", handle.name);
        let pipeline = Pipeline::pcm(&name, Box::new(reader), SAMPLE_RATE, 1, options)?;
        let mut source = Self::new(name, Kind::Inline(Box::new(pipeline)), options);
        source._device = Some(handle);
        Ok(source)
    }

    /// An Ogg/Opus file. Its packets are sent as they are when they fit (10..120 ms, at most
    /// 1000 bytes); others are decoded and handed out as PCM for the encoder. Read on a thread
    /// like [`Source::wav`].
    pub fn ogg_opus(path: impl AsRef<Path>, options: SourceOptions) -> Result<Self> {
        let path = path.as_ref();
        let ogg = ogg_opus::OggOpus::open(path, options.channels)?;
        let headers = Box::new((ogg.head().clone(), ogg.tags().clone()));
        let pipeline = Pipeline {
            kind: PipeKind::Ogg(Box::new(ogg)),
            looping: options.looping,
            produced_since_start: false,
            scratch: Vec::new(),
        };
        let mut source = Self::ahead(path.display().to_string(), pipeline, true, options)?;
        source.ogg = Some(headers);
        Ok(source)
    }

    /// Frames the application pushes through the returned [`FramePusher`]: 48 kHz interleaved
    /// samples in `options.channels`, in chunks of any length.
    ///
    /// The queue holds at most `capacity` chunks (at least 1): with 20 ms chunks, 50 is a
    /// second of audio ahead. A full queue is backpressure, never growth or silent loss:
    /// [`FramePusher::push`] waits for room, [`FramePusher::try_push`] says
    /// [`Error::PushFull`]. The source ends when every pusher is dropped and the queue is
    /// drained; an empty queue is `Idle` (an underrun), never a wait.
    pub fn pushed(capacity: usize, options: SourceOptions) -> Result<(Self, FramePusher)> {
        let name = "pushed frames";
        if options.looping {
            return Err(Error::CannotLoop { input: name.into() });
        }
        let (reader, pusher) = pushed::channel(capacity.max(1), options.channels.count());
        let pipeline = Pipeline::pcm(
            name,
            Box::new(reader),
            SAMPLE_RATE,
            options.channels.count(),
            options,
        )?;
        let source = Self::new(name.into(), Kind::Inline(Box::new(pipeline)), options);
        Ok((source, pusher))
    }

    /// Any input ffmpeg can read (MP3, AAC, FLAC, a URL...), decoded by an `ffmpeg`
    /// subprocess. `binary` defaults to `ffmpeg` on the `PATH`; when it is missing the error
    /// says so ([`Error::FfmpegMissing`]).
    ///
    /// ffmpeg's output is read, and the process waited for, on the source's own thread. A
    /// failure (a non-zero exit, with the end of what ffmpeg printed) is the error of the pull
    /// after the last frame. Dropping the source kills ffmpeg and reaps it on a detached
    /// thread: the caller never waits for the process.
    pub fn ffmpeg(input: &str, binary: Option<&Path>, options: SourceOptions) -> Result<Self> {
        let binary: PathBuf =
            binary.map_or_else(|| PathBuf::from(DEFAULT_FFMPEG), Path::to_path_buf);
        let ch = options.channels.count();
        let (reader, child) = ffmpeg::Ffmpeg::spawn(binary, input.to_string(), ch)?;
        let name = format!("ffmpeg: {input}");
        let pipeline = Pipeline::pcm(&name, Box::new(reader), SAMPLE_RATE, ch, options)?;
        let mut source = Self::ahead(name, pipeline, false, options)?;
        source._child = Some(child);
        Ok(source)
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

    /// Pulls that found no frame ready before the end: the input was behind (a slow pipe,
    /// ffmpeg still starting, a stalled disk) or nothing was pushed. Each one is 20 ms the
    /// call sent no audio for.
    pub fn underruns(&self) -> u64 {
        self.underruns
    }

    /// The tags of an Ogg/Opus source (title, artist...), as read when the file was opened
    /// (a chained file's later streams do not change them).
    pub fn opus_tags(&self) -> Option<&OpusTags> {
        self.ogg.as_deref().map(|(_, tags)| tags)
    }

    /// The identification header of an Ogg/Opus source, as read when the file was opened.
    pub fn opus_head(&self) -> Option<&OpusHead> {
        self.ogg.as_deref().map(|(head, _)| head)
    }

    /// Packets of an Ogg/Opus source that no decoder would accept (skipped, not sent), as far
    /// as the read-ahead has got.
    pub fn skipped_packets(&self) -> u64 {
        match &self.kind {
            Kind::Ahead(a) => a.skipped(),
            Kind::Inline(p) => p.skipped(),
        }
    }

    /// The next frame, or `Idle` at once when none is ready: this never waits for I/O, which
    /// happens on the source's own thread (see [`Source::underruns`]).
    ///
    /// After the end or an error the source is finished: later pulls return `Idle`, so the
    /// driver sees exactly one `End` (or one error).
    pub fn next_frame(&mut self) -> Result<Next<'_>> {
        if self.ended {
            return Ok(Next::Idle);
        }
        let next = match &mut self.kind {
            Kind::Ahead(a) => a.pull(),
            Kind::Inline(p) => p.pull(),
        };
        match &next {
            Ok(Next::Idle) => self.underruns += 1,
            Ok(Next::End) | Err(_) => self.ended = true,
            Ok(Next::Frame(f)) => {
                let samples = f.samples(self.channels);
                self.position += std::time::Duration::from_micros(
                    u64::from(samples) * 1_000_000 / u64::from(SAMPLE_RATE),
                );
            }
        }
        next
    }

    /// How long the input is, when it says: files (WAV, decoded) and HTTP bodies
    /// of a known length; `None` for streams, pipes, pushed frames and ffmpeg.
    pub fn duration(&self) -> Option<std::time::Duration> {
        self.duration
    }

    /// Where in the input the source is: the time of the next frame it will give (a looping
    /// source counts on past the end). After [`Source::seek`], the target.
    pub fn position(&self) -> std::time::Duration {
        self.position
    }

    /// Goes to `to` from the start of the input: WAV files and files decoded in-process
    /// ([`Source::decoded`]). The next frames come from there once the read-ahead thread has
    /// jumped (pulls are `Idle` for that moment); past the end, the source ends. Streams,
    /// pushed frames, ffmpeg and Ogg/Opus passthrough refuse with [`Error::CannotSeek`].
    pub fn seek(&mut self, to: std::time::Duration) -> Result<()> {
        match &mut self.kind {
            Kind::Ahead(a) => a.seek(to)?,
            Kind::Inline(_) => {
                return Err(Error::CannotSeek {
                    input: self.name.clone(),
                    reason: "frames pushed by the application have no position to go to".into(),
                })
            }
        }
        // A file that had played to its end plays again from `to`.
        self.ended = false;
        self.position = to;
        Ok(())
    }
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
