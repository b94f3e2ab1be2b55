//! WAV (hound) and raw s16le files, and the mixed recording built on them. The files
//! themselves are written by the call's [`RecordingWriter`] thread.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::Instant;

use super::writer::{
    Closing, FileHandle, FileStatus, RecordingWriter, FINISH_WAIT, WAV_DATA_LIMIT,
};
use crate::audio::{Channels, Mixer};
use crate::error::{Error, Result};

/// The container of a recording.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileFormat {
    /// 16-bit PCM WAV at 48 kHz (limited to 4 GiB: ~12 h stereo, ~24 h mono).
    #[default]
    Wav,
    /// Headerless s16le at 48 kHz: no size limit, and readable up to the last byte after a crash.
    Raw,
}

impl FileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Wav => "wav",
            FileFormat::Raw => "raw",
        }
    }
}

/// One output file of 48 kHz 16-bit audio, written by a [`RecordingWriter`] thread.
///
/// [`FileSink::write`] copies the block into the writer's bounded queue and returns at once:
/// it never waits for the disk. A disk slower than real time fills the queue, and the blocks
/// that do not fit are dropped and reported ([`Error::RecordingBehind`]). Failures of the
/// disk itself come back as the error of a later write, or of [`FileSink::finish`].
pub struct FileSink {
    path: PathBuf,
    format: FileFormat,
    channels: Channels,
    writer: RecordingWriter,
    id: u64,
    status: Arc<FileStatus>,
    pool: Receiver<Vec<i16>>,
    data_bytes: u64,
    dropped: u64,
    /// Closed by `finish`/`close`: dropping then sends nothing.
    closed: bool,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("path", &self.path)
            .field("channels", &self.channels)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl FileSink {
    /// Creates (or truncates) the file, on a writer thread of its own, and waits (a few
    /// seconds at most) for the answer. The directory must exist. Several files of one call
    /// share a thread with [`RecordingWriter::create`].
    pub fn create(path: impl AsRef<Path>, format: FileFormat, channels: Channels) -> Result<Self> {
        RecordingWriter::new()?.create(path, format, channels)
    }

    pub(crate) fn from_parts(
        writer: RecordingWriter,
        handle: FileHandle,
        path: PathBuf,
        format: FileFormat,
        channels: Channels,
    ) -> Self {
        FileSink {
            path,
            format,
            channels,
            writer,
            id: handle.id,
            status: handle.status,
            pool: handle.pool,
            data_bytes: 0,
            dropped: 0,
            closed: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blocks dropped because the writer's queue was full (the disk was behind).
    pub fn dropped_blocks(&self) -> u64 {
        self.dropped
    }

    /// Queues interleaved samples (whole frames) for the file, without waiting. Errors: the
    /// queue is full ([`Error::RecordingBehind`]: this block is lost, the file goes on), or an
    /// earlier block could not be written (the file stopped there).
    pub fn write(&mut self, pcm: &[i16]) -> Result<()> {
        let ch = self.channels.count();
        if !pcm.len().is_multiple_of(ch) {
            return Err(Error::FrameSize {
                expected: pcm.len() / ch * ch,
                got: pcm.len(),
            });
        }
        if self.status.failed() {
            return Err(self.status.take().unwrap_or_else(|| Error::WriteSink {
                path: self.path.clone(),
                source: io::Error::other("an earlier write failed; the recording stopped there"),
            }));
        }
        let add = pcm.len() as u64 * 2;
        if self.format == FileFormat::Wav && self.data_bytes + add > WAV_DATA_LIMIT {
            return Err(Error::WriteSink {
                path: self.path.clone(),
                source: io::Error::other(
                    "the WAV format's 4 GiB limit is reached; record to raw files or split the recording",
                ),
            });
        }
        if !self.writer.reserve() {
            self.dropped += 1;
            return Err(Error::RecordingBehind {
                path: self.path.clone(),
                dropped: self.dropped,
                capacity: self.writer.capacity(),
            });
        }
        let mut block = self.pool.try_recv().unwrap_or_default();
        block.clear();
        block.extend_from_slice(pcm);
        self.writer.send_block(self.id, block, &self.path)?;
        self.data_bytes += add;
        Ok(())
    }

    /// Asks the writer to finalize the file; the answer is awaited by the returned handle.
    pub(crate) fn close(mut self) -> Closing {
        self.closed = true;
        let (reply, answer) = sync_channel(1);
        let answer = self
            .writer
            .send_close(self.id, Some(reply))
            .then_some(answer);
        Closing::new(std::mem::take(&mut self.path), self.status.clone(), answer)
    }

    /// Finalizes the file (for WAV, the sizes in the header) on the writer thread and waits
    /// for it, at most 10 s: at the end of a call, not in its packet loop. Returns
    /// the first failure not reported by a write yet, or the failure to finalize.
    pub fn finish(self) -> Result<()> {
        self.close().wait(Instant::now() + FINISH_WAIT)
    }
}

impl Drop for FileSink {
    /// A sink dropped without `finish` (an error path, a panic unwinding the call's task) is
    /// still finalized, on the writer thread.
    fn drop(&mut self) {
        if !self.closed {
            self.writer.send_close(self.id, None);
        }
    }
}

/// The mix of every speaker as one file, one 20 ms frame per tick.
///
/// A tick with no speaker writes silence, so the file's timeline is the call's. Mixing is on
/// the call's task (it is arithmetic); writing is on the recording writer's thread.
#[derive(Debug)]
pub struct MixRecorder {
    mixer: Mixer,
    sink: FileSink,
}

impl MixRecorder {
    /// Creates the file on a writer thread of its own (see [`MixRecorder::create_on`]).
    pub fn create(path: impl AsRef<Path>, format: FileFormat, channels: Channels) -> Result<Self> {
        Self::create_on(&RecordingWriter::new()?, path, format, channels)
    }

    /// Creates the file on `writer`'s thread and waits for the answer.
    pub fn create_on(
        writer: &RecordingWriter,
        path: impl AsRef<Path>,
        format: FileFormat,
        channels: Channels,
    ) -> Result<Self> {
        Ok(MixRecorder {
            mixer: Mixer::new(channels),
            sink: writer.create(path, format, channels)?,
        })
    }

    /// The writer thread this recording uses, to share with the call's other recordings
    /// ([`super::ParticipantSinks::with_writer`]).
    pub fn writer(&self) -> RecordingWriter {
        self.sink.writer.clone()
    }

    /// Adds one speaker's frame for this tick.
    pub fn add(&mut self, pcm: &[i16], gain: f32) -> Result<()> {
        self.mixer.add(pcm, gain)
    }

    /// Queues this tick's mix for the file (see [`FileSink::write`]).
    pub fn write_tick(&mut self) -> Result<()> {
        let mix = self.mixer.finish();
        self.sink.write(mix)
    }

    pub fn path(&self) -> &Path {
        self.sink.path()
    }

    /// Blocks of the mix dropped because the disk was behind.
    pub fn dropped_blocks(&self) -> u64 {
        self.sink.dropped_blocks()
    }

    /// Finalizes the file and waits for it (see [`FileSink::finish`]).
    pub fn finish(self) -> Result<()> {
        self.sink.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_and_raw_files_hold_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let pcm: Vec<i16> = (0..1920).map(|i| (i * 17 - 16000) as i16).collect();
        let wav = dir.path().join("a.wav");
        let mut s = FileSink::create(&wav, FileFormat::Wav, Channels::Stereo).unwrap();
        s.write(&pcm).unwrap();
        s.write(&pcm).unwrap();
        s.finish().unwrap();
        let mut r = hound::WavReader::open(&wav).unwrap();
        assert_eq!(r.spec().channels, 2);
        assert_eq!(r.spec().sample_rate, 48000);
        let back: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(back.len(), 3840);
        assert_eq!(&back[1920..], &pcm[..]);

        let raw = dir.path().join("a.raw");
        let mut s = FileSink::create(&raw, FileFormat::Raw, Channels::Mono).unwrap();
        s.write(&pcm[..960]).unwrap();
        s.finish().unwrap();
        let bytes = std::fs::read(&raw).unwrap();
        assert_eq!(bytes.len(), 1920);
        assert_eq!(i16::from_le_bytes([bytes[2], bytes[3]]), pcm[1]);
    }

    #[test]
    fn a_missing_directory_is_a_create_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/out.wav");
        let err = FileSink::create(&path, FileFormat::Wav, Channels::Mono).unwrap_err();
        assert!(
            matches!(&err, Error::CreateSink { path: p, .. } if *p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains("no/such/dir/out.wav"), "{err}");
        // A "directory" that is a file.
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let err =
            FileSink::create(file.join("out.raw"), FileFormat::Raw, Channels::Mono).unwrap_err();
        assert!(matches!(err, Error::CreateSink { .. }), "{err:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_read_only_location_is_a_create_error() {
        // sysfs refuses new files even to root (permission bits would not stop root).
        let err = FileSink::create("/sys/groupcall-test.wav", FileFormat::Wav, Channels::Mono)
            .unwrap_err();
        assert!(matches!(err, Error::CreateSink { .. }), "{err:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_is_a_write_error_not_silence() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        for format in [FileFormat::Wav, FileFormat::Raw] {
            let result = FileSink::create("/dev/full", format, Channels::Mono).and_then(|mut s| {
                // The buffer hides the first writes; enough frames reach the device.
                for _ in 0..20 {
                    s.write(&[1; 960])?;
                }
                s.finish()
            });
            let err = result.unwrap_err();
            assert!(
                matches!(&err, Error::WriteSink { path, .. } | Error::CreateSink { path, .. } if path == Path::new("/dev/full")),
                "{format:?}: {err:?}"
            );
        }
    }

    #[test]
    fn a_sink_dropped_without_finish_is_finalized_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropped.wav");
        let mut s = FileSink::create(&path, FileFormat::Wav, Channels::Mono).unwrap();
        s.write(&[5; 960]).unwrap();
        drop(s);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let n = hound::WavReader::open(&path).map_or(0, |r| r.len());
            if n == 960 {
                break;
            }
            assert!(Instant::now() < deadline, "not finalized: {n} samples");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn the_mix_recorder_writes_every_tick() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mix.wav");
        let mut m = MixRecorder::create(&path, FileFormat::Wav, Channels::Mono).unwrap();
        m.add(&[100; 960], 1.0).unwrap();
        m.add(&[50; 960], 1.0).unwrap();
        m.write_tick().unwrap();
        m.write_tick().unwrap(); // nobody spoke
        m.finish().unwrap();
        let back: Vec<i16> = hound::WavReader::open(&path)
            .unwrap()
            .samples::<i16>()
            .map(|s| s.unwrap())
            .collect();
        assert_eq!(back.len(), 1920);
        assert!(back[..960].iter().all(|&s| s == 150));
        assert!(back[960..].iter().all(|&s| s == 0));
    }
}
