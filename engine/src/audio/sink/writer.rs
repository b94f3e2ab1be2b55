//! The recording writer: one thread per call that creates, writes and finalizes all of that
//! call's files, fed with blocks of PCM by the call's task.
//!
//! Why a thread: the call's task also runs ICE, DTLS and playout, and shares its tokio worker
//! with other calls; a disk that stalls (a full NFS server, a USB stick, a FUSE mount) must
//! not stall them. Why bounded: a disk slower than real time would otherwise grow the queue
//! without end. When [`RecordingWriter::capacity`] blocks are waiting, further blocks are
//! dropped, counted, and reported as [`Error::RecordingBehind`], never waited for.
//!
//! The thread owns the hound writers, so a WAV header is finalized whatever happens to the
//! task: a file closed, a [`FileSink`](super::FileSink) dropped, or every handle gone at once
//! (the task panicked and unwound) all end with `finalize` on this thread.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::file::FileFormat;
use crate::audio::{Channels, SAMPLE_RATE};
use crate::error::{Error, Result};

/// Blocks waiting for the disk per call, at most: 10 s of one speaker's 20 ms frames, or 1 s
/// of ten speakers and the mix; about 1 MB of mono PCM (2 MB stereo).
pub const RECORDING_QUEUE_BLOCKS: usize = 500;

/// How long creating a file may take when the caller waits for the answer (before joining).
const CREATE_WAIT: Duration = Duration::from_secs(5);

/// How long closing waits for the writer to catch up and finalize. Past it the file is
/// finalized in the background when the disk catches up, and the wait reports a timeout.
pub(crate) const FINISH_WAIT: Duration = Duration::from_secs(10);

/// The call's handle on its writer thread. Cloneable; the thread finalizes every open file
/// and exits when the last handle (and the last [`FileSink`](super::FileSink)) is dropped.
#[derive(Clone)]
pub struct RecordingWriter {
    shared: Arc<Shared>,
}

struct Shared {
    tx: Sender<Msg>,
    /// Data blocks sent and not yet taken by the thread. The channel itself is unbounded so
    /// that creating and closing files is never refused; data is bounded by this count.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    next_id: AtomicU64,
}

