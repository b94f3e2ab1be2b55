//! Where received audio goes: a WAV or raw file per participant, a mixed file, and frames
//! delivered to the application.
//!
//! Every failure to write is returned as an error naming the file (or the SSRC for the
//! application): a recording that silently stops is worse than one that fails loudly.

mod app;
mod file;
mod participants;

pub use app::{AppSink, PeerId, ReceivedFrame};
pub use file::{FileFormat, FileSink, MixRecorder};
pub use participants::ParticipantSinks;
