//! Any format ffmpeg reads, through an `ffmpeg` subprocess writing 48 kHz s16le to a pipe.
//!
//! ffmpeg is optional: it is looked up only when this source is used, and its absence is an
//! error that says how to install it. Its stderr is drained on a thread (a full stderr pipe
//! would stall ffmpeg) and the last lines are kept for the error when it fails.
//!
//! The reader runs on the source's read-ahead thread, which also waits for the process when
//! its output ends. The child is shared with a [`KillOnDrop`] held by the source itself: a
//! stalled ffmpeg (a URL that stopped answering) leaves the read-ahead thread blocked in a
//! read, so dropping the source must kill the process from outside to end that read.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::raw::RawReader;
use super::{PcmReader, ReadOutcome};
use crate::error::{Error, Result};

/// The binary looked up on the `PATH` when none is given.
pub const DEFAULT_FFMPEG: &str = "ffmpeg";

/// Bytes of ffmpeg's stderr kept for error messages.
const STDERR_TAIL: usize = 2000;

/// How often the read-ahead thread checks whether ffmpeg has exited after closing its output.
const EXIT_POLL: Duration = Duration::from_millis(5);

/// The running child, shared by the reader and the source's [`KillOnDrop`].
#[derive(Default)]
struct Slot {
    child: Option<Child>,
    /// The source is gone: no child may be started any more.
    closed: bool,
}

type Shared = Arc<Mutex<Slot>>;

/// Only held for a `try_wait`, a `kill` or a swap, so never contended for long; a poisoned
/// lock (a panic while holding it) still holds a valid slot.
fn lock(shared: &Shared) -> MutexGuard<'_, Slot> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kills and reaps a child off the caller's thread: `wait` can take as long as the process
/// takes to die, which is not the call's task's time to spend.
fn reap(mut child: Child) {
    let _ = child.kill();
    let reaper = std::thread::Builder::new()
        .name("ffmpeg-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(e) = reaper {
        // Without a thread the child stays a zombie until the process exits.
        tracing::warn!("cannot start a thread to reap ffmpeg: {e}");
    }
}

/// Held by the source: dropping it kills ffmpeg (ending the read-ahead thread's read) and
/// reaps it on a detached thread.
pub(crate) struct KillOnDrop(Shared);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let child = {
            let mut slot = lock(&self.0);
            slot.closed = true;
            slot.child.take()
        };
        if let Some(child) = child {
            reap(child);
        }
    }
}

pub(crate) struct Ffmpeg {
    binary: PathBuf,
    input: String,
    channels: usize,
    shared: Shared,
    stdout: RawReader<ChildStdout>,
    stderr: Option<JoinHandle<String>>,
}

impl Ffmpeg {
    pub(crate) fn spawn(
        binary: PathBuf,
        input: String,
        channels: usize,
    ) -> Result<(Self, KillOnDrop)> {
        let (child, stdout, stderr) = start(&binary, &input, channels)?;
        let shared: Shared = Arc::new(Mutex::new(Slot {
            child: Some(child),
            closed: false,
        }));
        let reader = Ffmpeg {
            stdout: RawReader::stream(format!("ffmpeg: {input}"), stdout, channels),
            binary,
            input,
            channels,
            shared: shared.clone(),
            stderr: Some(stderr),
        };
        Ok((reader, KillOnDrop(shared)))
    }

    /// Waits (on the read-ahead thread) for ffmpeg after its output ended; a failure exit
    /// becomes an error with its stderr. A source dropped meanwhile took the child: nothing
    /// is left to report to.
    fn check_exit(&mut self) -> Result<()> {
        let status: ExitStatus = loop {
            let mut slot = lock(&self.shared);
            let Some(child) = slot.child.as_mut() else {
                return Ok(());
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    slot.child = None;
                    break status;
                }
                Ok(None) => {
                    drop(slot);
                    std::thread::sleep(EXIT_POLL);
                }
                Err(source) => {
                    return Err(Error::ReadInput {
                        input: format!("ffmpeg: {}", self.input),
                        source,
                    })
                }
            }
        };
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        Err(Error::FfmpegFailed {
            input: self.input.clone(),
            status: status.to_string(),
            stderr: if stderr.trim().is_empty() {
                "(ffmpeg printed nothing)".into()
            } else {
                stderr.trim().to_string()
            },
        })
    }

    /// Kills the current child and waits for it: only on the read-ahead thread.
    fn stop(&mut self) {
        let child = lock(&self.shared).child.take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }
}

fn start(
    binary: &std::path::Path,
    input: &str,
    channels: usize,
) -> Result<(Child, ChildStdout, JoinHandle<String>)> {
    let mut args: Vec<std::ffi::OsString> = [
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-i",
        input,
        "-vn",
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    args.extend(
        ["-f", "s16le", "-acodec", "pcm_s16le", "-ar", "48000", "-ac"]
            .into_iter()
            .map(Into::into),
    );
    args.push(channels.to_string().into());
    args.push("pipe:1".into());
    spawn(binary, &args)
}

/// Starts `binary` (ffmpeg) with `args`, its output on a pipe and its error output read on a
/// thread of its own (so that a chatty ffmpeg never blocks on a full pipe), which returns the
/// last few hundred bytes of it when the child ends: what an error names.
pub(crate) fn spawn(
    binary: &std::path::Path,
    args: &[std::ffi::OsString],
) -> Result<(Child, ChildStdout, JoinHandle<String>)> {
    let binary = binary.to_path_buf();
    let mut child = Command::new(&binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::FfmpegMissing {
                    binary: binary.clone(),
                }
            } else {
                Error::FfmpegSpawn {
                    binary: binary.clone(),
                    source,
                }
            }
        })?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::FfmpegSpawn {
            binary: binary.clone(),
            source: std::io::Error::other("no pipes to the child process"),
        });
    };
    let drain = std::thread::Builder::new()
        .name("ffmpeg-stderr".into())
        .spawn(move || {
            let mut tail = Vec::new();
            let mut buf = [0u8; 1024];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            let start = tail.len().saturating_sub(STDERR_TAIL);
            String::from_utf8_lossy(&tail[start..]).into_owned()
        })
        .map_err(|source| Error::FfmpegSpawn {
            binary: binary.clone(),
            source,
        });
    match drain {
        Ok(h) => Ok((child, stdout, h)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

impl PcmReader for Ffmpeg {
    fn read(&mut self, out: &mut [i16]) -> Result<ReadOutcome> {
        match self.stdout.read(out)? {
            ReadOutcome::End => {
                self.check_exit()?;
                Ok(ReadOutcome::End)
            }
            other => Ok(other),
        }
    }

    fn rewind(&mut self) -> Result<()> {
        self.stop();
        let (child, stdout, stderr) = start(&self.binary, &self.input, self.channels)?;
        {
            let mut slot = lock(&self.shared);
            if slot.closed {
                // The source went while the old child was stopping: this one is not wanted.
                drop(slot);
                reap(child);
                return Err(Error::ReadInput {
                    input: format!("ffmpeg: {}", self.input),
                    source: std::io::Error::other("the source was dropped"),
                });
            }
            slot.child = Some(child);
        }
        self.stdout = RawReader::stream(format!("ffmpeg: {}", self.input), stdout, self.channels);
        self.stderr = Some(stderr);
        Ok(())
    }
}

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        self.stop();
    }
}