impl std::fmt::Debug for RecordingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingWriter")
            .field("capacity", &self.shared.capacity)
            .field("queued", &self.shared.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What a file's writes came to, shared by the thread (which sets it) and the sink (which
/// reads it without a lock until something failed).
#[derive(Default)]
pub(crate) struct FileStatus {
    failed: AtomicBool,
    /// The first failure, until the sink has reported it.
    error: Mutex<Option<Error>>,
}

impl FileStatus {
    fn fail(&self, e: Error) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if !self.failed.swap(true, Ordering::AcqRel) {
            *slot = Some(e);
        }
    }

    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The first failure, once; `None` after it was taken.
    pub(crate) fn take(&self) -> Option<Error> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

enum Msg {
    Create {
        id: u64,
        path: PathBuf,
        format: FileFormat,
        channels: Channels,
        status: Arc<FileStatus>,
        pool: SyncSender<Vec<i16>>,
        reply: Option<SyncSender<Result<()>>>,
    },
    Write {
        id: u64,
        block: Vec<i16>,
    },
    Close {
        id: u64,
        reply: Option<SyncSender<Result<()>>>,
    },
}

/// The sink's side of one file: what it needs to send blocks and learn of failures.
pub(crate) struct FileHandle {
    pub(crate) id: u64,
    pub(crate) status: Arc<FileStatus>,
    /// Emptied blocks coming back from the thread, so steady writing allocates nothing.
    pub(crate) pool: Receiver<Vec<i16>>,
}

/// Blocks returned to a file's pool at most (the rest are freed).
const POOL_BLOCKS: usize = 8;

impl RecordingWriter {
    /// Starts a writer thread with the default queue bound ([`RECORDING_QUEUE_BLOCKS`]).
    pub fn new() -> Result<Self> {
        Self::with_capacity(RECORDING_QUEUE_BLOCKS)
    }

    /// Starts a writer thread that lets at most `blocks` blocks (at least 1) wait for the disk.
    pub fn with_capacity(blocks: usize) -> Result<Self> {
        let (tx, rx) = channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let counter = queued.clone();
        std::thread::Builder::new()
            .name("groupcall-recorder".into())
            .spawn(move || run(rx, &counter))
            .map_err(Error::RecorderStart)?;
        Ok(RecordingWriter {
            shared: Arc::new(Shared {
                tx,
                queued,
                capacity: blocks.max(1),
                next_id: AtomicU64::new(0),
            }),
        })
    }

    /// The most blocks that wait for the disk.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Creates (or truncates) a file on the writer thread and waits (a few seconds at most)
    /// for the answer: for files made before the call's loop runs, whose failure should
    /// refuse the call.
    pub fn create(
        &self,
        path: impl AsRef<Path>,
        format: FileFormat,
        channels: Channels,
    ) -> Result<super::FileSink> {
        let path = path.as_ref().to_path_buf();
        let (reply, answer) = sync_channel(1);
        let handle = self.send_create(&path, format, channels, Some(reply))?;
        let sink =
            super::FileSink::from_parts(self.clone(), handle, path.clone(), format, channels);
        match answer.recv_timeout(CREATE_WAIT) {
            Ok(Ok(())) => Ok(sink),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::CreateSink {
                path,
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the file system did not create it within {} s",
                        CREATE_WAIT.as_secs()
                    ),
                ),
            }),
        }
    }

    /// Asks the writer thread to create a file without waiting: for files made inside the
    /// call's loop. A failure is the error of a later write (or of closing).
    pub fn open(
        &self,
        path: impl AsRef<Path>,
        format: FileFormat,
        channels: Channels,
    ) -> super::FileSink {
        let path = path.as_ref().to_path_buf();
        let handle = match self.send_create(&path, format, channels, None) {
            Ok(h) => h,
            Err(e) => {
                // The thread is gone: the sink carries the failure to its first write.
                let status = Arc::new(FileStatus::default());
                status.fail(e);
                FileHandle {
                    id: u64::MAX,
                    status,
                    pool: sync_channel(0).1,
                }
            }
        };
        super::FileSink::from_parts(self.clone(), handle, path, format, channels)
    }

    fn send_create(
        &self,
        path: &Path,
        format: FileFormat,
        channels: Channels,
        reply: Option<SyncSender<Result<()>>>,
    ) -> Result<FileHandle> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let status = Arc::new(FileStatus::default());
        let (pool_tx, pool) = sync_channel(POOL_BLOCKS);
        self.shared
            .tx
            .send(Msg::Create {
                id,
                path: path.to_path_buf(),
                format,
                channels,
                status: status.clone(),
                pool: pool_tx,
                reply,
            })
            .map_err(|_| gone(path))?;
        Ok(FileHandle { id, status, pool })
    }

    /// Takes a place in the queue for one block; false when the queue is full.
    pub(crate) fn reserve(&self) -> bool {
        let queued = &self.shared.queued;
        if queued.fetch_add(1, Ordering::AcqRel) >= self.shared.capacity {
            queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Sends a block after [`RecordingWriter::reserve`] said yes.
    pub(crate) fn send_block(&self, id: u64, block: Vec<i16>, path: &Path) -> Result<()> {
        self.shared.tx.send(Msg::Write { id, block }).map_err(|_| {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            gone(path)
        })
    }

    /// Closes a file; with `reply`, the result of finalizing it comes back there.
    pub(crate) fn send_close(&self, id: u64, reply: Option<SyncSender<Result<()>>>) -> bool {
        self.shared.tx.send(Msg::Close { id, reply }).is_ok()
    }
}

fn gone(path: &Path) -> Error {
    Error::WriteSink {
        path: path.to_path_buf(),
        source: io::Error::other("the recording writer thread has stopped"),
    }
}

/// A file being closed: the writer's answer is awaited without blocking (`poll`) inside the
/// call's loop, or with a deadline (`wait`) when the call ends.
pub(crate) struct Closing {
    pub(crate) path: PathBuf,
    status: Arc<FileStatus>,
    answer: Option<Receiver<Result<()>>>,
}

impl Closing {
    pub(crate) fn new(
        path: PathBuf,
        status: Arc<FileStatus>,
        answer: Option<Receiver<Result<()>>>,
    ) -> Self {
        Closing {
            path,
            status,
            answer,
        }
    }

    /// `Some` once finalized (or failed); an earlier unreported write failure comes first.
    pub(crate) fn poll(&mut self) -> Option<Result<()>> {
        let answer = match self.answer.as_ref() {
            None => Ok(()),
            Some(rx) => match rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => Err(gone(&self.path)),
            },
        };
        Some(self.combine(answer))
    }

    pub(crate) fn wait(self, deadline: Instant) -> Result<()> {
        let answer = match self.answer.as_ref() {
            None => Ok(()),
            Some(rx) => match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(r) => r,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::WriteSink {
                    path: self.path.clone(),
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the disk is behind: the file was not finalized in time (it will be \
                         when the writer catches up, unless the process exits first)",
                    ),
                }),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(gone(&self.path)),
            },
        };
        self.combine(answer)
    }

    fn combine(&self, answer: Result<()>) -> Result<()> {
        match self.status.take() {
            Some(e) => Err(e),
            None => answer,
        }
    }
}

