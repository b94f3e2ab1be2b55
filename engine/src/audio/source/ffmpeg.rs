//! Any format ffmpeg reads, through an `ffmpeg` subprocess writing 48 kHz s16le to a pipe.
//!
//! ffmpeg is optional: it is looked up only when this source is used, and its absence is an
//! error that says how to install it. Its stderr is drained on a thread (a full stderr pipe
//! would stall ffmpeg) and the last lines are kept for the error when it fails.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use super::raw::RawReader;
use super::{PcmReader, ReadOutcome};
use crate::error::{Error, Result};

/// The binary looked up on the `PATH` when none is given.
pub const DEFAULT_FFMPEG: &str = "ffmpeg";

/// Bytes of ffmpeg's stderr kept for error messages.
const STDERR_TAIL: usize = 2000;

pub(crate) struct Ffmpeg {
    binary: PathBuf,
    input: String,
    channels: usize,
    child: Child,
    stdout: RawReader<ChildStdout>,
    stderr: Option<JoinHandle<String>>,
}

impl Ffmpeg {
    pub(crate) fn spawn(binary: PathBuf, input: String, channels: usize) -> Result<Self> {
        let (child, stdout, stderr) = start(&binary, &input, channels)?;
        Ok(Ffmpeg {
            stdout: RawReader::stream(format!("ffmpeg: {input}"), stdout, channels),
            binary,
            input,
            channels,
            child,
            stderr: Some(stderr),
        })
    }

    /// Waits for ffmpeg after its output ended; a failure exit becomes an error with its stderr.
    fn check_exit(&mut self) -> Result<()> {
        let status = self.child.wait().map_err(|source| Error::ReadInput {
            input: format!("ffmpeg: {}", self.input),
            source,
        })?;
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

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }
}

fn start(
    binary: &PathBuf,
    input: &str,
    channels: usize,
) -> Result<(Child, ChildStdout, JoinHandle<String>)> {
    let mut child = Command::new(binary)
        .args([
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            input,
            "-vn",
        ])
        .args(["-f", "s16le", "-acodec", "pcm_s16le", "-ar", "48000", "-ac"])
        .arg(channels.to_string())
        .arg("pipe:1")
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
        self.child = child;
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
