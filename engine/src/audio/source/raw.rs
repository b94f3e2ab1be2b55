//! Raw s16le PCM from a file (which can loop) or from any byte stream (which cannot).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::{PcmReader, ReadOutcome};
use crate::error::{Error, Result};

/// Reads whole frames of s16le samples, keeping a partial frame's bytes for the next read
/// (pipes deliver whatever the writer wrote, not frame-aligned).
pub(crate) struct RawReader<R> {
    name: String,
    inner: R,
    frame_bytes: usize,
    bytes: Vec<u8>,
    held: usize,
    rewind: Option<fn(&mut R) -> io::Result<()>>,
}

impl RawReader<BufReader<File>> {
    pub(crate) fn file(path: &Path, channels: usize) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::OpenInput {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(RawReader {
            name: path.display().to_string(),
            inner: BufReader::new(file),
            frame_bytes: 2 * channels,
            bytes: Vec::new(),
            held: 0,
            rewind: Some(|r| r.seek(SeekFrom::Start(0)).map(drop)),
        })
    }
}

impl<R: Read> RawReader<R> {
    pub(crate) fn stream(name: String, inner: R, channels: usize) -> Self {
        RawReader {
            name,
            inner,
            frame_bytes: 2 * channels,
            bytes: Vec::new(),
            held: 0,
            rewind: None,
        }
    }
}

impl<R: Read + Send> PcmReader for RawReader<R> {
    fn read(&mut self, out: &mut [i16]) -> Result<ReadOutcome> {
        let want = out.len() * 2;
        if self.bytes.len() < want {
            self.bytes.resize(want, 0);
        }
        loop {
            let n = match self.inner.read(&mut self.bytes[self.held..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A non-blocking stream has nothing yet: the bytes held stay for the next read.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Pending),
                Err(source) => {
                    return Err(Error::ReadInput {
                        input: self.name.clone(),
                        source,
                    })
                }
            };
            if n == 0 {
                // A trailing partial frame (a truncated file) is dropped: half a sample is noise.
                self.held = 0;
                return Ok(ReadOutcome::End);
            }
            self.held += n;
            let usable = self.held / self.frame_bytes * self.frame_bytes;
            if usable == 0 {
                continue;
            }
            for (o, b) in out.iter_mut().zip(self.bytes[..usable].chunks_exact(2)) {
                *o = i16::from_le_bytes([b[0], b[1]]);
            }
            self.bytes.copy_within(usable..self.held, 0);
            self.held -= usable;
            return Ok(ReadOutcome::Samples(usable / 2));
        }
    }

    fn rewind(&mut self) -> Result<()> {
        let Some(rewind) = self.rewind else {
            return Err(Error::CannotLoop {
                input: self.name.clone(),
            });
        };
        self.held = 0;
        rewind(&mut self.inner).map_err(|source| Error::ReadInput {
            input: self.name.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields its bytes a few at a time, like a pipe.
    struct Dribble(Vec<u8>, usize);

    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn reassembles_frames_split_across_reads_and_drops_a_torn_tail() {
        let samples: Vec<i16> = (0..101).map(|i| i * 300 - 15000).collect();
        let mut bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        bytes.push(0x7f); // half a sample
        let mut r = RawReader::stream("test".into(), Dribble(bytes, 0), 2);
        let mut got = vec![];
        let mut buf = [0i16; 16];
        loop {
            match r.read(&mut buf).unwrap() {
                ReadOutcome::Samples(n) => {
                    assert_eq!(n % 2, 0, "whole stereo frames only");
                    got.extend_from_slice(&buf[..n]);
                }
                ReadOutcome::End => break,
                ReadOutcome::Pending => unreachable!(),
            }
        }
        // 101 samples = 50 whole stereo frames + 1 torn sample.
        assert_eq!(got, &samples[..100]);
        assert!(matches!(r.rewind(), Err(Error::CannotLoop { .. })));
    }

    #[test]
    fn read_errors_name_the_input() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("device gone"))
            }
        }
        let mut r = RawReader::stream("my pipe".into(), Broken, 1);
        let err = r.read(&mut [0; 8]).err().unwrap();
        assert!(
            err.to_string().contains("my pipe") && err.to_string().contains("device gone"),
            "{err}"
        );
    }
}