/// WAV's sizes are 32-bit; hound would wrap around silently past this.
pub(crate) const WAV_DATA_LIMIT: u64 = u32::MAX as u64 - 1024;

/// An open file on the writer thread.
enum DiskFile {
    Wav(hound::WavWriter<BufWriter<File>>),
    Raw {
        writer: BufWriter<File>,
        bytes: Vec<u8>,
    },
}

struct OpenFile {
    path: PathBuf,
    disk: DiskFile,
    status: Arc<FileStatus>,
    pool: SyncSender<Vec<i16>>,
}

fn hound_io(e: hound::Error) -> io::Error {
    match e {
        hound::Error::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl DiskFile {
    fn create(path: &Path, format: FileFormat, channels: Channels) -> Result<Self> {
        let create_err = |source| Error::CreateSink {
            path: path.to_path_buf(),
            source,
        };
        let writer = BufWriter::new(File::create(path).map_err(create_err)?);
        Ok(match format {
            FileFormat::Wav => {
                let spec = hound::WavSpec {
                    channels: channels.count() as u16,
                    sample_rate: SAMPLE_RATE,
                    bits_per_sample: 16,
                    sample_format: hound::SampleFormat::Int,
                };
                DiskFile::Wav(
                    hound::WavWriter::new(writer, spec).map_err(|e| create_err(hound_io(e)))?,
                )
            }
            FileFormat::Raw => DiskFile::Raw {
                writer,
                bytes: Vec::new(),
            },
        })
    }

    fn write(&mut self, pcm: &[i16]) -> io::Result<()> {
        match self {
            DiskFile::Wav(writer) => {
                let mut w = writer.get_i16_writer(pcm.len() as u32);
                for &s in pcm {
                    w.write_sample(s);
                }
                w.flush().map_err(hound_io)
            }
            DiskFile::Raw { writer, bytes } => {
                bytes.clear();
                bytes.extend(pcm.iter().flat_map(|s| s.to_le_bytes()));
                writer.write_all(bytes)
            }
        }
    }

    /// Writes what is buffered and, for WAV, the final sizes in the header.
    fn finalize(self) -> io::Result<()> {
        match self {
            DiskFile::Wav(writer) => writer.finalize().map_err(hound_io),
            DiskFile::Raw { mut writer, .. } => writer.flush(),
        }
    }
}

impl OpenFile {
    fn close(self) -> Result<()> {
        let path = self.path;
        self.disk
            .finalize()
            .map_err(|source| Error::WriteSink { path, source })
    }
}

/// The writer thread: runs until every sender is gone, then finalizes what is still open.
fn run(rx: Receiver<Msg>, queued: &AtomicUsize) {
    let mut files: HashMap<u64, OpenFile> = HashMap::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Create {
                id,
                path,
                format,
                channels,
                status,
                pool,
                reply,
            } => match DiskFile::create(&path, format, channels) {
                Ok(disk) => {
                    files.insert(
                        id,
                        OpenFile {
                            path,
                            disk,
                            status,
                            pool,
                        },
                    );
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                }
                Err(e) => match reply {
                    Some(reply) => {
                        let _ = reply.send(Err(e));
                    }
                    None => status.fail(e),
                },
            },
            Msg::Write { id, block } => {
                queued.fetch_sub(1, Ordering::AcqRel);
                if let Some(file) = files.get_mut(&id) {
                    if !file.status.failed() {
                        if let Err(source) = file.disk.write(&block) {
                            file.status.fail(Error::WriteSink {
                                path: file.path.clone(),
                                source,
                            });
                        }
                    }
                    let _ = file.pool.try_send(block);
                }
            }
            Msg::Close { id, reply } => {
                let result = files.remove(&id).map_or(Ok(()), OpenFile::close);
                match reply {
                    Some(reply) => {
                        let _ = reply.send(result);
                    }
                    None => {
                        if let Err(e) = result {
                            tracing::warn!("recording not finalized: {e}");
                        }
                    }
                }
            }
        }
    }
    // Every handle is gone: the call ended without closing, or its task unwound.
    for (_, file) in files.drain() {
        if let Err(e) = file.close() {
            tracing::warn!("recording not finalized: {e}");
        }
    }
}
