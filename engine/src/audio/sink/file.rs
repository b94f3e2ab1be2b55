//! WAV (hound) and raw s16le files, and the mixed recording built on them.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::audio::{Channels, Mixer, SAMPLE_RATE};
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

/// WAV's sizes are 32-bit; hound would wrap around silently past this.
const WAV_DATA_LIMIT: u64 = u32::MAX as u64 - 1024;

enum Inner {
    Wav {
        writer: hound::WavWriter<BufWriter<File>>,
        data_bytes: u64,
    },
    Raw {
        writer: BufWriter<File>,
        bytes: Vec<u8>,
    },
}

/// One output file of 48 kHz 16-bit audio.
pub struct FileSink {
    path: PathBuf,
    channels: Channels,
    inner: Inner,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("path", &self.path)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl FileSink {
    /// Creates (or truncates) the file. The directory must exist.
    pub fn create(path: impl AsRef<Path>, format: FileFormat, channels: Channels) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|source| Error::CreateSink {
            path: path.clone(),
            source,
        })?;
        let writer = BufWriter::new(file);
        let inner = match format {
            FileFormat::Wav => {
                let spec = hound::WavSpec {
                    channels: channels.count() as u16,
                    sample_rate: SAMPLE_RATE,
                    bits_per_sample: 16,
                    sample_format: hound::SampleFormat::Int,
                };
                let writer =
                    hound::WavWriter::new(writer, spec).map_err(|e| Error::CreateSink {
                        path: path.clone(),
                        source: hound_io(e),
                    })?;
                Inner::Wav {
                    writer,
                    data_bytes: 0,
                }
            }
            FileFormat::Raw => Inner::Raw {
                writer,
                bytes: Vec::new(),
            },
        };
        Ok(FileSink {
            path,
            channels,
            inner,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends interleaved samples (whole frames). Data may sit in a buffer until the next
    /// write fills it or [`FileSink::finish`]; errors from either are returned.
    pub fn write(&mut self, pcm: &[i16]) -> Result<()> {
        let ch = self.channels.count();
        if pcm.len() % ch != 0 {
            return Err(Error::FrameSize {
                expected: pcm.len() / ch * ch,
                got: pcm.len(),
            });
        }
        let path = &self.path;
        let write_err = |source| Error::WriteSink {
            path: path.clone(),
            source,
        };
        match &mut self.inner {
            Inner::Wav { writer, data_bytes } => {
                let add = pcm.len() as u64 * 2;
                if *data_bytes + add > WAV_DATA_LIMIT {
                    return Err(write_err(io::Error::other(
                        "the WAV format's 4 GiB limit is reached; record to raw files or split the recording",
                    )));
                }
                let mut w = writer.get_i16_writer(pcm.len() as u32);
                for &s in pcm {
                    w.write_sample(s);
                }
                w.flush().map_err(|e| write_err(hound_io(e)))?;
                *data_bytes += add;
            }
            Inner::Raw { writer, bytes } => {
                bytes.clear();
                bytes.extend(pcm.iter().flat_map(|s| s.to_le_bytes()));
                writer.write_all(bytes).map_err(write_err)?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered and, for WAV, the final sizes in the header.
    pub fn finish(self) -> Result<()> {
        let path = self.path;
        let write_err = |source| Error::WriteSink { path, source };
        match self.inner {
            Inner::Wav { writer, .. } => writer.finalize().map_err(|e| write_err(hound_io(e))),
            Inner::Raw { mut writer, .. } => writer.flush().map_err(write_err),
        }
    }
}

fn hound_io(e: hound::Error) -> io::Error {
    match e {
        hound::Error::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// The mix of every speaker as one file, one 20 ms frame per tick.
///
/// A tick with no speaker writes silence, so the file's timeline is the call's.
#[derive(Debug)]
pub struct MixRecorder {
    mixer: Mixer,
    sink: FileSink,
}

impl MixRecorder {
    pub fn create(path: impl AsRef<Path>, format: FileFormat, channels: Channels) -> Result<Self> {
        Ok(MixRecorder {
            mixer: Mixer::new(channels),
            sink: FileSink::create(path, format, channels)?,
        })
    }

    /// Adds one speaker's frame for this tick.
    pub fn add(&mut self, pcm: &[i16], gain: f32) -> Result<()> {
        self.mixer.add(pcm, gain)
    }

    /// Writes this tick's mix.
    pub fn write_tick(&mut self) -> Result<()> {
        let mix = self.mixer.finish();
        self.sink.write(mix)
    }

    pub fn path(&self) -> &Path {
        self.sink.path()
    }

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
