//! The one error type of the engine crate.
//!
//! Every variant names what failed, with which input (a path, "stdin", an SSRC) and, where the
//! caller can do something about it, what to do. Audio problems that only degrade a stream (a
//! late packet, a corrupt Opus frame from the network) are counted in statistics instead: they
//! must never end a call.

use std::io;
use std::path::PathBuf;

/// Errors returned by the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What was given to play is neither a file that exists, nor `-`, nor a URL.
    #[error("cannot play {input}: no such file; give a path to an audio file, a URL, or - for standard input")]
    NoSuchInput { input: String },

    /// A web page's audio could not be found through `yt-dlp`.
    #[error("{url}: yt-dlp: {reason}")]
    YtDlp { url: String, reason: String },

    /// An input file could not be opened.
    #[error("cannot open {path}: {source}; check that the file exists and is readable")]
    OpenInput {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Reading an input (a file, a pipe, standard input, ffmpeg's output) failed midway.
    #[error("cannot read {input}: {source}")]
    ReadInput {
        input: String,
        #[source]
        source: io::Error,
    },

    /// The file is not a WAV file this engine can read.
    #[error("{path} is not a readable WAV file ({reason}); convert it to PCM WAV or play it through the ffmpeg source")]
    BadWav { path: PathBuf, reason: String },

    /// A video encoder or decoder failed.
    #[error("{codec}: {reason}")]
    Codec { codec: &'static str, reason: String },

    /// A Y4M (YUV4MPEG2) video file that cannot be read.
    #[error("{input} is not a readable Y4M (YUV4MPEG2) file: {reason}; make one with `ffmpeg -i IN -pix_fmt yuv420p OUT.y4m`")]
    BadY4m { input: String, reason: String },

    /// A picture size outside what the engine takes.
    #[error("a {width}x{height} picture is not usable: each side must be 2 to {max} pixels")]
    BadVideoSize { width: u32, height: u32, max: u32 },

    /// I420 bytes of the wrong length for the picture size they came with.
    #[error("an I420 picture of {width}x{height} is {expected} bytes; {got} were given")]
    BadVideoFrame {
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },

    /// The file is not a well-formed Ogg file, or not Ogg/Opus.
    #[error("{path} is not a readable Ogg/Opus file ({reason}); re-encode it (e.g. `ffmpeg -i IN -c:a libopus OUT.opus`) or play it through the ffmpeg source")]
    BadOggOpus { path: PathBuf, reason: String },

    /// The input is well-formed but uses a format this engine does not handle natively.
    #[error("{input}: {what} is not supported; play it through the ffmpeg source instead")]
    UnsupportedFormat { input: String, what: String },

    /// An HTTP source could not be fetched: the connection was refused or timed out, or it
    /// dropped and every reconnection failed.
    #[error("cannot stream {url}: {reason}; check the URL and the network")]
    Http { url: String, reason: String },

    /// The HTTP server answered with an error status (404 Not Found, 403 Forbidden, ...).
    #[error("{url}: the server answered {status} {reason}; check the URL (a link that expired, a page that needs a login)")]
    HttpStatus {
        url: String,
        status: u16,
        reason: String,
    },

    /// The HTTP server sent something other than audio (a web page, JSON).
    #[error("{url} is not audio: the server sent {content_type}; give the URL of the audio file or stream itself (for a web page, yt-dlp -g gives it)")]
    HttpContentType { url: String, content_type: String },

    /// A microphone or speaker could not be found, opened or kept running.
    #[error("audio device {device}: {reason}")]
    Device { device: String, reason: String },

    /// An audio setting is out of range (a sample rate of 0, a bitrate of 1 Gbit/s, ...).
    #[error("invalid audio setting: {0}")]
    InvalidConfig(String),

    /// [`crate::Call::enqueue`] on a full queue.
    #[error("the play queue is full ({capacity} sources); enqueue more when some have played")]
    QueueFull { capacity: usize },

    /// A seek the source cannot do: a stream, pushed frames, an Ogg/Opus passthrough, a
    /// source that has ended, or a position the file does not have.
    #[error("cannot seek in {input}: {reason}")]
    CannotSeek { input: String, reason: String },

    /// Looping was asked for a stream that cannot be rewound.
    #[error("{input} cannot loop: it is a stream that cannot be rewound; loop a file instead, or loop in the producer")]
    CannotLoop { input: String },

    /// The ffmpeg binary is not installed (or not at the configured path).
    #[error("`{binary}` was not found: install ffmpeg (e.g. `apt-get install ffmpeg`) or give the path of the binary; WAV, raw PCM, Ogg/Opus, MP3, AAC, FLAC, Vorbis and ALAC files play without it")]
    FfmpegMissing { binary: PathBuf },

    /// ffmpeg exists but could not be started.
    #[error("cannot start `{binary}`: {source}")]
    FfmpegSpawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },

    /// ffmpeg ran but failed on the input.
    #[error("ffmpeg could not decode {input} ({status}): {stderr}")]
    FfmpegFailed {
        input: String,
        status: String,
        stderr: String,
    },

    /// The resampler refused the input (it should not: reported rather than panicking).
    #[error("cannot resample {input} from {rate} Hz to 48000 Hz: {reason}")]
    Resample {
        input: String,
        rate: u32,
        reason: String,
    },

    /// libopus refused an operation (creating an encoder, setting a bitrate, encoding a frame).
    #[error("Opus {op} failed: {source}")]
    Opus {
        op: &'static str,
        #[source]
        source: opus::Error,
    },

    /// A PCM frame of the wrong size was given where a 20 ms frame is required.
    #[error(
        "expected a 20 ms frame of {expected} samples (960 per channel, interleaved), got {got}"
    )]
    FrameSize { expected: usize, got: usize },

    /// Pushed samples are not a whole number of frames for the source's channel count.
    #[error("pushed {got} samples, which is not a multiple of the source's {channels} channels; push interleaved samples")]
    PushedSamples { got: usize, channels: usize },

    /// The pushed-frame source is full: the application pushes faster than real time.
    #[error("the pushed-frame source is full ({capacity} chunks queued); push at real-time pace or use the blocking `push`")]
    PushFull { capacity: usize },

    /// The source that pushed frames go to was dropped (the call ended or the source changed).
    #[error(
        "the pushed-frame source is gone (the call ended or its source was replaced); stop pushing"
    )]
    SourceClosed,

    /// An output file could not be created.
    #[error("cannot create {path}: {source}; check that the directory exists and is writable")]
    CreateSink {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Writing an output file failed (disk full, file system error, WAV size limit).
    #[error("cannot write {path}: {source}; check free disk space and the file system")]
    WriteSink {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The disk takes a recording's blocks slower than real time: the writer's queue was full
    /// and this block was dropped (the recording goes on, with a gap).
    #[error("cannot write {path} fast enough: {dropped} blocks of audio dropped so far because {capacity} blocks were already waiting for the disk; record to a faster disk, or fewer files")]
    RecordingBehind {
        path: PathBuf,
        dropped: u64,
        capacity: usize,
    },

    /// A received video changed size or jumped in time so often that its recording would be a
    /// file per picture; it stops (the call and the other recordings go on).
    #[error("{path}: the sender's picture changed size or jumped in time {parts} times, so its video recording stops here; the call goes on")]
    RecordingParts { path: PathBuf, parts: u32 },

    /// The engine's own call threads ([`Engine::with_call_threads`](crate::Engine)) could not
    /// be started.
    #[error("cannot start the engine's call threads: {0}; the system is out of threads or memory, or ask for fewer")]
    CallThreads(#[source] io::Error),

    /// The thread that writes a call's recordings could not be started.
    #[error(
        "cannot start the recording writer thread: {0}; the system is out of threads or memory"
    )]
    RecorderStart(#[source] io::Error),

    /// The application does not take received frames fast enough.
    #[error("the application's frame queue is full ({capacity} frames): a frame for SSRC {ssrc} was not delivered; take frames faster or use a larger queue")]
    AppSinkFull { capacity: usize, ssrc: u32 },

    /// The signaling server refused or failed a request (join, leave, mute, ...).
    #[error("{0}")]
    Signaling(#[from] groupcall_signaling::Error),

    /// The media core refused the server's answer or could not set up the transport.
    #[error("cannot set up the media transport: {0}")]
    Media(#[from] groupcall_media::Error),

    /// The UDP socket for the call's media could not be opened.
    #[error("cannot open a UDP socket towards {target}: {source}; check the network (an interface with a route to the server)")]
    Socket {
        target: String,
        #[source]
        source: io::Error,
    },

    /// The server answered with a livestream (`{"stream": true}`), which this engine does not
    /// play yet.
    #[error("the call is a livestream (the server answered {answer}); joining livestreams is not supported yet, only voice and video chats")]
    StreamUnsupported { answer: String },

    /// The call's task has not taken its commands for a while.
    #[error("the call is not taking commands ({capacity} queued); its task is stuck or overloaded: wait and retry, or leave")]
    CommandsFull { capacity: usize },

    /// The call's task is gone (the call ended, failed or was left).
    #[error("the call has ended ({0}); join again to continue")]
    CallEnded(String),

    /// The application dropped the receiving end of its frame channel.
    #[error("the application's frame receiver was dropped: a frame for SSRC {ssrc} was not delivered; keep the receiver or remove the sink")]
    AppSinkClosed { ssrc: u32 },
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn opus(op: &'static str, source: opus::Error) -> Self {
        Error::Opus { op, source }
    }
}

/// An [`Error`] that events can carry: events are cloned (to every reader of a status line, a
/// log and the application), and an `io::Error` inside cannot be. The error is shared, not
/// copied; match on it through `Deref` (`match &*shared { Error::ReadInput { .. } => … }`).
#[derive(Clone, Debug)]
pub struct SharedError(std::sync::Arc<Error>);

impl From<Error> for SharedError {
    fn from(e: Error) -> Self {
        SharedError(std::sync::Arc::new(e))
    }
}

impl std::ops::Deref for SharedError {
    type Target = Error;
    fn deref(&self) -> &Error {
        &self.0
    }
}

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Two shared errors are equal when they are the same error, or say the same thing: events
/// compare by what a person would read.
impl PartialEq for SharedError {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}
