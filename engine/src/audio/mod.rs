//! Audio for a group call: what is sent (sources -> [`AudioSender`]) and what is received
//! (RTP -> [`JitterBuffer`] -> mixer, level meters and sinks).
//!
//! Everything runs on 20 ms frames of 48 kHz interleaved `i16` PCM because that is what Opus,
//! Telegram's calls and the driver's pacing timer all use; other rates and frame sizes are
//! converted at the edges (sources resample, the jitter buffer re-chunks 10..120 ms packets).
//!
//! Threading: nothing on the call's task waits for I/O. Sources that read (files, pipes,
//! standard input, ffmpeg) decode on a thread of their own and hand over finished frames
//! through a bounded queue, so `next_frame` answers at once (`Idle` when the input is behind);
//! recordings are written by one thread per call fed through a bounded queue of blocks
//! ([`sink::RecordingWriter`]). The queues are lock-free on the task's side.

pub mod codec;
#[cfg(feature = "devices")]
pub mod device;
pub mod drift;
mod expand;
pub mod jitter;
pub mod level;
pub mod loudness;
pub mod mixer;
mod pitch;
pub mod processing;
pub mod resample;
pub mod send;
pub mod sink;
pub mod source;
mod stretch;

pub use codec::{Application, Decoder, Encoder, EncoderConfig, FrameDecoder};
pub use jitter::{FrameKind, JitterBuffer, JitterConfig, JitterStats, Pulled};
pub use level::{LevelMeter, SpeakingLevel, Vad};
pub use loudness::{LoudnessConfig, Normalizer};
pub use mixer::Mixer;
pub use processing::{ProcessingConfig, VoiceProcessor, WebRtcProcessing};
pub use send::{AudioSender, Packetizer};
pub use sink::{
    AppSink, FileFormat, FileSink, MixRecorder, ParticipantSinks, ReceivedFrame, RecordingWriter,
};
pub use source::{Frame, FramePusher, Next, Source, SourceOptions};

/// The only sample rate on the wire (Opus in WebRTC always runs at 48 kHz).
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples per channel in one 20 ms frame at 48 kHz: the unit of pacing, mixing and decoding.
pub const FRAME_SAMPLES: usize = 960;

/// The longest Opus packet (120 ms) in samples per channel at 48 kHz.
pub const MAX_PACKET_SAMPLES: usize = 5760;

/// Mono or stereo. Sources convert any input channel count to one of these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Channels {
    /// The default: Telegram's clients send mono unless stereo is switched on.
    #[default]
    Mono,
    Stereo,
}

impl Channels {
    /// 1 or 2.
    pub fn count(self) -> usize {
        match self {
            Channels::Mono => 1,
            Channels::Stereo => 2,
        }
    }

    /// Samples in one interleaved 20 ms frame.
    pub fn frame_len(self) -> usize {
        FRAME_SAMPLES * self.count()
    }

    pub(crate) fn to_opus(self) -> opus::Channels {
        match self {
            Channels::Mono => opus::Channels::Mono,
            Channels::Stereo => opus::Channels::Stereo,
        }
    }
}
