//! Where received audio goes: a WAV or raw file per participant, a mixed file, and frames
//! delivered to the application.
//!
//! Every failure to write is returned as an error naming the file (or the SSRC for the
//! application): a recording that silently stops is worse than one that fails loudly. Files
//! are written by one [`RecordingWriter`] thread per call, so the call's task never waits for
//! the disk.

mod app;
mod file;
mod participants;
mod writer;

pub use app::{AppSink, PeerId, ReceivedFrame};
pub use file::{FileFormat, FileSink, MixRecorder};
pub use participants::ParticipantSinks;
pub use writer::{RecordingWriter, RECORDING_QUEUE_BLOCKS};
